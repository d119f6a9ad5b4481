//! The server machinery: worker threads with their poll loops, the hub thread, and the
//! process-level start/stop.
//!
//! `start` builds everything and returns a handle (tests use it with port 0); `run` is what
//! `halley serve` does: start, wait for SIGINT/SIGTERM, shut down gracefully.

mod access_log;
mod conn;
mod conns;
mod core;
mod delivery;
mod dispatch;
mod duplex;
mod event_loop;
mod feeds;
mod io;
mod listener;
mod metrics;
mod pool;
mod publish;
mod reload;
pub mod session_id;
mod sessions;
mod stats;
mod stream;
mod subs;
mod subscriber;
pub mod timer;
pub mod tls;
mod web;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use log::{info, warn};
use mio::{Poll, Waker};

pub use self::stats::WorkerStats;
use crate::config::{Access, Config};
use crate::hub::{self, HubCmd, HubHandle, WorkerLink};
use crate::store::state::StateDir;
use crate::store::{MemoryStore, Store};
use crate::transport::{multipart, StreamCtx};

/// Batches a worker's channel from the hub holds before the hub waits (then drops, see hub).
const WORKER_CHANNEL_BATCHES: usize = 1024;
/// Hand-offs a worker's inbox holds; a hand-off to a full inbox is answered 503 instead.
const HANDOFF_INBOX: usize = 1024;
/// Commands the hub's channel holds (publishes are refused at 3/4 of it; see the worker).
const HUB_CHANNEL: usize = 64 * 1024;

/// State every worker reads: configuration, the store, the hub's channel, counters.
pub(crate) struct Shared {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub hub: Sender<HubCmd>,
    pub hub_stats: Arc<hub::HubStats>,
    pub stats: Box<[WorkerStats]>,
    /// Open connections across all workers, checked against `max_connections`.
    pub connections: AtomicUsize,
    /// Pushlet and Bayeux sessions across all workers, checked against `max_sessions`.
    pub sessions: AtomicUsize,
    /// Each worker's never-used sessions, for making room in a full pool across workers.
    pub(in crate::server) session_claims: sessions::claims::Claims,
    pub shutdown: AtomicBool,
    /// What every streaming frame depends on besides its message (epoch, multipart boundary).
    pub stream_ctx: StreamCtx,
    /// Every worker's hand-off inbox, for handing a connection to the worker that owns its
    /// session.
    pub peers: Vec<Peer>,
    /// Until when (unix ms) a dashboard wants the stats on `/halley/stats` (`feeds.rs`).
    pub stats_wanted_until: AtomicU64,
    /// The CORS lists in force (`config.access` until a SIGHUP reload changes them); each
    /// worker keeps a copy and takes the new one when `access_generation` moves.
    pub access: RwLock<Arc<Access>>,
    pub access_generation: AtomicU64,
    /// `--access-log`: off, or the channel to its writer thread.
    pub access_log: access_log::AccessLog,
    /// Who may publish and read (`crate::auth`); `Auth::reload` replaces it at run time.
    pub auth: crate::auth::Auth,
    /// The HTTP listener's TLS config, swapped by `tls::TlsCell::reload` (None: plain TCP).
    pub tls: Option<tls::TlsCell>,
    /// Cluster mode: the thread keeping sessions in Redis (`sessions/remote.rs`).
    pub cluster_sessions: Option<Arc<crate::store::RedisSessions>>,
    /// Cluster mode: the shared log (for its link state in `/metrics`).
    pub log: Option<Arc<dyn hub::SharedLog>>,
}

/// How a worker reaches another: that worker's bounded inbox of hand-offs and its mio Waker.
/// Separate from the hub's channel so the hub never sees a server type.
#[derive(Debug)]
pub(crate) struct Peer {
    pub handoffs: Sender<Box<Handoff>>,
    pub waker: Arc<Waker>,
}

