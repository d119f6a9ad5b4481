//! Cluster mode under faults, against real redis-server and real `halley` processes (issue
//! 10's tests 3 and 7): a node killed with `kill -9` mid-stream, and Redis frozen for 10 s.
//! Each test starts its own Redis on a free port and stops only the processes it started.

mod util;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use util::process::Halley;
use util::redis::Redis;
use util::{Client, StreamClient, TestServer, WAIT};

/// A `halley serve` process on `redis` (port 0, 2 workers), and its address.
fn node(redis: &Redis) -> (Halley, SocketAddr) {
    let url = redis.url();
    let args = ["serve", "--redis", &url, "--listen", "127.0.0.1:0", "--workers", "2", "--no-pin"];
    let node = Halley::spawn(&args, &[]);
    let addr = node.addr();
    (node, addr)
}

/// Publishes with `key` to `addr`; the reply's status and id (if any). None when the node
/// cannot be reached or closed the connection first.
fn post(addr: SocketAddr, topic: &str, body: &str, key: &str) -> Option<(u16, Option<String>)> {
    let mut c = Client::try_connect(addr)?;
    c.send_post(&format!("/pub{topic}"), body.as_bytes(), &format!("Idempotency-Key: {key}\r\n"));
    let r = c.try_response()?;
    let id = (r.status == 201).then(|| r.json()["id"].as_str().expect("id").to_owned());
    Some((r.status, id))
}

/// Publishes with `key`, trying `nodes` in turn until one acknowledges (a 503 or a dead node
/// is retried with the same key): the id.
fn publish_until_stored(nodes: &[SocketAddr], topic: &str, body: &str, key: &str) -> String {
    let deadline = Instant::now() + WAIT;
    for addr in nodes.iter().cycle() {
        match post(*addr, topic, body, key) {
            Some((201, Some(id))) => return id,
            Some((503, _)) | None => {}
            Some((status, _)) => panic!("publish {key}: {status}"),
        }
        assert!(Instant::now() < deadline, "publish {key} never stored");
    }
    unreachable!("cycle never ends")
}

/// The seq of an id `<epoch>-<seq>`.
fn seq(id: &str) -> u64 {
    id.rsplit_once('-').and_then(|(_, s)| s.parse().ok()).unwrap_or_else(|| panic!("id {id}"))
}

/// The (id, data) of every SSE message event in `text` (not the opening `retry:`/`id:` block,
/// which has no data); a gap event fails the test.
fn sse_events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for event in text.split("\n\n") {
        assert!(!event.lines().any(|l| l == "event: gap"), "a gap: {event}");
        let id = event.lines().find_map(|l| l.strip_prefix("id: "));
        let data = event.lines().find_map(|l| l.strip_prefix("data: "));
        if let (Some(id), Some(data)) = (id, data) {
            out.push((id.to_owned(), data.to_owned()));
        }
    }
    out
}

fn open_sse(addr: SocketAddr, topic: &str, last_id: &str) -> StreamClient {
    let request =
        format!("GET /sub{topic} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: {last_id}\r\n\r\n");
    let sse = StreamClient::open(addr, &request);
    assert_eq!(sse.head.status, 200);
    sse
}

/// An SSE subscriber that follows `topic` from `since` on `nodes[0]`, moves to the next node
/// with its last id when its stream ends, and stops at the message `end`. Reports each
/// message's data on `seen` as it comes; returns every (id, data) before `end`.
fn sse_subscriber(
    nodes: Vec<SocketAddr>,
    topic: &'static str,
    since: String,
    seen: mpsc::Sender<String>,
) -> std::thread::JoinHandle<Vec<(String, String)>> {
    std::thread::spawn(move || {
        let mut got: Vec<(String, String)> = Vec::new();
        for addr in nodes {
            let last = got.last().map_or(since.clone(), |(id, _)| id.clone());
            let mut sse = open_sse(addr, topic, &last);
            let mut taken = 0;
            loop {
                let alive = sse.read_more();
                // Only complete events (up to the last blank line) are taken.
                let text = sse.text();
                let complete = text.rfind("\n\n").map_or("", |end| &text[..end + 2]);
                let events = sse_events(complete);
                for (id, data) in events.into_iter().skip(taken) {
                    taken += 1;
                    if data == "end" {
                        return got;
                    }
                    let _ = seen.send(data.clone());
                    got.push((id, data));
                }
                if !alive {
                    break;
                }
            }
        }
        panic!("every node's stream ended before `end`: {} messages", got.len());
    })
}

