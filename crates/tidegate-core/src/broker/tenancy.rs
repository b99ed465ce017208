//! Tenants inside the broker (issue 7): what authentication decided about a connection
//! ([`Authorized`]) and the entry point that carries it, [`Broker::handle_connect`].
//!
//! Place in the data flow: `connection task: CONNECT -> tidegate-auth (resolve tenant,
//! authenticate) -> EngineEvent -> Broker::handle_connect(conn, connect, Authorized)`. A CONNECT
//! fed through [`Broker::handle_packet`] instead is treated as authorized in the default tenant
//! with every topic allowed (embedded use and the core's own tests).
//!
//! Enforcement, and the reason codes (documented choices where the specification leaves room):
//! - **ACL** ([`Authorized::acl`], with `%u` = [`Authorized::username`], `%c` = the client id,
//!   the assigned one when the client sent none): a will to a denied topic refuses the CONNECT
//!   (CONNACK 0x87; 3.1.1 return code 5), as EMQX and Mosquitto do; a denied SUBSCRIBE filter
//!   gets 0x87 (3.1.1: 0x80); a denied PUBLISH is not routed and gets PUBACK/PUBREC 0x87 in v5,
//!   a plain acknowledgement in 3.1.1 (Mosquitto's behaviour: 3.1.1 cannot say no), and QoS 0
//!   is dropped. Wills published later and API publications are not re-checked: the will was
//!   checked at CONNECT, and the API has its own tokens. A tenant's changed rules reach its
//!   connected clients through [`Broker::set_tenant_acl`] (subscriptions they deny are
//!   removed), and a resumed session's subscriptions are checked again at CONNECT.
//! - **Quotas** ([`TenantLimits`], the latest CONNECT's or [`Broker::set_tenant_limits`]'s):
//!   connections and sessions per tenant → CONNACK 0x97 (3.1.1: 3, Server unavailable; the
//!   gateway's own connections, `ConnInfo::internal`, neither count nor are refused);
//!   subscriptions per client → SUBACK 0x97 (3.1.1: 0x80); queued messages per session → the
//!   tenant's limit replaces the gateway's `max_queued_messages` for each of its sessions,
//!   existing ones included when it changes (entries queued over a lowered limit are kept and
//!   drain; new ones meet the full queue's drop policy); retained messages and bytes per tenant → a retained PUBLISH over the quota is
//!   still routed to current subscribers but not stored, and a v5 QoS 1/2 publisher gets
//!   PUBACK/PUBREC 0x97 (3.1.1: a plain acknowledgement); inbound messages per second per client
//!   and per tenant (token buckets holding one second's worth) → a QoS 1/2 PUBLISH over the
//!   rate is not routed and gets PUBACK/PUBREC 0x97 (Quota exceeded) in v5 — 0x96 (Message
//!   rate too high) is a DISCONNECT code, which an acknowledgement may not carry — and in 3.1.1
//!   (plain acknowledgement) and at QoS 0 it is dropped. Maximum packet size: announced in the v5 CONNACK (the smaller of the
//!   tenant's and the gateway's); the shell's decoder enforces it. Every refusal is counted in
//!   [`TenantCounters`](super::TenantCounters) ([`Broker::tenant_stats`]).
//! - **Credential expiry** ([`Authorized::expires_at`]): a timer per connection; when it
//!   passes, DISCONNECT 0xA0 (Maximum connect time) in v5, the socket is closed and the will
//!   published, as for any server-side close.

use super::conn::{ConnPolicy, Phase};
use super::lifecycle::WillFate;
use super::stats::DisconnectSide;
use super::tenant::{self, TenantIdx};
use super::timers::TimerKey;
use super::{Broker, ConnId};
use std::sync::Arc;
use std::time::Instant;
use tidegate_auth::{Acl, DEFAULT_TENANT_ID, Subject};
use tidegate_protocol::{Connect, Disconnect, Packet, ReasonCode};
use tidegate_store::StoreOp;

