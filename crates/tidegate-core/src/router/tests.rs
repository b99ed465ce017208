//! Tests of the [`Router`]: the matching rules of spec section 4.7, shared-subscription
//! distribution, No Local, merging, pruning, and a property test against the naive matcher.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn entry(qos: QoS, identifier: Option<u32>) -> SubscriptionEntry {
    SubscriptionEntry {
        options: SubscriptionOptions {
            qos,
            ..Default::default()
        },
        identifier,
    }
}

fn plain() -> SubscriptionEntry {
    entry(QoS::AtMostOnce, None)
}

fn online(_: SessionKey) -> bool {
    true
}

/// Sessions receiving a message on `topic_name`, sorted.
fn receivers(router: &mut Router, topic_name: &str) -> Vec<u64> {
    let mut out = Vec::new();
    router.route(topic_name, None, online, &mut out);
    let mut sessions: Vec<u64> = out.iter().map(|d| d.session.0).collect();
    sessions.sort_unstable();
    sessions
}

/// A router where session `i` subscribes to `filters[i]`.
fn router_with(filters: &[&str]) -> Router {
    let mut router = Router::new();
    for (i, filter) in filters.iter().enumerate() {
        router
            .subscribe(SessionKey(i as u64), filter, plain())
            .unwrap();
    }
    router
}

/// Which of `filters` match `topic_name`, by the router.
fn matching<'a>(filters: &[&'a str], topic_name: &str) -> Vec<&'a str> {
    let mut router = router_with(filters);
    receivers(&mut router, topic_name)
        .into_iter()
        .map(|i| filters[i as usize])
        .collect()
}

#[test]
fn multi_level_wildcard_spec_examples() {
    // [MQTT-4.7.1.2] "sport/tennis/player1/#" matches the parent and everything below.
    let filters = ["sport/tennis/player1/#"];
    for topic_name in [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
    ] {
        assert_eq!(matching(&filters, topic_name), filters, "{topic_name}");
    }
    assert!(matching(&filters, "sport/tennis/player2").is_empty());
    assert!(matching(&filters, "sport/tennis").is_empty());
    assert_eq!(matching(&["sport/#"], "sport"), ["sport/#"]);
    assert_eq!(matching(&["#"], "a/b/c"), ["#"]);
    assert_eq!(matching(&["#"], "/"), ["#"]);
}

#[test]
fn single_level_wildcard_spec_examples() {
    let filters = ["sport/tennis/+"];
    assert_eq!(matching(&filters, "sport/tennis/player1"), filters);
    assert_eq!(matching(&filters, "sport/tennis/player2"), filters);
    assert!(matching(&filters, "sport/tennis/player1/ranking").is_empty());
    assert!(matching(&["sport/+"], "sport").is_empty());
    // `+` matches an empty level.
    assert_eq!(matching(&["sport/+"], "sport/"), ["sport/+"]);
    assert_eq!(matching(&["a/+/c"], "a//c"), ["a/+/c"]);
    assert_eq!(matching(&["+"], ""), ["+"]);
    assert_eq!(matching(&["+/+"], "/finance"), ["+/+"]);
    assert_eq!(matching(&["/+"], "/finance"), ["/+"]);
    assert!(matching(&["+"], "/finance").is_empty());
    assert_eq!(
        matching(&["+/tennis/#", "sport/+/player1"], "sport/tennis/player1"),
        ["+/tennis/#", "sport/+/player1"]
    );
}

