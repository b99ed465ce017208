//! PUBLISH (spec 3.1.1 section 3.3, 5.0 section 3.3): the hot path. Decoding keeps the topic
//! and the payload as slices of the received frame (no copy); encoding writes the payload
//! straight after the header into the caller's buffer.
//!
//! Topic rules checked here: no wildcard ([MQTT-3.3.2-2]); an empty topic is only valid in 5.0
//! together with a Topic Alias. Resolving the alias (and refusing one above the negotiated
//! maximum) is the session's job, since it needs the connection's alias table.

use crate::packet::read_packet_id;
use crate::property_codec::{decode_properties, emit_properties};
use crate::topic::{TopicError, validate_topic_name};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, PacketId, ProtocolVersion, PublishProperties, QoS, Utf8};
use bytes::Bytes;

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Re-delivery flag; always false for QoS 0 ([MQTT-3.3.1-2]).
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name; may be empty in MQTT 5 when a topic alias is carried.
    pub topic: Utf8,
    /// Present exactly when `qos` > 0.
    pub packet_id: Option<PacketId>,
    /// Application payload.
    pub payload: Bytes,
    /// MQTT 5 properties.
    pub properties: PublishProperties,
}

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;

impl Publish {
    /// The low nibble of the fixed header: DUP, QoS, RETAIN.
    pub(crate) fn header_flags(&self) -> u8 {
        let mut f = self.qos.as_u8() << 1;
        if self.dup {
            f |= DUP;
        }
        if self.retain {
            f |= RETAIN;
        }
        f
    }

    /// Decodes a PUBLISH body; `flags` is the fixed header's low nibble, already checked for
    /// QoS 3 and DUP on QoS 0.
    pub(crate) fn decode(
        flags: u8,
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::Malformed(
            "[MQTT-3.3.1-4] PUBLISH with both QoS bits set",
        ))?;
        let topic = r.utf8()?;
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(read_packet_id(r)?)
        };
        let properties: PublishProperties = if version.is_v5() {
            decode_properties(r)?
        } else {
            PublishProperties::default()
        };
        check_topic(&topic, &properties, version).map_err(|e| match e {
            TopicCheck::Invalid(m) => DecodeError::TopicNameInvalid(m),
            TopicCheck::EmptyWithoutAlias(m) => DecodeError::Protocol(m),
        })?;
        Ok(Publish {
            dup: flags & DUP != 0,
            qos,
            retain: flags & RETAIN != 0,
            topic,
            packet_id,
            payload: r.rest(),
            properties,
        })
    }

    pub(crate) fn emit<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        s.check(
            !(self.dup && self.qos == QoS::AtMostOnce),
            "[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH",
        );
        if let Err(TopicCheck::Invalid(m) | TopicCheck::EmptyWithoutAlias(m)) =
            check_topic(&self.topic, &self.properties, version)
        {
            s.check(false, m);
        }
        s.utf8(&self.topic);
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, None) => {}
            (QoS::AtMostOnce, Some(_)) => s.check(false, "QoS 0 PUBLISH with a packet identifier"),
            (_, Some(id)) => s.u16(id.get()),
            (_, None) => s.check(false, "QoS 1/2 PUBLISH without packet identifier"),
        }
        if version.is_v5() {
            emit_properties(&self.properties, s);
        }
        s.raw(&self.payload);
    }
}

