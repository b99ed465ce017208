//! MQTT over a Unix domain socket: a raw client on the socket file, the peer's credentials
//! (SO_PEERCRED) reaching the connect log line, the stale socket file of a crashed server
//! replaced, the file mode applied, and topics shared with TCP clients.

mod common;

use common::Broker;
use common::raw::{ConnectOpts, Raw, Version, kind, publish, subscribe_ok};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use tokio::net::UnixStream;

#[tokio::test]
async fn unix_clients_share_topics_and_their_credentials_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidegate.sock");
    // What a crashed server leaves behind: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let broker = Broker::with_listeners(&format!(
        "[[listeners]]\nkind = \"unix\"\npath = {path:?}\nmode = \"600\"\nname = \"local\"\n"
    ));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let stream = UnixStream::connect(&path).await.unwrap();
    let (mut local, _) = Raw::connect_over(stream, &ConnectOpts::new(Version::V5, "local-1")).await;
    subscribe_ok(&mut local, 1, "unix/#", 1).await;
    let (mut remote, _) = Raw::connect(&broker, &ConnectOpts::new(Version::V311, "tcp-1")).await;
    remote
        .send(&publish(
            Version::V311,
            0,
            false,
            false,
            b"unix/a",
            0,
            b"hello",
        ))
        .await;
    let got = local.recv_publish().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("unix/a", &b"hello"[..])
    );
    local.send(&common::raw::pingreq()).await;
    local.expect(kind::PINGRESP).await;

    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let log = broker.wait_log("client_id=local-1").await;
    let line = log
        .lines()
        .find(|l| l.contains("client_id=local-1"))
        .unwrap();
    assert!(line.contains(&format!("peer_uid={uid}")), "{line}");
    assert!(line.contains("listener=local"), "{line}");
}

#[tokio::test]
async fn a_live_socket_or_a_regular_file_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file.sock");
    std::fs::write(&path, b"precious").unwrap();
    let config = format!("[[listeners]]\nkind = \"unix\"\npath = {path:?}\n");
    let text = dir.path().join("tidegate.toml");
    std::fs::write(&text, &config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["serve", "--config"])
        .arg(&text)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}
