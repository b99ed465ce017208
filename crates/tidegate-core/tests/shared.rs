//! Shared subscription scenarios (MQTT 5.0 §4.8.2): each message to exactly one member,
//! distribution, offline members, unsubscribing members, no retained replay, No Local.

mod harness;

use harness::*;
use std::collections::BTreeSet;
use tidegate_protocol::{QoS, ReasonCode, SubscriptionOptions};

const GROUP: &str = "$share/workers/jobs/+";

fn member(sim: &Sim, id: &str, customize: impl FnOnce(&mut tidegate_protocol::Connect)) -> Client {
    let c = sim.connect_v5(id, customize);
    assert_eq!(
        c.subscribe(GROUP, QoS::AtLeastOnce),
        ReasonCode::GrantedQoS1
    );
    c
}

fn publish_jobs(sim: &Sim, n: usize) -> Vec<String> {
    let publisher = sim.connect_v5("pub", |_| {});
    (0..n)
        .map(|i| {
            let m = format!("job{i}");
            publisher.publish("jobs/x", m.clone(), QoS::AtLeastOnce);
            m
        })
        .collect()
}

/// `part` keeps the relative order of `all`.
fn is_subsequence(part: &[String], all: &[String]) -> bool {
    let mut it = all.iter();
    part.iter().all(|p| it.any(|a| a == p))
}

#[test]
fn each_message_goes_to_exactly_one_member_and_both_get_work() {
    // §4.8.2: each message is sent to only one of the sessions sharing the subscription; the
    // group's messages are distributed (Tidegate: round-robin).
    let sim = Sim::new();
    let a = member(&sim, "a", |_| {});
    let b = member(&sim, "b", |_| {});
    let sent = publish_jobs(&sim, 10);
    let got_a = a.receive_payloads();
    let got_b = b.receive_payloads();
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "a={got_a:?} b={got_b:?}"
    );
    let set_a: BTreeSet<_> = got_a.iter().collect();
    let set_b: BTreeSet<_> = got_b.iter().collect();
    assert!(
        set_a.is_disjoint(&set_b),
        "delivered twice: a={got_a:?} b={got_b:?}"
    );
    assert_eq!(got_a.len() + got_b.len(), sent.len());
    assert_eq!(set_a.len() + set_b.len(), sent.len());
    assert!(is_subsequence(&got_a, &sent) && is_subsequence(&got_b, &sent));
}

#[test]
fn an_offline_member_is_skipped() {
    // §4.8.2 leaves the choice of member to the server; Tidegate prefers connected members, so
    // a member whose session is offline gets nothing, now or on resume.
    let sim = Sim::new();
    let a = member(&sim, "a", |_| {});
    let b = member(&sim, "b", persistent);
    b.drop_connection();
    let sent = publish_jobs(&sim, 6);
    assert_eq!(a.receive_payloads(), sent);
    let b = sim.connect_v5("b", resume);
    assert!(b.connack().session_present);
    b.assert_silent();
}

#[test]
fn an_unsubscribed_member_gets_no_more_messages() {
    // [MQTT-3.10.4-2]: the server stops adding messages for the removed subscription.
    let sim = Sim::new();
    let a = member(&sim, "a", |_| {});
    let b = member(&sim, "b", |_| {});
    assert_eq!(b.unsubscribe(&[GROUP]), [ReasonCode::Success]);
    let sent = publish_jobs(&sim, 4);
    assert_eq!(a.receive_payloads(), sent);
    b.assert_silent();
}

#[test]
fn shared_and_plain_subscriptions_each_receive() {
    // §4.8.2: a plain subscription to the same topic is independent of the group.
    let sim = Sim::new();
    let a = member(&sim, "a", |_| {});
    let watcher = sim.connect_v5("watcher", |_| {});
    watcher.subscribe("jobs/#", QoS::AtLeastOnce);
    let sent = publish_jobs(&sim, 3);
    assert_eq!(a.receive_payloads(), sent);
    assert_eq!(watcher.receive_payloads(), sent);
}

#[test]
fn different_groups_each_receive_every_message() {
    // §4.8.2: the share name identifies the group; each group gets one copy.
    let sim = Sim::new();
    let a = sim.connect_v5("a", |_| {});
    a.subscribe("$share/g1/jobs/+", QoS::AtLeastOnce);
    let b = sim.connect_v5("b", |_| {});
    b.subscribe("$share/g2/jobs/+", QoS::AtLeastOnce);
    let sent = publish_jobs(&sim, 3);
    assert_eq!(a.receive_payloads(), sent);
    assert_eq!(b.receive_payloads(), sent);
}

#[test]
fn retained_messages_are_not_replayed_to_a_shared_subscription() {
    // §3.3.1.3: retained messages are sent when a new *non-shared* subscription is made.
    let sim = Sim::new();
    sim.connect_v5("pub", |_| {})
        .publish_with("jobs/x", "old", QoS::AtLeastOnce, |p| p.retain = true);
    let a = member(&sim, "a", |_| {});
    a.assert_silent();
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]: DISCONNECT 0x82.
    let sim = Sim::new();
    let c = sim.connect_v5("a", |_| {});
    c.send(Packet::Subscribe(tidegate_protocol::Subscribe {
        packet_id: pid(1),
        filters: vec![tidegate_protocol::SubscribeFilter {
            filter: utf8(GROUP),
            options: SubscriptionOptions {
                no_local: true,
                ..opts(QoS::AtLeastOnce)
            },
        }],
        properties: Default::default(),
    }));
    c.expect_disconnect(ReasonCode::ProtocolError);
}

#[test]
fn shared_delivery_carries_only_the_receivers_subscription_identifier() {
    // §3.3.4: for a shared subscription only the identifiers from the receiving client's
    // SUBSCRIBE are returned.
    let sim = Sim::new();
    let a = sim.connect_v5("a", |_| {});
    a.subscribe_with(GROUP, opts(QoS::AtLeastOnce), Some(11));
    let b = sim.connect_v5("b", |_| {});
    b.subscribe_with(GROUP, opts(QoS::AtLeastOnce), Some(22));
    publish_jobs(&sim, 4);
    for p in a.receive() {
        assert_eq!(p.properties.subscription_identifiers, [11]);
    }
    for p in b.receive() {
        assert_eq!(p.properties.subscription_identifiers, [22]);
    }
}
