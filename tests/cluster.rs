//! Cluster mode against real redis-server processes (issue 10's tests): several Halley nodes
//! on one Redis log, over real sockets. Each test starts its own Redis on a free port.

mod util;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::redis::Redis;
use util::ws::Ws;
use util::{Client, StreamClient, TestServer, WAIT};

/// Publishes and returns the reply (any status).
fn post(addr: SocketAddr, topic: &str, body: &str, key: Option<&str>) -> util::Response {
    let mut c = Client::connect(addr);
    let extra = key.map(|k| format!("Idempotency-Key: {k}\r\n")).unwrap_or_default();
    c.send_post(&format!("/pub{topic}"), body.as_bytes(), &extra);
    c.response()
}

fn publish(addr: SocketAddr, topic: &str, body: &str) -> String {
    let r = post(addr, topic, body, None);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().expect("id").to_owned()
}

/// Long-polls from `since` until `want` messages came; returns (id, data) pairs and the
/// last reply.
fn collect(addr: SocketAddr, topics: &str, since: &str, want: usize) -> (Vec<(String, String)>, Value) {
    let mut got = Vec::new();
    let mut cursor = since.to_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        let r = Client::connect(addr).get(&format!("/sub{topics}?since={cursor}&timeout=2"));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        for m in v["messages"].as_array().expect("messages") {
            got.push((m["id"].as_str().expect("id").to_owned(), m["data"].as_str().unwrap_or("").to_owned()));
        }
        cursor = v["next"].as_str().expect("next").to_owned();
        if got.len() >= want {
            return (got, v);
        }
        assert!(Instant::now() < deadline, "only {} of {want} messages: {got:?}", got.len());
    }
}

/// Appends `n` entries to the log after its last seq, as a foreign or broken writer would;
/// `fields` are the entries' field and value words. Returns the last seq taken.
fn inject(redis: &Redis, n: u32, fields: &str) -> u64 {
    let script = "local n = tonumber(ARGV[1]) local s = redis.call('HINCRBY', KEYS[1], 'seq', n) \
        for i = s - n + 1, s do redis.call('XADD', KEYS[2], string.format('%d-0', i), unpack(ARGV, 2)) end \
        return s";
    let reply =
        redis.command(&format!("EVAL \"{script}\" 2 {{halley}}:meta {{halley}}:log {n} {fields}\r\n")).expect("EVAL");
    reply.trim().strip_prefix(':').and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("EVAL: {reply}"))
}

/// A Pushlet session as the 2.0.4 AJAX client drives it (tests/pushlet_clients.rs): a
/// `join-listen` in pull mode, then `refresh` requests, each on its own connection.
struct PushletPull {
    addr: SocketAddr,
    id: String,
}

impl PushletPull {
    fn url(event: &str, query: &str) -> String {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        format!("/pushlet.srv?p_event={event}&{query}&time={ms}")
    }

    fn join(addr: SocketAddr, subject: &str) -> PushletPull {
        let url = PushletPull::url("join-listen", &format!("p_format=xml-strict&p_mode=pull&p_subject={subject}"));
        let r = Client::connect(addr).get(&url);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("p_event=\"join-listen-ack\""), "{}", r.text());
        PushletPull { addr, id: util::pushlet_session_id(r.text()) }
    }

    /// Refreshes until `want` data events came; their `p_data`, in order.
    fn data(&mut self, want: usize) -> Vec<String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got.len() < want {
            assert!(Instant::now() < deadline, "only {} of {want} Pushlet events: {got:?}", got.len());
            let r = Client::connect(self.addr).get(&PushletPull::url("refresh", &format!("p_id={}", self.id)));
            assert_eq!(r.status, 200, "{}", r.text());
            for event in r.text().split("<event ").skip(1) {
                assert!(!event.contains("p_event=\"abort\"") && !event.contains("p_event=\"error\""), "{event}");
                if event.contains("p_event=\"data\"") {
                    let at = event.find("p_data=\"").expect("p_data") + "p_data=\"".len();
                    let len = event[at..].find('"').expect("closing quote");
                    got.push(event[at..at + len].to_owned());
                }
            }
        }
        got
    }
}

