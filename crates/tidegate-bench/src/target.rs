//! Where the broker is: `--url` (`tcp://`, `tls://`, `ws://`, `wss://`, `unix://`) or
//! `--host`/`--port`.
//!
//! Place in the data flow: the CLI parses a [`Target`]; the transport resolves it once into an
//! [`Endpoint`](crate::transport::Endpoint) (so no connection pays a DNS lookup) and connects
//! to that. `mqtt://` is a synonym of `tcp://`, `mqtts://` and `ssl://` of `tls://`.

use std::fmt;
use std::path::PathBuf;

/// Default MQTT port for `tcp://host` without a port.
pub const DEFAULT_PORT: u16 = 1883;
/// Default MQTT-over-TLS port.
pub const DEFAULT_TLS_PORT: u16 = 8883;
/// Default WebSocket path when a `ws://` URL names none.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

/// A broker address as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A network address, with the layers above TCP.
    Net {
        /// Host name or IP literal (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
        /// TLS on top of TCP.
        tls: bool,
        /// WebSocket path when MQTT runs over WebSocket.
        ws_path: Option<String>,
    },
    /// A Unix domain stream socket.
    Unix {
        /// Socket path.
        path: PathBuf,
    },
}

/// Why a `--url` is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No `scheme://`.
    #[error(
        "{0:?} has no scheme (expected tcp://host:port, tls://, ws://, wss:// or unix:///path)"
    )]
    NoScheme(String),
    /// A scheme nobody knows.
    #[error("unknown scheme {0}:// (expected tcp, mqtt, tls, mqtts, ws, wss or unix)")]
    UnknownScheme(String),
    /// A port that is not a number in 1..=65535.
    #[error("bad port in {0:?}")]
    BadPort(String),
    /// Empty host or path.
    #[error("{0:?} names no host or path")]
    Empty(String),
}

impl Target {
    /// Parses a URL (see the module doc).
    pub fn parse_url(url: &str) -> Result<Target, TargetError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| TargetError::NoScheme(url.to_string()))?;
        let scheme = scheme.to_ascii_lowercase();
        let (tls, ws, default_port) = match scheme.as_str() {
            "unix" => {
                if rest.is_empty() {
                    return Err(TargetError::Empty(url.to_string()));
                }
                return Ok(Target::Unix {
                    path: PathBuf::from(rest),
                });
            }
            "tcp" | "mqtt" => (false, false, DEFAULT_PORT),
            "tls" | "ssl" | "mqtts" => (true, false, DEFAULT_TLS_PORT),
            "ws" => (false, true, 80),
            "wss" => (true, true, 443),
            other => return Err(TargetError::UnknownScheme(other.to_string())),
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(hostport, url, default_port)?;
        if host.is_empty() {
            return Err(TargetError::Empty(url.to_string()));
        }
        let ws_path = ws.then(|| {
            if path.is_empty() {
                DEFAULT_WS_PATH.to_string()
            } else {
                path.to_string()
            }
        });
        Ok(Target::Net {
            host,
            port,
            tls,
            ws_path,
        })
    }

    /// Plain TCP to `host:port`.
    pub fn tcp(host: &str, port: u16) -> Target {
        Target::Net {
            host: host.to_string(),
            port,
            tls: false,
            ws_path: None,
        }
    }

    /// True when the target uses TLS.
    pub fn uses_tls(&self) -> bool {
        matches!(self, Target::Net { tls: true, .. })
    }
}

fn split_host_port(s: &str, url: &str, default_port: u16) -> Result<(String, u16), TargetError> {
    let bad = || TargetError::BadPort(url.to_string());
    if let Some(rest) = s.strip_prefix('[') {
        // [v6]:port or [v6]
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), non_zero(port).ok_or_else(bad)?));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            let port = port.parse().ok().and_then(non_zero).ok_or_else(bad)?;
            Ok((host.to_string(), port))
        }
        None => Ok((s.to_string(), default_port)),
    }
}

fn non_zero(p: u16) -> Option<u16> {
    (p != 0).then_some(p)
}

/// `host:port` with brackets around an IPv6 literal.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Net {
                host,
                port,
                tls,
                ws_path,
            } => {
                let scheme = match (tls, ws_path.is_some()) {
                    (false, false) => "tcp",
                    (true, false) => "tls",
                    (false, true) => "ws",
                    (true, true) => "wss",
                };
                write!(
                    f,
                    "{scheme}://{}{}",
                    host_port(host, *port),
                    ws_path.as_deref().unwrap_or("")
                )
            }
            Target::Unix { path } => write!(f, "unix://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(host: &str, port: u16, tls: bool, ws_path: Option<&str>) -> Target {
        Target::Net {
            host: host.into(),
            port,
            tls,
            ws_path: ws_path.map(String::from),
        }
    }

    #[test]
    fn tcp_forms() {
        assert_eq!(
            Target::parse_url("tcp://127.0.0.1:18830"),
            Ok(Target::tcp("127.0.0.1", 18830))
        );
        assert_eq!(
            Target::parse_url("mqtt://broker"),
            Ok(Target::tcp("broker", 1883))
        );
        assert_eq!(
            Target::parse_url("tcp://[::1]:1884"),
            Ok(Target::tcp("::1", 1884))
        );
        assert_eq!(
            Target::parse_url("TCP://h:1/ignored"),
            Ok(Target::tcp("h", 1))
        );
    }

    #[test]
    fn tls_and_websocket_forms() {
        assert_eq!(
            Target::parse_url("mqtts://b"),
            Ok(net("b", 8883, true, None))
        );
        assert_eq!(
            Target::parse_url("tls://b:9999"),
            Ok(net("b", 9999, true, None))
        );
        assert_eq!(
            Target::parse_url("ws://b:8080"),
            Ok(net("b", 8080, false, Some("/mqtt")))
        );
        assert_eq!(
            Target::parse_url("wss://b/ws/mqtt"),
            Ok(net("b", 443, true, Some("/ws/mqtt")))
        );
        assert!(Target::parse_url("wss://b").unwrap().uses_tls());
        assert!(!Target::parse_url("ws://b").unwrap().uses_tls());
    }

    #[test]
    fn unix_form() {
        assert_eq!(
            Target::parse_url("unix:///run/tidegate/mqtt.sock"),
            Ok(Target::Unix {
                path: "/run/tidegate/mqtt.sock".into()
            })
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Target::parse_url("localhost:1883"),
            Err(TargetError::NoScheme(_))
        ));
        assert!(matches!(
            Target::parse_url("gopher://x"),
            Err(TargetError::UnknownScheme(_))
        ));
        assert!(matches!(
            Target::parse_url("tcp://h:0"),
            Err(TargetError::BadPort(_))
        ));
        assert!(matches!(
            Target::parse_url("tcp://h:99999"),
            Err(TargetError::BadPort(_))
        ));
        assert!(matches!(
            Target::parse_url("tcp://:1883"),
            Err(TargetError::Empty(_))
        ));
        assert!(matches!(
            Target::parse_url("unix://"),
            Err(TargetError::Empty(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for url in [
            "tcp://127.0.0.1:18830",
            "tcp://[::1]:1883",
            "tls://b:8883",
            "ws://b:80/mqtt",
            "wss://[::1]:443/x",
            "unix:///tmp/x.sock",
        ] {
            assert_eq!(Target::parse_url(url).unwrap().to_string(), url);
        }
    }
}
