//! The hub: the one thread that sequences every publish, appends it to history and notifies the
//! workers that care. The messages and topics it handles are `crate::model`'s.
//!
//! Workers talk to the hub through one bounded `HubCmd` channel. The hub answers each worker
//! with batches of `WorkerMsg` on that worker's own bounded channel, waking its `mio::Poll`
//! through its `mio::Waker` once per batch.
//!
//! Forwarding is notification, not the data path: history is the source of truth. A worker that
//! gets `Deliver` (or `Wake`) re-reads history for the affected subscribers by their cursors, so
//! a dropped batch costs a wake-up, never a message. Workers declare interest when a topic or
//! pattern gains its first local subscriber and withdraw it when it loses its last; `seen_head`
//! closes the race between a worker's history read and the hub registering its interest.

mod fanout;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::model::{Epoch, Message, Selector};
use crate::store::{Loaded, Store};

/// Commands the hub takes from one wake-up before flushing batches to the workers.
pub const DRAIN_MAX: usize = 1024;
/// How often history is expired (`Store::expire`) and overdue acks are settled.
pub const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the hub waits on a full worker channel before dropping the batch.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a publish acknowledgement waits for workers' `Delivered` reports before it is sent
/// with the deliveries counted so far.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A message to publish.
#[derive(Debug)]
pub struct PublishReq {
    /// A valid topic name (`validate_topic`); the hub rejects others with an ack of seq 0.
    pub topic: Arc<str>,
    pub event: Option<Box<str>>,
    pub content_type: Option<Box<str>>,
    pub data: Bytes,
    /// Where to send the `PublishAck`; `None` for fire-and-forget.
    pub reply: Option<ReplyTo>,
    /// In cluster mode, the key under which the shared log remembers this publish, so that a
    /// retry (the client's, or the writer's own after a lost reply) is stored once. `None`:
    /// one is generated. Ignored by the in-memory store.
    pub idempotency_key: Option<Box<str>>,
}

/// Who is waiting for a publish acknowledgement: a connection on a worker.
#[derive(Clone, Copy, Debug)]
pub struct ReplyTo {
    pub worker: usize,
    /// The connection's key in that worker's slab (opaque to the hub).
    pub conn: usize,
    /// Opaque to the hub; lets the worker tell a reply for a reused slab key from a fresh one.
    pub tag: u64,
}

/// What workers send the hub.
#[derive(Debug)]
pub enum HubCmd {
    Publish(PublishReq),
    /// `selector` gained its first (`on`) or lost its last (`!on`) subscriber on `worker`.
    /// `seen_head` is the store head the worker's history read for that subscriber saw.
    Interest {
        worker: usize,
        selector: Selector,
        on: bool,
        seen_head: u64,
    },
    /// Answer to a `Deliver { report: true }`: `count` subscribers on `worker` got message `seq`.
    Delivered {
        worker: usize,
        seq: u64,
        count: usize,
    },
    /// The store fetched history for these selectors after a read of it was `pending`: wake
    /// the workers subscribed to them, to read again.
    Loaded(Vec<Selector>),
    /// Cluster mode, from the shared log's writer: the publish answered by `reply` is stored
    /// (with its global seq and time), or could not be stored (why).
    Logged {
        reply: ReplyTo,
        result: Result<(u64, u64), PublishRefused>,
    },
    /// Cluster mode, from the shared log's tail: messages in global order, for every node the
    /// same. The hub appends them to the local cache and forwards them.
    Tail(Vec<Arc<Message>>),
    /// Cluster mode: the shared log lost history (a Redis without its data, or one behind what
    /// this node has seen) and goes on under `epoch` with seqs above `floor`. Cursors below it
    /// get the gap reply.
    Rotate {
        epoch: Epoch,
        floor: u64,
    },
    Shutdown,
}

/// Cluster mode: where the hub sends publishes instead of sequencing them itself (the Redis
/// log's writer). The tail of the same log comes back as `HubCmd::Tail`.
pub trait SharedLog: Send + Sync + fmt::Debug + 'static {
    /// Called once by `spawn_with` with the hub's own channel: starts the threads that answer
    /// with `HubCmd::Logged`, `HubCmd::Tail` and `HubCmd::Rotate`.
    fn start(&self, hub: Sender<HubCmd>) -> io::Result<()>;
    /// Queues a validated publish for the log, without blocking. Refused, with a one-line
    /// reason, when the log is unreachable or its queue is full (the client gets 503).
    fn submit(&self, req: PublishReq) -> Result<(), &'static str>;
    /// Stops the threads `start` started and waits for them, at most `within` (a thread
    /// still in a blocking call then is left to end on its own, and logged).
    fn stop(&self, within: Duration);
    /// The link as `/metrics` shows it: whether publishes are taken now, and the last log
    /// sequence number this node's tail has read (compare it with other nodes', or with the
    /// log's own `HGET {halley}:meta seq`, for how far behind a node is).
    fn link(&self) -> LogLink;
}

/// What `SharedLog::link` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLink {
    /// The log can be written (publishes are taken).
    pub up: bool,
    /// The tail's last read of the log was answered (false after an error or a read timeout:
    /// a frozen or half-open Redis).
    pub tail_up: bool,
    /// The highest sequence number the tail has brought to this node.
    pub tail_seq: u64,
    /// Times the writer or the tail found its link down (an error, or no answer within the
    /// link's read timeout).
    pub downs: u64,
}

