//! Relations between two topic filters, for checking a SUBSCRIBE against ACL rules: does a rule
//! filter *cover* a requested filter (every topic the request can receive is matched by the
//! rule), and do two filters *intersect* (some topic is matched by both).
//!
//! Place in the data flow: called by [`super::Acl::check_subscribe`] for every rule that applies
//! to subscriptions. Both functions take valid, non-shared filters (the ACL checks
//! `$share/{group}/` off before) and follow the matching rules of
//! [`tidegate_protocol::topic::matches`], including [MQTT-4.7.2-1]: a filter whose first level is
//! a wildcard matches no topic starting with `$`.

/// True when every topic matched by `requested` is also matched by `rule`.
///
/// Level by level: `#` in the rule covers whatever remains of the request (including nothing,
/// since `a/#` matches `a`); `#` in the request is covered only by `#` in the rule; `+` in the
/// request is covered by `+` (or `#`); a literal by the same literal or `+`. A request that ends
/// first is covered only if the rule's next level is `#`.
pub fn filter_covers(rule: &str, requested: &str) -> bool {
    if dollar_excluded(rule, requested) {
        return false;
    }
    let mut r = rule.split('/');
    let mut q = requested.split('/');
    let mut depth = 0;
    let mut empty_first = false;
    loop {
        let (rl, ql) = (r.next(), q.next());
        match (rl, ql) {
            (Some("#"), _) => return true,
            // The request's `#` matches its parent topic too (`a/#` matches `a`), which a
            // rule ending in `+/#` does not; but there may be no such topic: at the first
            // level there is no parent, and a parent that is one empty level is the empty
            // topic name, which is invalid.
            (Some("+"), Some("#")) => {
                let no_parent = depth == 0 || (depth == 1 && empty_first);
                return no_parent && r.next() == Some("#") && r.next().is_none();
            }
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(_), Some("+")) => return false,
            (Some(rl), Some(ql)) if rl == ql => {}
            (None, None) => return true,
            // One side ended (a final `#` in the rule was taken by the first arm) or literals
            // differ.
            _ => return false,
        }
        if depth == 0 {
            empty_first = ql == Some("");
        }
        depth += 1;
    }
}

/// True when at least one valid topic name is matched by both filters.
pub fn filters_intersect(a: &str, b: &str) -> bool {
    if dollar_excluded(a, b) || dollar_excluded(b, a) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    let mut depth = 0;
    let mut empty_first = false;
    loop {
        let (xl, yl) = (x.next(), y.next());
        match (xl, yl) {
            // One filter ended: the only common topic is the levels so far, which is no topic
            // when it is the single empty level (the empty topic name is invalid).
            (Some("#"), None) | (None, Some("#")) => return !(depth == 1 && empty_first),
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(xl), Some(yl)) if xl == yl => {}
            (None, None) => return true,
            // One filter ended while the other goes on without `#`, or literals differ.
            _ => return false,
        }
        if depth == 0 {
            empty_first = xl == Some("") || yl == Some("");
        }
        depth += 1;
    }
}

