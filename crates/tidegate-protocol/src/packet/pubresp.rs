//! PUBACK, PUBREC, PUBREL and PUBCOMP (spec 3.1.1 sections 3.4-3.7, 5.0 sections 3.4-3.7): the
//! QoS 1 and QoS 2 acknowledgements, one shape for all four.
//!
//! In 5.0 the reason code and the property length may be left out: a remaining length of 2
//! means Success without properties, 3 means a reason code without properties. The encoder
//! uses the first short form, so the common successful ack is four bytes as in 3.1.1, and
//! always writes the property length after a non-success reason code (see `emit`).

use crate::packet::{kind, read_packet_id, read_reason};
use crate::property_codec::{decode_properties, emit_properties, properties_len};
use crate::wire::{Reader, Sink};
use crate::{AckProperties, DecodeError, PacketId, ProtocolVersion, ReasonCode};

/// PUBACK, PUBREC, PUBREL or PUBCOMP (which one is the [`crate::Packet`] variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// The acknowledged packet identifier.
    pub packet_id: PacketId,
    /// MQTT 5 reason code (Success when absent on the wire).
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// Reason codes of PUBACK and PUBREC (spec 5.0 sections 3.4.2.1, 3.5.2.1).
const PUBACK_REASONS: [ReasonCode; 9] = [
    ReasonCode::Success,
    ReasonCode::NoMatchingSubscribers,
    ReasonCode::UnspecifiedError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::NotAuthorized,
    ReasonCode::TopicNameInvalid,
    ReasonCode::PacketIdentifierInUse,
    ReasonCode::QuotaExceeded,
    ReasonCode::PayloadFormatInvalid,
];

/// Reason codes of PUBREL and PUBCOMP (spec 5.0 sections 3.6.2.1, 3.7.2.1).
const PUBREL_REASONS: [ReasonCode; 2] = [ReasonCode::Success, ReasonCode::PacketIdentifierNotFound];

/// The allowed reason codes and the error naming the packet, by packet type.
fn rules(packet_type: u8) -> (&'static [ReasonCode], &'static str) {
    match packet_type {
        kind::PUBACK => (&PUBACK_REASONS, "reason code not allowed in PUBACK"),
        kind::PUBREC => (&PUBACK_REASONS, "reason code not allowed in PUBREC"),
        kind::PUBREL => (&PUBREL_REASONS, "reason code not allowed in PUBREL"),
        _ => (&PUBREL_REASONS, "reason code not allowed in PUBCOMP"),
    }
}

