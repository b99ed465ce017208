//! `[[tenants]]`: the TOML model of tenants, their users, ACL rules, quotas and authentication
//! methods.
//!
//! Place in the data flow: `tidegate-server` deserializes `tenants: Vec<TenantConfig>` from its
//! file (or the admin API from a request body), then [`crate::Tenants::from_configs`] validates
//! ([`validate_tenants`]) and compiles them; the compiled [`crate::Tenant`] keeps its
//! `TenantConfig` for `show`. These keys are a contract with users: add, never rename.
//!
//! ```toml
//! [[tenants]]
//! id = "acme"
//! allow_anonymous = false              # default
//! sni_hosts = ["acme.example.com", "*.acme.example.com"]
//! unix_uids = [1000]
//! cert_identity = true                 # a verified TLS client certificate authenticates
//! default_acl = "deny"                 # default: "deny" when rules exist, else "allow"
//! [[tenants.users]]
//! username = "phone1"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! [[tenants.acl]]
//! action = "all"                       # publish | subscribe | all
//! filter = "devices/%u/#"
//! allow = true
//! [tenants.quotas]
//! max_connections = 1000
//! [tenants.jwt]
//! hs256_secret = "at least 32 bytes of secret ......"
//! [tenants.http_auth]
//! url = "https://auth.acme.example/mqtt"
//! ```
//!
//! Without any `[[tenants]]` everything runs in one tenant, [`TenantConfig::implicit_default`]:
//! id `default`, anonymous clients allowed, no rules, everything allowed.

mod validate;

pub(crate) use validate::check_distinct;
pub use validate::{ConfigError, validate_tenants};

use crate::acl::{Permission, RuleAction};
use crate::ratelimit::TokenBucket;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Id of the tenant used when no `[[tenants]]` is declared, and of the tenant clients land in
/// when nothing else names one (if it is declared).
pub const DEFAULT_TENANT_ID: &str = "default";

/// One `[[tenants]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant id: ASCII letters, digits, `-`, `_` and `.` (it appears in `user@tenant`
    /// usernames, metric labels and store keys), 1 to 64 characters.
    pub id: String,
    /// Whether clients that no method authenticates may connect (as anonymous). Default false.
    pub allow_anonymous: bool,
    /// TLS SNI host names routed to this tenant; `*.example.com` matches one label.
    pub sni_hosts: Vec<String>,
    /// Username / password pairs (`[[tenants.users]]`).
    pub users: Vec<UserConfig>,
    /// ACL rules (`[[tenants.acl]]`), evaluated in order; the first match decides.
    pub acl: Vec<AclRuleConfig>,
    /// What decides when no rule matches. When absent: `deny` if the tenant has rules, `allow`
    /// if it has none, as Mosquitto does with and without an `acl_file`. Writing rules means
    /// listing what is allowed (safe); a tenant without rules owns its whole, isolated topic
    /// space (usable). EMQX's `allow` for unmatched requests would silently open everything
    /// the rules forgot.
    pub default_acl: Option<Permission>,
    /// Limits (`[tenants.quotas]`).
    pub quotas: Quotas,
    /// JWT verification (`[tenants.jwt]`).
    pub jwt: Option<JwtConfig>,
    /// The HTTP authentication hook (`[tenants.http_auth]`).
    pub http_auth: Option<HttpAuthConfig>,
    /// Unix-socket peers with one of these uids are authenticated.
    pub unix_uids: Vec<u32>,
    /// Whether the identity of a verified TLS client certificate (as the listener extracts
    /// it) authenticates the client; the identity becomes its username for ACLs.
    pub cert_identity: bool,
}

impl TenantConfig {
    /// The tenant of a configuration without `[[tenants]]`: `default`, anonymous allowed,
    /// everything allowed.
    pub fn implicit_default() -> TenantConfig {
        TenantConfig {
            id: DEFAULT_TENANT_ID.to_owned(),
            allow_anonymous: true,
            default_acl: Some(Permission::Allow),
            ..TenantConfig::default()
        }
    }

    /// The permission when no rule matches (see [`TenantConfig::default_acl`]).
    pub fn effective_default_acl(&self) -> Permission {
        self.default_acl.unwrap_or(if self.acl.is_empty() {
            Permission::Allow
        } else {
            Permission::Deny
        })
    }
}

/// One `[[tenants.users]]` entry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The username, without `@tenant`.
    pub username: String,
    /// An argon2 PHC string, as `tidegate passwd` prints it.
    pub password_hash: String,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash can be attacked offline: keep it out of logs.
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// One `[[tenants.acl]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRuleConfig {
    /// `publish`, `subscribe` or `all`.
    pub action: RuleAction,
    /// A topic filter; `%u` is the username, `%c` the client id.
    pub filter: String,
    /// Whether a match allows (true) or denies.
    pub allow: bool,
}

