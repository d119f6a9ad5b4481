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

use super::{SessionEntry, SessionState};
use crate::http::{Reject, Request};
use crate::hub::{system_clock_ms, PublishReq};
use crate::protocol::bayeux::{self, Batch, ConnectRound, Held, History, Outcome, Piece};
use crate::server::conn::{BayeuxHold, Cors, DuplexProtocol, Parked, ParkedFormat, Phase, ReplyMeta, Vacated};
use crate::server::delivery::{Answer, Gaps, When};
use crate::server::event_loop::{Timer, Worker};
use crate::server::session_id;

impl Worker {
    /// A request on a Bayeux path.
    pub(in crate::server) fn bayeux(&mut self, key: usize, meta: ReplyMeta, req: Request, body: Vec<u8>) {
        // Bayeux clients send credentials, so an allowed origin is reflected, never `*`.
        let origin = match (req.header_str("origin"), meta.cors) {
            (Some(origin), Cors::Any | Cors::Read(_)) => Some(Box::<str>::from(origin)),
            _ => None,
        };
        if req.wants_upgrade("websocket") {
            // The upgrade checks the origin against the CORS decision itself.
            return self.bayeux_upgrade(key, meta, &req);
        }
        // Bayeux replies carry their own CORS headers (reflected origin, credentials).
        let meta = ReplyMeta { cors: Cors::None, ..meta };
        if req.method() == crate::http::Method::Options {
            return self.bayeux_preflight(key, meta, origin.as_deref());
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
                return self.conns.refuse(key, meta, Reject::from(e).with_headers(&headers));
            }
        };
        // The session the batch is about; one owned by another worker takes the connection.
        let client = batch.iter().find_map(|m| m.client_id.as_deref());
        if let Some(owner) = client.and_then(|id| self.foreign_owner(id)) {
            return self.hand_off(key, owner, req, body, meta);
        }
        let Batch { replies, held } = bayeux::run_batch(&mut BatchHost { worker: self, head: 0 }, &batch);
        let Some(Held { session: skey, connect, hold_ms }) = held else {
            return self.bayeux_respond(key, meta, &pieces(replies), callback.as_deref(), origin.as_deref());
        };
        // One connect held per client: an older one (on another connection) is superseded.
        if let Some(listener) = self.sessions.listening_conn(skey, &self.conns) {
            self.supersede_connect(listener);
        }
        let Some(SessionState::Bayeux(session)) = self.sessions.slab.get(skey).map(|e| &e.state) else {
            // Only a disconnect removes a session mid-batch, and it answers the held connect
            // first; still, a request is never left without its reply.
            let mut replies = replies;
            replies.push(bayeux::unknown_client(&connect));
            return self.bayeux_respond(key, meta, &pieces(replies), callback.as_deref(), origin.as_deref());
        };
        let selectors = session.selectors().into_boxed_slice();
        let cursor = session.cursor();
        let hold = BayeuxHold { session: skey, connect, replies, callback, origin };
        let parked = Parked { selectors, cursor, reply: meta, format: ParkedFormat::Bayeux(Box::new(hold)) };
        let when = if hold_ms == 0 { When::Now } else { When::IfAny };
        self.park(key, parked, when, Gaps::Report, Duration::from_millis(hold_ms));
    }

    fn bayeux_handshake(&mut self, msg: &bayeux::Message) -> Value {
        let id = match session_id::new_id(self.id) {
            Ok(id) => id,
            Err(_) => return bayeux::handshake_error(msg, &bayeux::error_text(500, &[], "Cannot make a client id")),
        };
        match bayeux::Session::new(id.clone(), msg, &self.bayeux_settings, system_clock_ms()) {
            Err(reply) => reply,
            Ok((mut session, reply)) => {
                // A new client hears what is published from now on.
                session.set_cursor(self.shared.store.head());
                let lease = Duration::from_millis(self.bayeux_settings.max_interval_ms);
                let entry = SessionEntry {
                    id,
                    state: SessionState::Bayeux(Box::new(session)),
                    listening: None,
                    timer: None,
                    lease,
                };
                match self.sessions.add(entry, &mut self.conns.timers) {
                    Some(_) => reply,
                    None => {
                        bayeux::handshake_error(msg, &bayeux::error_text(503, &[], "Too many sessions, retry later"))
                    }
                }
            }
        }
    }

    /// A newer connect supersedes a held one: the older gets a plain connect reply without
    /// events (which stay for the newer), since its client has already given up on it.
    fn supersede_connect(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.state.phase() {
            Phase::Parked if conn.state.parked_mut().is_some_and(|p| matches!(p.format, ParkedFormat::Bayeux(_))) => {
                let Some(parked) = conn.state.unpark() else { return };
                let vacated = Vacated::parked(parked);
                self.retire_phase(key, &vacated);
                let Some(parked) = vacated.into_parked() else { return };
                let ParkedFormat::Bayeux(hold) = parked.format else { return };
                let mut replies = hold.replies;
                replies.push(self.bayeux_connect_reply(hold.session, &hold.connect));
                self.bayeux_respond(
                    key,
                    parked.reply,
                    &pieces(replies),
                    hold.callback.as_deref(),
                    hold.origin.as_deref(),
                );
            }
            Phase::Duplex => {
                let Some(duplex) = conn.state.duplex_mut() else { return };
                let DuplexProtocol::Bayeux(socket) = &mut duplex.protocol else { return };
                let (Some(skey), Some((connect, _))) = (socket.session, socket.held.take()) else { return };
                self.sessions.listening_ended(skey, key, &mut self.conns.timers);
                let reply = self.bayeux_connect_reply(skey, &connect);
                self.ws_text(key, bayeux::encode_replies(&[reply]));
            }
            _ => {}
        }
        self.pump(key);
    }

    /// The reply of a connect answered at once without events (released by a later message of
    /// its own batch): the session's connect reply, or 402 when it is gone.
    fn bayeux_connect_reply(&mut self, skey: usize, connect: &bayeux::Message) -> Value {
        match self.sessions.slab.get_mut(skey).map(|e| &mut e.state) {
            Some(SessionState::Bayeux(session)) => session.connect_reply(connect, &self.bayeux_settings),
            _ => bayeux::unknown_client(connect),
        }
    }

    /// The reply of a held HTTP connect. Called by `answer` for `ParkedFormat::Bayeux`.
    pub(in crate::server) fn answer_bayeux(
        &mut self,
        key: usize,
        parked: &Parked,
        hold: &BayeuxHold,
        when: When,
    ) -> Answer {
        let round =
            self.bayeux_round(hold.session, &parked.selectors, parked.cursor, &hold.connect, &hold.replies, when);
        let replies = match round {
            Round::Nothing { head } => return Answer::Nothing { head },
            Round::Replies(replies) => replies,
        };
        self.sessions.listening_ended(hold.session, key, &mut self.conns.timers);
        self.bayeux_respond(key, parked.reply, &replies, hold.callback.as_deref(), hold.origin.as_deref());
        Answer::Sent
    }

    /// A connect round (`bayeux::connect_round` says what it carries): reads history after
    /// `cursor` and, when the round is answered, renews the session and counts the deliveries.
    fn bayeux_round(
        &mut self,
        skey: usize,
        selectors: &[crate::model::Selector],
        cursor: u64,
        connect: &bayeux::Message,
        earlier: &[Value],
        when: When,
    ) -> Round {
        let store = std::sync::Arc::clone(&self.shared.store);
        self.delivery.msgs.clear();
        let read = store.read(selectors, cursor, self.shared.config.longpoll.max_batch, &mut self.delivery.msgs);
        let history = History {
            msgs: &self.delivery.msgs,
            epoch: store.epoch(),
            next: read.next_cursor(cursor, &self.delivery.msgs),
        };
        let session = match self.sessions.slab.get_mut(skey) {
            Some(SessionEntry { state: SessionState::Bayeux(session), .. }) => Some(&mut **session),
            _ => None,
        };
        let force = when == When::Now;
        let round =
            bayeux::connect_round(session, history, connect, earlier, force, &self.bayeux_settings, system_clock_ms());
        match round {
            ConnectRound::Wait => Round::Nothing { head: read.head },
            ConnectRound::Unknown(replies) => Round::Replies(replies),
            ConnectRound::Delivered(replies) => {
                self.sessions.renew(skey, &mut self.conns.timers);
                self.delivery.count_read();
                Round::Replies(replies)
            }
        }
    }

    /// A WebSocket upgrade on a Bayeux path: every frame is then a batch.
    fn bayeux_upgrade(&mut self, key: usize, meta: ReplyMeta, req: &Request) {
        if self.upgrade(key, meta, req) {
            self.start_bayeux_socket(key);
        }
    }

    /// One frame (a batch) on a Bayeux WebSocket. Replies go out at once; a connect is held
    /// on the socket until events arrive or its time is up.
    pub(in crate::server) fn bayeux_frame(&mut self, key: usize, text: &str) {
        if self.conns.get(key).is_none_or(|c| c.state.phase() != Phase::Duplex) {
            return; // closing (after a close frame nothing more may be sent)
        }
        let batch = match bayeux::parse_batch(text.as_bytes()) {
            Ok(batch) => batch,
            Err(e) => return self.ws_text(key, bayeux::frame_error(&e)),
        };
        let client = batch.iter().find_map(|m| m.client_id.as_deref());
        if let Some(owner) = client.and_then(|id| self.foreign_owner(id)) {
            return self.hand_off_socket(key, owner, text.to_owned());
        }
        let Batch { replies, held } = bayeux::run_batch(&mut BatchHost { worker: self, head: 0 }, &batch);
        if !replies.is_empty() {
            self.ws_text(key, bayeux::encode_replies(&replies));
        }
        let Some(Held { session: skey, connect, hold_ms }) = held else { return };
        // This socket now listens for the session; a connect held before (here or on another
        // connection) is superseded.
        self.supersede_connect(key);
        if let Some(listener) = self.sessions.listening_conn(skey, &self.conns) {
            self.supersede_connect(listener);
        }
        let Some(SessionState::Bayeux(session)) = self.sessions.slab.get(skey).map(|e| &e.state) else {
            return self.ws_text(key, bayeux::encode_replies(&[bayeux::unknown_client(&connect)]));
        };
        let (selectors, cursor) = (session.selectors(), session.cursor());
        let Some(duplex) = self.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) else { return };
        let old = std::mem::replace(&mut duplex.selectors, selectors.clone());
        duplex.cursor = cursor;
        if let DuplexProtocol::Bayeux(socket) = &mut duplex.protocol {
            socket.session = Some(skey);
            socket.held = Some((connect, Instant::now() + Duration::from_millis(hold_ms)));
        }
        self.delivery.unwatch(key, &old);
        let head = self.shared.store.head();
        self.delivery.watch(&mut self.hub, key, &selectors, head);
        self.sessions.listen(skey, key);
        self.bayeux_socket_round(key, if hold_ms == 0 { When::Now } else { When::IfAny });
        self.arm_duplex_timer(key);
    }

    /// Answers the socket's held connect if there is anything to deliver (or `When::Now`).
    pub(in crate::server) fn bayeux_socket_round(&mut self, key: usize, when: When) {
        let Some(duplex) = self.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) else { return };
        let DuplexProtocol::Bayeux(socket) = &mut duplex.protocol else { return };
        let Some(skey) = socket.session else { return };
        // The held connect and the selectors are lent to the round, not copied: this runs on
        // every wake-up of the socket, most of which find nothing to send.
        let Some((connect, deadline)) = socket.held.take() else { return };
        let (selectors, cursor) = (std::mem::take(&mut duplex.selectors), duplex.cursor);
        let when = if Instant::now() >= deadline { When::Now } else { when };
        let round = self.bayeux_round(skey, &selectors, cursor, &connect, &[], when);
        let Some(duplex) = self.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) else { return };
        duplex.selectors = selectors;
        let DuplexProtocol::Bayeux(socket) = &mut duplex.protocol else { return };
        let Round::Replies(replies) = round else {
            socket.held = Some((connect, deadline));
            return;
        };
        if let Some(SessionState::Bayeux(session)) = self.sessions.slab.get(skey).map(|e| &e.state) {
            duplex.cursor = session.cursor();
        }
        // The session listens again with its next connect; until then it may expire.
        self.sessions.listening_ended(skey, key, &mut self.conns.timers);
        self.ws_text(key, bayeux::encode_pieces(&replies));
    }

    fn bayeux_respond(
        &mut self,
        key: usize,
        meta: ReplyMeta,
        replies: &[Piece],
        callback: Option<&str>,
        origin: Option<&str>,
    ) {
        let (body, content_type) = bayeux::http_body(replies, callback);
        self.conns.respond(key, meta, 200, content_type, &bayeux::reply_headers(origin), Bytes::from(body));
    }

    fn bayeux_preflight(&mut self, key: usize, meta: ReplyMeta, origin: Option<&str>) {
        let Some(origin) = origin else {
            return self.conns.refuse(key, meta, Reject::forbidden("origin not allowed"));
        };
        self.conns.respond(key, meta, 204, "", &bayeux::preflight_headers(origin), Bytes::new());
    }

    /// The session's expiry timer: a Bayeux session lives `maxInterval` past its last connect.
    pub(in crate::server) fn bayeux_expiry(&mut self, skey: usize) {
        let now = system_clock_ms();
        let listening = self.sessions.listening_conn(skey, &self.conns).is_some();
        let Some(entry) = self.sessions.slab.get_mut(skey) else { return };
        let SessionState::Bayeux(session) = &entry.state else { return };
        if listening || !session.expired(now) {
            let left = session.expires_at().saturating_sub(now).max(10);
            entry.timer =
                Some(self.conns.timers.insert(Instant::now() + Duration::from_millis(left), Timer::Session(skey)));
            return;
        }
        self.sessions.remove(skey, &mut self.conns.timers);
    }
}

