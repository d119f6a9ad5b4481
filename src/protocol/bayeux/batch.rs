//! One request's batch of messages, processed in order: which message gets which reply, in
//! which order, and which `/meta/connect` is left to hold.
//!
//! A batch acts on the session table as it goes (a handshake makes a session that a later
//! message of the same batch may use; a disconnect removes one). The table, the hub and the
//! connections belong to the worker, so it lends them through [`Host`]; the rules stay here:
//! - a `/meta/handshake` goes to the host, which makes the session;
//! - a message whose `clientId` names no live session gets `402::Unknown client`;
//! - a `/meta/disconnect` after a connect of the same client in the same batch (Faye sends both
//!   when it leaves while a connect is due) answers that connect first: its reply comes before
//!   the disconnect's, since the session still existed when it was sent;
//! - one connect is held per request: a newer one, even of another client, answers the older
//!   at once, so no reply is ever dropped;
//! - the held connect's session is found again by its client id at the end, since a later
//!   message may have removed it (and a handshake reused its key); if it is gone the connect
//!   gets 402 too.

use bytes::Bytes;
use serde_json::Value;

use super::{error_text, unknown_client, Channel, Message, Meta, Outcome};

/// What a batch needs from the worker that owns the sessions. Keys are the host's own.
pub trait Host {
    /// A `/meta/handshake`: makes a session (`Session::new`) and returns the reply, successful
    /// or not.
    fn handshake(&mut self, msg: &Message) -> Value;
    /// The key of the live session `client_id` names.
    fn find(&self, client_id: &str) -> Option<usize>;
    /// Hands `msg` to session `key` (`Session::touch`, then `Session::handle`); `None` when
    /// `key` holds no Bayeux session.
    fn handle(&mut self, key: usize, msg: &Message) -> Option<Outcome>;
    /// Publishes `data` (JSON text) to `topic`, or says why not.
    fn publish(&mut self, topic: Box<str>, data: Bytes) -> Result<(), Refusal>;
    /// Session `key`'s subscriptions changed ([`Outcome::Resubscribed`]): pin the new ones at
    /// the store's head and have its listening connection wait on the new selectors.
    fn resubscribed(&mut self, key: usize);
    /// Session `key` disconnected: answer the connect it holds elsewhere, then remove it.
    fn disconnect(&mut self, key: usize);
    /// Session `key`'s reply to `connect`, answered now without events
    /// (`Session::connect_reply`); `None` when the session is gone.
    fn connect_reply(&mut self, key: usize, connect: &Message) -> Option<Value>;
}

/// What a batch left to do.
#[derive(Debug)]
pub struct Batch {
    /// Replies to send now (or ahead of the held connect's events).
    pub replies: Vec<Value>,
    /// The connect to hold, if any.
    pub held: Option<Held>,
}

/// A `/meta/connect` to hold until there is something to deliver or its time is up.
#[derive(Debug)]
pub struct Held {
    /// The host's key of its session.
    pub session: usize,
    pub connect: Message,
    /// The longest it may be held; 0 answers it at once.
    pub hold_ms: u64,
}

/// Processes `batch` in order against the host's sessions (see the module doc for the rules).
pub fn run_batch(host: &mut impl Host, batch: &[Message]) -> Batch {
    let mut replies = Vec::with_capacity(batch.len());
    let mut held: Option<Held> = None;
    for msg in batch {
        let channel = Channel::of(&msg.channel);
        if channel == Channel::Meta(Meta::Handshake) {
            replies.push(host.handshake(msg));
            continue;
        }
        let Some(key) = msg.client_id.as_deref().and_then(|id| host.find(id)) else {
            replies.push(unknown_client(msg));
            continue;
        };
        if channel == Channel::Meta(Meta::Disconnect) && held.as_ref().is_some_and(|h| h.session == key) {
            if let Some(connect) = held.take() {
                replies.push(answer_now(host, &connect));
            }
        }
        match host.handle(key, msg) {
            None => replies.push(unknown_client(msg)),
            Some(Outcome::Reply(reply)) => replies.push(reply),
            Some(Outcome::Connect { hold_ms }) => {
                if let Some(older) = held.replace(Held { session: key, connect: msg.clone(), hold_ms }) {
                    replies.push(answer_now(host, &older));
                }
            }
            Some(Outcome::Resubscribed(reply)) => {
                host.resubscribed(key);
                replies.push(reply);
            }
            Some(Outcome::Disconnect(reply)) => {
                host.disconnect(key);
                replies.push(reply);
            }
            Some(Outcome::Publish { reply, topic, data }) => {
                replies.push(match host.publish(topic, data) {
                    Ok(()) => reply,
                    Err(refusal) => refused(reply, refusal),
                });
            }
        }
    }
    let held = held.and_then(|h| {
        if h.connect.client_id.as_deref().and_then(|id| host.find(id)) == Some(h.session) {
            return Some(h);
        }
        replies.push(unknown_client(&h.connect));
        None
    });
    Batch { replies, held }
}

/// A connect released by a later message of its own batch: its reply without events.
fn answer_now(host: &mut impl Host, held: &Held) -> Value {
    host.connect_reply(held.session, &held.connect).unwrap_or_else(|| unknown_client(&held.connect))
}

/// Why a host did not publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The hub is too busy to take it; the client may retry.
    Busy,
    /// The page the request came from may not publish (`--cors-publish-origins`).
    Forbidden,
    /// The data sets `p_from`, which only the server sets (a Pushlet sender).
    SenderField,
    /// The token policy refused it: 401 (no, bad or expired token) or 403 (not covered), with
    /// a one-line reason (`crate::auth::Denied`).
    Denied(u16, String),
}

/// A publish reply turned into its refusal.
fn refused(mut reply: Value, refusal: Refusal) -> Value {
    let (code, text) = match &refusal {
        Refusal::Busy => (503, "Server busy, retry later"),
        Refusal::Forbidden => (403, "Origin not allowed to publish"),
        Refusal::SenderField => (400, "p_from is set by the server: publish without it"),
        Refusal::Denied(code, text) => (*code, text.as_str()),
    };
    reply["successful"] = Value::Bool(false);
    reply["error"] = Value::from(error_text(code, &[], text));
    reply
}

#[cfg(test)]
mod tests;