#[test]
fn levels_are_exact_and_case_sensitive() {
    assert!(matching(&["ACCOUNTS"], "Accounts").is_empty());
    assert!(matching(&["a/b"], "a/b/c").is_empty());
    assert!(matching(&["a/b/c"], "a/b").is_empty());
    assert!(matching(&["/finance"], "finance").is_empty());
    assert_eq!(matching(&["/finance"], "/finance"), ["/finance"]);
    assert_eq!(
        matching(&["sport/tennis player1"], "sport/tennis player1"),
        ["sport/tennis player1"]
    );
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1]
    let filters = [
        "#",
        "+/monitor/Clients",
        "$SYS/#",
        "$SYS/monitor/+",
        "+/#",
        "$SYS/monitor/Clients",
    ];
    assert_eq!(
        matching(&filters, "$SYS/monitor/Clients"),
        ["$SYS/#", "$SYS/monitor/+", "$SYS/monitor/Clients"]
    );
    // Only the first level is special.
    assert_eq!(matching(&["a/+", "a/#"], "a/$x"), ["a/+", "a/#"]);
    assert_eq!(matching(&["#", "+"], "x$"), ["#", "+"]);
}

#[test]
fn subscribe_reports_existing_and_rejects_bad_filters() {
    let mut router = Router::new();
    let s = SessionKey(1);
    assert_eq!(router.subscribe(s, "a/b", plain()), Ok(false));
    assert_eq!(
        router.subscribe(s, "a/b", entry(QoS::AtLeastOnce, None)),
        Ok(true)
    );
    assert_eq!(router.subscribe(s, "$share/g/a/b", plain()), Ok(false));
    assert_eq!(router.subscribe(s, "$share/g/a/b", plain()), Ok(true));
    assert_eq!(router.len(), 2);
    assert_eq!(
        router.subscribe(s, "a/#/b", plain()),
        Err(TopicError::BadWildcard)
    );
    assert_eq!(
        router.subscribe(s, "a+", plain()),
        Err(TopicError::BadWildcard)
    );
    assert_eq!(router.subscribe(s, "", plain()), Err(TopicError::Empty));
    assert_eq!(
        router.subscribe(s, "$share/g", plain()),
        Err(TopicError::BadShare)
    );
    assert_eq!(
        router.subscribe(s, "$share/g/a/#/b", plain()),
        Err(TopicError::BadWildcard)
    );
    assert_eq!(router.len(), 2);
    // The replaced entry is the one routed.
    let mut out = Vec::new();
    router.route("a/b", None, online, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].qos, QoS::AtLeastOnce);
}

#[test]
fn one_delivery_per_session_with_merged_options() {
    // [MQTT-3.3.4-3], [MQTT-3.3.4-4]
    let mut router = Router::new();
    let s = SessionKey(7);
    let mut rap = entry(QoS::ExactlyOnce, Some(2));
    rap.options.retain_as_published = true;
    router
        .subscribe(s, "a/+", entry(QoS::AtMostOnce, Some(1)))
        .unwrap();
    router.subscribe(s, "a/#", rap).unwrap();
    router
        .subscribe(s, "a/b", entry(QoS::AtLeastOnce, None))
        .unwrap();
    router
        .subscribe(s, "#", entry(QoS::AtMostOnce, Some(3)))
        .unwrap();
    router.subscribe(SessionKey(8), "a/b", plain()).unwrap();
    let mut out = Vec::new();
    router.route("a/b", None, online, &mut out);
    assert_eq!(out.len(), 2);
    let mine = out.iter().find(|d| d.session == s).unwrap();
    assert_eq!(mine.qos, QoS::ExactlyOnce);
    assert!(mine.retain_as_published);
    let mut ids = mine.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);
    let other = out.iter().find(|d| d.session == SessionKey(8)).unwrap();
    assert!(other.subscription_identifiers.is_empty());
    assert!(!other.retain_as_published);
}

#[test]
fn route_appends_without_touching_earlier_deliveries() {
    let mut router = router_with(&["a", "+"]);
    router.subscribe(SessionKey(0), "#", plain()).unwrap();
    let earlier = Delivery {
        session: SessionKey(0),
        qos: QoS::ExactlyOnce,
        retain_as_published: false,
        subscription_identifiers: vec![9],
    };
    let mut out = vec![earlier.clone()];
    router.route("a", None, online, &mut out);
    assert_eq!(out[0], earlier);
    let sessions: BTreeSet<u64> = out[1..].iter().map(|d| d.session.0).collect();
    assert_eq!(sessions, BTreeSet::from([0, 1]));
    assert_eq!(out.len(), 3);
}

