//! The Pushlet protocol core (`/pushlet.srv`), wire-compatible with the original Pushlet 2.0.x
//! JavaScript clients; the protocol is `shared/specs/pushlet.md` and `docs/PROTOCOLS.md`.
//!
//! This module owns the request side: turning a query string and an optional `<event .../>`
//! POST body into a validated [`Request`], and the [`Event`] model (ordered name/value fields)
//! that both requests and replies are made of. `session` holds one session's state and the
//! protocol rules (what each `p_event` does), `round` the order of what a reply, a listen and a
//! refresh round send, `wire` frames events in the three wire formats.
//! None of it does I/O or reads a clock: the worker passes bytes and `now` in and writes what
//! comes out, so every rule is unit-tested here.

mod round;
mod session;
mod wire;
mod xml;

use std::fmt;

pub use self::round::{
    answer_refresh, listen, refresh_wait, reply, Backlog, Done, Listen, Listener, Refresh, BUSY, LOST, NO_CACHE,
};
pub use self::session::{
    abort, error, hb, join_ack, nack, refresh_ack, refresh_event, subject_list_selectors, Session, Snapshot, Step,
    MAX_LABEL_LEN, MAX_SUBJECTS, POLL_WAIT_MS, PUBLISH_CONTENT_TYPE, PULL_WAIT_MS, UNICAST_PREFIX,
};
pub use self::wire::{content_type, Writer};

/// The request paths Pushlet is served on: Halley's and the original's default mount.
pub const PATHS: [&str; 2] = ["/pushlet.srv", "/pushlet/pushlet.srv"];
/// Most fields in one request, query parameters and body attributes together.
pub const MAX_FIELDS: usize = 64;
/// Longest field name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest field value, in bytes (after decoding).
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Longest piece of client text quoted back in an error reason, in bytes.
const MAX_QUOTE_LEN: usize = 64;

/// One Pushlet event: ordered `(name, value)` fields, `p_event` always first. Requests and
/// replies alike are events; names are unique (setting a name again replaces its value in place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    fields: Vec<(Box<str>, Box<str>)>,
}

impl Event {
    /// An event with only `p_event`.
    pub fn new(p_event: &str) -> Event {
        Event { fields: vec![("p_event".into(), p_event.into())] }
    }

    /// Sets field `k` to `v`: replaces an existing value where it stands, or appends.
    pub fn set(&mut self, k: &str, v: &str) {
        match self.fields.iter_mut().find(|(name, _)| **name == *k) {
            Some((_, value)) => *value = v.into(),
            None => self.fields.push((k.into(), v.into())),
        }
    }

    /// The value of field `k`.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields.iter().find(|(name, _)| **name == *k).map(|(_, value)| &**value)
    }

    /// The event type, `p_event`.
    pub fn kind(&self) -> &str {
        self.fields.first().map_or("", |(_, value)| value)
    }

    /// Every field in order, `p_event` first.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (&**k, &**v))
    }
}

/// The wire format of a session's replies (`p_format`), see `wire.rs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `js`, the forever-frame HTML page; the default at join.
    #[default]
    Js,
    /// `xml`: events concatenated, served as text/plain.
    Xml,
    /// `xml-strict`: one `<pushlet>` document per reply, served as text/xml.
    XmlStrict,
}

impl Format {
    /// Parses a `p_format` value.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "js" => Some(Format::Js),
            "xml" => Some(Format::Xml),
            "xml-strict" => Some(Format::XmlStrict),
            _ => None,
        }
    }

    /// The `p_format` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Js => "js",
            Format::Xml => "xml",
            Format::XmlStrict => "xml-strict",
        }
    }
}

/// How a listening session gets its events (`p_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// One never-ending response; the default.
    #[default]
    Stream,
    /// Long-poll: each `refresh` waits for events (up to the read timeout).
    Pull,
    /// Each `refresh` answers at once with whatever is queued.
    Poll,
}

impl Mode {
    /// Parses a `p_mode` value.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "stream" => Some(Mode::Stream),
            "pull" => Some(Mode::Pull),
            "poll" => Some(Mode::Poll),
            _ => None,
        }
    }

    /// The `p_mode` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Pull => "pull",
            Mode::Poll => "poll",
        }
    }
}

/// What a request asks for (`p_event`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Join,
    JoinListen,
    Listen,
    Refresh,
    Subscribe,
    Unsubscribe,
    Publish,
    Hb,
    Leave,
    /// Any other `p_event`, as sent: answered with a `nack`, the session kept.
    Unknown(Box<str>),
}

