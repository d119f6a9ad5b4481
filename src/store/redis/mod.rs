//! Cluster mode: history in one Redis stream shared by every node (`--redis`), with the
//! node's memory as a cache. See docs/CLUSTER.md for the design and its failure modes.
//!
//! `RedisStore` is the `Store` workers read and the `SharedLog` the hub publishes through.
//! Three threads work around the hub, none blocking a worker or the hub:
//! - the writer (`writer.rs`) runs the publish script for the hub's publishes, pipelined;
//! - the tail (`tail.rs`) follows the log and hands every message to the hub, which appends it
//!   to the hot cache (a `MemoryStore`) and forwards it, so every node has one order;
//! - the cold reader (`tail.rs`) fetches history older than the hot cache into a bounded cold
//!   cache when a read needs it, answering that read `pending` meanwhile.
//!
//! Ranges of seqs: the log's current epoch began above `floor`; the hot cache holds what the
//! tail brought since this node started (or rotated), above `base`; a read from a cursor below
//! `base` is cold. A cursor below `floor` is from before the log lost history: it gets a gap.

mod link;
pub mod sessions;
mod tail;
mod writer;

use std::collections::{HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use crossbeam_channel::{Sender, TrySendError};

use self::link::Link;
use self::tail::{Fetch, Tail};
use self::writer::Writer;
use super::{HistoryLimits, Loaded, MemoryStore, ReadResult, Store, StoreStats};
use crate::hub::{HubCmd, PublishReq, SharedLog};
use crate::model::{Epoch, Message, Selector};

/// Publishes the writer's queue holds; beyond it they are refused with 503.
const WRITE_QUEUE: usize = 16 * 1024;
/// Cold fetches queued at most; a read that finds the queue full stays pending until its
/// reader's timeout and asks again.
const FETCH_QUEUE: usize = 256;
/// Messages the cold cache holds at most (oldest segments dropped first).
const COLD_MAX: usize = 64 * 1024;

/// What the store's threads share.
#[derive(Debug)]
pub(super) struct Shared {
    /// The writer can reach Redis: publishes are taken.
    up: AtomicBool,
    /// The log's epoch as the tail last saw it.
    epoch: AtomicU64,
    /// The highest seq the tail has brought (the floor the publish script guards).
    seen: AtomicU64,
    /// The log's approximate length bound (`XADD MAXLEN ~`).
    maxlen: usize,
}

impl Shared {
    fn epoch_text(&self) -> String {
        Epoch::truncated(self.epoch.load(Ordering::Acquire)).to_string()
    }

    fn set_epoch(&self, epoch: Epoch) {
        self.epoch.store(raw(epoch), Ordering::Release);
    }
}

fn raw(epoch: Epoch) -> u64 {
    // Epochs print as base36 and parse back; this is the numeric value without a getter.
    epoch
        .to_string()
        .bytes()
        .fold(0u64, |v, b| v * 36 + u64::from(if b.is_ascii_digit() { b - b'0' } else { b - b'a' + 10 }))
}

/// A new epoch a node proposes if the log has none: random, with seqs starting at the clock
/// in milliseconds times 1,000, so an epoch created later starts above every seq an older
/// one reached (unless it took over a million publishes a second for its whole life).
pub(super) fn candidate_epoch() -> (String, u64) {
    let epoch = Epoch::random().unwrap_or_else(|_| Epoch::truncated(crate::hub::system_clock_ms()));
    (epoch.to_string(), crate::hub::system_clock_ms().saturating_mul(1000))
}

/// A range of the log fetched for cold reads: every message with `start < seq <= end`.
#[derive(Debug)]
pub(super) struct Segment {
    start: u64,
    end: u64,
    /// Seqs up to here (above `start`) were trimmed from the log: a gap.
    lost_through: Option<u64>,
    msgs: Vec<Arc<Message>>,
}

#[derive(Debug, Default)]
struct Cold {
    segments: VecDeque<Segment>,
    held: usize,
    /// Cursors with a fetch under way, and the selectors waiting for each.
    inflight: HashSet<u64>,
    waiting: Vec<Selector>,
}

/// History on Redis, cached in memory.
pub struct RedisStore {
    limits: HistoryLimits,
    epoch: AtomicU64,
    floor: AtomicU64,
    base: AtomicU64,
    hot: RwLock<Arc<MemoryStore>>,
    cold: Mutex<Cold>,
    fetch: Sender<Fetch>,
    fetch_rx: Mutex<Option<crossbeam_channel::Receiver<Fetch>>>,
    writes: Sender<PublishReq>,
    writes_rx: Mutex<Option<crossbeam_channel::Receiver<PublishReq>>>,
    loaded: OnceLock<Loaded>,
    shared: Arc<Shared>,
    client: redis::Client,
    me: OnceLock<std::sync::Weak<RedisStore>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("epoch", &self.epoch()).field("head", &self.head()).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://HOST:PORT/DB`) and reads, or creates, the log's epoch.
    /// The threads start with the hub (`SharedLog::start`). Fails if Redis cannot be reached.
    pub fn connect(url: &str, limits: HistoryLimits) -> io::Result<Arc<RedisStore>> {
        let client =
            redis::Client::open(url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut link = Link::new(client.clone(), "init", writer::WRITE_TIMEOUT);
        let (cand, cand_base) = candidate_epoch();
        let (epoch, seq, base) = link.meta((&cand, cand_base), "", 0).map_err(|e| {
            io::Error::new(io::ErrorKind::ConnectionRefused, format!("cannot reach Redis at {url}: {e}"))
        })?;
        let epoch: Epoch = epoch.parse().map_err(|_| io::Error::other(format!("bad epoch {epoch:?} in Redis")))?;
        let (fetch, fetch_rx) = crossbeam_channel::bounded(FETCH_QUEUE);
        let (writes, writes_rx) = crossbeam_channel::bounded(WRITE_QUEUE);
        let shared = Arc::new(Shared {
            up: AtomicBool::new(true),
            epoch: AtomicU64::new(raw(epoch)),
            seen: AtomicU64::new(seq),
            maxlen: limits.total_messages,
        });
        let store = Arc::new(RedisStore {
            limits,
            epoch: AtomicU64::new(raw(epoch)),
            floor: AtomicU64::new(base),
            base: AtomicU64::new(seq),
            hot: RwLock::new(Arc::new(MemoryStore::with_epoch(limits, epoch))),
            cold: Mutex::new(Cold::default()),
            fetch,
            fetch_rx: Mutex::new(Some(fetch_rx)),
            writes,
            writes_rx: Mutex::new(Some(writes_rx)),
            loaded: OnceLock::new(),
            shared,
            client,
            me: OnceLock::new(),
        });
        let _ = store.me.set(Arc::downgrade(&store));
        log::info!("cluster mode: log on {url}, epoch {epoch}, at seq {seq}");
        Ok(store)
    }

    fn hot(&self) -> Arc<MemoryStore> {
        self.hot.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn cold(&self) -> std::sync::MutexGuard<'_, Cold> {
        self.cold.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fetch landed: keep it (bounded) and wake the readers that waited.
    fn fetched(&self, segment: Segment) {
        let waiting = {
            let mut cold = self.cold();
            cold.inflight.remove(&segment.start);
            cold.held += segment.msgs.len();
            cold.segments.push_back(segment);
            while cold.held > COLD_MAX && cold.segments.len() > 1 {
                if let Some(old) = cold.segments.pop_front() {
                    cold.held -= old.msgs.len();
                }
            }
            std::mem::take(&mut cold.waiting)
        };
        if let Some(loaded) = self.loaded.get() {
            loaded.loaded(waiting);
        }
    }

    fn fetch_failed(&self, after: u64) {
        self.cold().inflight.remove(&after);
    }

    /// A read from the cold cache, or `None` if no segment covers `after` (a fetch is asked).
    fn read_cold(&self, selectors: &[Selector], after: u64, limit: usize, out: &mut Vec<Arc<Message>>) -> ReadResult {
        let mut cold = self.cold();
        if let Some(seg) = cold.segments.iter().find(|s| s.start <= after && after < s.end) {
            let from = seg.msgs.partition_point(|m| m.seq <= after);
            let mut head = seg.end;
            let mut truncated = false;
            let mut returned = 0;
            for msg in &seg.msgs[from..] {
                if selectors.iter().any(|s| s.matches(&msg.topic)) {
                    if returned == limit {
                        head = out.last().map_or(after, |m| m.seq);
                        truncated = true;
                        break;
                    }
                    out.push(msg.clone());
                    returned += 1;
                }
            }
            let gap = seg.lost_through.is_some_and(|lost| after < lost);
            let oldest = if gap { seg.lost_through.map(|l| l + 1) } else { out.first().map(|m| m.seq) };
            // The reader goes on from the segment's end into newer history at once.
            truncated |= head < self.head();
            return ReadResult { head, gap, oldest, truncated, pending: false };
        }
        if !cold.inflight.contains(&after) {
            match self.fetch.try_send(Fetch { after }) {
                Ok(()) => {
                    cold.inflight.insert(after);
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
            }
        }
        // Bounded: one entry per selector set waiting, deduplicated.
        for s in selectors {
            if !cold.waiting.contains(s) && cold.waiting.len() < 4096 {
                cold.waiting.push(s.clone());
            }
        }
        ReadResult::pending(after)
    }
}

impl Store for RedisStore {
    fn epoch(&self) -> Epoch {
        Epoch::truncated(self.epoch.load(Ordering::Acquire))
    }

    fn head(&self) -> u64 {
        self.hot().head().max(self.base.load(Ordering::Acquire))
    }

    fn append(&self, msg: Arc<Message>, now_ms: u64) {
        self.hot().append(msg, now_ms);
    }

    fn expire(&self, now_ms: u64) {
        self.hot().expire(now_ms);
    }

    fn read(&self, selectors: &[Selector], after: u64, limit: usize, out: &mut Vec<Arc<Message>>) -> ReadResult {
        let floor = self.floor.load(Ordering::Acquire);
        // A cursor from before the log lost history: what it missed is unknown.
        let (from, lost) = if after < floor { (floor, true) } else { (after, false) };
        let base = self.base.load(Ordering::Acquire);
        let mut result = None;
        if from >= base {
            let start = out.len();
            let read = self.hot().read(selectors, from, limit, out);
            if !read.gap {
                result = Some(ReadResult { head: read.head.max(from), ..read });
            } else {
                // The hot ring of some topic dropped messages that Redis still has.
                out.truncate(start);
            }
        }
        let mut read = match result {
            Some(read) => read,
            None => self.read_cold(selectors, from, limit, out),
        };
        if lost && !read.pending {
            read.gap = true;
            read.oldest = read.oldest.or(Some(floor + 1));
        }
        if read.pending {
            read.head = after;
        }
        read
    }

    fn stats(&self) -> StoreStats {
        self.hot().stats()
    }

    fn on_loaded(&self, loaded: Loaded) {
        let _ = self.loaded.set(loaded);
    }

    fn reset(&self, epoch: Epoch, floor: u64) {
        *self.hot.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(MemoryStore::with_epoch(self.limits, epoch));
        {
            let mut cold = self.cold();
            cold.segments.clear();
            cold.held = 0;
        }
        self.base.store(floor, Ordering::Release);
        self.floor.store(floor, Ordering::Release);
        self.epoch.store(raw(epoch), Ordering::Release);
    }
}

impl SharedLog for RedisStore {
    fn start(&self, hub: Sender<HubCmd>) -> io::Result<()> {
        let me = self.me.get().and_then(|w| w.upgrade()).ok_or_else(|| io::Error::other("store gone"))?;
        let writes = self.writes_rx.lock().unwrap_or_else(PoisonError::into_inner).take();
        let fetches = self.fetch_rx.lock().unwrap_or_else(PoisonError::into_inner).take();
        let (Some(writes), Some(fetches)) = (writes, fetches) else {
            return Err(io::Error::other("the Redis log is already started"));
        };
        let writer = Writer {
            link: Link::new(self.client.clone(), "writer", writer::WRITE_TIMEOUT),
            shared: Arc::clone(&self.shared),
            hub: hub.clone(),
        };
        std::thread::Builder::new().name("halley-redis-writer".into()).spawn(move || writer.run(writes))?;
        let tail = Tail {
            link: Link::new(self.client.clone(), "tail", tail::BLOCK + tail::READ_SLACK),
            store: Arc::clone(&me),
            hub,
        };
        std::thread::Builder::new().name("halley-redis-tail".into()).spawn(move || tail.run())?;
        let link = Link::new(self.client.clone(), "cold", writer::WRITE_TIMEOUT);
        std::thread::Builder::new()
            .name("halley-redis-cold".into())
            .spawn(move || tail::cold_reader(link, me, fetches))?;
        Ok(())
    }

    fn submit(&self, req: PublishReq) -> Result<(), &'static str> {
        if !self.shared.up.load(Ordering::Acquire) {
            return Err("cluster log unavailable: Redis unreachable");
        }
        self.writes.try_send(req).map_err(|_| "cluster log busy: publish queue full")
    }
}
