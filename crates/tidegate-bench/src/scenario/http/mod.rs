//! `http`: Tidegate's HTTP face under load, measured the way the MQTT scenarios are, so the
//! two can be put side by side.
//!
//! Place in the data flow: `main` → [`run`] → one of
//! - [`rest::run`] (`--mode publish|batch`): N HTTP connections POST benchmark messages
//!   ([`publisher`]) to N topics, each heard by its own MQTT subscriber — the HTTP twin of
//!   `pairs`;
//! - [`fanout::run`] (`--mode sse`): MQTT publishers feed M SSE streams on one filter
//!   ([`sse_reader`]) — the SSE twin of `fanout`;
//!
//! → the same timing, drain and stream accounting as the MQTT scenarios
//! ([`super::traffic`]) → a [`Report`] whose `messages` reads like theirs and whose `http`
//! holds the HTTP side (requests, their latency, SSE events).

pub mod fanout;
pub mod publisher;
pub mod rest;
pub mod sse_reader;

use super::ScenarioError;
use crate::cli::{HttpArgs, HttpMode};
use crate::http_client::conn::RequestHead;
use crate::http_client::{HttpConn, HttpTarget};
use crate::report::Report;
use std::net::SocketAddr;
use std::time::Duration;

/// Runs the http scenario in the mode asked for.
pub async fn run(args: &HttpArgs) -> Result<Report, ScenarioError> {
    args.validate()?;
    match args.mode {
        HttpMode::Publish | HttpMode::Batch => rest::run(args).await,
        HttpMode::Sse => fanout::run(args).await,
    }
}

/// What to add to an error for an HTTP status that means the token is wrong.
pub fn token_hint(status: u16) -> &'static str {
    if status == 401 || status == 403 {
        " (give a publish token with --token or TIDEGATE_BENCH_HTTP_TOKEN)"
    } else {
        ""
    }
}

/// The gateway's HTTP listener, resolved once, and how every request is addressed.
#[derive(Debug, Clone)]
pub struct HttpSide {
    /// As given.
    pub target: HttpTarget,
    /// Resolved.
    pub addr: SocketAddr,
    /// `Host` and `Authorization`.
    pub head: RequestHead,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl HttpSide {
    /// Resolves `--http-url` and prepares the headers.
    pub async fn new(args: &HttpArgs) -> Result<HttpSide, ScenarioError> {
        let target =
            HttpTarget::parse(&args.http_url).map_err(|e| ScenarioError::Failed(e.to_string()))?;
        let addr = target
            .resolve()
            .await
            .map_err(|e| ScenarioError::Failed(e.to_string()))?;
        let head =
            RequestHead::new(&target.authority(), args.token.as_deref()).map_err(|source| {
                ScenarioError::Http {
                    what: "--token".into(),
                    source,
                }
            })?;
        Ok(HttpSide {
            target,
            addr,
            head,
            connect_timeout: args.msg.common.connect_timeout,
        })
    }

    /// Opens `n` connections, one after the other (a loopback connect takes microseconds, and
    /// hyper's handshake does no IO); the first failure aborts the run.
    pub async fn open_many(&self, n: u32, role: &str) -> Result<Vec<HttpConn>, ScenarioError> {
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let c = HttpConn::open(self.addr, self.head.clone(), self.connect_timeout)
                .await
                .map_err(|source| ScenarioError::Http {
                    what: format!("{role} {i}"),
                    source,
                })?;
            out.push(c);
        }
        Ok(out)
    }
}
