//! The gateway's own API over the engine: [`GatewayHandle`] implements
//! [`tidegate_http::Gateway`] by sending [`ApiRequest`]s down the engine's event channel, and
//! [`ApiState`] answers them inside the engine task.
//!
//! Place in the data flow: `HTTP handler -> GatewayHandle --EngineEvent::Api--> engine task
//! -> Broker (admin views, publish_api, kick) -> oneshot reply`. Tenant changes go to
//! [`TenantAdmin`] (store and registry) first; deleting one then asks the engine to disconnect
//! the tenant's clients and drop its sessions. Requests travel the same
//! channel as MQTT packets, so an HTTP publication is ordered with MQTT ones exactly as if it
//! came from one more connection, and the engine stays the only owner of the broker.
//!
//! Tenants (issue 7): every request names the tenant it acts in, and the engine calls the
//! broker's per-tenant methods (`publish_api_in`, `retained_matching_in`, `kick_in`, ...). A
//! caller bound to a tenant's ACL (a `[[http.tokens]]` publish token) is checked here, against
//! the live registry, before anything reaches the engine: a denied topic or filter is refused
//! with 0x87 (HTTP 403), and in a batch nothing is published unless every topic is allowed.
//! SSE and long-poll filters are checked the same way ([`Gateway::check_subscribe`]); the
//! stream hub of each tenant then reads through its own tap, a session in that tenant
//! (`crate::tap`), which the tenant's client listings and connection counts leave out.
//!
//! A QoS 1/2 publication is answered when the broker's [`Output::Committed`] for it comes out,
//! i.e. once the store batch carrying it is written (at once without persistence), the same
//! moment an MQTT publisher would get its PUBACK.
//!
//! [`Output::Committed`]: tidegate_core::Output::Committed

use crate::engine::EngineEvent;
use crate::metrics::Snapshot;
use crate::outbox::Outbox;
use crate::stats::Stats;
use crate::tenant_admin::TenantAdmin;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tidegate_auth::Subject;
use tidegate_core::{ApiPublish, Authorized, Broker, ClientView, ConnId, Message, TenantLimits};
use tidegate_http::gateway::{AclIdentity, Caller};
use tidegate_http::{
    BoxFuture, ClientInfo, ClientQuery, Gateway, GatewayError, GatewayStats, KickOutcome,
    MessageProperties, Page, PublishOutcome, PublishRequest, RetainedMessage, SessionInfo,
    SessionQuery, SubscriptionInfo, Tap, TenantDeleted, TenantError, TenantView,
};
use tidegate_protocol::{ProtocolVersion, PublishProperties, QoS, ReasonCode, Utf8};
use tokio::sync::{mpsc, oneshot};

/// Listener names starting with this are the gateway's own internal sessions (the HTTP stream
/// hub's tap): they are not listed as clients.
pub(crate) const INTERNAL_LISTENER: &str = "internal:";

/// Default and largest page of the admin listings.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// A request to the engine, with where its answer goes.
#[derive(Debug)]
pub(crate) enum ApiRequest {
    /// Publish each message in order, into `tenant`.
    Publish {
        tenant: String,
        batch: Vec<PublishRequest>,
        reply: oneshot::Sender<Result<Vec<PublishOutcome>, GatewayError>>,
    },
    /// Retained messages of `tenant` matching a filter.
    Retained {
        tenant: String,
        filter: String,
        reply: oneshot::Sender<Vec<RetainedMessage>>,
    },
    /// Delete one retained message of `tenant`.
    DeleteRetained {
        tenant: String,
        topic: String,
        reply: oneshot::Sender<bool>,
    },
    /// One page of connected clients.
    Clients {
        query: ClientQuery,
        reply: oneshot::Sender<Page<ClientInfo>>,
    },
    /// One connected client of `tenant`.
    Client {
        tenant: String,
        client_id: String,
        reply: oneshot::Sender<Option<ClientInfo>>,
    },
    /// The subscriptions of a session of `tenant`.
    Subscriptions {
        tenant: String,
        client_id: String,
        reply: oneshot::Sender<Option<Vec<SubscriptionInfo>>>,
    },
    /// One page of sessions.
    Sessions {
        query: SessionQuery,
        reply: oneshot::Sender<Page<SessionInfo>>,
    },
    /// Disconnect a client of `tenant`, maybe drop its session.
    Kick {
        tenant: String,
        client_id: String,
        reason: ReasonCode,
        discard_session: bool,
        reply: oneshot::Sender<KickOutcome>,
    },
    /// Everything the metrics and stats need from the broker.
    Snapshot { reply: oneshot::Sender<Snapshot> },
    /// Connections per tenant id.
    TenantConnections {
        reply: oneshot::Sender<HashMap<String, usize>>,
    },
    /// A tenant was created or changed: its quotas and ACL become the broker's for it (what
    /// it enforces on clients already connected: see `Broker::set_tenant_limits` and
    /// `Broker::set_tenant_acl`).
    TenantChanged {
        tenant: String,
        limits: Arc<TenantLimits>,
        /// `None` when the change left the rules as they were (nothing to re-check).
        acl: Option<Arc<tidegate_auth::Acl>>,
        reply: oneshot::Sender<()>,
    },
    /// Disconnect every client of a deleted tenant (0x87) and drop its sessions.
    DropTenant {
        tenant: String,
        reply: oneshot::Sender<TenantDeleted>,
    },
}

