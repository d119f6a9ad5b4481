//! The connection table: every connection this worker holds, their timers, the read-buffer
//! pool, and the slots to free after the current event batch. Everything that happens to one
//! connection's bytes without knowing what the request means goes through here: reading into
//! a pooled buffer up to the phase's bound, queueing a response (its head, its body as shared
//! slices, the keep-alive or closing transition), refusing, failing, and closing.

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Interest, Token};
use slab::Slab;

use super::conn::{Conn, Cors, Phase, ReplyMeta, Socket, Vacated};
use super::event_loop::{Timer, FIRST_CONN};
use super::io::OutQueue;
use super::pool::BufPool;
use super::timer::{self, TimerWheel};
use super::Shared;
use crate::http::{self, DateCache, Framing, Reject, Version};
use crate::transport::websocket;

/// Initial capacity of a pooled read buffer, in bytes.
const READ_BUF: usize = 4096;
/// Read buffers kept in the pool, at most.
const POOLED_BUFS: usize = 1024;
/// Bytes of body read per decode step, so a large body never sits twice in memory.
const BODY_READ_CHUNK: usize = 64 * 1024;
/// After the final response of a closing connection, how long to drain its input.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes a draining connection may still send before it is closed.
const MAX_DRAIN: usize = 1 << 20;
/// Admin connections (`--admin-listen`) open at once, at most. They take no `--max-connections`
/// slot, so a node full of clients still answers `/metrics` and `/ready` (which is when an
/// operator needs them most); this bound keeps what the admin listener can hold small.
pub(super) const MAX_ADMIN_CONNECTIONS: usize = 32;

/// Every connection of one worker, by slab key.
pub(super) struct Conns {
    slab: Slab<Conn>,
    /// Connection timers (one per connection) and session leases share one wheel.
    pub(super) timers: TimerWheel<Timer>,
    pool: BufPool,
    /// Closed connections whose slots are freed after the event batch.
    closed: Vec<usize>,
    /// Connections a bounded `io::pump` left with work, continued at the end of the turn.
    deferred: Vec<usize>,
    /// Open admin connections, at most `MAX_ADMIN_CONNECTIONS` (only worker 0 has any).
    admin_open: usize,
    pub(super) date: DateCache,
    /// The CORS lists in force: this worker's copy of `Shared::access`, renewed by the event
    /// loop when a SIGHUP reload changed them (`refresh_access`).
    pub(super) access: Arc<crate::config::Access>,
    access_generation: u64,
    shared: Arc<Shared>,
    /// The worker's poll registry (a handle to the same epoll instance), for sockets that
    /// leave the poll (closed, handed over) or join it (adopted from another worker).
    registry: mio::Registry,
    /// Set at shutdown, to when the worker stops waiting for its connections: from then on no
    /// response keeps its connection alive.
    shutdown_deadline: Option<Instant>,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns").field("open", &self.slab.len()).field("closed", &self.closed.len()).finish()
    }
}

impl Conns {
    pub(super) fn new(shared: Arc<Shared>, registry: mio::Registry, now: Instant) -> Conns {
        let max_head = shared.config.http.max_head;
        Conns {
            slab: Slab::new(),
            timers: TimerWheel::new(timer::DEFAULT_TICK, timer::DEFAULT_SLOTS, now),
            pool: BufPool::new(READ_BUF, max_head.max(READ_BUF) * 2, POOLED_BUFS),
            closed: Vec::new(),
            deferred: Vec::new(),
            admin_open: 0,
            date: DateCache::new(),
            access: Arc::new(shared.config.access.clone()),
            access_generation: 0,
            shared,
            registry,
            shutdown_deadline: None,
        }
    }

    /// `key` still has work that a bounded pump left: the loop continues it later this turn.
    pub(super) fn defer(&mut self, key: usize) {
        self.deferred.push(key);
    }

    /// Takes the connections set aside so far (each once), for the loop to continue.
    pub(super) fn take_deferred(&mut self) -> Vec<usize> {
        let mut keys = std::mem::take(&mut self.deferred);
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Whether a connection waits to be continued (the loop then polls without waiting).
    pub(super) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The worker's poll registry.
    pub(super) fn registry(&self) -> &mio::Registry {
        &self.registry
    }

    // ---- the table -----------------------------------------------------------------------------

    pub(super) fn get(&self, key: usize) -> Option<&Conn> {
        self.slab.get(key)
    }

    pub(super) fn get_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.slab.get_mut(key)
    }

    pub(super) fn contains(&self, key: usize) -> bool {
        self.slab.contains(key)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    /// The keys of every connection, in slab order.
    pub(super) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slab.iter().map(|(key, _)| key)
    }

