//! The final report: one serialisable structure for `--json`, and a text rendering for people.
//!
//! Place in the data flow: each scenario fills a [`Report`] from its tasks' results and the
//! resource samples; `main` prints it. The derived figures (memory per connection, RSS slope,
//! CPU per message, the generator-bound verdict) are computed here by small pure functions so
//! they are tested once and read the same in every scenario.

pub mod http;

pub use http::HttpStats;

use crate::latency::{LatencySummary, fmt_ns};
use crate::procfs::ProcSample;
use crate::resources;
use crate::streams::StreamStats;
use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Broker address.
    pub target: String,
    /// "3.1.1" or "5".
    pub protocol: String,
    /// Connections the scenario asked for.
    pub connections: u64,
    /// The generator's own cost.
    pub generator: GeneratorStats,
    /// The broker's cost, with `--target-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerStats>,
    /// pairs / fanin / fanout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageStats>,
    /// conn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn: Option<ConnStats>,
    /// storm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormStats>,
    /// http: the HTTP side (the message side is in `messages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStats>,
    /// Things that make the numbers less trustworthy.
    pub warnings: Vec<String>,
}

/// The generator's CPU use over the measured interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GeneratorStats {
    /// Runtime threads per process.
    pub threads: usize,
    /// Processes (conn --processes).
    pub processes: u32,
    /// CPU seconds over all processes.
    pub cpu_seconds: f64,
    /// Wall-clock seconds of the interval.
    pub wall_seconds: f64,
    /// CPU as a percentage of one core, all processes together.
    pub cpu_percent: f64,
    /// The busiest single process, percentage of one core.
    pub max_process_cpu_percent: f64,
    /// True when a process was at or above 90% of its runtime threads' cores: the broker was
    /// not the bottleneck, the generator was.
    pub generator_bound: bool,
}

impl GeneratorStats {
    /// From per-process CPU times over one wall interval.
    pub fn new(per_process_cpu_ns: &[u64], wall: Duration, threads: usize) -> GeneratorStats {
        let total: u64 = per_process_cpu_ns.iter().sum();
        let max_pct = per_process_cpu_ns
            .iter()
            .map(|c| resources::cpu_percent(*c, wall))
            .fold(0.0, f64::max);
        GeneratorStats {
            threads,
            processes: u32::try_from(per_process_cpu_ns.len()).unwrap_or(u32::MAX),
            cpu_seconds: total as f64 / 1e9,
            wall_seconds: wall.as_secs_f64(),
            cpu_percent: resources::cpu_percent(total, wall),
            max_process_cpu_percent: max_pct,
            generator_bound: resources::is_generator_bound(max_pct, threads),
        }
    }
}

/// An RSS sample at a number of open connections.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RssCheckpoint {
    /// Connections open when sampled.
    pub connections: u64,
    /// Broker RSS.
    pub rss_bytes: u64,
}

/// The broker's resource use.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct BrokerStats {
    /// Broker pid.
    pub pid: u32,
    /// RSS before the first connection.
    pub rss_before_bytes: Option<u64>,
    /// RSS with every connection open, before traffic.
    pub rss_connected_bytes: Option<u64>,
    /// RSS at the end of the measurement.
    pub rss_after_bytes: Option<u64>,
    /// (RSS connected − RSS before) / connections.
    pub memory_per_connection_bytes: Option<f64>,
    /// RSS samples at `--rss-checkpoints`.
    pub checkpoints: Vec<RssCheckpoint>,
    /// RSS slope between the first and last checkpoint, bytes per connection.
    pub slope_bytes_per_connection: Option<f64>,
    /// Broker CPU seconds over the measured interval.
    pub cpu_seconds: Option<f64>,
    /// Broker CPU as a percentage of one core.
    pub cpu_percent: Option<f64>,
    /// Broker CPU nanoseconds per message (published or delivered, whichever is larger).
    pub cpu_ns_per_message: Option<f64>,
}

/// Memory per connection: the RSS growth divided by the connections that caused it.
pub fn memory_per_connection(
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    connections: u64,
) -> Option<f64> {
    let (b, a) = (before?, after?);
    (connections > 0).then(|| (a.rss_bytes as f64 - b.rss_bytes as f64) / connections as f64)
}

