//! [`Stats`]: counters and gauges of the engine, read by the server through
//! [`Broker::stats`](super::Broker::stats) to expose them as metrics.
//!
//! Counters are bumped on the hot path (plain integer adds, no atomics: the broker has one
//! owner); gauges are computed when read, so they can never drift from the state they count.

use std::collections::BTreeMap;
use std::time::Duration;
use tidegate_protocol::QoS;

/// Upper bounds, in microseconds, of the publish-to-deliver latency buckets (a last bucket
/// without bound follows): from 0.1 ms on loopback to 10 s for a message that waited in a queue.
pub const LATENCY_BUCKETS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// A fixed-bucket histogram of publish-to-deliver latency: from the moment the gateway accepted
/// a message to the moment its PUBLISH to a subscriber left the engine for the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations per bucket: `counts[i]` for bucket `i` of [`LATENCY_BUCKETS_US`], the last
    /// one for anything above the largest bound (not cumulative).
    pub counts: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of every observation, microseconds.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl LatencyHistogram {
    pub(super) fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += 1;
        }
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }
}

/// Who ended a connection, for the disconnect counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DisconnectSide {
    /// The client sent DISCONNECT (with its reason code).
    Client,
    /// The gateway closed it (protocol error, keep-alive timeout, takeover, shutdown,
    /// administrative action), with the reason it gave or would give in MQTT 5.
    Server,
    /// The socket ended without DISCONNECT (reason byte 0: none).
    Socket,
}

impl DisconnectSide {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectSide::Client => "client",
            DisconnectSide::Server => "server",
            DisconnectSide::Socket => "socket",
        }
    }
}

/// Connection outcomes by MQTT reason code, since the broker was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasonCounts {
    /// CONNACKs by reason code byte (0x00: accepted).
    pub connack: BTreeMap<u8, u64>,
    /// Ended connections by side and reason code byte.
    pub disconnect: BTreeMap<(DisconnectSide, u8), u64>,
}

/// Message counts split by QoS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QosCounts {
    /// QoS 0.
    pub qos0: u64,
    /// QoS 1.
    pub qos1: u64,
    /// QoS 2.
    pub qos2: u64,
}

impl QosCounts {
    pub(super) fn add(&mut self, qos: QoS) {
        match qos {
            QoS::AtMostOnce => self.qos0 += 1,
            QoS::AtLeastOnce => self.qos1 += 1,
            QoS::ExactlyOnce => self.qos2 += 1,
        }
    }

    /// Sum over all levels.
    pub fn total(&self) -> u64 {
        self.qos0 + self.qos1 + self.qos2
    }
}

/// A snapshot of the engine's metrics. Gauges are current values; counters count since the
/// broker was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections past CONNACK (gauge).
    pub connections: usize,
    /// Sockets open and waiting for CONNECT (gauge).
    pub pending_connections: usize,
    /// Sessions held, online or not (gauge).
    pub sessions: usize,
    /// Subscriptions held, shared memberships included (gauge).
    pub subscriptions: usize,
    /// Retained messages held (gauge).
    pub retained: usize,
    /// Messages queued in sessions, the ones held only by the store included (gauge).
    pub queued_messages: usize,
    /// Queued messages held in memory (gauge): with persistence, offline sessions hold none.
    pub queued_in_memory: usize,
    /// Application messages accepted from publishers and wills, by published QoS.
    pub messages_in: QosCounts,
    /// PUBLISH packets sent to subscribers (resends not counted), by delivery QoS.
    pub messages_out: QosCounts,
    /// Deliveries dropped because a session queue was full.
    pub dropped_queue_full: u64,
    /// Deliveries dropped because the PUBLISH exceeded the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Deliveries dropped because the message expired before it could be sent.
    pub dropped_expired: u64,
    /// Accepted messages no subscription matched.
    pub dropped_no_subscribers: u64,
    /// Publications refused: `$SYS/` topics, invalid UTF-8 payloads, a full retained store.
    pub refused_publishes: u64,
    /// Connections closed for a protocol violation or a decode error.
    pub protocol_errors: u64,
    /// Store batches that could not be written (full disk, IO error).
    pub store_failures: u64,
    /// Publish-to-deliver latency of the PUBLISH packets counted in `messages_out` (those of
    /// messages restored from the store excluded).
    pub delivery_latency: LatencyHistogram,
}
