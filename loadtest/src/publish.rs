//! The publisher: a thread in the parent with its own `mio` loop over P keep-alive publisher
//! connections, one request in flight on each. It publishes stamped messages on command: one
//! at a time (broadcast), a warm-up message to every topic, or a paced rate for a duration.
//!
//! Sequence numbers count per publisher connection (`src`) and topic; 0 is the warm-up.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::tls::Stream;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Deserialize;

use crate::feed::Endpoint;
use crate::http::{ResponseReader, Step};
use crate::ipc::Topics;
use crate::stamp::{encode_body, unix_ns, Stamp};
use crate::stats::{HistSnapshot, Latency};

const WAKER: Token = Token(0);
/// Largest publish reply we read, in bytes.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Most publishes waiting for a free connection; a rate that outruns the connections drops
/// the excess (counted as `dropped`, so the run reports it did not keep up).
const MAX_QUEUE: usize = 100_000;
/// A paced publish sent later than this after its due time counts as late.
const LATE_AFTER: Duration = Duration::from_millis(10);

/// What the parent asks the publisher to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PubCmd {
    /// Publish the next message to topic index `topic`; answer with `Sent` and `Acked`.
    One { topic: u32 },
    /// Publish the warm-up message (seq 0) to topics `0..topics`; answer with `WarmupDone`.
    Warmup { topics: u32 },
    /// Publish `per_s` messages a second for `duration`, to topic 0 or, when `topics > 1`,
    /// to random topics below it; answer with `RateDone`.
    Rate { per_s: f64, duration: Duration, topics: u32 },
}

/// What the publisher reports.
#[derive(Debug, Clone, PartialEq)]
pub enum PubEvent {
    Sent { seq: u64, sent_ns: u64 },
    Acked { seq: u64, ok: bool, delivered: Option<u64> },
    WarmupDone { published: u64, failed: u64 },
    RateDone(RateOutcome),
    Error(String),
}

/// How a paced run went.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct RateOutcome {
    pub scheduled: u64,
    pub published: u64,
    pub failed: u64,
    /// Sent more than [`LATE_AFTER`] after their due time.
    pub late: u64,
    /// Never sent: the queue was full.
    pub dropped: u64,
    pub max_lag_ms: f64,
    pub elapsed_s: f64,
}

/// Totals over the publisher's life.
#[derive(Debug, Clone, Default)]
pub struct PubTotals {
    pub published: u64,
    pub failed: u64,
    /// Publish request -> reply, ns.
    pub rtt: HistSnapshot,
}

/// Handle to the running publisher thread.
#[derive(Debug)]
pub struct Publisher {
    tx: mpsc::Sender<Option<PubCmd>>,
    waker: Arc<Waker>,
    handle: JoinHandle<PubTotals>,
}

/// Connect `connections` publishers, connection i to `targets[i % len]` (several targets are
/// the nodes of a cluster), and start the loop; `report` gets every event.
pub fn start(
    targets: &[SocketAddr],
    endpoint: Endpoint,
    topics: Topics,
    connections: u32,
    pad: usize,
    report: Box<dyn FnMut(PubEvent) + Send>,
) -> io::Result<Publisher> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut conns = Vec::new();
    if targets.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no server to publish to"));
    }
    for i in 0..connections.max(1) {
        let target = targets[i as usize % targets.len()];
        let mut c = PConn::connect(target, i, endpoint.tls.as_ref())?;
        poll.registry().register(&mut c.stream, Token(i as usize + 1), Interest::READABLE | Interest::WRITABLE)?;
        conns.push(c);
    }
    let (tx, rx) = mpsc::channel();
    let mut lp = PubLoop {
        poll,
        rx,
        endpoint,
        topics,
        pad,
        report,
        conns,
        queue: VecDeque::new(),
        seqs: Vec::new(),
        job: None,
        rtt: Latency::new(),
        published: 0,
        failed: 0,
        rng: unix_ns() | 1,
    };
    let handle = std::thread::Builder::new().name("publisher".into()).spawn(move || lp.run())?;
    Ok(Publisher { tx, waker, handle })
}

