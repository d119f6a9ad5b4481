//! The in-memory history store: one ring of messages per topic, plus a store-wide log of every
//! retained message in seq order, behind one `RwLock`.
//!
//! Layout (`Inner`):
//! - `topics`: a `BTreeMap` from topic name to its history ring (a `VecDeque` sorted by seq).
//!   Sorted, so a pattern read can range-scan its literal prefix.
//! - `log`: every retained message, by seq. Seqs are global, so its first entry is the oldest
//!   message in the whole store, which is what the age limit and the global bounds evict; and a
//!   read of a wide pattern walks it from the reader's cursor and stops as soon as it has its
//!   batch, instead of visiting every topic (see `read`).
//! - `evicted`: for each topic that has lost messages, the highest seq it lost, so a log walk
//!   can tell whether one of its topics lost something after the reader's cursor without
//!   visiting them all.
//!
//! A topic whose ring empties is removed at once, so one-off topics do not leak. What a removed
//! topic held is summarised in `forgotten_through` for gap detection.
//!
//! Lock holds are bounded: a read does at most a fixed amount of work (`read` says how) and an
//! expiry pass gives the lock back every `EXPIRE_CHUNK` evictions, so neither a history scan
//! nor a mass expiry keeps the hub or the other readers waiting for long.

mod read;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use self::snapshot::{Loaded as SnapshotLoaded, SnapshotError, VERSION as SNAPSHOT_VERSION};
use super::{HistoryLimits, ReadResult, Store, StoreStats};
use crate::model::{Epoch, Message, Selector};

/// Most messages one write-lock hold evicts for age: `expire` takes the lock again for the
/// rest, and an append leaves the rest to `expire`. A burst of one-off topics expiring
/// together must not stop every reader for the whole sweep.
const EXPIRE_CHUNK: usize = 1024;

/// History kept in process memory: lost on restart (hence the per-start epoch), unless a
/// graceful shutdown saved it to `--state-dir` (`snapshot`, `store::state`).
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
        // anything else is retained. Expired messages beyond one chunk are left to `expire`.
        inner.evict_oldest_while_over(&self.limits, now_ms, 1, EXPIRE_CHUNK);
        // Release: a reader that sees this head also sees the message in `inner` (and it needs
        // the lock anyway, which it can only take after we drop it).
        self.head.store(seq, Ordering::Release);
    }

    fn expire(&self, now_ms: u64) {
        // In chunks, giving the lock back in between: readers and the next append get a turn.
        while self.write_lock().evict_oldest_while_over(&self.limits, now_ms, 0, EXPIRE_CHUNK) {}
    }

    fn read(&self, selectors: &[Selector], after: u64, limit: usize, out: &mut Vec<Arc<Message>>) -> ReadResult {
        // Head first: anything above it may be mid-append and must not be returned (see the
        // module doc of `store`).
        let head = self.head.load(Ordering::Acquire);
        if after >= head {
            // Nothing newer is visible; whatever gets evicted past `head` is reported by the
            // read that covers it.
            return ReadResult { head, gap: false, oldest: None, truncated: false, pending: false };
        }
        read::read(&self.read_lock(), selectors, after, head, limit, out, read::BUDGET)
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
    /// Every retained message, by seq; the first entry is the oldest overall.
    log: BTreeMap<u64, Arc<Message>>,
    /// `evicted_through` of every retained topic that has lost a message, to that topic.
    evicted: BTreeMap<u64, Arc<str>>,
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
    /// Drops the topic's oldest message, remembering it as evicted; returns it.
    fn pop_front(&mut self) -> Option<Arc<Message>> {
        let old = self.ring.pop_front()?;
        self.bytes -= old.byte_cost();
        self.evicted_through = old.seq;
        // A ring that a burst grew and age then drained keeps its peak capacity; give most of
        // it back (a ring of 100 `Arc`s is 1 KiB, times every topic).
        if self.ring.capacity() >= 64 && self.ring.len() * 4 < self.ring.capacity() {
            self.ring.shrink_to(self.ring.len() * 2);
        }
        Some(old)
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
        self.log.insert(seq, msg.clone());
        topic.ring.push_back(msg);
        topic.bytes += cost;
        self.messages += 1;
        self.bytes += cost;

        let lost_before = topic.evicted_through;
        while topic.ring.len() > 1 && (topic.ring.len() > limits.max_messages || topic.bytes > limits.max_bytes) {
            let Some(old) = topic.pop_front() else {
                break;
            };
            self.log.remove(&old.seq);
            self.messages -= 1;
            self.bytes -= old.byte_cost();
            self.evicted_topic += 1;
        }
        if topic.evicted_through != lost_before {
            let (name, lost) = (topic.ring.back().map(|m| m.topic.clone()), topic.evicted_through);
            self.evicted.remove(&lost_before);
            if let Some(name) = name {
                self.evicted.insert(lost, name);
            }
        }
    }

    /// Evicts the oldest message overall while the store is over a global bound or that message
    /// is older than `max_age`, keeping at least `keep` messages and evicting at most `chunk`
    /// for age. Returns whether it stopped at `chunk` with expired messages left.
    fn evict_oldest_while_over(&mut self, limits: &HistoryLimits, now_ms: u64, keep: usize, chunk: usize) -> bool {
        let max_age_ms = u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX);
        let mut expired = 0;
        while self.messages > keep {
            let Some((_, oldest)) = self.log.first_key_value() else {
                break;
            };
            let why = if self.messages > limits.total_messages || self.bytes > limits.total_bytes {
                Eviction::Global
            } else if now_ms.saturating_sub(oldest.time_ms) > max_age_ms {
                if expired == chunk {
                    return true;
                }
                expired += 1;
                Eviction::Expired
            } else {
                break;
            };
            self.evict_oldest(why);
        }
        false
    }

    /// Removes the oldest message overall, and its topic if that empties it.
    fn evict_oldest(&mut self, why: Eviction) {
        let Some((seq, msg)) = self.log.pop_first() else {
            return;
        };
        match why {
            Eviction::Global => self.evicted_global += 1,
            Eviction::Expired => self.expired += 1,
        }
        let Some(topic) = self.topics.get_mut(&*msg.topic) else {
            log::error!("history: message {seq} names a missing topic {}", msg.topic);
            return;
        };
        let lost_before = topic.evicted_through;
        // The oldest message overall is the oldest of its topic.
        if topic.ring.front().map(|m| m.seq) == Some(seq) {
            if let Some(old) = topic.pop_front() {
                self.messages -= 1;
                self.bytes -= old.byte_cost();
            }
        } else {
            log::error!("history: message {seq} is not the oldest of {}", msg.topic);
        }
        self.evicted.remove(&lost_before);
        if topic.ring.is_empty() {
            self.forgotten_through = self.forgotten_through.max(topic.evicted_through);
            self.topics.remove(&*msg.topic);
        } else {
            self.evicted.insert(topic.evicted_through, msg.topic.clone());
        }
    }
}
