//! A handshaken Bayeux client: its subscriptions, its cursor into history, its ack-extension
//! state and its expiry, and the replies to each message it sends.
//!
//! The owning worker creates a session from a handshake ([`Session::new`]), feeds it the
//! client's later messages one by one in batch order ([`Session::handle`]) and acts on each
//! [`Outcome`]: publish to the hub, re-register selectors, hold or answer a connect, remove the
//! session. When it answers a connect it reads history after [`Session::cursor`] for
//! [`Session::selectors`], turns the messages into events with [`Session::deliveries`] and
//! appends [`Session::connect_reply`]. Time comes in as `now_ms` ([`Session::touch`],
//! [`Session::expired`]); the session never reads a clock.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use super::ack::AckState;
use super::message::{ConnectionType, Message, Subscription};
use super::{base_reply, error_reply, error_text, Channel, Meta, VERSION};
use crate::model::{self, validate_topic, Epoch, Selector};

/// Most channels (exact or pattern) one session may be subscribed to.
pub const MAX_SUBSCRIPTIONS: usize = 128;
/// Bayeux `advice.timeout` default, in milliseconds: the spec's example value. It must stay
/// below what clients allow a held connect (CometD: timeout + 10 s; Faye: 1.2 x timeout).
pub const DEFAULT_TIMEOUT_MS: u64 = 20_000;
/// Default `advice.interval`, in milliseconds: reconnect at once.
pub const DEFAULT_INTERVAL_MS: u64 = 0;
/// Default `maxInterval`, in milliseconds: how long a session lives without a connect (CometD's
/// default).
pub const DEFAULT_MAX_INTERVAL_MS: u64 = 10_000;

/// Server policy for every session of one server.
pub struct Settings {
    /// `advice.timeout`: the longest a connect is held, in milliseconds.
    pub timeout_ms: u64,
    /// `advice.interval`: how long a client waits between connects, in milliseconds.
    pub interval_ms: u64,
    /// How long a session survives without a connect, counted from the end of the last one, in
    /// milliseconds.
    pub max_interval_ms: u64,
    /// Whether a client may publish to a broadcast channel (the channel name is the argument).
    pub may_publish: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            interval_ms: DEFAULT_INTERVAL_MS,
            max_interval_ms: DEFAULT_MAX_INTERVAL_MS,
            may_publish: Box::new(|_| true),
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("timeout_ms", &self.timeout_ms)
            .field("interval_ms", &self.interval_ms)
            .field("max_interval_ms", &self.max_interval_ms)
            .finish_non_exhaustive()
    }
}

/// What the worker does after [`Session::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send this reply; nothing else changes (errors, `/service/*` answers, no-op
    /// (un)subscriptions).
    Reply(Value),
    /// Publish `data` (JSON text, content type `super::PUBLISH_CONTENT_TYPE`) to `topic`, and
    /// send `reply`, an acknowledgement without `data` (spec item 5).
    Publish { reply: Value, topic: Box<str>, data: Bytes },
    /// A `/meta/connect`: answer it at once when `hold_ms` is 0 or history has events after the
    /// cursor, else hold it up to `hold_ms`. Its reply is [`Session::connect_reply`], after the
    /// events. Only one connect is held per client: a newer one releases the older.
    Connect { hold_ms: u64 },
    /// Send this reply, then remove the session.
    Disconnect(Value),
    /// Send this reply; the subscriptions changed, so re-register [`Session::selectors`] and
    /// call [`Session::pin_new_subscriptions`] with the store's head.
    Resubscribed(Value),
}

/// One handshaken client. About 150 bytes plus its subscriptions and ack state.
#[derive(Debug)]
pub struct Session {
    client_id: Box<str>,
    subscriptions: Vec<Subscribed>,
    /// Everything on this session's channels up to this seq has been delivered (or skipped).
    cursor: u64,
    /// Present when the handshake enabled the ack extension.
    ack: Option<AckState>,
    connection_type: Option<ConnectionType>,
    /// The latest `touch`, unix milliseconds.
    last_seen_ms: u64,
    /// When the latest connect's hold ends at the latest, unix milliseconds.
    held_until_ms: u64,
    max_interval_ms: u64,
}

