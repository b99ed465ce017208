//! The TOML configuration file and its validation.
//!
//! Place in the data flow: read once at start-up (file, then the `TIDEGATE_CONFIG` environment
//! variable picks the file, then command-line flags override it, see [`crate::cli`]); the
//! `[limits]` section becomes the core's [`BrokerConfig`], the rest drives the listeners,
//! shutdown and logging of this crate.
//!
//! Parsing and validation are separate steps, as in pingora: serde fills every missing key with
//! its default (`#[serde(default)]`) and refuses unknown keys (`deny_unknown_fields`, so a typo
//! is an error, not a silently ignored setting); [`Config::validate`] then checks what types
//! cannot express (ranges, listener kinds this build can run, a bind address with a port).
//! The key names here are a user contract: new keys may appear, existing ones keep working.

mod auth;
mod listener;
mod storage;

pub use auth::AuthConfig;

pub use listener::{
    ClientAuth, DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_WS_PATH, IdentityFrom, IdentityUse,
    ListenerConfig, ListenerKind,
};
pub use storage::{DEFAULT_FSYNC_INTERVAL_MS, FsyncPolicy, Persistence, StorageConfig};

use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tidegate_core::BrokerConfig;
use tidegate_core::config::QueueDropPolicy;
use tidegate_protocol::{QoS, Utf8, Utf8Error};

/// Where `tidegate serve` listens when neither the file nor `--listen` names a listener.
pub const DEFAULT_TCP_BIND: &str = "0.0.0.0:1883";

/// Where the HTTP API listens when the configuration names no listener.
pub const DEFAULT_HTTP_BIND: &str = "0.0.0.0:8080";

/// Largest whole MQTT packet the wire format can carry: 1 byte of packet type, 4 bytes of
/// remaining length, and the 268,435,455-byte maximum remaining length.
const MAX_MQTT_PACKET_SIZE: u32 = 268_435_460;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for persistent state (the embedded disk store). Default `./data`.
    pub data_dir: PathBuf,
    /// `"disk"` (default): sessions, queues and retained messages in the embedded store under
    /// `data_dir`; `"memory"`: nothing survives a restart.
    pub persistence: Persistence,
    /// `"always"` (default), `"interval"` or `"never"`: see [`FsyncPolicy`].
    pub fsync: FsyncPolicy,
    /// Period of `fsync = "interval"`, in milliseconds.
    pub fsync_interval_ms: u64,
    /// The sockets to accept clients on. Default: one MQTT TCP listener on `0.0.0.0:1883`.
    pub listeners: Vec<ListenerConfig>,
    /// Protocol and resource limits.
    pub limits: Limits,
    /// Graceful shutdown behaviour.
    pub shutdown: ShutdownConfig,
    /// Log output.
    pub log: LogConfig,
    /// The HTTP API: tokens, body and rate limits, SSE history (`[http]`).
    pub http: tidegate_http::HttpConfig,
    /// Tenants (`[[tenants]]`), each with its authentication methods, ACL and quotas. None:
    /// every client is in the implicit `default` tenant, which allows anonymous clients.
    pub tenants: Vec<tidegate_auth::TenantConfig>,
    /// Gateway-wide authentication settings: the brute-force limiter, the hook cache.
    pub auth: AuthConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            persistence: Persistence::Disk,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: DEFAULT_FSYNC_INTERVAL_MS,
            listeners: vec![
                ListenerConfig::new(ListenerKind::Tcp, DEFAULT_TCP_BIND),
                ListenerConfig::new(ListenerKind::Http, DEFAULT_HTTP_BIND),
            ],
            limits: Limits::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            http: tidegate_http::HttpConfig::default(),
            tenants: Vec::new(),
            auth: AuthConfig::default(),
        }
    }
}

