//! The native API: `POST|PUT /pub/<topic>` and `GET /sub/<topic>[,<topic>...]`.
//!
//! This module turns a parsed request into a decision (what to publish, what to subscribe to,
//! from which cursor, for how long) or a one-line 400 reason. It does no I/O; the worker acts
//! on the decision and `crate::transport` frames the reply.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;

use crate::http::Request;
use crate::model::{check_depth, is_json_content_type, validate_topic, Selector, Since};
use crate::transport::{iframe, valid_callback, StreamKind, Transport};

/// Most topics or patterns in one subscription.
pub const MAX_SELECTORS: usize = 32;
/// Longest event name accepted on a publish, in bytes.
pub const MAX_EVENT_LEN: usize = 64;
/// Longest publish `Content-Type` kept with a message, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 256;

/// A request rejected with 400 and this one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub Cow<'static, str>);

impl BadRequest {
    fn new(reason: impl Into<Cow<'static, str>>) -> BadRequest {
        BadRequest(reason.into())
    }
}

impl From<BadRequest> for crate::http::Reject {
    fn from(bad: BadRequest) -> crate::http::Reject {
        crate::http::Reject::bad_request(bad.0)
    }
}

/// A validated publish.
#[derive(Debug)]
pub struct Publish {
    pub topic: String,
    pub event: Option<Box<str>>,
    pub content_type: Option<Box<str>>,
    pub data: Bytes,
    /// Piggyback: the publisher also wants what is new on these topics since its cursor.
    pub piggyback: Option<Piggyback>,
}

/// The subscription part of a piggybacking publish (`X-Cursor` or `?cursor=`, plus `?topics=`).
#[derive(Debug)]
pub struct Piggyback {
    pub selectors: Box<[Selector]>,
    pub since: Since,
}

/// Parses `POST /pub<topic>` with its body.
pub fn parse_publish(topic: &str, req: &Request, body: Vec<u8>) -> Result<Publish, BadRequest> {
    if topic.is_empty() {
        return Err(BadRequest::new("missing topic: publish to /pub/<topic>"));
    }
    validate_topic(topic).map_err(|e| BadRequest::new(format!("invalid topic: {e}")))?;
    // X-Event is taken as sent: an event name with spaces is refused, not trimmed.
    let event = match req.query_param("event") {
        Some(event) => Some(event),
        None => header_str(req, "x-event", "X-Event")?.map(Cow::Borrowed),
    };
    let event = match event {
        Some(event) => Some(validate_event(&event)?.into()),
        None => None,
    };
    let content_type = match req.header("content-type") {
        Some(raw) if raw.len() > MAX_CONTENT_TYPE_LEN => {
            return Err(BadRequest::new("Content-Type too long"));
        }
        Some(raw) => match std::str::from_utf8(raw) {
            Ok(ct) if !ct.trim().is_empty() => Some(ct.trim().into()),
            Ok(_) => None,
            Err(_) => return Err(BadRequest::new("Content-Type is not UTF-8")),
        },
        None => None,
    };
    // A JSON payload is embedded in every subscriber's message as sent, so its nesting is
    // bounded here (other content goes out as a string and may look like anything).
    if content_type.as_deref().is_some_and(is_json_content_type) {
        check_depth(&body).map_err(|e| BadRequest::new(e.to_string()))?;
    }
    let piggyback = parse_piggyback(req)?;
    Ok(Publish { topic: topic.to_owned(), event, content_type, data: Bytes::from(body), piggyback })
}

/// Header `name` as text; a value that is not UTF-8 is refused (named `shown`).
fn header_str<'r>(req: &'r Request, name: &str, shown: &str) -> Result<Option<&'r str>, BadRequest> {
    req.header(name)
        .map(|raw| std::str::from_utf8(raw).map_err(|_| BadRequest::new(format!("{shown} is not UTF-8"))))
        .transpose()
}

