//! The HTTP authentication hook: what to send, how to read the answer, and the answer cache.
//! The HTTP request itself is the server's (this crate does no IO).
//!
//! Place in the data flow:
//! ```text
//! Tenants::authenticate ──Decision::AskHook(req)──▶ server
//! server ──HookCache::lookup(&req, now)──▶ Some(decision): done (no request)
//!        └─ None: POST req.body() to req.url (Content-Type: application/json) with
//!           req.timeout ──▶ HookOutcome::from_response(status, body), or
//!           HookOutcome::Unavailable(why) on timeout / connection error
//!        ──HookCache::complete(&req, outcome, now)──▶ decision (cached for cache_secs)
//! ```
//!
//! # The hook's contract
//! Request body: `{"tenant": "...", "username": "..."|null, "password": "..."|null,
//! "client_id": "...", "cert_identity": "..."|null, "unix_uid": 1000|null}`; a password that is
//! not UTF-8 is sent as `"password_base64"` instead (standard alphabet, padded).
//!
//! Answer: HTTP 204, or 200 with an empty body, allows. HTTP 200 with a JSON object decides by
//! its `"result"`: `"allow"` (optionally with an `"acl"` member of the JWT claim shape, see
//! [`crate::AclClaim`], put in front of the tenant's rules) or `"deny"`; other members are
//! ignored. HTTP 401 and 403 deny. Anything else (other statuses, a malformed body) is a
//! failure, as are timeouts and connection errors.
//!
//! # Decisions
//! Allow and deny answers are cached for the tenant's `cache_secs`, keyed by a salted SHA-256
//! of (tenant, hook URL, username, password, client id, certificate identity, uid): the
//! password is never kept in clear, and a change of any of them asks again. Failures are not
//! cached. A failure denies with 0x88 (server unavailable) unless the tenant sets `fail_open`;
//! even then a client whose credentials a local method had already rejected stays refused.
//! The cache holds at most `capacity` answers; beyond that the oldest is dropped.

use crate::acl::{Acl, AclClaim, AclRule};
use crate::authenticate::{AuthMethod, Credentials, Decision, DenyReason};
use crate::config::HttpAuthConfig;
use crate::tenant::Tenant;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the server must send to the tenant's hook.
#[derive(Clone)]
pub struct HookRequest {
    /// The client's tenant.
    pub tenant: Arc<Tenant>,
    /// Where to POST.
    pub url: String,
    /// How long to wait for the answer.
    pub timeout: Duration,
    /// The username (without `@tenant`).
    pub username: Option<String>,
    /// The client id.
    pub client_id: String,
    /// A verified TLS client certificate identity.
    pub cert_identity: Option<String>,
    /// A Unix-socket peer uid.
    pub unix_uid: Option<u32>,
    /// The rejection of a local method, if one rejected the credentials before.
    pub prior: Option<DenyReason>,
    password: Option<Vec<u8>>,
    ttl: Duration,
    fail_open: bool,
}

impl fmt::Debug for HookRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookRequest")
            .field("tenant", &self.tenant.id())
            .field("url", &self.url)
            .field("username", &self.username)
            .field("client_id", &self.client_id)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("prior", &self.prior)
            .finish_non_exhaustive()
    }
}

impl HookRequest {
    pub(crate) fn new(
        tenant: Arc<Tenant>,
        hook: &HttpAuthConfig,
        creds: &Credentials<'_>,
        prior: Option<DenyReason>,
    ) -> HookRequest {
        HookRequest {
            tenant,
            url: hook.url.clone(),
            timeout: hook.timeout(),
            username: creds.username.filter(|u| !u.is_empty()).map(str::to_owned),
            client_id: creds.client_id.to_owned(),
            cert_identity: creds.cert_identity.map(str::to_owned),
            unix_uid: creds.unix_uid,
            prior,
            password: creds.password.map(<[u8]>::to_vec),
            ttl: hook.cache_ttl(),
            fail_open: hook.fail_open,
        }
    }

