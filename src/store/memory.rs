//! The in-memory history store: one ring of messages per topic behind one `RwLock`.
//!
//! Layout: a `BTreeMap` from topic name to its history ring (sorted, so a pattern read
//! range-scans its literal prefix instead of every topic), each ring a `VecDeque` sorted by seq;
//! plus `fronts`, a map from each topic's oldest retained seq to that message. Because seqs are
//! global, the first entry of `fronts` is the oldest message in the whole store, which is what
//! both the age limit and the global bounds evict. Keeping one entry per topic (rather than a
//! FIFO entry per message) means per-topic evictions leave nothing stale behind and the global
//! bounds count exactly the retained messages.
//!
//! A topic whose ring empties is removed at once, so one-off topics do not leak. What a removed
//! topic held is summarised in `forgotten_through` for gap detection.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{HistoryLimits, ReadResult, Store, StoreStats};
use crate::model::{Epoch, Message, Selector};

/// History kept in process memory; lost on restart (hence the per-start epoch).
#[derive(Debug)]
pub struct MemoryStore {
    epoch: Epoch,
    limits: HistoryLimits,
    /// Highest seq readers may return; raised only after the message is in `inner`.
    head: AtomicU64,
    inner: RwLock<Inner>,
}

impl MemoryStore {
    /// An empty store with a random epoch.
    pub fn new(limits: HistoryLimits) -> MemoryStore {
        let epoch = Epoch::random().unwrap_or_else(|err| {
            // Practically unreachable; the clock still gives a value unlikely to repeat.
            log::warn!("no OS randomness for the epoch ({err}); deriving it from the clock");
            let nanos =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
            Epoch::truncated(u64::from(nanos) << 8)
        });
        MemoryStore::with_epoch(limits, epoch)
    }

    /// An empty store with the given epoch (tests, or a restored sequence).
    pub fn with_epoch(limits: HistoryLimits, epoch: Epoch) -> MemoryStore {
        MemoryStore { epoch, limits, head: AtomicU64::new(0), inner: RwLock::new(Inner::default()) }
    }

    /// The seq of the newest message retained on `topic`, 0 if none (for tests).
    #[cfg(test)]
    pub(crate) fn last_seq(&self, topic: &str) -> u64 {
        let inner = self.read_lock();
        inner.topics.get(topic).and_then(|t| t.ring.back()).map_or(0, |m| m.seq)
    }

    // A panic while holding the lock cannot leave a half-made change we could not live with
    // (each step keeps the maps consistent), so a poisoned lock is simply taken over.
    fn read_lock(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    fn append(&self, msg: Arc<Message>, now_ms: u64) {
        let seq = msg.seq;
        let mut inner = self.write_lock();
        // Only the hub writes, so a relaxed load sees its own last store.
        let head = self.head.load(Ordering::Relaxed);
        if seq <= head {
            log::error!("history: ignoring out-of-order append of seq {seq} (head is {head})");
            return;
        }
        inner.push(msg, &self.limits);
        // Keep the message just appended: it is the newest, so it is never the oldest while
        // anything else is retained.
        inner.evict_oldest_while_over(&self.limits, now_ms, 1);
        // Release: a reader that sees this head also sees the message in `inner` (and it needs
        // the lock anyway, which it can only take after we drop it).
        self.head.store(seq, Ordering::Release);
    }

    fn expire(&self, now_ms: u64) {
        let mut inner = self.write_lock();
        inner.evict_oldest_while_over(&self.limits, now_ms, 0);
    }

    fn read(&self, selectors: &[Selector], after: u64, limit: usize, out: &mut Vec<Arc<Message>>) -> ReadResult {
        // Head first: anything above it may be mid-append and must not be returned (see the
        // module doc of `store`).
        let head = self.head.load(Ordering::Acquire);
        let mut result = ReadResult { head, gap: false, oldest: None, truncated: false, pending: false };
        if after >= head {
            // Nothing newer is visible; whatever gets evicted past `head` is reported by the
            // read that covers it.
            return result;
        }
        let inner = self.read_lock();
        let mut runs = Vec::new();
        for selector in selectors {
            match selector {
                Selector::Exact(name) => match inner.topics.get_key_value(&**name) {
                    Some((name, topic)) => inner.visit(name, topic, after, head, &mut result, &mut runs),
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
                            inner.visit(name, topic, after, head, &mut result, &mut runs);
                        }
                    }
                }
            }
        }
        // One message lives on one topic, so de-duplicating topics de-duplicates messages.
        runs.sort_unstable_by(|a, b| a.name.cmp(b.name));
        runs.dedup_by(|a, b| a.name == b.name);
        let available: usize = runs.iter().map(|run| run.end - run.next).sum();
        result.truncated = available > limit;
        merge(&mut runs, limit, out);
        result
    }

    fn stats(&self) -> StoreStats {
        let inner = self.read_lock();
        StoreStats {
            topics: inner.topics.len(),
            messages: inner.messages,
            bytes: inner.bytes,
            evicted_topic: inner.evicted_topic,
            evicted_global: inner.evicted_global,
            expired: inner.expired,
        }
    }
}

