//! The incremental decoder and the encoder: the codec's public entry points.
//!
//! Place in the data flow: the connection driver appends socket bytes to a `BytesMut` and calls
//! [`Decoder::decode`] until it returns `Ok(None)`; the session's outgoing packets go through
//! [`encode`] into the driver's write buffer.
//!
//! Decoding is check-then-parse: the fixed header (type, flags, remaining length) is peeked and
//! validated first, the total size is compared with the maximum packet size, and only when the
//! whole frame is buffered is it split off (`split_to(..).freeze()`, no copy) and parsed.
//! Encoding measures and validates the packet first (nothing is written for a packet that
//! cannot be encoded), reserves once, then writes.

use crate::packet::{check_fixed_header, kind};
use crate::wire::{Counter, MAX_VAR_INT, VarInt, Writer, peek_var_int, put_var_int, var_int_len};
use crate::{Connect, DecodeError, EncodeError, Packet, ProtocolVersion};
use bytes::{Buf, BufMut, BytesMut};

/// Decodes packets from the front of a byte buffer, one at a time.
///
/// Before the version is known (a fresh server-side connection) the only packet accepted is
/// CONNECT; decoding it fixes the version for the rest of the connection. Clients create it with
/// [`Decoder::with_version`].
///
/// After an error the connection must be closed: the decoder does not resynchronise. A frame
/// that was complete when its error was found has been removed from the buffer; an error found
/// from the fixed header alone (bad flags, oversized, not CONNECT first) consumes nothing.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
    /// Created with [`Decoder::new`]: the peer is a client, whose first packet must be CONNECT
    /// and which may send it only once ([MQTT-3.1.0-1], [MQTT-3.1.0-2]).
    server: bool,
}

impl Decoder {
    /// A server-side decoder awaiting CONNECT. `max_packet_size` bounds the whole packet
    /// (fixed header included), checked before the body is buffered.
    pub fn new(max_packet_size: u32) -> Decoder {
        Decoder {
            version: None,
            max_packet_size,
            server: true,
        }
    }

    /// A decoder for a known version (client side, or tests). It decodes every packet type,
    /// including CONNECT, whose protocol level then replaces the version.
    pub fn with_version(version: ProtocolVersion, max_packet_size: u32) -> Decoder {
        Decoder {
            version: Some(version),
            max_packet_size,
            server: false,
        }
    }

    /// The protocol version, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Changes the maximum packet size (e.g. from the client's CONNECT property).
    pub fn set_max_packet_size(&mut self, max: u32) {
        self.max_packet_size = max;
    }

    /// The maximum packet size currently enforced.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Decodes one packet from the front of `buf`, removing its bytes. `Ok(None)` means the
    /// buffer holds an incomplete packet: nothing is consumed, read more and call again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let packet_type = first >> 4;
        match self.version {
            None if packet_type != kind::CONNECT => {
                return Err(DecodeError::Protocol(
                    "[MQTT-3.1.0-1] first packet must be CONNECT",
                ));
            }
            Some(_) if self.server && packet_type == kind::CONNECT => {
                return Err(DecodeError::Protocol(
                    "[MQTT-3.1.0-2] second CONNECT on a connection",
                ));
            }
            Some(ProtocolVersion::V31) => {
                return Err(DecodeError::UnsupportedProtocolVersion { level: 3 });
            }
            _ => {}
        }
        check_fixed_header(first, self.version)?;

        let Some(after_first) = buf.get(1..) else {
            return Ok(None);
        };
        let (remaining, len_bytes) = match peek_var_int(after_first)? {
            VarInt::Complete(v, n) => (v as usize, n),
            VarInt::Incomplete => return Ok(None),
        };
        let header_len = 1 + len_bytes;
        let total = header_len + remaining;
        if total as u64 > u64::from(self.max_packet_size) {
            return Err(DecodeError::PacketTooLarge {
                size: total as u64,
                max: self.max_packet_size,
            });
        }
        if buf.len() < total {
            return Ok(None);
        }

        let mut body = buf.split_to(total).freeze();
        body.advance(header_len);
        let packet = match self.version {
            Some(v) if packet_type != kind::CONNECT => Packet::decode_body(first, &body, v)?,
            _ => {
                let connect = Connect::decode(&body)?;
                self.version = Some(connect.protocol);
                Packet::Connect(Box::new(connect))
            }
        };
        Ok(Some(packet))
    }
}

