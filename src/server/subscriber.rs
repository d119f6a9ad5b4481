//! The subscriber interface: what happens to a connection that waits for messages, in one
//! place, like the function table of an nchan subscriber. A subscriber is a connection in one
//! of three phases, each with the module that owns its lifecycle; every event reaches it
//! through one of the functions below, which pick that module by phase.
//!
//! | phase | transports | lifecycle | wire format |
//! |---|---|---|---|
//! | `Parked` | long-poll, poll, JSONP; Pushlet and Bayeux long-polls | `delivery.rs` (`sessions/` for Pushlet and Bayeux replies) | `transport/longpoll.rs`, `jsonp.rs`; `protocol/` |
//! | `Streaming` | SSE, ndjson (XHR streaming), forever iframe, multipart; Pushlet stream | `stream.rs`, with `transport/streaming.rs` (`StreamLife`) | `transport/sse.rs`, `stream.rs`, `iframe.rs`, `multipart.rs` |
//! | `Duplex` | WebSocket, raw TCP; Bayeux over WebSocket | `duplex.rs`, with `transport/socket.rs` (`SocketLife`) | `transport/websocket/`, `raw.rs` |
//!
//! The events, in Servlet 3 terms where there is one:
//! - `on_wake`: the hub forwarded a message on one of its selectors (or asked for a re-read);
//! - `on_timeout` (`AsyncListener.onTimeout`): its one timer fired;
//! - `on_drained`: a client that fell behind took its queued output;
//! - `answer_now`: its session's listen was taken over by a newer request; `on_shutdown`;
//! - `retire` (`AsyncListener.onComplete`): it stops being a subscriber (answered, ended,
//!   closed or handed over), so the local index and the gauges forget it.
//!
//! The subscriber gauges (each family's and each transport's, `stats::SubscriberKind`) go up
//! in `enlist` and down in `retire`, and nowhere else, both from the kind the phase data
//! shows; so they cannot drift apart.

use super::conn::{Phase, Vacated};
use super::core::Core;
use super::delivery::{self, Gaps, When};
use super::io;
use super::sessions::bayeux as bayeux_session;
use super::{duplex, stream};
use crate::transport::Control;

/// History may hold something new for it: a parked request is answered if so, a stream or
/// socket is fed from its cursor.
pub(super) fn on_wake(core: &mut Core, key: usize) {
    match core.conns.get(key).map(|c| c.state.phase()) {
        Some(Phase::Parked) => delivery::resume(core, key, When::IfAny),
        Some(Phase::Streaming) => stream::feed(core, key, Gaps::Report),
        Some(Phase::Duplex) => duplex::feed(core, key),
        _ => {}
    }
}

/// Its timer fired: a parked request is answered now, with whatever there is and the cursor
/// (a long-poll's hold ended); a stream sends its heartbeat or ends at its age limit; a socket
/// pings, or closes a peer that did not answer the last ping.
pub(super) fn on_timeout(core: &mut Core, key: usize) {
    match core.conns.get(key).map(|c| c.state.phase()) {
        Some(Phase::Parked) => delivery::resume(core, key, When::Now),
        Some(Phase::Streaming) => stream::on_timer(core, key),
        Some(Phase::Duplex) => duplex::on_timer(core, key),
        _ => {}
    }
}

/// The client took its queued output down to the low-water mark: a stream or socket that
/// stopped feeding at the output bound continues from its cursor.
pub(super) fn on_drained(core: &mut Core, key: usize) {
    let Some(conn) = core.conns.get(key) else { return };
    if conn.state.streaming().is_some_and(|s| s.life.is_behind()) {
        stream::feed(core, key, Gaps::Report);
    } else if conn.state.duplex().is_some_and(|d| d.life.is_behind()) {
        duplex::feed(core, key);
    }
}

/// Answers now instead of when a message comes (shutdown, or its session's listen released by
/// a newer request): a parked request gets its reply with the cursor, a stream ends with its
/// resume cursor, a Bayeux socket's held connect is answered (the socket stays open; at
/// shutdown see `on_shutdown`).
pub(super) fn answer_now(core: &mut Core, key: usize) {
    let Some(conn) = core.conns.get(key) else { return };
    match conn.state.phase() {
        Phase::Parked => delivery::resume(core, key, When::Now),
        Phase::Streaming => {
            let next = conn.state.streaming().map_or(0, |stream| stream.cursor);
            stream::end(core, key, Control::End { next });
        }
        Phase::Duplex => bayeux_session::socket_round(core, key, When::Now),
        _ => return,
    }
    io::pump(core, key);
}

/// The server is shutting down: parked requests and streams are answered with their cursor
/// (`answer_now`), and a socket is told where to resume (an `end` with its cursor, or its held Bayeux connect answered) and closed with 1001.
/// Either way the client resumes elsewhere with nothing lost.
pub(super) fn on_shutdown(core: &mut Core, key: usize) {
    match core.conns.get(key).map(|c| c.state.phase()) {
        Some(Phase::Parked | Phase::Streaming) => answer_now(core, key),
        Some(Phase::Duplex) => {
            duplex::shutdown(core, key);
            io::pump(core, key);
        }
        _ => {}
    }
}

/// Counts connection `key`, which has just parked, opened a stream or become a socket, in
/// the subscriber gauges of its kind. Called once per subscriber, after the transition (a
/// parked request that is taken out and parked again with nothing to say stays counted).
pub(super) fn enlist(core: &Core, key: usize) {
    if let Some(kind) = core.conns.get(key).and_then(|conn| conn.state.subscriber_kind()) {
        core.stats().enlisted(kind);
    }
}

/// Undoes what a phase registered elsewhere: its subscriptions in the local index, its
/// gauges, and its place as its session's listening connection. Used when a subscriber is
/// answered, ends, closes, or is handed to another worker, so nothing keeps a key that is
/// about to be reused.
pub(super) fn retire(core: &mut Core, key: usize, vacated: &Vacated) {
    if let Some(session) = vacated.session() {
        core.sessions.listening_ended(session, key, &mut core.conns.timers);
    }
    let Some(kind) = vacated.subscriber_kind() else { return };
    core.stats().retired(kind);
    core.delivery.unwatch(&mut core.hub, key, vacated.selectors());
}
