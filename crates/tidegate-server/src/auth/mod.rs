//! Authentication of a CONNECT (issue 7): the IO around the pure policy of [`tidegate_auth`].
//!
//! Place in the data flow:
//! ```text
//! connection task: first CONNECT decoded ──Authenticator::check(ConnInfo, listener tenant, CONNECT)
//!   1. brute-force limiter (per source address)  ── blocked ──▶ Refuse(0x8A Banned)
//!   2. TenantRegistry::current() + Tenants::authenticate on the blocking pool (argon2)
//!   3. Decision::AskHook ──HookCache / HTTP POST (hook::HookClient) / HookCache──▶ Decision
//!   4. Allow ──▶ Verdict::Allow { Authorized, ReaderQuota } ──▶ EngineEvent::Connect
//!                 ──▶ Broker::handle_connect; the connection task keeps the reader quota
//!                     (byte rates, packet size: see crate::throttle)
//!      Deny  ──▶ counted per tenant and reason, failure recorded ──▶ Verdict::Refuse(code)
//!                 ──▶ the connection task writes CONNACK(code) and closes; the engine only
//!                     hears that the connection closed
//! ```
//!
//! **Refused sources.** A source blocked by the brute-force limiter gets CONNACK 0x8A (Banned)
//! in MQTT 5, return code 5 (Not authorized) in 3.1.1, without any credential check, so
//! the attacker cannot even measure one. 0x8A rather than 0x9F (Connection rate exceeded):
//! what is limited is failed authentications, not connections, and a legitimate client
//! connecting often is never refused by it.
//!
//! The registry is read once per CONNECT, so a replaced set of tenants applies to the next
//! CONNECT at once while one being checked keeps the set it started with.

mod hook;

use crate::config::AuthConfig;
use crate::stats::Stats;
use crate::tenants::TenantRegistry;
use crate::throttle::{ReaderQuota, SharedBucket, TenantBuckets};
use bytes::Bytes;
use hook::HookClient;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tidegate_auth::{
    AuthFailureLimiter, ConnectAttempt, Decision, DenyReason, HookCache, Quotas, Tenants,
};
use tidegate_core::broker::TenantLimits;
use tidegate_core::{Authorized, ConnInfo};
use tidegate_protocol::{Connect, ReasonCode};
use tracing::{debug, info, warn};

/// How often the limiter and the hook cache drop what has expired.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// What to do with a CONNECT.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Connect it: hand it to the broker with what authentication decided.
    Allow {
        /// For the broker.
        auth: Authorized,
        /// For the connection's reader, when the tenant limits byte rates or packet size.
        reader: Option<Box<ReaderQuota>>,
    },
    /// Refuse it with this CONNACK reason code (the codec maps it to a 3.1.1 return code).
    Refuse(ReasonCode),
}

/// A state purged now and then.
#[derive(Debug)]
struct Purged<T> {
    inner: T,
    next_purge: Instant,
}

impl<T> Purged<T> {
    fn new(inner: T) -> Purged<T> {
        Purged {
            inner,
            next_purge: Instant::now() + PURGE_EVERY,
        }
    }

    /// The state, purged first with `purge` when it is time.
    fn get(&mut self, now: Instant, purge: impl FnOnce(&mut T, Instant)) -> &mut T {
        if now >= self.next_purge {
            purge(&mut self.inner, now);
            self.next_purge = now + PURGE_EVERY;
        }
        &mut self.inner
    }
}

/// The server's CONNECT authentication, shared by every connection task. The locks are held
/// for map look-ups only, never across a password check or an HTTP call.
#[derive(Debug)]
pub(crate) struct Authenticator {
    registry: Arc<TenantRegistry>,
    failures: Mutex<Purged<AuthFailureLimiter>>,
    hook_answers: Mutex<Purged<HookCache>>,
    hook: HookClient,
    stats: Arc<Stats>,
    /// The tenant-wide byte buckets, shared by the tenants' connections.
    byte_buckets: Mutex<Purged<TenantBuckets>>,
}

/// A CONNECT's credentials and the connection's identity, owned, for the blocking pool.
struct OwnedAttempt {
    listener_tenant: Option<Arc<str>>,
    sni_host: Option<Arc<str>>,
    username: Option<String>,
    password: Option<Bytes>,
    client_id: String,
    cert_identity: Option<Arc<str>>,
    unix_uid: Option<u32>,
}

