//! Malformed and hostile byte streams sent raw to the `tidegate` binary. Each case asserts the
//! exact answer the specs require (5.0: DISCONNECT or CONNACK with the reason code; 3.1.1: the
//! connection closed, or CONNACK with the return code) and then that a client connected before
//! the attack still gets its publications: one bad peer must never hurt another.

mod common;

use std::time::{Duration, Instant};

use common::Broker;
use common::raw::{self, ConnectOpts, Next, Raw, Version, kind};
use common::v4;
use rumqttc::QoS;

/// A well-behaved client, connected before the attack, that publishes to itself.
struct Witness {
    client: v4::Client,
    topic: String,
    sent: usize,
}

impl Witness {
    async fn new(broker: &Broker) -> Witness {
        let topic = common::unique("witness");
        let mut client = v4::Client::connect_id(broker, &topic).await;
        client.subscribe_ok(&topic, QoS::AtLeastOnce).await;
        Witness {
            client,
            topic,
            sent: 0,
        }
    }

    /// Asserts a round trip through the broker still works.
    async fn still_served(&mut self) {
        self.sent += 1;
        let payload = format!("still here {}", self.sent);
        self.client
            .publish(&self.topic, QoS::AtLeastOnce, false, payload.as_bytes())
            .await;
        assert_eq!(v4::text(&self.client.recv().await), payload);
    }
}

/// A broker, a witness, and a raw client of `version` that has completed CONNECT.
async fn connected(version: Version) -> (Broker, Witness, Raw) {
    connected_with(Broker::start(), version).await
}

async fn connected_with(broker: Broker, version: Version) -> (Broker, Witness, Raw) {
    let witness = Witness::new(&broker).await;
    let id = common::unique("attacker");
    let (raw, _) = Raw::connect(&broker, &ConnectOpts::new(version, &id)).await;
    (broker, witness, raw)
}

/// Sends `bytes` after CONNECT and expects the protocol-violation answer for each version.
async fn after_connect_rejects(bytes: impl Fn(Version) -> Vec<u8>, v5_reason: u8) {
    for version in Version::ALL {
        let (_broker, mut witness, mut raw) = connected(version).await;
        raw.send_lossy(&bytes(version)).await;
        raw.expect_rejected(v5_reason).await;
        witness.still_served().await;
    }
}

#[tokio::test]
async fn reserved_flags_in_subscribe_are_malformed() {
    // SUBSCRIBE must have flags 0b0010 [MQTT-3.8.1-1]; 0x80 has them cleared.
    after_connect_rejects(
        |v| {
            let mut p = raw::subscribe(v, 1, "a/b", 0);
            p[0] = 0x80;
            p
        },
        0x81,
    )
    .await;
}

#[tokio::test]
async fn reserved_flags_in_pubrel_are_malformed() {
    after_connect_rejects(|_| raw::packet(0x60, &[0, 1]), 0x81).await;
}

#[tokio::test]
async fn remaining_length_of_five_bytes_is_malformed() {
    after_connect_rejects(|_| vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], 0x81).await;
}

#[tokio::test]
async fn invalid_utf8_in_topic_is_malformed() {
    after_connect_rejects(
        |v| raw::publish(v, 0, false, false, &[b'a', 0xC3, 0x28], 0, b"x"),
        0x81,
    )
    .await;
}

#[tokio::test]
async fn null_character_in_topic_is_malformed() {
    after_connect_rejects(|v| raw::publish(v, 0, false, false, b"a\0b", 0, b"x"), 0x81).await;
}

#[tokio::test]
async fn wildcard_in_publish_topic_is_rejected() {
    // Topic Name invalid (0x90) [MQTT-3.3.2-2].
    after_connect_rejects(
        |v| raw::publish(v, 1, false, false, b"a/+/b", 1, b"x"),
        0x90,
    )
    .await;
    after_connect_rejects(|v| raw::publish(v, 0, false, false, b"a/#", 0, b"x"), 0x90).await;
}

