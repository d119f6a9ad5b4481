//! Pushlet at `/pushlet.srv` (and `/pushlet/pushlet.srv`): the original Pushlet JavaScript
//! clients' protocol, driven by the sans-I/O core in `protocol::pushlet`.
//!
//! `join` makes a session owned by this worker; any later request for it (a control request on
//! a second connection, a refresh on a new one) is handed to the owner. The session holds
//! subscriptions and a cursor, not copies: a `stream` listen is a streaming response fed from
//! history, a `pull` refresh is a parked request answered with what history holds after the
//! cursor (or an `hb` after the read timeout), a `poll` refresh answers at once. `leave`,
//! `subscribe` and `unsubscribe` on a control connection act on the open listen immediately.

use bytes::Bytes;

use super::{SessionEntry, SessionState};
use crate::http::{Reject, Request};
use crate::hub::PublishReq;
use crate::protocol::pushlet::{self, Event, Format, Mode, Step, Writer};
use crate::server::conn::{Framer, Parked, ParkedFormat, PushletHold, ReplyMeta};
use crate::server::delivery::Answer;
use crate::server::event_loop::Worker;
use crate::server::session_id;
use crate::server::stream::{unix_secs, StreamSpec};

/// Headers on every Pushlet reply (the original server's no-cache set).
const NO_CACHE: &[(&str, &str)] = &[
    ("Cache-Control", "no-store, no-cache, must-revalidate"),
    ("Pragma", "no-cache"),
    ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
];

impl Worker {
    /// A request on a Pushlet path.
    pub(in crate::server) fn pushlet(&mut self, key: usize, meta: ReplyMeta, req: Request, body: Vec<u8>) {
        let base: &'static str = if req.path() == pushlet::PATHS[1] { pushlet::PATHS[1] } else { pushlet::PATHS[0] };
        let preq = match pushlet::parse_request(req.query(), &body) {
            Ok(preq) => preq,
            Err(e) => return self.refuse(key, meta, Reject::from(e).with_headers(NO_CACHE)),
        };
        let skey = if preq.command.is_join() {
            match self.pushlet_join(&preq) {
                Some(skey) => skey,
                None => {
                    let reject = Reject::busy("too many sessions, retry later", 5);
                    return self.refuse(key, meta, reject.with_headers(NO_CACHE));
                }
            }
        } else {
            let id = preq.id.as_deref().unwrap_or("");
            if let Some(owner) = self.foreign_owner(id) {
                return self.hand_off(key, owner, req, body, meta);
            }
            match self.sessions.key_of(id) {
                Some(skey) => skey,
                None => {
                    let e = pushlet::invalid_id(id);
                    return self.refuse(key, meta, Reject::from(e).with_headers(NO_CACHE));
                }
            }
        };
        self.renew_session(skey);
        let head = self.shared.store.head();
        let policy = &self.bayeux_settings.may_publish;
        let Some(SessionEntry { state: SessionState::Pushlet(session), .. }) = self.sessions.slab.get_mut(skey) else {
            return;
        };
        let was_listening = session.listening();
        let step = session.handle(&preq, policy.as_ref());
        if !was_listening && session.listening() {
            // Events reach a session only from its listen on.
            session.set_cursor(head);
        }
        let format = preq.format.unwrap_or(session.format());
        match step {
            Step::Reply(events) => self.pushlet_reply(key, meta, format, &events),
            Step::Publish { reply, topics, body, event } => {
                let reply = self.pushlet_publish(reply, topics, body, event);
                self.pushlet_reply(key, meta, format, &reply);
            }
            Step::Listen { ack } => self.pushlet_listen(key, meta, skey, base, ack),
            Step::Refresh => self.pushlet_refresh(key, meta, skey, base),
            Step::Leave(events) => {
                self.release_listener(skey);
                self.remove_session(skey);
                self.pushlet_reply(key, meta, format, &events);
            }
            Step::Resubscribed(events) => {
                self.pushlet_reply(key, meta, format, &events);
                if let Some(SessionState::Pushlet(session)) = self.sessions.slab.get(skey).map(|e| &e.state) {
                    let selectors = session.selectors().into_boxed_slice();
                    self.rewatch_listener(skey, selectors);
                }
            }
        }
    }

