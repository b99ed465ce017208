//! Test double of the engine's side of the tap, and the stream routes served over it.
//!
//! Place in the data flow (tests only): `test -> Engine (plays the engine: applies the hub's
//! Subscribe/Unsubscribe, routes publishes to the matching tap ids) -> Tap -> Hub -> routes`.
//! The real engine's tap is tested end to end elsewhere; this one lets the stream tests
//! control every message and every failure.

use crate::config::HttpConfig;
use crate::gateway::{
    BoxFuture, Caller, ClientInfo, ClientQuery, Gateway, GatewayError, GatewayStats, KickOutcome,
    Page, PublishOutcome, PublishRequest, RetainedMessage, SessionInfo, SessionQuery,
    SubscriptionInfo, Tap, TapCommand, TapMessage, TenantDeleted, TenantError, TenantView,
};
use crate::state::Http;
use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::http::{Request, Response, header};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidegate_protocol::topic::matches;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The publish token of [`config`].
pub(crate) const TOKEN: &str = "publish-token";

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// A gateway whose only working calls are `open_tap` and `check_subscribe`; each tap's engine
/// side goes to the test.
pub(crate) struct FakeGateway {
    engines: mpsc::UnboundedSender<Engine>,
    /// While set, `open_tap` fails.
    pub(crate) refuse: AtomicBool,
    /// Taps opened so far.
    pub(crate) opened: AtomicUsize,
    /// Filters every ACL denies (to callers bound to one).
    denied: Mutex<Vec<String>>,
}

impl FakeGateway {
    /// A gateway and the receiver of the engine side of every tap it opens.
    pub(crate) fn new() -> (Arc<FakeGateway>, mpsc::UnboundedReceiver<Engine>) {
        let (engines, rx) = mpsc::unbounded_channel();
        let gateway = FakeGateway {
            engines,
            refuse: AtomicBool::new(false),
            opened: AtomicUsize::new(0),
            denied: Mutex::new(Vec::new()),
        };
        (Arc::new(gateway), rx)
    }

    /// Makes every tenant's ACL deny reading `filter`.
    pub(crate) fn deny(&self, filter: &str) {
        self.denied
            .lock()
            .expect("not poisoned")
            .push(filter.to_owned());
    }
}

fn unavailable<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, GatewayError>> {
    Box::pin(async { Err(GatewayError::Unavailable) })
}

impl Gateway for FakeGateway {
    fn publish(
        &self,
        _caller: Caller,
        _batch: Vec<PublishRequest>,
    ) -> BoxFuture<'_, Result<Vec<PublishOutcome>, GatewayError>> {
        unavailable()
    }
    fn retained(
        &self,
        _caller: Caller,
        _filter: String,
    ) -> BoxFuture<'_, Result<Vec<RetainedMessage>, GatewayError>> {
        unavailable()
    }
    fn delete_retained(
        &self,
        _tenant: String,
        _topic: String,
    ) -> BoxFuture<'_, Result<bool, GatewayError>> {
        unavailable()
    }
    fn clients(
        &self,
        _query: ClientQuery,
    ) -> BoxFuture<'_, Result<Page<ClientInfo>, GatewayError>> {
        unavailable()
    }
    fn client(
        &self,
        _tenant: String,
        _id: String,
    ) -> BoxFuture<'_, Result<Option<ClientInfo>, GatewayError>> {
        unavailable()
    }
    fn subscriptions(
        &self,
        _tenant: String,
        _id: String,
    ) -> BoxFuture<'_, Result<Option<Vec<SubscriptionInfo>>, GatewayError>> {
        unavailable()
    }
    fn sessions(
        &self,
        _query: SessionQuery,
    ) -> BoxFuture<'_, Result<Page<SessionInfo>, GatewayError>> {
        unavailable()
    }
    fn kick(
        &self,
        _tenant: String,
        _id: String,
        _reason: u8,
        _discard: bool,
    ) -> BoxFuture<'_, Result<KickOutcome, GatewayError>> {
        unavailable()
    }
    fn stats(&self) -> BoxFuture<'_, Result<GatewayStats, GatewayError>> {
        unavailable()
    }
    fn metrics(&self) -> BoxFuture<'_, Result<String, GatewayError>> {
        unavailable()
    }
    fn ready(&self) -> bool {
        false
    }
    fn open_tap(&self, tenant: String) -> BoxFuture<'_, Result<Tap, GatewayError>> {
        Box::pin(async move {
            if self.refuse.load(Ordering::SeqCst) {
                return Err(GatewayError::Unavailable);
            }
            let (commands, commands_rx) = mpsc::channel(16);
            let (messages_tx, messages) = mpsc::channel(64);
            self.opened.fetch_add(1, Ordering::SeqCst);
            let engine = Engine {
                tenant,
                commands: commands_rx,
                messages: messages_tx,
                subscriptions: Vec::new(),
            };
            self.engines
                .send(engine)
                .map_err(|_| GatewayError::Unavailable)?;
            Ok(Tap { commands, messages })
        })
    }
    fn check_subscribe(&self, caller: &Caller, filters: &[String]) -> Result<(), GatewayError> {
        if caller.acl.is_none() {
            return Ok(());
        }
        let denied = self.denied.lock().expect("not poisoned");
        match filters.iter().find(|f| denied.contains(f)) {
            Some(filter) => Err(GatewayError::Refused {
                reason: 0x87,
                message: format!("the ACL does not let this token read {filter:?}"),
            }),
            None => Ok(()),
        }
    }
    fn tenants(&self) -> BoxFuture<'_, Result<Vec<TenantView>, GatewayError>> {
        unavailable()
    }
    fn tenant(&self, _id: String) -> BoxFuture<'_, Result<Option<TenantView>, GatewayError>> {
        unavailable()
    }
    fn create_tenant(
        &self,
        _config: tidegate_auth::TenantConfig,
    ) -> BoxFuture<'_, Result<(), TenantError>> {
        Box::pin(async { Err(GatewayError::Unavailable.into()) })
    }
    fn replace_tenant(
        &self,
        _config: tidegate_auth::TenantConfig,
    ) -> BoxFuture<'_, Result<(), TenantError>> {
        Box::pin(async { Err(GatewayError::Unavailable.into()) })
    }
    fn delete_tenant(&self, _id: String) -> BoxFuture<'_, Result<TenantDeleted, TenantError>> {
        Box::pin(async { Err(GatewayError::Unavailable.into()) })
    }
}