/// One publish request waiting for the store.
#[derive(Debug)]
struct PendingBatch {
    outcomes: Vec<PublishOutcome>,
    /// Confirmations still awaited.
    remaining: usize,
    failed: bool,
    reply: oneshot::Sender<Result<Vec<PublishOutcome>, GatewayError>>,
}

/// The engine side of the API: answers [`ApiRequest`]s against the broker.
#[derive(Debug, Default)]
pub(crate) struct ApiState {
    /// Confirmation token -> the batch it belongs to.
    tokens: HashMap<u64, u64>,
    batches: HashMap<u64, PendingBatch>,
    next_batch: u64,
}

impl ApiState {
    /// Answers `request` (publications at QoS 1/2 later, in [`ApiState::committed`]).
    pub(crate) fn handle(
        &mut self,
        broker: &mut Broker,
        traffic: &dyn Fn(ConnId) -> (u64, u64, u64, u64),
        now: Instant,
        request: ApiRequest,
    ) {
        // A send fails only when the caller gave up (e.g. the HTTP client went away): then
        // there is nobody to tell, and what was done stays done.
        match request {
            ApiRequest::Publish {
                tenant,
                batch,
                reply,
            } => self.publish(broker, now, &tenant, batch, reply),
            ApiRequest::Retained {
                tenant,
                filter,
                reply,
            } => {
                let messages = broker
                    .retained_matching_in(now, &tenant, &filter)
                    .iter()
                    .map(|m| retained_message(m, now))
                    .collect();
                let _ = reply.send(messages);
            }
            ApiRequest::DeleteRetained {
                tenant,
                topic,
                reply,
            } => {
                let _ = reply.send(broker.delete_retained_in(&tenant, &topic));
            }
            ApiRequest::Clients { query, reply } => {
                let _ = reply.send(clients_page(broker, traffic, now, &query));
            }
            ApiRequest::Client {
                tenant,
                client_id,
                reply,
            } => {
                let info = broker
                    .conn_of_in(&tenant, &client_id)
                    .and_then(|conn| broker.client_view(conn))
                    .filter(|v| !v.listener.starts_with(INTERNAL_LISTENER))
                    .map(|v| client_info(&v, traffic, now));
                let _ = reply.send(info);
            }
            ApiRequest::Subscriptions {
                tenant,
                client_id,
                reply,
            } => {
                let subs = broker
                    .subscription_views_in(&tenant, &client_id)
                    .map(|views| {
                        views
                            .into_iter()
                            .map(|s| SubscriptionInfo {
                                filter: s.filter,
                                qos: s.qos as u8,
                                no_local: s.no_local,
                                retain_as_published: s.retain_as_published,
                                retain_handling: s.retain_handling as u8,
                                identifier: s.identifier,
                            })
                            .collect()
                    });
                let _ = reply.send(subs);
            }
            ApiRequest::Sessions { query, reply } => {
                let _ = reply.send(sessions_page(broker, now, &query));
            }
            ApiRequest::Kick {
                tenant,
                client_id,
                reason,
                discard_session,
                reply,
            } => {
                let done = broker.kick_in(now, &tenant, &client_id, reason, discard_session);
                let _ = reply.send(KickOutcome {
                    disconnected: done.disconnected,
                    session_discarded: done.session_discarded,
                });
            }
            ApiRequest::Snapshot { reply } => {
                let _ = reply.send(Snapshot::of(broker));
            }
            ApiRequest::TenantConnections { reply } => {
                // The HTTP stream taps are not in their tenant's count (`ConnInfo::internal`):
                // they are the gateway's, not the tenant's clients.
                let counts = Snapshot::of(broker)
                    .tenants
                    .into_iter()
                    .map(|(id, c)| (id.to_string(), c.connections))
                    .collect();
                let _ = reply.send(counts);
            }
            ApiRequest::TenantChanged {
                tenant,
                limits,
                acl,
                reply,
            } => {
                broker.set_tenant_limits(now, &tenant, limits);
                let removed = acl.map_or(0, |acl| broker.set_tenant_acl(&tenant, acl));
                if removed > 0 {
                    tracing::info!(
                        %tenant,
                        removed,
                        "tenant ACL changed: subscriptions it no longer allows removed"
                    );
                }
                let _ = reply.send(());
            }
            ApiRequest::DropTenant { tenant, reply } => {
                let disconnected =
                    broker.disconnect_tenant(now, &tenant, ReasonCode::NotAuthorized);
                let sessions_dropped = broker.drop_tenant_sessions(now, &tenant);
                let _ = reply.send(TenantDeleted {
                    disconnected,
                    sessions_dropped,
                });
            }
        }
    }

