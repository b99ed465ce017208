//! MQTT over WebSocket: a byte stream on top of binary WebSocket frames, with our own framing.
//!
//! Place in the data flow: transport → (TLS) → [`connect`] (HTTP upgrade with the `mqtt`
//! subprotocol, [`handshake`]) → [`WsIo`], which the transport treats like any socket. MQTT
//! packets may span frames and a frame may hold several packets (MQTT-6.0.0-2..4), so reading
//! hands out the payload bytes of binary and continuation frames in order, and each write
//! becomes one masked binary frame: the client writes its whole batch at once, so a batch is
//! one frame.
//!
//! **Why not tokio-tungstenite.** Its message API allocates a `Bytes` per message each way,
//! and every read attempt zero-fills its 128 KiB read buffer: profiled under the transports
//! benchmark, that memset alone was 16% of the generator's CPU, so the `ws` and `wss` rows
//! measured the generator rather than the broker. Here the server's frames are decoded in
//! place in the caller's read buffer ([`frame`]), and a write costs one copy (masking) into a
//! buffer that is reused. tungstenite still provides the handshake key helpers, and its
//! server side is the third-party peer of the tests below.
//!
//! Writes: `poll_write` queues the frame and sends what the socket takes; `poll_flush` sends
//! the rest and flushes the stream underneath (TLS). The transport's layered writer calls
//! both, so a write completes only once its frame left the process.

mod frame;
mod handshake;

pub use frame::FrameError;
pub use handshake::UpgradeError;

use bytes::{Buf, BytesMut};
use frame::{FrameReader, Reply, opcode, write_frame};
use std::hash::BuildHasher;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest payload put in one frame; a longer write is cut (the caller writes the rest).
const MAX_FRAME: usize = 64 * 1024;
/// Normal closure (RFC 6455 section 7.4.1).
const CLOSE_NORMAL: u16 = 1000;
/// Protocol error.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;

/// A WebSocket connection seen as a byte stream.
#[derive(Debug)]
pub struct WsIo<S> {
    inner: S,
    /// Bytes that arrived with the upgrade response, decoded before the socket's.
    leftover: BytesMut,
    reader: FrameReader,
    /// Encoded frames not yet written: data frames, pongs, close.
    out: BytesMut,
    /// A close frame was queued: no frame after it.
    close_sent: bool,
    /// Frames the read side queued (pong, close echo) were handed to `inner` without a
    /// completed flush; the next read retries it.
    flush_owed: bool,
    /// Masking keys (RFC 6455 section 10.3: unpredictable to the network; a xorshift seeded
    /// from the process's random hasher keys is plenty for a load generator).
    mask_state: u64,
}

/// Runs the client handshake on `stream` for `uri` (e.g. `ws://host:port/mqtt`), asking for
/// the `mqtt` subprotocol as MQTT over WebSocket requires.
pub async fn connect<S>(uri: &str, mut stream: S) -> io::Result<WsIo<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let leftover = handshake::upgrade(uri, &mut stream).await?;
    Ok(WsIo::new(stream, leftover))
}

impl<S> WsIo<S> {
    fn new(inner: S, leftover: BytesMut) -> WsIo<S> {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
        WsIo {
            inner,
            leftover,
            reader: FrameReader::default(),
            out: BytesMut::new(),
            close_sent: false,
            flush_owed: false,
            // Xorshift needs a non-zero state.
            mask_state: seed | 1,
        }
    }
}

/// The next masking key from `state` (xorshift64).
fn next_mask(state: &mut u64) -> [u8; 4] {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    // The high half of the state; the truncation is the point.
    ((*state >> 32) as u32).to_ne_bytes()
}

impl<S: AsyncWrite + Unpin> WsIo<S> {
    /// Writes `out` to the stream until it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Sends and flushes the frames the read side queued, as far as the socket takes them now;
    /// errors wait for the next write.
    fn try_drain(&mut self, cx: &mut Context<'_>) {
        if !self.out.is_empty() {
            self.flush_owed = true;
            if !matches!(self.poll_drain(cx), Poll::Ready(Ok(()))) {
                return;
            }
        }
        if self.flush_owed && Pin::new(&mut self.inner).poll_flush(cx).is_ready() {
            self.flush_owed = false;
        }
    }

