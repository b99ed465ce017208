//! One task per connection: moves bytes between a socket and the engine task.
//!
//! Place in the data flow: `socket --read--> Decoder --EngineEvent--> engine task` and
//! `engine task --Outbox--> encode --write--> socket`. The task holds no protocol state beyond
//! the codec's (the negotiated version) and what it needs for the connect/disconnect log lines.
//!
//! One `select!` loop serves three sources:
//! - the socket, through one poll function that both writes pending output and reads, so a
//!   client that stops reading while it keeps writing cannot deadlock us;
//! - the [`Outbox`]: at each wake-up the task takes every queued packet, encodes them all with
//!   the connection's protocol version into one write buffer and writes them in one go (no
//!   packets are taken while a previous write is still pending, so a client that does not read
//!   fills the bounded outbox and the engine's slow-consumer policy applies, instead of this
//!   buffer growing);
//! - the hard-stop token, cancelled when the shutdown grace period is over.
//!
//! Memory while idle, measured against Mosquitto's 0.7 KiB per idle connection: the read buffer
//! is allocated only once the socket is readable ([`Transport::poll_read_ready`]) and released
//! as soon as every byte is decoded; the write buffer is released once written; the outbox is
//! empty and unallocated; no timer exists (keep alive and CONNECT timeouts live in the broker).
//! What remains is the task itself, whose future measures 608 bytes on TCP and Unix sockets,
//! 760 on WebSocket and about 1.8 KiB on TLS, whose rustls state is inline (checked per
//! transport by the test `connection_future_stays_small`: no `Packet` is held across an
//! await, rare paths' timers and waits are boxed), plus the socket and a small [`Outbox`].
//!
//! Decoded packets share the read buffer's allocation (`Bytes`), so a payload the broker keeps
//! (retained, queued) pins the read chunk it came from; reads start small ([`MIN_READ`]) and
//! only grow while the socket keeps filling them, which bounds that waste for quiet clients.
//!
//! The first CONNECT is authenticated here, before the engine sees it (see [`crate::auth`]):
//! reading pauses until the decision, so later packets keep their order; an accepted CONNECT
//! goes to the engine as `EngineEvent::Connect` with its tenant and ACL; a refused one is
//! answered by this task (CONNACK with the reason), the engine is told `Closed`, and the
//! connection closes. A v5 CONNECT asking for enhanced authentication goes to the broker as it
//! is (0x8C).
//!
//! A client of a tenant with byte rates or a packet size limit gets a [`ReaderQuota`] with its
//! accepted CONNECT (see [`crate::throttle`]): from then on the decoder's limit is the smaller
//! of the gateway's and the tenant's `max_packet_size`, and each read batch is paid for in the
//! client's and the tenant's byte buckets before it is decoded; while a bucket is short the
//! task neither decodes nor reads (one boxed timer, armed only then), so TCP flow control
//! slows the client, and it keeps writing and obeying the hard stop. Bytes read in the same
//! batch as the CONNECT are not charged.
//!
//! End of a connection: EOF or an IO error tells the engine `Closed`; a decode error tells it
//! `DecodeError`, stops reading and keeps writing until the engine orders the close (the
//! broker first sends a DISCONNECT or CONNACK with the error's reason code) or
//! [`DRAIN_AFTER_DECODE_ERROR`] passes; a close order from the engine flushes what was queued
//! before it, shuts the socket down and ends the task without telling the engine, which has
//! already forgotten the connection.

use crate::auth::{Authenticator, Verdict};
use crate::config::IdentityUse;
use crate::engine::EngineEvent;
use crate::listener::ConnPermit;
use crate::outbox::{CloseMode, Outbox};
use crate::stats::Stats;
use crate::throttle::ReaderQuota;
use crate::transport::Transport;
use crate::transport::ws::FrameError;
use bytes::{Buf, BytesMut};
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tidegate_core::{ConnId, ConnInfo};
use tidegate_protocol::{
    ConnAck, Connect, DecodeError, Decoder, Disconnect, Packet, ProtocolVersion, ReasonCode, Utf8,
    encode,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

/// First read size; also the floor the read size shrinks back to.
pub(crate) const MIN_READ: usize = 512;
/// Ceiling of the read size for a client that keeps the socket full.
pub(crate) const MAX_READ: usize = 64 * 1024;
/// Packets taken from the outbox and encoded per wake-up; with more queued the task yields to
/// the runtime before the next part (fairness between connections and tenants).
pub(crate) const WRITE_BATCH: usize = 64;
/// Packets a connection hands to the engine from one read before it lets other tasks run
/// (when the read holds more). Small on purpose: the engine's work per packet (routing, fan-out)
/// dwarfs decoding, so this is what bounds the time a flooding client holds the runtime; with
/// 64 a quiet tenant's p99 was 2-3x its idle value under a flood, with 16 0.9-1.5x, at no
/// measurable cost in throughput (`scripts/bench-fairness`, docs/benchmarks.md).
pub(crate) const READ_BATCH: usize = 16;
/// How long a connection whose bytes could not be decoded waits for the broker's answer and
/// close order before it closes on its own.
pub(crate) const DRAIN_AFTER_DECODE_ERROR: Duration = Duration::from_secs(2);

/// What every connection task of a server shares, behind one `Arc` so each task holds one
/// pointer rather than copies.
#[derive(Debug)]
pub(crate) struct ConnShared {
    /// The engine's event channel.
    pub(crate) engine: mpsc::Sender<EngineEvent>,
    /// The listener's token, a child of the server's hard stop. Cancelled when the shutdown
    /// grace period is over (end at once), or, with `draining` set first, when this listener
    /// alone is drained (say goodbye, then close within `drain_grace`). One token for both
    /// keeps a second cancellation future (about 100 bytes) out of every connection's future.
    pub(crate) hard_stop: CancellationToken,
    /// Set before `hard_stop` is cancelled for a drain of this listener.
    pub(crate) draining: Arc<AtomicBool>,
    /// How long a drained connection gets to flush its goodbye.
    pub(crate) drain_grace: Duration,
    /// `shutdown.server_reference`, sent with the goodbye of a drain.
    pub(crate) server_reference: Option<Utf8>,
    /// `limits.max_packet_size`, for each connection's decoder.
    pub(crate) max_packet_size: u32,
    /// Where a TLS client certificate's identity goes in CONNECT (`identity_as`); `None` when
    /// the listener takes no identity from certificates.
    pub(crate) identity_as: Option<IdentityUse>,
    /// Counters (WebSocket protocol errors are counted when a connection ends on one).
    pub(crate) stats: Arc<Stats>,
    /// Checks the first CONNECT of every connection (shared by all listeners).
    pub(crate) auth: Arc<Authenticator>,
    /// The tenant the listener binds its clients to (`tenant = "..."`).
    pub(crate) tenant: Option<Arc<str>>,
}

/// The permits a connection holds against the global and per-listener connection limits;
/// released when the task ends.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the permits are held only to be released when dropped"
)]
pub(crate) struct Permits {
    /// Against `limits.max_connections`.
    pub(crate) global: ConnPermit,
    /// Against the listener's `max_connections`, when it has one.
    pub(crate) listener: Option<ConnPermit>,
}

