//! Bayeux 1.0 at `/cometd` over loopback with hand-built HTTP: every meta message and its reply
//! shape, the error and advice paths, held connects (answered by a publish, by their timeout,
//! by a newer connect), batching order, callback-polling, wildcards, `/service/echo`, session
//! expiry, chunked bodies, the `cometd` client's routes, sessions used from connections that
//! land on the other worker (hand-off), and one message space with the native API.

mod util;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{publish, Client, TestServer, WAIT};

/// A handshake as the `cometd` client sends it (spec, "Exchanges").
fn handshake_msg(id: &str, types: &[&str]) -> Value {
    json!({"id": id, "version": "1.0", "minimumVersion": "1.0", "channel": "/meta/handshake",
           "supportedConnectionTypes": types, "advice": {"timeout": 60000, "interval": 0}})
}

/// POSTs `batch` as JSON to `path` and returns the reply batch (asserting a 200 JSON array).
fn post(c: &mut Client, path: &str, batch: &Value) -> Vec<Value> {
    let body = serde_json::to_vec(batch).expect("json");
    c.send_post(path, &body, "Content-Type: application/json;charset=UTF-8\r\n");
    replies(c)
}

/// Reads one Bayeux reply: a 200 with a JSON array body.
fn replies(c: &mut Client) -> Vec<Value> {
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    match r.json() {
        Value::Array(replies) => replies,
        other => panic!("not a reply batch: {other}"),
    }
}

/// Handshakes on a fresh connection; returns the client id.
fn handshake(server: &TestServer) -> String {
    let mut c = server.client();
    let reply = post(&mut c, "/cometd", &json!([handshake_msg("1", &["long-polling"])]));
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    reply[0]["clientId"].as_str().expect("clientId").to_owned()
}

fn connect(client: &str, id: &str) -> Value {
    json!({"id": id, "channel": "/meta/connect", "connectionType": "long-polling", "clientId": client})
}

/// A connect with the client's own `advice.timeout: 0`: answered at once.
fn connect_now(client: &str, id: &str) -> Value {
    let mut msg = connect(client, id);
    msg["advice"] = json!({"timeout": 0});
    msg
}

fn subscribe(client: &str, id: &str, channel: &str) -> Value {
    json!({"id": id, "channel": "/meta/subscribe", "subscription": channel, "clientId": client})
}

fn publish_msg(client: &str, id: &str, channel: &str, data: Value) -> Value {
    json!({"id": id, "channel": channel, "data": data, "clientId": client})
}

/// Handshakes, subscribes to `channels` and makes the first (at once) connect; returns the id.
fn subscribed(server: &TestServer, channels: &[&str]) -> String {
    let client = handshake(server);
    let mut c = server.client();
    let subs: Vec<Value> = channels.iter().map(|ch| subscribe(&client, "s", ch)).collect();
    for reply in post(&mut c, "/cometd", &Value::Array(subs)) {
        assert_eq!(reply["successful"], true, "{reply}");
    }
    let first = post(&mut c, "/cometd", &json!([connect_now(&client, "c0")]));
    assert_eq!(first.last().map(|r| &r["successful"]), Some(&Value::Bool(true)), "{first:?}");
    client
}

/// The events of a reply batch: messages with `data` that answer nothing (no `successful`,
/// unlike a `/service` reply).
fn events(replies: &[Value]) -> Vec<&Value> {
    replies.iter().filter(|r| r.get("data").is_some() && r.get("successful").is_none()).collect()
}

/// Sends a held connect on a fresh connection and waits until the server has parked it.
fn held_connect(server: &TestServer, client: &str, id: &str, parked_before: u64) -> Client {
    let mut c = server.client();
    let body = serde_json::to_vec(&json!([connect(client, id)])).expect("json");
    c.send_post("/cometd", &body, "Content-Type: application/json\r\n");
    server.wait_for("parked", parked_before + 1);
    c
}

fn channel_and_data(v: &Value) -> (String, Value) {
    (v["channel"].as_str().expect("channel").to_owned(), v["data"].clone())
}

