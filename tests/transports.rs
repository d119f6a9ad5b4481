//! Every HTTP transport of the native API over loopback: subscribe, publish several kinds of
//! payload, read them back exactly; heartbeats; clean recycle and resume without loss or
//! duplicates; hostile input. (Backpressure, which measures the process's memory, is in
//! `backpressure.rs`, alone in its process.)

mod util;

use std::time::Duration;

use util::{cursor, publish, StreamClient, TestServer};

const MULTILINE: &str = "first line\nsecond line\r\nthird";
const UNICODE: &str = "naïve café – 東京 🚀";

/// Publishes the standard set: multi-line text, unicode text (as an event), JSON, binary.
fn publish_set(server: &TestServer, topic: &str) -> Vec<String> {
    let mut c = server.client();
    let mut ids = Vec::new();
    let mut post = |body: &[u8], extra: &str| {
        c.send_post(&format!("/pub{topic}"), body, extra);
        let r = c.response();
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().expect("id").to_owned());
    };
    post(MULTILINE.as_bytes(), "Content-Type: text/plain\r\n");
    post(UNICODE.as_bytes(), "Content-Type: text/plain; charset=utf-8\r\nX-Event: greeting\r\n");
    post(br#"{"price":101.5}"#, "Content-Type: application/json\r\n");
    post(&[0, 1, 2, 255], "Content-Type: application/octet-stream\r\n");
    ids
}

/// Parses SSE events out of a body: (id, event, data) per dispatched event.
fn sse_events(body: &str) -> Vec<(Option<String>, Option<String>, String)> {
    let mut out = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut id, mut event, mut data) = (None, None, Vec::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push(v.to_owned());
            }
        }
        if !data.is_empty() {
            out.push((id, event, data.join("\n")));
        }
    }
    out
}

#[test]
fn sse_carries_every_payload_and_resumes_from_last_event_id() {
    let server = TestServer::with(|c| c.streams.heartbeat_interval = Duration::from_millis(200));
    let mut sse =
        StreamClient::open(server.addr, "GET /sub/sse HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    assert_eq!(sse.head.status, 200);
    assert_eq!(sse.head.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.head.header("cache-control"), Some("no-cache, no-store"));
    assert_eq!(sse.head.header("x-accel-buffering"), Some("no"));
    sse.read_until(|b| String::from_utf8_lossy(b).contains("retry: "));
    server.wait_for("streaming", 1);
    let ids = publish_set(&server, "/sse");
    sse.read_until_count("\ndata: ", 6);
    let events = sse_events(&sse.text());
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0], (Some(ids[0].clone()), None, "first line\nsecond line\nthird".to_owned()));
    assert_eq!(events[1], (Some(ids[1].clone()), Some("greeting".to_owned()), UNICODE.to_owned()));
    assert_eq!(events[2].2, r#"{"price":101.5}"#);
    assert_eq!(events[3].2, "AAEC/w==", "binary as base64");
    // A heartbeat comment arrives while idle.
    sse.read_until(|b| String::from_utf8_lossy(b).contains(": hb\n\n"));
    drop(sse); // the client goes away mid-stream

    // Reconnect with the second id: exactly the third and fourth, no duplicate, no loss.
    let request =
        format!("GET /sub/sse HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: {}\r\n\r\n", ids[1]);
    let mut again = StreamClient::open(server.addr, &request);
    again.read_until_count("\ndata: ", 2);
    let events = sse_events(&again.text());
    let got: Vec<_> = events.iter().filter_map(|e| e.0.clone()).collect();
    assert_eq!(got, ids[2..].to_vec());
}

#[test]
fn a_stream_resumed_from_another_epoch_is_told_of_the_gap_once() {
    let server = TestServer::start();
    // An id from an epoch this server never had: what the client missed is unknown.
    let request = "GET /sub/reset HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: zzzzzzz-5\r\n\r\n";
    let mut sse = StreamClient::open(server.addr, request);
    server.wait_for("streaming", 1);
    let id = publish(server.addr, "/reset", b"after")["id"].as_str().expect("id").to_owned();
    sse.read_until(|b| String::from_utf8_lossy(b).contains(&format!("id: {id}\n")));
    let gaps = sse_events(&sse.text()).iter().filter(|e| e.1.as_deref() == Some("gap")).count();
    assert_eq!(gaps, 1, "{}", sse.text());
}

