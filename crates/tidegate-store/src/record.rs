//! The records the broker persists: what one session, one queued delivery, one inflight entry
//! and one retained message look like once they leave the engine.
//!
//! Place in the data flow: `tidegate-core` builds these from its in-memory state when it emits
//! a [`StoreOp`](crate::StoreOp), a backend stores them, and at start-up the backend hands them
//! back in a [`Snapshot`] from which the core rebuilds its state.
//!
//! Two rules shape them:
//! - **Time is wall-clock** ([`UnixMillis`]): an `Instant` means nothing after a restart, so
//!   every deadline (message expiry, session expiry, will delay) is stored as milliseconds since
//!   the Unix epoch and turned back into an `Instant` when loaded.
//! - **No engine-internal ids**: a session is named by its client identifier (the engine's
//!   session keys are not stable across restarts), a publisher too (for No Local on retained
//!   messages).

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tidegate_protocol::{PacketId, PublishProperties, QoS, SubscriptionOptions, Utf8, Will};

/// Milliseconds since the Unix epoch: how the store keeps deadlines, so that they keep their
/// meaning across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The wall-clock time `t` (times before the epoch count as the epoch).
    pub fn from_system(t: SystemTime) -> UnixMillis {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> UnixMillis {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        UnixMillis(self.0.saturating_add(ms))
    }

    /// How long from `self` until `later` (zero when `later` is not later).
    pub fn until(self, later: UnixMillis) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }
}

/// An application message as stored: in a queue, an inflight entry or the retained store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Topic name.
    pub topic: Utf8,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Properties forwarded to subscribers (per-hop ones already removed by the engine).
    pub properties: PublishProperties,
    /// When the message expires, if it does.
    pub expires_at: Option<UnixMillis>,
    /// Client identifier of the publisher, for No Local on retained replays.
    pub publisher: Option<Arc<str>>,
}

/// One delivery to one session: the message plus what is particular to this subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    /// The message, shared by every record of one fan-out.
    pub message: Arc<MessageRecord>,
    /// Delivery QoS.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Identifiers of the subscriptions that matched.
    pub subscription_identifiers: Vec<u32>,
}

/// Where an outbound QoS 1/2 delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflightStage {
    /// QoS 1 PUBLISH sent, PUBACK awaited.
    AwaitingAck(QueuedRecord),
    /// QoS 2 PUBLISH sent, PUBREC awaited.
    AwaitingRec(QueuedRecord),
    /// PUBREL sent, PUBCOMP awaited: the message itself is no longer needed.
    AwaitingComp,
}

/// One outbound delivery that was sent and not yet completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightRecord {
    /// The packet id it was sent with.
    pub packet_id: PacketId,
    /// Send order within the session, so a resume resends in the original order.
    pub seq: u64,
    /// What is awaited.
    pub stage: InflightStage,
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The filter as subscribed (`$share/group/...` included).
    pub filter: Arc<str>,
    /// Options, QoS already capped to what was granted.
    pub options: SubscriptionOptions,
    /// MQTT 5 Subscription Identifier.
    pub identifier: Option<u32>,
}

/// A will waiting for its delay or for the end of its offline session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWillRecord {
    /// The will, published as is.
    pub will: Will,
    /// When it is published; `None` for a delay beyond what a clock holds (it then waits for
    /// the end of the session).
    pub publish_at: Option<UnixMillis>,
}

/// Whether a client was attached to the session at the last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// A client was connected. After a restart its connection is gone as after an abnormal
    /// disconnect at start-up: the will goes out (after its delay) and the expiry clock starts.
    Connected {
        /// The will of that connection.
        will: Option<Will>,
    },
    /// No client: the session waits for one until `expires_at`.
    Offline {
        /// When the session ends; `None` never.
        expires_at: Option<UnixMillis>,
        /// A will still waiting for its delay.
        will: Option<PendingWillRecord>,
    },
}

/// The small, often rewritten part of a session: its identity, expiry and will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Client identifier: the session's key in the store.
    pub client_id: Arc<str>,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// Online or offline, with the deadlines that go with it.
    pub presence: Presence,
}

/// A queued delivery as listed at start-up: its place and QoS, not its message (messages are
/// loaded when the client comes back, see [`QueueLoad`](crate::QueueLoad)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueIndexEntry {
    /// Position in the session's queue (ascending = arrival order).
    pub seq: u64,
    /// Delivery QoS.
    pub qos: QoS,
}

/// Everything stored for one session, as loaded at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The session record.
    pub record: SessionRecord,
    /// Its subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Inbound QoS 2 packet ids whose PUBREL has not arrived.
    pub inbound_qos2: Vec<PacketId>,
    /// Outbound deliveries in flight, in send order.
    pub inflight: Vec<InflightRecord>,
    /// The queue, in arrival order, without the messages.
    pub queue: Vec<QueueIndexEntry>,
}

impl StoredSession {
    /// A session with nothing but its record.
    pub fn new(record: SessionRecord) -> StoredSession {
        StoredSession {
            record,
            subscriptions: Vec::new(),
            inbound_qos2: Vec::new(),
            inflight: Vec::new(),
            queue: Vec::new(),
        }
    }
}

/// The whole store, as loaded at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every session, in client-id order.
    pub sessions: Vec<StoredSession>,
    /// Every retained message, in topic order.
    pub retained: Vec<Arc<MessageRecord>>,
    /// Client ids that own subscriptions, queue or inflight entries but no session record
    /// (left by a write that failed half-way); the engine deletes them.
    pub orphans: Vec<Arc<str>>,
}

/// What the admin API last did to one tenant (issue 7), kept so API changes survive a
/// restart. The store does not interpret the configuration: it is the JSON of a
/// `tidegate_auth::TenantConfig`, validated by the server before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// The tenant id: the record's key.
    pub id: Arc<str>,
    /// The tenant's configuration as JSON; `None` when the API deleted the tenant, so that a
    /// tenant of the same id declared in the configuration file stays deleted after a restart.
    pub config: Option<Bytes>,
}

/// The answer to one [`QueueLoad`](crate::QueueLoad).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueChunk {
    /// The tag of the request.
    pub tag: u64,
    /// Entries with `seq >= from_seq`, ascending, at most `limit` of them.
    pub entries: Vec<(u64, QueuedRecord)>,
    /// True when the store held fewer than `limit` such entries (the queue ends here).
    pub complete: bool,
}
