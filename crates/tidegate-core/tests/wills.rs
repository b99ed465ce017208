//! Will message scenarios: when a will is published or discarded, Will Delay Interval, its
//! interplay with session expiry and takeover, will retain and will properties.
//!
//! Rule ids are MQTT 5.0 unless marked "(3.1.1)".

mod harness;

use harness::*;
use tidegate_protocol::{Connect, ConnectProperties, QoS, ReasonCode};

/// A watcher subscribed to `will/#` at QoS 1.
fn watcher(sim: &Sim) -> Client {
    let w = sim.connect_v5("watcher", |_| {});
    assert_eq!(
        w.subscribe("will/#", QoS::AtLeastOnce),
        ReasonCode::GrantedQoS1
    );
    w
}

/// Customizer: a will on `will/dev` saying "gone", with `delay` seconds of Will Delay and
/// `expiry` seconds of Session Expiry.
fn with_will(delay: Option<u32>, expiry: Option<u32>) -> impl FnOnce(&mut Connect) {
    move |c| {
        let mut w = will("will/dev", "gone", QoS::AtLeastOnce);
        w.properties.will_delay_interval = delay;
        c.will = Some(w);
        c.properties = ConnectProperties {
            session_expiry_interval: expiry,
            ..ConnectProperties::default()
        };
    }
}

#[test]
fn will_is_published_when_the_connection_drops() {
    // [MQTT-3.1.2-8]: published after the connection closes without DISCONNECT 0x00;
    // [MQTT-3.1.2-14] as a non-retained message; QoS as declared (min with the subscription).
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", with_will(None, None));
    w.assert_silent();
    dev.drop_connection();
    let got = w.receive();
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!(
        (p.topic.as_str(), text(p).as_str(), p.qos, p.retain),
        ("will/dev", "gone", QoS::AtLeastOnce, false)
    );
}

#[test]
fn will_is_published_once_only() {
    // [MQTT-3.1.2-10]: removed from the session state once published.
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", with_will(None, Some(300)));
    dev.drop_connection();
    assert_eq!(w.receive_payloads(), ["gone"]);
    let back = sim.connect_v5("dev", resume);
    back.drop_connection();
    sim.advance(secs(400));
    w.assert_silent();
}

#[test]
fn v311_will_is_published_when_the_connection_drops() {
    // (3.1.1) [MQTT-3.1.2-8].
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v311("dev", |c| {
        c.will = Some(will("will/dev", "gone", QoS::AtMostOnce))
    });
    dev.drop_connection();
    assert_eq!(w.receive_payloads(), ["gone"]);
}

#[test]
fn will_is_discarded_on_normal_disconnect() {
    // [MQTT-3.14.4-3], [MQTT-3.1.2-10]: DISCONNECT 0x00 deletes the will.
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", with_will(None, Some(300)));
    dev.disconnect(ReasonCode::Success);
    sim.advance(secs(400));
    w.assert_silent();
}

#[test]
fn v311_will_is_discarded_on_disconnect() {
    // (3.1.1) [MQTT-3.1.2-10], [MQTT-3.14.4-3].
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v311("dev", |c| {
        c.will = Some(will("will/dev", "gone", QoS::AtMostOnce))
    });
    dev.disconnect(ReasonCode::Success);
    w.assert_silent();
}

#[test]
fn will_is_published_on_disconnect_with_will_message() {
    // §3.14.2.1 0x04: the client disconnects but asks for its will to be published.
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", with_will(None, None));
    dev.disconnect(ReasonCode::DisconnectWithWillMessage);
    assert_eq!(w.receive_payloads(), ["gone"]);
}

#[test]
fn will_is_published_when_the_server_closes_on_a_protocol_error() {
    // §3.1.2.5: "the Server closes the Network Connection because of a protocol error".
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", with_will(None, None));
    dev.send(Packet::Connect(Box::new(connect_packet(
        tidegate_protocol::ProtocolVersion::V5,
        "dev",
    ))));
    dev.expect_disconnect(ReasonCode::ProtocolError);
    assert_eq!(w.receive_payloads(), ["gone"]);
}

#[test]
fn will_is_published_on_keep_alive_timeout() {
    // §3.1.2.5: "the Client fails to communicate within the Keep Alive time".
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", |c| {
        with_will(None, None)(c);
        c.keep_alive = 10;
    });
    sim.advance(secs(16));
    dev.expect_disconnect(ReasonCode::KeepAliveTimeout);
    assert_eq!(w.receive_payloads(), ["gone"]);
}

#[test]
fn will_with_retain_becomes_the_retained_message() {
    // [MQTT-3.1.2-15]: Will Retain 1 publishes the will as a retained message; a later
    // subscriber receives it with RETAIN=1 ([MQTT-3.3.1-9]).
    let sim = Sim::new();
    let dev = sim.connect_v5("dev", |c| {
        let mut w = will("will/dev", "gone", QoS::AtLeastOnce);
        w.retain = true;
        c.will = Some(w);
    });
    dev.drop_connection();
    let late = sim.connect_v5("late", |_| {});
    late.subscribe("will/dev", QoS::AtLeastOnce);
    let got = late.receive();
    assert_eq!(got.len(), 1);
    assert_eq!((text(&got[0]), got[0].retain), ("gone".into(), true));
}