/// CONNECT as seen on the way in, kept until the CONNACK goes out so that one log line can say
/// who connected and how. The client id is copied: a `Utf8` would pin the read buffer.
#[derive(Debug)]
struct PendingConnect {
    client_id: Box<str>,
    version: ProtocolVersion,
    clean_start: bool,
    keep_alive: u16,
}

/// What the connection's log lines need.
#[derive(Debug, Default)]
struct LogState {
    pending: Option<Box<PendingConnect>>,
    /// Set once a successful CONNACK went out.
    client_id: Option<Box<str>>,
    client_disconnect: Option<ReasonCode>,
    server_disconnect: Option<ReasonCode>,
    decode_error: Option<DecodeError>,
}

impl LogState {
    /// Remembers what the log lines need from an inbound packet.
    fn observe_inbound(&mut self, packet: &Packet) {
        match packet {
            Packet::Connect(connect) => {
                self.pending = Some(Box::new(PendingConnect {
                    client_id: connect.client_id.as_str().into(),
                    version: connect.protocol,
                    clean_start: connect.clean_start,
                    keep_alive: connect.keep_alive,
                }));
            }
            Packet::Disconnect(d) => self.client_disconnect = Some(d.reason_code),
            _ => {}
        }
    }
}

/// Why the task ended.
#[derive(Debug)]
enum Ended {
    Eof,
    /// The socket failed; kept whole so that a transport's reason (e.g. a WebSocket text
    /// frame) reaches the log line.
    Io(io::Error),
    /// The engine did not order the close within [`DRAIN_AFTER_DECODE_ERROR`].
    DecodeErrorTimeout,
    ClosedByServer,
    SlowConsumer,
    ShutdownTimeout,
    EngineGone,
    /// The listener was drained while the server keeps running.
    Drained,
}

impl Ended {
    /// Whether the engine may still believe the connection is open.
    fn tell_engine(&self) -> bool {
        matches!(
            self,
            Ended::Eof
                | Ended::Io(_)
                | Ended::DecodeErrorTimeout
                | Ended::ShutdownTimeout
                | Ended::Drained
        )
    }
}

/// Why decoding stopped before the read buffer was used up.
#[derive(Debug)]
enum DecodeStop {
    Failed(DecodeError),
    EngineGone,
    /// Authentication refused the CONNECT: its CONNACK is encoded, the engine was told the
    /// connection closed; flush and close.
    Refused,
    /// The hard stop came while a CONNECT was being authenticated.
    Stopped,
}

/// How decoding a read batch ended, for the select loop.
#[derive(Debug)]
enum Decoded {
    /// Everything complete was decoded; keep reading.
    All,
    /// Undecodable bytes: reading stopped, the engine was told, the drain timer is due.
    Failed,
    /// Authentication refused the CONNECT: flush its CONNACK and close.
    Refused,
}

/// What one turn of the socket poll did.
#[derive(Debug)]
enum IoEvent {
    /// `n` bytes were appended to the read buffer; `filled` if they filled all its spare room.
    Read { n: usize, filled: bool },
    /// Everything buffered was written and flushed.
    Flushed,
    /// The peer closed its side.
    Eof,
    /// The socket failed.
    Error(io::Error),
}

/// The output side of the socket: bytes encoded and not yet written.
#[derive(Debug, Default)]
struct WriteBuf {
    buf: BytesMut,
    /// All bytes were written, the transport's flush is still pending.
    flushing: bool,
}

impl WriteBuf {
    fn idle(&self) -> bool {
        self.buf.is_empty() && !self.flushing
    }
}

/// One connection's task state.
#[derive(Debug)]
pub(crate) struct Connection<T> {
    io: T,
    conn: ConnId,
    info: ConnInfo,
    shared: Arc<ConnShared>,
    outbox: Arc<Outbox>,
    decoder: Decoder,
    rbuf: BytesMut,
    read_size: usize,
    wbuf: WriteBuf,
    log: LogState,
    /// The tenant's byte rates and packet size limit, from the accepted CONNECT; `None` for
    /// an unlimited tenant (boxed: one pointer for everyone else).
    reader: Option<Box<ReaderQuota>>,
    _permits: Permits,
}

impl<T: Transport> Connection<T> {
    /// A connection task for an accepted socket, not started.
    pub(crate) fn new(
        io: T,
        conn: ConnId,
        info: ConnInfo,
        shared: Arc<ConnShared>,
        permits: Permits,
    ) -> Connection<T> {
        let decoder = Decoder::new(shared.max_packet_size);
        Connection {
            io,
            conn,
            info,
            shared,
            outbox: Arc::new(Outbox::new()),
            decoder,
            rbuf: BytesMut::new(),
            read_size: MIN_READ,
            wbuf: WriteBuf::default(),
            log: LogState::default(),
            reader: None,
            _permits: permits,
        }
    }

