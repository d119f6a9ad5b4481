use super::*;
use crate::protocol::pushlet::parse_request;

fn req(query: &str) -> Request {
    match parse_request(Some(query), b"") {
        Ok(req) => req,
        Err(e) => panic!("{query}: {e}"),
    }
}

fn any(_: &str) -> bool {
    true
}

fn session(id: &str) -> Session {
    Session::new(id.into(), format!("pub-{id}").into(), Format::XmlStrict)
}

fn ev(kind: &str, fields: &[(&str, &str)]) -> Event {
    let mut ev = Event::new(kind);
    for (k, v) in fields {
        ev.set(k, v);
    }
    ev
}

fn reply(kind: &str, fields: &[(&str, &str)]) -> Step {
    Step::Reply(vec![ev(kind, fields)])
}

fn nack_step(reason: &str) -> Step {
    Step::Reply(vec![nack(reason)])
}

fn text_msg(topic: &str, data: &'static [u8]) -> Message {
    Message::new(7, Arc::from(topic), 1_795_325_654_000, Bytes::from_static(data))
}

fn json_msg(topic: &str, data: &'static [u8]) -> Message {
    text_msg(topic, data).with_content_type(Some(PUBLISH_CONTENT_TYPE.into()))
}

/// `(p_sid, p_label)` of the data event `s` makes for a message on `topic`, or None.
fn stamp(s: &Session, topic: &str) -> Option<(Option<String>, Option<String>)> {
    let ev = s.data_event(&text_msg(topic, b"x"))?;
    Some((ev.get("p_sid").map(String::from), ev.get("p_label").map(String::from)))
}

fn subscribed(s: &mut Session, query: &str) {
    assert!(matches!(s.handle(&req(query), &any), Step::Resubscribed(_)), "{query}");
}

#[test]
fn join_acks_with_id_and_format() {
    let mut s = Session::new("abc".into(), "pub-abc".into(), Format::Xml);
    assert_eq!(
        s.handle(&req("p_event=join&p_format=xml"), &any),
        reply("join-ack", &[("p_id", "abc"), ("p_format", "xml")])
    );
    assert_eq!(join_ack(&s), ev("join-ack", &[("p_id", "abc"), ("p_format", "xml")]));
    assert!(!s.listening());
    assert_eq!(s.mode(), Mode::Stream);
    assert_eq!(s.cursor(), 0);
    s.set_cursor(42);
    assert_eq!(s.cursor(), 42);
}

#[test]
fn join_listen_subscribes_and_starts_delivery() {
    let mut s = Session::new("abc".into(), "pub-abc".into(), Format::XmlStrict);
    let step = s.handle(
        &req("p_event=join-listen&p_format=xml-strict&p_mode=pull&p_subject=/pushlet/ping&p_label=pinger"),
        &any,
    );
    let ack = ev(
        "join-listen-ack",
        &[("p_id", "abc"), ("p_sid", "s1"), ("p_label", "pinger"), ("p_mode", "pull"), ("p_format", "xml-strict")],
    );
    assert_eq!(step, Step::Listen { ack: vec![ack] });
    assert!(s.listening());
    assert_eq!(s.mode(), Mode::Pull);
    assert_eq!(stamp(&s, "/pushlet/ping"), Some((Some("s1".into()), Some("pinger".into()))));
}

#[test]
fn listen_sets_mode_and_format_and_keeps_them() {
    let mut s = Session::new("abc".into(), "pub-abc".into(), Format::Js);
    let step = s.handle(&req("p_event=listen&p_id=abc"), &any);
    let ack = ev("listen-ack", &[("p_id", "abc"), ("p_mode", "stream"), ("p_format", "js")]);
    assert_eq!(step, Step::Listen { ack: vec![ack] });
    let step = s.handle(&req("p_event=listen&p_id=abc&p_mode=poll&p_format=xml"), &any);
    let ack = ev("listen-ack", &[("p_id", "abc"), ("p_mode", "poll"), ("p_format", "xml")]);
    assert_eq!(step, Step::Listen { ack: vec![ack] });
    assert_eq!((s.mode(), s.format()), (Mode::Poll, Format::Xml));
}

#[test]
fn a_refused_listen_changes_nothing() {
    let mut s = session("abc");
    let step = s.handle(&req("p_event=listen&p_id=abc&p_mode=pull&p_subject=/ok,bad%20subject"), &any);
    assert_eq!(step, nack_step("invalid subject bad subject: topic must start with '/'"));
    assert!(!s.listening());
    assert_eq!(s.mode(), Mode::Stream);
    assert_eq!(s.selectors().len(), 1, "only the unicast topic");
}

