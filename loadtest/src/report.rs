//! The outcome of a run and its three renderings: a human summary, JSON for machines, and an
//! SVG (or HTML page around it) with the latency distribution, latency over time, connections
//! and deliveries over time, and the server's CPU and memory over time (drawn by `svg`).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::cli::Scenario;
pub use crate::cost::ServerCost;
use crate::cost::{NodeCost, ServerTrace};
use crate::feed::{Mode, Target};
use crate::ipc::Counters;
use crate::publish::RateOutcome;
use crate::stamp::Checks;
use crate::stats::{LatencyPoint, LatencySummary, Timeline};
use crate::svg::{self, Axis, Chart, Series};

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    /// The pattern the floor server served (floor scenario only).
    pub pattern: Option<Scenario>,
    pub target: Target,
    pub mode: Mode,
    pub addr: String,
    pub subscribers: u32,
    pub processes: u32,
    pub threads_per_process: u32,
    pub publishers: u32,
    /// Subscribers parked when the connect phase ended.
    pub parked: u64,
    /// Subscribers given up after repeated failures.
    pub failed_subscribers: u64,
    pub setup_s: f64,
    pub connections_per_s: f64,
    pub published: u64,
    pub publish_failed: u64,
    pub expected_deliveries: u64,
    pub delivered_unique: u64,
    /// Expected deliveries that never arrived (must be 0).
    pub lost: u64,
    pub checks: Checks,
    /// Publish send -> subscriber receive.
    pub latency: LatencySummary,
    /// p50 and p99 of that latency per second of the run (by receive time).
    pub latency_over_time: Vec<LatencyPoint>,
    /// The watched processes' CPU and RSS once a second during the run.
    pub server_over_time: ServerTrace,
    /// Publish request -> publish reply.
    pub publish_rtt: LatencySummary,
    pub fanout: Option<Fanout>,
    pub rate: Option<RateReport>,
    /// The server's cost; with several servers, the nodes added up (`pid` is the first's).
    pub server: Option<ServerCost>,
    /// Each node's cost, when there are several servers.
    pub nodes: Vec<NodeCost>,
    /// The Redis server's cost (`--redis-pid`), per delivery and publish of the whole run.
    pub redis: Option<ServerCost>,
    pub order: Option<OrderCheck>,
    pub counters: Counters,
    /// Deadlines missed and other things a reader must not overlook.
    pub problems: Vec<String>,
    pub elapsed_s: f64,
    pub tick_ms: u64,
    pub timeline: Timeline,
    /// `(percentile, µs)` points of the latency distribution.
    #[serde(skip)]
    pub curve: Vec<(f64, f64)>,
}

/// Broadcast fan-out: publish sent -> last subscriber received, per message.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Fanout {
    pub messages: u64,
    /// Messages every live subscriber received before the deadline.
    pub complete: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A paced run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RateReport {
    pub target_per_s: f64,
    pub publish: RateOutcome,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    /// Published at >= 99% of the target rate, nothing dropped, every delivery arrived.
    pub kept_up: bool,
}

/// Did every subscriber see the same delivery order (single-topic scenarios)?
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OrderCheck {
    /// Warm subscribers whose order was folded.
    pub subscribers: u64,
    /// Distinct orders among them (1 is the pass).
    pub distinct: u64,
    /// Subscribers in the largest group with one order.
    pub largest_group: u64,
}

