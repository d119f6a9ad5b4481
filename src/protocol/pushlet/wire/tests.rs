use super::*;
use crate::protocol::pushlet::xml::parse_events;
use crate::protocol::pushlet::{abort, hb, nack, refresh_ack};

const NOW: u64 = 1_795_325_654;

type Fields = Vec<(String, String)>;

fn ev(kind: &str, fields: &[(&str, &str)]) -> Event {
    let mut ev = Event::new(kind);
    for (k, v) in fields {
        ev.set(k, v);
    }
    ev
}

fn sorted(mut fields: Fields) -> Fields {
    fields.sort_unstable();
    fields
}

/// The fields an event should arrive with: its own plus p_time (and p_seq).
fn expected(ev: &Event, seq: Option<u64>) -> Fields {
    let mut out: Fields = ev.fields().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    out.push(("p_time".into(), NOW.to_string()));
    if let Some(seq) = seq {
        out.push(("p_seq".into(), seq.to_string()));
    }
    sorted(out)
}

/// A whole reply: head, the events, and the tail (with an end of round when `round`).
fn reply(format: Format, events: &[Event], round: Option<(&str, u64)>) -> String {
    let mut w = Writer::new(format);
    let mut out = w.head();
    for ev in events {
        out.extend_from_slice(&w.event(ev, NOW));
    }
    match round {
        Some((id, wait)) => out.extend_from_slice(&w.end_round(id, "/pushlet/pushlet.srv", wait, NOW)),
        None => out.extend_from_slice(&w.tail(None)),
    }
    String::from_utf8(out).expect("UTF-8")
}

/// Reads a js page back: the events pushed, and the refresh (url, wait) if the page ends a round.
fn parse_js(page: &str) -> (Vec<Fields>, Option<(String, u64)>) {
    let mut rest = page.strip_prefix(JS_HEAD).expect("the start document");
    let mut events = Vec::new();
    let open = format!("{JS_OPEN}parent.push(");
    while let Some(after) = rest.strip_prefix(open.as_str()) {
        let end = after.find(");</script>").expect("the script ends");
        let args = &after[..end];
        // The escaping guarantees: nothing inside the script can end it or break a line.
        assert!(!args.contains(['<', '>', '\n', '\r', '\u{2028}', '\u{2029}']), "{args}");
        events.push(parse_push_args(args));
        rest = &after[end + ");</script>".len()..];
    }
    let mut refresh = None;
    if let Some(after) = rest.strip_prefix(&format!("{JS_OPEN}url = ")) {
        let (url, after) = js_string(after);
        let after = after.strip_prefix("; setTimeout(\"refresh()\", ").expect("setTimeout");
        let end = after.find(");</script>").expect("the script ends");
        refresh = Some((url, after[..end].parse().expect("a wait")));
        rest = &after[end + ");</script>".len()..];
    }
    assert_eq!(rest, JS_END);
    (events, refresh)
}

/// `'k', "v",'k2', "v2"` into pairs.
fn parse_push_args(mut args: &str) -> Fields {
    let mut out = Vec::new();
    while !args.is_empty() {
        let name_end = args[1..].find('\'').expect("a quoted name") + 1;
        let name = args[1..name_end].to_owned();
        let (value, rest) = js_string(args[name_end + 1..].strip_prefix(", ").expect("', '"));
        out.push((name, value));
        args = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

/// A double-quoted JavaScript string literal at the start of `s`, unescaped; and what follows.
fn js_string(s: &str) -> (String, &str) {
    let mut chars = s.strip_prefix('"').expect("a string").char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 2..]),
            '\\' => {
                let (_, e) = chars.next().expect("an escape");
                let mut hex = |n: usize| {
                    let digits: String = (0..n).map(|_| chars.next().expect("hex").1).collect();
                    char::from_u32(u32::from_str_radix(&digits, 16).expect("hex")).expect("a char")
                };
                out.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'x' => hex(2),
                    'u' => hex(4),
                    other => other,
                });
            }
            c => out.push(c),
        }
    }
    panic!("unterminated string in {s}");
}

