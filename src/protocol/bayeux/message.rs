//! One Bayeux message as a client sends it, and the parsers that turn a request into a batch
//! of them: a JSON body (long-polling, WebSocket frames) or a callback-polling query string.
//!
//! Parsing checks only the envelope (an array of at most [`MAX_BATCH_MESSAGES`] objects, each
//! with a string `channel`, field types, the `id` bound, the JSON nesting bound); what a message means is the
//! session's business, so one bad subscription gets an error reply rather than failing the
//! whole request. Unknown fields are ignored (section 3: extensions add their own).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{BayeuxError, DEFAULT_CALLBACK, MAX_BATCH_MESSAGES, MAX_ID_LEN};
use crate::model::check_depth;
use crate::transport::valid_callback;

/// One message of a batch. Every field but `channel` is optional on the wire.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a Bayeux message object")]
pub struct Message {
    /// Any JSON value; echoed as sent in the reply (at most [`MAX_ID_LEN`] bytes).
    #[serde(default)]
    pub id: Option<Box<RawValue>>,
    pub channel: Box<str>,
    #[serde(default)]
    pub client_id: Option<Box<str>>,
    /// A publish's payload, kept as the client's JSON text.
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    #[serde(default)]
    pub subscription: Option<Subscription>,
    #[serde(default)]
    pub connection_type: Option<Box<str>>,
    /// Kept loosely typed: clients differ in what they put here, and only `timeout` is read.
    #[serde(default)]
    pub advice: Option<Value>,
    #[serde(default)]
    pub ext: Option<Box<RawValue>>,
    #[serde(default)]
    pub version: Option<Box<str>>,
    #[serde(default)]
    pub minimum_version: Option<Box<str>>,
    #[serde(default)]
    pub supported_connection_types: Option<Vec<Box<str>>>,
}

/// A subscribe or unsubscribe's `subscription`: one channel or an array of them (section 3.5).
/// The reply echoes it in the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "a channel name or an array of channel names")]
pub enum Subscription {
    One(Box<str>),
    Many(Vec<Box<str>>),
}

/// The transports a client can name in `connectionType` (section 3.3), all of which this server
/// offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionType {
    LongPolling,
    CallbackPolling,
    WebSocket,
}

/// Parses a request body: a JSON array of messages, or a single message object. The caller
/// bounds the body's size; this bounds the message count and each `id`.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Message>, BayeuxError> {
    // Before serde: `data` and `ext` are kept as raw JSON, which serde reads with no depth
    // limit, and `data` is embedded in every subscriber's event as sent.
    check_depth(body).map_err(|e| BayeuxError::bad_request(e.to_string()))?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let batch = (&mut de)
        .deserialize_any(BatchVisitor)
        .map_err(|e| BayeuxError::bad_request(format!("invalid Bayeux batch: {e}")))?;
    de.end().map_err(|e| BayeuxError::bad_request(format!("invalid Bayeux batch: {e}")))?;
    if batch.is_empty() {
        return Err(BayeuxError::bad_request("empty Bayeux batch"));
    }
    if batch.iter().any(|m| m.id.as_ref().is_some_and(|id| id.get().len() > MAX_ID_LEN)) {
        return Err(BayeuxError::bad_request(format!("message id over {MAX_ID_LEN} bytes")));
    }
    Ok(batch)
}

/// Parses a callback-polling request's query string (with or without the leading `?`):
/// `message=<urlencoded JSON array>` and `jsonp=<callback>` (default [`DEFAULT_CALLBACK`]).
/// Returns the batch and the validated callback name.
pub fn parse_callback_polling(query: &str) -> Result<(Vec<Message>, Box<str>), BayeuxError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut message = None;
    let mut callback = None;
    // The first occurrence of each parameter wins; repeats are ignored.
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "message" if message.is_none() => message = Some(value),
            "jsonp" if callback.is_none() => callback = Some(value),
            _ => {}
        }
    }
    let callback = callback.as_deref().unwrap_or(DEFAULT_CALLBACK);
    if !valid_callback(callback) {
        return Err(BayeuxError::bad_request("invalid jsonp callback name"));
    }
    let Some(message) = message else {
        return Err(BayeuxError::bad_request("missing message parameter"));
    };
    Ok((parse_batch(message.as_bytes())?, callback.into()))
}

impl Message {
    /// The `id` as a JSON value for a reply, `None` when the message had none.
    pub fn id_value(&self) -> Option<Value> {
        self.id.as_deref().map(raw_to_value)
    }

    /// The payload as a JSON value, `None` when the message had no `data`.
    pub fn data_value(&self) -> Option<Value> {
        self.data.as_deref().map(raw_to_value)
    }