#[test]
fn no_local_skips_only_the_publishers_own_plain_subscriptions() {
    let mut router = Router::new();
    let mut no_local = plain();
    no_local.options.no_local = true;
    router.subscribe(SessionKey(1), "t", no_local).unwrap();
    router
        .subscribe(SessionKey(1), "$share/g/t", plain())
        .unwrap();
    router.subscribe(SessionKey(2), "t", no_local).unwrap();
    router.subscribe(SessionKey(3), "#", plain()).unwrap();
    let mut out = Vec::new();
    router.route("t", Some(SessionKey(1)), online, &mut out);
    let mut sessions: Vec<u64> = out.iter().map(|d| d.session.0).collect();
    sessions.sort_unstable();
    // Session 1 still gets the message through its shared subscription.
    assert_eq!(sessions, [1, 2, 3]);
    // A No Local subscription alongside a plain one of the same session still delivers.
    router.subscribe(SessionKey(2), "+", plain()).unwrap();
    out.clear();
    router.route("t", Some(SessionKey(2)), online, &mut out);
    assert!(out.iter().any(|d| d.session == SessionKey(2)));
}

/// Which member of the group on "t" receives each of `n` messages.
fn picks(router: &mut Router, n: usize, is_online: impl Fn(SessionKey) -> bool) -> Vec<u64> {
    let mut picked = Vec::new();
    for _ in 0..n {
        let mut out = Vec::new();
        router.route("t", None, &is_online, &mut out);
        assert_eq!(out.len(), 1, "one member per group per message");
        picked.push(out[0].session.0);
    }
    picked
}

#[test]
fn shared_group_round_robin() {
    let mut router = Router::new();
    for s in 1..=3 {
        router
            .subscribe(SessionKey(s), "$share/g/t", plain())
            .unwrap();
    }
    assert_eq!(picks(&mut router, 7, online), [1, 2, 3, 1, 2, 3, 1]);
}

#[test]
fn shared_group_skips_offline_members() {
    let mut router = Router::new();
    for s in 1..=4 {
        router
            .subscribe(SessionKey(s), "$share/g/t", plain())
            .unwrap();
    }
    let is_online = |s: SessionKey| [2, 4].contains(&s.0);
    assert_eq!(picks(&mut router, 5, is_online), [2, 4, 2, 4, 2]);
}

#[test]
fn shared_group_with_no_member_online_falls_back_to_the_next_in_turn() {
    let mut router = Router::new();
    for s in 1..=3 {
        router
            .subscribe(SessionKey(s), "$share/g/t", plain())
            .unwrap();
    }
    assert_eq!(picks(&mut router, 4, |_| false), [1, 2, 3, 1]);
    // Once one comes back it takes every message.
    assert_eq!(picks(&mut router, 3, |s| s.0 == 3), [3, 3, 3]);
}

#[test]
fn shared_group_keeps_rotating_after_a_member_leaves() {
    let mut router = Router::new();
    for s in 1..=3 {
        router
            .subscribe(SessionKey(s), "$share/g/t", plain())
            .unwrap();
    }
    assert_eq!(picks(&mut router, 1, online), [1]);
    assert!(router.unsubscribe(SessionKey(2), "$share/g/t"));
    let next: BTreeSet<u64> = picks(&mut router, 2, online).into_iter().collect();
    assert_eq!(next, BTreeSet::from([1, 3]));
}

#[test]
fn large_shared_group_gives_each_member_one_message_per_round() {
    let mut router = Router::new();
    for s in 0..100 {
        router
            .subscribe(SessionKey(s), "$share/g/t", plain())
            .unwrap();
    }
    for s in (0..100).step_by(2) {
        assert!(router.unsubscribe(SessionKey(s), "$share/g/t"));
    }
    let picked = picks(&mut router, 50, online);
    let distinct: BTreeSet<u64> = picked.iter().copied().collect();
    assert_eq!(distinct.len(), 50);
    assert!(distinct.iter().all(|s| s % 2 == 1));
}

