//! Tenants inside the broker (issue 7): isolation of topics, retained messages, shared groups
//! and client ids; ACL outcomes in MQTT 5 and 3.1.1 with `%u` / `%c`; every quota with its
//! documented reason code; credential expiry; tenant-wide admin commands; and a restore of two
//! tenants from the store. Clients enter a tenant the way the server puts them there:
//! `Broker::handle_connect` with an `Authorized` value ([`Sim::connect_as`]).

mod harness;

use harness::*;
use std::sync::Arc;
use tidegate_auth::{Acl, AclRule, Permission, RuleAction};
use tidegate_core::{ApiPublish, Authorized, BrokerConfig, ConnInfo, TenantLimits};
use tidegate_protocol::{Connect, Packet, ProtocolVersion, PublishProperties, QoS, ReasonCode};

/// Authorization into `tenant`, every topic allowed, no limit.
fn tenant(id: &str) -> Authorized {
    Authorized {
        tenant: Arc::from(id),
        ..Authorized::default_tenant()
    }
}

/// Authorization into `tenant` with `limits`.
fn limited(id: &str, limits: TenantLimits) -> Authorized {
    Authorized {
        limits: Arc::new(limits),
        ..tenant(id)
    }
}

fn v5(client_id: &str, customize: impl FnOnce(&mut Connect)) -> Connect {
    let mut c = connect_packet(ProtocolVersion::V5, client_id);
    customize(&mut c);
    c
}

fn v311(client_id: &str, customize: impl FnOnce(&mut Connect)) -> Connect {
    let mut c = connect_packet(ProtocolVersion::V311, client_id);
    customize(&mut c);
    c
}

fn nothing(_: &mut Connect) {}

/// Makes `limits` tenant `a`'s, as the admin API does for a changed tenant.
fn set_limits(sim: &Sim, limits: TenantLimits) {
    sim.with_broker(|b, now| b.set_tenant_limits(now, "a", Arc::new(limits)));
}

/// Sends a PUBLISH and returns the reason code of its PUBACK / PUBREC (`None` for QoS 0).
fn publish_code(
    c: &Client,
    topic: &str,
    payload: &str,
    qos: QoS,
    retain: bool,
) -> Option<ReasonCode> {
    let p = c.send_publish(topic, payload.to_owned(), qos, |p| p.retain = retain);
    let id = p.packet_id?;
    let ack = c.take_first(|p| match p {
        Packet::PubAck(r) | Packet::PubRec(r) => r.packet_id == id,
        _ => false,
    });
    match ack {
        Some(Packet::PubAck(r) | Packet::PubRec(r)) => Some(r.reason_code),
        other => panic!("expected PUBACK/PUBREC for {id:?}, got {other:?}"),
    }
}

// ----- isolation -----------------------------------------------------------------------------

#[test]
fn wildcard_subscribers_only_see_their_own_tenant() {
    let sim = Sim::new();
    let a = sim.connect_as(v5("sub", nothing), tenant("a"));
    let b = sim.connect_as(v5("sub", nothing), tenant("b"));
    let d = sim.connect_v5("sub", |_| {});
    for c in [&a, &b, &d] {
        assert_eq!(c.connack().reason_code, ReasonCode::Success);
        c.subscribe("#", QoS::AtMostOnce);
        c.subscribe("+/x", QoS::AtMostOnce);
        c.subscribe("$app/#", QoS::AtMostOnce);
    }
    let pa = sim.connect_as(v5("pub", nothing), tenant("a"));
    pa.publish("t/x", "from-a", QoS::AtMostOnce);
    pa.publish("$app/stats", "a-stats", QoS::AtMostOnce);
    assert_eq!(a.receive_payloads(), vec!["from-a", "a-stats"]);
    b.assert_silent();
    d.assert_silent();

    let pd = sim.connect_v5("pub", |_| {});
    pd.publish("t/x", "from-default", QoS::AtMostOnce);
    assert_eq!(d.receive_payloads(), vec!["from-default"]);
    a.assert_silent();
    b.assert_silent();
}

#[test]
fn shared_groups_of_the_same_name_are_separate_per_tenant() {
    let sim = Sim::new();
    let a = sim.connect_as(v5("worker", nothing), tenant("a"));
    let b = sim.connect_as(v5("worker", nothing), tenant("b"));
    assert_eq!(
        a.subscribe("$share/g/jobs", QoS::AtMostOnce),
        ReasonCode::Success
    );
    assert_eq!(
        b.subscribe("$share/g/jobs", QoS::AtMostOnce),
        ReasonCode::Success
    );
    let pa = sim.connect_as(v5("pub", nothing), tenant("a"));
    for n in ["1", "2", "3"] {
        pa.publish("jobs", n, QoS::AtMostOnce);
    }
    // The only member of a's group gets every job; b's group gets none.
    assert_eq!(a.receive_payloads(), vec!["1", "2", "3"]);
    b.assert_silent();
}

