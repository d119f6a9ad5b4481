//! Counters shared between the workers and whoever reads `/stats`: gauges and counters per
//! worker, the subscriber gauges by transport (`SubscriberKind`), and the fan-out latency
//! window (`LatencyWindow`).
//!
//! Each worker writes only its own `WorkerStats` (single writer), with a relaxed load and a
//! relaxed store: no read-modify-write, so a count costs what a plain `+=` costs and nothing
//! is contended; readers (`/stats`, `/metrics`) sum the workers' values when asked. The
//! latency window is the one part behind a lock: the worker takes it once per batch of fresh
//! messages it queues in a hub turn, a reader once per scrape, so it is almost never contended.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Counters of one worker. Aligned to its own cache lines so workers updating their counters
/// on every delivery don't contend through false sharing.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Open connections (gauge).
    pub connections: AtomicU64,
    /// Long-poll requests waiting for a message (gauge).
    pub parked: AtomicU64,
    /// Open streaming responses: SSE, ndjson, iframe, multipart (gauge).
    pub streaming: AtomicU64,
    /// Pushlet and Bayeux sessions owned by this worker (gauge).
    pub sessions: AtomicU64,
    /// Sessions that never listened, let go to make room in a full `--max-sessions` pool.
    pub sessions_evicted: AtomicU64,
    /// Open WebSocket and raw TCP connections (gauge).
    pub duplex: AtomicU64,
    /// Streaming subscribers disconnected because they stopped reading (output over the bound).
    pub overflows: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Requests parsed since start.
    pub requests: AtomicU64,
    /// Messages published through this worker.
    pub published: AtomicU64,
    /// Message deliveries written to subscribers by this worker.
    pub delivered: AtomicU64,
    /// Connections handed to the worker that owns their session.
    pub handoffs_out: AtomicU64,
    /// Connections received from other workers for a session owned here.
    pub handoffs_in: AtomicU64,
    /// Times accepting paused at the connection limit or on EMFILE/ENFILE.
    pub accept_pauses: AtomicU64,
    /// Bytes written to client sockets (heads, bodies, frames).
    pub bytes_written: AtomicU64,
    /// Replies, frames and events that told a subscriber messages were lost (a history gap).
    pub gaps: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// TLS connections that failed before their handshake completed (not TLS, bad records,
    /// no common cipher or version).
    pub tls_handshake_errors: AtomicU64,
    /// Subscribers by transport (gauges), indexed by `SubscriberKind`. Each is also counted in
    /// its family's gauge (`parked`, `streaming` or `duplex`); `enlisted` and `retired` move
    /// both together.
    pub transports: [AtomicU64; SubscriberKind::ALL.len()],
    /// Publish-to-queue latency of the messages this worker fanned out (`LatencyWindow`).
    pub(crate) latency: Mutex<LatencyWindow>,
}

impl WorkerStats {
    /// Adds `n` to one of this worker's counters. Only the owning worker writes its stats, so
    /// a load and a store suffice (no locked read-modify-write on the delivery path).
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Takes `n` from one of this worker's gauges (single writer, as `add`); returns the old
    /// value.
    pub(crate) fn sub(counter: &AtomicU64, n: u64) -> u64 {
        let old = counter.load(Relaxed);
        counter.store(old.wrapping_sub(n), Relaxed);
        old
    }

    /// A connection became a subscriber of `kind`: its transport's gauge and its family's go
    /// up. The one increment of those gauges (`subscriber::enlist`).
    pub(crate) fn enlisted(&self, kind: SubscriberKind) {
        Self::add(self.family(kind), 1);
        Self::add(&self.transports[kind as usize], 1);
    }

    /// A subscriber of `kind` stopped being one: the one decrement (`subscriber::retire`).
    /// Debug builds stop on a gauge going below zero, the sign of a retire without an enlist.
    pub(crate) fn retired(&self, kind: SubscriberKind) {
        let family = Self::sub(self.family(kind), 1);
        let transport = Self::sub(&self.transports[kind as usize], 1);
        debug_assert!(family > 0 && transport > 0, "subscriber gauges below zero for {}", kind.name());
    }

    /// The latency histogram since start (`LatencyBuckets`), for `/metrics`.
    pub(crate) fn latency_buckets(&self) -> LatencyBuckets {
        self.latency.lock().unwrap_or_else(PoisonError::into_inner).total.clone()
    }

