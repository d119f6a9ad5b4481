//! The memory store's snapshot: its epoch, head and every retained message, written at a
//! graceful shutdown and read back at start (`--state-dir`, see `store::state`).
//!
//! Format, version 1, integers little-endian:
//!
//! ```text
//! magic "HALLEYST" | version u32 = 1
//! epoch: u8 length + base36 text | head u64 | forgotten_through u64
//! topics u32, each: name (u32 length + UTF-8) | evicted_through u64 | created_seq u64
//! messages u64, each: seq u64 | time_ms u64 | topic index u32
//!                     | event, content type: u32 length + UTF-8, u32::MAX for none
//!                     | payload: u32 length + bytes (binary-safe)
//! crc32 (IEEE) of everything before it, u32; then end of file
//! ```
//!
//! Besides the messages it keeps what the store knows about lost history (each topic's last
//! eviction and creation, and what removed topics lost), so a client whose cursor is older
//! than a loss still gets the gap reply after a restart, and one whose cursor is not gets none.
//!
//! Reading is bounded: every length is checked against a cap before anything is allocated,
//! messages are appended to the store one by one with the store's history limits applied as
//! they arrive (a snapshot written with larger limits, or older than `--history-age`, loads
//! as much as the current limits keep), and the checksum is checked at the end, before the
//! store is handed out. A file that fails any check is [`SnapshotError::Corrupt`]; one with
//! another version is [`SnapshotError::Version`].

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{Inner, MemoryStore, TopicHistory};
use crate::model::{validate_internal_topic, Epoch, Message};
use crate::store::HistoryLimits;

/// The first bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"HALLEYST";
/// The format this build writes and reads.
pub const VERSION: u32 = 1;
/// Longest event name or content type read back (a content type came from a request head,
/// which `--max-head` bounds to at most 1 MiB).
const MAX_FIELD_LEN: u32 = 1 << 20;
/// Marks an absent event or content type.
const NONE: u32 = u32::MAX;

/// Why a snapshot could not be read.
#[derive(Debug)]
pub enum SnapshotError {
    /// Written by another version of the format (most likely a newer Halley).
    Version(u32),
    /// Truncated, damaged or not a snapshot: what was wrong.
    Corrupt(String),
    /// Reading failed.
    Io(io::Error),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Version(v) => write!(f, "format version {v}, but this halley reads version {VERSION}"),
            SnapshotError::Corrupt(why) => write!(f, "corrupt snapshot: {why}"),
            SnapshotError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for SnapshotError {
    fn from(e: io::Error) -> SnapshotError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SnapshotError::Corrupt("truncated".into())
        } else {
            SnapshotError::Io(e)
        }
    }
}

fn corrupt(why: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt(why.into())
}

/// What a snapshot held, for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Messages in the file.
    pub in_file: u64,
    /// Messages kept after the current history limits were applied.
    pub kept: usize,
}

