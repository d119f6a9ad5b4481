//! The store's non-blocking read contract, end to end over real sockets: a backend whose history
//! is partly outside the process answers `pending` instead of blocking a worker, and announces
//! through `Store::on_loaded` when the fetch has landed. Every kind of subscriber must then wait
//! (nothing skipped, nothing reported as lost) and be served once the hub wakes it.
//!
//! `ColdStore` is the smallest such backend: the messages are in a `MemoryStore`, but topics
//! marked cold read as `pending` until the test "loads" them, which stands in for a fetch thread
//! finishing (the Redis-backed store of the cluster work is the real one).

mod util;

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use halley::model::{Epoch, Message, Selector};
use halley::store::{HistoryLimits, Loaded, MemoryStore, ReadResult, Store, StoreStats};
use util::ws::Ws;
use util::{cursor, publish, StreamClient, TestServer, WAIT};

#[derive(Default)]
struct Cold {
    /// Topics whose history is "not in memory yet".
    topics: HashSet<String>,
    /// Pending reads answered so far.
    pending_reads: usize,
}

struct ColdStore {
    inner: MemoryStore,
    cold: Mutex<Cold>,
    changed: Condvar,
    loaded: Mutex<Option<Loaded>>,
}

impl ColdStore {
    fn new() -> Arc<ColdStore> {
        Arc::new(ColdStore {
            inner: MemoryStore::new(HistoryLimits::default()),
            cold: Mutex::new(Cold::default()),
            changed: Condvar::new(),
            loaded: Mutex::new(None),
        })
    }

    fn make_cold(&self, topic: &str) {
        self.cold.lock().expect("lock").topics.insert(topic.to_owned());
    }

    /// Waits until `n` reads in all have been answered `pending`.
    fn wait_pending_reads(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        let mut cold = self.cold.lock().expect("lock");
        while cold.pending_reads < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no pending read happened ({} of {n})", cold.pending_reads);
            cold = self.changed.wait_timeout(cold, left).expect("lock").0;
        }
    }

    /// The fetch for `topic` "lands": it reads from memory again, and the hub is told.
    fn load(&self, topic: &str) {
        self.cold.lock().expect("lock").topics.remove(topic);
        let loaded = self.loaded.lock().expect("lock");
        loaded.as_ref().expect("the hub set the notifier").loaded(vec![Selector::parse(topic).expect("topic")]);
    }
}

impl Store for ColdStore {
    fn epoch(&self) -> Epoch {
        self.inner.epoch()
    }

    fn head(&self) -> u64 {
        self.inner.head()
    }

    fn append(&self, msg: Arc<Message>, now_ms: u64) {
        self.inner.append(msg, now_ms);
    }

    fn expire(&self, now_ms: u64) {
        self.inner.expire(now_ms);
    }

    fn read(&self, selectors: &[Selector], after: u64, limit: usize, out: &mut Vec<Arc<Message>>) -> ReadResult {
        let mut cold = self.cold.lock().expect("lock");
        if selectors.iter().any(|s| cold.topics.contains(s.as_str())) {
            cold.pending_reads += 1;
            self.changed.notify_all();
            return ReadResult::pending(after);
        }
        drop(cold);
        self.inner.read(selectors, after, limit, out)
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn on_loaded(&self, loaded: Loaded) {
        *self.loaded.lock().expect("lock") = Some(loaded);
    }
}

/// A server on `store`, with three messages on `/t` published after the returned cursor, and
/// `/t` then marked cold.
fn cold_server(store: &Arc<ColdStore>) -> (TestServer, String) {
    let server = TestServer::with_store(TestServer::config(|_| {}), Arc::clone(store) as Arc<dyn Store>);
    let start = cursor(server.addr, "/t");
    for data in [b"m1", b"m2", b"m3"] {
        publish(server.addr, "/t", data);
    }
    store.make_cold("/t");
    (server, start)
}

#[test]
fn a_long_poll_waits_for_a_pending_read_and_gets_everything_once_loaded() {
    let store = ColdStore::new();
    let (server, start) = cold_server(&store);
    let mut c = server.client();
    c.send(format!("GET /sub/t?since={start} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    // The first read, then the one the hub asks for when the subscriber registers (it has seen
    // messages past the cursor the read stopped at): both pending. Only the load wakes it now.
    store.wait_pending_reads(2);
    // Nothing to answer yet, and nothing lost: the request is parked, not answered empty.
    server.wait_for("parked", 1);
    store.load("/t");
    let body = c.response().json();
    let data: Vec<_> = body["messages"].as_array().expect("messages").iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, ["m1", "m2", "m3"]);
    assert_ne!(body["gap"], true, "a pending read is not a gap");
}

#[test]
fn a_poll_during_a_pending_read_keeps_its_cursor() {
    let store = ColdStore::new();
    let (server, start) = cold_server(&store);
    let mut c = server.client();
    let body = c.get(&format!("/sub/t?since={start}&timeout=0")).json();
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(0));
    assert_eq!(body["next"], start.as_str(), "the cursor did not move past history it did not read");
    assert_ne!(body["gap"], true);
    store.load("/t");
    let body = c.get(&format!("/sub/t?since={start}&timeout=0")).json();
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(3));
}

