//! Pushlet at `/pushlet.srv` (and `/pushlet/pushlet.srv`): the original Pushlet JavaScript
//! clients' protocol, driven by the sans-I/O core in `protocol::pushlet`.
//!
//! `join` makes a session owned by this worker; any later request for it (a control request on
//! a second connection, a refresh on a new one) is handed to the owner. The session holds
//! subscriptions and a cursor, not copies: a `stream` listen is a streaming response fed from
//! history, a `pull` refresh is a parked request answered with what history holds after the
//! cursor (or an `hb` after the read timeout), a `poll` refresh answers at once. `leave`,
//! `subscribe` and `unsubscribe` on a control connection act on the open listen immediately.
//! A listen released because its client moved on (`leave`, or a newer listen) ends the way the
//! 2.0.4 clients survive: a stream with no closing event, a refresh with `hb` (see `round`).
//!
//! Each session also gets a public id, from the CSPRNG like its id but unrelated to it: the
//! `p_from` others see. Its publishes are the only ones the server stores with a `p_from` or
//! on a private topic (`HubLink::publish_stamped`).
//!
//! What each reply carries and in which order is the core's (`protocol::pushlet::round`); this
//! file reads history and the session table, calls it, and queues what comes back.

use bytes::Bytes;

use super::{Refused, SessionEntry, SessionState};
use crate::http::{Reject, Request};
use crate::hub::PublishReq;
use crate::protocol::pushlet::{self, Backlog, Done, Event, Format, Listen, Listener, Mode, Refresh, Step};
use crate::server::conn::{Framer, Parked, ParkedFormat, PushletHold, ReplyMeta};
use crate::server::conns::Conns;
use crate::server::core::Core;
use crate::server::delivery;
use crate::server::delivery::{Answer, Gaps, When};
use crate::server::dispatch;
use crate::server::session_id;
use crate::server::sessions;
use crate::server::sessions::handoff;
use crate::server::sessions::remote;
use crate::server::stats::WorkerStats;
use crate::server::stream;
use crate::server::stream::{unix_secs, StreamSpec};
use std::fmt::Write as _;
use std::time::Instant;

