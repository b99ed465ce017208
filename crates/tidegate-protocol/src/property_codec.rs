//! Decoding and encoding of MQTT 5.0 property blocks (spec section 2.2.2), with the per-packet
//! allowed-set check.
//!
//! Place in the data flow: called by the packet files for the property block of each v5 packet
//! (never for 3.1.1). Decoding reads each property into a typed [`Property`], validating its
//! value (e.g. Receive Maximum 0 is a Protocol Error), then hands it to the packet's property
//! struct ([`PropertySet::apply`]), which refuses a property the packet may not carry and a
//! repeated one. Encoding walks the struct's fields in a fixed order through a [`Sink`].

use crate::properties::*;
use crate::wire::{Counter, MAX_VAR_INT, Reader, Sink};
use crate::{DecodeError, QoS, Utf8};
use bytes::Bytes;

/// One decoded property with its value already checked against the spec's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Property {
    PayloadFormatIndicator(bool),
    MessageExpiryInterval(u32),
    ContentType(Utf8),
    ResponseTopic(Utf8),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(Utf8),
    ServerKeepAlive(u16),
    AuthenticationMethod(Utf8),
    AuthenticationData(Bytes),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(Utf8),
    ServerReference(Utf8),
    ReasonString(Utf8),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(QoS),
    RetainAvailable(bool),
    User(Utf8, Utf8),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

/// A byte property that may only be 0 or 1.
fn flag(r: &mut Reader<'_>, why: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol(why)),
    }
}

fn non_zero_u16(r: &mut Reader<'_>, why: &'static str) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol(why)),
        v => Ok(v),
    }
}