/// Slope between the first and last checkpoints (needs two with different counts).
pub fn rss_slope(points: &[RssCheckpoint]) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    let dc = last
        .connections
        .checked_sub(first.connections)
        .filter(|d| *d > 0)?;
    Some((last.rss_bytes as f64 - first.rss_bytes as f64) / dc as f64)
}

/// Broker CPU between two samples: (seconds, percent of one core, ns per message).
pub fn broker_cpu(
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    wall: Duration,
    messages: u64,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let Some(cpu) = before
        .zip(after)
        .map(|(b, a)| a.cpu_ns.saturating_sub(b.cpu_ns))
    else {
        return (None, None, None);
    };
    let per_msg = (messages > 0).then(|| cpu as f64 / messages as f64);
    (
        Some(cpu as f64 / 1e9),
        Some(resources::cpu_percent(cpu, wall)),
        per_msg,
    )
}

/// Results of pairs / fanin / fanout.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct MessageStats {
    /// QoS.
    pub qos: u8,
    /// Payload size.
    pub payload_bytes: usize,
    /// Target rate (0: closed loop).
    pub rate_target: u64,
    /// Closed-loop window.
    pub window: u32,
    /// Publisher connections.
    pub publishers: u64,
    /// Subscriber connections.
    pub subscribers: u64,
    /// Warm-up seconds.
    pub warmup_seconds: f64,
    /// Measured seconds.
    pub duration_seconds: f64,
    /// Messages published in total.
    pub sent: u64,
    /// Published inside the measurement window.
    pub sent_in_window: u64,
    /// Publish rate over the window.
    pub sent_per_sec: f64,
    /// Unique deliveries of messages stamped inside the window.
    pub delivered_in_window: u64,
    /// Delivery rate over the window.
    pub delivered_per_sec: f64,
    /// Deliveries owed over the whole run (sent × fan-out).
    pub expected_deliveries: u64,
    /// Totals over every publisher → subscriber stream.
    pub streams: StreamStats,
    /// Number of streams.
    pub stream_count: u64,
    /// Streams with at least one lost message.
    pub streams_with_loss: u64,
    /// Deliveries that were not ours or not for that subscriber.
    pub unexpected: u64,
    /// Acks with a failure reason code.
    pub rejected: u64,
    /// QoS 1/2 publications never acknowledged.
    pub unacked: u64,
    /// Closed-loop QoS 0 windows reset after a one-second stall.
    pub window_resets: u64,
    /// Publish → deliver latency (from the intended send time in open loop).
    pub latency: LatencySummary,
    /// Publish → deliver latency from the actual write (closer to the broker's share).
    pub latency_from_write: LatencySummary,
    /// Open loop: actual minus intended send time (the generator's own lateness).
    pub send_lag: LatencySummary,
    /// Client errors, one line each.
    pub errors: Vec<String>,
    /// Wall-clock start of the measured window, ms since the Unix epoch.
    pub measured_from_unix_ms: Option<u64>,
    /// Wall-clock end of the measured window, ms since the Unix epoch.
    pub measured_until_unix_ms: Option<u64>,
}

/// Results of conn.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ConnStats {
    /// Connections asked for.
    pub requested: u64,
    /// Connections that got a CONNACK.
    pub opened: u64,
    /// Connection attempts that failed.
    pub failed: u64,
    /// Open connections the broker closed while they were held.
    pub dropped: u64,
    /// Seconds from the first attempt to the last CONNACK (or failure).
    pub open_seconds: f64,
    /// Connections opened per second.
    pub open_rate: f64,
    /// Seconds the connections were held after all were open.
    pub hold_seconds: f64,
    /// Intended attempt time → CONNACK.
    pub connect_latency: LatencySummary,
    /// Distinct error messages with counts.
    pub errors: Vec<(String, u64)>,
}

