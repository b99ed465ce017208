//! [`Session`]: the state MQTT keeps per client identifier, which outlives a network connection
//! when the session expiry interval is above 0 (MQTT 5) or Clean Session is 0 (3.1.1).
//!
//! Place in the data flow: the broker looks a session up by client id at CONNECT, attaches the
//! connection to it, and delivers routed messages into it: straight to the connection when the
//! inflight window has room, into its [`MessageQueue`] otherwise. Acknowledgements from the
//! client release inflight slots and let the queue flow.
//!
//! Outbound inflight entries are keyed by packet id for O(1) acknowledgement and carry a send
//! sequence number, so a resumed session can resend them in their original order
//! [MQTT-4.4.0-1] by sorting (a rare event) instead of keeping a second ordered index.

use super::ConnId;
use super::tenant::TenantIdx;
use super::timers::TimerKey;
use crate::queue::{MessageQueue, Queued};
use crate::router::SubscriptionEntry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tidegate_protocol::{PacketId, Will};

/// One client's session.
#[derive(Debug)]
pub(super) struct Session {
    /// The client identifier (also the key of its tenant's by-client-id index).
    pub(super) client_id: Arc<str>,
    /// The tenant the session belongs to.
    pub(super) tenant: TenantIdx,
    /// The name of the session in the store: the client id itself in the default tenant (the
    /// same `Arc`), `{tenant}\u{1F}{client id}` in others (see the tenant module).
    pub(super) store_id: Arc<str>,
    /// The connection attached to it, if the client is online.
    pub(super) conn: Option<ConnId>,
    /// Filter (as subscribed, `$share/...` included) → options, mirrored in the router.
    pub(super) subscriptions: HashMap<String, SubscriptionEntry>,
    /// Outbound QoS 1/2 deliveries not yet completed.
    pub(super) inflight: Inflight,
    /// Deliveries waiting for the inflight window or for the client.
    pub(super) queue: MessageQueue,
    /// Inbound QoS 2 packet ids whose PUBREC was sent and PUBREL not received: a PUBLISH
    /// resent with one of them is acknowledged again but not routed twice.
    pub(super) inbound_qos2: HashSet<PacketId>,
    /// Session expiry interval in seconds; `u32::MAX` never expires, 0 ends with the connection.
    pub(super) expiry: u32,
    /// Armed while the session is disconnected and expires.
    pub(super) expiry_timer: Option<TimerKey>,
    /// The will of the last connection, waiting for its Will Delay Interval.
    pub(super) pending_will: Option<PendingWill>,
    /// Its state is persisted: the broker persists, and the session was created with an
    /// expiry interval above 0 (a session that ends with its connection has nothing to keep).
    pub(super) durable: bool,
}

/// A will whose publication waits for the Will Delay Interval or the end of the session,
/// whichever comes first; cancelled when the client reconnects to the session [MQTT-3.1.3-9].
#[derive(Debug)]
pub(super) struct PendingWill {
    /// The will, published as is.
    pub(super) will: Box<Will>,
    /// The will-delay deadline (`None` for a delay beyond `Instant`'s range: the will then
    /// waits for the end of the session).
    pub(super) timer: Option<TimerKey>,
}

impl Session {
    /// A fresh session with nothing in it.
    pub(super) fn new(
        (tenant, client_id, store_id): (TenantIdx, Arc<str>, Arc<str>),
        expiry: u32,
        queue: MessageQueue,
        durable: bool,
    ) -> Session {
        Session {
            client_id,
            tenant,
            store_id,
            conn: None,
            subscriptions: HashMap::new(),
            inflight: Inflight::default(),
            queue,
            inbound_qos2: HashSet::new(),
            expiry,
            expiry_timer: None,
            pending_will: None,
            durable,
        }
    }
}

/// Where an outbound QoS 1/2 delivery stands.
#[derive(Debug)]
pub(super) enum Awaiting {
    /// QoS 1 PUBLISH sent, PUBACK awaited.
    Ack(Queued),
    /// QoS 2 PUBLISH sent, PUBREC awaited.
    Rec(Queued),
    /// PUBREL sent, PUBCOMP awaited; the message itself is no longer needed.
    Comp,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    stage: Awaiting,
    /// Not yet sent on the current connection (set for every entry at a resume).
    resend: bool,
}

/// The outbound inflight window of one session.
///
/// After a resume every entry must be sent again, in order [MQTT-4.4.0-1], but the new
/// connection's Receive Maximum may be smaller than what is in flight [MQTT-3.3.4-9]: entries
/// are then marked for resend and go out as acknowledgements free the window, before any new
/// message.
#[derive(Debug)]
pub(super) struct Inflight {
    entries: HashMap<PacketId, Entry>,
    next_id: u16,
    next_seq: u64,
    /// Ids marked for resend, in original send order (ids completed meanwhile are skipped).
    resend_order: VecDeque<PacketId>,
    /// Entries with `resend` set.
    unsent: usize,
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight {
            entries: HashMap::new(),
            next_id: 1,
            next_seq: 0,
            resend_order: VecDeque::new(),
            unsent: 0,
        }
    }
}

