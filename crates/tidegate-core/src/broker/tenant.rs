//! The per-tenant half of the broker: each tenant's topic tree, retained messages, client-id
//! index, limits, rate bucket and counters ([`TenantState`]), and how a tenant's sessions and
//! retained messages are named in the store.
//!
//! Place in the data flow: `connection (its TenantIdx) -> tenants[idx] -> router / retained /
//! by_client_id`. Every packet of a connection reaches its tenant's state through the index
//! the connection was given at CONNECT; nothing routes across two tenants.
//!
//! # Design, and why
//! - **One [`Router`] and one [`RetainedStore`] per tenant, in a `Vec` indexed by
//!   [`TenantIdx`]** (the default tenant at 0). Isolation then holds by construction — a
//!   message is only ever matched against its own tenant's tree, so `#` in tenant A cannot
//!   see tenant B, shared-subscription groups and `$`-topics are per tenant too — and the
//!   default tenant pays one bounds-checked vector index per packet, no hashing of a tenant
//!   name and no prefix on every topic. Prefixing topics with the tenant in one shared tree was
//!   the alternative: it costs a string build per PUBLISH and makes every wildcard walk start
//!   below a tenant level. Tenants are few (tens to thousands), so a tree each is cheap.
//! - **Sessions keyed by (tenant, client id)**: each tenant has its own client-id index; the
//!   session map itself stays global, keyed by the never-reused [`SessionKey`].
//! - **Store names** (the store has no notion of tenant, and the default tenant's layout must
//!   not change): default-tenant sessions and retained topics are written exactly as before.
//!   Another tenant's session is stored under `{tenant}\u{1F}{client id}` and its retained
//!   topics under `{tenant}#{topic}`. A topic name never contains `#` (a wildcard), and the
//!   broker refuses client ids containing U+001F (CONNACK 0x85), so a stored name with the
//!   separator always belongs to a non-default tenant, and tenant ids (letters, digits, `-`,
//!   `_`, `.`) contain neither separator: the first separator splits the name back.
//! - Tenants are created on first use (a CONNECT, an API publication, a restored session)
//!   and kept after their last session goes, so their counters survive for `/metrics`.

use super::TenantLimits;
use super::sys::SysTopics;
use crate::retained::RetainedStore;
use crate::router::{Router, SessionKey};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tidegate_auth::TokenBucket;

/// Separator between tenant and client id in a stored session name.
pub(super) const SESSION_SEPARATOR: char = '\u{1F}';
/// Separator between tenant and topic in a stored retained topic.
pub(super) const TOPIC_SEPARATOR: char = '#';

/// Index of a tenant in the broker's tenant table (0: the default tenant).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct TenantIdx(pub(super) u32);

impl TenantIdx {
    /// The default tenant.
    pub(super) const DEFAULT: TenantIdx = TenantIdx(0);
}

/// Refusals for a quota, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaRefusals {
    /// CONNECTs refused by `max_connections` (CONNACK 0x97 / 3.1.1 return code 3).
    pub connections: u64,
    /// CONNECTs refused by `max_sessions` (CONNACK 0x97 / 3).
    pub sessions: u64,
    /// Subscriptions refused by `max_subscriptions_per_client` or the gateway's
    /// `max_subscriptions` (SUBACK 0x97 / 0x80).
    pub subscriptions: u64,
    /// Retained publications not stored: the tenant's `max_retained_messages`.
    pub retained_messages: u64,
    /// Retained publications not stored: the tenant's `max_retained_bytes`.
    pub retained_bytes: u64,
    /// PUBLISH refused by the per-client rate (PUBACK/PUBREC 0x96, or dropped).
    pub client_rate: u64,
    /// PUBLISH refused by the tenant-wide rate (PUBACK/PUBREC 0x96, or dropped).
    pub tenant_rate: u64,
    /// Deliveries dropped because a session queue was full (`max_queued_messages`).
    pub queued_messages: u64,
}

/// What the gateway counts per tenant, for `/metrics`: gauges computed when read, counters
/// since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantCounters {
    /// Connections past CONNACK.
    pub connections: usize,
    /// Sessions, online or not.
    pub sessions: usize,
    /// Subscriptions held (plain plus shared memberships).
    pub subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
    /// Retained payload bytes.
    pub retained_bytes: u64,
    /// Publications accepted and routed (from clients, wills and the API).
    pub messages_in: u64,
    /// PUBLISH packets sent to the tenant's clients (resends not counted), `$SYS` ones
    /// included.
    pub messages_out: u64,
    /// PUBLISH (and wills at CONNECT) refused by the ACL.
    pub denied_publish: u64,
    /// Subscriptions refused by the ACL.
    pub denied_subscribe: u64,
    /// Connections closed because their credentials expired (DISCONNECT 0xA0).
    pub credentials_expired: u64,
    /// Quota refusals by kind.
    pub quota: QuotaRefusals,
}

