//! The topic tree shared by the [`Router`](super::Router) (keyed by topic *filters*) and the
//! [`RetainedStore`](crate::retained::RetainedStore) (keyed by topic *names*): a trie with one
//! node per topic level, whose value type the owner chooses.
//!
//! Place in the data flow: SUBSCRIBE and retained PUBLISH insert into it, UNSUBSCRIBE and
//! retained clears remove from it, and every PUBLISH (router) or new subscription (retained
//! replay) walks it. The walks themselves live with their owner, because a filter walking names
//! and a name walking filters follow different branches; this module only stores and prunes.
//!
//! Nodes live in one arena (`Vec`) and refer to each other by [`NodeId`]. That keeps the walks
//! iterative with a reusable scratch stack (a peer controls the depth, so no recursion, and no
//! allocation per publish), and makes dropping a deep tree a flat loop instead of a recursive
//! `Box` drop. A node emptied by a removal is unlinked, its heap parts are freed and its slot is
//! reused by the next insertion; when the last node goes, the arena itself is released.

use std::collections::HashMap;
use std::num::NonZeroUsize;

/// Index of a node in the arena. Non-zero so `Option<NodeId>` costs no more than a `usize`;
/// the arena position is `id - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeId(NonZeroUsize);

impl NodeId {
    /// The root: the node before the first level. It never holds a value in practice (no
    /// topic has zero levels) and is never unlinked.
    pub(crate) const ROOT: NodeId = NodeId(NonZeroUsize::MIN);

    fn from_index(index: usize) -> NodeId {
        // Saturation cannot happen: a `Vec` never holds `usize::MAX` elements.
        NodeId(NonZeroUsize::MIN.saturating_add(index))
    }

    fn index(self) -> usize {
        self.0.get() - 1
    }
}

/// One level of a path into the tree. Filters map `+` and `#` to the wildcard slots; topic
/// names (retained messages) use [`Level::Exact`] for every level, so a literal `+` in a name
/// could never be confused with a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level<'a> {
    /// A literal level (possibly empty).
    Exact(&'a str),
    /// `+`: any one level.
    Single,
    /// `#`: this level and everything below, and the parent level itself.
    Multi,
}

impl<'a> Level<'a> {
    /// The levels of a topic filter, wildcards recognised.
    pub(crate) fn of_filter(
        filter: &'a str,
    ) -> impl DoubleEndedIterator<Item = Level<'a>> + Clone + 'a {
        filter.split('/').map(|level| match level {
            "+" => Level::Single,
            "#" => Level::Multi,
            exact => Level::Exact(exact),
        })
    }

    /// The levels of a topic name, every one literal.
    pub(crate) fn of_name(
        name: &'a str,
    ) -> impl DoubleEndedIterator<Item = Level<'a>> + Clone + 'a {
        name.split('/').map(Level::Exact)
    }
}

/// Splits the level starting at byte `pos` off `path`: the level and the start of the next one
/// (`None` after the last level). Walks keep positions instead of slices so their scratch
/// stacks can outlive one call.
pub(crate) fn next_level(path: &str, pos: usize) -> (&str, Option<usize>) {
    let rest = path.get(pos..).unwrap_or_default();
    match rest.split_once('/') {
        Some((level, _)) => (level, Some(pos + level.len() + 1)),
        None => (rest, None),
    }
}

/// What a node holds besides its links; a node whose value is empty and that has no children
/// is pruned.
pub(crate) trait NodeValue: Default {
    /// True when the value holds nothing worth keeping the node for.
    fn is_empty(&self) -> bool;
}

impl<T> NodeValue for Option<T> {
    fn is_empty(&self) -> bool {
        self.is_none()
    }
}

/// One level of the tree.
#[derive(Debug, Default)]
pub(crate) struct Node<V> {
    /// Literal children. Boxed and absent on leaves, which are most nodes when every device
    /// subscribes to its own topics: a leaf then pays 8 bytes instead of an empty map's 48.
    #[allow(
        clippy::box_collection,
        reason = "an absent box is 8 bytes, an empty map inline 48, on every leaf"
    )]
    children: Option<Box<HashMap<Box<str>, NodeId>>>,
    /// The `+` child.
    single: Option<NodeId>,
    /// The `#` child.
    multi: Option<NodeId>,
    /// What the owner stores here.
    pub(crate) value: V,
}

impl<V: NodeValue> Node<V> {
    /// The literal child named `level`.
    pub(crate) fn child(&self, level: &str) -> Option<NodeId> {
        self.children.as_ref()?.get(level).copied()
    }

    /// The `+` child.
    pub(crate) fn single(&self) -> Option<NodeId> {
        self.single
    }

