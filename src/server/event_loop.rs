//! The worker's event loop: one thread pinned to one core, one `mio::Poll`, one `SO_REUSEPORT`
//! listener, and the connections it accepted (`Conns`). The poll, its reserved tokens,
//! accepting, the inboxes from the hub and from other workers, timers and freeing closed slots
//! are here. Everything the handlers work with is `Core` (`core.rs`); the connection table
//! registers sockets with the poll (`Conns::add`, for accepted and adopted sockets) and
//! deregisters them (`Conns::close`, and a hand-off) through its own handle on the registry.
//!
//! One turn of the loop, in order (`Worker::run`):
//! 0. at the top: start a graceful shutdown when asked; leave once every connection is gone or
//!    the shutdown deadline has passed;
//! 1. poll for readiness, with the next deadline as the timeout (zero while inboxes hold work
//!    a bounded drain left behind);
//! 2. refresh the cached `Date` header value;
//! 3. for each event: accept on a listener token, or `pump` the connection (`io.rs`); then
//!    continue, once each, the connections a bounded pump set aside (`continue_deferred`);
//! 4. adopt connections handed over by other workers (`sessions/handoff.rs`);
//! 5. drain the hub's batches: acknowledgements (`publish::acked`), then wake the subscribers of
//!    every topic that got a message (`subscriber::on_wake`), then report deliveries for acks;
//! 6. retry hub messages that found its channel full (`publish.rs`, `HubLink::flush`);
//! 7. fire expired timers: request timeouts, long-poll holds, heartbeats, session leases;
//! 8. housekeeping every 250 ms (interest linger, paused accept, summaries of rate-limited log
//!    lines);
//! 9. free the slots of connections closed during this turn.
//!
//! Tokens: `WAKER`, `LISTENER`, `RAW_LISTENER` and `ADMIN_LISTENER` are reserved; a
//! connection's token is its slab key plus `FIRST_CONN`. A closed connection's slot is freed only after the current event
//! batch (step 9), so a stale event for it cannot reach a new connection that reused the key.

use std::io;
use std::mem;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use log::{debug, error, warn, Level};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustc_hash::FxHashSet;

use super::conn::{Conn, Phase, Socket};
use super::conns::Conns;
use super::core::Core;
use super::io::{close, pump};
use super::sessions::{self, handoff};
use super::stats::WorkerStats;
use super::subs::InterestChange;
use super::subscriber;
use super::{duplex, publish, Handoff, Shared};
use crate::http::{Reject, Version};
use crate::hub::{HubCmd, WorkerMsg};
use crate::log_limit::{self, LogLimit};

pub(crate) const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const RAW_LISTENER: Token = Token(2);
/// The admin listener (`--admin-listen`), on worker 0 only.
const ADMIN_LISTENER: Token = Token(3);
pub(super) const FIRST_CONN: usize = 4;

/// Housekeeping period (interest linger sweep, paused-accept retry).
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// Batches taken from the hub's channel per loop turn.
pub(super) const MAX_BATCHES_PER_TURN: usize = 64;
/// Consecutive accept errors tolerated in one readiness round before backing off.
const ACCEPT_ERROR_BURST: u32 = 64;

/// Accepting paused: at the limit, every connect attempt and every freed slot can pause again.
static ACCEPT_PAUSED: LogLimit = LogLimit::new(Level::Warn, module_path!(), "pausing accept");
/// Registering an accepted socket failed (the poll is out of memory): once per connect.
static REGISTER_FAILED: LogLimit = LogLimit::new(Level::Warn, module_path!(), "register");

/// One worker: the event loop and what it drives. The loop's own parts (the poll, the
/// listeners, the inboxes) are here; the connections and everything the handlers work with
/// are `core` (`core.rs`).
pub(crate) struct Worker {
    poll: Poll,
    listener: Option<TcpListener>,
    /// The optional raw TCP listener (`--raw-listen`).
    raw_listener: Option<TcpListener>,
    /// The admin listener (`--admin-listen`), worker 0's alone. Unlike the others it stays
    /// open while draining, so a load balancer keeps reading `/ready` (503) until the end.
    admin_listener: Option<TcpListener>,
    /// Accepting stopped at the connection limit or on EMFILE; retried by housekeeping and
    /// whenever one of our connections closes.
    accept_paused: bool,
    rx: Receiver<Vec<WorkerMsg>>,
    /// Connections other workers hand over (`handoff.rs`), drained on the same wake-up as `rx`.
    handoffs: Receiver<Box<Handoff>>,
    scratch_keys: Vec<usize>,
    scratch_timers: Vec<Timer>,
    scratch_topics: FxHashSet<Arc<str>>,
    next_housekeeping: Instant,
    core: Core,
}