/// Results of storm.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct StormStats {
    /// Persistent sessions.
    pub sessions: u64,
    /// Messages queued per session while offline.
    pub messages_per_session: u32,
    /// QoS.
    pub qos: u8,
    /// Seconds to publish (and have acknowledged) every queued message.
    pub publish_seconds: f64,
    /// Sessions whose reconnect found their session (session present).
    pub resumed: u64,
    /// Sessions whose reconnect found no session: the broker lost it.
    pub session_lost: u64,
    /// Reconnects that failed.
    pub reconnect_failed: u64,
    /// Sessions that did not receive every queued message before the drain ran out.
    pub incomplete_sessions: u64,
    /// Reconnect start → last CONNACK.
    pub resume_all_seconds: f64,
    /// Reconnect start → last queued message delivered (the storm's total).
    pub deliver_all_seconds: f64,
    /// Totals over every session's stream.
    pub streams: StreamStats,
    /// Per session: reconnect start → CONNACK.
    pub resume_latency: LatencySummary,
    /// Per session: reconnect start → its last queued message.
    pub complete_latency: LatencySummary,
    /// Client errors, one line each.
    pub errors: Vec<String>,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn lat_line(out: &mut String, name: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {name:<16} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
        fmt_ns(l.p50_ns),
        fmt_ns(l.p90_ns),
        fmt_ns(l.p99_ns),
        fmt_ns(l.p999_ns),
        fmt_ns(l.max_ns),
        l.count
    );
}

fn streams_line(out: &mut String, s: &StreamStats) {
    let _ = writeln!(
        out,
        "  streams          sent {}  unique {}  lost {}  duplicates {}  out-of-order {}  late {}",
        s.sent, s.unique, s.lost, s.duplicates, s.out_of_order, s.late
    );
}

