//! The broker: every session, connection, subscription and retained message of one gateway,
//! driven by events from the IO shell, with the time passed in.
//!
//! # Place in the data flow
//! ```text
//! shell ──handle_open / handle_packet / handle_decode_error / handle_closed / handle_timeout──▶ Broker
//! Broker ──poll_output: Output::Send{conn, packet} / Output::Close{conn}──▶ shell
//! Broker ──poll_timeout: earliest deadline──▶ shell (calls handle_timeout when it passes)
//! ```
//! Inside: a PUBLISH is checked (alias, limits, QoS, retain, receive maximum) in `publish`,
//! turned into one `Arc<Message>`, stored if retained, routed by the [`Router`] into a reused
//! `Vec<Delivery>`, and handed to each receiving session (`session::Session`) in `deliver`:
//! sent at once when the session is online and its inflight window has room, queued otherwise.
//!
//! # Design, and why
//! - **Tenants** (issue 7): every connection and session belongs to one tenant, and each tenant
//!   has its own router, retained store, client-id index, limits and counters, found through a
//!   small index the connection carries (see the `tenant` module for the layout, the cost and
//!   the store names; `tenancy` for authorization and quotas). A CONNECT through
//!   [`Broker::handle_packet`] lands in the default tenant with everything allowed.
//! - **Sessions by (tenant, client id), connections by [`ConnId`]**: a session (subscriptions, inflight,
//!   queue, inbound QoS 2 ids, expiry, delayed will) outlives its connection; a connection record
//!   (version, keep alive, client limits, alias tables, will) dies with the socket. Sessions are
//!   keyed by a never-reused [`SessionKey`] so stale timers and router entries cannot hit a newer
//!   session of the same client id.
//! - **One timer map** (`timers`): connect timeout, keep alive (re-armed lazily when it fires
//!   early, not moved per packet), will delay, session expiry and the per-tenant `$SYS`
//!   statistics (`sys`: one entry for the whole broker, armed only while someone is there). Message expiry has no timer:
//!   it is checked when a message is about to be sent (a queued message waits anyway, and one
//!   timer per message would cost more than the check).
//! - **Outputs in one FIFO**: per connection, packets leave in the order the broker decided
//!   them, and a `Close` follows everything sent to that connection before it.
//! - **Abnormal ends share one path** (`lifecycle::end_connection`): socket closed, decode error,
//!   protocol violation, keep-alive timeout, takeover and shutdown all detach the session and
//!   publish the will (after its delay); only DISCONNECT 0x00 (and any 3.1.1 DISCONNECT) drops it.
//!
//! # Choices where the specification leaves room
//! - CONNACK to an unsupported protocol level is built as a plain CONNACK with reason
//!   UnsupportedProtocolVersion and no properties: the shell's decoder never learnt a version,
//!   so it encodes it in the 3.1.1 layout (return code 1), which is what MQTT 3.1 and 3.1.1
//!   clients expect and what every MQTT 5 client can parse as a refusal.
//! - A PUBLISH whose topic breaks `max_topic_length` / `max_topic_levels` ends the connection
//!   with DISCONNECT 0x90 (Topic Name invalid), like a topic with wildcards: the topic name is
//!   the client's error, not a per-message condition.
//! - Clients may publish to `$` topics, except `$SYS` and `$SYS/...`, which belong to the
//!   server: such a publication is dropped and, in MQTT 5, acknowledged with 0x87 (Not
//!   authorized); 3.1.1 has no way to say so and gets a plain acknowledgement.
//! - A v5 DISCONNECT with any reason other than 0x00 publishes the will, as the specification
//!   words it (section 3.1.2.5); Mosquitto publishes it for 0x04 only.
//! - An unknown PUBACK / PUBCOMP is ignored (Mosquitto does the same); an unknown PUBREC is
//!   answered with PUBREL 0x92 so the client can free its state.
//! - A payload announced as UTF-8 that is not: PUBACK/PUBREC 0x99 for QoS 1/2; for QoS 0, which
//!   has no acknowledgement, DISCONNECT 0x99.
//! - On `shutdown` the wills of the closed connections are handled as for any server-side close
//!   (published after their delay): the specification only exempts DISCONNECT 0x00 by the
//!   client, and sessions stay, so a delayed will is still cancelled by a prompt reconnect.
//! - Retained replays honour No Local: a client does not get back a retained message it
//!   published itself through a No Local subscription.
//! - Our Receive Maximum (0x93) is enforced on MQTT 5 clients only: 3.1.1 has no such limit,
//!   and the 65,535 packet ids bound the inbound QoS 2 state anyway.
//! - When the retained store is full, a retained PUBLISH is still routed and acknowledged as
//!   usual, just not stored (counted in [`Stats::refused_publishes`]).
//! - After a resume, unacknowledged deliveries are resent in order but only as far as the new
//!   connection's Receive Maximum allows; the rest follow as acknowledgements come, before any
//!   new message (both [MQTT-4.4.0-1] and [MQTT-3.3.4-9] hold).
//! - An expired message in a session queue keeps its slot until it reaches the head of the
//!   queue, where it is dropped (no per-message timer).

