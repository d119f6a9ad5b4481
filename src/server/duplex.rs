//! WebSocket and raw TCP connections: one socket carrying JSON commands from the client
//! (`subscribe`, `unsubscribe`, `publish`, `ping`; see `protocol::commands`) and messages,
//! acknowledgements and heartbeats from the server.
//!
//! Both are fed from history by cursor like every other transport. The wire formats are the
//! transports' (`transport::websocket`: RFC 6455 frames, a message as one text frame;
//! `transport::raw`: NUL- or newline-ended command lines, a message as its JSON and a NUL);
//! each message's frame is encoded once per wire format and shared.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::conns::Conns;
use super::core::Core;
use super::delivery::When;
use super::dispatch;
use super::io;
use super::sessions::bayeux as bayeux_session;
use super::subs::{ChangeBudget, CHANGES_BURST, CHANGES_PER_SEC};
use super::subscriber;
use crate::auth::Grant;
use crate::http::{Reject, Request};
use crate::hub::{PublishRefused, Published};
use crate::model::{Message, Selector, Since};
use crate::protocol::commands::{self, Command, Op};
use crate::protocol::native::{Publish, MAX_SELECTORS};
use crate::server::conn::{Cors, Duplex, DuplexFraming, DuplexProtocol, Phase, ReplyMeta};
use crate::server::stats::WorkerStats;
use crate::transport::bound::{Pace, NOTICE_WAIT};
use crate::transport::raw::{self, Line, RawLines};
use crate::transport::socket::{Beat, SocketLife};
use crate::transport::websocket::{self, Event, Opcode};
use crate::transport::Control;

/// Publishes one duplex connection may have waiting for the hub's acknowledgement.
const MAX_PUBLISHES_IN_FLIGHT: usize = 64;
/// Upgrades an HTTP request to a WebSocket (RFC 6455 §4.2), subscribed to `selectors`
/// from `since` when any are given (`/sub/<topics>`), or to nothing yet (`/ws`).
pub(super) fn upgrade_websocket(
    core: &mut Core,
    key: usize,
    meta: ReplyMeta,
    req: &Request,
    selectors: Vec<Selector>,
    since: Since,
    grant: Grant,
) {
    if !upgrade(&mut core.conns, key, meta, req) {
        return;
    }
    let framing = ws_framing(core);
    let may_publish = dispatch::may_publish(&core.conns.access, req);
    start(core, key, framing, may_publish, DuplexProtocol::Native, grant);
    if !selectors.is_empty() {
        subscribe(core, key, selectors, since, None);
    }
}

/// Checks a WebSocket upgrade (origin, RFC 6455 handshake) and queues the 101; false (with
/// the error answered) when refused.
pub(super) fn upgrade(conns: &mut Conns, key: usize, meta: ReplyMeta, req: &Request) -> bool {
    if req.header("origin").is_some() && meta.cors == Cors::None {
        conns.refuse(key, meta, Reject::forbidden("origin not allowed"));
        return false;
    }
    let handshake = match websocket::check_upgrade(req) {
        Ok(handshake) => handshake,
        Err(e) => {
            conns.refuse(key, meta, e.into());
            return false;
        }
    };
    let mut head = Vec::with_capacity(160);
    websocket::write_handshake_response(&mut head, &handshake.accept, None);
    let Some(conn) = conns.get_mut(key) else { return false };
    conn.out.push(Bytes::from(head));
    if let Some(access) = conn.access.as_mut() {
        access.status = 101; // logged when the socket closes
    }
    true
}

/// A connection accepted on the raw TCP listener.
/// It has no token until its first line says `{"op":"auth","token":...}`.
pub(super) fn start_raw(core: &mut Core, key: usize) {
    let grant = core.shared.auth.current().resolve(None, core.conns.peer_ip(key)).unwrap_or(Grant::Anonymous);
    start(core, key, DuplexFraming::Raw(RawLines::default()), true, DuplexProtocol::Native, grant);
}

