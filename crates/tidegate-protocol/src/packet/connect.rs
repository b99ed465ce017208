//! CONNECT (spec 3.1.1 section 3.1, 5.0 section 3.1): the first packet of every connection. Its
//! protocol name and level decide the version the rest of the connection is decoded with, so
//! it is parsed without a known version and reports an unsupported one as
//! [`DecodeError::UnsupportedProtocolVersion`] (the server answers CONNACK return code 1 /
//! reason 0x84).
//!
//! What this codec leaves to the session: a zero-length client id with Clean Session 0 in 3.1.1
//! ([MQTT-3.1.3-8], answered with CONNACK return code 2), and authentication decisions.

use crate::property_codec::{decode_properties, emit_properties};
use crate::topic::validate_topic_name;
use crate::wire::{Reader, Sink};
use crate::{ConnectProperties, DecodeError, ProtocolVersion, QoS, Utf8, WillProperties};
use bytes::Bytes;

/// CONNECT: the first packet of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Decides the encoding of the rest of the connection.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 disables keep alive.
    pub keep_alive: u16,
    /// May be empty (the server then assigns one, or refuses in 3.1.1 without clean session).
    pub client_id: Utf8,
    /// The will message, if the Will Flag is set.
    pub will: Option<Will>,
    /// User Name, if its flag is set.
    pub username: Option<Utf8>,
    /// Password (binary data), if its flag is set.
    pub password: Option<Bytes>,
    /// MQTT 5 properties; default in 3.1.1.
    pub properties: ConnectProperties,
}

/// A will message declared in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic name (no wildcards).
    pub topic: Utf8,
    /// Payload.
    pub payload: Bytes,
    /// QoS of the will publication.
    pub qos: QoS,
    /// Retain flag of the will publication.
    pub retain: bool,
    /// MQTT 5 will properties.
    pub properties: WillProperties,
}

const PROTOCOL_NAME: &[u8] = b"MQTT";
/// The MQTT 3.1 protocol name, recognised only to refuse it with the right code.
const PROTOCOL_NAME_V31: &[u8] = b"MQIsdp";

mod flag {
    pub(super) const RESERVED: u8 = 0x01;
    pub(super) const CLEAN_START: u8 = 0x02;
    pub(super) const WILL: u8 = 0x04;
    pub(super) const WILL_QOS_SHIFT: u8 = 3;
    pub(super) const WILL_RETAIN: u8 = 0x20;
    pub(super) const PASSWORD: u8 = 0x40;
    pub(super) const USERNAME: u8 = 0x80;
}

impl Connect {
    /// Decodes a CONNECT body; the version comes from its protocol name and level.
    pub(crate) fn decode(body: &Bytes) -> Result<Connect, DecodeError> {
        let mut r = Reader::new(body);
        let r = &mut r;
        // Compared as raw bytes: any name other than the two known ones is refused anyway.
        let name = r.binary()?;
        let level = r.u8()?;
        let protocol = match (name.as_ref(), level) {
            (PROTOCOL_NAME, 4) => ProtocolVersion::V311,
            (PROTOCOL_NAME, 5) => ProtocolVersion::V5,
            (PROTOCOL_NAME | PROTOCOL_NAME_V31, level) => {
                return Err(DecodeError::UnsupportedProtocolVersion { level });
            }
            _ => {
                return Err(DecodeError::Protocol(
                    "[MQTT-3.1.2-1] protocol name is not \"MQTT\"",
                ));
            }
        };
        let v5 = protocol.is_v5();

        let flags = r.u8()?;
        if flags & flag::RESERVED != 0 {
            return Err(DecodeError::Malformed(
                "[MQTT-3.1.2-3] CONNECT reserved flag set",
            ));
        }
        let has_will = flags & flag::WILL != 0;
        let will_qos_bits = (flags >> flag::WILL_QOS_SHIFT) & 0b11;
        let will_retain = flags & flag::WILL_RETAIN != 0;
        if !has_will && will_qos_bits != 0 {
            return Err(DecodeError::Malformed(
                "will QoS set without the will flag ([MQTT-3.1.2-13] in 3.1.1, [MQTT-3.1.2-11] in 5.0)",
            ));
        }
        if !has_will && will_retain {
            return Err(DecodeError::Malformed(
                "will retain set without the will flag ([MQTT-3.1.2-15] in 3.1.1, [MQTT-3.1.2-13] in 5.0)",
            ));
        }
        let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::Malformed(
            "will QoS 3 ([MQTT-3.1.2-14] in 3.1.1, [MQTT-3.1.2-12] in 5.0)",
        ))?;
        let has_username = flags & flag::USERNAME != 0;
        let has_password = flags & flag::PASSWORD != 0;
        // MQTT 5 allows a password without a user name (e.g. a token); 3.1.1 does not.
        if !v5 && has_password && !has_username {
            return Err(DecodeError::Protocol(
                "[MQTT-3.1.2-22] password flag set without the user name flag",
            ));
        }

