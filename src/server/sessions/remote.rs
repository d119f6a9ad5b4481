//! Cluster mode (`--redis`): this worker's side of sessions kept in Redis, so that a Pushlet
//! or Bayeux session survives the loss of its node (docs/CLUSTER.md "Sessions").
//!
//! - **Writes.** A session's record (protocol state, lease, grant) is sent to the session
//!   thread (`store::RedisSessions`) whenever it changes in a way a successor must know:
//!   created, subscriptions changed, a round answered (the cursor moved), the lease renewed
//!   while a connection listens. The thread writes it with a TTL of the lease plus the
//!   longest hold, and renews the owner key with it. `Sessions::remove` deletes it.
//! - **Lookups.** A request naming a session this node does not hold is taken out of the
//!   worker (`handoff::detach`) and parked with the session thread, no worker thread waiting;
//!   the answer brings it back through this worker's hand-off inbox (`Carry::Looked`), and
//!   `resume` either installs the adopted session and dispatches the request as if it had
//!   always been here, or dispatches it unchanged so that the protocol's own "unknown session"
//!   answer goes out (Bayeux `402` with `reconnect: handshake`, Pushlet's error that makes the
//!   client join again).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{SessionEntry, SessionState};
use crate::auth::{Grant, GrantRecord};
use crate::http::Request;
use crate::protocol::{bayeux, pushlet};
use crate::server::core::Core;
use crate::server::dispatch;
use crate::server::io;
use crate::server::session_id;
use crate::server::sessions::handoff;
use crate::server::{Carry, Shared};
use crate::store::{Lookup, SessionOp};

/// The record format's version: a record of another version is not adopted.
const VERSION: u8 = 1;

/// One session as Redis keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    v: u8,
    state: Kept,
    lease_ms: u64,
    used: bool,
    grant: GrantRecord,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
enum Kept {
    Bayeux(bayeux::Snapshot),
    Pushlet(pushlet::Snapshot),
}

/// Whether sessions are kept in Redis.
pub(in crate::server) fn enabled(core: &Core) -> bool {
    core.shared.cluster_sessions.is_some()
}

/// Writes session `skey`'s record (after it was created, re-subscribed, or answered a round).
pub(in crate::server) fn save(core: &Core, skey: usize) {
    let Some(cluster) = &core.shared.cluster_sessions else { return };
    let Some(entry) = core.sessions.slab.get(skey) else { return };
    let (state, hold) = match &entry.state {
        SessionState::Bayeux(session) => {
            (Kept::Bayeux(session.snapshot()), Duration::from_millis(core.sessions.bayeux.timeout_ms))
        }
        SessionState::Pushlet(session) => {
            (Kept::Pushlet(session.snapshot()), core.shared.config.sessions.pushlet_read_timeout)
        }
    };
    let lease_ms = u64::try_from(entry.lease.as_millis()).unwrap_or(u64::MAX);
    let record = Record { v: VERSION, state, lease_ms, used: entry.used, grant: entry.grant.record() };
    let Ok(record) = serde_json::to_string(&record) else { return };
    // The record outlives the longest hold plus the lease, so a client parked on its node
    // never finds its session gone from Redis.
    cluster.send(SessionOp::Put { id: entry.id.clone(), record, ttl: entry.lease + hold });
}

/// Session `id` ended on this node: its record goes.
pub(in crate::server) fn forget(shared: &Shared, id: &str) {
    if let Some(cluster) = &shared.cluster_sessions {
        cluster.send(SessionOp::Del { id: id.into() });
    }
}

/// The worker that owns `id` on this node. In cluster mode the id's owner prefix came from
/// the node that made it, which may have more workers: it is taken modulo this node's count,
/// so every worker of this node agrees on one owner.
pub(in crate::server) fn owner(core: &Core, id: &str) -> Option<usize> {
    let workers = core.shared.config.workers;
    if enabled(core) {
        session_id::owner(id, session_id::MAX_OWNERS).map(|o| o % workers.max(1))
    } else {
        session_id::owner(id, workers)
    }
}

/// Whether a request naming `id` should first look for the session in Redis: cluster mode,
/// a well-formed id this worker does not hold, and not a request that was looked up already.
pub(in crate::server) fn wants_lookup(core: &mut Core, id: &str) -> bool {
    if !enabled(core) || session_id::owner(id, session_id::MAX_OWNERS).is_none() {
        return false;
    }
    if core.sessions.key_of(id).is_some() {
        return false;
    }
    core.sessions.looked_up.as_deref() != Some(id)
}

