//! Streaming responses: the native SSE, ndjson, forever-iframe and multipart transports, and
//! Pushlet's stream mode. The server's side: open (head, first frames, registration), feed
//! from history by cursor, act on the timer, end, overflow. What is due when (the output
//! bound, heartbeats, the age and byte limits) and how the body is framed on the wire is the
//! transport's (`transport::streaming::StreamLife`).

use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::conns::Conns;
use super::core::Core;
use super::delivery::Gaps;
use super::subscriber;
use super::Shared;
use crate::http::{self, Framing};
use crate::model::{Resume, Selector};
use crate::protocol::pushlet;
use crate::server::conn::{Framer, Phase, ReplyMeta, Streaming};
use crate::server::stats::WorkerStats;
use crate::transport::bound::{Pace, NOTICE_WAIT};
use crate::transport::streaming::{Due, StreamLife};
use crate::transport::{Control, StreamCtx, StreamKind};

/// How a stream opens: what it sends first, how often it beats, how long it may live.
pub(super) struct StreamSpec {
    pub framer: Framer,
    pub content_type: String,
    /// Sent right after the head, before any message.
    pub first: Vec<Bytes>,
    pub heartbeat: Duration,
    pub max_age: Duration,
    pub extra_headers: &'static [(&'static str, &'static str)],
    /// When the subscriber's token expires (unix ms): the stream ends then, with an
    /// `expired` notice.
    pub expires_ms: Option<u64>,
}

/// Starts a native streaming transport (`transport=sse|stream|iframe|multipart`).
pub(super) fn start(
    core: &mut Core,
    key: usize,
    meta: ReplyMeta,
    kind: StreamKind,
    selectors: Vec<Selector>,
    resume: Resume,
    gaps: Gaps,
) {
    let config = &core.shared.config;
    let ctx = ctx(&mut core.stream_ctx, &core.shared);
    let mut first = vec![kind.preamble(ctx, resume.after)];
    if resume.reset {
        first.push(kind.control(Control::Gap { oldest: None, next: resume.after }, ctx));
    }
    let spec = StreamSpec {
        content_type: kind.content_type(ctx),
        framer: Framer::Native(kind),
        first,
        heartbeat: config.streams.heartbeat_interval,
        max_age: config.streams.max_age,
        extra_headers: &[("Cache-Control", "no-cache, no-store")],
        expires_ms: None,
    };
    open(core, key, meta, spec, selectors.into_boxed_slice(), resume.after, gaps);
}

/// Starts a streaming response: head, `spec.first`, whatever history is newer than
/// `cursor`, then frames as messages come, with heartbeats, until the client leaves or a
/// limit ends the stream cleanly.
pub(super) fn open(
    core: &mut Core,
    key: usize,
    meta: ReplyMeta,
    spec: StreamSpec,
    selectors: Box<[Selector]>,
    cursor: u64,
    gaps: Gaps,
) {
    let framing = Framing::streaming(meta.version);
    let cors_origin = core.conns.cors_value(meta.cors);
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", &spec.content_type)];
    headers.extend_from_slice(spec.extra_headers);
    // Tells nginx-style proxies not to buffer the stream.
    headers.push(("X-Accel-Buffering", "no"));
    headers.push(("X-Content-Type-Options", "nosniff"));
    if let Some(origin) = cors_origin {
        headers.push(("Access-Control-Allow-Origin", origin));
    }
    let mut head = Vec::with_capacity(256);
    // The stream ends the connection (a clean end, an overflow, or the client leaving).
    http::write_head(&mut head, 200, meta.version, core.conns.date.value(), &headers, framing, false);
    let now = Instant::now();
    let seen_head = core.shared.store.head();
    let StreamSpec { framer, mut first, heartbeat, max_age, expires_ms, .. } = spec;
    let life = StreamLife::new(framing == Framing::Chunked, now, heartbeat, max_age);
    let expires = expires_ms.map(crate::server::auth_deadline);
    let stream = Streaming { selectors, cursor, framer, life, expires };
    let selectors = stream.selectors.clone();
    let Some(conn) = core.conns.get_mut(key) else { return };
    conn.out.push(Bytes::from(head));
    if let Some(access) = conn.access.as_mut() {
        access.status = 200; // logged when the stream ends
    }
    stream.life.push(&mut conn.out, &mut first);
    conn.state.open_stream(Box::new(stream));
    core.delivery.watch(&mut core.hub, key, &selectors, seen_head);
    subscriber::enlist(core, key);
    feed(core, key, gaps);
    if core.conns.is_shutting_down() {
        // Opened during shutdown (a request in progress, or handed over): what history
        // holds has been sent; end with the cursor.
        if let Some(stream) = core.conns.get(key).and_then(|c| c.state.streaming()) {
            let next = stream.cursor;
            return end(core, key, Control::End { next });
        }
    }
    arm_timer(&mut core.conns, key);
}

