//! Session lifecycle across connections and workers (Pushlet, Bayeux): a listening
//! connection that goes away, a socket handed to another worker, superseded connects,
//! pipelined responses across a hand-off, a session slot reused within one batch.

mod util;

use std::net::Shutdown;
use std::time::Duration;

use serde_json::{json, Value};
use util::ws::{Frame, Ws};
use util::{publish, pushlet_session_id, Client, StreamClient, TestServer};

fn handshake_ws(ws: &mut Ws) -> String {
    ws.send_json(
        json!([{"id":"1","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]),
    );
    ws.json()[0]["clientId"].as_str().expect("clientId").to_owned()
}

fn handshake_http(c: &mut Client) -> String {
    let hs =
        json!([{"id":"1","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]);
    c.post("/cometd", hs.to_string().as_bytes()).json()[0]["clientId"].as_str().expect("clientId").to_owned()
}

/// Ids of the messages in the next text frame.
fn frame_ids(ws: &mut Ws) -> Vec<Value> {
    ws.json().as_array().expect("a batch").iter().map(|m| m["id"].clone()).collect()
}

#[test]
fn a_bayeux_socket_that_dies_without_a_close_frame_lets_its_session_expire_and_touches_no_one_else() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.sessions.bayeux_max_interval = Duration::from_millis(300);
    });
    let mut ws = Ws::connect(server.addr, "/cometd");
    let client_id = handshake_ws(&mut ws);
    ws.send_json(json!([{"id":"2","channel":"/meta/connect","connectionType":"websocket","clientId":client_id}]));
    server.wait_for("duplex", 1);
    // Gone without a close frame: FIN only.
    ws.stream.shutdown(Shutdown::Both).expect("shutdown");
    drop(ws);
    server.wait_for("duplex", 0);
    // The session is no longer listened for, so it expires after its max interval.
    server.wait_for("sessions", 0);
    // A new connection takes the freed slot; the dead session cannot reach it.
    let mut sse = StreamClient::open(server.addr, "GET /sub/secret?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("streaming", 1);
    let mut c = Client::connect(server.addr);
    let body = json!([{"id":"3","channel":"/meta/subscribe","subscription":"/leak","clientId":client_id}]);
    let reply = c.post("/cometd", body.to_string().as_bytes()).json();
    assert_eq!(reply[0]["error"], "402::Unknown client");
    publish(server.addr, "/leak", b"LEAKED");
    publish(server.addr, "/secret", b"SECRET");
    sse.read_until(|b| String::from_utf8_lossy(b).contains("data: SECRET"));
    assert!(!sse.text().contains("LEAKED"), "another client's session reached this stream: {}", sse.text());
}

#[test]
fn a_connect_batched_before_a_disconnect_is_answered_for_its_own_client() {
    let server = TestServer::with(|c| c.workers = 1);
    let mut c = Client::connect(server.addr);
    let a = handshake_http(&mut c);
    // connect(A), disconnect(A), then a handshake that may take A's freed slot.
    let batch = json!([
        {"id":"2","channel":"/meta/connect","connectionType":"long-polling","clientId":a},
        {"id":"3","channel":"/meta/disconnect","clientId":a},
        {"id":"4","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]);
    let reply = c.post("/cometd", batch.to_string().as_bytes()).json();
    let by_id = |id: &str| reply.as_array().expect("batch").iter().find(|m| m["id"] == id).cloned().expect("reply");
    assert_eq!(by_id("2")["clientId"], a.as_str(), "A's connect answered as A's, not the new session's");
    assert_eq!(by_id("3")["successful"], true);
    assert_ne!(by_id("4")["clientId"], a.as_str());
}

#[test]
fn a_newer_connect_on_the_same_socket_supersedes_the_older_and_gets_the_events() {
    let server = TestServer::with(|c| c.workers = 1);
    let mut ws = Ws::connect(server.addr, "/cometd");
    let id = handshake_ws(&mut ws);
    ws.send_json(json!([{"id":"s","channel":"/meta/subscribe","subscription":"/a","clientId":id}]));
    assert_eq!(frame_ids(&mut ws), [json!("s")]);
    ws.send_json(json!([{"id":"c1","channel":"/meta/connect","connectionType":"websocket","clientId":id}]));
    ws.send_json(json!([{"id":"c2","channel":"/meta/connect","connectionType":"websocket","clientId":id}]));
    // c1 is answered (without events) as soon as c2 takes over.
    assert_eq!(frame_ids(&mut ws), [json!("c1")]);
    publish(server.addr, "/a", br#"{"x":1}"#);
    let reply = ws.json();
    let events: Vec<&Value> = reply.as_array().expect("batch").iter().filter(|m| m.get("data").is_some()).collect();
    assert_eq!(events.len(), 1, "{reply}");
    assert_eq!(reply.as_array().and_then(|r| r.last()).map(|m| m["id"].clone()), Some(json!("c2")));
}

#[test]
fn a_pipelined_response_survives_the_hand_off_of_its_connection() {
    let server = TestServer::start(); // 2 workers
    let mut c = Client::connect(server.addr);
    let id = &pushlet_session_id(c.get("/pushlet.srv?p_event=join&p_format=xml").text());
    for _ in 0..20 {
        let mut c = Client::connect(server.addr);
        c.send(
            format!(
                "GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /pushlet.srv?p_event=hb&p_format=xml&p_id={id} HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(c.response().text(), "ok\n", "the first response first");
        assert!(c.response().text().contains("hb-ack"), "then the second");
    }
    assert!(server.worker_total("handoffs_in") > 0, "some requests were handed over");
}

#[test]
fn a_socket_handed_to_another_worker_leaves_nothing_behind() {
    let server = TestServer::with(|c| c.sessions.bayeux_max_interval = Duration::from_millis(300));
    let mut ws = Ws::connect(server.addr, "/cometd");
    let s1 = handshake_ws(&mut ws);
    ws.send_json(json!([{"id":"c1","channel":"/meta/connect","connectionType":"websocket","clientId":s1}]));
    // A session owned by the other worker, made over HTTP.
    let s2 = loop {
        let id = handshake_http(&mut Client::connect(server.addr));
        if id[..3] != s1[..3] {
            break id;
        }
    };
    ws.send_json(json!([{"id":"c2","channel":"/meta/connect","connectionType":"websocket","clientId":s2,"advice":{"timeout":0}}]));
    // c1 is answered before the socket leaves; c2 is answered by the other worker.
    assert_eq!(frame_ids(&mut ws), [json!("c1")]);
    assert_eq!(frame_ids(&mut ws), [json!("c2")]);
    assert!(server.worker_total("handoffs_in") > 0);
    // Neither session is listened for any more, so both expire: nothing leaked.
    server.wait_for("sessions", 0);
}

#[test]
fn held_bayeux_connects_on_a_socket_end_without_an_early_heartbeat() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.streams.heartbeat_interval = Duration::from_secs(60);
        c.sessions.bayeux_timeout = Duration::from_millis(100);
    });
    let mut ws = Ws::connect(server.addr, "/cometd");
    let client_id = handshake_ws(&mut ws);
    // Each held connect ends at its deadline, long before a heartbeat is due: the reply is the
    // next frame, with no ping ahead of it (this client never answers one).
    for round in 0..4 {
        let id = format!("c{round}");
        ws.send_json(json!([{"id":id,"channel":"/meta/connect","connectionType":"websocket","clientId":client_id}]));
        match ws.frame() {
            Some(Frame::Text(text)) => {
                let reply: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!((&reply[0]["id"], &reply[0]["successful"]), (&json!(id), &json!(true)), "{text}");
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}

#[test]
fn a_pushlet_request_naming_a_bayeux_client_is_an_invalid_id() {
    let server = TestServer::start();
    let mut c = server.client();
    let id = handshake_http(&mut c);
    for event in ["refresh", "hb", "leave"] {
        let r = server.client().get(&format!("/pushlet.srv?p_event={event}&p_id={id}"));
        assert_eq!(r.status, 400, "{event}: {}", r.text());
        assert!(r.text().contains(&format!("Invalid or expired id: {id}")), "{event}: {:?}", r.text());
    }
    // The Bayeux session is untouched and still answers its own client.
    let connect = json!([{"id":"2","channel":"/meta/connect","clientId":id,"connectionType":"long-polling",
        "advice":{"timeout":0}}]);
    let reply = c.post("/cometd", connect.to_string().as_bytes()).json();
    assert_eq!(reply[0]["successful"], true, "{reply}");
}
