//! Brute-force protection: failed authentications counted per source address.
//!
//! Place in the data flow: before authenticating a CONNECT the server calls
//! [`AuthFailureLimiter::check`] with the peer address (after a PROXY header); a refused source
//! gets no password check at all (reason 0x8A Banned in v5 is a fitting answer, then the socket is
//! closed). Every authentication failure is reported with
//! [`AuthFailureLimiter::record_failure`], every success with
//! [`AuthFailureLimiter::record_success`].
//!
//! Rules: `max_failures` failures within `window_secs` of the first one block the source for
//! `block_secs`. Sources are keyed by IPv4 address, or by the /64 prefix for IPv6 (one host is
//! usually given a whole /64, so counting single addresses would let it rotate through 2^64 of
//! them); IPv4-mapped IPv6 addresses count as IPv4. Memory is bounded: beyond `max_tracked`
//! sources the oldest entry is forgotten, which favours the availability of the gateway over
//! remembering one more attacker.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Settings of the limiter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthFailureLimits {
    /// Failures within the window that block a source.
    pub max_failures: u32,
    /// Length of the counting window, seconds, from the first failure in it.
    pub window_secs: u64,
    /// How long a blocked source is refused, seconds.
    pub block_secs: u64,
    /// Most sources remembered at once.
    pub max_tracked: usize,
}

impl Default for AuthFailureLimits {
    fn default() -> AuthFailureLimits {
        AuthFailureLimits {
            max_failures: 10,
            window_secs: 60,
            block_secs: 300,
            max_tracked: 100_000,
        }
    }
}

