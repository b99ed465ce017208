//! Validation of `[[tenants]]`: every problem is reported with the key that holds it
//! (`tenants[acme].users[1].password_hash: ...`), before anything is compiled.
//!
//! Place in the data flow: called by [`crate::Tenants::from_configs`] (so a server cannot start,
//! nor the admin API store, a tenant that would misbehave later) and by anyone who wants the
//! check alone (`tidegate check-config`, the admin API before a write). Pure: key files are
//! read only when compiling.

use super::{HttpAuthConfig, JwtConfig, Quotas, TenantConfig};
use crate::acl::AclRule;
use crate::password::parse_phc;
use jsonwebtoken::DecodingKey;
use std::collections::HashSet;
use std::path::PathBuf;

/// Longest tenant id.
const MAX_ID_LEN: usize = 64;

/// Why the tenant configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key has a bad value.
    #[error("{key}: {reason}")]
    Invalid {
        /// Where, e.g. `tenants[acme].jwt.hs256_secret`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Two tenants share an id.
    #[error("tenants: the id {0:?} is declared more than once")]
    DuplicateTenant(String),
    /// A file named by the configuration cannot be read.
    #[error("{key}: cannot read {path}: {source}")]
    ReadFile {
        /// Where the path is configured.
        key: String,
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Checks every tenant and what they must not share (ids, SNI host names).
pub fn validate_tenants(tenants: &[TenantConfig]) -> Result<(), ConfigError> {
    for (index, tenant) in tenants.iter().enumerate() {
        validate_tenant_at(tenant, &format!("tenants[{index}]"))?;
    }
    check_distinct(tenants.iter())
}

/// What tenants, each valid on its own, must not share: ids and SNI host names.
pub(crate) fn check_distinct<'a>(
    tenants: impl Iterator<Item = &'a TenantConfig>,
) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    let mut hosts = HashSet::new();
    for tenant in tenants {
        if !ids.insert(tenant.id.as_str()) {
            return Err(ConfigError::DuplicateTenant(tenant.id.clone()));
        }
        for host in &tenant.sni_hosts {
            if !hosts.insert(host.to_ascii_lowercase()) {
                return Err(ConfigError::invalid(
                    format!("tenants[{}].sni_hosts", tenant.id),
                    format!("{host:?} is already routed to another tenant"),
                ));
            }
        }
    }
    Ok(())
}

impl TenantConfig {
    /// Checks this tenant alone (what [`validate_tenants`] does for each).
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_tenant_at(self, "tenant")
    }
}

fn validate_tenant_at(t: &TenantConfig, fallback_key: &str) -> Result<(), ConfigError> {
    validate_id(&t.id)
        .map_err(|reason| ConfigError::invalid(format!("{fallback_key}.id"), reason))?;
    let key = format!("tenants[{}]", t.id);
    for (i, host) in t.sni_hosts.iter().enumerate() {
        validate_host(host)
            .map_err(|reason| ConfigError::invalid(format!("{key}.sni_hosts[{i}]"), reason))?;
    }
    let mut usernames = HashSet::new();
    for (i, user) in t.users.iter().enumerate() {
        let at = format!("{key}.users[{i}]");
        if user.username.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.username"),
                "must not be empty",
            ));
        }
        if !usernames.insert(user.username.as_str()) {
            return Err(ConfigError::invalid(
                format!("{at}.username"),
                format!("{:?} is declared more than once", user.username),
            ));
        }
        parse_phc(&user.password_hash)
            .map_err(|e| ConfigError::invalid(format!("{at}.password_hash"), e.to_string()))?;
    }
    for (i, rule) in t.acl.iter().enumerate() {
        AclRule::new(rule.action, &rule.filter, rule.allow)
            .map_err(|e| ConfigError::invalid(format!("{key}.acl[{i}].filter"), e.to_string()))?;
    }
    validate_quotas(&t.quotas, &format!("{key}.quotas"))?;
    if let Some(jwt) = &t.jwt {
        validate_jwt(jwt, &format!("{key}.jwt"))?;
    }
    if let Some(hook) = &t.http_auth {
        validate_hook(hook, &format!("{key}.http_auth"))?;
    }
    Ok(())
}

fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("a tenant needs an id".into());
    }
    if id.contains('@') {
        return Err(format!(
            "{id:?} must not contain '@' (it separates user and tenant in `user@tenant`)"
        ));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("{id:?} is longer than {MAX_ID_LEN} characters"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{id:?}: use ASCII letters, digits, '-', '_' and '.' only (ids appear in usernames, \
             metric labels and store keys)"
        ));
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a host name (letters, digits and '-' in dot-separated labels; \
             `*.` may start it)"
        ));
    }
    Ok(())
}

