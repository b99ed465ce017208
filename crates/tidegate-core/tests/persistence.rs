//! Crashes in the simulated world: a durable broker over a memory store, killed (uncommitted
//! batches lost, every connection gone) and restored. The deterministic counterpart of the
//! server's SIGKILL tests: here the test decides exactly which side of the commit the crash
//! falls on.

mod harness;

use harness::*;
use tidegate_core::BrokerConfig;
use tidegate_protocol::{Packet, PubResponse, QoS};

fn durable() -> Sim {
    Sim::durable(BrokerConfig::default())
}

/// A persistent QoS 2 subscriber on `t` that is offline.
fn offline_subscriber(sim: &Sim) {
    let sub = sim.connect_v5("sub", persistent);
    sub.subscribe("t", QoS::ExactlyOnce);
    sub.drop_connection();
}

#[test]
fn a_crash_between_receive_and_acknowledgement_loses_nothing_and_delivers_once() {
    let sim = durable();
    offline_subscriber(&sim);
    let publ = sim.connect_v5("pub", persistent);
    sim.hold_commits(true);
    let p = publ.send_publish("t", "once", QoS::ExactlyOnce, |_| {});
    // Received and routed, but not durable: no PUBREC yet.
    assert!(publ.take_all().is_empty());
    let report = sim.crash_and_restart(secs(1));
    assert_eq!(report.sessions, 2);
    // The publisher saw no PUBREC: it resends with DUP on its resumed session.
    let publ = sim.connect_v5("pub", resume);
    assert!(publ.connack().session_present);
    let mut dup = p.clone();
    dup.dup = true;
    publ.send(Packet::Publish(dup));
    let id = p.packet_id.unwrap();
    assert_eq!(
        publ.take_all(),
        vec![Packet::PubRec(PubResponse::success(id))]
    );
    publ.pubrel(id);
    assert_eq!(
        publ.take_all(),
        vec![Packet::PubComp(PubResponse::success(id))]
    );
    let sub = sim.connect_v5("sub", resume);
    assert_eq!(sub.receive_payloads(), vec!["once"]);
    sub.assert_silent();
}

#[test]
fn a_crash_after_the_acknowledgement_does_not_route_the_resent_publish_again() {
    let sim = durable();
    offline_subscriber(&sim);
    let publ = sim.connect_v5("pub", persistent);
    let p = publ.send_publish("t", "once", QoS::ExactlyOnce, |_| {});
    let id = p.packet_id.unwrap();
    assert_eq!(
        publ.take_all(),
        vec![Packet::PubRec(PubResponse::success(id))]
    );
    // PUBREL lost with the crash; the publisher resends the PUBLISH as well (DUP).
    sim.crash_and_restart(secs(1));
    let publ = sim.connect_v5("pub", resume);
    let mut dup = p;
    dup.dup = true;
    publ.send(Packet::Publish(dup));
    assert_eq!(
        publ.take_all(),
        vec![Packet::PubRec(PubResponse::success(id))]
    );
    publ.pubrel(id);
    let sub = sim.connect_v5("sub", resume);
    assert_eq!(sub.receive_payloads(), vec!["once"]);
    sub.assert_silent();
}

#[test]
fn outbound_qos2_resumes_at_the_stored_stage_after_each_crash() {
    let sim = durable();
    let sub = sim.connect_v5("sub", persistent);
    sub.subscribe("t", QoS::ExactlyOnce);
    let publ = sim.connect_v5("pub", persistent);
    publ.publish("t", "m", QoS::ExactlyOnce);
    let first = sub.expect_publish();
    let id = first.packet_id.unwrap();
    // Crash before PUBREC: the same PUBLISH again, same packet id, DUP.
    sim.crash_and_restart(secs(1));
    let sub = sim.connect_v5("sub", resume);
    let again = sub.expect_publish();
    assert_eq!((again.packet_id, again.dup), (Some(id), true));
    sub.pubrec(id);
    assert_eq!(
        sub.take_all(),
        vec![Packet::PubRel(PubResponse::success(id))]
    );
    // Crash after the PUBREL stage was stored: PUBREL again, never the PUBLISH.
    sim.crash_and_restart(secs(1));
    let sub = sim.connect_v5("sub", resume);
    assert_eq!(
        sub.take_all(),
        vec![Packet::PubRel(PubResponse::success(id))]
    );
    sub.pubcomp(id);
    sim.crash_and_restart(secs(1));
    let sub = sim.connect_v5("sub", resume);
    sub.assert_silent();
}

#[test]
fn held_acknowledgements_are_lost_with_the_crash_never_sent_for_lost_state() {
    let sim = durable();
    offline_subscriber(&sim);
    let publ = sim.connect_v311("pub311", |c| c.clean_start = false);
    sim.hold_commits(true);
    publ.send_publish("t", "a", QoS::AtLeastOnce, |_| {});
    publ.send_publish("t", "b", QoS::AtLeastOnce, |_| {});
    assert!(sim.store_batches_pending());
    assert!(
        publ.take_all().is_empty(),
        "no PUBACK before the batch is written"
    );
    sim.crash_and_restart(secs(1));
    // Nothing was acknowledged, nothing was stored: the subscriber's queue is empty.
    let sub = sim.connect_v5("sub", resume);
    sub.assert_silent();
}

#[test]
fn retained_messages_and_their_expiry_survive_a_restart() {
    let sim = durable();
    let publ = sim.connect_v5("pub", |_| {});
    publ.publish_with("keep", "k", QoS::AtLeastOnce, |p| p.retain = true);
    publ.publish_with("short", "s", QoS::AtLeastOnce, |p| {
        p.retain = true;
        p.properties.message_expiry_interval = Some(10);
    });
    let report = sim.crash_and_restart(secs(20));
    assert_eq!((report.retained, report.expired_retained), (1, 1));
    let sub = sim.connect_v5("late", |_| {});
    sub.subscribe("#", QoS::AtLeastOnce);
    assert_eq!(sub.receive_payloads(), vec!["k"]);
}
