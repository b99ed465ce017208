//! [`HubCore`]: the stream hub's state without IO — which filters the tap is subscribed to, who
//! reads them, their histories, and the sequence every tapped message gets.
//!
//! Place in the data flow: `Tap.messages -> (hub task) handle_message -> Delivery -> histories +
//! live broadcast`; `SSE/poll request -> acquire + resume -> Replay`; `poll_command ->
//! (hub task) Tap.commands`. The hub task and the readers call it under one lock; it reads no
//! clock and touches no channel, so every rule below is unit-tested with plain values.
//!
//! Call order: [`HubCore::acquire`] the filters of a new reader, then [`HubCore::resume`] from
//! its position; [`HubCore::release`] them when it goes. Feed every tap message to
//! [`HubCore::handle_message`] and call [`HubCore::handle_timeout`] now and then (the age limit
//! and idle filters); after any of these, send what [`HubCore::poll_command`] yields to the tap,
//! in order.
//!
//! Sequence numbers: each tapped message that matches a tracked filter gets the next one, and so
//! does each new subscription (a marker with no message). The marker is what makes resuming
//! safe when a reader adds a filter: a position taken before the marker cannot vouch for that
//! filter, one taken after it can.

use super::history::{Delivery, FilterHistory, Reset, ResetReason};
use super::position::{Epoch, Position};
use crate::gateway::{TapCommand, TapMessage};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest MQTT 5 Subscription Identifier, the range tap ids live in.
const MAX_TAP_ID: u32 = 268_435_455;

/// The bounds the core keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Messages kept per filter (`http.history_size`).
    pub(crate) history_size: usize,
    /// How long a message is kept, and how long a filter nobody reads is kept
    /// (`http.history_max_age_secs`).
    pub(crate) max_age: Duration,
    /// Most filters kept while nobody reads them; beyond it the longest idle ones go first.
    pub(crate) max_idle_filters: usize,
}

/// Every tap id is in use: the hub cannot subscribe another filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream hub tracks too many filters")]
pub(crate) struct TooManyFilters;

/// What a reader gets when it starts from a position.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// The filters whose history does not cover the gap (sent before the messages).
    pub(crate) resets: Vec<Reset>,
    /// The messages it missed, ascending by `seq`, each once.
    pub(crate) messages: Vec<Arc<Delivery>>,
    /// The sequence number this replay brings the reader up to; live delivery continues after.
    pub(crate) upto: u64,
}

/// One filter the tap is subscribed to.
#[derive(Debug)]
struct Tracked {
    /// The filter as the client wrote it.
    filter: String,
    history: FilterHistory,
    /// Open readers holding it.
    readers: usize,
    /// When the last reader left (`None` while read).
    idle_since: Option<Instant>,
}

/// The hub's state for one tap session.
#[derive(Debug)]
pub(crate) struct HubCore {
    epoch: Epoch,
    /// The last sequence number given out.
    seq: u64,
    by_filter: HashMap<String, u32>,
    tracked: HashMap<u32, Tracked>,
    /// The next tap id to try.
    next_id: u32,
    /// Tracked filters nobody reads (kept for returning readers).
    idle: usize,
    /// Commands for the tap, in the order the engine must apply them.
    outbox: VecDeque<TapCommand>,
    limits: Limits,
}

impl HubCore {
    /// A core for a fresh tap session of epoch `epoch`.
    pub(crate) fn new(epoch: Epoch, limits: Limits) -> HubCore {
        HubCore {
            epoch,
            seq: 0,
            by_filter: HashMap::new(),
            tracked: HashMap::new(),
            next_id: 1,
            idle: 0,
            outbox: VecDeque::new(),
            limits,
        }
    }

    /// This session's epoch.
    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The position of the last sequence number given out.
    #[cfg(test)]
    pub(crate) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// Adds a reader to each of `filters` (valid, non-shared), subscribing the tap to those not
    /// tracked yet. Returns their ids, in order; on failure nothing stays acquired.
    pub(crate) fn acquire(
        &mut self,
        now: Instant,
        filters: &[String],
    ) -> Result<Vec<u32>, TooManyFilters> {
        let mut ids = Vec::with_capacity(filters.len());
        for filter in filters {
            let id = match self.by_filter.get(filter) {
                Some(&id) => id,
                None => match self.track(filter) {
                    Ok(id) => id,
                    Err(e) => {
                        self.release(now, &ids);
                        return Err(e);
                    }
                },
            };
            if let Some(t) = self.tracked.get_mut(&id) {
                t.readers += 1;
                if t.idle_since.take().is_some() {
                    self.idle = self.idle.saturating_sub(1);
                }
            }
            ids.push(id);
        }
        Ok(ids)
    }

