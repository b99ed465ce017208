//! `handshake`: connections opened and closed in a loop for `--duration` — TCP connect, TLS
//! handshake (full, or resumed with `--resume`), WebSocket upgrade for `wss://`, MQTT CONNECT
//! and CONNACK, then DISCONNECT — to measure handshakes per second, connect latency and the
//! broker's CPU per connection.
//!
//! Place in the data flow: `main` → [`run`] → `--concurrency` workers, each looping
//! [`one`] (socket → TLS → [WebSocket] → CONNECT/CONNACK → DISCONNECT) and keeping its own
//! [`Tally`] (no shared state on the hot path but a progress counter) → tallies merged →
//! [`HandshakeReport`].
//!
//! The TLS layer is set up here rather than in [`crate::transport`] because the scenario must
//! see rustls' `ClientConnection` after the handshake: `handshake_kind()` says whether the
//! session really was resumed, so a "resumed" figure is never a full handshake in disguise.
//! Without `--resume` the client configuration has resumption disabled (no session store),
//! so every handshake is full; with it one configuration's session store
//! ([`super::ticket_store`]) collects the broker's TLS 1.3 tickets, which arrive after the
//! handshake and are read with the CONNACK.

use super::ticket_store::TicketStore;
use super::{RunEnv, ScenarioError, spawn_progress};
use crate::cli::HandshakeArgs;
use crate::client::{ClientError, ConnectOptions, MAX_INCOMING_PACKET, connect_packet};
use crate::clock::Clock;
use crate::latency::{LatencyHistogram, LatencySummary, fmt_ns};
use crate::report::GeneratorStats;
use crate::resources;
use crate::source_addrs::SourceAddrs;
use crate::transport::{SocketAddress, connect_tcp};
use crate::ws;
use bytes::BytesMut;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tidegate_protocol::{Decoder, Disconnect, Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// Share of resumed handshakes (in the window) a `--resume` run needs to count as verified.
pub const RESUMED_SHARE_VERIFIED: f64 = 0.95;
/// How long a closing connection waits for the broker to close its side.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed attempt, so a broker that refuses does not make a busy loop.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);

/// What kind of handshake one connection made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A full TLS handshake.
    Full,
    /// A full TLS 1.3 handshake after a HelloRetryRequest (an extra round trip).
    FullWithRetry,
    /// A resumed TLS session.
    Resumed,
    /// No TLS (`tcp://`, `ws://`): an MQTT connect only.
    Plain,
}

impl Kind {
    /// The kind rustls reports once the handshake is complete.
    fn of(kind: Option<HandshakeKind>) -> Result<Kind, ClientError> {
        match kind {
            Some(HandshakeKind::Full) => Ok(Kind::Full),
            Some(HandshakeKind::FullWithHelloRetryRequest) => Ok(Kind::FullWithRetry),
            Some(HandshakeKind::Resumed) => Ok(Kind::Resumed),
            None => Err(ClientError::Unexpected(
                "TLS handshake kind unknown after the handshake",
            )),
        }
    }
}

/// One successful connection, times in nanoseconds on the run's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Before the TCP connect.
    pub start_ns: u64,
    /// TLS handshake complete (the start for plain connections).
    pub tls_done_ns: u64,
    /// CONNACK received.
    pub connack_ns: u64,
    /// Which handshake it was.
    pub kind: Kind,
}