#[tokio::test]
async fn empty_topic_without_alias_is_rejected() {
    // 3.1.1: a topic name is at least one character [MQTT-4.7.3-1]; 5.0: zero length without a
    // Topic Alias is a Protocol Error.
    after_connect_rejects(|v| raw::publish(v, 0, false, false, b"", 0, b"x"), 0x82).await;
}

#[tokio::test]
async fn qos_3_is_malformed() {
    after_connect_rejects(
        |v| {
            let mut p = raw::publish(v, 1, false, false, b"a", 1, b"x");
            p[0] = 0x36;
            p
        },
        0x81,
    )
    .await;
}

#[tokio::test]
async fn subscribe_without_filters_is_a_protocol_error() {
    after_connect_rejects(
        |v| match v {
            Version::V311 => raw::packet(0x82, &[0, 1]),
            Version::V5 => raw::packet(0x82, &[0, 1, 0]),
        },
        0x82,
    )
    .await;
}

#[tokio::test]
async fn reserved_packet_type_is_rejected() {
    // Type 0 is forbidden in both versions. The 5.0 spec names no reason code for it: a packet
    // that cannot be parsed is Malformed (0x81), one that breaks the protocol rules a Protocol
    // Error (0x82), and servers differ (Mosquitto says 0x82), so either is accepted here.
    for version in Version::ALL {
        let (_broker, mut witness, mut raw) = connected(version).await;
        raw.send_lossy(&[0x00, 0x00]).await;
        match version {
            Version::V311 => raw.expect_closed_silently().await,
            Version::V5 => {
                let frame = raw.expect(kind::DISCONNECT).await;
                let reason = frame.disconnect_reason();
                assert!(reason == 0x81 || reason == 0x82, "reason {reason:#04x}");
                raw.expect_closed_silently().await;
            }
        }
        witness.still_served().await;
    }
}

#[tokio::test]
async fn second_connect_is_a_protocol_error() {
    // [MQTT-3.1.0-2]
    after_connect_rejects(|v| raw::connect(&ConnectOpts::new(v, "again")), 0x82).await;
}

#[tokio::test]
async fn packet_over_max_packet_size_is_refused_from_its_header() {
    for version in Version::ALL {
        let broker = Broker::with_config("[limits]\nmax_packet_size = 256\n");
        let (_broker, mut witness, mut raw) = connected_with(broker, version).await;
        // Only the fixed header of a 100 kB PUBLISH: the server must decide from the remaining
        // length alone, without waiting for a body that never comes.
        let mut header = vec![0x30];
        header.extend(raw::varint(100_000));
        raw.send(&header).await;
        raw.expect_rejected(0x95).await;
        witness.still_served().await;
    }
}

#[tokio::test]
async fn packet_at_max_packet_size_is_accepted() {
    for version in Version::ALL {
        let broker = Broker::with_config("[limits]\nmax_packet_size = 256\n");
        let (_broker, mut witness, mut raw) = connected_with(broker, version).await;
        raw::subscribe_ok(&mut raw, 1, "fit", 0).await;
        // The whole packet, fixed header included, is exactly the limit.
        let overhead = raw::publish(version, 0, false, false, b"fit", 0, b"").len();
        let mut payload = vec![b'x'; 256 - overhead];
        let mut publish = raw::publish(version, 0, false, false, b"fit", 0, &payload);
        // The remaining length takes a second byte past 127.
        payload.truncate(payload.len() - (publish.len() - 256));
        publish = raw::publish(version, 0, false, false, b"fit", 0, &payload);
        assert_eq!(publish.len(), 256);
        raw.send(&publish).await;
        assert_eq!(raw.recv_publish().await.payload, payload);
        witness.still_served().await;
    }
}

#[tokio::test]
async fn first_packet_other_than_connect_closes_the_connection() {
    for first in [
        raw::pingreq(),
        raw::publish(Version::V311, 0, false, false, b"a", 0, b"x"),
    ] {
        let broker = Broker::start();
        let mut witness = Witness::new(&broker).await;
        let mut raw = Raw::open(&broker, Version::V311).await;
        raw.send_lossy(&first).await;
        // [MQTT-3.1.0-1]: nothing is answered before a CONNECT.
        raw.expect_closed_silently().await;
        witness.still_served().await;
    }
}

