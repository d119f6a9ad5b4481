//! Tokens over real sockets: every surface with and without a token, each token source, 401 vs
//! 403, expiry ending a stream, a socket and a session, the loopback rule with auth off, and
//! `halley token`'s output accepted by the server.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use halley::auth::{mint_hs256, now_ms, Claims};
use halley::config::{Config, Secret};
use serde_json::{json, Value};
use util::ws::{Frame, Ws};
use util::{Client, StreamClient, TestServer, WAIT};

const SECRET: &str = "test-secret";

fn token(ttl_secs: u64, publish: &[&str], subscribe: &[&str]) -> String {
    let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
    let claims = Claims {
        exp: now_ms() / 1000 + ttl_secs,
        sub: Some("ann".into()),
        publish: list(publish),
        subscribe: list(subscribe),
    };
    mint_hs256(&Secret(SECRET.into()), &claims).expect("mint")
}

fn auth_on(config: &mut Config) {
    config.auth.secret = Some(Secret(SECRET.into()));
    config.auth.public_subscribe = vec!["/public/**".into()];
    config.network.raw_listen = Some("127.0.0.1:0".parse().expect("addr"));
}

fn request(server: &TestServer, method: &str, target: &str, headers: &str) -> util::Response {
    let mut c = server.client();
    let len = if method == "POST" { "Content-Length: 2\r\n" } else { "" };
    let body = if method == "POST" { "hi" } else { "" };
    c.send(format!("{method} {target} HTTP/1.1\r\nHost: t\r\n{len}{headers}\r\n{body}").as_bytes());
    c.response()
}

#[test]
fn native_publish_and_subscribe_401_without_token_403_when_not_covered() {
    let server = TestServer::with(auth_on);
    let chat = token(60, &["/chat/*"], &["/chat/*"]);
    let bearer = format!("Authorization: Bearer {chat}\r\n");

    let r = request(&server, "POST", "/pub/chat/a", "");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", r.headers);
    assert_eq!(request(&server, "POST", "/pub/chat/a", &bearer).status, 201);
    let r = request(&server, "POST", "/pub/news/a", &bearer);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.header("www-authenticate").is_none());

    // Reads: the header, the query parameter and the cookie all carry it.
    let poll = "/sub/chat/a?since=all&timeout=0";
    assert_eq!(request(&server, "GET", poll, "").status, 401);
    assert_eq!(request(&server, "GET", poll, &bearer).status, 200);
    assert_eq!(request(&server, "GET", &format!("{poll}&token={chat}"), "").status, 200);
    assert_eq!(request(&server, "GET", poll, &format!("Cookie: a=b; halley_token={chat}\r\n")).status, 200);
    // A wider pattern than the token's, or several topics of which one is not covered: 403.
    assert_eq!(request(&server, "GET", "/sub/chat/**?timeout=0", &bearer).status, 403);
    assert_eq!(request(&server, "GET", "/sub/chat/a,news?timeout=0", &bearer).status, 403);
    // The public patterns need no token.
    assert_eq!(request(&server, "GET", "/sub/public/x?timeout=0", "").status, 200);

    // Bad and expired tokens: 401 with invalid_token, and the reason never echoes the token.
    let expired = {
        let claims = Claims { exp: now_ms() / 1000 - 10, sub: None, publish: vec!["/**".into()], subscribe: vec![] };
        mint_hs256(&Secret(SECRET.into()), &claims).expect("mint")
    };
    let forged = token(60, &["/**"], &["/**"]).replacen('.', ".e30", 1);
    for bad in [expired, forged] {
        let r = request(&server, "POST", "/pub/chat/a", &format!("Authorization: Bearer {bad}\r\n"));
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.header("www-authenticate").is_some_and(|v| v.contains("invalid_token")));
        assert!(!r.text().contains(&bad[..20]), "{}", r.text());
    }
}

#[test]
fn a_stream_ends_with_an_expired_notice_when_its_token_expires() {
    let server = TestServer::with(auth_on);
    let short = token(2, &[], &["/chat/*"]);
    let mut sse = StreamClient::open(
        server.addr,
        &format!("GET /sub/chat/a?transport=sse&token={short} HTTP/1.1\r\nHost: t\r\n\r\n"),
    );
    assert_eq!(sse.head.status, 200);
    sse.read_until(|body| String::from_utf8_lossy(body).contains("event: expired"));
    assert!(sse.text().contains("token expired"), "{}", sse.text());
    sse.read_to_end();
}

