//! `GET /metrics` over loopback, parsed with a real Prometheus text-format parser (the
//! `prometheus-parse` crate): the families are there with their types, and the values move
//! with load. Also the admin listener (`--admin-listen`) and `/ready` while draining.
//!
//! Who may read `/metrics` on the public listener (loopback peers only) is unit-tested in
//! `server::metrics` (`only_loopback_peers_may_read`): this machine's tests reach the server
//! over loopback only, so a non-loopback peer cannot be made here.

mod util;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use util::{Client, TestServer, WAIT};

/// Scrapes `/metrics` at `addr` and parses it; the reply must be a 200 in the text format.
fn scrape(addr: SocketAddr) -> Scrape {
    let response = Client::connect(addr).get("/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    let content_type = response.header("content-type").expect("content-type");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let lines = response.text().lines().map(|line| Ok(line.to_owned())).collect::<Vec<_>>();
    Scrape::parse(lines.into_iter()).expect("valid Prometheus text format")
}

/// The value of the sample `name` whose labels include `labels` (counters and gauges), or the
/// count of a histogram.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        Value::Summary(_) => panic!("{name} is a summary"),
    }
}

/// Scrapes until `done` holds (bounded by WAIT): for figures recorded just after the reply a
/// client waits on (the fan-out latency is recorded at the end of the worker's turn).
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + WAIT;
    loop {
        let scrape = scrape(addr);
        if done(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{what}: not reached");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn metrics_parse_and_move_with_load() {
    let server = TestServer::start();
    let before = scrape(server.addr);
    for family in [
        "halley_connections",
        "halley_subscribers",
        "halley_publishes_total",
        "halley_deliveries_total",
        "halley_bytes_written_total",
        "halley_gaps_reported_total",
        "halley_overflow_closes_total",
        "halley_history_messages",
        "halley_history_bytes",
        "halley_history_evictions_total",
        "halley_hub_queue_depth",
        "halley_fanout_latency_seconds",
        "halley_accept_pauses_total",
        "halley_sessions",
    ] {
        let doc = before.docs.get(family).unwrap_or_else(|| panic!("no HELP for {family}"));
        assert!(!doc.is_empty(), "{family}");
        assert!(before.samples.iter().any(|s| s.metric == family), "no sample of {family}");
    }
    assert!(matches!(
        before.samples.iter().find(|s| s.metric == "halley_fanout_latency_seconds").map(|s| &s.value),
        Some(Value::Histogram(_))
    ));
    let longpoll = [("transport", "longpoll"), ("protocol", "native"), ("family", "parked")];
    assert_eq!(value(&before, "halley_subscribers", &longpoll), 0.0);
    assert_eq!(value(&before, "halley_publishes_total", &[]), 0.0);
    assert_eq!(value(&before, "halley_fanout_latency_seconds", &[]), 0.0);

    // A parked long-poll shows as a parked native long-poll subscriber.
    let mut waiting = server.client();
    waiting.send(b"GET /sub/metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("parked", 1);
    let parked = scrape(server.addr);
    assert_eq!(value(&parked, "halley_subscribers", &longpoll), 1.0);
    assert_eq!(value(&parked, "halley_parked_requests", &[]), 1.0);

    // Publishes wake it; the counters, the bytes and the latency histogram move.
    for i in 0..3 {
        assert_eq!(server.client().post("/pub/metrics", format!("m{i}").as_bytes()).status, 201);
    }
    assert_eq!(waiting.response().status, 200);
    let after = scrape_until(server.addr, "a fan-out latency sample", |s| {
        value(s, "halley_fanout_latency_seconds", &[]) >= 1.0
    });
    assert_eq!(value(&after, "halley_publishes_total", &[]), 3.0);
    assert!(value(&after, "halley_deliveries_total", &[]) >= 1.0);
    assert!(value(&after, "halley_bytes_written_total", &[]) > value(&before, "halley_bytes_written_total", &[]));
    assert_eq!(value(&after, "halley_history_messages", &[]), 3.0);
    assert!(value(&after, "halley_history_bytes", &[]) > 0.0);
    assert_eq!(value(&after, "halley_subscribers", &longpoll), 0.0);
    assert!(value(&after, "halley_requests_total", &[]) >= 5.0);
}

#[test]
fn gaps_and_evictions_are_counted() {
    // History of 2 per topic: 5 publishes evict 3, and a reader from the first id sees a gap.
    let server = TestServer::with(|c| c.history.max_messages = 2);
    let first = util::publish(server.addr, "/g", b"0");
    for i in 1..5 {
        util::publish(server.addr, "/g", i.to_string().as_bytes());
    }
    let id = first["id"].as_str().expect("id");
    let reply = server.client().get(&format!("/sub/g?since={id}&timeout=0"));
    assert_eq!(reply.json()["gap"], true, "{}", reply.text());
    let scrape = scrape(server.addr);
    assert_eq!(value(&scrape, "halley_history_evictions_total", &[("reason", "topic_bound")]), 3.0);
    assert_eq!(value(&scrape, "halley_gaps_reported_total", &[]), 1.0);
}

#[test]
fn the_admin_listener_serves_the_figures_and_nothing_else() {
    let admin: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server = TestServer::with(|c| c.network.admin_listen = Some(admin));
    let admin = server.admin_addr.expect("admin address");
    assert_ne!(admin, server.addr);
    let mut c = Client::connect(admin);
    for path in ["/health", "/ready", "/stats"] {
        assert_eq!(c.get(path).status, 200, "{path}");
    }
    scrape(admin);
    let refused = c.get("/sub/a?timeout=0");
    assert_eq!(refused.status, 404);
    assert!(refused.text().contains("admin listener"), "{}", refused.text());
    assert_eq!(c.post("/pub/a", b"x").status, 404, "publishing needs --admin-publish");
    // The public listener still serves everything.
    assert_eq!(server.client().get("/sub/a?timeout=0").status, 200);

    let server = TestServer::with(|c| {
        c.network.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
        c.network.admin_publish = true;
    });
    let admin = server.admin_addr.expect("admin address");
    assert_eq!(Client::connect(admin).post("/pub/a", b"x").status, 201);
    assert_eq!(value(&scrape(admin), "halley_publishes_total", &[]), 1.0);
}

#[test]
fn ready_answers_503_while_draining() {
    let mut config = TestServer::config(|c| c.network.admin_listen = Some("127.0.0.1:0".parse().expect("addr")));
    config.timeouts.shutdown = WAIT;
    let server = halley::server::start(config).expect("start");
    let (addr, admin) = (server.local_addr(), server.admin_addr().expect("admin"));
    assert_eq!(Client::connect(admin).get("/ready").status, 200);
    assert_eq!(Client::connect(addr).get("/ready").status, 200);
    // A parked long-poll, and a publish whose body is half sent: the publish holds the drain.
    let mut parked = Client::connect(addr);
    parked.send(b"GET /sub/drain HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut publishing = Client::connect(addr);
    publishing.send(b"POST /pub/drain HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab");
    // Both requests are in the server before it is told to stop.
    assert_eq!(Client::connect(admin).get("/ready").status, 200);
    let stopping = std::thread::spawn(move || server.shutdown());
    let deadline = Instant::now() + WAIT;
    let not_ready = loop {
        let response = Client::connect(admin).get("/ready");
        if response.status != 200 {
            break response;
        }
        assert!(Instant::now() < deadline, "/ready never left 200");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(not_ready.status, 503);
    assert!(not_ready.text().contains("draining"), "{}", not_ready.text());
    // The parked long-poll was answered with its cursor; the public listener takes no one new.
    assert_eq!(parked.response().status, 200);
    assert!(std::net::TcpStream::connect(addr).is_err(), "the public listener is closed");
    // The publish in progress completes, and then the server is gone.
    publishing.send(b"cd");
    assert_eq!(publishing.response().status, 201);
    stopping.join().expect("shutdown");
    let mut rest = Vec::new();
    let _ = publishing.stream.read_to_end(&mut rest);
}
