//! The worker: one thread pinned to one core, one `mio::Poll`, one `SO_REUSEPORT` listener and
//! a slab of every connection it accepted.
//!
//! This is the Jetty Continuations idea done with a poll loop: a long-poll that has nothing to
//! answer is *parked* (`Phase::Parked`), which costs a slab entry and a timer, not a thread.
//! It is resumed when the hub forwards a message for one of its topics, when its timer fires,
//! or at shutdown; in each case the answer is read from topic history by the request's cursor,
//! so a wake-up can never lose or repeat a message.
//!
//! Tokens: `WAKER`, `LISTENER` and `RAW_LISTENER` are reserved; a connection's token is its
//! slab key plus `FIRST_CONN`. A closed connection's slot is freed only after the current event
//! batch, so a stale event for it cannot reach a new connection that reused the key.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::mem;
use std::net::Shutdown;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use log::{debug, error, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustc_hash::{FxHashMap, FxHashSet};
use slab::Slab;

mod bayeux;
mod duplex;
mod handoff;
mod pushlet;
mod sessions;
mod stream;

use super::conn::{BodyPhase, Conn, Cors, OutQueue, Parked, ParkedFormat, Phase, Publishing, ReplyMeta, Vacated};
use super::pool::BufPool;
use super::stats::WorkerStats;
use super::subs::{InterestChange, LocalSubs};
use super::timer::{self, TimerWheel};
use super::{Handoff, Shared};
use crate::http::{self, BodyDecoder, BodyKind, DateCache, Framing, Method, Reject, Request, Status, Version};
use crate::hub::{HubCmd, PublishRefused, PublishReq, Published, ReplyTo, WorkerMsg};
use crate::model::{Message, MessageId, Selector, Since};
use crate::protocol::native::{self, Delivery, Piggyback};
use crate::protocol::{self, Route};
use crate::transport::{jsonp, longpoll, websocket, Control, Transport};
use crate::xorshift::XorShift;

pub(crate) const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const RAW_LISTENER: Token = Token(2);
const FIRST_CONN: usize = 3;

/// Initial capacity of a pooled read buffer, in bytes.
const READ_BUF: usize = 4096;
/// Read buffers kept in the pool, at most.
const POOLED_BUFS: usize = 1024;
/// Bytes of body read per decode step, so a large body never sits twice in memory.
const BODY_READ_CHUNK: usize = 64 * 1024;
/// How long to wait for the hub to acknowledge a publish before answering 504. Longer than
/// the hub's own settling of overdue acks (`hub::ACK_TIMEOUT` plus its expiry tick), so the
/// hub answers first whenever it stored the message.
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// After the final response of a closing connection, how long to drain its input.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the last response of a closing connection may take to be written.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Housekeeping period (interest linger sweep, paused-accept retry).
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// Hub commands queued above which a publish is refused with 503 rather than queued.
const HUB_PUBLISH_HIGH_WATER: usize = 48 * 1024;
/// Batches taken from the hub's channel per loop turn.
const MAX_BATCHES_PER_TURN: usize = 64;
/// Hub commands held locally while the hub's channel is full.
const MAX_HUB_BACKLOG: usize = 64 * 1024;
/// Consecutive accept errors tolerated in one readiness round before backing off.
const ACCEPT_ERROR_BURST: u32 = 64;

/// Everything one worker owns.
pub(crate) struct Worker {
    id: usize,
    shared: Arc<Shared>,
    poll: Poll,
    listener: Option<TcpListener>,
    /// The optional raw TCP listener (`--raw-listen`).
    raw_listener: Option<TcpListener>,
    /// Accepting stopped at the connection limit or on EMFILE; retried by housekeeping and
    /// whenever one of our connections closes.
    accept_paused: bool,
    conns: Slab<Conn>,
    timers: TimerWheel<Timer>,
    pool: BufPool,
    date: DateCache,
    rx: Receiver<Vec<WorkerMsg>>,
    /// Connections other workers hand over (`handoff.rs`), drained on the same wake-up as `rx`.
    handoffs: Receiver<Box<Handoff>>,
    subs: LocalSubs,
    limits: http::Limits,
    /// Closed connections whose slots are freed after the event batch.
    closed: Vec<usize>,
    scratch_keys: Vec<usize>,
    scratch_timers: Vec<Timer>,
    scratch_topics: FxHashSet<Arc<str>>,
    /// Control messages for the hub that found its channel full (bounded, retried each turn).
    hub_backlog: VecDeque<HubCmd>,
    /// One reply shared by every subscriber woken in this turn with the same subscription and
    /// cursor (the broadcast case): one history read and one encoding instead of one each.
    reply_cache: Option<CachedReply>,
    /// Bayeux timing advice and the client-publish policy (`--client-publish`), which
    /// Pushlet, WebSocket and raw TCP publishes follow too.
    bayeux_settings: crate::protocol::bayeux::Settings,
    /// The Pushlet and Bayeux sessions this worker owns.
    sessions: sessions::Sessions,
    /// True while resuming the subscribers of one hub turn (the only time the cache is used).
    caching: bool,
    scratch_msgs: Vec<Arc<Message>>,
    scratch_parts: Vec<Bytes>,
    /// Deliveries to count for publishers waiting on an acknowledgement, by message seq.
    reports: FxHashMap<u64, usize>,
    next_tag: u64,
    rng: XorShift,
    next_housekeeping: Instant,
    shutdown_deadline: Option<Instant>,
}

impl Worker {
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        poll: Poll,
        mut listener: TcpListener,
        mut raw_listener: Option<TcpListener>,
        rx: Receiver<Vec<WorkerMsg>>,
        handoffs: Receiver<Box<Handoff>>,
    ) -> io::Result<Worker> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        if let Some(raw) = raw_listener.as_mut() {
            poll.registry().register(raw, RAW_LISTENER, Interest::READABLE)?;
        }
        let now = Instant::now();
        let limits = shared.config.http;
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Ok(Worker {
            id,
            poll,
            listener: Some(listener),
            raw_listener,
            accept_paused: false,
            conns: Slab::new(),
            timers: TimerWheel::new(timer::DEFAULT_TICK, timer::DEFAULT_SLOTS, now),
            pool: BufPool::new(READ_BUF, limits.max_head.max(READ_BUF) * 2, POOLED_BUFS),
            date: DateCache::new(),
            rx,
            handoffs,
            subs: LocalSubs::default(),
            limits,
            closed: Vec::new(),
            scratch_keys: Vec::new(),
            scratch_timers: Vec::new(),
            scratch_topics: FxHashSet::default(),
            hub_backlog: VecDeque::new(),
            reply_cache: None,
            bayeux_settings: bayeux_settings(&shared.config),
            sessions: sessions::Sessions::default(),
            caching: false,
            scratch_msgs: Vec::new(),
            scratch_parts: Vec::new(),
            reports: FxHashMap::default(),
            next_tag: 0,
            rng: XorShift::new(seed ^ ((id as u64 + 1) << 32)),
            next_housekeeping: now + HOUSEKEEPING,
            shutdown_deadline: None,
            shared,
        })
    }

    fn stats(&self) -> &WorkerStats {
        &self.shared.stats[self.id]
    }

    /// The event loop. Returns when shutdown is complete.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        self.date.update(SystemTime::now());
        loop {
            let now = Instant::now();
            if self.shutdown_deadline.is_none() && self.shared.shutdown.load(SeqCst) {
                self.begin_shutdown(now);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || now >= deadline {
                    break;
                }
            }
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("worker {}: poll failed: {e}", self.id);
                break;
            }
            self.date.update(SystemTime::now());
            for event in events.iter() {
                match event.token() {
                    WAKER => {} // the hub's channel and the hand-offs are drained below on every turn
                    LISTENER | RAW_LISTENER => self.accept(),
                    Token(t) => {
                        let key = t - FIRST_CONN;
                        if let Some(conn) = self.conns.get_mut(key) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                conn.readable = true;
                            }
                            if event.is_writable() || event.is_write_closed() || event.is_error() {
                                conn.writable = true;
                            }
                            self.pump(key);
                        }
                    }
                }
            }
            self.drain_handoffs();
            self.drain_hub();
            self.flush_hub_backlog();
            self.fire_timers();
            let now = Instant::now();
            if now >= self.next_housekeeping {
                self.housekeeping(now);
            }
            self.free_closed();
        }
        let remaining = self.conns.len();
        if remaining > 0 {
            warn!("worker {}: shutdown deadline passed with {remaining} connections open; closing them", self.id);
        }
        for (_, conn) in self.conns.iter_mut() {
            let _ = self.poll.registry().deregister(&mut conn.sock);
        }
        WorkerStats::sub(&self.stats().connections, remaining as u64);
        self.shared.connections.fetch_sub(remaining, Relaxed);
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if !self.rx.is_empty() || !self.handoffs.is_empty() {
            return Duration::ZERO; // batches or hand-offs left over from a bounded drain
        }
        if !self.hub_backlog.is_empty() {
            return Duration::from_millis(1);
        }
        let mut until = self.next_housekeeping;
        if let Some(deadline) = self.timers.next_deadline() {
            until = until.min(deadline);
        }
        if let Some(deadline) = self.shutdown_deadline {
            until = until.min(deadline);
        }
        until.saturating_duration_since(now)
    }

    // ---- accepting -------------------------------------------------------------------------

    /// Accepts until the listener would block (mio is edge-triggered), the connection limit is
    /// reached, or the process is out of file descriptors; in the last two cases accepting
    /// pauses instead of spinning, and resumes when connections close.
    fn accept(&mut self) {
        self.accept_paused = false;
        for raw in [false, true] {
            if !self.accept_from(raw) {
                return;
            }
        }
    }

    /// Accepts from one listener; false when accepting paused.
    fn accept_from(&mut self, raw: bool) -> bool {
        let mut errors = 0;
        loop {
            let listener = if raw { self.raw_listener.as_ref() } else { self.listener.as_ref() };
            let Some(listener) = listener else { return true };
            if self.shared.connections.load(Relaxed) >= self.shared.config.network.max_connections {
                self.pause_accept("connection limit reached");
                return false;
            }
            match listener.accept() {
                Ok((sock, _peer)) => self.add_conn(sock, raw),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_resource_exhaustion(&e) => {
                    self.pause_accept("out of file descriptors or memory");
                    return false;
                }
                Err(e) => {
                    // ECONNABORTED and friends concern one connection, not the listener.
                    debug!("worker {}: accept: {e}", self.id);
                    errors += 1;
                    if errors >= ACCEPT_ERROR_BURST {
                        self.pause_accept("repeated accept errors");
                        return false;
                    }
                }
            }
        }
    }

    fn pause_accept(&mut self, why: &str) {
        if !self.accept_paused {
            self.accept_paused = true;
            WorkerStats::add(&self.stats().accept_pauses, 1);
            warn!("worker {}: pausing accept: {why}", self.id);
        }
    }

    fn add_conn(&mut self, mut sock: TcpStream, raw: bool) {
        if let Err(e) = sock.set_nodelay(true) {
            debug!("worker {}: TCP_NODELAY: {e}", self.id);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        // Registered once for both directions, edge-triggered: an idle socket causes no wake-ups
        // and we never re-register as the connection changes phase.
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key + FIRST_CONN), interest) {
            warn!("worker {}: register: {e}", self.id);
            return;
        }
        entry.insert(Conn::new(sock));
        self.shared.connections.fetch_add(1, Relaxed);
        WorkerStats::add(&self.stats().connections, 1);
        WorkerStats::add(&self.stats().accepted, 1);
        if raw {
            self.start_raw(key);
        } else {
            // A fresh connection must send its head within the header timeout.
            self.set_timer(key, self.shared.config.timeouts.header);
        }
    }

    // ---- the per-connection pump -----------------------------------------------------------

    /// Makes all the progress a connection can make now: write, read, parse, dispatch.
    fn pump(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            if conn.state.is_closed() {
                return;
            }
            if let Err(e) = conn.flush() {
                debug!("worker {}: write: {e}", self.id);
                self.close(key);
                return;
            }
            if conn.out.is_empty() {
                match conn.state.phase() {
                    Phase::Closing => return self.start_draining(key),
                    // Shutting down: a keep-alive connection whose last reply is now written
                    // has nothing more coming.
                    Phase::Idle if self.shutdown_deadline.is_some() && conn.buffered() == 0 => {
                        return self.close(key);
                    }
                    _ => {}
                }
            }
            let drained = conn.out.len() < self.shared.config.network.out_low_water();
            // The client caught up with what was queued: continue from the cursor.
            if drained && conn.state.streaming().is_some_and(|s| s.over_since.is_some()) {
                self.feed_stream(key, true);
            } else if drained && conn.state.duplex().is_some_and(|d| d.over_since.is_some()) {
                self.feed_duplex(key);
            }
            let read = match self.read_input(key) {
                Ok(n) => n,
                Err(e) => {
                    debug!("worker {}: read: {e}", self.id);
                    self.close(key);
                    return;
                }
            };
            let processed = self.process_input(key);
            if self.conns.get(key).is_none_or(|c| c.state.is_closed()) {
                return;
            }
            if self.handle_peer_close(key) {
                return;
            }
            let Some(conn) = self.conns.get(key) else { return };
            let can_write = conn.writable && !conn.out.is_empty();
            if read == 0 && !processed && !can_write {
                return;
            }
        }
    }

    /// Reads what the socket has, into the connection's pooled buffer, up to the phase's bound.
    /// Returns the number of bytes read.
    fn read_input(&mut self, key: usize) -> io::Result<usize> {
        let max_head = self.limits.max_head;
        let Some(conn) = self.conns.get_mut(key) else { return Ok(0) };
        if !conn.readable || conn.peer_closed {
            return Ok(0);
        }
        let cap = match conn.state.phase() {
            // Pipelined requests behind a parked or publishing one wait; bound what we hold.
            Phase::Idle | Phase::Head | Phase::Parked | Phase::Publishing | Phase::Streaming => max_head + 1,
            Phase::Body => BODY_READ_CHUNK,
            // A whole client frame (or raw command line) must fit: the decoder needs it complete.
            Phase::Duplex => self.shared.config.streams.ws_max_message + websocket::MAX_CLIENT_HEADER,
            Phase::Draining => {
                return drain_socket(conn);
            }
            Phase::Dispatching | Phase::Closing | Phase::Closed => return Ok(0),
        };
        let mut total = 0;
        loop {
            let buf = conn.inbuf.get_or_insert_with(|| self.pool.take());
            let len = buf.len();
            if len >= cap {
                break; // keep `readable`: we resume when the buffer drains
            }
            // Read into the spare capacity, growing by READ_BUF steps up to the cap.
            let chunk = (cap - len).min(READ_BUF.max(buf.capacity() - len));
            buf.resize(len + chunk, 0);
            match conn.sock.read(&mut buf[len..]) {
                Ok(0) => {
                    buf.truncate(len);
                    conn.peer_closed = true;
                    break;
                }
                Ok(n) => {
                    buf.truncate(len + n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    buf.truncate(len);
                    conn.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(len),
                Err(e) => {
                    buf.truncate(len);
                    return Err(e);
                }
            }
        }
        if conn.buffered() == 0 {
            if let Some(buf) = conn.inbuf.take() {
                self.pool.give(buf);
            }
        }
        Ok(total)
    }

    /// Parses and dispatches buffered requests, one at a time and in order (pipelining).
    /// Returns true if anything was consumed.
    fn process_input(&mut self, key: usize) -> bool {
        let high_water = self.shared.config.network.out_high_water();
        let mut progressed = false;
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return progressed };
            if conn.out.len() >= high_water || conn.buffered() == 0 {
                break;
            }
            match conn.state.phase() {
                Phase::Idle | Phase::Head => {
                    if conn.state.phase() == Phase::Idle {
                        conn.state.start_head();
                        self.set_timer(key, self.shared.config.timeouts.header);
                    }
                    let Some(conn) = self.conns.get_mut(key) else { return progressed };
                    let Some(buf) = conn.inbuf.as_mut() else { break };
                    match http::parse_head(buf, &self.limits) {
                        Ok(Status::Partial) => break,
                        Ok(Status::Complete((request, used))) => {
                            buf.drain(..used);
                            progressed = true;
                            WorkerStats::add(&self.stats().requests, 1);
                            self.begin_request(key, request);
                        }
                        Err(e) => {
                            let version = Version::Http11;
                            self.fail(key, e.into(), version);
                            return true;
                        }
                    }
                }
                Phase::Body => {
                    let (Some(body), Some(buf)) = (conn.state.body_mut(), conn.inbuf.as_mut()) else { break };
                    match body.decoder.decode(buf, &mut body.body, self.limits.max_body) {
                        Ok((used, done)) => {
                            buf.drain(..used);
                            progressed |= used > 0;
                            if !done {
                                if used == 0 {
                                    break;
                                }
                                continue;
                            }
                            // The body is complete: the request goes on with it.
                            let Some(body) = conn.state.take_body() else { break };
                            let BodyPhase { request, body, .. } = *body;
                            self.dispatch(key, request, body);
                        }
                        Err(e) => {
                            let version = body.request.version();
                            self.fail(key, e.into(), version);
                            return true;
                        }
                    }
                }
                Phase::Duplex => {
                    progressed |= self.process_duplex(key);
                    break;
                }
                Phase::Dispatching
                | Phase::Parked
                | Phase::Publishing
                | Phase::Streaming
                | Phase::Closing
                | Phase::Draining
                | Phase::Closed => break,
            }
        }
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.buffered() == 0 {
                if let Some(buf) = conn.inbuf.take() {
                    self.pool.give(buf);
                }
            }
        }
        progressed
    }

    /// The peer sent FIN. Returns true if the connection was closed (or is closing).
    fn handle_peer_close(&mut self, key: usize) -> bool {
        let high_water = self.shared.config.network.out_high_water();
        let Some(conn) = self.conns.get_mut(key) else { return true };
        if !conn.peer_closed {
            return false;
        }
        match conn.state.phase() {
            // Still answering a complete request (e.g. a publish sent with a half-close).
            Phase::Publishing | Phase::Closing => false,
            Phase::Idle | Phase::Head if conn.buffered() > 0 && conn.out.len() >= high_water => false,
            Phase::Idle | Phase::Head if !conn.out.is_empty() => {
                conn.state.close_after_write();
                false
            }
            // Idle, half a request, a parked long-poll whose client left, or draining: done.
            _ => {
                self.close(key);
                true
            }
        }
    }

    fn begin_request(&mut self, key: usize, request: Request) {
        match request.body_kind() {
            // An empty body (`Content-Length: 0`) is complete already: no Body phase, no 100.
            BodyKind::None | BodyKind::Length(0) => self.dispatch(key, request, Vec::new()),
            kind => {
                let Some(conn) = self.conns.get_mut(key) else { return };
                if request.expects_continue() && conn.buffered() == 0 {
                    // RFC 9110 §10.1.1: tell the client to go ahead and send the body.
                    conn.out.push_static(http::CONTINUE_100);
                }
                let body = BodyPhase { request, decoder: BodyDecoder::new(kind), body: Vec::new() };
                conn.state.read_body(body);
                self.set_timer(key, self.shared.config.timeouts.header);
            }
        }
    }

    // ---- requests ----------------------------------------------------------------------------

    /// Answers one complete request: the connection is `Dispatching` until the handler queued
    /// its answer, parked it, opened a stream or socket, handed it to the hub or to another
    /// worker.
    fn dispatch(&mut self, key: usize, req: Request, body: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if matches!(conn.state.phase(), Phase::Idle | Phase::Head) {
            conn.state.dispatch();
        }
        let meta = ReplyMeta {
            version: req.version(),
            keep_alive: req.keep_alive() && self.shutdown_deadline.is_none(),
            head_only: req.method() == Method::Head,
            cors: self.cors_for(&req, false),
        };
        match protocol::route(req.method(), req.path()) {
            Route::Health => {
                self.respond(key, meta, 200, "text/plain; charset=utf-8", &[], Bytes::from_static(b"ok\n"))
            }
            Route::Stats => {
                let stats = super::stats_json(&self.shared);
                let body = serde_json::to_vec(&stats).unwrap_or_default();
                self.respond(key, meta, 200, "application/json", &[], Bytes::from(body));
            }
            Route::Publish { topic } => self.publish(key, meta, topic, &req, body),
            Route::Subscribe { topics } => self.subscribe(key, meta, topics, &req),
            Route::WebSocket => self.upgrade_websocket(key, meta, &req, Vec::new(), Since::Now),
            Route::Bayeux => self.bayeux(key, meta, req, body),
            Route::Pushlet => self.pushlet(key, meta, req, body),
            Route::Preflight { publish, allow } => self.preflight(key, meta, &req, publish, allow),
            Route::MethodNotAllowed { allow } => {
                let reason = format!("method {} not allowed here; allowed: {allow}", req.method_str());
                self.refuse(key, meta, Reject::new(405, reason).with_header("Allow", allow));
            }
            Route::NotFound => {
                let reason = format!("no such path: {}", req.path());
                self.refuse(key, meta, Reject::new(404, reason));
            }
        }
        // Never a request without its reply: a handler that found nothing to do (its session
        // vanished under it) still answers.
        if self.conns.get(key).is_some_and(|c| c.state.phase() == Phase::Dispatching) {
            self.refuse(key, meta, Reject::new(500, "internal error: the request was left unanswered"));
        }
    }

    fn publish(&mut self, key: usize, meta: ReplyMeta, topic: &str, req: &Request, body: Vec<u8>) {
        if req.header("origin").is_some() && !self.origin_may_publish(req) {
            return self.refuse(key, meta, Reject::forbidden("origin not allowed to publish"));
        }
        let meta = ReplyMeta { cors: self.cors_for(req, true), ..meta };
        let mut publish = match native::parse_publish(topic, req, body) {
            Ok(p) => p,
            Err(bad) => return self.refuse(key, meta, bad.into()),
        };
        let piggyback = publish.piggyback.take().map(Box::new);
        let topic: Arc<str> = publish.topic.as_str().into();
        let tag = match self.submit_publish(key, publish) {
            Ok(tag) => tag,
            Err(busy) => return self.refuse(key, meta, busy),
        };
        if let Some(conn) = self.conns.get_mut(key) {
            conn.state.await_ack(Publishing { tag, reply: meta, topic, piggyback });
        }
        self.set_timer(key, PUBLISH_ACK_TIMEOUT);
    }

    /// Hands a validated publish to the hub; the acknowledgement will come back tagged for
    /// connection `key`. Refused (with the reason) when the hub's queue is near full, so
    /// control messages always find room in it.
    fn submit_publish(&mut self, key: usize, publish: native::Publish) -> Result<u64, Reject> {
        let tag = self.next_tag + 1;
        self.send_publish(PublishReq {
            topic: publish.topic.into(),
            event: publish.event,
            content_type: publish.content_type,
            data: publish.data,
            reply: Some(ReplyTo { worker: self.id, token: key, tag }),
        })?;
        self.next_tag = tag;
        Ok(tag)
    }

    /// Queues a publish for the hub, every protocol's way in. Refused (with the reason) when
    /// the hub's queue is near full, so control messages always find room in it.
    fn send_publish(&mut self, req: PublishReq) -> Result<(), Reject> {
        let busy = || Reject::busy("server busy: publish queue full, retry later", 1);
        if self.shared.hub.len() >= HUB_PUBLISH_HIGH_WATER {
            return Err(busy());
        }
        self.shared.hub.try_send(HubCmd::Publish(req)).map_err(|_| busy())?;
        WorkerStats::add(&self.stats().published, 1);
        Ok(())
    }

    fn publish_acked(&mut self, reply: ReplyTo, outcome: Result<Published, PublishRefused>) {
        let Some(conn) = self.conns.get_mut(reply.token) else { return };
        if conn.state.phase() == Phase::Duplex {
            self.duplex_publish_acked(reply.token, reply.tag, outcome);
            return self.pump(reply.token);
        }
        // None: the publisher's connection is gone and its slot was reused.
        let Some(publishing) = conn.state.take_ack(Some(reply.tag)) else { return };
        let Publishing { reply: meta, topic, piggyback, .. } = *publishing;
        let Published { seq, time_ms, delivered } = match outcome {
            Ok(published) => published,
            Err(refused) => {
                // The hub refused it (it re-validates topics); tell the client rather than pretend.
                self.refuse(reply.token, meta, refused.into());
                return self.pump(reply.token);
            }
        };
        let id = MessageId { epoch: self.shared.store.epoch(), seq };
        let ack =
            serde_json::json!({ "id": id.to_string(), "topic": &*topic, "time": time_ms, "delivered": delivered });
        let mut body = serde_json::to_vec(&ack).unwrap_or_default();
        match piggyback {
            None => self.respond(reply.token, meta, 201, "application/json", &[], Bytes::from(body)),
            Some(piggyback) => {
                // Same object, plus what is new on the publisher's topics: drop the closing
                // brace and append the long-poll members.
                body.pop();
                body.push(b',');
                self.respond_piggyback(reply.token, meta, body, &piggyback);
            }
        }
        self.pump(reply.token);
    }

    fn subscribe(&mut self, key: usize, meta: ReplyMeta, topics: &str, req: &Request) {
        let config = &self.shared.config;
        let sub = match native::parse_subscribe(topics, req, config.longpoll.max_timeout) {
            Ok(sub) => sub,
            Err(bad) => return self.refuse(key, meta, bad.into()),
        };
        let transport = match native::select_transport(req) {
            Ok(Delivery::Http(transport)) => transport,
            Ok(Delivery::WebSocket) => {
                return self.upgrade_websocket(key, meta, req, sub.selectors, sub.since);
            }
            Err(bad) => return self.refuse(key, meta, bad.into()),
        };
        let store = &self.shared.store;
        let resume = sub.since.resolve(store.epoch(), store.head());
        // A client asking for everything gets everything there is; no gap to report.
        let show_gap = sub.since != Since::All;
        let default_timeout = config.longpoll.timeout;
        let (format, poll) = match transport {
            // HEAD gets the headers of a poll; a stream has no length to describe.
            Transport::Stream(kind) if !meta.head_only => {
                return self.start_stream(key, meta, kind, sub.selectors, resume, show_gap);
            }
            Transport::Stream(_) | Transport::Poll => (ParkedFormat::Json, true),
            Transport::LongPoll => (ParkedFormat::Json, false),
            Transport::Jsonp { callback } => (ParkedFormat::Jsonp(callback), false),
        };
        let timeout = match sub.timeout {
            Some(timeout) => timeout,
            None => self.jittered(default_timeout),
        };
        let parked = Parked { selectors: sub.selectors.into_boxed_slice(), cursor: resume.after, reply: meta, format };
        let force = poll || timeout.is_zero() || meta.head_only;
        self.park(key, parked, force, resume.reset, show_gap, timeout);
    }

    /// Answers `parked` at once if history already has something for it (or `force`, or
    /// shutting down); otherwise suspends the request: registered on its selectors, counted,
    /// recorded as its session's listener (if it has one), with its timer.
    fn park(&mut self, key: usize, parked: Parked, force: bool, epoch_gap: bool, show_gap: bool, timeout: Duration) {
        let force = force || self.shutdown_deadline.is_some();
        let seen_head = match self.answer(key, &parked, force, epoch_gap, show_gap) {
            Answer::Sent => return,
            Answer::Nothing { head } => head,
        };
        self.watch(key, &parked.selectors, seen_head);
        WorkerStats::add(&self.stats().parked, 1);
        if let Some(skey) = parked.format.session() {
            if let Some(entry) = self.sessions.slab.get_mut(skey) {
                entry.listener = Some(key);
            }
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.state.park(Box::new(parked));
        }
        self.set_timer(key, timeout);
    }

    /// Registers `key` on its selectors, telling the hub about selectors new to this worker.
    fn watch(&mut self, key: usize, selectors: &[Selector], seen_head: u64) {
        for selector in selectors {
            if let Some(InterestChange::On(selector)) = self.subs.add(selector, key) {
                self.tell_hub(HubCmd::Interest { worker: self.id, selector, on: true, seen_head });
            }
        }
    }

    fn unwatch(&mut self, key: usize, selectors: &[Selector]) {
        let now = Instant::now();
        for selector in selectors {
            self.subs.remove(selector, key, now);
        }
    }

    /// Reads history after the subscription's cursor and answers if there is anything to say
    /// (messages, or a gap), or unconditionally when `force` (timeout, poll, shutdown).
    fn answer(&mut self, key: usize, parked: &Parked, force: bool, epoch_gap: bool, show_gap: bool) -> Answer {
        let jsonp = match &parked.format {
            ParkedFormat::Json => None,
            ParkedFormat::Jsonp(callback) => Some(callback),
            ParkedFormat::Bayeux(hold) => return self.answer_bayeux(key, parked, hold, force),
            ParkedFormat::Pushlet(hold) => return self.answer_pushlet(key, parked, hold, force),
        };
        // Subscribers woken together by a broadcast usually share selectors and cursor: the
        // first one's reply (head included) is reused by the rest of this turn.
        let cacheable = self.caching && !force && !epoch_gap && show_gap;
        if cacheable {
            if let Some(cached) = self.reply_cache.take() {
                let hit = cached.fits(parked);
                if hit {
                    self.count_messages(&cached.msgs);
                    self.queue_response(key, parked.reply, cached.parts[0].clone(), cached.parts[1..].iter().cloned());
                }
                self.reply_cache = Some(cached);
                if hit {
                    return Answer::Sent;
                }
            }
        }
        self.scratch_msgs.clear();
        let store = &self.shared.store;
        let read =
            store.read(&parked.selectors, parked.cursor, self.shared.config.longpoll.max_batch, &mut self.scratch_msgs);
        let gap = epoch_gap || (show_gap && read.gap);
        if self.scratch_msgs.is_empty() && !gap && !force {
            return Answer::Nothing { head: read.head };
        }
        let next = read.next_cursor(parked.cursor, &self.scratch_msgs);
        let info = longpoll::ReplyInfo { epoch: store.epoch(), next, gap, oldest: read.oldest };
        let mut parts = mem::take(&mut self.scratch_parts);
        parts.clear();
        let head = match jsonp {
            None => {
                let len = longpoll::encode(&self.scratch_msgs, &info, &mut parts);
                let headers = [("Cache-Control", "no-store")];
                self.response_head(parked.reply, 200, "application/json", &headers, len)
            }
            Some(callback) => {
                let len = jsonp::encode(callback, &self.scratch_msgs, &info, &mut parts);
                let headers = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")];
                self.response_head(parked.reply, 200, jsonp::CONTENT_TYPE, &headers, len)
            }
        };
        let msgs = mem::take(&mut self.scratch_msgs);
        self.count_messages(&msgs);
        if cacheable {
            let mut all = Vec::with_capacity(parts.len() + 1);
            all.push(head.clone());
            all.extend(parts.iter().cloned());
            self.reply_cache = Some(CachedReply {
                selectors: parked.selectors.clone(),
                cursor: parked.cursor,
                jsonp: jsonp.cloned(),
                meta: parked.reply,
                parts: all,
                msgs: msgs.clone(),
            });
        }
        self.scratch_msgs = msgs;
        self.queue_response(key, parked.reply, head, parts.drain(..));
        self.scratch_parts = parts;
        Answer::Sent
    }

    /// Counts the messages in `scratch_msgs` as delivered.
    fn count_deliveries(&mut self) {
        let msgs = mem::take(&mut self.scratch_msgs);
        self.count_messages(&msgs);
        self.scratch_msgs = msgs;
    }

    /// Counts `msgs` as delivered to one subscriber: stats, and the per-message counts for
    /// publishers waiting on an acknowledgement.
    fn count_messages(&mut self, msgs: &[Arc<Message>]) {
        if !self.reports.is_empty() {
            for msg in msgs {
                if let Some(count) = self.reports.get_mut(&msg.seq) {
                    *count += 1;
                }
            }
        }
        WorkerStats::add(&self.stats().delivered, msgs.len() as u64);
    }

    /// The rest of a piggybacking publish reply: what is new on the publisher's topics.
    fn respond_piggyback(&mut self, key: usize, meta: ReplyMeta, head: Vec<u8>, piggyback: &Piggyback) {
        let store = Arc::clone(&self.shared.store);
        let resume = piggyback.since.resolve(store.epoch(), store.head());
        self.scratch_msgs.clear();
        let read = store.read(
            &piggyback.selectors,
            resume.after,
            self.shared.config.longpoll.max_batch,
            &mut self.scratch_msgs,
        );
        let next = read.next_cursor(resume.after, &self.scratch_msgs);
        let gap = resume.reset || (read.gap && piggyback.since != Since::All);
        let info = longpoll::ReplyInfo { epoch: store.epoch(), next, gap, oldest: read.oldest };
        let mut parts = mem::take(&mut self.scratch_parts);
        parts.clear();
        let mut len = head.len();
        parts.push(Bytes::from(head));
        len += longpoll::encode_members(&self.scratch_msgs, &info, &mut parts, |msg| msg.json(info.epoch).clone());
        self.count_deliveries();
        self.respond_parts(key, meta, 201, "application/json", &[], parts.drain(..), len);
        self.scratch_parts = parts;
    }

    /// The `Access-Control-Allow-Origin` value for a CORS decision.
    fn cors_value(&self, cors: Cors) -> Option<&str> {
        let config = &self.shared.config;
        match cors {
            Cors::None => None,
            Cors::Any => Some("*"),
            Cors::Read(i) => config.access.cors_origins.get(usize::from(i)).map(String::as_str),
            Cors::Publish(i) => config.access.cors_publish_origins.get(usize::from(i)).map(String::as_str),
        }
    }

    /// Resumes a parked long-poll if it has something to answer (or `force`).
    fn resume(&mut self, key: usize, force: bool) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.state.phase() {
            Phase::Streaming => return self.feed_stream(key, true),
            Phase::Duplex => return self.feed_duplex(key),
            _ => {}
        }
        let Some(parked) = conn.state.unpark() else { return };
        match self.answer(key, &parked, force, false, true) {
            Answer::Sent => self.retire_phase(key, &Vacated::parked(parked)),
            Answer::Nothing { .. } => {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.state.park(parked);
                }
            }
        }
    }

    fn preflight(&mut self, key: usize, meta: ReplyMeta, req: &Request, publish: bool, allow: &'static str) {
        if req.header("origin").is_none() {
            // Not a CORS preflight: a plain OPTIONS asking what the resource allows.
            return self.respond(key, meta, 204, "", &[("Allow", allow)], Bytes::new());
        }
        let cors = self.cors_for(req, publish);
        if cors == Cors::None {
            return self.refuse(key, meta, Reject::forbidden("origin not allowed"));
        }
        let methods = if publish { "POST, PUT" } else { "GET, HEAD" };
        let headers = [
            ("Access-Control-Allow-Methods", methods),
            (
                "Access-Control-Allow-Headers",
                "Content-Type, Last-Event-ID, X-Event, X-Cursor, Cache-Control, X-Requested-With",
            ),
            ("Access-Control-Max-Age", "600"),
        ];
        self.respond(key, ReplyMeta { cors, ..meta }, 204, "", &headers, Bytes::new());
    }

    // ---- CORS ------------------------------------------------------------------------------

    fn cors_for(&self, req: &Request, publish: bool) -> Cors {
        let Some(origin) = req.header_str("origin") else { return Cors::None };
        let config = &self.shared.config;
        let list = if publish { &config.access.cors_publish_origins } else { &config.access.cors_origins };
        let mut found = Cors::None;
        for (i, allowed) in list.iter().enumerate() {
            if allowed == "*" {
                return Cors::Any;
            }
            if allowed.eq_ignore_ascii_case(origin) && found == Cors::None {
                let index = u16::try_from(i).unwrap_or(u16::MAX);
                found = if publish { Cors::Publish(index) } else { Cors::Read(index) };
            }
        }
        if found == Cors::None && publish && same_origin(req, origin) {
            // Same-origin pages need no CORS headers; the browser reads the reply anyway.
            return Cors::None;
        }
        found
    }

    fn origin_may_publish(&self, req: &Request) -> bool {
        let Some(origin) = req.header_str("origin") else { return true };
        same_origin(req, origin) || self.cors_for(req, true) != Cors::None
    }

    // ---- responses -------------------------------------------------------------------------

    fn respond(
        &mut self,
        key: usize,
        meta: ReplyMeta,
        status: u16,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) {
        let len = body.len();
        self.respond_parts(key, meta, status, content_type, headers, std::iter::once(body), len);
    }

    /// Answers a request with a refusal: its status, headers, and the reason as a one-line
    /// body. The connection stays open when the request allows it: the request was read whole,
    /// so the next one can follow.
    fn refuse(&mut self, key: usize, meta: ReplyMeta, reject: Reject) {
        let body = Bytes::from(format!("{}\n", reject.reason));
        let headers = reject.header_pairs();
        self.respond(key, meta, reject.status, "text/plain; charset=utf-8", &headers, body);
    }

    /// Queues a response whose body is `parts`, `len` bytes in all, then moves the connection
    /// to its next phase.
    #[allow(clippy::too_many_arguments)]
    fn respond_parts(
        &mut self,
        key: usize,
        meta: ReplyMeta,
        status: u16,
        content_type: &str,
        headers: &[(&str, &str)],
        parts: impl Iterator<Item = Bytes>,
        len: usize,
    ) {
        let head = self.response_head(meta, status, content_type, headers, len);
        self.queue_response(key, meta, head, parts);
    }

    /// The response head: status line, `Date`, the given headers, CORS, framing, keep-alive.
    fn response_head(
        &self,
        meta: ReplyMeta,
        status: u16,
        content_type: &str,
        headers: &[(&str, &str)],
        len: usize,
    ) -> Bytes {
        let keep_alive = meta.keep_alive && self.shutdown_deadline.is_none();
        let origin = self.cors_value(meta.cors);
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 3);
        if !content_type.is_empty() {
            all.push(("Content-Type", content_type));
        }
        all.extend_from_slice(headers);
        if let Some(origin) = origin {
            all.push(("Access-Control-Allow-Origin", origin));
            if origin != "*" {
                all.push(("Vary", "Origin"));
            }
        }
        let framing = if status == 204 { Framing::None } else { Framing::Length(len) };
        let mut head = Vec::with_capacity(256);
        http::write_head(&mut head, status, meta.version, self.date.value(), &all, framing, keep_alive);
        Bytes::from(head)
    }

    /// Queues a response (head, then the body unless the request was HEAD) and moves the
    /// connection on: back to reading the next request, or to closing.
    fn queue_response(&mut self, key: usize, meta: ReplyMeta, head: Bytes, body: impl Iterator<Item = Bytes>) {
        let keep_alive = meta.keep_alive && self.shutdown_deadline.is_none();
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.out.push(head);
        if !meta.head_only {
            for part in body {
                conn.out.push(part);
            }
        }
        conn.state.answered(keep_alive);
        if keep_alive {
            let timeout = if conn.buffered() > 0 {
                self.shared.config.timeouts.header
            } else {
                self.shared.config.timeouts.keepalive
            };
            self.set_timer(key, timeout);
        } else {
            self.set_timer(key, CLOSE_WRITE_TIMEOUT);
        }
    }

    /// Answers a request that broke the protocol (its framing can no longer be trusted): the
    /// refusal, then close.
    fn fail(&mut self, key: usize, reject: Reject, version: Version) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if let Some(buf) = conn.inbuf.take() {
            self.pool.give(buf);
        }
        let mut out = Vec::with_capacity(128 + reject.reason.len());
        let headers = reject.header_pairs();
        http::error_response(&mut out, reject.status, &reject.reason, version, self.date.value(), &headers, false);
        conn.out.push(Bytes::from(out));
        conn.state.close_after_write();
        self.set_timer(key, CLOSE_WRITE_TIMEOUT);
    }

    // ---- closing ---------------------------------------------------------------------------

    /// The final response is written: shut down our side and discard input until the peer
    /// closes, so unread input can't make the kernel answer with a reset that destroys the
    /// response in flight (RFC 9112 §9.6).
    fn start_draining(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.peer_closed || self.shutdown_deadline.is_some() {
            self.close(key);
            return;
        }
        let _ = conn.sock.shutdown(Shutdown::Write);
        conn.state.start_draining();
        if let Some(buf) = conn.inbuf.take() {
            self.pool.give(buf);
        }
        self.set_timer(key, DRAIN_TIMEOUT);
        // Input may already be waiting.
        if conn_readable(&self.conns, key) {
            self.pump(key);
        }
    }

    /// Closes now: deregisters, drops the subscription, frees the slot after this event batch.
    fn close(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.state.is_closed() {
            return;
        }
        let vacated = conn.state.close();
        let _ = self.poll.registry().deregister(&mut conn.sock);
        let _ = conn.sock.shutdown(Shutdown::Both);
        if let Some(timer) = conn.timer.take() {
            self.timers.cancel(timer);
        }
        if let Some(buf) = conn.inbuf.take() {
            self.pool.give(buf);
        }
        conn.out = OutQueue::default();
        conn.readable = false;
        conn.writable = false;
        conn.peer_closed = true;
        // A stream's session is a Pushlet stream listen's.
        let pushlet_stream = if vacated.phase() == Phase::Streaming { vacated.session() } else { None };
        self.retire_phase(key, &vacated);
        if let Some(session) = pushlet_stream {
            // A Pushlet stream whose client went away ends its session, as in the original
            // (a failed write ended the session).
            self.remove_session(session);
        }
        self.closed.push(key);
    }

    /// Undoes what a phase registered elsewhere: its subscriptions in the local index, its
    /// gauge, and its place as its session's listener. Used when a connection closes and when
    /// it is handed to another worker, so nothing here keeps a key that is about to be reused.
    pub(super) fn retire_phase(&mut self, key: usize, vacated: &Vacated) {
        if let Some(session) = vacated.session() {
            self.listener_gone(session, key);
        }
        let gauge = match vacated.phase() {
            Phase::Parked => &self.stats().parked,
            Phase::Streaming => &self.stats().streaming,
            Phase::Duplex => &self.stats().duplex,
            _ => return,
        };
        WorkerStats::sub(gauge, 1);
        self.unwatch(key, vacated.selectors());
    }

    fn free_closed(&mut self) {
        if self.closed.is_empty() {
            return;
        }
        let n = self.closed.len();
        for key in self.closed.drain(..) {
            self.conns.try_remove(key);
        }
        self.shared.connections.fetch_sub(n, Relaxed);
        WorkerStats::sub(&self.stats().connections, n as u64);
        if self.accept_paused {
            self.accept();
        }
    }

    // ---- the hub ---------------------------------------------------------------------------

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
                            self.reports.insert(msg.seq, 0);
                        }
                        // Matching once per distinct topic keeps the work per turn at
                        // O(topics + subscribers), not O(messages x subscribers).
                        topics.insert(Arc::clone(&msg.topic));
                    }
                    WorkerMsg::Wake(selector) => selectors.push(selector),
                    WorkerMsg::WakeAll => wake_all = true,
                    WorkerMsg::PublishAck { reply, outcome } => self.publish_acked(reply, outcome),
                }
            }
        }
        let mut keys = mem::take(&mut self.scratch_keys);
        keys.clear();
        if wake_all {
            let waiting = |c: &Conn| c.state.is_subscriber();
            keys.extend(self.conns.iter().filter(|(_, c)| waiting(c)).map(|(key, _)| key));
        } else {
            for topic in topics.drain() {
                self.subs.matching(&topic, &mut keys);
            }
            for selector in &selectors {
                self.subs.on_selector(selector, &mut keys);
            }
        }
        topics.clear();
        self.scratch_topics = topics;
        keys.sort_unstable();
        keys.dedup();
        self.caching = true;
        for &key in &keys {
            self.resume(key, false);
            self.pump(key);
        }
        self.caching = false;
        self.scratch_keys = keys;
        // A cached reply described history as it was in this turn; the next turn reads anew.
        self.reply_cache = None;
        let reports: Vec<(u64, usize)> = self.reports.drain().collect();
        for (seq, count) in reports {
            self.tell_hub(HubCmd::Delivered { worker: self.id, seq, count });
        }
    }

    /// Sends a control message (interest, delivery report) to the hub without blocking: if
    /// the hub's channel is full, the message waits in a bounded local queue that is retried
    /// every turn, in order.
    fn tell_hub(&mut self, cmd: HubCmd) {
        if self.hub_backlog.is_empty() {
            match self.shared.hub.try_send(cmd) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(cmd)) => self.hub_backlog.push_back(cmd),
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => debug!("worker {}: hub is gone", self.id),
            }
        } else if self.hub_backlog.len() < MAX_HUB_BACKLOG {
            self.hub_backlog.push_back(cmd);
        } else {
            // Only a wedged hub gets here. A lost report is settled by the hub's ack timeout; a
            // lost interest costs wake-ups until the subscriber's timeout, not messages.
            error!("worker {}: hub unreachable, {MAX_HUB_BACKLOG} commands queued; dropping one", self.id);
        }
    }

    fn flush_hub_backlog(&mut self) {
        while let Some(cmd) = self.hub_backlog.pop_front() {
            match self.shared.hub.try_send(cmd) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(cmd)) => {
                    self.hub_backlog.push_front(cmd);
                    return;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    self.hub_backlog.clear();
                    return;
                }
            }
        }
    }

    // ---- timers ----------------------------------------------------------------------------

    fn set_timer(&mut self, key: usize, after: Duration) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if let Some(old) = conn.timer.take() {
            self.timers.cancel(old);
        }
        conn.timer_mark = conn.written;
        conn.timer = Some(self.timers.insert(Instant::now() + after, Timer::Conn(key)));
    }

    fn fire_timers(&mut self) {
        let mut expired = mem::take(&mut self.scratch_timers);
        expired.clear();
        self.timers.expire(Instant::now(), &mut expired);
        for &timer in &expired {
            let key = match timer {
                Timer::Conn(key) => key,
                Timer::Session(key) => {
                    self.session_timer(key);
                    continue;
                }
            };
            let Some(conn) = self.conns.get_mut(key) else { continue };
            conn.timer = None;
            match conn.state.phase() {
                Phase::Head => {
                    self.fail(key, Reject::new(408, "request head not received in time"), Version::Http11);
                }
                Phase::Body => {
                    let version = conn.state.body().map_or(Version::Http11, |body| body.request.version());
                    self.fail(key, Reject::new(408, "request body not received in time"), version);
                }
                // A reply still being written is not idle: allow another period while the
                // client keeps taking bytes, close when it has taken none.
                phase @ (Phase::Idle | Phase::Closing) if !conn.out.is_empty() && conn.written != conn.timer_mark => {
                    let period = match phase {
                        Phase::Closing => CLOSE_WRITE_TIMEOUT,
                        _ => self.shared.config.timeouts.keepalive,
                    };
                    self.set_timer(key, period);
                    continue;
                }
                Phase::Idle | Phase::Closing | Phase::Draining | Phase::Dispatching | Phase::Closed => {
                    self.close(key);
                    continue;
                }
                Phase::Parked => self.resume(key, true),
                Phase::Streaming => self.stream_timer(key),
                Phase::Duplex => self.duplex_timer(key),
                Phase::Publishing => {
                    if let Some(publishing) = conn.state.take_ack(None) {
                        let reason = "publish not acknowledged in time; it may have been stored";
                        self.refuse(key, publishing.reply, Reject::new(504, reason));
                    }
                }
            }
            self.pump(key);
        }
        self.scratch_timers = expired;
    }

    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING;
        let mut changes = Vec::new();
        self.subs.sweep(now, &mut changes);
        for change in changes {
            if let InterestChange::Off(selector) = change {
                self.tell_hub(HubCmd::Interest { worker: self.id, selector, on: false, seen_head: 0 });
            }
        }
        if self.accept_paused {
            self.accept();
        }
    }

    // ---- shutdown --------------------------------------------------------------------------

    /// Stops accepting, answers every parked long-poll with its cursor (so the client resumes
    /// elsewhere with nothing lost), and closes idle connections. Requests in progress finish.
    fn begin_shutdown(&mut self, now: Instant) {
        self.shutdown_deadline = Some(now + self.shared.config.timeouts.shutdown);
        for mut listener in [self.listener.take(), self.raw_listener.take()].into_iter().flatten() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some(conn) = self.conns.get(key) else { continue };
            match conn.state.phase() {
                Phase::Parked => {
                    self.resume(key, true);
                    self.pump(key);
                }
                Phase::Streaming => {
                    let next = conn.state.streaming().map_or(0, |stream| stream.cursor);
                    self.end_stream(key, Control::End { next });
                    self.pump(key);
                }
                Phase::Duplex => {
                    self.duplex_shutdown(key);
                    self.pump(key);
                }
                Phase::Idle if conn.buffered() == 0 && conn.out.is_empty() => self.close(key),
                _ => {}
            }
        }
        self.free_closed();
    }

    /// A long-poll hold with ±10% jitter, so subscribers that connected together don't all
    /// come back in the same millisecond.
    fn jittered(&mut self, base: Duration) -> Duration {
        base.mul_f64(0.9 + 0.2 * self.rng.unit())
    }
}

