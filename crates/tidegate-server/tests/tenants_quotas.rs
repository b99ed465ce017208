//! Tenant quotas and ACLs over real sockets (issue 7), and a tenant changed live: every quota
//! trips with the documented behaviour — `max_connections` CONNACK 0x97 (3.1.1: code 3),
//! `max_subscriptions_per_client` SUBACK 0x97 (3.1.1: 0x80), `max_inbound_messages_per_sec`
//! drops (MQTT 5 QoS 0; 3.1.1 QoS 1 acknowledged and dropped), `max_retained_messages` PUBACK
//! 0x97 with the message routed but not stored — ACL denials give PUBACK 0x87 (3.1.1:
//! acknowledged, not delivered) and SUBACK 0x87 (3.1.1: 0x80), and the `tidegate_tenant_*`
//! counters of `/metrics` match what the clients saw.

mod common;

use common::http::{ADMIN_TOKEN, Gate, config};
use common::raw::{self, ConnectOpts, Raw, Version, kind};
use common::tenants::{hash, metrics, sample, tenant_toml, v4_login, v5_login};
use common::v5::{Client, filter, text, topic};
use reqwest::{Method, StatusCode};
use rumqttc::v5::ConnectionError;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, PubAckReason, SubscribeReasonCode,
};
use serde_json::json;
use std::time::Duration;

/// How many QoS 1 PUBLISH a rate test sends at once (the rate is 5 per second).
const BURST: u16 = 10;

/// Tenant `small` (one connection at a time) and tenant `q` (anonymous clients on its own
/// listener; two subscriptions per client, five messages per second per client, one retained
/// message; publishing under `forbidden/` and subscribing under `secret/` denied).
async fn quota_gate() -> Gate {
    let q = "allow_anonymous = true\n\
             [tenants.quotas]\nmax_subscriptions_per_client = 2\n\
             max_inbound_messages_per_sec = 5\nmax_retained_messages = 1\n\
             [[tenants.acl]]\naction = \"publish\"\nfilter = \"forbidden/#\"\nallow = false\n\
             [[tenants.acl]]\naction = \"subscribe\"\nfilter = \"secret/#\"\nallow = false\n\
             [[tenants.acl]]\naction = \"all\"\nfilter = \"#\"\nallow = true\n";
    let toml = format!(
        "{}\n[[listeners]]\nkind = \"tcp\"\nname = \"q-open\"\nbind = \"127.0.0.1:0\"\n\
         tenant = \"q\"\n{}{}",
        config(""),
        tenant_toml("small", "[tenants.quotas]\nmax_connections = 1\n"),
        tenant_toml("q", q),
    );
    Gate::from_toml(&toml).await
}

/// A tenant counter of `/metrics` (`labels` after `tenant="..."`, e.g. `,quota="sessions"`).
async fn tenant_metric(gate: &Gate, name: &str, tenant: &str, labels: &str) -> u64 {
    let text = metrics(gate).await;
    sample(&text, name, &format!("tenant=\"{tenant}\"{labels}"))
        .unwrap_or_else(|| panic!("no {name} for {tenant}{labels} in\n{text}"))
}

async fn refusals(gate: &Gate, tenant: &str, quota: &str) -> u64 {
    let labels = format!(",quota=\"{quota}\"");
    tenant_metric(
        gate,
        "tidegate_tenant_quota_refusals_total",
        tenant,
        &labels,
    )
    .await
}

async fn denied(gate: &Gate, tenant: &str, action: &str) -> u64 {
    let labels = format!(",action=\"{action}\"");
    tenant_metric(gate, "tidegate_tenant_denied_total", tenant, &labels).await
}

/// `BURST` PUBLISH at `qos` to `topic` written at once by a raw client of `version`; for QoS 1
/// the reason code of each PUBACK, in order (3.1.1 PUBACKs carry none: 0).
async fn burst(raw: &mut Raw, version: Version, qos: u8, topic: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for pid in 1..=BURST {
        let packet = raw::publish(version, qos, false, false, topic.as_bytes(), pid, b"x");
        bytes.extend(packet);
    }
    raw.send(&bytes).await;
    let mut reasons = Vec::new();
    if qos == 0 {
        return reasons;
    }
    for pid in 1..=BURST {
        let ack = raw.expect(kind::PUBACK).await;
        assert_eq!(ack.pid(), pid);
        reasons.push(ack.ack_reason());
    }
    reasons
}

