//! The subscription router: which sessions receive a message published on a topic.
//!
//! (Provisional implementation: a linear scan over every filter. The API is the contract; the
//! topic tree replaces the internals.)

use std::collections::HashMap;
use tidegate_protocol::topic::{self, TopicError};
use tidegate_protocol::{QoS, SubscriptionOptions};

/// A session's stable key inside the engine (cheaper to hash and copy than its client id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

/// What a session asked for with one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionEntry {
    /// Options from SUBSCRIBE (QoS already capped to what was granted).
    pub options: SubscriptionOptions,
    /// MQTT 5 Subscription Identifier, if any.
    pub identifier: Option<u32>,
}

/// One session that should receive a message, with the options of every subscription of it
/// that matched, merged: the highest QoS, retain-as-published if any subscription asked for it,
/// and every subscription identifier ([MQTT-3.3.4-3], [MQTT-3.3.4-4]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Receiving session.
    pub session: SessionKey,
    /// Highest granted QoS among the matching subscriptions.
    pub qos: QoS,
    /// Keep the RETAIN flag as published.
    pub retain_as_published: bool,
    /// Identifiers of the matching subscriptions (empty when none carry one).
    pub subscription_identifiers: Vec<u32>,
}

/// Subscriptions of all sessions, plain and shared.
#[derive(Debug, Default)]
pub struct Router {
    plain: HashMap<String, HashMap<SessionKey, SubscriptionEntry>>,
    /// (group, filter) -> members in join order, plus the round-robin cursor.
    shared: HashMap<(String, String), (Vec<(SessionKey, SubscriptionEntry)>, usize)>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds or replaces `session`'s subscription to `filter` (which may be `$share/g/f`).
    /// Returns whether a subscription to the same filter already existed (MQTT 5 retain
    /// handling 1 needs that).
    pub fn subscribe(
        &mut self,
        session: SessionKey,
        filter: &str,
        entry: SubscriptionEntry,
    ) -> Result<bool, TopicError> {
        if let Some(shared) = topic::parse_shared(filter)? {
            let key = (shared.group.to_owned(), shared.filter.to_owned());
            let (members, _) = self.shared.entry(key).or_default();
            if let Some(m) = members.iter_mut().find(|(s, _)| *s == session) {
                m.1 = entry;
                return Ok(true);
            }
            members.push((session, entry));
            return Ok(false);
        }
        topic::validate_topic_filter(filter)?;
        Ok(self
            .plain
            .entry(filter.to_owned())
            .or_default()
            .insert(session, entry)
            .is_some())
    }

    /// Removes `session`'s subscription to `filter`; returns whether one existed.
    pub fn unsubscribe(&mut self, session: SessionKey, filter: &str) -> bool {
        if let Ok(Some(shared)) = topic::parse_shared(filter) {
            let key = (shared.group.to_owned(), shared.filter.to_owned());
            let Some((members, _)) = self.shared.get_mut(&key) else {
                return false;
            };
            let before = members.len();
            members.retain(|(s, _)| *s != session);
            let removed = members.len() != before;
            if members.is_empty() {
                self.shared.remove(&key);
            }
            return removed;
        }
        let Some(subs) = self.plain.get_mut(filter) else {
            return false;
        };
        let removed = subs.remove(&session).is_some();
        if subs.is_empty() {
            self.plain.remove(filter);
        }
        removed
    }

    /// Appends to `out` one [`Delivery`] per receiving session for a message on `topic`.
    /// `publisher` lets No Local subscriptions skip their own session's messages. For each
    /// matching shared group one member is chosen, round-robin among those `is_online` reports
    /// connected; when none is online, the next member in turn (its session queues it).
    pub fn route(
        &mut self,
        topic_name: &str,
        publisher: Option<SessionKey>,
        is_online: impl Fn(SessionKey) -> bool,
        out: &mut Vec<Delivery>,
    ) {
        let start = out.len();
        for (filter, subs) in &self.plain {
            if !topic::matches(filter, topic_name) {
                continue;
            }
            for (session, entry) in subs {
                if entry.options.no_local && publisher == Some(*session) {
                    continue;
                }
                merge(out, start, *session, entry);
            }
        }
        for ((_, filter), (members, cursor)) in &mut self.shared {
            if members.is_empty() || !topic::matches(filter, topic_name) {
                continue;
            }
            let n = members.len();
            let pick = (0..n)
                .map(|i| (*cursor + i) % n)
                .find(|&i| is_online(members[i].0))
                .unwrap_or(*cursor % n);
            *cursor = (pick + 1) % n;
            let (session, entry) = members[pick];
            merge(out, start, session, &entry);
        }
    }

    /// Number of subscriptions held (plain plus shared memberships).
    pub fn len(&self) -> usize {
        self.plain.values().map(HashMap::len).sum::<usize>()
            + self.shared.values().map(|(m, _)| m.len()).sum::<usize>()
    }

    /// True when no subscription is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn merge(out: &mut Vec<Delivery>, start: usize, session: SessionKey, entry: &SubscriptionEntry) {
    if let Some(d) = out[start..].iter_mut().find(|d| d.session == session) {
        d.qos = d.qos.max(entry.options.qos);
        d.retain_as_published |= entry.options.retain_as_published;
        d.subscription_identifiers.extend(entry.identifier);
        return;
    }
    out.push(Delivery {
        session,
        qos: entry.options.qos,
        retain_as_published: entry.options.retain_as_published,
        subscription_identifiers: entry.identifier.into_iter().collect(),
    });
}
