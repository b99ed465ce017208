//! MQTT over WebSocket: a byte stream on top of binary WebSocket messages.
//!
//! Place in the data flow: transport → (TLS) → [`connect`] (HTTP upgrade with the `mqtt`
//! subprotocol) → [`WsIo`], which the transport treats like any socket. MQTT packets may span
//! messages and a message may hold several packets (MQTT-6.0.0-2..4), so reading hands out the
//! bytes of each binary message in order, and writing sends each write call as one binary
//! message: the client writes its whole batch at once, so a batch is one frame.

use bytes::{Buf, Bytes};
use futures_core::Stream;
use futures_sink::Sink;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A WebSocket connection seen as a byte stream.
#[derive(Debug)]
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the current binary message.
    rest: Bytes,
    /// Bytes of the caller's buffer already handed to the WebSocket and awaiting flush.
    in_flight: usize,
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// Runs the client handshake on `stream` for `uri` (e.g. `ws://host:port/mqtt`), asking for
/// the `mqtt` subprotocol as MQTT over WebSocket requires.
pub async fn connect<S>(uri: &str, stream: S) -> io::Result<WsIo<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = uri.into_client_request().map_err(to_io)?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let (ws, _response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(to_io)?;
    Ok(WsIo {
        ws,
        rest: Bytes::new(),
        in_flight: 0,
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rest.is_empty() {
                let n = this.rest.len().min(buf.remaining());
                buf.put_slice(&this.rest[..n]);
                this.rest.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => this.rest = b,
                // Pings are answered by tungstenite on the next write or flush; text frames
                // are not MQTT ([MQTT-6.0.0-1]) and are skipped.
                Some(Ok(
                    Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Frame(_),
                )) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    /// Sends `buf` as one binary message and reports it written once it is flushed. While the
    /// flush is pending the message is already queued: the next call must pass a buffer that
    /// starts with the same bytes (as `write_all` and the client's write buffer do), and is
    /// told how many of them went out.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.in_flight == 0 {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
            Pin::new(&mut this.ws)
                .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
                .map_err(to_io)?;
            this.in_flight = buf.len();
        }
        ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(to_io)?;
        let n = std::mem::take(&mut this.in_flight);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A WebSocket server that checks the subprotocol, then sends two MQTT-ish chunks as two
    /// messages and echoes back whatever binary message it gets.
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
        use futures_sink::Sink as _;
        let mut ws = Pin::new(&mut ws);
        std::future::poll_fn(|cx| ws.as_mut().poll_ready(cx))
            .await
            .unwrap();
        ws.as_mut()
            .start_send(Message::Binary(Bytes::from_static(b"\x20\x02")))
            .unwrap();
        std::future::poll_fn(|cx| ws.as_mut().poll_ready(cx))
            .await
            .unwrap();
        ws.as_mut()
            .start_send(Message::Binary(Bytes::from_static(b"\x00\x00")))
            .unwrap();
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
    async fn bytes_flow_across_message_boundaries() {
        let (client, srv) = tokio::io::duplex(4096);
        let server = tokio::spawn(server(srv));
        let mut io = connect("ws://localhost/mqtt", client).await.unwrap();
        // Two messages of two bytes read as one CONNACK-shaped stream.
        let mut b = [0u8; 4];
        io.read_exact(&mut b).await.unwrap();
        assert_eq!(b, [0x20, 0x02, 0x00, 0x00]);
        io.write_all(b"\xc0\x00hello").await.unwrap();
        let mut echo = [0u8; 7];
        io.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"\xc0\x00hello");
        io.shutdown().await.unwrap();
        drop(io);
        server.await.unwrap();
    }
}