/// A Bayeux WebSocket (after the upgrade, or handed over by another worker).
/// Starts a Bayeux WebSocket; `may_publish` is what its upgrade's page may do
/// (`dispatch::may_publish`), and `grant` the rights of its upgrade request, both carried along
/// when the socket is handed over (None: resolved here from the peer, without a token).
pub(super) fn start_bayeux_socket(core: &mut Core, key: usize, may_publish: bool, grant: Option<Grant>) {
    let framing = ws_framing(core);
    // A Bayeux socket's rights are its session's (`ext.auth.token` at the handshake); the
    // upgrade request's grant is what a handshake without one falls back to.
    let grant = grant.unwrap_or_else(|| {
        core.shared.auth.current().resolve(None, core.conns.peer_ip(key)).unwrap_or(Grant::Anonymous)
    });
    start(core, key, framing, may_publish, DuplexProtocol::Bayeux(Box::default()), grant);
}

/// WebSocket framing whose frames and messages are bounded by `--ws-max-message`.
fn ws_framing(core: &Core) -> DuplexFraming {
    let max = core.shared.config.streams.ws_max_message;
    DuplexFraming::WebSocket(websocket::Decoder::new(max, max))
}

fn start(
    core: &mut Core,
    key: usize,
    framing: DuplexFraming,
    may_publish: bool,
    protocol: DuplexProtocol,
    grant: Grant,
) {
    let now = Instant::now();
    let interval = core.shared.config.streams.heartbeat_interval;
    let Some(conn) = core.conns.get_mut(key) else { return };
    conn.state.open_duplex(Box::new(Duplex {
        framing,
        selectors: Vec::new(),
        cursor: core.shared.store.head(),
        life: SocketLife::new(now, interval),
        publishes: VecDeque::new(),
        may_publish,
        protocol,
        changes: ChangeBudget::new(now),
        grant,
    }));
    subscriber::enlist(core, key);
    core.conns.set_timer(key, interval);
    arm_timer(&mut core.conns, key);
    if core.conns.is_shutting_down() {
        shutdown(core, key);
    }
}

/// Decodes and handles what the client sent, one frame or line at a time, until the input
/// runs out or the replies waiting for the peer reach the high-water mark (`pump` comes
/// back once it reads). Consumed input is dropped from the buffer once, at the end: shifting
/// a large buffer of small lines after every line would be quadratic.
pub(super) fn process_input(core: &mut Core, key: usize) -> bool {
    let mut consumed = 0;
    let mut progressed = false;
    while let Some(step) = next_step(core, key, &mut consumed) {
        progressed = true;
        match step {
            Step::Fragment => {}
            Step::Ws(Event::Text(text)) => match core.conns.get(key).and_then(|c| c.state.duplex()) {
                Some(duplex) if matches!(duplex.protocol, DuplexProtocol::Bayeux(_)) => {
                    // The frame may hand the socket, with its unread input, to the session's
                    // owner: that input must not include this frame.
                    drop_input(&mut core.conns, key, std::mem::take(&mut consumed));
                    bayeux_session::frame(core, key, &text);
                    if !core.conns.contains(key) {
                        return true;
                    }
                }
                _ => command(core, key, text.as_bytes()),
            },
            Step::Ws(Event::Binary(_)) => {
                close(core, key, 1003, "binary messages are not supported; send JSON text");
                break;
            }
            Step::Ws(Event::Ping(payload)) => ws_frame(&mut core.conns, key, Opcode::Pong, &payload),
            Step::Ws(Event::Pong(_)) => {
                if let Some(duplex) = core.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) {
                    duplex.life.pong();
                }
            }
            Step::Ws(Event::Close { code, .. }) => {
                // Echo the status code, as RFC 6455 §5.5.1 asks, then close.
                close(core, key, code.unwrap_or(1000), "");
                break;
            }
            Step::WsError(code, reason) => {
                close(core, key, code, reason);
                break;
            }
            Step::Raw(Line::Command(line)) if line.iter().all(u8::is_ascii_whitespace) => {}
            Step::Raw(Line::Command(line)) => command(core, key, &line),
            Step::Raw(Line::Policy) => raw_policy(&mut core.conns, key),
            Step::Raw(Line::TooLong) => {
                send(&mut core.conns, key, commands::error(None, "command too long"));
                close(core, key, 1009, "command too long");
                break;
            }
        }
    }
    drop_input(&mut core.conns, key, consumed);
    progressed
}

