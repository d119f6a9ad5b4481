//! Whole-protocol tests: the spec's literal exchanges, real clients' batches, every meta
//! message, error and advice path, wildcards, the ack extension and callback-polling, driven
//! the way the worker drives a session.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::session::MAX_SUBSCRIPTIONS;
use super::*;
use crate::model::{self, Epoch, Selector};

const CLIENT: &str = "emp18w5pk2b9x0c4v7n3q6r1";

fn epoch() -> Epoch {
    Epoch::from_raw(1_234_567).expect("fits in 40 bits")
}

fn one(json: &str) -> Message {
    let mut batch = parse_batch(json.replace("CLIENT", CLIENT).as_bytes()).expect(json);
    assert_eq!(batch.len(), 1, "{json}");
    batch.remove(0)
}

fn expect(json: &str) -> Value {
    serde_json::from_str(&json.replace("CLIENT", CLIENT)).expect(json)
}

fn handshake(settings: &Settings, ext: &str) -> Session {
    let msg = one(&format!(
        r#"{{"id":"1","version":"1.0","channel":"/meta/handshake","supportedConnectionTypes":["long-polling"]{ext}}}"#
    ));
    match Session::new(CLIENT.into(), &msg, settings, 1_000) {
        Ok((session, _)) => session,
        Err(reply) => panic!("handshake refused: {reply}"),
    }
}

fn stored(seq: u64, topic: &str, data: &'static [u8], json: bool) -> Arc<model::Message> {
    let content_type = json.then(|| Box::from(PUBLISH_CONTENT_TYPE));
    Arc::new(
        model::Message::new(seq, Arc::from(topic), 5_000, Bytes::from_static(data)).with_content_type(content_type),
    )
}

fn reply_of(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Reply(v) | Outcome::Disconnect(v) | Outcome::Resubscribed(v) => v,
        Outcome::Publish { reply, .. } => reply,
        Outcome::Connect { .. } => panic!("a connect has no immediate reply"),
    }
}

fn error_of(outcome: Outcome) -> String {
    let reply = reply_of(outcome);
    assert_eq!(reply["successful"], false, "{reply}");
    reply["error"].as_str().expect("error string").to_owned()
}