#[test]
fn handshake_connect_subscribe_publish_unsubscribe_disconnect() {
    let server = TestServer::start();
    let mut c = server.client();
    let hs = post(&mut c, "/cometd", &json!([handshake_msg("1", &["long-polling", "callback-polling"])]));
    assert_eq!(hs.len(), 1);
    let client = hs[0]["clientId"].as_str().expect("clientId").to_owned();
    assert!(client.len() >= 22 && client.bytes().all(|b| b.is_ascii_alphanumeric()), "{client}");
    assert_eq!(
        hs[0],
        json!({"id": "1", "channel": "/meta/handshake", "successful": true, "version": "1.0",
               "supportedConnectionTypes": hs[0]["supportedConnectionTypes"], "clientId": client,
               "advice": {"reconnect": "retry", "interval": 0, "timeout": 20000}})
    );
    let types = hs[0]["supportedConnectionTypes"].as_array().expect("types");
    assert!(types.contains(&json!("long-polling")) && types.contains(&json!("callback-polling")), "{types:?}");

    let r = post(&mut c, "/cometd", &json!([connect_now(&client, "2")]));
    assert_eq!(
        r,
        [json!({"id": "2", "channel": "/meta/connect", "clientId": client, "successful": true,
                "advice": {"reconnect": "retry", "interval": 0, "timeout": 20000}})]
    );
    let r = post(&mut c, "/cometd", &json!([subscribe(&client, "3", "/chat/demo")]));
    assert_eq!(
        r,
        [json!({"id": "3", "channel": "/meta/subscribe", "clientId": client, "successful": true,
                "subscription": "/chat/demo"})]
    );
    // A subscription given as an array is echoed as an array.
    let r = post(
        &mut c,
        "/cometd",
        &json!([{"id": "3b", "channel": "/meta/subscribe", "clientId": client, "subscription": ["/a/b", "/a/c"]}]),
    );
    assert_eq!(r[0]["subscription"], json!(["/a/b", "/a/c"]));
    assert_eq!(r[0]["successful"], true);

    // The publish acknowledgement carries no data (spec item 5); the publisher, subscribed,
    // gets its own message as an event in the next connect.
    let mut held = held_connect(&server, &client, "4", 0);
    let r = post(&mut c, "/cometd", &json!([publish_msg(&client, "5", "/chat/demo", json!({"text": "hello"}))]));
    assert_eq!(r, [json!({"id": "5", "channel": "/chat/demo", "clientId": client, "successful": true})]);
    let got = replies(&mut held);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["channel"], "/chat/demo");
    assert_eq!(got[0]["data"], json!({"text": "hello"}));
    assert!(got[0]["id"].is_string(), "events carry the message id: {}", got[0]);
    assert_eq!(got[1]["id"], "4");
    assert_eq!(got[1]["channel"], "/meta/connect");
    assert_eq!(got[1]["successful"], true);

    let r = post(
        &mut c,
        "/cometd",
        &json!([{"id": "6", "channel": "/meta/unsubscribe", "clientId": client,
                                             "subscription": "/chat/demo"}]),
    );
    assert_eq!(
        r,
        [json!({"id": "6", "channel": "/meta/unsubscribe", "clientId": client, "successful": true,
                "subscription": "/chat/demo"})]
    );
    // Unsubscribed: a publish no longer reaches this client.
    publish(server.addr, "/chat/demo", b"after");
    let r = post(&mut c, "/cometd", &json!([connect_now(&client, "7")]));
    assert!(events(&r).is_empty(), "{r:?}");

    let r = post(&mut c, "/cometd", &json!([{"id": "8", "channel": "/meta/disconnect", "clientId": client}]));
    assert_eq!(r, [json!({"id": "8", "channel": "/meta/disconnect", "clientId": client, "successful": true})]);
    server.wait_for("sessions", 0);
    let r = post(&mut c, "/cometd", &json!([connect_now(&client, "9")]));
    assert_eq!(r[0]["error"], "402::Unknown client");
}

