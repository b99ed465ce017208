//! Deterministic harness for black-box tests of the sans-IO [`Broker`] (quinn's `Pair` idea).
//!
//! Place in the data flow: it stands in for the IO shell of `tidegate-server`. A [`Sim`] owns one
//! broker and a simulated clock; [`Client`] handles play the network peers. Every call into the
//! broker is followed by draining `poll_output` into the inboxes of the connections it names,
//! exactly as a driver would, and time only moves through [`Sim::advance`], which fires every
//! deadline crossed, in order. No sockets, no threads, no sleeping: a test of a 7-day session
//! expiry runs in microseconds and always the same way.
//!
//! While pumping, the harness checks rules that hold for *every* packet the broker sends, so
//! each scenario gets them for free (each panic names the spec rule):
//! - the first packet on a connection is CONNACK, and only one is sent ([MQTT-3.2.0-1/2]);
//! - nothing follows a failed CONNACK or a DISCONNECT, nor a close ([MQTT-3.2.2-7],
//!   [MQTT-3.14.4-1]); 3.1.1 clients never get a DISCONNECT (it only flows client to server);
//! - QoS 0 PUBLISH has no packet id and DUP=0, QoS > 0 has one ([MQTT-2.2.1-2],
//!   [MQTT-3.3.1-2]); a new PUBLISH never reuses an unacknowledged id ([MQTT-2.2.1-4]);
//! - no more unacknowledged QoS 1/2 PUBLISH than the client's Receive Maximum ([MQTT-3.3.4-9]);
//! - no topic alias above the client's Topic Alias Maximum ([MQTT-3.3.2-11], [MQTT-3.1.2-27]);
//! - nothing obviously above the client's Maximum Packet Size ([MQTT-3.1.2-24]);
//! - no Session Expiry Interval on a server DISCONNECT ([MQTT-3.14.2-2]).
//!
//! Persistence: [`Sim::durable`] builds the broker with [`Broker::restore`] over a
//! [`MemoryStore`] and commits every store batch as soon as it is taken (so outputs are
//! released within the same call, as fast as a store can be); [`Sim::hold_commits`] stops
//! committing (outputs stay held, as while an fsync runs) and [`Sim::crash_and_restart`] drops
//! whatever was not committed, closes every connection and restores a new broker from the
//! store, as a SIGKILL and a restart would. Every scenario built with [`Sim::new`] /
//! [`Sim::with_config`] runs with persistence on inside the `durable_scenarios` test binary
//! (which includes every scenario file), or anywhere with `TIDEGATE_HARNESS_DURABLE=1`: the
//! behaviour a client sees must not change when the broker persists.

// Each scenario file is its own test crate and uses only part of the harness.
#![allow(dead_code)]

use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};
use tidegate_core::store::{MemoryStore, Store};
use tidegate_core::{Authorized, Broker, BrokerConfig, ConnId, ConnInfo, Output};
use tidegate_protocol::{
    ConnAck, Connect, ConnectProperties, DecodeError, Disconnect, DisconnectProperties, PacketId,
    ProtocolVersion, PubResponse, Publish, PublishProperties, QoS, ReasonCode, Subscribe,
    SubscribeFilter, SubscribeProperties, SubscriptionOptions, Unsubscribe, UnsubscribeProperties,
    Utf8, Will, WillProperties,
};

pub(crate) use tidegate_protocol::Packet;

/// `n` seconds.
pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `n` milliseconds.
pub(crate) fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An MQTT string from a literal.
pub(crate) fn utf8(s: &str) -> Utf8 {
    Utf8::try_from(s).expect("test strings are valid MQTT strings")
}

/// A packet identifier from a non-zero literal.
pub(crate) fn pid(v: u16) -> PacketId {
    PacketId::new(v).expect("test packet ids are non-zero")
}

/// Subscription options with `qos` and every MQTT 5 option at its default.
pub(crate) fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// A payload as text, for readable assertions.
pub(crate) fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

