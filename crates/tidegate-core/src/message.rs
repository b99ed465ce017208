//! [`Message`]: an application message as routed inside the engine, independent of the
//! connection it came from or goes to. Shared by reference count between the subscribers and
//! queues it is fanned out to.

use bytes::Bytes;
use std::time::Instant;
use tidegate_protocol::{PublishProperties, QoS, Utf8};

/// An application message after it was accepted from a publisher (or a will, or a retained
/// store). Topic aliases are already resolved; subscription identifiers are not part of it (they
/// are added per subscriber on delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name, never empty.
    pub topic: Utf8,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with (delivery QoS is min(this, subscription QoS)).
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Properties to forward (payload format, content type, response topic, correlation data,
    /// user properties). `topic_alias`, `subscription_identifiers` and
    /// `message_expiry_interval` are cleared: expiry lives in `expires_at`.
    pub properties: PublishProperties,
    /// When the message expires (from Message Expiry Interval); the remaining interval is
    /// forwarded on delivery, and an expired message is not delivered.
    pub expires_at: Option<Instant>,
    /// The session that published it, for No Local. `None` for wills sent after the session is
    /// gone, retained replays and system messages.
    pub publisher: Option<u64>,
}
