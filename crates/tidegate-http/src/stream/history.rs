//! [`FilterHistory`]: the bounded memory of one subscribed filter, which lets a reader that
//! dropped (or fell behind) get back exactly what it missed — or learn that it cannot.
//!
//! Place in the data flow: `tap message -> hub core (assigns seq, wraps a Delivery) ->
//! FilterHistory::push for every filter it matched -> FilterHistory::after on resume`. Sans-IO:
//! plain data, the time is passed in.
//!
//! A history covers a filter's messages with `seq > floor()`: everything older was either
//! dropped from the ring (too many, too old: `evicted_upto`) or routed before the hub subscribed
//! the filter (`tracked_at`). A reader at position `p` is whole again by replaying `after(p)`
//! when `p >= floor()`; otherwise part of its gap is gone and it must be told so ([`Reset`]).

use crate::gateway::TapMessage;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// One message as the hub saw it: its sequence number, the hub's filter ids it matched (each at
/// most once, in routing order) and the message. Shared by every history holding it and by the
/// live broadcast, so a message is stored once however many filters match it.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// Position in this epoch's sequence (1, 2, ...).
    pub(crate) seq: u64,
    /// The hub's ids of the filters it matched (only ids the hub still tracks).
    pub(crate) ids: Vec<u32>,
    /// The message.
    pub(crate) message: TapMessage,
}

/// Why a reader could not be given everything after its position for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResetReason {
    /// Messages after the position were dropped from the history (`http.history_size` or
    /// `http.history_max_age_secs`).
    Evicted,
    /// Nobody was subscribed to the filter for part of the gap, so its messages were not kept.
    NotTracked,
    /// The position is from an earlier run of the gateway (or of its stream hub).
    Restarted,
}

/// One filter whose history does not cover a reader's gap: messages may have been lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct Reset {
    /// The filter, as the client asked for it.
    pub(crate) filter: String,
    /// Why the gap is not covered.
    pub(crate) reason: ResetReason,
}

/// A message in a history: the shared delivery and when the hub received it (for the age limit).
#[derive(Debug)]
struct Entry {
    delivery: Arc<Delivery>,
    received: Instant,
}

/// The bounded, ordered memory of one filter.
#[derive(Debug)]
pub(crate) struct FilterHistory {
    /// Ascending by `seq`.
    ring: VecDeque<Entry>,
    /// The sequence number marking the subscription: messages routed before it were not seen.
    tracked_at: u64,
    /// The highest sequence number dropped from the ring (0: none).
    evicted_upto: u64,
}

impl FilterHistory {
    /// An empty history of a filter subscribed at `tracked_at`.
    pub(crate) fn new(tracked_at: u64) -> FilterHistory {
        FilterHistory {
            ring: VecDeque::new(),
            tracked_at,
            evicted_upto: 0,
        }
    }

    /// Appends `delivery` (whose `seq` is above every held one) received at `now`, dropping the
    /// oldest entries beyond `capacity`.
    pub(crate) fn push(&mut self, delivery: Arc<Delivery>, now: Instant, capacity: usize) {
        self.ring.push_back(Entry {
            delivery,
            received: now,
        });
        while self.ring.len() > capacity {
            self.evict_front();
        }
    }

    /// Drops the entries received `max_age` or longer before `now`.
    pub(crate) fn expire(&mut self, now: Instant, max_age: Duration) {
        while self
            .ring
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.received) >= max_age)
        {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if let Some(e) = self.ring.pop_front() {
            self.evicted_upto = self.evicted_upto.max(e.delivery.seq);
        }
    }

    /// Every message of the filter with `seq > floor()` is in the ring.
    pub(crate) fn floor(&self) -> u64 {
        self.tracked_at.max(self.evicted_upto)
    }

    /// Whether a reader at `seq` lost messages of this filter, and why.
    pub(crate) fn gap(&self, seq: u64) -> Option<ResetReason> {
        if seq >= self.floor() {
            None
        } else if seq < self.tracked_at {
            Some(ResetReason::NotTracked)
        } else {
            Some(ResetReason::Evicted)
        }
    }

    /// The held messages with a sequence number above `seq`, oldest first.
    pub(crate) fn after(&self, seq: u64) -> impl Iterator<Item = &Arc<Delivery>> {
        let start = self.ring.partition_point(|e| e.delivery.seq <= seq);
        self.ring.range(start..).map(|e| &e.delivery)
    }

    /// Messages held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;

    /// A delivery of a text message on `topic` matching `ids`.
    pub(crate) fn delivery(seq: u64, ids: &[u32], topic: &str) -> Arc<Delivery> {
        Arc::new(Delivery {
            seq,
            ids: ids.to_vec(),
            message: message(topic, "x"),
        })
    }

    /// A QoS 0 message with a text payload.
    pub(crate) fn message(topic: &str, payload: &str) -> TapMessage {
        TapMessage {
            ids: Vec::new(),
            topic: topic.to_owned(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos: 0,
            retain: false,
            properties: Default::default(),
        }
    }

    fn seqs<'a>(it: impl Iterator<Item = &'a Arc<Delivery>>) -> Vec<u64> {
        it.map(|d| d.seq).collect()
    }

    #[test]
    fn the_ring_keeps_the_newest_and_remembers_what_it_dropped() {
        let t0 = Instant::now();
        let mut h = FilterHistory::new(2);
        for seq in 3..=7 {
            h.push(delivery(seq, &[1], "a"), t0, 3);
        }
        assert_eq!(h.len(), 3);
        assert_eq!(seqs(h.after(0)), [5, 6, 7]);
        assert_eq!(h.floor(), 4);
        // A reader that saw 4 misses nothing; one at 3 lost message 4.
        assert_eq!(h.gap(4), None);
        assert_eq!(seqs(h.after(4)), [5, 6, 7]);
        assert_eq!(h.gap(3), Some(ResetReason::Evicted));
        assert_eq!(seqs(h.after(6)), [7]);
        assert_eq!(seqs(h.after(7)), Vec::<u64>::new());
    }

    #[test]
    fn entries_expire_by_age() {
        let t0 = Instant::now();
        let age = Duration::from_secs(10);
        let mut h = FilterHistory::new(0);
        h.push(delivery(1, &[1], "a"), t0, 100);
        h.push(delivery(2, &[1], "a"), t0 + Duration::from_secs(5), 100);
        h.expire(t0 + Duration::from_secs(9), age);
        assert_eq!(h.len(), 2);
        h.expire(t0 + Duration::from_secs(10), age);
        assert_eq!(seqs(h.after(0)), [2]);
        assert_eq!(h.gap(0), Some(ResetReason::Evicted));
        assert_eq!(h.gap(1), None);
        h.expire(t0 + Duration::from_secs(15), age);
        assert_eq!(h.len(), 0);
        assert_eq!(h.floor(), 2);
        assert_eq!(h.gap(1), Some(ResetReason::Evicted));
    }

    #[test]
    fn a_gap_from_before_the_subscription_is_not_covered() {
        let t0 = Instant::now();
        let mut h = FilterHistory::new(10);
        h.push(delivery(11, &[1], "a"), t0, 100);
        assert_eq!(h.gap(9), Some(ResetReason::NotTracked));
        assert_eq!(h.gap(10), None);
        assert_eq!(seqs(h.after(10)), [11]);
        // Not tracked wins over evicted: the older loss is the one that cannot be repaired.
        h.push(delivery(12, &[1], "a"), t0, 1);
        assert_eq!(h.gap(10), Some(ResetReason::Evicted));
        assert_eq!(h.gap(9), Some(ResetReason::NotTracked));
    }
}
