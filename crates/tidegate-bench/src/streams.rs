//! Stream accounting: loss, duplicates and reordering of one publisher → subscriber stream.
//!
//! Place in the data flow: a subscriber decodes each payload header and hands the sequence
//! number to the [`StreamTracker`] of that publisher; at the end the publisher's sent count
//! turns the tracker into [`StreamStats`].
//!
//! The tracker keeps a sliding bitmap of sequence numbers seen above `base`; every sequence
//! number below `base` has been accounted for. While messages arrive in order the bitmap stays
//! one word long. A gap (a lost or delayed message) holds the window open until it grows past
//! [`WINDOW_SEQS`]; then the oldest gaps are written off as `skipped` and the window slides.
//! An arrival below the window is then a duplicate if nothing was ever skipped (everything
//! below `base` was received), otherwise `late`: it cannot be told from a duplicate, and is
//! counted as a unique, out-of-order delivery. This keeps the memory per stream bounded
//! (8 KiB at most) while staying exact for every reordering shorter than the window.

use std::collections::VecDeque;

/// How far (in sequence numbers) a gap may trail the newest arrival before it is written off.
pub const WINDOW_SEQS: u64 = 65_536;
const WINDOW_WORDS: usize = (WINDOW_SEQS / 64) as usize;

/// How one arrival was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First arrival of this sequence number, after every earlier arrival's number.
    InOrder,
    /// First arrival, but a higher number arrived before it.
    OutOfOrder,
    /// This sequence number was already received.
    Duplicate,
    /// Below the window after gaps were written off: counted as a unique late arrival.
    Late,
}

impl Arrival {
    /// True when the arrival is a message not delivered before.
    pub fn is_unique(self) -> bool {
        !matches!(self, Arrival::Duplicate)
    }
}

/// The state of one stream.
#[derive(Debug, Clone, Default)]
pub struct StreamTracker {
    /// Every sequence number below this is accounted for (received or written off).
    base: u64,
    /// Bit `i` of word `w` is sequence number `base + 64 w + i`.
    bits: VecDeque<u64>,
    /// Highest sequence number received, plus one (0: nothing yet).
    high: u64,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    skipped: u64,
    late: u64,
}

/// The final counts of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StreamStats {
    /// Messages the publisher sent on this stream.
    pub sent: u64,
    /// Distinct messages received.
    pub unique: u64,
    /// Messages sent but never received (`sent - unique`).
    pub lost: u64,
    /// Repeated deliveries of a message already received.
    pub duplicates: u64,
    /// First deliveries that came after a higher sequence number.
    pub out_of_order: u64,
    /// Arrivals below the window after gaps were written off (see module doc).
    pub late: u64,
}

impl StreamStats {
    /// Adds another stream's counts (totals over many streams).
    pub fn add(&mut self, o: &StreamStats) {
        self.sent += o.sent;
        self.unique += o.unique;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.late += o.late;
    }
}

impl StreamTracker {
    /// An empty stream.
    pub fn new() -> StreamTracker {
        StreamTracker::default()
    }

