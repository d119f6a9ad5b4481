//! `model::check_depth_within`, the JSON nesting bound every ingest path applies before serde.
//!
//! Input: `[bound knob] [bytes]`; the bound is the knob modulo 130 (so 0 to 129 levels, around
//! serde_json's own 128).
//!
//! Beyond "no panic": on every input serde_json accepts, the check agrees with the document's
//! real depth (arrays and objects, the whole document included): it passes exactly when the
//! depth is within the bound. `check_depth` is the check at `MAX_JSON_DEPTH`.
#![no_main]

use halley::model::{check_depth, check_depth_within, TooDeep, MAX_JSON_DEPTH};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let ([knob], json) = halley_fuzz::knobs::<1>(data);
    let max = usize::from(knob) % 130;
    let within = check_depth_within(json, max);
    if let Err(e) = within {
        assert_eq!(e, TooDeep { max });
    }
    assert_eq!(check_depth(json), check_depth_within(json, MAX_JSON_DEPTH));
    // serde_json refuses more than 128 levels itself; what it reads has a real depth.
    if let Ok(value) = serde_json::from_slice::<Value>(json) {
        let depth = depth(&value);
        assert_eq!(within.is_ok(), depth <= max, "depth {depth}, bound {max}, check said {within:?}");
    }
});

/// Levels of arrays and objects in `v`, itself included.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
