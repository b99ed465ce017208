//! Listeners: accept sockets, enforce the connection limits, run the transport steps, start one
//! connection task each.
//!
//! Place in the data flow: `socket --accept--> listener --> [transport steps] --> connection
//! task`. Every kind hands the same [`Connection`] a [`crate::transport::Transport`] plus a
//! [`ConnInfo`], so nothing above knows which socket a client used.
//!
//! Admission, in order, before any byte is read:
//! 1. the listener's `max_accept_rate` (a token bucket refilled continuously, one second of
//!    burst): over it the socket is closed at once and counted in
//!    [`Stats::connections_rate_limited`];
//! 2. the listener's own `max_connections`, then `limits.max_connections` (all listeners):
//!    over either the socket is closed at once and counted in [`Stats::connections_refused`].
//!
//! Connections already open are never affected. A connection holds its permits until its task
//! ends. A socket whose listener has transport steps (PROXY, TLS, WebSocket) gets a short task
//! for them, bounded by `handshake_timeout_ms`, which then spawns the connection task; a
//! failed step is logged with its reason, counted per step, and the socket closed.
//!
//! Accept errors do not end the loop: running out of file descriptors (EMFILE) is exactly when
//! the gateway must keep serving the connections it has, so the loop logs, pauses briefly (the
//! error would repeat at once otherwise) and tries again.

use crate::connection::{ConnShared, Connection, Permits};
use crate::stats::Stats;
use crate::transport::unix::{self, UnixSocket};
use crate::transport::{Established, Steps, establish};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tidegate_core::{ConnId, ConnInfo};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Pause after an accept error that would repeat at once (EMFILE, ENFILE, ENOBUFS, ...).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A count of open connections against a maximum.
#[derive(Debug)]
pub(crate) struct ConnLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnLimit {
    /// A limit of `max` connections at once.
    pub(crate) fn new(max: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A permit if fewer than `max` are open.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<ConnPermit> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnPermit(self.clone()))
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open connection counted against a [`ConnLimit`]; released on drop.
#[derive(Debug)]
pub(crate) struct ConnPermit(Arc<ConnLimit>);

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// New connections per second, as a token bucket holding at most one second's worth.
#[derive(Debug)]
pub(crate) struct AcceptRate {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl AcceptRate {
    /// A full bucket for `rate` connections per second.
    pub(crate) fn new(rate: u32, now: Instant) -> AcceptRate {
        AcceptRate {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: now,
        }
    }

