//! The message model: a published message, its id (`<epoch>-<seq>`), where a reader starts
//! (`Since`), and the one JSON encoding of a message that every subscriber shares.
//!
//! Sequence numbers are global across topics and assigned by the hub thread, starting at 1. The
//! epoch is a random 40-bit value fixed at server start, so an id from before a restart can never
//! be mistaken for one of the new sequence. A cursor is the same pair: "I have seen everything on
//! my topics up to `seq` of `epoch`".

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use bytes::Bytes;

/// Bits of randomness in an epoch; 2^40 needs at most 8 base36 digits.
pub const EPOCH_BITS: u32 = 40;
/// Longest epoch text in base36 digits.
const MAX_EPOCH_DIGITS: usize = 8;
/// Longest decimal sequence number (u64::MAX has 20 digits).
const MAX_SEQ_DIGITS: usize = 20;
/// Longest id text accepted by the parsers, in bytes: epoch, '-', seq.
pub const MAX_ID_LEN: usize = MAX_EPOCH_DIGITS + 1 + MAX_SEQ_DIGITS;
/// Fixed per-message bookkeeping counted by `byte_cost` on top of the variable parts, in bytes:
/// the `Message` itself, the `Arc` counters and one history ring slot.
pub const MESSAGE_OVERHEAD_BYTES: usize =
    std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Arc<Message>>();

/// The server's epoch: a random 40-bit value, written in lowercase base36.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// A fresh random epoch from the OS generator.
    pub fn random() -> io::Result<Epoch> {
        let mut buf = [0u8; 8];
        getrandom::getrandom(&mut buf).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Epoch(u64::from_le_bytes(buf) & epoch_mask()))
    }

    /// An epoch from its numeric value; `None` if it does not fit in 40 bits.
    pub fn from_raw(value: u64) -> Option<Epoch> {
        (value <= epoch_mask()).then_some(Epoch(value))
    }

    /// The low 40 bits of `value` as an epoch.
    pub(crate) fn truncated(value: u64) -> Epoch {
        Epoch(value & epoch_mask())
    }

    /// The numeric value.
    #[cfg(test)]
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut buf = [0u8; 13]; // u64::MAX in base36 has 13 digits
        let mut at = buf.len();
        let mut v = self.0;
        loop {
            at -= 1;
            buf[at] = DIGITS[(v % 36) as usize];
            v /= 36;
            if v == 0 {
                break;
            }
        }
        // The digits are ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for Epoch {
    type Err = CursorError;

    /// Lowercase base36, 1 to 8 digits, no leading zero, at most 40 bits: one spelling per epoch.
    fn from_str(s: &str) -> Result<Epoch, CursorError> {
        if s.is_empty() || s.len() > MAX_EPOCH_DIGITS {
            return Err(CursorError::new("id epoch has the wrong length"));
        }
        if s.len() > 1 && s.starts_with('0') {
            return Err(CursorError::new("id epoch has a leading zero"));
        }
        let mut value: u64 = 0;
        for b in s.bytes() {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'z' => b - b'a' + 10,
                _ => return Err(CursorError::new("id epoch is not lowercase base36")),
            };
            // 8 digits of base36 fit easily in a u64, so this cannot overflow.
            value = value * 36 + u64::from(digit);
        }
        Epoch::from_raw(value).ok_or(CursorError::new("id epoch is out of range"))
    }
}

/// A message id, also used as a cursor: `<epoch>-<seq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageId {
    pub epoch: Epoch,
    pub seq: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl FromStr for MessageId {
    type Err = CursorError;

    /// `<epoch>-<seq>` with seq in plain decimal (no sign, no leading zero).
    fn from_str(s: &str) -> Result<MessageId, CursorError> {
        if s.len() > MAX_ID_LEN {
            return Err(CursorError::new("id is too long"));
        }
        let Some((epoch, seq)) = s.split_once('-') else {
            return Err(CursorError::new("id is not <epoch>-<seq>"));
        };
        let epoch = epoch.parse()?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CursorError::new("id sequence is not a decimal number"));
        }
        if seq.len() > 1 && seq.starts_with('0') {
            return Err(CursorError::new("id sequence has a leading zero"));
        }
        let seq = seq.parse().map_err(|_| CursorError::new("id sequence is out of range"))?;
        Ok(MessageId { epoch, seq })
    }
}

