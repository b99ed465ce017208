//! pairs, fanin and fanout: set up the topology, run timed traffic, drain, account, report.
//!
//! Place in the data flow: `main` → [`run`] → subscribers connected and subscribed first, then
//! publishers → every connection's task started at one common instant → warm-up → measured
//! window (generator and broker CPU sampled at both ends) → publishers stop and collect their
//! acks → deliveries drain → subscribers stop → per-stream accounting against each publisher's
//! sent count → [`Report`].

use super::live::{Feedback, Live, Recorders};
use super::publisher::{self, PublisherPlan, PublisherResult, StreamOut};
use super::subscriber::{self, SubscriberPlan, SubscriberState};
use super::ticker::{Ticker, TickerGuard, next_grid_point};
use super::topology::{Shape, Topology};
use super::{MESSAGE_READ_CHUNK, RunEnv, ScenarioError, open_many, spawn_progress};
use crate::cli::MessageArgs;
use crate::client::{ClientError, Connection};
use crate::pacing::Pacer;
use crate::report::{self, BrokerStats, GeneratorStats, MessageStats, Report};
use crate::resources;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_protocol::{QoS, Utf8};
use tokio::sync::watch;

/// How long deliveries may be silent, after every publisher finished, before the drain stops
/// waiting for the rest (they are lost, and counted so).
const QUIET_DRAIN: Duration = Duration::from_millis(500);
/// Head start given to the freshly spawned tasks before the first intended send.
const START_DELAY: Duration = Duration::from_millis(100);