    pub(super) fn iter(&self) -> slab::Iter<'_, Conn> {
        self.slab.iter()
    }

    pub(super) fn iter_mut(&mut self) -> slab::IterMut<'_, Conn> {
        self.slab.iter_mut()
    }

    /// The key the next inserted connection gets, and a place to insert it (so the socket can
    /// be registered under its token before the connection exists).
    /// Registers `sock` with the poll, for both directions, edge-triggered (an idle socket
    /// causes no wake-ups, and it is never re-registered as the connection changes phase), and
    /// adds its connection. Returns the new key.
    pub(super) fn add(&mut self, mut sock: Socket) -> io::Result<usize> {
        let entry = self.slab.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.registry.register(&mut sock, Token(key + FIRST_CONN), interest)?;
        entry.insert(Conn::new(sock));
        Ok(key)
    }

    /// The client's address, for limits per client (None if the socket is already gone).
    pub(super) fn peer_ip(&self, key: usize) -> Option<std::net::IpAddr> {
        let conn = self.slab.get(key)?;
        conn.forwarded_for.or_else(|| conn.sock.peer_addr().ok().map(|addr| addr.ip()))
    }

    /// Notes who the client behind connection `key` is for request `req`, when the socket's
    /// peer is a trusted proxy (`--trusted-proxies`, `config/cidr.rs`): its `X-Forwarded-For`
    /// names the client, for what `peer_ip` counts per client. Nothing to do (and no system
    /// call) without trusted proxies.
    pub(super) fn note_forwarded(&mut self, key: usize, req: &http::Request) {
        let trusted = &self.shared.config.access.trusted_proxies;
        if trusted.is_empty() {
            return;
        }
        let Some(conn) = self.slab.get_mut(key) else { return };
        let Ok(peer) = conn.sock.peer_addr() else { return };
        let client = crate::config::client_behind(peer.ip(), req.header_elements("x-forwarded-for"), trusted);
        conn.forwarded_for = (client != peer.ip()).then_some(client);
    }

    /// Removes a connection at once (a hand-off: the socket lives on in another worker).
    pub(super) fn take(&mut self, key: usize) -> Option<Conn> {
        let mut conn = self.slab.try_remove(key)?;
        if let Some(timer) = conn.timer.take() {
            self.timers.cancel(timer);
        }
        Some(conn)
    }

    /// From now on no response keeps its connection alive; the worker stops waiting for its
    /// connections at `deadline`.
    pub(super) fn begin_shutdown(&mut self, deadline: Instant) {
        self.shutdown_deadline = Some(deadline);
    }

    /// The worker is shutting down (the one place that says so).
    pub(super) fn is_shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    /// When a shutting-down worker stops waiting for its connections.
    pub(super) fn shutdown_deadline(&self) -> Option<Instant> {
        self.shutdown_deadline
    }

    // ---- timers ------------------------------------------------------------------------------

    /// (Re)arms the connection's one timer; what it means depends on the phase.
    pub(super) fn set_timer(&mut self, key: usize, after: Duration) {
        let Some(conn) = self.slab.get_mut(key) else { return };
        if let Some(old) = conn.timer.take() {
            self.timers.cancel(old);
        }
        conn.timer_mark = conn.written;
        conn.timer = Some(self.timers.insert(Instant::now() + after, Timer::Conn(key)));
    }

    // ---- input -------------------------------------------------------------------------------

    /// Reads what the socket has, into the connection's pooled buffer, up to the phase's bound.
    /// Returns the number of bytes read.
    pub(super) fn read_input(&mut self, key: usize) -> io::Result<usize> {
        let config = &self.shared.config;
        let Some(conn) = self.slab.get_mut(key) else { return Ok(0) };
        if !conn.readable || conn.peer_closed {
            return Ok(0);
        }
        let cap = match conn.state.phase() {
            // Pipelined requests behind a parked or publishing one wait; bound what we hold.
            Phase::Idle | Phase::Head | Phase::Parked | Phase::Publishing | Phase::Streaming => {
                config.http.max_head + 1
            }
            Phase::Body => BODY_READ_CHUNK,
            // A whole client frame (or raw command line) must fit: the decoder needs it complete.
            Phase::Duplex => config.streams.ws_max_message + websocket::MAX_CLIENT_HEADER,
            Phase::Draining => return drain_socket(conn),
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
        self.release_input(key);
        Ok(total)
    }

    /// Gives an emptied read buffer back to the pool: a connection that waits holds none.
    pub(super) fn release_input(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            if conn.buffered() == 0 {
                if let Some(buf) = conn.inbuf.take() {
                    self.pool.give(buf);
                }
            }
        }
    }

    /// Drops the connection's unread input (its requests will not be answered).
    fn discard_input(&mut self, key: usize) {
        if let Some(buf) = self.slab.get_mut(key).and_then(|conn| conn.inbuf.take()) {
            self.pool.give(buf);
        }
    }

    // ---- the access log ------------------------------------------------------------------------

    /// Notes a request for the access log (when it is on and the request is not noted yet).
    pub(super) fn access_begin(&mut self, key: usize, req: &http::Request) {
        let log = &self.shared.access_log;
        if !log.enabled() {
            return;
        }
        let Some(conn) = self.slab.get_mut(key) else { return };
        if conn.access.is_none() {
            conn.access = log.begin(req, conn.sock.peer_addr().ok(), conn.written);
        }
    }

    // ---- responses ---------------------------------------------------------------------------

    pub(super) fn respond(
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
    pub(super) fn refuse(&mut self, key: usize, meta: ReplyMeta, reject: Reject) {
        let body = Bytes::from(format!("{}\n", reject.reason));
        let headers = reject.header_pairs();
        self.respond(key, meta, reject.status, "text/plain; charset=utf-8", &headers, body);
    }

    /// Queues a response whose body is `parts`, `len` bytes in all, then moves the connection
    /// to its next phase.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond_parts(
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
    pub(super) fn response_head(
        &self,
        meta: ReplyMeta,
        status: u16,
        content_type: &str,
        headers: &[(&str, &str)],
        len: usize,
    ) -> Bytes {
        let keep_alive = meta.keep_alive && !self.is_shutting_down();
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

    /// Takes the CORS lists a reload put in `Shared::access`, if they changed: one relaxed
    /// load per loop turn otherwise. (A request parked before a reload keeps the index it got:
    /// its reply reflects an origin of the new lists, or none, never an unlisted one.)
    pub(super) fn refresh_access(&mut self) {
        let generation = self.shared.access_generation.load(std::sync::atomic::Ordering::Acquire);
        if generation != self.access_generation {
            self.access = Arc::clone(&self.shared.access.read().unwrap_or_else(std::sync::PoisonError::into_inner));
            self.access_generation = generation;
        }
    }

    /// The `Access-Control-Allow-Origin` value for a CORS decision.
    pub(super) fn cors_value(&self, cors: Cors) -> Option<&str> {
        let access = &self.access;
        match cors {
            Cors::None => None,
            Cors::Any => Some("*"),
            Cors::Read(i) => access.cors_origins.get(usize::from(i)).map(String::as_str),
            Cors::Publish(i) => access.cors_publish_origins.get(usize::from(i)).map(String::as_str),
        }
    }

    /// Queues a response (head, then the body unless the request was HEAD) and moves the
    /// connection on: back to reading the next request, or to closing.
    pub(super) fn queue_response(
        &mut self,
        key: usize,
        meta: ReplyMeta,
        head: Bytes,
        body: impl Iterator<Item = Bytes>,
    ) {
        let keep_alive = meta.keep_alive && !self.is_shutting_down();
        let (header, keepalive) = (self.shared.config.timeouts.header, self.shared.config.timeouts.keepalive);
        let Some(conn) = self.slab.get_mut(key) else { return };
        // Only a request the access log noted has its status read back from the head
        // ("HTTP/1.1 200 ...", whoever built it): a long-poll answered in a fan-out costs
        // nothing extra with the log off.
        let logged = conn.access.take().map(|pending| {
            let status = head.get(9..12).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()).unwrap_or(0);
            (pending, status)
        });
        let mut bytes = head.len() as u64;
        conn.out.push(head);
        if !meta.head_only {
            for part in body {
                bytes += part.len() as u64;
                conn.out.push(part);
            }
        }
        if let Some((pending, status)) = logged {
            self.shared.access_log.log(Some(&pending), None, status, bytes);
        }
        conn.state.answered(keep_alive);
        let timeout = match (keep_alive, conn.buffered() > 0) {
            (false, _) => self.shared.config.timeouts.close_write,
            (true, true) => header,
            (true, false) => keepalive,
        };
        self.set_timer(key, timeout);
    }

    /// Answers a request that broke the protocol (its framing can no longer be trusted): the
    /// refusal, then close.
    pub(super) fn fail(&mut self, key: usize, reject: Reject, version: Version) {
        self.discard_input(key);
        let Some(conn) = self.slab.get_mut(key) else { return };
        let mut out = Vec::with_capacity(128 + reject.reason.len());
        let headers = reject.header_pairs();
        http::error_response(&mut out, reject.status, &reject.reason, version, self.date.value(), &headers, false);
        let bytes = out.len() as u64;
        conn.out.push(Bytes::from(out));
        if self.shared.access_log.enabled() {
            // A head that did not parse has no method or target: logged with `-`.
            let pending = conn.access.take();
            let peer = conn.sock.peer_addr().ok();
            self.shared.access_log.log(pending.as_deref(), peer, reject.status, bytes);
        }
        conn.state.close_after_write();
        self.set_timer(key, self.shared.config.timeouts.close_write);
    }

    // ---- closing -----------------------------------------------------------------------------

    /// The final response is written: shuts down our side, to discard input until the peer
    /// closes, so unread input can't make the kernel answer with a reset that destroys the
    /// response in flight (RFC 9112 §9.6). Returns false when the connection should rather
    /// close now (the peer is gone, or the server is shutting down).
    pub(super) fn start_draining(&mut self, key: usize) -> bool {
        let Some(conn) = self.slab.get_mut(key) else { return false };
        if conn.peer_closed || self.shutdown_deadline.is_some() {
            return false;
        }
        conn.sock.close_notify();
        let _ = conn.sock.shutdown(Shutdown::Write);
        conn.state.start_draining();
        self.discard_input(key);
        self.set_timer(key, DRAIN_TIMEOUT);
        true
    }

    /// Closes now: deregisters the socket, shuts it down, drops its buffers and its timer. The
    /// slot is freed after this event batch. Returns what the connection's phase held, for the
    /// caller to undo its registrations (None: already closed).
    pub(super) fn close(&mut self, key: usize) -> Option<Vacated> {
        let conn = self.slab.get_mut(key)?;
        if conn.state.is_closed() {
            return None;
        }
        if let Some(pending) = conn.access.take() {
            // A stream or socket ends, or a request was never answered (the client left: 499).
            let status = if pending.status == 0 { 499 } else { pending.status };
            let bytes = conn.written.saturating_sub(pending.written_at_start);
            self.shared.access_log.log(Some(&pending), None, status, bytes);
        }
        let vacated = conn.state.close();
        let _ = self.registry.deregister(&mut conn.sock);
        conn.sock.close_notify();
        let _ = conn.sock.shutdown(Shutdown::Both);
        conn.out = OutQueue::default();
        conn.readable = false;
        conn.writable = false;
        conn.peer_closed = true;
        if let Some(timer) = conn.timer.take() {
            self.timers.cancel(timer);
        }
        self.discard_input(key);
        self.closed.push(key);
        Some(vacated)
    }

    /// Frees the slots of the connections closed during this event batch; returns how many.
    pub(super) fn free_closed(&mut self) -> Freed {
        let mut freed = Freed::default();
        for key in self.closed.drain(..) {
            if let Some(conn) = self.slab.try_remove(key) {
                freed.total += 1;
                if conn.admin {
                    self.admin_open = self.admin_open.saturating_sub(1);
                } else {
                    freed.slots += 1;
                }
            }
        }
        freed
    }

    // ---- connection slots ----------------------------------------------------------------------

    /// Takes a slot for a connection about to be accepted: one of the `--max-connections`
    /// slots shared by every worker, or for the admin listener one of this worker's
    /// `MAX_ADMIN_CONNECTIONS`. False when none is free.
    pub(super) fn reserve_slot(&mut self, admin: bool) -> bool {
        if admin {
            let free = self.admin_open < MAX_ADMIN_CONNECTIONS;
            self.admin_open += usize::from(free);
            return free;
        }
        // The workers share the count: checking it first and adding after would let two of
        // them take the last slot at once.
        let max = self.shared.config.network.max_connections;
        self.shared.connections.fetch_update(AcqRel, Acquire, |open| (open < max).then_some(open + 1)).is_ok()
    }

    /// Gives back a slot `reserve_slot` took when no connection came of it.
    pub(super) fn release_slot(&mut self, admin: bool) {
        if admin {
            self.admin_open = self.admin_open.saturating_sub(1);
        } else {
            self.shared.connections.fetch_sub(1, AcqRel);
        }
    }
}

/// What `Conns::free_closed` freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Freed {
    /// Connections freed.
    pub total: usize,
    /// Of those, the ones that held a `--max-connections` slot (all but admin connections).
    pub slots: usize,
}

/// Reads and discards input on a draining connection. Returns bytes read. Under TLS the
/// records are discarded unread: our side has said close_notify, nothing more is answered.
fn drain_socket(conn: &mut Conn) -> io::Result<usize> {
    let mut sink = [0u8; 4096];
    let mut total = 0;
    loop {
        match conn.sock.tcp_mut().read(&mut sink) {
            Ok(0) => {
                conn.peer_closed = true;
                return Ok(total);
            }
            Ok(n) => {
                total += n;
                if total > MAX_DRAIN {
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
