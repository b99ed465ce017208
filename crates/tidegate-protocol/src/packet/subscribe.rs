//! SUBSCRIBE (spec 3.1.1 section 3.8, 5.0 section 3.8). The options byte is checked strictly:
//! in 3.1.1 only the QoS bits may be set; in 5.0 bits 6-7 are reserved and Retain Handling 3 is
//! a Protocol Error. The topic filters themselves are not validated here: the session answers
//! an invalid filter with its own SUBACK code (0x8F / 0x80) instead of dropping the connection.

use crate::packet::read_packet_id;
use crate::property_codec::{decode_properties, emit_properties};
use crate::wire::{Reader, Sink};
use crate::{
    DecodeError, PacketId, ProtocolVersion, QoS, RetainHandling, SubscribeProperties,
    SubscriptionOptions, Utf8,
};

/// One topic filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter, not yet validated (the session answers an invalid one with 0x8F).
    pub filter: Utf8,
    /// Subscription options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// At least one filter ([MQTT-3.8.3-3]).
    pub filters: Vec<SubscribeFilter>,
    /// MQTT 5 properties.
    pub properties: SubscribeProperties,
}

const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const RETAIN_HANDLING_SHIFT: u8 = 4;
const SHARE_PREFIX: &str = "$share/";

impl SubscriptionOptions {
    /// Parses an options byte for `version`.
    fn decode(b: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
        if !version.is_v5() {
            if b & 0b1111_1100 != 0 {
                return Err(DecodeError::Malformed(
                    "[MQTT-3-8.3-4] reserved bits of the requested QoS byte set",
                ));
            }
            let qos =
                QoS::from_u8(b).ok_or(DecodeError::Malformed("[MQTT-3-8.3-4] requested QoS 3"))?;
            return Ok(SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            });
        }
        if b & 0b1100_0000 != 0 {
            return Err(DecodeError::Malformed(
                "[MQTT-3.8.3-5] reserved bits 6-7 of subscription options set",
            ));
        }
        let qos = QoS::from_u8(b & 0b11).ok_or(DecodeError::Protocol(
            "subscription maximum QoS 3 (v5 3.8.3.1)",
        ))?;
        let retain_handling = match (b >> RETAIN_HANDLING_SHIFT) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => {
                return Err(DecodeError::Protocol("retain handling 3 (v5 3.8.3.1)"));
            }
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: b & NO_LOCAL != 0,
            retain_as_published: b & RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    /// The options byte for `version` (3.1.1 carries only the QoS).
    fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos.as_u8();
        if version.is_v5() {
            if self.no_local {
                b |= NO_LOCAL;
            }
            if self.retain_as_published {
                b |= RETAIN_AS_PUBLISHED;
            }
            b |= (self.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
        }
        b
    }
}

