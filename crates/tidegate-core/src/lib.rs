//! # tidegate-core
//!
//! The sans-IO MQTT broker engine of Tidegate: everything a session promises (connect, takeover,
//! QoS 1/2 in both directions, inflight windows, resend on resume, keep alive, wills, expiry,
//! topic aliases, flow control) plus the topic tree, retained messages, shared subscriptions and
//! offline queues, each per tenant, with the tenant's ACL and quotas enforced
//! ([`Broker::handle_connect`] with an [`Authorized`]). Plain structs driven by events and a clock value passed in; no tokio, no
//! sockets, no reading of the system clock.
//!
//! Place in the data flow: the IO shell (`tidegate-server`) decodes packets with
//! `tidegate-protocol` and feeds them to [`Broker`]; the broker answers with [`Output`]s (packets
//! to send to a connection, connections to close) and a next deadline.
//!
//! Call order for a driver:
//! 1. [`Broker::handle_open`] when a socket is accepted (starts the CONNECT timeout);
//! 2. [`Broker::handle_packet`] for each decoded packet, [`Broker::handle_decode_error`] when the
//!    codec rejects bytes, [`Broker::handle_closed`] when the socket ends;
//! 3. [`Broker::handle_timeout`] whenever the instant from [`Broker::poll_timeout`] has passed;
//! 4. after each of the above, drain [`Broker::poll_output`] until it returns `None`.

pub mod broker;
pub mod config;
pub mod message;
pub mod queue;
pub mod retained;
pub mod router;

pub use broker::{
    API_CONN, ApiAccepted, ApiPublish, ApiRefusal, Authorized, BatchId, Broker, ClientView, ConnId,
    ConnInfo, DisconnectSide, Kicked, LATENCY_BUCKETS_US, LatencyHistogram, Output, QosCounts,
    QuotaRefusals, ReasonCounts, RestoreReport, SessionView, Stats, StoreBatch, SubscriptionView,
    TenantCounters, TenantLimits,
};
pub use config::{BrokerConfig, ConfigError, QueueDropPolicy};
pub use message::Message;
/// The store records and operations the broker emits and restores from.
pub use tidegate_store as store;
