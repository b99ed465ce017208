//! Per-session message queues: deliveries that wait for a session's inflight window, or for its
//! client to come back.
//!
//! Place in the data flow: `router -> broker delivery -> MessageQueue -> (window opens or client
//! reconnects) -> PUBLISH`. Every queue is bounded by `max_queued_messages`; what goes when it
//! is full is the [`QueueDropPolicy`], so one slow or absent subscriber costs bounded memory and
//! never slows the publisher down.
//!
//! QoS 0 and QoS 1/2 deliveries are kept in two FIFOs tagged with one arrival sequence number:
//! popping in arrival order compares the two heads, and "drop the oldest QoS 0 first" is a pop
//! from the QoS 0 FIFO — both O(1), where a single FIFO would need a scan to find the oldest
//! QoS 0 entry in a 10,000-message queue.

use crate::Message;
use crate::config::QueueDropPolicy;
use std::collections::VecDeque;
use std::sync::Arc;
use tidegate_protocol::QoS;

/// One delivery to one session: the shared message plus what is particular to this subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The message, shared with the other subscribers.
    pub message: Arc<Message>,
    /// Delivery QoS: min(message QoS, granted QoS).
    pub qos: QoS,
    /// RETAIN flag to send (retain-as-published, or a retained replay).
    pub retain: bool,
    /// Identifiers of the subscriptions that matched (MQTT 5).
    pub subscription_identifiers: Vec<u32>,
}

/// What [`MessageQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued, nothing dropped.
    Queued,
    /// Queued after dropping an older entry to make room.
    QueuedDroppedOldest,
    /// The new entry was refused (queue full under its policy, or a zero limit).
    Rejected,
}

/// A bounded FIFO of [`Queued`] deliveries with a drop policy and a count of what it dropped.
#[derive(Debug)]
pub struct MessageQueue {
    limit: usize,
    policy: QueueDropPolicy,
    qos0: VecDeque<(u64, Queued)>,
    acked: VecDeque<(u64, Queued)>,
    next_seq: u64,
    dropped: u64,
}

impl MessageQueue {
    /// An empty queue holding at most `limit` entries.
    pub fn new(limit: usize, policy: QueueDropPolicy) -> MessageQueue {
        MessageQueue {
            limit,
            policy,
            qos0: VecDeque::new(),
            acked: VecDeque::new(),
            next_seq: 0,
            dropped: 0,
        }
    }

