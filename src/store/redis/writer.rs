//! The writer thread: takes the hub's publishes from a bounded queue and stores them in
//! batches, one publish-script call per batch (one round trip and one Lua invocation per
//! batch, not per message), each publish answered on its own. Each publish carries its
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

/// Publishes in one script call at most. The script holds Redis (every other client waits)
/// while it runs, so a call must stay short against clients' timeouts and the tail's block:
/// 512 small publishes run in a few milliseconds (measured: bench/RESULTS.md, "Cluster mode").
pub(super) const BATCH_MAX: usize = 512;
/// A batch stops taking publishes once its payloads (and topics, events, content types) reach
/// this: the script copies every byte into the stream, and Redis reads the whole call before
/// it runs it, so big payloads make a call long and its buffers large. The bound is 1 MiB plus
/// at most one publish (`--max-body`); a publish bigger than it goes alone.
pub(super) const BATCH_BYTES: usize = 1 << 20;
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
        self.shared.up.store(false, Ordering::Release);
        self.answer_all(batch, Err(PublishRefused::Unavailable(DOWN)));
    }

    fn answer_all(&self, batch: &mut Vec<PublishReq>, result: Result<(u64, u64), PublishRefused>) {
        for req in batch.drain(..) {
            if let Some(reply) = req.reply {
                let _ = self.hub.send(HubCmd::Logged { reply, result });
            }
        }
    }

    /// One round trip: the batch as one call of the publish script. A connection-level error,
    /// or an error from the call as a whole, fails the whole attempt; the script answers each
    /// publish on its own. `NOSCRIPT` (the script never ran) reloads it and runs it again.
    fn attempt(&mut self, batch: &mut [PublishReq]) -> RedisResult<Vec<Result<(u64, u64), PublishRefused>>> {
        for _ in 0..2 {
            let sha = self.link.publish_sha()?;
            let (epoch, seen) = (self.shared.epoch_text(), self.shared.seen.load(Ordering::Acquire));
            let (cand_epoch, cand_base) = candidate_epoch();
            let now = crate::hub::system_clock_ms();
            let mut call = redis::cmd("EVALSHA");
            call.arg(&sha).arg(2 + batch.len()).arg(META).arg(LOG);
            for req in batch.iter_mut() {
                let key = req.idempotency_key.get_or_insert_with(generate_key);
                call.arg(format!("{IDEM_PREFIX}{key}"));
            }
            call.arg(IDEM_TTL_MS).arg(self.shared.maxlen).arg(now);
            call.arg(&cand_epoch).arg(cand_base).arg(&epoch).arg(seen);
            for req in batch.iter() {
                call.arg(&*req.topic)
                    .arg(req.event.as_deref().unwrap_or(""))
                    .arg(req.content_type.as_deref().unwrap_or(""))
                    .arg(&req.data[..])
                    .arg(fingerprint(req));
            }
            match call.query::<Value>(self.link.conn()?) {
                Ok(reply) => return Ok(parse_batch(&reply, batch.len())),
                // The script did not run: nothing was stored, running it again is safe.
                Err(err) if link::is_noscript(&err) => self.link.scripts_lost(),
                Err(err) => return Err(err),
            }
        }
        Err(RedisError::from(std::io::Error::other("publish script not loadable")))
    }
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

/// The script's answers, one per publish. A reply that is not one answer per publish (a
/// bug, or not our script) refuses them all: whatever happened, none is acknowledged unread.
fn parse_batch(reply: &Value, expected: usize) -> Vec<Result<(u64, u64), PublishRefused>> {
    match reply {
        Value::Array(items) if items.len() == expected => items.iter().map(parse_stored).collect(),
        other => {
            log::warn!("redis: publish script gave {other:?} for {expected} publishes");
            (0..expected).map(|_| Err(PublishRefused::Unavailable("cluster log gave an unreadable answer"))).collect()
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
}
