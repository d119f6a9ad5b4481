//! The JSON command protocol spoken over WebSocket and raw TCP: parsing a client's command and
//! building the server's acknowledgements and errors. No I/O; the transports frame the bytes.
//!
//! A client sends one JSON object per command (one WebSocket text message, or one line or
//! NUL-terminated record on raw TCP):
//!
//! ```text
//! {"op":"subscribe","topics":["/a","/b/*"],"since":"<id>"|"all"|"now","id":<any>}
//! {"op":"unsubscribe","topics":["/a"],"id":<any>}          no "topics": every subscription
//! {"op":"publish","topic":"/a","data":<any JSON>,"event":"name","id":<any>}
//! {"op":"ping","id":<any>}
//! {"op":"auth","token":"<JWT>","id":<any>}                 the token for what follows
//! ```
//!
//! `id` is optional on every command; so are `since` on subscribe (default `now`) and `event` on
//! publish. Topics and patterns need their leading '/' (no `/sub/` URL to lend one). A publish
//! whose `data` is a JSON string publishes that string's text as `text/plain; charset=utf-8`;
//! any other value (object, array, number, boolean, null) publishes its JSON text, byte for
//! byte, as `application/json`.
//! A field that does not belong to the command's `op` is an error, so a typo such as `"topic"`
//! in a subscribe is reported rather than ignored. A command nesting JSON deeper than
//! `crate::model::MAX_JSON_DEPTH` levels is refused before it is parsed.
//!
//! The server sends one JSON object per reply, of three kinds:
//! - `{"type":"ack","op":"<op>","id":<id>,...}` when a command was carried out ([`ack`]);
//! - `{"type":"error","id":<id>,"reason":"..."}` when it was refused ([`error`]);
//! - messages, exactly as `crate::model::Message::json` encodes them for every other transport
//!   (`{"id":"<epoch>-<seq>","topic":...,"time":...,"data":...}`). They carry no `"type"`: a
//!   client tells replies from messages by the presence of `"type"` (a message's `"id"` is its
//!   message id, the cursor to resume from, not a request id). Keeping messages byte-identical
//!   lets one encoding serve every subscriber of every transport.
//!
//! `id` is echoed back verbatim (the client's JSON text, at most [`MAX_REQUEST_ID_LEN`] bytes)
//! and omitted when the command had none; an error echoes it whenever the input was a JSON object
//! with a usable `id`, even if the rest of the command was invalid.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::model::{check_depth, validate_topic, Selector, Since};
use crate::protocol::native::{self, Publish, MAX_SELECTORS};

/// Largest command accepted, in bytes. The transport bounds what it buffers to this (its
/// read buffer or frame limit); [`parse_command`] refuses anything longer.
pub const MAX_COMMAND_LEN: usize = 1024 * 1024;
/// Most topics or patterns in one subscribe or unsubscribe (the native API's bound).
pub const MAX_TOPICS: usize = MAX_SELECTORS;
/// Longest `id` echoed back, in bytes of its JSON text.
pub const MAX_REQUEST_ID_LEN: usize = 256;
/// Longest error reason, in bytes: reasons quote the client's input, which is cut to fit.
pub const MAX_REASON_LEN: usize = 256;
/// The content type of a publish whose `data` is a JSON string.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// The content type of a publish whose `data` is any other JSON value.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The operations a command can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Subscribe,
    Unsubscribe,
    Publish,
    Ping,
    Auth,
}

impl Op {
    /// The name used on the wire (`"op"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Subscribe => "subscribe",
            Op::Unsubscribe => "unsubscribe",
            Op::Publish => "publish",
            Op::Ping => "ping",
            Op::Auth => "auth",
        }
    }
}

