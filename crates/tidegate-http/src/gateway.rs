//! [`Gateway`]: what the HTTP face needs from the rest of the gateway, as one trait.
//!
//! Place in the data flow: `HTTP request -> handler -> Gateway -> (tidegate-server) engine task
//! -> Broker`. The server implements this trait over its engine channel; this crate never sees
//! the broker, the store or a socket other than its own. Every call is a request to the engine
//! task answered through a oneshot, so an HTTP publish enters the same engine, in the same order
//! of events, as an MQTT PUBLISH.
//!
//! The data types are the engine's answers in plain form (no `Instant`s: times are wall-clock
//! milliseconds since the Unix epoch), already shaped like the JSON of the API, so handlers
//! serialise them as they are.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use tidegate_auth::TenantConfig;
use tokio::sync::mpsc;
use utoipa::ToSchema;

/// A boxed future, so the trait stays object safe (`Arc<dyn Gateway>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who an HTTP request acts for: the tenant it reaches and, for a token bound to a tenant,
/// the identity the tenant's ACL checks (issue 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant the request publishes into or reads from.
    pub tenant: String,
    /// `Some`: every topic is checked against the tenant's ACL as this identity (a token of
    /// `[[http.tokens]]`); `None`: every topic allowed (a plain `publish_tokens` token).
    pub acl: Option<AclIdentity>,
}

impl Caller {
    /// A plain token: the default tenant, every topic allowed.
    pub fn unrestricted() -> Caller {
        Caller {
            tenant: tidegate_auth::DEFAULT_TENANT_ID.to_owned(),
            acl: None,
        }
    }
}

/// The identity an HTTP token has in its tenant's ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclIdentity {
    /// Substituted for `%u` (`None`: checked as an anonymous client).
    pub username: Option<String>,
    /// Substituted for `%c`: `http:<token index>`.
    pub client_id: String,
}

/// Why the engine could not answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    /// The engine is shutting down or gone; the request was not carried out.
    #[error("the gateway is shutting down")]
    Unavailable,
    /// The store could not make the message durable; it was not accepted (retry later).
    #[error("the store could not write the message: {0}")]
    StoreFailed(String),
    /// The request was refused by the engine's rules (e.g. a `$SYS` topic, a payload announced
    /// as UTF-8 that is not, retain not available, a quota).
    #[error("refused (MQTT reason 0x{reason:02X}): {message}")]
    Refused {
        /// The MQTT 5 reason code an MQTT publisher would have got (0x87 not authorized, 0x99
        /// payload format invalid, 0x9A retain not supported, 0x97 quota exceeded, ...).
        reason: u8,
        /// What was wrong, for the error body.
        message: String,
    },
}

/// Properties of an application message, the MQTT 5 ones an HTTP client may set or read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct MessageProperties {
    /// MQTT 5 Content Type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// MQTT 5 User Properties, in order (names may repeat).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 Message Expiry Interval, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_expiry: Option<u32>,
    /// MQTT 5 Response Topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data (binary; base64 in JSON).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::gateway::base64_opt"
    )]
    #[schema(value_type = Option<String>, format = Byte)]
    pub correlation_data: Option<Bytes>,
    /// MQTT 5 Payload Format Indicator: `true` when the payload is UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_format_utf8: Option<bool>,
}

/// One message to publish, already validated by the handler (topic name, QoS, sizes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// Topic name (no wildcards).
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Properties forwarded to MQTT 5 subscribers.
    pub properties: MessageProperties,
}

/// What became of one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublishOutcome {
    /// Subscriptions (sessions, a shared group counting once) the message was routed to.
    pub matched: usize,
}

/// A retained message as read over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMessage {
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: u8,
    /// Properties it carries.
    pub properties: MessageProperties,
}

/// A page of results: `items` plus the cursor of the next page, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// How many items match the query in all pages.
    pub total: usize,
}

