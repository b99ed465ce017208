//! Security and bad input over real sockets (issue 6): 401 with `WWW-Authenticate` without a
//! valid bearer token, 403 for a token of the other kind, 400 for bad JSON and invalid topics,
//! 413 for a body over `http.max_body_bytes` (a declared length is refused before any byte of
//! the body is sent), 429 with `Retry-After` over `http.requests_per_second`; every error a
//! JSON `{"error": {"code", "message"}}`. Nothing refused reaches an MQTT subscriber.

mod common;

use bytes::Bytes;
use common::http::{ADMIN_TOKEN, Gate, PATIENCE, PUBLISH_TOKEN, Reply};
use common::v5::Client;
use reqwest::{Method, StatusCode};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Asserts a JSON error answer with `status` and `code`.
fn assert_error(reply: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    assert_eq!(reply.error_code(), code, "{what}");
    let body = reply.json();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

/// One request of every authenticated kind.
const GUARDED: [(&str, &str); 6] = [
    ("POST", "/v1/publish"),
    ("GET", "/v1/subscribe?filter=a"),
    ("GET", "/v1/poll?filter=a&timeout=0"),
    ("GET", "/v1/retained?filter=a"),
    ("GET", "/v1/admin/stats"),
    ("DELETE", "/v1/admin/clients/someone"),
];

async fn call(gate: &Gate, method: &str, path: &str, auth: Option<&str>) -> Reply {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = gate.client.request(method.clone(), gate.url(path));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if method == Method::POST {
        request = request.json(&json!({"topic": "guarded", "payload": "x"}));
    }
    common::http::read(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_every_guarded_endpoint_is_401() {
    let gate = Gate::start("").await;
    let mut sub = Client::connect(gate.v5_options("auth-sub")).await;
    sub.subscribe_ok("guarded", QoS::AtMostOnce).await;
    for (method, path) in GUARDED {
        for auth in [
            None,
            Some("Bearer wrong-token".to_owned()),
            Some(format!("Basic {PUBLISH_TOKEN}")),
            Some("Bearer".to_owned()),
        ] {
            let what = format!("{method} {path} with {auth:?}");
            let reply = call(&gate, method, path, auth.as_deref()).await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized", &what);
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"tidegate\""),
                "{what}"
            );
        }
    }
    sub.expect_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_the_other_kind_is_403() {
    let gate = Gate::start("").await;
    let mut sub = Client::connect(gate.v5_options("kind-sub")).await;
    sub.subscribe_ok("guarded", QoS::AtMostOnce).await;
    for (method, path) in GUARDED {
        let token = if path.starts_with("/v1/admin") {
            PUBLISH_TOKEN
        } else {
            ADMIN_TOKEN
        };
        let what = format!("{method} {path}");
        let reply = call(&gate, method, path, Some(&format!("Bearer {token}"))).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "forbidden", &what);
    }
    sub.expect_no_publish().await;
    // The operations endpoints take no token at all.
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        assert_eq!(gate.get(path, None).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_and_invalid_topics_are_400_naming_what_is_wrong() {
    let gate = Gate::start("").await;
    let mut sub = Client::connect(gate.v5_options("bad-sub")).await;
    sub.subscribe_ok("#", QoS::AtMostOnce).await;
    let raw = |body: &'static str, content_type: &'static str| {
        gate.client
            .post(gate.url("/v1/publish"))
            .bearer_auth(PUBLISH_TOKEN)
            .header("content-type", content_type)
            .body(body)
    };
    let reply = common::http::read(raw("{\"topic\": ", "application/json")).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "truncated JSON",
    );
    let reply = common::http::read(raw("[1, 2]", "application/json")).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "not an object",
    );
    let reply = common::http::read(raw(r#"{"topic": "a", "payload": "x"}"#, "text/plain")).await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "text/plain body",
    );
    for (body, code, field) in [
        (
            json!({"topic": "a/+/b", "payload": "x"}),
            "invalid_topic",
            "topic",
        ),
        (
            json!({"topic": "a/#", "payload": "x"}),
            "invalid_topic",
            "topic",
        ),
        (
            json!({"topic": "", "payload": "x"}),
            "invalid_topic",
            "topic",
        ),
        (
            json!({"topic": "a", "payload": "x", "qos": 3}),
            "invalid_qos",
            "qos",
        ),
        (
            json!({"topic": "a", "payload": "x", "colour": "red"}),
            "bad_request",
            "colour",
        ),
        (
            json!({"topic": "a", "payload": "x", "properties": {"response_topic": "r/#"}}),
            "invalid_topic",
            "properties.response_topic",
        ),
    ] {
        let reply = gate.post("/v1/publish", &body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, code, &body.to_string());
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(field), "{body}: {message}");
    }
    // Retained reads check their filter the same way.
    let reply = gate
        .get("/v1/retained?filter=a%2F%23%2Fb", Some(PUBLISH_TOKEN))
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_topic",
        "retained filter",
    );
    // A well-formed topic the engine refuses by its rules: $SYS is the gateway's own.
    let reply = gate
        .post("/v1/publish", &json!({"topic": "$SYS/x", "payload": "x"}))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert_eq!(reply.error_code(), "not_authorized");
    sub.expect_no_publish().await;

    // Unknown routes and methods answer in JSON too.
    let reply = gate.get("/v1/nothing", Some(PUBLISH_TOKEN)).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", "unknown path");
    let reply = gate.get("/v1/publish", Some(PUBLISH_TOKEN)).await;
    assert_error(
        &reply,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "GET /v1/publish",
    );
    assert_eq!(reply.header("allow"), Some("POST"));
}