/// A connection on its way to the worker that owns its session, with the complete request
/// that needs the session, its body, and any bytes already read after it (pipelining).
#[derive(Debug)]
pub(crate) struct Handoff {
    /// The socket, with its TLS session when it has one (the session travels with it).
    pub(crate) sock: conn::Socket,
    pub(crate) carry: Carry,
    pub(crate) inbuf: Option<Vec<u8>>,
    /// Output queued but not yet written.
    pub(crate) out: io::OutQueue,
    pub(crate) peer_closed: bool,
}

/// What a handed-over connection brings besides its socket.
#[derive(Debug)]
pub(crate) enum Carry {
    /// A complete HTTP request and its body, to dispatch on the owner.
    Request(crate::http::Request, Vec<u8>),
    /// A Bayeux WebSocket, taken over at a frame boundary, the batch (the text of the frame)
    /// that named the session, whether the page that opened it may publish, and the socket's
    /// grant (from its upgrade request: what its handshakes fall back to).
    BayeuxSocket { batch: String, may_publish: bool, grant: crate::auth::Grant },
    /// Cluster mode: a request for a session this node did not hold, back from the session
    /// thread's lookup in Redis (`sessions/remote.rs`).
    Looked { request: crate::http::Request, body: Vec<u8>, found: crate::store::Lookup },
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("config", &self.config).field("store_epoch", &self.store.epoch()).finish()
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    raw_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    hub: Option<HubHandle>,
    /// The demo and stats publisher, when there is one.
    feeds: Option<feeds::Feeds>,
    /// With `--state-dir`: where the history goes at shutdown, and the store to save.
    state: Option<(StateDir, Arc<MemoryStore>)>,
    /// Cluster mode: the shared log, whose threads stop after the hub.
    log: Option<Arc<dyn hub::SharedLog>>,
}

/// How long a stopping server waits for the cluster log's threads (the tail may be in a
/// blocking read of up to its block time plus slack when Redis does not answer).
const LOG_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(4);

/// Binds the listeners and starts the hub and the workers, with history in memory
/// (`MemoryStore`, bounded by `config.history`). With `config.state_dir`, the history a
/// graceful shutdown saved there is restored (and the saved file consumed, `store::state`), and
/// `Server::shutdown` saves it again.
pub fn start(config: Config) -> std::io::Result<Server> {
    if let Some(url) = &config.network.redis {
        // Cluster mode: the Redis log is both the history and the sequencer.
        if config.state_dir.is_some() {
            warn!("--state-dir is not used with --redis: the Redis log holds the history");
        }
        let store = crate::store::RedisStore::connect(url, config.history)?;
        let log: Arc<dyn hub::SharedLog> = store.clone();
        return start_inner(config, store, Some(log));
    }
    let Some(dir) = config.state_dir.clone() else {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(config.history));
        return start_with_store(config, store);
    };
    let state = StateDir::open(&dir)?;
    let store = Arc::new(state.take(config.history)?);
    match start_with_store(config, Arc::clone(&store) as Arc<dyn Store>) {
        Ok(mut server) => {
            server.state = Some((state, store));
            Ok(server)
        }
        Err(e) => {
            // Nothing was served (binding the listeners is what fails): give the consumed
            // history back, so the next attempt starts where the last graceful stop left off.
            if let Err(save) = state.save(&store) {
                warn!("{save}");
            }
            Err(e)
        }
    }
}

/// Like `start`, with another history backend (it follows the `Store` contract: reads never
/// block; history outside the process is announced through `Store::on_loaded`).
pub fn start_with_store(config: Config, store: Arc<dyn Store>) -> std::io::Result<Server> {
    start_inner(config, store, None)
}