impl Config {
    /// Reads and parses a configuration file (not yet validated: flags may still override it).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// The storage settings (`persistence`, `fsync`, `fsync_interval_ms`).
    pub fn storage(&self) -> StorageConfig {
        StorageConfig {
            persistence: self.persistence,
            fsync: self.fsync,
            fsync_interval: Duration::from_millis(self.fsync_interval_ms),
        }
    }

    /// Parses configuration text; every missing key takes its default.
    pub fn from_toml_str(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks everything the types cannot: at least one listener, each with the address key its
    /// kind needs and a unique name, only listener kinds this build runs, limits in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::EmptyDataDir);
        }
        storage::validate_interval(self.fsync_interval_ms).map_err(|reason| {
            ConfigError::InvalidLimit {
                key: "fsync_interval_ms",
                reason,
            }
        })?;
        if self.listeners.is_empty() {
            return Err(ConfigError::NoListeners);
        }
        let mut names = HashSet::new();
        for listener in &self.listeners {
            listener.validate()?;
            let name = listener.name();
            if !names.insert(name.clone()) {
                return Err(ConfigError::DuplicateListenerName(name));
            }
        }
        // Kind support is checked after the structural checks so that a malformed listener is
        // reported as such even when its kind is not available yet.
        for listener in &self.listeners {
            if !listener.kind.is_supported() {
                return Err(ConfigError::UnsupportedListener {
                    listener: listener.name(),
                    kind: listener.kind,
                });
            }
        }
        self.limits.validate()?;
        self.shutdown.validate()?;
        self.log.validate()?;
        self.http.validate().map_err(ConfigError::Http)?;
        self.auth.validate()?;
        tidegate_auth::validate_tenants(&self.tenants)?;
        self.check_listener_tenants()
    }

    /// Every listener's `tenant` names a declared tenant (`default` when none is declared).
    fn check_listener_tenants(&self) -> Result<(), ConfigError> {
        for listener in &self.listeners {
            let Some(tenant) = &listener.tenant else {
                continue;
            };
            let known = if self.tenants.is_empty() {
                tenant == tidegate_auth::DEFAULT_TENANT_ID
            } else {
                self.tenants.iter().any(|t| &t.id == tenant)
            };
            if !known {
                return Err(ConfigError::UnknownListenerTenant {
                    listener: listener.name(),
                    tenant: tenant.clone(),
                });
            }
        }
        Ok(())
    }
}

/// What is dropped when a session's queue is full (TOML `queue_drop_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Drop the oldest QoS 0 message, else the oldest message.
    #[default]
    DropOldest,
    /// Refuse the new message.
    DropNewest,
}

impl From<DropPolicy> for QueueDropPolicy {
    fn from(p: DropPolicy) -> QueueDropPolicy {
        match p {
            DropPolicy::DropOldest => QueueDropPolicy::DropOldest,
            DropPolicy::DropNewest => QueueDropPolicy::DropNewest,
        }
    }
}

