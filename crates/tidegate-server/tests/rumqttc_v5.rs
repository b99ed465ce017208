//! End-to-end behaviour of the `tidegate` binary towards MQTT 5.0 clients, driven by
//! `rumqttc::v5` over real TCP: publish/subscribe, retained messages, wills (with delay),
//! sessions with expiry, takeover, shared subscriptions, CONNACK limits from the config file and
//! graceful shutdown.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::raw::{self, ConnectOpts, Raw, Version, Will};
use common::v5::{self, Client, text, topic};
use common::{Broker, RECV_TIMEOUT};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

#[tokio::test]
async fn publish_subscribe_round_trip_at_every_qos() {
    let broker = Broker::start();
    let mut sub = Client::connect_id(&broker, "v5-sub").await;
    let mut publisher = Client::connect_id(&broker, "v5-pub").await;
    sub.subscribe_ok("rt/#", QoS::ExactlyOnce).await;

    for qos in QOS {
        let t = format!("rt/{qos:?}");
        let payload = format!("hello {qos:?}");
        publisher.publish(&t, qos, false, payload.as_bytes()).await;
        let got = sub.recv().await;
        assert_eq!(topic(&got), t);
        assert_eq!(text(&got), payload);
        assert_eq!(got.qos, qos);
        assert!(!got.retain);
    }
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_on_that_filter_only() {
    let broker = Broker::start();
    let mut sub = Client::connect_id(&broker, "v5-unsub").await;
    let mut publisher = Client::connect_id(&broker, "v5-pub").await;
    sub.subscribe_ok("un5/a", QoS::AtLeastOnce).await;
    sub.subscribe_ok("un5/b", QoS::AtLeastOnce).await;

    sub.unsubscribe("un5/a").await;
    publisher
        .publish("un5/a", QoS::AtLeastOnce, false, b"gone")
        .await;
    publisher
        .publish("un5/b", QoS::AtLeastOnce, false, b"kept")
        .await;
    assert_eq!(text(&sub.recv().await), "kept");
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn retained_message_is_set_replayed_and_cleared() {
    let broker = Broker::start();
    let mut publisher = Client::connect_id(&broker, "v5-pub").await;
    publisher
        .publish("ret5/t", QoS::ExactlyOnce, true, b"kept")
        .await;

    let mut late = Client::connect_id(&broker, "v5-late").await;
    late.subscribe_ok("ret5/+", QoS::ExactlyOnce).await;
    let got = late.recv().await;
    assert_eq!(text(&got), "kept");
    assert!(got.retain);
    assert_eq!(got.qos, QoS::ExactlyOnce);
    late.expect_no_publish().await;

    publisher
        .publish("ret5/t", QoS::AtMostOnce, true, b"")
        .await;
    assert_eq!(text(&late.recv().await), "");
    let mut after = Client::connect_id(&broker, "v5-after").await;
    after.subscribe_ok("ret5/+", QoS::ExactlyOnce).await;
    after.expect_no_publish().await;
}

#[tokio::test]
async fn will_is_published_when_the_connection_drops() {
    let broker = Broker::start();
    let mut watcher = Client::connect_id(&broker, "v5-watch").await;
    watcher.subscribe_ok("will5/+", QoS::AtLeastOnce).await;
    let device = Client::connect(v5::options_with_will(
        &broker, "d1", "will5/d1", b"lost", None,
    ))
    .await;

    device.kill().await;
    let will = watcher.recv().await;
    assert_eq!(topic(&will), "will5/d1");
    assert_eq!(text(&will), "lost");
    assert_eq!(will.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn will_is_discarded_on_normal_disconnect_and_sent_on_reason_0x04() {
    let broker = Broker::start();
    let mut watcher = Client::connect_id(&broker, "v5-watch").await;
    watcher.subscribe_ok("will5/+", QoS::AtLeastOnce).await;

    let device =
        Client::connect(v5::options_with_will(&broker, "d2", "will5/d2", b"x", None)).await;
    device.disconnect().await;
    watcher.expect_no_publish().await;

    // "Disconnect with Will Message" (0x04) asks the server to publish the will anyway.
    let mut opts = ConnectOpts::new(Version::V5, "d3");
    opts.will = Some(Will {
        topic: "will5/d3".into(),
        payload: b"asked".to_vec(),
        qos: 1,
        retain: false,
    });
    let (mut device, _) = Raw::connect(&broker, &opts).await;
    device.send(&raw::packet(0xE0, &[0x04, 0x00])).await;
    let will = watcher.recv().await;
    assert_eq!(topic(&will), "will5/d3");
    assert_eq!(text(&will), "asked");
}

#[tokio::test]
async fn will_delay_postpones_the_will() {
    let broker = Broker::start();
    let mut watcher = Client::connect_id(&broker, "v5-watch").await;
    watcher.subscribe_ok("will5/+", QoS::AtLeastOnce).await;
    // The delay only holds while the session lives, so the session must outlast it.
    let mut opts = v5::options_with_will(&broker, "d4", "will5/d4", b"late", Some(1));
    opts.set_session_expiry_interval(Some(30));
    let device = Client::connect(opts).await;

    let dropped = Instant::now();
    device.kill().await;
    watcher.expect_no_publish().await;
    let will = watcher.recv().await;
    assert_eq!(text(&will), "late");
    let waited = dropped.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "will published after {waited:?}, before its 1 s delay"
    );
}

#[tokio::test]
async fn will_delay_is_cut_short_when_the_session_ends() {
    let broker = Broker::start();
    let mut watcher = Client::connect_id(&broker, "v5-watch").await;
    watcher.subscribe_ok("will5/+", QoS::AtLeastOnce).await;
    // Session expiry 0: the session ends with the connection, and the will goes with it
    // although its delay is 60 s [MQTT-3.1.3-9].
    let device = Client::connect(v5::options_with_will(
        &broker,
        "d5",
        "will5/d5",
        b"now",
        Some(60),
    ))
    .await;

    let dropped = Instant::now();
    device.kill().await;
    assert_eq!(text(&watcher.recv().await), "now");
    assert!(dropped.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn will_is_not_sent_when_the_client_returns_within_the_delay() {
    let broker = Broker::start();
    let mut watcher = Client::connect_id(&broker, "v5-watch").await;
    watcher.subscribe_ok("will5/+", QoS::AtLeastOnce).await;
    let mut opts = v5::options_with_will(&broker, "d6", "will5/d6", b"never", Some(1));
    opts.set_session_expiry_interval(Some(30));
    let device = Client::connect(opts.clone()).await;
    device.kill().await;

    opts.set_clean_start(false);
    let back = Client::connect(opts).await;
    assert!(back.connack.session_present);
    // Longer than the 1 s delay: a will still pending would have fired by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    watcher.expect_no_publish().await;
}

#[tokio::test]
async fn session_with_expiry_queues_messages_while_offline() {
    let broker = Broker::start();
    let opts = v5::persistent(&broker, "v5-persist", 60);
    let mut sub = Client::connect(opts.clone()).await;
    sub.subscribe_ok("p5/a", QoS::AtLeastOnce).await;
    sub.subscribe_ok("p5/b", QoS::ExactlyOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect_id(&broker, "v5-pub").await;
    publisher
        .publish("p5/a", QoS::AtLeastOnce, false, b"m1")
        .await;
    publisher
        .publish("p5/b", QoS::ExactlyOnce, false, b"m2")
        .await;
    publisher
        .publish("p5/b", QoS::AtLeastOnce, false, b"m3")
        .await;

    let mut sub = Client::connect(opts).await;
    assert!(sub.connack.session_present);
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = sub.recv().await;
        got.push((text(&p), p.qos));
    }
    // Different QoS levels carry no ordering promise between them [MQTT-4.6.0-6].
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        [
            ("m1".to_owned(), QoS::AtLeastOnce),
            ("m2".to_owned(), QoS::ExactlyOnce),
            ("m3".to_owned(), QoS::AtLeastOnce),
        ]
    );
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn session_expiry_zero_ends_the_session_with_the_connection() {
    let broker = Broker::start();
    let mut opts = v5::options(&broker, "v5-short");
    opts.set_clean_start(false);
    let mut sub = Client::connect(opts.clone()).await;
    sub.subscribe_ok("short/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect_id(&broker, "v5-pub").await;
    publisher
        .publish("short/t", QoS::AtLeastOnce, false, b"lost")
        .await;
    let mut sub = Client::connect(opts).await;
    assert!(!sub.connack.session_present);
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn session_is_gone_after_its_expiry_interval() {
    let broker = Broker::start();
    let opts = v5::persistent(&broker, "v5-expire", 1);
    let mut sub = Client::connect(opts.clone()).await;
    sub.subscribe_ok("exp/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    // The spec gives no event for expiry; wait past the 1 s interval.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut publisher = Client::connect_id(&broker, "v5-pub").await;
    publisher
        .publish("exp/t", QoS::AtLeastOnce, false, b"x")
        .await;
    let mut sub = Client::connect(opts).await;
    assert!(!sub.connack.session_present);
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn clean_start_discards_the_stored_session() {
    let broker = Broker::start();
    let mut sub = Client::connect(v5::persistent(&broker, "v5-cs", 60)).await;
    sub.subscribe_ok("cs/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = Client::connect_id(&broker, "v5-pub").await;
    publisher
        .publish("cs/t", QoS::AtLeastOnce, false, b"queued")
        .await;

    let mut opts = v5::persistent(&broker, "v5-cs", 60);
    opts.set_clean_start(true);
    let mut sub = Client::connect(opts).await;
    assert!(!sub.connack.session_present);
    sub.expect_no_publish().await;
}

#[tokio::test]
async fn takeover_disconnects_the_old_client_with_0x8e_and_keeps_the_session() {
    let broker = Broker::start();
    let mut first = Client::connect(v5::persistent(&broker, "v5-dup", 60)).await;
    first.subscribe_ok("take5/t", QoS::AtLeastOnce).await;

    let mut second = Client::connect(v5::persistent(&broker, "v5-dup", 60)).await;
    assert_eq!(
        first.server_disconnect().await,
        DisconnectReasonCode::SessionTakenOver
    );
    assert!(
        second.connack.session_present,
        "clean start 0 resumes the taken-over session"
    );

    let mut publisher = Client::connect_id(&broker, "v5-pub").await;
    publisher
        .publish("take5/t", QoS::AtLeastOnce, false, b"moved")
        .await;
    assert_eq!(text(&second.recv().await), "moved");
    second.expect_no_publish().await;
}

#[tokio::test]
async fn shared_subscription_gives_each_message_to_one_member() {
    let broker = Broker::start();
    let mut a = Client::connect_id(&broker, "v5-share-a").await;
    let mut b = Client::connect_id(&broker, "v5-share-b").await;
    let mut plain = Client::connect_id(&broker, "v5-plain").await;
    a.subscribe_ok("$share/g/jobs/+", QoS::AtLeastOnce).await;
    b.subscribe_ok("$share/g/jobs/+", QoS::AtLeastOnce).await;
    plain.subscribe_ok("jobs/+", QoS::AtLeastOnce).await;

    let mut publisher = Client::connect_id(&broker, "v5-pub").await;
    const N: usize = 20;
    for i in 0..N {
        publisher
            .publish("jobs/x", QoS::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }

    let (mut by_a, mut by_b) = (Vec::new(), Vec::new());
    while by_a.len() + by_b.len() < N {
        tokio::select! {
            p = a.recv() => by_a.push(text(&p)),
            p = b.recv() => by_b.push(text(&p)),
        }
    }
    a.expect_no_publish().await;
    b.expect_no_publish().await;
    let all: HashSet<String> = by_a.iter().chain(&by_b).cloned().collect();
    assert_eq!(all.len(), N, "every message exactly once across the group");
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "a: {by_a:?}, b: {by_b:?}"
    );
    // A non-shared subscription to the same topics still gets every message.
    for i in 0..N {
        assert_eq!(text(&plain.recv().await), format!("{i}"));
    }
}

#[tokio::test]
async fn connack_announces_the_configured_limits() {
    let broker = Broker::with_config(
        "[limits]\nmax_packet_size = 4096\nreceive_maximum = 10\ntopic_alias_maximum = 5\nmax_qos = 1\n",
    );
    let client = Client::connect_id(&broker, "v5-limits").await;
    let props = client
        .connack
        .properties
        .clone()
        .expect("CONNACK properties");
    assert_eq!(props.max_packet_size, Some(4096));
    assert_eq!(props.receive_max, Some(10));
    assert_eq!(props.topic_alias_max, Some(5));
    assert_eq!(props.max_qos, Some(1));
}

#[tokio::test]
async fn subscription_is_granted_at_most_the_configured_max_qos() {
    let broker = Broker::with_config("[limits]\nmax_qos = 1\n");
    let mut sub = Client::connect_id(&broker, "v5-maxqos").await;
    let codes = sub
        .subscribe_filters(vec![v5::filter("mq/t", QoS::ExactlyOnce)], None)
        .await;
    assert_eq!(
        codes,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(
            QoS::AtLeastOnce
        )]
    );
}

#[tokio::test]
async fn sigterm_disconnects_v5_clients_with_0x8b_and_exits_zero() {
    let mut broker = Broker::start();
    let mut v5_client = Client::connect_id(&broker, "v5-bye").await;
    let mut v4_client = common::v4::Client::connect_id(&broker, "v4-bye").await;

    broker.sigterm();
    assert_eq!(
        v5_client.server_disconnect().await,
        DisconnectReasonCode::ServerShuttingDown
    );
    let _ = v4_client.closed().await;
    let status = broker
        .wait_exit(RECV_TIMEOUT)
        .await
        .expect("tidegate exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}