    /// `join` / `join-listen` always make a new session, owned here.
    fn pushlet_join(&mut self, preq: &pushlet::Request) -> Option<usize> {
        let id = session_id::new_id(self.id).ok()?;
        let session = pushlet::Session::new(id.clone(), preq.format.unwrap_or_default());
        let entry = SessionEntry {
            id,
            state: SessionState::Pushlet(Box::new(session)),
            listener: None,
            timer: None,
            lease: self.shared.config.sessions.lease,
        };
        self.add_session(entry)
    }

    /// Publishes a Pushlet event to its topics; the ack becomes a nack if the hub is busy.
    fn pushlet_publish(
        &mut self,
        reply: Vec<Event>,
        topics: Vec<Box<str>>,
        body: Bytes,
        event: Option<Box<str>>,
    ) -> Vec<Event> {
        for topic in topics {
            let req = PublishReq {
                topic: topic.into(),
                event: event.clone(),
                content_type: Some(pushlet::PUBLISH_CONTENT_TYPE.into()),
                data: body.clone(),
                reply: None,
            };
            if let Err(busy) = self.send_publish(req) {
                return vec![pushlet::nack(&busy.reason)];
            }
        }
        reply
    }

    /// A complete reply of `events` in `format`.
    fn pushlet_reply(&mut self, key: usize, meta: ReplyMeta, format: Format, events: &[Event]) {
        let mut writer = Writer::new(format);
        let now = unix_secs();
        let mut body = writer.head();
        for event in events {
            body.extend_from_slice(&writer.event(event, now));
        }
        body.extend_from_slice(&writer.tail(None));
        self.respond(key, meta, 200, pushlet::content_type(format), NO_CACHE, Bytes::from(body));
    }

    /// `listen` / `join-listen`: the ack, then delivery in the session's mode.
    fn pushlet_listen(&mut self, key: usize, meta: ReplyMeta, skey: usize, base: &'static str, ack: Vec<Event>) {
        let Some(SessionState::Pushlet(session)) = self.sessions.slab.get(skey).map(|e| &e.state) else { return };
        let (format, mode, cursor) = (session.format(), session.mode(), session.cursor());
        let (id, selectors) = (session.id().to_owned(), session.selectors().into_boxed_slice());
        if mode != Mode::Stream {
            // Pull and poll: the ack and the first `refresh`, then the client comes back.
            let mut writer = Writer::new(format);
            let now = unix_secs();
            let mut body = writer.head();
            for event in &ack {
                body.extend_from_slice(&writer.event(event, now));
            }
            body.extend_from_slice(&writer.end_round(&id, base, self.refresh_wait(mode), now));
            return self.respond(key, meta, 200, pushlet::content_type(format), NO_CACHE, Bytes::from(body));
        }
        // Stream: one open listen per session; a newer one takes over.
        self.release_listener(skey);
        let mut writer = Writer::new(format);
        let now = unix_secs();
        let mut first = writer.head();
        for event in &ack {
            first.extend_from_slice(&writer.event(event, now));
        }
        // The original sends an immediate heartbeat after the ack.
        first.extend_from_slice(&writer.event(&pushlet::hb(), now));
        let spec = StreamSpec {
            framer: Framer::Pushlet { session: skey, writer },
            content_type: pushlet::content_type(format).to_owned(),
            first: vec![Bytes::from(first)],
            heartbeat: self.shared.config.sessions.pushlet_read_timeout,
            // A Pushlet stream never ends by itself.
            max_age: std::time::Duration::from_secs(crate::config::MAX_SECONDS as u64),
            extra_headers: NO_CACHE,
        };
        if let Some(entry) = self.sessions.slab.get_mut(skey) {
            entry.listener = Some(key);
        }
        self.open_stream(key, meta, spec, selectors, cursor, true);
    }

    /// `refresh`: a pull round parks until events (or the read timeout); a poll round
    /// answers at once.
    fn pushlet_refresh(&mut self, key: usize, meta: ReplyMeta, skey: usize, base: &'static str) {
        let Some(SessionState::Pushlet(session)) = self.sessions.slab.get(skey).map(|e| &e.state) else { return };
        let (format, mode, cursor) = (session.format(), session.mode(), session.cursor());
        let selectors = session.selectors().into_boxed_slice();
        // One waiting refresh per session: a newer one answers the older.
        self.release_listener(skey);
        let hold = PushletHold { session: skey, format, base };
        let parked = Parked { selectors, cursor, reply: meta, format: ParkedFormat::Pushlet(Box::new(hold)) };
        let timeout = self.shared.config.sessions.pushlet_read_timeout;
        self.park(key, parked, mode == Mode::Poll, false, true, timeout);
    }