/// Per-tenant limits the broker enforces (from the tenant's `[tenants.quotas]`); `None` is
/// unlimited (the gateway-wide `[limits]` still apply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantLimits {
    /// Connections of the tenant at once (CONNACK 0x97 beyond).
    pub max_connections: Option<u32>,
    /// Sessions of the tenant, online or not (CONNACK 0x97 beyond).
    pub max_sessions: Option<u32>,
    /// Subscriptions per client (SUBACK 0x97 beyond).
    pub max_subscriptions_per_client: Option<u32>,
    /// Retained messages of the tenant.
    pub max_retained_messages: Option<u32>,
    /// Retained payload bytes of the tenant.
    pub max_retained_bytes: Option<u64>,
    /// Queued messages per offline session.
    pub max_queued_messages: Option<u32>,
    /// Largest packet a client of the tenant may send.
    pub max_packet_size: Option<u32>,
    /// Inbound PUBLISH per second per client (0x96 beyond).
    pub max_inbound_messages_per_sec: Option<u32>,
    /// Inbound PUBLISH per second for the whole tenant (0x96 beyond).
    pub tenant_messages_per_sec: Option<u32>,
}

/// What authentication decided about a connection.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The tenant the client belongs to.
    pub tenant: Arc<str>,
    /// The username ACLs substitute for `%u` (`None`: anonymous).
    pub username: Option<Arc<str>>,
    /// The rules its publications and subscriptions are checked against.
    pub acl: Arc<Acl>,
    /// The tenant's limits.
    pub limits: Arc<TenantLimits>,
    /// When its credentials expire (a JWT's `exp`): the connection is closed then, with
    /// DISCONNECT 0xA0 (Maximum connect time) in MQTT 5.
    pub expires_at: Option<Instant>,
}

impl Authorized {
    /// The default tenant, every topic allowed, no limit of its own.
    pub fn default_tenant() -> Authorized {
        Authorized {
            tenant: Arc::from(DEFAULT_TENANT_ID),
            username: None,
            acl: Arc::new(Acl::allow_all()),
            limits: Arc::new(TenantLimits::default()),
            expires_at: None,
        }
    }
}

/// The part of [`Authorized`] the CONNECT handler needs; the default is the default tenant with
/// nothing restricted (a CONNECT through [`Broker::handle_packet`]).
#[derive(Debug, Default)]
pub(super) struct ConnAuth {
    pub(super) tenant: TenantIdx,
    pub(super) username: Option<Arc<str>>,
    /// `None`: every topic allowed (no check per packet).
    pub(super) acl: Option<Arc<Acl>>,
    pub(super) expires_at: Option<Instant>,
}

