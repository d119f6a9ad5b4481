//! The writer thread: takes the hub's publishes from a bounded queue and stores them in
//! batches: one round trip per batch, and in it one publish-script call per run of up to
//! `CALL_MAX` publishes (one Lua invocation per run, not per message), each publish answered
//! on its own. Each publish carries its
//! idempotency key, so a batch whose reply was lost is sent again, once, on a new connection
//! and stored once. The answer goes back to the hub as `HubCmd::Logged`: stored with its seq,
//! or a one-line reason (the client gets 409 or 503).
//!
//! While Redis is unreachable the link is marked down and `submit` refuses at once; the
//! thread probes with backoff and jitter and marks it up again when Redis answers. It returns
//! when the server stops (its stop channel disconnects).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use redis::{RedisError, RedisResult, Value};

use super::link::{self, Link, IDEM_PREFIX, LOG, META};
use super::{candidate_epoch, Shared};
use crate::hub::{HubCmd, PublishRefused, PublishReq};

/// What a client whose idempotency key names another publish is told (409).
const CONFLICT: &str = "Idempotency-Key already used for a different publish";
/// What a client is told while the log cannot be reached (503).
const DOWN: &str = "cluster log unavailable: Redis unreachable";

/// Publishes in one round trip at most (one pipeline of script calls).
pub(super) const BATCH_MAX: usize = 512;
/// A round trip stops taking publishes once their payloads (and topics, events, content types)
/// reach this, so its buffers stay small: 1 MiB plus at most one publish (`--max-body`).
pub(super) const BATCH_BYTES: usize = 1 << 20;
/// Publishes in one script call at most. Redis runs nothing else while a script runs, so a
/// call must stay short against other clients (the tails' reads, other nodes' publishes).
/// Measured on the 2-core box (bench/RESULTS.md, "Cluster mode"): a call of 128 small
/// publishes takes ~0.4 ms of Redis time (~1 ms on a loaded box) at ~3.4 µs per publish;
/// bigger calls cost as much or more per publish and hold Redis longer (512: 2-5 ms).
pub(super) const CALL_MAX: usize = 128;
/// Bytes in one script call at most (the script copies each into the stream): a publish that
/// would cross it starts the next call; one bigger than it goes alone.
pub(super) const CALL_BYTES: usize = 256 << 10;
/// How long Redis remembers a publish by its idempotency key.
const IDEM_TTL_MS: u64 = 10 * 60 * 1000;

/// What the writer needs besides its queue.
pub(super) struct Writer {
    pub(super) link: Link,
    pub(super) shared: Arc<Shared>,
    pub(super) hub: Sender<HubCmd>,
    /// Disconnects when the server stops.
    pub(super) stop: Receiver<()>,
}

impl Writer {
    pub(super) fn run(mut self, rx: Receiver<PublishReq>) {
        let mut batch: Vec<PublishReq> = Vec::with_capacity(BATCH_MAX);
        loop {
            if !self.shared.up.load(Ordering::Acquire) {
                // Down: probe with backoff; publishes are refused meanwhile (and any that
                // slipped in before the flag was seen are answered below).
                let wait = self.link.backoff();
                crossbeam_channel::select! {
                    recv(rx) -> req => match req {
                        Ok(req) => batch.push(req),
                        Err(_) => return,
                    },
                    recv(self.stop) -> _ => return self.answer_all(&mut batch, Err(PublishRefused::Unavailable(DOWN))),
                    default(wait) => {}
                }
                if self.probe() {
                    log::info!("redis: reachable again; publishing");
                    self.shared.up.store(true, Ordering::Release);
                } else {
                    self.answer_all(&mut batch, Err(PublishRefused::Unavailable(DOWN)));
                    continue;
                }
            }
            if batch.is_empty() {
                crossbeam_channel::select! {
                    recv(rx) -> req => match req {
                        Ok(req) => batch.push(req),
                        Err(_) => return,
                    },
                    recv(self.stop) -> _ => return,
                }
            }
            gather(&rx, &mut batch);
            self.write(&mut batch);
        }
    }

    fn probe(&mut self) -> bool {
        let result = self.link.conn().and_then(|c| redis::cmd("PING").query::<String>(c));
        match result {
            Ok(_) => {
                self.link.succeeded();
                true
            }
            Err(err) => {
                self.link.failed(&err);
                false
            }
        }
    }

