//! JSONP long-poll: the long-poll reply wrapped in a call, `/**/callback({...});`, served as
//! `application/javascript` for cross-origin `<script src>` polling.
//!
//! The callback name is validated (`super::valid_callback`); message JSON is made script-safe
//! (`super::script_safe_json`); the leading `/**/` keeps the first bytes of the body from being
//! read as anything but script, and the reply carries `X-Content-Type-Options: nosniff`.

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
