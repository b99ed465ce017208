//! [`MessageJson`]: how a message looks in JSON wherever the API hands one out (SSE data,
//! long-poll results, retained reads).
//!
//! The payload is given as UTF-8 text in `payload` when it is valid UTF-8 and not flagged
//! otherwise, else as base64 in `payload_base64`; exactly one of the two is present.

use crate::gateway::{MessageProperties, RetainedMessage, TapMessage};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A message as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct MessageJson {
    /// Topic name.
    pub(crate) topic: String,
    /// The payload as text, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<String>,
    /// The payload as base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload_base64: Option<String>,
    /// QoS it was published with.
    pub(crate) qos: u8,
    /// Retain flag.
    pub(crate) retain: bool,
    /// MQTT 5 properties it carries.
    #[serde(skip_serializing_if = "is_empty")]
    pub(crate) properties: MessageProperties,
}

fn is_empty(p: &MessageProperties) -> bool {
    *p == MessageProperties::default()
}

impl MessageJson {
    /// The JSON form of a message's parts.
    pub(crate) fn new(
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        properties: &MessageProperties,
    ) -> MessageJson {
        let text = (properties.payload_format_utf8 != Some(false))
            .then(|| std::str::from_utf8(payload).ok())
            .flatten();
        MessageJson {
            topic: topic.to_owned(),
            payload: text.map(str::to_owned),
            payload_base64: text.is_none().then(|| STANDARD.encode(payload)),
            qos,
            retain,
            properties: properties.clone(),
        }
    }
}

impl From<&TapMessage> for MessageJson {
    fn from(m: &TapMessage) -> MessageJson {
        MessageJson::new(&m.topic, &m.payload, m.qos, m.retain, &m.properties)
    }
}

impl From<&RetainedMessage> for MessageJson {
    fn from(m: &RetainedMessage) -> MessageJson {
        MessageJson::new(&m.topic, &m.payload, m.qos, true, &m.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_payloads_stay_text_and_binary_ones_become_base64() {
        let p = MessageProperties::default();
        let t = MessageJson::new("a", b"hi", 1, false, &p);
        assert_eq!(t.payload.as_deref(), Some("hi"));
        assert_eq!(t.payload_base64, None);
        let b = MessageJson::new("a", &[0xff, 0x00], 0, false, &p);
        assert_eq!(b.payload, None);
        assert_eq!(b.payload_base64.as_deref(), Some("/wA="));
    }
}
