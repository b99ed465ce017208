//! Shared by the `persistence_*` suites: a gateway whose store outlives its process (so it can
//! be killed with SIGKILL and started again on the same `data_dir`), and raw MQTT peers that
//! keep their client-side QoS state across reconnects, as a real client library must for
//! exactly-once delivery.
//!
//! The process is the real `tidegate` binary started by [`common::Broker`] with a config whose
//! `data_dir` is an absolute path in this module's own temporary directory; dropping the
//! `common::Broker` kills it with SIGKILL (`Child::kill`). Writes use `send_lossy`: a write
//! into a killed gateway fails, which is the point, and the flow stays open for the resend.
#![allow(dead_code)]

use crate::common::raw::{self, ConnectOpts, Next, Raw, Version, kind};
use crate::common::{self, Broker};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// A gateway on a store that survives restarts.
pub(crate) struct Gateway {
    data: tempfile::TempDir,
    extra: String,
    broker: Option<Broker>,
}

impl Gateway {
    /// Starts a gateway with `extra` TOML (top-level keys and sections) besides `data_dir`.
    pub(crate) fn start(extra: &str) -> Gateway {
        let mut g = Gateway {
            data: tempfile::tempdir().expect("tempdir"),
            extra: extra.to_owned(),
            broker: None,
        };
        g.restart();
        g
    }

    /// The config file the gateway runs with.
    pub(crate) fn config(&self) -> String {
        format!(
            "data_dir = \"{}\"\n{}",
            self.data_dir().display(),
            self.extra
        )
    }

    /// The `data_dir`.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// The running process.
    pub(crate) fn broker(&self) -> &Broker {
        self.broker.as_ref().expect("the gateway is running")
    }

    /// Kills the process with SIGKILL, if it runs.
    pub(crate) fn kill(&mut self) {
        // `common::Broker` kills with SIGKILL on drop and waits for the process.
        self.broker = None;
    }

    /// Kills the process (if running) and starts a new one on the same store.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.broker = Some(Broker::with_config(&self.config()));
    }
}

/// What a publisher knows about its messages: the client side of QoS 1 and 2.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    /// Client id.
    pub(crate) id: String,
    /// Protocol version.
    pub(crate) version: Option<Version>,
    next_seq: u64,
    next_pid: u16,
    /// QoS 1 sent, PUBACK awaited: packet id → sequence.
    unacked1: BTreeMap<u16, u64>,
    /// QoS 2 sent, PUBREC awaited.
    unrec2: BTreeMap<u16, u64>,
    /// QoS 2 PUBREC received, PUBREL sent, PUBCOMP awaited.
    uncomp2: BTreeMap<u16, u64>,
    /// Sequences acknowledged by the gateway (PUBACK, or PUBREC for QoS 2), per QoS.
    pub(crate) acked: BTreeMap<u8, BTreeSet<u64>>,
}

/// The payload of message `seq` of publisher `id` at `qos`.
pub(crate) fn payload(id: &str, qos: u8, seq: u64) -> Vec<u8> {
    format!("{id}:{qos}:{seq}").into_bytes()
}

/// Parses [`payload`].
pub(crate) fn parse(payload: &[u8]) -> (String, u8, u64) {
    let text = String::from_utf8_lossy(payload);
    let mut parts = text.rsplitn(3, ':');
    let seq = parts.next().and_then(|s| s.parse().ok()).expect("seq");
    let qos = parts.next().and_then(|s| s.parse().ok()).expect("qos");
    let id = parts.next().expect("publisher").to_owned();
    (id, qos, seq)
}

impl Publisher {
    /// A publisher named `id`.
    pub(crate) fn new(id: &str, version: Version) -> Publisher {
        Publisher {
            id: id.to_owned(),
            version: Some(version),
            next_pid: 1,
            ..Publisher::default()
        }
    }

    fn version(&self) -> Version {
        self.version.unwrap_or(Version::V5)
    }

    /// Flows not finished.
    pub(crate) fn in_flight(&self) -> usize {
        self.unacked1.len() + self.unrec2.len() + self.uncomp2.len()
    }

