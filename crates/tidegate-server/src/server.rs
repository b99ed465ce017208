//! The server: binds the listeners, starts the engine, serves until told to stop.
//!
//! Place in the data flow: it wires the pieces together: listeners → transport steps →
//! connection tasks → engine task (see [`crate`] for the picture) and runs the shutdown
//! sequence of [`crate::shutdown`]. Binding and serving are separate steps so a caller (a test)
//! can bind port 0 and learn the real address before clients connect.
//!
//! Every listener has its own tokens and task tracker under the server's: `stop` (stop
//! accepting), `drain` (say goodbye to its clients) and `hard_stop` (drop them), so one
//! listener can be drained with [`ServerControl::drain_listener`] while the others keep
//! serving; a server-wide shutdown cancels the parents.

use crate::api::GatewayHandle;
use crate::auth::{self, Authenticator};
use crate::config::{Config, ConfigError, ListenerConfig, ListenerKind};
use crate::connection::ConnShared;
use crate::engine::{self, Engine, EngineEvent};
use crate::http::HttpAcceptor;
use crate::listener::{self, AcceptContext, AcceptRate, Acceptor, Bound, ConnLimit};
use crate::reload;
use crate::shutdown;
use crate::stats::Stats;
use crate::storage::{Storage, Writer};
use crate::tenant_admin::TenantAdmin;
use crate::transport::tls::{self, TlsSetup};
use crate::transport::{Steps, unix};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tidegate_protocol::Utf8;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

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
    /// A TLS listener's certificate, key or client CA cannot be used.
    #[error("listener {listener}: {source}")]
    Tls {
        /// The listener's name.
        listener: String,
        /// What is wrong.
        source: tls::TlsError,
    },
    /// A unix listener's socket file could not be set up.
    #[error("listener {listener}: {reason}")]
    Unix {
        /// The listener's name.
        listener: String,
        /// What failed.
        reason: String,
    },
    /// No listener has that name.
    #[error("no listener is named {0:?}")]
    UnknownListener(String),
    /// The engine task panicked: a bug in the broker core. Every connection was dropped.
    #[error("the broker engine failed: {0}")]
    EngineFailed(String),
    /// The store under `data_dir` could not be opened (the message says what to do).
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The generated HTTP API tokens could not be read or written.
    #[error(transparent)]
    HttpTokens(#[from] crate::http_tokens::TokenError),
}

/// One listener's handles for draining it alone.
#[derive(Debug, Clone)]
struct ListenerControl {
    stop: CancellationToken,
    draining: Arc<AtomicBool>,
    hard_stop: CancellationToken,
    tracker: TaskTracker,
}

/// Operations on a running server; cheap to clone, usable from any task.
#[derive(Debug, Clone)]
pub struct ServerControl {
    listeners: Arc<HashMap<String, ListenerControl>>,
    tls: Arc<[Arc<TlsSetup>]>,
}

impl ServerControl {
    /// Re-reads every TLS listener's certificate, key and client CA now, as SIGHUP does;
    /// returns how many listeners failed (those keep their previous certificate).
    pub fn reload_certificates(&self) -> usize {
        reload::reload_all(&self.tls)
    }

    /// Drains one listener while the others keep serving: it stops accepting, every MQTT 5
    /// client on it gets DISCONNECT 0x8B (Server shutting down, with `server_reference`), and
    /// its connections are closed within `shutdown.grace_period_ms`. Returns once they are all
    /// gone. Sessions stay, so the clients can resume on another listener or server.
    pub async fn drain_listener(&self, name: &str) -> Result<(), ServerError> {
        let listener = self
            .listeners
            .get(name)
            .ok_or_else(|| ServerError::UnknownListener(name.to_owned()))?;
        info!(listener = %name, open = listener.tracker.len(), "draining listener");
        listener.stop.cancel();
        listener.draining.store(true, Ordering::Release);
        listener.hard_stop.cancel();
        listener.tracker.close();
        // Each connection bounds its own goodbye by the grace period.
        listener.tracker.wait().await;
        info!(listener = %name, "listener drained");
        Ok(())
    }
}

