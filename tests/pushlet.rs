//! Pushlet (`/pushlet.srv`) end to end over loopback with raw HTTP: every reply in every format
//! and mode against the spec's examples (shared/specs/pushlet.md; XML parsed, attribute order
//! free), sessions publishing to each other, one message space with the native API, heartbeats,
//! `leave` on a control connection, leases, the queue bound, hand-off between workers, the
//! client-publish policy and the 400s.

mod util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use util::{publish, Client, Response, StreamClient, TestServer};

/// One event's fields; a map, because attribute order is free on the wire.
type Fields = BTreeMap<String, String>;

const FORMATS: [&str; 3] = ["xml-strict", "xml", "js"];

// ---------------------------------------------------------------------------------------------
// Golden replies: each format and mode against the spec's examples.

#[test]
fn join_ack_in_each_format() {
    let server = TestServer::start();
    for format in FORMATS {
        let r = server.client().get(&format!("/pushlet.srv?p_event=join&p_format={format}"));
        let reply = parse_reply(format, &r);
        assert_eq!(reply.events.len(), 1, "{format}: {:?}", r.text());
        let ack = &reply.events[0];
        assert_eq!(keys(ack), ["p_event", "p_format", "p_id", "p_time"], "{format}");
        assert_eq!(ack["p_event"], "join-ack");
        assert_eq!(ack["p_format"], format);
        assert_session_id(&ack["p_id"]);
        assert!(reply.refresh.is_none(), "{format}: a join ends no round");
    }
}

#[test]
fn join_defaults_to_js_and_always_makes_a_new_session() {
    let server = TestServer::start();
    let r = server.client().get("/pushlet.srv?p_event=join");
    let first = parse_reply("js", &r).events[0]["p_id"].clone();
    let r = server.client().get(&format!("/pushlet.srv?p_event=join&p_id={first}"));
    let reply = parse_reply("js", &r);
    assert_eq!(reply.events[0]["p_format"], "js");
    assert_ne!(reply.events[0]["p_id"], first, "a join with a p_id still makes a new session");
}

/// The spec's example: an xml-strict pull refresh that had one queued event, on both mounts.
#[test]
fn pull_rounds_in_each_format_match_the_spec() {
    let server = TestServer::start();
    for format in FORMATS {
        for base in ["/pushlet.srv", "/pushlet/pushlet.srv"] {
            let mut c = server.client();
            let r = c.get(&format!(
                "{base}?p_event=join-listen&p_format={format}&p_mode=pull&p_subject=/pushlet/ping&p_label=pinger"
            ));
            let reply = parse_reply(format, &r);
            assert_eq!(reply.events.len(), 1, "{format}: {:?}", r.text());
            let ack = &reply.events[0];
            assert_eq!(keys(ack), ["p_event", "p_format", "p_id", "p_label", "p_mode", "p_sid", "p_time"], "{format}");
            assert_eq!(ack["p_event"], "join-listen-ack");
            assert_eq!((ack["p_mode"].as_str(), ack["p_format"].as_str()), ("pull", format));
            assert_eq!(ack["p_label"], "pinger");
            let id = ack["p_id"].clone();
            let sid = ack["p_sid"].clone();
            let (url, wait) = reply.refresh.expect("the listen reply ends with a refresh");
            assert_eq!(url, format!("{base}?p_id={id}&p_event=refresh"));
            assert!((2000..=6000).contains(&wait), "pull p_wait {wait} ms");

            let from = join(server.addr, "xml");
            let ack =
                pushlet(server.addr, &format!("p_event=publish&p_id={from}&p_subject=/pushlet/ping&msg=hi+there"));
            assert_eq!(ack.events[0]["p_event"], "publish-ack");

            let r = c.get(&format!("{base}?p_event=refresh&p_id={id}"));
            let reply = parse_reply(format, &r);
            assert_eq!(kinds(&reply.events), ["refresh-ack", "data"], "{format}: {:?}", r.text());
            assert_eq!(keys(&reply.events[0]), ["p_event", "p_time"]);
            let data = &reply.events[1];
            assert_eq!(
                keys(data),
                ["msg", "p_event", "p_from", "p_id", "p_label", "p_seq", "p_sid", "p_subject", "p_time"],
                "{format}"
            );
            assert_eq!(data["msg"], "hi there");
            assert_public_id(&data["p_from"], &from);
            assert_eq!(data["p_id"], id);
            assert_eq!(data["p_sid"], sid);
            assert_eq!(data["p_label"], "pinger");
            assert_eq!(data["p_subject"], "/pushlet/ping");
            assert_eq!(data["p_seq"], "1");
            let (url, wait) = reply.refresh.expect("every round ends with a refresh");
            assert_eq!(url, format!("{base}?p_id={id}&p_event=refresh"));
            assert!((2000..=6000).contains(&wait));
        }
    }
}

#[test]
fn poll_rounds_answer_at_once_in_each_format() {
    // A long read timeout: a poll must not wait for it.
    let server = TestServer::with(|c| c.sessions.pushlet_read_timeout = Duration::from_secs(30));
    for format in FORMATS {
        let mut c = server.client();
        let r = c.get(&format!("/pushlet.srv?p_event=join-listen&p_format={format}&p_mode=poll&p_subject=/poll"));
        let reply = parse_reply(format, &r);
        assert_eq!(kinds(&reply.events), ["join-listen-ack"]);
        assert_eq!(reply.events[0]["p_mode"], "poll");
        let id = reply.events[0]["p_id"].clone();
        let (_, wait) = reply.refresh.expect("refresh");
        assert!((6000..=10000).contains(&wait), "poll p_wait {wait} ms");

        let started = Instant::now();
        let reply = parse_reply(format, &c.get(&format!("/pushlet.srv?p_event=refresh&p_id={id}")));
        assert!(started.elapsed() < Duration::from_secs(5), "a poll answers at once");
        assert_eq!(kinds(&reply.events), ["refresh-ack", "hb"], "{format}: nothing queued");
        assert_eq!(reply.events[1]["p_seq"], "1");
        assert!(reply.refresh.is_some());

        publish(server.addr, "/poll", b"one");
        publish(server.addr, "/poll", b"two");
        let reply = parse_reply(format, &c.get(&format!("/pushlet.srv?p_event=refresh&p_id={id}")));
        assert_eq!(kinds(&reply.events), ["refresh-ack", "data", "data"], "{format}");
        assert_eq!(values(&reply.events[1..], "p_data"), ["one", "two"]);
        assert_eq!(values(&reply.events[1..], "p_seq"), ["1", "2"]);
        let (url, _) = reply.refresh.expect("refresh");
        assert_eq!(url, format!("/pushlet.srv?p_id={id}&p_event=refresh"));
    }
}

