//! Opening idle connections at a paced rate and holding them: the work of `conn`, done either
//! in-process or by each child process of `--processes`.
//!
//! Place in the data flow: `conn` (or a child) → [`open_and_hold`] → one task per connection:
//! connect, CONNACK, then sleep until a PINGREQ is due or the broker writes → shared
//! [`ConnCounters`] (watched by the RSS checkpoints and the progress line) → a
//! [`WorkerOutcome`] once released.
//!
//! Each held connection costs the generator a task, a 128-byte read buffer and one timer
//! entry, so 19,000 of them fit easily in one process (the limit is the open-files limit).

use super::{DEFAULT_CONNECT_CONCURRENCY, IDLE_READ_CHUNK, RunEnv};
use crate::client::{ClientError, Connection};
use crate::latency::LatencyHistogram;
use crate::pacing::Pacer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tidegate_protocol::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Live counts of one worker (in-process, or mirrored from a child's progress lines).
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Connections that got their CONNACK.
    pub opened: AtomicU64,
    /// Attempts that failed.
    pub failed: AtomicU64,
    /// Open connections the broker closed.
    pub dropped: AtomicU64,
}

impl ConnCounters {
    /// (opened, failed, dropped).
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// Overwrites all three (a child's latest progress line).
    pub fn set(&self, opened: u64, failed: u64, dropped: u64) {
        self.opened.store(opened, Ordering::Relaxed);
        self.failed.store(failed, Ordering::Relaxed);
        self.dropped.store(dropped, Ordering::Relaxed);
    }
}

/// What a worker reports once released. Serialisable: a child sends it as its last line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerOutcome {
    /// Connections that got their CONNACK.
    pub opened: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Open connections the broker closed.
    pub dropped: u64,
    /// First attempt → last CONNACK or failure, ns.
    pub open_ns: u64,
    /// The worker process's CPU time over its whole run, ns.
    pub cpu_ns: u64,
    /// Connect latencies as (value, count) pairs.
    pub connect_latency: Vec<(u64, u64)>,
    /// Distinct errors and how often each happened.
    pub errors: Vec<(String, u64)>,
}

impl WorkerOutcome {
    /// Adds another worker's outcome (children merged by the parent). CPU is kept per process
    /// by the caller, so it is summed here only as a total.
    pub fn merge(&mut self, o: &WorkerOutcome) {
        self.opened += o.opened;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.open_ns = self.open_ns.max(o.open_ns);
        self.cpu_ns += o.cpu_ns;
        let mut h = LatencyHistogram::from_pairs(&self.connect_latency);
        h.merge(&LatencyHistogram::from_pairs(&o.connect_latency));
        self.connect_latency = h.to_pairs();
        let mut errs: BTreeMap<String, u64> = self.errors.drain(..).collect();
        for (e, n) in &o.errors {
            *errs.entry(e.clone()).or_default() += n;
        }
        self.errors = errs.into_iter().collect();
    }
}

enum TaskEnd {
    Failed(String),
    Held,
}

