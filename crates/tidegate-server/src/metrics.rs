//! `GET /metrics`: the gateway's counters and gauges in the Prometheus text format (0.0.4).
//!
//! Place in the data flow: `HTTP /metrics -> GatewayHandle::metrics -> engine: Snapshot::of(broker)
//! -> render(snapshot, shell Stats)`. The broker's numbers are read in the engine task (one
//! consistent snapshot, gauges computed from the state itself); the shell's are atomics read
//! here. Written by hand: the format is a few lines per family, and a registry would only copy
//! numbers we already hold.
//!
//! Per tenant (issue 7): the `tidegate_tenant_*` families come from
//! [`Broker::tenant_stats`], one sample per tenant the broker has seen (a tenant stays listed
//! after its last client leaves, so its counters keep counting up). The gateway's own HTTP tap
//! lives in the default tenant and is not counted there, as it is not counted globally.
//! The reader quotas' families (`tidegate_tenant_throttled_*`,
//! `tidegate_tenant_packets_too_large_total`) are the connection tasks' own, read from [`Stats`]
//! and listed only for tenants that tripped them.

use crate::api::INTERNAL_LISTENER;
use crate::stats::Stats;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tidegate_core::{Broker, DisconnectSide, LATENCY_BUCKETS_US, ReasonCounts, TenantCounters};
use tidegate_protocol::{ProtocolVersion, ReasonCode};

/// What the metrics need from the broker, taken in the engine task.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Counters and gauges.
    pub(crate) broker: tidegate_core::Stats,
    /// CONNACK and disconnect reasons.
    pub(crate) reasons: ReasonCounts,
    /// Connected clients by (listener, protocol version).
    pub(crate) connections: BTreeMap<(String, &'static str), usize>,
    /// The gateway's own internal sessions (the HTTP stream tap), not clients.
    pub(crate) internal_connections: usize,
    /// Counters and gauges per tenant id (the internal sessions are not a tenant's).
    pub(crate) tenants: BTreeMap<Arc<str>, TenantCounters>,
}

impl Snapshot {
    /// Reads the broker.
    pub(crate) fn of(broker: &Broker) -> Snapshot {
        let mut connections = BTreeMap::new();
        let mut internal = 0;
        for v in broker.client_views() {
            if v.listener.starts_with(INTERNAL_LISTENER) {
                internal += 1;
                continue;
            }
            *connections
                .entry((v.listener.to_string(), protocol_label(v.version)))
                .or_insert(0) += 1;
        }
        Snapshot {
            broker: broker.stats(),
            reasons: broker.reason_counts().clone(),
            connections,
            internal_connections: internal,
            // The broker leaves the taps (`ConnInfo::internal`) out of their tenant's figures.
            tenants: broker.tenant_stats(),
        }
    }
}

fn protocol_label(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "5.0",
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V31 => "3.1",
    }
}