/// A CONNECT with clean start, keep alive off (so timers only fire where a test asks for them)
/// and no will.
pub(crate) fn connect_packet(protocol: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 0,
        client_id: utf8(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// Customizer for a session that outlives its connection: Session Expiry Interval 300 s (v5;
/// ignored by 3.1.1, where the clean flag alone decides).
pub(crate) fn persistent(c: &mut Connect) {
    c.properties.session_expiry_interval = Some(300);
}

/// Customizer for a reconnect that resumes the session: clean start 0 and expiry 300 s.
pub(crate) fn resume(c: &mut Connect) {
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
}

/// A will message without properties.
pub(crate) fn will(topic: &str, payload: &'static str, qos: QoS) -> Will {
    Will {
        topic: utf8(topic),
        payload: Bytes::from_static(payload.as_bytes()),
        qos,
        retain: false,
        properties: WillProperties::default(),
    }
}

/// What the harness knows about one connection, as its peer would.
#[derive(Debug, Default)]
struct Conn {
    /// Packets the broker sent and the test has not taken yet, oldest first.
    inbox: VecDeque<Packet>,
    /// The broker closed it, or the peer dropped it.
    closed: bool,
    /// From the CONNECT the peer sent, once sent.
    version: Option<ProtocolVersion>,
    /// The peer's Receive Maximum (65,535 when absent).
    receive_maximum: u16,
    /// The peer's Topic Alias Maximum (0 when absent).
    topic_alias_maximum: u16,
    /// The peer's Maximum Packet Size, if any.
    maximum_packet_size: Option<u32>,
    /// Whether anything was sent yet (the first packet must be CONNACK).
    sent_any: bool,
    /// A CONNACK with a failure code or a DISCONNECT was sent: nothing may follow.
    finished: Option<&'static str>,
    /// Packet ids of QoS 1/2 PUBLISH sent to the peer and not yet acknowledged (PUBACK,
    /// PUBCOMP, or PUBREC with a failure code), on this connection.
    unacked: BTreeSet<u16>,
}

impl Conn {
    /// Records what the peer announced in its CONNECT, for the checks on what it receives.
    fn note_connect(&mut self, connect: &Connect) {
        self.version = Some(connect.protocol);
        self.receive_maximum = connect.properties.receive_maximum.unwrap_or(u16::MAX);
        self.topic_alias_maximum = connect.properties.topic_alias_maximum.unwrap_or(0);
        self.maximum_packet_size = connect.properties.maximum_packet_size;
    }
}

/// The broker, the clock and the connections, shared by the [`Sim`] and its [`Client`]s.
struct World {
    broker: Broker,
    start: Instant,
    now: Instant,
    next_conn: u64,
    conns: BTreeMap<ConnId, Conn>,
    /// The store of a durable broker.
    store: Option<MemoryStore>,
    /// Batches are taken but not committed (their outputs stay held).
    holding: bool,
    /// The configuration, to restore a broker with after a crash.
    config: BrokerConfig,
}

/// Whether scenarios run with persistence on: in the `durable_scenarios` binary, or when
/// `TIDEGATE_HARNESS_DURABLE=1`.
fn durable_by_default() -> bool {
    let binary = std::env::current_exe().ok().and_then(|p| {
        p.file_name()
            .map(|n| n.to_string_lossy().starts_with("durable_scenarios"))
    });
    binary == Some(true) || std::env::var_os("TIDEGATE_HARNESS_DURABLE").is_some_and(|v| v == "1")
}

/// The wall-clock time the simulated clock starts at (any fixed value works).
fn wall_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

impl World {
    fn conn(&mut self, id: ConnId) -> &mut Conn {
        self.conns
            .get_mut(&id)
            .unwrap_or_else(|| panic!("{id:?} was never opened"))
    }

    /// Drains every output of the broker into the connections, checking the invariants; for
    /// a durable broker, commits every store batch first (unless holding).
    fn pump(&mut self) {
        loop {
            self.drain_outputs();
            if self.holding {
                return;
            }
            let Some(store) = self.store.as_mut() else {
                return;
            };
            let Some(batch) = self.broker.take_store_batch() else {
                self.drain_outputs();
                return;
            };
            let loaded = store
                .apply(&batch.ops, tidegate_core::store::Durability::Synced)
                .expect("memory store apply");
            let now = self.now;
            self.broker.handle_store_committed(now, batch.id, loaded);
        }
    }

    fn drain_outputs(&mut self) {
        while let Some(out) = self.broker.poll_output() {
            match out {
                Output::Send { conn, packet } => self.deliver(conn, packet),
                Output::Close { conn } => {
                    let c = self.conns.get_mut(&conn).unwrap_or_else(|| {
                        panic!("broker closed {conn:?}, which was never opened")
                    });
                    c.closed = true;
                }
                Output::Committed { token, .. } => {
                    panic!("API confirmation {token} in a scenario that made no API publication")
                }
            }
        }
    }

    fn deliver(&mut self, id: ConnId, packet: Packet) {
        let c = self
            .conns
            .get_mut(&id)
            .unwrap_or_else(|| panic!("broker sent {packet:?} to {id:?}, never opened"));
        assert!(
            !c.closed,
            "broker sent {packet:?} to {id:?} after the connection was closed"
        );
        if let Some(why) = c.finished {
            panic!("broker sent {packet:?} to {id:?} after {why}");
        }
        match (&packet, c.sent_any) {
            (Packet::ConnAck(_), true) => panic!("[MQTT-3.2.0-2] second CONNACK to {id:?}"),
            (Packet::ConnAck(ack), false) if !ack.reason_code.is_success() => {
                c.finished = Some("a failed CONNACK [MQTT-3.2.2-7]");
                assert!(
                    !ack.session_present,
                    "[MQTT-3.2.2-6] failed CONNACK with session present: {ack:?}"
                );
            }
            (Packet::ConnAck(_), false) => {}
            (_, false) => {
                panic!("[MQTT-3.2.0-1] first packet to {id:?} is not CONNACK: {packet:?}")
            }
            _ => {}
        }
        match &packet {
            Packet::Publish(p) => check_publish(c, id, p),
            Packet::Disconnect(d) => {
                assert!(
                    c.version.is_none_or(ProtocolVersion::is_v5),
                    "a 3.1.1 server never sends DISCONNECT, got {packet:?}"
                );
                assert_eq!(
                    d.properties.session_expiry_interval, None,
                    "[MQTT-3.14.2-2] Session Expiry Interval on a server DISCONNECT"
                );
                c.finished = Some("DISCONNECT [MQTT-3.14.4-1]");
            }
            _ => {}
        }
        // Whatever the broker decides must be something the codec can put on the wire (a
        // reason code a packet type does not allow would be dropped by the shell's encoder).
        let version = c.version.unwrap_or(ProtocolVersion::V311);
        let mut wire = bytes::BytesMut::new();
        if let Err(e) = tidegate_protocol::encode(&packet, version, &mut wire) {
            panic!(
                "broker sent {packet:?} to {id:?}, which cannot be encoded for {version:?}: {e}"
            );
        }
        c.sent_any = true;
        c.inbox.push_back(packet);
    }

    /// Feeds `packet` from the peer of `id` to the broker and pumps the outputs.
    fn send(&mut self, id: ConnId, packet: Packet) {
        let now = self.now;
        let c = self.conn(id);
        assert!(!c.closed, "test bug: sending {packet:?} on closed {id:?}");
        match &packet {
            Packet::Connect(connect) => c.note_connect(connect),
            Packet::PubAck(r) | Packet::PubComp(r) => {
                c.unacked.remove(&r.packet_id.get());
            }
            Packet::PubRec(r) if !r.reason_code.is_success() => {
                c.unacked.remove(&r.packet_id.get());
            }
            _ => {}
        }
        self.broker.handle_packet(now, id, packet);
        self.pump();
    }
}

fn check_publish(c: &mut Conn, id: ConnId, p: &Publish) {
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {
            assert!(
                !p.dup,
                "[MQTT-3.3.1-2] QoS 0 PUBLISH with DUP=1 to {id:?}: {p:?}"
            );
        }
        (QoS::AtMostOnce, Some(_)) => {
            panic!("[MQTT-2.2.1-2] QoS 0 PUBLISH with a packet id: {p:?}")
        }
        (_, None) => panic!("[MQTT-2.2.1-4] QoS > 0 PUBLISH without packet id: {p:?}"),
        (_, Some(pid)) => {
            let fresh = c.unacked.insert(pid.get());
            assert!(
                fresh || p.dup,
                "[MQTT-2.2.1-4] new PUBLISH to {id:?} reuses unacknowledged packet id {}: {p:?}",
                pid.get()
            );
            assert!(
                c.unacked.len() <= usize::from(c.receive_maximum),
                "[MQTT-3.3.4-9] {} unacknowledged QoS>0 PUBLISH to {id:?}, Receive Maximum is {}",
                c.unacked.len(),
                c.receive_maximum
            );
        }
    }
    if let Some(alias) = p.properties.topic_alias {
        assert!(
            alias >= 1 && alias <= c.topic_alias_maximum,
            "[MQTT-3.3.2-11] topic alias {alias} to {id:?}, whose maximum is {}",
            c.topic_alias_maximum
        );
    } else {
        assert!(
            !p.topic.is_empty(),
            "PUBLISH to {id:?} without topic or alias: {p:?}"
        );
    }
    if let Some(max) = c.maximum_packet_size {
        // A lower bound of the encoded size: enough to catch a message that clearly cannot fit.
        let floor = p.payload.len() + p.topic.len();
        assert!(
            floor < max as usize,
            "[MQTT-3.1.2-24] PUBLISH of at least {floor} bytes to {id:?}, whose maximum is {max}"
        );
    }
}

/// One broker, a simulated clock and the connections of the test.
#[derive(Clone)]
pub(crate) struct Sim {
    world: Rc<RefCell<World>>,
}

impl Sim {
    /// A broker with the default configuration.
    pub(crate) fn new() -> Sim {
        Sim::with_config(BrokerConfig::default())
    }

    /// A broker with `config` (durable when `TIDEGATE_HARNESS_DURABLE=1`, see the module docs).
    pub(crate) fn with_config(config: BrokerConfig) -> Sim {
        if durable_by_default() {
            return Sim::durable(config);
        }
        let start = Instant::now();
        Sim {
            world: Rc::new(RefCell::new(World {
                broker: Broker::new(config.clone()),
                start,
                now: start,
                next_conn: 1,
                conns: BTreeMap::new(),
                store: None,
                holding: false,
                config,
            })),
        }
    }

    /// A durable broker with `config`, over an empty memory store.
    pub(crate) fn durable(config: BrokerConfig) -> Sim {
        let start = Instant::now();
        let (broker, _) = Broker::restore(config.clone(), start, wall_start(), Default::default());
        Sim {
            world: Rc::new(RefCell::new(World {
                broker,
                start,
                now: start,
                next_conn: 1,
                conns: BTreeMap::new(),
                store: Some(MemoryStore::new()),
                holding: false,
                config,
            })),
        }
    }

    /// Stops (`true`) or resumes (`false`) committing store batches. While holding, outputs
    /// that wait for the store are not delivered.
    pub(crate) fn hold_commits(&self, hold: bool) {
        let mut w = self.world.borrow_mut();
        w.holding = hold;
        w.pump();
    }

    /// Whether the broker holds outputs waiting for the store (it is holding commits).
    pub(crate) fn store_batches_pending(&self) -> bool {
        let mut w = self.world.borrow_mut();
        w.broker.take_store_batch().is_some() || w.broker.store_batches_in_flight() > 0
    }

    /// The memory store of a durable broker.
    pub(crate) fn store(&self) -> MemoryStore {
        self.world.borrow().store.clone().expect("a durable Sim")
    }

    /// Kills the broker (uncommitted batches are lost, every connection is gone) and starts a
    /// new one from what the store holds, after `downtime` on the clock. Returns the restore
    /// report.
    pub(crate) fn crash_and_restart(&self, downtime: Duration) -> tidegate_core::RestoreReport {
        let mut w = self.world.borrow_mut();
        for c in w.conns.values_mut() {
            c.closed = true;
        }
        w.now += downtime;
        w.holding = false;
        let snapshot = w
            .store
            .as_mut()
            .expect("a durable Sim")
            .load()
            .expect("memory store load");
        let wall = wall_start() + (w.now - w.start);
        let now = w.now;
        let (broker, report) = Broker::restore(w.config.clone(), now, wall, snapshot);
        w.broker = broker;
        w.pump();
        report
    }

    /// Simulated time since the start of the test.
    pub(crate) fn elapsed(&self) -> Duration {
        let w = self.world.borrow();
        w.now - w.start
    }

    /// Moves the clock forward by `by`, firing every broker deadline crossed on the way, each
    /// at its own instant and in order, as a driver's timer would.
    pub(crate) fn advance(&self, by: Duration) {
        let mut w = self.world.borrow_mut();
        let target = w.now + by;
        let mut fired = 0u32;
        while let Some(deadline) = w.broker.poll_timeout() {
            if deadline > target {
                break;
            }
            let at = deadline.max(w.now);
            w.now = at;
            w.broker.handle_timeout(at);
            w.pump();
            fired += 1;
            assert!(
                fired < 1_000_000,
                "broker keeps reporting deadline {:?} after handle_timeout",
                at - w.start
            );
        }
        w.now = target;
    }

    /// A socket was accepted; nothing sent on it yet.
    pub(crate) fn open(&self) -> Client {
        self.open_with(ConnInfo::default())
    }

    /// A connection with these transport details was accepted; nothing sent on it yet.
    pub(crate) fn open_with(&self, info: ConnInfo) -> Client {
        let mut w = self.world.borrow_mut();
        let id = ConnId(w.next_conn);
        w.next_conn += 1;
        w.conns.insert(id, Conn::default());
        let now = w.now;
        w.broker.handle_open(now, id, info);
        w.pump();
        Client {
            world: Rc::clone(&self.world),
            conn: id,
            connack: None,
            next_pid: Cell::new(0),
        }
    }

    /// Opens a socket and sends `connect`; takes the CONNACK, if one came, into
    /// [`Client::connack`].
    pub(crate) fn connect(&self, connect: Connect) -> Client {
        let mut c = self.open();
        c.send(Packet::Connect(Box::new(connect)));
        // The harness guarantees the first packet, if any, is the CONNACK.
        if let Some(Packet::ConnAck(ack)) = c.next() {
            c.connack = Some(ack);
        }
        c
    }

    /// Opens a socket and hands `connect` to the broker as authentication accepted it, with
    /// `auth` (tenant, username, ACL, limits, expiry), as the server does; takes the CONNACK,
    /// if one came, into [`Client::connack`].
    pub(crate) fn connect_as(&self, connect: Connect, auth: Authorized) -> Client {
        self.connect_as_with(connect, auth, ConnInfo::default())
    }

    /// [`Sim::connect_as`] on a connection with these transport details.
    pub(crate) fn connect_as_with(
        &self,
        connect: Connect,
        auth: Authorized,
        info: ConnInfo,
    ) -> Client {
        let mut c = self.open_with(info);
        {
            let mut w = self.world.borrow_mut();
            let now = w.now;
            w.conn(c.conn).note_connect(&connect);
            w.broker.handle_connect(now, c.conn, connect, auth);
            w.pump();
        }
        if let Some(Packet::ConnAck(ack)) = c.next() {
            c.connack = Some(ack);
        }
        c
    }

    /// Runs `f` on the broker at the current simulated time (admin calls, readings), then
    /// delivers whatever it sent.
    pub(crate) fn with_broker<R>(&self, f: impl FnOnce(&mut Broker, Instant) -> R) -> R {
        let mut w = self.world.borrow_mut();
        let now = w.now;
        let r = f(&mut w.broker, now);
        w.pump();
        r
    }

    /// An MQTT 5 client `client_id`; `customize` edits the CONNECT before it is sent.
    pub(crate) fn connect_v5(
        &self,
        client_id: &str,
        customize: impl FnOnce(&mut Connect),
    ) -> Client {
        let mut connect = connect_packet(ProtocolVersion::V5, client_id);
        customize(&mut connect);
        self.connect(connect)
    }

    /// An MQTT 3.1.1 client `client_id`; `customize` edits the CONNECT before it is sent.
    pub(crate) fn connect_v311(
        &self,
        client_id: &str,
        customize: impl FnOnce(&mut Connect),
    ) -> Client {
        let mut connect = connect_packet(ProtocolVersion::V311, client_id);
        customize(&mut connect);
        self.connect(connect)
    }

    /// Graceful shutdown of the broker.
    pub(crate) fn shutdown(&self, reason: ReasonCode, server_reference: Option<&str>) {
        let mut w = self.world.borrow_mut();
        let now = w.now;
        w.broker.shutdown(now, reason, server_reference.map(utf8));
        w.pump();
    }
}

/// The peer of one connection: sends packets, holds what the broker sent it.
pub(crate) struct Client {
    world: Rc<RefCell<World>>,
    /// The connection's id.
    pub(crate) conn: ConnId,
    /// The CONNACK received in answer to the CONNECT, if any.
    pub(crate) connack: Option<ConnAck>,
    next_pid: Cell<u16>,
}

impl Client {
    // ---- raw traffic ----------------------------------------------------------------------

    /// Sends `packet` to the broker.
    pub(crate) fn send(&self, packet: Packet) {
        self.world.borrow_mut().send(self.conn, packet);
    }

    /// The codec rejected bytes from this peer.
    pub(crate) fn decode_error(&self, error: &DecodeError) {
        let mut w = self.world.borrow_mut();
        let now = w.now;
        w.broker.handle_decode_error(now, self.conn, error);
        w.pump();
    }

    /// The socket ends without DISCONNECT (network failure, peer crash).
    pub(crate) fn drop_connection(&self) {
        let mut w = self.world.borrow_mut();
        let now = w.now;
        let c = w.conn(self.conn);
        assert!(!c.closed, "test bug: dropping closed {:?}", self.conn);
        c.closed = true;
        w.broker.handle_closed(now, self.conn);
        w.pump();
    }

    /// Sends DISCONNECT with `reason`, then closes the socket as a client must
    /// ([MQTT-3.14.4-2]).
    pub(crate) fn disconnect(&self, reason: ReasonCode) {
        self.disconnect_with(Disconnect::with_reason(reason));
    }

    /// Sends `disconnect`, then closes the socket unless the broker already did.
    pub(crate) fn disconnect_with(&self, disconnect: Disconnect) {
        self.send(Packet::Disconnect(disconnect));
        if !self.is_closed() {
            self.drop_connection();
        }
    }

    /// Whether the connection is closed (by the broker or by this peer).
    pub(crate) fn is_closed(&self) -> bool {
        self.world.borrow_mut().conn(self.conn).closed
    }

    /// The CONNACK; panics if none was received.
    #[track_caller]
    pub(crate) fn connack(&self) -> &ConnAck {
        self.connack.as_ref().expect("no CONNACK was received")
    }

    /// The next packet the broker sent, removing it from the inbox.
    pub(crate) fn next(&self) -> Option<Packet> {
        self.world.borrow_mut().conn(self.conn).inbox.pop_front()
    }

    /// Every packet in the inbox, oldest first, emptying it.
    pub(crate) fn take_all(&self) -> Vec<Packet> {
        self.world
            .borrow_mut()
            .conn(self.conn)
            .inbox
            .drain(..)
            .collect()
    }

    /// Removes and returns the first packet in the inbox for which `pred` holds.
    pub(crate) fn take_first(&self, pred: impl Fn(&Packet) -> bool) -> Option<Packet> {
        let mut w = self.world.borrow_mut();
        let inbox = &mut w.conn(self.conn).inbox;
        let i = inbox.iter().position(pred)?;
        inbox.remove(i)
    }

    /// The next packet, which must satisfy `pred`.
    #[track_caller]
    pub(crate) fn expect(&self, pred: impl FnOnce(&Packet) -> bool) -> Packet {
        match self.next() {
            Some(p) if pred(&p) => p,
            Some(p) => panic!("unexpected packet on {:?}: {p:?}", self.conn),
            None => panic!("no packet on {:?}, one was expected", self.conn),
        }
    }

    /// The next packet, which must be a PUBLISH.
    #[track_caller]
    pub(crate) fn expect_publish(&self) -> Publish {
        match self.expect(|p| matches!(p, Packet::Publish(_))) {
            Packet::Publish(p) => p,
            _ => unreachable!("checked by the predicate"),
        }
    }

    /// The next packet is a DISCONNECT with `reason`, it is the last one, and the connection
    /// is closed.
    #[track_caller]
    pub(crate) fn expect_disconnect(&self, reason: ReasonCode) -> Disconnect {
        let d = match self.expect(|p| matches!(p, Packet::Disconnect(_))) {
            Packet::Disconnect(d) => d,
            _ => unreachable!("checked by the predicate"),
        };
        assert_eq!(
            d.reason_code, reason,
            "DISCONNECT reason on {:?}",
            self.conn
        );
        self.assert_silent();
        assert!(
            self.is_closed(),
            "{:?} not closed after DISCONNECT",
            self.conn
        );
        d
    }

    /// The connection is closed and nothing (more) was sent on it.
    #[track_caller]
    pub(crate) fn expect_closed_silently(&self) {
        self.assert_silent();
        assert!(self.is_closed(), "{:?} is still open", self.conn);
    }

    /// The inbox is empty.
    #[track_caller]
    pub(crate) fn assert_silent(&self) {
        let left = self.take_all();
        assert!(
            left.is_empty(),
            "unexpected packets on {:?}: {left:?}",
            self.conn
        );
    }

    // ---- publishing -----------------------------------------------------------------------

    /// The next unused packet identifier of this client.
    pub(crate) fn next_packet_id(&self) -> PacketId {
        let v = self.next_pid.get().checked_add(1).unwrap_or(1);
        self.next_pid.set(v);
        pid(v)
    }

    /// A PUBLISH from this client (packet id allocated when `qos` > 0), edited by `customize`,
    /// sent as is: no acknowledgement is awaited. Returns what was sent.
    pub(crate) fn send_publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        customize: impl FnOnce(&mut Publish),
    ) -> Publish {
        let mut p = Publish {
            dup: false,
            qos,
            retain: false,
            topic: utf8(topic),
            packet_id: (qos != QoS::AtMostOnce).then(|| self.next_packet_id()),
            payload: payload.into(),
            properties: PublishProperties::default(),
        };
        customize(&mut p);
        self.send(Packet::Publish(p.clone()));
        p
    }

    /// Publishes and completes the QoS handshake, asserting the broker accepted the message
    /// (PUBACK, or PUBREC then PUBCOMP, with a success code).
    #[track_caller]
    pub(crate) fn publish(&self, topic: &str, payload: impl Into<Bytes>, qos: QoS) {
        self.publish_with(topic, payload, qos, |_| {});
    }

    /// [`Client::publish`] with the PUBLISH edited by `customize` (retain, properties).
    #[track_caller]
    pub(crate) fn publish_with(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        customize: impl FnOnce(&mut Publish),
    ) {
        let p = self.send_publish(topic, payload, qos, customize);
        let Some(id) = p.packet_id else { return };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let ack = self.expect_ack("PUBACK", |p| match p {
                    Packet::PubAck(r) if r.packet_id == id => Some(r.reason_code),
                    _ => None,
                });
                assert!(ack.is_success(), "PUBACK with failure {ack:?}");
            }
            QoS::ExactlyOnce => {
                let rec = self.expect_ack("PUBREC", |p| match p {
                    Packet::PubRec(r) if r.packet_id == id => Some(r.reason_code),
                    _ => None,
                });
                assert!(rec.is_success(), "PUBREC with failure {rec:?}");
                self.pubrel(id);
                let comp = self.expect_ack("PUBCOMP", |p| match p {
                    Packet::PubComp(r) if r.packet_id == id => Some(r.reason_code),
                    _ => None,
                });
                assert_eq!(comp, ReasonCode::Success, "PUBCOMP reason");
            }
        }
    }

    /// Takes the first packet `pick` recognises, wherever it is in the inbox (a publisher
    /// subscribed to its own topic also finds its message there).
    #[track_caller]
    fn expect_ack<T>(&self, what: &str, pick: impl Fn(&Packet) -> Option<T>) -> T {
        let found = self.take_first(|p| pick(p).is_some());
        match found.as_ref().and_then(&pick) {
            Some(v) => v,
            None => panic!("no {what} on {:?}; inbox: {:?}", self.conn, self.peek_all()),
        }
    }

    fn peek_all(&self) -> Vec<Packet> {
        self.world
            .borrow_mut()
            .conn(self.conn)
            .inbox
            .iter()
            .cloned()
            .collect()
    }

    /// Sends PUBACK for `id`.
    pub(crate) fn puback(&self, id: PacketId) {
        self.send(Packet::PubAck(PubResponse::success(id)));
    }

    /// Sends PUBREC for `id`.
    pub(crate) fn pubrec(&self, id: PacketId) {
        self.send(Packet::PubRec(PubResponse::success(id)));
    }

    /// Sends PUBREL for `id`.
    pub(crate) fn pubrel(&self, id: PacketId) {
        self.send(Packet::PubRel(PubResponse::success(id)));
    }

    /// Sends PUBCOMP for `id`.
    pub(crate) fn pubcomp(&self, id: PacketId) {
        self.send(Packet::PubComp(PubResponse::success(id)));
    }

    // ---- receiving ------------------------------------------------------------------------

    /// Takes every PUBLISH from the inbox without acknowledging it, leaving other packets.
    pub(crate) fn take_publishes(&self) -> Vec<Publish> {
        let mut w = self.world.borrow_mut();
        let inbox = &mut w.conn(self.conn).inbox;
        let mut out = Vec::new();
        inbox.retain(|p| match p {
            Packet::Publish(p) => {
                out.push(p.clone());
                false
            }
            _ => true,
        });
        out
    }

    /// Every application message delivered so far, in order, each acknowledged as a
    /// well-behaved client would (PUBACK; PUBREC, then PUBCOMP for the PUBREL that follows),
    /// including those that flow because an acknowledgement freed the inflight window.
    /// Other packets stay in the inbox.
    pub(crate) fn receive(&self) -> Vec<Publish> {
        let mut got = Vec::new();
        loop {
            let next = self.take_first(|p| matches!(p, Packet::Publish(_) | Packet::PubRel(_)));
            match next {
                Some(Packet::Publish(p)) => {
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => self.puback(id),
                        (QoS::ExactlyOnce, Some(id)) => self.pubrec(id),
                        _ => {}
                    }
                    got.push(p);
                }
                Some(Packet::PubRel(r)) => self.pubcomp(r.packet_id),
                _ => return got,
            }
        }
    }

    /// The payloads of [`Client::receive`], as text.
    pub(crate) fn receive_payloads(&self) -> Vec<String> {
        self.receive().iter().map(text).collect()
    }

    // ---- subscriptions and the rest -------------------------------------------------------

    /// Subscribes to one filter; returns the SUBACK reason code.
    #[track_caller]
    pub(crate) fn subscribe(&self, filter: &str, qos: QoS) -> ReasonCode {
        self.subscribe_with(filter, opts(qos), None)
    }

    /// Subscribes to one filter with `options` and an optional Subscription Identifier.
    #[track_caller]
    pub(crate) fn subscribe_with(
        &self,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> ReasonCode {
        let codes = self.subscribe_many(&[(filter, options)], identifier);
        assert_eq!(codes.len(), 1, "[MQTT-3.8.4-6] one reason code per filter");
        codes[0]
    }

    /// One SUBSCRIBE with several filters; returns the SUBACK reason codes, asserting the
    /// SUBACK carries the SUBSCRIBE's packet id ([MQTT-3.8.4-1]).
    #[track_caller]
    pub(crate) fn subscribe_many(
        &self,
        filters: &[(&str, SubscriptionOptions)],
        identifier: Option<u32>,
    ) -> Vec<ReasonCode> {
        let id = self.next_packet_id();
        self.send(Packet::Subscribe(Subscribe {
            packet_id: id,
            filters: filters
                .iter()
                .map(|(f, o)| SubscribeFilter {
                    filter: utf8(f),
                    options: *o,
                })
                .collect(),
            properties: SubscribeProperties {
                subscription_identifier: identifier,
                user_properties: Vec::new(),
            },
        }));
        self.expect_ack("SUBACK", |p| match p {
            Packet::SubAck(s) if s.packet_id == id => Some(s.reason_codes.clone()),
            _ => None,
        })
    }

    /// Unsubscribes; returns the UNSUBACK reason codes (empty for 3.1.1).
    #[track_caller]
    pub(crate) fn unsubscribe(&self, filters: &[&str]) -> Vec<ReasonCode> {
        let id = self.next_packet_id();
        self.send(Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            filters: filters.iter().map(|f| utf8(f)).collect(),
            properties: UnsubscribeProperties::default(),
        }));
        self.expect_ack("UNSUBACK", |p| match p {
            Packet::UnsubAck(u) if u.packet_id == id => Some(u.reason_codes.clone()),
            _ => None,
        })
    }

    /// Sends PINGREQ and takes the PINGRESP.
    #[track_caller]
    pub(crate) fn ping(&self) {
        self.send(Packet::PingReq);
        self.expect_ack("PINGRESP", |p| matches!(p, Packet::PingResp).then_some(()));
    }
}

/// A DISCONNECT with a Session Expiry Interval.
pub(crate) fn disconnect_with_expiry(reason: ReasonCode, expiry: u32) -> Disconnect {
    Disconnect {
        reason_code: reason,
        properties: DisconnectProperties {
            session_expiry_interval: Some(expiry),
            ..DisconnectProperties::default()
        },
    }
}