/// A server with its listeners bound, ready to [`serve`](Server::serve).
#[derive(Debug)]
pub struct Server {
    config: Config,
    acceptors: Vec<Acceptor>,
    tls: Vec<Arc<TlsSetup>>,
    stats: Arc<Stats>,
    engine_rx: mpsc::Receiver<EngineEvent>,
    /// Parent of every listener's `stop`.
    stop: CancellationToken,
    /// Parent of every listener's `hard_stop`.
    hard_stop: CancellationToken,
    /// Every listener's connection tasks are tracked here too, for the server-wide shutdown.
    tracker: TaskTracker,
    control: ServerControl,
    /// The broker restored from the store, and the store's writer.
    storage: Storage,
    /// The bound HTTP listeners; their router is built in `serve`.
    http: Vec<PendingHttp>,
    /// The engine's sender, for the HTTP face (dropped in `serve` when there is none).
    engine_tx: mpsc::Sender<EngineEvent>,
    /// The live tenants, for the admin API. It holds a sender of the store's writer thread, so
    /// `serve` drops it with `engine_tx` (the engine closes the writer once they are gone).
    tenant_admin: Arc<TenantAdmin>,
    /// The CONNECT checks and the tenants' byte buckets, which a tenant change updates.
    authenticator: Arc<Authenticator>,
}

/// A bound HTTP listener waiting for the HTTP face.
#[derive(Debug)]
struct PendingHttp {
    name: Arc<str>,
    socket: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<TlsSetup>>,
    limit: Option<Arc<ConnLimit>>,
    rate: Option<AcceptRate>,
    handshake_timeout: std::time::Duration,
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// What [`Server::bind`] builds per listener beside the socket.
struct Built {
    steps: Steps,
    tls: Option<Arc<TlsSetup>>,
}

impl Server {
    /// Validates `config`, loads the TLS material and binds every listener.
    pub async fn bind(mut config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        if config.listeners.iter().any(|l| l.kind.is_http()) {
            crate::http_tokens::ensure(&mut config.http, &config.data_dir)?;
        }
        // Before any socket is bound: a store that cannot be opened stops the start.
        let storage = Storage::open(&config).await?;
        tls::install_default_provider();
        let server_reference = config.shutdown.server_reference()?;
        let stats = Arc::new(Stats::default());
        // Compiled once (hashes parsed, keys and JWKS files read): a bad tenant stops the start.
        // The file's tenants, with what the admin API stored over them (see tenant_admin).
        let stored =
            crate::storage::load_tenants(storage.writer.as_ref(), &config.data_dir).await?;
        let tenant_store = storage.writer.as_ref().and_then(Writer::tenants);
        let tenant_admin = Arc::new(
            TenantAdmin::start(&config.tenants, stored, tenant_store)
                .map_err(|e| ServerError::Config(e.into()))?,
        );
        auth::warn_anonymous(
            &tenant_admin.registry().current(),
            !config.tenants.is_empty(),
        );
        let registry = tenant_admin.registry().clone();
        let authenticator = Arc::new(Authenticator::new(registry, &config.auth, stats.clone()));
        let (engine_tx, engine_rx) = mpsc::channel(engine::EVENT_QUEUE);
        let stop = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut acceptors = Vec::with_capacity(config.listeners.len());
        let mut tls = Vec::new();
        let mut controls = HashMap::new();
        let mut http = Vec::new();
        for listener in &config.listeners {
            let name = listener.name();
            if listener.kind.is_http() {
                let (pending, control) = bind_http(listener, &name, &stop, &hard_stop).await?;
                tls.extend(pending.tls.clone());
                http.push(pending);
                controls.insert(name, control);
                continue;
            }
            let built = build_steps(listener, &name, config.limits.max_packet_size)?;
            tls.extend(built.tls);
            let (socket, local_addr) = bind_socket(listener, &name).await?;
            let control = ListenerControl {
                stop: stop.child_token(),
                draining: Arc::new(AtomicBool::new(false)),
                hard_stop: hard_stop.child_token(),
                tracker: TaskTracker::new(),
            };
            let shared = Arc::new(ConnShared {
                engine: engine_tx.clone(),
                hard_stop: control.hard_stop.clone(),
                draining: control.draining.clone(),
                drain_grace: config.shutdown.grace_period(),
                server_reference: server_reference.clone(),
                max_packet_size: config.limits.max_packet_size,
                identity_as: listener
                    .identity_from
                    .map(|_| listener.identity_as.unwrap_or_default()),
                stats: stats.clone(),
                auth: authenticator.clone(),
                tenant: listener.tenant.as_deref().map(Arc::from),
            });
            acceptors.push(Acceptor {
                name: name.as_str().into(),
                socket,
                local_addr,
                limit: listener.max_connections.map(ConnLimit::new),
                rate: listener
                    .max_accept_rate
                    .map(|rate| AcceptRate::new(rate, Instant::now())),
                steps: Arc::new(built.steps),
                shared,
                stop: control.stop.clone(),
                tracker: control.tracker.clone(),
            });
            controls.insert(name, control);
        }
        let control = ServerControl {
            listeners: Arc::new(controls),
            tls: tls.iter().cloned().collect(),
        };
        Ok(Server {
            config,
            acceptors,
            tls,
            stats,
            engine_rx,
            stop,
            hard_stop,
            tracker,
            control,
            storage,
            http,
            engine_tx,
            tenant_admin,
            authenticator,
        })
    }

