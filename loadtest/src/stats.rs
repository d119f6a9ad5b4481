//! Measurements that cross process boundaries: latency histograms (HdrHistogram) with a
//! lossless-per-bucket wire form, and the per-tick timeline of connections and deliveries.
//!
//! Children record, serialise as `(value, count)` pairs of recorded buckets, and the parent
//! adds them up; the merged histogram equals one that recorded every sample itself.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Lowest latency the histogram tells apart, in nanoseconds.
pub const LATENCY_LOW_NS: u64 = 1_000;
/// Highest latency recorded, in nanoseconds; larger samples are clamped to it.
pub const LATENCY_HIGH_NS: u64 = 600_000_000_000;
/// Significant decimal digits kept per sample.
pub const LATENCY_SIGFIG: u8 = 3;
/// Timeline resolution, in milliseconds.
pub const TICK_MS: u64 = 100;
/// Most timeline ticks kept (one hour at [`TICK_MS`]); later ticks are dropped.
pub const MAX_TICKS: usize = 36_000;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

/// A histogram on the wire: each recorded bucket's value (ns) and count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistSnapshot {
    pub buckets: Vec<(u64, u64)>,
}

/// Percentiles for a report, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // Only constants go in (low >= 1, high >= 2 * low, sigfig <= 5): nothing a peer or a
        // file controls can make this fail.
        let hist = Histogram::new_with_bounds(LATENCY_LOW_NS, LATENCY_HIGH_NS, LATENCY_SIGFIG)
            .expect("constant histogram bounds are valid");
        Latency { hist }
    }

    /// Record one sample, clamped into the histogram's range.
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.clamp(LATENCY_LOW_NS, LATENCY_HIGH_NS));
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The recorded buckets, for sending to the parent.
    pub fn snapshot(&self) -> HistSnapshot {
        HistSnapshot {
            buckets: self.hist.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect(),
        }
    }

    /// Add a child's snapshot.
    pub fn merge(&mut self, snap: &HistSnapshot) {
        for &(value, count) in &snap.buckets {
            // Counts saturate rather than fail: a corrupt child line cannot panic the parent.
            let _ = self.hist.record_n(value.clamp(LATENCY_LOW_NS, LATENCY_HIGH_NS), count);
        }
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.hist;
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1_000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    /// `(percentile, latency in µs)` points for a distribution plot, p0 to p100, dense in the
    /// tail.
    pub fn percentile_curve(&self) -> Vec<(f64, f64)> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        const POINTS: [f64; 22] = [
            0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95,
            99.975, 99.99, 99.995, 99.999, 100.0,
        ];
        POINTS
            .iter()
            .map(|&p| {
                // hdrhistogram answers quantile 0 with its lowest bucket, not the minimum.
                let ns = if p == 0.0 { self.hist.min() } else { self.hist.value_at_quantile(p / 100.0) };
                (p, ns as f64 / 1_000.0)
            })
            .collect()
    }
}

/// Connections open and messages delivered per [`TICK_MS`] tick since the run started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Connections open at the end of each tick.
    pub connections: Vec<u64>,
    /// Messages delivered during each tick.
    pub deliveries: Vec<u64>,
}

impl Timeline {
    /// Record the state at tick `index`: `open` connections, `delivered` messages this tick.
    pub fn set(&mut self, index: usize, open: u64, delivered: u64) {
        if index >= MAX_TICKS {
            return;
        }
        if self.connections.len() <= index {
            // Ticks this loop slept through keep the last gauge value and no deliveries.
            let last = self.connections.last().copied().unwrap_or(0);
            self.connections.resize(index + 1, last);
            self.deliveries.resize(index + 1, 0);
        }
        self.connections[index] = open;
        self.deliveries[index] += delivered;
    }

    /// Add another thread's or process's timeline tick by tick.
    pub fn merge(&mut self, other: &Timeline) {
        let n = other.connections.len().max(other.deliveries.len()).min(MAX_TICKS);
        if self.connections.len() < n {
            self.connections.resize(n, 0);
            self.deliveries.resize(n, 0);
        }
        for (i, c) in other.connections.iter().take(n).enumerate() {
            self.connections[i] += c;
        }
        for (i, d) in other.deliveries.iter().take(n).enumerate() {
            self.deliveries[i] += d;
        }
    }
}

