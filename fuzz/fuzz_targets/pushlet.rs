//! The Pushlet request parser and the XML / JS writers, for arbitrary field names and values.
//!
//! Input: `[mode knob] [bytes]`; knob bits 0-1 pick what the bytes are:
//! - 0: a request, `<query string> NUL <POST body>` (`parse_request`), then handled by a session;
//! - 1: an event built directly, `<p_event> NUL <name> NUL <value> NUL <name> ...` (names need
//!   not be valid: the writer must drop what it cannot write);
//! - 2 and 3: a published payload (JSON, or text) delivered to a listening session as a data
//!   event, whose fields come from the payload's keys.
//!
//! Beyond "no panic": refusals are 400s; every event written in every format stays well-formed
//! (xml-strict parses as one XML document with an independent parser, xml as a sequence of
//! elements, js as `parent.push('name', "value", ...)` with strict JavaScript string literals
//! and no way out of the script element), and carries exactly the event's writable fields;
//! Halley's own reader reads an event it wrote back to the same fields.
#![no_main]

use std::sync::Arc;

use halley::model::Message;
use halley::protocol::pushlet::{parse_request, valid_name, Event, Format, Session, Step, Writer};
use halley_fuzz::{is_xml_char, js_string};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;
const SESSION: &str = "fuzz-session";

fuzz_target!(|data: &[u8]| {
    let ([knob], input) = halley_fuzz::knobs::<1>(data);
    match knob & 3 {
        0 => request(input),
        1 => {
            let text = String::from_utf8_lossy(input);
            let mut parts = text.split('\0');
            let mut ev = Event::new(parts.next().unwrap_or(""));
            while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                ev.set(name, value);
            }
            check_written(&ev, SESSION);
        }
        mode => {
            let Ok(listen) = parse_request(Some("p_event=join-listen&p_subject=/fuzz&p_format=xml-strict"), b"") else {
                panic!("the listen request parses")
            };
            let mut session = new_session(SESSION, Format::XmlStrict);
            assert!(matches!(session.handle(&listen, &|_| true), Step::Listen { .. }));
            let content_type = if mode == 2 { "application/json" } else { "text/plain" };
            let msg = Message::new(1, Arc::from("/fuzz"), 0, input.to_vec().into())
                .with_content_type(Some(content_type.into()));
            let ev = session.data_event(&msg).expect("a message on the subject is for the session");
            assert_eq!((ev.kind(), ev.get("p_id"), ev.get("p_subject")), ("data", Some(SESSION), Some("/fuzz")));
            check_written(&ev, SESSION);
        }
    }
});

/// The one place this target makes a session. Its public id (the sender others see) is any
/// fixed text: no assertion here reads it.
fn new_session(id: &str, format: Format) -> Session {
    Session::new(id.into(), "fuzz-public-id".into(), format)
}

/// Mode 0: parse a request, write it back, and let a session handle it.
fn request(input: &[u8]) {
    let (query, body) = match input.iter().position(|&b| b == 0) {
        Some(nul) => (&input[..nul], &input[nul + 1..]),
        None => (input, &[][..]),
    };
    let query = String::from_utf8_lossy(query);
    let req = match parse_request(Some(&query), body) {
        Ok(req) => req,
        Err(e) => {
            assert_eq!(e.status, 400, "{e:?}");
            assert!(!e.reason.is_empty() && e.reason.len() <= 256, "{e:?}");
            return;
        }
    };
    assert!(!req.event.kind().is_empty());
    assert!(req.id.is_some() || req.command.is_join());
    let id = req.id.as_deref().unwrap_or(SESSION);
    check_written(&req.event, id);

    let mut session = new_session(id, req.format.unwrap_or_default());
    let events = match session.handle(&req, &|_| true) {
        Step::Reply(events) | Step::Leave(events) | Step::Resubscribed(events) | Step::Listen { ack: events } => events,
        Step::Publish { reply, topics, body, .. } => {
            assert!(!topics.is_empty());
            let published: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&body).expect("a Pushlet publish is a JSON object");
            assert!(published.keys().all(|k| valid_name(k)), "{published:?}");
            reply
        }
        Step::Refresh => Vec::new(),
    };
    for ev in &events {
        check_written(ev, id);
    }
}

