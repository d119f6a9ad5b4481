//! The tail thread and the cold reader thread.
//!
//! The tail follows the log with `XREAD BLOCK` from the last seq it has seen and hands each
//! batch to the hub (`HubCmd::Tail`), so every node appends the same messages in the same
//! order, its own publishes included. On every reconnect, and whenever a block times out
//! empty, it checks the log's epoch (`META_SCRIPT`): a Redis that lost its data, or one that
//! went back below what this node has seen, shows a new epoch, and the hub is told to rotate
//! (`HubCmd::Rotate`).
//!
//! Both return when the server stops (their stop channel disconnects; a stop ends the tail's
//! blocking read with `CLIENT UNBLOCK`).
//!
//! The cold reader answers reads older than the node's cache: `XRANGE` from the reader's
//! cursor, kept as a segment in the store's bounded cold cache, then the store's `Loaded`
//! notifier wakes the subscribers, who read again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use redis::{RedisResult, Value};

use super::link::{text, Link, LOG};
use super::{candidate_epoch, RedisStore, Segment};
use crate::hub::HubCmd;
use crate::model::{Epoch, Message};

/// How long one `XREAD` blocks; the link's read timeout is longer by `READ_SLACK`.
pub(super) const BLOCK: Duration = Duration::from_millis(1000);
/// How much longer than a block a reply may take before the link counts as half-open.
pub(super) const READ_SLACK: Duration = Duration::from_secs(2);
/// Entries one `XREAD` or `XRANGE` returns at most.
pub(super) const COUNT: usize = 512;

pub(super) struct Tail {
    pub(super) link: Link,
    pub(super) store: Arc<RedisStore>,
    pub(super) hub: Sender<HubCmd>,
    /// Disconnects when the server stops.
    pub(super) stop: Receiver<()>,
}

impl Tail {
    pub(super) fn run(mut self) {
        let mut need_sync = false;
        // The entry of another epoch that last made the tail sync (see below).
        let mut foreign_at = None;
        loop {
            if self.store.shared.stopping.load(Ordering::Acquire) {
                return;
            }
            if need_sync || !self.link.is_open() {
                let fresh = !self.link.is_open();
                match self.sync().and_then(|()| if fresh { self.note_client_id() } else { Ok(()) }) {
                    Ok(()) => need_sync = false,
                    Err(err) => {
                        self.store.shared.tail_link(false);
                        self.link.failed(&err);
                        if self.pause() {
                            return;
                        }
                        continue;
                    }
                }
            }
            let last = self.store.shared.seen.load(Ordering::Acquire);
            let reply = self.link.conn().and_then(|c| {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(COUNT)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(LOG)
                    .arg(format!("{last}-0"))
                    .query::<Value>(c)
            });
            let value = match reply {
                Ok(value) => value,
                Err(err) => {
                    static LOST: crate::log_limit::LogLimit =
                        crate::log_limit::LogLimit::new(log::Level::Warn, module_path!(), "redis: tail lost");
                    LOST.log(format_args!("redis: tail lost the log ({err}); reconnecting"));
                    self.store.shared.tail_link(false);
                    self.link.failed(&err);
                    if self.pause() {
                        return;
                    }
                    need_sync = true;
                    continue;
                }
            };
            self.link.succeeded();
            self.store.shared.tail_link(true);
            let epoch = self.store.shared.epoch_text();
            let entries = stream_entries(&value);
            if entries.is_empty() {
                need_sync = true; // idle: check that the log did not go back meanwhile
                continue;
            }
            let mut msgs = Vec::with_capacity(entries.len());
            // The last entry taken (parsed or not): the next read starts after it, so an entry
            // that does not parse is passed over once, never read again and again.
            let mut passed = last;
            let mut foreign = false;
            for (seq, parsed) in entries {
                match parsed {
                    None => skipped(seq),
                    Some((_, entry_epoch)) if entry_epoch != epoch => {
                        foreign = true;
                        if foreign_at.is_none_or(|at| seq < at) {
                            // Another epoch began: sync first, then read on from here. If the
                            // sync finds the same epoch, entries of others from here on are
                            // strays and passed over.
                            foreign_at = Some(seq);
                            need_sync = true;
                            break;
                        }
                        skipped(seq);
                    }
                    Some((msg, _)) => msgs.push(Arc::new(msg)),
                }
                passed = passed.max(seq);
            }
            if !foreign {
                foreign_at = None;
            }
            if passed > last {
                self.store.shared.seen.store(passed, Ordering::Release);
            }
            if !msgs.is_empty() && self.hub.send(HubCmd::Tail(msgs)).is_err() {
                return; // the hub has stopped
            }
        }
    }

