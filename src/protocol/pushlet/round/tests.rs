//! The orderings of Pushlet replies, listens and refresh rounds, read back from the bytes.

use bytes::Bytes;

use super::*;
use crate::protocol::pushlet::{nack, parse_request, Step};

const NOW: u64 = 1_795_325_654;
const BASE: &str = "/pushlet.srv";

fn any(_: &str) -> bool {
    true
}

/// A session `abc` listening in `mode` (xml-strict), subscribed to `/news`.
fn listening(mode: &str) -> (Session, Vec<Event>) {
    let mut s = Session::new("abc".into(), "pub-abc".into(), Format::XmlStrict);
    let query = format!("p_event=listen&p_id=abc&p_mode={mode}&p_subject=/news");
    let req = parse_request(Some(&query), b"").expect("valid listen");
    match s.handle(&req, &any) {
        Step::Listen { ack } => (s, ack),
        other => panic!("not a listen: {other:?}"),
    }
}

fn msg(seq: u64, topic: &str) -> Arc<Message> {
    Arc::new(Message::new(seq, Arc::from(topic), 5_000, Bytes::from_static(b"x")))
}

/// The `p_event` of every event in an xml / xml-strict body, in order.
fn kinds(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("utf-8");
    text.split("<event p_event=\"").skip(1).map(|rest| rest.split('"').next().unwrap_or("").to_owned()).collect()
}

/// The value of the first `name="..."` attribute in `body`.
fn attr(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).expect("utf-8");
    let rest = text.split(&format!(" {name}=\"")).nth(1)?;
    Some(rest.split('"').next().unwrap_or("").to_owned())
}

fn answer(listener: Listener<'_>, forced: bool) -> Refresh {
    answer_refresh(listener, Format::XmlStrict, BASE, forced, |_| 4_000, NOW)
}

fn body_of(refresh: Refresh, want: Done) -> Vec<u8> {
    match refresh {
        Refresh::Reply { body, done } => {
            assert_eq!(done, want, "{}", String::from_utf8_lossy(&body));
            body
        }
        Refresh::Wait => panic!("expected a reply, got Wait"),
    }
}

#[test]
fn a_reply_is_its_events_in_order() {
    let events = [Event::new("subscribe-ack"), nack("no"), Event::new("hb-ack")];
    let body = reply(Format::XmlStrict, &events, NOW);
    assert_eq!(kinds(&body), ["subscribe-ack", "nack", "hb-ack"]);
    assert!(body.starts_with(b"<pushlet>") && body.ends_with(b"</pushlet>"));
    let js = reply(Format::Js, &events, NOW);
    assert!(js.ends_with(b"</body></html>"), "no refresh scheduled in a plain reply");
    assert!(!String::from_utf8_lossy(&js).contains("setTimeout"));
}

#[test]
fn a_pull_listen_is_the_ack_then_the_first_refresh() {
    let (s, ack) = listening("pull");
    let Listen::Round(body) = listen(&s, &ack, BASE, |mode| if mode == Mode::Pull { 2_500 } else { 0 }, NOW) else {
        panic!("a pull listen is one reply");
    };
    assert_eq!(kinds(&body), ["listen-ack", "refresh"]);
    assert_eq!(attr(&body, "p_wait").as_deref(), Some("2500"));
    assert_eq!(attr(&body, "p_url").as_deref(), Some("/pushlet.srv?p_id=abc&amp;p_event=refresh"));
}

