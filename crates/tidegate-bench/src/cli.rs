//! The command line: one subcommand per scenario, sharing the connection options.
//!
//! Place in the data flow: `main` parses [`Cli`], validates it, and hands the scenario its
//! arguments; nothing below this module reads the command line. The hidden `--child` flag of
//! `conn` is how the tool re-executes itself for `--processes`.

use crate::client::ConnectOptions;
use crate::payload::HEADER_LEN;
use crate::source_addrs::SourceAddrs;
use crate::target::Target;
use crate::tls::TlsOptions;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tidegate_protocol::{ProtocolVersion, QoS};

/// tidegate-bench: load generator for MQTT brokers.
#[derive(Debug, Parser)]
#[command(name = "tidegate-bench", version, about, long_about = None)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// N publishers, each publishing to its own subscriber (N pairs, 2N connections).
    Pairs(MessageArgs),
    /// N publishers, one subscriber on a wildcard receiving all of them.
    Fanin(MessageArgs),
    /// One publisher, N subscribers each receiving every message.
    Fanout(MessageArgs),
    /// Open N idle connections at --conn-rate and hold them (memory per connection).
    Conn(ConnArgs),
    /// N persistent sessions disconnect at once, messages are queued for them, they reconnect:
    /// time until every session is resumed and every queued message delivered.
    Storm(StormArgs),
    /// Connections opened and closed for --duration (TLS handshake, CONNECT/CONNACK,
    /// DISCONNECT), full or (--resume) resumed TLS handshakes: handshakes per second.
    Handshake(HandshakeArgs),
    /// Tidegate's HTTP face beside MQTT: REST publish (single or batch) received by MQTT
    /// subscribers, or MQTT publishers fanned out to SSE streams.
    Http(HttpArgs),
}

/// Options every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Broker URL: tcp://host:port or unix:///path (overrides --host/--port).
    #[arg(long)]
    pub url: Option<String>,
    /// Broker host (with --port) when --url is not given.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT protocol version: 3.1.1 or 5.
    #[arg(long, default_value = "5", value_parser = parse_protocol)]
    pub protocol: ProtocolVersion,
    /// Keep alive in seconds (0 disables it).
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// Number of connections: pairs / publishers (fanin) / subscribers (fanout) / idle
    /// connections (conn) / sessions (storm).
    #[arg(long, short = 'n', default_value_t = 10)]
    pub connections: u32,
    /// Connection attempts per second while setting up (0: as fast as possible, 64 at a time).
    #[arg(long, default_value_t = 0)]
    pub conn_rate: u64,
    /// Bind client sockets to these addresses, round robin (e.g. 127.0.0.2-127.0.0.40).
    #[arg(long, value_parser = parse_source_addrs)]
    pub source_addrs: Option<SourceAddrsArg>,
    /// Runtime worker threads (1: a single-threaded runtime, the cheapest).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Write the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Broker process to sample (RSS, CPU time) from /proc.
    #[arg(long)]
    pub target_pid: Option<u32>,
    /// Client id prefix (default: tgb-<pid>).
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// Topic prefix (default: tgb/<pid>-<time>, fresh per run).
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// User name for CONNECT.
    #[arg(long)]
    pub username: Option<String>,
    /// Password for CONNECT.
    #[arg(long)]
    pub password: Option<String>,
    /// Timeout for connect + CONNACK and for SUBACK.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// TLS (tls://, wss://): PEM file of CA certificates to trust.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// TLS: client certificate chain (PEM), for brokers that require client certificates.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// TLS: private key of --cert (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// TLS: accept any server certificate (development brokers with self-signed certificates).
    #[arg(long)]
    pub insecure: bool,
    /// TLS: name to verify the server certificate against (default: the URL's host).
    #[arg(long)]
    pub server_name: Option<String>,
}

/// Options of the message scenarios (pairs, fanin, fanout).
#[derive(Debug, Clone, Args)]
pub struct MessageArgs {
    /// Connection options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// QoS of publications and subscriptions.
    #[arg(long, default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// Payload size in bytes (at least 16: the header).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages per second over all publishers, open loop (0: closed loop, as fast as
    /// --window allows).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Closed loop: messages in flight per publisher (QoS 0: not yet received by its
    /// subscriber; QoS 1/2: not yet acknowledged).
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// Open loop: publishers wake at most once per tick and send everything due (stamped with
    /// its intended time). tokio's timers have 1 ms resolution; a coarser tick costs less CPU
    /// and adds up to one tick of send lag, which the latency then shows.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub tick: Duration,
    /// Measured time after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time before measuring (messages are sent and checked but not timed).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// After the last send, how long to wait for outstanding deliveries and acks.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Persistent sessions: publishers and subscribers connect with Clean Start 0 (MQTT 5,
    /// with this Session Expiry Interval in seconds) or Clean Session 0 (3.1.1, where the
    /// broker keeps the session until it is cleaned), so a broker with persistence stores
    /// their subscriptions and inflight messages. Client ids are `<prefix>-s<i>` and
    /// `<prefix>-p<i>`, fresh per run by default (`tgb-<pid>`). Unset: clean sessions.
    #[arg(long, value_name = "SECS")]
    pub session_expiry: Option<u32>,
}

