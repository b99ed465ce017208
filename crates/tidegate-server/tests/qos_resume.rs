//! QoS 1 and 2 flows broken by a dropped connection and resumed on a persistent session, with a
//! hand-encoded client so the test decides exactly where the flow breaks. Every scenario runs
//! for 3.1.1 and 5.0 and counts deliveries: exactly once for QoS 2, nothing lost for QoS 1.

mod common;

use common::Broker;
use common::raw::{self, ConnectOpts, Raw, Version, kind};
use common::v4;
use rumqttc::QoS;

/// A 3.1.1 subscriber that counts what it receives on `topic`.
async fn observer(broker: &Broker, topic: &str) -> v4::Client {
    let mut sub = v4::Client::connect_id(broker, &common::unique("observer")).await;
    sub.subscribe_ok(topic, QoS::ExactlyOnce).await;
    sub
}

/// Inbound QoS 2: PUBLISH, PUBREC, connection lost, then PUBREL on the resumed session.
async fn inbound_pubrel_after_reconnect(version: Version) {
    let broker = Broker::start();
    let mut sub = observer(&broker, "in/q2").await;
    let (mut client, _) =
        Raw::connect(&broker, &ConnectOpts::persistent(version, "pub-q2", true)).await;
    client
        .send(&raw::publish(
            version, 2, false, false, b"in/q2", 7, b"once",
        ))
        .await;
    let rec = client.expect(kind::PUBREC).await;
    assert_eq!((rec.pid(), rec.ack_reason()), (7, 0));
    client.drop_connection();

    let opts = ConnectOpts::persistent(version, "pub-q2", false);
    let (mut client, present) = Raw::connect(&broker, &opts).await;
    assert!(
        present,
        "the session with the pending QoS 2 state is resumed"
    );
    client.send(&raw::pubrel(7)).await;
    let comp = client.expect(kind::PUBCOMP).await;
    assert_eq!((comp.pid(), comp.ack_reason()), (7, 0));

    let got = sub.recv().await;
    assert_eq!(v4::text(&got), "once");
    assert_eq!(got.qos, QoS::ExactlyOnce);
    sub.expect_no_publish().await;
}

/// Inbound QoS 2: the PUBREC is taken as lost, so the client resends PUBLISH with DUP=1 on the
/// resumed session; the server acknowledges again without delivering twice [MQTT-4.3.3-10].
async fn inbound_duplicate_publish_after_reconnect(version: Version) {
    let broker = Broker::start();
    let mut sub = observer(&broker, "in/dup").await;
    let (mut client, _) =
        Raw::connect(&broker, &ConnectOpts::persistent(version, "pub-dup", true)).await;
    client
        .send(&raw::publish(
            version, 2, false, false, b"in/dup", 9, b"exactly",
        ))
        .await;
    assert_eq!(client.expect(kind::PUBREC).await.pid(), 9);
    client.drop_connection();

    let opts = ConnectOpts::persistent(version, "pub-dup", false);
    let (mut client, present) = Raw::connect(&broker, &opts).await;
    assert!(present);
    client
        .send(&raw::publish(
            version, 2, true, false, b"in/dup", 9, b"exactly",
        ))
        .await;
    assert_eq!(client.expect(kind::PUBREC).await.pid(), 9);
    client.send(&raw::pubrel(9)).await;
    assert_eq!(client.expect(kind::PUBCOMP).await.pid(), 9);

    assert_eq!(v4::text(&sub.recv().await), "exactly");
    sub.expect_no_publish().await;
}

/// A raw subscriber with a persistent session on `topic` at `qos`.
async fn raw_subscriber(broker: &Broker, version: Version, id: &str, topic: &str, qos: u8) -> Raw {
    let (mut client, _) = Raw::connect(broker, &ConnectOpts::persistent(version, id, true)).await;
    raw::subscribe_ok(&mut client, 1, topic, qos).await;
    client
}

/// Outbound QoS 2: the subscriber never answers the PUBLISH and drops; on resume the server
/// resends it with DUP=1 and the same packet id, then completes the flow once.
async fn outbound_publish_resent_with_dup(version: Version) {
    let broker = Broker::start();
    let mut client = raw_subscriber(&broker, version, "sub-q2", "out/q2", 2).await;
    let mut publisher = v4::Client::connect_id(&broker, "publisher").await;
    publisher
        .publish("out/q2", QoS::ExactlyOnce, false, b"payload")
        .await;

    let first = client.recv_publish().await;
    assert_eq!(
        (first.qos, first.dup, first.topic.as_str()),
        (2, false, "out/q2")
    );
    assert_eq!(first.payload, b"payload");
    client.drop_connection();

    let opts = ConnectOpts::persistent(version, "sub-q2", false);
    let (mut client, present) = Raw::connect(&broker, &opts).await;
    assert!(present);
    let again = client.recv_publish().await;
    assert!(again.dup, "a resent PUBLISH has DUP=1 [MQTT-4.4.0-1]");
    assert_eq!(
        (again.pid, again.qos, again.payload.as_slice()),
        (first.pid, 2, &b"payload"[..])
    );
    client.send(&raw::pubrec(again.pid)).await;
    assert_eq!(client.expect(kind::PUBREL).await.pid(), first.pid);
    client.send(&raw::pubcomp(first.pid)).await;
    client.expect_quiet().await;
}

