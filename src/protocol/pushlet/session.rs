//! One Pushlet session's state and the protocol rules: what each `p_event` does to a session,
//! which events it answers with, which topics it selects, and how a stored message becomes its
//! `data` event. No I/O: the worker that owns the session acts on the returned [`Step`].
//!
//! A session holds subscriptions (subjects, a shared `p_sid`, an optional `p_label`) and a
//! cursor into topic history, never copies of events; its data events are made from history
//! when they are delivered. Subjects match by whole segments (`/stocks` selects `/stocks` and
//! `/stocks/aex`, not `/stocksX`; the original matched raw string prefixes).
//!
//! A session has two names. Its id (`p_id`) is a capability: whoever holds it can listen,
//! refresh, subscribe, publish and leave as that session, so it goes only to the session's own
//! client. Its public id is what others see: the `p_from` of its publishes, and what a `p_to`
//! unicast names. Unicasts go to the session's private topic `/pushlet/to/<public id>`, which
//! only its own listen can read (see `model::topic`: no client may name it, no pattern
//! matches it).

use std::ops::RangeInclusive;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;

use super::{quote, valid_name, Command, Event, Format, Mode, Request, MAX_FIELDS};
use crate::model::{private_topic, validate_topic, Message, Selector, MAX_TOPIC_LEN, PRIVATE_PREFIX};

/// Most subjects one session may be subscribed to, over all its subscriptions; also the most
/// subjects one `publish` may name.
pub const MAX_SUBJECTS: usize = 32;
/// Longest `p_label`, in bytes: labels are kept with the session for its lifetime.
pub const MAX_LABEL_LEN: usize = 256;
/// Topics under this prefix are private: `/pushlet/to/<public id>` reaches that session only.
pub const UNICAST_PREFIX: &str = PRIVATE_PREFIX;
/// The content type of the message a Pushlet `publish` becomes.
pub const PUBLISH_CONTENT_TYPE: &str = "application/json";
/// The `p_wait` range of a pull round, in milliseconds (the original's 2-6 s).
pub const PULL_WAIT_MS: RangeInclusive<u64> = 2_000..=6_000;
/// The `p_wait` range of a poll round, in milliseconds (the original's 6-10 s).
pub const POLL_WAIT_MS: RangeInclusive<u64> = 6_000..=10_000;

/// One session. Created by the worker at `join`/`join-listen` with an id and a public id it
/// made (both from the CSPRNG, unrelated to each other) and the join's format.
#[derive(Debug)]
pub struct Session {
    id: Box<str>,
    /// The sender identity others see (`p_from`) and the name `p_to` addresses; never the id.
    public_id: Box<str>,
    format: Format,
    mode: Mode,
    subs: Vec<Subscription>,
    listening: bool,
    cursor: u64,
    /// The number of the next subscription id; ids are never reused within a session.
    next_sid: u64,
    /// `Selector::Exact("/pushlet/to/<public id>")`.
    unicast: Selector,
}

/// What the worker must do after [`Session::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer now with these events (e.g. subscribe-ack, hb-ack, unsubscribe-ack, nack).
    Reply(Vec<Event>),
    /// Answer `reply` now and publish `body` (a JSON object of the event's non-`p_` fields plus
    /// `p_from=<public id>`, content type [`PUBLISH_CONTENT_TYPE`]) to each topic in `topics`
    /// (the comma-separated `p_subject`, or the single private topic `/pushlet/to/<p_to>`).
    /// Only this step may carry a `p_from` or a private topic: the worker publishes it as the
    /// server's own, where every other publish path refuses both.
    /// `event` is the message's event name: always `None`, since a Pushlet event has no name
    /// beyond `p_event`, and a named event would be hidden from SSE `onmessage` subscribers.
    Publish { reply: Vec<Event>, topics: Vec<Box<str>>, body: Bytes, event: Option<Box<str>> },
    /// Start (or continue) delivery on this connection: `ack` first (listen-ack or
    /// join-listen-ack), then per the session's mode: Stream = a streaming response (an `hb`
    /// at once); Pull/Poll = a refresh round.
    Listen { ack: Vec<Event> },
    /// A pull/poll round (`p_event=refresh`): [`refresh_ack`], queued data (or an `hb` after
    /// the read timeout; poll: at once), then the `refresh` event ([`refresh_event`]).
    Refresh,
    /// The session ends: answer these (leave-ack) and release its parked or streaming listen.
    Leave(Vec<Event>),
    /// Subscriptions changed: answer these, and have an open listen re-read with the new
    /// [`Session::selectors`].
    Resubscribed(Vec<Event>),
}

