//! The engine task: the one owner of the sans-IO [`Broker`].
//!
//! Place in the data flow: `connection tasks --EngineEvent (one bounded mpsc)--> engine task
//! --Broker--> Output --> Outbox of each connection`.
//!
//! The loop, in the call order the core documents:
//! 1. wait (`select!`) for an event, the broker's next deadline (`poll_timeout`) or the stop
//!    signal;
//! 2. an event is fed with `handle_open` / `handle_connect` (an authenticated CONNECT) /
//!    `handle_packet` / `handle_decode_error` / `handle_closed`; up to [`BATCH`] more already-queued events are fed with `try_recv` before
//!    going on, so a busy engine pays the select and the output drain once per batch;
//!    a due deadline is fed with `handle_timeout(now)`;
//! 3. `poll_output` is drained: `Send` is pushed onto the target connection's [`Outbox`],
//!    `Close` becomes a close order on it.
//!
//! The engine never waits for a connection: a push onto a full outbox drops a QoS 0 PUBLISH or
//! closes the connection as a slow consumer (see [`crate::outbox`]); in the latter case the
//! broker is told the connection closed, as if its socket had ended.
//!
//! `conns` is the set of connections the broker knows. Events from a connection that is not in
//! it (the broker already closed it, but the task had read more before seeing the order) are
//! discarded, so the broker never hears of a connection after it forgot it.
//!
//! On stop: `Broker::shutdown` (DISCONNECT 0x8B to v5 clients), the outputs are drained, and any
//! connection still open is ordered closed after its queue is flushed (with persistence, once
//! the store has written what the shutdown changed, so the DISCONNECTs it held go out first);
//! connections that open from then on are closed at once. The task ends when every sender of
//! the event channel (the listeners and connection tasks) is gone, after the last store batch
//! is written and the writer thread has made everything durable.
//!
//! **Group commit** (persistence on, see `crate::storage`): after every wake-up the engine
//! takes the broker's pending store batch, if no batch is being written, and hands it to the
//! writer thread; while that batch is written (an fsync takes milliseconds) the loop keeps
//! handling events, and everything they write accumulates in the broker as the next batch.
//! The writer's reply is fed back with `handle_store_committed` (or `handle_store_failed`),
//! which releases the outputs the batch held, in order. So the fsync rate adapts to the load:
//! one fsync per message when idle, one per thousands under load. Only if the next batch grows
//! beyond [`MAX_PENDING_OPS`] does the loop stop reading events until the write completes
//! (backpressure instead of unbounded memory). After a failed write a store check is tried
//! every [`STORE_CHECK_EVERY`] until one succeeds.

use crate::api::{ApiRequest, ApiState};
use crate::outbox::{CloseMode, Outbox, Push};
use crate::stats::Stats;
use crate::storage::{Reply, Storage, Writer};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_core::{Authorized, BatchId, Broker, ConnId, ConnInfo, Output};
use tidegate_protocol::{Connect, DecodeError, Packet, ReasonCode, Utf8};
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Events handled per wake-up before outputs are drained.
pub(crate) const BATCH: usize = 64;

/// Store operations the next batch may accumulate while one is being written before the engine
/// stops reading events (each is a small record; this bounds the memory of a slow disk).
pub(crate) const MAX_PENDING_OPS: usize = 200_000;

/// How often a failed store is checked for recovery (e.g. disk space freed).
pub(crate) const STORE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Capacity of the event channel shared by all connections. When it is full, connection tasks
/// wait to send, i.e. they stop reading their sockets: backpressure on publishers, never
/// unbounded memory.
pub(crate) const EVENT_QUEUE: usize = 4096;

/// What a connection task tells the engine.
// The Packet variant is large (a `Packet` is a few hundred bytes), but boxing it would cost an
// allocation per inbound packet; the size only matters in the channel's slots, of which there
// is one set for the whole server.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum EngineEvent {
    /// A socket was accepted; always the first event of a connection.
    Open {
        /// The new connection.
        conn: ConnId,
        /// Its transport details.
        info: ConnInfo,
        /// Where its outbound packets go.
        outbox: Arc<Outbox>,
    },
    /// A CONNECT that authentication accepted (see [`crate::auth`]); fed to
    /// `Broker::handle_connect`. A refused CONNECT never reaches the engine: the connection
    /// answers it itself and reports `Closed`.
    Connect {
        /// From this connection.
        conn: ConnId,
        /// The packet (boxed like `Packet::Connect`).
        connect: Box<Connect>,
        /// The client's tenant, ACL, limits and credential expiry.
        auth: Authorized,
    },
    /// A packet was decoded.
    Packet {
        /// From this connection.
        conn: ConnId,
        /// The packet.
        packet: Packet,
    },
    /// The codec rejected the connection's bytes; the task reads no more.
    DecodeError {
        /// From this connection.
        conn: ConnId,
        /// Why.
        error: DecodeError,
    },
    /// The socket ended (EOF, IO error) without the engine ordering it.
    Closed {
        /// This connection.
        conn: ConnId,
    },
    /// A request of the gateway's own API (HTTP publish, admin, metrics; see [`crate::api`]).
    Api(ApiRequest),
}