    fn publish(
        &mut self,
        broker: &mut Broker,
        now: Instant,
        tenant: &str,
        batch: Vec<PublishRequest>,
        reply: oneshot::Sender<Result<Vec<PublishOutcome>, GatewayError>>,
    ) {
        let id = self.next_batch;
        self.next_batch += 1;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut tokens = Vec::new();
        for (i, request) in batch.into_iter().enumerate() {
            let publish = match api_publish(request) {
                Ok(p) => p,
                Err(message) => {
                    let _ = reply.send(Err(refusal(i, ReasonCode::ProtocolError, &message)));
                    return self.forget_tokens(&tokens);
                }
            };
            match broker.publish_api_in(now, tenant, publish) {
                Ok(accepted) => {
                    outcomes.push(PublishOutcome {
                        matched: accepted.matched,
                    });
                    tokens.extend(accepted.token);
                }
                Err(refused) => {
                    // The messages before it are published (and will be confirmed or not by
                    // the store like any other); the caller learns which one stopped the batch.
                    let message = match refused.reason {
                        ReasonCode::NotAuthorized => "publishing to $SYS topics is not allowed",
                        ReasonCode::PayloadFormatInvalid => "the payload is not valid UTF-8",
                        ReasonCode::RetainNotSupported => "retain is not available",
                        ReasonCode::QoSNotSupported => "QoS above the gateway's maximum",
                        ReasonCode::TopicNameInvalid => "topic name invalid or beyond limits",
                        ReasonCode::QuotaExceeded => {
                            "over a quota of the tenant (retained messages: routed, not \
                             retained), or the store is failing; try again later"
                        }
                        _ => "publication refused",
                    };
                    let _ = reply.send(Err(refusal(i, refused.reason, message)));
                    return self.forget_tokens(&tokens);
                }
            }
        }
        if tokens.is_empty() {
            let _ = reply.send(Ok(outcomes));
            return;
        }
        for &token in &tokens {
            self.tokens.insert(token, id);
        }
        self.batches.insert(
            id,
            PendingBatch {
                outcomes,
                remaining: tokens.len(),
                failed: false,
                reply,
            },
        );
    }

    /// Tokens of a batch answered early: their confirmations are ignored when they come.
    fn forget_tokens(&mut self, tokens: &[u64]) {
        for &token in tokens {
            self.tokens.insert(token, u64::MAX);
        }
    }

    /// The broker settled the publication of `token`.
    pub(crate) fn committed(&mut self, token: u64, durable: bool) {
        let Some(id) = self.tokens.remove(&token) else {
            return;
        };
        let Some(batch) = self.batches.get_mut(&id) else {
            return;
        };
        batch.remaining = batch.remaining.saturating_sub(1);
        batch.failed |= !durable;
        if batch.remaining > 0 {
            return;
        }
        if let Some(batch) = self.batches.remove(&id) {
            let answer = if batch.failed {
                Err(GatewayError::StoreFailed(
                    "the store batch holding the message failed".into(),
                ))
            } else {
                Ok(batch.outcomes)
            };
            let _ = batch.reply.send(answer);
        }
    }
}

fn refusal(index: usize, reason: ReasonCode, message: &str) -> GatewayError {
    GatewayError::Refused {
        reason: reason.as_u8(),
        message: format!("message {index}: {message}"),
    }
}