impl Publisher {
    pub fn send(&self, cmd: PubCmd) {
        let _ = self.tx.send(Some(cmd));
        let _ = self.waker.wake();
    }

    /// Stop the loop (in-flight publishes are abandoned) and return the totals.
    pub fn stop(self) -> PubTotals {
        let _ = self.tx.send(None);
        let _ = self.waker.wake();
        self.handle.join().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy)]
struct Job {
    topic: u32,
    warm: bool,
    /// Report `Sent`/`Acked` for this one.
    report: bool,
    due: Option<Instant>,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    report: bool,
    sent: Instant,
}

#[derive(Debug)]
struct PConn {
    src: u32,
    /// The server this connection publishes to (reconnects go there too).
    target: SocketAddr,
    stream: Stream,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    reader: ResponseReader,
    in_flight: Option<InFlight>,
}

impl PConn {
    fn connect(target: SocketAddr, src: u32, tls: Option<&crate::tls::TlsOptions>) -> io::Result<PConn> {
        // Publishers are few: a blocking loopback connect keeps this simple (and building the
        // TLS config per connection too).
        let std_stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let tls =
            tls.map(|t| t.client_config().and_then(|c| Ok((c, t.name()?)))).transpose().map_err(io::Error::other)?;
        Ok(PConn {
            src,
            target,
            stream: Stream::new(TcpStream::from_std(std_stream), tls.as_ref())?,
            out: Vec::new(),
            written: 0,
            inbuf: Vec::new(),
            reader: ResponseReader::new(MAX_REPLY_BYTES),
            in_flight: None,
        })
    }
}

#[derive(Debug)]
enum Mode {
    Warmup { published: u64, failed: u64 },
    Rate { start: Instant, per_s: f64, duration: Duration, topics: u32, out: RateOutcome },
}

struct PubLoop {
    poll: Poll,
    rx: mpsc::Receiver<Option<PubCmd>>,
    endpoint: Endpoint,
    topics: Topics,
    pad: usize,
    report: Box<dyn FnMut(PubEvent) + Send>,
    conns: Vec<PConn>,
    queue: VecDeque<Job>,
    /// `seqs[src][topic]`: last sequence number used.
    seqs: Vec<Vec<u64>>,
    job: Option<Mode>,
    rtt: Latency,
    published: u64,
    failed: u64,
    rng: u64,
}

