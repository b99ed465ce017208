//! What the gateway's own API (HTTP publish, the admin endpoints, metrics) asks of the broker:
//! read-only views of clients, sessions, subscriptions and retained messages, and three
//! commands — publish a message without an MQTT connection, disconnect a client (and drop
//! its session), delete a retained message. Each exists per tenant (`*_in(tenant, ..)`); the
//! historical names act on the default tenant, which is all there was before tenants.
//!
//! Place in the data flow: `HTTP handler -> engine task -> Broker (this module) -> Output`. An
//! API publication goes through the same checks, routing, retained store and persistence as a
//! PUBLISH from a client ([`Broker::route_message`]); where a client would wait for PUBACK, the
//! API caller waits for [`Output::Committed`], which the persistence layer holds until the
//! store batch carrying the message is written, exactly like an acknowledgement.

use super::lifecycle::WillFate;
use super::persist::Promise;
use super::stats::DisconnectSide;
use super::tenant::TenantIdx;
use super::{Broker, ConnId, Output};
use crate::Message;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tidegate_auth::DEFAULT_TENANT_ID;
use tidegate_protocol::{
    Disconnect, Packet, ProtocolVersion, PublishProperties, QoS, ReasonCode, RetainHandling, Utf8,
};

/// The pseudo connection API outputs ([`Output::Committed`]) are ordered on: one queue, so
/// API publications are confirmed in the order they were made. Never a real connection (the
/// shell numbers those from 1 upwards).
pub const API_CONN: ConnId = ConnId(u64::MAX);

/// A connected client, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    /// The connection.
    pub conn: ConnId,
    /// The tenant the client belongs to.
    pub tenant: Arc<str>,
    /// Client identifier (the assigned one when the client sent none).
    pub client_id: Arc<str>,
    /// Listener name from the shell.
    pub listener: Arc<str>,
    /// Peer address, when the transport has one.
    pub peer: Option<SocketAddr>,
    /// Negotiated protocol version.
    pub version: ProtocolVersion,
    /// Keep alive in force, seconds.
    pub keep_alive: u16,
    /// When CONNECT was accepted.
    pub connected_at: Instant,
    /// Outbound QoS 1/2 deliveries not yet completed.
    pub inflight: usize,
    /// Messages waiting in the session queue.
    pub queued: usize,
    /// Subscriptions of the session.
    pub subscriptions: usize,
}

/// A session, online or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The tenant the session belongs to.
    pub tenant: Arc<str>,
    /// Client identifier.
    pub client_id: Arc<str>,
    /// The connection attached to it, if online.
    pub conn: Option<ConnId>,
    /// Session Expiry Interval, seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// When an offline session expires (`None` online or never).
    pub expires_at: Option<Instant>,
    /// Messages waiting in its queue.
    pub queued: usize,
    /// Outbound deliveries not yet completed.
    pub inflight: usize,
    /// Subscriptions it holds.
    pub subscriptions: usize,
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    /// Topic filter as subscribed (`$share/group/...` included).
    pub filter: String,
    /// Granted QoS.
    pub qos: QoS,
    /// No Local.
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: RetainHandling,
    /// Subscription Identifier.
    pub identifier: Option<u32>,
}

/// A message to publish through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPublish {
    /// Topic name.
    pub topic: Utf8,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Properties as a v5 PUBLISH would carry them (Message Expiry Interval included; topic
    /// alias and subscription identifiers must be empty).
    pub properties: PublishProperties,
}

/// An API publication the broker did not accept, with the reason an MQTT 5 publisher would
/// have got in its acknowledgement (or DISCONNECT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("publication refused: {reason:?}")]
pub struct ApiRefusal {
    /// Why: TopicNameInvalid, NotAuthorized (`$SYS`), PayloadFormatInvalid,
    /// RetainNotSupported, QoSNotSupported, ProtocolError (alias or subscription identifier
    /// set), QuotaExceeded (the store is failing; or the tenant's retained quota: the
    /// message was then routed to current subscribers, just not retained).
    pub reason: ReasonCode,
}

/// An accepted API publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiAccepted {
    /// Sessions the message was routed to.
    pub matched: usize,
    /// For QoS 1 and 2: the token an [`Output::Committed`] will carry once the message is
    /// durable (at once without persistence, but always through `poll_output`).
    pub token: Option<u64>,
}

