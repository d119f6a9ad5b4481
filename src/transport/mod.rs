//! Transports: how a subscriber's messages travel once the protocol has decided what they are.
//!
//! One file per transport, like nchan's `src/subscribers/`, behind the [`Transport`] enum.
//! Every transport reads the same history with the same cursors, so a client can switch
//! transport and resume without losing or repeating a message. Each file holds its transport's
//! framing and opens with a `# Lifecycle` section: what is sent on subscribe, on a wake-up, on
//! its timer, on overflow and at the end, and how a client resumes, naming the server function
//! that does each step. The lifecycle itself is shared per family (`server/subscriber.rs` picks
//! the family's module), as nchan's streaming subscribers share one core and differ only in
//! their format callbacks; `StreamKind`'s methods only dispatch to the streaming files.
//!
//! - Answer-once transports (`longpoll`, `jsonp`, and `poll`, a long-poll that never parks)
//!   produce one response body from a batch of messages.
//! - Streaming transports (`sse`, `stream`, `iframe`, `multipart`) keep the response open and
//!   emit a frame per message, heartbeats, and control frames (`end`, `overflow`, `gap`)
//!   described by [`Control`]. Each message's frame is encoded once per wire format and shared
//!   by every subscriber (`Message::encoded`), as a complete HTTP chunk for chunked responses
//!   (`StreamKind::chunk`); the only per-connection bytes left (an iframe's callback) are
//!   small separate slices written with `writev`. What they share besides their framing (chunk
//!   framing on the wire, heartbeats, the age and byte limits, the output bound and overflow)
//!   is `streaming::StreamLife`.
//! - Socket transports: `websocket` (RFC 6455) and `raw` (raw TCP lines, Flash `XMLSocket`)
//!   carry JSON commands in and messages out on one connection; `socket::SocketLife` is what
//!   they share (heartbeats that find dead peers, the output bound and overflow).

pub mod bound;
pub mod iframe;
pub mod jsonp;
pub mod longpoll;
pub mod multipart;
pub mod raw;
pub mod socket;
pub mod sse;
pub mod stream;
pub mod streaming;
pub mod websocket;

use bytes::Bytes;

use crate::model::{Epoch, Message, MessageId, Wire};

/// Longest JSONP / iframe callback name, in bytes.
pub const MAX_CALLBACK_LEN: usize = 64;

/// The transport a subscription uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Hold the request until a message arrives or the timeout passes (JSON reply).
    LongPoll,
    /// Answer at once with whatever is newer than the cursor (JSON reply).
    Poll,
    /// Long-poll whose reply is a script calling `callback` (cross-origin script tags).
    Jsonp { callback: Box<str> },
    /// A response that stays open and carries every message as it comes.
    Stream(StreamKind),
}

/// The streaming transports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamKind {
    /// Server-Sent Events (`text/event-stream`).
    Sse,
    /// XHR / chunked streaming: one JSON object per line (`application/x-ndjson`).
    Ndjson,
    /// Forever iframe: `<script>parent.<callback>(...)</script>` per message. `prefix` is
    /// `<script>parent.<callback>(`, built once per connection from a validated name.
    Iframe { prefix: Bytes },
    /// `multipart/x-mixed-replace`, one part per message.
    Multipart,
}

/// What every frame of a stream depends on besides the message. The boundary and retry hint
/// are fixed per server; the epoch is the store's, which a cluster's log can rotate, so the
/// server takes a copy with the current epoch per batch (cheap: the boundary is shared).
#[derive(Debug, Clone)]
pub struct StreamCtx {
    pub epoch: Epoch,
    /// The multipart boundary (random per server start).
    pub boundary: std::sync::Arc<str>,
    /// SSE `retry:` hint in milliseconds.
    pub retry_ms: u64,
}

