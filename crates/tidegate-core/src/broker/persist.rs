//! Persistence hooks: the store operations the broker emits, the outputs it holds until they
//! are durable, and the conversions between engine state and store records.
//!
//! Place in the data flow:
//! ```text
//! event ─▶ Broker ─┬─ StoreOp ──▶ ops log ──take_store_batch──▶ shell: Store::apply (writer thread)
//!                  └─ Output ──▶ staged ──▶ held per connection ──handle_store_committed──▶ poll_output
//! ```
//! The rule is the write-ahead rule, applied per connection: **an output that makes a promise
//! about the store leaves only once the store operations emitted before it are durable, and no
//! output overtakes an earlier output to the same connection.** When an event is settled, each
//! of its outputs is tagged with the batch that carries the operations emitted so far (or with
//! nothing, see below); it leaves when that batch is reported and everything queued before it
//! for the same connection has left. Outputs to other connections are not in the way.
//!
//! That gives every guarantee the store promises: a PUBACK/PUBREC means the message is in every
//! persistent subscriber's queue (or inflight entry) and the inbound QoS 2 id is stored; a
//! SUBACK or CONNACK of a persistent session means its state is stored; a QoS 2 PUBLISH (and a
//! PUBREL) a subscriber sees was stored first (so a QoS 2 delivery seen before a crash is found
//! again after it, with the same packet id, and is never delivered a second time under a new
//! one); acknowledgements leave in the order their PUBLISHes came [MQTT-4.6.0-2..4] because
//! they go to the same connection.
//!
//! Outputs that promise nothing about the store do not wait for it (they still wait behind
//! earlier outputs to their connection): PINGRESP, and a PUBLISH at QoS 0 or 1 of a message
//! published at QoS 0 or 1. Such a delivery may be seen before the write that records it; if
//! the gateway dies before that write, the publisher was not acknowledged (its PUBACK waits
//! for the write) and sends again, or the message is still in the stored queue or inflight
//! entry and is sent again — a duplicate, which at-least-once allows, and which QoS 0/1
//! publications get from any publisher's resend anyway. A delivery of a QoS 2 *publication*
//! always waits (even when downgraded to QoS 0 or 1 by the subscription): the publisher's
//! resend after a crash would route it again, and exactly once from the publisher must not
//! become twice at a subscriber. `docs/design/storage.md` has the full argument.
//!
//! When a batch cannot be written (full disk), the outputs that needed it go out, except their
//! *promises*: a PUBACK/PUBREC is turned into reason 0x97 (Quota exceeded) for MQTT 5 —
//! a QoS 2 id is forgotten, the flow ends — and into a closed connection for 3.1.1, which has
//! no way to say no; a SUBACK's granted codes become failures and the subscriptions are
//! removed. Until a write succeeds again, QoS 1/2 and retained publications and SUBSCRIBEs of
//! persistent sessions are refused the same way before anything is routed.
//!
//! Tenants: the store knows no tenant; a non-default tenant's session is stored under
//! `{tenant}\u{1F}{client id}` and its retained topics under `{tenant}#{topic}`, and restore
//! splits them back (the default tenant's names are unchanged; see the tenant module).

use super::conn::Phase;
use super::session::{Awaiting, Inflight, PendingWill, Session};
use super::tenant::{self, TenantIdx};
use super::timers::TimerEvent;
use super::{Broker, ConnId, Output};
use crate::Message;
use crate::queue::{MessageQueue, Queued};
use crate::router::{SessionKey, SubscriptionEntry};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tidegate_protocol::{Packet, PacketId, QoS, ReasonCode};
use tidegate_store::{
    InflightRecord, InflightStage, MessageRecord, PendingWillRecord, Presence, QueueChunk,
    QueueLoad, QueuedRecord, SessionRecord, Snapshot, StoreOp, SubscriptionRecord, UnixMillis,
};

/// Identifies a batch handed out by [`Broker::take_store_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(pub u64);

/// Store operations to apply atomically, in order, then report with
/// [`Broker::handle_store_committed`] or [`Broker::handle_store_failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreBatch {
    /// The id to report back.
    pub id: BatchId,
    /// The operations, in the order the broker emitted them.
    pub ops: Vec<StoreOp>,
}

/// What restoring a snapshot found, for the start-up log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Sessions restored.
    pub sessions: usize,
    /// Sessions whose expiry passed while the gateway was down (their wills were published).
    pub expired_sessions: usize,
    /// Queued deliveries restored (held by the store, loaded when their client returns).
    pub queued: usize,
    /// Retained messages restored.
    pub retained: usize,
    /// Retained messages dropped because they expired while the gateway was down.
    pub expired_retained: usize,
    /// Wills published at start-up (sessions that were online when the gateway stopped, or
    /// whose will delay passed).
    pub wills: usize,
}

/// Maps engine instants to wall-clock time and back, from one pair of readings taken at
/// restore: the store keeps wall-clock time, the engine only `Instant`s.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    at: Instant,
    unix: UnixMillis,
}

impl WallClock {
    fn to_unix(self, t: Instant) -> UnixMillis {
        match t.checked_duration_since(self.at) {
            Some(after) => self.unix.saturating_add(after),
            None => {
                let before =
                    u64::try_from(self.at.duration_since(t).as_millis()).unwrap_or(u64::MAX);
                UnixMillis(self.unix.0.saturating_sub(before))
            }
        }
    }

    /// `None` when the time is beyond what an `Instant` holds (as good as never).
    fn to_instant(self, u: UnixMillis) -> Option<Instant> {
        if u >= self.unix {
            self.at.checked_add(self.unix.until(u))
        } else {
            Some(self.at.checked_sub(u.until(self.unix)).unwrap_or(self.at))
        }
    }
}

/// An acknowledgement whose meaning depends on its batch being written.
#[derive(Debug)]
pub(super) enum Promise {
    /// PUBACK or PUBREC to a publisher (the message was routed and stored).
    Ack { session: SessionKey, v5: bool },
    /// SUBACK of a persistent session.
    SubAck {
        session: SessionKey,
        v5: bool,
        filters: Vec<String>,
    },
    /// An API publication's [`Output::Committed`].
    Api,
}

/// An output of the event being handled, not yet settled.
#[derive(Debug)]
pub(super) struct Staged {
    output: Output,
    promise: Option<Promise>,
    /// Promises nothing about the store: waits only behind earlier outputs to its connection.
    free: bool,
}