/// Everything behind the lock.
#[derive(Debug, Default)]
struct Inner {
    topics: BTreeMap<Arc<str>, TopicHistory>,
    /// Oldest retained message of every topic, by seq; the first entry is the oldest overall.
    fronts: BTreeMap<u64, Arc<Message>>,
    /// Retained messages over all topics.
    messages: usize,
    /// Retained bytes over all topics (`Message::byte_cost`).
    bytes: usize,
    /// Highest seq ever evicted from a topic that has since been removed.
    forgotten_through: u64,
    evicted_topic: u64,
    evicted_global: u64,
    expired: u64,
}

/// One topic's retained history; never empty (an emptied topic is removed).
#[derive(Debug)]
struct TopicHistory {
    /// Sorted by seq, oldest first.
    ring: VecDeque<Arc<Message>>,
    /// Sum of `byte_cost` over `ring`.
    bytes: usize,
    /// Highest seq evicted from this topic entry, 0 if none.
    evicted_through: u64,
    /// Seq of the first message of this topic entry: anything older on this topic belonged to
    /// an earlier, removed entry.
    created_seq: u64,
}

impl TopicHistory {
    /// Drops the topic's oldest message, remembering it as evicted; returns its byte cost.
    fn pop_front(&mut self) -> Option<usize> {
        let old = self.ring.pop_front()?;
        let cost = old.byte_cost();
        self.bytes -= cost;
        self.evicted_through = old.seq;
        Some(cost)
    }
}

/// Why a message left the store, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Eviction {
    Global,
    Expired,
}

impl Inner {
    /// Appends `msg` to its topic (creating it) and applies the per-topic bounds, always keeping
    /// the message itself.
    fn push(&mut self, msg: Arc<Message>, limits: &HistoryLimits) {
        let cost = msg.byte_cost();
        let seq = msg.seq;
        let topic = self.topics.entry(msg.topic.clone()).or_insert_with(|| TopicHistory {
            ring: VecDeque::new(),
            bytes: 0,
            evicted_through: 0,
            created_seq: seq,
        });
        if topic.ring.is_empty() {
            self.fronts.insert(seq, msg.clone());
        }
        topic.ring.push_back(msg);
        topic.bytes += cost;
        self.messages += 1;
        self.bytes += cost;

        let old_front = topic.ring.front().map(|m| m.seq);
        let mut evicted = false;
        while topic.ring.len() > 1 && (topic.ring.len() > limits.max_messages || topic.bytes > limits.max_bytes) {
            let Some(cost) = topic.pop_front() else {
                break;
            };
            self.messages -= 1;
            self.bytes -= cost;
            self.evicted_topic += 1;
            evicted = true;
        }
        if evicted {
            // Only a topic's oldest message is indexed in `fronts`.
            if let Some(old) = old_front {
                self.fronts.remove(&old);
            }
            if let Some(front) = topic.ring.front() {
                self.fronts.insert(front.seq, front.clone());
            }
        }
    }