    /// Waits out the link's backoff; true if the server stopped meanwhile.
    fn pause(&mut self) -> bool {
        let wait = self.link.backoff();
        !matches!(self.stop.recv_timeout(wait), Err(crossbeam_channel::RecvTimeoutError::Timeout))
    }

    /// Remembers this connection's client id, so that a stop can end its blocking read.
    fn note_client_id(&mut self) -> RedisResult<()> {
        let id: u64 = redis::cmd("CLIENT").arg("ID").query(self.link.conn()?)?;
        self.store.shared.tail_client.store(id, Ordering::Release);
        Ok(())
    }

    /// Reads (creating or rotating if needed) the log's epoch; a change rotates the hub.
    fn sync(&mut self) -> RedisResult<()> {
        let known = self.store.shared.epoch_text();
        let seen = self.store.shared.seen.load(Ordering::Acquire);
        let (cand, base) = candidate_epoch();
        let (epoch, _seq, base) = self.link.meta((&cand, base), &known, seen)?;
        if epoch != known {
            let Ok(parsed) = epoch.parse::<Epoch>() else {
                return Err(redis::RedisError::from(std::io::Error::other(format!("bad epoch {epoch:?} in meta"))));
            };
            // Seqs of the new epoch start above `base`; a node that saw more (a clock far
            // behind) keeps its own floor so that no cursor it gave out is reused.
            let floor = base.max(seen);
            if floor > base {
                log::error!("redis: new epoch {epoch} starts at {base}, below seq {seen} seen here");
            }
            log::warn!("redis: the log's epoch is now {epoch} (was {known}): history before seq {floor} is gone");
            self.store.shared.set_epoch(parsed);
            self.store.shared.seen.store(floor, Ordering::Release);
            if self.hub.send(HubCmd::Rotate { epoch: parsed, floor }).is_err() {
                return Err(redis::RedisError::from(std::io::Error::other("hub stopped")));
            }
        }
        Ok(())
    }
}

/// A fetch for the cold cache: everything after `after`.
#[derive(Debug)]
pub(super) struct Fetch {
    pub(super) after: u64,
}

/// The cold reader: one `XRANGE` per fetch, then the `Loaded` notice.
pub(super) fn cold_reader(mut link: Link, store: Arc<RedisStore>, rx: Receiver<Fetch>, stop: Receiver<()>) {
    loop {
        let after = crossbeam_channel::select! {
            recv(rx) -> fetch => match fetch {
                Ok(Fetch { after }) => after,
                Err(_) => return,
            },
            recv(stop) -> _ => return,
        };
        let reply = link.conn().and_then(|c| {
            redis::cmd("XRANGE").arg(LOG).arg(format!("({after}-0")).arg("+").arg("COUNT").arg(COUNT).query::<Value>(c)
        });
        let value = match reply {
            Ok(value) => value,
            Err(err) => {
                link.failed(&err);
                // The readers stay pending; their next read asks again.
                store.fetch_failed(after);
                continue;
            }
        };
        link.succeeded();
        let epoch = crate::store::Store::epoch(&*store).to_string();
        let entries = entries_of(&value);
        let full = entries.len() >= COUNT;
        // The page covers the log up to its last entry, whatever it held: a page that was all
        // another epoch (or unreadable) still moves the next fetch on.
        let last = entries.iter().map(|(seq, _)| *seq).fold(after, u64::max);
        // Messages past `--history-max-age` are not served (a single node would have dropped
        // them too): a read from before them gets the gap.
        let cutoff = crate::hub::system_clock_ms().saturating_sub(store.max_age_ms());
        let mut msgs = Vec::with_capacity(entries.len());
        for (seq, parsed) in entries {
            match parsed {
                Some((msg, _)) if msg.time_ms < cutoff => {}
                Some((msg, e)) if e == epoch => msgs.push(Arc::new(msg)),
                _ => skipped(seq),
            }
        }
        let base = store.base.load(Ordering::Acquire);
        let end = if full { last } else { last.max(base) };
        let first = msgs.first().map_or(end + 1, |m| m.seq);
        let lost_through = (first > after + 1).then(|| first - 1);
        store.fetched(Segment { start: after, end, lost_through, msgs });
    }
}