    fn track(&mut self, filter: &str) -> Result<u32, TooManyFilters> {
        let id = self.free_id()?;
        // The subscription marker: see the module doc.
        self.seq += 1;
        self.by_filter.insert(filter.to_owned(), id);
        self.tracked.insert(
            id,
            Tracked {
                filter: filter.to_owned(),
                history: FilterHistory::new(self.seq),
                readers: 0,
                idle_since: None,
            },
        );
        self.outbox.push_back(TapCommand::Subscribe {
            id,
            filter: filter.to_owned(),
        });
        Ok(id)
    }

    /// An id no tracked filter uses. Ids are not reused at once, so a late message carrying
    /// the id of a dropped filter is not taken for a newer one.
    fn free_id(&mut self) -> Result<u32, TooManyFilters> {
        for _ in 0..MAX_TAP_ID {
            let id = self.next_id;
            self.next_id = if id >= MAX_TAP_ID { 1 } else { id + 1 };
            if !self.tracked.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(TooManyFilters)
    }

    /// Removes a reader from each of `ids` (as [`HubCore::acquire`] returned them). A filter
    /// nobody reads keeps its history for `max_age` ([`HubCore::handle_timeout`] forgets it),
    /// so a reader that dropped can come back; beyond `max_idle_filters` the longest idle go.
    pub(crate) fn release(&mut self, now: Instant, ids: &[u32]) {
        for id in ids {
            if let Some(t) = self.tracked.get_mut(id) {
                t.readers = t.readers.saturating_sub(1);
                if t.readers == 0 && t.idle_since.is_none() {
                    t.idle_since = Some(now);
                    self.idle += 1;
                }
            }
        }
        if self.idle > self.limits.max_idle_filters {
            let mut idle: Vec<(Instant, u32)> = self
                .tracked
                .iter()
                .filter_map(|(&id, t)| t.idle_since.map(|since| (since, id)))
                .collect();
            idle.sort_unstable();
            let excess = idle.len().saturating_sub(self.limits.max_idle_filters);
            for (_, id) in idle.into_iter().take(excess) {
                self.untrack(id);
            }
        }
    }

    /// Takes in one tap message: gives it a sequence number and keeps it in the history of
    /// every tracked filter it matched. `None` when it matched none (a filter dropped since).
    pub(crate) fn handle_message(
        &mut self,
        now: Instant,
        message: TapMessage,
    ) -> Option<Arc<Delivery>> {
        let mut ids: Vec<u32> = Vec::with_capacity(message.ids.len());
        for id in &message.ids {
            if self.tracked.contains_key(id) && !ids.contains(id) {
                ids.push(*id);
            }
        }
        if ids.is_empty() {
            return None;
        }
        self.seq += 1;
        let delivery = Arc::new(Delivery {
            seq: self.seq,
            ids,
            message,
        });
        for id in &delivery.ids {
            if let Some(t) = self.tracked.get_mut(id) {
                t.history
                    .push(delivery.clone(), now, self.limits.history_size);
                t.history.expire(now, self.limits.max_age);
            }
        }
        Some(delivery)
    }

    /// What a reader of `ids` at `from` missed. `None` starts from now. A position from another
    /// epoch resets every filter and replays all that is held; a position ahead of the sequence
    /// (only a forged one can be) is taken as now.
    pub(crate) fn resume(&mut self, now: Instant, ids: &[u32], from: Option<Position>) -> Replay {
        let Some(from) = from else {
            return Replay {
                upto: self.seq,
                ..Replay::default()
            };
        };
        let same_epoch = from.epoch == self.epoch;
        let seq = if same_epoch {
            from.seq.min(self.seq)
        } else {
            0
        };
        let mut replay = Replay {
            upto: self.seq,
            ..Replay::default()
        };
        for id in ids {
            let Some(t) = self.tracked.get_mut(id) else {
                continue;
            };
            t.history.expire(now, self.limits.max_age);
            let reason = if same_epoch {
                t.history.gap(seq)
            } else {
                Some(ResetReason::Restarted)
            };
            let start = match reason {
                Some(reason) => {
                    replay.resets.push(Reset {
                        filter: t.filter.clone(),
                        reason,
                    });
                    // What the history still holds is after the loss: hand it over too.
                    seq.max(t.history.floor())
                }
                None => seq,
            };
            replay.messages.extend(t.history.after(start).cloned());
        }
        // A message matching several of the reader's filters is in several histories.
        replay.messages.sort_by_key(|d| d.seq);
        replay.messages.dedup_by_key(|d| d.seq);
        replay
    }

    /// Expires old messages and forgets filters nobody has read for `max_age`. Its effects are
    /// not urgent to the second: the hub calls it on a coarse tick, and [`HubCore::resume`]
    /// applies the age limit itself to the filters it reads.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let max_age = self.limits.max_age;
        let mut stale = Vec::new();
        for (&id, t) in &mut self.tracked {
            t.history.expire(now, max_age);
            if t.idle_since
                .is_some_and(|since| now.saturating_duration_since(since) >= max_age)
            {
                stale.push(id);
            }
        }
        for id in stale {
            self.untrack(id);
        }
    }

