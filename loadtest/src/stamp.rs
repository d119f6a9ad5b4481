//! The stamp every published message carries (publisher, sequence number, send time) and the
//! per-subscriber check for loss, duplicates and reordering.
//!
//! A publish body is `{"src":P,"seq":N,"ts":<unix ns>,"pad":"..."}`, sent as
//! `application/json` so Halley embeds it as JSON. Sequence numbers count per publisher *and*
//! topic, so every subscriber expects each publisher's numbers without holes.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Reordering is told apart from duplication within this many sequence numbers behind the
/// highest one seen; anything older counts as a duplicate.
pub const REORDER_WINDOW: u64 = 128;

/// Most publishers one subscriber tracks; more is a plan error, caught in `cli.rs`.
pub const MAX_PUBLISHERS: usize = 64;

/// What identifies and times one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Publisher connection number.
    pub src: u32,
    /// Sequence number, per publisher and topic; 0 is the warm-up message.
    pub seq: u64,
    /// When the publisher sent it, Unix time in nanoseconds.
    pub ts: u64,
}

/// The publish body for `stamp`, padded with `pad` filler bytes.
pub fn encode_body(stamp: Stamp, pad: usize) -> Vec<u8> {
    let mut body = format!("{{\"src\":{},\"seq\":{},\"ts\":{},\"pad\":\"", stamp.src, stamp.seq, stamp.ts).into_bytes();
    body.resize(body.len() + pad, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// Find the stamp in a delivered payload: the publish body itself (Nchan, SSE data), or an
/// envelope whose `data` holds it as embedded JSON or as a JSON string.
pub fn parse_stamp(bytes: &[u8]) -> Option<Stamp> {
    serde_json::from_slice::<Stamp>(bytes).ok()
}

/// Unix time now, in nanoseconds (0 if the clock is before 1970).
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// What one received message was, relative to what the subscriber saw before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next number, or the first seen from this publisher.
    InOrder,
    /// Ahead of the next number: `missed` numbers were skipped (possibly lost).
    Gap { missed: u64 },
    /// A number skipped earlier, arriving late.
    Reordered,
    /// Seen before (or too old to tell).
    Duplicate,
}

/// One subscriber's view of each publisher's sequence: the highest number seen and which of
/// the [`REORDER_WINDOW`] numbers below it arrived.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    windows: Vec<SrcWindow>,
}

#[derive(Debug, Clone, Copy)]
struct SrcWindow {
    src: u32,
    highest: u64,
    /// Bit i set: `highest - i` was received.
    seen: u128,
}

impl SeqTracker {
    /// Classify the arrival of `(src, seq)` and remember it.
    pub fn observe(&mut self, src: u32, seq: u64) -> Verdict {
        let Some(w) = self.windows.iter_mut().find(|w| w.src == src) else {
            if self.windows.len() < MAX_PUBLISHERS {
                self.windows.push(SrcWindow { src, highest: seq, seen: 1 });
            }
            return Verdict::InOrder;
        };
        if seq > w.highest {
            let ahead = seq - w.highest;
            w.seen = if ahead >= 128 { 1 } else { (w.seen << ahead) | 1 };
            w.highest = seq;
            return if ahead == 1 { Verdict::InOrder } else { Verdict::Gap { missed: ahead - 1 } };
        }
        let behind = w.highest - seq;
        if behind >= REORDER_WINDOW {
            return Verdict::Duplicate;
        }
        let bit = 1u128 << behind;
        if w.seen & bit != 0 {
            Verdict::Duplicate
        } else {
            w.seen |= bit;
            Verdict::Reordered
        }
    }

    /// The highest sequence number seen from `src`.
    pub fn highest(&self, src: u32) -> Option<u64> {
        self.windows.iter().find(|w| w.src == src).map(|w| w.highest)
    }
}

/// Delivery-check counters, summed over subscribers, threads and processes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checks {
    /// Messages received, duplicates included.
    pub received: u64,
    pub duplicates: u64,
    /// Late arrivals of numbers that had been skipped.
    pub reordered: u64,
    /// Numbers skipped and not (yet) received: lost unless they still arrive.
    pub missing: u64,
}

impl Checks {
    /// Count one received message with its verdict.
    pub fn count(&mut self, verdict: Verdict) {
        self.received += 1;
        match verdict {
            Verdict::InOrder => {}
            Verdict::Gap { missed } => self.missing += missed,
            Verdict::Reordered => {
                self.reordered += 1;
                self.missing = self.missing.saturating_sub(1);
            }
            Verdict::Duplicate => self.duplicates += 1,
        }
    }

    /// Add another set of counters (another thread or process).
    pub fn merge(&mut self, other: &Checks) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.missing += other.missing;
    }

    /// Messages received once each.
    pub fn unique(&self) -> u64 {
        self.received - self.duplicates.min(self.received)
    }
}

