//! Test driver for the unit tests of the broker submodules: one [`Broker`], a simulated clock,
//! and per-connection inboxes filled from `poll_output` after every call, as the IO shell would.

use super::{Broker, ConnId, ConnInfo, Output};
use crate::BrokerConfig;
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use tidegate_protocol::{
    ConnAck, Connect, ConnectProperties, Disconnect, Packet, PacketId, ProtocolVersion,
    PubResponse, Publish, PublishProperties, QoS, ReasonCode, Subscribe, SubscribeFilter,
    SubscribeProperties, SubscriptionOptions, Utf8, Will, WillProperties,
};

pub(super) struct H {
    pub(super) b: Broker,
    pub(super) now: Instant,
    next_conn: u64,
    inbox: HashMap<ConnId, VecDeque<Packet>>,
    closed: HashSet<ConnId>,
    /// Durable broker: report every store batch written as soon as it is taken, and record
    /// its operations in `ops`.
    pub(super) auto_commit: bool,
    /// Operations of the batches committed so far (durable brokers).
    pub(super) ops: Vec<tidegate_store::StoreOp>,
    /// Where committed batches are applied (durable brokers).
    pub(super) store: tidegate_store::MemoryStore,
    /// API confirmations (`Output::Committed`) seen so far: (token, durable).
    pub(super) committed: Vec<(u64, bool)>,
}

impl H {
    pub(super) fn new() -> H {
        H::with(BrokerConfig::default())
    }

    pub(super) fn with(config: BrokerConfig) -> H {
        H {
            b: Broker::new(config),
            now: Instant::now(),
            next_conn: 1,
            inbox: HashMap::new(),
            closed: HashSet::new(),
            auto_commit: false,
            ops: Vec::new(),
            store: tidegate_store::MemoryStore::new(),
            committed: Vec::new(),
        }
    }

    /// A durable broker (over an empty store) whose batches are reported written as soon as
    /// they are taken; with `auto_commit` off the test does it with [`H::commit`], and
    /// outputs waiting for a batch stay out of the inboxes until then.
    pub(super) fn durable(config: BrokerConfig) -> H {
        let now = Instant::now();
        let (b, _) = Broker::restore(
            config,
            now,
            std::time::SystemTime::now(),
            Default::default(),
        );
        H {
            b,
            now,
            next_conn: 1,
            inbox: HashMap::new(),
            closed: HashSet::new(),
            auto_commit: true,
            ops: Vec::new(),
            store: tidegate_store::MemoryStore::new(),
            committed: Vec::new(),
        }
    }

    /// Takes the pending store batch, reports it written, and delivers what it held.
    pub(super) fn commit(&mut self) -> Vec<tidegate_store::StoreOp> {
        let Some(batch) = self.b.take_store_batch() else {
            self.drain();
            return Vec::new();
        };
        let loaded = tidegate_store::Store::apply(
            &mut self.store,
            &batch.ops,
            tidegate_store::Durability::Synced,
        )
        .expect("memory store");
        self.b.handle_store_committed(self.now, batch.id, loaded);
        self.ops.extend(batch.ops.iter().cloned());
        self.drain();
        batch.ops
    }

    pub(super) fn pump(&mut self) {
        self.drain();
        while self.auto_commit && !self.commit().is_empty() {}
    }

    fn drain(&mut self) {
        while let Some(o) = self.b.poll_output() {
            match o {
                Output::Send { conn, packet } => {
                    assert!(
                        !self.closed.contains(&conn),
                        "send after close on {conn:?}: {packet:?}"
                    );
                    self.inbox.entry(conn).or_default().push_back(packet);
                }
                Output::Close { conn } => {
                    assert!(self.closed.insert(conn), "double close of {conn:?}");
                }
                Output::Committed { token, durable } => self.committed.push((token, durable)),
            }
        }
    }

    pub(super) fn open(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.b.handle_open(self.now, conn, ConnInfo::default());
        self.pump();
        conn
    }

    /// Opens a connection, sends `c`, and returns the connection with its CONNACK.
    pub(super) fn connect(&mut self, c: Connect) -> (ConnId, ConnAck) {
        let conn = self.open();
        self.send(conn, Packet::Connect(Box::new(c)));
        // Keep what follows the CONNACK (resends of a resumed session) in the inbox.
        match self.inbox.get_mut(&conn).and_then(VecDeque::pop_front) {
            Some(Packet::ConnAck(a)) => (conn, a),
            other => panic!("expected CONNACK first, got {other:?}"),
        }
    }

    /// Connects and asserts success.
    pub(super) fn join(&mut self, c: Connect) -> ConnId {
        let (conn, ack) = self.connect(c);
        assert_eq!(ack.reason_code, ReasonCode::Success);
        conn
    }

