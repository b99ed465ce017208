//! [`Conn`]: what the broker knows about one network connection. Before CONNECT only its
//! deadline; after, the negotiated parameters of the MQTT connection (version, keep alive, the
//! client's limits, topic alias tables, the will) and which session it is attached to.
//!
//! Place in the data flow: every event from the IO shell starts with a lookup here, by
//! [`ConnId`](super::ConnId). Session state that must survive a reconnect lives in
//! [`Session`](super::session::Session) instead; this record dies with the socket.

use super::ConnInfo;
use super::alias::{InboundAliases, OutboundAliases};
use super::tenant::TenantIdx;
use super::timers::TimerKey;
use crate::router::SessionKey;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_auth::{Acl, TokenBucket};
use tidegate_protocol::{ProtocolVersion, Will};

/// One network connection.
#[derive(Debug)]
pub(super) struct Conn {
    /// Transport facts from the IO shell, kept for logs.
    pub(super) info: ConnInfo,
    /// Before or after CONNECT.
    pub(super) phase: Phase,
}

/// Before or after a successful CONNECT.
#[derive(Debug)]
pub(super) enum Phase {
    /// Waiting for CONNECT; the timer closes the socket if it does not come.
    Connecting {
        /// The CONNECT-timeout entry (`None` only for a timeout beyond `Instant`'s range).
        timer: Option<TimerKey>,
    },
    /// CONNACK sent. Boxed: a pending connection then costs a few words only.
    Connected(Box<Connected>),
}

/// A connection after CONNACK.
#[derive(Debug)]
pub(super) struct Connected {
    /// The session it is attached to.
    pub(super) session: SessionKey,
    /// The tenant the client belongs to: which router, retained store and limits apply.
    pub(super) tenant: TenantIdx,
    /// What authentication imposed on this connection beyond its tenant's limits; `None`
    /// (every topic allowed, no per-client rate, no credential expiry) costs one word and no
    /// check on the hot path.
    pub(super) policy: Option<Box<ConnPolicy>>,
    /// Protocol version from CONNECT, deciding reason codes and properties.
    pub(super) version: ProtocolVersion,
    /// 1.5 × the effective keep alive [MQTT-3.1.2-24]; `None` when keep alive is 0.
    pub(super) keep_alive_timeout: Option<Duration>,
    /// When the last packet arrived.
    pub(super) last_activity: Instant,
    /// The keep-alive entry (re-armed lazily, see the timers module).
    pub(super) keep_alive_timer: Option<TimerKey>,
    /// The client's Receive Maximum (65,535 when absent or in 3.1.1).
    pub(super) receive_maximum: u16,
    /// The client's Maximum Packet Size, if it set one.
    pub(super) max_packet_size: Option<u32>,
    /// Aliases the client assigned.
    pub(super) inbound_aliases: InboundAliases,
    /// Aliases we assigned.
    pub(super) outbound_aliases: OutboundAliases,
    /// The will from CONNECT, dropped on DISCONNECT 0x00.
    pub(super) will: Option<Box<Will>>,
    /// The CONNECT carried a session expiry interval of 0 (or none): a DISCONNECT must not
    /// raise it [MQTT-3.14.2-2].
    pub(super) connect_expiry_zero: bool,
    /// Keep alive in force, seconds (the client's, or the Server Keep Alive we imposed).
    pub(super) keep_alive: u16,
    /// When the CONNECT was accepted.
    pub(super) connected_at: Instant,
}

/// The per-connection half of what authentication decided
/// ([`Authorized`](super::Authorized)); the tenant-wide half lives in the tenant's state.
#[derive(Debug)]
pub(super) struct ConnPolicy {
    /// `%u` in ACL rules (`None`: anonymous).
    pub(super) username: Option<Arc<str>>,
    /// The rules PUBLISH and SUBSCRIBE are checked against (`None`: everything allowed).
    pub(super) acl: Option<Arc<Acl>>,
    /// Inbound messages per second of this client, when limited.
    pub(super) rate: Option<TokenBucket>,
    /// The credential-expiry entry (a JWT's `exp`): DISCONNECT 0xA0 when it fires.
    pub(super) expiry_timer: Option<TimerKey>,
}

impl ConnPolicy {
    /// A policy with no credential expiry (one made after CONNECT, by a tenant change).
    pub(super) fn boxed(
        username: Option<Arc<str>>,
        acl: Option<Arc<Acl>>,
        rate: Option<TokenBucket>,
    ) -> Box<ConnPolicy> {
        Box::new(ConnPolicy {
            username,
            acl,
            rate,
            expiry_timer: None,
        })
    }
}
