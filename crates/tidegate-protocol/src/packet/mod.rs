//! The MQTT control packets as plain values, one file per packet kind, each with its decoding,
//! its encoding and byte-literal tests. The four QoS acknowledgements (PUBACK, PUBREC, PUBREL,
//! PUBCOMP) share [`PubResponse`] because they have the same shape.
//!
//! Place in the data flow: [`crate::Decoder`] checks the fixed header with
//! `check_fixed_header`, splits a whole frame off the connection buffer and hands its body to
//! `Packet::decode_body` (or `Connect::decode`); [`crate::encode`] calls `Packet::emit_body`
//! twice, to measure and to write.
//!
//! In MQTT 3.1.1, reason codes and properties do not exist on the wire: decoding fills them with
//! their defaults (Success, empty properties) and encoding leaves them out.

mod auth;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod pubresp;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use publish::Publish;
pub use pubresp::PubResponse;
pub use suback::SubAck;
pub use subscribe::{Subscribe, SubscribeFilter};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;

use crate::wire::{Reader, Sink};
use crate::{DecodeError, PacketId, ProtocolVersion, ReasonCode};
use bytes::Bytes;

/// Any MQTT control packet.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 only.
    Auth(Auth),
}

/// Fixed header packet type numbers.
pub(crate) mod kind {
    pub(crate) const CONNECT: u8 = 1;
    pub(crate) const CONNACK: u8 = 2;
    pub(crate) const PUBLISH: u8 = 3;
    pub(crate) const PUBACK: u8 = 4;
    pub(crate) const PUBREC: u8 = 5;
    pub(crate) const PUBREL: u8 = 6;
    pub(crate) const PUBCOMP: u8 = 7;
    pub(crate) const SUBSCRIBE: u8 = 8;
    pub(crate) const SUBACK: u8 = 9;
    pub(crate) const UNSUBSCRIBE: u8 = 10;
    pub(crate) const UNSUBACK: u8 = 11;
    pub(crate) const PINGREQ: u8 = 12;
    pub(crate) const PINGRESP: u8 = 13;
    pub(crate) const DISCONNECT: u8 = 14;
    pub(crate) const AUTH: u8 = 15;
}

impl Packet {
    /// The packet type number of the fixed header (1 = CONNECT ... 15 = AUTH).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => kind::CONNECT,
            Packet::ConnAck(_) => kind::CONNACK,
            Packet::Publish(_) => kind::PUBLISH,
            Packet::PubAck(_) => kind::PUBACK,
            Packet::PubRec(_) => kind::PUBREC,
            Packet::PubRel(_) => kind::PUBREL,
            Packet::PubComp(_) => kind::PUBCOMP,
            Packet::Subscribe(_) => kind::SUBSCRIBE,
            Packet::SubAck(_) => kind::SUBACK,
            Packet::Unsubscribe(_) => kind::UNSUBSCRIBE,
            Packet::UnsubAck(_) => kind::UNSUBACK,
            Packet::PingReq => kind::PINGREQ,
            Packet::PingResp => kind::PINGRESP,
            Packet::Disconnect(_) => kind::DISCONNECT,
            Packet::Auth(_) => kind::AUTH,
        }
    }

    /// A short upper-case name for logs ("PUBLISH").
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }

    /// The first byte of the fixed header: type and flags.
    pub(crate) fn first_byte(&self) -> u8 {
        let flags = match self {
            Packet::Publish(p) => p.header_flags(),
            // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
            _ => 0,
        };
        (self.packet_type() << 4) | flags
    }

    /// Decodes the body of any packet but CONNECT (whose body decides the version itself).
    /// `first` is the fixed header's first byte, already checked by [`check_fixed_header`].
    pub(crate) fn decode_body(
        first: u8,
        body: &Bytes,
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        let mut r = Reader::new(body);
        let r = &mut r;
        let v = version;
        let packet = match first >> 4 {
            kind::CONNECT => Packet::Connect(Box::new(Connect::decode(body)?)),
            kind::CONNACK => Packet::ConnAck(ConnAck::decode(r, v)?),
            kind::PUBLISH => Packet::Publish(Publish::decode(first & 0x0F, r, v)?),
            kind::PUBACK => Packet::PubAck(PubResponse::decode(kind::PUBACK, r, v)?),
            kind::PUBREC => Packet::PubRec(PubResponse::decode(kind::PUBREC, r, v)?),
            kind::PUBREL => Packet::PubRel(PubResponse::decode(kind::PUBREL, r, v)?),
            kind::PUBCOMP => Packet::PubComp(PubResponse::decode(kind::PUBCOMP, r, v)?),
            kind::SUBSCRIBE => Packet::Subscribe(Subscribe::decode(r, v)?),
            kind::SUBACK => Packet::SubAck(SubAck::decode(r, v)?),
            kind::UNSUBSCRIBE => Packet::Unsubscribe(Unsubscribe::decode(r, v)?),
            kind::UNSUBACK => Packet::UnsubAck(UnsubAck::decode(r, v)?),
            kind::PINGREQ => {
                r.finish("PINGREQ has a non-empty body")?;
                Packet::PingReq
            }
            kind::PINGRESP => {
                r.finish("PINGRESP has a non-empty body")?;
                Packet::PingResp
            }
            kind::DISCONNECT => Packet::Disconnect(Disconnect::decode(r, v)?),
            kind::AUTH => Packet::Auth(Auth::decode(r, v)?),
            _ => return Err(DecodeError::Malformed("packet type 0 is reserved")),
        };
        Ok(packet)
    }

    /// Writes (or measures) the variable header and payload for `version`.
    pub(crate) fn emit_body<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        match self {
            Packet::Connect(p) => p.emit(version, s),
            Packet::ConnAck(p) => p.emit(version, s),
            Packet::Publish(p) => p.emit(version, s),
            Packet::PubAck(p) => p.emit(kind::PUBACK, version, s),
            Packet::PubRec(p) => p.emit(kind::PUBREC, version, s),
            Packet::PubRel(p) => p.emit(kind::PUBREL, version, s),
            Packet::PubComp(p) => p.emit(kind::PUBCOMP, version, s),
            Packet::Subscribe(p) => p.emit(version, s),
            Packet::SubAck(p) => p.emit(version, s),
            Packet::Unsubscribe(p) => p.emit(version, s),
            Packet::UnsubAck(p) => p.emit(version, s),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(p) => p.emit(version, s),
            Packet::Auth(p) => p.emit(version, s),
        }
    }
}

