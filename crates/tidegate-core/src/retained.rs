//! Retained messages: the last retained message per topic, replayed to new subscriptions.
//!
//! (Provisional implementation: a map scanned for each subscription. The API is the contract.)

use crate::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tidegate_protocol::topic;

/// Why a retained message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetainedError {
    /// The store holds its configured maximum of messages.
    #[error("retained message store is full ({0} messages)")]
    Full(usize),
}

/// Retained messages by topic.
#[derive(Debug)]
pub struct RetainedStore {
    max: usize,
    by_topic: HashMap<String, Arc<Message>>,
}

impl RetainedStore {
    /// An empty store holding at most `max` messages.
    pub fn new(max: usize) -> RetainedStore {
        RetainedStore {
            max,
            by_topic: HashMap::new(),
        }
    }

    /// Stores `msg` as the retained message of its topic, or clears the topic when the payload
    /// is empty ([MQTT-3.3.1-6]).
    pub fn set(&mut self, msg: Arc<Message>) -> Result<(), RetainedError> {
        if msg.payload.is_empty() {
            self.by_topic.remove(msg.topic.as_str());
            return Ok(());
        }
        if !self.by_topic.contains_key(msg.topic.as_str()) && self.by_topic.len() >= self.max {
            return Err(RetainedError::Full(self.max));
        }
        self.by_topic.insert(msg.topic.to_string(), msg);
        Ok(())
    }

    /// Removes the retained message of `topic`; returns whether there was one.
    pub fn remove(&mut self, topic_name: &str) -> bool {
        self.by_topic.remove(topic_name).is_some()
    }

    /// Appends the retained messages matching `filter` (a non-shared filter) to `out`, dropping
    /// expired ones from the store as it meets them.
    pub fn matching(&mut self, filter: &str, now: Instant, out: &mut Vec<Arc<Message>>) {
        self.by_topic
            .retain(|_, m| m.expires_at.is_none_or(|at| at > now));
        out.extend(
            self.by_topic
                .values()
                .filter(|m| topic::matches(filter, &m.topic))
                .cloned(),
        );
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }
}
