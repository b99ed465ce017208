//! Persistence across a killed process: the real binary on a store in `data_dir`, SIGKILLed
//! and started again. Acknowledged messages reach offline persistent subscribers (QoS 1 at
//! least once, QoS 2 exactly once, in order per publisher), retained messages and
//! subscriptions survive, expired sessions are gone, a PUBLISH whose acknowledgement was cut
//! by the crash is resent and delivered once, and a damaged store stops the start with a
//! message that names it.

mod common;
mod persistence_support;

use common::raw::{self, ConnectOpts, Raw, Version, kind};
use persistence_support::{Gateway, Publisher, Subscriber};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn acknowledged_messages_survive_sigkill_and_reach_offline_subscribers() {
    let mut gw = Gateway::start("");
    let mut subs = [
        Subscriber::new("sub-311", Version::V311),
        Subscriber::new("sub-5", Version::V5),
    ];
    for s in &mut subs {
        let raw = s.connect(gw.broker(), true).await;
        raw.drop_connection();
    }
    let mut publisher = Publisher::new("pub", Version::V5);
    let mut raw = publisher.connect(gw.broker(), true).await;
    publisher.run(&mut raw, 40, 8).await;
    assert_eq!(
        publisher.in_flight(),
        0,
        "every flow completed before the kill"
    );
    // A retained message, acknowledged before the kill.
    raw.send(&raw::publish(
        Version::V5,
        1,
        false,
        true,
        b"r/keep",
        999,
        b"kept",
    ))
    .await;
    assert_eq!(raw.expect(kind::PUBACK).await.pid(), 999);

    gw.restart();
    for s in &mut subs {
        let mut raw = s.connect(gw.broker(), false).await;
        s.run(&mut raw, Duration::from_millis(700)).await;
        s.check(&publisher);
        assert_eq!(s.delivered.len(), 40, "{}: each message once", s.id);
    }
    let mut late = Raw::connect(gw.broker(), &ConnectOpts::new(Version::V5, "late"))
        .await
        .0;
    raw::subscribe_ok(&mut late, 1, "r/#", 1).await;
    let retained = late.recv_publish().await;
    assert_eq!(
        (
            retained.topic.as_str(),
            &retained.payload[..],
            retained.retain
        ),
        ("r/keep", &b"kept"[..], true)
    );
}

#[tokio::test]
async fn expired_sessions_are_gone_after_a_restart_and_others_resume() {
    let mut gw = Gateway::start("");
    let mut short = ConnectOpts::persistent(Version::V5, "short", true);
    short.session_expiry = Some(1);
    let long = ConnectOpts::persistent(Version::V5, "long", true);
    for opts in [&short, &long] {
        let (mut c, _) = Raw::connect(gw.broker(), opts).await;
        raw::subscribe_ok(&mut c, 1, "t/#", 1).await;
        c.drop_connection();
    }
    gw.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.restart();
    short.clean = false;
    let (_, present) = Raw::connect(gw.broker(), &short).await;
    assert!(
        !present,
        "the 1 s session expired while the gateway was down"
    );
    let (_, present) = Raw::connect(
        gw.broker(),
        &ConnectOpts::persistent(Version::V5, "long", false),
    )
    .await;
    assert!(present, "the 300 s session is still there");
}

/// The publisher sends and the gateway dies before (or while) acknowledging: the publisher
/// resends after the restart, and the QoS 2 message is delivered exactly once whichever side
/// of the commit the kill fell on.
#[tokio::test]
async fn a_publish_cut_from_its_acknowledgement_is_resent_and_delivered_once() {
    for round in 0..3u64 {
        let mut gw = Gateway::start("");
        let mut sub = Subscriber::new("sub", Version::V5);
        sub.connect(gw.broker(), true).await.drop_connection();
        let mut publisher = Publisher::new("pub", Version::V311);
        let mut raw = publisher.connect(gw.broker(), true).await;
        publisher.send_next(&mut raw).await; // QoS 1
        publisher.send_next(&mut raw).await; // QoS 2
        // Kill at once, or after a moment: both sides of the commit.
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        gw.restart();
        let mut raw = publisher.connect(gw.broker(), false).await;
        publisher.run(&mut raw, 0, 8).await;
        assert_eq!(publisher.in_flight(), 0, "the resent flows complete");
        let mut raw = sub.connect(gw.broker(), false).await;
        sub.run(&mut raw, Duration::from_millis(500)).await;
        sub.check(&publisher);
        let qos2: Vec<_> = sub.delivered.iter().filter(|(_, q, _)| *q == 2).collect();
        assert_eq!(qos2.len(), 1, "round {round}: {:?}", sub.delivered);
    }
}

/// Runs `tidegate serve` on `config` and expects it to exit by itself; returns its status and
/// output.
fn run_to_exit(config: &std::path::Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg("tcp://127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidegate");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            return (status, text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tidegate kept running on a damaged store");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_damaged_store_stops_the_start_with_a_clear_error() {
    for file in ["version", "0.jnl"] {
        let mut gw = Gateway::start("");
        let (mut c, _) = Raw::connect(gw.broker(), &ConnectOpts::new(Version::V5, "p")).await;
        c.send(&raw::publish(Version::V5, 1, false, true, b"r", 1, b"x"))
            .await;
        c.expect(kind::PUBACK).await;
        gw.kill();
        let store = gw.data_dir().join("store");
        let path = store.join(file);
        let len = std::fs::metadata(&path).expect("store file").len();
        std::fs::write(&path, vec![0x5a; usize::try_from(len).unwrap().max(16)]).unwrap();
        let config = gw.data_dir().with_file_name("damaged.toml");
        std::fs::write(&config, gw.config()).unwrap();
        let (status, output) = run_to_exit(&config);
        assert!(!status.success(), "{file}: exit status {status}\n{output}");
        let dir = store.display().to_string();
        assert!(output.contains(&dir), "{file}: names the store\n{output}");
        assert!(
            output.contains("move it aside"),
            "{file}: says the way out\n{output}"
        );
        assert!(output.contains("Nothing was deleted"), "{file}\n{output}");
        // Refusing to start changed nothing: the same error again.
        let (again, _) = run_to_exit(&config);
        assert!(!again.success());
    }
}

#[tokio::test]
async fn persistence_memory_forgets_everything_on_restart() {
    let mut gw = Gateway::start("persistence = \"memory\"\n");
    let (c, _) = Raw::connect(
        gw.broker(),
        &ConnectOpts::persistent(Version::V5, "m", true),
    )
    .await;
    c.drop_connection();
    gw.restart();
    let (_, present) = Raw::connect(
        gw.broker(),
        &ConnectOpts::persistent(Version::V5, "m", false),
    )
    .await;
    assert!(!present);
    assert!(!gw.data_dir().join("store").exists(), "nothing written");
}
