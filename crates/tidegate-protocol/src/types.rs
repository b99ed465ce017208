//! Small value types shared by many packets: protocol version, QoS, packet identifiers and
//! subscription options.

use std::num::NonZeroU16;

/// The protocol level a client announced in CONNECT; it decides how every later packet of the
/// connection is encoded (5.0 adds properties and reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3). Only recognised so it can be refused with the
    /// right return code; never used to encode.
    V31,
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte carried in CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// True for MQTT 5.0, the version with properties and reason codes everywhere.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is not a QoS and yields `None` (a malformed packet).
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The numeric value (0, 1 or 2).
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A non-zero packet identifier ([MQTT-2.2.1-3]: QoS 1/2 PUBLISH, SUBSCRIBE and UNSUBSCRIBE
/// carry a non-zero identifier). A newtype so zero can never be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// `None` for zero, which is not a valid packet identifier.
    pub fn new(v: u16) -> Option<PacketId> {
        NonZeroU16::new(v).map(PacketId)
    }

    /// The raw value, never zero.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// What to do with retained messages when a subscription is made (MQTT 5 option; 3.1.1 always
/// behaves as `SendAtSubscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not already exist.
    SendIfNew = 1,
    /// 2: do not send retained messages.
    DoNotSend = 2,
}

/// The options byte of one SUBSCRIBE entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the subscriber accepts.
    pub qos: QoS,
    /// MQTT 5: do not send the subscriber's own publications back to it.
    pub no_local: bool,
    /// MQTT 5: keep the RETAIN flag as published instead of clearing it on forwarded messages.
    pub retain_as_published: bool,
    /// MQTT 5: retained-message handling at subscribe time.
    pub retain_handling: RetainHandling,
}