enum TopicCheck {
    Invalid(&'static str),
    EmptyWithoutAlias(&'static str),
}

fn check_topic(
    topic: &Utf8,
    properties: &PublishProperties,
    version: ProtocolVersion,
) -> Result<(), TopicCheck> {
    match validate_topic_name(topic) {
        Ok(()) => Ok(()),
        Err(TopicError::Empty) if version.is_v5() => {
            if properties.topic_alias.is_some() {
                Ok(())
            } else {
                Err(TopicCheck::EmptyWithoutAlias(
                    "empty topic name without a topic alias (v5 3.3.2.3.4)",
                ))
            }
        }
        Err(TopicError::Empty) => Err(TopicCheck::Invalid("[MQTT-4.7.3-1] empty topic name")),
        Err(_) => Err(TopicCheck::Invalid(
            "[MQTT-3.3.2-2] wildcard character in a topic name",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_util::{assert_wire, decode};
    use crate::{EncodeError, Packet, encode};
    use bytes::BytesMut;

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn publish(qos: QoS, id: Option<u16>) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: Utf8::from_static("a/b"),
            packet_id: id.and_then(PacketId::new),
            payload: Bytes::from_static(b"hi"),
            properties: PublishProperties::default(),
        }
    }

    #[test]
    fn qos0_both_versions() {
        let p = Packet::Publish(publish(QoS::AtMostOnce, None));
        assert_wire(&p, V311, &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']);
        assert_wire(&p, V5, &[0x30, 8, 0, 3, b'a', b'/', b'b', 0, b'h', b'i']);
    }

    #[test]
    fn qos2_dup_retain_with_id() {
        let mut p = publish(QoS::ExactlyOnce, Some(0x1234));
        p.dup = true;
        p.retain = true;
        #[rustfmt::skip]
        let bytes = [0x3D, 9, 0, 3, b'a', b'/', b'b', 0x12, 0x34, b'h', b'i'];
        assert_wire(&Packet::Publish(p), V311, &bytes);
    }

    #[test]
    fn v5_properties_and_empty_payload() {
        let mut p = publish(QoS::AtLeastOnce, Some(1));
        p.payload = Bytes::new();
        p.properties = PublishProperties {
            payload_format_indicator: Some(true),
            topic_alias: Some(3),
            subscription_identifiers: vec![1, 300],
            ..PublishProperties::default()
        };
        #[rustfmt::skip]
        let bytes = [
            0x32, 18, 0, 3, b'a', b'/', b'b', 0, 1,
            10, 0x01, 1, 0x23, 0, 3, 0x0B, 1, 0x0B, 0xAC, 0x02,
        ];
        assert_wire(&Packet::Publish(p), V5, &bytes);
    }

    #[test]
    fn empty_topic_rules() {
        // 3.1.1: never valid.
        let e = decode(&[0x30, 2, 0, 0], V311);
        assert!(matches!(e, Err(DecodeError::TopicNameInvalid(_))), "{e:?}");
        // 5.0 without alias: Protocol Error; with alias: valid.
        let e = decode(&[0x30, 3, 0, 0, 0], V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))), "{e:?}");
        let mut p = publish(QoS::AtMostOnce, None);
        p.topic = Utf8::new();
        p.properties.topic_alias = Some(7);
        assert_wire(
            &Packet::Publish(p.clone()),
            V5,
            &[0x30, 8, 0, 0, 3, 0x23, 0, 7, b'h', b'i'],
        );
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(&Packet::Publish(p), V311, &mut buf),
            Err(EncodeError::Invalid(_))
        ));
    }

    #[test]
    fn wildcards_and_bad_strings_in_topic() {
        let e = decode(&[0x30, 3, 0, 1, b'+'], V311);
        assert!(matches!(e, Err(DecodeError::TopicNameInvalid(_))), "{e:?}");
        let e = decode(&[0x30, 6, 0, 3, b'a', b'/', b'+', 0], V5);
        assert!(matches!(e, Err(DecodeError::TopicNameInvalid(_))), "{e:?}");
        let e = decode(&[0x30, 3, 0, 1, b'#'], V311);
        assert_eq!(
            e.map_err(|e| e.reason_code()),
            Err(crate::ReasonCode::TopicNameInvalid)
        );
        let e = decode(&[0x30, 3, 0, 1, 0x00], V311);
        assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
    }

    #[test]
    fn packet_id_zero_and_missing() {
        let e = decode(&[0x32, 5, 0, 1, b'a', 0, 0], V311);
        assert!(matches!(e, Err(DecodeError::Protocol(m)) if m.contains("MQTT-2.2.1-3")));
        // QoS 1 with the packet identifier cut off by the remaining length.
        let e = decode(&[0x32, 4, 0, 1, b'a', 0], V311);
        assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
    }

    #[test]
    fn v5_publish_property_rules() {
        // Topic alias 0.
        let e = decode(&[0x30, 7, 0, 1, b'a', 3, 0x23, 0, 0], V5);
        assert!(matches!(e, Err(DecodeError::TopicAliasInvalid(m)) if m.contains("MQTT-3.3.2-8")));
        assert_eq!(
            e.map_err(|e| e.reason_code()),
            Err(crate::ReasonCode::TopicAliasInvalid)
        );
        // Payload format indicator 2.
        let e = decode(&[0x30, 6, 0, 1, b'a', 2, 0x01, 2], V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))), "{e:?}");
        // Subscription identifier 0.
        let e = decode(&[0x30, 6, 0, 1, b'a', 2, 0x0B, 0], V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))), "{e:?}");
        // Unknown property 0x05.
        let e = decode(&[0x30, 6, 0, 1, b'a', 2, 0x05, 0], V5);
        assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
        // Property length running past the remaining length.
        let e = decode(&[0x30, 5, 0, 1, b'a', 9, 0x01], V5);
        assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
        // Repeated message expiry.
        #[rustfmt::skip]
        let e = decode(&[0x30, 14, 0, 1, b'a', 10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1], V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))), "{e:?}");
    }

    #[test]
    fn encode_refuses_inconsistent_fields() {
        let mut buf = BytesMut::new();
        let bad = [
            publish(QoS::AtLeastOnce, None),
            publish(QoS::AtMostOnce, Some(1)),
            Publish {
                dup: true,
                ..publish(QoS::AtMostOnce, None)
            },
            Publish {
                topic: Utf8::from_static("a/#"),
                ..publish(QoS::AtMostOnce, None)
            },
        ];
        for p in bad {
            assert!(matches!(
                encode(&Packet::Publish(p), V5, &mut buf),
                Err(EncodeError::Invalid(_))
            ));
        }
        let mut p = publish(QoS::AtMostOnce, None);
        p.properties.subscription_identifiers = vec![0];
        assert!(encode(&Packet::Publish(p.clone()), V5, &mut buf).is_err());
        p.properties.subscription_identifiers = vec![268_435_456];
        assert!(encode(&Packet::Publish(p), V5, &mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn payload_is_a_slice_of_the_frame() {
        let mut buf = BytesMut::from(&[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'][..]);
        let base = buf.as_ptr() as usize;
        let mut d = crate::Decoder::with_version(V311, 1024);
        let Some(Packet::Publish(p)) = d.decode(&mut buf).unwrap() else {
            panic!("not a PUBLISH")
        };
        assert_eq!(p.payload.as_ptr() as usize, base + 7);
        assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
    }
}