    /// Connects (resuming the session after the first time) and resends what the session
    /// still owes, in the original order: PUBLISH with DUP for unacknowledged ones, PUBREL for
    /// those past PUBREC [MQTT-4.4.0-1].
    pub(crate) async fn connect(&mut self, broker: &Broker, first: bool) -> Raw {
        let opts = ConnectOpts::persistent(self.version(), &self.id, first);
        let (mut raw, present) = Raw::connect(broker, &opts).await;
        assert_eq!(
            present, !first,
            "{}: session present after a restart",
            self.id
        );
        let mut resend: Vec<(u64, Vec<u8>)> = Vec::new();
        for (&pid, &seq) in &self.unacked1 {
            let p = raw::publish(
                self.version(),
                1,
                true,
                false,
                b"k/1",
                pid,
                &payload(&self.id, 1, seq),
            );
            resend.push((seq * 2, p));
        }
        for (&pid, &seq) in &self.unrec2 {
            let p = raw::publish(
                self.version(),
                2,
                true,
                false,
                b"k/2",
                pid,
                &payload(&self.id, 2, seq),
            );
            resend.push((seq * 2 + 1, p));
        }
        for (&pid, &seq) in &self.uncomp2 {
            resend.push((seq * 2 + 1, raw::pubrel(pid)));
        }
        resend.sort_by_key(|(order, _)| *order);
        for (_, bytes) in resend {
            raw.send_lossy(&bytes).await;
        }
        raw
    }

    fn pid(&mut self) -> u16 {
        loop {
            let pid = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            let used = self.unacked1.contains_key(&pid)
                || self.unrec2.contains_key(&pid)
                || self.uncomp2.contains_key(&pid);
            if !used {
                return pid;
            }
        }
    }

    /// Sends the next message, alternating QoS 1 and 2 (one sequence per message).
    pub(crate) async fn send_next(&mut self, raw: &mut Raw) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let qos = if seq.is_multiple_of(2) { 1 } else { 2 };
        let pid = self.pid();
        let topic: &[u8] = if qos == 1 { b"k/1" } else { b"k/2" };
        if qos == 1 {
            self.unacked1.insert(pid, seq);
        } else {
            self.unrec2.insert(pid, seq);
        }
        raw.send_lossy(&raw::publish(
            self.version(),
            qos,
            false,
            false,
            topic,
            pid,
            &payload(&self.id, qos, seq),
        ))
        .await;
    }

    /// Handles one packet from the gateway.
    pub(crate) async fn on_packet(&mut self, raw: &mut Raw, frame: &raw::Frame) {
        match frame.kind() {
            kind::PUBACK => {
                if let Some(seq) = self.unacked1.remove(&frame.pid()) {
                    assert_eq!(frame.ack_reason(), 0, "PUBACK {frame:?}");
                    self.acked.entry(1).or_default().insert(seq);
                }
            }
            kind::PUBREC => {
                let pid = frame.pid();
                if let Some(seq) = self.unrec2.remove(&pid) {
                    assert_eq!(frame.ack_reason(), 0, "PUBREC {frame:?}");
                    self.acked.entry(2).or_default().insert(seq);
                    self.uncomp2.insert(pid, seq);
                }
                if self.uncomp2.contains_key(&pid) {
                    raw.send_lossy(&raw::pubrel(pid)).await;
                }
            }
            kind::PUBCOMP => {
                self.uncomp2.remove(&frame.pid());
            }
            _ => {}
        }
    }

    /// Publishes with at most `window` flows open until the connection ends (a kill) or
    /// `count` messages were sent; returns when the connection is gone or everything sent is
    /// complete.
    pub(crate) async fn run(&mut self, raw: &mut Raw, count: u64, window: usize) {
        let stop_at = self.next_seq + count;
        loop {
            while self.next_seq < stop_at && self.in_flight() < window {
                self.send_next(raw).await;
            }
            if self.next_seq >= stop_at && self.in_flight() == 0 {
                return;
            }
            match raw.next(common::RECV_TIMEOUT).await {
                Next::Frame(frame) => self.on_packet(raw, &frame).await,
                Next::Closed | Next::Quiet => return,
            }
        }
    }
}