#[test]
fn a_poll_listen_in_js_schedules_the_refresh_in_the_page() {
    let (mut s, _) = listening("poll");
    let req = parse_request(Some("p_event=listen&p_id=abc&p_format=js"), b"").expect("valid");
    let Step::Listen { ack } = s.handle(&req, &any) else { panic!("a listen") };
    let Listen::Round(body) = listen(&s, &ack, "/pushlet/pushlet.srv", |_| 7_000, NOW) else { panic!("one reply") };
    let text = String::from_utf8_lossy(&body);
    let (ack_at, schedule_at) = (text.find("listen-ack"), text.find("setTimeout(\"refresh()\", 7000)"));
    assert!(ack_at.is_some() && schedule_at.is_some() && ack_at < schedule_at, "{text}");
    assert!(text.contains(r#"url = "/pushlet/pushlet.srv?p_id=abc\x26p_event=refresh""#), "{text}");
    assert!(text.ends_with("</body></html>"));
}

#[test]
fn a_stream_listen_is_the_ack_then_an_hb_and_stays_open() {
    let (s, ack) = listening("stream");
    let Listen::Stream { mut writer, first } = listen(&s, &ack, BASE, |_| panic!("a stream has no p_wait"), NOW) else {
        panic!("a stream listen streams");
    };
    assert_eq!(kinds(&first), ["listen-ack", "hb"]);
    assert_eq!(attr(&first, "p_seq").as_deref(), Some("1"), "the hb is the stream's first numbered event");
    assert!(first.starts_with(b"<pushlet>") && !first.ends_with(b"</pushlet>"), "the stream stays open");
    // The writer numbers on from there.
    assert_eq!(attr(&writer.event(&hb(), NOW), "p_seq").as_deref(), Some("2"));
}

#[test]
fn a_refresh_with_nothing_waits_until_forced_then_sends_an_hb() {
    let (s, _) = listening("pull");
    let backlog = Backlog::new(10);
    assert_eq!(answer(Listener::Live { session: &s, backlog }, false), Refresh::Wait);
    let body = body_of(answer(Listener::Live { session: &s, backlog: Backlog::new(10) }, true), Done::Delivered);
    assert_eq!(kinds(&body), ["refresh-ack", "hb", "refresh"]);
    assert_eq!(attr(&body, "p_wait").as_deref(), Some("4000"));
}

#[test]
fn a_refresh_sends_its_events_between_the_ack_and_the_refresh() {
    let (s, _) = listening("pull");
    let mut backlog = Backlog::new(10);
    assert!(!backlog.take(&s, &[msg(1, "/news"), msg(2, "/other"), msg(3, "/news/a")], false, false));
    let body = body_of(answer(Listener::Live { session: &s, backlog }, false), Done::Delivered);
    assert_eq!(kinds(&body), ["refresh-ack", "data", "data", "refresh"], "no hb when there are events");
    let text = String::from_utf8_lossy(&body);
    let (a, b) = (text.find("p_subject=\"/news\""), text.find("p_subject=\"/news/a\""));
    assert!(a.is_some() && a < b, "{text}");
}

#[test]
fn a_gap_is_said_with_an_error_after_the_ack() {
    let (s, _) = listening("poll");
    let mut backlog = Backlog::new(10);
    backlog.take(&s, &[], true, false);
    let body = body_of(answer(Listener::Live { session: &s, backlog }, false), Done::Delivered);
    assert_eq!(kinds(&body), ["refresh-ack", "error", "hb", "refresh"], "a gap alone is worth answering");
    assert_eq!(attr(&body, "p_reason").as_deref(), Some(LOST));

    let mut backlog = Backlog::new(10);
    backlog.take(&s, &[msg(9, "/news")], true, false);
    let body = body_of(answer(Listener::Live { session: &s, backlog }, false), Done::Delivered);
    assert_eq!(kinds(&body), ["refresh-ack", "error", "data", "refresh"]);
}

#[test]
fn over_the_session_queue_is_an_abort_alone() {
    let (s, _) = listening("pull");
    let mut backlog = Backlog::new(2);
    assert_eq!(backlog.read_limit(), 3);
    assert!(backlog.take(&s, &[msg(1, "/news"), msg(2, "/news")], false, true), "under the bound: read on");
    assert!(!backlog.take(&s, &[msg(3, "/news")], false, true), "over it: stop reading");
    assert!(backlog.overflowed());
    let body = body_of(answer(Listener::Live { session: &s, backlog }, false), Done::Overflowed);
    assert_eq!(kinds(&body), ["abort"]);
    assert_eq!(attr(&body, "p_reason").as_deref(), Some("more than 2 undelivered events: session removed"));
    assert!(body.ends_with(b"</pushlet>"), "no refresh: the session is gone");
}

#[test]
fn only_the_sessions_own_events_count_against_the_bound() {
    let (s, _) = listening("pull");
    let mut backlog = Backlog::new(1);
    let others = [msg(1, "/pushlet/to/someone-else"), msg(2, "/elsewhere")];
    assert!(backlog.take(&s, &others, false, true), "a truncated read of nothing for it: read on");
    assert!(!backlog.overflowed());
    assert!(!backlog.take(&s, &[msg(3, "/news")], false, false), "not truncated: done");
    let body = body_of(answer(Listener::Live { session: &s, backlog }, false), Done::Delivered);
    assert_eq!(kinds(&body), ["refresh-ack", "data", "refresh"]);
}

#[test]
fn a_refresh_whose_session_ended_gets_an_abort_one_that_left_a_heartbeat() {
    let unforced =
        |listener: Listener<'_>| answer_refresh(listener, Format::Xml, BASE, false, |_| panic!("no refresh"), NOW);
    let body = body_of(unforced(Listener::Ended), Done::Ended);
    assert_eq!(kinds(&body), ["abort"]);
    assert_eq!(attr(&body, "p_reason").as_deref(), Some(ENDED));
    // Left: what the 2.0.4 AJAX client ignores once it sent `leave`; no `refresh`, whose timer
    // would start a second refresh loop if the page joined again.
    for format in [Format::Xml, Format::XmlStrict, Format::Js] {
        let left = answer_refresh(Listener::Left, format, BASE, false, |_| panic!("no refresh"), NOW);
        let Refresh::Reply { body, done: Done::Left } = left else { panic!("{format:?}: {left:?}") };
        let text = String::from_utf8(body).expect("utf-8");
        assert!(!text.contains("abort") && !text.contains("setTimeout"), "{format:?}: {text}");
        assert!(text.contains("refresh-ack") && text.contains("\"hb\""), "{format:?}: {text}");
    }
}

#[test]
fn refresh_waits_span_the_modes_ranges() {
    for (mode, range) in [(Mode::Pull, PULL_WAIT_MS), (Mode::Poll, POLL_WAIT_MS)] {
        assert_eq!(refresh_wait(mode, 0.0), *range.start());
        let top = refresh_wait(mode, 0.999_999);
        assert!(range.contains(&top) && top > range.end() - 10, "{mode:?} {top}");
    }
    assert_eq!(refresh_wait(Mode::Stream, 0.5), 4_000, "a stream never asks, but gets the pull range");
}
