//! MQTT 5.0 reason codes (spec section 2.4) and their mapping to MQTT 3.1.1 CONNACK return codes.

/// A reason code. The spec gives 0x00 several names (Success, Normal disconnection, Granted QoS 0);
/// here it is [`ReasonCode::Success`].
#[allow(missing_docs)] // each variant is the spec's name for the code
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ReasonCode {
    #[default]
    Success = 0x00,
    GrantedQoS1 = 0x01,
    GrantedQoS2 = 0x02,
    DisconnectWithWillMessage = 0x04,
    NoMatchingSubscribers = 0x10,
    NoSubscriptionExisted = 0x11,
    ContinueAuthentication = 0x18,
    ReAuthenticate = 0x19,
    UnspecifiedError = 0x80,
    MalformedPacket = 0x81,
    ProtocolError = 0x82,
    ImplementationSpecificError = 0x83,
    UnsupportedProtocolVersion = 0x84,
    ClientIdentifierNotValid = 0x85,
    BadUserNameOrPassword = 0x86,
    NotAuthorized = 0x87,
    ServerUnavailable = 0x88,
    ServerBusy = 0x89,
    Banned = 0x8A,
    ServerShuttingDown = 0x8B,
    BadAuthenticationMethod = 0x8C,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91,
    PacketIdentifierNotFound = 0x92,
    ReceiveMaximumExceeded = 0x93,
    TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95,
    MessageRateTooHigh = 0x96,
    QuotaExceeded = 0x97,
    AdministrativeAction = 0x98,
    PayloadFormatInvalid = 0x99,
    RetainNotSupported = 0x9A,
    QoSNotSupported = 0x9B,
    UseAnotherServer = 0x9C,
    ServerMoved = 0x9D,
    SharedSubscriptionsNotSupported = 0x9E,
    ConnectionRateExceeded = 0x9F,
    MaximumConnectTime = 0xA0,
    SubscriptionIdentifiersNotSupported = 0xA1,
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// Every defined code, for lookups and tests.
    pub const ALL: [ReasonCode; 43] = [
        ReasonCode::Success,
        ReasonCode::GrantedQoS1,
        ReasonCode::GrantedQoS2,
        ReasonCode::DisconnectWithWillMessage,
        ReasonCode::NoMatchingSubscribers,
        ReasonCode::NoSubscriptionExisted,
        ReasonCode::ContinueAuthentication,
        ReasonCode::ReAuthenticate,
        ReasonCode::UnspecifiedError,
        ReasonCode::MalformedPacket,
        ReasonCode::ProtocolError,
        ReasonCode::ImplementationSpecificError,
        ReasonCode::UnsupportedProtocolVersion,
        ReasonCode::ClientIdentifierNotValid,
        ReasonCode::BadUserNameOrPassword,
        ReasonCode::NotAuthorized,
        ReasonCode::ServerUnavailable,
        ReasonCode::ServerBusy,
        ReasonCode::Banned,
        ReasonCode::ServerShuttingDown,
        ReasonCode::BadAuthenticationMethod,
        ReasonCode::KeepAliveTimeout,
        ReasonCode::SessionTakenOver,
        ReasonCode::TopicFilterInvalid,
        ReasonCode::TopicNameInvalid,
        ReasonCode::PacketIdentifierInUse,
        ReasonCode::PacketIdentifierNotFound,
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

    /// The code's byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Looks a byte up; `None` for a value the spec does not define.
    pub fn from_u8(v: u8) -> Option<ReasonCode> {
        Self::ALL.iter().copied().find(|c| c.as_u8() == v)
    }

    /// True for codes below 0x80, which report success.
    pub fn is_success(self) -> bool {
        self.as_u8() < 0x80
    }

    /// The MQTT 3.1.1 CONNACK return code closest to this v5 CONNACK reason code
    /// (spec 3.1.1 section 3.2.2.3): 0 accepted, 1 unacceptable protocol version, 2 identifier
    /// rejected, 3 server unavailable, 4 bad user name or password, 5 not authorized.
    pub fn to_v3_connack(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::UnsupportedProtocolVersion => 1,
            ReasonCode::ClientIdentifierNotValid => 2,
            ReasonCode::BadUserNameOrPassword | ReasonCode::BadAuthenticationMethod => 4,
            ReasonCode::NotAuthorized | ReasonCode::Banned => 5,
            _ => 3,
        }
    }

    /// The v5 reason code for an MQTT 3.1.1 CONNACK return code; `None` for 6..=255.
    pub fn from_v3_connack(v: u8) -> Option<ReasonCode> {
        Some(match v {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for c in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_u8(c.as_u8()), Some(c));
        }
        assert_eq!(ReasonCode::from_u8(0x03), None);
    }

    #[test]
    fn v3_connack_mapping_round_trips_for_defined_codes() {
        for v in 0..=5u8 {
            let rc = ReasonCode::from_v3_connack(v).map(ReasonCode::to_v3_connack);
            assert_eq!(rc, Some(v));
        }
    }
}
