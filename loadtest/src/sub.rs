//! The subscriber event loops of a `worker` child: one `mio` loop per thread, each holding its
//! share of the child's subscribers, connecting them (paced), keeping them subscribed across
//! responses, reconnects and churn, and checking every stamped message that arrives.
//!
//! A subscriber (cursor, sequence tracker) outlives its connections; a connection is a socket
//! plus the response reader, kept in a slab (token = key + 1, token 0 is the waker).

use crate::tls::Stream;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use halley::transport::websocket::{encode_masked_frame, ClientRole, Decoder as WsDecoder, Event as WsEvent, Opcode};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::feed::{stream_item, Cursor, Endpoint, LineSplitter, Mode, SseParser, StreamItem};
use crate::http::{parse_head, ResponseReader, Step, MAX_BODY_BYTES, MAX_HEAD_BYTES};
use crate::ipc::{emit, ChildMsg, ChildResult, Counters, Plan, Progress};
use crate::net::{connect_from, out_of_fds, source_addr};
use crate::session::reply_deadline_ms;
use crate::stamp::{parse_stamp, unix_ns, Checks, OrderHash, Orders, SeqTracker, Stamp, Verdict};
use crate::stats::{Latency, LatencySeries, Timeline, TICK_MS};

/// Token of each loop's waker; connection tokens are slab key + 1.
const WAKER: Token = Token(0);
/// Bytes read per `read()` call.
const READ_CHUNK: usize = 64 * 1024;
/// Most bytes buffered unparsed on one connection.
const MAX_INBUF: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES;
/// Largest WebSocket frame and message (all fragments together) a subscriber accepts, in bytes.
const MAX_WS_MESSAGE_BYTES: usize = 1024 * 1024;
/// Consecutive failures (connect errors, bad responses) after which a subscriber is given up.
const MAX_FAILURES: u32 = 20;
/// Backoff after the first failure; doubles per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often per-message fan-out counts go to the parent while they change.
const GOT_FLUSH: Duration = Duration::from_millis(2);
/// Events handled per poll.
const EVENTS_CAPACITY: usize = 1024;

/// The running loops of one child.
#[derive(Debug)]
pub struct Worker {
    handles: Vec<JoinHandle<ChildResult>>,
    wakers: Vec<Arc<Waker>>,
}

/// Start `plan.threads` loops holding `plan.subs` subscribers; they run until `stop` is set
/// (then [`Worker::wake_all`]) or the plan's deadline passes. Churn (at `plan.churn_per_s`)
/// starts once `churning` is set.
pub fn start(plan: &Plan, stop: Arc<AtomicBool>, churning: Arc<AtomicBool>) -> io::Result<Worker> {
    let threads = plan.threads.max(1);
    let mut handles = Vec::new();
    let mut wakers = Vec::new();
    for t in 0..threads {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let subs: Vec<Sub> = (0..plan.subs)
            .filter(|j| j % threads == t)
            .map(|j| {
                let global = plan.first_sub + j;
                Sub::new(global, plan.target_of(global), plan.topics.name(global))
            })
            .collect();
        let mut lp = SubLoop::new(plan, t, poll, subs, stop.clone(), churning.clone());
        wakers.push(waker);
        let handle = std::thread::Builder::new().name(format!("sub-{t}")).spawn(move || lp.run())?;
        handles.push(handle);
    }
    Ok(Worker { handles, wakers })
}

