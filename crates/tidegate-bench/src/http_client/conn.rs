//! One keep-alive HTTP/1.1 connection to the gateway: hyper's client state machine over a
//! TCP socket this module opens, one request at a time.
//!
//! Place in the data flow: the http scenario opens [`HttpConn`]s before the run; a publisher
//! task calls [`HttpConn::post_json`] once per request, an SSE reader calls
//! [`HttpConn::get_stream`] once and reads the body for the rest of the run. hyper's
//! connection future (the part that does the socket IO) runs in a task of its own, aborted
//! when the [`HttpConn`] is dropped, which closes the socket.
//!
//! HTTP/1.1 carries one request at a time per connection (hyper does not pipeline), so the
//! concurrency of an HTTP run is its number of connections.

use super::body::{BodyError, describe_error};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connection could not be made.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The gateway's address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// hyper reported a protocol or socket failure (the gateway closed the connection, sent
    /// something that is not HTTP, ...).
    #[error("http: {0}")]
    Hyper(#[from] hyper::Error),
    /// A step took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The request could not be built (a token that is not a valid header value).
    #[error("bad request: {0}")]
    Request(String),
    /// The gateway answered with a status other than the one expected.
    #[error("HTTP {status} for {what}: {detail}")]
    Status {
        /// Which request.
        what: String,
        /// The status code.
        status: u16,
        /// The error body, shortened.
        detail: String,
    },
    /// The answer's body is not what the API promises.
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// How requests are addressed and authorised: the same for every connection of a run.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// `Host` header.
    pub host: HeaderValue,
    /// `Authorization: Bearer <token>`, if a token was given.
    pub auth: Option<HeaderValue>,
}

impl RequestHead {
    /// The head for `authority` (the `Host` value) and an optional bearer token.
    pub fn new(authority: &str, token: Option<&str>) -> Result<RequestHead, HttpError> {
        let host =
            HeaderValue::from_str(authority).map_err(|e| HttpError::Request(e.to_string()))?;
        let auth = token
            .map(|t| {
                HeaderValue::from_str(&format!("Bearer {t}"))
                    .map(|mut v| {
                        // Kept out of any debug output.
                        v.set_sensitive(true);
                        v
                    })
                    .map_err(|_| HttpError::Request("the token is not a valid header value".into()))
            })
            .transpose()?;
        Ok(RequestHead { host, auth })
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>, HttpError> {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, self.host.clone())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = &self.auth {
            b = b.header(header::AUTHORIZATION, a.clone());
        }
        b.body(Full::new(body))
            .map_err(|e| HttpError::Request(e.to_string()))
    }

    /// `GET path` asking for an event stream.
    pub fn get_events(&self, path: &str) -> Result<Request<Full<Bytes>>, HttpError> {
        let mut b = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, self.host.clone())
            .header(header::ACCEPT, "text/event-stream");
        if let Some(a) = &self.auth {
            b = b.header(header::AUTHORIZATION, a.clone());
        }
        b.body(Full::new(Bytes::new()))
            .map_err(|e| HttpError::Request(e.to_string()))
    }
}

