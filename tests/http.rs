//! HTTP/1.1 machinery over loopback: keep-alive, pipelining, HTTP/1.0, bodies, limits, errors.

mod util;

use std::time::Duration;

use util::{Client, TestServer};

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = TestServer::start();
    let mut c = server.client();
    for _ in 0..5 {
        let r = c.get("/health");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "ok\n");
        assert!(r.header("date").is_some(), "Date header");
        assert_eq!(r.header("connection"), None);
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let mut c = server.client();
    // A publish, a poll that must see it, a 404 and a health check, all in one write.
    let mut batch = Vec::new();
    batch.extend_from_slice(b"GET /sub/pipe?since=all&timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.extend_from_slice(b"POST /pub/pipe HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    batch.extend_from_slice(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.extend_from_slice(b"GET /sub/pipe?since=all&timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    c.send(&batch);
    let first = c.response();
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["messages"].as_array().map(Vec::len), Some(0));
    assert_eq!(c.response().status, 201);
    assert_eq!(c.response().status, 404);
    let poll = c.response();
    assert_eq!(poll.json()["messages"][0]["data"], "hello");
    assert_eq!(c.response().text(), "ok\n");
}

#[test]
fn http_1_0_closes_unless_keep_alive_is_asked_for() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send(b"GET /health HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());

    let mut c = server.client();
    c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn connection_close_is_honoured() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
}

#[test]
fn head_gets_headers_without_a_body() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n");
    // Read the head only: the Content-Length describes the GET body that is not sent.
    let mut probe = [0u8; 512];
    let n = std::io::Read::read(&mut c.stream, &mut probe).expect("read");
    let text = std::str::from_utf8(&probe[..n]).expect("utf8");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 3\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body after the head: {text:?}");
    // The connection is still usable.
    assert_eq!(c.get("/health").status, 200);
}

#[test]
fn chunked_request_bodies_are_decoded() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send(b"POST /pub/chunky HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n");
    assert_eq!(c.response().status, 201);
    let r = c.get("/sub/chunky?since=all&timeout=0");
    assert_eq!(r.json()["messages"][0]["data"], "hello world");
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send(b"POST /pub/cont HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response();
    assert_eq!(interim.status, 100);
    c.send(b"abc");
    assert_eq!(c.response().status, 201);
}

fn expect_error(server: &TestServer, request: &[u8], status: u16) -> util::Response {
    let mut c = server.client();
    c.send(request);
    let r = c.response();
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(request));
    assert!(r.text().ends_with('\n') && r.text().trim().lines().count() == 1, "one-line reason: {:?}", r.text());
    r
}

#[test]
fn limits_and_malformed_requests_get_clear_errors() {
    let server = TestServer::with(|c| {
        c.http.max_head = 1024;
        c.http.max_uri = 256;
        c.http.max_body = 100;
    });
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(300));
    expect_error(&server, long_uri.as_bytes(), 414);
    let big_head = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "b".repeat(2000));
    expect_error(&server, big_head.as_bytes(), 431);
    let big_body = "POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n";
    expect_error(&server, big_body.as_bytes(), 413);
    let big_chunked = format!(
        "POST /pub/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n{}\r\n0\r\n\r\n",
        "c".repeat(101)
    );
    expect_error(&server, big_chunked.as_bytes(), 413);
    expect_error(&server, b"GARBAGE\r\n\r\n", 400);
    expect_error(&server, b"GET / HTTP/1.1\r\n\r\n", 400); // no Host
    expect_error(&server, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
    // A space inside the target is a malformed request line, not an unsupported version.
    let r = expect_error(&server, b"GET /he alth HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    assert!(r.text().starts_with("invalid request line"), "{:?}", r.text());
}

#[test]
fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let server = TestServer::start();
    for request in [
        &b"POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        &b"POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
    ] {
        let mut c = server.client();
        c.send(request);
        let r = c.response();
        assert_eq!(r.status, 400);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.is_closed(), "smuggling attempt must end the connection");
    }
}

#[test]
fn wrong_method_gets_405_with_allow_and_unknown_path_404() {
    let server = TestServer::start();
    let r = expect_error(&server, b"DELETE /sub/a HTTP/1.1\r\nHost: t\r\n\r\n", 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    let r = expect_error(&server, b"GET /pub/a HTTP/1.1\r\nHost: t\r\n\r\n", 405);
    assert_eq!(r.header("allow"), Some("POST, PUT, OPTIONS"));
    expect_error(&server, b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", 404);
}

#[test]
fn slow_head_times_out_with_408() {
    let server = TestServer::with(|c| c.timeouts.header = Duration::from_millis(300));
    let mut c = server.client();
    c.send(b"GET /health HTTP/1.1\r\nHo");
    let r = c.response();
    assert_eq!(r.status, 408);
    assert!(c.is_closed());
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let server = TestServer::with(|c| c.timeouts.keepalive = Duration::from_millis(300));
    let mut c = server.client();
    assert_eq!(c.get("/health").status, 200);
    // No request follows; the server closes without a response.
    assert!(c.is_closed());
}

#[test]
fn cors_preflight_and_allowlists() {
    let server = TestServer::with(|c| c.access.cors_publish_origins = vec!["https://app.example".into()]);
    let mut c = server.client();
    c.send(b"OPTIONS /sub/a HTTP/1.1\r\nHost: t\r\nOrigin: https://any.example\r\nAccess-Control-Request-Method: GET\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    c.send(b"OPTIONS /pub/a HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n\r\n");
    assert_eq!(c.response().status, 403);

    c.send(b"OPTIONS /pub/a HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));

    c.send_post("/pub/a", b"x", "Origin: https://evil.example\r\n");
    assert_eq!(c.response().status, 403, "a cross-origin publish from outside the allowlist");
    c.send_post("/pub/a", b"x", "Origin: https://app.example\r\n");
    let r = c.response();
    assert_eq!(r.status, 201);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));

    c.send(b"GET /sub/a?since=all&timeout=0 HTTP/1.1\r\nHost: t\r\nOrigin: https://any.example\r\n\r\n");
    assert_eq!(c.response().header("access-control-allow-origin"), Some("*"));
}

#[test]
fn stats_reports_workers_and_hub() {
    let server = TestServer::start();
    let mut c = server.client();
    let r = c.get("/stats");
    assert_eq!(r.status, 200);
    let stats = r.json();
    assert_eq!(stats["workers"].as_array().map(Vec::len), Some(2));
    assert!(stats["store"]["topics"].is_number());
    assert!(stats["hub"].is_object());
    let _ = Client::connect(server.addr);
}

#[test]
fn an_empty_body_is_complete_at_once() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send(b"POST /pub/empty HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(c.response().status, 201);
    // With Expect: 100-continue there is nothing to wait for either: no interim 100.
    c.send(b"POST /pub/empty HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.response().status, 201);
    let body = c.get("/sub/empty?since=all&timeout=0").json();
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["messages"][0]["data"], "");
}