/// The bookkeeping of one worker (and, merged, of the run): connections whose start and
/// CONNACK both fall inside the measurement window `[from_ns, to_ns]` are counted; the rest
/// (warm-up, or finishing after the window) are only counted as `outside`.
#[derive(Debug, Clone)]
pub struct Tally {
    from_ns: u64,
    to_ns: u64,
    /// Connections counted (successful, inside the window).
    pub counted: u64,
    /// Of those: full handshakes.
    pub full: u64,
    /// Of those: full handshakes after a HelloRetryRequest.
    pub full_with_retry: u64,
    /// Of those: resumed sessions.
    pub resumed: u64,
    /// Of those: connections without TLS.
    pub plain: u64,
    /// Attempts started inside the window that failed.
    pub failed: u64,
    /// Attempts (successful or not) outside the window.
    pub outside: u64,
    connect: LatencyHistogram,
    tls: LatencyHistogram,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    /// An empty tally for the window `[from_ns, to_ns]`.
    pub fn new(from_ns: u64, to_ns: u64) -> Tally {
        Tally {
            from_ns,
            to_ns,
            counted: 0,
            full: 0,
            full_with_retry: 0,
            resumed: 0,
            plain: 0,
            failed: 0,
            outside: 0,
            connect: LatencyHistogram::new(),
            tls: LatencyHistogram::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Records a successful connection.
    pub fn record(&mut self, a: &Attempt) {
        if a.start_ns < self.from_ns || a.connack_ns > self.to_ns {
            self.outside += 1;
            return;
        }
        self.counted += 1;
        match a.kind {
            Kind::Full => self.full += 1,
            Kind::FullWithRetry => self.full_with_retry += 1,
            Kind::Resumed => self.resumed += 1,
            Kind::Plain => self.plain += 1,
        }
        self.connect.record(a.connack_ns.saturating_sub(a.start_ns));
        if a.kind != Kind::Plain {
            self.tls.record(a.tls_done_ns.saturating_sub(a.start_ns));
        }
    }

    /// Records a failed attempt that started at `start_ns`.
    pub fn record_failure(&mut self, start_ns: u64, error: &str) {
        if start_ns < self.from_ns || start_ns > self.to_ns {
            self.outside += 1;
            return;
        }
        self.failed += 1;
        *self.errors.entry(error.to_owned()).or_insert(0) += 1;
    }

    /// Adds another worker's tally (same window).
    pub fn merge(&mut self, o: &Tally) {
        self.counted += o.counted;
        self.full += o.full;
        self.full_with_retry += o.full_with_retry;
        self.resumed += o.resumed;
        self.plain += o.plain;
        self.failed += o.failed;
        self.outside += o.outside;
        self.connect.merge(&o.connect);
        self.tls.merge(&o.tls);
        for (e, n) in &o.errors {
            *self.errors.entry(e.clone()).or_insert(0) += n;
        }
    }

    /// TLS handshakes counted.
    pub fn tls_handshakes(&self) -> u64 {
        self.full + self.full_with_retry + self.resumed
    }

    /// Resumed share of the TLS handshakes, if there were any.
    pub fn resumed_share(&self) -> Option<f64> {
        let n = self.tls_handshakes();
        (n > 0).then(|| self.resumed as f64 / n as f64)
    }

    /// Whether the handshakes were the kind the run asked for, and the warnings if not.
    pub fn verify(&self, tls: bool, resume: bool) -> (bool, Vec<String>) {
        let mut warnings = Vec::new();
        if self.counted == 0 {
            warnings.push("no connection completed inside the measurement window".to_owned());
        }
        if self.failed > 0 {
            warnings.push(format!(
                "{} connection attempts failed in the window",
                self.failed
            ));
        }
        if !tls {
            return (self.counted > 0, warnings);
        }
        let share = self.resumed_share().unwrap_or(0.0);
        let ok = if resume {
            let ok = share >= RESUMED_SHARE_VERIFIED;
            if !ok {
                warnings.push(format!(
                    "RESUMPTION NOT VERIFIED: only {:.1}% of {} TLS handshakes were resumed \
                     (rustls handshake_kind); the rate is not a resumed-handshake rate",
                    share * 100.0,
                    self.tls_handshakes()
                ));
            }
            ok
        } else {
            if self.resumed > 0 {
                warnings.push(format!(
                    "{} handshakes resumed although resumption was disabled",
                    self.resumed
                ));
            }
            self.resumed == 0
        };
        (ok && self.counted > 0, warnings)
    }
}

/// The broker's CPU over the measurement window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HandshakeBroker {
    /// Broker pid.
    pub pid: u32,
    /// CPU seconds over the window.
    pub cpu_seconds: f64,
    /// CPU as a percentage of one core.
    pub cpu_percent: f64,
    /// CPU microseconds per counted connection (handshake, CONNECT, DISCONNECT, close).
    pub cpu_us_per_connection: Option<f64>,
}

/// What `handshake` measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HandshakeReport {
    /// Always "handshake".
    pub scenario: String,
    /// Broker address.
    pub target: String,
    /// "3.1.1" or "5".
    pub protocol: String,
    /// TLS in use (tls://, wss://).
    pub tls: bool,
    /// `--resume`.
    pub resume: bool,
    /// Connections in progress at once.
    pub concurrency: u32,
    /// Warm-up seconds.
    pub warmup_seconds: f64,
    /// Measured seconds.
    pub duration_seconds: f64,
    /// Connections completed (CONNACK) inside the window.
    pub connections: u64,
    /// `connections` per second of the window: the handshake rate.
    pub per_sec: f64,
    /// Full TLS handshakes.
    pub full: u64,
    /// Full TLS handshakes after a HelloRetryRequest.
    pub full_with_retry: u64,
    /// Resumed TLS handshakes.
    pub resumed: u64,
    /// Resumed share of the TLS handshakes.
    pub resumed_share: Option<f64>,
    /// The handshakes were the kind asked for (all full, or ≥ 95% resumed with `--resume`).
    pub verified: bool,
    /// Attempts that failed in the window.
    pub failed: u64,
    /// Start → CONNACK.
    pub connect_latency: LatencySummary,
    /// Start → TLS handshake complete (TCP connect included).
    pub tls_latency: LatencySummary,
    /// The broker's CPU, with `--target-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<HandshakeBroker>,
    /// The generator's CPU over the window.
    pub generator: GeneratorStats,
    /// Distinct errors with counts.
    pub errors: Vec<(String, u64)>,
    /// Things that make the numbers less trustworthy.
    pub warnings: Vec<String>,
}

