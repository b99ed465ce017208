//! Smoke tests of the IO shell alone, in-process: binding port 0, the connection limits and
//! graceful shutdown. Nothing here depends on the broker answering MQTT.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_server::config::{ConfigError, ListenerConfig, ListenerKind};
use tidegate_server::{Config, Server, ServerError, Stats};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(5);

struct Running {
    addrs: Vec<SocketAddr>,
    stats: Arc<Stats>,
    stop: oneshot::Sender<()>,
    serve: JoinHandle<Result<(), ServerError>>,
}

fn config(listeners: Vec<ListenerConfig>) -> Config {
    let mut config = Config {
        listeners,
        ..Config::default()
    };
    config.shutdown.grace_period_ms = 2_000;
    // In-process servers of one test binary would share `./data`: these tests need no store.
    config.persistence = tidegate_server::config::Persistence::Memory;
    config
}

fn local(name: &str, max_connections: Option<usize>) -> ListenerConfig {
    ListenerConfig {
        name: Some(name.to_owned()),
        max_connections,
        ..ListenerConfig::new(ListenerKind::Tcp, "127.0.0.1:0")
    }
}

async fn start(config: Config) -> Running {
    let server = Server::bind(config).await.unwrap();
    let addrs = server.local_addrs();
    let stats = server.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let serve = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Running {
        addrs,
        stats,
        stop,
        serve,
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads until the server closes the socket; fails if it stays open past `PATIENCE` or sends
/// anything (the shell itself never writes on a connection the broker has not answered).
async fn expect_closed(socket: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(PATIENCE, socket.read(&mut buf)).await {
        Ok(Ok(0)) => {}
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(Ok(n)) => panic!("expected a close, got {n} bytes"),
        Ok(Err(e)) => panic!("expected a close, got {e}"),
        Err(_) => panic!("the server did not close the socket"),
    }
}

async fn expect_open(socket: &mut TcpStream) {
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf)).await;
    assert!(read.is_err(), "the socket should stay open, got {read:?}");
}

async fn stop(running: Running) {
    running.stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, running.serve)
        .await
        .expect("serve returns within the grace period")
        .unwrap()
        .unwrap();
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn global_connection_limit_refuses_the_extra_socket() {
    let mut config = config(vec![local("only", None)]);
    config.limits.max_connections = 2;
    let running = start(config).await;
    let addr = running.addrs[0];
    assert_ne!(addr.port(), 0, "port 0 is resolved to the bound port");

    let mut first = connect(addr).await;
    let second = connect(addr).await;
    eventually("two accepted connections", || {
        running.stats.connections_accepted() == 2
    })
    .await;
    let mut third = connect(addr).await;
    expect_closed(&mut third).await;
    assert_eq!(running.stats.connections_refused(), 1);
    expect_open(&mut first).await;

    // The slot of a client that left is free again once its task has ended.
    drop(second);
    let deadline = Instant::now() + PATIENCE;
    let mut replacement = loop {
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        let mut socket = connect(addr).await;
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf)).await {
            Err(_) => break socket,
            Ok(Ok(0)) => {}
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(other) => panic!("unexpected read on a fresh connection: {other:?}"),
        }
    };

    stop(running).await;
    expect_closed(&mut first).await;
    expect_closed(&mut replacement).await;
}

#[tokio::test]
async fn listener_limit_applies_per_listener() {
    let running = start(config(vec![local("limited", Some(1)), local("open", None)])).await;
    let (limited, open) = (running.addrs[0], running.addrs[1]);
    let mut first = connect(limited).await;
    eventually("first accepted", || {
        running.stats.connections_accepted() == 1
    })
    .await;
    let mut refused = connect(limited).await;
    expect_closed(&mut refused).await;
    assert_eq!(running.stats.connections_refused(), 1);
    let mut other = connect(open).await;
    eventually("other listener accepts", || {
        running.stats.connections_accepted() == 2
    })
    .await;
    expect_open(&mut first).await;
    expect_open(&mut other).await;
    stop(running).await;
}

#[tokio::test]
async fn shutdown_closes_connections_stops_accepting_and_returns() {
    let running = start(config(vec![local("only", None)])).await;
    let addr = running.addrs[0];
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(addr).await);
    }
    eventually("three accepted", || {
        running.stats.connections_accepted() == 3
    })
    .await;
    let started = Instant::now();
    stop(running).await;
    // No client sent CONNECT, so none needs a DISCONNECT: they are closed well within the
    // grace period, not dropped at its end.
    assert!(started.elapsed() < Duration::from_millis(1_500));
    for client in &mut clients {
        expect_closed(client).await;
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listening socket is closed after serve returns"
    );
}

#[tokio::test]
async fn an_invalid_http_table_fails_before_binding() {
    // A free port that nothing may bind while the check runs: the error must come first.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    drop(taken);
    let mut config = config(vec![ListenerConfig::new(ListenerKind::Http, &addr)]);
    config.http.publish_tokens = vec!["same".into()];
    config.http.admin_tokens = vec!["same".into()];
    let err = Server::bind(config).await.unwrap_err();
    assert!(
        matches!(err, ServerError::Config(ConfigError::Http(_))),
        "{err}"
    );
    // Nothing was bound: the address is still free.
    std::net::TcpListener::bind(&addr).unwrap();
}

#[tokio::test]
async fn address_in_use_is_a_bind_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = Server::bind(config(vec![ListenerConfig::new(ListenerKind::Tcp, &addr)]))
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::Bind { .. }), "{err}");
}
