//! CONNACK (spec 3.1.1 section 3.2, 5.0 section 3.2): the server's answer to CONNECT. In 3.1.1
//! the v5 reason code is carried as a return code 0..=5, mapped with
//! [`ReasonCode::to_v3_connack`] / [`ReasonCode::from_v3_connack`], so a v5-only code sent to
//! a 3.1.1 client arrives as its closest return code.

use crate::packet::read_reason;
use crate::property_codec::{decode_properties, emit_properties};
use crate::wire::{Reader, Sink};
use crate::{ConnAckProperties, DecodeError, ProtocolVersion, ReasonCode};

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// The server holds a session for this client.
    pub session_present: bool,
    /// v5 reason code; in 3.1.1 mapped to a return code with [`ReasonCode::to_v3_connack`].
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: ConnAckProperties,
}

/// The reason codes a v5 CONNACK may carry (spec 5.0 section 3.2.2.2).
const REASONS: [ReasonCode; 22] = [
    ReasonCode::Success,
    ReasonCode::UnspecifiedError,
    ReasonCode::MalformedPacket,
    ReasonCode::ProtocolError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::UnsupportedProtocolVersion,
    ReasonCode::ClientIdentifierNotValid,
    ReasonCode::BadUserNameOrPassword,
    ReasonCode::NotAuthorized,
    ReasonCode::ServerUnavailable,
    ReasonCode::ServerBusy,
    ReasonCode::Banned,
    ReasonCode::BadAuthenticationMethod,
    ReasonCode::TopicNameInvalid,
    ReasonCode::PacketTooLarge,
    ReasonCode::QuotaExceeded,
    ReasonCode::PayloadFormatInvalid,
    ReasonCode::RetainNotSupported,
    ReasonCode::QoSNotSupported,
    ReasonCode::UseAnotherServer,
    ReasonCode::ServerMoved,
    ReasonCode::ConnectionRateExceeded,
];

