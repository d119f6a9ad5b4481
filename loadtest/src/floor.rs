//! The `floor` server: the least a server can do to serve the same load. It speaks the subset of
//! Halley's native API the scenarios use (`POST /pub/<t>`, long-poll `GET /sub/<t>?since=`,
//! SSE), one `mio` loop per thread with its own `SO_REUSEPORT` listener, and per message it
//! builds the response bytes once and writes them to every waiting subscriber. Its CPU per
//! delivery, measured minutes apart on the same machine, is the kernel floor a report divides
//! Halley's cost by.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use crate::stamp::unix_ns;

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
/// Connection tokens start here (slab key + offset).
const FIRST_CONN: usize = 2;
/// Longest request head plus body we buffer, in bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Messages kept per topic for `since=` catch-up.
const RING: usize = 4096;
/// Bytes queued to one slow subscriber before it is closed.
const MAX_PENDING_BYTES: usize = 1024 * 1024;
/// Pending connections in each listener's accept queue.
const BACKLOG: i32 = 4096;

/// Start the floor server on `listen` with `threads` loops; returns the bound address and the
/// thread handles (they run until the process exits).
pub fn start(listen: SocketAddr, threads: usize) -> io::Result<(SocketAddr, Vec<std::thread::JoinHandle<()>>)> {
    let threads = threads.max(1);
    let first = reuseport_listener(listen)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(reuseport_listener(addr)?);
    }
    let mut polls = Vec::new();
    let mut peers = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..threads {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel::<Arc<FloorMsg>>();
        polls.push(poll);
        peers.push((tx, waker));
        inboxes.push(rx);
    }
    let sequencer = Arc::new(Mutex::new(Sequencer { last_id: 0, peers }));
    let mut handles = Vec::new();
    for (t, ((poll, inbox), listener)) in polls.into_iter().zip(inboxes).zip(listeners).enumerate() {
        let mut lp = FloorLoop {
            poll,
            listener: TcpListener::from_std(listener),
            inbox,
            sequencer: sequencer.clone(),
            conns: Slab::new(),
            topics: HashMap::new(),
            accepting: true,
        };
        handles.push(std::thread::Builder::new().name(format!("floor-{t}")).spawn(move || lp.run())?);
    }
    Ok((addr, handles))
}

/// The one place message ids are assigned, with every thread's inbox.
#[derive(Debug)]
struct Sequencer {
    last_id: u64,
    peers: Vec<(mpsc::Sender<Arc<FloorMsg>>, Arc<Waker>)>,
}

/// One published message with its wire forms built once.
#[derive(Debug)]
struct FloorMsg {
    topic: String,
    id: u64,
    /// The JSON object for this message inside a long-poll `messages` array.
    entry: Vec<u8>,
    /// A complete long-poll response carrying just this message.
    longpoll: Arc<[u8]>,
    /// One SSE event.
    sse: Arc<[u8]>,
}

#[derive(Debug, Default)]
struct TopicState {
    ring: VecDeque<Arc<FloorMsg>>,
    /// Id of the newest message dropped from `ring`; a cursor before it missed messages.
    evicted_upto: u64,
    /// Long-poll connections parked on this topic (checked against their state on use).
    waiting: Vec<usize>,
    streams: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a request.
    Reading,
    /// Long-poll parked on the topic.
    Parked(String),
    /// SSE stream open on the topic.
    Streaming(String),
}

#[derive(Debug)]
struct FConn {
    stream: TcpStream,
    state: State,
    inbuf: Vec<u8>,
    pending: VecDeque<(Arc<[u8]>, usize)>,
    pending_bytes: usize,
}

struct FloorLoop {
    poll: Poll,
    listener: TcpListener,
    inbox: mpsc::Receiver<Arc<FloorMsg>>,
    sequencer: Arc<Mutex<Sequencer>>,
    conns: Slab<FConn>,
    topics: HashMap<String, TopicState>,
    accepting: bool,
}

/// A parsed request: what the floor acts on.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Publish { topic: String, body: Vec<u8> },
    Subscribe { topic: String, since: Option<u64>, sse: bool },
    Health,
    NotFound,
}

