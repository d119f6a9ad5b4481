//! The native long-poll API end to end: park and wake, timeouts, cursors, history, patterns,
//! many re-polling clients, and shutdown answering parked clients.

mod util;

use std::thread;
use std::time::{Duration, Instant};

use util::{cursor, publish, Client, TestServer, WAIT};

#[test]
fn parked_long_poll_wakes_on_publish() {
    let server = TestServer::start();
    let mut sub = server.client();
    sub.send(b"GET /sub/news HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("parked", 1);
    let ack = publish(server.addr, "/news", b"hello");
    assert_eq!(ack["topic"], "/news");
    assert_eq!(ack["delivered"], 1, "the parked subscriber got it: {ack}");
    let r = sub.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    let msgs = body["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["data"], "hello");
    assert_eq!(msgs[0]["id"], ack["id"]);
    assert_eq!(body["next"], ack["id"], "the cursor is the last delivered id");
    server.wait_for("parked", 0);
}

#[test]
fn publish_with_nobody_listening_is_kept_in_history() {
    let server = TestServer::start();
    let ack = publish(server.addr, "/lonely", b"first");
    assert_eq!(ack["delivered"], 0);
    let mut c = server.client();
    let body = c.get("/sub/lonely?since=all&timeout=0").json();
    assert_eq!(body["messages"][0]["data"], "first");
    assert_eq!(body["messages"][0]["id"], ack["id"]);
}

#[test]
fn since_answers_at_once_and_next_resumes_without_loss_or_repeat() {
    let server = TestServer::start();
    let start = cursor(server.addr, "/r");
    for i in 0..5 {
        publish(server.addr, "/r", format!("m{i}").as_bytes());
    }
    let mut c = server.client();
    let body = c.get(&format!("/sub/r?since={start}")).json();
    let data: Vec<&str> =
        body["messages"].as_array().expect("arr").iter().map(|m| m["data"].as_str().expect("s")).collect();
    assert_eq!(data, ["m0", "m1", "m2", "m3", "m4"]);
    let next = body["next"].as_str().expect("next").to_owned();
    publish(server.addr, "/r", b"m5");
    let body = c.get(&format!("/sub/r?since={next}")).json();
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["messages"][0]["data"], "m5");
    // Last-Event-ID works like since=.
    c.send(format!("GET /sub/r?timeout=0 HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {next}\r\n\r\n").as_bytes());
    assert_eq!(c.response().json()["messages"][0]["data"], "m5");
}

#[test]
fn timeout_answers_empty_with_a_cursor() {
    let server = TestServer::start();
    let mut c = server.client();
    let started = Instant::now();
    let body = c.get("/sub/quiet?timeout=0.3").json();
    assert!(started.elapsed() >= Duration::from_millis(250), "held until the timeout");
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(0));
    let next = body["next"].as_str().expect("cursor").to_owned();
    // The cursor is usable: a message published after it arrives.
    publish(server.addr, "/quiet", b"late");
    let body = c.get(&format!("/sub/quiet?since={next}")).json();
    assert_eq!(body["messages"][0]["data"], "late");
}

#[test]
fn payloads_keep_their_kind() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send_post("/pub/kinds", br#"{"price":1.5,"sym":"AEX"}"#, "Content-Type: application/json\r\n");
    assert_eq!(c.response().status, 201);
    c.send_post("/pub/kinds?event=tick", "line one\nline two, ünïcødé".as_bytes(), "Content-Type: text/plain\r\n");
    assert_eq!(c.response().status, 201);
    c.send_post("/pub/kinds", &[0, 159, 146, 150, 255], "Content-Type: application/octet-stream\r\n");
    assert_eq!(c.response().status, 201);
    let body = c.get("/sub/kinds?since=all&timeout=0").json();
    let msgs = body["messages"].as_array().expect("arr");
    assert_eq!(msgs[0]["data"]["sym"], "AEX", "JSON embedded as JSON");
    assert_eq!(msgs[1]["data"], "line one\nline two, ünïcødé");
    assert_eq!(msgs[1]["event"], "tick");
    assert_eq!(msgs[2]["encoding"], "base64");
    assert_eq!(msgs[2]["data"], "AJ+Slv8=");
}

#[test]
fn several_topics_and_patterns_in_one_subscription() {
    let server = TestServer::start();
    let start = cursor(server.addr, "/a");
    publish(server.addr, "/a", b"1");
    publish(server.addr, "/chat/room1", b"2");
    publish(server.addr, "/chat/room1/thread", b"3");
    publish(server.addr, "/b", b"4");
    publish(server.addr, "/deep/x/y/z", b"5");
    let mut c = server.client();
    let got = |c: &mut Client, topics: &str| -> Vec<String> {
        let body = c.get(&format!("/sub{topics}?since={start}&timeout=0")).json();
        body["messages"].as_array().expect("arr").iter().map(|m| m["data"].as_str().expect("s").to_owned()).collect()
    };
    assert_eq!(got(&mut c, "/a,chat/*"), ["1", "2"]);
    assert_eq!(got(&mut c, "/chat/**"), ["2", "3"]);
    assert_eq!(got(&mut c, "/chat/*,chat/**,a"), ["1", "2", "3"], "one copy even when several selectors match");
    assert_eq!(got(&mut c, "/deep/**"), ["5"]);
    assert_eq!(got(&mut c, "/*"), ["1", "4"]);
}