#[tokio::test]
async fn garbage_instead_of_connect_closes_the_connection() {
    let broker = Broker::start();
    let mut witness = Witness::new(&broker).await;
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: tidegate\r\n\r\n".to_vec(),
        vec![0xFF; 64],
        vec![0x10, 0x05, 0x00, 0x04, b'M', b'Q', b'X'],
    ] {
        let mut raw = Raw::open(&broker, Version::V311).await;
        raw.send_lossy(&garbage).await;
        raw.expect_closed_silently().await;
        witness.still_served().await;
    }
}

#[tokio::test]
async fn unsupported_protocol_level_3_gets_return_code_1() {
    let broker = Broker::start();
    let mut witness = Witness::new(&broker).await;
    let mut raw = Raw::open(&broker, Version::V311).await;
    raw.send(&raw::connect_with_level(
        &ConnectOpts::new(Version::V311, "old"),
        3,
    ))
    .await;
    // 0x01 unacceptable protocol version, then close [MQTT-3.1.2-2].
    assert_eq!(
        raw.recv().await,
        raw::Frame {
            header: 0x20,
            body: vec![0, 1]
        }
    );
    raw.expect_closed_silently().await;
    witness.still_served().await;
}

#[tokio::test]
async fn unsupported_protocol_level_6_gets_reason_0x84() {
    let broker = Broker::start();
    let mut witness = Witness::new(&broker).await;
    let mut raw = Raw::open(&broker, Version::V5).await;
    raw.send(&raw::connect_with_level(
        &ConnectOpts::new(Version::V5, "new"),
        6,
    ))
    .await;
    let connack = raw.recv().await;
    assert_eq!(
        connack.connack(),
        (false, 0x84),
        "Unsupported Protocol Version"
    );
    raw.expect_closed_silently().await;
    witness.still_served().await;
}

#[tokio::test]
async fn empty_client_id_with_clean_start_0_is_assigned_or_refused_in_v5() {
    // 5.0 allows an empty id only if the server assigns one; with clean start 0 there is no
    // session to resume, so 0x85 Client Identifier not valid is one correct answer, and a
    // successful CONNACK with an Assigned Client Identifier the other [MQTT-3.1.3-6].
    let broker = Broker::start();
    let mut raw = Raw::open(&broker, Version::V5).await;
    let opts = ConnectOpts::persistent(Version::V5, "", false);
    raw.send(&raw::connect(&opts)).await;
    let frame = raw.recv().await;
    let (present, code) = frame.connack();
    assert!(!present);
    assert!(code == 0x00 || code == 0x85, "CONNACK {frame:?}");
}

#[tokio::test]
async fn truncated_packet_then_close_delivers_nothing() {
    for version in Version::ALL {
        let (broker, mut witness, mut raw) = connected(version).await;
        let mut sub = v4::Client::connect_id(&broker, "trunc-sub").await;
        sub.subscribe_ok("trunc/t", QoS::AtLeastOnce).await;

        let whole = raw::publish(version, 1, false, false, b"trunc/t", 1, b"half a message");
        raw.send(&whole[..whole.len() / 2]).await;
        raw.shutdown().await;
        loop {
            match raw.next(common::RECV_TIMEOUT).await {
                Next::Closed => break,
                // A 5.0 server may say why before closing.
                Next::Frame(f) if f.kind() == kind::DISCONNECT => {}
                other => panic!("expected the connection to close, got {other:?}"),
            }
        }
        sub.expect_no_publish().await;
        witness.still_served().await;
    }
}

#[tokio::test]
async fn no_connect_within_connect_timeout_closes_the_connection() {
    let broker = Broker::with_config("[limits]\nconnect_timeout_ms = 300\n");
    let mut witness = Witness::new(&broker).await;
    // Silent, and a CONNECT that stops after three bytes (a slow-loris).
    for opening in [
        Vec::new(),
        raw::connect(&ConnectOpts::new(Version::V5, "slow"))[..3].to_vec(),
    ] {
        let mut raw = Raw::open(&broker, Version::V5).await;
        let opened = Instant::now();
        raw.send(&opening).await;
        raw.expect_closed_silently().await;
        let waited = opened.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "closed after {waited:?}, expected about 300 ms"
        );
    }
    witness.still_served().await;
}