impl MemoryStore {
    /// Writes the store to `out` (snapshot format above). Call it when nothing appends any
    /// more (after the hub stopped): the head and the messages are read under one read lock.
    pub fn write_snapshot(&self, out: impl Write) -> io::Result<()> {
        let inner = self.read_lock();
        let head = self.head.load(Ordering::Acquire);
        let mut w = Crc32Writer { out, crc: CRC_INIT };
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let epoch = self.epoch.to_string();
        w.write_all(&[epoch.len() as u8])?; // at most 8 base36 digits
        w.write_all(epoch.as_bytes())?;
        w.write_all(&head.to_le_bytes())?;
        w.write_all(&inner.forgotten_through.to_le_bytes())?;
        let count = u32::try_from(inner.topics.len()).map_err(|_| io::Error::other("too many topics"))?;
        w.write_all(&count.to_le_bytes())?;
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(inner.topics.len());
        for (i, (name, topic)) in inner.topics.iter().enumerate() {
            index.insert(name, i as u32); // fewer than u32::MAX, checked above
            write_bytes(&mut w, name.as_bytes())?;
            w.write_all(&topic.evicted_through.to_le_bytes())?;
            w.write_all(&topic.created_seq.to_le_bytes())?;
        }
        w.write_all(&(inner.log.len() as u64).to_le_bytes())?;
        for (&seq, msg) in &inner.log {
            let topic =
                index.get(&*msg.topic).copied().ok_or_else(|| io::Error::other("a message without its topic"))?;
            w.write_all(&seq.to_le_bytes())?;
            w.write_all(&msg.time_ms.to_le_bytes())?;
            w.write_all(&topic.to_le_bytes())?;
            write_opt(&mut w, msg.event.as_deref())?;
            write_opt(&mut w, msg.content_type.as_deref())?;
            write_bytes(&mut w, &msg.data)?;
        }
        let crc = w.crc ^ CRC_INIT;
        let mut out = w.out;
        out.write_all(&crc.to_le_bytes())?;
        out.flush()
    }

    /// Reads a snapshot into a new store with its epoch and head, keeping what `limits` keep
    /// at `now_ms` (unix ms).
    pub fn read_snapshot(
        input: impl Read,
        limits: HistoryLimits,
        now_ms: u64,
    ) -> Result<(MemoryStore, Loaded), SnapshotError> {
        let mut r = Crc32Reader { input, crc: CRC_INIT };
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(corrupt("not a halley snapshot (bad magic)"));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        let mut epoch = [0u8; 8];
        let len = usize::from(r.u8()?);
        let epoch = epoch.get_mut(..len).ok_or_else(|| corrupt("epoch too long"))?;
        r.read_exact(epoch)?;
        let epoch: Epoch =
            std::str::from_utf8(epoch).ok().and_then(|text| text.parse().ok()).ok_or_else(|| corrupt("bad epoch"))?;
        let head = r.u64()?;
        let forgotten_through = r.u64()?;
        if forgotten_through > head {
            return Err(corrupt("losses past the head"));
        }

        // Topic records: the names messages refer to, and what each had lost.
        let topics = r.u32()?;
        let mut names: Vec<(Arc<str>, u64, u64)> = Vec::new();
        for _ in 0..topics {
            let name = r.string(crate::model::MAX_TOPIC_LEN as u32)?;
            validate_internal_topic(&name).map_err(|e| corrupt(format!("bad topic {name:?}: {e}")))?;
            let (evicted_through, created_seq) = (r.u64()?, r.u64()?);
            if evicted_through > head || created_seq > head {
                return Err(corrupt("topic record past the head"));
            }
            names.push((Arc::from(name), evicted_through, created_seq));
        }

        // Messages, in seq order, into the store as the hub would append them.
        let mut inner = Inner::default();
        let count = r.u64()?;
        let mut last = 0;
        // A message larger than the whole store's byte bound could not be held by any store.
        let max_data = u32::try_from(limits.total_bytes).unwrap_or(u32::MAX - 1);
        for _ in 0..count {
            let (seq, time_ms, topic) = (r.u64()?, r.u64()?, r.u32()?);
            if seq <= last || seq > head {
                return Err(corrupt(format!("message seq {seq} out of order (after {last}, head {head})")));
            }
            last = seq;
            let topic = names.get(topic as usize).ok_or_else(|| corrupt("message names a missing topic"))?.0.clone();
            let event = r.opt_string()?;
            let content_type = r.opt_string()?;
            let data = Bytes::from(r.bytes(max_data)?);
            let msg = Message::new(seq, topic, time_ms, data)
                .with_event(event.map(String::into_boxed_str))
                .with_content_type(content_type.map(String::into_boxed_str));
            inner.push(Arc::new(msg), &limits);
            inner.evict_oldest_while_over(&limits, now_ms, 1, usize::MAX);
        }
        let crc = r.crc ^ CRC_INIT;
        let mut stored = [0u8; 4];
        r.input.read_exact(&mut stored)?;
        if u32::from_le_bytes(stored) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        if r.input.read(&mut [0u8; 1])? != 0 {
            return Err(corrupt("bytes after the checksum"));
        }
        // The newest message was kept while loading; now the age bound applies to all.
        inner.evict_oldest_while_over(&limits, now_ms, 0, usize::MAX);
        inner.restore_losses(&names, forgotten_through);
        let loaded = Loaded { in_file: count, kept: inner.messages };
        let store = MemoryStore::with_epoch(limits, epoch);
        store.head.store(head, Ordering::Release);
        *store.write_lock() = inner;
        Ok((store, loaded))
    }
}

