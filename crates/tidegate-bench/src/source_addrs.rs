//! `--source-addrs`: local addresses client sockets are bound to, round robin.
//!
//! Place in the data flow: the transport asks [`SourceAddrs::next`] for the address to bind
//! before each TCP connect. Linux picks ephemeral ports per (source address, destination), so
//! one source address runs out after about 28,000 connections to one broker port; spreading the
//! connections over `127.0.0.2-127.0.0.40` (all of 127/8 is loopback) lifts that limit.
//!
//! Syntax: a comma-separated list of addresses and inclusive ranges `first-last` of the same
//! family, e.g. `127.0.0.2-127.0.0.40,127.0.1.1`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Upper bound on the number of addresses one spec may expand to (a typo in an IPv6 range would
/// otherwise ask for billions).
pub const MAX_ADDRS: usize = 65_536;

/// Why a `--source-addrs` value is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceAddrsError {
    /// A piece is not an IP address.
    #[error("not an IP address: {0:?}")]
    BadAddress(String),
    /// A range mixes IPv4 and IPv6.
    #[error("range {0:?} mixes IPv4 and IPv6")]
    MixedFamilies(String),
    /// A range whose end is below its start.
    #[error("range {0:?} ends before it starts")]
    Backwards(String),
    /// The list expands to more than [`MAX_ADDRS`] addresses.
    #[error("more than {MAX_ADDRS} source addresses")]
    TooMany,
    /// Nothing at all.
    #[error("empty source address list")]
    Empty,
}

/// A non-empty list of source addresses handed out round robin.
#[derive(Debug)]
pub struct SourceAddrs {
    addrs: Vec<IpAddr>,
    next: AtomicUsize,
}

impl SourceAddrs {
    /// Parses a spec (see the module doc).
    pub fn parse(spec: &str) -> Result<SourceAddrs, SourceAddrsError> {
        let mut addrs = Vec::new();
        for piece in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match piece.split_once('-') {
                None => addrs.push(parse_ip(piece)?),
                Some((a, b)) => {
                    expand(piece, parse_ip(a.trim())?, parse_ip(b.trim())?, &mut addrs)?
                }
            }
            if addrs.len() > MAX_ADDRS {
                return Err(SourceAddrsError::TooMany);
            }
        }
        if addrs.is_empty() {
            return Err(SourceAddrsError::Empty);
        }
        Ok(SourceAddrs {
            addrs,
            next: AtomicUsize::new(0),
        })
    }

    /// All addresses, in order.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// The next address, round robin (shared by every task).
    pub fn next(&self) -> IpAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len();
        // `addrs` is never empty (checked in `parse`), so the index is in range.
        self.addrs[i]
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, SourceAddrsError> {
    s.parse()
        .map_err(|_| SourceAddrsError::BadAddress(s.to_string()))
}

fn expand(
    piece: &str,
    a: IpAddr,
    b: IpAddr,
    out: &mut Vec<IpAddr>,
) -> Result<(), SourceAddrsError> {
    let (lo, hi, v4) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (u128::from(u32::from(a)), u128::from(u32::from(b)), true)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), false),
        _ => return Err(SourceAddrsError::MixedFamilies(piece.to_string())),
    };
    if hi < lo {
        return Err(SourceAddrsError::Backwards(piece.to_string()));
    }
    if hi - lo >= (MAX_ADDRS as u128) {
        return Err(SourceAddrsError::TooMany);
    }
    for v in lo..=hi {
        out.push(if v4 {
            // `v` lies between two IPv4 values, so it fits in u32.
            IpAddr::from(u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes())
        } else {
            IpAddr::from(v.to_be_bytes())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_range_is_inclusive() {
        let s = SourceAddrs::parse("127.0.0.2-127.0.0.40").unwrap();
        assert_eq!(s.addrs().len(), 39);
        assert_eq!(s.addrs()[0], "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(s.addrs()[38], "127.0.0.40".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn range_crosses_octet_boundaries() {
        let s = SourceAddrs::parse("10.0.0.254-10.0.1.1").unwrap();
        let v: Vec<String> = s.addrs().iter().map(|a| a.to_string()).collect();
        assert_eq!(v, ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]);
    }

    #[test]
    fn lists_mix_singles_and_ranges_and_ipv6() {
        let s = SourceAddrs::parse("127.0.0.1, ::1-::3").unwrap();
        let v: Vec<String> = s.addrs().iter().map(|a| a.to_string()).collect();
        assert_eq!(v, ["127.0.0.1", "::1", "::2", "::3"]);
    }

    #[test]
    fn round_robin_wraps() {
        let s = SourceAddrs::parse("127.0.0.2-127.0.0.3").unwrap();
        let got: Vec<String> = (0..5).map(|_| s.next().to_string()).collect();
        assert_eq!(
            got,
            [
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.2"
            ]
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(
            SourceAddrs::parse("nope"),
            Err(SourceAddrsError::BadAddress(_))
        ));
        assert!(matches!(
            SourceAddrs::parse("127.0.0.1-::1"),
            Err(SourceAddrsError::MixedFamilies(_))
        ));
        assert!(matches!(
            SourceAddrs::parse("127.0.0.9-127.0.0.2"),
            Err(SourceAddrsError::Backwards(_))
        ));
        assert_eq!(
            SourceAddrs::parse("::1-::ffff:ffff").err(),
            Some(SourceAddrsError::TooMany)
        );
        assert_eq!(
            SourceAddrs::parse(" , ").err(),
            Some(SourceAddrsError::Empty)
        );
    }
}