/// The next frame or line in the input after `consumed` bytes (advanced past it), or `None`
/// when there is no complete one yet or the peer must first read what it was sent.
fn next_step(core: &mut Core, key: usize, consumed: &mut usize) -> Option<Step> {
    let max_line = core.shared.config.streams.ws_max_message;
    let high_water = core.shared.config.network.out_high_water();
    let conn = core.conns.get_mut(key)?;
    if conn.out.len() >= high_water {
        return None;
    }
    let duplex = conn.state.duplex_mut()?;
    let input = conn.inbuf.as_deref()?.get(*consumed..).filter(|input| !input.is_empty())?;
    match &mut duplex.framing {
        DuplexFraming::WebSocket(decoder) => match decoder.decode(input) {
            Ok((0, None)) => None,
            Ok((used, event)) => {
                *consumed += used;
                Some(event.map_or(Step::Fragment, Step::Ws))
            }
            Err(e) => Some(Step::WsError(e.close_code(), e.reason())),
        },
        DuplexFraming::Raw(lines) => {
            let (line, used) = lines.next_line(input, max_line)?;
            *consumed += used;
            Some(Step::Raw(line))
        }
    }
}

/// Drops the first `n` bytes of the connection's input.
fn drop_input(conns: &mut Conns, key: usize, n: usize) {
    if let Some(buf) = conns.get_mut(key).and_then(|c| c.inbuf.as_mut()) {
        buf.drain(..n.min(buf.len()));
    }
}

fn raw_policy(conns: &mut Conns, key: usize) {
    if let Some(conn) = conns.get_mut(key) {
        conn.out.push_static(raw::POLICY);
    }
}

fn command(core: &mut Core, key: usize, text: &[u8]) {
    let command = match commands::parse_command(text) {
        Ok(command) => command,
        Err(e) => return send(&mut core.conns, key, e.reply()),
    };
    match command {
        Command::Subscribe { selectors, since, id } => subscribe(core, key, selectors, since, id.as_deref()),
        Command::Unsubscribe { selectors, id } => unsubscribe(core, key, selectors, id.as_deref()),
        Command::Publish { publish, id } => publish_command(core, key, publish, id),
        Command::Ping { id } => send(&mut core.conns, key, commands::ack(Op::Ping, id.as_deref(), &[])),
        Command::Auth { token, id } => authenticate(core, key, &token, id.as_deref()),
    }
}