/// A settled output waiting for its batch or for an earlier output to the same connection.
#[derive(Debug)]
struct Held {
    /// The batch that must be reported first (0: none).
    needs: u64,
    staged: Staged,
    /// Its batch failed: the promise is withdrawn when it leaves.
    withdrawn: bool,
}

#[derive(Debug)]
struct InFlightBatch {
    id: u64,
    /// Sessions whose queue load rides in this batch.
    loads: Vec<SessionKey>,
    /// Every operation was cancelled: reporting it proves nothing about the store.
    empty: bool,
}

/// The persistence state of a durable broker (`None` in [`Broker`] when persistence is off).
#[derive(Debug)]
pub(super) struct Persist {
    /// Operations emitted since the last batch was taken.
    ops: Vec<StoreOp>,
    clock: WallClock,
    /// Outputs of the events handled since the last settle.
    staged: Vec<Staged>,
    /// Settled outputs not yet released, in the order they were produced.
    held: VecDeque<Held>,
    /// How many of `held` go to each connection (absent: none).
    held_per_conn: HashMap<ConnId, usize>,
    /// Batches handed out and not yet reported, oldest first.
    batches: VecDeque<InFlightBatch>,
    next_batch: u64,
    /// Every batch up to this id has been reported (written or failed).
    reported: u64,
    /// QoS 1 inflight entries created by an operation still in `ops` (its index there): when
    /// the subscriber acknowledges before the batch is taken, the creation is cancelled and
    /// no deletion is written (see [`Broker::store`]).
    fresh_inflight: HashMap<(Arc<str>, PacketId), usize>,
    /// Indexes of cancelled operations in `ops`.
    cancelled: HashSet<usize>,
    /// False after a failed write, until one succeeds.
    pub(super) store_ok: bool,
    /// The record of the message being fanned out, so N deliveries share one.
    cache: Option<(Arc<Message>, Arc<MessageRecord>)>,
}

impl Broker {
    /// Builds a durable broker from what a store held: sessions (offline now: those that were
    /// online when the gateway stopped get their will published, after its delay, and their
    /// expiry clock starts now), subscriptions, inflight state, queue indexes and retained
    /// messages. Sessions and retained messages that expired meanwhile are dropped (the wills
    /// of such sessions are published). `wall` is the wall-clock time at `now`, to convert
    /// stored deadlines.
    ///
    /// From then on the broker emits store operations ([`Broker::take_store_batch`]) and holds
    /// every output until the operations before it are durable.
    pub fn restore(
        config: crate::BrokerConfig,
        now: Instant,
        wall: SystemTime,
        snapshot: Snapshot,
    ) -> (Broker, RestoreReport) {
        let mut b = Broker::new(config);
        let clock = WallClock {
            at: now,
            unix: UnixMillis::from_system(wall),
        };
        b.persist = Some(Persist {
            ops: Vec::new(),
            clock,
            staged: Vec::new(),
            held: VecDeque::new(),
            held_per_conn: HashMap::new(),
            batches: VecDeque::new(),
            next_batch: 1,
            reported: 0,
            fresh_inflight: HashMap::new(),
            cancelled: HashSet::new(),
            store_ok: true,
            cache: None,
        });
        let mut report = RestoreReport::default();
        for orphan in snapshot.orphans {
            b.store(StoreOp::DeleteSession(orphan));
        }
        // Sessions first, so retained publishers and wills find their subscribers.
        let mut presences = Vec::with_capacity(snapshot.sessions.len());
        for stored in snapshot.sessions {
            report.sessions += 1;
            report.queued += stored.queue.len();
            let key = b.restore_session(&stored.record.client_id, &stored);
            presences.push((key, stored.record.presence));
        }
        for record in snapshot.retained {
            let expired = record.expires_at.is_some_and(|at| at <= clock.unix);
            if expired {
                report.expired_retained += 1;
                b.store(StoreOp::DeleteRetained(record.topic.clone()));
                continue;
            }
            let (namespace, topic) = tenant::split_stored_topic(&record.topic);
            let idx = namespace.map_or(TenantIdx::DEFAULT, |t| b.tenant_idx(t));
            let mut msg = b.message_from_record(&record);
            if namespace.is_some() {
                let Ok(topic) = tidegate_protocol::Utf8::try_from(topic) else {
                    continue;
                };
                if let Some(m) = Arc::get_mut(&mut msg) {
                    m.topic = topic;
                }
            }
            if b.tenant_mut(idx).retained.set(msg).is_ok() {
                report.retained += 1;
            }
        }
        for (key, presence) in presences {
            b.restore_presence(now, key, presence, &mut report);
        }
        // The uptime counts from the restore; the `$SYS` timer runs if sessions came back.
        b.started = Some(now);
        if !b.sessions.is_empty() {
            b.wake_sys(now);
        }
        (b, report)
    }

    fn restore_session(
        &mut self,
        store_id: &Arc<str>,
        stored: &tidegate_store::StoredSession,
    ) -> SessionKey {
        let (namespace, plain) = tenant::split_store_id(store_id);
        let (tenant, client_id): (TenantIdx, Arc<str>) = match namespace {
            None => (TenantIdx::DEFAULT, store_id.clone()),
            Some(t) => (self.tenant_idx(t), Arc::from(plain)),
        };
        let key = SessionKey(self.next_session);
        self.next_session += 1;
        let mut queue = MessageQueue::new(
            self.config.max_queued_messages,
            self.config.queue_drop_policy,
        );
        // Restored sessions are offline: their queues stay in the store.
        queue.set_memory_window(0);
        queue.restore_index(stored.queue.iter().map(|e| (e.seq, e.qos)));
        let mut session = Session::new(
            (tenant, client_id.clone(), store_id.clone()),
            stored.record.expiry_interval,
            queue,
            true,
        );
        for sub in &stored.subscriptions {
            let entry = SubscriptionEntry {
                options: sub.options,
                identifier: sub.identifier,
            };
            let router = &mut self.tenant_mut(tenant).router;
            if router.subscribe(key, &sub.filter, entry).is_ok() {
                session.subscriptions.insert(sub.filter.to_string(), entry);
            }
        }
        session
            .inbound_qos2
            .extend(stored.inbound_qos2.iter().copied());
        let mut inflight = Inflight::default();
        for entry in &stored.inflight {
            let stage = match &entry.stage {
                InflightStage::AwaitingAck(q) => Awaiting::Ack(self.queued_from_record(q)),
                InflightStage::AwaitingRec(q) => Awaiting::Rec(self.queued_from_record(q)),
                InflightStage::AwaitingComp => Awaiting::Comp,
            };
            inflight.restore(entry.packet_id, entry.seq, stage);
        }
        session.inflight = inflight;
        self.sessions.insert(key, session);
        self.tenant_mut(tenant).by_client_id.insert(client_id, key);
        key
    }

