//! A raw MQTT peer: packets are encoded by hand here, independently of the server's codec, so a
//! test controls every byte and exactly where a flow breaks (a dropped socket between PUBREC and
//! PUBREL, a packet cut in half, a header with reserved bits set). It reads frames with the
//! remaining-length rule only and decodes just the fields the tests look at.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::{Broker, QUIET_PERIOD, RECV_TIMEOUT};

/// Which protocol a raw connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl Version {
    /// Both versions, for tests that run the same scenario on each.
    pub(crate) const ALL: [Version; 2] = [Version::V311, Version::V5];

    fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Packet type numbers (the high nibble of the first byte).
pub(crate) mod kind {
    /// CONNACK.
    pub(crate) const CONNACK: u8 = 2;
    /// PUBLISH.
    pub(crate) const PUBLISH: u8 = 3;
    /// PUBACK.
    pub(crate) const PUBACK: u8 = 4;
    /// PUBREC.
    pub(crate) const PUBREC: u8 = 5;
    /// PUBREL.
    pub(crate) const PUBREL: u8 = 6;
    /// PUBCOMP.
    pub(crate) const PUBCOMP: u8 = 7;
    /// SUBACK.
    pub(crate) const SUBACK: u8 = 9;
    /// PINGRESP.
    pub(crate) const PINGRESP: u8 = 13;
    /// DISCONNECT.
    pub(crate) const DISCONNECT: u8 = 14;
}

/// A last will for a raw CONNECT.
#[derive(Debug, Clone)]
pub(crate) struct Will {
    /// Will topic.
    pub(crate) topic: String,
    /// Will payload.
    pub(crate) payload: Vec<u8>,
    /// Will QoS.
    pub(crate) qos: u8,
    /// Will retain flag.
    pub(crate) retain: bool,
}

/// The fields of a raw CONNECT.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOpts {
    /// Protocol version.
    pub(crate) version: Version,
    /// Client identifier.
    pub(crate) client_id: String,
    /// Clean session (3.1.1) / clean start (5.0).
    pub(crate) clean: bool,
    /// Keep alive in seconds.
    pub(crate) keep_alive: u16,
    /// v5 Session Expiry Interval property.
    pub(crate) session_expiry: Option<u32>,
    /// Last will.
    pub(crate) will: Option<Will>,
}

impl ConnectOpts {
    /// A clean connection with keep alive 30 s and no will.
    pub(crate) fn new(version: Version, client_id: &str) -> ConnectOpts {
        ConnectOpts {
            version,
            client_id: client_id.to_owned(),
            clean: true,
            keep_alive: 30,
            session_expiry: None,
            will: None,
        }
    }

    /// A session that survives the connection: 3.1.1 clean session 0; v5 session expiry 300 s
    /// with `clean_start` as given.
    pub(crate) fn persistent(version: Version, client_id: &str, clean_start: bool) -> ConnectOpts {
        let mut opts = ConnectOpts::new(version, client_id);
        match version {
            Version::V311 => opts.clean = false,
            Version::V5 => {
                opts.clean = clean_start;
                opts.session_expiry = Some(300);
            }
        }
        opts
    }
}

/// One whole packet as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// First byte: type and flags.
    pub(crate) header: u8,
    /// Everything after the remaining length.
    pub(crate) body: Vec<u8>,
}

