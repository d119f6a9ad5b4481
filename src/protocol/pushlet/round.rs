//! A Pushlet session's delivery rounds: which events a reply, a listen and a pull/poll
//! `refresh` round carry, in which order, and when the session is told to go (`abort`).
//!
//! The worker reads topic history and the session table; it hands this module the session,
//! what it read and the flags it knows ("the read timeout passed", "history had a gap") with
//! `now`, and writes the bytes that come back. The orderings, from the spec and the original
//! server:
//! - a plain reply: its events, in order;
//! - a pull/poll listen: the ack, then the round's end (`refresh`, or the js page's schedule);
//! - a stream listen: the ack, then an immediate `hb`, then the stream stays open;
//! - a refresh round: `refresh-ack`, an `error` when events fell out of history, the data
//!   events (an `hb` instead when the round ends with none), then the round's end. A session
//!   with more than `--session-queue` undelivered events of its own gets only an `abort` and is
//!   removed; a refresh whose session expired gets an `abort` too, never a `refresh` that
//!   would bring its client back to a 400;
//! - a refresh whose session's `leave` released it: `refresh-ack` and an `hb`, and no `refresh`.
//!   The 2.0.4 AJAX client sets itself to "ready" when it sends `leave`, so it shrugs these
//!   off, where an `abort` would put it in its error state for good and a later `joinListen()`
//!   on the page would send nothing. A `refresh` event would arm its timer: if the page joins
//!   again within `p_wait`, the stale timer starts a second refresh loop on the new session.

use std::sync::Arc;

use super::{abort, error, hb, refresh_ack, Event, Format, Mode, Session, Writer, POLL_WAIT_MS, PULL_WAIT_MS};
use crate::model::Message;

/// Headers on every Pushlet reply (the original server's no-cache set).
pub const NO_CACHE: [(&str, &str); 3] = [
    ("Cache-Control", "no-store, no-cache, must-revalidate"),
    ("Pragma", "no-cache"),
    ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
];

/// Headers of a join refused because the server holds `--max-sessions` (503): the no-cache
/// set and when to come back.
pub const BUSY: [(&str, &str); 4] = [NO_CACHE[0], NO_CACHE[1], NO_CACHE[2], ("Retry-After", "5")];

/// The reason of the `abort` a refresh gets when its session expired (or overflowed) while it
/// waited.
pub(super) const ENDED: &str = "session ended";
/// What a refresh round's `error` event says when history no longer holds every event after
/// the session's cursor (the same event a stream gets).
pub const LOST: &str = "events were lost: they fell out of history";

/// A `p_wait` for `mode` (the spec's pull 2-6 s, poll 6-10 s), in milliseconds: `unit` is a
/// random number in `[0, 1)` from the caller, so rounds of many sessions spread out.
pub fn refresh_wait(mode: Mode, unit: f64) -> u64 {
    let range = if mode == Mode::Poll { POLL_WAIT_MS } else { PULL_WAIT_MS };
    let span = range.end() - range.start();
    range.start() + (unit * span as f64) as u64
}

/// A complete reply of `events` in `format` (no round end: the answer to a control request).
pub fn reply(format: Format, events: &[Event], now_unix_secs: u64) -> Vec<u8> {
    let (mut writer, mut body) = start(format, events, now_unix_secs);
    body.extend_from_slice(&writer.tail(None));
    body
}

/// A body in `format` that begins with `events`, and the writer that goes on numbering them.
fn start(format: Format, events: &[Event], now_unix_secs: u64) -> (Writer, Vec<u8>) {
    let mut writer = Writer::new(format);
    let mut body = writer.head();
    for event in events {
        body.extend_from_slice(&writer.event(event, now_unix_secs));
    }
    (writer, body)
}

/// How a `listen` / `join-listen` goes on, in the session's mode.
#[derive(Debug)]
pub enum Listen {
    /// Pull and poll: this whole reply (the ack, then the first round's end); the client comes
    /// back with a `refresh`.
    Round(Vec<u8>),
    /// Stream: a never-ending response that starts with `first` (the ack, then an `hb` at once
    /// as the original sends) and goes on with `writer`, which keeps numbering its events.
    Stream { writer: Writer, first: Vec<u8> },
}

/// The start of a listen for `session` (already listening, in its mode and format), whose
/// request came in on `base_path`. `wait_ms` gives the `p_wait` of a pull/poll round's end;
/// it is not called for a stream.
pub fn listen(
    session: &Session,
    ack: &[Event],
    base_path: &str,
    wait_ms: impl FnOnce(Mode) -> u64,
    now_unix_secs: u64,
) -> Listen {
    let mode = session.mode();
    let (mut writer, mut body) = start(session.format(), ack, now_unix_secs);
    if mode != Mode::Stream {
        body.extend_from_slice(&writer.end_round(session.id(), base_path, wait_ms(mode), now_unix_secs));
        return Listen::Round(body);
    }
    body.extend_from_slice(&writer.event(&hb(), now_unix_secs));
    Listen::Stream { writer, first: body }
}