#[test]
fn sse_stream_start_sets_the_last_event_id_to_its_cursor() {
    let server = TestServer::start();
    let start = cursor(server.addr, "/sse2");
    let mut sse = StreamClient::open(server.addr, "GET /sub/sse2?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n");
    sse.read_until(|b| String::from_utf8_lossy(b).contains("\n\n"));
    assert!(sse.text().contains(&format!("id: {start}\n")), "{}", sse.text());
}

#[test]
fn ndjson_stream_recycles_with_a_cursor_and_resumes_without_loss() {
    let server = TestServer::with(|c| c.streams.max_age = Duration::from_millis(400));
    let mut stream =
        StreamClient::open(server.addr, "GET /sub/nd?transport=stream&since=all HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(stream.head.header("content-type"), Some("application/x-ndjson"));
    server.wait_for("streaming", 1);
    let ids = publish_set(&server, "/nd");
    stream.read_to_end();
    let lines: Vec<serde_json::Value> =
        stream.text().lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let messages: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("type").is_none()).collect();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0]["data"], MULTILINE);
    assert_eq!(messages[1]["data"], UNICODE);
    assert_eq!(messages[2]["data"]["price"], 101.5);
    assert_eq!(messages[3]["encoding"], "base64");
    let end = lines.last().expect("final line");
    assert_eq!(end["type"], "end");
    assert_eq!(end["next"], ids[3].as_str());

    // Resume from the end line's cursor: only what came after.
    publish(server.addr, "/nd", b"after the recycle");
    let next = end["next"].as_str().expect("next");
    let mut again = StreamClient::open(
        server.addr,
        &format!("GET /sub/nd?transport=stream&since={next} HTTP/1.1\r\nHost: t\r\n\r\n"),
    );
    again.read_until_count("\n", 1);
    let first: serde_json::Value = serde_json::from_str(again.text().lines().next().expect("line")).expect("json");
    assert_eq!(first["data"], "after the recycle");
}

#[test]
fn http_1_0_stream_is_close_delimited() {
    let server = TestServer::with(|c| c.streams.max_age = Duration::from_millis(300));
    publish(server.addr, "/old", b"hello 1.0");
    let mut stream = StreamClient::open(server.addr, "GET /sub/old?transport=stream&since=all HTTP/1.0\r\n\r\n");
    assert_eq!(stream.head.header("transfer-encoding"), None);
    stream.read_to_end();
    assert!(stream.text().starts_with("{\"id\""), "{}", stream.text());
    assert!(stream.text().contains("\"type\":\"end\""));
}

