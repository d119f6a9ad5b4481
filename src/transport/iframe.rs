//! Forever iframe (the "htmlfile" transport): a hidden iframe loads a never-ending HTML page,
//! and each message arrives as `<script>parent.<callback>(<json>)</script>`, run by the
//! browser as soon as it is parsed.
//!
//! Old browsers buffer the first kilobyte or so before rendering anything, so the page opens
//! with a padding comment. Message JSON is made script-safe (`super::script_safe_json`) so no
//! payload can close the script element or inject markup; the callback name is validated
//! before the stream starts.
//!
//! # Lifecycle
//!
//! The streaming family's life (`server/stream.rs`, timed by `transport/streaming.rs`
//! `StreamLife`) with this file's framing:
//! - Subscribe: `transport=iframe&callback=<name>`. `protocol/native.rs` `select_transport`
//!   checks the name (a 400 otherwise) and builds this connection's `prefix` once;
//!   `server/delivery.rs` `subscribe` → `server/stream.rs` `start` → `open`: the head (200,
//!   `text/html`, chunked on HTTP/1.1), `preamble` (the document start and `PADDING` bytes of
//!   comment), a `gap` call if the cursor is from another epoch or past the head, then `feed`
//!   sends what history holds.
//! - Wake: `server/subscriber.rs` `on_wake` → `stream::feed` → `push_message`: three slices, this
//!   connection's prefix, the shared script-safe JSON (`script_json`, `Wire::HtmlJson`) and
//!   `)</script>`, framed as one chunk by `StreamLife::push`. The only transport with
//!   per-connection bytes in each frame, so no chunk is shared (`StreamKind::chunk` is None).
//! - Timeout: `subscriber::on_timeout` → `stream::on_timer` asks `StreamLife::due`: `HEARTBEAT`
//!   (`<!-- hb -->`) every `--heartbeat-interval` (none while output sits at the bound), or the
//!   end at `--stream-max-age`.
//! - Overflow: at the output bound for a heartbeat interval, `stream::overflow` queues the
//!   `overflow` object through the callback after the output the client has not taken, and closes once it is written (or when the client
//!   takes nothing for `bound::NOTICE_WAIT`).
//! - End (age, `--stream-max-bytes`, shutdown): `stream::end` queues `control` (the `end` object
//!   through the callback), `epilogue` (`</body></html>`) and the last chunk
//!   (`StreamLife::finish`); the connection closes once that is written.
//! - Resume: the parent page reloads the iframe with `since=` the `next` of the `end` or
//!   `overflow` object, or the `id` of the last message its callback got.

use bytes::Bytes;

use crate::model::{Epoch, Message, Wire};

pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";
pub const HEARTBEAT: &[u8] = b"<!-- hb -->\n";
/// Bytes of padding before the first script.
pub const PADDING: usize = 1024;

const SUFFIX: &[u8] = b")</script>\n";

/// The document start and the padding.
pub fn preamble() -> Bytes {
    let mut out = String::with_capacity(PADDING + 160);
    out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>halley</title></head><body>\n<!-- ");
    out.extend(std::iter::repeat_n(' ', PADDING));
    out.push_str(" -->\n");
    Bytes::from(out)
}

/// `<script>parent.<callback>(` for a validated callback name, built once per connection.
pub fn prefix(callback: &str) -> Bytes {
    Bytes::from(format!("<script>parent.{callback}("))
}

/// The message's script-safe JSON, shared, between this connection's prefix and a fixed suffix.
pub fn push_message(prefix: &Bytes, msg: &Message, epoch: Epoch, parts: &mut Vec<Bytes>) {
    parts.push(prefix.clone());
    parts.push(script_json(msg, epoch).clone());
    parts.push(Bytes::from_static(SUFFIX));
}

/// A control object through the same callback.
pub fn control(prefix: &Bytes, json: &str) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + json.len() + SUFFIX.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&super::script_safe_json(json.as_bytes()));
    out.extend_from_slice(SUFFIX);
    Bytes::from(out)
}

/// The message JSON made safe for a script element, encoded once per message.
pub fn script_json(msg: &Message, epoch: Epoch) -> &Bytes {
    msg.encoded(Wire::HtmlJson, |msg| Bytes::from(super::script_safe_json(msg.json(epoch))))
}

/// Closes the document after the last frame.
pub const EPILOGUE: &[u8] = b"</body></html>\n";

/// `EPILOGUE`, as a slice of the body.
pub fn epilogue() -> Bytes {
    Bytes::from_static(EPILOGUE)
}