/// Bayeux settings from the configuration.
fn bayeux_settings(config: &crate::config::Config) -> crate::protocol::bayeux::Settings {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    crate::protocol::bayeux::Settings {
        timeout_ms: millis(config.sessions.bayeux_timeout),
        interval_ms: 0,
        max_interval_ms: millis(config.sessions.bayeux_max_interval),
        may_publish: client_publish_policy(config),
    }
}

/// The client-publish policy (`--client-publish`): a topic may be published by a client when
/// one of the configured patterns matches it.
fn client_publish_policy(config: &crate::config::Config) -> Box<dyn Fn(&str) -> bool + Send + Sync> {
    let allowed: Vec<Selector> = config.access.client_publish.iter().filter_map(|p| Selector::parse(p).ok()).collect();
    Box::new(move |topic| allowed.iter().any(|s| s.matches(topic)))
}

/// What a timer in the wheel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The connection's one timer (its meaning depends on its phase).
    Conn(usize),
    /// A session's lease (Pushlet) or expiry after its last connect (Bayeux).
    Session(usize),
}

/// A long-poll reply shared by the subscribers of one hub turn; see `Worker::answer`.
struct CachedReply {
    selectors: Box<[Selector]>,
    cursor: u64,
    jsonp: Option<Box<str>>,
    meta: ReplyMeta,
    /// The response head, then the body slices.
    parts: Vec<Bytes>,
    msgs: Vec<Arc<Message>>,
}