impl Worker {
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        poll: Poll,
        listeners: Listeners,
        rx: Receiver<Vec<WorkerMsg>>,
        handoffs: Receiver<Box<Handoff>>,
    ) -> io::Result<Worker> {
        let Listeners { http: mut listener, raw: mut raw_listener, admin: mut admin_listener } = listeners;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        if let Some(raw) = raw_listener.as_mut() {
            poll.registry().register(raw, RAW_LISTENER, Interest::READABLE)?;
        }
        if let Some(admin) = admin_listener.as_mut() {
            poll.registry().register(admin, ADMIN_LISTENER, Interest::READABLE)?;
        }
        let now = Instant::now();
        let conns = Conns::new(Arc::clone(&shared), poll.registry().try_clone()?, now);
        Ok(Worker {
            poll,
            listener: Some(listener),
            raw_listener,
            admin_listener,
            accept_paused: false,
            rx,
            handoffs,
            scratch_keys: Vec::new(),
            scratch_timers: Vec::new(),
            scratch_topics: FxHashSet::default(),
            next_housekeeping: now + HOUSEKEEPING,
            core: Core::new(id, shared, conns),
        })
    }

    /// The event loop. Returns when shutdown is complete.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        self.core.conns.date.update(SystemTime::now());
        loop {
            let now = Instant::now();
            if !self.core.conns.is_shutting_down() && self.core.shared.shutdown.load(SeqCst) {
                self.begin_shutdown(now);
            }
            if let Some(deadline) = self.core.conns.shutdown_deadline() {
                if (self.core.conns.is_empty() && !self.admin_waits()) || now >= deadline {
                    break;
                }
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("worker {}: poll failed: {e}", self.core.id);
                break;
            }
            self.core.conns.date.update(SystemTime::now());
            self.core.conns.refresh_access();
            for event in events.iter() {
                match event.token() {
                    WAKER => {} // the hub's channel and the hand-offs are drained below on every turn
                    LISTENER | RAW_LISTENER | ADMIN_LISTENER => self.accept(),
                    Token(t) => {
                        let key = t - FIRST_CONN;
                        if let Some(conn) = self.core.conns.get_mut(key) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                conn.readable = true;
                            }
                            if event.is_writable() || event.is_write_closed() || event.is_error() {
                                conn.writable = true;
                            }
                            pump(&mut self.core, key);
                        }
                    }
                }
            }
            self.continue_deferred();
            self.drain_handoffs();
            self.drain_hub();
            self.core.hub.flush();
            self.fire_timers();
            let now = Instant::now();
            if now >= self.next_housekeeping {
                self.housekeeping(now);
            }
            self.free_closed();
        }
        // The worker with the admin listener waits for the others (`admin_waits`): tell it.
        if let Some(first) = self.core.shared.peers.first() {
            let _ = first.waker.wake();
        }
        let remaining = self.core.conns.len();
        if remaining > 0 {
            warn!("worker {}: shutdown deadline passed with {remaining} connections open; closing them", self.core.id);
        }
        for (_, conn) in self.core.conns.iter_mut() {
            let _ = self.poll.registry().deregister(&mut conn.sock);
        }
        WorkerStats::sub(&self.core.stats().connections, remaining as u64);
        // Admin connections hold no `--max-connections` slot (`Conns::reserve_slot`).
        let slots = self.core.conns.iter().filter(|(_, conn)| !conn.admin).count();
        self.core.shared.connections.fetch_sub(slots, Relaxed);
        // Every connection closed through `io::close`, which retires its subscriber: a
        // subscriber gauge left above zero is an enlist without its retire.
        debug_assert!(
            remaining > 0 || self.core.stats().no_subscribers(),
            "worker {}: subscriber gauges not back to zero: {}",
            self.core.id,
            self.core.stats().snapshot()
        );
    }

    /// While draining, the worker that serves the admin listener stays until every other
    /// worker's connections are gone, so `/ready` answers 503 for the whole drain.
    fn admin_waits(&self) -> bool {
        self.admin_listener.is_some() && self.core.shared.connections.load(Acquire) > 0
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if !self.rx.is_empty() || !self.handoffs.is_empty() || self.core.conns.has_deferred() {
            // Batches or hand-offs left over from a bounded drain, or connections a bounded
            // pump set aside.
            return Duration::ZERO;
        }
        if self.core.hub.is_backlogged() {
            return Duration::from_millis(1);
        }
        let mut until = self.next_housekeeping;
        if let Some(deadline) = self.core.conns.timers.next_deadline() {
            until = until.min(deadline);
        }
        if let Some(deadline) = self.core.conns.shutdown_deadline() {
            until = until.min(deadline);
        }
        until.saturating_duration_since(now)
    }

    /// Accepts until the listener would block (mio is edge-triggered), the connection limit is
    /// reached, or the process is out of file descriptors; in the last two cases accepting
    /// pauses instead of spinning, and resumes when connections close.
    /// A paused listener does not stop the others: admin connections have slots of their own.
    pub(super) fn accept(&mut self) {
        let mut paused = false;
        for door in [Door::Http, Door::Raw, Door::Admin] {
            paused |= !self.accept_from(door);
        }
        if !paused {
            // Every listener drained: whatever paused accepting is over.
            self.accept_paused = false;
        }
    }

    /// Accepts from one listener; false when accepting paused.
    fn accept_from(&mut self, door: Door) -> bool {
        let mut errors = 0;
        loop {
            let listener = match door {
                Door::Http => self.listener.as_ref(),
                Door::Raw => self.raw_listener.as_ref(),
                Door::Admin => self.admin_listener.as_ref(),
            };
            let Some(listener) = listener else { return true };
            // The slot is taken before the accept and given back if nothing comes of it.
            let admin = door == Door::Admin;
            if !self.core.conns.reserve_slot(admin) {
                self.pause_accept(if admin { "admin connection limit reached" } else { "connection limit reached" });
                return false;
            }
            match listener.accept() {
                Ok((sock, _peer)) => {
                    self.add_conn(sock, door);
                    continue;
                }
                Err(e) => {
                    self.core.conns.release_slot(admin);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return true,
                        io::ErrorKind::Interrupted => {}
                        _ if is_resource_exhaustion(&e) => {
                            self.pause_accept("out of file descriptors or memory");
                            return false;
                        }
                        _ => {
                            // ECONNABORTED and friends concern one connection, not the listener.
                            debug!("worker {}: accept: {e}", self.core.id);
                            errors += 1;
                            if errors >= ACCEPT_ERROR_BURST {
                                self.pause_accept("repeated accept errors");
                                return false;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Notes that accepting paused. Every connect attempt while paused and every freed slot
    /// retries (and may pause again), so the line is rate-limited: at the limit a flood of
    /// attempts costs a line a second, not one each.
    fn pause_accept(&mut self, why: &str) {
        if !self.accept_paused {
            self.accept_paused = true;
            WorkerStats::add(&self.core.stats().accept_pauses, 1);
            ACCEPT_PAUSED.log(format_args!("worker {}: pausing accept: {why}", self.core.id));
        }
    }

    /// Adds an accepted socket whose connection slot is already reserved.
    fn add_conn(&mut self, sock: TcpStream, door: Door) {
        if let Err(e) = sock.set_nodelay(true) {
            debug!("worker {}: TCP_NODELAY: {e}", self.core.id);
        }
        // TLS is the HTTP listener's; the raw TCP and the admin (internal) listeners stay plain.
        let tls = match door {
            Door::Http => self.core.shared.tls.as_ref().map(|cell| cell.current()),
            Door::Raw | Door::Admin => None,
        };
        let added = Socket::accept(sock, tls).and_then(|sock| self.core.conns.add(sock));
        let key = match added {
            Ok(key) => key,
            Err(e) => {
                self.core.conns.release_slot(door == Door::Admin);
                return REGISTER_FAILED.log(format_args!("worker {}: register: {e}", self.core.id));
            }
        };
        WorkerStats::add(&self.core.stats().connections, 1);
        WorkerStats::add(&self.core.stats().accepted, 1);
        match door {
            Door::Raw => duplex::start_raw(&mut self.core, key),
            // A fresh connection must send its head within the header timeout.
            Door::Http => self.core.conns.set_timer(key, self.core.shared.config.timeouts.header),
            Door::Admin => {
                if let Some(conn) = self.core.conns.get_mut(key) {
                    conn.admin = true;
                }
                self.core.conns.set_timer(key, self.core.shared.config.timeouts.header);
            }
        }
    }

    fn free_closed(&mut self) {
        let freed = self.core.conns.free_closed();
        if freed.total == 0 {
            return;
        }
        self.core.shared.connections.fetch_sub(freed.slots, Relaxed);
        WorkerStats::sub(&self.core.stats().connections, freed.total as u64);
        if self.accept_paused {
            self.accept();
        }
    }

    /// Processes everything the hub sent: acknowledgements, then forwarded messages and wakes,
    /// resuming each affected parked connection once per batch.
    fn drain_hub(&mut self) {
        let mut topics = mem::take(&mut self.scratch_topics);
        let mut selectors = Vec::new();
        let mut wake_all = false;
        // A bounded number of batches per turn, so a publish storm cannot starve socket I/O;
        // the poll timeout is zero while batches remain (`poll_timeout`).
        for _ in 0..MAX_BATCHES_PER_TURN {
            let Ok(batch) = self.rx.try_recv() else { break };
            for msg in batch {
                match msg {
                    WorkerMsg::Deliver { msg, report } => {
                        if report {
                            self.core.delivery.expect_report(msg.seq);
                        }
                        self.core.delivery.forwarded(msg.seq);
                        // Matching once per distinct topic keeps the work per turn at
                        // O(topics + subscribers), not O(messages x subscribers).
                        topics.insert(Arc::clone(&msg.topic));
                    }
                    WorkerMsg::Wake(selector) => selectors.push(selector),
                    WorkerMsg::WakeAll => wake_all = true,
                    WorkerMsg::PublishAck { reply, outcome } => publish::acked(&mut self.core, reply, outcome),
                }
            }
        }
        let mut keys = mem::take(&mut self.scratch_keys);
        keys.clear();
        if wake_all {
            let waiting = |c: &Conn| c.state.is_subscriber();
            keys.extend(self.core.conns.iter().filter(|(_, c)| waiting(c)).map(|(key, _)| key));
        } else {
            for topic in topics.drain() {
                self.core.delivery.subs.matching(&topic, &mut keys);
            }
            for selector in &selectors {
                self.core.delivery.subs.on_selector(selector, &mut keys);
            }
        }
        topics.clear();
        self.scratch_topics = topics;
        keys.sort_unstable();
        keys.dedup();
        self.core.delivery.begin_turn();
        for &key in &keys {
            subscriber::on_wake(&mut self.core, key);
            pump(&mut self.core, key);
        }
        self.scratch_keys = keys;
        self.core.delivery.end_turn(&mut self.core.hub);
    }

    fn fire_timers(&mut self) {
        let mut expired = mem::take(&mut self.scratch_timers);
        expired.clear();
        self.core.conns.timers.expire(Instant::now(), &mut expired);
        for &timer in &expired {
            let key = match timer {
                Timer::Conn(key) => key,
                Timer::Session(key) => {
                    sessions::on_timer(&mut self.core, key);
                    continue;
                }
            };
            let Some(conn) = self.core.conns.get_mut(key) else { continue };
            conn.timer = None;
            match conn.state.phase() {
                Phase::Head => {
                    self.core.conns.fail(key, Reject::new(408, "request head not received in time"), Version::Http11);
                }
                Phase::Body => {
                    let version = conn.state.body().map_or(Version::Http11, |body| body.request.version());
                    self.core.conns.fail(key, Reject::new(408, "request body not received in time"), version);
                }
                // A reply still being written is not idle: allow another period while the
                // client keeps taking bytes, close when it has taken none. A closing
                // connection gets one more `--close-write-timeout` at most, in all: a client
                // taking a byte now and then must not hold it (and its queue) for ever.
                Phase::Closing if conn.has_output() && conn.written != conn.timer_mark => {
                    let now = Instant::now();
                    let by = *conn.close_by.get_or_insert(now + self.core.shared.config.timeouts.close_write);
                    if now >= by {
                        close(&mut self.core, key);
                    } else {
                        self.core.conns.set_timer(key, by - now);
                    }
                    continue;
                }
                Phase::Idle if conn.has_output() && conn.written != conn.timer_mark => {
                    self.core.conns.set_timer(key, self.core.shared.config.timeouts.keepalive);
                    continue;
                }
                Phase::Idle | Phase::Closing | Phase::Draining | Phase::Dispatching | Phase::Closed => {
                    close(&mut self.core, key);
                    continue;
                }
                Phase::Parked | Phase::Streaming | Phase::Duplex => subscriber::on_timeout(&mut self.core, key),
                Phase::Publishing => {
                    if let Some(publishing) = conn.state.take_ack(None) {
                        let reason = "publish not acknowledged in time; it may have been stored";
                        self.core.conns.refuse(key, publishing.reply, Reject::new(504, reason));
                    }
                }
            }
            pump(&mut self.core, key);
        }
        self.scratch_timers = expired;
    }

    /// Continues, once each, the connections a bounded `pump` set aside during this turn's events
    /// (or the last turn's), after every other event: one busy client gets a share of the
    /// worker, not all of it. Those set aside again wait for the next turn.
    fn continue_deferred(&mut self) {
        for key in self.core.conns.take_deferred() {
            pump(&mut self.core, key);
        }
    }

    /// Adopts the connections other workers handed over, a bounded number per turn like the
    /// hub's batches so a burst cannot starve socket I/O (the poll timeout is zero while some
    /// remain).
    fn drain_handoffs(&mut self) {
        // Other workers' claims on never-used sessions here come with the same wake-up.
        self.core.sessions.settle_claims(&mut self.core.conns.timers);
        for _ in 0..MAX_BATCHES_PER_TURN {
            let Ok(handoff) = self.handoffs.try_recv() else { break };
            handoff::adopt(&mut self.core, *handoff);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING;
        log_limit::flush();
        let mut changes = Vec::new();
        self.core.delivery.subs.sweep(now, &mut changes);
        for change in changes {
            if let InterestChange::Off(selector) = change {
                self.core.hub.tell(HubCmd::Interest { worker: self.core.id, selector, on: false, seen_head: 0 });
            }
        }
        if self.accept_paused {
            self.accept();
        }
    }

    /// Stops accepting (except on the admin listener, whose `/ready` now answers 503), answers
    /// every parked long-poll with its cursor (so the client resumes elsewhere with nothing
    /// lost), and closes idle connections. Requests in progress finish.
    fn begin_shutdown(&mut self, now: Instant) {
        self.core.conns.begin_shutdown(now + self.core.shared.config.timeouts.shutdown);
        for mut listener in [self.listener.take(), self.raw_listener.take()].into_iter().flatten() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.core.conns.keys().collect();
        for key in keys {
            let Some(conn) = self.core.conns.get(key) else { continue };
            match conn.state.phase() {
                Phase::Parked | Phase::Streaming | Phase::Duplex => subscriber::on_shutdown(&mut self.core, key),
                // A fresh admin connection may be a probe whose request is on its way: it is
                // answered (as `io::pump` does for admin connections accepted while draining);
                // an idle keep-alive one (a scraper's) is closed like any other.
                Phase::Idle if conn.buffered() == 0 && !conn.has_output() && (!conn.admin || conn.written > 0) => {
                    close(&mut self.core, key)
                }
                _ => {}
            }
        }
        self.free_closed();
    }
}

/// The listening sockets one worker polls.
#[derive(Debug)]
pub(crate) struct Listeners {
    /// Its own `SO_REUSEPORT` HTTP listener (`--listen`).
    pub http: TcpListener,
    /// Its raw TCP listener (`--raw-listen`).
    pub raw: Option<TcpListener>,
    /// The admin listener (`--admin-listen`), for worker 0.
    pub admin: Option<TcpListener>,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// The HTTP listener (`--listen`).
    Http,
    /// The raw TCP listener (`--raw-listen`): JSON commands, no HTTP.
    Raw,
    /// The admin listener (`--admin-listen`): HTTP, admin routes only.
    Admin,
}

/// What a timer in the wheel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The connection's one timer (its meaning depends on its phase).
    Conn(usize),
    /// A session's lease (Pushlet) or expiry after its last connect (Bayeux).
    Session(usize),
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
