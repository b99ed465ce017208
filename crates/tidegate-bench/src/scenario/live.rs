//! State the tasks of one message run share while it runs: progress counters, the latency
//! recorders, and the closed-loop QoS 0 feedback from subscribers to publishers.
//!
//! Place in the data flow: publishers and subscribers add to [`Live`] once per batch (not per
//! message) for the progress line and the drain check; they record latencies into
//! [`Recorders`] under one lock per batch, so a run keeps one histogram of each kind instead
//! of one per task (an HDR histogram is a few hundred KiB).

use crate::latency::LatencyHistogram;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;

/// Running totals for the progress line and the end-of-run drain.
#[derive(Debug, Default)]
pub struct Live {
    /// PUBLISH packets encoded for sending.
    pub sent: AtomicU64,
    /// Unique deliveries received by subscribers.
    pub delivered: AtomicU64,
    /// Publishers that finished sending and got all their acknowledgements.
    pub publishers_done: AtomicU64,
}

impl Live {
    /// Adds to a counter (relaxed: these are statistics, not synchronisation).
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The run's histograms.
#[derive(Debug, Default)]
pub struct Recorders {
    /// Publish → deliver latency, measured from the send stamp.
    pub latency: Mutex<LatencyHistogram>,
    /// Publish → deliver latency measured from the actual write (payloads of 24 bytes or more).
    pub from_write: Mutex<LatencyHistogram>,
    /// Open loop: how late each message went out relative to its intended time.
    pub send_lag: Mutex<LatencyHistogram>,
}

impl Recorders {
    /// Records a batch of values into one histogram under a single lock.
    pub fn record_batch(h: &Mutex<LatencyHistogram>, values: &mut Vec<u64>) {
        if values.is_empty() {
            return;
        }
        // A poisoned lock means another task panicked mid-record; the histogram is still a
        // valid set of counts, so keep recording.
        let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
        for v in values.drain(..) {
            h.record(v);
        }
    }

    /// A copy of a histogram.
    pub fn snapshot(h: &Mutex<LatencyHistogram>) -> LatencyHistogram {
        h.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Closed-loop QoS 0 has no acknowledgement to pace on, so the subscriber that "paces" a
/// publisher reports each unique delivery here, and the publisher keeps at most `--window`
/// messages between sent and delivered.
#[derive(Debug, Default)]
pub struct Feedback {
    delivered: AtomicU64,
    waiting: AtomicBool,
    notify: Notify,
}

impl Feedback {
    /// Subscriber side: `n` more messages of this publisher were delivered.
    pub fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::SeqCst);
        // SeqCst pairs with `prepare_wait`: either the publisher sees the new count, or we see
        // its waiting flag and wake it (a stored permit if it has not started waiting yet).
        if self.waiting.swap(false, Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// Deliveries reported so far.
    pub fn delivered_count(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    /// Publisher side: announce the intent to wait, then re-read the count.
    pub fn prepare_wait(&self) -> u64 {
        self.waiting.store(true, Ordering::SeqCst);
        self.delivered_count()
    }

    /// Resolves after the next `delivered` call following `prepare_wait`.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn batch_recording_empties_the_scratch_vector() {
        let r = Recorders::default();
        let mut v = vec![1_000, 2_000, 3_000];
        Recorders::record_batch(&r.latency, &mut v);
        assert!(v.is_empty());
        assert_eq!(Recorders::snapshot(&r.latency).len(), 3);
    }

    #[tokio::test]
    async fn feedback_wakes_a_waiting_publisher() {
        let fb = Arc::new(Feedback::default());
        assert_eq!(fb.prepare_wait(), 0);
        let fb2 = fb.clone();
        let waiter = tokio::spawn(async move {
            fb2.wait().await;
            fb2.delivered_count()
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        fb.delivered(3);
        let seen = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, 3);
    }

    #[tokio::test]
    async fn feedback_before_wait_is_not_lost() {
        let fb = Feedback::default();
        fb.prepare_wait();
        fb.delivered(1); // arrives between the check and the await
        tokio::time::timeout(Duration::from_secs(1), fb.wait())
            .await
            .unwrap();
    }
}