#[test]
fn subscribe_needs_a_subject() {
    let mut s = session("abc");
    for q in [
        "p_event=subscribe&p_id=abc",
        "p_event=subscribe&p_id=abc&p_subject=",
        "p_event=subscribe&p_id=abc&p_subject=,%20,",
    ] {
        assert_eq!(s.handle(&req(q), &any), nack_step("no subject provided"), "{q}");
    }
}

#[test]
fn comma_separated_subjects_share_one_sid() {
    let mut s = session("abc");
    let step = s.handle(&req("p_event=subscribe&p_id=abc&p_subject=/a,%20/b/,/a&p_label=L"), &any);
    let ack = ev("subscribe-ack", &[("p_id", "abc"), ("p_subject", "/a,/b"), ("p_sid", "s1"), ("p_label", "L")]);
    assert_eq!(step, Step::Resubscribed(vec![ack]));
    let step = s.handle(&req("p_event=subscribe&p_id=abc&p_subject=/c"), &any);
    let ack = ev("subscribe-ack", &[("p_id", "abc"), ("p_subject", "/c"), ("p_sid", "s2")]);
    assert_eq!(step, Step::Resubscribed(vec![ack]));
    assert_eq!(stamp(&s, "/a/x"), Some((Some("s1".into()), Some("L".into()))));
    assert_eq!(stamp(&s, "/b"), Some((Some("s1".into()), Some("L".into()))));
    assert_eq!(stamp(&s, "/c"), Some((Some("s2".into()), None)));
}

#[test]
fn subscription_bounds() {
    let mut s = session("abc");
    let label = "l".repeat(MAX_LABEL_LEN + 1);
    assert_eq!(
        s.handle(&req(&format!("p_event=subscribe&p_id=abc&p_subject=/a&p_label={label}")), &any),
        nack_step("p_label too long (at most 256 bytes)")
    );
    let list: Vec<String> = (0..MAX_SUBJECTS).map(|i| format!("/t{i}")).collect();
    subscribed(&mut s, &format!("p_event=subscribe&p_id=abc&p_subject={}", list[..MAX_SUBJECTS - 1].join(",")));
    assert_eq!(
        s.handle(&req("p_event=subscribe&p_id=abc&p_subject=/x,/y"), &any),
        nack_step("too many subjects (at most 32 per session)")
    );
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/x");
    assert_eq!(
        s.handle(&req("p_event=subscribe&p_id=abc&p_subject=/y"), &any),
        nack_step("too many subjects (at most 32 per session)")
    );
    let long = format!("/{}", ["b"; 4].map(|_| "b".repeat(127)).join("/"));
    assert_eq!(long.len(), crate::model::MAX_TOPIC_LEN);
    let mut t = session("t");
    assert_eq!(
        t.handle(&req(&format!("p_event=subscribe&p_id=t&p_subject={long}")), &any),
        nack_step("subject too long (at most 509 bytes)")
    );
    subscribed(&mut t, &format!("p_event=subscribe&p_id=t&p_subject={}", &long[..509]));
}

#[test]
fn unsubscribe_by_sid_or_all() {
    let mut s = session("abc");
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/a,/b&p_label=L");
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/c");
    assert_eq!(s.handle(&req("p_event=unsubscribe&p_id=abc&p_sid=s9"), &any), nack_step("unknown p_sid s9"));
    let step = s.handle(&req("p_event=unsubscribe&p_id=abc&p_sid=s1"), &any);
    let ack = ev("unsubscribe-ack", &[("p_id", "abc"), ("p_sid", "s1"), ("p_subject", "/a,/b"), ("p_label", "L")]);
    assert_eq!(step, Step::Resubscribed(vec![ack]));
    assert_eq!(stamp(&s, "/a"), None);
    assert_eq!(stamp(&s, "/c"), Some((Some("s2".into()), None)));
    // Ids are not reused after an unsubscribe.
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/d");
    assert_eq!(stamp(&s, "/d"), Some((Some("s3".into()), None)));
    let step = s.handle(&req("p_event=unsubscribe&p_id=abc"), &any);
    assert_eq!(step, Step::Resubscribed(vec![ev("unsubscribe-ack", &[("p_id", "abc")])]));
    assert_eq!(stamp(&s, "/c"), None);
    assert_eq!(s.selectors().len(), 1);
    // Nothing left to remove: just the ack.
    assert_eq!(
        s.handle(&req("p_event=unsubscribe&p_id=abc&p_sid="), &any),
        reply("unsubscribe-ack", &[("p_id", "abc")])
    );
}

