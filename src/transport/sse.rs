//! Server-Sent Events (`text/event-stream`, HTML Living Standard §9.2).
//!
//! Each message is one event: `id:` (the message id, so the browser's automatic reconnect
//! sends it back as `Last-Event-ID` and resumes exactly after it), `event:` when the message
//! has an event name, and the payload as `data:` lines (one per line of the payload, so
//! multi-line text survives). JSON payloads are sent as their JSON text; binary payloads, which
//! a text protocol cannot carry, are sent as base64. Heartbeats are comment lines, which
//! proxies forward and clients ignore.
//!
//! # Lifecycle
//!
//! The streaming family's life (`server/stream.rs`, timed by `transport/streaming.rs`
//! `StreamLife`) with this file's framing:
//! - Subscribe: `Accept: text/event-stream` or `transport=sse`. `server/delivery.rs` `subscribe`
//!   → `server/stream.rs` `start` → `open`: the head (200, chunked on HTTP/1.1, close-delimited
//!   on HTTP/1.0, `Cache-Control: no-cache, no-store`, `X-Accel-Buffering: no`), `preamble`
//!   (`retry:` from `--sse-retry`, and an `id:` holding the starting cursor), a `gap` event if
//!   the cursor is from another epoch or past the head, then `feed` sends what history holds.
//! - Wake: `server/subscriber.rs` `on_wake` → `stream::feed`: while `StreamLife::pace` leaves
//!   room, each message is one chunk shared by every subscriber (`StreamKind::chunk`,
//!   `Wire::SseChunk`, from `encode`), or `message` (`Wire::Sse`) on HTTP/1.0. A gap found in
//!   history is a `gap` event.
//! - Timeout: `subscriber::on_timeout` → `stream::on_timer` asks `StreamLife::due`: `HEARTBEAT`
//!   (`: hb`) every `--heartbeat-interval` (none while output sits at the bound), or the end at
//!   `--stream-max-age`.
//! - Overflow: at the output bound for a heartbeat interval, `stream::overflow` queues an
//!   `overflow` event after the output the client has not taken, and closes once it is written (or when the client
//!   takes nothing for `bound::NOTICE_WAIT`).
//! - End (age, `--stream-max-bytes` of payload counted in `feed`, shutdown through
//!   `subscriber::answer_now`): `stream::end` queues `control`'s `end` event, no `epilogue`, and
//!   the last chunk (`StreamLife::finish`); the connection closes once that is written.
//! - Resume: EventSource reconnects by itself, `retry:` later, sending the last `id:` it saw (a
//!   message's, the `end` or `overflow` cursor, or the preamble's) as `Last-Event-ID`, which
//!   `protocol/native.rs` `parse_subscribe` reads when there is no `since=`.

use std::fmt::Write as _;

use base64::Engine as _;
use bytes::Bytes;

use super::{Control, StreamCtx};
use crate::model::{Epoch, Message, MessageId, Wire};

pub const CONTENT_TYPE: &str = "text/event-stream";
pub const HEARTBEAT: &[u8] = b": hb\n\n";

/// The reconnect hint and the starting cursor. An event with an `id:` and no `data:` sets the
/// client's last event id without dispatching anything, so a client that reconnects before
/// any message arrived still resumes from where its stream began.
pub fn preamble(ctx: &StreamCtx, cursor: u64) -> Bytes {
    let id = MessageId { epoch: ctx.epoch, seq: cursor };
    Bytes::from(format!("retry: {}\nid: {id}\n\n", ctx.retry_ms))
}

/// The message as one event, encoded once per message.
pub fn message(msg: &Message, epoch: Epoch) -> &Bytes {
    msg.encoded(Wire::Sse, |msg| Bytes::from(encode(msg, epoch)))
}

/// The event, uncached (the chunked path caches it as an HTTP chunk instead).
pub(super) fn encode(msg: &Message, epoch: Epoch) -> String {
    let mut out = String::with_capacity(msg.data.len() + 64);
    let _ = writeln!(out, "id: {}", msg.id(epoch));
    if let Some(event) = &msg.event {
        // Event names are visible ASCII (validated at publish), so they cannot break the line.
        let _ = writeln!(out, "event: {event}");
    }
    match std::str::from_utf8(&msg.data) {
        Ok(text) => push_data_lines(&mut out, text),
        Err(_) => push_data_lines(&mut out, &base64::engine::general_purpose::STANDARD.encode(&msg.data)),
    }
    out.push('\n');
    out
}

/// One `data:` line per payload line; CRLF, CR and LF all end a line in the event stream
/// format, so each is turned into a new `data:` line and the client rejoins them with LF.
fn push_data_lines(out: &mut String, text: &str) {
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.push_str("data: ");
        out.push_str(&rest[..end]);
        out.push('\n');
        if end == rest.len() {
            return;
        }
        let skip = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[end + skip..];
    }
}

/// Nothing after the last event: the stream ends with the last chunk, or at close.
pub fn epilogue() -> Bytes {
    Bytes::new()
}

/// A control event: `event: end|overflow|gap`, the JSON as data; `end` and `overflow` also
/// move the client's last event id to the resume cursor.
pub fn control(control: Control, json: &str, epoch: Epoch) -> Bytes {
    let mut out = format!("event: {}\n", control.kind());
    if !matches!(control, Control::Gap { .. }) {
        let _ = writeln!(out, "id: {}", MessageId { epoch, seq: control.next() });
    }
    let _ = write!(out, "data: {json}\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn epoch() -> Epoch {
        Epoch::from_raw(12345).expect("epoch")
    }

    #[test]
    fn multi_line_payloads_become_several_data_lines() {
        let msg = Message::new(7, Arc::from("/t"), 1, Bytes::from_static(b"one\ntwo\r\nthree\rfour"))
            .with_event(Some("tick".into()));
        let text = String::from_utf8(message(&msg, epoch()).to_vec()).expect("utf8");
        assert_eq!(text, "id: 9ix-7\nevent: tick\ndata: one\ndata: two\ndata: three\ndata: four\n\n");
    }

    #[test]
    fn empty_and_binary_payloads() {
        let msg = Message::new(1, Arc::from("/t"), 1, Bytes::new());
        assert_eq!(&message(&msg, epoch())[..], b"id: 9ix-1\ndata: \n\n");
        let msg = Message::new(2, Arc::from("/t"), 1, Bytes::from_static(&[0xff, 0]));
        assert_eq!(&message(&msg, epoch())[..], b"id: 9ix-2\ndata: /wA=\n\n");
    }

    #[test]
    fn control_events() {
        let end = Control::End { next: 9 };
        assert_eq!(
            &control(end, &end.json(epoch()), epoch())[..],
            &b"event: end\nid: 9ix-9\ndata: {\"type\":\"end\",\"next\":\"9ix-9\"}\n\n"[..]
        );
    }
}