    fn untrack(&mut self, id: u32) {
        if let Some(t) = self.tracked.remove(&id) {
            if t.idle_since.is_some() {
                self.idle = self.idle.saturating_sub(1);
            }
            self.by_filter.remove(&t.filter);
            self.outbox
                .push_back(TapCommand::Unsubscribe { filter: t.filter });
        }
    }

    /// Whether the filter `id` has readers.
    pub(crate) fn is_read(&self, id: u32) -> bool {
        self.tracked.get(&id).is_some_and(|t| t.readers > 0)
    }

    /// Whether commands wait for the tap.
    pub(crate) fn has_commands(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The next command for the tap.
    pub(crate) fn poll_command(&mut self) -> Option<TapCommand> {
        self.outbox.pop_front()
    }

    /// Whether the core tracks no filter and has nothing left for the tap: the tap serves
    /// nobody and may close (a reader always holds at least one filter).
    pub(crate) fn is_idle(&self) -> bool {
        self.tracked.is_empty() && self.outbox.is_empty()
    }

    /// Filters tracked now.
    #[cfg(test)]
    pub(crate) fn tracked_filters(&self) -> usize {
        self.tracked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::history::tests::message;

    const AGE: Duration = Duration::from_secs(60);

    fn core(history_size: usize) -> HubCore {
        HubCore::new(
            Epoch(7),
            Limits {
                history_size,
                max_age: AGE,
                max_idle_filters: 100,
            },
        )
    }

    fn filters(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| (*s).to_owned()).collect()
    }

    fn tap(ids: &[u32], topic: &str) -> TapMessage {
        TapMessage {
            ids: ids.to_vec(),
            ..message(topic, "x")
        }
    }

    fn commands(core: &mut HubCore) -> Vec<TapCommand> {
        std::iter::from_fn(|| core.poll_command()).collect()
    }

    fn at(core: &HubCore, seq: u64) -> Option<Position> {
        Some(Position {
            epoch: core.epoch(),
            seq,
        })
    }

    fn seqs(r: &Replay) -> Vec<u64> {
        r.messages.iter().map(|d| d.seq).collect()
    }

    #[test]
    fn one_tap_subscription_per_distinct_filter_shared_by_readers() {
        let now = Instant::now();
        let mut c = core(10);
        let a = c.acquire(now, &filters(&["a/#", "b/+"])).unwrap();
        let b = c.acquire(now, &filters(&["b/+"])).unwrap();
        assert_eq!(b[0], a[1]);
        assert_eq!(
            commands(&mut c),
            [
                TapCommand::Subscribe {
                    id: a[0],
                    filter: "a/#".into()
                },
                TapCommand::Subscribe {
                    id: a[1],
                    filter: "b/+".into()
                },
            ]
        );
        assert!(!c.is_idle());
        c.release(now, &a);
        c.release(now, &b);
        assert!(!c.has_commands(), "histories outlive their readers");
        assert!(!c.is_idle(), "kept for returning readers");
        c.handle_timeout(now + AGE - Duration::from_secs(1));
        assert!(!c.has_commands());
        c.handle_timeout(now + AGE);
        let mut gone = commands(&mut c);
        gone.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            gone,
            [
                TapCommand::Unsubscribe {
                    filter: "a/#".into()
                },
                TapCommand::Unsubscribe {
                    filter: "b/+".into()
                },
            ]
        );
        assert_eq!(c.tracked_filters(), 0);
        assert!(
            c.is_idle(),
            "nothing tracked, nothing to send: the tap may close"
        );
    }

