//! An index from selectors (exact topics and wildcard patterns) to a value each, answering
//! "which selectors match this topic" without looking at the selectors that cannot.
//!
//! The hub keeps one (which workers want which selector) and so does every worker (which
//! connections wait on which selector); both look it up once per published topic. Exact topics
//! are one hash lookup. Patterns live in a trie keyed by segment: a node's children are its
//! literal segments (a hash map), one `*` child, and the values of the patterns that end there
//! (`end`) or end there with `**` (`rest`). Matching a topic walks at most two children per
//! segment (the literal one and the `*` one), so it costs O(segments x branching) whatever the
//! number of patterns: with 100,000 patterns `/user/<id>/**` a topic meets one hash lookup per
//! level.
//!
//! Removing a selector prunes the nodes it leaves empty and shrinks a map that a burst left
//! mostly empty, so a churned selector leaves nothing behind.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{Pattern, Selector};

/// A map that holds at least this many slots is shrunk once it is less than a quarter full.
/// Smaller maps are left alone: reallocating them saves nothing and churn would thrash them.
const SHRINK_MIN_CAPACITY: usize = 64;

/// Selectors and one value per selector; see the module doc.
#[derive(Debug)]
pub struct SelectorIndex<V> {
    exact: FxHashMap<Arc<str>, V>,
    root: Node<V>,
    patterns: usize,
}

impl<V> Default for SelectorIndex<V> {
    fn default() -> Self {
        SelectorIndex { exact: FxHashMap::default(), root: Node::default(), patterns: 0 }
    }
}

/// One trie node: the patterns whose literal-or-`*` segments so far lead here.
#[derive(Debug)]
struct Node<V> {
    literal: FxHashMap<Box<str>, Node<V>>,
    star: Option<Box<Node<V>>>,
    /// The value of the pattern that ends at this node.
    end: Option<V>,
    /// The value of the pattern that ends at this node with a final `**`.
    rest: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node { literal: FxHashMap::default(), star: None, end: None, rest: None }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.star.is_none() && self.end.is_none() && self.rest.is_none()
    }
}

/// One step along a pattern.
enum Step<'a> {
    Literal(&'a str),
    Star,
    /// The final `**`.
    Rest,
}

/// The pattern's segments as steps. `Selector::parse` guarantees a leading '/', no empty
/// segment and `**` only last.
fn steps(pattern: &Pattern) -> impl Iterator<Item = Step<'_>> {
    let text = pattern.as_str();
    text.strip_prefix('/').unwrap_or(text).split('/').map(|segment| match segment {
        "*" => Step::Star,
        "**" => Step::Rest,
        literal => Step::Literal(literal),
    })
}

impl<V> SelectorIndex<V> {
    /// How many selectors (exact and patterns) hold a value.
    pub fn len(&self) -> usize {
        self.exact.len() + self.patterns
    }

    /// Whether no selector holds a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many of them are patterns.
    pub fn patterns(&self) -> usize {
        self.patterns
    }

    /// The value for exactly this selector.
    pub fn get(&self, selector: &Selector) -> Option<&V> {
        match selector {
            Selector::Exact(name) => self.exact.get(name),
            Selector::Pattern(pattern) => {
                let mut node = &self.root;
                for step in steps(pattern) {
                    node = match step {
                        Step::Literal(segment) => node.literal.get(segment)?,
                        Step::Star => node.star.as_deref()?,
                        Step::Rest => return node.rest.as_ref(),
                    };
                }
                node.end.as_ref()
            }
        }
    }

    /// The value for exactly this selector, mutably.
    pub fn get_mut(&mut self, selector: &Selector) -> Option<&mut V> {
        match selector {
            Selector::Exact(name) => self.exact.get_mut(name),
            Selector::Pattern(pattern) => {
                let mut node = &mut self.root;
                for step in steps(pattern) {
                    node = match step {
                        Step::Literal(segment) => node.literal.get_mut(segment)?,
                        Step::Star => node.star.as_deref_mut()?,
                        Step::Rest => return node.rest.as_mut(),
                    };
                }
                node.end.as_mut()
            }
        }
    }

