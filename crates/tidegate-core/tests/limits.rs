//! Limit scenarios: the `BrokerConfig` limits and disabled features, as the client sees them
//! (CONNACK properties, SUBACK codes, DISCONNECT reasons), and the offline queue policies.
//!
//! Rule ids are MQTT 5.0 unless marked "(3.1.1)".

mod harness;

use harness::*;
use tidegate_core::BrokerConfig;
use tidegate_core::config::QueueDropPolicy;
use tidegate_protocol::{QoS, ReasonCode};

fn config(edit: impl FnOnce(&mut BrokerConfig)) -> BrokerConfig {
    let mut c = BrokerConfig::default();
    edit(&mut c);
    c
}

/// A failure SUBACK code for a feature the broker announced as unavailable, or a DISCONNECT
/// with that code: §3.2.2.3.11-13 make the SUBSCRIBE a Protocol Error answered with
/// DISCONNECT `code`, and also allow a SUBACK with `code` for a rejected filter. Either passes.
#[track_caller]
fn refused_with(c: &Client, filter: &str, identifier: Option<u32>, code: ReasonCode) {
    let id = c.next_packet_id();
    c.send(Packet::Subscribe(tidegate_protocol::Subscribe {
        packet_id: id,
        filters: vec![tidegate_protocol::SubscribeFilter {
            filter: utf8(filter),
            options: opts(QoS::AtMostOnce),
        }],
        properties: tidegate_protocol::SubscribeProperties {
            subscription_identifier: identifier,
            user_properties: Vec::new(),
        },
    }));
    match c.next() {
        Some(Packet::SubAck(s)) => {
            assert_eq!((s.packet_id, s.reason_codes), (id, vec![code]));
        }
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, code);
            c.expect_closed_silently();
        }
        other => panic!("expected SUBACK or DISCONNECT {code:?}, got {other:?}"),
    }
}

#[test]
fn max_subscriptions_refuses_further_filters_with_0x97() {
    // §3.9.3 0x97 Quota exceeded; [MQTT-3.8.4-5] the other filters are still processed;
    // [MQTT-3.8.4-3] replacing an existing subscription does not add one.
    let sim = Sim::with_config(config(|c| c.max_subscriptions = 2));
    let c = sim.connect_v5("a", |_| {});
    let codes = c.subscribe_many(
        &[
            ("a", opts(QoS::AtLeastOnce)),
            ("b", opts(QoS::AtLeastOnce)),
            ("c", opts(QoS::AtLeastOnce)),
        ],
        None,
    );
    assert_eq!(
        codes,
        [
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS1,
            ReasonCode::QuotaExceeded
        ]
    );
    assert_eq!(c.subscribe("a", QoS::AtMostOnce), ReasonCode::Success);
    let publisher = sim.connect_v5("pub", |_| {});
    for t in ["a", "b", "c"] {
        publisher.publish(t, t.to_owned(), QoS::AtMostOnce);
    }
    assert_eq!(c.receive_payloads(), ["a", "b"]);
    // A freed slot can be used again.
    assert_eq!(c.unsubscribe(&["b"]), [ReasonCode::Success]);
    assert_eq!(c.subscribe("c", QoS::AtMostOnce), ReasonCode::Success);
}

#[test]
fn v311_max_subscriptions_refuses_with_failure_0x80() {
    // (3.1.1) §3.9.3: 0x80 Failure (any v5 failure code is encoded as 0x80 for 3.1.1).
    let sim = Sim::with_config(config(|c| c.max_subscriptions = 1));
    let c = sim.connect_v311("a", |_| {});
    let codes = c.subscribe_many(
        &[("a", opts(QoS::AtMostOnce)), ("b", opts(QoS::AtMostOnce))],
        None,
    );
    assert_eq!(codes[0], ReasonCode::Success);
    assert!(!codes[1].is_success(), "{codes:?}");
}