/// The broker's form of an HTTP publication.
fn api_publish(r: PublishRequest) -> Result<ApiPublish, String> {
    let topic = Utf8::try_from(r.topic.as_str()).map_err(|e| format!("topic: {e}"))?;
    let qos = match r.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        q => return Err(format!("qos {q} is not 0, 1 or 2")),
    };
    let p = r.properties;
    let utf8 =
        |what: &str, s: String| Utf8::try_from(s.as_str()).map_err(|e| format!("{what}: {e}"));
    let user_properties = p
        .user_properties
        .into_iter()
        .map(|(k, v)| Ok((utf8("user property", k)?, utf8("user property", v)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ApiPublish {
        topic,
        payload: r.payload,
        qos,
        retain: r.retain,
        properties: PublishProperties {
            payload_format_indicator: p.payload_format_utf8,
            message_expiry_interval: p.message_expiry,
            response_topic: p
                .response_topic
                .map(|t| utf8("response_topic", t))
                .transpose()?,
            correlation_data: p.correlation_data,
            user_properties,
            content_type: p
                .content_type
                .map(|t| utf8("content_type", t))
                .transpose()?,
            ..PublishProperties::default()
        },
    })
}

/// The HTTP form of a message's properties (`remaining_expiry` already computed).
pub(crate) fn message_properties(p: &PublishProperties, expiry: Option<u32>) -> MessageProperties {
    MessageProperties {
        content_type: p.content_type.as_ref().map(|s| s.as_str().to_owned()),
        user_properties: p
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect(),
        message_expiry: expiry,
        response_topic: p.response_topic.as_ref().map(|s| s.as_str().to_owned()),
        correlation_data: p.correlation_data.clone(),
        payload_format_utf8: p.payload_format_indicator,
    }
}

fn retained_message(m: &Message, now: Instant) -> RetainedMessage {
    RetainedMessage {
        topic: m.topic.as_str().to_owned(),
        payload: m.payload.clone(),
        qos: m.qos as u8,
        properties: message_properties(&m.properties, m.remaining_expiry(now)),
    }
}

/// Unix milliseconds of an engine instant.
pub(crate) fn unix_ms(at: Instant, now: Instant) -> u64 {
    let wall = SystemTime::now();
    let wall = match now.checked_duration_since(at) {
        Some(ago) => wall.checked_sub(ago).unwrap_or(UNIX_EPOCH),
        None => wall + at.duration_since(now),
    };
    u64::try_from(
        wall.duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "5.0",
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V31 => "3.1",
    }
}

fn client_info(
    v: &ClientView,
    traffic: &dyn Fn(ConnId) -> (u64, u64, u64, u64),
    now: Instant,
) -> ClientInfo {
    let (bytes_in, bytes_out, messages_in, messages_out) = traffic(v.conn);
    ClientInfo {
        client_id: v.client_id.to_string(),
        tenant: v.tenant.to_string(),
        address: v.peer.map(|p| p.to_string()),
        listener: v.listener.to_string(),
        protocol_version: version_name(v.version).to_owned(),
        keep_alive: v.keep_alive,
        connected_since_ms: unix_ms(v.connected_at, now),
        inflight: v.inflight,
        queued: v.queued,
        subscriptions: v.subscriptions,
        bytes_in,
        bytes_out,
        messages_in,
        messages_out,
    }
}

/// `limit` within bounds.
fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

/// One page of `items` (sorted by key, after `cursor`).
fn paginate<T>(mut items: Vec<(String, T)>, cursor: Option<&str>, limit: Option<usize>) -> Page<T> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let total = items.len();
    let start = match cursor {
        Some(c) => items.partition_point(|(k, _)| k.as_str() <= c),
        None => 0,
    };
    let size = page_size(limit);
    let mut page: Vec<(String, T)> = items.into_iter().skip(start).take(size + 1).collect();
    let next_cursor = if page.len() > size {
        page.truncate(size);
        page.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    Page {
        items: page.into_iter().map(|(_, v)| v).collect(),
        next_cursor,
        total,
    }
}

/// Whether a listing's tenant filter admits `tenant` (no filter: every tenant).
fn tenant_matches(filter: Option<&str>, tenant: &str) -> bool {
    filter.is_none_or(|t| t == tenant)
}

/// The key listings are sorted and paged by (the cursor): the client id, followed by the tenant
/// outside the default one, so the same id in two tenants gives two entries in a stable order
/// and the default tenant's cursors are the client ids they always were. U+001F cannot be in a
/// client id (the broker refuses it), so the key is unambiguous.
fn listing_key(client_id: &str, tenant: &str) -> String {
    if tenant == tidegate_auth::DEFAULT_TENANT_ID {
        client_id.to_owned()
    } else {
        format!("{client_id}\u{1F}{tenant}")
    }
}

fn clients_page(
    broker: &Broker,
    traffic: &dyn Fn(ConnId) -> (u64, u64, u64, u64),
    now: Instant,
    q: &ClientQuery,
) -> Page<ClientInfo> {
    let items = broker
        .client_views()
        .filter(|v| !v.listener.starts_with(INTERNAL_LISTENER))
        .filter(|v| tenant_matches(q.tenant.as_deref(), &v.tenant))
        .filter(|v| q.listener.as_deref().is_none_or(|l| *v.listener == *l))
        .filter(|v| {
            q.client_id_prefix
                .as_deref()
                .is_none_or(|p| v.client_id.starts_with(p))
        })
        .filter(|v| {
            q.address.as_deref().is_none_or(|a| {
                v.peer
                    .is_some_and(|p| p.to_string().starts_with(a) || p.ip().to_string() == a)
            })
        })
        .map(|v| {
            (
                listing_key(&v.client_id, &v.tenant),
                client_info(&v, traffic, now),
            )
        })
        .collect();
    paginate(items, q.cursor.as_deref(), q.limit)
}

fn sessions_page(broker: &Broker, now: Instant, q: &SessionQuery) -> Page<SessionInfo> {
    let items = broker
        .session_views()
        .filter(|s| !s.client_id.starts_with(TAP_CLIENT_PREFIX))
        .filter(|s| tenant_matches(q.tenant.as_deref(), &s.tenant))
        .filter(|s| {
            q.client_id_prefix
                .as_deref()
                .is_none_or(|p| s.client_id.starts_with(p))
        })
        .filter(|s| q.online.is_none_or(|online| online == s.conn.is_some()))
        .map(|s| {
            let info = SessionInfo {
                client_id: s.client_id.to_string(),
                tenant: s.tenant.to_string(),
                online: s.conn.is_some(),
                expiry_interval: s.expiry_interval,
                expires_at_ms: s.expires_at.map(|at| unix_ms(at, now)),
                queued: s.queued,
                inflight: s.inflight,
                subscriptions: s.subscriptions,
            };
            (listing_key(&s.client_id, &s.tenant), info)
        })
        .collect();
    paginate(items, q.cursor.as_deref(), q.limit)
}

/// Client ids of the stream hub's taps (not listed as sessions).
pub(crate) const TAP_CLIENT_PREFIX: &str = "$tidegate/http-hub/";

/// Connection ids of taps start here, far above the listeners' (which count from 1).
const TAP_CONN_BASE: u64 = 1 << 62;

/// The server's [`Gateway`]: requests down the engine's event channel.
#[derive(Debug, Clone)]
pub(crate) struct GatewayHandle {
    events: mpsc::Sender<EngineEvent>,
    stats: Arc<Stats>,
    ready: Arc<AtomicBool>,
    started: Instant,
    next_tap: Arc<AtomicU64>,
    /// Our Receive Maximum for a tap (how many QoS 1/2 deliveries it may have unacknowledged).
    tap_window: u16,
    /// The live tenants and their store.
    tenants: Arc<TenantAdmin>,
    /// Serialises the admin API's tenant changes with their effect in the engine, so the
    /// broker ends with the limits of the change that was made last.
    tenant_changes: Arc<tokio::sync::Mutex<()>>,
    /// Holds the tenants' byte buckets, brought to a changed tenant's rate.
    auth: Arc<crate::auth::Authenticator>,
}

impl GatewayHandle {
    /// A handle sending on `events`; `ready` is set once every listener is bound.
    pub(crate) fn new(
        events: mpsc::Sender<EngineEvent>,
        stats: Arc<Stats>,
        ready: Arc<AtomicBool>,
        max_outbound_queue: usize,
        tenants: Arc<TenantAdmin>,
        auth: Arc<crate::auth::Authenticator>,
    ) -> GatewayHandle {
        GatewayHandle {
            events,
            stats,
            ready,
            started: Instant::now(),
            next_tap: Arc::new(AtomicU64::new(0)),
            // Half the outbound queue, so a tap's deliveries plus the engine's other packets to
            // it never fill its outbox (which would close it as a slow consumer).
            tap_window: u16::try_from((max_outbound_queue / 2).clamp(1, 1000)).unwrap_or(1000),
            tenant_changes: Arc::default(),
            auth,
            tenants,
        }
    }

    /// `views` with the engine's live connection counts filled in.
    async fn with_connections(
        &self,
        mut views: Vec<TenantView>,
    ) -> Result<Vec<TenantView>, GatewayError> {
        let counts = self
            .ask(|reply| ApiRequest::TenantConnections { reply })
            .await?;
        for view in &mut views {
            // A tenant the broker has not seen yet has no connection.
            view.connections = Some(counts.get(&view.config.id).copied().unwrap_or(0));
        }
        Ok(views)
    }

    /// Checks every topic (`publish`) or filter against `caller`'s tenant ACL when the caller is
    /// bound to one: 0x87 for the first one denied, or when its tenant no longer exists.
    fn check_acl<'a>(
        &self,
        caller: &Caller,
        publish: bool,
        topics: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), GatewayError> {
        let Some(AclIdentity {
            username,
            client_id,
        }) = &caller.acl
        else {
            return Ok(());
        };
        let refused = |message: String| GatewayError::Refused {
            reason: ReasonCode::NotAuthorized.as_u8(),
            message,
        };
        let registry = self.tenants.registry().current();
        let Some(tenant) = registry.get(&caller.tenant) else {
            return Err(refused(format!(
                "the token's tenant {:?} does not exist",
                caller.tenant
            )));
        };
        let who = Subject {
            username: username.as_deref(),
            client_id,
        };
        for topic in topics {
            let permission = if publish {
                tenant.acl().check_publish(&who, topic)
            } else {
                tenant.acl().check_subscribe(&who, topic)
            };
            if !permission.is_allowed() {
                let what = if publish { "publish to" } else { "read" };
                return Err(refused(format!(
                    "the ACL of tenant {:?} does not let this token {what} {topic:?}",
                    caller.tenant
                )));
            }
        }
        Ok(())
    }

    /// What a tap of `tenant` connects with: the tenant's own limits (a CONNECT sets them for
    /// the whole tenant, so the tap must not replace them with none) and an ACL allowing every
    /// topic, since the hub subscribes the union of what its readers may read and each reader
    /// is checked with [`Gateway::check_subscribe`] first. A tenant that does not exist (any
    /// more) gets no tap (0x87), except `default`, which plain tokens read even when no
    /// `[[tenants]]` entry names it, as before tenants.
    fn tap_authorization(&self, tenant: &str) -> Result<Authorized, GatewayError> {
        let registry = self.tenants.registry().current();
        let limits = match registry.get(tenant) {
            Some(t) => Arc::new(crate::auth::tenant_limits(t.quotas())),
            None if tenant == tidegate_auth::DEFAULT_TENANT_ID => {
                Authorized::default_tenant().limits
            }
            None => {
                return Err(GatewayError::Refused {
                    reason: ReasonCode::NotAuthorized.as_u8(),
                    message: format!("no tenant {tenant:?}"),
                });
            }
        };
        Ok(Authorized {
            tenant: Arc::from(tenant),
            limits,
            ..Authorized::default_tenant()
        })
    }

    /// Sends `request` built around a fresh reply channel and waits for the answer.
    /// Creates or replaces a tenant (see [`TenantAdmin::put`]), then hands its quotas and ACL
    /// to the broker: new connections get them with their CONNECT, connected clients and
    /// stored sessions from here.
    async fn put_tenant(
        &self,
        config: tidegate_auth::TenantConfig,
        exists: bool,
    ) -> Result<(), TenantError> {
        let _serialised = self.tenant_changes.lock().await;
        let id = config.id.clone();
        let before = self.tenants.registry().current().get(&id).cloned();
        self.tenants.put(config, exists).await?;
        let Some(tenant) = self.tenants.registry().current().get(&id).cloned() else {
            // Deleted meanwhile: the deletion disconnected its clients.
            return Ok(());
        };
        self.auth.tenant_changed(&id, tenant.quotas());
        // Re-checking every client's subscriptions is only worth it when the rules changed.
        let acl_changed = before.is_none_or(|b| **b.acl() != **tenant.acl());
        self.ask(|reply| ApiRequest::TenantChanged {
            tenant: id,
            limits: Arc::new(crate::auth::tenant_limits(tenant.quotas())),
            acl: acl_changed.then(|| Arc::clone(tenant.acl())),
            reply,
        })
        .await
        .map_err(TenantError::Gateway)
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
    ) -> Result<T, GatewayError> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(EngineEvent::Api(request(tx)))
            .await
            .map_err(|_| GatewayError::Unavailable)?;
        rx.await.map_err(|_| GatewayError::Unavailable)
    }
}

