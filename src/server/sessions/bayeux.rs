//! Bayeux 1.0 (CometD, Faye) over HTTP: `long-polling` (POST, JSON array) and
//! `callback-polling` (GET `message=` + `jsonp=`), on `/cometd` and the paths the `cometd`
//! client derives from it.
//!
//! The rules are the sans-I/O core's (`protocol::bayeux`): `run_batch` processes a batch in
//! order, `connect_round` builds a held connect's reply, `round` has the bodies and header
//! sets. This file is the worker's side: sessions live on the worker that created them (the id
//! says which), so a batch for a session owned elsewhere is handed to its owner first; the
//! worker lends its session table, the hub and its connections to the batch (`BatchHost`);
//! and a `/meta/connect` with nothing to deliver is held like a parked long-poll, answered
//! when a message arrives, at its hold time, or at shutdown.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::{Refused, SessionEntry, SessionState};
use crate::auth::{Denied, Grant};
use crate::http::{Reject, Request};
use crate::hub::{system_clock_ms, PublishReq};
use crate::protocol::bayeux::{self, Batch, ConnectRound, Held, History, Outcome, Piece, Refusal};
use crate::server::conn::{BayeuxHold, Cors, DuplexProtocol, Parked, ParkedFormat, Phase, ReplyMeta, Vacated};
use crate::server::conns::Conns;
use crate::server::core::Core;
use crate::server::delivery;
use crate::server::delivery::{Answer, Gaps, When};
use crate::server::dispatch;
use crate::server::duplex;
use crate::server::event_loop::Timer;
use crate::server::io;
use crate::server::session_id;
use crate::server::sessions;
use crate::server::sessions::handoff;
use crate::server::sessions::remote;
use crate::server::subscriber;

/// A request on a Bayeux path.
pub(in crate::server) fn handle(core: &mut Core, key: usize, meta: ReplyMeta, req: Request, body: Vec<u8>) {
    // Bayeux clients send credentials, so an allowed origin is reflected, never `*`.
    let origin = match (req.header_str("origin"), meta.cors) {
        (Some(origin), Cors::Any | Cors::Read(_)) => Some(Box::<str>::from(origin)),
        _ => None,
    };
    if req.wants_upgrade("websocket") {
        // The upgrade checks the origin against the CORS decision itself.
        return upgrade(core, key, meta, &req);
    }
    // Bayeux replies carry their own CORS headers (reflected origin, credentials).
    let meta = ReplyMeta { cors: Cors::None, ..meta };
    if req.method() == crate::http::Method::Options {
        return preflight(&mut core.conns, key, meta, origin.as_deref());
    }
    let parsed = if req.method() == crate::http::Method::Get {
        bayeux::parse_callback_polling(req.query().unwrap_or("")).map(|(batch, cb)| (batch, Some(cb)))
    } else {
        bayeux::parse_batch(&body).map(|batch| (batch, None))
    };
    let (batch, callback) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let headers = bayeux::cors_headers(origin.as_deref());
            return core.conns.refuse(key, meta, Reject::from(e).with_headers(&headers));
        }
    };
    // The session the batch is about; one owned by another worker takes the connection.
    let client = batch.iter().find_map(|m| m.client_id.as_deref());
    if let Some(owner) = client.and_then(|id| sessions::foreign_owner(core, id)) {
        return handoff::hand_off(core, key, owner, req, body, meta);
    }
    // Cluster mode: a session this node does not hold may be in Redis, its node gone.
    if let Some(id) = client.filter(|id| remote::wants_lookup(core, id)).map(str::to_owned) {
        return remote::look_up(core, key, &id, req, body);
    }
    let may_publish = dispatch::may_publish(&core.conns.access, &req);
    // What a handshake without `ext.auth.token` gets: the request's own token, if any.
    let fallback = dispatch::grant_for(core, key, &req).1;
    let mut host = BatchHost { core, key, may_publish, head: 0, fallback, session: None };
    let Batch { replies, held } = bayeux::run_batch(&mut host, &batch);
    let Some(Held { session: skey, connect, hold_ms }) = held else {
        return respond(core, key, meta, &pieces(replies), callback.as_deref(), origin.as_deref());
    };
    // One connect held per client: an older one (on another connection) is superseded.
    if let Some(listener) = core.sessions.listening_conn(skey, &core.conns) {
        supersede_connect(core, listener);
    }
    let Some(SessionState::Bayeux(session)) = core.sessions.slab.get(skey).map(|e| &e.state) else {
        // Only a disconnect removes a session mid-batch, and it answers the held connect
        // first; still, a request is never left without its reply.
        let mut replies = replies;
        replies.push(bayeux::unknown_client(&connect));
        return respond(core, key, meta, &pieces(replies), callback.as_deref(), origin.as_deref());
    };
    let selectors = session.selectors().into_boxed_slice();
    let cursor = session.cursor();
    let hold = BayeuxHold { session: skey, connect, replies, callback, origin };
    let parked = Parked { selectors, cursor, reply: meta, format: ParkedFormat::Bayeux(Box::new(hold)) };
    let when = if hold_ms == 0 { When::Now } else { When::IfAny };
    delivery::park(core, key, parked, when, Gaps::Report, Duration::from_millis(hold_ms));
}

