//! The publisher task: paced or windowed PUBLISH traffic on one connection, with QoS 1/2
//! acknowledgements handled inline.
//!
//! Place in the data flow: `messaging`/`storm` open a connection and hand it here with a
//! [`PublisherPlan`]; the task encodes messages into the connection's write buffer, writes,
//! reads acks, and returns a [`PublisherResult`] that tells the stream accounting how many
//! messages each stream owed.
//!
//! The loop, once per wake-up:
//! 1. fill: encode every message that is due (open loop: the pacer's backlog; closed loop:
//!    until the window is full), stopping at 64 KiB of unwritten bytes or when packet ids run
//!    out; each message is stamped with its intended send time;
//! 2. wait for whichever comes first: the socket accepting the buffered bytes, acks arriving,
//!    the next intended send time, keep alive, or (closed-loop QoS 0) a delivery report.
//!
//! One connection may carry several streams (storm publishes to every session's topic from
//! one connection): message `k` goes to stream `k % streams`, with sequence `k / streams`.

use super::live::{Feedback, Live, Recorders};
use super::ticker::{Ticker, next_grid_point};
use crate::client::{ClientError, Connection};
use crate::clock::Clock;
use crate::pacing::Pacer;
use crate::payload::{Header, PayloadWriter};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_protocol::{Packet, PacketId, PubResponse, Publish, PublishProperties, QoS, Utf8};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Stop encoding when this many bytes wait to be written (the socket is the bottleneck then).
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Closed-loop QoS 0: a window that sees no delivery for this long is reset, so one lost
/// message cannot stall a publisher forever (the loss still shows in the stream accounting).
const STALL_RESET: Duration = Duration::from_secs(1);

/// One outgoing stream: publisher id in the payload, and the topic.
#[derive(Debug, Clone)]
pub struct StreamOut {
    /// Publisher (stream) id written into each payload.
    pub id: u32,
    /// Topic name.
    pub topic: Utf8,
}

/// What one publisher task does.
#[derive(Debug, Clone)]
pub struct PublisherPlan {
    /// The streams it feeds, round robin.
    pub streams: Vec<StreamOut>,
    /// QoS of every publication.
    pub qos: QoS,
    /// Payload size.
    pub payload: usize,
    /// Open loop schedule; `None` for closed loop.
    pub pacer: Option<Pacer>,
    /// Open loop: the least time between two fills. Without it a fast publisher would wake
    /// for every message that fell due during its previous write (one syscall each).
    pub tick: Duration,
    /// Open loop: the run's precise shared tick; without it, tokio's 1 ms timers pace.
    pub ticker: Option<Arc<Ticker>>,
    /// Closed loop: messages in flight.
    pub window: u32,
    /// Closed loop: first send time (ns since the epoch).
    pub start_ns: u64,
    /// Messages stamped before this are warm-up.
    pub warmup_end_ns: u64,
    /// No message is stamped at or after this.
    pub end_ns: u64,
    /// Stop after this many messages in total, if set.
    pub max_messages: Option<u64>,
    /// After the last send, how long to wait for acknowledgements.
    pub drain: Duration,
    /// The run's time base.
    pub clock: Clock,
    /// Progress counters.
    pub live: Arc<Live>,
    /// Histograms.
    pub rec: Arc<Recorders>,
    /// Closed-loop QoS 0 delivery reports.
    pub feedback: Option<Arc<Feedback>>,
}

/// What a publisher did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherResult {
    /// PUBLISH packets written (in total, warm-up included).
    pub sent: u64,
    /// Of those, stamped inside the measurement window.
    pub sent_in_window: u64,
    /// QoS 1/2 publications never acknowledged before the drain ran out.
    pub unacked: u64,
    /// Acknowledgements with a failure reason code.
    pub rejected: u64,
    /// Closed-loop QoS 0 windows reset after a stall.
    pub window_resets: u64,
    /// Why the task ended early, if it did.
    pub error: Option<String>,
}

impl PublisherResult {
    /// Messages that went to stream number `j` (position in `PublisherPlan::streams`) of `n`.
    pub fn sent_on_stream(&self, j: usize, n: usize) -> u64 {
        let n = n.max(1) as u64;
        self.sent / n + u64::from((j as u64) < self.sent % n)
    }
}

/// Packet identifiers in use, with a bound on how many may be (window or Receive Maximum).
#[derive(Debug)]
pub struct IdPool {
    /// One bit per 16-bit identifier: `id / 64` is at most 1023, so indexing never panics,
    /// whatever identifier a broker acknowledges.
    used: Box<[u64; 1024]>,
    inflight: u32,
    limit: u32,
    next: u16,
}

