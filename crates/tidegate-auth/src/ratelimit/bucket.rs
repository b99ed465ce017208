//! A token bucket: `rate` tokens per second, at most `burst` saved up.
//!
//! Place in the data flow: one per client and per tenant for inbound messages/s and bytes/s;
//! the connection driver calls [`TokenBucket::try_take`] before handing a PUBLISH to the broker.
//!
//! Tokens are counted in billionths so that refill over any number of nanoseconds is exact in
//! integers (no float drift over days of uptime). A take larger than the burst would never fit;
//! instead it is allowed when the bucket is full and leaves the bucket in debt, so a big packet
//! passes and the reader then waits as long as the rate says it should.

use std::time::{Duration, Instant};

/// Units per token.
const SCALE: i128 = 1_000_000_000;

/// A sans-IO token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens per second (at least 1).
    rate: u64,
    /// Capacity in units.
    capacity: i128,
    /// Current level in units; negative after an oversized take.
    level: i128,
    /// When `level` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket refilling `rate` tokens per second and holding at most `burst` (both at
    /// least 1; 0 is treated as 1).
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        let capacity = i128::from(burst.max(1)) * SCALE;
        TokenBucket {
            rate: rate.max(1),
            capacity,
            level: capacity,
            updated: now,
        }
    }

    /// Takes `n` tokens, or says how long to wait until they would be there. An `n` above the
    /// burst is taken when the bucket is full (see the module docs). A `now` earlier than a
    /// previous one is treated as no time passing.
    pub fn try_take(&mut self, now: Instant, n: u64) -> Result<(), Duration> {
        self.refill(now);
        let need = i128::from(n) * SCALE;
        let required = need.min(self.capacity);
        if self.level >= required {
            self.level -= need;
            return Ok(());
        }
        Err(self.time_to_reach(required))
    }

    /// Whole tokens available at `now` (0 while in debt).
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.level / SCALE).unwrap_or(0)
    }

    /// Tokens per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated);
        if elapsed.is_zero() {
            return;
        }
        self.updated = now;
        // Units gained: nanoseconds × tokens/s (SCALE units per token, 1e9 ns per second).
        let gained = i128::try_from(elapsed.as_nanos())
            .unwrap_or(i128::MAX)
            .saturating_mul(i128::from(self.rate));
        self.level = self.level.saturating_add(gained).min(self.capacity);
    }

    fn time_to_reach(&self, target: i128) -> Duration {
        let deficit = target - self.level;
        let rate = i128::from(self.rate);
        // Round up: waiting a nanosecond short would fail the retry.
        let nanos = (deficit + rate - 1) / rate;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        for _ in 0..5 {
            b.try_take(t0, 1).unwrap();
        }
        let wait = b.try_take(t0, 1).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // One token per 100 ms.
        assert!(b.try_take(t0 + Duration::from_millis(99), 1).is_err());
        b.try_take(t0 + Duration::from_millis(100), 1).unwrap();
        assert!(b.try_take(t0 + Duration::from_millis(100), 1).is_err());
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 3, t0);
        b.try_take(t0, 3).unwrap();
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.available(later), 3);
        b.try_take(later, 3).unwrap();
        assert!(b.try_take(later, 1).is_err());
    }

    #[test]
    fn wait_covers_a_multi_token_deficit() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000, t0);
        b.try_take(t0, 1000).unwrap();
        let wait = b.try_take(t0, 250).unwrap_err();
        assert_eq!(wait, Duration::from_millis(250));
        b.try_take(t0 + wait, 250).unwrap();
    }

    #[test]
    fn an_oversized_take_passes_when_full_and_leaves_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 100, t0);
        b.try_take(t0, 300).unwrap();
        assert_eq!(b.available(t0), 0);
        // 200 tokens of debt plus a full bucket for the next oversized take: 3 s at 100/s.
        let wait = b.try_take(t0, 300).unwrap_err();
        assert_eq!(wait, Duration::from_secs(3));
        // Small takes wait only for the debt to clear.
        let wait_small = b.try_take(t0, 1).unwrap_err();
        assert_eq!(wait_small, Duration::from_millis(2010));
    }

    #[test]
    fn a_partly_empty_bucket_refuses_an_oversized_take() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 10, t0);
        b.try_take(t0, 1).unwrap();
        assert_eq!(b.try_take(t0, 50).unwrap_err(), Duration::from_millis(100));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, 1, t0);
        b.try_take(t0, 1).unwrap();
        assert!(b.try_take(t0 - Duration::from_secs(5), 1).is_err());
        b.try_take(t0 + Duration::from_secs(1), 1).unwrap();
    }

    #[test]
    fn sustained_rate_matches_the_configuration() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 1, t0);
        let mut taken = 0;
        let mut now = t0;
        while now <= t0 + Duration::from_secs(10) {
            match b.try_take(now, 1) {
                Ok(()) => taken += 1,
                Err(wait) => now += wait,
            }
        }
        // The initial token plus 50 per second for 10 s (the last one at exactly 10 s).
        assert_eq!(taken, 501);
    }

    #[test]
    fn zero_settings_are_clamped() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 0, t0);
        assert_eq!(b.rate(), 1);
        b.try_take(t0, 1).unwrap();
        assert_eq!(b.try_take(t0, 1).unwrap_err(), Duration::from_secs(1));
    }
}
