//! SSE and long-poll subscriptions: `GET /v1/subscribe` and `GET /v1/poll`.
//!
//! Place in the data flow (one hub per tenant, each with its own tap session in its tenant):
//! ```text
//! engine ──Tap.messages──▶ hub pump ──▶ HubCore (seq, per-filter histories) ──▶ broadcast
//!    ▲                                        ▲                                   │
//!    └──Tap.commands◀── outbox ───────────────┘ acquire / resume / release        ▼
//!                                                                     Reader ──▶ sse | poll
//! ```
//! - [`position`]: the `<epoch>-<seq>` positions clients resume from.
//! - [`history`] and [`core`]: the sans-IO rules (histories, resets, ref-counted filters).
//! - [`hub`]: one tenant's tap and its pump task; [`hubs`]: a hub per tenant, and the ACL check
//!   of a reader's filters; [`reader`]: what each request reads through.
//! - [`query`]: request parameters, checked before anything opens.
//! - [`sse`] and [`poll`]: the two endpoints.

mod core;
mod history;
mod hub;
mod hubs;
mod poll;
mod position;
mod query;
mod reader;
mod sse;
#[cfg(test)]
mod testkit;

pub(crate) use hubs::Hubs;

use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The stream endpoints (`/v1/subscribe`, `/v1/poll`), to be merged into the app's router.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sse::subscribe))
        .routes(routes!(poll::poll))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn the_stream_routes_are_described() {
        let doc: Value =
            serde_json::from_str(&super::routes().into_openapi().to_json().unwrap()).unwrap();
        let subscribe = &doc["paths"]["/v1/subscribe"]["get"];
        let params: Vec<(&str, &str)> = subscribe["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
            .collect();
        assert_eq!(
            params,
            [
                ("filter", "query"),
                ("last_event_id", "query"),
                ("Last-Event-ID", "header")
            ]
        );
        assert!(subscribe["responses"]["200"]["content"]["text/event-stream"].is_object());
        for status in ["400", "401", "403", "503"] {
            assert!(subscribe["responses"][status].is_object(), "{status}");
        }
        let busy = subscribe["responses"]["429"]["description"]
            .as_str()
            .unwrap();
        assert!(busy.contains("max_streams"), "{busy}");
        let poll = &doc["paths"]["/v1/poll"]["get"];
        assert_eq!(
            poll["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/PollResponse"
        );
        let schemas = &doc["components"]["schemas"];
        for schema in [
            "PollResponse",
            "PollMessage",
            "Reset",
            "ResetReason",
            "MessageJson",
        ] {
            assert!(schemas[schema].is_object(), "{schema}");
        }
        assert_eq!(
            schemas["ResetReason"]["enum"],
            serde_json::json!(["evicted", "not_tracked", "restarted"])
        );
    }
}