#[test]
fn publish_to_subjects() {
    let mut s = session("pub1");
    let step = s.handle(
        &req("p_event=publish&p_id=pub1&p_subject=/a/b,%20/c,/a/b&msg=hi%20there&n=1&p_label=x&p_from=forged"),
        &any,
    );
    let Step::Publish { reply, topics, body, event } = step else {
        panic!("expected a publish, got {step:?}");
    };
    assert_eq!(reply, vec![Event::new("publish-ack")]);
    assert_eq!(topics, vec![Box::from("/a/b"), Box::from("/c")]);
    assert_eq!(event, None);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        body,
        serde_json::json!({"msg": "hi there", "n": "1", "p_from": "pub-pub1"}),
        "the public id, never the session id"
    );
}

#[test]
fn publish_unicast_with_p_to() {
    let mut s = session("pub1");
    let step = s.handle(&req("p_event=publish&p_id=pub1&p_to=other&p_subject=/ignored&m=1"), &any);
    let Step::Publish { topics, .. } = step else {
        panic!("expected a publish, got {step:?}");
    };
    assert_eq!(topics, vec![Box::from("/pushlet/to/other")]);
    for bad in ["a/b", "a%20b", "..", "a*"] {
        let step = s.handle(&req(&format!("p_event=publish&p_id=pub1&p_to={bad}")), &any);
        assert!(matches!(&step, Step::Reply(evs) if evs[0].kind() == "nack"), "{bad}: {step:?}");
    }
}

#[test]
fn publish_refusals() {
    let mut s = session("pub1");
    assert_eq!(s.handle(&req("p_event=publish&p_id=pub1&msg=x"), &any), nack_step("no subject provided"));
    assert_eq!(
        s.handle(&req("p_event=publish&p_id=pub1&p_subject=/a/*"), &any),
        nack_step("invalid subject /a/*: topic names cannot contain '*'")
    );
    let only_news = |topic: &str| topic.starts_with("/news/");
    assert_eq!(
        s.handle(&req("p_event=publish&p_id=pub1&p_subject=/news/a,/stocks"), &only_news),
        nack_step("publishing to /stocks is not allowed")
    );
    assert!(matches!(s.handle(&req("p_event=publish&p_id=pub1&p_subject=/news/a"), &only_news), Step::Publish { .. }));
    let none = |_: &str| false;
    assert_eq!(
        s.handle(&req("p_event=publish&p_id=pub1&p_to=x"), &none),
        nack_step("publishing to /pushlet/to/x is not allowed")
    );
    let many: Vec<String> = (0..=MAX_SUBJECTS).map(|i| format!("/t{i}")).collect();
    assert_eq!(
        s.handle(&req(&format!("p_event=publish&p_id=pub1&p_subject={}", many.join(","))), &any),
        nack_step("too many subjects (at most 32)")
    );
}

#[test]
fn hb_leave_and_unknown() {
    let mut s = session("abc");
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/a");
    assert!(matches!(s.handle(&req("p_event=listen&p_id=abc"), &any), Step::Listen { .. }));
    assert_eq!(s.handle(&req("p_event=hb&p_id=abc"), &any), reply("hb-ack", &[]));
    // An unknown event is refused but the session keeps its state (the original killed it).
    assert_eq!(s.handle(&req("p_event=dance&p_id=abc"), &any), nack_step("unknown p_event dance"));
    assert_eq!(s.handle(&req("p_event=a%0Ab&p_id=abc"), &any), nack_step("unknown p_event a?b"));
    assert!(s.listening());
    assert!(stamp(&s, "/a").is_some());
    assert_eq!(s.handle(&req("p_event=leave&p_id=abc"), &any), Step::Leave(vec![ev("leave-ack", &[("p_id", "abc")])]));
    assert!(!s.listening());
    assert_eq!(stamp(&s, "/a"), None);
}

#[test]
fn refresh_rounds() {
    let mut s = session("abc");
    assert_eq!(s.handle(&req("p_event=refresh&p_id=abc"), &any), nack_step("refresh before listen"));
    assert!(matches!(s.handle(&req("p_event=listen&p_id=abc"), &any), Step::Listen { .. }));
    assert_eq!(s.handle(&req("p_event=refresh&p_id=abc"), &any), nack_step("refresh is for pull and poll modes"));
    assert_eq!(s.handle(&req("p_event=refresh&p_id=abc&p_mode=pull"), &any), Step::Refresh);
    assert_eq!(s.mode(), Mode::Pull);
    assert_eq!(s.handle(&req("p_event=refresh&p_id=abc"), &any), Step::Refresh);
    assert_eq!(s.handle(&req("p_event=refresh&p_id=abc&p_mode=poll"), &any), Step::Refresh);
    assert_eq!(s.mode(), Mode::Poll);
    assert_eq!(refresh_ack(), Event::new("refresh-ack"));
}

