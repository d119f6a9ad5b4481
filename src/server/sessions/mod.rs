//! The sessions this worker owns (Pushlet, Bayeux): their protocol state, the connection
//! currently listening for each (a parked refresh/connect or an open stream), and each
//! session's expiry timer. Nothing here is shared with other workers: a request for a session
//! owned elsewhere is handed to its owner (`handoff.rs`).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::core::Core;
use crate::server::io;
use crate::server::sessions::bayeux as bayeux_session;
use rustc_hash::FxHashMap;
use slab::Slab;

mod admission;
pub(super) mod bayeux;
pub(super) mod claims;
pub(super) mod handoff;
pub(super) mod pushlet;
pub(super) mod remote;

use super::conns::Conns;
use super::event_loop::Timer;
use super::timer::TimerWheel;
use super::Shared;
use crate::auth::Grant;
use crate::model::Selector;
use crate::server::conn::Phase;
use crate::server::stats::WorkerStats;
use crate::server::subs::ChangeBudget;
use crate::server::subscriber;
use crate::server::timer::TimerKey;

/// One owned session.
#[derive(Debug)]
pub(in crate::server) struct SessionEntry {
    pub id: Box<str>,
    pub state: SessionState,
    /// The connection listening for this session right now, if any.
    pub listening: Option<usize>,
    pub timer: Option<TimerKey>,
    /// How long the session lives without a request (renewed by each one, and while a
    /// connection listens), once it has listened; before that, `--session-join-timeout`.
    pub lease: Duration,
    /// A connection has waited for it (a parked Pushlet refresh or a Pushlet stream, a held
    /// Bayeux connect or a Bayeux socket): from then on it has its full lease and is never
    /// evicted to make room. A request answered at once (a Pushlet poll, a Bayeux connect with
    /// `timeout: 0`) does not count: that is exactly what a flood of joins could send.
    pub used: bool,
    /// Tells this session from a later one in the same slab slot.
    serial: u64,
    /// Topics its client may still add before it must wait (`subs::ChangeBudget`, as for a
    /// WebSocket): churning subscriptions cannot flood the hub with interest changes.
    pub changes: ChangeBudget,
    /// What the session's client may read and publish: the token of its handshake (Bayeux
    /// `ext.auth.token`, or the request's) or join (Pushlet). The session ends when it expires.
    pub grant: Grant,
}

impl SessionEntry {
    pub fn new(id: Box<str>, state: SessionState, lease: Duration) -> SessionEntry {
        let changes = ChangeBudget::new(Instant::now());
        let grant = Grant::Anonymous;
        SessionEntry { id, state, listening: None, timer: None, lease, used: false, serial: 0, changes, grant }
    }

    /// Sets the grant the session's client authenticated with.
    pub fn with_grant(mut self, grant: Grant) -> SessionEntry {
        self.grant = grant;
        self
    }
}

/// Why a session could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Refused {
    /// `--max-sessions` are held, and none of this worker's is an unused one to let go.
    Full,
    /// The client's address created more than `--session-create-rate` sessions per second.
    TooFast,
}

/// What a client is told when it adds topics faster than `subs::CHANGES_PER_SEC`.
pub(in crate::server) fn too_many_changes() -> String {
    use crate::server::subs::{CHANGES_BURST, CHANGES_PER_SEC};
    format!("too many subscription changes: at most {CHANGES_PER_SEC} topics added per second ({CHANGES_BURST} at once); retry later")
}

impl From<Refused> for crate::http::Reject {
    fn from(refused: Refused) -> crate::http::Reject {
        match refused {
            Refused::Full => crate::http::Reject::busy("too many sessions, retry later", 1),
            Refused::TooFast => crate::http::Reject::new(429, "too many new sessions from this address, retry later")
                .with_header("Retry-After", "1"),
        }
    }
}

/// Why a session is removed, for the pool's count and the claims on never-used sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Going {
    /// It ended (left, expired, aborted): its place in the pool is free.
    Ended,
    /// Let go to settle another worker's claim: that worker already took its place.
    Settled,
    /// Let go to make room for a session this worker is creating, which takes its place.
    Replaced,
}