impl Inner {
    /// After a load: each surviving topic takes back its saved losses and creation (the
    /// load itself only knows what it evicted), and the index of losses is rebuilt.
    fn restore_losses(&mut self, saved: &[(Arc<str>, u64, u64)], forgotten_through: u64) {
        self.forgotten_through = self.forgotten_through.max(forgotten_through);
        for (name, evicted_through, created_seq) in saved {
            if let Some(topic) = self.topics.get_mut(&**name) {
                let topic: &mut TopicHistory = topic;
                topic.evicted_through = topic.evicted_through.max(*evicted_through);
                topic.created_seq = topic.created_seq.min(*created_seq);
            }
        }
        self.evicted = self
            .topics
            .iter()
            .filter(|(_, t)| t.evicted_through > 0)
            .map(|(name, t)| (t.evicted_through, name.clone()))
            .collect();
    }
}

fn write_bytes(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(bytes.len()).ok().filter(|&n| n != NONE).ok_or_else(|| io::Error::other("field too long"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)
}

fn write_opt(w: &mut impl Write, text: Option<&str>) -> io::Result<()> {
    match text {
        Some(text) => write_bytes(w, text.as_bytes()),
        None => w.write_all(&NONE.to_le_bytes()),
    }
}

// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), table-driven.
const CRC_INIT: u32 = 0xFFFF_FFFF;
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

struct Crc32Writer<W> {
    out: W,
    crc: u32,
}

impl<W: Write> Write for Crc32Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc = crc_update(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

struct Crc32Reader<R> {
    input: R,
    crc: u32,
}

impl<R: Read> Crc32Reader<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf)?;
        self.crc = crc_update(self.crc, buf);
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed field of at most `max` bytes; the length is checked before
    /// anything is allocated.
    fn bytes(&mut self, max: u32) -> Result<Vec<u8>, SnapshotError> {
        let len = self.u32()?;
        self.field(len, max)
    }

    fn string(&mut self, max: u32) -> Result<String, SnapshotError> {
        String::from_utf8(self.bytes(max)?).map_err(|_| corrupt("a text field is not UTF-8"))
    }

    /// An event name or content type, or none.
    fn opt_string(&mut self) -> Result<Option<String>, SnapshotError> {
        match self.u32()? {
            NONE => Ok(None),
            len => String::from_utf8(self.field(len, MAX_FIELD_LEN)?)
                .map(Some)
                .map_err(|_| corrupt("a text field is not UTF-8")),
        }
    }

    /// The `len` bytes of a field, `len` checked against `max` first; the buffer grows only
    /// as bytes actually arrive, so a damaged length cannot make it allocate.
    fn field(&mut self, len: u32, max: u32) -> Result<Vec<u8>, SnapshotError> {
        if len > max {
            return Err(corrupt(format!("a field of {len} bytes (at most {max} here)")));
        }
        let mut buf = Vec::new();
        let got = (&mut self.input).take(u64::from(len)).read_to_end(&mut buf)?;
        if got != len as usize {
            return Err(corrupt("truncated"));
        }
        self.crc = crc_update(self.crc, &buf);
        Ok(buf)
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
