//! Topic names and subscription selectors: what a valid topic looks like, how a pattern is
//! parsed, and which topics a selector matches.
//!
//! A topic is a '/'-separated path such as `/chat/room1`. A selector is either an exact topic or
//! a pattern using the Bayeux channel wildcards (Bayeux 1.0, section 2.2.2): `*` as a whole
//! segment matches exactly one segment, `**` as the last segment matches one or more. Both are
//! parsed here once, at the edge, so the hub and the store only ever see validated values.
//!
//! One namespace is private: a topic under [`PRIVATE_PREFIX`] (`/pushlet/to/<public id>`) is
//! one Pushlet session's unicast inbox. No client can name one: [`validate_topic`] and
//! [`Selector::parse`] refuse them, and no pattern matches them (not even `/**`), so they are
//! read only through the exact selector the owning session's listen holds and written only by
//! the server ([`private_topic`], checked by [`validate_internal_topic`]).

use std::fmt;
use std::sync::Arc;

/// Most segments a topic or selector may have.
pub const MAX_SEGMENTS: usize = 16;
/// Longest segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 128;
/// Longest topic or selector, in bytes, including every '/'.
pub const MAX_TOPIC_LEN: usize = 512;

/// Topics under this prefix are private (see the module doc).
pub const PRIVATE_PREFIX: &str = "/pushlet/to/";

/// Whether `topic` is in the private namespace.
pub fn is_private(topic: &str) -> bool {
    topic.starts_with(PRIVATE_PREFIX)
}

/// Checks that `name` is a valid topic name a client may use (see the module doc): wildcards
/// and the private namespace are not allowed.
pub fn validate_topic(name: &str) -> Result<(), TopicError> {
    if is_private(name) {
        return Err(TopicError::new(PRIVATE_REASON));
    }
    validate_internal_topic(name)
}

/// Checks that `name` is a valid topic name, private ones included: for topics the server
/// made itself (the hub's re-check before storing), never for a client's.
pub fn validate_internal_topic(name: &str) -> Result<(), TopicError> {
    for segment in segments(name)? {
        if segment.contains('*') {
            return Err(TopicError::new("topic names cannot contain '*'"));
        }
        check_segment(segment)?;
    }
    Ok(())
}

/// Why a client's private topic or pattern is refused.
const PRIVATE_REASON: &str = "topics under /pushlet/to/ are private to their Pushlet session";

/// The private topic `/pushlet/to/<owner>`, where `owner` (a session's public id, or a `p_to`
/// naming one) must be one valid segment.
pub fn private_topic(owner: &str) -> Result<Arc<str>, TopicError> {
    if owner.contains(['/', '*']) {
        return Err(TopicError::new("a private topic's owner must be one segment"));
    }
    let topic = format!("{PRIVATE_PREFIX}{owner}");
    validate_internal_topic(&topic)?;
    Ok(Arc::from(topic))
}

/// A subscription selector: an exact topic or a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// One topic, matched by equality.
    Exact(Arc<str>),
    /// A wildcard pattern.
    Pattern(Pattern),
}

impl Selector {
    /// Parses an exact topic or a pattern. A selector with no wildcard segment is `Exact`.
    /// Nothing in the private namespace: a pattern there could never match, an exact name is
    /// another session's inbox.
    pub fn parse(s: &str) -> Result<Selector, TopicError> {
        if is_private(s) {
            return Err(TopicError::new(PRIVATE_REASON));
        }
        let mut wildcard = false;
        let mut prefix_len = s.len();
        let mut segs = segments(s)?.peekable();
        let mut offset = 1; // the byte offset of the current segment, after the leading '/'
        while let Some(segment) = segs.next() {
            match segment {
                "*" | "**" => {
                    if segment == "**" && segs.peek().is_some() {
                        return Err(TopicError::new("'**' is only allowed as the last segment"));
                    }
                    if !wildcard {
                        prefix_len = offset;
                        wildcard = true;
                    }
                }
                _ if segment.contains('*') => {
                    return Err(TopicError::new("a wildcard must be a whole segment"));
                }
                _ => check_segment(segment)?,
            }
            offset += segment.len() + 1;
        }
        if wildcard {
            Ok(Selector::Pattern(Pattern { text: Arc::from(s), prefix_len }))
        } else {
            Ok(Selector::Exact(Arc::from(s)))
        }
    }

