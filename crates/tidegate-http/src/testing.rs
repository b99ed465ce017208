//! Test support, compiled for unit tests only: [`FakeGateway`], an in-memory stand-in for the
//! engine that records every call and answers from plain `Vec`s, and helpers to send requests
//! through the router with `tower::ServiceExt::oneshot`.
//!
//! Place in the data flow: it replaces `Gateway` (the engine, through the server) under the
//! router in this crate's tests; the end-to-end tests over sockets use the real engine.

use crate::config::HttpConfig;
use crate::gateway::{
    BoxFuture, Caller, ClientInfo, ClientQuery, Gateway, GatewayError, GatewayStats, KickOutcome,
    Page, PublishOutcome, PublishRequest, RetainedMessage, SessionInfo, SessionQuery,
    SubscriptionInfo, Tap, TapCommand, TapMessage, TenantDeleted, TenantError, TenantSource,
    TenantView,
};
use crate::state::Http;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bytes::Bytes;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tidegate_auth::TenantConfig;
use tidegate_protocol::topic::matches;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The publish token of [`config`].
pub(crate) const PUBLISH_TOKEN: &str = "publish-token-one";
/// A second publish token of [`config`].
pub(crate) const PUBLISH_TOKEN_2: &str = "publish-token-two";
/// The admin token of [`config`].
pub(crate) const ADMIN_TOKEN: &str = "admin-token-one";

/// A call the router made to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    Publish(Vec<PublishRequest>),
    Retained(String),
    DeleteRetained(String),
    Clients(ClientQuery),
    Client(String),
    Subscriptions(String),
    Sessions(SessionQuery),
    /// Who a call acts for, recorded before a publish or retained read that is not the plain
    /// default-tenant caller, and before a call about one client or retained topic of another
    /// tenant than `default`.
    As(Caller),
    Kick {
        client_id: String,
        reason: u8,
        discard_session: bool,
    },
    Stats,
    Metrics,
    CreateTenant(String),
    ReplaceTenant(String),
    DeleteTenant(String),
}

/// The engine as these tests see it: state in `Vec`s, every call recorded.
#[derive(Default)]
pub(crate) struct FakeGateway {
    /// Connected clients.
    pub(crate) clients: Vec<ClientInfo>,
    /// Sessions, online or not.
    pub(crate) sessions: Vec<SessionInfo>,
    /// Subscriptions by client id (a session without any has an empty list).
    pub(crate) subscriptions: Vec<(String, Vec<SubscriptionInfo>)>,
    /// Retained messages (deleted by `delete_retained`).
    pub(crate) retained: Mutex<Vec<RetainedMessage>>,
    /// The answer of `stats`.
    pub(crate) stats: GatewayStats,
    /// The answer of `metrics`.
    pub(crate) metrics: String,
    /// `ready()` answers the opposite.
    pub(crate) not_ready: AtomicBool,
    /// When set, every async call fails with it.
    pub(crate) fail: Mutex<Option<GatewayError>>,
    /// Calls made, in order.
    pub(crate) calls: Mutex<Vec<Call>>,
    /// Tenants in force (changed by the tenant calls).
    pub(crate) tenants: Mutex<Vec<TenantView>>,
    /// Open taps with their tenant, held so the hubs' channels stay open.
    pub(crate) taps: Mutex<Vec<OpenTap>>,
    /// Filters the ACL of every tenant denies to callers bound to it (`check_subscribe`).
    pub(crate) denied: Vec<String>,
}

/// A tap [`FakeGateway`] opened: its tenant and the engine's ends of its channels.
pub(crate) type OpenTap = (String, mpsc::Sender<TapMessage>, mpsc::Receiver<TapCommand>);