/// One published message. Shared read-only behind `Arc` by the store and every worker; the
/// fields must not change once the message is shared (the JSON cache would go stale).
#[derive(Debug)]
pub struct Message {
    /// Global sequence number, from 1.
    pub seq: u64,
    pub topic: Arc<str>,
    /// Publish time, unix milliseconds.
    pub time_ms: u64,
    /// Optional event name (SSE `event:`, Bayeux/Pushlet event), as the publisher gave it.
    pub event: Option<Box<str>>,
    /// The publisher's Content-Type, if any.
    pub content_type: Option<Box<str>>,
    pub data: Bytes,
    json: OnceLock<Bytes>,
    /// Encodings for the other wire formats, allocated on first use so a message that only
    /// ever goes out as JSON pays 8 bytes for them.
    wire: OnceLock<Box<[OnceLock<Bytes>; Wire::COUNT]>>,
}

/// How many times a payload is counted against history bounds: the payload, its JSON
/// encoding and one framed wire copy (`Message::encoded`) each hold about its size.
pub const PAYLOAD_COPIES: usize = 3;

/// A wire format whose per-message encoding is cached on the message (serialize once, write
/// many). The transports own the encoders; the message only keeps the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Server-Sent Events: `id:`, `event:`, `data:` lines.
    Sse,
    /// JSON made safe inside an HTML `<script>` element (forever iframe).
    HtmlJson,
    /// One `multipart/x-mixed-replace` part (boundary line, headers, raw payload).
    MultipartPart,
    /// A WebSocket text frame carrying the message JSON.
    WsFrame,
    /// A NUL-terminated JSON line for raw TCP clients.
    RawTcp,
    /// The SSE event as one complete HTTP/1.1 chunk (size line, event, CRLF).
    SseChunk,
    /// The ndjson line as one complete HTTP/1.1 chunk.
    NdjsonChunk,
    /// The multipart part as one complete HTTP/1.1 chunk.
    MultipartChunk,
    /// The Bayeux event object (`{"channel","data","id"}`), the same for every session.
    BayeuxEvent,
}

impl Wire {
    const COUNT: usize = 9;
}

impl Message {
    /// A message with no event, no content type and no known predecessor.
    pub fn new(seq: u64, topic: Arc<str>, time_ms: u64, data: Bytes) -> Message {
        Message {
            seq,
            topic,
            time_ms,
            event: None,
            content_type: None,
            data,
            json: OnceLock::new(),
            wire: OnceLock::new(),
        }
    }

    /// Sets the event name.
    pub fn with_event(mut self, event: Option<Box<str>>) -> Message {
        self.event = event;
        self
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, content_type: Option<Box<str>>) -> Message {
        self.content_type = content_type;
        self
    }

    /// This message's id in `epoch`.
    pub fn id(&self, epoch: Epoch) -> MessageId {
        MessageId { epoch, seq: self.seq }
    }

    /// What this message costs against the history bounds, in bytes: the payload counted
    /// [`PAYLOAD_COPIES`] times (the payload, its JSON encoding, and one framed copy for a
    /// streaming transport, all of which live as long as the message), plus topic, event,
    /// content type and `MESSAGE_OVERHEAD_BYTES`. So `--history-bytes` bounds real memory, not
    /// just payloads.
    pub fn byte_cost(&self) -> usize {
        self.data.len().saturating_mul(PAYLOAD_COPIES)
            + self.topic.len()
            + self.event.as_deref().map_or(0, str::len)
            + self.content_type.as_deref().map_or(0, str::len)
            + MESSAGE_OVERHEAD_BYTES
    }

