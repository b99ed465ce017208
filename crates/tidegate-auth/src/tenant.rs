//! Compiled tenants: what a [`TenantConfig`] becomes once its hashes are parsed, its rules
//! compiled and its keys loaded, and the set of them a server runs with.
//!
//! Place in the data flow: the server builds a [`Tenants`] at start-up (and a new one on every
//! live change, from the kept `Arc<Tenant>`s plus the changed one) and shares it behind an
//! `Arc`; CONNECT handling calls [`Tenants::authenticate`]; the returned
//! [`crate::Decision::Allow`] carries the client's `Arc<Tenant>` for quotas.

use crate::acl::{Acl, AclRule, Permission};
use crate::config::{
    ConfigError, DEFAULT_TENANT_ID, Quotas, TenantConfig, check_distinct, validate_tenants,
};
use crate::jwt::JwtVerifier;
use crate::password::parse_phc;
use argon2::password_hash::phc::PasswordHash;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// One compiled tenant.
pub struct Tenant {
    pub(crate) config: TenantConfig,
    pub(crate) users: HashMap<String, PasswordHash>,
    pub(crate) acl: Arc<Acl>,
    pub(crate) jwt: Option<JwtVerifier>,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.config.id)
            .field("users", &self.users.len())
            .field("acl_rules", &self.acl.rules().len())
            .field("jwt", &self.jwt.is_some())
            .finish_non_exhaustive()
    }
}

impl Tenant {
    /// Validates and compiles one tenant; reads its JWKS file if it names one.
    pub fn compile(config: TenantConfig) -> Result<Tenant, ConfigError> {
        config.validate()?;
        let key = format!("tenants[{}]", config.id);
        let mut users = HashMap::with_capacity(config.users.len());
        for (i, user) in config.users.iter().enumerate() {
            let hash = parse_phc(&user.password_hash).map_err(|e| {
                ConfigError::invalid(format!("{key}.users[{i}].password_hash"), e.to_string())
            })?;
            users.insert(user.username.clone(), hash);
        }
        let mut rules = Vec::with_capacity(config.acl.len());
        for (i, rule) in config.acl.iter().enumerate() {
            rules.push(
                AclRule::new(rule.action, &rule.filter, rule.allow).map_err(|e| {
                    ConfigError::invalid(format!("{key}.acl[{i}].filter"), e.to_string())
                })?,
            );
        }
        let acl = Arc::new(Acl::new(rules, config.effective_default_acl()));
        let jwt = match &config.jwt {
            Some(jwt) => Some(JwtVerifier::load(jwt, &format!("{key}.jwt"))?),
            None => None,
        };
        Ok(Tenant {
            config,
            users,
            acl,
            jwt,
        })
    }

    /// The tenant id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The configuration it was compiled from (for `tenant show` and the admin API).
    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    /// Its quotas.
    pub fn quotas(&self) -> &Quotas {
        &self.config.quotas
    }

    /// Its ACL (rules, then the default), shared by every client without a token ACL.
    pub fn acl(&self) -> &Arc<Acl> {
        &self.acl
    }

    /// What decides when no rule matches.
    pub fn default_acl(&self) -> Permission {
        self.config.effective_default_acl()
    }
}

/// The tenants a server runs with, indexed for resolution.
#[derive(Debug, Clone)]
pub struct Tenants {
    by_id: HashMap<String, Arc<Tenant>>,
    /// Lower-case SNI host name → tenant id.
    sni_exact: HashMap<String, String>,
    /// Lower-case parent domain of a `*.domain` entry → tenant id.
    sni_wildcard: HashMap<String, String>,
}

impl Tenants {
    /// Validates and compiles the `[[tenants]]` of a configuration file. None at all gives the
    /// implicit `default` tenant ([`TenantConfig::implicit_default`]), so a gateway without
    /// tenants behaves as a single-tenant one that allows anonymous clients.
    pub fn from_configs(configs: &[TenantConfig]) -> Result<Tenants, ConfigError> {
        if configs.is_empty() {
            let default = Tenant::compile(TenantConfig::implicit_default())?;
            return Tenants::from_tenants(vec![Arc::new(default)]);
        }
        // Every problem of the file is reported with its index before anything is compiled.
        validate_tenants(configs)?;
        let mut compiled = Vec::with_capacity(configs.len());
        for config in configs {
            compiled.push(Arc::new(Tenant::compile(config.clone())?));
        }
        Tenants::from_tenants(compiled)
    }

    /// A set of already compiled tenants (how a live change is applied without recompiling the
    /// others). Checks what they must not share; an empty set is allowed and routes nobody.
    pub fn from_tenants(tenants: Vec<Arc<Tenant>>) -> Result<Tenants, ConfigError> {
        check_distinct(tenants.iter().map(|t| &t.config))?;
        let mut set = Tenants {
            by_id: HashMap::with_capacity(tenants.len()),
            sni_exact: HashMap::new(),
            sni_wildcard: HashMap::new(),
        };
        for tenant in tenants {
            for host in &tenant.config.sni_hosts {
                let host = host.to_ascii_lowercase();
                match host.strip_prefix("*.") {
                    Some(parent) => set
                        .sni_wildcard
                        .insert(parent.to_owned(), tenant.config.id.clone()),
                    None => set.sni_exact.insert(host, tenant.config.id.clone()),
                };
            }
            set.by_id.insert(tenant.config.id.clone(), tenant);
        }
        Ok(set)
    }