impl ConnAck {
    /// A CONNACK refusing the connection with `reason_code` (session not present, no
    /// properties).
    pub fn refuse(reason_code: ReasonCode) -> ConnAck {
        ConnAck {
            session_present: false,
            reason_code,
            properties: ConnAckProperties::default(),
        }
    }

    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<ConnAck, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::Malformed(
                "[MQTT-3.2.2-1] CONNACK acknowledge flags bits 7-1 are reserved",
            ));
        }
        let session_present = flags & 1 != 0;
        let (reason_code, properties) = if version.is_v5() {
            let rc = read_reason(r, &REASONS, "reason code not allowed in CONNACK")?;
            (rc, decode_properties(r)?)
        } else {
            let rc = ReasonCode::from_v3_connack(r.u8()?).ok_or(DecodeError::Protocol(
                "CONNACK return code above 5 (3.1.1 section 3.2.2.3)",
            ))?;
            (rc, ConnAckProperties::default())
        };
        if session_present && reason_code != ReasonCode::Success {
            return Err(DecodeError::Protocol(
                "session present with a refusal ([MQTT-3.2.2-4] in 3.1.1, [MQTT-3.2.2-6] in 5.0)",
            ));
        }
        r.finish("CONNACK has bytes after its last field")?;
        Ok(ConnAck {
            session_present,
            reason_code,
            properties,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.u8(u8::from(self.session_present));
        if version.is_v5() {
            s.check(
                REASONS.contains(&self.reason_code),
                "reason code not allowed in CONNACK",
            );
            s.check(
                !self.session_present || self.reason_code == ReasonCode::Success,
                "[MQTT-3.2.2-6] session present with a refusal",
            );
            s.u8(self.reason_code.as_u8());
            emit_properties(&self.properties, s);
        } else {
            let code = self.reason_code.to_v3_connack();
            s.check(
                !self.session_present || code == 0,
                "[MQTT-3.2.2-4] session present with a refusal",
            );
            s.u8(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_util::{assert_wire, decode, encode_vec};
    use crate::{Packet, QoS, Utf8};

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn v311_return_codes() {
        let ok = ConnAck {
            session_present: true,
            ..ConnAck::default()
        };
        assert_wire(&Packet::ConnAck(ok), V311, &[0x20, 0x02, 0x01, 0x00]);
        for (rc, code) in [
            (ReasonCode::UnsupportedProtocolVersion, 1),
            (ReasonCode::ClientIdentifierNotValid, 2),
            (ReasonCode::ServerUnavailable, 3),
            (ReasonCode::BadUserNameOrPassword, 4),
            (ReasonCode::NotAuthorized, 5),
        ] {
            assert_wire(
                &Packet::ConnAck(ConnAck::refuse(rc)),
                V311,
                &[0x20, 0x02, 0x00, code],
            );
        }
        // A v5-only code reaches a 3.1.1 client as its closest return code.
        let busy = Packet::ConnAck(ConnAck::refuse(ReasonCode::ServerBusy));
        assert_eq!(encode_vec(&busy, V311), [0x20, 0x02, 0x00, 0x03]);
        let banned = Packet::ConnAck(ConnAck::refuse(ReasonCode::Banned));
        assert_eq!(encode_vec(&banned, V311), [0x20, 0x02, 0x00, 0x05]);
        assert!(matches!(
            decode(&[0x20, 0x02, 0x00, 0x06], V311),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn v5_with_properties() {
        let p = ConnAck {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: ConnAckProperties {
                maximum_qos: Some(QoS::AtLeastOnce),
                assigned_client_identifier: Some(Utf8::from_static("id")),
                ..ConnAckProperties::default()
            },
        };
        #[rustfmt::skip]
        let bytes = [0x20, 0x0A, 0x00, 0x00, 0x07, 0x24, 0x01, 0x12, 0x00, 0x02, b'i', b'd'];
        assert_wire(&Packet::ConnAck(p), V5, &bytes);
        assert_wire(
            &Packet::ConnAck(ConnAck::refuse(ReasonCode::Banned)),
            V5,
            &[0x20, 0x03, 0x00, 0x8A, 0x00],
        );
    }

    #[test]
    fn v5_requires_property_length() {
        assert!(matches!(
            decode(&[0x20, 0x02, 0x00, 0x00], V5),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn reserved_flags_session_present_and_codes() {
        for v in [V311, V5] {
            let tail: &[u8] = if v.is_v5() { &[0x00] } else { &[] };
            let with = |flags: u8, code: u8| {
                let mut b = vec![0x20, 2 + tail.len() as u8, flags, code];
                b.extend_from_slice(tail);
                b
            };
            assert!(matches!(
                decode(&with(0x02, 0x00), v),
                Err(DecodeError::Malformed(_))
            ));
            let refusal = if v.is_v5() { 0x87 } else { 0x05 };
            assert!(matches!(
                decode(&with(0x01, refusal), v),
                Err(DecodeError::Protocol(_))
            ));
        }
        // 0x04 is Disconnect with Will Message: not a CONNACK code.
        assert!(matches!(
            decode(&[0x20, 0x03, 0x00, 0x04, 0x00], V5),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            decode(&[0x20, 0x04, 0x00, 0x00, 0x00, 0x00], V5),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn v5_connack_property_rules() {
        // Maximum QoS 2 is never sent, and a CONNECT-only property is refused.
        assert!(matches!(
            decode(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02], V5),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            decode(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x17, 0x01], V5),
            Err(DecodeError::Protocol(m)) if m.contains("CONNACK")
        ));
        // A repeated property.
        assert!(matches!(
            decode(&[0x20, 0x09, 0x00, 0x00, 0x06, 0x13, 0, 1, 0x13, 0, 2], V5),
            Err(DecodeError::Protocol(m)) if m.contains("MQTT-2.2.2-2")
        ));
    }
}
