//! The generator's own resources: its CPU time, the open-files limit, and the
//! "generator-bound" verdict.
//!
//! Place in the data flow: every scenario samples [`self_cpu_ns`] at the start and end of its
//! measurement window; the report divides by wall time and flags a run whose generator was
//! nearly saturated, because then the numbers describe the generator, not the broker.

use std::time::Duration;

/// CPU share (of one core per runtime thread) at or above which a run is "generator-bound".
pub const GENERATOR_BOUND_SHARE: f64 = 0.90;

/// User plus system CPU time of this process (all threads), in nanoseconds.
pub fn self_cpu_ns() -> u64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass; RUSAGE_SELF is always valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0;
    }
    timeval_ns(ru.ru_utime) + timeval_ns(ru.ru_stime)
}

fn timeval_ns(t: libc::timeval) -> u64 {
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let micros = u64::try_from(t.tv_usec).unwrap_or(0);
    secs * 1_000_000_000 + micros * 1_000
}

/// Clock ticks per second for `/proc/<pid>/stat` times (almost always 100).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(100)
}

/// Raises the soft open-files limit to the hard limit and returns the new soft limit.
/// Each client connection is one file descriptor.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: get/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// CPU use as a percentage of one core over a wall-clock interval.
pub fn cpu_percent(cpu_ns: u64, wall: Duration) -> f64 {
    let wall_ns = wall.as_nanos() as f64;
    if wall_ns <= 0.0 {
        return 0.0;
    }
    100.0 * cpu_ns as f64 / wall_ns
}

/// True when a process using `percent` of one core on `threads` runtime threads was saturated.
pub fn is_generator_bound(percent: f64, threads: usize) -> bool {
    percent >= GENERATOR_BOUND_SHARE * 100.0 * threads.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = self_cpu_ns();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(self_cpu_ns() > before);
    }

    #[test]
    fn percent_and_verdict() {
        assert!((cpu_percent(500_000_000, Duration::from_secs(1)) - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent(1, Duration::ZERO), 0.0);
        assert!(is_generator_bound(92.0, 1));
        assert!(!is_generator_bound(89.0, 1));
        assert!(!is_generator_bound(150.0, 2));
        assert!(is_generator_bound(181.0, 2));
    }

    #[test]
    fn nofile_limit_is_at_least_the_default() {
        assert!(raise_nofile_limit() >= 1024);
        assert!(clock_ticks_per_sec() > 0);
    }
}
