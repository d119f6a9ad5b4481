//! A worker's local subscription index: which of its connections wait on which topic or
//! pattern, which selectors the hub must forward to this worker, and the per-connection budget
//! for subscription changes on WebSocket and raw TCP connections.
//!
//! The hub only hears about a selector when it gains its first local subscriber or has had
//! none for [`LINGER`]. The linger matters for long-polling: a subscriber is answered and
//! re-polls a millisecond later, and without it every delivery would cost the hub an
//! "interest off" and an "interest on" message.
//!
//! Lingering is bounded: at most [`MAX_LINGERING`] selectors without a subscriber stay
//! registered; past that the oldest is dropped at once (and the hub told). Dropping a linger
//! early costs at most one "off" and a later "on", never a message: the next subscriber's "on"
//! carries the head it read history at, and the hub wakes it for anything sequenced since
//! (the late-interest rule, docs/ARCHITECTURE.md). So a client churning fresh selectors makes
//! the worker and the hub hold a bounded number of them, and each churned selector costs one
//! "on" and one "off" and is then gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rustc_hash::FxHashSet;

use crate::model::{Selector, SelectorIndex};

/// How long a selector with no local subscriber stays registered with the hub.
pub const LINGER: Duration = Duration::from_secs(5);

/// Most selectors without a subscriber one worker keeps registered with the hub. A long-poll
/// subscriber lingers only between a reply and its re-poll, so this is far above what honest
/// traffic leaves lingering at once on a worker.
pub const MAX_LINGERING: usize = 4096;

/// Subscription changes (selectors added) a WebSocket or raw TCP connection may make at once.
pub const CHANGES_BURST: u32 = 128;
/// Selectors added per second, sustained, on one WebSocket or raw TCP connection.
pub const CHANGES_PER_SEC: u32 = 32;

/// What the worker must tell the hub after a change to the index.
#[derive(Debug, PartialEq, Eq)]
pub enum InterestChange {
    /// First local subscriber: ask the hub to forward this selector's messages.
    On(Selector),
    /// Lingered without subscribers (or dropped for a newer linger): the hub can stop forwarding.
    Off(Selector),
}

#[derive(Debug, Default)]
struct Entry {
    conns: FxHashSet<usize>,
    /// The key of this selector in `LocalSubs::lingering` while it has no subscriber.
    lingering: Option<u64>,
}

/// Connections by selector.
#[derive(Debug, Default)]
pub struct LocalSubs {
    /// Exact topics and patterns, each found for a forwarded topic without scanning the rest.
    index: SelectorIndex<Entry>,
    /// Selectors without a subscriber, oldest first, with the time they lost the last one.
    /// Keys are handed out in increasing order, and so are the times.
    lingering: BTreeMap<u64, (Selector, Instant)>,
    next_linger: u64,
}

impl LocalSubs {
    /// Registers connection `conn` on `selector`; returns `Some(On)` when the hub must be told.
    pub fn add(&mut self, selector: &Selector, conn: usize) -> Option<InterestChange> {
        let (entry, inserted) = self.index.get_or_insert_with(selector, Entry::default);
        entry.conns.insert(conn);
        if let Some(key) = entry.lingering.take() {
            self.lingering.remove(&key);
        }
        inserted.then(|| InterestChange::On(selector.clone()))
    }

    /// Removes connection `conn` from `selector`. A selector left without subscribers lingers
    /// (see [`LocalSubs::sweep`]); one that pushes the lingering over [`MAX_LINGERING`] drops
    /// the oldest linger, whose `Off` is appended to `out`.
    pub fn remove(&mut self, selector: &Selector, conn: usize, now: Instant, out: &mut Vec<InterestChange>) {
        let Some(entry) = self.index.get_mut(selector) else { return };
        if !entry.conns.remove(&conn) || !entry.conns.is_empty() || entry.lingering.is_some() {
            return;
        }
        if entry.conns.capacity() > 4 {
            entry.conns = FxHashSet::default(); // a crowd left: give back its table
        }
        let key = self.next_linger;
        self.next_linger += 1;
        entry.lingering = Some(key);
        self.lingering.insert(key, (selector.clone(), now));
        if self.lingering.len() > MAX_LINGERING {
            self.drop_oldest_linger(out);
        }
    }