/// Parks connection `key` and its request with the session thread while it looks `id` up.
/// The answer comes back through this worker's hand-off inbox (`resume`).
pub(in crate::server) fn look_up(core: &mut Core, key: usize, id: &str, request: Request, body: Vec<u8>) {
    let Some(cluster) = core.shared.cluster_sessions.clone() else { return };
    // Any well-formed id costs a script on Redis: an address that looks up faster than it
    // may create sessions gets the answer for a session this node does not hold, at once.
    if !core.sessions.admit_lookup(core.conns.peer_ip(key)) {
        core.sessions.looked_up = Some(id.into());
        dispatch::dispatch(core, key, request, body);
        core.sessions.looked_up = None;
        return;
    }
    let carry = Carry::Looked { request, body, found: Lookup::Unavailable };
    let Some(mut parked) = handoff::detach(core, key, carry) else { return };
    let shared = Arc::clone(&core.shared);
    let worker = core.id;
    let reply = Box::new(move |answer: Lookup| {
        if let Carry::Looked { found, .. } = &mut parked.carry {
            *found = answer;
        }
        let peer = &shared.peers[worker];
        match peer.handoffs.try_send(parked) {
            Ok(()) => {
                if let Err(e) = peer.waker.wake() {
                    log::debug!("redis sessions: waking worker {worker}: {e}");
                }
            }
            // The worker's inbox is full: the connection is dropped (closed), as a hand-off
            // to a full inbox would be; its client retries.
            Err(_) => {
                shared.connections.fetch_sub(1, Relaxed);
            }
        }
    });
    cluster.send(SessionOp::Lookup { id: id.into(), at: std::time::Instant::now(), reply });
}

/// A looked-up request is back: install the adopted session (if it was), then dispatch the
/// request as if it had just been read.
pub(in crate::server) fn resume(core: &mut Core, key: usize, request: Request, body: Vec<u8>, found: Lookup) {
    let asked = request_session(&request, &body);
    let id = match found {
        Lookup::Adopted(record) => match adopt(core, &record) {
            Ok(id) => Some(id),
            Err(refused) => {
                // The lookup made this node the owner: a session it will not serve must not
                // stay named after it (no other node would adopt it while this one lives).
                if let (Some(cluster), Some(id)) = (&core.shared.cluster_sessions, &asked) {
                    log::debug!("worker {}: adoption refused: {refused:?}", core.id);
                    let id: Box<str> = id.as_str().into();
                    cluster.send(match refused {
                        Refused::Dead => SessionOp::Del { id },
                        Refused::Busy => SessionOp::Release { id },
                    });
                }
                None
            }
        },
        Lookup::Alive | Lookup::Gone | Lookup::Unavailable => {
            log::debug!("worker {}: session lookup: {found:?}", core.id);
            None
        }
    };
    // The request is dispatched once more; it must not be looked up again if the session
    // is still not here.
    core.sessions.looked_up = id.or_else(|| asked.map(Into::into));
    dispatch::dispatch(core, key, request, body);
    core.sessions.looked_up = None;
    io::pump(core, key);
}

/// The session id a request names (Pushlet `p_id`, Bayeux `clientId`), as `look_up` saw it.
fn request_session(request: &Request, body: &[u8]) -> Option<String> {
    if let Ok(preq) = pushlet::parse_request(request.query(), body) {
        if let Some(id) = preq.id {
            return Some(id.to_string());
        }
    }
    let batch = if request.method() == crate::http::Method::Get {
        bayeux::parse_callback_polling(request.query().unwrap_or("")).ok()?.0
    } else {
        bayeux::parse_batch(body).ok()?
    };
    batch.iter().find_map(|m| m.client_id.as_deref().map(str::to_owned))
}

/// Why a looked-up session was not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The record can never be served (it does not parse, is of another version, its
    /// grant's selectors do not parse, or its token has expired): it is deleted.
    Dead,
    /// This worker cannot take it now (pool full, or not its owner): the owner key is
    /// released, the record kept for another node or a later try.
    Busy,
}

/// Installs the session `record` describes on this worker; its id, or why not (the client is
/// then told to start over).
fn adopt(core: &mut Core, record: &str) -> Result<Box<str>, Refused> {
    let record: Record = match serde_json::from_str(record) {
        Ok(record) => record,
        Err(e) => {
            log::warn!("worker {}: a session record in Redis does not parse: {e}", core.id);
            return Err(Refused::Dead);
        }
    };
    if record.v != VERSION {
        return Err(Refused::Dead);
    }
    let grant = Grant::from_record(record.grant).ok_or(Refused::Dead)?;
    // A session ends when its token expires; one whose token expired while it had no node
    // is over, not adopted with rights nobody holds any more.
    if grant.is_expired() {
        return Err(Refused::Dead);
    }
    let state = match record.state {
        Kept::Bayeux(snap) => SessionState::Bayeux(Box::new(bayeux::Session::restore(snap).ok_or(Refused::Dead)?)),
        Kept::Pushlet(snap) => SessionState::Pushlet(Box::new(pushlet::Session::restore(snap).ok_or(Refused::Dead)?)),
    };
    let id: Box<str> = match &state {
        SessionState::Bayeux(session) => session.client_id().into(),
        SessionState::Pushlet(session) => session.id().into(),
    };
    if core.sessions.key_of(&id).is_some() || owner(core, &id) != Some(core.id) {
        return Err(Refused::Busy);
    }
    let entry = SessionEntry::new(id.clone(), state, Duration::from_millis(record.lease_ms)).with_grant(grant);
    let skey = core.sessions.add_adopted(entry, record.used, &mut core.conns.timers).map_err(|_| Refused::Busy)?;
    log::info!("worker {}: adopted a {} session from Redis", core.id, kind(core, skey));
    save(core, skey);
    Ok(id)
}

fn kind(core: &Core, skey: usize) -> &'static str {
    match core.sessions.slab.get(skey).map(|e| &e.state) {
        Some(SessionState::Bayeux(_)) => "Bayeux",
        Some(SessionState::Pushlet(_)) => "Pushlet",
        None => "gone",
    }
}
