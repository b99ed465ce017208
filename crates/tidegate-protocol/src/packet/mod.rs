//! The MQTT control packets as plain values. One struct per packet kind; the four QoS
//! acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP) share [`PubResponse`] because they have
//! the same shape.
//!
//! In MQTT 3.1.1, reason codes and properties do not exist on the wire: decoding fills them with
//! their defaults (Success, empty properties) and encoding leaves them out.

use crate::properties::*;
use crate::{PacketId, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions, Utf8};
use bytes::Bytes;

/// Any MQTT control packet.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 only.
    Auth(Auth),
}

impl Packet {
    /// The packet type number of the fixed header (1 = CONNECT ... 15 = AUTH).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }

    /// A short upper-case name for logs ("PUBLISH").
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

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

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// The server holds a session for this client.
    pub session_present: bool,
    /// v5 reason code; in 3.1.1 mapped to a return code with [`ReasonCode::to_v3_connack`].
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: ConnAckProperties,
}

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

/// PUBACK, PUBREC, PUBREL or PUBCOMP (which one is the [`Packet`] variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// The acknowledged packet identifier.
    pub packet_id: PacketId,
    /// MQTT 5 reason code (Success when absent on the wire).
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl PubResponse {
    /// A successful acknowledgement without properties.
    pub fn success(packet_id: PacketId) -> PubResponse {
        PubResponse {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

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

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// One per filter: GrantedQoS0 (Success)/1/2 or a failure code. In 3.1.1 any failure is
    /// encoded as 0x80.
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

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

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5: one per filter (Success or NoSubscriptionExisted or a failure). Empty in 3.1.1.
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// MQTT 5 reason code; Success (normal disconnection) in 3.1.1.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with a reason code and no properties.
    pub fn with_reason(reason_code: ReasonCode) -> Disconnect {
        Disconnect {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }
}

/// AUTH (MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, ContinueAuthentication or ReAuthenticate.
    pub reason_code: ReasonCode,
    /// Properties.
    pub properties: AuthProperties,
}