impl AuthFailureLimits {
    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_failures == 0 {
            return Err("max_failures must be at least 1".into());
        }
        if self.window_secs == 0 {
            return Err("window_secs must be at least 1".into());
        }
        if self.max_tracked == 0 {
            return Err("max_tracked must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
    /// Matches the entry's item in the eviction queue (a removed and re-created source gets a
    /// new one, so stale queue items are recognised).
    seq: u64,
}

/// Counts failures per source; see the module docs.
#[derive(Debug, Clone)]
pub struct AuthFailureLimiter {
    limits: AuthFailureLimits,
    entries: HashMap<IpAddr, Entry>,
    /// Sources in creation order, for evicting the oldest.
    order: VecDeque<(IpAddr, u64)>,
    next_seq: u64,
}

impl AuthFailureLimiter {
    /// An empty limiter.
    pub fn new(limits: AuthFailureLimits) -> AuthFailureLimiter {
        AuthFailureLimiter {
            limits,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// `Err(remaining)` while `source` is blocked.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = source_key(source);
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        match entry.blocked_until {
            Some(until) if until > now => Err(until - now),
            Some(_) => {
                // The block is over: start again from a clean slate.
                self.entries.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failure; `Err(block)` when this failure blocks the source.
    pub fn record_failure(&mut self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = source_key(source);
        let window = Duration::from_secs(self.limits.window_secs);
        let block = Duration::from_secs(self.limits.block_secs);
        if !self.entries.contains_key(&key) {
            self.make_room();
            let seq = self.next_seq;
            self.next_seq += 1;
            self.order.push_back((key, seq));
            self.entries.insert(
                key,
                Entry {
                    failures: 0,
                    window_start: now,
                    blocked_until: None,
                    seq,
                },
            );
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        if let Some(until) = entry.blocked_until {
            if until > now {
                return Err(until - now);
            }
            entry.blocked_until = None;
            entry.failures = 0;
            entry.window_start = now;
        }
        if now.saturating_duration_since(entry.window_start) >= window {
            entry.failures = 0;
            entry.window_start = now;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= self.limits.max_failures {
            entry.blocked_until = Some(now + block);
            return Err(block);
        }
        Ok(())
    }

    /// Forgets a source after a successful authentication: a user who finally typed the right
    /// password starts again from zero.
    pub fn record_success(&mut self, source: IpAddr) {
        self.entries.remove(&source_key(source));
    }

    /// Drops sources whose window and block are over; call it now and then (say every minute)
    /// so that memory follows the current attack, not the largest one.
    pub fn purge(&mut self, now: Instant) {
        let window = Duration::from_secs(self.limits.window_secs);
        self.entries.retain(|_, e| match e.blocked_until {
            Some(until) => until > now,
            None => now.saturating_duration_since(e.window_start) < window,
        });
        self.compact();
    }

    /// Sources currently remembered.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    fn make_room(&mut self) {
        while self.entries.len() >= self.limits.max_tracked {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&key);
            }
        }
        // Items of removed sources stay in the queue until they reach its front; rebuild it
        // when they dominate so it cannot grow past twice the number of sources.
        if self.order.len() > 2 * self.limits.max_tracked.max(self.entries.len()) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let entries = &self.entries;
        self.order
            .retain(|(key, seq)| entries.get(key).is_some_and(|e| e.seq == *seq));
    }
}

/// The counting key of an address: IPv4 as is (also when IPv4-mapped), IPv6 by its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits(max_failures: u32, max_tracked: usize) -> AuthFailureLimits {
        AuthFailureLimits {
            max_failures,
            window_secs: 60,
            block_secs: 300,
            max_tracked,
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn brute_force_is_blocked_after_n_failures_then_released() {
        let t0 = Instant::now();
        let mut l = AuthFailureLimiter::new(limits(5, 100));
        let attacker = v4(1);
        let mut attempts = 0;
        // The attacker tries passwords as fast as it can; each try is checked first.
        while l.check(attacker, t0).is_ok() {
            attempts += 1;
            let _ = l.record_failure(attacker, t0);
            assert!(attempts <= 5, "never blocked");
        }
        assert_eq!(attempts, 5);
        assert_eq!(
            l.check(attacker, t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(290))
        );
        // Another source is unaffected.
        assert!(l.check(v4(2), t0).is_ok());
        // After the block the source starts from zero.
        let later = t0 + Duration::from_secs(300);
        assert!(l.check(attacker, later).is_ok());
        for _ in 0..4 {
            assert!(l.record_failure(attacker, later).is_ok());
        }
        assert_eq!(
            l.record_failure(attacker, later),
            Err(Duration::from_secs(300))
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let mut l = AuthFailureLimiter::new(limits(3, 100));
        let ip = v4(1);
        l.record_failure(ip, t0).unwrap();
        l.record_failure(ip, t0 + Duration::from_secs(30)).unwrap();
        // The window (from the first failure) has ended: the count restarts.
        l.record_failure(ip, t0 + Duration::from_secs(61)).unwrap();
        l.record_failure(ip, t0 + Duration::from_secs(62)).unwrap();
        assert!(l.record_failure(ip, t0 + Duration::from_secs(63)).is_err());
    }

    #[test]
    fn success_forgets_the_source() {
        let t0 = Instant::now();
        let mut l = AuthFailureLimiter::new(limits(2, 100));
        l.record_failure(v4(1), t0).unwrap();
        l.record_success(v4(1));
        l.record_failure(v4(1), t0).unwrap();
        assert!(l.record_failure(v4(1), t0).is_err());
    }

    #[test]
    fn memory_is_bounded_by_evicting_the_oldest() {
        let t0 = Instant::now();
        let mut l = AuthFailureLimiter::new(limits(1, 3));
        for i in 0..10 {
            let _ = l.record_failure(v4(i), t0);
            assert!(l.tracked() <= 3);
        }
        // The newest three are still blocked, the oldest were forgotten.
        assert!(l.check(v4(9), t0).is_err());
        assert!(l.check(v4(7), t0).is_err());
        assert!(l.check(v4(0), t0).is_ok());
        assert!(l.order.len() <= 6);
    }

    #[test]
    fn the_eviction_queue_stays_bounded_when_sources_come_and_go() {
        let t0 = Instant::now();
        let mut l = AuthFailureLimiter::new(limits(5, 4));
        for round in 0..100u32 {
            let ip = IpAddr::V4(Ipv4Addr::from_bits(round));
            let _ = l.record_failure(ip, t0);
            l.record_success(ip);
            assert!(l.order.len() <= 9, "round {round}: {}", l.order.len());
        }
    }

    #[test]
    fn purge_drops_finished_windows_and_blocks() {
        let t0 = Instant::now();
        let mut l = AuthFailureLimiter::new(limits(2, 100));
        l.record_failure(v4(1), t0).unwrap();
        let _ = l.record_failure(v4(2), t0);
        let _ = l.record_failure(v4(2), t0);
        l.purge(t0 + Duration::from_secs(61));
        assert_eq!(l.tracked(), 1, "the blocked source stays");
        l.purge(t0 + Duration::from_secs(301));
        assert_eq!(l.tracked(), 0);
        assert!(l.order.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let mut l = AuthFailureLimiter::new(limits(2, 100));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        l.record_failure(a, t0).unwrap();
        assert!(l.record_failure(b, t0).is_err(), "same /64");
        assert!(l.check(other, t0).is_ok());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        l.record_failure(mapped, t0).unwrap();
        assert!(l.record_failure(v4(7), t0).is_err());
    }

    #[test]
    fn zero_settings_are_invalid() {
        assert!(AuthFailureLimits::default().validate().is_ok());
        assert!(
            limits(0, 1)
                .validate()
                .unwrap_err()
                .contains("max_failures")
        );
        assert!(limits(1, 0).validate().unwrap_err().contains("max_tracked"));
    }
}