    /// Drops selectors that have had no subscriber for [`LINGER`], reporting each to `out`.
    /// Costs O(expired), not O(selectors).
    pub fn sweep(&mut self, now: Instant, out: &mut Vec<InterestChange>) {
        while let Some((_, (_, since))) = self.lingering.first_key_value() {
            if now.saturating_duration_since(*since) < LINGER {
                break;
            }
            self.drop_oldest_linger(out);
        }
    }

    fn drop_oldest_linger(&mut self, out: &mut Vec<InterestChange>) {
        if let Some((_, (selector, _))) = self.lingering.pop_first() {
            self.index.remove(&selector);
            out.push(InterestChange::Off(selector));
        }
    }

    /// Appends to `out` every connection subscribed to a selector that matches `topic`.
    /// A connection can appear more than once (several of its selectors match); callers dedupe.
    pub fn matching(&self, topic: &str, out: &mut Vec<usize>) {
        self.index.for_each_match(topic, |entry| out.extend(entry.conns.iter().copied()));
    }

    /// Appends to `out` the connections registered on exactly this selector.
    pub fn on_selector(&self, selector: &Selector, out: &mut Vec<usize>) {
        if let Some(entry) = self.index.get(selector) {
            out.extend(entry.conns.iter().copied());
        }
    }

    /// Selectors registered with the hub (with subscribers, or lingering).
    #[cfg(test)]
    pub fn selectors(&self) -> usize {
        self.index.len()
    }

    /// Selectors registered without a subscriber.
    #[cfg(test)]
    pub fn lingering(&self) -> usize {
        self.lingering.len()
    }
}

/// A token bucket for the selectors one WebSocket or raw TCP connection adds: [`CHANGES_BURST`]
/// at once, refilled at [`CHANGES_PER_SEC`]. Unsubscribing is free, so a client can always shed
/// what it holds; what churns the hub is adding selectors, and each addition is paid for.
#[derive(Debug, Clone)]
pub struct ChangeBudget {
    tokens: u32,
    /// When `tokens` was last brought up to date.
    since: Instant,
}

impl ChangeBudget {
    /// A full bucket.
    pub fn new(now: Instant) -> ChangeBudget {
        ChangeBudget { tokens: CHANGES_BURST, since: now }
    }

