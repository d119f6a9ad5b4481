//! `Core`: what one worker's request handlers work with, everything the worker owns except its
//! event loop's `mio` machinery (the poll, the listeners, the inboxes, which are `Worker`'s in
//! `event_loop.rs`).
//!
//! Handlers are free functions in the module of their protocol or transport, taking
//! `core: &mut Core`: `stream::feed(core, key, ..)` says at the call site which file the
//! step lives in, which a method on one large worker type did not. Each part of `Core` is a
//! type with its own rules (`Conns`, `Delivery`, `HubLink`, `Sessions`), and the policies
//! derived from the configuration live with the part that applies them; a handler borrows the
//! parts it uses side by side (`core.delivery.watch(&mut core.hub, ..)`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::conns::Conns;
use super::delivery::Delivery;
use super::publish::{ClientPublish, HubLink};
use super::sessions::Sessions;
use super::stats::WorkerStats;
use super::Shared;
use crate::protocol::bayeux;
use crate::transport::StreamCtx;
use crate::xorshift::XorShift;

/// One worker's connections, subscribers, sessions and hub link.
pub(super) struct Core {
    /// The worker's index (its core, its hub channel, its session ids).
    pub id: usize,
    /// The configuration, the store, the counters: shared by every worker and the hub.
    pub shared: Arc<Shared>,
    /// Every connection, their timers and read buffers (`conns.rs`, `io.rs`).
    pub conns: Conns,
    /// The local subscription index, delivery counts, the reply cache (`delivery.rs`).
    pub delivery: Delivery,
    /// The worker's side of the hub's channel (`publish.rs`).
    pub hub: HubLink,
    /// The Pushlet and Bayeux sessions this worker owns, with the Bayeux settings (`sessions/`).
    pub sessions: Sessions,
    /// This worker's copy of `Shared::stream_ctx`, its epoch refreshed from the store before
    /// each use (`stream::ctx`).
    pub stream_ctx: StreamCtx,
}

impl Core {
    pub(super) fn new(id: usize, shared: Arc<Shared>, conns: Conns) -> Core {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let rng = XorShift::new(seed ^ ((id as u64 + 1) << 32));
        let client_publish = ClientPublish::from_config(&shared.config);
        let bayeux = bayeux_settings(&shared.config, &client_publish);
        Core {
            id,
            conns,
            delivery: Delivery::new(id, Arc::clone(&shared), rng),
            hub: HubLink::new(id, Arc::clone(&shared), client_publish),
            sessions: Sessions::new(id, Arc::clone(&shared), bayeux),
            stream_ctx: shared.stream_ctx.clone(),
            shared,
        }
    }

    /// This worker's counters.
    pub(super) fn stats(&self) -> &WorkerStats {
        &self.shared.stats[self.id]
    }
}

/// Bayeux settings from the configuration; Bayeux publishes follow the client-publish policy.
fn bayeux_settings(config: &crate::config::Config, policy: &ClientPublish) -> bayeux::Settings {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let policy = policy.clone();
    bayeux::Settings {
        timeout_ms: millis(config.sessions.bayeux_timeout),
        interval_ms: 0,
        max_interval_ms: millis(config.sessions.bayeux_max_interval),
        may_publish: Box::new(move |topic| policy.allows(topic)),
    }
}
