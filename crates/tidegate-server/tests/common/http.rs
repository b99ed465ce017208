//! The HTTP API suites' harness (issue 6): an in-process gateway with an MQTT listener and an
//! HTTP listener configured with known tokens, a reqwest client aimed at it, and a reader of
//! Server-Sent Events over a response's byte stream.
//!
//! Everything goes over real sockets: reqwest speaks HTTP to the `http` listener, rumqttc speaks
//! MQTT to the `tcp` one, and both reach the same engine.

use super::inproc::{self, Running};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// The publish token every harness server accepts.
pub(crate) const PUBLISH_TOKEN: &str = "test-publish-token";
/// The admin token every harness server accepts.
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token";
/// The name of the harness's MQTT listener (the `listener` of its clients).
pub(crate) const MQTT_LISTENER: &str = "mqtt-main";

/// How long one expected HTTP answer or event may take: a debug build on a busy 2-core machine.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);
/// How long a reader waits before concluding that no event comes (absence has no event).
pub(crate) const QUIET: Duration = Duration::from_millis(500);

/// A configuration with the harness's MQTT and HTTP listeners; `http_extra` goes into the
/// `[http]` table (e.g. `history_size = 3`).
pub(crate) fn config(http_extra: &str) -> String {
    format!(
        "[[listeners]]\nkind = \"tcp\"\nname = \"{MQTT_LISTENER}\"\nbind = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nkind = \"http\"\nbind = \"127.0.0.1:0\"\n\n\
         [http]\npublish_tokens = [\"{PUBLISH_TOKEN}\"]\nadmin_tokens = [\"{ADMIN_TOKEN}\"]\n\
         {http_extra}\n"
    )
}

/// A running gateway and an HTTP client for it.
pub(crate) struct Gate {
    /// The server (stopped on drop).
    pub(crate) server: Running,
    /// Its first MQTT listener.
    pub(crate) mqtt: SocketAddr,
    /// `scheme://host:port` of its first HTTP listener.
    pub(crate) base: String,
    /// The HTTP client.
    pub(crate) client: reqwest::Client,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Its status.
    pub(crate) status: StatusCode,
    /// Its headers.
    pub(crate) headers: HeaderMap,
    /// Its body.
    pub(crate) body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `error.code` of a JSON error body.
    pub(crate) fn error_code(&self) -> String {
        let body = self.json();
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {body}"))
            .to_owned()
    }

    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts `status` and returns the JSON body.
    pub(crate) fn expect(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        self.json()
    }
}

/// A plain HTTP client with the harness's timeouts.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(PATIENCE)
        .build()
        .unwrap()
}

impl Gate {
    /// A gateway from [`config`] with `http_extra` in its `[http]` table.
    pub(crate) async fn start(http_extra: &str) -> Gate {
        Gate::from_toml(&config(http_extra)).await
    }

    /// A gateway from a whole configuration (it must have a tcp and an http listener).
    pub(crate) async fn from_toml(toml: &str) -> Gate {
        let server = inproc::start(toml).await;
        let mqtt = *server.addrs.first().expect("an MQTT listener");
        let http = *server.http_addrs.first().expect("an HTTP listener");
        Gate {
            server,
            mqtt,
            base: format!("http://{http}"),
            client: client(),
        }
    }