impl Report {
    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "tidegate-bench {} → {} (MQTT {}, {} connections)",
            self.scenario, self.target, self.protocol, self.connections
        );
        if let Some(m) = &self.messages {
            let rate = if m.rate_target == 0 {
                format!("closed loop, window {}", m.window)
            } else {
                format!("{} msg/s open loop", m.rate_target)
            };
            let _ = writeln!(
                o,
                "  load             QoS {}  payload {} B  {}  {} pub / {} sub  {:.1}s (+{:.1}s warm-up)",
                m.qos,
                m.payload_bytes,
                rate,
                m.publishers,
                m.subscribers,
                m.duration_seconds,
                m.warmup_seconds
            );
            let _ = writeln!(
                o,
                "  throughput       sent {:.0} msg/s  delivered {:.0} msg/s",
                m.sent_per_sec, m.delivered_per_sec
            );
            streams_line(&mut o, &m.streams);
            let _ = writeln!(
                o,
                "  stream health    {} of {} streams lost messages; unexpected {}  rejected {}  unacked {}  window resets {}",
                m.streams_with_loss,
                m.stream_count,
                m.unexpected,
                m.rejected,
                m.unacked,
                m.window_resets
            );
            lat_line(&mut o, "latency", &m.latency);
            if m.rate_target > 0 {
                lat_line(&mut o, "from write", &m.latency_from_write);
                lat_line(&mut o, "send lag", &m.send_lag);
            }
            for e in &m.errors {
                let _ = writeln!(o, "  error            {e}");
            }
        }
        if let Some(h) = &self.http {
            h.write_text(&mut o);
        }
        if let Some(c) = &self.conn {
            let _ = writeln!(
                o,
                "  connections      opened {} of {}  failed {}  dropped {}  in {:.2}s ({:.0}/s), held {:.1}s",
                c.opened,
                c.requested,
                c.failed,
                c.dropped,
                c.open_seconds,
                c.open_rate,
                c.hold_seconds
            );
            lat_line(&mut o, "connect", &c.connect_latency);
            for (e, n) in &c.errors {
                let _ = writeln!(o, "  error            {n} × {e}");
            }
        }
        if let Some(s) = &self.storm {
            let _ = writeln!(
                o,
                "  storm            {} sessions × {} messages QoS {}, published in {:.2}s",
                s.sessions, s.messages_per_session, s.qos, s.publish_seconds
            );
            let _ = writeln!(
                o,
                "  resume           resumed {}  session lost {}  reconnect failed {}  incomplete {}",
                s.resumed, s.session_lost, s.reconnect_failed, s.incomplete_sessions
            );
            let _ = writeln!(
                o,
                "  time             all resumed {:.3}s  all delivered {:.3}s",
                s.resume_all_seconds, s.deliver_all_seconds
            );
            streams_line(&mut o, &s.streams);
            lat_line(&mut o, "resume", &s.resume_latency);
            lat_line(&mut o, "complete", &s.complete_latency);
            for e in &s.errors {
                let _ = writeln!(o, "  error            {e}");
            }
        }
        if let Some(b) = &self.broker {
            let mut line = format!("  broker pid {}", b.pid);
            if let (Some(x), Some(y)) = (b.rss_before_bytes, b.rss_after_bytes) {
                let _ = write!(line, "  RSS {} → {}", mib(x), mib(y));
            }
            if let Some(m) = b.memory_per_connection_bytes {
                let _ = write!(line, "  {:.2} KiB/conn", m / 1024.0);
            }
            if let Some(s) = b.slope_bytes_per_connection {
                let _ = write!(line, "  slope {:.2} KiB/conn", s / 1024.0);
            }
            if let Some(c) = b.cpu_percent {
                let _ = write!(line, "  CPU {c:.1}%");
            }
            if let Some(c) = b.cpu_ns_per_message {
                let _ = write!(line, "  {:.0} ns CPU/msg", c);
            }
            let _ = writeln!(o, "{line}");
            for c in &b.checkpoints {
                let _ = writeln!(
                    o,
                    "    checkpoint     {} connections: RSS {}",
                    c.connections,
                    mib(c.rss_bytes)
                );
            }
        }
        let g = &self.generator;
        let _ = writeln!(
            o,
            "  generator        CPU {:.1}% of a core ({:.2}s over {:.1}s, {} thread(s), {} process(es)){}",
            g.cpu_percent,
            g.cpu_seconds,
            g.wall_seconds,
            g.threads,
            g.processes,
            if g.generator_bound {
                "  GENERATOR-BOUND: these numbers measure the generator"
            } else {
                ""
            }
        );
        for w in &self.warnings {
            let _ = writeln!(o, "  warning          {w}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rss: u64, cpu: u64) -> Option<ProcSample> {
        Some(ProcSample {
            rss_bytes: rss,
            cpu_ns: cpu,
        })
    }

    #[test]
    fn memory_per_connection_divides_growth() {
        assert_eq!(
            memory_per_connection(s(1_000_000, 0), s(3_000_000, 0), 1_000),
            Some(2_000.0)
        );
        assert_eq!(memory_per_connection(None, s(1, 0), 10), None);
        assert_eq!(memory_per_connection(s(1, 0), s(2, 0), 0), None);
    }

    #[test]
    fn slope_uses_first_and_last_checkpoint() {
        let pts = [
            RssCheckpoint {
                connections: 1_000,
                rss_bytes: 10_000_000,
            },
            RssCheckpoint {
                connections: 5_000,
                rss_bytes: 11_000_000,
            },
            RssCheckpoint {
                connections: 19_000,
                rss_bytes: 28_000_000,
            },
        ];
        assert_eq!(rss_slope(&pts), Some(1_000.0));
        assert_eq!(rss_slope(&pts[..1]), None);
    }

    #[test]
    fn broker_cpu_per_message() {
        let (secs, pct, per) = broker_cpu(
            s(0, 1_000_000_000),
            s(0, 1_500_000_000),
            Duration::from_secs(2),
            100_000,
        );
        assert_eq!(secs, Some(0.5));
        assert_eq!(pct, Some(25.0));
        assert_eq!(per, Some(5_000.0));
        assert_eq!(
            broker_cpu(None, s(0, 1), Duration::from_secs(1), 1),
            (None, None, None)
        );
    }

    #[test]
    fn generator_bound_is_judged_per_process() {
        let wall = Duration::from_secs(10);
        // Two processes at 50% each: 100% in total but neither saturated.
        let g = GeneratorStats::new(&[5_000_000_000, 5_000_000_000], wall, 1);
        assert!((g.cpu_percent - 100.0).abs() < 1e-9);
        assert!(!g.generator_bound);
        let g = GeneratorStats::new(&[9_500_000_000], wall, 1);
        assert!(g.generator_bound);
        assert!(
            Report {
                scenario: "pairs".into(),
                target: "tcp://x:1".into(),
                protocol: "5".into(),
                connections: 1,
                generator: g,
                broker: None,
                messages: None,
                conn: None,
                storm: None,
                http: None,
                warnings: vec![],
            }
            .to_text()
            .contains("GENERATOR-BOUND")
        );
    }
}