    /// The JSON body to POST (see the module docs).
    pub fn body(&self) -> Vec<u8> {
        let mut body = Map::new();
        body.insert("tenant".into(), self.tenant.id().into());
        body.insert("username".into(), self.username.clone().into());
        match self.password.as_deref().map(std::str::from_utf8) {
            Some(Ok(text)) => {
                body.insert("password".into(), text.into());
            }
            Some(Err(_)) => {
                body.insert("password".into(), Value::Null);
                let raw = self.password.as_deref().unwrap_or_default();
                body.insert("password_base64".into(), STANDARD.encode(raw).into());
            }
            None => {
                body.insert("password".into(), Value::Null);
            }
        }
        body.insert("client_id".into(), self.client_id.clone().into());
        body.insert("cert_identity".into(), self.cert_identity.clone().into());
        body.insert("unix_uid".into(), self.unix_uid.into());
        Value::Object(body).to_string().into_bytes()
    }

    fn cache_key(&self, salt: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(salt);
        // Length-prefixed fields: ("ab", "c") and ("a", "bc") must not collide.
        let mut field = |bytes: Option<&[u8]>| match bytes {
            Some(b) => {
                h.update([1]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
            None => h.update([0]),
        };
        field(Some(self.tenant.id().as_bytes()));
        field(Some(self.url.as_bytes()));
        field(self.username.as_deref().map(str::as_bytes));
        field(self.password.as_deref());
        field(Some(self.client_id.as_bytes()));
        field(self.cert_identity.as_deref().map(str::as_bytes));
        let uid = self.unix_uid.map(u32::to_be_bytes);
        field(uid.as_ref().map(<[u8; 4]>::as_slice));
        h.finalize().into()
    }

    fn allow(&self, rules: Option<&[AclRule]>, method: AuthMethod) -> Decision {
        let base = Arc::clone(self.tenant.acl());
        let acl = match rules {
            Some(rules) => Arc::new(Acl::layered(rules.to_vec(), base)),
            None => base,
        };
        Decision::Allow {
            tenant: Arc::clone(&self.tenant),
            username: self.username.clone(),
            acl,
            expires_at: None,
            method,
        }
    }
}

/// The hook's answer, as the server observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Allowed, with optional ACL rules from the answer.
    Allow {
        /// Rules of the answer's `"acl"` member.
        acl: Option<Vec<AclRule>>,
    },
    /// Refused.
    Deny,
    /// No usable answer: timeout, connection error, unexpected status or body.
    Unavailable(String),
}

impl HookOutcome {
    /// Reads an HTTP answer (see the module docs for the contract).
    pub fn from_response(status: u16, body: &[u8]) -> HookOutcome {
        match status {
            204 => HookOutcome::Allow { acl: None },
            401 | 403 => HookOutcome::Deny,
            200 if body.iter().all(u8::is_ascii_whitespace) => HookOutcome::Allow { acl: None },
            200 => HookOutcome::from_json(body),
            other => HookOutcome::Unavailable(format!("HTTP status {other}")),
        }
    }

