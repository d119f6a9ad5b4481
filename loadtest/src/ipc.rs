//! What the parent and its `worker` / `floor-server` children say to each other: one JSON
//! object per line. The parent writes the [`Plan`] and then commands on the child's stdin
//! (EOF means the parent is gone); children answer with [`ChildMsg`] lines on stdout.

use std::io::Write;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::feed::Endpoint;
use crate::stamp::{Checks, Orders};
use crate::stats::{HistSnapshot, SeriesSnapshot, Timeline};

/// Longest line a child or the parent accepts, in bytes (a result line with a histogram and
/// an hour-long timeline stays well under this).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Which topics the subscribers use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topics {
    /// Everyone on one topic.
    Single(String),
    /// Subscriber i on `<prefix><i>` (the per-user notification case).
    PerUser(String),
}

impl Topics {
    /// The topic of the subscriber (or publish target) with global index `i`.
    pub fn name(&self, i: u32) -> String {
        match self {
            Topics::Single(t) => t.clone(),
            Topics::PerUser(prefix) => format!("{prefix}{i}"),
        }
    }
}

/// Everything a `worker` child needs: its share of the subscribers and how to reach the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// This child's number, for messages and source addresses.
    pub child: u32,
    pub target: SocketAddr,
    /// All servers (cluster nodes) when there are several: subscriber i connects to
    /// `targets[i % len]`. Empty: `target` alone.
    #[serde(default)]
    pub targets: Vec<SocketAddr>,
    pub endpoint: Endpoint,
    /// Global index of this child's first subscriber.
    pub first_sub: u32,
    /// How many subscribers this child holds.
    pub subs: u32,
    pub topics: Topics,
    /// Event-loop threads in this child.
    pub threads: u32,
    /// Source addresses 127.0.0.1..=127.0.0.N used round-robin by subscriber index.
    pub source_addrs: u8,
    /// Connects in flight at once in this child (SYN backlog friendliness).
    pub connect_concurrency: u32,
    /// Subscribers this child disconnects and reconnects (with their cursor) per second.
    pub churn_per_s: f64,
    /// Timeline origin, Unix ns.
    pub start_unix_ns: u64,
    /// The child exits on its own this many seconds after start, whatever happens.
    pub deadline_s: u64,
    /// The parent's pid, checked after arming the parent-death signal.
    pub parent_pid: u32,
    /// Report per-message fan-out counts (broadcast scenario).
    pub track_fanout: bool,
    /// Every subscriber is on one topic, so all must see one delivery order ([`Orders`]).
    #[serde(default)]
    pub check_order: bool,
}

impl Plan {
    /// The server subscriber `global` connects to.
    pub fn target_of(&self, global: u32) -> SocketAddr {
        if self.targets.is_empty() {
            self.target
        } else {
            self.targets[global as usize % self.targets.len()]
        }
    }
}

/// Parent -> child commands after the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    /// Stop, report results and exit.
    Stop,
    /// Start disconnecting and reconnecting subscribers at the plan's churn rate.
    Churn,
}

/// Child -> parent lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "kebab-case")]
pub enum ChildMsg {
    /// Cumulative state of one event-loop thread, sent every tick.
    Progress { thread: u32, progress: Progress },
    /// Per-message fan-out increments: `(seq, newly received, latest receive time in unix ns)`.
    Got { items: Vec<(u64, u64, u64)> },
    /// The floor server is accepting on `addr`.
    Listening { addr: SocketAddr },
    /// Final results of the whole child.
    Result(Box<ChildResult>),
    /// Something the parent should show.
    Log { text: String },
}

/// One thread's (or the sum of several) running counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Connections open now.
    pub open: u64,
    /// Subscribers whose request is fully sent and waiting (long-poll) or streaming (SSE).
    pub parked: u64,
    /// Subscribers that received the warm-up message (or any message).
    pub warm: u64,
    /// Stamped messages received after warm-up, duplicates included.
    pub received: u64,
    /// Subscribers given up on after repeated failures.
    pub failed: u64,
}

