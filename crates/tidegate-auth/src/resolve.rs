//! Which tenant a connecting client belongs to, and the whole CONNECT check (resolution, then
//! authentication in that tenant).
//!
//! Place in the data flow: the server builds a [`ConnectAttempt`] from the CONNECT packet and
//! the connection's `ConnectionInfo` (listener, SNI host name, certificate identity, peer uid)
//! and calls [`Tenants::authenticate`] on a blocking thread (argon2, see
//! [`crate::authenticate`]).
//!
//! # Order of precedence
//! 1. The listener's tenant (`tenant = "..."` on a `[[listeners]]` entry). A username ending in
//!    `@` + that tenant's id loses the suffix; any other `@` is part of the username.
//! 2. The TLS SNI host name, through the tenants' `sni_hosts` (an unknown host name falls
//!    through: it usually just names the gateway).
//! 3. A username `user@tenant`, split on the **last** `@` (so `ann@example.com@acme` is user
//!    `ann@example.com` of `acme`); when the part after it is no tenant, the whole username is
//!    kept and resolution goes on.
//! 4. The tenant claim of a JWT sent as password (read unverified, for routing only: that
//!    tenant's keys then verify the token, and the claim again).
//! 5. The `default` tenant, if there is one; otherwise the client is refused (0x86).

use crate::authenticate::{Credentials, Decision, DenyReason};
use crate::jwt::{looks_like_jwt, peek_claim};
use crate::tenant::{Tenant, Tenants};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Everything known about a client when its CONNECT arrives.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectAttempt<'a> {
    /// The tenant the listener is bound to.
    pub listener_tenant: Option<&'a str>,
    /// The TLS SNI host name the client asked for.
    pub sni_host: Option<&'a str>,
    /// The CONNECT username, as sent.
    pub username: Option<&'a str>,
    /// The CONNECT password.
    pub password: Option<&'a [u8]>,
    /// The client id (as sent, or as assigned by the server).
    pub client_id: &'a str,
    /// The identity of a verified TLS client certificate.
    pub cert_identity: Option<&'a str>,
    /// The peer uid of a Unix-socket connection.
    pub unix_uid: Option<u32>,
}

/// What routed the client to its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedBy {
    /// The listener's `tenant`.
    Listener,
    /// The TLS SNI host name.
    Sni,
    /// `user@tenant`.
    Username,
    /// A JWT's tenant claim.
    TokenClaim,
    /// Nothing: the `default` tenant.
    Default,
}

/// The client's tenant and its username within it.
#[derive(Debug, Clone)]
pub struct Resolution<'a> {
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// The username without `@tenant`; `None` when absent or empty.
    pub username: Option<&'a str>,
    /// What routed it.
    pub by: ResolvedBy,
}

impl Tenants {
    /// Finds the client's tenant (see the module docs for the order).
    pub fn resolve<'a>(&self, attempt: &ConnectAttempt<'a>) -> Result<Resolution<'a>, DenyReason> {
        let found = |tenant: &Arc<Tenant>, by| {
            Ok(Resolution {
                username: strip_tenant(attempt.username, tenant.id()),
                tenant: Arc::clone(tenant),
                by,
            })
        };
        if let Some(id) = attempt.listener_tenant {
            return match self.get(id) {
                Some(tenant) => found(tenant, ResolvedBy::Listener),
                None => Err(DenyReason::UnknownTenant(id.to_owned())),
            };
        }
        if let Some(tenant) = attempt.sni_host.and_then(|host| self.by_sni(host)) {
            return found(tenant, ResolvedBy::Sni);
        }
        if let Some((_, id)) = attempt.username.and_then(|u| u.rsplit_once('@'))
            && let Some(tenant) = self.get(id)
        {
            return found(tenant, ResolvedBy::Username);
        }
        if let Some(tenant) = self.by_token_claim(attempt.password) {
            return found(tenant, ResolvedBy::TokenClaim);
        }
        match self.fallback() {
            Some(tenant) => found(tenant, ResolvedBy::Default),
            None => Err(DenyReason::NoTenant),
        }
    }

    /// Resolves the tenant and authenticates the client in it, at unix time `now`. CPU-heavy
    /// (argon2): call it from a blocking thread.
    pub fn authenticate(&self, attempt: &ConnectAttempt<'_>, now: u64) -> Decision {
        let resolution = match self.resolve(attempt) {
            Ok(resolution) => resolution,
            Err(reason) => return Decision::Deny(reason),
        };
        let creds = Credentials {
            username: resolution.username,
            password: attempt.password,
            client_id: attempt.client_id,
            cert_identity: attempt.cert_identity,
            unix_uid: attempt.unix_uid,
        };
        resolution.tenant.authenticate(&creds, now)
    }

    /// The tenant a JWT password names in the tenant claim of that very tenant's configuration
    /// (tenants may name the claim differently).
    fn by_token_claim(&self, password: Option<&[u8]>) -> Option<&Arc<Tenant>> {
        let token = password.and_then(looks_like_jwt)?;
        let claims: BTreeSet<&str> = self
            .iter()
            .filter_map(|t| t.jwt.as_ref().map(|j| j.tenant_claim()))
            .collect();
        claims.into_iter().find_map(|claim| {
            let id = peek_claim(token, claim)?;
            self.get(&id)
                .filter(|t| t.jwt.as_ref().is_some_and(|j| j.tenant_claim() == claim))
        })
    }
}

