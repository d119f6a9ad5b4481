//! JSONP long-poll: the long-poll reply wrapped in a call, `/**/callback({...});`, served as
//! `application/javascript` for cross-origin `<script src>` polling.
//!
//! The callback name is validated (`super::valid_callback`); message JSON is made script-safe
//! (`super::script_safe_json`); the leading `/**/` keeps the first bytes of the body from being
//! read as anything but script, and the reply carries `X-Content-Type-Options: nosniff`.
//!
//! # Lifecycle
//!
//! A long-poll at every step (see `longpoll.rs`, lifecycle in `server/delivery.rs`); only the
//! body differs:
//! - Subscribe: `transport=jsonp&callback=<name>`. `protocol/native.rs` `select_transport` checks
//!   the name (`checked_callback`; a 400 otherwise), and `server/delivery.rs` `subscribe` →
//!   `park` with `ParkedFormat::Jsonp`. Nothing is sent until the answer.
//! - Wake and timeout: `server/subscriber.rs` `on_wake` / `on_timeout` → `delivery::resume` →
//!   `answer`, which builds the body with `encode` and sends it as `CONTENT_TYPE` with
//!   `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`. The reply cache shares a
//!   reply only between requests with the same callback (`CachedReply::fits`).
//! - Heartbeat, overflow: none. End: the reply ends the request (and the `<script>` element's
//!   load); at shutdown it is answered at once with the cursor, as a long-poll.
//! - Resume: the callback receives the long-poll object; the page adds a new `<script src>` with
//!   `since=` its `next`.

use std::sync::Arc;

use bytes::Bytes;

use super::iframe::script_json;
use super::longpoll::{self, ReplyInfo};
use crate::model::Message;

pub const CONTENT_TYPE: &str = "application/javascript; charset=utf-8";

/// Appends the body slices to `parts` and returns the body length.
pub fn encode(callback: &str, msgs: &[Arc<Message>], info: &ReplyInfo, parts: &mut Vec<Bytes>) -> usize {
    let open = Bytes::from(format!("/**/{callback}("));
    let mut len = open.len();
    parts.push(open);
    len += longpoll::encode_with(msgs, info, parts, |msg| script_json(msg, info.epoch).clone());
    parts.push(Bytes::from_static(b");"));
    len + 2
}