fn parse_piggyback(req: &Request) -> Result<Option<Piggyback>, BadRequest> {
    let cursor = match req.query_param("cursor") {
        Some(cursor) => Some(cursor),
        None => header_str(req, "x-cursor", "X-Cursor")?.map(|raw| Cow::Borrowed(raw.trim())),
    };
    let topics = req.query_param("topics");
    match (cursor, topics) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(BadRequest::new("a piggyback cursor needs ?topics=<topic>[,<topic>...]")),
        (None, Some(_)) => Err(BadRequest::new("?topics= needs a piggyback cursor (X-Cursor or ?cursor=)")),
        (Some(cursor), Some(topics)) => Ok(Some(Piggyback {
            selectors: parse_selectors(&topics)?.into_boxed_slice(),
            since: parse_since(&cursor)?,
        })),
    }
}

/// The transports `?transport=` accepts, for error messages.
const TRANSPORTS: &str = "poll, longpoll, jsonp, stream, iframe, multipart, sse, websocket";

/// What carries a subscription's messages.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// An HTTP transport on this request.
    Http(Transport),
    /// Upgrade this connection to a WebSocket.
    WebSocket,
}

/// Picks the transport: `?transport=` if given; else `Upgrade: websocket` selects WebSocket,
/// `Accept: text/event-stream` selects SSE, and the default is JSON long-poll. `callback=` is
/// required by (and only allowed with) `jsonp` and `iframe`.
pub fn select_transport(req: &Request) -> Result<Delivery, BadRequest> {
    let upgrade = req.wants_upgrade("websocket");
    let callback = req.query_param("callback");
    let explicit = req.query_param("transport");
    let delivery = match explicit.as_deref() {
        None if upgrade => Delivery::WebSocket,
        None if accepts_event_stream(req) => Delivery::Http(Transport::Stream(StreamKind::Sse)),
        None | Some("longpoll") => Delivery::Http(Transport::LongPoll),
        Some("poll") => Delivery::Http(Transport::Poll),
        Some("jsonp") => Delivery::Http(Transport::Jsonp { callback: checked_callback(callback.as_deref())?.into() }),
        Some("iframe") => {
            let callback = checked_callback(callback.as_deref())?;
            Delivery::Http(Transport::Stream(StreamKind::Iframe { prefix: iframe::prefix(callback) }))
        }
        Some("stream") => Delivery::Http(Transport::Stream(StreamKind::Ndjson)),
        Some("multipart") => Delivery::Http(Transport::Stream(StreamKind::Multipart)),
        Some("sse") => Delivery::Http(Transport::Stream(StreamKind::Sse)),
        Some("websocket") if upgrade => Delivery::WebSocket,
        Some("websocket") => return Err(BadRequest::new("transport=websocket needs a WebSocket upgrade request")),
        Some(other) => {
            return Err(BadRequest::new(format!("unknown transport {other:?}; use one of: {TRANSPORTS}")));
        }
    };
    if upgrade && delivery != Delivery::WebSocket {
        return Err(BadRequest::new("a WebSocket upgrade contradicts the requested transport"));
    }
    let wants_callback =
        matches!(&delivery, Delivery::Http(Transport::Jsonp { .. } | Transport::Stream(StreamKind::Iframe { .. })));
    if callback.is_some() && !wants_callback {
        return Err(BadRequest::new("callback= only applies to transport=jsonp or transport=iframe"));
    }
    Ok(delivery)
}

fn accepts_event_stream(req: &Request) -> bool {
    req.header_str("accept").is_some_and(|accept| {
        accept
            .split(',')
            .any(|item| item.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("text/event-stream"))
    })
}

fn checked_callback(callback: Option<&str>) -> Result<&str, BadRequest> {
    match callback {
        None => Err(BadRequest::new("this transport needs callback=<function name>")),
        Some(name) if valid_callback(name) => Ok(name),
        Some(_) => Err(BadRequest::new("invalid callback name: use [A-Za-z_$][A-Za-z0-9_$.]*, at most 64 bytes")),
    }
}

/// Event names travel in SSE `event:` lines and JSON; keep them to visible ASCII.
pub(crate) fn validate_event(event: &str) -> Result<&str, BadRequest> {
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(BadRequest::new(format!("event name must be 1 to {MAX_EVENT_LEN} bytes")));
    }
    if !event.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BadRequest::new("event name must be visible ASCII without spaces"));
    }
    Ok(event)
}

