//! The HTTP authentication hook (issue 7) against a real local HTTP server written here with
//! axum: the gateway POSTs the credentials, an allow lets the client in, a deny refuses it
//! (0x86), a hook that does not answer within the timeout refuses it (fail closed: 0x88), and a
//! cached answer is not asked for twice.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::inproc;
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5Code;
use rumqttc::v5::{ConnectionError, MqttOptions};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// What the hook saw.
#[derive(Default)]
struct Hook {
    calls: AtomicUsize,
    last_body: std::sync::Mutex<Option<Value>>,
}

/// Answers by username: `allow*` → 200 allow, `slow*` → no answer for 3 s, else 403.
async fn answer(State(hook): State<Arc<Hook>>, body: Bytes) -> (StatusCode, &'static str) {
    hook.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let username = body["username"].as_str().unwrap_or_default().to_owned();
    *hook.last_body.lock().unwrap() = Some(body);
    if username.starts_with("allow") {
        (StatusCode::OK, r#"{"result": "allow"}"#)
    } else if username.starts_with("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
        (StatusCode::OK, r#"{"result": "allow"}"#)
    } else {
        (StatusCode::FORBIDDEN, "")
    }
}

async fn start_hook() -> (SocketAddr, Arc<Hook>) {
    let hook = Arc::new(Hook::default());
    let app = axum::Router::new()
        .route("/auth", post(answer))
        .with_state(hook.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, hook)
}

fn opts(addr: SocketAddr, id: &str, user: &str, password: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(user, password);
    opts
}

async fn code(opts: MqttOptions) -> V5Code {
    match common::v5::Client::try_connect(opts).await {
        Ok(client) => {
            client.disconnect().await;
            V5Code::Success
        }
        Err(ConnectionError::ConnectionRefused(code)) => code,
        Err(other) => panic!("expected a CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn the_hook_decides_times_out_closed_and_is_cached() {
    let (hook_addr, hook) = start_hook().await;
    let config = format!(
        r#"
[[listeners]]
kind = "tcp"
bind = "127.0.0.1:0"
tenant = "ext"

[[tenants]]
id = "ext"
[tenants.http_auth]
url = "http://{hook_addr}/auth"
timeout_ms = 500
cache_secs = 60
"#
    );
    let server = inproc::start(&config).await;
    let addr = server.addrs[0];

    assert_eq!(
        code(opts(addr, "c1", "allow-1", "secret")).await,
        V5Code::Success
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
    let body = hook.last_body.lock().unwrap().clone().unwrap();
    assert_eq!(body["tenant"], "ext");
    assert_eq!(body["username"], "allow-1");
    assert_eq!(body["password"], "secret");
    assert_eq!(body["client_id"], "c1");

    // The same credentials again: the cached answer, no second call.
    assert_eq!(
        code(opts(addr, "c1", "allow-1", "secret")).await,
        V5Code::Success
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
    // Another password is another question.
    assert_eq!(
        code(opts(addr, "c1", "allow-1", "other")).await,
        V5Code::Success
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 2);

    assert_eq!(
        code(opts(addr, "c2", "mallory", "x")).await,
        V5Code::BadUserNamePassword
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3);

    // No answer within 500 ms: refused as unavailable (fail closed), not cached.
    let started = std::time::Instant::now();
    assert_eq!(
        code(opts(addr, "c3", "slow-1", "x")).await,
        V5Code::ServerUnavailable
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let failures = server.stats.auth_failures();
    assert_eq!(failures.get(&("ext".to_owned(), "hook_denied")), Some(&1));
    assert_eq!(
        failures.get(&("ext".to_owned(), "hook_unavailable")),
        Some(&1)
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_hook_fails_closed() {
    // A port nobody listens on.
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = unused.local_addr().unwrap();
    drop(unused);
    let config = format!(
        "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\n\n[[tenants]]\nid = \"ext\"\n[tenants.http_auth]\nurl = \"http://{dead}/auth\"\n"
    );
    let server = inproc::start(&config).await;
    assert_eq!(
        code(opts(server.addrs[0], "c1", "someone@ext", "x")).await,
        V5Code::ServerUnavailable
    );
    server.stop().await;
}