/// Runs one message scenario.
pub async fn run(shape: Shape, args: &MessageArgs) -> Result<Report, ScenarioError> {
    args.validate()?;
    let env = RunEnv::new(&args.common).await?;
    let topo = Topology::build(shape, args.common.connections, &env.topic_prefix);
    let mut warnings = Vec::new();
    let broker_before = env.broker.and_then(|b| b.sample(&mut warnings));

    let subs = open_subscribers(&env, &topo, args).await?;
    let pubs = open_publishers(&env, &topo, args).await?;
    let broker_connected = env.broker.and_then(|b| b.sample(&mut warnings));

    let clock = env.clock;
    // On the tick grid, so an intended send time coincides with a tick instead of trailing
    // one by a constant offset.
    let tick_ns = nanos(args.tick).max(1);
    let start_ns = next_grid_point(clock.ns_at(Instant::now() + START_DELAY), tick_ns);
    let warmup_end_ns = start_ns + nanos(args.warmup);
    let end_ns = warmup_end_ns + nanos(args.duration);
    let live = Arc::new(Live::default());
    let rec = Arc::new(Recorders::default());
    let feedback: Option<Arc<Vec<Arc<Feedback>>>> = (args.rate == 0 && args.qos == QoS::AtMostOnce)
        .then(|| {
            Arc::new(
                (0..topo.publishers.len())
                    .map(|_| Arc::new(Feedback::default()))
                    .collect(),
            )
        });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ticker, _ticker_guard) = start_ticker(args.rate, clock, args.tick, &mut warnings);

    let mut sub_tasks = Vec::with_capacity(subs.len());
    for (spec, mut conn) in topo.subscribers.iter().zip(subs) {
        let plan = SubscriberPlan {
            hears: spec.hears.clone(),
            warmup_end_ns,
            end_ns,
            clock,
            live: live.clone(),
            rec: rec.clone(),
            feedback: feedback.clone().filter(|_| spec.paces),
        };
        let mut stop = stop_rx.clone();
        sub_tasks.push(tokio::spawn(async move {
            let mut st = SubscriberState::new(plan.hears.clone());
            let r = subscriber::receive(&mut conn, &mut st, &plan, &mut stop, |_| false).await;
            conn.disconnect(None).await;
            (st, r.err().map(|e| e.to_string()))
        }));
    }
    let publishers = topo.publishers.len() as u32;
    let mut pub_tasks = Vec::with_capacity(pubs.len());
    for (spec, conn) in topo.publishers.iter().zip(pubs) {
        let plan = PublisherPlan {
            streams: vec![StreamOut {
                id: spec.id,
                topic: Utf8::try_from(spec.topic.as_str())
                    .map_err(|e| ScenarioError::Failed(e.to_string()))?,
            }],
            qos: args.qos,
            payload: args.payload,
            pacer: Pacer::new(start_ns, args.rate, publishers, spec.id),
            tick: args.tick,
            ticker: ticker.clone(),
            window: args.window,
            start_ns,
            warmup_end_ns,
            end_ns,
            max_messages: None,
            drain: args.drain,
            clock,
            live: live.clone(),
            rec: rec.clone(),
            feedback: feedback
                .as_ref()
                .and_then(|f| f.get(spec.id as usize).cloned()),
        };
        pub_tasks.push(tokio::spawn(publisher::run(conn, plan)));
    }

    let progress = {
        let live = live.clone();
        let mut last = (0u64, 0u64);
        spawn_progress(env.quiet, stop_rx.clone(), move |t| {
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
    };

    // The measured window, sampled at both ends.
    tokio::time::sleep_until(clock.instant_at(warmup_end_ns).into()).await;
    let (cpu0, broker0, t0) = (
        resources::self_cpu_ns(),
        env.broker.and_then(|b| b.sample(&mut warnings)),
        Instant::now(),
    );
    tokio::time::sleep_until(clock.instant_at(end_ns).into()).await;
    let (cpu1, broker1, t1) = (
        resources::self_cpu_ns(),
        env.broker.and_then(|b| b.sample(&mut warnings)),
        Instant::now(),
    );

    let mut pub_results = Vec::with_capacity(pub_tasks.len());
    for t in pub_tasks {
        pub_results.push(t.await.unwrap_or_else(|e| PublisherResult {
            error: Some(format!("publisher task failed: {e}")),
            ..Default::default()
        }));
    }
    let sent: Vec<u64> = pub_results.iter().map(|r| r.sent).collect();
    let expected = topo.expected_deliveries(&sent);
    drain(&live, expected, args.drain).await;
    let _ = stop_tx.send(true);
    let mut sub_results = Vec::with_capacity(sub_tasks.len());
    for t in sub_tasks {
        match t.await {
            Ok(r) => sub_results.push(r),
            Err(e) => warnings.push(format!("subscriber task failed: {e}")),
        }
    }
    let _ = progress.await;

    let wall = t1.duration_since(t0);
    let mut m = MessageStats {
        qos: args.qos.as_u8(),
        payload_bytes: args.payload,
        rate_target: args.rate,
        window: args.window,
        publishers: topo.publishers.len() as u64,
        subscribers: topo.subscribers.len() as u64,
        warmup_seconds: args.warmup.as_secs_f64(),
        duration_seconds: args.duration.as_secs_f64(),
        expected_deliveries: expected,
        latency: Recorders::snapshot(&rec.latency).summary(),
        latency_from_write: Recorders::snapshot(&rec.from_write).summary(),
        send_lag: Recorders::snapshot(&rec.send_lag).summary(),
        ..MessageStats::default()
    };
    for r in &pub_results {
        m.sent += r.sent;
        m.sent_in_window += r.sent_in_window;
        m.rejected += r.rejected;
        m.unacked += r.unacked;
        m.window_resets += r.window_resets;
        m.errors
            .extend(r.error.iter().map(|e| format!("publisher: {e}")));
    }
    for (st, err) in &sub_results {
        for (_, s) in st.finish(&sent) {
            m.streams.add(&s);
            m.stream_count += 1;
            m.streams_with_loss += u64::from(s.lost > 0);
        }
        m.delivered_in_window += st.delivered_in_window;
        m.unexpected += st.unexpected;
        m.errors
            .extend(err.iter().map(|e| format!("subscriber: {e}")));
    }
    let secs = args.duration.as_secs_f64();
    m.sent_per_sec = m.sent_in_window as f64 / secs;
    m.delivered_per_sec = m.delivered_in_window as f64 / secs;
    if m.streams.lost > 0 && args.qos != QoS::AtMostOnce {
        warnings.push(format!(
            "{} QoS {} messages lost",
            m.streams.lost,
            args.qos.as_u8()
        ));
    }
    if args.rate > 0 && (m.sent_per_sec as u64) < args.rate * 95 / 100 {
        warnings.push(format!(
            "sent {:.0} msg/s, below the target {} msg/s",
            m.sent_per_sec, args.rate
        ));
    }

    let generator = GeneratorStats::new(&[cpu1.saturating_sub(cpu0)], wall, args.common.threads);
    let broker = env.broker.map(|b| {
        let (cpu_seconds, cpu_percent, cpu_ns_per_message) = report::broker_cpu(
            broker0,
            broker1,
            wall,
            m.sent_in_window.max(m.delivered_in_window),
        );
        BrokerStats {
            pid: b.pid,
            rss_before_bytes: broker_before.map(|s| s.rss_bytes),
            rss_connected_bytes: broker_connected.map(|s| s.rss_bytes),
            rss_after_bytes: broker1.map(|s| s.rss_bytes),
            memory_per_connection_bytes: report::memory_per_connection(
                broker_before,
                broker_connected,
                topo.connections() as u64,
            ),
            cpu_seconds,
            cpu_percent,
            cpu_ns_per_message,
            ..BrokerStats::default()
        }
    });
    Ok(Report {
        scenario: shape.name().to_string(),
        target: env.target.to_string(),
        protocol: env.protocol_name().to_string(),
        connections: topo.connections() as u64,
        generator,
        broker,
        messages: Some(m),
        conn: None,
        storm: None,
        warnings,
    })
}

/// The shared tick of an open-loop run (none for closed loop, or if the timerfd fails, in
/// which case tokio's timers pace, less precisely).
pub fn start_ticker(
    rate: u64,
    clock: crate::clock::Clock,
    tick: Duration,
    warnings: &mut Vec<String>,
) -> (Option<Arc<Ticker>>, Option<TickerGuard>) {
    if rate == 0 {
        return (None, None);
    }
    match Ticker::start(clock, tick) {
        Ok((t, g)) => (Some(t), Some(g)),
        Err(e) => {
            warnings.push(format!(
                "no precise ticker ({e}): pacing on 1 ms tokio timers"
            ));
            (None, None)
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until every owed delivery arrived, deliveries went quiet, or the drain timed out.
async fn drain(live: &Live, expected: u64, limit: Duration) {
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

async fn open_subscribers(
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

async fn open_publishers(
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

/// Every connection of a message scenario is needed: the first failure aborts the run.
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
