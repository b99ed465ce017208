//! [`StoreOp`]: one change to the persistent state, as the broker emits it.
//!
//! Place in the data flow: `tidegate-core` appends ops to a log while it handles events and
//! hands them out in batches; the engine applies each batch to a [`Store`](crate::Store) in one
//! atomic write. The log order is the order of the events, and a batch is the unit of
//! atomicity, so a crash leaves the store at the end of some batch: the state after a whole
//! number of events, never half an event.

use crate::record::{
    InflightRecord, MessageRecord, QueuedRecord, SessionRecord, SubscriptionRecord,
};
use std::sync::Arc;
use tidegate_protocol::{PacketId, Utf8};

/// One change to the persistent state (or, for [`StoreOp::LoadQueue`], one read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Creates or replaces a session record.
    PutSession(SessionRecord),
    /// Deletes a session with everything it owns (subscriptions, inbound ids, inflight entries,
    /// queue).
    DeleteSession(Arc<str>),
    /// Creates or replaces a subscription.
    PutSubscription {
        /// The session.
        client_id: Arc<str>,
        /// The subscription.
        subscription: SubscriptionRecord,
    },
    /// Deletes a subscription.
    DeleteSubscription {
        /// The session.
        client_id: Arc<str>,
        /// Its filter as subscribed.
        filter: Arc<str>,
    },
    /// Remembers an inbound QoS 2 packet id until PUBREL.
    PutInboundQos2 {
        /// The session.
        client_id: Arc<str>,
        /// The publisher's packet id.
        packet_id: PacketId,
    },
    /// Forgets an inbound QoS 2 packet id (PUBREL came).
    DeleteInboundQos2 {
        /// The session.
        client_id: Arc<str>,
        /// The publisher's packet id.
        packet_id: PacketId,
    },
    /// Creates or replaces an outbound inflight entry (sent, or moved to PUBREL stage).
    PutInflight {
        /// The session.
        client_id: Arc<str>,
        /// The entry.
        record: InflightRecord,
    },
    /// Deletes an outbound inflight entry (completed).
    DeleteInflight {
        /// The session.
        client_id: Arc<str>,
        /// Its packet id.
        packet_id: PacketId,
    },
    /// Appends a delivery to a session's queue at `seq`.
    PutQueued {
        /// The session.
        client_id: Arc<str>,
        /// Position in the queue.
        seq: u64,
        /// The delivery.
        record: QueuedRecord,
    },
    /// Removes a delivery from a session's queue (sent, expired or dropped).
    DeleteQueued {
        /// The session.
        client_id: Arc<str>,
        /// Position in the queue.
        seq: u64,
    },
    /// Creates or replaces the retained message of a topic.
    PutRetained(Arc<MessageRecord>),
    /// Clears the retained message of a topic.
    DeleteRetained(Utf8),
    /// Reads part of a queue; answered by a [`QueueChunk`](crate::QueueChunk) once the batch
    /// holding it is applied (the read sees every write of that batch and of earlier ones).
    LoadQueue(QueueLoad),
}

/// A read of part of one session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLoad {
    /// Echoed in the answer, so the engine can tell which session asked.
    pub tag: u64,
    /// The session.
    pub client_id: Arc<str>,
    /// The first position wanted.
    pub from_seq: u64,
    /// At most this many entries.
    pub limit: usize,
}

impl StoreOp {
    /// True for the reads ([`StoreOp::LoadQueue`]).
    pub fn is_read(&self) -> bool {
        matches!(self, StoreOp::LoadQueue(_))
    }
}
