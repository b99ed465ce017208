//! Black-box harness shared by the end-to-end suites: it starts the real `tidegate` binary the
//! way a user would (`tidegate serve [--config FILE] --listen tcp://127.0.0.1:PORT`) on a free
//! loopback port, waits until the port accepts connections, and kills the process on drop.
//!
//! Every test binary under `tests/` compiles this module and uses only part of it, so unused
//! helpers are expected in any one binary.
#![allow(dead_code)]

pub(crate) mod certs;
pub(crate) mod http;
pub(crate) mod inproc;
pub(crate) mod raw;
pub(crate) mod tenants;
pub(crate) mod v4;
pub(crate) mod v5;

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long any single expected event may take before a test fails. Generous for a debug build
/// on a loaded 2-core machine, short enough that a missing event fails the test quickly.
pub(crate) const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a test waits to conclude that something does *not* arrive. The spec gives no event
/// for absence, so this is the one place a fixed wait is unavoidable.
pub(crate) const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// How long the binary gets to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `tidegate serve` process, owned by one test.
pub(crate) struct Broker {
    /// The server process; killed on drop.
    child: Child,
    /// The loopback port it listens on.
    port: u16,
    /// Holds the config file, the server's log and its working directory (so a `data_dir`
    /// relative path stays inside the test's sandbox).
    dir: tempfile::TempDir,
    /// Where stdout and stderr of the server go, printed when a test fails.
    log_path: PathBuf,
}

impl Broker {
    /// Starts the server with its default limits.
    pub(crate) fn start() -> Broker {
        Broker::spawn(None)
    }

    /// Starts the server with `config` (TOML, e.g. a `[limits]` section) written to a file and
    /// passed with `--config`.
    pub(crate) fn with_config(config: &str) -> Broker {
        Broker::spawn(Some(config))
    }

    /// Starts the server with a configuration file that declares its own listeners: a tcp
    /// listener on the harness's port first (for the readiness check and [`Broker::addr`]),
    /// then `listeners` (TOML `[[listeners]]` entries), and no `--listen` flag, which would
    /// replace them.
    pub(crate) fn with_listeners(listeners: &str) -> Broker {
        Broker::spawn(Some(&format!("{LISTENERS_MARK}{listeners}")))
    }

    fn spawn(config: Option<&str>) -> Broker {
        // The free port is found by binding port 0 and releasing it; another process could take
        // it in between, so a start that fails before listening is retried on a new port.
        let mut last_log = String::new();
        for _ in 0..3 {
            match Broker::try_spawn(config) {
                Ok(broker) => return broker,
                Err(log) => last_log = log,
            }
        }
        panic!("tidegate did not start listening; its output:\n{last_log}");
    }

    fn try_spawn(config: Option<&str>) -> Result<Broker, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let log_path = dir.path().join("tidegate.log");
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
        cmd.arg("serve");
        let own_listeners = config.and_then(|c| c.strip_prefix(LISTENERS_MARK));
        if let Some(listeners) = own_listeners {
            let path = dir.path().join("tidegate.toml");
            let text =
                format!("[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:{port}\"\n{listeners}");
            fs::write(&path, text).map_err(|e| e.to_string())?;
            cmd.arg("--config").arg(&path);
        } else {
            if let Some(config) = config {
                let path = dir.path().join("tidegate.toml");
                fs::write(&path, config).map_err(|e| e.to_string())?;
                cmd.arg("--config").arg(&path);
            }
            cmd.arg("--listen").arg(format!("tcp://127.0.0.1:{port}"));
        }
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot spawn tidegate: {e}"))?;
        let mut broker = Broker {
            child,
            port,
            dir,
            log_path,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("exited with {status}\n{}", broker.log()));
            }
            if TcpStream::connect_timeout(&broker.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not listening after {STARTUP_TIMEOUT:?}\n{}",
                    broker.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port the server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Everything the server printed so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's working directory (its relative `data_dir` lives here).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Waits until the log, without its colour codes, contains `needle`, for at most
    /// [`RECV_TIMEOUT`]; returns that log.
    pub(crate) async fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            let log = strip_ansi(&self.log());
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the log never said {needle:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM, as a service manager would on stop.
    pub(crate) fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends SIGHUP, as `systemctl reload` would.
    pub(crate) fn sighup(&self) {
        self.signal("HUP");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit and returns how it exited.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A server that is still running at the end of a test is killed, never left behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- tidegate output (port {}) ----\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), which the log formatter adds.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Marks a configuration passed to [`Broker::with_listeners`].
const LISTENERS_MARK: &str = "#tidegate-test: own listeners\n";

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A name unique within this test process, so that tests sharing a server never collide on
/// client ids or topics.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
