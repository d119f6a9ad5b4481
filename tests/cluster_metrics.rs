//! Cluster mode in `/metrics`: the Redis link's state and the log position this node has read,
//! against a real redis-server (started by the test on a free loopback port).

mod util;

use std::time::{Duration, Instant};

use util::redis::Redis;
use util::{TestServer, WAIT};

/// The value of the sample line that starts with `name ` in a scrape.
fn value(server: &TestServer, name: &str) -> u64 {
    let mut c = server.client();
    c.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    let text = r.text();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}: {text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("an integer")
}

/// Waits (bounded) until `name` reads `want`.
fn until(server: &TestServer, name: &str, want: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = value(server, name);
        if want(got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{name} stuck at {got}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_redis_link_and_the_tail_position_are_scraped() {
    let mut redis = Redis::start(false);
    let node = TestServer::cluster(&redis, |_| {});
    assert_eq!(value(&node, "halley_redis_up"), 1);

    let mut c = node.client();
    c.send(b"POST /pub/m/a HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    let r = c.response();
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let seq: u64 = id.rsplit('-').next().and_then(|s| s.parse().ok()).expect("seq");
    // The 201 comes after the tail brought the message back, so the position is there.
    assert!(value(&node, "halley_redis_tail_seq") >= seq);

    redis.stop();
    // The link is found down by the next write (or the tail's read timeout).
    let mut c = node.client();
    c.send(b"POST /pub/m/a HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    assert_ne!(c.response().status, 201);
    until(&node, "halley_redis_up", |up| up == 0);
}