    /// Puts a restored session in the state its presence record implies, as of `now`.
    fn restore_presence(
        &mut self,
        now: Instant,
        key: SessionKey,
        presence: Presence,
        report: &mut RestoreReport,
    ) {
        let Some(clock) = self.persist.as_ref().map(|p| p.clock) else {
            return;
        };
        let Some(tenant) = self.sessions.get(&key).map(|s| s.tenant) else {
            return;
        };
        match presence {
            Presence::Connected { will } => {
                // The connection ended with the gateway: an abnormal disconnect, seen now.
                let expiry = self.sessions.get(&key).map_or(0, |s| s.expiry);
                if expiry == 0 {
                    self.end_session(now, key);
                    if let Some(will) = will {
                        report.wills += 1;
                        self.publish_will(now, tenant, will, None);
                    }
                    return;
                }
                self.arm_session_expiry(now, key, expiry);
                if let Some(will) = will {
                    match will.properties.will_delay_interval.unwrap_or(0) {
                        0 => {
                            report.wills += 1;
                            self.publish_will(now, tenant, will, Some(key));
                        }
                        delay => {
                            let timer = self.arm(
                                now,
                                Duration::from_secs(u64::from(delay)),
                                TimerEvent::WillDelay(key),
                            );
                            if let Some(s) = self.sessions.get_mut(&key) {
                                s.pending_will = Some(PendingWill {
                                    will: Box::new(will),
                                    timer,
                                });
                            }
                        }
                    }
                }
            }
            Presence::Offline { expires_at, will } => {
                if expires_at.is_some_and(|at| at <= clock.unix) {
                    report.expired_sessions += 1;
                    if let Some(pending) = will {
                        report.wills += 1;
                        self.publish_will(now, tenant, pending.will, None);
                    }
                    self.end_session(now, key);
                    return;
                }
                let timer = expires_at
                    .and_then(|at| clock.to_instant(at))
                    .map(|at| self.timers.insert(at, TimerEvent::SessionExpiry(key)));
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.expiry_timer = timer;
                }
                if let Some(pending) = will {
                    let due = pending.publish_at.is_some_and(|at| at <= clock.unix);
                    if due {
                        report.wills += 1;
                        self.publish_will(now, tenant, pending.will, Some(key));
                    } else {
                        let timer = pending
                            .publish_at
                            .and_then(|at| clock.to_instant(at))
                            .map(|at| self.timers.insert(at, TimerEvent::WillDelay(key)));
                        if let Some(s) = self.sessions.get_mut(&key) {
                            s.pending_will = Some(PendingWill {
                                will: Box::new(pending.will),
                                timer,
                            });
                        }
                    }
                }
            }
        }
        self.persist_session(key);
    }

    /// Arms the expiry of an offline session (`u32::MAX` never expires).
    pub(super) fn arm_session_expiry(&mut self, now: Instant, key: SessionKey, expiry: u32) {
        if expiry == u32::MAX {
            return;
        }
        let timer = self.arm(
            now,
            Duration::from_secs(u64::from(expiry)),
            TimerEvent::SessionExpiry(key),
        );
        if let Some(s) = self.sessions.get_mut(&key) {
            s.expiry_timer = timer;
        }
    }

    /// True when this broker persists (it was built by [`Broker::restore`]).
    pub fn is_durable(&self) -> bool {
        self.persist.is_some()
    }

    /// The store operations emitted since the last call, as one batch to apply atomically;
    /// `None` when there are none. Outputs that depend on these operations are held until this
    /// batch is reported written. Several batches may be out at once; they must be applied
    /// and reported in the order they were taken.
    ///
    /// The batch's `ops` may be empty when every operation emitted was cancelled (a QoS 1
    /// delivery acknowledged before it was written): there is nothing to write, but outputs
    /// wait for it, so it is reported like any other (at once, when no batch is before it).
    pub fn take_store_batch(&mut self) -> Option<StoreBatch> {
        self.settle();
        let p = self.persist.as_mut()?;
        if p.ops.is_empty() {
            return None;
        }
        let id = p.next_batch;
        p.next_batch += 1;
        let mut ops = std::mem::take(&mut p.ops);
        p.fresh_inflight.clear();
        if !p.cancelled.is_empty() {
            let cancelled = std::mem::take(&mut p.cancelled);
            ops = ops
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !cancelled.contains(i))
                .map(|(_, op)| op)
                .collect();
        }
        let loads = ops
            .iter()
            .filter_map(|op| match op {
                StoreOp::LoadQueue(l) => Some(SessionKey(l.tag)),
                _ => None,
            })
            .collect();
        p.batches.push_back(InFlightBatch {
            id,
            loads,
            empty: ops.is_empty(),
        });
        Some(StoreBatch {
            id: BatchId(id),
            ops,
        })
    }

    /// Store operations emitted and not yet taken into a batch (for backpressure: the shell
    /// stops reading events when the next batch grows too large).
    pub fn pending_store_ops(&self) -> usize {
        self.pending_ops()
    }

    /// Batches handed out and not yet reported.
    pub fn store_batches_in_flight(&self) -> usize {
        self.persist.as_ref().map_or(0, |p| p.batches.len())
    }

    /// Batch `id` is durable: the outputs waiting for it go out (in order per connection),
    /// and the queue loads it carried are delivered.
    pub fn handle_store_committed(&mut self, now: Instant, id: BatchId, loaded: Vec<QueueChunk>) {
        self.settle();
        let Some(batch) = self.pop_batch(id) else {
            return;
        };
        if let Some(p) = &mut self.persist
            && !batch.empty
        {
            p.store_ok = true;
        }
        self.release(now);
        for chunk in loaded {
            self.on_queue_loaded(now, chunk);
        }
    }

    /// Batch `id` could not be written: the outputs waiting for it go out with their promises
    /// withdrawn (see the module docs), and until a write succeeds publications that would
    /// need the store are refused.
    pub fn handle_store_failed(&mut self, now: Instant, id: BatchId) {
        self.settle();
        let Some(batch) = self.pop_batch(id) else {
            return;
        };
        self.counters.store_failures += 1;
        if let Some(p) = &mut self.persist {
            p.store_ok = false;
            for h in p.held.iter_mut() {
                if h.needs == batch.id && h.staged.promise.is_some() {
                    h.withdrawn = true;
                }
            }
        }
        self.release(now);
        for key in batch.loads {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.queue.load_failed();
            }
            self.drain(now, key);
        }
    }

    /// A store check succeeded after a failure: publications are accepted again.
    pub fn handle_store_recovered(&mut self) {
        if let Some(p) = &mut self.persist {
            p.store_ok = true;
        }
    }

    /// False after a failed write, until one succeeds (always true without persistence).
    pub fn store_available(&self) -> bool {
        self.persist.as_ref().is_none_or(|p| p.store_ok)
    }

    fn pop_batch(&mut self, id: BatchId) -> Option<InFlightBatch> {
        let p = self.persist.as_mut()?;
        if p.batches.front().map(|b| b.id) != Some(id.0) {
            tracing::warn!(batch = id.0, "store batch reported out of order; ignored");
            return None;
        }
        p.reported = id.0;
        p.batches.pop_front()
    }

    /// Releases every held output whose batch is reported and that has nothing held before it
    /// on its connection; withdrawn promises are rewritten on the way out.
    fn release(&mut self, now: Instant) {
        let Some(p) = &mut self.persist else {
            return;
        };
        if p.held.is_empty() {
            return;
        }
        let mut blocked: HashSet<ConnId> = HashSet::new();
        let mut released = Vec::new();
        let mut kept = VecDeque::with_capacity(p.held.len());
        for h in p.held.drain(..) {
            let conn = output_conn(&h.staged.output);
            if h.needs <= p.reported && !blocked.contains(&conn) {
                if let Some(n) = p.held_per_conn.get_mut(&conn) {
                    *n -= 1;
                    if *n == 0 {
                        p.held_per_conn.remove(&conn);
                    }
                }
                released.push(h);
            } else {
                blocked.insert(conn);
                kept.push_back(h);
            }
        }
        p.held = kept;
        let mut close = Vec::new();
        for h in released {
            match (h.withdrawn, h.staged.promise) {
                (true, Some(promise)) => {
                    if let Some(output) = self.withdraw(promise, h.staged.output, &mut close) {
                        self.out.push_back(output);
                    }
                }
                _ => self.out.push_back(h.staged.output),
            }
        }
        for conn in close {
            self.end_connection(now, conn, super::lifecycle::WillFate::Publish, true);
        }
    }

    /// Rewrites a promise of a failed batch; returns what to send instead (`None`: nothing,
    /// and the connection goes on `close`).
    fn withdraw(
        &mut self,
        promise: Promise,
        output: Output,
        close: &mut Vec<ConnId>,
    ) -> Option<Output> {
        let (conn, packet) = match output {
            Output::Committed { token, .. } => {
                return Some(Output::Committed {
                    token,
                    durable: false,
                });
            }
            Output::Send { conn, packet } => (conn, packet),
            Output::Close { .. } => return Some(output),
        };
        match (promise, packet) {
            (Promise::Ack { session, v5 }, Packet::PubRec(mut r)) => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.inbound_qos2.remove(&r.packet_id);
                }
                if let Some(client_id) = self.durable_client(session) {
                    self.store(StoreOp::DeleteInboundQos2 {
                        client_id,
                        packet_id: r.packet_id,
                    });
                }
                if !v5 {
                    close.push(conn);
                    return None;
                }
                r.reason_code = ReasonCode::QuotaExceeded;
                Some(Output::Send {
                    conn,
                    packet: Packet::PubRec(r),
                })
            }
            (Promise::Ack { v5, .. }, Packet::PubAck(mut r)) => {
                if !v5 {
                    close.push(conn);
                    return None;
                }
                r.reason_code = ReasonCode::QuotaExceeded;
                Some(Output::Send {
                    conn,
                    packet: Packet::PubAck(r),
                })
            }
            (
                Promise::SubAck {
                    session,
                    v5,
                    filters,
                },
                Packet::SubAck(mut ack),
            ) => {
                for (code, filter) in ack.reason_codes.iter_mut().zip(&filters) {
                    if !code.is_success() {
                        continue;
                    }
                    *code = if v5 {
                        ReasonCode::QuotaExceeded
                    } else {
                        ReasonCode::UnspecifiedError
                    };
                    self.unsubscribe_session(session, filter);
                    if let Some(client_id) = self.durable_client(session) {
                        self.store(StoreOp::DeleteSubscription {
                            client_id,
                            filter: Arc::from(filter.as_str()),
                        });
                    }
                }
                Some(Output::Send {
                    conn,
                    packet: Packet::SubAck(ack),
                })
            }
            (_, packet) => Some(Output::Send { conn, packet }),
        }
    }

    // ----- helpers for the other submodules -----

    /// Queues an output: at once without persistence, else staged until [`Broker::settle`].
    pub(super) fn emit(&mut self, output: Output, promise: Option<Promise>) {
        let free = matches!(
            &output,
            Output::Send {
                packet: Packet::PingResp,
                ..
            }
        );
        self.stage(output, promise, free);
    }

    /// Queues a PUBLISH to a subscriber of a message published at `published`: one at QoS 0
    /// or 1 of a QoS 0 or 1 publication promises nothing about the store and does not wait
    /// for it (see the module docs).
    pub(super) fn emit_delivery(&mut self, conn: ConnId, packet: Packet, published: QoS) {
        let free = published != QoS::ExactlyOnce
            && matches!(&packet, Packet::Publish(p) if p.qos != QoS::ExactlyOnce);
        self.stage(Output::Send { conn, packet }, None, free);
    }

    fn stage(&mut self, output: Output, promise: Option<Promise>, free: bool) {
        match &mut self.persist {
            None => self.out.push_back(output),
            Some(p) => p.staged.push(Staged {
                output,
                promise,
                free,
            }),
        }
    }

    /// Settles the outputs of the events handled so far: each goes out at once when it waits
    /// for nothing (no store operation before it pending, or it promises nothing) and nothing
    /// is held for its connection; otherwise it is held, tagged with the batch that will carry
    /// the operations emitted so far.
    pub(super) fn settle(&mut self) {
        let Broker { persist, out, .. } = self;
        let Some(p) = persist else {
            return;
        };
        if p.staged.is_empty() {
            return;
        }
        // The batch holding every operation emitted so far: the pending one, or else the last
        // one taken (already reported when `<= reported`).
        let pending = if p.ops.is_empty() {
            p.next_batch - 1
        } else {
            p.next_batch
        };
        for staged in p.staged.drain(..) {
            let conn = output_conn(&staged.output);
            let needs = if staged.free { 0 } else { pending };
            if needs <= p.reported && !p.held_per_conn.contains_key(&conn) {
                out.push_back(staged.output);
            } else {
                *p.held_per_conn.entry(conn).or_insert(0) += 1;
                p.held.push_back(Held {
                    needs,
                    staged,
                    withdrawn: false,
                });
            }
        }
    }

    /// Appends a store operation (a no-op without persistence).
    ///
    /// One pair is cancelled instead of written: a QoS 1 inflight entry whose creation is
    /// still in the pending operations and which is deleted (the subscriber acknowledged)
    /// before they are taken. Its key was absent before the creation (a packet id is reused
    /// only after the deletion of its previous entry, which is an earlier operation and stays),
    /// so dropping both leaves every later state of the store the same, and no batch boundary
    /// falls between them. Under load most QoS 1 deliveries to online subscribers end this
    /// way, and the batch shrinks to what still matters.
    pub(super) fn store(&mut self, op: StoreOp) {
        let Some(p) = &mut self.persist else {
            return;
        };
        match &op {
            StoreOp::PutInflight { client_id, record } => {
                let key = (client_id.clone(), record.packet_id);
                if matches!(record.stage, InflightStage::AwaitingAck(_)) {
                    p.fresh_inflight.insert(key, p.ops.len());
                } else {
                    p.fresh_inflight.remove(&key);
                }
            }
            StoreOp::DeleteInflight {
                client_id,
                packet_id,
            } => {
                if let Some(at) = p.fresh_inflight.remove(&(client_id.clone(), *packet_id)) {
                    p.cancelled.insert(at);
                    return;
                }
            }
            StoreOp::DeleteSession(client_id) => {
                p.fresh_inflight.retain(|(c, _), _| c != client_id);
            }
            _ => {}
        }
        p.ops.push(op);
    }

    /// Operations emitted so far and not yet taken (to tell whether an event wrote).
    pub(super) fn pending_ops(&self) -> usize {
        self.persist.as_ref().map_or(0, |p| p.ops.len())
    }

    /// The store name of `key` (its client id in the default tenant) when its state is
    /// persisted.
    pub(super) fn durable_client(&self, key: SessionKey) -> Option<Arc<str>> {
        self.persist.as_ref()?;
        let s = self.sessions.get(&key)?;
        s.durable.then(|| s.store_id.clone())
    }

    /// Writes the session record of `key` (identity, expiry, presence, will).
    pub(super) fn persist_session(&mut self, key: SessionKey) {
        let Some(clock) = self.persist.as_ref().map(|p| p.clock) else {
            return;
        };
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        if !s.durable {
            return;
        }
        let online = s.conn.and_then(|c| match &self.conns.get(&c)?.phase {
            Phase::Connected(st) => Some(st.will.as_deref().cloned()),
            Phase::Connecting { .. } => None,
        });
        let presence = match online {
            Some(will) => Presence::Connected { will },
            None => Presence::Offline {
                expires_at: s.expiry_timer.map(|(at, _)| clock.to_unix(at)),
                will: s.pending_will.as_ref().map(|p| PendingWillRecord {
                    will: (*p.will).clone(),
                    publish_at: p.timer.map(|(at, _)| clock.to_unix(at)),
                }),
            },
        };
        let record = SessionRecord {
            client_id: s.store_id.clone(),
            expiry_interval: s.expiry,
            presence,
        };
        self.store(StoreOp::PutSession(record));
    }

    /// The record of a subscription.
    pub(super) fn subscription_record(
        filter: &str,
        entry: SubscriptionEntry,
    ) -> SubscriptionRecord {
        SubscriptionRecord {
            filter: Arc::from(filter),
            options: entry.options,
            identifier: entry.identifier,
        }
    }

    /// The stored form of a delivery (its message record shared with the rest of the fan-out).
    pub(super) fn queued_record(&mut self, item: &Queued) -> QueuedRecord {
        QueuedRecord {
            message: self.message_record(&item.message),
            qos: item.qos,
            retain: item.retain,
            subscription_identifiers: item.subscription_identifiers.clone(),
        }
    }

    /// The stored form of a message, built once per message.
    pub(super) fn message_record(&mut self, msg: &Arc<Message>) -> Arc<MessageRecord> {
        if let Some((cached, record)) = self.persist.as_ref().and_then(|p| p.cache.as_ref())
            && Arc::ptr_eq(cached, msg)
        {
            return record.clone();
        }
        let clock = self.persist.as_ref().map(|p| p.clock);
        let record = Arc::new(MessageRecord {
            topic: msg.topic.clone(),
            payload: msg.payload.clone(),
            qos: msg.qos,
            retain: msg.retain,
            properties: msg.properties.clone(),
            expires_at: msg.expires_at.and_then(|at| clock.map(|c| c.to_unix(at))),
            publisher: msg
                .publisher
                .and_then(|k| self.sessions.get(&k))
                .map(|s| s.store_id.clone()),
        });
        if let Some(p) = &mut self.persist {
            p.cache = Some((msg.clone(), record.clone()));
        }
        record
    }

    /// An inflight record for entry `id` of a session.
    pub(super) fn inflight_record(
        &mut self,
        id: tidegate_protocol::PacketId,
        seq: u64,
        stage: &Awaiting,
    ) -> InflightRecord {
        let stage = match stage {
            Awaiting::Ack(item) => InflightStage::AwaitingAck(self.queued_record(item)),
            Awaiting::Rec(item) => InflightStage::AwaitingRec(self.queued_record(item)),
            Awaiting::Comp => InflightStage::AwaitingComp,
        };
        InflightRecord {
            packet_id: id,
            seq,
            stage,
        }
    }

    /// A message rebuilt from its record.
    fn message_from_record(&self, r: &MessageRecord) -> Arc<Message> {
        let clock = self.persist.as_ref().map(|p| p.clock);
        Arc::new(Message {
            topic: r.topic.clone(),
            payload: r.payload.clone(),
            qos: r.qos,
            retain: r.retain,
            properties: r.properties.clone(),
            // A deadline beyond `Instant`'s range never comes; one in the past is kept as
            // such, so the message is dropped when met.
            expires_at: r
                .expires_at
                .and_then(|at| clock.and_then(|c| c.to_instant(at))),
            publisher: r
                .publisher
                .as_deref()
                .and_then(|id| self.session_of_store_id(id)),
            received: None,
        })
    }

    /// The session stored under `store_id`, if it is loaded.
    fn session_of_store_id(&self, store_id: &str) -> Option<SessionKey> {
        let (namespace, client_id) = tenant::split_store_id(store_id);
        let idx = namespace.map_or(Some(TenantIdx::DEFAULT), |t| self.find_tenant(t))?;
        self.tenant(idx).by_client_id.get(client_id).copied()
    }

    /// A delivery rebuilt from its record.
    fn queued_from_record(&self, r: &QueuedRecord) -> Queued {
        Queued {
            message: self.message_from_record(&r.message),
            qos: r.qos,
            retain: r.retain,
            subscription_identifiers: r.subscription_identifiers.clone(),
        }
    }

    /// Asks the store for the next part of a spilled queue, if it needs one.
    pub(super) fn request_queue_load(&mut self, key: SessionKey) -> bool {
        let window = self.config.queue_memory_window.max(1);
        let Some(client_id) = self.durable_client(key) else {
            return false;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return false;
        };
        let Some(from_seq) = s.queue.needs_load() else {
            return false;
        };
        s.queue.start_load();
        self.store(StoreOp::LoadQueue(QueueLoad {
            tag: key.0,
            client_id,
            from_seq,
            limit: window,
        }));
        true
    }

    fn on_queue_loaded(&mut self, now: Instant, chunk: QueueChunk) {
        let key = SessionKey(chunk.tag);
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.conn.is_none() {
            // Gone offline meanwhile: the entries stay in the store; load again on return.
            s.queue.load_failed();
            return;
        }
        let entries: Vec<(u64, Queued)> = chunk
            .entries
            .iter()
            .map(|(seq, r)| (*seq, self.queued_from_record(r)))
            .collect();
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let lost = s.queue.loaded(entries, chunk.complete);
        if lost > 0 {
            tracing::warn!(
                client_id = &*s.client_id,
                lost,
                "queued messages missing from the store (a write had failed)"
            );
            self.counters.dropped_queue_full += lost as u64;
        }
        self.drain(now, key);
    }

    /// Deletes a delivery from the stored queue of a durable session.
    pub(super) fn unqueue(&mut self, key: SessionKey, seq: u64) {
        if let Some(client_id) = self.durable_client(key) {
            self.store(StoreOp::DeleteQueued { client_id, seq });
        }
    }

    /// Whether publications needing the store are refused now (a write failed).
    pub(super) fn store_refusing(&self) -> bool {
        self.persist.as_ref().is_some_and(|p| !p.store_ok)
    }

    /// Outputs waiting for the store, for tests.
    #[cfg(test)]
    pub(super) fn held_outputs(&self) -> usize {
        self.persist
            .as_ref()
            .map_or(0, |p| p.staged.len() + p.held.len())
    }
}