#[test]
fn errors_and_their_advice() {
    let server = TestServer::start();
    let mut c = server.client();
    // Unknown client: 402 with advice to handshake again at once (spec item 6).
    let unknown = "AAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let r = post(&mut c, "/cometd", &json!([connect_now(unknown, "1"), subscribe(unknown, "2", "/a")]));
    assert_eq!(r.len(), 2, "each message gets its reply: {r:?}");
    for (reply, id, channel) in [(&r[0], "1", "/meta/connect"), (&r[1], "2", "/meta/subscribe")] {
        assert_eq!(reply["id"], id);
        assert_eq!(reply["channel"], channel);
        assert_eq!(reply["successful"], false);
        assert_eq!(reply["error"], "402::Unknown client");
        assert_eq!(reply["advice"], json!({"reconnect": "handshake", "interval": 0}));
    }
    // A malformed id is unknown too, not a crash or a hand-off to nowhere.
    let r = post(&mut c, "/cometd", &json!([connect_now("../x", "1")]));
    assert_eq!(r[0]["error"], "402::Unknown client");

    let client = handshake(&server);
    let cases = [
        (subscribe(&client, "a", "/meta/**"), "403:/meta/**:Subscription denied"),
        (subscribe(&client, "b", "/meta/connect"), "403:/meta/connect:Subscription denied"),
        (subscribe(&client, "c", "/service/**"), "403:/service/**:Subscription denied"),
        (subscribe(&client, "d", "no-slash"), "400:no-slash:Invalid channel"),
        (subscribe(&client, "e", "/a/*/b"), "400:/a/*/b:Invalid channel"),
        (subscribe(&client, "f", "/a//b"), "400:/a//b:Invalid channel"),
        (json!({"id": "g", "channel": "/meta/subscribe", "clientId": client}), "400:subscription:Missing"),
        (publish_msg(&client, "h", "/a/*", json!(1)), "400:/a/*:Invalid channel"),
        (publish_msg(&client, "i", "/meta/other", json!(1)), "404:/meta/other:Unknown channel"),
        (publish_msg(&client, "j", "/service/nope", json!(1)), "404:/service/nope:Unknown service"),
        (
            json!({"id": "k", "channel": "/meta/connect", "connectionType": "carrier-pigeon", "clientId": client}),
            "301:carrier-pigeon:Connection type not supported",
        ),
        (json!({"id": "l", "channel": "/meta/connect", "clientId": client}), "400:connectionType:Missing"),
    ];
    let batch: Vec<Value> = cases.iter().map(|(msg, _)| msg.clone()).collect();
    let r = post(&mut c, "/cometd", &Value::Array(batch));
    assert_eq!(r.len(), cases.len(), "{r:?}");
    for ((msg, want), reply) in cases.iter().zip(&r) {
        assert_eq!(reply["id"], msg["id"], "replies in batch order: {r:?}");
        assert_eq!(reply["successful"], false, "{msg} -> {reply}");
        let error = reply["error"].as_str().unwrap_or_else(|| panic!("{msg} -> {reply}"));
        assert!(error.starts_with(want), "{msg}: {error} (wanted {want}...)");
    }
    // None of that hurt the session: a good subscribe in the same batch as a bad one works.
    let r = post(&mut c, "/cometd", &json!([subscribe(&client, "m", "/meta/x"), subscribe(&client, "n", "/ok")]));
    assert_eq!((r[0]["successful"].clone(), r[1]["successful"].clone()), (json!(false), json!(true)));

    // Handshakes that cannot succeed.
    let r = post(&mut c, "/cometd", &json!([{"id": "1", "channel": "/meta/handshake", "version": "2.0"}]));
    assert_eq!(r[0]["successful"], false);
    assert!(r[0]["error"].as_str().is_some_and(|e| e.starts_with("300:2.0:")), "{r:?}");
    let r = post(&mut c, "/cometd", &json!([{"id": "1", "channel": "/meta/handshake", "version": "1.0"}]));
    assert!(r[0]["error"].as_str().is_some_and(|e| e.starts_with("400:supportedConnectionTypes:")), "{r:?}");
    let r = post(&mut c, "/cometd", &json!([handshake_msg("1", &["flash"])]));
    assert!(r[0]["error"].as_str().is_some_and(|e| e.starts_with("301:flash:")), "{r:?}");
    assert_eq!(r[0]["advice"]["reconnect"], "none");

    // Not a Bayeux batch at all: an HTTP error, and the connection stays usable.
    for body in [&b"not json"[..], b"[]", b"[1]", b"{\"id\":\"1\"}"] {
        let r = c.post("/cometd", body);
        assert_eq!(r.status, 400, "{:?}: {}", String::from_utf8_lossy(body), r.text());
    }
    let r = post(&mut c, "/cometd", &json!([connect_now(&client, "z")]));
    assert_eq!(r[0]["successful"], true);
}

#[test]
fn advice_timeout_zero_is_answered_at_once_and_a_single_object_is_a_batch() {
    let server = TestServer::start();
    let client = handshake(&server);
    let mut c = server.client();
    let started = Instant::now();
    // A lone message object (not an array) is accepted as a batch of one.
    let body = serde_json::to_vec(&connect_now(&client, "1")).expect("json");
    let r = c.post("/cometd", &body);
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "the server's 20 s hold was not applied");
    assert_eq!(r.json()[0]["successful"], true);
    assert_eq!(server.worker_total("parked"), 0);
}

