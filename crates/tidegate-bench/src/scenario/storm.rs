//! `storm`: N persistent sessions disconnect at once, messages are queued for them, they all
//! reconnect: how long until every session is resumed and every queued message delivered.
//!
//! Place in the data flow: `main` → [`run`] → set-up (each session connects with a fresh
//! persistent session and subscribes to its own topic) → every session sends DISCONNECT at the
//! same moment → one publisher connection queues `--messages` per session through
//! [`publisher::run`] (acknowledged by the broker, so they are stored) → every session
//! reconnects (clean start 0) at once or at `--conn-rate` → each counts its deliveries with a
//! [`SubscriberState`] until its queue is drained → clean-up removes the sessions → [`Report`].
//!
//! MQTT 3.1.1 has no session expiry: a session is persistent when Clean Session is 0, so the
//! set-up first connects with Clean Session 1 (dropping any stale session of that client id)
//! and then again with 0. MQTT 5 does both at once: Clean Start 1 with a Session Expiry
//! Interval. Clean-up mirrors it (v5: DISCONNECT with expiry 0; 3.1.1: reconnect clean).

use super::live::{Live, Recorders};
use super::publisher::{self, PublisherPlan, PublisherResult, StreamOut};
use super::subscriber::{self, SubscriberPlan, SubscriberState};
use super::{MESSAGE_READ_CHUNK, RunEnv, ScenarioError, open_many, spawn_progress};
use crate::cli::StormArgs;
use crate::client::{ConnectOptions, Connection};
use crate::latency::LatencyHistogram;
use crate::pacing::Pacer;
use crate::report::{self, BrokerStats, GeneratorStats, Report, StormStats};
use crate::resources;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tidegate_protocol::{ProtocolVersion, Utf8};
use tokio::sync::watch;

/// After every session has resumed, deliveries silent for this long end the wait (e.g. QoS 0
/// messages a broker did not queue).
const QUIET_DRAIN: Duration = Duration::from_secs(2);

struct SessionEnd {
    resume_ns: Option<u64>,
    present: bool,
    complete_ns: Option<u64>,
    state: SubscriberState,
    error: Option<String>,
}

#[derive(Default)]
struct Progress {
    resumed: AtomicU64,
    failed: AtomicU64,
    finished: AtomicU64,
}

