//! QoS scenarios: the QoS 1 and 2 handshakes, exactly-once delivery when the link fails at
//! every step of the QoS 2 exchange in both directions, and flow control (Receive Maximum)
//! both ways.
//!
//! Rule ids are MQTT 5.0 unless marked "(3.1.1)".

mod harness;

use harness::*;
use tidegate_core::BrokerConfig;
use tidegate_protocol::{PacketId, PubResponse, Publish, QoS, ReasonCode};

/// A subscriber to `t` at QoS 2 and a publisher whose session survives a dropped link.
fn qos2_pair(sim: &Sim) -> (Client, Client) {
    let sub = sim.connect_v5("sub", |_| {});
    assert_eq!(
        sub.subscribe("t", QoS::ExactlyOnce),
        ReasonCode::GrantedQoS2
    );
    let publisher = sim.connect_v5("pub", persistent);
    (sub, publisher)
}

/// PUBREC for `id` with a success code (0x00, or 0x10 No matching subscribers, §3.5.2.1).
fn expect_pubrec(c: &Client, id: PacketId) {
    c.expect(|p| matches!(p, Packet::PubRec(r) if r.packet_id == id && r.reason_code.is_success()));
}

fn expect_pubrel(c: &Client, id: PacketId) {
    c.expect(|p| matches!(p, Packet::PubRel(r) if r.packet_id == id && r.reason_code == ReasonCode::Success));
}

fn as_dup(p: &Publish) -> Packet {
    Packet::Publish(Publish {
        dup: true,
        ..p.clone()
    })
}

#[test]
fn qos1_publish_is_acknowledged_with_puback_carrying_its_packet_id() {
    // [MQTT-4.3.2-4], [MQTT-2.2.1-5].
    let sim = Sim::new();
    let c = sim.connect_v5("pub", |_| {});
    let p = c.send_publish("t", "x", QoS::AtLeastOnce, |_| {});
    let id = p.packet_id.expect("QoS 1");
    c.expect(|p| matches!(p, Packet::PubAck(r) if r.packet_id == id && r.reason_code.is_success()));
    c.assert_silent();
}

#[test]
fn qos2_publish_goes_through_pubrec_pubrel_pubcomp() {
    // [MQTT-4.3.3-8] PUBREC with the packet id; [MQTT-4.3.3-11] PUBCOMP for the PUBREL.
    let sim = Sim::new();
    let (sub, publisher) = qos2_pair(&sim);
    let p = publisher.send_publish("t", "x", QoS::ExactlyOnce, |_| {});
    let id = p.packet_id.expect("QoS 2");
    expect_pubrec(&publisher, id);
    publisher.pubrel(id);
    publisher.expect(|p| matches!(p, Packet::PubComp(r) if r.packet_id == id && r.reason_code == ReasonCode::Success));
    publisher.assert_silent();
    assert_eq!(sub.receive_payloads(), ["x"]);
}

#[test]
fn delivery_qos_is_the_minimum_of_published_and_granted() {
    // [MQTT-3.8.4-8].
    let sim = Sim::new();
    let publisher = sim.connect_v5("pub", |_| {});
    let low = sim.connect_v5("low", |_| {});
    let high = sim.connect_v5("high", |_| {});
    low.subscribe("t", QoS::AtLeastOnce);
    high.subscribe("t", QoS::ExactlyOnce);
    publisher.publish("t", "q2", QoS::ExactlyOnce);
    publisher.publish("t", "q0", QoS::AtMostOnce);
    let qos = |c: &Client| c.receive().iter().map(|p| p.qos).collect::<Vec<_>>();
    assert_eq!(qos(&low), [QoS::AtLeastOnce, QoS::AtMostOnce]);
    assert_eq!(qos(&high), [QoS::ExactlyOnce, QoS::AtMostOnce]);
}

#[test]
fn incoming_dup_flag_is_not_propagated_to_subscribers() {
    // [MQTT-3.3.1-3]: DUP on the outgoing PUBLISH depends only on its own retransmission.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("t", QoS::AtLeastOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish_with("t", "x", QoS::AtLeastOnce, |p| p.dup = true);
    let got = sub.expect_publish();
    assert!(!got.dup);
}

