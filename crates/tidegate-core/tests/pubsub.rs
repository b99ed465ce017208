//! Subscribe / unsubscribe and routing scenarios: SUBACK and UNSUBACK codes, wildcard
//! matching, `$` topics, and version interop.
//!
//! Rule ids are MQTT 5.0 unless marked "(3.1.1)".

mod harness;

use harness::*;
use tidegate_protocol::{QoS, ReasonCode};

#[test]
fn suback_grants_the_requested_qos_per_filter_in_order() {
    // [MQTT-3.8.4-1]/[MQTT-3.8.4-2] SUBACK with the SUBSCRIBE's id (checked by the harness);
    // [MQTT-3.8.4-5]/[MQTT-3.9.3-1] one code per filter, in order.
    let sim = Sim::new();
    let c = sim.connect_v5("a", |_| {});
    let codes = c.subscribe_many(
        &[
            ("x", opts(QoS::ExactlyOnce)),
            ("y", opts(QoS::AtMostOnce)),
            ("z", opts(QoS::AtLeastOnce)),
        ],
        None,
    );
    assert_eq!(
        codes,
        [
            ReasonCode::GrantedQoS2,
            ReasonCode::Success,
            ReasonCode::GrantedQoS1
        ]
    );
}

#[test]
fn messages_reach_matching_wildcard_subscriptions_only() {
    // §4.7.1: `+` one level, `#` the parent and any number of levels.
    let sim = Sim::new();
    let plus = sim.connect_v5("plus", |_| {});
    plus.subscribe("sport/+/score", QoS::AtMostOnce);
    let hash = sim.connect_v5("hash", |_| {});
    hash.subscribe("sport/tennis/#", QoS::AtMostOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    for t in [
        "sport/tennis/score",
        "sport/tennis",
        "sport/golf/score",
        "sport/tennis/player/1",
        "other",
    ] {
        publisher.publish(t, t.to_owned(), QoS::AtMostOnce);
    }
    assert_eq!(
        plus.receive_payloads(),
        ["sport/tennis/score", "sport/golf/score"]
    );
    assert_eq!(
        hash.receive_payloads(),
        [
            "sport/tennis/score",
            "sport/tennis",
            "sport/tennis/player/1"
        ]
    );
}

#[test]
fn hash_and_plus_do_not_match_topics_starting_with_dollar() {
    // [MQTT-4.7.2-1]: filters starting with a wildcard do not match `$` topics; a filter
    // naming the `$` level does (so the messages did flow).
    let sim = Sim::new();
    let wild = sim.connect_v5("wild", |_| {});
    wild.subscribe_many(
        &[("#", opts(QoS::AtMostOnce)), ("+/x", opts(QoS::AtMostOnce))],
        None,
    );
    let explicit = sim.connect_v5("explicit", |_| {});
    explicit.subscribe("$data/#", QoS::AtMostOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish("$data/x", "dollar", QoS::AtMostOnce);
    publisher.publish("data/x", "plain", QoS::AtMostOnce);
    assert_eq!(explicit.receive_payloads(), ["dollar"]);
    let mut got = wild.receive_payloads();
    got.dedup();
    assert_eq!(got, ["plain"]);
}

#[test]
fn hash_does_not_match_sys_topics() {
    // [MQTT-4.7.2-1] for `$SYS/...`, live or retained (the broker may also refuse client
    // publications to `$SYS`, §4.7.2 SHOULD; either way `#` must see nothing).
    let sim = Sim::new();
    let wild = sim.connect_v5("wild", |_| {});
    wild.subscribe("#", QoS::AtMostOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.send_publish("$SYS/x", "sys", QoS::AtMostOnce, |p| p.retain = true);
    wild.assert_silent();
    let late = sim.connect_v5("late", |_| {});
    late.subscribe("#", QoS::AtMostOnce);
    late.assert_silent();
}

#[test]
fn retained_dollar_topics_are_not_replayed_to_wildcard_filters() {
    // [MQTT-4.7.2-1] applies to retained replay too.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("$data/x", "dollar", QoS::AtMostOnce, |p| p.retain = true);
    let wild = sim.connect_v5("wild", |_| {});
    wild.subscribe("#", QoS::AtMostOnce);
    wild.assert_silent();
    let explicit = sim.connect_v5("explicit", |_| {});
    explicit.subscribe("$data/+", QoS::AtMostOnce);
    assert_eq!(explicit.receive_payloads(), ["dollar"]);
}

#[test]
fn unsubscribe_reports_success_or_no_subscription_existed() {
    // [MQTT-3.10.4-4] UNSUBACK with the id (checked by the harness); [MQTT-3.11.3-1] one code
    // per filter in order: 0x00 removed, 0x11 nothing to remove.
    let sim = Sim::new();
    let c = sim.connect_v5("a", |_| {});
    c.subscribe("t", QoS::AtMostOnce);
    assert_eq!(
        c.unsubscribe(&["t", "never"]),
        [ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
    );
    assert_eq!(c.unsubscribe(&["t"]), [ReasonCode::NoSubscriptionExisted]);
}

#[test]
fn after_unsubscribe_no_more_messages_arrive() {
    // [MQTT-3.10.4-1] exact, character-by-character filter comparison; [MQTT-3.10.4-2].
    let sim = Sim::new();
    let c = sim.connect_v5("a", |_| {});
    c.subscribe("a/+", QoS::AtMostOnce);
    c.subscribe("a/b", QoS::AtMostOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    assert_eq!(c.unsubscribe(&["a/+"]), [ReasonCode::Success]);
    publisher.publish("a/c", "c", QoS::AtMostOnce);
    publisher.publish("a/b", "b", QoS::AtMostOnce);
    assert_eq!(c.receive_payloads(), ["b"]);
}

#[test]
fn v311_unsuback_has_no_reason_codes() {
    // (3.1.1) §3.11: UNSUBACK carries only the packet id ([MQTT-3.10.4-4]).
    let sim = Sim::new();
    let c = sim.connect_v311("a", |_| {});
    c.subscribe("t", QoS::AtMostOnce);
    assert!(c.unsubscribe(&["t"]).is_empty());
}

#[test]
fn v311_and_v5_clients_exchange_messages() {
    // §3.3.4 non-normative: v5-only information is lost towards 3.1.1, the message is not.
    let sim = Sim::new();
    let old = sim.connect_v311("old", |_| {});
    old.subscribe("t", QoS::ExactlyOnce);
    let new = sim.connect_v5("new", |_| {});
    new.subscribe("t", QoS::ExactlyOnce);
    new.publish_with("t", "from v5", QoS::ExactlyOnce, |p| {
        p.properties.content_type = Some(utf8("text/plain"));
    });
    old.publish("t", "from 3.1.1", QoS::AtLeastOnce);
    assert_eq!(old.receive_payloads(), ["from v5", "from 3.1.1"]);
    assert_eq!(new.receive_payloads(), ["from v5", "from 3.1.1"]);
}

#[test]
fn v5_publish_without_subscribers_is_acknowledged() {
    // §3.4.2.1: PUBACK 0x00 or 0x10 No matching subscribers, both successes.
    let sim = Sim::new();
    let c = sim.connect_v5("pub", |_| {});
    let p = c.send_publish("nobody", "x", QoS::AtLeastOnce, |_| {});
    let id = p.packet_id.expect("QoS 1");
    c.expect(|p| {
        matches!(p, Packet::PubAck(r) if r.packet_id == id
            && matches!(r.reason_code, ReasonCode::Success | ReasonCode::NoMatchingSubscribers))
    });
}

#[test]
fn messages_from_one_publisher_keep_their_order() {
    // [MQTT-4.6.0-6]: every topic is an ordered topic on non-shared subscriptions.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("t", QoS::AtLeastOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for m in &sent {
        publisher.publish("t", m.clone(), QoS::AtLeastOnce);
    }
    assert_eq!(sub.receive_payloads(), sent);
}

#[test]
fn unsubscribe_still_completes_deliveries_already_started() {
    // [MQTT-3.10.4-3]: QoS 1/2 messages the server started sending are completed, here across
    // a resume.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", persistent);
    sub.subscribe("t", QoS::AtLeastOnce);
    sim.connect_v5("pub", |_| {})
        .publish("t", "started", QoS::AtLeastOnce);
    let first = sub.expect_publish();
    assert_eq!(sub.unsubscribe(&["t"]), [ReasonCode::Success]);
    sub.drop_connection();
    let sub = sim.connect_v5("sub", resume);
    let again = sub.expect_publish();
    assert_eq!(
        (text(&again), again.dup, again.packet_id),
        ("started".into(), true, first.packet_id)
    );
}
