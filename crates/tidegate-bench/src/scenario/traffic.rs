//! What the runs with timed message traffic share (`pairs`, `fanin`, `fanout` and `http`):
//! the run's instants, opening the MQTT sides, the subscriber tasks, the measured window, the
//! drain, and the message statistics and broker figures built from them.
//!
//! Place in the data flow: `messaging::run` and `http::run` call these in order —
//! [`Timing::new`] → [`open_subscribers`] / [`open_publishers`] → [`spawn_subscribers`] →
//! [`spawn_rate_progress`] → [`measure_window`] → [`drain`] → [`join_subscribers`] →
//! [`add_subscriber_results`] → [`finish_rates`] and [`broker_stats`] — so an HTTP run and an
//! MQTT run are timed, drained and accounted the same way.

use super::live::{Feedback, Live, Recorders};
use super::subscriber::{self, SubscriberPlan, SubscriberState};
use super::ticker::next_grid_point;
use super::topology::{SubscriberSpec, Topology};
use super::{MESSAGE_READ_CHUNK, RunEnv, ScenarioError, open_many, spawn_progress};
use crate::cli::MessageArgs;
use crate::client::{ClientError, Connection};
use crate::clock::Clock;
use crate::procfs::ProcSample;
use crate::report::{self, BrokerStats, MessageStats};
use crate::resources;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_protocol::{QoS, Utf8};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long deliveries may be silent, after every publisher finished, before the drain stops
/// waiting for the rest (they are lost, and counted so).
const QUIET_DRAIN: Duration = Duration::from_millis(500);
/// Head start given to the freshly spawned tasks before the first intended send.
const START_DELAY: Duration = Duration::from_millis(100);

/// The instants of a run, in ns since the run's clock epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// First intended send.
    pub start_ns: u64,
    /// Messages stamped before this are warm-up: checked, not timed.
    pub warmup_end_ns: u64,
    /// Nothing is stamped at or after this.
    pub end_ns: u64,
}

impl Timing {
    /// Starts shortly from now, on the tick grid, so an intended send time coincides with a
    /// tick instead of trailing one by a constant offset.
    pub fn new(clock: Clock, tick: Duration, warmup: Duration, duration: Duration) -> Timing {
        let tick_ns = nanos(tick).max(1);
        let start_ns = next_grid_point(clock.ns_at(Instant::now() + START_DELAY), tick_ns);
        let warmup_end_ns = start_ns + nanos(warmup);
        Timing {
            start_ns,
            warmup_end_ns,
            end_ns: warmup_end_ns + nanos(duration),
        }
    }
}

/// A duration in ns, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Closed-loop QoS 0 delivery reports, one per publisher (none otherwise: acks or the pacer
/// pace the publishers).
pub fn feedback_for(rate: u64, qos: QoS, publishers: usize) -> Option<Arc<Vec<Arc<Feedback>>>> {
    (rate == 0 && qos == QoS::AtMostOnce).then(|| {
        Arc::new(
            (0..publishers)
                .map(|_| Arc::new(Feedback::default()))
                .collect(),
        )
    })
}

/// What one subscriber task hands back: its accounting and why it ended early, if it did.
pub type SubscriberOutcome = (SubscriberState, Option<String>);

/// Shared pieces of every subscriber task of a run.
#[derive(Debug, Clone)]
pub struct SubscriberShared {
    /// The run's instants.
    pub timing: Timing,
    /// The run's clock.
    pub clock: Clock,
    /// Progress counters.
    pub live: Arc<Live>,
    /// Histograms.
    pub rec: Arc<Recorders>,
    /// Closed-loop QoS 0 reports, handed to the subscribers that pace.
    pub feedback: Option<Arc<Vec<Arc<Feedback>>>>,
}

impl SubscriberShared {
    /// The plan of the subscriber `spec` describes.
    pub fn plan(&self, spec: &SubscriberSpec) -> SubscriberPlan {
        SubscriberPlan {
            hears: spec.hears.clone(),
            warmup_end_ns: self.timing.warmup_end_ns,
            end_ns: self.timing.end_ns,
            clock: self.clock,
            live: self.live.clone(),
            rec: self.rec.clone(),
            feedback: self.feedback.clone().filter(|_| spec.paces),
        }
    }
}

