//! Codec errors. Every decode error maps to the MQTT 5 reason code the specification names for
//! it ([`DecodeError::reason_code`]), which the session uses for its DISCONNECT (v5) before closing
//! the connection (3.1.1 simply closes).

use crate::ReasonCode;

/// Why bytes from a peer are not a valid packet. Messages carry the spec rule id where there is
/// one, e.g. `"[MQTT-3.1.2-3] CONNECT reserved flag set"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes cannot be parsed as the packet they claim to be (reason 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet parses but breaks a protocol rule (reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The remaining length announces more than the configured maximum (reason 0x95). Detected
    /// from the fixed header alone, before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge {
        /// Total packet size announced by the fixed header.
        size: u64,
        /// The configured maximum.
        max: u32,
    },
    /// CONNECT with a protocol name/level this codec does not speak (CONNACK 0x84, or return
    /// code 1 in 3.1.1/3.1).
    #[error("unsupported protocol version {level}")]
    UnsupportedProtocolVersion {
        /// The protocol level byte received.
        level: u8,
    },
    /// PUBLISH topic name invalid, e.g. with a wildcard character (reason 0x90).
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(&'static str),
    /// A Topic Alias of 0 (reason 0x94, [MQTT-3.3.2-8]).
    #[error("invalid topic alias: {0}")]
    TopicAliasInvalid(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code to put in the DISCONNECT (or CONNACK) answering this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MalformedPacket,
            DecodeError::Protocol(_) => ReasonCode::ProtocolError,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolVersion { .. } => {
                ReasonCode::UnsupportedProtocolVersion
            }
            DecodeError::TopicNameInvalid(_) => ReasonCode::TopicNameInvalid,
            DecodeError::TopicAliasInvalid(_) => ReasonCode::TopicAliasInvalid,
        }
    }
}

/// Why a packet value cannot be encoded. These are programming or configuration errors on our
/// side (the core never builds such packets from peer data), reported rather than panicking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The packet would exceed the 268,435,455-byte remaining length limit.
    #[error("packet too large to encode ({0} bytes)")]
    TooLarge(usize),
    /// A binary field longer than 65,535 bytes.
    #[error("binary field longer than 65535 bytes")]
    FieldTooLong,
    /// The packet kind does not exist in the target version (AUTH in 3.1.1, or MQTT 3.1).
    #[error("{0} cannot be encoded for this protocol version")]
    NotInVersion(&'static str),
    /// A QoS > 0 PUBLISH without packet id, or a QoS 0 one with a packet id.
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}