/// `[tenants.quotas]`: every key optional, absent = unlimited. Rates are per second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Connections of the tenant at once (CONNACK 0x97 beyond).
    pub max_connections: Option<u32>,
    /// Sessions (online or persistent) of the tenant (CONNACK 0x97 beyond).
    pub max_sessions: Option<u32>,
    /// Subscriptions per client (SUBACK 0x97 beyond).
    pub max_subscriptions_per_client: Option<u32>,
    /// Retained messages of the tenant.
    pub max_retained_messages: Option<u64>,
    /// Bytes of retained payloads of the tenant.
    pub max_retained_bytes: Option<u64>,
    /// Messages queued per offline session.
    pub max_queued_messages: Option<u32>,
    /// Inbound PUBLISH per second, per client (0x96 beyond).
    pub max_inbound_messages_per_sec: Option<u32>,
    /// Inbound bytes per second, per client (the reader slows down beyond).
    pub max_inbound_bytes_per_sec: Option<u64>,
    /// Inbound PUBLISH per second, whole tenant.
    pub tenant_messages_per_sec: Option<u32>,
    /// Inbound bytes per second, whole tenant.
    pub tenant_bytes_per_sec: Option<u64>,
    /// Largest packet a client of the tenant may send, bytes.
    pub max_packet_size: Option<u32>,
}

impl Quotas {
    /// The per-client message bucket, if limited. Each bucket holds one second's worth
    /// (burst = rate): short bursts pass, a sustained excess does not.
    pub fn client_message_bucket(&self, now: Instant) -> Option<TokenBucket> {
        let rate = u64::from(self.max_inbound_messages_per_sec?);
        Some(TokenBucket::new(rate, rate, now))
    }

    /// The per-client byte bucket, if limited.
    pub fn client_byte_bucket(&self, now: Instant) -> Option<TokenBucket> {
        let rate = self.max_inbound_bytes_per_sec?;
        Some(TokenBucket::new(rate, rate, now))
    }

    /// The tenant-wide message bucket, if limited.
    pub fn tenant_message_bucket(&self, now: Instant) -> Option<TokenBucket> {
        let rate = u64::from(self.tenant_messages_per_sec?);
        Some(TokenBucket::new(rate, rate, now))
    }

    /// The tenant-wide byte bucket, if limited.
    pub fn tenant_byte_bucket(&self, now: Instant) -> Option<TokenBucket> {
        let rate = self.tenant_bytes_per_sec?;
        Some(TokenBucket::new(rate, rate, now))
    }
}

/// `[tenants.jwt]`: the keys a JWT sent as password is verified with. Any combination of the
/// key settings may be given (at least one); the token's `alg` (HS256, RS256 or ES256, nothing
/// else) selects the kind of key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HMAC secret for HS256, used as its UTF-8 bytes; at least 32 bytes (RFC 7518 section
    /// 3.2: a key as long as the hash output).
    pub hs256_secret: Option<String>,
    /// RSA public key for RS256, as **PEM text** (`-----BEGIN PUBLIC KEY-----` or `-----BEGIN
    /// RSA PUBLIC KEY-----`; a TOML multi-line string). Text rather than a path so a tenant
    /// created through the admin API is complete by itself, whatever the server's disk holds.
    pub rs256_public_key: Option<String>,
    /// EC P-256 public key for ES256, as PEM text (`-----BEGIN PUBLIC KEY-----`).
    pub es256_public_key: Option<String>,
    /// A JWKS file (`{"keys": [...]}`, RSA and P-256 EC keys used) read when the tenant is
    /// compiled; the token's `kid` selects the key, or every key of the right kind is tried
    /// when the token has no `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Claim naming the tenant (checked against the tenant, or used to route the client when
    /// nothing else names its tenant).
    pub tenant_claim: String,
    /// Claim carrying an ACL (see [`crate::AclClaim`] for the shape).
    pub acl_claim: String,
    /// If set, the token's `aud` must contain it.
    pub audience: Option<String>,
    /// If set, the token's `iss` must equal it.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> JwtConfig {
        JwtConfig {
            hs256_secret: None,
            rs256_public_key: None,
            es256_public_key: None,
            jwks_file: None,
            tenant_claim: "tenant".to_owned(),
            acl_claim: "acl".to_owned(),
            audience: None,
            issuer: None,
            leeway_secs: 0,
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("rs256_public_key", &self.rs256_public_key.is_some())
            .field("es256_public_key", &self.es256_public_key.is_some())
            .field("jwks_file", &self.jwks_file)
            .field("tenant_claim", &self.tenant_claim)
            .field("acl_claim", &self.acl_claim)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// `[tenants.http_auth]`: the hook asked when no local method authenticates a client that
/// presented credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpAuthConfig {
    /// `http://` or `https://` URL the gateway POSTs the credentials to.
    pub url: String,
    /// How long to wait for the answer, milliseconds.
    pub timeout_ms: u64,
    /// How long an answer (allow or deny) is reused for the same credentials, seconds; 0 = ask
    /// every time.
    pub cache_secs: u64,
    /// Allow the client when the hook cannot be reached or answers garbage. Default false
    /// (fail closed).
    pub fail_open: bool,
}

