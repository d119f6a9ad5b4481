//! Bayeux 1.0 (CometD, Faye) at `/cometd`: the protocol core, sans-I/O.
//!
//! This module owns what a Bayeux client says and what it is told: parsing a request's batch
//! of messages (long-polling POST bodies, callback-polling query strings, WebSocket text
//! frames), the per-client [`Session`] state machine (handshake, connect, subscribe,
//! unsubscribe, disconnect, publish, `/service/*` calls, the ack extension), and encoding the
//! reply batch. It reads no clock (callers pass `now_ms`), touches no socket and never talks to
//! the hub: the worker that owns a session turns each [`Outcome`] into hub commands, timers
//! and response bytes. The wire rules are in `/work/shared/specs/bayeux.md` and the Bayeux 1.0
//! specification (section numbers below refer to it).
//!
//! - [`message`]: one message as a client sends it, and the batch parsers.
//! - [`session`]: a handshaken client: subscriptions, cursor, expiry, replies.
//! - [`ack`]: the ack extension's batch numbering and re-send queue.
//! - [`batch`]: a request's batch in order against the session table ([`run_batch`]).
//! - [`round`]: answering a held connect ([`connect_round`]), HTTP bodies and header sets.
//!
//! Replies are `serde_json::Value`s; [`encode_replies`] and [`encode_jsonp`] make the HTTP body.

pub mod ack;
pub mod batch;
pub mod message;
pub mod round;
pub mod session;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::{json, Map, Value};

pub use self::batch::{run_batch, Batch, Held, Host, Refusal};
pub use self::message::{parse_batch, parse_callback_polling, ConnectionType, Message, Subscription};
pub use self::round::{
    connect_round, cors_headers, frame_error, http_body, preflight_headers, reply_headers, ConnectRound, History,
};
pub use self::session::{Outcome, Session, Settings, Snapshot};
use crate::transport::script_safe_json;

/// Most messages in one batch (one request body, one query string, one WebSocket frame).
pub const MAX_BATCH_MESSAGES: usize = 100;
/// Longest `id` accepted, in bytes of its JSON text; it is echoed in every reply.
pub const MAX_ID_LEN: usize = 256;
/// Longest reason in a [`BayeuxError`], in bytes: serde's messages may quote client input.
pub const MAX_REASON_LEN: usize = 200;
/// Shortest well-formed client id, in characters: 128 bits need 22 base62 digits.
pub const MIN_CLIENT_ID_LEN: usize = 22;
/// Longest well-formed client id, in characters.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// The callback-polling callback when the request names none (what the CometD client expects).
pub const DEFAULT_CALLBACK: &str = "jsonpcallback";
/// The protocol version this server speaks (Bayeux 1.0, section 3.2).
pub const VERSION: &str = "1.0";
/// `Content-Type` of a long-polling or WebSocket reply.
pub const CONTENT_TYPE_JSON: &str = "application/json; charset=utf-8";
/// `Content-Type` of a callback-polling reply.
pub const CONTENT_TYPE_JSONP: &str = "text/javascript; charset=utf-8";
/// `Content-Type` the worker gives a Bayeux publish, so every surface embeds its `data` as JSON.
pub const PUBLISH_CONTENT_TYPE: &str = "application/json";
/// `advice.interval` after a refused handshake, in milliseconds: how long a client waits before
/// handshaking again when the server turned it away (overload, policy).
pub const HANDSHAKE_RETRY_INTERVAL_MS: u64 = 1000;

/// A request that is not a Bayeux batch at all; the worker answers it with this HTTP status and
/// reason instead of a Bayeux reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BayeuxError {
    pub status: u16,
    pub reason: String,
}

impl BayeuxError {
    /// A 400 with `reason` cut to [`MAX_REASON_LEN`] bytes at a character boundary.
    pub(crate) fn bad_request(reason: impl Into<String>) -> BayeuxError {
        let mut reason = reason.into();
        let cut = crate::prefix_within(&reason, MAX_REASON_LEN).len();
        reason.truncate(cut);
        BayeuxError { status: 400, reason }
    }
}

impl From<BayeuxError> for crate::http::Reject {
    fn from(e: BayeuxError) -> crate::http::Reject {
        crate::http::Reject::new(e.status, e.reason)
    }
}

impl fmt::Display for BayeuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for BayeuxError {}

