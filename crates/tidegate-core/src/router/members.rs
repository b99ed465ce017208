//! What one topic-tree node of the [`Router`](super::Router) holds: the sessions subscribed to
//! its filter plainly, and its shared-subscription groups with their round-robin cursors.
//!
//! Place in the data flow: SUBSCRIBE/UNSUBSCRIBE edit these sets; a PUBLISH reaching the node
//! reads every plain member and picks one member per group.

use super::tree::NodeValue;
use super::{SessionKey, SubscriptionEntry};
use std::collections::HashMap;

/// From this many members on, a hash index finds a session in O(1); below it a scan of a few
/// cache lines is faster and costs no memory.
const INDEX_FROM: usize = 16;

/// Sessions with their subscription entry. A vector, because fan-out to every member is the hot
/// path and wants contiguous memory; plus a hash index once large, so subscribing or leaving
/// stays O(1) for a filter with a million subscribers. Removal swaps the last member into the
/// hole (order is not part of any contract: groups rotate through all members either way).
#[derive(Debug, Default)]
pub(super) struct Members {
    list: Vec<(SessionKey, SubscriptionEntry)>,
    #[allow(
        clippy::box_collection,
        reason = "most sets are small and never build the index: 8 bytes instead of 48"
    )]
    index: Option<Box<HashMap<SessionKey, usize>>>,
}

impl Members {
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(super) fn as_slice(&self) -> &[(SessionKey, SubscriptionEntry)] {
        &self.list
    }

    fn position(&self, session: SessionKey) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&session).copied(),
            None => self.list.iter().position(|(s, _)| *s == session),
        }
    }

    /// Adds or replaces `session`'s entry; returns whether it was already a member.
    pub(super) fn insert(&mut self, session: SessionKey, entry: SubscriptionEntry) -> bool {
        if let Some(slot) = self.position(session).and_then(|at| self.list.get_mut(at)) {
            slot.1 = entry;
            return true;
        }
        if self.list.capacity() == 0 {
            // Most filters have one subscriber: do not let `Vec` round the first allocation
            // up to four entries.
            self.list.reserve_exact(1);
        }
        self.list.push((session, entry));
        match &mut self.index {
            Some(index) => {
                index.insert(session, self.list.len() - 1);
            }
            None if self.list.len() >= INDEX_FROM => {
                let index = self.list.iter().enumerate().map(|(i, (s, _))| (*s, i));
                self.index = Some(Box::new(index.collect()));
            }
            None => {}
        }
        false
    }

    /// Removes `session`; returns whether it was a member.
    pub(super) fn remove(&mut self, session: SessionKey) -> bool {
        let Some(at) = self.position(session) else {
            return false;
        };
        self.list.swap_remove(at);
        if let Some(index) = &mut self.index {
            index.remove(&session);
            if let Some((moved, _)) = self.list.get(at) {
                index.insert(*moved, at);
            }
            if self.list.len() < INDEX_FROM / 2 {
                // Hysteresis: a filter hovering around the threshold does not rebuild the
                // index on every subscribe/unsubscribe pair.
                self.index = None;
            }
        }
        if self.list.is_empty() {
            self.list = Vec::new();
        } else if self.list.capacity() > 8 && self.list.len() * 4 < self.list.capacity() {
            self.list.shrink_to(self.list.len() * 2);
        }
        true
    }
}

/// A shared subscription group `$share/{name}/{filter}` at the node of its filter: the same
/// name under another filter is another group ([MQTT-4.8.2]).
#[derive(Debug)]
pub(super) struct Group {
    name: Box<str>,
    members: Members,
    /// Position in `members` of the next member in turn.
    cursor: usize,
}

impl Group {
    /// Picks the member that receives the next message: the first one in turn, from the cursor
    /// on, that `is_online` reports connected; when none is, the one in turn (its session
    /// queues the message). Advances the cursor past the pick. `None` only for an empty group,
    /// which the router never keeps.
    pub(super) fn pick(
        &mut self,
        is_online: &impl Fn(SessionKey) -> bool,
    ) -> Option<(SessionKey, SubscriptionEntry)> {
        let members = self.members.as_slice();
        let n = members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor % n;
        let pick = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| members.get(i).is_some_and(|(s, _)| is_online(*s)))
            .unwrap_or(start);
        self.cursor = (pick + 1) % n;
        members.get(pick).copied()
    }
}

