//! End to end, `$SYS/broker/...` statistics with `limits.sys_interval_secs = 1` in the default
//! tenant, read by `rumqttc` over real TCP: the figures arrive on the interval, follow the
//! traffic, are replayed retained to a late subscriber, and never reach a `#` subscriber.

mod common;

use common::Broker;
use common::v4::{Client, text, topic};
use rumqttc::QoS;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Reads `$SYS` figures on `sub` until `done` holds for the latest values, or panics after
/// a few intervals.
async fn figures_until(
    sub: &mut Client,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut latest = BTreeMap::new();
    while !done(&latest) {
        assert!(
            Instant::now() < deadline,
            "the figures never got there: {latest:?}"
        );
        let p = sub.recv().await;
        assert!(topic(&p).starts_with("$SYS/broker/"), "unexpected {p:?}");
        latest.insert(topic(&p), text(&p));
    }
    latest
}

fn is(f: &BTreeMap<String, String>, name: &str, value: &str) -> bool {
    f.get(&format!("$SYS/broker/{name}"))
        .is_some_and(|v| v == value)
}

#[tokio::test]
async fn sys_figures_follow_the_traffic_of_the_default_tenant() {
    let broker = Broker::with_config("[limits]\nsys_interval_secs = 1\n");
    let mut sub = Client::connect_id(&broker, "sys-sub").await;
    let mut all = Client::connect_id(&broker, "sys-all").await;
    let mut publisher = Client::connect_id(&broker, "sys-pub").await;
    sub.subscribe_ok("$SYS/#", QoS::AtMostOnce).await;
    all.subscribe_ok("#", QoS::AtMostOnce).await;

    for i in 0..3 {
        publisher
            .publish("work/t", QoS::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }
    for i in 0..3 {
        assert_eq!(text(&all.recv().await), format!("{i}"));
    }
    // A client may not publish over the server's figures (acknowledged, not routed).
    publisher
        .publish(
            "$SYS/broker/clients/connected",
            QoS::AtLeastOnce,
            false,
            b"99",
        )
        .await;

    let f = figures_until(&mut sub, |f| {
        is(f, "messages/received", "3") && is(f, "clients/connected", "3")
    })
    .await;
    assert_eq!(f["$SYS/broker/clients/total"], "3");
    assert_eq!(f["$SYS/broker/subscriptions/count"], "2");
    assert!(f["$SYS/broker/uptime"].ends_with(" seconds"));
    assert!(f["$SYS/broker/version"].starts_with("tidegate version "));
    assert!(!f.values().any(|v| v == "99"));

    // One more round: the uptime moves on; `#` saw none of it.
    let before = f["$SYS/broker/uptime"].clone();
    figures_until(&mut sub, |f| {
        f.get("$SYS/broker/uptime").is_some_and(|u| *u != before)
    })
    .await;
    all.expect_no_publish().await;

    // A late subscriber gets the latest values at once, retained.
    let mut late = Client::connect_id(&broker, "sys-late").await;
    late.subscribe_ok("$SYS/broker/messages/received", QoS::AtMostOnce)
        .await;
    let replay = late.recv().await;
    assert!(replay.retain);
    assert_eq!(text(&replay), "3");
}
