//! Latency histograms (HDR) and their summary: p50, p90, p99, p99.9, max.
//!
//! Place in the data flow: subscribers record publish→deliver latencies, publishers record their
//! own send lag (actual minus intended send time), connection tasks record connect times; the
//! report reads a [`LatencySummary`]. Values are nanoseconds, kept to 3 significant digits from
//! 1 ns to one hour; a larger value is clamped to the top rather than dropped, so a stuck
//! message still shows in `max`.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest trackable value: one hour in ns.
const HIGHEST_NS: u64 = 3_600 * 1_000_000_000;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    h: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram::new()
    }
}

/// Percentiles of a histogram, in nanoseconds. All zero when nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LatencySummary {
    /// Number of values recorded.
    pub count: u64,
    /// Smallest value.
    pub min_ns: u64,
    /// Arithmetic mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest value (to the histogram's precision).
    pub max_ns: u64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        // Bounds and precision are constants within hdrhistogram's documented limits
        // (low >= 1, high >= 2 * low, sigfig <= 5), so construction cannot fail.
        let h = Histogram::new_with_bounds(1, HIGHEST_NS, 3)
            .unwrap_or_else(|e| unreachable!("constant histogram bounds rejected: {e}"));
        LatencyHistogram { h }
    }

    /// Records one value; 0 is recorded as 1 ns and values above one hour as one hour.
    pub fn record(&mut self, ns: u64) {
        self.h.saturating_record(ns.clamp(1, HIGHEST_NS));
    }

    /// Records `count` occurrences of one value.
    pub fn record_n(&mut self, ns: u64, count: u64) {
        // Cannot fail: the value is clamped into the trackable range first.
        let _ = self.h.record_n(ns.clamp(1, HIGHEST_NS), count);
    }

    /// Number of values recorded.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Both have the same bounds, so adding cannot go out of range.
        let _ = self.h.add(&other.h);
    }

    /// The recorded values as (value, count) pairs, for shipping across processes as JSON.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// A histogram holding the given (value, count) pairs.
    pub fn from_pairs(pairs: &[(u64, u64)]) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for &(v, n) in pairs {
            h.record_n(v, n);
        }
        h
    }

    /// The percentiles.
    pub fn summary(&self) -> LatencySummary {
        if self.h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.h.len(),
            min_ns: self.h.min(),
            mean_ns: self.h.mean(),
            p50_ns: self.h.value_at_quantile(0.50),
            p90_ns: self.h.value_at_quantile(0.90),
            p99_ns: self.h.value_at_quantile(0.99),
            p999_ns: self.h.value_at_quantile(0.999),
            max_ns: self.h.max(),
        }
    }
}

/// Formats nanoseconds for humans: "850ns", "12.3µs", "4.56ms", "1.20s".
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", v / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", v / 1e6)
    } else {
        format!("{:.2}s", v / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: u64, expected: u64, rel: f64) -> bool {
        (actual as f64 - expected as f64).abs() <= expected as f64 * rel
    }

    #[test]
    fn uniform_values_give_expected_percentiles() {
        let mut h = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            h.record(us * 1_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert!(within(s.p50_ns, 5_000_000, 0.001), "p50 {}", s.p50_ns);
        assert!(within(s.p90_ns, 9_000_000, 0.001), "p90 {}", s.p90_ns);
        assert!(within(s.p99_ns, 9_900_000, 0.001), "p99 {}", s.p99_ns);
        assert!(within(s.p999_ns, 9_990_000, 0.001), "p999 {}", s.p999_ns);
        assert!(within(s.max_ns, 10_000_000, 0.001), "max {}", s.max_ns);
        assert!(within(s.min_ns, 1_000, 0.001));
        assert!((s.mean_ns - 5_000_500.0).abs() < 5_000_500.0 * 0.001);
    }

    #[test]
    fn a_single_outlier_shows_at_the_top_only() {
        let mut h = LatencyHistogram::new();
        h.record_n(100_000, 9_999);
        h.record(2_000_000_000);
        let s = h.summary();
        assert!(within(s.p999_ns, 100_000, 0.001));
        assert!(within(s.max_ns, 2_000_000_000, 0.001));
    }

    #[test]
    fn extremes_are_clamped_not_dropped() {
        let mut h = LatencyHistogram::new();
        h.record(0);
        h.record(u64::MAX);
        let s = h.summary();
        assert_eq!(s.count, 2);
        assert_eq!(s.min_ns, 1);
        assert!(within(s.max_ns, HIGHEST_NS, 0.001));
    }

    #[test]
    fn merge_and_pairs_preserve_counts_and_percentiles() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for v in 1..=500u64 {
            a.record(v * 1_000);
            b.record((v + 500) * 1_000);
        }
        a.merge(&b);
        let back = LatencyHistogram::from_pairs(&a.to_pairs());
        assert_eq!(back.summary(), a.summary());
        assert!(within(a.summary().p50_ns, 500_000, 0.001));
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
    }

    #[test]
    fn human_format() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(12_345), "12.3µs");
        assert_eq!(fmt_ns(4_560_000), "4.56ms");
        assert_eq!(fmt_ns(1_200_000_000), "1.20s");
    }
}
