//! Moving a connection to the worker that owns its session.
//!
//! A session lives on one worker and its state is never shared or locked. A request for it
//! that arrives elsewhere (a control request on a second connection, a re-poll on a new
//! connection that the kernel gave to another worker) is handed over whole: the socket,
//! deregistered here, plus the parsed request, its body and any pipelined bytes, through the
//! owner's inbox. The owner registers the socket in its own poll and dispatches the request as
//! if it had read it itself.

use std::sync::atomic::Ordering::Relaxed;

use crossbeam_channel::TrySendError;
use log::debug;

use crate::http::{Reject, Request};
use crate::server::conn::{ReplyMeta, Socket};
use crate::server::core::Core;
use crate::server::delivery::When;
use crate::server::dispatch;
use crate::server::duplex;
use crate::server::io;
use crate::server::io::OutQueue;
use crate::server::sessions::bayeux as bayeux_session;
use crate::server::sessions::remote;
use crate::server::stats::WorkerStats;
use crate::server::subscriber;
use crate::server::{Carry, Handoff};

/// Hands connection `key`, whose complete request is `request` + `body`, to `owner`.
pub(in crate::server) fn hand_off(
    core: &mut Core,
    key: usize,
    owner: usize,
    request: Request,
    body: Vec<u8>,
    meta: ReplyMeta,
) {
    transfer(core, key, owner, Carry::Request(request, body), Some(meta));
}

/// Hands a Bayeux WebSocket to `owner` at a frame boundary, with the batch that named the
/// session (a Faye client handshakes over HTTP, then opens its WebSocket anywhere).
pub(in crate::server) fn hand_off_socket(core: &mut Core, key: usize, owner: usize, batch: String) {
    // A connect it holds for a session owned here is answered before it goes.
    bayeux_session::socket_round(core, key, When::Now);
    let duplex = core.conns.get(key).and_then(|c| c.state.duplex());
    let may_publish = duplex.is_some_and(|d| d.may_publish);
    // The grant goes along: the owner must not give the socket other rights than it had here.
    let grant = duplex.map_or(crate::auth::Grant::Anonymous, |d| d.grant.clone());
    transfer(core, key, owner, Carry::BayeuxSocket { batch, may_publish, grant }, None);
}

/// Moves connection `key` to `owner`. If the owner's inbox is full the connection stays:
/// an HTTP request gets 503 (`meta` says how to answer it), a socket is closed.
fn transfer(core: &mut Core, key: usize, owner: usize, carry: Carry, meta: Option<ReplyMeta>) {
    // Undo what the connection registered here (subscriptions, gauges, a session's
    // listening connection) before its key is freed for reuse.
    // Owners are always below the worker count; looked up first so a miss cannot strand a
    // removed, still-counted connection.
    if owner >= core.shared.peers.len() {
        return;
    }
    let Some(handoff) = detach(core, key, carry) else { return };
    let peer = &core.shared.peers[owner];
    match peer.handoffs.try_send(handoff) {
        Ok(()) => {
            WorkerStats::add(&core.stats().handoffs_out, 1);
            if let Err(e) = peer.waker.wake() {
                debug!("worker {}: waking worker {owner}: {e}", core.id);
            }
        }
        Err(TrySendError::Full(handoff) | TrySendError::Disconnected(handoff)) => {
            // The owner's inbox is full (or it is gone): keep the connection and say so.
            let Handoff { sock, inbuf, out, peer_closed, .. } = *handoff;
            match (meta, adopt_socket(core, sock, inbuf, out, peer_closed)) {
                (Some(meta), Some(key)) => {
                    // The request stays here after all: it is answered here.
                    if let Some(conn) = core.conns.get_mut(key) {
                        conn.state.dispatch();
                    }
                    core.conns.refuse(key, meta, Reject::new(503, "server busy: session owner unreachable"));
                    io::pump(core, key);
                }
                (None, Some(key)) => io::close(core, key),
                (_, None) => {}
            }
        }
    }
}

/// Takes connection `key` out of this worker (its registrations undone, its slot freed, its
/// socket deregistered) as a `Handoff` carrying `carry`: on its way to another worker, or
/// parked with the cluster's session thread while a lookup runs (`remote.rs`).
pub(in crate::server) fn detach(core: &mut Core, key: usize, carry: Carry) -> Option<Box<Handoff>> {
    let conn = core.conns.get_mut(key)?;
    let vacated = conn.state.close();
    subscriber::retire(core, key, &vacated);
    let mut conn = core.conns.take(key)?;
    // The slot is free at once: a stale event for this token in the current batch can only
    // reach a newer connection as a spurious readiness hint, which reads WouldBlock.
    let _ = core.conns.registry().deregister(&mut conn.sock);
    WorkerStats::sub(&core.stats().connections, 1);
    // Unsent output (an earlier pipelined response, queued WebSocket frames) travels too, so
    // responses stay in order.
    Some(Box::new(Handoff { sock: conn.sock, carry, inbuf: conn.inbuf, out: conn.out, peer_closed: conn.peer_closed }))
}

/// Takes a connection handed over by another worker and dispatches its request here.
pub(in crate::server) fn adopt(core: &mut Core, handoff: Handoff) {
    let Handoff { sock, carry, inbuf, out, peer_closed } = handoff;
    WorkerStats::add(&core.stats().handoffs_in, 1);
    let Some(key) = adopt_socket(core, sock, inbuf, out, peer_closed) else { return };
    match carry {
        Carry::Request(request, body) => dispatch::dispatch(core, key, request, body),
        Carry::BayeuxSocket { batch, may_publish, grant } => {
            duplex::start_bayeux_socket(core, key, may_publish, Some(grant));
            bayeux_session::frame(core, key, &batch);
        }
        Carry::Looked { request, body, found } => remote::resume(core, key, request, body, found),
    }
    io::pump(core, key);
}

/// Registers a handed-over socket in this worker's poll and slab.
fn adopt_socket(
    core: &mut Core,
    sock: Socket,
    inbuf: Option<Vec<u8>>,
    out: OutQueue,
    peer_closed: bool,
) -> Option<usize> {
    let key = match core.conns.add(sock) {
        Ok(key) => key,
        Err(e) => {
            debug!("worker {}: register a handed-over connection: {e}", core.id);
            // The socket closes here; the connection it counted against is gone.
            core.shared.connections.fetch_sub(1, Relaxed);
            return None;
        }
    };
    let conn = core.conns.get_mut(key)?;
    conn.inbuf = inbuf;
    conn.out = out;
    conn.peer_closed = peer_closed;
    // Readiness that arrived while the socket was in flight is reported by the registration.
    conn.readable = true;
    WorkerStats::add(&core.stats().connections, 1);
    Some(key)
}
