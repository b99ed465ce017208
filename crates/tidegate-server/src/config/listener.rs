//! One `[[listeners]]` entry: its kind, address and transport options, and their validation.
//!
//! Place in the data flow: read at start-up with the rest of [`crate::config`]; the server
//! turns each entry into a bound socket plus the transport steps its kind needs (PROXY header,
//! TLS, WebSocket upgrade, see [`crate::transport`]).
//!
//! Which keys apply to which kind:
//!
//! | key | tcp | tls | ws | wss | unix |
//! |---|---|---|---|---|---|
//! | `bind` | required | required | required | required | — |
//! | `path` | — | — | HTTP path (default `/mqtt`) | HTTP path | socket file (required) |
//! | `max_connections`, `max_accept_rate` | yes | yes | yes | yes | yes |
//! | `handshake_timeout_ms` | with PROXY | yes | yes | yes | — |
//! | `permessage_deflate` | — | — | yes (default `true`) | yes | — |
//! | `proxy_protocol` | yes | yes | yes | yes | — |
//! | `cert`, `key`, `client_ca`, `client_auth`, `identity_from`, `identity_as` | — | yes | — | yes | — |
//! | `mode`, `owner`, `group` | — | — | — | — | yes |
//! | `tenant` | yes | yes | yes | yes | yes |
//!
//! `tenant` binds every client of the listener to one tenant (it must name a `[[tenants]]`
//! entry, or `default` when none is declared); HTTP listeners take none (the HTTP API has
//! its own tokens).

use super::ConfigError;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The HTTP path a `ws`/`wss` listener upgrades when `path` is not set.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

/// How long a new socket gets for its PROXY header, TLS handshake and WebSocket upgrade when
/// `handshake_timeout_ms` is not set.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// The transport a listener speaks; it is also the scheme of a `--listen` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
    /// MQTT over a Unix domain socket (`path` instead of `bind`).
    Unix,
    /// The HTTP API (REST publish, SSE, admin).
    Http,
    /// The HTTP API over TLS.
    Https,
}

impl ListenerKind {
    /// Every kind, in the order of the documentation.
    pub const ALL: [ListenerKind; 7] = [
        ListenerKind::Tcp,
        ListenerKind::Tls,
        ListenerKind::Ws,
        ListenerKind::Wss,
        ListenerKind::Unix,
        ListenerKind::Http,
        ListenerKind::Https,
    ];

    /// The name used in the file and as URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
            ListenerKind::Unix => "unix",
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
        }
    }

    /// Whether this build can run a listener of this kind (every kind, since the HTTP API).
    pub fn is_supported(self) -> bool {
        true
    }

    /// Whether the listener serves the HTTP API rather than MQTT.
    pub fn is_http(self) -> bool {
        matches!(self, ListenerKind::Http | ListenerKind::Https)
    }

    /// Unix listeners take a filesystem `path`; every other kind a `bind` address.
    pub(crate) fn uses_path(self) -> bool {
        self == ListenerKind::Unix
    }

    /// Whether the TLS keys (`cert`, `key`, `client_ca`, ...) make sense for this kind.
    pub fn uses_tls(self) -> bool {
        matches!(
            self,
            ListenerKind::Tls | ListenerKind::Wss | ListenerKind::Https
        )
    }

    /// Whether MQTT is carried in WebSocket frames.
    pub fn uses_websocket(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ListenerKind {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<ListenerKind, ConfigError> {
        ListenerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ConfigError::UnknownListenerKind(s.to_owned()))
    }
}

/// Whether a TLS listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Never ask.
    None,
    /// Ask, accept clients without one (a certificate that is sent must still verify).
    Optional,
    /// Refuse clients without a valid certificate.
    Required,
}

/// Which part of a client certificate becomes the client's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityFrom {
    /// `"cn"`: the subject's Common Name.
    Cn,
    /// `"san_dns"`: the first DNS Subject Alternative Name.
    SanDns,
    /// `"san_uri"`: the first URI Subject Alternative Name.
    SanUri,
}