impl HandshakeReport {
    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let mode = match (self.tls, self.resume) {
            (false, _) => "no TLS",
            (true, false) => "full TLS handshakes",
            (true, true) => "resumed TLS handshakes",
        };
        let _ = writeln!(
            o,
            "tidegate-bench handshake → {} (MQTT {}, {mode}, concurrency {})",
            self.target, self.protocol, self.concurrency
        );
        let _ = writeln!(
            o,
            "  rate             {:.0} connections/s  ({} in {:.1}s, +{:.1}s warm-up)  failed {}",
            self.per_sec, self.connections, self.duration_seconds, self.warmup_seconds, self.failed
        );
        if self.tls {
            let _ = writeln!(
                o,
                "  handshakes       full {}  full after retry {}  resumed {} ({:.1}%)  {}",
                self.full,
                self.full_with_retry,
                self.resumed,
                self.resumed_share.unwrap_or(0.0) * 100.0,
                if self.verified {
                    "verified"
                } else {
                    "NOT VERIFIED"
                }
            );
        }
        for (name, l) in [
            ("connect", &self.connect_latency),
            ("tls", &self.tls_latency),
        ] {
            if l.count > 0 {
                let _ = writeln!(
                    o,
                    "  {name:<16} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
                    fmt_ns(l.p50_ns),
                    fmt_ns(l.p90_ns),
                    fmt_ns(l.p99_ns),
                    fmt_ns(l.p999_ns),
                    fmt_ns(l.max_ns),
                    l.count
                );
            }
        }
        if let Some(b) = &self.broker {
            let _ = write!(o, "  broker pid {}  CPU {:.1}%", b.pid, b.cpu_percent);
            if let Some(us) = b.cpu_us_per_connection {
                let _ = write!(o, "  {us:.0} µs CPU/connection");
            }
            let _ = writeln!(o);
        }
        let g = &self.generator;
        let _ = writeln!(
            o,
            "  generator        CPU {:.1}% of a core ({} thread(s)){}",
            g.cpu_percent,
            g.threads,
            if g.generator_bound {
                "  GENERATOR-BOUND: these numbers measure the generator"
            } else {
                ""
            }
        );
        for (e, n) in &self.errors {
            let _ = writeln!(o, "  error            {n} × {e}");
        }
        for w in &self.warnings {
            let _ = writeln!(o, "  warning          {w}");
        }
        o
    }
}

/// What every worker needs, shared.
struct Ctx {
    addr: SocketAddr,
    sources: Option<Arc<SourceAddrs>>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    ws_uri: Option<String>,
    timeout: Duration,
    opts: ConnectOptions,
    client_prefix: String,
    clock: Clock,
}

