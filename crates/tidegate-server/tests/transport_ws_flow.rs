//! Sustained traffic over `ws` and `wss` must never stall: the regression check for issue 4's
//! "WSS stall" (deliveries stopping for seconds while the broker sat idle).
//!
//! Pairs of hand-written WebSocket peers (our own masked frames, not a library, so every
//! boundary is under the test's control) run a closed loop of QoS 1 publications through the
//! in-process server, over a `ws` and a `wss` listener at once, on a multi-threaded runtime:
//! - the publisher's bytes are cut into frames at boundaries unrelated to the MQTT packets
//!   (a packet spans frames, a frame holds several packets), and each frame is written in
//!   three pieces with a flush after each, so over TLS a frame's header and payload arrive in
//!   different TLS records;
//! - both peers use 4 KiB socket buffers, and the subscriber reads in small chunks and pauses
//!   now and then, so the server's writes to it keep hitting a full socket (the path where a
//!   write is accepted by rustls or the frame writer but not yet flushed);
//! - the subscriber acknowledges every delivery, so both directions of both connections carry
//!   traffic at once.
//!
//! What is checked: every publication arrives, in order, exactly once, and no wait for the
//! next packet lasts longer than [`STALL`]. It is a "does not hang" check with a generous
//! bound, not a timing measurement.

mod common;

use common::certs::Pki;
use common::inproc;
use common::raw::{ConnectOpts, Frame, Version, connect, kind, puback, publish, subscribe};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// The longest any single wait for the next packet may take before the test calls it a stall.
/// Every wait here normally lasts microseconds; even a debug build on a loaded 2-core machine
/// stays far below this.
const STALL: Duration = Duration::from_secs(15);
/// Publications per pair.
const MESSAGES: u32 = 1500;
/// Publications a publisher may have unacknowledged.
const WINDOW: u32 = 16;
/// Pairs per listener.
const PAIRS: u32 = 3;
/// Socket buffer sizes of the test's peers (the kernel doubles and rounds them).
const SOCKET_BUFFER: u32 = 4096;

/// A deterministic pseudo-random sequence (an LCG), so a failure replays the same cuts.
struct Cuts(u64);

impl Cuts {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % below.max(1)
    }
}

/// Which listener a peer reaches, and how.
#[derive(Clone)]
enum Via {
    Ws(SocketAddr),
    Wss(SocketAddr, TlsConnector),
}

/// A client WebSocket carrying MQTT bytes, with control over frame and write boundaries.
struct WsPeer {
    stream: Box<dyn Stream>,
    cuts: Cuts,
    /// Raw bytes from the server not yet taken apart.
    raw: Vec<u8>,
    /// MQTT bytes from the frames' payloads not yet taken apart.
    mqtt: Vec<u8>,
    /// Largest read at once (small, so frames and packets straddle reads).
    read_size: usize,
    /// Which peer this is, for failure messages.
    name: String,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl WsPeer {
    /// Opens a socket with small buffers, runs TLS when asked, upgrades to WebSocket, and sends
    /// CONNECT; returns once the CONNACK accepted it.
    async fn open(via: &Via, client_id: &str, seed: u64, read_size: usize) -> WsPeer {
        let addr = match via {
            Via::Ws(addr) | Via::Wss(addr, _) => *addr,
        };
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
        socket.set_send_buffer_size(SOCKET_BUFFER).unwrap();
        let tcp: TcpStream = socket.connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut stream: Box<dyn Stream> = match via {
            Via::Ws(_) => Box::new(tcp),
            Via::Wss(_, connector) => {
                let name = ServerName::try_from("localhost").unwrap();
                Box::new(connector.connect(name, tcp).await.unwrap())
            }
        };
        stream
            .write_all(
                b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            )
            .await
            .unwrap();
        stream.flush().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "{head:?}");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101 "),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let mut peer = WsPeer {
            stream,
            cuts: Cuts(seed),
            raw: Vec::new(),
            mqtt: Vec::new(),
            read_size,
            name: client_id.to_owned(),
        };
        peer.send(&connect(&ConnectOpts::new(Version::V311, client_id)))
            .await;
        let connack = peer.recv().await;
        assert_eq!(connack.connack(), (false, 0), "{}", peer.name);
        peer
    }

    /// Sends MQTT bytes as masked binary frames cut at pseudo-random places, each frame
    /// written in three pieces with a flush after each.
    async fn send(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = 1 + self.cuts.next(bytes.len().min(300));
            let (payload, rest) = bytes.split_at(take);
            bytes = rest;
            let frame = masked_frame(payload, self.cuts.next(u32::MAX as usize) as u32);
            let first = 1 + self.cuts.next(frame.len() - 1);
            let second = first + self.cuts.next(frame.len() - first + 1);
            for piece in [&frame[..first], &frame[first..second], &frame[second..]] {
                if piece.is_empty() {
                    continue;
                }
                self.stream.write_all(piece).await.unwrap();
                self.stream.flush().await.unwrap();
            }
        }
    }

    /// The next MQTT packet from the server; panics if it takes longer than [`STALL`].
    async fn recv(&mut self) -> Frame {
        loop {
            if let Some(frame) = take_packet(&mut self.mqtt) {
                return frame;
            }
            self.read_some().await;
        }
    }

    /// Whatever packets are already buffered, without reading.
    fn buffered(&mut self) -> Vec<Frame> {
        std::iter::from_fn(|| take_packet(&mut self.mqtt)).collect()
    }

    /// One read (of at most `read_size` bytes), its frames unwrapped into `mqtt`.
    async fn read_some(&mut self) {
        let mut chunk = vec![0u8; self.read_size];
        let n = match tokio::time::timeout(STALL, self.stream.read(&mut chunk)).await {
            Ok(read) => read.unwrap(),
            Err(_) => panic!(
                "{}: nothing from the server for {STALL:?} (stalled); {} raw bytes and {} MQTT \
                 bytes buffered",
                self.name,
                self.raw.len(),
                self.mqtt.len()
            ),
        };
        assert!(n > 0, "{}: the server closed the connection", self.name);
        self.raw.extend_from_slice(&chunk[..n]);
        while let Some((opcode, payload)) = take_server_frame(&mut self.raw) {
            assert_eq!(opcode, 0x82, "{}: binary frames only", self.name);
            self.mqtt.extend_from_slice(&payload);
        }
    }
}

