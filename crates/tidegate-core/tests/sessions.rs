//! Session scenarios: takeover, clean start, resume (subscriptions, offline queue, resend of
//! unacknowledged messages), session expiry and its changes at DISCONNECT.
//!
//! Rule ids are MQTT 5.0 unless marked "(3.1.1)".

mod harness;

use harness::*;
use tidegate_core::BrokerConfig;
use tidegate_protocol::{QoS, ReasonCode};

#[test]
fn takeover_sends_0x8e_to_the_old_v5_connection_then_closes_it() {
    // [MQTT-3.1.4-3]: DISCONNECT 0x8E to the existing client, close its connection.
    let sim = Sim::new();
    let old = sim.connect_v5("dev", |_| {});
    let new = sim.connect_v5("dev", |_| {});
    old.expect_disconnect(ReasonCode::SessionTakenOver);
    assert_eq!(new.connack().reason_code, ReasonCode::Success);
    assert!(!new.is_closed());
    new.ping();
}

#[test]
fn takeover_of_a_v311_connection_closes_it_without_a_packet() {
    // (3.1.1) [MQTT-3.1.4-2]: the server MUST disconnect the existing client.
    let sim = Sim::new();
    let old = sim.connect_v311("dev", |_| {});
    let new = sim.connect_v311("dev", |_| {});
    old.expect_closed_silently();
    assert_eq!(new.connack().reason_code, ReasonCode::Success);
    assert!(!new.is_closed());
}

#[test]
fn takeover_with_clean_start_0_moves_the_session_to_the_new_connection() {
    // [MQTT-3.2.2-3] session present 1; [MQTT-3.1.2-5] resume from the existing session:
    // the subscription, the unacknowledged message (resent with its packet id and DUP=1,
    // [MQTT-4.4.0-1], [MQTT-3.3.1-1]) and the messages queued behind the window.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    let old = sim.connect_v5("dev", |c| {
        persistent(c);
        c.properties.receive_maximum = Some(1);
    });
    assert_eq!(
        old.subscribe("t", QoS::AtLeastOnce),
        ReasonCode::GrantedQoS1
    );
    for m in ["m1", "m2", "m3"] {
        publisher.publish("t", m, QoS::AtLeastOnce);
    }
    let first = old.expect_publish();
    assert_eq!((text(&first), first.dup), ("m1".to_owned(), false));
    old.assert_silent(); // window of 1

    let new = sim.connect_v5("dev", resume);
    old.expect_disconnect(ReasonCode::SessionTakenOver);
    assert!(new.connack().session_present);
    let got = new.take_publishes();
    let summary: Vec<_> = got.iter().map(|p| (text(p), p.dup)).collect();
    assert_eq!(
        summary,
        [
            ("m1".into(), true),
            ("m2".into(), false),
            ("m3".into(), false)
        ]
    );
    assert_eq!(got[0].packet_id, first.packet_id);
    for p in &got {
        new.puback(p.packet_id.expect("QoS 1"));
    }
    // The subscription moved too.
    publisher.publish("t", "m4", QoS::AtLeastOnce);
    assert_eq!(new.receive_payloads(), ["m4"]);
    new.assert_silent();
}

#[test]
fn takeover_with_clean_start_1_starts_a_new_session() {
    // [MQTT-3.1.2-4]: discard the existing session; [MQTT-3.2.2-2] session present 0.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    let old = sim.connect_v5("dev", persistent);
    old.subscribe("t", QoS::AtLeastOnce);
    let new = sim.connect_v5("dev", persistent);
    old.expect_disconnect(ReasonCode::SessionTakenOver);
    assert!(!new.connack().session_present);
    publisher.publish("t", "x", QoS::AtLeastOnce);
    new.assert_silent();
}

#[test]
fn clean_start_1_discards_the_offline_session() {
    // [MQTT-3.1.2-4], [MQTT-3.2.2-2]: subscriptions and queued messages are gone.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    let a = sim.connect_v5("dev", persistent);
    a.subscribe("t", QoS::AtLeastOnce);
    a.disconnect(ReasonCode::Success);
    publisher.publish("t", "queued", QoS::AtLeastOnce);

    let b = sim.connect_v5("dev", persistent);
    assert!(!b.connack().session_present);
    b.assert_silent();
    publisher.publish("t", "live", QoS::AtLeastOnce);
    b.assert_silent();
}

#[test]
fn clean_start_0_without_a_stored_session_reports_no_session() {
    // [MQTT-3.2.2-3]: session present 0 when the server has no session state.
    let sim = Sim::new();
    let c = sim.connect_v5("new", resume);
    assert_eq!(c.connack().reason_code, ReasonCode::Success);
    assert!(!c.connack().session_present);
}