fn handshake(core: &mut Core, key: usize, msg: &bayeux::Message, fallback: &Result<Grant, Denied>) -> Value {
    // The session keeps the rights of the handshake's token (`ext.auth.token`, else the
    // request's); a bad or expired one is refused here, with the status in the error.
    let grant = match msg.ext_auth_token() {
        Some(token) => core.shared.auth.current().resolve(Some(&token), core.conns.peer_ip(key)),
        None => fallback.clone(),
    };
    let grant = match grant {
        Ok(grant) => grant,
        Err(denied) => {
            return bayeux::handshake_error(msg, &bayeux::error_text(denied.status(), &[], &denied.reason()))
        }
    };
    let id = match session_id::new_id(core.id) {
        Ok(id) => id,
        Err(_) => return bayeux::handshake_error(msg, &bayeux::error_text(500, &[], "Cannot make a client id")),
    };
    match bayeux::Session::new(id.clone(), msg, &core.sessions.bayeux, system_clock_ms()) {
        Err(reply) => reply,
        Ok((mut session, reply)) => {
            // A new client hears what is published from now on.
            session.set_cursor(core.shared.store.head());
            let lease = Duration::from_millis(core.sessions.bayeux.max_interval_ms);
            let entry = SessionEntry::new(id, SessionState::Bayeux(Box::new(session)), lease).with_grant(grant);
            let peer = core.conns.peer_ip(key);
            match core.sessions.add(entry, peer, &mut core.conns.timers) {
                Ok(skey) => {
                    remote::save(core, skey);
                    reply
                }
                Err(Refused::Full) => {
                    bayeux::handshake_error(msg, &bayeux::error_text(503, &[], "Too many sessions, retry later"))
                }
                Err(Refused::TooFast) => bayeux::handshake_error(
                    msg,
                    &bayeux::error_text(429, &[], "Too many new sessions from this address, retry later"),
                ),
            }
        }
    }
}

/// A newer connect supersedes a held one: the older gets a plain connect reply without
/// events (which stay for the newer), since its client has already given up on it.
fn supersede_connect(core: &mut Core, key: usize) {
    let Some(conn) = core.conns.get_mut(key) else { return };
    match conn.state.phase() {
        Phase::Parked if conn.state.parked_mut().is_some_and(|p| matches!(p.format, ParkedFormat::Bayeux(_))) => {
            let Some(parked) = conn.state.unpark() else { return };
            let vacated = Vacated::parked(parked);
            subscriber::retire(core, key, &vacated);
            let Some(parked) = vacated.into_parked() else { return };
            let ParkedFormat::Bayeux(hold) = parked.format else { return };
            let mut replies = hold.replies;
            replies.push(connect_reply(core, hold.session, &hold.connect));
            respond(core, key, parked.reply, &pieces(replies), hold.callback.as_deref(), hold.origin.as_deref());
        }
        Phase::Duplex => {
            let Some(duplex) = conn.state.duplex_mut() else { return };
            let DuplexProtocol::Bayeux(socket) = &mut duplex.protocol else { return };
            let (Some(skey), Some((connect, _))) = (socket.session, socket.held.take()) else { return };
            core.sessions.listening_ended(skey, key, &mut core.conns.timers);
            let reply = connect_reply(core, skey, &connect);
            duplex::ws_text(&mut core.conns, key, bayeux::encode_replies(&[reply]));
        }
        _ => {}
    }
    io::pump(core, key);
}

/// The reply of a connect answered at once without events (released by a later message of
/// its own batch): the session's connect reply, or 402 when it is gone.
fn connect_reply(core: &mut Core, skey: usize, connect: &bayeux::Message) -> Value {
    match core.sessions.slab.get_mut(skey).map(|e| &mut e.state) {
        Some(SessionState::Bayeux(session)) => session.connect_reply(connect, &core.sessions.bayeux),
        _ => bayeux::unknown_client(connect),
    }
}