#[test]
fn forever_iframe_pads_escapes_and_calls_the_callback() {
    let server = TestServer::with(|c| c.streams.heartbeat_interval = Duration::from_millis(200));
    let mut frame = StreamClient::open(
        server.addr,
        "GET /sub/frame?transport=iframe&callback=app.onMsg HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(frame.head.header("content-type"), Some("text/html; charset=utf-8"));
    frame.read_until(|b| b.len() >= 1024);
    server.wait_for("streaming", 1);
    let hostile = "</script><script>alert(1)</script><!--";
    publish(server.addr, "/frame", hostile.as_bytes());
    frame.read_until_count("<script>parent.app.onMsg(", 1);
    frame.read_until(|b| String::from_utf8_lossy(b).contains(")</script>\n"));
    frame.read_until(|b| String::from_utf8_lossy(b).contains("<!-- hb -->"));
    let text = frame.text();
    let start = text.find("<script>parent.app.onMsg(").expect("script") + "<script>parent.app.onMsg(".len();
    let end = text[start..].find(")</script>").expect("end") + start;
    let payload = &text[start..end];
    assert!(!payload.contains('<'), "markup escaped: {payload}");
    let msg: serde_json::Value = serde_json::from_str(payload).expect("callback argument is JSON");
    assert_eq!(msg["data"], hostile, "the payload itself is intact");
    assert_eq!(text.matches("</script>").count(), 1, "only our own script end tag");
}

#[test]
fn multipart_parts_carry_their_own_content_type() {
    let server = TestServer::start();
    let mut parts = StreamClient::open(server.addr, "GET /sub/mp?transport=multipart HTTP/1.1\r\nHost: t\r\n\r\n");
    let ct = parts.head.header("content-type").expect("content type").to_owned();
    let boundary = ct.split("boundary=\"").nth(1).expect("boundary").trim_end_matches('"').to_owned();
    assert!(ct.starts_with("multipart/x-mixed-replace"));
    server.wait_for("streaming", 1);
    let ids = publish_set(&server, "/mp");
    parts.read_until_count(&format!("--{boundary}\r\n"), 4);
    parts.read_until(|b| b.ends_with(b"\r\n") && String::from_utf8_lossy(b).contains(&ids[3]));
    let text = parts.text();
    let bodies: Vec<&str> = text.split(&format!("--{boundary}\r\n")).filter(|p| !p.is_empty()).collect();
    assert_eq!(bodies.len(), 4);
    assert!(bodies[0].starts_with("Content-Type: text/plain\r\n"));
    assert!(bodies[0].ends_with(&format!("\r\n\r\n{MULTILINE}\r\n")), "{:?}", bodies[0]);
    assert!(bodies[1].contains("X-Event: greeting\r\n"));
    assert!(bodies[2].starts_with("Content-Type: application/json\r\n"));
    assert!(bodies[3].contains(&format!("X-Message-Id: {}\r\n", ids[3])));
    assert!(parts.body.ends_with(b"\r\n\x00\x01\x02\xff\r\n"), "binary payload raw");
}

#[test]
fn jsonp_long_poll_wraps_the_reply_and_validates_the_callback() {
    let server = TestServer::start();
    publish(server.addr, "/jp", b"</script>");
    let mut c = server.client();
    let r = c.get("/sub/jp?transport=jsonp&callback=cb_1&since=all");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/javascript; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let text = r.text();
    assert!(text.starts_with("/**/cb_1(") && text.ends_with(");"), "{text}");
    assert!(!text.contains('<'));
    let inner: serde_json::Value = serde_json::from_str(&text["/**/cb_1(".len()..text.len() - 2]).expect("json");
    assert_eq!(inner["messages"][0]["data"], "</script>");
    for bad in ["alert(1)", "a%22b", "%3Cscript%3E", ""] {
        let r = c.get(&format!("/sub/jp?transport=jsonp&callback={bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
}

#[test]
fn poll_answers_at_once_and_unknown_transports_are_refused() {
    let server = TestServer::start();
    let mut c = server.client();
    let r = c.get("/sub/p?transport=poll");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["messages"].as_array().map(Vec::len), Some(0));
    let r = c.get("/sub/p?transport=smoke-signals");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("poll, longpoll, jsonp"), "lists what is allowed: {}", r.text());
}

#[test]
fn piggyback_returns_news_in_the_publish_reply() {
    let server = TestServer::start();
    let start = cursor(server.addr, "/inbox");
    publish(server.addr, "/inbox", b"you have mail");
    let mut c = server.client();
    c.send_post(&format!("/pub/outbox?topics=/inbox&cursor={start}"), b"sent", "");
    let r = c.response();
    assert_eq!(r.status, 201);
    let body = r.json();
    assert_eq!(body["topic"], "/outbox");
    assert_eq!(body["messages"][0]["data"], "you have mail");
    let next = body["next"].as_str().expect("next").to_owned();
    c.send_post("/pub/outbox?topics=/inbox", b"again", &format!("X-Cursor: {next}\r\n"));
    let body = c.response().json();
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(0), "nothing new since");
}