#[test]
fn resume_delivers_qos1_and_qos2_messages_published_while_offline_in_order() {
    // [MQTT-3.1.2-5] resume; [MQTT-4.5.0-1] messages are added to the session state;
    // [MQTT-4.6.0-6] ordered topic; [MQTT-3.8.4-8] delivered QoS = min(published, granted).
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    let a = sim.connect_v5("dev", persistent);
    assert_eq!(a.subscribe("t", QoS::ExactlyOnce), ReasonCode::GrantedQoS2);
    a.disconnect(ReasonCode::Success);
    publisher.publish("t", "one", QoS::AtLeastOnce);
    publisher.publish("t", "two", QoS::ExactlyOnce);
    publisher.publish("t", "three", QoS::AtLeastOnce);

    let b = sim.connect_v5("dev", resume);
    assert!(b.connack().session_present);
    let got = b.receive();
    let summary: Vec<_> = got.iter().map(|p| (text(p), p.qos, p.dup)).collect();
    assert_eq!(
        summary,
        [
            ("one".into(), QoS::AtLeastOnce, false),
            ("two".into(), QoS::ExactlyOnce, false),
            ("three".into(), QoS::AtLeastOnce, false),
        ]
    );
    b.assert_silent();
}

#[test]
fn resume_resends_unacknowledged_publishes_with_dup_and_original_ids_in_order() {
    // [MQTT-4.4.0-1] resend with the original packet ids; [MQTT-3.3.1-1] DUP=1;
    // §4.6 resend in the original order.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    let a = sim.connect_v5("dev", persistent);
    a.subscribe("t", QoS::AtLeastOnce);
    for m in ["a", "b", "c"] {
        publisher.publish("t", m, QoS::AtLeastOnce);
    }
    let sent = a.take_publishes();
    assert_eq!(sent.iter().map(text).collect::<Vec<_>>(), ["a", "b", "c"]);
    // Only "b" is acknowledged before the link fails.
    a.puback(sent[1].packet_id.expect("QoS 1"));
    a.drop_connection();

    let b = sim.connect_v5("dev", resume);
    assert!(b.connack().session_present);
    let again = b.take_publishes();
    let summary: Vec<_> = again
        .iter()
        .map(|p| (text(p), p.dup, p.packet_id))
        .collect();
    assert_eq!(
        summary,
        [
            ("a".into(), true, sent[0].packet_id),
            ("c".into(), true, sent[2].packet_id),
        ]
    );
    b.assert_silent();
}

#[test]
fn acknowledged_messages_are_not_resent_on_resume() {
    // [MQTT-4.3.2-3]: a message is unacknowledged only until its PUBACK.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    let a = sim.connect_v5("dev", persistent);
    a.subscribe("t", QoS::AtLeastOnce);
    publisher.publish("t", "x", QoS::AtLeastOnce);
    assert_eq!(a.receive_payloads(), ["x"]);
    a.drop_connection();
    let b = sim.connect_v5("dev", resume);
    assert!(b.connack().session_present);
    b.assert_silent();
}

#[test]
fn session_survives_until_its_expiry_interval() {
    // [MQTT-3.1.2-23]: session state is kept after the connection closes while the interval
    // runs; [MQTT-4.1.0-1]/[MQTT-4.1.0-2] discarded once it has passed.
    let sim = Sim::new();
    let a = sim.connect_v5("a", |c| c.properties.session_expiry_interval = Some(10));
    let b = sim.connect_v5("b", |c| c.properties.session_expiry_interval = Some(10));
    a.subscribe("t", QoS::AtLeastOnce);
    b.subscribe("t", QoS::AtLeastOnce);
    a.drop_connection();
    b.drop_connection();

    sim.advance(millis(9_900));
    let a2 = sim.connect_v5("a", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(10);
    });
    assert!(a2.connack().session_present, "expired before its interval");

    sim.advance(millis(200));
    let b2 = sim.connect_v5("b", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(10);
    });
    assert!(
        !b2.connack().session_present,
        "still present after its interval"
    );
    // The subscription went with the session.
    sim.connect_v5("pub", |_| {})
        .publish("t", "x", QoS::AtLeastOnce);
    assert_eq!(a2.receive_payloads(), ["x"]);
    b2.assert_silent();
}

#[test]
fn session_expiry_is_counted_from_the_disconnect() {
    // [MQTT-4.1.0-1]: session state is not discarded while the connection is open.
    let sim = Sim::new();
    let a = sim.connect_v5("a", |c| c.properties.session_expiry_interval = Some(10));
    a.subscribe("t", QoS::AtLeastOnce);
    sim.advance(secs(60));
    a.disconnect(ReasonCode::Success);
    sim.advance(secs(5));
    let b = sim.connect_v5("a", |c| c.clean_start = false);
    assert!(b.connack().session_present);
}

#[test]
fn session_with_expiry_0_ends_when_the_connection_closes() {
    // §3.1.2.11.2: absent or 0, the session ends when the network connection is closed.
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    let a = sim.connect_v5("dev", |_| {});
    a.subscribe("t", QoS::AtLeastOnce);
    a.drop_connection();
    publisher.publish("t", "x", QoS::AtLeastOnce);
    let b = sim.connect_v5("dev", |c| c.clean_start = false);
    assert!(!b.connack().session_present);
    b.assert_silent();
}

