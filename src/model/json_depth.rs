//! The one bound on JSON nesting that every ingest path shares: [`MAX_JSON_DEPTH`] and the
//! cheap check, [`check_depth`], that enforces it without parsing.
//!
//! Why a bound at all: Halley embeds a JSON payload in the messages it sends byte for byte
//! (`Message::json`), and validates it with serde's `IgnoredAny` or keeps it as a `RawValue`,
//! neither of which limits nesting. A payload nested a few hundred levels deep is therefore
//! accepted and stored, and then every subscriber that decodes into a tree fails on it: serde
//! stops at 128 levels, browsers at a few thousand. One such message stalls a client that
//! retries it (a poison message). So a publish, a Bayeux batch and a command are refused when
//! their JSON nests deeper than the bound, and the message model never embeds deeper JSON raw.
//!
//! The bound counts arrays and objects, the whole document included (`[]` is 1 level, `1` is
//! 0). 64 leaves room for the envelopes Halley adds around a payload (a long-poll reply adds 3
//! levels, a Bayeux event 2) inside the 128 that the most common decoder accepts.

use std::fmt;

/// Deepest nesting of arrays and objects accepted in any JSON a client sends, in levels.
pub const MAX_JSON_DEPTH: usize = 64;

/// JSON nested deeper than the bound; displays as the one-line reason a client is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    pub max: usize,
}

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON nested deeper than {} levels", self.max)
    }
}

impl std::error::Error for TooDeep {}

/// Whether `json` nests at most [`MAX_JSON_DEPTH`] levels.
pub fn check_depth(json: &[u8]) -> Result<(), TooDeep> {
    check_depth_within(json, MAX_JSON_DEPTH)
}

/// Whether `json` nests at most `max` levels. One pass, no allocation, and no validation:
/// brackets inside strings are skipped (with their escapes), and whatever else the text holds
/// is left to the parser that runs after. Stops at the first byte past the bound, so a hostile
/// document costs no more than `max` levels' worth of scanning past its valid prefix.
pub fn check_depth_within(json: &[u8], max: usize) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(TooDeep { max });
                }
            }
            // Unbalanced closers are the parser's to refuse; they must not wrap the count.
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        for (json, depth) in [
            ("1", 0),
            ("\"s\"", 0),
            ("[]", 1),
            ("{}", 1),
            (r#"{"a":[1,{"b":[]}]}"#, 4),
            (r#"[[],[],[[]]]"#, 3),
            (r#"{"a":{"b":{"c":{}}}}"#, 4),
        ] {
            assert_eq!(check_depth_within(json.as_bytes(), depth), Ok(()), "{json}");
            if depth > 0 {
                assert_eq!(check_depth_within(json.as_bytes(), depth - 1), Err(TooDeep { max: depth - 1 }), "{json}");
            }
        }
    }

    #[test]
    fn brackets_in_strings_do_not_count() {
        let json = r#"{"a":"[[[[{{{{","b":"\"[[[","c":"\\","d":[]}"#;
        assert_eq!(check_depth_within(json.as_bytes(), 2), Ok(()));
        assert!(serde_json::from_str::<serde_json::Value>(json).is_ok(), "the case is valid JSON");
    }

    #[test]
    fn the_bound_is_exact() {
        assert_eq!(check_depth(nested(MAX_JSON_DEPTH).as_bytes()), Ok(()));
        assert_eq!(check_depth(nested(MAX_JSON_DEPTH + 1).as_bytes()), Err(TooDeep { max: MAX_JSON_DEPTH }));
        // Unclosed openers count too: the check does not wait for a valid document.
        assert!(check_depth("[".repeat(MAX_JSON_DEPTH + 1).as_bytes()).is_err());
        assert_eq!(TooDeep { max: 64 }.to_string(), "JSON nested deeper than 64 levels");
    }

    #[test]
    fn what_the_bound_admits_every_serde_reader_can_decode_in_an_envelope() {
        // A long-poll reply wraps a payload 3 levels deep; serde_json stops at 128.
        let reply = format!(r#"{{"messages":[{{"data":{}}}]}}"#, nested(MAX_JSON_DEPTH));
        assert!(serde_json::from_str::<serde_json::Value>(&reply).is_ok());
    }

    #[test]
    fn unbalanced_closers_do_not_underflow() {
        assert_eq!(check_depth_within(b"]]]]}}[[", 2), Ok(()));
        assert!(check_depth_within(b"]]]][[[", 2).is_err());
    }
}