fn validate_quotas(q: &Quotas, key: &str) -> Result<(), ConfigError> {
    let rates = [
        (
            "max_inbound_messages_per_sec",
            q.max_inbound_messages_per_sec.map(u64::from),
        ),
        ("max_inbound_bytes_per_sec", q.max_inbound_bytes_per_sec),
        (
            "tenant_messages_per_sec",
            q.tenant_messages_per_sec.map(u64::from),
        ),
        ("tenant_bytes_per_sec", q.tenant_bytes_per_sec),
    ];
    for (name, value) in rates {
        if value == Some(0) {
            return Err(ConfigError::invalid(
                format!("{key}.{name}"),
                "must be at least 1; leave it out for no limit",
            ));
        }
    }
    if q.max_packet_size.is_some_and(|size| size < 2) {
        return Err(ConfigError::invalid(
            format!("{key}.max_packet_size"),
            "must be at least 2 (the smallest MQTT packet)",
        ));
    }
    Ok(())
}

fn validate_jwt(jwt: &JwtConfig, key: &str) -> Result<(), ConfigError> {
    if jwt.hs256_secret.is_none()
        && jwt.rs256_public_key.is_none()
        && jwt.es256_public_key.is_none()
        && jwt.jwks_file.is_none()
    {
        return Err(ConfigError::invalid(
            key,
            "give hs256_secret, rs256_public_key, es256_public_key or jwks_file",
        ));
    }
    if let Some(secret) = &jwt.hs256_secret {
        if secret.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.hs256_secret"),
                "must not be empty",
            ));
        }
        if secret.len() < 32 {
            return Err(ConfigError::invalid(
                format!("{key}.hs256_secret"),
                "must be at least 32 bytes (RFC 7518 section 3.2)",
            ));
        }
    }
    if let Some(pem) = &jwt.rs256_public_key {
        check_pem(
            pem,
            DecodingKey::from_rsa_pem,
            &format!("{key}.rs256_public_key"),
        )?;
    }
    if let Some(pem) = &jwt.es256_public_key {
        check_pem(
            pem,
            DecodingKey::from_ec_pem,
            &format!("{key}.es256_public_key"),
        )?;
    }
    if jwt
        .jwks_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(ConfigError::invalid(
            format!("{key}.jwks_file"),
            "must not be empty",
        ));
    }
    for (name, value) in [
        ("tenant_claim", &jwt.tenant_claim),
        ("acl_claim", &jwt.acl_claim),
    ] {
        if value.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.{name}"),
                "must not be empty",
            ));
        }
    }
    if jwt.tenant_claim == jwt.acl_claim {
        return Err(ConfigError::invalid(
            format!("{key}.acl_claim"),
            "must differ from tenant_claim",
        ));
    }
    for (name, value) in [("audience", &jwt.audience), ("issuer", &jwt.issuer)] {
        if value.as_ref().is_some_and(String::is_empty) {
            return Err(ConfigError::invalid(
                format!("{key}.{name}"),
                "must not be empty; leave it out to accept any",
            ));
        }
    }
    Ok(())
}

fn check_pem(
    pem: &str,
    parse: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
    key: &str,
) -> Result<(), ConfigError> {
    if !pem.trim_start().starts_with("-----BEGIN") {
        return Err(ConfigError::invalid(
            key,
            "must be the PEM text of the public key (-----BEGIN PUBLIC KEY----- ...), not a file \
             path",
        ));
    }
    parse(pem.as_bytes())
        .map(drop)
        .map_err(|e| ConfigError::invalid(key, format!("not a usable public key: {e}")))
}

