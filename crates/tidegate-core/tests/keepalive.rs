//! Keep alive scenarios: the 1.5 x Keep Alive limit on client silence, what counts as
//! activity, Keep Alive 0, and the v5 Server Keep Alive override.
//!
//! Rule ids are MQTT 5.0 unless marked "(3.1.1)".

mod harness;

use harness::*;
use tidegate_core::BrokerConfig;
use tidegate_protocol::{QoS, ReasonCode};

#[test]
fn silent_v5_client_is_disconnected_with_0x8d_after_one_and_a_half_keep_alives() {
    // [MQTT-3.1.2-22]: no packet within 1.5 x Keep Alive (15 s here): close, with DISCONNECT
    // 0x8D Keep Alive timeout (§3.14.2.1).
    let sim = Sim::new();
    let c = sim.connect_v5("a", |c| c.keep_alive = 10);
    sim.advance(millis(14_900));
    assert!(!c.is_closed(), "closed before 1.5 x keep alive");
    sim.advance(millis(200));
    c.expect_disconnect(ReasonCode::KeepAliveTimeout);
}

#[test]
fn silent_v311_client_is_closed_without_a_packet() {
    // (3.1.1) [MQTT-3.1.2-24].
    let sim = Sim::new();
    let c = sim.connect_v311("a", |c| c.keep_alive = 4);
    sim.advance(millis(5_900));
    assert!(!c.is_closed());
    sim.advance(millis(200));
    c.expect_closed_silently();
}

#[test]
fn any_packet_from_the_client_restarts_the_keep_alive_timer() {
    // [MQTT-3.1.2-20]/[MQTT-3.1.2-22]: the limit runs from the last control packet received,
    // whichever its kind.
    let sim = Sim::new();
    let c = sim.connect_v5("a", |c| c.keep_alive = 10);
    sim.advance(secs(10));
    c.publish("t", "x", QoS::AtMostOnce);
    sim.advance(secs(10));
    c.ping();
    sim.advance(millis(14_900));
    assert!(!c.is_closed(), "activity at 20 s did not count");
    sim.advance(millis(200));
    c.expect_disconnect(ReasonCode::KeepAliveTimeout);
    assert_eq!(sim.elapsed(), millis(35_100));
}

#[test]
fn traffic_from_the_broker_does_not_keep_the_client_alive() {
    // [MQTT-3.1.2-22]: only packets *from the client* count.
    let sim = Sim::new();
    let c = sim.connect_v5("a", |c| c.keep_alive = 10);
    c.subscribe("t", QoS::AtMostOnce); // at 0 s
    let publisher = sim.connect_v5("pub", |_| {});
    for _ in 0..3 {
        sim.advance(secs(4));
        publisher.publish("t", "tick", QoS::AtMostOnce);
    }
    sim.advance(millis(2_900)); // 14.9 s
    assert!(!c.is_closed());
    sim.advance(millis(200));
    assert_eq!(c.take_publishes().len(), 3);
    c.expect_disconnect(ReasonCode::KeepAliveTimeout);
}

#[test]
fn keep_alive_0_never_times_out() {
    // §3.1.2.10: a Keep Alive of 0 turns the mechanism off.
    let sim = Sim::new();
    let c = sim.connect_v5("a", |c| c.keep_alive = 0);
    let d = sim.connect_v311("b", |c| c.keep_alive = 0);
    sim.advance(secs(7 * 24 * 3600));
    assert!(!c.is_closed() && !d.is_closed());
    c.ping();
    d.ping();
}

#[test]
fn server_keep_alive_overrides_a_longer_client_value() {
    // [MQTT-3.2.2-21]: the client must use the Server Keep Alive from CONNACK; the broker then
    // enforces that value (1.5 x 5 s = 7.5 s).
    let sim = Sim::with_config(BrokerConfig {
        max_keep_alive: Some(5),
        ..BrokerConfig::default()
    });
    let c = sim.connect_v5("a", |c| c.keep_alive = 10);
    assert_eq!(c.connack().properties.server_keep_alive, Some(5));
    sim.advance(millis(7_400));
    assert!(!c.is_closed());
    sim.advance(millis(200));
    c.expect_disconnect(ReasonCode::KeepAliveTimeout);
}

#[test]
fn server_keep_alive_is_imposed_on_a_client_asking_for_0() {
    // BrokerConfig::max_keep_alive: imposed when a client asks for 0.
    let sim = Sim::with_config(BrokerConfig {
        max_keep_alive: Some(5),
        ..BrokerConfig::default()
    });
    let c = sim.connect_v5("a", |c| c.keep_alive = 0);
    assert_eq!(c.connack().properties.server_keep_alive, Some(5));
    sim.advance(millis(7_600));
    c.expect_disconnect(ReasonCode::KeepAliveTimeout);
}

#[test]
fn a_shorter_client_keep_alive_is_kept_under_a_server_maximum() {
    // §3.2.2.3.14: without Server Keep Alive (or with the same value) the client's value holds.
    let sim = Sim::with_config(BrokerConfig {
        max_keep_alive: Some(60),
        ..BrokerConfig::default()
    });
    let c = sim.connect_v5("a", |c| c.keep_alive = 4);
    assert!(matches!(
        c.connack().properties.server_keep_alive,
        None | Some(4)
    ));
    sim.advance(millis(5_900));
    assert!(!c.is_closed());
    sim.advance(millis(200));
    c.expect_disconnect(ReasonCode::KeepAliveTimeout);
}
