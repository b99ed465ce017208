//! Smoke test: every scenario for about a second, at low scale, against a real broker, checking
//! that QoS 1 and 2 lose nothing (the http scenario: over the gateway's HTTP listener too).
//!
//! The broker is the real `tidegate` binary (crate `tidegate-server`), taken from the same
//! target directory as this crate's binary and built with cargo first, so the test always runs
//! against the current source. Setting `TIDEGATE_BENCH_SMOKE_URL` (e.g.
//! `tcp://127.0.0.1:18830`) runs the same checks against another broker instead, such as a
//! Mosquitto started by hand.

use serde_json::Value;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests share two cores with the brokers they start: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn bench_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tidegate-bench"))
}

/// Builds `tidegate` into the target directory this test binary came from and returns its path.
fn tidegate_exe() -> PathBuf {
    let bench = bench_exe();
    let profile_dir = bench.parent().expect("binary has a directory");
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "tidegate-server",
        "--bin",
        "tidegate",
        "--target-dir",
    ])
    .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cannot run cargo to build tidegate");
    assert!(
        status.success(),
        "cargo build -p tidegate-server --bin tidegate failed"
    );
    let exe = profile_dir.join("tidegate");
    assert!(exe.exists(), "{} missing after building it", exe.display());
    exe
}

