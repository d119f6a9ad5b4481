//! Unit tests of the snapshot format: a round trip keeps messages, epoch, head and losses;
//! the current limits apply on load; every damaged file is refused without a panic.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::model::Selector;
use crate::store::memory::tests::check_invariants;
use crate::store::{ReadResult, Store};

fn roomy() -> HistoryLimits {
    HistoryLimits { max_messages: 1000, max_bytes: 1 << 30, ..HistoryLimits::default() }
}

fn append(s: &MemoryStore, topic: &str, time_ms: u64, data: &[u8], event: Option<&str>, ct: Option<&str>) {
    let seq = s.head() + 1;
    let msg = Message::new(seq, Arc::from(topic), time_ms, Bytes::copy_from_slice(data))
        .with_event(event.map(Into::into))
        .with_content_type(ct.map(Into::into));
    s.append(Arc::new(msg), time_ms);
}

fn read(s: &MemoryStore, selectors: &[&str], after: u64) -> (Vec<Arc<Message>>, ReadResult) {
    let selectors: Vec<Selector> = selectors.iter().map(|x| Selector::parse(x).expect(x)).collect();
    let mut out = Vec::new();
    let r = s.read(&selectors, after, 1000, &mut out);
    (out, r)
}

fn snapshot(s: &MemoryStore) -> Vec<u8> {
    let mut bytes = Vec::new();
    s.write_snapshot(&mut bytes).expect("written");
    bytes
}

fn load(bytes: &[u8], limits: HistoryLimits, now_ms: u64) -> Result<(MemoryStore, Loaded), SnapshotError> {
    MemoryStore::read_snapshot(bytes, limits, now_ms)
}

/// A store with per-topic evictions, a topic removed by age, events, content types and a
/// binary payload.
fn sample() -> MemoryStore {
    let limits = HistoryLimits { max_messages: 2, max_age: Duration::from_secs(10), ..roomy() };
    let s = MemoryStore::with_epoch(limits, Epoch::from_raw(0xAB_CDEF).expect("fits"));
    append(&s, "/gone", 0, b"old", None, None); // 1, expired below
    append(&s, "/a", 5_000, b"a1", None, None); // 2, evicted by /a's count bound
    append(&s, "/a", 6_000, b"a2", Some("tick"), Some("text/plain")); // 3
    append(&s, "/b", 7_000, &[0, 255, 1, 254, b'\n', 0], None, Some("application/octet-stream")); // 4
    append(&s, "/pushlet/to/x", 7_000, b"{}", None, Some("application/json")); // 5
    append(&s, "/a", 8_000, b"a3", None, None); // 6
    s.expire(10_500); // /gone (1) goes
    s
}

#[test]
fn a_round_trip_keeps_messages_epoch_head_and_losses() {
    let s = sample();
    let (back, loaded) = load(&snapshot(&s), s.limits, 10_500).expect("loads");
    assert_eq!(loaded, Loaded { in_file: 4, kept: 4 });
    assert_eq!(back.epoch(), s.epoch());
    assert_eq!(back.head(), 6);
    assert_eq!(back.stats().messages, s.stats().messages);
    assert_eq!(back.stats().bytes, s.stats().bytes);
    check_invariants(&back);
    for selectors in [&["/a"][..], &["/b"], &["/**"], &["/gone"], &["/a", "/b"], &["/*"]] {
        for after in 0..=6 {
            let (want, want_r) = read(&s, selectors, after);
            let (got, got_r) = read(&back, selectors, after);
            assert_eq!(got_r, want_r, "{selectors:?} after {after}");
            assert_eq!(got.len(), want.len(), "{selectors:?} after {after}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    (g.seq, &g.topic, g.time_ms, &g.event, &g.content_type, &g.data),
                    (w.seq, &w.topic, w.time_ms, &w.event, &w.content_type, &w.data)
                );
            }
        }
    }
    // The losses came back: /a lost 2, /gone lost 1 (a removed topic), /b lost nothing.
    assert!(read(&back, &["/a"], 1).1.gap);
    assert!(!read(&back, &["/a"], 2).1.gap);
    assert!(read(&back, &["/gone"], 0).1.gap);
    assert!(!read(&back, &["/b"], 1).1.gap);
    let (binary, _) = read(&back, &["/b"], 0);
    assert_eq!(&binary[0].data[..], &[0, 255, 1, 254, b'\n', 0], "binary-safe");
}

