//! Answering a held `/meta/connect` (a connect round), and how a Bayeux reply goes out over
//! HTTP: its body (JSON, or JSONP for callback-polling) and its header sets.
//!
//! A round's reply is the request's earlier replies, then the events history holds for the
//! session, then the connect's own reply (Bayeux 1.0 section 3.3: the connect reply ends the
//! delivery). The worker reads history and says whether the round is forced (hold time over,
//! a newer connect, shutdown); this decides whether to answer and what.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{
    encode_jsonp_pieces, encode_pieces, error_text, unknown_client, BayeuxError, Message, Piece, Session, Settings,
    CONTENT_TYPE_JSON, CONTENT_TYPE_JSONP,
};
use crate::model::{self, Epoch};

/// The request headers a browser may send cross-origin to a Bayeux path (the CometD set).
const CORS_ALLOW_HEADERS: &str = "Accept, Authorization, Content-Type, Pragma, X-Requested-With";

/// What history held for a round: the messages after the session's cursor for its selectors
/// (seq order), the store's epoch, and the cursor after this read.
#[derive(Debug)]
pub struct History<'a> {
    pub msgs: &'a [Arc<model::Message>],
    pub epoch: Epoch,
    pub next: u64,
}

/// The answer to a held connect.
#[derive(Debug)]
pub enum ConnectRound {
    /// Nothing to deliver yet: keep holding.
    Wait,
    /// The earlier replies, the events, then the connect reply; the session's cursor moved on.
    /// The session was heard from now (renew its expiry); the messages count as delivered.
    Delivered(Vec<Piece>),
    /// The session went away while its connect was held (disconnect, expiry): the earlier
    /// replies, then `402::Unknown client` for the connect.
    Unknown(Vec<Piece>),
}

/// Answers `connect` for `session` (`None`: it no longer exists) if history has events for it
/// or `force`; `earlier` are the replies of the connect's own batch not yet sent. The messages
/// go through `Session::delivery_events` on every round, even one that keeps waiting (a round
/// waits only when that found nothing to send, re-sends included).
pub fn connect_round(
    session: Option<&mut Session>,
    history: History<'_>,
    connect: &Message,
    earlier: &[Value],
    force: bool,
    settings: &Settings,
    now_ms: u64,
) -> ConnectRound {
    let mut pieces: Vec<Piece> = Vec::new();
    let Some(session) = session else {
        pieces.extend(earlier.iter().cloned().map(Piece::Reply));
        pieces.push(Piece::Reply(unknown_client(connect)));
        return ConnectRound::Unknown(pieces);
    };
    let events = session.delivery_events(history.msgs, history.epoch);
    if events.is_empty() && !force {
        return ConnectRound::Wait;
    }
    session.set_cursor(history.next);
    let reply = session.connect_reply(connect, settings);
    session.touch(now_ms);
    pieces.reserve(earlier.len() + events.len() + 1);
    pieces.extend(earlier.iter().cloned().map(Piece::Reply));
    pieces.extend(events.into_iter().map(Piece::Event));
    pieces.push(Piece::Reply(reply));
    ConnectRound::Delivered(pieces)
}

/// The body of an HTTP reply and its content type: a JSON array for long-polling, the
/// `callback(...)` script for callback-polling.
pub fn http_body(pieces: &[Piece], callback: Option<&str>) -> (Vec<u8>, &'static str) {
    match callback {
        Some(callback) => (encode_jsonp_pieces(callback, pieces), CONTENT_TYPE_JSONP),
        None => (encode_pieces(pieces), CONTENT_TYPE_JSON),
    }
}

/// The CORS headers of a reply to an allowed cross-origin request. Bayeux clients send
/// credentials, so the origin is reflected, never `*`, and caches must key on it.
pub fn cors_headers(origin: Option<&str>) -> Vec<(&'static str, &str)> {
    match origin {
        Some(origin) => vec![
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ],
        None => Vec::new(),
    }
}

/// The headers of a Bayeux reply: CORS, and never cached (every reply answers one poll).
pub fn reply_headers(origin: Option<&str>) -> Vec<(&str, &str)> {
    let mut headers = cors_headers(origin);
    headers.push(("Cache-Control", "no-store"));
    headers
}

