//! Counters of what the IO shell did on its own authority: sockets refused over a connection
//! limit or the accept rate, failed transport handshakes by step, WebSocket protocol errors,
//! QoS 0 messages dropped for a full outbound queue, slow consumers disconnected, CONNECTs
//! refused by authentication (per tenant and reason) and by the brute-force limiter, readers
//! slowed by a tenant's byte rates and packets over a tenant's size limit (per tenant).
//!
//! Place in the data flow: written by the listeners and the engine task, read by tests and
//! (later) the admin API. Relaxed atomics: each counter is independent and only ever grows.

use crate::transport::HandshakeFailure;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How often and how long the readers of one tenant waited for one kind of byte bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttled {
    /// Read batches that had to wait (each counted once, however many waits it took).
    pub pauses: u64,
    /// The waits added up.
    pub waited: Duration,
}

/// Server-wide counters, shared by every task.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    refused: AtomicU64,
    rate_limited: AtomicU64,
    proxy_failures: AtomicU64,
    tls_failures: AtomicU64,
    websocket_failures: AtomicU64,
    handshake_timeouts: AtomicU64,
    websocket_errors: AtomicU64,
    qos0_dropped: AtomicU64,
    slow_consumers: AtomicU64,
    /// Refused authentications by (tenant, reason). A lock, not atomics: the keys are only
    /// known at run time, and a refusal already cost a password check or an HTTP call.
    auth_failures: Mutex<BTreeMap<(String, &'static str), u64>>,
    auth_rate_limited: AtomicU64,
    /// Reader pauses by (tenant, scope): like `auth_failures`, keyed at run time, and taken
    /// at most once per paused read batch.
    throttled: Mutex<BTreeMap<(String, &'static str), Throttled>>,
    /// Packets over a tenant's `max_packet_size`, by tenant.
    packets_too_large: Mutex<BTreeMap<String, u64>>,
    /// Totals of every connection's [`crate::outbox::Traffic`].
    traffic: crate::outbox::Traffic,
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

    /// Sockets closed right after accept because the listener's `max_accept_rate` was
    /// exceeded (also counted in [`Stats::connections_refused`]).
    pub fn connections_rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Connections closed because their PROXY protocol header was missing or malformed.
    pub fn proxy_header_failures(&self) -> u64 {
        self.proxy_failures.load(Ordering::Relaxed)
    }

    /// Failed TLS handshakes: no or an invalid client certificate, plaintext on a TLS port,
    /// no common protocol version or ALPN, ...
    pub fn tls_handshake_failures(&self) -> u64 {
        self.tls_failures.load(Ordering::Relaxed)
    }

    /// Refused WebSocket upgrades: an HTTP request without Upgrade, another path, a bad key.
    pub fn websocket_upgrade_failures(&self) -> u64 {
        self.websocket_failures.load(Ordering::Relaxed)
    }

    /// Connections whose transport handshake did not finish within `handshake_timeout_ms`.
    pub fn handshake_timeouts(&self) -> u64 {
        self.handshake_timeouts.load(Ordering::Relaxed)
    }

    /// WebSocket connections closed for a frame MQTT does not allow (a text frame, an unmasked
    /// frame, ...).
    pub fn websocket_protocol_errors(&self) -> u64 {
        self.websocket_errors.load(Ordering::Relaxed)
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

    /// Returns the new total of refusals, like [`Stats::count_refused`].
    pub(crate) fn count_rate_limited(&self) -> u64 {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        self.count_refused()
    }

    pub(crate) fn count_handshake_failure(&self, failure: HandshakeFailure) {
        let counter = match failure {
            HandshakeFailure::Proxy => &self.proxy_failures,
            HandshakeFailure::Tls => &self.tls_failures,
            HandshakeFailure::WebSocket => &self.websocket_failures,
            HandshakeFailure::Timeout => &self.handshake_timeouts,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_websocket_error(&self) {
        self.websocket_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_qos0_dropped(&self) {
        self.qos0_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// MQTT bytes and PUBLISH packets of every connection so far: (bytes in, bytes out,
    /// messages in, messages out).
    pub fn traffic(&self) -> (u64, u64, u64, u64) {
        self.traffic.read()
    }

    /// The totals every connection task adds its read and write batches to.
    pub(crate) fn total_traffic(&self) -> &crate::outbox::Traffic {
        &self.traffic
    }

    /// CONNECTs refused by authentication, by (tenant, reason); the tenant is `""` when none
    /// could be determined. Reasons are snake_case names of the refusal, e.g. `bad_password`, `hook_unavailable`.
    pub fn auth_failures(&self) -> BTreeMap<(String, &'static str), u64> {
        self.auth_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// CONNECTs refused without a check because their source address is blocked after too
    /// many failed authentications (CONNACK 0x8A).
    pub fn auth_rate_limited(&self) -> u64 {
        self.auth_rate_limited.load(Ordering::Relaxed)
    }

    pub(crate) fn count_auth_failure(&self, tenant: &str, reason: &'static str) {
        let mut failures = self
            .auth_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match failures.get_mut(&(tenant.to_owned(), reason)) {
            Some(n) => *n += 1,
            None => {
                failures.insert((tenant.to_owned(), reason), 1);
            }
        }
    }

    pub(crate) fn count_auth_rate_limited(&self) {
        self.auth_rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Reader pauses for the byte rates of tenants, by (tenant, scope); the scope is `client`
    /// (`max_inbound_bytes_per_sec`) or `tenant` (`tenant_bytes_per_sec`).
    pub fn tenant_throttling(&self) -> BTreeMap<(String, &'static str), Throttled> {
        self.throttled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connections closed for a packet over their tenant's `max_packet_size` (when it is below
    /// the gateway's `limits.max_packet_size`), by tenant.
    pub fn tenant_packets_too_large(&self) -> BTreeMap<String, u64> {
        self.packets_too_large
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds one wait of a reader of `tenant`; `first` when it starts the pause of a batch.
    pub(crate) fn count_throttled(
        &self,
        tenant: &str,
        scope: &'static str,
        wait: Duration,
        first: bool,
    ) {
        let mut throttled = self
            .throttled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (tenant.to_owned(), scope);
        let entry = throttled.entry(key).or_default();
        entry.pauses += u64::from(first);
        entry.waited = entry.waited.saturating_add(wait);
    }

    pub(crate) fn count_packet_too_large(&self, tenant: &str) {
        let mut counts = self
            .packets_too_large
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *counts.entry(tenant.to_owned()).or_default() += 1;
    }

    pub(crate) fn count_slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }
}
