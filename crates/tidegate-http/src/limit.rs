//! Request limits: per-token rate limiting, per-address limiting of failed authentications,
//! and the request body size limit.
//!
//! Place in the data flow: `request -> body limit (middleware, before any byte of the body is
//! read) -> auth extractor -> rate limit check (this module) -> handler`. The auth extractors
//! in [`crate::auth`] call [`Limits::check_token`] once a token is recognised and
//! [`Limits::check_failure`] when it is not, so one counter per credential and one per client
//! address bound what a single caller can cost the engine.
//!
//! The keyed maps are pruned with `retain_recent` every [`PRUNE_EVERY`] checks rather than on
//! a timer: the failure map is keyed by client address, which a scanner controls, and pruning
//! on the request path needs no task and costs nothing while the API is idle.

use crate::config::HttpConfig;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, QuantaClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

/// Checks between two prunings of the keyed limiter maps.
const PRUNE_EVERY: u64 = 1024;

/// Which set of credentials a token belongs to: each set has its own limiter, so heavy
/// publishing cannot starve the operators' admin calls (and the same index in both lists is
/// two different tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A token of `http.publish_tokens`.
    Publish,
    /// A token of `http.admin_tokens`.
    Admin,
}

/// A keyed GCRA limiter over clock `C`.
type Keyed<K, C> = RateLimiter<K, HashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The rate limiters of the HTTP face; inert when `http.requests_per_second` is 0.
pub(crate) struct Limits<C: Clock + Clone = QuantaClock> {
    /// `None` when rate limiting is off.
    rate: Option<RateLimits<C>>,
}

/// The limiters proper.
struct RateLimits<C: Clock + Clone> {
    /// Per publish token, by index in `http.publish_tokens`.
    publish: Keyed<usize, C>,
    /// Per admin token, by index in `http.admin_tokens`.
    admin: Keyed<usize, C>,
    /// Failed authentications per client address; `None` is the one shared key of requests
    /// that arrive without a peer address (e.g. served without `ConnectInfo`).
    failures: Keyed<Option<IpAddr>, C>,
    /// Checks made, to prune the maps every [`PRUNE_EVERY`].
    checks: AtomicU64,
    /// The clock the limiters share, to turn "not until" into a wait.
    clock: C,
}

impl Limits<QuantaClock> {
    /// The limiters `config` asks for, on the real clock.
    pub(crate) fn new(config: &HttpConfig) -> Limits {
        Limits::with_clock(config, QuantaClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// The limiters `config` asks for, on `clock`.
    pub(crate) fn with_clock(config: &HttpConfig, clock: C) -> Limits<C> {
        let Some(rate) = NonZeroU32::new(config.requests_per_second) else {
            return Limits { rate: None };
        };
        // `burst` is what a caller may send at once *above* the steady rate, so the bucket
        // holds one second of the rate plus the burst.
        let bucket = rate.saturating_add(config.burst);
        let quota = Quota::per_second(rate).allow_burst(bucket);
        let keyed = || RateLimiter::new(quota, HashMapStateStore::default(), clock.clone());
        Limits {
            rate: Some(RateLimits {
                publish: keyed(),
                admin: keyed(),
                failures: RateLimiter::new(quota, HashMapStateStore::default(), clock.clone()),
                checks: AtomicU64::new(0),
                clock,
            }),
        }
    }

    /// Counts one request made with token `index` of `kind`; 429 when the token is over its
    /// rate.
    pub(crate) fn check_token(&self, kind: TokenKind, index: usize) -> Result<(), ApiError> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        let limiter = match kind {
            TokenKind::Publish => &rate.publish,
            TokenKind::Admin => &rate.admin,
        };
        rate.check(limiter, &index, "too many requests with this token")
    }

    /// Counts one failed authentication from `peer`; 429 when that address has failed too
    /// often, so tokens cannot be guessed at the speed of the network.
    pub(crate) fn check_failure(&self, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        rate.check(
            &rate.failures,
            &peer,
            "too many failed authentications from this address",
        )
    }

    /// Keys held by the failure limiter (for tests of the pruning).
    #[cfg(test)]
    fn failure_keys(&self) -> usize {
        self.rate.as_ref().map_or(0, |r| r.failures.len())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// One check of `key` against `limiter`, pruning every map now and then.
    fn check<K: Hash + Eq + Clone>(
        &self,
        limiter: &Keyed<K, C>,
        key: &K,
        message: &str,
    ) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Retry-After is whole seconds; round up so a client that obeys it succeeds.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::rate_limited(message, secs)
        })
    }

    /// Drops the keys whose state is back to fresh, and the memory they held.
    fn prune(&self) {
        self.publish.retain_recent();
        self.publish.shrink_to_fit();
        self.admin.retain_recent();
        self.admin.shrink_to_fit();
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
    }
}

