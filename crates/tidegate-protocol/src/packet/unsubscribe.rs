//! UNSUBSCRIBE (spec 3.1.1 section 3.10, 5.0 section 3.10): a packet identifier and at least
//! one topic filter, taken as written (the session compares them with its subscriptions).

use crate::packet::read_packet_id;
use crate::property_codec::{decode_properties, emit_properties};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, PacketId, ProtocolVersion, UnsubscribeProperties, Utf8};

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// At least one filter ([MQTT-3.10.3-2]).
    pub filters: Vec<Utf8>,
    /// MQTT 5 properties.
    pub properties: UnsubscribeProperties,
}

impl Unsubscribe {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Unsubscribe, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            decode_properties(r)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.utf8()?);
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol(
                "[MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter",
            ));
        }
        Ok(Unsubscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.check(
            !self.filters.is_empty(),
            "[MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter",
        );
        s.u16(self.packet_id.get());
        if version.is_v5() {
            emit_properties(&self.properties, s);
        }
        for f in &self.filters {
            s.utf8(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_util::{assert_wire, decode};
    use crate::{Packet, ReasonCode};

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn unsub(filters: &[&'static str]) -> Unsubscribe {
        Unsubscribe {
            packet_id: PacketId::new(10).unwrap(),
            filters: filters.iter().map(|f| Utf8::from_static(f)).collect(),
            properties: UnsubscribeProperties::default(),
        }
    }

    /// The payload example of 3.1.1 section 3.10.3.1: "a/b" and "c/d".
    #[test]
    fn spec_example_3_1_1() {
        #[rustfmt::skip]
        let bytes = [0xA2, 12, 0, 10, 0, 3, b'a', b'/', b'b', 0, 3, b'c', b'/', b'd'];
        assert_wire(&Packet::Unsubscribe(unsub(&["a/b", "c/d"])), V311, &bytes);
    }

    #[test]
    fn v5_with_user_property() {
        let mut p = unsub(&["#"]);
        p.properties.user_properties = vec![(Utf8::from_static("a"), Utf8::new())];
        #[rustfmt::skip]
        let bytes = [0xA2, 12, 0, 10, 6, 0x26, 0, 1, b'a', 0, 0, 0, 1, b'#'];
        assert_wire(&Packet::Unsubscribe(p), V5, &bytes);
    }

    #[test]
    fn rules() {
        let e = decode(&[0xA2, 2, 0, 10], V311);
        assert!(matches!(e, Err(DecodeError::Protocol(m)) if m.contains("MQTT-3.10.3-2")));
        let e = decode(&[0xA2, 3, 0, 10, 0], V5);
        assert_eq!(
            e.map_err(|e| e.reason_code()),
            Err(ReasonCode::ProtocolError)
        );
        let e = decode(&[0xA2, 5, 0, 0, 0, 1, b'a'], V311);
        assert!(matches!(e, Err(DecodeError::Protocol(_))), "{e:?}");
        // A filter cut short by the remaining length.
        let e = decode(&[0xA2, 5, 0, 10, 0, 2, b'a'], V311);
        assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
        // Fixed header flags other than 0010.
        let e = decode(&[0xA0, 5, 0, 10, 0, 1, b'a'], V311);
        assert!(matches!(e, Err(DecodeError::Malformed(m)) if m.contains("MQTT-3.10.1-1")));
        // Only user properties are allowed.
        let e = decode(&[0xA2, 9, 0, 10, 3, 0x1F, 0, 0, 0, 1, b'a'], V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))), "{e:?}");
    }
}