    /// The message as one JSON object, encoded on first use and then shared by every subscriber:
    /// `{"id":"<epoch>-<seq>","topic":"/a/b","time":<ms>,"event":"x","data":<payload>}`.
    /// `event` is omitted when there is none. The payload is embedded raw when the content type
    /// is JSON (`application/json` or `*/*+json`, parameters ignored) and the data is valid JSON;
    /// otherwise it is a JSON string when the data is UTF-8, else standard base64 in a string
    /// followed by `"encoding":"base64"`. A message belongs to one epoch: the first call's
    /// `epoch` is the one cached.
    pub fn json(&self, epoch: Epoch) -> &Bytes {
        self.json.get_or_init(|| Bytes::from(self.encode_json(epoch)))
    }

    /// The message in wire format `wire`, built by `encode` on first use and then shared by
    /// every subscriber of that format. A message belongs to one epoch and one server, so the
    /// first encoder's result is the one every later caller gets.
    pub fn encoded(&self, wire: Wire, encode: impl FnOnce(&Message) -> Bytes) -> &Bytes {
        let slots = self.wire.get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        slots[wire as usize].get_or_init(|| encode(self))
    }

    /// Whether the payload goes out as JSON (a JSON content type and valid JSON data).
    pub fn data_is_json(&self) -> bool {
        self.is_json() && is_valid_json(&self.data)
    }

    fn encode_json(&self, epoch: Epoch) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + self.topic.len() + 96);
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(self.id(epoch).to_string().as_bytes());
        out.extend_from_slice(b"\",\"topic\":");
        push_json_str(&mut out, &self.topic);
        out.extend_from_slice(b",\"time\":");
        out.extend_from_slice(self.time_ms.to_string().as_bytes());
        if let Some(event) = &self.event {
            out.extend_from_slice(b",\"event\":");
            push_json_str(&mut out, event);
        }
        out.extend_from_slice(b",\"data\":");
        if self.data_is_json() {
            out.extend_from_slice(&self.data);
        } else if let Ok(text) = std::str::from_utf8(&self.data) {
            push_json_str(&mut out, text);
        } else {
            out.push(b'"');
            out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&self.data).as_bytes());
            out.extend_from_slice(b"\",\"encoding\":\"base64\"");
        }
        out.push(b'}');
        out
    }

    /// Whether the content type names JSON: `application/json` or a `+json` structured syntax
    /// suffix (RFC 6839 section 3.1), compared case-insensitively (RFC 9110 section 8.3.1).
    pub fn is_json(&self) -> bool {
        let Some(ct) = self.content_type.as_deref() else {
            return false;
        };
        let essence = ct.split(';').next().unwrap_or("").trim();
        let Some((kind, subtype)) = essence.split_once('/') else {
            return false;
        };
        let is_token = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
        if !is_token(kind) || !is_token(subtype) {
            return false;
        }
        (kind.eq_ignore_ascii_case("application") && subtype.eq_ignore_ascii_case("json"))
            || (subtype.len() > 5
                && subtype.get(subtype.len() - 5..).is_some_and(|tail| tail.eq_ignore_ascii_case("+json")))
    }
}

/// Where a reader starts reading history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Everything still retained.
    All,
    /// Everything after this id.
    After(MessageId),
    /// Only messages published from now on.
    Now,
}

impl Since {
    /// Parses `all`, `now` or a message id.
    pub fn parse(s: &str) -> Result<Since, CursorError> {
        match s {
            "all" => Ok(Since::All),
            "now" => Ok(Since::Now),
            _ => s.parse().map(Since::After),
        }
    }

    /// Resolves this starting point against the running store's `epoch` and `head`, giving the
    /// seq to read after. An id of another epoch (from before a restart) reads everything
    /// retained; an id beyond the head (not issued by this server) reads from the head. Both set
    /// `reset`: continuity cannot be promised, the client should be told it may have missed
    /// messages.
    pub fn resolve(&self, epoch: Epoch, head: u64) -> Resume {
        match *self {
            Since::All => Resume { after: 0, reset: false },
            Since::Now => Resume { after: head, reset: false },
            Since::After(id) if id.epoch != epoch => Resume { after: 0, reset: true },
            Since::After(id) if id.seq > head => Resume { after: head, reset: true },
            Since::After(id) => Resume { after: id.seq, reset: false },
        }
    }
}

