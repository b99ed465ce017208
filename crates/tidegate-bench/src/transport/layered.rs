//! Layered streams (TLS, WebSocket, or both) split into halves, with writes that are done only
//! once their bytes reached the socket.
//!
//! Place in the data flow: `transport::connect` → [`split_layered`] → [`LayeredReader`] /
//! [`LayeredWriter`] inside the transport's `ReadHalf` / `WriteHalf` → the client's tasks.
//!
//! **Why writes flush.** A TLS stream's `poll_write` hands the bytes to rustls, which encrypts
//! them into records and writes what the socket takes; when the socket is full, the rest of the
//! records stay inside rustls and leave only on the next write or an explicit flush. This
//! tool's tasks only `write` (a publisher writes its batch, then waits for acks or delivery
//! reports), so records left behind would wait for the next batch, which waits for those very
//! records: a stall until some timer fires. [`LayeredWriter`] therefore reports bytes written
//! only once a flush completed. While the flush is pending the bytes are already taken: the
//! next call must pass a buffer that starts with them, which `write` retried on the same
//! buffer, `write_all` and the client's write buffer all do.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Any stream a layered connection ends up as.
pub(super) trait Layered: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Layered for T {}

/// A boxed layered stream (TLS, WebSocket).
pub struct Boxed(pub(super) Box<dyn Layered>);

impl fmt::Debug for Boxed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Boxed")
    }
}

impl AsyncRead for Boxed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Boxed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}

/// The reading side of a layered stream.
pub type LayeredReader = tokio::io::ReadHalf<Boxed>;

/// The writing side of a layered stream: a write completes once its bytes were flushed to the
/// socket (see the module docs).
#[derive(Debug)]
pub struct LayeredWriter<W = tokio::io::WriteHalf<Boxed>> {
    inner: W,
    /// Bytes of the caller's buffer the stream took whose flush has not completed yet.
    unflushed: usize,
}

impl<W> LayeredWriter<W> {
    fn new(inner: W) -> LayeredWriter<W> {
        LayeredWriter {
            inner,
            unflushed: 0,
        }
    }
}

/// Splits a layered stream into its reading side and a flushing writing side.
pub(super) fn split_layered(stream: Boxed) -> (LayeredReader, LayeredWriter) {
    let (r, w) = tokio::io::split(stream);
    (r, LayeredWriter::new(w))
}

impl<W: AsyncWrite + Unpin> AsyncWrite for LayeredWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.unflushed == 0 {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            this.unflushed = n;
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut this.unflushed)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A writer shaped like a TLS stream: writes are accepted into a buffer at once, and only a
    /// flush moves them to the "socket", which takes bytes only while `open`.
    #[derive(Default)]
    struct Buffering {
        pending: Vec<u8>,
        socket: Vec<u8>,
        open: bool,
    }

    impl AsyncWrite for Buffering {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().pending.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if !this.open {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.socket.append(&mut this.pending);
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    fn write_once(w: &mut LayeredWriter<Buffering>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let waker = std::task::Waker::noop();
        Pin::new(w).poll_write(&mut Context::from_waker(waker), buf)
    }

    #[test]
    fn a_write_is_done_only_once_flushed_and_is_not_taken_twice() {
        let mut w = LayeredWriter::new(Buffering::default());
        assert!(write_once(&mut w, b"hello").is_pending(), "socket closed");
        assert_eq!(w.inner.pending, b"hello", "the bytes are taken");
        // Retried with the same bytes plus more: the pending ones are not written twice.
        assert!(write_once(&mut w, b"hello world").is_pending());
        w.inner.open = true;
        assert!(matches!(
            write_once(&mut w, b"hello world"),
            Poll::Ready(Ok(5))
        ));
        assert_eq!(w.inner.socket, b"hello");
        assert!(matches!(write_once(&mut w, b" world"), Poll::Ready(Ok(6))));
        assert_eq!(w.inner.socket, b"hello world");
        assert!(w.inner.pending.is_empty());
    }

    #[tokio::test]
    async fn write_all_over_a_buffering_writer_reaches_the_socket() {
        use tokio::io::AsyncWriteExt;
        let mut w = LayeredWriter::new(Buffering {
            open: true,
            ..Buffering::default()
        });
        w.write_all(b"abc").await.unwrap();
        assert_eq!(w.inner.socket, b"abc");
        assert!(poll_fn(|cx| Pin::new(&mut w).poll_flush(cx)).await.is_ok());
    }
}
