//! MQTT 5.0 properties (spec section 2.2.2), one struct per packet kind holding exactly the
//! properties that packet may carry. In MQTT 3.1.1 every property struct is empty (default).
//!
//! The decoder rejects a property that is not allowed in the packet kind, and a property other
//! than User Property or Subscription Identifier that appears twice, with a Protocol Error
//! ([MQTT-2.2.2-2]), and an unknown property identifier as a Malformed Packet.

use crate::{QoS, Utf8};
use bytes::Bytes;

/// A user property: a UTF-8 name/value pair, order preserved, may repeat.
pub type UserProperty = (Utf8, Utf8);

/// Property identifiers (spec table 2-4).
#[allow(missing_docs)]
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// CONNECT properties.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    pub session_expiry_interval: Option<u32>,
    /// Never 0 ([MQTT-3.1.2-?]: a value of 0 is a Protocol Error).
    pub receive_maximum: Option<u16>,
    /// Never 0 (Protocol Error).
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<bool>,
    pub request_problem_information: Option<bool>,
    pub user_properties: Vec<UserProperty>,
    pub authentication_method: Option<Utf8>,
    pub authentication_data: Option<Bytes>,
}

/// Will properties, carried in the CONNECT payload.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WillProperties {
    pub will_delay_interval: Option<u32>,
    pub payload_format_indicator: Option<bool>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<Utf8>,
    pub response_topic: Option<Utf8>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<UserProperty>,
}

/// CONNACK properties.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAckProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    /// Only 0 or 1 may be sent (a server supporting QoS 2 omits it).
    pub maximum_qos: Option<QoS>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<u32>,
    pub assigned_client_identifier: Option<Utf8>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<Utf8>,
    pub user_properties: Vec<UserProperty>,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifiers_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<Utf8>,
    pub server_reference: Option<Utf8>,
    pub authentication_method: Option<Utf8>,
    pub authentication_data: Option<Bytes>,
}

/// PUBLISH properties.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishProperties {
    pub payload_format_indicator: Option<bool>,
    pub message_expiry_interval: Option<u32>,
    /// Never 0 ([MQTT-3.3.2-8]: 0 is a Topic Alias Invalid error).
    pub topic_alias: Option<u16>,
    pub response_topic: Option<Utf8>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<UserProperty>,
    /// Server to client only; may repeat. Each is 1..=268,435,455.
    pub subscription_identifiers: Vec<u32>,
    pub content_type: Option<Utf8>,
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckProperties {
    pub reason_string: Option<Utf8>,
    pub user_properties: Vec<UserProperty>,
}

/// SUBSCRIBE properties.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeProperties {
    /// 1..=268,435,455; 0 is a Protocol Error.
    pub subscription_identifier: Option<u32>,
    pub user_properties: Vec<UserProperty>,
}

/// UNSUBSCRIBE properties.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubscribeProperties {
    pub user_properties: Vec<UserProperty>,
}

/// DISCONNECT properties.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisconnectProperties {
    pub session_expiry_interval: Option<u32>,
    pub reason_string: Option<Utf8>,
    pub user_properties: Vec<UserProperty>,
    pub server_reference: Option<Utf8>,
}

/// AUTH properties.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthProperties {
    pub authentication_method: Option<Utf8>,
    pub authentication_data: Option<Bytes>,
    pub reason_string: Option<Utf8>,
    pub user_properties: Vec<UserProperty>,
}
