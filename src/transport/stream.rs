//! XHR / chunked streaming: `application/x-ndjson`, one JSON object per line.
//!
//! Messages are the message JSON (`Message::json`, shared with long-poll); control objects
//! have a `type` key (`heartbeat`, `end`, `overflow`, `gap`). A client reads the response
//! incrementally (XHR `onprogress`, `fetch` streams), splits on `\n`, and after an `end` line
//! reconnects with `?since=<next>`.
//!
//! # Lifecycle
//!
//! The streaming family's life (`server/stream.rs`, timed by `transport/streaming.rs`
//! `StreamLife`) with this file's framing:
//! - Subscribe: `GET /sub/<topics>?transport=stream`. `server/delivery.rs` `subscribe` →
//!   `server/stream.rs` `start` → `open`: the head (200, chunked on HTTP/1.1, close-delimited on
//!   HTTP/1.0, no keep-alive), no `preamble`, a `gap` line if the cursor is from another epoch or
//!   past the head, then `feed` sends what history holds after the cursor.
//! - Wake: `server/subscriber.rs` `on_wake` → `stream::feed`: while `StreamLife::pace` leaves
//!   room, each message is its JSON line, one chunk shared by every subscriber
//!   (`StreamKind::chunk`, `Wire::NdjsonChunk`, from `encode`), or `push_message`'s two slices on
//!   HTTP/1.0. A gap found in history is a `gap` line.
//! - Timeout: `subscriber::on_timeout` → `stream::on_timer` asks `StreamLife::due`: `HEARTBEAT`
//!   every `--heartbeat-interval` (none while output sits at the bound), or the end at
//!   `--stream-max-age`.
//! - Overflow: at the output bound for a heartbeat interval, `stream::overflow` queues an
//!   `{"type":"overflow","next":...}` line after the output the client has not taken, and closes once it is written (or when the client
//!   takes nothing for `bound::NOTICE_WAIT`).
//! - End (age, `--stream-max-bytes` of payload counted in `feed`, shutdown through
//!   `subscriber::answer_now`): `stream::end` queues `control`'s `end` line, no `epilogue`, and
//!   the last chunk (`StreamLife::finish`); the connection closes once that is written.
//! - Resume: reconnect with `?since=<next>` from the `end` or `overflow` line, or with the `id`
//!   of the last message line read.

use bytes::Bytes;

use crate::model::{Epoch, Message};

pub const CONTENT_TYPE: &str = "application/x-ndjson";
pub const HEARTBEAT: &[u8] = b"{\"type\":\"heartbeat\"}\n";

const NEWLINE: &[u8] = b"\n";

/// Nothing comes before the first line.
pub fn preamble() -> Bytes {
    Bytes::new()
}

/// The message's shared JSON and a newline, as two slices (nothing copied).
pub fn push_message(msg: &Message, epoch: Epoch, parts: &mut Vec<Bytes>) {
    parts.push(msg.json(epoch).clone());
    parts.push(Bytes::from_static(NEWLINE));
}

/// The message line, uncached (the chunked path caches it as an HTTP chunk instead).
pub(super) fn encode(msg: &Message, epoch: Epoch) -> Vec<u8> {
    let mut line = msg.json(epoch).to_vec();
    line.extend_from_slice(NEWLINE);
    line
}

/// A control object as one line.
pub fn control(json: &str) -> Bytes {
    Bytes::from(format!("{json}\n"))
}

/// Nothing after the last line: the stream ends with the last chunk, or at close.
pub fn epilogue() -> Bytes {
    Bytes::new()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::transport::Control;

    fn epoch() -> Epoch {
        Epoch::from_raw(12345).expect("epoch")
    }

    #[test]
    fn a_message_is_its_json_and_a_newline_in_both_paths() {
        let msg = Message::new(7, Arc::from("/t"), 1, Bytes::from_static(b"a\nb"));
        let mut parts = Vec::new();
        push_message(&msg, epoch(), &mut parts);
        assert_eq!(parts.concat(), encode(&msg, epoch()));
        let line = encode(&msg, epoch());
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "the payload's newline is escaped");
        let value: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(value["data"], "a\nb");
    }

    #[test]
    fn control_and_heartbeat_lines() {
        let end = Control::End { next: 9 };
        assert_eq!(&control(&end.json(epoch()))[..], b"{\"type\":\"end\",\"next\":\"9ix-9\"}\n");
        let beat: serde_json::Value = serde_json::from_slice(HEARTBEAT).expect("json");
        assert_eq!(beat["type"], "heartbeat");
    }
}