impl Worker {
    /// Wake every loop so it notices the stop flag now.
    pub fn wake_all(&self) {
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    /// Wakers, for the thread that reads the parent's commands.
    pub fn wakers(&self) -> Vec<Arc<Waker>> {
        self.wakers.clone()
    }

    /// Wait for every loop and add up what they measured.
    pub fn join(self) -> ChildResult {
        let mut total = ChildResult::default();
        let mut latency = Latency::new();
        let mut series = LatencySeries::default();
        for h in self.handles {
            if let Ok(r) = h.join() {
                total.progress.add(&r.progress);
                total.checks.merge(&r.checks);
                total.counters.merge(&r.counters);
                total.timeline.merge(&r.timeline);
                total.orders.merge(&r.orders);
                latency.merge(&r.latency);
                series.merge(&r.latency_series);
            }
        }
        total.latency = latency.snapshot();
        total.latency_series = series.snapshot();
        total
    }
}

/// A subscriber: what survives its connections.
#[derive(Debug)]
struct Sub {
    global: u32,
    /// The server this subscriber uses (its node, in a cluster run).
    target: SocketAddr,
    topic: String,
    cursor: Cursor,
    tracker: SeqTracker,
    /// Every message received once, in arrival order, folded (see `Orders`).
    order: OrderHash,
    warm: bool,
    conn: Option<usize>,
    failures: u32,
}

impl Sub {
    fn new(global: u32, target: SocketAddr, topic: String) -> Self {
        Sub {
            global,
            target,
            topic,
            cursor: Cursor::Start,
            tracker: SeqTracker::default(),
            order: OrderHash::default(),
            warm: false,
            conn: None,
            failures: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP connect in flight.
    Connecting,
    /// Writing the request in `out`.
    Sending,
    /// Request sent, no response head yet: parked at the server.
    Waiting,
    /// Streaming head (SSE, ndjson) or WebSocket `101` received; messages follow.
    Streaming,
    /// The next request is in `out`, held back until `Conn::resume_at` (Bayeux
    /// `advice.interval`).
    Resting,
}

#[derive(Debug)]
struct Conn {
    sub: usize,
    stream: Stream,
    phase: Phase,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    reader: ResponseReader,
    sse: SseParser,
    lines: LineSplitter,
    /// The client end of the server's WebSocket codec (unmasked frames in).
    ws: WsDecoder<ClientRole>,
    /// The request in flight waits for messages: counted in `Progress::parked` while
    /// `Waiting` (a Pushlet join or a Bayeux handshake is not).
    parks: bool,
    /// Give up on the request in flight at this time (see `session::reply_deadline_ms`).
    deadline: Option<Instant>,
    /// When `Resting`: send the request in `out` at this time.
    resume_at: Option<Instant>,
}

/// What to do with a connection after handling its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Stay,
    /// A new request is in `out`: flush it.
    Send,
    /// Close and reconnect now, keeping the cursor (server closed, stream ended, churn).
    Reconnect,
    /// Close and reconnect after a backoff (error).
    Retry,
    /// A WebSocket control reply is in `out`: flush it and keep streaming.
    Reply,
}

/// Where deliveries and counts go, kept apart from the slab so both can be borrowed.
#[derive(Debug)]
struct Sink {
    checks: Checks,
    latency: Latency,
    /// Latency per second of receive time, since `start_unix_ns`.
    series: LatencySeries,
    start_unix_ns: u64,
    counters: Counters,
    progress: Progress,
    timeline: Timeline,
    tick_delivered: u64,
    track_fanout: bool,
    got: BTreeMap<u64, (u64, u64)>,
}

impl Sink {
    /// Account one stamped message for `sub`.
    fn deliver(&mut self, sub: &mut Sub, stamp: Stamp, now_ns: u64) {
        let verdict = sub.tracker.observe(stamp.src, stamp.seq);
        if !sub.warm {
            sub.warm = true;
            self.progress.warm += 1;
        }
        sub.failures = 0;
        if stamp.seq == 0 {
            return; // the warm-up message: a baseline, not a measurement
        }
        self.checks.count(verdict);
        self.progress.received += 1;
        self.tick_delivered += 1;
        if verdict != Verdict::Duplicate {
            sub.order.add(stamp.src, stamp.seq);
            let latency = now_ns.saturating_sub(stamp.ts);
            self.latency.record(latency);
            self.series.record(now_ns.saturating_sub(self.start_unix_ns), latency);
            if self.track_fanout {
                let e = self.got.entry(stamp.seq).or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.max(now_ns);
            }
        }
    }
}

struct SubLoop {
    poll: Poll,
    thread: u32,
    child: u32,
    endpoint: Endpoint,
    /// Fold each warm subscriber's delivery order into the result.
    check_order: bool,
    /// With `--tls`: the client config and server name every connection starts a session with
    /// (checked by the parent before any child starts).
    tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    source_addrs: u8,
    stop: Arc<AtomicBool>,
    churning: Arc<AtomicBool>,
    subs: Vec<Sub>,
    conns: Slab<Conn>,
    to_connect: VecDeque<usize>,
    retry: BinaryHeap<Reverse<(Instant, usize)>>,
    connecting: usize,
    max_connecting: usize,
    churn_every: Option<Duration>,
    churn_cursor: usize,
    start_unix_ns: u64,
    deadline: Instant,
    sink: Sink,
    scratch: Vec<u8>,
}

impl SubLoop {
    fn new(
        plan: &Plan,
        thread: u32,
        poll: Poll,
        subs: Vec<Sub>,
        stop: Arc<AtomicBool>,
        churning: Arc<AtomicBool>,
    ) -> Self {
        let threads = plan.threads.max(1);
        let churn_per_thread = plan.churn_per_s / f64::from(threads);
        let now_ns = unix_ns();
        let end_ns = plan.start_unix_ns.saturating_add(plan.deadline_s.saturating_mul(1_000_000_000));
        let to_connect = (0..subs.len()).collect();
        SubLoop {
            poll,
            thread,
            child: plan.child,
            endpoint: plan.endpoint.clone(),
            check_order: plan.check_order,
            tls: plan.endpoint.tls.as_ref().and_then(|t| t.client_config().ok().zip(t.name().ok())),
            source_addrs: plan.source_addrs,
            stop,
            churning,
            subs,
            conns: Slab::new(),
            to_connect,
            retry: BinaryHeap::new(),
            connecting: 0,
            max_connecting: (plan.connect_concurrency / threads).max(1) as usize,
            churn_every: (churn_per_thread > 0.0).then(|| Duration::from_secs_f64(1.0 / churn_per_thread)),
            churn_cursor: 0,
            start_unix_ns: plan.start_unix_ns,
            deadline: Instant::now() + Duration::from_nanos(end_ns.saturating_sub(now_ns)),
            sink: Sink {
                checks: Checks::default(),
                latency: Latency::new(),
                series: LatencySeries::default(),
                start_unix_ns: plan.start_unix_ns,
                counters: Counters::default(),
                progress: Progress::default(),
                timeline: Timeline::default(),
                tick_delivered: 0,
                track_fanout: plan.track_fanout,
                got: BTreeMap::new(),
            },
            scratch: vec![0; READ_CHUNK],
        }
    }