impl FakeGateway {
    /// The tenants of the taps opened so far, sorted.
    pub(crate) fn tap_tenants(&self) -> Vec<String> {
        let mut tenants: Vec<String> = self
            .taps
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _, _)| t.clone())
            .collect();
        tenants.sort();
        tenants
    }

    /// The calls made so far.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Records `caller` when it is not the plain default-tenant one.
    fn record_caller(&self, caller: &Caller) {
        if *caller != Caller::unrestricted() {
            self.calls.lock().unwrap().push(Call::As(caller.clone()));
        }
    }

    /// Records `tenant` when it is not `default`.
    fn record_tenant(&self, tenant: &str) {
        self.record_caller(&Caller {
            tenant: tenant.to_owned(),
            acl: None,
        });
    }

    /// Records `call`, then fails if told to.
    fn record(&self, call: Call) -> Result<(), GatewayError> {
        self.calls.lock().unwrap().push(call);
        match self.fail.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `config` put in place of the tenant of its id, as the server would: refused when it
    /// routes an SNI host name another tenant has.
    fn put_tenant(&self, config: TenantConfig) -> Result<(), TenantError> {
        let mut tenants = self.tenants.lock().unwrap();
        let clash = tenants.iter().find(|t| {
            t.config.id != config.id
                && t.config
                    .sni_hosts
                    .iter()
                    .any(|h| config.sni_hosts.contains(h))
        });
        if let Some(other) = clash {
            return Err(TenantError::Invalid(format!(
                "sni_hosts: already routed to tenant {:?}",
                other.config.id
            )));
        }
        tenants.retain(|t| t.config.id != config.id);
        tenants.push(TenantView {
            config,
            source: TenantSource::Api,
            connections: Some(0),
        });
        Ok(())
    }

    /// Whether the tenant `id` exists.
    fn has_tenant(&self, id: &str) -> bool {
        self.tenants
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.config.id == id)
    }

    /// Subscriptions (one per session) whose filter matches `topic`.
    fn matched(&self, topic: &str) -> usize {
        self.subscriptions
            .iter()
            .filter(|(_, subs)| subs.iter().any(|s| matches(&s.filter, topic)))
            .count()
    }
}

/// One page of `items` from `cursor` (an index) of `limit` (default 100).
fn page<T: Clone>(items: Vec<T>, cursor: Option<&str>, limit: Option<usize>) -> Page<T> {
    let start = cursor.and_then(|c| c.parse::<usize>().ok()).unwrap_or(0);
    let limit = limit.unwrap_or(100);
    let total = items.len();
    let end = total.min(start.saturating_add(limit));
    Page {
        items: items.get(start..end).unwrap_or_default().to_vec(),
        next_cursor: (end < total).then(|| end.to_string()),
        total,
    }
}

/// Whether `value` starts with `prefix` (no prefix: yes).
fn starts(value: Option<&str>, prefix: &Option<String>) -> bool {
    prefix
        .as_deref()
        .is_none_or(|p| value.is_some_and(|v| v.starts_with(p)))
}