/// The `[limits]` section. Everything but the connection counts and the outbound queue maps
/// onto the core's [`BrokerConfig`] ([`Limits::broker_config`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest packet accepted, in bytes; checked against the fixed header before buffering.
    pub max_packet_size: u32,
    /// CONNECT must arrive within this many milliseconds of the socket opening.
    pub connect_timeout_ms: u64,
    /// Outbound QoS 1/2 messages unacknowledged per session.
    pub max_inflight: u16,
    /// Inbound QoS 1/2 messages a client may leave unacknowledged (announced in CONNACK).
    pub receive_maximum: u16,
    /// Messages queued per session (offline, or beyond the inflight window).
    pub max_queued_messages: usize,
    /// What goes when that queue is full.
    pub queue_drop_policy: DropPolicy,
    /// Subscriptions per client.
    pub max_subscriptions: usize,
    /// Longest topic name or filter in bytes (at most 65,535).
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Topic aliases a v5 client may use towards us.
    pub topic_alias_maximum: u16,
    /// Upper bound on the session expiry interval a client may ask for, in seconds.
    pub max_session_expiry_secs: u32,
    /// Keep alive imposed on clients asking for more (or for 0), in seconds; 0 accepts the
    /// client's value.
    pub max_keep_alive_secs: u16,
    /// Highest QoS granted (0, 1 or 2).
    pub max_qos: u8,
    /// Connections held at once across all listeners; beyond it new sockets are closed at once.
    pub max_connections: usize,
    /// Packets waiting to be written to one connection. When full, a QoS 0 PUBLISH is dropped
    /// (and counted); any other packet closes the connection as a slow consumer, so the broker
    /// never waits for one client.
    pub max_outbound_queue: usize,
    /// Every this many seconds each tenant with a session gets its `$SYS/broker/...`
    /// statistics published (retained, its own figures only); 0 turns them off.
    pub sys_interval_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let core = BrokerConfig::default();
        Limits {
            max_packet_size: core.max_packet_size,
            connect_timeout_ms: duration_ms(core.connect_timeout),
            max_inflight: core.max_inflight,
            receive_maximum: core.receive_maximum,
            max_queued_messages: core.max_queued_messages,
            queue_drop_policy: DropPolicy::DropOldest,
            max_subscriptions: core.max_subscriptions,
            max_topic_length: core.max_topic_length,
            max_topic_levels: core.max_topic_levels,
            topic_alias_maximum: core.topic_alias_maximum,
            max_session_expiry_secs: core.max_session_expiry,
            max_keep_alive_secs: core.max_keep_alive.unwrap_or(0),
            max_qos: core.max_qos.as_u8(),
            max_connections: 1_000_000,
            max_outbound_queue: 1024,
            sys_interval_secs: core.sys_interval.as_secs(),
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(bool, &'static str, &'static str); 11] = [
            (
                (2..=MAX_MQTT_PACKET_SIZE).contains(&self.max_packet_size),
                "limits.max_packet_size",
                "must be between 2 and 268435460 bytes",
            ),
            (
                self.connect_timeout_ms > 0,
                "limits.connect_timeout_ms",
                "must be at least 1",
            ),
            (
                self.max_inflight > 0,
                "limits.max_inflight",
                "must be at least 1",
            ),
            (
                self.receive_maximum > 0,
                "limits.receive_maximum",
                "must be at least 1 (0 is a protocol error in MQTT 5)",
            ),
            (
                self.max_subscriptions > 0,
                "limits.max_subscriptions",
                "must be at least 1",
            ),
            (
                (1..=65_535).contains(&self.max_topic_length),
                "limits.max_topic_length",
                "must be between 1 and 65535",
            ),
            (
                self.max_topic_levels > 0,
                "limits.max_topic_levels",
                "must be at least 1",
            ),
            (
                QoS::from_u8(self.max_qos).is_some(),
                "limits.max_qos",
                "must be 0, 1 or 2",
            ),
            (
                self.max_connections > 0,
                "limits.max_connections",
                "must be at least 1",
            ),
            (
                self.max_outbound_queue > 0,
                "limits.max_outbound_queue",
                "must be at least 1",
            ),
            (
                self.max_queued_messages > 0,
                "limits.max_queued_messages",
                "must be at least 1",
            ),
        ];
        match checks.into_iter().find(|(ok, _, _)| !ok) {
            Some((_, key, reason)) => Err(ConfigError::InvalidLimit { key, reason }),
            None => Ok(()),
        }
    }

    /// The CONNECT timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The core engine's configuration: these limits, core defaults for the rest.
    pub fn broker_config(&self) -> BrokerConfig {
        BrokerConfig {
            max_packet_size: self.max_packet_size,
            connect_timeout: self.connect_timeout(),
            max_inflight: self.max_inflight,
            receive_maximum: self.receive_maximum,
            max_queued_messages: self.max_queued_messages,
            queue_drop_policy: self.queue_drop_policy.into(),
            max_subscriptions: self.max_subscriptions,
            max_topic_length: self.max_topic_length,
            max_topic_levels: self.max_topic_levels,
            topic_alias_maximum: self.topic_alias_maximum,
            max_session_expiry: self.max_session_expiry_secs,
            max_keep_alive: (self.max_keep_alive_secs != 0).then_some(self.max_keep_alive_secs),
            // validate() refuses anything but 0..=2; the fallback only keeps this total.
            max_qos: QoS::from_u8(self.max_qos).unwrap_or(QoS::ExactlyOnce),
            sys_interval: Duration::from_secs(self.sys_interval_secs),
            ..BrokerConfig::default()
        }
    }
}

