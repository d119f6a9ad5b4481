//! Cluster mode: history in one Redis stream shared by every node (`--redis`), with the
//! node's memory as a cache. See docs/CLUSTER.md for the design and its failure modes.
//!
//! `RedisStore` is the `Store` workers read and the `SharedLog` the hub publishes through.
//! Three threads work around the hub, none blocking a worker or the hub:
//! - the writer (`writer.rs`) runs the publish script for the hub's publishes, pipelined;
//! - the tail (`tail.rs`) follows the log and hands every message to the hub, which appends it
//!   to the hot cache (a `MemoryStore`) and forwards it, so every node has one order;
//! - the cold reader (`tail.rs`) fetches history older than the hot cache into a bounded cold
//!   cache (bounded in messages, bytes and age) when a read needs it, answering that read
//!   `pending` meanwhile.
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
use std::time::{Duration, Instant};

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
/// The threads a started store runs: writer, tail, cold reader.
const THREADS: usize = 3;
/// Messages the cold cache holds at most (oldest segments dropped first); its bytes are bound
/// by `--history-total-bytes` as well, and its messages by `--history-max-age`.
const COLD_MAX: usize = 64 * 1024;

/// What the store's threads share.
#[derive(Debug)]
pub(super) struct Shared {
    /// The writer can reach Redis: publishes are taken.
    up: AtomicBool,
    /// The tail's last read was answered.
    tail_up: AtomicBool,
    /// Times the writer or the tail found its link down (`LogLink::downs`).
    downs: AtomicU64,
    /// The log's epoch as the tail last saw it.
    epoch: AtomicU64,
    /// The highest seq the tail has brought (the floor the publish script guards).
    seen: AtomicU64,
    /// The log's approximate length bound (`XADD MAXLEN ~`).
    maxlen: usize,
    /// The server is stopping: the threads return.
    stopping: AtomicBool,
    /// The Redis client id of the tail's connection (0: none yet), so that a stop can end its
    /// blocking `XREAD` at once (`CLIENT UNBLOCK`).
    tail_client: AtomicU64,
}

impl Shared {
    fn epoch_text(&self) -> String {
        Epoch::truncated(self.epoch.load(Ordering::Acquire)).to_string()
    }

    fn set_epoch(&self, epoch: Epoch) {
        self.epoch.store(epoch.raw(), Ordering::Release);
    }

    /// The writer's link failed: publishes are refused until a probe answers.
    fn writer_down(&self) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.downs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The tail's read failed or timed out (`up` false), or was answered (`up` true).
    fn tail_link(&self, up: bool) {
        let was = self.tail_up.swap(up, Ordering::AcqRel);
        if was && !up {
            self.downs.fetch_add(1, Ordering::Relaxed);
        }
    }
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
    /// Messages held, and their bytes counted as the hot cache counts them
    /// (`Message::byte_cost`).
    held: usize,
    held_bytes: usize,
    /// Cursors with a fetch under way, and the selectors waiting for each.
    inflight: HashSet<u64>,
    waiting: Vec<Selector>,
}

impl Cold {
    /// Keeps a fetched segment, then drops the oldest ones until the cache is within
    /// `COLD_MAX` messages and `max_bytes` (the newest, which its readers wait for, stays; it is
    /// one page, `tail::COUNT` messages at most).
    fn keep(&mut self, segment: Segment, max_bytes: usize) {
        self.held += segment.msgs.len();
        self.held_bytes += segment.msgs.iter().map(|m| m.byte_cost()).sum::<usize>();
        self.segments.push_back(segment);
        while (self.held > COLD_MAX || self.held_bytes > max_bytes) && self.segments.len() > 1 {
            self.drop_oldest();
        }
    }

    /// Drops the segments whose newest message is older than `cutoff_ms` (their history has
    /// aged out, as the hot cache's does).
    fn expire(&mut self, cutoff_ms: u64) {
        while self.segments.front().is_some_and(|s| s.msgs.last().is_some_and(|m| m.time_ms < cutoff_ms)) {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(old) = self.segments.pop_front() {
            self.held -= old.msgs.len();
            self.held_bytes -= old.msgs.iter().map(|m| m.byte_cost()).sum::<usize>();
        }
    }

    fn clear(&mut self) {
        self.segments.clear();
        self.held = 0;
        self.held_bytes = 0;
    }
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
    /// Dropped to stop the threads: their waits select on `stop_rx`, which then disconnects.
    stop: Mutex<Option<Sender<()>>>,
    stop_rx: crossbeam_channel::Receiver<()>,
    /// The threads, and the channel each reports on as it ends (so a stop waits with a bound).
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    ended: (Sender<()>, crossbeam_channel::Receiver<()>),
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
            tail_up: AtomicBool::new(true),
            downs: AtomicU64::new(0),
            epoch: AtomicU64::new(epoch.raw()),
            seen: AtomicU64::new(seq),
            maxlen: limits.total_messages,
            stopping: AtomicBool::new(false),
            tail_client: AtomicU64::new(0),
        });
        let (stop, stop_rx) = crossbeam_channel::bounded(0);
        let store = Arc::new(RedisStore {
            limits,
            epoch: AtomicU64::new(epoch.raw()),
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
            stop: Mutex::new(Some(stop)),
            stop_rx,
            threads: Mutex::new(Vec::new()),
            ended: crossbeam_channel::bounded(THREADS),
        });
        let _ = store.me.set(Arc::downgrade(&store));
        log::info!("cluster mode: log on {url}, epoch {epoch}, at seq {seq}");
        Ok(store)
    }

    /// Starts one of the store's threads; it reports on `ended` as it ends, however it ends.
    fn spawn(&self, name: &str, body: impl FnOnce() + Send + 'static) -> io::Result<std::thread::JoinHandle<()>> {
        struct Ended(Sender<()>);
        impl Drop for Ended {
            fn drop(&mut self) {
                let _ = self.0.try_send(());
            }
        }
        let ended = Ended(self.ended.0.clone());
        std::thread::Builder::new().name(name.into()).spawn(move || {
            let _ended = ended;
            body();
        })
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
            cold.keep(segment, self.limits.total_bytes);
            std::mem::take(&mut cold.waiting)
        };
        if let Some(loaded) = self.loaded.get() {
            loaded.loaded(waiting);
        }
    }

    /// `--history-max-age` in milliseconds: older messages are not served from the cold cache
    /// either (a read from before them gets the gap, as on a single node).
    fn max_age_ms(&self) -> u64 {
        u64::try_from(self.limits.max_age.as_millis()).unwrap_or(u64::MAX)
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
        self.cold().expire(now_ms.saturating_sub(self.max_age_ms()));
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
        self.cold().clear();
        self.base.store(floor, Ordering::Release);
        self.floor.store(floor, Ordering::Release);
        self.epoch.store(epoch.raw(), Ordering::Release);
    }
}