/// One tenant inside the broker.
#[derive(Debug)]
pub(super) struct TenantState {
    /// The tenant id.
    pub(super) id: Arc<str>,
    /// Its subscriptions.
    pub(super) router: Router,
    /// Its retained messages.
    pub(super) retained: RetainedStore,
    /// Client id → session, for this tenant's sessions only.
    pub(super) by_client_id: HashMap<Arc<str>, SessionKey>,
    /// The limits of the latest CONNECT (or [`super::Broker::set_tenant_limits`]).
    pub(super) limits: Arc<TenantLimits>,
    /// The tenant-wide inbound message rate, when limited.
    pub(super) rate: Option<TokenBucket>,
    /// Clients' connections past CONNACK.
    pub(super) connections: usize,
    /// The gateway's own connections past CONNACK ([`super::ConnInfo::internal`]), each
    /// holding one session of `by_client_id`.
    pub(super) internal: usize,
    /// Counters (the gauges in it are filled in when read).
    pub(super) counters: TenantCounters,
    /// The latest `$SYS/broker/...` values, outside the retained store (see the `sys` module).
    pub(super) sys: SysTopics,
}

impl TenantState {
    /// Sessions of clients: the gateway's own ([`super::ConnInfo::internal`]) left out.
    pub(super) fn client_sessions(&self) -> usize {
        self.by_client_id.len().saturating_sub(self.internal)
    }

    pub(super) fn new(id: Arc<str>, max_retained: usize) -> TenantState {
        TenantState {
            id,
            router: Router::new(),
            retained: RetainedStore::new(max_retained),
            by_client_id: HashMap::new(),
            limits: Arc::new(TenantLimits::default()),
            rate: None,
            connections: 0,
            internal: 0,
            counters: TenantCounters::default(),
            sys: SysTopics::default(),
        }
    }

    /// Installs `limits`; the tenant-wide bucket is rebuilt only when its rate changed, so
    /// reconnecting clients cannot refill it.
    pub(super) fn set_limits(&mut self, limits: Arc<TenantLimits>, now: Instant) {
        let rate = limits.tenant_messages_per_sec;
        if rate != self.limits.tenant_messages_per_sec {
            self.rate = rate.map(|r| bucket(r, now));
        }
        self.limits = limits;
    }

    /// The store name of this tenant's session `client_id`.
    pub(super) fn store_id(&self, idx: TenantIdx, client_id: &Arc<str>) -> Arc<str> {
        if idx == TenantIdx::DEFAULT {
            client_id.clone()
        } else {
            Arc::from(format!("{}{SESSION_SEPARATOR}{client_id}", self.id))
        }
    }
}

/// A bucket of `rate` messages per second that holds one second's worth.
pub(super) fn bucket(rate: u32, now: Instant) -> TokenBucket {
    TokenBucket::new(u64::from(rate), u64::from(rate), now)
}

/// Splits a stored session name into (tenant, client id); `None` tenant: the default.
pub(super) fn split_store_id(stored: &str) -> (Option<&str>, &str) {
    match stored.split_once(SESSION_SEPARATOR) {
        Some((tenant, client_id)) => (Some(tenant), client_id),
        None => (None, stored),
    }
}

/// The stored form of a retained topic of tenant `tenant` (`None`: the default tenant).
pub(super) fn stored_topic(tenant: Option<&str>, topic: &str) -> String {
    match tenant {
        Some(t) => format!("{t}{TOPIC_SEPARATOR}{topic}"),
        None => topic.to_owned(),
    }
}

/// Splits a stored retained topic into (tenant, topic); `None` tenant: the default.
pub(super) fn split_stored_topic(stored: &str) -> (Option<&str>, &str) {
    match stored.split_once(TOPIC_SEPARATOR) {
        Some((tenant, topic)) => (Some(tenant), topic),
        None => (None, stored),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_split_back_and_leave_the_default_tenant_unchanged() {
        let t = TenantState::new(Arc::from("acme"), 10);
        let id: Arc<str> = Arc::from("phone#1");
        let stored = t.store_id(TenantIdx(3), &id);
        assert_eq!(split_store_id(&stored), (Some("acme"), "phone#1"));
        let plain = t.store_id(TenantIdx::DEFAULT, &id);
        assert!(Arc::ptr_eq(&plain, &id));
        assert_eq!(split_store_id(&plain), (None, "phone#1"));

        let topic = stored_topic(Some("acme"), "a/b\u{1F}c");
        assert_eq!(split_stored_topic(&topic), (Some("acme"), "a/b\u{1F}c"));
        assert_eq!(stored_topic(None, "a/b"), "a/b");
        assert_eq!(split_stored_topic("a/b"), (None, "a/b"));
    }

    #[test]
    fn the_tenant_bucket_is_kept_across_identical_limits() {
        let now = Instant::now();
        let mut t = TenantState::new(Arc::from("acme"), 10);
        let limits = Arc::new(TenantLimits {
            tenant_messages_per_sec: Some(1),
            ..TenantLimits::default()
        });
        t.set_limits(limits.clone(), now);
        assert!(t.rate.as_mut().unwrap().try_take(now, 1).is_ok());
        t.set_limits(limits, now);
        assert!(t.rate.as_mut().unwrap().try_take(now, 1).is_err());
        t.set_limits(Arc::new(TenantLimits::default()), now);
        assert!(t.rate.is_none());
    }
}