/// A decoded PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawPublish {
    /// DUP flag.
    pub(crate) dup: bool,
    /// QoS from the header.
    pub(crate) qos: u8,
    /// RETAIN flag.
    pub(crate) retain: bool,
    /// Topic name.
    pub(crate) topic: String,
    /// Packet identifier (0 for QoS 0).
    pub(crate) pid: u16,
    /// Payload.
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// The packet type.
    pub(crate) fn kind(&self) -> u8 {
        self.header >> 4
    }

    /// The packet identifier of an ack (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK).
    pub(crate) fn pid(&self) -> u16 {
        assert!(self.body.len() >= 2, "no packet id in {self:?}");
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// The reason code of a v5 ack (absent means success).
    pub(crate) fn ack_reason(&self) -> u8 {
        self.body.get(2).copied().unwrap_or(0)
    }

    /// The reason code of a DISCONNECT (absent means normal disconnection).
    pub(crate) fn disconnect_reason(&self) -> u8 {
        assert_eq!(self.kind(), kind::DISCONNECT, "not a DISCONNECT: {self:?}");
        self.body.first().copied().unwrap_or(0)
    }

    /// Session present flag and return/reason code of a CONNACK.
    pub(crate) fn connack(&self) -> (bool, u8) {
        assert_eq!(self.header, 0x20, "not a CONNACK: {self:?}");
        assert!(self.body.len() >= 2, "short CONNACK {self:?}");
        (self.body[0] & 1 == 1, self.body[1])
    }

    /// Decodes a PUBLISH sent with `version`.
    pub(crate) fn publish(&self, version: Version) -> RawPublish {
        assert_eq!(self.kind(), kind::PUBLISH, "not a PUBLISH: {self:?}");
        let qos = (self.header >> 1) & 3;
        let b = &self.body;
        let topic_len = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let topic = String::from_utf8(b[2..2 + topic_len].to_vec()).expect("UTF-8 topic");
        let mut at = 2 + topic_len;
        let mut pid = 0;
        if qos > 0 {
            pid = u16::from_be_bytes([b[at], b[at + 1]]);
            at += 2;
        }
        if version == Version::V5 {
            let (props_len, used) = decode_varint(&b[at..]);
            at += used + props_len;
        }
        RawPublish {
            dup: self.header & 0x08 != 0,
            qos,
            retain: self.header & 1 != 0,
            topic,
            pid,
            payload: b[at..].to_vec(),
        }
    }
}

/// What the next read brought.
#[derive(Debug)]
pub(crate) enum Next {
    /// A whole packet.
    Frame(Frame),
    /// The server closed the connection (EOF or reset), possibly in the middle of a packet.
    Closed,
    /// Nothing within the wait.
    Quiet,
}

/// Any byte stream a raw peer can speak MQTT over (TCP, TLS, a Unix socket).
pub(crate) trait RawStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawStream for T {}

/// A raw connection to the broker.
pub(crate) struct Raw {
    stream: Box<dyn RawStream>,
    /// Bytes read but not yet framed.
    buf: Vec<u8>,
    /// The version used by [`Raw::connect`], for decoding.
    pub(crate) version: Version,
}

impl Raw {
    /// Opens a TCP connection without sending anything.
    pub(crate) async fn open(broker: &Broker, version: Version) -> Raw {
        let stream = TcpStream::connect(broker.addr())
            .await
            .expect("TCP connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw::over(stream, version)
    }

    /// A raw peer on a stream the test opened itself (TLS, Unix, after a PROXY header).
    pub(crate) fn over(stream: impl RawStream + 'static, version: Version) -> Raw {
        Raw {
            stream: Box::new(stream),
            buf: Vec::new(),
            version,
        }
    }

    /// Opens a connection, sends CONNECT and asserts a successful CONNACK. Returns the
    /// connection and the session-present flag.
    pub(crate) async fn connect(broker: &Broker, opts: &ConnectOpts) -> (Raw, bool) {
        let mut raw = Raw::open(broker, opts.version).await;
        raw.send(&connect(opts)).await;
        let (present, code) = raw.recv().await.connack();
        assert_eq!(code, 0, "CONNACK refused the connection");
        (raw, present)
    }

    /// Like [`Raw::connect`], to any TCP address (an in-process server's listener).
    pub(crate) async fn connect_addr(
        addr: std::net::SocketAddr,
        opts: &ConnectOpts,
    ) -> (Raw, bool) {
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        Raw::connect_over(stream, opts).await
    }

    /// Sends CONNECT on `stream` and asserts a successful CONNACK.
    pub(crate) async fn connect_over(
        stream: impl RawStream + 'static,
        opts: &ConnectOpts,
    ) -> (Raw, bool) {
        let mut raw = Raw::over(stream, opts.version);
        raw.send(&connect(opts)).await;
        let (present, code) = raw.recv().await.connack();
        assert_eq!(code, 0, "CONNACK refused the connection");
        (raw, present)
    }

    /// Writes bytes as they are.
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to broker");
        self.stream.flush().await.expect("flush");
    }

