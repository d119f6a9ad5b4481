//! Cluster mode: Pushlet and Bayeux sessions kept in Redis, so that a session outlives the
//! node that served it (docs/CLUSTER.md "Sessions").
//!
//! One thread owns one Redis connection and does every session write and lookup; a worker
//! never waits on Redis. Workers send `SessionOp`s on a bounded channel with `try_send` (a
//! full channel drops a `Put`, and the session's next answered round writes again); lookups
//! have their own smaller channel, so that a flood of them cannot crowd writes out; a lookup
//! carries a callback that the thread calls with the answer, which sends the parked
//! connection back to its worker's inbox.
//!
//! Keys, per session id (the id is a 128-bit CSPRNG capability; the node that serves it is
//! in the owner key, not in the id):
//! - `{halley}:sess:<id>`: the session's record (JSON, the worker's business), `PX` its lease;
//! - `{halley}:owner:<id>`: the node id serving it, `PX` the same lease;
//! - `{halley}:node:<node>`: the node's heartbeat, `PX` `NODE_TTL`, renewed every
//!   `NODE_BEAT` while the node runs. A node that died (`kill -9`) stops renewing it, and
//!   its sessions become adoptable `NODE_TTL` later, long before their own leases end. A
//!   graceful stop (`RedisSessions::stop`) writes what is queued and deletes it: adoptable
//!   at once.
//!
//! Adoption is one script: the owner key names a node whose heartbeat is alive (and which is
//! not this one): "alive"; there is no record: "gone"; else this node takes the owner key and
//! the record is returned. A write is one script too, refused when another live node owns the
//! session (this node was taken for dead and its sessions adopted).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use redis::{RedisError, RedisResult};

use super::link::Link;

/// Operations queued at most; a full queue drops a write (the next round writes again) and
/// answers a lookup with `Lookup::Unavailable`.
const QUEUE: usize = 8 * 1024;
/// How often the node renews its heartbeat.
pub const NODE_BEAT: Duration = Duration::from_millis(1000);
/// How long a heartbeat lives: a node silent this long is taken for dead.
pub const NODE_TTL: Duration = Duration::from_millis(3000);
/// Lookups queued at most, on their own channel so that a flood of them cannot crowd out
/// record writes; a full one answers `Lookup::Unavailable` at once.
const LOOKUP_QUEUE: usize = 256;
/// A lookup older than this is answered `Unavailable` without asking Redis: its client has
/// waited long enough, and answering stale lookups first would only make the queue longer.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);
/// Read and write timeout of the session link.
const TIMEOUT: Duration = Duration::from_secs(1);

/// KEYS: owner, record. ARGV: node id, node key prefix.
const ADOPT: &str = r#"
local o = redis.call('GET', KEYS[1])
if o and o ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. o) == 1 then return {'alive', o} end
local r = redis.call('GET', KEYS[2])
if not r then return {'gone', ''} end
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 1 then ttl = 1000 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
return {'adopted', r}
"#;

/// KEYS: owner, record. ARGV: node id, node key prefix, record, ttl ms.
const PUT: &str = r#"
local o = redis.call('GET', KEYS[1])
if o and o ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. o) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
"#;

/// KEYS: owner, record. ARGV: node id.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// KEYS: owner, record. ARGV: node id.
const DEL: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end
return 1
"#;

const NODE_PREFIX: &str = "{halley}:node:";

fn owner_key(id: &str) -> String {
    format!("{{halley}}:owner:{id}")
}

fn record_key(id: &str) -> String {
    format!("{{halley}}:sess:{id}")
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The owner's lease had lapsed (or it was this node): this node owns it now; the record.
    Adopted(String),
    /// Another node serves it and is alive.
    Alive,
    /// No such session (never was, ended, or its lease ran out).
    Gone,
    /// Redis could not be asked (unreachable, or the queue was full).
    Unavailable,
}

/// Called on the session thread with a lookup's answer.
pub type LookupReply = Box<dyn FnOnce(Lookup) + Send>;

/// One request to the session thread.
pub enum SessionOp {
    /// Write a session's record and take (or keep) its owner key, both for `ttl`.
    Put { id: Box<str>, record: String, ttl: Duration },
    /// The session ended here: delete it, if this node still owns it.
    Del { id: Box<str> },
    /// This node took the owner key in a lookup but does not serve the session: give the
    /// key up (if still this node's), keeping the record for another node.
    Release { id: Box<str> },
    /// A request for a session this node does not hold: adopt it if its owner is gone.
    /// `at`: when it was parked (see `LOOKUP_DEADLINE`).
    Lookup { id: Box<str>, at: Instant, reply: LookupReply },
}