    /// The family gauge a kind is also counted in.
    fn family(&self, kind: SubscriberKind) -> &AtomicU64 {
        use SubscriberKind::*;
        match kind {
            LongPoll | Jsonp | PushletPull | BayeuxHttp => &self.parked,
            Sse | Ndjson | Iframe | Multipart | PushletStream => &self.streaming,
            WebSocket | Raw | BayeuxWs => &self.duplex,
        }
    }

    /// True when no subscriber is counted (each family gauge and each transport's is zero).
    pub(crate) fn no_subscribers(&self) -> bool {
        [&self.parked, &self.streaming, &self.duplex].iter().all(|g| g.load(Relaxed) == 0)
            && self.transports.iter().all(|g| g.load(Relaxed) == 0)
    }

    /// The fan-out latencies recorded in the window, merged into one histogram.
    pub(crate) fn latency_window(&self) -> Histogram<u32> {
        let window = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        window.merged(unix_micros())
    }

    /// A JSON snapshot.
    pub fn snapshot(&self) -> serde_json::Value {
        self.snapshot_with(&self.latency_window())
    }

    /// A JSON snapshot with `latency`, this worker's window already merged.
    pub(crate) fn snapshot_with(&self, latency: &Histogram<u32>) -> serde_json::Value {
        let transports: serde_json::Map<String, serde_json::Value> = SubscriberKind::ALL
            .iter()
            .map(|&kind| (kind.name().to_owned(), self.transports[kind as usize].load(Relaxed).into()))
            .collect();
        serde_json::json!({
            "transports": transports,
            "fanout_latency_ms": latency_json(latency),
            "connections": self.connections.load(Relaxed),
            "parked": self.parked.load(Relaxed),
            "streaming": self.streaming.load(Relaxed),
            "duplex": self.duplex.load(Relaxed),
            "sessions": self.sessions.load(Relaxed),
            "sessions_evicted": self.sessions_evicted.load(Relaxed),
            "overflows": self.overflows.load(Relaxed),
            "accepted": self.accepted.load(Relaxed),
            "requests": self.requests.load(Relaxed),
            "published": self.published.load(Relaxed),
            "delivered": self.delivered.load(Relaxed),
            "accept_pauses": self.accept_pauses.load(Relaxed),
            "bytes_written": self.bytes_written.load(Relaxed),
            "gaps": self.gaps.load(Relaxed),
            "handoffs_out": self.handoffs_out.load(Relaxed),
            "handoffs_in": self.handoffs_in.load(Relaxed),
            "tls_handshakes": self.tls_handshakes.load(Relaxed),
            "tls_handshake_errors": self.tls_handshake_errors.load(Relaxed),
        })
    }
}

/// What kind of subscriber a connection is: its transport, and for Pushlet and Bayeux which
/// of theirs. Derived from the data of the connection's phase (`ConnState::subscriber_kind`),
/// never stored, so a parked request is no bigger for it. Polls have no kind: they are
/// answered at once and never wait as subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberKind {
    /// A native long-poll (`/sub`, JSON reply).
    LongPoll,
    /// A native long-poll answered as JSONP.
    Jsonp,
    /// A Pushlet `refresh` in pull or poll mode, held.
    PushletPull,
    /// A Bayeux `/meta/connect` held over HTTP (long-polling or callback-polling).
    BayeuxHttp,
    /// Server-Sent Events.
    Sse,
    /// ndjson (XHR streaming).
    Ndjson,
    /// Forever iframe.
    Iframe,
    /// `multipart/x-mixed-replace`.
    Multipart,
    /// Pushlet's stream mode.
    PushletStream,
    /// A native WebSocket.
    WebSocket,
    /// Raw TCP (`--raw-listen`).
    Raw,
    /// Bayeux over WebSocket.
    BayeuxWs,
}

impl SubscriberKind {
    /// Every kind, in the order of the gauges.
    pub const ALL: [SubscriberKind; 12] = {
        use SubscriberKind::*;
        [
            LongPoll,
            Jsonp,
            PushletPull,
            BayeuxHttp,
            Sse,
            Ndjson,
            Iframe,
            Multipart,
            PushletStream,
            WebSocket,
            Raw,
            BayeuxWs,
        ]
    };

