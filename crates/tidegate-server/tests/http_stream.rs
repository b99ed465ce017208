//! Receiving over HTTP end to end (issue 6): MQTT publications read as Server-Sent Events
//! (`GET /v1/subscribe`) and by long-poll (`GET /v1/poll`) with reqwest over real sockets;
//! resuming a dropped stream with `Last-Event-ID` without loss or duplicates, the explicit
//! `reset` when the bounded history no longer covers the gap, and long-poll cursors.
//!
//! The hub subscribes a new filter through the engine after the stream has opened, so each test
//! waits for the engine's subscription count before publishing. Where a test needs the hub to
//! have taken in messages published while a reader was away, a second stream on the same filter
//! (the witness) receiving them is the proof.

mod common;

use common::http::{Gate, PATIENCE, Sse, SseEvent, payloads};
use common::v5::Client;
use reqwest::StatusCode;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The next `n` events of `sse`, each asserted to be a message (not `reset` or `error`).
async fn messages(sse: &mut Sse, n: usize) -> Vec<SseEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let event = sse.next_event().await;
        let name = event.event.as_deref().unwrap_or_default();
        assert!(
            name != "reset" && name != "error",
            "expected a message, got {event:?}"
        );
        assert!(
            event.id.is_some(),
            "a message event carries an id: {event:?}"
        );
        out.push(event);
    }
    out
}