    /// This set with `tenant` added, or replacing the one with its id.
    pub fn with(&self, tenant: Arc<Tenant>) -> Result<Tenants, ConfigError> {
        let mut all: Vec<Arc<Tenant>> = self
            .by_id
            .values()
            .filter(|t| t.id() != tenant.id())
            .cloned()
            .collect();
        all.push(tenant);
        Tenants::from_tenants(all)
    }

    /// This set without the tenant `id` (unchanged when there is none).
    pub fn without(&self, id: &str) -> Tenants {
        let mut set = self.clone();
        set.by_id.remove(id);
        set.sni_exact.retain(|_, t| t != id);
        set.sni_wildcard.retain(|_, t| t != id);
        set
    }

    /// The tenant `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.by_id.get(id)
    }

    /// Every tenant, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_id.values()
    }

    /// How many tenants there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The tenant a TLS SNI host name is routed to: an exact entry, else a `*.parent` entry
    /// matching one label. Case-insensitive; a trailing dot is ignored.
    pub fn by_sni(&self, host: &str) -> Option<&Arc<Tenant>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let id = self.sni_exact.get(&host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.sni_wildcard.get(parent)
        })?;
        self.by_id.get(id)
    }

    /// The tenant clients land in when nothing names one: `default`, if it exists.
    pub fn fallback(&self) -> Option<&Arc<Tenant>> {
        self.by_id.get(DEFAULT_TENANT_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::RuleAction;
    use crate::acl::Subject;
    use crate::config::{AclRuleConfig, JwtConfig, UserConfig};

    fn config(id: &str) -> TenantConfig {
        TenantConfig {
            id: id.into(),
            ..TenantConfig::default()
        }
    }

    #[test]
    fn no_tenants_means_the_implicit_default_tenant() {
        let set = Tenants::from_configs(&[]).unwrap();
        assert_eq!(set.len(), 1);
        let t = set.fallback().unwrap();
        assert_eq!(t.id(), "default");
        assert!(t.config().allow_anonymous);
        let who = Subject {
            username: None,
            client_id: "c",
        };
        assert!(t.acl().check_subscribe(&who, "#").is_allowed());
    }

    #[test]
    fn compile_builds_users_rules_and_keys() {
        let mut c = config("acme");
        c.users.push(UserConfig {
            username: "phone1".into(),
            password_hash: crate::password::hash_with(b"pw", 64, 1, 1).unwrap(),
        });
        c.acl.push(AclRuleConfig {
            action: RuleAction::Publish,
            filter: "d/%u".into(),
            allow: true,
        });
        c.jwt = Some(JwtConfig {
            hs256_secret: Some(crate::jwt::tests::SECRET.into()),
            ..JwtConfig::default()
        });
        let t = Tenant::compile(c).unwrap();
        assert_eq!(t.users.len(), 1);
        assert_eq!(t.acl().rules().len(), 1);
        assert_eq!(t.default_acl(), Permission::Deny);
        assert!(t.jwt.is_some());
        assert!(format!("{t:?}").contains("acme"));
    }

    #[test]
    fn compile_reports_a_missing_jwks_file_with_its_key() {
        let mut c = config("acme");
        c.jwt = Some(JwtConfig {
            jwks_file: Some("/nonexistent/jwks.json".into()),
            ..JwtConfig::default()
        });
        let err = Tenant::compile(c).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("tenants[acme].jwt.jwks_file: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn sni_routing_exact_and_wildcard() {
        let mut a = config("a");
        a.sni_hosts = vec!["mqtt.a.example".into(), "*.devices.a.example".into()];
        let mut b = config("b");
        b.sni_hosts = vec!["B.example".into()];
        let set = Tenants::from_configs(&[a, b]).unwrap();
        assert_eq!(set.by_sni("mqtt.a.example").unwrap().id(), "a");
        assert_eq!(set.by_sni("MQTT.A.example.").unwrap().id(), "a");
        assert_eq!(set.by_sni("x.devices.a.example").unwrap().id(), "a");
        assert!(set.by_sni("x.y.devices.a.example").is_none());
        assert!(set.by_sni("devices.a.example").is_none());
        assert_eq!(set.by_sni("b.example").unwrap().id(), "b");
        assert!(set.by_sni("c.example").is_none());
        assert!(set.fallback().is_none());
    }

    #[test]
    fn live_changes_add_replace_and_remove() {
        let set = Tenants::from_configs(&[config("a")]).unwrap();
        let mut b = config("b");
        b.sni_hosts = vec!["b.example".into()];
        let set = set.with(Arc::new(Tenant::compile(b).unwrap())).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.by_sni("b.example").unwrap().id(), "b");
        let mut b2 = config("b");
        b2.allow_anonymous = true;
        let set = set.with(Arc::new(Tenant::compile(b2).unwrap())).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.get("b").unwrap().config().allow_anonymous);
        assert!(
            set.by_sni("b.example").is_none(),
            "the new b has no SNI host"
        );
        let mut clash = config("c");
        clash.sni_hosts = vec!["x.example".into()];
        let mut clash2 = config("d");
        clash2.sni_hosts = vec!["x.example".into()];
        let set = set.with(Arc::new(Tenant::compile(clash).unwrap())).unwrap();
        assert!(
            set.with(Arc::new(Tenant::compile(clash2).unwrap()))
                .is_err()
        );
        let set = set.without("c");
        assert!(set.get("c").is_none());
        assert!(set.by_sni("x.example").is_none());
        assert_eq!(set.len(), 2);
        assert!(set.without("zzz").get("a").is_some());
    }

    #[test]
    fn an_empty_compiled_set_routes_nobody() {
        let set = Tenants::from_tenants(Vec::new()).unwrap();
        assert!(set.is_empty());
        assert!(set.fallback().is_none());
    }
}