impl Gateway for FakeGateway {
    fn publish(
        &self,
        caller: Caller,
        batch: Vec<PublishRequest>,
    ) -> BoxFuture<'_, Result<Vec<PublishOutcome>, GatewayError>> {
        Box::pin(async move {
            self.record_caller(&caller);
            self.record(Call::Publish(batch.clone()))?;
            let mut retained = self.retained.lock().unwrap();
            Ok(batch
                .iter()
                .map(|m| {
                    if m.retain {
                        retained.retain(|r| r.topic != m.topic);
                        retained.push(RetainedMessage {
                            topic: m.topic.clone(),
                            payload: m.payload.clone(),
                            qos: m.qos,
                            properties: m.properties.clone(),
                        });
                    }
                    PublishOutcome {
                        matched: self.matched(&m.topic),
                    }
                })
                .collect())
        })
    }

    fn retained(
        &self,
        caller: Caller,
        filter: String,
    ) -> BoxFuture<'_, Result<Vec<RetainedMessage>, GatewayError>> {
        Box::pin(async move {
            self.record_caller(&caller);
            self.record(Call::Retained(filter.clone()))?;
            let retained = self.retained.lock().unwrap();
            Ok(retained
                .iter()
                .filter(|r| matches(&filter, &r.topic))
                .cloned()
                .collect())
        })
    }

    fn delete_retained(
        &self,
        tenant: String,
        topic: String,
    ) -> BoxFuture<'_, Result<bool, GatewayError>> {
        Box::pin(async move {
            self.record_tenant(&tenant);
            self.record(Call::DeleteRetained(topic.clone()))?;
            let mut retained = self.retained.lock().unwrap();
            let before = retained.len();
            retained.retain(|r| r.topic != topic);
            Ok(retained.len() < before)
        })
    }

    fn clients(&self, query: ClientQuery) -> BoxFuture<'_, Result<Page<ClientInfo>, GatewayError>> {
        Box::pin(async move {
            self.record(Call::Clients(query.clone()))?;
            let items = self
                .clients
                .iter()
                .filter(|c| query.tenant.as_ref().is_none_or(|t| *t == c.tenant))
                .filter(|c| query.listener.as_ref().is_none_or(|l| *l == c.listener))
                .filter(|c| starts(Some(&c.client_id), &query.client_id_prefix))
                .filter(|c| starts(c.address.as_deref(), &query.address))
                .cloned()
                .collect();
            Ok(page(items, query.cursor.as_deref(), query.limit))
        })
    }

    fn client(
        &self,
        tenant: String,
        client_id: String,
    ) -> BoxFuture<'_, Result<Option<ClientInfo>, GatewayError>> {
        Box::pin(async move {
            self.record_tenant(&tenant);
            self.record(Call::Client(client_id.clone()))?;
            Ok(self
                .clients
                .iter()
                .find(|c| c.client_id == client_id && c.tenant == tenant)
                .cloned())
        })
    }

    fn subscriptions(
        &self,
        tenant: String,
        client_id: String,
    ) -> BoxFuture<'_, Result<Option<Vec<SubscriptionInfo>>, GatewayError>> {
        Box::pin(async move {
            self.record_tenant(&tenant);
            self.record(Call::Subscriptions(client_id.clone()))?;
            Ok(self
                .subscriptions
                .iter()
                .find(|(id, _)| *id == client_id)
                .map(|(_, subs)| subs.clone()))
        })
    }

    fn sessions(
        &self,
        query: SessionQuery,
    ) -> BoxFuture<'_, Result<Page<SessionInfo>, GatewayError>> {
        Box::pin(async move {
            self.record(Call::Sessions(query.clone()))?;
            let items = self
                .sessions
                .iter()
                .filter(|s| query.tenant.as_ref().is_none_or(|t| *t == s.tenant))
                .filter(|s| query.online.is_none_or(|o| o == s.online))
                .filter(|s| starts(Some(&s.client_id), &query.client_id_prefix))
                .cloned()
                .collect();
            Ok(page(items, query.cursor.as_deref(), query.limit))
        })
    }

    fn kick(
        &self,
        tenant: String,
        client_id: String,
        reason: u8,
        discard_session: bool,
    ) -> BoxFuture<'_, Result<KickOutcome, GatewayError>> {
        Box::pin(async move {
            self.record_tenant(&tenant);
            self.record(Call::Kick {
                client_id: client_id.clone(),
                reason,
                discard_session,
            })?;
            let ours = |id: &str, t: &str| id == client_id && t == tenant;
            Ok(KickOutcome {
                disconnected: self.clients.iter().any(|c| ours(&c.client_id, &c.tenant)),
                session_discarded: discard_session
                    && self.sessions.iter().any(|s| ours(&s.client_id, &s.tenant)),
            })
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<GatewayStats, GatewayError>> {
        Box::pin(async move {
            self.record(Call::Stats)?;
            Ok(self.stats.clone())
        })
    }

    fn metrics(&self) -> BoxFuture<'_, Result<String, GatewayError>> {
        Box::pin(async move {
            self.record(Call::Metrics)?;
            Ok(self.metrics.clone())
        })
    }

    fn ready(&self) -> bool {
        !self.not_ready.load(Ordering::Relaxed)
    }

    fn open_tap(&self, tenant: String) -> BoxFuture<'_, Result<Tap, GatewayError>> {
        Box::pin(async move {
            let (message_tx, messages) = mpsc::channel(16);
            let (commands, command_rx) = mpsc::channel(16);
            self.taps
                .lock()
                .unwrap()
                .push((tenant, message_tx, command_rx));
            Ok(Tap { commands, messages })
        })
    }

    fn check_subscribe(&self, caller: &Caller, filters: &[String]) -> Result<(), GatewayError> {
        if caller.acl.is_none() {
            return Ok(());
        }
        match filters.iter().find(|f| self.denied.contains(f)) {
            Some(filter) => Err(GatewayError::Refused {
                reason: 0x87,
                message: format!("the ACL does not let this token read {filter:?}"),
            }),
            None => Ok(()),
        }
    }

    fn tenants(&self) -> BoxFuture<'_, Result<Vec<TenantView>, GatewayError>> {
        Box::pin(async move { Ok(self.tenants.lock().unwrap().clone()) })
    }

    fn tenant(&self, id: String) -> BoxFuture<'_, Result<Option<TenantView>, GatewayError>> {
        Box::pin(async move {
            Ok(self
                .tenants
                .lock()
                .unwrap()
                .iter()
                .find(|t| t.config.id == id)
                .cloned())
        })
    }

    fn create_tenant(&self, config: TenantConfig) -> BoxFuture<'_, Result<(), TenantError>> {
        Box::pin(async move {
            self.record(Call::CreateTenant(config.id.clone()))?;
            if self.has_tenant(&config.id) {
                return Err(TenantError::Exists(config.id));
            }
            self.put_tenant(config)
        })
    }

    fn replace_tenant(&self, config: TenantConfig) -> BoxFuture<'_, Result<(), TenantError>> {
        Box::pin(async move {
            self.record(Call::ReplaceTenant(config.id.clone()))?;
            if !self.has_tenant(&config.id) {
                return Err(TenantError::NotFound(config.id));
            }
            self.put_tenant(config)
        })
    }

    fn delete_tenant(&self, id: String) -> BoxFuture<'_, Result<TenantDeleted, TenantError>> {
        Box::pin(async move {
            self.record(Call::DeleteTenant(id.clone()))?;
            let mut tenants = self.tenants.lock().unwrap();
            let before = tenants.len();
            tenants.retain(|t| t.config.id != id);
            if tenants.len() == before {
                return Err(TenantError::NotFound(id));
            }
            Ok(TenantDeleted {
                disconnected: 0,
                sessions_dropped: 0,
            })
        })
    }
}