#[test]
fn selectors_cover_subjects_by_whole_segments() {
    let mut s = session("abc");
    assert_eq!(s.selectors(), vec![Selector::Exact(Arc::from("/pushlet/to/pub-abc"))]);
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/stocks");
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/stocks");
    let sel = s.selectors();
    let want = [
        Selector::Exact(Arc::from("/pushlet/to/pub-abc")),
        Selector::Exact(Arc::from("/stocks")),
        Selector::parse("/stocks/**").expect("pattern"),
    ];
    assert_eq!(sel, want, "no duplicates");
    let selected = |topic: &str| sel.iter().any(|s| s.matches(topic));
    for yes in ["/stocks", "/stocks/aex", "/stocks/aex/ing", "/pushlet/to/pub-abc"] {
        assert!(selected(yes), "{yes}");
        assert!(s.data_event(&text_msg(yes, b"x")).is_some(), "{yes}");
    }
    for no in ["/stocksX", "/stock", "/other/stocks", "/pushlet/to/pub-abcd"] {
        assert!(!selected(no), "{no}");
        assert!(s.data_event(&text_msg(no, b"x")).is_none(), "{no}");
    }
}

#[test]
fn selectors_at_the_edges() {
    let mut s = session("abc");
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/");
    assert!(s.selectors().contains(&Selector::parse("/**").expect("pattern")));
    for bad in ["//", "/a//", "a/"] {
        let step = s.handle(&req(&format!("p_event=subscribe&p_id=abc&p_subject={bad}")), &any);
        assert!(matches!(&step, Step::Reply(evs) if evs[0].kind() == "nack"), "{bad}: {step:?}");
    }
    assert!(stamp(&s, "/anything/at/all").is_some());
    let deepest = "/a".repeat(crate::model::MAX_SEGMENTS);
    let mut t = session("t");
    subscribed(&mut t, &format!("p_event=subscribe&p_id=t&p_subject={deepest}"));
    // Nothing can be below a topic with the most segments: the exact selector is enough.
    assert_eq!(t.selectors()[1..], [Selector::Exact(Arc::from(deepest.as_str()))]);
}

#[test]
fn unicast_reaches_only_its_session() {
    let mut a = session("aaa");
    subscribed(&mut a, "p_event=subscribe&p_id=aaa&p_subject=/pushlet");
    let own = a.data_event(&text_msg("/pushlet/to/pub-aaa", b"psst")).expect("own unicast");
    assert_eq!(own.get("p_sid"), None);
    assert_eq!(own.get("p_data"), Some("psst"));
    // A subscription to /pushlet names /pushlet/to/pub-bbb by prefix, yet another session's
    // unicast never reaches it (no pattern reads a private topic; this checks again).
    assert!(a.data_event(&text_msg("/pushlet/to/pub-bbb", b"psst")).is_none());
    assert!(a.data_event(&text_msg("/pushlet/ping", b"x")).is_some());
}

#[test]
fn one_copy_stamped_by_the_first_matching_subscription() {
    let mut s = session("abc");
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/a/b&p_label=deep");
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/a&p_label=wide");
    assert_eq!(stamp(&s, "/a/b/c"), Some((Some("s1".into()), Some("deep".into()))));
    assert_eq!(stamp(&s, "/a/x"), Some((Some("s2".into()), Some("wide".into()))));
    let ev = s.data_event(&text_msg("/a/b", b"x")).expect("matches");
    assert_eq!(ev.fields().filter(|(k, _)| *k == "p_sid").count(), 1);
}

#[test]
fn labels_never_leak_across_sessions() {
    let mut labelled = session("one");
    let mut plain = session("two");
    subscribed(&mut labelled, "p_event=subscribe&p_id=one&p_subject=/news&p_label=secret");
    subscribed(&mut plain, "p_event=subscribe&p_id=two&p_subject=/news");
    let msg = text_msg("/news/x", b"x");
    let a = labelled.data_event(&msg).expect("matches");
    let b = plain.data_event(&msg).expect("matches");
    assert_eq!((a.get("p_label"), a.get("p_id")), (Some("secret"), Some("one")));
    assert_eq!((b.get("p_label"), b.get("p_id")), (None, Some("two")));
}