/// The `[shutdown]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long connections get to receive their DISCONNECT and close after SIGINT/SIGTERM
    /// before the remaining ones are dropped, in milliseconds.
    pub grace_period_ms: u64,
    /// Sent as Server Reference with DISCONNECT 0x8B to MQTT 5 clients; empty for none.
    pub server_reference: String,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period_ms: 5_000,
            server_reference: String::new(),
        }
    }
}

impl ShutdownConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server_reference().map(|_| ())
    }

    /// The grace period as a duration.
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.grace_period_ms)
    }

    /// The server reference as an MQTT string, `None` when empty.
    pub fn server_reference(&self) -> Result<Option<Utf8>, ConfigError> {
        if self.server_reference.is_empty() {
            return Ok(None);
        }
        Utf8::try_from(self.server_reference.as_str())
            .map(Some)
            .map_err(ConfigError::InvalidServerReference)
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// Filter directives (`info`, `tidegate_server=debug,info`, ...); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        crate::logging::parse_filter(&self.level)
            .map(|_| ())
            .map_err(|reason| ConfigError::InvalidLogLevel {
                level: self.level.clone(),
                reason,
            })
    }
}

/// Why a configuration cannot be used. Every variant names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, ...).
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// `data_dir` is empty.
    #[error("data_dir must not be empty")]
    EmptyDataDir,
    /// `listeners` is an empty list.
    #[error("no listeners configured: add a [[listeners]] entry or pass --listen")]
    NoListeners,
    /// A listener's `name` is the empty string.
    #[error("a listener name must not be empty")]
    EmptyListenerName,
    /// Two listeners have the same name.
    #[error("two listeners are named {0:?}: give one of them a distinct `name`")]
    DuplicateListenerName(String),
    /// A kind (or URL scheme) that does not exist.
    #[error("unknown listener kind {0:?} (expected tcp, tls, ws, wss, unix, http or https)")]
    UnknownListenerKind(String),
    /// A listener kind this build cannot run yet.
    #[error(
        "listener {listener}: kind \"{kind}\" is not yet supported (tcp, tls, ws, wss and unix are)"
    )]
    UnsupportedListener {
        /// The listener's name.
        listener: String,
        /// Its kind.
        kind: ListenerKind,
    },
    /// The `[http]` table is invalid.
    #[error("[http]: {0}")]
    Http(String),
    /// A listener lacks the address key its kind needs.
    #[error("listener {listener}: a {kind} listener needs `{key}`")]
    MissingListenerKey {
        /// The listener's name.
        listener: String,
        /// Its kind.
        kind: ListenerKind,
        /// The missing key.
        key: &'static str,
    },
    /// A listener has a key that does not apply to its kind.
    #[error("listener {listener}: `{key}` does not apply to a {kind} listener")]
    UnexpectedListenerKey {
        /// The listener's name.
        listener: String,
        /// Its kind.
        kind: ListenerKind,
        /// The key that does not apply.
        key: &'static str,
    },
    /// A `bind` value that is not `HOST:PORT`.
    #[error("listener {listener}: invalid bind address {bind:?}: {reason}")]
    InvalidBind {
        /// The listener's name.
        listener: String,
        /// The value given.
        bind: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A listener option with a value it cannot take.
    #[error("listener {listener}: `{key}` {reason}")]
    InvalidListenerValue {
        /// The listener's name.
        listener: String,
        /// The key at fault.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `--dev` could not create or read its development certificates.
    #[error("--dev: cannot prepare the development certificates in {}: {reason}", dir.display())]
    DevCertificates {
        /// The directory they live in.
        dir: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A `--listen` URL that cannot be parsed.
    #[error("invalid listen URL {url:?}: {reason}")]
    InvalidListenUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A limit out of its range.
    #[error("{key} {reason}")]
    InvalidLimit {
        /// The key, e.g. `limits.max_qos`.
        key: &'static str,
        /// The allowed range.
        reason: &'static str,
    },
    /// `shutdown.server_reference` is not an MQTT string.
    #[error("shutdown.server_reference is not a valid MQTT string: {0}")]
    InvalidServerReference(Utf8Error),
    /// The `[[tenants]]` are invalid (the message names the key).
    #[error(transparent)]
    Tenants(#[from] tidegate_auth::ConfigError),
    /// A listener's `tenant` names no declared tenant.
    #[error(
        "listener {listener}: tenant {tenant:?} is not declared in [[tenants]] (without \
         [[tenants]] only \"default\" exists)"
    )]
    UnknownListenerTenant {
        /// The listener's name.
        listener: String,
        /// The value given.
        tenant: String,
    },
    /// The `[auth]` section has a value out of range.
    #[error("[auth]: {0}")]
    InvalidAuth(String),
    /// `log.level` is not a valid filter.
    #[error("log.level {level:?} is not a valid filter: {reason}")]
    InvalidLogLevel {
        /// The value given.
        level: String,
        /// The parser's complaint.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml_str(text).unwrap()
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = parse("");
        assert_eq!(config, Config::default());
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.listeners[0].kind, ListenerKind::Tcp);
        assert_eq!(config.listeners[1].kind, ListenerKind::Http);
        assert_eq!(config.listeners[1].bind.as_deref(), Some(DEFAULT_HTTP_BIND));
        assert_eq!(config.listeners[0].bind.as_deref(), Some("0.0.0.0:1883"));
        assert_eq!(config.listeners[0].name(), "tcp:0.0.0.0:1883");
        assert_eq!(config.limits.max_packet_size, 1_048_576);
        assert_eq!(config.limits.connect_timeout_ms, 10_000);
        assert_eq!(config.limits.max_connections, 1_000_000);
        assert_eq!(config.limits.max_outbound_queue, 1024);
        assert_eq!(config.limits.max_keep_alive_secs, 0);
        assert_eq!(config.limits.max_qos, 2);
        assert_eq!(config.limits.sys_interval_secs, 10);
        assert_eq!(config.shutdown.grace_period(), Duration::from_secs(5));
        assert_eq!(config.shutdown.server_reference().unwrap(), None);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.level, "info");
        config.validate().unwrap();
    }

    #[test]
    fn default_limits_map_onto_the_core_defaults() {
        assert_eq!(Limits::default().broker_config(), BrokerConfig::default());
    }

    #[test]
    fn full_example_parses_and_maps() {
        let config = parse(
            r#"
            data_dir = "/var/lib/tidegate"
            [[listeners]]
            kind = "tcp"
            bind = "127.0.0.1:1884"
            name = "public"
            max_connections = 100000
            [limits]
            max_packet_size = 2048
            connect_timeout_ms = 3000
            max_inflight = 10
            receive_maximum = 20
            max_queued_messages = 30
            queue_drop_policy = "drop_newest"
            max_subscriptions = 40
            max_topic_length = 50
            max_topic_levels = 6
            topic_alias_maximum = 7
            max_session_expiry_secs = 80
            max_keep_alive_secs = 90
            max_qos = 1
            max_connections = 100
            max_outbound_queue = 16
            sys_interval_secs = 0
            [shutdown]
            grace_period_ms = 250
            server_reference = "other.example:1883"
            [log]
            format = "json"
            level = "debug"
            "#,
        );
        config.validate().unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/tidegate"));
        let listener = &config.listeners[0];
        assert_eq!(listener.name(), "public");
        assert_eq!(listener.max_connections, Some(100_000));
        let core = config.limits.broker_config();
        assert_eq!(core.max_packet_size, 2048);
        assert_eq!(core.connect_timeout, Duration::from_secs(3));
        assert_eq!(core.max_inflight, 10);
        assert_eq!(core.receive_maximum, 20);
        assert_eq!(core.max_queued_messages, 30);
        assert_eq!(core.queue_drop_policy, QueueDropPolicy::DropNewest);
        assert_eq!(core.max_subscriptions, 40);
        assert_eq!(core.max_topic_length, 50);
        assert_eq!(core.max_topic_levels, 6);
        assert_eq!(core.topic_alias_maximum, 7);
        assert_eq!(core.max_session_expiry, 80);
        assert_eq!(core.max_keep_alive, Some(90));
        assert_eq!(core.max_qos, QoS::AtLeastOnce);
        assert_eq!(core.sys_interval, Duration::ZERO);
        assert_eq!(config.limits.max_connections, 100);
        assert_eq!(config.limits.max_outbound_queue, 16);
        assert_eq!(config.shutdown.grace_period(), Duration::from_millis(250));
        assert_eq!(
            config.shutdown.server_reference().unwrap().as_deref(),
            Some("other.example:1883")
        );
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn tenants_and_listener_tenants_are_read_and_checked() {
        let config = parse(
            r#"
            [[listeners]]
            kind = "tcp"
            bind = "0.0.0.0:1884"
            tenant = "open"
            [[tenants]]
            id = "open"
            allow_anonymous = true
            [[tenants]]
            id = "acme"
            [tenants.quotas]
            max_connections = 1000
            [auth]
            max_failures = 3
            "#,
        );
        config.validate().unwrap();
        assert_eq!(config.listeners[0].tenant.as_deref(), Some("open"));
        assert_eq!(config.tenants.len(), 2);
        assert_eq!(config.tenants[1].quotas.max_connections, Some(1000));
        assert_eq!(config.auth.failure_limits().max_failures, 3);

        let unknown = parse("[[listeners]]\nkind = \"tcp\"\nbind = \"0.0.0.0:1\"\ntenant = \"x\"");
        let err = unknown.validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::UnknownListenerTenant { .. }),
            "{err}"
        );
        // Without [[tenants]] the implicit tenant can be named.
        let default =
            parse("[[listeners]]\nkind = \"tcp\"\nbind = \"0.0.0.0:1\"\ntenant = \"default\"");
        default.validate().unwrap();
        let bad_tenant = parse("[[tenants]]\nid = \"bad id\"");
        assert!(matches!(
            bad_tenant.validate().unwrap_err(),
            ConfigError::Tenants(_)
        ));
        let http =
            parse("[[listeners]]\nkind = \"http\"\nbind = \"0.0.0.0:1\"\ntenant = \"default\"");
        assert!(matches!(
            http.validate().unwrap_err(),
            ConfigError::UnexpectedListenerKey { key: "tenant", .. }
        ));
        let bad_auth = parse("[auth]\nwindow_secs = 0");
        assert!(matches!(
            bad_auth.validate().unwrap_err(),
            ConfigError::InvalidAuth(_)
        ));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::from_toml_str("data_dri = \"x\"").is_err());
        assert!(Config::from_toml_str("[limits]\nmax_pakcet_size = 5").is_err());
        assert!(Config::from_toml_str("[[listeners]]\nkind = \"tcp\"\nbnd = \"x\"").is_err());
        assert!(Config::from_toml_str("[[listeners]]\nkind = \"quic\"\nbind = \"x\"").is_err());
        assert!(Config::from_toml_str("[limits]\nqueue_drop_policy = \"random\"").is_err());
        assert!(Config::from_toml_str("[limits]\nmax_inflight = 70000").is_err());
    }

    #[test]
    fn tls_listener_of_the_architecture_notes_validates() {
        let config = parse(
            r#"
            [[listeners]]
            kind = "tcp"
            bind = "0.0.0.0:1883"
            [[listeners]]
            kind = "tls"
            bind = "0.0.0.0:8883"
            cert = "certs/server.pem"
            key = "certs/server.key"
            client_ca = "certs/ca.pem"
            client_auth = "required"
            identity_from = "cn"
            "#,
        );
        assert_eq!(config.listeners[1].client_auth, Some(ClientAuth::Required));
        config.validate().unwrap();
    }

    #[test]
    fn every_listener_kind_validates() {
        for kind in ListenerKind::ALL {
            let address = if kind == ListenerKind::Unix {
                "/tmp/t.sock"
            } else {
                "127.0.0.1:1"
            };
            let mut listener = ListenerConfig::new(kind, address);
            if kind.uses_tls() {
                listener.cert = Some(PathBuf::from("c.pem"));
                listener.key = Some(PathBuf::from("k.pem"));
            }
            let config = Config {
                listeners: vec![listener],
                ..Config::default()
            };
            assert!(kind.is_supported(), "{kind}");
            config.validate().unwrap();
        }
    }

    #[test]
    fn the_http_table_is_read_and_checked() {
        let config =
            parse("[http]\npublish_tokens = [\"p\"]\nadmin_tokens = [\"a\"]\nmax_body_bytes = 10");
        assert_eq!(config.http.publish_tokens, ["p"]);
        assert_eq!(config.http.max_body_bytes, 10);
        config.validate().unwrap();
        let same = parse("[http]\npublish_tokens = [\"x\"]\nadmin_tokens = [\"x\"]");
        assert!(matches!(same.validate(), Err(ConfigError::Http(_))));
        let proxied =
            parse("[[listeners]]\nkind = \"http\"\nbind = \"127.0.0.1:1\"\nproxy_protocol = true");
        assert!(proxied.validate().is_err());
    }

    #[test]
    fn listener_address_keys_are_checked() {
        let no_bind = parse("[[listeners]]\nkind = \"tcp\"");
        assert!(matches!(
            no_bind.validate(),
            Err(ConfigError::MissingListenerKey { key: "bind", .. })
        ));
        let unix_with_bind = parse("[[listeners]]\nkind = \"unix\"\nbind = \"0.0.0.0:1\"");
        assert!(matches!(
            unix_with_bind.validate(),
            Err(ConfigError::MissingListenerKey { key: "path", .. })
        ));
        let tcp_with_path =
            parse("[[listeners]]\nkind = \"tcp\"\nbind = \"0.0.0.0:1\"\npath = \"x\"");
        assert!(matches!(
            tcp_with_path.validate(),
            Err(ConfigError::UnexpectedListenerKey { key: "path", .. })
        ));
        let tcp_with_cert =
            parse("[[listeners]]\nkind = \"tcp\"\nbind = \"0.0.0.0:1\"\ncert = \"c\"");
        assert!(matches!(
            tcp_with_cert.validate(),
            Err(ConfigError::UnexpectedListenerKey { key: "cert", .. })
        ));
        for bad in ["1883", "0.0.0.0", ":1883", "0.0.0.0:99999", "0.0.0.0:x"] {
            let config = Config {
                listeners: vec![ListenerConfig::new(ListenerKind::Tcp, bad)],
                ..Config::default()
            };
            assert!(
                matches!(config.validate(), Err(ConfigError::InvalidBind { .. })),
                "{bad}"
            );
        }
        for good in ["localhost:1883", "[::1]:1883", "0.0.0.0:0"] {
            let config = Config {
                listeners: vec![ListenerConfig::new(ListenerKind::Tcp, good)],
                ..Config::default()
            };
            config.validate().unwrap();
        }
    }

    #[test]
    fn listener_list_is_checked() {
        let empty = parse("listeners = []");
        assert!(matches!(empty.validate(), Err(ConfigError::NoListeners)));
        let twice = parse(
            "[[listeners]]\nkind = \"tcp\"\nbind = \"0.0.0.0:1\"\n\
             [[listeners]]\nkind = \"tcp\"\nbind = \"0.0.0.0:1\"",
        );
        assert!(matches!(
            twice.validate(),
            Err(ConfigError::DuplicateListenerName(name)) if name == "tcp:0.0.0.0:1"
        ));
        let zero =
            parse("[[listeners]]\nkind = \"tcp\"\nbind = \"0.0.0.0:1\"\nmax_connections = 0");
        assert!(matches!(
            zero.validate(),
            Err(ConfigError::InvalidLimit {
                key: "listeners.max_connections",
                ..
            })
        ));
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let cases = [
            ("max_packet_size = 1", "limits.max_packet_size"),
            ("max_packet_size = 268435461", "limits.max_packet_size"),
            ("connect_timeout_ms = 0", "limits.connect_timeout_ms"),
            ("max_inflight = 0", "limits.max_inflight"),
            ("receive_maximum = 0", "limits.receive_maximum"),
            ("max_subscriptions = 0", "limits.max_subscriptions"),
            ("max_topic_length = 65536", "limits.max_topic_length"),
            ("max_topic_levels = 0", "limits.max_topic_levels"),
            ("max_qos = 3", "limits.max_qos"),
            ("max_connections = 0", "limits.max_connections"),
            ("max_outbound_queue = 0", "limits.max_outbound_queue"),
            ("max_queued_messages = 0", "limits.max_queued_messages"),
        ];
        for (line, expected) in cases {
            let config = parse(&format!("[limits]\n{line}"));
            match config.validate() {
                Err(ConfigError::InvalidLimit { key, .. }) => assert_eq!(key, expected, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn server_reference_and_log_level_are_checked() {
        let bad_ref = parse("[shutdown]\nserver_reference = \"a\\u0000b\"");
        assert!(matches!(
            bad_ref.validate(),
            Err(ConfigError::InvalidServerReference(Utf8Error::Null))
        ));
        let bad_level = parse("[log]\nlevel = \"info,=[\"");
        assert!(matches!(
            bad_level.validate(),
            Err(ConfigError::InvalidLogLevel { .. })
        ));
        parse("[log]\nlevel = \"warn,tidegate_server=debug\"")
            .validate()
            .unwrap();
    }

    #[test]
    fn listen_urls_parse() {
        let tcp = ListenerConfig::from_url("tcp://127.0.0.1:1883").unwrap();
        assert_eq!(
            tcp,
            ListenerConfig::new(ListenerKind::Tcp, "127.0.0.1:1883")
        );
        let unix = ListenerConfig::from_url("unix:///run/tidegate.sock").unwrap();
        assert_eq!(unix.path, Some(PathBuf::from("/run/tidegate.sock")));
        assert_eq!(unix.name(), "unix:/run/tidegate.sock");
        let ws = ListenerConfig::from_url("ws://0.0.0.0:8080").unwrap();
        assert_eq!(ws.kind, ListenerKind::Ws);
        for bad in [
            "127.0.0.1:1883",
            "tcp://",
            "tcp://127.0.0.1",
            "ws://0.0.0.0:8080/mqtt",
        ] {
            assert!(
                matches!(
                    ListenerConfig::from_url(bad),
                    Err(ConfigError::InvalidListenUrl { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            ListenerConfig::from_url("quic://0.0.0.0:1"),
            Err(ConfigError::UnknownListenerKind(k)) if k == "quic"
        ));
    }

    #[test]
    fn load_reports_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidegate.toml");
        assert!(matches!(Config::load(&path), Err(ConfigError::Read { .. })));
        std::fs::write(&path, "[limits]\nmax_qos = \"two\"").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.to_string().contains("tidegate.toml"), "{err}");
        std::fs::write(&path, "[limits]\nmax_qos = 1").unwrap();
        assert_eq!(Config::load(&path).unwrap().limits.max_qos, 1);
    }
}