/// Reads an HTTP/1.1 response head from `socket`; its status code.
async fn response_status(socket: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, socket.read(&mut buf))
            .await
            .expect("no answer before the body was sent")
            .unwrap();
        assert!(
            n > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_before_it_is_read() {
    let gate = Gate::start("max_body_bytes = 1024").await;
    let mut sub = Client::connect(gate.v5_options("big-sub")).await;
    sub.subscribe_ok("big", QoS::AtMostOnce).await;

    // A declared length over the limit is answered at once: the body is never sent.
    let mut socket = TcpStream::connect(gate.server.http_addrs[0]).await.unwrap();
    let head = format!(
        "POST /v1/publish HTTP/1.1\r\nHost: tidegate\r\nAuthorization: Bearer {PUBLISH_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let (status, text) = response_status(&mut socket).await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );

    // A body with a length just over the limit, and a chunked one without a length.
    let payload = "x".repeat(1024);
    let reply = gate
        .post("/v1/publish", &json!({"topic": "big", "payload": payload}))
        .await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "declared length",
    );
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..8)
        .map(|i| {
            Ok(Bytes::from(if i == 0 {
                "{\"topic\": \"big\", \"payload\": \"".to_owned()
            } else {
                "y".repeat(200)
            }))
        })
        .collect();
    let request = gate
        .client
        .post(gate.url("/v1/publish"))
        .bearer_auth(PUBLISH_TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )));
    let reply = common::http::read(request).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "chunked body",
    );
    sub.expect_no_publish().await;

    // Within the limit, the same endpoint publishes.
    let matched = gate
        .publish(&json!({"topic": "big", "payload": "x".repeat(900)}))
        .await;
    assert_eq!(matched, 1);
    assert_eq!(sub.recv().await.payload.len(), 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_gets_429_with_retry_after() {
    let gate = Gate::start("requests_per_second = 1\nburst = 1").await;
    // One second of rate plus the burst: two pass at once; a tight loop soon goes over.
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..20 {
        let reply = gate.get("/v1/admin/stats", Some(ADMIN_TOKEN)).await;
        statuses.push(reply.status);
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(reply);
            break;
        }
    }
    let reply = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert_eq!(statuses[..2], [StatusCode::OK, StatusCode::OK]);
    assert_error(
        &reply,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "over the rate",
    );
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");

    // Publish tokens have a bucket of their own.
    let matched = gate
        .publish(&json!({"topic": "rate/x", "payload": "x"}))
        .await;
    assert_eq!(matched, 0);

    // The admin token passes again once its bucket refills.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = gate.get("/v1/admin/stats", Some(ADMIN_TOKEN)).await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "still limited");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_tokens_from_one_address_is_rate_limited() {
    let gate = Gate::start("requests_per_second = 1\nburst = 1").await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let reply = gate
            .get("/v1/admin/stats", Some(&format!("guess-{i}")))
            .await;
        statuses.push(reply.status);
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.error_code(), "rate_limited");
            assert!(reply.header("retry-after").is_some());
            break;
        }
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // A valid token from the same address is not held back by the failures.
    let reply = gate.get("/v1/admin/stats", Some(ADMIN_TOKEN)).await;
    assert_eq!(reply.status, StatusCode::OK);
}