    /// Runs the connection to its end (see the module docs).
    ///
    /// Not an `async fn`: an async fn taking `mut self` stores the connection twice in its
    /// future (the argument and its mutable rebinding, rust-lang/rust#62958); the async block
    /// captures it once.
    #[allow(clippy::manual_async_fn)] // the point: see above
    pub(crate) fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            // The slot is reserved before the event is built, so no (large) `EngineEvent` is
            // held across the await.
            let opened = match engine_slot(&self.shared.engine, false).await {
                Some(slot) => {
                    slot.send(EngineEvent::Open {
                        conn: self.conn,
                        info: self.info.clone(),
                        outbox: self.outbox.clone(),
                    });
                    true
                }
                None => false,
            };
            let ended = if opened {
                self.drive().await
            } else {
                Ended::EngineGone
            };
            self.outbox.detach();
            if ended.tell_engine() {
                self.report_closed();
            }
            if let Ended::Io(error) = &ended
                && is_websocket_protocol_error(error)
            {
                self.shared.stats.count_websocket_error();
            }
            self.log_end(&ended);
        }
    }

    /// The select loop (see the module docs).
    async fn drive(&mut self) -> Ended {
        let mut closing = false;
        // Set when the listener is drained: the engine is told the socket ended.
        let mut drained = false;
        // Armed by a decode error: reading stops, and the close order must come before it
        // fires. Boxed because it is rare: inline, its ~100 bytes would be part of every
        // connection's future.
        let mut drain_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Armed while a read batch waits for its tenant's byte buckets; boxed for the same
        // reason. Neither reading nor decoding happens meanwhile.
        let mut throttle_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Set when the outbox still held packets after a bounded take.
        let mut yield_owed = false;
        loop {
            if closing && self.wbuf.idle() {
                // Shutting down the write side sends FIN after the last packet; a failure here
                // changes nothing, the socket is dropped either way.
                if drained {
                    tokio::select! {
                        _ = self.io.shutdown() => {}
                        _ = poll_fn(|cx| poll_timer(&mut drain_timer, cx)) => {}
                    }
                    return Ended::Drained;
                }
                tokio::select! {
                    _ = self.io.shutdown() => {}
                    _ = self.shared.hard_stop.cancelled() => {}
                }
                return Ended::ClosedByServer;
            }
            if yield_owed {
                yield_owed = false;
                tokio::task::yield_now().await;
            }
            let take_outbox = self.wbuf.idle() && !closing;
            let reading = drain_timer.is_none() && !closing && throttle_timer.is_none();
            let throttled = drain_timer.is_none() && !closing;
            tokio::select! {
                biased;
                _ = self.shared.hard_stop.cancelled(), if !drained => {
                    if !self.shared.draining.load(Ordering::Acquire) {
                        return Ended::ShutdownTimeout;
                    }
                    // The listener is drained (one token serves both, see `ConnShared`).
                    if !closing {
                        self.say_goodbye();
                    }
                    drained = true;
                    closing = true;
                    drain_timer = Some(Box::pin(tokio::time::sleep(self.shared.drain_grace)));
                }
                _ = self.outbox.notified(), if take_outbox => {
                    let batch = self.outbox.take_up_to(WRITE_BATCH);
                    let more = batch.close.is_none() && batch.packets.len() == WRITE_BATCH;
                    match batch.close {
                        Some(CloseMode::Abort) => return Ended::SlowConsumer,
                        Some(CloseMode::Flush) => closing = true,
                        None => {}
                    }
                    let before = self.wbuf.buf.len();
                    let mut publishes = 0;
                    for packet in &batch.packets {
                        publishes += u64::from(matches!(packet, Packet::Publish(_)));
                        self.encode(packet);
                    }
                    let bytes = (self.wbuf.buf.len() - before) as u64;
                    self.outbox.traffic.add_out(bytes, publishes);
                    self.shared.stats.total_traffic().add_out(bytes, publishes);
                    // Bounded work per wake-up: a subscriber with a long queue lets the other
                    // connections' tasks run before it encodes the next part, so one busy
                    // client (or tenant) cannot hold a worker thread for milliseconds while a
                    // quiet client's packet waits behind it. The yield is taken at the top of
                    // the loop: an await in this branch would grow every connection's future.
                    yield_owed = more;
                }
                event = socket_step(
                    &mut self.io,
                    &mut self.rbuf,
                    self.read_size,
                    &mut self.wbuf,
                    reading,
                ) => match event {
                    IoEvent::Read { n, filled } => {
                        self.adapt_read_size(filled);
                        if let Some(wait) = self.charge_read(n) {
                            throttle_timer = Some(Box::pin(tokio::time::sleep(wait)));
                            continue;
                        }
                        match self.decode_read().await {
                            Ok(Decoded::All) => {}
                            Ok(Decoded::Failed) => {
                                drain_timer =
                                    Some(Box::pin(tokio::time::sleep(DRAIN_AFTER_DECODE_ERROR)));
                            }
                            Ok(Decoded::Refused) => closing = true,
                            Err(ended) => return ended,
                        }
                    }
                    // Release the buffer: an idle connection holds none.
                    IoEvent::Flushed => self.wbuf.buf = BytesMut::new(),
                    IoEvent::Eof => return Ended::Eof,
                    IoEvent::Error(e) => return Ended::Io(e),
                },
                _ = poll_fn(|cx| poll_timer(&mut throttle_timer, cx)), if throttled => {
                    if let Some(wait) = self.settle_read()
                        && let Some(timer) = throttle_timer.as_mut()
                    {
                        timer.as_mut().reset(tokio::time::Instant::now() + wait);
                        continue;
                    }
                    throttle_timer = None;
                    match self.decode_read().await {
                        Ok(Decoded::All) => {}
                        Ok(Decoded::Failed) => {
                            drain_timer =
                                Some(Box::pin(tokio::time::sleep(DRAIN_AFTER_DECODE_ERROR)));
                        }
                        Ok(Decoded::Refused) => closing = true,
                        Err(ended) => return ended,
                    }
                }
                _ = poll_fn(|cx| poll_timer(&mut drain_timer, cx)) => {
                    return if drained {
                        Ended::Drained
                    } else {
                        Ended::DecodeErrorTimeout
                    };
                }
            }
        }
    }

    /// Decodes what was read (see [`Self::decode_all`]) and turns how it stopped into what the
    /// select loop does next.
    async fn decode_read(&mut self) -> Result<Decoded, Ended> {
        match self.decode_all().await {
            Ok(()) => Ok(Decoded::All),
            Err(DecodeStop::Failed(error)) => {
                debug!(conn = self.conn.0, %error, "undecodable bytes");
                if matches!(error, DecodeError::PacketTooLarge { .. })
                    && let Some(reader) = self.reader.as_deref()
                    && reader.limits_packets()
                {
                    self.shared.stats.count_packet_too_large(reader.tenant());
                }
                self.log.decode_error = Some(error);
                self.rbuf = BytesMut::new();
                Ok(Decoded::Failed)
            }
            Err(DecodeStop::EngineGone) => Err(Ended::EngineGone),
            Err(DecodeStop::Refused) => {
                self.rbuf = BytesMut::new();
                Ok(Decoded::Refused)
            }
            Err(DecodeStop::Stopped) => Err(if self.shared.draining.load(Ordering::Acquire) {
                Ended::Drained
            } else {
                Ended::ShutdownTimeout
            }),
        }
    }

    /// Charges a read batch of `n` bytes to the tenant's byte buckets; how long to wait before
    /// decoding it, if a bucket is short.
    fn charge_read(&mut self, n: usize) -> Option<Duration> {
        let reader = self.reader.as_deref_mut()?;
        let pause = reader.charge(Instant::now(), n as u64)?;
        let stats = &self.shared.stats;
        stats.count_throttled(
            reader.tenant(),
            pause.scope.label(),
            pause.wait,
            pause.first,
        );
        Some(pause.wait)
    }

    /// Pays what the waiting batch still owes; how much longer to wait, if anything.
    fn settle_read(&mut self) -> Option<Duration> {
        let reader = self.reader.as_deref_mut()?;
        let pause = reader.settle(Instant::now())?;
        let stats = &self.shared.stats;
        stats.count_throttled(
            reader.tenant(),
            pause.scope.label(),
            pause.wait,
            pause.first,
        );
        Some(pause.wait)
    }

    /// The listener is drained: an MQTT 5 client gets DISCONNECT 0x8B (Server shutting down)
    /// with the configured Server Reference after what is already encoded, as on SIGTERM.
    fn say_goodbye(&mut self) {
        if self.decoder.version() == Some(ProtocolVersion::V5) && self.log.client_id.is_some() {
            let mut goodbye = Disconnect::with_reason(ReasonCode::ServerShuttingDown);
            goodbye.properties.server_reference = self.shared.server_reference.clone();
            self.encode(&Packet::Disconnect(goodbye));
        }
    }

    /// Tells the engine the socket ended. Without waiting when the channel has room; when it is
    /// full, a small task waits for room, so this task's future carries no await for it.
    fn report_closed(&self) {
        let closed = EngineEvent::Closed { conn: self.conn };
        match self.shared.engine.try_send(closed) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(closed)) => {
                let engine = self.shared.engine.clone();
                tokio::spawn(async move {
                    // An error means the engine is gone, and with it what it knew.
                    let _ = engine.send(closed).await;
                });
            }
        }
    }

    /// Decodes every complete packet in the read buffer and hands each to the engine.
    ///
    /// A channel slot is reserved *before* decoding, so no packet is held across an await:
    /// that keeps a few hundred bytes (one `Packet`) out of every connection's future.
    async fn decode_all(&mut self) -> Result<(), DecodeStop> {
        let (mut bytes, mut publishes) = (0u64, 0u64);
        let result = self.decode_packets(&mut bytes, &mut publishes).await;
        self.outbox.traffic.add_in(bytes, publishes);
        self.shared.stats.total_traffic().add_in(bytes, publishes);
        result
    }

    /// The loop of [`Self::decode_all`], counting what it decodes.
    async fn decode_packets(
        &mut self,
        bytes: &mut u64,
        publishes: &mut u64,
    ) -> Result<(), DecodeStop> {
        let mut handed = 0usize;
        loop {
            // Only when more bytes wait: a read of exactly READ_BATCH packets (a client
            // keeping 16 in flight) must not pay a wake-up for nothing.
            let pause = handed > 0 && handed.is_multiple_of(READ_BATCH) && !self.rbuf.is_empty();
            let Some(slot) = engine_slot(&self.shared.engine, pause).await else {
                return Err(DecodeStop::EngineGone);
            };
            let buffered = self.rbuf.len();
            // Only the first CONNECT is authenticated; the broker refuses a second one.
            let first_packet = self.decoder.version().is_none();
            let to_authenticate = match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(mut packet)) => {
                    *bytes += (buffered - self.rbuf.len()) as u64;
                    *publishes += u64::from(matches!(packet, Packet::Publish(_)));
                    if let Packet::Connect(connect) = &mut packet {
                        self.apply_cert_identity(connect);
                    }
                    self.log.observe_inbound(&packet);
                    match packet {
                        Packet::Connect(connect) if first_packet && !enhanced_auth(&connect) => {
                            // The slot is not held while authenticating (it may take a hook
                            // timeout); the bytes after the CONNECT wait in the read buffer,
                            // so the order of packets is kept.
                            drop(slot);
                            connect
                        }
                        packet => {
                            slot.send(EngineEvent::Packet {
                                conn: self.conn,
                                packet,
                            });
                            handed += 1;
                            continue;
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    slot.send(EngineEvent::DecodeError {
                        conn: self.conn,
                        error: error.clone(),
                    });
                    return Err(DecodeStop::Failed(error));
                }
            };
            // Awaited outside the scope of the decoded `Packet` and boxed, so neither a packet
            // nor the check's state is part of every connection's future.
            Box::pin(self.authenticate(to_authenticate)).await?;
        }
        // Everything read was decoded: release the buffer (decoded packets keep the bytes they
        // need alive on their own).
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        Ok(())
    }

    /// Authenticates the first CONNECT (see [`crate::auth`]): an accepted one goes to the
    /// engine with its tenant and ACL; a refused one gets its CONNACK from here, the engine is
    /// told the connection closed, and [`DecodeStop::Refused`] ends reading.
    async fn authenticate(&mut self, connect: Box<Connect>) -> Result<(), DecodeStop> {
        let verdict = tokio::select! {
            verdict = self.shared.auth.check(&self.info, self.shared.tenant.as_ref(), &connect) => Some(verdict),
            _ = self.shared.hard_stop.cancelled() => None,
        };
        let Some(verdict) = verdict else {
            return Err(DecodeStop::Stopped);
        };
        let Some(slot) = engine_slot(&self.shared.engine, false).await else {
            return Err(DecodeStop::EngineGone);
        };
        match verdict {
            Verdict::Allow { auth, reader } => {
                if let Some(mut reader) = reader {
                    // The bytes after the CONNECT are decoded with the tenant's limit.
                    let limit = reader.bind_packet_limit(self.shared.max_packet_size);
                    self.decoder.set_max_packet_size(limit);
                    if !reader.is_idle() {
                        self.reader = Some(reader);
                    }
                }
                slot.send(EngineEvent::Connect {
                    conn: self.conn,
                    connect,
                    auth,
                });
                Ok(())
            }
            Verdict::Refuse(reason_code) => {
                // The engine forgets the connection before anything else happens to it; a
                // close order it may have queued meanwhile (CONNECT timeout) changes nothing.
                slot.send(EngineEvent::Closed { conn: self.conn });
                self.encode(&Packet::ConnAck(ConnAck {
                    reason_code,
                    ..ConnAck::default()
                }));
                Err(DecodeStop::Refused)
            }
        }
    }

    /// Gives a CONNECT the identity of the client's verified TLS certificate (the listener's
    /// `identity_from`): as User Name when it has none, or as Client Identifier when it is
    /// empty (`identity_as = "client_id"`). What the client sent explicitly is kept: checking
    /// it against the certificate is the authentication layer's job.
    fn apply_cert_identity(&self, connect: &mut Connect) {
        let (Some(identity_as), Some(identity)) =
            (self.shared.identity_as, &self.info.cert_identity)
        else {
            return;
        };
        let Ok(identity) = Utf8::try_from(&**identity) else {
            // A certificate name MQTT cannot carry (e.g. with a NUL); leave CONNECT as it is.
            return;
        };
        match identity_as {
            IdentityUse::Username if connect.username.is_none() => {
                connect.username = Some(identity);
            }
            IdentityUse::ClientId if connect.client_id.as_str().is_empty() => {
                connect.client_id = identity;
            }
            _ => {}
        }
    }

    /// Grows the read size while reads fill it, shrinks it back while they do not. A throttled
    /// connection reads at most one burst of its smallest byte bucket at a time.
    fn adapt_read_size(&mut self, filled: bool) {
        let max = self.reader.as_ref().map_or(MAX_READ, |r| r.max_read());
        self.read_size = if filled {
            (self.read_size * 2).min(max)
        } else {
            (self.read_size / 2).max(MIN_READ)
        };
    }

    /// Appends `packet`'s bytes to the write buffer.
    fn encode(&mut self, packet: &Packet) {
        self.observe_outbound(packet);
        let version = self.encoding_version();
        let start = self.wbuf.buf.len();
        if let Err(e) = encode(packet, version, &mut self.wbuf.buf) {
            // The broker built a packet the codec refuses: our bug, not the client's. Skip it
            // rather than send half of it.
            self.wbuf.buf.truncate(start);
            error!(conn = self.conn.0, packet = packet.name(), error = %e, "cannot encode packet; dropped");
        }
    }

    /// The version outbound packets are encoded for. MQTT 3.1 is never encoded: its CONNACK is
    /// the 3.1.1 one. Without a decoded CONNECT (the CONNACK refusing an unsupported protocol
    /// level) the level the client sent decides: a level above 5 is a newer client, which
    /// reads the 5.0 form (reason 0x84); below, the 3.1.1 form (return code 1) is the one older
    /// clients read.
    fn encoding_version(&self) -> ProtocolVersion {
        match self.decoder.version() {
            Some(ProtocolVersion::V5) => ProtocolVersion::V5,
            Some(ProtocolVersion::V311 | ProtocolVersion::V31) => ProtocolVersion::V311,
            None => match &self.log.decode_error {
                Some(DecodeError::UnsupportedProtocolVersion { level }) if *level > 5 => {
                    ProtocolVersion::V5
                }
                _ => ProtocolVersion::V311,
            },
        }
    }

    fn observe_outbound(&mut self, packet: &Packet) {
        match packet {
            Packet::ConnAck(ack) => {
                let Some(pending) = self.log.pending.take() else {
                    return;
                };
                let client_id: Box<str> = match &ack.properties.assigned_client_identifier {
                    Some(assigned) => assigned.as_str().into(),
                    None => pending.client_id,
                };
                let peer = Peer(self.info.peer);
                if ack.reason_code.is_success() {
                    let keep_alive = ack
                        .properties
                        .server_keep_alive
                        .unwrap_or(pending.keep_alive);
                    info!(
                        client_id = %client_id,
                        peer = %peer,
                        listener = %self.info.listener,
                        protocol = version_name(pending.version),
                        clean_start = pending.clean_start,
                        keep_alive,
                        cert_identity = self.info.cert_identity.as_deref().map(tracing::field::display),
                        peer_uid = self.info.peer_uid,
                        "client connected"
                    );
                    self.log.client_id = Some(client_id);
                } else {
                    info!(
                        client_id = %client_id,
                        peer = %peer,
                        listener = %self.info.listener,
                        reason = %Reason(ack.reason_code),
                        "client refused"
                    );
                }
            }
            Packet::Disconnect(d) => self.log.server_disconnect = Some(d.reason_code),
            _ => {}
        }
    }

    fn log_end(&self, ended: &Ended) {
        let peer = Peer(self.info.peer);
        let reason = EndReason {
            ended,
            log: &self.log,
        };
        match &self.log.client_id {
            Some(client_id) => info!(
                client_id = %client_id,
                peer = %peer,
                listener = %self.info.listener,
                reason = %reason,
                "client disconnected"
            ),
            None => debug!(
                conn = self.conn.0,
                peer = %peer,
                listener = %self.info.listener,
                reason = %reason,
                "connection closed before a successful CONNECT"
            ),
        }
    }
}

