//! MQTT over WebSocket: the upgrade ([`handshake`]) and [`WsStream`], which turns WebSocket
//! frames back into the MQTT byte stream for the connection task.
//!
//! Place in the data flow: `[TLS] --> handshake::accept --> WsStream --> Connection<WsStream>`.
//!
//! **Why our own framing and not tungstenite or axum.** Both are message APIs (a `Stream` of
//! `Message`s) that the connection would need an adapter to read as bytes, and both keep
//! per-connection buffers alive for the life of the socket: tungstenite 0.30 allocates its
//! read buffer (128 KiB by default) when the socket is wrapped and never gives it back, so an
//! idle WSS connection would cost more than ten times its whole budget. MQTT needs little of
//! WebSocket: binary frames carrying a byte stream, ping/pong and close. Here frames are
//! decoded in place in the connection's own read buffer (which is released while idle), and
//! the only state kept per connection is a 14-byte partial header and two empty `BytesMut`.
//! The handshake is ~150 lines with `httparse`; the frame rules are tested below and against
//! mqtt.js and Paho.
//!
//! **permessage-deflate** (RFC 7692, the listener's `permessage_deflate`, on by default) is
//! negotiated in [`negotiate`] and runs in [`deflate`]. It is built so that an idle connection
//! keeps no codec: we always answer `server_no_context_takeover` (one compressor per worker
//! thread serves every connection), and the client keeps its context only with a window
//! capped at 1 KiB, which is kept as bytes rather than as a decompressor; a decompressor is
//! held only while a compressed message is arriving. Cost per idle connection: a boxed
//! [`deflate::Deflate`] (~100 bytes) plus at most 1 KiB of window, nothing without the
//! extension.
//!
//! Reads: a compressed message's frames are unmasked in place like any other, then their
//! payload is inflated into the caller's buffer, the message's bytes before anything read
//! after it. Writes: each `poll_write` becomes one binary frame, compressed (RSV1) when the
//! extension is on, the write is at least 64 bytes and compression makes it smaller. Its
//! header and payload are copied into `out` (one copy, then one write to the socket, so over
//! TLS a frame is one record rather than a two-byte record for the header), and the buffer is
//! released once written. The connection flushes after its own writes; the frames the read
//! side owes the peer (pongs, close echoes) are flushed by the read side itself, since over
//! TLS an unflushed frame can wait inside rustls for a write that may never come.

mod deflate;
mod frame;
pub(crate) mod handshake;
mod negotiate;

pub(crate) use frame::FrameError;

use super::Transport;
use bytes::{Buf, BytesMut};
use deflate::Deflate;
use frame::{Decoded, FrameReader, close_code, opcode, write_frame};
use handshake::Upgraded;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest payload put in one frame; a longer write is split over several calls.
const MAX_FRAME: usize = 256 * 1024;

/// A WebSocket connection seen as the MQTT byte stream it carries.
#[derive(Debug)]
pub(crate) struct WsStream<S> {
    inner: S,
    /// Bytes that arrived with the upgrade request, decoded before the socket's.
    leftover: BytesMut,
    reader: FrameReader,
    /// Encoded frames not yet written: data frames of a write, pongs, close.
    out: BytesMut,
    /// A close frame was queued: no more frames after it.
    close_sent: bool,
    /// Bytes queued by the read side (a pong, a close echo) went to `inner` without a
    /// completed flush. Over TLS they may sit in rustls until one, and the connection flushes
    /// only after its own writes, so the read side retries it (see `try_drain`).
    flush_owed: bool,
    /// permessage-deflate, when negotiated; boxed so that a connection without it pays one
    /// pointer.
    deflate: Option<Box<Deflate>>,
}

impl<S> WsStream<S> {
    /// Wraps a socket whose upgrade completed; `leftover` are bytes read past the request.
    pub(crate) fn new(inner: S, leftover: BytesMut) -> WsStream<S> {
        WsStream {
            inner,
            leftover,
            reader: FrameReader::default(),
            out: BytesMut::new(),
            close_sent: false,
            flush_owed: false,
            deflate: None,
        }
    }

    /// Wraps a socket upgraded by [`handshake::accept`]; a compressed message may inflate to
    /// at most `max_message` bytes (the maximum packet size).
    pub(crate) fn upgraded(inner: S, upgraded: Upgraded, max_message: u32) -> WsStream<S> {
        let mut stream = WsStream::new(inner, upgraded.leftover);
        stream.deflate = upgraded
            .deflate
            .map(|params| Box::new(Deflate::new(params, max_message)));
        stream
    }