impl std::fmt::Debug for SessionOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionOp::Put { id, ttl, .. } => f.debug_struct("Put").field("id", id).field("ttl", ttl).finish(),
            SessionOp::Del { id } => f.debug_struct("Del").field("id", id).finish(),
            SessionOp::Release { id } => f.debug_struct("Release").field("id", id).finish(),
            SessionOp::Lookup { id, .. } => f.debug_struct("Lookup").field("id", id).finish(),
        }
    }
}

/// The worker's handle on the session thread.
#[derive(Debug)]
pub struct RedisSessions {
    node: Box<str>,
    tx: Sender<SessionOp>,
    lookups: Sender<SessionOp>,
    /// Sending on it (or dropping it) stops the thread: it writes what is queued, deletes
    /// the node's heartbeat, and drops `done`.
    stop: Mutex<Option<Sender<()>>>,
    /// Disconnected once the thread has finished.
    done: Receiver<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RedisSessions {
    /// Starts the session thread on `url`, under a fresh random node id.
    pub fn start(url: &str) -> std::io::Result<Arc<RedisSessions>> {
        let client = redis::Client::open(url)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
        let node: Box<str> = random.iter().map(|b| format!("{b:02x}")).collect::<String>().into();
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let (lookups, lookup_rx) = crossbeam_channel::bounded(LOOKUP_QUEUE);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let thread = SessionThread {
            link: Link::new(client, "sessions", TIMEOUT),
            node: node.clone(),
            next_beat: Instant::now(),
            down_until: None,
        };
        let handle = std::thread::Builder::new().name("halley-redis-sessions".into()).spawn(move || {
            thread.run(rx, lookup_rx, stop_rx);
            drop(done_tx);
        })?;
        log::info!("cluster mode: sessions in Redis, node id {node}");
        Ok(Arc::new(RedisSessions {
            node,
            tx,
            lookups,
            stop: Mutex::new(Some(stop_tx)),
            done,
            thread: Mutex::new(Some(handle)),
        }))
    }

    /// Graceful stop, once the workers are gone: the thread writes every queued record,
    /// deletes this node's heartbeat (so its sessions are adoptable at once, not `NODE_TTL`
    /// later), and ends. Waits for it at most `wait` (Redis may not answer).
    pub fn stop(&self, wait: Duration) {
        let stop = self.stop.lock().map(|mut s| s.take()).unwrap_or(None);
        if let Some(stop) = stop {
            let _ = stop.try_send(());
        }
        match self.done.recv_timeout(wait) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                log::warn!("redis sessions: not stopped within {wait:?}; queued records may be lost");
            }
            _ => {
                if let Some(handle) = self.thread.lock().ok().and_then(|mut t| t.take()) {
                    let _ = handle.join();
                }
            }
        }
    }

    /// This node's id, as its owner keys and heartbeat name it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Queues `op` without waiting. A refused lookup is answered `Unavailable` at once.
    pub fn send(&self, op: SessionOp) {
        let queue = if matches!(op, SessionOp::Lookup { .. }) { &self.lookups } else { &self.tx };
        match queue.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(op) | TrySendError::Disconnected(op)) => match op {
                SessionOp::Lookup { reply, .. } => reply(Lookup::Unavailable),
                other => log::debug!("redis sessions: queue full, dropped {other:?}"),
            },
        }
    }
}

struct SessionThread {
    link: Link,
    node: Box<str>,
    next_beat: Instant,
    /// After a failure, until when the link backs off: lookups meanwhile are answered
    /// `Unavailable` at once instead of each waiting out a connect timeout.
    down_until: Option<Instant>,
}