#[test]
fn groups_are_keyed_by_name_and_filter() {
    let mut router = Router::new();
    router
        .subscribe(SessionKey(1), "$share/g/a/+", plain())
        .unwrap();
    router
        .subscribe(SessionKey(2), "$share/g/a/#", plain())
        .unwrap();
    router
        .subscribe(SessionKey(3), "$share/h/a/+", plain())
        .unwrap();
    router
        .subscribe(SessionKey(4), "$share/h/a/+", plain())
        .unwrap();
    // Three groups match: (g, a/+), (g, a/#), (h, a/+).
    let mut out = Vec::new();
    router.route("a/b", None, online, &mut out);
    assert_eq!(out.len(), 3);
    assert!(out.iter().any(|d| d.session == SessionKey(1)));
    assert!(out.iter().any(|d| d.session == SessionKey(2)));
    // Leaving one group leaves the same name on another filter alone.
    assert!(!router.unsubscribe(SessionKey(1), "$share/g/a/#"));
    assert!(!router.unsubscribe(SessionKey(1), "$share/h/a/+"));
    assert!(router.unsubscribe(SessionKey(1), "$share/g/a/+"));
    assert_eq!(receivers(&mut router, "a/b").len(), 2);
}

#[test]
fn plain_and_shared_subscriptions_of_one_session_both_count() {
    let mut router = Router::new();
    let s = SessionKey(1);
    router
        .subscribe(s, "t", entry(QoS::AtMostOnce, Some(1)))
        .unwrap();
    router
        .subscribe(s, "$share/g/t", entry(QoS::AtLeastOnce, Some(2)))
        .unwrap();
    assert_eq!(router.len(), 2);
    let mut out = Vec::new();
    router.route("t", None, online, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].qos, QoS::AtLeastOnce);
    let mut ids = out[0].subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    assert!(router.unsubscribe(s, "t"));
    out.clear();
    router.route("t", None, online, &mut out);
    assert_eq!(out[0].subscription_identifiers, [2]);
}

#[test]
fn unsubscribe_prunes_the_tree_back_to_nothing() {
    let filters = [
        "a/b/c",
        "a/b/#",
        "a/+/c",
        "+/#",
        "#",
        "/finance",
        "$SYS/monitor/+",
        "a//",
    ];
    let mut router = Router::new();
    for (i, filter) in filters.iter().enumerate() {
        for s in 0..20 {
            router.subscribe(SessionKey(s), filter, plain()).unwrap();
            router
                .subscribe(
                    SessionKey(s),
                    &format!("$share/g{}/{filter}", i % 2),
                    plain(),
                )
                .unwrap();
        }
    }
    assert_eq!(router.len(), filters.len() * 40);
    assert!(router.node_count() > 0);
    assert!(!router.unsubscribe(SessionKey(99), "a/b/c"));
    assert!(!router.unsubscribe(SessionKey(0), "a/b"));
    assert!(!router.unsubscribe(SessionKey(0), "$share/zz/a/b/c"));
    assert!(!router.unsubscribe(SessionKey(0), "$share/g"));
    for (i, filter) in filters.iter().enumerate() {
        for s in 0..20 {
            assert!(router.unsubscribe(SessionKey(s), filter));
            assert!(router.unsubscribe(SessionKey(s), &format!("$share/g{}/{filter}", i % 2)));
        }
    }
    assert!(router.is_empty());
    assert_eq!(router.node_count(), 0);
    assert!(receivers(&mut router, "a/b/c").is_empty());
}

#[test]
fn partial_unsubscribe_keeps_shared_prefixes() {
    let mut router = router_with(&["a/b/c", "a/b"]);
    assert_eq!(router.node_count(), 3);
    assert!(router.unsubscribe(SessionKey(0), "a/b/c"));
    assert_eq!(router.node_count(), 2);
    assert_eq!(receivers(&mut router, "a/b"), [1]);
}

