//! [`Stats`]: counters and gauges of the engine, read by the server through
//! [`Broker::stats`](super::Broker::stats) to expose them as metrics.
//!
//! Counters are bumped on the hot path (plain integer adds, no atomics: the broker has one
//! owner); gauges are computed when read, so they can never drift from the state they count.

use tidegate_protocol::QoS;

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
}