#[test]
fn content_types() {
    assert_eq!(content_type(Format::Js), "text/html;charset=UTF-8");
    assert_eq!(content_type(Format::Xml), "text/plain;charset=UTF-8");
    assert_eq!(content_type(Format::XmlStrict), "text/xml;charset=UTF-8");
}

#[test]
fn golden_xml_strict_pull_round() {
    // The spec's example: a refresh that had one queued event.
    let spec = r#"<pushlet><event p_event="refresh-ack" p_time="1795325654" /><event msg="hi there" p_from="hymurasoji" p_time="1795325654" p_event="data" p_subject="/pushlet/ping" p_seq="1" p_sid="sygeb" p_id="hymurasoji" /><event p_time="1795325654" p_wait="2924" p_event="refresh" p_url="/pushlet/pushlet.srv?p_id=vurocyjalo&amp;p_event=refresh" /></pushlet>"#;
    let data = ev(
        "data",
        &[
            ("msg", "hi there"),
            ("p_from", "hymurasoji"),
            ("p_subject", "/pushlet/ping"),
            ("p_sid", "sygeb"),
            ("p_id", "hymurasoji"),
        ],
    );
    let ours = reply(Format::XmlStrict, &[refresh_ack(), data], Some(("vurocyjalo", 2924)));
    assert!(ours.starts_with("<pushlet><event p_event=\"refresh-ack\" ") && ours.ends_with(" /></pushlet>"));
    let want: Vec<Fields> = parse_events(spec).expect("the spec parses").into_iter().map(sorted).collect();
    let got: Vec<Fields> = parse_events(&ours).expect("ours parses").into_iter().map(sorted).collect();
    assert_eq!(got, want);
    // The same round in `xml` is the same events, unwrapped.
    let plain = reply(Format::Xml, &[refresh_ack(), ev("data", &[("msg", "hi there")])], Some(("vurocyjalo", 2924)));
    assert!(plain.starts_with("<event p_event=\"refresh-ack\" ") && plain.ends_with(" />"));
    assert_eq!(parse_events(&plain).map(|evs| evs.len()), Ok(3));
}

#[test]
fn golden_js_heartbeat() {
    let mut w = Writer::new(Format::Js);
    assert_eq!(
        String::from_utf8(w.event(&hb(), 1_795_325_678)).expect("UTF-8"),
        r#"<script language="JavaScript">parent.push('p_event', "hb",'p_time', "1795325678",'p_seq', "1");</script>"#
    );
}

#[test]
fn every_reply_in_every_format() {
    let replies = [
        ev("join-ack", &[("p_id", "abc"), ("p_format", "js")]),
        ev(
            "join-listen-ack",
            &[("p_id", "abc"), ("p_sid", "s1"), ("p_label", "L"), ("p_mode", "pull"), ("p_format", "xml")],
        ),
        ev("listen-ack", &[("p_id", "abc"), ("p_mode", "stream"), ("p_format", "xml-strict")]),
        ev("subscribe-ack", &[("p_id", "abc"), ("p_subject", "/a,/b"), ("p_sid", "s1"), ("p_label", "L")]),
        ev("unsubscribe-ack", &[("p_id", "abc"), ("p_sid", "s1"), ("p_subject", "/a,/b")]),
        ev("publish-ack", &[]),
        ev("hb-ack", &[]),
        ev("leave-ack", &[("p_id", "abc")]),
        refresh_ack(),
        nack("no subject provided"),
        abort("server shutting down"),
    ];
    for format in [Format::Js, Format::Xml, Format::XmlStrict] {
        for r in &replies {
            let page = reply(format, std::slice::from_ref(r), None);
            let events = match format {
                Format::Js => parse_js(&page).0,
                _ => parse_events(&page).expect("well-formed"),
            };
            assert_eq!(events.into_iter().map(sorted).collect::<Vec<_>>(), [expected(r, None)], "{format:?} {page}");
            match format {
                Format::XmlStrict => assert!(page.starts_with("<pushlet><event ") && page.ends_with(" /></pushlet>")),
                Format::Xml => assert!(page.starts_with("<event ") && page.ends_with(" />")),
                Format::Js => assert!(page.ends_with("</script></body></html>")),
            }
        }
    }
}

