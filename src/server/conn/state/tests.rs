//! Sans-I/O tests of the connection state machine: every transition, from the right phase
//! and (in debug builds, where it stops) from a wrong one.

use std::time::Duration;

use super::*;
use crate::http::BodyDecoder;
use crate::http::Version;
use crate::protocol::pushlet::Format;
use crate::server::conn::{Cors, DuplexFraming, ParkedFormat, PushletHold, ReplyMeta};
use crate::transport::raw::RawLines;
use crate::transport::socket::SocketLife;
use crate::transport::streaming::StreamLife;
use crate::transport::StreamKind;
use std::collections::VecDeque;
use std::time::Instant;

fn meta() -> ReplyMeta {
    ReplyMeta { version: Version::Http11, keep_alive: true, head_only: false, cors: Cors::None }
}

fn selectors(names: &[&str]) -> Vec<Selector> {
    names.iter().map(|n| Selector::parse(n).expect("selector")).collect()
}

fn parked(format: ParkedFormat) -> Box<Parked> {
    Box::new(Parked { selectors: selectors(&["/a", "/b/*"]).into(), cursor: 7, reply: meta(), format })
}

fn streaming() -> Box<Streaming> {
    let now = Instant::now();
    Box::new(Streaming {
        selectors: selectors(&["/s"]).into(),
        cursor: 3,
        framer: Framer::Native(StreamKind::Sse),
        life: StreamLife::new(true, now, Duration::from_secs(1), Duration::from_secs(60)),
        expires: None,
    })
}

fn duplex() -> Box<Duplex> {
    Box::new(Duplex {
        framing: DuplexFraming::Raw(RawLines::default()),
        selectors: selectors(&["/d"]),
        cursor: 0,
        life: SocketLife::new(Instant::now(), Duration::from_secs(1)),
        publishes: VecDeque::new(),
        may_publish: true,
        protocol: DuplexProtocol::Native,
        changes: crate::server::subs::ChangeBudget::new(Instant::now()),
        grant: crate::auth::Grant::Open { loopback: true },
    })
}

fn dispatching() -> ConnState {
    let mut state = ConnState::default();
    state.start_head();
    state.dispatch();
    state
}

#[test]
fn a_keep_alive_request_goes_round_to_idle() {
    let mut state = ConnState::default();
    assert_eq!(state.phase(), Phase::Idle);
    state.start_head();
    assert_eq!(state.phase(), Phase::Head);
    state.dispatch();
    assert_eq!(state.phase(), Phase::Dispatching);
    state.answered(true);
    assert_eq!(state.phase(), Phase::Idle);
    assert!(!state.is_subscriber() && !state.is_closed());
}

#[test]
fn a_last_response_closes_drains_and_closes() {
    let mut state = dispatching();
    state.answered(false);
    assert_eq!(state.phase(), Phase::Closing);
    state.start_draining();
    assert_eq!(state.phase(), Phase::Draining);
    let vacated = state.close();
    assert_eq!(vacated.phase(), Phase::Draining);
    assert!(vacated.selectors().is_empty() && vacated.session().is_none());
    assert!(state.is_closed());
}

#[test]
fn a_body_is_read_then_handed_over_once() {
    let mut state = ConnState::default();
    state.start_head();
    let head = b"POST /pub/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
    let parsed = crate::http::parse_head(head, &crate::http::Limits::default());
    let Ok(crate::http::Status::Complete((request, _))) = parsed else { panic!("{parsed:?}") };
    let decoder = BodyDecoder::new(request.body_kind());
    state.read_body(BodyPhase { request, decoder, body: Vec::new() });
    assert_eq!(state.phase(), Phase::Body);
    state.body_mut().expect("body").body.extend_from_slice(b"abc");
    let body = state.take_body().expect("the body");
    assert_eq!(body.body, b"abc");
    assert_eq!(state.phase(), Phase::Dispatching);
    assert!(state.take_body().is_none(), "a body is taken once");
    assert_eq!(state.phase(), Phase::Dispatching);
}

#[test]
fn a_parked_request_is_taken_out_by_value_and_parked_again() {
    let mut state = dispatching();
    state.park(parked(ParkedFormat::Json));
    assert_eq!(state.phase(), Phase::Parked);
    assert!(state.is_subscriber());
    assert_eq!(state.parked_mut().map(|p| p.cursor), Some(7));
    let taken = state.unpark().expect("parked");
    assert_eq!(state.phase(), Phase::Dispatching);
    assert!(state.unpark().is_none(), "nothing left to take");
    // Nothing to answer after all: it parks again, unchanged.
    state.park(taken);
    assert_eq!(state.parked_mut().map(|p| p.selectors.len()), Some(2));
}