    /// The URL of `path_and_query`.
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// Sends a request and reads the whole answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request).await
    }

    /// `GET path` with `token`.
    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None).await
    }

    /// `DELETE path` with the admin token.
    pub(crate) async fn admin_delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, Some(ADMIN_TOKEN), None)
            .await
    }

    /// `GET path` with the admin token, expecting 200; the JSON body.
    pub(crate) async fn admin(&self, path: &str) -> Value {
        self.get(path, Some(ADMIN_TOKEN))
            .await
            .expect(StatusCode::OK)
    }

    /// `POST path` with `body` and the publish token.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(PUBLISH_TOKEN), Some(body))
            .await
    }

    /// `POST /v1/publish` expecting 200; the number of matched subscriptions.
    pub(crate) async fn publish(&self, message: &Value) -> u64 {
        let body = self
            .post("/v1/publish", message)
            .await
            .expect(StatusCode::OK);
        body["matched"]
            .as_u64()
            .unwrap_or_else(|| panic!("no matched count: {body}"))
    }

    /// `GET /v1/admin/stats`.
    pub(crate) async fn stats(&self) -> Value {
        self.admin("/v1/admin/stats").await
    }

    /// Waits until the engine holds `n` subscriptions (the HTTP stream hub subscribes its
    /// filters after the stream has opened, through the engine's event queue).
    pub(crate) async fn wait_subscriptions(&self, n: u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let held = self.stats().await["subscriptions"].as_u64().unwrap();
            if held == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the engine holds {held} subscriptions, never {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens `GET /v1/subscribe` for `filters`, resuming after `last_event_id` when given
    /// (in the `Last-Event-ID` header); asserts 200 and `text/event-stream`.
    pub(crate) async fn subscribe(&self, filters: &[&str], last_event_id: Option<&str>) -> Sse {
        self.subscribe_as(PUBLISH_TOKEN, filters, last_event_id)
            .await
    }

    /// [`Gate::subscribe`] with `token`.
    pub(crate) async fn subscribe_as(
        &self,
        token: &str,
        filters: &[&str],
        last_event_id: Option<&str>,
    ) -> Sse {
        let response = self.subscribe_response(token, filters, last_event_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "content type {content_type}"
        );
        Sse::new(response)
    }

    /// `GET /v1/subscribe` for `filters` with `token`, resuming after `last_event_id` when
    /// given; the response as it came (status unchecked, body unread).
    pub(crate) async fn subscribe_response(
        &self,
        token: &str,
        filters: &[&str],
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .get(self.url("/v1/subscribe"))
            .query(&filters.iter().map(|f| ("filter", *f)).collect::<Vec<_>>())
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        tokio::time::timeout(PATIENCE, request.send())
            .await
            .expect("the SSE stream did not open in time")
            .unwrap()
    }

    /// `GET /v1/poll` for `filter` from `cursor` waiting up to `timeout` seconds; the answer.
    pub(crate) async fn poll(&self, filter: &str, cursor: Option<&str>, timeout: u64) -> Value {
        self.poll_as(PUBLISH_TOKEN, &[filter], cursor, timeout)
            .await
            .expect(StatusCode::OK)
    }

    /// `GET /v1/poll` for `filters` with `token`; the answer, whatever its status.
    pub(crate) async fn poll_as(
        &self,
        token: &str,
        filters: &[&str],
        cursor: Option<&str>,
        timeout: u64,
    ) -> Reply {
        let timeout = timeout.to_string();
        let mut query: Vec<(&str, &str)> = filters.iter().map(|f| ("filter", *f)).collect();
        query.push(("timeout", timeout.as_str()));
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor));
        }
        let request = self
            .client
            .get(self.url("/v1/poll"))
            .query(&query)
            .bearer_auth(token);
        read(request).await
    }

    /// rumqttc v5 options for `id` against the MQTT listener (clean start, 30 s keep alive).
    pub(crate) fn v5_options(&self, id: &str) -> rumqttc::v5::MqttOptions {
        let mut opts = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", self.mqtt.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(Some(1 << 20));
        opts
    }

    /// rumqttc v3.1.1 options for `id` against the MQTT listener.
    pub(crate) fn v4_options(&self, id: &str) -> rumqttc::MqttOptions {
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", self.mqtt.port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts
    }
}

