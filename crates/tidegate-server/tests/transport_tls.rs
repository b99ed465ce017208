//! MQTT over TLS: rumqttc and rustls clients against TLS listeners with certificates made at
//! test time. Covers ALPN, SNI, session resumption, mutual TLS (missing, foreign and expired
//! client certificates refused and counted), the certificate identity used as client id,
//! plaintext on the TLS port, the handshake timeout, and certificate reload (explicit, on file
//! change, on SIGHUP) while a client stays connected.

mod common;

use common::certs::{ClientName, Pki};
use common::inproc::{self, Running, eventually};
use common::raw::{ConnectOpts, Next, Raw, Version, connect, kind};
use common::v4::Client;
use rumqttc::{MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The CN of the certificate the server presented.
fn server_cn(stream: &TlsStream<TcpStream>) -> String {
    let cert = &stream.get_ref().1.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    cn.as_str().unwrap().to_owned()
}

/// Connects over TLS and runs CONNECT/CONNACK with a raw v5 peer; `Err` describes how the
/// server refused (handshake error, or the socket closed instead of a CONNACK: with TLS 1.3
/// the client's handshake ends before the server has checked the client certificate).
async fn mqtt_over_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    id: &str,
) -> Result<Raw, String> {
    let stream = tls_connect(addr, config)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut raw = Raw::over(stream, Version::V5);
    raw.send_lossy(&connect(&ConnectOpts::new(Version::V5, id)))
        .await;
    match raw.next(Duration::from_secs(5)).await {
        Next::Frame(frame) if frame.kind() == kind::CONNACK => {
            assert_eq!(frame.connack().1, 0, "CONNACK refused");
            Ok(raw)
        }
        other => Err(format!("no CONNACK: {other:?}")),
    }
}

fn rumqttc_tls(id: &str, port: u16, config: Arc<ClientConfig>) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "localhost", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    opts
}

fn rumqttc_tcp(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

async fn start_tls(pki: &Pki, extra: &str) -> Running {
    let toml = format!(
        "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\n{}",
        pki.listener("tls", extra)
    );
    inproc::start(&toml).await
}

#[tokio::test]
async fn rumqttc_over_tls_shares_topics_with_tcp() {
    let pki = Pki::new();
    let server = start_tls(&pki, "").await;
    let (tcp, tls) = (server.addrs[0], server.addrs[1]);
    let mut secure = Client::connect(rumqttc_tls(
        "tls-sub",
        tls.port(),
        pki.client_config(None, &[]),
    ))
    .await;
    secure.subscribe_ok("shared/t", QoS::AtLeastOnce).await;
    let mut plain = Client::connect(rumqttc_tcp("tcp-pub", tcp)).await;
    plain
        .publish("shared/t", QoS::AtLeastOnce, false, b"over tcp")
        .await;
    assert_eq!(secure.recv().await.payload.as_ref(), b"over tcp");
    secure
        .publish("shared/back", QoS::AtMostOnce, false, b"x")
        .await;
    plain.disconnect().await;
    secure.disconnect().await;
    server.stop().await;
}

#[tokio::test]
async fn alpn_mqtt_and_resumed_handshakes() {
    let pki = Pki::new();
    let server = start_tls(&pki, "").await;
    let addr = server.addrs[1];
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(base_roots(&pki))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"mqtt".to_vec()];
        let config = Arc::new(config);
        let mut kinds = Vec::new();
        for round in 0..2 {
            let stream = tls_connect(addr, config.clone()).await.unwrap();
            let session = stream.get_ref().1;
            assert_eq!(session.alpn_protocol(), Some(&b"mqtt"[..]), "{version:?}");
            kinds.push(session.handshake_kind());
            // A CONNACK read also takes the TLS 1.3 session tickets sent after the handshake.
            let mut raw = Raw::over(stream, Version::V5);
            raw.send(&connect(&ConnectOpts::new(
                Version::V5,
                &format!("alpn-{round}"),
            )))
            .await;
            raw.expect(kind::CONNACK).await;
            raw.send(&common::raw::disconnect()).await;
        }
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)],
            "{version:?}"
        );
    }
    // A client that offers ALPN without mqtt is refused.
    let h2 = pki.client_config(None, &[b"h2"]);
    assert!(tls_connect(addr, h2).await.is_err());
    eventually("the ALPN refusal counted", || {
        server.stats.tls_handshake_failures() == 1
    })
    .await;
    server.stop().await;
}