/// A native long-poll subscriber: polls `nodes[0]` from `since`; when a node cannot be reached
/// or drops the poll it moves to the next with its cursor; stops at the message `end`.
fn longpoll_subscriber(
    nodes: Vec<SocketAddr>,
    topic: &'static str,
    since: String,
) -> std::thread::JoinHandle<Vec<(String, String)>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut cursor = since;
        let deadline = Instant::now() + 3 * WAIT;
        for addr in nodes {
            loop {
                assert!(Instant::now() < deadline, "no `end` after {} messages", got.len());
                let Some(mut c) = Client::try_connect(addr) else { break };
                c.send(format!("GET /sub{topic}?since={cursor}&timeout=5 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                let Some(r) = c.try_response() else { break };
                assert_eq!(r.status, 200, "{}", r.text());
                let v = r.json();
                assert!(v.get("gap").is_none(), "a gap: {v}");
                for m in v["messages"].as_array().expect("messages") {
                    let data = m["data"].as_str().expect("data").to_owned();
                    if data == "end" {
                        return got;
                    }
                    got.push((m["id"].as_str().expect("id").to_owned(), data));
                }
                cursor = v["next"].as_str().expect("next").to_owned();
            }
        }
        panic!("no node left before `end`: {} messages", got.len());
    })
}

#[test]
fn a_node_killed_mid_stream_loses_its_clients_nothing_and_a_retried_publish_is_stored_once() {
    let redis = Redis::start(false);
    let (mut a, a_addr) = node(&redis);
    let (_b, b_addr) = node(&redis);
    let (_c, c_addr) = node(&redis);
    let topic = "/k";
    let start = util::cursor(a_addr, topic);
    // A's subscribers: SSE moves to C when A dies, long-poll to B.
    let (seen_tx, seen) = mpsc::channel();
    let sse = sse_subscriber(vec![a_addr, c_addr], topic, start.clone(), seen_tx);
    let polls = longpoll_subscriber(vec![a_addr, b_addr], topic, start);

    // Publishers on B and C, one after another (so acknowledged order is log order); halfway
    // they wait for the kill, so that publishing goes on both before and after it.
    const N: usize = 80;
    let (killed_tx, killed) = mpsc::channel::<()>();
    let others = [b_addr, c_addr];
    let publisher = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..N {
            if i == N / 2 {
                killed.recv().expect("the kill");
            }
            let id =
                publish_until_stored(&[others[i % 2], others[(i + 1) % 2]], topic, &format!("m{i}"), &format!("m-{i}"));
            acked.push((id, format!("m{i}")));
        }
        acked
    });

    // Mid-stream: A's SSE client has had some messages.
    for _ in 0..10 {
        seen.recv_timeout(WAIT).expect("messages on A before the kill");
    }
    // A publish sent to A just before the kill: its reply is lost with A.
    let mut lost_a = Client::connect(a_addr);
    lost_a.send_post(&format!("/pub{topic}"), b"lost-a", "Idempotency-Key: lost-a\r\n");
    a.signal("KILL");
    a.child.wait().expect("the killed node is reaped");
    killed_tx.send(()).expect("publisher running");
    // A publish to B whose connection is dropped before the reply: stored, reply never read.
    let mut lost_b = Client::connect(b_addr);
    lost_b.send_post(&format!("/pub{topic}"), b"lost-b", "Idempotency-Key: lost-b\r\n");
    drop(lost_b);
    let deadline = Instant::now() + WAIT;
    while redis.command("EXISTS {halley}:idem:lost-b\r\n").as_deref() != Some(":1\r\n") {
        assert!(Instant::now() < deadline, "the dropped publish was never stored");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Both retried with their keys on another node: stored once each.
    let id_a = publish_until_stored(&[b_addr, c_addr], topic, "lost-a", "lost-a");
    let id_b = publish_until_stored(&[c_addr], topic, "lost-b", "lost-b");
    assert_eq!(publish_until_stored(&[b_addr], topic, "lost-b", "lost-b"), id_b, "a second retry: the same id");

    let mut want = publisher.join().expect("publisher");
    publish_until_stored(&[c_addr], topic, "end", "end");
    want.push((id_a, "lost-a".into()));
    want.push((id_b, "lost-b".into()));
    want.sort_by_key(|(id, _)| seq(id));
    let ids: HashSet<&String> = want.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), N + 2, "every publish has its own id");

    let got = sse.join().expect("SSE subscriber");
    assert_eq!(got, want, "SSE, resumed on C: every message once, in order");
    let got = polls.join().expect("long-poll subscriber");
    assert_eq!(got, want, "long-poll, resumed on B: every message once, in order");
    // The log itself holds each message once.
    let len = redis.command("XLEN {halley}:log\r\n").expect("XLEN");
    assert_eq!(len.trim(), format!(":{}", N + 3), "N, the two retried and `end`");
}