/// Whether `s` can be a client id this server issued: ASCII letters and digits only, between
/// [`MIN_CLIENT_ID_LEN`] and [`MAX_CLIENT_ID_LEN`] characters. A quick reject before looking a
/// session up; the worker's own id format decides the rest.
pub fn is_well_formed_client_id(s: &str) -> bool {
    (MIN_CLIENT_ID_LEN..=MAX_CLIENT_ID_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The reply to a message whose `clientId` names no live session (unknown, expired or
/// disconnected): `402::Unknown client` with advice to handshake again at once. Clients
/// reconnect by the advice, not by the code (spec item 6).
pub fn unknown_client(msg: &Message) -> Value {
    let mut reply = base_reply(msg, None, false);
    reply.insert("error".into(), Value::String(error_text(402, &[], "Unknown client")));
    reply.insert("advice".into(), json!({"reconnect": "handshake", "interval": 0}));
    Value::Object(reply)
}

/// A refused handshake (server full, policy): `error` is the whole Bayeux error string
/// (`code:args:message`, see [`error_text`]); the advice is to handshake again after
/// [`HANDSHAKE_RETRY_INTERVAL_MS`].
pub fn handshake_error(msg: &Message, reason: &str) -> Value {
    let mut reply = base_reply(msg, None, false);
    reply.insert("error".into(), Value::String(reason.to_owned()));
    reply.insert("advice".into(), json!({"reconnect": "handshake", "interval": HANDSHAKE_RETRY_INTERVAL_MS}));
    Value::Object(reply)
}

/// A Bayeux error string, `code:args:message` (section 3.12): `args` joined by `,`.
/// `error_text(403, &["xj3s", "/foo"], "Subscription denied")` is `403:xj3s,/foo:Subscription denied`.
pub fn error_text(code: u16, args: &[&str], message: &str) -> String {
    format!("{code}:{}:{message}", args.join(","))
}

/// The whole body of a long-polling (or WebSocket) reply: the replies as one JSON array.
pub fn encode_replies(replies: &[Value]) -> Vec<u8> {
    // Serialising a Value into a Vec cannot fail (string keys, no I/O); an empty batch is the
    // harmless fallback if it ever did.
    serde_json::to_vec(replies).unwrap_or_else(|_| b"[]".to_vec())
}

/// The whole body of a callback-polling reply: `/**/<callback>([...]);`. `callback` must have
/// passed `crate::transport::valid_callback` ([`parse_callback_polling`] checks it). The JSON is
/// made script-safe (no `</script>`, no U+2028), and the leading comment keeps the first bytes
/// from being sniffed as anything but script (a callback name alone is a Rosetta-Flash
/// alphabet).
pub fn encode_jsonp(callback: &str, replies: &[Value]) -> Vec<u8> {
    wrap_jsonp(callback, &encode_replies(replies))
}

/// One element of a reply array: a reply built for this request, or an event encoded once and
/// shared by every subscriber it goes to ([`Session::delivery_events`]).
#[derive(Debug, Clone)]
pub enum Piece {
    Reply(Value),
    Event(bytes::Bytes),
}

/// [`encode_replies`] for a reply that carries shared events: the pieces as one JSON array,
/// the events' bytes spliced in as they are.
pub fn encode_pieces(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        64 + pieces.iter().map(|p| if let Piece::Event(e) = p { e.len() } else { 128 }).sum::<usize>(),
    );
    out.push(b'[');
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match piece {
            // As in `encode_replies`, writing a Value into a Vec cannot fail.
            Piece::Reply(reply) => drop(serde_json::to_writer(&mut out, reply)),
            Piece::Event(event) => out.extend_from_slice(event),
        }
    }
    out.push(b']');
    out
}

/// [`encode_jsonp`] for pieces.
pub fn encode_jsonp_pieces(callback: &str, pieces: &[Piece]) -> Vec<u8> {
    wrap_jsonp(callback, &encode_pieces(pieces))
}

fn wrap_jsonp(callback: &str, json: &[u8]) -> Vec<u8> {
    let json = script_safe_json(json);
    let mut out = Vec::with_capacity(json.len() + callback.len() + 8);
    out.extend_from_slice(b"/**/");
    out.extend_from_slice(callback.as_bytes());
    out.push(b'(');
    out.extend_from_slice(&json);
    out.extend_from_slice(b");");
    out
}

/// What a channel name is (section 2.2): the protocol's own, a request/response service, or a
/// broadcast channel that maps to the Halley topic of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    Meta(Meta),
    /// Under `/meta` but not one of the five meta channels.
    UnknownMeta(&'a str),
    /// `/service` or under it: never broadcast, subscriptions not recorded.
    Service(&'a str),
    Broadcast(&'a str),
}

/// The meta channels (section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Handshake,
    Connect,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

impl Channel<'_> {
    /// Classifies a channel name. Nothing is validated here: a broadcast name may still be an
    /// invalid topic.
    pub fn of(name: &str) -> Channel<'_> {
        match name {
            "/meta/handshake" => Channel::Meta(Meta::Handshake),
            "/meta/connect" => Channel::Meta(Meta::Connect),
            "/meta/subscribe" => Channel::Meta(Meta::Subscribe),
            "/meta/unsubscribe" => Channel::Meta(Meta::Unsubscribe),
            "/meta/disconnect" => Channel::Meta(Meta::Disconnect),
            _ if is_meta(name) => Channel::UnknownMeta(name),
            _ if is_service(name) => Channel::Service(name),
            _ => Channel::Broadcast(name),
        }
    }
}

/// Whether `name` is `/meta` or under it: never broadcast, never subscribable.
pub fn is_meta(name: &str) -> bool {
    under(name, "/meta")
}

/// Whether `name` is `/service` or under it: never broadcast, subscriptions not recorded.
pub fn is_service(name: &str) -> bool {
    under(name, "/service")
}

fn under(name: &str, root: &str) -> bool {
    name.strip_prefix(root).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The fields every reply starts with: the request's `id` (echoed as sent), its `channel`,
/// `clientId` when known, and `successful`.
pub(crate) fn base_reply(msg: &Message, client_id: Option<&str>, successful: bool) -> Map<String, Value> {
    let mut reply = Map::new();
    if let Some(id) = msg.id_value() {
        reply.insert("id".into(), id);
    }
    reply.insert("channel".into(), Value::String(msg.channel.to_string()));
    if let Some(client_id) = client_id {
        reply.insert("clientId".into(), Value::String(client_id.to_owned()));
    }
    reply.insert("successful".into(), Value::Bool(successful));
    reply
}

/// An unsuccessful reply carrying `error`.
pub(crate) fn error_reply(msg: &Message, client_id: Option<&str>, error: String) -> Value {
    let mut reply = base_reply(msg, client_id, false);
    reply.insert("error".into(), Value::String(error));
    Value::Object(reply)
}
