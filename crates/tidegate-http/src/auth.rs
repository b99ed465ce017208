//! Bearer-token access: [`PublishAccess`] and [`AdminAccess`] extractors.
//!
//! Place in the data flow: `request -> extractor (this module) -> handler`. A handler that takes
//! one of these runs only for a request carrying a token of that kind; every other request gets
//! 401 (no or unknown token) or 403 (a token of the other kind). Health and metrics take none.
//! Tokens are compared in constant time so their bytes cannot be guessed from response times.
//! With no token configured at all, every request is refused (fail closed): `tidegate serve`
//! generates tokens when the file names none.
//!
//! Rate limits ([`crate::limit`]) are applied here, where the caller is known: a recognised
//! token is counted against its own limit; a failed authentication against the client's
//! address (`ConnectInfo<SocketAddr>`, put there by the server), and past that limit the answer
//! is 429 instead of 401/403, so guessing tokens is slow.

use crate::error::ApiError;
use crate::limit::TokenKind;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use std::net::{IpAddr, SocketAddr};

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

/// The address the request came from, when the server recorded it.
fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Finds the bearer token of `parts` among the tokens of `kind`: its index, or 401 (none or
/// unknown) / 403 (a token of the other kind, `wrong_kind` says why), rate limited both ways.
fn authenticate(
    parts: &Parts,
    state: &AppState,
    kind: TokenKind,
    wrong_kind: &str,
) -> Result<usize, ApiError> {
    let config = &state.inner.config;
    let (own, other) = match kind {
        TokenKind::Publish => (&config.publish_tokens, &config.admin_tokens),
        TokenKind::Admin => (&config.admin_tokens, &config.publish_tokens),
    };
    let failure = match bearer(parts) {
        None => ApiError::unauthorized(),
        Some(token) => match find(own, token) {
            Some(i) => {
                state.inner.limits.check_token(kind, i)?;
                return Ok(i);
            }
            None if find(other, token).is_some() => ApiError::forbidden(wrong_kind),
            None => ApiError::unauthorized(),
        },
    };
    state.inner.limits.check_failure(peer_ip(parts))?;
    Err(failure)
}

impl FromRequestParts<AppState> for PublishAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(
            parts,
            state,
            TokenKind::Publish,
            "an admin token cannot publish or subscribe; use a publish token",
        )
        .map(|token| PublishAccess { token })
    }
}

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(
            parts,
            state,
            TokenKind::Admin,
            "a publish token cannot use the admin API; use an admin token",
        )
        .map(|token| AdminAccess { token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }

    #[test]
    fn find_gives_the_index_of_the_match() {
        let tokens = vec!["aa".to_owned(), "bb".to_owned(), "cc".to_owned()];
        assert_eq!(find(&tokens, "bb"), Some(1));
        assert_eq!(find(&tokens, "cc"), Some(2));
        assert_eq!(find(&tokens, "b"), None);
        assert_eq!(find(&[], "aa"), None);
    }

    fn parts(authorization: Option<&str>) -> Parts {
        let mut request = axum::http::Request::builder();
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_takes_the_token_of_a_bearer_header_only() {
        assert_eq!(bearer(&parts(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(&parts(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer(&parts(Some("Basic abc"))), None);
        assert_eq!(bearer(&parts(Some("Bearer "))), None);
        assert_eq!(bearer(&parts(Some("Bearer"))), None);
        assert_eq!(bearer(&parts(None)), None);
    }
}
