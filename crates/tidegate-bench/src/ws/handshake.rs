//! The client side of the WebSocket opening handshake (RFC 6455 section 4.1), asking for the
//! `mqtt` subprotocol as MQTT over WebSocket requires.
//!
//! Place in the data flow: socket (or TLS) → [`upgrade`] → [`super::WsIo`]. The key and the
//! expected `Sec-WebSocket-Accept` come from tungstenite's helpers; the request and the
//! response head are handled here, so the connection that follows is our own framing.

use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest response head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The URI is not `ws://host[:port]/path` or `wss://...`.
    #[error("not a WebSocket URI: {0}")]
    Uri(String),
    /// The server answered with something other than `101 Switching Protocols`.
    #[error("WebSocket upgrade refused: {0}")]
    Refused(String),
    /// A 101 whose headers do not complete the handshake.
    #[error("bad WebSocket upgrade response: {0}")]
    BadResponse(&'static str),
    /// The server chose a subprotocol other than `mqtt`.
    #[error("the server chose subprotocol {0:?}, not mqtt")]
    Subprotocol(String),
    /// The response head is over 8 KiB.
    #[error("WebSocket upgrade response head over 8 KiB")]
    TooLarge,
    /// The connection closed before the response was complete.
    #[error("connection closed during the WebSocket upgrade")]
    Closed,
}

impl From<UpgradeError> for io::Error {
    fn from(e: UpgradeError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The request line target and the `Host` of `uri`.
fn host_and_path(uri: &str) -> Result<(&str, &str), UpgradeError> {
    let rest = uri
        .strip_prefix("ws://")
        .or_else(|| uri.strip_prefix("wss://"))
        .ok_or_else(|| UpgradeError::Uri(uri.to_owned()))?;
    let (host, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(UpgradeError::Uri(uri.to_owned()));
    }
    Ok((host, path))
}

/// Runs the handshake for `uri` on `stream`; returns the bytes that followed the response head
/// (normally none: the broker speaks only after CONNECT).
pub(super) async fn upgrade<S>(uri: &str, stream: &mut S) -> io::Result<BytesMut>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (host, path) = host_and_path(uri)?;
    let key = generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // Over TLS the request may otherwise wait in rustls.
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    let head_len = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() >= MAX_HEAD {
            return Err(UpgradeError::TooLarge.into());
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(UpgradeError::Closed.into());
        }
    };
    let head = buf.split_to(head_len);
    check_response(&head, &derive_accept_key(key.as_bytes()))?;
    Ok(buf)
}

/// Checks a response head: `101`, `Upgrade: websocket`, the accept key, and `mqtt` as the
/// subprotocol if the server names one (some brokers name none).
fn check_response(head: &[u8], accept: &str) -> Result<(), UpgradeError> {
    let head = std::str::from_utf8(head).map_err(|_| UpgradeError::BadResponse("not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        return Err(UpgradeError::Refused(status.to_owned()));
    }
    let (mut upgrade, mut accepted) = (false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "sec-websocket-accept" => accepted = value == accept,
            "sec-websocket-protocol" if value != "mqtt" => {
                return Err(UpgradeError::Subprotocol(value.to_owned()));
            }
            _ => {}
        }
    }
    if !upgrade {
        return Err(UpgradeError::BadResponse("no Upgrade: websocket"));
    }
    if !accepted {
        return Err(UpgradeError::BadResponse(
            "missing or wrong Sec-WebSocket-Accept",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn response(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             {extra}\r\n"
        )
    }

    #[test]
    fn the_uri_gives_host_and_path() {
        assert_eq!(
            host_and_path("wss://localhost:8884/mqtt").unwrap(),
            ("localhost:8884", "/mqtt")
        );
        assert_eq!(host_and_path("ws://[::1]:80").unwrap(), ("[::1]:80", "/"));
        assert!(host_and_path("http://h/mqtt").is_err());
        assert!(host_and_path("ws:///mqtt").is_err());
    }

    #[test]
    fn responses_are_checked() {
        let ok = format!("Sec-WebSocket-Accept: {ACCEPT}\r\nSec-WebSocket-Protocol: mqtt\r\n");
        assert!(check_response(response(&ok).as_bytes(), ACCEPT).is_ok());
        // No subprotocol named is accepted (some brokers answer without one).
        let bare = format!("sec-websocket-accept: {ACCEPT}\r\n");
        assert!(check_response(response(&bare).as_bytes(), ACCEPT).is_ok());
        assert!(matches!(
            check_response(
                response("Sec-WebSocket-Accept: nope\r\n").as_bytes(),
                ACCEPT
            ),
            Err(UpgradeError::BadResponse(_))
        ));
        let other = format!("Sec-WebSocket-Accept: {ACCEPT}\r\nSec-WebSocket-Protocol: chat\r\n");
        assert!(matches!(
            check_response(response(&other).as_bytes(), ACCEPT),
            Err(UpgradeError::Subprotocol(_))
        ));
        assert!(matches!(
            check_response(b"HTTP/1.1 404 Not Found\r\n\r\n", ACCEPT),
            Err(UpgradeError::Refused(s)) if s.contains("404")
        ));
    }

    #[tokio::test]
    async fn bytes_after_the_head_are_kept() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let serve = tokio::spawn(async move {
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                server.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            assert!(request.starts_with("GET /mqtt HTTP/1.1\r\nHost: h:1\r\n"));
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let accept = derive_accept_key(key.as_bytes());
            let mut reply = response(&format!("Sec-WebSocket-Accept: {accept}\r\n")).into_bytes();
            reply.extend_from_slice(b"\x82\x02\x20\x02");
            server.write_all(&reply).await.unwrap();
            server
        });
        let leftover = upgrade("ws://h:1/mqtt", &mut client).await.unwrap();
        assert_eq!(&leftover[..], b"\x82\x02\x20\x02");
        serve.await.unwrap();
    }
}