    fn run(&mut self) -> ChildResult {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut next_tick = Instant::now();
        let mut next_got = Instant::now() + GOT_FLUSH;
        let mut next_churn: Option<Instant> = None;
        let mut done: Vec<(usize, Next)> = Vec::new();
        let mut milestones = Milestones::default();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= self.deadline {
                emit(&ChildMsg::Log { text: format!("child {} thread {}: deadline reached", self.child, self.thread) });
                break;
            }
            while let Some(Reverse((at, sub))) = self.retry.peek().copied() {
                if at > now {
                    break;
                }
                self.retry.pop();
                self.to_connect.push_back(sub);
            }
            self.start_connects();
            if next_churn.is_none() && self.churning.load(Ordering::Relaxed) {
                next_churn = self.churn_every.map(|d| now + d);
            }
            if let (Some(at), Some(every)) = (next_churn, self.churn_every) {
                if now >= at {
                    self.churn_one(&mut done);
                    next_churn = Some(at + every);
                }
            }
            if now >= next_tick {
                self.check_timers(now, &mut done);
                self.tick();
                next_tick += Duration::from_millis(TICK_MS);
                if next_tick < now {
                    next_tick = now + Duration::from_millis(TICK_MS);
                }
            }
            if now >= next_got {
                self.flush_got();
                next_got = now + GOT_FLUSH;
            }
            let mut wake_at = next_tick.min(self.deadline);
            if !self.sink.got.is_empty() {
                wake_at = wake_at.min(next_got);
            }
            if let Some(at) = next_churn {
                wake_at = wake_at.min(at);
            }
            if let Some(Reverse((at, _))) = self.retry.peek() {
                wake_at = wake_at.min(*at);
            }
            let timeout = wake_at.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                emit(&ChildMsg::Log { text: format!("poll failed: {e}") });
                break;
            }
            let now_ns = unix_ns();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let key = ev.token().0 - 1;
                if !self.conns.contains(key) {
                    continue; // stale event for a connection closed in this batch
                }
                let next = self.on_event(key, ev.is_writable(), now_ns);
                if next != Next::Stay {
                    done.push((key, next));
                }
            }
            self.close_done(&mut done);
            self.announce_milestones(&mut milestones);
        }
        self.finish()
    }

    /// Start queued connects, at most `max_connecting` in flight.
    fn start_connects(&mut self) {
        while self.connecting < self.max_connecting {
            let Some(s) = self.to_connect.pop_front() else {
                return;
            };
            let sub = &mut self.subs[s];
            if sub.conn.is_some() || sub.failures > MAX_FAILURES {
                continue;
            }
            let src = sub.target.is_ipv4().then(|| source_addr(sub.global, self.source_addrs));
            let stream = match connect_from(src, sub.target).and_then(|tcp| Stream::new(tcp, self.tls.as_ref())) {
                Ok(stream) => stream,
                Err(e) if out_of_fds(&e) => {
                    // No retry can succeed while this process holds its other sockets: give
                    // the subscriber up now, counted with its reason, rather than let it look
                    // like a slow connect until the deadline.
                    self.sink.counters.connect_errors += 1;
                    self.sink.counters.out_of_fds += 1;
                    self.give_up(s);
                    continue;
                }
                Err(_) => {
                    self.sink.counters.connect_errors += 1;
                    self.fail(s);
                    continue;
                }
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let mut conn = Conn {
                sub: s,
                stream,
                phase: Phase::Connecting,
                out: Vec::new(),
                written: 0,
                inbuf: Vec::new(),
                reader: ResponseReader::new(MAX_BODY_BYTES),
                sse: SseParser::default(),
                lines: LineSplitter::default(),
                ws: WsDecoder::client(MAX_WS_MESSAGE_BYTES, MAX_WS_MESSAGE_BYTES),
                parks: false,
                deadline: None,
                resume_at: None,
            };
            if self
                .poll
                .registry()
                .register(&mut conn.stream, Token(key + 1), Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                self.sink.counters.connect_errors += 1;
                self.fail(s);
                continue;
            }
            entry.insert(conn);
            sub.conn = Some(key);
            self.connecting += 1;
            self.sink.progress.open += 1;
        }
    }

    /// Give subscriber `s` up for good.
    fn give_up(&mut self, s: usize) {
        let sub = &mut self.subs[s];
        if sub.failures <= MAX_FAILURES {
            sub.failures = MAX_FAILURES + 1;
            self.sink.progress.failed += 1;
        }
    }

    /// Count a failure for subscriber `s` and schedule its retry (or give it up).
    fn fail(&mut self, s: usize) {
        let sub = &mut self.subs[s];
        sub.failures += 1;
        if sub.failures > MAX_FAILURES {
            self.sink.progress.failed += 1;
            return;
        }
        let backoff = FIRST_BACKOFF.saturating_mul(1 << sub.failures.min(8)).min(MAX_BACKOFF);
        self.retry.push(Reverse((Instant::now() + backoff, s)));
    }

    fn on_event(&mut self, key: usize, writable: bool, now_ns: u64) -> Next {
        let Some(conn) = self.conns.get_mut(key) else {
            return Next::Stay;
        };
        if conn.phase == Phase::Connecting {
            match connect_outcome(&conn.stream) {
                ConnectOutcome::Pending => return Next::Stay,
                ConnectOutcome::Failed => {
                    self.sink.counters.connect_errors += 1;
                    return Next::Retry;
                }
                ConnectOutcome::Connected => {
                    self.connecting -= 1;
                    self.sink.counters.connects += 1;
                    let sub = &self.subs[conn.sub];
                    conn.out = self.endpoint.subscribe_request(&sub.topic, &sub.cursor);
                    conn.parks = self.endpoint.parks(&sub.cursor);
                    conn.written = 0;
                    conn.phase = Phase::Sending;
                }
            }
        }
        if conn.phase == Phase::Streaming && conn.written < conn.out.len() && flush(conn).is_err() {
            self.sink.counters.server_closes += 1;
            return Next::Reconnect;
        }
        let mut next = Next::Send;
        while next == Next::Send {
            if conn.phase == Phase::Sending && (writable || conn.written == 0) {
                match flush(conn) {
                    Ok(true) => {
                        conn.phase = Phase::Waiting;
                        if conn.parks {
                            self.sink.progress.parked += 1;
                        }
                        let cursor = &self.subs[conn.sub].cursor;
                        conn.deadline = reply_deadline_ms(cursor).map(|ms| Instant::now() + Duration::from_millis(ms));
                    }
                    Ok(false) => return Next::Stay,
                    Err(_) => {
                        self.sink.counters.server_closes += 1;
                        return Next::Reconnect;
                    }
                }
            }
            let eof = match read_all(conn, &mut self.scratch) {
                Ok(eof) => eof,
                Err(_) => {
                    self.sink.counters.server_closes += 1;
                    return Next::Reconnect;
                }
            };
            let sub = &mut self.subs[conn.sub];
            next = process(conn, sub, &mut self.sink, &self.endpoint, now_ns);
            if next == Next::Reply {
                // A pong: tiny, so a short write is finished on the next writable event.
                if flush(conn).is_err() {
                    self.sink.counters.server_closes += 1;
                    return Next::Reconnect;
                }
                next = Next::Send;
                if eof {
                    self.sink.counters.server_closes += 1;
                    return Next::Reconnect;
                }
                continue;
            }
            if next == Next::Send {
                // The parked request was answered; the re-poll is a new request.
                if conn.parks {
                    self.sink.progress.parked -= 1;
                }
                conn.parks = self.endpoint.parks(&sub.cursor);
                conn.deadline = None;
                conn.written = 0;
                if conn.resume_at.is_some() {
                    conn.phase = Phase::Resting;
                    return if eof { Next::Reconnect } else { Next::Stay };
                }
                conn.phase = Phase::Sending;
                continue;
            }
            if eof && next == Next::Stay {
                next = match conn.reader.finish_eof() {
                    Ok(true) => process(conn, sub, &mut self.sink, &self.endpoint, now_ns),
                    _ => Next::Stay,
                };
                self.sink.counters.server_closes += 1;
                return if next == Next::Retry { Next::Retry } else { Next::Reconnect };
            }
        }
        next
    }

    /// Close the connections collected this batch, then reconnect or schedule retries.
    fn close_done(&mut self, done: &mut Vec<(usize, Next)>) {
        for (key, next) in done.drain(..) {
            if !self.conns.contains(key) {
                continue;
            }
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.sink.progress.open -= 1;
            match conn.phase {
                Phase::Connecting => self.connecting -= 1,
                Phase::Waiting | Phase::Streaming if conn.parks => self.sink.progress.parked -= 1,
                Phase::Waiting | Phase::Streaming | Phase::Sending | Phase::Resting => {}
            }
            let s = conn.sub;
            self.subs[s].conn = None;
            if let Some(c) = conn.sse.cursor() {
                self.subs[s].cursor = c;
            }
            if self.stop.load(Ordering::Relaxed) {
                continue;
            }
            match next {
                Next::Retry => self.fail(s),
                _ => self.to_connect.push_back(s),
            }
        }
    }

    /// Disconnect the next parked subscriber on purpose; it reconnects with its cursor.
    fn churn_one(&mut self, done: &mut Vec<(usize, Next)>) {
        for _ in 0..self.subs.len() {
            let s = self.churn_cursor % self.subs.len().max(1);
            self.churn_cursor = self.churn_cursor.wrapping_add(1);
            let Some(key) = self.subs[s].conn else {
                continue;
            };
            let parked = self.conns.get(key).is_some_and(|c| matches!(c.phase, Phase::Waiting | Phase::Streaming));
            if parked {
                self.sink.counters.churned += 1;
                done.push((key, Next::Reconnect));
                self.close_done(done);
                return;
            }
        }
    }

    /// Report at once (not at the next tick) when every subscriber of this loop has parked
    /// or warmed up, so the parent's set-up and warm-up times are not rounded to a tick.
    fn announce_milestones(&mut self, m: &mut Milestones) {
        let n = self.subs.len() as u64;
        let p = self.sink.progress;
        let parked = p.parked + p.failed >= n;
        let warm = p.warm + p.failed >= n;
        if (parked && !m.parked) || (warm && !m.warm) {
            m.parked |= parked;
            m.warm |= warm;
            emit(&ChildMsg::Progress { thread: self.thread, progress: p });
        }
    }

    /// Once per tick: give up on requests past their deadline (reconnect, keeping the
    /// session) and send the requests whose rest (`advice.interval`) is over. A scan rather
    /// than a timer queue: it is a few thousand comparisons per tick and needs no bound.
    fn check_timers(&mut self, now: Instant, done: &mut Vec<(usize, Next)>) {
        let mut resume = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if conn.phase == Phase::Waiting && conn.deadline.is_some_and(|d| now >= d) {
                conn.deadline = None;
                self.sink.counters.late_replies += 1;
                done.push((key, Next::Retry));
            } else if conn.phase == Phase::Resting && conn.resume_at.is_some_and(|r| now >= r) {
                conn.resume_at = None;
                conn.phase = Phase::Sending;
                resume.push(key);
            }
        }
        let now_ns = unix_ns();
        for key in resume {
            let next = self.on_event(key, false, now_ns);
            if next != Next::Stay {
                done.push((key, next));
            }
        }
        self.close_done(done);
    }

    fn tick(&mut self) {
        let index = (unix_ns().saturating_sub(self.start_unix_ns) / 1_000_000 / TICK_MS) as usize;
        self.sink.timeline.set(index, self.sink.progress.open, self.sink.tick_delivered);
        self.sink.tick_delivered = 0;
        emit(&ChildMsg::Progress { thread: self.thread, progress: self.sink.progress });
    }

    fn flush_got(&mut self) {
        if self.sink.got.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.sink.got).into_iter().map(|(seq, (n, last))| (seq, n, last)).collect();
        emit(&ChildMsg::Got { items });
    }

    fn finish(&mut self) -> ChildResult {
        self.flush_got();
        self.tick();
        for mut conn in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        let mut orders = Orders::default();
        if self.check_order {
            for sub in self.subs.iter().filter(|s| s.warm) {
                orders.add(sub.order.value(), 1);
            }
        }
        ChildResult {
            orders,
            progress: self.sink.progress,
            checks: self.sink.checks,
            counters: self.sink.counters,
            latency: self.sink.latency.snapshot(),
            latency_series: self.sink.series.snapshot(),
            timeline: std::mem::take(&mut self.sink.timeline),
        }
    }
}