/// Opens `count` connections at `rate` per second (0: as fast as possible, bounded), holds
/// them until `release` turns true, closes them, and reports.
pub async fn open_and_hold(
    env: &RunEnv,
    count: u32,
    rate: u64,
    counters: Arc<ConnCounters>,
    release: watch::Receiver<bool>,
) -> WorkerOutcome {
    let started = Instant::now();
    let cpu_start = crate::resources::self_cpu_ns();
    let clock = env.clock;
    let first_ns = clock.ns_at(started);
    let mut pacer = Pacer::new(first_ns, rate, 1, 0);
    let limit = Arc::new(Semaphore::new(if pacer.is_some() {
        Semaphore::MAX_PERMITS
    } else {
        DEFAULT_CONNECT_CONCURRENCY
    }));
    let last_done = Arc::new(AtomicU64::new(first_ns));
    let mut latency = LatencyHistogram::new();
    let mut set = JoinSet::new();
    for i in 0..count {
        let intended_ns = match pacer.as_mut() {
            Some(p) => {
                let t = p.next_ns();
                tokio::time::sleep_until(clock.instant_at(t).into()).await;
                p.pop_due(u64::MAX);
                t
            }
            None => clock.now_ns(),
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let opts =
            env.connect_options(format!("{}-c{i}", env.client_prefix), true, IDLE_READ_CHUNK);
        let (endpoint, source) = (env.endpoint.clone(), env.source());
        let (counters, last_done, release) = (counters.clone(), last_done.clone(), release.clone());
        set.spawn(async move {
            let opened = Connection::open(&endpoint, source, &opts).await;
            let done_ns = clock.now_ns();
            last_done.fetch_max(done_ns, Ordering::Relaxed);
            drop(permit);
            match opened {
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    (None, TaskEnd::Failed(e.to_string()))
                }
                Ok(conn) => {
                    counters.opened.fetch_add(1, Ordering::Relaxed);
                    let lat = done_ns.saturating_sub(intended_ns);
                    let dropped = hold(conn, release).await.is_err();
                    if dropped {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some(lat), TaskEnd::Held)
                }
            }
        });
    }
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((lat, end)) => {
                if let Some(l) = lat {
                    latency.record(l);
                }
                if let TaskEnd::Failed(e) = end {
                    *errors.entry(e).or_default() += 1;
                }
            }
            Err(e) => *errors.entry(format!("task failed: {e}")).or_default() += 1,
        }
    }
    let (opened, failed, dropped) = counters.get();
    WorkerOutcome {
        opened,
        failed,
        dropped,
        open_ns: last_done.load(Ordering::Relaxed).saturating_sub(first_ns),
        cpu_ns: crate::resources::self_cpu_ns().saturating_sub(cpu_start),
        connect_latency: latency.to_pairs(),
        errors: errors.into_iter().collect(),
    }
}

/// Holds an idle connection: answers nothing, pings on keep alive, notices the broker closing.
/// `Ok` when released (after a DISCONNECT), `Err` when the broker dropped it.
async fn hold(mut conn: Connection, mut release: watch::Receiver<bool>) -> Result<(), ClientError> {
    loop {
        if *release.borrow() {
            conn.disconnect(None).await;
            return Ok(());
        }
        let now = Instant::now();
        conn.queue_ping_if_due(now)?;
        let wake = conn.ping_due().unwrap_or(now + Duration::from_secs(86_400));
        conn.prepare_read();
        tokio::select! {
            r = conn.rd.read_buf(&mut conn.rbuf) => {
                if r? == 0 {
                    return Err(ClientError::Closed);
                }
                while let Some(p) = conn.decode()? {
                    match p {
                        Packet::PingResp => {}
                        Packet::Disconnect(d) => return Err(ClientError::Disconnected(d.reason_code)),
                        other => return Err(ClientError::Unexpected(other.name())),
                    }
                }
            }
            r = conn.wr.write(&conn.wbuf), if !conn.wbuf.is_empty() => {
                let n = r?;
                conn.wrote(n, Instant::now());
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            r = release.changed() => {
                if r.is_err() {
                    conn.disconnect(None).await;
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_merge_counts_latencies_and_errors() {
        let mut a = WorkerOutcome {
            opened: 10,
            failed: 1,
            dropped: 0,
            open_ns: 5,
            cpu_ns: 100,
            connect_latency: LatencyHistogram::from_pairs(&[(1_000, 10)]).to_pairs(),
            errors: vec![("refused".into(), 1)],
        };
        let b = WorkerOutcome {
            opened: 5,
            failed: 2,
            dropped: 1,
            open_ns: 9,
            cpu_ns: 50,
            connect_latency: LatencyHistogram::from_pairs(&[(3_000, 5)]).to_pairs(),
            errors: vec![("refused".into(), 1), ("timeout".into(), 1)],
        };
        a.merge(&b);
        assert_eq!(
            (a.opened, a.failed, a.dropped, a.open_ns, a.cpu_ns),
            (15, 3, 1, 9, 150)
        );
        assert_eq!(LatencyHistogram::from_pairs(&a.connect_latency).len(), 15);
        assert_eq!(
            a.errors,
            vec![("refused".to_string(), 2), ("timeout".to_string(), 1)]
        );
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<WorkerOutcome>(&json).unwrap(), a);
    }
}
