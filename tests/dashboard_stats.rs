//! The dashboard's figures in `/stats`, over real sockets: subscribers counted by transport (one
//! of each kind, each under its own name and in its family's gauge, every gauge back to zero
//! once they are answered or gone), and the fan-out latency window (nothing before a delivery
//! nor for a catch-up read of history, one sample per message per worker after a hub turn
//! delivers it, the figures in order).

mod util;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::ws::Ws;
use util::{publish, Client, StreamClient, TestServer, WAIT};

/// Every transport gauge `/stats` has, by name.
const KINDS: [&str; 12] = [
    "longpoll",
    "jsonp",
    "pushlet_pull",
    "bayeux_http",
    "sse",
    "ndjson",
    "iframe",
    "multipart",
    "pushlet_stream",
    "websocket",
    "raw",
    "bayeux_ws",
];

/// The transport gauges summed over the workers.
fn transports(server: &TestServer) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for worker in server.stats()["workers"].as_array().expect("workers") {
        for (name, n) in worker["transports"].as_object().expect("transports") {
            *total.entry(name.clone()).or_insert(0) += n.as_u64().expect("a count");
        }
    }
    total
}

/// Waits (bounded by WAIT) until the transport gauges are `want` (names not in it: zero).
fn wait_transports(server: &TestServer, want: &[(&str, u64)]) {
    let want: BTreeMap<String, u64> =
        KINDS.iter().map(|&k| (k.to_owned(), want.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v))).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let got = transports(server);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "transport gauges: wanted {want:?}, still {got:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends a request whose answer waits (a long-poll), without reading it.
fn held(server: &TestServer, path: &str) -> Client {
    let mut c = server.client();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    c
}