/// Starts one MQTT subscriber task per connection; each receives until `stop` turns true.
pub fn spawn_subscribers(
    specs: &[SubscriberSpec],
    conns: Vec<Connection>,
    shared: &SubscriberShared,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<SubscriberOutcome>> {
    specs
        .iter()
        .zip(conns)
        .map(|(spec, mut conn)| {
            let plan = shared.plan(spec);
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let mut st = SubscriberState::new(plan.hears.clone());
                let r = subscriber::receive(&mut conn, &mut st, &plan, &mut stop, |_| false).await;
                conn.disconnect(None).await;
                (st, r.err().map(|e| e.to_string()))
            })
        })
        .collect()
}

/// Waits for subscriber tasks; a task that panicked becomes a warning.
pub async fn join_subscribers(
    tasks: Vec<JoinHandle<SubscriberOutcome>>,
    warnings: &mut Vec<String>,
) -> Vec<SubscriberOutcome> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(r) => out.push(r),
            Err(e) => warnings.push(format!("subscriber task failed: {e}")),
        }
    }
    out
}

/// Adds the subscribers' stream accounting to `m`, given each publisher's sent count.
pub fn add_subscriber_results(
    m: &mut MessageStats,
    results: &[SubscriberOutcome],
    sent: &[u64],
    role: &str,
) {
    for (st, err) in results {
        for (_, s) in st.finish(sent) {
            m.streams.add(&s);
            m.stream_count += 1;
            m.streams_with_loss += u64::from(s.lost > 0);
        }
        m.delivered_in_window += st.delivered_in_window;
        m.unexpected += st.unexpected;
        m.errors.extend(err.iter().map(|e| format!("{role}: {e}")));
    }
}

/// Rates over the measured window, and the warnings every message run gives: QoS 1/2 loss,
/// and an open-loop rate the generator did not reach.
pub fn finish_rates(
    m: &mut MessageStats,
    qos: QoS,
    rate: u64,
    duration: Duration,
    warnings: &mut Vec<String>,
) {
    let secs = duration.as_secs_f64();
    m.sent_per_sec = m.sent_in_window as f64 / secs;
    m.delivered_per_sec = m.delivered_in_window as f64 / secs;
    if m.streams.lost > 0 && qos != QoS::AtMostOnce {
        warnings.push(format!(
            "{} QoS {} messages lost",
            m.streams.lost,
            qos.as_u8()
        ));
    }
    if rate > 0 && (m.sent_per_sec as u64) < rate * 95 / 100 {
        warnings.push(format!(
            "sent {:.0} msg/s, below the target {} msg/s",
            m.sent_per_sec, rate
        ));
    }
}

/// The generator's CPU time and the broker's samples at both ends of the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Generator CPU ns over the window.
    pub cpu_ns: u64,
    /// Broker sample at the start.
    pub broker0: Option<ProcSample>,
    /// Broker sample at the end.
    pub broker1: Option<ProcSample>,
    /// Wall time of the window.
    pub wall: Duration,
    /// Wall-clock start of the window, ms since the Unix epoch.
    pub from_unix_ms: u64,
    /// Wall-clock end of the window, ms since the Unix epoch.
    pub until_unix_ms: u64,
}

impl Window {
    /// Records the window's wall-clock bounds in the statistics, so that runs of separate
    /// processes (the fairness benchmark's two generators) can be checked to have overlapped.
    pub fn stamp(&self, m: &mut MessageStats) {
        m.measured_from_unix_ms = Some(self.from_unix_ms);
        m.measured_until_unix_ms = Some(self.until_unix_ms);
    }
}

/// Milliseconds since the Unix epoch, now (0 for a clock set before 1970).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Sleeps through the warm-up and the measured window, sampling at both ends.
pub async fn measure_window(env: &RunEnv, timing: &Timing, warnings: &mut Vec<String>) -> Window {
    let clock = env.clock;
    tokio::time::sleep_until(clock.instant_at(timing.warmup_end_ns).into()).await;
    let (cpu0, broker0, t0, from_unix_ms) = (
        resources::self_cpu_ns(),
        env.broker.and_then(|b| b.sample(warnings)),
        Instant::now(),
        unix_ms_now(),
    );
    tokio::time::sleep_until(clock.instant_at(timing.end_ns).into()).await;
    let (cpu1, broker1, t1, until_unix_ms) = (
        resources::self_cpu_ns(),
        env.broker.and_then(|b| b.sample(warnings)),
        Instant::now(),
        unix_ms_now(),
    );
    Window {
        cpu_ns: cpu1.saturating_sub(cpu0),
        broker0,
        broker1,
        wall: t1.duration_since(t0),
        from_unix_ms,
        until_unix_ms,
    }
}