/// Measures `packet` for `version` and checks it can be encoded; the remaining length.
fn remaining_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    if version == ProtocolVersion::V31 {
        return Err(EncodeError::NotInVersion("MQTT 3.1"));
    }
    if matches!(packet, Packet::Auth(_)) && !version.is_v5() {
        return Err(EncodeError::NotInVersion("AUTH"));
    }
    let mut c = Counter::default();
    packet.emit_body(version, &mut c);
    let remaining = c.result()?;
    if remaining > MAX_VAR_INT as usize {
        return Err(EncodeError::TooLarge(remaining));
    }
    Ok(remaining)
}

/// Appends the encoding of `packet` for `version` to `buf`.
///
/// Nothing is appended when it returns an error. Fields that do not exist in the target
/// version (properties and reason codes in 3.1.1) are left out; a v5 failure code in a 3.1.1
/// SUBACK is sent as 0x80 and a CONNACK reason code as its 3.1.1 return code.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let remaining = remaining_len(packet, version)?;
    buf.reserve(1 + var_int_len(remaining) + remaining);
    buf.put_u8(packet.first_byte());
    put_var_int(buf, remaining);
    packet.emit_body(version, &mut Writer(buf));
    Ok(())
}

/// The number of bytes [`encode`] would append (fixed header included), used to honour a
/// peer's Maximum Packet Size without encoding first.
///
/// For a packet [`encode`] refuses, this is the size its fields would take; use
/// [`try_encoded_len`] to learn both at once.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let mut c = Counter::default();
    packet.emit_body(version, &mut c);
    1 + var_int_len(c.len) + c.len
}