/// Which clients `GET /v1/admin/clients` lists. Every field narrows the set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ClientQuery {
    /// Only clients of this tenant.
    pub tenant: Option<String>,
    /// Only clients of the listener with this name (e.g. `tcp:0.0.0.0:1883`).
    pub listener: Option<String>,
    /// Only client ids starting with this.
    pub client_id_prefix: Option<String>,
    /// Only clients whose address (`ip` or `ip:port`) starts with this.
    pub address: Option<String>,
    /// Resume after this cursor (from `next_cursor`).
    pub cursor: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// A connected client, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClientInfo {
    /// MQTT client identifier (the assigned one when the client sent none).
    pub client_id: String,
    /// Tenant the client belongs to.
    pub tenant: String,
    /// Peer address, when the transport has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Name of the listener it came through.
    pub listener: String,
    /// `3.1.1` or `5.0`.
    pub protocol_version: String,
    /// Keep alive in force, seconds.
    pub keep_alive: u16,
    /// When the CONNECT was accepted, Unix milliseconds.
    pub connected_since_ms: u64,
    /// Deliveries sent and not yet acknowledged.
    pub inflight: usize,
    /// Messages waiting in the session queue.
    pub queued: usize,
    /// Subscriptions held by its session.
    pub subscriptions: usize,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// PUBLISH packets received from the client.
    pub messages_in: u64,
    /// PUBLISH packets sent to the client.
    pub messages_out: u64,
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionInfo {
    /// Topic filter as subscribed (a shared one keeps its `$share/group/` prefix).
    pub filter: String,
    /// Maximum QoS granted.
    pub qos: u8,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 Retain Handling (0, 1 or 2).
    pub retain_handling: u8,
    /// MQTT 5 Subscription Identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<u32>,
}

/// Which sessions `GET /v1/admin/sessions` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct SessionQuery {
    /// Only sessions of this tenant.
    pub tenant: Option<String>,
    /// Only client ids starting with this.
    pub client_id_prefix: Option<String>,
    /// `true`: only online sessions; `false`: only offline ones.
    pub online: Option<bool>,
    /// Resume after this cursor (from `next_cursor`).
    pub cursor: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// A session, online or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// MQTT client identifier.
    pub client_id: String,
    /// Tenant the session belongs to.
    pub tenant: String,
    /// Whether a connection holds it now.
    pub online: bool,
    /// Session Expiry Interval, seconds (`4294967295`: never).
    pub expiry_interval: u32,
    /// When an offline session expires, Unix milliseconds (absent while online or never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Messages waiting in its queue.
    pub queued: usize,
    /// Deliveries sent and not yet acknowledged.
    pub inflight: usize,
    /// Subscriptions it holds.
    pub subscriptions: usize,
}

/// What `DELETE /v1/admin/clients/{client_id}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KickOutcome {
    /// A connection was closed.
    pub disconnected: bool,
    /// The session was dropped (asked with `discard_session=true` and one existed).
    pub session_discarded: bool,
}

/// The engine's counters and gauges (`GET /v1/admin/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatewayStats {
    /// Connections past CONNACK.
    pub connections: usize,
    /// Sessions, online or not.
    pub sessions: usize,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Retained messages held.
    pub retained: usize,
    /// Messages waiting in session queues.
    pub queued_messages: usize,
    /// Application messages accepted (MQTT and HTTP publishers, wills).
    pub messages_in: u64,
    /// PUBLISH packets sent to subscribers.
    pub messages_out: u64,
    /// Deliveries dropped (queue full, too large, expired, slow consumer).
    pub messages_dropped: u64,
    /// Seconds since the gateway started.
    pub uptime_seconds: u64,
}

/// A subscription of the HTTP stream hub, by the id it chose for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapCommand {
    /// Subscribe to `filter`; deliveries it matches carry `id` (1 ..= 268,435,455).
    Subscribe {
        /// The hub's id for this filter (an MQTT 5 Subscription Identifier underneath).
        id: u32,
        /// Topic filter (validated by the hub).
        filter: String,
    },
    /// Drop the subscription to `filter`.
    Unsubscribe {
        /// Topic filter as subscribed.
        filter: String,
    },
}