/// A resolved starting point: read messages with `seq > after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    pub after: u64,
    /// The client's cursor could not be honoured as given (see `Since::resolve`).
    pub reset: bool,
}

/// Why an id or cursor was rejected; displays as one line for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorError {
    reason: &'static str,
}

impl CursorError {
    fn new(reason: &'static str) -> CursorError {
        CursorError { reason }
    }

    /// The one-line reason.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for CursorError {}

fn epoch_mask() -> u64 {
    (1u64 << EPOCH_BITS) - 1
}

/// Appends `s` as a JSON string literal, escaped by serde_json (RFC 8259 section 7).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail; fall back to an empty string rather than panic.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// Whether `data` is one complete JSON value (whitespace around it allowed), checked without
/// building it.
fn is_valid_json(data: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn epoch() -> Epoch {
        Epoch::from_raw(1_234_567_890).expect("fits in 40 bits")
    }

    fn msg(data: &'static [u8], content_type: Option<&str>, event: Option<&str>) -> Message {
        Message::new(42, Arc::from("/a/b"), 1_700_000_000_123, Bytes::from_static(data))
            .with_content_type(content_type.map(Box::from))
            .with_event(event.map(Box::from))
    }

    fn parsed(m: &Message) -> Value {
        serde_json::from_slice(m.json(epoch())).expect("valid JSON")
    }

    #[test]
    fn epoch_base36_round_trip() {
        for raw in [0, 1, 35, 36, 1_234_567_890, (1 << 40) - 1] {
            let e = Epoch::from_raw(raw).expect("fits");
            let text = e.to_string();
            assert!(text.len() <= MAX_EPOCH_DIGITS);
            assert!(text.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
            assert_eq!(text.parse::<Epoch>(), Ok(e), "{text}");
        }
        assert_eq!(Epoch::from_raw(35).map(|e| e.to_string()), Some("z".into()));
        assert_eq!(Epoch::from_raw(36).map(|e| e.to_string()), Some("10".into()));
        assert_eq!(Epoch::from_raw(1 << 40), None);
        let random = Epoch::random().expect("OS randomness");
        assert!(random.raw() < 1 << 40);
    }

    #[test]
    fn id_round_trip() {
        for seq in [0, 1, 42, u64::MAX] {
            let id = MessageId { epoch: epoch(), seq };
            let text = id.to_string();
            assert!(text.len() <= MAX_ID_LEN);
            assert_eq!(text.parse::<MessageId>(), Ok(id));
        }
        assert_eq!(MessageId { epoch: epoch(), seq: 7 }.to_string(), "kf12oi-7");
    }

    #[test]
    fn id_garbage_is_rejected() {
        let too_long = "1".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            "-",
            "abc",
            "abc-",
            "-12",
            "ABC-1",
            "abc-+1",
            "abc--1",
            "abc-1-2",
            "abc-01",
            "0abc-1",
            "abc- 1",
            "abc-1 ",
            "abc-0x10",
            "abc-18446744073709551616", // u64::MAX + 1
            "zzzzzzzzz-1",              // 9 digits
            "zzzzzzzz-1",               // 8 digits but over 40 bits
            "ab\u{e9}-1",
            too_long.as_str(),
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?} should be rejected");
        }
        // The largest 40-bit epoch is accepted.
        let max = Epoch::from_raw((1 << 40) - 1).expect("fits");
        assert!(format!("{max}-1").parse::<MessageId>().is_ok());
    }

