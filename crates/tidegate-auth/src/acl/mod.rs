//! Authorization: compiled ACL rules and the publish / subscribe checks.
//!
//! Place in the data flow: a tenant's `[[tenants.acl]]` rules are compiled once into an [`Acl`]
//! (see [`crate::Tenant`]); authentication hands the client an `Arc<Acl>` (the tenant's own, or
//! one with the rules of its JWT / HTTP hook answer layered in front); the broker calls
//! [`Acl::check_publish`] for every PUBLISH and [`Acl::check_subscribe`] for every SUBSCRIBE
//! filter, with the client's [`Subject`].
//!
//! # Semantics
//! - Rules are evaluated in order and **the first rule that matches decides**; when none does,
//!   the layer below decides (the tenant's rules under a token's), and finally the default.
//! - `%u` is replaced by the username, `%c` by the client id, anywhere in a filter. A rule whose
//!   placeholder has no value (an anonymous client has no username), or whose value is empty
//!   or contains `+`, `#` or `/`, **does not match** (it is skipped): such a value would
//!   otherwise turn `devices/%u/#` into a wider filter.
//! - PUBLISH: a rule matches when its filter matches the topic name.
//! - SUBSCRIBE (a shared subscription is checked on the filter after `$share/{group}/`): an
//!   *allow* rule matches when its filter covers the requested one (every topic the request can
//!   receive is matched by the rule); a *deny* rule matches when the two filters intersect (the
//!   request could receive one topic of the rule). So with `deny secret/#` before `allow #`, a
//!   subscription to `#` is refused, while `sensors/#` is allowed: messages are not filtered one
//!   by one at delivery, so a subscription is granted only when everything it can receive is
//!   allowed.
//! - Topics starting with `$` follow the matching rules of MQTT ([MQTT-4.7.2-1]): a rule filter
//!   starting with a wildcard does not match them.

mod claim;
mod filter;

pub use claim::{AclClaim, MAX_CLAIM_RULES};
pub use filter::{filter_covers, filters_intersect};

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;
use tidegate_protocol::topic::{TopicError, matches, parse_shared, validate_topic_filter};

/// What a rule applies to (`action = "publish" | "subscribe" | "all"` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// PUBLISH only.
    Publish,
    /// SUBSCRIBE only.
    Subscribe,
    /// Both.
    All,
}

impl RuleAction {
    fn covers_publish(self) -> bool {
        matches!(self, RuleAction::Publish | RuleAction::All)
    }

    fn covers_subscribe(self) -> bool {
        matches!(self, RuleAction::Subscribe | RuleAction::All)
    }
}

/// The outcome of an ACL check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// The operation may proceed.
    Allow,
    /// The operation is refused (SUBACK / PUBACK 0x87 in v5; a 3.1.1 PUBLISH is dropped).
    Deny,
}

impl Permission {
    /// True for [`Permission::Allow`].
    pub fn is_allowed(self) -> bool {
        self == Permission::Allow
    }

    fn from_allow(allow: bool) -> Permission {
        if allow {
            Permission::Allow
        } else {
            Permission::Deny
        }
    }
}

/// Who is asking: the values of `%u` and `%c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The username for ACLs (a JWT's `sub`, the username without `@tenant`, a certificate
    /// identity...), `None` for an anonymous client.
    pub username: Option<&'a str>,
    /// The client identifier (the one the server assigned, when the client sent none).
    pub client_id: &'a str,
}

/// Why an ACL rule cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The filter is not a valid MQTT topic filter (checked with `%u` / `%c` replaced).
    #[error("invalid topic filter {filter:?}: {source}")]
    BadFilter {
        /// The filter as written.
        filter: String,
        /// What is wrong with it.
        source: TopicError,
    },
    /// Rules apply to the filter inside a shared subscription, not to `$share/...` itself.
    #[error(
        "{0:?}: write the filter inside $share/{{group}}/; shared subscriptions are checked on it"
    )]
    SharedFilter(String),
    /// An ACL claim (JWT or HTTP hook answer) does not have the documented shape.
    #[error("malformed ACL claim: {0}")]
    Claim(String),
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    action: RuleAction,
    filter: String,
    /// Whether `filter` holds `%u` or `%c`: rules without placeholders are matched without
    /// building a string.
    placeholders: bool,
    allow: bool,
}

impl AclRule {
    /// Compiles a rule, checking that its filter is a valid topic filter once the placeholders
    /// are replaced.
    pub fn new(action: RuleAction, filter: &str, allow: bool) -> Result<AclRule, AclError> {
        if filter == "$share" || filter.starts_with("$share/") {
            return Err(AclError::SharedFilter(filter.to_owned()));
        }
        let placeholders = filter.contains("%u") || filter.contains("%c");
        let probe = Subject {
            username: Some("u"),
            client_id: "c",
        };
        let expanded = expand(filter, placeholders, &probe).unwrap_or(Cow::Borrowed(filter));
        validate_topic_filter(&expanded).map_err(|source| AclError::BadFilter {
            filter: filter.to_owned(),
            source,
        })?;
        Ok(AclRule {
            action,
            filter: filter.to_owned(),
            placeholders,
            allow,
        })
    }

