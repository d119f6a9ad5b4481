//! The Bayeux message parser and one session driven by what it parsed.
//!
//! Input: `[mode knob] [bytes]`. Knob bit 0 clear: the bytes are a POST body (`parse_batch`);
//! set: a callback-polling query string (`parse_callback_polling`). When the batch starts with
//! a `/meta/handshake`, the session it makes (client id [`CLIENT_ID`], which seeds use) handles
//! the rest of the batch, and what it publishes is delivered back on its next connect.
//!
//! Beyond "no panic": a batch holds 1 to `MAX_BATCH_MESSAGES` messages with ids within
//! `MAX_ID_LEN`, nested no deeper than the JSON bound; refusals are 400s with a bounded reason;
//! every reply and delivery the session builds serialises to JSON that parses back, and the
//! JSONP form is script-safe (no `<`, `>`, `&`, U+2028 or U+2029 outside escapes) and wraps
//! exactly that JSON.
#![no_main]

use std::sync::Arc;

use halley::model::{check_depth, Epoch, Message};
use halley::protocol::bayeux::{
    encode_jsonp_pieces, encode_pieces, parse_batch, parse_callback_polling, Outcome, Piece, Session, Settings,
    MAX_BATCH_MESSAGES, MAX_ID_LEN, MAX_REASON_LEN, PUBLISH_CONTENT_TYPE,
};
use halley::transport::valid_callback;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The client id the fuzzed session gets; seeds that continue a session send it.
const CLIENT_ID: &str = "fuzzclient0123456789abcd";

fuzz_target!(|data: &[u8]| {
    let ([knob], input) = halley_fuzz::knobs::<1>(data);
    let parsed = if knob & 1 == 0 {
        parse_batch(input).map(|batch| (batch, "jsonpcallback".into()))
    } else {
        let Ok(query) = std::str::from_utf8(input) else { return };
        parse_callback_polling(query)
    };
    let (batch, callback) = match parsed {
        Ok(ok) => ok,
        Err(e) => {
            assert_eq!(e.status, 400);
            assert!(!e.reason.is_empty() && e.reason.len() <= MAX_REASON_LEN, "{e:?}");
            return;
        }
    };
    assert!(!batch.is_empty() && batch.len() <= MAX_BATCH_MESSAGES);
    assert!(valid_callback(&callback));
    for msg in &batch {
        assert!(msg.id.as_ref().is_none_or(|id| id.get().len() <= MAX_ID_LEN));
        for raw in [&msg.id, &msg.data, &msg.ext].into_iter().flatten() {
            assert!(check_depth(raw.get().as_bytes()).is_ok(), "a raw field deeper than the bound");
        }
        let _ = (msg.id_value(), msg.data_value(), msg.advice_timeout(), msg.ext_ack());
        if let Some(subscription) = &msg.subscription {
            let _ = (subscription.channels(), subscription.to_value());
        }
    }

    let settings = Settings::default();
    let (mut session, reply) = match Session::new(CLIENT_ID.into(), &batch[0], &settings, 0) {
        Ok(made) => made,
        Err(refusal) => return check_pieces(&[Piece::Reply(refusal)], &callback),
    };
    let epoch = Epoch::from_raw(1).expect("epoch 1 is valid");
    let mut pieces = vec![Piece::Reply(reply)];
    let mut published: Vec<Arc<Message>> = Vec::new();
    for (i, msg) in batch.iter().enumerate().skip(1) {
        session.touch(i as u64);
        match session.handle(msg, &settings) {
            Outcome::Reply(reply) => pieces.push(Piece::Reply(reply)),
            Outcome::Publish { reply, topic, data } => {
                let seq = published.len() as u64 + 1;
                let message = Message::new(seq, Arc::from(topic), i as u64, data)
                    .with_content_type(Some(PUBLISH_CONTENT_TYPE.into()));
                published.push(Arc::new(message));
                pieces.push(Piece::Reply(reply));
            }
            Outcome::Connect { .. } => {
                let events = session.delivery_events(&published, epoch);
                pieces.extend(events.into_iter().map(Piece::Event));
                pieces.push(Piece::Reply(session.connect_reply(msg, &settings)));
            }
            Outcome::Resubscribed(reply) => {
                let _ = session.selectors();
                session.pin_new_subscriptions(published.len() as u64);
                pieces.push(Piece::Reply(reply));
            }
            Outcome::Disconnect(reply) => {
                pieces.push(Piece::Reply(reply));
                break;
            }
        }
        session.connect_ended(i as u64);
    }
    check_pieces(&pieces, &callback);
});

/// The reply body parses as a JSON array of the pieces, and its JSONP form is script-safe.
fn check_pieces(pieces: &[Piece], callback: &str) {
    let body = encode_pieces(pieces);
    let parsed: Value = serde_json::from_slice(&body).expect("a reply body is JSON");
    assert_eq!(parsed.as_array().map(Vec::len), Some(pieces.len()));

    let jsonp = encode_jsonp_pieces(callback, pieces);
    let text = std::str::from_utf8(&jsonp).expect("JSONP is UTF-8");
    let inner = text
        .strip_prefix("/**/")
        .and_then(|t| t.strip_prefix(callback))
        .and_then(|t| t.strip_prefix('('))
        .and_then(|t| t.strip_suffix(");"))
        .expect("JSONP is /**/callback(...);");
    assert!(!inner.contains(['<', '>', '&', '\u{2028}', '\u{2029}']), "JSONP not script-safe: {inner}");
    let again: Value = serde_json::from_str(inner).expect("the JSONP payload is JSON");
    assert_eq!(again, parsed, "the JSONP payload differs from the JSON body");
}