/// A request on a Pushlet path.
pub(in crate::server) fn handle(core: &mut Core, key: usize, meta: ReplyMeta, req: Request, body: Vec<u8>) {
    let base: &'static str = if req.path() == pushlet::PATHS[1] { pushlet::PATHS[1] } else { pushlet::PATHS[0] };
    let preq = match pushlet::parse_request(req.query(), &body) {
        Ok(preq) => preq,
        Err(e) => return core.conns.refuse(key, meta, Reject::from(e).with_headers(&pushlet::NO_CACHE)),
    };
    let skey = if preq.command.is_join() {
        // The session keeps the rights of the join's token (cookie, `token` parameter or
        // header); a bad or expired one gets the error event, and no session.
        let grant = match dispatch::grant_for(core, key, &req).1 {
            Ok(grant) => grant,
            Err(denied) => {
                return send_events(
                    &mut core.conns,
                    key,
                    meta,
                    preq.format.unwrap_or_default(),
                    &[denied_event(&denied)],
                )
            }
        };
        match join(core, key, &preq, grant) {
            Ok(skey) => skey,
            Err(refused) => return core.conns.refuse(key, meta, refused),
        }
    } else {
        let id = preq.id.as_deref().unwrap_or("");
        if let Some(owner) = sessions::foreign_owner(core, id) {
            return handoff::hand_off(core, key, owner, req, body, meta);
        }
        // Cluster mode: a session this node does not hold may be in Redis, its node gone.
        if remote::wants_lookup(core, id) {
            let id = id.to_owned();
            return remote::look_up(core, key, &id, req, body);
        }
        match core.sessions.pushlet_key(id) {
            Some(skey) => skey,
            None => {
                let e = pushlet::invalid_id(id);
                return core.conns.refuse(key, meta, Reject::from(e).with_headers(&pushlet::NO_CACHE));
            }
        }
    };
    core.sessions.renew(skey, &mut core.conns.timers);
    let head = core.shared.store.head();
    let policy = &core.hub.client_publish;
    let Some(SessionEntry { state: SessionState::Pushlet(session), .. }) = core.sessions.slab.get_mut(skey) else {
        return;
    };
    let was_listening = session.listening();
    if preq.command == pushlet::Command::Subscribe {
        // Each subject a subscribe names costs a token, as on a native WebSocket.
        let named = preq.event.get("p_subject").map_or(0, |s| s.split(',').count());
        let Some(entry) = core.sessions.slab.get_mut(skey) else { return };
        if !entry.changes.take(named, Instant::now()) {
            let format = preq.format.unwrap_or_default();
            return send_events(&mut core.conns, key, meta, format, &[pushlet::nack(&sessions::too_many_changes())]);
        }
    }
    let Some(SessionEntry { state: SessionState::Pushlet(session), grant, .. }) = core.sessions.slab.get_mut(skey)
    else {
        return;
    };
    let auth = core.shared.auth.current();
    let subscribes =
        matches!(preq.command, pushlet::Command::Subscribe | pushlet::Command::Listen | pushlet::Command::JoinListen);
    if let Some(subjects) = preq.event.get("p_subject").filter(|_| subscribes) {
        // Every subject (`S` and below) must be covered by the session's token.
        if let Err(denied) = auth.may_subscribe(grant, &pushlet::subject_list_selectors(subjects)) {
            let format = preq.format.unwrap_or(session.format());
            return send_events(&mut core.conns, key, meta, format, &[denied_event(&denied)]);
        }
    }
    let denied = std::cell::Cell::new(None);
    let step = session.handle(&preq, &|topic| {
        let allowed = auth.may_publish(grant, topic);
        let ok = allowed.is_ok();
        if let Err(refusal) = allowed {
            denied.set(Some(refusal));
        }
        ok && policy.allows(topic)
    });
    if let Some(denied) = denied.take() {
        let format = preq.format.unwrap_or(session.format());
        return send_events(&mut core.conns, key, meta, format, &[denied_event(&denied)]);
    }
    if !was_listening && session.listening() {
        // Events reach a session only from its listen on.
        session.set_cursor(head);
    }
    let format = preq.format.unwrap_or(session.format());
    // What a node adopting the session must know: it exists, listens, or its subscriptions
    // changed (a refresh round is written when it is answered).
    let changed = preq.command.is_join() || matches!(step, Step::Listen { .. } | Step::Resubscribed(_));
    if changed {
        remote::save(core, skey);
    }
    match step {
        Step::Reply(events) => send_events(&mut core.conns, key, meta, format, &events),
        Step::Publish { reply, topics, body, event } => {
            let events = if dispatch::may_publish(&core.conns.access, &req) {
                publish(core, reply, topics, body, event)
            } else {
                vec![pushlet::nack("origin not allowed to publish")]
            };
            send_events(&mut core.conns, key, meta, format, &events);
        }
        Step::Listen { ack } => listen(core, key, meta, skey, base, ack),
        Step::Refresh => refresh(core, key, meta, skey, base),
        Step::Leave(events) => {
            release_quietly(core, skey);
            core.sessions.remove(skey, &mut core.conns.timers);
            send_events(&mut core.conns, key, meta, format, &events);
        }
        Step::Resubscribed(events) => {
            send_events(&mut core.conns, key, meta, format, &events);
            if let Some(SessionState::Pushlet(session)) = core.sessions.slab.get(skey).map(|e| &e.state) {
                let selectors = session.selectors().into_boxed_slice();
                sessions::rewatch_listening(core, skey, selectors);
            }
        }
    }
}