/// The broker's figures, with `--target-pid`: RSS before and with every connection open, CPU
/// over the window per message (sent or delivered, whichever is larger).
pub fn broker_stats(
    env: &RunEnv,
    before: Option<ProcSample>,
    connected: Option<ProcSample>,
    window: &Window,
    connections: u64,
    messages: u64,
) -> Option<BrokerStats> {
    env.broker.map(|b| {
        let (cpu_seconds, cpu_percent, cpu_ns_per_message) =
            report::broker_cpu(window.broker0, window.broker1, window.wall, messages);
        BrokerStats {
            pid: b.pid,
            rss_before_bytes: before.map(|s| s.rss_bytes),
            rss_connected_bytes: connected.map(|s| s.rss_bytes),
            rss_after_bytes: window.broker1.map(|s| s.rss_bytes),
            memory_per_connection_bytes: report::memory_per_connection(
                before,
                connected,
                connections,
            ),
            cpu_seconds,
            cpu_percent,
            cpu_ns_per_message,
            ..BrokerStats::default()
        }
    })
}

/// The once-a-second progress line of a message run: sent and delivered per second.
pub fn spawn_rate_progress(
    quiet: bool,
    live: Arc<Live>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut last = (0u64, 0u64);
    spawn_progress(quiet, stop, move |t| {
        let (s, d) = (Live::get(&live.sent), Live::get(&live.delivered));
        let line = format!(
            "[{:>6.1}s] sent {:>8}/s  delivered {:>8}/s  total sent {s}  delivered {d}",
            t.as_secs_f64(),
            s - last.0,
            d - last.1
        );
        last = (s, d);
        line
    })
}