impl OwnedAttempt {
    fn new(info: &ConnInfo, listener_tenant: Option<&Arc<str>>, connect: &Connect) -> Self {
        OwnedAttempt {
            listener_tenant: listener_tenant.cloned(),
            sni_host: info.tls_server_name.clone(),
            username: connect.username.as_ref().map(|u| u.as_str().to_owned()),
            password: connect.password.clone(),
            client_id: connect.client_id.as_str().to_owned(),
            cert_identity: info.cert_identity.clone(),
            unix_uid: info.peer_uid,
        }
    }

    fn borrow(&self) -> ConnectAttempt<'_> {
        ConnectAttempt {
            listener_tenant: self.listener_tenant.as_deref(),
            sni_host: self.sni_host.as_deref(),
            username: self.username.as_deref(),
            password: self.password.as_deref(),
            client_id: &self.client_id,
            cert_identity: self.cert_identity.as_deref(),
            unix_uid: self.unix_uid,
        }
    }
}

impl Authenticator {
    /// An authenticator over the tenants of `registry`, with `[auth]`'s limits.
    pub(crate) fn new(
        registry: Arc<TenantRegistry>,
        config: &AuthConfig,
        stats: Arc<Stats>,
    ) -> Authenticator {
        Authenticator {
            registry,
            failures: Mutex::new(Purged::new(AuthFailureLimiter::new(
                config.failure_limits(),
            ))),
            hook_answers: Mutex::new(Purged::new(HookCache::new(config.hook_cache_size))),
            hook: HookClient::new(),
            stats,
            byte_buckets: Mutex::new(Purged::new(TenantBuckets::default())),
        }
    }

    /// Decides about the first CONNECT of a connection (see the module docs). The caller
    /// passes what the connection's listener binds it to.
    pub(crate) async fn check(
        &self,
        info: &ConnInfo,
        listener_tenant: Option<&Arc<str>>,
        connect: &Connect,
    ) -> Verdict {
        let source = info.peer.map(|addr| addr.ip());
        if let Some(ip) = source
            && let Err(remaining) = self.with_failures(|l, now| l.check(ip, now))
        {
            self.stats.count_auth_rate_limited();
            debug!(%ip, remaining_secs = remaining.as_secs(), "CONNECT from a blocked source");
            return Verdict::Refuse(ReasonCode::Banned);
        }
        let attempt = OwnedAttempt::new(info, listener_tenant, connect);
        let tenants = self.registry.current();
        let now_unix = unix_now();
        let checked = tokio::task::spawn_blocking(move || {
            let decision = tenants.authenticate(&attempt.borrow(), now_unix);
            let tenant = match &decision {
                Decision::Deny(reason) => deny_tenant(&tenants, &attempt, reason),
                _ => String::new(),
            };
            (decision, tenant)
        })
        .await;
        let (decision, mut tenant) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                // The check panicked (a bug in the policy crate): refuse, the client may retry.
                warn!(error = %e, "authentication task failed");
                return Verdict::Refuse(ReasonCode::ServerUnavailable);
            }
        };
        let decision = match decision {
            Decision::AskHook(request) => {
                tenant = request.tenant.id().to_owned();
                self.ask_hook(&request).await
            }
            decided => decided,
        };
        match decision {
            Decision::Allow {
                tenant,
                username,
                acl,
                expires_at,
                method,
            } => {
                if let Some(ip) = source {
                    self.with_failures(|l, _| l.record_success(ip));
                }
                debug!(tenant = tenant.id(), ?method, "client authenticated");
                let id: Arc<str> = Arc::from(tenant.id());
                let quotas = tenant.quotas();
                let now = Instant::now();
                let shared = self.tenant_bucket(&id, quotas.tenant_bytes_per_sec, now);
                Verdict::Allow {
                    reader: ReaderQuota::new(id.clone(), quotas, shared, now),
                    auth: Authorized {
                        tenant: id,
                        username: username.map(Arc::from),
                        acl,
                        limits: Arc::new(tenant_limits(quotas)),
                        expires_at: expires_at.map(|exp| expiry_instant(exp, now_unix)),
                    },
                }
            }
            Decision::Deny(reason) => {
                self.stats.count_auth_failure(&tenant, deny_label(&reason));
                if let Some(ip) = source
                    && reason.is_credential_failure()
                    && let Err(block) = self.with_failures(|l, now| l.record_failure(ip, now))
                {
                    info!(%ip, block_secs = block.as_secs(), "too many failed authentications: source blocked");
                }
                debug!(tenant = %tenant, %reason, "authentication refused");
                Verdict::Refuse(reason.reason_code())
            }
            // `ask_hook` always decides; a hook cannot ask for another hook.
            Decision::AskHook(_) => Verdict::Refuse(ReasonCode::ServerUnavailable),
        }
    }

    /// The cached answer of the tenant's hook, else its answer over HTTP (cached).
    async fn ask_hook(&self, request: &tidegate_auth::HookRequest) -> Decision {
        let cached = self.with_hook_answers(|cache, now| cache.lookup(request, now));
        if let Some(decision) = cached {
            return decision;
        }
        let outcome = self.hook.ask(request).await;
        self.with_hook_answers(|cache, now| cache.complete(request, outcome, now))
    }

    /// A tenant was created or changed: its tenant-wide byte bucket is brought to the new
    /// `tenant_bytes_per_sec` at once, so the connected clients sharing it follow (a limit
    /// removed is left to the clients holding the old bucket until they reconnect).
    pub(crate) fn tenant_changed(&self, tenant: &str, quotas: &Quotas) {
        let id: Arc<str> = Arc::from(tenant);
        let _ = self.tenant_bucket(&id, quotas.tenant_bytes_per_sec, Instant::now());
    }

    /// The tenant-wide byte bucket of `tenant`, created or brought to `rate` (see
    /// [`TenantBuckets::get`]).
    fn tenant_bucket(
        &self,
        tenant: &Arc<str>,
        rate: Option<u64>,
        now: Instant,
    ) -> Option<SharedBucket> {
        let mut guard = self
            .byte_buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        guard.get(now, TenantBuckets::purge).get(tenant, rate, now)
    }

    fn with_failures<R>(&self, f: impl FnOnce(&mut AuthFailureLimiter, Instant) -> R) -> R {
        let now = Instant::now();
        let mut guard = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        f(guard.get(now, AuthFailureLimiter::purge), now)
    }

    fn with_hook_answers<R>(&self, f: impl FnOnce(&mut HookCache, Instant) -> R) -> R {
        let now = Instant::now();
        let mut guard = self
            .hook_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(guard.get(now, HookCache::purge), now)
    }
}