impl FloorLoop {
    fn run(&mut self) {
        if self.poll.registry().register(&mut self.listener, LISTENER, Interest::READABLE).is_err() {
            return;
        }
        let mut events = Events::with_capacity(1024);
        let mut dead = Vec::new();
        loop {
            // Re-arm accepting after an fd shortage, at most once a poll timeout.
            let timeout = if self.accepting { None } else { Some(Duration::from_millis(50)) };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if !self.accepting {
                self.accepting = true;
                self.accept();
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(),
                    Token(t) => {
                        let key = t - FIRST_CONN;
                        if self.conns.contains(key) && !self.on_conn(key) {
                            dead.push(key);
                        }
                    }
                }
            }
            while let Ok(msg) = self.inbox.try_recv() {
                self.deliver(&msg, &mut dead);
            }
            for key in dead.drain(..) {
                if self.conns.contains(key) {
                    let mut c = self.conns.remove(key);
                    let _ = self.poll.registry().deregister(&mut c.stream);
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key() + FIRST_CONN);
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        entry.insert(FConn {
                            stream,
                            state: State::Reading,
                            inbuf: Vec::new(),
                            pending: VecDeque::new(),
                            pending_bytes: 0,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // EMFILE and friends: stop accepting for a moment instead of spinning.
                    self.accepting = false;
                    return;
                }
            }
        }
    }

    /// Handle readiness on a connection; false when it must be closed.
    fn on_conn(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        if flush(c).is_err() {
            return false;
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    if c.inbuf.len() + n > MAX_REQUEST_BYTES {
                        return false;
                    }
                    c.inbuf.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return false;
            };
            if c.state != State::Reading {
                return true; // a parked long-poll sends nothing until answered
            }
            let (req, used) = match parse_request(&c.inbuf) {
                Ok(Some(r)) => r,
                Ok(None) => return true,
                Err(()) => return false,
            };
            c.inbuf.drain(..used);
            if !self.handle(key, req) {
                return false;
            }
        }
    }

    fn handle(&mut self, key: usize, req: Request) -> bool {
        match req {
            Request::Health => self.send(key, Arc::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..])),
            Request::NotFound => self.send(key, Arc::from(&b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..])),
            Request::Publish { topic, body } => {
                let msg = self.sequence(topic, &body);
                let id = msg.id;
                let reply = format!(
                    "{{\"id\":\"0-{id}\",\"topic\":\"/{}\",\"time\":{},\"delivered\":0}}",
                    msg.topic,
                    unix_ns() / 1_000_000
                );
                let head = format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                    reply.len()
                );
                // Deliver locally now, in sequence: the inbox holds this message and any
                // earlier one another thread sequenced.
                let mut dead = Vec::new();
                while let Ok(m) = self.inbox.try_recv() {
                    self.deliver(&m, &mut dead);
                }
                for k in dead {
                    if k != key && self.conns.contains(k) {
                        let mut c = self.conns.remove(k);
                        let _ = self.poll.registry().deregister(&mut c.stream);
                    }
                }
                self.send(key, Arc::from(head.into_bytes()))
            }
            Request::Subscribe { topic, since, sse } => {
                let t = self.topics.entry(topic.clone()).or_default();
                let backlog: Vec<Arc<FloorMsg>> = match since {
                    Some(s) => t.ring.iter().filter(|m| m.id > s).cloned().collect(),
                    None => Vec::new(),
                };
                // The cursor is older than the ring: say so (Halley's `"gap":true`).
                let gap = since.is_some_and(|s| s < t.evicted_upto);
                if sse {
                    t.streams.push(key);
                    let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n".to_vec();
                    for m in &backlog {
                        out.extend_from_slice(&m.sse);
                    }
                    if let Some(c) = self.conns.get_mut(key) {
                        c.state = State::Streaming(topic);
                    }
                    return self.send(key, Arc::from(out));
                }
                if backlog.is_empty() {
                    t.waiting.push(key);
                    if let Some(c) = self.conns.get_mut(key) {
                        c.state = State::Parked(topic);
                    }
                    return true;
                }
                self.send(key, Arc::from(catch_up_response(&backlog, gap)))
            }
        }
    }

    /// Give a publish its id and hand it to every thread (this one too) under one lock, so
    /// every thread sees messages in id order and `since=` catch-up never skips one.
    fn sequence(&self, topic: String, body: &[u8]) -> Arc<FloorMsg> {
        let mut seq = self.sequencer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seq.last_id += 1;
        let msg = Arc::new(build_msg(topic, seq.last_id, body));
        for (tx, waker) in &seq.peers {
            if tx.send(msg.clone()).is_ok() {
                let _ = waker.wake();
            }
        }
        msg
    }

    /// Write `msg` to every subscriber of its topic on this thread, and keep it for catch-up.
    fn deliver(&mut self, msg: &Arc<FloorMsg>, dead: &mut Vec<usize>) {
        let t = self.topics.entry(msg.topic.clone()).or_default();
        if t.ring.len() == RING {
            if let Some(old) = t.ring.pop_front() {
                t.evicted_upto = old.id;
            }
        }
        t.ring.push_back(msg.clone());
        let waiting = std::mem::take(&mut t.waiting);
        let mut streams = std::mem::take(&mut t.streams);
        for key in waiting {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if !matches!(&c.state, State::Parked(topic) if *topic == msg.topic) {
                continue;
            }
            c.state = State::Reading;
            if queue(c, msg.longpoll.clone()).is_err() {
                dead.push(key);
            }
        }
        streams.retain(|&key| {
            let Some(c) = self.conns.get_mut(key) else {
                return false;
            };
            if !matches!(&c.state, State::Streaming(topic) if *topic == msg.topic) {
                return false;
            }
            if queue(c, msg.sse.clone()).is_err() {
                dead.push(key);
                return false;
            }
            true
        });
        if let Some(t) = self.topics.get_mut(&msg.topic) {
            t.streams.append(&mut streams);
        }
    }

    fn send(&mut self, key: usize, bytes: Arc<[u8]>) -> bool {
        match self.conns.get_mut(key) {
            Some(c) => queue(c, bytes).is_ok(),
            None => false,
        }
    }
}