/// `auth`: the token for what the connection does from now on (its subscriptions so far
/// stay). A refused token leaves the connection as it was.
fn authenticate(core: &mut Core, key: usize, token: &str, id: Option<&RawValue>) {
    let policy = core.shared.auth.current();
    let grant = match policy.resolve(Some(token), core.conns.peer_ip(key)) {
        Ok(grant) => grant,
        Err(denied) => return send(&mut core.conns, key, commands::denied(id, denied.status(), &denied.reason())),
    };
    let extra: Vec<(&str, serde_json::Value)> = [
        grant.sub().map(|sub| ("sub", serde_json::json!(sub))),
        grant.expires_ms().map(|exp| ("expires", serde_json::json!(exp))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let Some(duplex) = core.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) else { return };
    duplex.grant = grant;
    send(&mut core.conns, key, commands::ack(Op::Auth, id, &extra));
    arm_timer(&mut core.conns, key);
}

/// Adds selectors. Messages on them up to the connection's cursor that are newer than
/// `since` are sent first (the backfill), then everything flows from the one cursor.
fn subscribe(core: &mut Core, key: usize, selectors: Vec<Selector>, since: Since, id: Option<&RawValue>) {
    let store = &core.shared.store;
    let head = store.head();
    let resume = since.resolve(store.epoch(), head);
    let Some(conn) = core.conns.get_mut(key) else { return };
    let Some(duplex) = conn.state.duplex_mut() else { return };
    // Refused by the token policy: this subscribe gets the error, the connection goes on.
    if let Err(denied) = core.shared.auth.current().may_subscribe(&duplex.grant, &selectors) {
        return send(&mut core.conns, key, commands::denied(id, denied.status(), &denied.reason()));
    }
    let fresh: Vec<Selector> = selectors.into_iter().filter(|s| !duplex.selectors.contains(s)).collect();
    if duplex.selectors.len() + fresh.len() > MAX_SELECTORS {
        let reason = format!("at most {MAX_SELECTORS} topics per connection");
        return send(&mut core.conns, key, commands::error(id, &reason));
    }
    // Each selector added costs a token, so churning fresh topics cannot flood the hub.
    if !duplex.changes.take(fresh.len(), Instant::now()) {
        let reason = format!(
            "too many subscription changes: at most {CHANGES_PER_SEC} topics added per second \
             ({CHANGES_BURST} at once); retry later"
        );
        return send(&mut core.conns, key, commands::error(id, &reason));
    }
    // The first subscription sets the cursor, and the feed below delivers from it. A later
    // one joins a cursor that may be ahead of `since`: its topics' messages up to that
    // cursor are sent first (the backfill), the feed covers the rest.
    let first = duplex.selectors.is_empty();
    let backfill_to = if first { 0 } else { duplex.cursor };
    let mut backfill = Vec::new();
    if resume.after < backfill_to && !fresh.is_empty() {
        // The backfill is read whole before the subscription is acknowledged: history still
        // being fetched (a `pending` read) would leave these topics behind the shared cursor,
        // so the client is asked to retry instead, and nothing is half done.
        match read_backfill(core, &fresh, resume.after, backfill_to) {
            Some(msgs) => backfill = msgs,
            None => {
                if let Some(duplex) = core.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) {
                    duplex.changes.refund(fresh.len());
                }
                let reason = "history for these topics is being loaded; retry the subscribe";
                return send(&mut core.conns, key, commands::error(id, reason));
            }
        }
    }
    let Some(duplex) = core.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) else { return };
    if first {
        duplex.cursor = resume.after;
    }
    duplex.selectors.extend(fresh.iter().cloned());
    let names: Vec<&str> = fresh.iter().map(Selector::as_str).collect();
    let ack = commands::ack(Op::Subscribe, id, &[("topics", serde_json::json!(names))]);
    send(&mut core.conns, key, ack);
    if resume.reset {
        let next = resume.after;
        send(&mut core.conns, key, Control::Gap { oldest: None, next }.json(core.shared.store.epoch()));
    }
    messages(core, key, &backfill);
    core.delivery.watch(&mut core.hub, key, &fresh, head);
    feed(core, key);
}

/// The messages on `selectors` with `after < seq <= upto`, read in batches; None if a read was
/// pending. Bounded by what history holds for at most `MAX_SELECTORS` selectors.
fn read_backfill(core: &mut Core, selectors: &[Selector], mut after: u64, upto: u64) -> Option<Vec<Arc<Message>>> {
    let max_batch = core.shared.config.longpoll.max_batch;
    let mut backfill: Vec<Arc<Message>> = Vec::new();
    loop {
        core.delivery.msgs.clear();
        let read = core.shared.store.read(selectors, after, max_batch, &mut core.delivery.msgs);
        if read.pending {
            return None;
        }
        let batch = core.delivery.msgs.iter().filter(|m| m.seq <= upto);
        backfill.extend(batch.cloned());
        // A truncated read may have returned nothing (the store's work bound): go on from
        // where it stopped.
        let next = read.next_cursor(after, &core.delivery.msgs);
        if !read.truncated || next >= upto {
            return Some(backfill);
        }
        after = next;
    }
}