/// A broker for one test: the URL to use, and the process to stop afterwards (none when the
/// broker was given through `TIDEGATE_BENCH_SMOKE_URL`).
struct Broker {
    url: String,
    /// The HTTP listener and a publish token for it (http scenario only).
    http: Option<(String, String)>,
    child: Option<Child>,
    /// A Unix socket file to remove afterwards.
    socket: Option<PathBuf>,
    /// The broker's own data directory, so parallel brokers never share a store (and nothing
    /// is left in the source tree); removed on drop, after the child is killed.
    _data_dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// The transports the smoke tests reach the broker through.
#[derive(Clone, Copy)]
enum Via {
    Tcp,
    Unix,
    WebSocket,
}

fn broker() -> Broker {
    broker_via(Via::Tcp)
}

fn broker_via(via: Via) -> Broker {
    if let Ok(url) = std::env::var("TIDEGATE_BENCH_SMOKE_URL") {
        return Broker {
            url,
            http: None,
            child: None,
            socket: None,
            _data_dir: tempfile::tempdir().expect("temporary data dir"),
        };
    }
    let exe = tidegate_exe();
    let port = free_port();
    let mut socket = None;
    let (url, listen) = match via {
        Via::Tcp => (
            format!("tcp://127.0.0.1:{port}"),
            format!("tcp://127.0.0.1:{port}"),
        ),
        Via::WebSocket => (
            format!("ws://127.0.0.1:{port}/mqtt"),
            format!("ws://127.0.0.1:{port}"),
        ),
        Via::Unix => {
            let path =
                std::env::temp_dir().join(format!("tgb-smoke-{}-{port}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let url = format!("unix://{}", path.display());
            socket = Some(path);
            (url.clone(), url)
        }
    };
    // A TCP listener for readiness checks, whatever the transport under test.
    let probe = format!("tcp://127.0.0.1:{}", free_port());
    let probe_port: u16 = probe
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let child = start_tidegate(&exe, &[listen, probe], None, data_dir.path(), &[probe_port]);
    Broker {
        url,
        http: None,
        child: Some(child),
        socket,
        _data_dir: data_dir,
    }
}

/// The publish token the http smoke tests configure.
const SMOKE_TOKEN: &str = "tgb-smoke-token";

/// A broker with an MQTT listener and an HTTP listener whose `[http] publish_tokens` hold
/// [`SMOKE_TOKEN`]; `TIDEGATE_BENCH_SMOKE_URL` with `TIDEGATE_BENCH_SMOKE_HTTP_URL` and
/// `TIDEGATE_BENCH_SMOKE_HTTP_TOKEN` name another one instead.
fn http_broker() -> Broker {
    if let Ok(url) = std::env::var("TIDEGATE_BENCH_SMOKE_URL") {
        let http = std::env::var("TIDEGATE_BENCH_SMOKE_HTTP_URL")
            .expect("TIDEGATE_BENCH_SMOKE_HTTP_URL (with TIDEGATE_BENCH_SMOKE_URL)");
        let token = std::env::var("TIDEGATE_BENCH_SMOKE_HTTP_TOKEN")
            .expect("TIDEGATE_BENCH_SMOKE_HTTP_TOKEN (with TIDEGATE_BENCH_SMOKE_URL)");
        return Broker {
            url,
            http: Some((http, token)),
            child: None,
            socket: None,
            _data_dir: tempfile::tempdir().expect("temporary data dir"),
        };
    }
    let exe = tidegate_exe();
    let (mqtt_port, http_port) = (free_port(), free_port());
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let config = data_dir.path().join("tidegate.toml");
    std::fs::write(
        &config,
        format!("[http]\npublish_tokens = [\"{SMOKE_TOKEN}\"]\n"),
    )
    .expect("write the configuration");
    let child = start_tidegate(
        &exe,
        &[
            format!("tcp://127.0.0.1:{mqtt_port}"),
            format!("http://127.0.0.1:{http_port}"),
        ],
        Some(&config),
        data_dir.path(),
        &[mqtt_port, http_port],
    );
    Broker {
        url: format!("tcp://127.0.0.1:{mqtt_port}"),
        http: Some((
            format!("http://127.0.0.1:{http_port}"),
            SMOKE_TOKEN.to_string(),
        )),
        child: Some(child),
        socket: None,
        _data_dir: data_dir,
    }
}

/// Starts `tidegate serve` with these listeners and waits until every port in `ready_ports`
/// accepts connections.
fn start_tidegate(
    exe: &std::path::Path,
    listen: &[String],
    config: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    ready_ports: &[u16],
) -> Child {
    let mut cmd = Command::new(exe);
    cmd.arg("serve");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    for l in listen {
        cmd.args(["--listen", l]);
    }
    let mut child = cmd
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if ready_ports
            .iter()
            .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("tidegate exited with {status} before listening:\n{err}");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tidegate did not listen on {listen:?} within 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_bench(args: &[&str]) -> Output {
    Command::new(bench_exe())
        .args(args)
        .output()
        .expect("cannot run tidegate-bench")
}

/// Runs a scenario with `--json --quiet` and returns the parsed report.
fn report(broker: &Broker, scenario: &str, extra: &[&str]) -> Value {
    let mut args = vec![scenario, "--url", &broker.url, "--json", "--quiet"];
    args.extend_from_slice(extra);
    let out = run_bench(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tidegate-bench {args:?} failed ({}):\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer at {path} in {v:#}"))
}

/// Checks a message scenario: everything sent arrived, once, nothing refused.
fn check_messages(v: &Value, qos: u8) {
    let sent = u(v, "/messages/sent");
    assert!(sent > 0, "nothing was sent: {v:#}");
    let expected = u(v, "/messages/expected_deliveries");
    assert!(expected >= sent, "expected deliveries below sent: {v:#}");
    assert!(
        u(v, "/messages/delivered_in_window") > 0,
        "nothing delivered in the window: {v:#}"
    );
    assert_eq!(u(v, "/messages/unexpected"), 0, "{v:#}");
    assert_eq!(
        v.pointer("/messages/errors"),
        Some(&Value::Array(vec![])),
        "{v:#}"
    );
    if qos > 0 {
        assert_eq!(
            u(v, "/messages/streams/lost"),
            0,
            "QoS {qos} lost messages: {v:#}"
        );
        assert_eq!(u(v, "/messages/streams/unique"), expected, "{v:#}");
        assert_eq!(u(v, "/messages/unacked"), 0, "{v:#}");
        assert_eq!(u(v, "/messages/rejected"), 0, "{v:#}");
    }
    if qos == 2 {
        assert_eq!(
            u(v, "/messages/streams/duplicates"),
            0,
            "QoS 2 duplicated: {v:#}"
        );
    }
    assert!(
        u(v, "/messages/latency/count") > 0,
        "no latency recorded: {v:#}"
    );
}

const SHORT: &[&str] = &["--duration", "1s", "--warmup", "200ms", "--drain", "5s"];

fn message_run(scenario: &str, qos: &str, protocol: &str, extra: &[&str]) {
    message_run_via(Via::Tcp, scenario, qos, protocol, extra);
}

fn message_run_via(via: Via, scenario: &str, qos: &str, protocol: &str, extra: &[&str]) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = broker_via(via);
    let mut args = vec!["--qos", qos, "--protocol", protocol];
    args.extend_from_slice(SHORT);
    args.extend_from_slice(extra);
    let v = report(&b, scenario, &args);
    check_messages(&v, qos.parse().expect("qos"));
}

#[test]
fn pairs_qos1_v5_open_loop() {
    message_run("pairs", "1", "5", &["-n", "4", "--rate", "800"]);
}

#[test]
fn pairs_qos2_v311_closed_loop() {
    message_run(
        "pairs",
        "2",
        "3.1.1",
        &["-n", "3", "--rate", "0", "--window", "8"],
    );
}

#[test]
fn pairs_qos0_closed_loop_runs() {
    message_run(
        "pairs",
        "0",
        "5",
        &["-n", "2", "--rate", "0", "--window", "8"],
    );
}

#[test]
fn fanin_qos1_v311() {
    message_run("fanin", "1", "3.1.1", &["-n", "4", "--rate", "800"]);
}

#[test]
fn fanin_qos2_v5() {
    message_run("fanin", "2", "5", &["-n", "3", "--rate", "600"]);
}

#[test]
fn fanout_qos1_v5() {
    message_run("fanout", "1", "5", &["-n", "4", "--rate", "300"]);
}

#[test]
fn fanout_qos2_v311() {
    message_run("fanout", "2", "3.1.1", &["-n", "3", "--rate", "300"]);
}

#[test]
fn pairs_qos1_over_unix_socket() {
    message_run_via(Via::Unix, "pairs", "1", "5", &["-n", "2", "--rate", "500"]);
}

#[test]
fn fanout_qos2_over_websocket() {
    message_run_via(
        Via::WebSocket,
        "fanout",
        "2",
        "3.1.1",
        &["-n", "3", "--rate", "300"],
    );
}

#[test]
fn conn_opens_and_holds_in_one_and_in_two_processes() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = broker();
    for processes in ["1", "2"] {
        let v = report(
            &b,
            "conn",
            &[
                "-n",
                "60",
                "--conn-rate",
                "300",
                "--duration",
                "1s",
                "--processes",
                processes,
            ],
        );
        assert_eq!(u(&v, "/conn/opened"), 60, "{v:#}");
        assert_eq!(u(&v, "/conn/failed"), 0, "{v:#}");
        assert_eq!(u(&v, "/conn/dropped"), 0, "{v:#}");
        assert_eq!(u(&v, "/conn/connect_latency/count"), 60, "{v:#}");
    }
}

fn storm_run(qos: &str, protocol: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = broker();
    let v = report(
        &b,
        "storm",
        &[
            "-n",
            "20",
            "--messages",
            "5",
            "--qos",
            qos,
            "--protocol",
            protocol,
            "--drain",
            "10s",
        ],
    );
    assert_eq!(u(&v, "/storm/resumed"), 20, "{v:#}");
    assert_eq!(u(&v, "/storm/session_lost"), 0, "{v:#}");
    assert_eq!(u(&v, "/storm/reconnect_failed"), 0, "{v:#}");
    assert_eq!(u(&v, "/storm/incomplete_sessions"), 0, "{v:#}");
    assert_eq!(u(&v, "/storm/streams/sent"), 100, "{v:#}");
    assert_eq!(u(&v, "/storm/streams/lost"), 0, "{v:#}");
    assert_eq!(u(&v, "/storm/complete_latency/count"), 20, "{v:#}");
}

#[test]
fn storm_qos1_v5() {
    storm_run("1", "5");
}

#[test]
fn storm_qos2_v311() {
    storm_run("2", "3.1.1");
}

/// Runs the http scenario in `mode` against a broker with an HTTP listener and checks the
/// message side as for the MQTT scenarios, plus the HTTP side's own figures.
fn http_run(mode: &str, qos: &str, extra: &[&str]) -> Value {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = http_broker();
    let (http_url, token) = b.http.clone().expect("an HTTP listener");
    let mut args = vec![
        "--mode",
        mode,
        "--http-url",
        &http_url,
        "--token",
        &token,
        "--qos",
        qos,
    ];
    args.extend_from_slice(SHORT);
    args.extend_from_slice(extra);
    let v = report(&b, "http", &args);
    check_messages(&v, qos.parse().expect("qos"));
    assert_eq!(
        v.pointer("/http/mode").and_then(Value::as_str),
        Some(mode),
        "{v:#}"
    );
    v
}

/// Publish and batch: every request answered 200, every message matched its one subscriber.
fn check_requests(v: &Value, per_request: u64) {
    let requests = u(v, "/http/requests");
    assert!(requests > 0, "{v:#}");
    assert_eq!(u(v, "/http/failed_requests"), 0, "{v:#}");
    assert_eq!(u(v, "/http/unanswered"), 0, "{v:#}");
    assert_eq!(u(v, "/messages/sent"), requests * per_request, "{v:#}");
    assert_eq!(u(v, "/http/matched"), u(v, "/messages/sent"), "{v:#}");
    assert!(u(v, "/http/request_latency/count") > 0, "{v:#}");
}

#[test]
fn http_publish_qos1_open_loop() {
    let v = http_run("publish", "1", &["-n", "3", "--rate", "300"]);
    check_requests(&v, 1);
}

#[test]
fn http_batch_qos1_closed_loop() {
    let v = http_run(
        "batch",
        "1",
        &["-n", "2", "--rate", "0", "--batch-size", "5"],
    );
    check_requests(&v, 5);
}

#[test]
fn http_publish_qos0_runs() {
    let v = http_run("publish", "0", &["-n", "2", "--rate", "200"]);
    check_requests(&v, 1);
}

#[test]
fn http_sse_qos1_fan_out() {
    let v = http_run("sse", "1", &["-n", "3", "--rate", "200"]);
    let sent = u(&v, "/messages/sent");
    assert_eq!(u(&v, "/messages/expected_deliveries"), 3 * sent, "{v:#}");
    assert!(u(&v, "/http/sse_events") >= 3 * sent, "{v:#}");
    assert_eq!(u(&v, "/http/sse_bad_events"), 0, "{v:#}");
}

#[test]
fn http_sse_qos0_closed_loop_two_publishers() {
    http_run(
        "sse",
        "0",
        &[
            "-n",
            "2",
            "--publishers",
            "2",
            "--rate",
            "0",
            "--window",
            "8",
        ],
    );
}

#[test]
fn http_wrong_token_fails_before_the_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let b = http_broker();
    let (http_url, _) = b.http.clone().expect("an HTTP listener");
    let out = run_bench(&[
        "http",
        "--url",
        &b.url,
        "--http-url",
        &http_url,
        "--token",
        "not-the-token",
        "--quiet",
        "-n",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("--token"), "{err}");
}

#[test]
fn unreachable_broker_fails_cleanly() {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let out = run_bench(&["pairs", "--url", &url, "--quiet", "--connect-timeout", "2s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subscriber 0"), "{err}");
}
