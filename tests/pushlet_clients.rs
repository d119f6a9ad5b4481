//! The original Pushlet 2.0.4 clients against Halley, over loopback: each test sends the exact
//! requests `ajax-pushlet-client.js` and the iframe client (`js-pushlet-client.js`) send (the
//! AJAX client's `?p_event=X&<query>&p_id=Y&time=<ms>` URLs, its `PL.publish` query appended
//! unencoded) and reads the replies the way they do (shared/specs/pushlet.md, "What kills the
//! 2.0.4 AJAX client"). Issue 14: leave while a refresh waits (item 13), odd field names
//! (item 14), leave on an iframe stream (item 15), and what a session id grants and a `p_from`
//! does not (item 9).

mod util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use util::ws::Ws;
use util::{publish, Client, Response, StreamClient, TestServer};

type Fields = BTreeMap<String, String>;

// ---------------------------------------------------------------------------------------------
// Item 13: leave while a refresh is waiting, then join again on the same page.

#[test]
fn leave_while_a_refresh_waits_lets_the_ajax_page_join_again() {
    let server = TestServer::start();
    let mut page = AjaxPage::new(server.addr);
    page.join_listen("/chat");
    // Where a pull client spends most of its time: its refresh parked on the server.
    let mut refresh = page.send_refresh();
    server.wait_for("parked", 1);
    page.leave();
    let answered = refresh.response();
    page.on_response(&answered);
    assert!(page.state >= READY, "the waiting refresh killed the client: state {}", page.state);
    assert!(!page.refresh_scheduled, "nothing may start a refresh loop after leave");

    // `joinListen()` again on the same page: it sends, and the new session gets data.
    page.join_listen("/chat");
    assert_eq!(page.state, LISTENING);
    publish(server.addr, "/chat", b"welcome back");
    let events = page.refresh_round();
    assert_eq!(values(&events, "p_data"), ["welcome back"]);
    assert!(page.state >= READY);
}