impl Broker {
    /// A CONNECT that authentication accepted: the session lives in `auth.tenant` (created on
    /// first use), the tenant's limits become `auth.limits` (a changed tenant takes effect for
    /// new connections at once), and the connection's publications and subscriptions are
    /// checked against `auth.acl`. See the module docs for every refusal and its reason code.
    pub fn handle_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        connect: Connect,
        auth: Authorized,
    ) {
        if !matches!(
            self.conns.get(&conn).map(|c| &c.phase),
            Some(Phase::Connecting { .. })
        ) {
            // Not open, or already connected: the same path as a CONNECT packet (ignored, or
            // a protocol violation).
            return self.handle_packet(now, conn, Packet::Connect(Box::new(connect)));
        }
        let tenant = self.tenant_idx(&auth.tenant);
        self.apply_tenant_limits(now, tenant, auth.limits);
        // An allow-all ACL needs no check per packet.
        let acl = (*auth.acl != Acl::allow_all()).then_some(auth.acl);
        let auth = ConnAuth {
            tenant,
            username: auth.username,
            acl,
            expires_at: auth.expires_at,
        };
        self.on_connect(now, conn, connect, auth);
    }

    /// Replaces the limits of `tenant` (created if unknown) while it runs: connection, session,
    /// subscription, retained and tenant-rate quotas apply from the next packet, per-client
    /// rates and queue limits to connections and sessions made afterwards.
    pub fn set_tenant_limits(&mut self, now: Instant, tenant: &str, limits: Arc<TenantLimits>) {
        let idx = self.tenant_idx(tenant);
        self.apply_tenant_limits(now, idx, limits);
    }

    /// Makes `acl` the rules of the tenant's connected clients (the tenant's ACL was changed):
    /// a client's own layer (a JWT's or hook answer's rules) stays in front of the new rules,
    /// and every subscription the new rules deny is removed from its session, as if the
    /// client had unsubscribed (MQTT has no way to tell it; counted as denied subscriptions).
    /// Sessions offline now are checked when they are resumed. Returns how many
    /// subscriptions were removed. The gateway's own connections are left alone.
    pub fn set_tenant_acl(&mut self, tenant: &str, acl: Arc<Acl>) -> usize {
        let idx = self.tenant_idx(tenant);
        let mut removed = 0;
        for conn in self.client_conns_of(idx) {
            let Some(c) = self.connected_mut(conn) else {
                continue;
            };
            let current = c.policy.as_ref().and_then(|p| p.acl.clone());
            let new = current.map_or_else(|| Arc::clone(&acl), |own| own.rebased(&acl));
            let new = (*new != Acl::allow_all()).then_some(new);
            match (&mut c.policy, new) {
                (Some(policy), new) => policy.acl = new,
                (None, Some(new)) => c.policy = Some(ConnPolicy::boxed(None, Some(new), None)),
                (None, None) => {}
            }
            removed += self.drop_denied_subscriptions(conn);
        }
        removed
    }

    /// Removes from `conn`'s session every subscription its ACL denies (see
    /// [`Broker::set_tenant_acl`]; also run when a session is resumed, so rules changed while
    /// it was offline apply). Returns how many went.
    pub(super) fn drop_denied_subscriptions(&mut self, conn: ConnId) -> usize {
        let Some(c) = self.connected(conn) else {
            return 0;
        };
        let Some(policy) = c.policy.as_deref() else {
            return 0;
        };
        let Some(acl) = &policy.acl else {
            return 0;
        };
        let (key, tenant) = (c.session, c.tenant);
        let Some(s) = self.sessions.get(&key) else {
            return 0;
        };
        let who = Subject {
            username: policy.username.as_deref(),
            client_id: &s.client_id,
        };
        let denied: Vec<String> = s
            .subscriptions
            .keys()
            .filter(|filter| !acl.check_subscribe(&who, filter).is_allowed())
            .cloned()
            .collect();
        for filter in &denied {
            if self.unsubscribe_session(key, filter)
                && let Some(client_id) = self.durable_client(key)
            {
                self.store(StoreOp::DeleteSubscription {
                    client_id,
                    filter: Arc::from(filter.as_str()),
                });
            }
        }
        if !denied.is_empty() {
            tracing::debug!(
                conn = conn.0,
                removed = denied.len(),
                "subscriptions the ACL no longer allows removed"
            );
            self.tenant_mut(tenant).counters.denied_subscribe += denied.len() as u64;
        }
        denied.len()
    }

    /// The tenant's clients' connections past CONNACK (the gateway's own left out).
    fn client_conns_of(&self, idx: TenantIdx) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter_map(|(id, c)| match &c.phase {
                Phase::Connected(st) if st.tenant == idx && !c.info.internal => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// Makes `limits` the tenant's. A changed `max_queued_messages` applies to the tenant's
    /// existing sessions too (see [`crate::queue::MessageQueue::set_limit`] for a lowered one),
    /// a changed `max_inbound_messages_per_sec` to its connected clients (a fresh bucket each);
    /// the other limits are read where they are enforced.
    fn apply_tenant_limits(&mut self, now: Instant, idx: TenantIdx, limits: Arc<TenantLimits>) {
        let queue_limit = |l: &TenantLimits| {
            l.max_queued_messages
                .map_or(self.config.max_queued_messages, |m| m as usize)
        };
        let before = queue_limit(&self.tenant(idx).limits);
        let after = queue_limit(&limits);
        let client_rate = limits.max_inbound_messages_per_sec;
        let rate_changed = self.tenant(idx).limits.max_inbound_messages_per_sec != client_rate;
        self.tenant_mut(idx).set_limits(limits, now);
        if rate_changed {
            for conn in self.client_conns_of(idx) {
                let Some(c) = self.connected_mut(conn) else {
                    continue;
                };
                let rate = client_rate.map(|r| tenant::bucket(r, now));
                match (&mut c.policy, rate) {
                    (Some(policy), rate) => policy.rate = rate,
                    (None, Some(rate)) => {
                        c.policy = Some(ConnPolicy::boxed(None, None, Some(rate)))
                    }
                    (None, None) => {}
                }
            }
        }
        if before != after {
            let Broker {
                tenants, sessions, ..
            } = self;
            if let Some(t) = tenants.get(idx.0 as usize) {
                for key in t.by_client_id.values() {
                    if let Some(s) = sessions.get_mut(key) {
                        s.queue.set_limit(after);
                    }
                }
            }
        }
    }

    /// The ACL and rate checks of a PUBLISH from `conn` to `topic`: `Err` with the reason to
    /// refuse it with (0x87 denied, 0x96 over a rate), counted per tenant.
    pub(super) fn check_publish_policy(
        &mut self,
        now: Instant,
        conn: ConnId,
        topic: &str,
    ) -> Result<(), ReasonCode> {
        let Broker {
            conns,
            sessions,
            tenants,
            ..
        } = self;
        let Some(Phase::Connected(c)) = conns.get_mut(&conn).map(|c| &mut c.phase) else {
            return Ok(());
        };
        let Some(tenant) = tenants.get_mut(c.tenant.0 as usize) else {
            return Ok(());
        };
        if let Some(policy) = c.policy.as_deref_mut() {
            if let Some(acl) = &policy.acl {
                let who = Subject {
                    username: policy.username.as_deref(),
                    client_id: sessions.get(&c.session).map_or("", |s| &s.client_id),
                };
                if !acl.check_publish(&who, topic).is_allowed() {
                    tenant.counters.denied_publish += 1;
                    return Err(ReasonCode::NotAuthorized);
                }
            }
            if let Some(rate) = &mut policy.rate
                && rate.try_take(now, 1).is_err()
            {
                tenant.counters.quota.client_rate += 1;
                return Err(ReasonCode::QuotaExceeded);
            }
        }
        if let Some(rate) = &mut tenant.rate
            && rate.try_take(now, 1).is_err()
        {
            tenant.counters.quota.tenant_rate += 1;
            return Err(ReasonCode::QuotaExceeded);
        }
        Ok(())
    }

    /// The ACL check of one SUBSCRIBE filter from `conn`, counted per tenant when denied.
    pub(super) fn subscribe_allowed(&mut self, conn: ConnId, filter: &str) -> bool {
        let Some(c) = self.connected(conn) else {
            return false;
        };
        let Some(policy) = c.policy.as_deref() else {
            return true;
        };
        let Some(acl) = &policy.acl else {
            return true;
        };
        let who = Subject {
            username: policy.username.as_deref(),
            client_id: self.sessions.get(&c.session).map_or("", |s| &s.client_id),
        };
        if acl.check_subscribe(&who, filter).is_allowed() {
            return true;
        }
        let tenant = c.tenant;
        self.tenant_mut(tenant).counters.denied_subscribe += 1;
        false
    }

    /// The credentials of `conn` expired: DISCONNECT 0xA0 (v5) and close; the will is
    /// published as for any server-side close.
    pub(super) fn on_credentials_expired(&mut self, now: Instant, conn: ConnId, key: TimerKey) {
        let Some(c) = self.connected(conn) else {
            return;
        };
        let armed = c.policy.as_ref().and_then(|p| p.expiry_timer);
        if armed != Some(key) {
            return;
        }
        let (tenant, v5) = (c.tenant, c.version.is_v5());
        tracing::debug!(conn = conn.0, "credentials expired");
        self.tenant_mut(tenant).counters.credentials_expired += 1;
        self.count_disconnect(DisconnectSide::Server, ReasonCode::MaximumConnectTime);
        if v5 {
            self.send(
                conn,
                Packet::Disconnect(Disconnect::with_reason(ReasonCode::MaximumConnectTime)),
            );
        }
        self.end_connection(now, conn, WillFate::Publish, true);
    }
}
