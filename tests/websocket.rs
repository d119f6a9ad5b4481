//! WebSocket (RFC 6455) and raw TCP over loopback: handshake, commands and their
//! acknowledgements, messages, resume, heartbeats, and every protocol error.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use util::ws::{Frame, Ws};
use util::{cursor, publish, TestServer, WAIT};

#[test]
fn subscribe_publish_and_acknowledge_over_one_socket() {
    let server = TestServer::start();
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_json(serde_json::json!({"op": "subscribe", "topics": ["/chat/*"], "id": 1}));
    let ack = ws.json();
    assert_eq!(ack, serde_json::json!({"type": "ack", "op": "subscribe", "id": 1, "topics": ["/chat/*"]}));
    ws.send_json(serde_json::json!({"op": "publish", "topic": "/chat/room", "data": {"text": "hi"}, "id": "p1"}));
    // The acknowledgement and the message itself (we are subscribed) both arrive.
    let (mut ack, mut msg) = (None, None);
    for _ in 0..2 {
        let v = ws.json();
        if v["type"] == "ack" {
            ack = Some(v)
        } else {
            msg = Some(v)
        }
    }
    let (ack, msg) = (ack.expect("ack"), msg.expect("message"));
    assert_eq!(ack["op"], "publish");
    assert_eq!(ack["id"], "p1");
    assert_eq!(msg["data"]["text"], "hi");
    assert_eq!(msg["topic"], "/chat/room");
    assert_eq!(ack["message_id"], msg["id"]);
    // HTTP publishes reach the socket too, with unicode and multi-line text intact.
    publish(server.addr, "/chat/room", "line 1\nligne 2 – ✓".as_bytes());
    assert_eq!(ws.json()["data"], "line 1\nligne 2 – ✓");
    ws.send_json(serde_json::json!({"op": "unsubscribe", "id": 2}));
    assert_eq!(ws.json()["op"], "unsubscribe");
    publish(server.addr, "/chat/room", b"not for us");
    ws.send_json(serde_json::json!({"op": "ping", "id": 3}));
    assert_eq!(ws.json()["op"], "ping", "nothing arrived after unsubscribing");
}

#[test]
fn sub_url_upgrade_resumes_from_a_cursor_and_backfills_new_topics() {
    let server = TestServer::start();
    let start = cursor(server.addr, "/a");
    publish(server.addr, "/a", b"a1");
    publish(server.addr, "/b", b"b1");
    publish(server.addr, "/a", b"a2");
    let mut ws = Ws::connect(server.addr, &format!("/sub/a?since={start}"));
    let ack = ws.json();
    assert_eq!(
        (ack["type"].as_str(), ack["topics"][0].as_str()),
        (Some("ack"), Some("/a")),
        "the URL's subscription is acknowledged"
    );
    assert_eq!(ws.json()["data"], "a1");
    assert_eq!(ws.json()["data"], "a2");
    // Adding /b from the same start backfills b1, and nothing is repeated.
    ws.send_json(serde_json::json!({"op": "subscribe", "topics": ["/b"], "since": start}));
    assert_eq!(ws.json()["type"], "ack");
    assert_eq!(ws.json()["data"], "b1");
    publish(server.addr, "/b", b"b2");
    assert_eq!(ws.json()["data"], "b2");
}

#[test]
fn protocol_errors_close_with_the_right_code() {
    let server = TestServer::with(|c| c.streams.ws_max_message = 1024);
    // Unmasked client frame: 1002.
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_frame(0x81, b"{}", false);
    assert_eq!(ws.close_code(), 1002);
    // Oversized frame: 1009, refused from its header.
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_frame(0x81, &vec![b'x'; 2000], true);
    assert_eq!(ws.close_code(), 1009);
    // Invalid UTF-8 in a text frame: 1007.
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_frame(0x81, &[0xff, 0xfe], true);
    assert_eq!(ws.close_code(), 1007);
    // Binary frames are not part of the protocol: 1003.
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_frame(0x82, b"\x00", true);
    assert_eq!(ws.close_code(), 1003);
    // A client close is echoed.
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_frame(0x88, &1000u16.to_be_bytes(), true);
    assert_eq!(ws.close_code(), 1000);
    // Bad commands get an error reply and the socket stays usable.
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_text("not json");
    assert_eq!(ws.json()["type"], "error");
    ws.send_json(serde_json::json!({"op": "subscribe", "topics": ["no-slash"], "id": 9}));
    let err = ws.json();
    assert_eq!((err["type"].as_str(), err["id"].as_i64()), (Some("error"), Some(9)));
    ws.send_json(serde_json::json!({"op": "ping"}));
    assert_eq!(ws.json()["op"], "ping");
}

#[test]
fn fragmented_messages_and_interleaved_pings() {
    let server = TestServer::start();
    let mut ws = Ws::connect(server.addr, "/ws");
    let text = r#"{"op":"ping","id":"frag"}"#;
    let (a, b) = text.split_at(10);
    ws.send_frame(0x01, a.as_bytes(), true); // text, not final
    ws.send_frame(0x89, b"are you there", true); // ping between the fragments
    ws.send_frame(0x80, b.as_bytes(), true); // final continuation
    assert_eq!(ws.frame(), Some(Frame::Other(0xA, b"are you there".to_vec())), "pong echoes the ping");
    assert_eq!(ws.json()["id"], "frag");
}

