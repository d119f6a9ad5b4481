//! Publishers inside the server: the simulated data of `--demo` (`web::demo`) and the node's
//! own stats on `/halley/stats` for the dashboard. One thread runs both on a 250 ms clock and
//! publishes like any other publisher: a `PublishReq` on the hub's channel, sequenced, stored
//! and fanned out by the hub.
//!
//! It never blocks anyone: a publish that finds the hub's channel above the publish high-water
//! mark (where workers refuse publishes too) is skipped, not queued. The stats are published
//! only while a dashboard is open: the dashboard renews a lease (`GET /dashboard/watch`, see
//! `want_stats`) every few seconds, so a node nobody watches adds nothing to its history. The
//! thread stops, and is joined, first thing at shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{RecvTimeoutError, Sender};
use log::debug;

use super::publish::HUB_PUBLISH_HIGH_WATER;
use super::Shared;
use crate::hub::{HubCmd, PublishReq};
use crate::web::demo::{Demo, DemoMsg, TICK_MS};
use crate::web::STATS_TOPIC;

/// How long one `GET /dashboard/watch` keeps the stats flowing.
pub(crate) const STATS_LEASE: Duration = Duration::from_secs(30);
/// Ticks between two stats messages (one second).
const STATS_EVERY: u64 = 1000 / TICK_MS;

/// The running feeds thread.
#[derive(Debug)]
pub(super) struct Feeds {
    stop: Sender<()>,
    join: JoinHandle<()>,
}

impl Feeds {
    /// Stops the thread and waits for it (at most one publish round).
    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.join.join();
    }
}

/// Starts the feeds thread when there is anything to feed: the demo (`--demo`) or the stats
/// for the dashboard (the web is on).
pub(super) fn spawn(shared: &Arc<Shared>) -> std::io::Result<Option<Feeds>> {
    let web = &shared.config.web;
    if !web.demo && !web.enabled {
        return Ok(None);
    }
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let shared = Arc::clone(shared);
    let join = std::thread::Builder::new().name("halley-feeds".to_owned()).spawn(move || {
        let mut demo = shared.config.web.demo.then(|| Demo::new(crate::hub::system_clock_ms() | 1));
        let mut out: Vec<DemoMsg> = Vec::new();
        for tick in 0u64.. {
            match stopped.recv_timeout(Duration::from_millis(TICK_MS)) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
            if let Some(demo) = demo.as_mut() {
                out.clear();
                demo.step(&mut out);
                for msg in out.drain(..) {
                    publish(&shared, msg.topic.into(), Some(msg.event), Bytes::from(msg.data));
                }
            }
            if tick % STATS_EVERY == 0
                && shared.config.web.enabled
                && crate::hub::system_clock_ms() < shared.stats_wanted_until.load(Relaxed)
            {
                let stats = super::stats_json(&shared);
                let data = serde_json::to_vec(&stats).unwrap_or_default();
                publish(&shared, STATS_TOPIC.into(), Some("stats"), Bytes::from(data));
            }
        }
    })?;
    Ok(Some(Feeds { stop, join }))
}

/// A dashboard is open: keep publishing the stats for `STATS_LEASE`.
pub(super) fn want_stats(shared: &Shared) {
    let until = crate::hub::system_clock_ms().saturating_add(STATS_LEASE.as_millis() as u64);
    shared.stats_wanted_until.fetch_max(until, Relaxed);
}

/// Hands one JSON message to the hub, or skips it when the hub is busy.
fn publish(shared: &Shared, topic: Arc<str>, event: Option<&str>, data: Bytes) {
    if shared.hub.len() >= HUB_PUBLISH_HIGH_WATER {
        return debug!("feeds: hub busy, skipping a message to {topic}");
    }
    let req = PublishReq {
        topic,
        event: event.map(Into::into),
        content_type: Some("application/json".into()),
        data,
        reply: None,
        idempotency_key: None,
    };
    if shared.hub.try_send(HubCmd::Publish(req)).is_err() {
        debug!("feeds: hub busy or gone, skipping a message");
    }
}