impl Property {
    /// Reads one identifier and its value.
    fn decode(r: &mut Reader<'_>) -> Result<Property, DecodeError> {
        use Property as P;
        // The identifier is a variable byte integer; every defined one fits in one byte, so a
        // longer one is simply unknown.
        let raw = r.var_int()?;
        let Ok(ident) = u8::try_from(raw) else {
            return Err(UNKNOWN);
        };
        Ok(match ident {
            id::PAYLOAD_FORMAT_INDICATOR => P::PayloadFormatIndicator(flag(
                r,
                "payload format indicator other than 0 or 1 (v5 3.3.2.3.2)",
            )?),
            id::MESSAGE_EXPIRY_INTERVAL => P::MessageExpiryInterval(r.u32()?),
            id::CONTENT_TYPE => P::ContentType(r.utf8()?),
            id::RESPONSE_TOPIC => P::ResponseTopic(r.utf8()?),
            id::CORRELATION_DATA => P::CorrelationData(r.binary()?),
            id::SUBSCRIPTION_IDENTIFIER => match r.var_int()? {
                0 => {
                    return Err(DecodeError::Protocol(
                        "subscription identifier 0 (v5 3.8.2.1.2)",
                    ));
                }
                v => P::SubscriptionIdentifier(v),
            },
            id::SESSION_EXPIRY_INTERVAL => P::SessionExpiryInterval(r.u32()?),
            id::ASSIGNED_CLIENT_IDENTIFIER => P::AssignedClientIdentifier(r.utf8()?),
            id::SERVER_KEEP_ALIVE => P::ServerKeepAlive(r.u16()?),
            id::AUTHENTICATION_METHOD => P::AuthenticationMethod(r.utf8()?),
            id::AUTHENTICATION_DATA => P::AuthenticationData(r.binary()?),
            id::REQUEST_PROBLEM_INFORMATION => P::RequestProblemInformation(flag(
                r,
                "request problem information other than 0 or 1 (v5 3.1.2.11.7)",
            )?),
            id::WILL_DELAY_INTERVAL => P::WillDelayInterval(r.u32()?),
            id::REQUEST_RESPONSE_INFORMATION => P::RequestResponseInformation(flag(
                r,
                "request response information other than 0 or 1 (v5 3.1.2.11.6)",
            )?),
            id::RESPONSE_INFORMATION => P::ResponseInformation(r.utf8()?),
            id::SERVER_REFERENCE => P::ServerReference(r.utf8()?),
            id::REASON_STRING => P::ReasonString(r.utf8()?),
            id::RECEIVE_MAXIMUM => {
                P::ReceiveMaximum(non_zero_u16(r, "receive maximum 0 (v5 3.1.2.11.3)")?)
            }
            id::TOPIC_ALIAS_MAXIMUM => P::TopicAliasMaximum(r.u16()?),
            // Spec reason for this one is Topic Alias Invalid (0x94); DecodeError has no such
            // variant, and both close the connection, so it is reported as a Protocol Error.
            id::TOPIC_ALIAS => match r.u16()? {
                0 => {
                    return Err(DecodeError::TopicAliasInvalid(
                        "[MQTT-3.3.2-8] topic alias 0",
                    ));
                }
                v => P::TopicAlias(v),
            },
            id::MAXIMUM_QOS => P::MaximumQoS(match r.u8()? {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => {
                    return Err(DecodeError::Protocol(
                        "maximum QoS other than 0 or 1 (v5 3.2.2.3.4)",
                    ));
                }
            }),
            id::RETAIN_AVAILABLE => P::RetainAvailable(flag(
                r,
                "retain available other than 0 or 1 (v5 3.2.2.3.5)",
            )?),
            id::USER_PROPERTY => {
                let name = r.utf8()?;
                P::User(name, r.utf8()?)
            }
            id::MAXIMUM_PACKET_SIZE => match r.u32()? {
                0 => {
                    return Err(DecodeError::Protocol(
                        "maximum packet size 0 (v5 3.1.2.11.4)",
                    ));
                }
                v => P::MaximumPacketSize(v),
            },
            id::WILDCARD_SUBSCRIPTION_AVAILABLE => P::WildcardSubscriptionAvailable(flag(
                r,
                "wildcard subscription available other than 0 or 1 (v5 3.2.2.3.11)",
            )?),
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => P::SubscriptionIdentifierAvailable(flag(
                r,
                "subscription identifiers available other than 0 or 1 (v5 3.2.2.3.12)",
            )?),
            id::SHARED_SUBSCRIPTION_AVAILABLE => P::SharedSubscriptionAvailable(flag(
                r,
                "shared subscription available other than 0 or 1 (v5 3.2.2.3.13)",
            )?),
            _ => return Err(UNKNOWN),
        })
    }
}

const UNKNOWN: DecodeError = DecodeError::Malformed("unknown property identifier (v5 2.2.2.2)");

const REPEATED: DecodeError =
    DecodeError::Protocol("[MQTT-2.2.2-2] property included more than once");

/// Stores a property that may appear at most once.
fn once<T>(slot: &mut Option<T>, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(REPEATED);
    }
    *slot = Some(v);
    Ok(())
}

/// A packet kind's property struct: which properties it accepts and how it is written.
pub(crate) trait PropertySet: Default {
    /// Takes one decoded property, refusing one this packet may not carry or a repeat.
    fn apply(&mut self, p: Property) -> Result<(), DecodeError>;

    /// Writes every present property, in a fixed order, and reports values that may not be
    /// sent (the same ones [`PropertySet::apply`]'s caller refuses when decoding).
    fn emit<S: Sink>(&self, s: &mut S);
}

/// Reads a property block: its variable byte integer length, then the properties.
pub(crate) fn decode_properties<P: PropertySet>(r: &mut Reader<'_>) -> Result<P, DecodeError> {
    let len = r.var_int()?;
    let mut block = r.sub(len as usize)?;
    let mut props = P::default();
    while !block.is_empty() {
        props.apply(Property::decode(&mut block)?)?;
    }
    Ok(props)
}