#[test]
fn the_head_survives_an_empty_store() {
    let s = MemoryStore::with_epoch(
        HistoryLimits { max_age: Duration::from_secs(1), ..roomy() },
        Epoch::from_raw(7).expect("fits"),
    );
    append(&s, "/a", 0, b"x", None, None);
    append(&s, "/a", 0, b"y", None, None);
    s.expire(5_000);
    assert_eq!(s.stats().messages, 0);
    let (back, loaded) = load(&snapshot(&s), s.limits, 5_000).expect("loads");
    assert_eq!((back.head(), loaded.kept), (2, 0));
    assert!(read(&back, &["/a"], 1).1.gap, "what expired before the restart is still a gap");
    assert!(!read(&back, &["/a"], 2).1.gap);
}

#[test]
fn the_current_limits_apply_on_load() {
    let s = MemoryStore::with_epoch(roomy(), Epoch::from_raw(7).expect("fits"));
    for i in 0..10u64 {
        append(&s, if i % 2 == 0 { "/even" } else { "/odd" }, i * 1000, b"x", None, None);
    }
    let bytes = snapshot(&s);
    // Per topic: 2 each.
    let (back, loaded) = load(&bytes, HistoryLimits { max_messages: 2, ..roomy() }, 10_000).expect("loads");
    assert_eq!(loaded, Loaded { in_file: 10, kept: 4 });
    assert_eq!(read(&back, &["/even", "/odd"], 0).0.iter().map(|m| m.seq).collect::<Vec<_>>(), [7, 8, 9, 10]);
    assert!(read(&back, &["/even"], 4).1.gap && !read(&back, &["/even"], 5).1.gap, "/even lost 1, 3, 5");
    check_invariants(&back);
    // Overall: 3.
    let (back, _) = load(&bytes, HistoryLimits { total_messages: 3, ..roomy() }, 10_000).expect("loads");
    assert_eq!(read(&back, &["/*"], 0).0.iter().map(|m| m.seq).collect::<Vec<_>>(), [8, 9, 10]);
    check_invariants(&back);
    // By age, at load time: messages older than 4.5 s at t = 12 s go (seq 9 is at 8 s, 8 at 7 s).
    let (back, _) =
        load(&bytes, HistoryLimits { max_age: Duration::from_millis(4_500), ..roomy() }, 12_000).expect("loads");
    assert_eq!(read(&back, &["/*"], 0).0.iter().map(|m| m.seq).collect::<Vec<_>>(), [9, 10]);
    assert_eq!(back.head(), 10);
    check_invariants(&back);
    // Bytes: only the newest fits.
    let one = MESSAGE_COST;
    let (back, _) = load(&bytes, HistoryLimits { total_bytes: one, max_bytes: one, ..roomy() }, 10_000).expect("loads");
    assert_eq!(read(&back, &["/*"], 0).0.iter().map(|m| m.seq).collect::<Vec<_>>(), [10]);
    check_invariants(&back);
}

const MESSAGE_COST: usize = crate::model::PAYLOAD_COPIES + 4 + crate::model::MESSAGE_OVERHEAD_BYTES;

#[test]
fn every_truncation_and_damage_is_refused_as_corrupt() {
    let bytes = snapshot(&sample());
    for len in 0..bytes.len() {
        match load(&bytes[..len], roomy(), 0) {
            Err(SnapshotError::Corrupt(_)) => {}
            other => panic!("truncated at {len}: {:?}", other.map(|(_, l)| l)),
        }
    }
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x20;
        match load(&damaged, roomy(), 0) {
            Err(SnapshotError::Corrupt(_)) => {}
            Err(SnapshotError::Version(_)) if (8..12).contains(&at) => {}
            other => panic!("byte {at} flipped: {:?}", other.map(|(_, l)| l)),
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(load(&longer, roomy(), 0), Err(SnapshotError::Corrupt(_))));
    let mut other = bytes;
    other[8..12].copy_from_slice(&2u32.to_le_bytes());
    let err = load(&other, roomy(), 0).map(|_| ()).expect_err("version 2");
    assert!(matches!(err, SnapshotError::Version(2)));
    assert_eq!(err.to_string(), "format version 2, but this halley reads version 1");
}

#[test]
fn a_damaged_length_does_not_allocate_it() {
    // A message whose payload claims 4 GiB - 2 in a file of a few bytes: refused, not allocated.
    let s = MemoryStore::with_epoch(roomy(), Epoch::from_raw(7).expect("fits"));
    append(&s, "/a", 0, b"xy", None, None);
    let mut bytes = snapshot(&s);
    let len_at = bytes.len() - 4 - 2 - 4;
    bytes[len_at..len_at + 4].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    assert!(matches!(
        load(&bytes, HistoryLimits { total_bytes: usize::MAX, ..roomy() }, 0),
        Err(SnapshotError::Corrupt(_))
    ));
}
