//! `[http]`: the settings of the HTTP face, read from the gateway's TOML file.
//!
//! Place in the data flow: `tidegate-server` parses the file and hands an [`HttpConfig`] to
//! [`crate::Http::new`]; every handler reads it through the shared state. These keys are a
//! contract with users (see the README's configuration reference): add, never rename.
//!
//! Tokens come in two shapes. The plain lists (`publish_tokens`, `admin_tokens`) act for the
//! `default` tenant with every topic allowed, and an admin token of theirs manages every tenant.
//! `[[http.tokens]]` entries bind a token to one tenant (issue 7): a publish token publishes
//! into that tenant and is checked against its ACL as `username` (`%u`) and `http:<index>`
//! (`%c`); an admin token sees and manages that tenant only.

use serde::Deserialize;
use std::time::Duration;
use tidegate_auth::DEFAULT_TENANT_ID;

/// What a `[[http.tokens]]` entry may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Publish, subscribe, poll and read retained messages.
    Publish,
    /// Use `/v1/admin`.
    Admin,
}

/// One `[[http.tokens]]` entry: a token bound to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The bearer token.
    pub token: String,
    /// What it may do.
    pub kind: TokenKind,
    /// The tenant it acts in (default `default`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// For a publish token: the username its ACL checks substitute for `%u` (none: checked
    /// as an anonymous client). Refused on an admin token, which the ACL does not apply to.
    #[serde(default)]
    pub username: Option<String>,
}

impl TokenConfig {
    /// The tenant the token acts in.
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT_ID)
    }
}

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
    /// Tokens bound to a tenant (`[[http.tokens]]`); they come after the plain lists' tokens
    /// of their kind when tokens are numbered (rate limits, `http:<index>` client ids).
    pub tokens: Vec<TokenConfig>,
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
            tokens: Vec::new(),
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

    /// Every token of `kind`, numbered: the plain list's first, then the bound ones, each with
    /// its binding (`None`: a plain token).
    pub(crate) fn tokens_of(
        &self,
        kind: TokenKind,
    ) -> impl Iterator<Item = (&str, Option<&TokenConfig>)> {
        let plain = match kind {
            TokenKind::Publish => &self.publish_tokens,
            TokenKind::Admin => &self.admin_tokens,
        };
        plain.iter().map(|t| (t.as_str(), None)).chain(
            self.tokens
                .iter()
                .filter(move |t| t.kind == kind)
                .map(|t| (t.token.as_str(), Some(t))),
        )
    }

    /// Whether any token is configured (with none, every request is refused).
    pub fn has_tokens(&self) -> bool {
        !(self.publish_tokens.is_empty() && self.admin_tokens.is_empty() && self.tokens.is_empty())
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
        let all: Vec<&str> = self
            .publish_tokens
            .iter()
            .chain(&self.admin_tokens)
            .map(String::as_str)
            .chain(self.tokens.iter().map(|t| t.token.as_str()))
            .collect();
        if all.iter().any(|t| t.trim().is_empty()) {
            return Err("http tokens must not be empty".into());
        }
        let publish: Vec<&str> = self.tokens_of(TokenKind::Publish).map(|(t, _)| t).collect();
        if self
            .tokens_of(TokenKind::Admin)
            .any(|(t, _)| publish.contains(&t))
        {
            return Err("a token is both a publish and an admin token; use distinct ones".into());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(t) = self.tokens.iter().find(|t| !seen.insert(t.token.as_str())) {
            return Err(format!(
                "http.tokens: token {}... appears twice; a token has one binding",
                t.token.chars().take(4).collect::<String>()
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.kind == TokenKind::Admin && t.username.is_some() {
                return Err(format!(
                    "http.tokens[{i}].username: only a publish token has a username (the ACL \
                     does not apply to the admin API)"
                ));
            }
            if t.tenant.as_deref().is_some_and(|id| id.trim().is_empty()) {
                return Err(format!("http.tokens[{i}].tenant must not be empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(token: &str, kind: TokenKind, tenant: Option<&str>) -> TokenConfig {
        TokenConfig {
            token: token.into(),
            kind,
            tenant: tenant.map(Into::into),
            username: None,
        }
    }

    #[test]
    fn bound_tokens_are_numbered_after_the_plain_ones_of_their_kind() {
        let config = HttpConfig {
            publish_tokens: vec!["p0".into()],
            admin_tokens: vec!["a0".into()],
            tokens: vec![
                bound("a1", TokenKind::Admin, Some("acme")),
                bound("p1", TokenKind::Publish, Some("acme")),
            ],
            ..HttpConfig::default()
        };
        config.validate().unwrap();
        let publish: Vec<_> = config
            .tokens_of(TokenKind::Publish)
            .map(|(t, b)| (t, b.map(TokenConfig::tenant)))
            .collect();
        assert_eq!(publish, [("p0", None), ("p1", Some("acme"))]);
        let admin: Vec<_> = config.tokens_of(TokenKind::Admin).map(|(t, _)| t).collect();
        assert_eq!(admin, ["a0", "a1"]);
        assert_eq!(bound("x", TokenKind::Publish, None).tenant(), "default");
        assert!(config.has_tokens());
        assert!(!HttpConfig::default().has_tokens());
    }

    #[test]
    fn token_bindings_are_validated() {
        let with = |tokens: Vec<TokenConfig>| HttpConfig {
            publish_tokens: vec!["p0".into()],
            tokens,
            ..HttpConfig::default()
        };
        let both = with(vec![bound("p0", TokenKind::Admin, None)]);
        assert!(both.validate().unwrap_err().contains("both"));
        let twice = with(vec![
            bound("x1", TokenKind::Publish, Some("a")),
            bound("x1", TokenKind::Publish, Some("b")),
        ]);
        assert!(twice.validate().unwrap_err().contains("twice"));
        let mut admin_user = bound("x2", TokenKind::Admin, Some("a"));
        admin_user.username = Some("u".into());
        assert!(
            with(vec![admin_user])
                .validate()
                .unwrap_err()
                .contains("username")
        );
        let empty = with(vec![bound(" ", TokenKind::Publish, None)]);
        assert!(empty.validate().is_err());
        let no_tenant = with(vec![bound("x3", TokenKind::Publish, Some(""))]);
        assert!(no_tenant.validate().unwrap_err().contains("tenant"));
    }

    #[test]
    fn token_entries_deserialize_with_their_binding() {
        #[derive(Deserialize)]
        struct File {
            http: HttpConfig,
        }
        let file: File = serde_json::from_value(serde_json::json!({"http": {
            "tokens": [{"token": "t", "kind": "publish", "tenant": "acme", "username": "backend"}]
        }}))
        .unwrap();
        assert_eq!(file.http.tokens[0].username.as_deref(), Some("backend"));
        assert_eq!(file.http.tokens[0].kind, TokenKind::Publish);
    }
}