/// A control frame: something the subscriber must know that is not a message. Every
/// streaming transport carries them as `{"type":"<kind>",...}` JSON in its own framing;
/// messages never have a `type` key, so clients tell the two apart.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// The stream ends cleanly (age or byte limit, shutdown); reconnect with `next`.
    End { next: u64 },
    /// The subscriber stopped reading and its output passed the bound; it is disconnected.
    Overflow { next: u64 },
    /// Messages newer than the cursor may have been dropped from history.
    Gap { oldest: Option<u64>, next: u64 },
    /// The token the subscriber authenticated with expired; reconnect with a fresh one from
    /// `next`.
    Expired { next: u64 },
}

impl Control {
    /// The control object as JSON.
    pub fn json(&self, epoch: Epoch) -> String {
        let id = |seq| MessageId { epoch, seq }.to_string();
        match *self {
            Control::End { next } => format!("{{\"type\":\"end\",\"next\":\"{}\"}}", id(next)),
            Control::Overflow { next } => format!("{{\"type\":\"overflow\",\"next\":\"{}\"}}", id(next)),
            Control::Gap { oldest: Some(oldest), next } => {
                format!("{{\"type\":\"gap\",\"oldest\":\"{}\",\"next\":\"{}\"}}", id(oldest), id(next))
            }
            Control::Gap { oldest: None, next } => format!("{{\"type\":\"gap\",\"next\":\"{}\"}}", id(next)),
            Control::Expired { next } => {
                format!("{{\"type\":\"expired\",\"reason\":\"token expired\",\"next\":\"{}\"}}", id(next))
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Control::End { .. } => "end",
            Control::Overflow { .. } => "overflow",
            Control::Gap { .. } => "gap",
            Control::Expired { .. } => "expired",
        }
    }

    fn next(&self) -> u64 {
        match *self {
            Control::End { next }
            | Control::Overflow { next }
            | Control::Gap { next, .. }
            | Control::Expired { next } => next,
        }
    }
}

impl StreamKind {
    /// The response's `Content-Type`.
    pub fn content_type(&self, ctx: &StreamCtx) -> String {
        match self {
            StreamKind::Sse => sse::CONTENT_TYPE.to_owned(),
            StreamKind::Ndjson => stream::CONTENT_TYPE.to_owned(),
            StreamKind::Iframe { .. } => iframe::CONTENT_TYPE.to_owned(),
            StreamKind::Multipart => multipart::content_type(&ctx.boundary),
        }
    }

    /// Bytes sent right after the response head.
    pub fn preamble(&self, ctx: &StreamCtx, cursor: u64) -> Bytes {
        match self {
            StreamKind::Sse => sse::preamble(ctx, cursor),
            StreamKind::Ndjson => stream::preamble(),
            StreamKind::Iframe { .. } => iframe::preamble(),
            StreamKind::Multipart => multipart::preamble(),
        }
    }

    /// Appends the slices of one message's frame to `parts`.
    pub fn push_message(&self, msg: &Message, ctx: &StreamCtx, parts: &mut Vec<Bytes>) {
        match self {
            StreamKind::Sse => parts.push(sse::message(msg, ctx.epoch).clone()),
            StreamKind::Ndjson => stream::push_message(msg, ctx.epoch, parts),
            StreamKind::Iframe { prefix } => iframe::push_message(prefix, msg, ctx.epoch, parts),
            StreamKind::Multipart => parts.push(multipart::part(msg, ctx).clone()),
        }
    }

    /// Bytes that end the body after the last frame.
    pub fn epilogue(&self, ctx: &StreamCtx) -> Bytes {
        match self {
            StreamKind::Sse => sse::epilogue(),
            StreamKind::Ndjson => stream::epilogue(),
            StreamKind::Iframe { .. } => iframe::epilogue(),
            StreamKind::Multipart => multipart::epilogue(&ctx.boundary),
        }
    }

