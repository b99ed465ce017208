//! Retained messages: the last retained message per topic, replayed to new subscriptions.
//!
//! Place in the data flow: the broker stores every PUBLISH with RETAIN here ([`RetainedStore::set`])
//! and, when a session subscribes, asks for the messages matching the new filter
//! ([`RetainedStore::matching`]) to send them with RETAIN set.
//!
//! Messages live in a topic tree keyed by topic-name level (the same arena tree as the router),
//! so a wildcard lookup walks only the branches the filter can match: a literal filter level
//! follows one child, `+` every child, `#` a whole subtree. At the first level `+` and `#` skip
//! `$` topics ([MQTT-4.7.2-1]). Expired messages are dropped when a lookup meets them, or all at
//! once by [`RetainedStore::purge_expired`].

use crate::Message;
use crate::router::tree::{Level, NodeId, Tree, next_level};
use std::sync::Arc;
use std::time::Instant;

/// Why a retained message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetainedError {
    /// The store holds its configured maximum of messages.
    #[error("retained message store is full ({0} messages)")]
    Full(usize),
}

/// A pending step of a lookup walk.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Match the filter from byte `pos` (`None`: the filter is used up) against node `id`.
    Match(NodeId, Option<usize>),
    /// Node `id` and everything below it match (a `#` was reached).
    Subtree(NodeId),
}

/// Retained messages by topic.
#[derive(Debug)]
pub struct RetainedStore {
    max: usize,
    /// Messages held, kept so `len` and the `Full` check are O(1).
    len: usize,
    /// Payload bytes held, kept so a tenant's retained-bytes quota is checked in O(1).
    bytes: u64,
    tree: Tree<Option<Arc<Message>>>,
    /// Scratch for [`RetainedStore::matching`], kept so a lookup allocates nothing once warm.
    stack: Vec<Step>,
    /// Scratch: nodes whose message was found expired during a walk, removed after it.
    expired: Vec<NodeId>,
}

impl RetainedStore {
    /// An empty store holding at most `max` messages.
    pub fn new(max: usize) -> RetainedStore {
        RetainedStore {
            max,
            len: 0,
            bytes: 0,
            tree: Tree::default(),
            stack: Vec::new(),
            expired: Vec::new(),
        }
    }

    /// Stores `msg` as the retained message of its topic, or clears the topic when the payload
    /// is empty ([MQTT-3.3.1-6]).
    pub fn set(&mut self, msg: Arc<Message>) -> Result<(), RetainedError> {
        if msg.payload.is_empty() {
            self.remove(msg.topic.as_str());
            return Ok(());
        }
        // The path borrows the topic of a second handle, so `msg` itself can move into the tree.
        let key = Arc::clone(&msg);
        let levels = Level::of_name(key.topic.as_str());
        // Replacing never fails, even when full; only a new topic counts against the maximum.
        if let Some(id) = self.tree.find(levels.clone()) {
            let slot = &mut self.tree.node_mut(id).value;
            if let Some(old) = slot {
                self.bytes = self.bytes - payload_len(old) + payload_len(&msg);
                *slot = Some(msg);
                return Ok(());
            }
        }
        if self.len >= self.max {
            return Err(RetainedError::Full(self.max));
        }
        self.bytes += payload_len(&msg);
        *self.tree.entry(levels) = Some(msg);
        self.len += 1;
        Ok(())
    }

    /// Removes the retained message of `topic`; returns whether there was one.
    pub fn remove(&mut self, topic_name: &str) -> bool {
        let removed = self
            .tree
            .remove_with(Level::of_name(topic_name), Option::take)
            .flatten();
        if let Some(old) = &removed {
            self.len -= 1;
            self.bytes -= payload_len(old);
        }
        removed.is_some()
    }

    /// The retained message of `topic`, expired or not (expiry needs a clock value; see
    /// [`RetainedStore::matching`]).
    pub fn get(&self, topic_name: &str) -> Option<&Arc<Message>> {
        let id = self.tree.find(Level::of_name(topic_name))?;
        self.tree.node(id).value.as_ref()
    }