#[test]
fn capped_session_expiry_is_enforced() {
    // §3.2.2.3.2: the server's value (announced in CONNACK) is the one used.
    let sim = Sim::with_config(BrokerConfig {
        max_session_expiry: 20,
        ..BrokerConfig::default()
    });
    let a = sim.connect_v5("dev", |c| c.properties.session_expiry_interval = Some(3600));
    assert_eq!(a.connack().properties.session_expiry_interval, Some(20));
    a.drop_connection();
    sim.advance(secs(21));
    let b = sim.connect_v5("dev", resume);
    assert!(!b.connack().session_present);
}

#[test]
fn disconnect_may_shorten_the_session_expiry_to_0() {
    // §3.14.2.2.2: the DISCONNECT's Session Expiry Interval replaces the CONNECT's.
    let sim = Sim::new();
    let a = sim.connect_v5("dev", persistent);
    a.subscribe("t", QoS::AtLeastOnce);
    a.disconnect_with(disconnect_with_expiry(ReasonCode::Success, 0));
    let b = sim.connect_v5("dev", resume);
    assert!(!b.connack().session_present);
}

#[test]
fn disconnect_may_lengthen_a_non_zero_session_expiry() {
    // §3.14.2.2.2.
    let sim = Sim::new();
    let a = sim.connect_v5("dev", |c| c.properties.session_expiry_interval = Some(10));
    a.disconnect_with(disconnect_with_expiry(ReasonCode::Success, 100));
    sim.advance(secs(50));
    let b = sim.connect_v5("dev", resume);
    assert!(b.connack().session_present);
}

#[test]
fn disconnect_setting_an_expiry_when_connect_had_0_is_a_protocol_error() {
    // §3.14.2.2.2: non-zero expiry on DISCONNECT after 0 in CONNECT is a Protocol Error; the
    // server does not treat it as a valid DISCONNECT and uses DISCONNECT 0x82. The session
    // keeps its expiry of 0 and ends with the connection.
    let sim = Sim::new();
    let a = sim.connect_v5("dev", |_| {});
    a.subscribe("t", QoS::AtLeastOnce);
    a.send(Packet::Disconnect(disconnect_with_expiry(
        ReasonCode::Success,
        60,
    )));
    a.expect_disconnect(ReasonCode::ProtocolError);
    let b = sim.connect_v5("dev", resume);
    assert!(!b.connack().session_present);
}

#[test]
fn v311_clean_session_0_persists_and_resumes() {
    // (3.1.1) [MQTT-3.1.2-4] session kept after disconnect; [MQTT-3.2.2-2] session present 1;
    // [MQTT-3.1.2-5] QoS 1/2 messages published while offline are part of the session.
    let sim = Sim::new();
    let publisher = sim.connect_v311("pub", |_| {});
    let a = sim.connect_v311("dev", |c| c.clean_start = false);
    assert!(!a.connack().session_present);
    assert_eq!(a.subscribe("t", QoS::AtLeastOnce), ReasonCode::GrantedQoS1);
    a.disconnect(ReasonCode::Success);
    publisher.publish("t", "offline", QoS::AtLeastOnce);

    let b = sim.connect_v311("dev", |c| c.clean_start = false);
    assert!(b.connack().session_present);
    assert_eq!(b.receive_payloads(), ["offline"]);
}

#[test]
fn v311_clean_session_1_discards_the_session() {
    // (3.1.1) [MQTT-3.1.2-6]: the session lasts as long as the network connection.
    let sim = Sim::new();
    let publisher = sim.connect_v311("pub", |_| {});
    let a = sim.connect_v311("dev", |c| c.clean_start = false);
    a.subscribe("t", QoS::AtLeastOnce);
    a.disconnect(ReasonCode::Success);
    let b = sim.connect_v311("dev", |_| {});
    assert!(!b.connack().session_present);
    b.disconnect(ReasonCode::Success);
    publisher.publish("t", "x", QoS::AtLeastOnce);
    let c = sim.connect_v311("dev", |c| c.clean_start = false);
    assert!(!c.connack().session_present);
    c.assert_silent();
}

#[test]
fn v311_resend_on_resume_uses_dup() {
    // (3.1.1) [MQTT-4.4.0-1]: re-send unacknowledged PUBLISH with DUP=1 ([MQTT-3.3.1-1]).
    let sim = Sim::new();
    let publisher = sim.connect_v311("pub", |_| {});
    let a = sim.connect_v311("dev", |c| c.clean_start = false);
    a.subscribe("t", QoS::AtLeastOnce);
    publisher.publish("t", "x", QoS::AtLeastOnce);
    let first = a.expect_publish();
    a.drop_connection();
    let b = sim.connect_v311("dev", |c| c.clean_start = false);
    let again = b.expect_publish();
    assert_eq!(
        (text(&again), again.dup, again.packet_id),
        ("x".into(), true, first.packet_id)
    );
}