impl Session {
    /// A new session with no subscriptions, in stream mode, not listening, cursor 0.
    /// `public_id` must be one topic segment (the worker's are hex).
    pub fn new(id: Box<str>, public_id: Box<str>, format: Format) -> Session {
        let unicast = Selector::Exact(Arc::from(format!("{UNICAST_PREFIX}{public_id}")));
        Session {
            id,
            public_id,
            format,
            mode: Mode::default(),
            subs: Vec::new(),
            listening: false,
            cursor: 0,
            next_sid: 1,
            unicast,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name others see in `p_from` and address with `p_to`.
    pub fn public_id(&self) -> &str {
        &self.public_id
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether a listen has started: events reach a session only after `listen`.
    pub fn listening(&self) -> bool {
        self.listening
    }

    /// The history sequence number this session has been given everything up to.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn set_cursor(&mut self, seq: u64) {
        self.cursor = seq;
    }

    /// Every subscribed subject as selectors for the store: a subject S selects S itself and
    /// everything below it by whole segments (`Exact(S)` and `S/**`; the subject `/` is `/**`),
    /// plus the session's private unicast topic. No duplicates.
    ///
    /// No pattern reads another session's unicast topic (`model::topic`), and
    /// [`Session::data_event`], which the worker applies to everything it reads, checks again.
    pub fn selectors(&self) -> Vec<Selector> {
        let mut out = vec![self.unicast.clone()];
        for subject in self.subs.iter().flat_map(|sub| sub.subjects.iter()) {
            for selector in subject_selectors(subject) {
                if !out.contains(&selector) {
                    out.push(selector);
                }
            }
        }
        out
    }

    /// Applies one request to the session and says what the worker must do. `may_publish(topic)`
    /// is the deployment's client-publish policy. For `join` and `join-listen` the worker first
    /// makes the session (`Session::new`), then calls this for the ack (and the listen).
    pub fn handle(&mut self, req: &Request, may_publish: &dyn Fn(&str) -> bool) -> Step {
        match &req.command {
            Command::Join => Step::Reply(vec![join_ack(self)]),
            Command::JoinListen => self.listen(req, "join-listen-ack"),
            Command::Listen => self.listen(req, "listen-ack"),
            Command::Refresh => self.refresh(req),
            Command::Subscribe => self.subscribe(req),
            Command::Unsubscribe => self.unsubscribe(req),
            Command::Publish => self.publish(req, may_publish),
            Command::Hb => Step::Reply(vec![Event::new("hb-ack")]),
            Command::Leave => {
                self.listening = false;
                self.subs.clear();
                let mut ack = Event::new("leave-ack");
                ack.set("p_id", &self.id);
                Step::Leave(vec![ack])
            }
            // The original ended the session here; an unknown event is the client's mistake,
            // not a reason to lose its subscriptions.
            Command::Unknown(name) => Step::Reply(vec![nack(&format!("unknown p_event {}", quote(name)))]),
        }
    }

    /// The data event for a stored message, or `None` if it is not for this session: no
    /// subscription matches, or it is another session's unicast. Stamped with the first
    /// matching subscription's `p_sid` and `p_label` (a unicast has neither). Fields come from
    /// a JSON object payload (strings as-is, other values as JSON text) when every key is a
    /// [`valid_name`] and there are at most `MAX_FIELDS` of them; otherwise the payload is one
    /// `p_data` field: UTF-8 text as-is, binary as base64 with `p_encoding=base64`. Then
    /// `p_event=data`, `p_subject=<topic>`, `p_id=<this session>`. The fields the server stamps
    /// (`p_event`, `p_id`, `p_subject`, `p_sid`, `p_label`, `p_time`, `p_seq`) are never taken
    /// from the payload, so a publisher cannot forge them; `p_from` is, because only a Pushlet
    /// publish may store one ([`forges_sender`](super::forges_sender) guards the other paths).
    pub fn data_event(&self, msg: &Message) -> Option<Event> {
        let topic: &str = &msg.topic;
        let stamp = if topic.starts_with(UNICAST_PREFIX) {
            if !self.unicast.matches(topic) {
                return None;
            }
            None
        } else {
            let sub = self.subs.iter().find(|sub| sub.subjects.iter().any(|s| subject_matches(s, topic)))?;
            Some(sub)
        };
        let mut ev = Event::new("data");
        payload_fields(msg, &mut ev);
        ev.set("p_subject", topic);
        ev.set("p_id", &self.id);
        if let Some(sub) = stamp {
            ev.set("p_sid", &sub.sid);
            if let Some(label) = &sub.label {
                ev.set("p_label", label);
            }
        }
        Some(ev)
    }

    /// `listen` and `join-listen`: an optional subscription, then mode, format and delivery.
    fn listen(&mut self, req: &Request, kind: &str) -> Step {
        let mut ack = Event::new(kind);
        ack.set("p_id", &self.id);
        if let Some(subjects) = req.event.get("p_subject").filter(|s| !s.is_empty()) {
            match self.add_subscription(subjects, req.event.get("p_label")) {
                Ok(sub) => {
                    ack.set("p_sid", &sub.sid);
                    if let Some(label) = &sub.label {
                        ack.set("p_label", label);
                    }
                }
                Err(reason) => return Step::Reply(vec![nack(&reason)]),
            }
        }
        self.mode = req.mode.unwrap_or(self.mode);
        self.format = req.format.unwrap_or(self.format);
        self.listening = true;
        ack.set("p_mode", self.mode.as_str());
        ack.set("p_format", self.format.as_str());
        Step::Listen { ack: vec![ack] }
    }

    fn refresh(&mut self, req: &Request) -> Step {
        if !self.listening {
            return Step::Reply(vec![nack("refresh before listen")]);
        }
        let mode = req.mode.unwrap_or(self.mode);
        if mode == Mode::Stream {
            return Step::Reply(vec![nack("refresh is for pull and poll modes")]);
        }
        self.mode = mode;
        Step::Refresh
    }

    fn subscribe(&mut self, req: &Request) -> Step {
        let Some(subjects) = req.event.get("p_subject").filter(|s| !s.is_empty()) else {
            return Step::Reply(vec![nack("no subject provided")]);
        };
        let mut ack = Event::new("subscribe-ack");
        ack.set("p_id", &self.id);
        match self.add_subscription(subjects, req.event.get("p_label")) {
            Ok(sub) => {
                ack.set("p_subject", &sub.subjects.join(","));
                ack.set("p_sid", &sub.sid);
                if let Some(label) = &sub.label {
                    ack.set("p_label", label);
                }
                Step::Resubscribed(vec![ack])
            }
            Err(reason) => Step::Reply(vec![nack(&reason)]),
        }
    }

    fn unsubscribe(&mut self, req: &Request) -> Step {
        let mut ack = Event::new("unsubscribe-ack");
        ack.set("p_id", &self.id);
        match req.event.get("p_sid").filter(|s| !s.is_empty()) {
            Some(sid) => {
                let Some(at) = self.subs.iter().position(|sub| *sub.sid == *sid) else {
                    return Step::Reply(vec![nack(&format!("unknown p_sid {}", quote(sid)))]);
                };
                let sub = self.subs.remove(at);
                ack.set("p_sid", &sub.sid);
                ack.set("p_subject", &sub.subjects.join(","));
                if let Some(label) = &sub.label {
                    ack.set("p_label", label);
                }
                Step::Resubscribed(vec![ack])
            }
            None if self.subs.is_empty() => Step::Reply(vec![ack]),
            None => {
                self.subs.clear();
                Step::Resubscribed(vec![ack])
            }
        }
    }

    fn publish(&mut self, req: &Request, may_publish: &dyn Fn(&str) -> bool) -> Step {
        let topics = if let Some(to) = req.event.get("p_to").filter(|s| !s.is_empty()) {
            match private_topic(to) {
                Ok(topic) => vec![Box::from(&*topic)],
                Err(_) => return Step::Reply(vec![nack(&format!("invalid p_to {}", quote(to)))]),
            }
        } else if let Some(list) = req.event.get("p_subject").filter(|s| !s.is_empty()) {
            match publish_topics(list) {
                Ok(topics) => topics,
                Err(reason) => return Step::Reply(vec![nack(&reason)]),
            }
        } else {
            return Step::Reply(vec![nack("no subject provided")]);
        };
        if let Some(refused) = topics.iter().find(|topic| !may_publish(topic)) {
            return Step::Reply(vec![nack(&format!("publishing to {refused} is not allowed"))]);
        }
        let mut body = serde_json::Map::new();
        for (name, value) in req.event.fields().filter(|(name, _)| !name.starts_with("p_")) {
            body.insert(name.to_owned(), Value::String(value.to_owned()));
        }
        body.insert("p_from".to_owned(), Value::String(self.public_id.to_string()));
        let Ok(body) = serde_json::to_vec(&body) else {
            return Step::Reply(vec![nack("the event could not be encoded")]);
        };
        Step::Publish { reply: vec![Event::new("publish-ack")], topics, body: Bytes::from(body), event: None }
    }

    /// Adds one subscription for a comma-separated subject list (the subjects share one sid),
    /// or says why not in a `nack` reason. Changes nothing on error.
    fn add_subscription(&mut self, list: &str, label: Option<&str>) -> Result<&Subscription, String> {
        let label = label.filter(|l| !l.is_empty());
        if label.is_some_and(|l| l.len() > MAX_LABEL_LEN) {
            return Err(format!("p_label too long (at most {MAX_LABEL_LEN} bytes)"));
        }
        let mut subjects: Vec<Box<str>> = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let subject = normalize_subject(item)?;
            if !subjects.contains(&subject) {
                subjects.push(subject);
            }
            let held: usize = self.subs.iter().map(|sub| sub.subjects.len()).sum();
            if held + subjects.len() > MAX_SUBJECTS {
                return Err(format!("too many subjects (at most {MAX_SUBJECTS} per session)"));
            }
        }
        if subjects.is_empty() {
            return Err("no subject provided".to_owned());
        }
        let sid = format!("s{}", self.next_sid).into_boxed_str();
        self.next_sid += 1;
        self.subs.push(Subscription { sid, label: label.map(Box::from), subjects: subjects.into_boxed_slice() });
        // Just pushed, so `last` is Some; the error arm only satisfies the type.
        self.subs.last().ok_or_else(|| "internal error".to_owned())
    }
}

/// A join's answer: `join-ack{p_id, p_format}`.
pub fn join_ack(session: &Session) -> Event {
    let mut ev = Event::new("join-ack");
    ev.set("p_id", session.id());
    ev.set("p_format", session.format().as_str());
    ev
}

/// The first event of a refresh round's reply.
pub fn refresh_ack() -> Event {
    Event::new("refresh-ack")
}

/// The `refresh` event ending a pull/poll reply: `p_wait` (ms; the worker passes a random value
/// from [`PULL_WAIT_MS`] or [`POLL_WAIT_MS`]) and `p_url` `<base>?p_id=<id>&p_event=refresh`
/// (the id form-encoded). In the `js` format it is not pushed but ends the page
/// (`Writer::end_round`).
pub fn refresh_event(session_id: &str, base_path: &str, wait_ms: u64) -> Event {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("p_id", session_id)
        .append_pair("p_event", "refresh")
        .finish();
    let mut ev = Event::new("refresh");
    ev.set("p_wait", &wait_ms.to_string());
    ev.set("p_url", &format!("{base_path}?{query}"));
    ev
}

/// A refusal that keeps the session: `nack{p_reason}`.
pub fn nack(reason: &str) -> Event {
    with_reason("nack", reason)
}

/// The server is ending the session or shutting down: `abort{p_reason}`.
pub fn abort(reason: &str) -> Event {
    with_reason("abort", reason)
}

/// A server-side failure the client must know about, e.g. a session that fell too far
/// behind: `error{p_reason}`.
pub fn error(reason: &str) -> Event {
    with_reason("error", reason)
}

/// A server heartbeat.
pub fn hb() -> Event {
    Event::new("hb")
}

/// One subscription: its subjects share the sid and the label.
#[derive(Debug)]
struct Subscription {
    sid: Box<str>,
    label: Option<Box<str>>,
    subjects: Box<[Box<str>]>,
}

fn with_reason(kind: &str, reason: &str) -> Event {
    let mut ev = Event::new(kind);
    ev.set("p_reason", reason);
    ev
}

/// The selectors a `p_subject` list subscribes to (`S` and `S/**` per subject), for an access
/// check before the subscribe; subjects that are not valid are left out (the subscribe itself
/// refuses them with its `nack`).
pub fn subject_list_selectors(list: &str) -> Vec<Selector> {
    let subjects = list.split(',').map(str::trim).filter(|s| !s.is_empty()).take(MAX_SUBJECTS + 1);
    subjects.filter_map(|item| normalize_subject(item).ok()).flat_map(|s| subject_selectors(&s)).collect()
}

/// A subscribed subject as written by the client, made canonical: one trailing '/' dropped
/// (the original's prefix match made `/a/` and `/a` nearly the same), then a valid topic name,
/// or `/` for everything. Short enough that `S/**` is a valid selector.
fn normalize_subject(item: &str) -> Result<Box<str>, String> {
    let subject = match item.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() && !stripped.ends_with('/') => stripped,
        _ => item,
    };
    if subject != "/" {
        validate_topic(subject).map_err(|e| format!("invalid subject {}: {e}", quote(item)))?;
    }
    if subject.len() + "/**".len() > MAX_TOPIC_LEN {
        return Err(format!("subject too long (at most {} bytes)", MAX_TOPIC_LEN - "/**".len()));
    }
    Ok(subject.into())
}