    /// The reply of a refresh round: `refresh-ack`, the data events after the cursor (or an
    /// `hb` when the read timeout passed with none), then the `refresh` that schedules the next
    /// round. A session with more than `--session-queue` undelivered events of its own gets an
    /// `abort` and is removed; so does a refresh released by the session's `leave` (the
    /// original's bailout sent `abort` to the listener), rather than a `refresh` that would
    /// bring the client back to a 400.
    pub(in crate::server) fn answer_pushlet(
        &mut self,
        key: usize,
        parked: &Parked,
        hold: &PushletHold,
        force: bool,
    ) -> Answer {
        let store = std::sync::Arc::clone(&self.shared.store);
        let limit = self.shared.config.sessions.queue + 1;
        let Some(SessionEntry { state: SessionState::Pushlet(session), .. }) = self.sessions.slab.get_mut(hold.session)
        else {
            // The session expired (or overflowed) while this refresh waited.
            let events = [pushlet::abort("session ended")];
            self.pushlet_reply(key, parked.reply, hold.format, &events);
            return Answer::Sent;
        };
        if !session.listening() {
            // Released by `leave`: the worker removes the session right after.
            let events = [pushlet::abort("session left")];
            self.listener_gone(hold.session, key);
            self.pushlet_reply(key, parked.reply, hold.format, &events);
            return Answer::Sent;
        }
        // The selectors also match messages that are not for this session (other sessions'
        // unicasts under a `/` subscription), so the bound counts this session's events, and
        // reading goes on past a truncated read that held none of them: the cursor may only
        // move over messages that were looked at. A wake-up that found nothing for the session
        // moved its cursor; the next one reads on from there, not from where the listen parked.
        let mut events: Vec<Event> = Vec::new();
        let mut next = parked.cursor.max(session.cursor());
        let mut gap = false;
        let head = loop {
            self.scratch_msgs.clear();
            let read = store.read(&parked.selectors, next, limit, &mut self.scratch_msgs);
            gap |= read.gap;
            events.extend(self.scratch_msgs.iter().filter_map(|m| session.data_event(m)));
            next = read.next_cursor(next, &self.scratch_msgs);
            if events.len() >= limit || !read.truncated {
                break read.head;
            }
        };
        let overflow = events.len() >= limit;
        session.set_cursor(next);
        if events.is_empty() && !gap && !force {
            // Nothing for this session (maybe another session's unicast); keep waiting.
            return Answer::Nothing { head };
        }
        let (id, mode) = (session.id().to_owned(), session.mode());
        let mut writer = Writer::new(hold.format);
        let now = unix_secs();
        let mut body = writer.head();
        if overflow {
            let reason = format!("more than {} undelivered events: session removed", limit - 1);
            body.extend_from_slice(&writer.event(&pushlet::abort(&reason), now));
            body.extend_from_slice(&writer.tail(None));
        } else {
            body.extend_from_slice(&writer.event(&pushlet::refresh_ack(), now));
            if gap {
                // Said, never silent: the session fell further behind than history holds
                // (the same event a stream gets).
                let lost = pushlet::error("events were lost: they fell out of history");
                body.extend_from_slice(&writer.event(&lost, now));
            }
            if events.is_empty() {
                body.extend_from_slice(&writer.event(&pushlet::hb(), now));
            }
            for event in &events {
                body.extend_from_slice(&writer.event(event, now));
            }
            body.extend_from_slice(&writer.end_round(&id, hold.base, self.refresh_wait(mode), now));
        }
        self.listener_gone(hold.session, key);
        if overflow {
            self.remove_session(hold.session);
        }
        self.count_deliveries();
        let content_type = pushlet::content_type(hold.format);
        self.respond(key, parked.reply, 200, content_type, NO_CACHE, Bytes::from(body));
        Answer::Sent
    }

    /// A randomized `p_wait` for the mode (the spec's pull 2-6 s, poll 6-10 s).
    fn refresh_wait(&mut self, mode: Mode) -> u64 {
        let range = if mode == Mode::Poll { pushlet::POLL_WAIT_MS } else { pushlet::PULL_WAIT_MS };
        let span = range.end() - range.start();
        range.start() + (self.rng.unit() * span as f64) as u64
    }

    /// The lease ran out with no listen open: the session goes.
    pub(in crate::server) fn pushlet_expired(&mut self, skey: usize) {
        self.remove_session(skey);
    }
}
