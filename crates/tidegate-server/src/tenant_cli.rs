//! `tidegate tenant create|list|show|update|delete`: the admin API's `/v1/admin/tenants`
//! from the command line (issue 7).
//!
//! Place in the data flow: `tidegate tenant ... --url --token -> (file or stdin: a tenant as
//! JSON or TOML) -> HTTP/1.1 request (hyper, plain http) -> a running gateway's admin API ->
//! JSON printed on stdout`. It talks to the API rather than to the store so that a change
//! goes through the same checks and takes effect at once in the running gateway; the gateway
//! holds the store, which another process cannot open while it runs.
//!
//! The client is hyper's own (already a dependency of the server) rather than a full HTTP
//! client crate: one request per run, no TLS (an `https` admin listener is reached through a
//! local `http` one or a tunnel; the error says so).

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;
use tidegate_auth::TenantConfig;

/// Where the admin API listens unless told otherwise (`tidegate serve`'s default HTTP port).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `tidegate tenant`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct TenantArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: TenantAction,
    /// Base URL of the gateway's HTTP API (an `http` listener).
    #[arg(long, global = true, value_name = "URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// An admin token (`http.admin_tokens`; `tidegate serve` writes generated ones to
    /// `<data_dir>/http-tokens.toml`).
    #[arg(
        long,
        global = true,
        env = "TIDEGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// The tenant operations.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum TenantAction {
    /// Create a tenant from a file (or standard input): JSON, or TOML with the keys of a
    /// `[[tenants]]` entry (a file holding one `[[tenants]]` entry works too).
    Create {
        /// The file; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// List the tenants.
    List,
    /// Show one tenant's configuration (secrets redacted).
    Show {
        /// The tenant id.
        id: String,
    },
    /// Replace a tenant's configuration with the one in a file (or standard input).
    Update {
        /// The tenant id.
        id: String,
        /// The file; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// Delete a tenant: its clients are disconnected and its sessions dropped.
    Delete {
        /// The tenant id.
        id: String,
    },
}

/// Why a `tidegate tenant` command failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantCliError {
    /// The tenant file or standard input could not be read.
    #[error("cannot read {what}: {source}")]
    Read {
        /// The file, or "standard input".
        what: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The input is neither a JSON nor a TOML tenant.
    #[error("{what} is not a tenant configuration: {reason}")]
    Parse {
        /// The file, or "standard input".
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// `--url` is not an `http://host:port` URL.
    #[error("--url {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No admin token.
    #[error("an admin token is required: pass --token or set TIDEGATE_ADMIN_TOKEN")]
    NoToken,
    /// The gateway could not be reached.
    #[error(
        "cannot reach the admin API at {url}: {reason} (is `tidegate serve` running with an \
         http listener there?)"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The token was refused.
    #[error("the admin token was refused ({status}): {message}")]
    Unauthorized {
        /// 401 or 403.
        status: StatusCode,
        /// The API's message.
        message: String,
    },
    /// No such tenant.
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other refusal of the API (400 invalid tenant, 409 conflict, 503, ...).
    #[error("the admin API answered {status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The API's error code.
        code: String,
        /// The API's message.
        message: String,
    },
}

/// Reads the tenant of `file` (standard input for `None` or `-`).
fn read_tenant(
    file: Option<&PathBuf>,
    stdin: &mut dyn Read,
) -> Result<TenantConfig, TenantCliError> {
    let (what, text) = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => {
            let what = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| TenantCliError::Read {
                what: what.clone(),
                source,
            })?;
            (what, text)
        }
        None => {
            let mut text = String::new();
            let what = "standard input".to_owned();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| TenantCliError::Read {
                    what: what.clone(),
                    source,
                })?;
            (what, text)
        }
    };
    parse_tenant(&text).map_err(|reason| TenantCliError::Parse { what, reason })
}