/// Most distinct delivery orders [`Orders`] keeps apart; more are lumped into `other` (a
/// run that has more than one order has a problem anyway, so the exact count matters less).
pub const MAX_ORDERS: usize = 32;

/// One subscriber's delivery order folded into 64 bits: each `(src, seq)` it received once,
/// in arrival order. Two subscribers that saw the same messages in the same order have the
/// same value; a swap, a loss or an extra message changes it (up to hash collisions).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OrderHash(u64);

impl OrderHash {
    pub fn add(&mut self, src: u32, seq: u64) {
        let x = (u64::from(src) << 48) ^ seq;
        self.0 = (self.0.rotate_left(7) ^ x).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    pub fn value(self) -> u64 {
        self.0
    }
}

/// How many subscribers saw each delivery order: `(order hash, subscribers)`, at most
/// [`MAX_ORDERS`] entries, the rest counted in `other`. One entry means every subscriber saw
/// the one global order (the check that matters across cluster nodes).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Orders {
    pub groups: Vec<(u64, u64)>,
    pub other: u64,
}

impl Orders {
    /// Count `subscribers` that saw the order `hash`.
    pub fn add(&mut self, hash: u64, subscribers: u64) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.0 == hash) {
            g.1 += subscribers;
        } else if self.groups.len() < MAX_ORDERS {
            self.groups.push((hash, subscribers));
        } else {
            self.other += subscribers;
        }
    }

    pub fn merge(&mut self, o: &Orders) {
        for &(hash, n) in &o.groups {
            self.add(hash, n);
        }
        self.other += o.other;
    }

    /// Subscribers counted.
    pub fn subscribers(&self) -> u64 {
        self.groups.iter().map(|g| g.1).sum::<u64>() + self.other
    }

    /// Distinct orders seen (at least; those past [`MAX_ORDERS`] count as one more).
    pub fn distinct(&self) -> u64 {
        self.groups.len() as u64 + u64::from(self.other > 0)
    }

    /// Subscribers in the largest group that saw one order.
    pub fn largest(&self) -> u64 {
        self.groups.iter().map(|g| g.1).max().unwrap_or(0)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(StampVisitor)
    }
}

struct StampVisitor;

