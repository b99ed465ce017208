//! Connection lifecycle scenarios: CONNECT/CONNACK in both versions, client identifiers,
//! protocol errors before and after CONNECT, the CONNECT timeout, PINGREQ and shutdown.
//!
//! Rule ids are MQTT 5.0 unless marked "(3.1.1)".

mod harness;

use harness::*;
use tidegate_core::BrokerConfig;
use tidegate_protocol::{DecodeError, ProtocolVersion, QoS, ReasonCode};

#[test]
fn v5_connect_is_acknowledged_with_success_and_no_session() {
    // [MQTT-3.1.4-5] CONNACK 0x00; [MQTT-3.2.2-2] clean start 1 means session present 0.
    let sim = Sim::new();
    let c = sim.connect_v5("a", |_| {});
    assert_eq!(c.connack().reason_code, ReasonCode::Success);
    assert!(!c.connack().session_present);
    assert!(!c.is_closed());
    c.assert_silent();
}

#[test]
fn v311_connect_is_acknowledged_with_return_code_0() {
    // (3.1.1) [MQTT-3.2.2-1] clean session 1 means session present 0; [MQTT-3.1.4-4] rc 0.
    let sim = Sim::new();
    let c = sim.connect_v311("a", |_| {});
    assert_eq!(c.connack().reason_code, ReasonCode::Success);
    assert!(!c.connack().session_present);
    assert!(!c.is_closed());
    c.assert_silent();
}

#[test]
fn v5_connack_announces_the_configured_limits() {
    // §3.2.2.3: an absent Receive Maximum means 65,535, an absent Topic Alias Maximum means 0,
    // an absent Maximum Packet Size means no limit: a server with other limits must send them.
    // Maximum QoS may only be sent as 0 or 1, so a server supporting QoS 2 leaves it out.
    let sim = Sim::with_config(BrokerConfig {
        receive_maximum: 10,
        topic_alias_maximum: 5,
        max_packet_size: 4096,
        ..BrokerConfig::default()
    });
    let c = sim.connect_v5("a", |_| {});
    let p = &c.connack().properties;
    assert_eq!(p.receive_maximum, Some(10));
    assert_eq!(p.topic_alias_maximum, Some(5));
    assert_eq!(p.maximum_packet_size, Some(4096));
    assert_eq!(p.maximum_qos, None);
    assert_ne!(p.retain_available, Some(false));
    assert_ne!(p.wildcard_subscription_available, Some(false));
    assert_ne!(p.subscription_identifiers_available, Some(false));
    assert_ne!(p.shared_subscription_available, Some(false));
    // [MQTT-3.1.2-28]/[MQTT-4.12.0-7]: nothing the client did not ask for.
    assert_eq!(p.response_information, None);
    assert_eq!(p.authentication_method, None);
    assert_eq!(p.assigned_client_identifier, None);
}

#[test]
fn v5_connack_reports_a_capped_session_expiry() {
    // §3.2.2.3.2: the server tells the client, in CONNACK, that it uses another value.
    let sim = Sim::with_config(BrokerConfig {
        max_session_expiry: 3600,
        ..BrokerConfig::default()
    });
    let c = sim.connect_v5("a", |c| c.properties.session_expiry_interval = Some(86_400));
    assert_eq!(c.connack().properties.session_expiry_interval, Some(3600));
}

#[test]
fn v5_empty_client_id_gets_a_unique_assigned_identifier() {
    // [MQTT-3.1.3-6], [MQTT-3.2.2-16]: a new identifier, not used by any other session.
    let sim = Sim::new();
    let a = sim.connect_v5("", |_| {});
    let b = sim.connect_v5("", |_| {});
    let id_a = a.connack().properties.assigned_client_identifier.clone();
    let id_b = b.connack().properties.assigned_client_identifier.clone();
    assert_eq!(a.connack().reason_code, ReasonCode::Success);
    assert_eq!(b.connack().reason_code, ReasonCode::Success);
    let (id_a, id_b) = (id_a.expect("assigned id"), id_b.expect("assigned id"));
    assert!(!id_a.is_empty());
    assert_ne!(id_a, id_b);
    // Two distinct clients: neither took the other over.
    assert!(!a.is_closed() && !b.is_closed());
    a.assert_silent();
}