/// Outbound QoS 2: the subscriber answered PUBREC and dropped before PUBCOMP; on resume the
/// server resends PUBREL, not the message [MQTT-4.4.0-1].
async fn outbound_pubrel_resent(version: Version) {
    let broker = Broker::start();
    let mut client = raw_subscriber(&broker, version, "sub-rel", "out/rel", 2).await;
    let mut publisher = v4::Client::connect_id(&broker, "publisher").await;
    publisher
        .publish("out/rel", QoS::ExactlyOnce, false, b"p")
        .await;

    let first = client.recv_publish().await;
    client.send(&raw::pubrec(first.pid)).await;
    assert_eq!(client.expect(kind::PUBREL).await.pid(), first.pid);
    client.drop_connection();

    let opts = ConnectOpts::persistent(version, "sub-rel", false);
    let (mut client, present) = Raw::connect(&broker, &opts).await;
    assert!(present);
    let rel = client.recv().await;
    assert_eq!(rel.header, 0x62, "PUBREL resent, not the PUBLISH: {rel:?}");
    assert_eq!(rel.pid(), first.pid);
    client.send(&raw::pubcomp(first.pid)).await;
    client.expect_quiet().await;
}

/// Outbound QoS 1: a PUBLISH never acknowledged is resent with DUP=1 on resume.
async fn outbound_qos1_resent(version: Version) {
    let broker = Broker::start();
    let mut client = raw_subscriber(&broker, version, "sub-q1", "out/q1", 1).await;
    let mut publisher = v4::Client::connect_id(&broker, "publisher").await;
    publisher
        .publish("out/q1", QoS::AtLeastOnce, false, b"m")
        .await;

    let first = client.recv_publish().await;
    assert_eq!((first.qos, first.dup), (1, false));
    client.drop_connection();

    let opts = ConnectOpts::persistent(version, "sub-q1", false);
    let (mut client, _) = Raw::connect(&broker, &opts).await;
    let again = client.recv_publish().await;
    assert_eq!((again.pid, again.qos, again.dup), (first.pid, 1, true));
    client.send(&raw::puback(again.pid)).await;
    client.expect_quiet().await;

    // After the PUBACK the message is settled: another resume brings nothing back.
    client.send(&raw::disconnect()).await;
    let (mut client, _) = Raw::connect(&broker, &opts).await;
    client.expect_quiet().await;
}

#[tokio::test]
async fn v311_inbound_qos2_pubrel_after_reconnect() {
    inbound_pubrel_after_reconnect(Version::V311).await;
}

#[tokio::test]
async fn v5_inbound_qos2_pubrel_after_reconnect() {
    inbound_pubrel_after_reconnect(Version::V5).await;
}

#[tokio::test]
async fn v311_inbound_qos2_duplicate_publish_after_reconnect() {
    inbound_duplicate_publish_after_reconnect(Version::V311).await;
}

#[tokio::test]
async fn v5_inbound_qos2_duplicate_publish_after_reconnect() {
    inbound_duplicate_publish_after_reconnect(Version::V5).await;
}

#[tokio::test]
async fn v311_outbound_qos2_publish_resent_with_dup() {
    outbound_publish_resent_with_dup(Version::V311).await;
}

#[tokio::test]
async fn v5_outbound_qos2_publish_resent_with_dup() {
    outbound_publish_resent_with_dup(Version::V5).await;
}

#[tokio::test]
async fn v311_outbound_qos2_pubrel_resent() {
    outbound_pubrel_resent(Version::V311).await;
}

#[tokio::test]
async fn v5_outbound_qos2_pubrel_resent() {
    outbound_pubrel_resent(Version::V5).await;
}

#[tokio::test]
async fn v311_outbound_qos1_resent() {
    outbound_qos1_resent(Version::V311).await;
}

#[tokio::test]
async fn v5_outbound_qos1_resent() {
    outbound_qos1_resent(Version::V5).await;
}
