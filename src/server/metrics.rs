//! `GET /metrics`: the node's counters in the Prometheus text format (version 0.0.4), encoded
//! with the `prometheus-client` crate, and who may read them.
//!
//! Nothing here runs on the delivery path. The workers, the hub and the store keep the plain
//! counters they already keep (`WorkerStats`, `HubStats`, `StoreStats`); a scrape reads and
//! sums them, once, through a collector built for that scrape. Each group of metrics is one
//! function in [`SOURCES`], and each metric one line in it through [`Out`]:
//!
//! ```ignore
//! out.counter("halley_tls_handshakes", "TLS handshakes completed", workers.sum(|w| &w.tls_handshakes))?;
//! ```
//!
//! A part built elsewhere (TLS, the Redis link) adds its own function to `SOURCES`, or a line
//! to an existing one.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::stats::{self, LatencyBuckets, SubscriberKind, WorkerStats, LATENCY_BUCKETS_US};
use super::Shared;

/// The `Content-Type` of a scrape.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One group of metrics: reads what it needs from `shared` and writes it to `out`.
pub(crate) type Source = fn(&Shared, &mut Out<'_>) -> fmt::Result;

/// Every group, in the order a scrape lists them. Add a group here; add a metric to a group
/// with one line.
pub(crate) const SOURCES: &[Source] =
    &[connections, tls, messages, history, hub, cluster, latency, access_log, process];

/// The whole scrape: every source, encoded. An encoding error (there is none for a `String`)
/// yields what was encoded so far.
pub(crate) fn render(shared: &Arc<Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Node(Arc::clone(shared))));
    let mut text = String::with_capacity(8 * 1024);
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// Whether a peer on the public listener may read `/metrics` and `/stats`: only a loopback
/// peer (a local agent, `curl` on the host). Anyone else uses `--admin-listen`.
/// (An IPv4 peer on a dual-stack socket arrives as ::ffff:127.0.0.1: `auth::is_loopback`.)
pub(crate) fn may_read(peer: Option<IpAddr>) -> bool {
    peer.is_some_and(crate::auth::is_loopback)
}

/// The collector of one scrape.
#[derive(Debug)]
struct Node(Arc<Shared>);

impl Collector for Node {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let mut out = Out { encoder };
        SOURCES.iter().try_for_each(|source| source(&self.0, &mut out))
    }
}

/// Where a source writes its metrics; each call is one metric family.
pub(crate) struct Out<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl Out<'_> {
    /// A counter (the encoder names it `{name}_total`).
    pub(crate) fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let metric = ConstCounter::new(value);
        metric.encode(self.encoder.encode_descriptor(name, help, None, metric.metric_type())?)
    }

    /// A gauge.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        metric.encode(self.encoder.encode_descriptor(name, help, None, metric.metric_type())?)
    }

    /// A counter with one series per label set.
    pub(crate) fn counters<'l>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (&'l [(&'l str, &'l str)], u64)>,
    ) -> fmt::Result {
        let mut family = self.encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in series {
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge with one series per label set.
    pub(crate) fn gauges<'l>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (&'l [(&'l str, &'l str)], u64)>,
    ) -> fmt::Result {
        let mut family = self.encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in series {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A histogram in seconds from buckets in µs (`LATENCY_BUCKETS_US`).
    fn histogram_seconds(&mut self, name: &str, help: &str, buckets: &LatencyBuckets) -> fmt::Result {
        let bounds = LATENCY_BUCKETS_US.iter().map(|&us| us as f64 / 1e6).chain([f64::INFINITY]);
        let pairs: Vec<(f64, u64)> = bounds.zip(buckets.counts.iter().copied()).collect();
        let mut metric = self.encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        metric.encode_histogram::<NoLabelSet>(buckets.sum_us as f64 / 1e6, buckets.count, &pairs, None)
    }
}

/// The workers' counters, summed.
struct Workers<'a>(&'a [WorkerStats]);

impl Workers<'_> {
    fn sum(&self, counter: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
        self.0.iter().map(|w| counter(w).load(Relaxed)).sum()
    }
}