#[test]
fn retained_messages_are_per_tenant() {
    let sim = Sim::new();
    let pa = sim.connect_as(v5("pub", nothing), tenant("a"));
    let pb = sim.connect_as(v5("pub", nothing), tenant("b"));
    pa.publish_with("r", "a-value", QoS::AtLeastOnce, |p| p.retain = true);
    pb.publish_with("r", "b-value", QoS::AtLeastOnce, |p| p.retain = true);
    pa.publish_with("$app/a-only", "a-dollar", QoS::AtMostOnce, |p| {
        p.retain = true
    });

    let sa = sim.connect_as(v5("s", nothing), tenant("a"));
    sa.subscribe("#", QoS::AtMostOnce);
    assert_eq!(sa.receive_payloads(), vec!["a-value"]);
    sa.subscribe("$app/#", QoS::AtMostOnce);
    assert_eq!(sa.receive_payloads(), vec!["a-dollar"]);
    let sb = sim.connect_as(v5("s", nothing), tenant("b"));
    sb.subscribe("#", QoS::AtMostOnce);
    sb.subscribe("$app/#", QoS::AtMostOnce);
    assert_eq!(sb.receive_payloads(), vec!["b-value"]);
    let sd = sim.connect_v5("s", |_| {});
    sd.subscribe("#", QoS::AtMostOnce);
    sd.assert_silent();

    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].retained, 2);
    assert_eq!(
        stats["a"].retained_bytes,
        ("a-value".len() + "a-dollar".len()) as u64
    );
    assert_eq!(stats["b"].retained, 1);
    assert_eq!(stats["default"].retained, 0);
    let found = sim.with_broker(|b, now| b.retained_matching_in(now, "b", "#"));
    assert_eq!(found.len(), 1);
    assert!(sim.with_broker(|b, now| b.retained_matching(now, "#").is_empty()));
}

#[test]
fn the_same_client_id_is_one_session_per_tenant_and_takeover_stays_inside_it() {
    let sim = Sim::new();
    let a1 = sim.connect_as(v5("dev", nothing), tenant("a"));
    let b1 = sim.connect_as(v5("dev", nothing), tenant("b"));
    let d1 = sim.connect_v5("dev", |_| {});
    assert!(!a1.is_closed() && !b1.is_closed() && !d1.is_closed());
    b1.subscribe("t", QoS::AtMostOnce);

    let a2 = sim.connect_as(v5("dev", nothing), tenant("a"));
    a1.expect_disconnect(ReasonCode::SessionTakenOver);
    assert!(a1.is_closed());
    assert!(!a2.is_closed() && !b1.is_closed() && !d1.is_closed());

    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!((stats["a"].sessions, stats["a"].connections), (1, 1));
    assert_eq!((stats["b"].sessions, stats["b"].subscriptions), (1, 1));
    assert_eq!(stats["default"].sessions, 1);
    assert_eq!(sim.with_broker(|b, _| b.stats().sessions), 3);

    let conn = sim.with_broker(|b, _| b.conn_of_in("b", "dev"));
    assert_eq!(conn, Some(b1.conn));
    assert_eq!(sim.with_broker(|b, _| b.conn_of("dev")), Some(d1.conn));
    let subs = sim.with_broker(|b, _| b.subscription_views_in("b", "dev"));
    assert_eq!(subs.map(|v| v.len()), Some(1));
    assert_eq!(
        sim.with_broker(|b, _| b.subscription_views("dev"))
            .map(|v| v.len()),
        Some(0)
    );
    let view = sim.with_broker(|b, _| b.client_view(b1.conn)).unwrap();
    assert_eq!(&*view.tenant, "b");
    let mut tenants: Vec<String> =
        sim.with_broker(|b, _| b.session_views().map(|s| s.tenant.to_string()).collect());
    tenants.sort();
    assert_eq!(tenants, ["a", "b", "default"]);
}

#[test]
fn api_publications_go_to_the_default_tenant_unless_told_otherwise() {
    let sim = Sim::new();
    let a = sim.connect_as(v5("s", nothing), tenant("a"));
    let d = sim.connect_v5("s", |_| {});
    a.subscribe("news", QoS::AtMostOnce);
    d.subscribe("news", QoS::AtMostOnce);
    let msg = |payload: &'static str| ApiPublish {
        topic: utf8("news"),
        payload: payload.into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: PublishProperties::default(),
    };
    let accepted = sim.with_broker(|b, now| b.publish_api(now, msg("to-default")));
    assert_eq!(accepted.map(|a| a.matched), Ok(1));
    let accepted = sim.with_broker(|b, now| b.publish_api_in(now, "a", msg("to-a")));
    assert_eq!(accepted.map(|a| a.matched), Ok(1));
    assert_eq!(d.receive_payloads(), vec!["to-default"]);
    assert_eq!(a.receive_payloads(), vec!["to-a"]);
}

// ----- ACL -----------------------------------------------------------------------------------