    /// Writes bytes, ignoring a failure (the server may already have closed).
    pub(crate) async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Closes our sending side, as a client that dies mid-packet would.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The next packet, closing or silence within `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Next {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.take_frame() {
                return Next::Frame(frame);
            }
            let mut chunk = [0u8; 4096];
            match timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Next::Quiet,
                Ok(Ok(0)) | Ok(Err(_)) => return Next::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next packet; panics on close or timeout.
    pub(crate) async fn recv(&mut self) -> Frame {
        match self.next(RECV_TIMEOUT).await {
            Next::Frame(frame) => frame,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next packet, which must be of type `kind`.
    pub(crate) async fn expect(&mut self, kind: u8) -> Frame {
        let frame = self.recv().await;
        assert_eq!(frame.kind(), kind, "unexpected packet {frame:?}");
        frame
    }

    /// The next PUBLISH, decoded.
    pub(crate) async fn recv_publish(&mut self) -> RawPublish {
        let version = self.version;
        self.expect(kind::PUBLISH).await.publish(version)
    }

    /// Asserts the server closes the connection without sending anything more.
    pub(crate) async fn expect_closed_silently(&mut self) {
        match self.next(RECV_TIMEOUT).await {
            Next::Closed => {}
            other => panic!("expected the server to close the connection, got {other:?}"),
        }
    }

    /// Asserts a DISCONNECT with `reason` then the close of the connection.
    pub(crate) async fn expect_disconnect(&mut self, reason: u8) {
        match self.next(RECV_TIMEOUT).await {
            Next::Frame(frame) => {
                assert_eq!(
                    frame.kind(),
                    kind::DISCONNECT,
                    "expected DISCONNECT {reason:#04x}, got {frame:?}"
                );
                assert_eq!(
                    frame.disconnect_reason(),
                    reason,
                    "DISCONNECT reason {:#04x}, expected {reason:#04x}",
                    frame.disconnect_reason()
                );
            }
            other => panic!("expected DISCONNECT {reason:#04x}, got {other:?}"),
        }
        self.expect_closed_silently().await;
    }

    /// The response to a protocol violation: 5.0 sends DISCONNECT `v5_reason` then closes;
    /// 3.1.1 has no DISCONNECT from the server and just closes.
    pub(crate) async fn expect_rejected(&mut self, v5_reason: u8) {
        match self.version {
            Version::V311 => self.expect_closed_silently().await,
            Version::V5 => self.expect_disconnect(v5_reason).await,
        }
    }

    /// Asserts nothing arrives and the connection stays open for [`QUIET_PERIOD`].
    pub(crate) async fn expect_quiet(&mut self) {
        match self.next(QUIET_PERIOD).await {
            Next::Quiet => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Drops the connection without DISCONNECT.
    pub(crate) fn drop_connection(self) {
        drop(self.stream);
    }

    fn take_frame(&mut self) -> Option<Frame> {
        let header = *self.buf.first()?;
        let mut len = 0usize;
        let mut shift = 0;
        let mut at = 1;
        loop {
            let byte = *self.buf.get(at)?;
            len |= usize::from(byte & 0x7f) << shift;
            at += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            assert!(shift <= 21, "server sent a remaining length over 4 bytes");
        }
        if self.buf.len() < at + len {
            return None;
        }
        let body = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some(Frame { header, body })
    }
}

/// Encodes `len` as an MQTT variable byte integer.
pub(crate) fn varint(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return out;
        }
    }
}

fn decode_varint(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("bad variable byte integer in {bytes:?}");
}

/// A length-prefixed string or binary field.
pub(crate) fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A whole packet from its first byte and its body.
pub(crate) fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// CONNECT with the given protocol level; the rest as in `opts`.
pub(crate) fn connect_with_level(opts: &ConnectOpts, level: u8) -> Vec<u8> {
    let mut flags = 0u8;
    if opts.clean {
        flags |= 0x02;
    }
    if let Some(will) = &opts.will {
        flags |= 0x04 | (will.qos << 3);
        if will.retain {
            flags |= 0x20;
        }
    }
    let mut body = field(b"MQTT");
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&opts.keep_alive.to_be_bytes());
    if opts.version == Version::V5 {
        let mut props = Vec::new();
        if let Some(expiry) = opts.session_expiry {
            props.push(0x11);
            props.extend_from_slice(&expiry.to_be_bytes());
        }
        body.extend(varint(props.len()));
        body.extend(props);
    }
    body.extend(field(opts.client_id.as_bytes()));
    if let Some(will) = &opts.will {
        if opts.version == Version::V5 {
            body.push(0); // no will properties
        }
        body.extend(field(will.topic.as_bytes()));
        body.extend(field(&will.payload));
    }
    packet(0x10, &body)
}

/// CONNECT as described by `opts`.
pub(crate) fn connect(opts: &ConnectOpts) -> Vec<u8> {
    connect_with_level(opts, opts.version.level())
}

/// PUBLISH with every header flag under the test's control.
pub(crate) fn publish(
    version: Version,
    qos: u8,
    dup: bool,
    retain: bool,
    topic: &[u8],
    pid: u16,
    payload: &[u8],
) -> Vec<u8> {
    let header = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut body = field(topic);
    if qos > 0 {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    if version == Version::V5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(payload);
    packet(header, &body)
}

/// PUBACK (success; same bytes in both versions).
pub(crate) fn puback(pid: u16) -> Vec<u8> {
    packet(0x40, &pid.to_be_bytes())
}

/// PUBREC (success).
pub(crate) fn pubrec(pid: u16) -> Vec<u8> {
    packet(0x50, &pid.to_be_bytes())
}

/// PUBREL (success).
pub(crate) fn pubrel(pid: u16) -> Vec<u8> {
    packet(0x62, &pid.to_be_bytes())
}

/// PUBCOMP (success).
pub(crate) fn pubcomp(pid: u16) -> Vec<u8> {
    packet(0x70, &pid.to_be_bytes())
}

/// SUBSCRIBE to one filter.
pub(crate) fn subscribe(version: Version, pid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    if version == Version::V5 {
        body.push(0);
    }
    body.extend(field(filter.as_bytes()));
    body.push(qos);
    packet(0x82, &body)
}

/// PINGREQ.
pub(crate) fn pingreq() -> Vec<u8> {
    vec![0xC0, 0x00]
}

/// DISCONNECT (normal).
pub(crate) fn disconnect() -> Vec<u8> {
    vec![0xE0, 0x00]
}

/// Subscribes on `raw` and asserts the server granted `qos`.
pub(crate) async fn subscribe_ok(raw: &mut Raw, pid: u16, filter: &str, qos: u8) {
    raw.send(&subscribe(raw.version, pid, filter, qos)).await;
    let ack = raw.expect(kind::SUBACK).await;
    assert_eq!(ack.pid(), pid);
    let granted = match raw.version {
        Version::V311 => ack.body.get(2).copied(),
        Version::V5 => {
            let (props_len, used) = decode_varint(&ack.body[2..]);
            ack.body.get(2 + used + props_len).copied()
        }
    };
    assert_eq!(granted, Some(qos), "SUBACK {ack:?}");
}