/// Checks the first byte of a fixed header before anything else of the packet is read, so a
/// bad type or flag is refused without waiting for the body. `version` is `None` before CONNECT.
pub(crate) fn check_fixed_header(
    first: u8,
    version: Option<ProtocolVersion>,
) -> Result<(), DecodeError> {
    let flags = first & 0x0F;
    match first >> 4 {
        0 => Err(DecodeError::Malformed("packet type 0 is reserved")),
        kind::PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                Err(DecodeError::Malformed(
                    "[MQTT-3.3.1-4] PUBLISH with both QoS bits set",
                ))
            } else if qos == 0 && flags & 0b1000 != 0 {
                Err(DecodeError::Malformed(
                    "[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH",
                ))
            } else {
                Ok(())
            }
        }
        kind::PUBREL if flags != 0b0010 => Err(DecodeError::Malformed(
            "[MQTT-3.6.1-1] PUBREL fixed header flags must be 0010",
        )),
        kind::SUBSCRIBE if flags != 0b0010 => Err(DecodeError::Malformed(
            "[MQTT-3.8.1-1] SUBSCRIBE fixed header flags must be 0010",
        )),
        kind::UNSUBSCRIBE if flags != 0b0010 => Err(DecodeError::Malformed(
            "[MQTT-3.10.1-1] UNSUBSCRIBE fixed header flags must be 0010",
        )),
        kind::PUBREL | kind::SUBSCRIBE | kind::UNSUBSCRIBE => Ok(()),
        kind::AUTH if version.is_some_and(|v| !v.is_v5()) => Err(DecodeError::Malformed(
            "packet type 15 (AUTH) does not exist in MQTT 3.1.1",
        )),
        _ if flags != 0 => Err(DecodeError::Malformed(
            "[MQTT-2.2.2-1] reserved fixed header flags must be 0",
        )),
        _ => Ok(()),
    }
}

/// Reads a packet identifier that must be non-zero ([MQTT-2.2.1-3] for PUBLISH, SUBSCRIBE and
/// UNSUBSCRIBE; the acknowledgements echo one, so zero cannot be valid there either).
pub(crate) fn read_packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::Protocol("[MQTT-2.2.1-3] packet identifier 0"))
}

/// Reads a reason code byte and checks it is one `allowed` lists for this packet.
pub(crate) fn read_reason(
    r: &mut Reader<'_>,
    allowed: &[ReasonCode],
    why: &'static str,
) -> Result<ReasonCode, DecodeError> {
    let b = r.u8()?;
    allowed
        .iter()
        .copied()
        .find(|c| c.as_u8() == b)
        .ok_or(DecodeError::Protocol(why))
}

#[cfg(test)]
pub(crate) mod test_util;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_header_flags() {
        let v5 = Some(ProtocolVersion::V5);
        assert!(check_fixed_header(0x30, v5).is_ok());
        assert!(check_fixed_header(0x3D, v5).is_ok()); // DUP, QoS 2, retain
        assert!(check_fixed_header(0x36, v5).is_err()); // QoS 3
        assert!(check_fixed_header(0x38, v5).is_err()); // DUP on QoS 0
        assert!(check_fixed_header(0x62, v5).is_ok());
        assert!(check_fixed_header(0x60, v5).is_err());
        assert!(check_fixed_header(0x82, v5).is_ok());
        assert!(check_fixed_header(0x83, v5).is_err());
        assert!(check_fixed_header(0xA2, v5).is_ok());
        assert!(check_fixed_header(0xA0, v5).is_err());
        for t in [1u8, 2, 4, 5, 7, 9, 11, 12, 13, 14, 15] {
            assert!(check_fixed_header(t << 4, v5).is_ok(), "type {t}");
            assert!(check_fixed_header((t << 4) | 1, v5).is_err(), "type {t}");
        }
        assert!(check_fixed_header(0x00, v5).is_err());
        assert!(check_fixed_header(0xF0, Some(ProtocolVersion::V311)).is_err());
    }

    #[test]
    fn first_byte_carries_fixed_flags() {
        let ack = PubResponse::success(PacketId::new(1).unwrap());
        assert_eq!(Packet::PubRel(ack.clone()).first_byte(), 0x62);
        assert_eq!(Packet::PubAck(ack).first_byte(), 0x40);
        assert_eq!(Packet::PingReq.first_byte(), 0xC0);
        assert_eq!(Packet::PingResp.first_byte(), 0xD0);
    }
}