impl IdPool {
    /// A pool allowing at most `limit` (clamped to 1..=65,535) identifiers at once.
    pub fn new(limit: u32) -> IdPool {
        IdPool {
            used: Box::new([0; 1024]),
            inflight: 0,
            limit: limit.clamp(1, 65_535),
            next: 1,
        }
    }

    /// Identifiers in use.
    pub fn inflight(&self) -> u32 {
        self.inflight
    }

    /// True when another identifier may be taken.
    pub fn has_room(&self) -> bool {
        self.inflight < self.limit
    }

    /// A free identifier, or `None` at the limit.
    pub fn take(&mut self) -> Option<PacketId> {
        if !self.has_room() {
            return None;
        }
        // Below the limit (at most 65,535 of 65,535 ids), so a free id exists: the scan ends.
        loop {
            let v = self.next;
            self.next = if v == u16::MAX { 1 } else { v + 1 };
            let (w, bit) = (usize::from(v / 64), 1u64 << (v % 64));
            if self.used[w] & bit == 0 {
                self.used[w] |= bit;
                self.inflight += 1;
                return PacketId::new(v);
            }
        }
    }

    /// Frees an identifier; false if it was not in use (a stray ack).
    pub fn release(&mut self, id: PacketId) -> bool {
        let v = id.get();
        let (w, bit) = (usize::from(v / 64), 1u64 << (v % 64));
        if self.used[w] & bit == 0 {
            return false;
        }
        self.used[w] &= !bit;
        self.inflight -= 1;
        true
    }
}

struct State {
    ids: IdPool,
    payload: PayloadWriter,
    res: PublisherResult,
    /// Next message index (closed loop; the pacer keeps its own in open loop).
    next: u64,
    done_sending: bool,
    /// Open loop: no fill before this (ns since the epoch), see `PublisherPlan::tick`.
    next_fill_ns: u64,
    give_up: Option<Instant>,
    /// Closed-loop QoS 0: deliveries written off after stalls.
    forgiven: u64,
    last_progress: Instant,
    lag: Vec<u64>,
}

/// Runs a publisher to completion and closes its connection.
pub async fn run(mut conn: Connection, mut plan: PublisherPlan) -> PublisherResult {
    let quota = u32::from(conn.send_quota());
    let limit = if plan.pacer.is_some() {
        quota
    } else {
        plan.window.min(quota)
    };
    let mut st = State {
        ids: IdPool::new(limit),
        payload: PayloadWriter::new(plan.payload),
        res: PublisherResult::default(),
        next: 0,
        done_sending: false,
        next_fill_ns: 0,
        give_up: None,
        forgiven: 0,
        last_progress: Instant::now(),
        lag: Vec::with_capacity(1024),
    };
    let start = plan.clock.instant_at(plan.start_ns);
    tokio::time::sleep_until(start.into()).await;
    if let Err(e) = drive(&mut conn, &mut plan, &mut st).await {
        st.res.error = Some(e.to_string());
    }
    st.res.unacked = u64::from(st.ids.inflight());
    Live::add(&plan.live.publishers_done, 1);
    conn.disconnect(None).await;
    st.res
}