/// `devices/%u/#` for everything, `commands/%c/+` for subscriptions, deny otherwise.
fn acl_user(id: &str, username: &str) -> Authorized {
    let rules = vec![
        AclRule::new(RuleAction::All, "devices/%u/#", true).unwrap(),
        AclRule::new(RuleAction::Subscribe, "commands/%c/+", true).unwrap(),
    ];
    Authorized {
        username: Some(Arc::from(username)),
        acl: Arc::new(Acl::new(rules, Permission::Deny)),
        ..tenant(id)
    }
}

#[test]
fn acl_decides_publications_in_v5_with_0x87_and_counts_them() {
    let sim = Sim::new();
    let watcher = sim.connect_as(v5("w", nothing), tenant("a"));
    watcher.subscribe("#", QoS::AtLeastOnce);
    let c = sim.connect_as(v5("c1", nothing), acl_user("a", "ann"));
    assert_eq!(
        publish_code(&c, "devices/ann/t", "ok", QoS::AtLeastOnce, false),
        Some(ReasonCode::Success)
    );
    assert_eq!(
        publish_code(&c, "devices/bob/t", "no", QoS::AtLeastOnce, false),
        Some(ReasonCode::NotAuthorized)
    );
    assert_eq!(
        publish_code(&c, "devices/bob/t", "no", QoS::ExactlyOnce, false),
        Some(ReasonCode::NotAuthorized)
    );
    assert_eq!(
        publish_code(&c, "elsewhere", "no", QoS::AtMostOnce, false),
        None
    );
    c.assert_silent();
    assert_eq!(watcher.receive_payloads(), vec!["ok"]);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].denied_publish, 3);
}

#[test]
fn acl_denied_publications_in_v311_are_acknowledged_but_dropped() {
    let sim = Sim::new();
    let watcher = sim.connect_as(v5("w", nothing), tenant("a"));
    watcher.subscribe("#", QoS::AtLeastOnce);
    let c = sim.connect_as(v311("c1", nothing), acl_user("a", "ann"));
    assert_eq!(
        publish_code(&c, "devices/bob/t", "no", QoS::AtLeastOnce, false),
        Some(ReasonCode::Success)
    );
    assert_eq!(
        publish_code(&c, "devices/ann/t", "yes", QoS::AtLeastOnce, false),
        Some(ReasonCode::Success)
    );
    assert_eq!(watcher.receive_payloads(), vec!["yes"]);
}

#[test]
fn acl_decides_subscriptions_with_username_and_client_id_substitution() {
    let sim = Sim::new();
    let c = sim.connect_as(v5("c1", nothing), acl_user("a", "ann"));
    let codes = c.subscribe_many(
        &[
            ("devices/ann/#", opts(QoS::AtLeastOnce)),
            ("commands/c1/+", opts(QoS::AtMostOnce)),
            ("commands/c2/+", opts(QoS::AtMostOnce)),
            ("devices/+/x", opts(QoS::AtMostOnce)),
            ("$share/g/devices/ann/x", opts(QoS::AtMostOnce)),
        ],
        None,
    );
    assert_eq!(
        codes,
        vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::Success,
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::Success,
        ]
    );
    let c3 = sim.connect_as(v311("c3", nothing), acl_user("a", "bob"));
    assert_eq!(
        c3.subscribe("devices/ann/#", QoS::AtMostOnce),
        ReasonCode::UnspecifiedError
    );
    assert_eq!(
        c3.subscribe("commands/c3/x", QoS::AtMostOnce),
        ReasonCode::Success
    );
    // Anonymous: `%u` has no value, so the rule does not match.
    let anon = Authorized {
        username: None,
        ..acl_user("a", "x")
    };
    let c4 = sim.connect_as(v5("c4", nothing), anon);
    assert_eq!(
        c4.subscribe("devices/x/#", QoS::AtMostOnce),
        ReasonCode::NotAuthorized
    );
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].denied_subscribe, 4);
}

/// A tenant ACL allowing `rules` (filter, for everything) and denying the rest.
fn tenant_acl(filters: &[&str]) -> Arc<Acl> {
    let rules = filters
        .iter()
        .map(|f| AclRule::new(RuleAction::All, f, true).unwrap())
        .collect();
    Arc::new(Acl::new(rules, Permission::Deny))
}

/// Publishes `payload` to `topic` at QoS 0 into tenant `a` through the API (no ACL of its own),
/// so what a subscriber gets shows its subscriptions only.
fn api_publish(sim: &Sim, topic: &str, payload: &str) {
    let msg = ApiPublish {
        topic: utf8(topic),
        payload: payload.to_owned().into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: PublishProperties::default(),
    };
    sim.with_broker(|b, now| b.publish_api_in(now, "a", msg))
        .expect("published");
}

/// A PUBACK of an accepted publication is Success, or No matching subscribers (0x10) when
/// nobody is subscribed: both read as [`ACCEPTED`].
const ACCEPTED: Option<ReasonCode> = Some(ReasonCode::Success);

fn accepted(code: Option<ReasonCode>) -> Option<ReasonCode> {
    match code {
        Some(ReasonCode::NoMatchingSubscribers) => ACCEPTED,
        other => other,
    }
}