/// The username without a final `@tenant_id`; empty becomes `None`.
fn strip_tenant<'a>(username: Option<&'a str>, tenant_id: &str) -> Option<&'a str> {
    let username = username?;
    let user = match username.rsplit_once('@') {
        Some((user, id)) if id == tenant_id => user,
        _ => username,
    };
    (!user.is_empty()).then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authenticate::AuthMethod;
    use crate::authenticate::tests::{NOW, acme};
    use crate::config::{JwtConfig, TenantConfig};
    use crate::jwt::tests::{SECRET, hs_token};
    use serde_json::json;

    fn set(configs: &[TenantConfig]) -> Tenants {
        Tenants::from_configs(configs).unwrap()
    }

    fn plain(id: &str) -> TenantConfig {
        TenantConfig {
            id: id.into(),
            allow_anonymous: true,
            ..TenantConfig::default()
        }
    }

    fn resolve<'a>(
        tenants: &Tenants,
        attempt: ConnectAttempt<'a>,
    ) -> (String, Option<&'a str>, ResolvedBy) {
        let r = tenants.resolve(&attempt).unwrap();
        (r.tenant.id().to_owned(), r.username, r.by)
    }

    #[test]
    fn the_listener_tenant_comes_first() {
        let mut open = plain("open");
        open.sni_hosts = vec!["open.example".into()];
        let tenants = set(&[open, acme()]);
        let attempt = ConnectAttempt {
            listener_tenant: Some("acme"),
            sni_host: Some("open.example"),
            username: Some("phone1@open"),
            ..ConnectAttempt::default()
        };
        assert_eq!(
            resolve(&tenants, attempt),
            ("acme".into(), Some("phone1@open"), ResolvedBy::Listener)
        );
        let own_suffix = ConnectAttempt {
            listener_tenant: Some("acme"),
            username: Some("phone1@acme"),
            ..ConnectAttempt::default()
        };
        assert_eq!(resolve(&tenants, own_suffix).1, Some("phone1"));
        let gone = ConnectAttempt {
            listener_tenant: Some("deleted"),
            ..ConnectAttempt::default()
        };
        let err = tenants.resolve(&gone).unwrap_err();
        assert_eq!(err, DenyReason::UnknownTenant("deleted".into()));
    }

    #[test]
    fn sni_then_username_suffix() {
        let mut open = plain("open");
        open.sni_hosts = vec!["open.example".into()];
        let tenants = set(&[open, acme()]);
        let by_sni = ConnectAttempt {
            sni_host: Some("open.example"),
            username: Some("phone1@acme"),
            ..ConnectAttempt::default()
        };
        assert_eq!(
            resolve(&tenants, by_sni),
            ("open".into(), Some("phone1@acme"), ResolvedBy::Sni)
        );
        let unknown_sni = ConnectAttempt {
            sni_host: Some("gateway.example"),
            username: Some("ann@example.com@acme"),
            ..ConnectAttempt::default()
        };
        assert_eq!(
            resolve(&tenants, unknown_sni),
            ("acme".into(), Some("ann@example.com"), ResolvedBy::Username)
        );
    }

    #[test]
    fn a_suffix_that_is_no_tenant_goes_to_the_default_tenant_whole() {
        let tenants = set(&[plain("default"), acme()]);
        let attempt = ConnectAttempt {
            username: Some("bob@example.com"),
            ..ConnectAttempt::default()
        };
        assert_eq!(
            resolve(&tenants, attempt),
            (
                "default".into(),
                Some("bob@example.com"),
                ResolvedBy::Default
            )
        );
        let empty_user = ConnectAttempt {
            username: Some("@acme"),
            ..ConnectAttempt::default()
        };
        assert_eq!(resolve(&tenants, empty_user).1, None);
    }

    #[test]
    fn without_a_default_tenant_unrouted_clients_are_refused() {
        let tenants = set(&[acme()]);
        let attempt = ConnectAttempt {
            username: Some("phone1"),
            password: Some(b"pw"),
            ..ConnectAttempt::default()
        };
        assert_eq!(tenants.resolve(&attempt).unwrap_err(), DenyReason::NoTenant);
        let Decision::Deny(reason) = tenants.authenticate(&attempt, NOW) else {
            panic!("deny expected")
        };
        assert_eq!(reason, DenyReason::NoTenant);
    }

    #[test]
    fn the_token_claim_routes_with_each_tenants_claim_name() {
        let mut globex = plain("globex");
        globex.jwt = Some(JwtConfig {
            hs256_secret: Some(SECRET.into()),
            tenant_claim: "org".into(),
            ..JwtConfig::default()
        });
        let tenants = set(&[acme(), globex]);
        let token = hs_token(&json!({"tenant": "acme", "sub": "t1"}));
        let attempt = ConnectAttempt {
            username: Some("x"),
            password: Some(token.as_bytes()),
            ..ConnectAttempt::default()
        };
        assert_eq!(resolve(&tenants, attempt).0, "acme");
        assert_eq!(resolve(&tenants, attempt).2, ResolvedBy::TokenClaim);
        let org = hs_token(&json!({"org": "globex"}));
        let attempt = ConnectAttempt {
            password: Some(org.as_bytes()),
            ..ConnectAttempt::default()
        };
        assert_eq!(resolve(&tenants, attempt).0, "globex");
        // "tenant": "globex" is not globex's claim name: no routing by it.
        let misnamed = hs_token(&json!({"tenant": "globex"}));
        let attempt = ConnectAttempt {
            password: Some(misnamed.as_bytes()),
            ..ConnectAttempt::default()
        };
        assert_eq!(tenants.resolve(&attempt).unwrap_err(), DenyReason::NoTenant);
    }

    #[test]
    fn end_to_end_user_at_tenant_with_a_password() {
        let tenants = set(&[plain("default"), acme()]);
        let attempt = ConnectAttempt {
            username: Some("phone1@acme"),
            password: Some(b"pw"),
            client_id: "c1",
            ..ConnectAttempt::default()
        };
        let Decision::Allow {
            tenant,
            username,
            method,
            ..
        } = tenants.authenticate(&attempt, NOW)
        else {
            panic!("allow expected")
        };
        assert_eq!(tenant.id(), "acme");
        assert_eq!(username.as_deref(), Some("phone1"));
        assert_eq!(method, AuthMethod::Password);
        // The same credentials without the suffix land in `default`, which has no users and
        // allows anonymous clients: no username for ACLs there.
        let attempt = ConnectAttempt {
            username: Some("phone1"),
            ..attempt
        };
        let Decision::Allow {
            tenant, username, ..
        } = tenants.authenticate(&attempt, NOW)
        else {
            panic!("allow expected")
        };
        assert_eq!(tenant.id(), "default");
        assert_eq!(username, None);
    }

    #[test]
    fn a_token_routed_to_one_tenant_cannot_be_signed_for_another() {
        // Both tenants trust a JWT, with different secrets; a token claiming acme but signed
        // with globex's secret is refused by acme's keys.
        let mut globex = plain("globex");
        let globex_secret = "globex-secret-globex-secret-globex!!";
        globex.jwt = Some(JwtConfig {
            hs256_secret: Some(globex_secret.into()),
            ..JwtConfig::default()
        });
        let tenants = set(&[acme(), globex]);
        let key = jsonwebtoken::EncodingKey::from_secret(globex_secret.as_bytes());
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"tenant": "acme"}),
            &key,
        )
        .unwrap();
        let attempt = ConnectAttempt {
            password: Some(forged.as_bytes()),
            ..ConnectAttempt::default()
        };
        assert!(matches!(
            tenants.authenticate(&attempt, NOW),
            Decision::Deny(DenyReason::BadToken(_))
        ));
    }
}