mod admin;
mod alias;
mod conn;
mod connect;
mod deliver;
mod lifecycle;
mod persist;
mod publish;
mod session;
mod stats;
mod subscribe;
mod sys;
mod tenancy;
mod tenant;
mod tenant_admin;
#[cfg(test)]
mod testkit;
mod timers;

pub use admin::{
    API_CONN, ApiAccepted, ApiPublish, ApiRefusal, ClientView, Kicked, SessionView,
    SubscriptionView,
};
pub use persist::{BatchId, RestoreReport, StoreBatch};
pub use stats::{
    DisconnectSide, LATENCY_BUCKETS_US, LatencyHistogram, QosCounts, ReasonCounts, Stats,
};
pub use tenancy::{Authorized, TenantLimits};
pub use tenant::{QuotaRefusals, TenantCounters};

use crate::BrokerConfig;
use crate::router::{Delivery, SessionKey};
use conn::{Conn, Connected, Phase};
use session::Session;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenant::{TenantIdx, TenantState};
use tidegate_protocol::{
    ConnAck, DecodeError, Disconnect, Packet, ProtocolVersion, ReasonCode, Utf8,
};
use timers::{TimerEvent, TimerKey, Timers};

/// Identifies one network connection; assigned by the IO shell, never reused while the broker
/// knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the IO shell knows about a connection's transport, for logs, limits and (later) auth.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnInfo {
    /// Name of the listener that accepted it (e.g. `"tcp:0.0.0.0:1883"`).
    pub listener: Arc<str>,
    /// The peer's address, when the transport has one; behind a load balancer speaking the
    /// PROXY protocol, the client's address from the header rather than the balancer's.
    pub peer: Option<SocketAddr>,
    /// The server name (SNI) the client asked for in its TLS handshake (tls and wss).
    pub tls_server_name: Option<Arc<str>>,
    /// The identity read from the client's verified TLS certificate (the listener's
    /// `identity_from`: subject CN, first DNS SAN or first URI SAN).
    pub cert_identity: Option<Arc<str>>,
    /// User id of the peer process, from `SO_PEERCRED` (unix listeners).
    pub peer_uid: Option<u32>,
    /// Group id of the peer process (unix listeners).
    pub peer_gid: Option<u32>,
    /// Process id of the peer, when the OS reports it (unix listeners).
    pub peer_pid: Option<i32>,
    /// The gateway's own connection (the HTTP stream hub's tap), not a client's: it is not
    /// counted in its tenant's connections and sessions ([`Broker::tenant_stats`], `$SYS`)
    /// and the tenant's connection and session quotas do not apply to it. Such a connection
    /// holds one session, which ends with it (expiry 0).
    pub internal: bool,
}

/// An action for the IO shell.
// `Send` is far larger than `Close`, but outputs are drained right after each event, and boxing
// the packet would cost an allocation per packet sent.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Encode and send `packet` on `conn`, after everything sent to it before.
    Send {
        /// Target connection.
        conn: ConnId,
        /// Packet to send.
        packet: Packet,
    },
    /// Flush what was sent to `conn`, then close the socket. The broker has forgotten `conn`.
    Close {
        /// Connection to close.
        conn: ConnId,
    },
    /// An API publication ([`Broker::publish_api`]) at QoS 1 or 2 is settled: durable (its
    /// store batch is written, or nothing needed writing), or not (`durable: false`: the batch
    /// failed and the message must be treated as refused).
    Committed {
        /// The token `publish_api` returned.
        token: u64,
        /// Whether the message is safe.
        durable: bool,
    },
}

/// The whole sans-IO engine.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<SessionKey, Session>,
    /// Every tenant's router, retained store and client-id index; the default tenant at 0.
    tenants: Vec<TenantState>,
    /// Tenant id → its index in `tenants`.
    tenant_index: HashMap<Arc<str>, TenantIdx>,
    next_session: u64,
    next_assigned_id: u64,
    timers: Timers,
    out: VecDeque<Output>,
    counters: Stats,
    /// CONNACK and disconnect reasons.
    reasons: ReasonCounts,
    /// Reused by every fan-out so routing a message allocates nothing for the list itself.
    deliveries: Vec<Delivery>,
    shutting_down: bool,
    /// Persistence state; `None` when the broker keeps everything in memory only.
    persist: Option<persist::Persist>,
    /// The token of the next API publication at QoS 1/2.
    next_api_token: u64,
    /// The armed `$SYS` statistics deadline, if any (see the `sys` module).
    sys_timer: Option<TimerKey>,
    /// The first instant the broker handled, from which `$SYS/broker/uptime` counts.
    started: Option<Instant>,
}