#[test]
fn a_changed_tenant_acl_applies_to_connected_clients_at_once() {
    let sim = Sim::new();
    let before = tenant_acl(&["t/#", "u/#"]);
    let in_a = |acl: &Arc<Acl>, user: &str| Authorized {
        username: Some(Arc::from(user)),
        acl: Arc::clone(acl),
        ..tenant("a")
    };
    let sub = sim.connect_as(v5("sub", nothing), in_a(&before, "ann"));
    assert_eq!(sub.subscribe("t/1", QoS::AtMostOnce), ReasonCode::Success);
    assert_eq!(sub.subscribe("u/1", QoS::AtMostOnce), ReasonCode::Success);
    // A token's own layer over the tenant's rules (a JWT with an ACL claim).
    let token = Authorized {
        acl: Arc::new(Acl::layered(
            vec![AclRule::new(RuleAction::Publish, "tok/#", true).unwrap()],
            Arc::clone(&before),
        )),
        ..in_a(&before, "bob")
    };
    let jwt = sim.connect_as(v5("jwt", nothing), token);
    // An anonymous client of an allow-all tenant has no per-connection policy until now.
    let anon = sim.connect_as(v5("anon", nothing), tenant("a"));
    assert_eq!(
        accepted(publish_code(&anon, "x/1", "x", QoS::AtLeastOnce, false)),
        ACCEPTED
    );
    // In another tenant nothing changes.
    let other = sim.connect_as(
        v5("other", nothing),
        Authorized {
            tenant: Arc::from("b"),
            ..in_a(&before, "ann")
        },
    );
    assert_eq!(other.subscribe("u/1", QoS::AtMostOnce), ReasonCode::Success);

    let removed = sim.with_broker(|b, _| b.set_tenant_acl("a", tenant_acl(&["t/#"])));
    assert_eq!(removed, 1, "sub's u/1");
    // The subscription the new rules deny is gone; the allowed one stays.
    api_publish(&sim, "u/1", "no");
    api_publish(&sim, "t/1", "yes");
    assert_eq!(sub.receive_payloads(), vec!["yes"]);
    assert_eq!(
        sub.subscribe("u/2", QoS::AtMostOnce),
        ReasonCode::NotAuthorized
    );
    // The token's layer stays in front of the new rules.
    assert_eq!(
        accepted(publish_code(&jwt, "tok/1", "x", QoS::AtLeastOnce, false)),
        ACCEPTED
    );
    assert_eq!(
        accepted(publish_code(&jwt, "t/1", "x", QoS::AtLeastOnce, false)),
        ACCEPTED
    );
    assert_eq!(
        accepted(publish_code(&jwt, "u/1", "x", QoS::AtLeastOnce, false)),
        Some(ReasonCode::NotAuthorized)
    );
    assert_eq!(
        accepted(publish_code(&anon, "x/1", "x", QoS::AtLeastOnce, false)),
        Some(ReasonCode::NotAuthorized)
    );
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].denied_subscribe, 2, "the removed one and u/2");
    assert_eq!(stats["b"].denied_subscribe, 0);
    assert_eq!(stats["b"].subscriptions, 1);
}

#[test]
fn a_resumed_session_loses_the_subscriptions_its_rules_no_longer_allow() {
    let sim = Sim::new();
    let in_a = |acl: Arc<Acl>| Authorized {
        username: Some(Arc::from("ann")),
        acl,
        ..tenant("a")
    };
    let sub = sim.connect_as(v5("sub", persistent), in_a(tenant_acl(&["t/#", "u/#"])));
    sub.subscribe("t/1", QoS::AtLeastOnce);
    sub.subscribe("u/1", QoS::AtLeastOnce);
    sub.drop_connection();
    // The tenant's rules change while it is offline; nobody connected to apply them to.
    let removed = sim.with_broker(|b, _| b.set_tenant_acl("a", tenant_acl(&["t/#"])));
    assert_eq!(removed, 0);
    let sub = sim.connect_as(v5("sub", resume), in_a(tenant_acl(&["t/#"])));
    assert!(sub.connack().session_present);
    api_publish(&sim, "u/1", "no");
    api_publish(&sim, "t/1", "yes");
    assert_eq!(sub.receive_payloads(), vec!["yes"]);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(
        (stats["a"].denied_subscribe, stats["a"].subscriptions),
        (1, 1)
    );
}

#[test]
fn a_client_message_rate_set_live_applies_to_connected_clients() {
    let sim = Sim::new();
    let c = sim.connect_as(v5("c", nothing), tenant("a"));
    for _ in 0..3 {
        assert_eq!(
            accepted(publish_code(&c, "t", "x", QoS::AtLeastOnce, false)),
            ACCEPTED
        );
    }
    set_limits(
        &sim,
        TenantLimits {
            max_inbound_messages_per_sec: Some(1),
            ..TenantLimits::default()
        },
    );
    assert_eq!(
        accepted(publish_code(&c, "t", "x", QoS::AtLeastOnce, false)),
        ACCEPTED
    );
    assert_eq!(
        accepted(publish_code(&c, "t", "x", QoS::AtLeastOnce, false)),
        Some(ReasonCode::QuotaExceeded)
    );
    // Lifted again: no bucket any more.
    set_limits(&sim, TenantLimits::default());
    for _ in 0..3 {
        assert_eq!(
            accepted(publish_code(&c, "t", "x", QoS::AtLeastOnce, false)),
            ACCEPTED
        );
    }
}