    /// The `#` child.
    pub(crate) fn multi(&self) -> Option<NodeId> {
        self.multi
    }

    /// Every literal child with its level.
    pub(crate) fn children(&self) -> impl Iterator<Item = (&str, NodeId)> {
        self.children
            .iter()
            .flat_map(|map| map.iter())
            .map(|(level, id)| (&**level, *id))
    }

    fn slot(&self, level: Level<'_>) -> Option<NodeId> {
        match level {
            Level::Exact(l) => self.child(l),
            Level::Single => self.single,
            Level::Multi => self.multi,
        }
    }

    fn link(&mut self, level: Level<'_>, id: NodeId) {
        match level {
            Level::Exact(l) => {
                self.children
                    .get_or_insert_with(Box::default)
                    .insert(l.into(), id);
            }
            Level::Single => self.single = Some(id),
            Level::Multi => self.multi = Some(id),
        }
    }

    fn unlink(&mut self, level: Level<'_>) {
        match level {
            Level::Exact(l) => {
                let Some(map) = self.children.as_mut() else {
                    return;
                };
                map.remove(l);
                if map.is_empty() {
                    self.children = None;
                } else if map.capacity() > 64 && map.len() * 4 < map.capacity() {
                    // Give memory back after a mass unsubscribe without rehashing on every
                    // removal: only once three quarters of the table are unused.
                    map.shrink_to(map.len() * 2);
                }
            }
            Level::Single => self.single = None,
            Level::Multi => self.multi = None,
        }
    }

    fn is_prunable(&self) -> bool {
        self.children.is_none()
            && self.single.is_none()
            && self.multi.is_none()
            && self.value.is_empty()
    }
}

/// The arena of nodes; [`NodeId::ROOT`] always exists.
#[derive(Debug)]
pub(crate) struct Tree<V> {
    nodes: Vec<Node<V>>,
    /// Slots of pruned nodes, reused before the arena grows.
    free: Vec<NodeId>,
    /// Scratch for [`Tree::remove_with`]: the nodes along the removed path.
    path: Vec<NodeId>,
}

impl<V: NodeValue> Default for Tree<V> {
    fn default() -> Self {
        Tree {
            nodes: vec![Node::default()],
            free: Vec::new(),
            path: Vec::new(),
        }
    }
}

impl<V: NodeValue> Tree<V> {
    /// The node `id`. Ids only come from this tree and stay valid while linked, so the index
    /// is in bounds; a stale id after a removal would be a bug in this module's callers.
    pub(crate) fn node(&self, id: NodeId) -> &Node<V> {
        &self.nodes[id.index()]
    }

    /// The node `id`, mutably (same invariant as [`Tree::node`]).
    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Node<V> {
        &mut self.nodes[id.index()]
    }

