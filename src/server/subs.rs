//! A worker's local subscription index: which of its connections wait on which topic or
//! pattern, and which selectors the hub must forward to this worker.
//!
//! The hub only hears about a selector when it gains its first local subscriber or has had
//! none for [`LINGER`]. The linger matters for long-polling: a subscriber is answered and
//! re-polls a millisecond later, and without it every delivery would cost the hub an
//! "interest off" and an "interest on" message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::Selector;

/// How long a selector with no local subscriber stays registered with the hub.
pub const LINGER: Duration = Duration::from_secs(5);

/// What the worker must tell the hub after a change to the index.
#[derive(Debug, PartialEq, Eq)]
pub enum InterestChange {
    /// First local subscriber: ask the hub to forward this selector's messages.
    On(Selector),
    /// Lingered without subscribers: the hub can stop forwarding.
    Off(Selector),
}

#[derive(Debug, Default)]
struct Entry {
    conns: FxHashSet<usize>,
    idle_since: Option<Instant>,
}

/// Connections by selector.
#[derive(Debug, Default)]
pub struct LocalSubs {
    /// Exact topics, keyed by name so a forwarded message finds its subscribers in one lookup.
    exact: FxHashMap<Arc<str>, Entry>,
    /// Patterns, scanned for each forwarded message (there are usually few).
    patterns: FxHashMap<Selector, Entry>,
}

impl LocalSubs {
    /// Registers connection `conn` on `selector`; returns `Some(On)` when the hub must be told.
    pub fn add(&mut self, selector: &Selector, conn: usize) -> Option<InterestChange> {
        let entry = match selector {
            Selector::Exact(name) => self.exact.entry(name.clone()),
            Selector::Pattern(_) => return add_to(self.patterns.entry(selector.clone()), selector, conn),
        };
        add_to(entry, selector, conn)
    }

    /// Removes connection `conn` from `selector`. The selector lingers; see [`LocalSubs::sweep`].
    pub fn remove(&mut self, selector: &Selector, conn: usize, now: Instant) {
        if let Some(entry) = self.entry_mut(selector) {
            entry.conns.remove(&conn);
            if entry.conns.is_empty() && entry.idle_since.is_none() {
                entry.idle_since = Some(now);
            }
        }
    }

    /// Drops selectors that have had no subscriber for [`LINGER`], reporting each to `out`.
    pub fn sweep(&mut self, now: Instant, out: &mut Vec<InterestChange>) {
        let expired =
            |entry: &Entry| matches!(entry.idle_since, Some(since) if now.saturating_duration_since(since) >= LINGER);
        self.exact.retain(|name, entry| {
            let keep = !expired(entry);
            if !keep {
                out.push(InterestChange::Off(Selector::Exact(name.clone())));
            }
            keep
        });
        self.patterns.retain(|selector, entry| {
            let keep = !expired(entry);
            if !keep {
                out.push(InterestChange::Off(selector.clone()));
            }
            keep
        });
    }

    /// Appends to `out` every connection subscribed to a selector that matches `topic`.
    /// A connection can appear more than once (several of its selectors match); callers dedupe.
    pub fn matching(&self, topic: &str, out: &mut Vec<usize>) {
        if let Some(entry) = self.exact.get(topic) {
            out.extend(entry.conns.iter().copied());
        }
        for (pattern, entry) in &self.patterns {
            if pattern.matches(topic) {
                out.extend(entry.conns.iter().copied());
            }
        }
    }

    /// Appends to `out` the connections registered on exactly this selector.
    pub fn on_selector(&self, selector: &Selector, out: &mut Vec<usize>) {
        let entry = match selector {
            Selector::Exact(name) => self.exact.get(name),
            Selector::Pattern(_) => self.patterns.get(selector),
        };
        if let Some(entry) = entry {
            out.extend(entry.conns.iter().copied());
        }
    }

    fn entry_mut(&mut self, selector: &Selector) -> Option<&mut Entry> {
        match selector {
            Selector::Exact(name) => self.exact.get_mut(name),
            Selector::Pattern(_) => self.patterns.get_mut(selector),
        }
    }
}

fn add_to<K>(
    entry: std::collections::hash_map::Entry<'_, K, Entry>,
    selector: &Selector,
    conn: usize,
) -> Option<InterestChange> {
    use std::collections::hash_map::Entry as Slot;
    match entry {
        Slot::Occupied(mut slot) => {
            let entry = slot.get_mut();
            entry.conns.insert(conn);
            entry.idle_since = None;
            None
        }
        Slot::Vacant(slot) => {
            slot.insert(Entry::default()).conns.insert(conn);
            Some(InterestChange::On(selector.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).expect("valid selector")
    }

    #[test]
    fn first_subscriber_turns_interest_on_once() {
        let mut subs = LocalSubs::default();
        assert_eq!(subs.add(&sel("/a"), 1), Some(InterestChange::On(sel("/a"))));
        assert_eq!(subs.add(&sel("/a"), 2), None);
        let mut hit = Vec::new();
        subs.matching("/a", &mut hit);
        hit.sort_unstable();
        assert_eq!(hit, vec![1, 2]);
    }

    #[test]
    fn interest_lingers_then_turns_off() {
        let t0 = Instant::now();
        let mut subs = LocalSubs::default();
        subs.add(&sel("/a/*"), 7);
        subs.remove(&sel("/a/*"), 7, t0);
        let mut changes = Vec::new();
        subs.sweep(t0 + LINGER / 2, &mut changes);
        assert!(changes.is_empty());
        // A new subscriber during the linger reuses the hub registration.
        assert_eq!(subs.add(&sel("/a/*"), 8), None);
        subs.remove(&sel("/a/*"), 8, t0 + LINGER);
        subs.sweep(t0 + LINGER * 2, &mut changes);
        assert_eq!(changes, vec![InterestChange::Off(sel("/a/*"))]);
        let mut hit = Vec::new();
        subs.matching("/a/b", &mut hit);
        assert!(hit.is_empty());
    }

    #[test]
    fn patterns_match_topics() {
        let mut subs = LocalSubs::default();
        subs.add(&sel("/chat/*"), 1);
        subs.add(&sel("/chat/**"), 2);
        subs.add(&sel("/chat/room1"), 3);
        let mut hit = Vec::new();
        subs.matching("/chat/room1", &mut hit);
        hit.sort_unstable();
        assert_eq!(hit, vec![1, 2, 3]);
        hit.clear();
        subs.matching("/chat/room1/x", &mut hit);
        assert_eq!(hit, vec![2]);
    }
}
