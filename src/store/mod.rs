//! Message history: the `Store` trait every backend implements (memory now, Redis later), its
//! bounds and the shape of a read.
//!
//! History is the source of truth for subscribers. The hub thread is the only writer: it appends
//! each message and only then raises the store's `head`. Workers read directly, concurrently,
//! by cursor: a read first loads `head` and returns nothing newer, so a reader never sees message
//! N+2 while N+1 (on another topic) is not yet visible, which would make its client skip N+1.
//!
//! A read never blocks: workers run event loops. A backend whose history lives partly in
//! another process (a shared log on Redis) keeps what workers read in memory, and answers a
//! read it cannot serve from memory with [`ReadResult::pending`]: nothing is returned and
//! nothing is skipped (`head` is the reader's own cursor), a thread of the backend's fetches the
//! range, and the backend calls its [`Loaded`] notifier with the selectors of every read it
//! answered pending for, exactly as the reader passed them. The hub then wakes every worker
//! subscribed to one of those selectors (the same selector, not an overlapping one: each
//! reader's own selectors are what it registered); they read again. Every reader in the server treats a pending
//! read like "nothing new yet": a long-poll stays parked, a stream or socket keeps its cursor
//! and waits for the wake, a poll is answered with its cursor unchanged.

mod memory;
mod redis;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

pub use self::memory::{MemoryStore, SnapshotError, SnapshotLoaded, SNAPSHOT_VERSION};
pub use self::redis::sessions::{Lookup, LookupReply, RedisSessions, SessionOp, LOOKUP_DEADLINE};
pub use self::redis::RedisStore;
use crate::model::{Epoch, Message, Selector};

// The defaults of the `--history-*` options: the server's configuration takes its `[history]`
// section from `HistoryLimits::default`, so these are the only place they are written.

/// Default per-topic history length, in messages (`--history-messages`).
pub const DEFAULT_MAX_MESSAGES: usize = 100;
/// Default per-topic history size, in bytes (`Message::byte_cost`; `--history-bytes`).
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// Default age after which a message is dropped from history (`--history-age`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// Default history length over all topics, in messages (`--history-total-messages`).
pub const DEFAULT_TOTAL_MESSAGES: usize = 1_000_000;
/// Default history size over all topics, in bytes (`--history-total-bytes`).
pub const DEFAULT_TOTAL_BYTES: usize = 256 << 20;

/// History bounds, also the `[history]` section of the server's configuration. Hitting one evicts the oldest messages (of the topic, or of all topics); the
/// newest message of a topic is kept by the per-topic bounds and the newest message overall by
/// the global ones, so a publish is always readable at least until the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per topic.
    pub max_messages: usize,
    /// Bytes kept per topic.
    pub max_bytes: usize,
    /// Messages older than this are dropped.
    pub max_age: Duration,
    /// Messages kept over all topics.
    pub total_messages: usize,
    /// Bytes kept over all topics.
    pub total_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> HistoryLimits {
        HistoryLimits {
            max_messages: DEFAULT_MAX_MESSAGES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: DEFAULT_MAX_AGE,
            total_messages: DEFAULT_TOTAL_MESSAGES,
            total_bytes: DEFAULT_TOTAL_BYTES,
        }
    }
}

/// What a `Store::read` found besides the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// How far the read looked: the reader has seen everything on its selectors up to here
    /// and continues from it (`next_cursor`). When not `truncated` this is the head the read
    /// was bounded by; when `truncated` it is where the read stopped, the last message returned
    /// or, when a backend bounds a read's work, the last seq it looked at (possibly with no
    /// message returned at all).
    pub head: u64,
    /// Messages newer than `after` on a matched topic may have been evicted or forgotten.
    pub gap: bool,
    /// The oldest retained seq among matched topics that have messages newer than `after`, as
    /// far as the read looked: a read that does not visit every matched topic (the memory
    /// store's log walk) gives the oldest of the first message returned and the topics it
    /// found had lost messages. Meant for a gap notice ("history now starts at").
    pub oldest: Option<u64>,
    /// The read stopped before the head: more than `limit` messages were available (the
    /// oldest ones were returned), or the backend's work bound for one read was reached. The
    /// reader reads again from `next_cursor`, at once; a reader that would otherwise wait
    /// (a long-poll) answers instead, so that a read that found nothing yet is not parked.
    pub truncated: bool,
    /// History after `after` is not in this process's memory: nothing was returned, `head` is
    /// `after`, no gap is reported, and a fetch is under way (build it with
    /// `ReadResult::pending`). When it lands the backend calls its `Loaded`
    /// notifier with the selectors (see the module doc); only a backend with history outside
    /// the process ever sets this.
    pub pending: bool,
}