    /// Whether inflated bytes wait to be read.
    fn inflate_pending(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.pending())
    }
}

impl<S: AsyncWrite + Unpin> WsStream<S> {
    /// Writes `out` to the socket until it is empty, then releases it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        self.out = BytesMut::new();
        Poll::Ready(Ok(()))
    }

    /// Sends what is queued and flushes it, as far as the socket takes it now; errors wait for
    /// the next write. The read side calls this for the frames it owes the peer (pongs, close
    /// echoes): nothing else would flush them on a connection that has no MQTT bytes to write,
    /// and over TLS an unflushed frame can wait in rustls. A flush still owed keeps
    /// [`Transport::poll_read_ready`] ready, so the connection's next read comes back here
    /// once the socket is writable.
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

    /// Ends the connection for a frame error: a close frame with its code (best effort), and
    /// the error for the reader.
    fn fail<T>(&mut self, cx: &mut Context<'_>, error: frame::FrameError) -> Poll<io::Result<T>> {
        if !self.close_sent {
            write_frame(&mut self.out, opcode::CLOSE, &error.code.to_be_bytes());
            self.close_sent = true;
        }
        self.try_drain(cx);
        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Pongs and close echoes owed to the peer leave even while the connection has nothing
        // to write.
        this.try_drain(cx);
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // A compressed message already read comes before anything read after it.
            if let Some(deflate) = this.deflate.as_deref_mut().filter(|d| d.pending()) {
                match deflate.inflate(buf.initialize_unfilled()) {
                    Ok(0) => {}
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(error) => return this.fail(cx, error),
                }
            }
            if this.reader.closed {
                return Poll::Ready(Ok(()));
            }
            let start = buf.filled().len();
            let from_leftover = !this.leftover.is_empty();
            if from_leftover {
                let n = this.leftover.len().min(buf.remaining());
                buf.put_slice(this.leftover.get(..n).unwrap_or_default());
            } else {
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                if buf.filled().len() == start {
                    // The peer closed the socket (with or without a close frame).
                    return Poll::Ready(Ok(()));
                }
            }
            let end = buf.filled().len();
            let raw = buf.filled_mut().get_mut(start..end).unwrap_or_default();
            let decoded = this.reader.decode(
                raw,
                this.deflate.as_deref_mut(),
                &mut this.out,
                &mut this.close_sent,
            );
            let Decoded { written, consumed } = match decoded {
                Ok(decoded) => decoded,
                Err(error) => {
                    buf.set_filled(start);
                    return this.fail(cx, error);
                }
            };
            // Decoding stops after a compressed message: what follows it is decoded once the
            // message is inflated. Those bytes are still as they came (nothing after
            // `consumed` is touched).
            if from_leftover {
                this.leftover.advance(consumed);
            } else if let Some(rest) = raw.get(consumed..).filter(|rest| !rest.is_empty()) {
                this.leftover = BytesMut::from(rest);
            }
            if this.leftover.is_empty() {
                this.leftover = BytesMut::new();
            }
            buf.set_filled(start + written);
            this.try_drain(cx);
            if written > 0 {
                return Poll::Ready(Ok(()));
            }
            // Only frame headers, control frames or compressed bytes: inflate or read on.
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
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
        let len = buf.len().min(MAX_FRAME);
        let payload = buf.get(..len).unwrap_or_default();
        let compressed = this
            .deflate
            .as_deref()
            .is_some_and(|d| d.write_compressed(&mut this.out, payload));
        if !compressed {
            write_frame(&mut this.out, opcode::BINARY, payload);
        }
        // The frame is ours now; a socket that is not writable yet is handled by the next
        // write or flush, which drain first.
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
            write_frame(
                &mut this.out,
                opcode::CLOSE,
                &close_code::NORMAL.to_be_bytes(),
            );
            this.close_sent = true;
        }
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: Transport> Transport for WsStream<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // An owed flush is retried by the next read (`try_drain`).
        if self.leftover.is_empty()
            && !self.reader.closed
            && !self.inflate_pending()
            && !self.flush_owed
        {
            self.inner.poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::deflate::tests::client_compress;
    use super::frame::tests::client_frame;
    use super::negotiate::DeflateParams;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn with_deflate<S>(inner: S, max_message: u32) -> WsStream<S> {
        let upgraded = Upgraded {
            leftover: BytesMut::new(),
            deflate: Some(DeflateParams {
                client_window_bits: None,
                server_window_bits: None,
            }),
        };
        WsStream::upgraded(inner, upgraded, max_message)
    }

    #[tokio::test]
    async fn deflate_both_ways_and_small_reads() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut ws = with_deflate(server, 1 << 20);
        let big: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{};", i % 101).into_bytes())
            .collect();
        let compressed = client_compress(&[&big], false).remove(0);
        let mut wire = client_frame(true, 0x40 | opcode::BINARY, &compressed, [1, 2, 3, 4]);
        wire.extend(client_frame(true, opcode::BINARY, b"tail", [5; 4]));
        client.write_all(&wire).await.unwrap();
        // Reads far smaller than the message: it inflates across many of them, and the plain
        // frame after it comes last.
        let mut got = Vec::new();
        while got.len() < big.len() + 4 {
            let mut buf = [0u8; 100];
            let n = ws.read(&mut buf).await.unwrap();
            assert!(n > 0, "no end of stream");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [big.as_slice(), b"tail"].concat());
        let deflate = ws.deflate.as_deref().unwrap();
        assert!(!deflate.pending() && ws.leftover.capacity() == 0, "{ws:?}");

        let payload = big[..1000].to_vec();
        ws.write_all(&payload).await.unwrap();
        ws.write_all(&[0xD0, 0]).await.unwrap();
        ws.flush().await.unwrap();
        let mut head = [0u8; 4];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(head[..2], [0xC2, 126], "compressed, 16-bit length");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[2], head[3]]))];
        client.read_exact(&mut body).await.unwrap();
        assert!(body.len() < payload.len() / 2);
        body.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
        let mut plain = Vec::with_capacity(payload.len());
        flate2::Decompress::new(false)
            .decompress_vec(&body, &mut plain, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(plain, payload);
        let mut pingresp = [0u8; 4];
        client.read_exact(&mut pingresp).await.unwrap();
        assert_eq!(
            pingresp,
            [0x82, 2, 0xD0, 0],
            "a tiny write goes uncompressed"
        );
    }

    #[tokio::test]
    async fn inflating_past_the_limit_closes_with_1009() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut ws = with_deflate(server, 4096);
        let bomb = client_compress(&[&[b'A'; 1 << 20]], false).remove(0);
        client
            .write_all(&client_frame(true, 0x40 | opcode::BINARY, &bomb, [9; 4]))
            .await
            .unwrap();
        let mut total = 0;
        let err = loop {
            let mut buf = [0u8; 1024];
            match ws.read(&mut buf).await {
                Ok(n) => {
                    assert!(n > 0, "no end of stream");
                    total += n;
                }
                Err(e) => break e,
            }
        };
        assert!(total <= 4096, "{total}");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut close = [0u8; 4];
        client.read_exact(&mut close).await.unwrap();
        assert_eq!(close, [0x88, 2, 0x03, 0xF1], "close 1009");
    }

    #[tokio::test]
    async fn rsv1_without_deflate_closes_with_1002() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut ws = WsStream::new(server, BytesMut::new());
        let compressed = client_compress(&[b"compressed, not negotiated"], false).remove(0);
        client
            .write_all(&client_frame(
                true,
                0x40 | opcode::BINARY,
                &compressed,
                [3; 4],
            ))
            .await
            .unwrap();
        let err = ws.read(&mut [0u8; 64]).await.unwrap_err();
        assert!(err.to_string().contains("RSV1"), "{err}");
        let mut close = [0u8; 4];
        client.read_exact(&mut close).await.unwrap();
        assert_eq!(close, [0x88, 2, 0x03, 0xEA], "close 1002");
    }

    #[tokio::test]
    async fn bytes_in_frames_both_ways_and_pong_without_a_write() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut ws = WsStream::new(server, BytesMut::from(&b"\x82\x82\x00\x00\x00\x00"[..]));
        // The leftover frame announced 2 bytes; they follow on the socket.
        let mut wire = b"hi".to_vec();
        wire.extend(client_frame(true, opcode::PING, b"p", [1, 2, 3, 4]));
        wire.extend(client_frame(true, opcode::BINARY, b"there", [9, 9, 9, 9]));
        client.write_all(&wire).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 7 {
            let mut buf = [0u8; 64];
            let n = ws.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hithere");
        let mut pong = [0u8; 3];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(pong, [0x8A, 1, b'p']);

        ws.write_all(b"\x20\x02\x00\x00").await.unwrap();
        ws.flush().await.unwrap();
        let mut frame = [0u8; 6];
        client.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, [0x82, 4, 0x20, 2, 0, 0]);

        ws.shutdown().await.unwrap();
        let mut close = Vec::new();
        client.read_to_end(&mut close).await.unwrap();
        assert_eq!(close, [0x88, 2, 0x03, 0xE8]);
    }

    /// A TLS-shaped socket: reads come from `input`; writes are taken at once into `pending`
    /// and reach `socket` only through a flush, which completes only while `open`. It claims
    /// read readiness only when it has input.
    #[derive(Debug, Default)]
    struct Buffering {
        input: Vec<u8>,
        pending: Vec<u8>,
        socket: Vec<u8>,
        open: bool,
    }

    impl AsyncRead for Buffering {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.input.is_empty() {
                return Poll::Pending;
            }
            let n = this.input.len().min(buf.remaining());
            buf.put_slice(&this.input[..n]);
            this.input.drain(..n);
            Poll::Ready(Ok(()))
        }
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
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if !this.open {
                return Poll::Pending;
            }
            this.socket.append(&mut this.pending);
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    impl Transport for Buffering {
        fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.input.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }
    }

    /// A pong owed on a connection with nothing of its own to write leaves through a flush (over
    /// TLS it would otherwise wait in rustls), and a flush the socket cannot take yet keeps
    /// the stream read-ready until a read completes it.
    #[test]
    fn a_pong_is_flushed_without_a_write_and_an_owed_flush_keeps_reads_coming() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let ping = client_frame(true, opcode::PING, b"p", [1, 2, 3, 4]);
        let read = |ws: &mut WsStream<Buffering>, cx: &mut Context<'_>| {
            let mut space = [0u8; 64];
            Pin::new(ws).poll_read(cx, &mut ReadBuf::new(&mut space))
        };

        let mut ws = WsStream::new(
            Buffering {
                input: ping.clone(),
                open: true,
                ..Buffering::default()
            },
            BytesMut::new(),
        );
        assert!(read(&mut ws, &mut cx).is_pending(), "no MQTT bytes");
        assert_eq!(ws.inner.socket, [0x8A, 1, b'p'], "the pong was flushed");
        assert!(ws.poll_read_ready(&mut cx).is_pending(), "nothing owed");

        let mut ws = WsStream::new(
            Buffering {
                input: ping,
                ..Buffering::default()
            },
            BytesMut::new(),
        );
        assert!(read(&mut ws, &mut cx).is_pending());
        assert!(ws.inner.socket.is_empty(), "the socket takes nothing yet");
        assert!(
            ws.poll_read_ready(&mut cx).is_ready(),
            "a flush is owed: the connection must come back to read"
        );
        ws.inner.open = true;
        assert!(read(&mut ws, &mut cx).is_pending());
        assert_eq!(ws.inner.socket, [0x8A, 1, b'p']);
        assert!(ws.poll_read_ready(&mut cx).is_pending());
    }

    #[tokio::test]
    async fn text_frame_closes_with_1003() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut ws = WsStream::new(server, BytesMut::new());
        client
            .write_all(&client_frame(true, opcode::TEXT, b"{}", [1; 4]))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let err = ws.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("text frame"), "{err}");
        let mut close = [0u8; 4];
        client.read_exact(&mut close).await.unwrap();
        assert_eq!(close, [0x88, 2, 0x03, 0xEB]);
    }

    #[tokio::test]
    async fn close_frame_is_end_of_stream() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut ws = WsStream::new(server, BytesMut::new());
        client
            .write_all(&client_frame(
                true,
                opcode::CLOSE,
                &1000u16.to_be_bytes(),
                [4; 4],
            ))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(ws.read(&mut buf).await.unwrap(), 0);
        let mut echo = [0u8; 4];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, [0x88, 2, 0x03, 0xE8]);
        assert!(ws.write(b"x").await.is_err(), "no data frame after a close");
    }
}