/// The reply of a held HTTP connect. Called by `answer` for `ParkedFormat::Bayeux`.
pub(in crate::server) fn answer(core: &mut Core, key: usize, parked: &Parked, hold: &BayeuxHold, when: When) -> Answer {
    let round = round(core, hold.session, &parked.selectors, parked.cursor, &hold.connect, &hold.replies, when);
    let replies = match round {
        Round::Nothing { head } => return Answer::Nothing { head },
        Round::Replies(replies) => replies,
    };
    core.sessions.listening_ended(hold.session, key, &mut core.conns.timers);
    respond(core, key, parked.reply, &replies, hold.callback.as_deref(), hold.origin.as_deref());
    Answer::Sent
}

/// A connect round (`bayeux::connect_round` says what it carries): reads history after
/// `cursor` and, when the round is answered, renews the session and counts the deliveries.
fn round(
    core: &mut Core,
    skey: usize,
    selectors: &[crate::model::Selector],
    cursor: u64,
    connect: &bayeux::Message,
    earlier: &[Value],
    when: When,
) -> Round {
    let store = std::sync::Arc::clone(&core.shared.store);
    core.delivery.msgs.clear();
    let read = store.read(selectors, cursor, core.shared.config.longpoll.max_batch, &mut core.delivery.msgs);
    let history = History {
        msgs: &core.delivery.msgs,
        epoch: store.epoch(),
        next: read.next_cursor(cursor, &core.delivery.msgs),
    };
    let session = match core.sessions.slab.get_mut(skey) {
        Some(SessionEntry { state: SessionState::Bayeux(session), .. }) => Some(&mut **session),
        _ => None,
    };
    // A truncated read may have stopped at the store's work bound with nothing found yet:
    // answer with the cursor it reached rather than wait on one that would read the same.
    let force = when == When::Now || read.truncated;
    let round =
        bayeux::connect_round(session, history, connect, earlier, force, &core.sessions.bayeux, system_clock_ms());
    match round {
        ConnectRound::Wait => Round::Nothing { head: read.head },
        ConnectRound::Unknown(replies) => Round::Replies(replies),
        ConnectRound::Delivered(replies) => {
            core.sessions.renew(skey, &mut core.conns.timers);
            core.delivery.count_read();
            // The cursor moved: a node adopting the session goes on from here.
            remote::save(core, skey);
            Round::Replies(replies)
        }
    }
}

/// A WebSocket upgrade on a Bayeux path: every frame is then a batch.
/// A token on the upgrade request (cookie, query, header) is what the socket's handshakes
/// fall back to without `ext.auth.token`; a bad one is refused before the upgrade.
fn upgrade(core: &mut Core, key: usize, meta: ReplyMeta, req: &Request) {
    let grant = match dispatch::grant_for(core, key, req).1 {
        Ok(grant) => grant,
        Err(denied) => return core.conns.refuse(key, meta, denied.into()),
    };
    if duplex::upgrade(&mut core.conns, key, meta, req) {
        let may_publish = dispatch::may_publish(&core.conns.access, req);
        duplex::start_bayeux_socket(core, key, may_publish, Some(grant));
    }
}

/// One frame (a batch) on a Bayeux WebSocket. Replies go out at once; a connect is held
/// on the socket until events arrive or its time is up.
pub(in crate::server) fn frame(core: &mut Core, key: usize, text: &str) {
    if core.conns.get(key).is_none_or(|c| c.state.phase() != Phase::Duplex) {
        return; // closing (after a close frame nothing more may be sent)
    }
    let batch = match bayeux::parse_batch(text.as_bytes()) {
        Ok(batch) => batch,
        Err(e) => return duplex::ws_text(&mut core.conns, key, bayeux::frame_error(&e)),
    };
    let client = batch.iter().find_map(|m| m.client_id.as_deref());
    if let Some(owner) = client.and_then(|id| sessions::foreign_owner(core, id)) {
        return handoff::hand_off_socket(core, key, owner, text.to_owned());
    }
    // The page that opened the socket decided, at the upgrade, whether it may publish.
    let socket = core.conns.get(key).and_then(|c| c.state.duplex());
    let may_publish = socket.is_some_and(|d| d.may_publish);
    let fallback = Ok(socket.map_or(Grant::Anonymous, |d| d.grant.clone()));
    let mut host = BatchHost { core, key, may_publish, head: 0, fallback, session: None };
    let Batch { replies, held } = bayeux::run_batch(&mut host, &batch);
    if !replies.is_empty() {
        duplex::ws_text(&mut core.conns, key, bayeux::encode_replies(&replies));
    }
    let Some(Held { session: skey, connect, hold_ms }) = held else { return };
    // This socket now listens for the session; a connect held before (here or on another
    // connection) is superseded.
    supersede_connect(core, key);
    if let Some(listener) = core.sessions.listening_conn(skey, &core.conns) {
        supersede_connect(core, listener);
    }
    let Some(SessionState::Bayeux(session)) = core.sessions.slab.get(skey).map(|e| &e.state) else {
        return duplex::ws_text(&mut core.conns, key, bayeux::encode_replies(&[bayeux::unknown_client(&connect)]));
    };
    let (selectors, cursor) = (session.selectors(), session.cursor());
    let Some(duplex) = core.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) else { return };
    let old = std::mem::replace(&mut duplex.selectors, selectors.clone());
    duplex.cursor = cursor;
    if let DuplexProtocol::Bayeux(socket) = &mut duplex.protocol {
        socket.session = Some(skey);
        socket.held = Some((connect, Instant::now() + Duration::from_millis(hold_ms)));
    }
    core.delivery.unwatch(&mut core.hub, key, &old);
    let head = core.shared.store.head();
    core.delivery.watch(&mut core.hub, key, &selectors, head);
    core.sessions.listen(skey, key);
    socket_round(core, key, if hold_ms == 0 { When::Now } else { When::IfAny });
    duplex::arm_timer(&mut core.conns, key);
}