/// The state of the engine task.
#[derive(Debug)]
pub(crate) struct Engine {
    broker: Broker,
    conns: HashMap<ConnId, Arc<Outbox>>,
    max_outbound_queue: usize,
    stats: Arc<Stats>,
    shutting_down: bool,
    /// The store's writer thread, when persistence is on.
    writer: Option<Writer>,
    /// Shutdown asked to close every connection once the store is idle.
    close_when_idle: bool,
    /// The last write failed: a check is due at this instant.
    check_at: Option<tokio::time::Instant>,
    /// API publications waiting for their confirmation.
    api: ApiState,
}

/// The job being written: its batch (`None` for a check) and the reply to wait for.
pub(crate) struct InFlight {
    batch: Option<BatchId>,
    reply: oneshot::Receiver<Reply>,
}

impl Engine {
    /// An engine around `broker`, in memory only.
    #[cfg(test)]
    pub(crate) fn new(broker: Broker, max_outbound_queue: usize, stats: Arc<Stats>) -> Engine {
        Engine::with_storage(
            Storage {
                broker,
                writer: None,
            },
            max_outbound_queue,
            stats,
        )
    }

    /// An engine around a restored broker and its store writer (see [`Storage::open`]).
    pub(crate) fn with_storage(
        storage: Storage,
        max_outbound_queue: usize,
        stats: Arc<Stats>,
    ) -> Engine {
        Engine {
            broker: storage.broker,
            conns: HashMap::new(),
            max_outbound_queue,
            stats,
            shutting_down: false,
            writer: storage.writer,
            close_when_idle: false,
            check_at: None,
            api: ApiState::default(),
        }
    }

    /// Hands the broker's pending store batch to the writer when nothing is being written
    /// (a due store check goes first after a failure).
    pub(crate) fn submit_store(&mut self, in_flight: &mut Option<InFlight>) {
        if in_flight.is_some() {
            return;
        }
        let Some(writer) = &self.writer else {
            return;
        };
        if let Some(at) = self.check_at
            && at <= tokio::time::Instant::now()
        {
            self.check_at = None;
            *in_flight = Some(InFlight {
                batch: None,
                reply: writer.check(),
            });
            return;
        }
        if let Some(batch) = self.broker.take_store_batch() {
            if batch.ops.is_empty() {
                // Every operation was cancelled (QoS 1 deliveries acknowledged before being
                // written): nothing to write, and no batch is before it.
                self.broker
                    .handle_store_committed(Instant::now(), batch.id, Vec::new());
                return;
            }
            *in_flight = Some(InFlight {
                batch: Some(batch.id),
                reply: writer.apply(batch.ops),
            });
        }
    }

    /// The writer answered the job in flight.
    pub(crate) fn on_store_reply(
        &mut self,
        now: Instant,
        batch: Option<BatchId>,
        reply: Option<Reply>,
    ) {
        let recovered = |engine: &mut Engine| {
            if !engine.broker.store_available() {
                info!("the store accepts writes again");
            }
            engine.check_at = None;
        };
        match (batch, reply) {
            (Some(id), Some(Reply::Applied(Ok(loaded)))) => {
                recovered(self);
                self.broker.handle_store_committed(now, id, loaded);
            }
            (None, Some(Reply::Checked(Ok(())))) => {
                recovered(self);
                self.broker.handle_store_recovered();
            }
            (batch, reply) => {
                let why = match reply {
                    Some(Reply::Applied(Err(e)) | Reply::Checked(Err(e))) => e.to_string(),
                    _ => "the store writer thread is gone".to_owned(),
                };
                if self.broker.store_available() {
                    // Once per failure streak: publishers are refused until a write works.
                    error!(%why, "store write failed; refusing publications until it works again");
                } else {
                    debug!(%why, "store still failing");
                }
                if let Some(id) = batch {
                    self.broker.handle_store_failed(now, id);
                }
                self.check_at = Some(tokio::time::Instant::now() + STORE_CHECK_EVERY);
            }
        }
    }