    /// Evicts the oldest message overall while the store is over a global bound or that message
    /// is older than `max_age`, keeping at least `keep` messages.
    fn evict_oldest_while_over(&mut self, limits: &HistoryLimits, now_ms: u64, keep: usize) {
        let max_age_ms = u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX);
        while self.messages > keep {
            let Some((_, oldest)) = self.fronts.first_key_value() else {
                break;
            };
            let why = if self.messages > limits.total_messages || self.bytes > limits.total_bytes {
                Eviction::Global
            } else if now_ms.saturating_sub(oldest.time_ms) > max_age_ms {
                Eviction::Expired
            } else {
                break;
            };
            self.evict_oldest(why);
        }
    }

    /// Removes the oldest message overall, and its topic if that empties it.
    fn evict_oldest(&mut self, why: Eviction) {
        let Some((seq, msg)) = self.fronts.pop_first() else {
            return;
        };
        match why {
            Eviction::Global => self.evicted_global += 1,
            Eviction::Expired => self.expired += 1,
        }
        let Some(topic) = self.topics.get_mut(&*msg.topic) else {
            log::error!("history: front {seq} names a missing topic {}", msg.topic);
            return;
        };
        if topic.ring.front().map(|m| m.seq) == Some(seq) {
            if let Some(cost) = topic.pop_front() {
                self.messages -= 1;
                self.bytes -= cost;
            }
        } else {
            log::error!("history: front {seq} is not the oldest message of {}", msg.topic);
        }
        if let Some(front) = topic.ring.front() {
            self.fronts.insert(front.seq, front.clone());
        } else {
            self.forgotten_through = self.forgotten_through.max(topic.evicted_through);
            self.topics.remove(&*msg.topic);
        }
    }

    /// Folds one matched topic into a read: its gap and oldest contribution, and the run of its
    /// messages in `(after, head]`.
    fn visit<'a>(
        &self,
        name: &'a str,
        topic: &'a TopicHistory,
        after: u64,
        head: u64,
        result: &mut ReadResult,
        runs: &mut Vec<Run<'a>>,
    ) {
        result.gap |= after < topic.evicted_through || (after < self.forgotten_through && topic.created_seq > after);
        let next = topic.ring.partition_point(|m| m.seq <= after);
        let end = topic.ring.partition_point(|m| m.seq <= head);
        if next < end {
            if let Some(front) = topic.ring.front() {
                result.oldest = Some(result.oldest.map_or(front.seq, |o| o.min(front.seq)));
            }
            runs.push(Run { name, ring: &topic.ring, next, end });
        }
    }
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

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::model::{MESSAGE_OVERHEAD_BYTES, PAYLOAD_COPIES};

    fn store(limits: HistoryLimits) -> MemoryStore {
        MemoryStore::with_epoch(limits, Epoch::from_raw(99).expect("fits"))
    }

    fn roomy() -> HistoryLimits {
        HistoryLimits { max_messages: 1000, max_bytes: 1 << 30, ..HistoryLimits::default() }
    }

    fn message(seq: u64, topic: &str, time_ms: u64, data: &'static [u8]) -> Arc<Message> {
        Arc::new(Message::new(seq, Arc::from(topic), time_ms, Bytes::from_static(data)))
    }

    /// Appends one message per topic name, seqs from head+1, all at time `at`.
    fn publish(s: &MemoryStore, topics: &[&str], at: u64) {
        for topic in topics {
            let seq = s.head() + 1;
            s.append(message(seq, topic, at, b"x"), at);
        }
    }

    fn sel(list: &[&str]) -> Vec<Selector> {
        list.iter().map(|s| Selector::parse(s).expect(s)).collect()
    }

    fn read(s: &MemoryStore, selectors: &[&str], after: u64, limit: usize) -> (Vec<u64>, ReadResult) {
        let mut out = Vec::new();
        let r = s.read(&sel(selectors), after, limit, &mut out);
        (out.iter().map(|m| m.seq).collect(), r)
    }

    /// Checks the accounting against a full recount.
    fn check_invariants(s: &MemoryStore) {
        let inner = s.read_lock();
        let mut messages = 0;
        let mut bytes = 0;
        for (name, topic) in &inner.topics {
            assert!(!topic.ring.is_empty(), "{name} is empty but kept");
            let sum: usize = topic.ring.iter().map(|m| m.byte_cost()).sum();
            assert_eq!(topic.bytes, sum, "{name} bytes");
            assert!(topic.ring.iter().zip(topic.ring.iter().skip(1)).all(|(a, b)| a.seq < b.seq));
            let front = topic.ring.front().expect("non-empty");
            assert!(Arc::ptr_eq(inner.fronts.get(&front.seq).expect("front indexed"), front));
            messages += topic.ring.len();
            bytes += sum;
        }
        assert_eq!(inner.fronts.len(), inner.topics.len());
        assert_eq!(inner.messages, messages);
        assert_eq!(inner.bytes, bytes);
    }

    #[test]
    fn per_topic_count_bound_keeps_the_newest() {
        let s = store(HistoryLimits { max_messages: 3, ..roomy() });
        publish(&s, &["/a", "/a", "/b", "/a", "/a", "/a"], 0);
        let (seqs, r) = read(&s, &["/a"], 0, 100);
        assert_eq!(seqs, [4, 5, 6]);
        assert!(r.gap, "1 and 2 were evicted");
        assert_eq!(r.oldest, Some(4));
        assert_eq!(r.head, 6);
        let stats = s.stats();
        assert_eq!((stats.topics, stats.messages, stats.evicted_topic), (2, 4, 2));
        assert_eq!(stats.bytes, 4 * (PAYLOAD_COPIES + 2 + MESSAGE_OVERHEAD_BYTES));
        assert_eq!(s.last_seq("/a"), 6);
        assert_eq!(s.last_seq("/b"), 3);
        assert_eq!(s.last_seq("/c"), 0);
        check_invariants(&s);
    }

    #[test]
    fn per_topic_byte_bound_and_oversized_message() {
        let cost = 4 * PAYLOAD_COPIES + 2 + MESSAGE_OVERHEAD_BYTES;
        let s = store(HistoryLimits { max_bytes: 2 * cost + cost / 2, ..roomy() });
        for seq in 1..=4 {
            s.append(message(seq, "/a", 0, b"abcd"), 0);
        }
        assert_eq!(read(&s, &["/a"], 0, 100).0, [3, 4]);
        assert_eq!(s.stats().bytes, 2 * cost);
        // A message bigger than the whole per-topic budget is still kept, alone.
        let big: &'static [u8] = Box::leak(vec![b'z'; 3 * cost].into_boxed_slice());
        s.append(message(5, "/a", 0, big), 0);
        assert_eq!(read(&s, &["/a"], 0, 100).0, [5]);
        assert_eq!(s.stats().evicted_topic, 4);
        check_invariants(&s);
    }

    #[test]
    fn global_count_bound_evicts_oldest_and_removes_empty_topics() {
        let s = store(HistoryLimits { total_messages: 3, ..roomy() });
        publish(&s, &["/a", "/b", "/c", "/b", "/c"], 0);
        let stats = s.stats();
        assert_eq!((stats.topics, stats.messages, stats.evicted_global), (2, 3, 2));
        assert_eq!(read(&s, &["/a", "/b", "/c"], 0, 100).0, [3, 4, 5]);
        assert_eq!(s.last_seq("/a"), 0, "/a was removed");
        check_invariants(&s);
    }

    #[test]
    fn global_byte_bound() {
        let cost = PAYLOAD_COPIES + 2 + MESSAGE_OVERHEAD_BYTES;
        let s = store(HistoryLimits { total_bytes: 3 * cost, ..roomy() });
        publish(&s, &["/a", "/b", "/a", "/b", "/a"], 0);
        let stats = s.stats();
        assert_eq!((stats.messages, stats.bytes, stats.evicted_global), (3, 3 * cost, 2));
        assert_eq!(read(&s, &["/*"], 0, 100).0, [3, 4, 5]);
        check_invariants(&s);
    }

    #[test]
    fn age_expiry_removes_old_messages_and_idle_topics() {
        let s = store(HistoryLimits { max_age: Duration::from_millis(1000), ..roomy() });
        publish(&s, &["/a", "/b"], 0);
        publish(&s, &["/a"], 500);
        s.expire(1000);
        assert_eq!(s.stats().messages, 3, "exactly max_age old is kept");
        s.expire(1001);
        assert_eq!(read(&s, &["/a", "/b"], 0, 100).0, [3]);
        assert_eq!(s.stats().topics, 1);
        s.expire(1501);
        let stats = s.stats();
        assert_eq!((stats.topics, stats.messages, stats.bytes, stats.expired), (0, 0, 0, 3));
        assert_eq!(s.head(), 3, "the sequence does not go back");
        check_invariants(&s);
    }

    #[test]
    fn one_off_topics_do_not_leak() {
        let s = store(HistoryLimits { max_age: Duration::from_secs(1), ..roomy() });
        for i in 0..10_000u64 {
            let topic = format!("/once/{i}");
            s.append(message(i + 1, &topic, i / 10, b"x"), i / 10);
        }
        assert_eq!(s.stats().topics, 10_000);
        s.expire(10_000);
        assert_eq!(s.stats(), StoreStats { expired: 10_000, ..StoreStats::default() });
        check_invariants(&s);
    }

    #[test]
    fn append_also_applies_the_age_limit() {
        let s = store(HistoryLimits { max_age: Duration::from_millis(10), ..roomy() });
        publish(&s, &["/a"], 0);
        publish(&s, &["/b"], 100);
        assert_eq!(read(&s, &["/a", "/b"], 0, 10).0, [2]);
        check_invariants(&s);
    }

    #[test]
    fn out_of_order_append_is_ignored() {
        let s = store(roomy());
        s.append(message(5, "/a", 0, b"x"), 0);
        s.append(message(5, "/a", 0, b"y"), 0);
        s.append(message(3, "/a", 0, b"y"), 0);
        assert_eq!(s.head(), 5);
        assert_eq!(s.stats().messages, 1);
    }

    #[test]
    fn gap_on_evicted_messages() {
        let s = store(HistoryLimits { max_messages: 2, ..roomy() });
        publish(&s, &["/a", "/b", "/a", "/a"], 0); // /a keeps 3, 4; 1 evicted
        assert!(read(&s, &["/a"], 0, 10).1.gap);
        let (seqs, r) = read(&s, &["/a"], 1, 10);
        assert_eq!(seqs, [3, 4]);
        assert!(!r.gap, "nothing after 1 was lost");
        assert!(!read(&s, &["/b"], 0, 10).1.gap);
        assert!(read(&s, &["/*"], 0, 10).1.gap);
    }

    #[test]
    fn gap_on_removed_and_recreated_topic() {
        let s = store(HistoryLimits { max_age: Duration::from_millis(10), ..roomy() });
        publish(&s, &["/a", "/a", "/b"], 0);
        s.expire(100); // /a (1, 2) and /b (3) forgotten
        assert_eq!(s.stats().topics, 0);
        publish(&s, &["/a"], 100); // /a recreated at 4
        let (seqs, r) = read(&s, &["/a"], 1, 10);
        assert_eq!(seqs, [4]);
        assert!(r.gap, "2 was lost with the old /a");
        assert!(!read(&s, &["/a"], 3, 10).1.gap);
        // A topic that does not exist now, and patterns, only know the store-wide mark.
        assert!(read(&s, &["/zz"], 2, 10).1.gap);
        assert!(!read(&s, &["/zz"], 3, 10).1.gap);
        assert!(read(&s, &["/q/*"], 2, 10).1.gap);
        assert!(!read(&s, &["/*"], 3, 10).1.gap);
        // A topic older than the removal does not inherit it.
        let s = store(HistoryLimits { max_age: Duration::from_millis(10), ..roomy() });
        publish(&s, &["/old", "/gone"], 0);
        publish(&s, &["/old"], 50);
        s.expire(55); // /old's 1 and /gone's 2 are expired, /old keeps 3
        let (seqs, r) = read(&s, &["/old"], 2, 10);
        assert_eq!(seqs, [3]);
        assert!(!r.gap, "/old lost only 1, which the reader had");
        assert!(read(&s, &["/old"], 0, 10).1.gap);
    }

    #[test]
    fn limit_returns_the_oldest_and_says_truncated() {
        let s = store(roomy());
        publish(&s, &["/a", "/b", "/c", "/a", "/b", "/c", "/a", "/b", "/c", "/a"], 0);
        let (seqs, r) = read(&s, &["/a", "/b", "/c"], 0, 4);
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert!(r.truncated);
        let (seqs, r) = read(&s, &["/a", "/b", "/c"], 4, 6);
        assert_eq!(seqs, [5, 6, 7, 8, 9, 10]);
        assert!(!r.truncated);
        let (seqs, r) = read(&s, &["/a"], 0, 2);
        assert_eq!(seqs, [1, 4]);
        assert!(r.truncated);
        let (seqs, r) = read(&s, &["/a"], 0, 0);
        assert!(seqs.is_empty() && r.truncated);
        let (seqs, r) = read(&s, &["/a"], 10, 5);
        assert!(seqs.is_empty() && !r.truncated && r.oldest.is_none());
    }

    #[test]
    fn overlapping_selectors_return_each_message_once() {
        let s = store(roomy());
        publish(&s, &["/a", "/a/b", "/a", "/c"], 0);
        let (seqs, r) = read(&s, &["/a", "/*", "/a", "/a/**", "/*/b"], 0, 100);
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert!(!r.truncated && !r.gap);
        assert_eq!(r.oldest, Some(1));
    }

    #[test]
    fn pattern_reads() {
        let s = store(roomy());
        publish(&s, &["/chat/a", "/chat/a/b", "/chatx/a", "/chat", "/chat/b", "/zz/chat/a"], 0);
        assert_eq!(read(&s, &["/chat/*"], 0, 100).0, [1, 5]);
        assert_eq!(read(&s, &["/chat/**"], 0, 100).0, [1, 2, 5]);
        assert_eq!(read(&s, &["/*/a"], 0, 100).0, [1, 3]);
        assert_eq!(read(&s, &["/**"], 0, 100).0, [1, 2, 3, 4, 5, 6]);
        assert_eq!(read(&s, &["/*/chat/*"], 0, 100).0, [6]);
        assert!(read(&s, &["/none/*"], 0, 100).0.is_empty());
        let (seqs, r) = read(&s, &["/chat/*"], 1, 100);
        assert_eq!(seqs, [5]);
        assert_eq!(r.oldest, Some(5));
    }

    #[test]
    fn oldest_is_the_front_of_topics_with_news() {
        let s = store(HistoryLimits { max_messages: 2, ..roomy() });
        publish(&s, &["/a", "/b", "/a", "/a", "/b"], 0); // /a: 3, 4  /b: 2, 5
        let (seqs, r) = read(&s, &["/a", "/b"], 3, 10);
        assert_eq!(seqs, [4, 5]);
        assert_eq!(r.oldest, Some(2));
        let (_, r) = read(&s, &["/a", "/b"], 4, 10);
        assert_eq!(r.oldest, Some(2), "/a has nothing new, /b starts at 2");
    }

    #[test]
    fn messages_above_head_are_not_returned() {
        let s = store(roomy());
        publish(&s, &["/a"], 0);
        // Put seq 2 and 3 in the rings as an append does, without raising the head yet.
        {
            let mut inner = s.write_lock();
            inner.push(message(2, "/b", 0, b"x"), &s.limits);
            inner.push(message(3, "/a", 0, b"x"), &s.limits);
        }
        let (seqs, r) = read(&s, &["/a", "/b"], 0, 10);
        assert_eq!(seqs, [1]);
        assert_eq!(r.head, 1);
        assert!(!r.truncated);
        s.head.store(3, Ordering::Release);
        assert_eq!(read(&s, &["/a", "/b"], 0, 10).0, [1, 2, 3]);
    }

    #[test]
    fn concurrent_readers_never_skip() {
        const N: u64 = 2000;
        // Room for everything, so any skip would be the store's fault, not eviction.
        let s = Arc::new(store(HistoryLimits { max_messages: N as usize, ..roomy() }));
        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                for seq in 1..=N {
                    let topic = if seq % 3 == 0 { "/b" } else { "/a" };
                    s.append(message(seq, topic, 0, b"x"), 0);
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || {
                    let selectors = sel(&["/a", "/b"]);
                    let mut after = 0;
                    let mut out = Vec::new();
                    while after < N {
                        out.clear();
                        let r = s.read(&selectors, after, 7, &mut out);
                        assert!(!r.gap);
                        for m in &out {
                            assert_eq!(m.seq, after + 1, "a reader skipped or repeated");
                            after = m.seq;
                        }
                        if !r.truncated {
                            // Every seq is on /a or /b: all of them up to head came back.
                            assert_eq!(after, r.head, "a message at or below head was missing");
                        }
                        thread::yield_now();
                    }
                })
            })
            .collect();
        writer.join().expect("writer");
        for r in readers {
            r.join().expect("reader");
        }
    }
}