/// Which "everyone here is ..." reports a loop already sent.
#[derive(Debug, Default)]
struct Milestones {
    parked: bool,
    warm: bool,
}

enum ConnectOutcome {
    Pending,
    Connected,
    Failed,
}

/// After a writable/error event on a connecting socket: did the connect finish?
fn connect_outcome(stream: &Stream) -> ConnectOutcome {
    match stream.take_error() {
        Ok(Some(_)) | Err(_) => return ConnectOutcome::Failed,
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => ConnectOutcome::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => ConnectOutcome::Pending,
        Err(_) => ConnectOutcome::Failed,
    }
}

/// Write what is left of `out`; true when all of it is written. A short write is not an error.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    while conn.written < conn.out.len() {
        match conn.stream.write(&conn.out[conn.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Read until `WouldBlock`; true on EOF.
fn read_all(conn: &mut Conn, scratch: &mut [u8]) -> io::Result<bool> {
    loop {
        match conn.stream.read(scratch) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                if conn.inbuf.len() + n > MAX_INBUF {
                    return Err(io::Error::other("response larger than the read bound"));
                }
                conn.inbuf.extend_from_slice(&scratch[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Handle the buffered bytes of one connection: deliveries, cursor moves, and what next.
fn process(conn: &mut Conn, sub: &mut Sub, sink: &mut Sink, ep: &Endpoint, now_ns: u64) -> Next {
    if ep.mode == Mode::Ws {
        return process_ws(conn, sub, sink, now_ns);
    }
    loop {
        let (used, step) = match conn.reader.advance(&conn.inbuf) {
            Ok(r) => r,
            Err(_) => {
                sink.counters.http_errors += 1;
                return Next::Retry;
            }
        };
        conn.inbuf.drain(..used);
        match ep.mode {
            Mode::Longpoll | Mode::Pushlet | Mode::Bayeux => match step {
                Step::NeedMore => return Next::Stay,
                Step::HeadDone => continue,
                Step::BodyDone => return longpoll_done(conn, sub, sink, ep, now_ns),
            },
            Mode::Sse => {
                if conn.phase == Phase::Waiting {
                    match conn.reader.head() {
                        Some(h) if h.status == 200 && h.event_stream => conn.phase = Phase::Streaming,
                        Some(_) => {
                            sink.counters.http_errors += 1;
                            return Next::Retry;
                        }
                        None => {}
                    }
                }
                let body = conn.reader.take_body();
                let fed = conn.sse.feed(&body, |data| match parse_stamp(data) {
                    Some(stamp) => sink.deliver(sub, stamp, now_ns),
                    None => sink.counters.foreign += 1,
                });
                if fed.is_err() {
                    sink.counters.http_errors += 1;
                    return Next::Retry;
                }
                if let Some(c) = conn.sse.cursor() {
                    sub.cursor = c;
                }
                match step {
                    Step::NeedMore => return Next::Stay,
                    Step::HeadDone => continue,
                    Step::BodyDone => return Next::Reconnect,
                }
            }
            Mode::Stream => {
                if conn.phase == Phase::Waiting {
                    match conn.reader.head() {
                        Some(h) if h.status == 200 => conn.phase = Phase::Streaming,
                        Some(_) => {
                            sink.counters.http_errors += 1;
                            return Next::Retry;
                        }
                        None => {}
                    }
                }
                let body = conn.reader.take_body();
                let mut bad = false;
                let fed = conn.lines.feed(&body, |line| bad |= !stream_line(line, sub, sink, now_ns));
                if fed.is_err() || bad {
                    sink.counters.http_errors += 1;
                    return Next::Retry;
                }
                match step {
                    Step::NeedMore => return Next::Stay,
                    Step::HeadDone => continue,
                    // After `{"type":"end"}`: reconnect with its cursor.
                    Step::BodyDone => return Next::Reconnect,
                }
            }
            Mode::Ws => return Next::Retry,
        }
    }
}

/// One ndjson line or WebSocket text message: deliver it, move the cursor; false if unreadable.
fn stream_line(line: &[u8], sub: &mut Sub, sink: &mut Sink, now_ns: u64) -> bool {
    match stream_item(line) {
        Ok(StreamItem::Message { id, stamp }) => {
            if let Some(id) = id {
                sub.cursor = Cursor::Halley(id);
            }
            match stamp {
                Some(stamp) => sink.deliver(sub, stamp, now_ns),
                None => sink.counters.foreign += 1,
            }
        }
        Ok(StreamItem::End { next: Some(next) }) => sub.cursor = Cursor::Halley(next),
        Ok(StreamItem::Gap) => sink.counters.server_gaps += 1,
        Ok(StreamItem::Overflow) => sink.counters.server_closes += 1,
        Ok(StreamItem::End { next: None } | StreamItem::Control) => {}
        Err(_) => return false,
    }
    true
}

/// WebSocket bytes: the `101` head first, then frames. Pings are answered (RFC 6455 §5.5.2) by
/// putting a pong in `out` and returning [`Next::Reply`]; call again afterwards for the rest.
fn process_ws(conn: &mut Conn, sub: &mut Sub, sink: &mut Sink, now_ns: u64) -> Next {
    if conn.phase == Phase::Waiting {
        match parse_head(&conn.inbuf) {
            Ok(None) => return Next::Stay,
            Ok(Some((head, used))) => {
                conn.inbuf.drain(..used);
                if head.status != 101 {
                    sink.counters.http_errors += 1;
                    return Next::Retry;
                }
                conn.phase = Phase::Streaming;
            }
            Err(_) => {
                sink.counters.http_errors += 1;
                return Next::Retry;
            }
        }
    }
    let mut used_total = 0;
    let next = loop {
        let (used, event) = match conn.ws.decode(&conn.inbuf[used_total..]) {
            Ok((0, _)) => break Next::Stay,
            Ok(decoded) => decoded,
            Err(_) => {
                sink.counters.http_errors += 1;
                break Next::Retry;
            }
        };
        used_total += used;
        let message = match event {
            Some(WsEvent::Text(text)) => text.into_bytes(),
            Some(WsEvent::Binary(data)) => data,
            Some(WsEvent::Ping(payload)) => {
                if conn.written >= conn.out.len() {
                    conn.out.clear();
                    conn.written = 0;
                }
                let mask = (sub.global ^ now_ns as u32).to_be_bytes();
                encode_masked_frame(&mut conn.out, Opcode::Pong, &payload, mask);
                break Next::Reply;
            }
            Some(WsEvent::Close { .. }) => {
                sink.counters.server_closes += 1;
                break Next::Reconnect;
            }
            // A pong, or a fragment of a message still arriving.
            Some(WsEvent::Pong(_)) | None => continue,
        };
        if !stream_line(&message, sub, sink, now_ns) {
            sink.counters.http_errors += 1;
            break Next::Retry;
        }
    };
    conn.inbuf.drain(..used_total);
    next
}

/// A complete long-poll response: deliver its messages and prepare the re-poll.
fn longpoll_done(conn: &mut Conn, sub: &mut Sub, sink: &mut Sink, ep: &Endpoint, now_ns: u64) -> Next {
    let head = conn.reader.head().cloned();
    let body = conn.reader.take_body();
    conn.reader.reset();
    let Some(head) = head else { return Next::Retry };
    sink.counters.responses += 1;
    // Session protocols read every status themselves (a Pushlet 400 can mean "session gone").
    if !ep.mode.is_session() && !matches!(head.status, 200 | 204 | 304 | 408) {
        sink.counters.http_errors += 1;
        return Next::Retry;
    }
    match ep.longpoll_response(&head, &body, &mut sub.cursor) {
        Ok(polled) => {
            if polled.stamps.is_empty() {
                sink.counters.empty_responses += 1;
            }
            if polled.gap {
                sink.counters.server_gaps += 1;
            }
            if polled.session_lost {
                sink.counters.sessions_lost += 1;
            }
            conn.resume_at = (polled.pause_ms > 0).then(|| Instant::now() + Duration::from_millis(polled.pause_ms));
            sink.counters.foreign += u64::from(polled.foreign);
            for stamp in polled.stamps {
                sink.deliver(sub, stamp, now_ns);
            }
        }
        Err(_) => {
            sink.counters.http_errors += 1;
            return Next::Retry;
        }
    }
    if !head.keep_alive {
        return Next::Reconnect;
    }
    conn.out = ep.subscribe_request(&sub.topic, &sub.cursor);
    Next::Send
}