    #[test]
    fn since_parse_and_resolve() {
        let e = epoch();
        let other = Epoch::from_raw(7).expect("fits");
        assert_eq!(Since::parse("all"), Ok(Since::All));
        assert_eq!(Since::parse("now"), Ok(Since::Now));
        let id = MessageId { epoch: e, seq: 5 };
        assert_eq!(Since::parse(&id.to_string()), Ok(Since::After(id)));
        let err = Since::parse("ALL").expect_err("case matters");
        assert_eq!(err.to_string(), "id is not <epoch>-<seq>");
        let err = Since::parse("ALL-1").expect_err("case matters");
        assert_eq!(err.to_string(), "id epoch is not lowercase base36");
        assert!(Since::parse("").is_err());

        assert_eq!(Since::All.resolve(e, 9), Resume { after: 0, reset: false });
        assert_eq!(Since::Now.resolve(e, 9), Resume { after: 9, reset: false });
        assert_eq!(Since::After(id).resolve(e, 9), Resume { after: 5, reset: false });
        assert_eq!(Since::After(id).resolve(e, 5), Resume { after: 5, reset: false });
        assert_eq!(Since::After(id).resolve(e, 3), Resume { after: 3, reset: true });
        let old = MessageId { epoch: other, seq: 5 };
        assert_eq!(Since::After(old).resolve(e, 9), Resume { after: 0, reset: true });
    }

    #[test]
    fn json_embeds_valid_json_payloads() {
        for ct in
            ["application/json", "Application/JSON; charset=utf-8", "application/vnd.api+json", "text/x+json ; q=1"]
        {
            let m = msg(br#" {"x":[1,2,"\u00e9"]} "#, Some(ct), Some("upd"));
            assert_eq!(
                parsed(&m),
                json!({"id": "kf12oi-42", "topic": "/a/b", "time": 1_700_000_000_123u64,
                       "event": "upd", "data": {"x": [1, 2, "\u{e9}"]}}),
                "{ct}"
            );
        }
    }

    #[test]
    fn json_falls_back_to_a_string() {
        // JSON content type but invalid JSON; valid JSON but not a JSON content type; no type.
        for (data, ct) in [
            (&b"{\"x\":"[..], Some("application/json")),
            (&b"{\"x\":1} trailing"[..], Some("application/json")),
            (&b"[1,2]"[..], Some("text/plain")),
            (&b"[1,2]"[..], Some("application/jsonx")),
            (&b"[1,2]"[..], Some("+json")),
            (&b"[1,2]"[..], None),
        ] {
            let m = msg(data, ct, None);
            let text = std::str::from_utf8(data).expect("utf-8");
            assert_eq!(
                parsed(&m),
                json!({"id": "kf12oi-42", "topic": "/a/b", "time": 1_700_000_000_123u64,
                       "data": text}),
                "{ct:?}"
            );
        }
        let m = msg(b"quote \" backslash \\ newline \n nul \0 </script>", None, Some("e\"v"));
        let v = parsed(&m);
        assert_eq!(v["data"], "quote \" backslash \\ newline \n nul \0 </script>");
        assert_eq!(v["event"], "e\"v");
    }

    #[test]
    fn json_base64_for_binary() {
        let m = msg(b"\xff\x00\xfebin", Some("application/json"), None);
        assert_eq!(
            parsed(&m),
            json!({"id": "kf12oi-42", "topic": "/a/b", "time": 1_700_000_000_123u64,
                   "data": "/wD+Ymlu", "encoding": "base64"})
        );
    }

    #[test]
    fn json_is_encoded_once() {
        let m = msg(b"hi", None, None);
        let first = m.json(epoch()).clone();
        let again = m.json(epoch());
        assert_eq!(first.as_ptr(), again.as_ptr(), "the cached bytes are shared");
    }

    #[test]
    fn byte_cost_counts_every_part() {
        let bare = msg(b"12345", None, None);
        assert_eq!(bare.byte_cost(), 5 * PAYLOAD_COPIES + 4 + MESSAGE_OVERHEAD_BYTES);
        let full = msg(b"12345", Some("text/plain"), Some("ev"));
        assert_eq!(full.byte_cost(), 5 * PAYLOAD_COPIES + 4 + 10 + 2 + MESSAGE_OVERHEAD_BYTES);
    }
}