#[test]
fn held_connect_is_answered_by_a_bayeux_publish_and_by_post_pub() {
    let server = TestServer::start();
    let sub = subscribed(&server, &["/chat/demo"]);
    let publisher = handshake(&server);

    let mut held = held_connect(&server, &sub, "h1", 0);
    let mut p = server.client();
    let r = post(&mut p, "/cometd", &json!([publish_msg(&publisher, "p1", "/chat/demo", json!("from bayeux"))]));
    assert_eq!(r[0]["successful"], true);
    let got = replies(&mut held);
    assert_eq!(
        events(&got).iter().map(|e| channel_and_data(e)).collect::<Vec<_>>(),
        [("/chat/demo".to_owned(), json!("from bayeux"))]
    );
    assert_eq!(got.last().map(|r| r["id"].clone()), Some(json!("h1")));

    let mut held = held_connect(&server, &sub, "h2", 0);
    let ack = publish(server.addr, "/chat/demo", br#"{"n":1}"#);
    let got = replies(&mut held);
    let evs = events(&got);
    assert_eq!(evs.len(), 1, "{got:?}");
    assert_eq!(evs[0]["id"], ack["id"], "the event id is the message id");
    // Published as text/plain, the payload is a string; the JSON text is not parsed.
    assert_eq!(evs[0]["data"], json!(r#"{"n":1}"#));
    server.wait_for("parked", 0);
}

#[test]
fn held_connect_is_answered_by_its_timeout() {
    let server = TestServer::with(|c| c.sessions.bayeux_timeout = Duration::from_millis(300));
    let client = handshake(&server);
    let mut c = server.client();
    let started = Instant::now();
    let r = post(&mut c, "/cometd", &json!([connect(&client, "1")]));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "held for the advice timeout, took {took:?}");
    assert!(took < WAIT, "{took:?}");
    assert_eq!(
        r,
        [json!({"id": "1", "channel": "/meta/connect", "clientId": client, "successful": true,
                "advice": {"reconnect": "retry", "interval": 0, "timeout": 300}})]
    );
    // A client asking for less than the server's timeout is held for its own.
    let mut msg = connect(&client, "2");
    msg["advice"] = json!({"timeout": 50});
    let started = Instant::now();
    let r = post(&mut c, "/cometd", &json!([msg]));
    assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
    assert_eq!(r[0]["successful"], true);
}

#[test]
fn a_second_connect_releases_the_first() {
    let server = TestServer::start();
    let client = subscribed(&server, &["/one"]);
    let mut first = held_connect(&server, &client, "c1", 0);
    let mut second = server.client();
    let body = serde_json::to_vec(&json!([connect(&client, "c2")])).expect("json");
    second.send_post("/cometd", &body, "");
    // The first is answered (successfully, with no events) while the second is held.
    let r = replies(&mut first);
    assert_eq!(
        r,
        [json!({"id": "c1", "channel": "/meta/connect", "clientId": client, "successful": true,
                          "advice": {"reconnect": "retry", "interval": 0, "timeout": 20000}})]
    );
    server.wait_for("parked", 1);
    publish(server.addr, "/one", b"x");
    let r = replies(&mut second);
    assert_eq!(events(&r).len(), 1, "{r:?}");
    assert_eq!(r.last().map(|m| m["id"].clone()), Some(json!("c2")));
    server.wait_for("parked", 0);
}

#[test]
fn a_faye_style_batch_is_processed_in_order() {
    let server = TestServer::start();
    let client = handshake(&server);
    let mut c = server.client();
    // Faye batches its connect with whatever else is queued and forces timeout 0 (spec item 3).
    let batch = json!([
        connect_now(&client, "1"),
        subscribe(&client, "2", "/f/demo"),
        publish_msg(&client, "3", "/f/demo", json!({"k": "v"})),
        {"id": "4", "channel": "/meta/unsubscribe", "clientId": client, "subscription": "/f/none"},
        {"id": "5", "channel": "/service/echo", "clientId": client, "data": [1, 2]},
    ]);
    let r = post(&mut c, "/cometd", &batch);
    let ids: Vec<&str> = r.iter().map(|m| m["id"].as_str().unwrap_or("-")).collect();
    // The connect's reply closes the batch, after the other replies (and any events).
    assert_eq!(&ids[..4], ["2", "3", "4", "5"], "{r:?}");
    assert_eq!(ids.last(), Some(&"1"));
    assert!(r.iter().all(|m| m["successful"] != false), "{r:?}");
    assert_eq!(r[3]["data"], json!([1, 2]));
    // The publisher's own message (subscribed earlier in the batch) comes with a connect.
    let mut got = events(&r).into_iter().map(channel_and_data).collect::<Vec<_>>();
    if got.is_empty() {
        let r = post(&mut c, "/cometd", &json!([connect(&client, "6")]));
        got = events(&r).into_iter().map(channel_and_data).collect();
    }
    assert_eq!(got, [("/f/demo".to_owned(), json!({"k": "v"}))]);

    // A batch that subscribes after its connect: the held connect already waits on the new
    // channel.
    let batch = json!([connect(&client, "7"), subscribe(&client, "8", "/f/later")]);
    let body = serde_json::to_vec(&batch).expect("json");
    c.send_post("/cometd", &body, "");
    server.wait_for("parked", 1);
    publish(server.addr, "/f/later", b"late");
    let r = replies(&mut c);
    let ids: Vec<&Value> = r.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids.first(), Some(&&json!("8")), "{r:?}");
    assert_eq!(ids.last(), Some(&&json!("7")));
    assert_eq!(
        events(&r).into_iter().map(channel_and_data).collect::<Vec<_>>(),
        [("/f/later".to_owned(), json!("late"))]
    );
}

#[test]
fn callback_polling_by_hand() {
    let server = TestServer::start();
    let mut c = server.client();
    let get = |c: &mut Client, batch: &Value, jsonp: Option<&str>| {
        let message: String = form_urlencoded::byte_serialize(batch.to_string().as_bytes()).collect();
        let mut path = format!("/cometd?message={message}");
        if let Some(cb) = jsonp {
            path.push_str("&jsonp=");
            path.extend(form_urlencoded::byte_serialize(cb.as_bytes()));
        }
        c.get(&path)
    };
    let unwrap = |r: &util::Response, cb: &str| -> Vec<Value> {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("text/javascript; charset=utf-8"));
        let text = r.text();
        let inner = text
            .strip_prefix(&format!("/**/{cb}("))
            .and_then(|t| t.strip_suffix(");"))
            .unwrap_or_else(|| panic!("not {cb}(...): {text}"));
        serde_json::from_str(inner).expect("JSON inside the callback")
    };
    let r = get(&mut c, &json!([handshake_msg("1", &["callback-polling"])]), Some("cb_1"));
    let hs = unwrap(&r, "cb_1");
    let client = hs[0]["clientId"].as_str().expect("clientId").to_owned();
    let mut sub = subscribe(&client, "2", "/jp/demo");
    sub["connectionType"] = json!("callback-polling");
    let mut first = connect_now(&client, "3");
    first["connectionType"] = json!("callback-polling");
    // Without jsonp= the callback is CometD's default.
    let r = unwrap(&get(&mut c, &json!([sub, first]), None), "jsonpcallback");
    assert_eq!(r.iter().map(|m| m["successful"].clone()).collect::<Vec<_>>(), [json!(true), json!(true)]);

    // A held callback-polling connect, answered by a publish whose payload would end a
    // <script> element: it arrives intact but escaped.
    let mut held = server.client();
    let mut connect_msg = connect(&client, "4");
    connect_msg["connectionType"] = json!("callback-polling");
    let message: String = form_urlencoded::byte_serialize(json!([connect_msg]).to_string().as_bytes()).collect();
    held.send(format!("GET /cometd?jsonp=cb_2&message={message} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    server.wait_for("parked", 1);
    publish(server.addr, "/jp/demo", "</script><b>é\u{2028}".as_bytes());
    let r = held.response();
    assert!(!r.text().contains("</script>"), "{}", r.text());
    let got = unwrap(&r, "cb_2");
    assert_eq!(got[0]["data"], "</script><b>é\u{2028}");
    assert_eq!(got[1]["id"], "4");

    // Hostile callbacks are refused before anything is done.
    for cb in ["alert(1)//", "a;b", "<script>", "x.y=1", ""] {
        let r = get(&mut c, &json!([connect_now(&client, "5")]), Some(cb));
        assert_eq!(r.status, 400, "{cb:?}: {}", r.text());
        assert!(!r.text().contains(cb) || cb.is_empty(), "the callback is not reflected: {}", r.text());
    }
    let r = c.get("/cometd?jsonp=cb");
    assert_eq!(r.status, 400, "no message= parameter");
}

#[test]
fn wildcard_subscriptions() {
    let server = TestServer::start();
    let client = subscribed(&server, &["/w/*", "/x/**"]);
    for topic in ["/w", "/w/a", "/w/a/b", "/x", "/x/a", "/x/a/b/c", "/y/a"] {
        publish(server.addr, topic, topic.as_bytes());
    }
    let mut c = server.client();
    let r = post(&mut c, "/cometd", &json!([connect_now(&client, "1")]));
    let got: Vec<String> = events(&r).iter().map(|e| e["channel"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(got, ["/w/a", "/x/a", "/x/a/b/c"], "{r:?}");
    // /** alone takes every broadcast channel, but never /meta or /service traffic.
    let all = subscribed(&server, &["/**"]);
    let r = post(&mut c, "/cometd", &json!([{"id": "e", "channel": "/service/echo", "clientId": all, "data": "x"}]));
    assert_eq!(r[0]["data"], "x");
    publish(server.addr, "/z", b"z");
    let r = post(&mut c, "/cometd", &json!([connect_now(&all, "2")]));
    let got: Vec<_> = events(&r).into_iter().map(channel_and_data).collect();
    assert_eq!(got, [("/z".to_owned(), json!("z"))]);
}

#[test]
fn service_echo_is_a_remote_call_and_never_broadcast() {
    let server = TestServer::start();
    let watcher = subscribed(&server, &["/service/echo"]);
    let client = handshake(&server);
    let mut c = server.client();
    let data = json!({"nested": {"list": [1, "two", null]}, "text": "naïve"});
    let r = post(
        &mut c,
        "/cometd",
        &json!([{"id": "42", "channel": "/service/echo", "clientId": client,
                                             "data": data}]),
    );
    assert_eq!(
        r,
        [json!({"id": "42", "channel": "/service/echo", "clientId": client, "successful": true,
                          "data": data})]
    );
    // The watcher's service "subscription" was accepted but records nothing: it hears nothing.
    publish(server.addr, "/other", b"sentinel");
    let r = post(&mut c, "/cometd", &json!([connect_now(&watcher, "1")]));
    assert!(events(&r).is_empty(), "{r:?}");
}

#[test]
fn a_session_expires_after_max_interval_without_a_connect() {
    let server = TestServer::with(|c| c.sessions.bayeux_max_interval = Duration::from_millis(300));
    let client = handshake(&server);
    assert_eq!(server.worker_total("sessions"), 1);
    server.wait_for("sessions", 0);
    let mut c = server.client();
    let r = post(&mut c, "/cometd", &json!([connect_now(&client, "1")]));
    assert_eq!(r[0]["error"], "402::Unknown client");
    assert_eq!(r[0]["advice"], json!({"reconnect": "handshake", "interval": 0}));
}

#[test]
fn a_held_connect_keeps_the_session_alive() {
    let server = TestServer::with(|c| {
        c.sessions.bayeux_max_interval = Duration::from_millis(200);
        c.sessions.bayeux_timeout = Duration::from_millis(600);
    });
    let client = handshake(&server);
    let mut c = server.client();
    // Held three times longer than maxInterval: the session must not expire under it.
    let r = post(&mut c, "/cometd", &json!([connect(&client, "1")]));
    assert_eq!(r[0]["successful"], true, "{r:?}");
    let r = post(&mut c, "/cometd", &json!([connect_now(&client, "2")]));
    assert_eq!(r[0]["successful"], true, "{r:?}");
}

#[test]
fn chunked_bodies_content_types_and_the_cometd_routes() {
    let server = TestServer::start();
    let mut c = server.client();
    // The cometd client posts chunked bodies to /cometd/handshake (spec items 1, 2).
    let body = json!([handshake_msg("1", &["long-polling"])]).to_string();
    let (a, b) = body.split_at(body.len() / 2);
    c.send(
        format!(
            "POST /cometd/handshake HTTP/1.1\r\nHost: t\r\nContent-Type: application/json;charset=UTF-8\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .as_bytes(),
    );
    let r = replies(&mut c);
    let client = r[0]["clientId"].as_str().expect("clientId").to_owned();
    for (path, msg) in [
        ("/cometd/connect", connect_now(&client, "2")),
        ("/cometd/", subscribe(&client, "3", "/r/a")),
        ("/cometd", publish_msg(&client, "4", "/r/a", json!(4))),
        ("/cometd/disconnect", json!({"id": "5", "channel": "/meta/disconnect", "clientId": client})),
    ] {
        // Content-Type is not required to be JSON: text/plain (a CORS "simple" request) works.
        let body = serde_json::to_vec(&json!([msg])).expect("json");
        c.send_post(path, &body, "Content-Type: text/plain;charset=UTF-8\r\n");
        let r = replies(&mut c);
        assert_eq!(r[0]["successful"], true, "{path}: {r:?}");
    }
}

#[test]
fn cors_for_browsers() {
    let server = TestServer::start();
    let mut c = server.client();
    c.send(
        b"OPTIONS /cometd/handshake HTTP/1.1\r\nHost: t\r\nOrigin: http://app.example\r\n\
          Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://app.example"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(r.header("access-control-allow-methods").is_some_and(|m| m.contains("POST") && m.contains("GET")));
    let allowed = r.header("access-control-allow-headers").unwrap_or("").to_ascii_lowercase();
    for h in ["accept", "authorization", "content-type", "pragma", "x-requested-with"] {
        assert!(allowed.contains(h), "{h} in {allowed}");
    }
    let body = serde_json::to_vec(&json!([handshake_msg("1", &["long-polling"])])).expect("json");
    c.send_post("/cometd/handshake", &body, "Origin: http://app.example\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://app.example"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
}

#[test]
fn a_session_used_from_many_connections_is_handed_to_its_owner() {
    let server = TestServer::start();
    let client = subscribed(&server, &["/h/demo"]);
    // Fresh connections land on either worker (SO_REUSEPORT hashing); the ones that reach the
    // other worker are handed to the session's owner. 40 connections all on one worker would
    // be a 1 in 2^39 chance.
    const N: usize = 40;
    for i in 0..N {
        let mut c = server.client();
        let r = post(&mut c, "/cometd", &json!([publish_msg(&client, &format!("p{i}"), "/h/demo", json!(i))]));
        assert_eq!(r, [json!({"id": format!("p{i}"), "channel": "/h/demo", "clientId": client, "successful": true})]);
    }
    let stats = server.stats();
    let handoffs: u64 =
        stats["workers"].as_array().expect("workers").iter().map(|w| w["handoffs_in"].as_u64().unwrap_or(0)).sum();
    assert!(handoffs > 0, "no request reached the other worker: {stats}");
    // Every publish arrives, once, in order, through held connects on fresh connections too.
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < N {
        assert!(Instant::now() < deadline, "got only {got:?}");
        let mut c = server.client();
        let r = post(&mut c, "/cometd", &json!([connect(&client, "c")]));
        assert_eq!(r.last().map(|m| m["successful"].clone()), Some(json!(true)), "{r:?}");
        got.extend(events(&r).iter().map(|e| e["data"].as_u64().expect("number")));
    }
    assert_eq!(got, (0..N as u64).collect::<Vec<_>>());
}

#[test]
fn one_message_space_with_the_native_api() {
    let server = TestServer::start();
    // POST /pub reaches a Bayeux subscriber of /chat/**.
    let client = subscribed(&server, &["/chat/**"]);
    let mut held = held_connect(&server, &client, "1", 0);
    let ack = publish(server.addr, "/chat/demo", b"from the backend");
    let r = replies(&mut held);
    let evs = events(&r);
    assert_eq!(evs.len(), 1, "{r:?}");
    assert_eq!(channel_and_data(evs[0]), ("/chat/demo".to_owned(), json!("from the backend")));
    assert_eq!(evs[0]["id"], ack["id"]);

    // A Bayeux publish reaches a native /sub long-poll, its data embedded as JSON.
    let mut native = server.client();
    native.send(b"GET /sub/chat/demo HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("parked", 1);
    let mut c = server.client();
    let r = post(&mut c, "/cometd", &json!([publish_msg(&client, "2", "/chat/demo", json!({"text": "hi"}))]));
    assert_eq!(r[0]["successful"], true);
    let body = native.response().json();
    let msgs = body["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 1, "{body}");
    assert_eq!(msgs[0]["data"], json!({"text": "hi"}), "{body}");
}

#[test]
fn ack_extension_resends_a_lost_batch() {
    let server = TestServer::start();
    let mut c = server.client();
    let mut hs = handshake_msg("1", &["long-polling"]);
    hs["ext"] = json!({"ack": true});
    let r = post(&mut c, "/cometd", &json!([hs]));
    assert_eq!(r[0]["ext"], json!({"ack": true}), "{r:?}");
    let client = r[0]["clientId"].as_str().expect("clientId").to_owned();
    let with_ack = |id: &str, ack: i64, now: bool| {
        let mut msg = if now { connect_now(&client, id) } else { connect(&client, id) };
        msg["ext"] = json!({"ack": ack});
        msg
    };
    let r = post(&mut c, "/cometd", &json!([subscribe(&client, "2", "/ack/demo"), with_ack("3", -1, true)]));
    let first_batch = r.last().expect("connect")["ext"]["ack"].as_i64().expect("ext.ack");

    publish(server.addr, "/ack/demo", b"one");
    let r = post(&mut c, "/cometd", &json!([with_ack("4", first_batch, false)]));
    assert_eq!(events(&r).iter().map(|e| e["data"].clone()).collect::<Vec<_>>(), [json!("one")]);
    let lost_batch = r.last().expect("connect")["ext"]["ack"].as_i64().expect("ext.ack");
    assert!(lost_batch > first_batch);

    // That reply was "lost": the client acknowledges only the batch before it, so "one" is
    // sent again at once (no hold), ahead of anything new.
    let started = Instant::now();
    let r = post(&mut c, "/cometd", &json!([with_ack("5", first_batch, false)]));
    assert!(started.elapsed() < Duration::from_secs(5), "a re-send is not held");
    assert_eq!(events(&r).iter().map(|e| e["data"].clone()).collect::<Vec<_>>(), [json!("one")]);
    let resent_batch = r.last().expect("connect")["ext"]["ack"].as_i64().expect("ext.ack");

    // Acknowledged: nothing comes again.
    let r = post(&mut c, "/cometd", &json!([with_ack("6", resent_batch, true)]));
    assert!(events(&r).is_empty(), "{r:?}");
}

#[test]
fn a_connect_batched_with_a_disconnect_is_answered() {
    // Faye sends [connect (timeout 0), disconnect] when it leaves just as a connect is due; the
    // request used to get no response at all (the session was gone when the held connect was
    // to be parked), so Faye's disconnect never completed.
    let server = TestServer::start();
    let mut c = server.client();
    for hold in [false, true] {
        let client = handshake(&server);
        let first = if hold { connect(&client, "1") } else { connect_now(&client, "1") };
        let bye = json!({"id": "2", "channel": "/meta/disconnect", "clientId": client});
        let r = post(&mut c, "/cometd", &json!([first, bye]));
        let ids: Vec<&Value> = r.iter().map(|m| &m["id"]).collect();
        assert_eq!(ids, [&json!("1"), &json!("2")], "hold {hold}: {r:?}");
        assert!(r.iter().all(|m| m["successful"] == true), "hold {hold}: {r:?}");
        server.wait_for("sessions", 0);
        let r = post(&mut c, "/cometd", &json!([connect_now(&client, "3")]));
        assert_eq!(r[0]["error"], "402::Unknown client", "hold {hold}");
    }
    assert_eq!(server.worker_total("parked"), 0);
}

#[test]
fn two_connects_in_one_batch_both_get_replies() {
    let server = TestServer::start();
    let a = handshake(&server);
    let b = handshake(&server);
    let mut c = server.client();
    // Same client twice: the first is answered at once, the second is the one held.
    let r = post(&mut c, "/cometd", &json!([connect_now(&a, "1"), connect_now(&a, "2")]));
    let ids: Vec<&Value> = r.iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, [&json!("1"), &json!("2")], "{r:?}");
    // Two clients in one batch (no real client does this) must not lose a reply or panic;
    // the second id may belong to the other worker, so only the first client's session is
    // certain to be found here.
    let r = post(&mut c, "/cometd", &json!([connect_now(&a, "3"), connect_now(&b, "4")]));
    let mut ids: Vec<&str> = r.iter().map(|m| m["id"].as_str().unwrap_or("-")).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["3", "4"], "{r:?}");
    assert!(r.iter().any(|m| m["id"] == "3" && m["successful"] == true), "{r:?}");
}

#[test]
fn shutdown_answers_held_connects() {
    let mut server = TestServer::start();
    let client = subscribed(&server, &["/s/demo"]);
    let mut held = held_connect(&server, &client, "1", 0);
    server.shutdown();
    let r = replies(&mut held);
    assert_eq!(r.last().map(|m| (m["id"].clone(), m["successful"].clone())), Some((json!("1"), json!(true))), "{r:?}");
    assert!(held.is_closed(), "the connection closes after the last reply");
}