        let keep_alive = r.u16()?;
        let properties: ConnectProperties = if v5 {
            decode_properties(r)?
        } else {
            ConnectProperties::default()
        };
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::Protocol(
                "authentication data without authentication method (v5 3.1.2.11.10)",
            ));
        }

        let client_id = r.utf8()?;
        let will = if has_will {
            let properties = if v5 {
                decode_properties(r)?
            } else {
                WillProperties::default()
            };
            let topic = r.utf8()?;
            validate_topic_name(&topic).map_err(|_| {
                DecodeError::TopicNameInvalid("will topic is empty or holds a wildcard")
            })?;
            let payload = r.binary()?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username { Some(r.utf8()?) } else { None };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish("CONNECT has bytes after its last field")?;
        Ok(Connect {
            protocol,
            clean_start: flags & flag::CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    /// The connect flags byte.
    fn flags(&self) -> u8 {
        let mut f = 0;
        if self.clean_start {
            f |= flag::CLEAN_START;
        }
        if let Some(w) = &self.will {
            f |= flag::WILL | (w.qos.as_u8() << flag::WILL_QOS_SHIFT);
            if w.retain {
                f |= flag::WILL_RETAIN;
            }
        }
        if self.password.is_some() {
            f |= flag::PASSWORD;
        }
        if self.username.is_some() {
            f |= flag::USERNAME;
        }
        f
    }

    pub(crate) fn emit<S: Sink>(&self, version: ProtocolVersion, s: &mut S) {
        let v5 = version.is_v5();
        s.check(
            self.protocol == version,
            "CONNECT protocol differs from the encoding version",
        );
        s.check(
            v5 || self.password.is_none() || self.username.is_some(),
            "[MQTT-3.1.2-22] password without user name in MQTT 3.1.1",
        );
        s.binary(PROTOCOL_NAME);
        s.u8(version.level());
        s.u8(self.flags());
        s.u16(self.keep_alive);
        if v5 {
            emit_properties(&self.properties, s);
        }
        s.utf8(&self.client_id);
        if let Some(w) = &self.will {
            s.check(
                validate_topic_name(&w.topic).is_ok(),
                "will topic is empty or holds a wildcard",
            );
            if v5 {
                emit_properties(&w.properties, s);
            }
            s.utf8(&w.topic);
            s.binary(&w.payload);
        }
        if let Some(u) = &self.username {
            s.utf8(u);
        }
        if let Some(p) = &self.password {
            s.binary(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::test_util::{assert_wire, decode, encode_vec};
    use crate::{DecodeError, EncodeError, Packet, encode};
    use bytes::BytesMut;

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn minimal(protocol: ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: Utf8::from_static("c1"),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    /// The variable header of the example in 3.1.1 section 3.1.2.10 (flags 0xCE: user name,
    /// password, will QoS 1, will flag, clean session; keep alive 10), with a payload of client
    /// id, will topic, will message, user name and password in the order of section 3.1.3.
    #[test]
    fn spec_example_3_1_1() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 30,
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A,
            0x00, 0x01, b'c',
            0x00, 0x01, b't',
            0x00, 0x02, b'h', b'i',
            0x00, 0x04, b'u', b's', b'e', b'r',
            0x00, 0x02, b'p', b'w',
        ];
        let p = Connect {
            protocol: V311,
            clean_start: true,
            keep_alive: 10,
            client_id: Utf8::from_static("c"),
            will: Some(Will {
                topic: Utf8::from_static("t"),
                payload: Bytes::from_static(b"hi"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: WillProperties::default(),
            }),
            username: Some(Utf8::from_static("user")),
            password: Some(Bytes::from_static(b"pw")),
            properties: ConnectProperties::default(),
        };
        assert_wire(&Packet::Connect(Box::new(p)), V311, &bytes);
    }

    #[test]
    fn minimal_v311_and_v5() {
        #[rustfmt::skip]
        let v311 = [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1'];
        assert_wire(&Packet::Connect(Box::new(minimal(V311))), V311, &v311);
        #[rustfmt::skip]
        let v5 = [0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 2, b'c', b'1'];
        assert_wire(&Packet::Connect(Box::new(minimal(V5))), V5, &v5);
    }

    #[test]
    fn v5_with_properties_will_and_password_only() {
        let mut c = minimal(V5);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(0x10);
        c.properties.receive_maximum = Some(20);
        c.will = Some(Will {
            topic: Utf8::from_static("w"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(5),
                ..WillProperties::default()
            },
        });
        c.password = Some(Bytes::from_static(b"tok"));
        #[rustfmt::skip]
        let bytes = [
            0x10, 40,
            0, 4, b'M', b'Q', b'T', b'T', 5,
            0x74, // password, will retain, will QoS 2, will flag
            0, 60,
            8, 0x11, 0, 0, 0, 0x10, 0x21, 0, 20,
            0, 2, b'c', b'1',
            5, 0x18, 0, 0, 0, 5,
            0, 1, b'w',
            0, 1, b'x',
            0, 3, b't', b'o', b'k',
        ];
        assert_wire(&Packet::Connect(Box::new(c)), V5, &bytes);
    }

    fn connect_with_flags(level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 0];
        if level == 5 {
            body.push(0);
        }
        body.extend_from_slice(&[0, 1, b'c']);
        body.extend_from_slice(rest);
        let mut v = vec![0x10, body.len() as u8];
        v.extend(body);
        v
    }

    #[test]
    fn protocol_name_and_level() {
        #[rustfmt::skip]
        let v31 = [0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 1, b'c'];
        let err = decode(&v31, V311).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedProtocolVersion { level: 3 });
        assert_eq!(
            err.reason_code().to_v3_connack(),
            1,
            "answered with return code 1"
        );
        let l6 = connect_with_flags(6, 0x02, &[]);
        assert_eq!(
            decode(&l6, V5),
            Err(DecodeError::UnsupportedProtocolVersion { level: 6 })
        );
        let mut bad_name = connect_with_flags(4, 0x02, &[]);
        bad_name[5] = b'X';
        assert!(
            matches!(decode(&bad_name, V311), Err(DecodeError::Protocol(m)) if m.contains("MQTT-3.1.2-1"))
        );
    }

    #[test]
    fn flag_rules() {
        let reserved = connect_with_flags(4, 0x03, &[]);
        assert!(
            matches!(decode(&reserved, V311), Err(DecodeError::Malformed(m)) if m.contains("MQTT-3.1.2-3"))
        );
        for level in [4, 5] {
            let v = if level == 4 { V311 } else { V5 };
            // Will QoS 1 without the will flag.
            let e = decode(&connect_with_flags(level, 0x0A, &[]), v);
            assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
            // Will retain without the will flag.
            let e = decode(&connect_with_flags(level, 0x22, &[]), v);
            assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
            // Will QoS 3.
            let e = decode(&connect_with_flags(level, 0x1E, &[]), v);
            assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
        }
        // Password without user name: refused in 3.1.1, allowed in 5.0.
        let e = decode(&connect_with_flags(4, 0x42, &[0, 1, b'p']), V311);
        assert!(matches!(e, Err(DecodeError::Protocol(m)) if m.contains("MQTT-3.1.2-22")));
        let ok = decode(&connect_with_flags(5, 0x42, &[0, 1, b'p']), V5).unwrap();
        let Packet::Connect(c) = ok else {
            panic!("not a CONNECT")
        };
        assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
        assert_eq!(c.username, None);
    }

    #[test]
    fn will_topic_with_wildcard_is_invalid() {
        let e = decode(&connect_with_flags(4, 0x06, &[0, 1, b'#', 0, 0]), V311);
        assert!(matches!(e, Err(DecodeError::TopicNameInvalid(_))), "{e:?}");
    }

    #[test]
    fn length_mismatches_are_malformed() {
        // A declared user name missing from the payload.
        let e = decode(&connect_with_flags(4, 0x82, &[]), V311);
        assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
        // A trailing byte after the last field.
        let e = decode(&connect_with_flags(4, 0x02, &[0xAA]), V311);
        assert!(matches!(e, Err(DecodeError::Malformed(_))), "{e:?}");
    }

    #[test]
    fn client_id_must_be_valid_utf8() {
        let mut bytes = connect_with_flags(4, 0x02, &[]);
        let last = bytes.len() - 1;
        bytes[last] = 0xFF;
        assert!(matches!(
            decode(&bytes, V311),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn v5_connect_property_rules() {
        // Authentication data without a method.
        let mut c = minimal(V5);
        c.properties.authentication_data = Some(Bytes::from_static(b"d"));
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(&Packet::Connect(Box::new(c.clone())), V5, &mut buf),
            Err(EncodeError::Invalid(_))
        ));
        c.properties.authentication_method = Some(Utf8::from_static("SCRAM"));
        let bytes = encode_vec(&Packet::Connect(Box::new(c.clone())), V5);
        // Drop the method (id 0x15, 2-byte length, 5 bytes) from the encoding by hand.
        let method = [0x15, 0, 5, b'S', b'C', b'R', b'A', b'M'];
        let at = bytes
            .windows(method.len())
            .position(|w| w == method)
            .unwrap();
        let mut without = bytes[..at].to_vec();
        without.extend_from_slice(&bytes[at + method.len()..]);
        without[1] -= method.len() as u8; // remaining length
        without[12] -= method.len() as u8; // property length
        assert!(matches!(
            decode(&without, V5),
            Err(DecodeError::Protocol(_))
        ));
        // A PUBLISH-only property in CONNECT.
        let e = decode(&connect_with_props(&[0x23, 0, 1]), V5);
        assert!(matches!(e, Err(DecodeError::Protocol(m)) if m.contains("CONNECT")));
        // Receive Maximum 0 and Maximum Packet Size 0.
        let e = decode(&connect_with_props(&[0x21, 0, 0]), V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))));
        let e = decode(&connect_with_props(&[0x27, 0, 0, 0, 0]), V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))));
        // Request problem information 2.
        let e = decode(&connect_with_props(&[0x17, 2]), V5);
        assert!(matches!(e, Err(DecodeError::Protocol(_))));
    }

    fn connect_with_props(props: &[u8]) -> Vec<u8> {
        let mut body = vec![
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            0x02,
            0,
            0,
            props.len() as u8,
        ];
        body.extend_from_slice(props);
        body.extend_from_slice(&[0, 1, b'c']);
        let mut v = vec![0x10, body.len() as u8];
        v.extend(body);
        v
    }

    #[test]
    fn encode_refuses_what_cannot_be_sent() {
        let mut buf = BytesMut::new();
        let c = minimal(V5);
        assert!(matches!(
            encode(&Packet::Connect(Box::new(c)), V311, &mut buf),
            Err(EncodeError::Invalid(_))
        ));
        let mut c = minimal(V311);
        c.password = Some(Bytes::from_static(b"p"));
        assert!(matches!(
            encode(&Packet::Connect(Box::new(c.clone())), V311, &mut buf),
            Err(EncodeError::Invalid(_))
        ));
        c.username = Some(Utf8::from_static("u"));
        c.password = Some(Bytes::from(vec![0u8; 70_000]));
        assert_eq!(
            encode(&Packet::Connect(Box::new(c)), V311, &mut buf),
            Err(EncodeError::FieldTooLong)
        );
        assert!(buf.is_empty(), "a refused packet writes nothing");
    }
}
