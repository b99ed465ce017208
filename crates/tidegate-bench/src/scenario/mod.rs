//! The scenarios, and what they share: the run environment, opening many connections at a
//! paced rate, the broker probe, and the once-a-second progress line.
//!
//! Place in the data flow: `main` → a scenario's `run` → connections ([`crate::client`]) and
//! per-connection tasks (`publisher`, `subscriber`, or the idle holders of `conn`) → results
//! merged into a [`crate::report::Report`].

pub mod conn;
pub mod conn_children;
pub mod conn_worker;
pub mod handshake;
pub mod http;
pub mod live;
pub mod messaging;
pub mod publisher;
pub mod storm;
pub mod subscriber;
pub mod ticker;
pub mod ticket_store;
pub mod topology;
pub mod traffic;

use crate::cli::{CliError, CommonArgs};
use crate::client::{ClientError, ConnectOptions};
use crate::clock::Clock;
use crate::pacing::Pacer;
use crate::procfs::{self, ProcSample};
use crate::source_addrs::SourceAddrs;
use crate::target::Target;
use crate::transport::{Endpoint, ResolveError};
use std::future::Future;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_protocol::ProtocolVersion;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Why a scenario could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Bad options.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// The broker address does not resolve, or its TLS settings are unusable.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A client failed during set-up.
    #[error("{what}: {source}")]
    Client {
        /// Which client and step.
        what: String,
        /// Why.
        source: ClientError,
    },
    /// An HTTP exchange failed during set-up (http scenario).
    #[error("{what}: {source}")]
    Http {
        /// Which connection and step.
        what: String,
        /// Why.
        source: crate::http_client::HttpError,
    },
    /// Anything else that stops the run (a child process failing, a runtime error).
    #[error("{0}")]
    Failed(String),
}

/// Read chunk for connections that carry messages.
pub const MESSAGE_READ_CHUNK: usize = 64 * 1024;
/// Read chunk for idle connections: only CONNACK and PINGRESP ever arrive.
pub const IDLE_READ_CHUNK: usize = 64;
/// Connection attempts in flight at once when no `--conn-rate` is given.
pub const DEFAULT_CONNECT_CONCURRENCY: usize = 64;

/// Everything a scenario needs from the shared options, resolved once.
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// The broker as given.
    pub target: Target,
    /// The broker resolved.
    pub endpoint: Endpoint,
    /// Source addresses for client sockets.
    pub sources: Option<Arc<SourceAddrs>>,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Keep alive, seconds.
    pub keep_alive: u16,
    /// Credentials.
    pub username: Option<String>,
    /// Credentials.
    pub password: Option<String>,
    /// Connect/SUBACK timeout.
    pub connect_timeout: Duration,
    /// Client ids start with this.
    pub client_prefix: String,
    /// Topics start with this.
    pub topic_prefix: String,
    /// The broker process to sample.
    pub broker: Option<BrokerProbe>,
    /// No progress lines.
    pub quiet: bool,
    /// The run's time base.
    pub clock: Clock,
}

impl RunEnv {
    /// Resolves the shared options.
    pub async fn new(common: &CommonArgs) -> Result<RunEnv, ScenarioError> {
        common.validate()?;
        let target = common.target()?;
        let endpoint = Endpoint::resolve(&target, &common.tls()).await?;
        let pid = std::process::id();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() % 1_000_000_000)
            .unwrap_or(0);
        Ok(RunEnv {
            target,
            endpoint,
            sources: common.source_addrs.as_ref().map(|s| Arc::new(s.addrs())),
            version: common.protocol,
            keep_alive: common.keepalive,
            username: common.username.clone(),
            password: common.password.clone(),
            connect_timeout: common.connect_timeout,
            client_prefix: common
                .client_id_prefix
                .clone()
                .unwrap_or_else(|| format!("tgb-{pid}")),
            topic_prefix: common
                .topic_prefix
                .clone()
                .unwrap_or_else(|| format!("tgb/{pid}-{stamp}")),
            broker: common.target_pid.map(|pid| BrokerProbe { pid }),
            quiet: common.quiet,
            clock: Clock::start(),
        })
    }

    /// CONNECT options for one client.
    pub fn connect_options(
        &self,
        client_id: String,
        clean_start: bool,
        read_chunk: usize,
    ) -> ConnectOptions {
        ConnectOptions {
            version: self.version,
            client_id,
            clean_start,
            keep_alive: self.keep_alive,
            session_expiry: None,
            username: self.username.clone(),
            password: self.password.clone(),
            timeout: self.connect_timeout,
            read_chunk,
        }
    }

    /// The next source address, if any were given.
    pub fn source(&self) -> Option<IpAddr> {
        self.sources.as_ref().map(|s| s.next())
    }

    /// The protocol as written on the command line.
    pub fn protocol_name(&self) -> &'static str {
        protocol_name(self.version)
    }
}