#[test]
fn rounds_end_per_format() {
    let events = [refresh_ack(), ev("data", &[("m", "1")]), hb()];
    let (pushed, refresh) = parse_js(&reply(Format::Js, &events, Some(("abc", 2924))));
    // In js the refresh is not pushed: the page schedules it.
    assert_eq!(pushed.iter().map(|f| f[0].1.as_str()).collect::<Vec<_>>(), ["refresh-ack", "data", "hb"]);
    assert_eq!(refresh, Some(("/pushlet/pushlet.srv?p_id=abc&p_event=refresh".to_owned(), 2924)));
    for format in [Format::Xml, Format::XmlStrict] {
        let parsed = parse_events(&reply(format, &events, Some(("abc", 2924)))).expect("well-formed");
        let last = sorted(parsed[3].clone());
        assert_eq!(last, expected(&refresh_event("abc", "/pushlet/pushlet.srv", 2924), None), "{format:?}");
    }
    // A stream page that is ended (e.g. at shutdown) just closes.
    let (pushed, refresh) = parse_js(&reply(Format::Js, &[abort("bye")], None));
    assert_eq!((pushed.len(), refresh), (1, None));
}

#[test]
fn p_seq_counts_data_and_hb_per_response() {
    let events = [refresh_ack(), ev("data", &[("a", "1")]), hb(), ev("data", &[("p_seq", "99"), ("p_time", "5")])];
    let parsed = parse_events(&reply(Format::XmlStrict, &events, None)).expect("well-formed");
    let seq = |f: &Fields| f.iter().find(|(k, _)| k == "p_seq").map(|(_, v)| v.clone());
    let time = |f: &Fields| f.iter().find(|(k, _)| k == "p_time").map(|(_, v)| v.clone());
    assert_eq!(
        parsed.iter().map(seq).collect::<Vec<_>>(),
        [None, Some("1".into()), Some("2".into()), Some("3".into())]
    );
    // The server's p_time and p_seq replace any the event carried, once each.
    assert!(parsed.iter().all(|f| time(f) == Some(NOW.to_string())));
    assert_eq!(parsed[3].iter().filter(|(k, _)| k == "p_seq" || k == "p_time").count(), 2);
    // A new response starts again at 1.
    let again = parse_events(&reply(Format::Xml, &[hb()], None)).expect("well-formed");
    assert_eq!(seq(&again[0]), Some("1".into()));
}

#[test]
fn hostile_values_stay_inside_the_script() {
    let hostile = [
        "</script><script>alert(1)</script>",
        "</SCRIPT >",
        "<!--<script>",
        "quote\" apostrophe' backslash\\ \\\" end\\",
        "line\nfeed\rreturn\r\n tab\t nul\u{0} esc\u{1b} del\u{7f}",
        "separators \u{2028} \u{2029}",
        "&lt; stays literal & caf\u{e9} \u{1F600}",
        "",
    ];
    let mut data = Event::new("data");
    for (i, v) in hostile.iter().enumerate() {
        data.set(&format!("v{i}"), v);
    }
    let page = reply(Format::Js, std::slice::from_ref(&data), None);
    let body = &page[JS_HEAD.len()..];
    assert_eq!(body.matches("</script>").count(), 1, "only our own script end: {body}");
    assert!(!body.to_ascii_lowercase().contains("<script>alert"));
    let (events, _) = parse_js(&page);
    assert_eq!(sorted(events[0].clone()), expected(&data, Some(1)));
    // And the same values survive both XML formats.
    for format in [Format::Xml, Format::XmlStrict] {
        let page = reply(format, std::slice::from_ref(&data), None);
        let mut parsed = parse_events(&page).expect("well-formed");
        let got = sorted(parsed.remove(0));
        // XML 1.0 cannot carry NUL or ESC: those two become U+FFFD, all else is exact.
        let mut want = expected(&data, Some(1));
        for (_, v) in &mut want {
            *v = v.replace(['\u{0}', '\u{1b}'], "\u{FFFD}");
        }
        assert_eq!(got, want, "{format:?}");
    }
}