/// The topics of a `publish`: a comma-separated list of valid topic names, without repeats.
fn publish_topics(list: &str) -> Result<Vec<Box<str>>, String> {
    let mut topics: Vec<Box<str>> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        validate_topic(item).map_err(|e| format!("invalid subject {}: {e}", quote(item)))?;
        if !topics.iter().any(|t| **t == *item) {
            topics.push(item.into());
        }
        if topics.len() > MAX_SUBJECTS {
            return Err(format!("too many subjects (at most {MAX_SUBJECTS})"));
        }
    }
    if topics.is_empty() {
        return Err("no subject provided".to_owned());
    }
    Ok(topics)
}

/// The store selectors for one subject: `Exact(S)` plus `S/**` (none below a subject that
/// already has the most segments a topic may have; the topic `/` does not exist).
fn subject_selectors(subject: &str) -> impl Iterator<Item = Selector> {
    let exact = (subject != "/").then(|| Selector::Exact(Arc::from(subject)));
    let below = if subject == "/" { "/**".to_owned() } else { format!("{subject}/**") };
    exact.into_iter().chain(Selector::parse(&below).ok())
}

/// Whether `topic` is `subject` or below it, by whole segments.
fn subject_matches(subject: &str, topic: &str) -> bool {
    subject == "/" || topic.strip_prefix(subject).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The fields a stored message's payload contributes to a data event (see `data_event`).
fn payload_fields(msg: &Message, ev: &mut Event) {
    const STAMPED: [&str; 7] = ["p_event", "p_id", "p_subject", "p_sid", "p_label", "p_time", "p_seq"];
    // One parse: a JSON content type and data that parses as an object (per subscriber, so no
    // separate validation pass first).
    if msg.is_json() {
        if let Ok(object) = serde_json::from_slice::<serde_json::Map<String, Value>>(&msg.data) {
            if object.len() <= MAX_FIELDS && object.keys().all(|k| valid_name(k)) {
                for (name, value) in object.iter().filter(|(name, _)| !STAMPED.contains(&name.as_str())) {
                    match value {
                        Value::String(s) => ev.set(name, s),
                        other => ev.set(name, &other.to_string()),
                    }
                }
                return;
            }
        }
    }
    match std::str::from_utf8(&msg.data) {
        Ok(text) => ev.set("p_data", text),
        Err(_) => {
            ev.set("p_data", &base64::engine::general_purpose::STANDARD.encode(&msg.data));
            ev.set("p_encoding", "base64");
        }
    }
}

mod snapshot;
pub use snapshot::Snapshot;

#[cfg(test)]
mod tests;
