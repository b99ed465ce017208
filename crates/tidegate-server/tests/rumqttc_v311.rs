//! End-to-end behaviour of the `tidegate` binary towards MQTT 3.1.1 clients, driven by
//! `rumqttc` (a third-party client) over real TCP: publish/subscribe at every QoS, retained
//! messages, wills, persistent sessions and client takeover.

mod common;

use common::Broker;
use common::raw::{self, ConnectOpts, Raw, Version};
use common::v4::{self, Client, text, topic};
use rumqttc::QoS;

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

#[tokio::test]
async fn publish_subscribe_round_trip_at_every_qos() {
    let broker = Broker::start();
    let mut sub = Client::connect_id(&broker, "v4-sub").await;
    let mut publisher = Client::connect_id(&broker, "v4-pub").await;
    sub.subscribe_ok("rt/+", QoS::ExactlyOnce).await;

    for qos in QOS {
        let t = format!("rt/{qos:?}");
        let payload = format!("hello {qos:?}");
        publisher.publish(&t, qos, false, payload.as_bytes()).await;
        let got = sub.recv().await;
        assert_eq!(topic(&got), t);
        assert_eq!(text(&got), payload);
        assert_eq!(got.qos, qos, "delivered at the publisher's QoS");
        assert!(!got.retain);
        assert!(!got.dup);
    }
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn delivery_qos_is_the_minimum_of_publish_and_subscription() {
    let broker = Broker::start();
    let mut sub0 = Client::connect_id(&broker, "v4-sub0").await;
    let mut sub1 = Client::connect_id(&broker, "v4-sub1").await;
    let mut publisher = Client::connect_id(&broker, "v4-pub").await;
    sub0.subscribe_ok("down/t", QoS::AtMostOnce).await;
    sub1.subscribe_ok("down/t", QoS::AtLeastOnce).await;

    publisher
        .publish("down/t", QoS::ExactlyOnce, false, b"x")
        .await;
    assert_eq!(sub0.recv().await.qos, QoS::AtMostOnce);
    assert_eq!(sub1.recv().await.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn qos2_stream_arrives_once_each_and_in_order() {
    let broker = Broker::start();
    let mut sub = Client::connect_id(&broker, "v4-sub").await;
    let mut publisher = Client::connect_id(&broker, "v4-pub").await;
    sub.subscribe_ok("seq", QoS::ExactlyOnce).await;

    for i in 0..20 {
        publisher
            .publish("seq", QoS::ExactlyOnce, false, format!("{i}").as_bytes())
            .await;
    }
    for i in 0..20 {
        let got = sub.recv().await;
        assert_eq!(text(&got), format!("{i}"));
        assert_eq!(got.qos, QoS::ExactlyOnce);
    }
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn wildcards_match_per_spec() {
    let broker = Broker::start();
    let mut plus = Client::connect_id(&broker, "v4-plus").await;
    let mut hash = Client::connect_id(&broker, "v4-hash").await;
    let mut publisher = Client::connect_id(&broker, "v4-pub").await;
    plus.subscribe_ok("w/+/c", QoS::AtLeastOnce).await;
    hash.subscribe_ok("w/#", QoS::AtLeastOnce).await;

    publisher
        .publish("w/b/c", QoS::AtLeastOnce, false, b"1")
        .await;
    publisher
        .publish("w/b/c/d", QoS::AtLeastOnce, false, b"2")
        .await;
    publisher.publish("w", QoS::AtLeastOnce, false, b"3").await;

    assert_eq!(text(&plus.recv().await), "1");
    plus.expect_no_publish().await;
    // `w/#` also matches the parent level `w` [MQTT-4.7.1-2].
    let mut got: Vec<String> = Vec::new();
    for _ in 0..3 {
        got.push(text(&hash.recv().await));
    }
    assert_eq!(got, ["1", "2", "3"]);
    hash.expect_no_publish().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = Broker::start();
    let mut sub = Client::connect_id(&broker, "v4-sub").await;
    let mut publisher = Client::connect_id(&broker, "v4-pub").await;
    sub.subscribe_ok("unsub/t", QoS::AtLeastOnce).await;
    publisher
        .publish("unsub/t", QoS::AtLeastOnce, false, b"before")
        .await;
    assert_eq!(text(&sub.recv().await), "before");

    sub.unsubscribe("unsub/t").await;
    publisher
        .publish("unsub/t", QoS::AtLeastOnce, false, b"after")
        .await;
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn retained_message_is_set_replayed_replaced_and_cleared() {
    let broker = Broker::start();
    let mut publisher = Client::connect_id(&broker, "v4-pub").await;
    let mut live = Client::connect_id(&broker, "v4-live").await;
    live.subscribe_ok("ret/t", QoS::AtLeastOnce).await;

    publisher
        .publish("ret/t", QoS::AtLeastOnce, true, b"first")
        .await;
    // To an existing subscription the retain flag is cleared [MQTT-3.3.1-9].
    let got = live.recv().await;
    assert_eq!(text(&got), "first");
    assert!(!got.retain);

    publisher
        .publish("ret/t", QoS::AtLeastOnce, true, b"second")
        .await;
    let mut late = Client::connect_id(&broker, "v4-late").await;
    late.subscribe_ok("ret/#", QoS::AtLeastOnce).await;
    let got = late.recv().await;
    assert_eq!(topic(&got), "ret/t");
    assert_eq!(
        text(&got),
        "second",
        "only the latest retained message is kept"
    );
    assert!(
        got.retain,
        "a replayed retained message has RETAIN=1 [MQTT-3.3.1-8]"
    );
    assert_eq!(got.qos, QoS::AtLeastOnce);
    late.expect_no_publish().await;

    // An empty retained payload clears the topic [MQTT-3.3.1-10] and is still delivered live.
    publisher
        .publish("ret/t", QoS::AtLeastOnce, true, b"")
        .await;
    assert_eq!(text(&live.recv().await), "second");
    let cleared = live.recv().await;
    assert_eq!(text(&cleared), "");
    let mut after = Client::connect_id(&broker, "v4-after").await;
    after.subscribe_ok("ret/#", QoS::AtLeastOnce).await;
    after.expect_no_publish().await;
}

#[tokio::test]
async fn will_is_published_when_the_connection_drops() {
    let broker = Broker::start();
    let mut watcher = Client::connect_id(&broker, "v4-watch").await;
    watcher.subscribe_ok("will/dev1", QoS::AtLeastOnce).await;
    let opts = v4::options_with_will(
        &broker,
        "dev1",
        "will/dev1",
        b"gone",
        QoS::AtLeastOnce,
        false,
    );
    let device = Client::connect(opts).await;

    device.kill().await;
    let will = watcher.recv().await;
    assert_eq!(topic(&will), "will/dev1");
    assert_eq!(text(&will), "gone");
    assert_eq!(will.qos, QoS::AtLeastOnce);
    watcher.expect_no_publish().await;
}

#[tokio::test]
async fn will_is_discarded_on_clean_disconnect() {
    let broker = Broker::start();
    let mut watcher = Client::connect_id(&broker, "v4-watch").await;
    watcher.subscribe_ok("will/dev2", QoS::AtLeastOnce).await;
    let opts = v4::options_with_will(
        &broker,
        "dev2",
        "will/dev2",
        b"gone",
        QoS::AtLeastOnce,
        false,
    );
    let device = Client::connect(opts).await;

    device.disconnect().await;
    watcher.expect_no_publish().await;
}

#[tokio::test]
async fn retained_will_is_replayed_to_later_subscribers() {
    let broker = Broker::start();
    let mut watcher = Client::connect_id(&broker, "v4-watch").await;
    watcher.subscribe_ok("status/dev3", QoS::AtMostOnce).await;
    let opts = v4::options_with_will(
        &broker,
        "dev3",
        "status/dev3",
        b"offline",
        QoS::AtMostOnce,
        true,
    );
    let device = Client::connect(opts).await;
    device.kill().await;
    assert_eq!(text(&watcher.recv().await), "offline");

    let mut late = Client::connect_id(&broker, "v4-late").await;
    late.subscribe_ok("status/dev3", QoS::AtMostOnce).await;
    let got = late.recv().await;
    assert_eq!(text(&got), "offline");
    assert!(
        got.retain,
        "a will with RETAIN=1 is stored as a retained message"
    );
}

#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_queues_messages() {
    let broker = Broker::start();
    let mut opts = v4::options(&broker, "v4-persist");
    opts.set_clean_session(false);
    let mut sub = Client::connect(opts.clone()).await;
    assert!(
        !sub.connack.session_present,
        "a fresh client has no session"
    );
    sub.subscribe_ok("persist/a", QoS::AtLeastOnce).await;
    sub.subscribe_ok("persist/b", QoS::ExactlyOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect_id(&broker, "v4-pub").await;
    publisher
        .publish("persist/a", QoS::AtLeastOnce, false, b"m1")
        .await;
    publisher
        .publish("persist/b", QoS::ExactlyOnce, false, b"m2")
        .await;
    publisher
        .publish("persist/a", QoS::AtLeastOnce, false, b"m3")
        .await;

    let mut sub = Client::connect(opts).await;
    assert!(
        sub.connack.session_present,
        "CONNACK session present [MQTT-3.2.2-2]"
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = sub.recv().await;
        got.push((topic(&p), text(&p), p.qos));
    }
    // Order is only promised per topic and QoS [MQTT-4.6.0-6].
    let on_a: Vec<&str> = got
        .iter()
        .filter(|m| m.0 == "persist/a")
        .map(|m| m.1.as_str())
        .collect();
    assert_eq!(on_a, ["m1", "m3"]);
    got.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        got,
        [
            ("persist/a".to_owned(), "m1".to_owned(), QoS::AtLeastOnce),
            ("persist/b".to_owned(), "m2".to_owned(), QoS::ExactlyOnce),
            ("persist/a".to_owned(), "m3".to_owned(), QoS::AtLeastOnce),
        ]
    );
    sub.expect_no_publish().await;

    // The stored subscriptions still route while online.
    publisher
        .publish("persist/a", QoS::AtLeastOnce, false, b"live")
        .await;
    assert_eq!(text(&sub.recv().await), "live");
}

#[tokio::test]
async fn clean_session_discards_the_stored_session() {
    let broker = Broker::start();
    let mut opts = v4::options(&broker, "v4-clean");
    opts.set_clean_session(false);
    let mut sub = Client::connect(opts).await;
    sub.subscribe_ok("clean/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect_id(&broker, "v4-pub").await;
    publisher
        .publish("clean/t", QoS::AtLeastOnce, false, b"queued")
        .await;

    let mut sub = Client::connect_id(&broker, "v4-clean").await;
    assert!(!sub.connack.session_present);
    sub.expect_no_publish().await;
    publisher
        .publish("clean/t", QoS::AtLeastOnce, false, b"no subscription")
        .await;
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn same_client_id_takes_over_and_closes_the_old_connection() {
    let broker = Broker::start();
    let mut first = Client::connect_id(&broker, "v4-dup").await;
    let mut second = Client::connect_id(&broker, "v4-dup").await;
    // 3.1.1 has no server DISCONNECT: the old network connection is just closed [MQTT-3.1.4-2].
    let _ = first.closed().await;

    second.subscribe_ok("take/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect_id(&broker, "v4-pub").await;
    publisher
        .publish("take/t", QoS::AtLeastOnce, false, b"to the new one")
        .await;
    assert_eq!(text(&second.recv().await), "to the new one");
}

#[tokio::test]
async fn empty_client_id_is_accepted_only_with_clean_session() {
    let broker = Broker::start();
    let mut anon = Client::connect_id(&broker, "").await;
    anon.subscribe_ok("anon/t", QoS::AtMostOnce).await;

    let mut opts = ConnectOpts::new(Version::V311, "");
    opts.clean = false;
    let mut refused = Raw::open(&broker, Version::V311).await;
    refused.send(&raw::connect(&opts)).await;
    // Return code 0x02, identifier rejected [MQTT-3.1.3-8], then close.
    assert_eq!(refused.recv().await.connack(), (false, 0x02));
    refused.expect_closed_silently().await;
}