/// A Bayeux client on long-polling: handshake, subscribe, then `/meta/connect` after
/// `/meta/connect`.
struct BayeuxPoll {
    addr: SocketAddr,
    client: String,
    connects: usize,
}

impl BayeuxPoll {
    fn post(addr: SocketAddr, batch: &Value) -> Vec<Value> {
        let body = serde_json::to_vec(batch).expect("json");
        let mut c = Client::connect(addr);
        c.send_post("/cometd", &body, "Content-Type: application/json\r\n");
        let r = c.response();
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_value(r.json()).expect("a reply batch")
    }

    fn subscribe(addr: SocketAddr, channel: &str) -> BayeuxPoll {
        let hs = BayeuxPoll::post(
            addr,
            &json!([{"id": "1", "channel": "/meta/handshake", "version": "1.0",
                     "supportedConnectionTypes": ["long-polling"]}]),
        );
        assert_eq!(hs[0]["successful"], true, "{hs:?}");
        let client = hs[0]["clientId"].as_str().expect("clientId").to_owned();
        let sub = BayeuxPoll::post(
            addr,
            &json!([{"id": "2", "channel": "/meta/subscribe", "subscription": channel, "clientId": client},
                    {"id": "3", "channel": "/meta/connect", "connectionType": "long-polling",
                     "clientId": client, "advice": {"timeout": 0}}]),
        );
        assert!(sub.iter().all(|r| r["successful"] == true), "{sub:?}");
        BayeuxPoll { addr, client, connects: 0 }
    }

    /// Connects until `want` events came; their ids and data, in order.
    fn events(&mut self, want: usize) -> (Vec<String>, Vec<String>) {
        let (mut ids, mut datas) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + WAIT;
        while ids.len() < want {
            assert!(Instant::now() < deadline, "only {} of {want} Bayeux events: {datas:?}", ids.len());
            self.connects += 1;
            let connect = json!([{"id": format!("c{}", self.connects), "channel": "/meta/connect",
                                  "connectionType": "long-polling", "clientId": self.client}]);
            for reply in BayeuxPoll::post(self.addr, &connect) {
                if reply["channel"] == "/meta/connect" {
                    assert_eq!(reply["successful"], true, "{reply}");
                } else {
                    ids.push(reply["id"].as_str().expect("id").to_owned());
                    datas.push(reply["data"].as_str().expect("data").to_owned());
                }
            }
        }
        (ids, datas)
    }
}

#[test]
fn unreadable_log_entries_are_passed_over_not_read_for_ever() {
    let redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |_| {});
    let before = publish(a.addr, "/u", "before");
    // More unreadable entries than one XREAD takes (512): a tail that moved only past what
    // parsed would read the same page again for ever.
    inject(&redis, 600, "junk x");
    let after = publish(a.addr, "/u", "after");
    let (got, _) = collect(a.addr, "/u", &before, 1);
    assert_eq!(got, [(after, "after".to_owned())]);
}

#[test]
fn a_cold_page_all_of_another_epoch_moves_the_read_on() {
    let redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |_| {});
    let before = publish(a.addr, "/o", "before");
    // A full XRANGE page (512) and more of entries written under an epoch that is not the
    // log's: the tail passes them over after one sync, and a cold read moves past them.
    inject(&redis, 600, "e stray t /o d stray");
    let after = publish(a.addr, "/o", "after");
    // A node started now serves the cursor from Redis.
    let b = TestServer::cluster(&redis, |_| {});
    let (got, _) = collect(b.addr, "/o", &before, 1);
    assert_eq!(got, [(after.clone(), "after".to_owned())]);
    let (got, _) = collect(a.addr, "/o", &before, 1);
    assert_eq!(got, [(after, "after".to_owned())]);
}

