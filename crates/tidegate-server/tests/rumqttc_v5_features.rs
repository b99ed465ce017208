//! MQTT 5.0 features end to end with `rumqttc::v5`: properties passed through unchanged,
//! request/response, message expiry, subscription identifiers, topic aliases from the client,
//! the subscription options (no local, retain as published, retain handling) and assigned
//! client identifiers.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use common::Broker;
use common::v5::{self, Client, props, text, topic};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{PublishProperties, RetainForwardRule};

fn user_props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn publish_properties_reach_the_subscriber_unchanged() {
    let broker = Broker::start();
    let mut sub = Client::connect_id(&broker, "v5-props-sub").await;
    let mut publisher = Client::connect_id(&broker, "v5-props-pub").await;
    sub.subscribe_ok("props/t", QoS::ExactlyOnce).await;

    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01req-42")),
        // Repeated keys are allowed and the order must be kept [MQTT-3.3.2-18].
        user_properties: user_props(&[("k", "1"), ("k", "2"), ("trace", "abc")]),
        ..Default::default()
    };
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher
            .publish_props("props/t", qos, false, b"{}", Some(sent.clone()))
            .await;
        let got = sub.recv().await;
        assert_eq!(text(&got), "{}");
        let p = props(&got);
        assert_eq!(p.payload_format_indicator, Some(1), "[MQTT-3.3.2-4]");
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.response_topic.as_deref(), Some("props/reply"));
        assert_eq!(p.correlation_data, sent.correlation_data);
        assert_eq!(p.user_properties, sent.user_properties, "[MQTT-3.3.2-17]");
        assert_eq!(p.message_expiry_interval, None);
    }
}

#[tokio::test]
async fn retained_message_keeps_its_properties() {
    let broker = Broker::start();
    let mut publisher = Client::connect_id(&broker, "v5-rp-pub").await;
    let sent = PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: user_props(&[("origin", "sensor-7")]),
        ..Default::default()
    };
    publisher
        .publish_props(
            "rprops/t",
            QoS::AtLeastOnce,
            true,
            b"21.5",
            Some(sent.clone()),
        )
        .await;

    let mut late = Client::connect_id(&broker, "v5-rp-late").await;
    late.subscribe_ok("rprops/t", QoS::AtLeastOnce).await;
    let got = late.recv().await;
    assert!(got.retain);
    assert_eq!(text(&got), "21.5");
    assert_eq!(props(&got).content_type.as_deref(), Some("text/plain"));
    assert_eq!(props(&got).user_properties, sent.user_properties);
}

#[tokio::test]
async fn request_response_round_trip_with_correlation_data() {
    let broker = Broker::start();
    let mut service = Client::connect_id(&broker, "v5-service").await;
    service.subscribe_ok("svc/time", QoS::AtLeastOnce).await;
    let mut requester = Client::connect_id(&broker, "v5-requester").await;
    requester
        .subscribe_ok("reply/requester", QoS::AtLeastOnce)
        .await;

    let request = PublishProperties {
        response_topic: Some("reply/requester".into()),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        ..Default::default()
    };
    requester
        .publish_props("svc/time", QoS::AtLeastOnce, false, b"now?", Some(request))
        .await;

    let got = service.recv().await;
    let asked = props(&got);
    let reply_to = asked
        .response_topic
        .clone()
        .expect("response topic passed through");
    let reply = PublishProperties {
        correlation_data: asked.correlation_data.clone(),
        ..Default::default()
    };
    service
        .publish_props(&reply_to, QoS::AtLeastOnce, false, b"noon", Some(reply))
        .await;

    let answer = requester.recv().await;
    assert_eq!(topic(&answer), "reply/requester");
    assert_eq!(text(&answer), "noon");
    assert_eq!(
        props(&answer).correlation_data,
        Some(Bytes::from_static(b"corr-1"))
    );
}