    /// Whether the loop may read more events: not while the next batch is already huge and
    /// the previous one is still being written.
    pub(crate) fn accepting_events(&self, in_flight: &Option<InFlight>) -> bool {
        in_flight.is_none() || self.broker.pending_store_ops() < MAX_PENDING_OPS
    }

    /// After a shutdown, closes every remaining connection once the store has nothing left
    /// to write (the outputs it held are out by then).
    pub(crate) fn finish_shutdown_if_idle(&mut self, in_flight: &Option<InFlight>) {
        if !self.close_when_idle || in_flight.is_some() || self.broker.pending_store_ops() > 0 {
            return;
        }
        self.close_when_idle = false;
        for (_, outbox) in self.conns.drain() {
            outbox.close(CloseMode::Flush);
        }
    }

    /// Writes whatever is left and stops the writer thread (end of the task).
    pub(crate) async fn close_store(&mut self, mut in_flight: Option<InFlight>) {
        loop {
            if in_flight.is_none() {
                self.submit_store(&mut in_flight);
                if in_flight.is_none() {
                    break;
                }
            }
            let reply = job_reply(&mut in_flight).await;
            if let Some(job) = in_flight.take() {
                let now = Instant::now();
                self.on_store_reply(now, job.batch, reply);
                self.drain_outputs(now);
            }
            // A failed store gets no retry here: there is nobody left to acknowledge.
            self.check_at = None;
        }
        if let Some(writer) = self.writer.take() {
            writer.close().await;
        }
    }

    /// Feeds one event to the broker (outputs are drained by the caller).
    pub(crate) fn handle_event(&mut self, now: Instant, event: EngineEvent) {
        match event {
            EngineEvent::Open { conn, info, outbox } => {
                if self.shutting_down {
                    outbox.close(CloseMode::Flush);
                    return;
                }
                self.conns.insert(conn, outbox);
                self.broker.handle_open(now, conn, info);
            }
            EngineEvent::Connect {
                conn,
                connect,
                auth,
            } => {
                if self.conns.contains_key(&conn) {
                    self.broker.handle_connect(now, conn, *connect, auth);
                }
            }
            EngineEvent::Packet { conn, packet } => {
                if self.conns.contains_key(&conn) {
                    self.broker.handle_packet(now, conn, packet);
                }
            }
            EngineEvent::DecodeError { conn, error } => {
                if self.conns.contains_key(&conn) {
                    self.broker.handle_decode_error(now, conn, &error);
                }
            }
            EngineEvent::Closed { conn } => {
                if self.conns.remove(&conn).is_some() {
                    self.broker.handle_closed(now, conn);
                }
            }
            EngineEvent::Api(request) => {
                let conns = &self.conns;
                let traffic =
                    |conn: ConnId| conns.get(&conn).map_or((0, 0, 0, 0), |o| o.traffic.read());
                self.api.handle(&mut self.broker, &traffic, now, request);
            }
        }
    }

    /// Routes every pending broker output to the connections.
    pub(crate) fn drain_outputs(&mut self, now: Instant) {
        while let Some(output) = self.broker.poll_output() {
            self.route(now, output);
        }
    }

    fn route(&mut self, now: Instant, output: Output) {
        match output {
            Output::Send { conn, packet } => {
                let Some(outbox) = self.conns.get(&conn) else {
                    debug!(
                        conn = conn.0,
                        packet = packet.name(),
                        "output for a closed connection"
                    );
                    return;
                };
                match outbox.push(packet, self.max_outbound_queue) {
                    Push::Queued | Push::Closed => {}
                    Push::DroppedQos0 => self.stats.count_qos0_dropped(),
                    Push::Full => {
                        warn!(
                            conn = conn.0,
                            queued = self.max_outbound_queue,
                            "slow consumer: outbound queue full, closing the connection"
                        );
                        self.stats.count_slow_consumer();
                        outbox.close(CloseMode::Abort);
                        self.conns.remove(&conn);
                        // Its socket is as good as gone: an abnormal disconnect for the broker
                        // (the will is published); its later outputs for `conn` are ignored.
                        self.broker.handle_closed(now, conn);
                    }
                }
            }
            Output::Close { conn } => {
                if let Some(outbox) = self.conns.remove(&conn) {
                    outbox.close(CloseMode::Flush);
                }
            }
            Output::Committed { token, durable } => self.api.committed(token, durable),
        }
    }