mod snapshot;
pub use snapshot::Snapshot;

/// One recorded subscription.
#[derive(Debug)]
struct Subscribed {
    selector: Selector,
    /// Deliver only messages after this seq: what history held before the subscribe is not
    /// the subscriber's. `None` until the worker pins it (then nothing is filtered).
    floor: Option<u64>,
}

impl Session {
    /// Answers a `/meta/handshake` (section 3.1). On success the session, created at `now_ms`,
    /// and the reply; on failure the unsuccessful reply, and no session exists.
    /// `client_id` is the worker's fresh id (see `super::is_well_formed_client_id`).
    pub fn new(
        client_id: Box<str>,
        handshake: &Message,
        settings: &Settings,
        now_ms: u64,
    ) -> Result<(Session, Value), Value> {
        if Channel::of(&handshake.channel) != Channel::Meta(Meta::Handshake) {
            return Err(error_reply(handshake, None, error_text(400, &[&handshake.channel], "Not a handshake")));
        }
        if !version_compatible(handshake) {
            let version = handshake.version.as_deref().unwrap_or("");
            let mut reply = refusal(handshake, error_text(300, &[version], "Version not supported"));
            reply.insert("version".into(), Value::from(VERSION));
            return Err(Value::Object(reply));
        }
        let Some(offered) = &handshake.supported_connection_types else {
            return Err(error_reply(
                handshake,
                None,
                error_text(400, &["supportedConnectionTypes"], "Missing required parameter"),
            ));
        };
        if !offered.iter().any(|t| ConnectionType::parse(t).is_some()) {
            let names: Vec<&str> = offered.iter().map(|t| &**t).take(8).collect();
            let mut reply = refusal(handshake, error_text(301, &names, "Connection types not supported"));
            reply.insert("supportedConnectionTypes".into(), supported_types());
            return Err(Value::Object(reply));
        }
        let ack = (handshake.ext_ack() == Some(Value::Bool(true))).then(AckState::new);
        let session = Session {
            client_id,
            subscriptions: Vec::new(),
            cursor: 0,
            connection_type: None,
            ack,
            last_seen_ms: now_ms,
            held_until_ms: now_ms,
            max_interval_ms: settings.max_interval_ms,
        };
        let mut reply = base_reply(handshake, Some(&session.client_id), true);
        reply.insert("version".into(), Value::from(VERSION));
        reply.insert("supportedConnectionTypes".into(), supported_types());
        reply.insert("advice".into(), advice(settings));
        if session.ack.is_some() {
            reply.insert("ext".into(), json!({"ack": true}));
        }
        Ok((session, Value::Object(reply)))
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The recorded subscriptions as hub selectors: `/a/b` is exact, `/a/*` and `/a/**` are
    /// patterns with the same meaning in Halley (section 2.2.2).
    pub fn selectors(&self) -> Vec<Selector> {
        self.subscriptions.iter().map(|s| s.selector.clone()).collect()
    }

    /// Everything on this session's channels up to this seq has been delivered.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Sets the cursor: a fresh session's starting point (the store's head), or the head read at
    /// when a connect found nothing, so a later subscribe does not reach back into history.
    pub fn set_cursor(&mut self, seq: u64) {
        self.cursor = seq;
    }

    /// Subscriptions added since the last call only get messages after `head` (the store's
    /// head now): history from before a subscribe is not delivered.
    pub fn pin_new_subscriptions(&mut self, head: u64) {
        for sub in self.subscriptions.iter_mut().filter(|s| s.floor.is_none()) {
            sub.floor = Some(head);
        }
    }

    /// The connection type of the latest connect.
    pub fn connection_type(&self) -> Option<ConnectionType> {
        self.connection_type
    }

    /// Whether the handshake enabled the ack extension.
    pub fn ack_enabled(&self) -> bool {
        self.ack.is_some()
    }

    /// Messages the ack extension could no longer keep for re-sending (its bound).
    pub fn ack_dropped(&self) -> u64 {
        self.ack.as_ref().map_or(0, AckState::dropped)
    }

    /// The client was heard from at `now_ms`: call on every message, before [`Session::handle`],
    /// and when a held connect ends.
    pub fn touch(&mut self, now_ms: u64) {
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
    }

    /// The held connect is over at `now_ms` (answered, or its connection went away): the
    /// session's `maxInterval` runs from now, not from the end of the hold it was promised.
    pub fn connect_ended(&mut self, now_ms: u64) {
        self.touch(now_ms);
        self.held_until_ms = self.held_until_ms.min(self.last_seen_ms);
    }

    /// When the session expires if nothing more is heard (unix milliseconds): `maxInterval`
    /// after the later of the last touch and the end of the latest connect's hold.
    pub fn expires_at(&self) -> u64 {
        self.last_seen_ms.max(self.held_until_ms).saturating_add(self.max_interval_ms)
    }

    /// Whether the session has expired by `now_ms`; the worker then removes it, and the client's
    /// next message gets `super::unknown_client`.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms > self.expires_at()
    }