#[test]
fn data_events_from_json_objects() {
    let mut s = session("abc");
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/j");
    let msg = json_msg(
        "/j/1",
        br#"{"msg":"hi \"you\"","n":1.5,"o":{"x":[1,null]},"b":true,"p_from":"pub","p_sid":"forged","p_event":"x","p_label":"forged"}"#,
    );
    let ev = s.data_event(&msg).expect("matches");
    let mut got: Vec<(&str, &str)> = ev.fields().collect();
    got.sort_unstable();
    let mut want = vec![
        ("p_event", "data"),
        ("msg", "hi \"you\""),
        ("n", "1.5"),
        ("o", r#"{"x":[1,null]}"#),
        ("b", "true"),
        ("p_from", "pub"),
        ("p_subject", "/j/1"),
        ("p_id", "abc"),
        ("p_sid", "s1"),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(ev.kind(), "data");
}

#[test]
fn data_events_fall_back_to_p_data() {
    let mut s = session("abc");
    subscribed(&mut s, "p_event=subscribe&p_id=abc&p_subject=/j");
    let p_data = |msg: &Message| {
        let ev = s.data_event(msg).expect("matches");
        (ev.get("p_data").map(String::from), ev.get("p_encoding").map(String::from))
    };
    // Plain text, JSON text without a JSON content type, JSON that is not an object, an object
    // with a key that cannot be a field name: the text as p_data, losing nothing.
    for (msg, text) in [
        (text_msg("/j", b"hello </script>"), "hello </script>"),
        (text_msg("/j", br#"{"a":1}"#), r#"{"a":1}"#),
        (json_msg("/j", b"[1,2]"), "[1,2]"),
        (json_msg("/j", br#"{"a b":1}"#), r#"{"a b":1}"#),
    ] {
        assert_eq!(p_data(&msg), (Some(text.to_owned()), None));
    }
    let many: String = format!("{{{}}}", (0..=MAX_FIELDS).map(|i| format!("\"k{i}\":1")).collect::<Vec<_>>().join(","));
    let msg = Message::new(7, Arc::from("/j"), 0, Bytes::from(many.clone()))
        .with_content_type(Some("application/json".into()));
    assert_eq!(p_data(&msg), (Some(many), None));
    assert_eq!(p_data(&text_msg("/j", b"\xff\x00bin")), (Some("/wBiaW4=".to_owned()), Some("base64".to_owned())));
}

#[test]
fn a_pushlet_publish_arrives_as_the_same_fields() {
    let mut publisher = session("pub1");
    let mut reader = session("rd1");
    subscribed(&mut reader, "p_event=subscribe&p_id=rd1&p_subject=/pushlet/ping&p_label=L");
    let Step::Publish { topics, body, .. } =
        publisher.handle(&req("p_event=publish&p_id=pub1&p_subject=/pushlet/ping&msg=hi%20there"), &any)
    else {
        panic!("expected a publish");
    };
    let msg = Message::new(1, Arc::from(&*topics[0]), 0, body).with_content_type(Some(PUBLISH_CONTENT_TYPE.into()));
    let ev = reader.data_event(&msg).expect("subscribed");
    let mut got: Vec<(&str, &str)> = ev.fields().collect();
    got.sort_unstable();
    let mut want = vec![
        ("p_event", "data"),
        ("msg", "hi there"),
        ("p_from", "pub-pub1"),
        ("p_subject", "/pushlet/ping"),
        ("p_id", "rd1"),
        ("p_sid", "s1"),
        ("p_label", "L"),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn server_events() {
    assert_eq!(
        refresh_event("vurocyjalo", "/pushlet/pushlet.srv", 2924),
        ev("refresh", &[("p_wait", "2924"), ("p_url", "/pushlet/pushlet.srv?p_id=vurocyjalo&p_event=refresh")])
    );
    assert_eq!(
        refresh_event("a b&c", "/pushlet.srv", 1).get("p_url"),
        Some("/pushlet.srv?p_id=a+b%26c&p_event=refresh")
    );
    assert_eq!(nack("why"), ev("nack", &[("p_reason", "why")]));
    assert_eq!(abort("bye"), ev("abort", &[("p_reason", "bye")]));
    assert_eq!(error("behind"), ev("error", &[("p_reason", "behind")]));
    assert_eq!(hb(), Event::new("hb"));
    assert!(PULL_WAIT_MS.contains(&2000) && PULL_WAIT_MS.contains(&6000) && POLL_WAIT_MS.contains(&10_000));
}