/// `join` / `join-listen` always make a new session, owned here.
fn join(core: &mut Core, key: usize, preq: &pushlet::Request, grant: crate::auth::Grant) -> Result<usize, Reject> {
    let id = session_id::new_id(core.id).map_err(|_| Reject::new(500, "cannot make a session id"))?;
    let public_id = public_id().map_err(|_| Reject::new(500, "cannot make a session id"))?;
    let session = pushlet::Session::new(id.clone(), public_id, preq.format.unwrap_or_default());
    let lease = core.shared.config.sessions.lease;
    let entry = SessionEntry::new(id, SessionState::Pushlet(Box::new(session)), lease).with_grant(grant);
    let peer = core.conns.peer_ip(key);
    core.sessions.add(entry, peer, &mut core.conns.timers).map_err(|refused| match refused {
        Refused::Full => Reject::new(503, "too many sessions, retry later").with_headers(&pushlet::BUSY),
        Refused::TooFast => Reject::from(refused).with_headers(&pushlet::NO_CACHE),
    })
}

/// The error event of a refusal by the token policy: `error{p_reason}` with the status first
/// ("401 token expired", "403 the token does not allow to ..."), never the token.
fn denied_event(denied: &crate::auth::Denied) -> Event {
    pushlet::error(&format!("{} {}", denied.status(), denied.reason()))
}

/// A session's public id: 128 bits from the OS CSPRNG as 32 hex digits. It is one topic
/// segment, and never a well-formed session id (those are 35 long), so it is no use as one.
fn public_id() -> std::io::Result<Box<str>> {
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut id = String::with_capacity(32);
    for b in random {
        let _ = write!(id, "{b:02x}");
    }
    Ok(id.into())
}

/// Releases the session's open listen because its client moved on (it left, or listens
/// anew): a stream ends with no closing event, a waiting refresh is answered (`answer`).
fn release_quietly(core: &mut Core, skey: usize) {
    if let Some(key) = core.sessions.listening_conn(skey, &core.conns) {
        let stream = core.conns.get_mut(key).and_then(|c| c.state.streaming_mut());
        if let Some(Framer::Pushlet { writer, .. }) = stream.map(|s| &mut s.framer) {
            writer.end_quietly();
        }
    }
    sessions::release_listening(core, skey);
}

/// Publishes a Pushlet event to its topics; the ack becomes a nack if the hub is busy.
fn publish(
    core: &mut Core,
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
            idempotency_key: None,
        };
        // The server's own: the only publish that may carry `p_from` or a private topic.
        if let Err(busy) = core.hub.publish_stamped(req) {
            return vec![pushlet::nack(&busy.reason)];
        }
    }
    reply
}

/// A complete reply of `events` in `format`.
fn send_events(conns: &mut Conns, key: usize, meta: ReplyMeta, format: Format, events: &[Event]) {
    send(conns, key, meta, format, pushlet::reply(format, events, unix_secs()));
}

/// Queues a Pushlet reply `body` in `format`.
fn send(conns: &mut Conns, key: usize, meta: ReplyMeta, format: Format, body: Vec<u8>) {
    conns.respond(key, meta, 200, pushlet::content_type(format), &pushlet::NO_CACHE, Bytes::from(body));
}

/// `listen` / `join-listen`: the ack, then delivery in the session's mode
/// (`pushlet::listen`): one reply for pull and poll, an open stream for stream.
fn listen(core: &mut Core, key: usize, meta: ReplyMeta, skey: usize, base: &'static str, ack: Vec<Event>) {
    let Some(SessionState::Pushlet(session)) = core.sessions.slab.get(skey).map(|e| &e.state) else { return };
    let (format, cursor, selectors) = (session.format(), session.cursor(), session.selectors().into_boxed_slice());
    let rng = &mut core.delivery.rng;
    let wait_ms = |mode| pushlet::refresh_wait(mode, rng.unit());
    let (writer, first) = match pushlet::listen(session, &ack, base, wait_ms, unix_secs()) {
        Listen::Round(body) => return send(&mut core.conns, key, meta, format, body),
        Listen::Stream { writer, first } => (writer, first),
    };
    // Stream: one open listen per session; a newer one takes over.
    release_quietly(core, skey);
    let spec = StreamSpec {
        framer: Framer::Pushlet { session: skey, writer },
        content_type: pushlet::content_type(format).to_owned(),
        first: vec![Bytes::from(first)],
        heartbeat: core.shared.config.sessions.pushlet_read_timeout,
        // A Pushlet stream never ends by itself.
        max_age: std::time::Duration::from_secs(crate::config::MAX_SECONDS as u64),
        extra_headers: &pushlet::NO_CACHE,
        expires_ms: None,
    };
    core.sessions.listen(skey, key);
    stream::open(core, key, meta, spec, selectors, cursor, Gaps::Report);
}