#[test]
fn invalid_names_are_not_written() {
    let mut bad = Event::new("data");
    bad.set("ok", "1");
    bad.set("x\" onload=\"evil", "2");
    bad.set("a'b", "3");
    for format in [Format::Xml, Format::Js] {
        let page = reply(format, std::slice::from_ref(&bad), None);
        assert!(!page.contains("evil") && !page.contains("a'b"), "{page}");
    }
    let parsed = parse_events(&reply(Format::XmlStrict, &[bad], None)).expect("well-formed");
    assert_eq!(parsed[0].iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["p_event", "ok", "p_time", "p_seq"]);
}

#[test]
fn heads_and_tails() {
    let mut js = Writer::new(Format::Js);
    let head = String::from_utf8(js.head()).expect("UTF-8");
    assert!(head.starts_with("<html><head>") && head.ends_with("<body>\n"));
    assert!(head.contains("no-cache") && head.contains("function refresh()"));
    assert_eq!(js.tail(None), JS_END.as_bytes());
    let mut strict = Writer::new(Format::XmlStrict);
    assert_eq!((strict.head(), strict.tail(None)), (b"<pushlet>".to_vec(), b"</pushlet>".to_vec()));
    let mut xml = Writer::new(Format::Xml);
    assert_eq!((xml.head(), xml.tail(Some(("/x", 1)))), (Vec::new(), Vec::new()));
    assert_eq!(xml.format(), Format::Xml);
}

#[test]
fn ajax_client_join_listen_pull_flow() {
    use crate::protocol::pushlet::{parse_request, Session, Step};
    // What ajax-pushlet-client.js sends first, and the page it gets back: ack, then refresh.
    let req = parse_request(Some("p_event=join-listen&p_format=xml-strict&p_mode=pull&p_subject=/pushlet/ping"), b"")
        .expect("valid");
    let mut session = Session::new("vurocyjalo".into(), "hymurasoji".into(), req.format.unwrap_or_default());
    let Step::Listen { ack } = session.handle(&req, &|_: &str| true) else {
        panic!("expected a listen");
    };
    let page = reply(session.format(), &ack, Some((session.id(), 3000)));
    let events = parse_events(&page).expect("well-formed");
    let kinds: Vec<&str> = events.iter().map(|f| f[0].1.as_str()).collect();
    assert_eq!(kinds, ["join-listen-ack", "refresh"]);
    assert!(events[1].contains(&("p_url".into(), "/pushlet/pushlet.srv?p_id=vurocyjalo&p_event=refresh".into())));
    assert_eq!(content_type(session.format()), "text/xml;charset=UTF-8");
}

/// Found by the `pushlet` fuzz target: a publish whose JSON has an `xmlns` key (a valid name by
/// its characters) became `<event xmlns="...">`, a namespace declaration rather than a field:
/// with `http://www.w3.org/XML/1998/namespace` or `http://www.w3.org/2000/xmlns/` as its value
/// no namespace-aware parser (a browser's `responseXML`) accepts the document, so every
/// xml-strict listener of the topic lost the reply.
#[test]
fn xmlns_is_never_written() {
    for value in ["http://www.w3.org/XML/1998/namespace", "http://www.w3.org/2000/xmlns/", "urn:x"] {
        let ev = ev("data", &[("xmlns", value), ("ok", "1")]);
        for format in [Format::Xml, Format::XmlStrict, Format::Js] {
            let page = reply(format, std::slice::from_ref(&ev), None);
            assert!(!page.contains("xmlns"), "{page}");
        }
    }
}
