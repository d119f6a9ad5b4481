//! `multipart/x-mixed-replace` (RFC 2046 §5.1, as browsers and many device clients use it):
//! one part per message, with the message's own `Content-Type` and the raw payload, plus
//! `X-Message-Id`, `X-Topic` and `X-Event` part headers.
//!
//! The boundary is random per server start. A payload that happens to contain the boundary
//! delimiter is sent base64-encoded (`Content-Transfer-Encoding: base64`); base64 has no `-`,
//! so the delimiter can never appear inside a part.
//!
//! # Lifecycle
//!
//! The streaming family's life (`server/stream.rs`, timed by `transport/streaming.rs`
//! `StreamLife`) with this file's framing:
//! - Subscribe: `transport=multipart`. `server/delivery.rs` `subscribe` → `server/stream.rs`
//!   `start` → `open`: the head (200, `content_type` naming the server's boundary, chunked on
//!   HTTP/1.1), no `preamble` (the first part's delimiter opens the body), a `gap` part if the
//!   cursor is from another epoch or past the head, then `feed` sends what history holds.
//! - Wake: `server/subscriber.rs` `on_wake` → `stream::feed`: while `StreamLife::pace` leaves
//!   room, each message is one part shared by every subscriber (`StreamKind::chunk`,
//!   `Wire::MultipartChunk`, from `encode`), or `part` (`Wire::MultipartPart`) on HTTP/1.0. A gap
//!   found in history is a `gap` part.
//! - Timeout: `subscriber::on_timeout` → `stream::on_timer` asks `StreamLife::due`: `heartbeat`
//!   (an `application/json` part) every `--heartbeat-interval` (none while output sits at the
//!   bound), or the end at `--stream-max-age`.
//! - Overflow: at the output bound for a heartbeat interval, `stream::overflow` queues an
//!   `overflow` part after the output the client has not taken, and closes once it is written (or when the client
//!   takes nothing for `bound::NOTICE_WAIT`).
//! - End (age, `--stream-max-bytes`, shutdown): `stream::end` queues `control`'s `end` part,
//!   `epilogue` (the close delimiter) and the last chunk (`StreamLife::finish`); the connection
//!   closes once that is written.
//! - Resume: reconnect with `?since=` the `next` of the `end` or `overflow` part, or the
//!   `X-Message-Id` of the last message part.

use std::fmt::Write as _;

use base64::Engine as _;
use bytes::Bytes;

use super::StreamCtx;
use crate::model::{Message, Wire};

/// `Content-Type` of the whole response.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/x-mixed-replace; boundary=\"{boundary}\"")
}

/// A fresh boundary: 128 random bits in hex.
pub fn new_boundary() -> std::io::Result<Box<str>> {
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut out = String::from("halley-");
    for b in raw {
        let _ = write!(out, "{b:02x}");
    }
    Ok(out.into())
}

/// The message as one part, encoded once per message.
pub fn part<'m>(msg: &'m Message, ctx: &StreamCtx) -> &'m Bytes {
    msg.encoded(Wire::MultipartPart, |msg| Bytes::from(encode(msg, ctx)))
}

/// The part, uncached (the chunked path caches it as an HTTP chunk instead).
pub(super) fn encode(msg: &Message, ctx: &StreamCtx) -> Vec<u8> {
    let delimiter = format!("--{}", ctx.boundary);
    let content_type = msg.content_type.as_deref().unwrap_or("application/octet-stream");
    let mut head = format!("{delimiter}\r\nContent-Type: {content_type}\r\nX-Message-Id: {}\r\n", msg.id(ctx.epoch));
    let _ = write!(head, "X-Topic: {}\r\n", msg.topic);
    if let Some(event) = &msg.event {
        let _ = write!(head, "X-Event: {event}\r\n");
    }
    let collides = contains(&msg.data, delimiter.as_bytes());
    if collides {
        head.push_str("Content-Transfer-Encoding: base64\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if collides {
        out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&msg.data).as_bytes());
    } else {
        out.extend_from_slice(&msg.data);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A JSON part (heartbeats and control objects).
pub fn json_part(boundary: &str, json: &str) -> Bytes {
    Bytes::from(format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n{json}\r\n"))
}

/// The heartbeat: a JSON part.
pub fn heartbeat(boundary: &str) -> Bytes {
    json_part(boundary, "{\"type\":\"heartbeat\"}")
}

/// A control object as a JSON part.
pub fn control(boundary: &str, json: &str) -> Bytes {
    json_part(boundary, json)
}

/// Nothing before the first part: its delimiter opens the body.
pub fn preamble() -> Bytes {
    Bytes::new()
}

/// The close delimiter that ends the multipart body.
pub fn epilogue(boundary: &str) -> Bytes {
    Bytes::from(format!("--{boundary}--\r\n"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Epoch;

    fn ctx() -> StreamCtx {
        StreamCtx { epoch: Epoch::from_raw(1).expect("epoch"), boundary: "B0UND".into(), retry_ms: 1000 }
    }

    #[test]
    fn a_part_carries_the_payload_raw_with_its_type() {
        let msg = Message::new(3, Arc::from("/t"), 1, Bytes::from_static(b"{\"a\":1}"))
            .with_content_type(Some("application/json".into()));
        let text = String::from_utf8(part(&msg, &ctx()).to_vec()).expect("utf8");
        assert_eq!(
            text,
            "--B0UND\r\nContent-Type: application/json\r\nX-Message-Id: 1-3\r\nX-Topic: /t\r\n\r\n{\"a\":1}\r\n"
        );
    }

    #[test]
    fn a_payload_containing_the_boundary_is_base64() {
        let msg = Message::new(4, Arc::from("/t"), 1, Bytes::from_static(b"x\r\n--B0UND\r\nevil"));
        let text = String::from_utf8(part(&msg, &ctx()).to_vec()).expect("utf8");
        assert!(text.contains("Content-Transfer-Encoding: base64\r\n"));
        assert_eq!(text.matches("--B0UND").count(), 1, "only the real delimiter: {text}");
    }

    #[test]
    fn boundaries_are_random() {
        assert_ne!(new_boundary().expect("b"), new_boundary().expect("b"));
    }
}