/// A validated command.
#[derive(Debug)]
pub enum Command {
    /// Add these selectors, reading history after `since` first.
    Subscribe { selectors: Vec<Selector>, since: Since, id: Option<Box<RawValue>> },
    /// Drop these selectors; `None` drops every subscription of the connection.
    Unsubscribe { selectors: Option<Vec<Selector>>, id: Option<Box<RawValue>> },
    /// Publish a message; `publish.content_type` is [`TEXT_CONTENT_TYPE`] or [`JSON_CONTENT_TYPE`].
    Publish { publish: Publish, id: Option<Box<RawValue>> },
    /// Answer with an ack; a client's liveness check.
    Ping { id: Option<Box<RawValue>> },
    /// Authenticate what follows on this connection with a token (`crate::auth`).
    Auth { token: String, id: Option<Box<RawValue>> },
}

impl Command {
    /// Which operation this is.
    pub fn op(&self) -> Op {
        match self {
            Command::Subscribe { .. } => Op::Subscribe,
            Command::Unsubscribe { .. } => Op::Unsubscribe,
            Command::Publish { .. } => Op::Publish,
            Command::Ping { .. } => Op::Ping,
            Command::Auth { .. } => Op::Auth,
        }
    }

    /// The client's `id`, to echo in the reply.
    pub fn id(&self) -> Option<&RawValue> {
        match self {
            Command::Subscribe { id, .. }
            | Command::Unsubscribe { id, .. }
            | Command::Publish { id, .. }
            | Command::Auth { id, .. }
            | Command::Ping { id } => id.as_deref(),
        }
    }
}

/// A refused command: a one-line reason and the client's `id` when it could be read.
#[derive(Debug, Clone)]
pub struct CommandError {
    id: Option<Box<RawValue>>,
    reason: Cow<'static, str>,
}

impl CommandError {
    /// An error with `reason` cut to [`MAX_REASON_LEN`] bytes at a character boundary.
    fn new(id: Option<Box<RawValue>>, reason: impl Into<Cow<'static, str>>) -> CommandError {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut short = String::with_capacity(MAX_REASON_LEN);
            short.push_str(crate::prefix_within(&reason, MAX_REASON_LEN - '\u{2026}'.len_utf8()));
            short.push('\u{2026}');
            reason = short.into();
        }
        CommandError { id, reason }
    }

    /// The client's `id`, if the input had a usable one.
    pub fn id(&self) -> Option<&RawValue> {
        self.id.as_deref()
    }

    /// The one-line reason, for the client and the log.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The error reply for the client: [`error`] with this id and reason.
    pub fn reply(&self) -> String {
        error(self.id(), &self.reason)
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for CommandError {}

/// Parses and validates one command (see the module doc for the grammar).
pub fn parse_command(text: &[u8]) -> Result<Command, CommandError> {
    if text.len() > MAX_COMMAND_LEN {
        return Err(CommandError::new(None, format!("command over {MAX_COMMAND_LEN} bytes")));
    }
    // serde would also read a struct from an array (`["ping"]`); only objects are commands.
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(CommandError::new(None, "a command must be a JSON object"));
    }
    // Before serde: `data` is kept as raw JSON, which serde reads with no depth limit, and is
    // published as sent. The id is echoed only when it is itself within the bound.
    if let Err(e) = check_depth(text) {
        let id = salvage_id(text).filter(|id| check_depth(id.get().as_bytes()).is_ok());
        return Err(CommandError::new(id, e.to_string()));
    }
    let wire: Wire<'_> = match serde_json::from_slice(text) {
        Ok(wire) => wire,
        Err(e) => return Err(CommandError::new(salvage_id(text), format!("invalid command: {e}"))),
    };
    let id = match wire.id {
        Some(raw) if raw.get().len() > MAX_REQUEST_ID_LEN => {
            return Err(CommandError::new(None, format!("id over {MAX_REQUEST_ID_LEN} bytes")));
        }
        Some(raw) => Some(raw.to_owned()),
        None => None,
    };
    match wire.validate() {
        Ok(command) => Ok(command.with_id(id)),
        Err(reason) => Err(CommandError::new(id, reason)),
    }
}