fn start_inner(config: Config, store: Arc<dyn Store>, log: Option<Arc<dyn hub::SharedLog>>) -> std::io::Result<Server> {
    config.validate().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    // A certificate or key that cannot be used stops the start, before anything is bound.
    let tls = config.tls.as_ref().map(tls::TlsCell::load).transpose()?;
    let n = config.workers;
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let auth = crate::auth::Auth::new(&config.auth).map_err(invalid)?;
    let listeners = listener::bind_all(config.network.listen, n, config.network.backlog)?;
    let addr = listeners[0].local_addr()?;
    let (raw_listeners, raw_addr) = match config.network.raw_listen {
        Some(raw) => {
            let raw = listener::bind_all(raw, n, config.network.backlog)?;
            let addr = raw[0].local_addr()?;
            (raw.into_iter().map(Some).collect(), Some(addr))
        }
        None => ((0..n).map(|_| None).collect::<Vec<_>>(), None),
    };
    // The admin listener is one socket, served by worker 0.
    let (mut admin_listener, admin_addr) = match config.network.admin_listen {
        Some(admin) => {
            let listener = listener::bind_all(admin, 1, config.network.backlog)?.pop();
            let addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
            (listener, addr)
        }
        None => (None, None),
    };
    let mut polls = Vec::with_capacity(n);
    let mut links = Vec::with_capacity(n);
    let mut peers = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), event_loop::WAKER)?);
        let (tx, rx) = crossbeam_channel::bounded(WORKER_CHANNEL_BATCHES);
        let (handoff_tx, handoff_rx) = crossbeam_channel::bounded(HANDOFF_INBOX);
        peers.push(Peer { handoffs: handoff_tx, waker: Arc::clone(&waker) });
        links.push(WorkerLink { tx, waker });
        receivers.push((rx, handoff_rx));
        polls.push(poll);
    }
    let access_log = access_log::AccessLog::open(config.access_log.as_deref(), config.log_format)?;
    // Sessions go to Redis with the log (cluster mode only).
    let cluster_sessions = match (&log, &config.network.redis) {
        (Some(_), Some(url)) => Some(crate::store::RedisSessions::start(url)?),
        _ => None,
    };
    let options = hub::HubOptions { cmd_capacity: HUB_CHANNEL, log: log.clone(), ..hub::HubOptions::default() };
    let hub = hub::spawn_with(Arc::clone(&store), links, options)?;
    let stream_ctx = StreamCtx {
        epoch: store.epoch(),
        boundary: multipart::new_boundary()?.into(),
        retry_ms: u64::try_from(config.streams.sse_retry.as_millis()).unwrap_or(u64::MAX),
    };
    let shared = Arc::new(Shared {
        store,
        hub: hub.tx.clone(),
        hub_stats: Arc::clone(&hub.stats),
        stats: (0..n).map(|_| WorkerStats::default()).collect(),
        connections: AtomicUsize::new(0),
        sessions: AtomicUsize::new(0),
        session_claims: sessions::claims::Claims::new(n),
        shutdown: AtomicBool::new(false),
        stream_ctx,
        peers,
        stats_wanted_until: AtomicU64::new(0),
        access: RwLock::new(Arc::new(config.access.clone())),
        access_generation: AtomicU64::new(0),
        access_log,
        auth,
        tls,
        cluster_sessions,
        log: log.clone(),
        config,
    });

    let cores = if !shared.config.pin_workers { None } else { core_affinity::get_core_ids() };
    let mut workers = Vec::with_capacity(n);
    let sockets = listeners.into_iter().zip(raw_listeners);
    for (id, ((poll, (listener, raw)), (rx, handoffs))) in polls.into_iter().zip(sockets).zip(receivers).enumerate() {
        let admin = if id == 0 { admin_listener.take() } else { None };
        let listeners = event_loop::Listeners { http: listener, raw, admin };
        let worker = event_loop::Worker::new(id, Arc::clone(&shared), poll, listeners, rx, handoffs)?;
        let core = cores.as_ref().and_then(|ids| ids.get(id % ids.len().max(1)).copied());
        let handle = std::thread::Builder::new().name(format!("halley-worker-{id}")).spawn(move || {
            if let Some(core) = core {
                if !core_affinity::set_for_current(core) {
                    warn!("worker {id}: could not pin to core {}", core.id);
                }
            }
            worker.run();
        })?;
        workers.push(handle);
    }
    let scheme = if shared.tls.is_some() { "https" } else { "http" };
    info!(
        "halley listening on {scheme}://{addr} with {n} workers ({})",
        if cores.is_some() { "pinned to cores" } else { "not pinned" }
    );
    if let Some(raw) = raw_addr {
        info!("halley raw TCP listener on {raw}");
    }
    if let Some(admin) = admin_addr {
        info!("admin listener on http://{admin} (/metrics, /stats, /ready, /health)");
    }
    log_auth(&shared.config, addr, raw_addr);
    let feeds = feeds::spawn(&shared)?;
    if shared.config.web.enabled {
        info!("pages: {scheme}://{addr}/ (demos, dashboard; --no-web turns them off)");
    }
    if shared.config.web.demo {
        info!("demo: publishing simulated data to /stocks/*, /monitor/*, /chat/lobby and /orders/*");
    }
    Ok(Server { addr, raw_addr, admin_addr, shared, workers, hub: Some(hub), feeds, state: None, log })
}