fn validate_hook(hook: &HttpAuthConfig, key: &str) -> Result<(), ConfigError> {
    let rest = hook
        .url
        .strip_prefix("http://")
        .or_else(|| hook.url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                format!(
                    "{:?} is not an http:// or https:// URL with a host",
                    hook.url
                ),
            ));
        }
    }
    if hook.timeout_ms == 0 {
        return Err(ConfigError::invalid(
            format!("{key}.timeout_ms"),
            "must be at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::RuleAction;
    use crate::config::{AclRuleConfig, UserConfig};

    fn tenant(id: &str) -> TenantConfig {
        TenantConfig {
            id: id.to_owned(),
            ..TenantConfig::default()
        }
    }

    fn message(result: Result<(), ConfigError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn ids_are_checked() {
        assert!(message(validate_tenants(&[tenant("")])).contains("tenants[0].id"));
        let at = message(validate_tenants(&[tenant("ok"), tenant("a@b")]));
        assert!(at.contains("tenants[1].id") && at.contains("'@'"), "{at}");
        assert!(message(validate_tenants(&[tenant("a/b")])).contains("ASCII letters"));
        assert!(message(validate_tenants(&[tenant(&"x".repeat(65))])).contains("longer"));
        let dup = message(validate_tenants(&[tenant("a"), tenant("b"), tenant("a")]));
        assert!(dup.contains("\"a\" is declared more than once"), "{dup}");
        validate_tenants(&[tenant("acme-1.eu_west")]).unwrap();
    }

    #[test]
    fn password_hashes_must_be_argon2_phc_strings() {
        let mut t = tenant("acme");
        t.users.push(UserConfig {
            username: "phone1".into(),
            password_hash: "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".into(),
        });
        let m = message(t.validate());
        assert!(m.contains("tenants[acme].users[0].password_hash"), "{m}");
        t.users[0].password_hash = "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E".into();
        assert!(message(t.validate()).contains("unknown hash format"));
    }

    #[test]
    fn usernames_must_be_unique_and_present() {
        let phc = crate::password::hash_with(b"pw", 64, 1, 1).unwrap();
        let user = |name: &str| UserConfig {
            username: name.into(),
            password_hash: phc.clone(),
        };
        let mut t = tenant("acme");
        t.users = vec![user("a"), user("a")];
        assert!(message(t.validate()).contains("users[1].username"));
        t.users = vec![user("")];
        assert!(message(t.validate()).contains("must not be empty"));
        t.users = vec![user("a"), user("b")];
        t.validate().unwrap();
    }

    #[test]
    fn acl_filters_are_checked() {
        let mut t = tenant("acme");
        t.acl.push(AclRuleConfig {
            action: RuleAction::All,
            filter: "a/#/b".into(),
            allow: true,
        });
        let m = message(t.validate());
        assert!(m.contains("tenants[acme].acl[0].filter"), "{m}");
        t.acl[0].filter = "$share/g/a".into();
        assert!(message(t.validate()).contains("$share"));
    }

    #[test]
    fn jwt_settings_are_checked() {
        let mut t = tenant("acme");
        t.jwt = Some(JwtConfig::default());
        assert!(message(t.validate()).contains("give hs256_secret"));
        t.jwt = Some(JwtConfig {
            hs256_secret: Some(String::new()),
            ..JwtConfig::default()
        });
        assert!(message(t.validate()).contains("jwt.hs256_secret: must not be empty"));
        t.jwt = Some(JwtConfig {
            hs256_secret: Some("short".into()),
            ..JwtConfig::default()
        });
        assert!(message(t.validate()).contains("at least 32 bytes"));
        t.jwt = Some(JwtConfig {
            rs256_public_key: Some("/etc/keys/pub.pem".into()),
            ..JwtConfig::default()
        });
        assert!(message(t.validate()).contains("not a file path"));
        t.jwt = Some(JwtConfig {
            es256_public_key: Some(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
            ),
            ..JwtConfig::default()
        });
        assert!(message(t.validate()).contains("es256_public_key: not a usable public key"));
        t.jwt = Some(JwtConfig {
            jwks_file: Some("keys.json".into()),
            acl_claim: "tenant".into(),
            ..JwtConfig::default()
        });
        assert!(message(t.validate()).contains("must differ"));
        t.jwt = Some(JwtConfig {
            jwks_file: Some("keys.json".into()),
            issuer: Some(String::new()),
            ..JwtConfig::default()
        });
        assert!(message(t.validate()).contains("jwt.issuer"));
    }

    #[test]
    fn hook_settings_are_checked() {
        let mut t = tenant("acme");
        t.http_auth = Some(HttpAuthConfig::default());
        assert!(message(t.validate()).contains("http_auth.url"));
        t.http_auth = Some(HttpAuthConfig {
            url: "ftp://x/".into(),
            ..HttpAuthConfig::default()
        });
        assert!(message(t.validate()).contains("http_auth.url"));
        t.http_auth = Some(HttpAuthConfig {
            url: "http://127.0.0.1:9000/auth".into(),
            timeout_ms: 0,
            ..HttpAuthConfig::default()
        });
        assert!(message(t.validate()).contains("timeout_ms"));
    }

    #[test]
    fn quotas_and_hosts_are_checked() {
        let mut t = tenant("acme");
        t.quotas.max_inbound_bytes_per_sec = Some(0);
        assert!(message(t.validate()).contains("quotas.max_inbound_bytes_per_sec"));
        t.quotas = Quotas {
            max_packet_size: Some(1),
            max_connections: Some(0),
            ..Quotas::default()
        };
        assert!(message(t.validate()).contains("max_packet_size"));
        t.quotas = Quotas::default();
        t.sni_hosts = vec!["acme.example.com".into(), "bad host".into()];
        assert!(message(t.validate()).contains("sni_hosts[1]"));
        t.sni_hosts = vec!["*.acme.example.com".into()];
        t.validate().unwrap();
        let mut other = tenant("other");
        other.sni_hosts = vec!["*.ACME.example.com".into()];
        let m = message(validate_tenants(&[t, other]));
        assert!(m.contains("tenants[other].sni_hosts"), "{m}");
    }
}