/// Middleware: refuses a request whose `Content-Length` is over `http.max_body_bytes` with 413
/// before any byte of its body is read. Bodies without a length (chunked) are cut at the same
/// limit by `DefaultBodyLimit` when an extractor reads them, which [`crate::extract`] maps to
/// the same 413.
pub(crate) async fn body_limit(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => ApiError::too_large(limit).into_response(),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn config(rps: u32, burst: u32) -> HttpConfig {
        HttpConfig {
            requests_per_second: rps,
            burst,
            ..HttpConfig::default()
        }
    }

    #[test]
    fn zero_rate_turns_limiting_off() {
        let limits = Limits::with_clock(&config(0, 0), FakeRelativeClock::default());
        for _ in 0..10_000 {
            assert!(limits.check_token(TokenKind::Publish, 0).is_ok());
            assert!(limits.check_failure(None).is_ok());
        }
    }

    #[test]
    fn a_token_gets_rate_plus_burst_then_429_with_retry_after() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(&config(2, 3), clock.clone());
        for _ in 0..5 {
            assert!(limits.check_token(TokenKind::Publish, 0).is_ok());
        }
        let e = limits
            .check_token(TokenKind::Publish, 0)
            .expect_err("the sixth request is over the bucket");
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code, "rate_limited");
        // One cell comes back every 500 ms: rounded up to a whole second.
        assert_eq!(e.retry_after, Some(1));
        clock.advance(Duration::from_millis(500));
        assert!(limits.check_token(TokenKind::Publish, 0).is_ok());
    }

    #[test]
    fn tokens_and_kinds_are_limited_separately() {
        let limits = Limits::with_clock(&config(1, 0), FakeRelativeClock::default());
        assert!(limits.check_token(TokenKind::Publish, 0).is_ok());
        assert!(limits.check_token(TokenKind::Publish, 0).is_err());
        assert!(limits.check_token(TokenKind::Publish, 1).is_ok());
        assert!(limits.check_token(TokenKind::Admin, 0).is_ok());
        assert!(limits.check_token(TokenKind::Admin, 0).is_err());
    }

    #[test]
    fn failures_are_limited_per_address_with_one_shared_key_for_unknown_peers() {
        let limits = Limits::with_clock(&config(1, 1), FakeRelativeClock::default());
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        assert!(limits.check_failure(Some(a)).is_ok());
        assert!(limits.check_failure(Some(a)).is_ok());
        assert!(limits.check_failure(Some(a)).is_err());
        assert!(limits.check_failure(Some(b)).is_ok());
        assert!(limits.check_failure(None).is_ok());
        assert!(limits.check_failure(None).is_ok());
        assert!(limits.check_failure(None).is_err());
    }

    #[test]
    fn idle_keys_are_pruned_so_the_map_does_not_grow_without_bound() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(&config(1, 0), clock.clone());
        for i in 0..1000u32 {
            let ip: IpAddr = i.to_be_bytes().into();
            // Rejections are fine here: only the number of keys matters.
            let _ = limits.check_failure(Some(ip));
        }
        assert_eq!(limits.failure_keys(), 1000);
        clock.advance(Duration::from_secs(5));
        // The next checks reach the pruning point; every old key is fresh again by now.
        for _ in 0..PRUNE_EVERY {
            let _ = limits.check_failure(None);
        }
        assert!(
            limits.failure_keys() <= 2,
            "keys left: {}",
            limits.failure_keys()
        );
    }
}