    /// Appends the retained messages matching `filter` (a non-shared filter) to `out`, dropping
    /// expired ones from the store as it meets them.
    pub fn matching(&mut self, filter: &str, now: Instant, out: &mut Vec<Arc<Message>>) {
        let dollar_guard = |id: NodeId, level: &str| id == NodeId::ROOT && level.starts_with('$');
        self.stack.clear();
        self.expired.clear();
        self.stack.push(Step::Match(NodeId::ROOT, Some(0)));
        while let Some(step) = self.stack.pop() {
            let (id, pos) = match step {
                Step::Match(id, pos) => (id, pos),
                Step::Subtree(id) => {
                    let node = self.tree.node(id);
                    collect(id, &node.value, now, out, &mut self.expired);
                    self.stack
                        .extend(node.children().map(|(_, child)| Step::Subtree(child)));
                    continue;
                }
            };
            let node = self.tree.node(id);
            let Some(pos) = pos else {
                collect(id, &node.value, now, out, &mut self.expired);
                continue;
            };
            let (level, next) = next_level(filter, pos);
            match level {
                "#" => {
                    // `#` matches the parent level too ("a/#" matches "a"); the root is no
                    // level, and below the first level `$` is an ordinary character.
                    if id != NodeId::ROOT {
                        collect(id, &node.value, now, out, &mut self.expired);
                    }
                    self.stack.extend(
                        node.children()
                            .filter(|(name, _)| !dollar_guard(id, name))
                            .map(|(_, child)| Step::Subtree(child)),
                    );
                }
                "+" => self.stack.extend(
                    node.children()
                        .filter(|(name, _)| !dollar_guard(id, name))
                        .map(|(_, child)| Step::Match(child, next)),
                ),
                exact => {
                    if let Some(child) = node.child(exact) {
                        self.stack.push(Step::Match(child, next));
                    }
                }
            }
        }
        self.drop_expired();
    }

    /// Drops every expired message (expires_at <= `now`) in one sweep of the whole store;
    /// returns how many went. Lookups only drop what they meet, so a driver calls this now and
    /// then to keep expired messages from holding memory and places under the maximum.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        self.expired.clear();
        self.expired.extend(
            self.tree
                .values()
                .filter(|(_, msg)| msg.as_ref().is_some_and(|m| is_expired(m, now)))
                .map(|(id, _)| id),
        );
        let purged = self.expired.len();
        self.drop_expired();
        purged
    }

    /// Removes the messages of the nodes listed in `self.expired` and prunes their paths. Done
    /// after a walk, not during it, because pruning reshapes the nodes being walked.
    fn drop_expired(&mut self) {
        for i in 0..self.expired.len() {
            let Some(&id) = self.expired.get(i) else {
                break;
            };
            // The message names its own path, which is what pruning needs.
            let Some(msg) = self.tree.node_mut(id).value.take() else {
                continue;
            };
            self.len -= 1;
            self.bytes -= payload_len(&msg);
            self.tree
                .remove_with(Level::of_name(msg.topic.as_str()), |_| ());
        }
        self.expired.clear();
    }

    /// Number of retained messages (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Payload bytes of the retained messages (expired ones not yet dropped included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every retained topic name, `$` topics included, in no particular order (expired
    /// messages not yet dropped included): what dropping a whole tenant must delete.
    pub fn topics(&self) -> Vec<tidegate_protocol::Utf8> {
        self.tree
            .values()
            .filter_map(|(_, msg)| msg.as_ref().map(|m| m.topic.clone()))
            .collect()
    }

    /// Number of topic-tree nodes besides the root: a memory gauge, zero once the store is empty.
    pub fn node_count(&self) -> usize {
        self.tree.node_count()
    }
}

/// A payload length as the byte counter adds it up.
fn payload_len(msg: &Message) -> u64 {
    u64::try_from(msg.payload.len()).unwrap_or(u64::MAX)
}

fn is_expired(msg: &Message, now: Instant) -> bool {
    msg.expires_at.is_some_and(|at| at <= now)
}