    /// The value for `selector`, inserted with `make` if there was none; true if inserted.
    pub fn get_or_insert_with(&mut self, selector: &Selector, make: impl FnOnce() -> V) -> (&mut V, bool) {
        match selector {
            Selector::Exact(name) => {
                use std::collections::hash_map::Entry;
                match self.exact.entry(name.clone()) {
                    Entry::Occupied(slot) => (slot.into_mut(), false),
                    Entry::Vacant(slot) => (slot.insert(make()), true),
                }
            }
            Selector::Pattern(pattern) => {
                let mut node = &mut self.root;
                let mut slot = None;
                for step in steps(pattern) {
                    match step {
                        Step::Literal(segment) => {
                            node = node.literal.entry(Box::from(segment)).or_default();
                        }
                        Step::Star => node = node.star.get_or_insert_with(Box::default),
                        Step::Rest => {
                            slot = Some(&mut node.rest);
                            break;
                        }
                    }
                }
                let slot = match slot {
                    Some(rest) => rest,
                    None => &mut node.end,
                };
                let inserted = slot.is_none();
                if inserted {
                    self.patterns += 1;
                }
                (slot.get_or_insert_with(make), inserted)
            }
        }
    }

    /// Removes `selector`'s value, pruning the trie nodes and shrinking the maps it leaves
    /// (mostly) empty.
    pub fn remove(&mut self, selector: &Selector) -> Option<V> {
        match selector {
            Selector::Exact(name) => {
                let value = self.exact.remove(name);
                shrink_if_sparse(&mut self.exact);
                value
            }
            Selector::Pattern(pattern) => {
                let steps: Vec<Step<'_>> = steps(pattern).collect();
                let value = remove_from(&mut self.root, &steps);
                if value.is_some() {
                    self.patterns -= 1;
                }
                value
            }
        }
    }

    /// Calls `each` with the value of every selector that matches `topic` (a valid topic
    /// name): the exact one, then the patterns, each once. No pattern matches a private topic
    /// (`Selector::matches`).
    pub fn for_each_match(&self, topic: &str, mut each: impl FnMut(&V)) {
        if let Some(value) = self.exact.get(topic) {
            each(value);
        }
        if self.patterns > 0 && !super::is_private(topic) {
            if let Some(rest) = topic.strip_prefix('/') {
                visit(&self.root, Some(rest), &mut each);
            }
        }
    }
}

/// Walks `node` for the topic segments left in `rest` (`None` once all are consumed).
/// Recursion depth is the topic's segment count, bounded by `MAX_SEGMENTS` for valid topics.
fn visit<V>(node: &Node<V>, rest: Option<&str>, each: &mut impl FnMut(&V)) {
    let Some(rest) = rest else {
        if let Some(value) = &node.end {
            each(value);
        }
        return;
    };
    // A final `**` takes one or more segments, and at least one is left.
    if let Some(value) = &node.rest {
        each(value);
    }
    let (segment, tail) = match rest.split_once('/') {
        Some((segment, tail)) => (segment, Some(tail)),
        None => (rest, None),
    };
    if let Some(child) = node.literal.get(segment) {
        visit(child, tail, each);
    }
    if let Some(child) = &node.star {
        visit(child, tail, each);
    }
}

