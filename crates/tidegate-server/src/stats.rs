//! Counters of what the IO shell did on its own authority: sockets refused over a connection
//! limit, QoS 0 messages dropped for a full outbound queue, slow consumers disconnected.
//!
//! Place in the data flow: written by the listeners and the engine task, read by tests and
//! (later) the admin API. Relaxed atomics: each counter is independent and only ever grows.

use std::sync::atomic::{AtomicU64, Ordering};

/// Server-wide counters, shared by every task.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    refused: AtomicU64,
    qos0_dropped: AtomicU64,
    slow_consumers: AtomicU64,
}

impl Stats {
    /// Sockets accepted and handed to a connection task.
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Sockets closed right after accept because a connection limit was reached.
    pub fn connections_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// QoS 0 PUBLISH packets dropped because the receiver's outbound queue was full.
    pub fn qos0_dropped(&self) -> u64 {
        self.qos0_dropped.load(Ordering::Relaxed)
    }

    /// Connections closed because their outbound queue was full of packets that cannot be
    /// dropped.
    pub fn slow_consumers_disconnected(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    pub(crate) fn count_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the new total, so the caller can throttle its log line.
    pub(crate) fn count_refused(&self) -> u64 {
        self.refused.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn count_qos0_dropped(&self) {
        self.qos0_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }
}