    /// Queues a control frame unless a close went out already.
    fn queue_reply(&mut self, reply: Reply) {
        if self.close_sent {
            return;
        }
        self.close_sent = reply.opcode == opcode::CLOSE;
        let mask = next_mask(&mut self.mask_state);
        write_frame(&mut self.out, reply.opcode, &reply.payload, mask);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.try_drain(cx);
        loop {
            if buf.remaining() == 0 || this.reader.closed {
                return Poll::Ready(Ok(()));
            }
            let start = buf.filled().len();
            if this.leftover.is_empty() {
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                if buf.filled().len() == start {
                    // The broker closed the socket (with or without a close frame).
                    return Poll::Ready(Ok(()));
                }
            } else {
                let n = this.leftover.len().min(buf.remaining());
                buf.put_slice(this.leftover.get(..n).unwrap_or_default());
                this.leftover.advance(n);
            }
            let end = buf.filled().len();
            let raw = buf.filled_mut().get_mut(start..end).unwrap_or_default();
            let mut replies = Vec::new();
            let decoded = this.reader.decode(raw, &mut |r| replies.push(r));
            for reply in replies {
                this.queue_reply(reply);
            }
            match decoded {
                Ok(written) => buf.set_filled(start + written),
                Err(error) => {
                    buf.set_filled(start);
                    this.queue_reply(Reply {
                        opcode: opcode::CLOSE,
                        payload: CLOSE_PROTOCOL_ERROR.to_be_bytes().to_vec(),
                    });
                    this.try_drain(cx);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
                }
            }
            this.try_drain(cx);
            if buf.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
            // Only headers or control frames so far: read on.
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    /// Queues `buf` (up to [`MAX_FRAME`] bytes) as one binary frame and sends what the socket
    /// takes now; the frame is ours once queued, and a flush (or the next write) sends the
    /// rest. A new frame is taken only once the previous ones are out.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let len = buf.len().min(MAX_FRAME);
        let mask = next_mask(&mut this.mask_state);
        write_frame(
            &mut this.out,
            opcode::BINARY,
            buf.get(..len).unwrap_or_default(),
            mask,
        );
        match this.poll_drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(len)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.flush_owed = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            let mask = next_mask(&mut this.mask_state);
            write_frame(
                &mut this.out,
                opcode::CLOSE,
                &CLOSE_NORMAL.to_be_bytes(),
                mask,
            );
        }
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::frame::tests::server_frame;
    use super::*;
    use bytes::Bytes;
    use futures_core::Stream;
    use futures_sink::Sink;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;

    /// A tungstenite WebSocket server (the third-party peer) that checks the subprotocol, sends
    /// two MQTT-ish chunks as two messages, then echoes every binary message and finally
    /// answers a close.
    // The callback's error type is tungstenite's (a full HTTP response), not ours to shrink.
    #[allow(clippy::result_large_err)]
    async fn server(stream: tokio::io::DuplexStream) {
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        let check = |req: &Request, mut resp: Response| {
            let proto = req.headers().get("Sec-WebSocket-Protocol").cloned();
            assert_eq!(proto.as_ref().and_then(|v| v.to_str().ok()), Some("mqtt"));
            if let Some(p) = proto {
                resp.headers_mut().insert("Sec-WebSocket-Protocol", p);
            }
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, check)
            .await
            .unwrap();
        let mut ws = Pin::new(&mut ws);
        for chunk in [&b"\x20\x02"[..], b"\x00\x00"] {
            std::future::poll_fn(|cx| ws.as_mut().poll_ready(cx))
                .await
                .unwrap();
            ws.as_mut()
                .start_send(Message::Binary(Bytes::copy_from_slice(chunk)))
                .unwrap();
        }
        std::future::poll_fn(|cx| ws.as_mut().poll_flush(cx))
            .await
            .unwrap();
        while let Some(Ok(m)) = std::future::poll_fn(|cx| ws.as_mut().poll_next(cx)).await {
            if let Message::Binary(b) = m {
                std::future::poll_fn(|cx| ws.as_mut().poll_ready(cx))
                    .await
                    .unwrap();
                ws.as_mut().start_send(Message::Binary(b)).unwrap();
                std::future::poll_fn(|cx| ws.as_mut().poll_flush(cx))
                    .await
                    .unwrap();
            }
        }
    }

    #[tokio::test]
    async fn bytes_flow_across_message_boundaries_with_a_third_party_server() {
        let (client, srv) = tokio::io::duplex(4096);
        let server = tokio::spawn(server(srv));
        let mut io = connect("ws://localhost/mqtt", client).await.unwrap();
        // Two messages of two bytes read as one CONNACK-shaped stream.
        let mut b = [0u8; 4];
        io.read_exact(&mut b).await.unwrap();
        assert_eq!(b, [0x20, 0x02, 0x00, 0x00]);
        // A write larger than a frame goes out as several frames, echoed as several messages
        // (read while writing: the echo fills the small pipe long before the write ends).
        let big: Vec<u8> = (0..3 * MAX_FRAME as u32 / 2).map(|i| i as u8).collect();
        let (mut r, mut w) = tokio::io::split(io);
        let write = async {
            w.write_all(b"\xc0\x00hello").await.unwrap();
            w.write_all(&big).await.unwrap();
            w.flush().await.unwrap();
        };
        let mut echo = vec![0u8; 7 + big.len()];
        let ((), read) = tokio::join!(write, r.read_exact(&mut echo));
        read.unwrap();
        assert_eq!(&echo[..7], b"\xc0\x00hello");
        assert_eq!(&echo[7..], &big[..]);
        let mut io = r.unsplit(w);
        io.shutdown().await.unwrap();
        // The server answers the close; reading then ends the stream.
        assert_eq!(io.read(&mut b).await.unwrap(), 0);
        drop(io);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn pings_are_answered_and_close_ends_the_stream() {
        let (client, mut srv) = tokio::io::duplex(4096);
        let mut io = WsIo::new(client, BytesMut::new());
        let mut wire = server_frame(true, opcode::PING, b"k");
        wire.extend(server_frame(true, opcode::BINARY, b"\xd0\x00"));
        wire.extend(server_frame(true, opcode::CLOSE, &1000u16.to_be_bytes()));
        srv.write_all(&wire).await.unwrap();
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\xd0\x00");
        // The pong and the close echo, masked.
        let mut head = [0u8; 6];
        srv.read_exact(&mut head).await.unwrap();
        assert_eq!(head[..2], [0x80 | opcode::PONG, 0x81]);
        let mut body = [0u8; 1];
        srv.read_exact(&mut body).await.unwrap();
        assert_eq!(body[0] ^ head[2], b'k');
        let mut close = [0u8; 8];
        srv.read_exact(&mut close).await.unwrap();
        assert_eq!(close[..2], [0x80 | opcode::CLOSE, 0x82]);
        let code = [close[6] ^ close[2], close[7] ^ close[3]];
        assert_eq!(u16::from_be_bytes(code), 1000);
        assert!(io.write(b"x").await.is_err(), "no frame after a close");
    }

    #[tokio::test]
    async fn a_protocol_error_closes_with_1002() {
        let (client, mut srv) = tokio::io::duplex(4096);
        let mut io = WsIo::new(client, BytesMut::new());
        srv.write_all(&server_frame(true, 0x1, b"{}"))
            .await
            .unwrap();
        let err = io.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut close = [0u8; 8];
        srv.read_exact(&mut close).await.unwrap();
        let code = [close[6] ^ close[2], close[7] ^ close[3]];
        assert_eq!(u16::from_be_bytes(code), CLOSE_PROTOCOL_ERROR);
    }

    #[test]
    fn masks_vary() {
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let masks: std::collections::HashSet<[u8; 4]> =
            (0..1000).map(|_| next_mask(&mut state)).collect();
        assert!(masks.len() > 990, "{}", masks.len());
    }
}