fn unsubscribe(core: &mut Core, key: usize, selectors: Option<Vec<Selector>>, id: Option<&RawValue>) {
    let Some(conn) = core.conns.get_mut(key) else { return };
    let Some(duplex) = conn.state.duplex_mut() else { return };
    let removed: Vec<Selector> = match selectors {
        None => std::mem::take(&mut duplex.selectors),
        Some(selectors) => {
            // Only what the connection holds: the rest was never registered for it.
            let (gone, kept) = std::mem::take(&mut duplex.selectors).into_iter().partition(|s| selectors.contains(s));
            duplex.selectors = kept;
            gone
        }
    };
    core.delivery.unwatch(&mut core.hub, key, &removed);
    send(&mut core.conns, key, commands::ack(Op::Unsubscribe, id, &[]));
}

fn publish_command(core: &mut Core, key: usize, publish: Publish, id: Option<Box<RawValue>>) {
    let Some(conn) = core.conns.get_mut(key) else { return };
    let Some(duplex) = conn.state.duplex_mut() else { return };
    if !duplex.may_publish {
        return send(&mut core.conns, key, commands::error(id.as_deref(), "origin not allowed to publish"));
    }
    if let Err(denied) = core.shared.auth.current().may_publish(&duplex.grant, &publish.topic) {
        return send(&mut core.conns, key, commands::denied(id.as_deref(), denied.status(), &denied.reason()));
    }
    if !core.hub.client_publish.allows(&publish.topic) {
        let reason = "clients may not publish to this topic (--client-publish)";
        return send(&mut core.conns, key, commands::error(id.as_deref(), reason));
    }
    if duplex.publishes.len() >= MAX_PUBLISHES_IN_FLIGHT {
        let reason = format!("at most {MAX_PUBLISHES_IN_FLIGHT} publishes may await acknowledgement");
        return send(&mut core.conns, key, commands::error(id.as_deref(), &reason));
    }
    let tag = match core.hub.submit(key, publish, None) {
        Ok(tag) => tag,
        Err(busy) => return send(&mut core.conns, key, commands::error(id.as_deref(), &busy.reason)),
    };
    if let Some(duplex) = core.conns.get_mut(key).and_then(|c| c.state.duplex_mut()) {
        duplex.publishes.push_back((tag, id));
    }
}

/// The hub stored a publish sent on this connection.
pub(super) fn publish_acked(core: &mut Core, key: usize, tag: u64, outcome: Result<Published, PublishRefused>) {
    let Some(conn) = core.conns.get_mut(key) else { return };
    let Some(duplex) = conn.state.duplex_mut() else { return };
    let Some(pos) = duplex.publishes.iter().position(|(t, _)| *t == tag) else { return };
    let Some((_, id)) = duplex.publishes.remove(pos) else { return };
    let reply = match outcome {
        Err(refused) => commands::error(id.as_deref(), &Reject::from(refused).reason),
        Ok(Published { seq, delivered, .. }) => {
            let message_id = crate::model::MessageId { epoch: core.shared.store.epoch(), seq }.to_string();
            let extra = [("message_id", serde_json::json!(message_id)), ("delivered", serde_json::json!(delivered))];
            commands::ack(Op::Publish, id.as_deref(), &extra)
        }
    };
    send(&mut core.conns, key, reply);
}

