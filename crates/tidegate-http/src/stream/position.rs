//! [`Position`]: where a reader stands in the stream hub's sequence of messages, as the opaque
//! `<epoch>-<seq>` string clients get as an SSE `id` or a long-poll `cursor` and hand back to
//! resume.
//!
//! Place in the data flow: `hub core (assigns seq) -> Position -> SSE id / poll cursor -> client
//! -> Last-Event-ID / cursor -> Position::parse -> hub core (resume)`. The epoch names one tap
//! session of one process run: a position from another epoch (a restart, or a tap the engine
//! closed and the hub reopened) cannot be mapped onto this run's sequence, so resuming from it
//! is always a reset, never a guess.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// One run of the hub's tap. Random, so two runs (even two hubs in one process) differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Epoch(pub(crate) u64);

impl Epoch {
    /// A fresh epoch. `RandomState` is seeded from the OS once per process and stepped for every
    /// instance, so hashing the wall clock through it differs between processes and between
    /// calls without a dependency on a random number crate.
    pub(crate) fn random() -> Epoch {
        let mut hasher = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        hasher.write_u128(nanos);
        Epoch(hasher.finish())
    }
}

/// A point in one epoch's sequence: the reader has seen (or been told it lost) every message
/// up to and including `seq`. Sequence numbers start at 1; `seq == 0` is "before anything".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Position {
    /// The tap session this position belongs to.
    pub(crate) epoch: Epoch,
    /// The last sequence number covered.
    pub(crate) seq: u64,
}

/// A position string that is not `<hex epoch>-<decimal seq>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream position (expected <epoch>-<seq>, as given in an event id or a cursor)")]
pub(crate) struct BadPosition;

impl Position {
    /// Parses the form [`Position`]'s `Display` writes.
    pub(crate) fn parse(s: &str) -> Result<Position, BadPosition> {
        let (epoch, seq) = s.trim().split_once('-').ok_or(BadPosition)?;
        // `from_str_radix` accepts a leading `+`; refuse it so one position has one spelling.
        if epoch.is_empty() || seq.is_empty() || epoch.starts_with('+') || seq.starts_with('+') {
            return Err(BadPosition);
        }
        let epoch = u64::from_str_radix(epoch, 16).map_err(|_| BadPosition)?;
        let seq = seq.parse::<u64>().map_err(|_| BadPosition)?;
        Ok(Position {
            epoch: Epoch(epoch),
            seq,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.epoch.0, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_survives_its_string_form() {
        let p = Position {
            epoch: Epoch(0x3f9a_0c1d_2e4b_5a67),
            seq: 42,
        };
        assert_eq!(p.to_string(), "3f9a0c1d2e4b5a67-42");
        assert_eq!(Position::parse(&p.to_string()), Ok(p));
        let zero = Position {
            epoch: Epoch(0),
            seq: 0,
        };
        assert_eq!(Position::parse(&zero.to_string()), Ok(zero));
    }

    #[test]
    fn malformed_positions_are_refused() {
        for bad in [
            "",
            "-",
            "12",
            "12-",
            "-12",
            "xyz-1",
            "1-abc",
            "1--2",
            "+1-2",
            "1-+2",
            "1-2-3",
            "1-18446744073709551616",
        ] {
            assert_eq!(Position::parse(bad), Err(BadPosition), "{bad:?}");
        }
    }

    #[test]
    fn epochs_differ_between_calls() {
        assert_ne!(Epoch::random(), Epoch::random());
    }
}