    /// `advice.timeout` in milliseconds, if the client sent a non-negative number.
    pub fn advice_timeout(&self) -> Option<u64> {
        let timeout = self.advice.as_ref()?.get("timeout")?;
        timeout.as_u64().or_else(|| timeout.as_f64().filter(|t| t.is_finite() && *t >= 0.0).map(|t| t as u64))
    }

    /// `ext.auth.token`, the token a handshake authenticates its session with
    /// (`crate::auth`); `None` when absent or not a string.
    pub fn ext_auth_token(&self) -> Option<String> {
        let ext: Value = serde_json::from_str(self.ext.as_deref()?.get()).ok()?;
        ext.get("auth")?.get("token")?.as_str().map(str::to_owned)
    }

    /// `ext.ack`, if `ext` is an object that has it (the ack extension, spec item 10).
    pub fn ext_ack(&self) -> Option<Value> {
        let ext: Value = serde_json::from_str(self.ext.as_deref()?.get()).ok()?;
        ext.as_object()?.get("ack").cloned()
    }
}

impl Subscription {
    /// The channel names, one or many.
    pub fn channels(&self) -> &[Box<str>] {
        match self {
            Subscription::One(one) => std::slice::from_ref(one),
            Subscription::Many(many) => many,
        }
    }

    /// The subscription as the client wrote it, for the reply.
    pub fn to_value(&self) -> Value {
        match self {
            Subscription::One(one) => Value::String(one.to_string()),
            Subscription::Many(many) => Value::Array(many.iter().map(|c| Value::String(c.to_string())).collect()),
        }
    }
}