#[test]
fn a_sessions_listening_connection_is_known_by_its_state() {
    let hold = PushletHold { session: 42, format: Format::XmlStrict, base: "/pushlet.srv" };
    let mut state = dispatching();
    state.park(parked(ParkedFormat::Pushlet(Box::new(hold))));
    assert_eq!(state.session(), Some(42));
    let vacated = state.close();
    assert_eq!(vacated.session(), Some(42));
    assert_eq!(vacated.selectors().len(), 2);
    assert_eq!(state.session(), None);
}

#[test]
fn an_acknowledgement_must_carry_the_awaited_tag() {
    let mut state = dispatching();
    state.await_ack(Publishing { tag: 5, reply: meta(), topic: "/a".into(), piggyback: None });
    assert_eq!(state.phase(), Phase::Publishing);
    assert!(state.take_ack(Some(4)).is_none(), "a stale tag changes nothing");
    assert_eq!(state.phase(), Phase::Publishing);
    assert_eq!(state.take_ack(Some(5)).map(|p| p.tag), Some(5));
    assert_eq!(state.phase(), Phase::Dispatching);
    state.await_ack(Publishing { tag: 6, reply: meta(), topic: "/a".into(), piggyback: None });
    assert_eq!(state.take_ack(None).map(|p| p.tag), Some(6), "a timeout takes whatever waits");
}

#[test]
fn a_stream_ends_once_and_gives_back_what_it_held() {
    let mut state = dispatching();
    state.open_stream(streaming());
    assert_eq!(state.phase(), Phase::Streaming);
    state.streaming_mut().expect("stream").cursor = 9;
    let vacated = state.end().expect("a stream ends");
    assert_eq!(vacated.phase(), Phase::Streaming);
    assert_eq!(vacated.selectors().len(), 1);
    assert_eq!(vacated.into_streaming().map(|s| s.cursor), Some(9));
    assert_eq!(state.phase(), Phase::Closing);
    assert!(state.end().is_none(), "only a stream or a socket ends");
}

#[test]
fn a_raw_socket_is_duplex_from_the_start() {
    let mut state = ConnState::default();
    state.open_duplex(duplex());
    assert_eq!(state.phase(), Phase::Duplex);
    assert!(state.is_subscriber());
    assert!(state.duplex().is_some() && state.streaming().is_none());
    let vacated = state.end().expect("a socket ends");
    assert_eq!(vacated.duplex().map(|d| d.selectors.len()), Some(1));
    assert_eq!(state.phase(), Phase::Closing);
}

#[test]
fn a_subscribers_kind_is_read_from_its_phase_and_kept_when_vacated() {
    let mut state = dispatching();
    assert_eq!(state.subscriber_kind(), None);
    state.park(parked(ParkedFormat::Jsonp("cb".into())));
    assert_eq!(state.subscriber_kind(), Some(SubscriberKind::Jsonp));
    assert_eq!(state.close().subscriber_kind(), Some(SubscriberKind::Jsonp));
    let mut state = dispatching();
    state.open_stream(streaming());
    assert_eq!(state.end().and_then(|v| v.subscriber_kind()), Some(SubscriberKind::Sse));
    let mut state = ConnState::default();
    state.open_duplex(duplex());
    assert_eq!(state.subscriber_kind(), Some(SubscriberKind::Raw));
    let mut bayeux = duplex();
    bayeux.protocol = DuplexProtocol::Bayeux(Box::default());
    let mut state = ConnState::default();
    state.open_duplex(bayeux);
    assert_eq!(state.subscriber_kind(), Some(SubscriberKind::BayeuxWs));
    assert_eq!(state.close().subscriber_kind(), Some(SubscriberKind::BayeuxWs));
}

#[test]
fn a_broken_request_closes_after_its_error_reply() {
    for start in [Phase::Idle, Phase::Head, Phase::Dispatching] {
        let mut state = ConnState::default();
        if start != Phase::Idle {
            state.start_head();
        }
        if start == Phase::Dispatching {
            state.dispatch();
        }
        assert_eq!(state.phase(), start);
        state.close_after_write();
        assert_eq!(state.phase(), Phase::Closing);
    }
}

#[test]
fn a_request_handed_over_whole_is_dispatched_from_idle() {
    let mut state = ConnState::default();
    state.dispatch();
    assert_eq!(state.phase(), Phase::Dispatching);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "park from Idle")]
fn a_transition_from_the_wrong_phase_is_caught_in_debug_builds() {
    ConnState::default().park(parked(ParkedFormat::Json));
}
