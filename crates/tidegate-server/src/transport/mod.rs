//! Transports: every kind of socket a client may use, turned into one byte stream for the
//! connection task.
//!
//! Place in the data flow:
//! ```text
//! accept ──▶ [PROXY header] ──▶ [TLS] ──▶ [WebSocket upgrade] ──▶ T: Transport + ConnInfo
//!                                                                 │
//!                                      connection task (Connection<T>) ◀┘
//! ```
//! `tcp` stops after the optional PROXY header, `tls` after TLS, `ws` skips TLS, `wss` does
//! both, `unix` has none of the steps but reads the peer's credentials. [`establish`] is the
//! one place that knows which steps a listener's kind takes; what it learns on the way (the
//! real client address, SNI, the certificate identity, Unix credentials) goes into the
//! [`ConnInfo`], so nothing above it knows which socket a client used.
//!
//! **Generic, not an enum.** The connection task is `Connection<T: Transport>`, monomorphized
//! per transport (TCP, TLS over TCP, WebSocket over TCP, WebSocket over TLS, Unix): five copies
//! of the connection loop in the binary, but each task's future is exactly as large as its own
//! transport. An enum would make every plain-TCP connection pay for the largest variant (a
//! rustls connection is over a kilobyte) while idle, and dispatch on every read and write.
//!
//! **Idle memory.** The connection task only allocates its read buffer once
//! [`Transport::poll_read_ready`] says bytes are waiting. TCP and Unix sockets ask the
//! reactor; TLS asks rustls whether it already holds decrypted bytes, else the socket
//! underneath; the WebSocket adapter decodes frames in place in the connection's own buffer
//! and keeps at most a 14-byte partial frame header of its own.

mod establish;
pub(crate) mod proxy;
pub(crate) mod tls;
pub(crate) mod unix;
pub(crate) mod ws;

pub(crate) use establish::{Established, HandshakeFailure, Steps, establish};

use std::io;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// A byte stream a connection runs on. Every listener kind turns its sockets into one of these,
/// so nothing above knows which transport a client used.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Completes when a read would likely not block, without a buffer, so an idle connection
    /// holds no read buffer. Streams that cannot tell are always ready (their read buffer then
    /// stays allocated while they wait).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }
}

impl Transport for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Transport for UnixStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }
}

impl<IO: Transport> Transport for tokio_rustls::server::TlsStream<IO> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (io, session) = self.get_ref();
        // rustls wants more TLS bytes only when it holds no decrypted ones (and has not seen
        // the peer's close_notify); otherwise a read returns at once.
        if session.wants_read() {
            io.poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
impl Transport for tokio::io::DuplexStream {}