#[test]
fn invalid_topic_filters_are_refused_with_0x8f() {
    // [MQTT-4.7.1-1] `#` last and alone, [MQTT-4.7.1-2] `+` a whole level, [MQTT-4.7.3-1]
    // non-empty, [MQTT-4.8.2-1] share name then `/`: SUBACK 0x8F Topic Filter invalid, the
    // valid filter in the same packet granted.
    let sim = Sim::new();
    let c = sim.connect_v5("a", |_| {});
    let bad = ["a/#/b", "a+", "", "$share/g", "$share//x", "$share/g+/x"];
    let mut filters: Vec<_> = bad.iter().map(|f| (*f, opts(QoS::AtMostOnce))).collect();
    filters.push(("ok/+/#", opts(QoS::AtMostOnce)));
    let codes = c.subscribe_many(&filters, None);
    let mut want = vec![ReasonCode::TopicFilterInvalid; bad.len()];
    want.push(ReasonCode::Success);
    assert_eq!(codes, want);
    assert!(!c.is_closed());
}

#[test]
fn v311_invalid_topic_filter_is_refused_with_failure() {
    // (3.1.1) §3.9.3: 0x80 Failure for the bad filter, the good one granted.
    let sim = Sim::new();
    let c = sim.connect_v311("a", |_| {});
    let codes = c.subscribe_many(
        &[
            ("a/#/b", opts(QoS::AtMostOnce)),
            ("ok", opts(QoS::AtMostOnce)),
        ],
        None,
    );
    assert!(!codes[0].is_success(), "{codes:?}");
    assert_eq!(codes[1], ReasonCode::Success);
}

#[test]
fn offline_queue_drop_oldest_keeps_the_newest_messages() {
    // BrokerConfig::max_queued_messages with QueueDropPolicy::DropOldest.
    let sim = Sim::with_config(config(|c| c.max_queued_messages = 3));
    let sub = sim.connect_v5("sub", persistent);
    sub.subscribe("t", QoS::AtLeastOnce);
    sub.drop_connection();
    let publisher = sim.connect_v5("pub", |_| {});
    for i in 1..=5 {
        publisher.publish("t", format!("m{i}"), QoS::AtLeastOnce);
    }
    let sub = sim.connect_v5("sub", resume);
    assert_eq!(sub.receive_payloads(), ["m3", "m4", "m5"]);
}

#[test]
fn offline_queue_drop_oldest_drops_qos0_first() {
    // QueueDropPolicy::DropOldest: "the oldest QoS 0 message, else the oldest message". (A
    // broker that does not queue QoS 0 for offline clients at all, §4.1, also meets this.)
    let sim = Sim::with_config(config(|c| c.max_queued_messages = 3));
    let sub = sim.connect_v5("sub", persistent);
    sub.subscribe("t", QoS::AtLeastOnce);
    sub.drop_connection();
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish("t", "q1-a", QoS::AtLeastOnce);
    publisher.publish("t", "q0", QoS::AtMostOnce);
    publisher.publish("t", "q1-b", QoS::AtLeastOnce);
    publisher.publish("t", "q1-c", QoS::AtLeastOnce);
    let sub = sim.connect_v5("sub", resume);
    assert_eq!(sub.receive_payloads(), ["q1-a", "q1-b", "q1-c"]);
}

#[test]
fn offline_queue_drop_newest_keeps_the_oldest_messages() {
    // QueueDropPolicy::DropNewest: refuse the new message.
    let sim = Sim::with_config(config(|c| {
        c.max_queued_messages = 3;
        c.queue_drop_policy = QueueDropPolicy::DropNewest;
    }));
    let sub = sim.connect_v5("sub", persistent);
    sub.subscribe("t", QoS::AtLeastOnce);
    sub.drop_connection();
    let publisher = sim.connect_v5("pub", |_| {});
    for i in 1..=5 {
        publisher.publish("t", format!("m{i}"), QoS::AtLeastOnce);
    }
    let sub = sim.connect_v5("sub", resume);
    assert_eq!(sub.receive_payloads(), ["m1", "m2", "m3"]);
}

