//! [`Message`]: an application message as routed inside the engine, independent of the
//! connection it came from or goes to. Shared by reference count (`Arc<Message>`) between the
//! subscribers, queues and the retained store it is fanned out to, so a fan-out to N sessions
//! costs N pointer copies, not N payload copies.
//!
//! Place in the data flow: the broker builds one from an inbound PUBLISH (topic alias already
//! resolved) or from a will, hands it to the router, and rebuilds a PUBLISH per subscriber at
//! send time (delivery QoS, RETAIN flag, subscription identifiers and the remaining Message
//! Expiry Interval are per subscriber, so they are not part of the message).

use crate::router::SessionKey;
use bytes::Bytes;
use std::time::{Duration, Instant};
use tidegate_protocol::{Publish, PublishProperties, QoS, Utf8, Will};

/// An application message after it was accepted from a publisher (or a will, or a retained
/// store). Topic aliases are already resolved; subscription identifiers are not part of it (they
/// are added per subscriber on delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name, never empty.
    pub topic: Utf8,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with (delivery QoS is min(this, subscription QoS)).
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Properties to forward (payload format, content type, response topic, correlation data,
    /// user properties). `topic_alias`, `subscription_identifiers` and
    /// `message_expiry_interval` are cleared: expiry lives in `expires_at`.
    pub properties: PublishProperties,
    /// When the message expires (from Message Expiry Interval); the remaining interval is
    /// forwarded on delivery, and an expired message is not delivered.
    pub expires_at: Option<Instant>,
    /// The session that published it, for No Local. `None` for wills sent after the session is
    /// gone and for system messages.
    pub publisher: Option<SessionKey>,
    /// When the gateway accepted it: the start of the publish-to-deliver latency. `None` for a
    /// message rebuilt from the store (its arrival time is not kept there).
    pub received: Option<Instant>,
}

impl Message {
    /// Builds the message carried by an inbound PUBLISH. `topic` is the resolved topic name
    /// (the PUBLISH may carry an empty topic and an alias); `now` starts the expiry clock.
    pub fn from_publish(
        publish: Publish,
        topic: Utf8,
        now: Instant,
        publisher: Option<SessionKey>,
    ) -> Message {
        let mut properties = publish.properties;
        let expires_at = expiry_deadline(now, properties.message_expiry_interval.take());
        // Per-hop properties: an alias only means something on the connection it came from,
        // and subscription identifiers are added per subscriber on the way out.
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Message {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
            publisher,
            received: Some(now),
        }
    }

    /// Builds the message a will publishes. The will's Message Expiry Interval starts when the
    /// will is published, i.e. at `now` (MQTT 5 section 3.1.3.2.4).
    pub fn from_will(will: Will, now: Instant, publisher: Option<SessionKey>) -> Message {
        let p = will.properties;
        Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
                ..PublishProperties::default()
            },
            expires_at: expiry_deadline(now, p.message_expiry_interval),
            publisher,
            received: Some(now),
        }
    }

    /// True once the Message Expiry Interval has fully elapsed at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The Message Expiry Interval to forward at `now`: the published value minus the time the
    /// message waited in the server [MQTT-3.3.2-6], rounded up so a message with time left is
    /// never announced as already expired. `None` when the message never expires.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

/// `now + interval`, or `None` for no interval (or one beyond what `Instant` can represent,
/// which is as good as never).
fn expiry_deadline(now: Instant, interval: Option<u32>) -> Option<Instant> {
    interval.and_then(|secs| now.checked_add(Duration::from_secs(u64::from(secs))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_protocol::{PacketId, WillProperties};

    fn publish(expiry: Option<u32>) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: Utf8::new(),
            packet_id: PacketId::new(7),
            payload: Bytes::from_static(b"hi"),
            properties: PublishProperties {
                message_expiry_interval: expiry,
                topic_alias: Some(3),
                subscription_identifiers: vec![4],
                content_type: Some(Utf8::from_static("text/plain")),
                ..PublishProperties::default()
            },
        }
    }

    #[test]
    fn from_publish_strips_per_hop_properties_and_starts_expiry() {
        let now = Instant::now();
        let m = Message::from_publish(
            publish(Some(10)),
            Utf8::from_static("a/b"),
            now,
            Some(SessionKey(1)),
        );
        assert_eq!(m.topic, "a/b");
        assert_eq!(m.properties.topic_alias, None);
        assert!(m.properties.subscription_identifiers.is_empty());
        assert_eq!(m.properties.message_expiry_interval, None);
        assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.expires_at, Some(now + Duration::from_secs(10)));
        assert!(m.retain);
    }

    #[test]
    fn remaining_expiry_rounds_up_and_expiry_is_inclusive() {
        let now = Instant::now();
        let m = Message::from_publish(publish(Some(10)), Utf8::from_static("t"), now, None);
        assert_eq!(m.remaining_expiry(now), Some(10));
        assert_eq!(
            m.remaining_expiry(now + Duration::from_millis(2500)),
            Some(8)
        );
        assert!(!m.is_expired(now + Duration::from_millis(9999)));
        assert!(m.is_expired(now + Duration::from_secs(10)));
        assert_eq!(m.remaining_expiry(now + Duration::from_secs(11)), Some(0));
        let forever = Message::from_publish(publish(None), Utf8::from_static("t"), now, None);
        assert_eq!(forever.remaining_expiry(now), None);
        assert!(!forever.is_expired(now + Duration::from_secs(1 << 30)));
    }

    #[test]
    fn from_will_copies_forwardable_properties() {
        let now = Instant::now();
        let will = Will {
            topic: Utf8::from_static("dead/c1"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(5),
                message_expiry_interval: Some(3),
                response_topic: Some(Utf8::from_static("r")),
                ..WillProperties::default()
            },
        };
        let m = Message::from_will(will, now, None);
        assert_eq!(m.topic, "dead/c1");
        assert_eq!(m.qos, QoS::ExactlyOnce);
        assert_eq!(m.properties.response_topic.as_deref(), Some("r"));
        assert_eq!(m.expires_at, Some(now + Duration::from_secs(3)));
    }
}
