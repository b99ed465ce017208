//! `POST /v1/publish` and `POST /v1/publish/batch`: messages from HTTP clients into the engine.
//!
//! Place in the data flow: `JSON body -> PublishMessage (here) -> validate -> PublishRequest
//! -> Gateway::publish -> engine`, the same entry as an MQTT PUBLISH, so MQTT subscribers see
//! no difference. Everything an MQTT decoder would refuse is refused here first with 400 and
//! the field that is wrong, so the engine only sees well-formed messages; for QoS 1 and 2 the
//! response waits until the engine says the message is durable. A token bound to a tenant
//! publishes into that tenant, and each topic must pass the tenant's ACL (403
//! `not_authorized`; in a batch every topic is checked before any message is published).

use crate::auth::PublishAccess;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::gateway::{MessageProperties, PublishOutcome, PublishRequest};
use crate::openapi::{AuthErrors, EngineErrors, JsonBodyErrors, RefusedErrors};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use tidegate_protocol::topic::validate_topic_name;
use utoipa::ToSchema;

/// Longest MQTT UTF-8 string, bytes ([MQTT-1.5.4-1]: a two-byte length prefix).
pub(crate) const MAX_MQTT_STRING: usize = 65_535;

/// One message to publish.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishMessage {
    /// Topic name (no wildcards).
    #[schema(example = "sensors/kitchen/temperature")]
    topic: String,
    /// The payload as UTF-8 text. Give this or `payload_base64`, not both.
    #[serde(default)]
    payload: Option<String>,
    /// The payload as base64 (binary payloads). Give this or `payload`, not both.
    #[serde(default)]
    #[schema(format = Byte)]
    payload_base64: Option<String>,
    /// Quality of service, 0, 1 or 2. For 1 and 2 the response comes once the message is
    /// accepted and durable.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2, default = 0)]
    qos: i64,
    /// Retain flag.
    #[serde(default)]
    retain: bool,
    /// MQTT 5 properties, forwarded to MQTT 5 subscribers.
    #[serde(default)]
    properties: PublishProperties,
}

/// The MQTT 5 properties an HTTP publisher may set.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishProperties {
    /// MQTT 5 Content Type.
    #[serde(default)]
    content_type: Option<String>,
    /// MQTT 5 User Properties: an array of `[name, value]` pairs (names may repeat), or an
    /// object of names to values.
    #[serde(default)]
    #[schema(value_type = Vec<(String, String)>)]
    user_properties: UserProperties,
    /// MQTT 5 Message Expiry Interval, seconds.
    #[serde(default)]
    message_expiry: Option<u32>,
    /// MQTT 5 Response Topic (a topic name).
    #[serde(default)]
    response_topic: Option<String>,
    /// MQTT 5 Correlation Data, base64.
    #[serde(default)]
    #[schema(format = Byte)]
    correlation_data: Option<String>,
    /// MQTT 5 Payload Format Indicator. When absent: `true` for a `payload` given as text,
    /// unset for `payload_base64`.
    #[serde(default)]
    payload_format_utf8: Option<bool>,
}

/// User properties in either JSON form, kept in order.
#[derive(Debug, Default)]
struct UserProperties(Vec<(String, String)>);

impl<'de> Deserialize<'de> for UserProperties {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;

        impl<'de> Visitor<'de> for Pairs {
            type Value = UserProperties;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of [name, value] pairs or an object of names to values")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = seq.next_element::<(String, String)>()? {
                    pairs.push(pair);
                }
                Ok(UserProperties(pairs))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(UserProperties(pairs))
            }
        }

        d.deserialize_any(Pairs)
    }
}

/// `POST /v1/publish/batch` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBatch {
    /// The messages, published in this order (at most `http.max_batch`).
    messages: Vec<PublishMessage>,
}

/// `POST /v1/publish/batch` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct BatchOutcome {
    /// One outcome per message, in the order of the request.
    results: Vec<PublishOutcome>,
}