/// [MQTT-4.7.2-1]: `wild` cannot match any topic of `other` when `wild` starts with a wildcard
/// and every topic `other` matches starts with `$` (its first level is a `$` literal).
fn dollar_excluded(wild: &str, other: &str) -> bool {
    let starts_wild = wild.starts_with('+') || wild.starts_with('#');
    let other_first = other.split('/').next().unwrap_or("");
    starts_wild && other_first.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tidegate_protocol::topic::{matches, validate_topic_filter};

    #[test]
    fn covers_examples() {
        assert!(filter_covers("#", "a/b"));
        assert!(filter_covers("a/#", "a"));
        assert!(filter_covers("a/#", "a/+/c"));
        assert!(filter_covers("a/+", "a/b"));
        assert!(filter_covers("a/+", "a/+"));
        assert!(filter_covers("+/+", "a/b"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/+", "a"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(!filter_covers("a/+/#", "a/#"));
        assert!(!filter_covers("#", "$SYS/x"));
        assert!(!filter_covers("+/x", "$SYS/x"));
        assert!(filter_covers("$SYS/#", "$SYS/x/+"));
        assert!(filter_covers("+", "+"));
        assert!(filter_covers("#", "+/#"));
        // `#` matches every topic of one level or more, and so does `+/#`.
        assert!(filter_covers("+/#", "#"));
        // `/#` cannot match its parent, the (invalid) empty topic.
        assert!(filter_covers("/+/#", "/#"));
        assert!(!filter_covers("a/+/#", "a/#"));
    }

    #[test]
    fn intersect_examples() {
        assert!(filters_intersect("a/#", "+/b"));
        assert!(filters_intersect("a/#", "a"));
        assert!(filters_intersect("+", "a"));
        assert!(!filters_intersect("a/+", "a"));
        assert!(!filters_intersect("a/b", "a/c"));
        assert!(!filters_intersect("#", "$SYS/#"));
        assert!(filters_intersect("$SYS/+", "$SYS/#"));
        assert!(filters_intersect("#", "#"));
        // Their only common topic would be the empty topic name.
        assert!(!filters_intersect("/#", "+"));
    }

    fn all_topics() -> Vec<String> {
        // Topics one level deeper than the longest generated filter, plus a literal no filter
        // uses (what `+` and `#` match beyond the alphabet): enough to decide any relation
        // between filters of at most three levels.
        let levels = ["a", "$s", "", "z"];
        let mut topics: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
        let mut frontier = topics.clone();
        for _ in 1..4 {
            let mut next = Vec::new();
            for t in &frontier {
                for l in levels {
                    next.push(format!("{t}/{l}"));
                }
            }
            topics.extend(next.iter().cloned());
            frontier = next;
        }
        // A topic name is at least one character long.
        topics.retain(|t| !t.is_empty());
        topics
    }

    /// Filters of one to three levels over the literals of [`all_topics`] (but `z`) and the
    /// wildcards.
    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![
            Just("a".to_string()),
            Just("$s".to_string()),
            Just(String::new()),
            Just("+".to_string()),
            Just("#".to_string()),
        ];
        proptest::collection::vec(level, 1..=3)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("valid filter", |f| validate_topic_filter(f).is_ok())
    }

    /// Every valid filter the strategy can produce: the property tests sample pairs; this
    /// checks all of them once.
    fn all_filters() -> Vec<String> {
        let levels = ["a", "$s", "", "+", "#"];
        let mut out: Vec<String> = Vec::new();
        let mut frontier: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
        for _ in 0..3 {
            out.extend(frontier.iter().cloned());
            frontier = frontier
                .iter()
                .flat_map(|f| levels.iter().map(move |l| format!("{f}/{l}")))
                .collect();
        }
        out.retain(|f| validate_topic_filter(f).is_ok());
        out
    }

    #[test]
    fn every_pair_of_small_filters_agrees_with_brute_force() {
        let topics = all_topics();
        let filters = all_filters();
        let matched: Vec<Vec<bool>> = filters
            .iter()
            .map(|f| topics.iter().map(|t| matches(f, t)).collect())
            .collect();
        for (i, a) in filters.iter().enumerate() {
            for (j, b) in filters.iter().enumerate() {
                let (ma, mb) = (&matched[i], &matched[j]);
                let covers = mb.iter().zip(ma).all(|(in_b, in_a)| !in_b || *in_a);
                let meet = ma.iter().zip(mb).any(|(x, y)| *x && *y);
                assert_eq!(filter_covers(a, b), covers, "covers({a:?}, {b:?})");
                assert_eq!(filters_intersect(a, b), meet, "intersect({a:?}, {b:?})");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn covers_agrees_with_brute_force(rule in filter_strategy(), req in filter_strategy()) {
            let topics = all_topics();
            let brute = topics.iter().all(|t| !matches(&req, t) || matches(&rule, t));
            prop_assert_eq!(filter_covers(&rule, &req), brute, "rule {} req {}", rule, req);
        }

        #[test]
        fn intersect_agrees_with_brute_force(a in filter_strategy(), b in filter_strategy()) {
            let topics = all_topics();
            let brute = topics.iter().any(|t| matches(&a, t) && matches(&b, t));
            prop_assert_eq!(filters_intersect(&a, &b), brute, "a {} b {}", a, b);
        }
    }
}