async fn drive(
    conn: &mut Connection,
    plan: &mut PublisherPlan,
    st: &mut State,
) -> Result<(), ClientError> {
    // Anything that came in behind the CONNACK is already buffered.
    handle_acks(conn, st)?;
    let sleep = tokio::time::sleep_until(Instant::now().into());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let now_ns = plan.clock.ns_at(now);
        if !st.done_sending && now_ns >= st.next_fill_ns {
            fill(conn, plan, st, now_ns)?;
            if plan.pacer.is_some() {
                // The next point of the epoch-aligned grid the ticker fires on.
                let tick = u64::try_from(plan.tick.as_nanos()).unwrap_or(u64::MAX);
                st.next_fill_ns = next_grid_point(now_ns, tick);
            }
            if st.done_sending {
                st.give_up = Some(now + plan.drain);
            }
        }
        if st.done_sending && st.ids.inflight() == 0 && conn.wbuf.is_empty() {
            return Ok(());
        }
        if st.give_up.is_some_and(|g| now >= g) {
            return Ok(());
        }
        conn.queue_ping_if_due(now)?;

        // Closed-loop QoS 0 waits on its subscriber's delivery reports.
        let waiting_feedback = match &plan.feedback {
            Some(fb) if !st.done_sending && plan.pacer.is_none() => {
                let delivered = fb.prepare_wait() + st.forgiven;
                let full = st.res.sent.saturating_sub(delivered) >= u64::from(plan.window);
                if full && now.duration_since(st.last_progress) >= STALL_RESET {
                    st.forgiven += st.res.sent.saturating_sub(delivered);
                    st.res.window_resets += 1;
                    st.last_progress = now;
                    continue;
                }
                if !full && conn.wbuf.len() < WRITE_HIGH_WATER {
                    // A delivery arrived since `fill` stopped: fill again instead of sleeping.
                    st.last_progress = now;
                    continue;
                }
                full
            }
            _ => false,
        };

        let on_ticker = uses_ticker(conn, plan, st, now_ns);
        let wake = next_wake(conn, plan, st, now, waiting_feedback, on_ticker);
        if armed != Some(wake) {
            sleep.as_mut().reset(wake.into());
            armed = Some(wake);
        }
        let feedback = plan.feedback.as_deref();
        let ticker = plan.ticker.as_deref();
        conn.prepare_read();
        tokio::select! {
            biased;
            r = conn.wr.write(&conn.wbuf), if !conn.wbuf.is_empty() => {
                let n = r?;
                conn.wrote(n, Instant::now());
            }
            r = conn.rd.read_buf(&mut conn.rbuf) => {
                if r? == 0 {
                    return Err(ClientError::Closed);
                }
                handle_acks(conn, st)?;
            }
            _ = &mut sleep => { armed = None; }
            _ = async { if let Some(t) = ticker { t.wait().await } }, if on_ticker => {
                // The tick is the fill time, whatever our clock reads a few µs either side.
                st.next_fill_ns = 0;
            }
            _ = async { if let Some(fb) = feedback { fb.wait().await } }, if waiting_feedback => {
                st.last_progress = Instant::now();
            }
        }
    }
}

/// True when room to send exists (or will, at the next ack).
fn can_encode(conn: &Connection, plan: &PublisherPlan, st: &State) -> bool {
    conn.wbuf.len() < WRITE_HIGH_WATER && (plan.qos == QoS::AtMostOnce || st.ids.has_room())
}

/// Open loop with a ticker: wait on it when the next fill is at most two ticks away (a
/// farther one sleeps on a tokio timer first, so slow publishers are not woken every tick).
fn uses_ticker(conn: &Connection, plan: &PublisherPlan, st: &State, now_ns: u64) -> bool {
    let (Some(t), Some(p)) = (&plan.ticker, &plan.pacer) else {
        return false;
    };
    !st.done_sending
        && can_encode(conn, plan, st)
        && p.next_ns().max(st.next_fill_ns) <= now_ns.saturating_add(2 * t.tick_ns())
}

fn next_wake(
    conn: &Connection,
    plan: &PublisherPlan,
    st: &State,
    now: Instant,
    waiting_feedback: bool,
    on_ticker: bool,
) -> Instant {
    let mut wake = st.give_up.unwrap_or(now + Duration::from_secs(3600));
    if !st.done_sending {
        match &plan.pacer {
            // The ticker wakes it; the end of the run still needs a timer.
            Some(_) if on_ticker => wake = wake.min(plan.clock.instant_at(plan.end_ns)),
            Some(p) if can_encode(conn, plan, st) => {
                let due = p.next_ns().max(st.next_fill_ns).min(plan.end_ns);
                // With a ticker, sleep only until it can take over (two ticks before).
                let early = plan.ticker.as_ref().map_or(0, |t| 2 * t.tick_ns());
                wake = wake.min(plan.clock.instant_at(due.saturating_sub(early)));
            }
            // Closed loop: wake at the end of the run to stop sending.
            _ => wake = wake.min(plan.clock.instant_at(plan.end_ns)),
        }
        if waiting_feedback {
            wake = wake.min(st.last_progress + STALL_RESET);
        }
    }
    if let Some(p) = conn.ping_due() {
        wake = wake.min(p);
    }
    wake
}