    fn from_json(body: &[u8]) -> HookOutcome {
        let bad = |why: String| HookOutcome::Unavailable(format!("bad answer: {why}"));
        let answer: Map<String, Value> = match serde_json::from_slice(body) {
            Ok(answer) => answer,
            Err(e) => return bad(e.to_string()),
        };
        match answer.get("result").and_then(Value::as_str) {
            Some("allow") => {}
            Some("deny") => return HookOutcome::Deny,
            _ => return bad("\"result\" must be \"allow\" or \"deny\"".into()),
        }
        let acl = match answer.get("acl") {
            None | Some(Value::Null) => None,
            Some(value) => match AclClaim::from_json(value).and_then(AclClaim::into_rules) {
                Ok(rules) => Some(rules),
                Err(e) => return bad(e.to_string()),
            },
        };
        HookOutcome::Allow { acl }
    }
}

#[derive(Debug, Clone)]
enum Answer {
    Allow(Option<Vec<AclRule>>),
    Deny,
}

#[derive(Debug, Clone)]
struct Cached {
    answer: Answer,
    expires: Instant,
    seq: u64,
}

/// Cached hook answers; see the module docs. The server keeps one, behind a mutex (lookups
/// and completions are short; the HTTP call happens between them, outside the lock).
#[derive(Debug)]
pub struct HookCache {
    entries: HashMap<[u8; 32], Cached>,
    /// Keys in insertion order, for dropping the oldest.
    order: VecDeque<([u8; 32], u64)>,
    capacity: usize,
    next_seq: u64,
    /// Per-process secret mixed into the keys, so a memory dump does not hold plain
    /// SHA-256 values of passwords. If the system's random source fails it stays zero, which
    /// only weakens that protection.
    salt: [u8; 16],
}

impl HookCache {
    /// An empty cache holding at most `capacity` answers (at least 1).
    pub fn new(capacity: usize) -> HookCache {
        HookCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 0,
            salt: argon2::password_hash::try_generate_salt().unwrap_or_default(),
        }
    }

    /// The cached decision for `request`, if a fresh one exists.
    pub fn lookup(&mut self, request: &HookRequest, now: Instant) -> Option<Decision> {
        let key = request.cache_key(&self.salt);
        let cached = self.entries.get(&key)?;
        if cached.expires <= now {
            self.entries.remove(&key);
            return None;
        }
        Some(match &cached.answer {
            Answer::Allow(rules) => request.allow(rules.as_deref(), AuthMethod::Hook),
            Answer::Deny => Decision::Deny(DenyReason::HookDenied),
        })
    }

    /// Turns the hook's answer into a decision, caching it (see the module docs).
    pub fn complete(
        &mut self,
        request: &HookRequest,
        outcome: HookOutcome,
        now: Instant,
    ) -> Decision {
        let answer = match outcome {
            HookOutcome::Allow { acl } => Answer::Allow(acl),
            HookOutcome::Deny => Answer::Deny,
            HookOutcome::Unavailable(why) => {
                return match (&request.prior, request.fail_open) {
                    (None, true) => request.allow(None, AuthMethod::HookFailOpen),
                    (Some(prior), true) => Decision::Deny(prior.clone()),
                    (_, false) => Decision::Deny(DenyReason::HookUnavailable(why)),
                };
            }
        };
        let decision = match &answer {
            Answer::Allow(rules) => request.allow(rules.as_deref(), AuthMethod::Hook),
            Answer::Deny => Decision::Deny(DenyReason::HookDenied),
        };
        if !request.ttl.is_zero() {
            self.insert(request.cache_key(&self.salt), answer, now + request.ttl);
        }
        decision
    }

    /// Answers currently held (expired ones included until they are looked up or pushed out).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops expired answers; call it now and then to return memory after a burst.
    pub fn purge(&mut self, now: Instant) {
        self.entries.retain(|_, c| c.expires > now);
        let entries = &self.entries;
        self.order
            .retain(|(key, seq)| entries.get(key).is_some_and(|c| c.seq == *seq));
    }