/// What the hub sends a worker (in batches).
#[derive(Debug)]
pub enum WorkerMsg {
    /// `msg` was appended to history on a topic this worker declared interest in. With
    /// `report`, answer `HubCmd::Delivered` with the number of subscribers it reached.
    Deliver { msg: Arc<Message>, report: bool },
    /// History may hold messages for `selector` that the worker has not read: re-read.
    Wake(Selector),
    /// Batches for this worker were dropped (its channel stayed full): re-read history for
    /// every subscriber, since some wake-ups were lost. History itself lost nothing.
    WakeAll,
    /// A publish from this worker is done: stored, or refused.
    PublishAck { reply: ReplyTo, outcome: Result<Published, PublishRefused> },
}

/// A stored publish: its sequence number and time, and how many subscribers it reached by the
/// time every interested worker reported (or the ack timeout passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub time_ms: u64,
    pub delivered: usize,
}

/// Why the hub refused a publish that a worker had accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefused {
    /// The topic is not valid (workers validate first; this guards the store against a bug).
    InvalidTopic,
    /// Cluster mode: the shared log could not store it (the one-line reason); retry later.
    Unavailable(&'static str),
    /// Cluster mode: its idempotency key already names a different publish (another topic or
    /// payload); retrying will not help (the one-line reason).
    Conflict(&'static str),
}

/// How the hub reaches one worker: a bounded channel of batches plus the worker's mio Waker.
#[derive(Debug)]
pub struct WorkerLink {
    pub tx: Sender<Vec<WorkerMsg>>,
    pub waker: Arc<mio::Waker>,
}

/// Counters kept by the hub thread (Relaxed atomics, for metrics).
#[derive(Debug, Default)]
pub struct HubStats {
    /// Messages appended to history.
    pub published: AtomicU64,
    /// `Deliver`s queued to workers.
    pub forwarded: AtomicU64,
    /// Batches dropped because a worker's channel stayed full or was closed.
    pub dropped_batches: AtomicU64,
    /// Publishes refused for an invalid topic.
    pub rejected: AtomicU64,
    /// Selectors some worker is registered on (gauge; exact topics and patterns).
    pub interest: AtomicU64,
    /// How many of those are patterns (gauge).
    pub interest_patterns: AtomicU64,
}

impl HubStats {
    /// A JSON snapshot for `/stats`.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "published": self.published.load(Ordering::Relaxed),
            "forwarded": self.forwarded.load(Ordering::Relaxed),
            "dropped_batches": self.dropped_batches.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
            "interest": self.interest.load(Ordering::Relaxed),
            "interest_patterns": self.interest_patterns.load(Ordering::Relaxed),
        })
    }
}

/// The running hub.
#[derive(Debug)]
pub struct HubHandle {
    pub tx: Sender<HubCmd>,
    pub join: JoinHandle<()>,
    pub stats: Arc<HubStats>,
}

impl HubHandle {
    /// Asks the hub to stop and waits for it. Commands queued before the request are processed.
    pub fn shutdown(self) -> thread::Result<()> {
        // If the hub already exited the send fails; joining still reports how it ended.
        let _ = self.tx.send(HubCmd::Shutdown);
        self.join.join()
    }
}

/// The current time in unix milliseconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Hub tuning; `Default` gives the documented constants and the system clock.
#[derive(Clone)]
pub struct HubOptions {
    /// Capacity of the command channel, in commands (at least 1).
    pub cmd_capacity: usize,
    pub expire_interval: Duration,
    pub send_timeout: Duration,
    pub ack_timeout: Duration,
    /// Where the hub reads the time for message timestamps and expiry.
    pub clock: Clock,
    /// Cluster mode: the shared log that sequences publishes (`None`: the hub does).
    pub log: Option<Arc<dyn SharedLog>>,
}

impl Default for HubOptions {
    fn default() -> HubOptions {
        HubOptions {
            cmd_capacity: 65_536,
            expire_interval: EXPIRE_INTERVAL,
            send_timeout: SEND_TIMEOUT,
            ack_timeout: ACK_TIMEOUT,
            clock: Arc::new(system_clock_ms),
            log: None,
        }
    }
}

impl fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("cmd_capacity", &self.cmd_capacity)
            .field("expire_interval", &self.expire_interval)
            .field("send_timeout", &self.send_timeout)
            .field("ack_timeout", &self.ack_timeout)
            .field("cluster", &self.log.is_some())
            .finish_non_exhaustive()
    }
}

/// Starts the hub thread with default options and a command channel of `cmd_capacity`.
/// `links[i]` is worker `i`.
pub fn spawn(store: Arc<dyn Store>, links: Vec<WorkerLink>, cmd_capacity: usize) -> io::Result<HubHandle> {
    spawn_with(store, links, HubOptions { cmd_capacity, ..HubOptions::default() })
}

/// Starts the hub thread with explicit options.
pub fn spawn_with(store: Arc<dyn Store>, links: Vec<WorkerLink>, options: HubOptions) -> io::Result<HubHandle> {
    let (tx, rx) = crossbeam_channel::bounded(options.cmd_capacity.max(1));
    // A backend's fetch thread may wait for room in the channel: it is not an event loop.
    let loaded = tx.clone();
    store.on_loaded(Loaded::new(move |selectors| {
        let _ = loaded.send(HubCmd::Loaded(selectors));
    }));
    if let Some(log) = &options.log {
        log.start(tx.clone())?;
    }
    let stats = Arc::new(HubStats::default());
    let hub = fanout::Hub::new(store, links, options, stats.clone());
    let join = thread::Builder::new().name("halley-hub".into()).spawn(move || hub.run(rx))?;
    Ok(HubHandle { tx, join, stats })
}

/// Unix time in milliseconds; 0 if the clock is before 1970.
pub fn system_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