impl PubLoop {
    fn run(&mut self) -> PubTotals {
        let mut events = Events::with_capacity(256);
        loop {
            loop {
                match self.rx.try_recv() {
                    Ok(Some(cmd)) => self.command(cmd),
                    Ok(None) | Err(mpsc::TryRecvError::Disconnected) => return self.totals(),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            let timeout = self.schedule();
            self.dispatch();
            self.check_done();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    (self.report)(PubEvent::Error(format!("publisher poll: {e}")));
                    return self.totals();
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let i = ev.token().0 - 1;
                if i < self.conns.len() {
                    self.on_event(i);
                }
            }
        }
    }

    fn command(&mut self, cmd: PubCmd) {
        match cmd {
            PubCmd::One { topic } => self.queue.push_back(Job { topic, warm: false, report: true, due: None }),
            PubCmd::Warmup { topics } => {
                self.job = Some(Mode::Warmup { published: 0, failed: 0 });
                for topic in 0..topics {
                    self.queue.push_back(Job { topic, warm: true, report: false, due: None });
                }
            }
            PubCmd::Rate { per_s, duration, topics } => {
                self.job =
                    Some(Mode::Rate { start: Instant::now(), per_s, duration, topics, out: RateOutcome::default() });
            }
        }
    }

    /// Queue the paced publishes now due; returns the poll timeout until the next one.
    fn schedule(&mut self) -> Option<Duration> {
        let Some(Mode::Rate { start, per_s, duration, topics, out }) = &mut self.job else {
            return Some(Duration::from_millis(100));
        };
        // Publish k (from 0) is due at start + k / per_s; `total` of them fit in the duration.
        let total = (duration.as_secs_f64() * *per_s).round() as u64;
        let elapsed = start.elapsed();
        let due_total = ((elapsed.as_secs_f64() * *per_s) as u64 + 1).min(total);
        while out.scheduled < due_total {
            let due = *start + Duration::from_secs_f64(out.scheduled as f64 / *per_s);
            out.scheduled += 1;
            if self.queue.len() >= MAX_QUEUE {
                out.dropped += 1;
                continue;
            }
            let topic = if *topics > 1 { (xorshift(&mut self.rng) % u64::from(*topics)) as u32 } else { 0 };
            self.queue.push_back(Job { topic, warm: false, report: false, due: Some(due) });
        }
        if out.scheduled >= total {
            return Some(Duration::from_millis(10));
        }
        let next_due = *start + Duration::from_secs_f64(out.scheduled as f64 / *per_s);
        Some(next_due.saturating_duration_since(Instant::now()))
    }

    /// Hand queued publishes to idle connections.
    fn dispatch(&mut self) {
        for i in 0..self.conns.len() {
            if self.conns[i].in_flight.is_some() {
                continue;
            }
            let Some(job) = self.queue.pop_front() else {
                return;
            };
            self.send(i, job);
        }
    }

    fn send(&mut self, i: usize, job: Job) {
        let src = self.conns[i].src;
        let seq = if job.warm { 0 } else { self.next_seq(src, job.topic) };
        let now = Instant::now();
        let ts = unix_ns();
        if let (Some(due), Some(Mode::Rate { out, .. })) = (job.due, &mut self.job) {
            let lag = now.saturating_duration_since(due);
            if lag > LATE_AFTER {
                out.late += 1;
            }
            out.max_lag_ms = out.max_lag_ms.max(lag.as_secs_f64() * 1e3);
        }
        let body = encode_body(Stamp { src, seq, ts }, self.pad);
        let conn = &mut self.conns[i];
        conn.out = self.endpoint.publish_request(&self.topics.name(job.topic), &body);
        conn.written = 0;
        conn.in_flight = Some(InFlight { seq, report: job.report, sent: now });
        if job.report {
            (self.report)(PubEvent::Sent { seq, sent_ns: ts });
        }
        if write_out(conn).is_err() {
            self.conn_failed(i);
        }
    }

    fn next_seq(&mut self, src: u32, topic: u32) -> u64 {
        let (s, t) = (src as usize, topic as usize);
        if self.seqs.len() <= s {
            self.seqs.resize(s + 1, Vec::new());
        }
        let row = &mut self.seqs[s];
        if row.len() <= t {
            row.resize(t + 1, 0);
        }
        row[t] += 1;
        row[t]
    }

    fn on_event(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if write_out(conn).is_err() {
            return self.conn_failed(i);
        }
        let mut buf = [0u8; 8192];
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => return self.conn_failed(i),
                Ok(n) => {
                    if conn.inbuf.len() + n > MAX_REPLY_BYTES {
                        return self.conn_failed(i);
                    }
                    conn.inbuf.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.conn_failed(i),
            }
        }
        loop {
            let conn = &mut self.conns[i];
            let (used, step) = match conn.reader.advance(&conn.inbuf) {
                Ok(r) => r,
                Err(_) => return self.conn_failed(i),
            };
            conn.inbuf.drain(..used);
            match step {
                Step::NeedMore => return,
                Step::HeadDone => continue,
                Step::BodyDone => {
                    let head = conn.reader.head().cloned();
                    let body = conn.reader.take_body();
                    conn.reader.reset();
                    let ok = head.as_ref().is_some_and(|h| (200..300).contains(&h.status));
                    let keep = head.as_ref().is_some_and(|h| h.keep_alive);
                    if let Some(f) = conn.in_flight.take() {
                        self.rtt.record(f.sent.elapsed().as_nanos() as u64);
                        self.finished(ok, f, delivered_count(&body));
                    }
                    if !keep {
                        return self.reconnect(i);
                    }
                    return;
                }
            }
        }
    }