/// `{"type":"ack","op":"<op>","id":<id>,<extra>...}`. `id` is omitted when `None`; `extra`
/// entries named `type`, `op` or `id` are skipped so the reply never repeats a key.
pub fn ack(op: Op, id: Option<&RawValue>, extra: &[(&str, Value)]) -> String {
    let mut out = String::with_capacity(48);
    out.push_str("{\"type\":\"ack\",\"op\":\"");
    out.push_str(op.as_str());
    out.push('"');
    push_id(&mut out, id);
    for (key, value) in extra {
        if ["type", "op", "id"].contains(key) {
            continue;
        }
        out.push(',');
        push_json_str(&mut out, key);
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

/// `{"type":"error","id":<id>,"status":<status>,"reason":"<reason>"}`: a refusal by the token
/// policy, with its HTTP-like status (401: no, bad or expired token; 403: not covered).
pub fn denied(id: Option<&RawValue>, status: u16, reason: &str) -> String {
    error_reply(id, Some(status), reason)
}

/// `{"type":"error","id":<id>,"reason":"<reason>"}`; `id` is omitted when `None`.
pub fn error(id: Option<&RawValue>, reason: &str) -> String {
    error_reply(id, None, reason)
}

/// An error reply, with `status` when there is one.
fn error_reply(id: Option<&RawValue>, status: Option<u16>, reason: &str) -> String {
    let mut out = String::with_capacity(64 + reason.len());
    out.push_str("{\"type\":\"error\"");
    push_id(&mut out, id);
    if let Some(status) = status {
        out.push_str(",\"status\":");
        out.push_str(&status.to_string());
    }
    out.push_str(",\"reason\":");
    push_json_str(&mut out, reason);
    out.push('}');
    out
}

/// A command as it is on the wire, every field optional; [`Wire::validate`] checks which
/// belong to its `op`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct Wire<'a> {
    op: String,
    #[serde(default)]
    topics: Option<TopicList>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    event: Option<String>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default)]
    token: Option<String>,
}

impl Wire<'_> {
    /// Checks the fields against the op. The returned command has no id yet.
    fn validate(self) -> Result<Command, Cow<'static, str>> {
        let op = match self.op.as_str() {
            "subscribe" => Op::Subscribe,
            "unsubscribe" => Op::Unsubscribe,
            "publish" => Op::Publish,
            "ping" => Op::Ping,
            "auth" => Op::Auth,
            other => {
                // Echo at most 64 characters of whatever the client sent.
                let other = other.char_indices().nth(64).and_then(|(cut, _)| other.get(..cut)).unwrap_or(other);
                return Err(
                    format!("unknown op {other:?}: expected subscribe, unsubscribe, publish, ping or auth").into()
                );
            }
        };
        let present = [
            ("topics", self.topics.is_some(), matches!(op, Op::Subscribe | Op::Unsubscribe)),
            ("since", self.since.is_some(), op == Op::Subscribe),
            ("topic", self.topic.is_some(), op == Op::Publish),
            ("data", self.data.is_some(), op == Op::Publish),
            ("event", self.event.is_some(), op == Op::Publish),
            ("token", self.token.is_some(), op == Op::Auth),
        ];
        if let Some((field, _, _)) = present.iter().find(|(_, is_there, allowed)| *is_there && !allowed) {
            return Err(format!("{field:?} does not apply to {}", op.as_str()).into());
        }
        match op {
            Op::Subscribe => {
                let topics = self.topics.ok_or("subscribe needs \"topics\": a list of topics or patterns")?;
                let since = match self.since {
                    Some(raw) => Since::parse(&raw).map_err(|e| format!("invalid since: {e}"))?,
                    None => Since::Now,
                };
                Ok(Command::Subscribe { selectors: selectors(topics)?, since, id: None })
            }
            Op::Unsubscribe => {
                let selectors = self.topics.map(selectors).transpose()?;
                Ok(Command::Unsubscribe { selectors, id: None })
            }
            Op::Publish => {
                let topic = self.topic.ok_or("publish needs \"topic\"")?;
                validate_topic(&topic).map_err(|e| format!("invalid topic {topic:?}: {e}"))?;
                let data = self.data.ok_or("publish needs \"data\"")?;
                let (data, content_type) = if data.get().starts_with('"') {
                    let text: String = serde_json::from_str(data.get()).map_err(|e| format!("invalid data: {e}"))?;
                    (Bytes::from(text), TEXT_CONTENT_TYPE)
                } else {
                    (Bytes::copy_from_slice(data.get().as_bytes()), JSON_CONTENT_TYPE)
                };
                let event = match self.event {
                    Some(event) => Some(native::validate_event(&event).map_err(|bad| bad.0)?.into()),
                    None => None,
                };
                let publish = Publish { topic, event, content_type: Some(content_type.into()), data, piggyback: None };
                Ok(Command::Publish { publish, id: None })
            }
            Op::Ping => Ok(Command::Ping { id: None }),
            Op::Auth => {
                let token = self.token.filter(|t| !t.is_empty()).ok_or("auth needs \"token\"")?;
                Ok(Command::Auth { token, id: None })
            }
        }
    }
}