#[test]
fn three_nodes_one_order_on_every_surface_and_resume_on_another_node() {
    let redis = Redis::start(false);
    let nodes: Vec<TestServer> = (0..3).map(|_| TestServer::cluster(&redis, |_| {})).collect();
    let start = util::cursor(nodes[0].addr, "/c/*");
    // Subscribers on every node before the publishing: SSE on 1, WebSocket on 2; long-poll on
    // all three (read after).
    let mut sse = StreamClient::open(
        nodes[1].addr,
        &format!("GET /sub/c/*?since={start} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"),
    );
    let mut ws = Ws::connect(nodes[2].addr, &format!("/sub/c/*?since={start}"));
    assert_eq!(ws.json()["type"], "ack");
    // Sessions, which take messages from their join on: a Pushlet pull session (the AJAX
    // client's requests) on 0 and a Bayeux long-polling session on 1.
    let mut pushlet = PushletPull::join(nodes[0].addr, "/c");
    let mut bayeux = BayeuxPoll::subscribe(nodes[1].addr, "/c/*");
    const N: usize = 30;
    let mut acked = Vec::new();
    for i in 0..N {
        let node = &nodes[i % 3];
        acked.push(publish(node.addr, &format!("/c/{}", i % 4), &format!("m{i}")));
    }
    // The ids the log gave are distinct and increase in publish order.
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), N);
    let order: Vec<(String, String)> = {
        let (got, _) = collect(nodes[0].addr, "/c/*", &start, N);
        got
    };
    assert_eq!(order.len(), N, "nothing duplicated");
    assert_eq!(order.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), acked, "the global order");
    for node in &nodes[1..] {
        let (got, _) = collect(node.addr, "/c/*", &start, N);
        assert_eq!(got, order, "every node serves the same order");
    }
    sse.read_until_count("\ndata: ", N);
    let sse_ids: Vec<String> = sse
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter(|id| *id != start)
        .map(str::to_owned)
        .collect();
    assert_eq!(sse_ids, acked, "SSE sees the same order");
    let mut ws_ids = Vec::new();
    while ws_ids.len() < N {
        let v = ws.json();
        if let Some(id) = v["id"].as_str() {
            ws_ids.push(id.to_owned());
        }
    }
    assert_eq!(ws_ids, acked, "WebSocket sees the same order");
    let datas: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(pushlet.data(N), datas, "the Pushlet session sees the same order");
    let (bayeux_ids, bayeux_datas) = bayeux.events(N);
    assert_eq!(bayeux_ids, acked, "the Bayeux session sees the same order");
    assert_eq!(bayeux_datas, datas);

    // Resume on another node from message k: exactly k+1 onwards.
    let k = 11;
    let (rest, _) = collect(nodes[2].addr, "/c/*", &acked[k], N - k - 1);
    assert_eq!(rest, order[k + 1..], "resumed on another node");
}

#[test]
fn an_idempotent_retry_is_stored_once() {
    let redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |_| {});
    let b = TestServer::cluster(&redis, |_| {});
    let start = util::cursor(a.addr, "/i");
    let first = post(a.addr, "/i", "once", Some("key-1"));
    assert_eq!(first.status, 201, "{}", first.text());
    // The client retries, on another node, after a lost reply: same id, nothing stored twice.
    let again = post(b.addr, "/i", "once", Some("key-1"));
    assert_eq!(again.status, 201);
    assert_eq!(again.json()["id"], first.json()["id"]);
    // Another publisher reusing the key for a different message is refused, not handed the
    // first one's id while its message is dropped: another payload, or another topic.
    let other = post(b.addr, "/i", "someone else's", Some("key-1"));
    assert_eq!(other.status, 409, "{}", other.text());
    assert!(other.text().contains("Idempotency-Key"), "{}", other.text());
    let elsewhere = post(a.addr, "/j", "once", Some("key-1"));
    assert_eq!(elsewhere.status, 409, "{}", elsewhere.text());
    publish(a.addr, "/i", "next");
    let (got, _) = collect(b.addr, "/i", &start, 2);
    assert_eq!(got.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>(), ["once", "next"]);
    // A bad key is refused with a reason.
    let bad = post(a.addr, "/i", "x", Some("has space"));
    assert_eq!(bad.status, 400, "{}", bad.text());
}