/// The writer's read timeout (`src/store/redis/writer.rs` `WRITE_TIMEOUT`) and the tail's
/// (`tail.rs`: its 1 s block + 2 s slack): a frozen Redis must show within these.
const WRITER_TIMEOUT: Duration = Duration::from_secs(1);
const TAIL_TIMEOUT: Duration = Duration::from_secs(3);
/// What a loaded 2-core CI box may add to either.
const SLACK: Duration = Duration::from_millis(1500);

#[test]
fn redis_frozen_for_10_s_fails_publishes_fast_shows_the_link_down_and_loses_nothing_acknowledged() {
    let redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |_| {});
    let topic = "/f";
    let link = || a.stats()["store"]["log"].clone();
    let start = link();
    assert_eq!((&start["up"], &start["tail_up"], &start["downs"]), (&json!(true), &json!(true), &json!(0)), "{start}");
    // A subscriber that stays connected all through.
    let mut sse = open_sse(a.addr, topic, &util::cursor(a.addr, topic));
    let mut stored = vec![(publish_until_stored(&[a.addr], topic, "f0", "f-0"), "f0".to_owned())];
    let mut refused = Vec::new();

    redis.freeze();
    let frozen_at = Instant::now();
    let (mut writer_down_at, mut tail_down_at) = (None, None);
    let mut i = 1;
    while frozen_at.elapsed() < Duration::from_secs(10) {
        let (data, key) = (format!("f{i}"), format!("f-{i}"));
        let t = Instant::now();
        let mut c = Client::connect(a.addr);
        c.send_post(&format!("/pub{topic}"), data.as_bytes(), &format!("Idempotency-Key: {key}\r\n"));
        let r = c.response();
        assert!(t.elapsed() < WRITER_TIMEOUT + SLACK, "a publish waited {:?}: not failing fast", t.elapsed());
        match r.status {
            201 => stored.push((r.json()["id"].as_str().expect("id").to_owned(), data)),
            503 => {
                assert!(r.text().contains("Redis unreachable"), "{}", r.text());
                assert_eq!(r.header("retry-after"), Some("1"));
                refused.push((data, key));
                writer_down_at.get_or_insert(frozen_at.elapsed());
                assert_eq!(link()["up"], false, "a refusing node reports its writer down");
            }
            other => panic!("{other}: {}", r.text()),
        }
        if link()["tail_up"] == false {
            tail_down_at.get_or_insert(frozen_at.elapsed());
        }
        i += 1;
        // Paced, so that the freeze sees a few dozen publishes rather than thousands of 503s.
        std::thread::sleep(Duration::from_millis(200));
    }
    // The half-open link is detected by its read timeouts: the writer's first publish, the
    // tail's blocked read.
    let writer_down_at = writer_down_at.expect("a frozen Redis refuses publishes");
    assert!(writer_down_at < WRITER_TIMEOUT + SLACK, "writer down only after {writer_down_at:?}");
    let tail_down_at = tail_down_at.expect("the tail never reported its link down");
    assert!(tail_down_at < TAIL_TIMEOUT + SLACK, "tail down only after {tail_down_at:?}");
    assert!(link()["downs"].as_u64().expect("downs") >= 2, "{}", link());
    let metrics = Client::connect(a.addr).get("/metrics");
    for line in ["halley_redis_up 0", "halley_redis_tail_up 0"] {
        assert!(metrics.text().lines().any(|l| l == line), "no {line:?} in /metrics");
    }

    redis.thaw();
    // Every refused publish retried with its key: stored once, whether or not Redis ran the
    // refused attempt when it woke.
    for (data, key) in refused {
        stored.push((publish_until_stored(&[a.addr], topic, &data, &key), data));
    }
    publish_until_stored(&[a.addr], topic, "end", "f-end");
    let ids: HashSet<&String> = stored.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), i, "one id per publish");
    stored.sort_by_key(|(id, _)| seq(id));
    // The subscriber that stayed connected: every message once, in the log's order.
    sse.read_until_count("data: end\n", 1);
    let got: Vec<(String, String)> = sse_events(&sse.text()).into_iter().filter(|(_, d)| d != "end").collect();
    assert_eq!(got, stored);
    let len = redis.command("XLEN {halley}:log\r\n").expect("XLEN");
    assert_eq!(len.trim(), format!(":{}", i + 1), "each publish once in the log, and `end`");
    let deadline = Instant::now() + WAIT;
    while link()["tail_up"] != true {
        assert!(Instant::now() < deadline, "the tail never came back: {}", link());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(link()["up"], true);
}