    /// Handles one non-handshake message of this client, in batch order.
    pub fn handle(&mut self, msg: &Message, settings: &Settings) -> Outcome {
        if msg.client_id.as_deref() != Some(&*self.client_id) {
            return Outcome::Reply(super::unknown_client(msg));
        }
        match Channel::of(&msg.channel) {
            Channel::Meta(Meta::Handshake) => {
                // The worker routes handshakes to `Session::new`; one here is a worker bug.
                Outcome::Reply(self.error(msg, error_text(400, &[], "Handshake on an existing session")))
            }
            Channel::Meta(Meta::Connect) => self.connect(msg, settings),
            Channel::Meta(Meta::Subscribe) => self.subscribe(msg),
            Channel::Meta(Meta::Unsubscribe) => self.unsubscribe(msg),
            Channel::Meta(Meta::Disconnect) => {
                Outcome::Disconnect(Value::Object(base_reply(msg, Some(&self.client_id), true)))
            }
            Channel::UnknownMeta(name) => Outcome::Reply(self.error(msg, error_text(404, &[name], "Unknown channel"))),
            Channel::Service(name) => Outcome::Reply(self.service(msg, name)),
            Channel::Broadcast(name) => self.publish(msg, name, settings),
        }
    }

    /// The events for a connect reply, from `msgs` (history read after the cursor for this
    /// session's selectors, in seq order): `{"channel":<topic>,"data":<payload>,"id":<id>}`
    /// each, the payload embedded as JSON when it is JSON, else as a string (base64 with
    /// `ext.encoding` for binary). Messages on `/meta` or `/service` topics, or that no
    /// subscription wants any more, are skipped; the cursor moves past all of them. With the
    /// ack extension, un-acknowledged events are re-sent first and the whole lot is kept
    /// until acknowledged. Call it before every [`Session::connect_reply`], even with no
    /// messages.
    pub fn deliveries(&mut self, msgs: &[Arc<model::Message>], epoch: Epoch) -> Vec<Value> {
        self.take_deliveries(msgs).iter().map(|msg| event(msg, epoch)).collect()
    }

    /// [`Session::deliveries`], each event encoded once per message (`model::Wire::BayeuxEvent`:
    /// an event has no per-session field) and shared by every session it goes to.
    pub fn delivery_events(&mut self, msgs: &[Arc<model::Message>], epoch: Epoch) -> Vec<Bytes> {
        let encode = |msg: &model::Message| Bytes::from(serde_json::to_vec(&event(msg, epoch)).unwrap_or_default());
        self.take_deliveries(msgs).iter().map(|msg| msg.encoded(model::Wire::BayeuxEvent, encode).clone()).collect()
    }