    /// Number of nodes besides the root.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len() - 1 - self.free.len()
    }

    /// Every node's value, in arena order (for sweeps that must visit everything anyway).
    pub(crate) fn values(&self) -> impl Iterator<Item = (NodeId, &V)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (NodeId::from_index(i), &node.value))
    }

    /// The value at the end of `levels`, creating the missing nodes.
    pub(crate) fn entry<'a>(&mut self, levels: impl Iterator<Item = Level<'a>>) -> &mut V {
        let mut cur = NodeId::ROOT;
        for level in levels {
            cur = match self.node(cur).slot(level) {
                Some(next) => next,
                None => {
                    let next = self.alloc();
                    self.node_mut(cur).link(level, next);
                    next
                }
            };
        }
        &mut self.node_mut(cur).value
    }

    /// The node at the end of `levels`, if it exists.
    pub(crate) fn find<'a>(&self, levels: impl Iterator<Item = Level<'a>>) -> Option<NodeId> {
        let mut cur = NodeId::ROOT;
        for level in levels {
            cur = self.node(cur).slot(level)?;
        }
        Some(cur)
    }

    /// Applies `f` to the value at the end of `levels` (if that node exists), then prunes the
    /// nodes of that path left empty, bottom up. Also the way to prune after a value was
    /// emptied in place: pass a no-op `f`.
    pub(crate) fn remove_with<'a, R>(
        &mut self,
        levels: impl DoubleEndedIterator<Item = Level<'a>> + Clone,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        self.path.clear();
        self.path.push(NodeId::ROOT);
        let mut cur = NodeId::ROOT;
        for level in levels.clone() {
            cur = self.node(cur).slot(level)?;
            self.path.push(cur);
        }
        let result = f(&mut self.node_mut(cur).value);
        // `path[i]` is the parent of `path[i + 1]` through the i-th level; walking the levels
        // backwards pairs each with its edge.
        let depth = self.path.len() - 1;
        for (i, level) in (0..depth).rev().zip(levels.rev()) {
            let (Some(&parent), Some(&child)) = (self.path.get(i), self.path.get(i + 1)) else {
                break;
            };
            if !self.node(child).is_prunable() {
                break;
            }
            self.node_mut(parent).unlink(level);
            self.release(child);
        }
        if self.path.capacity() > 1024 {
            // A peer's very deep filter should not pin a large scratch buffer forever.
            self.path = Vec::new();
        }
        Some(result)
    }

    fn alloc(&mut self) -> NodeId {
        if let Some(id) = self.free.pop() {
            return id;
        }
        self.nodes.push(Node::default());
        NodeId::from_index(self.nodes.len() - 1)
    }

    /// Frees an unlinked node's heap parts and keeps its slot for reuse; when no node but the
    /// root is left, returns the whole arena to the allocator.
    fn release(&mut self, id: NodeId) {
        *self.node_mut(id) = Node::default();
        self.free.push(id);
        if self.node_count() == 0 {
            self.nodes.truncate(1);
            self.nodes.shrink_to_fit();
            self.free = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(tree: &Tree<Option<u32>>) -> usize {
        tree.values().filter(|(_, v)| v.is_some()).count()
    }

    #[test]
    fn entry_creates_one_node_per_level_and_shares_prefixes() {
        let mut tree = Tree::<Option<u32>>::default();
        *tree.entry(Level::of_filter("a/b/c")) = Some(1);
        *tree.entry(Level::of_filter("a/b/d")) = Some(2);
        *tree.entry(Level::of_filter("a/+/#")) = Some(3);
        assert_eq!(tree.node_count(), 6);
        assert_eq!(count(&tree), 3);
        let b = tree.find(Level::of_filter("a/b")).unwrap();
        assert!(tree.node(b).child("c").is_some());
        assert!(tree.node(b).single().is_none());
        let a = tree.find(Level::of_filter("a")).unwrap();
        let plus = tree.node(a).single().unwrap();
        assert!(tree.node(plus).multi().is_some());
        // A literal "+" in a topic name is a different node from the wildcard slot.
        assert!(tree.find(Level::of_name("a/+")).is_none());
    }

    #[test]
    fn remove_prunes_only_emptied_nodes_and_reuses_slots() {
        let mut tree = Tree::<Option<u32>>::default();
        *tree.entry(Level::of_filter("a/b/c")) = Some(1);
        *tree.entry(Level::of_filter("a")) = Some(2);
        assert_eq!(tree.node_count(), 3);
        assert_eq!(
            tree.remove_with(Level::of_filter("a/b/c"), Option::take),
            Some(Some(1))
        );
        // "a" still holds a value, so only "b" and "c" go.
        assert_eq!(tree.node_count(), 1);
        assert_eq!(
            tree.remove_with(Level::of_filter("a/x"), Option::take),
            None
        );
        *tree.entry(Level::of_filter("a/y")) = Some(3);
        assert_eq!(tree.node_count(), 2);
        assert_eq!(tree.nodes.len(), 4, "a freed slot was reused");
        tree.remove_with(Level::of_filter("a/y"), Option::take);
        tree.remove_with(Level::of_filter("a"), Option::take);
        assert_eq!(tree.node_count(), 0);
        assert_eq!(tree.nodes.len(), 1, "the arena is released when empty");
        assert!(tree.node(NodeId::ROOT).is_prunable());
    }

    #[test]
    fn remove_keeps_a_node_that_still_has_children() {
        let mut tree = Tree::<Option<u32>>::default();
        *tree.entry(Level::of_filter("a/b")) = Some(1);
        *tree.entry(Level::of_filter("a/b/#")) = Some(2);
        tree.remove_with(Level::of_filter("a/b"), Option::take);
        assert_eq!(tree.node_count(), 3);
        tree.remove_with(Level::of_filter("a/b/#"), Option::take);
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn deep_paths_need_no_recursion() {
        let mut tree = Tree::<Option<u32>>::default();
        let deep = "x/".repeat(200_000) + "x";
        *tree.entry(Level::of_filter(&deep)) = Some(1);
        assert_eq!(tree.node_count(), 200_001);
        tree.remove_with(Level::of_filter(&deep), Option::take);
        assert_eq!(tree.node_count(), 0);
        *tree.entry(Level::of_filter(&deep)) = Some(1);
        drop(tree);
    }

    #[test]
    fn next_level_walks_empty_levels() {
        assert_eq!(next_level("/finance", 0), ("", Some(1)));
        assert_eq!(next_level("/finance", 1), ("finance", None));
        assert_eq!(next_level("a//", 2), ("", Some(3)));
        assert_eq!(next_level("a//", 3), ("", None));
        assert_eq!(next_level("a", 7), ("", None));
    }
}