/// Where the certificate identity goes in the client's CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityUse {
    /// `"username"` (default): a CONNECT without a User Name gets the identity as User Name.
    #[default]
    Username,
    /// `"client_id"`: a CONNECT with an empty Client Identifier gets the identity as its id.
    ClientId,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// The transport.
    pub kind: ListenerKind,
    /// Name in logs and metrics; defaults to `"<kind>:<bind>"` (or `"unix:<path>"`).
    #[serde(default)]
    pub name: Option<String>,
    /// `HOST:PORT` to bind, for every kind but `unix`.
    #[serde(default)]
    pub bind: Option<String>,
    /// The socket file of a `unix` listener; the HTTP path of a `ws`/`wss` listener (default
    /// [`DEFAULT_WS_PATH`]).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Connections this listener holds at once; beyond it new sockets are closed at once.
    /// Unset: only the global `limits.max_connections` applies.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// New connections accepted per second (a token bucket with one second of burst); beyond
    /// it new sockets are closed at once and counted. Unset: no rate limit.
    #[serde(default)]
    pub max_accept_rate: Option<u32>,
    /// Milliseconds a new socket gets for its PROXY header, TLS handshake and WebSocket
    /// upgrade together (default [`DEFAULT_HANDSHAKE_TIMEOUT_MS`]).
    #[serde(default)]
    pub handshake_timeout_ms: Option<u64>,
    /// Require a PROXY protocol v1 or v2 header on every connection (behind a load balancer);
    /// its source address then replaces the socket's peer address in logs and limits.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Accept WebSocket permessage-deflate (RFC 7692) when a client offers it (`ws`/`wss`);
    /// unset means `true`. See [`ListenerConfig::permessage_deflate`].
    #[serde(default)]
    pub permessage_deflate: Option<bool>,
    /// PEM certificate chain (TLS kinds).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (TLS kinds).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// PEM CA bundle used to verify client certificates (TLS kinds).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Whether clients must present a certificate (TLS kinds); default `required` when
    /// `client_ca` is set.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Which certificate field names the client (TLS kinds, needs `client_ca`).
    #[serde(default)]
    pub identity_from: Option<IdentityFrom>,
    /// Where that identity goes in CONNECT (default `username`; needs `identity_from`).
    #[serde(default)]
    pub identity_as: Option<IdentityUse>,
    /// File mode of a `unix` socket, in octal (e.g. `"660"`). Unset: the process umask decides.
    #[serde(default)]
    pub mode: Option<String>,
    /// Owner of a `unix` socket: a user name from `/etc/passwd` or a numeric uid.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of a `unix` socket: a group name from `/etc/group` or a numeric gid.
    #[serde(default)]
    pub group: Option<String>,
    /// The tenant every client of this listener belongs to (MQTT kinds). Unset: the SNI host
    /// name, `user@tenant`, a JWT's tenant claim or the `default` tenant decide.
    #[serde(default)]
    pub tenant: Option<String>,
}

impl ListenerConfig {
    /// A listener of `kind` on `address`: a `bind` address, or the `path` of a unix listener.
    pub fn new(kind: ListenerKind, address: &str) -> ListenerConfig {
        let (bind, path) = if kind.uses_path() {
            (None, Some(PathBuf::from(address)))
        } else {
            (Some(address.to_owned()), None)
        };
        ListenerConfig {
            kind,
            name: None,
            bind,
            path,
            max_connections: None,
            max_accept_rate: None,
            handshake_timeout_ms: None,
            proxy_protocol: false,
            permessage_deflate: None,
            cert: None,
            key: None,
            client_ca: None,
            client_auth: None,
            identity_from: None,
            identity_as: None,
            mode: None,
            owner: None,
            group: None,
            tenant: None,
        }
    }

    /// Parses a `--listen` URL: `KIND://HOST:PORT`, or `unix://PATH` (so `unix:///run/x.sock`
    /// is the absolute path `/run/x.sock`).
    pub fn from_url(url: &str) -> Result<ListenerConfig, ConfigError> {
        let invalid = |reason: &'static str| ConfigError::InvalidListenUrl {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected KIND://ADDRESS, e.g. tcp://0.0.0.0:1883"))?;
        let kind: ListenerKind = scheme.parse()?;
        if rest.is_empty() {
            return Err(invalid("missing address after ://"));
        }
        if !kind.uses_path() && rest.contains('/') {
            return Err(invalid("expected HOST:PORT without a path"));
        }
        let listener = ListenerConfig::new(kind, rest);
        if let Some(bind) = &listener.bind {
            check_bind(bind).map_err(invalid)?;
        }
        Ok(listener)
    }