    #[test]
    fn a_returning_reader_keeps_the_filter_alive() {
        let now = Instant::now();
        let mut c = core(10);
        let a = c.acquire(now, &filters(&["a"])).unwrap();
        commands(&mut c);
        c.release(now, &a);
        let again = c.acquire(now, &filters(&["a"])).unwrap();
        assert_eq!(again, a);
        c.handle_timeout(now + AGE * 2);
        assert!(!c.has_commands());
        assert_eq!(c.tracked_filters(), 1);
    }

    #[test]
    fn messages_get_increasing_sequence_numbers_and_unknown_ids_are_ignored() {
        let now = Instant::now();
        let mut c = core(10);
        let ids = c.acquire(now, &filters(&["a/#"])).unwrap();
        let marker = c.position().seq;
        let d = c
            .handle_message(now, tap(&[ids[0], 999, ids[0]], "a/1"))
            .unwrap();
        assert_eq!(d.seq, marker + 1);
        assert_eq!(d.ids, ids, "unknown ids dropped, repeats once");
        assert!(c.handle_message(now, tap(&[999], "z")).is_none());
        assert_eq!(
            c.position().seq,
            marker + 1,
            "an ignored message takes no number"
        );
    }

    #[test]
    fn resume_inside_the_window_replays_exactly_the_gap() {
        let now = Instant::now();
        let mut c = core(10);
        let ids = c.acquire(now, &filters(&["a/#"])).unwrap();
        let start = c.position().seq;
        let sent: Vec<u64> = (0..5)
            .map(|i| {
                c.handle_message(now, tap(&ids, &format!("a/{i}")))
                    .unwrap()
                    .seq
            })
            .collect();
        let r = c.resume(now, &ids, at(&c, sent[1]));
        assert!(r.resets.is_empty());
        assert_eq!(seqs(&r), sent[2..]);
        assert_eq!(r.upto, sent[4]);
        let all = c.resume(now, &ids, at(&c, start));
        assert!(all.resets.is_empty());
        assert_eq!(seqs(&all), sent);
        let none = c.resume(now, &ids, at(&c, sent[4]));
        assert!(none.resets.is_empty() && none.messages.is_empty());
        let fresh = c.resume(now, &ids, None);
        assert!(fresh.resets.is_empty() && fresh.messages.is_empty());
        assert_eq!(fresh.upto, sent[4]);
    }

    #[test]
    fn resume_outside_the_window_resets_then_replays_what_is_left() {
        let now = Instant::now();
        let mut c = core(3);
        let ids = c.acquire(now, &filters(&["a/#"])).unwrap();
        let start = c.position().seq;
        let sent: Vec<u64> = (0..5)
            .map(|_| c.handle_message(now, tap(&ids, "a/x")).unwrap().seq)
            .collect();
        let r = c.resume(now, &ids, at(&c, start));
        assert_eq!(
            r.resets,
            [Reset {
                filter: "a/#".into(),
                reason: ResetReason::Evicted
            }]
        );
        assert_eq!(seqs(&r), sent[2..]);
        // At the last evicted message the reader misses nothing.
        let r = c.resume(now, &ids, at(&c, sent[1]));
        assert!(r.resets.is_empty());
        assert_eq!(seqs(&r), sent[2..]);
    }

    #[test]
    fn resume_after_the_age_limit_resets() {
        let now = Instant::now();
        let mut c = core(10);
        let ids = c.acquire(now, &filters(&["a"])).unwrap();
        let start = c.position().seq;
        c.handle_message(now, tap(&ids, "a")).unwrap();
        let later = c.handle_message(now + AGE / 2, tap(&ids, "a")).unwrap();
        let r = c.resume(now + AGE, &ids, at(&c, start));
        assert_eq!(r.resets.len(), 1);
        assert_eq!(r.resets[0].reason, ResetReason::Evicted);
        assert_eq!(seqs(&r), [later.seq]);
    }

    #[test]
    fn a_message_matching_two_filters_of_a_reader_is_replayed_once() {
        let now = Instant::now();
        let mut c = core(10);
        let ids = c.acquire(now, &filters(&["a/#", "+/b"])).unwrap();
        let start = c.position().seq;
        let both = c.handle_message(now, tap(&ids, "a/b")).unwrap();
        let only_a = c.handle_message(now, tap(&ids[..1], "a/c")).unwrap();
        let only_b = c.handle_message(now, tap(&ids[1..], "x/b")).unwrap();
        let r = c.resume(now, &ids, at(&c, start));
        assert_eq!(seqs(&r), [both.seq, only_a.seq, only_b.seq]);
    }