/// Runs `handshake`.
pub async fn run(args: &HandshakeArgs) -> Result<HandshakeReport, ScenarioError> {
    args.validate()?;
    let env = RunEnv::new(&args.common).await?;
    let SocketAddress::Tcp(addr) = env.endpoint.socket.clone() else {
        return Err(ScenarioError::Failed(
            "handshake needs a tcp, tls, ws or wss target".to_owned(),
        ));
    };
    let tls = env.endpoint.tls.as_ref().map(|t| {
        (
            connector(t.connector.config(), args.resume, args.concurrency),
            t.server_name.clone(),
        )
    });
    let uses_tls = tls.is_some();
    let ctx = Arc::new(Ctx {
        addr,
        sources: env.sources.clone(),
        tls,
        ws_uri: env.endpoint.ws_uri.clone(),
        timeout: env.connect_timeout,
        opts: env.connect_options(String::new(), true, 256),
        client_prefix: env.client_prefix.clone(),
        clock: env.clock,
    });

    let from_ns = env.clock.now_ns() + duration_ns(args.warmup);
    let to_ns = from_ns + duration_ns(args.duration);
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|id| {
            let (ctx, done) = (ctx.clone(), done.clone());
            tokio::spawn(worker(ctx, id, Tally::new(from_ns, to_ns), done))
        })
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = {
        let done = done.clone();
        spawn_progress(env.quiet, stop_rx, move |t| {
            format!(
                "[{:>6.1}s] connections {}",
                t.as_secs_f64(),
                done.load(Ordering::Relaxed)
            )
        })
    };

    let mut warnings = Vec::new();
    tokio::time::sleep_until(env.clock.instant_at(from_ns).into()).await;
    let t0 = Instant::now();
    let broker0 = env.broker.and_then(|b| b.sample(&mut warnings));
    let cpu0 = resources::self_cpu_ns();
    tokio::time::sleep_until(env.clock.instant_at(to_ns).into()).await;
    let broker1 = env.broker.and_then(|b| b.sample(&mut warnings));
    let cpu1 = resources::self_cpu_ns();
    let wall = t0.elapsed();

    let mut tally = Tally::new(from_ns, to_ns);
    for w in workers {
        match w.await {
            Ok(t) => tally.merge(&t),
            Err(e) => warnings.push(format!("worker failed: {e}")),
        }
    }
    let _ = stop_tx.send(true);
    let _ = progress.await;

    let (verified, mut verdict) = tally.verify(uses_tls, args.resume);
    warnings.append(&mut verdict);
    let broker = env.broker.zip(broker0.zip(broker1)).map(|(b, (s0, s1))| {
        let cpu = s1.cpu_ns.saturating_sub(s0.cpu_ns);
        HandshakeBroker {
            pid: b.pid,
            cpu_seconds: cpu as f64 / 1e9,
            cpu_percent: resources::cpu_percent(cpu, wall),
            cpu_us_per_connection: (tally.counted > 0)
                .then(|| cpu as f64 / 1e3 / tally.counted as f64),
        }
    });
    Ok(HandshakeReport {
        scenario: "handshake".into(),
        target: env.target.to_string(),
        protocol: env.protocol_name().into(),
        tls: uses_tls,
        resume: args.resume,
        concurrency: args.concurrency,
        warmup_seconds: args.warmup.as_secs_f64(),
        duration_seconds: args.duration.as_secs_f64(),
        connections: tally.counted,
        per_sec: tally.counted as f64 / args.duration.as_secs_f64(),
        full: tally.full,
        full_with_retry: tally.full_with_retry,
        resumed: tally.resumed,
        resumed_share: tally.resumed_share(),
        verified,
        failed: tally.failed,
        connect_latency: tally.connect.summary(),
        tls_latency: tally.tls.summary(),
        broker,
        generator: GeneratorStats::new(&[cpu1.saturating_sub(cpu0)], wall, args.common.threads),
        errors: tally.errors.into_iter().collect(),
        warnings,
    })
}