#[test]
fn a_node_with_empty_rings_serves_old_cursors_from_redis() {
    let redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |_| {});
    let start = util::cursor(a.addr, "/h");
    let ids: Vec<String> = (0..20).map(|i| publish(a.addr, "/h", &format!("h{i}"))).collect();
    // A node started now has nothing in memory: the cursor is older than its rings.
    let b = TestServer::cluster(&redis, |_| {});
    // Meanwhile another client on that node is not held up by the cold read.
    let mut parked = Client::connect(b.addr);
    parked.send(b"GET /sub/other?timeout=5 HTTP/1.1\r\nHost: t\r\n\r\n");
    let (got, _) = collect(b.addr, "/h", &ids[4], 15);
    assert_eq!(got.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), ids[5..]);
    let live = publish(b.addr, "/other", "live");
    let r = parked.response();
    assert_eq!(r.json()["messages"][0]["id"], live.as_str());
    let (all, last) = collect(b.addr, "/h", &start, 20);
    assert_eq!(all.len(), 20);
    assert!(last.get("gap").is_none(), "nothing was lost: {last}");
}

#[test]
fn redis_restarted_with_aof_keeps_the_epoch_and_every_message() {
    let mut redis = Redis::start(true);
    let a = TestServer::cluster(&redis, |_| {});
    let start = util::cursor(a.addr, "/p");
    let before: Vec<String> = (0..5).map(|i| publish(a.addr, "/p", &format!("p{i}"))).collect();
    redis.restart();
    // Publishes may be refused while the node reconnects; retried with their key they are
    // stored once.
    let mut after = Vec::new();
    for i in 0..5 {
        let key = format!("after-{i}");
        let deadline = Instant::now() + WAIT;
        loop {
            let r = post(a.addr, "/p", &format!("q{i}"), Some(&key));
            if r.status == 201 {
                after.push(r.json()["id"].as_str().expect("id").to_owned());
                break;
            }
            assert_eq!(r.status, 503, "{}", r.text());
            assert!(r.header("retry-after").is_some());
            assert!(Instant::now() < deadline, "Redis never came back");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let epoch = |id: &str| id.split('-').next().expect("epoch").to_owned();
    assert_eq!(epoch(&after[0]), epoch(&before[0]), "same epoch after an AOF restart");
    let b = TestServer::cluster(&redis, |_| {});
    let (got, last) = collect(b.addr, "/p", &start, 10);
    let want: Vec<String> = before.into_iter().chain(after).collect();
    assert_eq!(got.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), want);
    assert!(last.get("gap").is_none(), "{last}");
}

#[test]
fn redis_restarted_without_data_rotates_the_epoch_and_old_cursors_get_the_gap() {
    let mut redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |_| {});
    let before: Vec<String> = (0..3).map(|i| publish(a.addr, "/r", &format!("r{i}"))).collect();
    redis.restart_empty();
    let deadline = Instant::now() + WAIT;
    let fresh = loop {
        let r = post(a.addr, "/r", "new", Some("new-1"));
        if r.status == 201 {
            break r.json()["id"].as_str().expect("id").to_owned();
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(Instant::now() < deadline, "Redis never came back");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (old_epoch, old_seq) = before[2].split_once('-').expect("id");
    let (new_epoch, new_seq) = fresh.split_once('-').expect("id");
    assert_ne!(old_epoch, new_epoch, "a new epoch");
    assert!(new_seq.parse::<u64>().expect("seq") > old_seq.parse::<u64>().expect("seq"), "no seq reused");
    // A client resuming from the old epoch is told it may have missed messages.
    let (got, last) = collect(a.addr, "/r", &before[1], 1);
    assert_eq!(last["gap"], true, "{last}");
    assert_eq!(got.last().map(|(id, _)| id.as_str()), Some(fresh.as_str()));
}

#[test]
fn an_sse_stream_open_across_an_epoch_change_gives_ids_of_the_new_epoch() {
    let mut redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |_| {});
    let start = util::cursor(a.addr, "/s");
    let mut sse = StreamClient::open(
        a.addr,
        &format!("GET /sub/s?since={start} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"),
    );
    let old = publish(a.addr, "/s", "old");
    sse.read_until_count(&format!("id: {old}\n"), 1);
    redis.restart_empty();
    let deadline = Instant::now() + WAIT;
    let fresh = loop {
        let r = post(a.addr, "/s", "new", Some("new-s"));
        if r.status == 201 {
            break r.json()["id"].as_str().expect("id").to_owned();
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(Instant::now() < deadline, "Redis never came back");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(fresh.split('-').next(), old.split('-').next(), "a new epoch");
    // The stream that was open all along names the new message by the new epoch, so a client
    // resuming from it resumes in the new epoch.
    sse.read_until_count(&format!("id: {fresh}\n"), 1);
}

#[test]
fn a_stopped_node_ends_its_redis_threads_and_their_connections() {
    let redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |_| {});
    let start = util::cursor(a.addr, "/z");
    publish(a.addr, "/z", "z");
    // A cold read, so that the cold reader has its connection too.
    let b = TestServer::cluster(&redis, |_| {});
    collect(b.addr, "/z", &start, 1);
    let clients = redis.clients();
    assert!(clients >= 5, "a tail each, a writer on a, a cold reader on b, and this one: {clients}");
    drop(a);
    drop(b);
    // The threads are joined by the time `shutdown` returns; Redis notices the closed
    // sockets on its own schedule, so this waits for its count (there is no signal to take).
    let deadline = Instant::now() + WAIT;
    while redis.clients() > 1 {
        assert!(Instant::now() < deadline, "{} Redis clients left after both nodes stopped", redis.clients() - 1);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_cold_read_does_not_serve_messages_past_max_age() {
    let redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |_| {});
    let start = util::cursor(a.addr, "/e");
    for i in 0..3 {
        publish(a.addr, "/e", &format!("e{i}"));
    }
    let b = TestServer::cluster(&redis, |c| c.history.max_age = Duration::from_secs(1));
    // Age is the thing under test: there is no signal for it but the clock.
    std::thread::sleep(Duration::from_millis(1_200));
    let fresh = publish(a.addr, "/e", "fresh");
    let (got, last) = collect(b.addr, "/e", &start, 1);
    assert_eq!(got, [(fresh, "fresh".to_owned())], "the aged-out messages are not served");
    assert_eq!(last["gap"], true, "{last}");
}

#[test]
fn a_cursor_just_inside_the_trimmed_log_recovers_and_one_outside_gets_the_gap() {
    let redis = Redis::start(false);
    let a = TestServer::cluster(&redis, |c| {
        c.history.max_messages = 10;
        c.history.total_messages = 20;
    });
    let ids: Vec<String> = (0..100).map(|i| publish(a.addr, "/t", &format!("t{i}"))).collect();
    // The first id the log still holds.
    let first = redis.command("XRANGE {halley}:log - + COUNT 1\r\n").expect("xrange");
    let seq: u64 = first.lines().find_map(|l| l.strip_suffix("-0").and_then(|s| s.parse().ok())).expect("an entry id");
    let at = ids.iter().position(|id| id.ends_with(&format!("-{seq}"))).expect("id in the log");
    assert!(at > 0, "the log was trimmed");
    let b = TestServer::cluster(&redis, |_| {});
    // Inside: the cursor is the message just before the oldest retained one.
    let (got, last) = collect(b.addr, "/t", &ids[at - 1], 100 - at);
    assert_eq!(got.first().map(|(id, _)| id.as_str()), Some(ids[at].as_str()));
    assert!(last.get("gap").is_none(), "{last}");
    // Outside: one further back missed a trimmed message.
    let r = Client::connect(b.addr).get(&format!("/sub/t?since={}&timeout=2", ids[at - 2]));
    let mut v = r.json();
    // A cold read may first answer pending (nothing, same cursor); then the gap comes.
    let deadline = Instant::now() + WAIT;
    while v.get("gap").is_none() {
        assert!(Instant::now() < deadline, "no gap reply: {v}");
        v = Client::connect(b.addr).get(&format!("/sub/t?since={}&timeout=2", ids[at - 2])).json();
    }
    assert_eq!(v["gap"], true);
}
