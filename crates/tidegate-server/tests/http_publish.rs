//! HTTP publishing end to end (issue 6): `POST /v1/publish` and `POST /v1/publish/batch` with
//! reqwest over a real socket, received by rumqttc MQTT 5 subscribers over another one, with the
//! QoS, retain flag, payload encodings and MQTT 5 properties an MQTT publisher could give; and
//! retained messages read back over `GET /v1/retained`.

mod common;

use bytes::Bytes;
use common::http::Gate;
use common::v5::{self, Client};
use reqwest::StatusCode;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;

/// A v5 subscriber to `filter` at QoS 2 (so the publisher's QoS is the delivery QoS).
async fn subscriber(gate: &Gate, id: &str, filter: &str) -> Client {
    let mut client = Client::connect(gate.v5_options(id)).await;
    client.subscribe_ok(filter, QoS::ExactlyOnce).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_qos_arrives_at_an_mqtt_subscriber_as_published() {
    let gate = Gate::start("").await;
    let mut sub = subscriber(&gate, "pub-qos", "pub/qos/#").await;
    for (qos, expected) in [
        (0, QoS::AtMostOnce),
        (1, QoS::AtLeastOnce),
        (2, QoS::ExactlyOnce),
    ] {
        let topic = format!("pub/qos/{qos}");
        let payload = format!("at qos {qos}");
        let matched = gate
            .publish(&json!({"topic": topic, "payload": payload, "qos": qos}))
            .await;
        assert_eq!(matched, 1, "qos {qos}");
        let got = sub.recv().await;
        assert_eq!(v5::topic(&got), topic);
        assert_eq!(v5::text(&got), payload);
        assert_eq!(got.qos, expected);
        assert!(!got.retain);
        // Text given as `payload` is announced as UTF-8 to MQTT 5 subscribers.
        assert_eq!(v5::props(&got).payload_format_indicator, Some(1));
    }
    // Nobody else listens: a topic without subscribers matches nothing.
    let matched = gate
        .publish(&json!({"topic": "pub/elsewhere", "payload": "x", "qos": 1}))
        .await;
    assert_eq!(matched, 0);
    sub.expect_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_reach_an_mqtt_5_subscriber() {
    let gate = Gate::start("").await;
    let mut sub = subscriber(&gate, "pub-props", "pub/props/#").await;
    let matched = gate
        .publish(&json!({
            "topic": "pub/props/a",
            "payload": "{\"t\": 21.5}",
            "qos": 1,
            "properties": {
                "content_type": "application/json",
                "user_properties": [["site", "kitchen"], ["site", "lab"], ["unit", "C"]],
                "message_expiry": 120,
                "response_topic": "pub/props/reply",
                "correlation_data": "AQID",
            }
        }))
        .await;
    assert_eq!(matched, 1);
    let got = sub.recv().await;
    assert_eq!(v5::text(&got), "{\"t\": 21.5}");
    let props = v5::props(&got);
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        props.user_properties,
        [
            ("site".to_owned(), "kitchen".to_owned()),
            ("site".to_owned(), "lab".to_owned()),
            ("unit".to_owned(), "C".to_owned()),
        ],
        "user properties keep their order and repeated names"
    );
    assert_eq!(props.response_topic.as_deref(), Some("pub/props/reply"));
    assert_eq!(props.correlation_data, Some(Bytes::from_static(&[1, 2, 3])));
    // The expiry counts down while the message waits; it left at once, so little has gone.
    let expiry = props.message_expiry_interval.expect("message expiry");
    assert!((110..=120).contains(&expiry), "expiry {expiry}");

    // User properties may also be given as an object.
    gate.publish(&json!({
        "topic": "pub/props/b",
        "payload": "x",
        "properties": {"user_properties": {"k": "v"}}
    }))
    .await;
    let got = sub.recv().await;
    assert_eq!(
        v5::props(&got).user_properties,
        [("k".to_owned(), "v".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base64_payload_arrives_as_its_bytes_without_a_utf8_flag() {
    let gate = Gate::start("").await;
    let mut sub = subscriber(&gate, "pub-b64", "pub/bin").await;
    let matched = gate
        .publish(&json!({"topic": "pub/bin", "payload_base64": "/wABgA==", "qos": 1}))
        .await;
    assert_eq!(matched, 1);
    let got = sub.recv().await;
    assert_eq!(got.payload, Bytes::from_static(&[0xff, 0x00, 0x01, 0x80]));
    assert_eq!(v5::props(&got).payload_format_indicator, None);
    // Both encodings at once, or base64 that is not, are refused before the engine.
    for bad in [
        json!({"topic": "pub/bin", "payload": "a", "payload_base64": "YQ=="}),
        json!({"topic": "pub/bin", "payload_base64": "not base64!"}),
        json!({"topic": "pub/bin"}),
    ] {
        let reply = gate.post("/v1/publish", &bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.error_code(), "invalid_payload", "{bad}");
    }
    sub.expect_no_publish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_http_messages_reach_later_subscribers_and_the_retained_endpoint() {
    let gate = Gate::start("").await;
    for (topic, payload) in [("ret/a", "first"), ("ret/b", "second")] {
        let matched = gate
            .publish(&json!({"topic": topic, "payload": payload, "qos": 1, "retain": true}))
            .await;
        assert_eq!(matched, 0);
    }
    let mut late = Client::connect(gate.v5_options("ret-late")).await;
    late.subscribe_ok("ret/#", QoS::AtLeastOnce).await;
    let mut got: Vec<(String, String, bool)> = Vec::new();
    for _ in 0..2 {
        let p = late.recv().await;
        got.push((v5::topic(&p), v5::text(&p), p.retain));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("ret/a".to_owned(), "first".to_owned(), true),
            ("ret/b".to_owned(), "second".to_owned(), true),
        ]
    );

    let reply = gate
        .get(
            "/v1/retained?filter=ret%2F%23",
            Some(common::http::PUBLISH_TOKEN),
        )
        .await;
    let body = reply.expect(StatusCode::OK);
    let mut messages: Vec<(String, String, u64, bool)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_owned(),
                m["payload"].as_str().unwrap().to_owned(),
                m["qos"].as_u64().unwrap(),
                m["retain"].as_bool().unwrap(),
            )
        })
        .collect();
    messages.sort();
    assert_eq!(
        messages,
        [
            ("ret/a".to_owned(), "first".to_owned(), 1, true),
            ("ret/b".to_owned(), "second".to_owned(), 1, true),
        ]
    );

    // An empty retained payload clears the topic, as it would from an MQTT publisher.
    gate.publish(&json!({"topic": "ret/a", "payload": "", "retain": true}))
        .await;
    let body = gate
        .get(
            "/v1/retained?filter=ret%2F%23",
            Some(common::http::PUBLISH_TOKEN),
        )
        .await
        .expect(StatusCode::OK);
    let topics: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["ret/b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_mqtt_message_is_readable_over_http() {
    let gate = Gate::start("").await;
    let mut publisher = Client::connect(gate.v5_options("ret-mqtt")).await;
    publisher
        .publish("ret/mqtt", QoS::AtLeastOnce, true, &[0xff, 0x00])
        .await;
    let body = gate
        .get(
            "/v1/retained?filter=ret/mqtt",
            Some(common::http::PUBLISH_TOKEN),
        )
        .await
        .expect(StatusCode::OK);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{body}");
    assert_eq!(messages[0]["topic"], "ret/mqtt");
    // Not UTF-8: handed out as base64.
    assert_eq!(messages[0]["payload_base64"], "/wA=");
    assert!(messages[0].get("payload").is_none());
    assert_eq!(messages[0]["retain"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_published_in_order_with_one_outcome_per_message() {
    let gate = Gate::start("max_batch = 4").await;
    let mut sub = subscriber(&gate, "batch-sub", "batch/#").await;
    let reply = gate
        .post(
            "/v1/publish/batch",
            &json!({"messages": [
                {"topic": "batch/1", "payload": "one", "qos": 0},
                {"topic": "batch/2", "payload": "two", "qos": 1},
                {"topic": "nobody/3", "payload": "three", "qos": 2},
                {"topic": "batch/4", "payload_base64": "Zm91cg==", "qos": 2, "retain": true},
            ]}),
        )
        .await;
    let body = reply.expect(StatusCode::OK);
    assert_eq!(
        body,
        json!({"results": [{"matched": 1}, {"matched": 1}, {"matched": 0}, {"matched": 1}]})
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = sub.recv().await;
        got.push((v5::topic(&p), v5::text(&p), p.qos));
    }
    assert_eq!(
        got,
        [
            ("batch/1".to_owned(), "one".to_owned(), QoS::AtMostOnce),
            ("batch/2".to_owned(), "two".to_owned(), QoS::AtLeastOnce),
            ("batch/4".to_owned(), "four".to_owned(), QoS::ExactlyOnce),
        ]
    );

    // One bad message refuses the whole batch, naming it; nothing is published.
    let reply = gate
        .post(
            "/v1/publish/batch",
            &json!({"messages": [
                {"topic": "batch/ok", "payload": "fine"},
                {"topic": "batch/+/bad", "payload": "wildcard"},
            ]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_topic");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("messages[1].topic"), "{message}");

    // More than `max_batch` messages: 413, nothing published.
    let five: Vec<_> = (0..5)
        .map(|i| json!({"topic": "batch/many", "payload": i.to_string()}))
        .collect();
    let reply = gate
        .post("/v1/publish/batch", &json!({ "messages": five }))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_code(), "batch_too_large");
    sub.expect_no_publish().await;

    // An empty batch is a no-op.
    let body = gate
        .post("/v1/publish/batch", &json!({"messages": []}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(body, json!({"results": []}));
}
