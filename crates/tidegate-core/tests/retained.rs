//! Retained message scenarios: store, replace, clear, replay on subscribe, Retain Handling,
//! Retain As Published, and expiry of retained messages.
//!
//! Rule ids are MQTT 5.0 unless marked "(3.1.1)".

mod harness;

use harness::*;
use tidegate_protocol::{QoS, ReasonCode, RetainHandling, SubscriptionOptions};

fn retain(p: &mut tidegate_protocol::Publish) {
    p.retain = true;
}

fn rh(handling: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        retain_handling: handling,
        ..opts(QoS::AtLeastOnce)
    }
}

#[test]
fn retained_message_is_sent_to_a_new_subscriber_with_retain_set() {
    // [MQTT-3.3.1-5] stored; [MQTT-3.3.1-9] sent on subscribe (Retain Handling 0) with RETAIN=1.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("room/1", "21C", QoS::AtLeastOnce, retain);
    let sub = sim.connect_v5("sub", |_| {});
    assert_eq!(
        sub.subscribe("room/+", QoS::AtLeastOnce),
        ReasonCode::GrantedQoS1
    );
    let got = sub.receive();
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!(
        (p.topic.as_str(), text(p).as_str(), p.retain, p.qos),
        ("room/1", "21C", true, QoS::AtLeastOnce)
    );
    sub.assert_silent();
}

#[test]
fn v311_subscriber_gets_retained_messages_with_retain_set() {
    // (3.1.1) [MQTT-3.3.1-6] retained messages go to new subscriptions; [MQTT-3.3.1-8] with
    // RETAIN=1.
    let sim = Sim::new();
    sim.connect_v311("pub", |_| {})
        .publish_with("room/1", "21C", QoS::AtMostOnce, retain);
    let sub = sim.connect_v311("sub", |_| {});
    sub.subscribe("room/#", QoS::AtMostOnce);
    let got = sub.receive();
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
}

#[test]
fn a_new_retained_message_replaces_the_old_one() {
    // [MQTT-3.3.1-5]: replace any existing retained message for the topic.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("t", "old", QoS::AtMostOnce, retain);
    publisher.publish_with("t", "new", QoS::AtMostOnce, retain);
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("t", QoS::AtMostOnce);
    assert_eq!(sub.receive_payloads(), ["new"]);
}

#[test]
fn a_non_retained_publish_leaves_the_retained_message_alone() {
    // [MQTT-3.3.1-8]: RETAIN=0 neither stores nor replaces.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("t", "kept", QoS::AtMostOnce, retain);
    publisher.publish("t", "live", QoS::AtMostOnce);
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("t", QoS::AtMostOnce);
    assert_eq!(sub.receive_payloads(), ["kept"]);
}

#[test]
fn an_empty_retained_payload_clears_the_topic_and_is_still_forwarded() {
    // [MQTT-3.3.1-6] the retained message is removed; [MQTT-3.3.1-7] the empty one is not
    // stored; §3.3.1.3 it is processed as normal and sent to current subscribers.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("t", "on", QoS::AtMostOnce, retain);
    let current = sim.connect_v5("current", |_| {});
    current.subscribe("t", QoS::AtMostOnce);
    assert_eq!(current.receive_payloads(), ["on"]);

    publisher.publish_with("t", "", QoS::AtMostOnce, retain);
    let live = current.receive();
    assert_eq!(live.len(), 1);
    assert!(live[0].payload.is_empty());

    let late = sim.connect_v5("late", |_| {});
    late.subscribe("t", QoS::AtMostOnce);
    late.assert_silent();
}

#[test]
fn retained_replay_uses_the_lower_of_message_and_subscription_qos() {
    // [MQTT-3.8.4-8].
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("t", "x", QoS::ExactlyOnce, retain);
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("t", QoS::AtLeastOnce);
    let got = sub.receive();
    assert_eq!(
        got.iter().map(|p| p.qos).collect::<Vec<_>>(),
        [QoS::AtLeastOnce]
    );
}

#[test]
fn retain_handling_0_sends_retained_messages_on_every_subscribe() {
    // [MQTT-3.3.1-9]; [MQTT-3.8.4-4] re-sent when the subscription is replaced.
    let sim = Sim::new();
    sim.connect_v5("pub", |_| {})
        .publish_with("t", "x", QoS::AtMostOnce, retain);
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe_with("t", rh(RetainHandling::SendAtSubscribe), None);
    assert_eq!(sub.receive_payloads(), ["x"]);
    sub.subscribe_with("t", rh(RetainHandling::SendAtSubscribe), None);
    assert_eq!(sub.receive_payloads(), ["x"]);
}