/// Runs `storm`.
pub async fn run(args: &StormArgs) -> Result<Report, ScenarioError> {
    args.validate()?;
    let env = RunEnv::new(&args.common).await?;
    let n = args.common.connections;
    let fd_limit = resources::raise_nofile_limit();
    if u64::from(n) + 64 > fd_limit {
        return Err(ScenarioError::Failed(format!(
            "{n} sessions exceed the open-files limit of {fd_limit}"
        )));
    }
    let mut warnings = Vec::new();
    let broker_before = env.broker.and_then(|b| b.sample(&mut warnings));
    let topics: Vec<Utf8> = (0..n)
        .map(|i| Utf8::try_from(format!("{}/s/{i}", env.topic_prefix)))
        .collect::<Result<_, _>>()
        .map_err(|e| ScenarioError::Failed(e.to_string()))?;

    // Set-up: persistent sessions, subscribed.
    let setup = open_many(n, args.common.conn_rate, |i| {
        let env = env.clone();
        let topic = topics.get(i as usize).cloned().unwrap_or_default();
        let (qos, expiry) = (args.qos, args.session_expiry);
        async move {
            let opts = session_options(&env, i, expiry);
            if env.version == ProtocolVersion::V311 {
                let fresh = ConnectOptions {
                    clean_start: true,
                    ..opts.clone()
                };
                Connection::open(&env.endpoint, env.source(), &fresh)
                    .await?
                    .disconnect(None)
                    .await;
            }
            let first = ConnectOptions {
                clean_start: env.version.is_v5(),
                ..opts
            };
            let mut conn = Connection::open(&env.endpoint, env.source(), &first).await?;
            conn.subscribe(&[(topic, qos)], env.connect_timeout).await?;
            Ok(conn)
        }
    })
    .await;
    let mut sessions = Vec::with_capacity(n as usize);
    for (i, r) in setup.into_iter().enumerate() {
        sessions.push(r.map_err(|source| ScenarioError::Client {
            what: format!("session {i}"),
            source,
        })?);
    }
    let popts = env.connect_options(
        format!("{}-storm-pub", env.client_prefix),
        true,
        MESSAGE_READ_CHUNK,
    );
    let pub_conn = Connection::open(&env.endpoint, env.source(), &popts)
        .await
        .map_err(|source| ScenarioError::Client {
            what: "publisher".into(),
            source,
        })?;
    let broker_connected = env.broker.and_then(|b| b.sample(&mut warnings));

    // Everyone leaves at once.
    let leaving: Vec<_> = sessions
        .into_iter()
        .map(|c| tokio::spawn(c.disconnect(None)))
        .collect();
    for h in leaving {
        let _ = h.await;
    }

    // Queue messages for the offline sessions.
    let clock = env.clock;
    let live = Arc::new(Live::default());
    let rec = Arc::new(Recorders::default());
    let (ticker, _ticker_guard) =
        super::messaging::start_ticker(args.rate, clock, args.tick, &mut warnings);
    let t_pub = Instant::now();
    let tick_ns = u64::try_from(args.tick.as_nanos()).unwrap_or(u64::MAX);
    let start_ns = super::ticker::next_grid_point(clock.ns_at(t_pub), tick_ns);
    let plan = PublisherPlan {
        streams: topics
            .iter()
            .zip(0..)
            .map(|(t, id)| StreamOut {
                id,
                topic: t.clone(),
            })
            .collect(),
        qos: args.qos,
        payload: args.payload,
        pacer: Pacer::new(start_ns, args.rate, 1, 0),
        tick: args.tick,
        ticker,
        window: args.window,
        start_ns,
        warmup_end_ns: u64::MAX,
        end_ns: u64::MAX,
        max_messages: Some(u64::from(n) * u64::from(args.messages)),
        drain: args.drain,
        clock,
        live: live.clone(),
        rec: rec.clone(),
        feedback: None,
    };
    let published: PublisherResult = publisher::run(pub_conn, plan).await;
    let publish_seconds = t_pub.elapsed().as_secs_f64();
    let nn = n as usize;
    let sent: Arc<Vec<u64>> = Arc::new((0..nn).map(|j| published.sent_on_stream(j, nn)).collect());

    // The storm: everyone comes back.
    let cpu0 = resources::self_cpu_ns();
    let broker0 = env.broker.and_then(|b| b.sample(&mut warnings));
    let t0 = Instant::now();
    let t0_ns = clock.ns_at(t0);
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress_counts = Arc::new(Progress::default());
    let mut tasks = Vec::with_capacity(nn);
    for i in 0..n {
        let env = env.clone();
        let (sent, live, rec, counts) = (
            sent.clone(),
            live.clone(),
            rec.clone(),
            progress_counts.clone(),
        );
        let mut stop = stop_rx.clone();
        let at = Pacer::new(t0_ns, args.common.conn_rate, n, i)
            .map(|p| p.intended_ns(0))
            .unwrap_or(t0_ns);
        let expiry = args.session_expiry;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(clock.instant_at(at).into()).await;
            let plan = SubscriberPlan {
                hears: i..i + 1,
                warmup_end_ns: u64::MAX,
                end_ns: u64::MAX,
                clock,
                live,
                rec,
                feedback: None,
            };
            let expected = sent.get(i as usize).copied().unwrap_or(0);
            let end = resume(&env, i, expiry, expected, t0_ns, &plan, &counts, &mut stop).await;
            counts.finished.fetch_add(1, Ordering::Relaxed);
            end
        }));
    }
    let progress = {
        let (live, counts) = (live.clone(), progress_counts.clone());
        spawn_progress(env.quiet, stop_rx.clone(), move |t| {
            format!(
                "[{:>6.1}s] resumed {}  delivered {}",
                t.as_secs_f64(),
                counts.resumed.load(Ordering::Relaxed),
                Live::get(&live.delivered)
            )
        })
    };
    let total_expected: u64 = sent.iter().sum();
    wait_for_storm(
        &live,
        &progress_counts,
        u64::from(n),
        total_expected,
        args.drain,
    )
    .await;
    let storm_wall = t0.elapsed();
    let (cpu1, broker1) = (
        resources::self_cpu_ns(),
        env.broker.and_then(|b| b.sample(&mut warnings)),
    );
    let _ = stop_tx.send(true);
    let mut ends = Vec::with_capacity(nn);
    for t in tasks {
        match t.await {
            Ok(e) => ends.push(e),
            Err(e) => warnings.push(format!("session task failed: {e}")),
        }
    }
    let _ = progress.await;

    let mut s = StormStats {
        sessions: u64::from(n),
        messages_per_session: args.messages,
        qos: args.qos.as_u8(),
        publish_seconds,
        ..StormStats::default()
    };
    if let Some(e) = &published.error {
        s.errors.push(format!("publisher: {e}"));
    }
    let (mut resume_h, mut complete_h) = (LatencyHistogram::new(), LatencyHistogram::new());
    for e in &ends {
        match e.resume_ns {
            Some(r) => {
                resume_h.record(r);
                s.resume_all_seconds = s.resume_all_seconds.max(r as f64 / 1e9);
                if e.present {
                    s.resumed += 1
                } else {
                    s.session_lost += 1
                }
            }
            None => s.reconnect_failed += 1,
        }
        match e.complete_ns {
            Some(c) => {
                complete_h.record(c);
                s.deliver_all_seconds = s.deliver_all_seconds.max(c as f64 / 1e9);
            }
            None => s.incomplete_sessions += 1,
        }
        for (_, st) in e.state.finish(&sent) {
            s.streams.add(&st);
        }
        if let Some(err) = &e.error {
            s.errors.push(err.clone());
        }
    }
    s.errors.truncate(20);
    s.resume_latency = resume_h.summary();
    s.complete_latency = complete_h.summary();
    if s.streams.lost > 0 && args.qos.as_u8() > 0 {
        warnings.push(format!(
            "{} queued QoS {} messages lost",
            s.streams.lost,
            args.qos.as_u8()
        ));
    }
    if s.session_lost > 0 {
        warnings.push(format!(
            "{} sessions were not present on reconnect",
            s.session_lost
        ));
    }
    let broker = env.broker.map(|b| {
        let (cpu_seconds, cpu_percent, cpu_ns_per_message) =
            report::broker_cpu(broker0, broker1, storm_wall, total_expected);
        BrokerStats {
            pid: b.pid,
            rss_before_bytes: broker_before.map(|x| x.rss_bytes),
            rss_connected_bytes: broker_connected.map(|x| x.rss_bytes),
            rss_after_bytes: broker1.map(|x| x.rss_bytes),
            memory_per_connection_bytes: report::memory_per_connection(
                broker_before,
                broker_connected,
                u64::from(n) + 1,
            ),
            cpu_seconds,
            cpu_percent,
            cpu_ns_per_message,
            ..BrokerStats::default()
        }
    });
    Ok(Report {
        scenario: "storm".into(),
        target: env.target.to_string(),
        protocol: env.protocol_name().into(),
        connections: u64::from(n),
        generator: GeneratorStats::new(
            &[cpu1.saturating_sub(cpu0)],
            storm_wall,
            args.common.threads,
        ),
        broker,
        messages: None,
        conn: None,
        storm: Some(s),
        http: None,
        warnings,
    })
}