#[test]
fn a_will_to_a_denied_topic_refuses_the_connect() {
    let sim = Sim::new();
    let c = sim.connect_as(
        v5("c1", |c| {
            c.will = Some(will("other/t", "bye", QoS::AtMostOnce))
        }),
        acl_user("a", "ann"),
    );
    assert_eq!(c.connack().reason_code, ReasonCode::NotAuthorized);
    assert!(c.is_closed());
    let c = sim.connect_as(
        v311("c1", |c| {
            c.will = Some(will("other/t", "bye", QoS::AtMostOnce))
        }),
        acl_user("a", "ann"),
    );
    assert_eq!(c.connack().reason_code.to_v3_connack(), 5);
    let ok = sim.connect_as(
        v5("c1", |c| {
            c.will = Some(will("devices/ann/status", "bye", QoS::AtMostOnce))
        }),
        acl_user("a", "ann"),
    );
    assert_eq!(ok.connack().reason_code, ReasonCode::Success);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!((stats["a"].denied_publish, stats["a"].sessions), (2, 1));
}

// ----- quotas --------------------------------------------------------------------------------

#[test]
fn max_connections_refuses_with_0x97_or_server_unavailable_but_allows_takeover() {
    let sim = Sim::new();
    let limits = || TenantLimits {
        max_connections: Some(1),
        ..TenantLimits::default()
    };
    let first = sim.connect_as(v5("one", nothing), limited("a", limits()));
    assert_eq!(first.connack().reason_code, ReasonCode::Success);
    let second = sim.connect_as(v5("two", nothing), limited("a", limits()));
    assert_eq!(second.connack().reason_code, ReasonCode::QuotaExceeded);
    let third = sim.connect_as(v311("three", nothing), limited("a", limits()));
    assert_eq!(third.connack().reason_code.to_v3_connack(), 3);
    // Another tenant is not affected, and a takeover does not add a connection.
    let other = sim.connect_as(v5("two", nothing), limited("b", limits()));
    assert_eq!(other.connack().reason_code, ReasonCode::Success);
    let again = sim.connect_as(v5("one", nothing), limited("a", limits()));
    assert_eq!(again.connack().reason_code, ReasonCode::Success);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].quota.connections, 2);
    assert_eq!(stats["a"].connections, 1);
}

#[test]
fn max_sessions_counts_offline_sessions_too() {
    let sim = Sim::new();
    let limits = || TenantLimits {
        max_sessions: Some(1),
        ..TenantLimits::default()
    };
    let first = sim.connect_as(v5("one", persistent), limited("a", limits()));
    first.drop_connection();
    let second = sim.connect_as(v5("two", nothing), limited("a", limits()));
    assert_eq!(second.connack().reason_code, ReasonCode::QuotaExceeded);
    let back = sim.connect_as(v5("one", resume), limited("a", limits()));
    assert!(back.connack().session_present);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].quota.sessions, 1);
}

#[test]
fn the_gateways_own_connections_are_outside_the_tenants_quotas_and_counts() {
    let sim = Sim::new();
    let limits = || TenantLimits {
        max_connections: Some(1),
        max_sessions: Some(1),
        ..TenantLimits::default()
    };
    let internal = || ConnInfo {
        internal: true,
        ..ConnInfo::default()
    };
    // The gateway's tap connects first, then the tenant's one allowed client still can.
    let tap = sim.connect_as_with(v5("$tap", nothing), limited("a", limits()), internal());
    assert_eq!(tap.connack().reason_code, ReasonCode::Success);
    let client = sim.connect_as(v5("phone", nothing), limited("a", limits()));
    assert_eq!(client.connack().reason_code, ReasonCode::Success);
    let second = sim.connect_as(v5("phone2", nothing), limited("a", limits()));
    assert_eq!(second.connack().reason_code, ReasonCode::QuotaExceeded);
    // A full tenant does not keep the gateway's own connection out either.
    let tap2 = sim.connect_as_with(v5("$tap2", nothing), limited("a", limits()), internal());
    assert_eq!(tap2.connack().reason_code, ReasonCode::Success);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!((stats["a"].connections, stats["a"].sessions), (1, 1));
    assert_eq!(stats["a"].quota.connections, 1);
    // When they go, the client figures are unchanged and nothing underflows.
    tap.drop_connection();
    tap2.drop_connection();
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!((stats["a"].connections, stats["a"].sessions), (1, 1));
    client.drop_connection();
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!((stats["a"].connections, stats["a"].sessions), (0, 0));
}