impl Gateway for GatewayHandle {
    fn publish(
        &self,
        caller: Caller,
        batch: Vec<PublishRequest>,
    ) -> BoxFuture<'_, Result<Vec<PublishOutcome>, GatewayError>> {
        Box::pin(async move {
            self.check_acl(&caller, true, batch.iter().map(|m| m.topic.as_str()))
                .map_err(|e| match e {
                    GatewayError::Refused { reason, message } => GatewayError::Refused {
                        reason,
                        message: format!("{message}; nothing was published"),
                    },
                    other => other,
                })?;
            let tenant = caller.tenant;
            self.ask(|reply| ApiRequest::Publish {
                tenant,
                batch,
                reply,
            })
            .await?
        })
    }

    fn retained(
        &self,
        caller: Caller,
        filter: String,
    ) -> BoxFuture<'_, Result<Vec<RetainedMessage>, GatewayError>> {
        Box::pin(async move {
            self.check_acl(&caller, false, [filter.as_str()])?;
            let tenant = caller.tenant;
            self.ask(|reply| ApiRequest::Retained {
                tenant,
                filter,
                reply,
            })
            .await
        })
    }

    fn delete_retained(
        &self,
        tenant: String,
        topic: String,
    ) -> BoxFuture<'_, Result<bool, GatewayError>> {
        Box::pin(self.ask(|reply| ApiRequest::DeleteRetained {
            tenant,
            topic,
            reply,
        }))
    }

    fn clients(&self, query: ClientQuery) -> BoxFuture<'_, Result<Page<ClientInfo>, GatewayError>> {
        Box::pin(self.ask(|reply| ApiRequest::Clients { query, reply }))
    }

    fn client(
        &self,
        tenant: String,
        client_id: String,
    ) -> BoxFuture<'_, Result<Option<ClientInfo>, GatewayError>> {
        Box::pin(self.ask(|reply| ApiRequest::Client {
            tenant,
            client_id,
            reply,
        }))
    }

    fn subscriptions(
        &self,
        tenant: String,
        client_id: String,
    ) -> BoxFuture<'_, Result<Option<Vec<SubscriptionInfo>>, GatewayError>> {
        Box::pin(self.ask(|reply| ApiRequest::Subscriptions {
            tenant,
            client_id,
            reply,
        }))
    }

    fn sessions(
        &self,
        query: SessionQuery,
    ) -> BoxFuture<'_, Result<Page<SessionInfo>, GatewayError>> {
        Box::pin(self.ask(|reply| ApiRequest::Sessions { query, reply }))
    }

    fn kick(
        &self,
        tenant: String,
        client_id: String,
        reason: u8,
        discard_session: bool,
    ) -> BoxFuture<'_, Result<KickOutcome, GatewayError>> {
        Box::pin(async move {
            let reason = ReasonCode::from_u8(reason).ok_or(GatewayError::Refused {
                reason: ReasonCode::ProtocolError.as_u8(),
                message: format!("0x{reason:02X} is not an MQTT reason code"),
            })?;
            self.ask(|reply| ApiRequest::Kick {
                tenant,
                client_id,
                reason,
                discard_session,
                reply,
            })
            .await
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<GatewayStats, GatewayError>> {
        Box::pin(async move {
            let snapshot = self.ask(|reply| ApiRequest::Snapshot { reply }).await?;
            let s = &snapshot.broker;
            Ok(GatewayStats {
                connections: s.connections.saturating_sub(snapshot.internal_connections),
                sessions: s.sessions.saturating_sub(snapshot.internal_connections),
                subscriptions: s.subscriptions,
                retained: s.retained,
                queued_messages: s.queued_messages,
                messages_in: s.messages_in.total(),
                messages_out: s.messages_out.total(),
                messages_dropped: s.dropped_queue_full
                    + s.dropped_too_large
                    + s.dropped_expired
                    + self.stats.qos0_dropped(),
                uptime_seconds: self.started.elapsed().as_secs(),
            })
        })
    }

    fn metrics(&self) -> BoxFuture<'_, Result<String, GatewayError>> {
        Box::pin(async move {
            let snapshot = self.ask(|reply| ApiRequest::Snapshot { reply }).await?;
            Ok(crate::metrics::render(
                &snapshot,
                &self.stats,
                self.started.elapsed(),
            ))
        })
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.events.is_closed()
    }

    fn open_tap(&self, tenant: String) -> BoxFuture<'_, Result<Tap, GatewayError>> {
        Box::pin(async move {
            let auth = self.tap_authorization(&tenant)?;
            let n = self.next_tap.fetch_add(1, Ordering::Relaxed);
            let conn = ConnId(TAP_CONN_BASE + n);
            let outbox = Arc::new(Outbox::new());
            crate::tap::open(
                self.events.clone(),
                conn,
                outbox,
                format!("{TAP_CLIENT_PREFIX}{n}"),
                self.tap_window,
                auth,
            )
            .await
        })
    }

    fn check_subscribe(&self, caller: &Caller, filters: &[String]) -> Result<(), GatewayError> {
        self.check_acl(caller, false, filters.iter().map(String::as_str))
    }

    fn tenants(&self) -> BoxFuture<'_, Result<Vec<TenantView>, GatewayError>> {
        Box::pin(async move { self.with_connections(self.tenants.list().await).await })
    }

    fn tenant(&self, id: String) -> BoxFuture<'_, Result<Option<TenantView>, GatewayError>> {
        Box::pin(async move {
            let Some(view) = self.tenants.get(&id).await else {
                return Ok(None);
            };
            Ok(self.with_connections(vec![view]).await?.pop())
        })
    }

    fn create_tenant(
        &self,
        config: tidegate_auth::TenantConfig,
    ) -> BoxFuture<'_, Result<(), TenantError>> {
        Box::pin(self.put_tenant(config, false))
    }

    fn replace_tenant(
        &self,
        config: tidegate_auth::TenantConfig,
    ) -> BoxFuture<'_, Result<(), TenantError>> {
        Box::pin(self.put_tenant(config, true))
    }

    fn delete_tenant(&self, id: String) -> BoxFuture<'_, Result<TenantDeleted, TenantError>> {
        Box::pin(async move {
            let _serialised = self.tenant_changes.lock().await;
            // Out of the registry (and the store) first, so none of its clients can come back
            // between the disconnection and the end of the change.
            self.tenants.delete(&id).await?;
            Ok(self
                .ask(|reply| ApiRequest::DropTenant { tenant: id, reply })
                .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn pages_follow_the_cursor_and_say_the_total() {
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("c{i}"), i)).collect();
        let first = paginate(items.clone(), None, Some(2));
        assert_eq!(first.items, [0, 1]);
        assert_eq!(first.total, 5);
        let second = paginate(items.clone(), first.next_cursor.as_deref(), Some(2));
        assert_eq!(second.items, [2, 3]);
        let last = paginate(items, second.next_cursor.as_deref(), Some(2));
        assert_eq!(last.items, [4]);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn listing_keys_keep_default_cursors_and_separate_tenants() {
        assert_eq!(listing_key("phone", "default"), "phone");
        let acme = listing_key("phone", "acme");
        assert_ne!(acme, "phone");
        let mut keys = vec![
            acme.clone(),
            listing_key("phone-2", "default"),
            "phone".into(),
        ];
        keys.sort();
        assert_eq!(keys, ["phone", acme.as_str(), "phone-2"]);
        assert!(tenant_matches(None, "acme"));
        assert!(tenant_matches(Some("acme"), "acme"));
        assert!(!tenant_matches(Some("default"), "acme"));
    }

    #[test]
    fn http_publications_become_broker_publications() {
        let p = api_publish(PublishRequest {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"x"),
            qos: 1,
            retain: true,
            properties: MessageProperties {
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                message_expiry: Some(60),
                ..MessageProperties::default()
            },
        })
        .unwrap();
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert!(p.retain);
        assert_eq!(p.properties.message_expiry_interval, Some(60));
        assert_eq!(p.properties.user_properties.len(), 1);
        let bad = PublishRequest {
            topic: "a".into(),
            payload: Bytes::new(),
            qos: 3,
            retain: false,
            properties: MessageProperties::default(),
        };
        assert!(api_publish(bad).is_err());
    }

    #[test]
    fn unix_ms_of_now_is_the_wall_clock() {
        let now = Instant::now();
        let ms = unix_ms(now, now);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(wall.abs_diff(ms) < 1000);
        assert!(unix_ms(now - Duration::from_secs(10), now) + 9_000 < ms + 1);
    }
}