/// "3.1.1" or "5".
pub fn protocol_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "5",
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V31 => "3.1",
    }
}

/// Samples the broker's `/proc` entries.
#[derive(Debug, Clone, Copy)]
pub struct BrokerProbe {
    /// Broker process id.
    pub pid: u32,
}

impl BrokerProbe {
    /// One sample; a failure becomes a warning in the report, not an aborted run.
    pub fn sample(&self, warnings: &mut Vec<String>) -> Option<ProcSample> {
        match procfs::sample(self.pid) {
            Ok(s) => Some(s),
            Err(e) => {
                warnings.push(format!("cannot sample broker pid {}: {e}", self.pid));
                None
            }
        }
    }
}

/// Opens `count` things (connections) with `make(i)`, at `rate` per second (intended start
/// times from a [`Pacer`]) or, with rate 0, as fast as possible with at most
/// [`DEFAULT_CONNECT_CONCURRENCY`] attempts in flight. Results come back in index order.
pub async fn open_many<T, F, Fut>(count: u32, rate: u64, make: F) -> Vec<Result<T, ClientError>>
where
    T: Send + 'static,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<T, ClientError>> + Send + 'static,
{
    let clock = Clock::start();
    let mut pacer = Pacer::new(0, rate, 1, 0);
    let limit = Arc::new(Semaphore::new(if pacer.is_some() {
        Semaphore::MAX_PERMITS
    } else {
        DEFAULT_CONNECT_CONCURRENCY
    }));
    let mut set = JoinSet::new();
    for i in 0..count {
        if let Some(p) = pacer.as_mut() {
            tokio::time::sleep_until(clock.instant_at(p.next_ns()).into()).await;
            p.pop_due(u64::MAX);
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let fut = make(i);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<Result<T, ClientError>>> = (0..count).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined
            && let Some(slot) = out.get_mut(i as usize)
        {
            *slot = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or(Err(ClientError::Unexpected("connection task panicked"))))
        .collect()
}

/// Prints `line(elapsed)` on stderr once a second until `stop` turns true.
pub fn spawn_progress<F>(
    quiet: bool,
    mut stop: watch::Receiver<bool>,
    mut line: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(Duration) -> String + Send + 'static,
{
    tokio::spawn(async move {
        if quiet {
            return;
        }
        let start = Instant::now();
        let mut tick = tokio::time::interval_at(
            (start + Duration::from_secs(1)).into(),
            Duration::from_secs(1),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let text = line(start.elapsed());
                    let _ = writeln!(std::io::stderr(), "{text}");
                }
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_many_keeps_order_and_paces() {
        let start = Instant::now();
        let out = open_many(5, 100, |i| async move {
            if i == 3 {
                Err(ClientError::Closed)
            } else {
                Ok(i * 10)
            }
        })
        .await;
        // 5 attempts at 100/s: the last starts 40 ms after the first.
        assert!(start.elapsed() >= Duration::from_millis(39));
        let got: Vec<Option<u32>> = out.into_iter().map(|r| r.ok()).collect();
        assert_eq!(got, vec![Some(0), Some(10), Some(20), None, Some(40)]);
    }

    #[tokio::test]
    async fn open_many_unpaced_limits_concurrency() {
        let inflight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let out = open_many(200, 0, |_| {
            let inflight = inflight.clone();
            let peak = peak.clone();
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = inflight.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inflight.fetch_sub(1, SeqCst);
                Ok(())
            }
        })
        .await;
        assert_eq!(out.len(), 200);
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= DEFAULT_CONNECT_CONCURRENCY);
    }

    #[tokio::test]
    async fn credentials_reach_every_connect() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "tidegate-bench",
            "pairs",
            "--url",
            "tcp://127.0.0.1:1",
            "--username",
            "bench@quiet",
            "--password",
            "secret",
        ])
        .unwrap();
        let crate::cli::Scenario::Pairs(m) = cli.scenario else {
            panic!("not pairs")
        };
        let env = RunEnv::new(&m.common).await.unwrap();
        let opts = env.connect_options("c1".into(), true, IDLE_READ_CHUNK);
        assert_eq!(opts.username.as_deref(), Some("bench@quiet"));
        assert_eq!(opts.password.as_deref(), Some("secret"));
        assert_eq!(opts.client_id, "c1");
    }
}