    /// Whether `topic` (a valid topic name) is selected. An exact selector selects its topic,
    /// private or not (only the server makes private exact selectors); a pattern never selects
    /// a private topic.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Exact(name) => **name == *topic,
            Selector::Pattern(pattern) => pattern.matches(topic),
        }
    }

    /// Whether the selector's text names `topic` by the wildcard rules alone, private topics
    /// included: for policies about which names a client may write to (`--client-publish`),
    /// never for reading.
    pub fn names(&self, topic: &str) -> bool {
        match self {
            Selector::Exact(name) => **name == *topic,
            Selector::Pattern(pattern) => pattern.names(topic),
        }
    }

    /// The selector as the client wrote it.
    pub fn as_str(&self) -> &str {
        match self {
            Selector::Exact(name) => name,
            Selector::Pattern(pattern) => pattern.as_str(),
        }
    }

    /// Whether this is a wildcard pattern rather than one topic.
    pub fn is_pattern(&self) -> bool {
        matches!(self, Selector::Pattern(_))
    }

    /// Whether every topic `other` can select is also named by `self` (pattern inclusion):
    /// what an access grant checks before it lets a subscription to a topic or a pattern
    /// through. Segment by segment: a final `**` covers one or more segments of anything
    /// (wildcards included), `*` covers one segment that is a name or `*` (never `**`, which
    /// may span several), a name covers only the same name.
    pub fn covers(&self, other: &Selector) -> bool {
        let (Some(mine), Some(theirs)) = (self.as_str().strip_prefix('/'), other.as_str().strip_prefix('/')) else {
            return false;
        };
        let mut want = mine.split('/');
        let mut have = theirs.split('/');
        loop {
            match (want.next(), have.next()) {
                (Some("**"), Some(_)) => return true,
                (Some("*"), Some(h)) if h != "**" => {}
                (Some(w), Some(h)) if w != "*" && w != "**" && w == h => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated wildcard pattern, e.g. `/chat/*` or `/chat/**`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Arc<str>,
    /// Length of the literal text before the first wildcard segment (it ends in '/').
    prefix_len: usize,
}

impl Pattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text before the first wildcard segment, ending in '/' (`"/chat/"` for `/chat/*`,
    /// `"/"` for `/*/x`). Every matching topic starts with it, so a sorted topic table can be
    /// range-scanned from here instead of walked in full.
    pub fn literal_prefix(&self) -> &str {
        self.text.get(..self.prefix_len).unwrap_or("/")
    }

    /// Whether `topic` (a valid topic name) matches: it is not private, and [`Pattern::names`]
    /// it.
    pub fn matches(&self, topic: &str) -> bool {
        !is_private(topic) && self.names(topic)
    }

    /// Whether the pattern names `topic` (a valid topic name) by the wildcard rules: `*` takes
    /// exactly one segment, a final `**` one or more, every other segment must be equal.
    pub fn names(&self, topic: &str) -> bool {
        if !topic.starts_with(self.literal_prefix()) {
            return false;
        }
        let (Some(pattern), Some(topic)) = (self.text.strip_prefix('/'), topic.strip_prefix('/')) else {
            return false;
        };
        let mut want = pattern.split('/');
        let mut have = topic.split('/');
        loop {
            match (want.next(), have.next()) {
                (Some("**"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(w), Some(h)) if w == h => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a topic name or selector was rejected; displays as one line for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicError {
    reason: &'static str,
}

impl TopicError {
    fn new(reason: &'static str) -> TopicError {
        TopicError { reason }
    }

    /// The one-line reason.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for TopicError {}

/// Splits a name into its segments after checking the shape shared by topics and selectors:
/// overall length, leading '/', no empty segment (so no "//" and no trailing '/'), and the
/// segment count. The segments' characters are checked by the caller.
fn segments(name: &str) -> Result<std::str::Split<'_, char>, TopicError> {
    if name.len() > MAX_TOPIC_LEN {
        return Err(TopicError::new("topic is too long"));
    }
    let Some(rest) = name.strip_prefix('/') else {
        return Err(TopicError::new("topic must start with '/'"));
    };
    let mut count = 0;
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(TopicError::new("topic has an empty segment"));
        }
        count += 1;
        if count > MAX_SEGMENTS {
            return Err(TopicError::new("topic has too many segments"));
        }
    }
    Ok(rest.split('/'))
}

/// Checks one literal (non-wildcard) segment.
fn check_segment(segment: &str) -> Result<(), TopicError> {
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(TopicError::new("topic segment is too long"));
    }
    if segment == "." || segment == ".." {
        return Err(TopicError::new("topic segment cannot be '.' or '..'"));
    }
    if !segment.bytes().all(is_segment_byte) {
        return Err(TopicError::new("topic segment contains an invalid character"));
    }
    Ok(())
}

/// The segment alphabet: unreserved URI characters (RFC 3986 section 2.3) plus a few
/// sub-delims that need no escaping in a path (`:@+=`), so a topic can be written verbatim in
/// a URL path.
fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b':' | b'@' | b'+' | b'=' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_inclusion_table() {
        let sel = |s: &str| Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        for (outer, inner, covered) in [
            ("/**", "/a", true),
            ("/**", "/a/b/c", true),
            ("/**", "/**", true),
            ("/**", "/*/x/**", true),
            ("/chat/**", "/chat/room", true),
            ("/chat/**", "/chat/*", true),
            ("/chat/**", "/chat/**", true),
            ("/chat/**", "/chat", false),
            ("/chat/**", "/chats/x", false),
            ("/chat/**", "/**", false),
            ("/chat/**", "/*/room", false),
            ("/chat/*", "/chat/room", true),
            ("/chat/*", "/chat/*", true),
            ("/chat/*", "/chat/**", false),
            ("/chat/*", "/chat/a/b", false),
            ("/chat/*", "/chat", false),
            ("/*/room", "/chat/room", true),
            ("/*/room", "/*/room", true),
            ("/*/room", "/chat/*", false),
            ("/chat/room", "/chat/room", true),
            ("/chat/room", "/chat/*", false),
            ("/chat/room", "/chat/room/x", false),
            ("/a/*/c/**", "/a/b/c/d/e", true),
            ("/a/*/c/**", "/a/*/c/*", true),
            ("/a/*/c/**", "/a/b/d/e", false),
        ] {
            assert_eq!(sel(outer).covers(&sel(inner)), covered, "{outer} covers {inner}");
        }
    }

    #[test]
    fn topic_validation_table() {
        let long_segment = format!("/{}", "a".repeat(MAX_SEGMENT_LEN));
        let too_long_segment = format!("/{}", "a".repeat(MAX_SEGMENT_LEN + 1));
        let max_segments = "/a".repeat(MAX_SEGMENTS);
        let too_many_segments = "/a".repeat(MAX_SEGMENTS + 1);
        let max_len = format!("/{}", ["b"; 4].map(|_| "c".repeat(127)).join("/")); // 512 bytes
        assert_eq!(max_len.len(), MAX_TOPIC_LEN);
        let too_long = format!("{max_len}x");
        let ok: &[&str] =
            &["/a", "/chat/room1", "/A-z_0.9~:@+=", "/a..b", "/.a", &long_segment, &max_segments, &max_len];
        for name in ok {
            assert_eq!(validate_topic(name), Ok(()), "{name}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "topic must start with '/'"),
            ("a/b", "topic must start with '/'"),
            ("/", "topic has an empty segment"),
            ("/a/", "topic has an empty segment"),
            ("//a", "topic has an empty segment"),
            ("/a//b", "topic has an empty segment"),
            ("/a/*", "topic names cannot contain '*'"),
            ("/a/**", "topic names cannot contain '*'"),
            ("/a*", "topic names cannot contain '*'"),
            ("/a b", "topic segment contains an invalid character"),
            ("/a?b", "topic segment contains an invalid character"),
            ("/a%20", "topic segment contains an invalid character"),
            ("/caf\u{e9}", "topic segment contains an invalid character"),
            ("/a/.", "topic segment cannot be '.' or '..'"),
            ("/../etc", "topic segment cannot be '.' or '..'"),
            (&too_long_segment, "topic segment is too long"),
            (&too_many_segments, "topic has too many segments"),
            (&too_long, "topic is too long"),
        ];
        for (name, reason) in bad {
            let err = validate_topic(name).expect_err(name);
            assert_eq!(err.reason(), *reason, "{name}");
            assert_eq!(err.to_string(), *reason);
        }
    }

    #[test]
    fn selector_parse_table() {
        assert_eq!(Selector::parse("/a/b"), Ok(Selector::Exact(Arc::from("/a/b"))));
        for (text, prefix) in [
            ("/*", "/"),
            ("/**", "/"),
            ("/chat/*", "/chat/"),
            ("/chat/**", "/chat/"),
            ("/a/b/*/c", "/a/b/"),
            ("/*/x/**", "/"),
            ("/a/*/*", "/a/"),
        ] {
            match Selector::parse(text) {
                Ok(Selector::Pattern(p)) => {
                    assert_eq!(p.as_str(), text);
                    assert_eq!(p.literal_prefix(), prefix, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        for (text, reason) in [
            ("/a/**/b", "'**' is only allowed as the last segment"),
            ("/**/**", "'**' is only allowed as the last segment"),
            ("/a*", "a wildcard must be a whole segment"),
            ("/a/***", "a wildcard must be a whole segment"),
            ("/a/*b", "a wildcard must be a whole segment"),
            ("/a/*/", "topic has an empty segment"),
            ("*", "topic must start with '/'"),
            ("/a/*/..", "topic segment cannot be '.' or '..'"),
            ("/a/*/b c", "topic segment contains an invalid character"),
        ] {
            assert_eq!(Selector::parse(text).map_err(|e| e.reason()), Err(reason), "{text}");
        }
    }

    #[test]
    fn selector_matching_table() {
        let table: &[(&str, &[&str], &[&str])] = &[
            ("/a/b", &["/a/b"], &["/a", "/a/b/c", "/a/bb", "/a/c"]),
            ("/a/*", &["/a/b", "/a/zz"], &["/a", "/a/b/c", "/b/c", "/ab/c"]),
            ("/a/**", &["/a/b", "/a/b/c", "/a/b/c/d"], &["/a", "/ab", "/ab/c", "/b/a"]),
            ("/*", &["/a", "/zz"], &["/a/b"]),
            ("/**", &["/a", "/a/b/c"], &[]),
            ("/*/b", &["/a/b", "/x/b"], &["/a/c", "/a/b/c", "/b"]),
            ("/a/*/c/**", &["/a/x/c/d", "/a/y/c/d/e"], &["/a/x/c", "/a/x/d/e", "/b/x/c/d"]),
            ("/a/*/*", &["/a/b/c"], &["/a/b", "/a/b/c/d"]),
        ];
        for (selector, yes, no) in table {
            let sel = Selector::parse(selector).expect(selector);
            assert_eq!(sel.as_str(), *selector);
            assert_eq!(sel.is_pattern(), selector.contains('*'));
            for topic in *yes {
                assert!(sel.matches(topic), "{selector} should match {topic}");
            }
            for topic in *no {
                assert!(!sel.matches(topic), "{selector} should not match {topic}");
            }
        }
    }

    #[test]
    fn the_private_namespace_is_closed_to_clients() {
        let why = "topics under /pushlet/to/ are private to their Pushlet session";
        for name in ["/pushlet/to/abc", "/pushlet/to/abc/def"] {
            assert_eq!(validate_topic(name).map_err(|e| e.reason()), Err(why), "{name}");
            assert_eq!(Selector::parse(name).map_err(|e| e.reason()), Err(why), "{name}");
            assert_eq!(validate_internal_topic(name), Ok(()), "{name}");
        }
        for pattern in ["/pushlet/to/*", "/pushlet/to/**"] {
            assert_eq!(Selector::parse(pattern).map_err(|e| e.reason()), Err(why), "{pattern}");
        }
        // Its parent and its neighbours are ordinary topics.
        for name in ["/pushlet/to", "/pushlet/tox/a", "/pushlet/t/a"] {
            assert_eq!(validate_topic(name), Ok(()), "{name}");
        }
        assert_eq!(private_topic("abc").as_deref(), Ok("/pushlet/to/abc"));
        for bad in ["", "a/b", "a*", "..", "a b"] {
            assert!(private_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_pattern_matches_a_private_topic() {
        let inbox = "/pushlet/to/abc";
        for pattern in ["/**", "/*/to/*", "/pushlet/**", "/pushlet/*/abc", "/*/*/*"] {
            let sel = Selector::parse(pattern).expect(pattern);
            assert!(!sel.matches(inbox), "{pattern} must not read {inbox}");
            assert!(sel.names(inbox), "{pattern} names {inbox} for a publish policy");
        }
        assert!(Selector::parse("/pushlet/**").expect("pattern").matches("/pushlet/tox/a"));
        // The session's own exact selector, which only the server makes, does match.
        assert!(Selector::Exact(private_topic("abc").expect("topic")).matches(inbox));
    }

    #[test]
    fn equal_selectors_hash_alike() {
        use std::collections::HashSet;
        let set: HashSet<Selector> =
            ["/a/*", "/a/*", "/a", "/a"].iter().map(|s| Selector::parse(s).expect(s)).collect();
        assert_eq!(set.len(), 2);
    }
}
