//! Tenants managed live (issue 7) end to end: `/v1/admin/tenants` over real HTTP against an
//! in-process gateway, MQTT clients connecting into a tenant created a moment before and
//! disconnected with 0x87 when it is deleted, API changes surviving a restart (and winning over
//! the file's tenants), and `tidegate tenant ...` run as the real binary against a live server.

mod common;

use common::http::{ADMIN_TOKEN, Gate, PUBLISH_TOKEN, Reply, client, config};
use common::v5::{Client, filter, text};
use reqwest::{Method, StatusCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, PubAckReason, SubscribeReasonCode,
};
use rumqttc::v5::{ConnectionError, MqttOptions};
use serde_json::{Value, json};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tidegate_server::{Config, Server, ServerError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The password of every test user.
const PASSWORD: &str = "s3cret-pw";

/// An argon2id hash of [`PASSWORD`], made once (it costs a noticeable time in a debug build).
fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tidegate_auth::hash_password(PASSWORD.as_bytes()).unwrap())
}

/// Tenant `id` with user `phone1`, everything allowed under `devices/`.
fn tenant(id: &str) -> Value {
    json!({
        "id": id,
        "users": [{"username": "phone1", "password_hash": hash()}],
        "acl": [{"action": "all", "filter": "devices/#", "allow": true}],
        "quotas": {"max_connections": 100},
    })
}

async fn admin(gate: &Gate, method: Method, path: &str, body: Option<&Value>) -> Reply {
    gate.send(method, path, Some(ADMIN_TOKEN), body).await
}

