//! DISCONNECT (spec 3.1.1 section 3.14, 5.0 section 3.14). In 3.1.1 it has no body. In 5.0
//! either side may send it with a reason code; a remaining length of 0 means Normal
//! disconnection without properties and 1 a reason code without properties. Both are decoded;
//! the encoder writes only the first short form (see `emit`).

use crate::packet::read_reason;
use crate::property_codec::{decode_properties, emit_properties, properties_len};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, DisconnectProperties, ProtocolVersion, ReasonCode};

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// MQTT 5 reason code; Success (normal disconnection) in 3.1.1.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

/// DISCONNECT reason codes of 5.0 (section 3.14.2.1).
const REASONS: [ReasonCode; 29] = [
    ReasonCode::Success,
    ReasonCode::DisconnectWithWillMessage,
    ReasonCode::UnspecifiedError,
    ReasonCode::MalformedPacket,
    ReasonCode::ProtocolError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::NotAuthorized,
    ReasonCode::ServerBusy,
    ReasonCode::ServerShuttingDown,
    ReasonCode::KeepAliveTimeout,
    ReasonCode::SessionTakenOver,
    ReasonCode::TopicFilterInvalid,
    ReasonCode::TopicNameInvalid,
    ReasonCode::ReceiveMaximumExceeded,
    ReasonCode::TopicAliasInvalid,
    ReasonCode::PacketTooLarge,
    ReasonCode::MessageRateTooHigh,
    ReasonCode::QuotaExceeded,
    ReasonCode::AdministrativeAction,
    ReasonCode::PayloadFormatInvalid,
    ReasonCode::RetainNotSupported,
    ReasonCode::QoSNotSupported,
    ReasonCode::UseAnotherServer,
    ReasonCode::ServerMoved,
    ReasonCode::SharedSubscriptionsNotSupported,
    ReasonCode::ConnectionRateExceeded,
    ReasonCode::MaximumConnectTime,
    ReasonCode::SubscriptionIdentifiersNotSupported,
    ReasonCode::WildcardSubscriptionsNotSupported,
];

impl Disconnect {
    /// A DISCONNECT with a reason code and no properties.
    pub fn with_reason(reason_code: ReasonCode) -> Disconnect {
        Disconnect {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    /// Whether a server may send `code` in a DISCONNECT: every DISCONNECT reason code of
    /// section 3.14.2.1 except 0x04 (Disconnect with Will Message), which only a client sends.
    pub fn server_may_send(code: ReasonCode) -> bool {
        code != ReasonCode::DisconnectWithWillMessage && REASONS.contains(&code)
    }

    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Disconnect, DecodeError> {
        let mut d = Disconnect::default();
        if version.is_v5() && !r.is_empty() {
            d.reason_code = read_reason(
                r,
                &REASONS,
                "[MQTT-3.14.2-1] reason code not allowed in DISCONNECT",
            )?;
            if !r.is_empty() {
                d.properties = decode_properties(r)?;
            }
        }
        r.finish("DISCONNECT has bytes after its last field")?;
        Ok(d)
    }

    pub(crate) fn emit<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        if !version.is_v5() {
            return;
        }
        s.check(
            REASONS.contains(&self.reason_code),
            "[MQTT-3.14.2-1] reason code not allowed in DISCONNECT",
        );
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

    #[test]
    fn a_server_may_send_every_disconnect_reason_but_0x04() {
        assert!(Disconnect::server_may_send(
            ReasonCode::AdministrativeAction
        ));
        assert!(Disconnect::server_may_send(ReasonCode::Success));
        assert!(!Disconnect::server_may_send(
            ReasonCode::DisconnectWithWillMessage
        ));
        // Not a DISCONNECT code at all.
        assert!(!Disconnect::server_may_send(
            ReasonCode::NoMatchingSubscribers
        ));
        let allowed = (0..=255u8)
            .filter_map(ReasonCode::from_u8)
            .filter(|c| Disconnect::server_may_send(*c))
            .count();
        assert_eq!(allowed, REASONS.len() - 1);
    }
    use crate::packet::test_util::{assert_wire, decode, encode_vec};
    use crate::{Packet, Utf8};

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn v311_has_no_body() {
        assert_wire(&Packet::Disconnect(Disconnect::default()), V311, &[0xE0, 0]);
        let p = Packet::Disconnect(Disconnect::with_reason(ReasonCode::ServerBusy));
        assert_eq!(encode_vec(&p, V311), [0xE0, 0]);
        assert!(matches!(
            decode(&[0xE0, 1, 0], V311),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn v5_forms() {
        assert_wire(&Packet::Disconnect(Disconnect::default()), V5, &[0xE0, 0]);
        assert_wire(
            &Packet::Disconnect(Disconnect::with_reason(
                ReasonCode::DisconnectWithWillMessage,
            )),
            V5,
            &[0xE0, 2, 0x04, 0],
        );
        let d = Disconnect {
            reason_code: ReasonCode::ServerMoved,
            properties: DisconnectProperties {
                server_reference: Some(Utf8::from_static("b")),
                ..DisconnectProperties::default()
            },
        };
        assert_wire(
            &Packet::Disconnect(d),
            V5,
            &[0xE0, 6, 0x9D, 4, 0x1C, 0, 1, b'b'],
        );
        assert_eq!(
            decode(&[0xE0, 2, 0, 0], V5),
            Ok(Packet::Disconnect(Disconnect::default()))
        );
    }

    #[test]
    fn v5_rules() {
        // 0x84 (Unsupported Protocol Version) is a CONNACK code only.
        assert!(matches!(
            decode(&[0xE0, 1, 0x84], V5),
            Err(DecodeError::Protocol(m)) if m.contains("MQTT-3.14.2-1")
        ));
        // Session expiry is allowed, a will delay is not.
        assert!(decode(&[0xE0, 7, 0, 5, 0x11, 0, 0, 0, 1], V5).is_ok());
        assert!(matches!(
            decode(&[0xE0, 7, 0, 5, 0x18, 0, 0, 0, 1], V5),
            Err(DecodeError::Protocol(_))
        ));
        // A byte after an empty property block.
        assert!(matches!(
            decode(&[0xE0, 3, 0x00, 0x00, 0x00], V5),
            Err(DecodeError::Malformed(_))
        ));
    }
}