#[test]
fn stream_listens_in_each_format() {
    let server = TestServer::start();
    for format in FORMATS {
        let id = join(server.addr, format);
        let mut s = StreamClient::open(
            server.addr,
            &get_request(&format!("p_event=listen&p_id={id}&p_mode=stream&p_subject=/live&p_label=L")),
        );
        assert_eq!(s.head.status, 200);
        assert_eq!(s.head.header("content-type"), Some(content_type(format)));
        assert_eq!(s.head.header("content-length"), None, "a stream has no length");
        assert!(s.head.header("transfer-encoding").is_some_and(|te| te.contains("chunked")));
        assert_no_cache(&s.head);
        let events = read_events(&mut s, format, 2);
        assert_eq!(kinds(&events), ["listen-ack", "hb"], "the original sends an hb right after the ack");
        assert_eq!(
            keys(&events[0]),
            ["p_event", "p_format", "p_id", "p_label", "p_mode", "p_sid", "p_time"],
            "{format}"
        );
        assert_eq!(events[0]["p_mode"], "stream");
        assert_eq!(keys(&events[1]), ["p_event", "p_seq", "p_time"]);
        assert_eq!(events[1]["p_seq"], "1");

        publish_json(server.addr, "/live/a", r#"{"price":"12.5","n":3}"#);
        publish(server.addr, "/live", b"<script>alert('x')</script>\n\"q\"");
        let events = read_events(&mut s, format, 4);
        assert_eq!(kinds(&events[2..]), ["data", "data"]);
        let (a, b) = (&events[2], &events[3]);
        assert_eq!((a["price"].as_str(), a["n"].as_str()), ("12.5", "3"), "JSON object fields become fields");
        assert_eq!(a["p_subject"], "/live/a");
        assert_eq!((a["p_seq"].as_str(), b["p_seq"].as_str()), ("2", "3"), "p_seq counts per response");
        assert_eq!((a["p_label"].as_str(), a["p_id"].as_str()), ("L", id.as_str()));
        assert_eq!(b["p_data"], "<script>alert('x')</script>\n\"q\"", "text arrives intact after escaping");
        if format == "js" {
            let body = s.text();
            assert_eq!(body.matches("</script>").count(), 1 + 4, "only the server's scripts end: {body}");
        }
        assert!(!s.ended, "a stream never ends by itself");
    }
}

#[test]
fn control_replies_in_each_format() {
    let server = TestServer::start();
    for format in FORMATS {
        let id = join(server.addr, format);
        let ask = |q: &str| parse_reply(format, &server.client().get(&format!("/pushlet.srv?p_id={id}&{q}"))).events;

        let ev = ask("p_event=hb");
        assert_eq!(kinds(&ev), ["hb-ack"]);
        assert_eq!(keys(&ev[0]), ["p_event", "p_time"]);

        let ev = ask("p_event=subscribe&p_subject=/a,/b&p_label=two");
        assert_eq!(keys(&ev[0]), ["p_event", "p_id", "p_label", "p_sid", "p_subject", "p_time"]);
        assert_eq!(ev[0]["p_event"], "subscribe-ack");
        assert_eq!((ev[0]["p_subject"].as_str(), ev[0]["p_label"].as_str()), ("/a,/b", "two"));
        let sid = ev[0]["p_sid"].clone();

        let ev = ask("p_event=subscribe");
        assert_eq!(kinds(&ev), ["nack"]);
        assert_eq!(ev[0]["p_reason"], "no subject provided");

        let ev = ask(&format!("p_event=unsubscribe&p_sid={sid}"));
        assert_eq!(ev[0]["p_event"], "unsubscribe-ack");
        assert_eq!((ev[0]["p_sid"].as_str(), ev[0]["p_subject"].as_str()), (sid.as_str(), "/a,/b"));
        assert_eq!(ev[0]["p_label"], "two");

        let ev = ask(&format!("p_event=unsubscribe&p_sid={sid}"));
        assert_eq!(kinds(&ev), ["nack"], "that sid is gone");

        ask("p_event=subscribe&p_subject=/c");
        let ev = ask("p_event=unsubscribe");
        assert_eq!(keys(&ev[0]), ["p_event", "p_id", "p_time"], "unsubscribe all");

        let ev = ask("p_event=publish&p_subject=/c&x=1");
        assert_eq!(keys(&ev[0]), ["p_event", "p_time"]);
        assert_eq!(ev[0]["p_event"], "publish-ack");
        let ev = ask("p_event=publish&x=1");
        assert_eq!((ev[0]["p_event"].as_str(), ev[0]["p_reason"].as_str()), ("nack", "no subject provided"));

        let ev = ask("p_event=refresh");
        assert_eq!(kinds(&ev), ["nack"], "refresh before listen");

        // Unknown events: nack, and the session is kept (the original ended it).
        let ev = ask("p_event=frobnicate");
        assert_eq!(kinds(&ev), ["nack"]);
        assert!(ev[0]["p_reason"].contains("frobnicate"));
        assert_eq!(kinds(&ask("p_event=hb")), ["hb-ack"]);

        let ev = ask("p_event=leave");
        assert_eq!(keys(&ev[0]), ["p_event", "p_id", "p_time"]);
        assert_eq!((ev[0]["p_event"].as_str(), ev[0]["p_id"].as_str()), ("leave-ack", id.as_str()));
        let r = server.client().get(&format!("/pushlet.srv?p_event=hb&p_id={id}"));
        assert_invalid_id(&r, &id);
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions publishing to each other, and one message space with the native API.

#[test]
fn two_sessions_publish_and_receive_in_each_mode() {
    let server = TestServer::start();
    for mode in ["stream", "pull", "poll"] {
        let subject = format!("/room/{mode}");
        let publisher = join(server.addr, "xml-strict");
        let listen = format!("p_event=join-listen&p_format=xml-strict&p_mode={mode}&p_subject={subject}");
        let messages = ["first", "second", "third"];
        let got: Vec<Fields> = if mode == "stream" {
            let mut s = StreamClient::open(server.addr, &get_request(&listen));
            let id = read_events(&mut s, "xml-strict", 2)[0]["p_id"].clone();
            for m in messages {
                say(server.addr, &publisher, &subject, m);
            }
            let events = read_events(&mut s, "xml-strict", 2 + messages.len());
            assert!(events[2..].iter().all(|e| e["p_id"] == id));
            events[2..].to_vec()
        } else {
            let mut c = server.client();
            let id = parse_reply("xml-strict", &c.get(&format!("/pushlet.srv?{listen}"))).events[0]["p_id"].clone();
            for m in messages {
                say(server.addr, &publisher, &subject, m);
            }
            collect(&mut c, &id, messages.len())
        };
        assert_eq!(kinds(&got), ["data"; 3], "{mode}");
        assert_eq!(values(&got, "msg"), messages, "{mode}: in order, none lost");
        assert_public_id(&got[0]["p_from"], &publisher);
        assert!(got.iter().all(|e| e["p_from"] == got[0]["p_from"] && e["p_subject"] == subject), "{mode}");
    }
}

#[test]
fn pull_keeps_events_that_arrive_between_refreshes() {
    let server = TestServer::start();
    let (id, mut c) = pull_listener(&server, "/keep");
    // The native publish answers once the message is stored (a Pushlet publish-ack does not
    // wait for the hub), so these rounds can expect exact contents.
    publish(server.addr, "/keep", b"a");
    let events = refresh(&mut c, &id);
    assert_eq!(values(&events[1..], "p_data"), ["a"]);
    // Between two refreshes (nobody parked), then one while parked.
    publish(server.addr, "/keep", b"b");
    publish(server.addr, "/keep", b"c");
    let events = refresh(&mut c, &id);
    assert_eq!(values(&events[1..], "p_data"), ["b", "c"]);
    c.send(get_request(&format!("p_event=refresh&p_id={id}")).as_bytes());
    server.wait_for("parked", 1);
    publish(server.addr, "/keep", b"d");
    let events = parse_reply("xml-strict", &c.response()).events;
    assert_eq!(values(&events[1..], "p_data"), ["d"], "a parked refresh wakes on the event");
}

#[test]
fn native_publish_reaches_a_pushlet_prefix_subscriber() {
    let server = TestServer::start();
    let (id, mut c) = pull_listener(&server, "/stocks");
    c.send(get_request(&format!("p_event=refresh&p_id={id}")).as_bytes());
    server.wait_for("parked", 1);
    let ack = publish_json(server.addr, "/stocks/aex", r#"{"price":101.5,"name":"AEX","p_id":"forged","p_seq":"99"}"#);
    assert_eq!(ack["delivered"], 1, "{ack}");
    let events = parse_reply("xml-strict", &c.response()).events;
    assert_eq!(kinds(&events), ["refresh-ack", "data"]);
    let data = &events[1];
    assert_eq!((data["price"].as_str(), data["name"].as_str()), ("101.5", "AEX"));
    assert_eq!(data["p_subject"], "/stocks/aex");
    assert_eq!((data["p_id"].as_str(), data["p_seq"].as_str()), (id.as_str(), "1"), "server fields can't be forged");

    publish(server.addr, "/stocks", b"plain text");
    let events = refresh(&mut c, &id);
    assert_eq!(events[1]["p_data"], "plain text", "a non-JSON body is the p_data field");
    assert_eq!(events[1]["p_subject"], "/stocks");
}

#[test]
fn pushlet_publish_reaches_a_native_long_poll() {
    let server = TestServer::start();
    let mut sub = server.client();
    sub.send(b"GET /sub/chat/room HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("parked", 1);
    let from = join(server.addr, "xml");
    say(server.addr, &from, "/chat/room", "hello natives");
    let r = sub.response();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let data = &body["messages"][0]["data"];
    let data: serde_json::Value = match data {
        serde_json::Value::String(s) => serde_json::from_str(s).expect("the event as a JSON object"),
        other => other.clone(),
    };
    assert_eq!(data["msg"], "hello natives", "{body}");
    assert_public_id(data["p_from"].as_str().unwrap_or(""), &from);
}

#[test]
fn unicast_with_p_to_reaches_only_its_target() {
    let server = TestServer::start();
    let (target, mut t) = pull_listener(&server, "/elsewhere");
    let from = join(server.addr, "xml");
    // Public ids first: learning them publishes where the bystander would see it.
    let (to, from_public) = (public_id_of(&server, &target), public_id_of(&server, &from));
    // Subscribed to everything, yet it must not get the unicast.
    let (bystander, mut b) = pull_listener(&server, "/");
    let ack = pushlet(server.addr, &format!("p_event=publish&p_id={from}&p_to={to}&msg=psst"));
    assert_eq!(kinds(&ack.events), ["publish-ack"]);
    say(server.addr, &from, "/public", "for all");

    let events = refresh(&mut t, &target);
    assert_eq!(kinds(&events), ["refresh-ack", "data"]);
    assert_eq!(events[1]["msg"], "psst");
    assert_eq!(events[1]["p_from"], from_public);
    assert!(!events[1].contains_key("p_sid"), "a unicast matches no subscription");
    let events = refresh(&mut b, &bystander);
    assert_eq!(values(&events[1..], "msg"), ["for all"], "the bystander gets only the public event");
}

#[test]
fn subjects_match_by_whole_segments() {
    let server = TestServer::start();
    let (id, mut c) = pull_listener(&server, "/stocks");
    for topic in ["/stocksX", "/stocks", "/stocks/aex", "/stock", "/stocks/aex/open", "/other/stocks"] {
        publish(server.addr, topic, topic.as_bytes());
    }
    let events = refresh(&mut c, &id);
    assert_eq!(values(&events[1..], "p_subject"), ["/stocks", "/stocks/aex", "/stocks/aex/open"]);
}

#[test]
fn one_copy_per_session_when_several_subscriptions_match() {
    let server = TestServer::start();
    let (id, mut c) = pull_listener(&server, "/news");
    let sub2 = pushlet(server.addr, &format!("p_event=subscribe&p_id={id}&p_subject=/news/sport,/news&p_label=x"));
    let sid2 = sub2.events[0]["p_sid"].clone();
    let sub3 = pushlet(server.addr, &format!("p_event=subscribe&p_id={id}&p_subject=/news/sport/ball"));
    assert_eq!(kinds(&sub3.events), ["subscribe-ack"]);
    publish(server.addr, "/news/sport/ball", b"goal");
    let events = refresh(&mut c, &id);
    assert_eq!(kinds(&events), ["refresh-ack", "data"], "one copy");
    assert_ne!(events[1]["p_sid"], sid2, "stamped with the first matching subscription");
    assert!(!events[1].contains_key("p_label"), "and only its label");
}

// ---------------------------------------------------------------------------------------------
// Heartbeats, leave, leases, the queue bound.

#[test]
fn idle_stream_gets_an_hb_after_each_read_timeout() {
    let server = TestServer::with(|c| c.sessions.pushlet_read_timeout = Duration::from_millis(200));
    let id = join(server.addr, "xml");
    let mut s = StreamClient::open(server.addr, &get_request(&format!("p_event=listen&p_id={id}&p_subject=/quiet")));
    read_events(&mut s, "xml", 2);
    let started = Instant::now();
    let events = read_events(&mut s, "xml", 4);
    let waited = started.elapsed();
    assert_eq!(kinds(&events), ["listen-ack", "hb", "hb", "hb"]);
    assert_eq!(values(&events[1..], "p_seq"), ["1", "2", "3"]);
    assert!(waited >= Duration::from_millis(300), "two read timeouts of silence, not sooner: {waited:?}");
}

#[test]
fn idle_pull_refresh_is_answered_with_hb_after_the_read_timeout() {
    let server = TestServer::with(|c| c.sessions.pushlet_read_timeout = Duration::from_millis(300));
    for format in FORMATS {
        let mut c = server.client();
        let r = c.get(&format!("/pushlet.srv?p_event=join-listen&p_format={format}&p_mode=pull&p_subject=/silent"));
        let id = parse_reply(format, &r).events[0]["p_id"].clone();
        let started = Instant::now();
        let reply = parse_reply(format, &c.get(&format!("/pushlet.srv?p_event=refresh&p_id={id}")));
        let waited = started.elapsed();
        assert_eq!(kinds(&reply.events), ["refresh-ack", "hb"], "{format}");
        assert!(reply.refresh.is_some());
        assert!(waited >= Duration::from_millis(250), "{format}: answered after the read timeout, got {waited:?}");
    }
}

#[test]
fn leave_on_a_control_connection_releases_a_parked_pull_refresh_at_once() {
    let server = TestServer::start();
    let (id, mut listen) = pull_listener(&server, "/x");
    listen.send(get_request(&format!("p_event=refresh&p_id={id}")).as_bytes());
    server.wait_for("parked", 1);
    let mut control = server.client();
    let started = Instant::now();
    control.send(get_request(&format!("p_event=leave&p_id={id}")).as_bytes());
    let released = listen.response();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(100), "the parked refresh was released after {took:?}");
    assert_eq!(released.status, 200);
    let reply = parse_reply("xml-strict", &released);
    // What a 2.0.4 client that just sent `leave` ignores (an `abort` would be fatal to it;
    // tests/pushlet_clients.rs).
    assert_eq!(kinds(&reply.events), ["refresh-ack", "hb"]);
    assert!(reply.refresh.is_none(), "not sent back for another round");
    let ack = parse_reply("xml-strict", &control.response()).events;
    assert_eq!(kinds(&ack), ["leave-ack"]);
    server.wait_for("parked", 0);
    assert_invalid_id(&listen.get(&format!("/pushlet.srv?p_event=refresh&p_id={id}")), &id);
    assert_invalid_id(&control.get(&format!("/pushlet.srv?p_event=hb&p_id={id}")), &id);
}

#[test]
fn leave_on_a_control_connection_ends_an_open_stream_at_once() {
    let server = TestServer::start();
    for format in FORMATS {
        let id = join(server.addr, format);
        let mut s = StreamClient::open(server.addr, &get_request(&format!("p_event=listen&p_id={id}&p_subject=/x")));
        read_events(&mut s, format, 2);
        let mut control = server.client();
        let started = Instant::now();
        control.send(get_request(&format!("p_event=leave&p_id={id}")).as_bytes());
        s.read_to_end();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(100), "{format}: the stream ended after {took:?}");
        let events = parse_body(format, &s.text()).events;
        assert_eq!(kinds(&events), ["listen-ack", "hb"], "{format}: ends silently, as the original's did");
        if format == "js" {
            assert!(s.text().ends_with("</body></html>"));
        }
        if format == "xml-strict" {
            assert!(s.text().ends_with("</pushlet>"));
        }
        assert_eq!(kinds(&parse_reply(format, &control.response()).events), ["leave-ack"]);
        assert_invalid_id(&control.get(&format!("/pushlet.srv?p_event=listen&p_id={id}")), &id);
    }
    server.wait_for("sessions", 0);
}

#[test]
fn subscribe_on_a_control_connection_flows_into_the_open_stream() {
    let server = TestServer::start();
    let id = join(server.addr, "xml");
    let mut s = StreamClient::open(server.addr, &get_request(&format!("p_event=listen&p_id={id}&p_subject=/first")));
    read_events(&mut s, "xml", 2);
    let ack = pushlet(server.addr, &format!("p_event=subscribe&p_id={id}&p_subject=/second"));
    assert_eq!(kinds(&ack.events), ["subscribe-ack"]);
    publish(server.addr, "/second/x", b"new subject");
    let events = read_events(&mut s, "xml", 3);
    assert_eq!(events[2]["p_data"], "new subject");
    let ack = pushlet(server.addr, &format!("p_event=unsubscribe&p_id={id}"));
    assert_eq!(kinds(&ack.events), ["unsubscribe-ack"]);
    publish(server.addr, "/second/x", b"not any more");
    publish(server.addr, "/first", b"nor this");
    let me = public_id_of(&server, &id);
    pushlet(server.addr, &format!("p_event=publish&p_id={id}&p_to={me}&msg=marker"));
    let events = read_events(&mut s, "xml", 4);
    assert_eq!(events[3]["msg"], "marker", "the unsubscribed events were skipped: {events:?}");
}

#[test]
fn an_expired_lease_removes_the_session() {
    let server = TestServer::with(|c| c.sessions.lease = Duration::from_millis(200));
    let id = join(server.addr, "xml");
    let kept = join(server.addr, "xml");
    assert_eq!(server.worker_total("sessions"), 2);
    // An open listen keeps its session's lease running.
    let mut s = StreamClient::open(server.addr, &get_request(&format!("p_event=listen&p_id={kept}&p_subject=/k")));
    read_events(&mut s, "xml", 2);
    server.wait_for("sessions", 1);
    assert_invalid_id(&server.client().get(&format!("/pushlet.srv?p_event=hb&p_id={id}")), &id);
    let ack = pushlet(server.addr, &format!("p_event=hb&p_id={kept}"));
    assert_eq!(kinds(&ack.events), ["hb-ack"], "the listening session outlived its lease");
}

#[test]
fn a_session_over_the_queue_bound_gets_an_explicit_abort_and_is_removed() {
    let server = TestServer::with(|c| c.sessions.queue = 3);
    let (id, mut c) = pull_listener(&server, "/flood");
    // At the bound: everything is delivered.
    for i in 0..3 {
        publish(server.addr, "/flood", format!("m{i}").as_bytes());
    }
    let events = refresh(&mut c, &id);
    assert_eq!(values(&events[1..], "p_data"), ["m0", "m1", "m2"]);
    // One over: an abort with the reason, the session gone.
    for i in 3..7 {
        publish(server.addr, "/flood", format!("m{i}").as_bytes());
    }
    let r = c.get(&format!("/pushlet.srv?p_event=refresh&p_id={id}"));
    let reply = parse_reply("xml-strict", &r);
    assert_eq!(kinds(&reply.events), ["abort"], "{}", r.text());
    assert!(reply.events[0]["p_reason"].contains("more than 3 undelivered events"), "{:?}", reply.events);
    assert!(reply.refresh.is_none(), "no next round");
    assert_invalid_id(&c.get(&format!("/pushlet.srv?p_event=refresh&p_id={id}")), &id);
    server.wait_for("sessions", 0);
}

#[test]
fn a_pull_session_that_fell_out_of_history_is_told() {
    let server = TestServer::with(|c| c.history.max_messages = 2);
    let (id, mut c) = pull_listener(&server, "/short");
    for i in 0..5 {
        publish(server.addr, "/short", format!("m{i}").as_bytes());
    }
    let events = refresh(&mut c, &id);
    assert_eq!(kinds(&events), ["refresh-ack", "error", "data", "data"], "{events:?}");
    assert!(events[1]["p_reason"].contains("lost"));
    assert_eq!(values(&events[2..], "p_data"), ["m3", "m4"]);
    publish(server.addr, "/short", b"m5");
    let events = refresh(&mut c, &id);
    assert_eq!(kinds(&events), ["refresh-ack", "data"], "caught up: no more errors");
}

#[test]
fn other_sessions_unicasts_do_not_count_against_the_queue_bound() {
    let server = TestServer::with(|c| c.sessions.queue = 3);
    // Subscribed to everything, yet no pattern reads a unicast topic.
    let target = join(server.addr, "xml");
    let target = public_id_of(&server, &target);
    let (id, mut c) = pull_listener(&server, "/");
    let from = join(server.addr, "xml");
    for i in 0..10 {
        let ack = pushlet(server.addr, &format!("p_event=publish&p_id={from}&p_to={target}&msg=u{i}"));
        assert_eq!(kinds(&ack.events), ["publish-ack"]);
    }
    // The hub takes publishes in order: once this one is stored, so are the unicasts.
    publish(server.addr, "/marker", b"mine");
    let events = refresh(&mut c, &id);
    assert_eq!(kinds(&events), ["refresh-ack", "data"], "no abort for events that were never its own");
    assert_eq!(events[1]["p_data"], "mine");
}

// ---------------------------------------------------------------------------------------------
// Hand-off between workers.

#[test]
fn a_session_works_when_its_connections_arrive_on_different_workers() {
    let server = TestServer::with(|c| c.workers = 2);
    let id = join(server.addr, "xml-strict");
    let other = join(server.addr, "xml");
    // Every request on a fresh connection: the kernel spreads them over both workers.
    let ask = |q: String| pushlet(server.addr, &q).events;
    let round = |q: String| {
        let reply = pushlet(server.addr, &q);
        assert!(reply.refresh.is_some(), "{:?}", reply.events);
        reply.events
    };
    assert_eq!(kinds(&round(format!("p_event=listen&p_id={id}&p_mode=pull&p_subject=/ho"))), ["listen-ack"]);
    for i in 0..12 {
        assert_eq!(kinds(&ask(format!("p_event=hb&p_id={id}"))), ["hb-ack"], "hb {i}");
        assert_eq!(kinds(&ask(format!("p_event=publish&p_id={other}&p_subject=/ho&msg=m{i}"))), ["publish-ack"]);
        // The refresh waits on the owner if the publish is not stored yet.
        let events = round(format!("p_event=refresh&p_id={id}"));
        assert_eq!(kinds(&events), ["refresh-ack", "data"], "round {i}");
        assert_eq!(events[1]["msg"], format!("m{i}"));
    }
    let handoffs = server.worker_total("handoffs_in");
    assert!(handoffs > 0, "both workers saw the session's requests");
    assert_eq!(server.worker_total("handoffs_out"), handoffs);

    // A parked refresh handed to the owner, released by a leave from another connection.
    let mut listen = server.client();
    listen.send(get_request(&format!("p_event=refresh&p_id={id}")).as_bytes());
    server.wait_for("parked", 1);
    assert_eq!(kinds(&ask(format!("p_event=leave&p_id={id}"))), ["leave-ack"]);
    assert_eq!(listen.response().status, 200);
    for _ in 0..4 {
        assert_invalid_id(&server.client().get(&format!("/pushlet.srv?p_event=hb&p_id={id}")), &id);
    }
}

// ---------------------------------------------------------------------------------------------
// Client-publish policy, POST bodies, 400s.

#[test]
fn client_publishing_can_be_turned_off() {
    let server = TestServer::with(|c| c.access.client_publish = Vec::new());
    let id = join(server.addr, "xml");
    let reply = pushlet(server.addr, &format!("p_event=publish&p_id={id}&p_subject=/any&x=1"));
    assert_eq!(kinds(&reply.events), ["nack"]);
    assert!(reply.events[0]["p_reason"].contains("not allowed"), "{:?}", reply.events);
    let reply = pushlet(server.addr, &format!("p_event=publish&p_id={id}&p_to={id}&x=1"));
    assert_eq!(kinds(&reply.events), ["nack"], "unicast too");
}

#[test]
fn client_publishing_can_be_limited_to_patterns() {
    let server = TestServer::with(|c| c.access.client_publish = vec!["/chat/**".to_owned()]);
    let (id, mut c) = pull_listener(&server, "/chat");
    let ok = pushlet(server.addr, &format!("p_event=publish&p_id={id}&p_subject=/chat/room&msg=yes"));
    assert_eq!(kinds(&ok.events), ["publish-ack"]);
    let no = pushlet(server.addr, &format!("p_event=publish&p_id={id}&p_subject=/chat/room,/news&msg=no"));
    assert_eq!(kinds(&no.events), ["nack"]);
    let events = refresh(&mut c, &id);
    assert_eq!(values(&events[1..], "msg"), ["yes"], "a refused publish sends nothing, not even partly");
}

#[test]
fn post_bodies_are_events() {
    let server = TestServer::start();
    let mut c = server.client();
    let r = c.post(
        "/pushlet.srv",
        br#"<event p_event="join-listen" p_format='xml-strict' p_mode="pull" p_subject="/posted" />"#,
    );
    let reply = parse_reply("xml-strict", &r);
    let id = reply.events[0]["p_id"].clone();
    assert_eq!(reply.events[0]["p_event"], "join-listen-ack");
    let body = format!(
        r#"<event p_event="publish" p_id="{id}" p_subject="/posted" msg="a &amp; b &lt;c&gt; &quot;d&quot;"/>"#
    );
    let r = c.post("/pushlet/pushlet.srv", body.as_bytes());
    assert_eq!(kinds(&parse_reply("xml-strict", &r).events), ["publish-ack"]);
    // The query and the body together: the body's fields come after the query's.
    let r = c.post(&format!("/pushlet.srv?p_id={id}"), br#"<event p_event="refresh"/>"#);
    let events = parse_reply("xml-strict", &r).events;
    assert_eq!(events[1]["msg"], "a & b <c> \"d\"");
    let r = c.post("/pushlet.srv", b"<event p_event=\"hb\"");
    assert_eq!(r.status, 400, "a truncated body: {}", r.text());
    assert!(r.text().contains("malformed XML body"));
}

#[test]
fn bad_requests_are_400s() {
    let server = TestServer::start();
    let mut c = server.client();
    for (query, reason) in [
        ("", "no p_event"),
        ("p_id=abc", "no p_event"),
        ("p_event=hb", "no p_id"),
        ("p_event=refresh&p_id=", "no p_id"),
        ("p_event=join&p_format=json", "invalid p_format"),
        ("p_event=join-listen&p_mode=push", "invalid p_mode"),
        ("p_event=hb&p_id=nosuchsession", "Invalid or expired id: nosuchsession"),
        ("p_event=hb&p_id=00000000000000000000000000000000000", "Invalid or expired id"),
        ("p_event=hb&p_id=fff00000000000000000000000000000000", "Invalid or expired id"),
    ] {
        let r = c.get(&format!("/pushlet.srv?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.text().contains(reason), "{query}: {:?}", r.text());
    }
    // Still a working connection and server.
    assert_eq!(kinds(&parse_reply("xml", &c.get("/pushlet.srv?p_event=join&p_format=xml")).events), ["join-ack"]);
}

// ---------------------------------------------------------------------------------------------
// Helpers: requests.

/// `GET /pushlet.srv?<query>` as raw bytes.
fn get_request(query: &str) -> String {
    format!("GET /pushlet.srv?{query} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// One request on a fresh connection, parsed in the format its reply says it is in.
fn pushlet(addr: SocketAddr, query: &str) -> Reply {
    let r = Client::connect(addr).get(&format!("/pushlet.srv?{query}"));
    let format = match r.header("content-type") {
        Some(ct) if ct.starts_with("text/xml") => "xml-strict",
        Some(ct) if ct.starts_with("text/plain") => "xml",
        _ => "js",
    };
    parse_reply(format, &r)
}

/// A new session in `format`; its id.
fn join(addr: SocketAddr, format: &str) -> String {
    let reply = pushlet(addr, &format!("p_event=join&p_format={format}"));
    assert_eq!(kinds(&reply.events), ["join-ack"]);
    reply.events[0]["p_id"].clone()
}

/// A native publish of a JSON body (Content-Type: application/json).
fn publish_json(addr: SocketAddr, topic: &str, json: &str) -> serde_json::Value {
    let mut c = Client::connect(addr);
    c.send_post(&format!("/pub{topic}"), json.as_bytes(), "Content-Type: application/json\r\n");
    let r = c.response();
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// The data events of xml-strict refresh rounds until there are `n` (a Pushlet `publish-ack`
/// does not wait for the message to be stored, so a round may come before the last of them).
fn collect(c: &mut Client, id: &str, n: usize) -> Vec<Fields> {
    let deadline = Instant::now() + util::WAIT;
    let mut data = Vec::new();
    while data.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} events: {data:?}", data.len());
        let events = refresh(c, id);
        assert_eq!(kinds(&events)[0], "refresh-ack");
        data.extend(events.into_iter().skip(1).filter(|e| e["p_event"] != "hb"));
    }
    data
}

/// A session publishing `msg` to `subject`.
fn say(addr: SocketAddr, from: &str, subject: &str, msg: &str) {
    let reply = pushlet(addr, &format!("p_event=publish&p_id={from}&p_subject={subject}&msg={msg}").replace(' ', "+"));
    assert_eq!(kinds(&reply.events), ["publish-ack"], "{:?}", reply.events);
}

/// An xml-strict pull session listening to `subject`, and its connection.
fn pull_listener(server: &TestServer, subject: &str) -> (String, Client) {
    let mut c = server.client();
    let query = format!("p_event=join-listen&p_format=xml-strict&p_mode=pull&p_subject={subject}");
    let reply = parse_reply("xml-strict", &c.get(&format!("/pushlet.srv?{query}")));
    assert_eq!(kinds(&reply.events), ["join-listen-ack"]);
    (reply.events[0]["p_id"].clone(), c)
}

/// One xml-strict refresh round: its events without the final `refresh`.
fn refresh(c: &mut Client, id: &str) -> Vec<Fields> {
    let reply = parse_reply("xml-strict", &c.get(&format!("/pushlet.srv?p_event=refresh&p_id={id}")));
    assert!(reply.refresh.is_some(), "{:?}", reply.events);
    reply.events
}

/// Reads a stream until it holds `n` events; returns all of them.
fn read_events(s: &mut StreamClient, format: &str, n: usize) -> Vec<Fields> {
    s.read_until(|body| parse_body(format, &String::from_utf8_lossy(body)).events.len() >= n);
    parse_body(format, &s.text()).events
}

// ---------------------------------------------------------------------------------------------
// Helpers: checking replies.

/// A reply's events and, when it ends a pull/poll round, the refresh `(p_url, p_wait)`. In the
/// XML formats the refresh is the last event (taken out here); in js it is the closing script.
#[derive(Debug)]
struct Reply {
    events: Vec<Fields>,
    refresh: Option<(String, u64)>,
}

fn content_type(format: &str) -> &'static str {
    match format {
        "xml-strict" => "text/xml;charset=UTF-8",
        "xml" => "text/plain;charset=UTF-8",
        _ => "text/html;charset=UTF-8",
    }
}

/// A complete 200 reply in `format`: headers checked, body parsed.
fn parse_reply(format: &str, r: &Response) -> Reply {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some(content_type(format)), "{format}");
    assert_no_cache(r);
    let text = r.text();
    match format {
        "xml-strict" => assert!(text.starts_with("<pushlet>") && text.ends_with("</pushlet>"), "{text}"),
        "js" => assert!(text.ends_with("</body></html>"), "{text}"),
        _ => assert!(text.starts_with("<event ") && text.ends_with(" />"), "{text}"),
    }
    parse_body(format, text)
}

fn assert_no_cache(r: &Response) {
    assert_eq!(r.header("cache-control"), Some("no-store, no-cache, must-revalidate"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
    let expires = r.header("expires").expect("Expires");
    let expires = httpdate::parse_http_date(expires).expect("an HTTP date");
    assert!(expires < SystemTime::now(), "Expires is in the past");
}

/// Parses the complete events of a (possibly partial) body in `format`, checking the server's
/// fields on each: `p_time` near now, `p_seq` on exactly the `data` and `hb` events.
fn parse_body(format: &str, text: &str) -> Reply {
    let mut reply = match format {
        "js" => parse_js(text),
        _ => {
            let body = text.strip_prefix("<pushlet>").unwrap_or(text);
            if !text.is_empty() {
                assert_eq!(format == "xml-strict", body.len() < text.len(), "only xml-strict is wrapped: {text}");
            }
            Reply { events: parse_xml_events(body), refresh: None }
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    for ev in &reply.events {
        let time: u64 = ev.get("p_time").and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("p_time: {ev:?}"));
        assert!(time.abs_diff(now) < 60, "p_time {time} is the server's Unix seconds");
        let numbered = matches!(ev["p_event"].as_str(), "data" | "hb");
        assert_eq!(ev.contains_key("p_seq"), numbered, "p_seq on data and hb only: {ev:?}");
    }
    if format != "js" && reply.events.last().is_some_and(|e| e["p_event"] == "refresh") {
        let Some(ev) = reply.events.pop() else { unreachable!() };
        assert_eq!(keys(&ev), ["p_event", "p_time", "p_url", "p_wait"]);
        reply.refresh = Some((ev["p_url"].clone(), ev["p_wait"].parse().expect("p_wait ms")));
    }
    reply
}

/// `<event k="v" ... />` elements one after the other (anything after the last complete one
/// is ignored, so a stream can be parsed as it arrives); values XML-unescaped.
fn parse_xml_events(mut rest: &str) -> Vec<Fields> {
    let mut events = Vec::new();
    loop {
        let Some(start) = rest.find("<event") else { return events };
        assert!(rest[..start].trim().is_empty(), "only events between events: {:?}", &rest[..start]);
        let Some(len) = rest[start..].find("/>") else { return events };
        let mut attrs = rest[start + "<event".len()..start + len].trim();
        let mut ev = Fields::new();
        while !attrs.is_empty() {
            let (name, after) = attrs.split_once('=').expect("name=value");
            let quote = after.chars().next().expect("a quote");
            assert!(quote == '"' || quote == '\'', "{after}");
            let end = after[1..].find(quote).expect("closing quote") + 1;
            let old = ev.insert(name.trim().to_owned(), xml_unescape(&after[1..end]));
            assert!(old.is_none(), "attribute {name} twice");
            attrs = after[end + 1..].trim_start();
        }
        events.push(ev);
        rest = &rest[start + len + 2..];
    }
}

fn xml_unescape(s: &str) -> String {
    // Raw line breaks would be normalized to spaces by a real XML parser (XML 1.0 §3.3.3).
    assert!(!s.contains(['<', '\n', '\r', '\t']), "must be escaped in an attribute: {s:?}");
    let mut out = String::new();
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let end = rest[amp..].find(';').expect("entity end") + amp;
        let entity = &rest[amp + 1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = match entity.strip_prefix("#x") {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => entity.strip_prefix('#').expect("a known entity").parse(),
                };
                char::from_u32(code.expect("a number")).expect("a char")
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The forever-frame page: the start document (with `refresh()`), one
/// `<script language="JavaScript">parent.push('k', "v",...);</script>` per event, and at the end
/// of a pull/poll round the script setting `url` and `setTimeout("refresh()", wait)`.
fn parse_js(page: &str) -> Reply {
    const OPEN: &str = "<script language=\"JavaScript\">";
    let Some(head_end) = page.find("<body>").map(|i| i + "<body>".len()) else {
        // A stream whose start document has not all arrived yet.
        return Reply { events: Vec::new(), refresh: None };
    };
    let head = &page[..head_end];
    assert!(head.starts_with("<html><head>"), "{head}");
    assert!(head.contains("function refresh()"), "{head}");
    let mut rest = page[head_end..].trim_start();
    let mut events = Vec::new();
    let mut refresh = None;
    while let Some(script) = rest.strip_prefix(OPEN) {
        let Some(end) = script.find("</script>") else { break };
        let code = &script[..end];
        assert!(!code.contains(['<', '>', '\n', '\r']), "nothing in a script may end it: {code}");
        if let Some(args) = code.strip_prefix("parent.push(").and_then(|c| c.strip_suffix(");")) {
            events.push(parse_push_args(args));
        } else {
            let after = code.strip_prefix("url = ").expect("a push or the refresh script");
            let (url, after) = js_string(after);
            let wait = after.strip_prefix("; setTimeout(\"refresh()\", ").and_then(|w| w.strip_suffix(");"));
            refresh = Some((url, wait.expect("setTimeout").parse().expect("wait ms")));
        }
        rest = &script[end + "</script>".len()..];
    }
    // A stream may stop inside a script; a whole page ends with exactly this.
    assert!(
        rest.is_empty()
            || rest == "</body></html>"
            || OPEN.starts_with(&rest[..rest.len().min(OPEN.len())])
            || rest.starts_with(OPEN),
        "{rest}"
    );
    Reply { events, refresh }
}

/// `'k', "v",'k2', "v2"` into fields.
fn parse_push_args(mut args: &str) -> Fields {
    let mut ev = Fields::new();
    while !args.is_empty() {
        let name_end = args[1..].find('\'').expect("a quoted name") + 1;
        let name = args[1..name_end].to_owned();
        let (value, rest) = js_string(args[name_end + 1..].strip_prefix(", ").expect("', '"));
        ev.insert(name, value);
        args = rest.strip_prefix(',').unwrap_or(rest);
    }
    ev
}

/// A double-quoted JS string literal at the start of `s`: its value and the rest.
fn js_string(s: &str) -> (String, &str) {
    let mut chars = s.strip_prefix('"').expect("a JS string").char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 2..]),
            '\\' => {
                let (_, e) = chars.next().expect("an escape");
                let code = |chars: &mut std::str::CharIndices, n| {
                    let hex: String = (0..n).map(|_| chars.next().expect("hex digit").1).collect();
                    char::from_u32(u32::from_str_radix(&hex, 16).expect("hex")).expect("char")
                };
                out.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'x' => code(&mut chars, 2),
                    'u' => code(&mut chars, 4),
                    other => other,
                });
            }
            c => out.push(c),
        }
    }
    panic!("unterminated JS string: {s}");
}

fn assert_invalid_id(r: &Response, id: &str) {
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(&format!("Invalid or expired id: {id}")), "{:?}", r.text());
}

/// A session's public id (what others see in `p_from`, what `p_to` names): learnt the way a
/// page learns it, from the `p_from` of one of its publishes.
fn public_id_of(server: &TestServer, id: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let subject = format!("/whois/{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let (reader, mut c) = pull_listener(server, &subject);
    say(server.addr, id, &subject, "me");
    collect(&mut c, &reader, 1)[0]["p_from"].clone()
}

/// A `p_from`: 128 random bits in hex, never the publisher's session id.
fn assert_public_id(from: &str, session_id: &str) {
    assert_eq!(from.len(), 32, "{from}");
    assert!(from.bytes().all(|b| b.is_ascii_hexdigit()), "{from}");
    assert_ne!(from, session_id, "p_from must not be the session id");
}

fn assert_session_id(id: &str) {
    assert_eq!(id.len(), 3 + 32, "owner + 128 random bits: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
}

fn keys(ev: &Fields) -> Vec<&str> {
    ev.keys().map(String::as_str).collect()
}

fn kinds(events: &[Fields]) -> Vec<&str> {
    events.iter().map(|e| e["p_event"].as_str()).collect()
}

fn values<'a>(events: &'a [Fields], name: &str) -> Vec<&'a str> {
    events.iter().map(|e| e.get(name).map_or("<none>", String::as_str)).collect()
}
