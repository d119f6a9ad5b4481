//! Slow consumers over loopback: a subscriber that stops reading until it is cut at the output
//! bound, then reads, finds everything it was sent, then the `overflow` notice with the cursor
//! to resume from (and on a WebSocket a 1008 close with a reason), and resuming from that
//! cursor misses nothing. The notice waits behind the unread output instead of being dropped
//! with it, and a WebSocket peer that is behind is cut for overflow, not as dead.

mod util;

use std::time::{Duration, Instant};

use serde_json::Value;
use util::ws::{Frame, Ws};
use util::{Client, StreamClient, TestServer, WAIT};

/// Each message is this big, so the kernel's socket buffers fill after a few dozen.
const PAD: usize = 64 * 1024;

fn server() -> TestServer {
    TestServer::with(|c| {
        c.network.max_pending_output = 64 * 1024;
        // The grace over the bound and the heartbeat. A WebSocket peer that stops reading misses
        // its second ping after two of these: by then the publisher must have filled the kernel
        // buffers and started the server's queue (a few dozen messages), or it is closed as dead.
        c.streams.heartbeat_interval = Duration::from_secs(1);
        c.history.max_messages = 10_000;
        c.history.max_bytes = 256 * 1024 * 1024;
        c.history.total_bytes = 256 * 1024 * 1024;
    })
}

/// Publishes numbered messages to `topic` until the server has cut its one subscriber (the
/// `gauge` counting it drops to 0, for overflow or otherwise); returns how many were published.
fn publish_until_cut(server: &TestServer, topic: &str, gauge: &str) -> u64 {
    let pad = "x".repeat(PAD);
    let mut publisher = Client::connect(server.addr);
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    while server.worker_total(gauge) > 0 {
        assert!(Instant::now() < deadline, "no overflow after {n} messages");
        let body = format!("{{\"n\":{n},\"pad\":\"{pad}\"}}");
        publisher.send_post(&format!("/pub{topic}"), body.as_bytes(), "Content-Type: application/json\r\n");
        assert_eq!(publisher.response().status, 201);
        n += 1;
    }
    n
}

/// The first message after `cursor` on `topic`, by its `n`.
fn first_after(server: &TestServer, topic: &str, cursor: &str) -> u64 {
    let reply = server.client().get(&format!("/sub{topic}?since={cursor}&timeout=0")).json();
    reply["messages"][0]["data"]["n"].as_u64().expect("a message after the cursor")
}

#[test]
fn an_sse_subscriber_cut_for_overflow_reads_its_messages_then_the_notice_then_resumes() {
    let server = server();
    let mut stuck = StreamClient::open(server.addr, "GET /sub/slow?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("streaming", 1);
    let published = publish_until_cut(&server, "/slow", "streaming");
    assert_eq!(server.worker_total("overflows"), 1);

    // Now it reads: every message it was sent, in order, then the notice, then the end.
    stuck.read_to_end();
    let text = stuck.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| e.contains("data:")).collect();
    let (last, messages) = events.split_last().expect("events");
    let shown: String = last.chars().take(120).collect();
    assert!(last.contains("event: overflow"), "the last event is the notice, not: {shown:?}");
    let notice: Value = serde_json::from_str(data_of(last)).expect("notice JSON");
    assert_eq!(notice["type"], "overflow");
    let next = notice["next"].as_str().expect("a resume cursor");
    assert!(last.contains(&format!("id: {next}")), "EventSource resumes from the notice's id: {last:?}");
    for (i, event) in messages.iter().enumerate() {
        let msg: Value = serde_json::from_str(data_of(event)).expect("message JSON");
        assert_eq!(msg["n"], i as u64, "in order, none lost");
    }
    let received = messages.len() as u64;
    assert!(received < published, "it was cut before the end ({received} of {published})");
    assert_eq!(first_after(&server, "/slow", next), received, "the cursor resumes right after the last one read");
}

#[test]
fn a_websocket_subscriber_cut_for_overflow_gets_the_notice_and_a_1008_close() {
    let server = server();
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_json(serde_json::json!({"op": "subscribe", "topics": ["/slow"]}));
    assert_eq!(ws.json()["op"], "subscribe");
    server.wait_for("duplex", 1);
    // It stops reading: neither messages nor pings are taken, so no pong goes back either.
    let published = publish_until_cut(&server, "/slow", "duplex");

    let mut received = 0;
    let notice = loop {
        match ws.frame() {
            Some(Frame::Text(text)) => {
                let v: Value = serde_json::from_str(&text).expect("JSON");
                if v["type"] == "overflow" {
                    break v;
                }
                assert!(v.get("type").is_none(), "only messages before the notice: {text}");
                assert_eq!(v["data"]["n"], received, "in order, none lost");
                received += 1;
            }
            Some(Frame::Ping(_)) => {}
            other => panic!("expected messages then the overflow notice, got {other:.120?} after {received}"),
        }
    };
    let close = loop {
        match ws.frame() {
            Some(Frame::Close(code, reason)) => break (code, reason),
            Some(Frame::Ping(_)) => {}
            other => panic!("expected a close frame after the notice, got {other:?}"),
        }
    };
    assert_eq!(close.0, 1008, "closed for overflow, not as a dead peer: {close:?}");
    assert!(close.1.contains("too slow"), "{close:?}");
    assert!(received < published);
    let next = notice["next"].as_str().expect("a resume cursor");
    assert_eq!(first_after(&server, "/slow", next), received);
}