/// A tenant from JSON (text starting with `{`) or TOML (the keys of one `[[tenants]]` entry,
/// or a file with exactly one `[[tenants]]` entry).
fn parse_tenant(text: &str) -> Result<TenantConfig, String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| format!("JSON: {e}"));
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        tenants: Vec<TenantConfig>,
    }
    let value: toml::Table = toml::from_str(text).map_err(|e| format!("TOML: {e}"))?;
    if value.contains_key("tenants") {
        let file: File = value.try_into().map_err(|e| format!("TOML: {e}"))?;
        let mut tenants = file.tenants;
        return match (tenants.pop(), tenants.is_empty()) {
            (Some(one), true) => Ok(one),
            _ => Err("the file must hold exactly one [[tenants]] entry".to_owned()),
        };
    }
    value.try_into().map_err(|e| format!("TOML: {e}"))
}

/// One request to the API: method, path below the base URL, optional JSON body.
struct Call {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
}

impl TenantArgs {
    /// Runs the command; the answer's JSON, pretty-printed, for stdout.
    pub async fn run(&self, stdin: &mut dyn Read) -> Result<String, TenantCliError> {
        let token = self.token.as_deref().ok_or(TenantCliError::NoToken)?;
        let encode = |config: &TenantConfig| {
            serde_json::to_vec(config).map_err(|e| TenantCliError::Parse {
                what: "the tenant".to_owned(),
                reason: e.to_string(),
            })
        };
        let call = match &self.action {
            TenantAction::List => Call {
                method: Method::GET,
                path: "/v1/admin/tenants".to_owned(),
                body: None,
            },
            TenantAction::Show { id } => Call {
                method: Method::GET,
                path: tenant_path(id),
                body: None,
            },
            TenantAction::Delete { id } => Call {
                method: Method::DELETE,
                path: tenant_path(id),
                body: None,
            },
            TenantAction::Create { file } => Call {
                method: Method::POST,
                path: "/v1/admin/tenants".to_owned(),
                body: Some(encode(&read_tenant(file.as_ref(), stdin)?)?),
            },
            TenantAction::Update { id, file } => {
                let mut config = read_tenant(file.as_ref(), stdin)?;
                if config.id.is_empty() {
                    config.id.clone_from(id);
                }
                Call {
                    method: Method::PUT,
                    path: tenant_path(id),
                    body: Some(encode(&config)?),
                }
            }
        };
        let (status, body) = self.send(token, call).await?;
        answer(status, &body)
    }

    /// Sends `call` and reads the whole answer.
    async fn send(&self, token: &str, call: Call) -> Result<(StatusCode, Bytes), TenantCliError> {
        let base = self.url.trim_end_matches('/');
        let url_error = |reason: &str| TenantCliError::Url {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        if base.starts_with("https://") {
            return Err(url_error(
                "https is not supported by the CLI; use an http listener (e.g. one bound to \
                 127.0.0.1) or a tunnel",
            ));
        }
        let uri: Uri = format!("{base}{}", call.path)
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| url_error(&e.to_string()))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(url_error("expected http://host:port"));
        }
        let mut request = Request::builder()
            .method(call.method)
            .uri(uri)
            .header(AUTHORIZATION, format!("Bearer {token}"));
        if call.body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(call.body.unwrap_or_default())))
            .map_err(|e| url_error(&e.to_string()))?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        let unreachable = |reason: String| TenantCliError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| unreachable(describe(&e)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("the answer was cut: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }
}

/// `/v1/admin/tenants/{id}`. Ids are letters, digits, `-`, `_` and `.` (the server refuses
/// others), so anything else is percent-encoded rather than trusted into the path.
fn tenant_path(id: &str) -> String {
    let mut path = "/v1/admin/tenants/".to_owned();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// The innermost cause of a client error, said plainly for the usual ones.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => io.to_string(),
            };
        }
        source = s.source();
    }
    e.to_string()
}

