//! Tidegate's multi-tenancy policy: tenants, authentication, authorization, quotas and rate
//! limits. Pure: no sockets, no async, no clock — time is passed in (`Instant` for durations,
//! unix seconds for token expiry).
//!
//! # Place in the data flow
//! ```text
//! config file / admin API ──TenantConfig──▶ Tenants::from_configs (validate + compile)
//!
//! server, CONNECT ──AuthFailureLimiter::check(peer ip)──▶ refused sources stop here
//!        ──Tenants::authenticate(ConnectAttempt, now)──▶ Decision   (blocking thread: argon2)
//!            resolve: listener tenant ▸ SNI host ▸ user@tenant ▸ JWT tenant claim ▸ "default"
//!            authenticate: JWT ▸ users ▸ certificate ▸ unix uid ▸ HTTP hook ▸ anonymous
//!        Decision::AskHook ──HookCache::lookup / HTTP POST / HookCache::complete──▶ Decision
//!        Decision::Deny(reason) ──▶ CONNACK reason.reason_code(); record_failure(ip)
//!        Decision::Allow{tenant, username, acl, expires_at} ──▶ engine (session in the tenant)
//!
//! broker, per packet ──Acl::check_publish / check_subscribe(Subject, topic|filter)──▶ Permission
//!        ──TokenBucket::try_take (per client, per tenant; from Quotas)──▶ 0x96 / backpressure
//! ```
//!
//! # Modules
//! - [`config`]: the `[[tenants]]` TOML model and its validation.
//! - [`password`]: argon2id PHC hashes (`tidegate passwd`).
//! - [`jwt`]: JWT verification (HS256 / RS256 / ES256, JWKS, `exp`, claims).
//! - [`acl`]: compiled rules, `%u` / `%c`, publish and subscribe checks.
//! - [`resolve`] and [`authenticate`]: tenant resolution and the order of the methods.
//! - [`hook`]: the HTTP auth hook's contract and answer cache.
//! - [`ratelimit`]: token buckets and the brute-force limiter.

pub mod acl;
pub mod authenticate;
pub mod config;
pub mod hook;
pub mod jwt;
pub mod password;
pub mod ratelimit;
pub mod resolve;
mod tenant;

pub use acl::{
    Acl, AclClaim, AclError, AclRule, Permission, RuleAction, Subject, filter_covers,
    filters_intersect,
};
pub use authenticate::{AuthMethod, Credentials, Decision, DenyReason};
pub use config::{
    AclRuleConfig, ConfigError, DEFAULT_TENANT_ID, HttpAuthConfig, JwtConfig, Quotas, TenantConfig,
    UserConfig, validate_tenants,
};
pub use hook::{HookCache, HookOutcome, HookRequest};
pub use jwt::{JwtError, JwtVerifier, VerifiedToken};
pub use password::{PasswordError, hash_password, parse_phc, verify_password};
pub use ratelimit::{AuthFailureLimiter, AuthFailureLimits, TokenBucket};
pub use resolve::{ConnectAttempt, Resolution, ResolvedBy};
pub use tenant::{Tenant, Tenants};