#[test]
fn websocket_auth_command_per_subscription_errors_and_expiry_close() {
    let server = TestServer::with(auth_on);
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_json(json!({"op": "subscribe", "topics": ["/chat/a"], "id": 1}));
    let e = ws.json();
    assert_eq!((e["type"].as_str(), e["status"].as_u64()), (Some("error"), Some(401)), "{e}");
    ws.send_json(json!({"op": "auth", "token": token(3, &["/chat/*"], &["/chat/*"]), "id": 2}));
    let ack = ws.json();
    assert_eq!((ack["type"].as_str(), ack["sub"].as_str()), (Some("ack"), Some("ann")), "{ack}");
    ws.send_json(json!({"op": "subscribe", "topics": ["/chat/a"], "id": 3}));
    assert_eq!(ws.json()["type"], "ack");
    ws.send_json(json!({"op": "subscribe", "topics": ["/news"], "id": 4}));
    let e = ws.json();
    assert_eq!((e["status"].as_u64(), e["id"].as_u64()), (Some(403), Some(4)), "{e}");
    // The connection goes on: a publish it may make reaches its own subscription.
    ws.send_json(json!({"op": "publish", "topic": "/news", "data": "x", "id": 5}));
    assert_eq!(ws.json()["status"], 403);
    ws.send_json(json!({"op": "publish", "topic": "/chat/a", "data": "hello", "id": 6}));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(ws.json());
    }
    assert!(seen.iter().any(|v| v["data"] == "hello"), "{seen:?}");
    // Expiry: an `expired` notice, then close 1008 "token expired".
    let expired = ws.json();
    assert_eq!(expired["type"], "expired", "{expired}");
    match ws.frame() {
        Some(Frame::Close(code, reason)) => assert_eq!((code, reason.as_str()), (1008, "token expired")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn websocket_upgrade_token_and_bad_upgrade_token() {
    let server = TestServer::with(auth_on);
    let header = format!("Authorization: Bearer {}\r\n", token(60, &[], &["/chat/**"]));
    let (mut ws, head) = Ws::try_connect(server.addr, "/sub/chat/a?transport=websocket", &header);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(ws.json()["type"], "ack");
    let (_, head) = Ws::try_connect(server.addr, "/sub/chat/a?transport=websocket", "");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (_, head) = Ws::try_connect(server.addr, "/ws", "Authorization: Bearer nope\r\n");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

fn raw_line(sock: &mut TcpStream) -> Value {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while sock.read(&mut byte).expect("read") == 1 && byte[0] != 0 {
        out.push(byte[0]);
    }
    serde_json::from_slice(&out).expect("json line")
}

#[test]
fn raw_tcp_first_line_authenticates() {
    let server = TestServer::with(auth_on);
    let mut sock = TcpStream::connect(server.raw_addr.expect("raw")).expect("connect");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    sock.write_all(b"{\"op\":\"publish\",\"topic\":\"/chat/a\",\"data\":1}\n").expect("write");
    assert_eq!(raw_line(&mut sock)["status"], 401);
    let auth = json!({"op": "auth", "token": token(60, &["/chat/*"], &["/chat/*"])});
    sock.write_all(format!("{auth}\n").as_bytes()).expect("write");
    assert_eq!(raw_line(&mut sock)["op"], "auth");
    sock.write_all(b"{\"op\":\"subscribe\",\"topics\":[\"/chat/**\"]}\n").expect("write");
    assert_eq!(raw_line(&mut sock)["status"], 403);
    sock.write_all(b"{\"op\":\"publish\",\"topic\":\"/chat/a\",\"data\":1}\n").expect("write");
    assert_eq!(raw_line(&mut sock)["op"], "publish");
}

fn bayeux(c: &mut Client, batch: Value) -> Vec<Value> {
    let body = serde_json::to_vec(&batch).expect("json");
    c.send_post("/cometd", &body, "Content-Type: application/json\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice::<Vec<Value>>(&r.body).expect("reply batch")
}

fn handshake(c: &mut Client, ext: Value) -> Value {
    let msg = json!([{"id": "1", "version": "1.0", "channel": "/meta/handshake",
                      "supportedConnectionTypes": ["long-polling"], "ext": ext}]);
    bayeux(c, msg).remove(0)
}

#[test]
fn bayeux_ext_auth_token_on_handshake_and_per_subscribe_errors() {
    let server = TestServer::with(auth_on);
    let mut c = server.client();
    let bad = handshake(&mut c, json!({"auth": {"token": "nope"}}));
    assert_eq!(bad["successful"], false);
    assert!(bad["error"].as_str().is_some_and(|e| e.starts_with("401::")), "{bad}");

    let anonymous = handshake(&mut c, json!({}));
    let id = anonymous["clientId"].as_str().expect("id").to_owned();
    let sub = bayeux(&mut c, json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/chat/a"}]));
    assert!(sub[0]["error"].as_str().is_some_and(|e| e.starts_with("401:/chat/a:")), "{sub:?}");

    let ok = handshake(&mut c, json!({"auth": {"token": token(60, &["/chat/*"], &["/chat/*"])}}));
    assert_eq!(ok["successful"], true, "{ok}");
    let id = ok["clientId"].as_str().expect("id").to_owned();
    let sub = bayeux(&mut c, json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/chat/a"}]));
    assert_eq!(sub[0]["successful"], true, "{sub:?}");
    let sub = bayeux(&mut c, json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/chat/**"}]));
    assert!(sub[0]["error"].as_str().is_some_and(|e| e.starts_with("403:/chat/**:")), "{sub:?}");
    let publish = bayeux(&mut c, json!([{"channel": "/news", "clientId": id, "data": {"x": 1}}]));
    assert!(publish[0]["error"].as_str().is_some_and(|e| e.starts_with("403::")), "{publish:?}");
    let publish = bayeux(&mut c, json!([{"channel": "/chat/a", "clientId": id, "data": {"x": 1}}]));
    assert_eq!(publish[0]["successful"], true, "{publish:?}");
}

#[test]
fn a_bayeux_session_ends_when_its_token_expires() {
    let server = TestServer::with(auth_on);
    let mut c = server.client();
    let ok = handshake(&mut c, json!({"auth": {"token": token(2, &[], &["/chat/*"])}}));
    let id = ok["clientId"].as_str().expect("id").to_owned();
    let connect = |c: &mut Client| {
        bayeux(
            c,
            json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling",
                          "advice": {"timeout": 60000}}]),
        )
    };
    // The connect is held; it is answered when the token expires, and the session is gone
    // (with a 60 s token it would still be held when the client's read times out).
    let reply = connect(&mut c);
    assert!(reply[0]["error"].as_str().is_some_and(|e| e.starts_with("402")), "{reply:?}");
    assert_eq!(reply[0]["advice"]["reconnect"], "handshake");
}

#[test]
fn pushlet_join_cookie_token_is_kept_by_the_session() {
    let server = TestServer::with(auth_on);
    let cookie = format!("Cookie: halley_token={}\r\n", token(60, &["/chat/**"], &["/chat", "/chat/**"]));
    let join = request(&server, "GET", "/pushlet.srv?p_event=join&p_format=xml", &cookie);
    let id = util::pushlet_session_id(join.text());
    let ask = |query: &str| request(&server, "GET", &format!("/pushlet.srv?p_id={id}&{query}"), "").text().to_owned();
    assert!(ask("p_event=subscribe&p_subject=/chat").contains("subscribe-ack"));
    let refused = ask("p_event=subscribe&p_subject=/news");
    assert!(refused.contains("error") && refused.contains("403"), "{refused}");
    assert!(ask("p_event=publish&p_subject=/chat/a&text=hi").contains("publish-ack"));
    assert!(ask("p_event=publish&p_subject=/news&text=hi").contains("403"));

    let anonymous = request(&server, "GET", "/pushlet.srv?p_event=join&p_format=xml", "");
    let other = util::pushlet_session_id(anonymous.text());
    let refused = request(&server, "GET", &format!("/pushlet.srv?p_id={other}&p_event=subscribe&p_subject=/chat"), "")
        .text()
        .to_owned();
    assert!(refused.contains("401"), "{refused}");
    let bad = request(&server, "GET", "/pushlet.srv?p_event=join&token=nope", "").text().to_owned();
    assert!(bad.contains("error") && bad.contains("401"), "{bad}");
}

#[test]
fn unicast_topics_stay_private_with_a_token_for_everything() {
    let server = TestServer::with(auth_on);
    let all = format!("Authorization: Bearer {}\r\n", token(60, &["/**"], &["/**"]));
    let r = request(&server, "POST", "/pub/pushlet/to/abc", &all);
    assert!(r.status == 400 || r.status == 403, "{}", r.status);
    let r = request(&server, "GET", "/sub/pushlet/to/abc?timeout=0", &all);
    assert!(r.status == 400 || r.status == 403, "{}", r.status);
}

/// With auth off a publish needs a loopback peer. Every 127.0.0.0/8 address is loopback, so
/// the only honest non-loopback peer is this machine's own network address: the server listens
/// on all addresses and the client connects from and to that address. Without one (no network
/// interface) the test says so and checks only the loopback side; `auth::tests` covers the rule.
#[test]
fn without_auth_only_loopback_peers_publish() {
    let server = TestServer::with(|c| c.network.listen = "0.0.0.0:0".parse().expect("addr"));
    let port = server.addr.port();
    let mut local = Client::connect_from(SocketAddr::from(([127, 0, 0, 1], port)), [127, 0, 0, 2].into());
    assert_eq!(local.post("/pub/a", b"x").status, 201);
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    let own = probe.connect("192.0.2.1:9").ok().and_then(|()| probe.local_addr().ok()).map(|a| a.ip());
    let Some(ip) = own.filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) else {
        eprintln!("no non-loopback address on this machine: only the loopback side is checked here");
        return;
    };
    let mut remote = Client::connect_from(SocketAddr::new(ip, port), ip);
    let r = remote.post("/pub/a", b"x");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("loopback"), "{}", r.text());
    assert_eq!(remote.get("/sub/a?since=all&timeout=0").status, 200, "reading stays open");
}

#[test]
fn halley_token_output_is_accepted_by_the_server() {
    let server = TestServer::with(auth_on);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_halley"))
        .args(["token", "--publish", "/chat/**", "--subscribe", "/chat/**", "--ttl", "1h", "--sub", "ann"])
        .env("HALLEY_AUTH_SECRET", SECRET)
        .output()
        .expect("run halley token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let minted = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    let bearer = format!("Authorization: Bearer {minted}\r\n");
    assert_eq!(request(&server, "POST", "/pub/chat/x/y", &bearer).status, 201);
    assert_eq!(request(&server, "GET", "/sub/chat/**?timeout=0", &bearer).status, 200);
    assert_eq!(request(&server, "POST", "/pub/news", &bearer).status, 403);
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_halley"))
        .args(["token", "--publish", "/a"])
        .env_remove("HALLEY_AUTH_SECRET")
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
}

/// Every read checks the token, also the ones that are not a subscription: the self-refreshing
/// `/latest` page and the piggyback a publish reply carries.
#[test]
fn latest_page_and_piggyback_reads_need_the_rights_of_a_read() {
    let server = TestServer::with(auth_on);
    let chat = token(60, &["/chat/*"], &["/chat/*"]);
    let bearer = format!("Authorization: Bearer {chat}\r\n");
    assert_eq!(
        request(
            &server,
            "POST",
            "/pub/orders/acme",
            &format!("Authorization: Bearer {}\r\n", token(60, &["/orders/*"], &[]))
        )
        .status,
        201
    );

    assert_eq!(request(&server, "GET", "/latest?topic=/orders/acme", "").status, 401);
    assert_eq!(request(&server, "GET", "/latest?topic=/orders/acme", &bearer).status, 403);
    assert_eq!(request(&server, "GET", "/latest?topic=/chat/a", &bearer).status, 200);
    assert_eq!(request(&server, "GET", "/latest?topic=/public/news", "").status, 200);

    // Publishing to /chat/a may not read /orders/** in the same reply.
    let r = request(&server, "POST", "/pub/chat/a?cursor=all&topics=/orders/**", &bearer);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = request(&server, "POST", "/pub/chat/a?cursor=all&topics=/chat/*", &bearer);
    assert_eq!(r.status, 201, "{}", r.text());
}