#[test]
fn max_qos_1_is_announced_and_downgrades_subscriptions() {
    // [MQTT-3.2.2-9] Maximum QoS in CONNACK; [MQTT-3.2.2-10] SUBSCRIBE at QoS 2 still accepted,
    // granted QoS 1 ([MQTT-3.8.4-6] the code shows the QoS granted).
    let sim = Sim::with_config(config(|c| c.max_qos = QoS::AtLeastOnce));
    let c = sim.connect_v5("a", |_| {});
    assert_eq!(c.connack().properties.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(c.subscribe("t", QoS::ExactlyOnce), ReasonCode::GrantedQoS1);
}

#[test]
fn publish_above_max_qos_is_disconnected_with_0x9b() {
    // [MQTT-3.2.2-11]: a PUBLISH above the announced Maximum QoS is a Protocol Error answered
    // with DISCONNECT 0x9B (QoS not supported).
    let sim = Sim::with_config(config(|c| c.max_qos = QoS::AtLeastOnce));
    let c = sim.connect_v5("a", |_| {});
    c.send_publish("t", "x", QoS::ExactlyOnce, |_| {});
    c.expect_disconnect(ReasonCode::QoSNotSupported);
}

#[test]
fn will_qos_above_max_qos_is_refused_with_connack_0x9b() {
    // [MQTT-3.2.2-12]: reject the connection, CONNACK 0x9B, close.
    let sim = Sim::with_config(config(|c| c.max_qos = QoS::AtLeastOnce));
    let c = sim.connect_v5("a", |c| c.will = Some(will("w", "x", QoS::ExactlyOnce)));
    assert_eq!(c.connack().reason_code, ReasonCode::QoSNotSupported);
    c.expect_closed_silently();
}

#[test]
fn retain_unavailable_is_announced_and_enforced() {
    // §3.2.2.3.5 Retain Available 0; [MQTT-3.2.2-14] a retained PUBLISH is then a Protocol
    // Error answered with DISCONNECT 0x9A.
    let sim = Sim::with_config(config(|c| c.retain_available = false));
    let c = sim.connect_v5("a", |_| {});
    assert_eq!(c.connack().properties.retain_available, Some(false));
    c.send_publish("t", "x", QoS::AtMostOnce, |p| p.retain = true);
    c.expect_disconnect(ReasonCode::RetainNotSupported);
}

#[test]
fn will_retain_without_retain_support_is_refused_with_connack_0x9a() {
    // [MQTT-3.2.2-13].
    let sim = Sim::with_config(config(|c| c.retain_available = false));
    let c = sim.connect_v5("a", |c| {
        let mut w = will("w", "x", QoS::AtMostOnce);
        w.retain = true;
        c.will = Some(w);
    });
    assert_eq!(c.connack().reason_code, ReasonCode::RetainNotSupported);
    c.expect_closed_silently();
}

#[test]
fn wildcard_subscriptions_unavailable_are_announced_and_refused_with_0xa2() {
    // §3.2.2.3.11.
    let sim = Sim::with_config(config(|c| c.wildcard_subscriptions = false));
    let c = sim.connect_v5("a", |_| {});
    assert_eq!(
        c.connack().properties.wildcard_subscription_available,
        Some(false)
    );
    assert_eq!(
        c.subscribe("plain/topic", QoS::AtMostOnce),
        ReasonCode::Success
    );
    refused_with(
        &c,
        "a/+",
        None,
        ReasonCode::WildcardSubscriptionsNotSupported,
    );
}

#[test]
fn shared_subscriptions_unavailable_are_announced_and_refused_with_0x9e() {
    // §3.2.2.3.13.
    let sim = Sim::with_config(config(|c| c.shared_subscriptions = false));
    let c = sim.connect_v5("a", |_| {});
    assert_eq!(
        c.connack().properties.shared_subscription_available,
        Some(false)
    );
    refused_with(
        &c,
        "$share/g/t",
        None,
        ReasonCode::SharedSubscriptionsNotSupported,
    );
}

#[test]
fn subscription_identifiers_unavailable_are_announced_and_refused_with_0xa1() {
    // §3.2.2.3.12.
    let sim = Sim::with_config(config(|c| c.subscription_identifiers = false));
    let c = sim.connect_v5("a", |_| {});
    assert_eq!(
        c.connack().properties.subscription_identifiers_available,
        Some(false)
    );
    refused_with(
        &c,
        "t",
        Some(3),
        ReasonCode::SubscriptionIdentifiersNotSupported,
    );
}

#[test]
fn topic_filter_over_the_level_limit_is_refused() {
    // BrokerConfig::max_topic_levels (the spec leaves the code to the server: any failure).
    let sim = Sim::with_config(config(|c| c.max_topic_levels = 3));
    let c = sim.connect_v5("a", |_| {});
    let codes = c.subscribe_many(
        &[
            ("a/b/c", opts(QoS::AtMostOnce)),
            ("a/b/c/d", opts(QoS::AtMostOnce)),
        ],
        None,
    );
    assert_eq!(codes[0], ReasonCode::Success);
    assert!(!codes[1].is_success(), "{codes:?}");
}