#[test]
fn will_properties_are_forwarded_in_order() {
    // [MQTT-3.1.3-10] user property order kept; §3.1.3.2 content type, response topic,
    // correlation data and payload format are sent with the will.
    let sim = Sim::new();
    let w = watcher(&sim);
    let user = vec![
        (utf8("k"), utf8("2")),
        (utf8("a"), utf8("1")),
        (utf8("k"), utf8("1")),
    ];
    let dev = sim.connect_v5("dev", |c| {
        let mut wm = will("will/dev", "gone", QoS::AtMostOnce);
        wm.properties.user_properties = user.clone();
        wm.properties.content_type = Some(utf8("text/plain"));
        wm.properties.response_topic = Some(utf8("reply/dev"));
        wm.properties.correlation_data = Some("c-1".into());
        wm.properties.payload_format_indicator = Some(true);
        c.will = Some(wm);
    });
    dev.drop_connection();
    let p = w.expect_publish();
    assert_eq!(p.properties.user_properties, user);
    assert_eq!(p.properties.content_type, Some(utf8("text/plain")));
    assert_eq!(p.properties.response_topic, Some(utf8("reply/dev")));
    assert_eq!(p.properties.correlation_data.as_deref(), Some(&b"c-1"[..]));
    assert_eq!(p.properties.payload_format_indicator, Some(true));
}

#[test]
fn will_delay_postpones_the_will() {
    // [MQTT-3.1.3-9] / §3.1.3.2.2: published once the Will Delay Interval has passed.
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", with_will(Some(30), Some(300)));
    dev.drop_connection();
    sim.advance(millis(29_900));
    w.assert_silent();
    sim.advance(millis(200));
    assert_eq!(w.receive_payloads(), ["gone"]);
}

#[test]
fn reconnecting_within_the_will_delay_cancels_the_will() {
    // [MQTT-3.1.3-9]: a new network connection to the session before the delay passes means
    // the will MUST NOT be sent.
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", with_will(Some(30), Some(300)));
    dev.drop_connection();
    sim.advance(secs(10));
    let back = sim.connect_v5("dev", resume);
    assert!(back.connack().session_present);
    sim.advance(secs(60));
    w.assert_silent();
    // The new connection declared no will: dropping it publishes nothing.
    back.drop_connection();
    sim.advance(secs(60));
    w.assert_silent();
}

#[test]
fn will_is_published_at_session_end_when_that_comes_before_the_delay() {
    // §3.1.3.2.2: the will waits for the delay *or the end of the session*, whichever first.
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", with_will(Some(60), Some(10)));
    dev.drop_connection();
    sim.advance(millis(9_900));
    w.assert_silent();
    sim.advance(millis(200));
    assert_eq!(w.receive_payloads(), ["gone"]);
}

#[test]
fn delayed_will_of_a_session_without_expiry_is_published_at_once() {
    // §3.1.3.2.2: with Session Expiry 0 the session ends when the connection closes.
    let sim = Sim::new();
    let w = watcher(&sim);
    let dev = sim.connect_v5("dev", with_will(Some(30), None));
    dev.drop_connection();
    assert_eq!(w.receive_payloads(), ["gone"]);
}

#[test]
fn takeover_publishes_the_old_connections_will_without_delay() {
    // §3.1.4 step 1 and its non-normative comment: with Will Delay 0 the will is sent because
    // the old network connection is closed.
    let sim = Sim::new();
    let w = watcher(&sim);
    let old = sim.connect_v5("dev", with_will(None, Some(300)));
    let new = sim.connect_v5("dev", resume);
    old.expect_disconnect(ReasonCode::SessionTakenOver);
    assert!(new.connack().session_present);
    assert_eq!(w.receive_payloads(), ["gone"]);
}

#[test]
fn takeover_resuming_the_session_within_the_will_delay_cancels_the_will() {
    // [MQTT-3.1.3-9]: the new connection arrives before the Will Delay has passed.
    let sim = Sim::new();
    let w = watcher(&sim);
    let old = sim.connect_v5("dev", with_will(Some(30), Some(300)));
    let _new = sim.connect_v5("dev", resume);
    old.expect_disconnect(ReasonCode::SessionTakenOver);
    sim.advance(secs(60));
    w.assert_silent();
}

#[test]
fn takeover_with_clean_start_publishes_a_delayed_will_at_once() {
    // §3.1.4 non-normative comment: with Clean Start 1 the original session ends on the
    // takeover, so its will is sent.
    let sim = Sim::new();
    let w = watcher(&sim);
    let old = sim.connect_v5("dev", with_will(Some(30), Some(300)));
    let new = sim.connect_v5("dev", persistent);
    old.expect_disconnect(ReasonCode::SessionTakenOver);
    assert!(!new.connack().session_present);
    assert_eq!(w.receive_payloads(), ["gone"]);
}

#[test]
fn will_topic_must_be_a_valid_topic_name() {
    // §3.1.3.3: the Will Topic is a topic name, so no wildcards ([MQTT-3.3.2-2]); a CONNECT
    // carrying one is refused (CONNACK >= 0x80, then close) rather than accepted.
    let sim = Sim::new();
    let dev = sim.connect_v5("dev", |c| {
        c.will = Some(will("will/+", "gone", QoS::AtMostOnce));
    });
    if let Some(ack) = &dev.connack {
        assert!(
            !ack.reason_code.is_success(),
            "accepted a will on a wildcard topic"
        );
    }
    assert!(dev.is_closed());
}