/// Waits until every owed delivery arrived, deliveries went quiet, or the drain timed out.
pub async fn drain(live: &Live, expected: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = Live::get(&live.delivered);
    let mut last_change = Instant::now();
    loop {
        let now = Instant::now();
        let got = Live::get(&live.delivered);
        if got >= expected || now >= deadline {
            return;
        }
        if got != last {
            last = got;
            last_change = now;
        } else if now.duration_since(last_change) >= QUIET_DRAIN {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connects and subscribes the topology's MQTT subscribers (`<prefix>-s<i>`).
pub async fn open_subscribers(
    env: &RunEnv,
    topo: &Topology,
    args: &MessageArgs,
) -> Result<Vec<Connection>, ScenarioError> {
    let qos = args.qos;
    let timeout = env.connect_timeout;
    let results = open_many(topo.subscribers.len() as u32, args.common.conn_rate, |i| {
        let env = env.clone();
        let session = args.clone();
        let filter = topo
            .subscribers
            .get(i as usize)
            .map(|s| s.filter.clone())
            .unwrap_or_default();
        async move {
            let mut opts = env.connect_options(
                format!("{}-s{i}", env.client_prefix),
                true,
                MESSAGE_READ_CHUNK,
            );
            session.apply_session(&mut opts);
            let mut conn = Connection::open(&env.endpoint, env.source(), &opts).await?;
            conn.subscribe(&[(Utf8::try_from(filter)?, qos)], timeout)
                .await?;
            Ok(conn)
        }
    })
    .await;
    collect("subscriber", results)
}

/// Connects the topology's MQTT publishers (`<prefix>-p<i>`).
pub async fn open_publishers(
    env: &RunEnv,
    topo: &Topology,
    args: &MessageArgs,
) -> Result<Vec<Connection>, ScenarioError> {
    let results = open_many(topo.publishers.len() as u32, args.common.conn_rate, |i| {
        let env = env.clone();
        let session = args.clone();
        async move {
            let mut opts = env.connect_options(
                format!("{}-p{i}", env.client_prefix),
                true,
                MESSAGE_READ_CHUNK,
            );
            session.apply_session(&mut opts);
            Connection::open(&env.endpoint, env.source(), &opts).await
        }
    })
    .await;
    collect("publisher", results)
}

/// Every connection of a message run is needed: the first failure aborts the run.
fn collect(
    role: &str,
    results: Vec<Result<Connection, ClientError>>,
) -> Result<Vec<Connection>, ScenarioError> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.map_err(|source| ScenarioError::Client {
                what: format!("{role} {i}"),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_starts_on_the_grid_and_keeps_the_durations() {
        let clock = Clock::start();
        let t = Timing::new(
            clock,
            Duration::from_millis(2),
            Duration::from_secs(1),
            Duration::from_secs(3),
        );
        assert_eq!(t.start_ns % 2_000_000, 0);
        assert!(t.start_ns >= nanos(START_DELAY));
        assert_eq!(t.warmup_end_ns - t.start_ns, 1_000_000_000);
        assert_eq!(t.end_ns - t.warmup_end_ns, 3_000_000_000);
    }

    #[test]
    fn feedback_only_for_closed_loop_qos0() {
        assert_eq!(
            feedback_for(0, QoS::AtMostOnce, 3).map(|f| f.len()),
            Some(3)
        );
        assert!(feedback_for(100, QoS::AtMostOnce, 3).is_none());
        assert!(feedback_for(0, QoS::AtLeastOnce, 3).is_none());
    }

    #[test]
    fn rates_and_warnings() {
        let mut m = MessageStats {
            sent_in_window: 900,
            delivered_in_window: 800,
            ..MessageStats::default()
        };
        m.streams.lost = 5;
        let mut w = Vec::new();
        finish_rates(
            &mut m,
            QoS::AtLeastOnce,
            1_000,
            Duration::from_secs(1),
            &mut w,
        );
        assert_eq!((m.sent_per_sec, m.delivered_per_sec), (900.0, 800.0));
        assert_eq!(w.len(), 2, "{w:?}");
        let mut w = Vec::new();
        finish_rates(&mut m, QoS::AtMostOnce, 0, Duration::from_secs(1), &mut w);
        assert!(
            w.is_empty(),
            "QoS 0 loss and closed loop are not warnings: {w:?}"
        );
    }

    #[test]
    fn subscriber_results_add_up_per_stream() {
        let mut st = SubscriberState::new(0..2);
        let plan = SubscriberShared {
            timing: Timing {
                start_ns: 0,
                warmup_end_ns: 0,
                end_ns: u64::MAX,
            },
            clock: Clock::start(),
            live: Arc::new(Live::default()),
            rec: Arc::new(Recorders::default()),
            feedback: None,
        }
        .plan(&SubscriberSpec {
            id: 0,
            filter: "x".into(),
            hears: 0..2,
            paces: true,
        });
        for seq in 0..3 {
            let h = crate::payload::Header {
                sent_ns: 1,
                publisher: 1,
                seq,
            };
            st.on_payload(&h.encode(), 10, &plan);
        }
        let mut m = MessageStats::default();
        add_subscriber_results(&mut m, &[(st, Some("boom".into()))], &[2, 4], "sse stream");
        assert_eq!(m.stream_count, 2);
        assert_eq!(m.streams.lost, 2 + 1);
        assert_eq!(m.streams_with_loss, 2);
        assert_eq!(m.delivered_in_window, 3);
        assert_eq!(m.errors, vec!["sse stream: boom".to_string()]);
    }

    #[tokio::test]
    async fn window_records_its_wall_clock_bounds() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "tidegate-bench",
            "pairs",
            "--url",
            "tcp://127.0.0.1:1",
        ])
        .unwrap();
        let crate::cli::Scenario::Pairs(args) = cli.scenario else {
            panic!("not pairs")
        };
        let env = RunEnv::new(&args.common).await.unwrap();
        let before = unix_ms_now();
        let timing = Timing::new(
            env.clock,
            Duration::from_millis(1),
            Duration::from_millis(20),
            Duration::from_millis(60),
        );
        let mut warnings = Vec::new();
        let window = measure_window(&env, &timing, &mut warnings).await;
        let mut m = MessageStats::default();
        window.stamp(&mut m);
        let (from, until) = (
            m.measured_from_unix_ms.unwrap(),
            m.measured_until_unix_ms.unwrap(),
        );
        // The window starts after the warm-up and lasts the duration (ms rounding aside).
        assert!(from >= before + 20, "{before} {from}");
        assert!(until - from >= 59, "{from} {until}");
        assert!(until <= unix_ms_now());
    }
}
