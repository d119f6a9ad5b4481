//! Counters shared between the workers and whoever reads `/stats`.
//!
//! Each worker writes only its own `WorkerStats` with relaxed atomics (no contention, no
//! ordering needed: they are independent gauges and counters read for display).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
}

impl WorkerStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    /// A JSON snapshot.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
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
            "handoffs_out": self.handoffs_out.load(Relaxed),
            "handoffs_in": self.handoffs_in.load(Relaxed),
        })
    }
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
    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(super::rss_bytes().is_some_and(|rss| rss > 0));
        }
    }
}