/// Queues what history holds after the connection's cursor, up to the output bound.
pub(super) fn feed(core: &mut Core, key: usize) {
    if let Some(duplex) = core.conns.get(key).and_then(|c| c.state.duplex()) {
        if let DuplexProtocol::Bayeux(_) = duplex.protocol {
            // Bayeux delivers with the held connect's reply.
            return bayeux_session::socket_round(core, key, When::IfAny);
        }
    }
    let bound = core.shared.config.network.max_pending_output;
    let max_batch = core.shared.config.longpoll.max_batch;
    loop {
        let now = Instant::now();
        let Some(conn) = core.conns.get_mut(key) else { return };
        let Some(duplex) = conn.state.duplex_mut() else { return };
        if duplex.selectors.is_empty() {
            return;
        }
        match duplex.life.pace(conn.out.len(), bound, now) {
            Pace::Room => {}
            // The peer is not reading: its cursor waits in history.
            Pace::Behind => return,
            Pace::Overflow => return overflow(core, key),
        }
        core.delivery.msgs.clear();
        let read = core.shared.store.read(&duplex.selectors, duplex.cursor, max_batch, &mut core.delivery.msgs);
        let gap = read.gap.then_some(Control::Gap { oldest: read.oldest, next: duplex.cursor });
        duplex.cursor = read.next_cursor(duplex.cursor, &core.delivery.msgs);
        if let Some(gap) = gap {
            WorkerStats::add(&core.shared.stats[core.id].gaps, 1);
            send(&mut core.conns, key, gap.json(core.shared.store.epoch()));
        }
        let msgs = std::mem::take(&mut core.delivery.msgs);
        messages(core, key, &msgs);
        core.delivery.msgs = msgs;
        if !read.truncated {
            return;
        }
    }
}

/// Queues `msgs` in the connection's framing (each encoded once per message and shared by
/// every subscriber using that framing) and counts them delivered.
fn messages(core: &mut Core, key: usize, msgs: &[Arc<Message>]) {
    core.delivery.count(msgs);
    let epoch = core.shared.store.epoch();
    let Some(conn) = core.conns.get_mut(key) else { return };
    let Some(duplex) = conn.state.duplex() else { return };
    for msg in msgs {
        let frame = match duplex.framing {
            DuplexFraming::WebSocket(_) => websocket::message(msg, epoch),
            DuplexFraming::Raw(_) => raw::message(msg, epoch),
        };
        conn.out.push(frame);
    }
}

/// Queues a reply (acknowledgement, error, control) in the connection's framing.
fn send(conns: &mut Conns, key: usize, json: String) {
    let Some(conn) = conns.get_mut(key) else { return };
    let Some(duplex) = conn.state.duplex() else { return };
    match duplex.framing {
        DuplexFraming::WebSocket(_) => ws_frame(conns, key, Opcode::Text, json.as_bytes()),
        DuplexFraming::Raw(_) => conn.out.push(raw::reply(json)),
    }
}

/// Queues one text frame.
pub(super) fn ws_text(conns: &mut Conns, key: usize, payload: Vec<u8>) {
    ws_frame(conns, key, Opcode::Text, &payload);
}

fn ws_frame(conns: &mut Conns, key: usize, opcode: Opcode, payload: &[u8]) {
    let Some(conn) = conns.get_mut(key) else { return };
    let mut frame = Vec::with_capacity(payload.len() + 10);
    websocket::encode_frame(&mut frame, opcode, payload);
    conn.out.push(Bytes::from(frame));
}

/// Heartbeat: a WebSocket ping (a ping still unanswered from the last one means the peer
/// is gone), or a heartbeat line on raw TCP.
pub(super) fn on_timer(core: &mut Core, key: usize) {
    let now = Instant::now();
    let Some(conn) = core.conns.get_mut(key) else { return };
    let Some(duplex) = conn.state.duplex_mut() else { return };
    if duplex.grant.is_expired() {
        return expired(core, key);
    }
    // The timer also fires for a held Bayeux connect's deadline; a heartbeat only when due.
    let pings = matches!(duplex.framing, DuplexFraming::WebSocket(_));
    match duplex.life.beat(now, pings) {
        Beat::Nothing => {}
        Beat::Ping => ws_frame(&mut core.conns, key, Opcode::Ping, b""),
        Beat::Line => conn.out.push_static(raw::HEARTBEAT),
        // A ping went unanswered for a whole interval. If the output is at its bound, the ping
        // may still be waiting behind it: the peer is too slow, which is the bound's business,
        // and it is told so with where to resume. Anything less queued (a peer that vanished
        // stops taking bytes, so a little output always piles up behind it) is no overflow:
        // the peer is gone and is dropped as dead, not counted or reported as too slow.
        Beat::Dead if duplex.life.is_behind() => return overflow(core, key),
        Beat::Dead => return io::close(core, key),
    }
    // A peer that stopped reading is also found here, not only when a message comes;
    // a Bayeux connect whose hold is over is answered.
    feed(core, key);
    arm_timer(&mut core.conns, key);
}

