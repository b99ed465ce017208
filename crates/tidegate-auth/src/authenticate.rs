//! Authentication of a CONNECT within its tenant: the methods, their order, and the decision.
//!
//! Place in the data flow: [`crate::Tenants::authenticate`] resolves the tenant and calls
//! [`Tenant::authenticate`]; the server acts on the [`Decision`]: CONNACK success and the
//! session with the tenant and ACL, CONNACK with [`DenyReason::reason_code`], or an HTTP call for
//! [`Decision::AskHook`] whose answer goes through [`crate::HookCache::complete`].
//!
//! **Blocking**: a password check runs argon2 (tens of milliseconds of CPU); run this on a
//! blocking pool (`spawn_blocking`), never on an async executor thread.
//!
//! # Order of the methods
//! Each method either accepts, rejects, or does not apply. The first acceptance wins. A
//! rejection (credentials presented and wrong) stops the local methods: it is never turned
//! into an acceptance by an ambient identity (certificate, uid) or by anonymous access; only the
//! tenant's HTTP hook, if it has one, gets the last word.
//! 1. **JWT**: the tenant has `[tenants.jwt]` and the password has the shape of a JWT. A valid
//!    token whose tenant claim (if any) names this tenant accepts; username = `sub`, else the
//!    MQTT username; the ACL claim is put in front of the tenant's rules; the expiry is
//!    returned. Anything else rejects (0x86; 0x87 for a token of another tenant).
//! 2. **Users**: the tenant has `[[tenants.users]]` and a password is presented with a
//!    username. The right password accepts; a wrong one, or an unknown username, rejects (0x86;
//!    an unknown username still costs one argon2 run so timing does not reveal which users
//!    exist). A username without a password does not apply here.
//! 3. **Certificate identity**: `cert_identity = true` and the TLS listener verified a client
//!    certificate: accepts, with the identity as username.
//! 4. **Unix uid**: the peer uid of a Unix socket is in `unix_uids`: accepts, with the MQTT
//!    username if one was sent, else the uid in decimal, as username.
//! 5. **HTTP hook**: `[tenants.http_auth]` and the client presented a username or password:
//!    [`Decision::AskHook`] (also after a rejection above, which the hook may overturn).
//! 6. **Anonymous**: `allow_anonymous` and nothing rejected: accepts with no username (so `%u`
//!    rules do not apply to it).
//!
//! Otherwise: 0x86 when credentials were presented, 0x87 (not authorized) when none were.

use crate::acl::Acl;
use crate::hook::HookRequest;
use crate::jwt::{JwtError, looks_like_jwt};
use crate::password::verify_password;
use crate::tenant::Tenant;
use std::sync::Arc;
use tidegate_protocol::ReasonCode;

/// What a client presents, once its tenant is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The username without `@tenant`; `None` when absent or empty.
    pub username: Option<&'a str>,
    /// The password (or token) bytes.
    pub password: Option<&'a [u8]>,
    /// The client id (the one the server assigns when the client sent none, if already known).
    pub client_id: &'a str,
    /// The identity of a verified TLS client certificate, as the listener extracted it.
    pub cert_identity: Option<&'a str>,
    /// The peer uid of a Unix-socket connection.
    pub unix_uid: Option<u32>,
}

/// Which method accepted the client (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A JWT sent as password.
    Jwt,
    /// A username and password of `[[tenants.users]]`.
    Password,
    /// A TLS client certificate identity.
    Certificate,
    /// A Unix-socket peer uid.
    UnixUid,
    /// The HTTP hook said yes.
    Hook,
    /// The HTTP hook could not answer and the tenant fails open.
    HookFailOpen,
    /// No credentials needed: the tenant allows anonymous clients.
    Anonymous,
}

