//! `GET /v1/subscribe`: a [`Reader`] as Server-Sent Events.
//!
//! Place in the data flow: `request -> auth -> query checks -> Hubs::open (the token's tenant;
//! its ACL checks every filter, 403 `not_authorized`) -> Reader -> events (this module) -> axum
//! Sse (+ heartbeat comments) -> client`.
//!
//! The events:
//! - a message: `id:` its position, `event:` its topic (`message` when the topic holds a line
//!   break, which an SSE field cannot), `data:` its [`MessageJson`];
//! - `event: reset`, `data: {"reset": [{"filter", "reason"}]}` when messages of a filter after
//!   the client's `Last-Event-ID` may have been lost; what the history still holds follows;
//! - `event: error`, `data: {"error": {"code", "message"}}` when the engine closed the tap; the
//!   stream ends after it and a reconnect resumes (with a reset: the tap was reopened);
//! - on a fresh stream (no `Last-Event-ID`), first an event with only an `id:` (browsers store it
//!   without firing anything), so a client that drops before its first message resumes from
//!   where it started instead of from "now";
//! - `: heartbeat` comments every `http.heartbeat_secs` of silence.

use super::query::{StreamParams, check_filters, parse_position};
use super::reader::{Item, Reader};
use crate::auth::PublishAccess;
use crate::error::{ApiError, ErrorBody};
use crate::json::MessageJson;
use crate::openapi::{AuthErrors, EngineErrors, ParamErrors};
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use std::convert::Infallible;

/// The header a reconnecting `EventSource` sends.
const LAST_EVENT_ID: &str = "last-event-id";

/// Subscribe to topic filters as a Server-Sent Events stream.
///
/// Each message is one event: `id` = a position to resume from, `event` = the topic, `data` =
/// the message as JSON. A reconnect sending `Last-Event-ID` (or `last_event_id`) first gets
/// what it missed from the bounded per-filter history, or an `event: reset` naming the filters
/// whose history no longer covers the gap.
#[utoipa::path(
    get,
    path = "/v1/subscribe",
    tag = "subscribe",
    params(
        ("filter" = Vec<String>, Query,
         description = "Topic filter (MQTT wildcards `+` and `#`; not `$share/...`); repeat for \
                        several, at most `http.max_filters`"),
        ("last_event_id" = Option<String>, Query,
         description = "Resume after this event id, for clients that cannot set the \
                        `Last-Event-ID` header (the header wins when both are given)"),
        ("Last-Event-ID" = Option<String>, Header,
         description = "Resume after this event id (sent by `EventSource` when it reconnects)"),
    ),
    security(("publish_token" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "The event stream: message events (`id`, `event` = topic, `data` = \
                        message JSON), `event: reset` (`data` = `{\"reset\": [{\"filter\", \
                        \"reason\"}]}`), `event: error` before the stream ends when the gateway's \
                        message tap closes, and heartbeat comments"),
        ParamErrors, AuthErrors, EngineErrors,
        (status = 403, body = ErrorBody,
         description = "`forbidden` (an admin token), or `not_authorized`: the ACL of the \
                        token's tenant does not let it read a filter (named in the message)"),
        (status = 429, body = ErrorBody,
         description = "`rate_limited`: too many requests with this token, or \
                        `http.max_streams` streams and polls are open (with `Retry-After`)"),
    )
)]
pub(crate) async fn subscribe(
    access: PublishAccess,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let inner = &state.inner;
    let params = StreamParams::parse(query.as_deref())?;
    let filters = check_filters(params.filters, inner.config.max_filters)?;
    let header = headers
        .get(LAST_EVENT_ID)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID: not a valid header value"))
        })
        .transpose()?
        // An empty header is what a browser sends when it has no id yet.
        .filter(|v| !v.trim().is_empty());
    let from = match (header, params.last_event_id.as_deref()) {
        (Some(h), _) => Some(parse_position(h, "Last-Event-ID")?),
        (None, Some(q)) if !q.trim().is_empty() => Some(parse_position(q, "last_event_id")?),
        (None, _) => None,
    };
    let reader = inner.hubs.open(&access.caller, &filters, from).await?;
    let start = from.is_none().then(|| reader.position());
    let keep_alive = KeepAlive::new()
        .interval(inner.config.heartbeat())
        .text("heartbeat");
    // Tells buffering reverse proxies (nginx and the like) to pass events on as they come.
    let unbuffered = [(HeaderName::from_static("x-accel-buffering"), "no")];
    Ok((
        unbuffered,
        Sse::new(events(reader, start)).keep_alive(keep_alive),
    ))
}