/// Appends the live message of node `id` to `out`, or notes the node for removal if expired.
fn collect(
    id: NodeId,
    value: &Option<Arc<Message>>,
    now: Instant,
    out: &mut Vec<Arc<Message>>,
    expired: &mut Vec<NodeId>,
) {
    match value {
        Some(msg) if is_expired(msg, now) => expired.push(id),
        Some(msg) => out.push(Arc::clone(msg)),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;
    use tidegate_protocol::topic;
    use tidegate_protocol::{QoS, Utf8};

    fn msg(topic_name: &str, payload: &'static str, expires_at: Option<Instant>) -> Arc<Message> {
        Arc::new(Message {
            topic: Utf8::try_from(topic_name).unwrap(),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
            expires_at,
            publisher: None,
            received: None,
        })
    }

    /// Topics of the messages matching `filter`, sorted.
    fn lookup(store: &mut RetainedStore, filter: &str, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        store.matching(filter, now, &mut out);
        let mut topics: Vec<String> = out.iter().map(|m| m.topic.to_string()).collect();
        topics.sort();
        topics
    }

    fn store_with(topics: &[&str]) -> RetainedStore {
        let mut store = RetainedStore::new(100);
        for t in topics {
            store.set(msg(t, "x", None)).unwrap();
        }
        store
    }

    #[test]
    fn wildcard_lookups_follow_section_4_7() {
        let topics = [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "sport",
            "sport/",
            "/finance",
            "finance",
            "$SYS/monitor/Clients",
            "a/$x",
        ];
        let mut store = store_with(&topics);
        let now = Instant::now();
        assert_eq!(
            lookup(&mut store, "sport/tennis/player1/#", now),
            [
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        assert_eq!(
            lookup(&mut store, "sport/tennis/+", now),
            ["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(lookup(&mut store, "sport/+", now), ["sport/"]);
        assert_eq!(lookup(&mut store, "sport/#", now).len(), 6);
        assert_eq!(
            lookup(&mut store, "+/+", now),
            ["/finance", "a/$x", "sport/"]
        );
        assert_eq!(lookup(&mut store, "/+", now), ["/finance"]);
        assert_eq!(lookup(&mut store, "+", now), ["finance", "sport"]);
        assert_eq!(lookup(&mut store, "#", now).len(), topics.len() - 1);
        assert!(!lookup(&mut store, "#", now).contains(&"$SYS/monitor/Clients".to_owned()));
        assert!(lookup(&mut store, "+/monitor/Clients", now).is_empty());
        assert_eq!(lookup(&mut store, "$SYS/#", now), ["$SYS/monitor/Clients"]);
        assert_eq!(
            lookup(&mut store, "$SYS/monitor/+", now),
            ["$SYS/monitor/Clients"]
        );
        assert_eq!(lookup(&mut store, "a/+", now), ["a/$x"]);
        assert_eq!(lookup(&mut store, "finance", now), ["finance"]);
        assert!(lookup(&mut store, "Finance", now).is_empty());
    }

    #[test]
    fn empty_payload_clears_and_prunes() {
        let mut store = store_with(&["a/b", "a/b/c"]);
        assert_eq!(store.node_count(), 3);
        store.set(msg("a/b/c", "", None)).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.node_count(), 2);
        assert!(store.get("a/b/c").is_none());
        // Clearing a topic that holds nothing is fine.
        store.set(msg("x/y", "", None)).unwrap();
        assert_eq!(store.node_count(), 2);
        assert!(store.remove("a/b"));
        assert!(!store.remove("a/b"));
        assert!(store.is_empty());
        assert_eq!(store.node_count(), 0);
    }

    #[test]
    fn set_replaces_the_message_of_a_topic() {
        let mut store = store_with(&["a"]);
        store.set(msg("a", "new", None)).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("a").unwrap().payload, Bytes::from_static(b"new"));
    }

    #[test]
    fn full_store_rejects_only_new_topics() {
        let mut store = RetainedStore::new(2);
        store.set(msg("a", "1", None)).unwrap();
        store.set(msg("b", "1", None)).unwrap();
        assert_eq!(
            store.set(msg("a/c", "1", None)),
            Err(RetainedError::Full(2))
        );
        assert_eq!(
            store.node_count(),
            2,
            "a rejected message leaves no node behind"
        );
        store.set(msg("a", "2", None)).unwrap();
        assert_eq!(store.get("a").unwrap().payload, Bytes::from_static(b"2"));
        store.set(msg("b", "", None)).unwrap();
        store.set(msg("a/c", "1", None)).unwrap();
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn expired_messages_are_dropped_when_met() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut store = RetainedStore::new(10);
        store.set(msg("a/old", "x", Some(later))).unwrap();
        store
            .set(msg("a/new", "x", Some(later + Duration::from_secs(10))))
            .unwrap();
        store.set(msg("a/forever", "x", None)).unwrap();
        store.set(msg("b/old", "x", Some(later))).unwrap();
        assert_eq!(lookup(&mut store, "a/#", t0).len(), 3);
        // expires_at <= now counts as expired.
        assert_eq!(lookup(&mut store, "a/#", later), ["a/forever", "a/new"]);
        assert!(store.get("a/old").is_none());
        // "b/old" was not met, so it is still held until a lookup or a sweep reaches it.
        assert_eq!(store.len(), 3);
        assert_eq!(store.purge_expired(later), 1);
        assert_eq!(store.len(), 2);
        assert_eq!(store.node_count(), 3);
        assert_eq!(store.purge_expired(later + Duration::from_secs(60)), 1);
        assert_eq!(lookup(&mut store, "#", later), ["a/forever"]);
    }

    #[test]
    fn deep_topics_are_walked_without_recursion() {
        let mut store = RetainedStore::new(10);
        let deep = "x/".repeat(30_000) + "end";
        store.set(msg(&deep, "x", None)).unwrap();
        assert_eq!(lookup(&mut store, "#", Instant::now()).len(), 1);
        assert_eq!(lookup(&mut store, "x/#", Instant::now()).len(), 1);
        assert!(store.remove(&deep));
        assert_eq!(store.node_count(), 0);
    }

    /// A topic filter over a small alphabet, wildcards included, always valid.
    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$x"), Just("+")];
        (prop::collection::vec(level, 0..4), any::<bool>()).prop_map(|(levels, hash)| {
            let mut levels: Vec<&str> = levels;
            // A lone empty level would be the empty filter, which is invalid.
            if hash || levels.is_empty() || levels == [""] {
                levels.push("#");
            }
            levels.join("/")
        })
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$x")];
        prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_reference_matcher(
            // (topic, clear instead of set, expires in seconds: 0 = already at `now`)
            sets in prop::collection::vec(
                (topic_strategy(), any::<bool>(), prop::option::of(0u64..3)),
                0..40,
            ),
            filters in prop::collection::vec(filter_strategy(), 1..6),
        ) {
            let now = Instant::now();
            let mut store = RetainedStore::new(1_000);
            let mut held: BTreeMap<String, Arc<Message>> = BTreeMap::new();
            for (topic_name, clear, expires) in sets {
                let expires_at = expires.map(|s| now + Duration::from_secs(s));
                let m = msg(&topic_name, if clear { "" } else { "x" }, expires_at);
                store.set(Arc::clone(&m)).unwrap();
                if clear {
                    held.remove(&topic_name);
                } else {
                    held.insert(topic_name, m);
                }
            }
            prop_assert_eq!(store.len(), held.len());
            for filter in &filters {
                let expected: BTreeSet<String> = held
                    .iter()
                    .filter(|(t, m)| topic::matches(filter, t) && !is_expired(m, now))
                    .map(|(t, _)| t.clone())
                    .collect();
                let mut out = Vec::new();
                store.matching(filter, now, &mut out);
                let got: BTreeSet<String> = out.iter().map(|m| m.topic.to_string()).collect();
                prop_assert_eq!(got.len(), out.len(), "no message twice");
                prop_assert_eq!(&got, &expected, "filter {:?}", filter);
                // The expired messages met are gone; the others stay.
                held.retain(|t, m| !(topic::matches(filter, t) && is_expired(m, now)));
                prop_assert_eq!(store.len(), held.len());
            }
            for t in held.keys() {
                prop_assert!(store.get(t).is_some());
                prop_assert!(store.remove(t));
            }
            prop_assert!(store.is_empty());
            prop_assert_eq!(store.node_count(), 0);
        }
    }

    #[test]
    fn bytes_follow_replace_remove_and_expiry_and_topics_list_everything() {
        let now = Instant::now();
        let mut store = RetainedStore::new(100);
        store.set(msg("a", "12345", None)).unwrap();
        store.set(msg("$SYS/x", "12", None)).unwrap();
        assert_eq!(store.bytes(), 7);
        store.set(msg("a", "1", None)).unwrap();
        assert_eq!(store.bytes(), 3);
        store
            .set(msg("b", "1234", Some(now + Duration::from_secs(1))))
            .unwrap();
        let mut topics: Vec<String> = store.topics().iter().map(|t| t.to_string()).collect();
        topics.sort();
        assert_eq!(topics, ["$SYS/x", "a", "b"]);
        assert_eq!(store.purge_expired(now + Duration::from_secs(2)), 1);
        assert_eq!(store.bytes(), 3);
        assert!(store.remove("a"));
        store.set(msg("$SYS/x", "", None)).unwrap();
        assert_eq!((store.len(), store.bytes()), (0, 0));
    }
}