#[test]
fn v5_assigned_identifier_names_a_resumable_session() {
    // [MQTT-3.1.3-7]: the CONNECT is processed as if the client had sent the assigned id.
    let sim = Sim::new();
    let a = sim.connect_v5("", persistent);
    let id = a
        .connack()
        .properties
        .assigned_client_identifier
        .clone()
        .expect("assigned id");
    assert_eq!(a.subscribe("t", QoS::AtLeastOnce), ReasonCode::GrantedQoS1);
    a.drop_connection();
    sim.connect_v5("pub", |_| {})
        .publish("t", "hello", QoS::AtLeastOnce);

    let b = sim.connect_v5(&id, resume);
    assert!(b.connack().session_present);
    assert_eq!(b.receive_payloads(), ["hello"]);
}

#[test]
fn v311_empty_client_id_without_clean_session_is_rejected_with_return_code_2() {
    // (3.1.1) [MQTT-3.1.3-8]: CONNACK 0x02 then close; [MQTT-3.2.2-4] session present 0.
    let sim = Sim::new();
    let c = sim.connect_v311("", |c| c.clean_start = false);
    assert_eq!(
        c.connack().reason_code,
        ReasonCode::ClientIdentifierNotValid
    );
    assert_eq!(c.connack().reason_code.to_v3_connack(), 2);
    assert!(!c.connack().session_present);
    c.expect_closed_silently();
}

#[test]
fn v311_empty_client_id_with_clean_session_gets_its_own_session_or_is_refused() {
    // (3.1.1) [MQTT-3.1.3-6]: the server MAY accept it, and then treats it as a unique id;
    // [MQTT-3.1.3-9] otherwise CONNACK 0x02 and close. Either is conformant.
    let sim = Sim::new();
    let a = sim.connect_v311("", |_| {});
    let b = sim.connect_v311("", |_| {});
    for c in [&a, &b] {
        match c.connack().reason_code {
            ReasonCode::Success => {}
            ReasonCode::ClientIdentifierNotValid => c.expect_closed_silently(),
            other => panic!("unexpected CONNACK code {other:?}"),
        }
    }
    if a.connack().reason_code == ReasonCode::Success {
        assert!(
            !a.is_closed(),
            "the second empty-id client took over the first"
        );
    }
}

#[test]
fn v5_second_connect_is_a_protocol_error() {
    // [MQTT-3.1.0-2]: protocol error, DISCONNECT 0x82 (§4.13) and close.
    let sim = Sim::new();
    let c = sim.connect_v5("a", |_| {});
    c.send(Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V5,
        "a",
    ))));
    c.expect_disconnect(ReasonCode::ProtocolError);
}

#[test]
fn v311_second_connect_closes_the_connection() {
    // (3.1.1) [MQTT-3.1.0-2]: a protocol violation; 3.1.1 has no server DISCONNECT.
    let sim = Sim::new();
    let c = sim.connect_v311("a", |_| {});
    c.send(Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V311,
        "a",
    ))));
    c.expect_closed_silently();
}

#[test]
fn first_packet_other_than_connect_closes_the_connection() {
    // [MQTT-3.1.0-1]; [MQTT-3.14.0-1] no DISCONNECT before a successful CONNACK.
    let sim = Sim::new();
    let c = sim.open();
    c.send(Packet::PingReq);
    c.expect_closed_silently();
}

#[test]
fn connect_timeout_closes_a_socket_that_never_sends_connect() {
    // §3.1.4 "within a reasonable amount of time" = BrokerConfig::connect_timeout (10 s).
    let sim = Sim::new();
    let c = sim.open();
    sim.advance(millis(9_900));
    assert!(!c.is_closed(), "closed before the connect timeout");
    sim.advance(millis(200));
    c.expect_closed_silently();
}

#[test]
fn connect_timeout_does_not_apply_once_connected() {
    let sim = Sim::new();
    let c = sim.connect_v5("a", |_| {});
    sim.advance(secs(60));
    assert!(!c.is_closed());
    c.ping();
}