/// The length of a property block's content, without its length prefix.
pub(crate) fn properties_len<P: PropertySet>(p: &P) -> usize {
    let mut c = Counter::default();
    p.emit(&mut c);
    c.len
}

/// Writes a property block: its length, then the properties.
pub(crate) fn emit_properties<P: PropertySet, S: Sink>(p: &P, s: &mut S) {
    let mut c = Counter::default();
    p.emit(&mut c);
    if let Some(e) = c.error {
        s.fail(e);
    }
    s.var_int(c.len);
    p.emit(s);
}

fn put_u8<S: Sink>(s: &mut S, ident: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.u8(ident);
        s.u8(v);
    }
}

fn put_bool<S: Sink>(s: &mut S, ident: u8, v: Option<bool>) {
    put_u8(s, ident, v.map(u8::from));
}

fn put_u16<S: Sink>(s: &mut S, ident: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.u8(ident);
        s.u16(v);
    }
}

fn put_u32<S: Sink>(s: &mut S, ident: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.u8(ident);
        s.u32(v);
    }
}

fn put_utf8<S: Sink>(s: &mut S, ident: u8, v: Option<&Utf8>) {
    if let Some(v) = v {
        s.u8(ident);
        s.utf8(v);
    }
}

fn put_binary<S: Sink>(s: &mut S, ident: u8, v: Option<&Bytes>) {
    if let Some(v) = v {
        s.u8(ident);
        s.binary(v);
    }
}

fn put_users<S: Sink>(s: &mut S, users: &[UserProperty]) {
    for (name, value) in users {
        s.u8(id::USER_PROPERTY);
        s.utf8(name);
        s.utf8(value);
    }
}

fn put_subscription_id<S: Sink>(s: &mut S, v: u32) {
    s.check(
        (1..=MAX_VAR_INT).contains(&v),
        "subscription identifier outside 1..=268435455",
    );
    s.u8(id::SUBSCRIPTION_IDENTIFIER);
    s.var_int(v as usize);
}