fn data_of(event: &str) -> &str {
    event.lines().find_map(|l| l.strip_prefix("data: ")).expect("a data line")
}

#[test]
fn a_connection_closing_after_an_overflow_is_closed_by_its_deadline_even_while_the_client_trickles() {
    use std::io::{Read, Write};
    // The queue behind the notice is large, so a client taking a little at a time would need
    // far longer than the deadline to take it all.
    let server = TestServer::with(|c| {
        c.network.max_pending_output = 32 * 1024 * 1024;
        c.streams.heartbeat_interval = Duration::from_secs(1);
        c.timeouts.close_write = Duration::from_secs(3);
        c.http.max_body = 2 * 1024 * 1024;
        c.history.max_messages = 10_000;
        c.history.max_bytes = 256 * 1024 * 1024;
        c.history.total_bytes = 256 * 1024 * 1024;
    });
    let mut sock = std::net::TcpStream::connect(server.addr).expect("connect");
    sock.write_all(b"GET /sub/trickle?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n").expect("request");
    server.wait_for("streaming", 1);
    // Messages of 1 MiB fill the queue in a few dozen publishes.
    let pad = "x".repeat(1024 * 1024);
    let mut publisher = Client::connect(server.addr);
    let deadline = Instant::now() + 3 * WAIT;
    for n in 0.. {
        if server.worker_total("streaming") == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no overflow after {n} messages");
        let body = format!("{{\"n\":{n},\"pad\":\"{pad}\"}}");
        publisher.send_post("/pub/trickle", body.as_bytes(), "Content-Type: application/json\r\n");
        assert_eq!(publisher.response().status, 201);
    }
    drop(publisher);
    let cut = Instant::now();
    // The client goes on taking a little at a time (about 1 MiB/s: the 32 MiB queue alone
    // would take it 30 s), enough for the server to see it take bytes in every 3 s period.
    let trickle = std::thread::spawn(move || {
        let mut chunk = vec![0u8; 64 * 1024];
        sock.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        while let Ok(n @ 1..) = sock.read(&mut chunk) {
            let _ = n;
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // The notice waits `NOTICE_WAIT` (5 s) for the client; then one close-write period more
    // (3 s) at most while it keeps taking bytes, whatever it still has to take. (What the
    // kernel already holds still reaches the client after the close.)
    while server.worker_total("connections") > 0 {
        assert!(cut.elapsed() < Duration::from_secs(14), "still open after 14 s while the client trickles");
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed_after = cut.elapsed();
    assert!(closed_after >= Duration::from_secs(5), "closed before the notice could be read: {closed_after:?}");
    drop(trickle);
}

#[test]
fn a_dead_websocket_peer_with_output_queued_under_the_bound_is_dropped_as_dead_not_as_an_overflow() {
    let server = TestServer::with(|c| {
        c.network.max_pending_output = 256 * 1024 * 1024;
        c.streams.heartbeat_interval = Duration::from_secs(1);
        c.history.max_messages = 10_000;
        c.history.max_bytes = 256 * 1024 * 1024;
        c.history.total_bytes = 256 * 1024 * 1024;
    });
    // 24 MiB of history: more than loopback's socket buffers hold, far less than the bound.
    let pad = "x".repeat(PAD);
    let mut publisher = Client::connect(server.addr);
    for n in 0..384 {
        publisher.send_post(
            "/pub/gone",
            format!("{{\"n\":{n},\"pad\":\"{pad}\"}}").as_bytes(),
            "Content-Type: application/json\r\n",
        );
        assert_eq!(publisher.response().status, 201);
    }
    // The peer subscribes from the start of history and then vanishes: it takes nothing more
    // and answers no ping, while part of its backlog waits in the server's queue.
    let _gone = Ws::connect(server.addr, "/sub/gone?since=all");
    server.wait_for("duplex", 1);
    server.wait_for("duplex", 0);
    assert_eq!(server.worker_total("overflows"), 0, "a dead peer is not reported as too slow");
}