#[test]
fn bad_handshakes_are_refused_with_a_reason() {
    let server = TestServer::start();
    let base = "Host: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n";
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        (format!("GET /ws HTTP/1.1\r\n{base}Sec-WebSocket-Version: 8\r\n{key}\r\n"), "426"),
        (format!("GET /ws HTTP/1.1\r\n{base}Sec-WebSocket-Version: 13\r\n\r\n"), "400"),
        ("GET /ws HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(), "400"),
        (format!("GET /sub/a?transport=sse HTTP/1.1\r\n{base}Sec-WebSocket-Version: 13\r\n{key}\r\n"), "400"),
    ];
    for (request, status) in cases {
        let mut raw = TcpStream::connect(server.addr).expect("connect");
        raw.set_read_timeout(Some(WAIT)).expect("timeout");
        raw.write_all(request.as_bytes()).expect("write");
        let mut reply = vec![0u8; 1024];
        let n = raw.read(&mut reply).expect("read");
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with(&format!("HTTP/1.1 {status}")), "{request:?} -> {reply}");
        if status == "426" {
            assert!(reply.contains("Sec-WebSocket-Version: 13"), "{reply}");
        }
    }
}

#[test]
fn heartbeat_pings_and_dead_peers_are_dropped() {
    let server = TestServer::with(|c| c.streams.heartbeat_interval = Duration::from_millis(200));
    let mut ws = Ws::connect(server.addr, "/ws");
    assert!(matches!(ws.frame(), Some(Frame::Ping(_))), "a ping arrives");
    server.wait_for("duplex", 1);
    // We never answer with a pong: at the next heartbeat the server gives up on us.
    server.wait_for("duplex", 0);
}

#[test]
fn raw_tcp_speaks_nul_terminated_json() {
    let server = TestServer::with(|c| c.network.raw_listen = Some("127.0.0.1:0".parse().expect("addr")));
    let raw_addr = server.raw_addr.expect("raw listener");
    let mut sock = TcpStream::connect(raw_addr).expect("connect");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut read_json = {
        let mut buf: Vec<u8> = Vec::new();
        move |sock: &mut TcpStream| -> Value {
            loop {
                if let Some(end) = buf.iter().position(|&b| b == 0) {
                    let item: Vec<u8> = buf.drain(..=end).take(end).collect();
                    return serde_json::from_slice(&item).expect("JSON before NUL");
                }
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).expect("read");
                assert!(n > 0, "closed");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    };
    sock.write_all(b"{\"op\":\"subscribe\",\"topics\":[\"/dev/42\"]}\n").expect("write");
    assert_eq!(read_json(&mut sock)["op"], "subscribe");
    publish(server.addr, "/dev/42", b"reboot");
    assert_eq!(read_json(&mut sock)["data"], "reboot");
    sock.write_all(b"{\"op\":\"publish\",\"topic\":\"/dev/42\",\"data\":\"ok\"}\0").expect("write");
    let mut kinds = [read_json(&mut sock), read_json(&mut sock)];
    kinds.sort_by_key(|v| v["type"].is_null());
    assert_eq!(kinds[0]["op"], "publish");
    assert_eq!(kinds[1]["data"], "ok");

    // A Flash client's policy request gets the policy file.
    let mut flash = TcpStream::connect(raw_addr).expect("connect");
    flash.set_read_timeout(Some(WAIT)).expect("timeout");
    flash.write_all(b"<policy-file-request/>\0").expect("write");
    let mut reply = vec![0u8; 512];
    let n = flash.read(&mut reply).expect("read");
    assert!(String::from_utf8_lossy(&reply[..n]).contains("<cross-domain-policy>"));
}

#[test]
fn raw_tcp_replies_wait_for_a_slow_reader_and_resume_in_order() {
    let server = TestServer::with(|c| c.network.raw_listen = Some("127.0.0.1:0".parse().expect("addr")));
    let mut sock = TcpStream::connect(server.raw_addr.expect("raw listener")).expect("connect");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    // Far more error replies than the server queues for one peer before it waits for reads.
    const LINES: usize = 20_000;
    let commands: String = (0..LINES).map(|i| format!("{{\"op\":\"nope\",\"id\":{i}}}\n")).collect();
    sock.write_all(commands.as_bytes()).expect("write");
    sock.write_all(b"{\"op\":\"subscribe\",\"topics\":[\"/slow\"],\"id\":\"last\"}\n").expect("write");
    let mut buf: Vec<u8> = Vec::new();
    let mut replies = Vec::with_capacity(LINES + 1);
    while replies.len() <= LINES {
        let mut chunk = [0u8; 65536];
        let n = sock.read(&mut chunk).expect("read");
        assert!(n > 0, "closed after {} replies", replies.len());
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(len) = buf[start..].iter().position(|&b| b == 0) {
            replies.push(serde_json::from_slice::<Value>(&buf[start..start + len]).expect("JSON before NUL"));
            start += len + 1;
        }
        buf.drain(..start);
    }
    for (i, reply) in replies[..LINES].iter().enumerate() {
        assert_eq!((reply["type"].as_str(), reply["id"].as_u64()), (Some("error"), Some(i as u64)), "reply {i}");
    }
    assert_eq!((replies[LINES]["op"].as_str(), replies[LINES]["id"].as_str()), (Some("subscribe"), Some("last")));
}