#[test]
fn max_subscriptions_per_client_refuses_with_0x97() {
    let sim = Sim::new();
    let limits = || TenantLimits {
        max_subscriptions_per_client: Some(1),
        ..TenantLimits::default()
    };
    let c = sim.connect_as(v5("c", nothing), limited("a", limits()));
    assert_eq!(c.subscribe("a", QoS::AtMostOnce), ReasonCode::Success);
    // Replacing the same filter is not a new subscription.
    assert_eq!(c.subscribe("a", QoS::AtLeastOnce), ReasonCode::GrantedQoS1);
    assert_eq!(c.subscribe("b", QoS::AtMostOnce), ReasonCode::QuotaExceeded);
    let c3 = sim.connect_as(v311("c3", nothing), limited("a", limits()));
    c3.subscribe("a", QoS::AtMostOnce);
    assert_eq!(
        c3.subscribe("b", QoS::AtMostOnce),
        ReasonCode::UnspecifiedError
    );
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(
        (stats["a"].quota.subscriptions, stats["a"].subscriptions),
        (2, 2)
    );
}

#[test]
fn max_queued_messages_of_the_tenant_bounds_an_offline_session() {
    let sim = Sim::with_config(BrokerConfig {
        max_queued_messages: 100,
        ..BrokerConfig::default()
    });
    let limits = || TenantLimits {
        max_queued_messages: Some(2),
        ..TenantLimits::default()
    };
    let sub = sim.connect_as(v5("sub", persistent), limited("a", limits()));
    sub.subscribe("t", QoS::AtLeastOnce);
    sub.drop_connection();
    let publ = sim.connect_as(v5("pub", nothing), limited("a", limits()));
    for n in ["1", "2", "3"] {
        publ.publish("t", n, QoS::AtLeastOnce);
    }
    let sub = sim.connect_as(v5("sub", resume), limited("a", limits()));
    assert_eq!(sub.receive().len(), 2);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].quota.queued_messages, 1);
}

#[test]
fn a_changed_queue_limit_applies_to_existing_sessions_and_keeps_what_they_hold() {
    let sim = Sim::with_config(BrokerConfig {
        max_queued_messages: 100,
        ..BrokerConfig::default()
    });
    let queue = |n| TenantLimits {
        max_queued_messages: n,
        ..TenantLimits::default()
    };
    let set = |n| set_limits(&sim, queue(n));
    // A session created under the gateway's limit (100)...
    let sub = sim.connect_as(v5("sub", persistent), tenant("a"));
    sub.subscribe("t", QoS::AtLeastOnce);
    sub.drop_connection();
    let publ = sim.connect_as(v5("pub", nothing), tenant("a"));
    for n in 0..5 {
        publ.publish("t", n.to_string(), QoS::AtLeastOnce);
    }
    // ...gets the tenant's lower limit when it is set: the 5 already queued stay, the next
    // ones meet a full queue (drop oldest: one out for each one in).
    set(Some(3));
    for n in 5..7 {
        publ.publish("t", n.to_string(), QoS::AtLeastOnce);
    }
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].quota.queued_messages, 2);
    let sub = sim.connect_as(v5("sub", resume), tenant("a"));
    assert_eq!(sub.receive_payloads(), ["2", "3", "4", "5", "6"]);
    sub.drop_connection();
    // Raised again (back to the gateway's limit when unset): nothing more is dropped.
    set(None);
    for n in 0..10 {
        publ.publish("t", n.to_string(), QoS::AtLeastOnce);
    }
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].quota.queued_messages, 2);
    let sub = sim.connect_as(v5("sub", resume), tenant("a"));
    assert_eq!(sub.receive().len(), 10);
}

#[test]
fn retained_quotas_route_but_do_not_store_and_answer_0x97() {
    let sim = Sim::new();
    let limits = || TenantLimits {
        max_retained_messages: Some(1),
        max_retained_bytes: Some(10),
        ..TenantLimits::default()
    };
    let live = sim.connect_as(v5("live", nothing), limited("a", limits()));
    live.subscribe("#", QoS::AtMostOnce);
    let c = sim.connect_as(v5("c", nothing), limited("a", limits()));
    assert_eq!(
        publish_code(&c, "r1", "12345", QoS::AtLeastOnce, true),
        Some(ReasonCode::Success)
    );
    // A second topic: over the message count.
    assert_eq!(
        publish_code(&c, "r2", "x", QoS::AtLeastOnce, true),
        Some(ReasonCode::QuotaExceeded)
    );
    // Replacing the first: over the bytes.
    assert_eq!(
        publish_code(&c, "r1", "12345678901", QoS::ExactlyOnce, true),
        Some(ReasonCode::QuotaExceeded)
    );
    // Replacing within the bytes is fine; 3.1.1 gets a plain acknowledgement when over.
    assert_eq!(
        publish_code(&c, "r1", "123", QoS::AtLeastOnce, true),
        Some(ReasonCode::Success)
    );
    let c3 = sim.connect_as(v311("c3", nothing), limited("a", limits()));
    assert_eq!(
        publish_code(&c3, "r3", "x", QoS::AtLeastOnce, true),
        Some(ReasonCode::Success)
    );
    c.assert_silent();
    // Every one of them was routed to the live subscriber.
    assert_eq!(live.receive().len(), 5);
    let late = sim.connect_as(v5("late", nothing), limited("a", limits()));
    late.subscribe("#", QoS::AtMostOnce);
    assert_eq!(late.receive_payloads(), vec!["123"]);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    let q = stats["a"].quota;
    assert_eq!((q.retained_messages, q.retained_bytes), (2, 1));
    assert_eq!((stats["a"].retained, stats["a"].retained_bytes), (1, 3));
}