    /// The bound address of every TCP-based listener, in configuration order (port 0
    /// resolved); unix listeners have none and are skipped.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.acceptors.iter().filter_map(|a| a.local_addr).collect()
    }

    /// The bound address of every HTTP API listener, in configuration order.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http.iter().map(|h| h.local_addr).collect()
    }

    /// The server's counters; they stay readable after `serve` returns.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle to drain single listeners and reload certificates while the server runs.
    pub fn control(&self) -> ServerControl {
        self.control.clone()
    }

    /// Serves clients until `shutdown` completes, then shuts down gracefully (see
    /// [`crate::shutdown`]) and returns once every task has ended. Certificates are reloaded
    /// on SIGHUP and when their files change.
    pub async fn serve<F: Future<Output = ()>>(self, shutdown: F) -> Result<(), ServerError> {
        let Server {
            config,
            acceptors,
            tls,
            stats,
            engine_rx,
            stop,
            hard_stop,
            tracker,
            control: _,
            storage,
            http,
            engine_tx,
            tenant_admin,
            authenticator,
        } = self;
        let server_reference: Option<Utf8> = config.shutdown.server_reference()?;
        let mut storage = storage;
        // Every tenant's quotas before the first event: restored sessions get their tenant's
        // queue limit, and the tenant rates apply from the first message.
        let now = std::time::Instant::now();
        for tenant in tenant_admin.registry().current().iter() {
            let limits = Arc::new(crate::auth::tenant_limits(tenant.quotas()));
            storage.broker.set_tenant_limits(now, tenant.id(), limits);
        }
        let engine = Engine::with_storage(storage, config.limits.max_outbound_queue, stats.clone());
        let mut engine_task = tokio::spawn(engine::run(
            engine,
            engine_rx,
            stop.clone(),
            server_reference,
        ));
        if !tls.is_empty() {
            tracker.spawn(reload::watch(tls, stop.clone()));
        }
        let ctx = Arc::new(AcceptContext {
            global_limit: ConnLimit::new(config.limits.max_connections),
            next_id: AtomicU64::new(1),
            stats,
            tracker: tracker.clone(),
        });
        for acceptor in acceptors {
            tracker.spawn(listener::accept_loop(acceptor, ctx.clone()));
        }
        let ready = Arc::new(AtomicBool::new(false));
        if !http.is_empty() {
            let gateway = GatewayHandle::new(
                engine_tx.clone(),
                ctx.stats.clone(),
                ready.clone(),
                config.limits.max_outbound_queue,
                tenant_admin.clone(),
                authenticator.clone(),
            );
            let face =
                tidegate_http::Http::new(Arc::new(gateway), config.http.clone(), stop.clone());
            for pending in http {
                let acceptor = HttpAcceptor {
                    name: pending.name,
                    socket: pending.socket,
                    tls: pending.tls,
                    limit: pending.limit,
                    rate: pending.rate,
                    handshake_timeout: pending.handshake_timeout,
                    router: face.router(),
                    stop: pending.stop,
                    grace: config.shutdown.grace_period(),
                    tracker: pending.tracker.clone(),
                    server_tracker: tracker.clone(),
                    stats: ctx.stats.clone(),
                };
                let tracked = pending
                    .tracker
                    .track_future(crate::http::accept_loop(acceptor));
                tracker.spawn(tracked);
            }
        }
        drop(engine_tx);
        drop(tenant_admin);
        ready.store(true, Ordering::Release);
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

/// The transport steps of a listener's kind, with its TLS material loaded; a compressed
/// WebSocket message may inflate to `max_packet_size` bytes.
fn build_steps(
    listener: &ListenerConfig,
    name: &str,
    max_packet_size: u32,
) -> Result<Built, ServerError> {
    let tls = if listener.kind.uses_tls() {
        let setup = TlsSetup::load(listener).map_err(|source| ServerError::Tls {
            listener: name.to_owned(),
            source,
        })?;
        Some(Arc::new(setup))
    } else {
        None
    };
    Ok(Built {
        steps: Steps {
            proxy_protocol: listener.proxy_protocol,
            tls: tls.clone(),
            ws_path: listener
                .kind
                .uses_websocket()
                .then(|| listener.ws_path().into_boxed_str()),
            ws_deflate: listener.permessage_deflate().then_some(max_packet_size),
            timeout: listener.handshake_timeout(),
        },
        tls,
    })
}

async fn bind_socket(
    listener: &ListenerConfig,
    name: &str,
) -> Result<(Bound, Option<SocketAddr>), ServerError> {
    match (listener.kind, &listener.bind) {
        (ListenerKind::Unix, _) => {
            let socket = unix::bind(listener).map_err(|e| ServerError::Unix {
                listener: name.to_owned(),
                reason: e.to_string(),
            })?;
            Ok((Bound::Unix(socket), None))
        }
        (_, Some(address)) => {
            let bind_error = |source| ServerError::Bind {
                listener: name.to_owned(),
                address: address.clone(),
                source,
            };
            let socket = TcpListener::bind(address.as_str())
                .await
                .map_err(bind_error)?;
            let local_addr = socket.local_addr().map_err(bind_error)?;
            Ok((Bound::Tcp(socket), Some(local_addr)))
        }
        (kind, None) => {
            // validate() requires `bind` for every kind but unix; an error, not a panic.
            warn!(listener = %name, %kind, "listener without an address");
            Err(ConfigError::MissingListenerKey {
                listener: name.to_owned(),
                kind,
                key: "bind",
            }
            .into())
        }
    }
}

/// Binds an `http` / `https` listener and its control handles.
async fn bind_http(
    listener: &ListenerConfig,
    name: &str,
    stop: &CancellationToken,
    hard_stop: &CancellationToken,
) -> Result<(PendingHttp, ListenerControl), ServerError> {
    let tls = match listener.kind {
        ListenerKind::Https => Some(Arc::new(TlsSetup::load(listener).map_err(|source| {
            ServerError::Tls {
                listener: name.to_owned(),
                source,
            }
        })?)),
        _ => None,
    };
    let (socket, local_addr) = match bind_socket(listener, name).await? {
        (Bound::Tcp(socket), Some(addr)) => (socket, addr),
        _ => {
            return Err(ConfigError::MissingListenerKey {
                listener: name.to_owned(),
                kind: listener.kind,
                key: "bind",
            }
            .into());
        }
    };
    let control = ListenerControl {
        stop: stop.child_token(),
        draining: Arc::new(AtomicBool::new(false)),
        hard_stop: hard_stop.child_token(),
        tracker: TaskTracker::new(),
    };
    let pending = PendingHttp {
        name: name.into(),
        socket,
        local_addr,
        tls,
        limit: listener.max_connections.map(ConnLimit::new),
        rate: listener
            .max_accept_rate
            .map(|rate| AcceptRate::new(rate, Instant::now())),
        handshake_timeout: listener.handshake_timeout(),
        stop: control.stop.clone(),
        tracker: control.tracker.clone(),
    };
    Ok((pending, control))
}

/// Binds `config`'s listeners and serves until `shutdown` completes.
pub async fn run<F: Future<Output = ()>>(config: Config, shutdown: F) -> Result<(), ServerError> {
    Server::bind(config).await?.serve(shutdown).await
}