/// The value of a router tree node.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    /// Plain subscribers of this node's filter.
    pub(super) plain: Members,
    /// Shared groups on this node's filter; usually none or a handful, so a vector.
    pub(super) groups: Vec<Group>,
}

impl NodeValue for Subscriptions {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }
}

impl Subscriptions {
    /// Adds or replaces `session` in group `name`; returns whether it was already a member.
    pub(super) fn join(
        &mut self,
        name: &str,
        session: SessionKey,
        entry: SubscriptionEntry,
    ) -> bool {
        if let Some(group) = self.groups.iter_mut().find(|g| *g.name == *name) {
            return group.members.insert(session, entry);
        }
        let mut group = Group {
            name: name.into(),
            members: Members::default(),
            cursor: 0,
        };
        group.members.insert(session, entry);
        self.groups.push(group);
        false
    }

    /// Removes `session` from group `name`, dropping the group when it empties; returns whether
    /// it was a member.
    pub(super) fn leave(&mut self, name: &str, session: SessionKey) -> bool {
        let Some(at) = self.groups.iter().position(|g| *g.name == *name) else {
            return false;
        };
        let Some(group) = self.groups.get_mut(at) else {
            return false;
        };
        let removed = group.members.remove(session);
        if group.members.is_empty() {
            self.groups.swap_remove(at);
            if self.groups.is_empty() {
                self.groups = Vec::new();
            }
        }
        removed
    }

    /// The groups, for picking a member of each.
    pub(super) fn groups_mut(&mut self) -> &mut [Group] {
        &mut self.groups
    }

    /// Number of group memberships held here.
    #[cfg(test)]
    pub(super) fn group_members(&self) -> usize {
        self.groups.iter().map(|g| g.members.as_slice().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_protocol::{QoS, SubscriptionOptions};

    fn entry(qos: QoS) -> SubscriptionEntry {
        SubscriptionEntry {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            identifier: None,
        }
    }

    fn assert_consistent(m: &Members) {
        if let Some(index) = &m.index {
            assert_eq!(index.len(), m.list.len());
            for (i, (s, _)) in m.list.iter().enumerate() {
                assert_eq!(index.get(s), Some(&i));
            }
        }
    }

    #[test]
    fn members_index_stays_consistent_across_the_threshold() {
        let mut m = Members::default();
        for s in 0..40 {
            assert!(!m.insert(SessionKey(s), entry(QoS::AtMostOnce)));
            assert_consistent(&m);
        }
        assert!(m.index.is_some());
        assert!(m.insert(SessionKey(7), entry(QoS::ExactlyOnce)));
        assert_eq!(m.as_slice().len(), 40);
        for s in (0..40).step_by(3) {
            assert!(m.remove(SessionKey(s)));
            assert!(!m.remove(SessionKey(s)));
            assert_consistent(&m);
        }
        for s in 0..40 {
            m.remove(SessionKey(s));
            assert_consistent(&m);
        }
        assert!(m.is_empty());
        assert!(m.index.is_none());
        assert_eq!(m.list.capacity(), 0, "an emptied set frees its memory");
    }

    #[test]
    fn replaced_entry_keeps_membership_and_updates_options() {
        let mut m = Members::default();
        m.insert(SessionKey(1), entry(QoS::AtMostOnce));
        assert!(m.insert(SessionKey(1), entry(QoS::AtLeastOnce)));
        assert_eq!(m.as_slice(), &[(SessionKey(1), entry(QoS::AtLeastOnce))]);
    }

    #[test]
    fn groups_are_found_by_name_and_dropped_when_empty() {
        let mut subs = Subscriptions::default();
        assert!(!subs.join("g", SessionKey(1), entry(QoS::AtMostOnce)));
        assert!(!subs.join("h", SessionKey(1), entry(QoS::AtMostOnce)));
        assert!(subs.join("g", SessionKey(1), entry(QoS::AtLeastOnce)));
        assert_eq!(subs.group_members(), 2);
        assert!(!subs.leave("g", SessionKey(2)));
        assert!(subs.leave("g", SessionKey(1)));
        assert!(!subs.leave("g", SessionKey(1)));
        assert!(subs.leave("h", SessionKey(1)));
        assert!(subs.is_empty());
    }
}
