//! Listeners: accept sockets, enforce the connection limits, start one connection task each.
//!
//! Place in the data flow: `socket --accept--> listener --> connection task`. Only TCP exists
//! today; every kind will hand the same [`Connection`] a [`crate::connection::Transport`] plus a
//! [`ConnInfo`], so nothing above knows which socket a client used.
//!
//! Limits: a socket accepted while `limits.max_connections` (all listeners) or the listener's
//! own `max_connections` connections are open is closed at once and counted in
//! [`Stats::connections_refused`]. A connection holds its permits until its task ends.
//!
//! Accept errors do not end the loop: running out of file descriptors (EMFILE) is exactly when
//! the gateway must keep serving the connections it has, so the loop logs, pauses briefly (the
//! error would repeat at once otherwise) and tries again.

use crate::connection::{ConnShared, Connection, Permits};
use crate::stats::Stats;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tidegate_core::{ConnId, ConnInfo};
use tokio::net::TcpListener;
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

/// A bound TCP listener, not yet accepting.
#[derive(Debug)]
pub(crate) struct TcpAcceptor {
    /// Its name, shared by the `ConnInfo` of every connection it accepts.
    pub(crate) name: Arc<str>,
    /// The socket.
    pub(crate) listener: TcpListener,
    /// The address actually bound (port 0 resolved).
    pub(crate) local_addr: SocketAddr,
    /// Its own `max_connections`, if any.
    pub(crate) limit: Option<Arc<ConnLimit>>,
}

/// What every listener of a server shares.
#[derive(Debug)]
pub(crate) struct AcceptContext {
    /// Handed to every connection task.
    pub(crate) shared: Arc<ConnShared>,
    /// `limits.max_connections`.
    pub(crate) global_limit: Arc<ConnLimit>,
    /// Source of connection ids, unique across listeners for the server's life.
    pub(crate) next_id: AtomicU64,
    /// Counters.
    pub(crate) stats: Arc<Stats>,
    /// Cancelled on shutdown: stop accepting.
    pub(crate) stop: CancellationToken,
    /// Every connection task is spawned on it, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
}

/// Accepts until `ctx.stop` is cancelled; dropping the listener then refuses new sockets.
pub(crate) async fn accept_loop(acceptor: TcpAcceptor, ctx: Arc<AcceptContext>) {
    info!(listener = %acceptor.name, addr = %acceptor.local_addr, "listening");
    loop {
        let accepted = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => break,
            accepted = acceptor.listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => admit(&acceptor, &ctx, stream, peer),
            Err(e) if is_per_connection(&e) => {
                debug!(listener = %acceptor.name, error = %e, "accept failed for one connection");
            }
            Err(e) => {
                warn!(listener = %acceptor.name, error = %e, "accept failed; pausing");
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    debug!(listener = %acceptor.name, "stopped accepting");
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

fn admit(
    acceptor: &TcpAcceptor,
    ctx: &AcceptContext,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let Some(permits) = acquire(acceptor, ctx) else {
        // Dropping the stream closes the socket at once.
        drop(stream);
        let refused = ctx.stats.count_refused();
        // Throttled: under a connection flood one line per refused socket would be a flood too.
        if refused.is_power_of_two() || refused.is_multiple_of(1000) {
            warn!(
                listener = %acceptor.name,
                peer = %peer,
                refused_total = refused,
                open = ctx.global_limit.open(),
                "connection limit reached; refusing new connections"
            );
        }
        return;
    };
    // MQTT packets are small and latency matters more than segment count; our writes are
    // already batched per wake-up, so Nagle's algorithm would only add delay.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
    }
    ctx.stats.count_accepted();
    let conn = ConnId(ctx.next_id.fetch_add(1, Ordering::Relaxed));
    let info = ConnInfo {
        listener: acceptor.name.clone(),
        peer: Some(peer),
    };
    let connection = Connection::new(stream, conn, info, ctx.shared.clone(), permits);
    ctx.tracker.spawn(connection.run());
}

fn acquire(acceptor: &TcpAcceptor, ctx: &AcceptContext) -> Option<Permits> {
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
}
