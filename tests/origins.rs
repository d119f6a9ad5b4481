//! One origin policy for publishing on every surface (issue 14, item 8): a page from an origin
//! not in `--cors-publish-origins` cannot publish through `POST /pub`, Bayeux (POST, a script
//! tag's callback-polling GET, WebSocket) or Pushlet, whatever CORS headers would have said to
//! the browser afterwards. The same page, a listed origin, or a client that is no browser page
//! may. Each refused publish is checked to have stored nothing: a poll from a cursor taken
//! before it sees only the allowed message published after it.

mod util;

use serde_json::{json, Value};
use util::ws::Ws;
use util::{cursor, publish, pushlet_session_id, Client, TestServer};

const EVIL: &str = "Origin: https://evil.test\r\n";

fn server() -> TestServer {
    TestServer::with(|c| c.access.cors_publish_origins = vec!["https://pub.test".into()])
}

/// What history holds on `topic` after `start`: the data of each message.
fn published_since(server: &TestServer, topic: &str, start: &str) -> Vec<Value> {
    let body = server.client().get(&format!("{topic}?since={start}&timeout=0").replacen('/', "/sub/", 1)).json();
    body["messages"].as_array().expect("messages").iter().map(|m| m["data"].clone()).collect()
}

/// Asserts that only an allowed publish made after `start` reached history.
fn only_the_allowed_one(server: &TestServer, topic: &str, start: &str) {
    publish(server.addr, topic, b"allowed");
    assert_eq!(published_since(server, topic, start), [json!("allowed")]);
}

fn bayeux_post(c: &mut Client, batch: &Value, headers: &str) -> Vec<Value> {
    let body = batch.to_string();
    c.send_post("/cometd", body.as_bytes(), &format!("Content-Type: application/json\r\n{headers}"));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("a reply batch")
}

fn bayeux_client(c: &mut Client, headers: &str) -> String {
    let hs = json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]);
    let reply = bayeux_post(c, &hs, headers);
    reply[0]["clientId"].as_str().expect("clientId").to_owned()
}

#[test]
fn post_pub_from_another_site_is_refused_even_without_an_origin_header() {
    let server = server();
    let start = cursor(server.addr, "/o/native");
    let mut c = server.client();
    c.send_post("/pub/o/native", b"x", EVIL);
    assert_eq!(c.response().status, 403);
    // A script-less cross-site form post says where it came from with fetch metadata.
    c.send_post("/pub/o/native", b"x", "Sec-Fetch-Site: cross-site\r\nReferer: https://evil.test/f\r\n");
    assert_eq!(c.response().status, 403);
    c.send_post("/pub/o/native", b"y", "Origin: https://pub.test\r\n");
    assert_eq!(c.response().status, 201, "a listed origin may");
    assert_eq!(published_since(&server, "/o/native", &start), [json!("y")]);
}

#[test]
fn bayeux_over_http_follows_the_publish_origins() {
    let server = server();
    let start = cursor(server.addr, "/o/bayeux");
    let mut c = server.client();
    let client = bayeux_client(&mut c, EVIL);
    let msg = json!([{"channel": "/o/bayeux", "clientId": client, "data": {"x": 1}, "id": "p"}]);
    // A text/plain POST is a simple request: the browser sends it without asking first.
    let reply = bayeux_post(&mut c, &msg, EVIL);
    assert_eq!(reply[0]["successful"], false, "{reply:?}");
    assert!(reply[0]["error"].as_str().is_some_and(|e| e.starts_with("403:")), "{reply:?}");
    // A script tag's callback-polling GET carries no Origin; its fetch metadata does.
    let message: String = form_urlencoded::byte_serialize(msg.to_string().as_bytes()).collect();
    c.send(
        format!(
            "GET /cometd?message={message}&jsonp=cb HTTP/1.1\r\nHost: t\r\nSec-Fetch-Site: cross-site\r\n\
             Referer: https://evil.test/page\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.response();
    assert!(r.text().contains("403::"), "{}", r.text());
    only_the_allowed_one(&server, "/o/bayeux", &start);
    // The same batch from the listed origin is published.
    let reply = bayeux_post(&mut c, &msg, "Origin: https://pub.test\r\n");
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
}

#[test]
fn bayeux_over_websocket_follows_the_origin_of_its_upgrade() {
    let server = server();
    let start = cursor(server.addr, "/o/ws");
    let (mut ws, head) = Ws::try_connect(server.addr, "/cometd", EVIL);
    assert!(head.starts_with("HTTP/1.1 101"), "reading is allowed: {head}");
    ws.send_json(json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]}]));
    let client = ws.json()[0]["clientId"].as_str().expect("clientId").to_owned();
    ws.send_json(json!([{"channel": "/o/ws", "clientId": client, "data": 1, "id": "p"}]));
    let reply = ws.json();
    assert_eq!(reply[0]["successful"], false, "{reply}");
    assert!(reply[0]["error"].as_str().is_some_and(|e| e.starts_with("403:")), "{reply}");
    only_the_allowed_one(&server, "/o/ws", &start);
}

#[test]
fn pushlet_publishes_follow_the_publish_origins() {
    let server = server();
    let start = cursor(server.addr, "/o/pushlet");
    let mut c = server.client();
    let id = pushlet_session_id(c.get("/pushlet.srv?p_event=join&p_format=xml-strict").text());
    let path = format!("/pushlet.srv?p_event=publish&p_id={id}&p_subject=/o/pushlet&msg=hi&p_format=xml-strict");
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{EVIL}\r\n").as_bytes());
    let r = c.response();
    assert!(r.text().contains("p_event=\"nack\""), "{}", r.text());
    assert!(r.text().contains("origin not allowed to publish"), "{}", r.text());
    only_the_allowed_one(&server, "/o/pushlet", &start);
    // The page Halley itself served (same origin) may.
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nOrigin: http://t\r\n\r\n").as_bytes());
    assert!(c.response().text().contains("p_event=\"publish-ack\""));
}