fn fill(
    conn: &mut Connection,
    plan: &mut PublisherPlan,
    st: &mut State,
    now_ns: u64,
) -> Result<(), ClientError> {
    let before = st.res.sent;
    loop {
        if st.res.sent >= plan.max_messages.unwrap_or(u64::MAX) {
            st.done_sending = true;
            break;
        }
        if conn.wbuf.len() >= WRITE_HIGH_WATER
            || (plan.qos != QoS::AtMostOnce && !st.ids.has_room())
        {
            break;
        }
        let (k, stamp) = match plan.pacer.as_mut() {
            Some(p) => {
                if p.next_ns() >= plan.end_ns {
                    st.done_sending = true;
                    break;
                }
                match p.pop_due(now_ns) {
                    Some(due) => due,
                    None => break,
                }
            }
            None => {
                if now_ns >= plan.end_ns {
                    st.done_sending = true;
                    break;
                }
                if let Some(fb) = &plan.feedback {
                    let inflight = st
                        .res
                        .sent
                        .saturating_sub(fb.delivered_count() + st.forgiven);
                    if inflight >= u64::from(plan.window) {
                        break;
                    }
                }
                let k = st.next;
                st.next += 1;
                (k, now_ns)
            }
        };
        encode_one(conn, plan, st, k, stamp, now_ns)?;
        if plan.pacer.is_some() {
            st.lag.push(now_ns.saturating_sub(stamp));
        }
    }
    let batch = st.res.sent - before;
    if batch > 0 {
        Live::add(&plan.live.sent, batch);
        Recorders::record_batch(&plan.rec.send_lag, &mut st.lag);
    }
    Ok(())
}

fn encode_one(
    conn: &mut Connection,
    plan: &PublisherPlan,
    st: &mut State,
    k: u64,
    stamp: u64,
    now_ns: u64,
) -> Result<(), ClientError> {
    let n = plan.streams.len().max(1) as u64;
    let Some(stream) = plan.streams.get((k % n) as usize) else {
        return Err(ClientError::Unexpected("publisher without streams"));
    };
    let header = Header {
        sent_ns: stamp,
        publisher: stream.id,
        // Wraps after 4 billion messages per stream, far beyond any run.
        seq: (k / n) as u32,
    };
    let packet_id = match plan.qos {
        QoS::AtMostOnce => None,
        _ => Some(
            st.ids
                .take()
                .ok_or(ClientError::Unexpected("packet ids exhausted"))?,
        ),
    };
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: plan.qos,
        retain: false,
        topic: stream.topic.clone(),
        packet_id,
        payload: st.payload.next(&header, now_ns),
        properties: PublishProperties::default(),
    });
    conn.queue(&publish)?;
    st.res.sent += 1;
    if stamp >= plan.warmup_end_ns && stamp < plan.end_ns {
        st.res.sent_in_window += 1;
    }
    Ok(())
}

fn handle_acks(conn: &mut Connection, st: &mut State) -> Result<(), ClientError> {
    while let Some(p) = conn.decode()? {
        match p {
            Packet::PubAck(a) => {
                st.ids.release(a.packet_id);
                if a.reason_code.as_u8() >= 0x80 {
                    st.res.rejected += 1;
                }
            }
            Packet::PubRec(a) if a.reason_code.as_u8() >= 0x80 => {
                st.ids.release(a.packet_id);
                st.res.rejected += 1;
            }
            Packet::PubRec(a) => conn.queue(&Packet::PubRel(PubResponse::success(a.packet_id)))?,
            Packet::PubComp(a) => {
                st.ids.release(a.packet_id);
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => return Err(ClientError::Disconnected(d.reason_code)),
            other => return Err(ClientError::Unexpected(other.name())),
        }
    }
    st.last_progress = Instant::now();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_pool_respects_limit_and_reuses_ids() {
        let mut p = IdPool::new(3);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        let c = p.take().unwrap();
        assert_eq!((a.get(), b.get(), c.get()), (1, 2, 3));
        assert!(p.take().is_none());
        assert!(p.release(b));
        assert!(!p.release(b), "double release must be refused");
        assert_eq!(p.take().unwrap().get(), 4);
        assert_eq!(p.inflight(), 3);
    }

    #[test]
    fn id_pool_wraps_past_65535_and_skips_ids_in_use() {
        let mut p = IdPool::new(65_535);
        let first = p.take().unwrap(); // 1 stays in use
        for _ in 0..65_533 {
            let id = p.take().unwrap();
            p.release(id);
        }
        // 65,535 was handed out last; wrapping skips 1 (in use) and lands on 2.
        assert_eq!(p.take().unwrap().get(), 65_535);
        assert_eq!(p.take().unwrap().get(), 2);
        assert!(p.release(first));
    }

    #[test]
    fn sent_is_spread_over_streams_round_robin() {
        let r = PublisherResult {
            sent: 10,
            ..Default::default()
        };
        let per: Vec<u64> = (0..3).map(|j| r.sent_on_stream(j, 3)).collect();
        assert_eq!(per, vec![4, 3, 3]);
        assert_eq!(per.iter().sum::<u64>(), 10);
    }
}
