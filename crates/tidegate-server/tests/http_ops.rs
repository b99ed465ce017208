//! Operations over real sockets (issue 6): `/healthz` and `/readyz` without a token, the
//! OpenAPI document checked against the live routes (every documented operation is served and
//! answers with a status and content type the document lists; every endpoint the issue names
//! is documented), `/metrics` served as Prometheus text, and the API over an `https` listener
//! with a test certificate. The Prometheus counters themselves are parsed and checked against
//! known traffic in `tests/python/test_http.py`, with the reference parser.

mod common;

use common::certs::Pki;
use common::http::{ADMIN_TOKEN, Gate, PATIENCE, PUBLISH_TOKEN, Reply};
use common::v5::Client;
use reqwest::{Method, StatusCode};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Every endpoint the issue lists, as (method, OpenAPI path).
const ISSUE_ENDPOINTS: [(&str, &str); 17] = [
    ("post", "/v1/publish"),
    ("post", "/v1/publish/batch"),
    ("get", "/v1/subscribe"),
    ("get", "/v1/poll"),
    ("get", "/v1/retained"),
    ("get", "/v1/admin/clients"),
    ("get", "/v1/admin/clients/{client_id}"),
    ("delete", "/v1/admin/clients/{client_id}"),
    ("get", "/v1/admin/clients/{client_id}/subscriptions"),
    ("get", "/v1/admin/sessions"),
    ("get", "/v1/admin/retained"),
    ("delete", "/v1/admin/retained/{topic}"),
    ("get", "/v1/admin/stats"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/v1/openapi.json"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_without_a_token() {
    let gate = Gate::start("").await;
    let reply = gate.get("/healthz", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok");
    let reply = gate.get("/readyz", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_without_a_token() {
    let gate = Gate::start("").await;
    let _client = Client::connect(gate.v5_options("metrics-1")).await;
    let reply = gate.get("/metrics", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    assert!(text.contains("# TYPE tidegate_connections gauge"), "{text}");
    assert!(
        text.contains(&format!(
            "tidegate_connections{{listener=\"{}\",protocol=\"5.0\"}} 1",
            common::http::MQTT_LISTENER
        )),
        "{text}"
    );
}

/// A concrete request for an operation of the document: path parameters filled in (a topic
/// with a `/`), the query parameters a stream or retained read needs, a JSON body for a POST.
fn concrete(path: &str, op: &Value) -> String {
    let path = path
        .replace("{client_id}", "openapi-client")
        .replace("{topic}", "openapi/topic");
    let names: Vec<&str> = op["parameters"]
        .as_array()
        .map(|params| {
            params
                .iter()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut query = Vec::new();
    if names.contains(&"filter") {
        query.push("filter=openapi%2F%23");
    }
    if names.contains(&"timeout") {
        query.push("timeout=0");
    }
    if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// The token an operation's `security` asks for, if any.
fn token_for(op: &Value) -> Option<&'static str> {
    let schemes: Vec<&String> = op["security"]
        .as_array()?
        .iter()
        .flat_map(|req| req.as_object().into_iter().flat_map(|o| o.keys()))
        .collect();
    match schemes.as_slice() {
        [] => None,
        [one] if one.as_str() == "publish_token" => Some(PUBLISH_TOKEN),
        [one] if one.as_str() == "admin_token" => Some(ADMIN_TOKEN),
        other => panic!("unexpected security schemes {other:?}"),
    }
}

/// Sends one request; an event stream is not read (it would not end), only its head.
async fn call(gate: &Gate, method: &str, uri: &str, token: Option<&str>) -> Reply {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = gate.client.request(method.clone(), gate.url(uri));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method == Method::POST {
        request = request.json(&json!({}));
    }
    let exchange = async {
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let streaming = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let body = if streaming {
            bytes::Bytes::new()
        } else {
            response.bytes().await.unwrap()
        };
        Reply {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer to {uri}"))
}

/// The part of a content type before its parameters.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// Asserts the operation documents `reply`'s status, with its content type when it has a body.
fn documented(op: &Value, reply: &Reply, what: &str) {
    let status = reply.status.as_u16().to_string();
    let response = op["responses"]
        .get(&status)
        .unwrap_or_else(|| panic!("{what}: answered {status}, which is not documented"));
    let Some(content) = response["content"].as_object() else {
        assert!(
            reply.body.is_empty(),
            "{what}: {status} has no documented body"
        );
        return;
    };
    let actual = reply.header("content-type").unwrap_or_default();
    assert!(
        content.keys().any(|k| essence(k) == essence(actual)),
        "{what}: {status} answered {actual}, documented {:?}",
        content.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_live_routes() {
    let gate = Gate::start("").await;
    let reply = gate.get("/v1/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(doc["info"]["title"], "Tidegate");
    let paths = doc["paths"].as_object().expect("paths");

    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                operations.push((method, path.clone(), op.clone()));
            }
        }
    }
    for (method, path) in ISSUE_ENDPOINTS {
        assert!(
            operations.iter().any(|(m, p, _)| *m == method && p == path),
            "{method} {path} is not in the document"
        );
    }

    for (method, path, op) in &operations {
        let uri = concrete(path, op);
        let what = format!("{method} {uri}");
        let token = token_for(op);
        if token.is_some() {
            // The route exists and guards itself: the fallback would say 404 without asking.
            let anonymous = call(&gate, method, &uri, None).await;
            assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{what}");
            assert_eq!(anonymous.error_code(), "unauthorized", "{what}");
            documented(op, &anonymous, &what);
        }
        let reply = call(&gate, method, &uri, token).await;
        assert_ne!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
        if reply.status == StatusCode::NOT_FOUND {
            // Only a handler's own 404 (nothing by that id), never the router's.
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(!message.starts_with("no endpoint"), "{what}: {message}");
        }
        documented(op, &reply, &what);
        // Methods the document does not list on this path are not served there.
        for other in METHODS {
            if paths[path].get(other).is_none() {
                let reply = call(&gate, other, &uri, token).await;
                assert_eq!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{other} {uri} is served but not documented"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_https_with_the_test_certificate() {
    let pki = Pki::new();
    let toml = format!(
        "[[listeners]]\nkind = \"tcp\"\nname = \"{}\"\nbind = \"127.0.0.1:0\"\n\n{}\n\
         [http]\npublish_tokens = [\"{PUBLISH_TOKEN}\"]\nadmin_tokens = [\"{ADMIN_TOKEN}\"]\n",
        common::http::MQTT_LISTENER,
        pki.listener("https", ""),
    );
    let mut gate = Gate::from_toml(&toml).await;
    let port = gate.server.http_addrs[0].port();
    let tls = pki.client_config(None, &[b"h2", b"http/1.1"]);
    gate.client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .connect_timeout(PATIENCE)
        .build()
        .unwrap();
    gate.base = format!("https://localhost:{port}");

    let reply = gate.get("/healthz", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok");
    let mut sub = Client::connect(gate.v5_options("https-sub")).await;
    sub.subscribe_ok("secure/#", QoS::AtLeastOnce).await;
    let matched = gate
        .publish(&json!({"topic": "secure/a", "payload": "over tls", "qos": 1}))
        .await;
    assert_eq!(matched, 1);
    assert_eq!(common::v5::text(&sub.recv().await), "over tls");
    let reply = gate.get("/v1/admin/stats", Some(PUBLISH_TOKEN)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // Plain HTTP on the https port gets no answer, and the failed handshake is counted.
    let plain = common::http::client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = gate.get("/metrics", None).await.text();
        if metrics
            .lines()
            .any(|l| l == "tidegate_tls_handshake_failures_total 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed handshake is not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