/// The run's TLS connector: `base` with resumption disabled, or with a [`TicketStore`] that
/// has room for four tickets per connection in progress (each connection takes one and the
/// broker sends two, so the store never runs dry between refills).
fn connector(base: &ClientConfig, resume: bool, concurrency: u32) -> TlsConnector {
    let mut config = base.clone();
    config.resumption = if resume {
        let tickets = usize::try_from(concurrency)
            .unwrap_or(usize::MAX)
            .saturating_mul(4);
        Resumption::store(Arc::new(TicketStore::new(tickets)))
    } else {
        Resumption::disabled()
    };
    TlsConnector::from(Arc::new(config))
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One worker: connects, closes and connects again until the window has ended.
async fn worker(ctx: Arc<Ctx>, id: u32, mut tally: Tally, done: Arc<AtomicU64>) -> Tally {
    let mut n = 0u64;
    loop {
        let start_ns = ctx.clock.now_ns();
        if start_ns > tally.to_ns {
            return tally;
        }
        let mut opts = ctx.opts.clone();
        opts.client_id = format!("{}-h{id}-{n}", ctx.client_prefix);
        n += 1;
        match one(&ctx, &opts, start_ns).await {
            Ok(a) => {
                tally.record(&a);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tally.record_failure(start_ns, &e.to_string());
                tokio::time::sleep(FAILURE_PAUSE).await;
            }
        }
    }
}

/// `fut` before `deadline`, its I/O error and its timeout both as [`ClientError`]s.
async fn within<T>(
    deadline: Instant,
    what: &'static str,
    fut: impl Future<Output = io::Result<T>>,
) -> Result<T, ClientError> {
    Ok(tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| ClientError::Timeout(what))??)
}

/// One connection: socket, TLS, WebSocket, CONNECT/CONNACK (all within the connect timeout),
/// then DISCONNECT and close.
async fn one(ctx: &Ctx, opts: &ConnectOptions, start_ns: u64) -> Result<Attempt, ClientError> {
    let deadline = Instant::now() + ctx.timeout;
    let source = ctx.sources.as_ref().map(|s| s.next());
    let tcp = within(deadline, "TCP connect", connect_tcp(ctx.addr, source)).await?;
    let Some((connector, name)) = &ctx.tls else {
        let connack_ns = match &ctx.ws_uri {
            Some(uri) => {
                let ws = within(deadline, "WebSocket upgrade", ws::connect(uri, tcp)).await?;
                session(ws, opts, deadline, &ctx.clock).await?
            }
            None => session(tcp, opts, deadline, &ctx.clock).await?,
        };
        return Ok(Attempt {
            start_ns,
            tls_done_ns: start_ns,
            connack_ns,
            kind: Kind::Plain,
        });
    };
    let tls = within(
        deadline,
        "TLS handshake",
        connector.connect(name.clone(), tcp),
    )
    .await?;
    let tls_done_ns = ctx.clock.now_ns();
    let kind = Kind::of(tls.get_ref().1.handshake_kind())?;
    let connack_ns = match &ctx.ws_uri {
        Some(uri) => {
            let ws = within(deadline, "WebSocket upgrade", ws::connect(uri, tls)).await?;
            session(ws, opts, deadline, &ctx.clock).await?
        }
        None => session(tls, opts, deadline, &ctx.clock).await?,
    };
    Ok(Attempt {
        start_ns,
        tls_done_ns,
        connack_ns,
        kind,
    })
}

