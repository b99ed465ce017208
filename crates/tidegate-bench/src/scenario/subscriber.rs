//! The subscriber side: decode deliveries, acknowledge them inline, and account for every
//! stream.
//!
//! Place in the data flow: broker → socket → [`receive`] → per-stream
//! [`StreamTracker`](crate::streams::StreamTracker) + latency recorder. `messaging` runs one
//! [`receive`] per subscriber connection until told to stop; `storm` runs it per session until
//! the session's queue is drained.
//!
//! Each wake-up reads whatever the socket holds into the connection's reused buffer, decodes
//! every complete packet, queues the PUBACK / PUBREC / PUBCOMP answers into the write buffer
//! (written by the next loop turn, one syscall for the whole batch), and reads the clock once
//! for the whole batch: the packets of one read arrived together.

use super::live::{Feedback, Live, Recorders};
use crate::client::{ClientError, Connection};
use crate::clock::Clock;
use crate::payload::Header;
use crate::streams::{StreamStats, StreamTracker};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_protocol::{Packet, PubResponse, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// What a subscriber listens for and where it reports.
#[derive(Debug, Clone)]
pub struct SubscriberPlan {
    /// Publisher ids whose streams it receives.
    pub hears: Range<u32>,
    /// Messages stamped before this are warm-up: checked but not timed.
    pub warmup_end_ns: u64,
    /// Messages stamped at or after this are outside the measurement window.
    pub end_ns: u64,
    /// The run's time base.
    pub clock: Clock,
    /// Progress counters.
    pub live: Arc<Live>,
    /// Histograms.
    pub rec: Arc<Recorders>,
    /// Closed-loop QoS 0: delivery reports to the publishers, indexed by publisher id.
    pub feedback: Option<Arc<Vec<Arc<Feedback>>>>,
}

/// The accounting of one subscriber, kept across reconnections (storm).
#[derive(Debug, Clone)]
pub struct SubscriberState {
    first: u32,
    trackers: Vec<StreamTracker>,
    /// PUBLISH packets received, duplicates included.
    pub received: u64,
    /// Unique deliveries stamped inside the measurement window.
    pub delivered_in_window: u64,
    /// Deliveries without our header or from a publisher this subscriber does not hear.
    pub unexpected: u64,
    scratch: Vec<u64>,
    scratch_written: Vec<u64>,
}

impl SubscriberState {
    /// Fresh accounting for the streams of `hears`.
    pub fn new(hears: Range<u32>) -> SubscriberState {
        SubscriberState {
            first: hears.start,
            trackers: hears.map(|_| StreamTracker::new()).collect(),
            received: 0,
            delivered_in_window: 0,
            unexpected: 0,
            scratch: Vec::with_capacity(1024),
            scratch_written: Vec::with_capacity(1024),
        }
    }

    /// Unique deliveries over all streams.
    pub fn unique(&self) -> u64 {
        self.trackers.iter().map(StreamTracker::unique).sum()
    }

    /// Final per-stream counts, given each publisher's sent count (indexed by publisher id).
    pub fn finish(&self, sent_by_publisher: &[u64]) -> Vec<(u32, StreamStats)> {
        self.trackers
            .iter()
            .zip(self.first..)
            .map(|(t, id)| {
                let sent = sent_by_publisher.get(id as usize).copied().unwrap_or(0);
                (id, t.finish(sent))
            })
            .collect()
    }

    /// Moves the latencies accounted since the last call into the run's histograms (one lock
    /// per histogram per batch of deliveries).
    pub fn record_latencies(&mut self, rec: &Recorders) {
        Recorders::record_batch(&rec.latency, &mut self.scratch);
        Recorders::record_batch(&rec.from_write, &mut self.scratch_written);
    }

    /// Accounts one delivered payload received at `now_ns`; true if it was a new message.
    pub fn on_payload(&mut self, payload: &[u8], now_ns: u64, plan: &SubscriberPlan) -> bool {
        self.received += 1;
        let Some(h) = Header::decode(payload) else {
            self.unexpected += 1;
            return false;
        };
        let Some(tracker) = h
            .publisher
            .checked_sub(self.first)
            .and_then(|i| self.trackers.get_mut(i as usize))
        else {
            self.unexpected += 1;
            return false;
        };
        if !tracker.record(u64::from(h.seq)).is_unique() {
            return false;
        }
        if h.sent_ns >= plan.warmup_end_ns {
            if h.sent_ns < plan.end_ns {
                self.delivered_in_window += 1;
            }
            self.scratch.push(now_ns.saturating_sub(h.sent_ns));
            if let Some(w) = Header::decode_written(payload) {
                self.scratch_written.push(now_ns.saturating_sub(w));
            }
        }
        if let Some(fb) = plan
            .feedback
            .as_ref()
            .and_then(|f| f.get(h.publisher as usize))
        {
            fb.delivered(1);
        }
        true
    }
}

/// Receives until `stop` turns true or `done(state)` holds. Errors end the loop early.
pub async fn receive(
    conn: &mut Connection,
    st: &mut SubscriberState,
    plan: &SubscriberPlan,
    stop: &mut watch::Receiver<bool>,
    done: impl Fn(&SubscriberState) -> bool,
) -> Result<(), ClientError> {
    // Packets that arrived with CONNACK or SUBACK (a resumed session's queue starts right
    // behind its CONNACK) are already buffered: account for them before waiting for more.
    process(conn, st, plan)?;
    let sleep = tokio::time::sleep_until(Instant::now().into());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        if done(st) || *stop.borrow() {
            // Acks of the last batch still go out, so the broker does not redeliver them.
            conn.flush().await?;
            return Ok(());
        }
        let now = Instant::now();
        conn.queue_ping_if_due(now)?;
        let wake = conn.ping_due().unwrap_or(now + Duration::from_secs(3600));
        if armed != Some(wake) {
            sleep.as_mut().reset(wake.into());
            armed = Some(wake);
        }
        conn.prepare_read();
        tokio::select! {
            biased;
            r = conn.rd.read_buf(&mut conn.rbuf) => {
                if r? == 0 {
                    return Err(ClientError::Closed);
                }
                process(conn, st, plan)?;
            }
            r = conn.wr.write(&conn.wbuf), if !conn.wbuf.is_empty() => {
                let n = r?;
                conn.wrote(n, Instant::now());
            }
            _ = &mut sleep => { armed = None; }
            r = stop.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

fn process(
    conn: &mut Connection,
    st: &mut SubscriberState,
    plan: &SubscriberPlan,
) -> Result<(), ClientError> {
    let now_ns = plan.clock.now_ns();
    let mut unique = 0;
    while let Some(p) = conn.decode()? {
        match p {
            Packet::Publish(p) => {
                match (p.qos, p.packet_id) {
                    (QoS::AtMostOnce, _) => {}
                    (QoS::AtLeastOnce, Some(id)) => {
                        conn.queue(&Packet::PubAck(PubResponse::success(id)))?
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        conn.queue(&Packet::PubRec(PubResponse::success(id)))?
                    }
                    (_, None) => {
                        return Err(ClientError::Unexpected("QoS 1/2 PUBLISH without packet id"));
                    }
                }
                if st.on_payload(&p.payload, now_ns, plan) {
                    unique += 1;
                }
            }
            Packet::PubRel(r) => conn.queue(&Packet::PubComp(PubResponse::success(r.packet_id)))?,
            Packet::PingResp => {}
            Packet::Disconnect(d) => return Err(ClientError::Disconnected(d.reason_code)),
            other => return Err(ClientError::Unexpected(other.name())),
        }
    }
    Live::add(&plan.live.delivered, unique);
    st.record_latencies(&plan.rec);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(hears: Range<u32>) -> SubscriberPlan {
        SubscriberPlan {
            hears,
            warmup_end_ns: 1_000,
            end_ns: 10_000,
            clock: Clock::start(),
            live: Arc::new(Live::default()),
            rec: Arc::new(Recorders::default()),
            feedback: None,
        }
    }

    fn payload(publisher: u32, seq: u32, sent_ns: u64) -> Vec<u8> {
        let mut v = Header {
            sent_ns,
            publisher,
            seq,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(&(sent_ns + 100).to_be_bytes());
        v
    }

    #[test]
    fn accounts_streams_windows_and_strangers() {
        let plan = plan(2..4);
        let mut st = SubscriberState::new(plan.hears.clone());
        assert!(st.on_payload(&payload(2, 0, 500), 2_000, &plan)); // warm-up: not timed
        assert!(st.on_payload(&payload(2, 1, 1_500), 2_000, &plan)); // timed, in window
        assert!(!st.on_payload(&payload(2, 1, 1_500), 2_100, &plan)); // duplicate
        assert!(st.on_payload(&payload(3, 0, 20_000), 21_000, &plan)); // after the window
        assert!(!st.on_payload(&payload(9, 0, 1_500), 2_000, &plan)); // not ours to hear
        assert!(!st.on_payload(b"short", 2_000, &plan)); // no header
        assert_eq!(st.received, 6);
        assert_eq!(st.unexpected, 2);
        assert_eq!(st.delivered_in_window, 1);
        assert_eq!(st.scratch, vec![500, 1_000]);
        assert_eq!(st.scratch_written, vec![400, 900]);
        let stats = st.finish(&[0, 0, 3, 1]);
        assert_eq!(stats[0].0, 2);
        assert_eq!(
            (stats[0].1.unique, stats[0].1.lost, stats[0].1.duplicates),
            (2, 1, 1)
        );
        assert_eq!((stats[1].1.unique, stats[1].1.lost), (1, 0));
    }

    #[test]
    fn feedback_reports_unique_deliveries_only() {
        let mut plan = plan(0..1);
        let fb = Arc::new(vec![Arc::new(Feedback::default())]);
        plan.feedback = Some(fb.clone());
        let mut st = SubscriberState::new(0..1);
        st.on_payload(&payload(0, 0, 2_000), 3_000, &plan);
        st.on_payload(&payload(0, 0, 2_000), 3_000, &plan);
        st.on_payload(&payload(0, 1, 2_000), 3_000, &plan);
        assert_eq!(fb[0].delivered_count(), 2);
    }
}