impl MessageArgs {
    /// Sets the session part of a CONNECT (Clean Start and Session Expiry) per
    /// `--session-expiry`.
    pub fn apply_session(&self, opts: &mut ConnectOptions) {
        match self.session_expiry {
            Some(secs) => {
                opts.clean_start = false;
                opts.session_expiry = Some(secs);
            }
            None => {
                opts.clean_start = true;
                opts.session_expiry = None;
            }
        }
    }
}

/// Options of `conn`.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Connection options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long to hold the connections once all are open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Spread the connections over K processes (each this tool re-executed), to pass the
    /// per-process open-files limit.
    #[arg(long, default_value_t = 1)]
    pub processes: u32,
    /// Sample the broker's RSS when this many connections are open, e.g. 1000,19000: the
    /// slope between the first and last is the memory per connection.
    #[arg(long, value_delimiter = ',')]
    pub rss_checkpoints: Vec<u64>,
    /// Internal: run as a child of `--processes`, reporting JSON lines on stdout and holding
    /// until stdin closes.
    #[arg(long, hide = true)]
    pub child: bool,
}

/// Options of `storm`.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Connection options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// QoS of the queued messages and subscriptions.
    #[arg(long, default_value = "1", value_parser = parse_qos)]
    pub qos: QoS,
    /// Payload size in bytes (at least 16).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages published to each session while it is offline.
    #[arg(long, default_value_t = 10)]
    pub messages: u32,
    /// Publish rate while the sessions are offline (0: as fast as --window allows).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Unacknowledged publications in flight (closed loop). Keep it at or below the broker's
    /// inflight limit in MQTT 3.1.1, which has no Receive Maximum to announce it (Mosquitto
    /// silently drops QoS 2 messages beyond its 20).
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// Open loop: publishers wake at most once per tick and send everything due (stamped with
    /// its intended time). tokio's timers have 1 ms resolution; a coarser tick costs less CPU
    /// and adds up to one tick of send lag, which the latency then shows.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub tick: Duration,
    /// MQTT 5 Session Expiry Interval of the sessions, seconds.
    #[arg(long, default_value_t = 3600)]
    pub session_expiry: u32,
    /// Give up waiting for resumption and delivery after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub drain: Duration,
}

/// Options of `handshake`.
#[derive(Debug, Clone, Args)]
pub struct HandshakeArgs {
    /// Connection options (`-n` is not used: see --concurrency).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections in progress at once, each opening the next as soon as it closed.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// Resume TLS sessions: one client configuration whose session store collects the
    /// broker's tickets. Off: session resumption disabled, every handshake is a full one.
    #[arg(long)]
    pub resume: bool,
    /// Measured time after the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time before measuring (connections are made but not counted; fills the session store).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
}

impl HandshakeArgs {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), CliError> {
        self.common.validate()?;
        if self.concurrency == 0 {
            return Err(invalid("--concurrency must be at least 1"));
        }
        if self.duration.is_zero() {
            return Err(invalid("--duration must be positive"));
        }
        match self.common.target()? {
            Target::Unix { .. } => Err(invalid("handshake needs a tcp, tls, ws or wss target")),
            Target::Net { tls: false, .. } if self.resume => {
                Err(invalid("--resume needs a tls:// or wss:// target"))
            }
            Target::Net { .. } => Ok(()),
        }
    }
}

/// What the http scenario loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpMode {
    /// N HTTP connections POST one message per request to `/v1/publish`, each to its own
    /// topic, heard by its own MQTT subscriber (the HTTP twin of `pairs`).
    Publish,
    /// The same with `--batch-size` messages per `POST /v1/publish/batch`.
    Batch,
    /// MQTT publishers (`--publishers`) at `--rate`, N SSE streams (`GET /v1/subscribe`) on
    /// one filter matching all of them (the SSE twin of `fanout`).
    Sse,
}

