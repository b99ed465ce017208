//! SSE and long-poll for tokens bound to a tenant (issues 6 and 7), end to end: an in-process
//! gateway with tenants `alpha` and `beta` declared in TOML, a `[[http.tokens]]` publish token
//! bound to each, and reqwest over real sockets. A tenant's stream reads its own tenant only
//! (the other tenant and the default one publish to the same topic meanwhile), the plain token
//! keeps reading the default tenant, a filter the tenant's ACL denies is refused with 403
//! before anything is subscribed, `Last-Event-ID` resumes inside a tenant (and a position of
//! another tenant's stream is a `restarted` reset, never its messages), and deleting a tenant
//! through the admin API ends its streams while the other tenant's go on.

mod common;

use common::http::{ADMIN_TOKEN, Gate, PUBLISH_TOKEN, Sse, config};
use common::tenants::{tenant_toml, v5_login};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Publish tokens bound to `alpha` (as `backend`) and to `beta`.
const ALPHA: &str = "alpha-stream-token";
const BETA: &str = "beta-stream-token";

/// `alpha` may read anything but `private/#`; `beta` has no rules (its whole topic space).
async fn two_tenants() -> Gate {
    let alpha_acl = "[[tenants.acl]]\naction = \"subscribe\"\nfilter = \"private/#\"\n\
                     allow = false\n[[tenants.acl]]\naction = \"all\"\nfilter = \"#\"\nallow = true\n";
    let toml = format!(
        "{}\n[[http.tokens]]\ntoken = \"{ALPHA}\"\nkind = \"publish\"\ntenant = \"alpha\"\n\
         username = \"backend\"\n\n[[http.tokens]]\ntoken = \"{BETA}\"\nkind = \"publish\"\n\
         tenant = \"beta\"\n{}{}",
        config(""),
        tenant_toml("alpha", alpha_acl),
        tenant_toml("beta", ""),
    );
    Gate::from_toml(&toml).await
}

/// Publishes `payload` to `topic` at QoS 1 with `token` (into the token's tenant).
async fn publish(gate: &Gate, token: &str, topic: &str, payload: &str) {
    gate.send(
        Method::POST,
        "/v1/publish",
        Some(token),
        Some(&json!({"topic": topic, "payload": payload, "qos": 1})),
    )
    .await
    .expect(StatusCode::OK);
}

/// The next event of `sse`, asserted to be a message; its payload.
async fn next_payload(sse: &mut Sse) -> String {
    let event = sse.next_event().await;
    let name = event.event.as_deref().unwrap_or_default();
    assert!(
        name != "reset" && name != "error",
        "expected a message, got {event:?}"
    );
    event.payload()
}