/// Like [`encoded_len`], but fails exactly when [`encode`] would.
pub fn try_encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let remaining = remaining_len(packet, version)?;
    Ok(1 + var_int_len(remaining) + remaining)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Disconnect, PacketId, PubResponse, Publish, PublishProperties, QoS, ReasonCode, Utf8,
    };
    use bytes::Bytes;

    const CONNECT_V311: [u8; 15] = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c',
    ];
    const CONNECT_V5: [u8; 16] = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'c',
    ];

    #[test]
    fn server_decoder_learns_the_version_from_connect() {
        for (bytes, v) in [
            (&CONNECT_V311[..], ProtocolVersion::V311),
            (&CONNECT_V5[..], ProtocolVersion::V5),
        ] {
            let mut d = Decoder::new(1024);
            assert_eq!(d.version(), None);
            let mut buf = BytesMut::from(bytes);
            let p = d.decode(&mut buf).unwrap().unwrap();
            assert!(matches!(p, Packet::Connect(c) if c.protocol == v));
            assert_eq!(d.version(), Some(v));
            // Later packets use that version.
            buf.extend_from_slice(&[0xC0, 0x00]);
            assert_eq!(d.decode(&mut buf), Ok(Some(Packet::PingReq)));
        }
    }

    #[test]
    fn first_packet_must_be_connect() {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::Protocol(
                "[MQTT-3.1.0-1] first packet must be CONNECT"
            ))
        );
        // Refused from the first byte, before the rest arrives.
        let mut buf = BytesMut::from(&[0x30][..]);
        assert!(matches!(d.decode(&mut buf), Err(DecodeError::Protocol(_))));
    }

    #[test]
    fn second_connect_is_a_protocol_error_on_the_server() {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&CONNECT_V311[..]);
        buf.extend_from_slice(&CONNECT_V311);
        assert!(d.decode(&mut buf).unwrap().is_some());
        assert!(matches!(
            d.decode(&mut buf),
            Err(DecodeError::Protocol(m)) if m.contains("MQTT-3.1.0-2")
        ));
        // A client-side/test decoder accepts CONNECT at any time, and adopts its version.
        let mut d = Decoder::with_version(ProtocolVersion::V311, 1024);
        let mut buf = BytesMut::from(&CONNECT_V5[..]);
        assert!(d.decode(&mut buf).unwrap().is_some());
        assert_eq!(d.version(), Some(ProtocolVersion::V5));
    }

    #[test]
    fn unsupported_version_leaves_the_version_unknown() {
        let mut d = Decoder::new(1024);
        let mut bytes = CONNECT_V311;
        bytes[8] = 3;
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::UnsupportedProtocolVersion { level: 3 })
        );
        assert_eq!(d.version(), None);
        let mut d = Decoder::with_version(ProtocolVersion::V31, 1024);
        let mut buf = BytesMut::from(&[0xC0, 0][..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(DecodeError::UnsupportedProtocolVersion { level: 3 })
        ));
    }

    #[test]
    fn incomplete_frames_consume_nothing() {
        let mut d = Decoder::new(1024);
        for cut in 0..CONNECT_V5.len() {
            let mut buf = BytesMut::from(&CONNECT_V5[..cut]);
            assert_eq!(d.decode(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
        assert_eq!(d.version(), None);
    }

    #[test]
    fn too_large_is_refused_from_the_header() {
        let mut d = Decoder::with_version(ProtocolVersion::V5, 100);
        // Remaining length 16,384: only the fixed header is buffered.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x01][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::PacketTooLarge {
                size: 16_388,
                max: 100
            })
        );
        assert_eq!(buf.len(), 4);
        // The limit counts the fixed header: 98 + 2 = 100 fits, 99 + 2 does not.
        let mut buf = BytesMut::from(&[0x30, 98][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        let mut buf = BytesMut::from(&[0x30, 99][..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(DecodeError::PacketTooLarge { size: 101, .. })
        ));
        d.set_max_packet_size(101);
        assert_eq!(d.max_packet_size(), 101);
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn bad_fixed_header_flags_are_malformed_before_the_body() {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let mut d = Decoder::with_version(v, 1024);
            // PUBREL/SUBSCRIBE/UNSUBSCRIBE without 0010, PUBACK/PINGREQ with flags, PUBLISH
            // QoS 3, PUBLISH DUP on QoS 0, reserved type 0: all from the first byte alone.
            for first in [0x60u8, 0x80, 0xA3, 0x41, 0xC8, 0x36, 0x38, 0x00] {
                let mut buf = BytesMut::from(&[first][..]);
                let e = d.decode(&mut buf).unwrap_err();
                assert!(matches!(e, DecodeError::Malformed(_)), "{first:#x}: {e:?}");
                assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
                assert_eq!(buf.len(), 1, "nothing consumed");
            }
        }
        let mut d = Decoder::with_version(ProtocolVersion::V311, 1024);
        let mut buf = BytesMut::from(&[0xF0, 0x00][..]);
        assert!(matches!(d.decode(&mut buf), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn remaining_length_of_five_bytes_is_malformed() {
        let mut d = Decoder::with_version(ProtocolVersion::V311, u32::MAX);
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
        assert!(matches!(d.decode(&mut buf), Err(DecodeError::Malformed(_))));
        // Three continuation bytes so far: still just incomplete.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn decodes_back_to_back_packets() {
        let mut d = Decoder::with_version(ProtocolVersion::V5, 1024);
        let mut buf = BytesMut::new();
        let ack = Packet::PubAck(PubResponse::success(PacketId::new(7).unwrap()));
        let disc = Packet::Disconnect(Disconnect::with_reason(ReasonCode::ServerBusy));
        encode(&ack, ProtocolVersion::V5, &mut buf).unwrap();
        encode(&Packet::PingResp, ProtocolVersion::V5, &mut buf).unwrap();
        encode(&disc, ProtocolVersion::V5, &mut buf).unwrap();
        assert_eq!(d.decode(&mut buf), Ok(Some(ack)));
        assert_eq!(d.decode(&mut buf), Ok(Some(Packet::PingResp)));
        assert_eq!(d.decode(&mut buf), Ok(Some(disc)));
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn encode_appends_and_refuses_cleanly() {
        let mut buf = BytesMut::from(&b"xy"[..]);
        encode(&Packet::PingReq, ProtocolVersion::V311, &mut buf).unwrap();
        assert_eq!(&buf[..], b"xy\xC0\x00");
        assert_eq!(
            encode(&Packet::PingReq, ProtocolVersion::V31, &mut buf),
            Err(EncodeError::NotInVersion("MQTT 3.1"))
        );
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn oversized_packet_is_refused_not_truncated() {
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Utf8::from_static("t"),
            packet_id: None,
            payload: Bytes::from(vec![0u8; MAX_VAR_INT as usize]),
            properties: PublishProperties::default(),
        });
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(&p, ProtocolVersion::V311, &mut buf),
            Err(EncodeError::TooLarge(_))
        ));
        assert!(buf.is_empty());
        assert!(try_encoded_len(&p, ProtocolVersion::V311).is_err());
        assert!(encoded_len(&p, ProtocolVersion::V311) > MAX_VAR_INT as usize);
    }
}
