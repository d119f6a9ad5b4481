//! The outcome of a run and its three renderings: a human summary, JSON for machines, and an
//! SVG (or HTML page around it) with the latency distribution and connections / deliveries
//! over time, drawn with plotters.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::cli::Scenario;
use crate::cost::NodeCost;
pub use crate::cost::ServerCost;
use crate::feed::{Mode, Target};
use crate::ipc::Counters;
use crate::publish::RateOutcome;
use crate::stamp::Checks;
use crate::stats::{LatencySummary, Timeline, TICK_MS};

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

    /// Three panels: latency by percentile, connections over time, deliveries/s over time.
    pub fn svg(&self) -> Result<String, String> {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (900, 900)).into_drawing_area();
            root.fill(&WHITE).map_err(chart_err)?;
            let panels = root.split_evenly((3, 1));
            self.latency_panel(&panels[0])?;
            let secs: Vec<f64> =
                (0..self.timeline.connections.len()).map(|i| (i as u64 * self.tick_ms) as f64 / 1e3).collect();
            let conns: Vec<(f64, f64)> =
                secs.iter().zip(&self.timeline.connections).map(|(t, c)| (*t, *c as f64)).collect();
            let per_s = 1_000.0 / self.tick_ms.max(1) as f64;
            let dels: Vec<(f64, f64)> =
                secs.iter().zip(&self.timeline.deliveries).map(|(t, d)| (*t, *d as f64 * per_s)).collect();
            time_panel(&panels[1], "open connections", &conns, &BLUE)?;
            time_panel(&panels[2], "deliveries per second", &dels, &RED)?;
            root.present().map_err(chart_err)?;
        }
        Ok(out)
    }

    fn latency_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, plotters::coord::Shift>) -> Result<(), String> {
        // x: "nines" (0 = p0, 1 = p90, 2 = p99, 3 = p99.9) so the tail gets room.
        let pts: Vec<(f64, f64)> = self
            .curve
            .iter()
            .map(|&(p, us)| (-(1.0 - (p / 100.0).min(0.99999)).log10(), (us / 1e3).max(0.001)))
            .collect();
        let ymax = pts.iter().map(|p| p.1).fold(0.01, f64::max) * 1.5;
        let ymin = pts.iter().map(|p| p.1).fold(ymax, f64::min) / 1.5;
        let mut chart = ChartBuilder::on(area)
            .caption("latency by percentile (ms, log)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..5.0, (ymin..ymax).log_scale())
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .x_labels(6)
            .x_label_formatter(&|x| nines_label(*x))
            .draw()
            .map_err(chart_err)?;
        chart.draw_series(LineSeries::new(pts, &GREEN)).map_err(chart_err)?;
        Ok(())
    }
}

fn time_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    pts: &[(f64, f64)],
    color: &RGBColor,
) -> Result<(), String> {
    let xmax = pts.last().map_or(1.0, |p| p.0).max(TICK_MS as f64 / 1e3);
    let ymax = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)
        .map_err(chart_err)?;
    chart.configure_mesh().x_desc("seconds").draw().map_err(chart_err)?;
    chart.draw_series(LineSeries::new(pts.iter().copied(), color)).map_err(chart_err)?;
    Ok(())
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

fn chart_err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(svg.contains("deliveries per second"));
        let dir = std::env::temp_dir().join(format!("halley-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let html = dir.join("r.html");
        r.write_chart(&html).expect("html");
        let text = std::fs::read_to_string(&html).expect("read");
        assert!(text.contains("<svg") && text.contains("x &lt;y&gt;"));
        let _ = std::fs::remove_dir_all(&dir);
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