    fn insert(&mut self, key: [u8; 32], answer: Answer, expires: Instant) {
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                let Some((old, seq)) = self.order.pop_front() else {
                    break;
                };
                if self.entries.get(&old).is_some_and(|c| c.seq == seq) {
                    self.entries.remove(&old);
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((key, seq));
        self.entries.insert(
            key,
            Cached {
                answer,
                expires,
                seq,
            },
        );
        // Replaced and expired keys leave items behind; rebuild when they dominate.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|c| c.seq == *seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Subject;
    use crate::authenticate::tests::{NOW, acme};
    use crate::config::TenantConfig;

    fn tenant(ttl_secs: u64, fail_open: bool) -> Arc<Tenant> {
        let config = TenantConfig {
            http_auth: Some(HttpAuthConfig {
                url: "http://127.0.0.1:9/auth".into(),
                timeout_ms: 500,
                cache_secs: ttl_secs,
                fail_open,
            }),
            ..acme()
        };
        Arc::new(Tenant::compile(config).unwrap())
    }

    fn ask(t: &Arc<Tenant>, user: &str, password: &[u8]) -> HookRequest {
        let creds = Credentials {
            username: Some(user),
            password: Some(password),
            client_id: "cid",
            ..Credentials::default()
        };
        match t.authenticate(&creds, NOW) {
            Decision::AskHook(req) => *req,
            other => panic!("expected AskHook, got {other:?}"),
        }
    }

    fn method(d: &Decision) -> Option<AuthMethod> {
        match d {
            Decision::Allow { method, .. } => Some(*method),
            _ => None,
        }
    }

    #[test]
    fn the_request_body_carries_the_credentials() {
        let t = tenant(60, false);
        let req = ask(&t, "ext", b"secret");
        assert_eq!(req.url, "http://127.0.0.1:9/auth");
        assert_eq!(req.timeout, Duration::from_millis(500));
        let body: Value = serde_json::from_slice(&req.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "tenant": "acme", "username": "ext", "password": "secret",
                "client_id": "cid", "cert_identity": null, "unix_uid": null
            })
        );
        assert!(!format!("{req:?}").contains("secret"));
        let binary = ask(&t, "ext", &[0xff, 0x00]);
        let body: Value = serde_json::from_slice(&binary.body()).unwrap();
        assert_eq!(body["password"], Value::Null);
        assert_eq!(body["password_base64"], "/wA=");
    }

