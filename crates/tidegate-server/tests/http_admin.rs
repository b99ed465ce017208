//! The admin API end to end (issue 6): reqwest with the admin token against a gateway that
//! rumqttc clients are connected to. A kick is seen by an MQTT 5 client as DISCONNECT with the
//! reason asked for (0x98 by default) and by an MQTT 3.1.1 client as the socket closing;
//! `discard_session` drops the session; clients are listed with filters and pages; sessions,
//! subscriptions, retained messages and counters read what the engine holds.

mod common;

use common::http::{ADMIN_TOKEN, Gate, MQTT_LISTENER, PATIENCE, PUBLISH_TOKEN};
use common::v5::Client;
use reqwest::StatusCode;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Filter, RetainForwardRule};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `client_id`s of a page.
fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `GET path` (admin) answers `status`.
async fn eventually_status(gate: &Gate, path: &str, status: StatusCode) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = gate.get(path, Some(ADMIN_TOKEN)).await;
        if reply.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {} {}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_mqtt_5_client_gets_disconnect_0x98_or_the_reason_asked_for() {
    let gate = Gate::start("").await;
    let mut client = Client::connect(gate.v5_options("kick-v5")).await;
    let reply = gate.admin_delete("/v1/admin/clients/kick-v5").await;
    assert_eq!(
        reply.expect(StatusCode::OK),
        json!({"disconnected": true, "session_discarded": false})
    );
    assert_eq!(
        client.server_disconnect().await,
        DisconnectReasonCode::AdministrativeAction
    );
    eventually_status(&gate, "/v1/admin/clients/kick-v5", StatusCode::NOT_FOUND).await;

    // Another reason a server may send, in hex.
    let mut client = Client::connect(gate.v5_options("kick-v5-b")).await;
    let reply = gate
        .admin_delete("/v1/admin/clients/kick-v5-b?reason=0x8b")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        client.server_disconnect().await,
        DisconnectReasonCode::ServerShuttingDown
    );

    // A reason only a client may send is refused, and the client stays connected.
    let mut client = Client::connect(gate.v5_options("kick-v5-c")).await;
    let reply = gate
        .admin_delete("/v1/admin/clients/kick-v5-c?reason=0x04")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_reason");
    gate.admin("/v1/admin/clients/kick-v5-c").await;
    client.subscribe_ok("still/here", QoS::AtMostOnce).await;

    // Nobody by that id: 404.
    let reply = gate.admin_delete("/v1/admin/clients/nobody").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_mqtt_3_1_1_client_sees_its_socket_closed() {
    let gate = Gate::start("").await;
    let mut client = common::v4::Client::connect(gate.v4_options("kick-v4")).await;
    let reply = gate.admin_delete("/v1/admin/clients/kick-v4").await;
    assert_eq!(
        reply.expect(StatusCode::OK),
        json!({"disconnected": true, "session_discarded": false})
    );
    // 3.1.1 has no server DISCONNECT: the connection just ends.
    let error = client.closed().await;
    assert!(
        matches!(
            error,
            rumqttc::ConnectionError::Io(_)
                | rumqttc::ConnectionError::MqttState(
                    rumqttc::StateError::Io(_) | rumqttc::StateError::ConnectionAborted
                )
        ),
        "expected the socket to close, got {error:?}"
    );
    eventually_status(&gate, "/v1/admin/clients/kick-v4", StatusCode::NOT_FOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_session_drops_the_session_online_or_offline() {
    let gate = Gate::start("").await;
    let mut opts = gate.v5_options("keep-1");
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(3600));
    let mut client = Client::connect(opts).await;
    client.subscribe_ok("keep/#", QoS::AtLeastOnce).await;
    let page = gate
        .admin("/v1/admin/sessions?client_id_prefix=keep-")
        .await;
    assert_eq!(page["total"], 1, "{page}");
    let session = &page["items"][0];
    assert_eq!(session["client_id"], "keep-1");
    assert_eq!(session["tenant"], "default");
    assert_eq!(session["online"], true);
    assert_eq!(session["expiry_interval"], 3600);
    assert_eq!(session["subscriptions"], 1);

    // A kick without discard leaves the session, offline, with its subscriptions.
    let reply = gate.admin_delete("/v1/admin/clients/keep-1").await;
    assert_eq!(
        reply.expect(StatusCode::OK),
        json!({"disconnected": true, "session_discarded": false})
    );
    assert_eq!(
        client.server_disconnect().await,
        DisconnectReasonCode::AdministrativeAction
    );
    let page = gate
        .admin("/v1/admin/sessions?client_id_prefix=keep-&online=false")
        .await;
    assert_eq!(ids(&page), ["keep-1"]);
    assert!(page["items"][0]["expires_at_ms"].as_u64().is_some());
    let subs = gate.admin("/v1/admin/clients/keep-1/subscriptions").await;
    assert_eq!(subs["subscriptions"][0]["filter"], "keep/#");
    // Messages for it wait in its queue.
    gate.publish(&json!({"topic": "keep/x", "payload": "queued", "qos": 1}))
        .await;
    let page = gate
        .admin("/v1/admin/sessions?client_id_prefix=keep-")
        .await;
    assert_eq!(page["items"][0]["queued"], 1, "{page}");

    // Kicking an offline session without discard does nothing: 404.
    let reply = gate.admin_delete("/v1/admin/clients/keep-1").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Discarding it drops it: not listed, no subscriptions, nothing for a reconnect.
    let reply = gate
        .admin_delete("/v1/admin/clients/keep-1?discard_session=true")
        .await;
    assert_eq!(
        reply.expect(StatusCode::OK),
        json!({"disconnected": false, "session_discarded": true})
    );
    let page = gate
        .admin("/v1/admin/sessions?client_id_prefix=keep-")
        .await;
    assert_eq!(page["total"], 0, "{page}");
    let reply = gate
        .get("/v1/admin/clients/keep-1/subscriptions", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let mut opts = gate.v5_options("keep-1");
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(3600));
    let mut back = Client::connect(opts).await;
    assert!(!back.connack.session_present, "the session was discarded");
    back.expect_no_publish().await;

    // Online and discarded at once: disconnected (0x98) and gone.
    let reply = gate
        .admin_delete("/v1/admin/clients/keep-1?discard_session=true")
        .await;
    assert_eq!(
        reply.expect(StatusCode::OK),
        json!({"disconnected": true, "session_discarded": true})
    );
    assert_eq!(
        back.server_disconnect().await,
        DisconnectReasonCode::AdministrativeAction
    );
    let page = gate
        .admin("/v1/admin/sessions?client_id_prefix=keep-")
        .await;
    assert_eq!(page["total"], 0, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_listed_with_filters_and_pages() {
    let toml = common::http::config("").replace(
        "[[listeners]]\nkind = \"http\"",
        "[[listeners]]\nkind = \"tcp\"\nname = \"mqtt-second\"\nbind = \"127.0.0.1:0\"\n\n\
         [[listeners]]\nkind = \"http\"",
    );
    let gate = Gate::from_toml(&toml).await;
    let second = gate.server.addrs[1];
    let mut a1 = Client::connect(gate.v5_options("list-a1")).await;
    let _a2 = Client::connect(gate.v5_options("list-a2")).await;
    let _b1 = Client::connect(gate.v5_options("list-b1")).await;
    let mut v4 = rumqttc::MqttOptions::new("list-c1", "127.0.0.1", second.port());
    v4.set_keep_alive(Duration::from_secs(20));
    let _c1 = common::v4::Client::connect(v4).await;
    // The HTTP stream hub's own session is no client.
    let mut sse = gate.subscribe(&["list/#"], None).await;
    sse.start_id().await;

    let all = gate.admin("/v1/admin/clients").await;
    assert_eq!(ids(&all), ["list-a1", "list-a2", "list-b1", "list-c1"]);
    assert_eq!(all["total"], 4);
    assert!(all.get("next_cursor").is_none(), "{all}");

    let page = gate
        .admin("/v1/admin/clients?client_id_prefix=list-a")
        .await;
    assert_eq!(ids(&page), ["list-a1", "list-a2"]);
    assert_eq!(page["total"], 2);
    let page = gate.admin("/v1/admin/clients?listener=mqtt-second").await;
    assert_eq!(ids(&page), ["list-c1"]);
    assert_eq!(page["items"][0]["protocol_version"], "3.1.1");
    assert_eq!(page["items"][0]["keep_alive"], 20);
    let page = gate
        .admin(&format!("/v1/admin/clients?listener={MQTT_LISTENER}"))
        .await;
    assert_eq!(ids(&page), ["list-a1", "list-a2", "list-b1"]);
    let page = gate.admin("/v1/admin/clients?address=127.0.0.1").await;
    assert_eq!(page["total"], 4);
    let page = gate.admin("/v1/admin/clients?address=10.1.2.3").await;
    assert_eq!(page["total"], 0);
    let page = gate.admin("/v1/admin/clients?tenant=default").await;
    assert_eq!(page["total"], 4);
    let page = gate.admin("/v1/admin/clients?tenant=elsewhere").await;
    assert_eq!(page["total"], 0);

    // Pages follow the cursor; every page says the total.
    let first = gate.admin("/v1/admin/clients?limit=3").await;
    assert_eq!(ids(&first), ["list-a1", "list-a2", "list-b1"]);
    assert_eq!(first["total"], 4);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let rest = gate
        .admin(&format!("/v1/admin/clients?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(ids(&rest), ["list-c1"]);
    assert_eq!(rest["total"], 4);
    assert!(rest.get("next_cursor").is_none(), "{rest}");
    for bad in ["limit=0", "limit=1001", "colour=blue"] {
        let reply = gate
            .get(&format!("/v1/admin/clients?{bad}"), Some(ADMIN_TOKEN))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.error_code(), "bad_request", "{bad}");
    }

    // One client in detail, after some traffic of its own.
    a1.subscribe_ok("list/mine", QoS::AtLeastOnce).await;
    a1.publish("list/x", QoS::AtLeastOnce, false, b"one").await;
    a1.publish("list/x", QoS::AtLeastOnce, false, b"two").await;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let info = gate.admin("/v1/admin/clients/list-a1").await;
    assert_eq!(info["client_id"], "list-a1");
    assert_eq!(info["tenant"], "default");
    assert_eq!(info["listener"], MQTT_LISTENER);
    assert_eq!(info["protocol_version"], "5.0");
    assert_eq!(info["keep_alive"], 30);
    assert_eq!(info["subscriptions"], 1);
    assert_eq!(info["messages_in"], 2, "{info}");
    assert_eq!(info["inflight"], 0);
    assert_eq!(info["queued"], 0);
    let address = info["address"].as_str().unwrap();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert!(info["bytes_in"].as_u64().unwrap() > 0);
    assert!(info["bytes_out"].as_u64().unwrap() > 0);
    let since = info["connected_since_ms"].as_u64().unwrap();
    assert!(
        since <= now_ms + 1000 && since + 120_000 > now_ms,
        "connected since {since}, now {now_ms}"
    );
    // The address filter takes the whole `ip:port` too.
    let page = gate
        .admin(&format!("/v1/admin/clients?address={address}"))
        .await;
    assert_eq!(ids(&page), ["list-a1"]);

    let reply = gate
        .get("/v1/admin/clients/nobody", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_subscriptions_are_listed_with_their_options() {
    let gate = Gate::start("").await;
    let mut client = Client::connect(gate.v5_options("subs-1")).await;
    client.subscribe_ok("subs/a", QoS::AtLeastOnce).await;
    let options = Filter {
        path: "subs/b/#".into(),
        qos: QoS::ExactlyOnce,
        nolocal: true,
        preserve_retain: true,
        retain_forward_rule: RetainForwardRule::Never,
    };
    client
        .subscribe_filters(vec![options], Some(common::v5::sub_id(7)))
        .await;
    client
        .subscribe_ok("$share/grp/subs/c", QoS::AtMostOnce)
        .await;
    let body = gate.admin("/v1/admin/clients/subs-1/subscriptions").await;
    let mut subs = body["subscriptions"].as_array().unwrap().clone();
    subs.sort_by_key(|s| s["filter"].as_str().unwrap().to_owned());
    assert_eq!(
        subs,
        [
            json!({"filter": "$share/grp/subs/c", "qos": 0, "no_local": false,
                   "retain_as_published": false, "retain_handling": 0}),
            json!({"filter": "subs/a", "qos": 1, "no_local": false,
                   "retain_as_published": false, "retain_handling": 0}),
            json!({"filter": "subs/b/#", "qos": 2, "no_local": true,
                   "retain_as_published": true, "retain_handling": 2, "identifier": 7}),
        ]
    );
    client.unsubscribe("subs/a").await;
    let body = gate.admin("/v1/admin/clients/subs-1/subscriptions").await;
    assert_eq!(body["subscriptions"].as_array().unwrap().len(), 2);
    let reply = gate
        .get("/v1/admin/clients/nobody/subscriptions", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_listed_and_deleted() {
    let gate = Gate::start("").await;
    for topic in ["ra/1", "ra/deep/2", "rb/1"] {
        gate.publish(&json!({"topic": topic, "payload": topic, "qos": 1, "retain": true}))
            .await;
    }
    let topics = |body: &Value| {
        let mut t: Vec<String> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["topic"].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        topics(&gate.admin("/v1/admin/retained").await),
        ["ra/1", "ra/deep/2", "rb/1"]
    );
    let body = gate.admin("/v1/admin/retained?filter=ra%2F%23").await;
    assert_eq!(topics(&body), ["ra/1", "ra/deep/2"]);
    assert_eq!(body["messages"][0]["retain"], true);

    // Deleting takes a topic with slashes in the path.
    let reply = gate.admin_delete("/v1/admin/retained/ra/deep/2").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    let reply = gate.admin_delete("/v1/admin/retained/ra/deep/2").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "not_found");
    let reply = gate.admin_delete("/v1/admin/retained/ra/%2B").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_topic");
    assert_eq!(
        topics(&gate.admin("/v1/admin/retained?filter=ra%2F%23").await),
        ["ra/1"]
    );
    // A new MQTT subscriber gets only what is left.
    let mut client = Client::connect(gate.v5_options("ret-after")).await;
    client.subscribe_ok("ra/#", QoS::AtLeastOnce).await;
    assert_eq!(common::v5::topic(&client.recv().await), "ra/1");
    client.expect_no_publish().await;

    // The publish token reads retained messages through /v1/retained, not the admin API.
    let reply = gate.get("/v1/admin/retained", Some(PUBLISH_TOKEN)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(gate.stats().await["retained"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_known_traffic() {
    let gate = Gate::start("").await;
    let mut sub = Client::connect(gate.v5_options("stats-sub")).await;
    sub.subscribe_ok("stats/#", QoS::AtLeastOnce).await;
    let mut publisher = common::v4::Client::connect(gate.v4_options("stats-pub")).await;
    for i in 0..2u8 {
        publisher
            .publish("stats/mqtt", rumqttc::QoS::AtLeastOnce, false, &[b'0' + i])
            .await;
    }
    for i in 0..3 {
        gate.publish(
            &json!({"topic": "stats/http", "payload": i.to_string(), "qos": 1,
                             "retain": i == 0}),
        )
        .await;
    }
    for _ in 0..5 {
        sub.recv().await;
    }
    let stats = gate.stats().await;
    assert_eq!(stats["connections"], 2, "{stats}");
    assert_eq!(stats["sessions"], 2, "{stats}");
    assert_eq!(stats["subscriptions"], 1, "{stats}");
    assert_eq!(stats["retained"], 1, "{stats}");
    assert_eq!(stats["messages_in"], 5, "{stats}");
    assert_eq!(stats["messages_out"], 5, "{stats}");
    assert_eq!(stats["messages_dropped"], 0, "{stats}");
    assert_eq!(stats["queued_messages"], 0, "{stats}");
    assert!(stats["uptime_seconds"].as_u64().is_some());
}