impl SharedLog for RedisStore {
    fn link(&self) -> crate::hub::LogLink {
        crate::hub::LogLink {
            up: self.shared.up.load(Ordering::Acquire),
            tail_up: self.shared.tail_up.load(Ordering::Acquire),
            tail_seq: self.shared.seen.load(Ordering::Acquire),
            downs: self.shared.downs.load(Ordering::Relaxed),
        }
    }

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
            stop: self.stop_rx.clone(),
        };
        let tail = Tail {
            link: Link::new(self.client.clone(), "tail", tail::BLOCK + tail::READ_SLACK),
            store: Arc::clone(&me),
            hub,
            stop: self.stop_rx.clone(),
        };
        let link = Link::new(self.client.clone(), "cold", writer::WRITE_TIMEOUT);
        let stop = self.stop_rx.clone();
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        threads.push(self.spawn("halley-redis-writer", move || writer.run(writes))?);
        threads.push(self.spawn("halley-redis-tail", move || tail.run())?);
        threads.push(self.spawn("halley-redis-cold", move || tail::cold_reader(link, me, fetches, stop))?);
        Ok(())
    }

    fn stop(&self, within: Duration) {
        let deadline = Instant::now() + within;
        self.shared.stopping.store(true, Ordering::Release);
        // Every wait on the stop channel ends now.
        drop(self.stop.lock().unwrap_or_else(PoisonError::into_inner).take());
        // The tail may be in `XREAD BLOCK`: end it now rather than at its block time.
        let id = self.shared.tail_client.load(Ordering::Acquire);
        if id != 0 {
            let mut link = Link::new(self.client.clone(), "stop", Duration::from_millis(200));
            let unblocked = link.conn().and_then(|c| redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query::<i64>(c));
            if let Err(err) = unblocked {
                log::debug!("redis: could not unblock the tail ({err}); it ends after its block");
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for _ in 0..threads.len() {
            if self.ended.1.recv_deadline(deadline).is_err() {
                log::warn!("redis: a cluster thread did not stop within {within:?}; leaving it");
                return;
            }
        }
        for thread in threads {
            let _ = thread.join();
        }
    }

    fn submit(&self, req: PublishReq) -> Result<(), &'static str> {
        if !self.shared.up.load(Ordering::Acquire) {
            return Err("cluster log unavailable: Redis unreachable");
        }
        self.writes.try_send(req).map_err(|_| "cluster log busy: publish queue full")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn segment(start: u64, n: u64, size: usize, time_ms: u64) -> Segment {
        let msgs = (start + 1..=start + n)
            .map(|seq| Arc::new(Message::new(seq, "/t".into(), time_ms, Bytes::from(vec![b'x'; size]))))
            .collect();
        Segment { start, end: start + n, lost_through: None, msgs }
    }

    #[test]
    fn the_cold_cache_drops_its_oldest_segments_past_the_byte_bound() {
        let mut cold = Cold::default();
        let bound = 100_000;
        for i in 0..10 {
            cold.keep(segment(i * 10, 10, 4_000, 0), bound);
            assert!(cold.held_bytes <= bound || cold.segments.len() == 1, "{} bytes held", cold.held_bytes);
        }
        // Each segment (10 payloads of 4 kB, counted three times) is over the bound alone: only
        // the newest stays.
        assert_eq!(cold.segments.len(), 1);
        assert_eq!(cold.segments[0].start, 90);
        let small = segment(100, 10, 10, 0);
        let small_cost: usize = small.msgs.iter().map(|m| m.byte_cost()).sum();
        cold.keep(small, bound);
        assert_eq!(cold.segments.len(), 1, "the big one went");
        assert_eq!((cold.held, cold.held_bytes), (10, small_cost));
    }

    #[test]
    fn the_cold_cache_expires_segments_older_than_max_age() {
        let mut cold = Cold::default();
        cold.keep(segment(0, 5, 10, 1_000), usize::MAX);
        cold.keep(segment(5, 5, 10, 5_000), usize::MAX);
        cold.expire(2_000);
        assert_eq!(cold.segments.len(), 1);
        assert_eq!(cold.segments[0].start, 5);
        assert_eq!(cold.held, 5);
        cold.expire(6_000);
        assert_eq!((cold.segments.len(), cold.held, cold.held_bytes), (0, 0, 0));
    }
}
