//! How the memory store answers a read, in work bounded by what it returns plus a constant.
//!
//! Three plans, chosen per read:
//! - **By topic**, for exact selectors, and for patterns whose literal prefixes hold at most
//!   `Budget::topics` topics: each matched topic's ring gives the run of its messages after
//!   the cursor, and a k-way merge takes the `limit` oldest. Cost O(k log k + limit log k) for k
//!   matched topics.
//! - **Log walk**, for the other pattern reads: the store-wide log is walked in seq order from
//!   the cursor, each message's topic tried against the selectors, until `limit` messages are
//!   taken. `/**?since=all` over 100,000 topics costs `limit` steps, not 100,000 topic visits.
//! - A log walk whose selectors match little could walk the whole log, so it stops after
//!   `Budget::walk` selector matches and says so (`truncated`), with `head` set to the last seq it
//!   looked at: the reader resumes from there (`ReadResult::next_cursor`) and loses nothing.
//!
//! So a read holds the store's lock for at most about `2 x Budget::walk` selector matches or
//! `Budget::topics` topic visits, whatever the number of topics and messages.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use super::{Inner, TopicHistory};
use crate::model::{Message, Selector};
use crate::store::ReadResult;

/// The work one read may do; see the module doc.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    /// Selector matches one log walk may do (and as many again looking for lost messages).
    pub(super) walk: usize,
    /// Most topics a pattern read visits one by one before it walks the log instead.
    pub(super) topics: usize,
}

/// The budget of every read. At about 20-50 ns a selector match, a read holds the lock for
/// well under a millisecond (bench/RESULTS.md, "History reads").
pub(super) const BUDGET: Budget = Budget { walk: 1024, topics: 256 };

/// `Store::read` under the read lock, for `after < head`; see the module doc.
pub(super) fn read(
    inner: &Inner,
    selectors: &[Selector],
    after: u64,
    head: u64,
    limit: usize,
    out: &mut Vec<Arc<Message>>,
    budget: Budget,
) -> ReadResult {
    if !selectors.iter().any(Selector::is_pattern) {
        return by_topic(inner, selectors, after, head, limit, out);
    }
    // Walking costs one step per message after the cursor: when there are few, that is the
    // cheapest plan whatever the number of topics.
    let steps = (budget.walk / selectors.len().max(1)).max(1);
    if head - after > steps as u64 && few_topics(inner, selectors, budget.topics) {
        return by_topic(inner, selectors, after, head, limit, out);
    }
    walk(inner, selectors, after, head, limit, out, steps)
}

fn fresh(head: u64) -> ReadResult {
    ReadResult { head, gap: false, oldest: None, truncated: false, pending: false }
}

fn matches_any(selectors: &[Selector], topic: &str) -> bool {
    selectors.iter().any(|s| s.matches(topic))
}

/// Whether the patterns' literal-prefix ranges hold at most `limit` topics in all (counted,
/// not matched: a step of the map's iterator each, so giving up costs little).
fn few_topics(inner: &Inner, selectors: &[Selector], limit: usize) -> bool {
    let mut left = limit;
    for selector in selectors {
        if let Selector::Pattern(pattern) = selector {
            let prefix = pattern.literal_prefix();
            let range = inner.topics.range::<str, _>((Bound::Included(prefix), Bound::Unbounded));
            for _ in range.take_while(|(name, _)| name.starts_with(prefix)) {
                if left == 0 {
                    return false;
                }
                left -= 1;
            }
        }
    }
    true
}

/// The by-topic plan.
fn by_topic(
    inner: &Inner,
    selectors: &[Selector],
    after: u64,
    head: u64,
    limit: usize,
    out: &mut Vec<Arc<Message>>,
) -> ReadResult {
    let mut result = fresh(head);
    let mut runs = Vec::new();
    for selector in selectors {
        match selector {
            Selector::Exact(name) => match inner.topics.get_key_value(&**name) {
                Some((name, topic)) => visit(inner, name, topic, after, head, &mut result, &mut runs),
                None => result.gap |= after < inner.forgotten_through,
            },
            Selector::Pattern(pattern) => {
                // A removed topic may have matched: its losses are only known store-wide.
                result.gap |= after < inner.forgotten_through;
                let prefix = pattern.literal_prefix();
                let scan = inner
                    .topics
                    .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                    .take_while(|(name, _)| name.starts_with(prefix));
                for (name, topic) in scan {
                    if pattern.matches(name) {
                        visit(inner, name, topic, after, head, &mut result, &mut runs);
                    }
                }
            }
        }
    }
    // One message lives on one topic, so de-duplicating topics de-duplicates messages.
    runs.sort_unstable_by(|a, b| a.name.cmp(b.name));
    runs.dedup_by(|a, b| a.name == b.name);
    let available: usize = runs.iter().map(|run| run.end - run.next).sum();
    let start = out.len();
    merge(&mut runs, limit, out);
    if available > limit {
        result.truncated = true;
        result.head = out.get(start..).and_then(<[_]>::last).map_or(after, |m| m.seq);
    }
    result
}