/// One message the tap received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapMessage {
    /// The ids of every tap subscription it matched.
    pub ids: Vec<u32>,
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: u8,
    /// Retain flag as published.
    pub retain: bool,
    /// Properties it carries.
    pub properties: MessageProperties,
}

/// A live subscription channel into the engine: the HTTP stream hub's one MQTT-like session.
/// Dropping `commands` ends it (its subscriptions go with it).
#[derive(Debug)]
pub struct Tap {
    /// Subscribe / unsubscribe orders, applied in order.
    pub commands: mpsc::Sender<TapCommand>,
    /// Messages matching the tap's subscriptions, in the order the engine routed them. `None`
    /// from `recv` means the engine closed the tap (shutdown).
    pub messages: mpsc::Receiver<TapMessage>,
}

/// Where the tenant in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TenantSource {
    /// Declared in the configuration file and not changed through the admin API since.
    Config,
    /// Created or replaced through the admin API (kept in the store; it overrides a tenant of
    /// the same id in the configuration file after a restart).
    Api,
}

/// One tenant in force, as the gateway holds it (secrets included: the HTTP face redacts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantView {
    /// Its configuration.
    pub config: TenantConfig,
    /// Where it comes from.
    pub source: TenantSource,
    /// Clients of the tenant connected now, when the engine counts them per tenant.
    pub connections: Option<usize>,
}

/// What `DELETE /v1/admin/tenants/{id}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantDeleted {
    /// Connected clients of the tenant that were disconnected (MQTT 5 ones with DISCONNECT
    /// 0x87, Not authorized).
    pub disconnected: usize,
    /// Sessions of the tenant (online or not) dropped with their queues; its retained
    /// messages went too.
    pub sessions_dropped: usize,
}