impl Report {
    /// A few lines a person reads at the end of a run.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let scenario = match self.pattern {
            Some(p) => format!("floor ({p:?})"),
            None => format!("{:?}", self.scenario),
        };
        let _ = writeln!(
            s,
            "halley-load {scenario} against {:?} at {} — {} subscribers ({:?}), {} processes x {} threads",
            self.target, self.addr, self.subscribers, self.mode, self.processes, self.threads_per_process
        );
        let _ = writeln!(
            s,
            "  setup: {} parked in {:.2} s ({:.0} conn/s), {} failed",
            self.parked, self.setup_s, self.connections_per_s, self.failed_subscribers
        );
        if self.published > 0 || self.expected_deliveries > 0 {
            let _ = writeln!(
                s,
                "  messages: {} published ({} failed), deliveries {} of {} expected, lost {}, duplicates {}, reordered {}",
                self.published,
                self.publish_failed,
                self.delivered_unique,
                self.expected_deliveries,
                self.lost,
                self.checks.duplicates,
                self.checks.reordered
            );
            let l = &self.latency;
            let _ = writeln!(
                s,
                "  latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
                l.p50_us / 1e3,
                l.p90_us / 1e3,
                l.p99_us / 1e3,
                l.p999_us / 1e3,
                l.max_us / 1e3,
                l.count
            );
        }
        if let Some(f) = &self.fanout {
            let _ = writeln!(
                s,
                "  fan-out: {}/{} complete, mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                f.complete, f.messages, f.mean_ms, f.p50_ms, f.p99_ms, f.max_ms
            );
        }
        if let Some(r) = &self.rate {
            let _ = writeln!(
                s,
                "  rate: target {:.0}/s, published {:.0}/s, delivered {:.0}/s, late {}, dropped {}, kept up: {}",
                r.target_per_s, r.published_per_s, r.delivered_per_s, r.publish.late, r.publish.dropped, r.kept_up
            );
        }
        match &self.server {
            Some(c) => {
                let _ = write!(
                    s,
                    "  server pid {}: {:.0} B/conn RSS ({:.0} B anon), {:.2} µs CPU/conn",
                    c.pid, c.bytes_per_connection, c.anon_bytes_per_connection, c.cpu_us_per_connection,
                );
                if self.delivered_unique > 0 {
                    let _ = write!(
                        s,
                        ", {:.2} µs CPU/delivery ({:.0} ms measured)",
                        c.cpu_us_per_delivery, c.cpu_ms_measured
                    );
                }
                s.push('\n');
            }
            None => {
                let _ = writeln!(s, "  server cost: not measured (no --server-pid and no listener found)");
            }
        }
        if self.nodes.len() > 1 {
            if let Some(c) = &self.server {
                let _ = writeln!(
                    s,
                    "  all {} nodes: {:.2} µs CPU/delivery, {:.2} µs CPU/publish, RSS {} KiB at the end",
                    self.nodes.len(),
                    c.cpu_us_per_delivery,
                    c.cpu_us_per_publish,
                    c.rss_end_kb
                );
            }
        }
        for n in &self.nodes {
            let c = &n.cost;
            let _ = writeln!(
                s,
                "  node {} (pid {}, {} subscribers): {:.0} ms CPU measured, {:.2} µs/delivery, RSS {} -> {} KiB",
                n.addr, c.pid, n.subscribers, c.cpu_ms_measured, c.cpu_us_per_delivery, c.rss_before_kb, c.rss_end_kb
            );
        }
        if let Some(r) = &self.redis {
            let _ = writeln!(
                s,
                "  redis pid {}: {:.0} ms CPU measured, {:.2} µs/publish, {:.3} µs/delivery, RSS {} -> {} KiB",
                r.pid, r.cpu_ms_measured, r.cpu_us_per_publish, r.cpu_us_per_delivery, r.rss_before_kb, r.rss_end_kb
            );
        }
        if let Some(o) = &self.order {
            let _ = writeln!(s, "  order: {} subscribers, {} distinct delivery order(s)", o.subscribers, o.distinct);
        }
        let c = &self.counters;
        let _ = writeln!(
            s,
            "  connections: {} connects, {} connect errors, {} server closes, {} churned, {} http errors, {} empty polls, {} server-flagged gaps",
            c.connects, c.connect_errors, c.server_closes, c.churned, c.http_errors, c.empty_responses, c.server_gaps
        );
        if c.sessions_lost > 0 || c.late_replies > 0 {
            let _ = writeln!(s, "  sessions: {} lost and rejoined, {} late replies", c.sessions_lost, c.late_replies);
        }
        for p in &self.problems {
            let _ = writeln!(s, "  PROBLEM: {p}");
        }
        s
    }

    /// Write the chart report; `.html` wraps the SVG and the summary, anything else is SVG.
    pub fn write_chart(&self, path: &Path) -> Result<(), String> {
        let svg = self.svg()?;
        let is_html = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
        let text = if is_html {
            let json = serde_json::to_string_pretty(self).unwrap_or_default();
            format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>halley-load report</title></head>\n<body>\n<h1>halley-load</h1>\n<pre>{}</pre>\n{}\n<details><summary>JSON</summary><pre>{}</pre></details>\n</body></html>\n",
                html_escape(&self.human()),
                svg,
                html_escape(&json)
            )
        } else {
            svg
        };
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The charts: latency by percentile and over time, connections, deliveries/s, and the
    /// server's CPU and RSS over time; every axis labelled with its unit.
    pub fn svg(&self) -> Result<String, String> {
        Ok(svg::render(&self.charts()))
    }

    fn charts(&self) -> Vec<Chart> {
        const TIME: &str = "time since start (s)";
        let tick_s = |i: usize| (i as u64 * self.tick_ms) as f64 / 1e3;
        let per_s = 1_000.0 / self.tick_ms.max(1) as f64;
        let curve = self
            .curve
            .iter()
            .map(|&(p, us)| (-(1.0 - (p / 100.0).min(0.99999)).log10(), (us / 1e3).max(0.001)))
            .collect();
        let nines = Axis {
            ticks: (0..6).map(|x| (f64::from(x), nines_label(f64::from(x)))).collect(),
            ..Axis::linear("percentile")
        };
        let lat = &self.latency_over_time;
        let trace = &self.server_over_time;
        let per_process = |f: &dyn Fn(&crate::cost::TracePoint, usize) -> Option<f64>| -> Vec<Series> {
            trace
                .names
                .iter()
                .enumerate()
                .map(|(i, name)| Series {
                    name: name.clone(),
                    points: trace.points.iter().filter_map(|p| f(p, i).map(|v| (p.t_s, v))).collect(),
                })
                .collect()
        };
        vec![
            Chart {
                title: "Latency by percentile".into(),
                x: nines,
                y: Axis::log("latency (ms, log)"),
                series: vec![Series { name: "publish -> receive".into(), points: curve }],
            },
            Chart {
                title: "Latency over time".into(),
                x: Axis::linear(TIME),
                y: Axis::log("latency (ms, log)"),
                series: vec![
                    Series { name: "p50".into(), points: lat.iter().map(|p| (p.t_s, p.p50_ms.max(0.001))).collect() },
                    Series { name: "p99".into(), points: lat.iter().map(|p| (p.t_s, p.p99_ms.max(0.001))).collect() },
                ],
            },
            Chart {
                title: "Open connections".into(),
                x: Axis::linear(TIME),
                y: Axis::linear("connections"),
                series: vec![Series {
                    name: "open connections".into(),
                    points: self.timeline.connections.iter().enumerate().map(|(i, &c)| (tick_s(i), c as f64)).collect(),
                }],
            },
            Chart {
                title: "Deliveries per second".into(),
                x: Axis::linear(TIME),
                y: Axis::linear("deliveries/s"),
                series: vec![Series {
                    name: "deliveries/s".into(),
                    points: self
                        .timeline
                        .deliveries
                        .iter()
                        .enumerate()
                        .map(|(i, &d)| (tick_s(i), d as f64 * per_s))
                        .collect(),
                }],
            },
            Chart {
                title: "Server CPU".into(),
                x: Axis::linear(TIME),
                y: Axis::linear("CPU (% of one core)"),
                series: per_process(&|p, i| p.cpu_pct.get(i).copied()),
            },
            Chart {
                title: "Server memory".into(),
                x: Axis::linear(TIME),
                y: Axis::linear("RSS (MiB)"),
                series: per_process(&|p, i| p.rss_kb.get(i).map(|&kb| kb as f64 / 1024.0)),
            },
        ]
    }
}