/// A client frame: FIN, binary, masked with `mask`.
fn masked_frame(payload: &[u8], mask: u32) -> Vec<u8> {
    let mask = mask.to_be_bytes();
    let mut out = vec![0x82];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Takes one whole (unmasked) server frame off the front of `raw`: (first byte, payload).
fn take_server_frame(raw: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let (&b0, &b1) = (raw.first()?, raw.get(1)?);
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    let (len, at) = match b1 & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = raw.get(2..10)?.try_into().unwrap();
            (usize::try_from(u64::from_be_bytes(bytes)).unwrap(), 10)
        }
        n => (usize::from(n), 2),
    };
    if raw.len() < at + len {
        return None;
    }
    let payload = raw[at..at + len].to_vec();
    raw.drain(..at + len);
    Some((b0, payload))
}

/// Takes one whole MQTT packet off the front of `mqtt`.
fn take_packet(mqtt: &mut Vec<u8>) -> Option<Frame> {
    let header = *mqtt.first()?;
    let (mut len, mut shift, mut at) = (0usize, 0, 1);
    loop {
        let byte = *mqtt.get(at)?;
        len |= usize::from(byte & 0x7F) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    if mqtt.len() < at + len {
        return None;
    }
    let body = mqtt[at..at + len].to_vec();
    mqtt.drain(..at + len);
    Some(Frame { header, body })
}

/// Payload of publication `seq`: its number, then filler of a size that varies with it, so
/// packets of many lengths cross frame and record boundaries.
fn payload(seq: u32) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.resize(4 + (seq as usize * 37) % 260, (seq % 251) as u8);
    p
}

/// One closed-loop pair; returns how many publications the subscriber received in order.
async fn run_pair(via: Via, label: &'static str, index: u32) -> u32 {
    let topic = format!("flow/{label}/{index}");
    let seed = u64::from(index) * 1_000_003 + label.len() as u64;
    // Reads of 61 bytes at most: frames, packets and TLS records all straddle them.
    let mut sub = WsPeer::open(&via, &format!("{label}-sub-{index}"), seed, 61).await;
    sub.send(&subscribe(Version::V311, 1, &topic, 1)).await;
    let suback = sub.recv().await;
    assert_eq!(suback.kind(), kind::SUBACK);
    assert_eq!(suback.body, [0, 1, 1], "granted QoS 1");
    let mut publ = WsPeer::open(&via, &format!("{label}-pub-{index}"), seed ^ 0xA5A5, 4096).await;
    let publish_topic = topic.clone();

    let subscriber = tokio::spawn(async move {
        let mut expected = 0u32;
        let mut acks = Vec::new();
        while expected < MESSAGES {
            let mut packets = vec![sub.recv().await];
            packets.extend(sub.buffered());
            for packet in packets {
                let publish = packet.publish(Version::V311);
                assert_eq!(publish.topic, topic);
                let seq = u32::from_be_bytes(publish.payload[..4].try_into().unwrap());
                assert_eq!(seq, expected, "{}: deliveries in order, once", sub.name);
                assert_eq!(publish.payload, payload(seq));
                acks.extend(puback(publish.pid));
                expected += 1;
                // A pause now and then lets the server's writes fill this socket.
                if expected.is_multiple_of(200) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            sub.send(&acks).await;
            acks.clear();
        }
        expected
    });

    let mut next = 0u32;
    let mut unacked = Vec::new();
    while next < MESSAGES || !unacked.is_empty() {
        let mut batch = Vec::new();
        while next < MESSAGES && unacked.len() < WINDOW as usize {
            let pid = u16::try_from(next % 60_000 + 1).unwrap();
            batch.extend(publish(
                Version::V311,
                1,
                false,
                false,
                publish_topic.as_bytes(),
                pid,
                &payload(next),
            ));
            unacked.push(pid);
            next += 1;
        }
        publ.send(&batch).await;
        let mut acks = vec![publ.recv().await];
        acks.extend(publ.buffered());
        for ack in acks {
            assert_eq!(ack.kind(), kind::PUBACK, "{}: {ack:?}", publ.name);
            let at = unacked.iter().position(|p| *p == ack.pid());
            unacked.remove(at.expect("a PUBACK for an unacknowledged publication"));
        }
    }
    subscriber.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_traffic_over_ws_and_wss_never_stalls() {
    let pki = Pki::new();
    let listeners = format!(
        "[[listeners]]\nkind = \"ws\"\nbind = \"127.0.0.1:0\"\n{}",
        pki.listener("wss", "")
    );
    let server = inproc::start(&listeners).await;
    let connector = TlsConnector::from(pki.client_config(None, &[b"http/1.1"]));
    let ws = Via::Ws(server.addrs[0]);
    let wss = Via::Wss(server.addrs[1], connector);
    let mut pairs = Vec::new();
    for index in 0..PAIRS {
        pairs.push(tokio::spawn(run_pair(ws.clone(), "ws", index)));
        pairs.push(tokio::spawn(run_pair(wss.clone(), "wss", index)));
    }
    for pair in pairs {
        assert_eq!(pair.await.unwrap(), MESSAGES);
    }
    server.stop().await;
}