    /// The listener's name: the configured one, else `"<kind>:<address>"`.
    pub fn name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match (&self.bind, &self.path) {
            (Some(bind), _) => format!("{}:{bind}", self.kind),
            (None, Some(path)) => format!("{}:{}", self.kind, path.display()),
            (None, None) => self.kind.to_string(),
        }
    }

    /// The time allowed for the PROXY header, TLS handshake and WebSocket upgrade.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(
            self.handshake_timeout_ms
                .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_MS),
        )
    }

    /// The HTTP path a `ws`/`wss` listener upgrades.
    pub fn ws_path(&self) -> String {
        match &self.path {
            Some(path) if self.kind.uses_websocket() => path.to_string_lossy().into_owned(),
            _ => DEFAULT_WS_PATH.to_owned(),
        }
    }

    /// Whether a `ws`/`wss` listener accepts permessage-deflate: `permessage_deflate`, else
    /// `true`. Always false for other kinds. With it, an idle connection costs about 100 bytes
    /// more, plus up to 1 KiB when the client keeps its compression context (see
    /// `transport/ws/negotiate.rs`).
    pub fn permessage_deflate(&self) -> bool {
        self.kind.uses_websocket() && self.permessage_deflate.unwrap_or(true)
    }

    /// Whether clients are asked for a certificate, and must give one: `client_auth`, else
    /// `required` when a `client_ca` is set, else `none`.
    pub fn effective_client_auth(&self) -> ClientAuth {
        match (self.client_auth, &self.client_ca) {
            (Some(auth), _) => auth,
            (None, Some(_)) => ClientAuth::Required,
            (None, None) => ClientAuth::None,
        }
    }

    /// The `mode` of a unix socket as permission bits.
    pub fn unix_mode(&self) -> Result<Option<u32>, ConfigError> {
        let Some(mode) = &self.mode else {
            return Ok(None);
        };
        let digits = mode.trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(bits) if !digits.is_empty() && bits <= 0o777 => Ok(Some(bits)),
            _ => Err(self.invalid("mode", "must be octal permission bits such as \"660\"")),
        }
    }

    fn invalid(&self, key: &'static str, reason: &'static str) -> ConfigError {
        ConfigError::InvalidListenerValue {
            listener: self.name(),
            key,
            reason,
        }
    }

    fn unexpected(&self, key: &'static str) -> ConfigError {
        ConfigError::UnexpectedListenerKey {
            listener: self.name(),
            kind: self.kind,
            key,
        }
    }

    fn missing(&self, key: &'static str) -> ConfigError {
        ConfigError::MissingListenerKey {
            listener: self.name(),
            kind: self.kind,
            key,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let listener = self.name();
        if listener.is_empty() {
            return Err(ConfigError::EmptyListenerName);
        }
        self.validate_address()?;
        self.validate_tls()?;
        self.validate_unix()?;
        if self.proxy_protocol && (self.kind.uses_path() || self.kind.is_http()) {
            return Err(self.unexpected("proxy_protocol"));
        }
        if self.tenant.is_some() && self.kind.is_http() {
            return Err(self.unexpected("tenant"));
        }
        if self.permessage_deflate.is_some() && !self.kind.uses_websocket() {
            return Err(self.unexpected("permessage_deflate"));
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::InvalidLimit {
                key: "listeners.max_connections",
                reason: "must be at least 1",
            });
        }
        if self.max_accept_rate == Some(0) {
            return Err(ConfigError::InvalidLimit {
                key: "listeners.max_accept_rate",
                reason: "must be at least 1 (leave it out for no limit)",
            });
        }
        if self.handshake_timeout_ms == Some(0) {
            return Err(ConfigError::InvalidLimit {
                key: "listeners.handshake_timeout_ms",
                reason: "must be at least 1",
            });
        }
        Ok(())
    }

    fn validate_address(&self) -> Result<(), ConfigError> {
        if self.kind.uses_path() {
            if self.path.is_none() {
                return Err(self.missing("path"));
            }
            if self.bind.is_some() {
                return Err(self.unexpected("bind"));
            }
            return Ok(());
        }
        let Some(bind) = &self.bind else {
            return Err(self.missing("bind"));
        };
        check_bind(bind).map_err(|reason| ConfigError::InvalidBind {
            listener: self.name(),
            bind: bind.clone(),
            reason,
        })?;
        match &self.path {
            None => Ok(()),
            Some(_) if !self.kind.uses_websocket() => Err(self.unexpected("path")),
            Some(path) => {
                let path = path.to_string_lossy();
                if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c == '?')
                {
                    Err(self.invalid(
                        "path",
                        "a WebSocket path starts with '/' and has no spaces or query",
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls_keys = [
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("client_ca", self.client_ca.is_some()),
            ("client_auth", self.client_auth.is_some()),
            ("identity_from", self.identity_from.is_some()),
            ("identity_as", self.identity_as.is_some()),
        ];
        if !self.kind.uses_tls() {
            return match tls_keys
                .into_iter()
                .find_map(|(key, set)| set.then_some(key))
            {
                Some(key) => Err(self.unexpected(key)),
                None => Ok(()),
            };
        }
        if self.cert.is_none() {
            return Err(self.missing("cert"));
        }
        if self.key.is_none() {
            return Err(self.missing("key"));
        }
        match (self.client_auth, &self.client_ca) {
            (Some(ClientAuth::Optional | ClientAuth::Required), None) => {
                return Err(self.invalid("client_auth", "needs `client_ca` to verify with"));
            }
            (Some(ClientAuth::None), Some(_)) => {
                return Err(self.invalid(
                    "client_ca",
                    "is set but `client_auth = \"none\"` never asks for a certificate",
                ));
            }
            _ => {}
        }
        if self.identity_from.is_some() && self.client_ca.is_none() {
            return Err(self.invalid(
                "identity_from",
                "needs `client_ca`: only a verified certificate names a client",
            ));
        }
        if self.identity_as.is_some() && self.identity_from.is_none() {
            return Err(self.invalid("identity_as", "needs `identity_from`"));
        }
        Ok(())
    }

    fn validate_unix(&self) -> Result<(), ConfigError> {
        if !self.kind.uses_path() {
            let unix_key = [
                ("mode", self.mode.is_some()),
                ("owner", self.owner.is_some()),
                ("group", self.group.is_some()),
            ]
            .into_iter()
            .find_map(|(key, set)| set.then_some(key));
            return match unix_key {
                Some(key) => Err(self.unexpected(key)),
                None => Ok(()),
            };
        }
        self.unix_mode()?;
        for (key, value) in [("owner", &self.owner), ("group", &self.group)] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(self.invalid(key, "must not be empty"));
            }
        }
        Ok(())
    }
}

/// A bind address is an IP socket address or `HOST:PORT` (resolved when binding).
fn check_bind(bind: &str) -> Result<(), &'static str> {
    if bind.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = bind
        .rsplit_once(':')
        .ok_or("expected HOST:PORT, e.g. 0.0.0.0:1883")?;
    if host.is_empty() {
        return Err("missing host before the port, e.g. 0.0.0.0:1883");
    }
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| "the port must be a number from 0 to 65535")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn listener(text: &str) -> ListenerConfig {
        let config = Config::from_toml_str(&format!("[[listeners]]\n{text}")).unwrap();
        config.listeners.into_iter().next().unwrap()
    }

    fn error(text: &str) -> ConfigError {
        listener(text).validate().unwrap_err()
    }

    #[test]
    fn every_transport_of_the_issue_validates() {
        let ok = [
            "kind = \"tcp\"\nbind = \"0.0.0.0:1883\"\nproxy_protocol = true\nmax_accept_rate = 50",
            "kind = \"tls\"\nbind = \"0.0.0.0:8883\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             client_ca = \"ca.pem\"\nclient_auth = \"optional\"\nidentity_from = \"san_uri\"\n\
             identity_as = \"client_id\"\nhandshake_timeout_ms = 3000",
            "kind = \"ws\"\nbind = \"0.0.0.0:8083\"",
            "kind = \"ws\"\nbind = \"0.0.0.0:8083\"\npath = \"/mqtt/v1\"",
            "kind = \"ws\"\nbind = \"0.0.0.0:8083\"\npermessage_deflate = false",
            "kind = \"wss\"\nbind = \"0.0.0.0:443\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             proxy_protocol = true",
            "kind = \"unix\"\npath = \"/run/t.sock\"\nmode = \"660\"\nowner = \"0\"\ngroup = \"root\"",
        ];
        for text in ok {
            listener(text)
                .validate()
                .unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn defaults_of_the_transport_options() {
        let ws = listener("kind = \"ws\"\nbind = \"0.0.0.0:8083\"");
        assert_eq!(ws.ws_path(), "/mqtt");
        assert_eq!(ws.handshake_timeout(), Duration::from_secs(10));
        assert!(!ws.proxy_protocol);
        assert!(ws.permessage_deflate(), "deflate is on by default");
        let off = listener("kind = \"wss\"\nbind = \"0.0.0.0:1\"\npermessage_deflate = false");
        assert!(!off.permessage_deflate());
        let tls = listener(
            "kind = \"tls\"\nbind = \"0.0.0.0:8883\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"",
        );
        assert_eq!(tls.effective_client_auth(), ClientAuth::Required);
        let plain = listener("kind = \"tls\"\nbind = \"0.0.0.0:8883\"\ncert = \"c\"\nkey = \"k\"");
        assert_eq!(plain.effective_client_auth(), ClientAuth::None);
        let unix = listener("kind = \"unix\"\npath = \"/x\"\nmode = \"0o600\"");
        assert_eq!(unix.unix_mode().unwrap(), Some(0o600));
    }

    #[test]
    fn keys_of_another_kind_are_refused() {
        let cases = [
            ("kind = \"tcp\"\nbind = \"0.0.0.0:1\"\ncert = \"c\"", "cert"),
            (
                "kind = \"ws\"\nbind = \"0.0.0.0:1\"\nidentity_as = \"username\"",
                "identity_as",
            ),
            (
                "kind = \"tcp\"\nbind = \"0.0.0.0:1\"\npath = \"/mqtt\"",
                "path",
            ),
            (
                "kind = \"tcp\"\nbind = \"0.0.0.0:1\"\nmode = \"600\"",
                "mode",
            ),
            (
                "kind = \"unix\"\npath = \"/x\"\nproxy_protocol = true",
                "proxy_protocol",
            ),
            (
                "kind = \"tcp\"\nbind = \"0.0.0.0:1\"\npermessage_deflate = true",
                "permessage_deflate",
            ),
        ];
        for (text, expected) in cases {
            match error(text) {
                ConfigError::UnexpectedListenerKey { key, .. } => assert_eq!(key, expected),
                other => panic!("{text}: {other}"),
            }
        }
    }

    #[test]
    fn tls_options_are_checked() {
        assert!(matches!(
            error("kind = \"tls\"\nbind = \"0.0.0.0:1\"\nkey = \"k\""),
            ConfigError::MissingListenerKey { key: "cert", .. }
        ));
        assert!(matches!(
            error("kind = \"wss\"\nbind = \"0.0.0.0:1\"\ncert = \"c\""),
            ConfigError::MissingListenerKey { key: "key", .. }
        ));
        let base = "kind = \"tls\"\nbind = \"0.0.0.0:1\"\ncert = \"c\"\nkey = \"k\"\n";
        let cases = [
            ("client_auth = \"required\"", "client_auth"),
            ("client_ca = \"ca\"\nclient_auth = \"none\"", "client_ca"),
            ("identity_from = \"cn\"", "identity_from"),
            (
                "client_ca = \"ca\"\nidentity_as = \"username\"",
                "identity_as",
            ),
        ];
        for (extra, expected) in cases {
            match error(&format!("{base}{extra}")) {
                ConfigError::InvalidListenerValue { key, .. } => assert_eq!(key, expected),
                other => panic!("{extra}: {other}"),
            }
        }
    }

    #[test]
    fn values_out_of_range_are_refused() {
        for (text, expected) in [
            ("kind = \"unix\"\npath = \"/x\"\nmode = \"999\"", "mode"),
            ("kind = \"unix\"\npath = \"/x\"\nmode = \"1777\"", "mode"),
            ("kind = \"unix\"\npath = \"/x\"\nowner = \"\"", "owner"),
            (
                "kind = \"ws\"\nbind = \"0.0.0.0:1\"\npath = \"mqtt\"",
                "path",
            ),
            (
                "kind = \"ws\"\nbind = \"0.0.0.0:1\"\npath = \"/a b\"",
                "path",
            ),
        ] {
            match error(text) {
                ConfigError::InvalidListenerValue { key, .. } => assert_eq!(key, expected),
                other => panic!("{text}: {other}"),
            }
        }
        for (text, expected) in [
            (
                "kind = \"tcp\"\nbind = \"0.0.0.0:1\"\nmax_accept_rate = 0",
                "listeners.max_accept_rate",
            ),
            (
                "kind = \"tcp\"\nbind = \"0.0.0.0:1\"\nhandshake_timeout_ms = 0",
                "listeners.handshake_timeout_ms",
            ),
        ] {
            match error(text) {
                ConfigError::InvalidLimit { key, .. } => assert_eq!(key, expected),
                other => panic!("{text}: {other}"),
            }
        }
    }
}