    /// Its key in `/stats` `transports`.
    pub fn name(self) -> &'static str {
        use SubscriberKind::*;
        match self {
            LongPoll => "longpoll",
            Jsonp => "jsonp",
            PushletPull => "pushlet_pull",
            BayeuxHttp => "bayeux_http",
            Sse => "sse",
            Ndjson => "ndjson",
            Iframe => "iframe",
            Multipart => "multipart",
            PushletStream => "pushlet_stream",
            WebSocket => "websocket",
            Raw => "raw",
            BayeuxWs => "bayeux_ws",
        }
    }
}

/// How many one-second slots the fan-out latency window keeps: `/stats` reports the last 10 s.
pub(crate) const LATENCY_WINDOW_SECS: u64 = 10;
/// Latencies above this (60 s, in µs) are recorded as this.
const LATENCY_HIGHEST_US: u64 = 60_000_000;

/// Fan-out latency of one worker over the last `LATENCY_WINDOW_SECS`: how long after the hub
/// sequenced a message (its `time_ms`) the worker queued it to a subscriber's socket, in µs.
/// It is queue time, not wire time: the bytes may still wait in the socket or the client.
/// The hub stamps whole milliseconds, so a figure can read up to 1 ms high.
///
/// One histogram per second in a ring: recording goes to the current second's slot (cleared
/// when it is reused), a reader merges the slots of the window. Two significant digits, u32
/// counts: 2,560 counters (10 KiB) a slot, 100 KiB a worker, whatever the load.
#[derive(Debug)]
pub(crate) struct LatencyWindow {
    /// Each slot's unix second and its histogram; slot `s % LATENCY_WINDOW_SECS` holds second `s`.
    slots: Vec<(u64, Histogram<u32>)>,
    /// Every latency since start in fixed buckets, for the Prometheus histogram (which must
    /// only grow); recorded under the same lock, so it costs no extra synchronisation.
    total: LatencyBuckets,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            slots: (0..LATENCY_WINDOW_SECS).map(|_| (0, empty_histogram())).collect(),
            total: LatencyBuckets::default(),
        }
    }
}

/// Upper bounds of the `/metrics` fan-out latency buckets, in µs (0.5 ms to 10 s; slower
/// goes to `+Inf`).
pub(crate) const LATENCY_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// Fan-out latencies since start: a count per bucket of `LATENCY_BUCKETS_US` (not cumulative;
/// the last is `+Inf`), their sum and number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LatencyBuckets {
    pub counts: [u64; LATENCY_BUCKETS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
}

impl LatencyBuckets {
    fn record(&mut self, latency_us: u64) {
        let bucket =
            LATENCY_BUCKETS_US.iter().position(|&bound| latency_us <= bound).unwrap_or(LATENCY_BUCKETS_US.len());
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(latency_us);
        self.count += 1;
    }

    /// Adds another worker's buckets.
    pub(crate) fn merge(&mut self, other: &LatencyBuckets) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.count += other.count;
    }
}

impl LatencyWindow {
    /// Records one latency (µs) at `now_us` (unix µs).
    pub(crate) fn record(&mut self, now_us: u64, latency_us: u64) {
        let second = now_us / 1_000_000;
        let Some((slot_second, hist)) = self.slots.get_mut((second % LATENCY_WINDOW_SECS) as usize) else { return };
        if *slot_second != second {
            hist.reset();
            *slot_second = second;
        }
        hist.saturating_record(latency_us.clamp(1, LATENCY_HIGHEST_US));
        self.total.record(latency_us);
    }

    /// The slots of the window ending at `now_us`, merged.
    fn merged(&self, now_us: u64) -> Histogram<u32> {
        let second = now_us / 1_000_000;
        let mut all = empty_histogram();
        for (slot_second, hist) in &self.slots {
            // A slot from the future (the clock stepped back) is still recent.
            if *slot_second + LATENCY_WINDOW_SECS > second && !hist.is_empty() {
                // Same bounds, so adding cannot fail; a count past u32 saturates.
                let _ = all.add(hist);
            }
        }
        all
    }
}

fn empty_histogram() -> Histogram<u32> {
    // Fixed, valid bounds (1 µs to 60 s, two digits): this cannot fail.
    Histogram::new_with_bounds(1, LATENCY_HIGHEST_US, 2).expect("valid histogram bounds")
}

