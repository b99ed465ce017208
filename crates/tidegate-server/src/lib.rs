//! # tidegate-server
//!
//! The tokio IO shell of Tidegate: configuration, command line, listeners, one task per
//! connection, one engine task owning the sans-IO [`tidegate_core::Broker`], graceful shutdown
//! and logs. The `tidegate` binary is a thin `main` over this library, and tests start a server
//! in-process with [`Server::bind`] and [`Server::serve`].
//!
//! Place in the data flow:
//! ```text
//! socket ──accept──▶ listener ──▶ [PROXY] [TLS] [WebSocket] ──spawn──▶ connection task
//!                                         │ bytes → Decoder → EngineEvent
//!                                         ▼         (one bounded mpsc for all)
//!                                      engine task: Broker::handle_* / handle_timeout
//!                                         │ poll_output()
//!                                         ▼
//!                        Outbox of the target connection (bounded; QoS 0 dropped or
//!                        slow consumer closed when full) → encode → one write per wake-up
//!                        (at most WRITE_BATCH packets, then the task yields)
//! ```
//! - [`config`] / [`cli`]: what to run, layered file → environment → flags, validated;
//!   [`tenant_cli`]: `tidegate tenant ...`, a client of the admin API;
//! - `listener`: accept loops, connection limits and accept rate, connection ids;
//! - `transport`: PROXY header, TLS, WebSocket and Unix sockets turned into one byte stream
//!   per connection plus what they tell about the peer (`ConnInfo`);
//! - `reload`: certificate reload on SIGHUP and file change; [`dev_cert`]: `serve --dev`;
//! - `connection`: socket ⇄ codec ⇄ engine for one client, and its connect/disconnect log lines;
//! - `auth`: the CONNECT check (tenant, credentials, HTTP hook, brute-force limiter) between
//!   the decoder and the engine; `tenants`: the live, swappable set of tenants it reads;
//!   `throttle`: a tenant's byte rates (reader backpressure) and packet size per connection;
//! - `engine`: the only owner of the broker, so the fan-out path takes no lock; group commit
//!   of the broker's store batches;
//! - [`storage`]: opening `<data_dir>/store` and restoring the broker at start-up, the store's
//!   writer thread and its fsync policy;
//! - `outbox`: the per-connection outbound queue and its full-queue policy;
//! - `api`: the gateway's own API (HTTP publish, admin, metrics) as requests to the engine;
//!   `tap`: the HTTP stream hub's internal session; `metrics`: the Prometheus exposition;
//!   `http`: the `http` / `https` listeners serving [`tidegate_http`]'s router;
//!   `tenant_admin`: tenants created, replaced and deleted live, kept in the store;
//! - [`shutdown`]: signals and the bounded graceful shutdown;
//! - [`logging`]: `tracing-subscriber` set-up.

mod api;
mod auth;
pub mod cli;
pub mod config;
mod connection;
pub mod dev_cert;
mod engine;
mod http;
pub mod http_tokens;
mod listener;
pub mod logging;
mod metrics;
mod outbox;
mod reload;
mod server;
pub mod shutdown;
pub mod stats;
pub mod storage;
mod tap;
mod tenant_admin;
pub mod tenant_cli;
mod tenants;
mod throttle;
mod transport;

pub use config::Config;
pub use server::{Server, ServerControl, ServerError, run};
pub use stats::Stats;
pub use transport::tls::{TlsError, install_default_provider};
