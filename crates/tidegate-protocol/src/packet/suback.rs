//! SUBACK (spec 3.1.1 section 3.9, 5.0 section 3.9): one code per filter of the SUBSCRIBE. In
//! 3.1.1 the only failure code is 0x80, so any v5 failure code is sent as 0x80 and decoded back
//! as [`ReasonCode::UnspecifiedError`].

use crate::packet::read_packet_id;
use crate::property_codec::{decode_properties, emit_properties};
use crate::wire::{Reader, Sink};
use crate::{AckProperties, DecodeError, PacketId, ProtocolVersion, ReasonCode};

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// One per filter: GrantedQoS0 (Success)/1/2 or a failure code. In 3.1.1 any failure is
    /// encoded as 0x80.
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// SUBACK reason codes of 5.0 (section 3.9.3).
const REASONS: [ReasonCode; 12] = [
    ReasonCode::Success,
    ReasonCode::GrantedQoS1,
    ReasonCode::GrantedQoS2,
    ReasonCode::UnspecifiedError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::NotAuthorized,
    ReasonCode::TopicFilterInvalid,
    ReasonCode::PacketIdentifierInUse,
    ReasonCode::QuotaExceeded,
    ReasonCode::SharedSubscriptionsNotSupported,
    ReasonCode::SubscriptionIdentifiersNotSupported,
    ReasonCode::WildcardSubscriptionsNotSupported,
];

/// 3.1.1 return codes (section 3.9.3): granted QoS 0-2 or failure.
const V311_RETURN_CODES: [ReasonCode; 4] = [
    ReasonCode::Success,
    ReasonCode::GrantedQoS1,
    ReasonCode::GrantedQoS2,
    ReasonCode::UnspecifiedError,
];

impl SubAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<SubAck, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let (properties, allowed): (AckProperties, &[ReasonCode]) = if version.is_v5() {
            (decode_properties(r)?, &REASONS)
        } else {
            (AckProperties::default(), &V311_RETURN_CODES)
        };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            reason_codes.push(super::read_reason(
                r,
                allowed,
                "reason code not allowed in SUBACK",
            )?);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::Protocol(
                "SUBACK without a reason code (one per filter, [MQTT-3.8.4-6])",
            ));
        }
        Ok(SubAck {
            packet_id,
            reason_codes,
            properties,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.check(
            !self.reason_codes.is_empty(),
            "SUBACK without a reason code",
        );
        s.u16(self.packet_id.get());
        if version.is_v5() {
            emit_properties(&self.properties, s);
        }
        for &rc in &self.reason_codes {
            if version.is_v5() {
                s.check(REASONS.contains(&rc), "reason code not allowed in SUBACK");
                s.u8(rc.as_u8());
            } else if rc.is_success() {
                s.check(
                    V311_RETURN_CODES.contains(&rc),
                    "reason code not allowed in SUBACK",
                );
                s.u8(rc.as_u8());
            } else {
                s.u8(ReasonCode::UnspecifiedError.as_u8());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_util::{assert_wire, decode, encode_vec};
    use crate::{EncodeError, Packet, Utf8, encode};
    use bytes::BytesMut;

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn suback(codes: &[ReasonCode]) -> SubAck {
        SubAck {
            packet_id: PacketId::new(10).unwrap(),
            reason_codes: codes.to_vec(),
            properties: AckProperties::default(),
        }
    }

    /// The payload example of 3.1.1 section 3.9.3: success QoS 0, success QoS 2, failure.
    #[test]
    fn spec_example_3_1_1() {
        let p = suback(&[
            ReasonCode::Success,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ]);
        assert_wire(
            &Packet::SubAck(p),
            V311,
            &[0x90, 5, 0, 10, 0x00, 0x02, 0x80],
        );
    }

    #[test]
    fn v311_failures_collapse_to_0x80() {
        let p = suback(&[ReasonCode::NotAuthorized, ReasonCode::GrantedQoS1]);
        assert_eq!(
            encode_vec(&Packet::SubAck(p), V311),
            [0x90, 4, 0, 10, 0x80, 0x01]
        );
        assert!(matches!(
            decode(&[0x90, 3, 0, 10, 0x87], V311),
            Err(DecodeError::Protocol(_))
        ));
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(
                &Packet::SubAck(suback(&[ReasonCode::NoMatchingSubscribers])),
                V311,
                &mut buf
            ),
            Err(EncodeError::Invalid(_))
        ));
    }

    #[test]
    fn v5_codes_and_properties() {
        let mut p = suback(&[
            ReasonCode::GrantedQoS1,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::WildcardSubscriptionsNotSupported,
        ]);
        p.properties.user_properties = vec![(Utf8::from_static("k"), Utf8::from_static("v"))];
        #[rustfmt::skip]
        let bytes = [0x90, 13, 0, 10, 7, 0x26, 0, 1, b'k', 0, 1, b'v', 0x01, 0x8F, 0xA2];
        assert_wire(&Packet::SubAck(p), V5, &bytes);
        // 0x11 belongs to UNSUBACK.
        assert!(matches!(
            decode(&[0x90, 4, 0, 10, 0, 0x11], V5),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn empty_code_list_is_refused() {
        assert!(matches!(
            decode(&[0x90, 2, 0, 10], V311),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            decode(&[0x90, 3, 0, 10, 0], V5),
            Err(DecodeError::Protocol(_))
        ));
        let mut buf = BytesMut::new();
        assert!(encode(&Packet::SubAck(suback(&[])), V5, &mut buf).is_err());
    }
}
