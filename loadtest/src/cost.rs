//! The cost of what is under test, across a run's phases: one server or several (the nodes of
//! a cluster, each its own process), plus the Redis they share when its pid is given. Each
//! phase boundary takes one [`Snapshot`] of every process; [`Watched::costs`] turns four of
//! them into the per-node, total and Redis figures of the report; [`trace`] reads them once a
//! second for the report's CPU and memory charts.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::procfs::{self, Sample};
use crate::stamp::unix_ns;

/// The processes a run reads from /proc.
#[derive(Debug, Clone)]
pub struct Watched {
    /// One pid per server, in `--server` order.
    pub nodes: Vec<u32>,
    pub redis: Option<u32>,
}

/// One reading of every watched process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub nodes: Vec<Sample>,
    pub redis: Option<Sample>,
}

impl Snapshot {
    /// The nodes added up.
    pub fn total(&self) -> Sample {
        let mut t = Sample::default();
        for s in &self.nodes {
            t.cpu_ns += s.cpu_ns;
            t.rss_kb += s.rss_kb;
            t.anon_kb += s.anon_kb;
        }
        t
    }

    /// CPU of the nodes and Redis together, ns (what "settled" watches).
    pub fn all_cpu_ns(&self) -> u64 {
        self.total().cpu_ns + self.redis.map_or(0, |r| r.cpu_ns)
    }
}

/// The server's cost from /proc.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerCost {
    pub pid: u32,
    pub rss_before_kb: u64,
    pub rss_connected_kb: u64,
    pub rss_end_kb: u64,
    /// (RSS with subscribers parked - RSS before) / parked, bytes.
    pub bytes_per_connection: f64,
    /// The same for anonymous memory only (heap), bytes.
    pub anon_bytes_per_connection: f64,
    /// Server CPU while connecting, per connection, µs.
    pub cpu_us_per_connection: f64,
    /// Server CPU during the measured phase, per delivery (re-polls included), µs.
    pub cpu_us_per_delivery: f64,
    /// Server CPU during the measured phase, per acknowledged publish, µs.
    #[serde(default)]
    pub cpu_us_per_publish: f64,
    pub cpu_ms_measured: f64,
}

/// What the run counted, to divide the CPU by.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    pub parked: u64,
    pub deliveries: u64,
    pub published: u64,
}

/// A node's figures with its address.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCost {
    pub addr: String,
    /// Subscribers planned on this node (subscriber i on node i mod N).
    pub subscribers: u64,
    #[serde(flatten)]
    pub cost: ServerCost,
}

/// The four readings of a run: before connecting, connected (settled), start and end of the
/// measured phase.
#[derive(Debug, Clone)]
pub struct Readings {
    pub before: Snapshot,
    pub connected: Snapshot,
    pub from: Snapshot,
    pub end: Snapshot,
}

impl Watched {
    /// Read every process now; `None` if any is gone or unreadable (then nothing is reported
    /// rather than a total that silently misses a node).
    pub fn sample(&self) -> Option<Snapshot> {
        let nodes = self.nodes.iter().map(|&p| procfs::sample(p)).collect::<Option<Vec<_>>>()?;
        let redis = match self.redis {
            Some(p) => Some(procfs::sample(p)?),
            None => None,
        };
        Some(Snapshot { nodes, redis })
    }