/// The `Instant` a token expiring at `expires_ms` (unix ms) expires at, for the worker's timers.
pub(crate) fn auth_deadline(expires_ms: u64) -> std::time::Instant {
    let left = expires_ms.saturating_sub(crate::auth::now_ms());
    std::time::Instant::now() + std::time::Duration::from_millis(left.min(crate::config::MAX_SECONDS as u64 * 1000))
}

/// Says at startup how clients are authorised, loudly when anyone on the network may reach a
/// server that checks no token.
fn log_auth(config: &Config, addr: SocketAddr, raw: Option<SocketAddr>) {
    if config.auth.is_on() {
        let public = &config.auth.public_subscribe;
        info!("auth: tokens required to publish and subscribe (public reads: {public:?}; see docs/AUTH.md)");
        return;
    }
    let exposed: Vec<String> =
        [Some(addr), raw].into_iter().flatten().filter(|a| !a.ip().is_loopback()).map(|a| a.to_string()).collect();
    if exposed.is_empty() {
        info!("auth: off; clients publish from loopback only, anyone who reaches the port reads");
    } else {
        warn!(
            "!!! auth is OFF and halley listens on {} (not loopback): anyone who reaches it can read \
             every topic; clients publish only from loopback. Set [auth] secret or public_key \
             (docs/AUTH.md) before exposing it !!!",
            exposed.join(", ")
        );
    }
}

/// `halley serve`: runs until SIGINT or SIGTERM, then shuts down gracefully. A second signal
/// exits at once. SIGHUP calls `load` for the configuration as it is now (the file and the
/// environment read again) and applies what can change at run time (`reload.rs`); it never
/// ends the server.
pub fn run(config: Config, load: &dyn Fn() -> Result<Config, String>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let mut current = config.clone();
    let server = start(config)?;
    for signal in signals.forever() {
        if signal == SIGHUP {
            reload::reload(&server.shared, &mut current, load);
            continue;
        }
        info!("signal {signal}: shutting down (a second signal exits at once)");
        break;
    }
    std::thread::spawn(move || {
        if signals.forever().any(|signal| signal != SIGHUP) {
            std::process::exit(130);
        }
    });
    server.stop()
}

impl Server {
    /// The address the listeners are bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The raw TCP listener's address, when `--raw-listen` is set.
    pub fn raw_addr(&self) -> Option<SocketAddr> {
        self.raw_addr
    }

    /// The admin listener's address, when `--admin-listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Replaces the token policy (keys re-read from their files) and says what changed; on
    /// error the old policy stays. Checks made from now on, also on connections and sessions
    /// already open, use the new one. For the SIGHUP reload.
    pub fn reload_auth(&self, auth: &crate::config::Auth) -> Result<Vec<String>, String> {
        self.shared.auth.reload(auth)
    }