/// Whether a CONNECT asks for MQTT 5 enhanced authentication, which the broker refuses with
/// 0x8C (Bad authentication method) before any credential is looked at.
fn enhanced_auth(connect: &Connect) -> bool {
    connect.protocol == ProtocolVersion::V5 && connect.properties.authentication_method.is_some()
}

/// Polls an optional deadline; never ready without one.
fn poll_timer(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    match timer.as_mut() {
        Some(timer) => timer.as_mut().poll(cx),
        None => Poll::Pending,
    }
}

/// Whether a socket error is a WebSocket frame MQTT does not allow.
fn is_websocket_protocol_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<FrameError>().is_some())
}

/// A slot in the engine's channel; `None` once the engine is gone. The wait for a full channel
/// is boxed: it is the rare, backpressured path, and its future would otherwise add over a
/// hundred bytes to every connection's future.
///
/// With `yield_first` the task first lets the runtime run other tasks: a connection handing
/// over a large read does so in parts of [`READ_BATCH`] packets (fairness between connections
/// and tenants), and the yield lives in this small future rather than in the connection's.
/// It is tokio's `yield_now`, which wakes the task only after every task already ready has
/// run and the IO driver has been polled: a flooding connection's next part waits behind a
/// quiet client's packet that became readable meanwhile. (Waking the task at once instead,
/// i.e. joining the back of the run queue, measured 2-3x again.)
async fn engine_slot(
    engine: &mpsc::Sender<EngineEvent>,
    yield_first: bool,
) -> Option<mpsc::Permit<'_, EngineEvent>> {
    if yield_first {
        tokio::task::yield_now().await;
    }
    match engine.try_reserve() {
        Ok(slot) => Some(slot),
        Err(mpsc::error::TrySendError::Closed(())) => None,
        Err(mpsc::error::TrySendError::Full(())) => Box::pin(engine.reserve()).await.ok(),
    }
}