/// Every PUBLISH `c` receives until none comes for a moment.
async fn drain(c: &mut Client) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(p) = tokio::time::timeout(Duration::from_millis(400), c.recv()).await {
        got.push(format!("{}={}", topic(&p), text(&p)));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_subscription_quotas_refuse_with_0x97_and_are_counted() {
    let gate = quota_gate().await;
    let _first = Client::connect(v5_login(gate.mqtt, "one", "small")).await;
    match Client::try_connect(v5_login(gate.mqtt, "two", "small")).await {
        Err(ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::QuotaExceeded)
        }
        Err(other) => panic!("expected CONNACK 0x97, got {other:?}"),
        Ok(_) => panic!("a second connection of `small` was accepted"),
    }
    match common::v4::Client::try_connect(v4_login(gate.mqtt, "three", "small")).await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::ServiceUnavailable)
        }
        Err(other) => panic!("expected CONNACK code 3, got {other:?}"),
        Ok(_) => panic!("a second connection of `small` was accepted"),
    }
    assert_eq!(refusals(&gate, "small", "connections").await, 2);
    assert_eq!(
        tenant_metric(&gate, "tidegate_tenant_connections", "small", "").await,
        1
    );

    let mut v5 = Client::connect(v5_login(gate.mqtt, "subs5", "q")).await;
    let codes = v5
        .subscribe_filters(
            vec![filter("a", QoS::AtLeastOnce), filter("b", QoS::AtLeastOnce)],
            None,
        )
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce); 2]);
    let codes = v5
        .subscribe_filters(vec![filter("c", QoS::AtLeastOnce)], None)
        .await;
    assert_eq!(codes, [SubscribeReasonCode::QuotaExceeded]);
    let mut v4 = common::v4::Client::connect(v4_login(gate.mqtt, "subs4", "q")).await;
    v4.subscribe_ok("a", rumqttc::QoS::AtLeastOnce).await;
    v4.subscribe_ok("b", rumqttc::QoS::AtLeastOnce).await;
    let codes = v4.subscribe("c", rumqttc::QoS::AtLeastOnce).await;
    assert_eq!(codes, [rumqttc::SubscribeReasonCode::Failure]);
    assert_eq!(refusals(&gate, "q", "subscriptions").await, 2);
    assert_eq!(refusals(&gate, "small", "subscriptions").await, 0);
    assert_eq!(
        tenant_metric(&gate, "tidegate_tenant_connections", "q", "").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_rate_drops_what_is_over_it_and_counts_it() {
    let gate = quota_gate().await;
    let q_listener = gate.server.addrs[1];
    let mut watch = Client::connect(v5_login(gate.mqtt, "watch", "q")).await;
    watch.subscribe_ok("rate/#", QoS::AtLeastOnce).await;

    let (mut fast5, _) =
        Raw::connect_addr(q_listener, &ConnectOpts::new(Version::V5, "fast5")).await;
    burst(&mut fast5, Version::V5, 0, "rate/v5").await;
    let (mut fast4, _) =
        Raw::connect_addr(q_listener, &ConnectOpts::new(Version::V311, "fast4")).await;
    let reasons = burst(&mut fast4, Version::V311, 1, "rate/v4").await;
    assert_eq!(reasons, [0; BURST as usize], "3.1.1 cannot say no");
    // MQTT 5 QoS 1: what is over the rate is refused in its PUBACK with 0x97 (Quota exceeded;
    // 0x96 is a DISCONNECT code a PUBACK may not carry).
    let (mut fast5q1, _) =
        Raw::connect_addr(q_listener, &ConnectOpts::new(Version::V5, "fast5q1")).await;
    let reasons = burst(&mut fast5q1, Version::V5, 1, "rate/v5q1").await;
    let refused = reasons.iter().filter(|&&r| r == 0x97).count();
    assert!(
        reasons.iter().all(|&r| r == 0x00 || r == 0x97) && refused > 0,
        "{reasons:02x?}"
    );

    let got = drain(&mut watch).await;
    let from5 = got.iter().filter(|m| m.starts_with("rate/v5=")).count();
    let from4 = got.iter().filter(|m| m.starts_with("rate/v4=")).count();
    let from5q1 = got.iter().filter(|m| m.starts_with("rate/v5q1=")).count();
    assert_eq!(
        from5q1 + refused,
        usize::from(BURST),
        "accepted ones are routed"
    );
    // Each client's bucket holds one second's worth (5), refilled at 5 per second.
    for (who, n) in [("v5 QoS 0", from5), ("3.1.1 QoS 1", from4)] {
        assert!(
            (5..usize::from(BURST)).contains(&n),
            "{who}: {n} of {BURST} routed"
        );
    }
    let dropped = 3 * usize::from(BURST) - from5 - from4 - from5q1;
    assert_eq!(
        refusals(&gate, "q", "client_rate").await,
        u64::try_from(dropped).unwrap()
    );
    assert_eq!(refusals(&gate, "q", "tenant_rate").await, 0);
    let received = tenant_metric(&gate, "tidegate_tenant_messages_received_total", "q", "").await;
    assert_eq!(received, u64::try_from(from4 + from5 + from5q1).unwrap());
    fast5q1.shutdown().await;
    fast5.shutdown().await;
    fast4.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retained_quota_and_the_acl_refuse_and_count() {
    let gate = quota_gate().await;
    let mut watch = Client::connect(v5_login(gate.mqtt, "watch", "q")).await;
    watch.subscribe_ok("r/#", QoS::AtLeastOnce).await;
    watch.subscribe_ok("forbidden/#", QoS::AtLeastOnce).await;
    let mut p5 = Client::connect(v5_login(gate.mqtt, "p5", "q")).await;

    assert_eq!(
        p5.publish_acked("r/1", true, b"kept").await,
        PubAckReason::Success
    );
    assert_eq!(
        p5.publish_acked("r/2", true, b"over").await,
        PubAckReason::QuotaExceeded
    );
    let mut got = drain(&mut watch).await;
    got.sort();
    assert_eq!(got, ["r/1=kept", "r/2=over"], "routed, only one retained");
    let mut late = Client::connect(v5_login(gate.mqtt, "late", "q")).await;
    late.subscribe_ok("r/#", QoS::AtLeastOnce).await;
    assert_eq!(drain(&mut late).await, ["r/1=kept"]);
    assert_eq!(refusals(&gate, "q", "retained_messages").await, 1);
    let retained = tenant_metric(&gate, "tidegate_tenant_retained_messages", "q", "").await;
    assert_eq!(retained, 1);
    assert_eq!(
        tenant_metric(&gate, "tidegate_tenant_retained_bytes", "q", "").await,
        4
    );

    assert_eq!(
        p5.publish_acked("forbidden/x", false, b"no").await,
        PubAckReason::NotAuthorized
    );
    let mut p4 = common::v4::Client::connect(v4_login(gate.mqtt, "p4", "q")).await;
    // Acknowledged (3.1.1 has no refusal) and dropped.
    p4.publish("forbidden/y", rumqttc::QoS::AtLeastOnce, false, b"no")
        .await;
    watch.expect_no_publish().await;
    let codes = late
        .subscribe_filters(vec![filter("secret/#", QoS::AtLeastOnce)], None)
        .await;
    assert_eq!(codes, [SubscribeReasonCode::NotAuthorized]);
    let codes = p4.subscribe("secret/x", rumqttc::QoS::AtMostOnce).await;
    assert_eq!(codes, [rumqttc::SubscribeReasonCode::Failure]);
    assert_eq!(denied(&gate, "q", "publish").await, 2);
    assert_eq!(denied(&gate, "q", "subscribe").await, 2);
}

async fn admin(
    gate: &Gate,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    let reply = gate.send(method, path, Some(ADMIN_TOKEN), body).await;
    assert!(
        reply.status.is_success(),
        "{}: {}",
        reply.status,
        reply.text()
    );
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_rule_added_live_applies_to_every_client_and_deletion_disconnects_with_0x87() {
    let gate = quota_gate().await;
    let live = |rules: serde_json::Value| {
        json!({
            "id": "live",
            "users": [{"username": "dev", "password_hash": hash()}],
            "acl": rules,
        })
    };
    let a_only = json!([{"action": "all", "filter": "a/#", "allow": true}]);
    admin(
        &gate,
        Method::POST,
        "/v1/admin/tenants",
        Some(&live(a_only)),
    )
    .await;
    let mut before = Client::connect(v5_login(gate.mqtt, "before", "live")).await;
    assert_eq!(
        before.publish_acked("a/1", false, b"x").await,
        PubAckReason::NoMatchingSubscribers
    );
    assert_eq!(
        before.publish_acked("b/1", false, b"x").await,
        PubAckReason::NotAuthorized
    );

    let a_and_b = json!([
        {"action": "all", "filter": "a/#", "allow": true},
        {"action": "all", "filter": "b/#", "allow": true},
    ]);
    admin(
        &gate,
        Method::PUT,
        "/v1/admin/tenants/live",
        Some(&live(a_and_b)),
    )
    .await;
    let mut after = Client::connect(v5_login(gate.mqtt, "after", "live")).await;
    after.subscribe_ok("b/#", QoS::AtLeastOnce).await;
    assert_eq!(
        after.publish_acked("b/1", false, b"new").await,
        PubAckReason::Success
    );
    assert_eq!(text(&after.recv().await), "new");
    // A client connected before the change gets the new rules at once too.
    assert_eq!(
        before.publish_acked("b/2", false, b"too").await,
        PubAckReason::Success
    );
    assert_eq!(text(&after.recv().await), "too");
    assert_eq!(denied(&gate, "live", "publish").await, 1);

    let deleted = admin(&gate, Method::DELETE, "/v1/admin/tenants/live", None).await;
    assert_eq!(deleted["disconnected"], 2);
    assert_eq!(
        before.server_disconnect().await,
        DisconnectReasonCode::NotAuthorized
    );
    assert_eq!(
        after.server_disconnect().await,
        DisconnectReasonCode::NotAuthorized
    );
    assert_eq!(
        tenant_metric(&gate, "tidegate_tenant_connections", "live", "").await,
        0
    );
    let sessions = admin(&gate, Method::GET, "/v1/admin/sessions?tenant=live", None).await;
    assert_eq!(sessions["total"], 0);
    let r = gate.get("/v1/admin/tenants/live", Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