impl Command {
    /// The command a `p_event` value names.
    pub fn parse(p_event: &str) -> Command {
        match p_event {
            "join" => Command::Join,
            "join-listen" => Command::JoinListen,
            "listen" => Command::Listen,
            "refresh" => Command::Refresh,
            "subscribe" => Command::Subscribe,
            "unsubscribe" => Command::Unsubscribe,
            "publish" => Command::Publish,
            "hb" => Command::Hb,
            "leave" => Command::Leave,
            other => Command::Unknown(other.into()),
        }
    }

    /// `join` or `join-listen`: creates a session, so needs no `p_id`.
    pub fn is_join(&self) -> bool {
        matches!(self, Command::Join | Command::JoinListen)
    }
}

/// A parsed, validated Pushlet request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    /// `p_id`; always present unless the command is a join.
    pub id: Option<Box<str>>,
    pub format: Option<Format>,
    pub mode: Option<Mode>,
    /// Every field as sent (query parameters, then body attributes; a later value for the same
    /// name replaces an earlier one).
    pub event: Event,
}

/// A request the protocol refuses, answered with `status` and the one-line `reason` as body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushletError {
    pub status: u16,
    pub reason: String,
}

impl From<PushletError> for crate::http::Reject {
    fn from(e: PushletError) -> crate::http::Reject {
        crate::http::Reject::new(e.status, e.reason)
    }
}

impl PushletError {
    fn bad_request(reason: impl Into<String>) -> PushletError {
        PushletError { status: 400, reason: reason.into() }
    }
}

impl fmt::Display for PushletError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for PushletError {}

/// Parses a request. GET: every query parameter is a field (form-decoded,
/// `application/x-www-form-urlencoded` rules). POST: the body is one `<event k="v" .../>` element
/// whose attributes are fields too (after the query's); an empty or all-whitespace body is no
/// body. Bounded by [`MAX_FIELDS`] and [`MAX_VALUE_LEN`].
///
/// A field whose name is not a [`valid_name`] (which includes longer than [`MAX_NAME_LEN`]) is
/// dropped, not refused: the 2.0.4 clients append page text to the query unencoded, so "tom &
/// jerry" typed into the chat example arrives as `msg=tom ` and a field named ` jerry`. The
/// original server took the request (and delivered `msg="tom "`); a 400 here would kill the
/// client (any non-200 is fatal to it). Dropped names are never kept, so they cannot reach the
/// XML or JS formats.
///
/// Errors are 400s: "no p_event", "no p_id" (anything but a join), a bad `p_format` or `p_mode`
/// value, a malformed XML body, a bound exceeded.
pub fn parse_request(query: Option<&str>, body: &[u8]) -> Result<Request, PushletError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    if let Some(query) = query {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            add_field(&mut fields, name.into_owned(), value.into_owned())?;
        }
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        let text = std::str::from_utf8(body).map_err(|_| PushletError::bad_request("malformed XML body: not UTF-8"))?;
        xml::parse_event(
            text,
            |name, value| add_field(&mut fields, name, value),
            |why| PushletError::bad_request(format!("malformed XML body: {why}")),
        )?;
    }

    // The last p_event wins, like every other repeated field.
    let p_event = fields.iter().rev().find(|(name, _)| name == "p_event").map(|(_, value)| value.as_str());
    let p_event = match p_event {
        Some(p_event) if !p_event.is_empty() => p_event,
        _ => return Err(PushletError::bad_request("no p_event")),
    };
    let mut event = Event::new(p_event);
    for (name, value) in fields.iter().filter(|(name, _)| name != "p_event") {
        event.set(name, value);
    }

    let command = Command::parse(p_event);
    let id = event.get("p_id").filter(|id| !id.is_empty()).map(Box::from);
    if id.is_none() && !command.is_join() {
        return Err(PushletError::bad_request("no p_id"));
    }
    let format = match event.get("p_format") {
        None => None,
        Some(s) => Some(Format::parse(s).ok_or_else(|| {
            PushletError::bad_request(format!("invalid p_format {}: use js, xml or xml-strict", quote(s)))
        })?),
    };
    let mode = match event.get("p_mode") {
        None => None,
        Some(s) => Some(Mode::parse(s).ok_or_else(|| {
            PushletError::bad_request(format!("invalid p_mode {}: use stream, pull or poll", quote(s)))
        })?),
    };
    Ok(Request { command, id, format, mode, event })
}