/// One poll of the socket: writes what is pending, then reads if asked to. Both halves are
/// polled in the same future so neither direction waits for the other.
fn socket_step<'a, T: Transport>(
    io: &'a mut T,
    rbuf: &'a mut BytesMut,
    read_size: usize,
    wbuf: &'a mut WriteBuf,
    reading: bool,
) -> impl Future<Output = IoEvent> + 'a {
    poll_fn(move |cx| {
        if let Poll::Ready(event) = poll_write_side(io, wbuf, cx) {
            return Poll::Ready(event);
        }
        if reading {
            return poll_read_side(io, rbuf, read_size, cx);
        }
        Poll::Pending
    })
}

fn poll_write_side<T: Transport>(
    io: &mut T,
    wbuf: &mut WriteBuf,
    cx: &mut Context<'_>,
) -> Poll<IoEvent> {
    while !wbuf.buf.is_empty() {
        match Pin::new(&mut *io).poll_write(cx, &wbuf.buf) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(IoEvent::Error(io::ErrorKind::WriteZero.into()));
            }
            Poll::Ready(Ok(n)) => {
                wbuf.buf.advance(n);
                wbuf.flushing = wbuf.buf.is_empty();
            }
            Poll::Ready(Err(e)) => return Poll::Ready(IoEvent::Error(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    if !wbuf.flushing {
        return Poll::Pending;
    }
    match Pin::new(&mut *io).poll_flush(cx) {
        Poll::Ready(Ok(())) => {
            wbuf.flushing = false;
            Poll::Ready(IoEvent::Flushed)
        }
        Poll::Ready(Err(e)) => Poll::Ready(IoEvent::Error(e)),
        Poll::Pending => Poll::Pending,
    }
}

fn poll_read_side<T: Transport>(
    io: &mut T,
    rbuf: &mut BytesMut,
    read_size: usize,
    cx: &mut Context<'_>,
) -> Poll<IoEvent> {
    match io.poll_read_ready(cx) {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Err(e)) => return Poll::Ready(IoEvent::Error(e)),
        Poll::Ready(Ok(())) => {}
    }
    // Room for `read_size` more bytes; a partial frame already buffered makes the room grow
    // with it, so a large packet is read in a few calls, not thousands.
    let want = read_size.max(rbuf.len());
    if rbuf.capacity() - rbuf.len() < want / 2 {
        rbuf.reserve(want);
    }
    let room = rbuf.capacity() - rbuf.len();
    match poll_read_buf(Pin::new(&mut *io), cx, rbuf) {
        Poll::Ready(Ok(0)) => Poll::Ready(IoEvent::Eof),
        Poll::Ready(Ok(n)) => Poll::Ready(IoEvent::Read {
            n,
            filled: n >= room,
        }),
        Poll::Ready(Err(e)) => Poll::Ready(IoEvent::Error(e)),
        Poll::Pending => {
            // Readiness was a false alarm: do not keep a buffer while waiting.
            if rbuf.is_empty() {
                *rbuf = BytesMut::new();
            }
            Poll::Pending
        }
    }
}

fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V31 => "3.1",
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// A peer address for logs, `-` when the transport has none.
struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("-"),
        }
    }
}