#[test]
fn qos1_same_packet_id_after_puback_is_a_new_message() {
    // [MQTT-4.3.2-5].
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("t", QoS::AtLeastOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    let p = publisher.send_publish("t", "first", QoS::AtLeastOnce, |_| {});
    publisher.expect(|p| matches!(p, Packet::PubAck(_)));
    publisher.send(Packet::Publish(Publish {
        dup: true,
        payload: "second".into(),
        ..p
    }));
    publisher.expect(|p| matches!(p, Packet::PubAck(_)));
    assert_eq!(sub.receive_payloads(), ["first", "second"]);
}

// ---- QoS 2 client -> broker, link failure at each step ------------------------------------

#[test]
fn inbound_qos2_duplicate_publish_before_pubrel_is_delivered_once() {
    // [MQTT-4.3.3-10]: until PUBREL, answer a PUBLISH with the same id with PUBREC and do not
    // deliver it again.
    let sim = Sim::new();
    let (sub, publisher) = qos2_pair(&sim);
    let p = publisher.send_publish("t", "once", QoS::ExactlyOnce, |_| {});
    let id = p.packet_id.expect("QoS 2");
    expect_pubrec(&publisher, id);
    publisher.send(as_dup(&p));
    expect_pubrec(&publisher, id);
    publisher.pubrel(id);
    publisher.expect(|p| matches!(p, Packet::PubComp(r) if r.packet_id == id));
    assert_eq!(sub.receive_payloads(), ["once"]);
}

#[test]
fn inbound_qos2_link_lost_before_pubrec_is_delivered_once() {
    // [MQTT-4.4.0-1] the client resends the PUBLISH (DUP=1) on resume; [MQTT-4.3.3-10] the
    // broker answers PUBREC and does not deliver twice; [MQTT-4.3.3-12] after PUBCOMP the id
    // names a new message.
    let sim = Sim::new();
    let (sub, publisher) = qos2_pair(&sim);
    let p = publisher.send_publish("t", "once", QoS::ExactlyOnce, |_| {});
    let id = p.packet_id.expect("QoS 2");
    publisher.drop_connection(); // the PUBREC is lost with the link

    let again = sim.connect_v5("pub", resume);
    assert!(again.connack().session_present);
    again.send(as_dup(&p));
    expect_pubrec(&again, id);
    again.pubrel(id);
    again.expect(|p| matches!(p, Packet::PubComp(r) if r.packet_id == id && r.reason_code == ReasonCode::Success));
    assert_eq!(sub.receive_payloads(), ["once"]);

    again.send(Packet::Publish(Publish {
        payload: "next".into(),
        ..p
    }));
    expect_pubrec(&again, id);
    again.pubrel(id);
    again.expect(|p| matches!(p, Packet::PubComp(r) if r.packet_id == id));
    assert_eq!(sub.receive_payloads(), ["next"]);
}

#[test]
fn inbound_qos2_link_lost_after_pubrec_completes_with_pubrel_once() {
    // [MQTT-4.4.0-1] the client resends PUBREL on resume; [MQTT-4.3.3-11] PUBCOMP.
    let sim = Sim::new();
    let (sub, publisher) = qos2_pair(&sim);
    let p = publisher.send_publish("t", "once", QoS::ExactlyOnce, |_| {});
    let id = p.packet_id.expect("QoS 2");
    expect_pubrec(&publisher, id);
    publisher.drop_connection();

    let again = sim.connect_v5("pub", resume);
    assert!(again.connack().session_present);
    again.pubrel(id);
    again.expect(|p| matches!(p, Packet::PubComp(r) if r.packet_id == id && r.reason_code == ReasonCode::Success));
    again.assert_silent();
    assert_eq!(sub.receive_payloads(), ["once"]);
}

#[test]
fn inbound_qos2_link_lost_before_pubcomp_completes_once() {
    // [MQTT-4.3.3-11]: a resent PUBREL is answered with PUBCOMP (0x00, or 0x92 Packet
    // Identifier not found once the broker has forgotten the id, §3.7.2.1); no second copy.
    let sim = Sim::new();
    let (sub, publisher) = qos2_pair(&sim);
    let p = publisher.send_publish("t", "once", QoS::ExactlyOnce, |_| {});
    let id = p.packet_id.expect("QoS 2");
    expect_pubrec(&publisher, id);
    publisher.pubrel(id);
    publisher.drop_connection(); // the PUBCOMP is lost with the link

    let again = sim.connect_v5("pub", resume);
    again.pubrel(id);
    again.expect(|p| {
        matches!(p, Packet::PubComp(r) if r.packet_id == id
            && matches!(r.reason_code, ReasonCode::Success | ReasonCode::PacketIdentifierNotFound))
    });
    again.assert_silent();
    assert_eq!(sub.receive_payloads(), ["once"]);
}

// ---- QoS 2 broker -> client, link failure at each step ------------------------------------

/// A subscriber at QoS 2 with a surviving session, holding one undelivered message "x".
fn outbound_qos2(sim: &Sim) -> (Publish, Client) {
    let sub = sim.connect_v5("sub", persistent);
    sub.subscribe("t", QoS::ExactlyOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish("t", "x", QoS::ExactlyOnce);
    let first = sub.expect_publish();
    assert_eq!(
        (text(&first), first.qos, first.dup),
        ("x".into(), QoS::ExactlyOnce, false)
    );
    (first, sub)
}

#[test]
fn outbound_qos2_link_lost_before_pubrec_resends_publish_with_dup() {
    // [MQTT-4.4.0-1] resend with the original id; [MQTT-3.3.1-1] DUP=1; then the flow completes
    // and nothing is resent on a later resume.
    let sim = Sim::new();
    let (first, sub) = outbound_qos2(&sim);
    let id = first.packet_id.expect("QoS 2");
    sub.drop_connection();

    let sub = sim.connect_v5("sub", resume);
    assert!(sub.connack().session_present);
    let again = sub.expect_publish();
    assert_eq!(
        (text(&again), again.dup, again.packet_id),
        ("x".into(), true, Some(id))
    );
    sub.pubrec(id);
    expect_pubrel(&sub, id);
    sub.pubcomp(id);
    sub.assert_silent();

    sub.drop_connection();
    let sub = sim.connect_v5("sub", resume);
    sub.assert_silent();
}

#[test]
fn outbound_qos2_link_lost_after_pubrec_resends_only_pubrel() {
    // [MQTT-4.4.0-1] resend the PUBREL; [MQTT-4.3.3-6] never the PUBLISH once PUBREL is sent.
    let sim = Sim::new();
    let (first, sub) = outbound_qos2(&sim);
    let id = first.packet_id.expect("QoS 2");
    sub.pubrec(id);
    expect_pubrel(&sub, id);
    sub.drop_connection(); // the PUBCOMP never leaves

    let sub = sim.connect_v5("sub", resume);
    expect_pubrel(&sub, id);
    sub.assert_silent();
    sub.pubcomp(id);
    sub.assert_silent();

    sub.drop_connection();
    let sub = sim.connect_v5("sub", resume);
    sub.assert_silent();
}

#[test]
fn outbound_qos2_interrupted_at_both_steps_resends_both_kinds() {
    // [MQTT-4.4.0-1]: one message waiting for PUBCOMP (PUBREL resent), one waiting for PUBREC
    // (PUBLISH resent with DUP=1); nothing else.
    let sim = Sim::new();
    let (first, sub) = outbound_qos2(&sim);
    let id1 = first.packet_id.expect("QoS 2");
    sub.pubrec(id1);
    expect_pubrel(&sub, id1);
    sim.connect_v5("pub2", |_| {})
        .publish("t", "y", QoS::ExactlyOnce);
    let second = sub.expect_publish();
    let id2 = second.packet_id.expect("QoS 2");
    sub.drop_connection();

    let sub = sim.connect_v5("sub", resume);
    let mut rel = 0;
    let mut publishes = Vec::new();
    for p in sub.take_all() {
        match p {
            Packet::PubRel(r) if r.packet_id == id1 => rel += 1,
            Packet::Publish(p) => publishes.push((text(&p), p.dup, p.packet_id)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rel, 1);
    assert_eq!(publishes, [("y".into(), true, Some(id2))]);
}

// ---- flow control ---------------------------------------------------------------------------

#[test]
fn client_receive_maximum_limits_unacknowledged_qos1_publishes() {
    // [MQTT-3.3.4-9], [MQTT-4.9.0-2]: at most Receive Maximum unacknowledged QoS>0 PUBLISH;
    // each PUBACK lets the next queued one flow, in order.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |c| c.properties.receive_maximum = Some(2));
    sub.subscribe("t", QoS::AtLeastOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    for i in 1..=5 {
        publisher.publish("t", format!("m{i}"), QoS::AtLeastOnce);
    }
    let window = sub.take_publishes();
    assert_eq!(window.iter().map(text).collect::<Vec<_>>(), ["m1", "m2"]);
    sub.puback(window[0].packet_id.expect("QoS 1"));
    let next = sub.take_publishes();
    assert_eq!(next.iter().map(text).collect::<Vec<_>>(), ["m3"]);
    sub.puback(window[1].packet_id.expect("QoS 1"));
    sub.puback(next[0].packet_id.expect("QoS 1"));
    assert_eq!(sub.receive_payloads(), ["m4", "m5"]);
    sub.assert_silent();
}

#[test]
fn qos2_send_quota_is_returned_by_pubcomp_not_by_pubrec() {
    // §4.9: the send quota is incremented by PUBACK or PUBCOMP, or by a PUBREC with a failure.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |c| c.properties.receive_maximum = Some(1));
    sub.subscribe("t", QoS::ExactlyOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish("t", "a", QoS::ExactlyOnce);
    publisher.publish("t", "b", QoS::ExactlyOnce);
    let a = sub.expect_publish();
    sub.assert_silent();
    let id = a.packet_id.expect("QoS 2");
    sub.pubrec(id);
    expect_pubrel(&sub, id);
    sub.assert_silent(); // "b" must wait for the PUBCOMP
    sub.pubcomp(id);
    let b = sub.expect_publish();
    assert_eq!(text(&b), "b");
}

#[test]
fn pubrec_with_a_failure_ends_the_flow_and_frees_the_quota() {
    // [MQTT-4.4.0-2]: a PUBREC >= 0x80 acknowledges the PUBLISH; no PUBREL, no retransmission;
    // §4.9 it returns the send quota.
    let sim = Sim::new();
    let sub = sim.connect_v5("sub", |c| {
        persistent(c);
        c.properties.receive_maximum = Some(1);
    });
    sub.subscribe("t", QoS::ExactlyOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    publisher.publish("t", "refused", QoS::ExactlyOnce);
    publisher.publish("t", "next", QoS::ExactlyOnce);
    let refused = sub.expect_publish();
    let id = refused.packet_id.expect("QoS 2");
    sub.send(Packet::PubRec(PubResponse {
        reason_code: ReasonCode::ImplementationSpecificError,
        ..PubResponse::success(id)
    }));
    let next = sub.expect_publish();
    assert_eq!(text(&next), "next");
    sub.assert_silent();
    sub.pubrec(next.packet_id.expect("QoS 2"));
    expect_pubrel(&sub, next.packet_id.expect("QoS 2"));
    sub.pubcomp(next.packet_id.expect("QoS 2"));

    sub.drop_connection();
    let sub = sim.connect_v5("sub", resume);
    sub.assert_silent();
}

#[test]
fn configured_max_inflight_caps_the_window_when_the_client_allows_more() {
    // BrokerConfig::max_inflight: at most 3 unacknowledged even with Receive Maximum 65,535.
    let sim = Sim::with_config(BrokerConfig {
        max_inflight: 3,
        ..BrokerConfig::default()
    });
    let sub = sim.connect_v5("sub", |_| {});
    sub.subscribe("t", QoS::AtLeastOnce);
    let publisher = sim.connect_v5("pub", |_| {});
    for i in 1..=5 {
        publisher.publish("t", format!("m{i}"), QoS::AtLeastOnce);
    }
    let window = sub.take_publishes();
    assert_eq!(window.len(), 3);
    for p in &window {
        sub.puback(p.packet_id.expect("QoS 1"));
    }
    assert_eq!(sub.receive_payloads(), ["m4", "m5"]);
}

#[test]
fn client_exceeding_our_receive_maximum_is_disconnected_with_0x93() {
    // [MQTT-3.3.4-7]: more than Receive Maximum unacknowledged QoS 1/2 PUBLISH from the
    // client is answered with DISCONNECT 0x93 (Receive Maximum exceeded).
    let sim = Sim::with_config(BrokerConfig {
        receive_maximum: 2,
        ..BrokerConfig::default()
    });
    let c = sim.connect_v5("pub", |_| {});
    assert_eq!(c.connack().properties.receive_maximum, Some(2));
    for m in ["a", "b"] {
        let p = c.send_publish("t", m, QoS::ExactlyOnce, |_| {});
        expect_pubrec(&c, p.packet_id.expect("QoS 2"));
    }
    c.send_publish("t", "c", QoS::ExactlyOnce, |_| {});
    c.expect_disconnect(ReasonCode::ReceiveMaximumExceeded);
}

#[test]
fn completed_qos2_flows_return_our_receive_quota() {
    // §4.9: PUBCOMP returns the quota, so a client that completes its flows is never cut off.
    let sim = Sim::with_config(BrokerConfig {
        receive_maximum: 2,
        ..BrokerConfig::default()
    });
    let c = sim.connect_v5("pub", |_| {});
    for i in 0..10 {
        c.publish("t", format!("m{i}"), QoS::ExactlyOnce);
    }
    assert!(!c.is_closed());
    c.assert_silent();
}
