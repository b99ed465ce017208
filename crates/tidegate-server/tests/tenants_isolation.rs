//! Isolation between tenants (issue 7), end to end: two tenants declared in TOML, real MQTT
//! clients (rumqttc v5 and v3.1.1 over TCP, logging in as `dev@tenant` with argon2 passwords)
//! and the HTTP API (reqwest). A `#` subscriber of one tenant sees nothing of the other, shared
//! groups, retained messages and `$`-topics are per tenant, one client id in two tenants is two
//! sessions, and the admin API lists clients and sessions with their tenant, filters by it and
//! takes `?tenant=` for one client. HTTP tokens bound to a tenant publish into it under its ACL,
//! and an admin token bound to a tenant sees that tenant only.
//!
//! The gateway publishes no `$SYS` statistics of its own; `$`-topics are exercised with an
//! application's `$monitor/...` (clients may not publish under `$SYS`).

mod common;

use common::http::{ADMIN_TOKEN, Gate, PUBLISH_TOKEN, config};
use common::tenants::{tenant_toml, v4_login, v5_login};
use common::v5::{Client, text, topic};
use reqwest::{Method, StatusCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use serde_json::{Value, json};
use std::time::Duration;

/// A publish and an admin token bound to tenant `alpha`.
const ALPHA_PUBLISH: &str = "alpha-publish-token";
const ALPHA_ADMIN: &str = "alpha-admin-token";

/// How long a drain waits for one more message.
const DRAIN_QUIET: Duration = Duration::from_millis(400);

/// Tenants `alpha` (publishing under `locked/` denied; everything else allowed, `$monitor/`
/// included) and `beta` (no rules: its whole topic space), plus two tokens bound to `alpha`.
async fn two_tenants() -> Gate {
    let alpha_acl = "[[tenants.acl]]\naction = \"publish\"\nfilter = \"locked/#\"\nallow = false\n\
                     [[tenants.acl]]\naction = \"all\"\nfilter = \"#\"\nallow = true\n\
                     [[tenants.acl]]\naction = \"all\"\nfilter = \"$monitor/#\"\nallow = true\n";
    let toml = format!(
        "{}\n[[http.tokens]]\ntoken = \"{ALPHA_PUBLISH}\"\nkind = \"publish\"\ntenant = \"alpha\"\n\
         username = \"backend\"\n\n[[http.tokens]]\ntoken = \"{ALPHA_ADMIN}\"\nkind = \"admin\"\n\
         tenant = \"alpha\"\n{}{}",
        config(""),
        tenant_toml("alpha", alpha_acl),
        tenant_toml("beta", ""),
    );
    Gate::from_toml(&toml).await
}

async fn v5(gate: &Gate, id: &str, tenant: &str) -> Client {
    Client::connect(v5_login(gate.mqtt, id, tenant)).await
}

/// Every PUBLISH `c` receives until none comes for [`DRAIN_QUIET`], as `topic=payload`.
async fn drain(c: &mut Client) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(p) = tokio::time::timeout(DRAIN_QUIET, c.recv()).await {
        got.push(format!("{}={}", topic(&p), text(&p)));
    }
    got
}