/// The output for a 2xx answer, or the error the API's answer means.
fn answer(status: StatusCode, body: &[u8]) -> Result<String, TenantCliError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        let pretty = json
            .as_ref()
            .and_then(|v| serde_json::to_string_pretty(v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        return Ok(pretty);
    }
    let field = |name: &str| {
        json.as_ref()
            .and_then(|v| v["error"][name].as_str())
            .map(str::to_owned)
    };
    let message = field("message").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    Err(match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            TenantCliError::Unauthorized { status, message }
        }
        StatusCode::NOT_FOUND => TenantCliError::NotFound(message),
        _ => TenantCliError::Api {
            status,
            code: field("code").unwrap_or_default(),
            message,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_parse_from_json_toml_and_a_tenants_file() {
        let json = parse_tenant(r#" {"id": "acme", "allow_anonymous": true}"#).unwrap();
        assert_eq!(json.id, "acme");
        assert!(json.allow_anonymous);
        let toml = parse_tenant("id = \"acme\"\n[quotas]\nmax_connections = 5\n").unwrap();
        assert_eq!(toml.quotas.max_connections, Some(5));
        let file = parse_tenant("[[tenants]]\nid = \"acme\"\nallow_anonymous = true\n").unwrap();
        assert!(file.allow_anonymous);
        let two = parse_tenant("[[tenants]]\nid = \"a\"\n[[tenants]]\nid = \"b\"\n");
        assert!(two.unwrap_err().contains("exactly one"));
        let typo = parse_tenant("id = \"a\"\nallow_anonymus = true").unwrap_err();
        assert!(typo.contains("allow_anonymus"), "{typo}");
        assert!(parse_tenant("{\"id\": ").unwrap_err().starts_with("JSON"));
    }

    #[test]
    fn stdin_is_read_for_no_file_and_dash() {
        for file in [None, Some(PathBuf::from("-"))] {
            let mut input = std::io::Cursor::new("id = \"acme\"");
            assert_eq!(read_tenant(file.as_ref(), &mut input).unwrap().id, "acme");
        }
        let missing = PathBuf::from("/nonexistent/tenant.toml");
        let err = read_tenant(Some(&missing), &mut std::io::empty()).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tenant.toml"),
            "{err}"
        );
    }

    #[test]
    fn ids_are_encoded_into_the_path() {
        assert_eq!(tenant_path("acme-1.x_y"), "/v1/admin/tenants/acme-1.x_y");
        assert_eq!(tenant_path("a/../b c"), "/v1/admin/tenants/a%2F..%2Fb%20c");
    }

    #[test]
    fn answers_become_output_or_errors() {
        let ok = answer(StatusCode::OK, br#"{"tenants":[]}"#).unwrap();
        assert!(ok.contains("\"tenants\": []"), "{ok}");
        let body = br#"{"error":{"code":"not_found","message":"no tenant \"x\""}}"#;
        let err = answer(StatusCode::NOT_FOUND, body).unwrap_err();
        assert!(
            matches!(&err, TenantCliError::NotFound(m) if m.contains("no tenant")),
            "{err}"
        );
        let body =
            br#"{"error":{"code":"unauthorized","message":"a valid bearer token is required"}}"#;
        let err = answer(StatusCode::UNAUTHORIZED, body).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the admin token was refused (401"),
            "{err}"
        );
        let body = br#"{"error":{"code":"conflict","message":"a tenant \"a\" exists"}}"#;
        let err = answer(StatusCode::CONFLICT, body).unwrap_err();
        assert!(
            matches!(&err, TenantCliError::Api { code, .. } if code == "conflict"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_gateway_and_bad_urls_are_clear_errors() {
        // A port nothing listens on: bind one, learn it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = |url: &str| TenantArgs {
            action: TenantAction::List,
            url: url.to_owned(),
            token: Some("t".into()),
        };
        let err = args(&format!("http://127.0.0.1:{port}"))
            .run(&mut std::io::empty())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
        for url in ["https://127.0.0.1:1", "ftp://x", "not a url"] {
            let err = args(url).run(&mut std::io::empty()).await.unwrap_err();
            assert!(matches!(err, TenantCliError::Url { .. }), "{url}: {err}");
        }
        let no_token = TenantArgs {
            token: None,
            ..args("http://127.0.0.1:1")
        };
        assert!(matches!(
            no_token.run(&mut std::io::empty()).await,
            Err(TenantCliError::NoToken)
        ));
    }
}