    /// Moves the cursor past `msgs` and returns those to deliver now (re-sends first).
    fn take_deliveries(&mut self, msgs: &[Arc<model::Message>]) -> Vec<Arc<model::Message>> {
        let mut fresh = Vec::with_capacity(msgs.len());
        for msg in msgs {
            self.cursor = self.cursor.max(msg.seq);
            if self.wants(msg) {
                fresh.push(msg.clone());
            }
        }
        match &mut self.ack {
            Some(ack) => ack.deliver(fresh),
            None => fresh,
        }
    }

    /// The reply to a connect being answered (after its events): successful, with the advice,
    /// and with the ack extension the batch number (`ext.ack`).
    pub fn connect_reply(&mut self, connect: &Message, settings: &Settings) -> Value {
        let mut reply = base_reply(connect, Some(&self.client_id), true);
        reply.insert("advice".into(), advice(settings));
        if let Some(ack) = &mut self.ack {
            reply.insert("ext".into(), json!({"ack": ack.close_batch()}));
        }
        Value::Object(reply)
    }

    /// `/meta/connect` (section 3.3): checks the connection type, settles acknowledgements and
    /// decides how long to hold.
    fn connect(&mut self, msg: &Message, settings: &Settings) -> Outcome {
        let Some(name) = msg.connection_type.as_deref() else {
            return Outcome::Reply(self.error(msg, error_text(400, &["connectionType"], "Missing required parameter")));
        };
        let Some(connection_type) = ConnectionType::parse(name) else {
            return Outcome::Reply(self.error(msg, error_text(301, &[name], "Connection type not supported")));
        };
        self.connection_type = Some(connection_type);
        let resend = match &mut self.ack {
            Some(ack) => ack.on_connect(msg.ext_ack().and_then(|v| v.as_i64())),
            None => false,
        };
        // A client's own timeout (0 on a first connect or a batched one, spec item 3) is
        // honoured when it is shorter than ours; lost events are re-sent at once.
        let hold_ms = match msg.advice_timeout() {
            _ if resend => 0,
            Some(client) => client.min(settings.timeout_ms),
            None => settings.timeout_ms,
        };
        self.held_until_ms = self.held_until_ms.max(self.last_seen_ms.saturating_add(hold_ms));
        Outcome::Connect { hold_ms }
    }

    /// `/meta/subscribe` (section 3.5): all channels are checked first, so a refused one leaves
    /// the subscriptions as they were.
    fn subscribe(&mut self, msg: &Message) -> Outcome {
        let Some(subscription) = &msg.subscription else {
            return Outcome::Reply(self.error(msg, error_text(400, &["subscription"], "Missing required parameter")));
        };
        if let Some(error) = self.too_many(subscription) {
            return Outcome::Reply(self.subscription_error(msg, subscription, error));
        }
        let mut wanted = Vec::new();
        for channel in subscription.channels() {
            match subscribable(channel) {
                Ok(Some(selector)) => {
                    if !wanted.contains(&selector) && !self.subscriptions.iter().any(|have| have.selector == selector) {
                        wanted.push(selector);
                    }
                }
                Ok(None) => {}
                Err(error) => return Outcome::Reply(self.subscription_error(msg, subscription, error)),
            }
        }
        if self.subscriptions.len() + wanted.len() > MAX_SUBSCRIPTIONS {
            let error = error_text(403, &[&self.client_id], "Too many subscriptions");
            return Outcome::Reply(self.subscription_error(msg, subscription, error));
        }
        let changed = !wanted.is_empty();
        self.subscriptions.extend(wanted.into_iter().map(|selector| Subscribed { selector, floor: None }));
        let reply = self.subscription_reply(msg, subscription);
        if changed {
            Outcome::Resubscribed(reply)
        } else {
            Outcome::Reply(reply)
        }
    }

