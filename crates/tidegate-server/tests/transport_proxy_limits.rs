//! Behind a load balancer and under load: PROXY protocol v1/v2 headers sent by hand (the real
//! client address reaches the log; a missing or broken header is refused and counted), the
//! accept rate limit, and draining one listener while another keeps serving.

mod common;

use common::Broker;
use common::certs::Pki;
use common::inproc::{self, eventually};
use common::raw::{ConnectOpts, Next, Raw, Version, connect, kind};
use rustls::pki_types::ServerName;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A PROXY v2 header for a TCP over IPv4 connection from `src` to `dst`.
fn proxy_v2(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&src.0);
    header.extend_from_slice(&dst.0);
    header.extend_from_slice(&src.1.to_be_bytes());
    header.extend_from_slice(&dst.1.to_be_bytes());
    header
}

#[tokio::test]
async fn proxy_v2_and_v1_headers_name_the_real_client() {
    let pki = Pki::new();
    let proxied = common::free_port();
    let proxied_tls = common::free_port();
    let broker = Broker::with_listeners(&format!(
        "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:{proxied}\"\nproxy_protocol = true\n{}",
        pki.listener("tls", "proxy_protocol = true")
            .replace("127.0.0.1:0", &format!("127.0.0.1:{proxied_tls}"))
    ));
    // v2, by hand, as an AWS NLB or HAProxy would send it, then MQTT.
    let mut stream = TcpStream::connect(("127.0.0.1", proxied)).await.unwrap();
    stream
        .write_all(&proxy_v2(([203, 0, 113, 7], 4242), ([10, 0, 0, 1], 1883)))
        .await
        .unwrap();
    let (_v2, _) = Raw::connect_over(stream, &ConnectOpts::new(Version::V5, "behind-lb")).await;
    let log = broker.wait_log("client_id=behind-lb").await;
    let line = log
        .lines()
        .find(|l| l.contains("client_id=behind-lb"))
        .unwrap();
    assert!(line.contains("peer=203.0.113.7:4242"), "{line}");

    // v1 in front of a TLS handshake.
    let mut stream = TcpStream::connect(("127.0.0.1", proxied_tls))
        .await
        .unwrap();
    stream
        .write_all(b"PROXY TCP6 2001:db8::5 2001:db8::1 5555 8883\r\n")
        .await
        .unwrap();
    let tls = TlsConnector::from(pki.client_config(None, &[]))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    let (_v1, _) = Raw::connect_over(tls, &ConnectOpts::new(Version::V311, "tls-behind-lb")).await;
    let log = broker.wait_log("client_id=tls-behind-lb").await;
    let line = log
        .lines()
        .find(|l| l.contains("client_id=tls-behind-lb"))
        .unwrap();
    assert!(line.contains("peer=[2001:db8::5]:5555"), "{line}");
}

#[tokio::test]
async fn missing_or_broken_proxy_headers_are_refused_and_counted() {
    let server = inproc::start(
        "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\n",
    )
    .await;
    let addr = server.addrs[0];
    let attempts: [&[u8]; 3] = [
        &connect(&ConnectOpts::new(Version::V311, "no-header")),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x13\x11\x00\x00",
    ];
    for bytes in attempts {
        let mut raw = Raw::over(TcpStream::connect(addr).await.unwrap(), Version::V311);
        raw.send_lossy(bytes).await;
        assert!(matches!(
            raw.next(Duration::from_secs(5)).await,
            Next::Closed
        ));
    }
    eventually("three refusals counted", || {
        server.stats.proxy_header_failures() == 3
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn accept_rate_refuses_the_excess_and_spares_open_connections() {
    let server = inproc::start(
        "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\nmax_accept_rate = 3\n",
    )
    .await;
    let addr = server.addrs[0];
    let (mut first, _) = Raw::connect_addr(addr, &ConnectOpts::new(Version::V311, "r1")).await;
    let mut extra = Vec::new();
    for _ in 0..6 {
        extra.push(TcpStream::connect(addr).await.unwrap());
    }
    eventually("three sockets refused for the rate", || {
        server.stats.connections_rate_limited() >= 3
    })
    .await;
    assert!(server.stats.connections_refused() >= 3);
    first.send(&common::raw::pingreq()).await;
    first.expect(kind::PINGRESP).await;
    // A second later the bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_later, _) = Raw::connect_addr(addr, &ConnectOpts::new(Version::V311, "r2")).await;
    server.stop().await;
}

#[tokio::test]
async fn draining_one_listener_says_goodbye_there_only() {
    let server = inproc::start(
        "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\nname = \"keep\"\n\
         [[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\nname = \"old\"\n\
         [shutdown]\ngrace_period_ms = 2000\nserver_reference = \"other.example:1883\"\n",
    )
    .await;
    let (keep, old) = (server.addrs[0], server.addrs[1]);
    let (mut staying, _) = Raw::connect_addr(keep, &ConnectOpts::new(Version::V5, "stay")).await;
    let (mut leaving, _) = Raw::connect_addr(old, &ConnectOpts::new(Version::V5, "leave")).await;
    let (mut leaving_v3, _) =
        Raw::connect_addr(old, &ConnectOpts::new(Version::V311, "leave-3")).await;
    tokio::time::timeout(Duration::from_secs(5), server.control.drain_listener("old"))
        .await
        .expect("drained within the grace period")
        .unwrap();
    let goodbye = leaving.expect(kind::DISCONNECT).await;
    assert_eq!(goodbye.disconnect_reason(), 0x8B);
    let reference = b"other.example:1883";
    assert!(
        goodbye
            .body
            .windows(reference.len())
            .any(|w| w == reference),
        "server reference in {goodbye:?}"
    );
    leaving.expect_closed_silently().await;
    leaving_v3.expect_closed_silently().await;
    assert!(
        TcpStream::connect(old).await.is_err(),
        "the drained listener is closed"
    );
    staying.send(&common::raw::pingreq()).await;
    staying.expect(kind::PINGRESP).await;
    let (_new, _) = Raw::connect_addr(keep, &ConnectOpts::new(Version::V311, "new")).await;
    assert!(matches!(
        server.control.drain_listener("nope").await,
        Err(tidegate_server::ServerError::UnknownListener(_))
    ));
    server.stop().await;
}
