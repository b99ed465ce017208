//! Who publishes where and who hears whom, for the message scenarios.
//!
//! Place in the data flow: `messaging` builds a [`Topology`] from the scenario and N, opens one
//! connection per publisher and subscriber from it, and uses it again at the end to know how
//! many deliveries each stream owed (the fan-out factor).
//!
//! Publisher ids are dense (0..publishers) and every subscriber hears a contiguous range of
//! them, so a subscriber keeps its stream trackers in a plain vector indexed by
//! `publisher - first`.

use std::ops::Range;

/// The three message scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// N publishers, each to its own subscriber.
    Pairs,
    /// N publishers, one wildcard subscriber.
    Fanin,
    /// One publisher, N subscribers.
    Fanout,
}

impl Shape {
    /// The scenario name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Pairs => "pairs",
            Shape::Fanin => "fanin",
            Shape::Fanout => "fanout",
        }
    }
}

/// One publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherSpec {
    /// Publisher id carried in every payload.
    pub id: u32,
    /// Topic it publishes to.
    pub topic: String,
}

/// One subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberSpec {
    /// Subscriber index.
    pub id: u32,
    /// Topic filter it subscribes to.
    pub filter: String,
    /// Publisher ids it receives.
    pub hears: Range<u32>,
    /// True when this subscriber's receipts pace its publishers in closed-loop QoS 0 (one per
    /// publisher, so a fan-out is paced by one subscriber, not the sum of all).
    pub paces: bool,
}

/// The publishers and subscribers of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Which scenario.
    pub shape: Shape,
    /// Publishers, index = id.
    pub publishers: Vec<PublisherSpec>,
    /// Subscribers, index = id.
    pub subscribers: Vec<SubscriberSpec>,
}

impl Topology {
    /// Builds the topology of `shape` with `n` as the scenario's N, under `prefix`.
    pub fn build(shape: Shape, n: u32, prefix: &str) -> Topology {
        let publisher = |id: u32, topic: String| PublisherSpec { id, topic };
        let (publishers, subscribers) = match shape {
            Shape::Pairs => (
                (0..n)
                    .map(|i| publisher(i, format!("{prefix}/p/{i}")))
                    .collect(),
                (0..n)
                    .map(|i| SubscriberSpec {
                        id: i,
                        filter: format!("{prefix}/p/{i}"),
                        hears: i..i + 1,
                        paces: true,
                    })
                    .collect(),
            ),
            Shape::Fanin => (
                (0..n)
                    .map(|i| publisher(i, format!("{prefix}/p/{i}")))
                    .collect(),
                vec![SubscriberSpec {
                    id: 0,
                    filter: format!("{prefix}/p/+"),
                    hears: 0..n,
                    paces: true,
                }],
            ),
            Shape::Fanout => (
                vec![publisher(0, format!("{prefix}/fanout"))],
                (0..n)
                    .map(|i| SubscriberSpec {
                        id: i,
                        filter: format!("{prefix}/fanout"),
                        hears: 0..1,
                        paces: i == 0,
                    })
                    .collect(),
            ),
        };
        Topology {
            shape,
            publishers,
            subscribers,
        }
    }

    /// How many subscribers receive publisher `id`'s messages.
    pub fn fan_out_of(&self, id: u32) -> u64 {
        self.subscribers
            .iter()
            .filter(|s| s.hears.contains(&id))
            .count() as u64
    }

    /// Deliveries owed in total when publisher `i` sent `sent[i]` messages.
    pub fn expected_deliveries(&self, sent: &[u64]) -> u64 {
        sent.iter()
            .zip(0u32..)
            .map(|(n, id)| n * self.fan_out_of(id))
            .sum()
    }

    /// Number of connections the topology opens.
    pub fn connections(&self) -> usize {
        self.publishers.len() + self.subscribers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_match_one_to_one() {
        let t = Topology::build(Shape::Pairs, 3, "x");
        assert_eq!(t.connections(), 6);
        assert_eq!(t.publishers[2].topic, "x/p/2");
        assert_eq!(t.subscribers[2].filter, "x/p/2");
        assert_eq!(t.subscribers[2].hears, 2..3);
        assert!((0..3).all(|i| t.fan_out_of(i) == 1));
        assert_eq!(t.expected_deliveries(&[5, 6, 7]), 18);
    }

    #[test]
    fn fanin_has_one_wildcard_subscriber() {
        let t = Topology::build(Shape::Fanin, 4, "x");
        assert_eq!(t.subscribers.len(), 1);
        assert_eq!(t.subscribers[0].filter, "x/p/+");
        assert_eq!(t.subscribers[0].hears, 0..4);
        assert_eq!(t.expected_deliveries(&[1, 2, 3, 4]), 10);
    }

    #[test]
    fn fanout_multiplies_deliveries_and_one_subscriber_paces() {
        let t = Topology::build(Shape::Fanout, 5, "x");
        assert_eq!(t.publishers.len(), 1);
        assert_eq!(t.fan_out_of(0), 5);
        assert_eq!(t.expected_deliveries(&[100]), 500);
        assert_eq!(t.subscribers.iter().filter(|s| s.paces).count(), 1);
    }
}