    /// `/meta/unsubscribe` (section 3.6): unsubscribing from a channel not subscribed succeeds.
    fn unsubscribe(&mut self, msg: &Message) -> Outcome {
        let Some(subscription) = &msg.subscription else {
            return Outcome::Reply(self.error(msg, error_text(400, &["subscription"], "Missing required parameter")));
        };
        if let Some(error) = self.too_many(subscription) {
            return Outcome::Reply(self.subscription_error(msg, subscription, error));
        }
        let mut drop = Vec::new();
        for channel in subscription.channels() {
            match subscribable(channel) {
                Ok(Some(selector)) => drop.push(selector),
                Ok(None) => {}
                Err(error) => return Outcome::Reply(self.subscription_error(msg, subscription, error)),
            }
        }
        let before = self.subscriptions.len();
        self.subscriptions.retain(|s| !drop.contains(&s.selector));
        let reply = self.subscription_reply(msg, subscription);
        if self.subscriptions.len() != before {
            Outcome::Resubscribed(reply)
        } else {
            Outcome::Reply(reply)
        }
    }

    /// A publish to a broadcast channel (section 3.7): the channel is the topic.
    fn publish(&self, msg: &Message, channel: &str, settings: &Settings) -> Outcome {
        if let Err(e) = validate_topic(channel) {
            return Outcome::Reply(self.error(msg, error_text(400, &[channel], &format!("Invalid channel: {e}"))));
        }
        if !(settings.may_publish)(channel) {
            return Outcome::Reply(self.error(msg, error_text(403, &[channel], "Publish denied")));
        }
        // A publish without data publishes `null`: still an event to subscribers.
        let data = msg
            .data
            .as_deref()
            .map_or_else(|| Bytes::from_static(b"null"), |raw| Bytes::copy_from_slice(raw.get().as_bytes()));
        let reply = Value::Object(base_reply(msg, Some(&self.client_id), true));
        Outcome::Publish { reply, topic: channel.into(), data }
    }

    /// A `/service/*` call: answered here, never broadcast.
    fn service(&self, msg: &Message, channel: &str) -> Value {
        match channel {
            "/service/echo" => {
                // A remote call's reply carries the call's id, `successful` and `data`; the
                // CometD client matches it by id.
                let mut reply = base_reply(msg, Some(&self.client_id), true);
                reply.insert("data".into(), msg.data_value().unwrap_or(Value::Null));
                Value::Object(reply)
            }
            _ => self.error(msg, error_text(404, &[channel], "Unknown service")),
        }
    }

    /// Whether a message read from history goes to this client.
    fn wants(&self, msg: &model::Message) -> bool {
        !super::is_meta(&msg.topic)
            && !super::is_service(&msg.topic)
            && self
                .subscriptions
                .iter()
                .any(|s| s.floor.is_none_or(|floor| msg.seq > floor) && s.selector.matches(&msg.topic))
    }

    /// A (un)subscribe naming more channels than a session may hold is refused before any
    /// work proportional to it.
    fn too_many(&self, subscription: &Subscription) -> Option<String> {
        (subscription.channels().len() > MAX_SUBSCRIPTIONS)
            .then(|| error_text(403, &[&self.client_id], "Too many subscriptions"))
    }

    fn error(&self, msg: &Message, error: String) -> Value {
        error_reply(msg, Some(&self.client_id), error)
    }

    fn subscription_reply(&self, msg: &Message, subscription: &Subscription) -> Value {
        let mut reply = base_reply(msg, Some(&self.client_id), true);
        reply.insert("subscription".into(), subscription.to_value());
        Value::Object(reply)
    }

    /// A `/meta/subscribe` refused before the session looked at it (the server's rate limit on
    /// subscription changes): `successful: false` with `error`, the subscription echoed.
    pub fn refuse_subscribe(&self, msg: &Message, error: String) -> Value {
        match &msg.subscription {
            Some(subscription) => self.subscription_error(msg, subscription, error),
            None => self.error(msg, error),
        }
    }