/// Most seconds [`LatencySeries`] keeps (one hour); later samples are dropped.
pub const MAX_SERIES_SECONDS: usize = (MAX_TICKS as u64 * TICK_MS / 1_000) as usize;
/// Buckets per power of two in [`LatencySeries`] (about 6% wide).
const SUB_BUCKETS: u64 = 16;
/// Buckets of one second's histogram: 1 µs to past [`LATENCY_HIGH_NS`] (2^30 µs).
const SERIES_BUCKETS: usize = 432;

/// Latency per second of the run: one coarse log-linear histogram (in µs, ~6% buckets) per
/// second of receive time, enough for p50/p99 over time at a fixed cost per sample.
#[derive(Debug, Clone, Default)]
pub struct LatencySeries {
    seconds: Vec<Option<Box<[u32; SERIES_BUCKETS]>>>,
}

/// A series on the wire: per second, its recorded `(bucket, count)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesSnapshot {
    pub seconds: Vec<Vec<(u16, u32)>>,
}

/// One second of a latency series, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyPoint {
    /// Start of the second, since the run started.
    pub t_s: f64,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn series_bucket(ns: u64) -> usize {
    let us = (ns / 1_000).max(1);
    let idx = if us < SUB_BUCKETS {
        us
    } else {
        let shift = u64::from(63 - us.leading_zeros()) - 4;
        SUB_BUCKETS * shift + (us >> shift)
    };
    (idx as usize).min(SERIES_BUCKETS - 1)
}

/// The middle of bucket `idx`, in µs.
fn bucket_mid_us(idx: usize) -> f64 {
    let idx = idx as u64;
    if idx < 2 * SUB_BUCKETS {
        return idx as f64;
    }
    let shift = idx / SUB_BUCKETS - 1;
    let mantissa = idx - SUB_BUCKETS * shift;
    let low = mantissa << shift;
    let high = ((mantissa + 1) << shift) - 1;
    (low + high) as f64 / 2.0
}

impl LatencySeries {
    /// Record a latency of `ns` for a message received `at_ns` after the run started.
    pub fn record(&mut self, at_ns: u64, ns: u64) {
        let second = (at_ns / 1_000_000_000) as usize;
        if second >= MAX_SERIES_SECONDS {
            return;
        }
        if self.seconds.len() <= second {
            self.seconds.resize(second + 1, None);
        }
        let hist = self.seconds[second].get_or_insert_with(|| Box::new([0; SERIES_BUCKETS]));
        let b = &mut hist[series_bucket(ns)];
        *b = b.saturating_add(1);
    }

