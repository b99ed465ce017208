//! An in-process server for the transport suites: bound on port 0 from a TOML configuration,
//! with its counters and its control handle (drain a listener, reload certificates) at hand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_server::{Config, Server, ServerControl, ServerError, Stats};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in this test's runtime.
pub(crate) struct Running {
    /// The TCP-based listeners' addresses, in configuration order.
    pub(crate) addrs: Vec<SocketAddr>,
    /// The HTTP API listeners' addresses, in configuration order.
    pub(crate) http_addrs: Vec<SocketAddr>,
    /// Its counters.
    pub(crate) stats: Arc<Stats>,
    /// Drain and reload.
    pub(crate) control: ServerControl,
    stop: Option<oneshot::Sender<()>>,
    serve: Option<JoinHandle<Result<(), ServerError>>>,
    /// The server's own `data_dir`: servers of one test process must not share a store.
    _data: tempfile::TempDir,
}

/// Starts a server from `toml` (its listeners should bind port 0) with a fresh `data_dir`.
pub(crate) async fn start(toml: &str) -> Running {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::from_toml_str(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    config.data_dir = data.path().to_path_buf();
    let server = Server::bind(config).await.unwrap();
    let addrs = server.local_addrs();
    let http_addrs = server.http_addrs();
    let stats = server.stats();
    let control = server.control();
    let (stop, stopped) = oneshot::channel::<()>();
    let serve = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Running {
        addrs,
        http_addrs,
        stats,
        control,
        stop: Some(stop),
        serve: Some(serve),
        _data: data,
    }
}

impl Running {
    /// Stops the server and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serve) = self.serve.take() {
            tokio::time::timeout(Duration::from_secs(10), serve)
                .await
                .expect("serve returns")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits until `check` holds, for at most five seconds.
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