/// `reason` label: the code in hex and its name, e.g. `0x87_not_authorized`.
fn reason_label(code: u8) -> String {
    match ReasonCode::from_u8(code) {
        Some(r) => format!("0x{code:02x}_{}", snake(&format!("{r:?}"))),
        None => format!("0x{code:02x}"),
    }
}

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Builds the text exposition.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The whole exposition.
pub(crate) fn render(s: &Snapshot, shell: &Stats, uptime: Duration) -> String {
    let b = &s.broker;
    let mut e = Exposition {
        out: String::with_capacity(8192),
    };
    e.single(
        "tidegate_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        uptime.as_secs(),
    );

    e.family(
        "tidegate_connections",
        "gauge",
        "Connected MQTT clients (past CONNACK) by listener and protocol version.",
    );
    for ((listener, protocol), n) in &s.connections {
        e.sample(
            "tidegate_connections",
            &[("listener", listener), ("protocol", protocol)],
            n,
        );
    }
    e.single(
        "tidegate_connections_pending",
        "gauge",
        "Sockets open and waiting for CONNECT.",
        b.pending_connections,
    );
    e.family(
        "tidegate_connects_total",
        "counter",
        "CONNECT attempts answered, by CONNACK reason code (0x00 accepted).",
    );
    for (code, n) in &s.reasons.connack {
        e.sample(
            "tidegate_connects_total",
            &[("reason", &reason_label(*code))],
            n,
        );
    }
    e.family(
        "tidegate_disconnects_total",
        "counter",
        "Ended MQTT connections by who ended them and the reason code (socket: no DISCONNECT).",
    );
    for ((side, code), n) in &s.reasons.disconnect {
        let reason = match side {
            DisconnectSide::Socket => "none".to_owned(),
            _ => reason_label(*code),
        };
        e.sample(
            "tidegate_disconnects_total",
            &[("side", side.as_str()), ("reason", &reason)],
            n,
        );
    }
    e.single(
        "tidegate_sockets_accepted_total",
        "counter",
        "Sockets accepted by the MQTT listeners.",
        shell.connections_accepted(),
    );
    e.family(
        "tidegate_sockets_refused_total",
        "counter",
        "Sockets refused by the listeners' limits, by limit.",
    );
    let rate = shell.connections_rate_limited();
    e.sample(
        "tidegate_sockets_refused_total",
        &[("limit", "accept_rate")],
        rate,
    );
    e.sample(
        "tidegate_sockets_refused_total",
        &[("limit", "max_connections")],
        shell.connections_refused().saturating_sub(rate),
    );
    e.family(
        "tidegate_handshake_failures_total",
        "counter",
        "Failed transport handshakes by step.",
    );
    for (step, n) in [
        ("tls", shell.tls_handshake_failures()),
        ("proxy", shell.proxy_header_failures()),
        ("websocket", shell.websocket_upgrade_failures()),
        ("timeout", shell.handshake_timeouts()),
    ] {
        e.sample("tidegate_handshake_failures_total", &[("step", step)], n);
    }
    e.single(
        "tidegate_tls_handshake_failures_total",
        "counter",
        "Failed TLS handshakes (tls, wss and https listeners).",
        shell.tls_handshake_failures(),
    );

    let qos = |c: &tidegate_core::QosCounts| [("0", c.qos0), ("1", c.qos1), ("2", c.qos2)];
    e.family(
        "tidegate_messages_received_total",
        "counter",
        "Application messages accepted (MQTT and HTTP publishers, wills) by published QoS.",
    );
    for (q, n) in qos(&b.messages_in) {
        e.sample("tidegate_messages_received_total", &[("qos", q)], n);
    }
    e.family(
        "tidegate_messages_sent_total",
        "counter",
        "PUBLISH packets sent to subscribers (resends not counted) by delivery QoS.",
    );
    for (q, n) in qos(&b.messages_out) {
        e.sample("tidegate_messages_sent_total", &[("qos", q)], n);
    }
    let (bytes_in, bytes_out, _, _) = shell.traffic();
    e.single(
        "tidegate_bytes_received_total",
        "counter",
        "MQTT bytes decoded from clients (without TLS or WebSocket framing).",
        bytes_in,
    );
    e.single(
        "tidegate_bytes_sent_total",
        "counter",
        "MQTT bytes encoded for clients (without TLS or WebSocket framing).",
        bytes_out,
    );
    e.family(
        "tidegate_messages_dropped_total",
        "counter",
        "Messages or deliveries dropped, by reason.",
    );
    for (reason, n) in [
        ("queue_full", b.dropped_queue_full),
        ("too_large", b.dropped_too_large),
        ("expired", b.dropped_expired),
        ("no_subscribers", b.dropped_no_subscribers),
        ("outbound_queue_full_qos0", shell.qos0_dropped()),
        ("refused", b.refused_publishes),
    ] {
        e.sample("tidegate_messages_dropped_total", &[("reason", reason)], n);
    }
    e.single(
        "tidegate_slow_consumers_disconnected_total",
        "counter",
        "Connections closed because their outbound queue was full.",
        shell.slow_consumers_disconnected(),
    );
    e.single(
        "tidegate_protocol_errors_total",
        "counter",
        "Connections closed for a protocol violation or undecodable bytes.",
        b.protocol_errors,
    );
    e.family(
        "tidegate_auth_failures_total",
        "counter",
        "CONNECTs refused by authentication, by tenant (empty: none determined) and reason.",
    );
    for ((tenant, reason), n) in shell.auth_failures() {
        e.sample(
            "tidegate_auth_failures_total",
            &[("tenant", &tenant), ("reason", reason)],
            n,
        );
    }
    e.single(
        "tidegate_auth_rate_limited_total",
        "counter",
        "CONNECTs refused (0x8A) because their source failed to authenticate too often.",
        shell.auth_rate_limited(),
    );
    render_reader_quotas(&mut e, shell);
    e.single(
        "tidegate_websocket_protocol_errors_total",
        "counter",
        "WebSocket connections ended by a framing error.",
        shell.websocket_protocol_errors(),
    );
    e.single(
        "tidegate_store_failures_total",
        "counter",
        "Store batches that could not be written.",
        b.store_failures,
    );

    e.single(
        "tidegate_sessions",
        "gauge",
        "Sessions held, online or not.",
        b.sessions.saturating_sub(s.internal_connections),
    );
    e.single(
        "tidegate_subscriptions",
        "gauge",
        "Subscriptions held.",
        b.subscriptions,
    );
    e.single(
        "tidegate_retained_messages",
        "gauge",
        "Retained messages held.",
        b.retained,
    );
    e.single(
        "tidegate_queued_messages",
        "gauge",
        "Messages waiting in session queues (in memory or in the store).",
        b.queued_messages,
    );
    e.single(
        "tidegate_queued_messages_in_memory",
        "gauge",
        "Queued messages held in memory.",
        b.queued_in_memory,
    );

    render_tenants(&mut e, &s.tenants);

    let h = &b.delivery_latency;
    let name = "tidegate_publish_to_deliver_seconds";
    e.family(
        name,
        "histogram",
        "From a message's acceptance to its PUBLISH leaving the engine for a subscriber.",
    );
    let mut cumulative = 0u64;
    for (bound, n) in LATENCY_BUCKETS_US.iter().zip(h.counts.iter()) {
        cumulative += n;
        let le = format!("{}", *bound as f64 / 1e6);
        e.sample(&format!("{name}_bucket"), &[("le", &le)], cumulative);
    }
    e.sample(&format!("{name}_bucket"), &[("le", "+Inf")], h.count);
    e.sample(&format!("{name}_sum"), &[], h.sum_us as f64 / 1e6);
    e.sample(&format!("{name}_count"), &[], h.count);
    e.out
}