fn poll_payloads(answer: &Value) -> Vec<String> {
    answer["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("not a poll answer: {answer}"))
        .iter()
        .map(|m| m["message"]["payload"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_reads_only_its_tenant_and_the_plain_token_the_default_one() {
    let gate = two_tenants().await;
    let mut alpha = gate.subscribe_as(ALPHA, &["news/#"], None).await;
    alpha.start_id().await;
    let mut beta = gate.subscribe_as(BETA, &["news/#"], None).await;
    beta.start_id().await;
    let mut plain = gate.subscribe(&["news/#"], None).await;
    plain.start_id().await;
    let alpha_poll = gate
        .poll_as(ALPHA, &["news/#"], None, 0)
        .await
        .expect(StatusCode::OK);
    // One tap per tenant, each subscribed to `news/#` in its own tenant.
    gate.wait_subscriptions(3).await;

    publish(&gate, BETA, "news/1", "of beta").await;
    publish(&gate, ALPHA, "news/1", "of alpha").await;
    publish(&gate, PUBLISH_TOKEN, "news/1", "of default").await;

    assert_eq!(next_payload(&mut alpha).await, "of alpha");
    assert_eq!(next_payload(&mut beta).await, "of beta");
    assert_eq!(next_payload(&mut plain).await, "of default");
    let cursor = alpha_poll["cursor"].as_str().unwrap();
    let polled = gate
        .poll_as(ALPHA, &["news/#"], Some(cursor), 5)
        .await
        .expect(StatusCode::OK);
    assert_eq!(poll_payloads(&polled), ["of alpha"]);
    alpha.expect_quiet().await;
    beta.expect_quiet().await;
    plain.expect_quiet().await;

    // The taps are the gateway's own sessions, not clients of the tenants.
    let clients = gate.admin("/v1/admin/clients?tenant=alpha").await;
    assert_eq!(clients["total"], 0, "{clients}");
    let sessions = gate.admin("/v1/admin/sessions?tenant=beta").await;
    assert_eq!(sessions["total"], 0, "{sessions}");
    let list = gate.admin("/v1/admin/tenants").await;
    let tenants = list["tenants"].as_array().unwrap();
    for id in ["alpha", "beta"] {
        let tenant = tenants.iter().find(|t| t["id"] == id).unwrap();
        assert_eq!(tenant["connections"], 0, "{tenant}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_the_tenant_acl_denies_is_refused_before_anything_opens() {
    let gate = two_tenants().await;
    let response = gate
        .subscribe_response(ALPHA, &["news/#", "private/#"], None)
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_authorized", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("private/#"), "{message}");

    let poll = gate.poll_as(ALPHA, &["private/x"], None, 0).await;
    assert_eq!(poll.status, StatusCode::FORBIDDEN, "{}", poll.text());
    assert_eq!(poll.error_code(), "not_authorized");
    assert_eq!(
        gate.stats().await["subscriptions"],
        0,
        "nothing was subscribed"
    );

    // The same filter is fine for beta's token and for the plain one.
    let mut beta = gate.subscribe_as(BETA, &["private/#"], None).await;
    beta.start_id().await;
    let mut plain = gate.subscribe(&["private/#"], None).await;
    plain.start_id().await;
    gate.wait_subscriptions(2).await;
    publish(&gate, BETA, "private/x", "beta's own").await;
    assert_eq!(next_payload(&mut beta).await, "beta's own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_inside_a_tenant_and_means_nothing_in_another() {
    let gate = two_tenants().await;
    let mut alpha = gate.subscribe_as(ALPHA, &["log"], None).await;
    alpha.start_id().await;
    gate.wait_subscriptions(1).await;
    publish(&gate, ALPHA, "log", "a1").await;
    assert_eq!(next_payload(&mut alpha).await, "a1");
    let seen = alpha.last_id.clone().unwrap();
    drop(alpha);

    // While the client is away: a second alpha stream witnesses that the hub has taken in
    // alpha's message; beta's on the same topic must not show up in alpha's replay.
    let mut witness = gate.subscribe_as(ALPHA, &["log"], None).await;
    witness.start_id().await;
    publish(&gate, BETA, "log", "b1").await;
    publish(&gate, ALPHA, "log", "a2").await;
    assert_eq!(next_payload(&mut witness).await, "a2");

    let mut alpha = gate.subscribe_as(ALPHA, &["log"], Some(&seen)).await;
    assert_eq!(
        next_payload(&mut alpha).await,
        "a2",
        "exactly what it missed"
    );
    publish(&gate, ALPHA, "log", "a3").await;
    assert_eq!(next_payload(&mut alpha).await, "a3");

    // Alpha's position handed to beta's stream is from another hub: a reset, then only beta.
    let mut beta = gate.subscribe_as(BETA, &["log"], Some(&seen)).await;
    let reset = beta.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    assert_eq!(reset.json()["reset"][0]["reason"], "restarted");
    beta.expect_quiet().await;
    gate.wait_subscriptions(2).await;
    publish(&gate, BETA, "log", "b2").await;
    assert_eq!(next_payload(&mut beta).await, "b2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_ends_its_streams_and_leaves_the_others() {
    let gate = two_tenants().await;
    let mut alpha = gate.subscribe_as(ALPHA, &["t"], None).await;
    alpha.start_id().await;
    let mut beta = gate.subscribe_as(BETA, &["t"], None).await;
    beta.start_id().await;
    gate.wait_subscriptions(2).await;

    gate.send(
        Method::DELETE,
        "/v1/admin/tenants/alpha",
        Some(ADMIN_TOKEN),
        None,
    )
    .await
    .expect(StatusCode::OK);

    let error = alpha.next_event().await;
    assert_eq!(error.event.as_deref(), Some("error"), "{error:?}");
    assert_eq!(error.json()["error"]["code"], "unavailable");
    assert!(
        alpha
            .next_block_within(common::http::PATIENCE)
            .await
            .is_none(),
        "the stream ends after the error event"
    );
    // The token's tenant is gone: nothing opens for it any more.
    let poll = gate.poll_as(ALPHA, &["t"], None, 0).await;
    assert_eq!(poll.status, StatusCode::FORBIDDEN, "{}", poll.text());

    publish(&gate, BETA, "t", "still here").await;
    assert_eq!(next_payload(&mut beta).await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_streams_do_not_use_up_its_connection_quota() {
    // `alpha` admits one connection; its SSE stream (the gateway's own tap in the tenant) must
    // not be it.
    let toml = format!(
        "{}\n[[http.tokens]]\ntoken = \"{ALPHA}\"\nkind = \"publish\"\ntenant = \"alpha\"\n{}",
        config(""),
        tenant_toml(
            "alpha",
            "[tenants.quotas]\nmax_connections = 1\nmax_sessions = 1\n"
        ),
    );
    let gate = Gate::from_toml(&toml).await;
    let mut stream = gate.subscribe_as(ALPHA, &["news/#"], None).await;
    stream.start_id().await;

    let phone = common::v5::Client::connect(v5_login(gate.mqtt, "phone", "alpha")).await;
    let second = common::v5::Client::try_connect(v5_login(gate.mqtt, "phone2", "alpha")).await;
    assert!(second.is_err(), "the quota still holds for clients");
    let list = gate
        .send(Method::GET, "/v1/admin/tenants", Some(ADMIN_TOKEN), None)
        .await
        .expect(StatusCode::OK);
    let alpha = list["tenants"]
        .as_array()
        .and_then(|all| all.iter().find(|t| t["id"] == "alpha"))
        .unwrap_or_else(|| panic!("no alpha in {list}"));
    assert_eq!(
        alpha["connections"], 1,
        "the stream's tap is not a client: {alpha}"
    );

    publish(&gate, ALPHA, "news/1", "one").await;
    assert_eq!(next_payload(&mut stream).await, "one");
    drop(phone);
}