impl HttpMode {
    /// The name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            HttpMode::Publish => "publish",
            HttpMode::Batch => "batch",
            HttpMode::Sse => "sse",
        }
    }
}

/// Options of `http`. `--url` is the gateway's MQTT listener (for the MQTT side), `-n` the HTTP
/// connections (publish, batch) or SSE streams (sse), `--rate` messages per second in total
/// (requests per second are `--rate / --batch-size`), `--rate 0` closed loop: one request in
/// flight per connection (HTTP/1.1 does not pipeline; `--window` applies to the sse mode's
/// MQTT publishers only).
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Load, timing and MQTT connection options, as for pairs/fanout.
    #[command(flatten)]
    pub msg: MessageArgs,
    /// What to load.
    #[arg(long, value_enum, default_value = "publish")]
    pub mode: HttpMode,
    /// The gateway's HTTP listener (plain HTTP/1.1; no TLS).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub http_url: String,
    /// Bearer token: one of the gateway's `[http] publish_tokens`.
    #[arg(long, env = "TIDEGATE_BENCH_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// batch: messages per request.
    #[arg(long, default_value_t = 10)]
    pub batch_size: u32,
    /// sse: MQTT publishers, each on its own topic under the streams' filter.
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Give up on one HTTP request (or opening an SSE stream) after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

impl HttpArgs {
    /// Messages per request: `--batch-size` in batch mode, else 1.
    pub fn messages_per_request(&self) -> u32 {
        match self.mode {
            HttpMode::Batch => self.batch_size,
            HttpMode::Publish | HttpMode::Sse => 1,
        }
    }

    /// Checks the options.
    pub fn validate(&self) -> Result<(), CliError> {
        self.msg.validate()?;
        crate::http_client::HttpTarget::parse(&self.http_url)
            .map_err(|e| invalid(e.to_string()))?;
        if self.mode == HttpMode::Batch && self.batch_size == 0 {
            return Err(invalid("--batch-size must be at least 1"));
        }
        if self.mode == HttpMode::Sse && self.publishers == 0 {
            return Err(invalid("--publishers must be at least 1"));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid("--request-timeout must be positive"));
        }
        Ok(())
    }
}

/// A parsed `--source-addrs`, kept as text too so children can be given the same value.
#[derive(Debug, Clone)]
pub struct SourceAddrsArg {
    /// The original spec.
    pub spec: String,
}

impl SourceAddrsArg {
    /// The address list.
    pub fn addrs(&self) -> SourceAddrs {
        // Validated by `parse_source_addrs` when the command line was read.
        SourceAddrs::parse(&self.spec).unwrap_or_else(|e| unreachable!("validated spec: {e}"))
    }
}

/// Why the options cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// A value out of range or a bad combination.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> CliError {
    CliError::Invalid(msg.into())
}

impl CommonArgs {
    /// The broker address.
    pub fn target(&self) -> Result<Target, CliError> {
        match &self.url {
            Some(url) => Target::parse_url(url).map_err(|e| invalid(e.to_string())),
            None => Ok(Target::tcp(&self.host, self.port)),
        }
    }

    /// The TLS options.
    pub fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.ca_file.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            insecure: self.insecure,
            server_name: self.server_name.clone(),
        }
    }

    /// Checks ranges shared by every scenario.
    pub fn validate(&self) -> Result<(), CliError> {
        self.target()?;
        if self.connections == 0 {
            return Err(invalid("--connections must be at least 1"));
        }
        if self.threads == 0 {
            return Err(invalid("--threads must be at least 1"));
        }
        if self.source_addrs.is_some() && matches!(self.target()?, Target::Unix { .. }) {
            return Err(invalid("--source-addrs applies to tcp only"));
        }
        Ok(())
    }
}

impl MessageArgs {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), CliError> {
        self.common.validate()?;
        check_payload(self.payload)?;
        if self.window == 0 {
            return Err(invalid("--window must be at least 1"));
        }
        if self.duration.is_zero() {
            return Err(invalid("--duration must be positive"));
        }
        if self.session_expiry == Some(0) {
            return Err(invalid(
                "--session-expiry must be at least 1 (0 would be a clean session)",
            ));
        }
        Ok(())
    }
}

impl ConnArgs {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), CliError> {
        self.common.validate()?;
        if self.processes == 0 {
            return Err(invalid("--processes must be at least 1"));
        }
        if self.processes > self.common.connections {
            return Err(invalid("--processes cannot exceed --connections"));
        }
        if self
            .rss_checkpoints
            .iter()
            .any(|c| *c == 0 || *c > u64::from(self.common.connections))
        {
            return Err(invalid("--rss-checkpoints must lie in 1..=--connections"));
        }
        if self.rss_checkpoints.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid("--rss-checkpoints must be increasing"));
        }
        Ok(())
    }
}