#[test]
fn pattern_subscription_wakes_for_a_new_topic() {
    let server = TestServer::start();
    let mut sub = server.client();
    sub.send(b"GET /sub/alerts/** HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("parked", 1);
    publish(server.addr, "/alerts/disk/full", b"sda1");
    let body = sub.response().json();
    assert_eq!(body["messages"][0]["topic"], "/alerts/disk/full");
}

#[test]
fn bad_subscriptions_get_400_with_a_reason() {
    let server = TestServer::start();
    let mut c = server.client();
    for path in ["/sub/", "/sub/a//b", "/sub/a?since=garbage", "/sub/a?timeout=9999", "/sub/a/**/b", "/sub/a%2Fb"] {
        let r = c.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(!r.text().trim().is_empty());
    }
    let r = c.post("/pub/a/*", b"x");
    assert_eq!(r.status, 400, "no publishing to patterns");
}

#[test]
fn fallen_out_of_history_is_reported_as_a_gap() {
    let server = TestServer::with(|c| c.history.max_messages = 3);
    let start = cursor(server.addr, "/g");
    for i in 0..6 {
        publish(server.addr, "/g", format!("{i}").as_bytes());
    }
    let mut c = server.client();
    let body = c.get(&format!("/sub/g?since={start}&timeout=0")).json();
    assert_eq!(body["gap"], true, "{body}");
    let data: Vec<&str> =
        body["messages"].as_array().expect("arr").iter().map(|m| m["data"].as_str().expect("s")).collect();
    assert_eq!(data, ["3", "4", "5"]);
    assert_eq!(body["oldest"], body["messages"][0]["id"]);
    // Caught up: no gap any more.
    let next = body["next"].as_str().expect("next");
    let body = c.get(&format!("/sub/g?since={next}&timeout=0")).json();
    assert_eq!(body.get("gap"), None);
}

#[test]
fn a_cursor_from_another_epoch_gets_everything_and_a_gap() {
    let server = TestServer::start();
    publish(server.addr, "/e", b"after-restart");
    let mut c = server.client();
    let body = c.get("/sub/e?since=zzzzzzz-5&timeout=0").json();
    assert_eq!(body["gap"], true);
    assert_eq!(body["messages"][0]["data"], "after-restart");
}

#[test]
fn fifty_repolling_clients_see_a_thousand_messages_once_and_in_order() {
    const CLIENTS: usize = 50;
    const MESSAGES: usize = 1000;
    let server = TestServer::with(|c| c.history.max_messages = MESSAGES);
    let addr = server.addr;
    let start = cursor(addr, "/load");
    let subscribers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let start = start.clone();
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut since = start;
                let mut seen = Vec::with_capacity(MESSAGES);
                let deadline = Instant::now() + WAIT * 3;
                while seen.len() < MESSAGES {
                    assert!(Instant::now() < deadline, "only {} messages arrived", seen.len());
                    let body = c.get(&format!("/sub/load?since={since}&timeout=5")).json();
                    assert_eq!(body.get("gap"), None, "history holds everything");
                    for m in body["messages"].as_array().expect("arr") {
                        seen.push(m["data"]["n"].as_u64().expect("n"));
                    }
                    since = body["next"].as_str().expect("next").to_owned();
                }
                seen
            })
        })
        .collect();
    let mut publisher = Client::connect(addr);
    for n in 0..MESSAGES {
        publisher.send_post("/pub/load", format!("{{\"n\":{n}}}").as_bytes(), "Content-Type: application/json\r\n");
        assert_eq!(publisher.response().status, 201);
    }
    let want: Vec<u64> = (0..MESSAGES as u64).collect();
    for s in subscribers {
        assert_eq!(s.join().expect("subscriber thread"), want);
    }
}

#[test]
fn subscribers_on_both_workers_all_receive() {
    let server = TestServer::start(); // 2 workers, SO_REUSEPORT spreads connections
    let mut subs: Vec<Client> = Vec::new();
    for _ in 0..40 {
        let mut c = server.client();
        c.send(b"GET /sub/spread HTTP/1.1\r\nHost: t\r\n\r\n");
        subs.push(c);
    }
    server.wait_for("parked", 40);
    let stats = server.stats();
    let per_worker: Vec<u64> =
        stats["workers"].as_array().expect("arr").iter().map(|w| w["parked"].as_u64().unwrap_or(0)).collect();
    assert!(per_worker.iter().all(|&n| n > 0), "both workers hold subscribers: {per_worker:?}");
    let ack = publish(server.addr, "/spread", b"everyone");
    assert_eq!(ack["delivered"], 40);
    for mut c in subs {
        assert_eq!(c.response().json()["messages"][0]["data"], "everyone");
    }
}