    /// Runs one batch: at most two attempts (the second on a fresh connection, with the
    /// same idempotency keys), then the answers.
    fn write(&mut self, batch: &mut Vec<PublishReq>) {
        let mut last_err = None;
        for _ in 0..2 {
            match self.attempt(batch) {
                Ok(results) => {
                    self.link.succeeded();
                    for (req, result) in batch.drain(..).zip(results) {
                        if let Some(reply) = req.reply {
                            let _ = self.hub.send(HubCmd::Logged { reply, result });
                        }
                    }
                    return;
                }
                Err(err) => {
                    self.link.failed(&err);
                    // A lost connection is worth one retry on a new one; a timeout (a frozen
                    // or half-open Redis) is not: the client gets its 503 now.
                    let timed_out = err.is_timeout();
                    last_err = Some(err);
                    if timed_out {
                        break;
                    }
                }
            }
        }
        if let Some(err) = last_err {
            static WRITER_DOWN: crate::log_limit::LogLimit =
                crate::log_limit::LogLimit::new(log::Level::Error, module_path!(), "redis: writer down");
            WRITER_DOWN.log(format_args!("redis: cannot publish ({err}); refusing publishes until it answers"));
        }
        self.shared.writer_down();
        self.answer_all(batch, Err(PublishRefused::Unavailable(DOWN)));
    }

    fn answer_all(&self, batch: &mut Vec<PublishReq>, result: Result<(u64, u64), PublishRefused>) {
        for req in batch.drain(..) {
            if let Some(reply) = req.reply {
                let _ = self.hub.send(HubCmd::Logged { reply, result });
            }
        }
    }

    /// One round trip: the batch as a pipeline of publish-script calls, each over a bounded
    /// run of publishes (`calls`). A connection-level error fails the whole attempt; an error
    /// from one call as a whole refuses that call's publishes; the script answers each publish
    /// on its own. `NOSCRIPT` reloads the script and runs the batch again: a call that did run
    /// remembered its publishes under their keys, so the rerun stores nothing twice.
    fn attempt(&mut self, batch: &mut [PublishReq]) -> RedisResult<Vec<Result<(u64, u64), PublishRefused>>> {
        for req in batch.iter_mut() {
            req.idempotency_key.get_or_insert_with(generate_key);
        }
        let runs = calls(batch);
        for _ in 0..2 {
            let sha = self.link.publish_sha()?;
            let (epoch, seen) = (self.shared.epoch_text(), self.shared.seen.load(Ordering::Acquire));
            let (cand_epoch, cand_base) = candidate_epoch();
            let now = crate::hub::system_clock_ms();
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for run in &runs {
                let reqs = &batch[run.clone()];
                let call = pipe.cmd("EVALSHA").arg(&sha).arg(2 + reqs.len()).arg(META).arg(LOG);
                for req in reqs {
                    call.arg(format!("{IDEM_PREFIX}{}", req.idempotency_key.as_deref().unwrap_or("")));
                }
                call.arg(IDEM_TTL_MS).arg(self.shared.maxlen).arg(now);
                call.arg(&cand_epoch).arg(cand_base).arg(&epoch).arg(seen);
                for req in reqs {
                    call.arg(&*req.topic)
                        .arg(req.event.as_deref().unwrap_or(""))
                        .arg(req.content_type.as_deref().unwrap_or(""))
                        .arg(&req.data[..])
                        .arg(fingerprint(req));
                }
            }
            let replies: Vec<RedisResult<Value>> = pipe.query(self.link.conn()?)?;
            if replies.iter().any(|r| matches!(r, Err(e) if link::is_noscript(e))) {
                self.link.scripts_lost();
                continue;
            }
            let mut results = Vec::with_capacity(batch.len());
            for (run, reply) in runs.iter().zip(&replies) {
                results.extend(parse_call(reply, run.len()));
            }
            // Every publish gets an answer, even from a pipeline reply short of calls.
            results.resize(batch.len(), Err(PublishRefused::Unavailable("cluster log gave an unreadable answer")));
            return Ok(results);
        }
        Err(RedisError::from(std::io::Error::other("publish script not loadable")))
    }
}