    /// Fires the broker's due deadlines.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.broker.handle_timeout(now);
    }

    /// The broker's next deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.broker.poll_timeout()
    }

    /// Disconnects everyone (see the module docs) and closes new connections from now on.
    pub(crate) fn shutdown(&mut self, now: Instant, server_reference: Option<Utf8>) {
        self.shutting_down = true;
        self.broker
            .shutdown(now, ReasonCode::ServerShuttingDown, server_reference);
        self.drain_outputs(now);
        // The broker promises to close every connection on shutdown; closing whatever is left
        // keeps shutdown bounded even if it did not, without reordering anything it sent —
        // with persistence, after the store released what it held.
        self.close_when_idle = true;
        if self.writer.is_none() {
            self.finish_shutdown_if_idle(&None);
        }
    }

    /// Connections the broker knows.
    #[cfg(test)]
    pub(crate) fn open_connections(&self) -> usize {
        self.conns.len()
    }
}

/// Waits for the reply of the job in flight (forever when there is none); the job stays in
/// the slot, so a `select!` that picks another branch loses nothing. `None`: the writer is gone.
async fn job_reply(in_flight: &mut Option<InFlight>) -> Option<Reply> {
    match in_flight {
        Some(job) => (&mut job.reply).await.ok(),
        None => std::future::pending().await,
    }
}