#[test]
fn unsupported_protocol_version_is_answered_with_connack_0x84_and_closed() {
    // (3.1.1) [MQTT-3.1.2-2]: CONNACK rc 1 then close; [MQTT-3.1.2-2] (5.0): MAY CONNACK 0x84.
    // The reason code 0x84 encodes as return code 1 for a 3.x client.
    for level in [3, 6] {
        let sim = Sim::new();
        let c = sim.open();
        c.decode_error(&DecodeError::UnsupportedProtocolVersion { level });
        let ack = match c.expect(|p| matches!(p, Packet::ConnAck(_))) {
            Packet::ConnAck(a) => a,
            _ => unreachable!(),
        };
        assert_eq!(ack.reason_code, ReasonCode::UnsupportedProtocolVersion);
        assert_eq!(ack.reason_code.to_v3_connack(), 1);
        assert!(!ack.session_present);
        c.expect_closed_silently();
    }
}

#[test]
fn malformed_connect_closes_the_connection() {
    // [MQTT-3.1.4-1]: MUST close; MAY first send a CONNACK with a code of 0x80 or more.
    let sim = Sim::new();
    let c = sim.open();
    c.decode_error(&DecodeError::Malformed("[MQTT-3.1.2-3] reserved flag set"));
    for p in c.take_all() {
        match p {
            Packet::ConnAck(a) => assert!(!a.reason_code.is_success(), "{a:?}"),
            other => panic!("only a failed CONNACK may answer a bad CONNECT: {other:?}"),
        }
    }
    assert!(c.is_closed());
}

#[test]
fn v5_decode_error_after_connect_sends_disconnect_with_its_reason_code() {
    // [MQTT-4.13.1-1], §4.13: DISCONNECT with the error's reason code, then close;
    // §3.2.2.3.6: a packet over our maximum is 0x95.
    let cases = [
        (DecodeError::Malformed("bad"), ReasonCode::MalformedPacket),
        (DecodeError::Protocol("bad"), ReasonCode::ProtocolError),
        (
            DecodeError::PacketTooLarge {
                size: 2_000_000,
                max: 1_048_576,
            },
            ReasonCode::PacketTooLarge,
        ),
        (
            DecodeError::TopicNameInvalid("[MQTT-3.3.2-2] wildcard"),
            ReasonCode::TopicNameInvalid,
        ),
    ];
    let sim = Sim::new();
    for (i, (err, code)) in cases.iter().enumerate() {
        let c = sim.connect_v5(&format!("c{i}"), |_| {});
        c.decode_error(err);
        c.expect_disconnect(*code);
    }
}

#[test]
fn v311_decode_error_after_connect_closes_without_disconnect() {
    // (3.1.1) §4.8: on a protocol violation the server MUST close the connection.
    let sim = Sim::new();
    let c = sim.connect_v311("a", |_| {});
    c.decode_error(&DecodeError::Malformed("bad"));
    c.expect_closed_silently();
}

#[test]
fn pingreq_is_answered_with_pingresp() {
    // [MQTT-3.12.4-1], both versions.
    let sim = Sim::new();
    for c in [sim.connect_v5("a", |_| {}), sim.connect_v311("b", |_| {})] {
        c.send(Packet::PingReq);
        c.expect(|p| matches!(p, Packet::PingResp));
        c.assert_silent();
    }
}

#[test]
fn shutdown_disconnects_v5_clients_with_0x8b_and_server_reference_and_closes_all() {
    // §3.14.2.1 0x8B Server shutting down; §4.11 Server Reference on DISCONNECT; a 3.1.1
    // client and a socket that never sent CONNECT are closed without a packet.
    let sim = Sim::new();
    let v5 = sim.connect_v5("a", |_| {});
    let v3 = sim.connect_v311("b", |_| {});
    let raw = sim.open();
    sim.shutdown(ReasonCode::ServerShuttingDown, Some("other.example:1883"));
    let d = v5.expect_disconnect(ReasonCode::ServerShuttingDown);
    assert_eq!(
        d.properties.server_reference.as_deref(),
        Some("other.example:1883")
    );
    v3.expect_closed_silently();
    raw.expect_closed_silently();
}