/// The events of `reader`, after an id-only event at `start` when given.
fn events(
    reader: Reader,
    start: Option<super::position::Position>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let first = start.map(|p| Event::default().id(p.to_string()));
    futures_util::stream::unfold((reader, first), |(mut reader, first)| async move {
        if let Some(event) = first {
            return Some((Ok(event), (reader, None)));
        }
        let item = reader.next().await?;
        Some((Ok(render(item)), (reader, None)))
    })
}

/// One reader item as an SSE event.
fn render(item: Item) -> Event {
    match item {
        Item::Message { position, delivery } => {
            let message = &delivery.message;
            let name = if message.topic.contains(['\r', '\n']) {
                "message"
            } else {
                message.topic.as_str()
            };
            data(
                Event::default().id(position.to_string()).event(name),
                &MessageJson::from(message),
            )
        }
        Item::Reset { resets, position } => {
            let event = Event::default().event("reset");
            let event = match position {
                Some(p) => event.id(p.to_string()),
                None => event,
            };
            data(event, &json!({ "reset": resets }))
        }
        Item::Closed => data(
            Event::default().event("error"),
            &json!({ "error": {
                "code": "unavailable",
                "message": "the gateway closed its message stream; reconnect to resume",
            }}),
        ),
    }
}

/// `event` with `value` as JSON data. Serialising these plain structures cannot fail; if it
/// ever did, the event still goes out (without data) rather than ending the stream.
fn data(event: Event, value: &impl serde::Serialize) -> Event {
    match serde_json::to_string(value) {
        Ok(json) => event.data(json),
        Err(e) => {
            tracing::error!(error = %e, "an SSE event could not be serialised");
            event
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::testkit::{Harness, SseBody, SseEvent, config, json};
    use axum::http::StatusCode;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    const A: &str = "/v1/subscribe?filter=a/%23";

    /// Opens `uri` and reads its first event: the id-only start of a fresh stream.
    async fn fresh(h: &Harness, uri: &str) -> (SseBody, String) {
        let mut body = SseBody::new(h.get(uri, &[]).await);
        let start = body.next_event().await;
        assert_eq!(start.event, None);
        assert_eq!(start.data, None);
        let id = start.id.expect("a fresh stream starts with its position");
        (body, id)
    }

    fn message(event: &SseEvent, topic: &str, payload: &str) {
        assert_eq!(event.event.as_deref(), Some(topic), "{event:?}");
        assert_eq!(event.json()["topic"], topic);
        assert_eq!(event.payload(), payload);
        assert!(event.id.is_some());
    }

    #[tokio::test]
    async fn messages_arrive_live_as_events() {
        let mut h = Harness::new(config());
        let response = h.get(A, &[]).await;
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        let mut body = SseBody::new(response);
        assert!(body.next_event().await.id.is_some());
        let mut engine = h.engine().await;
        engine.until_subscribed(&["a/#"]).await;
        engine.publish("a/1", "hello").await;
        engine.publish("b/1", "not for us").await;
        engine.publish("a/2", "again").await;
        let first = body.next_event().await;
        message(&first, "a/1", "hello");
        assert_eq!(first.json()["qos"], 0);
        let second = body.next_event().await;
        message(&second, "a/2", "again");
        assert_ne!(first.id, second.id);
    }

    #[tokio::test]
    async fn a_message_matching_two_filters_is_sent_once() {
        let mut h = Harness::new(config());
        let (mut body, _) = fresh(&h, "/v1/subscribe?filter=a/%23&filter=%2B/b").await;
        let mut engine = h.engine().await;
        engine.until_subscribed(&["a/#", "+/b"]).await;
        engine.publish("a/b", "both").await;
        engine.publish("x/b", "one").await;
        message(&body.next_event().await, "a/b", "both");
        message(&body.next_event().await, "x/b", "one");
    }

    #[tokio::test]
    async fn a_reconnect_inside_the_history_gets_exactly_what_it_missed() {
        let mut h = Harness::new(config());
        let (mut body, _) = fresh(&h, A).await;
        let mut engine = h.engine().await;
        engine.until_subscribed(&["a/#"]).await;
        engine.publish("a/1", "1").await;
        engine.publish("a/2", "2").await;
        message(&body.next_event().await, "a/1", "1");
        let seen = body.next_event().await;
        message(&seen, "a/2", "2");
        drop(body);
        // Published while the client is away.
        engine.publish("a/3", "3").await;
        engine.publish("a/4", "4").await;
        let last = seen.id.clone().unwrap();
        let mut body = SseBody::new(h.get(A, &[("Last-Event-ID", &last)]).await);
        message(&body.next_event().await, "a/3", "3");
        message(&body.next_event().await, "a/4", "4");
        engine.publish("a/5", "5").await;
        message(&body.next_event().await, "a/5", "5");
        assert_eq!(h.gateway.opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_reconnect_before_any_message_resumes_from_its_start() {
        let mut h = Harness::new(config());
        let (body, start) = fresh(&h, A).await;
        let mut engine = h.engine().await;
        engine.until_subscribed(&["a/#"]).await;
        drop(body);
        engine.publish("a/1", "while away").await;
        let mut body = SseBody::new(h.get(A, &[("Last-Event-ID", &start)]).await);
        message(&body.next_event().await, "a/1", "while away");
    }

    #[tokio::test]
    async fn the_query_parameter_resumes_too_and_the_header_wins() {
        let mut h = Harness::new(config());
        let (mut body, _) = fresh(&h, A).await;
        let mut engine = h.engine().await;
        engine.until_subscribed(&["a/#"]).await;
        engine.publish("a/1", "1").await;
        engine.publish("a/2", "2").await;
        let one = body.next_event().await.id.unwrap();
        let two = body.next_event().await.id.unwrap();
        drop(body);
        let by_query = format!("{A}&last_event_id={one}");
        let mut body = SseBody::new(h.get(&by_query, &[]).await);
        message(&body.next_event().await, "a/2", "2");
        drop(body);
        // The URL keeps the first id while EventSource's header moves on: the header wins.
        let mut body = SseBody::new(h.get(&by_query, &[("Last-Event-ID", &two)]).await);
        engine.publish("a/3", "3").await;
        message(&body.next_event().await, "a/3", "3");
    }

    #[tokio::test]
    async fn a_reconnect_outside_the_history_gets_a_reset_then_what_is_left() {
        let mut h = Harness::new(crate::HttpConfig {
            history_size: 2,
            ..config()
        });
        let (mut body, _) = fresh(&h, A).await;
        let mut engine = h.engine().await;
        engine.until_subscribed(&["a/#"]).await;
        engine.publish("a/1", "1").await;
        let seen = body.next_event().await.id.unwrap();
        drop(body);
        // Another reader witnesses when the hub has taken in the messages.
        let (mut witness, _) = fresh(&h, A).await;
        for i in 2..=5 {
            engine.publish(&format!("a/{i}"), &i.to_string()).await;
        }
        for i in 2..=5 {
            message(
                &witness.next_event().await,
                &format!("a/{i}"),
                &i.to_string(),
            );
        }
        let mut body = SseBody::new(h.get(A, &[("Last-Event-ID", &seen)]).await);
        let reset = body.next_event().await;
        assert_eq!(reset.event.as_deref(), Some("reset"));
        assert_eq!(
            reset.id, None,
            "messages follow: the client's id moves with them"
        );
        assert_eq!(
            reset.json(),
            serde_json::json!({"reset": [{"filter": "a/#", "reason": "evicted"}]})
        );
        message(&body.next_event().await, "a/4", "4");
        message(&body.next_event().await, "a/5", "5");
        engine.publish("a/6", "6").await;
        message(&body.next_event().await, "a/6", "6");
    }

    #[tokio::test]
    async fn a_position_from_another_run_is_a_reset_with_its_own_id() {
        let mut h = Harness::new(config());
        let (body, _) = fresh(&h, A).await;
        h.engine().await.until_subscribed(&["a/#"]).await;
        drop(body);
        let mut body = SseBody::new(h.get(A, &[("Last-Event-ID", "abc-12")]).await);
        let reset = body.next_event().await;
        assert_eq!(reset.event.as_deref(), Some("reset"));
        assert_eq!(reset.json()["reset"][0]["reason"], "restarted");
        let id = reset
            .id
            .expect("nothing follows: the reset carries the position");
        assert!(!id.starts_with("abc-"));
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_an_idle_stream_talking() {
        let h = Harness::new(crate::HttpConfig {
            heartbeat_secs: 5,
            ..config()
        });
        let (mut body, _) = fresh(&h, A).await;
        let before = tokio::time::Instant::now();
        let beat = body.next().await.unwrap();
        assert_eq!(beat.comments, ["heartbeat"]);
        assert_eq!(beat.id, None);
        assert!(before.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_closed_tap_is_an_error_event_and_the_end_of_the_stream() {
        let mut h = Harness::new(config());
        let (mut body, _) = fresh(&h, A).await;
        drop(h.engine().await);
        let error = body.next_event().await;
        assert_eq!(error.event.as_deref(), Some("error"));
        assert_eq!(error.json()["error"]["code"], "unavailable");
        assert_eq!(body.next().await, None);
    }

    #[tokio::test]
    async fn draining_ends_the_stream() {
        let h = Harness::new(config());
        let (mut body, _) = fresh(&h, A).await;
        h.stop.cancel();
        assert_eq!(body.next().await, None);
    }

    #[tokio::test]
    async fn a_tap_that_cannot_open_is_503() {
        let h = Harness::new(config());
        h.gateway.refuse.store(true, Ordering::SeqCst);
        let response = h.get(A, &[]).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(json(response).await["error"]["code"], "unavailable");
    }

    #[tokio::test]
    async fn bad_requests_are_400_before_the_stream_starts() {
        let h = Harness::new(config());
        for (uri, code) in [
            ("/v1/subscribe", "bad_request"),
            ("/v1/subscribe?filter=a/%23/b", "invalid_topic"),
            ("/v1/subscribe?filter=%24share/g/a", "invalid_topic"),
            ("/v1/subscribe?filter=", "invalid_topic"),
            (
                "/v1/subscribe?filter=a&filter=b&filter=c&filter=d&filter=e",
                "bad_request",
            ),
            ("/v1/subscribe?filter=a&last_event_id=nope", "bad_request"),
        ] {
            let response = h.get(uri, &[]).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(json(response).await["error"]["code"], code, "{uri}");
        }
        let response = h.get(A, &[("Last-Event-ID", "12")]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(h.gateway.opened.load(Ordering::SeqCst), 0, "nothing opened");
    }

    #[tokio::test]
    async fn a_stream_needs_a_publish_token() {
        let h = Harness::new(config());
        let request = axum::http::Request::get(A)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(h.app.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn streams_beyond_max_streams_are_429() {
        let h = Harness::new(crate::HttpConfig {
            max_streams: 1,
            ..config()
        });
        let (body, _) = fresh(&h, A).await;
        let refused = h.get(A, &[]).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(json(refused).await["error"]["code"], "rate_limited");
        let poll = h.get("/v1/poll?filter=a&timeout=0", &[]).await;
        assert_eq!(poll.status(), StatusCode::TOO_MANY_REQUESTS);
        drop(body);
        fresh(&h, A).await;
    }

    #[tokio::test]
    async fn a_topic_with_a_line_break_is_named_message() {
        let delivery = std::sync::Arc::new(crate::stream::history::Delivery {
            seq: 1,
            ids: vec![1],
            message: crate::stream::history::tests::message("a\r\nb", "x"),
        });
        let position = crate::stream::position::Position {
            epoch: crate::stream::position::Epoch(1),
            seq: 1,
        };
        let event = render(Item::Message { position, delivery });
        let stream = futures_util::stream::iter([Ok::<_, Infallible>(event)]);
        let mut body = SseBody::new(Sse::new(stream).into_response());
        let event = body.next_event().await;
        assert_eq!(event.event.as_deref(), Some("message"));
        assert_eq!(event.json()["topic"], "a\r\nb");
        assert_eq!(event.id.as_deref(), Some("1-1"));
    }
}