/// A reason code for logs: its name and byte, e.g. `ServerShuttingDown (0x8B)`.
struct Reason(ReasonCode);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (0x{:02X})", self.0, self.0.as_u8())
    }
}

/// Why a connection ended, most telling cause first: a decode error, then the DISCONNECT the
/// server sent, then the one the client sent, then how the socket ended.
struct EndReason<'a> {
    ended: &'a Ended,
    log: &'a LogState,
}

impl fmt::Display for EndReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(error) = &self.log.decode_error {
            return write!(f, "decode error: {error}");
        }
        if let Some(code) = self.log.server_disconnect {
            return write!(f, "server DISCONNECT {}", Reason(code));
        }
        if let Some(code) = self.log.client_disconnect {
            return write!(f, "client DISCONNECT {}", Reason(code));
        }
        match self.ended {
            Ended::Eof => f.write_str("connection closed by the client"),
            Ended::Io(error) => write!(f, "IO error: {error}"),
            Ended::DecodeErrorTimeout => f.write_str("decode error"),
            Ended::ClosedByServer => f.write_str("closed by the server"),
            Ended::SlowConsumer => f.write_str("slow consumer: outbound queue full"),
            Ended::ShutdownTimeout => f.write_str("shutdown grace period over"),
            Ended::EngineGone => f.write_str("engine stopped"),
            Ended::Drained => f.write_str("listener drained"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;
    use crate::listener::ConnLimit;
    use crate::outbox::Push;
    use crate::tenants::TenantRegistry;
    use tidegate_auth::Tenants;
    use tidegate_protocol::{ConnAck, Disconnect};
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::task::JoinHandle;

    /// A raw MQTT 3.1.1 CONNECT: clean session, keep alive 30, client id "c1".
    const CONNECT_V311: [u8; 16] = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 2, b'c', b'1',
    ];
    const PINGREQ: [u8; 2] = [0xC0, 0];

    struct Harness {
        client: DuplexStream,
        events: mpsc::Receiver<EngineEvent>,
        outbox: Arc<Outbox>,
        hard_stop: CancellationToken,
        task: JoinHandle<()>,
    }

    fn permits() -> Permits {
        Permits {
            global: ConnLimit::new(1).try_acquire().unwrap(),
            listener: None,
        }
    }

    fn shared(hard_stop: &CancellationToken) -> (Arc<ConnShared>, mpsc::Receiver<EngineEvent>) {
        shared_with_identity(hard_stop, None)
    }

    fn shared_with_identity(
        hard_stop: &CancellationToken,
        identity_as: Option<IdentityUse>,
    ) -> (Arc<ConnShared>, mpsc::Receiver<EngineEvent>) {
        let (tx, rx) = mpsc::channel(16);
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(ConnShared {
            engine: tx,
            hard_stop: hard_stop.clone(),
            max_packet_size: 1024,
            identity_as,
            draining: Arc::new(AtomicBool::new(false)),
            drain_grace: Duration::from_secs(1),
            server_reference: None,
            stats: stats.clone(),
            auth: Arc::new(Authenticator::new(
                Arc::new(TenantRegistry::new(Tenants::from_configs(&[]).unwrap())),
                &AuthConfig::default(),
                stats,
            )),
            tenant: None,
        });
        (shared, rx)
    }

    /// Starts a connection on an in-memory pipe holding `pipe` bytes each way and returns once
    /// its `Open` event arrived.
    async fn start(pipe: usize) -> Harness {
        let (client, server) = tokio::io::duplex(pipe);
        let hard_stop = CancellationToken::new();
        let (shared, mut events) = shared(&hard_stop);
        let info = ConnInfo {
            listener: "tcp:test".into(),
            ..ConnInfo::default()
        };
        let connection = Connection::new(server, ConnId(7), info, shared, permits());
        let task = tokio::spawn(connection.run());
        let Some(EngineEvent::Open { conn, outbox, .. }) = events.recv().await else {
            panic!("the first event must be Open");
        };
        assert_eq!(conn, ConnId(7));
        Harness {
            client,
            events,
            outbox,
            hard_stop,
            task,
        }
    }

    async fn next_event(events: &mut mpsc::Receiver<EngineEvent>) -> EngineEvent {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event in time")
            .expect("the channel is open")
    }

    async fn read_to_end(client: &mut DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
            .await
            .expect("the server closes in time")
            .unwrap();
        out
    }

    async fn finish(task: JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends in time")
            .unwrap();
    }

    #[tokio::test]
    async fn packets_go_to_the_engine_and_answers_to_the_socket() {
        let mut h = start(1024).await;
        h.client.write_all(&CONNECT_V311).await.unwrap();
        match next_event(&mut h.events).await {
            EngineEvent::Connect {
                connect: c, auth, ..
            } => {
                assert_eq!(c.client_id, "c1");
                assert_eq!(
                    &*auth.tenant, "default",
                    "no [[tenants]]: the default tenant"
                );
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
        h.outbox.push(Packet::ConnAck(ConnAck::default()), 8);
        h.outbox.push(Packet::PingResp, 8);
        h.outbox.close(CloseMode::Flush);
        let bytes = read_to_end(&mut h.client).await;
        assert_eq!(bytes, [0x20, 2, 0, 0, 0xD0, 0]);
        finish(h.task).await;
        assert!(
            h.events.try_recv().is_err(),
            "a close ordered by the engine is not reported back"
        );
    }

    #[tokio::test]
    async fn packets_split_across_reads_are_reassembled() {
        let mut h = start(1024).await;
        for byte in CONNECT_V311.iter().chain(&PINGREQ) {
            h.client.write_all(&[*byte]).await.unwrap();
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            next_event(&mut h.events).await,
            EngineEvent::Connect { .. }
        ));
        assert!(matches!(
            next_event(&mut h.events).await,
            EngineEvent::Packet {
                packet: Packet::PingReq,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn eof_is_reported_as_closed() {
        let h = start(1024).await;
        let Harness {
            client,
            mut events,
            task,
            ..
        } = h;
        drop(client);
        assert!(matches!(
            next_event(&mut events).await,
            EngineEvent::Closed { conn: ConnId(7) }
        ));
        finish(task).await;
    }

    #[tokio::test]
    async fn decode_error_keeps_writing_until_the_close_order() {
        let mut h = start(1024).await;
        // Packet type 0 is reserved: malformed in every version.
        h.client.write_all(&[0x00, 0x00]).await.unwrap();
        assert!(matches!(
            next_event(&mut h.events).await,
            EngineEvent::DecodeError {
                conn: ConnId(7),
                ..
            }
        ));
        // Bytes after the error are not read.
        h.client.write_all(&PINGREQ).await.unwrap();
        h.outbox.push(
            Packet::Disconnect(Disconnect::with_reason(ReasonCode::MalformedPacket)),
            8,
        );
        h.outbox.close(CloseMode::Flush);
        // No CONNECT was decoded: the 3.1.1 form, where DISCONNECT has no reason code.
        assert_eq!(read_to_end(&mut h.client).await, [0xE0, 0]);
        finish(h.task).await;
        assert!(h.events.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn decode_error_without_close_order_ends_after_the_drain_timeout() {
        let mut h = start(1024).await;
        h.client.write_all(&[0x00, 0x00]).await.unwrap();
        assert!(matches!(
            next_event(&mut h.events).await,
            EngineEvent::DecodeError { .. }
        ));
        let started = tokio::time::Instant::now();
        assert!(matches!(
            next_event(&mut h.events).await,
            EngineEvent::Closed { .. }
        ));
        assert!(started.elapsed() >= DRAIN_AFTER_DECODE_ERROR);
        finish(h.task).await;
    }

    #[tokio::test]
    async fn abort_closes_without_writing_what_was_queued() {
        let mut h = start(1024).await;
        h.outbox.push(Packet::PingResp, 8);
        h.outbox.close(CloseMode::Abort);
        assert!(read_to_end(&mut h.client).await.is_empty());
        finish(h.task).await;
    }

    #[tokio::test]
    async fn hard_stop_ends_the_task_and_reports_it() {
        let mut h = start(1024).await;
        h.hard_stop.cancel();
        finish(h.task).await;
        // The engine may be gone at that point: the Closed event is best effort.
        let _ = h.events.try_recv();
        assert!(read_to_end(&mut h.client).await.is_empty());
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_still_read_from() {
        // 16 bytes of pipe: the server's writes block long before WRITE_BATCH PINGRESPs (one
        // wake-up's worth, taken at once) are out.
        let mut h = start(16).await;
        h.client.write_all(&CONNECT_V311).await.unwrap();
        assert!(matches!(
            next_event(&mut h.events).await,
            EngineEvent::Connect { .. }
        ));
        for _ in 0..WRITE_BATCH {
            assert_eq!(h.outbox.push(Packet::PingResp, 1024), Push::Queued);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.client.write_all(&PINGREQ).await.unwrap();
        assert!(matches!(
            next_event(&mut h.events).await,
            EngineEvent::Packet {
                packet: Packet::PingReq,
                ..
            }
        ));
        // While the write is blocked nothing more is taken: new packets wait in the bounded
        // outbox, where the engine's full-queue policy applies.
        for _ in 0..4 {
            assert_eq!(h.outbox.push(Packet::PingResp, 4), Push::Queued);
        }
        assert_eq!(h.outbox.push(Packet::PingResp, 4), Push::Full);
        // Once the client reads, everything arrives in order.
        h.outbox.close(CloseMode::Flush);
        let bytes = read_to_end(&mut h.client).await;
        assert_eq!(bytes.len(), 2 * (WRITE_BATCH + 4));
        assert!(bytes.chunks(2).all(|p| p == [0xD0, 0]));
    }

    #[tokio::test]
    async fn a_large_read_is_handed_over_in_parts_with_other_tasks_run_between() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let hard_stop = CancellationToken::new();
        let (mut shared, _) = shared(&hard_stop);
        // A channel that never fills: only the bounded work per wake-up may split the read.
        let (tx, mut events) = mpsc::channel(1024);
        Arc::get_mut(&mut shared).expect("not shared yet").engine = tx;
        let connection = Connection::new(server, ConnId(1), ConnInfo::default(), shared, permits());
        let task = tokio::spawn(connection.run());
        assert!(matches!(
            next_event(&mut events).await,
            EngineEvent::Open { .. }
        ));
        client.write_all(&CONNECT_V311).await.unwrap();
        assert!(matches!(
            next_event(&mut events).await,
            EngineEvent::Connect { .. }
        ));

        let n = READ_BATCH * 4 + 3;
        client.write_all(&PINGREQ.repeat(n)).await.unwrap();
        // Another task of the same (single-threaded) runtime looks at the channel each time it
        // gets to run: it must see the read arrive in parts that end at multiples of
        // READ_BATCH (how many parts pass between two of its turns is the scheduler's affair).
        let probe = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..100_000 {
                seen.push(events.len());
                if events.len() == n {
                    break;
                }
                tokio::task::yield_now().await;
            }
            (seen, events)
        });
        let (seen, mut events) = probe.await.unwrap();
        assert_eq!(seen.last(), Some(&n), "every packet arrives: {seen:?}");
        let mut parts: Vec<usize> = seen.iter().copied().filter(|&k| k > 0 && k < n).collect();
        parts.dedup();
        assert!(
            parts.len() >= 2,
            "the read was handed over at once: {seen:?}"
        );
        assert!(
            parts.iter().all(|k| k.is_multiple_of(READ_BATCH)),
            "a part that is not a whole batch: {seen:?}"
        );
        for _ in 0..n {
            assert!(matches!(
                next_event(&mut events).await,
                EngineEvent::Packet {
                    packet: Packet::PingReq,
                    ..
                }
            ));
        }
        hard_stop.cancel();
        finish(task).await;
    }

    #[tokio::test]
    async fn a_long_outbox_goes_out_whole_and_in_order_over_bounded_wake_ups() {
        let mut h = start(64 * 1024).await;
        h.client.write_all(&CONNECT_V311).await.unwrap();
        assert!(matches!(
            next_event(&mut h.events).await,
            EngineEvent::Connect { .. }
        ));
        let n = WRITE_BATCH * 10 + 3;
        for i in 0..n {
            let packet = if i % 2 == 0 {
                Packet::PingResp
            } else {
                Packet::PubAck(tidegate_protocol::PubResponse::success(
                    tidegate_protocol::PacketId::new(1).unwrap(),
                ))
            };
            assert_eq!(h.outbox.push(packet, n), Push::Queued);
        }
        h.outbox.close(CloseMode::Flush);
        let bytes = read_to_end(&mut h.client).await;
        // PINGRESP is 2 bytes, a 3.1.1 PUBACK 4, alternating from the first.
        let mut at = 0;
        for i in 0..n {
            let len = if i % 2 == 0 { 2 } else { 4 };
            let expected: &[u8] = if i % 2 == 0 {
                &[0xD0, 0]
            } else {
                &[0x40, 2, 0, 1]
            };
            assert_eq!(&bytes[at..at + len], expected, "packet {i}");
            at += len;
        }
        assert_eq!(at, bytes.len());
    }

    #[tokio::test]
    async fn idle_connection_holds_no_buffers() {
        let (mut client, server) = tokio::io::duplex(1024);
        let hard_stop = CancellationToken::new();
        let (shared, mut events) = shared(&hard_stop);
        let mut connection =
            Connection::new(server, ConnId(1), ConnInfo::default(), shared, permits());
        let outbox = connection.outbox.clone();
        let exchange = async {
            client.write_all(&CONNECT_V311).await.unwrap();
            next_event(&mut events).await;
            outbox.push(Packet::PingResp, 8);
            let mut pong = [0; 2];
            client.read_exact(&mut pong).await.unwrap();
            // Give the task a turn to see the write completed.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tokio::select! {
            ended = connection.drive() => panic!("connection ended: {ended:?}"),
            _ = exchange => {}
        }
        assert_eq!(connection.rbuf.capacity(), 0, "read buffer released");
        assert_eq!(connection.wbuf.buf.capacity(), 0, "write buffer released");
        assert!(
            connection.log.pending.is_some(),
            "CONNECT remembered until CONNACK"
        );
    }

    /// The CONNECT the engine receives from a client on a listener with `identity_as`, when
    /// its certificate named `"device-42"`.
    async fn connect_seen_by_engine(identity_as: IdentityUse, bytes: &[u8]) -> Connect {
        let (mut client, server) = tokio::io::duplex(1024);
        let hard_stop = CancellationToken::new();
        let (shared, mut events) = shared_with_identity(&hard_stop, Some(identity_as));
        let info = ConnInfo {
            cert_identity: Some("device-42".into()),
            ..ConnInfo::default()
        };
        let task = tokio::spawn(Connection::new(server, ConnId(1), info, shared, permits()).run());
        next_event(&mut events).await;
        client.write_all(bytes).await.unwrap();
        let EngineEvent::Connect { connect, .. } = next_event(&mut events).await else {
            panic!("expected the CONNECT");
        };
        task.abort();
        *connect
    }

    #[tokio::test]
    async fn certificate_identity_fills_what_connect_left_out() {
        // CONNECT_V311 has client id "c1" and no user name.
        let connect = connect_seen_by_engine(IdentityUse::Username, &CONNECT_V311).await;
        assert_eq!(
            connect.username.as_ref().map(Utf8::as_str),
            Some("device-42")
        );
        assert_eq!(connect.client_id.as_str(), "c1");
        let connect = connect_seen_by_engine(IdentityUse::ClientId, &CONNECT_V311).await;
        assert_eq!(
            connect.client_id.as_str(),
            "c1",
            "a client id that was sent is kept"
        );
        assert!(connect.username.is_none());
        // Empty client id, user name "u".
        let empty_id = [
            0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 0, 30, 0, 0, 0, 1, b'u',
        ];
        let connect = connect_seen_by_engine(IdentityUse::ClientId, &empty_id).await;
        assert_eq!(connect.client_id.as_str(), "device-42");
        let connect = connect_seen_by_engine(IdentityUse::Username, &empty_id).await;
        assert_eq!(connect.username.as_ref().map(Utf8::as_str), Some("u"));
    }

    /// A connection on a listener bound to tenant `acme`, which allows no anonymous client.
    async fn start_in_acme() -> Harness {
        let (client, server) = tokio::io::duplex(1024);
        let hard_stop = CancellationToken::new();
        let (tx, mut events) = mpsc::channel(16);
        let stats = Arc::new(Stats::default());
        let acme = tidegate_auth::TenantConfig {
            id: "acme".into(),
            ..tidegate_auth::TenantConfig::default()
        };
        let registry = TenantRegistry::new(Tenants::from_configs(&[acme]).unwrap());
        let shared = Arc::new(ConnShared {
            engine: tx,
            hard_stop: hard_stop.clone(),
            max_packet_size: 1024,
            identity_as: None,
            draining: Arc::new(AtomicBool::new(false)),
            drain_grace: Duration::from_secs(1),
            server_reference: None,
            stats: stats.clone(),
            auth: Arc::new(Authenticator::new(
                Arc::new(registry),
                &AuthConfig::default(),
                stats,
            )),
            tenant: Some(Arc::from("acme")),
        });
        let connection = Connection::new(server, ConnId(3), ConnInfo::default(), shared, permits());
        let task = tokio::spawn(connection.run());
        let Some(EngineEvent::Open { outbox, .. }) = events.recv().await else {
            panic!("the first event must be Open");
        };
        Harness {
            client,
            events,
            outbox,
            hard_stop,
            task,
        }
    }

    #[tokio::test]
    async fn a_refused_connect_gets_its_connack_and_the_engine_only_hears_closed() {
        let mut h = start_in_acme().await;
        // The PINGREQ after the CONNECT is never read: the decision comes first.
        let mut bytes = CONNECT_V311.to_vec();
        bytes.extend_from_slice(&PINGREQ);
        h.client.write_all(&bytes).await.unwrap();
        assert!(matches!(
            next_event(&mut h.events).await,
            EngineEvent::Closed { conn: ConnId(3) }
        ));
        // 3.1.1 return code 5 (Not authorized) for 0x87, then the close.
        assert_eq!(read_to_end(&mut h.client).await, [0x20, 2, 0, 5]);
        finish(h.task).await;
        assert!(h.events.try_recv().is_err(), "nothing after Closed");
    }

    #[tokio::test]
    async fn enhanced_authentication_is_left_to_the_broker() {
        let mut h = start_in_acme().await;
        // v5 CONNECT, client id "c", Authentication Method "X" (property 0x15).
        let connect = [
            0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30, 4, 0x15, 0, 1, b'X', 0, 1, b'c',
        ];
        h.client.write_all(&connect).await.unwrap();
        match next_event(&mut h.events).await {
            EngineEvent::Packet {
                packet: Packet::Connect(c),
                ..
            } => assert!(c.properties.authentication_method.is_some()),
            other => panic!("expected the CONNECT as a packet, got {other:?}"),
        }
        h.hard_stop.cancel();
        finish(h.task).await;
    }

    /// The size of the task future of a connection on transport `T`, without making one.
    fn run_future_size<T: Transport>() -> usize {
        fn returned<A, F>(_: impl FnOnce(A) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        returned(Connection::<T>::run)
    }

    #[test]
    fn connection_future_stays_small() {
        use crate::transport::ws::WsStream;
        use tokio::net::{TcpStream, UnixStream};
        use tokio_rustls::server::TlsStream;
        let sizes = [
            ("tcp", run_future_size::<TcpStream>()),
            ("unix", run_future_size::<UnixStream>()),
            ("ws", run_future_size::<WsStream<TcpStream>>()),
            ("tls", run_future_size::<TlsStream<TcpStream>>()),
            ("wss", run_future_size::<WsStream<TlsStream<TcpStream>>>()),
        ];
        eprintln!("connection future sizes: {sizes:?}");
        // Measured (debug build, tokio 1.54, rustls 0.23): tcp 608, unix 608, ws 760,
        // tls 1,792, wss 1,944 bytes. About 300 are the `Connection` without its socket
        // (buffers' headers, decoder, log state, permits), the rest the select loop's futures
        // and the socket: a rustls `ServerConnection` is over a kilobyte inline. The bounds
        // catch an accidental large field, an inline timer or a `Packet` held across an await.
        for (transport, size) in sizes {
            let bound = match transport {
                "tcp" | "unix" => 640,
                "ws" => 768,
                _ => 2_048,
            };
            assert!(
                size <= bound,
                "{transport} connection future is {size} bytes"
            );
        }
    }
}