impl PropertySet for ConnectProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::SessionExpiryInterval(v) => once(&mut self.session_expiry_interval, v),
            Property::ReceiveMaximum(v) => once(&mut self.receive_maximum, v),
            Property::MaximumPacketSize(v) => once(&mut self.maximum_packet_size, v),
            Property::TopicAliasMaximum(v) => once(&mut self.topic_alias_maximum, v),
            Property::RequestResponseInformation(v) => {
                once(&mut self.request_response_information, v)
            }
            Property::RequestProblemInformation(v) => {
                once(&mut self.request_problem_information, v)
            }
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::AuthenticationMethod(v) => once(&mut self.authentication_method, v),
            Property::AuthenticationData(v) => once(&mut self.authentication_data, v),
            _ => Err(DecodeError::Protocol("property not allowed in CONNECT")),
        }
    }

    fn emit<S: Sink>(&self, s: &mut S) {
        s.check(self.receive_maximum != Some(0), "receive maximum 0");
        s.check(self.maximum_packet_size != Some(0), "maximum packet size 0");
        s.check(
            self.authentication_data.is_none() || self.authentication_method.is_some(),
            "authentication data without authentication method",
        );
        put_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_u16(s, id::RECEIVE_MAXIMUM, self.receive_maximum);
        put_u32(s, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_u16(s, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_bool(
            s,
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        put_bool(
            s,
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        put_users(s, &self.user_properties);
        put_utf8(
            s,
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        put_binary(
            s,
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_ref(),
        );
    }
}

impl PropertySet for WillProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::WillDelayInterval(v) => once(&mut self.will_delay_interval, v),
            Property::PayloadFormatIndicator(v) => once(&mut self.payload_format_indicator, v),
            Property::MessageExpiryInterval(v) => once(&mut self.message_expiry_interval, v),
            Property::ContentType(v) => once(&mut self.content_type, v),
            Property::ResponseTopic(v) => once(&mut self.response_topic, v),
            Property::CorrelationData(v) => once(&mut self.correlation_data, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            _ => Err(DecodeError::Protocol(
                "property not allowed in will properties",
            )),
        }
    }

    fn emit<S: Sink>(&self, s: &mut S) {
        put_u32(s, id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        put_bool(
            s,
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
        );
        put_u32(s, id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_utf8(s, id::CONTENT_TYPE, self.content_type.as_ref());
        put_utf8(s, id::RESPONSE_TOPIC, self.response_topic.as_ref());
        put_binary(s, id::CORRELATION_DATA, self.correlation_data.as_ref());
        put_users(s, &self.user_properties);
    }
}

impl PropertySet for ConnAckProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::SessionExpiryInterval(v) => once(&mut self.session_expiry_interval, v),
            Property::ReceiveMaximum(v) => once(&mut self.receive_maximum, v),
            Property::MaximumQoS(v) => once(&mut self.maximum_qos, v),
            Property::RetainAvailable(v) => once(&mut self.retain_available, v),
            Property::MaximumPacketSize(v) => once(&mut self.maximum_packet_size, v),
            Property::AssignedClientIdentifier(v) => once(&mut self.assigned_client_identifier, v),
            Property::TopicAliasMaximum(v) => once(&mut self.topic_alias_maximum, v),
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::WildcardSubscriptionAvailable(v) => {
                once(&mut self.wildcard_subscription_available, v)
            }
            Property::SubscriptionIdentifierAvailable(v) => {
                once(&mut self.subscription_identifiers_available, v)
            }
            Property::SharedSubscriptionAvailable(v) => {
                once(&mut self.shared_subscription_available, v)
            }
            Property::ServerKeepAlive(v) => once(&mut self.server_keep_alive, v),
            Property::ResponseInformation(v) => once(&mut self.response_information, v),
            Property::ServerReference(v) => once(&mut self.server_reference, v),
            Property::AuthenticationMethod(v) => once(&mut self.authentication_method, v),
            Property::AuthenticationData(v) => once(&mut self.authentication_data, v),
            _ => Err(DecodeError::Protocol("property not allowed in CONNACK")),
        }
    }

    fn emit<S: Sink>(&self, s: &mut S) {
        s.check(self.receive_maximum != Some(0), "receive maximum 0");
        s.check(self.maximum_packet_size != Some(0), "maximum packet size 0");
        s.check(
            self.maximum_qos != Some(QoS::ExactlyOnce),
            "maximum QoS 2 may not be sent (omit the property instead)",
        );
        put_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_u16(s, id::RECEIVE_MAXIMUM, self.receive_maximum);
        put_u8(s, id::MAXIMUM_QOS, self.maximum_qos.map(QoS::as_u8));
        put_bool(s, id::RETAIN_AVAILABLE, self.retain_available);
        put_u32(s, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_utf8(
            s,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_ref(),
        );
        put_u16(s, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_utf8(s, id::REASON_STRING, self.reason_string.as_ref());
        put_users(s, &self.user_properties);
        put_bool(
            s,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_bool(
            s,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        put_bool(
            s,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        put_u16(s, id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_utf8(
            s,
            id::RESPONSE_INFORMATION,
            self.response_information.as_ref(),
        );
        put_utf8(s, id::SERVER_REFERENCE, self.server_reference.as_ref());
        put_utf8(
            s,
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        put_binary(
            s,
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_ref(),
        );
    }
}

impl PropertySet for PublishProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::PayloadFormatIndicator(v) => once(&mut self.payload_format_indicator, v),
            Property::MessageExpiryInterval(v) => once(&mut self.message_expiry_interval, v),
            Property::TopicAlias(v) => once(&mut self.topic_alias, v),
            Property::ResponseTopic(v) => once(&mut self.response_topic, v),
            Property::CorrelationData(v) => once(&mut self.correlation_data, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::SubscriptionIdentifier(v) => {
                self.subscription_identifiers.push(v);
                Ok(())
            }
            Property::ContentType(v) => once(&mut self.content_type, v),
            _ => Err(DecodeError::Protocol("property not allowed in PUBLISH")),
        }
    }

    fn emit<S: Sink>(&self, s: &mut S) {
        s.check(self.topic_alias != Some(0), "topic alias 0");
        put_bool(
            s,
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
        );
        put_u32(s, id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_u16(s, id::TOPIC_ALIAS, self.topic_alias);
        put_utf8(s, id::RESPONSE_TOPIC, self.response_topic.as_ref());
        put_binary(s, id::CORRELATION_DATA, self.correlation_data.as_ref());
        put_users(s, &self.user_properties);
        for &v in &self.subscription_identifiers {
            put_subscription_id(s, v);
        }
        put_utf8(s, id::CONTENT_TYPE, self.content_type.as_ref());
    }
}

impl PropertySet for AckProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            _ => Err(DecodeError::Protocol(
                "property not allowed in an acknowledgement",
            )),
        }
    }

    fn emit<S: Sink>(&self, s: &mut S) {
        put_utf8(s, id::REASON_STRING, self.reason_string.as_ref());
        put_users(s, &self.user_properties);
    }
}

impl PropertySet for SubscribeProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::SubscriptionIdentifier(v) => once(&mut self.subscription_identifier, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            _ => Err(DecodeError::Protocol("property not allowed in SUBSCRIBE")),
        }
    }

    fn emit<S: Sink>(&self, s: &mut S) {
        if let Some(v) = self.subscription_identifier {
            put_subscription_id(s, v);
        }
        put_users(s, &self.user_properties);
    }
}

impl PropertySet for UnsubscribeProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            _ => Err(DecodeError::Protocol("property not allowed in UNSUBSCRIBE")),
        }
    }

    fn emit<S: Sink>(&self, s: &mut S) {
        put_users(s, &self.user_properties);
    }
}

