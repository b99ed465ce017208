//! The `http` and `https` listeners: sockets served with hyper, requests handled by
//! [`tidegate_http`]'s router over the engine ([`crate::api::GatewayHandle`]).
//!
//! Place in the data flow: `socket --accept--> admission (accept rate, max_connections) -->
//! [TLS] --> hyper (HTTP/1.1 or HTTP/2) --> axum Router --> Gateway --> engine task`. The
//! admission rules and the TLS handshake (with its timeout, failure counting and certificate
//! reload) are the MQTT listeners' own; the peer address reaches the router as
//! `ConnectInfo<SocketAddr>` (rate limits of failed authentications are per address).
//!
//! On shutdown or drain a listener stops accepting and each connection is asked to finish
//! gracefully (hyper closes idle keep-alive connections and answers the request in progress);
//! open SSE streams and long-polls end through the HTTP face's own stop token (a server-wide
//! shutdown). Whatever is still open after the grace period (`shutdown.grace_period_ms`) is
//! dropped.

use crate::listener::{AcceptRate, ConnLimit};
use crate::stats::Stats;
use crate::transport::HandshakeFailure;
use crate::transport::tls::TlsSetup;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_core::ConnInfo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

/// Pause after an accept error that would repeat at once (EMFILE, ...).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A bound HTTP listener, not yet accepting.
pub(crate) struct HttpAcceptor {
    /// Its name, for logs.
    pub(crate) name: Arc<str>,
    /// The socket.
    pub(crate) socket: TcpListener,
    /// TLS material for `https`.
    pub(crate) tls: Option<Arc<TlsSetup>>,
    /// Its `max_connections`.
    pub(crate) limit: Option<Arc<ConnLimit>>,
    /// Its `max_accept_rate`.
    pub(crate) rate: Option<AcceptRate>,
    /// Bound on the TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// What the connections serve.
    pub(crate) router: axum::Router,
    /// Stop accepting, and ask open connections to finish.
    pub(crate) stop: CancellationToken,
    /// How long a connection gets to finish after `stop` before it is dropped.
    pub(crate) grace: Duration,
    /// Tracks the accept loop's connection tasks (for a drain of this listener).
    pub(crate) tracker: TaskTracker,
    /// The server's tracker, which tracks them too (for the server-wide shutdown).
    pub(crate) server_tracker: TaskTracker,
    /// Refusals and TLS failures are counted with the MQTT listeners'.
    pub(crate) stats: Arc<Stats>,
}

impl std::fmt::Debug for HttpAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAcceptor")
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Accepts until `stop`; each connection gets its own task.
pub(crate) async fn accept_loop(mut a: HttpAcceptor) {
    info!(listener = %a.name, "HTTP listener accepting");
    loop {
        let accepted = tokio::select! {
            _ = a.stop.cancelled() => break,
            accepted = a.socket.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(listener = %a.name, error = %e, "accept failed; retrying");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if let Some(rate) = &mut a.rate
            && !rate.try_take(Instant::now())
        {
            a.stats.count_rate_limited();
            debug!(listener = %a.name, %peer, "HTTP connection over the accept rate; closed");
            continue;
        }
        let permit = match &a.limit {
            Some(limit) => match limit.try_acquire() {
                Some(p) => Some(p),
                None => {
                    a.stats.count_refused();
                    debug!(listener = %a.name, %peer, "HTTP listener full; closed");
                    continue;
                }
            },
            None => None,
        };
        // Small responses and SSE events must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let conn = HttpConn {
            name: a.name.clone(),
            peer,
            tls: a.tls.clone(),
            handshake_timeout: a.handshake_timeout,
            router: a.router.clone(),
            stop: a.stop.clone(),
            grace: a.grace,
            stats: a.stats.clone(),
        };
        a.tracker.spawn(a.server_tracker.track_future(async move {
            conn.serve(tcp).await;
            drop(permit);
        }));
    }
    info!(listener = %a.name, "HTTP listener stopped accepting");
}

/// One accepted HTTP connection.
struct HttpConn {
    name: Arc<str>,
    peer: SocketAddr,
    tls: Option<Arc<TlsSetup>>,
    handshake_timeout: Duration,
    router: axum::Router,
    stop: CancellationToken,
    grace: Duration,
    stats: Arc<Stats>,
}

impl HttpConn {
    async fn serve(self, tcp: TcpStream) {
        let Some(tls) = self.tls.clone() else {
            return self.serve_io(tcp).await;
        };
        let mut info = ConnInfo {
            listener: self.name.clone(),
            peer: Some(self.peer),
            ..ConnInfo::default()
        };
        match tokio::time::timeout(self.handshake_timeout, tls.accept(tcp, &mut info)).await {
            Ok(Ok(stream)) => self.serve_io(stream).await,
            Ok(Err(e)) => {
                self.stats.count_handshake_failure(HandshakeFailure::Tls);
                info!(listener = %self.name, peer = %self.peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                self.stats
                    .count_handshake_failure(HandshakeFailure::Timeout);
                info!(listener = %self.name, peer = %self.peer, "TLS handshake timed out");
            }
        }
    }

    async fn serve_io<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let service =
            self.router
                .clone()
                .map_request(move |mut request: axum::http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = self.stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                tokio::time::timeout(self.grace, connection.as_mut())
                    .await
                    .unwrap_or(Ok(()))
            }
        };
        if let Err(e) = result {
            debug!(listener = %self.name, %peer, error = %e, "HTTP connection ended with an error");
        }
    }
}