    /// Takes `n` tokens if there are that many; false (taking none) otherwise.
    pub fn take(&mut self, n: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        let earned = elapsed.as_micros().saturating_mul(u128::from(CHANGES_PER_SEC)) / 1_000_000;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(CHANGES_BURST);
            // Keep the fraction of a token already earned, unless the bucket is full.
            let spent = Duration::from_micros(u64::from(earned) * 1_000_000 / u64::from(CHANGES_PER_SEC));
            self.since = if self.tokens == CHANGES_BURST { now } else { self.since + spent };
        }
        match u32::try_from(n) {
            Ok(n) if n <= self.tokens => {
                self.tokens -= n;
                true
            }
            _ => false,
        }
    }

    /// Gives back `n` tokens taken for a change that did not happen (refused after the
    /// charge, e.g. while its history was still being loaded), so a retry is not penalised.
    pub fn refund(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(n).min(CHANGES_BURST);
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
        let mut changes = Vec::new();
        subs.remove(&sel("/a/*"), 7, t0, &mut changes);
        subs.sweep(t0 + LINGER / 2, &mut changes);
        assert!(changes.is_empty());
        // A new subscriber during the linger reuses the hub registration.
        assert_eq!(subs.add(&sel("/a/*"), 8), None);
        subs.remove(&sel("/a/*"), 8, t0 + LINGER, &mut changes);
        assert!(changes.is_empty());
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

    #[test]
    fn lingering_is_bounded_oldest_first() {
        let t0 = Instant::now();
        let mut subs = LocalSubs::default();
        let mut changes = Vec::new();
        let n = MAX_LINGERING + 10;
        for i in 0..n {
            let selector = sel(&format!("/churn/{i}"));
            assert_eq!(subs.add(&selector, 1), Some(InterestChange::On(selector.clone())));
            subs.remove(&selector, 1, t0, &mut changes);
        }
        // The ten oldest were dropped to make room, in order, and the hub told of each.
        let dropped: Vec<InterestChange> = (0..10).map(|i| InterestChange::Off(sel(&format!("/churn/{i}")))).collect();
        assert_eq!(changes, dropped);
        assert_eq!((subs.lingering(), subs.selectors()), (MAX_LINGERING, MAX_LINGERING));
        // A dropped selector is registered afresh (an "on" again); a lingering one is reused.
        assert_eq!(subs.add(&sel("/churn/0"), 2), Some(InterestChange::On(sel("/churn/0"))));
        assert_eq!(subs.add(&sel("/churn/10"), 2), None);
        // Removing a connection that was never there starts no linger.
        subs.remove(&sel("/churn/0"), 99, t0, &mut changes);
        assert_eq!(subs.lingering(), MAX_LINGERING - 1);
        // After the linger everything without a subscriber goes, and nothing is left behind.
        changes.clear();
        subs.sweep(t0 + LINGER, &mut changes);
        assert_eq!(changes.len(), MAX_LINGERING - 1);
        assert_eq!((subs.lingering(), subs.selectors()), (0, 2));
        subs.remove(&sel("/churn/0"), 2, t0 + LINGER, &mut changes);
        subs.remove(&sel("/churn/10"), 2, t0 + LINGER, &mut changes);
        subs.sweep(t0 + LINGER * 2, &mut changes);
        assert_eq!((subs.lingering(), subs.selectors()), (0, 0));
    }

    #[test]
    fn sweep_stops_at_the_first_fresh_linger() {
        let t0 = Instant::now();
        let mut subs = LocalSubs::default();
        let mut changes = Vec::new();
        for (i, at) in [0, 1, 2].into_iter().enumerate() {
            let selector = sel(&format!("/s/{i}"));
            subs.add(&selector, 1);
            subs.remove(&selector, 1, t0 + Duration::from_secs(at), &mut changes);
        }
        subs.sweep(t0 + LINGER + Duration::from_secs(1), &mut changes);
        assert_eq!(changes, [InterestChange::Off(sel("/s/0")), InterestChange::Off(sel("/s/1"))]);
        assert_eq!(subs.lingering(), 1);
    }

    #[test]
    fn change_budget_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut budget = ChangeBudget::new(t0);
        assert!(budget.take(CHANGES_BURST as usize, t0));
        assert!(!budget.take(1, t0), "empty");
        assert!(!budget.take(usize::MAX, t0));
        // One token per 1/CHANGES_PER_SEC s, fractions kept across calls.
        let token = Duration::from_secs(1) / CHANGES_PER_SEC;
        assert!(!budget.take(1, t0 + token / 2));
        assert!(budget.take(1, t0 + token));
        assert!(!budget.take(1, t0 + token + token / 2));
        assert!(budget.take(1, t0 + token * 2));
        // A second earns CHANGES_PER_SEC; a long pause no more than the burst.
        assert!(budget.take(CHANGES_PER_SEC as usize, t0 + token * 2 + Duration::from_secs(1)));
        assert!(!budget.take(1, t0 + token * 2 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(3600);
        assert!(!budget.take(CHANGES_BURST as usize + 1, later));
        assert!(budget.take(CHANGES_BURST as usize, later));
    }
}
