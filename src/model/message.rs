//! The message model: a published message, its cost against the history bounds, and its
//! encodings (the one JSON object above all), each built once and shared by every subscriber.
//! A message's id and the cursors that point between messages are in `cursor`.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use bytes::Bytes;

use super::cursor::{Epoch, MessageId};
use super::json_depth::check_depth;

/// Fixed per-message bookkeeping counted by `byte_cost` on top of the variable parts, in bytes:
/// the `Message` itself, the `Arc` counters and one history ring slot.
pub const MESSAGE_OVERHEAD_BYTES: usize =
    std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Arc<Message>>();

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

    /// Whether the content type names JSON ([`is_json_content_type`]).
    pub fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(is_json_content_type)
    }
}

/// Whether a content type names JSON: `application/json` or a `+json` structured syntax suffix
/// (RFC 6839 section 3.1), compared case-insensitively (RFC 9110 section 8.3.1).
pub fn is_json_content_type(ct: &str) -> bool {
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

/// Appends `s` as a JSON string literal, escaped by serde_json (RFC 8259 section 7).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail; fall back to an empty string rather than panic.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// Whether `data` is one complete JSON value (whitespace around it allowed) within the nesting
/// bound, checked without building it. The ingest paths refuse deeper JSON already; this makes
/// sure no other path can get a poison payload embedded raw (it goes out as a string instead).
fn is_valid_json(data: &[u8]) -> bool {
    check_depth(data).is_ok() && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
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
    fn json_nested_past_the_bound_is_never_embedded_raw() {
        // The ingest paths refuse it; a payload that got in some other way goes out as a string.
        let depth = crate::model::MAX_JSON_DEPTH + 1;
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let m = Message::new(1, Arc::from("/d"), 0, Bytes::from(deep.clone()))
            .with_content_type(Some("application/json".into()));
        assert!(!m.data_is_json());
        assert_eq!(parsed(&m)["data"], deep);
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