    /// The message's frame as one complete HTTP/1.1 chunk, encoded once per message and shared
    /// by every chunked subscriber of this kind: a delivery is then a single slice with no
    /// per-connection bytes at all. None for kinds with per-connection bytes (iframe).
    pub fn chunk(&self, msg: &Message, ctx: &StreamCtx) -> Option<Bytes> {
        // Each kind's frame, uncached: only the chunk is cached, since a chunked subscriber
        // never needs the bare frame.
        type Encode = fn(&Message, &StreamCtx) -> Vec<u8>;
        let (wire, encode): (Wire, Encode) = match self {
            StreamKind::Sse => (Wire::SseChunk, |msg, ctx| sse::encode(msg, ctx.epoch).into_bytes()),
            StreamKind::Ndjson => (Wire::NdjsonChunk, |msg, ctx| stream::encode(msg, ctx.epoch)),
            StreamKind::Multipart => (Wire::MultipartChunk, multipart::encode),
            StreamKind::Iframe { .. } => return None,
        };
        let chunk = msg.encoded(wire, |msg| {
            let frame = encode(msg, ctx);
            let mut chunk = Vec::with_capacity(frame.len() + 12);
            crate::http::write_chunk(&mut chunk, &frame);
            Bytes::from(chunk)
        });
        Some(chunk.clone())
    }

    /// A frame that keeps proxies and the client's dead-peer detection happy.
    pub fn heartbeat(&self, ctx: &StreamCtx) -> Bytes {
        match self {
            StreamKind::Sse => Bytes::from_static(sse::HEARTBEAT),
            StreamKind::Ndjson => Bytes::from_static(stream::HEARTBEAT),
            StreamKind::Iframe { .. } => Bytes::from_static(iframe::HEARTBEAT),
            StreamKind::Multipart => multipart::heartbeat(&ctx.boundary),
        }
    }

    /// A control frame.
    pub fn control(&self, control: Control, ctx: &StreamCtx) -> Bytes {
        let json = control.json(ctx.epoch);
        match self {
            StreamKind::Sse => sse::control(control, &json, ctx.epoch),
            StreamKind::Ndjson => stream::control(&json),
            StreamKind::Iframe { prefix } => iframe::control(prefix, &json),
            StreamKind::Multipart => multipart::control(&ctx.boundary, &json),
        }
    }
}

/// Checks a JSONP / iframe callback name: `[A-Za-z_$][A-Za-z0-9_$.]*`, at most
/// [`MAX_CALLBACK_LEN`] bytes, no empty dotted segment. Anything else could inject script.
pub fn valid_callback(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else { return false };
    name.len() <= MAX_CALLBACK_LEN
        && (first.is_ascii_alphabetic() || first == b'_' || first == b'$')
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.')
        && !name.ends_with('.')
        && !name.contains("..")
}

/// JSON made safe to embed in HTML `<script>` or in any JavaScript source: `<`, `>` and `&`
/// become `\u003c`, `\u003e`, `\u0026` (so no payload can close the script element or open a
/// comment), and U+2028/U+2029 become escapes (line terminators in pre-ES2019 JavaScript).
/// These characters can only occur inside JSON strings, where the escapes mean the same.
pub fn script_safe_json(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 16);
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            0xE2 if json.get(i + 1) == Some(&0x80) && matches!(json.get(i + 2), Some(0xA8 | 0xA9)) => {
                out.extend_from_slice(if json[i + 2] == 0xA8 { b"\\u2028" } else { b"\\u2029" });
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks() {
        for ok in ["cb", "_x", "$", "a.b.c", "jQuery123_456", "x$1"] {
            assert!(valid_callback(ok), "{ok}");
        }
        let long = "a".repeat(MAX_CALLBACK_LEN + 1);
        for bad in ["", "1a", "a b", "a(", "alert(1)//", "a..b", "a.", ".a", "<script>", "a-b", &long] {
            assert!(!valid_callback(bad), "{bad}");
        }
    }

    #[test]
    fn script_safe_json_escapes_markup_and_line_separators() {
        let raw = "{\"d\":\"</script><!-- & \u{2028}\u{2029}\"}";
        let safe = script_safe_json(raw.as_bytes());
        let text = std::str::from_utf8(&safe).expect("utf8");
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
        assert!(!text.contains('\u{2028}') && !text.contains('\u{2029}'));
        // Still the same JSON value.
        let a: serde_json::Value = serde_json::from_str(raw).expect("json");
        let b: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(a, b);
    }
}