/// The configuration of these tests: two publish tokens, one admin token, no rate limit.
pub(crate) fn config() -> HttpConfig {
    HttpConfig {
        publish_tokens: vec![PUBLISH_TOKEN.into(), PUBLISH_TOKEN_2.into()],
        admin_tokens: vec![ADMIN_TOKEN.into()],
        ..HttpConfig::default()
    }
}

/// The router over `gateway` with `config`, and the gateway to inspect.
pub(crate) fn app_with(gateway: FakeGateway, config: HttpConfig) -> (Arc<FakeGateway>, Router) {
    let gateway = Arc::new(gateway);
    let http = Http::new(gateway.clone(), config, CancellationToken::new());
    (gateway, http.router())
}

/// The router over `gateway` with [`config`].
pub(crate) fn app(gateway: FakeGateway) -> (Arc<FakeGateway>, Router) {
    app_with(gateway, config())
}

/// A request; `json` becomes an `application/json` body.
pub(crate) fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    json: Option<Value>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match json {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(value.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).unwrap()
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// `error.code` of an error body, checking the error shape on the way.
    pub(crate) fn error_code(&self) -> String {
        let v = self.json();
        assert!(v["error"]["message"].is_string(), "error shape: {v}");
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {v}"))
            .to_owned()
    }

    /// A header as text.
    pub(crate) fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `request` through `router`.
pub(crate) async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends a request built by [`request`].
pub(crate) async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    json: Option<Value>,
) -> Reply {
    send(router, request(method, uri, token, json)).await
}

/// A connected client with id `id` at `address`.
pub(crate) fn client(id: &str, address: &str) -> ClientInfo {
    ClientInfo {
        client_id: id.into(),
        tenant: "default".into(),
        address: Some(address.into()),
        listener: "tcp:0.0.0.0:1883".into(),
        protocol_version: "5.0".into(),
        keep_alive: 60,
        connected_since_ms: 1_700_000_000_000,
        inflight: 0,
        queued: 0,
        subscriptions: 1,
        bytes_in: 10,
        bytes_out: 20,
        messages_in: 1,
        messages_out: 2,
    }
}

/// A session of `id`.
pub(crate) fn session(id: &str, online: bool) -> SessionInfo {
    SessionInfo {
        client_id: id.into(),
        tenant: "default".into(),
        online,
        expiry_interval: 3600,
        expires_at_ms: (!online).then_some(1_700_000_360_000),
        queued: 3,
        inflight: 0,
        subscriptions: 1,
    }
}

/// A subscription to `filter` at QoS 1.
pub(crate) fn subscription(filter: &str) -> SubscriptionInfo {
    SubscriptionInfo {
        filter: filter.into(),
        qos: 1,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        identifier: None,
    }
}
