//! `[http]`: the settings of the HTTP face, read from the gateway's TOML file.
//!
//! Place in the data flow: `tidegate-server` parses the file and hands an [`HttpConfig`] to
//! [`crate::Http::new`]; every handler reads it through the shared state. These keys are a
//! contract with users (see the README's configuration reference): add, never rename.

use serde::Deserialize;
use std::time::Duration;

/// The `[http]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Bearer tokens that may publish and subscribe over HTTP (`/v1/publish`, `/v1/subscribe`,
    /// `/v1/poll`, `/v1/retained`).
    pub publish_tokens: Vec<String>,
    /// Bearer tokens that may use `/v1/admin`. An admin token does not publish: the two sets
    /// of credentials are distinct.
    pub admin_tokens: Vec<String>,
    /// Largest request body accepted, bytes; a bigger one gets 413 before it is read.
    pub max_body_bytes: usize,
    /// Most messages in one `POST /v1/publish/batch`.
    pub max_batch: usize,
    /// Requests per second allowed per token (and per address for unauthenticated failures);
    /// 0 turns rate limiting off. Beyond it: 429.
    pub requests_per_second: u32,
    /// Requests allowed in a burst above the steady rate.
    pub burst: u32,
    /// Messages kept per subscribed filter for SSE / long-poll resumption.
    pub history_size: usize,
    /// How long a message stays in a filter's history, seconds.
    pub history_max_age_secs: u64,
    /// Seconds between SSE heartbeat comments (keeps mobile proxies from closing idle streams).
    pub heartbeat_secs: u64,
    /// Longest `timeout` a long-poll may ask for, seconds.
    pub max_poll_timeout_secs: u64,
    /// Most filters in one subscribe / poll request.
    pub max_filters: usize,
    /// Most SSE streams and long-polls open at once; beyond it: 429.
    pub max_streams: usize,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            publish_tokens: Vec::new(),
            admin_tokens: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            requests_per_second: 0,
            burst: 100,
            history_size: 1000,
            history_max_age_secs: 3600,
            heartbeat_secs: 15,
            max_poll_timeout_secs: 60,
            max_filters: 16,
            max_streams: 10_000,
        }
    }
}

impl HttpConfig {
    /// How long a message stays in a filter's history.
    pub fn history_max_age(&self) -> Duration {
        Duration::from_secs(self.history_max_age_secs)
    }

    /// Interval of SSE heartbeat comments.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }

    /// Checks the values that would make the API unusable; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 {
            return Err("http.max_body_bytes must be at least 1".into());
        }
        if self.max_batch == 0 {
            return Err("http.max_batch must be at least 1".into());
        }
        if self.history_size == 0 {
            return Err("http.history_size must be at least 1".into());
        }
        if self.max_filters == 0 {
            return Err("http.max_filters must be at least 1".into());
        }
        if self
            .publish_tokens
            .iter()
            .chain(&self.admin_tokens)
            .any(|t| t.trim().is_empty())
        {
            return Err("http tokens must not be empty".into());
        }
        if self
            .publish_tokens
            .iter()
            .any(|t| self.admin_tokens.contains(t))
        {
            return Err("a token is both a publish and an admin token; use distinct ones".into());
        }
        Ok(())
    }
}