impl Command {
    fn with_id(mut self, new_id: Option<Box<RawValue>>) -> Command {
        match &mut self {
            Command::Subscribe { id, .. }
            | Command::Unsubscribe { id, .. }
            | Command::Publish { id, .. }
            | Command::Auth { id, .. }
            | Command::Ping { id } => *id = new_id,
        }
        self
    }
}

/// The `topics` array, refused while it is read once it holds more than [`MAX_TOPICS`]
/// entries, so a hostile list never costs more than that.
struct TopicList(Vec<String>);

impl<'de> Deserialize<'de> for TopicList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TopicList, D::Error> {
        deserializer.deserialize_seq(TopicListVisitor)
    }
}

struct TopicListVisitor;

impl<'de> Visitor<'de> for TopicListVisitor {
    type Value = TopicList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {MAX_TOPICS} topic strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TopicList, A::Error> {
        super::bounded_seq(seq, MAX_TOPICS, || format!("at most {MAX_TOPICS} topics per command")).map(TopicList)
    }
}

/// Parses each topic or pattern (leading '/' required), dropping duplicates.
fn selectors(list: TopicList) -> Result<Vec<Selector>, Cow<'static, str>> {
    if list.0.is_empty() {
        return Err("\"topics\" must not be empty".into());
    }
    let mut selectors: Vec<Selector> = Vec::with_capacity(list.0.len());
    for name in &list.0 {
        let selector = Selector::parse(name).map_err(|e| format!("invalid topic {name:?}: {e}"))?;
        if !selectors.contains(&selector) {
            selectors.push(selector);
        }
    }
    Ok(selectors)
}

/// `deserialize_with` for optional raw fields: a present field is `Some` even when it is
/// `null` (plain `Option` would turn `null` into `None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// The `id` of an input that failed to parse as a command, if it is at least a JSON object
/// with a short enough `id`, so the error can still be matched to its request.
fn salvage_id(text: &[u8]) -> Option<Box<RawValue>> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        id: Option<&'a RawValue>,
    }
    let only: IdOnly<'_> = serde_json::from_slice(text).ok()?;
    only.id.filter(|raw| raw.get().len() <= MAX_REQUEST_ID_LEN).map(RawValue::to_owned)
}

