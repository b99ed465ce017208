//! `GET /v1/poll`: a [`Reader`] as a long-poll, for networks that break streaming.
//!
//! Place in the data flow: `request -> auth -> query checks -> Hubs::open(cursor) (the token's
//! tenant; its ACL checks every filter, 403 `not_authorized`) -> Reader -> collect (this
//! module) -> JSON`. The cursor is the same position an SSE `id` carries: a poll
//! answers at once with what came after it (or a `reset`), else waits up to `timeout` for the
//! next message. Between polls the hub keeps the filters' histories (for
//! `http.history_max_age_secs`), so consecutive polls lose nothing.

use super::history::Reset;
use super::query::{StreamParams, check_filters, parse_position, poll_timeout};
use super::reader::{Item, Reader};
use crate::auth::PublishAccess;
use crate::error::{ApiError, ErrorBody};
use crate::gateway::GatewayError;
use crate::json::MessageJson;
use crate::openapi::{AuthErrors, EngineErrors, ParamErrors};
use crate::state::AppState;
use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// Most messages in one answer; the cursor lets the client fetch the rest at once.
pub(crate) const MAX_POLL_MESSAGES: usize = 1000;

/// The wait when the request names no `timeout`, seconds.
const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// The answer of a long-poll.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PollResponse {
    /// The messages after the cursor, oldest first (at most 1000).
    pub(crate) messages: Vec<PollMessage>,
    /// Pass as `cursor` in the next poll.
    pub(crate) cursor: String,
    /// Filters whose messages after the cursor may have been lost; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reset: Option<Vec<Reset>>,
}

/// One message of a long-poll answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PollMessage {
    /// The message's position (usable as a `cursor` or SSE `Last-Event-ID`).
    pub(crate) id: String,
    /// The message.
    pub(crate) message: MessageJson,
}