/// The protocol state of a session.
#[derive(Debug)]
pub(in crate::server) enum SessionState {
    Bayeux(Box<crate::protocol::bayeux::Session>),
    Pushlet(Box<crate::protocol::pushlet::Session>),
}

/// The sessions this worker owns, by slab key and by id, with their leases in the worker's
/// timing wheel and their count in the server-wide `--max-sessions` bound.
pub(in crate::server) struct Sessions {
    pub slab: Slab<SessionEntry>,
    by_id: FxHashMap<Box<str>, usize>,
    /// Sessions that have not listened yet, oldest first, as (key, serial, created ms in
    /// `Claims::now_ms`); an entry whose session has since listened or gone is skipped when met
    /// (and the queue is compacted when it outgrows the table).
    unused: VecDeque<(usize, u64, u64)>,
    next_serial: u64,
    /// Session creations per client address (`admission.rs`).
    admission: admission::CreateLimiter,
    /// Bayeux timing advice, and the client-publish policy for Bayeux publishes.
    pub bayeux: crate::protocol::bayeux::Settings,
    worker: usize,
    shared: Arc<Shared>,
    /// Cluster mode: the session a request being dispatched again after its Redis lookup
    /// names (`remote::resume`), so that it is not looked up a second time.
    pub looked_up: Option<Box<str>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("owned", &self.slab.len()).finish()
    }
}

impl Sessions {
    pub fn new(worker: usize, shared: Arc<Shared>, bayeux: crate::protocol::bayeux::Settings) -> Sessions {
        let admission = admission::CreateLimiter::new(shared.config.sessions.create_rate);
        Sessions {
            slab: Slab::new(),
            by_id: FxHashMap::default(),
            unused: VecDeque::new(),
            next_serial: 0,
            admission,
            bayeux,
            worker,
            shared,
            looked_up: None,
        }
    }