/// A validated subscription request.
#[derive(Debug)]
pub struct Subscribe {
    pub selectors: Vec<Selector>,
    pub since: Since,
    /// `None`: the configured default hold.
    pub timeout: Option<Duration>,
}

/// Parses `GET /sub<topics>` with `since=` / `Last-Event-ID` and `timeout=`.
pub fn parse_subscribe(topics: &str, req: &Request, max_timeout: Duration) -> Result<Subscribe, BadRequest> {
    let selectors = parse_selectors(topics)?;
    let since = match req.query_param("since") {
        Some(raw) => parse_since(&raw)?,
        None => match header_str(req, "last-event-id", "Last-Event-ID")? {
            Some(raw) => parse_since(raw.trim())?,
            None => Since::Now,
        },
    };
    let timeout = match req.query_param("timeout") {
        Some(raw) => Some(parse_timeout(&raw, max_timeout)?),
        None => None,
    };
    Ok(Subscribe { selectors, since, timeout })
}

/// `/a,b/c,/d/*` -> `/a`, `/b/c`, `/d/*` (each item gets a leading '/' if it lacks one).
pub fn parse_selectors(list: &str) -> Result<Vec<Selector>, BadRequest> {
    if list.is_empty() {
        return Err(BadRequest::new("missing topic: subscribe with /sub/<topic>[,<topic>...]"));
    }
    let list = list.strip_prefix('/').unwrap_or(list);
    let mut selectors = Vec::new();
    for item in list.split(',') {
        if selectors.len() == MAX_SELECTORS {
            return Err(BadRequest::new(format!("at most {MAX_SELECTORS} topics per subscription")));
        }
        let name = if item.starts_with('/') { Cow::Borrowed(item) } else { Cow::Owned(format!("/{item}")) };
        let selector = Selector::parse(&name).map_err(|e| BadRequest::new(format!("invalid topic {name:?}: {e}")))?;
        if !selectors.contains(&selector) {
            selectors.push(selector);
        }
    }
    Ok(selectors)
}

fn parse_since(raw: &str) -> Result<Since, BadRequest> {
    Since::parse(raw).map_err(|e| BadRequest::new(format!("invalid cursor: {e}")))
}