impl PubResponse {
    /// A successful acknowledgement without properties.
    pub fn success(packet_id: PacketId) -> PubResponse {
        PubResponse {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }

    /// An acknowledgement with a reason code and no properties.
    pub fn with_reason(packet_id: PacketId, reason_code: ReasonCode) -> PubResponse {
        PubResponse {
            packet_id,
            reason_code,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(
        packet_type: u8,
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<PubResponse, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let mut ack = PubResponse::success(packet_id);
        if version.is_v5() && !r.is_empty() {
            let (allowed, why) = rules(packet_type);
            ack.reason_code = read_reason(r, allowed, why)?;
            if !r.is_empty() {
                ack.properties = decode_properties(r)?;
            }
        }
        r.finish("acknowledgement has bytes after its last field")?;
        Ok(ack)
    }

    pub(crate) fn emit<S: Sink>(&self, packet_type: u8, version: ProtocolVersion, s: &mut S) {
        s.u16(self.packet_id.get());
        if !version.is_v5() {
            return;
        }
        let (allowed, why) = rules(packet_type);
        s.check(allowed.contains(&self.reason_code), why);
        // The short form without a property length (remaining length 1 or 3) is valid, but
        // several client libraries (rumqttc 0.25 among them) fail to read it; Mosquitto always
        // writes the property length after a reason code, and so do we.
        if self.reason_code != ReasonCode::Success || properties_len(&self.properties) > 0 {
            s.u8(self.reason_code.as_u8());
            emit_properties(&self.properties, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_util::{assert_wire, decode};
    use crate::{EncodeError, Packet, Utf8, encode};
    use bytes::BytesMut;

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn id(v: u16) -> PacketId {
        PacketId::new(v).unwrap()
    }

    #[test]
    fn v311_all_four() {
        let ack = PubResponse::success(id(0x0102));
        assert_wire(&Packet::PubAck(ack.clone()), V311, &[0x40, 2, 1, 2]);
        assert_wire(&Packet::PubRec(ack.clone()), V311, &[0x50, 2, 1, 2]);
        assert_wire(&Packet::PubRel(ack.clone()), V311, &[0x62, 2, 1, 2]);
        assert_wire(&Packet::PubComp(ack), V311, &[0x70, 2, 1, 2]);
        // 3.1.1 acks have no reason code: a third byte is malformed.
        assert!(matches!(
            decode(&[0x40, 3, 1, 2, 0], V311),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn v5_short_and_long_forms() {
        // Success without properties: the 2-byte body, like every broker sends.
        assert_wire(
            &Packet::PubAck(PubResponse::success(id(1))),
            V5,
            &[0x40, 2, 0, 1],
        );
        // A reason code without properties: written with an empty property block (see `emit`),
        // while the 3-byte form is still accepted on decode.
        assert_wire(
            &Packet::PubRec(PubResponse::with_reason(
                id(1),
                ReasonCode::NoMatchingSubscribers,
            )),
            V5,
            &[0x50, 4, 0, 1, 0x10, 0],
        );
        assert_wire(
            &Packet::PubComp(PubResponse::with_reason(
                id(1),
                ReasonCode::PacketIdentifierNotFound,
            )),
            V5,
            &[0x70, 4, 0, 1, 0x92, 0],
        );
        assert_eq!(
            decode(&[0x50, 3, 0, 1, 0x10], V5),
            Ok(Packet::PubRec(PubResponse::with_reason(
                id(1),
                ReasonCode::NoMatchingSubscribers
            )))
        );
        // With a reason string.
        let mut ack = PubResponse::success(id(1));
        ack.properties.reason_string = Some(Utf8::from_static("ok"));
        assert_wire(
            &Packet::PubAck(ack),
            V5,
            &[0x40, 9, 0, 1, 0x00, 5, 0x1F, 0, 2, b'o', b'k'],
        );
        // Explicit success with an empty property block is accepted on decode.
        assert_eq!(
            decode(&[0x62, 4, 0, 1, 0, 0], V5),
            Ok(Packet::PubRel(PubResponse::success(id(1))))
        );
        assert_eq!(
            decode(&[0x62, 3, 0, 1, 0], V5),
            Ok(Packet::PubRel(PubResponse::success(id(1))))
        );
    }

    #[test]
    fn reason_codes_are_checked_per_packet() {
        // PUBREL may not carry No Matching Subscribers; PUBACK may not carry 0x92.
        assert!(matches!(
            decode(&[0x62, 3, 0, 1, 0x10], V5),
            Err(DecodeError::Protocol(m)) if m.contains("PUBREL")
        ));
        assert!(matches!(
            decode(&[0x40, 3, 0, 1, 0x92], V5),
            Err(DecodeError::Protocol(m)) if m.contains("PUBACK")
        ));
        assert!(matches!(
            decode(&[0x40, 3, 0, 1, 0x03], V5),
            Err(DecodeError::Protocol(_))
        ));
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(
                &Packet::PubRel(PubResponse::with_reason(id(1), ReasonCode::QuotaExceeded)),
                V5,
                &mut buf
            ),
            Err(EncodeError::Invalid(_))
        ));
    }

    #[test]
    fn packet_id_zero_and_lengths() {
        assert!(matches!(
            decode(&[0x40, 2, 0, 0], V5),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            decode(&[0x40, 1, 0], V5),
            Err(DecodeError::Malformed(_))
        ));
        // Property length longer than what follows.
        assert!(matches!(
            decode(&[0x40, 4, 0, 1, 0, 3], V5),
            Err(DecodeError::Malformed(_))
        ));
        // A property an ack may not carry.
        assert!(matches!(
            decode(&[0x40, 6, 0, 1, 0, 2, 0x01, 1], V5),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn v311_drops_v5_fields() {
        let mut ack = PubResponse::with_reason(id(9), ReasonCode::QuotaExceeded);
        ack.properties.reason_string = Some(Utf8::from_static("full"));
        let mut buf = BytesMut::new();
        encode(&Packet::PubAck(ack), V311, &mut buf).unwrap();
        assert_eq!(&buf[..], [0x40, 2, 0, 9]);
    }
}