fn stream(server: &TestServer, path: &str) -> StreamClient {
    let s = StreamClient::open(server.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
    assert_eq!(s.head.status, 200, "{path}");
    s
}

/// A Pushlet pull session on `subject`, with its refresh held on a connection of its own.
fn pushlet_pull(server: &TestServer, subject: &str) -> Client {
    let mut c = server.client();
    let r = c.get(&format!("/pushlet.srv?p_event=join-listen&p_format=xml-strict&p_mode=pull&p_subject={subject}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let id = text.split("p_id=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a p_id in the join reply");
    held(server, &format!("/pushlet.srv?p_event=refresh&p_id={id}"))
}

/// A Bayeux client subscribed to `channel`, with a held `/meta/connect` over HTTP.
fn bayeux_http(server: &TestServer, channel: &str) -> Client {
    let mut c = server.client();
    let hs =
        json!([{"id":"1","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]);
    let reply = c.post("/cometd", hs.to_string().as_bytes()).json();
    let client = reply[0]["clientId"].as_str().expect("clientId").to_owned();
    let first = json!([
        {"id":"2","channel":"/meta/subscribe","subscription":channel,"clientId":client},
        {"id":"3","channel":"/meta/connect","connectionType":"long-polling","clientId":client,"advice":{"timeout":0}},
    ]);
    assert_eq!(c.post("/cometd", first.to_string().as_bytes()).status, 200);
    let held = json!([{"id":"4","channel":"/meta/connect","connectionType":"long-polling","clientId":client}]);
    c.send_post("/cometd", held.to_string().as_bytes(), "Content-Type: application/json\r\n");
    c
}

#[test]
fn every_transport_is_counted_under_its_own_name_and_uncounted_when_it_goes() {
    let server = TestServer::with(|c| c.network.raw_listen = Some("127.0.0.1:0".parse().expect("addr")));
    wait_transports(&server, &[]);

    // The parked ones: a native long-poll and its JSONP form, a Pushlet pull refresh, a Bayeux connect.
    let mut longpoll = held(&server, "/sub/t/a?timeout=30");
    let mut jsonp = held(&server, "/sub/t/a?transport=jsonp&callback=cb&timeout=30");
    let pull = pushlet_pull(&server, "/t/a");
    let bayeux = bayeux_http(&server, "/t/a");
    let parked = [("longpoll", 1), ("jsonp", 1), ("pushlet_pull", 1), ("bayeux_http", 1)];
    wait_transports(&server, &parked);
    assert_eq!(server.worker_total("parked"), 4);

    // The streams: SSE, ndjson, iframe, multipart, Pushlet's stream mode.
    let streams = [
        stream(&server, "/sub/t/b?transport=sse"),
        stream(&server, "/sub/t/b?transport=stream"),
        stream(&server, "/sub/t/b?transport=iframe&callback=parent.cb"),
        stream(&server, "/sub/t/b?transport=multipart"),
        stream(&server, "/pushlet.srv?p_event=join-listen&p_format=xml-strict&p_mode=stream&p_subject=/t/b"),
    ];
    // The sockets: a native WebSocket, raw TCP, Bayeux over WebSocket.
    let ws = Ws::connect(server.addr, "/sub/t/c");
    let mut raw = TcpStream::connect(server.raw_addr.expect("raw listener")).expect("connect raw");
    raw.write_all(b"{\"op\":\"subscribe\",\"topics\":[\"/t/c\"]}\n").expect("write");
    let bayeux_ws = Ws::connect(server.addr, "/cometd");
    let mut all: Vec<(&str, u64)> = parked.to_vec();
    all.extend(
        ["sse", "ndjson", "iframe", "multipart", "pushlet_stream", "websocket", "raw", "bayeux_ws"].map(|k| (k, 1)),
    );
    wait_transports(&server, &all);
    // Each is counted once, in its family's gauge too.
    assert_eq!(server.worker_total("parked"), 4);
    assert_eq!(server.worker_total("streaming"), 5);
    assert_eq!(server.worker_total("duplex"), 3);

    // Answered: a message wakes every parked one; the native long-polls are answered and
    // gone from the gauges (the Pushlet and Bayeux ones too, answered with the event).
    publish(server.addr, "/t/a", b"wake");
    assert_eq!(longpoll.response().status, 200);
    let reply = jsonp.response();
    assert!(reply.text().contains("cb(") && reply.text().contains("wake"), "{}", reply.text());
    all.retain(|(k, _)| !parked.iter().any(|(p, _)| p == k));
    wait_transports(&server, &all);
    assert_eq!(server.worker_total("parked"), 0);

    // Gone: every client leaves; nothing stays counted.
    drop((pull, bayeux, longpoll, jsonp));
    for s in streams {
        let _ = s.client.stream.shutdown(Shutdown::Both);
    }
    for socket in [ws, bayeux_ws] {
        let _ = socket.stream.shutdown(Shutdown::Both);
    }
    let _ = raw.shutdown(Shutdown::Both);
    wait_transports(&server, &[]);
    for family in ["parked", "streaming", "duplex"] {
        assert_eq!(server.worker_total(family), 0, "{family}");
    }
}

/// The fan-out latency figures of `stats` (the node's, or one worker's).
fn latency(stats: &Value) -> (u64, Option<f64>, Option<f64>, Option<f64>) {
    let l = &stats["fanout_latency_ms"];
    (l["samples"].as_u64().expect("samples"), l["p50"].as_f64(), l["p99"].as_f64(), l["max"].as_f64())
}

#[test]
fn fanout_latency_is_reported_once_per_message_and_worker_after_deliveries() {
    // No heartbeat re-read during the test: every delivery comes from a hub turn.
    let server = TestServer::with(|c| c.streams.heartbeat_interval = Duration::from_secs(60));
    assert_eq!(latency(&server.stats()), (0, None, None, None), "nothing delivered, nothing reported");

    // Reading history that was published before (a catch-up) is not fan-out.
    for i in 0..3 {
        publish(server.addr, "/lat/old", format!("old{i}").as_bytes());
    }
    let r = server.client().get("/sub/lat/old?since=all");
    assert_eq!(r.json()["messages"].as_array().map(Vec::len), Some(3));
    assert_eq!(latency(&server.stats()).0, 0, "a catch-up read taken for fan-out");

    // A stream: each message is one sample on its worker.
    let mut sse = stream(&server, "/sub/lat/s?transport=sse");
    server.wait_for("streaming", 1);
    for i in 0..20 {
        publish(server.addr, "/lat/s", format!("m{i}").as_bytes());
    }
    sse.read_until(|body| String::from_utf8_lossy(body).contains("data: m19"));
    let (samples, p50, p99, max) = latency(&server.stats());
    assert_eq!(samples, 20);
    let (p50, p99, max) = (p50.expect("p50"), p99.expect("p99"), max.expect("max"));
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "p50 {p50} p99 {p99} max {max}");
    assert!(max < WAIT.as_millis() as f64, "a loopback delivery took {max} ms");

    // A broadcast to parked long-polls: one sample per message on each worker holding some,
    // however many subscribers it has there.
    let mut polls: Vec<Client> = (0..6).map(|_| held(&server, "/sub/lat/b?timeout=30")).collect();
    server.wait_for("parked", 6);
    let before = server.stats();
    let holding: Vec<bool> = before["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["transports"]["longpoll"].as_u64() > Some(0))
        .collect();
    publish(server.addr, "/lat/b", b"all of you");
    for c in &mut polls {
        assert!(c.response().text().contains("all of you"));
    }
    server.wait_for("parked", 0);
    let after = server.stats();
    for (i, holds) in holding.iter().enumerate() {
        let (was, now) = (latency(&before["workers"][i]).0, latency(&after["workers"][i]).0);
        assert_eq!(now - was, u64::from(*holds), "worker {i}: samples {was} -> {now}");
    }
    assert_eq!(latency(&after).0, 20 + holding.iter().filter(|h| **h).count() as u64);
}