/// `refresh`: a pull round parks until events (or the read timeout); a poll round
/// answers at once.
fn refresh(core: &mut Core, key: usize, meta: ReplyMeta, skey: usize, base: &'static str) {
    let Some(SessionState::Pushlet(session)) = core.sessions.slab.get(skey).map(|e| &e.state) else { return };
    let (format, mode, cursor) = (session.format(), session.mode(), session.cursor());
    let selectors = session.selectors().into_boxed_slice();
    // One waiting refresh per session: a newer one answers the older.
    release_quietly(core, skey);
    let hold = PushletHold { session: skey, format, base };
    let parked = Parked { selectors, cursor, reply: meta, format: ParkedFormat::Pushlet(Box::new(hold)) };
    let timeout = core.shared.config.sessions.pushlet_read_timeout;
    let when = if mode == Mode::Poll { When::Now } else { When::IfAny };
    delivery::park(core, key, parked, when, Gaps::Report, timeout);
}

/// The reply of a waiting refresh round (`pushlet::answer_refresh` says what it carries):
/// this reads history after the session's cursor into a `Backlog` and acts on the answer.
pub(in crate::server) fn answer(
    core: &mut Core,
    key: usize,
    parked: &Parked,
    hold: &PushletHold,
    when: When,
) -> Answer {
    let store = std::sync::Arc::clone(&core.shared.store);
    let mut head = 0;
    let mut gap = false;
    let listener = match core.sessions.slab.get_mut(hold.session) {
        Some(SessionEntry { state: SessionState::Pushlet(session), .. }) if session.listening() => {
            // The cursor may only move over messages that were looked at. A wake-up that
            // found nothing for the session moved its cursor; the next one reads on from
            // there, not from where the listen parked.
            let mut backlog = Backlog::new(core.shared.config.sessions.queue);
            let mut next = parked.cursor.max(session.cursor());
            head = loop {
                core.delivery.msgs.clear();
                let read = store.read(&parked.selectors, next, backlog.read_limit(), &mut core.delivery.msgs);
                let read_on = backlog.take(session, &core.delivery.msgs, read.gap, read.truncated);
                next = read.next_cursor(next, &core.delivery.msgs);
                if !read_on {
                    break read.head;
                }
            };
            session.set_cursor(next);
            gap = backlog.gap();
            Listener::Live { session, backlog }
        }
        // Released by `leave`: the worker removes the session right after.
        Some(SessionEntry { state: SessionState::Pushlet(_), .. }) => Listener::Left,
        _ => Listener::Ended,
    };
    let rng = &mut core.delivery.rng;
    let wait_ms = |mode| pushlet::refresh_wait(mode, rng.unit());
    let answer = pushlet::answer_refresh(listener, hold.format, hold.base, when == When::Now, wait_ms, unix_secs());
    let (body, done) = match answer {
        Refresh::Wait => return Answer::Nothing { head },
        Refresh::Reply { body, done } => (body, done),
    };
    match done {
        Done::Ended => {}
        Done::Left => core.sessions.listening_ended(hold.session, key, &mut core.conns.timers),
        Done::Delivered | Done::Overflowed => {
            if gap && done == Done::Delivered {
                // The reply carries the "events were lost" notice (an overflow's abort does not).
                WorkerStats::add(&core.shared.stats[core.id].gaps, 1);
            }
            core.sessions.listening_ended(hold.session, key, &mut core.conns.timers);
            if done == Done::Overflowed {
                core.sessions.remove(hold.session, &mut core.conns.timers);
            } else {
                // The cursor moved: a node adopting the session goes on from here.
                remote::save(core, hold.session);
            }
            core.delivery.count_read();
        }
    }
    send(&mut core.conns, key, parked.reply, hold.format, body);
    Answer::Sent
}