#[test]
fn wide_fan_out_delivers_once_per_session() {
    let mut router = Router::new();
    for s in 0..10_000 {
        router.subscribe(SessionKey(s), "fan/out", plain()).unwrap();
    }
    for s in 0..5_000 {
        router.subscribe(SessionKey(s), "fan/#", plain()).unwrap();
    }
    let got = receivers(&mut router, "fan/out");
    assert_eq!(got, (0..10_000).collect::<Vec<_>>());
}

/// A topic filter over a small alphabet, wildcards included, always valid.
fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$x"), Just("+")];
    (prop::collection::vec(level, 0..4), any::<bool>()).prop_map(|(levels, hash)| {
        let mut levels: Vec<&str> = levels;
        // A lone empty level would be the empty filter, which is invalid.
        if hash || levels.is_empty() || levels == [""] {
            levels.push("#");
        }
        levels.join("/")
    })
}

/// A topic name over the same alphabet.
fn topic_strategy() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$x")];
    prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
}

fn entry_strategy() -> impl Strategy<Value = SubscriptionEntry> {
    let qos = prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ];
    (qos, any::<bool>(), any::<bool>(), prop::option::of(1u32..5)).prop_map(
        |(qos, no_local, retain_as_published, identifier)| SubscriptionEntry {
            options: SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                ..Default::default()
            },
            identifier,
        },
    )
}

/// (qos, retain_as_published, sorted identifiers) per session.
type Normalized = BTreeMap<u64, (QoS, bool, Vec<u32>)>;

fn normalize(deliveries: &[Delivery]) -> Normalized {
    let mut map = Normalized::new();
    for d in deliveries {
        let mut ids = d.subscription_identifiers.clone();
        ids.sort_unstable();
        assert!(
            map.insert(d.session.0, (d.qos, d.retain_as_published, ids))
                .is_none(),
            "session {} delivered twice",
            d.session.0
        );
    }
    map
}

/// What the router must answer, computed the slow way with the reference matcher.
fn reference(
    subs: &BTreeMap<(u64, String), SubscriptionEntry>,
    topic_name: &str,
    publisher: Option<u64>,
) -> Normalized {
    let mut map = Normalized::new();
    for ((session, filter), e) in subs {
        if !topic::matches(filter, topic_name)
            || (e.options.no_local && publisher == Some(*session))
        {
            continue;
        }
        let slot = map
            .entry(*session)
            .or_insert((QoS::AtMostOnce, false, Vec::new()));
        slot.0 = slot.0.max(e.options.qos);
        slot.1 |= e.options.retain_as_published;
        slot.2.extend(e.identifier);
        slot.2.sort_unstable();
    }
    map
}

proptest! {
    #[test]
    fn route_agrees_with_the_reference_matcher(
        subscribes in prop::collection::vec((0u64..4, filter_strategy(), entry_strategy()), 0..40),
        unsubscribes in prop::collection::vec((0u64..4, filter_strategy()), 0..20),
        topics in prop::collection::vec((topic_strategy(), prop::option::of(0u64..4)), 1..8),
    ) {
        let mut router = Router::new();
        let mut subs = BTreeMap::new();
        for (session, filter, e) in subscribes {
            let existed = router.subscribe(SessionKey(session), &filter, e).unwrap();
            prop_assert_eq!(existed, subs.insert((session, filter), e).is_some());
        }
        for (session, filter) in unsubscribes {
            let removed = router.unsubscribe(SessionKey(session), &filter);
            prop_assert_eq!(removed, subs.remove(&(session, filter)).is_some());
        }
        prop_assert_eq!(router.len(), subs.len());
        let mut out = Vec::new();
        for (topic_name, publisher) in &topics {
            out.clear();
            router.route(topic_name, publisher.map(SessionKey), online, &mut out);
            prop_assert_eq!(
                normalize(&out),
                reference(&subs, topic_name, *publisher),
                "topic {:?}", topic_name
            );
        }
        for (session, filter) in subs.keys() {
            prop_assert!(router.unsubscribe(SessionKey(*session), filter));
        }
        prop_assert_eq!(router.node_count(), 0);
        prop_assert!(router.is_empty());
    }
}