/// Answers the socket's held connect if there is anything to deliver (or `When::Now`).
pub(in crate::server) fn socket_round(core: &mut Core, key: usize, when: When) {
    let Some(duplex) = core.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) else { return };
    let DuplexProtocol::Bayeux(socket) = &mut duplex.protocol else { return };
    let Some(skey) = socket.session else { return };
    // The held connect and the selectors are lent to the round, not copied: this runs on
    // every wake-up of the socket, most of which find nothing to send.
    let Some((connect, deadline)) = socket.held.take() else { return };
    let (selectors, cursor) = (std::mem::take(&mut duplex.selectors), duplex.cursor);
    let when = if Instant::now() >= deadline { When::Now } else { when };
    let round = round(core, skey, &selectors, cursor, &connect, &[], when);
    let Some(duplex) = core.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) else { return };
    duplex.selectors = selectors;
    let DuplexProtocol::Bayeux(socket) = &mut duplex.protocol else { return };
    let Round::Replies(replies) = round else {
        socket.held = Some((connect, deadline));
        return;
    };
    if let Some(SessionState::Bayeux(session)) = core.sessions.slab.get(skey).map(|e| &e.state) {
        duplex.cursor = session.cursor();
    }
    // The session listens again with its next connect; until then it may expire.
    core.sessions.listening_ended(skey, key, &mut core.conns.timers);
    duplex::ws_text(&mut core.conns, key, bayeux::encode_pieces(&replies));
}

fn respond(
    core: &mut Core,
    key: usize,
    meta: ReplyMeta,
    replies: &[Piece],
    callback: Option<&str>,
    origin: Option<&str>,
) {
    let (body, content_type) = bayeux::http_body(replies, callback);
    core.conns.respond(key, meta, 200, content_type, &bayeux::reply_headers(origin), Bytes::from(body));
}

fn preflight(conns: &mut Conns, key: usize, meta: ReplyMeta, origin: Option<&str>) {
    let Some(origin) = origin else {
        return conns.refuse(key, meta, Reject::forbidden("origin not allowed"));
    };
    conns.respond(key, meta, 204, "", &bayeux::preflight_headers(origin), Bytes::new());
}

/// The session's expiry timer: a Bayeux session lives `maxInterval` past its last connect, and
/// one that never connected lives `--session-join-timeout` (or `maxInterval`, if shorter).
pub(in crate::server) fn expiry(core: &mut Core, skey: usize) {
    let now = system_clock_ms();
    let listening = core.sessions.listening_conn(skey, &core.conns).is_some();
    let Some(entry) = core.sessions.slab.get_mut(skey) else { return };
    let SessionState::Bayeux(session) = &entry.state else { return };
    // Never connected: its timer was the join timeout (`Sessions::renew`), whatever
    // `maxInterval` would allow.
    let never_connected = !entry.used && !listening;
    if !never_connected && (listening || !session.expired(now)) {
        let left = session.expires_at().saturating_sub(now).max(10);
        entry.timer =
            Some(core.conns.timers.insert(Instant::now() + Duration::from_millis(left), Timer::Session(skey)));
        return;
    }
    core.sessions.remove(skey, &mut core.conns.timers);
}

/// The outcome of a connect round, for the core.
enum Round {
    Replies(Vec<Piece>),
    /// Nothing to deliver yet; `head` is the store head the read saw.
    Nothing {
        head: u64,
    },
}