    pub(super) fn send(&mut self, conn: ConnId, p: Packet) {
        self.b.handle_packet(self.now, conn, p);
        self.pump();
    }

    /// The socket went away without DISCONNECT.
    pub(super) fn drop_conn(&mut self, conn: ConnId) {
        self.b.handle_closed(self.now, conn);
        self.closed.insert(conn);
        self.pump();
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.b.handle_timeout(self.now);
        self.pump();
    }

    /// Everything sent to `conn` since the last call.
    pub(super) fn take(&mut self, conn: ConnId) -> Vec<Packet> {
        self.pump();
        self.inbox
            .get_mut(&conn)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default()
    }

    /// The PUBLISH packets sent to `conn` since the last call; panics on any other packet.
    pub(super) fn publishes(&mut self, conn: ConnId) -> Vec<Publish> {
        self.take(conn)
            .into_iter()
            .map(|p| match p {
                Packet::Publish(p) => p,
                other => panic!("expected only PUBLISH, got {other:?}"),
            })
            .collect()
    }

    pub(super) fn is_closed(&mut self, conn: ConnId) -> bool {
        self.pump();
        self.closed.contains(&conn)
    }

    /// Subscribes `conn` to `filter` and returns the SUBACK code, keeping any retained replay
    /// in the inbox.
    pub(super) fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) -> ReasonCode {
        self.subscribe_with(conn, filter, opts(qos), None)
    }

    pub(super) fn subscribe_with(
        &mut self,
        conn: ConnId,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> ReasonCode {
        self.send(conn, subscribe(1, &[(filter, options)], identifier));
        let mut packets = self.take(conn);
        assert!(!packets.is_empty(), "no SUBACK");
        let first = packets.remove(0);
        let Packet::SubAck(ack) = first else {
            panic!("expected SUBACK, got {first:?}");
        };
        self.inbox.entry(conn).or_default().extend(packets);
        ack.reason_codes[0]
    }
}

pub(super) fn utf8(s: &str) -> Utf8 {
    Utf8::try_from(s).unwrap()
}

pub(super) fn pid(v: u16) -> PacketId {
    PacketId::new(v).unwrap()
}

pub(super) fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

pub(super) fn v5(client_id: &str) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: utf8(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

pub(super) fn v3(client_id: &str) -> Connect {
    Connect {
        protocol: ProtocolVersion::V311,
        ..v5(client_id)
    }
}

/// A v5 CONNECT that resumes (or creates) a session kept for 300 s.
pub(super) fn v5_persistent(client_id: &str, clean_start: bool) -> Connect {
    let mut c = v5(client_id);
    c.clean_start = clean_start;
    c.properties.session_expiry_interval = Some(300);
    c
}

pub(super) fn will(topic: &str, payload: &'static str, delay: Option<u32>) -> Will {
    Will {
        topic: utf8(topic),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..WillProperties::default()
        },
    }
}

pub(super) fn publish(topic: &str, qos: QoS, id: u16, payload: &'static str) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: utf8(topic),
        packet_id: if qos == QoS::AtMostOnce {
            None
        } else {
            Some(pid(id))
        },
        payload: Bytes::from_static(payload.as_bytes()),
        properties: PublishProperties::default(),
    }
}

pub(super) fn retained(topic: &str, qos: QoS, id: u16, payload: &'static str) -> Packet {
    Packet::Publish(Publish {
        retain: true,
        ..publish(topic, qos, id, payload)
    })
}

pub(super) fn subscribe(
    id: u16,
    filters: &[(&str, SubscriptionOptions)],
    identifier: Option<u32>,
) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|(f, o)| SubscribeFilter {
                filter: utf8(f),
                options: *o,
            })
            .collect(),
        properties: SubscribeProperties {
            subscription_identifier: identifier,
            ..SubscribeProperties::default()
        },
    })
}

pub(super) fn puback(id: u16) -> Packet {
    Packet::PubAck(PubResponse::success(pid(id)))
}

pub(super) fn pubrec(id: u16) -> Packet {
    Packet::PubRec(PubResponse::success(pid(id)))
}

pub(super) fn pubrel(id: u16) -> Packet {
    Packet::PubRel(PubResponse::success(pid(id)))
}

pub(super) fn pubcomp(id: u16) -> Packet {
    Packet::PubComp(PubResponse::success(pid(id)))
}

pub(super) fn disconnect(reason: ReasonCode) -> Packet {
    Packet::Disconnect(Disconnect::with_reason(reason))
}

pub(super) fn payloads(ps: &[Publish]) -> Vec<&[u8]> {
    ps.iter().map(|p| &p.payload[..]).collect()
}