/// A field of a message that fails validation.
#[derive(Debug, PartialEq, Eq)]
struct Invalid {
    /// Error code of the 400.
    code: &'static str,
    /// The field, as a path inside the message.
    field: &'static str,
    /// What is wrong with it.
    message: String,
}

impl Invalid {
    fn new(code: &'static str, field: &'static str, message: impl Into<String>) -> Invalid {
        Invalid {
            code,
            field,
            message: message.into(),
        }
    }

    /// The 400 for this failure, the field prefixed by `at` (`""` or `messages[3].`).
    fn into_error(self, at: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            self.code,
            format!("{at}{}: {}", self.field, self.message),
        )
    }
}

/// Refuses what an MQTT UTF-8 string cannot carry: more than 65,535 bytes, or U+0000
/// ([MQTT-1.5.4-2]), which the JSON escape `\u0000` would otherwise smuggle in.
fn mqtt_string(code: &'static str, field: &'static str, s: &str) -> Result<(), Invalid> {
    if s.len() > MAX_MQTT_STRING {
        return Err(Invalid::new(
            code,
            field,
            format!("longer than {MAX_MQTT_STRING} bytes"),
        ));
    }
    if s.contains('\0') {
        return Err(Invalid::new(
            code,
            field,
            "must not contain U+0000 [MQTT-1.5.4-2]",
        ));
    }
    Ok(())
}

/// A topic name as MQTT requires it.
fn topic_name(field: &'static str, topic: &str) -> Result<(), Invalid> {
    mqtt_string("invalid_topic", field, topic)?;
    validate_topic_name(topic).map_err(|e| Invalid::new("invalid_topic", field, e.to_string()))
}

/// Checks a topic name given outside a message body (a path parameter); 400 `invalid_topic`.
pub(crate) fn check_topic_name(field: &'static str, topic: &str) -> Result<(), ApiError> {
    topic_name(field, topic).map_err(|e| e.into_error(""))
}

impl PublishMessage {
    /// The engine's request for this message, or the first field that is wrong.
    fn validate(self) -> Result<PublishRequest, Invalid> {
        topic_name("topic", &self.topic)?;
        let qos = u8::try_from(self.qos)
            .ok()
            .filter(|q| *q <= 2)
            .ok_or_else(|| Invalid::new("invalid_qos", "qos", "must be 0, 1 or 2"))?;
        let (payload, given_as_text) = match (self.payload, self.payload_base64) {
            (Some(text), None) => (Bytes::from(text), true),
            (None, Some(b64)) => {
                let bytes = STANDARD.decode(b64.as_bytes()).map_err(|e| {
                    Invalid::new(
                        "invalid_payload",
                        "payload_base64",
                        format!("not base64: {e}"),
                    )
                })?;
                (Bytes::from(bytes), false)
            }
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "invalid_payload",
                    "payload",
                    "give payload or payload_base64, not both",
                ));
            }
            (None, None) => {
                return Err(Invalid::new(
                    "invalid_payload",
                    "payload",
                    "give payload (text) or payload_base64 (binary)",
                ));
            }
        };
        let properties = self.properties.validate(&payload, given_as_text)?;
        Ok(PublishRequest {
            topic: self.topic,
            payload,
            qos,
            retain: self.retain,
            properties,
        })
    }
}

