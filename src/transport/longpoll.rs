//! Long-poll (and poll) reply bodies, as JSON:
//! `{"messages":[<message>,...],"next":"<cursor>"[,"gap":true,"oldest":"<id>"]}`.
//!
//! Each message's JSON is encoded once (`Message::json`) and shared by every subscriber; a
//! reply is a list of slices: a static prefix, the shared message encodings with static
//! separators, and a small suffix holding this subscriber's cursor. The worker writes them
//! with `writev` after the response head, copying nothing.
//!
//! # Lifecycle
//!
//! The parked family's life (`server/delivery.rs`); poll is the same request never parked:
//! - Subscribe: `GET /sub/<topics>` (`transport=longpoll` or nothing; `transport=poll`,
//!   `timeout=0` or `HEAD` make it a poll). `server/delivery.rs` `subscribe` resolves the cursor
//!   (`since=`, else `Last-Event-ID`, else the head) and calls `park`, which tries `answer`
//!   first: if history holds messages or a gap after the cursor, or it is a poll, the reply goes
//!   out at once. Otherwise nothing is sent: `Delivery::watch`, `ConnState::park`, and a timer of
//!   `?timeout=` or `--longpoll-timeout` ±10% (`jittered`).
//! - Wake: `server/subscriber.rs` `on_wake` → `delivery::resume(When::IfAny)` → `answer`: reads
//!   up to `--max-batch` messages after the cursor, `encode` builds the body, and
//!   `Conns::queue_response` queues it after the head (200, `application/json`, `Cache-Control:
//!   no-store`); then `subscriber::retire`. With nothing to say it parks again. Parked requests
//!   woken by one hub turn with the same selectors and cursor share one reply
//!   (`Delivery::answer_from_cache`).
//! - Timeout (the hold is over): `subscriber::on_timeout` → `resume(When::Now)`: 200 with
//!   `"messages":[]` and `next`.
//! - Heartbeat: none; the timeout reply is one. Overflow: none; a request gets one reply.
//! - End: the reply ends the request; a keep-alive connection goes back to Idle for the next
//!   poll. At shutdown `subscriber::on_shutdown` → `answer_now` answers at once with the cursor.
//!   A client that leaves while parked: `server/io.rs` `handle_peer_close` → `close` → `retire`.
//! - Resume: the next request sends `?since=<next>`. A truncated batch (over `--max-batch`) sets
//!   `next` to the last message sent, so that poll returns at once. `"gap":true` (with `oldest`)
//!   says messages after the cursor left history, or the cursor is from another epoch or past the
//!   head; `since=all` never reports one.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use crate::model::{Epoch, Message, MessageId};

const PREFIX: &[u8] = b"\"messages\":[";
const COMMA: &[u8] = b",";

/// What a reply says besides its messages.
#[derive(Debug, Clone, Copy)]
pub struct ReplyInfo {
    pub epoch: Epoch,
    /// The cursor to come back with (`?since=`).
    pub next: u64,
    /// Messages newer than the client's cursor may have been dropped from history.
    pub gap: bool,
    /// With `gap`: the oldest message still available, if any.
    pub oldest: Option<u64>,
}

/// Appends the body slices to `parts` and returns the body length.
pub fn encode(msgs: &[Arc<Message>], info: &ReplyInfo, parts: &mut Vec<Bytes>) -> usize {
    encode_with(msgs, info, parts, |msg| msg.json(info.epoch).clone())
}

/// Like `encode`, with each message's JSON supplied by `json` (JSONP uses a script-safe copy).
pub fn encode_with(
    msgs: &[Arc<Message>],
    info: &ReplyInfo,
    parts: &mut Vec<Bytes>,
    json: impl Fn(&Message) -> Bytes,
) -> usize {
    parts.push(Bytes::from_static(b"{"));
    1 + encode_members(msgs, info, parts, json)
}

/// The reply's members and the closing brace (`"messages":[...],"next":"..."}`), without the
/// opening brace, so a publish reply can carry them after its own members (piggyback).
/// Returns the length pushed.
pub fn encode_members(
    msgs: &[Arc<Message>],
    info: &ReplyInfo,
    parts: &mut Vec<Bytes>,
    json: impl Fn(&Message) -> Bytes,
) -> usize {
    let mut len = PREFIX.len();
    parts.push(Bytes::from_static(PREFIX));
    for (i, msg) in msgs.iter().enumerate() {
        if i > 0 {
            parts.push(Bytes::from_static(COMMA));
            len += COMMA.len();
        }
        let json = json(msg);
        len += json.len();
        parts.push(json);
    }
    let suffix = suffix(info);
    len += suffix.len();
    parts.push(Bytes::from(suffix));
    len
}

fn suffix(info: &ReplyInfo) -> String {
    let mut s = String::with_capacity(64);
    // Ids and cursors are `[0-9a-z-]`, so they need no JSON escaping.
    let _ = write!(s, "],\"next\":\"{}\"", MessageId { epoch: info.epoch, seq: info.next });
    if info.gap {
        s.push_str(",\"gap\":true");
        if let Some(oldest) = info.oldest {
            let _ = write!(s, ",\"oldest\":\"{}\"", MessageId { epoch: info.epoch, seq: oldest });
        }
    }
    s.push('}');
    s
}