#[test]
fn a_stream_waits_for_a_pending_read_and_resumes_from_its_cursor() {
    let store = ColdStore::new();
    let (server, start) = cold_server(&store);
    let request = format!("GET /sub/t?since={start}&transport=stream HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut stream = StreamClient::open(server.addr, &request);
    store.wait_pending_reads(1);
    server.wait_for("streaming", 1);
    store.load("/t");
    let mut data = Vec::new();
    while data.len() < 3 {
        for line in stream.next_lines() {
            let value: serde_json::Value = serde_json::from_str(&line).expect("ndjson");
            assert_ne!(value["type"], "gap", "a pending read is not a gap");
            if let Some(d) = value["data"].as_str() {
                data.push(d.to_owned());
            }
        }
    }
    assert_eq!(data, ["m1", "m2", "m3"]);
}

#[test]
fn a_websocket_waits_for_a_pending_read_and_a_backfill_that_would_wait_is_refused() {
    let store = ColdStore::new();
    let server = TestServer::with_store(TestServer::config(|_| {}), Arc::clone(&store) as Arc<dyn Store>);
    let start = cursor(server.addr, "/t");
    publish(server.addr, "/u", b"u1"); // older than /t's messages: only a backfill can send it
    for data in [b"m1", b"m2", b"m3"] {
        publish(server.addr, "/t", data);
    }
    store.make_cold("/t");
    store.make_cold("/u");
    let mut ws = Ws::connect(server.addr, &format!("/sub/t?since={start}"));
    assert_eq!(ws.json()["type"], "ack");
    store.wait_pending_reads(1);
    store.load("/t");
    for want in ["m1", "m2", "m3"] {
        assert_eq!(ws.json()["data"], want);
    }
    // /u joins from the start: its messages up to the connection's cursor are a backfill, and
    // while that history is still being loaded the subscribe is refused (the client retries),
    // never acknowledged with part of it.
    ws.send_json(serde_json::json!({"op": "subscribe", "topics": ["/u"], "since": start, "id": 7}));
    let refused = ws.json();
    assert_eq!((refused["type"].as_str(), refused["id"].as_i64()), (Some("error"), Some(7)), "{refused}");
    assert!(refused["reason"].as_str().is_some_and(|m| m.contains("retry")), "{refused}");
    store.load("/u");
    ws.send_json(serde_json::json!({"op": "subscribe", "topics": ["/u"], "since": start, "id": 8}));
    assert_eq!(ws.json()["type"], "ack");
    assert_eq!(ws.json()["data"], "u1", "the backfill, once the history is there");
}

#[test]
fn a_socket_whose_feed_waits_keeps_its_cursor_when_it_subscribes_to_more() {
    let store = ColdStore::new();
    let server = TestServer::with_store(TestServer::config(|_| {}), Arc::clone(&store) as Arc<dyn Store>);
    // Subscribed at head 0, so the connection's cursor is 0.
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_json(serde_json::json!({"op": "subscribe", "topics": ["/t"], "id": 1}));
    assert_eq!(ws.json()["type"], "ack");
    store.make_cold("/t");
    for data in [b"m1", b"m2", b"m3"] {
        publish(server.addr, "/t", data);
    }
    // The feed the publishes woke could not read /t: the cursor is still 0.
    store.wait_pending_reads(1);
    // Another topic from now (head 3) must not move the shared cursor past m1..m3.
    ws.send_json(serde_json::json!({"op": "subscribe", "topics": ["/u"], "id": 2}));
    assert_eq!(ws.json()["type"], "ack");
    store.load("/t");
    for want in ["m1", "m2", "m3"] {
        assert_eq!(ws.json()["data"], want);
    }
}