/// The fields `ev` must show on the wire in position `seq` of a response: the writable ones
/// (valid names, not the two the writer stamps), then `p_time`, and `p_seq` for data and hb.
fn expected(ev: &Event, seq: u64) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = ev
        .fields()
        .filter(|(name, _)| valid_name(name) && *name != "p_time" && *name != "p_seq")
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    fields.push(("p_time".into(), NOW.to_string()));
    if matches!(ev.kind(), "data" | "hb") {
        fields.push(("p_seq".into(), seq.to_string()));
    }
    fields
}

/// What an XML reader sees of a value: characters XML cannot carry become U+FFFD.
fn as_xml(fields: &[(String, String)]) -> Vec<(String, String)> {
    let visible = |v: &str| v.chars().map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' }).collect();
    fields.iter().map(|(n, v)| (n.clone(), visible(v))).collect()
}

fn check_written(ev: &Event, session_id: &str) {
    let want = expected(ev, 1);

    // xml-strict: one document, <pushlet> holding the event and the round's refresh event.
    let mut w = Writer::new(Format::XmlStrict);
    let mut doc = w.head();
    let event_bytes = w.event(ev, NOW);
    doc.extend_from_slice(&event_bytes);
    doc.extend_from_slice(&w.end_round(session_id, "/pushlet.srv", 3000, NOW));
    let text = std::str::from_utf8(&doc).expect("xml-strict is UTF-8");
    let parsed = match roxmltree::Document::parse(text) {
        Ok(parsed) => parsed,
        Err(e) => panic!("xml-strict is not well-formed XML ({e}): {text}"),
    };
    let root = parsed.root_element();
    assert_eq!(root.tag_name().name(), "pushlet");
    let events: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(events.len(), 2, "{text}");
    let attrs = |node: &roxmltree::Node<'_, '_>| -> Vec<(String, String)> {
        node.attributes().map(|a| (a.name().to_owned(), a.value().to_owned())).collect()
    };
    assert_eq!(attrs(&events[0]), as_xml(&want), "{text}");
    let refresh = attrs(&events[1]);
    let url = refresh.iter().find(|(n, _)| n == "p_url").map(|(_, v)| v.clone()).expect("refresh has p_url");
    assert!(url.starts_with("/pushlet.srv?p_id="), "{url}");

    // xml: the same event bytes, read back by Halley's own parser as a request body.
    let mut xml = Writer::new(Format::Xml);
    assert_eq!(xml.event(ev, NOW), event_bytes, "xml and xml-strict events differ");
    match parse_request(None, &event_bytes) {
        Ok(back) => {
            let back: Vec<(String, String)> = back.event.fields().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
            assert_eq!(back, as_xml(&want), "Halley read back other fields than it wrote: {text}");
        }
        Err(e) => assert!(!e.reason.starts_with("malformed XML body"), "{e:?} reading back {text}"),
    }

    // js: parent.push('name', "value", ...) inside one script element; the tail's refresh URL
    // is a strict string literal too.
    let mut js = Writer::new(Format::Js);
    let _ = js.head();
    let script = js.event(ev, NOW);
    let script = std::str::from_utf8(&script).expect("js is UTF-8");
    let args = script
        .strip_prefix("<script language=\"JavaScript\">parent.push(")
        .and_then(|s| s.strip_suffix(");</script>"))
        .unwrap_or_else(|| panic!("not one push script: {script}"));
    let lower = args.to_ascii_lowercase();
    assert!(!lower.contains("</script") && !lower.contains("<!--"), "{script}");
    assert_eq!(push_args(args), Some(want.clone()), "{script}");
    let tail = js.end_round(session_id, "/pushlet.srv", 3000, NOW);
    let tail = std::str::from_utf8(&tail).expect("js is UTF-8");
    let url = tail
        .strip_prefix("<script language=\"JavaScript\">url = ")
        .and_then(js_string)
        .unwrap_or_else(|| panic!("no url literal: {tail}"));
    assert!(url.1.starts_with("; setTimeout(\"refresh()\", 3000);</script></body></html>"), "{tail}");
}

/// `'name', "value",'name', "value"...` -> the pairs; `None` if anything is off.
fn push_args(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    loop {
        let (name, rest) = js_string(s)?;
        let (value, rest) = js_string(rest.strip_prefix(", ")?)?;
        out.push((name, value));
        if rest.is_empty() {
            return Some(out);
        }
        s = rest.strip_prefix(',')?;
    }
}
