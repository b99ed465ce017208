//! Bearer-token access: [`PublishAccess`] and [`AdminAccess`] extractors.
//!
//! Place in the data flow: `request -> extractor (this module) -> handler`. A handler that takes
//! one of these runs only for a request carrying a token of that kind; every other request gets
//! 401 (no or unknown token) or 403 (a token of the other kind). Health and metrics take none.
//! Tokens are compared in constant time so their bytes cannot be guessed from response times.
//! With no token configured at all, every request is refused (fail closed): `tidegate serve`
//! generates tokens when the file names none.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

/// The request carries a publish token: it may publish, subscribe, poll and read retained.
#[derive(Debug, Clone)]
pub(crate) struct PublishAccess {
    /// Index of the token in `http.publish_tokens` (rate limits are kept per token).
    pub(crate) token: usize,
}

/// The request carries an admin token: it may use `/v1/admin`.
#[derive(Debug, Clone)]
pub(crate) struct AdminAccess {
    /// Index of the token in `http.admin_tokens`.
    pub(crate) token: usize,
}

/// The bearer token of `parts`, if the header is there and well-formed.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Byte comparison whose time does not depend on where the first difference is.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The index of `token` in `tokens` (every entry is compared, match or not).
fn find(tokens: &[String], token: &str) -> Option<usize> {
    let mut found = None;
    for (i, t) in tokens.iter().enumerate() {
        if constant_time_eq(t.as_bytes(), token.as_bytes()) && found.is_none() {
            found = Some(i);
        }
    }
    found
}

impl FromRequestParts<AppState> for PublishAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let config = &state.inner.config;
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if let Some(i) = find(&config.publish_tokens, token) {
            return Ok(PublishAccess { token: i });
        }
        if find(&config.admin_tokens, token).is_some() {
            return Err(ApiError::forbidden(
                "an admin token cannot publish or subscribe; use a publish token",
            ));
        }
        Err(ApiError::unauthorized())
    }
}

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let config = &state.inner.config;
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if let Some(i) = find(&config.admin_tokens, token) {
            return Ok(AdminAccess { token: i });
        }
        if find(&config.publish_tokens, token).is_some() {
            return Err(ApiError::forbidden(
                "a publish token cannot use the admin API; use an admin token",
            ));
        }
        Err(ApiError::unauthorized())
    }
}