impl Default for HttpAuthConfig {
    fn default() -> HttpAuthConfig {
        HttpAuthConfig {
            url: String::new(),
            timeout_ms: 2000,
            cache_secs: 60,
            fail_open: false,
        }
    }
}

impl HttpAuthConfig {
    /// The answer timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// How long an answer is cached.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
[[tenants]]
id = "acme"
allow_anonymous = false
[[tenants.users]]
username = "phone1"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$5mUTn0KGgu4r6wWrd8YXE0mOTsgVcEH1lPjY2vcmQ9M"
[[tenants.acl]]
action = "all"
filter = "devices/%u/#"
allow = true
[tenants.quotas]
max_connections = 1000
[tenants.jwt]
hs256_secret = "0123456789abcdef0123456789abcdef"
"#;

    #[derive(Deserialize)]
    struct File {
        tenants: Vec<TenantConfig>,
    }

    #[test]
    fn the_issue_example_parses() {
        let file: File = toml::from_str(ISSUE_EXAMPLE).unwrap();
        let [acme] = file.tenants.as_slice() else {
            panic!("one tenant expected");
        };
        assert_eq!(acme.id, "acme");
        assert!(!acme.allow_anonymous);
        assert_eq!(acme.users[0].username, "phone1");
        assert_eq!(acme.acl[0].action, RuleAction::All);
        assert_eq!(acme.acl[0].filter, "devices/%u/#");
        assert_eq!(acme.quotas.max_connections, Some(1000));
        assert_eq!(acme.quotas.max_sessions, None);
        let jwt = acme.jwt.as_ref().unwrap();
        assert_eq!(jwt.tenant_claim, "tenant");
        assert_eq!(jwt.acl_claim, "acl");
        assert_eq!(acme.effective_default_acl(), Permission::Deny);
        validate_tenants(&file.tenants).unwrap();
    }

    #[test]
    fn every_key_has_its_default() {
        let t: TenantConfig =
            toml::from_str("id = \"x\"\n[http_auth]\nurl = \"http://h/\"").unwrap();
        assert!(!t.allow_anonymous);
        assert!(!t.cert_identity);
        assert!(t.unix_uids.is_empty());
        assert_eq!(t.default_acl, None);
        assert_eq!(t.effective_default_acl(), Permission::Allow);
        let hook = t.http_auth.unwrap();
        assert_eq!(hook.timeout(), Duration::from_millis(2000));
        assert_eq!(hook.cache_ttl(), Duration::from_secs(60));
        assert!(!hook.fail_open);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<TenantConfig>("id = \"x\"\nallow_anonymus = true").unwrap_err();
        assert!(err.to_string().contains("allow_anonymus"), "{err}");
        let err =
            toml::from_str::<TenantConfig>("id = \"x\"\n[quotas]\nmax_conections = 1").unwrap_err();
        assert!(err.to_string().contains("max_conections"), "{err}");
        let err = toml::from_str::<TenantConfig>(
            "id = \"x\"\n[[acl]]\naction = \"read\"\nfilter = \"a\"\nallow = true",
        )
        .unwrap_err();
        assert!(err.to_string().contains("read"), "{err}");
    }

    #[test]
    fn default_acl_values() {
        let t: TenantConfig = toml::from_str("id = \"x\"\ndefault_acl = \"allow\"").unwrap();
        assert_eq!(t.default_acl, Some(Permission::Allow));
        let t: TenantConfig = toml::from_str("id = \"x\"\ndefault_acl = \"deny\"").unwrap();
        assert_eq!(t.effective_default_acl(), Permission::Deny);
    }

    #[test]
    fn the_implicit_default_tenant_allows_everyone() {
        let t = TenantConfig::implicit_default();
        assert_eq!(t.id, DEFAULT_TENANT_ID);
        assert!(t.allow_anonymous);
        assert_eq!(t.effective_default_acl(), Permission::Allow);
        validate_tenants(std::slice::from_ref(&t)).unwrap();
    }

    #[test]
    fn buckets_follow_the_quotas() {
        let now = Instant::now();
        let none = Quotas::default();
        assert!(none.client_message_bucket(now).is_none());
        assert!(none.tenant_byte_bucket(now).is_none());
        let q = Quotas {
            max_inbound_messages_per_sec: Some(2),
            tenant_bytes_per_sec: Some(1000),
            ..Quotas::default()
        };
        let mut b = q.client_message_bucket(now).unwrap();
        b.try_take(now, 2).unwrap();
        assert!(b.try_take(now, 1).is_err());
        assert_eq!(q.tenant_byte_bucket(now).unwrap().rate(), 1000);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let file: File = toml::from_str(ISSUE_EXAMPLE).unwrap();
        let text = format!("{:?}", file.tenants);
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("5mUTn0KG"), "{text}");
    }
}