/// A subscriber: the client side of QoS 1 and 2 deliveries, with the inbound QoS 2 ids it
/// keeps across reconnects so a resent PUBLISH is not delivered twice [MQTT-4.3.3-10].
#[derive(Debug, Default)]
pub(crate) struct Subscriber {
    /// Client id.
    pub(crate) id: String,
    /// Protocol version.
    pub(crate) version: Option<Version>,
    /// QoS 2 ids received and not yet released.
    inbound2: BTreeSet<u16>,
    /// Every message delivered to the application, in order: (publisher, qos, seq).
    pub(crate) delivered: Vec<(String, u8, u64)>,
}

impl Subscriber {
    /// A subscriber named `id`.
    pub(crate) fn new(id: &str, version: Version) -> Subscriber {
        Subscriber {
            id: id.to_owned(),
            version: Some(version),
            ..Subscriber::default()
        }
    }

    /// Connects (resuming after the first time) and, the first time, subscribes to `k/#` at
    /// QoS 2.
    pub(crate) async fn connect(&mut self, broker: &Broker, first: bool) -> Raw {
        let version = self.version.unwrap_or(Version::V5);
        let opts = ConnectOpts::persistent(version, &self.id, first);
        let (mut raw, present) = Raw::connect(broker, &opts).await;
        assert_eq!(
            present, !first,
            "{}: session present after a restart",
            self.id
        );
        if first {
            raw::subscribe_ok(&mut raw, 1, "k/#", 2).await;
        }
        raw
    }

    /// Handles deliveries until the connection ends or nothing comes for `quiet`.
    pub(crate) async fn run(&mut self, raw: &mut Raw, quiet: Duration) {
        loop {
            match raw.next(quiet).await {
                Next::Frame(frame) if frame.kind() == kind::PUBLISH => {
                    let p = frame.publish(raw.version);
                    match p.qos {
                        1 => {
                            self.delivered.push(parse(&p.payload));
                            raw.send_lossy(&raw::puback(p.pid)).await;
                        }
                        2 => {
                            if self.inbound2.insert(p.pid) {
                                self.delivered.push(parse(&p.payload));
                            }
                            raw.send_lossy(&raw::pubrec(p.pid)).await;
                        }
                        _ => self.delivered.push(parse(&p.payload)),
                    }
                }
                Next::Frame(frame) if frame.kind() == kind::PUBREL => {
                    self.inbound2.remove(&frame.pid());
                    raw.send_lossy(&raw::pubcomp(frame.pid())).await;
                }
                Next::Frame(_) => {}
                Next::Closed | Next::Quiet => return,
            }
        }
    }

    /// Checks what was delivered against what `publisher` had acknowledged: every QoS 1
    /// message at least once, every QoS 2 message exactly once (and no QoS 2 message twice,
    /// acknowledged or not), and first deliveries in publishing order per QoS.
    pub(crate) fn check(&self, publisher: &Publisher) {
        let mine: Vec<(u8, u64)> = self
            .delivered
            .iter()
            .filter(|(p, _, _)| *p == publisher.id)
            .map(|(_, q, s)| (*q, *s))
            .collect();
        for qos in [1u8, 2] {
            let got: Vec<u64> = mine
                .iter()
                .filter(|(q, _)| *q == qos)
                .map(|(_, s)| *s)
                .collect();
            let mut seen = BTreeSet::new();
            let mut firsts = Vec::new();
            for s in &got {
                if seen.insert(*s) {
                    firsts.push(*s);
                } else {
                    assert_ne!(qos, 2, "{}: QoS 2 message {s} delivered twice", self.id);
                }
            }
            let mut sorted = firsts.clone();
            sorted.sort_unstable();
            assert_eq!(firsts, sorted, "{}: QoS {qos} order per publisher", self.id);
            let acked = publisher.acked.get(&qos).cloned().unwrap_or_default();
            let missing: Vec<&u64> = acked.difference(&seen).collect();
            assert!(
                missing.is_empty(),
                "{}: acknowledged QoS {qos} messages never delivered: {missing:?}",
                self.id
            );
        }
    }
}

/// A small deterministic generator (xorshift) for kill points; the seed is printed so a
/// failing run can be repeated with `TIDEGATE_KILL_SEED`.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from `TIDEGATE_KILL_SEED` or the clock.
    pub(crate) fn from_env() -> Rng {
        let seed = std::env::var("TIDEGATE_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("kill points seeded with TIDEGATE_KILL_SEED={seed}");
        Rng(seed)
    }

    /// A number in `lo..hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo).max(1)
    }
}