/// The peer stopped reading: the overflow notice with its resume cursor (native commands; a
/// Bayeux socket's client resumes with its session) and a 1008 close, after the output it has
/// not taken yet; the socket closes once they are written or after `NOTICE_WAIT`.
fn overflow(core: &mut Core, key: usize) {
    let Some(duplex) = core.conns.get(key).and_then(|c| c.state.duplex()) else { return };
    let (next, bayeux) = (duplex.cursor, matches!(duplex.protocol, DuplexProtocol::Bayeux(_)));
    WorkerStats::add(&core.stats().overflows, 1);
    if !bayeux {
        send(&mut core.conns, key, Control::Overflow { next }.json(core.shared.store.epoch()));
    }
    close(core, key, 1008, "client too slow: unsent output over the bound");
    core.conns.set_timer(key, NOTICE_WAIT);
}

/// The token the connection authenticated with expired: an `expired` notice with its resume
/// cursor, then a 1008 close ("token expired"); the client reconnects with a fresh token.
fn expired(core: &mut Core, key: usize) {
    let Some(duplex) = core.conns.get(key).and_then(|c| c.state.duplex()) else { return };
    let next = duplex.cursor;
    send(&mut core.conns, key, Control::Expired { next }.json(core.shared.store.epoch()));
    close(core, key, 1008, "token expired");
}

/// The next heartbeat, a held Bayeux connect's deadline, or the token's expiry, whichever
/// comes first.
pub(super) fn arm_timer(conns: &mut Conns, key: usize) {
    let Some(duplex) = conns.get(key).and_then(|c| c.state.duplex()) else { return };
    let mut at = duplex.life.next_heartbeat();
    if let Some(exp) = duplex.grant.expires_ms() {
        at = at.min(crate::server::auth_deadline(exp));
    }
    if let DuplexProtocol::Bayeux(socket) = &duplex.protocol {
        if let Some((_, deadline)) = &socket.held {
            at = at.min(*deadline);
        }
    }
    conns.set_timer(key, at.saturating_duration_since(Instant::now()));
}

/// Ends the connection: a close frame (WebSocket) with `code`, then the usual closing.
fn close(core: &mut Core, key: usize, code: u16, reason: &str) {
    let Some(conn) = core.conns.get_mut(key) else { return };
    if conn.state.phase() != Phase::Duplex {
        return;
    }
    let Some(vacated) = conn.state.end() else { return };
    if let Some(DuplexFraming::WebSocket(_)) = vacated.duplex().map(|d| &d.framing) {
        conn.out.push(Bytes::from(websocket::close_frame(code, reason)));
    }
    subscriber::retire(core, key, &vacated);
    core.conns.set_timer(key, core.shared.config.timeouts.close_write);
}

/// At shutdown: tell the client where to resume, then close (1001 "going away").
pub(super) fn shutdown(core: &mut Core, key: usize) {
    let Some(duplex) = core.conns.get(key).and_then(|c| c.state.duplex()) else { return };
    let (next, bayeux) = (duplex.cursor, matches!(duplex.protocol, DuplexProtocol::Bayeux(_)));
    if bayeux {
        // A held connect is answered; the client reconnects elsewhere with its session.
        bayeux_session::socket_round(core, key, When::Now);
    } else {
        send(&mut core.conns, key, Control::End { next }.json(core.shared.store.epoch()));
    }
    close(core, key, 1001, "server shutting down");
}

/// One thing read from a duplex connection.
enum Step {
    /// A non-final fragment was buffered by the decoder.
    Fragment,
    Ws(Event),
    WsError(u16, &'static str),
    Raw(Line),
}