/// Replies built for this request, as pieces of a reply array.
fn pieces(replies: Vec<Value>) -> Vec<Piece> {
    replies.into_iter().map(Piece::Reply).collect()
}

/// The worker's session table, the hub and the listening connections, lent to
/// `bayeux::run_batch` for one batch.
struct BatchHost<'w> {
    core: &'w mut Core,
    /// The connection the batch came on (its peer address is what a handshake is counted
    /// against).
    key: usize,
    /// The page the batch came from may publish (`dispatch::may_publish`).
    may_publish: bool,
    /// The store head read just before the message being handled: a subscription it adds
    /// starts there, so a message sequenced while it was handled is not missed.
    head: u64,
    /// The rights a handshake without `ext.auth.token` gets (the request's or socket's token).
    fallback: Result<Grant, Denied>,
    /// The session of the message being handled: its grant decides a publish.
    session: Option<usize>,
}

impl bayeux::Host for BatchHost<'_> {
    fn handshake(&mut self, msg: &bayeux::Message) -> Value {
        handshake(self.core, self.key, msg, &self.fallback)
    }

    fn find(&self, client_id: &str) -> Option<usize> {
        self.core.sessions.key_of(client_id)
    }

    fn handle(&mut self, key: usize, msg: &bayeux::Message) -> Option<Outcome> {
        let core = &mut *self.core;
        let Some(SessionEntry { state: SessionState::Bayeux(session), changes, grant, .. }) =
            core.sessions.slab.get_mut(key)
        else {
            return None;
        };
        session.touch(system_clock_ms());
        self.head = core.shared.store.head();
        self.session = Some(key);
        if &*msg.channel == "/meta/subscribe" {
            let channels = msg.subscription.as_ref().map_or(&[][..], |s| s.channels());
            // Each channel must be covered by the session's token (or the public patterns); a
            // refused subscribe is answered on its own, the session goes on.
            let policy = core.shared.auth.current();
            for channel in channels {
                let Ok(selector) = crate::model::Selector::parse(channel) else { continue };
                if let Err(denied) = policy.may_subscribe_one(grant, &selector) {
                    let error = bayeux::error_text(denied.status(), &[channel], &denied.reason());
                    return Some(Outcome::Reply(session.refuse_subscribe(msg, error)));
                }
            }
            // Each channel a subscribe names costs a token, as on a native WebSocket.
            if !changes.take(channels.len(), Instant::now()) {
                let error = bayeux::error_text(429, &[], &sessions::too_many_changes());
                return Some(Outcome::Reply(session.refuse_subscribe(msg, error)));
            }
        }
        Some(session.handle(msg, &core.sessions.bayeux))
    }

    fn publish(&mut self, topic: Box<str>, data: Bytes) -> Result<(), Refusal> {
        if !self.may_publish {
            return Err(Refusal::Forbidden);
        }
        let core = &*self.core;
        let grant = self.session.and_then(|key| core.sessions.slab.get(key)).map(|entry| &entry.grant);
        let allowed = core.shared.auth.current().may_publish(grant.unwrap_or(&Grant::Anonymous), &topic);
        if let Err(denied) = allowed {
            return Err(Refusal::Denied(denied.status(), denied.reason().into_owned()));
        }
        let req = PublishReq {
            topic: topic.into(),
            event: None,
            content_type: Some(bayeux::PUBLISH_CONTENT_TYPE.into()),
            data,
            reply: None,
            idempotency_key: None,
        };
        self.core.hub.publish(req).map_err(|r| if r.status == 400 { Refusal::SenderField } else { Refusal::Busy })
    }

    fn resubscribed(&mut self, key: usize) {
        let core = &mut *self.core;
        let Some(SessionEntry { state: SessionState::Bayeux(session), .. }) = core.sessions.slab.get_mut(key) else {
            return;
        };
        session.pin_new_subscriptions(self.head);
        let selectors = session.selectors().into_boxed_slice();
        remote::save(core, key);
        sessions::rewatch_listening(core, key, selectors);
    }

    fn disconnect(&mut self, key: usize) {
        if let Some(listener) = self.core.sessions.listening_conn(key, &self.core.conns) {
            supersede_connect(self.core, listener);
        }
        self.core.sessions.remove(key, &mut self.core.conns.timers);
    }

    fn connect_reply(&mut self, key: usize, connect: &bayeux::Message) -> Option<Value> {
        let core = &mut *self.core;
        match core.sessions.slab.get_mut(key).map(|e| &mut e.state) {
            Some(SessionState::Bayeux(session)) => Some(session.connect_reply(connect, &core.sessions.bayeux)),
            _ => None,
        }
    }
}
