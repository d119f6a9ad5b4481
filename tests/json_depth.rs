//! The JSON nesting bound on every ingest path, over loopback: a native JSON publish, a Bayeux
//! batch (its `data` and the whole body), and a WebSocket and raw TCP command are refused when
//! they nest deeper than `MAX_JSON_DEPTH`, with the same one-line reason, and a payload at the
//! bound is published and reaches a subscriber as JSON it can decode.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;

use halley::model::MAX_JSON_DEPTH;
use serde_json::{json, Value};
use util::ws::Ws;
use util::{TestServer, WAIT};

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn reason() -> String {
    format!("JSON nested deeper than {MAX_JSON_DEPTH} levels")
}

#[test]
fn a_native_json_publish_past_the_bound_is_refused_and_one_at_it_delivered() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send_post("/pub/deep", nested(200).as_bytes(), "Content-Type: application/json\r\n");
    let r = c.response();
    assert_eq!((r.status, r.text()), (400, format!("{}\n", reason()).as_str()));
    // Exactly one past the bound: refused; the same bytes as text: a string, accepted.
    c.send_post("/pub/deep", nested(MAX_JSON_DEPTH + 1).as_bytes(), "Content-Type: application/json\r\n");
    assert_eq!(c.response().status, 400);
    c.send_post("/pub/deep", nested(200).as_bytes(), "Content-Type: text/plain\r\n");
    assert_eq!(c.response().status, 201);
    c.send_post("/pub/deep", nested(MAX_JSON_DEPTH).as_bytes(), "Content-Type: application/json\r\n");
    assert_eq!(c.response().status, 201);

    let r = server.client().get("/sub/deep?since=all&timeout=0");
    let messages = r.json()["messages"].as_array().cloned().expect("messages");
    assert_eq!(messages.len(), 2, "{}", r.text());
    assert_eq!(messages[0]["data"], nested(200), "text goes out as a string");
    assert!(messages[1]["data"].is_array(), "JSON at the bound is embedded and decodes");
}

#[test]
fn a_bayeux_batch_past_the_bound_is_refused() {
    let server = TestServer::start();
    let mut c = server.client();
    let deep_data = format!(r#"[{{"channel":"/deep","clientId":"x","data":{}}}]"#, nested(10_000));
    // Nested through `ext` and `advice` too, not only `data`.
    let deep_ext = format!(r#"[{{"channel":"/meta/handshake","ext":{}}}]"#, nested(MAX_JSON_DEPTH));
    for body in [deep_data, deep_ext] {
        c.send_post("/cometd", body.as_bytes(), "Content-Type: application/json\r\n");
        let r = c.response();
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(&reason()), "{:?}", r.text());
    }
    // Callback-polling carries the batch in the query string: the same check.
    let query =
        format!("/cometd?jsonp=cb&message={}", nested(MAX_JSON_DEPTH + 1).replace('[', "%5B").replace(']', "%5D"));
    let r = c.get(&query);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(&reason()), "{:?}", r.text());
}

#[test]
fn a_websocket_command_past_the_bound_gets_an_error_with_its_id_and_the_socket_stays_open() {
    let server = TestServer::start();
    let mut ws = Ws::connect(server.addr, "/ws");
    let command = format!(r#"{{"op":"publish","topic":"/deep","data":{},"id":7}}"#, nested(200));
    ws.send_text(&command);
    assert_eq!(ws.json(), json!({"type": "error", "id": 7, "reason": reason()}));
    ws.send_json(json!({"op": "ping", "id": 8}));
    assert_eq!(ws.json()["op"], "ping");
}

#[test]
fn a_raw_tcp_command_past_the_bound_gets_an_error() {
    let server = TestServer::with(|c| c.network.raw_listen = Some("127.0.0.1:0".parse().expect("addr")));
    let mut sock = TcpStream::connect(server.raw_addr.expect("raw listener")).expect("connect");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let command = format!(r#"{{"op":"publish","topic":"/deep","data":{}}}"#, nested(MAX_JSON_DEPTH + 1));
    sock.write_all(command.as_bytes()).expect("write");
    sock.write_all(b"\0").expect("write");
    let mut buf = Vec::new();
    while !buf.contains(&0) {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.iter().position(|&b| b == 0).expect("NUL");
    let reply: Value = serde_json::from_slice(&buf[..end]).expect("JSON");
    assert_eq!(reply, json!({"type": "error", "reason": reason()}));
}