/// The outcome of a connect round, for the worker.
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
    worker: &'w mut Worker,
    /// The store head read just before the message being handled: a subscription it adds
    /// starts there, so a message sequenced while it was handled is not missed.
    head: u64,
}

impl bayeux::Host for BatchHost<'_> {
    fn handshake(&mut self, msg: &bayeux::Message) -> Value {
        self.worker.bayeux_handshake(msg)
    }

    fn find(&self, client_id: &str) -> Option<usize> {
        self.worker.sessions.key_of(client_id)
    }

    fn handle(&mut self, key: usize, msg: &bayeux::Message) -> Option<Outcome> {
        let worker = &mut *self.worker;
        let Some(SessionEntry { state: SessionState::Bayeux(session), .. }) = worker.sessions.slab.get_mut(key) else {
            return None;
        };
        session.touch(system_clock_ms());
        self.head = worker.shared.store.head();
        Some(session.handle(msg, &worker.bayeux_settings))
    }

    fn publish(&mut self, topic: Box<str>, data: Bytes) -> bool {
        let req = PublishReq {
            topic: topic.into(),
            event: None,
            content_type: Some(bayeux::PUBLISH_CONTENT_TYPE.into()),
            data,
            reply: None,
        };
        self.worker.hub.publish(req).is_ok()
    }

    fn resubscribed(&mut self, key: usize) {
        let worker = &mut *self.worker;
        let Some(SessionEntry { state: SessionState::Bayeux(session), .. }) = worker.sessions.slab.get_mut(key) else {
            return;
        };
        session.pin_new_subscriptions(self.head);
        let selectors = session.selectors().into_boxed_slice();
        worker.rewatch_listening(key, selectors);
    }

    fn disconnect(&mut self, key: usize) {
        if let Some(listener) = self.worker.sessions.listening_conn(key, &self.worker.conns) {
            self.worker.supersede_connect(listener);
        }
        self.worker.sessions.remove(key, &mut self.worker.conns.timers);
    }

    fn connect_reply(&mut self, key: usize, connect: &bayeux::Message) -> Option<Value> {
        let worker = &mut *self.worker;
        match worker.sessions.slab.get_mut(key).map(|e| &mut e.state) {
            Some(SessionState::Bayeux(session)) => Some(session.connect_reply(connect, &worker.bayeux_settings)),
            _ => None,
        }
    }
}