#[test]
fn leave_then_rejoin_works_in_the_raw_example_too() {
    // The raw AJAX example drives the same requests by hand, with a poll in between.
    let server = TestServer::start();
    let mut page = AjaxPage::new(server.addr);
    for round in 0..3 {
        page.join_listen("/raw");
        let mut refresh = page.send_refresh();
        server.wait_for("parked", 1);
        page.leave();
        page.on_response(&refresh.response());
        assert!(page.state >= READY, "round {round}: state {}", page.state);
        server.wait_for("parked", 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Item 15: leave ends the iframe client's stream silently.

#[test]
fn leave_ends_the_iframe_stream_without_an_abort() {
    let server = TestServer::start();
    let mut listen =
        StreamClient::open(server.addr, &get("p_event=join-listen&p_format=js&p_mode=stream&p_subject=/frame&time=1"));
    listen.read_until_count("parent.push(", 2);
    let id = js_events(&listen.text())[0]["p_id"].clone();
    let ack = control(server.addr, &format!("p_event=leave&p_id={id}&time=2"));
    assert_eq!(kinds(&ack), ["leave-ack"]);
    listen.read_to_end();
    let page = listen.text();
    assert_eq!(kinds(&js_events(&page)), ["join-listen-ack", "hb"], "no onAbort: {page}");
    assert!(page.ends_with("</body></html>"), "{page}");
}

#[test]
fn a_newer_listen_ends_the_older_stream_without_an_abort() {
    let server = TestServer::start();
    let id = control(server.addr, "p_event=join&p_format=js&time=1")[0]["p_id"].clone();
    let listen = format!("p_event=listen&p_id={id}&p_mode=stream&p_subject=/frame");
    let mut old = StreamClient::open(server.addr, &get(&listen));
    old.read_until_count("parent.push(", 2);
    let mut new = StreamClient::open(server.addr, &get(&listen));
    new.read_until_count("parent.push(", 2);
    old.read_to_end();
    assert_eq!(kinds(&js_events(&old.text())), ["listen-ack", "hb"], "{}", old.text());
}

// ---------------------------------------------------------------------------------------------
// Item 14: the chat example's text, appended to the query unencoded.

#[test]
fn tom_and_jerry_arrives_as_the_original_delivered_it() {
    let server = TestServer::start();
    let mut reader = AjaxPage::new(server.addr);
    reader.join_listen("/pushlet/chat");
    let mut frame =
        StreamClient::open(server.addr, &get("p_event=join-listen&p_format=js&p_mode=stream&p_subject=/pushlet/chat"));
    frame.read_until_count("parent.push(", 2);
    let mut writer = AjaxPage::new(server.addr);
    writer.join_listen("/elsewhere");
    // The browser percent-encodes spaces, quotes and angle brackets in the URL; `&` and `=`
    // stay, so "tom & jerry" makes a field named " jerry".
    let typed = ["tom%20&%20jerry", "x&%3C/script%3E%3Cb%20a=%22&%22c=1&caf%C3%A9=2&=3"];
    for text in typed {
        let events = writer.request("publish", &format!("p_subject=/pushlet/chat&nick=tom&msg={text}"));
        assert_eq!(kinds(&events), ["publish-ack"], "the sender's client must live on");
    }
    assert!(writer.state >= READY);
    // Stored in order, so once this native publish is acknowledged both events are stored.
    publish(server.addr, "/pushlet/chat", b"end");
    let events = reader.refresh_round();
    assert_eq!(values(&events, "msg"), ["tom ", "x", "<none>"]);
    for ev in &events[..2] {
        let names: Vec<&str> = ev.keys().map(String::as_str).collect();
        // `time` is the client's cache-buster; like every other field it travels with the event.
        let want = ["msg", "nick", "p_event", "p_from", "p_id", "p_seq", "p_sid", "p_subject", "p_time", "time"];
        assert_eq!(names, want, "the odd names were dropped");
    }
    // The iframe listener's page stays one well-formed script per event.
    frame.read_until_count("parent.push(", 5);
    let js = js_events(&frame.text());
    assert_eq!(values(&js[2..], "msg"), ["tom ", "x", "<none>"]);
    assert_eq!(frame.text().matches("<script").count(), frame.text().matches("</script>").count());
}

// ---------------------------------------------------------------------------------------------
// Item 9: the sender shown to others is not a capability; unicasts are private and unforgeable.

#[test]
fn p_from_is_a_public_id_that_grants_nothing() {
    let server = TestServer::start();
    let mut reader = AjaxPage::new(server.addr);
    reader.join_listen("/room");
    let mut victim = AjaxPage::new(server.addr);
    victim.join_listen("/room");
    victim.request("publish", "p_subject=/room&msg=hello");
    let events = reader.refresh_round();
    let from = events[0]["p_from"].clone();
    let victim_id = victim.session_id.clone().expect("joined");
    assert_ne!(from, victim_id);
    // Everything a session id allows, tried with the p_from: none of it reaches the victim.
    for event in ["listen", "refresh", "subscribe&p_subject=/x", "publish&p_subject=/room&msg=x", "leave", "hb"] {
        let r = Client::connect(server.addr).get(&format!("/pushlet.srv?p_event={event}&p_id={from}"));
        assert_eq!(r.status, 400, "{event}: {}", r.text());
        assert!(r.text().contains("Invalid or expired id"), "{event}: {}", r.text());
    }
    // A p_from sent by the client is not what others see.
    victim.request("publish", &format!("p_subject=/room&msg=again&p_from={victim_id}"));
    let events = reader.refresh_round();
    assert_eq!(values(&events, "p_from"), [from.as_str()]);
    // And the victim's session is untouched.
    assert_eq!(kinds(&victim.request("hb", "")), ["hb-ack"]);
}

#[test]
fn unicasts_are_private_to_their_session() {
    let server = TestServer::start();
    let mut target = AjaxPage::new(server.addr);
    target.join_listen("/room");
    let mut sender = AjaxPage::new(server.addr);
    sender.join_listen("/room");
    target.request("publish", "p_subject=/room&msg=hi");
    let to = sender.refresh_round()[0]["p_from"].clone();
    let events = sender.request("publish", &format!("p_to={to}&msg=psst"));
    assert_eq!(kinds(&events), ["publish-ack"]);
    let public = publish(server.addr, "/marker", b"public");
    // Its session gets it.
    let events = target.refresh_round();
    assert_eq!(values(&events, "msg"), ["hi", "psst"]);

    // Nobody else reads it: not history through any pattern, not the topic by name.
    let r = Client::connect(server.addr).get("/sub/**?since=all");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen: Vec<String> =
        r.json()["messages"].as_array().expect("messages").iter().map(|m| m["topic"].to_string()).collect();
    assert!(seen.iter().all(|t| !t.contains("/pushlet/to/")), "{seen:?}");
    assert_eq!(r.json()["messages"].as_array().map(Vec::len), Some(2), "{}", r.text());
    assert!(r.text().contains(public["id"].as_str().expect("id")));
    for path in [format!("/sub/pushlet/to/{to}"), "/sub/pushlet/to/*".to_owned(), format!("/sub/a,/pushlet/to/{to}")] {
        for accept in ["", "Accept: text/event-stream\r\n"] {
            let mut c = Client::connect(server.addr);
            c.send(format!("GET {path}?since=all HTTP/1.1\r\nHost: t\r\n{accept}\r\n").as_bytes());
            let r = c.response();
            assert_eq!(r.status, 400, "{path} {accept}: {}", r.text());
            assert!(r.text().contains("private"), "{path}: {}", r.text());
        }
    }
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_json(json!({"op": "subscribe", "topics": [format!("/pushlet/to/{to}")], "since": "all"}));
    assert_eq!(ws.json()["type"], "error");
    // A Pushlet session cannot subscribe to it either.
    let events = sender.request("subscribe", &format!("p_subject=/pushlet/to/{to}"));
    assert_eq!(kinds(&events), ["nack"]);
}

#[test]
fn unicasts_and_senders_cannot_be_forged() {
    let server = TestServer::start();
    let mut target = AjaxPage::new(server.addr);
    target.join_listen("/room");
    target.request("publish", "p_subject=/room&msg=me");
    let to = target.refresh_round()[0]["p_from"].clone();

    let mut c = Client::connect(server.addr);
    c.send_post(&format!("/pub/pushlet/to/{to}"), br#"{"msg":"forged"}"#, "Content-Type: application/json\r\n");
    let r = c.response();
    assert_eq!(r.status, 400, "{}", r.text());
    for body in [format!(r#"{{"msg":"forged","p_from":"{to}"}}"#), format!(r#"{{"p\u005ffrom":"{to}"}}"#)] {
        let mut c = Client::connect(server.addr);
        c.send_post("/pub/room", body.as_bytes(), "Content-Type: application/json\r\n");
        let r = c.response();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains("p_from"), "{}", r.text());
    }
    let mut ws = Ws::connect(server.addr, "/ws");
    ws.send_json(json!({"op": "publish", "topic": format!("/pushlet/to/{to}"), "data": {"msg": "forged"}}));
    assert_eq!(ws.json()["type"], "error");
    ws.send_json(json!({"op": "publish", "topic": "/room", "data": {"msg": "forged", "p_from": to}}));
    assert_eq!(ws.json()["type"], "error");

    publish(server.addr, "/room", b"real");
    let events = target.refresh_round();
    assert_eq!(values(&events, "p_data"), ["real"], "nothing forged arrived: {events:?}");
}

// ---------------------------------------------------------------------------------------------
// The AJAX client, reduced to what decides whether it lives: its state and refresh timer.

const ERROR: i32 = -2;
const ABORT: i32 = -1;
const READY: i32 = 2;
const JOINED: i32 = 3;
const LISTENING: i32 = 4;

/// `ajax-pushlet-client.js`: `p_format=xml-strict&p_mode=pull`, one state number, fatal on
/// `abort`, `error` or any non-200 reply, and a refresh timer armed by each `refresh` event.
struct AjaxPage {
    addr: SocketAddr,
    state: i32,
    session_id: Option<String>,
    refresh_scheduled: bool,
}

impl AjaxPage {
    fn new(addr: SocketAddr) -> AjaxPage {
        AjaxPage { addr, state: READY, session_id: None, refresh_scheduled: false }
    }

    /// `PL._doRequest`'s URL: `?p_event=X&<query>&p_id=Y&time=<ms>`.
    fn url(&self, event: &str, query: &str) -> String {
        let mut url = format!("/pushlet.srv?p_event={event}");
        if !query.is_empty() {
            url = format!("{url}&{query}");
        }
        if let Some(id) = &self.session_id {
            url = format!("{url}&p_id={id}");
        }
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        format!("{url}&time={ms}")
    }

    /// `PL.joinListen(subject)`.
    fn join_listen(&mut self, subject: &str) {
        assert!(self.state >= 0, "died ({}): joinListen sends nothing", self.state);
        self.session_id = None;
        self.request("join-listen", &format!("p_format=xml-strict&p_mode=pull&p_subject={subject}"));
    }

    /// `PL.leave()`: the client is "ready" at once, before the reply.
    fn leave(&mut self) {
        self.state = READY;
        self.refresh_scheduled = false;
        self.request("leave", "");
    }

    /// One request on its own connection (XMLHttpRequest), its reply handled.
    fn request(&mut self, event: &str, query: &str) -> Vec<Fields> {
        assert!(self.state >= 0, "died ({})", self.state);
        let r = Client::connect(self.addr).get(&self.url(event, query));
        self.on_response(&r)
    }

    /// Sends the refresh the armed timer sends, and returns the connection it waits on.
    fn send_refresh(&mut self) -> Client {
        assert!(self.refresh_scheduled && self.state == LISTENING, "no refresh would be sent");
        self.refresh_scheduled = false;
        let mut c = Client::connect(self.addr);
        let url = self.url("refresh", "");
        c.send(format!("GET {url} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        c
    }

    /// One refresh round: its data events.
    fn refresh_round(&mut self) -> Vec<Fields> {
        let reply = self.send_refresh().response();
        let events = self.on_response(&reply);
        events.into_iter().filter(|e| e["p_event"] == "data").collect()
    }

    /// `_getXML`'s callback and `PL._onEvent` for every event.
    fn on_response(&mut self, r: &Response) -> Vec<Fields> {
        if r.status != 200 {
            self.state = ERROR;
            return Vec::new();
        }
        assert!(r.header("content-type").is_some_and(|ct| ct.starts_with("text/xml")), "responseXML needs XML");
        let events = xml_events(r.text());
        for ev in &events {
            match ev["p_event"].as_str() {
                // The timer is armed whatever the state; when it fires, `_doRequest('refresh')`
                // sends only while listening (`send_refresh`).
                "refresh" => self.refresh_scheduled = true,
                "error" => self.state = ERROR,
                "abort" => self.state = ABORT,
                "join-ack" => {
                    self.state = JOINED;
                    self.session_id = ev.get("p_id").cloned();
                }
                "join-listen-ack" => {
                    self.state = LISTENING;
                    self.session_id = ev.get("p_id").cloned();
                }
                "listen-ack" => self.state = LISTENING,
                _ => {}
            }
        }
        events
    }
}

// ---------------------------------------------------------------------------------------------
// Wire helpers.

fn get(query: &str) -> String {
    format!("GET /pushlet.srv?{query} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// A control request (the iframe client's control frame), its events in any format.
fn control(addr: SocketAddr, query: &str) -> Vec<Fields> {
    let r = Client::connect(addr).get(&format!("/pushlet.srv?{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    if r.header("content-type").is_some_and(|ct| ct.starts_with("text/html")) {
        js_events(r.text())
    } else {
        xml_events(r.text())
    }
}

/// The `<event .../>` elements of an XML reply, attribute values unescaped. Panics on markup
/// an XML parser would refuse (an unescaped `<` or a quote inside a value).
fn xml_events(text: &str) -> Vec<Fields> {
    let mut events = Vec::new();
    let mut rest = text.trim_start_matches("<pushlet>");
    while let Some(at) = rest.find("<event ") {
        let end = rest[at..].find("/>").map(|e| at + e).unwrap_or_else(|| panic!("unterminated event: {rest}"));
        let mut attrs = &rest[at + "<event ".len()..end];
        let mut ev = Fields::new();
        while let Some(eq) = attrs.find("=\"") {
            let name = attrs[..eq].trim();
            let close = attrs[eq + 2..].find('"').unwrap_or_else(|| panic!("unterminated value: {attrs}"));
            let raw = &attrs[eq + 2..eq + 2 + close];
            assert!(!raw.contains('<'), "a raw '<' in an attribute: {raw}");
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)), "name {name:?}");
            let value = raw
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&#9;", "\t")
                .replace("&#10;", "\n")
                .replace("&#13;", "\r")
                .replace("&amp;", "&");
            ev.insert(name.to_owned(), value);
            attrs = &attrs[eq + 2 + close + 1..];
        }
        assert!(attrs.trim().is_empty(), "left over in an event: {attrs:?}");
        events.push(ev);
        rest = &rest[end + 2..];
    }
    events
}

/// The events a forever-frame page pushes: each `parent.push('k', "v", ...)` call.
fn js_events(page: &str) -> Vec<Fields> {
    let mut events = Vec::new();
    for call in page.split("parent.push(").skip(1) {
        let mut args = call;
        let mut ev = Fields::new();
        loop {
            let name_end = args[1..].find('\'').expect("a quoted name") + 1;
            let name = args[1..name_end].to_owned();
            let (value, rest) = js_string(args[name_end + 1..].trim_start_matches([',', ' ']));
            ev.insert(name, value);
            match rest.strip_prefix(',') {
                Some(more) => args = more,
                None => {
                    assert!(rest.starts_with(");</script>"), "a call must end its script: {rest}");
                    break;
                }
            }
        }
        events.push(ev);
    }
    events
}

/// A double-quoted JS string literal at the start of `s`, unescaped, and what follows it.
fn js_string(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.strip_prefix('"').expect("a quoted value").char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 2..]),
            '<' => panic!("a raw '<' in a script: {s}"),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('x') => {
                    let hex: String = (0..2).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                    out.push(char::from(u8::from_str_radix(&hex, 16).expect("hex")));
                }
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    panic!("unterminated JS string: {s}");
}

fn kinds(events: &[Fields]) -> Vec<&str> {
    events.iter().map(|e| e["p_event"].as_str()).collect()
}

fn values<'a>(events: &'a [Fields], name: &str) -> Vec<&'a str> {
    events.iter().map(|e| e.get(name).map_or("<none>", String::as_str)).collect()
}
