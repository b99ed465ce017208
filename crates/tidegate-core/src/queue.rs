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

/// [`MessageQueue::push`]'s full answer: the outcome plus the positions a persistent session
/// must write to (and delete from) its stored queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// What happened.
    pub outcome: PushOutcome,
    /// The position the new entry got, when queued.
    pub seq: Option<u64>,
    /// The position of the entry dropped to make room, if any.
    pub evicted: Option<u64>,
}

/// Positions of entries held only by the store, as runs of consecutive positions: a stream of
/// QoS 1 messages to an offline phone is one run, whatever its length, so an offline session
/// costs a few words here instead of a message per entry.
#[derive(Debug, Default)]
struct Runs {
    runs: VecDeque<(u64, u64)>,
    len: usize,
}

impl Runs {
    fn push_back(&mut self, seq: u64) {
        match self.runs.back_mut() {
            Some((start, n)) if *start + *n == seq => *n += 1,
            _ => self.runs.push_back((seq, 1)),
        }
        self.len += 1;
    }

    fn push_front(&mut self, seq: u64) {
        match self.runs.front_mut() {
            Some((start, n)) if seq + 1 == *start => {
                *start = seq;
                *n += 1;
            }
            _ => self.runs.push_front((seq, 1)),
        }
        self.len += 1;
    }

    fn front(&self) -> Option<u64> {
        self.runs.front().map(|(start, _)| *start)
    }

    fn pop_front(&mut self) -> Option<u64> {
        let (start, n) = self.runs.front_mut()?;
        let seq = *start;
        if *n == 1 {
            self.runs.pop_front();
        } else {
            *start += 1;
            *n -= 1;
        }
        self.len -= 1;
        Some(seq)
    }
}

/// A bounded FIFO of [`Queued`] deliveries with a drop policy and a count of what it dropped.
///
/// For a persistent session (after [`MessageQueue::set_memory_window`]) every entry is also in
/// the store, and memory holds at most a window of the oldest ones: the rest are *spilled*
/// (only their positions are kept, in [`Runs`]), and the broker loads them back through the
/// store as the window drains. Memory always holds a prefix of the queue in arrival order.
#[derive(Debug)]
pub struct MessageQueue {
    limit: usize,
    policy: QueueDropPolicy,
    qos0: VecDeque<(u64, Queued)>,
    acked: VecDeque<(u64, Queued)>,
    /// Spilled QoS 0 positions.
    spilled0: Runs,
    /// Spilled QoS 1/2 positions.
    spilled: Runs,
    /// Entries kept in memory before new ones spill; `usize::MAX` for a session that is not
    /// persisted (nothing to spill to).
    memory_window: usize,
    /// `Some(end)` while a load is outstanding: the next position at the time it was asked.
    loading: Option<u64>,
    next_seq: u64,
    dropped: u64,
}

impl MessageQueue {
    /// An empty queue holding at most `limit` entries, all in memory.
    pub fn new(limit: usize, policy: QueueDropPolicy) -> MessageQueue {
        MessageQueue {
            limit,
            policy,
            qos0: VecDeque::new(),
            acked: VecDeque::new(),
            spilled0: Runs::default(),
            spilled: Runs::default(),
            memory_window: usize::MAX,
            loading: None,
            next_seq: 0,
            dropped: 0,
        }
    }

    /// Holds at most `limit` entries from now on. Entries already queued beyond a lowered
    /// limit are kept (they were accepted): the queue shrinks to it as it drains, and until
    /// then every push is handled as for a full queue.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Keeps at most `window` entries in memory from now on; later ones are held by the
    /// store only (the caller persists every entry).
    pub fn set_memory_window(&mut self, window: usize) {
        self.memory_window = window;
    }

    /// Rebuilds the queue of a restored session from the store's index (ascending positions):
    /// every entry starts spilled.
    pub fn restore_index(&mut self, index: impl IntoIterator<Item = (u64, QoS)>) {
        for (seq, qos) in index {
            self.next_seq = self.next_seq.max(seq + 1);
            if qos == QoS::AtMostOnce {
                self.spilled0.push_back(seq);
            } else {
                self.spilled.push_back(seq);
            }
        }
    }

