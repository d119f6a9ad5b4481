//! Issue 10, test 9: Pushlet and Bayeux sessions survive the loss of their node. Real
//! redis-server, `halley` subprocess nodes (so one can be `kill -9`ed), the Pushlet pull
//! protocol as the 2.0.4 AJAX client speaks it and Bayeux long-polling as CometD does.

mod util;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::redis::Redis;
use util::{Client, WAIT};

/// One `halley serve` process on a free loopback port; killed (SIGKILL) when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(redis: &Redis) -> Node {
        Node::start_with(redis, &[])
    }

    /// A node with more `halley serve` arguments.
    fn start_with(redis: &Redis, extra: &[&str]) -> Node {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(env!("CARGO_BIN_EXE_halley"))
            .args(["serve", "--listen", &addr.to_string(), "--workers", "2", "--redis", &redis.url()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run halley");
        // Owned at once, so a node that does not come up is still killed (Drop).
        let node = Node { child, addr };
        wait_until("the node to come up", || {
            std::net::TcpStream::connect(addr).is_ok() && Client::connect(addr).get("/ready").status == 200
        });
        node
    }

    /// SIGTERM, and waits for the graceful stop to end the process.
    fn terminate(&mut self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(sent.success(), "kill -TERM");
        let status = self.child.wait().expect("wait for halley");
        assert!(status.success(), "graceful stop: {status}");
    }

    /// `kill -9`: no shutdown, nothing written anywhere.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bulk string reply of an inline command (`GET key`), or `None` for a nil reply.
fn redis_get(redis: &Redis, key: &str) -> Option<String> {
    let reply = redis.command(&format!("GET {key}\r\n"))?;
    let (head, body) = reply.split_once("\r\n")?;
    if head == "$-1" {
        return None;
    }
    let len: usize = head.strip_prefix('$')?.parse().ok()?;
    Some(body.get(..len)?.to_owned())
}

fn redis_exists(redis: &Redis, key: &str) -> bool {
    redis.command(&format!("EXISTS {key}\r\n")).is_some_and(|r| r.starts_with(":1"))
}

/// Waits until `done` holds, checking every 20 ms (the signals here live in Redis).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The session's record in Redis, once its cursor has reached `seq`: what an adopting node
/// will go on from. (The record is written after the round is answered; see CLUSTER.md.)
fn wait_record_cursor(redis: &Redis, id: &str, seq: u64) {
    wait_until("the session record's cursor", || {
        redis_get(redis, &format!("{{halley}}:sess:{id}"))
            .and_then(|r| serde_json::from_str::<Value>(&r).ok())
            .and_then(|v| v["state"]["cursor"].as_u64())
            .is_some_and(|c| c >= seq)
    });
}

/// Waits until the node serving session `id` is taken for dead (its heartbeat lapsed).
fn wait_owner_dead(redis: &Redis, id: &str) {
    let node = redis_get(redis, &format!("{{halley}}:owner:{id}")).expect("an owner key");
    wait_until("the dead node's heartbeat to lapse", || !redis_exists(redis, &format!("{{halley}}:node:{node}")));
}

fn publish(addr: SocketAddr, topic: &str, data: &str) -> u64 {
    let r = Client::connect(addr).post(&format!("/pub{topic}"), data.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    id.rsplit('-').next().and_then(|s| s.parse().ok()).expect("seq in id")
}

// ---------------------------------------------------------------------------------------------
// Pushlet, as the 2.0.4 AJAX client: `?p_event=X&...&p_id=Y`, XML replies.

fn pushlet(addr: SocketAddr, query: &str) -> util::Response {
    Client::connect(addr).get(&format!("/pushlet.srv?{query}"))
}

/// The `p_data` of every data event in an XML reply, and every `p_event` seen.
fn pushlet_events(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut data, mut kinds) = (Vec::new(), Vec::new());
    for ev in text.split("<event ").skip(1) {
        let attr = |name: &str| {
            let at = ev.find(&format!(" {name}=\"")).or_else(|| ev.starts_with(&format!("{name}=\"")).then_some(0))?;
            let start = ev[at..].find('"')? + at + 1;
            let end = ev[start..].find('"')? + start;
            Some(ev[start..end].to_owned())
        };
        if let Some(kind) = attr("p_event") {
            if kind == "data" {
                data.push(attr("p_data").unwrap_or_default());
            }
            kinds.push(kind);
        }
    }
    (data, kinds)
}

fn pushlet_join(addr: SocketAddr, subject: &str) -> String {
    let r = pushlet(addr, &format!("p_event=join-listen&p_format=xml-strict&p_mode=pull&p_subject={subject}"));
    assert_eq!(r.status, 200, "{}", r.text());
    util::pushlet_session_id(r.text())
}

/// Refresh rounds until `want` data events came (each answered at once when data waits).
fn pushlet_collect(addr: SocketAddr, id: &str, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < want {
        let r = pushlet(addr, &format!("p_event=refresh&p_id={id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let (data, kinds) = pushlet_events(r.text());
        assert!(!kinds.iter().any(|k| k == "error" || k == "abort"), "{}", r.text());
        got.extend(data);
        assert!(Instant::now() < deadline, "only {got:?}");
    }
    got
}

// ---------------------------------------------------------------------------------------------
// Bayeux long-polling, as CometD sends it.

fn bayeux(addr: SocketAddr, batch: Value) -> Vec<Value> {
    let r = Client::connect(addr).post("/cometd", batch.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().cloned().expect("a reply array")
}

fn bayeux_handshake(addr: SocketAddr, channel: &str) -> String {
    let hs = bayeux(
        addr,
        json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]),
    );
    let id = hs[0]["clientId"].as_str().expect("clientId").to_owned();
    let sub = bayeux(addr, json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": channel}]));
    assert_eq!(sub[0]["successful"], true, "{sub:?}");
    id
}

/// One connect; its data messages, and the connect reply.
fn bayeux_connect(addr: SocketAddr, id: &str, timeout_ms: u64) -> (Vec<String>, Value) {
    let replies = bayeux(
        addr,
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
                "advice": {"timeout": timeout_ms}}]),
    );
    let mut data = Vec::new();
    let mut connect = Value::Null;
    for r in replies {
        if r["channel"] == "/meta/connect" {
            connect = r;
        } else if let Some(d) = r["data"].as_str() {
            data.push(d.to_owned());
        } else {
            data.push(r["data"].to_string());
        }
    }
    (data, connect)
}

fn bayeux_collect(addr: SocketAddr, id: &str, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < want {
        let (data, connect) = bayeux_connect(addr, id, 2000);
        assert_eq!(connect["successful"], true, "{connect}");
        got.extend(data);
        assert!(Instant::now() < deadline, "only {got:?}");
    }
    got
}

/// A Pushlet session on `/ps` and a Bayeux one on `/bx` made on `addr`, the Bayeux one made a
/// listening one by a first connect (as CometD's first connect does); returns their ids.
fn listening_sessions(addr: SocketAddr) -> (String, String) {
    let pid = pushlet_join(addr, "/ps");
    let cid = bayeux_handshake(addr, "/bx");
    let (_, first) = bayeux_connect(addr, &cid, 0);
    assert_eq!(first["successful"], true, "{first}");
    (pid, cid)
}

/// Publishes `p{i}` to `/ps` and `b{i}` to `/bx` on `addr` for each i in `range`; returns the
/// id of the last `/bx` message.
fn publish_both(addr: SocketAddr, range: std::ops::Range<usize>) -> u64 {
    let mut last = 0;
    for i in range {
        publish(addr, "/ps", &format!("p{i}"));
        last = publish(addr, "/bx", &format!("b{i}"));
    }
    last
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// Bayeux publishes from Halley's HTTP endpoint carry the raw text as a JSON string.
fn bayeux_names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    names(prefix, range)
}

#[test]
fn pushlet_and_bayeux_sessions_carry_on_on_another_node_when_theirs_is_killed() {
    let redis = Redis::start(false);
    let mut a = Node::start(&redis);
    let b = Node::start(&redis);

    let (pid, cid) = listening_sessions(a.addr);

    // Messages before the crash reach both sessions on A.
    let last = publish_both(b.addr, 0..3);
    assert_eq!(pushlet_collect(a.addr, &pid, 3), names("p", 0..3));
    assert_eq!(bayeux_collect(a.addr, &cid, 3), bayeux_names("b", 0..3));
    wait_record_cursor(&redis, &pid, last - 1);
    wait_record_cursor(&redis, &cid, last);

    a.kill();
    // Published while the sessions have no node.
    publish_both(b.addr, 3..6);
    wait_owner_dead(&redis, &pid);
    wait_owner_dead(&redis, &cid);

    // The same session ids on B: adopted with their subscriptions and cursors, so exactly
    // what was published meanwhile arrives, nothing twice.
    assert_eq!(pushlet_collect(b.addr, &pid, 3), names("p", 3..6));
    assert_eq!(bayeux_collect(b.addr, &cid, 3), bayeux_names("b", 3..6));
    // And they go on there.
    publish_both(b.addr, 6..7);
    assert_eq!(pushlet_collect(b.addr, &pid, 1), ["p6"]);
    assert_eq!(bayeux_collect(b.addr, &cid, 1), ["b6"]);
    // B owns them now.
    let owner = redis_get(&redis, &format!("{{halley}}:owner:{cid}")).expect("owner");
    assert!(redis_exists(&redis, &format!("{{halley}}:node:{owner}")), "the owner is a live node");
}

#[test]
fn a_session_whose_node_is_alive_gets_the_reconnect_answer_on_another_node() {
    let redis = Redis::start(false);
    let a = Node::start(&redis);
    let b = Node::start(&redis);
    let pid = pushlet_join(a.addr, "/ps");
    let cid = bayeux_handshake(a.addr, "/bx");

    // Bayeux: 402 with the advice to handshake again, never a silent loss.
    let (_, connect) = bayeux_connect(b.addr, &cid, 0);
    assert_eq!(connect["successful"], false, "{connect}");
    assert!(connect["error"].as_str().is_some_and(|e| e.starts_with("402")), "{connect}");
    assert_eq!(connect["advice"]["reconnect"], "handshake", "{connect}");
    // Pushlet: the unknown-session refusal that makes the client join again.
    let r = pushlet(b.addr, &format!("p_event=refresh&p_id={pid}"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("Invalid or expired id"), "{}", r.text());

    // The owner still serves both, untouched.
    publish_both(a.addr, 0..1);
    assert_eq!(pushlet_collect(a.addr, &pid, 1), ["p0"]);
    assert_eq!(bayeux_collect(a.addr, &cid, 1), ["b0"]);
    // A session nobody has: the same answers.
    let unknown = format!("000{}", "0".repeat(32));
    let (_, connect) = bayeux_connect(b.addr, &unknown, 0);
    assert_eq!(connect["advice"]["reconnect"], "handshake", "{connect}");
}

#[test]
fn sessions_of_a_node_stopped_gracefully_are_adopted_at_once_with_nothing_lost() {
    let redis = Redis::start(false);
    let mut a = Node::start(&redis);
    let b = Node::start(&redis);
    let (pid, cid) = listening_sessions(a.addr);
    publish_both(b.addr, 0..2);
    assert_eq!(pushlet_collect(a.addr, &pid, 2), names("p", 0..2));
    assert_eq!(bayeux_collect(a.addr, &cid, 2), bayeux_names("b", 0..2));
    let node = redis_get(&redis, &format!("{{halley}}:owner:{cid}")).expect("an owner key");

    a.terminate();
    // The heartbeat went with the graceful stop: no waiting out NODE_TTL.
    assert!(!redis_exists(&redis, &format!("{{halley}}:node:{node}")), "the heartbeat outlived the node");
    publish_both(b.addr, 2..4);
    // The very next request on B adopts (no reconnect answer) and nothing is lost or doubled.
    let (data, connect) = bayeux_connect(b.addr, &cid, 0);
    assert_eq!(connect["successful"], true, "{connect}");
    assert_eq!(data, bayeux_names("b", 2..4));
    let r = pushlet(b.addr, &format!("p_event=refresh&p_id={pid}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let (data, kinds) = pushlet_events(r.text());
    assert!(!kinds.iter().any(|k| k == "error" || k == "abort"), "{}", r.text());
    assert_eq!(data, names("p", 2..4));
}

/// One lookup on the session thread, parked at `at`; its answer.
fn look_up(sessions: &halley::store::RedisSessions, id: &str, at: Instant) -> halley::store::Lookup {
    let (tx, rx) = std::sync::mpsc::channel();
    let reply = Box::new(move |answer| {
        let _ = tx.send(answer);
    });
    sessions.send(halley::store::SessionOp::Lookup { id: id.into(), at, reply });
    rx.recv_timeout(WAIT).expect("a lookup answer")
}

#[test]
fn a_lookup_parked_past_its_deadline_is_answered_unavailable_without_redis() {
    use halley::store::{Lookup, RedisSessions, LOOKUP_DEADLINE};
    let redis = Redis::start(false);
    let sessions = RedisSessions::start(&redis.url()).expect("session thread");
    let id = format!("001{}", "a".repeat(32));
    assert!(redis.command(&format!("SET {{halley}}:sess:{id} record\r\n")).is_some_and(|r| r.starts_with("+OK")));

    // Parked too long: not asked, so the record is not adopted (the owner key stays unset).
    let stale = Instant::now().checked_sub(LOOKUP_DEADLINE + Duration::from_millis(500)).expect("an old instant");
    assert_eq!(look_up(&sessions, &id, stale), Lookup::Unavailable);
    assert!(!redis_exists(&redis, &format!("{{halley}}:owner:{id}")), "a stale lookup reached Redis");
    // A fresh one is.
    assert_eq!(look_up(&sessions, &id, Instant::now()), Lookup::Adopted("record".into()));
    sessions.stop(WAIT);
}

/// `SET key value` in RESP (the value may hold spaces and quotes).
fn redis_set(redis: &Redis, key: &str, value: &str) {
    let line = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n", key.len(), value.len());
    assert!(redis.command(&line).is_some_and(|r| r.starts_with("+OK")), "SET {key}");
}

#[test]
fn a_session_whose_token_expired_without_a_node_is_refused_and_deleted() {
    let redis = Redis::start(false);
    let mut a = Node::start(&redis);
    let b = Node::start(&redis);
    let expired = pushlet_join(a.addr, "/ps");
    // Its token ran out while its node was down (as a record with a token grant).
    let key = format!("{{halley}}:sess:{expired}");
    let mut record: Value = serde_json::from_str(&redis_get(&redis, &key).expect("a record")).expect("json");
    record["grant"] = json!({"kind": "token", "sub": "x", "expires_ms": 1000, "publish": [], "subscribe": ["/ps"]});
    a.kill();
    redis_set(&redis, &key, &record.to_string());
    wait_owner_dead(&redis, &expired);

    // Refused with the join-again answer, and the session is gone from Redis: the owner key
    // does not name B, which will never serve it.
    let r = pushlet(b.addr, &format!("p_event=refresh&p_id={expired}"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("Invalid or expired id"), "{}", r.text());
    wait_until("the expired session to go", || !redis_exists(&redis, &key));
    assert!(!redis_exists(&redis, &format!("{{halley}}:owner:{expired}")), "owner key left");
}

/// How many `EVAL`s Redis has run (the session scripts; the log uses `EVALSHA`).
fn evals(redis: &Redis) -> u64 {
    let info = redis.command("INFO commandstats\r\n").expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_eval:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn lookups_are_charged_to_the_clients_address() {
    let redis = Redis::start(false);
    // One session per second per address and worker, bursts of two.
    let b = Node::start_with(&redis, &["--session-create-rate", "1"]);
    let before = evals(&redis);
    for i in 0..10 {
        // Well-formed ids with one owner prefix (one worker's limiter), held by nobody.
        let unknown = format!("000{i:032x}");
        let (_, connect) = bayeux_connect(b.addr, &unknown, 0);
        assert_eq!(connect["advice"]["reconnect"], "handshake", "{connect}");
    }
    // The burst was looked up, the rest answered without a script on Redis (the rate may
    // have added one more while the loop ran).
    let looked = evals(&redis) - before;
    assert!((2..=3).contains(&looked), "{looked} lookups reached Redis");
}