/// The exchange recorded in the spec, message by message, with the replies' exact shapes.
#[test]
fn spec_exchange() {
    let settings = Settings::default();
    let hs = one(
        r#"[{"id":"1","version":"1.0","minimumVersion":"1.0","channel":"/meta/handshake","supportedConnectionTypes":["long-polling","callback-polling"],"advice":{"timeout":60000,"interval":0}}]"#,
    );
    let (mut session, reply) = Session::new(CLIENT.into(), &hs, &settings, 1_000).expect("handshake");
    assert_eq!(
        reply,
        expect(
            r#"{"id":"1","channel":"/meta/handshake","successful":true,"version":"1.0","supportedConnectionTypes":["long-polling","callback-polling","websocket"],"clientId":"CLIENT","advice":{"reconnect":"retry","interval":0,"timeout":20000}}"#
        )
    );
    assert_eq!(session.client_id(), CLIENT);
    assert!(!session.ack_enabled());

    let connect = one(
        r#"[{"id":"3","channel":"/meta/connect","connectionType":"long-polling","advice":{"timeout":0},"clientId":"CLIENT"}]"#,
    );
    assert_eq!(session.handle(&connect, &settings), Outcome::Connect { hold_ms: 0 });
    assert_eq!(session.connection_type(), Some(ConnectionType::LongPolling));
    assert!(session.deliveries(&[], epoch()).is_empty());
    assert_eq!(
        session.connect_reply(&connect, &settings),
        expect(
            r#"{"id":"3","clientId":"CLIENT","channel":"/meta/connect","successful":true,"advice":{"reconnect":"retry","interval":0,"timeout":20000}}"#
        )
    );

    let subscribe = one(r#"[{"id":"2","channel":"/meta/subscribe","subscription":"/chat/demo","clientId":"CLIENT"}]"#);
    assert_eq!(
        session.handle(&subscribe, &settings),
        Outcome::Resubscribed(expect(
            r#"{"id":"2","clientId":"CLIENT","channel":"/meta/subscribe","successful":true,"subscription":"/chat/demo"}"#
        ))
    );
    assert_eq!(session.selectors(), [Selector::parse("/chat/demo").expect("exact")]);

    let publish = one(r#"[{"id":"5","channel":"/chat/demo","data":{"text":"hello"},"clientId":"CLIENT"}]"#);
    let Outcome::Publish { reply, topic, data } = session.handle(&publish, &settings) else {
        panic!("not a publish");
    };
    assert_eq!(reply, expect(r#"{"id":"5","clientId":"CLIENT","channel":"/chat/demo","successful":true}"#));
    assert!(reply.get("data").is_none(), "a publish ack must not look like an event (spec item 5)");
    assert_eq!(&*topic, "/chat/demo");
    assert_eq!(&data[..], br#"{"text":"hello"}"#);

    // The held connect, answered when the event arrives: events first, then the connect reply.
    let held = one(r#"[{"id":"4","channel":"/meta/connect","connectionType":"long-polling","clientId":"CLIENT"}]"#);
    assert_eq!(session.handle(&held, &settings), Outcome::Connect { hold_ms: 20_000 });
    let msg = Arc::new(
        model::Message::new(7, Arc::from(&*topic), 5_000, data).with_content_type(Some(PUBLISH_CONTENT_TYPE.into())),
    );
    let mut replies = session.deliveries(&[msg], epoch());
    replies.push(session.connect_reply(&held, &settings));
    assert_eq!(session.cursor(), 7);
    let body: Value = serde_json::from_slice(&encode_replies(&replies)).expect("JSON body");
    assert_eq!(
        body,
        expect(&format!(
            r#"[{{"id":"{}-7","channel":"/chat/demo","data":{{"text":"hello"}}}},{{"id":"4","clientId":"CLIENT","channel":"/meta/connect","successful":true,"advice":{{"reconnect":"retry","interval":0,"timeout":20000}}}}]"#,
            epoch()
        ))
    );

    let disconnect = one(r#"[{"id":"6","channel":"/meta/disconnect","clientId":"CLIENT"}]"#);
    assert_eq!(
        session.handle(&disconnect, &settings),
        Outcome::Disconnect(expect(r#"{"id":"6","clientId":"CLIENT","channel":"/meta/disconnect","successful":true}"#))
    );
    // After removal the worker answers the client's next message as unknown (spec item 6).
    assert_eq!(
        unknown_client(&connect),
        expect(
            r#"{"id":"3","channel":"/meta/connect","successful":false,"error":"402::Unknown client","advice":{"reconnect":"handshake","interval":0}}"#
        )
    );
}

/// Faye batches connect, subscribe and publish in one request: each is handled in order, the
/// connect's timeout 0 is honoured, and the publisher gets its own message when subscribed.
#[test]
fn faye_batch_in_order() {
    let settings = Settings::default();
    let mut session = handshake(&settings, "");
    let batch = parse_batch(
        br#"[{"channel":"/meta/connect","clientId":"emp18w5pk2b9x0c4v7n3q6r1","connectionType":"long-polling","id":"2","advice":{"timeout":0}},
             {"channel":"/meta/subscribe","clientId":"emp18w5pk2b9x0c4v7n3q6r1","subscription":"/chat/*","id":"3"},
             {"channel":"/chat/room","clientId":"emp18w5pk2b9x0c4v7n3q6r1","data":"hi","id":"4"}]"#,
    )
    .expect("batch");
    let outcomes: Vec<Outcome> = batch.iter().map(|m| session.handle(m, &settings)).collect();
    assert_eq!(outcomes[0], Outcome::Connect { hold_ms: 0 });
    assert!(matches!(&outcomes[1], Outcome::Resubscribed(r) if r["id"] == "3" && r["successful"] == true));
    assert!(matches!(&outcomes[2], Outcome::Publish { topic, data, reply }
        if &**topic == "/chat/room" && &data[..] == b"\"hi\"" && reply["id"] == "4"));
    let events = session.deliveries(&[stored(1, "/chat/room", b"\"hi\"", true)], epoch());
    assert_eq!(events, [json!({"channel": "/chat/room", "data": "hi", "id": format!("{}-1", epoch())})]);
}

#[test]
fn handshake_paths() {
    let settings = Settings::default();
    let new = |json: &str| Session::new(CLIENT.into(), &one(json), &settings, 0).map(|(_, reply)| reply);
    // Version 2 that can go down to 1.0 is fine, and so is no version at all.
    for ok in [
        r#"{"channel":"/meta/handshake","version":"2.0","minimumVersion":"1.0","supportedConnectionTypes":["websocket"]}"#,
        r#"{"channel":"/meta/handshake","supportedConnectionTypes":["x","callback-polling"]}"#,
        r#"{"channel":"/meta/handshake","version":"1.0beta","supportedConnectionTypes":["long-polling"]}"#,
    ] {
        let reply = new(ok).expect(ok);
        assert_eq!(reply["successful"], true);
        assert_eq!(reply["clientId"], CLIENT);
        assert!(reply.get("ext").is_none());
    }
    let refused = |json: &str| new(json).expect_err(json);
    let r =
        refused(r#"{"id":9,"channel":"/meta/handshake","version":"2.0","supportedConnectionTypes":["long-polling"]}"#);
    assert_eq!(r["error"], "300:2.0:Version not supported");
    assert_eq!(r["advice"]["reconnect"], "none");
    assert_eq!(r["id"], 9);
    let r = refused(r#"{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["iframe","flash"]}"#);
    assert_eq!(r["error"], "301:iframe,flash:Connection types not supported");
    assert_eq!(r["supportedConnectionTypes"], json!(["long-polling", "callback-polling", "websocket"]));
    assert_eq!(r["advice"]["reconnect"], "none");
    let r = refused(r#"{"channel":"/meta/handshake","version":"1.0"}"#);
    assert_eq!(r["error"], "400:supportedConnectionTypes:Missing required parameter");
    let r = refused(r#"{"channel":"/meta/connect","supportedConnectionTypes":["long-polling"]}"#);
    assert_eq!(r["error"], "400:/meta/connect:Not a handshake");
    assert!(r.get("clientId").is_none(), "a refused handshake creates no client");

    // The worker's own refusal (server full).
    let hs = one(r#"{"id":"1","channel":"/meta/handshake"}"#);
    assert_eq!(
        handshake_error(&hs, &error_text(503, &[], "Too many sessions")),
        json!({"id": "1", "channel": "/meta/handshake", "successful": false, "error": "503::Too many sessions",
               "advice": {"reconnect": "handshake", "interval": HANDSHAKE_RETRY_INTERVAL_MS}})
    );
}

#[test]
fn connect_paths() {
    let settings = Settings { timeout_ms: 30_000, interval_ms: 250, ..Settings::default() };
    let mut session = handshake(&settings, "");
    let connect = |extra: &str| one(&format!(r#"{{"id":"c","channel":"/meta/connect","clientId":"CLIENT"{extra}}}"#));
    let cases: &[(&str, u64)] = &[
        (r#","connectionType":"long-polling""#, 30_000),
        (r#","connectionType":"websocket","advice":{"timeout":0}"#, 0),
        (r#","connectionType":"callback-polling","advice":{"timeout":5000}"#, 5_000),
        (r#","connectionType":"long-polling","advice":{"timeout":90000}"#, 30_000),
        (r#","connectionType":"long-polling","advice":{"interval":0}"#, 30_000),
    ];
    for (extra, hold_ms) in cases {
        assert_eq!(session.handle(&connect(extra), &settings), Outcome::Connect { hold_ms: *hold_ms }, "{extra}");
    }
    assert_eq!(session.connection_type(), Some(ConnectionType::LongPolling));
    let reply = session.connect_reply(&connect(""), &settings);
    assert_eq!(reply["advice"], json!({"reconnect": "retry", "interval": 250, "timeout": 30000}));
    assert_eq!(error_of(session.handle(&connect(""), &settings)), "400:connectionType:Missing required parameter");
    assert_eq!(
        error_of(session.handle(&connect(r#","connectionType":"iframe""#), &settings)),
        "301:iframe:Connection type not supported"
    );
}

#[test]
fn message_errors() {
    let settings =
        Settings { may_publish: Box::new(|channel| !channel.starts_with("/readonly/")), ..Settings::default() };
    let mut session = handshake(&settings, "");
    let cases: &[(&str, &str)] = &[
        (r#"{"channel":"/meta/subscribe","clientId":"CLIENT"}"#, "400:subscription:Missing required parameter"),
        (r#"{"channel":"/meta/unsubscribe","clientId":"CLIENT"}"#, "400:subscription:Missing required parameter"),
        (
            r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"/meta/connect"}"#,
            "403:/meta/connect:Subscription denied",
        ),
        (
            r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"/meta/**"}"#,
            "403:/meta/**:Subscription denied",
        ),
        (
            r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"/service/*"}"#,
            "403:/service/*:Subscription denied",
        ),
        (
            r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"/a/*/b"}"#,
            "400:/a/*/b:Invalid channel: wildcards only as the last segment",
        ),
        (
            r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"/a/**/b"}"#,
            "400:/a/**/b:Invalid channel: '**' is only allowed as the last segment",
        ),
        (
            r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"/a b"}"#,
            "400:/a b:Invalid channel: topic segment contains an invalid character",
        ),
        (
            r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"nope"}"#,
            "400:nope:Invalid channel: topic must start with '/'",
        ),
        (
            r#"{"channel":"/meta/unsubscribe","clientId":"CLIENT","subscription":"/meta/x"}"#,
            "403:/meta/x:Subscription denied",
        ),
        (r#"{"channel":"/meta/handshake","clientId":"CLIENT"}"#, "400::Handshake on an existing session"),
        (r#"{"channel":"/meta/publish","clientId":"CLIENT"}"#, "404:/meta/publish:Unknown channel"),
        (r#"{"channel":"/service/nothing","clientId":"CLIENT","data":1}"#, "404:/service/nothing:Unknown service"),
        (
            r#"{"channel":"/chat/*","clientId":"CLIENT","data":1}"#,
            "400:/chat/*:Invalid channel: topic names cannot contain '*'",
        ),
        (
            r#"{"channel":"/chat/","clientId":"CLIENT","data":1}"#,
            "400:/chat/:Invalid channel: topic has an empty segment",
        ),
        (r#"{"channel":"/readonly/x","clientId":"CLIENT","data":1}"#, "403:/readonly/x:Publish denied"),
        (r#"{"channel":"/meta/connect","clientId":"someoneelse"}"#, "402::Unknown client"),
        (r#"{"channel":"/meta/connect"}"#, "402::Unknown client"),
    ];
    for (json, want) in cases {
        let msg = one(json);
        let reply = reply_of(session.handle(&msg, &settings));
        assert_eq!(reply["successful"], false, "{json}");
        assert_eq!(reply["error"], *want, "{json}");
        assert_eq!(reply["channel"], *msg.channel);
        if msg.subscription.is_some() {
            assert_eq!(
                reply["subscription"],
                msg.subscription.as_ref().map(Subscription::to_value).unwrap_or_default()
            );
        }
    }
    assert!(session.selectors().is_empty(), "no refused subscription was recorded");
    // An invalid entry refuses the whole message: nothing of it is recorded.
    let mixed = one(r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":["/ok","/meta/x"]}"#);
    assert_eq!(error_of(session.handle(&mixed, &settings)), "403:/meta/x:Subscription denied");
    assert!(session.selectors().is_empty());
}

#[test]
fn subscription_changes() {
    let settings = Settings::default();
    let mut session = handshake(&settings, "");
    let msg = |channel: &str, sub: &str| {
        one(&format!(r#"{{"id":"s","channel":"{channel}","clientId":"CLIENT","subscription":{sub}}}"#))
    };
    let sub = |sub: &str| msg("/meta/subscribe", sub);
    let unsub = |sub: &str| msg("/meta/unsubscribe", sub);
    assert!(
        matches!(session.handle(&sub(r#"["/a","/b/*","/a"]"#), &settings), Outcome::Resubscribed(r) if r["subscription"] == json!(["/a","/b/*","/a"]))
    );
    assert_eq!(session.selectors().len(), 2);
    // Nothing new: a plain reply, no re-registration.
    assert!(matches!(session.handle(&sub(r#""/a""#), &settings), Outcome::Reply(r) if r["successful"] == true));
    // A service channel is accepted and not recorded.
    assert!(
        matches!(session.handle(&sub(r#""/service/echo""#), &settings), Outcome::Reply(r) if r["successful"] == true)
    );
    assert_eq!(session.selectors().len(), 2);
    assert!(
        matches!(session.handle(&unsub(r#""/not/subscribed""#), &settings), Outcome::Reply(r) if r["successful"] == true)
    );
    assert!(
        matches!(session.handle(&unsub(r#"["/a","/b/*"]"#), &settings), Outcome::Resubscribed(r) if r["successful"] == true)
    );
    assert!(session.selectors().is_empty());

    // The per-session bound, also on a single oversized message.
    let many: Vec<String> = (0..MAX_SUBSCRIPTIONS).map(|i| format!("\"/t/{i}\"")).collect();
    assert!(matches!(session.handle(&sub(&format!("[{}]", many.join(","))), &settings), Outcome::Resubscribed(_)));
    assert_eq!(session.selectors().len(), MAX_SUBSCRIPTIONS);
    assert_eq!(
        error_of(session.handle(&sub(r#""/one/more""#), &settings)),
        format!("403:{CLIENT}:Too many subscriptions")
    );
    let too_many: Vec<String> = (0..=MAX_SUBSCRIPTIONS).map(|i| format!("\"/u/{i}\"")).collect();
    assert_eq!(
        error_of(session.handle(&unsub(&format!("[{}]", too_many.join(","))), &settings)),
        format!("403:{CLIENT}:Too many subscriptions")
    );
    assert_eq!(session.selectors().len(), MAX_SUBSCRIPTIONS);
}

#[test]
fn wildcards_map_to_selectors_and_filter_deliveries() {
    let settings = Settings::default();
    let mut session = handshake(&settings, "");
    let sub = one(r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":["/foo/*","/bar/**","/**"]}"#);
    assert!(matches!(session.handle(&sub, &settings), Outcome::Resubscribed(_)));
    let selectors = session.selectors();
    assert!(selectors.iter().all(Selector::is_pattern));
    let star = &selectors[0];
    let deep = &selectors[1];
    assert!(star.matches("/foo/a") && !star.matches("/foo/a/b") && !star.matches("/foo"));
    assert!(deep.matches("/bar/a") && deep.matches("/bar/a/b") && !deep.matches("/bar"));
    // `/**` matches everything, yet /meta and /service topics (a native publish can make
    // them) never reach a Bayeux client.
    let msgs = [
        stored(1, "/meta/connect", b"{}", true),
        stored(2, "/service/echo", b"{}", true),
        stored(3, "/x", b"plain text", false),
        stored(4, "/y", b"\xff\x00", false),
        stored(5, "/meta", b"1", true),
    ];
    let events = session.deliveries(&msgs, epoch());
    assert_eq!(
        events,
        [
            json!({"channel": "/x", "data": "plain text", "id": format!("{}-3", epoch())}),
            json!({"channel": "/y", "data": "/wA=", "ext": {"encoding": "base64"}, "id": format!("{}-4", epoch())}),
        ]
    );
    assert_eq!(session.cursor(), 5, "the cursor moves past skipped messages");
}

#[test]
fn new_subscriptions_do_not_reach_back_into_history() {
    let settings = Settings::default();
    let mut session = handshake(&settings, "");
    session.set_cursor(10);
    let sub = |channel: &str| {
        one(&format!(r#"{{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"{channel}"}}"#))
    };
    assert!(matches!(session.handle(&sub("/old"), &settings), Outcome::Resubscribed(_)));
    session.pin_new_subscriptions(10);
    // /new is subscribed when the head is 20; /old's messages 11..20 are still owed.
    assert!(matches!(session.handle(&sub("/new"), &settings), Outcome::Resubscribed(_)));
    session.pin_new_subscriptions(20);
    let msgs = [stored(15, "/old", b"1", true), stored(16, "/new", b"2", true), stored(21, "/new", b"3", true)];
    let events = session.deliveries(&msgs, epoch());
    let data: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
    assert_eq!(data, [&json!(1), &json!(3)]);
    assert_eq!(session.cursor(), 21);
}

#[test]
fn service_echo() {
    let settings = Settings::default();
    let mut session = handshake(&settings, "");
    let call = one(r#"{"id":"42","channel":"/service/echo","clientId":"CLIENT","data":{"ping":[1,2]}}"#);
    assert_eq!(
        session.handle(&call, &settings),
        Outcome::Reply(expect(
            r#"{"id":"42","clientId":"CLIENT","channel":"/service/echo","successful":true,"data":{"ping":[1,2]}}"#
        ))
    );
    let empty = one(r#"{"id":"43","channel":"/service/echo","clientId":"CLIENT"}"#);
    assert_eq!(reply_of(session.handle(&empty, &settings))["data"], Value::Null);
    assert!(session.selectors().is_empty());
}

#[test]
fn publish_without_data_publishes_null() {
    let settings = Settings::default();
    let mut session = handshake(&settings, "");
    let msg = one(r#"{"channel":"/a","clientId":"CLIENT"}"#);
    assert!(matches!(session.handle(&msg, &settings), Outcome::Publish { data, .. } if &data[..] == b"null"));
}

#[test]
fn expiry_follows_touches_and_holds() {
    let settings = Settings { max_interval_ms: 10_000, timeout_ms: 20_000, ..Settings::default() };
    let mut session = handshake(&settings, ""); // created at 1_000
    assert_eq!(session.expires_at(), 11_000);
    assert!(!session.expired(11_000));
    assert!(session.expired(11_001));
    session.touch(5_000);
    session.touch(4_000); // out-of-order times never move it back
    assert_eq!(session.expires_at(), 15_000);
    // A held connect keeps the session alive for its hold plus maxInterval.
    let connect = one(r#"{"channel":"/meta/connect","clientId":"CLIENT","connectionType":"long-polling"}"#);
    assert_eq!(session.handle(&connect, &settings), Outcome::Connect { hold_ms: 20_000 });
    assert_eq!(session.expires_at(), 35_000);
    assert!(!session.expired(30_000));
    // The connect ends early at 8_000 and the client never returns.
    session.connect_reply(&connect, &settings);
    session.touch(8_000);
    assert_eq!(session.expires_at(), 35_000, "bounded by the hold that was promised");
    assert!(session.expired(35_001));
}

/// The ack extension over several connect rounds, with a lost reply re-sent.
#[test]
fn ack_extension_rounds() {
    let settings = Settings::default();
    let hs = one(
        r#"{"id":"1","version":"1.0","channel":"/meta/handshake","supportedConnectionTypes":["long-polling"],"ext":{"ack":true}}"#,
    );
    let (mut session, reply) = Session::new(CLIENT.into(), &hs, &settings, 0).expect("handshake");
    assert_eq!(reply["ext"], json!({"ack": true}));
    assert!(session.ack_enabled());
    let sub = one(r#"{"channel":"/meta/subscribe","clientId":"CLIENT","subscription":"/a"}"#);
    assert!(matches!(session.handle(&sub, &settings), Outcome::Resubscribed(_)));

    // One round: connect carrying the client's last batch, events, reply with this batch.
    let mut round = |ack: i64, timeout: Option<u64>, msgs: &[Arc<model::Message>]| {
        let advice = timeout.map_or(String::new(), |t| format!(r#","advice":{{"timeout":{t}}}"#));
        let connect = one(&format!(
            r#"{{"channel":"/meta/connect","clientId":"CLIENT","connectionType":"long-polling","ext":{{"ack":{ack}}}{advice}}}"#
        ));
        let Outcome::Connect { hold_ms } = session.handle(&connect, &settings) else { panic!("not a connect") };
        let events = session.deliveries(msgs, epoch());
        let reply = session.connect_reply(&connect, &settings);
        let data: Vec<i64> = events.iter().filter_map(|e| e["data"].as_i64()).collect();
        (hold_ms, data, reply["ext"]["ack"].as_i64().expect("ext.ack"))
    };
    assert_eq!(round(-1, Some(0), &[]), (0, vec![], 1));
    assert_eq!(
        round(1, None, &[stored(1, "/a", b"10", true), stored(2, "/a", b"20", true)]),
        (20_000, vec![10, 20], 2)
    );
    assert_eq!(round(2, None, &[stored(3, "/a", b"30", true)]), (20_000, vec![30], 3));
    // Batch 3's reply was lost: the client still acks 2. 30 is re-sent at once, before 40.
    assert_eq!(round(2, None, &[stored(4, "/a", b"40", true)]), (0, vec![30, 40], 4));
    // Batch 4 arrived: nothing owed, the connect is held again.
    assert_eq!(round(4, None, &[]), (20_000, vec![], 5));
    assert_eq!(session.cursor(), 4);
    assert_eq!(session.ack_dropped(), 0);
}

#[test]
fn without_ack_the_connect_reply_has_no_ext() {
    let settings = Settings::default();
    let mut session = handshake(&settings, r#","ext":{"ack":false}"#);
    assert!(!session.ack_enabled());
    let connect =
        one(r#"{"channel":"/meta/connect","clientId":"CLIENT","connectionType":"long-polling","ext":{"ack":3}}"#);
    assert_eq!(session.handle(&connect, &settings), Outcome::Connect { hold_ms: 20_000 });
    assert!(session.connect_reply(&connect, &settings).get("ext").is_none());
}

#[test]
fn callback_polling_round_trip() {
    let settings = Settings::default();
    let message =
        r#"[{"id":"1","version":"1.0","channel":"/meta/handshake","supportedConnectionTypes":["callback-polling"]}]"#;
    let query = format!(
        "message={}&jsonp=cometd.cb_7",
        form_urlencoded::byte_serialize(message.as_bytes()).collect::<String>()
    );
    let (batch, callback) = parse_callback_polling(&query).expect("query");
    let (_, reply) = Session::new(CLIENT.into(), &batch[0], &settings, 0).expect("handshake");
    let body = encode_jsonp(&callback, std::slice::from_ref(&reply));
    let text = std::str::from_utf8(&body).expect("utf-8");
    let inner = text.strip_prefix("/**/cometd.cb_7(").and_then(|t| t.strip_suffix(");")).expect("wrapped");
    assert_eq!(serde_json::from_str::<Value>(inner).expect("JSON"), json!([reply]));

    // Hostile data cannot close the script element or break the line.
    let hostile = json!({"channel": "/x", "data": "</script><script>alert(1)</script>\u{2028}&"});
    let body = encode_jsonp("cb", std::slice::from_ref(&hostile));
    let text = std::str::from_utf8(&body).expect("utf-8");
    assert!(!text.contains("</script") && !text.contains('\u{2028}') && !text.contains('&'), "{text}");
    let inner = text.strip_prefix("/**/cb(").and_then(|t| t.strip_suffix(");")).expect("wrapped");
    assert_eq!(serde_json::from_str::<Value>(inner).expect("JSON"), json!([hostile]));

    // A hostile callback never gets that far.
    let query = format!(
        "message={}&jsonp=alert(document.cookie)",
        form_urlencoded::byte_serialize(message.as_bytes()).collect::<String>()
    );
    assert_eq!(parse_callback_polling(&query).map(|_| ()).map_err(|e| e.status), Err(400));
}

#[test]
fn client_id_shape() {
    assert!(is_well_formed_client_id(CLIENT));
    assert!(is_well_formed_client_id(&"A9".repeat(MAX_CLIENT_ID_LEN / 2)));
    for bad in [
        "",
        "short",
        &"a".repeat(MIN_CLIENT_ID_LEN - 1),
        &"a".repeat(MAX_CLIENT_ID_LEN + 1),
        "emp18w5pk2b9x0c4v7n3q6r-",
        "emp18w5pk2b9x0c4v7n3q6r\u{e9}",
    ] {
        assert!(!is_well_formed_client_id(bad), "{bad}");
    }
}

#[test]
fn channel_kinds() {
    assert_eq!(Channel::of("/meta/connect"), Channel::Meta(Meta::Connect));
    assert_eq!(Channel::of("/meta/other"), Channel::UnknownMeta("/meta/other"));
    assert_eq!(Channel::of("/meta"), Channel::UnknownMeta("/meta"));
    assert_eq!(Channel::of("/service"), Channel::Service("/service"));
    assert_eq!(Channel::of("/service/echo"), Channel::Service("/service/echo"));
    assert_eq!(Channel::of("/metadata"), Channel::Broadcast("/metadata"));
    assert_eq!(Channel::of("/services/x"), Channel::Broadcast("/services/x"));
}