impl<'de> Visitor<'de> for StampVisitor {
    type Value = Stamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message stamp object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Stamp, A::Error> {
        let mut stamp = Stamp::default();
        let mut seq = None;
        let mut nested = None;
        while let Some(key) = map.next_key::<KeyName>()? {
            match key {
                KeyName::Src => stamp.src = map.next_value()?,
                KeyName::Seq => seq = Some(map.next_value()?),
                KeyName::Ts => stamp.ts = map.next_value()?,
                KeyName::Data => nested = map.next_value::<Nested>()?.0,
                KeyName::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match (seq, nested) {
            (Some(seq), _) => Ok(Stamp { seq, ..stamp }),
            (None, Some(inner)) => Ok(inner),
            (None, None) => Err(de::Error::missing_field("seq")),
        }
    }
}

/// Object keys the stamp cares about, matched without allocating.
enum KeyName {
    Src,
    Seq,
    Ts,
    Data,
    Other,
}

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(match v {
                    "src" => KeyName::Src,
                    "seq" => KeyName::Seq,
                    "ts" => KeyName::Ts,
                    "data" => KeyName::Data,
                    _ => KeyName::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// A `data` field: an embedded stamp object, a JSON string holding one, or anything else.
pub(crate) struct Nested(pub(crate) Option<Stamp>);

impl<'de> Deserialize<'de> for Nested {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NestedVisitor;
        impl<'de> Visitor<'de> for NestedVisitor {
            type Value = Nested;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("message data")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Nested, A::Error> {
                // Not a stamp object: still a valid message, just not one of ours.
                match StampVisitor.visit_map(map) {
                    Ok(s) => Ok(Nested(Some(s))),
                    Err(_) => Ok(Nested(None)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Nested, E> {
                Ok(Nested(serde_json::from_str::<Stamp>(v).ok()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Nested, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Nested(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Nested, E> {
                Ok(Nested(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Nested, E> {
                Ok(Nested(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Nested, E> {
                Ok(Nested(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Nested, E> {
                Ok(Nested(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Nested, E> {
                Ok(Nested(None))
            }
        }
        d.deserialize_any(NestedVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_hash_tells_orders_apart_and_orders_are_counted() {
        let fold = |items: &[(u32, u64)]| {
            let mut h = OrderHash::default();
            for &(src, seq) in items {
                h.add(src, seq);
            }
            h.value()
        };
        let a = fold(&[(0, 1), (1, 1), (0, 2)]);
        assert_eq!(a, fold(&[(0, 1), (1, 1), (0, 2)]));
        assert_ne!(a, fold(&[(1, 1), (0, 1), (0, 2)]), "a swap across publishers");
        assert_ne!(a, fold(&[(0, 1), (0, 2)]), "a loss");
        assert_ne!(fold(&[(0, 0)]), OrderHash::default().value(), "seq 0 of src 0 still counts");
        let mut o = Orders::default();
        o.add(a, 3);
        let mut other = Orders::default();
        other.add(a, 2);
        other.add(7, 1);
        o.merge(&other);
        assert_eq!((o.subscribers(), o.distinct(), o.largest()), (6, 2, 5));
        for h in 0..(MAX_ORDERS as u64 + 5) {
            o.add(100 + h, 1);
        }
        assert_eq!(o.groups.len(), MAX_ORDERS);
        assert_eq!(o.distinct(), MAX_ORDERS as u64 + 1);
        assert_eq!(o.subscribers(), 6 + MAX_ORDERS as u64 + 5);
    }

    #[test]
    fn body_round_trips_and_pads() {
        let s = Stamp { src: 3, seq: 42, ts: 1_700_000_000_123_456_789 };
        let body = encode_body(s, 10);
        assert!(body.ends_with(b"xxxxxxxxxx\"}"));
        assert_eq!(parse_stamp(&body), Some(s));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(v["seq"], 42);
    }

    #[test]
    fn stamp_found_in_envelopes() {
        let embedded = br#"{"id":"1-5","topic":"/t","time":1,"data":{"src":1,"seq":5,"ts":9,"pad":""}}"#;
        assert_eq!(parse_stamp(embedded), Some(Stamp { src: 1, seq: 5, ts: 9 }));
        let as_string = br#"{"id":"1-5","data":"{\"seq\":6,\"ts\":7}"}"#;
        assert_eq!(parse_stamp(as_string), Some(Stamp { src: 0, seq: 6, ts: 7 }));
        assert_eq!(parse_stamp(br#"{"data":"hello"}"#), None);
        assert_eq!(parse_stamp(br#"{"data":[1,2],"x":null}"#), None);
        assert_eq!(parse_stamp(b"not json"), None);
    }

    #[test]
    fn in_order_sequence_has_no_findings() {
        let mut t = SeqTracker::default();
        let mut c = Checks::default();
        for seq in 10..20 {
            let v = t.observe(0, seq);
            assert_eq!(v, Verdict::InOrder);
            c.count(v);
        }
        assert_eq!(c, Checks { received: 10, ..Checks::default() });
        assert_eq!(t.highest(0), Some(19));
    }

    #[test]
    fn gap_then_late_arrival_is_reordering_not_loss() {
        let mut t = SeqTracker::default();
        let mut c = Checks::default();
        for seq in [1, 2, 5, 3] {
            c.count(t.observe(0, seq));
        }
        assert_eq!(c.missing, 1, "4 is still missing");
        assert_eq!(c.reordered, 1);
        c.count(t.observe(0, 4));
        assert_eq!(c.missing, 0);
        assert_eq!(c.reordered, 2);
        assert_eq!(c.duplicates, 0);
    }

    #[test]
    fn duplicates_are_detected_in_and_beyond_the_window() {
        let mut t = SeqTracker::default();
        let mut c = Checks::default();
        for seq in [1, 2, 2, 3, 1] {
            c.count(t.observe(0, seq));
        }
        assert_eq!(c.duplicates, 2);
        c.count(t.observe(0, 1000));
        assert_eq!(c.missing, 996);
        assert_eq!(t.observe(0, 3), Verdict::Duplicate, "older than the window");
        assert_eq!(t.observe(0, 1000 - REORDER_WINDOW + 1), Verdict::Reordered);
        assert_eq!(c.unique(), 4);
    }

    #[test]
    fn publishers_are_tracked_separately() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0, 1), Verdict::InOrder);
        assert_eq!(t.observe(1, 7), Verdict::InOrder);
        assert_eq!(t.observe(1, 8), Verdict::InOrder);
        assert_eq!(t.observe(0, 2), Verdict::InOrder);
        assert_eq!(t.observe(0, 4), Verdict::Gap { missed: 1 });
        assert_eq!(t.observe(1, 8), Verdict::Duplicate);
    }

    #[test]
    fn checks_merge_adds_up() {
        let mut a = Checks { received: 5, duplicates: 1, reordered: 2, missing: 3 };
        a.merge(&Checks { received: 1, duplicates: 1, reordered: 0, missing: 1 });
        assert_eq!(a, Checks { received: 6, duplicates: 2, reordered: 2, missing: 4 });
        assert_eq!(a.unique(), 4);
    }
}
