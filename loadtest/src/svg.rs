//! The report's charts, drawn here as plain SVG text: line charts stacked in one image, each
//! with a title, both axes labelled with their units, ticks at round values (or powers of ten
//! on a log axis), one polyline per series and a legend naming every series.
//!
//! Every series is a `<g class="series" data-name="...">` element, so a reader (or a test) can
//! find it by name; a chart without data says so instead of drawing an empty frame.

use std::fmt::Write as _;

/// Width of the whole image, in pixels.
pub const WIDTH: f64 = 960.0;
/// Height of one chart.
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 80.0;
/// Room for the legend.
const RIGHT: f64 = 230.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 50.0;
/// Series colours, in order.
const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// One axis: its label (with the unit) and how values map onto it.
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub log: bool,
    /// Tick positions and their text; empty: round values chosen here.
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    pub fn linear(label: &str) -> Self {
        Axis { label: label.to_owned(), log: false, ticks: Vec::new() }
    }

    pub fn log(label: &str) -> Self {
        Axis { label: label.to_owned(), log: true, ticks: Vec::new() }
    }
}

/// One named line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

/// A value range mapped onto pixels.
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    from: f64,
    to: f64,
}

impl Scale {
    fn new(values: impl Iterator<Item = f64>, axis: &Axis, from: f64, to: f64) -> Scale {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for v in values.filter(|v| v.is_finite() && (!axis.log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        for (t, _) in &axis.ticks {
            lo = lo.min(*t);
            hi = hi.max(*t);
        }
        if !lo.is_finite() {
            (lo, hi) = (if axis.log { 1.0 } else { 0.0 }, 1.0);
        }
        if axis.log {
            // Whole decades, so the ticks at powers of ten frame the data.
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
        } else {
            lo = lo.min(0.0);
            let step = nice_step(hi - lo);
            hi = ((hi / step).ceil() * step).max(lo + step);
        }
        Scale { lo, hi, log: axis.log, from, to }
    }

    fn map(&self, v: f64) -> f64 {
        let (v, lo, hi) =
            if self.log { (v.max(self.lo).log10(), self.lo.log10(), self.hi.log10()) } else { (v, self.lo, self.hi) };
        self.from + (v - lo) / (hi - lo).max(f64::MIN_POSITIVE) * (self.to - self.from)
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        if self.log {
            let mut out = Vec::new();
            let mut e = self.lo.log10().round() as i32;
            while f64::from(e) <= self.hi.log10() + 1e-9 && out.len() < 20 {
                let v = 10f64.powi(e);
                out.push((v, number(v)));
                e += 1;
            }
            return out;
        }
        let step = nice_step(self.hi - self.lo);
        let mut out = Vec::new();
        let mut v = (self.lo / step).ceil() * step;
        while v <= self.hi + step * 1e-9 && out.len() < 20 {
            out.push((v, number(v)));
            v += step;
        }
        out
    }
}

/// A round step (1, 2 or 5 times a power of ten) giving about five ticks over `span`.
fn nice_step(span: f64) -> f64 {
    let raw = (span / 5.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// A tick label: no trailing zeros, thousands as "k", millions as "M".
fn number(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s };
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 1.0 || a == 0.0 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.4}"))
    }
}

/// Escape text for SVG (XML) content and attributes.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// All `charts` stacked in one SVG image.
pub fn render(charts: &[Chart]) -> String {
    let height = PANEL_H * charts.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, chart) in charts.iter().enumerate() {
        panel(&mut out, chart, PANEL_H * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, c: &Chart, top: f64) {
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (top + PANEL_H - BOTTOM, top + TOP);
    let _ = writeln!(out, r#"<g class="chart" data-title="{}">"#, escape(&c.title));
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        (x0 + x1) / 2.0,
        top + 20.0,
        escape(&c.title)
    );
    let all = || c.series.iter().flat_map(|s| s.points.iter());
    let xs = Scale::new(all().map(|p| p.0), &c.x, x0, x1);
    let ys = Scale::new(all().map(|p| p.1), &c.y, y0, y1);
    // Frame and axis labels.
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        x1 - x0,
        y0 - y1
    );
    let _ = writeln!(
        out,
        r#"<text class="x-label" x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y0 + 38.0,
        escape(&c.x.label)
    );
    let ymid = (y0 + y1) / 2.0;
    let _ = writeln!(
        out,
        r#"<text class="y-label" x="{}" y="{ymid}" text-anchor="middle" transform="rotate(-90 {} {ymid})">{}</text>"#,
        x0 - 60.0,
        x0 - 60.0,
        escape(&c.y.label)
    );
    // Ticks with grid lines.
    let xticks = if c.x.ticks.is_empty() { xs.ticks() } else { c.x.ticks.clone() };
    for (v, text) in xticks {
        let x = xs.map(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y0 + 16.0,
            escape(&text)
        );
    }
    let yticks = if c.y.ticks.is_empty() { ys.ticks() } else { c.y.ticks.clone() };
    for (v, text) in yticks {
        let y = ys.map(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            escape(&text)
        );
    }
    if c.series.iter().all(|s| s.points.is_empty()) {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{ymid}" text-anchor="middle" fill="#888">not measured in this run</text>"##,
            (x0 + x1) / 2.0
        );
    }
    for (i, s) in c.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(out, r#"<g class="series" data-name="{}">"#, escape(&s.name));
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", xs.map(x), ys.map(y)))
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                pts.join(" ")
            );
        }
        let ly = y1 + 8.0 + 18.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x1 + 12.0,
            x1 + 32.0,
            x1 + 38.0,
            ly + 4.0,
            escape(&s.name)
        );
        out.push_str("</g>\n");
    }
    out.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_numbers_are_round() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(47.0), 10.0);
        assert_eq!(nice_step(0.3), 0.1);
        assert_eq!(number(2000.0), "2000");
        assert_eq!(number(25_000.0), "25k");
        assert_eq!(number(1_500_000.0), "1.5M");
        assert_eq!(number(0.001), "0.001");
        assert_eq!(number(0.5), "0.5");
    }

    #[test]
    fn a_chart_has_labelled_axes_ticks_and_named_series() {
        let chart = Chart {
            title: "t <1>".into(),
            x: Axis::linear("time (s)"),
            y: Axis::log("latency (ms)"),
            series: vec![
                Series { name: "p50".into(), points: vec![(0.0, 0.5), (1.0, 2.0)] },
                Series { name: "p99".into(), points: vec![(0.0, 3.0), (1.0, 40.0)] },
            ],
        };
        let svg = render(&[chart]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains(r#"class="x-label""#) && svg.contains(">time (s)</text>"), "{svg}");
        assert!(svg.contains(">latency (ms)</text>"), "{svg}");
        assert!(svg.contains(r#"data-name="p50""#) && svg.contains(r#"data-name="p99""#));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Log ticks at whole decades around 0.5 .. 40.
        for t in [">0.1</text>", ">1</text>", ">10</text>", ">100</text>"] {
            assert!(svg.contains(t), "{t} in {svg}");
        }
        assert!(svg.contains("t &lt;1&gt;"));
    }

    #[test]
    fn an_empty_chart_says_so() {
        let chart = Chart {
            title: "cpu".into(),
            x: Axis::linear("time (s)"),
            y: Axis::linear("CPU (%)"),
            series: vec![Series { name: "a".into(), points: Vec::new() }],
        };
        let svg = render(&[chart]);
        assert!(svg.contains("not measured in this run"));
        assert!(!svg.contains("<polyline"));
    }
}
