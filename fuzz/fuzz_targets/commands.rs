//! The JSON command parser of the WebSocket and raw TCP transports (`protocol::commands`).
//!
//! Input: the bytes of one command (a WebSocket text message or a raw TCP line), no knobs.
//!
//! Beyond "no panic": an accepted subscribe or unsubscribe has 1 to `MAX_TOPICS` distinct
//! selectors that parse back to themselves; an accepted publish has a valid topic, and JSON
//! data within the nesting bound or UTF-8 text; an echoed id is valid JSON within
//! `MAX_REQUEST_ID_LEN`; every reply (ack or error) is one JSON object; a refusal's reason is
//! bounded.
#![no_main]

use halley::model::{check_depth, validate_topic, Selector};
use halley::protocol::commands::{
    ack, parse_command, Command, JSON_CONTENT_TYPE, MAX_COMMAND_LEN, MAX_REASON_LEN, MAX_REQUEST_ID_LEN, MAX_TOPICS,
    TEXT_CONTENT_TYPE,
};
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match parse_command(data) {
        Ok(command) => {
            assert!(data.len() <= MAX_COMMAND_LEN);
            if let Some(id) = command.id() {
                assert!(id.get().len() <= MAX_REQUEST_ID_LEN);
                serde_json::from_str::<Box<RawValue>>(id.get()).expect("an echoed id is JSON");
            }
            match &command {
                Command::Subscribe { selectors, .. } | Command::Unsubscribe { selectors: Some(selectors), .. } => {
                    check_selectors(selectors)
                }
                Command::Publish { publish, .. } => {
                    assert!(validate_topic(&publish.topic).is_ok(), "{:?}", publish.topic);
                    match publish.content_type.as_deref() {
                        Some(JSON_CONTENT_TYPE) => {
                            serde_json::from_slice::<Box<RawValue>>(&publish.data).expect("JSON data is JSON");
                            assert!(check_depth(&publish.data).is_ok());
                        }
                        Some(TEXT_CONTENT_TYPE) => assert!(std::str::from_utf8(&publish.data).is_ok()),
                        other => panic!("content type {other:?}"),
                    }
                }
                Command::Auth { token, .. } => assert!(!token.is_empty(), "an auth command carries a token"),
                Command::Unsubscribe { selectors: None, .. } | Command::Ping { .. } => {}
            }
            let reply = ack(command.op(), command.id(), &[("topics", Value::from(1)), ("id", Value::Null)]);
            let reply = object(&reply);
            assert_eq!(reply.get("type").map(|t| t.get()), Some("\"ack\""));
            assert_eq!(reply.get("id").map(|id| id.get()), command.id().map(RawValue::get), "the id is echoed as sent");
        }
        Err(e) => {
            assert!(!e.reason().is_empty() && e.reason().len() <= MAX_REASON_LEN, "{:?}", e.reason());
            if let Some(id) = e.id() {
                assert!(id.get().len() <= MAX_REQUEST_ID_LEN && check_depth(id.get().as_bytes()).is_ok());
            }
            let reply = object(&e.reply());
            assert_eq!(reply.get("type").map(|t| t.get()), Some("\"error\""));
            let reason: Option<String> = reply.get("reason").and_then(|r| serde_json::from_str(r.get()).ok());
            assert_eq!(reason.as_deref(), Some(e.reason()));
        }
    }
});

/// A reply as a JSON object whose values stay raw (an echoed id may hold a number no `f64`
/// holds, which a `Value` would refuse); each key once.
fn object(reply: &str) -> HashMap<String, Box<RawValue>> {
    let fields: Vec<(String, Box<RawValue>)> = match serde_json::from_str::<Pairs>(reply) {
        Ok(Pairs(fields)) => fields,
        Err(e) => panic!("a reply is not a JSON object ({e}): {reply}"),
    };
    let map: HashMap<String, Box<RawValue>> = fields.iter().cloned().collect();
    assert_eq!(map.len(), fields.len(), "a key repeated in {reply}");
    map
}

/// A JSON object's members in order, repeats kept.
struct Pairs(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    out.push(pair);
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn check_selectors(selectors: &[Selector]) {
    assert!(!selectors.is_empty() && selectors.len() <= MAX_TOPICS);
    for (i, selector) in selectors.iter().enumerate() {
        assert_eq!(Selector::parse(selector.as_str()).as_ref(), Ok(selector));
        assert!(!selectors[..i].contains(selector), "duplicate {selector}");
    }
}
