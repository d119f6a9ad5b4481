//! The output bound over loopback: a streaming subscriber that stops reading is cut at the
//! bound, and a subscriber that reads on is unaffected. In a file of its own, so no other test
//! shares the process whose memory it measures.

mod util;

use std::time::Duration;

use util::{Client, StreamClient, TestServer, WAIT};

#[test]
fn a_subscriber_that_stops_reading_is_cut_at_the_bound_and_others_are_unaffected() {
    const TOTAL: usize = 10_000;
    let server = TestServer::with(|c| {
        c.network.max_pending_output = 64 * 1024;
        // A subscriber is cut after a whole heartbeat interval over the bound; long enough that a
        // busy test machine never makes the reading subscriber look stuck.
        c.streams.heartbeat_interval = Duration::from_secs(2);
        c.history.max_messages = 1000;
        c.history.max_bytes = 8 * 1024 * 1024;
    });
    // One subscriber never reads; another reads everything, continuously.
    let stuck = StreamClient::open(server.addr, "GET /sub/flood?transport=stream HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut healthy = StreamClient::open(server.addr, "GET /sub/flood?transport=stream HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("streaming", 2);
    // The reader checks each line as it arrives and keeps nothing, so the test process's RSS
    // is the server's. It reports its progress so the publisher never runs more than half the
    // history ahead of it, however slow the machine: then a gap would be the server's fault.
    let (progress, seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut next_n = 0;
        while next_n < TOTAL {
            for line in healthy.next_lines() {
                let msg: serde_json::Value = serde_json::from_str(&line).expect("json line");
                if msg["type"] == "heartbeat" {
                    continue;
                }
                assert!(msg.get("type").is_none(), "no gap or overflow for the reader: {line}");
                assert_eq!(msg["data"]["n"], next_n, "in order, none lost");
                next_n += 1;
            }
            let _ = progress.send(next_n);
        }
        healthy
    });
    let rss_before = rss_kib();
    let pad = "x".repeat(4096);
    let mut publisher = Client::connect(server.addr);
    let mut read_so_far = 0;
    for n in 0..TOTAL {
        while n >= read_so_far + 200 {
            read_so_far = seen.recv_timeout(WAIT).expect("the reader keeps reading");
        }
        let body = format!("{{\"n\":{n},\"pad\":\"{pad}\"}}");
        publisher.send_post("/pub/flood", body.as_bytes(), "Content-Type: application/json\r\n");
        assert_eq!(publisher.response().status, 201);
    }
    let healthy = reader.join().expect("healthy reader saw every message");
    server.wait_for("overflows", 1);
    assert_eq!(server.worker_total("streaming"), 1, "the stuck one is gone, the healthy one stays");
    // 10,000 x 4 KiB = 40 MiB would have piled up for the stuck subscriber without the bound;
    // history holds 1000 x 4 KiB.
    let growth = rss_kib().saturating_sub(rss_before);
    assert!(growth < 20 * 1024, "RSS grew by {growth} KiB");
    drop((stuck, healthy));
}

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("number")
}