/// Removes the value at the end of `steps` below `node`, dropping children left empty.
fn remove_from<V>(node: &mut Node<V>, steps: &[Step<'_>]) -> Option<V> {
    let Some((step, tail)) = steps.split_first() else {
        return node.end.take();
    };
    match step {
        Step::Rest => node.rest.take(),
        Step::Star => {
            let child = node.star.as_deref_mut()?;
            let value = remove_from(child, tail);
            if child.is_empty() {
                node.star = None;
            }
            value
        }
        Step::Literal(segment) => {
            let child = node.literal.get_mut(*segment)?;
            let value = remove_from(child, tail);
            if child.is_empty() {
                node.literal.remove(*segment);
                shrink_if_sparse(&mut node.literal);
            }
            value
        }
    }
}

/// Gives back most of a map's memory once it is under a quarter full, keeping room to double.
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut FxHashMap<K, V>) {
    if map.capacity() >= SHRINK_MIN_CAPACITY && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xorshift::XorShift;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).expect("valid selector")
    }

    fn matches(index: &SelectorIndex<u32>, topic: &str) -> Vec<u32> {
        let mut hit = Vec::new();
        index.for_each_match(topic, |v| hit.push(*v));
        hit.sort_unstable();
        hit
    }

    #[test]
    fn only_an_exact_selector_reaches_a_private_topic() {
        let mut index = SelectorIndex::default();
        for (i, s) in ["/**", "/*/to/*", "/pushlet/**"].iter().enumerate() {
            index.get_or_insert_with(&sel(s), || i as u32);
        }
        let inbox = crate::model::private_topic("abc").expect("topic");
        index.get_or_insert_with(&Selector::Exact(inbox.clone()), || 9);
        assert_eq!(matches(&index, &inbox), [9]);
        assert_eq!(matches(&index, "/pushlet/tox/abc"), [0, 2]);
        assert_eq!(matches(&index, "/public/to/abc"), [0, 1]);
    }

    #[test]
    fn exact_and_wildcards() {
        let mut index = SelectorIndex::default();
        for (i, s) in ["/a/b", "/a/*", "/a/**", "/*/b", "/**", "/a/*/c", "/*"].iter().enumerate() {
            let (value, inserted) = index.get_or_insert_with(&sel(s), || i as u32);
            assert!(inserted && *value == i as u32, "{s}");
        }
        assert_eq!((index.len(), index.patterns()), (7, 6));
        assert_eq!(matches(&index, "/a/b"), [0, 1, 2, 3, 4]);
        assert_eq!(matches(&index, "/a/x/c"), [2, 4, 5]);
        assert_eq!(matches(&index, "/a"), [4, 6]);
        assert_eq!(matches(&index, "/z/z/z/z"), [4]);
        // Inserting again keeps the value.
        assert_eq!(index.get_or_insert_with(&sel("/a/*"), || 99), (&mut 1, false));
        assert_eq!(index.get(&sel("/a/**")), Some(&2));
        assert_eq!(index.get(&sel("/a/*/*")), None);
        assert_eq!(index.get(&sel("/a/x")), None);
        *index.get_mut(&sel("/*/b")).expect("present") = 30;
        assert_eq!(matches(&index, "/q/b"), [4, 30]);
    }

    #[test]
    fn removing_prunes_everything() {
        let mut index = SelectorIndex::default();
        let all: Vec<String> = (0..1000).map(|i| format!("/user/{i}/**")).collect();
        for s in &all {
            index.get_or_insert_with(&sel(s), || 1u32);
            index.get_or_insert_with(&sel(&s.replace("/**", "/*/x")), || 2u32);
            index.get_or_insert_with(&sel(&s.replace("/**", "")), || 3u32);
        }
        assert_eq!(matches(&index, "/user/7/x"), [1]);
        assert_eq!(matches(&index, "/user/7/y/x"), [1, 2]);
        assert_eq!(index.remove(&sel("/user/1/*/*")), None, "never inserted");
        for s in &all {
            assert_eq!(index.remove(&sel(s)), Some(1));
            assert_eq!(index.remove(&sel(&s.replace("/**", "/*/x"))), Some(2));
            assert_eq!(index.remove(&sel(&s.replace("/**", ""))), Some(3));
            assert_eq!(index.remove(&sel(s)), None);
        }
        assert!(index.is_empty());
        assert!(index.root.is_empty(), "no node is left behind");
        assert!(index.root.literal.capacity() < SHRINK_MIN_CAPACITY);
        assert!(index.exact.capacity() < SHRINK_MIN_CAPACITY);
    }

    /// A random selector or topic over a small alphabet, so they often collide and match.
    fn random_path(rng: &mut XorShift, wildcards: bool) -> String {
        let depth = 1 + rng.below(5);
        let mut path = String::new();
        for i in 0..depth {
            path.push('/');
            let pick = rng.below(if wildcards { 6 } else { 4 });
            path.push_str(match pick {
                0 => "a",
                1 => "b",
                2 => "c",
                3 => "dd",
                4 => "*",
                _ if i + 1 == depth => "**",
                _ => "*",
            });
        }
        path
    }

    /// The index agrees with scanning every selector, through random inserts and removes.
    #[test]
    fn agrees_with_the_naive_scan() {
        let mut rng = XorShift::new(0x5EED_1DE5);
        let mut index = SelectorIndex::default();
        let mut naive: Vec<(Selector, u32)> = Vec::new();
        for round in 0..4000u32 {
            let selector = sel(&random_path(&mut rng, true));
            if rng.below(3) == 0 {
                let had = naive.iter().position(|(s, _)| *s == selector).map(|at| naive.swap_remove(at).1);
                assert_eq!(index.remove(&selector), had, "remove {selector}");
            } else {
                let (_, inserted) = index.get_or_insert_with(&selector, || round);
                assert_eq!(inserted, !naive.iter().any(|(s, _)| *s == selector), "insert {selector}");
                if inserted {
                    naive.push((selector, round));
                }
            }
            assert_eq!(index.len(), naive.len());
            for _ in 0..4 {
                let topic = random_path(&mut rng, false);
                let mut want: Vec<u32> = naive.iter().filter(|(s, _)| s.matches(&topic)).map(|(_, v)| *v).collect();
                want.sort_unstable();
                assert_eq!(matches(&index, &topic), want, "topic {topic} after round {round}");
            }
        }
        for (selector, value) in naive.drain(..) {
            assert_eq!(index.remove(&selector), Some(value));
        }
        assert!(index.is_empty() && index.root.is_empty());
    }
}