impl StormArgs {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), CliError> {
        self.common.validate()?;
        check_payload(self.payload)?;
        if self.messages == 0 {
            return Err(invalid("--messages must be at least 1"));
        }
        if self.window == 0 {
            return Err(invalid("--window must be at least 1"));
        }
        Ok(())
    }
}

fn check_payload(p: usize) -> Result<(), CliError> {
    if p < HEADER_LEN {
        return Err(invalid(format!(
            "--payload must be at least {HEADER_LEN} bytes (the timestamp/sequence header)"
        )));
    }
    if p > 256 * 1024 * 1024 {
        return Err(invalid(
            "--payload must be below 256 MiB (MQTT's packet limit)",
        ));
    }
    Ok(())
}

/// Parses `3.1.1` (also `311`, `4`) or `5` (also `5.0`).
pub fn parse_protocol(s: &str) -> Result<ProtocolVersion, String> {
    match s.trim().trim_start_matches(['v', 'V']) {
        "3.1.1" | "311" | "4" => Ok(ProtocolVersion::V311),
        "5" | "5.0" => Ok(ProtocolVersion::V5),
        other => Err(format!("unknown protocol {other:?} (expected 3.1.1 or 5)")),
    }
}

/// Parses `0`, `1` or `2`.
pub fn parse_qos(s: &str) -> Result<QoS, String> {
    s.trim()
        .parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("QoS must be 0, 1 or 2, not {s:?}"))
}

/// Parses a duration: `10` (seconds), `10s`, `1.5s`, `500ms`, `2m`, `100us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad duration {s:?}"))
}