/// A refresh round's events, gathered over as many history reads as it takes.
///
/// The session's selectors also match messages that are not for it (other sessions' unicasts
/// under a `/` subscription), so the bound counts this session's own events, and reading goes
/// on past a truncated read that held none of them. One event over `--session-queue` is
/// enough to know the session overflowed.
#[derive(Debug)]
pub struct Backlog {
    events: Vec<Event>,
    gap: bool,
    /// `--session-queue` + 1.
    limit: usize,
}

impl Backlog {
    /// An empty backlog for a session allowed `session_queue` undelivered events.
    pub fn new(session_queue: usize) -> Backlog {
        Backlog { events: Vec::new(), gap: false, limit: session_queue.saturating_add(1) }
    }

    /// The most messages to ask history for in one read.
    pub fn read_limit(&self) -> usize {
        self.limit
    }

    /// Whether history lost events this session had not read (the reply then says so).
    pub fn gap(&self) -> bool {
        self.gap
    }

    /// Takes one read of history: `msgs` in seq order, `gap` when history had lost some of what
    /// was asked for, `truncated` when the read stopped at [`Backlog::read_limit`]. Returns
    /// whether to read on (from the read's next cursor).
    pub fn take(&mut self, session: &Session, msgs: &[Arc<Message>], gap: bool, truncated: bool) -> bool {
        self.gap |= gap;
        self.events.extend(msgs.iter().filter_map(|m| session.data_event(m)));
        truncated && !self.overflowed()
    }

    /// Whether the session has more undelivered events than it may.
    pub fn overflowed(&self) -> bool {
        self.events.len() >= self.limit
    }
}

/// Where the session of a waiting refresh stands when the round is answered.
#[derive(Debug)]
pub enum Listener<'a> {
    /// No such session any more: it expired, or overflowed, while the refresh waited.
    Ended,
    /// The session's `leave` released the refresh; the worker removes the session right after.
    Left,
    /// The session still listens; `backlog` holds what history had for it.
    Live { session: &'a Session, backlog: Backlog },
}

/// The answer to a waiting refresh.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Nothing for the session yet (maybe another session's unicast woke it): keep waiting.
    Wait,
    /// Answer with `body`, then do what `done` says.
    Reply { body: Vec<u8>, done: Done },
}

/// What the worker does after answering a refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// The session is gone: nothing to release.
    Ended,
    /// The refresh no longer listens for the session (which is about to be removed).
    Left,
    /// Events (or a heartbeat) were delivered: the refresh no longer listens, the messages read
    /// count as delivered.
    Delivered,
    /// The session overflowed `--session-queue`: it no longer listens and is removed.
    Overflowed,
}

/// Answers a refresh round in `format` whose request came in on `base_path`. `forced` means
/// answer even with nothing to say (the read timeout passed, a poll round, a newer refresh,
/// shutdown); `wait_ms` gives the next round's `p_wait` and is called only when a round ends
/// with a `refresh`.
pub fn answer_refresh(
    listener: Listener<'_>,
    format: Format,
    base_path: &str,
    forced: bool,
    wait_ms: impl FnOnce(Mode) -> u64,
    now_unix_secs: u64,
) -> Refresh {
    let (session, backlog) = match listener {
        Listener::Ended => {
            return Refresh::Reply { body: reply(format, &[abort(ENDED)], now_unix_secs), done: Done::Ended }
        }
        Listener::Left => {
            let body = reply(format, &[refresh_ack(), hb()], now_unix_secs);
            return Refresh::Reply { body, done: Done::Left };
        }
        Listener::Live { session, backlog } => (session, backlog),
    };
    if backlog.events.is_empty() && !backlog.gap && !forced {
        return Refresh::Wait;
    }
    if backlog.overflowed() {
        let reason = format!("more than {} undelivered events: session removed", backlog.limit - 1);
        return Refresh::Reply { body: reply(format, &[abort(&reason)], now_unix_secs), done: Done::Overflowed };
    }
    let (mut writer, mut body) = start(format, &[refresh_ack()], now_unix_secs);
    if backlog.gap {
        // Said, never silent: the session fell further behind than history holds.
        body.extend_from_slice(&writer.event(&error(LOST), now_unix_secs));
    }
    if backlog.events.is_empty() {
        body.extend_from_slice(&writer.event(&hb(), now_unix_secs));
    }
    for event in &backlog.events {
        body.extend_from_slice(&writer.event(event, now_unix_secs));
    }
    let wait = wait_ms(session.mode());
    body.extend_from_slice(&writer.end_round(session.id(), base_path, wait, now_unix_secs));
    Refresh::Reply { body, done: Done::Delivered }
}

#[cfg(test)]
mod tests;
