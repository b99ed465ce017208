//! `$SYS/broker/...` statistics per tenant (issue 7: "`$SYS`-style statistics a client can read
//! are its own tenant's"), on the simulated clock: each tenant's `$SYS/#` subscribers get that
//! tenant's figures after the interval and nothing of another's, `#` never matches them, the
//! values follow the traffic, an interval of 0 turns them off, a late subscriber gets them
//! replayed, and nothing of them reaches the store.

mod harness;

use harness::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use tidegate_core::store::Store;
use tidegate_core::{Authorized, BrokerConfig, TenantLimits};
use tidegate_protocol::{Connect, ProtocolVersion, Publish, QoS, ReasonCode};

/// Authorization into `tenant`, every topic allowed, no limit.
fn tenant(id: &str) -> Authorized {
    Authorized {
        tenant: Arc::from(id),
        ..Authorized::default_tenant()
    }
}

fn v5(client_id: &str) -> Connect {
    connect_packet(ProtocolVersion::V5, client_id)
}

fn v5_persistent(client_id: &str) -> Connect {
    let mut c = v5(client_id);
    persistent(&mut c);
    c
}

/// Topic → payload of `publishes`, each topic at most once (asserted).
fn figures(publishes: &[Publish]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in publishes {
        assert!(
            p.topic.starts_with("$SYS/broker/"),
            "not a $SYS figure: {p:?}"
        );
        assert_eq!(p.qos, QoS::AtMostOnce);
        let old = out.insert(p.topic.to_string(), text(p));
        assert!(old.is_none(), "{} published twice in one round", p.topic);
    }
    out
}

/// What `c` received, as figures.
fn received(c: &Client) -> BTreeMap<String, String> {
    figures(&c.receive())
}

fn value<'a>(f: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    f.get(&format!("$SYS/broker/{name}"))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no $SYS/broker/{name} in {f:?}"))
}

#[test]
fn each_tenant_reads_its_own_figures_after_the_interval() {
    let sim = Sim::new();
    let a = sim.connect_as(v5("watch"), tenant("a"));
    let b = sim.connect_as(v5("watch"), tenant("b"));
    assert_eq!(
        a.subscribe("$SYS/#", QoS::AtLeastOnce),
        ReasonCode::GrantedQoS1
    );
    assert_eq!(b.subscribe("$SYS/#", QoS::AtMostOnce), ReasonCode::Success);
    // Tenant a: two more clients, one with a subscription; b: none.
    let a2 = sim.connect_as(v5("a2"), tenant("a"));
    let _a3 = sim.connect_as(v5("a3"), tenant("a"));
    a2.subscribe("t/#", QoS::AtMostOnce);
    a2.publish("t/1", "x", QoS::AtMostOnce);
    assert_eq!(a2.receive_payloads(), vec!["x"]);

    sim.advance(secs(9));
    assert!(a.receive().is_empty(), "nothing before the interval");
    sim.advance(secs(1));
    let fa = received(&a);
    let fb = received(&b);
    assert_eq!(fa.len(), 10);
    assert_eq!(fb.len(), 10);
    assert!(value(&fa, "version").starts_with("tidegate version "));
    assert_eq!(value(&fa, "uptime"), "10 seconds");
    assert_eq!(value(&fa, "clients/connected"), "3");
    assert_eq!(value(&fa, "clients/total"), "3");
    assert_eq!(value(&fa, "clients/disconnected"), "0");
    assert_eq!(value(&fa, "subscriptions/count"), "2");
    assert_eq!(value(&fa, "messages/received"), "1");
    assert_eq!(value(&fa, "messages/sent"), "1");
    assert_eq!(value(&fa, "retained messages/count"), "0");
    assert_eq!(value(&fa, "quota/refused"), "0");
    assert_eq!(value(&fb, "clients/connected"), "1");
    assert_eq!(value(&fb, "clients/total"), "1");
    assert_eq!(value(&fb, "subscriptions/count"), "1");
    assert_eq!(value(&fb, "messages/received"), "0");
    assert_eq!(value(&fb, "messages/sent"), "0");
    assert!(a2.receive().is_empty(), "`t/#` matches no $SYS topic");

    // A late subscriber gets the latest values replayed, flagged retained.
    let late = sim.connect_as(v5("late"), tenant("b"));
    late.subscribe("$SYS/broker/clients/+", QoS::AtMostOnce);
    let replay = late.receive();
    assert!(replay.iter().all(|p| p.retain));
    assert_eq!(
        figures(&replay),
        BTreeMap::from([
            ("$SYS/broker/clients/connected".into(), "1".into()),
            ("$SYS/broker/clients/disconnected".into(), "0".into()),
            ("$SYS/broker/clients/total".into(), "1".into()),
        ])
    );
}

#[test]
fn wildcard_subscribers_never_see_sys_topics() {
    let sim = Sim::new();
    let all = sim.connect_v5("all", |_| {});
    all.subscribe("#", QoS::AtMostOnce);
    all.subscribe("+/broker/#", QoS::AtMostOnce);
    let other = sim.connect_as(v5("all"), tenant("a"));
    other.subscribe("#", QoS::AtMostOnce);
    sim.advance(secs(30));
    assert!(all.receive().is_empty());
    assert!(other.receive().is_empty());
    // Nor the replay of the values published meanwhile.
    let late = sim.connect_v5("late", |_| {});
    late.subscribe("#", QoS::AtMostOnce);
    assert!(late.receive().is_empty());
    late.subscribe("$SYS/broker/uptime", QoS::AtMostOnce);
    assert_eq!(late.receive_payloads(), vec!["30 seconds"]);
}

