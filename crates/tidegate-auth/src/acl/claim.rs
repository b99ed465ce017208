//! The ACL carried by a JWT claim or an HTTP auth hook answer.
//!
//! Place in the data flow: [`crate::jwt`] reads the tenant's `acl_claim` (default `"acl"`) from a
//! verified token, and the hook answer may hold an `"acl"` member; both are parsed here into
//! allow rules that [`super::Acl::layered`] puts in front of the tenant's rules.
//!
//! # Shape
//! ```json
//! {"acl": {"pub": ["devices/%u/#"], "sub": ["commands/%u/+"], "all": ["shared/#"]}}
//! ```
//! Every member is optional; each is a list of topic filters (with `%u` / `%c` substitution)
//! the client is **allowed** to publish to (`pub`), subscribe to (`sub`) or both (`all`). A
//! claim only grants: what it does not match falls through to the tenant's rules and default,
//! so a tenant's deny rules still apply to topics the token does not name. Unknown members,
//! invalid filters or more than [`MAX_CLAIM_RULES`] filters make the whole token (or answer)
//! invalid rather than silently granting less or more.

use super::{AclError, AclRule, RuleAction};
use serde::Deserialize;

/// Most filters one claim may carry: every check walks them, so a token must not be able to
/// make every PUBLISH of its connection slow.
pub const MAX_CLAIM_RULES: usize = 256;

/// The parsed claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclClaim {
    /// Filters the client may publish to.
    #[serde(rename = "pub")]
    pub publish: Vec<String>,
    /// Filters the client may subscribe to.
    #[serde(rename = "sub")]
    pub subscribe: Vec<String>,
    /// Filters the client may publish and subscribe to.
    pub all: Vec<String>,
}

impl AclClaim {
    /// Reads the claim from its JSON value.
    pub fn from_json(value: &serde_json::Value) -> Result<AclClaim, AclError> {
        AclClaim::deserialize(value).map_err(|e| AclError::Claim(e.to_string()))
    }

    /// The allow rules of the claim, `all` first, then `pub`, then `sub` (all grant, so their
    /// order does not change any answer).
    pub fn into_rules(self) -> Result<Vec<AclRule>, AclError> {
        let count = self.all.len() + self.publish.len() + self.subscribe.len();
        if count > MAX_CLAIM_RULES {
            return Err(AclError::Claim(format!(
                "{count} filters, at most {MAX_CLAIM_RULES}"
            )));
        }
        let tagged = [
            (RuleAction::All, self.all),
            (RuleAction::Publish, self.publish),
            (RuleAction::Subscribe, self.subscribe),
        ];
        let mut rules = Vec::with_capacity(count);
        for (action, filters) in tagged {
            for filter in filters {
                rules.push(AclRule::new(action, &filter, true)?);
            }
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Acl, Permission, Subject};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn claim_members_become_allow_rules() {
        let claim =
            AclClaim::from_json(&json!({"pub": ["p/%u"], "sub": ["s/+"], "all": ["both/#"]}))
                .unwrap();
        let rules = claim.into_rules().unwrap();
        let actions: Vec<_> = rules.iter().map(|r| (r.action(), r.filter())).collect();
        assert_eq!(
            actions,
            [
                (RuleAction::All, "both/#"),
                (RuleAction::Publish, "p/%u"),
                (RuleAction::Subscribe, "s/+")
            ]
        );
        assert!(rules.iter().all(AclRule::allow));
        let acl = Acl::layered(rules, Arc::new(Acl::new(Vec::new(), Permission::Deny)));
        let who = Subject {
            username: Some("ann"),
            client_id: "c",
        };
        assert!(acl.check_publish(&who, "p/ann").is_allowed());
        assert!(!acl.check_publish(&who, "p/bob").is_allowed());
        assert!(acl.check_subscribe(&who, "s/x").is_allowed());
        assert!(!acl.check_publish(&who, "s/x").is_allowed());
        assert!(acl.check_subscribe(&who, "both/a/b").is_allowed());
    }

    #[test]
    fn malformed_claims_are_errors() {
        assert!(AclClaim::from_json(&json!({"publish": ["a"]})).is_err());
        assert!(AclClaim::from_json(&json!({"pub": "a"})).is_err());
        assert!(AclClaim::from_json(&json!(["a"])).is_err());
        let bad_filter = AclClaim::from_json(&json!({"sub": ["a/#/b"]})).unwrap();
        assert!(matches!(
            bad_filter.into_rules(),
            Err(AclError::BadFilter { .. })
        ));
        let many: Vec<String> = (0..=MAX_CLAIM_RULES).map(|i| format!("t/{i}")).collect();
        let too_many = AclClaim::from_json(&json!({ "pub": many })).unwrap();
        assert!(matches!(too_many.into_rules(), Err(AclError::Claim(_))));
    }

    #[test]
    fn an_empty_claim_grants_nothing() {
        let rules = AclClaim::from_json(&json!({}))
            .unwrap()
            .into_rules()
            .unwrap();
        assert!(rules.is_empty());
    }
}
