//! TLS termination over real sockets: a certificate made here with rcgen, a rustls client on a
//! blocking `TcpStream`, and every kind of exchange (publish, long-poll, SSE, WebSocket) over
//! it; plain HTTP sent to the TLS port; certificate reload seen by new connections only; the
//! handshake counter; and an unusable certificate path at start.

mod tls_util;
mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use halley::config::Tls;
use tls_util::{CertFiles, TlsClient};
use util::{TestServer, WAIT};

fn tls_server(files: &CertFiles) -> TestServer {
    TestServer::with(|c| c.tls = Some(Tls { cert: files.cert.clone(), key: files.key.clone() }))
}

#[test]
fn publish_and_long_poll_over_tls() {
    let files = CertFiles::new("localhost");
    let server = tls_server(&files);
    let cursor = {
        let mut c = TlsClient::connect(server.addr, &files.ca);
        let r = c.request("GET /sub/tls/lp?timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["next"].as_str().expect("next").to_owned()
    };
    let mut poller = TlsClient::connect(server.addr, &files.ca);
    poller.send(&format!("GET /sub/tls/lp?since={cursor} HTTP/1.1\r\nHost: t\r\n\r\n"));
    server.wait_for("parked", 1);
    let mut publisher = TlsClient::connect(server.addr, &files.ca);
    let body = "hello over tls";
    let r = publisher
        .request(&format!("POST /pub/tls/lp HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    assert_eq!(r.status, 201, "{}", r.text());
    let reply = poller.response();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["messages"][0]["data"], body, "{}", reply.text());
    // Keep-alive: the same TLS connection carries the next request.
    let again = publisher.request("GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(again.status, 200);
    assert!(server.worker_total("tls_handshakes") >= 3);
}

#[test]
fn sse_over_tls_streams_messages() {
    let files = CertFiles::new("localhost");
    let server = tls_server(&files);
    let mut sse = TlsClient::connect(server.addr, &files.ca);
    sse.send("GET /sub/tls/sse HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    let head = sse.head();
    assert_eq!(head.status, 200);
    assert!(head.header("content-type").is_some_and(|t| t.starts_with("text/event-stream")));
    server.wait_for("streaming", 1);
    for i in 0..3 {
        let mut p = TlsClient::connect(server.addr, &files.ca);
        let body = format!("event {i}");
        let r = p
            .request(&format!("POST /pub/tls/sse HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
        assert_eq!(r.status, 201);
    }
    sse.read_until(|text| text.contains("event 0") && text.contains("event 1") && text.contains("event 2"));
}

#[test]
fn websocket_over_tls_subscribes_and_publishes() {
    let files = CertFiles::new("localhost");
    let server = tls_server(&files);
    let mut ws = TlsClient::connect(server.addr, &files.ca);
    ws.send(
        "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    let head = ws.head();
    assert_eq!(head.status, 101);
    ws.ws_send(r#"{"op":"subscribe","topics":["/tls/ws"],"id":1}"#);
    assert_eq!(ws.ws_json()["op"], "subscribe");
    ws.ws_send(r#"{"op":"publish","topic":"/tls/ws","data":"over the socket","id":"p1"}"#);
    let mut seen_message = false;
    let mut seen_ack = false;
    while !(seen_message && seen_ack) {
        let v = ws.ws_json();
        seen_message |= v["data"] == "over the socket";
        seen_ack |= v["id"] == "p1";
    }
    // And from an HTTP publisher over TLS too.
    let mut p = TlsClient::connect(server.addr, &files.ca);
    let r = p.request("POST /pub/tls/ws HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nfrom");
    assert_eq!(r.status, 201);
    assert_eq!(ws.ws_json()["data"], "from");
}

/// A client that speaks plain HTTP to the TLS port is closed (with a TLS alert), counted as a
/// failed handshake, and the server keeps serving.
#[test]
fn plain_http_to_the_tls_port_is_closed() {
    let files = CertFiles::new("localhost");
    let server = tls_server(&files);
    let mut plain = TcpStream::connect(server.addr).expect("connect");
    plain.set_read_timeout(Some(WAIT)).expect("timeout");
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut chunk = [0u8; 1024];
        match plain.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
        assert!(Instant::now() < deadline, "not closed");
    }
    // Nothing that looks like HTTP: at most a TLS alert record (content type 21).
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    server.wait_for("tls_handshake_errors", 1);
    server.wait_for("connections", 0);
    let mut c = TlsClient::connect(server.addr, &files.ca);
    assert_eq!(c.request("GET /health HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    // Both counts reach /metrics (read from loopback over the same TLS listener).
    let metrics = c.request("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number")
    };
    assert!(value("halley_tls_handshake_errors_total ") >= 1.0, "{text}");
    assert!(value("halley_tls_handshakes_total ") >= 1.0, "{text}");
}

/// `Server::reload_tls` swaps the certificate for new connections; an open connection keeps
/// the one it was accepted with; a reload from bad files fails and keeps the current one.
#[test]
fn reload_swaps_the_certificate_for_new_connections() {
    let files = CertFiles::new("localhost");
    let server = tls_server(&files);
    let mut old = TlsClient::connect(server.addr, &files.ca);
    assert_eq!(old.request("GET /health HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    let before = old.peer_fingerprint();

    // Same files: nothing changed.
    let same = server.server().reload_tls().expect("reload").expect("tls on");
    assert!(!same.changed(), "{same}");

    // A certificate from another CA: a client trusting only the old CA is refused after the
    // reload, one trusting the new CA is served, and the open connection still works.
    let renewed = CertFiles::new("localhost");
    files.replace_with(&renewed);
    let reloaded = server.server().reload_tls().expect("reload").expect("tls on");
    assert!(reloaded.changed(), "{reloaded}");
    assert_eq!(reloaded.old_fingerprint, before);
    let mut fresh = TlsClient::connect(server.addr, &renewed.ca);
    assert_eq!(fresh.request("GET /health HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    assert_eq!(fresh.peer_fingerprint(), reloaded.new_fingerprint);
    assert!(TlsClient::try_connect(server.addr, &files.ca).is_err(), "the old CA no longer verifies");
    assert_eq!(old.request("GET /health HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    assert_eq!(old.peer_fingerprint(), before);

    // A broken key file: the reload fails with a reason and the current certificate stays.
    std::fs::write(&files.key, "not a key").expect("write");
    let err = server.server().reload_tls().expect_err("bad key");
    assert!(err.to_string().contains("no usable private key"), "{err}");
    let mut after = TlsClient::connect(server.addr, &renewed.ca);
    assert_eq!(after.request("GET /health HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    assert_eq!(after.peer_fingerprint(), reloaded.new_fingerprint);
}

/// An unusable certificate or key stops the start with one line naming the file.
#[test]
fn bad_certificate_path_is_a_one_line_start_error() {
    let files = CertFiles::new("localhost");
    let config = TestServer::config(|c| {
        c.tls = Some(Tls { cert: "/nonexistent/halley-cert.pem".into(), key: files.key.clone() });
    });
    let err = halley::server::start(config).expect_err("no such file");
    let text = err.to_string();
    assert!(text.starts_with("cannot read TLS certificate /nonexistent/halley-cert.pem"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    let config = TestServer::config(|c| c.tls = Some(Tls { cert: files.cert.clone(), key: files.cert.clone() }));
    let err = halley::server::start(config).expect_err("a certificate is no key").to_string();
    assert!(err.contains("no usable private key") && !err.contains('\n'), "{err}");
}

/// A client that connects and never completes the handshake is closed by the header timeout.
#[test]
fn stalled_handshake_is_closed_by_the_header_timeout() {
    let files = CertFiles::new("localhost");
    let server = TestServer::with(|c| {
        c.tls = Some(Tls { cert: files.cert.clone(), key: files.key.clone() });
        c.timeouts.header = std::time::Duration::from_millis(300);
    });
    let mut idle = TcpStream::connect(server.addr).expect("connect");
    idle.set_read_timeout(Some(WAIT)).expect("timeout");
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let n = idle.read(&mut byte).unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    assert!(started.elapsed() < WAIT);
    server.wait_for("connections", 0);
}

/// curl, trusting only the test CA, publishes and long-polls over TLS (curl's own TLS stack,
/// not rustls, on the client side).
#[test]
fn curl_with_the_test_ca_publishes_and_long_polls() {
    let files = CertFiles::new("localhost");
    let server = tls_server(&files);
    let port = server.addr.port();
    let curl = |args: &[&str]| {
        let resolve = format!("localhost:{port}:127.0.0.1");
        let output = std::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10", "--cacert"])
            .arg(&files.ca_file)
            .args(["--resolve", &resolve])
            .args(args)
            .output()
            .expect("curl runs (scripts/test.sh installs it: apt-get install -y curl)");
        assert!(output.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let base = format!("https://localhost:{port}");
    let poll: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("{base}/sub/tls/curl?timeout=0")])).expect("JSON");
    let cursor = poll["next"].as_str().expect("next").to_owned();
    let published: serde_json::Value =
        serde_json::from_str(&curl(&["--data-binary", "from curl", &format!("{base}/pub/tls/curl")])).expect("JSON");
    assert_eq!(published["topic"], "/tls/curl");
    let got: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("{base}/sub/tls/curl?since={cursor}")])).expect("JSON");
    assert_eq!(got["messages"][0]["data"], "from curl", "{got}");
    // Without the CA, curl refuses the certificate: the server presents the test one.
    let refused = std::process::Command::new("curl")
        .args(["--silent", "--max-time", "10", "--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("{base}/health"))
        .status()
        .expect("curl runs");
    assert!(!refused.success());
}

/// A TLS subscriber that stops reading is held to the same output bound as a plain one: rustls
/// holds at most its own small buffer, the rest waits in the connection's queue, and the
/// subscriber is cut for overflow.
#[test]
fn a_tls_stream_that_stops_reading_is_cut_for_overflow() {
    let files = CertFiles::new("localhost");
    let server = TestServer::with(|c| {
        c.tls = Some(Tls { cert: files.cert.clone(), key: files.key.clone() });
        c.network.max_pending_output = 64 * 1024;
        c.streams.heartbeat_interval = std::time::Duration::from_millis(200);
    });
    let mut sse = TlsClient::connect(server.addr, &files.ca);
    sse.send("GET /sub/tls/slow HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    assert_eq!(sse.head().status, 200);
    server.wait_for("streaming", 1);
    // Never read again; publish until the server gives up on it.
    let body = "x".repeat(16 * 1024);
    let mut publisher = TlsClient::connect(server.addr, &files.ca);
    let deadline = Instant::now() + WAIT;
    while server.worker_total("overflows") == 0 {
        assert!(Instant::now() < deadline, "never cut; streaming = {}", server.worker_total("streaming"));
        let r = publisher.request(&format!(
            "POST /pub/tls/slow HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!(r.status, 201);
    }
    server.wait_for("streaming", 0);
}