fn session_options(env: &RunEnv, i: u32, expiry: u32) -> ConnectOptions {
    ConnectOptions {
        session_expiry: Some(expiry),
        ..env.connect_options(
            format!("{}-storm-{i}", env.client_prefix),
            false,
            MESSAGE_READ_CHUNK,
        )
    }
}

/// One session's return: reconnect, drain its queue, wait for the end, clean up.
#[allow(clippy::too_many_arguments)]
async fn resume(
    env: &RunEnv,
    i: u32,
    expiry: u32,
    expected: u64,
    t0_ns: u64,
    plan: &SubscriberPlan,
    counts: &Progress,
    stop: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let mut end = SessionEnd {
        resume_ns: None,
        present: false,
        complete_ns: None,
        state: SubscriberState::new(plan.hears.clone()),
        error: None,
    };
    let opts = session_options(env, i, expiry);
    let mut conn = match Connection::open(&env.endpoint, env.source(), &opts).await {
        Ok(c) => c,
        Err(e) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            end.error = Some(format!("session {i} reconnect: {e}"));
            return end;
        }
    };
    end.resume_ns = Some(plan.clock.now_ns().saturating_sub(t0_ns));
    end.present = conn.connack.session_present;
    counts.resumed.fetch_add(1, Ordering::Relaxed);
    let r = subscriber::receive(&mut conn, &mut end.state, plan, stop, |st| {
        st.unique() >= expected
    })
    .await;
    if let Err(e) = r {
        end.error = Some(format!("session {i}: {e}"));
    } else if end.state.unique() >= expected {
        end.complete_ns = Some(plan.clock.now_ns().saturating_sub(t0_ns));
        // Stay connected (acks flowing, late duplicates counted) until everyone is done.
        if let Err(e) = subscriber::receive(&mut conn, &mut end.state, plan, stop, |_| false).await
        {
            end.error = Some(format!("session {i}: {e}"));
        }
    }
    cleanup(env, conn, i).await;
    end
}

/// Removes the session from the broker so runs do not accumulate state.
async fn cleanup(env: &RunEnv, conn: Connection, i: u32) {
    if env.version.is_v5() {
        conn.disconnect(Some(0)).await;
        return;
    }
    conn.disconnect(None).await;
    let opts = ConnectOptions {
        clean_start: true,
        ..session_options(env, i, 0)
    };
    if let Ok(c) = Connection::open(&env.endpoint, env.source(), &opts).await {
        c.disconnect(None).await;
    }
}

/// Waits until every session finished (or failed), deliveries went quiet after everyone
/// resumed, or the drain ran out.
async fn wait_for_storm(
    live: &Live,
    counts: &Progress,
    sessions: u64,
    expected: u64,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut last = Live::get(&live.delivered);
    let mut last_change = Instant::now();
    loop {
        let now = Instant::now();
        let delivered = Live::get(&live.delivered);
        let everyone_back = counts.resumed.load(Ordering::Relaxed)
            + counts.failed.load(Ordering::Relaxed)
            >= sessions;
        if counts.finished.load(Ordering::Relaxed) >= sessions
            || (everyone_back && delivered >= expected)
            || now >= deadline
        {
            return;
        }
        if delivered != last {
            last = delivered;
            last_change = now;
        } else if everyone_back && now.duration_since(last_change) >= QUIET_DRAIN {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