impl PublishProperties {
    /// The engine's properties, checked as an MQTT decoder would check them.
    fn validate(self, payload: &[u8], given_as_text: bool) -> Result<MessageProperties, Invalid> {
        const BAD: &str = "invalid_properties";
        if let Some(ct) = &self.content_type {
            mqtt_string(BAD, "properties.content_type", ct)?;
        }
        for (name, value) in &self.user_properties.0 {
            mqtt_string(BAD, "properties.user_properties", name)?;
            mqtt_string(BAD, "properties.user_properties", value)?;
        }
        if let Some(topic) = &self.response_topic {
            topic_name("properties.response_topic", topic)?;
        }
        let correlation_data = self
            .correlation_data
            .map(|b64| {
                STANDARD
                    .decode(b64.as_bytes())
                    .map(Bytes::from)
                    .map_err(|e| {
                        Invalid::new(
                            BAD,
                            "properties.correlation_data",
                            format!("not base64: {e}"),
                        )
                    })
            })
            .transpose()?;
        if correlation_data
            .as_ref()
            .is_some_and(|c| c.len() > MAX_MQTT_STRING)
        {
            return Err(Invalid::new(
                BAD,
                "properties.correlation_data",
                format!("longer than {MAX_MQTT_STRING} bytes"),
            ));
        }
        // Text given as `payload` is UTF-8 by construction: say so to MQTT 5 subscribers
        // unless the client chose. A client flagging base64 bytes as UTF-8 must be right,
        // or MQTT subscribers would get what [MQTT-3.3.2-4] forbids.
        let payload_format_utf8 = match self.payload_format_utf8 {
            None if given_as_text => Some(true),
            Some(true) if std::str::from_utf8(payload).is_err() => {
                return Err(Invalid::new(
                    "invalid_payload",
                    "properties.payload_format_utf8",
                    "the payload is not UTF-8",
                ));
            }
            other => other,
        };
        Ok(MessageProperties {
            content_type: self.content_type,
            user_properties: self.user_properties.0,
            message_expiry: self.message_expiry,
            response_topic: self.response_topic,
            correlation_data,
            payload_format_utf8,
        })
    }
}

/// Publish one message.
#[utoipa::path(
    post,
    path = "/v1/publish",
    tag = "publish",
    request_body = PublishMessage,
    security(("publish_token" = [])),
    responses(
        (status = 200, description = "Routed (QoS 0) or accepted and durable (QoS 1, 2)",
         body = PublishOutcome),
        JsonBodyErrors, AuthErrors, RefusedErrors, EngineErrors,
    )
)]
pub(crate) async fn publish(
    access: PublishAccess,
    State(state): State<AppState>,
    ApiJson(message): ApiJson<PublishMessage>,
) -> Result<Json<PublishOutcome>, ApiError> {
    let request = message.validate().map_err(|e| e.into_error(""))?;
    tracing::debug!(token = access.token, topic = %request.topic, qos = request.qos, "HTTP publish");
    let outcomes = state
        .inner
        .gateway
        .publish(access.caller, vec![request])
        .await?;
    match outcomes.as_slice() {
        [one] => Ok(Json(*one)),
        other => Err(ApiError::internal(format!(
            "the engine answered {} outcomes for one message",
            other.len()
        ))),
    }
}