/// Publishes `payloads` to `topic` over HTTP at QoS 1.
async fn publish_all(gate: &Gate, topic: &str, payloads: &[&str]) {
    for payload in payloads {
        gate.publish(&json!({"topic": topic, "payload": payload, "qos": 1}))
            .await;
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publications_arrive_as_server_sent_events() {
    let gate = Gate::start("").await;
    let mut sse = gate.subscribe(&["sse/a", "sse/b/#"], None).await;
    let start = sse.start_id().await;
    gate.wait_subscriptions(2).await;

    let mut publisher = Client::connect(gate.v5_options("sse-pub")).await;
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..PublishProperties::default()
    };
    publisher
        .publish_props("sse/a", QoS::AtLeastOnce, false, b"hello", Some(props))
        .await;
    let event = sse.next_event().await;
    assert_eq!(event.event.as_deref(), Some("sse/a"), "event = topic");
    let id = event.id.clone().unwrap();
    assert_ne!(id, start, "each event has its own position");
    let data = event.json();
    assert_eq!(data["topic"], "sse/a");
    assert_eq!(data["payload"], "hello");
    assert_eq!(data["qos"], 1);
    assert_eq!(data["retain"], false);
    assert_eq!(data["properties"]["content_type"], "text/plain");
    assert_eq!(data["properties"]["user_properties"], json!([["k", "v"]]));

    // Binary payloads come as base64; QoS 0 keeps its QoS; a topic of no filter is not sent.
    publisher
        .publish("sse/nothing", QoS::AtLeastOnce, false, b"no")
        .await;
    publisher
        .publish("sse/b/c/d", QoS::AtMostOnce, false, &[0xff, 0xfe])
        .await;
    let event = sse.next_event().await;
    assert_eq!(event.event.as_deref(), Some("sse/b/c/d"));
    let data = event.json();
    assert_eq!(data["payload_base64"], "//4=");
    assert!(data.get("payload").is_none());
    assert_eq!(data["qos"], 0);

    // An MQTT 3.1.1 publisher's message arrives the same way.
    let mut v4 = common::v4::Client::connect(gate.v4_options("sse-v4")).await;
    v4.publish("sse/a", rumqttc::QoS::ExactlyOnce, false, b"from 3.1.1")
        .await;
    let event = sse.next_event().await;
    assert_eq!(event.payload(), "from 3.1.1");
    assert_eq!(event.json()["qos"], 2);
    sse.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_matching_two_filters_of_a_stream_comes_once() {
    let gate = Gate::start("").await;
    let mut sse = gate.subscribe(&["dup/#", "dup/+/x"], None).await;
    sse.start_id().await;
    gate.wait_subscriptions(2).await;
    publish_all(&gate, "dup/a/x", &["both"]).await;
    publish_all(&gate, "dup/a/y", &["one"]).await;
    let got = messages(&mut sse, 2).await;
    assert_eq!(payloads(&got), strings(&["both", "one"]));
    sse.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_heartbeat_comments() {
    let gate = Gate::start("heartbeat_secs = 1").await;
    let mut sse = gate.subscribe(&["quiet/#"], None).await;
    sse.start_id().await;
    let block = sse
        .next_block_within(PATIENCE)
        .await
        .expect("the stream stays open");
    assert_eq!(block.comments, ["heartbeat"], "{block:?}");
    assert_eq!(block.data, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_resumes_with_last_event_id_without_loss_or_duplicates() {
    let gate = Gate::start("").await;
    let filter = "resume/#";
    let mut witness = gate.subscribe(&[filter], None).await;
    witness.start_id().await;
    gate.wait_subscriptions(1).await;
    let mut reader = gate.subscribe(&[filter], None).await;
    let first_start = reader.start_id().await;

    publish_all(&gate, "resume/t", &["m1", "m2", "m3"]).await;
    let got = messages(&mut reader, 3).await;
    assert_eq!(payloads(&got), strings(&["m1", "m2", "m3"]));
    let last = reader.last_id.clone().unwrap();
    assert_eq!(got[2].id.as_deref(), Some(last.as_str()));
    assert_eq!(
        payloads(&messages(&mut witness, 3).await),
        strings(&["m1", "m2", "m3"])
    );
    drop(reader);

    // While the reader is away, from both kinds of publisher.
    publish_all(&gate, "resume/t", &["m4", "m5"]).await;
    let mut mqtt = Client::connect(gate.v5_options("resume-pub")).await;
    mqtt.publish("resume/u", QoS::AtLeastOnce, false, b"m6")
        .await;
    mqtt.publish("resume/u", QoS::AtMostOnce, false, b"m7")
        .await;
    let missed = ["m4", "m5", "m6", "m7"];
    assert_eq!(payloads(&messages(&mut witness, 4).await), strings(&missed));

    let mut back = gate.subscribe(&[filter], Some(&last)).await;
    let replayed = messages(&mut back, 4).await;
    assert_eq!(payloads(&replayed), strings(&missed), "no reset, no loss");
    // Live delivery continues right after the replay.
    publish_all(&gate, "resume/t", &["m8"]).await;
    assert_eq!(payloads(&messages(&mut back, 1).await), strings(&["m8"]));
    back.expect_quiet().await;
    let positions: Vec<&str> = replayed.iter().filter_map(|e| e.id.as_deref()).collect();
    let mut distinct = positions.clone();
    distinct.dedup();
    assert_eq!(positions, distinct, "every event has its own id");
    assert!(!positions.contains(&last.as_str()));

    // The id a fresh stream starts with is a position too: from it, everything since.
    let mut from_start = gate.subscribe(&[filter], Some(&first_start)).await;
    let all = messages(&mut from_start, 8).await;
    assert_eq!(
        payloads(&all),
        strings(&["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"])
    );
    from_start.expect_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_longer_than_the_history_is_announced_with_a_reset_event() {
    let gate = Gate::start("history_size = 3").await;
    let filter = "reset/#";
    let mut witness = gate.subscribe(&[filter], None).await;
    witness.start_id().await;
    gate.wait_subscriptions(1).await;
    let mut reader = gate.subscribe(&[filter], None).await;
    reader.start_id().await;
    publish_all(&gate, "reset/t", &["m1"]).await;
    messages(&mut reader, 1).await;
    messages(&mut witness, 1).await;
    let last = reader.last_id.clone().unwrap();
    drop(reader);

    let missed = ["m2", "m3", "m4", "m5", "m6", "m7"];
    publish_all(&gate, "reset/t", &missed).await;
    assert_eq!(payloads(&messages(&mut witness, 6).await), strings(&missed));

    let mut back = gate.subscribe(&[filter], Some(&last)).await;
    let reset = back.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    assert_eq!(
        reset.json(),
        json!({"reset": [{"filter": filter, "reason": "evicted"}]})
    );
    // What the history still holds follows the reset.
    assert_eq!(
        payloads(&messages(&mut back, 3).await),
        strings(&["m5", "m6", "m7"])
    );
    back.expect_quiet().await;

    // The same gap read by long-poll: the answer names the reset.
    let answer = gate.poll(filter, Some(&last), 0).await;
    assert_eq!(
        answer["reset"],
        json!([{"filter": filter, "reason": "evicted"}])
    );
    assert_eq!(poll_payloads(&answer), strings(&["m5", "m6", "m7"]));

    // A position from another run of the hub cannot be mapped: a reset, never a guess.
    let foreign = format!("{}-1", foreign_epoch(&last));
    let mut other = gate.subscribe(&[filter], Some(&foreign)).await;
    let reset = other.next_event().await;
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(
        reset.json(),
        json!({"reset": [{"filter": filter, "reason": "restarted"}]})
    );

    // A malformed Last-Event-ID is a 400, not a silent fresh start.
    let reply = common::http::read(
        gate.client
            .get(gate.url("/v1/subscribe?filter=reset/%23"))
            .bearer_auth(common::http::PUBLISH_TOKEN)
            .header("Last-Event-ID", "not-a-position"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "bad_request");
}

/// An epoch (hex) other than the one of `position`.
fn foreign_epoch(position: &str) -> String {
    let epoch = position.split('-').next().unwrap();
    let n = u64::from_str_radix(epoch, 16).unwrap();
    format!("{:x}", n.wrapping_add(1))
}

/// The text payloads of a poll answer.
fn poll_payloads(answer: &Value) -> Vec<String> {
    answer["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages: {answer}"))
        .iter()
        .map(|m| m["message"]["payload"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_cursors_continue_where_the_last_answer_ended() {
    let gate = Gate::start("").await;
    let filter = "lp/#";
    // No cursor: from now. Nothing is there, and `timeout=0` answers at once.
    let first = gate.poll(filter, None, 0).await;
    assert_eq!(first["messages"], json!([]));
    let start = first["cursor"].as_str().unwrap().to_owned();
    gate.wait_subscriptions(1).await;

    let mut publisher = common::v4::Client::connect(gate.v4_options("lp-pub")).await;
    let sent = ["p1", "p2", "p3", "p4", "p5"];
    for p in sent {
        publisher
            .publish("lp/t", rumqttc::QoS::AtLeastOnce, false, p.as_bytes())
            .await;
    }
    // The hub may hand them over in several answers: follow the cursor until all are in.
    let mut got = Vec::new();
    let mut ids = Vec::new();
    let mut cursor = start.clone();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < sent.len() {
        assert!(Instant::now() < deadline, "only {got:?} arrived");
        let answer = gate.poll(filter, Some(&cursor), 5).await;
        assert!(answer.get("reset").is_none(), "{answer}");
        for m in answer["messages"].as_array().unwrap() {
            ids.push(m["id"].as_str().unwrap().to_owned());
            assert_eq!(m["message"]["topic"], "lp/t");
            assert_eq!(m["message"]["qos"], 1);
        }
        got.extend(poll_payloads(&answer));
        cursor = answer["cursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(got, strings(&sent), "in order, none twice");
    assert_eq!(
        ids.last(),
        Some(&cursor),
        "the cursor is the last message's id"
    );

    // Nothing new: the poll waits out its timeout and answers empty with a usable cursor.
    let began = Instant::now();
    let answer = gate.poll(filter, Some(&cursor), 1).await;
    let waited = began.elapsed();
    assert_eq!(answer["messages"], json!([]));
    assert!(answer.get("reset").is_none());
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}, before its timeout"
    );
    let cursor = answer["cursor"].as_str().unwrap().to_owned();

    // A waiting poll is answered as soon as a message comes.
    let waiting = {
        let client = gate.client.clone();
        let url = gate.url(&format!(
            "/v1/poll?filter=lp%2F%23&timeout=30&cursor={cursor}"
        ));
        tokio::spawn(async move {
            let began = Instant::now();
            let reply =
                common::http::read(client.get(url).bearer_auth(common::http::PUBLISH_TOKEN)).await;
            (reply, began.elapsed())
        })
    };
    publisher
        .publish("lp/t", rumqttc::QoS::AtLeastOnce, false, b"p6")
        .await;
    let (reply, took) = waiting.await.unwrap();
    let answer = reply.expect(StatusCode::OK);
    assert_eq!(poll_payloads(&answer), strings(&["p6"]));
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // A cursor can be polled again: the history answers the same messages.
    let again = gate.poll(filter, Some(&start), 0).await;
    assert_eq!(
        poll_payloads(&again),
        strings(&["p1", "p2", "p3", "p4", "p5", "p6"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_requests_with_bad_filters_are_refused_before_anything_opens() {
    let gate = Gate::start("max_filters = 2").await;
    for (query, code) in [
        ("", "bad_request"),
        ("?filter=a%2F%23%2Fb", "invalid_topic"),
        ("?filter=%24share%2Fg%2Fa", "invalid_topic"),
        ("?filter=a&filter=b&filter=c", "bad_request"),
        ("?filter=a&cursor=nope", "bad_request"),
        ("?filter=a&timeout=soon", "bad_request"),
    ] {
        for path in ["/v1/subscribe", "/v1/poll"] {
            if path == "/v1/subscribe" && (query.contains("cursor") || query.contains("timeout")) {
                continue;
            }
            let reply = gate
                .get(&format!("{path}{query}"), Some(common::http::PUBLISH_TOKEN))
                .await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}{query}");
            assert_eq!(reply.error_code(), code, "{path}{query}");
        }
    }
    assert_eq!(gate.stats().await["subscriptions"], 0);
}