/// Sends `request` and reads the whole answer within [`PATIENCE`].
pub(crate) async fn read(request: reqwest::RequestBuilder) -> Reply {
    let exchange = async {
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap();
        Reply {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("no HTTP answer in time")
}

/// One block of an event stream (the lines up to a blank one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// `id:`.
    pub(crate) id: Option<String>,
    /// `event:`.
    pub(crate) event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: Option<String>,
    /// Comment lines (`: heartbeat`), without the colon.
    pub(crate) comments: Vec<String>,
}

impl SseEvent {
    /// The data as JSON.
    pub(crate) fn json(&self) -> Value {
        let data = self
            .data
            .as_deref()
            .unwrap_or_else(|| panic!("event without data: {self:?}"));
        serde_json::from_str(data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"))
    }

    /// The message's payload (text) of a message event.
    pub(crate) fn payload(&self) -> String {
        let json = self.json();
        json["payload"]
            .as_str()
            .unwrap_or_else(|| panic!("no text payload: {json}"))
            .to_owned()
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open `text/event-stream` response, read block by block.
pub(crate) struct Sse {
    body: ByteStream,
    buf: Vec<u8>,
    /// The last `id:` seen, as an `EventSource` would keep it for `Last-Event-ID`.
    pub(crate) last_id: Option<String>,
}

impl Sse {
    /// Reads `response`'s body as an event stream.
    pub(crate) fn new(response: reqwest::Response) -> Sse {
        Sse {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            last_id: None,
        }
    }

    /// The next block (comments and id-only blocks included); `None` when the stream ended.
    /// Panics if nothing comes within `wait`.
    pub(crate) async fn next_block_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(block) = self.take_block() {
                let event = parse_block(&block);
                if let Some(id) = &event.id {
                    self.last_id = Some(id.clone());
                }
                return Some(event);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!("no SSE event within {wait:?}"),
                Ok(None) => return None,
                Ok(Some(Err(e))) => panic!("the event stream failed: {e}"),
                Ok(Some(Ok(bytes))) => self.buf.extend_from_slice(&bytes),
            }
        }
    }

    /// The next block with data (a message, `reset` or `error`), skipping heartbeats and
    /// id-only blocks. Panics if none comes within [`PATIENCE`] or the stream ends.
    pub(crate) async fn next_event(&mut self) -> SseEvent {
        loop {
            let event = self
                .next_block_within(PATIENCE)
                .await
                .expect("the event stream ended");
            if event.data.is_some() {
                return event;
            }
        }
    }

    /// The id-only block a fresh stream starts with; returns its id.
    pub(crate) async fn start_id(&mut self) -> String {
        let first = self
            .next_block_within(PATIENCE)
            .await
            .expect("the event stream ended");
        assert_eq!(first.data, None, "a fresh stream starts with an id only");
        assert_eq!(first.event, None);
        first.id.expect("the first block carries an id")
    }

    /// Asserts that no event with data comes for [`QUIET`] (heartbeats are fine).
    pub(crate) async fn expect_quiet(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            if let Some(block) = self.take_block() {
                let event = parse_block(&block);
                assert!(event.data.is_none(), "unexpected event {event:?}");
                continue;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return,
                Ok(None) => panic!("the event stream ended"),
                Ok(Some(Err(e))) => panic!("the event stream failed: {e}"),
                Ok(Some(Ok(bytes))) => self.buf.extend_from_slice(&bytes),
            }
        }
    }

    /// Removes one complete block (up to a blank line) from the buffer.
    fn take_block(&mut self) -> Option<String> {
        let text = std::str::from_utf8(&self.buf).ok()?;
        let normalized = text.replace("\r\n", "\n");
        let end = normalized.find("\n\n")?;
        let block = normalized[..end].to_owned();
        self.buf = normalized.as_bytes()[end + 2..].to_vec();
        Some(block)
    }
}

/// Parses the lines of one block as the SSE specification reads them.
fn parse_block(block: &str) -> SseEvent {
    let mut event = SseEvent::default();
    for line in block.split('\n') {
        if let Some(comment) = line.strip_prefix(':') {
            event.comments.push(comment.trim_start().to_owned());
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = Some(value.to_owned()),
            "data" => match &mut event.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => event.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    event
}

/// The payloads of `events`, in order.
pub(crate) fn payloads(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(SseEvent::payload).collect()
}
