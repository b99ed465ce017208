//! AUTH (spec 5.0 section 3.15): enhanced authentication exchanges, MQTT 5 only. Packet type 15
//! is refused as malformed by a 3.1.1 decoder (in the fixed header check) and by the encoder
//! with [`crate::EncodeError::NotInVersion`]. A remaining length of 0 means Success without
//! properties, like DISCONNECT.

use crate::packet::read_reason;
use crate::property_codec::{decode_properties, emit_properties, properties_len};
use crate::wire::{Reader, Sink};
use crate::{AuthProperties, DecodeError, ProtocolVersion, ReasonCode};

/// AUTH (MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, ContinueAuthentication or ReAuthenticate.
    pub reason_code: ReasonCode,
    /// Properties.
    pub properties: AuthProperties,
}

/// AUTH reason codes (section 3.15.2.1).
const REASONS: [ReasonCode; 3] = [
    ReasonCode::Success,
    ReasonCode::ContinueAuthentication,
    ReasonCode::ReAuthenticate,
];

impl Auth {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Auth, DecodeError> {
        // The fixed header check already refuses type 15 outside 5.0; kept so this function is
        // correct on its own.
        if !version.is_v5() {
            return Err(DecodeError::Malformed(
                "packet type 15 (AUTH) does not exist in MQTT 3.1.1",
            ));
        }
        let mut a = Auth::default();
        if !r.is_empty() {
            a.reason_code = read_reason(
                r,
                &REASONS,
                "[MQTT-3.15.2-1] reason code not allowed in AUTH",
            )?;
            if !r.is_empty() {
                a.properties = decode_properties(r)?;
            }
        }
        r.finish("AUTH has bytes after its last field")?;
        Ok(a)
    }

    pub(crate) fn emit<S: Sink>(&self, _version: ProtocolVersion, s: &mut S) {
        s.check(
            REASONS.contains(&self.reason_code),
            "[MQTT-3.15.2-1] reason code not allowed in AUTH",
        );
        // As for DISCONNECT: after a reason code, always the property length too.
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
    use bytes::{Bytes, BytesMut};

    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn forms() {
        assert_wire(&Packet::Auth(Auth::default()), V5, &[0xF0, 0]);
        let a = Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some(Utf8::from_static("M")),
                authentication_data: Some(Bytes::from_static(&[1, 2])),
                ..AuthProperties::default()
            },
        };
        #[rustfmt::skip]
        let bytes = [0xF0, 11, 0x18, 9, 0x15, 0, 1, b'M', 0x16, 0, 2, 1, 2];
        assert_wire(&Packet::Auth(a), V5, &bytes);
        assert_wire(
            &Packet::Auth(Auth {
                reason_code: ReasonCode::ReAuthenticate,
                properties: AuthProperties::default(),
            }),
            V5,
            &[0xF0, 2, 0x19, 0],
        );
        // The short form without a property length is still accepted on decode.
        assert_eq!(
            decode(&[0xF0, 1, 0x19], V5),
            Ok(Packet::Auth(Auth {
                reason_code: ReasonCode::ReAuthenticate,
                properties: AuthProperties::default(),
            }))
        );
    }

    #[test]
    fn not_in_3_1_1() {
        let e = decode(&[0xF0, 0], ProtocolVersion::V311);
        assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
        let mut buf = BytesMut::new();
        assert_eq!(
            encode(
                &Packet::Auth(Auth::default()),
                ProtocolVersion::V311,
                &mut buf
            ),
            Err(EncodeError::NotInVersion("AUTH"))
        );
    }

    #[test]
    fn rules() {
        assert!(matches!(
            decode(&[0xF0, 1, 0x80], V5),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            decode(&[0xF0, 4, 0x18, 2, 0x21, 0], V5),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(&[0xF0, 5, 0x18, 3, 0x21, 0, 1], V5),
            Err(DecodeError::Protocol(m)) if m.contains("AUTH")
        ));
        assert!(matches!(
            decode(&[0xF1, 0], V5),
            Err(DecodeError::Malformed(_))
        ));
    }
}