#[test]
fn values_follow_the_traffic_and_only_changes_go_out() {
    let sim = Sim::new();
    let watch = sim.connect_as(v5("watch"), tenant("a"));
    watch.subscribe("$SYS/#", QoS::AtMostOnce);
    sim.advance(secs(10));
    let first = received(&watch);
    assert_eq!(value(&first, "clients/connected"), "1");

    // Nothing happened but the clock and the ten figures sent to `watch`.
    sim.advance(secs(10));
    assert_eq!(
        received(&watch),
        BTreeMap::from([
            ("$SYS/broker/messages/sent".into(), "10".into()),
            ("$SYS/broker/uptime".into(), "20 seconds".into()),
        ])
    );

    // Traffic: a persistent client subscribes, publishes (one retained) and leaves; a
    // connection over the tenant's quota is refused.
    let p = sim.connect_as(v5_persistent("p"), tenant("a"));
    p.subscribe("x/#", QoS::AtMostOnce);
    p.publish("x/1", "a", QoS::AtMostOnce);
    p.publish_with("x/2", "b", QoS::AtMostOnce, |m| m.retain = true);
    p.receive();
    p.disconnect(ReasonCode::Success);
    let full = Authorized {
        limits: Arc::new(TenantLimits {
            max_connections: Some(1),
            ..TenantLimits::default()
        }),
        ..tenant("a")
    };
    let refused = sim.connect_as(v5("refused"), full);
    assert_eq!(refused.connack().reason_code, ReasonCode::QuotaExceeded);
    // A client may not publish over the server's figures.
    watch.publish("$SYS/broker/clients/total", "99", QoS::AtMostOnce);

    sim.advance(secs(10));
    let f = received(&watch);
    assert_eq!(value(&f, "uptime"), "30 seconds");
    assert_eq!(value(&f, "clients/disconnected"), "1");
    assert_eq!(value(&f, "clients/total"), "2");
    assert_eq!(value(&f, "subscriptions/count"), "2");
    assert_eq!(value(&f, "retained messages/count"), "1");
    assert_eq!(value(&f, "messages/received"), "2");
    // 10 + 2 figures to `watch`, 2 messages to `p`.
    assert_eq!(value(&f, "messages/sent"), "14");
    assert_eq!(value(&f, "quota/refused"), "1");
    assert!(
        !f.contains_key("$SYS/broker/clients/connected"),
        "unchanged"
    );
    assert!(!f.contains_key("$SYS/broker/version"), "sent once");
}

#[test]
fn an_interval_of_zero_publishes_nothing() {
    let sim = Sim::with_config(BrokerConfig {
        sys_interval: secs(0),
        ..BrokerConfig::default()
    });
    let watch = sim.connect_v5("watch", |_| {});
    watch.subscribe("$SYS/#", QoS::AtMostOnce);
    sim.advance(secs(3600));
    assert!(watch.receive().is_empty());
    let late = sim.connect_v5("late", |_| {});
    late.subscribe("$SYS/#", QoS::AtMostOnce);
    assert!(late.receive().is_empty());
    assert_eq!(sim.with_broker(|b, _| b.poll_timeout()), None);
}

#[test]
fn sys_figures_never_reach_the_store_nor_an_offline_queue() {
    let sim = Sim::durable(BrokerConfig::default());
    // A persistent `$SYS/#` subscriber, online, and another one offline.
    let online = sim.connect_as(v5_persistent("online"), tenant("a"));
    online.subscribe("$SYS/#", QoS::AtLeastOnce);
    let offline = sim.connect_as(v5_persistent("offline"), tenant("a"));
    offline.subscribe("$SYS/#", QoS::AtLeastOnce);
    offline.disconnect(ReasonCode::Success);
    online.receive();

    // While commits are held, a round of figures must not give the store anything to write.
    sim.hold_commits(true);
    sim.advance(secs(10));
    assert_eq!(received(&online).len(), 10);
    assert!(
        !sim.store_batches_pending(),
        "a $SYS round wrote to the store"
    );
    sim.hold_commits(false);

    let snapshot = sim.store().load().expect("memory store load");
    assert!(snapshot.retained.is_empty());
    assert!(snapshot.sessions.iter().all(|s| s.queue.is_empty()));

    // The offline session gets nothing queued; it reads current values within an interval.
    let back = sim.connect_as(
        {
            let mut c = v5("offline");
            resume(&mut c);
            c
        },
        tenant("a"),
    );
    assert!(back.receive().is_empty());
    sim.advance(secs(10));
    assert_eq!(value(&received(&back), "clients/connected"), "2");

    // After a restart the figures come back from the live state, not from the store.
    sim.crash_and_restart(secs(5));
    let again = sim.connect_as(v5("again"), tenant("a"));
    again.subscribe("$SYS/#", QoS::AtMostOnce);
    assert!(
        again.receive().is_empty(),
        "nothing kept across the restart"
    );
    sim.advance(secs(10));
    let f = received(&again);
    assert_eq!(value(&f, "uptime"), "10 seconds");
    assert_eq!(value(&f, "clients/total"), "3");
}