/// Why a client is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// The tenant a listener or SNI host name is bound to does not exist (any more).
    #[error("tenant {0:?} does not exist")]
    UnknownTenant(String),
    /// Nothing names a tenant for this client and there is no `default` tenant.
    #[error("no tenant for this client (use user@tenant)")]
    NoTenant,
    /// A password for a username the tenant does not have.
    #[error("unknown user")]
    UnknownUser,
    /// The wrong password.
    #[error("wrong password")]
    BadPassword,
    /// The password is a JWT the tenant's keys do not accept.
    #[error("token refused: {0}")]
    BadToken(JwtError),
    /// A valid JWT whose tenant claim names another tenant.
    #[error("token of tenant {0:?}")]
    TokenOfAnotherTenant(String),
    /// Credentials were presented but no method of the tenant applies to them.
    #[error("no authentication method of the tenant accepts these credentials")]
    NoMethod,
    /// No credentials and the tenant does not allow anonymous clients.
    #[error("anonymous clients are not allowed")]
    AnonymousNotAllowed,
    /// The HTTP hook said no.
    #[error("refused by the authentication hook")]
    HookDenied,
    /// The HTTP hook could not answer (timeout, error, garbage) and the tenant fails closed.
    #[error("authentication hook unavailable: {0}")]
    HookUnavailable(String),
}

impl DenyReason {
    /// The CONNACK reason code (v5; [`ReasonCode::to_v3_connack`] gives the 3.1.1 one).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DenyReason::NoTenant
            | DenyReason::UnknownUser
            | DenyReason::BadPassword
            | DenyReason::BadToken(_)
            | DenyReason::NoMethod
            | DenyReason::HookDenied => ReasonCode::BadUserNameOrPassword,
            DenyReason::UnknownTenant(_)
            | DenyReason::TokenOfAnotherTenant(_)
            | DenyReason::AnonymousNotAllowed => ReasonCode::NotAuthorized,
            // The client is not at fault: it should retry later, not give up.
            DenyReason::HookUnavailable(_) => ReasonCode::ServerUnavailable,
        }
    }

    /// Whether this failure counts towards the per-source brute-force limit: wrong
    /// credentials do; an unavailable hook or a missing tenant binding do not.
    pub fn is_credential_failure(&self) -> bool {
        !matches!(
            self,
            DenyReason::UnknownTenant(_) | DenyReason::HookUnavailable(_)
        )
    }
}

/// The outcome of authentication.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Connect the client.
    Allow {
        /// Its tenant (quotas, id for namespacing).
        tenant: Arc<Tenant>,
        /// Its username for ACL substitution (`%u`); `None` when anonymous.
        username: Option<String>,
        /// Its ACL.
        acl: Arc<Acl>,
        /// Unix second at which its credentials expire (a JWT's `exp`): the server then closes
        /// the connection (DISCONNECT 0xA0 in v5).
        expires_at: Option<u64>,
        /// The method that accepted it.
        method: AuthMethod,
    },
    /// Refuse the client with [`DenyReason::reason_code`].
    Deny(DenyReason),
    /// Ask the tenant's HTTP hook, then call [`crate::HookCache::complete`] (after
    /// [`crate::HookCache::lookup`] found no cached answer).
    AskHook(Box<HookRequest>),
}