/// The tenant a refusal is counted for: the one the client resolved to, the unknown one a
/// listener or SNI host names, or `""` when none.
fn deny_tenant(tenants: &Tenants, attempt: &OwnedAttempt, reason: &DenyReason) -> String {
    if let DenyReason::UnknownTenant(id) = reason {
        return id.clone();
    }
    tenants
        .resolve(&attempt.borrow())
        .map(|r| r.tenant.id().to_owned())
        .unwrap_or_default()
}

/// The `reason` label of a refusal in `/metrics` and [`Stats::auth_failures`].
pub(crate) fn deny_label(reason: &DenyReason) -> &'static str {
    match reason {
        DenyReason::UnknownTenant(_) => "unknown_tenant",
        DenyReason::NoTenant => "no_tenant",
        DenyReason::UnknownUser => "unknown_user",
        DenyReason::BadPassword => "bad_password",
        DenyReason::BadToken(_) => "bad_token",
        DenyReason::TokenOfAnotherTenant(_) => "token_of_another_tenant",
        DenyReason::NoMethod => "no_method",
        DenyReason::AnonymousNotAllowed => "anonymous_not_allowed",
        DenyReason::HookDenied => "hook_denied",
        DenyReason::HookUnavailable(_) => "hook_unavailable",
    }
}