impl ConnectionType {
    /// Every connection type, in the order the handshake reply lists them.
    pub const ALL: [ConnectionType; 3] =
        [ConnectionType::LongPolling, ConnectionType::CallbackPolling, ConnectionType::WebSocket];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::LongPolling => "long-polling",
            ConnectionType::CallbackPolling => "callback-polling",
            ConnectionType::WebSocket => "websocket",
        }
    }

    /// The type named `name`, if this server offers it (names are case-sensitive).
    pub fn parse(name: &str) -> Option<ConnectionType> {
        ConnectionType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for ConnectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Raw JSON to a value. The text was validated by serde_json already; a number out of `f64`
/// range is the only thing that can still fail, and it becomes `null`.
fn raw_to_value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// Reads the top level of a batch: an array of messages (stopping past the bound) or one object.
struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Vec<Message>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of Bayeux messages or one message object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<Message>, A::Error> {
        let batch: Vec<ObjectOnly> = crate::protocol::bounded_seq(seq, MAX_BATCH_MESSAGES, || {
            format!("more than {MAX_BATCH_MESSAGES} messages")
        })?;
        Ok(batch.into_iter().map(|ObjectOnly(msg)| msg).collect())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<Message>, A::Error> {
        Message::deserialize(de::value::MapAccessDeserializer::new(map)).map(|msg| vec![msg])
    }
}

/// A message that must be a JSON object: serde's derived struct would also take an array,
/// positionally.
struct ObjectOnly(Message);

impl<'de> Deserialize<'de> for ObjectOnly {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ObjectOnly, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = ObjectOnly;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Bayeux message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ObjectOnly, A::Error> {
        Message::deserialize(de::value::MapAccessDeserializer::new(map)).map(ObjectOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_shapes() {
        let batch = parse_batch(br#"[{"channel":"/a","id":"1"},{"channel":"/b","id":2}]"#).expect("array");
        assert_eq!(batch.len(), 2);
        assert_eq!(&*batch[0].channel, "/a");
        assert_eq!(batch[0].id_value(), Some(Value::from("1")));
        assert_eq!(batch[1].id_value(), Some(Value::from(2)));
        let one =
            parse_batch(br#" {"channel":"/meta/connect","clientId":"abc","unknown":{"x":[1]}} "#).expect("object");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].client_id.as_deref(), Some("abc"));
        assert!(one[0].id.is_none());
    }

    #[test]
    fn batch_rejects() {
        let too_many = format!("[{}]", vec![r#"{"channel":"/a"}"#; MAX_BATCH_MESSAGES + 1].join(","));
        let at_bound = format!("[{}]", vec![r#"{"channel":"/a"}"#; MAX_BATCH_MESSAGES].join(","));
        assert_eq!(parse_batch(at_bound.as_bytes()).map(|b| b.len()), Ok(MAX_BATCH_MESSAGES));
        let long_id = format!(r#"[{{"channel":"/a","id":"{}"}}]"#, "x".repeat(MAX_ID_LEN));
        let cases: &[(&[u8], &str)] = &[
            (b"", "EOF"),
            (b"[]", "empty"),
            (b"[{}]", "missing field `channel`"),
            (br#"[{"channel":1}]"#, "invalid type"),
            (br#"[{"channel":"/a"}] x"#, "trailing"),
            (br#"[1]"#, "expected a Bayeux message object"),
            (br#"[["1","/a"]]"#, "expected a Bayeux message object"),
            (br#"[[]]"#, "expected a Bayeux message object"),
            (br#""/a""#, "expected a JSON array"),
            (br#"[{"channel":"/a"}"#, "EOF"),
            (br#"[{"channel":"/a","subscription":3}]"#, "a channel name or an array"),
            (br#"[{"channel":"/a","clientId":5}]"#, "invalid type"),
            (too_many.as_bytes(), "more than 100 messages"),
            (long_id.as_bytes(), "message id over 256 bytes"),
        ];
        for (body, want) in cases {
            let err = parse_batch(body).expect_err(std::str::from_utf8(body).unwrap_or("?"));
            assert_eq!(err.status, 400);
            assert!(err.reason.contains(want), "{:?}: {}", String::from_utf8_lossy(body), err.reason);
            assert!(err.reason.len() <= super::super::MAX_REASON_LEN);
        }
    }

    #[test]
    fn field_accessors() {
        let batch = parse_batch(
            br#"[{"channel":"/meta/connect","advice":{"timeout":0},"ext":{"ack":7}},
                 {"channel":"/meta/connect","advice":{"timeout":1500.0},"ext":[1]},
                 {"channel":"/meta/connect","advice":{"timeout":-1},"ext":{"other":1}},
                 {"channel":"/meta/connect","advice":"x","data":null},
                 {"channel":"/x","data":{"a":[1,"b"]},"subscription":["/a","/b"]},
                 {"channel":"/x","subscription":"/a"}]"#,
        )
        .expect("batch");
        assert_eq!(batch[0].advice_timeout(), Some(0));
        assert_eq!(batch[0].ext_ack(), Some(Value::from(7)));
        assert_eq!(batch[1].advice_timeout(), Some(1500));
        assert_eq!(batch[1].ext_ack(), None, "ext that is not an object");
        assert_eq!(batch[2].advice_timeout(), None, "negative");
        assert_eq!(batch[2].ext_ack(), None);
        assert_eq!(batch[3].advice_timeout(), None);
        assert_eq!(batch[3].data_value(), None, "data: null is no data");
        assert_eq!(batch[4].data_value(), Some(serde_json::json!({"a": [1, "b"]})));
        assert_eq!(batch[4].subscription.as_ref().map(Subscription::channels).map(<[_]>::len), Some(2));
        assert_eq!(batch[4].subscription.as_ref().map(Subscription::to_value), Some(serde_json::json!(["/a", "/b"])));
        assert_eq!(batch[5].subscription.as_ref().map(Subscription::to_value), Some(Value::from("/a")));
    }

    #[test]
    fn callback_polling_query() {
        let message =
            r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["callback-polling"]}]"#;
        let encoded: String = form_urlencoded::byte_serialize(message.as_bytes()).collect();
        let (batch, cb) = parse_callback_polling(&format!("?jsonp=cb_1&message={encoded}")).expect("query");
        assert_eq!(&*cb, "cb_1");
        assert_eq!(&*batch[0].channel, "/meta/handshake");
        let (_, cb) = parse_callback_polling(&format!("message={encoded}&x=1")).expect("default callback");
        assert_eq!(&*cb, DEFAULT_CALLBACK);
        let (_, cb) = parse_callback_polling(&format!("message={encoded}&jsonp=a&jsonp=alert(1)")).expect("first");
        assert_eq!(&*cb, "a");
        for (query, want) in [
            (format!("message={encoded}&jsonp=alert(1)//"), "invalid jsonp callback name"),
            (format!("message={encoded}&jsonp=%3Cscript%3E"), "invalid jsonp callback name"),
            (format!("message={encoded}&jsonp="), "invalid jsonp callback name"),
            ("jsonp=cb".to_owned(), "missing message parameter"),
            ("message=%5B&jsonp=cb".to_owned(), "invalid Bayeux batch"),
        ] {
            let err = parse_callback_polling(&query).expect_err(&query);
            assert_eq!(err.status, 400);
            assert!(err.reason.contains(want), "{query}: {}", err.reason);
        }
    }

    #[test]
    fn connection_types() {
        for t in ConnectionType::ALL {
            assert_eq!(ConnectionType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ConnectionType::parse("Long-Polling"), None);
        assert_eq!(ConnectionType::parse("iframe"), None);
    }
}
