//! The storage keys of the configuration file: `persistence`, `fsync`, `fsync_interval_ms`
//! (top-level keys, as the user contract of issue 5 shows them, beside `data_dir`).
//!
//! Place in the data flow: read with the rest of [`Config`](super::Config) at start-up; the
//! engine opens the store under `data_dir` when `persistence = "disk"` and its writer thread
//! applies the fsync policy.

use serde::Deserialize;
use std::time::Duration;

/// Where sessions, queues and retained messages live (TOML `persistence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// The embedded store under `data_dir`: everything acknowledged survives a restart.
    #[default]
    Disk,
    /// Nothing is written: a restart loses every session, queue and retained message.
    Memory,
}

/// When written batches are forced to stable storage (TOML `fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every group commit is fsynced before the acknowledgements it holds are sent: nothing
    /// acknowledged is lost, even on a power failure.
    #[default]
    Always,
    /// Batches are written (they survive a killed process) and fsynced every
    /// `fsync_interval_ms`: a power failure or kernel crash loses at most that window of
    /// acknowledged messages.
    Interval,
    /// Batches are written, never fsynced by us (only at a clean shutdown): survives a killed
    /// process, but a power failure may lose any amount. Unsafe; for tests and benchmarks.
    Never,
}

/// Default `fsync_interval_ms`.
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 1000;

/// The storage settings, as the engine needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageConfig {
    /// Disk or memory.
    pub persistence: Persistence,
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// The period of `fsync = "interval"`.
    pub fsync_interval: Duration,
}

/// Checks `fsync_interval_ms`: at least 1 ms, at most a minute (a longer loss window is
/// `"never"` in all but name).
pub(super) fn validate_interval(ms: u64) -> Result<(), &'static str> {
    if (1..=60_000).contains(&ms) {
        Ok(())
    } else {
        Err("must be between 1 and 60000 milliseconds")
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn defaults_are_durable_and_keys_parse_at_top_level() {
        let c = Config::default();
        assert_eq!(c.persistence, Persistence::Disk);
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert_eq!(c.storage().fsync_interval, Duration::from_millis(1000));
        let c = Config::from_toml_str(
            "data_dir = \"/srv/tg\"\npersistence = \"memory\"\nfsync = \"interval\"\nfsync_interval_ms = 50\n",
        )
        .unwrap();
        assert_eq!(c.persistence, Persistence::Memory);
        assert_eq!(c.storage().fsync, FsyncPolicy::Interval);
        assert_eq!(c.storage().fsync_interval, Duration::from_millis(50));
        c.validate().unwrap();
        assert!(Config::from_toml_str("fsync = \"sometimes\"").is_err());
        assert!(Config::from_toml_str("persistence = \"redis\"").is_err());
        let never = Config::from_toml_str("fsync = \"never\"").unwrap();
        assert_eq!(never.fsync, FsyncPolicy::Never);
    }

    #[test]
    fn the_interval_is_bounded() {
        for bad in [0, 60_001] {
            let c = Config::from_toml_str(&format!("fsync_interval_ms = {bad}")).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(validate_interval(60_000).is_ok());
    }
}