/// The engine task's loop (see the module docs).
pub(crate) async fn run(
    mut engine: Engine,
    mut events: mpsc::Receiver<EngineEvent>,
    stop: CancellationToken,
    server_reference: Option<Utf8>,
) {
    // Without a broker deadline the sleep waits for a far instant that stays the same from turn
    // to turn, so it is re-armed only when a deadline changes, not at every event.
    let idle = Duration::from_secs(24 * 3600);
    let mut idle_deadline = tokio::time::Instant::now() + idle;
    let sleep = tokio::time::sleep_until(idle_deadline);
    tokio::pin!(sleep);
    let mut server_reference = Some(server_reference);
    let mut in_flight: Option<InFlight> = None;
    loop {
        let deadline = engine
            .poll_timeout()
            .map_or(idle_deadline, tokio::time::Instant::from_std);
        let deadline = match engine.check_at {
            Some(check) if in_flight.is_none() => deadline.min(check),
            _ => deadline,
        };
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        let accepting = engine.accepting_events(&in_flight);
        tokio::select! {
            biased;
            _ = stop.cancelled(), if !engine.shutting_down => {
                info!(connections = engine.conns.len(), "disconnecting every client");
                engine.shutdown(Instant::now(), server_reference.take().flatten());
            }
            reply = job_reply(&mut in_flight), if in_flight.is_some() => {
                if let Some(job) = in_flight.take() {
                    engine.on_store_reply(Instant::now(), job.batch, reply);
                }
            }
            _ = &mut sleep => {
                // A completed sleep must be re-armed: move the idle instant past now.
                idle_deadline = tokio::time::Instant::now() + idle;
                let now = Instant::now();
                engine.handle_timeout(now);
            }
            event = events.recv(), if accepting => {
                let Some(event) = event else { break };
                let now = Instant::now();
                engine.handle_event(now, event);
                for _ in 0..BATCH {
                    match events.try_recv() {
                        Ok(event) => engine.handle_event(now, event),
                        Err(_) => break,
                    }
                }
            }
        }
        engine.submit_store(&mut in_flight);
        engine.drain_outputs(Instant::now());
        engine.finish_shutdown_if_idle(&in_flight);
    }
    engine.close_store(in_flight).await;
    debug!("engine stopped: every connection is gone");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::tests::publish;
    use tidegate_core::BrokerConfig;
    use tidegate_protocol::QoS;

    fn engine(queue: usize) -> (Engine, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let broker = Broker::new(BrokerConfig::default());
        (Engine::new(broker, queue, stats.clone()), stats)
    }

    fn open(engine: &mut Engine, id: u64) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::new());
        engine.handle_event(
            Instant::now(),
            EngineEvent::Open {
                conn: ConnId(id),
                info: ConnInfo::default(),
                outbox: outbox.clone(),
            },
        );
        outbox
    }

    fn send(conn: u64, packet: Packet) -> Output {
        Output::Send {
            conn: ConnId(conn),
            packet,
        }
    }

    #[test]
    fn sends_and_closes_reach_the_outbox() {
        let (mut engine, _) = engine(8);
        let outbox = open(&mut engine, 1);
        let now = Instant::now();
        engine.route(now, send(1, Packet::PingResp));
        engine.route(now, Output::Close { conn: ConnId(1) });
        assert_eq!(engine.open_connections(), 0);
        let batch = outbox.take();
        assert_eq!(batch.packets.len(), 1);
        assert_eq!(batch.close, Some(CloseMode::Flush));
        // Outputs for a forgotten connection are ignored.
        engine.route(now, send(1, Packet::PingResp));
        engine.route(now, send(99, Packet::PingResp));
    }

    #[test]
    fn full_outbox_drops_qos0_and_closes_slow_consumers() {
        let (mut engine, stats) = engine(1);
        let outbox = open(&mut engine, 1);
        let now = Instant::now();
        engine.route(now, send(1, publish(QoS::AtMostOnce)));
        engine.route(now, send(1, publish(QoS::AtMostOnce)));
        assert_eq!(stats.qos0_dropped(), 1);
        assert_eq!(stats.slow_consumers_disconnected(), 0);
        assert_eq!(engine.open_connections(), 1);
        engine.route(now, send(1, publish(QoS::AtLeastOnce)));
        assert_eq!(stats.slow_consumers_disconnected(), 1);
        assert_eq!(engine.open_connections(), 0);
        let batch = outbox.take();
        assert_eq!(batch.close, Some(CloseMode::Abort));
        assert!(batch.packets.is_empty());
        // The task's own Closed event arrives later and is not passed on a second time.
        engine.handle_event(now, EngineEvent::Closed { conn: ConnId(1) });
        assert_eq!(engine.open_connections(), 0);
    }

    #[test]
    fn an_authenticated_connect_reaches_the_broker_only_for_a_known_connection() {
        let (mut engine, _) = engine(8);
        let outbox = open(&mut engine, 1);
        let connect = |id: &'static str| {
            Box::new(Connect {
                protocol: tidegate_protocol::ProtocolVersion::V5,
                clean_start: true,
                keep_alive: 30,
                client_id: Utf8::from_static(id),
                will: None,
                username: None,
                password: None,
                properties: tidegate_protocol::ConnectProperties::default(),
            })
        };
        let now = Instant::now();
        engine.handle_event(
            now,
            EngineEvent::Connect {
                conn: ConnId(1),
                connect: connect("a"),
                auth: Authorized::default_tenant(),
            },
        );
        // A connection the engine does not know (closed meanwhile) is ignored.
        engine.handle_event(
            now,
            EngineEvent::Connect {
                conn: ConnId(2),
                connect: connect("b"),
                auth: Authorized::default_tenant(),
            },
        );
        engine.drain_outputs(now);
        let batch = outbox.take();
        assert_eq!(batch.packets.len(), 1);
        assert!(matches!(
            batch.packets.front(),
            Some(Packet::ConnAck(ack)) if ack.reason_code == ReasonCode::Success
        ));
        assert_eq!(engine.open_connections(), 1);
    }

    #[test]
    fn closed_event_forgets_the_connection() {
        let (mut engine, _) = engine(8);
        open(&mut engine, 1);
        open(&mut engine, 2);
        engine.handle_event(Instant::now(), EngineEvent::Closed { conn: ConnId(1) });
        assert_eq!(engine.open_connections(), 1);
    }

    #[test]
    fn shutdown_closes_everyone_and_every_later_connection() {
        let (mut engine, _) = engine(8);
        let first = open(&mut engine, 1);
        engine.shutdown(Instant::now(), None);
        assert_eq!(first.take().close, Some(CloseMode::Flush));
        let late = open(&mut engine, 2);
        assert_eq!(late.take().close, Some(CloseMode::Flush));
        assert_eq!(engine.open_connections(), 0);
    }

    #[tokio::test]
    async fn task_ends_when_every_sender_is_gone() {
        let (engine, _) = engine(8);
        let (tx, rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(engine, rx, stop.clone(), None));
        let outbox = Arc::new(Outbox::new());
        tx.send(EngineEvent::Open {
            conn: ConnId(1),
            info: ConnInfo::default(),
            outbox: outbox.clone(),
        })
        .await
        .unwrap();
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), outbox.notified())
            .await
            .unwrap();
        assert_eq!(outbox.take().close, Some(CloseMode::Flush));
        assert!(!task.is_finished());
        drop(tx);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }
}
