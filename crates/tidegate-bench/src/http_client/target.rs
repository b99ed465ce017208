//! Where the gateway's HTTP listener is: `http://host:port`, resolved once, and the query
//! encoding of topic filters.
//!
//! Place in the data flow: the command line's `--http-url` → [`HttpTarget::parse`] →
//! [`HttpTarget::resolve`] before the run → every [`super::HttpConn`] connects to the resolved
//! address and sends the URL's authority as `Host`.

use std::fmt;
use std::net::SocketAddr;

/// A parsed `http://` URL of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// Host name or address, without brackets.
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
}

/// Why a URL is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not `http://host[:port][/]`.
    #[error("{0}")]
    Invalid(String),
    /// The host does not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
}

impl HttpTarget {
    /// Parses `http://host[:port][/]`. `https` is refused: the bench measures the HTTP layer,
    /// and TLS is measured on its own by the `handshake` scenario.
    pub fn parse(url: &str) -> Result<HttpTarget, TargetError> {
        let invalid = |why: &str| TargetError::Invalid(format!("--http-url {url:?}: {why}"));
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(invalid(
                "https is not supported by the bench (use the plain http listener)",
            ));
        } else {
            return Err(invalid("expected http://host:port"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') {
            return Err(invalid("expected http://host:port without a path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("unclosed [ in the host"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| invalid("bad port"))?),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| invalid("bad port"))?,
        };
        Ok(HttpTarget {
            host: host.to_owned(),
            port,
        })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The first address the host resolves to.
    pub async fn resolve(&self) -> Result<SocketAddr, TargetError> {
        let fail = |why: String| TargetError::Resolve(self.authority(), why);
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("no address".into()))
    }
}

impl fmt::Display for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority())
    }
}

/// Percent-encodes a query value: everything but RFC 3986's unreserved characters. A topic
/// filter's `+` must not reach the server as a `+`, which a query decoder reads as a space.
pub fn encode_query_value(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_refuses_the_rest() {
        let t = HttpTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!(t.authority(), "127.0.0.1:8080");
        assert_eq!(t.to_string(), "http://127.0.0.1:8080");
        assert_eq!(HttpTarget::parse("http://localhost/").unwrap().port, 80);
        let v6 = HttpTarget::parse("http://[::1]:9000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert_eq!(v6.authority(), "[::1]:9000");
        for bad in [
            "https://127.0.0.1:8443",
            "tcp://127.0.0.1:1883",
            "http://",
            "http://h:port",
            "http://h:8080/v1",
            "http://[::1",
            "http://:80",
        ] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn query_values_encode_wildcards_and_separators() {
        assert_eq!(encode_query_value("tgb/1-2/f/+"), "tgb%2F1-2%2Ff%2F%2B");
        assert_eq!(encode_query_value("a/#"), "a%2F%23");
        assert_eq!(encode_query_value("é &="), "%C3%A9%20%26%3D");
        assert_eq!(encode_query_value("A.b_c~"), "A.b_c~");
    }

    #[tokio::test]
    async fn resolves_loopback() {
        let t = HttpTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            t.resolve().await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
    }
}