/// The ids of `GET /v1/admin/tenants`.
async fn tenant_ids(gate: &Gate) -> Vec<String> {
    let list = admin(gate, Method::GET, "/v1/admin/tenants", None)
        .await
        .expect(StatusCode::OK);
    list["tenants"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// MQTT 5 options for `user@tenant` with [`PASSWORD`] against `mqtt`.
fn login(mqtt: SocketAddr, client_id: &str, username: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", mqtt.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(username, PASSWORD);
    opts
}

/// The CONNACK code of a refused connection.
fn refusal(e: ConnectionError) -> ConnectReturnCode {
    match e {
        ConnectionError::ConnectionRefused(code) => code,
        other => panic!("expected a refused CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn tenants_are_created_read_replaced_and_deleted_over_http() {
    let gate = Gate::start("").await;
    assert_eq!(
        tenant_ids(&gate).await,
        ["default"],
        "no [[tenants]]: the default one"
    );

    let created = admin(
        &gate,
        Method::POST,
        "/v1/admin/tenants",
        Some(&tenant("acme")),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(created["users"][0]["password_hash"], "***");
    let again = admin(
        &gate,
        Method::POST,
        "/v1/admin/tenants",
        Some(&tenant("acme")),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "conflict");

    let list = admin(&gate, Method::GET, "/v1/admin/tenants", None)
        .await
        .expect(StatusCode::OK);
    let acme = &list["tenants"][0];
    assert_eq!(acme["id"], "acme");
    assert_eq!(acme["source"], "api");
    assert_eq!(acme["auth_methods"], json!(["password"]));
    assert_eq!(acme["connections"], 0);
    assert_eq!(list["tenants"][1]["source"], "config");
    assert!(!list.to_string().contains("argon2"), "no hash in the list");

    let shown = admin(&gate, Method::GET, "/v1/admin/tenants/acme", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown["users"][0]["password_hash"], "***");
    assert_eq!(shown["quotas"]["max_connections"], 100);

    let mut changed = tenant("acme");
    changed["allow_anonymous"] = json!(true);
    admin(&gate, Method::PUT, "/v1/admin/tenants/acme", Some(&changed))
        .await
        .expect(StatusCode::OK);
    let shown = admin(&gate, Method::GET, "/v1/admin/tenants/acme", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown["allow_anonymous"], true);

    let mut bad = tenant("broken");
    bad["users"][0]["password_hash"] = json!("plain-text");
    let r = admin(&gate, Method::POST, "/v1/admin/tenants", Some(&bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "invalid_tenant");
    assert!(r.text().contains("users[0].password_hash"), "{}", r.text());

    let r = gate
        .send(Method::GET, "/v1/admin/tenants", Some(PUBLISH_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let deleted = admin(&gate, Method::DELETE, "/v1/admin/tenants/acme", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(deleted["disconnected"], 0);
    for method in [Method::GET, Method::DELETE] {
        let r = admin(&gate, method, "/v1/admin/tenants/acme", None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let r = admin(
        &gate,
        Method::PUT,
        "/v1/admin/tenants/acme",
        Some(&tenant("acme")),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(tenant_ids(&gate).await, ["default"]);

    let doc = gate
        .get("/v1/openapi.json", None)
        .await
        .expect(StatusCode::OK);
    for (method, path) in [
        ("get", "/v1/admin/tenants"),
        ("post", "/v1/admin/tenants"),
        ("get", "/v1/admin/tenants/{tenant_id}"),
        ("put", "/v1/admin/tenants/{tenant_id}"),
        ("delete", "/v1/admin/tenants/{tenant_id}"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
}

#[tokio::test]
async fn a_tenant_created_live_admits_its_users_and_its_deletion_disconnects_them() {
    // A file tenant without anonymous access, so no implicit `default` tenant takes in the
    // clients of a tenant that does not exist.
    let gate = gate_with_other().await;
    // Before it exists, `phone1@acme` has nowhere to go.
    let early = Client::try_connect(login(gate.mqtt, "early", "phone1@acme")).await;
    assert!(early.is_err(), "a tenant that does not exist admits nobody");

    create_acme(&gate).await;
    let mut phone = Client::connect(login(gate.mqtt, "phone", "phone1@acme")).await;
    let wrong = {
        let mut opts = login(gate.mqtt, "wrong", "phone1@acme");
        opts.set_credentials("phone1@acme", "not the password");
        Client::try_connect(opts).await.err().map(refusal)
    };
    assert_eq!(wrong, Some(ConnectReturnCode::BadUserNamePassword));

    let list = admin(&gate, Method::GET, "/v1/admin/tenants", None)
        .await
        .expect(StatusCode::OK);
    let acme = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(acme["connections"], 1, "{acme}");

    let deleted = admin(&gate, Method::DELETE, "/v1/admin/tenants/acme", None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(deleted["disconnected"], 1);
    assert_eq!(
        phone.server_disconnect().await,
        DisconnectReasonCode::NotAuthorized
    );
    let again = Client::try_connect(login(gate.mqtt, "phone", "phone1@acme")).await;
    assert!(again.is_err(), "a deleted tenant admits nobody");
}

/// A gateway with one file tenant without anonymous access, so no implicit `default` tenant
/// takes in the clients of a tenant that does not exist.
async fn gate_with_other() -> Gate {
    Gate::from_toml(&format!("{}\n[[tenants]]\nid = \"other\"\n", config(""))).await
}

/// Creates `acme` ([`tenant`]) through the API.
async fn create_acme(gate: &Gate) {
    admin(
        gate,
        Method::POST,
        "/v1/admin/tenants",
        Some(&tenant("acme")),
    )
    .await
    .expect(StatusCode::CREATED);
}

/// [`gate_with_other`] with `acme` created through the API.
async fn gate_with_acme() -> Gate {
    let gate = gate_with_other().await;
    create_acme(&gate).await;
    gate
}

/// Replaces `acme` with `config` through the API.
async fn replace_acme(gate: &Gate, config: &Value) {
    admin(gate, Method::PUT, "/v1/admin/tenants/acme", Some(config))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_tenant_replaced_live_changes_the_quotas_its_connected_clients_meet() {
    let gate = gate_with_acme().await;
    let mut phone = Client::connect(login(gate.mqtt, "phone", "phone1@acme")).await;
    phone.subscribe_ok("devices/a", QoS::AtMostOnce).await;

    // One subscription per client from now on: the client connected before the change meets
    // it on its next SUBSCRIBE, without reconnecting.
    let mut changed = tenant("acme");
    changed["quotas"]["max_subscriptions_per_client"] = json!(1);
    replace_acme(&gate, &changed).await;
    let codes = phone
        .subscribe_filters(vec![filter("devices/b", QoS::AtMostOnce)], None)
        .await;
    assert_eq!(codes, vec![SubscribeReasonCode::QuotaExceeded]);

    // And back: the limit lifted, the same connection subscribes again.
    replace_acme(&gate, &tenant("acme")).await;
    phone.subscribe_ok("devices/b", QoS::AtMostOnce).await;
}

#[tokio::test]
async fn a_tenant_acl_replaced_live_applies_to_connected_clients() {
    let gate = gate_with_acme().await;
    let mut watcher = Client::connect(login(gate.mqtt, "watcher", "phone1@acme")).await;
    watcher.subscribe_ok("devices/a/#", QoS::AtMostOnce).await;
    watcher.subscribe_ok("devices/b/#", QoS::AtMostOnce).await;
    let mut phone = Client::connect(login(gate.mqtt, "phone", "phone1@acme")).await;
    assert_eq!(
        phone.publish_acked("devices/a/1", false, b"before").await,
        PubAckReason::Success
    );
    assert_eq!(text(&watcher.recv().await), "before");

    // Only devices/b/# from now on, for the clients already connected too.
    let mut narrowed = tenant("acme");
    narrowed["acl"] = json!([{"action": "all", "filter": "devices/b/#", "allow": true}]);
    replace_acme(&gate, &narrowed).await;
    assert_eq!(
        phone.publish_acked("devices/a/1", false, b"denied").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        phone.publish_acked("devices/b/1", false, b"allowed").await,
        PubAckReason::Success
    );
    assert_eq!(text(&watcher.recv().await), "allowed");
    let codes = watcher
        .subscribe_filters(vec![filter("devices/a/2", QoS::AtMostOnce)], None)
        .await;
    assert_eq!(codes, vec![SubscribeReasonCode::NotAuthorized]);
    // The watcher's devices/a/# went with the change: one denied subscription for it, one for
    // the SUBSCRIBE just refused.
    let text = common::tenants::metrics(&gate).await;
    let denied = common::tenants::sample(
        &text,
        "tidegate_tenant_denied_total",
        "tenant=\"acme\",action=\"subscribe\"",
    );
    assert_eq!(denied, Some(2), "{text}");
}

/// A gateway over a `data_dir` that outlives it, so a second one can start where it stopped.
struct Persistent {
    gate_base: String,
    stop: Option<oneshot::Sender<()>>,
    serve: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Persistent {
    async fn start(data: &Path, extra_toml: &str) -> Persistent {
        let toml = format!("{}\n{extra_toml}", config(""));
        let mut config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        config.data_dir = data.to_path_buf();
        let server = Server::bind(config).await.unwrap();
        let http = server.http_addrs()[0];
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Persistent {
            gate_base: format!("http://{http}"),
            stop: Some(stop),
            serve: Some(serve),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut request = client()
            .request(method, format!("{}{path}", self.gate_base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serve) = self.serve.take() {
            tokio::time::timeout(Duration::from_secs(10), serve)
                .await
                .expect("serve returns")
                .unwrap()
                .unwrap();
        }
    }
}

#[tokio::test]
async fn api_changes_survive_a_restart_and_win_over_the_file() {
    let data = tempfile::tempdir().unwrap();
    // The file declares `file-a` (anonymous) and `file-b`.
    let file = "[[tenants]]\nid = \"file-a\"\nallow_anonymous = true\n\n\
                [[tenants]]\nid = \"file-b\"\n";
    let first = Persistent::start(data.path(), file).await;
    let (status, _) = first
        .send(Method::POST, "/v1/admin/tenants", Some(&tenant("api-c")))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut replaced = tenant("file-a");
    replaced["allow_anonymous"] = json!(false);
    let (status, _) = first
        .send(Method::PUT, "/v1/admin/tenants/file-a", Some(&replaced))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = first
        .send(Method::DELETE, "/v1/admin/tenants/file-b", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    first.stop().await;

    let second = Persistent::start(data.path(), file).await;
    let (status, list) = second.send(Method::GET, "/v1/admin/tenants", None).await;
    assert_eq!(status, StatusCode::OK);
    let summary: Vec<(String, String)> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("api-c".to_owned(), "api".to_owned()),
            ("file-a".to_owned(), "api".to_owned()),
        ],
        "file-b stays deleted, file-a keeps the API's configuration"
    );
    let (_, shown) = second
        .send(Method::GET, "/v1/admin/tenants/file-a", None)
        .await;
    assert_eq!(shown["allow_anonymous"], false);
    assert_eq!(shown["users"][0]["password_hash"], "***");
    second.stop().await;
}

/// Runs the built `tidegate` binary with `args`, feeding `stdin`.
fn tidegate(args: &[&str], token: Option<&str>, stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    command
        .args(args)
        .env_remove("TIDEGATE_ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("TIDEGATE_ADMIN_TOKEN", token);
    }
    let mut child = command.spawn().expect("run tidegate");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_tenants_of_a_live_server() {
    let gate = Gate::start("").await;
    let url = gate.base.clone();
    let toml = format!(
        "id = \"cli\"\n[[users]]\nusername = \"phone1\"\npassword_hash = \"{}\"\n",
        hash()
    );
    let run = |args: Vec<String>, token: Option<&'static str>, stdin: String| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tidegate(&args, token, &stdin)
        })
    };
    let args = |list: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        v.extend(["--url".to_owned(), url.clone()]);
        v
    };

    let out = run(args(&["tenant", "create"]), Some(ADMIN_TOKEN), toml)
        .await
        .unwrap();
    assert_eq!(stdout_json(&out)["users"][0]["password_hash"], "***");

    let mut with_token = args(&["tenant", "list"]);
    with_token.extend(["--token".to_owned(), ADMIN_TOKEN.to_owned()]);
    let out = run(with_token, None, String::new()).await.unwrap();
    let ids: Vec<String> = stdout_json(&out)["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["cli", "default"]);

    let update = "{\"allow_anonymous\": true}".to_owned();
    let out = run(
        args(&["tenant", "update", "cli", "-"]),
        Some(ADMIN_TOKEN),
        update,
    )
    .await
    .unwrap();
    assert_eq!(stdout_json(&out)["allow_anonymous"], true);
    let out = run(
        args(&["tenant", "show", "cli"]),
        Some(ADMIN_TOKEN),
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(stdout_json(&out)["id"], "cli");
    let out = run(
        args(&["tenant", "delete", "cli"]),
        Some(ADMIN_TOKEN),
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(stdout_json(&out)["disconnected"], 0);

    let out = run(
        args(&["tenant", "show", "cli"]),
        Some(ADMIN_TOKEN),
        String::new(),
    )
    .await
    .unwrap();
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let out = run(
        args(&["tenant", "list"]),
        Some("wrong-token"),
        String::new(),
    )
    .await
    .unwrap();
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = run(args(&["tenant", "list"]), None, String::new())
        .await
        .unwrap();
    assert!(
        stderr(&out).contains("TIDEGATE_ADMIN_TOKEN"),
        "{}",
        stderr(&out)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = vec![
        "tenant".to_owned(),
        "list".to_owned(),
        "--url".to_owned(),
        format!("http://{closed}"),
    ];
    let out = run(refused, Some(ADMIN_TOKEN), String::new())
        .await
        .unwrap();
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
}