/// CONNECT, CONNACK (the time it arrived is returned), DISCONNECT, close. Reading the CONNACK
/// also reads the TLS 1.3 session tickets the broker sent after its handshake.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    opts: &ConnectOptions,
    deadline: Instant,
    clock: &Clock,
) -> Result<u64, ClientError> {
    let mut buf = BytesMut::with_capacity(256);
    tidegate_protocol::encode(&connect_packet(opts)?, opts.version, &mut buf)?;
    within(deadline, "CONNECT", async {
        s.write_all(&buf).await?;
        s.flush().await
    })
    .await?;
    buf.clear();
    let mut decoder = Decoder::with_version(opts.version, MAX_INCOMING_PACKET);
    let connack_ns = loop {
        match decoder.decode(&mut buf)? {
            Some(Packet::ConnAck(ack)) if ack.reason_code.is_success() => break clock.now_ns(),
            Some(Packet::ConnAck(ack)) => return Err(ClientError::Refused(ack.reason_code)),
            Some(other) => return Err(ClientError::Unexpected(other.name())),
            None => {
                if within(deadline, "CONNACK", s.read_buf(&mut buf)).await? == 0 {
                    return Err(ClientError::Closed);
                }
            }
        }
    };
    // The connection is done with: errors while closing do not make it a failed one.
    buf.clear();
    if tidegate_protocol::encode(
        &Packet::Disconnect(Disconnect::default()),
        opts.version,
        &mut buf,
    )
    .is_ok()
    {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            s.write_all(&buf).await?;
            s.shutdown().await?;
            // Wait for the broker to close too, so the socket is not reset with data unread.
            let mut sink = [0u8; 256];
            while s.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
    }
    Ok(connack_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsOptions;
    use tidegate_protocol::ProtocolVersion;

    fn ok(start_ns: u64, connack_ns: u64, kind: Kind) -> Attempt {
        Attempt {
            start_ns,
            tls_done_ns: start_ns + (connack_ns - start_ns) / 2,
            connack_ns,
            kind,
        }
    }

    #[test]
    fn only_connections_inside_the_window_count() {
        let mut t = Tally::new(1_000, 2_000);
        t.record(&ok(900, 1_100, Kind::Full)); // started in the warm-up
        t.record(&ok(1_000, 1_200, Kind::Full));
        t.record(&ok(1_500, 1_700, Kind::Resumed));
        t.record(&ok(1_900, 2_100, Kind::Resumed)); // finished after the window
        t.record_failure(500, "refused"); // warm-up
        t.record_failure(1_600, "refused");
        assert_eq!((t.counted, t.full, t.resumed, t.outside), (2, 1, 1, 3));
        assert_eq!(t.failed, 1);
        assert_eq!(t.connect.len(), 2);
        assert_eq!(t.connect.summary().max_ns, 200);
        assert_eq!(t.tls.summary().max_ns, 100);
        assert_eq!(t.resumed_share(), Some(0.5));
    }

    #[test]
    fn merge_adds_counts_histograms_and_errors() {
        let mut a = Tally::new(0, 100);
        a.record(&ok(0, 10, Kind::Resumed));
        a.record_failure(5, "timed out");
        let mut b = Tally::new(0, 100);
        b.record(&ok(1, 30, Kind::FullWithRetry));
        b.record(&ok(2, 40, Kind::Plain));
        b.record_failure(6, "timed out");
        b.record_failure(7, "refused");
        a.merge(&b);
        assert_eq!(a.counted, 3);
        assert_eq!((a.resumed, a.full_with_retry, a.plain), (1, 1, 1));
        assert_eq!(a.tls_handshakes(), 2);
        assert_eq!(a.connect.len(), 3);
        assert_eq!(a.tls.len(), 2, "plain connections have no TLS time");
        let errors: Vec<_> = a.errors.into_iter().collect();
        assert_eq!(
            errors,
            vec![("refused".to_owned(), 1), ("timed out".to_owned(), 2)]
        );
    }

    #[test]
    fn verification_checks_the_kind_asked_for() {
        let mut t = Tally::new(0, 1_000);
        for i in 0..100 {
            t.record(&ok(
                i,
                i + 5,
                if i < 3 { Kind::Full } else { Kind::Resumed },
            ));
        }
        assert!(t.verify(true, true).0, "97% resumed is verified");
        let (ok_full, warnings) = t.verify(true, false);
        assert!(!ok_full, "resumptions in a full-handshake run");
        assert!(warnings.iter().any(|w| w.contains("resumed although")));

        let mut t = Tally::new(0, 1_000);
        for i in 0..100 {
            t.record(&ok(
                i,
                i + 5,
                if i < 10 { Kind::Full } else { Kind::Resumed },
            ));
        }
        let (verified, warnings) = t.verify(true, true);
        assert!(!verified, "90% resumed is below the bar");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("RESUMPTION NOT VERIFIED"))
        );

        let empty = Tally::new(0, 1_000);
        assert!(!empty.verify(true, false).0);
        assert!(!empty.verify(false, false).0);
    }

    /// A TLS server with a ring ticketer (TLS 1.3 tickets, as the broker has) that answers any
    /// CONNECT with an MQTT 3.1.1 CONNACK and closes after the client does.
    async fn tls_broker() -> (SocketAddr, tempfile::TempDir, TlsOptions) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut tls = acceptor.accept(s).await.unwrap();
                    let mut b = [0u8; 512];
                    // CONNECT fits one read at this size.
                    assert!(tls.read(&mut b).await.unwrap() > 0);
                    tls.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
                    while matches!(tls.read(&mut b).await, Ok(n) if n > 0) {}
                    let _ = tls.shutdown().await;
                });
            }
        });
        let opts = TlsOptions {
            ca_file: Some(ca),
            ..Default::default()
        };
        (addr, dir, opts)
    }

    async fn tls_ctx(resume: bool, concurrency: u32) -> (Arc<Ctx>, tempfile::TempDir) {
        let (addr, dir, tls_opts) = tls_broker().await;
        let client = tls_opts.client("localhost").unwrap();
        let ctx = Ctx {
            addr,
            sources: None,
            tls: Some((
                connector(client.connector.config(), resume, concurrency),
                client.server_name,
            )),
            ws_uri: None,
            timeout: Duration::from_secs(5),
            opts: ConnectOptions {
                version: ProtocolVersion::V311,
                client_id: "c".to_owned(),
                clean_start: true,
                keep_alive: 60,
                session_expiry: None,
                username: None,
                password: None,
                timeout: Duration::from_secs(5),
                read_chunk: 256,
            },
            client_prefix: "t".to_owned(),
            clock: Clock::start(),
        };
        (Arc::new(ctx), dir)
    }

    async fn sequential(ctx: &Ctx, n: u32) -> Vec<Kind> {
        let mut out = Vec::new();
        for _ in 0..n {
            let start = ctx.clock.now_ns();
            let a = one(ctx, &ctx.opts, start).await.unwrap();
            assert!(a.start_ns <= a.tls_done_ns && a.tls_done_ns <= a.connack_ns);
            out.push(a.kind);
        }
        out
    }

    #[tokio::test]
    async fn resumption_is_observed_only_when_enabled() {
        let (full, _dir) = tls_ctx(false, 1).await;
        assert_eq!(sequential(&full, 4).await, vec![Kind::Full; 4]);
        let (resume, _dir) = tls_ctx(true, 1).await;
        let resumed = sequential(&resume, 4).await;
        assert_eq!(resumed.first(), Some(&Kind::Full), "nothing to resume yet");
        assert_eq!(resumed.get(1..), Some(&[Kind::Resumed; 3][..]));
    }

    #[tokio::test]
    async fn store_has_a_ticket_for_every_concurrent_connection() {
        // rustls' own store keeps 8 tickets per server: 8 of these 16 would be full.
        let (ctx, _dir) = tls_ctx(true, 16).await;
        sequential(&ctx, 20).await;
        let burst: Vec<_> = (0..16)
            .map(|_| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let start = ctx.clock.now_ns();
                    one(&ctx, &ctx.opts, start).await.unwrap().kind
                })
            })
            .collect();
        for h in burst {
            assert_eq!(h.await.unwrap(), Kind::Resumed);
        }
    }

    #[tokio::test]
    async fn worker_counts_failures_against_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let clock = Clock::start();
        let ctx = Arc::new(Ctx {
            addr,
            sources: None,
            tls: None,
            ws_uri: None,
            timeout: Duration::from_secs(1),
            opts: ConnectOptions {
                version: ProtocolVersion::V5,
                client_id: String::new(),
                clean_start: true,
                keep_alive: 0,
                session_expiry: None,
                username: None,
                password: None,
                timeout: Duration::from_secs(1),
                read_chunk: 256,
            },
            client_prefix: "t".to_owned(),
            clock,
        });
        let done = Arc::new(AtomicU64::new(0));
        let t = worker(ctx, 0, Tally::new(0, 50_000_000), done.clone()).await;
        assert_eq!(t.counted, 0);
        assert!(t.failed >= 1);
        assert_eq!(done.load(Ordering::Relaxed), 0);
        assert!(!t.verify(false, false).0);
    }
}