    pub fn snapshot(&self) -> SeriesSnapshot {
        let seconds = self
            .seconds
            .iter()
            .map(|h| {
                h.as_ref().map_or_else(Vec::new, |h| {
                    h.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| (i as u16, c)).collect()
                })
            })
            .collect();
        SeriesSnapshot { seconds }
    }

    /// Add a child's (or thread's) snapshot; out-of-range entries are ignored.
    pub fn merge(&mut self, snap: &SeriesSnapshot) {
        for (second, buckets) in snap.seconds.iter().enumerate().take(MAX_SERIES_SECONDS) {
            if buckets.is_empty() {
                continue;
            }
            if self.seconds.len() <= second {
                self.seconds.resize(second + 1, None);
            }
            let hist = self.seconds[second].get_or_insert_with(|| Box::new([0; SERIES_BUCKETS]));
            for &(i, c) in buckets {
                if let Some(b) = hist.get_mut(usize::from(i)) {
                    *b = b.saturating_add(c);
                }
            }
        }
    }

    /// p50 and p99 of every second that received something.
    pub fn points(&self) -> Vec<LatencyPoint> {
        let mut out = Vec::new();
        for (second, hist) in self.seconds.iter().enumerate() {
            let Some(hist) = hist else { continue };
            let count: u64 = hist.iter().map(|&c| u64::from(c)).sum();
            if count == 0 {
                continue;
            }
            let at = |q: f64| {
                let rank = ((count as f64 * q).ceil() as u64).max(1);
                let mut seen = 0;
                for (i, &c) in hist.iter().enumerate() {
                    seen += u64::from(c);
                    if seen >= rank {
                        return bucket_mid_us(i) / 1e3;
                    }
                }
                0.0
            };
            out.push(LatencyPoint { t_s: second as f64, count, p50_ms: at(0.50), p99_ms: at(0.99) });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_snapshots_equal_one_histogram() {
        let mut all = Latency::new();
        let mut a = Latency::new();
        let mut b = Latency::new();
        for i in 0..10_000u64 {
            let ns = 5_000 + i * i * 7 % 90_000_000;
            all.record(ns);
            if i % 3 == 0 {
                a.record(ns)
            } else {
                b.record(ns)
            }
        }
        let wire_a: HistSnapshot =
            serde_json::from_str(&serde_json::to_string(&a.snapshot()).expect("ser")).expect("de");
        let mut merged = Latency::new();
        merged.merge(&wire_a);
        merged.merge(&b.snapshot());
        assert_eq!(merged.summary(), all.summary());
        assert_eq!(merged.count(), 10_000);
    }

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut h = Latency::new();
        for _ in 0..99 {
            h.record(1_000_000);
        }
        h.record(50_000_000);
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_us - 1_000.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 1_000.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 50_000.0).abs() < 50.0, "{s:?}");
        assert!(s.p999_us > 49_000.0, "{s:?}");
    }

    #[test]
    fn out_of_range_samples_are_clamped_not_lost() {
        let mut h = Latency::new();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
        assert!(h.summary().max_us >= LATENCY_HIGH_NS as f64 / 1_000.0 * 0.99);
        let curve = h.percentile_curve();
        assert!(!curve.is_empty());
        assert!(curve.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn timelines_add_per_tick() {
        let mut a = Timeline::default();
        a.set(0, 10, 0);
        a.set(3, 20, 5);
        assert_eq!(a.connections, vec![10, 10, 10, 20]);
        assert_eq!(a.deliveries, vec![0, 0, 0, 5]);
        let mut b = Timeline::default();
        b.set(1, 1, 2);
        a.merge(&b);
        assert_eq!(a.connections, vec![10, 11, 10, 20]);
        assert_eq!(a.deliveries, vec![0, 2, 0, 5]);
        a.set(MAX_TICKS, 1, 1);
        assert_eq!(a.connections.len(), 4, "ticks past the bound are dropped");
    }

    #[test]
    fn series_buckets_are_contiguous_and_close() {
        let mut last = 0;
        for us in 1..2_000_000u64 {
            let b = series_bucket(us * 1_000);
            assert!(b == last || b == last + 1, "{us} µs: bucket {b} after {last}");
            last = b;
            let mid = bucket_mid_us(b);
            assert!((mid - us as f64).abs() <= us as f64 * 0.07 + 1.0, "{us} µs in bucket of {mid}");
        }
        assert!(series_bucket(LATENCY_HIGH_NS) < SERIES_BUCKETS - 1, "the whole range has its own buckets");
        assert_eq!(series_bucket(u64::MAX), SERIES_BUCKETS - 1);
    }

    #[test]
    fn series_give_percentiles_per_second() {
        let mut a = LatencySeries::default();
        let mut b = LatencySeries::default();
        for i in 0..99 {
            a.record(100_000_000 + i, 1_000_000); // second 0: 1 ms
        }
        a.record(200_000_000, 50_000_000); // second 0: one 50 ms
        b.record(2_500_000_000, 10_000_000); // second 2: 10 ms
        b.record(u64::MAX, 1); // past the bound: dropped
        let wire: SeriesSnapshot =
            serde_json::from_str(&serde_json::to_string(&b.snapshot()).expect("ser")).expect("de");
        a.merge(&wire);
        let p = a.points();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].t_s, p[0].count), (0.0, 100));
        assert!((p[0].p50_ms - 1.0).abs() < 0.07, "{p:?}");
        assert!((p[0].p99_ms - 1.0).abs() < 0.07, "{p:?}");
        assert_eq!((p[1].t_s, p[1].count), (2.0, 1));
        assert!((p[1].p99_ms - 10.0).abs() < 0.7, "{p:?}");
    }
}