impl ReadResult {
    /// The answer to a read after `after` that must wait for a fetch: no messages, no gap, and
    /// `head == after`, so no reader moves its cursor past history it has not seen.
    pub fn pending(after: u64) -> ReadResult {
        ReadResult { head: after, gap: false, oldest: None, truncated: false, pending: true }
    }

    /// The cursor a reader continues from after a read `after` that returned `msgs`: where the
    /// read stopped (`head`), never behind `after`. This rule is what makes resuming lose and
    /// repeat nothing.
    pub fn next_cursor(&self, after: u64, msgs: &[Arc<Message>]) -> u64 {
        debug_assert!(msgs.last().is_none_or(|m| m.seq <= self.head), "a read returned a message past its head");
        self.head.max(after)
    }
}

/// Store occupancy and eviction counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Topics with retained history.
    pub topics: usize,
    /// Retained messages.
    pub messages: usize,
    /// Retained bytes (`Message::byte_cost`).
    pub bytes: usize,
    /// Messages evicted by a per-topic bound (the normal end of a message's life on a busy topic).
    pub evicted_topic: u64,
    /// Messages evicted by a global bound (history is smaller than configured per topic).
    pub evicted_global: u64,
    /// Messages dropped for age.
    pub expired: u64,
}

/// How a backend says that a fetch it started for a pending read has landed: the hub wakes the
/// workers subscribed to these selectors, and they read again. Set once, by the hub, at start.
pub struct Loaded(Box<dyn Fn(Vec<Selector>) + Send + Sync>);

impl Loaded {
    pub fn new(notify: impl Fn(Vec<Selector>) + Send + Sync + 'static) -> Loaded {
        Loaded(Box::new(notify))
    }

    /// History for `selectors` is now in memory. Pass the selectors of the reads that were
    /// answered pending, as their readers gave them: the hub wakes subscribers by selector.
    pub fn loaded(&self, selectors: Vec<Selector>) {
        (self.0)(selectors)
    }
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loaded")
    }
}

/// A message history backend.
pub trait Store: Send + Sync + 'static {
    /// The epoch of this history's sequence numbers.
    fn epoch(&self) -> Epoch;

    /// The highest seq visible to readers (Acquire load); 0 before the first append.
    fn head(&self) -> u64;

    /// Hub only. Appends (topic created on demand), applies per-topic and global bounds
    /// (evicting oldest), then publishes the new head. `now_ms` (unix ms) is passed in: no clock
    /// reads inside. Seqs must increase; a message whose seq is not above the head is ignored.
    fn append(&self, msg: Arc<Message>, now_ms: u64);

    /// Hub only, called about once a second: evicts messages older than `max_age` and removes
    /// topics whose history is empty, so one-off topics do not leak.
    fn expire(&self, now_ms: u64);

    /// Workers. Appends to `out`, in seq order, the messages on topics matched by any selector
    /// with `after < seq <= head` (head loaded first), at most `limit` of them (the oldest ones;
    /// `truncated` says more remain). A message matching several selectors appears once.
    /// `Since::All` is `after = 0`. See `ReadResult` for the rest; it never blocks (`pending`),
    /// and its cost must not grow with the number of topics or messages a read does not return:
    /// a backend bounds each read's work and answers `truncated` when the bound is reached.
    fn read(&self, selectors: &[Selector], after: u64, limit: usize, out: &mut Vec<Arc<Message>>) -> ReadResult;

    /// Occupancy and counters.
    fn stats(&self) -> StoreStats;

    /// Called once by the hub when it starts: how to announce that a pending read's fetch has
    /// landed. A backend that never answers `pending` (the memory store) ignores it.
    fn on_loaded(&self, loaded: Loaded) {
        let _ = loaded;
    }

    /// Hub only, cluster mode: the shared log lost history and goes on under `epoch` with
    /// seqs above `floor`. The backend drops what it cached; a read from a cursor below
    /// `floor` reports a gap. The memory store, which sequences nothing itself, ignores it.
    fn reset(&self, epoch: Epoch, floor: u64) {
        let _ = (epoch, floor);
    }
}