/// Write `bytes` now, queueing what the socket does not take; error when the queue is full.
fn queue(c: &mut FConn, bytes: Arc<[u8]>) -> io::Result<()> {
    c.pending_bytes += bytes.len();
    c.pending.push_back((bytes, 0));
    if c.pending_bytes > MAX_PENDING_BYTES {
        return Err(io::Error::other("slow subscriber"));
    }
    flush(c)
}

fn flush(c: &mut FConn) -> io::Result<()> {
    while let Some((bytes, off)) = c.pending.front_mut() {
        match c.stream.write(&bytes[*off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *off += n;
                c.pending_bytes -= n;
                if *off == bytes.len() {
                    c.pending.pop_front();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Build a message's wire forms once: long-poll response and SSE event.
fn build_msg(topic: String, id: u64, body: &[u8]) -> FloorMsg {
    // Publish bodies are JSON (embedded as-is); anything else becomes a JSON string.
    let data = if body.first().is_some_and(|b| *b == b'{' || *b == b'[') {
        body.to_vec()
    } else {
        serde_json::to_vec(&String::from_utf8_lossy(body)).unwrap_or_default()
    };
    let mut entry =
        format!("{{\"id\":\"0-{id}\",\"topic\":\"/{topic}\",\"time\":{},\"data\":", unix_ns() / 1_000_000).into_bytes();
    entry.extend_from_slice(&data);
    entry.push(b'}');
    let mut json = b"{\"messages\":[".to_vec();
    json.extend_from_slice(&entry);
    json.extend_from_slice(format!("],\"next\":\"0-{id}\"}}").as_bytes());
    let mut longpoll =
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", json.len())
            .into_bytes();
    longpoll.extend_from_slice(&json);
    let mut sse = format!("id: 0-{id}\ndata: ").into_bytes();
    sse.extend(data.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
    sse.extend_from_slice(b"\n\n");
    FloorMsg { topic, id, entry, longpoll: Arc::from(longpoll), sse: Arc::from(sse) }
}

/// A long-poll response with every message after the subscriber's cursor.
fn catch_up_response(msgs: &[Arc<FloorMsg>], gap: bool) -> Vec<u8> {
    let mut json = b"{\"messages\":[".to_vec();
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(&m.entry);
    }
    let last = msgs.last().map_or(0, |m| m.id);
    json.extend_from_slice(format!("],\"next\":\"0-{last}\"").as_bytes());
    json.extend_from_slice(if gap { &b",\"gap\":true}"[..] } else { &b"}"[..] });
    let mut out =
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", json.len())
            .into_bytes();
    out.extend_from_slice(&json);
    out
}

/// Parse one request at the front of `buf`: `Ok(None)` while incomplete, `Err` when hopeless.
fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut content_length = 0usize;
    let mut sse = false;
    let mut last_event_id = None;
    for h in req.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = v.parse().map_err(|_| ())?;
        } else if h.name.eq_ignore_ascii_case("accept") && v.contains("text/event-stream") {
            sse = true;
        } else if h.name.eq_ignore_ascii_case("last-event-id") {
            last_event_id = parse_id(v);
        }
    }
    if head_len + content_length > MAX_REQUEST_BYTES {
        return Err(());
    }
    if buf.len() < head_len + content_length {
        return Ok(None);
    }
    let path = req.path.unwrap_or("/");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let method = req.method.unwrap_or("");
    let request = if let (Some(topic), "POST") = (path.strip_prefix("/pub/"), method) {
        Request::Publish { topic: topic.to_owned(), body: buf[head_len..head_len + content_length].to_vec() }
    } else if let (Some(topic), "GET") = (path.strip_prefix("/sub/"), method) {
        let mut since = last_event_id;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("since", v)) => since = parse_id(v),
                Some(("transport", "sse")) => sse = true,
                _ => {}
            }
        }
        Request::Subscribe { topic: topic.to_owned(), since, sse }
    } else if path == "/health" {
        Request::Health
    } else {
        Request::NotFound
    };
    Ok(Some((request, head_len + content_length)))
}