/// The headers of the 204 answering an allowed origin's preflight (`OPTIONS`).
pub fn preflight_headers(origin: &str) -> Vec<(&str, &str)> {
    let mut headers = cors_headers(Some(origin));
    headers.push(("Access-Control-Allow-Methods", "POST, GET, OPTIONS"));
    headers.push(("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS));
    headers.push(("Access-Control-Max-Age", "600"));
    headers
}

/// The answer to a WebSocket frame that is not a batch: there is no HTTP status to carry the
/// error, so it is one unsuccessful reply.
pub fn frame_error(e: &BayeuxError) -> Vec<u8> {
    json!([{ "successful": false, "error": error_text(400, &[], &e.reason) }]).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::bayeux::{parse_batch, Outcome};

    const CLIENT: &str = "emp18w5pk2b9x0c4v7n3q6r1";

    fn msg(json: &str) -> Message {
        let mut batch = parse_batch(json.replace("CLIENT", CLIENT).as_bytes()).expect(json);
        batch.remove(0)
    }

    fn subscribed(settings: &Settings) -> (Session, Message) {
        let hs = msg(r#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}"#);
        let Ok((mut session, _)) = Session::new(CLIENT.into(), &hs, settings, 1_000) else { panic!("handshake") };
        let sub = msg(r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"/news"}"#);
        assert!(matches!(session.handle(&sub, settings), Outcome::Resubscribed(_)));
        let connect =
            msg(r#"{"id":"7","channel":"/meta/connect","clientId":"CLIENT","connectionType":"long-polling"}"#);
        assert!(matches!(session.handle(&connect, settings), Outcome::Connect { .. }));
        (session, connect)
    }

    fn stored(seq: u64) -> Arc<model::Message> {
        let data = Bytes::from_static(br#"{"n":1}"#);
        let msg = model::Message::new(seq, Arc::from("/news"), 5_000, data);
        Arc::new(msg.with_content_type(Some(super::super::PUBLISH_CONTENT_TYPE.into())))
    }

    fn history(msgs: &[Arc<model::Message>], next: u64) -> History<'_> {
        History { msgs, epoch: Epoch::from_raw(9).expect("small"), next }
    }

    fn channels(pieces: &[Piece]) -> Vec<String> {
        let all: Vec<Value> = serde_json::from_slice(&encode_pieces(pieces)).expect("a JSON array");
        all.iter().map(|v| v["channel"].as_str().unwrap_or("").to_owned()).collect()
    }

    #[test]
    fn a_round_is_earlier_replies_then_events_then_the_connect_reply() {
        let settings = Settings::default();
        let (mut session, connect) = subscribed(&settings);
        let earlier = [json!({"channel": "/meta/subscribe", "successful": true})];
        let msgs = [stored(3), stored(4)];
        let round = connect_round(Some(&mut session), history(&msgs, 4), &connect, &earlier, false, &settings, 2_000);
        let ConnectRound::Delivered(pieces) = round else { panic!("events to deliver: {round:?}") };
        assert_eq!(channels(&pieces), ["/meta/subscribe", "/news", "/news", "/meta/connect"]);
        assert_eq!(session.cursor(), 4);
    }

    #[test]
    fn a_round_with_nothing_waits_unless_forced() {
        let settings = Settings::default();
        let (mut session, connect) = subscribed(&settings);
        let round = connect_round(Some(&mut session), history(&[], 5), &connect, &[], false, &settings, 2_000);
        assert!(matches!(round, ConnectRound::Wait));
        assert_eq!(session.cursor(), 0, "a waiting round leaves the cursor");
        let round = connect_round(Some(&mut session), history(&[], 5), &connect, &[], true, &settings, 2_000);
        let ConnectRound::Delivered(pieces) = round else { panic!("forced: {round:?}") };
        assert_eq!(channels(&pieces), ["/meta/connect"]);
        assert_eq!(session.cursor(), 5, "the cursor moves to what was read");
    }

    #[test]
    fn a_round_for_a_session_gone_answers_402_after_the_earlier_replies() {
        let settings = Settings::default();
        let (_, connect) = subscribed(&settings);
        let earlier = [json!({"channel": "/meta/subscribe", "successful": true})];
        let round = connect_round(None, history(&[stored(1)], 1), &connect, &earlier, false, &settings, 2_000);
        let ConnectRound::Unknown(pieces) = round else { panic!("gone: {round:?}") };
        let body: Value = serde_json::from_slice(&encode_pieces(&pieces)).expect("json");
        assert_eq!(body[0]["channel"], "/meta/subscribe");
        assert_eq!(body[1]["channel"], "/meta/connect");
        assert_eq!(body[1]["error"], "402::Unknown client");
        assert_eq!(body[1]["id"], "7");
    }

    #[test]
    fn bodies_and_header_sets() {
        let pieces = [Piece::Reply(json!({"channel": "/meta/connect"}))];
        assert_eq!(http_body(&pieces, None), (br#"[{"channel":"/meta/connect"}]"#.to_vec(), CONTENT_TYPE_JSON));
        let (jsonp, content_type) = http_body(&pieces, Some("cb"));
        assert_eq!(
            (jsonp.as_slice(), content_type),
            (&br#"/**/cb([{"channel":"/meta/connect"}]);"#[..], CONTENT_TYPE_JSONP)
        );
        assert_eq!(reply_headers(None), [("Cache-Control", "no-store")]);
        assert_eq!(
            reply_headers(Some("https://a.example")),
            [
                ("Access-Control-Allow-Origin", "https://a.example"),
                ("Access-Control-Allow-Credentials", "true"),
                ("Vary", "Origin"),
                ("Cache-Control", "no-store"),
            ]
        );
        let preflight = preflight_headers("https://a.example");
        assert_eq!(preflight[..3], cors_headers(Some("https://a.example"))[..]);
        assert_eq!(
            preflight[3..],
            [
                ("Access-Control-Allow-Methods", "POST, GET, OPTIONS"),
                ("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS),
                ("Access-Control-Max-Age", "600"),
            ]
        );
        let error = frame_error(&BayeuxError::bad_request("not JSON"));
        assert_eq!(error, br#"[{"error":"400::not JSON","successful":false}]"#.to_vec());
    }
}
