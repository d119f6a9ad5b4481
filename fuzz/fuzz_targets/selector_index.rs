//! `model::SelectorIndex` against a naive list scanned with `Selector::matches`: random
//! insert / remove / lookup / match sequences must agree.
//!
//! Input: a sequence of operations, 3 bytes each: `[op] [shape] [names]`. The op byte picks
//! insert, remove, get or match; the shape and names bytes build a selector (or, for match, a
//! topic) of 1 to 4 segments from a small alphabet (`a`, `bb`, `pushlet`, `to`, `*`, `**`), so
//! selectors collide and overlap often and topics reach the private `/pushlet/to/` prefix.
//!
//! Beyond "no panic": insert reports "new" exactly when the model lacked the selector and keeps
//! the old value otherwise; remove returns the model's value; get agrees; match yields every
//! matching selector's value exactly once; `len`, `patterns` and `is_empty` agree throughout,
//! and the index is empty once the model is.
#![no_main]

use halley::model::{Selector, SelectorIndex};
use libfuzzer_sys::fuzz_target;

const SEGMENTS: [&str; 8] = ["a", "pushlet", "to", "a", "*", "**", "*", "bb"];
const TOPIC_SEGMENTS: [&str; 8] = ["a", "pushlet", "to", "bb", "a", "to", "pushlet", "c"];

fuzz_target!(|data: &[u8]| {
    let mut index: SelectorIndex<u32> = SelectorIndex::default();
    let mut model: Vec<(Selector, u32)> = Vec::new();
    let mut next = 0u32;
    for op in data.chunks_exact(3) {
        let (kind, shape, names) = (op[0], op[1], op[2]);
        match kind % 4 {
            0 => {
                let Some(selector) = selector(shape, names) else { continue };
                next += 1;
                let (value, inserted) = index.get_or_insert_with(&selector, || next);
                match model.iter().find(|(s, _)| *s == selector) {
                    Some((_, old)) => assert!(!inserted && *value == *old, "{selector} re-inserted"),
                    None => {
                        assert!(inserted && *value == next, "{selector} not inserted");
                        model.push((selector, next));
                    }
                }
            }
            1 => {
                let Some(selector) = selector(shape, names) else { continue };
                let at = model.iter().position(|(s, _)| *s == selector);
                let want = at.map(|at| model.remove(at).1);
                assert_eq!(index.remove(&selector), want, "remove {selector}");
            }
            2 => {
                let Some(selector) = selector(shape, names) else { continue };
                let want = model.iter().find(|(s, _)| *s == selector).map(|(_, v)| *v);
                assert_eq!(index.get(&selector).copied(), want, "get {selector}");
                if let Some(value) = index.get_mut(&selector) {
                    assert_eq!(Some(*value), want);
                }
            }
            _ => {
                let topic = topic(shape, names);
                let mut got = Vec::new();
                index.for_each_match(&topic, |v| got.push(*v));
                got.sort_unstable();
                let mut want: Vec<u32> = model.iter().filter(|(s, _)| s.matches(&topic)).map(|(_, v)| *v).collect();
                want.sort_unstable();
                assert_eq!(got, want, "matches of {topic}");
            }
        }
        assert_eq!(index.len(), model.len());
        assert_eq!(index.patterns(), model.iter().filter(|(s, _)| s.is_pattern()).count());
        assert_eq!(index.is_empty(), model.is_empty());
    }
});

/// A selector of 1 to 4 segments: `shape` gives the count (low 2 bits) and, three bits per
/// segment, `names` and `shape` the segment; `None` when it is not a valid selector (`**`
/// before the end).
fn selector(shape: u8, names: u8) -> Option<Selector> {
    let count = 1 + usize::from(shape & 3);
    let bits = u32::from(names) | u32::from(shape >> 2) << 8;
    let text: String = (0..count).map(|i| format!("/{}", SEGMENTS[(bits >> (3 * i)) as usize & 7])).collect();
    Selector::parse(&text).ok()
}

/// A topic of 1 to 4 segments, three bits per segment.
fn topic(shape: u8, names: u8) -> String {
    let count = 1 + usize::from(shape & 3);
    let bits = u32::from(names) | u32::from(shape >> 2) << 8;
    (0..count).map(|i| format!("/{}", TOPIC_SEGMENTS[(bits >> (3 * i)) as usize & 7])).collect()
}