impl Progress {
    pub fn add(&mut self, o: &Progress) {
        self.open += o.open;
        self.parked += o.parked;
        self.warm += o.warm;
        self.received += o.received;
        self.failed += o.failed;
    }
}

/// Event counts a subscriber loop keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// TCP connects that completed (first connects and reconnects).
    pub connects: u64,
    pub connect_errors: u64,
    /// Responses that could not be parsed, and unexpected statuses.
    pub http_errors: u64,
    /// Connections the server closed (or reset) under us.
    pub server_closes: u64,
    /// Disconnects we made on purpose (churn).
    pub churned: u64,
    /// Long-poll responses (each one costs a re-poll).
    pub responses: u64,
    /// Long-poll responses without messages (timeouts, 304/408).
    pub empty_responses: u64,
    /// Responses flagged with `"gap":true` by the server.
    pub server_gaps: u64,
    /// Messages without one of our stamps.
    pub foreign: u64,
    /// Sessions the server forgot (Pushlet `abort`/expired id, Bayeux `402`); rejoined.
    #[serde(default)]
    pub sessions_lost: u64,
    /// Requests not answered within their client-side deadline (a held Bayeux connect past
    /// `advice.timeout` + grace); reconnected.
    #[serde(default)]
    pub late_replies: u64,
    /// Connects refused because this process ran out of file descriptors (EMFILE/ENFILE);
    /// each gives its subscriber up (counted in `Progress::failed`).
    #[serde(default)]
    pub out_of_fds: u64,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        self.connects += o.connects;
        self.connect_errors += o.connect_errors;
        self.http_errors += o.http_errors;
        self.server_closes += o.server_closes;
        self.churned += o.churned;
        self.responses += o.responses;
        self.empty_responses += o.empty_responses;
        self.server_gaps += o.server_gaps;
        self.foreign += o.foreign;
        self.sessions_lost += o.sessions_lost;
        self.late_replies += o.late_replies;
        self.out_of_fds += o.out_of_fds;
    }
}

/// Everything a child measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildResult {
    pub progress: Progress,
    pub checks: Checks,
    pub counters: Counters,
    pub latency: HistSnapshot,
    /// Latency per second of the run.
    #[serde(default)]
    pub latency_series: SeriesSnapshot,
    pub timeline: Timeline,
    /// Delivery orders seen by this child's subscribers (when the plan checks order).
    #[serde(default)]
    pub orders: Orders,
}

/// Write one line to stdout; the lock is held for the whole line so threads don't interleave.
pub fn emit(msg: &ChildMsg) {
    if let Ok(mut line) = serde_json::to_vec(msg) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        // A closed stdout means the parent is gone; stdin EOF ends us soon after.
        let _ = out.write_all(&line).and_then(|_| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_single_tagged_lines() {
        let msg = ChildMsg::Got { items: vec![(1, 2, 3)] };
        let line = serde_json::to_string(&msg).expect("ser");
        assert_eq!(line, r#"{"ev":"got","items":[[1,2,3]]}"#);
        let back: ChildMsg = serde_json::from_str(&line).expect("de");
        assert!(matches!(back, ChildMsg::Got { items } if items == vec![(1, 2, 3)]));
        let stop = serde_json::to_string(&Command::Stop).expect("ser");
        assert_eq!(stop, r#"{"cmd":"stop"}"#);
    }

    #[test]
    fn progress_and_counters_add_up() {
        let mut p = Progress { open: 1, parked: 2, warm: 3, received: 4, failed: 0 };
        p.add(&Progress { open: 1, parked: 1, warm: 1, received: 1, failed: 1 });
        assert_eq!(p, Progress { open: 2, parked: 3, warm: 4, received: 5, failed: 1 });
        let mut c = Counters { connects: 1, ..Counters::default() };
        c.merge(&Counters { connects: 2, churned: 5, ..Counters::default() });
        assert_eq!((c.connects, c.churned), (3, 5));
    }

    #[test]
    fn per_user_topics_are_numbered() {
        assert_eq!(Topics::PerUser("u".into()).name(7), "u7");
        assert_eq!(Topics::Single("bench".into()).name(7), "bench");
    }
}
