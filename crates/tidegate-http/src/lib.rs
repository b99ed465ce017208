//! # tidegate-http
//!
//! The HTTP face of Tidegate (issue 6): for thin clients and backends that cannot hold an MQTT
//! session, and for operators.
//!
//! - `POST /v1/publish`, `POST /v1/publish/batch`: messages enter the same engine as MQTT ones.
//! - `GET /v1/subscribe` (Server-Sent Events) and `GET /v1/poll` (long-poll): messages of a set
//!   of filters, resumable from a position through a bounded per-filter history.
//! - `GET /v1/retained`; `/v1/admin/...`: clients, sessions, subscriptions, retained, stats,
//!   and the tenants (`/v1/admin/tenants`: list, create, show, replace, delete).
//! - `GET /metrics` (Prometheus), `GET /healthz`, `GET /readyz`, `GET /v1/openapi.json`.
//!
//! Place in the data flow: `socket (served by tidegate-server) -> axum Router (this crate) ->
//! Gateway (implemented by tidegate-server over its engine task) -> Broker`. This crate holds no
//! socket and no broker: it turns HTTP into [`Gateway`] calls and the answers into JSON/SSE.

mod admin;
mod app;
mod auth;
pub mod config;
mod error;
mod extract;
pub mod gateway;
mod json;
mod limit;
mod openapi;
mod ops;
mod publish;
mod retained;
mod state;
mod stream;
mod tenants;
#[cfg(test)]
mod testing;

pub use config::HttpConfig;
pub use gateway::{
    BoxFuture, ClientInfo, ClientQuery, Gateway, GatewayError, GatewayStats, KickOutcome,
    MessageProperties, Page, PublishOutcome, PublishRequest, RetainedMessage, SessionInfo,
    SessionQuery, SubscriptionInfo, Tap, TapCommand, TapMessage, TenantDeleted, TenantError,
    TenantSource, TenantView,
};
pub use state::Http;
