//! The WebSocket opening handshake (RFC 6455 section 4) for MQTT (MQTT 5.0 section 6).
//!
//! Place in the data flow: `accept --> [PROXY] --> [TLS] --> upgrade --> WsStream -->
//! connection`. The HTTP request head is read and checked here, and answered with `101
//! Switching Protocols`, or with a plain HTTP error that says what was wrong before the
//! socket is closed: `426 Upgrade Required` for a request without a WebSocket upgrade (a
//! browser opening the URL), `404` for another path, `400` for anything malformed.
//!
//! Subprotocols: `mqtt` is chosen when offered (mqtt.js, Paho, every MQTT 3.1.1/5.0 client),
//! else `mqttv3.1` (older clients). A request offering only other subprotocols is refused:
//! answering it would make the client speak something we do not. A request offering none is
//! accepted without a subprotocol, as Mosquitto does, for simple tools.
//!
//! Extensions: `permessage-deflate` when the listener allows it (`permessage_deflate`, on by
//! default) and the client offers it acceptably; [`super::negotiate`] picks the offer and the
//! parameters. Any other extension, and deflate on a listener that turned it off, is declined
//! by leaving it out of the response, which every client handles by sending plain frames.

use super::negotiate::{self, DeflateParams};
use base64::Engine as _;
use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted; browsers send well under 2 KiB.
const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 64;
/// The GUID of RFC 6455 section 1.3.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade was refused; each variant maps to the HTTP status sent back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// The bytes are not an HTTP/1.1 request (400).
    #[error("not an HTTP request: {0}")]
    NotHttp(String),
    /// A request for another path (404).
    #[error("request for {0:?}, not the MQTT WebSocket path")]
    WrongPath(String),
    /// An HTTP request without `Upgrade: websocket` (426).
    #[error("HTTP {0} request without a WebSocket Upgrade")]
    NoUpgrade(String),
    /// A WebSocket version other than 13 (426).
    #[error("unsupported Sec-WebSocket-Version {0:?} (13 is)")]
    Version(String),
    /// A missing or malformed header of the handshake (400).
    #[error("bad WebSocket request: {0}")]
    BadRequest(&'static str),
    /// Subprotocols offered, `mqtt` not among them (400).
    #[error("the client offers subprotocols {0:?} but not mqtt")]
    Subprotocol(String),
    /// The request head is over [`MAX_HEAD`] bytes (431).
    #[error("request head over 8 KiB")]
    TooLarge,
    /// The peer closed before the request was complete.
    #[error("connection closed during the WebSocket upgrade")]
    Closed,
    /// Reading or writing failed.
    #[error("IO error during the WebSocket upgrade: {0}")]
    Io(#[from] io::Error),
}

impl UpgradeError {
    /// The HTTP status line and extra headers of the refusal; `None` when nothing can be sent.
    fn response(&self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            UpgradeError::NotHttp(_)
            | UpgradeError::BadRequest(_)
            | UpgradeError::Subprotocol(_) => ("400 Bad Request", ""),
            UpgradeError::WrongPath(_) => ("404 Not Found", ""),
            UpgradeError::NoUpgrade(_) | UpgradeError::Version(_) => (
                "426 Upgrade Required",
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            ),
            UpgradeError::TooLarge => ("431 Request Header Fields Too Large", ""),
            UpgradeError::Closed | UpgradeError::Io(_) => return None,
        })
    }
}

/// A request accepted by [`decide`]: what the 101 response carries.
#[derive(Debug, PartialEq, Eq)]
struct Accepted {
    accept_key: String,
    subprotocol: Option<&'static str>,
    deflate: Option<DeflateParams>,
}

/// A completed upgrade.
#[derive(Debug)]
pub(crate) struct Upgraded {
    /// The bytes that followed the request head (a client must wait for the 101 before
    /// sending frames, so this is normally empty).
    pub(crate) leftover: BytesMut,
    /// permessage-deflate as agreed, when it was.
    pub(crate) deflate: Option<DeflateParams>,
}