/// Queues what history holds after the stream's cursor, up to the output bound. A client
/// that does not read stops the feeding (its cursor waits in history); one that stays over
/// the bound for a heartbeat interval is told so and disconnected.
pub(super) fn feed(core: &mut Core, key: usize, mut gaps: Gaps) {
    let store = Arc::clone(&core.shared.store);
    let bound = core.shared.config.network.max_pending_output;
    let max_bytes = core.shared.config.streams.max_bytes;
    let max_batch = core.shared.config.longpoll.max_batch;
    loop {
        let now = Instant::now();
        let Some(conn) = core.conns.get_mut(key) else { return };
        let Some(stream) = conn.state.streaming_mut() else { return };
        match stream.life.pace(conn.out.len(), bound, now) {
            Pace::Room => {}
            // The client is not reading: its cursor waits in history.
            Pace::Behind => return,
            Pace::Overflow => return overflow(core, key),
        }
        core.delivery.msgs.clear();
        // The epoch before the read: a rotation publishes the new cache before the new epoch.
        let ctx = ctx(&mut core.stream_ctx, &core.shared);
        let read = store.read(&stream.selectors, stream.cursor, max_batch, &mut core.delivery.msgs);
        let mut parts = mem::take(&mut core.delivery.parts);
        parts.clear();
        if gaps.reported(read.gap) {
            WorkerStats::add(&core.shared.stats[core.id].gaps, 1);
            parts.push(stream.framer.control(Control::Gap { oldest: read.oldest, next: stream.cursor }, ctx));
            stream.life.push(&mut conn.out, &mut parts);
        }
        for msg in &core.delivery.msgs {
            stream.life.add_sent(msg.data.len());
            match &mut stream.framer {
                // The common case: a chunk encoded once for every subscriber of this kind.
                Framer::Native(kind) if stream.life.chunked() => match kind.chunk(msg, ctx) {
                    Some(chunk) => conn.out.push(chunk),
                    None => {
                        kind.push_message(msg, ctx, &mut parts);
                        stream.life.push(&mut conn.out, &mut parts);
                    }
                },
                Framer::Native(kind) => kind.push_message(msg, ctx, &mut parts),
                Framer::Pushlet { session, writer } => {
                    if let Some(event) = core.sessions.pushlet(*session).and_then(|s| s.data_event(msg)) {
                        parts.push(Bytes::from(writer.event(&event, unix_secs())));
                    }
                }
            }
        }
        stream.cursor = read.next_cursor(stream.cursor, &core.delivery.msgs);
        stream.life.push(&mut conn.out, &mut parts);
        // A Pushlet stream never ends by itself (the original clients stop on an abort).
        let native = matches!(stream.framer, Framer::Native(_));
        let (cursor, over_bytes) = (stream.cursor, native && stream.life.sent_at_least(max_bytes));
        if let Framer::Pushlet { session, .. } = stream.framer {
            if let Some(state) = core.sessions.pushlet_mut(session) {
                state.set_cursor(cursor);
            }
        }
        core.delivery.parts = parts;
        core.delivery.count_read();
        if over_bytes {
            end(core, key, Control::End { next: cursor });
            return;
        }
        if !read.truncated {
            return;
        }
        gaps = Gaps::Report;
    }
}

/// Heartbeat and age limit of a stream (one timer per connection: the earlier of the two).
pub(super) fn on_timer(core: &mut Core, key: usize) {
    let now = Instant::now();
    let bound = core.shared.config.network.max_pending_output;
    let Some(conn) = core.conns.get_mut(key) else { return };
    let Some(stream) = conn.state.streaming_mut() else { return };
    if stream.expires.is_some_and(|at| at <= now) {
        // The token it was opened with has expired: a last notice, and the client comes back
        // with a fresh one from the cursor.
        let next = stream.cursor;
        return end(core, key, Control::Expired { next });
    }
    match stream.life.due(now, conn.out.len(), bound) {
        Due::End => {
            let next = stream.cursor;
            return end(core, key, Control::End { next });
        }
        Due::Overflow => return overflow(core, key),
        Due::Heartbeat => {
            let mut parts = vec![stream.framer.heartbeat(ctx(&mut core.stream_ctx, &core.shared))];
            stream.life.push(&mut conn.out, &mut parts);
            // And a re-read from the cursor (nothing, usually, and then no lock is taken): a wake
            // lost on the way (a store's `Loaded` that overtook the subscriber's interest in a
            // full hub channel) costs at most one heartbeat interval, as on a socket.
            feed(core, key, Gaps::Report);
        }
        Due::Nothing => {}
    }
    arm_timer(&mut core.conns, key);
}