    /// Distinct messages received so far.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Records the arrival of `seq`.
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq < self.base {
            return if self.skipped == 0 {
                self.duplicates += 1;
                Arrival::Duplicate
            } else {
                self.late += 1;
                self.unique += 1;
                self.out_of_order += 1;
                Arrival::Late
            };
        }
        let word = usize::try_from((seq - self.base) / 64).unwrap_or(usize::MAX);
        if word >= WINDOW_WORDS {
            self.slide_to(word + 1 - WINDOW_WORDS);
        }
        // After sliding, the word index is below WINDOW_WORDS.
        let word = usize::try_from((seq - self.base) / 64).unwrap_or(0);
        while self.bits.len() <= word {
            self.bits.push_back(0);
        }
        let mask = 1u64 << ((seq - self.base) % 64);
        let Some(w) = self.bits.get_mut(word) else {
            return Arrival::Duplicate;
        };
        if *w & mask != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        *w |= mask;
        self.unique += 1;
        let arrival = if seq + 1 < self.high {
            self.out_of_order += 1;
            Arrival::OutOfOrder
        } else {
            Arrival::InOrder
        };
        self.high = self.high.max(seq + 1);
        self.compact();
        arrival
    }

    /// Drops complete words from the front: the in-order steady state keeps one word.
    fn compact(&mut self) {
        while self.bits.len() > 1 && self.bits.front() == Some(&u64::MAX) {
            self.bits.pop_front();
            self.base += 64;
        }
    }

    /// Writes off the first `words` words of the window, counting their holes as skipped.
    fn slide_to(&mut self, words: usize) {
        for _ in 0..words {
            let w = self.bits.pop_front().unwrap_or(0);
            self.skipped += u64::from(w.count_zeros());
            self.base += 64;
        }
        self.compact();
    }

    /// Final counts, given how many messages the publisher sent on this stream.
    pub fn finish(&self, sent: u64) -> StreamStats {
        StreamStats {
            sent,
            unique: self.unique,
            lost: sent.saturating_sub(self.unique),
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            late: self.late,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut StreamTracker, seqs: impl IntoIterator<Item = u64>) -> Vec<Arrival> {
        seqs.into_iter().map(|s| t.record(s)).collect()
    }

    #[test]
    fn in_order_stream_is_clean_and_compact() {
        let mut t = StreamTracker::new();
        assert!(
            feed(&mut t, 0..100_000)
                .iter()
                .all(|a| *a == Arrival::InOrder)
        );
        let s = t.finish(100_000);
        assert_eq!(
            s,
            StreamStats {
                sent: 100_000,
                unique: 100_000,
                ..Default::default()
            }
        );
        assert!(t.bits.len() <= 2, "window kept {} words", t.bits.len());
    }

    #[test]
    fn loss_is_sent_minus_unique() {
        let mut t = StreamTracker::new();
        feed(&mut t, (0..1000).filter(|s| s % 10 != 3));
        let s = t.finish(1000);
        assert_eq!(s.unique, 900);
        assert_eq!(s.lost, 100);
        assert_eq!(s.duplicates, 0);
        assert_eq!(s.out_of_order, 0);
    }

    #[test]
    fn tail_loss_counts_messages_never_seen() {
        let mut t = StreamTracker::new();
        feed(&mut t, 0..10);
        assert_eq!(t.finish(15).lost, 5);
    }

    #[test]
    fn duplicates_detected_in_window_and_below_base() {
        let mut t = StreamTracker::new();
        feed(&mut t, 0..200);
        assert_eq!(t.record(199), Arrival::Duplicate);
        // 5 is far below the compacted base: nothing was skipped, so it must be a duplicate.
        assert_eq!(t.record(5), Arrival::Duplicate);
        let s = t.finish(200);
        assert_eq!((s.unique, s.duplicates, s.lost), (200, 2, 0));
    }

    #[test]
    fn reordering_is_counted_once_per_late_message() {
        let mut t = StreamTracker::new();
        let got = feed(&mut t, [0, 2, 1, 3, 5, 4, 4]);
        assert_eq!(
            got,
            vec![
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::OutOfOrder,
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::OutOfOrder,
                Arrival::Duplicate,
            ]
        );
        let s = t.finish(6);
        assert_eq!(
            (s.unique, s.out_of_order, s.duplicates, s.lost),
            (6, 2, 1, 0)
        );
    }

    #[test]
    fn gap_older_than_window_is_written_off_then_late() {
        let mut t = StreamTracker::new();
        t.record(0);
        // 1 is missing; push far past the window.
        feed(&mut t, 2..(WINDOW_SEQS + 200));
        assert_eq!(t.skipped, 1);
        assert!(t.bits.len() <= WINDOW_WORDS);
        // The missing message finally shows up: unique, late, out of order.
        assert_eq!(t.record(1), Arrival::Late);
        let s = t.finish(WINDOW_SEQS + 200);
        assert_eq!(s.lost, 0);
        assert_eq!(s.late, 1);
        assert_eq!(s.out_of_order, 1);
    }

    #[test]
    fn stats_add_up() {
        let mut total = StreamStats::default();
        total.add(&StreamStats {
            sent: 3,
            unique: 2,
            lost: 1,
            duplicates: 1,
            out_of_order: 0,
            late: 0,
        });
        total.add(&StreamStats {
            sent: 5,
            unique: 5,
            lost: 0,
            duplicates: 0,
            out_of_order: 2,
            late: 1,
        });
        assert_eq!(
            total,
            StreamStats {
                sent: 8,
                unique: 7,
                lost: 1,
                duplicates: 1,
                out_of_order: 2,
                late: 1
            }
        );
    }
}
