//! The server: binds the listeners, starts the engine, serves until told to stop.
//!
//! Place in the data flow: it wires the pieces together: listeners → connection tasks →
//! engine task (see [`crate`] for the picture) and runs the shutdown sequence of
//! [`crate::shutdown`]. Binding and serving are separate steps so a caller (a test) can bind
//! port 0 and learn the real address before clients connect.

use crate::config::{Config, ConfigError, ListenerKind};
use crate::connection::ConnShared;
use crate::engine::{self, Engine};
use crate::listener::{self, AcceptContext, ConnLimit, TcpAcceptor};
use crate::shutdown;
use crate::stats::Stats;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tidegate_core::Broker;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

/// Why the server could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not bind its address.
    #[error("listener {listener}: cannot bind {address}: {source}")]
    Bind {
        /// The listener's name.
        listener: String,
        /// The address it tried.
        address: String,
        /// The OS error.
        source: io::Error,
    },
    /// The engine task panicked: a bug in the broker core. Every connection was dropped.
    #[error("the broker engine failed: {0}")]
    EngineFailed(String),
}

/// A server with its listeners bound, ready to [`serve`](Server::serve).
#[derive(Debug)]
pub struct Server {
    config: Config,
    acceptors: Vec<TcpAcceptor>,
    stats: Arc<Stats>,
}

impl Server {
    /// Validates `config` and binds every listener.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        let mut acceptors = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let name = listener.name();
            let (ListenerKind::Tcp, Some(address)) = (listener.kind, &listener.bind) else {
                // validate() admits nothing else; kept as an error, not a panic, for safety.
                return Err(ConfigError::UnsupportedListener {
                    listener: name,
                    kind: listener.kind,
                }
                .into());
            };
            let bind_error = |source| ServerError::Bind {
                listener: name.clone(),
                address: address.clone(),
                source,
            };
            let socket = TcpListener::bind(address.as_str())
                .await
                .map_err(bind_error)?;
            let local_addr = socket.local_addr().map_err(bind_error)?;
            acceptors.push(TcpAcceptor {
                name: name.as_str().into(),
                listener: socket,
                local_addr,
                limit: listener.max_connections.map(ConnLimit::new),
            });
        }
        Ok(Server {
            config,
            acceptors,
            stats: Arc::new(Stats::default()),
        })
    }

    /// The bound address of every listener, in configuration order (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.acceptors.iter().map(|a| a.local_addr).collect()
    }

    /// The server's counters; they stay readable after `serve` returns.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves clients until `shutdown` completes, then shuts down gracefully (see
    /// [`crate::shutdown`]) and returns once every task has ended.
    pub async fn serve<F: Future<Output = ()>>(self, shutdown: F) -> Result<(), ServerError> {
        let Server {
            config,
            acceptors,
            stats,
        } = self;
        let server_reference = config.shutdown.server_reference()?;
        let stop = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let tracker = TaskTracker::new();

        let (events_tx, events_rx) = mpsc::channel(engine::EVENT_QUEUE);
        let broker = Broker::new(config.limits.broker_config());
        let engine = Engine::new(broker, config.limits.max_outbound_queue, stats.clone());
        let mut engine_task = tokio::spawn(engine::run(
            engine,
            events_rx,
            stop.clone(),
            server_reference,
        ));

        let ctx = Arc::new(AcceptContext {
            shared: Arc::new(ConnShared {
                engine: events_tx,
                hard_stop: hard_stop.clone(),
                max_packet_size: config.limits.max_packet_size,
            }),
            global_limit: ConnLimit::new(config.limits.max_connections),
            next_id: AtomicU64::new(1),
            stats,
            stop: stop.clone(),
            tracker: tracker.clone(),
        });
        for acceptor in acceptors {
            tracker.spawn(listener::accept_loop(acceptor, ctx.clone()));
        }
        // From here on only the listeners and connections hold the engine's sender, so the
        // engine ends exactly when they all have.
        drop(ctx);

        tokio::pin!(shutdown);
        let engine_ended = tokio::select! {
            _ = &mut shutdown => None,
            ended = &mut engine_task => Some(ended),
        };
        stop.cancel();
        tracker.close();
        if let Some(ended) = engine_ended {
            // Nobody is left to route packets: drop every connection now.
            hard_stop.cancel();
            tracker.wait().await;
            let reason = match ended {
                Err(e) => e.to_string(),
                Ok(()) => "the engine stopped while listeners were running".to_owned(),
            };
            error!(%reason, "engine failed; all connections dropped");
            return Err(ServerError::EngineFailed(reason));
        }
        info!("shutting down");
        shutdown::wait_for_tasks(&tracker, config.shutdown.grace_period(), &hard_stop).await;
        engine_task
            .await
            .map_err(|e| ServerError::EngineFailed(e.to_string()))?;
        info!("shutdown complete");
        Ok(())
    }
}

/// Binds `config`'s listeners and serves until `shutdown` completes.
pub async fn run<F: Future<Output = ()>>(config: Config, shutdown: F) -> Result<(), ServerError> {
    Server::bind(config).await?.serve(shutdown).await
}