    /// What the rule applies to.
    pub fn action(&self) -> RuleAction {
        self.action
    }

    /// The filter as written (placeholders unexpanded).
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Whether a match allows (true) or denies.
    pub fn allow(&self) -> bool {
        self.allow
    }

    fn expanded<'r>(&'r self, who: &Subject<'_>) -> Option<Cow<'r, str>> {
        expand(&self.filter, self.placeholders, who)
    }
}

/// Replaces `%u` and `%c`; `None` when a needed value is missing or unsafe (see the module
/// docs). A `%` followed by anything else stays as written.
fn expand<'f>(filter: &'f str, placeholders: bool, who: &Subject<'_>) -> Option<Cow<'f, str>> {
    if !placeholders {
        return Some(Cow::Borrowed(filter));
    }
    let mut out = String::with_capacity(filter.len() + 16);
    let mut rest = filter;
    while let Some((before, after)) = rest.split_once('%') {
        out.push_str(before);
        if let Some(tail) = after.strip_prefix('u') {
            out.push_str(safe_value(who.username)?);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('c') {
            out.push_str(safe_value(Some(who.client_id))?);
            rest = tail;
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

fn safe_value(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty() && !v.contains(['+', '#', '/']))
}

/// A compiled, ordered rule list with what decides when no rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<AclRule>,
    then: Otherwise,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Otherwise {
    Default(Permission),
    /// The rules of a token or hook answer are layered over the tenant's ACL.
    Below(Arc<Acl>),
}

impl Acl {
    /// Rules evaluated in order, then `default`.
    pub fn new(rules: Vec<AclRule>, default: Permission) -> Acl {
        Acl {
            rules,
            then: Otherwise::Default(default),
        }
    }

    /// No rules; everything allowed (the implicit default tenant).
    pub fn allow_all() -> Acl {
        Acl::new(Vec::new(), Permission::Allow)
    }

    /// `rules` evaluated first, then everything `below` would decide (its rules, then its
    /// default): how a JWT's or HTTP hook's ACL claim is put in front of the tenant's rules.
    pub fn layered(rules: Vec<AclRule>, below: Arc<Acl>) -> Acl {
        Acl {
            rules,
            then: Otherwise::Below(below),
        }
    }

    /// This ACL with `tenant` in place of the tenant ACL it was made from: a layer (the rules
    /// of a token or a hook answer, see [`Acl::layered`]) is kept, over `tenant`; an ACL that
    /// is not a layer was the tenant's own and becomes `tenant`. How a tenant's changed rules
    /// reach the clients connected under the old ones.
    pub fn rebased(&self, tenant: &Arc<Acl>) -> Arc<Acl> {
        match self.then {
            Otherwise::Below(_) => Arc::new(Acl::layered(self.rules.clone(), Arc::clone(tenant))),
            Otherwise::Default(_) => Arc::clone(tenant),
        }
    }

    /// The rules of this layer, in order.
    pub fn rules(&self) -> &[AclRule] {
        &self.rules
    }

    /// May `who` publish to `topic` (a valid topic name)?
    pub fn check_publish(&self, who: &Subject<'_>, topic: &str) -> Permission {
        self.decide(&|rule: &AclRule| {
            if !rule.action.covers_publish() {
                return None;
            }
            let filter = rule.expanded(who)?;
            matches(&filter, topic).then_some(rule.allow)
        })
    }

    /// May `who` subscribe to `filter` (a valid topic filter, possibly `$share/{group}/...`)?
    /// An invalid shared subscription is denied.
    pub fn check_subscribe(&self, who: &Subject<'_>, filter: &str) -> Permission {
        let requested = match parse_shared(filter) {
            Ok(Some(shared)) => shared.filter,
            Ok(None) => filter,
            Err(_) => return Permission::Deny,
        };
        self.decide(&|rule: &AclRule| {
            if !rule.action.covers_subscribe() {
                return None;
            }
            let rule_filter = rule.expanded(who)?;
            let hit = if rule.allow {
                filter_covers(&rule_filter, requested)
            } else {
                filters_intersect(&rule_filter, requested)
            };
            hit.then_some(rule.allow)
        })
    }

    /// First rule (in this layer, then the layers below) for which `judge` has an answer.
    fn decide(&self, judge: &dyn Fn(&AclRule) -> Option<bool>) -> Permission {
        if let Some(allow) = self.rules.iter().find_map(judge) {
            return Permission::from_allow(allow);
        }
        match &self.then {
            Otherwise::Default(permission) => *permission,
            Otherwise::Below(below) => below.decide(judge),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: RuleAction, filter: &str, allow: bool) -> AclRule {
        AclRule::new(action, filter, allow).unwrap()
    }

    fn who<'a>(username: Option<&'a str>, client_id: &'a str) -> Subject<'a> {
        Subject {
            username,
            client_id,
        }
    }

    #[test]
    fn first_match_decides_then_the_default() {
        let acl = Acl::new(
            vec![
                rule(RuleAction::Publish, "a/secret", false),
                rule(RuleAction::All, "a/#", true),
            ],
            Permission::Deny,
        );
        let w = who(Some("u"), "c");
        assert_eq!(acl.check_publish(&w, "a/secret"), Permission::Deny);
        assert_eq!(acl.check_publish(&w, "a/open"), Permission::Allow);
        assert_eq!(acl.check_publish(&w, "b"), Permission::Deny);
        let open = Acl::new(vec![rule(RuleAction::All, "x", false)], Permission::Allow);
        assert_eq!(open.check_publish(&w, "b"), Permission::Allow);
    }

    #[test]
    fn actions_select_the_rules_that_apply() {
        let acl = Acl::new(
            vec![
                rule(RuleAction::Publish, "p/#", true),
                rule(RuleAction::Subscribe, "s/#", true),
            ],
            Permission::Deny,
        );
        let w = who(None, "c");
        assert!(acl.check_publish(&w, "p/1").is_allowed());
        assert!(!acl.check_publish(&w, "s/1").is_allowed());
        assert!(acl.check_subscribe(&w, "s/1").is_allowed());
        assert!(!acl.check_subscribe(&w, "p/1").is_allowed());
    }

    #[test]
    fn username_and_client_id_are_substituted() {
        let acl = Acl::new(
            vec![
                rule(RuleAction::All, "devices/%u/#", true),
                rule(RuleAction::Publish, "clients/%c/status", true),
                rule(RuleAction::Publish, "mixed/%u-%c/x", true),
            ],
            Permission::Deny,
        );
        let w = who(Some("phone1"), "cid-7");
        assert!(acl.check_publish(&w, "devices/phone1/temp").is_allowed());
        assert!(!acl.check_publish(&w, "devices/phone2/temp").is_allowed());
        assert!(acl.check_subscribe(&w, "devices/phone1/+").is_allowed());
        assert!(!acl.check_subscribe(&w, "devices/+/temp").is_allowed());
        assert!(acl.check_publish(&w, "clients/cid-7/status").is_allowed());
        assert!(!acl.check_publish(&w, "clients/other/status").is_allowed());
        assert!(acl.check_publish(&w, "mixed/phone1-cid-7/x").is_allowed());
    }

    #[test]
    fn wildcards_or_slashes_in_a_substituted_value_never_widen_a_rule() {
        let acl = Acl::new(
            vec![rule(RuleAction::All, "devices/%u/#", true)],
            Permission::Deny,
        );
        for evil in ["#", "+", "a/b", "x+", ""] {
            let w = who(Some(evil), "c");
            assert!(
                !acl.check_subscribe(&w, "devices/#").is_allowed(),
                "{evil:?}"
            );
            assert!(
                !acl.check_publish(&w, "devices/a/b/c").is_allowed(),
                "{evil:?}"
            );
        }
        // Anonymous: no value for %u, the rule is skipped.
        assert!(
            !acl.check_publish(&who(None, "c"), "devices/c/x")
                .is_allowed()
        );
        let by_client = Acl::new(vec![rule(RuleAction::All, "c/%c", true)], Permission::Deny);
        assert!(
            !by_client
                .check_subscribe(&who(None, "#"), "c/#")
                .is_allowed()
        );
        assert!(
            by_client
                .check_subscribe(&who(None, "me"), "c/me")
                .is_allowed()
        );
    }

    #[test]
    fn a_skipped_deny_rule_lets_later_rules_decide() {
        let acl = Acl::new(
            vec![
                rule(RuleAction::Publish, "private/%u", false),
                rule(RuleAction::Publish, "public/#", true),
            ],
            Permission::Deny,
        );
        assert!(acl.check_publish(&who(None, "c"), "public/x").is_allowed());
        assert!(
            !acl.check_publish(&who(Some("bob"), "c"), "private/bob")
                .is_allowed()
        );
    }

    #[test]
    fn subscribe_needs_coverage_by_an_allow_rule() {
        let acl = Acl::new(
            vec![rule(RuleAction::Subscribe, "a/+", true)],
            Permission::Deny,
        );
        let w = who(None, "c");
        assert!(acl.check_subscribe(&w, "a/b").is_allowed());
        assert!(acl.check_subscribe(&w, "a/+").is_allowed());
        assert!(!acl.check_subscribe(&w, "a/#").is_allowed());
        assert!(!acl.check_subscribe(&w, "#").is_allowed());
    }

    #[test]
    fn a_deny_rule_refuses_every_subscription_that_could_receive_its_topics() {
        let acl = Acl::new(
            vec![
                rule(RuleAction::All, "secret/#", false),
                rule(RuleAction::All, "#", true),
            ],
            Permission::Deny,
        );
        let w = who(None, "c");
        assert!(!acl.check_subscribe(&w, "#").is_allowed());
        assert!(!acl.check_subscribe(&w, "+/x").is_allowed());
        assert!(acl.check_subscribe(&w, "sensors/#").is_allowed());
        assert!(acl.check_publish(&w, "sensors/1").is_allowed());
    }

    #[test]
    fn shared_subscriptions_are_checked_on_their_filter() {
        let acl = Acl::new(
            vec![rule(RuleAction::Subscribe, "jobs/#", true)],
            Permission::Deny,
        );
        let w = who(None, "c");
        assert!(acl.check_subscribe(&w, "$share/g/jobs/+").is_allowed());
        assert!(!acl.check_subscribe(&w, "$share/g/other").is_allowed());
        assert!(!acl.check_subscribe(&w, "$share/g").is_allowed());
        // The group name is not part of the topic space.
        assert!(!acl.check_subscribe(&w, "$share/jobs/x").is_allowed());
    }

    #[test]
    fn dollar_topics_follow_mqtt_matching() {
        let acl = Acl::new(vec![rule(RuleAction::All, "#", true)], Permission::Deny);
        let w = who(None, "c");
        assert!(!acl.check_publish(&w, "$internal/x").is_allowed());
        assert!(!acl.check_subscribe(&w, "$SYS/#").is_allowed());
        let sys = Acl::new(
            vec![rule(RuleAction::Subscribe, "$SYS/#", true)],
            Permission::Deny,
        );
        assert!(sys.check_subscribe(&w, "$SYS/broker/+").is_allowed());
    }

    #[test]
    fn layered_rules_come_first_then_the_layer_below_and_its_default() {
        let tenant = Arc::new(Acl::new(
            vec![rule(RuleAction::All, "t/#", true)],
            Permission::Deny,
        ));
        let token = Acl::layered(
            vec![rule(RuleAction::Publish, "tok/#", true)],
            Arc::clone(&tenant),
        );
        let w = who(Some("u"), "c");
        assert!(token.check_publish(&w, "tok/1").is_allowed());
        assert!(token.check_publish(&w, "t/1").is_allowed());
        assert!(!token.check_publish(&w, "z").is_allowed());
        assert!(!tenant.check_publish(&w, "tok/1").is_allowed());
    }

    #[test]
    fn rebasing_keeps_a_layer_and_replaces_a_tenant_acl() {
        let old = Arc::new(Acl::new(
            vec![rule(RuleAction::All, "t/#", true)],
            Permission::Deny,
        ));
        let new = Arc::new(Acl::new(
            vec![rule(RuleAction::All, "n/#", true)],
            Permission::Deny,
        ));
        let w = who(Some("u"), "c");
        let token = Acl::layered(
            vec![rule(RuleAction::Publish, "tok/#", true)],
            Arc::clone(&old),
        );
        let token = token.rebased(&new);
        assert!(token.check_publish(&w, "tok/1").is_allowed());
        assert!(token.check_publish(&w, "n/1").is_allowed());
        assert!(!token.check_publish(&w, "t/1").is_allowed());
        let plain = old.rebased(&new);
        assert!(Arc::ptr_eq(&plain, &new));
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(matches!(
            AclRule::new(RuleAction::All, "a/#/b", true),
            Err(AclError::BadFilter { .. })
        ));
        assert!(matches!(
            AclRule::new(RuleAction::All, "a/%u#", true),
            Err(AclError::BadFilter { .. })
        ));
        assert!(matches!(
            AclRule::new(RuleAction::All, "", true),
            Err(AclError::BadFilter { .. })
        ));
        assert!(matches!(
            AclRule::new(RuleAction::All, "$share/g/a", true),
            Err(AclError::SharedFilter(_))
        ));
    }

    #[test]
    fn a_percent_sign_without_placeholder_is_literal() {
        let acl = Acl::new(
            vec![rule(RuleAction::Publish, "rate/100%/%u", true)],
            Permission::Deny,
        );
        assert!(
            acl.check_publish(&who(Some("x"), "c"), "rate/100%/x")
                .is_allowed()
        );
    }
}
