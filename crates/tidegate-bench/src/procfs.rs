//! Reading a broker's memory and CPU time from `/proc/<pid>`.
//!
//! Place in the data flow: scenarios call [`sample`] on the `--target-pid` before and after a
//! run (and at RSS checkpoints); the report turns the differences into memory per connection
//! and CPU per message. Parsing is split from reading so it can be tested on fixed text.
//!
//! RSS comes from `smaps_rollup` (exact, summed from page tables) when readable, else from the
//! `VmRSS` line of `status` (maintained by counters the kernel may update lazily). CPU time is
//! `utime + stime` of `stat`, in clock ticks.

use std::io;
use std::path::PathBuf;

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProcSample {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time in nanoseconds.
    pub cpu_ns: u64,
}

/// The `Rss:` line of `/proc/<pid>/smaps_rollup`, in KiB.
pub fn parse_smaps_rollup_rss_kib(text: &str) -> Option<u64> {
    kib_field(text, "Rss:")
}

/// The `VmRSS:` line of `/proc/<pid>/status`, in KiB.
pub fn parse_status_rss_kib(text: &str) -> Option<u64> {
    kib_field(text, "VmRSS:")
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let mut parts = line.get(key.len()..)?.split_whitespace();
    let value = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// `utime + stime` (fields 14 and 15) of `/proc/<pid>/stat`, in clock ticks.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and `)`, so the
/// fields are counted from the *last* `)`.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after = text.get(text.rfind(')')? + 1..)?;
    // After the name come field 3 (state) onwards: utime is field 14, index 11 here.
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Reads RSS and CPU time of process `pid`.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let rss_kib = match std::fs::read_to_string(dir.join("smaps_rollup"))
        .ok()
        .and_then(|t| parse_smaps_rollup_rss_kib(&t))
    {
        Some(v) => v,
        None => parse_status_rss_kib(&std::fs::read_to_string(dir.join("status"))?)
            .ok_or_else(|| bad_data("no VmRSS line in status"))?,
    };
    let ticks = parse_stat_cpu_ticks(&std::fs::read_to_string(dir.join("stat"))?)
        .ok_or_else(|| bad_data("unparsable stat"))?;
    Ok(ProcSample {
        rss_bytes: rss_kib * 1024,
        cpu_ns: ticks_to_ns(ticks, crate::resources::clock_ticks_per_sec()),
    })
}

/// Converts clock ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64, per_sec: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000) / per_sec.max(1)
}

fn bad_data(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tmosquitto\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t   12345 kB\nVmRSS:\t    6784 kB\nRssAnon:\t    1024 kB\nThreads:\t1\n";

    const SMAPS_ROLLUP: &str = "55d0c0a00000-7ffd4d5fe000 ---p 00000000 00:00 0                          [rollup]\n\
        Rss:                6792 kB\nPss:                1234 kB\nPss_Anon:            920 kB\n";

    // A real-shaped stat line whose command contains a space and a parenthesis.
    const STAT: &str = "4242 (my (broker) x) S 1 4242 4242 0 -1 4194560 1290 0 0 0 \
        731 229 0 0 20 0 1 0 123456 10485760 1696 18446744073709551615 1 1 0 0 0 0 0 4096 \
        16386 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn status_vmrss() {
        assert_eq!(parse_status_rss_kib(STATUS), Some(6784));
        assert_eq!(parse_status_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn smaps_rollup_rss_not_pss() {
        assert_eq!(parse_smaps_rollup_rss_kib(SMAPS_ROLLUP), Some(6792));
    }

    #[test]
    fn stat_utime_plus_stime_with_tricky_comm() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(731 + 229));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn unit_other_than_kb_is_refused() {
        assert_eq!(kib_field("VmRSS: 12 MB\n", "VmRSS:"), None);
    }

    #[test]
    fn ticks_convert() {
        assert_eq!(ticks_to_ns(250, 100), 2_500_000_000);
        assert_eq!(ticks_to_ns(1, 0), 1_000_000_000);
    }

    #[test]
    fn sample_of_this_process_is_plausible() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 1024 * 1024, "rss {}", s.rss_bytes);
    }
}
