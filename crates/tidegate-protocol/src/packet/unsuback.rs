//! UNSUBACK (spec 3.1.1 section 3.11, 5.0 section 3.11). In 3.1.1 it is only a packet
//! identifier; 5.0 adds properties and one reason code per filter of the UNSUBSCRIBE.

use crate::packet::{read_packet_id, read_reason};
use crate::property_codec::{decode_properties, emit_properties};
use crate::wire::{Reader, Sink};
use crate::{AckProperties, DecodeError, PacketId, ProtocolVersion, ReasonCode};

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5: one per filter (Success or NoSubscriptionExisted or a failure). Empty in 3.1.1.
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// UNSUBACK reason codes of 5.0 (section 3.11.3).
const REASONS: [ReasonCode; 7] = [
    ReasonCode::Success,
    ReasonCode::NoSubscriptionExisted,
    ReasonCode::UnspecifiedError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::NotAuthorized,
    ReasonCode::TopicFilterInvalid,
    ReasonCode::PacketIdentifierInUse,
];

impl UnsubAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<UnsubAck, DecodeError> {
        let packet_id = read_packet_id(r)?;
        if !version.is_v5() {
            r.finish("3.1.1 UNSUBACK has bytes after its packet identifier")?;
            return Ok(UnsubAck {
                packet_id,
                reason_codes: Vec::new(),
                properties: AckProperties::default(),
            });
        }
        let properties = decode_properties(r)?;
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            reason_codes.push(read_reason(
                r,
                &REASONS,
                "reason code not allowed in UNSUBACK",
            )?);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::Protocol(
                "UNSUBACK without a reason code (one per filter, [MQTT-3.11.3-1])",
            ));
        }
        Ok(UnsubAck {
            packet_id,
            reason_codes,
            properties,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.u16(self.packet_id.get());
        if !version.is_v5() {
            return;
        }
        s.check(
            !self.reason_codes.is_empty(),
            "UNSUBACK without a reason code",
        );
        emit_properties(&self.properties, s);
        for &rc in &self.reason_codes {
            s.check(REASONS.contains(&rc), "reason code not allowed in UNSUBACK");
            s.u8(rc.as_u8());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_util::{assert_wire, decode, encode_vec};
    use crate::{EncodeError, Packet, encode};
    use bytes::BytesMut;

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn unsuback(codes: &[ReasonCode]) -> UnsubAck {
        UnsubAck {
            packet_id: PacketId::new(0x0A0B).unwrap(),
            reason_codes: codes.to_vec(),
            properties: AckProperties::default(),
        }
    }

    #[test]
    fn v311_is_just_the_packet_id() {
        assert_wire(
            &Packet::UnsubAck(unsuback(&[])),
            V311,
            &[0xB0, 2, 0x0A, 0x0B],
        );
        // Reason codes do not exist in 3.1.1: dropped on encode.
        let p = unsuback(&[ReasonCode::NoSubscriptionExisted]);
        assert_eq!(
            encode_vec(&Packet::UnsubAck(p), V311),
            [0xB0, 2, 0x0A, 0x0B]
        );
        assert!(matches!(
            decode(&[0xB0, 3, 0x0A, 0x0B, 0], V311),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn v5_codes() {
        let p = unsuback(&[ReasonCode::Success, ReasonCode::NoSubscriptionExisted]);
        assert_wire(
            &Packet::UnsubAck(p),
            V5,
            &[0xB0, 5, 0x0A, 0x0B, 0, 0x00, 0x11],
        );
        assert!(matches!(
            decode(&[0xB0, 4, 0x0A, 0x0B, 0, 0x01], V5),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            decode(&[0xB0, 3, 0x0A, 0x0B, 0], V5),
            Err(DecodeError::Protocol(_))
        ));
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(&Packet::UnsubAck(unsuback(&[])), V5, &mut buf),
            Err(EncodeError::Invalid(_))
        ));
    }
}