    /// `(total over the nodes, each node, Redis)`. Per node, the parked subscribers and the
    /// deliveries are the node's planned share of the totals (`shares[i]` of `sum(shares)`):
    /// the generator counts deliveries per subscriber, not per node. Publishes are divided
    /// over the whole cluster for every process (each node tails every message).
    pub fn costs(
        &self,
        r: &Readings,
        work: Work,
        addrs: &[String],
        shares: &[u64],
    ) -> (ServerCost, Vec<NodeCost>, Option<ServerCost>) {
        let all: u64 = shares.iter().sum::<u64>().max(1);
        let part =
            |v: u64, i: usize| (v as f64 * shares.get(i).copied().unwrap_or(0) as f64 / all as f64).round() as u64;
        let mut nodes = Vec::new();
        if self.nodes.len() > 1 {
            for (i, &pid) in self.nodes.iter().enumerate() {
                let w = Work { parked: part(work.parked, i), deliveries: part(work.deliveries, i), ..work };
                let at = |s: &Snapshot| s.nodes.get(i).copied().unwrap_or_default();
                nodes.push(NodeCost {
                    addr: addrs.get(i).cloned().unwrap_or_default(),
                    subscribers: shares.get(i).copied().unwrap_or(0),
                    cost: cost(pid, [at(&r.before), at(&r.connected), at(&r.from), at(&r.end)], w),
                });
            }
        }
        let total = cost(
            self.nodes.first().copied().unwrap_or(0),
            [r.before.total(), r.connected.total(), r.from.total(), r.end.total()],
            work,
        );
        let redis = match (self.redis, r.before.redis, r.connected.redis, r.from.redis, r.end.redis) {
            (Some(pid), Some(b), Some(c), Some(f), Some(e)) => Some(cost(pid, [b, c, f, e], work)),
            _ => None,
        };
        (total, nodes, redis)
    }
}

/// Cost from four samples `[before, connected, from, end]` of one process (or a sum).
pub fn cost(pid: u32, [before, connected, from, end]: [Sample; 4], work: Work) -> ServerCost {
    let per = |delta: f64, n: u64| if n == 0 { 0.0 } else { delta / n as f64 };
    let measured_ns = end.cpu_ns.saturating_sub(from.cpu_ns);
    ServerCost {
        pid,
        rss_before_kb: before.rss_kb,
        rss_connected_kb: connected.rss_kb,
        rss_end_kb: end.rss_kb,
        bytes_per_connection: per((connected.rss_kb as f64 - before.rss_kb as f64) * 1024.0, work.parked),
        anon_bytes_per_connection: per((connected.anon_kb as f64 - before.anon_kb as f64) * 1024.0, work.parked),
        cpu_us_per_connection: per(connected.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1e3, work.parked),
        cpu_us_per_delivery: per(measured_ns as f64 / 1e3, work.deliveries),
        cpu_us_per_publish: per(measured_ns as f64 / 1e3, work.published),
        cpu_ms_measured: measured_ns as f64 / 1e6,
    }
}

/// Subscribers per node when subscriber i goes to node i mod `nodes`.
pub fn shares(subscribers: u64, nodes: usize) -> Vec<u64> {
    let n = nodes.max(1) as u64;
    (0..n).map(|i| subscribers / n + u64::from(i < subscribers % n)).collect()
}

/// How often [`trace`] reads the watched processes.
pub const TRACE_EVERY: Duration = Duration::from_secs(1);
/// Most trace points kept (four hours at [`TRACE_EVERY`]); later ones are dropped.
const MAX_TRACE_POINTS: usize = 4 * 3600;

/// The watched processes' CPU and memory over the run, for the report's charts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerTrace {
    /// One name per traced process: the nodes in order, then Redis.
    pub names: Vec<String>,
    pub points: Vec<TracePoint>,
}

/// One reading of every traced process.
#[derive(Debug, Clone, Serialize)]
pub struct TracePoint {
    /// Since the run started.
    pub t_s: f64,
    /// CPU used since the previous point, in % of one core, per process.
    pub cpu_pct: Vec<f64>,
    /// Resident memory now, KiB, per process.
    pub rss_kb: Vec<u64>,
}

/// A thread reading the watched processes every [`TRACE_EVERY`] until stopped.
#[derive(Debug)]
pub struct Tracer {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<Vec<TracePoint>>,
}

/// Start tracing `w`; times are measured from `start_unix_ns`.
pub fn trace(w: Watched, start_unix_ns: u64) -> Option<Tracer> {
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("server-trace".into())
        .spawn(move || {
            let mut points = Vec::new();
            let mut last: Option<(u64, Vec<u64>)> = None;
            loop {
                let now = unix_ns();
                if let Some(snap) = w.sample() {
                    let cpu: Vec<u64> = snap.nodes.iter().chain(snap.redis.iter()).map(|s| s.cpu_ns).collect();
                    let rss_kb = snap.nodes.iter().chain(snap.redis.iter()).map(|s| s.rss_kb).collect();
                    if let Some((then, before)) = &last {
                        let wall = now.saturating_sub(*then).max(1) as f64;
                        let cpu_pct =
                            cpu.iter().zip(before).map(|(c, b)| c.saturating_sub(*b) as f64 / wall * 100.0).collect();
                        if points.len() < MAX_TRACE_POINTS {
                            let t_s = now.saturating_sub(start_unix_ns) as f64 / 1e9;
                            points.push(TracePoint { t_s, cpu_pct, rss_kb });
                        }
                    }
                    last = Some((now, cpu));
                }
                // The stop signal (or the parent dropping the sender) ends the trace at once.
                match stopped.recv_timeout(TRACE_EVERY) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return points,
                }
            }
        })
        .ok()?;
    Some(Tracer { stop, handle })
}