#[test]
fn retain_handling_1_sends_retained_messages_only_for_a_new_subscription() {
    // [MQTT-3.3.1-10].
    let sim = Sim::new();
    sim.connect_v5("pub", |_| {})
        .publish_with("t", "x", QoS::AtMostOnce, retain);
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe_with("t", rh(RetainHandling::SendIfNew), None);
    assert_eq!(sub.receive_payloads(), ["x"]);
    sub.subscribe_with("t", rh(RetainHandling::SendIfNew), None);
    sub.assert_silent();
    // After an unsubscribe the subscription is new again.
    sub.unsubscribe(&["t"]);
    sub.subscribe_with("t", rh(RetainHandling::SendIfNew), None);
    assert_eq!(sub.receive_payloads(), ["x"]);
}

#[test]
fn retain_handling_2_never_sends_retained_messages() {
    // [MQTT-3.3.1-11]; later live messages still flow.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("t", "x", QoS::AtMostOnce, retain);
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe_with("t", rh(RetainHandling::DoNotSend), None);
    sub.assert_silent();
    publisher.publish("t", "live", QoS::AtMostOnce);
    assert_eq!(sub.receive_payloads(), ["live"]);
}

#[test]
fn live_messages_clear_retain_unless_retain_as_published() {
    // [MQTT-3.3.1-12] RAP=0: RETAIN=0 on forwarded messages; [MQTT-3.3.1-13] RAP=1: as
    // published.
    let sim = Sim::new();
    let plain = sim.connect_v5("plain", |_| {});
    plain.subscribe("t", QoS::AtMostOnce);
    let rap = sim.connect_v5("rap", |_| {});
    rap.subscribe_with(
        "t",
        SubscriptionOptions {
            retain_as_published: true,
            ..opts(QoS::AtMostOnce)
        },
        None,
    );
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("t", "r", QoS::AtMostOnce, retain);
    publisher.publish("t", "n", QoS::AtMostOnce);
    let flags = |c: &Client| {
        c.receive()
            .iter()
            .map(|p| (text(p), p.retain))
            .collect::<Vec<_>>()
    };
    assert_eq!(flags(&plain), [("r".into(), false), ("n".into(), false)]);
    assert_eq!(flags(&rap), [("r".into(), true), ("n".into(), false)]);
}

#[test]
fn v311_live_messages_have_retain_cleared() {
    // (3.1.1) [MQTT-3.3.1-9]: RETAIN=0 when sent because of an established subscription.
    let sim = Sim::new();
    let sub = sim.connect_v311("sub", |_| {});
    sub.subscribe("t", QoS::AtMostOnce);
    sim.connect_v311("pub", |_| {})
        .publish_with("t", "r", QoS::AtMostOnce, retain);
    let got = sub.receive();
    assert_eq!(got.iter().map(|p| p.retain).collect::<Vec<_>>(), [false]);
}

#[test]
fn retained_message_expires_with_its_message_expiry_interval() {
    // [MQTT-3.3.2-5] not delivered once expired; [MQTT-3.3.2-6] the interval forwarded is the
    // remaining lifetime.
    let sim = Sim::new();
    sim.connect_v5("pub", |_| {})
        .publish_with("t", "brief", QoS::AtMostOnce, |p| {
            p.retain = true;
            p.properties.message_expiry_interval = Some(10);
        });
    sim.advance(secs(4));
    let early = sim.connect_v5("early", |_| {});
    early.subscribe("t", QoS::AtMostOnce);
    let got = early.receive();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].properties.message_expiry_interval, Some(6));

    sim.advance(secs(7));
    let late = sim.connect_v5("late", |_| {});
    late.subscribe("t", QoS::AtMostOnce);
    late.assert_silent();
}

#[test]
fn retained_messages_are_replayed_for_every_matching_topic() {
    // §3.3.1.3: the last retained message on *each* matching topic is sent.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    for (t, m) in [("a/1", "one"), ("a/2", "two"), ("b/1", "other")] {
        publisher.publish_with(t, m, QoS::AtMostOnce, retain);
    }
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("a/#", QoS::AtMostOnce);
    let mut got = sub.receive_payloads();
    got.sort();
    assert_eq!(got, ["one", "two"]);
}