/// Validates a `--source-addrs` spec.
pub fn parse_source_addrs(s: &str) -> Result<SourceAddrsArg, String> {
    SourceAddrs::parse(s).map_err(|e| e.to_string())?;
    Ok(SourceAddrsArg {
        spec: s.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tidegate-bench").chain(args.iter().copied()))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn protocols_and_qos() {
        assert_eq!(parse_protocol("3.1.1"), Ok(ProtocolVersion::V311));
        assert_eq!(parse_protocol("v5"), Ok(ProtocolVersion::V5));
        assert!(parse_protocol("3.1").is_err());
        assert_eq!(parse_qos("2"), Ok(QoS::ExactlyOnce));
        assert!(parse_qos("3").is_err());
    }

    #[test]
    fn pairs_command_line() {
        let cli = parse(&[
            "pairs",
            "--url",
            "tcp://127.0.0.1:18830",
            "-n",
            "10",
            "--qos",
            "1",
            "--rate",
            "50000",
            "--protocol",
            "3.1.1",
            "--duration",
            "5s",
            "--source-addrs",
            "127.0.0.2-127.0.0.3",
        ])
        .unwrap();
        let Scenario::Pairs(m) = cli.scenario else {
            panic!("not pairs")
        };
        m.validate().unwrap();
        assert_eq!(m.common.connections, 10);
        assert_eq!(m.qos, QoS::AtLeastOnce);
        assert_eq!(m.rate, 50_000);
        assert_eq!(m.common.protocol, ProtocolVersion::V311);
        assert_eq!(
            m.common.target().unwrap().to_string(),
            "tcp://127.0.0.1:18830"
        );
        assert_eq!(m.common.source_addrs.unwrap().addrs().addrs().len(), 2);
    }

    #[test]
    fn session_expiry_makes_persistent_sessions() {
        let cli = parse(&["pairs", "--qos", "1", "--session-expiry", "300"]).unwrap();
        let Scenario::Pairs(m) = cli.scenario else {
            panic!("not pairs")
        };
        m.validate().unwrap();
        let env_opts = || ConnectOptions {
            version: ProtocolVersion::V311,
            client_id: "c".to_owned(),
            clean_start: true,
            keep_alive: 60,
            session_expiry: None,
            username: None,
            password: None,
            timeout: Duration::from_secs(1),
            read_chunk: 1024,
        };
        let mut opts = env_opts();
        m.apply_session(&mut opts);
        assert!(!opts.clean_start, "Clean Start 0 / Clean Session 0");
        assert_eq!(opts.session_expiry, Some(300));

        let cli = parse(&["fanout", "--qos", "1"]).unwrap();
        let Scenario::Fanout(m) = cli.scenario else {
            panic!("not fanout")
        };
        assert_eq!(m.session_expiry, None);
        let mut opts = env_opts();
        opts.clean_start = false;
        m.apply_session(&mut opts);
        assert!(opts.clean_start, "clean sessions by default");
        assert_eq!(opts.session_expiry, None);

        let cli = parse(&["fanin", "--session-expiry", "0"]).unwrap();
        let Scenario::Fanin(m) = cli.scenario else {
            panic!("not fanin")
        };
        assert!(m.validate().is_err(), "expiry 0 is a clean session");
    }

    #[test]
    fn small_payload_is_refused() {
        let cli = parse(&["fanin", "--payload", "8"]).unwrap();
        let Scenario::Fanin(m) = cli.scenario else {
            panic!("not fanin")
        };
        assert!(m.validate().is_err());
    }

    #[test]
    fn conn_checkpoints() {
        let cli = parse(&[
            "conn",
            "-n",
            "20000",
            "--processes",
            "2",
            "--rss-checkpoints",
            "1000,19000",
        ])
        .unwrap();
        let Scenario::Conn(c) = cli.scenario else {
            panic!("not conn")
        };
        c.validate().unwrap();
        assert_eq!(c.rss_checkpoints, vec![1000, 19000]);
        let bad = parse(&["conn", "-n", "100", "--rss-checkpoints", "50,10"]).unwrap();
        let Scenario::Conn(c) = bad.scenario else {
            panic!("not conn")
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn handshake_command_line() {
        let cli = parse(&[
            "handshake",
            "--url",
            "tls://localhost:8883",
            "--insecure",
            "--resume",
            "--concurrency",
            "4",
        ])
        .unwrap();
        let Scenario::Handshake(h) = cli.scenario else {
            panic!("not handshake")
        };
        h.validate().unwrap();
        assert!(h.resume);
        assert_eq!(h.concurrency, 4);
        let plain = parse(&["handshake", "--url", "tcp://127.0.0.1:1883", "--resume"]).unwrap();
        let Scenario::Handshake(h) = plain.scenario else {
            panic!("not handshake")
        };
        assert!(h.validate().is_err(), "nothing to resume without TLS");
        let unix = parse(&["handshake", "--url", "unix:///tmp/s"]).unwrap();
        let Scenario::Handshake(h) = unix.scenario else {
            panic!("not handshake")
        };
        assert!(h.validate().is_err());
    }

    #[test]
    fn http_command_line() {
        let cli = parse(&[
            "http",
            "--mode",
            "batch",
            "--batch-size",
            "25",
            "--http-url",
            "http://127.0.0.1:18080",
            "--token",
            "t",
            "--qos",
            "1",
            "--rate",
            "0",
            "-n",
            "4",
        ])
        .unwrap();
        let Scenario::Http(h) = cli.scenario else {
            panic!("not http")
        };
        h.validate().unwrap();
        assert_eq!(h.mode, HttpMode::Batch);
        assert_eq!(h.messages_per_request(), 25);
        assert_eq!(h.msg.common.connections, 4);
        assert_eq!(h.msg.qos, QoS::AtLeastOnce);
        assert_eq!(h.token.as_deref(), Some("t"));

        let cli = parse(&["http", "--mode", "sse", "--batch-size", "25"]).unwrap();
        let Scenario::Http(h) = cli.scenario else {
            panic!("not http")
        };
        h.validate().unwrap();
        assert_eq!(
            h.messages_per_request(),
            1,
            "batch size is for batch mode only"
        );
        assert_eq!(h.http_url, "http://127.0.0.1:8080");

        for bad in [
            &["http", "--mode", "batch", "--batch-size", "0"][..],
            &["http", "--mode", "sse", "--publishers", "0"][..],
            &["http", "--http-url", "https://127.0.0.1:8443"][..],
            &["http", "--request-timeout", "0s"][..],
        ] {
            let Scenario::Http(h) = parse(bad).unwrap().scenario else {
                panic!("not http")
            };
            assert!(h.validate().is_err(), "{bad:?} accepted");
        }
        assert!(parse(&["http", "--mode", "longpoll"]).is_err());
    }

    #[test]
    fn bad_source_addrs_fail_at_parse_time() {
        assert!(parse(&["pairs", "--source-addrs", "127.0.0.9-127.0.0.1"]).is_err());
    }

    #[test]
    fn source_addrs_with_unix_is_refused() {
        let cli = parse(&[
            "pairs",
            "--url",
            "unix:///tmp/x",
            "--source-addrs",
            "127.0.0.2",
        ])
        .unwrap();
        let Scenario::Pairs(m) = cli.scenario else {
            panic!("not pairs")
        };
        assert!(m.validate().is_err());
    }
}