    fn finished(&mut self, ok: bool, f: InFlight, delivered: Option<u64>) {
        if ok {
            self.published += 1;
        } else {
            self.failed += 1;
        }
        match &mut self.job {
            Some(Mode::Warmup { published, failed }) if f.seq == 0 => {
                if ok {
                    *published += 1
                } else {
                    *failed += 1
                }
            }
            Some(Mode::Rate { out, .. }) if !f.report => {
                if ok {
                    out.published += 1
                } else {
                    out.failed += 1
                }
            }
            _ => {}
        }
        if f.report {
            (self.report)(PubEvent::Acked { seq: f.seq, ok, delivered });
        }
    }

    /// A publisher connection broke: its in-flight publish counts as failed; reconnect.
    fn conn_failed(&mut self, i: usize) {
        if let Some(f) = self.conns[i].in_flight.take() {
            self.finished(false, f, None);
        }
        self.reconnect(i);
    }

    fn reconnect(&mut self, i: usize) {
        let _ = self.poll.registry().deregister(&mut self.conns[i].stream);
        match PConn::connect(self.conns[i].target, self.conns[i].src, self.endpoint.tls.as_ref()) {
            Ok(mut c) => {
                if self
                    .poll
                    .registry()
                    .register(&mut c.stream, Token(i + 1), Interest::READABLE | Interest::WRITABLE)
                    .is_ok()
                {
                    self.conns[i] = c;
                    return;
                }
                (self.report)(PubEvent::Error("publisher register failed".into()));
            }
            Err(e) => (self.report)(PubEvent::Error(format!("publisher reconnect: {e}"))),
        }
    }

    /// Report a finished warm-up or paced run once nothing is queued or in flight.
    fn check_done(&mut self) {
        let idle = self.queue.is_empty() && self.conns.iter().all(|c| c.in_flight.is_none());
        if !idle {
            return;
        }
        match &self.job {
            Some(Mode::Warmup { published, failed }) => {
                let ev = PubEvent::WarmupDone { published: *published, failed: *failed };
                self.job = None;
                (self.report)(ev);
            }
            Some(Mode::Rate { start, duration, out, .. }) if start.elapsed() >= *duration => {
                let mut out = *out;
                out.elapsed_s = start.elapsed().as_secs_f64();
                self.job = None;
                (self.report)(PubEvent::RateDone(out));
            }
            _ => {}
        }
    }

    fn totals(&self) -> PubTotals {
        PubTotals { published: self.published, failed: self.failed, rtt: self.rtt.snapshot() }
    }
}

/// Write what is left of the request; a short write waits for the next writable event.
fn write_out(conn: &mut PConn) -> io::Result<()> {
    while conn.written < conn.out.len() {
        match conn.stream.write(&conn.out[conn.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Subscribers reached, from Halley's `{"delivered":N}` or Nchan's `{"subscribers":N}`.
fn delivered_count(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Reply {
        delivered: Option<u64>,
        subscribers: Option<u64>,
    }
    let r: Reply = serde_json::from_slice(body).ok()?;
    r.delivered.or(r.subscribers)
}

/// xorshift64: topic picks need spread, not cryptographic quality.
fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_counts_from_both_flavours() {
        assert_eq!(delivered_count(br#"{"id":"1-1","topic":"/t","time":1,"delivered":42}"#), Some(42));
        assert_eq!(delivered_count(br#"{"messages":1,"requested":0,"subscribers":7,"last_message_id":"x"}"#), Some(7));
        assert_eq!(delivered_count(b"queued messages: 1"), None);
    }

    #[test]
    fn random_topics_cover_the_range() {
        let mut rng = 12345u64;
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[(xorshift(&mut rng) % 10) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