impl SessionThread {
    /// Serves `rx` and beats until `stop` fires or is dropped; then drains.
    fn run(mut self, rx: Receiver<SessionOp>, lookups: Receiver<SessionOp>, stop: Receiver<()>) {
        loop {
            if Instant::now() >= self.next_beat {
                self.beat();
            }
            let wait = self.next_beat.saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(rx) -> op => match op {
                    Ok(op) => self.run_op(op),
                    Err(_) => return,
                },
                recv(lookups) -> op => match op {
                    Ok(op) => self.run_op(op),
                    Err(_) => return,
                },
                recv(stop) -> _ => break,
                default(wait) => {}
            }
        }
        while let Ok(SessionOp::Lookup { reply, .. }) = lookups.try_recv() {
            reply(Lookup::Unavailable);
        }
        self.drain(&rx);
    }

    /// The node is stopping: the queued writes go out (the workers answered their last
    /// rounds and saved the cursors before they ended), then the heartbeat is deleted, so
    /// other nodes adopt this node's sessions at their next request.
    fn drain(&mut self, rx: &Receiver<SessionOp>) {
        loop {
            match rx.try_recv() {
                Ok(SessionOp::Lookup { reply, .. }) => reply(Lookup::Unavailable),
                Ok(op) => self.run_op(op),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let key = format!("{NODE_PREFIX}{}", self.node);
        match self.link.conn().and_then(|c| redis::cmd("DEL").arg(&key).query::<()>(c)) {
            Ok(()) => log::info!("redis sessions: node {} left; its sessions are adoptable", self.node),
            Err(err) => log::warn!("redis sessions: deleting the heartbeat: {err}"),
        }
    }

    /// Renews the heartbeat; on failure it is retried with the link's backoff (at most one
    /// beat interval), and the node's sessions stay served meanwhile.
    fn beat(&mut self) {
        let ttl = u64::try_from(NODE_TTL.as_millis()).unwrap_or(3000);
        let key = format!("{NODE_PREFIX}{}", self.node);
        let result =
            self.link.conn().and_then(|c| redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(ttl).query::<()>(c));
        match result {
            Ok(()) => {
                self.link.succeeded();
                self.down_until = None;
                self.next_beat = Instant::now() + NODE_BEAT;
            }
            Err(err) => {
                self.link.failed(&err);
                let backoff = self.link.backoff();
                self.down_until = Some(Instant::now() + backoff);
                self.next_beat = Instant::now() + backoff.min(NODE_BEAT);
            }
        }
    }

    fn run_op(&mut self, op: SessionOp) {
        match op {
            SessionOp::Put { id, record, ttl } => {
                let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                let result: RedisResult<i64> = self.script(PUT, &id, &[&record, &ttl.to_string()]);
                match result {
                    Ok(0) => {
                        log::info!("session {}: owned by another live node; not written", id.get(..8).unwrap_or(&id))
                    }
                    Ok(_) => {}
                    Err(err) => log::debug!("redis sessions: write: {err}"),
                }
            }
            SessionOp::Del { id } => {
                if let Err(err) = self.script::<i64>(DEL, &id, &[]) {
                    log::debug!("redis sessions: delete: {err}");
                }
            }
            SessionOp::Release { id } => {
                if let Err(err) = self.script::<i64>(RELEASE, &id, &[]) {
                    log::debug!("redis sessions: release: {err}");
                }
            }
            SessionOp::Lookup { at, reply, .. } if self.unanswerable(at) => reply(Lookup::Unavailable),
            SessionOp::Lookup { id, reply, .. } => {
                let answer = match self.script::<(String, String)>(ADOPT, &id, &[]) {
                    Ok((kind, record)) => match kind.as_str() {
                        "adopted" => Lookup::Adopted(record),
                        "alive" => Lookup::Alive,
                        _ => Lookup::Gone,
                    },
                    Err(err) => {
                        log::debug!("redis sessions: lookup: {err}");
                        Lookup::Unavailable
                    }
                };
                reply(answer);
            }
        }
    }

    /// Whether a lookup parked at `at` is answered `Unavailable` without asking Redis: it is
    /// past `LOOKUP_DEADLINE`, or the link is backing off after a failure.
    fn unanswerable(&self, at: Instant) -> bool {
        let now = Instant::now();
        now.saturating_duration_since(at) > LOOKUP_DEADLINE || self.down_until.is_some_and(|until| now < until)
    }

    /// Runs one of the scripts on `id`'s keys (`EVAL`: these are small and rare enough that
    /// caching their SHAs is not worth a `NOSCRIPT` path), with the node id and the node key
    /// prefix first among the arguments. One retry on a fresh connection after an I/O error.
    fn script<T: redis::FromRedisValue>(&mut self, body: &str, id: &str, extra: &[&str]) -> RedisResult<T> {
        let mut last: Option<RedisError> = None;
        for _ in 0..2 {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(body).arg(2).arg(owner_key(id)).arg(record_key(id)).arg(&*self.node).arg(NODE_PREFIX);
            for arg in extra {
                cmd.arg(*arg);
            }
            let result = self.link.conn().and_then(|c| cmd.query::<T>(c));
            match result {
                Ok(value) => {
                    self.link.succeeded();
                    self.down_until = None;
                    return Ok(value);
                }
                Err(err) => {
                    self.link.failed(&err);
                    if !err.is_io_error() && !err.is_timeout() && !err.is_connection_dropped() {
                        // Redis answered (a script error): the link is fine.
                        return Err(err);
                    }
                    self.down_until = Some(Instant::now() + self.link.backoff());
                    let retry = err.is_io_error() || err.is_connection_dropped();
                    last = Some(err);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from(std::io::Error::other("no attempt"))))
    }
}