/// The connection an output is for.
fn output_conn(output: &Output) -> ConnId {
    match output {
        Output::Send { conn, .. } | Output::Close { conn } => *conn,
        Output::Committed { .. } => super::API_CONN,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::BrokerConfig;
    use tidegate_protocol::{PubResponse, QoS};
    use tidegate_store::{MemoryStore, Store};

    fn kinds(ops: &[StoreOp]) -> Vec<&'static str> {
        ops.iter()
            .map(|op| match op {
                StoreOp::PutSession(_) => "PutSession",
                StoreOp::DeleteSession(_) => "DeleteSession",
                StoreOp::PutSubscription { .. } => "PutSubscription",
                StoreOp::DeleteSubscription { .. } => "DeleteSubscription",
                StoreOp::PutInboundQos2 { .. } => "PutInboundQos2",
                StoreOp::DeleteInboundQos2 { .. } => "DeleteInboundQos2",
                StoreOp::PutInflight { .. } => "PutInflight",
                StoreOp::DeleteInflight { .. } => "DeleteInflight",
                StoreOp::PutQueued { .. } => "PutQueued",
                StoreOp::DeleteQueued { .. } => "DeleteQueued",
                StoreOp::PutRetained(_) => "PutRetained",
                StoreOp::DeleteRetained(_) => "DeleteRetained",
                StoreOp::LoadQueue(_) => "LoadQueue",
            })
            .collect()
    }

    /// A persistent QoS 2 subscriber on `t` that went offline, and a persistent publisher.
    fn offline_subscriber(h: &mut H) -> ConnId {
        let sub = h.join(v5_persistent("sub", true));
        h.subscribe(sub, "t", QoS::ExactlyOnce);
        h.drop_conn(sub);
        h.join(v5_persistent("pub", true))
    }

    #[test]
    fn acknowledgements_wait_for_their_batch_and_leave_in_order() {
        let mut h = H::durable(BrokerConfig::default());
        let publ = offline_subscriber(&mut h);
        h.auto_commit = false;
        for id in 1..=3 {
            h.send(
                publ,
                Packet::Publish(publish("t", QoS::AtLeastOnce, id, "m")),
            );
        }
        h.send(publ, Packet::PingReq);
        assert_eq!(
            h.take(publ),
            vec![],
            "nothing leaves before the queue entries are stored"
        );
        assert_eq!(h.b.held_outputs(), 4);
        let ops = h.commit();
        assert_eq!(kinds(&ops), ["PutQueued", "PutQueued", "PutQueued"]);
        assert_eq!(
            h.take(publ),
            vec![puback(1), puback(2), puback(3), Packet::PingResp],
            "[MQTT-4.6.0-2] acknowledgements in the order the PUBLISHes came"
        );
        // With nothing pending, an output goes out at once.
        h.send(publ, Packet::PingReq);
        assert_eq!(h.take(publ), vec![Packet::PingResp]);
    }

    #[test]
    fn outputs_stay_behind_a_batch_in_flight_until_it_is_reported() {
        let mut h = H::durable(BrokerConfig::default());
        let publ = offline_subscriber(&mut h);
        h.auto_commit = false;
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "m")),
        );
        let batch = h.b.take_store_batch().unwrap();
        // An event without store work while the batch is being written: its output waits
        // behind the batch's.
        h.send(publ, Packet::PingReq);
        assert_eq!(h.b.take_store_batch(), None);
        assert_eq!(h.take(publ), vec![]);
        let now = h.now;
        h.b.handle_store_committed(now, batch.id, Vec::new());
        h.pump();
        assert_eq!(h.take(publ), vec![puback(1), Packet::PingResp]);
    }

    #[test]
    fn qos1_deliveries_leave_before_their_batch_and_qos2_ones_wait() {
        let mut h = H::durable(BrokerConfig::default());
        let sub = h.join(v5_persistent("sub", true));
        h.subscribe(sub, "one", QoS::AtLeastOnce);
        h.subscribe(sub, "two", QoS::ExactlyOnce);
        let publ = h.join(v5("pub"));
        let other = h.join(v5("other"));
        h.auto_commit = false;
        h.send(
            publ,
            Packet::Publish(publish("one", QoS::AtLeastOnce, 1, "a")),
        );
        assert_eq!(
            h.publishes(sub).len(),
            1,
            "a QoS 1 delivery promises nothing about the store"
        );
        assert_eq!(
            h.take(publ),
            vec![],
            "the PUBACK waits for the inflight entry"
        );
        h.send(other, Packet::PingReq);
        assert_eq!(
            h.take(other),
            vec![Packet::PingResp],
            "another connection is not in the way"
        );
        // Downgraded to QoS 1 by nothing: a QoS 2 publication waits, and so does everything
        // queued to the subscriber after it.
        h.send(
            publ,
            Packet::Publish(publish("two", QoS::ExactlyOnce, 2, "b")),
        );
        h.send(
            publ,
            Packet::Publish(publish("one", QoS::AtLeastOnce, 3, "c")),
        );
        assert_eq!(h.publishes(sub), vec![]);
        h.commit();
        let got = h.publishes(sub);
        assert_eq!(payloads(&got), [b"b".as_slice(), b"c"], "order kept");
        assert_eq!(h.take(publ), vec![puback(1), pubrec(2), puback(3)]);
    }

    #[test]
    fn a_delivery_acknowledged_before_its_batch_is_never_written() {
        let mut h = H::durable(BrokerConfig::default());
        let sub = h.join(v5_persistent("sub", true));
        h.subscribe(sub, "t", QoS::AtLeastOnce);
        let publ = h.join(v5("pub"));
        h.auto_commit = false;
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "a")),
        );
        let id = h.publishes(sub)[0].packet_id.unwrap();
        h.send(sub, Packet::PubAck(PubResponse::success(id)));
        let batch = h.b.take_store_batch().unwrap();
        assert!(batch.ops.is_empty(), "{:?}", kinds(&batch.ops));
        assert_eq!(h.take(publ), vec![], "the PUBACK still waits for its batch");
        let now = h.now;
        h.b.handle_store_committed(now, batch.id, Vec::new());
        assert_eq!(h.take(publ), vec![puback(1)]);
        // Acknowledged after its batch was taken: written, then deleted.
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 2, "b")),
        );
        let id = h.publishes(sub)[0].packet_id.unwrap();
        assert_eq!(kinds(&h.commit()), ["PutInflight"]);
        h.send(sub, Packet::PubAck(PubResponse::success(id)));
        assert_eq!(kinds(&h.commit()), ["DeleteInflight"]);
        let mut store = h.store.clone();
        assert!(store.load().unwrap().sessions[0].inflight.is_empty());
    }

    #[test]
    fn an_empty_batch_does_not_end_a_store_failure() {
        let mut h = H::durable(BrokerConfig::default());
        let sub = h.join(v5_persistent("sub", true));
        h.subscribe(sub, "t", QoS::AtLeastOnce);
        let publ = h.join(v5("pub"));
        h.auto_commit = false;
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "a")),
        );
        let first = h.b.take_store_batch().unwrap();
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 2, "b")),
        );
        let ids: Vec<_> = h
            .publishes(sub)
            .iter()
            .map(|p| p.packet_id.unwrap())
            .collect();
        h.send(sub, Packet::PubAck(PubResponse::success(ids[1])));
        let second = h.b.take_store_batch().unwrap();
        assert!(second.ops.is_empty(), "{:?}", kinds(&second.ops));
        let now = h.now;
        h.b.handle_store_failed(now, first.id);
        h.b.handle_store_committed(now, second.id, Vec::new());
        assert!(
            !h.b.store_available(),
            "nothing was written: the failure stands"
        );
        let refused = PubResponse {
            reason_code: ReasonCode::QuotaExceeded,
            ..PubResponse::success(pid(1))
        };
        assert_eq!(
            h.take(publ),
            vec![Packet::PubAck(refused), puback(2)],
            "the second message was acknowledged by its subscriber: its promise holds"
        );
    }

    #[test]
    fn qos2_flows_store_each_stage_before_it_shows() {
        let mut h = H::durable(BrokerConfig::default());
        let sub = h.join(v5_persistent("sub", true));
        h.subscribe(sub, "t", QoS::ExactlyOnce);
        let publ = h.join(v5_persistent("pub", true));
        h.ops.clear();
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::ExactlyOnce, 7, "m")),
        );
        assert_eq!(kinds(&h.ops), ["PutInflight", "PutInboundQos2"]);
        let StoreOp::PutInflight { record, .. } = &h.ops[0] else {
            unreachable!()
        };
        assert!(matches!(record.stage, InflightStage::AwaitingRec(_)));
        assert_eq!(h.take(publ), vec![pubrec(7)]);
        let id = h.publishes(sub)[0].packet_id.unwrap();
        h.ops.clear();
        h.send(sub, Packet::PubRec(PubResponse::success(id)));
        assert_eq!(kinds(&h.ops), ["PutInflight"], "the PUBREL stage");
        let StoreOp::PutInflight { record, .. } = &h.ops[0] else {
            unreachable!()
        };
        assert_eq!(record.stage, InflightStage::AwaitingComp);
        h.ops.clear();
        h.send(sub, Packet::PubComp(PubResponse::success(id)));
        h.send(publ, pubrel(7));
        assert_eq!(kinds(&h.ops), ["DeleteInflight", "DeleteInboundQos2"]);
        assert_eq!(h.take(publ), vec![pubcomp(7)]);
    }

    #[test]
    fn clean_sessions_write_nothing() {
        let mut h = H::durable(BrokerConfig::default());
        let sub = h.join(v5("clean-sub"));
        h.subscribe(sub, "t", QoS::AtLeastOnce);
        let publ = h.join(v3("clean-pub"));
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "m")),
        );
        assert_eq!(h.take(publ), vec![puback(1)]);
        assert_eq!(h.publishes(sub).len(), 1);
        assert!(h.ops.is_empty(), "{:?}", kinds(&h.ops));
    }

    #[test]
    fn offline_queues_live_in_the_store_and_come_back_in_windows() {
        let mut h = H::durable(BrokerConfig {
            queue_memory_window: 3,
            max_inflight: 2,
            ..BrokerConfig::default()
        });
        let sub = h.join(v5_persistent("sub", true));
        h.subscribe(sub, "t", QoS::AtLeastOnce);
        h.drop_conn(sub);
        let publ = h.join(v5("pub"));
        for id in 1..=10u16 {
            let payload: &'static str = Box::leak(id.to_string().into_boxed_str());
            h.send(
                publ,
                Packet::Publish(publish("t", QoS::AtLeastOnce, id, payload)),
            );
        }
        let st = h.b.stats();
        assert_eq!((st.queued_messages, st.queued_in_memory), (10, 0));
        let sub = h.join(v5_persistent("sub", false));
        let mut got = Vec::new();
        for _ in 0..10 {
            let ps = h.publishes(sub);
            assert!(ps.len() <= 2, "window of 2");
            assert!(h.b.stats().queued_in_memory <= 3, "memory window of 3");
            for p in ps {
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
                h.send(
                    sub,
                    Packet::PubAck(PubResponse::success(p.packet_id.unwrap())),
                );
            }
        }
        let want: Vec<String> = (1..=10).map(|n| n.to_string()).collect();
        assert_eq!(got, want);
        let mut store = h.store.clone();
        assert!(store.load().unwrap().sessions[0].queue.is_empty());
    }

    #[test]
    fn a_failed_batch_withdraws_its_promises_and_refuses_until_a_write_works() {
        let mut h = H::durable(BrokerConfig::default());
        let publ = offline_subscriber(&mut h);
        let old = h.join(v3("old-pub"));
        h.auto_commit = false;
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "m")),
        );
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::ExactlyOnce, 2, "m")),
        );
        h.send(old, Packet::Publish(publish("t", QoS::AtLeastOnce, 3, "m")));
        let batch = h.b.take_store_batch().unwrap();
        let now = h.now;
        h.b.handle_store_failed(now, batch.id);
        h.pump();
        let refused = |id: u16, rec: bool| {
            let r = PubResponse {
                reason_code: ReasonCode::QuotaExceeded,
                ..PubResponse::success(pid(id))
            };
            if rec {
                Packet::PubRec(r)
            } else {
                Packet::PubAck(r)
            }
        };
        assert_eq!(h.take(publ), vec![refused(1, false), refused(2, true)]);
        // The close of the 3.1.1 publisher waits behind the forgetting of the QoS 2 id, which
        // fails too while the disk is full; then it goes.
        assert!(!h.is_closed(old));
        let batch = h.b.take_store_batch().unwrap();
        assert_eq!(kinds(&batch.ops), ["DeleteInboundQos2"]);
        h.b.handle_store_failed(now, batch.id);
        h.pump();
        assert!(
            h.is_closed(old),
            "3.1.1 cannot refuse in a PUBACK: closed instead"
        );
        assert_eq!(h.b.stats().store_failures, 2);
        assert!(!h.b.store_available());
        // The QoS 2 flow ended: the id is free, a new PUBLISH with it is a new message.
        // Until a write works, publications needing the store are refused before routing.
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::ExactlyOnce, 2, "m")),
        );
        assert_eq!(h.take(publ), vec![refused(2, true)]);
        assert_eq!(
            h.b.take_store_batch(),
            None,
            "nothing was routed or written"
        );
        h.b.handle_store_recovered();
        h.auto_commit = true;
        h.send(
            publ,
            Packet::Publish(publish("t", QoS::AtLeastOnce, 4, "m")),
        );
        assert_eq!(h.take(publ), vec![puback(4)]);
    }

    #[test]
    fn restore_turns_wall_clock_deadlines_into_timers() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let unix = UnixMillis::from_system(wall);
        let mut store = MemoryStore::new();
        let will = |topic: &'static str| tidegate_protocol::Will {
            topic: utf8(topic),
            payload: bytes::Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        };
        let session = |id: &str, presence| {
            StoreOp::PutSession(SessionRecord {
                client_id: Arc::from(id),
                expiry_interval: 100,
                presence,
            })
        };
        store
            .apply(
                &[
                    session(
                        "gone",
                        Presence::Offline {
                            expires_at: Some(UnixMillis(unix.0 - 1)),
                            will: Some(PendingWillRecord {
                                will: will("w/gone"),
                                publish_at: None,
                            }),
                        },
                    ),
                    session(
                        "later",
                        Presence::Offline {
                            expires_at: Some(unix.saturating_add(Duration::from_secs(10))),
                            will: Some(PendingWillRecord {
                                will: will("w/later"),
                                publish_at: Some(unix.saturating_add(Duration::from_secs(5))),
                            }),
                        },
                    ),
                    session(
                        "was-online",
                        Presence::Connected {
                            will: Some(will("w/online")),
                        },
                    ),
                    StoreOp::PutSubscription {
                        client_id: Arc::from("later"),
                        subscription: Broker::subscription_record(
                            "w/#",
                            SubscriptionEntry {
                                options: opts(QoS::AtLeastOnce),
                                identifier: None,
                            },
                        ),
                    },
                ],
                tidegate_store::Durability::Synced,
            )
            .unwrap();
        let (mut b, report) =
            Broker::restore(BrokerConfig::default(), now, wall, store.load().unwrap());
        assert_eq!(report.sessions, 3);
        assert_eq!(report.expired_sessions, 1);
        assert_eq!(
            report.wills, 2,
            "the expired session's and the one online at the stop"
        );
        assert_eq!(b.stats().sessions, 2);
        // "later" holds the two wills published at start-up, queued for it.
        assert_eq!(b.stats().queued_messages, 2);
        b.handle_timeout(now + Duration::from_secs(5));
        assert_eq!(
            b.stats().queued_messages,
            3,
            "its own will after 5 s (No Local is off)"
        );
        b.handle_timeout(now + Duration::from_secs(10));
        assert_eq!(b.stats().sessions, 1, "expired 10 s after the restore");
        let ops = b.take_store_batch().unwrap().ops;
        assert!(ops.contains(&StoreOp::DeleteSession(Arc::from("gone"))));
        assert!(ops.contains(&StoreOp::DeleteSession(Arc::from("later"))));
    }
}