/// The sequence part of a floor id `0-N`.
fn parse_id(v: &str) -> Option<u64> {
    v.rsplit('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::{encode_body, parse_stamp, Stamp};

    #[test]
    fn requests_parse_incrementally() {
        let req = b"POST /pub/t HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..req.len() {
            assert_eq!(parse_request(&req[..cut]), Ok(None), "cut {cut}");
        }
        let (r, n) = parse_request(req).expect("ok").expect("complete");
        assert_eq!(n, req.len());
        assert_eq!(r, Request::Publish { topic: "t".into(), body: b"abc".to_vec() });
        let (r, _) =
            parse_request(b"GET /sub/u1?since=0-7&timeout=30 HTTP/1.1\r\n\r\n").expect("ok").expect("complete");
        assert_eq!(r, Request::Subscribe { topic: "u1".into(), since: Some(7), sse: false });
        let (r, _) = parse_request(b"GET /sub/t HTTP/1.1\r\nAccept: text/event-stream\r\nLast-Event-ID: 0-3\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(r, Request::Subscribe { topic: "t".into(), since: Some(3), sse: true });
        assert_eq!(parse_request(b"\x01\x02 junk\r\n\r\n"), Err(()));
    }

    #[test]
    fn prebuilt_forms_carry_the_stamp() {
        let stamp = Stamp { src: 1, seq: 9, ts: 77 };
        let msg = build_msg("t".into(), 5, &encode_body(stamp, 4));
        let lp = String::from_utf8(msg.longpoll.to_vec()).expect("utf8");
        let body = lp.split("\r\n\r\n").nth(1).expect("body");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["next"], "0-5");
        assert_eq!(parse_stamp(v["messages"][0].to_string().as_bytes()), Some(stamp));
        assert!(msg.sse.starts_with(b"id: 0-5\ndata: {"));
        let all = catch_up_response(&[Arc::new(msg), Arc::new(build_msg("t".into(), 6, b"hi"))], false);
        let text = String::from_utf8(all).expect("utf8");
        assert!(text.ends_with("\"data\":\"hi\"}],\"next\":\"0-6\"}"), "{text}");
    }
}
