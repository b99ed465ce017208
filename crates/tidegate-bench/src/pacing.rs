//! Open-loop pacing: the intended send time of every message (or connection attempt).
//!
//! Place in the data flow: a publisher asks its [`Pacer`] which messages are due at each wake-up
//! and stamps each one with its *intended* time, not the time it actually went out. If the
//! generator or the broker falls behind, the backlog is still sent with the old stamps, so the
//! measured latency includes the wait (no coordinated omission).
//!
//! A total rate is shared by `members` pacers (one per publisher): each sends every
//! `members / rate` seconds, offset by `index / rate`, so the merged schedule is evenly spaced.
//! Times are computed from the index with exact integer arithmetic, never by adding an interval
//! repeatedly, so there is no drift however long the run.

const NS_PER_SEC: u128 = 1_000_000_000;

/// The schedule of one member of a paced group.
#[derive(Debug, Clone)]
pub struct Pacer {
    origin_ns: u64,
    /// Interval between two of this member's events is `num / den` ns.
    num: u128,
    den: u128,
    next: u64,
}

impl Pacer {
    /// Member `index` of `members` sharing `total_per_sec` events per second, starting at
    /// `start_ns`. `None` for a zero rate or an empty group (closed loop: no schedule).
    pub fn new(start_ns: u64, total_per_sec: u64, members: u32, index: u32) -> Option<Pacer> {
        if total_per_sec == 0 || members == 0 {
            return None;
        }
        let den = u128::from(total_per_sec);
        let offset = u128::from(index) * NS_PER_SEC / den;
        Some(Pacer {
            origin_ns: start_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX)),
            num: u128::from(members) * NS_PER_SEC,
            den,
            next: 0,
        })
    }

    /// Intended time of this member's `k`-th event (from 0).
    pub fn intended_ns(&self, k: u64) -> u64 {
        let delta = u128::from(k) * self.num / self.den;
        self.origin_ns
            .saturating_add(u64::try_from(delta).unwrap_or(u64::MAX))
    }

    /// Index of the next event not yet taken.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Intended time of the next event not yet taken.
    pub fn next_ns(&self) -> u64 {
        self.intended_ns(self.next)
    }

    /// Takes the next event if its intended time is at or before `now_ns`: its index and
    /// intended time.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<(u64, u64)> {
        let t = self.next_ns();
        if t > now_ns {
            return None;
        }
        let k = self.next;
        self.next += 1;
        Some((k, t))
    }

    /// How many events are due at `now_ns` and not taken yet (the backlog).
    pub fn due_count(&self, now_ns: u64) -> u64 {
        if now_ns < self.origin_ns {
            return 0;
        }
        // Events 0..=j are due where j*num/den <= now-origin; solve for the count directly.
        let elapsed = u128::from(now_ns - self.origin_ns);
        let due_total = elapsed * self.den / self.num + 1;
        u64::try_from(due_total)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_member_is_evenly_spaced() {
        let p = Pacer::new(1_000, 1_000, 1, 0).unwrap();
        assert_eq!(p.intended_ns(0), 1_000);
        assert_eq!(p.intended_ns(1), 1_001_000);
        assert_eq!(p.intended_ns(1_000), 1_000_001_000);
    }

    #[test]
    fn members_interleave_into_an_even_schedule() {
        // 3 members sharing 3,000/s: together one event every 333,333.3 ns.
        let pacers: Vec<Pacer> = (0..3)
            .map(|i| Pacer::new(0, 3_000, 3, i).unwrap())
            .collect();
        let mut all: Vec<u64> = pacers
            .iter()
            .flat_map(|p| (0..100).map(|k| p.intended_ns(k)))
            .collect();
        all.sort_unstable();
        for (n, t) in all.iter().enumerate() {
            let exact = n as u128 * 1_000_000_000 / 3_000;
            assert!(
                (*t as i128 - exact as i128).abs() <= 1,
                "event {n} at {t}, want {exact}"
            );
        }
    }

    #[test]
    fn no_drift_for_non_integer_intervals() {
        // 7/s: the interval is 142,857,142.857 ns; after 7 million events exactly 1e6 s.
        let p = Pacer::new(0, 7, 1, 0).unwrap();
        assert_eq!(p.intended_ns(7_000_000), 1_000_000 * 1_000_000_000);
    }

    #[test]
    fn pop_due_takes_only_what_is_due_and_keeps_intended_stamps() {
        let mut p = Pacer::new(0, 1_000, 1, 0).unwrap(); // every 1 ms
        // At 2.5 ms, events 0, 1 and 2 are due, stamped with their intended times.
        let mut got = Vec::new();
        while let Some(e) = p.pop_due(2_500_000) {
            got.push(e);
        }
        assert_eq!(got, vec![(0, 0), (1, 1_000_000), (2, 2_000_000)]);
        assert_eq!(p.next_ns(), 3_000_000);
        // A late wake-up (10 ms) finds the backlog with its original stamps.
        assert_eq!(p.due_count(10_000_000), 8);
        assert_eq!(p.pop_due(10_000_000), Some((3, 3_000_000)));
    }

    #[test]
    fn due_count_matches_pop_due() {
        let mut p = Pacer::new(500, 3_333, 4, 2).unwrap();
        for now in [0u64, 499, 500, 1_000_000, 7_777_777, 123_456_789] {
            let expected = p.due_count(now);
            let mut n = 0;
            while p.pop_due(now).is_some() {
                n += 1;
            }
            assert_eq!(n, expected, "at {now}");
        }
    }

    #[test]
    fn zero_rate_is_closed_loop() {
        assert!(Pacer::new(0, 0, 1, 0).is_none());
        assert!(Pacer::new(0, 10, 0, 0).is_none());
    }
}