#[test]
fn per_client_message_rate_answers_0x97_and_refills_with_time() {
    let sim = Sim::new();
    let limits = || TenantLimits {
        max_inbound_messages_per_sec: Some(2),
        ..TenantLimits::default()
    };
    let watcher = sim.connect_as(v5("w", nothing), limited("a", limits()));
    watcher.subscribe("t", QoS::AtMostOnce);
    let c = sim.connect_as(v5("c", nothing), limited("a", limits()));
    let code = |qos| publish_code(&c, "t", "m", qos, false);
    assert_eq!(code(QoS::AtLeastOnce), Some(ReasonCode::Success));
    assert_eq!(code(QoS::AtLeastOnce), Some(ReasonCode::Success));
    assert_eq!(code(QoS::AtLeastOnce), Some(ReasonCode::QuotaExceeded));
    assert_eq!(code(QoS::ExactlyOnce), Some(ReasonCode::QuotaExceeded));
    assert_eq!(code(QoS::AtMostOnce), None);
    assert_eq!(watcher.receive().len(), 2);
    sim.advance(secs(1));
    assert_eq!(code(QoS::AtLeastOnce), Some(ReasonCode::Success));
    // 3.1.1: acknowledged, not routed.
    let c3 = sim.connect_as(v311("c3", nothing), limited("a", limits()));
    for _ in 0..2 {
        publish_code(&c3, "t", "m", QoS::AtLeastOnce, false);
    }
    assert_eq!(
        publish_code(&c3, "t", "over", QoS::AtLeastOnce, false),
        Some(ReasonCode::Success)
    );
    assert_eq!(watcher.receive().len(), 3);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].quota.client_rate, 4);
}

#[test]
fn tenant_wide_message_rate_is_shared_by_its_clients_only() {
    let sim = Sim::new();
    let limits = || TenantLimits {
        tenant_messages_per_sec: Some(1),
        ..TenantLimits::default()
    };
    let one = sim.connect_as(v5("one", nothing), limited("a", limits()));
    let two = sim.connect_as(v5("two", nothing), limited("a", limits()));
    let other = sim.connect_as(v5("one", nothing), limited("b", limits()));
    let code = |c: &Client| publish_code(c, "t", "m", QoS::AtLeastOnce, false);
    assert_eq!(code(&one), Some(ReasonCode::NoMatchingSubscribers));
    assert_eq!(code(&two), Some(ReasonCode::QuotaExceeded));
    assert_eq!(code(&other), Some(ReasonCode::NoMatchingSubscribers));
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(
        (stats["a"].quota.tenant_rate, stats["b"].quota.tenant_rate),
        (1, 0)
    );
}

// ----- credential expiry ---------------------------------------------------------------------

#[test]
fn expired_credentials_disconnect_with_0xa0_and_publish_the_will() {
    let sim = Sim::new();
    let watcher = sim.connect_as(v5("w", nothing), tenant("a"));
    watcher.subscribe("will/#", QoS::AtMostOnce);
    let expiring = |after| Authorized {
        expires_at: Some(sim.with_broker(|_, now| now) + after),
        ..tenant("a")
    };
    let c = sim.connect_as(
        v5("c", |c| {
            c.will = Some(will("will/c", "gone", QoS::AtMostOnce))
        }),
        expiring(secs(30)),
    );
    let c3 = sim.connect_as(v311("c3", nothing), expiring(secs(30)));
    sim.advance(secs(29));
    assert!(!c.is_closed() && !c3.is_closed());
    sim.advance(secs(1));
    c.expect_disconnect(ReasonCode::MaximumConnectTime);
    assert!(c.is_closed());
    c3.expect_closed_silently();
    assert_eq!(watcher.receive_payloads(), vec!["gone"]);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!(stats["a"].credentials_expired, 2);

    // A connection that ends first leaves no timer behind.
    let d = sim.connect_as(v5("d", nothing), expiring(secs(5)));
    d.disconnect(ReasonCode::Success);
    sim.advance(secs(10));
    assert_eq!(
        sim.with_broker(|b, _| b.tenant_stats())["a"].credentials_expired,
        2
    );
}

// ----- tenant-wide admin ---------------------------------------------------------------------