/// What [`Broker::kick`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kicked {
    /// A connection was closed.
    pub disconnected: bool,
    /// The session was dropped.
    pub session_discarded: bool,
}

impl Broker {
    /// Every client past CONNACK, in no particular order.
    pub fn client_views(&self) -> impl Iterator<Item = ClientView> + '_ {
        self.conns.keys().filter_map(|&conn| self.client_view(conn))
    }

    /// The client on `conn`, if it is past CONNACK.
    pub fn client_view(&self, conn: ConnId) -> Option<ClientView> {
        let info = &self.conns.get(&conn)?.info;
        let c = self.connected(conn)?;
        let s = self.sessions.get(&c.session)?;
        Some(ClientView {
            conn,
            tenant: self.tenant(s.tenant).id.clone(),
            client_id: s.client_id.clone(),
            listener: info.listener.clone(),
            peer: info.peer,
            version: c.version,
            keep_alive: c.keep_alive,
            connected_at: c.connected_at,
            inflight: s.inflight.len(),
            queued: s.queue.len(),
            subscriptions: s.subscriptions.len(),
        })
    }

    /// The connection holding the session of `client_id` in the default tenant, if the
    /// client is online.
    pub fn conn_of(&self, client_id: &str) -> Option<ConnId> {
        self.conn_of_in(DEFAULT_TENANT_ID, client_id)
    }

    /// The connection holding the session of `client_id` in `tenant`, if the client is online.
    pub fn conn_of_in(&self, tenant: &str, client_id: &str) -> Option<ConnId> {
        let key = self.session_key_in(tenant, client_id)?;
        self.sessions.get(&key)?.conn
    }

    /// The session of `client_id` in `tenant`.
    fn session_key_in(&self, tenant: &str, client_id: &str) -> Option<crate::router::SessionKey> {
        let idx = self.find_tenant(tenant)?;
        self.tenant(idx).by_client_id.get(client_id).copied()
    }

    /// Every session of every tenant, online or not, in no particular order.
    pub fn session_views(&self) -> impl Iterator<Item = SessionView> + '_ {
        self.sessions.values().map(|s| SessionView {
            tenant: self.tenant(s.tenant).id.clone(),
            client_id: s.client_id.clone(),
            conn: s.conn,
            expiry_interval: s.expiry,
            expires_at: s.expiry_timer.map(|(at, _)| at),
            queued: s.queue.len(),
            inflight: s.inflight.len(),
            subscriptions: s.subscriptions.len(),
        })
    }

    /// The subscriptions of the session of `client_id` in the default tenant, sorted by
    /// filter; `None` without such a session.
    pub fn subscription_views(&self, client_id: &str) -> Option<Vec<SubscriptionView>> {
        self.subscription_views_in(DEFAULT_TENANT_ID, client_id)
    }

    /// The subscriptions of the session of `client_id` in `tenant`, sorted by filter; `None`
    /// without such a session.
    pub fn subscription_views_in(
        &self,
        tenant: &str,
        client_id: &str,
    ) -> Option<Vec<SubscriptionView>> {
        let key = self.session_key_in(tenant, client_id)?;
        let s = self.sessions.get(&key)?;
        let mut views: Vec<SubscriptionView> = s
            .subscriptions
            .iter()
            .map(|(filter, e)| SubscriptionView {
                filter: filter.clone(),
                qos: e.options.qos,
                no_local: e.options.no_local,
                retain_as_published: e.options.retain_as_published,
                retain_handling: e.options.retain_handling,
                identifier: e.identifier,
            })
            .collect();
        views.sort_by(|a, b| a.filter.cmp(&b.filter));
        Some(views)
    }

    /// Retained messages of the default tenant whose topic matches `filter` (expired ones
    /// excluded), sorted by topic.
    pub fn retained_matching(&mut self, now: Instant, filter: &str) -> Vec<Arc<Message>> {
        self.retained_matching_in(now, DEFAULT_TENANT_ID, filter)
    }

    /// Retained messages of `tenant` whose topic matches `filter` (expired ones excluded),
    /// sorted by topic.
    pub fn retained_matching_in(
        &mut self,
        now: Instant,
        tenant: &str,
        filter: &str,
    ) -> Vec<Arc<Message>> {
        let mut out = Vec::new();
        if let Some(idx) = self.find_tenant(tenant) {
            self.tenant_mut(idx)
                .retained
                .matching(filter, now, &mut out);
        }
        out.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
        out
    }

    /// Deletes the default tenant's retained message at `topic` (and from the store); `true`
    /// when there was one.
    pub fn delete_retained(&mut self, topic: &str) -> bool {
        self.delete_retained_in(DEFAULT_TENANT_ID, topic)
    }

    /// Deletes `tenant`'s retained message at `topic` (and from the store); `true` when there
    /// was one.
    pub fn delete_retained_in(&mut self, tenant: &str, topic: &str) -> bool {
        let Some(idx) = self.find_tenant(tenant) else {
            return false;
        };
        if !self.tenant_mut(idx).retained.remove(topic) {
            return false;
        }
        self.forget_stored_retained(idx, topic);
        true
    }

    /// Deletes a retained message of tenant `idx` from the store (no-op without persistence).
    pub(super) fn forget_stored_retained(&mut self, idx: TenantIdx, topic: &str) {
        if !self.is_durable() {
            return;
        }
        let namespace = (idx != TenantIdx::DEFAULT).then(|| self.tenant(idx).id.clone());
        let stored = super::tenant::stored_topic(namespace.as_deref(), topic);
        if let Ok(name) = Utf8::try_from(stored) {
            self.store(tidegate_store::StoreOp::DeleteRetained(name));
        }
    }

    /// Disconnects `client_id` of the default tenant; see [`Broker::kick_in`].
    pub fn kick(
        &mut self,
        now: Instant,
        client_id: &str,
        reason: ReasonCode,
        discard_session: bool,
    ) -> Kicked {
        self.kick_in(now, DEFAULT_TENANT_ID, client_id, reason, discard_session)
    }

    /// Disconnects `client_id` of `tenant` as an administrative action: MQTT 5 clients get
    /// DISCONNECT with `reason` first, the will is published (a server-side close is not a
    /// normal disconnection), and with `discard_session` the session is dropped too, online
    /// or not.
    pub fn kick_in(
        &mut self,
        now: Instant,
        tenant: &str,
        client_id: &str,
        reason: ReasonCode,
        discard_session: bool,
    ) -> Kicked {
        let mut done = Kicked::default();
        let Some(key) = self.session_key_in(tenant, client_id) else {
            return done;
        };
        if let Some(conn) = self.sessions.get(&key).and_then(|s| s.conn) {
            self.count_disconnect(DisconnectSide::Server, reason);
            if self.connected(conn).is_some_and(|c| c.version.is_v5()) {
                self.send(conn, Packet::Disconnect(Disconnect::with_reason(reason)));
            }
            self.end_connection(now, conn, WillFate::Publish, true);
            done.disconnected = true;
        }
        if discard_session && self.session_key_in(tenant, client_id) == Some(key) {
            // end_connection already ended a session with expiry 0.
            if self.sessions.contains_key(&key) {
                self.end_session(now, key);
            }
            done.session_discarded = true;
        }
        done
    }

    /// Publishes a message in the default tenant; see [`Broker::publish_api_in`].
    pub fn publish_api(
        &mut self,
        now: Instant,
        publish: ApiPublish,
    ) -> Result<ApiAccepted, ApiRefusal> {
        self.publish_api_in(now, DEFAULT_TENANT_ID, publish)
    }

    /// Publishes a message in `tenant` (created if unknown) on behalf of the API, with the
    /// rules a client's PUBLISH obeys (topic limits, `$SYS`, payload format, retain and QoS
    /// availability, a failing store, the tenant's retained quota: QuotaExceeded, the message
    /// routed but not retained). The tenant's ACL is not applied: the API checks its own
    /// tokens. For QoS 1 and 2 an [`Output::Committed`] with the returned token follows once
    /// the message is durable, or carries `durable: false` if its store batch fails.
    pub fn publish_api_in(
        &mut self,
        now: Instant,
        tenant: &str,
        publish: ApiPublish,
    ) -> Result<ApiAccepted, ApiRefusal> {
        let refuse = |reason| Err(ApiRefusal { reason });
        if !self.topic_name_ok(&publish.topic) {
            return refuse(ReasonCode::TopicNameInvalid);
        }
        if publish.properties.topic_alias.is_some()
            || !publish.properties.subscription_identifiers.is_empty()
        {
            return refuse(ReasonCode::ProtocolError);
        }
        if super::connect::is_sys_topic(&publish.topic) {
            self.counters.refused_publishes += 1;
            return refuse(ReasonCode::NotAuthorized);
        }
        if publish.qos > self.config.max_qos {
            return refuse(ReasonCode::QoSNotSupported);
        }
        if publish.retain && !self.config.retain_available {
            return refuse(ReasonCode::RetainNotSupported);
        }
        if publish.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            self.counters.refused_publishes += 1;
            return refuse(ReasonCode::PayloadFormatInvalid);
        }
        if self.store_refusing() && (publish.qos != QoS::AtMostOnce || publish.retain) {
            self.counters.refused_publishes += 1;
            return refuse(ReasonCode::QuotaExceeded);
        }
        let qos = publish.qos;
        let packet = tidegate_protocol::Publish {
            dup: false,
            qos,
            retain: publish.retain,
            topic: publish.topic.clone(),
            packet_id: None,
            payload: publish.payload,
            properties: publish.properties,
        };
        let msg = Arc::new(Message::from_publish(packet, publish.topic, now, None));
        let idx = self.tenant_idx(tenant);
        let routed = self.route_message(now, idx, msg);
        if routed.retained_over_quota {
            // Routed to the current subscribers, like a client's PUBLISH, but not retained.
            return refuse(ReasonCode::QuotaExceeded);
        }
        let matched = routed.matched;
        let token = (qos != QoS::AtMostOnce).then(|| {
            let token = self.next_api_token;
            self.next_api_token += 1;
            // Like a PUBACK: it promises what the publication wrote, so it leaves once that
            // is durable (at once when nothing was written).
            self.emit(
                Output::Committed {
                    token,
                    durable: true,
                },
                Some(Promise::Api),
            );
            token
        });
        Ok(ApiAccepted { matched, token })
    }

    /// The session key of `client_id`, for tests of this module.
    #[cfg(test)]
    fn key_of(&self, client_id: &str) -> Option<crate::router::SessionKey> {
        self.session_key_in(DEFAULT_TENANT_ID, client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use tidegate_protocol::ConnectProperties;

    fn api(topic: &str, qos: QoS, retain: bool) -> ApiPublish {
        ApiPublish {
            topic: Utf8::try_from(topic).unwrap(),
            payload: Bytes::from_static(b"hello"),
            qos,
            retain,
            properties: PublishProperties::default(),
        }
    }

    fn committed(h: &mut H) -> Vec<(u64, bool)> {
        h.pump();
        std::mem::take(&mut h.committed)
    }

    #[test]
    fn an_api_publication_reaches_subscribers_and_counts_them() {
        let mut h = H::new();
        let a = h.join(v5("a"));
        let b = h.join(v3("b"));
        h.subscribe(a, "t/#", QoS::AtLeastOnce);
        h.subscribe(b, "t/+", QoS::AtMostOnce);
        let accepted =
            h.b.publish_api(h.now, api("t/x", QoS::AtLeastOnce, false))
                .unwrap();
        assert_eq!(accepted.matched, 2);
        let token = accepted.token.unwrap();
        assert_eq!(committed(&mut h), vec![(token, true)]);
        assert_eq!(h.publishes(a).len(), 1);
        assert_eq!(h.publishes(b).len(), 1);
        let none =
            h.b.publish_api(h.now, api("u", QoS::AtMostOnce, false))
                .unwrap();
        assert_eq!(
            none,
            ApiAccepted {
                matched: 0,
                token: None
            }
        );
    }

    #[test]
    fn api_publications_obey_the_publish_rules() {
        let mut h = H::new();
        let reason = |h: &mut H, p| h.b.publish_api(h.now, p).unwrap_err().reason;
        assert_eq!(
            reason(&mut h, api("$SYS/x", QoS::AtMostOnce, false)),
            ReasonCode::NotAuthorized
        );
        assert_eq!(
            reason(&mut h, api("a/+", QoS::AtMostOnce, false)),
            ReasonCode::TopicNameInvalid
        );
        let mut bad_utf8 = api("a", QoS::AtMostOnce, false);
        bad_utf8.payload = Bytes::from_static(&[0xff]);
        bad_utf8.properties.payload_format_indicator = Some(true);
        assert_eq!(reason(&mut h, bad_utf8), ReasonCode::PayloadFormatInvalid);
        let mut alias = api("a", QoS::AtMostOnce, false);
        alias.properties.topic_alias = Some(1);
        assert_eq!(reason(&mut h, alias), ReasonCode::ProtocolError);
    }

    #[test]
    fn retained_api_messages_are_readable_and_deletable() {
        let mut h = H::new();
        h.b.publish_api(h.now, api("r/1", QoS::AtMostOnce, true))
            .unwrap();
        h.b.publish_api(h.now, api("r/2", QoS::AtMostOnce, true))
            .unwrap();
        let now = h.now;
        let topics: Vec<String> =
            h.b.retained_matching(now, "r/#")
                .iter()
                .map(|m| m.topic.as_str().to_owned())
                .collect();
        assert_eq!(topics, ["r/1", "r/2"]);
        assert!(h.b.delete_retained("r/1"));
        assert!(!h.b.delete_retained("r/1"));
        assert_eq!(h.b.retained_matching(now, "#").len(), 1);
    }

    #[test]
    fn views_show_clients_sessions_and_subscriptions() {
        let mut h = H::new();
        let mut c = v5("phone");
        c.keep_alive = 30;
        c.properties = ConnectProperties {
            session_expiry_interval: Some(600),
            ..ConnectProperties::default()
        };
        let conn = h.join(c);
        h.subscribe(conn, "b/#", QoS::AtLeastOnce);
        h.subscribe(conn, "a", QoS::AtMostOnce);
        let view = h.b.client_view(conn).unwrap();
        assert_eq!(&*view.client_id, "phone");
        assert_eq!(view.keep_alive, 30);
        assert_eq!(view.version, ProtocolVersion::V5);
        assert_eq!(view.subscriptions, 2);
        assert_eq!(h.b.client_views().count(), 1);
        assert_eq!(h.b.conn_of("phone"), Some(conn));
        let subs = h.b.subscription_views("phone").unwrap();
        assert_eq!(
            subs.iter().map(|s| s.filter.as_str()).collect::<Vec<_>>(),
            ["a", "b/#"]
        );
        assert_eq!(subs[1].qos, QoS::AtLeastOnce);
        h.drop_conn(conn);
        let sessions: Vec<SessionView> = h.b.session_views().collect();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].conn, None);
        assert_eq!(sessions[0].expiry_interval, 600);
        assert!(sessions[0].expires_at.is_some());
        assert_eq!(h.b.client_views().count(), 0);
        assert!(h.b.subscription_views("nobody").is_none());
    }

    #[test]
    fn kick_disconnects_with_the_reason_and_can_discard_the_session() {
        let mut h = H::new();
        let mut c = v5("phone");
        c.properties.session_expiry_interval = Some(600);
        let conn = h.join(c);
        let done =
            h.b.kick(h.now, "phone", ReasonCode::AdministrativeAction, false);
        assert_eq!(
            done,
            Kicked {
                disconnected: true,
                session_discarded: false
            }
        );
        assert_eq!(
            h.take(conn),
            vec![disconnect(ReasonCode::AdministrativeAction)]
        );
        assert!(h.is_closed(conn));
        assert!(h.b.key_of("phone").is_some(), "the session stays");
        let done =
            h.b.kick(h.now, "phone", ReasonCode::AdministrativeAction, true);
        assert_eq!(
            done,
            Kicked {
                disconnected: false,
                session_discarded: true
            }
        );
        assert!(h.b.key_of("phone").is_none());
        assert_eq!(
            h.b.kick(h.now, "phone", ReasonCode::AdministrativeAction, true),
            Kicked::default()
        );
        let counts = h.b.reason_counts();
        assert_eq!(
            counts.disconnect.get(&(DisconnectSide::Server, 0x98)),
            Some(&1)
        );
    }

    #[test]
    fn qos1_api_publications_wait_for_their_store_batch() {
        let mut h = H::durable(crate::BrokerConfig::default());
        let mut c = v5("sub");
        c.properties.session_expiry_interval = Some(600);
        let sub = h.join(c);
        h.subscribe(sub, "t", QoS::AtLeastOnce);
        h.drop_conn(sub);
        h.auto_commit = false;
        let token =
            h.b.publish_api(h.now, api("t", QoS::AtLeastOnce, false))
                .unwrap()
                .token
                .unwrap();
        assert!(
            committed(&mut h).is_empty(),
            "held until the queue entry is written"
        );
        assert!(!h.commit().is_empty());
        assert_eq!(committed(&mut h), vec![(token, true)]);
    }
}