/// The engine's side of one tap: applies the hub's commands and routes publishes like the
/// engine would (one message per publish, carrying the ids of every matching subscription).
pub(crate) struct Engine {
    /// The tenant the tap was opened in.
    pub(crate) tenant: String,
    commands: mpsc::Receiver<TapCommand>,
    messages: mpsc::Sender<TapMessage>,
    /// Filter and id, in subscription order.
    subscriptions: Vec<(String, u32)>,
}

impl Engine {
    fn apply(&mut self, command: TapCommand) {
        match command {
            TapCommand::Subscribe { id, filter } => {
                self.subscriptions.retain(|(f, _)| *f != filter);
                self.subscriptions.push((filter, id));
            }
            TapCommand::Unsubscribe { filter } => self.subscriptions.retain(|(f, _)| *f != filter),
        }
    }

    /// The next command from the hub (applied), panicking when none comes.
    pub(crate) async fn next_command(&mut self) -> TapCommand {
        let command = tokio::time::timeout(PATIENCE, self.commands.recv())
            .await
            .expect("the hub sent no command")
            .expect("the hub closed the tap");
        self.apply(command.clone());
        command
    }

    /// Waits until the hub drops the tap, applying its last commands.
    pub(crate) async fn closed(&mut self) {
        while let Some(command) = self.commands.recv().await {
            self.apply(command);
        }
    }

    /// Waits until every filter of `filters` is subscribed.
    pub(crate) async fn until_subscribed(&mut self, filters: &[&str]) {
        while !filters.iter().all(|f| self.is_subscribed(f)) {
            self.next_command().await;
        }
    }

    /// Whether `filter` is subscribed (after the commands received so far).
    pub(crate) fn is_subscribed(&mut self, filter: &str) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            self.apply(command);
        }
        self.subscriptions.iter().any(|(f, _)| f == filter)
    }

    /// Routes a publish on `topic`; whether any subscription matched.
    pub(crate) async fn publish(&mut self, topic: &str, payload: &str) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            self.apply(command);
        }
        let ids: Vec<u32> = self
            .subscriptions
            .iter()
            .filter(|(f, _)| matches(f, topic))
            .map(|(_, id)| *id)
            .collect();
        if ids.is_empty() {
            return false;
        }
        self.send(ids, topic, payload).await;
        true
    }

    /// Sends a tap message with exactly these `ids`.
    pub(crate) async fn send(&self, ids: Vec<u32>, topic: &str, payload: &str) {
        let message = TapMessage {
            ids,
            topic: topic.to_owned(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos: 0,
            retain: false,
            properties: Default::default(),
        };
        self.messages
            .send(message)
            .await
            .expect("the hub dropped the tap");
    }

    /// The id the hub gave `filter`.
    pub(crate) fn id_of(&self, filter: &str) -> Option<u32> {
        self.subscriptions
            .iter()
            .find(|(f, _)| f == filter)
            .map(|(_, id)| *id)
    }
}