impl Tracer {
    pub fn stop(self) -> Vec<TracePoint> {
        let _ = self.stop.send(());
        self.handle.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cpu_ms: u64, rss_kb: u64) -> Sample {
        Sample { cpu_ns: cpu_ms * 1_000_000, rss_kb, anon_kb: rss_kb }
    }

    fn snap(a: Sample, b: Sample, redis: Sample) -> Snapshot {
        Snapshot { nodes: vec![a, b], redis: Some(redis) }
    }

    #[test]
    fn shares_are_round_robin() {
        assert_eq!(shares(10, 3), vec![4, 3, 3]);
        assert_eq!(shares(100_000, 6).iter().sum::<u64>(), 100_000);
        assert_eq!(shares(5, 1), vec![5]);
    }

    #[test]
    fn nodes_totals_and_redis_are_split_out() {
        let w = Watched { nodes: vec![10, 11], redis: Some(12) };
        let r = Readings {
            before: snap(s(0, 1000), s(0, 1000), s(0, 500)),
            connected: snap(s(10, 2000), s(20, 3000), s(1, 500)),
            from: snap(s(10, 2000), s(20, 3000), s(1, 500)),
            end: snap(s(110, 2100), s(320, 3100), s(51, 600)),
        };
        let work = Work { parked: 100, deliveries: 1000, published: 10 };
        let addrs = ["a:1".to_string(), "b:2".to_string()];
        let (total, nodes, redis) = w.costs(&r, work, &addrs, &shares(100, 2));
        // 100 ms + 300 ms over 1000 deliveries and 10 publishes.
        assert_eq!(total.cpu_us_per_delivery, 400.0);
        assert_eq!(total.cpu_us_per_publish, 40_000.0);
        assert_eq!(total.rss_end_kb, 5200);
        assert_eq!(nodes.len(), 2);
        assert_eq!((nodes[0].addr.as_str(), nodes[0].subscribers), ("a:1", 50));
        // Node b: 300 ms over its half of the deliveries.
        assert_eq!(nodes[1].cost.cpu_us_per_delivery, 600.0);
        assert_eq!(nodes[1].cost.pid, 11);
        let redis = redis.expect("redis measured");
        assert_eq!((redis.pid, redis.cpu_us_per_publish, redis.rss_end_kb), (12, 5_000.0, 600));
        assert_eq!(r.end.all_cpu_ns(), 481_000_000);
    }

    #[test]
    fn a_missing_process_means_no_reading() {
        let gone = Watched { nodes: vec![std::process::id(), u32::MAX], redis: None };
        assert!(gone.sample().is_none());
        let me = Watched { nodes: vec![std::process::id()], redis: Some(std::process::id()) };
        let snap = me.sample().expect("own /proc");
        assert_eq!(snap.nodes.len(), 1);
        assert!(snap.redis.is_some());
    }

    #[test]
    fn a_trace_reads_cpu_and_memory_until_stopped() {
        let w = Watched { nodes: vec![std::process::id()], redis: None };
        let tracer = trace(w, unix_ns()).expect("tracer");
        // Burn some CPU so the second reading differs from the first.
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < TRACE_EVERY + Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        let points = tracer.stop();
        assert!(x != 1);
        assert!(!points.is_empty(), "one point per second after the first reading");
        let p = &points[0];
        assert_eq!((p.cpu_pct.len(), p.rss_kb.len()), (1, 1));
        assert!(p.cpu_pct[0] > 10.0 && p.rss_kb[0] > 0, "{p:?}");
    }
}