fn ids_and_tenants(page: &Value) -> Vec<(String, String)> {
    let mut items: Vec<(String, String)> = page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|i| {
            (
                i["client_id"].as_str().unwrap().to_owned(),
                i["tenant"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    items.sort();
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_shared_groups_retained_and_dollar_topics_stay_in_their_tenant() {
    let gate = two_tenants().await;
    let mut all_a = v5(&gate, "all-a", "alpha").await;
    all_a.subscribe_ok("#", QoS::AtLeastOnce).await;
    let mut all_b = common::v4::Client::connect(v4_login(gate.mqtt, "all-b", "beta")).await;
    all_b.subscribe_ok("#", rumqttc::QoS::AtLeastOnce).await;
    let mut pub_a = v5(&gate, "pub-a", "alpha").await;
    let mut pub_b = v5(&gate, "pub-b", "beta").await;

    pub_a
        .publish("t/1", QoS::AtLeastOnce, false, b"from-alpha")
        .await;
    pub_b
        .publish("t/1", QoS::AtLeastOnce, false, b"from-beta")
        .await;
    assert_eq!(drain(&mut all_a).await, ["t/1=from-alpha"]);
    let p = all_b.recv().await;
    assert_eq!(common::v4::text(&p), "from-beta");
    all_b.expect_no_publish().await;

    // One group name in both tenants is two groups: alpha's four messages go to alpha's
    // members only, each once.
    let mut members = Vec::new();
    for (id, tenant) in [("m1", "alpha"), ("m2", "alpha"), ("m3", "beta")] {
        let mut m = v5(&gate, id, tenant).await;
        m.subscribe_ok("$share/g/s", QoS::AtLeastOnce).await;
        members.push(m);
    }
    for i in 0..4 {
        pub_a
            .publish("s", QoS::AtLeastOnce, false, format!("a{i}").as_bytes())
            .await;
    }
    pub_b.publish("s", QoS::AtLeastOnce, false, b"b0").await;
    let mut alpha_got = drain(&mut members[0]).await;
    alpha_got.extend(drain(&mut members[1]).await);
    alpha_got.sort();
    assert_eq!(alpha_got, ["s=a0", "s=a1", "s=a2", "s=a3"]);
    assert_eq!(drain(&mut members[2]).await, ["s=b0"]);
    drain(&mut all_a).await;
    while tokio::time::timeout(DRAIN_QUIET, all_b.recv())
        .await
        .is_ok()
    {}

    // Retained messages of one topic, one per tenant; `$` topics too.
    pub_a.publish("r/x", QoS::AtLeastOnce, true, b"ra").await;
    pub_b.publish("r/x", QoS::AtLeastOnce, true, b"rb").await;
    pub_a
        .publish("$monitor/load", QoS::AtLeastOnce, true, b"42")
        .await;
    let mut late_a = v5(&gate, "late-a", "alpha").await;
    late_a.subscribe_ok("r/#", QoS::AtLeastOnce).await;
    late_a.subscribe_ok("$monitor/#", QoS::AtLeastOnce).await;
    let mut got = drain(&mut late_a).await;
    got.sort();
    assert_eq!(got, ["$monitor/load=42", "r/x=ra"]);
    let mut late_b = v5(&gate, "late-b", "beta").await;
    late_b.subscribe_ok("r/#", QoS::AtLeastOnce).await;
    late_b.subscribe_ok("$monitor/#", QoS::AtLeastOnce).await;
    assert_eq!(drain(&mut late_b).await, ["r/x=rb"]);

    // The admin API reads each tenant's retained messages, and deletes in one tenant only.
    let listed = gate.admin("/v1/admin/retained?tenant=beta").await;
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["messages"][0]["payload"], "rb");
    let alpha = gate
        .admin("/v1/admin/retained?tenant=alpha&filter=r%2F%23")
        .await;
    assert_eq!(alpha["messages"][0]["payload"], "ra");
    let default = gate.admin("/v1/admin/retained").await;
    assert_eq!(
        default["messages"],
        json!([]),
        "the default tenant has none"
    );
    let r = gate
        .admin_delete("/v1/admin/retained/r/x?tenant=beta")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = gate
        .admin_delete("/v1/admin/retained/r/x?tenant=beta")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let alpha = gate
        .admin("/v1/admin/retained?tenant=alpha&filter=r%2F%23")
        .await;
    assert_eq!(
        alpha["messages"][0]["payload"], "ra",
        "alpha's is still there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_id_in_two_tenants_is_two_sessions_listed_with_their_tenant() {
    let gate = two_tenants().await;
    let mut in_alpha = v5(&gate, "phone", "alpha").await;
    in_alpha.subscribe_ok("cmd", QoS::AtLeastOnce).await;
    let mut in_beta = v5(&gate, "phone", "beta").await;
    in_beta.subscribe_ok("cmd", QoS::AtLeastOnce).await;
    in_beta.subscribe_ok("cmd/b", QoS::AtLeastOnce).await;
    let _other = v5(&gate, "other", "beta").await;

    // No takeover across tenants: both connections stay and each gets its tenant's messages.
    let mut pub_a = v5(&gate, "pub-a", "alpha").await;
    pub_a
        .publish("cmd", QoS::AtLeastOnce, false, b"to-alpha")
        .await;
    assert_eq!(text(&in_alpha.recv().await), "to-alpha");
    in_beta.expect_no_publish().await;

    let clients = gate.admin("/v1/admin/clients?client_id_prefix=phone").await;
    assert_eq!(
        ids_and_tenants(&clients),
        [
            ("phone".into(), "alpha".into()),
            ("phone".into(), "beta".into())
        ]
    );
    let beta = gate.admin("/v1/admin/clients?tenant=beta").await;
    assert_eq!(
        ids_and_tenants(&beta),
        [
            ("other".into(), "beta".into()),
            ("phone".into(), "beta".into())
        ]
    );
    let sessions = gate.admin("/v1/admin/sessions?tenant=alpha").await;
    assert_eq!(
        ids_and_tenants(&sessions),
        [
            ("phone".into(), "alpha".into()),
            ("pub-a".into(), "alpha".into())
        ]
    );
    // Pages walk through both entries of one client id.
    let first = gate
        .admin("/v1/admin/sessions?client_id_prefix=phone&limit=1")
        .await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let url = format!(
        "/v1/admin/sessions?client_id_prefix=phone&limit=1&cursor={}",
        urlencode(&cursor)
    );
    let second = gate.admin(&url).await;
    assert_ne!(first["items"][0]["tenant"], second["items"][0]["tenant"]);

    let one = gate.admin("/v1/admin/clients/phone?tenant=beta").await;
    assert_eq!(one["tenant"], "beta");
    assert_eq!(one["subscriptions"], 2);
    let subs = gate
        .admin("/v1/admin/clients/phone/subscriptions?tenant=alpha")
        .await;
    assert_eq!(subs["subscriptions"].as_array().unwrap().len(), 1);
    let r = gate.get("/v1/admin/clients/phone", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "no phone in the default tenant"
    );

    let kicked = gate
        .admin_delete("/v1/admin/clients/phone?tenant=beta")
        .await;
    assert_eq!(kicked.expect(StatusCode::OK)["disconnected"], true);
    assert_eq!(
        in_beta.server_disconnect().await,
        DisconnectReasonCode::AdministrativeAction
    );
    pub_a
        .publish("cmd", QoS::AtLeastOnce, false, b"still-here")
        .await;
    assert_eq!(text(&in_alpha.recv().await), "still-here");
}

/// Percent-encodes a cursor for a query string.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tokens_bound_to_a_tenant_publish_under_its_acl_and_admin_only_it() {
    let gate = two_tenants().await;
    let mut all_a = v5(&gate, "all-a", "alpha").await;
    all_a.subscribe_ok("#", QoS::AtLeastOnce).await;
    let mut all_b = v5(&gate, "all-b", "beta").await;
    all_b.subscribe_ok("#", QoS::AtLeastOnce).await;
    let post = |path: &'static str, token: &'static str, body: Value| {
        let gate = &gate;
        async move {
            gate.send(Method::POST, path, Some(token), Some(&body))
                .await
        }
    };

    let ok = post(
        "/v1/publish",
        ALPHA_PUBLISH,
        json!({"topic": "t/http", "payload": "hi", "qos": 1, "retain": true}),
    )
    .await;
    assert_eq!(ok.expect(StatusCode::OK)["matched"], 1);
    assert_eq!(drain(&mut all_a).await, ["t/http=hi"]);
    all_b.expect_no_publish().await;

    let denied = post(
        "/v1/publish",
        ALPHA_PUBLISH,
        json!({"topic": "locked/x", "payload": "no"}),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.error_code(), "not_authorized");
    let batch = json!({"messages": [
        {"topic": "t/first", "payload": "1"},
        {"topic": "locked/y", "payload": "2"},
    ]});
    let denied = post("/v1/publish/batch", ALPHA_PUBLISH, batch).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    all_a.expect_no_publish().await;

    // A plain token is the default tenant: neither alpha nor beta hears it.
    let plain = post(
        "/v1/publish",
        PUBLISH_TOKEN,
        json!({"topic": "t/http", "payload": "d"}),
    )
    .await;
    assert_eq!(plain.expect(StatusCode::OK)["matched"], 0);
    all_a.expect_no_publish().await;

    let retained = gate
        .get("/v1/retained?filter=t%2F%23", Some(ALPHA_PUBLISH))
        .await;
    assert_eq!(
        retained.expect(StatusCode::OK)["messages"][0]["payload"],
        "hi"
    );
    let retained = gate
        .get("/v1/retained?filter=t%2F%23", Some(PUBLISH_TOKEN))
        .await;
    assert_eq!(retained.expect(StatusCode::OK)["messages"], json!([]));
    // Streams of bound tokens read their tenant (tests/tenants_stream.rs covers them).
    let sse = gate.subscribe_response(ALPHA_PUBLISH, &["t/#"], None).await;
    assert_eq!(sse.status(), StatusCode::OK);
    drop(sse);

    let mine = gate.get("/v1/admin/clients", Some(ALPHA_ADMIN)).await;
    assert_eq!(
        ids_and_tenants(&mine.expect(StatusCode::OK)),
        [("all-a".into(), "alpha".into())]
    );
    for path in [
        "/v1/admin/clients?tenant=beta",
        "/v1/admin/clients/all-b?tenant=beta",
        "/v1/admin/tenants/beta",
        "/v1/admin/stats",
    ] {
        let r = gate.get(path, Some(ALPHA_ADMIN)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    let tenants = gate.get("/v1/admin/tenants", Some(ALPHA_ADMIN)).await;
    let tenants = tenants.expect(StatusCode::OK);
    assert_eq!(tenants["tenants"].as_array().unwrap().len(), 1, "{tenants}");
    assert_eq!(tenants["tenants"][0]["id"], "alpha");
    let r = gate
        .send(
            Method::DELETE,
            "/v1/admin/clients/all-a",
            Some(ALPHA_ADMIN),
            None,
        )
        .await;
    assert_eq!(r.expect(StatusCode::OK)["disconnected"], true);
}