/// The `transport` and `protocol` labels of a subscriber kind.
fn labels(kind: SubscriberKind) -> [(&'static str, &'static str); 3] {
    use SubscriberKind::*;
    let (family, transport, protocol) = match kind {
        LongPoll => ("parked", "longpoll", "native"),
        Jsonp => ("parked", "jsonp", "native"),
        PushletPull => ("parked", "longpoll", "pushlet"),
        BayeuxHttp => ("parked", "longpoll", "bayeux"),
        Sse => ("streaming", "sse", "native"),
        Ndjson => ("streaming", "ndjson", "native"),
        Iframe => ("streaming", "iframe", "native"),
        Multipart => ("streaming", "multipart", "native"),
        PushletStream => ("streaming", "stream", "pushlet"),
        WebSocket => ("duplex", "websocket", "native"),
        Raw => ("duplex", "raw", "native"),
        BayeuxWs => ("duplex", "websocket", "bayeux"),
    };
    [("family", family), ("transport", transport), ("protocol", protocol)]
}

fn connections(shared: &Shared, out: &mut Out<'_>) -> fmt::Result {
    let w = Workers(&shared.stats);
    out.gauge("halley_connections", "Open client connections", w.sum(|w| &w.connections))?;
    let kinds: Vec<_> = SubscriberKind::ALL.iter().map(|&kind| (kind, labels(kind))).collect();
    out.gauges(
        "halley_subscribers",
        "Subscribers by family (parked request, stream, duplex socket), transport and protocol",
        kinds.iter().map(|(kind, labels)| (&labels[..], w.sum(|w| &w.transports[*kind as usize]))),
    )?;
    out.gauge("halley_parked_requests", "Long-poll requests waiting for a message", w.sum(|w| &w.parked))?;
    out.gauge("halley_sessions", "Pushlet and Bayeux sessions", w.sum(|w| &w.sessions))?;
    out.counter("halley_sessions_evicted", "Unused sessions let go to make room", w.sum(|w| &w.sessions_evicted))?;
    out.counter("halley_connections_accepted", "Connections accepted", w.sum(|w| &w.accepted))?;
    out.counter("halley_requests", "HTTP requests parsed", w.sum(|w| &w.requests))?;
    out.counter(
        "halley_accept_pauses",
        "Times accepting paused (connection limit, out of fds)",
        w.sum(|w| &w.accept_pauses),
    )?;
    out.counters(
        "halley_handoffs",
        "Connections moved to the worker that owns their session",
        [
            (&[("direction", "out")][..], w.sum(|w| &w.handoffs_out)),
            (&[("direction", "in")][..], w.sum(|w| &w.handoffs_in)),
        ],
    )
}

fn tls(shared: &Shared, out: &mut Out<'_>) -> fmt::Result {
    let w = Workers(&shared.stats);
    out.counter("halley_tls_handshakes", "TLS handshakes completed", w.sum(|w| &w.tls_handshakes))?;
    out.counter(
        "halley_tls_handshake_errors",
        "TLS connections that failed before their handshake completed",
        w.sum(|w| &w.tls_handshake_errors),
    )
}

/// Cluster mode only (`--redis`): the shared log's link.
fn cluster(shared: &Shared, out: &mut Out<'_>) -> fmt::Result {
    let Some(log) = &shared.log else { return Ok(()) };
    let link = log.link();
    out.gauge("halley_redis_up", "1 while the Redis log takes publishes, else 0", u64::from(link.up))?;
    out.gauge("halley_redis_tail_up", "1 while this node's tail reads the Redis log, else 0", u64::from(link.tail_up))?;
    out.gauge("halley_redis_tail_seq", "The last log sequence number this node has read from Redis", link.tail_seq)?;
    out.counter(
        "halley_redis_link_downs",
        "Times a link to Redis failed or went unanswered past its read timeout",
        link.downs,
    )
}

