//! The writer thread: takes the hub's publishes from a bounded queue and runs the publish
//! script for each, pipelined in batches (one round trip per batch, not per message). Each
//! publish carries its idempotency key, so a batch whose reply was lost is sent again, once,
//! on a new connection and stored once. The answer goes back to the hub as
//! `HubCmd::Logged`: stored with its seq, or a one-line reason (the client gets 503).
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

/// Publishes pipelined in one round trip at most.
pub(super) const BATCH_MAX: usize = 512;
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
            while batch.len() < BATCH_MAX {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
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

    /// One pipelined round trip. A connection-level error fails the whole attempt; a script
    /// error fails its one publish; `NOSCRIPT` reloads the script and runs the batch again.
    fn attempt(&mut self, batch: &mut [PublishReq]) -> RedisResult<Vec<Result<(u64, u64), PublishRefused>>> {
        for _ in 0..2 {
            let sha = self.link.publish_sha()?;
            let (epoch, seen) = (self.shared.epoch_text(), self.shared.seen.load(Ordering::Acquire));
            let (cand_epoch, cand_base) = candidate_epoch();
            let now = crate::hub::system_clock_ms();
            let maxlen = self.shared.maxlen;
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for req in batch.iter_mut() {
                let key = req.idempotency_key.get_or_insert_with(generate_key);
                pipe.cmd("EVALSHA")
                    .arg(&sha)
                    .arg(3)
                    .arg(META)
                    .arg(LOG)
                    .arg(format!("{IDEM_PREFIX}{key}"))
                    .arg(IDEM_TTL_MS)
                    .arg(maxlen)
                    .arg(&*req.topic)
                    .arg(req.event.as_deref().unwrap_or(""))
                    .arg(req.content_type.as_deref().unwrap_or(""))
                    .arg(&req.data[..])
                    .arg(now)
                    .arg(&cand_epoch)
                    .arg(cand_base)
                    .arg(&epoch)
                    .arg(seen)
                    .arg(fingerprint(req));
            }
            let replies: Vec<RedisResult<Value>> = pipe.query(self.link.conn()?)?;
            if replies.iter().any(|r| matches!(r, Err(e) if link::is_noscript(e))) {
                // A script that found NOSCRIPT did nothing; one that ran is remembered under
                // its key, so running the batch again stores nothing twice.
                self.link.scripts_lost();
                continue;
            }
            return Ok(replies.iter().map(parse_stored).collect());
        }
        Err(RedisError::from(std::io::Error::other("publish script not loadable")))
    }
}

/// "epoch seq time" (or "conflict") from the publish script.
fn parse_stored(reply: &RedisResult<Value>) -> Result<(u64, u64), PublishRefused> {
    let Ok(value) = reply else {
        log::warn!("redis: publish script failed: {reply:?}");
        return Err(PublishRefused::Unavailable("cluster log refused the publish"));
    };
    let text = link::text(value).unwrap_or("");
    if text == "conflict" {
        return Err(PublishRefused::Conflict(CONFLICT));
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