impl Inflight {
    /// Number of uncompleted deliveries; new messages may only enter while this is below the
    /// window, so a backlog of resends always goes first.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries sent on the current connection and not completed: what the client's Receive
    /// Maximum counts.
    pub(super) fn sent_len(&self) -> usize {
        self.entries.len() - self.unsent
    }

    /// Marks every entry for resend, in original send order (called when a session resumes).
    pub(super) fn mark_all_for_resend(&mut self) {
        let mut ids: Vec<(u64, PacketId)> = self
            .entries
            .iter_mut()
            .map(|(id, e)| {
                e.resend = true;
                (e.seq, *id)
            })
            .collect();
        ids.sort_unstable();
        self.resend_order = ids.into_iter().map(|(_, id)| id).collect();
        self.unsent = self.entries.len();
    }

    /// The oldest entry still to be resent.
    pub(super) fn next_resend(&mut self) -> Option<PacketId> {
        while let Some(&id) = self.resend_order.front() {
            if self.entries.get(&id).is_some_and(|e| e.resend) {
                return Some(id);
            }
            self.resend_order.pop_front();
        }
        None
    }

    /// Records that something for `id` went out on the current connection.
    pub(super) fn mark_sent(&mut self, id: PacketId) {
        if let Some(e) = self.entries.get_mut(&id)
            && e.resend
        {
            e.resend = false;
            self.unsent -= 1;
        }
    }

    /// The next packet id not in use, or `None` when all 65,535 are (the window keeps us far
    /// below that, since it is at most a `u16`).
    pub(super) fn next_free_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            let candidate = PacketId::new(self.next_id);
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if let Some(id) = candidate
                && !self.entries.contains_key(&id)
            {
                return Some(id);
            }
        }
        None
    }

    /// Records a delivery just sent with `id`.
    pub(super) fn insert(&mut self, id: PacketId, stage: Awaiting) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            id,
            Entry {
                seq,
                stage,
                resend: false,
            },
        );
    }

    /// The stage of `id`.
    pub(super) fn stage(&self, id: PacketId) -> Option<&Awaiting> {
        self.entries.get(&id).map(|e| &e.stage)
    }

    /// The send sequence number of `id` (its place in the resend order).
    pub(super) fn seq(&self, id: PacketId) -> Option<u64> {
        self.entries.get(&id).map(|e| e.seq)
    }

    /// The sequence number the next insert will get.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds an entry loaded from the store, keeping its original sequence number.
    pub(super) fn restore(&mut self, id: PacketId, seq: u64, stage: Awaiting) {
        self.next_seq = self.next_seq.max(seq + 1);
        self.entries.insert(
            id,
            Entry {
                seq,
                stage,
                resend: false,
            },
        );
    }

    /// Moves `id` to PUBCOMP-awaited, keeping its place in the resend order.
    pub(super) fn released(&mut self, id: PacketId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.stage = Awaiting::Comp;
        }
    }

    /// Forgets `id`; returns its stage.
    pub(super) fn remove(&mut self, id: PacketId) -> Option<Awaiting> {
        let e = self.entries.remove(&id)?;
        if e.resend {
            self.unsent -= 1;
        }
        Some(e.stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(v: u16) -> PacketId {
        PacketId::new(v).unwrap()
    }

    #[test]
    fn packet_ids_skip_those_in_use_and_wrap_past_zero() {
        let mut f = Inflight::default();
        f.insert(id(2), Awaiting::Comp);
        assert_eq!(f.next_free_id(), Some(id(1)));
        assert_eq!(f.next_free_id(), Some(id(3)));
        f.next_id = u16::MAX;
        assert_eq!(f.next_free_id(), Some(id(u16::MAX)));
        assert_eq!(f.next_free_id(), Some(id(1)));
    }

    #[test]
    fn resend_order_is_send_order_and_skips_completed_entries() {
        let mut f = Inflight::default();
        for v in [9, 3, 5, 7] {
            f.insert(id(v), Awaiting::Comp);
        }
        f.released(id(3));
        assert!(f.remove(id(7)).is_some());
        assert!(f.remove(id(7)).is_none());
        f.mark_all_for_resend();
        assert_eq!((f.len(), f.sent_len()), (3, 0));
        assert_eq!(f.next_resend(), Some(id(9)));
        f.mark_sent(id(9));
        f.mark_sent(id(9));
        assert_eq!(f.sent_len(), 1);
        // Completed before its resend (the client acknowledged it from the old connection).
        assert!(f.remove(id(3)).is_some());
        assert_eq!(f.next_resend(), Some(id(5)));
        f.mark_sent(id(5));
        assert_eq!(f.next_resend(), None);
        assert_eq!((f.len(), f.sent_len()), (2, 2));
        assert!(matches!(f.stage(id(5)), Some(Awaiting::Comp)));
    }
}