    #[test]
    fn answers_are_read_by_the_contract() {
        assert_eq!(
            HookOutcome::from_response(204, b""),
            HookOutcome::Allow { acl: None }
        );
        assert_eq!(
            HookOutcome::from_response(200, b" \n"),
            HookOutcome::Allow { acl: None }
        );
        assert_eq!(
            HookOutcome::from_response(200, br#"{"result":"deny"}"#),
            HookOutcome::Deny
        );
        assert_eq!(HookOutcome::from_response(403, b"nope"), HookOutcome::Deny);
        assert_eq!(HookOutcome::from_response(401, b""), HookOutcome::Deny);
        let HookOutcome::Allow { acl: Some(rules) } = HookOutcome::from_response(
            200,
            br#"{"result":"allow","is_superuser":false,"acl":{"sub":["x/#"]}}"#,
        ) else {
            panic!("allow with rules expected")
        };
        assert_eq!(rules.len(), 1);
        for (status, body) in [
            (500, &b""[..]),
            (302, b""),
            (200, b"yes"),
            (200, br#"{"result":"maybe"}"#),
            (200, br#"{"result":"allow","acl":{"pub":["a/#/b"]}}"#),
        ] {
            assert!(
                matches!(
                    HookOutcome::from_response(status, body),
                    HookOutcome::Unavailable(_)
                ),
                "{status} {body:?}"
            );
        }
    }

    #[test]
    fn allow_and_deny_are_cached_for_the_ttl() {
        let t = tenant(60, false);
        let mut cache = HookCache::new(100);
        let t0 = Instant::now();
        let req = ask(&t, "ext", b"pw1");
        assert!(cache.lookup(&req, t0).is_none());
        let rules = AclClaim::from_json(&serde_json::json!({"pub": ["hook/%u"]}))
            .unwrap()
            .into_rules()
            .unwrap();
        let d = cache.complete(&req, HookOutcome::Allow { acl: Some(rules) }, t0);
        assert_eq!(method(&d), Some(AuthMethod::Hook));
        let cached = cache.lookup(&req, t0 + Duration::from_secs(59)).unwrap();
        let Decision::Allow { acl, username, .. } = cached else {
            panic!("cached allow expected")
        };
        let who = Subject {
            username: username.as_deref(),
            client_id: "cid",
        };
        assert!(acl.check_publish(&who, "hook/ext").is_allowed());
        assert!(acl.check_publish(&who, "devices/ext/1").is_allowed());
        assert!(cache.lookup(&req, t0 + Duration::from_secs(60)).is_none());
        assert!(cache.is_empty(), "the expired answer was dropped");

        let deny = ask(&t, "ext", b"wrong");
        let d = cache.complete(&deny, HookOutcome::Deny, t0);
        assert!(matches!(d, Decision::Deny(DenyReason::HookDenied)));
        assert!(matches!(
            cache.lookup(&deny, t0),
            Some(Decision::Deny(DenyReason::HookDenied))
        ));
    }

    #[test]
    fn the_key_covers_password_username_and_client_id() {
        let t = tenant(60, false);
        let mut cache = HookCache::new(100);
        let t0 = Instant::now();
        let req = ask(&t, "ext", b"pw");
        cache.complete(&req, HookOutcome::Allow { acl: None }, t0);
        assert!(cache.lookup(&ask(&t, "ext", b"pw"), t0).is_some());
        assert!(cache.lookup(&ask(&t, "ext", b"pw2"), t0).is_none());
        assert!(cache.lookup(&ask(&t, "ext2", b"pw"), t0).is_none());
        let mut other_client = ask(&t, "ext", b"pw");
        other_client.client_id = "other".into();
        assert!(cache.lookup(&other_client, t0).is_none());
    }

    #[test]
    fn failures_are_not_cached_and_fail_closed_by_default() {
        let t = tenant(60, false);
        let mut cache = HookCache::new(100);
        let t0 = Instant::now();
        let req = ask(&t, "ext", b"pw");
        let d = cache.complete(&req, HookOutcome::Unavailable("timeout".into()), t0);
        let Decision::Deny(reason) = d else {
            panic!("deny expected")
        };
        assert_eq!(reason, DenyReason::HookUnavailable("timeout".into()));
        assert!(cache.lookup(&req, t0).is_none());
    }

    #[test]
    fn fail_open_allows_unless_a_local_method_rejected() {
        let t = tenant(60, true);
        let mut cache = HookCache::new(100);
        let t0 = Instant::now();
        let mut req = ask(&t, "ext", b"pw");
        req.prior = None;
        let d = cache.complete(&req, HookOutcome::Unavailable("down".into()), t0);
        assert_eq!(method(&d), Some(AuthMethod::HookFailOpen));
        // phone1 with a wrong password was rejected locally: fail-open does not admit it.
        let wrong = ask(&t, "phone1", b"bad");
        assert_eq!(wrong.prior, Some(DenyReason::BadPassword));
        let d = cache.complete(&wrong, HookOutcome::Unavailable("down".into()), t0);
        assert!(matches!(d, Decision::Deny(DenyReason::BadPassword)));
    }

    #[test]
    fn zero_ttl_asks_every_time() {
        let t = tenant(0, false);
        let mut cache = HookCache::new(100);
        let t0 = Instant::now();
        let req = ask(&t, "ext", b"pw");
        cache.complete(&req, HookOutcome::Allow { acl: None }, t0);
        assert!(cache.lookup(&req, t0).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn capacity_bounds_the_cache() {
        let t = tenant(60, false);
        let mut cache = HookCache::new(3);
        let t0 = Instant::now();
        let requests: Vec<_> = (0..10).map(|i| ask(&t, &format!("u{i}"), b"pw")).collect();
        for req in &requests {
            cache.complete(req, HookOutcome::Allow { acl: None }, t0);
            assert!(cache.len() <= 3);
        }
        assert!(cache.lookup(&requests[9], t0).is_some());
        assert!(cache.lookup(&requests[0], t0).is_none());
        // Re-answering the same key does not grow the queue without bound.
        for _ in 0..20 {
            cache.complete(&requests[9], HookOutcome::Allow { acl: None }, t0);
        }
        assert!(cache.order.len() <= 6);
        cache.purge(t0 + Duration::from_secs(61));
        assert!(cache.is_empty());
        assert!(cache.order.is_empty());
    }
}
