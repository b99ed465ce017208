//! `GET /v1/retained`: retained messages for publish-token holders, and the filter checks and
//! answer shape the admin listing (`GET /v1/admin/retained`) shares.
//!
//! Place in the data flow: `query -> filter check (here) -> Gateway::retained (the token's
//! tenant; a tenant-bound token's ACL must allow subscribing to the filter, else 403
//! `not_authorized`) -> engine -> RetainedMessage -> MessageJson`.

use crate::auth::PublishAccess;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::gateway::Caller;
use crate::json::MessageJson;
use crate::openapi::{AuthErrors, EngineErrors, ParamErrors};
use crate::publish::MAX_MQTT_STRING;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tidegate_protocol::topic::validate_topic_filter;
use utoipa::{IntoParams, ToSchema};

/// Query of `GET /v1/retained`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RetainedQuery {
    /// Topic filter the retained messages' topics must match (wildcards allowed; no
    /// `$share/`).
    #[param(required = true, example = "sensors/#")]
    filter: Option<String>,
}

/// Retained messages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RetainedList {
    /// The messages, one per topic.
    pub(crate) messages: Vec<MessageJson>,
}

/// Checks a filter for a retained read; 400 `invalid_topic` if MQTT would refuse it.
pub(crate) fn check_filter(filter: &str) -> Result<(), ApiError> {
    validate_topic_filter(filter).map_err(|e| ApiError::invalid_topic(format!("filter: {e}")))?;
    if filter.starts_with("$share/") || filter == "$share" {
        // A shared subscription picks one member per message; it has no retained messages.
        return Err(ApiError::invalid_topic(
            "filter: a shared subscription filter has no retained messages",
        ));
    }
    if filter.contains('\0') {
        return Err(ApiError::invalid_topic(
            "filter: must not contain U+0000 [MQTT-1.5.4-2]",
        ));
    }
    if filter.len() > MAX_MQTT_STRING {
        return Err(ApiError::invalid_topic(format!(
            "filter: longer than {MAX_MQTT_STRING} bytes"
        )));
    }
    Ok(())
}

/// The retained messages of `caller`'s tenant matching `filter`, already checked.
pub(crate) async fn read(
    state: &AppState,
    caller: Caller,
    filter: String,
) -> Result<Json<RetainedList>, ApiError> {
    check_filter(&filter)?;
    let messages = state.inner.gateway.retained(caller, filter).await?;
    Ok(Json(RetainedList {
        messages: messages.iter().map(MessageJson::from).collect(),
    }))
}

/// Read the retained messages whose topics match a filter.
#[utoipa::path(
    get,
    path = "/v1/retained",
    tag = "retained",
    params(RetainedQuery),
    security(("publish_token" = [])),
    responses(
        (status = 200, description = "The matching retained messages", body = RetainedList),
        ParamErrors, AuthErrors, EngineErrors,
    )
)]
pub(crate) async fn retained(
    access: PublishAccess,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<RetainedQuery>,
) -> Result<Json<RetainedList>, ApiError> {
    let filter = query
        .filter
        .ok_or_else(|| ApiError::bad_request("the filter parameter is required"))?;
    read(&state, access.caller, filter).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_as_mqtt_would() {
        assert!(check_filter("a/+/c").is_ok());
        assert!(check_filter("#").is_ok());
        for bad in ["", "a/#/b", "a+", "$share/g/a", "a\0"] {
            let e = check_filter(bad).unwrap_err();
            assert_eq!(e.code, "invalid_topic", "{bad:?}");
        }
    }

    mod endpoints {
        use crate::gateway::{MessageProperties, RetainedMessage};
        use crate::testing::{Call, FakeGateway, PUBLISH_TOKEN, app, call};
        use axum::http::{Method, StatusCode};
        use bytes::Bytes;
        use serde_json::json;
        use std::sync::Mutex;

        fn with_retained() -> FakeGateway {
            let message = |topic: &str, payload: &'static [u8]| RetainedMessage {
                topic: topic.into(),
                payload: Bytes::from_static(payload),
                qos: 1,
                properties: MessageProperties::default(),
            };
            FakeGateway {
                retained: Mutex::new(vec![
                    message("a/1", b"one"),
                    message("a/2", &[0xff]),
                    message("b", b"other"),
                ]),
                ..FakeGateway::default()
            }
        }

        #[tokio::test]
        async fn retained_messages_of_a_filter_as_message_json() {
            let (gateway, router) = app(with_retained());
            let r = call(
                &router,
                Method::GET,
                "/v1/retained?filter=a%2F%2B",
                Some(PUBLISH_TOKEN),
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(
                r.json(),
                json!({"messages": [
                    {"topic": "a/1", "payload": "one", "qos": 1, "retain": true},
                    {"topic": "a/2", "payload_base64": "/w==", "qos": 1, "retain": true},
                ]})
            );
            assert_eq!(gateway.calls(), vec![Call::Retained("a/+".into())]);
        }

        #[tokio::test]
        async fn a_missing_repeated_or_invalid_filter_is_400() {
            let (gateway, router) = app(with_retained());
            for (uri, code) in [
                ("/v1/retained", "bad_request"),
                ("/v1/retained?filter=a&filter=b", "bad_request"),
                ("/v1/retained?filter=a%2F%23%2Fb", "invalid_topic"),
                ("/v1/retained?filter=%24share%2Fg%2Fa", "invalid_topic"),
                ("/v1/retained?filter=", "invalid_topic"),
            ] {
                let r = call(&router, Method::GET, uri, Some(PUBLISH_TOKEN), None).await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
                assert_eq!(r.error_code(), code, "{uri}");
            }
            assert!(gateway.calls().is_empty());
        }
    }
}