    fn subscription_error(&self, msg: &Message, subscription: &Subscription, error: String) -> Value {
        let mut reply = base_reply(msg, Some(&self.client_id), false);
        reply.insert("subscription".into(), subscription.to_value());
        reply.insert("error".into(), Value::String(error));
        Value::Object(reply)
    }
}

/// Checks a channel a client (un)subscribes: `Ok(Some)` a selector to record, `Ok(None)` a
/// service channel (accepted, not recorded), `Err` the Bayeux error. Wildcards are whole
/// trailing segments only (`/a/*`, `/a/**`, section 2.2.2); `/meta` is never subscribable and
/// `/service` never as a pattern.
fn subscribable(channel: &str) -> Result<Option<Selector>, String> {
    if super::is_meta(channel) {
        return Err(error_text(403, &[channel], "Subscription denied"));
    }
    if super::is_service(channel) {
        if channel.contains('*') {
            return Err(error_text(403, &[channel], "Subscription denied"));
        }
        return match validate_topic(channel) {
            Ok(()) => Ok(None),
            Err(e) => Err(error_text(400, &[channel], &format!("Invalid channel: {e}"))),
        };
    }
    let selector =
        Selector::parse(channel).map_err(|e| error_text(400, &[channel], &format!("Invalid channel: {e}")))?;
    let leading = channel.rsplit_once('/').map_or("", |(leading, _)| leading);
    if leading.contains('*') {
        return Err(error_text(400, &[channel], "Invalid channel: wildcards only as the last segment"));
    }
    Ok(Some(selector))
}

/// One event for a subscriber (section 3.8: channel, data, id).
fn event(msg: &model::Message, epoch: Epoch) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("channel".into(), Value::String(msg.topic.to_string()));
    let data = if msg.data_is_json() {
        serde_json::from_slice(&msg.data).ok()
    } else {
        std::str::from_utf8(&msg.data).ok().map(|text| Value::String(text.to_owned()))
    };
    match data {
        Some(data) => {
            out.insert("data".into(), data);
        }
        None => {
            out.insert("data".into(), Value::String(base64::engine::general_purpose::STANDARD.encode(&msg.data)));
            out.insert("ext".into(), json!({"encoding": "base64"}));
        }
    }
    out.insert("id".into(), Value::String(msg.id(epoch).to_string()));
    Value::Object(out)
}

/// `advice` for handshake and connect replies (section 3.10).
fn advice(settings: &Settings) -> Value {
    json!({"reconnect": "retry", "interval": settings.interval_ms, "timeout": settings.timeout_ms})
}

fn supported_types() -> Value {
    Value::Array(ConnectionType::ALL.iter().map(|t| Value::from(t.as_str())).collect())
}

/// A handshake refused for good: the client must not retry as it is.
fn refusal(msg: &Message, error: String) -> serde_json::Map<String, Value> {
    let mut reply = base_reply(msg, None, false);
    reply.insert("error".into(), Value::String(error));
    reply.insert("advice".into(), json!({"reconnect": "none"}));
    reply
}

/// Bayeux 1.0: a client speaks version 1 (`"1.0"`, `"1.0beta"`), or says it can go down to it
/// (`minimumVersion`). No version at all is taken as 1.0.
fn version_compatible(msg: &Message) -> bool {
    fn major(v: &str) -> Option<u64> {
        let digits = v.find(|c: char| !c.is_ascii_digit()).and_then(|end| v.get(..end)).unwrap_or(v);
        digits.parse().ok()
    }
    match msg.version.as_deref() {
        None => true,
        Some(v) if major(v) == Some(1) => true,
        Some(_) => msg.minimum_version.as_deref().and_then(major).is_some_and(|m| m <= 1),
    }
}