/// One HTTP/1.1 connection.
#[derive(Debug)]
pub struct HttpConn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
    head: RequestHead,
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl HttpConn {
    /// Connects to `addr` (Nagle off, as the MQTT connections) and starts hyper's connection.
    pub async fn open(
        addr: SocketAddr,
        head: RequestHead,
        timeout: Duration,
    ) -> Result<HttpConn, HttpError> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| HttpError::Timeout("the TCP connection"))?
            .map_err(|source| HttpError::Connect { addr, source })?;
        tcp.set_nodelay(true)
            .map_err(|source| HttpError::Connect { addr, source })?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        // A failure of the connection surfaces in the next `send_request`; nothing to do here.
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn {
            sender,
            driver,
            head,
        })
    }

    /// Sends `POST path` with a JSON body and reads the whole answer.
    pub async fn post_json(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let req = self.head.post_json(path, body)?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends `GET path` for an event stream; any status but 200 is an error carrying the
    /// gateway's explanation. The body is then read frame by frame by the caller (keep this
    /// connection alive meanwhile: dropping it closes the socket).
    pub async fn get_stream(&mut self, path: &str) -> Result<Response<Incoming>, HttpError> {
        let req = self.head.get_events(path)?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(HttpError::Status {
                what: format!("GET {path}"),
                status,
                detail: describe_error(&body),
            });
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_client::sse::{SseItem, SseParser};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads one request (head and Content-Length body) from a raw socket.
    async fn read_request(s: &mut TcpStream) -> (String, Vec<u8>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "client closed mid-body");
                    buf.extend_from_slice(&chunk[..n]);
                }
                return (head, buf[end + 4..end + 4 + len].to_vec());
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed mid-head");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn posts_keep_the_connection_and_carry_the_documented_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for answer in [
                response("200 OK", r#"{"matched":2}"#),
                response(
                    "401 Unauthorized",
                    r#"{"error":{"code":"unauthorized","message":""}}"#,
                ),
            ] {
                seen.push(read_request(&mut s).await);
                s.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        let head = RequestHead::new(&addr.to_string(), Some("s3cret")).unwrap();
        let mut c = HttpConn::open(addr, head, Duration::from_secs(5))
            .await
            .unwrap();
        let (status, body) = c
            .post_json("/v1/publish", Bytes::from_static(b"{\"topic\":\"a\"}"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(crate::http_client::body::parse_publish(&body), Ok(2));
        // The second request goes on the same socket (the server accepts only once).
        let (status, body) = c
            .post_json("/v1/publish/batch", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(describe_error(&body), "unauthorized: ");
        let seen = server.await.unwrap();
        let (head, body) = &seen[0];
        let lower = head.to_ascii_lowercase();
        assert!(head.starts_with("POST /v1/publish HTTP/1.1\r\n"), "{head}");
        assert!(lower.contains(&format!("\r\nhost: {addr}")), "{head}");
        assert!(head.contains("\r\nauthorization: Bearer s3cret"), "{head}");
        assert!(
            lower.contains("\r\ncontent-type: application/json"),
            "{head}"
        );
        assert!(lower.contains("\r\ncontent-length: 13"), "{head}");
        assert_eq!(body, b"{\"topic\":\"a\"}");
        assert!(seen[1].0.starts_with("POST /v1/publish/batch HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn event_streams_arrive_in_chunks_and_refusals_carry_the_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let (head, _) = read_request(&mut s).await;
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
            // One event split across two chunks, each its own write.
            for part in [
                &b": hb\n\nid: 1\nevent: t\nda"[..],
                &b"ta: {\"a\":1}\n\n"[..],
            ] {
                s.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .await
                    .unwrap();
                s.write_all(part).await.unwrap();
                s.write_all(b"\r\n").await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            s.write_all(b"0\r\n\r\n").await.unwrap();
            // A second connection is refused.
            let (mut s2, _) = listener.accept().await.unwrap();
            read_request(&mut s2).await;
            let refusal = response(
                "403 Forbidden",
                r#"{"error":{"code":"forbidden","message":"x"}}"#,
            );
            s2.write_all(refusal.as_bytes()).await.unwrap();
            head
        });
        let head = RequestHead::new(&addr.to_string(), None).unwrap();
        let mut c = HttpConn::open(addr, head.clone(), Duration::from_secs(5))
            .await
            .unwrap();
        let mut body = c
            .get_stream("/v1/subscribe?filter=a%2F%2B")
            .await
            .unwrap()
            .into_body();
        let mut parser = SseParser::new(1 << 16);
        let (mut events, mut comments) = (Vec::new(), 0);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                parser
                    .feed(&data, |item| match item {
                        SseItem::Event(e) => events.push(e.clone()),
                        SseItem::Comment(_) => comments += 1,
                    })
                    .unwrap();
            }
        }
        assert_eq!(comments, 1);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[0].event.as_deref(), Some("t"));
        let mut c2 = HttpConn::open(addr, head, Duration::from_secs(5))
            .await
            .unwrap();
        let err = c2.get_stream("/v1/subscribe?filter=x").await.unwrap_err();
        assert!(err.to_string().contains("HTTP 403"), "{err}");
        assert!(err.to_string().contains("forbidden: x"), "{err}");
        let req = server.await.unwrap();
        assert!(
            req.starts_with("GET /v1/subscribe?filter=a%2F%2B HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase()
                .contains("\r\naccept: text/event-stream"),
            "{req}"
        );
        assert!(!req.to_ascii_lowercase().contains("authorization"), "{req}");
    }
}