/// Wait for messages of topic filters (long-poll).
///
/// Answers at once with the messages after `cursor` (none: from now), else waits up to
/// `timeout` seconds for the next one and answers with an empty list and a cursor to poll with
/// again. `reset` names the filters whose history no longer covers the gap since `cursor`.
#[utoipa::path(
    get,
    path = "/v1/poll",
    tag = "subscribe",
    params(
        ("filter" = Vec<String>, Query,
         description = "Topic filter (MQTT wildcards `+` and `#`; not `$share/...`); repeat for \
                        several, at most `http.max_filters`"),
        ("cursor" = Option<String>, Query,
         description = "The `cursor` of the previous answer (or an SSE event id); absent: \
                        from now"),
        ("timeout" = Option<u64>, Query,
         description = "Seconds to wait when nothing is there yet (default 30, at most \
                        `http.max_poll_timeout_secs`; 0 answers at once)"),
    ),
    security(("publish_token" = [])),
    responses(
        (status = 200, body = PollResponse,
         description = "The messages after the cursor (possibly none, after the timeout)"),
        ParamErrors, AuthErrors, EngineErrors,
        (status = 403, body = ErrorBody,
         description = "`forbidden` (an admin token), or `not_authorized`: the ACL of the \
                        token's tenant does not let it read a filter (named in the message)"),
        (status = 429, body = ErrorBody,
         description = "`rate_limited`: too many requests with this token, or \
                        `http.max_streams` streams and polls are open (with `Retry-After`)"),
    )
)]
pub(crate) async fn poll(
    access: PublishAccess,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<PollResponse>, ApiError> {
    let inner = &state.inner;
    let params = StreamParams::parse(query.as_deref())?;
    let filters = check_filters(params.filters, inner.config.max_filters)?;
    let from = params
        .cursor
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .map(|c| parse_position(c, "cursor"))
        .transpose()?;
    let timeout = poll_timeout(
        params.timeout.as_deref(),
        DEFAULT_TIMEOUT_SECS,
        inner.config.max_poll_timeout_secs,
    )?;
    let reader = inner.hubs.open(&access.caller, &filters, from).await?;
    collect(reader, timeout, MAX_POLL_MESSAGES).await.map(Json)
}

/// Takes what `reader` has now; if nothing, waits up to `timeout` for its next item and then
/// takes what else is ready, at most `max` messages.
async fn collect(
    mut reader: Reader,
    timeout: Duration,
    max: usize,
) -> Result<PollResponse, ApiError> {
    let mut answer = Answer::default();
    while answer.messages.len() < max {
        let Some(item) = reader.try_next() else { break };
        answer.take(item);
    }
    if answer.is_empty() {
        // `None`: the gateway drains; answer with the cursor so far.
        if let Ok(Some(item)) = tokio::time::timeout(timeout, reader.next()).await {
            answer.take(item);
            while answer.messages.len() < max {
                let Some(item) = reader.try_next() else { break };
                answer.take(item);
            }
        }
    }
    if answer.closed && answer.is_empty() {
        return Err(GatewayError::Unavailable.into());
    }
    Ok(PollResponse {
        messages: answer.messages,
        cursor: reader.position().to_string(),
        reset: (!answer.resets.is_empty()).then_some(answer.resets),
    })
}

/// A poll answer being filled.
#[derive(Debug, Default)]
struct Answer {
    messages: Vec<PollMessage>,
    resets: Vec<Reset>,
    /// The tap closed: nothing more will come.
    closed: bool,
}

impl Answer {
    fn take(&mut self, item: Item) {
        match item {
            Item::Message { position, delivery } => self.messages.push(PollMessage {
                id: position.to_string(),
                message: MessageJson::from(&delivery.message),
            }),
            Item::Reset { resets, .. } => self.resets.extend(resets),
            Item::Closed => self.closed = true,
        }
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.resets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use crate::stream::testkit::{Harness, config, get, json};
    use axum::http::StatusCode;
    use serde_json::Value;
    use std::time::Duration;

    fn topics(answer: &Value) -> Vec<String> {
        answer["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message"]["topic"].as_str().unwrap().to_owned())
            .collect()
    }

    fn cursor(answer: &Value) -> String {
        answer["cursor"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn without_a_cursor_a_poll_waits_for_the_next_message() {
        let mut h = Harness::new(config());
        let app = h.app.clone();
        let waiting = tokio::spawn(async move {
            json(get(app, "/v1/poll?filter=a/%23&timeout=30", &[]).await).await
        });
        let mut engine = h.engine().await;
        engine.until_subscribed(&["a/#"]).await;
        engine.publish("a/1", "hi").await;
        let answer = waiting.await.unwrap();
        assert_eq!(topics(&answer), ["a/1"]);
        assert_eq!(answer["messages"][0]["message"]["payload"], "hi");
        assert_eq!(answer["messages"][0]["id"], answer["cursor"]);
        assert!(answer.get("reset").is_none());

        // What came since the cursor is answered at once.
        engine.publish("a/2", "2").await;
        engine.publish("b/2", "not ours").await;
        engine.publish("a/3", "3").await;
        let uri = format!("/v1/poll?filter=a/%23&cursor={}", cursor(&answer));
        let next = json(h.get(&uri, &[]).await).await;
        assert_eq!(topics(&next), ["a/2", "a/3"]);
        assert_eq!(next["messages"][1]["id"], next["cursor"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_with_nothing_to_say_times_out_with_a_cursor_that_loses_nothing() {
        let mut h = Harness::new(config());
        let started = tokio::time::Instant::now();
        let empty = json(h.get("/v1/poll?filter=a&timeout=3", &[]).await).await;
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert_eq!(empty["messages"], serde_json::json!([]));
        let mut engine = h.engine().await;
        engine.until_subscribed(&["a"]).await;
        // Published between two polls: the filter's history outlives the poll that asked.
        engine.publish("a", "between polls").await;
        let uri = format!("/v1/poll?filter=a&timeout=3&cursor={}", cursor(&empty));
        let answer = json(h.get(&uri, &[]).await).await;
        assert_eq!(topics(&answer), ["a"]);
        // Nothing new: the same cursor comes back after the wait.
        let uri = format!("/v1/poll?filter=a&timeout=1&cursor={}", cursor(&answer));
        let again = json(h.get(&uri, &[]).await).await;
        assert_eq!(again["messages"], serde_json::json!([]));
        assert_eq!(again["cursor"], answer["cursor"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_is_capped_by_the_configuration() {
        let h = Harness::new(crate::HttpConfig {
            max_poll_timeout_secs: 2,
            ..config()
        });
        let started = tokio::time::Instant::now();
        let response = h.get("/v1/poll?filter=a&timeout=600", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_stale_cursor_gets_a_reset() {
        let h = Harness::new(config());
        let answer = json(
            h.get("/v1/poll?filter=a&filter=b&cursor=abc-3&timeout=0", &[])
                .await,
        )
        .await;
        assert_eq!(
            answer["reset"],
            serde_json::json!([
                {"filter": "a", "reason": "restarted"},
                {"filter": "b", "reason": "restarted"},
            ])
        );
        assert_eq!(answer["messages"], serde_json::json!([]));
        assert!(!cursor(&answer).starts_with("abc-"));
    }

    #[tokio::test]
    async fn a_long_backlog_comes_in_pages() {
        let mut h = Harness::new(crate::HttpConfig {
            history_size: 2000,
            ..config()
        });
        let first = json(h.get("/v1/poll?filter=a/%23&timeout=0", &[]).await).await;
        let mut engine = h.engine().await;
        engine.until_subscribed(&["a/#"]).await;
        let total = super::MAX_POLL_MESSAGES + 5;
        for i in 0..total {
            engine.publish(&format!("a/{i}"), "x").await;
        }
        let mut cursor = cursor(&first);
        let mut got = Vec::new();
        while got.len() < total {
            let uri = format!("/v1/poll?filter=a/%23&timeout=5&cursor={cursor}");
            let page = json(h.get(&uri, &[]).await).await;
            let page_topics = topics(&page);
            assert!(!page_topics.is_empty() && page_topics.len() <= super::MAX_POLL_MESSAGES);
            got.extend(page_topics);
            cursor = page["cursor"].as_str().unwrap().to_owned();
        }
        let expected: Vec<String> = (0..total).map(|i| format!("a/{i}")).collect();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn bad_parameters_are_400() {
        let h = Harness::new(config());
        for uri in [
            "/v1/poll",
            "/v1/poll?filter=a&cursor=12",
            "/v1/poll?filter=a&timeout=soon",
            "/v1/poll?filter=a%2B",
        ] {
            let response = h.get(uri, &[]).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        }
    }
}