/// Reads the upgrade request from `stream` and answers it, accepting permessage-deflate when
/// `deflate` allows it. On failure the HTTP refusal has been sent.
pub(crate) async fn accept<S>(
    stream: &mut S,
    path: &str,
    deflate: bool,
) -> Result<Upgraded, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    let outcome = loop {
        if buf.len() >= MAX_HEAD {
            break Err(UpgradeError::TooLarge);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(UpgradeError::Closed);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                break decide(&request, path, deflate).map(|a| (a, len));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => break Err(UpgradeError::NotHttp(e.to_string())),
        }
    };
    match outcome {
        Ok((accepted, len)) => {
            let mut response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n",
                accepted.accept_key
            );
            if let Some(protocol) = accepted.subprotocol {
                response.push_str("Sec-WebSocket-Protocol: ");
                response.push_str(protocol);
                response.push_str("\r\n");
            }
            if let Some(params) = &accepted.deflate {
                response.push_str("Sec-WebSocket-Extensions: ");
                response.push_str(&params.response());
                response.push_str("\r\n");
            }
            response.push_str("\r\n");
            stream.write_all(response.as_bytes()).await?;
            stream.flush().await?;
            let _head = buf.split_to(len);
            Ok(Upgraded {
                leftover: buf,
                deflate: accepted.deflate,
            })
        }
        Err(error) => {
            if let Some((status, headers)) = error.response() {
                let body = format!("{error}\n");
                let response = format!(
                    "HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\
                     Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                // Best effort: the socket is closed either way.
                if stream.write_all(response.as_bytes()).await.is_ok() {
                    let _ = stream.shutdown().await;
                }
            }
            Err(error)
        }
    }
}

/// Checks a complete request head against RFC 6455 section 4.2.1 and the MQTT rules;
/// `deflate`: permessage-deflate may be accepted.
fn decide(
    request: &httparse::Request<'_, '_>,
    path: &str,
    deflate: bool,
) -> Result<Accepted, UpgradeError> {
    let method = request.method.unwrap_or_default();
    let target = request.path.unwrap_or_default();
    let header = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let target_path = target.split_once('?').map_or(target, |(p, _)| p);
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        // A plain HTTP request (a browser opening the URL, a health check) gets 426 on the
        // MQTT path and 404 elsewhere.
        return Err(if target_path == path {
            UpgradeError::NoUpgrade(method.to_owned())
        } else {
            UpgradeError::WrongPath(target.to_owned())
        });
    }
    if target_path != path {
        return Err(UpgradeError::WrongPath(target.to_owned()));
    }
    if method != "GET" {
        return Err(UpgradeError::BadRequest(
            "the method of an upgrade must be GET",
        ));
    }
    let version = header("sec-websocket-version").next().unwrap_or_default();
    if version.trim() != "13" {
        return Err(UpgradeError::Version(version.to_owned()));
    }
    let key = header("sec-websocket-key")
        .next()
        .map(str::trim)
        .ok_or(UpgradeError::BadRequest("missing Sec-WebSocket-Key"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| UpgradeError::BadRequest("Sec-WebSocket-Key is not base64"))?;
    if decoded.len() != 16 {
        return Err(UpgradeError::BadRequest(
            "Sec-WebSocket-Key is not 16 bytes long",
        ));
    }
    let offered: Vec<&str> = header("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let subprotocol = if offered.is_empty() {
        None
    } else if offered.contains(&"mqtt") {
        Some("mqtt")
    } else if offered.contains(&"mqttv3.1") {
        Some("mqttv3.1")
    } else {
        return Err(UpgradeError::Subprotocol(offered.join(", ")));
    };
    let deflate = if deflate {
        negotiate::negotiate(header("sec-websocket-extensions"))
    } else {
        None
    };
    Ok(Accepted {
        accept_key: accept_key(key),
        subprotocol,
        deflate,
    })
}