fn parse_timeout(raw: &str, max: Duration) -> Result<Duration, BadRequest> {
    let secs: f64 = raw.parse().map_err(|_| BadRequest::new("timeout must be a number of seconds"))?;
    if !(0.0..=max.as_secs_f64()).contains(&secs) {
        return Err(BadRequest::new(format!("timeout must be between 0 and {} seconds", max.as_secs_f64())));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, Limits, Status};

    fn request(head: &str) -> Request {
        match parse_head(head.as_bytes(), &Limits::default()) {
            Ok(Status::Complete((req, _))) => req,
            other => panic!("test request did not parse: {other:?}"),
        }
    }

    #[test]
    fn selectors_parse_lists_and_patterns() {
        let sels = parse_selectors("/a,b/c,/d/*,a").expect("valid");
        let names: Vec<&str> = sels.iter().map(Selector::as_str).collect();
        assert_eq!(names, ["/a", "/b/c", "/d/*"]);
        assert!(sels[2].is_pattern());
        assert!(parse_selectors("").is_err());
        assert!(parse_selectors("/a,,b").is_err());
        assert!(parse_selectors("/a%20b").is_err());
        let many = (0..=MAX_SELECTORS).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",");
        assert!(parse_selectors(&many).is_err());
    }

    #[test]
    fn subscribe_reads_since_from_query_or_header() {
        let max = Duration::from_secs(120);
        let req = request("GET /sub/a?since=all&timeout=2.5 HTTP/1.1\r\nHost: x\r\n\r\n");
        let sub = parse_subscribe("/a", &req, max).expect("valid");
        assert!(matches!(sub.since, Since::All));
        assert_eq!(sub.timeout, Some(Duration::from_millis(2500)));

        let req = request("GET /sub/a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: all\r\n\r\n");
        assert!(matches!(parse_subscribe("/a", &req, max).expect("valid").since, Since::All));

        let req = request("GET /sub/a HTTP/1.1\r\nHost: x\r\n\r\n");
        let sub = parse_subscribe("/a", &req, max).expect("valid");
        assert!(matches!(sub.since, Since::Now));
        assert_eq!(sub.timeout, None);

        for bad in ["since=zz", "timeout=-1", "timeout=121", "timeout=abc"] {
            let req = request(&format!("GET /sub/a?{bad} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert!(parse_subscribe("/a", &req, max).is_err(), "{bad}");
        }
    }

    #[test]
    fn transport_selection() {
        let pick = |head: &str| select_transport(&request(head));
        let http = |t| Ok(Delivery::Http(t));
        assert_eq!(pick("GET /sub/a HTTP/1.1\r\nHost: x\r\n\r\n"), http(Transport::LongPoll));
        assert_eq!(
            pick("GET /sub/a HTTP/1.1\r\nHost: x\r\nAccept: text/html, text/event-stream;q=0.9\r\n\r\n"),
            http(Transport::Stream(StreamKind::Sse))
        );
        assert_eq!(pick("GET /sub/a?transport=poll HTTP/1.1\r\nHost: x\r\n\r\n"), http(Transport::Poll));
        assert_eq!(
            pick("GET /sub/a?transport=stream HTTP/1.1\r\nHost: x\r\n\r\n"),
            http(Transport::Stream(StreamKind::Ndjson))
        );
        assert_eq!(
            pick("GET /sub/a?transport=jsonp&callback=cb HTTP/1.1\r\nHost: x\r\n\r\n"),
            http(Transport::Jsonp { callback: "cb".into() })
        );
        let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
        assert_eq!(pick(&format!("GET /sub/a HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n")), Ok(Delivery::WebSocket));
        for bad in [
            "transport=carrier-pigeon",
            "transport=jsonp",
            "transport=jsonp&callback=alert(1)",
            "transport=iframe&callback=%3C%2Fscript%3E",
            "transport=longpoll&callback=cb",
            "transport=websocket",
        ] {
            assert!(pick(&format!("GET /sub/a?{bad} HTTP/1.1\r\nHost: x\r\n\r\n")).is_err(), "{bad}");
        }
        let contradictory = format!("GET /sub/a?transport=sse HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n");
        assert!(pick(&contradictory).is_err());
    }

    #[test]
    fn piggyback_needs_cursor_and_topics() {
        let req = request("POST /pub/a?cursor=all&topics=b,c HTTP/1.1\r\nHost: x\r\n\r\n");
        let p = parse_publish("/a", &req, Vec::new()).expect("valid").piggyback.expect("piggyback");
        assert_eq!(p.selectors.len(), 2);
        assert!(matches!(p.since, Since::All));
        let req = request("POST /pub/a?topics=b HTTP/1.1\r\nHost: x\r\nX-Cursor: all\r\n\r\n");
        assert!(parse_publish("/a", &req, Vec::new()).expect("valid").piggyback.is_some());
        for bad in ["cursor=all", "topics=b", "cursor=junk&topics=b"] {
            let req = request(&format!("POST /pub/a?{bad} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert!(parse_publish("/a", &req, Vec::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn publish_takes_event_and_content_type() {
        let req = request("POST /pub/a?event=tick HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n");
        let p = parse_publish("/a", &req, b"{}".to_vec()).expect("valid");
        assert_eq!(p.event.as_deref(), Some("tick"));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(&p.data[..], b"{}");

        let req = request("POST /pub/a HTTP/1.1\r\nHost: x\r\nX-Event: alarm\r\n\r\n");
        assert_eq!(parse_publish("/a", &req, Vec::new()).expect("valid").event.as_deref(), Some("alarm"));

        let req = request("POST /pub/a?event=has%20space HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(parse_publish("/a", &req, Vec::new()).is_err());
        let req = request("POST /pub/a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(parse_publish("", &req, Vec::new()).is_err());
        assert!(parse_publish("/a/*", &req, Vec::new()).is_err());
    }
}
