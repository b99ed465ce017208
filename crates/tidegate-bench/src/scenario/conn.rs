//! `conn`: open N idle connections at `--conn-rate`, hold them, and measure what they cost the
//! broker: RSS per connection overall and as a slope between `--rss-checkpoints`.
//!
//! Place in the data flow: `main` → [`run`] → workers (in-process, or K children re-executing
//! this tool) → a monitor that polls their counters every 10 ms, samples the broker's RSS when
//! a checkpoint is crossed (recording the *actual* count at that moment, so the slope is not
//! skewed by overshoot) → hold for `--duration` → release → merged [`WorkerOutcome`]s →
//! [`Report`].

use super::conn_children::{self, ChildHandle};
use super::conn_worker::{ConnCounters, WorkerOutcome, open_and_hold};
use super::{RunEnv, ScenarioError, spawn_progress};
use crate::cli::ConnArgs;
use crate::latency::LatencyHistogram;
use crate::report::{self, BrokerStats, ConnStats, GeneratorStats, Report, RssCheckpoint};
use crate::resources;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// File descriptors kept free for the process itself (stdio, runtime, /proc reads).
const FD_RESERVE: u64 = 64;
const POLL: Duration = Duration::from_millis(10);

enum Workers {
    InProcess {
        release: watch::Sender<bool>,
        task: tokio::task::JoinHandle<WorkerOutcome>,
    },
    Children(Vec<ChildHandle>),
}

/// Runs `conn` (the parent side when `--processes` > 1).
pub async fn run(args: &ConnArgs) -> Result<Report, ScenarioError> {
    args.validate()?;
    let env = RunEnv::new(&args.common).await?;
    let fd_limit = resources::raise_nofile_limit();
    let per_process = u64::from(args.common.connections.div_ceil(args.processes));
    if per_process + FD_RESERVE > fd_limit {
        return Err(ScenarioError::Failed(format!(
            "{per_process} connections per process exceed the open-files limit of {fd_limit}: use --processes {}",
            u64::from(args.common.connections).div_ceil(fd_limit.saturating_sub(FD_RESERVE).max(1))
        )));
    }
    let mut warnings = Vec::new();
    let requested = u64::from(args.common.connections);
    let broker_before = env.broker.and_then(|b| b.sample(&mut warnings));
    let t_start = Instant::now();
    let cpu_start = resources::self_cpu_ns();

    let (workers, counters) = if args.processes > 1 {
        let children = conn_children::spawn(args, &env)?;
        let counters: Vec<Arc<ConnCounters>> =
            children.iter().map(|c| c.counters.clone()).collect();
        (Workers::Children(children), counters)
    } else {
        let counters = Arc::new(ConnCounters::default());
        let (release, rx) = watch::channel(false);
        let task = {
            let (env, counters) = (env.clone(), counters.clone());
            let (n, rate) = (args.common.connections, args.common.conn_rate);
            tokio::spawn(async move { open_and_hold(&env, n, rate, counters, rx).await })
        };
        (Workers::InProcess { release, task }, vec![counters])
    };
    let totals = move || {
        counters
            .iter()
            .map(|c| c.get())
            .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2))
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = {
        let totals = totals.clone();
        spawn_progress(env.quiet, stop_rx, move |t| {
            let (o, f, d) = totals();
            format!(
                "[{:>6.1}s] open {o}  failed {f}  dropped {d}",
                t.as_secs_f64()
            )
        })
    };

    // Opening, with RSS checkpoints.
    let mut checkpoints = Vec::new();
    let mut pending = args.rss_checkpoints.iter().copied().peekable();
    loop {
        let (opened, failed, _) = totals();
        while let Some(cp) = pending.next_if(|cp| opened >= *cp) {
            if let Some(s) = env.broker.and_then(|b| b.sample(&mut warnings)) {
                // The count may have moved past the checkpoint; record what was really open.
                checkpoints.push(RssCheckpoint {
                    connections: totals().0.max(cp),
                    rss_bytes: s.rss_bytes,
                });
            }
        }
        if opened + failed >= requested {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let opened_at = Instant::now();
    let broker_connected = env.broker.and_then(|b| b.sample(&mut warnings));
    let broker_cpu0 = broker_before;

    tokio::time::sleep(args.duration).await;
    let broker_after = env.broker.and_then(|b| b.sample(&mut warnings));
    let hold_seconds = opened_at.elapsed().as_secs_f64();
    let wall = t_start.elapsed();

    // Release and collect.
    let mut outcome = WorkerOutcome::default();
    let mut per_process_cpu = Vec::new();
    match workers {
        Workers::InProcess { release, task } => {
            let _ = release.send(true);
            match task.await {
                Ok(o) => outcome.merge(&o),
                Err(e) => warnings.push(format!("worker failed: {e}")),
            }
            per_process_cpu.push(resources::self_cpu_ns().saturating_sub(cpu_start));
        }
        Workers::Children(children) => {
            // Released together, so their disconnects overlap instead of running in turn.
            let finishing: Vec<_> = children
                .into_iter()
                .map(|c| tokio::spawn(c.finish(Duration::from_secs(60))))
                .collect();
            for (i, h) in finishing.into_iter().enumerate() {
                match h.await {
                    Ok(Ok(o)) => {
                        per_process_cpu.push(o.cpu_ns);
                        outcome.merge(&o);
                    }
                    Ok(Err(e)) => warnings.push(format!("child {i}: {e}")),
                    Err(e) => warnings.push(format!("child {i}: {e}")),
                }
            }
            // The parent only watched; its own CPU is reported with the children's.
            per_process_cpu.push(resources::self_cpu_ns().saturating_sub(cpu_start));
        }
    }
    let _ = stop_tx.send(true);
    let _ = progress.await;

    let open_seconds = outcome.open_ns as f64 / 1e9;
    let conn = ConnStats {
        requested,
        opened: outcome.opened,
        failed: outcome.failed,
        dropped: outcome.dropped,
        open_seconds,
        open_rate: if open_seconds > 0.0 {
            outcome.opened as f64 / open_seconds
        } else {
            0.0
        },
        hold_seconds,
        connect_latency: LatencyHistogram::from_pairs(&outcome.connect_latency).summary(),
        errors: outcome.errors.clone(),
    };
    if conn.opened < requested {
        warnings.push(format!(
            "only {} of {requested} connections opened",
            conn.opened
        ));
    }
    let broker = env.broker.map(|b| {
        let (cpu_seconds, cpu_percent, _) = report::broker_cpu(broker_cpu0, broker_after, wall, 0);
        BrokerStats {
            pid: b.pid,
            rss_before_bytes: broker_before.map(|s| s.rss_bytes),
            rss_connected_bytes: broker_connected.map(|s| s.rss_bytes),
            rss_after_bytes: broker_after.map(|s| s.rss_bytes),
            memory_per_connection_bytes: report::memory_per_connection(
                broker_before,
                broker_connected,
                outcome.opened,
            ),
            slope_bytes_per_connection: report::rss_slope(&checkpoints),
            checkpoints: checkpoints.clone(),
            cpu_seconds,
            cpu_percent,
            cpu_ns_per_message: None,
        }
    });
    Ok(Report {
        scenario: "conn".into(),
        target: env.target.to_string(),
        protocol: env.protocol_name().into(),
        connections: requested,
        generator: GeneratorStats::new(&per_process_cpu, wall, args.common.threads),
        broker,
        messages: None,
        conn: Some(conn),
        storm: None,
        http: None,
        warnings,
    })
}