/// `Sec-WebSocket-Accept` for a client's key.
fn accept_key(key: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key.as_bytes());
    context.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(context.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &str) -> String {
        format!(
            "GET /mqtt HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn decide_text(text: &str) -> Result<Accepted, UpgradeError> {
        decide_with(text, true)
    }

    fn decide_with(text: &str, deflate: bool) -> Result<Accepted, UpgradeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(text.as_bytes()).unwrap().is_complete());
        decide(&req, "/mqtt", deflate)
    }

    #[test]
    fn accept_key_of_rfc_6455() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn subprotocol_choice() {
        let chosen = |extra: &str| decide_text(&request(extra)).map(|a| a.subprotocol);
        assert_eq!(
            chosen("Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n").unwrap(),
            Some("mqtt")
        );
        assert_eq!(
            chosen("Sec-WebSocket-Protocol: mqttv3.1\r\n").unwrap(),
            Some("mqttv3.1")
        );
        assert_eq!(chosen("").unwrap(), None);
        assert!(matches!(
            chosen("Sec-WebSocket-Protocol: chat, superchat\r\n"),
            Err(UpgradeError::Subprotocol(p)) if p == "chat, superchat"
        ));
    }

    #[test]
    fn deflate_follows_the_offer_and_the_listener() {
        let offer = request(
            "Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Extensions: x-foo, \
             permessage-deflate; client_max_window_bits\r\n",
        );
        let accepted = decide_text(&offer).unwrap();
        assert_eq!(accepted.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            accepted.deflate,
            Some(DeflateParams {
                client_window_bits: Some(negotiate::CLIENT_WINDOW_BITS),
                server_window_bits: None,
            })
        );
        assert_eq!(decide_with(&offer, false).unwrap().deflate, None);
        assert_eq!(decide_text(&request("")).unwrap().deflate, None);
        // Offers split over two header lines; the first line's offer is declined.
        let two = request(
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n",
        );
        assert_eq!(
            decide_text(&two).unwrap().deflate,
            Some(DeflateParams {
                client_window_bits: None,
                server_window_bits: Some(9),
            })
        );
    }

    #[test]
    fn refusals_and_their_status() {
        let plain = decide_text("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
        assert!(matches!(plain, UpgradeError::NoUpgrade(_)));
        assert_eq!(plain.response().unwrap().0, "426 Upgrade Required");
        let other = decide_text("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
        assert_eq!(other.response().unwrap().0, "404 Not Found");
        let path = decide_text(&request("").replace("/mqtt", "/ws")).unwrap_err();
        assert!(matches!(path, UpgradeError::WrongPath(p) if p == "/ws"));
        let query = decide_text(&request("").replace("/mqtt", "/mqtt?token=1"));
        assert!(query.is_ok(), "a query string does not change the path");
        let version = decide_text(&request("").replace("Version: 13", "Version: 8")).unwrap_err();
        assert!(matches!(version, UpgradeError::Version(v) if v == "8"));
        let post = decide_text(&request("").replace("GET", "POST")).unwrap_err();
        assert!(matches!(post, UpgradeError::BadRequest(_)));
        let short_key = decide_text(&request("").replace(KEY, "c2hvcnQ=")).unwrap_err();
        assert!(matches!(short_key, UpgradeError::BadRequest(_)));
    }

    #[tokio::test]
    async fn upgrade_over_a_pipe_and_refusal_text() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move {
            let upgraded = accept(&mut server, "/mqtt", true).await.unwrap();
            (server, upgraded.leftover)
        });
        let mut text = request("Sec-WebSocket-Protocol: mqtt\r\n").into_bytes();
        text.extend_from_slice(&[0x82, 0x80]);
        client.write_all(&text).await.unwrap();
        let (_server, left) = task.await.unwrap();
        assert_eq!(&left[..], &[0x82, 0x80], "bytes after the head are kept");
        let mut response = vec![0; 4096];
        let n = client.read(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response[..n]);
        assert!(
            response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{response}"
        );
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert!(
            !response.contains("Extensions"),
            "none offered, none answered"
        );

        let (mut client, mut server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { accept(&mut server, "/mqtt", true).await });
        client
            .write_all(request("Sec-WebSocket-Extensions: permessage-deflate\r\n").as_bytes())
            .await
            .unwrap();
        let upgraded = task.await.unwrap().unwrap();
        assert!(upgraded.deflate.is_some());
        let mut response = vec![0; 4096];
        let n = client.read(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response[..n]);
        assert!(
            response.contains(
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
                 client_no_context_takeover\r\n"
            ),
            "{response}"
        );

        let (mut client, mut server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { accept(&mut server, "/mqtt", true).await });
        client
            .write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(
            task.await.unwrap(),
            Err(UpgradeError::NoUpgrade(_))
        ));
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();
        assert!(
            response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{response}"
        );
        assert!(response.contains("without a WebSocket Upgrade"));
    }
}