/// Why a tenant change was not made.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TenantError {
    /// `create`: a tenant with this id exists.
    #[error("a tenant {0:?} exists")]
    Exists(String),
    /// `replace` / `delete`: no tenant with this id.
    #[error("no tenant {0:?}")]
    NotFound(String),
    /// The configuration is invalid (the message names the key), or clashes with another
    /// tenant (an SNI host name routed elsewhere).
    #[error("{0}")]
    Invalid(String),
    /// The gateway could not carry the change out (nothing was changed).
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// What the HTTP face asks of the gateway. Implemented by `tidegate-server` over its engine.
pub trait Gateway: Send + Sync + 'static {
    /// Publishes each message, in order, into `caller`'s tenant as an MQTT publisher would
    /// (checked against the tenant's ACL when `caller.acl` is set: refused with 0x87). For
    /// QoS 1 and 2 the future resolves once the message is accepted and durable per the store
    /// policy; QoS 0 resolves once routed. One outcome per request, in order.
    fn publish(
        &self,
        caller: Caller,
        batch: Vec<PublishRequest>,
    ) -> BoxFuture<'_, Result<Vec<PublishOutcome>, GatewayError>>;

    /// Retained messages of `caller`'s tenant whose topic matches `filter` (a valid topic
    /// filter); refused with 0x87 when `caller.acl` does not allow subscribing to `filter`.
    fn retained(
        &self,
        caller: Caller,
        filter: String,
    ) -> BoxFuture<'_, Result<Vec<RetainedMessage>, GatewayError>>;

    /// Deletes the retained message of `tenant` at `topic`; `true` when there was one.
    fn delete_retained(
        &self,
        tenant: String,
        topic: String,
    ) -> BoxFuture<'_, Result<bool, GatewayError>>;

    /// Connected clients matching `query`, one page.
    fn clients(&self, query: ClientQuery) -> BoxFuture<'_, Result<Page<ClientInfo>, GatewayError>>;

    /// One connected client of `tenant` by id.
    fn client(
        &self,
        tenant: String,
        client_id: String,
    ) -> BoxFuture<'_, Result<Option<ClientInfo>, GatewayError>>;

    /// The subscriptions of the session of `client_id` in `tenant` (online or not); `None` if
    /// there is no such session.
    fn subscriptions(
        &self,
        tenant: String,
        client_id: String,
    ) -> BoxFuture<'_, Result<Option<Vec<SubscriptionInfo>>, GatewayError>>;

    /// Sessions matching `query`, one page.
    fn sessions(
        &self,
        query: SessionQuery,
    ) -> BoxFuture<'_, Result<Page<SessionInfo>, GatewayError>>;

    /// Disconnects `client_id` of `tenant` (MQTT 5 clients get DISCONNECT with `reason`, an
    /// MQTT 5 reason code byte) and, with `discard_session`, drops its session, online or not.
    fn kick(
        &self,
        tenant: String,
        client_id: String,
        reason: u8,
        discard_session: bool,
    ) -> BoxFuture<'_, Result<KickOutcome, GatewayError>>;

    /// Counters and gauges for `GET /v1/admin/stats`.
    fn stats(&self) -> BoxFuture<'_, Result<GatewayStats, GatewayError>>;

    /// The whole Prometheus text exposition for `GET /metrics`.
    fn metrics(&self) -> BoxFuture<'_, Result<String, GatewayError>>;

    /// Whether every listener is bound and the store is open (`GET /readyz`).
    fn ready(&self) -> bool;

    /// Opens a tap in `tenant`: the session the stream hub of that tenant subscribes through
    /// (called once per hub and tap session). The tap itself may read every topic of the
    /// tenant; what each reader may see is checked with [`Gateway::check_subscribe`] first.
    /// Refused with 0x87 when the tenant does not exist (the default tenant always does). When
    /// the tenant is deleted the engine closes the tap.
    fn open_tap(&self, tenant: String) -> BoxFuture<'_, Result<Tap, GatewayError>>;

    /// Whether `caller` may read every filter of `filters` (an SSE stream or long-poll): with
    /// `caller.acl` set, each one is checked against the tenant's ACL as a SUBSCRIBE from that
    /// identity, and the first one denied is refused with 0x87 naming it (so is every filter
    /// when the tenant no longer exists). A caller without an ACL may read anything. Answered
    /// from the live tenant set, without a trip to the engine.
    fn check_subscribe(&self, caller: &Caller, filters: &[String]) -> Result<(), GatewayError>;

    /// Every tenant in force, in id order.
    fn tenants(&self) -> BoxFuture<'_, Result<Vec<TenantView>, GatewayError>>;

    /// The tenant `id`, if it is in force.
    fn tenant(&self, id: String) -> BoxFuture<'_, Result<Option<TenantView>, GatewayError>>;

    /// Adds a tenant (refused when its id exists). Once the future resolves the change is
    /// durable and new connections see it.
    fn create_tenant(&self, config: TenantConfig) -> BoxFuture<'_, Result<(), TenantError>>;

    /// Replaces the tenant of `config.id` (refused when there is none). New connections get the
    /// new configuration at once; connected clients stay connected and get the new ACL and
    /// the quotas the broker enforces (the README's "Tenants" lists what applies when).
    fn replace_tenant(&self, config: TenantConfig) -> BoxFuture<'_, Result<(), TenantError>>;

    /// Removes the tenant `id`: new connections to it are refused at once, its clients are
    /// disconnected and its sessions and retained messages dropped.
    fn delete_tenant(&self, id: String) -> BoxFuture<'_, Result<TenantDeleted, TenantError>>;
}

/// Serde helper: `Option<Bytes>` as an optional base64 string.
pub(crate) mod base64_opt {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            STANDARD
                .decode(s.as_bytes())
                .map(Bytes::from)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}
