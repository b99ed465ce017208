//! The one time base of a run: nanoseconds since an [`Instant`] taken at start-up.
//!
//! Publishers stamp payloads with it and subscribers subtract it, so both must live in the same
//! process (they do for every message scenario). `Instant` is CLOCK_MONOTONIC on Linux, which
//! neither jumps with NTP steps nor differs between threads.

use std::time::{Duration, Instant};

/// The shared epoch of one process. Cheap to copy into every task.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// A clock with an explicit epoch (tests).
    pub fn with_epoch(epoch: Instant) -> Clock {
        Clock { epoch }
    }

    /// Nanoseconds since the epoch, now.
    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// Nanoseconds since the epoch at `t` (0 for an instant before the epoch).
    pub fn ns_at(&self, t: Instant) -> u64 {
        // u64 nanoseconds cover 584 years, far beyond any run.
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `ns` nanoseconds after the epoch, for timers.
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_and_instant_round_trip() {
        let epoch = Instant::now();
        let clock = Clock::with_epoch(epoch);
        let t = clock.instant_at(1_500_000_000);
        assert_eq!(clock.ns_at(t), 1_500_000_000);
        assert_eq!(clock.ns_at(epoch), 0);
    }
}
