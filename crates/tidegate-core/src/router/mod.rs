//! The subscription router: which sessions receive a message published on a topic.
//!
//! Place in the data flow: the broker feeds it SUBSCRIBE/UNSUBSCRIBE of every session and asks
//! it, for each accepted PUBLISH (and will), which sessions to deliver to; the sessions then
//! queue or send the message.
//!
//! Subscriptions live in a topic tree keyed by filter level (`tree`), so routing one message
//! costs time proportional to the topic's depth and the number of receivers, not to the number
//! of subscriptions held. Each node holds its filter's plain subscribers and its shared groups
//! (`members`). The walk from the root follows, level by level, the literal child named like
//! the topic level, the `+` child, and collects the `#` child (which also matches the parent
//! level); at the first level wildcards are not followed for a `$` topic ([MQTT-4.7.2-1]).

mod members;
pub(crate) mod tree;

use members::Subscriptions;
use tidegate_protocol::topic::{self, TopicError};
use tidegate_protocol::{QoS, SubscriptionOptions};
use tree::{Level, NodeId, Tree, next_level};

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

impl Delivery {
    fn new(session: SessionKey, entry: &SubscriptionEntry) -> Delivery {
        Delivery {
            session,
            qos: entry.options.qos,
            retain_as_published: entry.options.retain_as_published,
            subscription_identifiers: entry.identifier.into_iter().collect(),
        }
    }
}

/// Subscriptions of all sessions, plain and shared.
#[derive(Debug, Default)]
pub struct Router {
    tree: Tree<Subscriptions>,
    /// Subscriptions held (plain plus shared memberships), kept so `len` is O(1).
    len: usize,
    /// Scratch for [`Router::route`]: nodes still to visit with the byte position of the topic
    /// level to match next (`None` once every level is matched). Kept between calls so routing
    /// allocates nothing once warm.
    stack: Vec<(NodeId, Option<usize>)>,
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
        let existed = if let Some(shared) = topic::parse_shared(filter)? {
            self.tree
                .entry(Level::of_filter(shared.filter))
                .join(shared.group, session, entry)
        } else {
            topic::validate_topic_filter(filter)?;
            self.tree
                .entry(Level::of_filter(filter))
                .plain
                .insert(session, entry)
        };
        if !existed {
            self.len += 1;
        }
        Ok(existed)
    }

    /// Removes `session`'s subscription to `filter`; returns whether one existed.
    pub fn unsubscribe(&mut self, session: SessionKey, filter: &str) -> bool {
        let removed = match topic::parse_shared(filter) {
            Ok(Some(shared)) => self
                .tree
                .remove_with(Level::of_filter(shared.filter), |subs| {
                    subs.leave(shared.group, session)
                }),
            // An invalid filter was never subscribed: the lookup simply finds nothing.
            Ok(None) | Err(_) => self
                .tree
                .remove_with(Level::of_filter(filter), |subs| subs.plain.remove(session)),
        };
        let removed = removed.unwrap_or(false);
        if removed {
            self.len -= 1;
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
        // How many subscription sets (a node's plain subscribers, or one group) delivered.
        // Only when several did can one session appear twice and need merging.
        let mut sources = 0;
        let dollar = topic_name.starts_with('$');
        self.stack.clear();
        self.stack.push((NodeId::ROOT, Some(0)));
        while let Some((id, pos)) = self.stack.pop() {
            let node = self.tree.node(id);
            let Some(pos) = pos else {
                // Every level matched: this node's filter equals the topic, and its `#` child
                // matches the parent level too ("a/#" matches "a").
                let multi = node.multi();
                sources += self.deliver(id, publisher, &is_online, out);
                if let Some(multi) = multi {
                    sources += self.deliver(multi, publisher, &is_online, out);
                }
                continue;
            };
            let (level, next) = next_level(topic_name, pos);
            let exact = node.child(level);
            // [MQTT-4.7.2-1]: a filter starting with a wildcard does not match a `$` topic.
            let (single, multi) = if id == NodeId::ROOT && dollar {
                (None, None)
            } else {
                (node.single(), node.multi())
            };
            if let Some(exact) = exact {
                self.stack.push((exact, next));
            }
            if let Some(single) = single {
                self.stack.push((single, next));
            }
            if let Some(multi) = multi {
                sources += self.deliver(multi, publisher, &is_online, out);
            }
        }
        if sources > 1 {
            merge_duplicates(out, start);
        }
    }

    /// Appends the receivers of node `id`'s subscriptions to `out`, unmerged; returns how many
    /// subscription sets contributed.
    fn deliver(
        &mut self,
        id: NodeId,
        publisher: Option<SessionKey>,
        is_online: &impl Fn(SessionKey) -> bool,
        out: &mut Vec<Delivery>,
    ) -> usize {
        let subs = &mut self.tree.node_mut(id).value;
        let mut sources = 0;
        let before = out.len();
        for (session, entry) in subs.plain.as_slice() {
            // No Local applies to plain subscriptions only: setting it on a shared one is a
            // protocol error ([MQTT-3.8.3-4]), so groups ignore it.
            if entry.options.no_local && publisher == Some(*session) {
                continue;
            }
            out.push(Delivery::new(*session, entry));
        }
        if out.len() > before {
            sources += 1;
        }
        for group in subs.groups_mut() {
            if let Some((session, entry)) = group.pick(is_online) {
                out.push(Delivery::new(session, &entry));
                sources += 1;
            }
        }
        sources
    }

    /// Number of subscriptions held (plain plus shared memberships).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no subscription is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of topic-tree nodes besides the root: a memory gauge for metrics, and zero again
    /// once every subscription is gone (emptied nodes are pruned).
    pub fn node_count(&self) -> usize {
        self.tree.node_count()
    }
}

/// Merges the deliveries of `out[start..]` that name the same session into one: the highest
/// QoS, retain-as-published if any asked for it, all identifiers. Sorting first makes this
/// O(n log n) without a scratch map, where a search per delivery would be quadratic in the
/// fan-out; receiver order carries no meaning.
fn merge_duplicates(out: &mut Vec<Delivery>, start: usize) {
    let Some(tail) = out.get_mut(start..) else {
        return;
    };
    if tail.len() < 2 {
        return;
    }
    tail.sort_unstable_by_key(|d| d.session);
    let mut kept = 0;
    for read in 1..tail.len() {
        let (head, rest) = tail.split_at_mut(read);
        let (Some(last), Some(next)) = (head.get_mut(kept), rest.first_mut()) else {
            break;
        };
        if last.session == next.session {
            last.qos = last.qos.max(next.qos);
            last.retain_as_published |= next.retain_as_published;
            last.subscription_identifiers
                .append(&mut next.subscription_identifiers);
        } else {
            kept += 1;
            tail.swap(kept, read);
        }
    }
    out.truncate(start + kept + 1);
}

#[cfg(test)]
mod tests;