/// The 400 for a `p_id` that names no live session (the original's wording).
pub fn invalid_id(id: &str) -> PushletError {
    PushletError::bad_request(format!("Invalid or expired id: {}", quote(id)))
}

/// Whether `name` can be a field name: 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z_][A-Za-z0-9_.-]*`,
/// valid as an XML attribute name and as a JavaScript string without escapes, except `xmlns`:
/// written as an attribute it would declare a namespace, not carry a field, and some values
/// make the document unreadable to a namespace-aware parser (Namespaces in XML 1.0 §3).
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    name.len() <= MAX_NAME_LEN
        && (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name != "xmlns"
}

/// Whether a publish's data claims a sender: a JSON object with a top-level `p_from` member,
/// however its name is escaped. Only the server sets `p_from` (a Pushlet session's public id,
/// `Step::Publish`), so every other publish path refuses such data: a Pushlet subscriber
/// shows `p_from` from the payload, and a native one reads the same JSON.
///
/// Cheap for the common case: data that holds neither `p_from` nor a `\u` escape (the only way
/// to spell a name's letters differently) is not parsed.
pub fn forges_sender(data: &[u8]) -> bool {
    let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
    if !has(b"p_from") && !has(b"\\u") {
        return false;
    }
    // Keys only; values are skipped without being built. Not an object: no member at all.
    serde_json::from_slice::<std::collections::HashMap<Box<str>, serde::de::IgnoredAny>>(data)
        .is_ok_and(|members| members.contains_key("p_from"))
}

/// Client text made safe to quote in a one-line reason: control characters become '?', and it
/// is cut to [`MAX_QUOTE_LEN`] bytes (on a char boundary) with "..." after.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_QUOTE_LEN) + 3);
    for c in s.chars() {
        if out.len() + c.len_utf8() > MAX_QUOTE_LEN {
            out.push_str("...");
            break;
        }
        out.push(if c.is_control() || c == '\u{2028}' || c == '\u{2029}' { '?' } else { c });
    }
    out
}