    #[test]
    fn a_position_from_another_epoch_resets_every_filter() {
        let now = Instant::now();
        let mut c = core(10);
        let ids = c.acquire(now, &filters(&["a", "b"])).unwrap();
        let m = c.handle_message(now, tap(&ids[..1], "a")).unwrap();
        let old = Position {
            epoch: Epoch(8),
            seq: m.seq,
        };
        let r = c.resume(now, &ids, Some(old));
        assert_eq!(
            r.resets,
            [
                Reset {
                    filter: "a".into(),
                    reason: ResetReason::Restarted
                },
                Reset {
                    filter: "b".into(),
                    reason: ResetReason::Restarted
                },
            ]
        );
        assert_eq!(
            seqs(&r),
            [m.seq],
            "what this run holds is new to the reader"
        );
    }

    #[test]
    fn a_filter_added_after_the_position_is_not_vouched_for() {
        let now = Instant::now();
        let mut c = core(10);
        let a = c.acquire(now, &filters(&["a"])).unwrap();
        let m = c.handle_message(now, tap(&a, "a")).unwrap();
        // The reader saw `m` with only "a", then comes back asking for "a" and "b": "b" was
        // not subscribed while it was away, even though no tapped message came since.
        let both = c.acquire(now, &filters(&["a", "b"])).unwrap();
        let r = c.resume(now, &both, at(&c, m.seq));
        assert_eq!(
            r.resets,
            [Reset {
                filter: "b".into(),
                reason: ResetReason::NotTracked
            }]
        );
        assert!(r.messages.is_empty());
        // A reader that starts after the subscription is covered from there on.
        let from_now = c.position();
        let later = c.handle_message(now, tap(&both[1..], "b")).unwrap();
        let r = c.resume(now, &both, Some(from_now));
        assert!(r.resets.is_empty());
        assert_eq!(seqs(&r), [later.seq]);
    }

    #[test]
    fn a_forgotten_filter_starts_over_and_its_late_messages_are_ignored() {
        let now = Instant::now();
        let mut c = core(10);
        let old = c.acquire(now, &filters(&["a"])).unwrap();
        let m = c.handle_message(now, tap(&old, "a")).unwrap();
        c.release(now, &old);
        c.handle_timeout(now + AGE);
        assert_eq!(
            commands(&mut c).last(),
            Some(&TapCommand::Unsubscribe { filter: "a".into() })
        );
        let new = c.acquire(now, &filters(&["a"])).unwrap();
        assert_ne!(new, old, "ids are not reused at once");
        assert!(c.handle_message(now, tap(&old, "a")).is_none());
        let r = c.resume(now + AGE, &new, at(&c, m.seq));
        assert_eq!(r.resets[0].reason, ResetReason::NotTracked);
    }

    #[test]
    fn idle_filters_beyond_the_cap_go_longest_idle_first() {
        let now = Instant::now();
        let mut c = HubCore::new(
            Epoch(1),
            Limits {
                history_size: 10,
                max_age: AGE,
                max_idle_filters: 2,
            },
        );
        for (i, f) in ["a", "b", "c"].into_iter().enumerate() {
            let ids = c.acquire(now, &filters(&[f])).unwrap();
            c.release(now + Duration::from_secs(i as u64), &ids);
        }
        let gone: Vec<_> = commands(&mut c)
            .into_iter()
            .filter(|c| matches!(c, TapCommand::Unsubscribe { .. }))
            .collect();
        assert_eq!(gone, [TapCommand::Unsubscribe { filter: "a".into() }]);
        assert_eq!(c.tracked_filters(), 2);
    }

    #[test]
    fn a_position_ahead_of_the_sequence_is_taken_as_now() {
        let now = Instant::now();
        let mut c = core(10);
        let ids = c.acquire(now, &filters(&["a"])).unwrap();
        let r = c.resume(now, &ids, at(&c, 1_000));
        assert!(r.resets.is_empty() && r.messages.is_empty());
        assert_eq!(r.upto, c.position().seq);
    }

    #[test]
    fn ids_wrap_within_the_subscription_identifier_range() {
        let now = Instant::now();
        let mut c = core(10);
        c.next_id = MAX_TAP_ID;
        let ids = c.acquire(now, &filters(&["a", "b"])).unwrap();
        assert_eq!(ids, [MAX_TAP_ID, 1]);
    }
}