/// The stream ends when the token it was opened with expires (`expires_ms`, unix ms).
pub(super) fn expire_at(conns: &mut Conns, key: usize, expires_ms: u64) {
    let Some(stream) = conns.get_mut(key).and_then(|c| c.state.streaming_mut()) else { return };
    stream.expires = Some(crate::server::auth_deadline(expires_ms));
    arm_timer(conns, key);
}

fn arm_timer(conns: &mut Conns, key: usize) {
    let Some(conn) = conns.get(key) else { return };
    let Some(stream) = conn.state.streaming() else { return };
    let at = stream.expires.map_or(stream.life.deadline(), |expires| expires.min(stream.life.deadline()));
    conns.set_timer(key, at.saturating_duration_since(Instant::now()));
}

/// The frame context with the store's epoch now (a cluster's log may have rotated it since
/// the server started): one load per batch, not per message. It is the worker's own copy
/// (`Core::stream_ctx`), so the fan-out does not clone the multipart boundary's `Arc`, whose
/// count every worker shares, once per stream and batch.
fn ctx<'a>(ctx: &'a mut StreamCtx, shared: &Shared) -> &'a StreamCtx {
    ctx.epoch = shared.store.epoch();
    ctx
}

/// Ends a stream cleanly with a control frame (the resume cursor) and closes.
pub(super) fn end(core: &mut Core, key: usize, control: Control) {
    let Some(conn) = core.conns.get_mut(key) else { return };
    if conn.state.phase() != Phase::Streaming {
        return;
    }
    let Some(vacated) = conn.state.end() else { return };
    subscriber::retire(core, key, &vacated);
    let (Some(mut stream), Some(conn)) = (vacated.into_streaming(), core.conns.get_mut(key)) else { return };
    let ctx = ctx(&mut core.stream_ctx, &core.shared);
    let mut last = vec![stream.framer.control(control, ctx), stream.framer.epilogue(ctx)];
    stream.life.finish(&mut conn.out, &mut last);
    core.conns.set_timer(key, core.shared.config.timeouts.close_write);
}

/// The client stopped reading: end the stream with the overflow notice (the resume cursor)
/// after the output it has not taken yet, and close once that is written or the client has
/// taken nothing for `NOTICE_WAIT`. Nothing more is fed, so its memory stays at the bound. A
/// Pushlet session whose stream overflowed is over too (the original ended a session on a
/// failed write).
pub(super) fn overflow(core: &mut Core, key: usize) {
    let Some(conn) = core.conns.get(key) else { return };
    let Some(stream) = conn.state.streaming() else { return };
    // A stream's session is a Pushlet stream listen's.
    let (next, session) = (stream.cursor, conn.state.session());
    WorkerStats::add(&core.stats().overflows, 1);
    end(core, key, Control::Overflow { next });
    core.conns.set_timer(key, NOTICE_WAIT);
    if let Some(session) = session {
        core.sessions.remove(session, &mut core.conns.timers);
    }
}

impl Framer {
    fn control(&mut self, control: Control, ctx: &StreamCtx) -> Bytes {
        match self {
            Framer::Native(kind) => kind.control(control, ctx),
            Framer::Pushlet { writer, .. } => {
                let event = match control {
                    // Left, or taken over by a newer listen: the original closed it silently.
                    Control::End { .. } if writer.ends_quietly() => return Bytes::new(),
                    Control::End { .. } => pushlet::abort("the session's listen ended"),
                    Control::Overflow { .. } => pushlet::abort("too slow: undelivered events over the bound"),
                    Control::Gap { .. } => pushlet::error(pushlet::LOST),
                    Control::Expired { .. } => pushlet::abort("token expired: join again with a fresh one"),
                };
                Bytes::from(writer.event(&event, unix_secs()))
            }
        }
    }

    fn heartbeat(&mut self, ctx: &StreamCtx) -> Bytes {
        match self {
            Framer::Native(kind) => kind.heartbeat(ctx),
            Framer::Pushlet { writer, .. } => Bytes::from(writer.event(&pushlet::hb(), unix_secs())),
        }
    }

    fn epilogue(&mut self, ctx: &StreamCtx) -> Bytes {
        match self {
            Framer::Native(kind) => kind.epilogue(ctx),
            Framer::Pushlet { writer, .. } => Bytes::from(writer.tail(None)),
        }
    }
}

pub(super) fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
