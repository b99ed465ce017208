//! MQTT over WebSocket and WebSocket over TLS: rumqttc (tungstenite underneath) over `ws` and
//! `wss`, plus a hand-written WebSocket peer for what a library hides: packets split across
//! frames and frames holding several packets, ping/pong, close codes, a text frame, plain HTTP
//! without an Upgrade, another path, and permessage-deflate (RFC 7692) both ways, declined by
//! a listener that turns it off, and bounded on the way in.
//!
//! tungstenite (0.26 under rumqttc, 0.28 in the lock file) has no permessage-deflate, so the
//! compressing peer is our own: a pump between a raw MQTT client ([`Raw`]) and the socket that
//! compresses each MQTT write into a masked message (RSV1, split over two frames) with
//! `flate2`, and inflates the server's compressed frames.

mod common;

use common::certs::Pki;
use common::inproc::{self, eventually};
use common::raw::{ConnectOpts, Raw, Version, connect, kind, pingreq, publish, subscribe};
use common::v4::Client;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use rumqttc::{MqttOptions, QoS, TlsConfiguration, Transport};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: &str = "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n";

/// Sends a request head (plus `extra` headers) and returns the response head.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    head: &str,
    extra: &str,
) -> String {
    stream
        .write_all(format!("{head}{extra}\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("a response in time")
            .unwrap();
        assert_eq!(n, 1, "closed before the end of the response: {response:?}");
        response.push(byte[0]);
    }
    String::from_utf8(response).unwrap()
}

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one server frame: (FIN and opcode byte, payload).
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("a frame in time");
    if read.is_err() {
        return None;
    }
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7F {
        126 => usize::from(stream.read_u16().await.unwrap()),
        127 => usize::try_from(stream.read_u64().await.unwrap()).unwrap(),
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.unwrap();
    Some((head[0], payload))
}

/// Reads binary frames until `count` MQTT packets arrived; returns their first bytes.
async fn read_packets<S: AsyncRead + Unpin>(stream: &mut S, count: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut kinds = Vec::new();
    while kinds.len() < count {
        let (op, payload) = read_frame(stream).await.expect("a frame");
        assert_eq!(op, 0x82, "binary frames only");
        bytes.extend_from_slice(&payload);
        // Whole packets only (remaining lengths below 128 in these tests).
        while bytes.len() >= 2 && bytes.len() >= 2 + usize::from(bytes[1]) {
            kinds.push(bytes[0] >> 4);
            bytes.drain(..2 + usize::from(bytes[1]));
        }
    }
    kinds
}

fn rumqttc_ws(id: &str, addr: SocketAddr) -> MqttOptions {
    let port = addr.port();
    let mut opts = MqttOptions::new(id, format!("ws://127.0.0.1:{port}/mqtt"), port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_transport(Transport::Ws);
    opts
}

const WS_AND_TCP: &str = "[[listeners]]\nkind = \"tcp\"\nbind = \"127.0.0.1:0\"\n\
    [[listeners]]\nkind = \"ws\"\nbind = \"127.0.0.1:0\"\n";

#[tokio::test]
async fn rumqttc_over_websocket_shares_topics_with_tcp() {
    let server = inproc::start(WS_AND_TCP).await;
    let (tcp, ws) = (server.addrs[0], server.addrs[1]);
    let mut browser = Client::connect(rumqttc_ws("ws-sub", ws)).await;
    browser.subscribe_ok("ws/t", QoS::AtLeastOnce).await;
    let mut opts = MqttOptions::new("tcp-pub", "127.0.0.1", tcp.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let mut device = Client::connect(opts).await;
    // 20 KiB: one packet over several TCP segments and, outbound, one large frame.
    let big = vec![b'z'; 20 * 1024];
    device.publish("ws/t", QoS::AtLeastOnce, false, &big).await;
    assert_eq!(browser.recv().await.payload.as_ref(), &big[..]);
    browser.disconnect().await;
    device.disconnect().await;
    server.stop().await;
}

#[tokio::test]
async fn rumqttc_over_wss() {
    let pki = Pki::new();
    let server = inproc::start(&pki.listener("wss", "")).await;
    let port = server.addrs[0].port();
    let mut opts = MqttOptions::new("wss-1", format!("wss://localhost:{port}/mqtt"), port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_transport(Transport::wss_with_config(TlsConfiguration::Rustls(
        pki.client_config(None, &[]),
    )));
    let mut client = Client::connect(opts).await;
    client.subscribe_ok("wss/t", QoS::ExactlyOnce).await;
    client
        .publish("wss/t", QoS::ExactlyOnce, false, b"secure")
        .await;
    assert_eq!(client.recv().await.payload.as_ref(), b"secure");
    client.disconnect().await;
    server.stop().await;
}

#[tokio::test]
async fn packets_span_frames_and_frames_hold_packets_with_ping_pong() {
    let server = inproc::start(WS_AND_TCP).await;
    let mut ws = TcpStream::connect(server.addrs[1]).await.unwrap();
    let response = request(
        &mut ws,
        UPGRADE,
        "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(
        response.contains("Sec-WebSocket-Protocol: mqtt\r\n"),
        "{response}"
    );
    assert!(
        response.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_max_window_bits=10\r\n"
        ),
        "permessage-deflate is accepted (and then simply not used by this client): {response}"
    );

    // CONNECT cut in three frames of one fragmented message, then a ping between messages.
    let connect = connect(&ConnectOpts::new(Version::V311, "frames"));
    ws.write_all(&frame(false, 0x2, &connect[..3]))
        .await
        .unwrap();
    ws.write_all(&frame(false, 0x0, &connect[3..9]))
        .await
        .unwrap();
    ws.write_all(&frame(true, 0x0, &connect[9..]))
        .await
        .unwrap();
    ws.write_all(&frame(true, 0x9, b"are you there"))
        .await
        .unwrap();
    let (op, payload) = read_frame(&mut ws).await.unwrap();
    assert_eq!(
        (op, payload.as_slice()),
        (0x8A, &b"are you there"[..]),
        "pong"
    );
    assert_eq!(read_packets(&mut ws, 1).await, [2], "CONNACK");
    // SUBSCRIBE and PINGREQ in one frame.
    let both = [subscribe(Version::V311, 1, "f/#", 1), pingreq()].concat();
    ws.write_all(&frame(true, 0x2, &both)).await.unwrap();
    assert_eq!(read_packets(&mut ws, 2).await, [9, 13], "SUBACK, PINGRESP");

    // A close frame is echoed and ends the connection.
    ws.write_all(&frame(true, 0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let (op, payload) = read_frame(&mut ws).await.unwrap();
    assert_eq!((op, payload.as_slice()), (0x88, &[0x03, 0xE8][..]));
    assert!(
        read_frame(&mut ws).await.is_none(),
        "closed after the close frame"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_text_frame_closes_with_1003_and_is_counted() {
    let server = inproc::start(WS_AND_TCP).await;
    let mut ws = TcpStream::connect(server.addrs[1]).await.unwrap();
    let response = request(&mut ws, UPGRADE, "Sec-WebSocket-Protocol: mqtt\r\n").await;
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    ws.write_all(&frame(true, 0x1, b"{\"hello\":1}"))
        .await
        .unwrap();
    let (op, payload) = read_frame(&mut ws).await.unwrap();
    assert_eq!(
        (op, payload.as_slice()),
        (0x88, &[0x03, 0xEB][..]),
        "close 1003"
    );
    assert!(read_frame(&mut ws).await.is_none());
    eventually("the protocol error counted", || {
        server.stats.websocket_protocol_errors() == 1
    })
    .await;
    // Nothing else is affected.
    let mut other = Client::connect(rumqttc_ws("after-text", server.addrs[1])).await;
    other.subscribe_ok("x", QoS::AtMostOnce).await;
    server.stop().await;
}

#[tokio::test]
async fn plain_http_and_other_paths_are_refused_and_counted() {
    let server = inproc::start(WS_AND_TCP).await;
    let addr = server.addrs[1];
    let mut browser = TcpStream::connect(addr).await.unwrap();
    let response = request(
        &mut browser,
        "GET /mqtt HTTP/1.1\r\nHost: localhost\r\n",
        "",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{response}"
    );
    assert!(response.contains("Upgrade: websocket\r\n"));
    let mut lost = TcpStream::connect(addr).await.unwrap();
    let response = request(&mut lost, &UPGRADE.replace("/mqtt", "/other"), "").await;
    assert!(
        response.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{response}"
    );
    let mut chat = TcpStream::connect(addr).await.unwrap();
    let response = request(&mut chat, UPGRADE, "Sec-WebSocket-Protocol: chat\r\n").await;
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response}"
    );
    // An MQTT client that forgot the WebSocket: the bytes are not HTTP.
    let mut mqtt = Raw::over(TcpStream::connect(addr).await.unwrap(), Version::V311);
    mqtt.send_lossy(&connect(&ConnectOpts::new(Version::V311, "not-ws")))
        .await;
    eventually("four refusals counted", || {
        server.stats.websocket_upgrade_failures() == 4
    })
    .await;
    server.stop().await;
}

/// What the deflate pump saw.
#[derive(Debug, Default)]
struct Seen {
    /// Messages we sent compressed.
    sent_compressed: usize,
    /// Server frames with RSV1, and without.
    received_compressed: usize,
    received_plain: usize,
}

/// A compressed message as our client sends it: `body` (tail stripped) in two masked frames,
/// RSV1 on the first only.
fn compressed_message(body: &[u8]) -> Vec<u8> {
    let (first, second) = body.split_at(body.len() / 2);
    let mut wire = frame(false, 0x40 | 0x2, first);
    wire.extend(frame(true, 0x0, second));
    wire
}

/// Compresses `data` with a sync flush and strips the 0x00 0x00 0xFF 0xFF tail.
fn deflate_sync(compress: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let before = compress.total_in();
    compress
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .unwrap();
    assert_eq!(
        compress.total_in() - before,
        data.len() as u64,
        "one call is enough"
    );
    assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
    out.truncate(out.len() - 4);
    out
}

/// Larger frames than [`frame`] allows (64-bit lengths).
fn frame_any(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    if payload.len() <= 0xFFFF {
        return frame(fin, opcode, payload);
    }
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | 127];
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Upgrades `ws` offering `extensions`; returns the response head.
async fn upgrade_with(ws: &mut TcpStream, extensions: &str) -> String {
    let response = request(
        ws,
        UPGRADE,
        &format!("Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Extensions: {extensions}\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    response
}

/// A WebSocket client with permessage-deflate and context takeover in its direction, within
/// the 2^10-byte window the server gave it: its compressor (miniz, whose window cannot be set)
/// is reset whenever the bytes since the last reset would exceed 1 KiB, and a longer write
/// goes uncompressed. Returns the MQTT side of the pump for [`Raw`].
async fn deflate_client(addr: SocketAddr) -> (tokio::io::DuplexStream, Arc<Mutex<Seen>>) {
    const WINDOW: usize = 1 << 10;
    let mut ws = TcpStream::connect(addr).await.unwrap();
    let response = upgrade_with(&mut ws, "permessage-deflate; client_max_window_bits").await;
    assert!(
        response.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_max_window_bits=10\r\n"
        ),
        "{response}"
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (app, pump) = tokio::io::duplex(1 << 20);
    let (mut from_app, mut to_app) = tokio::io::split(pump);
    let (mut from_server, mut to_server) = ws.into_split();
    let up_seen = seen.clone();
    tokio::spawn(async move {
        let mut compress = Compress::new(Compression::default(), false);
        let mut in_window = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match from_app.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let data = &chunk[..n];
            let wire = if n > WINDOW {
                frame_any(true, 0x2, data)
            } else {
                if in_window + n > WINDOW {
                    compress.reset();
                    in_window = 0;
                }
                in_window += n;
                up_seen.lock().unwrap().sent_compressed += 1;
                compressed_message(&deflate_sync(&mut compress, data))
            };
            if to_server.write_all(&wire).await.is_err() {
                break;
            }
        }
    });
    let down_seen = seen.clone();
    tokio::spawn(async move {
        loop {
            let mut head = [0u8; 2];
            if from_server.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = match head[1] & 0x7F {
                126 => usize::from(from_server.read_u16().await.unwrap()),
                127 => usize::try_from(from_server.read_u64().await.unwrap()).unwrap(),
                n => usize::from(n),
            };
            let mut payload = vec![0u8; len];
            from_server.read_exact(&mut payload).await.unwrap();
            assert_eq!(head[0] & 0x80, 0x80, "the server sends whole messages");
            match head[0] & 0x0F {
                0x2 => {}
                0x8 => break,
                op => panic!("unexpected opcode {op}"),
            }
            let mqtt = if head[0] & 0x40 != 0 {
                down_seen.lock().unwrap().received_compressed += 1;
                // server_no_context_takeover: each message inflates on its own.
                payload.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
                let mut plain = Vec::with_capacity(1 << 20);
                Decompress::new(false)
                    .decompress_vec(&payload, &mut plain, FlushDecompress::Sync)
                    .unwrap();
                plain
            } else {
                down_seen.lock().unwrap().received_plain += 1;
                payload
            };
            if to_app.write_all(&mqtt).await.is_err() {
                break;
            }
        }
    });
    (app, seen)
}

/// A JSON-ish payload of about `len` bytes that compresses well.
fn telemetry(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "{{\"sensor\":\"s-{:03}\",\"t\":{},\"ok\":true}}",
                i % 50,
                20 + i % 9
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn permessage_deflate_carries_publishes_both_ways() {
    let server = inproc::start(WS_AND_TCP).await;
    let (tcp, ws) = (server.addrs[0], server.addrs[1]);
    let (stream, seen) = deflate_client(ws).await;
    let (mut browser, _) =
        Raw::connect_over(stream, &ConnectOpts::new(Version::V311, "deflate-ws")).await;
    browser
        .send(&subscribe(Version::V311, 1, "z/down", 1))
        .await;
    browser.expect(kind::SUBACK).await;
    let mut opts = MqttOptions::new("deflate-tcp", "127.0.0.1", tcp.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let mut device = Client::connect(opts).await;
    device.subscribe_ok("z/up", QoS::AtLeastOnce).await;

    // Inbound: two compressed PUBLISHes sharing the client's window, then one too long for the
    // window, sent plain: the server takes both kinds on one connection.
    for (pid, len) in [(10u16, 400usize), (11, 450), (12, 3000)] {
        let payload = telemetry(len);
        browser
            .send(&publish(
                Version::V311,
                1,
                false,
                false,
                b"z/up",
                pid,
                &payload,
            ))
            .await;
        assert_eq!(browser.expect(kind::PUBACK).await.pid(), pid);
        assert_eq!(device.recv().await.payload.as_ref(), &payload[..]);
    }

    // Outbound: a 20 KiB publish arrives compressed and whole.
    let big = telemetry(20 * 1024);
    device
        .publish("z/down", QoS::AtLeastOnce, false, &big)
        .await;
    let got = browser.recv_publish().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.len()),
        ("z/down", big.len())
    );
    assert_eq!(got.payload, big);
    browser.send(&common::raw::puback(got.pid)).await;
    browser.send(&pingreq()).await;
    browser.expect(kind::PINGRESP).await;
    {
        let seen = seen.lock().unwrap();
        // CONNECT, SUBSCRIBE, two PUBLISHes, then PUBACK and PINGREQ (one message when the
        // pump reads both at once).
        assert!((5..=6).contains(&seen.sent_compressed), "{seen:?}");
        assert_eq!(seen.received_compressed, 1, "{seen:?}");
        // CONNACK, SUBACK, three PUBACKs and PINGRESP: too small to compress.
        assert_eq!(seen.received_plain, 6, "{seen:?}");
    }
    assert_eq!(server.stats.websocket_protocol_errors(), 0);
    device.disconnect().await;
    server.stop().await;
}

#[tokio::test]
async fn permessage_deflate_off_and_over_the_limit() {
    let config = "[[listeners]]\nkind = \"ws\"\nbind = \"127.0.0.1:0\"\n\
        [[listeners]]\nkind = \"ws\"\nbind = \"127.0.0.1:0\"\nname = \"plain\"\n\
        permessage_deflate = false\n\
        [limits]\nmax_packet_size = 4096\n";
    let server = inproc::start(config).await;
    let (on, off) = (server.addrs[0], server.addrs[1]);

    // Turned off: the offer is declined, and a compressed frame is a protocol error (1002).
    let mut plain = TcpStream::connect(off).await.unwrap();
    let response = upgrade_with(&mut plain, "permessage-deflate").await;
    assert!(
        !response.to_ascii_lowercase().contains("extensions"),
        "{response}"
    );
    let mut compress = Compress::new(Compression::default(), false);
    let hello = connect(&ConnectOpts::new(Version::V311, "not-negotiated"));
    plain
        .write_all(&compressed_message(&deflate_sync(&mut compress, &hello)))
        .await
        .unwrap();
    let (op, payload) = read_frame(&mut plain).await.unwrap();
    assert_eq!(
        (op, payload.as_slice()),
        (0x88, &[0x03, 0xEA][..]),
        "close 1002"
    );

    // On, without context takeover: a message inflating past max_packet_size closes with 1009
    // once the limit is passed, however small it was on the wire. Its packets are each valid
    // and small (QoS 0 PUBLISHes nobody receives), so only the message's size is wrong.
    let mut bomb = TcpStream::connect(on).await.unwrap();
    let response = upgrade_with(
        &mut bomb,
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
    )
    .await;
    assert!(
        response.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             server_max_window_bits=12; client_no_context_takeover\r\n"
        ),
        "{response}"
    );
    let mut compress = Compress::new(Compression::default(), false);
    let opts = ConnectOpts::new(Version::V311, "bomber");
    bomb.write_all(&compressed_message(&deflate_sync(
        &mut compress,
        &connect(&opts),
    )))
    .await
    .unwrap();
    assert_eq!(read_packets(&mut bomb, 1).await, [2], "CONNACK");
    compress.reset();
    let many = publish(Version::V311, 0, false, false, b"b", 0, &[0u8; 20]).repeat(40_000);
    let wire = deflate_sync(&mut compress, &many);
    assert!(wire.len() < 8192, "{} bytes on the wire", wire.len());
    bomb.write_all(&compressed_message(&wire)).await.unwrap();
    let (op, payload) = read_frame(&mut bomb).await.unwrap();
    assert_eq!(
        (op, payload.as_slice()),
        (0x88, &[0x03, 0xF1][..]),
        "close 1009"
    );
    eventually("both protocol errors counted", || {
        server.stats.websocket_protocol_errors() == 2
    })
    .await;
    server.stop().await;
}