    /// Appends `item`, making room according to the policy when full. Under
    /// [`QueueDropPolicy::DropOldest`] the oldest QoS 0 entry goes first — the incoming entry
    /// counts, so a new QoS 0 message is refused rather than evicting a QoS 1/2 one — and the
    /// oldest entry otherwise.
    pub fn push(&mut self, item: Queued) -> PushOutcome {
        if self.limit == 0 {
            self.dropped += 1;
            return PushOutcome::Rejected;
        }
        let mut outcome = PushOutcome::Queued;
        if self.len() >= self.limit {
            match self.policy {
                QueueDropPolicy::DropNewest => {
                    self.dropped += 1;
                    return PushOutcome::Rejected;
                }
                QueueDropPolicy::DropOldest => {
                    if self.qos0.pop_front().is_none() {
                        if item.qos == QoS::AtMostOnce {
                            self.dropped += 1;
                            return PushOutcome::Rejected;
                        }
                        self.acked.pop_front();
                    }
                    self.dropped += 1;
                    outcome = PushOutcome::QueuedDroppedOldest;
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if item.qos == QoS::AtMostOnce {
            self.qos0.push_back((seq, item));
        } else {
            self.acked.push_back((seq, item));
        }
        outcome
    }

    /// The delivery QoS of the oldest entry.
    pub fn front_qos(&self) -> Option<QoS> {
        self.front_is_qos0().map(|qos0| {
            if qos0 {
                QoS::AtMostOnce
            } else {
                self.acked.front().map_or(QoS::AtLeastOnce, |(_, q)| q.qos)
            }
        })
    }

    /// Removes and returns the oldest entry.
    pub fn pop_front(&mut self) -> Option<Queued> {
        match self.front_is_qos0()? {
            true => self.qos0.pop_front(),
            false => self.acked.pop_front(),
        }
        .map(|(_, q)| q)
    }

    /// Removes and returns the oldest QoS 0 entry, even if QoS 1/2 entries are older: QoS 0
    /// needs no inflight slot, so it need not wait behind a full window (MQTT orders messages
    /// per QoS level, section 4.6).
    pub fn pop_qos0(&mut self) -> Option<Queued> {
        self.qos0.pop_front().map(|(_, q)| q)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.qos0.len() + self.acked.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.qos0.is_empty() && self.acked.is_empty()
    }

    /// Entries dropped or refused by the limit since the queue was created.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn front_is_qos0(&self) -> Option<bool> {
        match (self.qos0.front(), self.acked.front()) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some((a, _)), Some((b, _))) => Some(a < b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tidegate_protocol::{PublishProperties, Utf8};

    fn item(n: u8, qos: QoS) -> Queued {
        Queued {
            message: Arc::new(Message {
                topic: Utf8::from_static("t"),
                payload: Bytes::copy_from_slice(&[n]),
                qos,
                retain: false,
                properties: PublishProperties::default(),
                expires_at: None,
                publisher: None,
            }),
            qos,
            retain: false,
            subscription_identifiers: Vec::new(),
        }
    }

    fn drain(q: &mut MessageQueue) -> Vec<u8> {
        std::iter::from_fn(|| q.pop_front())
            .map(|i| i.message.payload[0])
            .collect()
    }

    #[test]
    fn pops_in_arrival_order_across_qos_levels() {
        let mut q = MessageQueue::new(10, QueueDropPolicy::DropOldest);
        q.push(item(1, QoS::AtLeastOnce));
        q.push(item(2, QoS::AtMostOnce));
        q.push(item(3, QoS::ExactlyOnce));
        q.push(item(4, QoS::AtMostOnce));
        assert_eq!(q.front_qos(), Some(QoS::AtLeastOnce));
        assert_eq!(q.len(), 4);
        assert_eq!(drain(&mut q), vec![1, 2, 3, 4]);
        assert!(q.is_empty());
        assert_eq!(q.front_qos(), None);
    }

    #[test]
    fn drop_oldest_evicts_qos0_first_then_oldest() {
        let mut q = MessageQueue::new(3, QueueDropPolicy::DropOldest);
        q.push(item(1, QoS::AtLeastOnce));
        q.push(item(2, QoS::AtMostOnce));
        q.push(item(3, QoS::AtLeastOnce));
        assert_eq!(
            q.push(item(4, QoS::AtLeastOnce)),
            PushOutcome::QueuedDroppedOldest
        );
        assert_eq!(
            q.push(item(5, QoS::ExactlyOnce)),
            PushOutcome::QueuedDroppedOldest
        );
        assert_eq!(q.dropped(), 2);
        assert_eq!(drain(&mut q), vec![3, 4, 5]);
    }

    #[test]
    fn drop_oldest_refuses_new_qos0_instead_of_evicting_qos1() {
        let mut q = MessageQueue::new(2, QueueDropPolicy::DropOldest);
        q.push(item(1, QoS::AtLeastOnce));
        q.push(item(2, QoS::AtLeastOnce));
        assert_eq!(q.push(item(3, QoS::AtMostOnce)), PushOutcome::Rejected);
        assert_eq!(q.dropped(), 1);
        assert_eq!(drain(&mut q), vec![1, 2]);
    }

    #[test]
    fn drop_newest_refuses_when_full_and_zero_limit_refuses_all() {
        let mut q = MessageQueue::new(1, QueueDropPolicy::DropNewest);
        assert_eq!(q.push(item(1, QoS::AtMostOnce)), PushOutcome::Queued);
        assert_eq!(q.push(item(2, QoS::AtLeastOnce)), PushOutcome::Rejected);
        assert_eq!(drain(&mut q), vec![1]);
        let mut z = MessageQueue::new(0, QueueDropPolicy::DropOldest);
        assert_eq!(z.push(item(1, QoS::AtLeastOnce)), PushOutcome::Rejected);
        assert_eq!(z.dropped(), 1);
    }

    #[test]
    fn pop_qos0_skips_ahead_of_waiting_qos1() {
        let mut q = MessageQueue::new(10, QueueDropPolicy::DropOldest);
        q.push(item(1, QoS::AtLeastOnce));
        q.push(item(2, QoS::AtMostOnce));
        assert_eq!(q.pop_qos0().map(|i| i.message.payload[0]), Some(2));
        assert_eq!(q.pop_qos0(), None);
        assert_eq!(drain(&mut q), vec![1]);
    }
}