fn messages(shared: &Shared, out: &mut Out<'_>) -> fmt::Result {
    let w = Workers(&shared.stats);
    out.counter(
        "halley_publishes",
        "Messages sequenced and stored by the hub",
        shared.hub_stats.published.load(Relaxed),
    )?;
    out.counter("halley_publishes_rejected", "Publishes the hub refused", shared.hub_stats.rejected.load(Relaxed))?;
    out.counter(
        "halley_deliveries",
        "Messages queued to subscribers (one per message per subscriber)",
        w.sum(|w| &w.delivered),
    )?;
    out.counter("halley_bytes_written", "Bytes written to client sockets", w.sum(|w| &w.bytes_written))?;
    out.counter(
        "halley_gaps_reported",
        "Replies and frames that told a subscriber messages were lost",
        w.sum(|w| &w.gaps),
    )?;
    out.counter(
        "halley_overflow_closes",
        "Subscribers closed for not reading (output over the bound)",
        w.sum(|w| &w.overflows),
    )
}

fn history(shared: &Shared, out: &mut Out<'_>) -> fmt::Result {
    let store = shared.store.stats();
    out.gauge("halley_history_topics", "Topics with retained history", store.topics as u64)?;
    out.gauge("halley_history_messages", "Messages retained in history", store.messages as u64)?;
    out.gauge("halley_history_bytes", "Bytes retained in history", store.bytes as u64)?;
    out.counters(
        "halley_history_evictions",
        "Messages removed from history, by cause",
        [
            (&[("reason", "topic_bound")][..], store.evicted_topic),
            (&[("reason", "global_bound")][..], store.evicted_global),
            (&[("reason", "age")][..], store.expired),
        ],
    )
}

fn access_log(shared: &Shared, out: &mut Out<'_>) -> fmt::Result {
    let log = &shared.access_log;
    out.counter("halley_access_log_lines", "Access log lines handed to its writer", log.lines.load(Relaxed))?;
    out.counter(
        "halley_access_log_dropped",
        "Access log lines dropped because the writer fell behind",
        log.dropped.load(Relaxed),
    )
}

fn hub(shared: &Shared, out: &mut Out<'_>) -> fmt::Result {
    let hub = &shared.hub_stats;
    out.gauge("halley_hub_queue_depth", "Commands waiting in the hub's channel", shared.hub.len() as u64)?;
    out.counter("halley_hub_forwarded", "Messages forwarded to workers", hub.forwarded.load(Relaxed))?;
    out.counter(
        "halley_hub_dropped_batches",
        "Batches dropped for a full worker channel",
        hub.dropped_batches.load(Relaxed),
    )?;
    out.gauge("halley_hub_interest", "Topics and patterns some worker subscribes to", hub.interest.load(Relaxed))
}

fn latency(shared: &Shared, out: &mut Out<'_>) -> fmt::Result {
    let mut all = LatencyBuckets::default();
    for worker in shared.stats.iter() {
        all.merge(&worker.latency_buckets());
    }
    out.histogram_seconds(
        "halley_fanout_latency_seconds",
        "From the hub sequencing a message to a worker queueing it to its subscribers",
        &all,
    )
}

fn process(shared: &Shared, out: &mut Out<'_>) -> fmt::Result {
    if let Some(rss) = stats::rss_bytes() {
        out.gauge("halley_resident_memory_bytes", "Resident set size of the process", rss)?;
    }
    out.gauge("halley_workers", "Worker threads", shared.stats.len() as u64)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn only_loopback_peers_may_read() {
        assert!(may_read(Some(IpAddr::V4(Ipv4Addr::LOCALHOST))));
        assert!(may_read(Some(IpAddr::V4(Ipv4Addr::new(127, 3, 2, 1)))));
        assert!(may_read(Some(IpAddr::V6(Ipv6Addr::LOCALHOST))));
        assert!(may_read(Some(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()))));
        assert!(!may_read(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))));
        assert!(!may_read(Some(IpAddr::V6(Ipv4Addr::new(192, 168, 1, 2).to_ipv6_mapped()))));
        assert!(!may_read(Some(IpAddr::V6("2001:db8::1".parse().expect("addr")))));
        assert!(!may_read(None), "a peer whose address is unknown");
    }
}