#[tokio::test]
async fn keep_alive_expiry_closes_the_connection_after_one_and_a_half_periods() {
    for version in Version::ALL {
        let broker = Broker::start();
        let mut witness = Witness::new(&broker).await;
        let mut opts = ConnectOpts::new(version, "sleepy");
        opts.keep_alive = 1;
        let (mut raw, _) = Raw::connect(&broker, &opts).await;
        let connected = Instant::now();
        // 5.0: Keep Alive timeout (0x8D); 3.1.1: just closed [MQTT-3.1.2-24].
        raw.expect_rejected(0x8D).await;
        let waited = connected.elapsed();
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_millis(3500),
            "{version:?}: closed after {waited:?}, expected about 1.5 s"
        );
        witness.still_served().await;
    }
}

#[tokio::test]
async fn pings_keep_a_short_keep_alive_connection_open() {
    let broker = Broker::start();
    let mut opts = ConnectOpts::new(Version::V5, "pinger");
    opts.keep_alive = 1;
    let (mut raw, _) = Raw::connect(&broker, &opts).await;
    // 2.4 s of pings every 0.8 s: well past 1.5 s, so only the pings keep it open.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        raw.send(&raw::pingreq()).await;
        assert_eq!(raw.expect(kind::PINGRESP).await.body, Vec::<u8>::new());
    }
}

/// A v5 QoS 0 PUBLISH to "a" carrying a Topic Alias property (0x23) of `alias`.
fn publish_with_alias(alias: u16) -> Vec<u8> {
    let [hi, lo] = alias.to_be_bytes();
    let body = [&raw::field(b"a")[..], &[3, 0x23, hi, lo], b"x"].concat();
    raw::packet(0x30, &body)
}

#[tokio::test]
async fn topic_alias_above_the_maximum_is_rejected_with_0x94() {
    let broker = Broker::with_config("[limits]\ntopic_alias_maximum = 2\n");
    let (_broker, mut witness, mut raw) = connected_with(broker, Version::V5).await;
    // [MQTT-3.3.2-9]: above the Topic Alias Maximum the server announced.
    raw.send(&publish_with_alias(3)).await;
    raw.expect_disconnect(0x94).await;
    witness.still_served().await;
}

#[tokio::test]
async fn topic_alias_zero_is_rejected_with_0x94() {
    let (_broker, mut witness, mut raw) = connected(Version::V5).await;
    // [MQTT-3.3.2-8]: 0 is not a valid alias; section 3.3.2.3.4 names 0x94 for it.
    raw.send(&publish_with_alias(0)).await;
    raw.expect_disconnect(0x94).await;
    witness.still_served().await;
}

#[tokio::test]
async fn more_unacknowledged_qos2_than_receive_maximum_is_rejected_with_0x93() {
    let broker = Broker::with_config("[limits]\nreceive_maximum = 2\n");
    let (_broker, mut witness, mut raw) = connected_with(broker, Version::V5).await;
    for pid in 1..=2 {
        raw.send(&raw::publish(
            Version::V5,
            2,
            false,
            false,
            b"rm",
            pid,
            b"x",
        ))
        .await;
        assert_eq!(raw.expect(kind::PUBREC).await.pid(), pid);
    }
    // No PUBREL was sent, so both are still in flight [MQTT-3.3.4-9].
    raw.send(&raw::publish(Version::V5, 2, false, false, b"rm", 3, b"x"))
        .await;
    raw.expect_disconnect(0x93).await;
    witness.still_served().await;
}

#[tokio::test]
async fn publish_above_maximum_qos_is_rejected_with_0x9b() {
    let broker = Broker::with_config("[limits]\nmax_qos = 1\n");
    let (_broker, mut witness, mut raw) = connected_with(broker, Version::V5).await;
    raw.send(&raw::publish(Version::V5, 2, false, false, b"mq", 1, b"x"))
        .await;
    raw.expect_disconnect(0x9B).await;
    witness.still_served().await;
}