#[test]
fn shutdown_answers_parked_clients_with_their_cursor() {
    let mut server = TestServer::start();
    let start = cursor(server.addr, "/bye");
    let mut subs: Vec<Client> = (0..10)
        .map(|_| {
            let mut c = server.client();
            c.send(format!("GET /sub/bye?since={start} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            c
        })
        .collect();
    server.wait_for("parked", 10);
    let mut idle = server.client();
    assert_eq!(idle.get("/health").status, 200);
    server.shutdown();
    for c in &mut subs {
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        let body = r.json();
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(0));
        assert_eq!(body["next"], start.as_str(), "resume exactly where it was");
        assert!(c.is_closed());
    }
    assert!(idle.is_closed(), "idle keep-alive connections are closed");
}

#[test]
fn accepting_pauses_at_the_connection_limit_and_resumes() {
    let server = TestServer::with(|c| {
        c.network.max_connections = 4;
        c.workers = 1;
    });
    let mut held: Vec<Client> = (0..4).map(|_| server.client()).collect();
    for c in &mut held {
        assert_eq!(c.get("/health").status, 200);
    }
    // The fifth connection completes in the kernel's backlog but is not served...
    let mut fifth = server.client();
    fifth.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    fifth.stream.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let mut probe = [0u8; 1];
    let early = std::io::Read::read(&mut fifth.stream, &mut probe);
    assert!(early.is_err(), "served past the limit: {early:?}");
    // ...until a connection frees up.
    drop(held.pop());
    fifth.stream.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(fifth.response().status, 200);
}

#[test]
fn a_cursor_beyond_the_head_is_clamped_and_reported() {
    let server = TestServer::start();
    let head = cursor(server.addr, "/future");
    let epoch = head.split('-').next().expect("epoch");
    let mut sub = server.client();
    sub.send(format!("GET /sub/future?since={epoch}-1000000 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let body = sub.response().json();
    assert_eq!(body["gap"], true, "a cursor this server never issued: {body}");
    let next = body["next"].as_str().expect("next").to_owned();
    publish(server.addr, "/future", b"now");
    let body = sub.get(&format!("/sub/future?since={next}")).json();
    assert_eq!(body["messages"][0]["data"], "now", "the clamped cursor works");
}

#[test]
fn one_broadcast_reaches_differently_shaped_subscribers_each_in_its_own_form() {
    let server = TestServer::with(|c| c.workers = 1);
    let start = cursor(server.addr, "/mix");
    let requests = [
        format!("GET /sub/mix?since={start} HTTP/1.1\r\nHost: t\r\n\r\n"),
        format!("GET /sub/mix?since={start} HTTP/1.1\r\nHost: t\r\n\r\n"),
        format!("GET /sub/mix,other?since={start} HTTP/1.1\r\nHost: t\r\n\r\n"),
        format!("GET /sub/mix?since={start}&transport=jsonp&callback=cb HTTP/1.1\r\nHost: t\r\n\r\n"),
        format!("GET /sub/mix?since={start} HTTP/1.0\r\n\r\n"),
        format!("GET /sub/mix?since={start} HTTP/1.1\r\nHost: t\r\nOrigin: https://o.example\r\n\r\n"),
    ];
    let mut subs: Vec<Client> = requests
        .iter()
        .map(|r| {
            let mut c = server.client();
            c.send(r.as_bytes());
            c
        })
        .collect();
    server.wait_for("parked", requests.len() as u64);
    publish(server.addr, "/mix", b"to all");
    let replies: Vec<util::Response> = subs.iter_mut().map(Client::response).collect();
    assert_eq!(replies[0].json()["messages"][0]["data"], "to all");
    assert_eq!(replies[0].body, replies[1].body, "identical subscriptions, identical replies");
    assert_eq!(replies[2].json()["messages"][0]["data"], "to all");
    assert!(replies[3].text().starts_with("/**/cb("), "JSONP stays JSONP");
    assert_eq!(replies[4].header("connection"), Some("close"), "HTTP/1.0 keeps its framing");
    assert_eq!(replies[5].header("access-control-allow-origin"), Some("*"), "CORS reply for the Origin one");
    assert_eq!(replies[0].header("access-control-allow-origin"), None);
}

#[test]
fn shutdown_does_not_wait_for_a_keep_alive_connection_that_was_still_being_written() {
    let mut server = TestServer::with(|c| {
        c.timeouts.shutdown = Duration::from_secs(8);
        c.longpoll.max_batch = 1000;
    });
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..32 {
        publish(server.addr, "/big", &chunk);
    }
    // A 2 MiB reply the client does not read yet, so it is still queued at shutdown.
    let mut reader = server.client();
    reader.send(b"GET /sub/big?since=all&timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("requests", 33);
    let started = Instant::now();
    let stopper = thread::spawn(move || {
        server.shutdown();
        started.elapsed()
    });
    let reply = reader.response();
    assert_eq!(reply.status, 200);
    assert!(reader.is_closed(), "closed once the reply is out");
    let took = stopper.join().expect("shutdown thread");
    assert!(took < Duration::from_secs(6), "shutdown waited {took:?}, the full deadline");
}
