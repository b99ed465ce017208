//! A hand-rolled MQTT client connection over the project's codec: just enough for load
//! generation, with the hot loops left to the scenarios.
//!
//! Place in the data flow: scenario → [`Connection`] (encode into `wbuf`, decode from `rbuf`
//! with `tidegate-protocol`) → transport halves → socket. A client library would hide the
//! batching and allocation behaviour this tool has to control, so the connection exposes its
//! buffers and halves: a scenario's task encodes many packets into `wbuf` per wake-up, writes
//! them with one call, and decodes everything one read brought in.
//!
//! Buffers: `rbuf` is reused for the life of the connection. Decoded packets borrow its memory
//! (zero-copy `Bytes`), and once they are dropped `reserve` reclaims it in place, so reading
//! allocates only when a single packet outgrows the buffer.

use crate::transport::{self, Endpoint, ReadHalf, WriteHalf};
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tidegate_protocol::{
    ConnAck, Connect, ConnectProperties, DecodeError, Decoder, Disconnect, EncodeError, Packet,
    PacketId, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscribeFilter, SubscribeProperties,
    SubscriptionOptions, Utf8, Utf8Error,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest packet accepted from the broker.
pub const MAX_INCOMING_PACKET: u32 = 16 * 1024 * 1024;

/// Why a client connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The broker sent bytes that are not a valid packet.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// A packet could not be encoded (a bug or a bad option on our side).
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
    /// A client id or topic is not a valid MQTT string.
    #[error("string: {0}")]
    Utf8(#[from] Utf8Error),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// The broker sent DISCONNECT.
    #[error("broker sent DISCONNECT ({0:?})")]
    Disconnected(ReasonCode),
    /// A step took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// CONNACK refused the connection.
    #[error("connection refused: {0:?}")]
    Refused(ReasonCode),
    /// SUBACK refused a subscription.
    #[error("subscription refused: {0:?}")]
    SubscribeRefused(ReasonCode),
    /// A packet the client did not expect at this point.
    #[error("unexpected {0} from the broker")]
    Unexpected(&'static str),
}

/// What to put in CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Protocol version of the whole connection.
    pub version: ProtocolVersion,
    /// Client identifier.
    pub client_id: String,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds (0: off).
    pub keep_alive: u16,
    /// MQTT 5 Session Expiry Interval (seconds); ignored in 3.1.1.
    pub session_expiry: Option<u32>,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Give up on socket connect + CONNACK after this long.
    pub timeout: Duration,
    /// Read chunk size: large for message traffic, small for idle connections.
    pub read_chunk: usize,
}

/// One MQTT client connection.
#[derive(Debug)]
pub struct Connection {
    /// Reading side of the socket.
    pub rd: ReadHalf,
    /// Writing side of the socket.
    pub wr: WriteHalf,
    /// Bytes read and not yet decoded.
    pub rbuf: BytesMut,
    /// Encoded bytes not yet written.
    pub wbuf: BytesMut,
    /// The codec's incremental decoder.
    pub decoder: Decoder,
    /// Protocol version of this connection.
    pub version: ProtocolVersion,
    /// Keep alive period, if any: a PINGREQ goes out when nothing was written for this long.
    pub keep_alive: Option<Duration>,
    /// When bytes were last written (for keep alive).
    pub last_write: Instant,
    /// The broker's CONNACK.
    pub connack: ConnAck,
    read_chunk: usize,
}

/// The CONNECT packet `opts` describe (no will).
pub fn connect_packet(opts: &ConnectOptions) -> Result<Packet, ClientError> {
    Ok(Packet::Connect(Box::new(Connect {
        protocol: opts.version,
        clean_start: opts.clean_start,
        keep_alive: opts.keep_alive,
        client_id: Utf8::try_from(opts.client_id.as_str())?,
        will: None,
        username: opts.username.as_deref().map(Utf8::try_from).transpose()?,
        password: opts
            .password
            .as_ref()
            .map(|p| Bytes::copy_from_slice(p.as_bytes())),
        properties: ConnectProperties {
            session_expiry_interval: opts.session_expiry.filter(|_| opts.version.is_v5()),
            ..ConnectProperties::default()
        },
    })))
}

impl Connection {
    /// Connects, sends CONNECT and waits for a successful CONNACK.
    pub async fn open(
        endpoint: &Endpoint,
        source: Option<IpAddr>,
        opts: &ConnectOptions,
    ) -> Result<Connection, ClientError> {
        tokio::time::timeout(opts.timeout, Self::open_inner(endpoint, source, opts))
            .await
            .map_err(|_| ClientError::Timeout("CONNACK"))?
    }

    async fn open_inner(
        endpoint: &Endpoint,
        source: Option<IpAddr>,
        opts: &ConnectOptions,
    ) -> Result<Connection, ClientError> {
        let (rd, wr) = transport::connect(endpoint, source).await?;
        let mut conn = Connection {
            rd,
            wr,
            rbuf: BytesMut::with_capacity(opts.read_chunk * 2),
            wbuf: BytesMut::with_capacity(opts.read_chunk.min(4096)),
            decoder: Decoder::with_version(opts.version, MAX_INCOMING_PACKET),
            version: opts.version,
            keep_alive: (opts.keep_alive > 0)
                .then(|| Duration::from_secs(u64::from(opts.keep_alive))),
            last_write: Instant::now(),
            connack: ConnAck::default(),
            read_chunk: opts.read_chunk.max(64),
        };
        conn.queue(&connect_packet(opts)?)?;
        conn.flush().await?;
        match conn.recv().await? {
            Packet::ConnAck(ack) if ack.reason_code.is_success() => {
                conn.connack = ack;
                Ok(conn)
            }
            Packet::ConnAck(ack) => Err(ClientError::Refused(ack.reason_code)),
            other => Err(ClientError::Unexpected(other.name())),
        }
    }

    /// The broker's Receive Maximum (MQTT 5), else the protocol maximum: how many QoS 1/2
    /// publications may be unacknowledged at once.
    pub fn send_quota(&self) -> u16 {
        self.connack.properties.receive_maximum.unwrap_or(u16::MAX)
    }

    /// Encodes a packet at the end of the write buffer.
    pub fn queue(&mut self, packet: &Packet) -> Result<(), ClientError> {
        tidegate_protocol::encode(packet, self.version, &mut self.wbuf)?;
        Ok(())
    }

    /// Writes the whole write buffer.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.wbuf.is_empty() {
            self.wr.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            self.last_write = Instant::now();
        }
        Ok(())
    }

    /// Called by a scenario after its own `write`: drops the written bytes.
    pub fn wrote(&mut self, n: usize, now: Instant) {
        self.wbuf.advance(n.min(self.wbuf.len()));
        self.last_write = now;
    }

    /// Makes room for the next read without shrinking the chunk (see the module doc).
    pub fn prepare_read(&mut self) {
        self.rbuf.reserve(self.read_chunk);
    }

    /// Reads once more from the socket; the broker closing is an error.
    pub async fn read_more(&mut self) -> Result<(), ClientError> {
        self.prepare_read();
        let n = self.rd.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    /// Decodes one buffered packet, if a complete one is there.
    pub fn decode(&mut self) -> Result<Option<Packet>, ClientError> {
        Ok(self.decoder.decode(&mut self.rbuf)?)
    }

    /// The next packet, reading as needed. PINGRESP is consumed silently.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        loop {
            match self.decode()? {
                Some(Packet::PingResp) => continue,
                Some(Packet::Disconnect(d)) => {
                    return Err(ClientError::Disconnected(d.reason_code));
                }
                Some(p) => return Ok(p),
                None => self.read_more().await?,
            }
        }
    }

    /// Subscribes to `filters` (one SUBSCRIBE, packet id 1) and waits for the SUBACK. Any
    /// refused filter is an error: a benchmark without its subscriptions measures nothing.
    pub async fn subscribe(
        &mut self,
        filters: &[(Utf8, QoS)],
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let packet_id = PacketId::new(1).ok_or(ClientError::Unexpected("packet id 0"))?;
        let sub = Packet::Subscribe(Subscribe {
            packet_id,
            filters: filters
                .iter()
                .map(|(f, qos)| SubscribeFilter {
                    filter: f.clone(),
                    options: SubscriptionOptions {
                        qos: *qos,
                        ..SubscriptionOptions::default()
                    },
                })
                .collect(),
            properties: SubscribeProperties::default(),
        });
        self.queue(&sub)?;
        self.flush().await?;
        let ack = tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| ClientError::Timeout("SUBACK"))??;
        match ack {
            Packet::SubAck(ack) if ack.packet_id == packet_id => {
                match ack.reason_codes.iter().find(|rc| rc.as_u8() >= 0x80) {
                    Some(rc) => Err(ClientError::SubscribeRefused(*rc)),
                    None if ack.reason_codes.len() == filters.len() => Ok(()),
                    None => Err(ClientError::Unexpected(
                        "SUBACK with a wrong number of codes",
                    )),
                }
            }
            other => Err(ClientError::Unexpected(other.name())),
        }
    }

    /// When a PINGREQ is due if nothing else is written.
    pub fn ping_due(&self) -> Option<Instant> {
        self.keep_alive.map(|k| self.last_write + k)
    }

    /// Queues a PINGREQ if the keep alive period passed without a write.
    pub fn queue_ping_if_due(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.ping_due().is_some_and(|due| now >= due) && self.wbuf.is_empty() {
            self.queue(&Packet::PingReq)?;
            // Counted as written now so the next loop does not queue a second ping before
            // this one is flushed.
            self.last_write = now;
        }
        Ok(())
    }

    /// Sends DISCONNECT (in MQTT 5 optionally changing the session expiry, e.g. to 0 to drop
    /// a persistent session) and closes the socket. Errors are ignored: the connection is
    /// being thrown away either way.
    pub async fn disconnect(mut self, session_expiry: Option<u32>) {
        let mut d = Disconnect::default();
        if self.version.is_v5() {
            d.properties.session_expiry_interval = session_expiry;
        }
        if self.queue(&Packet::Disconnect(d)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
        }
        let _ = self.wr.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(version: ProtocolVersion) -> ConnectOptions {
        ConnectOptions {
            version,
            client_id: "c".to_owned(),
            clean_start: true,
            keep_alive: 60,
            session_expiry: Some(300),
            username: Some("u@quiet".to_owned()),
            password: Some("pw".to_owned()),
            timeout: Duration::from_secs(1),
            read_chunk: 1024,
        }
    }

    fn encoded(o: &ConnectOptions) -> Vec<u8> {
        let mut buf = BytesMut::new();
        tidegate_protocol::encode(&connect_packet(o).unwrap(), o.version, &mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn connect_v311_carries_username_and_password() {
        let mut want = vec![0x10, 26, 0, 4, b'M', b'Q', b'T', b'T', 4];
        // User name (0x80), password (0x40), clean session (0x02); no session expiry in 3.1.1.
        want.extend_from_slice(&[0xC2, 0, 60]);
        want.extend_from_slice(&[0, 1, b'c']);
        want.extend_from_slice(&[0, 7]);
        want.extend_from_slice(b"u@quiet");
        want.extend_from_slice(&[0, 2, b'p', b'w']);
        assert_eq!(encoded(&opts(ProtocolVersion::V311)), want);
    }

    #[test]
    fn connect_v5_carries_credentials_and_session_expiry() {
        let mut want = vec![0x10, 32, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2, 0, 60];
        // Properties: Session Expiry Interval (0x11) = 300.
        want.extend_from_slice(&[5, 0x11, 0, 0, 0x01, 0x2C]);
        want.extend_from_slice(&[0, 1, b'c', 0, 7]);
        want.extend_from_slice(b"u@quiet");
        want.extend_from_slice(&[0, 2, b'p', b'w']);
        assert_eq!(encoded(&opts(ProtocolVersion::V5)), want);
    }

    #[test]
    fn connect_without_credentials_sets_no_flags() {
        let mut o = opts(ProtocolVersion::V311);
        o.username = None;
        o.password = None;
        o.clean_start = false;
        let bytes = encoded(&o);
        assert_eq!(bytes.get(9), Some(&0x00), "connect flags in {bytes:x?}");
        assert_eq!(bytes.len(), 2 + 10 + 3);
    }

    #[test]
    fn invalid_username_is_an_error() {
        let mut o = opts(ProtocolVersion::V311);
        o.username = Some("nul\0inside".to_owned());
        assert!(matches!(connect_packet(&o), Err(ClientError::Utf8(_))));
    }
}