/// Publish several messages, in order, in one request.
#[utoipa::path(
    post,
    path = "/v1/publish/batch",
    tag = "publish",
    request_body = PublishBatch,
    security(("publish_token" = [])),
    responses(
        (status = 200, description = "Every message routed or accepted, outcomes in order",
         body = BatchOutcome),
        JsonBodyErrors, AuthErrors, RefusedErrors, EngineErrors,
    )
)]
pub(crate) async fn publish_batch(
    access: PublishAccess,
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<PublishBatch>,
) -> Result<Json<BatchOutcome>, ApiError> {
    let max = state.inner.config.max_batch;
    if batch.messages.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} messages; a batch holds at most {max} (http.max_batch)",
                batch.messages.len()
            ),
        ));
    }
    // Every message is checked before any is published: a bad batch publishes nothing.
    let requests = batch
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.validate()
                .map_err(|e| e.into_error(&format!("messages[{i}].")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = requests.len();
    tracing::debug!(token = access.token, messages = count, "HTTP publish batch");
    if count == 0 {
        return Ok(Json(BatchOutcome {
            results: Vec::new(),
        }));
    }
    let results = state.inner.gateway.publish(access.caller, requests).await?;
    if results.len() != count {
        return Err(ApiError::internal(format!(
            "the engine answered {} outcomes for {count} messages",
            results.len()
        )));
    }
    Ok(Json(BatchOutcome { results }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> PublishMessage {
        serde_json::from_str(json).unwrap()
    }

    fn invalid(json: &str) -> Invalid {
        message(json).validate().unwrap_err()
    }

    #[test]
    fn text_payload_is_flagged_utf8_and_base64_is_not() {
        let r = message(r#"{"topic": "a/b", "payload": "hi"}"#)
            .validate()
            .unwrap();
        assert_eq!(r.payload, Bytes::from_static(b"hi"));
        assert_eq!((r.qos, r.retain), (0, false));
        assert_eq!(r.properties.payload_format_utf8, Some(true));
        let r = message(r#"{"topic": "a", "payload_base64": "/wA=", "qos": 2, "retain": true}"#)
            .validate()
            .unwrap();
        assert_eq!(r.payload, Bytes::from_static(&[0xff, 0]));
        assert_eq!((r.qos, r.retain), (2, true));
        assert_eq!(r.properties.payload_format_utf8, None);
    }

    #[test]
    fn the_client_may_set_the_payload_format_but_not_lie_about_it() {
        let r = message(
            r#"{"topic": "a", "payload": "x", "properties": {"payload_format_utf8": false}}"#,
        )
        .validate()
        .unwrap();
        assert_eq!(r.properties.payload_format_utf8, Some(false));
        let r = message(
            r#"{"topic": "a", "payload_base64": "aGk=", "properties": {"payload_format_utf8": true}}"#,
        )
        .validate()
        .unwrap();
        assert_eq!(r.properties.payload_format_utf8, Some(true));
        let e = invalid(
            r#"{"topic": "a", "payload_base64": "/wA=", "properties": {"payload_format_utf8": true}}"#,
        );
        assert_eq!(e.code, "invalid_payload");
    }

    #[test]
    fn properties_pass_through_and_user_properties_take_both_forms() {
        let r = message(
            r#"{"topic": "a", "payload": "", "properties": {
                "content_type": "text/plain", "message_expiry": 60,
                "response_topic": "reply/here", "correlation_data": "AQI=",
                "user_properties": [["k", "1"], ["k", "2"]]}}"#,
        )
        .validate()
        .unwrap();
        let p = r.properties;
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.message_expiry, Some(60));
        assert_eq!(p.response_topic.as_deref(), Some("reply/here"));
        assert_eq!(p.correlation_data, Some(Bytes::from_static(&[1, 2])));
        assert_eq!(
            p.user_properties,
            vec![("k".into(), "1".into()), ("k".into(), "2".into())]
        );
        let r = message(
            r#"{"topic": "a", "payload": "", "properties": {"user_properties": {"b": "2", "a": "1"}}}"#,
        )
        .validate()
        .unwrap();
        assert_eq!(
            r.properties.user_properties,
            vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            "object form keeps the document's order"
        );
    }

    #[test]
    fn each_bad_field_has_its_code_and_name() {
        let cases = [
            (
                r#"{"topic": "a/+", "payload": ""}"#,
                "invalid_topic",
                "topic",
            ),
            (r#"{"topic": "", "payload": ""}"#, "invalid_topic", "topic"),
            (
                r#"{"topic": "a\u0000", "payload": ""}"#,
                "invalid_topic",
                "topic",
            ),
            (
                r#"{"topic": "a", "payload": "", "qos": 3}"#,
                "invalid_qos",
                "qos",
            ),
            (
                r#"{"topic": "a", "payload": "", "qos": -1}"#,
                "invalid_qos",
                "qos",
            ),
            (r#"{"topic": "a"}"#, "invalid_payload", "payload"),
            (
                r#"{"topic": "a", "payload": "", "payload_base64": ""}"#,
                "invalid_payload",
                "payload",
            ),
            (
                r#"{"topic": "a", "payload_base64": "%%%"}"#,
                "invalid_payload",
                "payload_base64",
            ),
            (
                r#"{"topic": "a", "payload": "", "properties": {"response_topic": "r/#"}}"#,
                "invalid_topic",
                "properties.response_topic",
            ),
            (
                r#"{"topic": "a", "payload": "", "properties": {"correlation_data": "!"}}"#,
                "invalid_properties",
                "properties.correlation_data",
            ),
            (
                r#"{"topic": "a", "payload": "", "properties": {"user_properties": [["a\u0000", "b"]]}}"#,
                "invalid_properties",
                "properties.user_properties",
            ),
        ];
        for (json, code, field) in cases {
            let e = invalid(json);
            assert_eq!((e.code, e.field), (code, field), "{json}");
        }
        let long = "x".repeat(MAX_MQTT_STRING + 1);
        let e = invalid(&format!(r#"{{"topic": "{long}", "payload": ""}}"#));
        assert_eq!(e.code, "invalid_topic");
    }

    #[test]
    fn unknown_fields_are_refused_so_typos_do_not_vanish() {
        assert!(
            serde_json::from_str::<PublishMessage>(r#"{"topic": "a", "paylod": "x"}"#).is_err()
        );
        assert!(
            serde_json::from_str::<PublishMessage>(
                r#"{"topic": "a", "payload": "x", "properties": {"expiry": 1}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn errors_name_the_field_with_the_batch_index() {
        let e = invalid(r##"{"topic": "#", "payload": ""}"##).into_error("messages[3].");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with("messages[3].topic: "),
            "{}",
            e.message
        );
    }

    mod endpoints {
        use crate::config::HttpConfig;
        use crate::gateway::GatewayError;
        use crate::testing::{
            Call, FakeGateway, PUBLISH_TOKEN, app, app_with, call, config, subscription,
        };
        use axum::http::{Method, StatusCode, header};
        use serde_json::{Value, json};

        fn subscribed() -> FakeGateway {
            FakeGateway {
                subscriptions: vec![
                    ("c1".into(), vec![subscription("a/+")]),
                    ("c2".into(), vec![subscription("a/#"), subscription("b")]),
                ],
                ..FakeGateway::default()
            }
        }

        async fn post(router: &axum::Router, uri: &str, body: Value) -> crate::testing::Reply {
            call(router, Method::POST, uri, Some(PUBLISH_TOKEN), Some(body)).await
        }

        #[tokio::test]
        async fn publish_answers_the_matched_count_and_forwards_the_message() {
            let (gateway, router) = app(subscribed());
            let r = post(
                &router,
                "/v1/publish",
                json!({"topic": "a/x", "payload": "hi", "qos": 1,
                       "properties": {"user_properties": {"k": "v"}}}),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json(), json!({"matched": 2}));
            let calls = gateway.calls();
            let [Call::Publish(batch)] = calls.as_slice() else {
                panic!("one publish call expected");
            };
            assert_eq!(batch.len(), 1);
            assert_eq!(batch[0].topic, "a/x");
            assert_eq!(batch[0].qos, 1);
            assert_eq!(&batch[0].payload[..], b"hi");
            assert_eq!(batch[0].properties.payload_format_utf8, Some(true));
            assert_eq!(
                batch[0].properties.user_properties,
                vec![("k".to_owned(), "v".to_owned())]
            );
        }

        #[tokio::test]
        async fn invalid_messages_are_400_with_their_code_and_reach_nothing() {
            let (gateway, router) = app(subscribed());
            let cases = [
                (json!({"topic": "a/#", "payload": ""}), "invalid_topic"),
                (
                    json!({"topic": "a", "payload": "", "qos": 3}),
                    "invalid_qos",
                ),
                (json!({"topic": "a"}), "invalid_payload"),
                (
                    json!({"topic": "a", "payload": "", "payload_base64": ""}),
                    "invalid_payload",
                ),
                (
                    json!({"topic": "a", "payload": "", "properties": {"response_topic": "+"}}),
                    "invalid_topic",
                ),
                (json!({"payload": ""}), "bad_request"),
                (
                    json!({"topic": "a", "payload": "", "extra": 1}),
                    "bad_request",
                ),
                (json!("not an object"), "bad_request"),
            ];
            for (body, code) in cases {
                let r = post(&router, "/v1/publish", body.clone()).await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
                assert_eq!(r.error_code(), code, "{body}");
            }
            assert!(gateway.calls().is_empty());
        }

        #[tokio::test]
        async fn engine_failures_map_to_their_status() {
            let cases = [
                (
                    GatewayError::StoreFailed("disk full".into()),
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_failed",
                ),
                (
                    GatewayError::Unavailable,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                ),
                (
                    GatewayError::Refused {
                        reason: 0x87,
                        message: "no $SYS".into(),
                    },
                    StatusCode::FORBIDDEN,
                    "not_authorized",
                ),
                (
                    GatewayError::Refused {
                        reason: 0x9A,
                        message: "no retain".into(),
                    },
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "refused",
                ),
            ];
            for (error, status, code) in cases {
                let gateway = FakeGateway::default();
                *gateway.fail.lock().unwrap() = Some(error);
                let (_, router) = app(gateway);
                let r = post(&router, "/v1/publish", json!({"topic": "a", "payload": ""})).await;
                assert_eq!(r.status, status);
                assert_eq!(r.error_code(), code);
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    assert_eq!(r.header(header::RETRY_AFTER), Some("1"));
                }
            }
        }

        #[tokio::test]
        async fn a_batch_answers_one_result_per_message_in_order() {
            let (gateway, router) = app(subscribed());
            let r = post(
                &router,
                "/v1/publish/batch",
                json!({"messages": [
                    {"topic": "a/x", "payload": "1"},
                    {"topic": "b", "payload_base64": "AA==", "qos": 2},
                    {"topic": "nobody", "payload": "3"},
                ]}),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(
                r.json(),
                json!({"results": [{"matched": 2}, {"matched": 1}, {"matched": 0}]})
            );
            let calls = gateway.calls();
            let [Call::Publish(batch)] = calls.as_slice() else {
                panic!("one publish call expected");
            };
            let topics: Vec<&str> = batch.iter().map(|m| m.topic.as_str()).collect();
            assert_eq!(topics, ["a/x", "b", "nobody"]);
            assert_eq!(batch[1].properties.payload_format_utf8, None);
        }

        #[tokio::test]
        async fn a_bad_message_fails_the_whole_batch_and_names_its_index() {
            let (gateway, router) = app(subscribed());
            let r = post(
                &router,
                "/v1/publish/batch",
                json!({"messages": [
                    {"topic": "a", "payload": "1"},
                    {"topic": "a/+", "payload": "2"},
                ]}),
            )
            .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert_eq!(r.error_code(), "invalid_topic");
            let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.starts_with("messages[1].topic: "), "{message}");
            let r = post(
                &router,
                "/v1/publish/batch",
                json!({"messages": [{"topic": "a", "payload": "1"}, {"topic": "a", "qos": "x"}]}),
            )
            .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.starts_with("messages[1].qos: "), "{message}");
            assert!(gateway.calls().is_empty());
        }

        #[tokio::test]
        async fn a_batch_over_max_batch_is_413_and_an_empty_one_publishes_nothing() {
            let (gateway, router) = app_with(
                subscribed(),
                HttpConfig {
                    max_batch: 2,
                    ..config()
                },
            );
            let m = json!({"topic": "a", "payload": ""});
            let r = post(&router, "/v1/publish/batch", json!({"messages": [m, m, m]})).await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(r.error_code(), "batch_too_large");
            let r = post(&router, "/v1/publish/batch", json!({"messages": []})).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json(), json!({"results": []}));
            let r = post(&router, "/v1/publish/batch", json!({"messages": [m, m]})).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(gateway.calls().len(), 1);
        }
    }
}
