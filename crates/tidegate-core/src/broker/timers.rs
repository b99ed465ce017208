//! The broker's deadlines: one ordered map from `(instant, sequence)` to an event.
//!
//! Place in the data flow: the broker arms entries while it handles events, the IO shell asks
//! [`Timers::next`] through `Broker::poll_timeout` and calls `Broker::handle_timeout`, which pops
//! what is due. Every owner (a connection, a session) remembers the [`TimerKey`] of each entry it
//! armed and cancels it when its state changes, so the map never holds more than a few entries
//! per connection and session. The keep-alive entry is *not* moved on every packet: when it fires
//! early it is re-armed at the real deadline (last activity + 1.5 × keep alive), which keeps the
//! per-packet cost at one `Instant` store.

use super::ConnId;
use crate::router::SessionKey;
use std::collections::BTreeMap;
use std::time::Instant;

/// What happens when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerEvent {
    /// CONNECT did not arrive in time.
    ConnectTimeout(ConnId),
    /// Check the connection's keep alive.
    KeepAlive(ConnId),
    /// Publish the session's delayed will.
    WillDelay(SessionKey),
    /// The disconnected session expires.
    SessionExpiry(SessionKey),
    /// The connection's credentials (a JWT's `exp`) expire: DISCONNECT 0xA0.
    CredentialsExpired(ConnId),
    /// Publish every tenant's `$SYS` statistics (one entry for the whole broker).
    SysStats,
}

/// Identifies an armed entry, for cancelling it. The sequence number makes keys unique when two
/// deadlines fall on the same instant and orders them by arming time.
pub(super) type TimerKey = (Instant, u64);

/// All armed deadlines, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    entries: BTreeMap<TimerKey, TimerEvent>,
    seq: u64,
}

impl Timers {
    /// Arms `event` at `at`.
    pub(super) fn insert(&mut self, at: Instant, event: TimerEvent) -> TimerKey {
        let key = (at, self.seq);
        self.seq += 1;
        self.entries.insert(key, event);
        key
    }

    /// Disarms an entry; a no-op when it already fired.
    pub(super) fn cancel(&mut self, key: TimerKey) {
        self.entries.remove(&key);
    }

    /// The earliest armed deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest entry due at or before `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(TimerKey, TimerEvent)> {
        let entry = self.entries.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let key = *entry.key();
        Some((key, entry.remove()))
    }

    /// Number of armed entries.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_due_entries_in_order_and_honours_cancel() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let late = t.insert(
            t0 + Duration::from_secs(5),
            TimerEvent::KeepAlive(ConnId(1)),
        );
        let a = t.insert(
            t0 + Duration::from_secs(1),
            TimerEvent::ConnectTimeout(ConnId(2)),
        );
        t.insert(
            t0 + Duration::from_secs(1),
            TimerEvent::WillDelay(SessionKey(3)),
        );
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(2)),
            Some((a, TimerEvent::ConnectTimeout(ConnId(2))))
        );
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(2)).map(|(_, e)| e),
            Some(TimerEvent::WillDelay(SessionKey(3)))
        );
        assert_eq!(t.pop_due(t0 + Duration::from_secs(2)), None);
        t.cancel(late);
        assert_eq!(t.next(), None);
        assert_eq!(t.len(), 0);
    }
}