fn base_roots(pki: &Pki) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    for cert in CertificateDer::pem_file_iter(&pki.ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

#[tokio::test]
async fn mutual_tls_refuses_missing_foreign_and_expired_certificates() {
    let pki = Pki::new();
    let ca = format!("client_ca = {:?}\nclient_auth = \"required\"", pki.ca_file);
    let server = start_tls(&pki, &ca).await;
    let addr = server.addrs[1];
    let good = pki.client(
        "good",
        &ClientName {
            cn: Some("device-1"),
            ..ClientName::default()
        },
    );
    let expired = pki.client(
        "old",
        &ClientName {
            cn: Some("device-2"),
            expired: true,
            ..ClientName::default()
        },
    );
    let stranger = pki.stranger("stranger");
    for (what, client) in [
        ("none", None),
        ("foreign CA", Some(&stranger)),
        ("expired", Some(&expired)),
    ] {
        let refused = mqtt_over_tls(addr, pki.client_config(client, &[]), "refused").await;
        assert!(refused.is_err(), "{what}: the server accepted");
    }
    let mut raw = mqtt_over_tls(addr, pki.client_config(Some(&good), &[]), "good")
        .await
        .unwrap();
    raw.send(&common::raw::pingreq()).await;
    raw.expect(kind::PINGRESP).await;
    eventually("three refusals counted", || {
        server.stats.tls_handshake_failures() == 3
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn certificate_identity_becomes_the_client_id() {
    let pki = Pki::new();
    let extra = format!(
        "client_ca = {:?}\nclient_auth = \"optional\"\nidentity_from = \"san_uri\"\nidentity_as = \"client_id\"",
        pki.ca_file
    );
    let server = start_tls(&pki, &extra).await;
    let (tcp, tls) = (server.addrs[0], server.addrs[1]);
    let device = pki.client(
        "dev",
        &ClientName {
            cn: Some("not-this"),
            uri: Some("urn:device:42"),
            ..ClientName::default()
        },
    );
    // An empty client id: the certificate names the session.
    let mut by_cert = mqtt_over_tls(tls, pki.client_config(Some(&device), &[]), "")
        .await
        .unwrap();
    // Another client taking that id takes the session over (0x8E), which proves the id.
    let (_other, _) = Raw::connect_addr(tcp, &ConnectOpts::new(Version::V5, "urn:device:42")).await;
    by_cert.expect_disconnect(0x8E).await;
    // Without a certificate (optional), an empty id is assigned as usual.
    let anonymous = mqtt_over_tls(tls, pki.client_config(None, &[]), "").await;
    assert!(anonymous.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn plaintext_on_the_tls_port_is_refused_and_counted() {
    let pki = Pki::new();
    let server = start_tls(&pki, "").await;
    let addr = server.addrs[1];
    let mut plain = Raw::over(TcpStream::connect(addr).await.unwrap(), Version::V311);
    plain
        .send_lossy(&connect(&ConnectOpts::new(Version::V311, "plain")))
        .await;
    // The server answers with a TLS alert at most, never a CONNACK, then closes.
    loop {
        match plain.next(Duration::from_secs(5)).await {
            Next::Closed => break,
            Next::Frame(frame) => assert_ne!(frame.kind(), kind::CONNACK, "{frame:?}"),
            Next::Quiet => panic!("the socket stayed open"),
        }
    }
    eventually("the failure counted", || {
        server.stats.tls_handshake_failures() == 1
    })
    .await;
    assert!(
        mqtt_over_tls(addr, pki.client_config(None, &[]), "after")
            .await
            .is_ok()
    );
    server.stop().await;
}

#[tokio::test]
async fn silent_sockets_are_closed_by_the_handshake_timeout() {
    let pki = Pki::new();
    let server = start_tls(&pki, "handshake_timeout_ms = 300").await;
    let mut silent = TcpStream::connect(server.addrs[1]).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    eventually("the timeout counted", || {
        server.stats.handshake_timeouts() == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn certificate_swap_keeps_the_session_and_serves_the_new_certificate() {
    let pki = Pki::new();
    let server = start_tls(&pki, "").await;
    let (tcp, tls) = (server.addrs[0], server.addrs[1]);
    // A fresh client config per handshake: a resumed session would not show the certificate.
    let fresh = || pki.client_config(None, &[]);
    let first = tls_connect(tls, fresh()).await.unwrap();
    assert_eq!(server_cn(&first), "server-1");
    drop(first);
    let mut staying = Client::connect(rumqttc_tls("staying", tls.port(), fresh())).await;
    staying.subscribe_ok("swap/t", QoS::AtLeastOnce).await;

    pki.reissue_server("server-2");
    assert_eq!(server.control.reload_certificates(), 0);
    let second = tls_connect(tls, fresh()).await.unwrap();
    assert_eq!(server_cn(&second), "server-2");

    // A bad new key is reported and the certificate in force stays.
    std::fs::write(&pki.server.key, "not a key").unwrap();
    assert_eq!(server.control.reload_certificates(), 1);
    let third = tls_connect(tls, fresh()).await.unwrap();
    assert_eq!(server_cn(&third), "server-2");

    // The client connected before the swaps never noticed.
    let mut publisher = Client::connect(rumqttc_tcp("swap-pub", tcp)).await;
    publisher
        .publish("swap/t", QoS::AtLeastOnce, false, b"still here")
        .await;
    assert_eq!(staying.recv().await.payload.as_ref(), b"still here");
    server.stop().await;
}

#[tokio::test]
async fn a_changed_certificate_file_is_picked_up_without_a_signal() {
    let pki = Pki::new();
    let server = start_tls(&pki, "").await;
    let tls = server.addrs[1];
    let fresh = || pki.client_config(None, &[]);
    assert_eq!(
        server_cn(&tls_connect(tls, fresh()).await.unwrap()),
        "server-1"
    );
    pki.reissue_server("server-3");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stream = tls_connect(tls, fresh()).await.unwrap();
        if server_cn(&stream) == "server-3" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificates_of_the_binary() {
    let pki = Pki::new();
    let port = common::free_port();
    let listener = pki
        .listener("tls", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let broker = common::Broker::with_listeners(&listener);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = pki.client_config(None, &[]);
    assert_eq!(
        server_cn(&tls_connect(addr, config.clone()).await.unwrap()),
        "server-1"
    );
    pki.reissue_server("server-4");
    broker.sighup();
    broker.wait_log("SIGHUP received").await;
    broker.wait_log("TLS certificate reloaded").await;
    let stream = tls_connect(addr, pki.client_config(None, &[]))
        .await
        .unwrap();
    assert_eq!(server_cn(&stream), "server-4");
    // The process is still serving after the signal (SIGHUP's default action would kill it).
    let mut raw = Raw::over(stream, Version::V311);
    raw.send(&connect(&ConnectOpts::new(Version::V311, "after-hup")))
        .await;
    raw.expect(kind::CONNACK).await;
}