/// Splits a batch into the runs one script call each takes: at most `CALL_MAX` publishes, and
/// a publish that would take a run's bytes past `CALL_BYTES` starts the next.
fn calls(batch: &[PublishReq]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, req) in batch.iter().enumerate() {
        let n = size(req);
        if i > start && (i - start == CALL_MAX || bytes + n > CALL_BYTES) {
            runs.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < batch.len() {
        runs.push(start..batch.len());
    }
    runs
}

/// Takes what the queue holds into `batch`, up to `BATCH_MAX` publishes and until their bytes
/// reach `BATCH_BYTES`; the rest waits for the next batch.
fn gather(rx: &Receiver<PublishReq>, batch: &mut Vec<PublishReq>) {
    let mut bytes: usize = batch.iter().map(size).sum();
    while batch.len() < BATCH_MAX && bytes < BATCH_BYTES {
        match rx.try_recv() {
            Ok(req) => {
                bytes += size(&req);
                batch.push(req);
            }
            Err(_) => break,
        }
    }
}

/// What a publish adds to a script call, roughly: what it copies into the stream.
fn size(req: &PublishReq) -> usize {
    req.data.len()
        + req.topic.len()
        + req.event.as_deref().map_or(0, str::len)
        + req.content_type.as_deref().map_or(0, str::len)
}

/// One script call's answers, one per publish. A call Redis refused as a whole, or a reply
/// that is not one answer per publish (a bug, or not our script), refuses them all: whatever
/// happened, none is acknowledged unread.
fn parse_call(reply: &RedisResult<Value>, expected: usize) -> Vec<Result<(u64, u64), PublishRefused>> {
    match reply {
        Ok(Value::Array(items)) if items.len() == expected => items.iter().map(parse_stored).collect(),
        other => {
            log::warn!("redis: publish script gave {other:?} for {expected} publishes");
            let reason = if other.is_err() {
                "cluster log refused the publish"
            } else {
                "cluster log gave an unreadable answer"
            };
            (0..expected).map(|_| Err(PublishRefused::Unavailable(reason))).collect()
        }
    }
}

/// "epoch seq time", "conflict" or "error <reason>": the script's answer for one publish.
fn parse_stored(value: &Value) -> Result<(u64, u64), PublishRefused> {
    let text = link::text(value).unwrap_or("");
    if text == "conflict" {
        return Err(PublishRefused::Conflict(CONFLICT));
    }
    if let Some(reason) = text.strip_prefix("error ") {
        static REFUSED: crate::log_limit::LogLimit =
            crate::log_limit::LogLimit::new(log::Level::Warn, module_path!(), "redis: publish refused");
        REFUSED.log(format_args!("redis: the log refused a publish: {reason}"));
        return Err(PublishRefused::Unavailable("cluster log refused the publish"));
    }
    let mut parts = text.split(' ');
    let _epoch = parts.next();
    let seq = parts.next().and_then(|s| s.parse().ok());
    let time = parts.next().and_then(|s| s.parse().ok());
    match (seq, time) {
        (Some(seq), Some(time)) => Ok((seq, time)),
        _ => Err(PublishRefused::Unavailable("cluster log gave an unreadable answer")),
    }
}

/// What the idempotency key is remembered with: SHA-1 (hex) over topic, event, content type
/// and payload, each length-prefixed so that no two different publishes hash the same input.
/// A retry of the same publish matches; another publish under a reused key does not (409),
/// whoever sends it, so a key never hands one client's id to another's different message.
fn fingerprint(req: &PublishReq) -> String {
    use sha1::{Digest, Sha1};
    let mut hash = Sha1::new();
    let parts: [&[u8]; 4] = [
        req.topic.as_bytes(),
        req.event.as_deref().unwrap_or("").as_bytes(),
        req.content_type.as_deref().unwrap_or("").as_bytes(),
        &req.data,
    ];
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh idempotency key for a publish that came without one: 128 random bits.
fn generate_key() -> Box<str> {
    let mut buf = [0u8; 16];
    if getrandom::getrandom(&mut buf).is_err() {
        // Practically unreachable; clock and address still make a collision unlikely.
        let t = crate::hub::system_clock_ms();
        buf[..8].copy_from_slice(&t.to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect::<String>().into()
}

/// The writer's read timeout: long enough for a batch, short enough that a frozen Redis turns
/// into 503s quickly.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicU64};

    /// A redis-server of the test's own on a free loopback port, stopped by PID when dropped.
    struct Server(Child, u16);

    impl Server {
        fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install redis-server)");
            let server = Server(child, port);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while server.client().get_connection().is_err() {
                assert!(std::time::Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            server
        }

        fn client(&self) -> redis::Client {
            redis::Client::open(format!("redis://127.0.0.1:{}/0", self.1)).expect("url")
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn writer(server: &Server) -> Writer {
        let (hub, _) = crossbeam_channel::unbounded();
        let (_, stop) = crossbeam_channel::bounded(0);
        let shared = Shared {
            up: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            maxlen: 1000,
            stopping: AtomicBool::new(false),
            tail_client: AtomicU64::new(0),
            tail_up: AtomicBool::new(true),
            downs: AtomicU64::new(0),
        };
        Writer { link: Link::new(server.client(), "test", WRITE_TIMEOUT), shared: Arc::new(shared), hub, stop }
    }

    /// An XRANGE entry: its id and its field/value pairs.
    type Entry = (String, Vec<(String, Vec<u8>)>);

    fn req(topic: &str, data: &str, key: &str) -> PublishReq {
        PublishReq {
            topic: topic.into(),
            event: None,
            content_type: None,
            data: bytes::Bytes::copy_from_slice(data.as_bytes()),
            reply: None,
            idempotency_key: Some(key.into()),
        }
    }

    #[test]
    fn one_batch_answers_fresh_duplicate_and_conflicting_keys_each_on_its_own() {
        let server = Server::start();
        let mut w = writer(&server);
        let first = w.attempt(&mut [req("/b", "a", "k1")]).expect("first batch");
        let Ok((a, time_a)) = first[0] else { panic!("{first:?}") };
        let mut batch = [
            req("/b", "b", "k2"),         // fresh
            req("/b", "a", "k1"),         // a retry of the earlier batch's publish
            req("/b", "other", "k1"),     // another publish under that key
            req("/b", "b", "k2"),         // a retry of this batch's first
            req("/elsewhere", "b", "k2"), // another topic under it
            req("/b", "c", "k3"),         // fresh
        ];
        let got = w.attempt(&mut batch).expect("batch");
        let conflict = Err(PublishRefused::Conflict(CONFLICT));
        let Ok((b, time_b)) = got[0] else { panic!("{got:?}") };
        assert_eq!(b, a + 1, "the next seq");
        let want = [Ok((b, time_b)), Ok((a, time_a)), conflict, Ok((b, time_b)), conflict, Ok((b + 1, time_b))];
        assert_eq!(got, want);
        // Stored: three messages, the counter at the last, nothing for the retries and conflicts.
        let mut conn = server.client().get_connection().expect("conn");
        let len: u64 = redis::cmd("XLEN").arg(LOG).query(&mut conn).expect("XLEN");
        assert_eq!(len, 3);
        let seq: u64 = redis::cmd("HGET").arg(META).arg("seq").query(&mut conn).expect("HGET");
        assert_eq!(seq, b + 1);
        let entries: Vec<Entry> = redis::cmd("XRANGE").arg(LOG).arg("-").arg("+").query(&mut conn).expect("XRANGE");
        let datas: Vec<Vec<u8>> = entries
            .iter()
            .map(|(_, fields)| fields.iter().find(|(k, _)| k == "d").map(|(_, v)| v.clone()).expect("d"))
            .collect();
        assert_eq!(datas, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn a_batch_stops_at_its_count_and_byte_bounds() {
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..BATCH_MAX + 10 {
            tx.send(req("/n", "x", &i.to_string())).expect("send");
        }
        let mut batch = Vec::new();
        gather(&rx, &mut batch);
        assert_eq!(batch.len(), BATCH_MAX);
        batch.clear();
        gather(&rx, &mut batch);
        assert_eq!(batch.len(), 10);
        let big = "y".repeat(BATCH_BYTES / 2 + 1);
        for i in 0..3 {
            tx.send(req("/n", &big, &i.to_string())).expect("send");
        }
        batch.clear();
        gather(&rx, &mut batch);
        assert_eq!(batch.len(), 2, "the second crosses the byte bound; the third waits");
        batch.clear();
        gather(&rx, &mut batch);
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn a_round_trip_splits_into_calls_bounded_in_count_and_bytes() {
        let small: Vec<PublishReq> = (0..CALL_MAX * 2 + 1).map(|i| req("/n", "x", &i.to_string())).collect();
        let want = [0..CALL_MAX, CALL_MAX..2 * CALL_MAX, 2 * CALL_MAX..2 * CALL_MAX + 1];
        assert_eq!(calls(&small), want);
        let third = "y".repeat(CALL_BYTES / 3);
        let huge = "z".repeat(CALL_BYTES + 1);
        let mixed: Vec<PublishReq> = [&third, &third, &third, &huge, "x"]
            .iter()
            .enumerate()
            .map(|(i, d)| req("/n", d, &i.to_string()))
            .collect();
        // Three thirds plus the topics cross the bound: the third starts a call; the huge one
        // goes alone.
        assert_eq!(calls(&mixed), [0..2, 2..3, 3..4, 4..5]);
    }
}