/// An entry of the log: its seq (from its id) and, if it parses, the message with the epoch it
/// was written under.
type Entry<'a> = (u64, Option<(Message, &'a str)>);

/// The entries of an `XREAD` reply (one stream).
fn stream_entries(value: &Value) -> Vec<Entry<'_>> {
    match value {
        Value::Array(streams) => match streams.first() {
            Some(Value::Array(pair)) => pair.get(1).map(entries_of).unwrap_or_default(),
            _ => Vec::new(),
        },
        Value::Map(streams) => streams.first().map(|(_, v)| entries_of(v)).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Entries `[id, [field, value, ...]]`. One whose id is not `<seq>-<n>` cannot be in a stream;
/// it is left out.
fn entries_of(value: &Value) -> Vec<Entry<'_>> {
    let Value::Array(entries) = value else { return Vec::new() };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(pair) = entry else { return None };
            let seq: u64 = pair.first().and_then(text)?.split('-').next()?.parse().ok()?;
            Some((seq, parse_entry(seq, pair)))
        })
        .collect()
}

/// Log entries passed over so far (unreadable, or of another epoch than the node's).
static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Counts an entry passed over, with a rate-limited warning.
fn skipped(seq: u64) {
    let total = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
    static SKIP: crate::log_limit::LogLimit =
        crate::log_limit::LogLimit::new(log::Level::Warn, module_path!(), "redis: log entry skipped");
    SKIP.log(format_args!("redis: passed over log entry {seq}-0 (unreadable or of another epoch); {total} so far"));
}

/// The message in an entry's fields, with the epoch it was written under (borrowed from the
/// reply: it is only compared); `None` if a field it needs is missing.
fn parse_entry(seq: u64, pair: &[Value]) -> Option<(Message, &str)> {
    let Some(Value::Array(fields)) = pair.get(1) else { return None };
    let (mut epoch, mut topic, mut event, mut ctype, mut data, mut time) = (None, None, None, None, None, 0u64);
    for kv in fields.chunks(2) {
        let [Value::BulkString(k), v] = kv else { continue };
        let bytes = match v {
            Value::BulkString(b) => b.as_slice(),
            _ => continue,
        };
        let text = || std::str::from_utf8(bytes).ok();
        match k.as_slice() {
            b"e" => epoch = text(),
            b"t" => topic = text().map(Arc::<str>::from),
            b"v" => event = text().filter(|e| !e.is_empty()).map(Box::<str>::from),
            b"c" => ctype = text().filter(|c| !c.is_empty()).map(Box::<str>::from),
            b"d" => data = Some(Bytes::copy_from_slice(bytes)),
            b"ts" => time = text().and_then(|t| t.parse().ok()).unwrap_or(0),
            _ => {}
        }
    }
    let (Some(epoch), Some(topic), Some(data)) = (epoch, topic, data) else { return None };
    let msg = Message::new(seq, topic, time, data).with_event(event).with_content_type(ctype);
    Some((msg, epoch))
}