/// Folds one matched topic into a by-topic read: its gap and oldest contribution, and the run
/// of its messages in `(after, head]`.
fn visit<'a>(
    inner: &Inner,
    name: &'a str,
    topic: &'a TopicHistory,
    after: u64,
    head: u64,
    result: &mut ReadResult,
    runs: &mut Vec<Run<'a>>,
) {
    result.gap |= after < topic.evicted_through || (after < inner.forgotten_through && topic.created_seq > after);
    let next = topic.ring.partition_point(|m| m.seq <= after);
    let end = topic.ring.partition_point(|m| m.seq <= head);
    if next < end {
        if let Some(front) = topic.ring.front() {
            result.oldest = Some(result.oldest.map_or(front.seq, |o| o.min(front.seq)));
        }
        runs.push(Run { name, ring: &topic.ring, next, end });
    }
}

/// The log-walk plan: at most `steps` log entries looked at for lost messages, and as many
/// for messages.
fn walk(
    inner: &Inner,
    selectors: &[Selector],
    after: u64,
    head: u64,
    limit: usize,
    out: &mut Vec<Arc<Message>>,
    steps: usize,
) -> ReadResult {
    let mut result = fresh(head);
    // A removed topic may have matched: its losses are only known store-wide.
    result.gap = after < inner.forgotten_through;
    // Did a matched topic lose a message after the cursor? `evicted` holds each topic's last
    // loss by seq. If the budget runs out first, the walk stops short of the first loss not
    // looked at, so the read that covers it looks at it: no loss goes unreported.
    let mut through = head;
    if !result.gap {
        let mut losses = inner.evicted.range(after + 1..=head);
        match losses.by_ref().take(steps).find(|(_, name)| matches_any(selectors, name)) {
            Some((_, name)) => {
                result.gap = true;
                result.oldest = inner.topics.get(name).and_then(|t| t.ring.front()).map(|m| m.seq);
            }
            None => through = stopped_at(&mut losses, through),
        }
    }
    let (mut taken, mut last) = (0usize, after);
    let mut entries = inner.log.range(after + 1..=through);
    let covered = 'walk: {
        for (&seq, msg) in entries.by_ref().take(steps) {
            if matches_any(selectors, &msg.topic) {
                if taken == limit {
                    break 'walk last;
                }
                out.push(msg.clone());
                taken += 1;
                last = seq;
            }
        }
        stopped_at(&mut entries, through)
    };
    result.truncated = covered < head;
    result.head = covered;
    if taken > 0 {
        // Without visiting every matched topic, the first message found stands for the
        // oldest retained, unless a topic that lost messages is older.
        let first = out.len() - taken;
        if let Some(first) = out.get(first) {
            result.oldest = Some(result.oldest.map_or(first.seq, |o| o.min(first.seq)));
        }
    }
    result
}

/// Where a walk that took its whole budget of steps from a seq-ordered range stopped: just
/// before the first entry it had no budget for (`rest`'s next), or at `end` if none was left.
fn stopped_at<'a, V: 'a>(rest: &mut impl Iterator<Item = (&'a u64, V)>, end: u64) -> u64 {
    rest.next().map_or(end, |(&seq, _)| seq - 1)
}

/// The part of one topic's ring a read returns: indexes `next..end`.
struct Run<'a> {
    name: &'a str,
    ring: &'a VecDeque<Arc<Message>>,
    next: usize,
    end: usize,
}

/// Appends the `limit` oldest messages of all runs to `out` in seq order (a k-way merge, so a
/// pattern over many topics costs O(limit log k), not a copy of every run).
fn merge(runs: &mut [Run<'_>], limit: usize, out: &mut Vec<Arc<Message>>) {
    if let [run] = runs {
        let end = run.end.min(run.next.saturating_add(limit));
        out.extend(run.ring.range(run.next..end).cloned());
        return;
    }
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
        runs.iter().enumerate().filter_map(|(i, run)| run.ring.get(run.next).map(|m| Reverse((m.seq, i)))).collect();
    let mut taken = 0;
    while taken < limit {
        let Some(Reverse((_, i))) = heap.pop() else {
            break;
        };
        let Some(run) = runs.get_mut(i) else { break };
        if let Some(msg) = run.ring.get(run.next) {
            out.push(msg.clone());
            taken += 1;
        }
        run.next += 1;
        if run.next < run.end {
            if let Some(msg) = run.ring.get(run.next) {
                heap.push(Reverse((msg.seq, i)));
            }
        }
    }
}