    /// Takes a token if one is left at `now`.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The socket a listener accepts on.
#[derive(Debug)]
pub(crate) enum Bound {
    /// TCP (tcp, tls, ws, wss).
    Tcp(TcpListener),
    /// A Unix domain socket; its file goes with it.
    Unix(UnixSocket),
}

/// A bound listener, not yet accepting.
#[derive(Debug)]
pub(crate) struct Acceptor {
    /// Its name, shared by the `ConnInfo` of every connection it accepts.
    pub(crate) name: Arc<str>,
    /// The socket.
    pub(crate) socket: Bound,
    /// The address actually bound (port 0 resolved); `None` for unix.
    pub(crate) local_addr: Option<SocketAddr>,
    /// Its own `max_connections`, if any.
    pub(crate) limit: Option<Arc<ConnLimit>>,
    /// Its `max_accept_rate`, if any.
    pub(crate) rate: Option<AcceptRate>,
    /// What happens between accept and MQTT.
    pub(crate) steps: Arc<Steps>,
    /// Handed to each of its connection tasks.
    pub(crate) shared: Arc<ConnShared>,
    /// Cancelled to stop accepting: on shutdown, or when this listener alone is drained.
    pub(crate) stop: CancellationToken,
    /// Tracks this listener's handshake and connection tasks (which the server's tracker
    /// tracks too), so that a drain of this listener alone knows when they are done.
    pub(crate) tracker: TaskTracker,
}

/// What every listener of a server shares.
#[derive(Debug)]
pub(crate) struct AcceptContext {
    /// `limits.max_connections`.
    pub(crate) global_limit: Arc<ConnLimit>,
    /// Source of connection ids, unique across listeners for the server's life.
    pub(crate) next_id: AtomicU64,
    /// Counters.
    pub(crate) stats: Arc<Stats>,
    /// Every connection and handshake task is spawned on it, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
}

/// A socket just accepted.
enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

/// Accepts until the acceptor's `stop` is cancelled; dropping the socket then refuses new
/// connections (and removes a unix socket's file).
pub(crate) async fn accept_loop(mut acceptor: Acceptor, ctx: Arc<AcceptContext>) {
    match (&acceptor.socket, acceptor.local_addr) {
        (Bound::Tcp(_), Some(addr)) => info!(listener = %acceptor.name, %addr, "listening"),
        _ => info!(listener = %acceptor.name, "listening"),
    }
    loop {
        let accepted = tokio::select! {
            biased;
            _ = acceptor.stop.cancelled() => break,
            accepted = accept(&acceptor.socket) => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => admit_tcp(&mut acceptor, &ctx, stream, peer),
            Ok(Accepted::Unix(stream)) => admit_unix(&mut acceptor, &ctx, stream),
            Err(e) if is_per_connection(&e) => {
                debug!(listener = %acceptor.name, error = %e, "accept failed for one connection");
            }
            Err(e) => {
                warn!(listener = %acceptor.name, error = %e, "accept failed; pausing");
                tokio::select! {
                    _ = acceptor.stop.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    debug!(listener = %acceptor.name, "stopped accepting");
}

async fn accept(socket: &Bound) -> io::Result<Accepted> {
    match socket {
        Bound::Tcp(listener) => {
            let (stream, peer) = listener.accept().await?;
            Ok(Accepted::Tcp(stream, peer))
        }
        Bound::Unix(socket) => {
            let (stream, _) = socket.listener.accept().await?;
            Ok(Accepted::Unix(stream))
        }
    }
}

/// Errors about the one socket being accepted, which say nothing about the next one.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// The admission checks of the module docs; `None` means the socket must be closed.
fn admission(
    acceptor: &mut Acceptor,
    ctx: &AcceptContext,
    peer: &dyn std::fmt::Display,
) -> Option<Permits> {
    if let Some(rate) = &mut acceptor.rate
        && !rate.try_take(Instant::now())
    {
        let refused = ctx.stats.count_rate_limited();
        if throttled_log(refused) {
            warn!(listener = %acceptor.name, %peer, refused_total = refused,
                "accept rate limit reached; refusing new connections");
        }
        return None;
    }
    let Some(permits) = acquire(acceptor, ctx) else {
        let refused = ctx.stats.count_refused();
        if throttled_log(refused) {
            warn!(
                listener = %acceptor.name,
                %peer,
                refused_total = refused,
                open = ctx.global_limit.open(),
                "connection limit reached; refusing new connections"
            );
        }
        return None;
    };
    ctx.stats.count_accepted();
    Some(permits)
}

/// Under a connection flood one line per refused socket would be a flood too.
fn throttled_log(refused: u64) -> bool {
    refused.is_power_of_two() || refused.is_multiple_of(1000)
}

fn admit_tcp(acceptor: &mut Acceptor, ctx: &AcceptContext, stream: TcpStream, peer: SocketAddr) {
    let Some(permits) = admission(acceptor, ctx, &peer) else {
        // Dropping the stream closes the socket at once.
        return;
    };
    // MQTT packets are small and latency matters more than segment count; our writes are
    // already batched per wake-up, so Nagle's algorithm would only add delay.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let conn = ConnId(ctx.next_id.fetch_add(1, Ordering::Relaxed));
    let mut info = ConnInfo {
        listener: acceptor.name.clone(),
        peer: Some(peer),
        ..ConnInfo::default()
    };
    let trackers = Trackers {
        server: ctx.tracker.clone(),
        listener: acceptor.tracker.clone(),
    };
    if acceptor.steps.is_empty() {
        let connection = Connection::new(stream, conn, info, acceptor.shared.clone(), permits);
        trackers.spawn(connection.run());
        return;
    }
    let steps = acceptor.steps.clone();
    let shared = acceptor.shared.clone();
    let stop = acceptor.stop.clone();
    let stats = ctx.stats.clone();
    trackers.clone().spawn(async move {
        let established = tokio::select! {
            biased;
            // Shutting down or draining: a half-open socket is simply dropped.
            _ = stop.cancelled() => return,
            established = establish(stream, &mut info, &steps) => established,
        };
        match established {
            Ok(established) => {
                spawn_connection(&trackers, established, conn, info, shared, permits);
            }
            Err(error) => {
                stats.count_handshake_failure(error.failure());
                info!(
                    listener = %info.listener,
                    peer = %peer,
                    %error,
                    "transport handshake failed; connection closed"
                );
            }
        }
    });
}

/// Starts the connection task for an established transport: one monomorphized task type per
/// transport (see [`crate::transport`]).
fn spawn_connection(
    trackers: &Trackers,
    established: Established,
    conn: ConnId,
    info: ConnInfo,
    shared: Arc<ConnShared>,
    permits: Permits,
) {
    if let Some(identity) = &info.cert_identity {
        debug!(conn = conn.0, listener = %info.listener, %identity, "TLS client certificate identity");
    }
    match established {
        Established::Tcp(s) => {
            trackers.spawn(Connection::new(s, conn, info, shared, permits).run())
        }
        Established::Tls(s) => {
            trackers.spawn(Connection::new(*s, conn, info, shared, permits).run());
        }
        Established::Ws(s) => trackers.spawn(Connection::new(s, conn, info, shared, permits).run()),
        Established::Wss(s) => {
            trackers.spawn(Connection::new(*s, conn, info, shared, permits).run());
        }
    }
}

/// The server's and the listener's task trackers.
#[derive(Clone)]
struct Trackers {
    server: TaskTracker,
    listener: TaskTracker,
}

impl Trackers {
    /// Spawns `task` tracked by both.
    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.server.spawn(self.listener.track_future(task));
    }
}

fn admit_unix(acceptor: &mut Acceptor, ctx: &AcceptContext, stream: UnixStream) {
    let Some(permits) = admission(acceptor, ctx, &"unix peer") else {
        return;
    };
    let conn = ConnId(ctx.next_id.fetch_add(1, Ordering::Relaxed));
    let mut info = ConnInfo {
        listener: acceptor.name.clone(),
        ..ConnInfo::default()
    };
    unix::peer_credentials(&stream, &mut info);
    let connection = Connection::new(stream, conn, info, acceptor.shared.clone(), permits);
    let trackers = Trackers {
        server: ctx.tracker.clone(),
        listener: acceptor.tracker.clone(),
    };
    trackers.spawn(connection.run());
}

fn acquire(acceptor: &Acceptor, ctx: &AcceptContext) -> Option<Permits> {
    // The listener's permit first: when it is the one exhausted, the global one is not taken.
    let listener = match &acceptor.limit {
        Some(limit) => Some(limit.try_acquire()?),
        None => None,
    };
    let global = ctx.global_limit.try_acquire()?;
    Some(Permits { global, listener })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_counts_permits_and_releases_them_on_drop() {
        let limit = ConnLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        assert_eq!(limit.open(), 2);
        drop(a);
        assert_eq!(limit.open(), 1);
        let _c = limit.try_acquire().unwrap();
        drop(b);
        assert_eq!(limit.open(), 1);
    }

    #[test]
    fn per_connection_errors_do_not_pause() {
        assert!(is_per_connection(&io::ErrorKind::ConnectionAborted.into()));
        // EMFILE surfaces as an uncategorized OS error: it must pause, not spin.
        assert!(!is_per_connection(&io::Error::from_raw_os_error(24)));
    }

    #[test]
    fn accept_rate_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut rate = AcceptRate::new(10, start);
        assert_eq!((0..15).filter(|_| rate.try_take(start)).count(), 10);
        // 250 ms later, 2.5 tokens have come back.
        let later = start + Duration::from_millis(250);
        assert_eq!((0..5).filter(|_| rate.try_take(later)).count(), 2);
        // A long pause refills the bucket but not past one second's worth.
        let much_later = later + Duration::from_secs(60);
        assert_eq!((0..50).filter(|_| rate.try_take(much_later)).count(), 10);
    }
}