impl Subscribe {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Subscribe, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = if version.is_v5() {
            decode_properties(r)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.utf8()?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            if options.no_local && filter.starts_with(SHARE_PREFIX) {
                return Err(DecodeError::Protocol(
                    "[MQTT-3.8.3-4] no local set on a shared subscription",
                ));
            }
            filters.push(SubscribeFilter { filter, options });
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol(
                "[MQTT-3.8.3-3] SUBSCRIBE without a topic filter",
            ));
        }
        Ok(Subscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.check(
            !self.filters.is_empty(),
            "[MQTT-3.8.3-3] SUBSCRIBE without a topic filter",
        );
        s.u16(self.packet_id.get());
        if version.is_v5() {
            emit_properties(&self.properties, s);
        }
        for f in &self.filters {
            s.check(
                !(version.is_v5() && f.options.no_local && f.filter.starts_with(SHARE_PREFIX)),
                "[MQTT-3.8.3-4] no local set on a shared subscription",
            );
            s.utf8(&f.filter);
            s.u8(f.options.to_byte(version));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_util::{assert_wire, decode, encode_vec};
    use crate::{EncodeError, Packet, ReasonCode, encode};
    use bytes::BytesMut;

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn sub(filters: &[(&'static str, SubscriptionOptions)]) -> Subscribe {
        Subscribe {
            packet_id: PacketId::new(10).unwrap(),
            filters: filters
                .iter()
                .map(|&(f, options)| SubscribeFilter {
                    filter: Utf8::from_static(f),
                    options,
                })
                .collect(),
            properties: SubscribeProperties::default(),
        }
    }

    fn qos(q: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos: q,
            ..SubscriptionOptions::default()
        }
    }

    /// The payload example of 3.1.1 section 3.8.3.1: "a/b" QoS 1 and "c/d" QoS 2.
    #[test]
    fn spec_example_3_1_1() {
        let p = sub(&[
            ("a/b", qos(QoS::AtLeastOnce)),
            ("c/d", qos(QoS::ExactlyOnce)),
        ]);
        #[rustfmt::skip]
        let bytes = [0x82, 14, 0, 10, 0, 3, b'a', b'/', b'b', 1, 0, 3, b'c', b'/', b'd', 2];
        assert_wire(&Packet::Subscribe(p), V311, &bytes);
    }

    #[test]
    fn v5_options_and_subscription_identifier() {
        let opts = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        };
        let mut p = sub(&[("a", opts)]);
        p.properties.subscription_identifier = Some(128);
        assert_wire(
            &Packet::Subscribe(p),
            V5,
            &[0x82, 10, 0, 10, 3, 0x0B, 0x80, 0x01, 0, 1, b'a', 0x2D],
        );
    }

    #[test]
    fn v311_encoding_keeps_only_qos() {
        let opts = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNew,
        };
        let bytes = encode_vec(&Packet::Subscribe(sub(&[("a", opts)])), V311);
        assert_eq!(bytes, [0x82, 6, 0, 10, 0, 1, b'a', 2]);
    }

    #[test]
    fn no_filters_is_a_protocol_error() {
        let e = decode(&[0x82, 2, 0, 10], V311);
        assert!(matches!(e, Err(DecodeError::Protocol(m)) if m.contains("MQTT-3.8.3-3")));
        let e = decode(&[0x82, 3, 0, 10, 0], V5);
        assert_eq!(
            e.map_err(|e| e.reason_code()),
            Err(ReasonCode::ProtocolError)
        );
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(&Packet::Subscribe(sub(&[])), V5, &mut buf),
            Err(EncodeError::Invalid(_))
        ));
    }

    #[test]
    fn options_byte_rules() {
        // 3.1.1: any bit above the QoS is malformed, and so is QoS 3.
        for b in [0x04u8, 0x40, 0x80, 0x03] {
            let e = decode(&[0x82, 6, 0, 10, 0, 1, b'a', b], V311);
            assert!(matches!(e, Err(DecodeError::Malformed(_))), "{b:#x}: {e:?}");
        }
        // 5.0: bits 6-7 malformed; retain handling 3 and QoS 3 protocol errors.
        for b in [0x40u8, 0x80] {
            let e = decode(&[0x82, 7, 0, 10, 0, 0, 1, b'a', b], V5);
            assert!(matches!(e, Err(DecodeError::Malformed(_))), "{b:#x}: {e:?}");
        }
        for b in [0x30u8, 0x03] {
            let e = decode(&[0x82, 7, 0, 10, 0, 0, 1, b'a', b], V5);
            assert!(matches!(e, Err(DecodeError::Protocol(_))), "{b:#x}: {e:?}");
        }
        // Missing options byte after the last filter.
        let e = decode(&[0x82, 5, 0, 10, 0, 1, b'a'], V311);
        assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
    }

    #[test]
    fn no_local_on_shared_subscription() {
        let mut bytes = vec![0x82, 16, 0, 10, 0, 0, 10];
        bytes.extend_from_slice(b"$share/g/a");
        bytes.push(0x04);
        let e = decode(&bytes, V5);
        assert!(matches!(e, Err(DecodeError::Protocol(m)) if m.contains("MQTT-3.8.3-4")));
        // Without no local it is an ordinary subscription.
        let last = bytes.len() - 1;
        bytes[last] = 0x01;
        assert!(decode(&bytes, V5).is_ok());
    }

    #[test]
    fn packet_id_zero_and_v5_property_rules() {
        let e = decode(&[0x82, 6, 0, 0, 0, 1, b'a', 0], V311);
        assert!(matches!(e, Err(DecodeError::Protocol(_))), "{e:?}");
        // Subscription identifier twice, and 0.
        #[rustfmt::skip]
        let e = decode(&[0x82, 11, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0], V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))), "{e:?}");
        let e = decode(&[0x82, 9, 0, 1, 2, 0x0B, 0, 0, 1, b'a', 0], V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))), "{e:?}");
    }
}