/// Axis label for a "nines" position: 0 -> p0, 1 -> p90, 2 -> p99, 3 -> p99.9 ...
fn nines_label(x: f64) -> String {
    let n = x.round();
    if (x - n).abs() > 1e-6 || n < 0.0 {
        return String::new();
    }
    match n as u32 {
        0 => "p0".into(),
        1 => "p90".into(),
        k => format!("p99.{}", "9".repeat(k as usize - 2)).trim_end_matches('.').to_owned(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::TracePoint;
    use crate::stats::TICK_MS;

    pub(crate) fn sample() -> Report {
        Report {
            scenario: Scenario::Broadcast,
            pattern: None,
            target: Target::Halley,
            mode: Mode::Longpoll,
            addr: "127.0.0.1:8080".into(),
            subscribers: 10,
            processes: 1,
            threads_per_process: 2,
            publishers: 1,
            parked: 10,
            failed_subscribers: 0,
            setup_s: 0.5,
            connections_per_s: 20.0,
            published: 3,
            publish_failed: 0,
            expected_deliveries: 30,
            delivered_unique: 30,
            lost: 0,
            checks: Checks { received: 30, ..Checks::default() },
            latency: LatencySummary { count: 30, p50_us: 900.0, ..LatencySummary::default() },
            latency_over_time: vec![
                LatencyPoint { t_s: 0.0, count: 10, p50_ms: 0.8, p99_ms: 1.9 },
                LatencyPoint { t_s: 1.0, count: 20, p50_ms: 0.9, p99_ms: 2.1 },
            ],
            server_over_time: ServerTrace {
                names: vec!["127.0.0.1:8080 (pid 7)".into(), "redis (pid 8)".into()],
                points: vec![
                    TracePoint { t_s: 1.0, cpu_pct: vec![12.0, 1.0], rss_kb: vec![20_480, 4_096] },
                    TracePoint { t_s: 2.0, cpu_pct: vec![55.0, 3.0], rss_kb: vec![24_576, 4_096] },
                ],
            },
            publish_rtt: LatencySummary::default(),
            fanout: Some(Fanout { messages: 3, complete: 3, mean_ms: 1.0, p50_ms: 1.0, p99_ms: 2.0, max_ms: 2.0 }),
            rate: None,
            server: None,
            nodes: Vec::new(),
            redis: None,
            order: Some(OrderCheck { subscribers: 10, distinct: 1, largest_group: 10 }),
            counters: Counters::default(),
            problems: vec!["x <y>".into()],
            elapsed_s: 1.0,
            tick_ms: TICK_MS,
            timeline: Timeline { connections: vec![0, 5, 10, 10], deliveries: vec![0, 0, 10, 20] },
            curve: vec![(0.0, 500.0), (50.0, 900.0), (99.0, 2000.0), (100.0, 2100.0)],
        }
    }

    #[test]
    fn human_summary_names_the_key_numbers() {
        let text = sample().human();
        assert!(text.contains("lost 0"), "{text}");
        assert!(text.contains("p50 0.90 ms"), "{text}");
        assert!(text.contains("fan-out: 3/3 complete"), "{text}");
        assert!(text.contains("PROBLEM: x <y>"), "{text}");
        assert!(text.contains("1 distinct delivery order"), "{text}");
    }

    #[test]
    fn svg_and_html_are_written() {
        let r = sample();
        let svg = r.svg().expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        let dir = std::env::temp_dir().join(format!("halley-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let html = dir.join("r.html");
        r.write_chart(&html).expect("html");
        let text = std::fs::read_to_string(&html).expect("read");
        assert!(text.contains("<svg") && text.contains("x &lt;y&gt;"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_chart_has_labelled_axes_and_every_series() {
        let svg = sample().svg().expect("svg");
        for title in [
            "Latency by percentile",
            "Latency over time",
            "Open connections",
            "Deliveries per second",
            "Server CPU",
            "Server memory",
        ] {
            assert!(svg.contains(&format!(r#"data-title="{title}""#)), "chart {title}");
        }
        for label in [
            "percentile",
            "latency (ms, log)",
            "time since start (s)",
            "connections",
            "deliveries/s",
            "CPU (% of one core)",
            "RSS (MiB)",
        ] {
            assert!(svg.contains(&format!(">{label}</text>")), "axis label {label}");
        }
        for series in
            ["publish -&gt; receive", "p50", "p99", "open connections", "127.0.0.1:8080 (pid 7)", "redis (pid 8)"]
        {
            assert!(svg.contains(&format!(r#"data-name="{series}""#)), "series {series}");
        }
        // Server CPU and memory: one line per process each; nothing is "not measured".
        assert_eq!(svg.matches(r#"data-name="redis (pid 8)""#).count(), 2);
        assert_eq!(svg.matches("<polyline").count(), 9);
        assert!(!svg.contains("not measured"));
        assert!(svg.contains(">p99.9</text>"));
    }

    #[test]
    fn percentile_axis_labels_count_nines() {
        let labels: Vec<String> = (0..5).map(|x| nines_label(f64::from(x))).collect();
        assert_eq!(labels, ["p0", "p90", "p99", "p99.9", "p99.99"]);
        assert_eq!(nines_label(1.5), "");
    }

    #[test]
    fn json_has_the_comparison_fields() {
        let v: serde_json::Value = serde_json::to_value(sample()).expect("json");
        assert_eq!(v["lost"], 0);
        assert_eq!(v["scenario"], "broadcast");
        assert_eq!(v["latency"]["p50_us"], 900.0);
        assert!(v.get("curve").is_none());
    }
}