    /// Appends `item`, making room according to the policy when full. Under
    /// [`QueueDropPolicy::DropOldest`] the oldest QoS 0 entry goes first — the incoming entry
    /// counts, so a new QoS 0 message is refused rather than evicting a QoS 1/2 one — and the
    /// oldest entry otherwise.
    pub fn push(&mut self, item: Queued) -> Pushed {
        let rejected = Pushed {
            outcome: PushOutcome::Rejected,
            seq: None,
            evicted: None,
        };
        if self.limit == 0 {
            self.dropped += 1;
            return rejected;
        }
        let mut outcome = PushOutcome::Queued;
        let mut evicted = None;
        if self.len() >= self.limit {
            match self.policy {
                QueueDropPolicy::DropNewest => {
                    self.dropped += 1;
                    return rejected;
                }
                QueueDropPolicy::DropOldest => {
                    // Memory holds the oldest entries, so it is looked at first.
                    evicted = self
                        .qos0
                        .pop_front()
                        .map(|(seq, _)| seq)
                        .or_else(|| self.spilled0.pop_front());
                    if evicted.is_none() {
                        if item.qos == QoS::AtMostOnce {
                            self.dropped += 1;
                            return rejected;
                        }
                        evicted = self
                            .acked
                            .pop_front()
                            .map(|(seq, _)| seq)
                            .or_else(|| self.spilled.pop_front());
                    }
                    self.dropped += 1;
                    outcome = PushOutcome::QueuedDroppedOldest;
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let spill = self.spilled_len() > 0 || self.memory_len() >= self.memory_window;
        match (item.qos == QoS::AtMostOnce, spill) {
            (true, false) => self.qos0.push_back((seq, item)),
            (false, false) => self.acked.push_back((seq, item)),
            (true, true) => self.spilled0.push_back(seq),
            (false, true) => self.spilled.push_back(seq),
        }
        Pushed {
            outcome,
            seq: Some(seq),
            evicted,
        }
    }

    /// The delivery QoS of the oldest entry in memory (`None` also when the memory part is
    /// empty but entries are spilled: see [`MessageQueue::needs_load`]).
    pub fn front_qos(&self) -> Option<QoS> {
        self.front_is_qos0().map(|qos0| {
            if qos0 {
                QoS::AtMostOnce
            } else {
                self.acked.front().map_or(QoS::AtLeastOnce, |(_, q)| q.qos)
            }
        })
    }

    /// Removes and returns the oldest entry in memory, with its position.
    pub fn pop_front(&mut self) -> Option<(u64, Queued)> {
        match self.front_is_qos0()? {
            true => self.qos0.pop_front(),
            false => self.acked.pop_front(),
        }
    }

    /// Removes and returns the oldest QoS 0 entry in memory, even if QoS 1/2 entries are
    /// older: QoS 0 needs no inflight slot, so it need not wait behind a full window (MQTT
    /// orders messages per QoS level, section 4.6).
    pub fn pop_qos0(&mut self) -> Option<(u64, Queued)> {
        self.qos0.pop_front()
    }

    /// Number of entries, spilled ones included.
    pub fn len(&self) -> usize {
        self.memory_len() + self.spilled_len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries dropped or refused by the limit since the queue was created.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Entries held in memory.
    pub fn memory_len(&self) -> usize {
        self.qos0.len() + self.acked.len()
    }

    fn spilled_len(&self) -> usize {
        self.spilled0.len + self.spilled.len
    }

    /// Drops the in-memory copies of every entry (they are in the store), e.g. when the
    /// session goes offline. Returns how many were dropped from memory.
    pub fn spill_memory(&mut self) -> usize {
        let n = self.memory_len();
        // Pushed to the front newest first, so the runs stay in ascending order.
        while let Some((seq, _)) = self.qos0.pop_back() {
            self.spilled0.push_front(seq);
        }
        while let Some((seq, _)) = self.acked.pop_back() {
            self.spilled.push_front(seq);
        }
        n
    }

    /// When memory is empty, entries are spilled and no load is outstanding: the position to
    /// load from. The caller asks the store and reports with [`MessageQueue::loaded`].
    pub fn needs_load(&self) -> Option<u64> {
        if self.loading.is_some() || self.memory_len() > 0 {
            return None;
        }
        match (self.spilled0.front(), self.spilled.front()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records that a load was asked for.
    pub fn start_load(&mut self) {
        self.loading = Some(self.next_seq);
    }

    /// A load failed: the next call to [`MessageQueue::needs_load`] asks again.
    pub fn load_failed(&mut self) {
        self.loading = None;
    }

    /// Takes a load's answer: entries (ascending) still spilled move to memory; entries dropped
    /// meanwhile are skipped. Spilled positions the store should have returned but did not
    /// (lost by a failed write) are forgotten; returns how many.
    pub fn loaded(&mut self, entries: Vec<(u64, Queued)>, complete: bool) -> usize {
        let end = self.loading.take().unwrap_or(self.next_seq);
        let mut lost = 0;
        for (seq, item) in entries {
            lost += self.forget_below(seq);
            if self.spilled0.front() == Some(seq) {
                self.spilled0.pop_front();
                self.qos0.push_back((seq, item));
            } else if self.spilled.front() == Some(seq) {
                self.spilled.pop_front();
                self.acked.push_back((seq, item));
            }
        }
        if complete {
            lost += self.forget_below(end);
        }
        self.dropped += lost as u64;
        lost
    }

    /// Forgets spilled positions below `seq`.
    fn forget_below(&mut self, seq: u64) -> usize {
        let mut n = 0;
        while self.spilled0.front().is_some_and(|s| s < seq) {
            self.spilled0.pop_front();
            n += 1;
        }
        while self.spilled.front().is_some_and(|s| s < seq) {
            self.spilled.pop_front();
            n += 1;
        }
        n
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
                received: None,
            }),
            qos,
            retain: false,
            subscription_identifiers: Vec::new(),
        }
    }

    fn drain(q: &mut MessageQueue) -> Vec<u8> {
        std::iter::from_fn(|| q.pop_front())
            .map(|(_, i)| i.message.payload[0])
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
            Pushed {
                outcome: PushOutcome::QueuedDroppedOldest,
                seq: Some(3),
                evicted: Some(1),
            }
        );
        assert_eq!(
            q.push(item(5, QoS::ExactlyOnce)).outcome,
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
        assert_eq!(
            q.push(item(3, QoS::AtMostOnce)).outcome,
            PushOutcome::Rejected
        );
        assert_eq!(q.dropped(), 1);
        assert_eq!(drain(&mut q), vec![1, 2]);
    }

    #[test]
    fn drop_newest_refuses_when_full_and_zero_limit_refuses_all() {
        let mut q = MessageQueue::new(1, QueueDropPolicy::DropNewest);
        assert_eq!(
            q.push(item(1, QoS::AtMostOnce)).outcome,
            PushOutcome::Queued
        );
        assert_eq!(
            q.push(item(2, QoS::AtLeastOnce)).outcome,
            PushOutcome::Rejected
        );
        assert_eq!(drain(&mut q), vec![1]);
        let mut z = MessageQueue::new(0, QueueDropPolicy::DropOldest);
        assert_eq!(
            z.push(item(1, QoS::AtLeastOnce)).outcome,
            PushOutcome::Rejected
        );
        assert_eq!(z.dropped(), 1);
    }

    #[test]
    fn pop_qos0_skips_ahead_of_waiting_qos1() {
        let mut q = MessageQueue::new(10, QueueDropPolicy::DropOldest);
        q.push(item(1, QoS::AtLeastOnce));
        q.push(item(2, QoS::AtMostOnce));
        assert_eq!(q.pop_qos0().map(|(_, i)| i.message.payload[0]), Some(2));
        assert_eq!(q.pop_qos0(), None);
        assert_eq!(drain(&mut q), vec![1]);
    }

    #[test]
    fn runs_compress_consecutive_positions() {
        let mut r = Runs::default();
        for seq in [3, 4, 5, 9] {
            r.push_back(seq);
        }
        r.push_front(2);
        r.push_front(0);
        assert_eq!(r.runs, [(0, 1), (2, 4), (9, 1)]);
        assert_eq!(r.len, 6);
        let got: Vec<u64> = std::iter::from_fn(|| r.pop_front()).collect();
        assert_eq!(got, [0, 2, 3, 4, 5, 9]);
        assert_eq!(r.len, 0);
    }

    #[test]
    fn a_windowed_queue_spills_and_loads_back_in_order() {
        let mut q = MessageQueue::new(100, QueueDropPolicy::DropOldest);
        q.set_memory_window(2);
        for n in 0..5 {
            let qos = if n == 3 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            assert_eq!(q.push(item(n, qos)).seq, Some(u64::from(n)));
        }
        assert_eq!((q.len(), q.memory_len()), (5, 2));
        assert_eq!(q.needs_load(), None, "memory is not empty");
        assert_eq!(drain(&mut q), vec![0, 1]);
        assert_eq!(q.needs_load(), Some(2));
        q.start_load();
        assert_eq!(q.needs_load(), None, "one load at a time");
        // Arrives while the load is outstanding: spilled, behind the rest.
        q.push(item(5, QoS::AtLeastOnce));
        // The store answers 2, 3, 4 (position 3 was QoS 0); 5 was not asked for.
        let loaded = vec![
            (2, item(2, QoS::AtLeastOnce)),
            (3, item(3, QoS::AtMostOnce)),
            (4, item(4, QoS::AtLeastOnce)),
        ];
        assert_eq!(q.loaded(loaded, false), 0);
        assert_eq!(q.memory_len(), 3);
        assert_eq!(drain(&mut q), vec![2, 3, 4]);
        assert_eq!(q.needs_load(), Some(5));
    }

    #[test]
    fn loads_skip_entries_dropped_meanwhile_and_forget_lost_ones() {
        let mut q = MessageQueue::new(3, QueueDropPolicy::DropOldest);
        q.set_memory_window(0);
        for n in 0..3 {
            q.push(item(n, QoS::AtLeastOnce));
        }
        assert_eq!(q.memory_len(), 0);
        q.start_load();
        // Full: 0 is evicted from the spilled part while the load is out.
        assert_eq!(q.push(item(3, QoS::AtLeastOnce)).evicted, Some(0));
        // The store still had 0 when it read; 1 is missing (a write that failed).
        let answer = vec![
            (0, item(0, QoS::AtLeastOnce)),
            (2, item(2, QoS::AtLeastOnce)),
        ];
        assert_eq!(q.loaded(answer, true), 1);
        assert_eq!(drain(&mut q), vec![2]);
        assert_eq!(q.len(), 1, "3 is still spilled");
        assert_eq!(q.needs_load(), Some(3));
    }

    #[test]
    fn spill_memory_keeps_order_and_a_restored_index_resumes_positions() {
        let mut q = MessageQueue::new(10, QueueDropPolicy::DropOldest);
        q.set_memory_window(10);
        q.push(item(0, QoS::AtLeastOnce));
        q.push(item(1, QoS::AtMostOnce));
        q.push(item(2, QoS::AtLeastOnce));
        assert_eq!(q.spill_memory(), 3);
        assert_eq!((q.len(), q.memory_len()), (3, 0));
        assert_eq!(q.needs_load(), Some(0));
        // Dropping under the limit still prefers QoS 0, spilled or not.
        let mut small = MessageQueue::new(3, QueueDropPolicy::DropOldest);
        small.set_memory_window(0);
        small.restore_index([
            (7, QoS::AtLeastOnce),
            (8, QoS::AtMostOnce),
            (9, QoS::AtLeastOnce),
        ]);
        let pushed = small.push(item(10, QoS::AtLeastOnce));
        assert_eq!((pushed.seq, pushed.evicted), (Some(10), Some(8)));
        assert_eq!(small.needs_load(), Some(7));
    }
}