impl CachedReply {
    fn fits(&self, parked: &Parked) -> bool {
        self.cursor == parked.cursor
            && self.meta == parked.reply
            && match (&self.jsonp, &parked.format) {
                (None, ParkedFormat::Json) => true,
                (Some(a), ParkedFormat::Jsonp(b)) => a == b,
                _ => false,
            }
            && self.selectors == parked.selectors
    }
}

/// The result of trying to answer a subscription.
enum Answer {
    Sent,
    /// Nothing to say yet; `head` is the store head the read saw.
    Nothing {
        head: u64,
    },
}

fn conn_readable(conns: &Slab<Conn>, key: usize) -> bool {
    conns.get(key).is_some_and(|c| c.readable)
}

/// Reads and discards input on a draining connection. Returns bytes read.
fn drain_socket(conn: &mut Conn) -> io::Result<usize> {
    let mut sink = [0u8; 4096];
    let mut total = 0;
    loop {
        match conn.sock.read(&mut sink) {
            Ok(0) => {
                conn.peer_closed = true;
                return Ok(total);
            }
            Ok(n) => {
                total += n;
                if total > 1 << 20 {
                    // A peer that keeps sending after our final response gets closed.
                    conn.peer_closed = true;
                    return Ok(total);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.readable = false;
                return Ok(total);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// True when the `Origin` header names the host the request was sent to (`Host`), which a
/// browser only does for pages served by this server.
fn same_origin(req: &Request, origin: &str) -> bool {
    let Some(host) = req.header_str("host") else { return false };
    let without_scheme = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    without_scheme.eq_ignore_ascii_case(host)
}