    pub fn key_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The key of Pushlet session `id` (a Bayeux client id is no Pushlet session, whatever it
    /// looks like).
    pub fn pushlet_key(&self, id: &str) -> Option<usize> {
        let key = self.key_of(id)?;
        matches!(self.slab.get(key)?.state, SessionState::Pushlet(_)).then_some(key)
    }

    /// Pushlet session `skey`'s protocol state.
    pub fn pushlet(&self, skey: usize) -> Option<&crate::protocol::pushlet::Session> {
        match &self.slab.get(skey)?.state {
            SessionState::Pushlet(session) => Some(session),
            SessionState::Bayeux(_) => None,
        }
    }

    /// Pushlet session `skey`'s protocol state, to change.
    pub fn pushlet_mut(&mut self, skey: usize) -> Option<&mut crate::protocol::pushlet::Session> {
        match &mut self.slab.get_mut(skey)?.state {
            SessionState::Pushlet(session) => Some(session),
            SessionState::Bayeux(_) => None,
        }
    }

    /// Connection `key` now listens for session `skey` (a parked round, a held connect, an open
    /// stream or socket); `listening_conn` checks the record before it is used.
    pub fn listen(&mut self, skey: usize, key: usize) {
        let Some(entry) = self.slab.get_mut(skey) else { return };
        entry.listening = Some(key);
        if !std::mem::replace(&mut entry.used, true) {
            // No longer one another worker may claim (a claim on it, if any, is forgiven when
            // this worker settles: see claims.rs).
            self.shared.session_claims.left(self.worker);
            self.publish_oldest();
        }
    }

    /// Adds a session created for a client at `peer`. Refused when that address creates
    /// sessions faster than `--session-create-rate`, or when the server holds `--max-sessions`
    /// and this worker has no unused session to let go to make room: sessions cannot grow
    /// without bound, and joins alone cannot lock listening clients out.
    pub fn add(
        &mut self,
        entry: SessionEntry,
        peer: Option<IpAddr>,
        timers: &mut TimerWheel<Timer>,
    ) -> Result<usize, Refused> {
        if !self.admission.allow(peer, Instant::now()) {
            return Err(Refused::TooFast);
        }
        self.insert(entry, timers)
    }

    /// Cluster mode: whether a client at `peer` may have a session looked up in Redis now.
    /// A lookup costs a script on Redis and may adopt a session into the pool, so it is
    /// charged like a creation (`--session-create-rate` per address).
    pub fn admit_lookup(&mut self, peer: Option<IpAddr>) -> bool {
        self.admission.allow(peer, Instant::now())
    }

    /// Cluster mode: adds a session adopted from Redis (`remote.rs`), with its id and state;
    /// `used` as its old node had it. It takes a place in the pool like a new session, but is
    /// not counted against its client's creation rate (it was created before).
    pub fn add_adopted(
        &mut self,
        entry: SessionEntry,
        used: bool,
        timers: &mut TimerWheel<Timer>,
    ) -> Result<usize, Refused> {
        let key = self.insert(entry, timers)?;
        if used {
            if let Some(entry) = self.slab.get_mut(key) {
                entry.used = true;
            }
            self.shared.session_claims.left(self.worker);
            self.publish_oldest();
            self.renew(key, timers);
        }
        Ok(key)
    }

    fn insert(&mut self, mut entry: SessionEntry, timers: &mut TimerWheel<Timer>) -> Result<usize, Refused> {
        // A full pool makes room by letting go of the oldest unused session of any worker.
        if !self.take_slot() && !self.make_room(timers) {
            return Err(Refused::Full);
        }
        WorkerStats::add(&self.shared.stats[self.worker].sessions, 1);
        self.next_serial += 1;
        entry.serial = self.next_serial;
        entry.used = false;
        let id = entry.id.clone();
        let key = self.slab.insert(entry);
        self.by_id.insert(id, key);
        let claims = &self.shared.session_claims;
        self.unused.push_back((key, self.next_serial, claims.now_ms()));
        claims.added(self.worker);
        if self.unused.len() > 2 * self.slab.len() + 64 {
            let slab = &self.slab;
            self.unused.retain(|&(k, serial, _)| slab.get(k).is_some_and(|e| e.serial == serial && !e.used));
        }
        self.publish_oldest();
        self.renew(key, timers);
        Ok(key)
    }

    /// Takes one place in the server-wide `--max-sessions` count; false when it is full.
    fn take_slot(&self) -> bool {
        let shared = &self.shared;
        let max = shared.config.sessions.max_sessions;
        shared.sessions.fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// The pool is full: lets go of the oldest session that never listened, of any worker
    /// (`claims.rs`). Another worker's is claimed and that worker removes it on its next turn
    /// (the pool is over its bound by one until then); this worker's own is let go at once and
    /// the new session takes its place. False when no worker has an unclaimed one.
    fn make_room(&mut self, timers: &mut TimerWheel<Timer>) -> bool {
        let mine = self.oldest_unused().map_or(u64::MAX, |(_, _, created)| created);
        let shared = Arc::clone(&self.shared);
        let claims = &shared.session_claims;
        if let Some(owner) = claims.claim_oldest(self.worker, mine) {
            self.shared.sessions.fetch_add(1, Relaxed);
            if let Err(e) = self.shared.peers[owner].waker.wake() {
                log::debug!("worker {}: waking worker {owner} to settle a session claim: {e}", self.worker);
            }
            return true;
        }
        let Some((key, _, _)) = self.oldest_unused() else { return false };
        if !claims.claim_own(self.worker) {
            return false;
        }
        WorkerStats::add(&self.shared.stats[self.worker].sessions_evicted, 1);
        self.remove_as(key, timers, Going::Replaced);
        true
    }

    /// Lets go of as many never-used sessions as other workers claimed here since the last
    /// turn (oldest first), bringing the pool back to its bound. Claims on sessions that have
    /// listened since are forgiven (claims.rs).
    pub fn settle_claims(&mut self, timers: &mut TimerWheel<Timer>) {
        let owed = self.shared.session_claims.take_owed(self.worker);
        for _ in 0..owed {
            let Some((key, _, _)) = self.oldest_unused() else { break };
            WorkerStats::add(&self.shared.stats[self.worker].sessions_evicted, 1);
            self.remove_as(key, timers, Going::Settled);
        }
    }

    /// This worker's oldest session that never listened, as (key, serial, created); stale
    /// entries met on the way are dropped.
    fn oldest_unused(&mut self) -> Option<(usize, u64, u64)> {
        while let Some(&(key, serial, created)) = self.unused.front() {
            if self.slab.get(key).is_some_and(|e| e.serial == serial && !e.used) {
                return Some((key, serial, created));
            }
            self.unused.pop_front();
        }
        None
    }

    /// Tells other workers when this worker's oldest never-used session was created.
    fn publish_oldest(&mut self) {
        let oldest = self.oldest_unused().map(|(_, _, created)| created);
        self.shared.session_claims.set_oldest(self.worker, oldest);
    }

    /// (Re)arms a session's expiry from now: its lease once it has listened, the shorter
    /// `--session-join-timeout` before.
    pub fn renew(&mut self, key: usize, timers: &mut TimerWheel<Timer>) {
        let join_timeout = self.shared.config.sessions.join_timeout;
        let Some(entry) = self.slab.get_mut(key) else { return };
        if let Some(timer) = entry.timer.take() {
            timers.cancel(timer);
        }
        let lease = if entry.used { entry.lease } else { entry.lease.min(join_timeout) };
        let mut at = Instant::now() + lease;
        if let Some(exp) = entry.grant.expires_ms() {
            // The session ends when its token expires, whatever its lease.
            at = at.min(crate::server::auth_deadline(exp));
        }
        entry.timer = Some(timers.insert(at, Timer::Session(key)));
    }

    /// Removes a session; the caller has already released its listening connection.
    pub fn remove(&mut self, key: usize, timers: &mut TimerWheel<Timer>) {
        self.remove_as(key, timers, Going::Ended);
    }

    fn remove_as(&mut self, key: usize, timers: &mut TimerWheel<Timer>, going: Going) {
        let Some(mut entry) = self.slab.try_remove(key) else { return };
        self.by_id.remove(&entry.id);
        remote::forget(&self.shared, &entry.id);
        if let Some(timer) = entry.timer.take() {
            timers.cancel(timer);
        }
        WorkerStats::sub(&self.shared.stats[self.worker].sessions, 1);
        let claims = &self.shared.session_claims;
        match going {
            Going::Ended => {
                // A never-used session ending on its own when all of them were claimed settles
                // one claim: its place in the pool is free.
                if !entry.used && claims.left(self.worker) {
                    claims.settled_by_expiry(self.worker);
                }
                self.shared.sessions.fetch_sub(1, Relaxed);
            }
            Going::Settled => {
                self.shared.sessions.fetch_sub(1, Relaxed);
            }
            // Its place goes to the session being created: the pool's count stays.
            Going::Replaced => {}
        }
        if !entry.used {
            self.publish_oldest();
        }
    }

    /// The connection listening for session `skey`, if it really is (its phase names the
    /// session); a stale record is dropped.
    pub fn listening_conn(&mut self, skey: usize, conns: &Conns) -> Option<usize> {
        let entry = self.slab.get_mut(skey)?;
        let key = entry.listening?;
        if conns.get(key).and_then(|c| c.state.session()) == Some(skey) {
            return Some(key);
        }
        entry.listening = None;
        None
    }

    /// Connection `key` stopped listening for session `skey` (closed or answered).
    pub fn listening_ended(&mut self, skey: usize, key: usize, timers: &mut TimerWheel<Timer>) {
        let Some(entry) = self.slab.get_mut(skey) else { return };
        if entry.listening != Some(key) {
            return;
        }
        entry.listening = None;
        if let SessionState::Bayeux(session) = &mut entry.state {
            // A Bayeux session expires `maxInterval` after its last connect ended.
            session.connect_ended(crate::hub::system_clock_ms());
            self.renew(skey, timers);
        }
    }
}

/// A session's lease ran out: while a connection listens the lease runs on, otherwise the
/// session and everything it holds go.
pub(in crate::server) fn on_timer(core: &mut Core, key: usize) {
    let Some(entry) = core.sessions.slab.get_mut(key) else { return };
    entry.timer = None;
    if entry.grant.is_expired() {
        return end_expired(core, key);
    }
    if let SessionState::Bayeux(_) = entry.state {
        return bayeux_session::expiry(core, key);
    }
    // A Pushlet lease runs on while a listen is open; without one the session goes.
    if core.sessions.listening_conn(key, &core.conns).is_some() {
        core.sessions.renew(key, &mut core.conns.timers);
        // A stream's cursor moved on meanwhile, and its record must outlive the lease too.
        return remote::save(core, key);
    }
    core.sessions.remove(key, &mut core.conns.timers);
}

/// The session's token expired: the session ends, and its listening connection is answered
/// (a Bayeux connect with `402 unknown client` and `reconnect: handshake`, a Pushlet stream with
/// an abort event), so the client handshakes or joins again with a fresh token.
fn end_expired(core: &mut Core, skey: usize) {
    let listener = core.sessions.listening_conn(skey, &core.conns);
    core.sessions.remove(skey, &mut core.conns.timers);
    let Some(key) = listener else { return };
    match core.conns.get(key).map(|c| c.state.phase()) {
        Some(Phase::Streaming) => {
            let next = core.conns.get(key).and_then(|c| c.state.streaming()).map_or(0, |s| s.cursor);
            crate::server::stream::end(core, key, crate::transport::Control::Expired { next });
            io::pump(core, key);
        }
        Some(_) => subscriber::answer_now(core, key),
        None => {}
    }
}

/// The worker owning session `id` (by the id's prefix) when that is not this one: the
/// request goes there.
pub(in crate::server) fn foreign_owner(core: &Core, id: &str) -> Option<usize> {
    remote::owner(core, id).filter(|&owner| owner != core.id)
}

/// Answers the session's listening connection now (a held connect, a parked refresh, an
/// open stream ends), so a newer request or a leave/disconnect takes over.
pub(in crate::server) fn release_listening(core: &mut Core, skey: usize) {
    let Some(key) = core.sessions.listening_conn(skey, &core.conns) else { return };
    if let Some(entry) = core.sessions.slab.get_mut(skey) {
        entry.listening = None;
    }
    let Some(conn) = core.conns.get(key) else { return };
    if conn.state.is_subscriber() {
        subscriber::answer_now(core, key);
    }
}

/// The session's subscriptions changed: its listening connection waits on the new
/// selectors and re-reads history at once.
pub(in crate::server) fn rewatch_listening(core: &mut Core, skey: usize, selectors: Box<[Selector]>) {
    let Some(key) = core.sessions.listening_conn(skey, &core.conns) else { return };
    let Some(conn) = core.conns.get_mut(key) else { return };
    let state = &mut conn.state;
    let old = match state.phase() {
        Phase::Parked => state.parked_mut().map(|p| std::mem::replace(&mut p.selectors, selectors.clone())),
        Phase::Streaming => state.streaming_mut().map(|s| std::mem::replace(&mut s.selectors, selectors.clone())),
        Phase::Duplex => {
            state.duplex_mut().map(|d| std::mem::replace(&mut d.selectors, selectors.to_vec()).into_boxed_slice())
        }
        _ => None,
    };
    let Some(old) = old else { return };
    core.delivery.unwatch(&mut core.hub, key, &old);
    let head = core.shared.store.head();
    core.delivery.watch(&mut core.hub, key, &selectors, head);
    subscriber::on_wake(core, key);
    io::pump(core, key);
}