impl PropertySet for DisconnectProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::SessionExpiryInterval(v) => once(&mut self.session_expiry_interval, v),
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::ServerReference(v) => once(&mut self.server_reference, v),
            _ => Err(DecodeError::Protocol("property not allowed in DISCONNECT")),
        }
    }

    fn emit<S: Sink>(&self, s: &mut S) {
        put_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_utf8(s, id::REASON_STRING, self.reason_string.as_ref());
        put_users(s, &self.user_properties);
        put_utf8(s, id::SERVER_REFERENCE, self.server_reference.as_ref());
    }
}

impl PropertySet for AuthProperties {
    fn apply(&mut self, p: Property) -> Result<(), DecodeError> {
        match p {
            Property::AuthenticationMethod(v) => once(&mut self.authentication_method, v),
            Property::AuthenticationData(v) => once(&mut self.authentication_data, v),
            Property::ReasonString(v) => once(&mut self.reason_string, v),
            Property::User(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            _ => Err(DecodeError::Protocol("property not allowed in AUTH")),
        }
    }

    fn emit<S: Sink>(&self, s: &mut S) {
        put_utf8(
            s,
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        put_binary(
            s,
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_ref(),
        );
        put_utf8(s, id::REASON_STRING, self.reason_string.as_ref());
        put_users(s, &self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Writer;
    use bytes::BytesMut;

    fn utf8(s: &'static str) -> Utf8 {
        Utf8::from_static(s)
    }

    fn one(bytes: &'static [u8]) -> Result<Property, DecodeError> {
        let b = Bytes::from_static(bytes);
        let mut r = Reader::new(&b);
        let p = Property::decode(&mut r)?;
        assert!(r.is_empty(), "property {bytes:02x?} not fully read");
        Ok(p)
    }

    /// Every identifier of spec 5.0 table 2-4 with a literal value.
    #[test]
    fn every_identifier_decodes_from_a_literal() {
        use Property as P;
        let table: [(&[u8], Property); 27] = [
            (&[0x01, 0x01], P::PayloadFormatIndicator(true)),
            (&[0x02, 0, 0, 1, 0], P::MessageExpiryInterval(256)),
            (&[0x03, 0, 1, b't'], P::ContentType(utf8("t"))),
            (&[0x08, 0, 1, b'r'], P::ResponseTopic(utf8("r"))),
            (
                &[0x09, 0, 2, 1, 2],
                P::CorrelationData(Bytes::from_static(&[1, 2])),
            ),
            (
                &[0x0B, 0xFF, 0xFF, 0xFF, 0x7F],
                P::SubscriptionIdentifier(268_435_455),
            ),
            (
                &[0x11, 0xFF, 0xFF, 0xFF, 0xFF],
                P::SessionExpiryInterval(u32::MAX),
            ),
            (&[0x12, 0, 1, b'c'], P::AssignedClientIdentifier(utf8("c"))),
            (&[0x13, 0, 30], P::ServerKeepAlive(30)),
            (&[0x15, 0, 1, b'm'], P::AuthenticationMethod(utf8("m"))),
            (&[0x16, 0, 0], P::AuthenticationData(Bytes::new())),
            (&[0x17, 0x00], P::RequestProblemInformation(false)),
            (&[0x18, 0, 0, 0, 9], P::WillDelayInterval(9)),
            (&[0x19, 0x01], P::RequestResponseInformation(true)),
            (&[0x1A, 0, 1, b'i'], P::ResponseInformation(utf8("i"))),
            (&[0x1C, 0, 1, b's'], P::ServerReference(utf8("s"))),
            (&[0x1F, 0, 1, b'x'], P::ReasonString(utf8("x"))),
            (&[0x21, 0xFF, 0xFF], P::ReceiveMaximum(65_535)),
            (&[0x22, 0, 0], P::TopicAliasMaximum(0)),
            (&[0x23, 0, 1], P::TopicAlias(1)),
            (&[0x24, 0x00], P::MaximumQoS(QoS::AtMostOnce)),
            (&[0x25, 0x01], P::RetainAvailable(true)),
            (
                &[0x26, 0, 1, b'k', 0, 1, b'v'],
                P::User(utf8("k"), utf8("v")),
            ),
            (&[0x27, 0, 0, 0x10, 0], P::MaximumPacketSize(4096)),
            (&[0x28, 0x00], P::WildcardSubscriptionAvailable(false)),
            (&[0x29, 0x01], P::SubscriptionIdentifierAvailable(true)),
            (&[0x2A, 0x00], P::SharedSubscriptionAvailable(false)),
        ];
        for (bytes, expected) in table {
            let b = Bytes::copy_from_slice(bytes);
            let mut r = Reader::new(&b);
            assert_eq!(Property::decode(&mut r), Ok(expected), "{bytes:02x?}");
            assert!(r.is_empty());
        }
    }

    #[test]
    fn unknown_identifiers_are_malformed() {
        for ident in 0u8..=0x7F {
            let bytes = Bytes::from(vec![ident, 0, 0, 0, 0]);
            let mut r = Reader::new(&bytes);
            if let Err(e) = Property::decode(&mut r) {
                let known = [
                    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18,
                    0x19, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
                    0x2A,
                ];
                if !known.contains(&ident) {
                    assert_eq!(e, UNKNOWN, "{ident:#x}");
                }
            } else {
                assert!(ident != 0 && ident <= 0x2A, "{ident:#x} accepted");
            }
        }
        // A two-byte identifier (0x81 0x01 = 129).
        assert_eq!(one(&[0x81, 0x01, 0]), Err(UNKNOWN));
    }

    #[test]
    fn out_of_range_values_are_protocol_errors() {
        for bytes in [
            &[0x01, 2][..],
            &[0x17, 2],
            &[0x19, 0xFF],
            &[0x24, 2],
            &[0x25, 2],
            &[0x28, 2],
            &[0x29, 2],
            &[0x2A, 2],
            &[0x21, 0, 0],
            &[0x27, 0, 0, 0, 0],
            &[0x0B, 0],
        ] {
            let b = Bytes::copy_from_slice(bytes);
            let e = Property::decode(&mut Reader::new(&b));
            assert!(
                matches!(e, Err(DecodeError::Protocol(_))),
                "{bytes:02x?}: {e:?}"
            );
        }
        // Topic alias 0 has its own reason code, 0x94.
        let b = Bytes::from_static(&[0x23, 0, 0]);
        let e = Property::decode(&mut Reader::new(&b));
        assert!(matches!(e, Err(DecodeError::TopicAliasInvalid(_))), "{e:?}");
    }

    fn block<P: PropertySet>(content: &[u8]) -> Result<P, DecodeError> {
        let mut v = vec![content.len() as u8];
        v.extend_from_slice(content);
        let b = Bytes::from(v);
        let mut r = Reader::new(&b);
        let p = decode_properties(&mut r)?;
        assert!(r.is_empty());
        Ok(p)
    }

    #[test]
    fn repeats_allowed_only_for_user_property_and_publish_subscription_identifier() {
        let users =
            block::<AckProperties>(&[0x26, 0, 1, b'a', 0, 1, b'1', 0x26, 0, 1, b'a', 0, 1, b'2'])
                .unwrap();
        assert_eq!(
            users.user_properties,
            [(utf8("a"), utf8("1")), (utf8("a"), utf8("2"))],
            "order and duplicates preserved"
        );
        let p = block::<PublishProperties>(&[0x0B, 1, 0x0B, 2]).unwrap();
        assert_eq!(p.subscription_identifiers, [1, 2]);
        assert_eq!(
            block::<SubscribeProperties>(&[0x0B, 1, 0x0B, 2]),
            Err(REPEATED)
        );
        assert_eq!(
            block::<AckProperties>(&[0x1F, 0, 0, 0x1F, 0, 0]),
            Err(REPEATED)
        );
        assert_eq!(
            block::<ConnectProperties>(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]),
            Err(REPEATED)
        );
        assert_eq!(block::<WillProperties>(&[0x01, 0, 0x01, 1]), Err(REPEATED));
    }

    #[test]
    fn each_packet_refuses_foreign_properties() {
        // Session expiry is valid in CONNECT, CONNACK and DISCONNECT only.
        let se = [0x11, 0, 0, 0, 1];
        assert!(block::<ConnectProperties>(&se).is_ok());
        assert!(block::<ConnAckProperties>(&se).is_ok());
        assert!(block::<DisconnectProperties>(&se).is_ok());
        assert!(matches!(
            block::<WillProperties>(&se),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            block::<PublishProperties>(&se),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            block::<AckProperties>(&se),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            block::<SubscribeProperties>(&se),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            block::<UnsubscribeProperties>(&se),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            block::<AuthProperties>(&se),
            Err(DecodeError::Protocol(_))
        ));
        // A subscription identifier is not a CONNACK property.
        assert!(matches!(
            block::<ConnAckProperties>(&[0x0B, 1]),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn block_length_must_cover_its_properties() {
        // Block of 2 bytes holding the start of a 5-byte property.
        let b = Bytes::from_static(&[2, 0x11, 0, 0, 0, 1]);
        assert!(matches!(
            decode_properties::<ConnectProperties>(&mut Reader::new(&b)),
            Err(DecodeError::Malformed(_))
        ));
        // Block longer than the packet.
        let b = Bytes::from_static(&[9, 0x01, 1]);
        assert!(matches!(
            decode_properties::<PublishProperties>(&mut Reader::new(&b)),
            Err(DecodeError::Malformed(_))
        ));
    }

    fn round_trip<P: PropertySet + PartialEq + std::fmt::Debug>(p: &P) {
        let mut c = Counter::default();
        emit_properties(p, &mut c);
        let len = c.result().unwrap();
        let mut buf = BytesMut::new();
        emit_properties(p, &mut Writer(&mut buf));
        assert_eq!(buf.len(), len);
        let b = buf.freeze();
        let mut r = Reader::new(&b);
        assert_eq!(decode_properties::<P>(&mut r).as_ref(), Ok(p));
        assert!(r.is_empty());
    }

    fn users() -> Vec<UserProperty> {
        vec![(utf8("k"), utf8("v")), (utf8("k"), utf8(""))]
    }

    /// Every property of every packet kind, all set at once, survives encode then decode.
    #[test]
    fn every_property_round_trips() {
        let data = Bytes::from_static(b"data");
        round_trip(&ConnectProperties {
            session_expiry_interval: Some(1),
            receive_maximum: Some(2),
            maximum_packet_size: Some(3),
            topic_alias_maximum: Some(4),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            user_properties: users(),
            authentication_method: Some(utf8("m")),
            authentication_data: Some(data.clone()),
        });
        round_trip(&WillProperties {
            will_delay_interval: Some(1),
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(2),
            content_type: Some(utf8("text/plain")),
            response_topic: Some(utf8("r/t")),
            correlation_data: Some(data.clone()),
            user_properties: users(),
        });
        round_trip(&ConnAckProperties {
            session_expiry_interval: Some(1),
            receive_maximum: Some(2),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(3),
            assigned_client_identifier: Some(utf8("id")),
            topic_alias_maximum: Some(4),
            reason_string: Some(utf8("why")),
            user_properties: users(),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(5),
            response_information: Some(utf8("ri")),
            server_reference: Some(utf8("other")),
            authentication_method: Some(utf8("m")),
            authentication_data: Some(data.clone()),
        });
        round_trip(&PublishProperties {
            payload_format_indicator: Some(false),
            message_expiry_interval: Some(1),
            topic_alias: Some(2),
            response_topic: Some(utf8("r")),
            correlation_data: Some(data.clone()),
            user_properties: users(),
            subscription_identifiers: vec![1, 127, 128, 268_435_455],
            content_type: Some(utf8("c")),
        });
        round_trip(&AckProperties {
            reason_string: Some(utf8("r")),
            user_properties: users(),
        });
        round_trip(&SubscribeProperties {
            subscription_identifier: Some(16_384),
            user_properties: users(),
        });
        round_trip(&UnsubscribeProperties {
            user_properties: users(),
        });
        round_trip(&DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: Some(utf8("r")),
            user_properties: users(),
            server_reference: Some(utf8("s")),
        });
        round_trip(&AuthProperties {
            authentication_method: Some(utf8("m")),
            authentication_data: Some(data),
            reason_string: Some(utf8("r")),
            user_properties: users(),
        });
    }

    #[test]
    fn encoding_refuses_values_decoding_refuses() {
        let mut c = Counter::default();
        emit_properties(
            &ConnAckProperties {
                maximum_qos: Some(QoS::ExactlyOnce),
                ..ConnAckProperties::default()
            },
            &mut c,
        );
        assert!(c.result().is_err());
        for p in [
            PublishProperties {
                topic_alias: Some(0),
                ..PublishProperties::default()
            },
            PublishProperties {
                correlation_data: Some(Bytes::from(vec![0; 70_000])),
                ..PublishProperties::default()
            },
        ] {
            let mut c = Counter::default();
            emit_properties(&p, &mut c);
            assert!(c.result().is_err(), "{p:?}");
        }
        let mut c = Counter::default();
        emit_properties(
            &SubscribeProperties {
                subscription_identifier: Some(0),
                ..SubscribeProperties::default()
            },
            &mut c,
        );
        assert!(c.result().is_err());
    }
}