impl Broker {
    /// An empty broker. The configuration should have passed [`BrokerConfig::validate`].
    pub fn new(config: BrokerConfig) -> Broker {
        let default: Arc<str> = Arc::from(tidegate_auth::DEFAULT_TENANT_ID);
        let tenants = vec![TenantState::new(
            default.clone(),
            config.max_retained_messages,
        )];
        Broker {
            config,
            conns: HashMap::new(),
            sessions: HashMap::new(),
            tenants,
            tenant_index: HashMap::from([(default, TenantIdx::DEFAULT)]),
            next_session: 1,
            next_assigned_id: 1,
            timers: Timers::default(),
            out: VecDeque::new(),
            counters: Stats::default(),
            reasons: ReasonCounts::default(),
            deliveries: Vec::new(),
            shutting_down: false,
            persist: None,
            next_api_token: 1,
            sys_timer: None,
            started: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// A socket was accepted: CONNECT must arrive within `connect_timeout`. After
    /// [`Broker::shutdown`] the socket is closed at once.
    pub fn handle_open(&mut self, now: Instant, conn: ConnId, info: ConnInfo) {
        if self.shutting_down {
            self.emit(Output::Close { conn }, None);
            return;
        }
        if self.conns.contains_key(&conn) {
            tracing::warn!(
                conn = conn.0,
                "handle_open for a connection already open; ignored"
            );
            return;
        }
        self.wake_sys(now);
        let timer = self.arm(
            now,
            self.config.connect_timeout,
            TimerEvent::ConnectTimeout(conn),
        );
        self.conns.insert(
            conn,
            Conn {
                info,
                phase: Phase::Connecting { timer },
            },
        );
    }

    /// A packet decoded from `conn`. Packets for a connection the broker closed (or never
    /// opened) are ignored: the shell may still hold some decoded before it saw the `Close`.
    pub fn handle_packet(&mut self, now: Instant, conn: ConnId, packet: Packet) {
        let Some(c) = self.conns.get_mut(&conn) else {
            tracing::debug!(
                conn = conn.0,
                packet = packet.name(),
                "packet for unknown connection"
            );
            return;
        };
        let Phase::Connected(st) = &mut c.phase else {
            match packet {
                Packet::Connect(connect) => {
                    self.on_connect(now, conn, *connect, tenancy::ConnAuth::default());
                }
                other => {
                    // The codec only lets CONNECT through first; anything else is a bug or a
                    // hostile peer, and there is no version to answer in.
                    tracing::debug!(
                        conn = conn.0,
                        packet = other.name(),
                        "packet before CONNECT"
                    );
                    self.counters.protocol_errors += 1;
                    self.drop_pending(conn);
                }
            }
            return;
        };
        st.last_activity = now;
        match packet {
            Packet::Connect(_) => {
                self.violation(
                    now,
                    conn,
                    ReasonCode::ProtocolError,
                    "[MQTT-3.1.0-2] second CONNECT",
                );
            }
            Packet::Publish(p) => self.on_publish(now, conn, p),
            Packet::PubAck(r) => self.on_puback(now, conn, r),
            Packet::PubRec(r) => self.on_pubrec(now, conn, r),
            Packet::PubRel(r) => self.on_pubrel(conn, r),
            Packet::PubComp(r) => self.on_pubcomp(now, conn, r),
            Packet::Subscribe(s) => self.on_subscribe(now, conn, s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(conn, u),
            Packet::PingReq => self.send(conn, Packet::PingResp),
            Packet::Disconnect(d) => self.on_disconnect(now, conn, d),
            Packet::Auth(_) => self.violation(
                now,
                conn,
                ReasonCode::ProtocolError,
                "AUTH without an authentication method in CONNECT (section 4.12)",
            ),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.violation(
                    now,
                    conn,
                    ReasonCode::ProtocolError,
                    "server-only packet from a client",
                );
            }
        }
    }

    /// The codec rejected bytes from `conn`: answer with DISCONNECT carrying the error's reason
    /// code (v5, after CONNECT) and close. Before CONNECT, an unsupported protocol level gets a
    /// CONNACK with UnsupportedProtocolVersion (see the module docs for its 3.1.1 layout) and any
    /// other error a plain close. Counts as an abnormal disconnect (the will is published).
    pub fn handle_decode_error(&mut self, now: Instant, conn: ConnId, error: &DecodeError) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        tracing::debug!(conn = conn.0, %error, "decode error");
        match c.phase {
            Phase::Connecting { .. } => {
                self.counters.protocol_errors += 1;
                if let DecodeError::UnsupportedProtocolVersion { .. } = error {
                    self.count_connack(ReasonCode::UnsupportedProtocolVersion);
                    self.send(
                        conn,
                        Packet::ConnAck(ConnAck {
                            reason_code: ReasonCode::UnsupportedProtocolVersion,
                            ..ConnAck::default()
                        }),
                    );
                }
                self.drop_pending(conn);
            }
            Phase::Connected(_) => self.violation(now, conn, error.reason_code(), "decode error"),
        }
    }

    /// The socket of `conn` ended without DISCONNECT (EOF, IO error): abnormal disconnect. No
    /// `Close` is emitted for it: the shell already knows.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        match self.conns.get(&conn).map(|c| &c.phase) {
            None => {}
            Some(Phase::Connecting { timer }) => {
                if let Some(t) = *timer {
                    self.timers.cancel(t);
                }
                self.conns.remove(&conn);
            }
            Some(Phase::Connected(_)) => {
                self.reasons
                    .disconnect
                    .entry((DisconnectSide::Socket, 0))
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                self.end_connection(now, conn, lifecycle::WillFate::Publish, false);
            }
        }
    }

    /// Fires every deadline at or before `now` (connect timeout, keep alive, will delay,
    /// session expiry, credential expiry, `$SYS` statistics). Message expiry needs no call: it is checked at delivery time.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((key, event)) = self.timers.pop_due(now) {
            match event {
                TimerEvent::ConnectTimeout(conn) => self.on_connect_timeout(conn, key),
                TimerEvent::KeepAlive(conn) => self.on_keep_alive_timer(now, conn, key),
                TimerEvent::WillDelay(session) => self.on_will_delay(now, session, key),
                TimerEvent::SessionExpiry(session) => self.on_session_expiry(now, session, key),
                TimerEvent::CredentialsExpired(conn) => {
                    self.on_credentials_expired(now, conn, key);
                }
                TimerEvent::SysStats => self.on_sys_timer(now, key),
            }
        }
    }

    /// The earliest pending deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next action for the IO shell. With persistence, outputs that must wait for the
    /// store are not returned until their batch is reported written
    /// ([`Broker::handle_store_committed`]).
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.out.is_empty() {
            self.settle();
        }
        self.out.pop_front()
    }

    /// Graceful shutdown: DISCONNECT with `reason` (normally 0x8B Server shutting down) and an
    /// optional Server Reference to every v5 client, close every connection. Sessions stay;
    /// connections opened afterwards are closed at once.
    pub fn shutdown(&mut self, now: Instant, reason: ReasonCode, server_reference: Option<Utf8>) {
        self.shutting_down = true;
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        // Deterministic order for the shell and the tests.
        conns.sort_unstable();
        for conn in conns {
            if self.connected(conn).is_some() {
                self.count_disconnect(DisconnectSide::Server, reason);
            }
            if self.connected(conn).is_some_and(|c| c.version.is_v5()) {
                let mut d = Disconnect::with_reason(reason);
                d.properties.server_reference = server_reference.clone();
                self.send(conn, Packet::Disconnect(d));
            }
            match self.conns.get(&conn).map(|c| &c.phase) {
                Some(Phase::Connected(_)) => {
                    self.end_connection(now, conn, lifecycle::WillFate::Publish, true);
                }
                _ => self.drop_pending(conn),
            }
        }
    }

    /// A snapshot of the engine's counters and gauges. Costs O(connections + sessions) for
    /// the gauges.
    pub fn stats(&self) -> Stats {
        let connections = self
            .conns
            .values()
            .filter(|c| matches!(c.phase, Phase::Connected(_)))
            .count();
        let (queued_messages, queued_in_memory) =
            self.sessions.values().fold((0, 0), |(all, mem), s| {
                (all + s.queue.len(), mem + s.queue.memory_len())
            });
        Stats {
            connections,
            pending_connections: self.conns.len() - connections,
            sessions: self.sessions.len(),
            queued_messages,
            queued_in_memory,
            subscriptions: self.tenants.iter().map(|t| t.router.len()).sum(),
            retained: self.tenants.iter().map(|t| t.retained.len()).sum(),
            ..self.counters
        }
    }

    /// The client identifier of a connection past CONNACK (the assigned one when the client
    /// sent none), for the shell's connect/disconnect log lines. `None` before CONNECT and for
    /// unknown connections.
    pub fn client_id(&self, conn: ConnId) -> Option<&str> {
        let c = self.connected(conn)?;
        self.sessions.get(&c.session).map(|s| &*s.client_id)
    }

    /// The protocol version a connection negotiated in CONNECT, if it got that far.
    pub fn protocol_version(&self, conn: ConnId) -> Option<ProtocolVersion> {
        self.connected(conn).map(|c| c.version)
    }

    /// CONNACK and disconnect reason counters since the broker was created.
    pub fn reason_counts(&self) -> &ReasonCounts {
        &self.reasons
    }

    // ----- helpers shared by the submodules -----

    /// The state of tenant `idx`.
    fn tenant(&self, idx: TenantIdx) -> &TenantState {
        // Invariant: indexes are only made by `tenant_idx` (or are the default, 0), and
        // tenants are never removed from the table.
        &self.tenants[idx.0 as usize]
    }

    /// The state of tenant `idx`, mutably (same invariant as [`Broker::tenant`]).
    fn tenant_mut(&mut self, idx: TenantIdx) -> &mut TenantState {
        &mut self.tenants[idx.0 as usize]
    }

    /// The index of tenant `id`, creating its (empty) state on first use.
    fn tenant_idx(&mut self, id: &str) -> TenantIdx {
        if let Some(&idx) = self.tenant_index.get(id) {
            return idx;
        }
        let idx = TenantIdx(u32::try_from(self.tenants.len()).unwrap_or(u32::MAX));
        let id: Arc<str> = Arc::from(id);
        self.tenants.push(TenantState::new(
            id.clone(),
            self.config.max_retained_messages,
        ));
        self.tenant_index.insert(id, idx);
        idx
    }

    /// The index of tenant `id`, if the broker has seen it.
    fn find_tenant(&self, id: &str) -> Option<TenantIdx> {
        self.tenant_index.get(id).copied()
    }

    fn count_connack(&mut self, reason: ReasonCode) {
        *self.reasons.connack.entry(reason.as_u8()).or_insert(0) += 1;
    }

    fn count_disconnect(&mut self, side: DisconnectSide, reason: ReasonCode) {
        *self
            .reasons
            .disconnect
            .entry((side, reason.as_u8()))
            .or_insert(0) += 1;
    }

    fn send(&mut self, conn: ConnId, packet: Packet) {
        self.emit(Output::Send { conn, packet }, None);
    }

    fn connected(&self, conn: ConnId) -> Option<&Connected> {
        match &self.conns.get(&conn)?.phase {
            Phase::Connected(c) => Some(c),
            Phase::Connecting { .. } => None,
        }
    }

    fn connected_mut(&mut self, conn: ConnId) -> Option<&mut Connected> {
        match &mut self.conns.get_mut(&conn)?.phase {
            Phase::Connected(c) => Some(c),
            Phase::Connecting { .. } => None,
        }
    }

    /// Arms `event` after `delay`; `None` when the deadline is beyond what `Instant` holds
    /// (it would never fire anyway).
    fn arm(&mut self, now: Instant, delay: Duration, event: TimerEvent) -> Option<TimerKey> {
        now.checked_add(delay)
            .map(|at| self.timers.insert(at, event))
    }

    /// Forgets a connection that has not completed CONNECT and closes its socket.
    fn drop_pending(&mut self, conn: ConnId) {
        if let Some(Conn {
            phase: Phase::Connecting { timer: Some(t) },
            ..
        }) = self.conns.remove(&conn)
        {
            self.timers.cancel(t);
        }
        self.emit(Output::Close { conn }, None);
    }

    /// The client broke a protocol rule: DISCONNECT with `reason` (v5 only; 3.1.1 has no
    /// server DISCONNECT), close, and treat it as an abnormal end (the will is published).
    fn violation(&mut self, now: Instant, conn: ConnId, reason: ReasonCode, why: &str) {
        tracing::debug!(conn = conn.0, reason = ?reason, "protocol violation: {why}");
        self.counters.protocol_errors += 1;
        if self.connected(conn).is_some() {
            self.count_disconnect(DisconnectSide::Server, reason);
        }
        match self.connected(conn) {
            Some(c) => {
                if c.version.is_v5() {
                    self.send(conn, Packet::Disconnect(Disconnect::with_reason(reason)));
                }
                self.end_connection(now, conn, lifecycle::WillFate::Publish, true);
            }
            None => self.drop_pending(conn),
        }
    }
}
