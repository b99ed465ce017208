//! MQTT 5 topic aliases of one connection, in both directions (spec section 3.3.2.3.4).
//!
//! Place in the data flow: an inbound PUBLISH's alias is resolved by [`InboundAliases`] before
//! the message reaches the router; an outbound PUBLISH gets an alias from [`OutboundAliases`]
//! just before it is sent. Aliases belong to the network connection, not the session: both
//! tables start empty on every CONNECT (and resends after a resume carry the full topic).
//!
//! Outbound aliases are handed out first come, first served until the client's Topic Alias
//! Maximum is reached; later topics are sent in full. An LRU would serve clients with many
//! topics better, but re-pointing an alias in flight needs care, and the common case (a
//! device with a handful of topics) is served fully by this.

use std::collections::HashMap;
use tidegate_protocol::Utf8;

/// Aliases the client set towards us: alias → topic.
#[derive(Debug, Default)]
pub(super) struct InboundAliases {
    map: HashMap<u16, Utf8>,
}

impl InboundAliases {
    /// The topic the client mapped to `alias`.
    pub(super) fn get(&self, alias: u16) -> Option<&Utf8> {
        self.map.get(&alias)
    }

    /// Maps (or re-maps) `alias` to `topic`. The caller checked the alias against our maximum,
    /// which bounds the table.
    pub(super) fn set(&mut self, alias: u16, topic: Utf8) {
        self.map.insert(alias, topic);
    }
}

/// How to send one topic on a connection with outbound aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AliasUse {
    /// No alias: send the full topic.
    None,
    /// Send the full topic plus this new alias, then [`OutboundAliases::commit`] it.
    Establish(u16),
    /// The client knows the alias: send an empty topic plus the alias.
    Reuse(u16),
}

/// Aliases we assign towards the client: topic → alias, up to the client's maximum.
#[derive(Debug, Default)]
pub(super) struct OutboundAliases {
    max: u16,
    map: HashMap<Utf8, u16>,
}

impl OutboundAliases {
    /// A table for a client that accepts `max` aliases (0: none).
    pub(super) fn new(max: u16) -> OutboundAliases {
        OutboundAliases {
            max,
            map: HashMap::new(),
        }
    }

    /// What to send for `topic`, without changing the table (the packet may still be dropped
    /// as too large, and then the client must not learn the alias).
    pub(super) fn lookup(&self, topic: &Utf8) -> AliasUse {
        if let Some(&alias) = self.map.get(topic) {
            return AliasUse::Reuse(alias);
        }
        match u16::try_from(self.map.len() + 1) {
            Ok(next) if next <= self.max => AliasUse::Establish(next),
            _ => AliasUse::None,
        }
    }

    /// Records an alias sent with [`AliasUse::Establish`].
    pub(super) fn commit(&mut self, topic: &Utf8, alias: u16) {
        self.map.insert(topic.clone(), alias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_assigns_until_the_client_maximum() {
        let mut a = OutboundAliases::new(2);
        let (x, y, z) = (
            Utf8::from_static("x"),
            Utf8::from_static("y"),
            Utf8::from_static("z"),
        );
        assert_eq!(a.lookup(&x), AliasUse::Establish(1));
        // Not committed yet: the same answer again.
        assert_eq!(a.lookup(&x), AliasUse::Establish(1));
        a.commit(&x, 1);
        assert_eq!(a.lookup(&x), AliasUse::Reuse(1));
        assert_eq!(a.lookup(&y), AliasUse::Establish(2));
        a.commit(&y, 2);
        assert_eq!(a.lookup(&z), AliasUse::None);
        assert_eq!(OutboundAliases::new(0).lookup(&x), AliasUse::None);
    }

    #[test]
    fn inbound_maps_and_remaps() {
        let mut a = InboundAliases::default();
        assert_eq!(a.get(1), None);
        a.set(1, Utf8::from_static("a"));
        a.set(1, Utf8::from_static("b"));
        assert_eq!(a.get(1).map(|t| t.as_str()), Some("b"));
    }
}