#[test]
fn disconnect_tenant_and_drop_its_sessions_leave_other_tenants_alone() {
    let sim = Sim::new();
    let a1 = sim.connect_as(v5("a1", persistent), tenant("a"));
    let a2 = sim.connect_as(v311("a2", |c| c.clean_start = false), tenant("a"));
    a1.publish_with("r", "kept", QoS::AtMostOnce, |p| p.retain = true);
    let b1 = sim.connect_as(v5("b1", nothing), tenant("b"));
    let closed = sim.with_broker(|b, now| b.disconnect_tenant(now, "a", ReasonCode::NotAuthorized));
    assert_eq!(closed, 2);
    a1.expect_disconnect(ReasonCode::NotAuthorized);
    a2.expect_closed_silently();
    assert!(!b1.is_closed());
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!((stats["a"].connections, stats["a"].sessions), (0, 2));

    let dropped = sim.with_broker(|b, now| b.drop_tenant_sessions(now, "a"));
    assert_eq!(dropped, 2);
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!((stats["a"].sessions, stats["a"].retained), (0, 0));
    assert_eq!(stats["b"].connections, 1);
    assert_eq!(
        sim.with_broker(|b, now| b.disconnect_tenant(now, "nobody", ReasonCode::NotAuthorized)),
        0
    );

    let b2 = sim.connect_as(v5("b2", persistent), tenant("b"));
    let kicked =
        sim.with_broker(|b, now| b.kick_in(now, "b", "b2", ReasonCode::AdministrativeAction, true));
    assert!(kicked.disconnected && kicked.session_discarded);
    b2.expect_disconnect(ReasonCode::AdministrativeAction);
    assert!(!b1.is_closed());
}

#[test]
fn limits_changed_live_apply_to_connected_clients_of_the_tenant() {
    let sim = Sim::new();
    let a = sim.connect_as(v5("a", nothing), tenant("a"));
    let d = sim.connect_v5("d", |_| {});
    assert_eq!(a.subscribe("one", QoS::AtMostOnce), ReasonCode::Success);
    set_limits(
        &sim,
        TenantLimits {
            max_subscriptions_per_client: Some(1),
            ..TenantLimits::default()
        },
    );
    assert_eq!(
        a.subscribe("two", QoS::AtMostOnce),
        ReasonCode::QuotaExceeded
    );
    d.subscribe("one", QoS::AtMostOnce);
    assert_eq!(d.subscribe("two", QoS::AtMostOnce), ReasonCode::Success);
}

// ----- persistence ---------------------------------------------------------------------------

#[test]
fn two_tenants_restore_into_their_own_tenant() {
    let sim = Sim::durable(BrokerConfig::default());
    for t in ["default", "acme"] {
        let sub = sim.connect_as(v5("dev", persistent), tenant(t));
        sub.subscribe("t", QoS::AtLeastOnce);
        sub.drop_connection();
        let publ = sim.connect_as(v5("pub", nothing), tenant(t));
        publ.publish("t", format!("queued-{t}"), QoS::AtLeastOnce);
        publ.publish_with("r", format!("retained-{t}"), QoS::AtLeastOnce, |p| {
            p.retain = true;
        });
        publ.disconnect(ReasonCode::Success);
    }
    // The default tenant's records are named as before tenants; acme's are namespaced.
    let mut store = sim.store();
    let snapshot = tidegate_core::store::Store::load(&mut store).expect("load");
    let mut ids: Vec<String> = snapshot
        .sessions
        .iter()
        .map(|s| s.record.client_id.to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["acme\u{1F}dev", "dev"]);
    let mut topics: Vec<String> = snapshot
        .retained
        .iter()
        .map(|r| r.topic.to_string())
        .collect();
    topics.sort();
    assert_eq!(topics, ["acme#r", "r"]);

    let report = sim.crash_and_restart(secs(1));
    assert_eq!((report.sessions, report.retained), (2, 2));
    let stats = sim.with_broker(|b, _| b.tenant_stats());
    assert_eq!((stats["acme"].sessions, stats["acme"].retained), (1, 1));
    assert_eq!(
        (stats["default"].sessions, stats["default"].retained),
        (1, 1)
    );

    for t in ["default", "acme"] {
        let sub = sim.connect_as(v5("dev", resume), tenant(t));
        assert!(sub.connack().session_present);
        assert_eq!(sub.receive_payloads(), vec![format!("queued-{t}")]);
        let fresh = sim.connect_as(v5("fresh", nothing), tenant(t));
        fresh.subscribe("#", QoS::AtMostOnce);
        assert_eq!(fresh.receive_payloads(), vec![format!("retained-{t}")]);
    }
    // And the store still agrees after the restore (nothing was renamed or lost).
    let mut store = sim.store();
    let snapshot = tidegate_core::store::Store::load(&mut store).expect("load");
    assert_eq!(snapshot.retained.len(), 2);
}

#[test]
fn a_client_id_with_the_reserved_separator_is_refused() {
    let sim = Sim::new();
    let c = sim.connect_v5("acme\u{1F}dev", |_| {});
    assert_eq!(
        c.connack().reason_code,
        ReasonCode::ClientIdentifierNotValid
    );
}