fn push_id(out: &mut String, id: Option<&RawValue>) {
    if let Some(id) = id {
        out.push_str(",\"id\":");
        out.push_str(id.get());
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 §7).
fn push_json_str(out: &mut String, s: &str) {
    // Serializing a &str cannot fail; an empty string literal is the harmless fallback.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\"")));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Command {
        match parse_command(text.as_bytes()) {
            Ok(command) => command,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn err(text: &str) -> CommandError {
        match parse_command(text.as_bytes()) {
            Ok(command) => panic!("{text}: accepted as {command:?}"),
            Err(e) => e,
        }
    }

    fn names(selectors: &[Selector]) -> Vec<&str> {
        selectors.iter().map(Selector::as_str).collect()
    }

    #[test]
    fn subscribe() {
        let cmd = ok(r#"{"op":"subscribe","topics":["/a","/b/*","/a","/c/**"],"since":"all","id":7}"#);
        assert_eq!(cmd.op(), Op::Subscribe);
        assert_eq!(cmd.id().map(RawValue::get), Some("7"));
        let Command::Subscribe { selectors, since, .. } = &cmd else { panic!("{cmd:?}") };
        assert_eq!(names(selectors), ["/a", "/b/*", "/c/**"]);
        assert!(selectors[1].is_pattern());
        assert_eq!(*since, Since::All);

        let cmd = ok(r#" {"topics":["/a"],"op":"subscribe"} "#);
        assert!(matches!(cmd, Command::Subscribe { since: Since::Now, id: None, .. }));
        assert!(matches!(ok(r#"{"op":"subscribe","topics":["/a"],"since":"now"}"#), Command::Subscribe { .. }));
    }

    #[test]
    fn subscribe_since_a_message_id() {
        let cmd = ok(r#"{"op":"subscribe","topics":["/a"],"since":"1-5"}"#);
        let Command::Subscribe { since: Since::After(after), .. } = cmd else { panic!("{cmd:?}") };
        assert_eq!(Since::After(after), Since::parse("1-5").expect("valid id"));
    }

    #[test]
    fn unsubscribe() {
        let cmd = ok(r#"{"op":"unsubscribe","topics":["/a","/b/*"],"id":"u1"}"#);
        let Command::Unsubscribe { selectors: Some(selectors), id: Some(id) } = &cmd else { panic!("{cmd:?}") };
        assert_eq!(names(selectors), ["/a", "/b/*"]);
        assert_eq!(id.get(), "\"u1\"");
        assert!(matches!(ok(r#"{"op":"unsubscribe"}"#), Command::Unsubscribe { selectors: None, id: None }));
    }

    #[test]
    fn publish_string_data_is_text() {
        let cmd = ok(r#"{"op":"publish","topic":"/news","data":"h\u00e9llo\nworld","event":"tick","id":[1]}"#);
        assert_eq!(cmd.id().map(RawValue::get), Some("[1]"));
        let Command::Publish { publish, .. } = cmd else { panic!("not a publish") };
        assert_eq!(publish.topic, "/news");
        assert_eq!(&publish.data[..], "h\u{e9}llo\nworld".as_bytes());
        assert_eq!(publish.content_type.as_deref(), Some(TEXT_CONTENT_TYPE));
        assert_eq!(publish.event.as_deref(), Some("tick"));
    }

    #[test]
    fn publish_other_data_is_json_kept_byte_for_byte() {
        for data in [r#"{"b":1,"a":[true,null]}"#, "[1, 2]", "12345678901234567890123", "-1.5e3", "true", "null"] {
            let cmd = ok(&format!(r#"{{"op":"publish","topic":"/a/b","data":{data}}}"#));
            let Command::Publish { publish, id: None } = cmd else { panic!("{data}") };
            assert_eq!(&publish.data[..], data.as_bytes());
            assert_eq!(publish.content_type.as_deref(), Some(JSON_CONTENT_TYPE));
            assert_eq!(publish.event, None);
        }
    }

    #[test]
    fn ping() {
        let cmd = ok(r#"{"op":"ping","id":{"n":1}}"#);
        assert_eq!(cmd.op(), Op::Ping);
        assert_eq!(cmd.id().map(RawValue::get), Some(r#"{"n":1}"#));
        assert!(matches!(ok(r#"{"op":"ping"}"#), Command::Ping { id: None }));
        assert_eq!(ok(r#"{"op":"ping","id":null}"#).id().map(RawValue::get), Some("null"));
    }

    #[test]
    fn refusals() {
        let many = (0..=MAX_TOPICS).map(|i| format!("\"/t{i}\"")).collect::<Vec<_>>().join(",");
        let too_many = format!(r#"{{"op":"subscribe","topics":[{many}]}}"#);
        let cases: &[(&str, &str)] = &[
            ("", "must be a JSON object"),
            ("[]", "must be a JSON object"),
            (r#" ["ping"]"#, "must be a JSON object"),
            ("\"ping\"", "must be a JSON object"),
            ("{", "invalid command"),
            ("{\"op\":\"ping\"", "invalid command"),
            (r#"{"op":"ping"} x"#, "invalid command"),
            (r#"{"id":1}"#, "missing field `op`"),
            (r#"{"op":"ping","op":"ping"}"#, "duplicate field `op`"),
            (r#"{"op":"jump"}"#, "unknown op \"jump\""),
            (r#"{"op":7}"#, "invalid command"),
            (r#"{"op":"ping","colour":1}"#, "unknown field `colour`"),
            (r#"{"op":"ping","topic":"/a"}"#, "\"topic\" does not apply to ping"),
            (r#"{"op":"subscribe","topic":"/a"}"#, "\"topic\" does not apply to subscribe"),
            (r#"{"op":"subscribe"}"#, "subscribe needs \"topics\""),
            (r#"{"op":"subscribe","topics":[]}"#, "must not be empty"),
            (r#"{"op":"subscribe","topics":"/a"}"#, "a list of at most 32 topic strings"),
            (r#"{"op":"subscribe","topics":[1]}"#, "invalid command"),
            (r#"{"op":"subscribe","topics":["a"]}"#, "invalid topic \"a\": topic must start with '/'"),
            (r#"{"op":"subscribe","topics":["/a/*b"]}"#, "invalid topic"),
            (r#"{"op":"subscribe","topics":["/a"],"since":"zz"}"#, "invalid since"),
            (r#"{"op":"subscribe","topics":["/a"],"since":1}"#, "invalid command"),
            (&too_many, "at most 32 topics per command"),
            (r#"{"op":"unsubscribe","topics":[]}"#, "must not be empty"),
            (r#"{"op":"unsubscribe","since":"all"}"#, "\"since\" does not apply to unsubscribe"),
            (r#"{"op":"publish","data":1}"#, "publish needs \"topic\""),
            (r#"{"op":"publish","topic":"/a"}"#, "publish needs \"data\""),
            (r#"{"op":"publish","topic":"/a/*","data":1}"#, "invalid topic"),
            (r#"{"op":"publish","topic":"a","data":1}"#, "invalid topic"),
            (r#"{"op":"publish","topic":"/a","data":1,"event":""}"#, "event name must be 1 to 64 bytes"),
            (r#"{"op":"publish","topic":"/a","data":1,"event":"a b"}"#, "visible ASCII"),
            (r#"{"op":"publish","topic":"/a","data":1,"topics":["/a"]}"#, "\"topics\" does not apply"),
        ];
        for (input, want) in cases {
            let e = err(input);
            assert!(e.reason().contains(want), "{input}: {:?} lacks {want:?}", e.reason());
            assert!(!e.reason().contains('\n'), "{input}");
        }
        assert!(parse_command(b"{\"op\":\"ping\",\"id\":\"\xff\"}").is_err());
    }

    #[test]
    fn reasons_quoting_long_input_are_cut() {
        let long = "\u{e9}".repeat(2000);
        for input in [
            format!(r#"{{"op":"subscribe","topics":["/{long}"]}}"#),
            format!(r#"{{"op":"subscribe","topics":"{long}"}}"#),
            format!(r#"{{"op":"{long}"}}"#),
        ] {
            let e = err(&input);
            assert!(e.reason().len() <= MAX_REASON_LEN, "{} bytes", e.reason().len());
            assert!(e.reason().contains('\u{e9}'), "{}", e.reason());
        }
    }

    #[test]
    fn errors_echo_the_id_when_they_can() {
        assert_eq!(err(r#"{"op":"jump","id":"j1"}"#).id().map(RawValue::get), Some("\"j1\""));
        assert_eq!(err(r#"{"op":"ping","id":5,"x":1}"#).id().map(RawValue::get), Some("5"));
        assert_eq!(err(r#"{"op":"subscribe","topics":["bad"],"id":[2]}"#).id().map(RawValue::get), Some("[2]"));
        assert!(err("not json").id().is_none());

        let long_id = format!(r#"{{"op":"ping","id":"{}"}}"#, "x".repeat(MAX_REQUEST_ID_LEN));
        let e = err(&long_id);
        assert!(e.id().is_none() && e.reason().contains("id over"), "{e}");
        let e = err(&format!(r#"{{"op":"jump","id":"{}"}}"#, "x".repeat(MAX_REQUEST_ID_LEN)));
        assert!(e.id().is_none());
        assert_eq!(
            err(r#"{"op":"jump","id":3}"#).reply(),
            format!(
                r#"{{"type":"error","id":3,"reason":{}}}"#,
                serde_json::to_string(err(r#"{"op":"jump"}"#).reason()).expect("string")
            )
        );
    }

    #[test]
    fn input_over_the_bound_is_refused() {
        let mut big = br#"{"op":"publish","topic":"/a","data":""#.to_vec();
        big.resize(MAX_COMMAND_LEN + 1 - 2, b'x');
        big.extend_from_slice(b"\"}");
        assert_eq!(big.len(), MAX_COMMAND_LEN + 1);
        assert!(err(std::str::from_utf8(&big).expect("ASCII")).reason().contains("command over"));
        let fits = &big[..big.len() - 3];
        let mut fits = fits.to_vec();
        fits.extend_from_slice(b"\"}");
        assert!(parse_command(&fits).is_ok());
    }

    #[test]
    fn ack_replies() {
        let id = RawValue::from_string("{\"k\": 1}".into()).expect("valid JSON");
        assert_eq!(ack(Op::Ping, None, &[]), r#"{"type":"ack","op":"ping"}"#);
        assert_eq!(
            ack(Op::Subscribe, Some(&id), &[("topics", serde_json::json!(["/a"])), ("next", "1-2".into())]),
            r#"{"type":"ack","op":"subscribe","id":{"k": 1},"topics":["/a"],"next":"1-2"}"#
        );
        assert_eq!(
            ack(Op::Publish, None, &[("type", "x".into()), ("id", 1.into()), ("q\"", Value::Null)]),
            r#"{"type":"ack","op":"publish","q\"":null}"#
        );
        for reply in [ack(Op::Unsubscribe, Some(&id), &[("n", 2.into())]), ack(Op::Publish, None, &[])] {
            let parsed: Value = serde_json::from_str(&reply).expect("valid JSON");
            assert_eq!(parsed["type"], "ack");
        }
    }

    #[test]
    fn error_replies() {
        assert_eq!(error(None, "no"), r#"{"type":"error","reason":"no"}"#);
        let id = RawValue::from_string("\"r1\"".into()).expect("valid JSON");
        assert_eq!(error(Some(&id), "bad \"x\"\n"), r#"{"type":"error","id":"r1","reason":"bad \"x\"\n"}"#);
        let reply = err(r#"{"op":"subscribe","topics":["bad"],"id":9}"#).reply();
        let parsed: Value = serde_json::from_str(&reply).expect("valid JSON");
        assert_eq!((parsed["type"].as_str(), parsed["id"].as_i64()), (Some("error"), Some(9)));
        assert!(parsed["reason"].as_str().is_some_and(|r| r.contains("invalid topic")));
    }
}