/// A gauge held as `usize`, as a sample value.
fn gauge(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The connection tasks' tenant families (reader backpressure and packet size), one sample
/// per tenant (and scope) that tripped them.
fn render_reader_quotas(e: &mut Exposition, shell: &Stats) {
    let throttling = shell.tenant_throttling();
    let name = "tidegate_tenant_throttled_total";
    e.family(
        name,
        "counter",
        "Read batches held back by a tenant byte rate (the reader paused), by tenant and scope (client or tenant bucket).",
    );
    for ((tenant, scope), t) in &throttling {
        e.sample(name, &[("tenant", tenant), ("scope", scope)], t.pauses);
    }
    let name = "tidegate_tenant_throttled_seconds_total";
    e.family(
        name,
        "counter",
        "Seconds readers paused for a tenant byte rate, by tenant and scope.",
    );
    for ((tenant, scope), t) in &throttling {
        let seconds = t.waited.as_secs_f64();
        e.sample(name, &[("tenant", tenant), ("scope", scope)], seconds);
    }
    let name = "tidegate_tenant_packets_too_large_total";
    e.family(
        name,
        "counter",
        "Connections closed for a packet over the tenant's max_packet_size (DISCONNECT 0x95 in MQTT 5), by tenant.",
    );
    for (tenant, n) in shell.tenant_packets_too_large() {
        e.sample(name, &[("tenant", &tenant)], n);
    }
}

/// The `tidegate_tenant_*` families, one sample (or one per label value) per tenant.
fn render_tenants(e: &mut Exposition, tenants: &BTreeMap<Arc<str>, TenantCounters>) {
    type Value = fn(&TenantCounters) -> u64;
    let simple: [(&str, &str, &str, Value); 7] = [
        (
            "tidegate_tenant_connections",
            "gauge",
            "Connected MQTT clients (past CONNACK) by tenant.",
            |t| gauge(t.connections),
        ),
        (
            "tidegate_tenant_sessions",
            "gauge",
            "Sessions held, online or not, by tenant.",
            |t| gauge(t.sessions),
        ),
        (
            "tidegate_tenant_subscriptions",
            "gauge",
            "Subscriptions held by tenant.",
            |t| gauge(t.subscriptions),
        ),
        (
            "tidegate_tenant_retained_messages",
            "gauge",
            "Retained messages held by tenant.",
            |t| gauge(t.retained),
        ),
        (
            "tidegate_tenant_retained_bytes",
            "gauge",
            "Payload bytes of the retained messages held, by tenant.",
            |t| t.retained_bytes,
        ),
        (
            "tidegate_tenant_messages_received_total",
            "counter",
            "Application messages accepted and routed (MQTT and HTTP publishers, wills), by tenant.",
            |t| t.messages_in,
        ),
        (
            "tidegate_tenant_credentials_expired_total",
            "counter",
            "Connections closed because their credentials expired (DISCONNECT 0xA0), by tenant.",
            |t| t.credentials_expired,
        ),
    ];
    for (name, kind, help, value) in simple {
        e.family(name, kind, help);
        for (id, t) in tenants {
            e.sample(name, &[("tenant", id)], value(t));
        }
    }
    let name = "tidegate_tenant_denied_total";
    e.family(
        name,
        "counter",
        "PUBLISH (and wills) and SUBSCRIBE filters refused by the tenant's ACL, by tenant and action.",
    );
    for (id, t) in tenants {
        e.sample(
            name,
            &[("tenant", id), ("action", "publish")],
            t.denied_publish,
        );
        e.sample(
            name,
            &[("tenant", id), ("action", "subscribe")],
            t.denied_subscribe,
        );
    }
    let name = "tidegate_tenant_quota_refusals_total";
    e.family(
        name,
        "counter",
        "Refusals by a tenant quota, by tenant and quota (0x97 / 0x96 in MQTT 5).",
    );
    for (id, t) in tenants {
        let q = &t.quota;
        for (quota, count) in [
            ("connections", q.connections),
            ("sessions", q.sessions),
            ("subscriptions", q.subscriptions),
            ("retained_messages", q.retained_messages),
            ("retained_bytes", q.retained_bytes),
            ("client_rate", q.client_rate),
            ("tenant_rate", q.tenant_rate),
            ("queued_messages", q.queued_messages),
        ] {
            e.sample(name, &[("tenant", id), ("quota", quota)], count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tidegate_core::{BrokerConfig, ConnId, ConnInfo};
    use tidegate_protocol::{Connect, ConnectProperties, Packet, Utf8};

    #[test]
    fn labels_name_reason_codes() {
        assert_eq!(reason_label(0x87), "0x87_not_authorized");
        assert_eq!(reason_label(0x00), "0x00_success");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_is_declared_once_and_samples_follow_their_declaration() {
        let mut broker = Broker::new(BrokerConfig::default());
        let now = Instant::now();
        broker.handle_open(
            now,
            ConnId(1),
            ConnInfo {
                listener: "tcp:x".into(),
                ..ConnInfo::default()
            },
        );
        broker.handle_packet(
            now,
            ConnId(1),
            Packet::Connect(Box::new(Connect {
                protocol: ProtocolVersion::V5,
                clean_start: true,
                keep_alive: 0,
                client_id: Utf8::from_static("c"),
                will: None,
                username: None,
                password: None,
                properties: ConnectProperties::default(),
            })),
        );
        broker.set_tenant_limits(now, "acme", Default::default());
        let shell = Stats::default();
        shell.count_auth_failure("acme", "bad_password");
        shell.count_auth_failure("acme", "bad_password");
        shell.count_auth_rate_limited();
        shell.count_throttled("acme", "client", Duration::from_millis(1500), true);
        shell.count_throttled("acme", "client", Duration::from_millis(250), false);
        shell.count_packet_too_large("acme");
        let text = render(&Snapshot::of(&broker), &shell, Duration::ZERO);
        assert!(
            text.contains(
                "tidegate_auth_failures_total{tenant=\"acme\",reason=\"bad_password\"} 2"
            )
        );
        assert!(text.contains("tidegate_auth_rate_limited_total 1"));
        assert!(
            text.contains("tidegate_tenant_throttled_total{tenant=\"acme\",scope=\"client\"} 1")
        );
        assert!(text.contains(
            "tidegate_tenant_throttled_seconds_total{tenant=\"acme\",scope=\"client\"} 1.75"
        ));
        assert!(text.contains("tidegate_tenant_packets_too_large_total{tenant=\"acme\"} 1"));
        assert!(text.contains("tidegate_connections{listener=\"tcp:x\",protocol=\"5.0\"} 1"));
        assert!(text.contains("tidegate_connects_total{reason=\"0x00_success\"} 1"));
        assert!(text.contains("tidegate_publish_to_deliver_seconds_bucket{le=\"+Inf\"} 0"));
        assert!(text.contains("tidegate_tenant_connections{tenant=\"default\"} 1"));
        assert!(text.contains("tidegate_tenant_connections{tenant=\"acme\"} 0"));
        assert!(text.contains("tidegate_tenant_sessions{tenant=\"default\"} 1"));
        assert!(text.contains(
            "tidegate_tenant_quota_refusals_total{tenant=\"acme\",quota=\"client_rate\"} 0"
        ));
        assert!(
            text.contains(
                "tidegate_tenant_denied_total{tenant=\"default\",action=\"subscribe\"} 0"
            )
        );
        let mut declared = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_owned();
                assert!(declared.insert(name.clone()), "{name} declared twice");
                current = name;
            } else if !line.starts_with('#') {
                let metric = line.split(['{', ' ']).next().unwrap();
                assert!(
                    metric.starts_with(&current),
                    "{metric} outside its family {current}"
                );
            }
        }
    }
}
