//! A precise shared tick for open-loop publishers, from one Linux `timerfd`.
//!
//! Place in the data flow: `messaging`/`storm` start one [`Ticker`] per run; every open-loop
//! publisher whose next message is due within two ticks waits on it instead of on its own
//! tokio timer, then sends everything due (see `publisher`).
//!
//! Why not tokio's timers: they have 1 ms resolution and round up twice (deadline to tick,
//! tick to the `epoll_wait` timeout), so a message is typically sent about 1 ms after its
//! intended time, and re-arming a timer from a running task writes to the runtime's eventfd
//! each time (measured: thousands of extra syscalls per second at 50k msg/s). A periodic
//! `timerfd` fires on the kernel's high-resolution timer at exact multiples of the tick, wakes
//! the runtime through the same `epoll` it already waits in, and wakes every waiting publisher
//! with a single `notify_waiters`.

use crate::clock::Clock;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The shared tick. Dropping the [`TickerGuard`] stops it.
#[derive(Debug)]
pub struct Ticker {
    notify: Notify,
    tick_ns: u64,
}

/// Stops the ticker task when dropped.
#[derive(Debug)]
pub struct TickerGuard(JoinHandle<()>);

impl Drop for TickerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The first multiple of `tick_ns` strictly after `now_ns`: ticks fall on a grid anchored at
/// the run's epoch, so every publisher agrees on them.
pub fn next_grid_point(now_ns: u64, tick_ns: u64) -> u64 {
    let tick = tick_ns.max(1);
    (now_ns / tick + 1).saturating_mul(tick)
}

impl Ticker {
    /// Starts a ticker firing every `tick` on the epoch-aligned grid of `clock`. Must be called
    /// inside a tokio runtime.
    pub fn start(clock: Clock, tick: Duration) -> io::Result<(Arc<Ticker>, TickerGuard)> {
        let tick_ns = u64::try_from(tick.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1_000);
        let fd = timerfd(clock, tick_ns)?;
        // SAFETY: `fd` is an open timerfd owned by the AsyncFd from here on, and OwnedFd
        // always reports that same descriptor.
        let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        let ticker = Arc::new(Ticker {
            notify: Notify::new(),
            tick_ns,
        });
        let t = ticker.clone();
        let task = tokio::spawn(async move {
            let mut expirations = [0u8; 8];
            loop {
                let Ok(mut guard) = afd.readable().await else {
                    return;
                };
                // SAFETY: reading 8 bytes into an 8-byte buffer from a timerfd we own.
                let n = unsafe {
                    libc::read(
                        afd.get_ref().as_raw_fd(),
                        expirations.as_mut_ptr().cast(),
                        expirations.len(),
                    )
                };
                if n < 0 {
                    // EAGAIN: a spurious readiness; wait for the next expiration.
                    guard.clear_ready();
                    continue;
                }
                t.notify.notify_waiters();
            }
        });
        Ok((ticker, TickerGuard(task)))
    }

    /// The tick in nanoseconds.
    pub fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    /// Resolves at the next tick. The future registers when created, so create it before
    /// deciding to sleep, as `select!` does.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

fn timerfd(clock: Clock, tick_ns: u64) -> io::Result<OwnedFd> {
    // SAFETY: plain syscalls; the returned descriptor is checked and then owned.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let now = clock.now_ns();
    let first = next_grid_point(now, tick_ns) - now;
    let spec = libc::itimerspec {
        it_interval: timespec(tick_ns),
        it_value: timespec(first.max(1)),
    };
    // SAFETY: `spec` is a valid itimerspec and the old-value pointer may be null.
    let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(ns / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        // Below 1e9, so it fits every platform's c_long.
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn grid_points_are_strictly_after_now() {
        assert_eq!(next_grid_point(0, 1_000), 1_000);
        assert_eq!(next_grid_point(999, 1_000), 1_000);
        assert_eq!(next_grid_point(1_000, 1_000), 2_000);
        assert_eq!(next_grid_point(5, 0), 6);
    }

    #[tokio::test]
    async fn ticks_arrive_on_time_and_on_the_grid() {
        let clock = Clock::start();
        let (ticker, _guard) = Ticker::start(clock, Duration::from_millis(2)).unwrap();
        let start = Instant::now();
        let mut offsets = Vec::new();
        for _ in 0..20 {
            ticker.wait().await;
            offsets.push(clock.now_ns() % ticker.tick_ns());
        }
        let elapsed = start.elapsed();
        // 20 ticks of 2 ms: about 40 ms (the first one may come early, within one tick).
        assert!(elapsed >= Duration::from_millis(37), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(200), "{elapsed:?}");
        // Most wake-ups land shortly after a grid point (the machine may be busy: allow some).
        let close = offsets.iter().filter(|o| **o < 1_000_000).count();
        assert!(close >= 15, "offsets from the grid: {offsets:?}");
    }
}