/// `[http]` for the stream tests: one publish token, small numbers.
pub(crate) fn config() -> HttpConfig {
    HttpConfig {
        publish_tokens: vec![TOKEN.to_owned()],
        admin_tokens: vec!["admin-token".to_owned()],
        history_size: 100,
        max_filters: 4,
        max_streams: 8,
        ..HttpConfig::default()
    }
}

/// The stream routes over a [`FakeGateway`].
pub(crate) struct Harness {
    /// `/v1/subscribe` and `/v1/poll`, state applied.
    pub(crate) app: Router,
    /// The gateway behind them.
    pub(crate) gateway: Arc<FakeGateway>,
    engines: mpsc::UnboundedReceiver<Engine>,
    /// The drain signal given to the face.
    pub(crate) stop: CancellationToken,
}

impl Harness {
    /// The routes with `config`.
    pub(crate) fn new(config: HttpConfig) -> Harness {
        let (gateway, engines) = FakeGateway::new();
        let stop = CancellationToken::new();
        let http = Http::new(gateway.clone(), config, stop.clone());
        let (routes, _) = super::routes().split_for_parts();
        Harness {
            app: routes.with_state(http.state.clone()),
            gateway,
            engines,
            stop,
        }
    }

    /// The engine side of the next tap the hub opens.
    pub(crate) async fn engine(&mut self) -> Engine {
        tokio::time::timeout(PATIENCE, self.engines.recv())
            .await
            .expect("the hub opened no tap")
            .expect("the gateway is gone")
    }

    /// `GET uri` with the publish token and `headers`.
    pub(crate) async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
        get(self.app.clone(), uri, headers).await
    }
}

/// `GET uri` on `app` with the publish token and `headers`.
pub(crate) async fn get(app: Router, uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
    let mut request = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.oneshot(request.body(Body::empty()).expect("a valid request"))
        .await
        .expect("the router is infallible")
}

/// The JSON body of a response.
pub(crate) async fn json(response: Response<Body>) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a readable body");
    serde_json::from_slice(&bytes).expect("a JSON body")
}

/// One event as a client parses it (comments kept, for heartbeats).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// `id:`.
    pub(crate) id: Option<String>,
    /// `event:`.
    pub(crate) event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub(crate) data: Option<String>,
    /// `:` comment lines.
    pub(crate) comments: Vec<String>,
}

impl SseEvent {
    /// The data as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.data.as_deref().expect("an event with data")).expect("JSON data")
    }

    /// The `payload` of a message event.
    pub(crate) fn payload(&self) -> String {
        self.json()["payload"]
            .as_str()
            .expect("a text payload")
            .to_owned()
    }
}

/// Reads an SSE body event by event.
pub(crate) struct SseBody {
    body: BodyDataStream,
    buffer: String,
}

impl SseBody {
    /// The body of `response`, which must be a 200 event stream.
    pub(crate) fn new(response: Response<Body>) -> SseBody {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        SseBody {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
        }
    }

    /// The next event; `None` when the stream ended.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse_event(&block));
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("no event came")?
                .expect("a readable body");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }

    /// The next event that is not a heartbeat.
    pub(crate) async fn next_event(&mut self) -> SseEvent {
        loop {
            let event = self.next().await.expect("the stream ended");
            if event.id.is_some() || event.event.is_some() || event.data.is_some() {
                return event;
            }
        }
    }
}

fn parse_event(block: &str) -> SseEvent {
    let mut event = SseEvent::default();
    for line in block.lines().filter(|l| !l.is_empty()) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "" => event.comments.push(value),
            "id" => event.id = Some(value),
            "event" => event.event = Some(value),
            "data" => {
                event.data = Some(match event.data.take() {
                    Some(d) => format!("{d}\n{value}"),
                    None => value,
                })
            }
            other => panic!("unexpected SSE field {other:?}"),
        }
    }
    event
}