#[tokio::test]
async fn expired_messages_are_not_delivered_and_the_rest_carry_the_remaining_lifetime() {
    let broker = Broker::start();
    let opts = v5::persistent(&broker, "v5-expiry-sub", 60);
    let mut sub = Client::connect(opts.clone()).await;
    sub.subscribe_ok("mexp/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect_id(&broker, "v5-expiry-pub").await;
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    let long = PublishProperties {
        message_expiry_interval: Some(100),
        ..Default::default()
    };
    publisher
        .publish_props(
            "mexp/t",
            QoS::AtLeastOnce,
            false,
            b"short",
            Some(short.clone()),
        )
        .await;
    publisher
        .publish_props("mexp/t", QoS::AtLeastOnce, false, b"long", Some(long))
        .await;
    // A retained message expires too [MQTT-3.3.2-5].
    publisher
        .publish_props(
            "mexp/retained",
            QoS::AtLeastOnce,
            true,
            b"stale",
            Some(short),
        )
        .await;

    // Expiry has no event to await: wait past the 1 s lifetime.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let mut sub = Client::connect(opts).await;
    assert!(sub.connack.session_present);
    let got = sub.recv().await;
    assert_eq!(text(&got), "long", "the expired message is dropped");
    let left = props(&got)
        .message_expiry_interval
        .expect("the expiry interval is forwarded");
    // The received value minus the time spent waiting in the server [MQTT-3.3.2-6].
    assert!((90..=98).contains(&left), "remaining lifetime {left}");
    sub.expect_no_publish().await;

    let mut late = Client::connect_id(&broker, "v5-expiry-late").await;
    late.subscribe_ok("mexp/retained", QoS::AtLeastOnce).await;
    late.expect_no_publish().await;
}

#[tokio::test]
async fn subscription_identifiers_are_attached_to_matching_deliveries() {
    let broker = Broker::start();
    let mut sub = Client::connect_id(&broker, "v5-sid").await;
    let mut publisher = Client::connect_id(&broker, "v5-sid-pub").await;
    sub.subscribe_filters(
        vec![v5::filter("sid/a/+", QoS::AtLeastOnce)],
        Some(v5::sub_id(7)),
    )
    .await;
    sub.subscribe_filters(
        vec![v5::filter("sid/#", QoS::AtLeastOnce)],
        Some(v5::sub_id(9)),
    )
    .await;

    publisher
        .publish("sid/b", QoS::AtLeastOnce, false, b"one")
        .await;
    let got = sub.recv().await;
    assert_eq!(text(&got), "one");
    assert_eq!(props(&got).subscription_identifiers, vec![9]);
    sub.expect_no_publish().await;

    // Overlapping subscriptions: either one copy carrying both identifiers, or one copy per
    // subscription carrying its own [MQTT-3.3.4-3, MQTT-3.3.4-5].
    publisher
        .publish("sid/a/x", QoS::AtLeastOnce, false, b"two")
        .await;
    let first = sub.recv().await;
    let mut ids: Vec<usize> = props(&first).subscription_identifiers;
    if ids.len() == 1 {
        let second = sub.recv().await;
        assert_eq!(text(&second), "two");
        assert_eq!(props(&second).subscription_identifiers.len(), 1);
        ids.extend(props(&second).subscription_identifiers);
    }
    assert_eq!(
        ids.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([7, 9])
    );
    sub.expect_no_publish().await;

    // Subscribing again without an identifier replaces the subscription and drops its id.
    sub.subscribe_ok("sid/#", QoS::AtLeastOnce).await;
    publisher
        .publish("sid/c", QoS::AtLeastOnce, false, b"three")
        .await;
    let got = sub.recv().await;
    assert_eq!(text(&got), "three");
    assert!(props(&got).subscription_identifiers.is_empty());
}

#[tokio::test]
async fn topic_alias_from_the_client_is_resolved() {
    let broker = Broker::start();
    let mut sub = Client::connect_id(&broker, "v5-alias-sub").await;
    sub.subscribe_ok("alias/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect_id(&broker, "v5-alias-pub").await;
    let max = publisher
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.topic_alias_max)
        .unwrap_or(0);
    assert!(
        max >= 2,
        "the server accepts topic aliases (announced {max})"
    );

    let alias = |n: u16| PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    };
    publisher
        .publish_props("alias/x", QoS::AtLeastOnce, false, b"set", Some(alias(1)))
        .await;
    publisher
        .publish_props("", QoS::AtLeastOnce, false, b"use", Some(alias(1)))
        .await;
    publisher
        .publish_props("alias/y", QoS::AtMostOnce, false, b"remap", Some(alias(1)))
        .await;
    publisher
        .publish_props("", QoS::ExactlyOnce, false, b"use again", Some(alias(1)))
        .await;

    let mut got = Vec::new();
    for _ in 0..4 {
        let p = sub.recv().await;
        got.push((topic(&p), text(&p)));
    }
    let expected = [
        ("alias/x", "set"),
        ("alias/x", "use"),
        ("alias/y", "remap"),
        ("alias/y", "use again"),
    ];
    assert_eq!(got, expected.map(|(t, p)| (t.to_owned(), p.to_owned())));
}