/// `{ "p50", "p99", "max" }` in milliseconds (µs precision) and the number of samples, over
/// the window; nulls when nothing was delivered in it.
pub(crate) fn latency_json(hist: &Histogram<u32>) -> serde_json::Value {
    if hist.is_empty() {
        return serde_json::json!({ "p50": null, "p99": null, "max": null, "samples": 0, "window_s": LATENCY_WINDOW_SECS });
    }
    let ms = |us: u64| us as f64 / 1000.0;
    serde_json::json!({
        "p50": ms(hist.value_at_quantile(0.5)),
        "p99": ms(hist.value_at_quantile(0.99)),
        "max": ms(hist.max()),
        "samples": hist.len(),
        "window_s": LATENCY_WINDOW_SECS,
    })
}

/// Several workers' windows (`WorkerStats::latency_window`), merged.
pub(crate) fn merged_latency<'a>(windows: impl IntoIterator<Item = &'a Histogram<u32>>) -> Histogram<u32> {
    let mut all = empty_histogram();
    for window in windows {
        let _ = all.add(window);
    }
    all
}

/// Now, in unix microseconds (the clock the hub stamps messages with, finer).
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The process's resident set size in bytes (`VmRSS` in `/proc/self/status`), or `None` where
/// there is no such file.
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn the_latency_window_reports_its_last_ten_seconds() {
        let mut window = LatencyWindow::default();
        let t0 = 1_700_000_000 * SEC;
        // 99 deliveries at 2 ms and one at 40 ms in the first second.
        for _ in 0..99 {
            window.record(t0, 2_000);
        }
        window.record(t0 + 500_000, 40_000);
        let hist = window.merged(t0 + SEC);
        assert_eq!(hist.len(), 100);
        let json = latency_json(&hist);
        let near = |key: &str, want: f64| {
            let got = json[key].as_f64().expect(key);
            assert!((got - want).abs() <= want / 50.0, "{key}: {got}, wanted about {want}");
        };
        near("p50", 2.0);
        near("p99", 2.0);
        near("max", 40.0);
        // Nine seconds later they are still in the window; ten seconds later they are out.
        assert_eq!(window.merged(t0 + 9 * SEC).len(), 100);
        assert!(window.merged(t0 + 10 * SEC).is_empty());
        assert_eq!(latency_json(&window.merged(t0 + 10 * SEC))["p50"], serde_json::Value::Null);
        // A slot is cleared when its second comes round again.
        window.record(t0 + 10 * SEC, 7_000);
        let hist = window.merged(t0 + 10 * SEC);
        assert_eq!((hist.len(), hist.max() / 1000), (1, 7));
    }

    #[test]
    fn a_slot_is_the_size_the_docs_say() {
        // 1 µs to 60 s at two digits: 20 half-buckets of 128 counters (LatencyWindow's doc).
        assert_eq!(empty_histogram().distinct_values(), 2560);
    }

    #[test]
    fn latencies_out_of_range_are_clamped_not_lost() {
        let mut window = LatencyWindow::default();
        window.record(5 * SEC, 0);
        window.record(5 * SEC, 3_600 * SEC);
        let hist = window.merged(5 * SEC);
        assert_eq!(hist.len(), 2);
        assert!(hist.max() >= LATENCY_HIGHEST_US - LATENCY_HIGHEST_US / 100);
    }

    #[test]
    fn gauges_move_by_kind_and_family_together() {
        let stats = WorkerStats::default();
        assert!(stats.no_subscribers());
        stats.enlisted(SubscriberKind::PushletStream);
        stats.enlisted(SubscriberKind::BayeuxHttp);
        assert_eq!(stats.streaming.load(Relaxed), 1);
        assert_eq!(stats.parked.load(Relaxed), 1);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot["transports"]["pushlet_stream"], 1);
        assert_eq!(snapshot["transports"]["bayeux_http"], 1);
        assert_eq!(snapshot["transports"].as_object().map(|t| t.len()), Some(SubscriberKind::ALL.len()));
        stats.retired(SubscriberKind::PushletStream);
        stats.retired(SubscriberKind::BayeuxHttp);
        assert!(stats.no_subscribers());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "below zero for websocket")]
    fn a_retire_without_an_enlist_is_caught_in_debug_builds() {
        WorkerStats::default().retired(SubscriberKind::WebSocket);
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(super::rss_bytes().is_some_and(|rss| rss > 0));
        }
    }
}