    /// The `/stats` document.
    pub fn stats(&self) -> serde_json::Value {
        stats_json(&self.shared)
    }

    /// Re-reads the TLS certificate and key (`--tls-cert`, `--tls-key`) and gives them to the
    /// connections accepted from now on; open connections keep theirs. On error the old ones
    /// stay. `Ok(None)` when the server has no TLS.
    pub fn reload_tls(&self) -> Result<Option<tls::Reloaded>, tls::TlsError> {
        self.shared.tls.as_ref().map(tls::TlsCell::reload).transpose()
    }

    /// Graceful shutdown: workers stop accepting, answer parked long-polls with their cursors,
    /// let requests in progress finish, and exit by the shutdown deadline; then the hub stops,
    /// and with `--state-dir` the history is saved (an error saving it is logged).
    pub fn shutdown(self) {
        if let Err(e) = self.stop() {
            log::error!("{e}");
        }
    }

    /// `shutdown`, returning the error of saving the history (`--state-dir`), if any.
    pub fn stop(mut self) -> std::io::Result<()> {
        if let Some(feeds) = self.feeds.take() {
            feeds.stop();
        }
        self.shared.shutdown.store(true, SeqCst);
        info!("draining: /ready answers 503, parked requests are answered, new connections refused");
        for peer in &self.shared.peers {
            let _ = peer.waker.wake();
        }
        let mut panicked = None;
        for handle in self.workers.drain(..) {
            if let Err(panic) = handle.join() {
                panicked = Some(panic);
            }
        }
        // Cluster mode: the workers saved their sessions' last cursors; those writes go out,
        // then the heartbeat goes, so other nodes adopt the sessions at once.
        if let Some(sessions) = &self.shared.cluster_sessions {
            sessions.stop(LOG_STOP_WAIT);
        }
        if let Some(hub) = self.hub.take() {
            let _ = hub.tx.send(HubCmd::Shutdown);
            let _ = hub.join.join();
        }
        if let Some(log) = self.log.take() {
            log.stop(LOG_STOP_WAIT);
        }
        // Only now: the workers are gone and the hub has appended every publish they sent it
        // (their commands came before `Shutdown` on its channel), so nothing is appended after
        // the snapshot.
        let saved = match self.state.take() {
            Some((state, store)) => state.save(&store),
            None => Ok(()),
        };
        info!("halley stopped");
        // A worker's debug assertion (e.g. its subscriber gauges not back to zero once its
        // last connection closed) fails the caller, a test most likely, instead of a line in
        // its output.
        if let Some(panic) = panicked.filter(|_| cfg!(debug_assertions) && !std::thread::panicking()) {
            std::panic::resume_unwind(panic);
        }
        saved
    }
}

pub(crate) fn stats_json(shared: &Shared) -> serde_json::Value {
    // Each worker's latency window is merged once, for its own figures and the node's.
    let windows: Vec<_> = shared.stats.iter().map(WorkerStats::latency_window).collect();
    let workers: Vec<serde_json::Value> =
        shared.stats.iter().zip(&windows).map(|(worker, window)| worker.snapshot_with(window)).collect();
    let store = shared.store.stats();
    let latency = stats::merged_latency(&windows);
    let mut out = serde_json::json!({
        "workers": workers,
        "fanout_latency_ms": stats::latency_json(&latency),
        "hub": shared.hub_stats.snapshot(),
        "store": {
            "head": shared.store.head(),
            "topics": store.topics,
            "messages": store.messages,
            "bytes": store.bytes,
        },
        "process": { "rss_bytes": stats::rss_bytes() },
    });
    // Cluster mode: the links to Redis (a frozen or half-open Redis shows here as down).
    if let Some(log) = &shared.log {
        let link = log.link();
        out["store"]["log"] = serde_json::json!({
            "up": link.up, "tail_up": link.tail_up, "tail_seq": link.tail_seq, "downs": link.downs,
        });
    }
    out
}