#[tokio::test]
async fn no_local_suppresses_the_clients_own_messages() {
    let broker = Broker::start();
    let mut a = Client::connect_id(&broker, "v5-nl-a").await;
    let mut b = Client::connect_id(&broker, "v5-nl-b").await;
    let mut f = v5::filter("nl/t", QoS::AtLeastOnce);
    f.nolocal = true;
    a.subscribe_filters(vec![f], None).await;
    b.subscribe_ok("nl/t", QoS::AtLeastOnce).await;

    a.publish("nl/t", QoS::AtLeastOnce, false, b"from a").await;
    assert_eq!(text(&b.recv().await), "from a");
    a.expect_no_publish().await;

    b.publish("nl/t", QoS::AtLeastOnce, false, b"from b").await;
    assert_eq!(text(&a.recv().await), "from b");
    assert_eq!(text(&b.recv().await), "from b");
}

#[tokio::test]
async fn retain_as_published_keeps_the_flag_on_live_messages() {
    let broker = Broker::start();
    let mut keep = Client::connect_id(&broker, "v5-rap-keep").await;
    let mut clear = Client::connect_id(&broker, "v5-rap-clear").await;
    let mut f = v5::filter("rap/t", QoS::AtLeastOnce);
    f.preserve_retain = true;
    keep.subscribe_filters(vec![f], None).await;
    clear.subscribe_ok("rap/t", QoS::AtLeastOnce).await;

    let mut publisher = Client::connect_id(&broker, "v5-rap-pub").await;
    publisher
        .publish("rap/t", QoS::AtLeastOnce, true, b"r")
        .await;
    assert!(
        keep.recv().await.retain,
        "retain as published [MQTT-3.3.1-12]"
    );
    assert!(
        !clear.recv().await.retain,
        "retain cleared by default [MQTT-3.3.1-13]"
    );
}

#[tokio::test]
async fn retain_handling_controls_the_replay_on_subscribe() {
    let broker = Broker::start();
    let mut publisher = Client::connect_id(&broker, "v5-rh-pub").await;
    publisher
        .publish("rh/t", QoS::AtLeastOnce, true, b"stored")
        .await;
    let mut sub = Client::connect_id(&broker, "v5-rh-sub").await;
    let with_rule = |path: &str, rule: RetainForwardRule| {
        let mut f = v5::filter(path, QoS::AtLeastOnce);
        f.retain_forward_rule = rule;
        f
    };

    // 2: never send retained messages on subscribe.
    sub.subscribe_filters(vec![with_rule("rh/+", RetainForwardRule::Never)], None)
        .await;
    sub.expect_no_publish().await;

    // 1: only when the subscription is new.
    sub.subscribe_filters(
        vec![with_rule("rh/t", RetainForwardRule::OnNewSubscribe)],
        None,
    )
    .await;
    assert_eq!(text(&sub.recv().await), "stored");
    sub.subscribe_filters(
        vec![with_rule("rh/t", RetainForwardRule::OnNewSubscribe)],
        None,
    )
    .await;
    sub.expect_no_publish().await;

    // 0: on every subscribe, even one that replaces an existing subscription.
    sub.subscribe_filters(
        vec![with_rule("rh/t", RetainForwardRule::OnEverySubscribe)],
        None,
    )
    .await;
    let got = sub.recv().await;
    assert_eq!(text(&got), "stored");
    assert!(got.retain);
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn empty_client_id_gets_an_assigned_identifier() {
    let broker = Broker::start();
    let first = Client::connect_id(&broker, "").await;
    let second = Client::connect_id(&broker, "").await;
    let assigned = |c: &Client| {
        c.connack
            .properties
            .as_ref()
            .and_then(|p| p.assigned_client_identifier.clone())
            .expect("Assigned Client Identifier in CONNACK [MQTT-3.2.2-16]")
    };
    let (a, b) = (assigned(&first), assigned(&second));
    assert!(!a.is_empty());
    assert_ne!(a, b, "assigned identifiers are unique");
}
