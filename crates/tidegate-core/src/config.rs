//! Limits and options of the session engine. The server's TOML `[limits]` section maps onto
//! [`BrokerConfig`]; every limit here is enforced before memory is spent. The server calls
//! [`BrokerConfig::validate`] before building the broker, so the engine can rely on the values
//! being announceable in a CONNACK (e.g. a Receive Maximum of 0 would be a protocol error).

use std::time::Duration;

/// What to drop when an offline (or slow) session's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueDropPolicy {
    /// Drop the oldest QoS 0 message, else the oldest message (Mosquitto/EMQX behaviour).
    #[default]
    DropOldest,
    /// Refuse the new message.
    DropNewest,
}

/// Engine limits and options, with the defaults a newcomer gets from `tidegate serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Largest packet accepted from a client, and announced in CONNACK (v5). Default 1 MiB.
    pub max_packet_size: u32,
    /// CONNECT must arrive within this after the socket opens. Default 10 s.
    pub connect_timeout: Duration,
    /// Outbound QoS 1/2 messages unacknowledged per session (further capped by the client's
    /// Receive Maximum). Default 64.
    pub max_inflight: u16,
    /// Inbound QoS 1/2 publications a client may have unacknowledged: our Receive Maximum,
    /// announced in CONNACK (v5). Default 64.
    pub receive_maximum: u16,
    /// Messages queued per session (offline, or beyond the inflight window). Default 10,000.
    pub max_queued_messages: usize,
    /// What goes when the queue is full.
    pub queue_drop_policy: QueueDropPolicy,
    /// Subscriptions per client. Default 1,000.
    pub max_subscriptions: usize,
    /// Longest topic name or filter in bytes. Default 65,535.
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter. Default 128.
    pub max_topic_levels: usize,
    /// Topic aliases a v5 client may use towards us (announced in CONNACK). Default 64.
    pub topic_alias_maximum: u16,
    /// Upper bound on the session expiry interval a client may ask for, in seconds. Default
    /// 7 days (u32::MAX would mean "never expires"). Also the expiry of a 3.1.1 session made
    /// with Clean Session = 0, which the 3.1.1 protocol cannot bound (as EMQX does).
    pub max_session_expiry: u32,
    /// Keep alive imposed when a client asks for 0 or for more than this (v5 Server Keep Alive),
    /// in seconds; `None` accepts the client's value. Default `None`. MQTT 5 only: a 3.1.1
    /// client cannot be told, so its own value is enforced.
    pub max_keep_alive: Option<u16>,
    /// Highest QoS granted. Default 2.
    pub max_qos: tidegate_protocol::QoS,
    /// Retained messages accepted. Default true.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are allowed. Default true.
    pub wildcard_subscriptions: bool,
    /// Whether shared subscriptions are allowed. Default true.
    pub shared_subscriptions: bool,
    /// Whether subscription identifiers are supported. Default true.
    pub subscription_identifiers: bool,
    /// Most retained messages held. Default 1,000,000.
    pub max_retained_messages: usize,
    /// With persistence: queued messages of a persistent session kept in memory; the rest of
    /// its queue stays in the store and is loaded as this window drains (an offline session
    /// keeps none). Default 128. Ignored without persistence (everything is in memory).
    pub queue_memory_window: usize,
    /// How often each tenant with at least one session gets its `$SYS/broker/...` statistics
    /// published (retained, QoS 0, that tenant's figures only); zero turns them off. Default
    /// 10 s. See the broker's `sys` module for the topics.
    pub sys_interval: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_inflight: 64,
            receive_maximum: 64,
            max_queued_messages: 10_000,
            queue_drop_policy: QueueDropPolicy::DropOldest,
            max_subscriptions: 1_000,
            max_topic_length: 65_535,
            max_topic_levels: 128,
            topic_alias_maximum: 64,
            max_session_expiry: 7 * 24 * 3600,
            max_keep_alive: None,
            max_qos: tidegate_protocol::QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            max_retained_messages: 1_000_000,
            queue_memory_window: 128,
            sys_interval: Duration::from_secs(10),
        }
    }
}

/// A [`BrokerConfig`] value the engine cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A limit that must be at least 1 is 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// `max_packet_size` is beyond the largest MQTT packet (268,435,460 bytes).
    #[error("max_packet_size {0} exceeds the MQTT maximum of 268435460 bytes")]
    PacketSizeTooLarge(u32),
}

/// The largest packet MQTT can frame: a 1-byte header, a 4-byte remaining length and
/// 268,435,455 bytes of body.
const MQTT_MAX_PACKET: u32 = 268_435_460;

impl BrokerConfig {
    /// Checks the values the engine announces or divides by: a zero Receive Maximum, Maximum
    /// Packet Size or Server Keep Alive cannot be sent in a CONNACK, a zero inflight window
    /// would stall every QoS 1/2 delivery, and a zero connect timeout would close every socket.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let non_zero = [
            ("max_packet_size", self.max_packet_size == 0),
            ("connect_timeout", self.connect_timeout.is_zero()),
            ("max_inflight", self.max_inflight == 0),
            ("receive_maximum", self.receive_maximum == 0),
            ("max_topic_length", self.max_topic_length == 0),
            ("max_topic_levels", self.max_topic_levels == 0),
            ("max_keep_alive", self.max_keep_alive == Some(0)),
        ];
        if let Some((name, _)) = non_zero.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Zero(name));
        }
        if self.max_packet_size > MQTT_MAX_PACKET {
            return Err(ConfigError::PacketSizeTooLarge(self.max_packet_size));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(BrokerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn zero_limits_and_oversized_packets_are_rejected() {
        let c = BrokerConfig {
            receive_maximum: 0,
            ..BrokerConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("receive_maximum")));
        let c = BrokerConfig {
            max_keep_alive: Some(0),
            ..BrokerConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("max_keep_alive")));
        let c = BrokerConfig {
            max_inflight: 0,
            ..BrokerConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("max_inflight")));
        let c = BrokerConfig {
            max_packet_size: MQTT_MAX_PACKET + 1,
            ..BrokerConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::PacketSizeTooLarge(MQTT_MAX_PACKET + 1))
        );
    }
}