impl Tenant {
    /// Authenticates `creds` at unix time `now` (see the module docs for the order). CPU-heavy
    /// when a password is checked.
    pub fn authenticate(self: &Arc<Self>, creds: &Credentials<'_>, now: u64) -> Decision {
        let allow = |username: Option<String>, acl, expires_at, method| Decision::Allow {
            tenant: Arc::clone(self),
            username,
            acl,
            expires_at,
            method,
        };
        let username = creds.username.filter(|u| !u.is_empty());
        let mut rejected = None;

        if let (Some(jwt), Some(token)) = (&self.jwt, creds.password.and_then(looks_like_jwt)) {
            match jwt.verify(token, now) {
                Ok(verified) => match verified.tenant {
                    Some(claimed) if claimed != self.id() => {
                        rejected = Some(DenyReason::TokenOfAnotherTenant(claimed));
                    }
                    _ => {
                        let acl = match verified.acl {
                            Some(rules) => Arc::new(Acl::layered(rules, Arc::clone(&self.acl))),
                            None => Arc::clone(&self.acl),
                        };
                        let name = verified.subject.or_else(|| username.map(str::to_owned));
                        return allow(name, acl, verified.expires_at, AuthMethod::Jwt);
                    }
                },
                Err(e) => rejected = Some(DenyReason::BadToken(e)),
            }
        }

        if rejected.is_none()
            && !self.users.is_empty()
            && let (Some(name), Some(password)) = (username, creds.password)
        {
            match self.users.get(name) {
                Some(hash) if verify_password(hash, password) => {
                    let acl = Arc::clone(&self.acl);
                    return allow(Some(name.to_owned()), acl, None, AuthMethod::Password);
                }
                Some(_) => rejected = Some(DenyReason::BadPassword),
                None => {
                    // Spend the time of a real check (same parameters as this tenant's
                    // hashes) so the answer time does not tell which usernames exist; the
                    // result is irrelevant.
                    if let Some(any) = self.users.values().next() {
                        let _ = verify_password(any, password);
                    }
                    rejected = Some(DenyReason::UnknownUser);
                }
            }
        }

        if rejected.is_none() {
            if let Some(identity) = creds.cert_identity.filter(|_| self.config.cert_identity) {
                let acl = Arc::clone(&self.acl);
                return allow(
                    Some(identity.to_owned()),
                    acl,
                    None,
                    AuthMethod::Certificate,
                );
            }
            if let Some(uid) = creds.unix_uid.filter(|u| self.config.unix_uids.contains(u)) {
                let name = username.map_or_else(|| uid.to_string(), str::to_owned);
                return allow(Some(name), Arc::clone(&self.acl), None, AuthMethod::UnixUid);
            }
        }

        let presented = username.is_some() || creds.password.is_some();
        if let Some(hook) = &self.config.http_auth
            && presented
        {
            return Decision::AskHook(Box::new(HookRequest::new(
                Arc::clone(self),
                hook,
                creds,
                rejected,
            )));
        }
        if let Some(reason) = rejected {
            return Decision::Deny(reason);
        }
        if self.config.allow_anonymous {
            return allow(None, Arc::clone(&self.acl), None, AuthMethod::Anonymous);
        }
        Decision::Deny(if presented {
            DenyReason::NoMethod
        } else {
            DenyReason::AnonymousNotAllowed
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::acl::{RuleAction, Subject};
    use crate::config::{AclRuleConfig, HttpAuthConfig, JwtConfig, TenantConfig, UserConfig};
    use crate::jwt::tests::{SECRET, hs_token};
    use serde_json::json;

    pub(crate) const NOW: u64 = 1_800_000_000;

    /// A tenant with one user (`phone1` / `pw`), a rule `devices/%u/#`, HS256 keys.
    pub(crate) fn acme() -> TenantConfig {
        TenantConfig {
            id: "acme".into(),
            users: vec![UserConfig {
                username: "phone1".into(),
                password_hash: crate::password::hash_with(b"pw", 64, 1, 1).unwrap(),
            }],
            acl: vec![AclRuleConfig {
                action: RuleAction::All,
                filter: "devices/%u/#".into(),
                allow: true,
            }],
            jwt: Some(JwtConfig {
                hs256_secret: Some(SECRET.into()),
                ..JwtConfig::default()
            }),
            ..TenantConfig::default()
        }
    }

    fn compile(config: TenantConfig) -> Arc<Tenant> {
        Arc::new(Tenant::compile(config).unwrap())
    }

    fn creds<'a>(username: Option<&'a str>, password: Option<&'a [u8]>) -> Credentials<'a> {
        Credentials {
            username,
            password,
            client_id: "cid",
            ..Credentials::default()
        }
    }

    fn allowed(d: &Decision) -> (Option<&str>, AuthMethod) {
        match d {
            Decision::Allow {
                username, method, ..
            } => (username.as_deref(), *method),
            other => panic!("expected Allow, got {other:?}"),
        }
    }

    fn denied(d: Decision) -> DenyReason {
        match d {
            Decision::Deny(reason) => reason,
            other => panic!("expected Deny, got {other:?}"),
        }
    }

    #[test]
    fn username_and_password() {
        let t = compile(acme());
        let ok = t.authenticate(&creds(Some("phone1"), Some(b"pw")), NOW);
        assert_eq!(allowed(&ok), (Some("phone1"), AuthMethod::Password));
        let wrong = denied(t.authenticate(&creds(Some("phone1"), Some(b"nope")), NOW));
        assert_eq!(wrong, DenyReason::BadPassword);
        assert_eq!(wrong.reason_code(), ReasonCode::BadUserNameOrPassword);
        assert!(wrong.is_credential_failure());
        let unknown = denied(t.authenticate(&creds(Some("ghost"), Some(b"pw")), NOW));
        assert_eq!(unknown, DenyReason::UnknownUser);
        assert_eq!(unknown.reason_code().to_v3_connack(), 4);
    }

    #[test]
    fn no_credentials_and_no_anonymous() {
        let t = compile(acme());
        let d = denied(t.authenticate(&creds(None, None), NOW));
        assert_eq!(d, DenyReason::AnonymousNotAllowed);
        assert_eq!(d.reason_code(), ReasonCode::NotAuthorized);
        // A username alone is not a credential for the users method.
        let d = denied(t.authenticate(&creds(Some("phone1"), None), NOW));
        assert_eq!(d, DenyReason::NoMethod);
    }

    #[test]
    fn anonymous_when_allowed_has_no_username() {
        let mut c = acme();
        c.allow_anonymous = true;
        let t = compile(c);
        let d = t.authenticate(&creds(Some("phone1"), None), NOW);
        assert_eq!(allowed(&d), (None, AuthMethod::Anonymous));
        // A wrong password is not downgraded to anonymous access.
        let d = denied(t.authenticate(&creds(Some("phone1"), Some(b"bad")), NOW));
        assert_eq!(d, DenyReason::BadPassword);
    }

    #[test]
    fn the_implicit_default_tenant_accepts_any_credentials() {
        let t = compile(TenantConfig::implicit_default());
        let d = t.authenticate(&creds(Some("u"), Some(b"whatever")), NOW);
        assert_eq!(allowed(&d), (None, AuthMethod::Anonymous));
    }

    #[test]
    fn jwt_as_password_with_sub_acl_and_expiry() {
        let t = compile(acme());
        let token = hs_token(&json!({
            "sub": "phone9", "tenant": "acme", "exp": NOW + 600,
            "acl": {"pub": ["extra/%u"]}
        }));
        let d = t.authenticate(&creds(Some("anything"), Some(token.as_bytes())), NOW);
        let Decision::Allow {
            username,
            acl,
            expires_at,
            method,
            tenant,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(tenant.id(), "acme");
        assert_eq!(method, AuthMethod::Jwt);
        assert_eq!(username.as_deref(), Some("phone9"));
        assert_eq!(expires_at, Some(NOW + 600));
        let who = Subject {
            username: username.as_deref(),
            client_id: "cid",
        };
        assert!(acl.check_publish(&who, "extra/phone9").is_allowed());
        assert!(acl.check_publish(&who, "devices/phone9/x").is_allowed());
        assert!(!acl.check_publish(&who, "devices/phone1/x").is_allowed());
    }

    #[test]
    fn jwt_without_sub_uses_the_mqtt_username() {
        let t = compile(acme());
        let token = hs_token(&json!({}));
        let d = t.authenticate(&creds(Some("dev"), Some(token.as_bytes())), NOW);
        assert_eq!(allowed(&d), (Some("dev"), AuthMethod::Jwt));
    }

    #[test]
    fn refused_tokens() {
        let t = compile(acme());
        let expired = hs_token(&json!({"exp": NOW - 1}));
        let d = denied(t.authenticate(&creds(None, Some(expired.as_bytes())), NOW));
        assert_eq!(d, DenyReason::BadToken(JwtError::Expired(NOW - 1)));
        assert_eq!(d.reason_code(), ReasonCode::BadUserNameOrPassword);
        let other = hs_token(&json!({"tenant": "globex"}));
        let d = denied(t.authenticate(&creds(None, Some(other.as_bytes())), NOW));
        assert_eq!(d, DenyReason::TokenOfAnotherTenant("globex".into()));
        assert_eq!(d.reason_code(), ReasonCode::NotAuthorized);
    }

    #[test]
    fn certificate_identity_and_unix_uid() {
        let mut c = acme();
        c.cert_identity = true;
        c.unix_uids = vec![1000];
        let t = compile(c);
        let cert = Credentials {
            cert_identity: Some("device-7"),
            ..creds(None, None)
        };
        assert_eq!(
            allowed(&t.authenticate(&cert, NOW)),
            (Some("device-7"), AuthMethod::Certificate)
        );
        // A wrong password is not rescued by the certificate.
        let cert_bad_pw = Credentials {
            cert_identity: Some("device-7"),
            ..creds(Some("phone1"), Some(b"bad"))
        };
        assert_eq!(
            denied(t.authenticate(&cert_bad_pw, NOW)),
            DenyReason::BadPassword
        );
        let uid = Credentials {
            unix_uid: Some(1000),
            ..creds(None, None)
        };
        assert_eq!(
            allowed(&t.authenticate(&uid, NOW)),
            (Some("1000"), AuthMethod::UnixUid)
        );
        let uid_named = Credentials {
            unix_uid: Some(1000),
            ..creds(Some("svc"), None)
        };
        assert_eq!(allowed(&t.authenticate(&uid_named, NOW)).0, Some("svc"));
        let other_uid = Credentials {
            unix_uid: Some(1001),
            ..creds(None, None)
        };
        assert_eq!(
            denied(t.authenticate(&other_uid, NOW)),
            DenyReason::AnonymousNotAllowed
        );
        // Without cert_identity = true, a certificate is not enough.
        let plain = compile(acme());
        assert!(matches!(plain.authenticate(&cert, NOW), Decision::Deny(_)));
    }

    #[test]
    fn the_hook_is_asked_last_and_may_overturn_a_rejection() {
        let mut c = acme();
        c.http_auth = Some(HttpAuthConfig {
            url: "http://127.0.0.1:9/auth".into(),
            ..HttpAuthConfig::default()
        });
        c.allow_anonymous = true;
        let t = compile(c);
        let Decision::AskHook(req) = t.authenticate(&creds(Some("ext"), Some(b"x")), NOW) else {
            panic!("hook expected")
        };
        assert_eq!(req.username.as_deref(), Some("ext"));
        assert_eq!(req.prior, Some(DenyReason::UnknownUser));
        // Local acceptance does not ask the hook.
        let d = t.authenticate(&creds(Some("phone1"), Some(b"pw")), NOW);
        assert_eq!(allowed(&d).1, AuthMethod::Password);
        // No credentials at all: anonymous, no hook.
        assert_eq!(
            allowed(&t.authenticate(&creds(None, None), NOW)).1,
            AuthMethod::Anonymous
        );
    }

    #[test]
    fn deny_reasons_map_to_mqtt_codes() {
        assert_eq!(
            DenyReason::HookUnavailable("timeout".into()).reason_code(),
            ReasonCode::ServerUnavailable
        );
        assert!(!DenyReason::HookUnavailable("t".into()).is_credential_failure());
        assert!(!DenyReason::UnknownTenant("x".into()).is_credential_failure());
        assert!(DenyReason::NoTenant.is_credential_failure());
        assert_eq!(DenyReason::NoTenant.reason_code().to_v3_connack(), 4);
        assert_eq!(
            DenyReason::AnonymousNotAllowed
                .reason_code()
                .to_v3_connack(),
            5
        );
    }
}
