//! pairs, fanin and fanout: set up the topology, run timed traffic, drain, account, report.
//!
//! Place in the data flow: `main` → [`run`] → subscribers connected and subscribed first, then
//! publishers → every connection's task started at one common instant → warm-up → measured
//! window (generator and broker CPU sampled at both ends) → publishers stop and collect their
//! acks → deliveries drain → subscribers stop → per-stream accounting against each publisher's
//! sent count → [`Report`]. The steps shared with the `http` scenario live in
//! [`super::traffic`].

use super::live::{Live, Recorders};
use super::publisher::{self, PublisherPlan, PublisherResult, StreamOut};
use super::ticker::{Ticker, TickerGuard};
use super::topology::{Shape, Topology};
use super::traffic::{self, SubscriberShared, Timing};
use super::{RunEnv, ScenarioError};
use crate::cli::MessageArgs;
use crate::pacing::Pacer;
use crate::report::{GeneratorStats, MessageStats, Report};
use std::sync::Arc;
use std::time::Duration;
use tidegate_protocol::Utf8;
use tokio::sync::watch;

/// Runs one message scenario.
pub async fn run(shape: Shape, args: &MessageArgs) -> Result<Report, ScenarioError> {
    args.validate()?;
    let env = RunEnv::new(&args.common).await?;
    let topo = Topology::build(shape, args.common.connections, &env.topic_prefix);
    let mut warnings = Vec::new();
    let broker_before = env.broker.and_then(|b| b.sample(&mut warnings));

    let subs = traffic::open_subscribers(&env, &topo, args).await?;
    let pubs = traffic::open_publishers(&env, &topo, args).await?;
    let broker_connected = env.broker.and_then(|b| b.sample(&mut warnings));

    let clock = env.clock;
    let timing = Timing::new(clock, args.tick, args.warmup, args.duration);
    let live = Arc::new(Live::default());
    let rec = Arc::new(Recorders::default());
    let feedback = traffic::feedback_for(args.rate, args.qos, topo.publishers.len());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ticker, _ticker_guard) = start_ticker(args.rate, clock, args.tick, &mut warnings);

    let shared = SubscriberShared {
        timing,
        clock,
        live: live.clone(),
        rec: rec.clone(),
        feedback: feedback.clone(),
    };
    let sub_tasks = traffic::spawn_subscribers(&topo.subscribers, subs, &shared, &stop_rx);
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
            pacer: Pacer::new(timing.start_ns, args.rate, publishers, spec.id),
            tick: args.tick,
            ticker: ticker.clone(),
            window: args.window,
            start_ns: timing.start_ns,
            warmup_end_ns: timing.warmup_end_ns,
            end_ns: timing.end_ns,
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

    let progress = traffic::spawn_rate_progress(env.quiet, live.clone(), stop_rx.clone());
    let window = traffic::measure_window(&env, &timing, &mut warnings).await;

    let mut pub_results = Vec::with_capacity(pub_tasks.len());
    for t in pub_tasks {
        pub_results.push(t.await.unwrap_or_else(|e| PublisherResult {
            error: Some(format!("publisher task failed: {e}")),
            ..Default::default()
        }));
    }
    let sent: Vec<u64> = pub_results.iter().map(|r| r.sent).collect();
    let expected = topo.expected_deliveries(&sent);
    traffic::drain(&live, expected, args.drain).await;
    let _ = stop_tx.send(true);
    let sub_results = traffic::join_subscribers(sub_tasks, &mut warnings).await;
    let _ = progress.await;

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
    traffic::add_subscriber_results(&mut m, &sub_results, &sent, "subscriber");
    traffic::finish_rates(&mut m, args.qos, args.rate, args.duration, &mut warnings);

    window.stamp(&mut m);
    let generator = GeneratorStats::new(&[window.cpu_ns], window.wall, args.common.threads);
    let broker = traffic::broker_stats(
        &env,
        broker_before,
        broker_connected,
        &window,
        topo.connections() as u64,
        m.sent_in_window.max(m.delivered_in_window),
    );
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
        http: None,
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