/// The broker's view of a tenant's quotas (also given to the HTTP stream hub's tap, whose
/// CONNECT would otherwise reset the tenant's limits).
pub(crate) fn tenant_limits(q: &Quotas) -> TenantLimits {
    TenantLimits {
        max_connections: q.max_connections,
        max_sessions: q.max_sessions,
        max_subscriptions_per_client: q.max_subscriptions_per_client,
        // More than 4 billion retained messages is no limit in practice.
        max_retained_messages: q
            .max_retained_messages
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        max_retained_bytes: q.max_retained_bytes,
        max_queued_messages: q.max_queued_messages,
        max_packet_size: q.max_packet_size,
        max_inbound_messages_per_sec: q.max_inbound_messages_per_sec,
        tenant_messages_per_sec: q.tenant_messages_per_sec,
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it, which no token survives).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The instant a token expiring at unix second `exp` expires, seen from `now_unix`.
fn expiry_instant(exp: u64, now_unix: u64) -> Instant {
    Instant::now() + Duration::from_secs(exp.saturating_sub(now_unix))
}

/// Logs the start-up warning about anonymous access: without `[[tenants]]` for everyone,
/// otherwise once per tenant that allows it.
pub(crate) fn warn_anonymous(tenants: &Tenants, declared: bool) {
    if !declared {
        warn!("anonymous access is enabled: any client may connect without credentials");
        return;
    }
    let mut open: Vec<&str> = tenants
        .iter()
        .filter(|t| t.config().allow_anonymous)
        .map(|t| t.id())
        .collect();
    open.sort_unstable();
    for id in open {
        warn!(tenant = id, "tenant allows anonymous clients");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_auth::{TenantConfig, UserConfig};
    use tidegate_protocol::{ConnectProperties, ProtocolVersion, Utf8};

    fn connect(username: Option<&str>, password: Option<&[u8]>) -> Connect {
        Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 30,
            client_id: Utf8::from_static("c1"),
            will: None,
            username: username.map(|u| Utf8::try_from(u).unwrap()),
            password: password.map(Bytes::copy_from_slice),
            properties: ConnectProperties::default(),
        }
    }

    fn acme() -> TenantConfig {
        TenantConfig {
            id: "acme".into(),
            users: vec![UserConfig {
                username: "phone1".into(),
                password_hash: tidegate_auth::hash_password(b"pw").unwrap(),
            }],
            ..TenantConfig::default()
        }
    }

    fn authenticator(tenants: &[TenantConfig], config: AuthConfig) -> (Authenticator, Arc<Stats>) {
        let registry = Arc::new(TenantRegistry::new(Tenants::from_configs(tenants).unwrap()));
        let stats = Arc::new(Stats::default());
        (Authenticator::new(registry, &config, stats.clone()), stats)
    }

    fn peer(last: u8) -> ConnInfo {
        ConnInfo {
            peer: Some(([192, 0, 2, last], 4000).into()),
            ..ConnInfo::default()
        }
    }

    #[tokio::test]
    async fn no_tenants_means_anonymous_default() {
        let (auth, _) = authenticator(&[], AuthConfig::default());
        let Verdict::Allow { auth: a, .. } = auth.check(&peer(1), None, &connect(None, None)).await
        else {
            panic!("refused");
        };
        assert_eq!(&*a.tenant, "default");
        assert!(a.username.is_none());
        assert!(a.expires_at.is_none());
    }

    #[tokio::test]
    async fn passwords_are_checked_counted_and_rate_limited() {
        let config = AuthConfig {
            max_failures: 2,
            ..AuthConfig::default()
        };
        let (auth, stats) = authenticator(&[acme()], config);
        let info = peer(1);
        let ok = auth
            .check(&info, None, &connect(Some("phone1@acme"), Some(b"pw")))
            .await;
        let Verdict::Allow { auth: a, .. } = ok else {
            panic!("refused")
        };
        assert_eq!(
            (&*a.tenant, a.username.as_deref()),
            ("acme", Some("phone1"))
        );
        let bad = connect(Some("phone1@acme"), Some(b"nope"));
        for _ in 0..2 {
            assert!(matches!(
                auth.check(&info, None, &bad).await,
                Verdict::Refuse(ReasonCode::BadUserNameOrPassword)
            ));
        }
        assert_eq!(
            stats
                .auth_failures()
                .get(&("acme".to_owned(), "bad_password")),
            Some(&2)
        );
        // Blocked now, even with the right password; another source is not.
        let good = connect(Some("phone1@acme"), Some(b"pw"));
        assert!(matches!(
            auth.check(&info, None, &good).await,
            Verdict::Refuse(ReasonCode::Banned)
        ));
        assert_eq!(stats.auth_rate_limited(), 1);
        assert!(matches!(
            auth.check(&peer(2), None, &good).await,
            Verdict::Allow { .. }
        ));
    }

    #[tokio::test]
    async fn listener_tenant_and_unknown_tenants() {
        let mut open = TenantConfig {
            id: "open".into(),
            allow_anonymous: true,
            ..TenantConfig::default()
        };
        open.quotas.max_connections = Some(5);
        open.quotas.max_retained_messages = Some(u64::MAX);
        let (auth, stats) = authenticator(&[acme(), open], AuthConfig::default());
        let bound: Arc<str> = Arc::from("open");
        let Verdict::Allow { auth: a, .. } = auth
            .check(&peer(1), Some(&bound), &connect(None, None))
            .await
        else {
            panic!("refused")
        };
        assert_eq!(&*a.tenant, "open");
        assert_eq!(a.limits.max_connections, Some(5));
        assert_eq!(a.limits.max_retained_messages, Some(u32::MAX));
        // No tenant named and no default tenant: 0x86, counted without a tenant.
        assert!(matches!(
            auth.check(&peer(1), None, &connect(None, None)).await,
            Verdict::Refuse(ReasonCode::BadUserNameOrPassword)
        ));
        assert_eq!(
            stats.auth_failures().get(&(String::new(), "no_tenant")),
            Some(&1)
        );
        // Anonymous in acme: 0x87.
        assert!(matches!(
            auth.check(&peer(1), None, &connect(Some("@acme"), None))
                .await,
            Verdict::Refuse(ReasonCode::NotAuthorized)
        ));
    }

    #[tokio::test]
    async fn a_replaced_registry_applies_to_the_next_connect() {
        let registry = Arc::new(TenantRegistry::new(Tenants::from_configs(&[]).unwrap()));
        let auth = Authenticator::new(
            registry.clone(),
            &AuthConfig::default(),
            Arc::new(Stats::default()),
        );
        assert!(matches!(
            auth.check(&peer(1), None, &connect(None, None)).await,
            Verdict::Allow { .. }
        ));
        registry.replace(Tenants::from_configs(&[acme()]).unwrap());
        assert!(matches!(
            auth.check(&peer(1), None, &connect(None, None)).await,
            Verdict::Refuse(_)
        ));
    }

    #[tokio::test]
    async fn limited_tenants_get_a_reader_quota_sharing_the_tenant_bucket() {
        let mut pair = TenantConfig {
            id: "pair".into(),
            allow_anonymous: true,
            ..TenantConfig::default()
        };
        pair.quotas.tenant_bytes_per_sec = Some(1000);
        let open = TenantConfig {
            id: "open".into(),
            allow_anonymous: true,
            ..TenantConfig::default()
        };
        let (auth, _) = authenticator(&[pair, open], AuthConfig::default());
        let reader = |tenant: &'static str| {
            let bound: Arc<str> = Arc::from(tenant);
            let auth = &auth;
            async move {
                match auth
                    .check(&peer(1), Some(&bound), &connect(None, None))
                    .await
                {
                    Verdict::Allow { reader, .. } => reader,
                    Verdict::Refuse(code) => panic!("refused: {code:?}"),
                }
            }
        };
        assert!(reader("open").await.is_none(), "an unlimited tenant");
        let mut a = reader("pair").await.unwrap();
        let mut b = reader("pair").await.unwrap();
        let now = Instant::now();
        assert_eq!(a.charge(now, 1000), None);
        let pause = b.charge(now, 1).expect("the bucket `a` emptied");
        assert_eq!(pause.scope, crate::throttle::Scope::Tenant);
    }

    #[test]
    fn expiry_and_purge_timing() {
        let soon = expiry_instant(1_000, 990);
        let d = soon.saturating_duration_since(Instant::now());
        assert!(d <= Duration::from_secs(10) && d > Duration::from_secs(8));
        assert!(expiry_instant(5, 10) <= Instant::now());
        let mut purged = Purged::new(0u32);
        let now = Instant::now();
        *purged.get(now, |n, _| *n += 1) += 10;
        assert_eq!(purged.inner, 10, "not purged before the period");
        purged.get(now + PURGE_EVERY, |n, _| *n = 0);
        assert_eq!(purged.inner, 0);
    }

    #[test]
    fn every_refusal_has_a_distinct_label() {
        let reasons = [
            DenyReason::UnknownTenant("x".into()),
            DenyReason::NoTenant,
            DenyReason::UnknownUser,
            DenyReason::BadPassword,
            DenyReason::TokenOfAnotherTenant("x".into()),
            DenyReason::NoMethod,
            DenyReason::AnonymousNotAllowed,
            DenyReason::HookDenied,
            DenyReason::HookUnavailable("t".into()),
        ];
        let labels: std::collections::HashSet<_> = reasons.iter().map(deny_label).collect();
        assert_eq!(labels.len(), reasons.len());
    }
}
