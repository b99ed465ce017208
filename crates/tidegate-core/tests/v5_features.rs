//! MQTT 5.0 feature scenarios: topic aliases both ways, subscription identifiers, No Local,
//! message expiry, property forwarding and the client's Maximum Packet Size.

mod harness;

use harness::*;
use std::collections::HashMap;
use tidegate_protocol::{Publish, QoS, ReasonCode, SubscriptionOptions};

// ---- topic aliases, client -> broker --------------------------------------------------------

fn alias(topic: &str, alias: u16) -> impl FnOnce(&mut Publish) {
    let topic = utf8(topic);
    move |p| {
        p.topic = topic;
        p.properties.topic_alias = Some(alias);
    }
}

#[test]
fn inbound_topic_alias_is_set_used_and_remapped() {
    // §3.3.2.3.4 / §3.3.4: a non-empty topic with an alias sets the mapping, an empty topic
    // uses it, a new topic with the same alias replaces it; [MQTT-3.3.2-12] any alias up to our
    // maximum is accepted. Subscribers see the real topic and no alias of the publisher's.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("a/#", QoS::AtMostOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    assert_eq!(publisher.connack().properties.topic_alias_maximum, Some(64));
    publisher.send_publish("", "1", QoS::AtMostOnce, alias("a/b", 1));
    publisher.send_publish("", "2", QoS::AtMostOnce, alias("", 1));
    publisher.send_publish("", "3", QoS::AtMostOnce, alias("a/c", 1));
    publisher.send_publish("", "4", QoS::AtMostOnce, alias("", 1));
    publisher.send_publish("", "5", QoS::AtLeastOnce, alias("a/d", 64));
    publisher.send_publish("", "6", QoS::AtLeastOnce, alias("", 64));
    assert!(!publisher.is_closed());
    let got: Vec<_> = sub
        .receive()
        .iter()
        .map(|p| (p.topic.to_string(), text(p), p.properties.topic_alias))
        .collect();
    let want: Vec<_> = [
        ("a/b", "1"),
        ("a/b", "2"),
        ("a/c", "3"),
        ("a/c", "4"),
        ("a/d", "5"),
        ("a/d", "6"),
    ]
    .iter()
    .map(|(t, m)| (t.to_string(), m.to_string(), None))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn inbound_topic_alias_0_is_invalid() {
    // [MQTT-3.3.2-8], §3.3.4: DISCONNECT 0x94 Topic Alias invalid.
    let sim = Sim::new();
    let c = sim.connect_v5("pub", |_| {});
    c.send_publish("", "x", QoS::AtMostOnce, alias("a/b", 0));
    c.expect_disconnect(ReasonCode::TopicAliasInvalid);
}

#[test]
fn inbound_topic_alias_above_our_maximum_is_invalid() {
    // [MQTT-3.3.2-9], §3.3.4: DISCONNECT 0x94.
    let sim = Sim::new();
    let c = sim.connect_v5("pub", |_| {});
    c.send_publish("", "x", QoS::AtMostOnce, alias("a/b", 65));
    c.expect_disconnect(ReasonCode::TopicAliasInvalid);
}

#[test]
fn inbound_unknown_alias_with_empty_topic_is_a_protocol_error() {
    // §3.3.4 step 3a: no mapping and a zero-length topic: DISCONNECT 0x82.
    let sim = Sim::new();
    let c = sim.connect_v5("pub", |_| {});
    c.send_publish("", "x", QoS::AtMostOnce, alias("", 7));
    c.expect_disconnect(ReasonCode::ProtocolError);
}

#[test]
fn inbound_empty_topic_without_alias_is_a_protocol_error() {
    // §3.3.2.1: a zero-length topic name without a Topic Alias is a Protocol Error.
    let sim = Sim::new();
    let c = sim.connect_v5("pub", |_| {});
    c.send_publish("", "x", QoS::AtMostOnce, |_| {});
    c.expect_disconnect(ReasonCode::ProtocolError);
}

#[test]
fn inbound_topic_aliases_do_not_survive_the_connection() {
    // [MQTT-3.3.2-7]: mappings last only for the network connection.
    let sim = Sim::new();
    let c = sim.connect_v5("pub", persistent);
    c.send_publish("", "x", QoS::AtMostOnce, alias("a/b", 1));
    c.drop_connection();
    let c = sim.connect_v5("pub", resume);
    c.send_publish("", "y", QoS::AtMostOnce, alias("", 1));
    c.expect_disconnect(ReasonCode::ProtocolError);
}

// ---- topic aliases, broker -> client --------------------------------------------------------

/// The client side of outbound aliases: resolves each PUBLISH to its topic name as a
/// conforming client must ([MQTT-3.3.2-10]), panicking on an alias used before it is set.
fn resolve(table: &mut HashMap<u16, String>, p: &Publish) -> String {
    match (p.topic.is_empty(), p.properties.topic_alias) {
        (false, Some(a)) => {
            table.insert(a, p.topic.to_string());
            p.topic.to_string()
        }
        (false, None) => p.topic.to_string(),
        (true, Some(a)) => table
            .get(&a)
            .cloned()
            .unwrap_or_else(|| panic!("alias {a} used before being set: {p:?}")),
        (true, None) => panic!("PUBLISH without topic or alias: {p:?}"),
    }
}

#[test]
fn outbound_topic_aliases_always_resolve_to_the_right_topic() {
    // [MQTT-3.3.2-11] aliases within the client's maximum (also checked by the harness); the
    // broker may or may not use them (§3.3.2.3.4 "the sender decides"), but whatever it sends
    // must resolve to the topic published, across more topics than the client has aliases.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |c| c.properties.topic_alias_maximum = Some(2));
    sub.subscribe("s/#", QoS::AtLeastOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    let topics = [
        "s/a", "s/b", "s/c", "s/a", "s/b", "s/a", "s/c", "s/c", "s/b", "s/a",
    ];
    for (i, t) in topics.iter().enumerate() {
        publisher.publish(t, format!("{i}"), QoS::AtLeastOnce);
    }
    let mut table = HashMap::new();
    let got: Vec<_> = sub
        .receive()
        .iter()
        .map(|p| (resolve(&mut table, p), text(p)))
        .collect();
    let want: Vec<_> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn no_outbound_topic_alias_without_a_client_maximum() {
    // [MQTT-3.1.2-27]: Topic Alias Maximum absent or 0: the server sends no alias.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |c| c.properties.topic_alias_maximum = Some(0));
    sub.subscribe("t", QoS::AtMostOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    for _ in 0..3 {
        publisher.publish("t", "x", QoS::AtMostOnce);
    }
    for p in sub.receive() {
        assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("t", None));
    }
}

#[test]
fn outbound_topic_aliases_restart_on_a_new_connection() {
    // [MQTT-3.3.2-7]: a resumed session must not use aliases of the previous connection.
    let sim = Sim::new();
    let cfg = |c: &mut tidegate_protocol::Connect| {
        resume(c);
        c.properties.topic_alias_maximum = Some(5);
    };
    let sub = sim.connect_v5("sub", cfg);
    sub.subscribe("t", QoS::AtLeastOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish("t", "1", QoS::AtLeastOnce);
    publisher.publish("t", "2", QoS::AtLeastOnce);
    let mut table = HashMap::new();
    for p in sub.receive() {
        resolve(&mut table, &p);
    }
    sub.drop_connection();
    publisher.publish("t", "3", QoS::AtLeastOnce);
    let sub = sim.connect_v5("sub", cfg);
    let mut fresh = HashMap::new();
    let got: Vec<_> = sub
        .receive()
        .iter()
        .map(|p| resolve(&mut fresh, p))
        .collect();
    assert_eq!(got, ["t"]);
}

// ---- subscription identifiers ---------------------------------------------------------------

#[test]
fn subscription_identifier_is_delivered_with_matching_messages() {
    // [MQTT-3.3.4-3]; a subscription without identifier adds none.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe_with("a/+", opts(QoS::AtMostOnce), Some(7));
    sub.subscribe("b", QoS::AtMostOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish("a/x", "1", QoS::AtMostOnce);
    publisher.publish("b", "2", QoS::AtMostOnce);
    let ids: Vec<_> = sub
        .receive()
        .iter()
        .map(|p| p.properties.subscription_identifiers.clone())
        .collect();
    assert_eq!(ids, [vec![7], vec![]]);
}

#[test]
fn overlapping_subscriptions_deliver_one_copy_with_max_qos_and_every_identifier() {
    // [MQTT-3.3.4-2] at the maximum QoS of the matching subscriptions; [MQTT-3.3.4-4] a single
    // copy carries every identifier. (The spec also allows one copy per subscription; Tidegate's
    // router documents merging, so that is what is checked.)
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe_with("a/+", opts(QoS::AtMostOnce), Some(1));
    sub.subscribe_with("a/#", opts(QoS::AtLeastOnce), Some(2));
    sub.subscribe("a/x", QoS::AtMostOnce);
    sim.connect_v5("pub", |_| {})
        .publish("a/x", "m", QoS::ExactlyOnce);
    let got = sub.receive();
    assert_eq!(got.len(), 1, "{got:?}");
    let mut ids = got[0].properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!((got[0].qos, ids), (QoS::AtLeastOnce, vec![1, 2]));
}

#[test]
fn resubscribing_replaces_the_subscription_identifier() {
    // [MQTT-3.8.4-3]: the new subscription replaces the old, identifier included.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe_with("t", opts(QoS::AtMostOnce), Some(5));
    sub.subscribe_with("t", opts(QoS::AtMostOnce), None);
    sim.connect_v5("pub", |_| {})
        .publish("t", "m", QoS::AtMostOnce);
    let got = sub.receive();
    assert_eq!(got.len(), 1);
    assert!(got[0].properties.subscription_identifiers.is_empty());
}

// ---- No Local -------------------------------------------------------------------------------

#[test]
fn no_local_suppresses_only_the_clients_own_messages() {
    // [MQTT-3.8.3-3].
    let sim = Sim::new();
    let me = sim.connect_v5("me", |_| {});
    me.subscribe_with(
        "chat",
        SubscriptionOptions {
            no_local: true,
            ..opts(QoS::AtLeastOnce)
        },
        None,
    );
    let other = sim.connect_v5("other", |_| {});
    other.subscribe("chat", QoS::AtLeastOnce);
    me.publish("chat", "mine", QoS::AtLeastOnce);
    other.publish("chat", "theirs", QoS::AtLeastOnce);
    assert_eq!(me.receive_payloads(), ["theirs"]);
    assert_eq!(other.receive_payloads(), ["mine", "theirs"]);
}

#[test]
fn without_no_local_a_client_receives_its_own_messages() {
    let sim = Sim::new();
    let me = sim.connect_v5("me", |_| {});
    me.subscribe("chat", QoS::AtMostOnce);
    me.publish("chat", "mine", QoS::AtMostOnce);
    assert_eq!(me.receive_payloads(), ["mine"]);
}

// ---- message expiry -------------------------------------------------------------------------

#[test]
fn message_expired_while_queued_offline_is_not_delivered() {
    // [MQTT-3.3.2-5]; [MQTT-3.3.2-6] the survivor carries its remaining lifetime.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", persistent);
    sub.subscribe("t", QoS::AtLeastOnce);
    sub.drop_connection();
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("t", "short", QoS::AtLeastOnce, |p| {
        p.properties.message_expiry_interval = Some(5);
    });
    publisher.publish_with("t", "long", QoS::AtLeastOnce, |p| {
        p.properties.message_expiry_interval = Some(60);
    });
    sim.advance(secs(20));
    let sub = sim.connect_v5("sub", resume);
    let got = sub.receive();
    let summary: Vec<_> = got
        .iter()
        .map(|p| (text(p), p.properties.message_expiry_interval))
        .collect();
    assert_eq!(summary, [("long".into(), Some(40))]);
}

#[test]
fn message_expiry_is_forwarded_unchanged_when_delivered_at_once() {
    // [MQTT-3.3.2-6]: nothing waited, nothing subtracted; no expiry stays no expiry.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("t", QoS::AtMostOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("t", "a", QoS::AtMostOnce, |p| {
        p.properties.message_expiry_interval = Some(60);
    });
    publisher.publish("t", "b", QoS::AtMostOnce);
    let expiries: Vec<_> = sub
        .receive()
        .iter()
        .map(|p| p.properties.message_expiry_interval)
        .collect();
    assert_eq!(expiries, [Some(60), None]);
}

#[test]
fn message_expired_behind_a_full_window_is_not_delivered() {
    // [MQTT-3.3.2-5]: delivery had not started (queued behind Receive Maximum) when it expired.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |c| c.properties.receive_maximum = Some(1));
    sub.subscribe("t", QoS::AtLeastOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish("t", "first", QoS::AtLeastOnce);
    publisher.publish_with("t", "stale", QoS::AtLeastOnce, |p| {
        p.properties.message_expiry_interval = Some(5);
    });
    publisher.publish("t", "last", QoS::AtLeastOnce);
    let first = sub.expect_publish();
    sim.advance(secs(10));
    sub.puback(first.packet_id.expect("QoS 1"));
    assert_eq!(sub.receive_payloads(), ["last"]);
}

#[test]
fn inflight_message_is_resent_even_after_its_expiry() {
    // [MQTT-4.3.3-7] (and §4.4): once a PUBLISH has been sent, expiry no longer applies to it.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", persistent);
    sub.subscribe("t", QoS::AtLeastOnce);
    sim.connect_v5("pub", |_| {})
        .publish_with("t", "x", QoS::AtLeastOnce, |p| {
            p.properties.message_expiry_interval = Some(5);
        });
    let first = sub.expect_publish();
    sub.drop_connection();
    sim.advance(secs(10));
    let sub = sim.connect_v5("sub", resume);
    let again = sub.expect_publish();
    assert_eq!((again.packet_id, again.dup), (first.packet_id, true));
}

// ---- property forwarding ----------------------------------------------------------------------

#[test]
fn publish_properties_are_forwarded_unaltered() {
    // [MQTT-3.3.2-4] payload format, [MQTT-3.3.2-15] response topic, [MQTT-3.3.2-16]
    // correlation data, [MQTT-3.3.2-17]/[MQTT-3.3.2-18] user properties in order,
    // [MQTT-3.3.2-20] content type.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("req", QoS::AtLeastOnce);
    let user = vec![
        (utf8("z"), utf8("1")),
        (utf8("a"), utf8("2")),
        (utf8("z"), utf8("3")),
    ];
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("req", "{}", QoS::AtLeastOnce, |p| {
        p.properties.payload_format_indicator = Some(true);
        p.properties.response_topic = Some(utf8("resp/pub"));
        p.properties.correlation_data = Some("corr-9".into());
        p.properties.user_properties = user.clone();
        p.properties.content_type = Some(utf8("application/json"));
    });
    let p = sub.expect_publish();
    assert_eq!(p.properties.payload_format_indicator, Some(true));
    assert_eq!(p.properties.response_topic, Some(utf8("resp/pub")));
    assert_eq!(
        p.properties.correlation_data.as_deref(),
        Some(&b"corr-9"[..])
    );
    assert_eq!(p.properties.user_properties, user);
    assert_eq!(p.properties.content_type, Some(utf8("application/json")));
}

// ---- client Maximum Packet Size -----------------------------------------------------------------

#[test]
fn a_message_too_large_for_a_client_is_skipped_for_it_only() {
    // [MQTT-3.1.2-24] never send a packet over the client's maximum; [MQTT-3.1.2-25] discard it
    // and behave as if sent, so it does not hold the client's window (Receive Maximum 1 here).
    let sim = Sim::new();
    let small = sim.connect_v5("small", |c| {
        c.properties.maximum_packet_size = Some(200);
        c.properties.receive_maximum = Some(1);
    });
    small.subscribe("t", QoS::AtLeastOnce);
    let big = sim.connect_v5("big", |_| {});
    big.subscribe("t", QoS::AtLeastOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish("t", vec![b'x'; 1000], QoS::AtLeastOnce);
    publisher.publish("t", "fits", QoS::AtLeastOnce);
    assert_eq!(small.receive_payloads(), ["fits"]);
    let sizes: Vec<_> = big.receive().iter().map(|p| p.payload.len()).collect();
    assert_eq!(sizes, [1000, 4]);
}

// ---- protocol errors and client preferences -------------------------------------------------

#[test]
fn subscription_identifier_from_a_client_is_a_protocol_error() {
    // [MQTT-3.3.4-6]: a PUBLISH from a client MUST NOT carry a Subscription Identifier.
    let sim = Sim::new();
    let c = sim.connect_v5("pub", |_| {});
    c.send_publish("t", "x", QoS::AtMostOnce, |p| {
        p.properties.subscription_identifiers = vec![1];
    });
    c.expect_disconnect(ReasonCode::ProtocolError);
}

#[test]
fn request_problem_information_0_keeps_reason_strings_off_acknowledgements() {
    // [MQTT-3.1.2-29]: no Reason String or User Property on packets other than PUBLISH,
    // CONNACK and DISCONNECT, whatever the outcome (failures included).
    let sim = Sim::new();
    let c = sim.connect_v5("a", |c| {
        c.properties.request_problem_information = Some(false)
    });
    c.subscribe_many(
        &[
            ("bad/#/x", opts(QoS::AtMostOnce)),
            ("ok", opts(QoS::AtMostOnce)),
        ],
        None,
    );
    c.unsubscribe(&["never"]);
    c.send_publish("nobody", "x", QoS::AtLeastOnce, |_| {});
    c.send_publish("$SYS/x", "x", QoS::AtLeastOnce, |_| {});
    c.send_publish("nobody", "x", QoS::ExactlyOnce, |_| {});
    for p in c.take_all() {
        let props = match &p {
            Packet::PubAck(r) | Packet::PubRec(r) => &r.properties,
            Packet::SubAck(s) => &s.properties,
            Packet::UnsubAck(u) => &u.properties,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(props.reason_string, None, "{p:?}");
        assert!(props.user_properties.is_empty(), "{p:?}");
    }
}