/// Adds one field after checking the bounds; a name that cannot be a field is dropped (see
/// [`parse_request`]).
fn add_field(fields: &mut Vec<(String, String)>, name: String, value: String) -> Result<(), PushletError> {
    if !valid_name(&name) {
        return Ok(());
    }
    if fields.len() >= MAX_FIELDS {
        return Err(PushletError::bad_request(format!("too many fields (at most {MAX_FIELDS})")));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(PushletError::bad_request(format!("field {name} too long (at most {MAX_VALUE_LEN} bytes)")));
    }
    fields.push((name, value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(query: &str) -> Result<Request, PushletError> {
        parse_request(Some(query), b"")
    }

    fn reason(r: Result<Request, PushletError>) -> String {
        match r {
            Err(e) => {
                assert_eq!(e.status, 400);
                assert_eq!(e.to_string(), e.reason);
                e.reason
            }
            Ok(req) => panic!("expected an error, got {req:?}"),
        }
    }

    fn fields(ev: &Event) -> Vec<(&str, &str)> {
        ev.fields().collect()
    }

    #[test]
    fn event_fields_keep_order_and_replace_in_place() {
        let mut ev = Event::new("data");
        ev.set("a", "1");
        ev.set("b", "2");
        ev.set("a", "3");
        assert_eq!(fields(&ev), [("p_event", "data"), ("a", "3"), ("b", "2")]);
        assert_eq!(ev.get("a"), Some("3"));
        assert_eq!(ev.get("c"), None);
        assert_eq!(ev.kind(), "data");
        ev.set("p_event", "hb");
        assert_eq!(ev.kind(), "hb");
        assert_eq!(fields(&ev)[0], ("p_event", "hb"));
    }

    #[test]
    fn get_request_fields_are_form_decoded() {
        let req = get("p_event=subscribe&p_id=abc&p_subject=%2Fstocks%2Caex+x&p_label=a%26b&extra=").expect("valid");
        assert_eq!(req.command, Command::Subscribe);
        assert_eq!(req.id.as_deref(), Some("abc"));
        assert_eq!(req.format, None);
        assert_eq!(req.mode, None);
        assert_eq!(
            fields(&req.event),
            [
                ("p_event", "subscribe"),
                ("p_id", "abc"),
                ("p_subject", "/stocks,aex x"),
                ("p_label", "a&b"),
                ("extra", "")
            ]
        );
    }

    #[test]
    fn commands_formats_and_modes() {
        for (name, command) in [
            ("join", Command::Join),
            ("join-listen", Command::JoinListen),
            ("listen", Command::Listen),
            ("refresh", Command::Refresh),
            ("subscribe", Command::Subscribe),
            ("unsubscribe", Command::Unsubscribe),
            ("publish", Command::Publish),
            ("hb", Command::Hb),
            ("leave", Command::Leave),
            ("data", Command::Unknown("data".into())),
            ("JOIN", Command::Unknown("JOIN".into())),
        ] {
            let req = get(&format!("p_event={name}&p_id=s1")).expect(name);
            assert_eq!(req.command, command);
        }
        for f in [Format::Js, Format::Xml, Format::XmlStrict] {
            let req = get(&format!("p_event=join&p_format={}", f.as_str())).expect("valid");
            assert_eq!(req.format, Some(f));
        }
        for m in [Mode::Stream, Mode::Pull, Mode::Poll] {
            let req = get(&format!("p_event=listen&p_id=x&p_mode={}", m.as_str())).expect("valid");
            assert_eq!(req.mode, Some(m));
        }
        assert_eq!(Format::default(), Format::Js);
        assert_eq!(Mode::default(), Mode::Stream);
    }

    #[test]
    fn joins_need_no_id_everything_else_does() {
        assert_eq!(get("p_event=join").map(|r| r.id), Ok(None));
        assert_eq!(get("p_event=join-listen&p_format=xml-strict&p_mode=pull").map(|r| r.id), Ok(None));
        // A join with a p_id is still a join (the worker makes a new session anyway).
        assert_eq!(get("p_event=join&p_id=old").map(|r| r.command), Ok(Command::Join));
        for q in ["p_event=listen", "p_event=hb&p_id=", "p_event=nonsense", "p_event=refresh"] {
            assert_eq!(reason(get(q)), "no p_id", "{q}");
        }
    }

    #[test]
    fn every_400() {
        let long_value = "v".repeat(MAX_VALUE_LEN + 1);
        let too_many: String = (0..MAX_FIELDS).map(|i| format!("f{i}=1&")).collect::<String>() + "p_event=hb";
        let cases: Vec<(String, &[u8], String)> = vec![
            ("".into(), b"", "no p_event".into()),
            ("p_id=x".into(), b"", "no p_event".into()),
            ("p_event=&p_id=x".into(), b"", "no p_event".into()),
            ("p_event=hb".into(), b"", "no p_id".into()),
            ("p_event=join&p_format=html".into(), b"", "invalid p_format html: use js, xml or xml-strict".into()),
            ("p_event=join&p_format=".into(), b"", "invalid p_format : use js, xml or xml-strict".into()),
            (
                "p_event=listen&p_id=x&p_mode=push%0Aevil".into(),
                b"",
                "invalid p_mode push?evil: use stream, pull or poll".into(),
            ),
            (format!("p_event=hb&p_id=x&v={long_value}"), b"", "field v too long (at most 65536 bytes)".into()),
            (too_many, b"", "too many fields (at most 64)".into()),
            (
                "".into(),
                b"<event p_event=\"hb\" p_id=\"x\">",
                "malformed XML body: the event element must be empty".into(),
            ),
            ("".into(), b"p_event=hb&p_id=x", "malformed XML body: expected an <event> element".into()),
            ("".into(), b"<event p_event=\"\xff\"/>", "malformed XML body: not UTF-8".into()),
            ("".into(), b"<event p_event=\"hb\" p_event=\"hb\"/>", "malformed XML body: duplicate attribute".into()),
        ];
        for (query, body, want) in cases {
            assert_eq!(reason(parse_request(Some(&query), body)), want, "{query:?} {body:?}");
        }
    }

    #[test]
    fn odd_field_names_are_dropped_not_refused() {
        // The chat example's "tom & jerry", typed into a page that appends it unencoded.
        let req = get("p_event=publish&p_id=s1&p_subject=/chat&msg=tom%20&%20jerry").expect("accepted");
        assert_eq!(
            fields(&req.event),
            [("p_event", "publish"), ("p_id", "s1"), ("p_subject", "/chat"), ("msg", "tom ")]
        );
        let long_name = "a".repeat(MAX_NAME_LEN + 1);
        for odd in ["a%20b=1", "=1", "1a=1", "caf%C3%A9=1", "a%22b=1", "%3C%2Fscript%3E=1", &format!("{long_name}=1")] {
            let req = get(&format!("p_event=hb&p_id=x&{odd}&k=v")).expect(odd);
            assert_eq!(fields(&req.event), [("p_event", "hb"), ("p_id", "x"), ("k", "v")], "{odd}");
        }
        let req = parse_request(None, b"<event p_event=\"hb\" a:b=\"1\" p_id=\"x\"/>").expect("accepted");
        assert_eq!(fields(&req.event), [("p_event", "hb"), ("p_id", "x")]);
        // Dropped fields do not count against the field bound.
        let odd: String = (0..MAX_FIELDS * 2).map(|i| format!("%20{i}=1&")).collect();
        assert!(get(&format!("{odd}p_event=hb&p_id=x")).is_ok());
    }

    #[test]
    fn forged_senders_are_found_however_spelled() {
        for yes in [
            &br#"{"p_from":"x"}"#[..],
            br#"{"a":1, "p_from":null}"#,
            br#"{"p\u005ffrom":"x"}"#,
            br#"{"\u0070_from":1}"#,
        ] {
            assert!(forges_sender(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &br#"{"msg":"p_from"}"#[..],
            br#"{"a":{"p_from":"nested"}}"#,
            br#"["p_from"]"#,
            br#""p_from""#,
            br#"{"msg":"\u0041"}"#,
            b"not json p_from",
            br#"{"msg":"hi"}"#,
        ] {
            assert!(!forges_sender(no), "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        let name = "n".repeat(MAX_NAME_LEN);
        let value = "v".repeat(MAX_VALUE_LEN);
        let req = get(&format!("p_event=hb&p_id=x&{name}={value}")).expect("at the bounds");
        assert_eq!(req.event.get(&name).map(str::len), Some(MAX_VALUE_LEN));
        let exactly: String = (0..MAX_FIELDS - 2).map(|i| format!("f{i}=1&")).collect::<String>() + "p_event=hb&p_id=x";
        assert!(get(&exactly).is_ok());
    }

    #[test]
    fn post_body_is_one_event_element() {
        let body = br#"<?xml version="1.0"?>
            <event p_event="publish" p_id="s1" p_subject="/chat" msg="a &amp; b &lt;3 &#x1F600; &#65;"/>"#;
        let req = parse_request(None, body).expect("valid");
        assert_eq!(req.command, Command::Publish);
        assert_eq!(req.id.as_deref(), Some("s1"));
        assert_eq!(req.event.get("msg"), Some("a & b <3 \u{1F600} A"));
        assert_eq!(req.event.kind(), "publish");
    }

    #[test]
    fn post_body_and_query_combine_body_wins() {
        let req =
            parse_request(Some("p_id=q&a=1&p_event=hb"), br#"<event p_event="publish" a="2" b="3"/>"#).expect("valid");
        assert_eq!(req.command, Command::Publish);
        assert_eq!(fields(&req.event), [("p_event", "publish"), ("p_id", "q"), ("a", "2"), ("b", "3")]);
        // Whitespace-only bodies are no body.
        assert_eq!(parse_request(Some("p_event=join"), b" \r\n").map(|r| r.command), Ok(Command::Join));
    }

    #[test]
    fn truncated_input_never_panics() {
        let query = "p_event=publish&p_id=s%201&p_subject=%2Fa&m=%E2%82%AC%ZZ+x";
        let body = "<?xml version=\"1.0\"?><event p_event=\"publish\" m=\"&#x20AC;&amp;\" p_id='x'/>";
        for cut in 0..=query.len() {
            let _ = parse_request(Some(&query[..cut]), b"");
        }
        for cut in 0..=body.len() {
            let r = parse_request(None, &body.as_bytes()[..cut]);
            assert_eq!(r.is_ok(), cut == body.len(), "{:?}", &body[..cut]);
        }
    }

    #[test]
    fn invalid_id_quotes_safely() {
        assert_eq!(invalid_id("abc").reason, "Invalid or expired id: abc");
        let e = invalid_id(&format!("a\r\nb{}", "\u{e9}".repeat(40)));
        assert_eq!(e.status, 400);
        assert!(!e.reason.contains(['\r', '\n']));
        assert!(e.reason.ends_with("..."));
        assert!(e.reason.len() <= "Invalid or expired id: ".len() + MAX_QUOTE_LEN + 3);
    }

    #[test]
    fn field_names() {
        for ok in ["p_event", "_", "a.b-c_9", "X"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "9a", "-a", ".a", "a b", "a:b", "a\"", "caf\u{e9}", "xmlns", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
