//! What a subscriber says and hears, per target flavour and subscriber mode, without I/O:
//! the subscribe and publish requests, long-poll cursors, long-poll bodies, the
//! `text/event-stream` event parser and the ndjson line splitter.
//!
//! Halley long-poll re-polls with `?since=<next>` from the JSON body; Nchan long-poll echoes
//! `Last-Modified`/`Etag` back as `If-Modified-Since`/`If-None-Match`; SSE reconnects send
//! `Last-Event-ID` (WHATWG HTML §9.2); ndjson streams and WebSocket upgrades resume with
//! `?since=<id of the last message>`. The session protocols (Pushlet pull, Bayeux
//! long-polling) keep the place on the server; their wire is in `session.rs`.

use std::fmt;

use serde::Deserialize;

use crate::http::Head;
use crate::session::{self, BayeuxState};
use crate::stamp::{Nested, Stamp};

/// Longest line we accept in an event stream or an ndjson stream, in bytes.
pub const MAX_SSE_LINE_BYTES: usize = 1024 * 1024;
/// The `Sec-WebSocket-Key` every upgrade sends (RFC 6455 §4.1 asks for a random nonce; it only
/// guards against caches replaying handshakes, which cannot happen on loopback).
pub const WS_KEY: &str = "aGFsbGV5LWxvYWQtd3MxNg==";

/// Which server's API the requests follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Halley's native API (`/pub/<topic>`, `/sub/<topic>?since=`).
    Halley,
    /// nginx + Nchan publisher/subscriber locations.
    Nchan,
}

/// How a subscriber receives messages: one variant, one arm in each `match` below and in
/// `sub.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One request per response; re-poll with the cursor.
    Longpoll,
    /// Server-Sent Events: one long response, one event per message.
    Sse,
    /// WebSocket upgrade of the subscribe URL; one text frame per message (RFC 6455).
    Ws,
    /// Halley's chunked `application/x-ndjson` stream: one JSON object per line.
    Stream,
    /// Pushlet pull at `/pushlet.srv`: `join-listen`, then `refresh` rounds (xml-strict).
    Pushlet,
    /// Bayeux long-polling at `/cometd`: handshake, subscribe, then `/meta/connect` rounds.
    Bayeux,
}

impl Mode {
    /// One request per response, like `longpoll`: the modes `sub.rs` re-polls.
    pub fn is_polling(self) -> bool {
        matches!(self, Mode::Longpoll | Mode::Pushlet | Mode::Bayeux)
    }

    /// A session protocol: Halley only, the place in the stream kept on the server.
    pub fn is_session(self) -> bool {
        matches!(self, Mode::Pushlet | Mode::Bayeux)
    }
}

/// Where a subscriber stands in the message stream, sent with its next request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cursor {
    /// Nothing seen yet: wait for the next message.
    #[default]
    Start,
    /// Halley's `next` from the last long-poll body, or the id of the last streamed message.
    Halley(String),
    /// Nchan's `Last-Modified` and `Etag` from the last long-poll response.
    Nchan { last_modified: String, etag: String },
    /// The last SSE `id:`.
    EventId(String),
    /// A Pushlet session's `p_id`: the server keeps the place.
    Pushlet(String),
    /// A Bayeux session: `clientId`, subscription state and the server's advice.
    Bayeux(BayeuxState),
}

/// The fixed part of every request: host, paths, flavour, mode.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// Value of the `Host` header.
    pub host: String,
    /// Publisher location prefix, e.g. `/pub`.
    pub pub_path: String,
    /// Subscriber location prefix, e.g. `/sub`.
    pub sub_path: String,
    pub target: Target,
    pub mode: Mode,
    /// Halley long-poll `timeout=` in seconds (0 = server default).
    pub poll_timeout_s: u32,
    /// Speak TLS to the server (`--tls`); None: plain TCP.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsOptions>,
}

/// Why a response could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// A 200 long-poll body that is not the expected JSON.
    BadBody,
    /// An event-stream line longer than [`MAX_SSE_LINE_BYTES`].
    LineTooLong,
    /// An event whose `data:` lines add up to more than [`MAX_SSE_LINE_BYTES`].
    EventTooLong,
    /// The server said no: an unexpected status, a Pushlet `nack`, an unsuccessful Bayeux reply.
    Refused(String),
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedError::BadBody => f.write_str("long-poll body is not the expected JSON"),
            FeedError::LineTooLong => f.write_str("event-stream line too long"),
            FeedError::EventTooLong => f.write_str("event-stream event too long"),
            FeedError::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl std::error::Error for FeedError {}

/// What one long-poll response delivered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    pub stamps: Vec<Stamp>,
    /// Messages without a stamp of ours (someone else's traffic).
    pub foreign: u32,
    /// The server said messages were dropped before our cursor (Halley `"gap":true`, a
    /// Pushlet `error` event).
    pub gap: bool,
    /// The server forgot the session (Pushlet `abort` or expired id, Bayeux `402` with
    /// `reconnect: handshake`): the cursor is back at [`Cursor::Start`].
    pub session_lost: bool,
    /// Wait this long before the next request (Bayeux `advice.interval`), in milliseconds.
    pub pause_ms: u64,
}

impl Endpoint {
    /// The subscribe request for `topic` from `cursor`.
    pub fn subscribe_request(&self, topic: &str, cursor: &Cursor) -> Vec<u8> {
        match self.mode {
            Mode::Pushlet => return session::pushlet_request(&self.host, topic, cursor),
            Mode::Bayeux => return session::bayeux_request(&self.host, topic, cursor, self.poll_timeout_s),
            _ => {}
        }
        let mut path = format!("{}/{}", self.sub_path, topic);
        let mut query = Vec::new();
        let mut extra = String::new();
        match self.mode {
            Mode::Longpoll => {}
            Mode::Sse => {
                if self.target == Target::Halley {
                    query.push("transport=sse".to_owned());
                }
                extra.push_str("Accept: text/event-stream\r\n");
            }
            // RFC 6455 §4.1: the opening handshake.
            Mode::Ws => extra.push_str(&format!(
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
            )),
            Mode::Stream => query.push("transport=stream".to_owned()),
            Mode::Pushlet | Mode::Bayeux => {}
        }
        match cursor {
            Cursor::Start | Cursor::Pushlet(_) | Cursor::Bayeux(_) => {}
            Cursor::Halley(next) => query.push(format!("since={}", query_escape(next))),
            Cursor::Nchan { last_modified, etag } => {
                extra.push_str(&format!("If-Modified-Since: {last_modified}\r\nIf-None-Match: {etag}\r\n"));
            }
            Cursor::EventId(id) => extra.push_str(&format!("Last-Event-ID: {id}\r\n")),
        }
        if self.target == Target::Halley && self.mode == Mode::Longpoll && self.poll_timeout_s > 0 {
            query.push(format!("timeout={}", self.poll_timeout_s));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", self.host).into_bytes()
    }

    /// The publish request putting `body` (a JSON stamp) on `topic`.
    pub fn publish_request(&self, topic: &str, body: &[u8]) -> Vec<u8> {
        let mut req = format!(
            "POST {}/{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
            self.pub_path,
            topic,
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    }

    /// Whether the request `subscribe_request` makes from `cursor` waits for messages (counts
    /// as parked): always, except a Pushlet join or a Bayeux handshake/subscribe, after which
    /// the subscriber is not yet sure to receive a message published now.
    pub fn parks(&self, cursor: &Cursor) -> bool {
        match self.mode {
            Mode::Pushlet => matches!(cursor, Cursor::Pushlet(_)),
            Mode::Bayeux => matches!(cursor, Cursor::Bayeux(s) if s.subscribed),
            _ => true,
        }
    }

    /// Read one complete long-poll response, moving `cursor` forward.
    /// Non-200 answers (a Halley timeout is a 200; Nchan's are 304/408) deliver nothing and
    /// keep the cursor. Pushlet and Bayeux replies are read by `session.rs`, every status
    /// included.
    pub fn longpoll_response(&self, head: &Head, body: &[u8], cursor: &mut Cursor) -> Result<Polled, FeedError> {
        match self.mode {
            Mode::Pushlet => return session::pushlet_reply(head, body, cursor),
            Mode::Bayeux => return session::bayeux_reply(head, body, cursor),
            _ => {}
        }
        let mut polled = Polled::default();
        if head.status != 200 {
            return Ok(polled);
        }
        match self.target {
            Target::Halley => {
                let parsed: LongPollBody = serde_json::from_slice(body).map_err(|_| FeedError::BadBody)?;
                for m in parsed.messages {
                    match m.data.0 {
                        Some(s) => polled.stamps.push(s),
                        None => polled.foreign += 1,
                    }
                }
                polled.gap = parsed.gap;
                if let Some(next) = parsed.next {
                    *cursor = Cursor::Halley(next);
                }
            }
            Target::Nchan => {
                match crate::stamp::parse_stamp(body) {
                    Some(s) => polled.stamps.push(s),
                    None => polled.foreign += 1,
                }
                if let (Some(lm), Some(etag)) = (&head.last_modified, &head.etag) {
                    *cursor = Cursor::Nchan { last_modified: lm.clone(), etag: etag.clone() };
                }
            }
        }
        Ok(polled)
    }
}

/// One line of an ndjson stream or one WebSocket text frame from Halley, as far as a
/// subscriber cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A message: its id (the resume cursor) and its stamp if it is one of ours.
    Message { id: Option<String>, stamp: Option<Stamp> },
    /// The server ends the stream; `next` is the cursor to reconnect with.
    End { next: Option<String> },
    /// The server dropped messages before our cursor (`{"type":"gap"}`).
    Gap,
    /// The server cut us for falling behind (`{"type":"overflow"}`).
    Overflow,
    /// Heartbeats, acknowledgements and other control objects.
    Control,
}

/// Read one ndjson line / WebSocket text: a message object, or a control object with a `type`
/// key (see Halley's `transport::stream` and `protocol::commands`). Nchan's WebSocket frames are
/// the published body itself: a stamp with no `id`.
pub fn stream_item(bytes: &[u8]) -> Result<StreamItem, FeedError> {
    let line: StreamLine = serde_json::from_slice(bytes).map_err(|_| FeedError::BadBody)?;
    Ok(match line.kind.as_deref() {
        None => {
            let stamp = match line.data {
                Some(nested) => nested.0,
                None => crate::stamp::parse_stamp(bytes),
            };
            StreamItem::Message { id: line.id, stamp }
        }
        Some("end") => StreamItem::End { next: line.next },
        Some("gap") => StreamItem::Gap,
        Some("overflow") => StreamItem::Overflow,
        Some(_) => StreamItem::Control,
    })
}

#[derive(Deserialize)]
struct StreamLine {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    data: Option<Nested>,
}

/// Splits a byte stream into `\n`-terminated lines (ndjson), bounded per line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    line: Vec<u8>,
}

impl LineSplitter {
    /// Feed decoded body bytes; `on_line` gets each complete, non-empty line without its `\n`.
    pub fn feed(&mut self, bytes: &[u8], mut on_line: impl FnMut(&[u8])) -> Result<(), FeedError> {
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.line.len() + i > MAX_SSE_LINE_BYTES {
                return Err(FeedError::LineTooLong);
            }
            if self.line.is_empty() {
                if i > 0 {
                    on_line(&rest[..i]);
                }
            } else {
                self.line.extend_from_slice(&rest[..i]);
                on_line(&self.line);
                self.line.clear();
            }
            rest = &rest[i + 1..];
        }
        if self.line.len() + rest.len() > MAX_SSE_LINE_BYTES {
            return Err(FeedError::LineTooLong);
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }
}

#[derive(Deserialize)]
struct LongPollBody {
    #[serde(default)]
    messages: Vec<LongPollMessage>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    gap: bool,
}

#[derive(Deserialize)]
struct LongPollMessage {
    data: Nested,
}

/// Incremental `text/event-stream` parser (WHATWG HTML §9.2.6): `data:` lines accumulate,
/// `id:` sets the last event id, an empty line dispatches the event.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    last_id: Option<String>,
}

impl SseParser {
    /// Feed decoded body bytes; `on_event` gets each complete event's data.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&[u8])) -> Result<(), FeedError> {
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= MAX_SSE_LINE_BYTES {
                    return Err(FeedError::LineTooLong);
                }
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            if self.line.is_empty() {
                if self.has_data {
                    on_event(&self.data);
                }
                self.data.clear();
                self.has_data = false;
                continue;
            }
            let (field, value) = match self.line.iter().position(|&c| c == b':') {
                Some(0) => {
                    self.line.clear();
                    continue; // a comment line (keep-alive)
                }
                Some(i) => {
                    let v = &self.line[i + 1..];
                    (&self.line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (&self.line[..], &b""[..]),
            };
            match field {
                b"data" => {
                    if self.data.len() + value.len() >= MAX_SSE_LINE_BYTES {
                        return Err(FeedError::EventTooLong);
                    }
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                b"id" => self.last_id = Some(String::from_utf8_lossy(value).into_owned()),
                _ => {}
            }
            self.line.clear();
        }
        Ok(())
    }

    /// The cursor to resume from: the last event id seen.
    pub fn cursor(&self) -> Option<Cursor> {
        self.last_id.clone().map(Cursor::EventId)
    }
}

/// Percent-encode a cursor for a query string (RFC 3986 §2.3: unreserved bytes pass).
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::http::Framing;

    fn endpoint(target: Target, mode: Mode) -> Endpoint {
        Endpoint {
            host: "127.0.0.1:8080".into(),
            pub_path: "/pub".into(),
            sub_path: "/sub".into(),
            target,
            mode,
            poll_timeout_s: 30,
            tls: None,
        }
    }

    /// A bodiless keep-alive response head with `status` (shared with the session tests).
    pub(crate) fn head(status: u16) -> Head {
        Head {
            status,
            framing: Framing::Length(0),
            keep_alive: true,
            last_modified: None,
            etag: None,
            event_stream: false,
        }
    }

    #[test]
    fn halley_cursor_moves_with_next_and_is_sent_back() {
        let ep = endpoint(Target::Halley, Mode::Longpoll);
        let mut cursor = Cursor::Start;
        let first = String::from_utf8(ep.subscribe_request("bench", &cursor)).expect("ascii");
        assert!(first.starts_with("GET /sub/bench?timeout=30 HTTP/1.1\r\n"), "{first}");
        let body = br#"{"messages":[{"id":"7-1","topic":"/bench","time":1,"data":{"src":0,"seq":1,"ts":5,"pad":""}},
            {"id":"7-2","topic":"/bench","time":1,"data":"plain text"}],"next":"7-2"}"#;
        let polled = ep.longpoll_response(&head(200), body, &mut cursor).expect("valid");
        assert_eq!(polled.stamps, vec![Stamp { src: 0, seq: 1, ts: 5 }]);
        assert_eq!(polled.foreign, 1);
        assert_eq!(cursor, Cursor::Halley("7-2".into()));
        let again = String::from_utf8(ep.subscribe_request("bench", &cursor)).expect("ascii");
        assert!(again.starts_with("GET /sub/bench?since=7-2&timeout=30 HTTP/1.1\r\n"), "{again}");
    }

    #[test]
    fn halley_timeout_and_gap_keep_polling() {
        let ep = endpoint(Target::Halley, Mode::Longpoll);
        let mut cursor = Cursor::Halley("1-1".into());
        let polled = ep.longpoll_response(&head(200), br#"{"messages":[],"next":"1-1"}"#, &mut cursor).expect("ok");
        assert!(polled.stamps.is_empty());
        assert_eq!(cursor, Cursor::Halley("1-1".into()));
        let polled =
            ep.longpoll_response(&head(200), br#"{"messages":[],"next":"2-9","gap":true}"#, &mut cursor).expect("ok");
        assert!(polled.gap);
        assert_eq!(cursor, Cursor::Halley("2-9".into()));
        assert_eq!(ep.longpoll_response(&head(200), b"{oops", &mut cursor), Err(FeedError::BadBody));
        assert_eq!(cursor, Cursor::Halley("2-9".into()), "a bad body does not move the cursor");
    }

    #[test]
    fn nchan_cursor_from_headers_and_kept_on_304() {
        let ep = endpoint(Target::Nchan, Mode::Longpoll);
        let mut cursor = Cursor::Start;
        let mut h = head(200);
        h.last_modified = Some("Sun, 22 Nov 2026 06:00:00 GMT".into());
        h.etag = Some("0".into());
        let polled = ep.longpoll_response(&h, br#"{"src":2,"seq":3,"ts":4,"pad":""}"#, &mut cursor).expect("ok");
        assert_eq!(polled.stamps, vec![Stamp { src: 2, seq: 3, ts: 4 }]);
        let req = String::from_utf8(ep.subscribe_request("t", &cursor)).expect("ascii");
        assert!(req.starts_with("GET /sub/t HTTP/1.1\r\n"), "no Halley query for Nchan: {req}");
        assert!(req.contains("If-Modified-Since: Sun, 22 Nov 2026 06:00:00 GMT\r\nIf-None-Match: 0\r\n"));
        let before = cursor.clone();
        let polled = ep.longpoll_response(&head(304), b"", &mut cursor).expect("ok");
        assert!(polled.stamps.is_empty());
        assert_eq!(cursor, before);
    }

    #[test]
    fn sse_requests_and_resume() {
        let ep = endpoint(Target::Halley, Mode::Sse);
        let req = String::from_utf8(ep.subscribe_request("t", &Cursor::EventId("4-4".into()))).expect("ascii");
        assert!(req.starts_with("GET /sub/t?transport=sse HTTP/1.1\r\n"));
        assert!(req.contains("Accept: text/event-stream\r\nLast-Event-ID: 4-4\r\n\r\n"));
        let nchan = endpoint(Target::Nchan, Mode::Sse);
        let req = String::from_utf8(nchan.subscribe_request("t", &Cursor::Start)).expect("ascii");
        assert!(req.starts_with("GET /sub/t HTTP/1.1\r\n"));
    }

    #[test]
    fn sse_events_split_anywhere() {
        let stream = b": hi\n\nid: 1-1\ndata: {\"seq\":1,\r\ndata: \"ts\":2}\n\nretry: 5\nid: 1-2\ndata:x\n\n";
        for split in 0..=stream.len() {
            let mut p = SseParser::default();
            let mut events = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                p.feed(part, |d| events.push(d.to_vec())).expect("ok");
            }
            assert_eq!(events, vec![b"{\"seq\":1,\n\"ts\":2}".to_vec(), b"x".to_vec()], "split {split}");
            assert_eq!(p.cursor(), Some(Cursor::EventId("1-2".into())));
        }
    }

    #[test]
    fn ws_and_stream_requests_carry_the_cursor_in_the_query() {
        let ws = endpoint(Target::Halley, Mode::Ws);
        let req = String::from_utf8(ws.subscribe_request("t", &Cursor::Halley("3-9".into()))).expect("ascii");
        assert!(req.starts_with("GET /sub/t?since=3-9 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Upgrade: websocket\r\n") && req.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(req.contains(&format!("Sec-WebSocket-Key: {WS_KEY}\r\n")));
        let st = endpoint(Target::Halley, Mode::Stream);
        let req = String::from_utf8(st.subscribe_request("t", &Cursor::Halley("3-9".into()))).expect("ascii");
        assert!(req.starts_with("GET /sub/t?transport=stream&since=3-9 HTTP/1.1\r\n"), "{req}");
    }

    #[test]
    fn stream_items_are_messages_or_control() {
        let msg = br#"{"id":"5-2","topic":"/t","time":1,"data":{"src":1,"seq":2,"ts":3,"pad":""}}"#;
        assert_eq!(
            stream_item(msg),
            Ok(StreamItem::Message { id: Some("5-2".into()), stamp: Some(Stamp { src: 1, seq: 2, ts: 3 }) })
        );
        assert_eq!(
            stream_item(br#"{"id":"5-3","topic":"/t","time":1,"data":"text"}"#),
            Ok(StreamItem::Message { id: Some("5-3".into()), stamp: None })
        );
        // Nchan's WebSocket frame is the published body.
        assert_eq!(
            stream_item(br#"{"src":0,"seq":7,"ts":9,"pad":"x"}"#),
            Ok(StreamItem::Message { id: None, stamp: Some(Stamp { src: 0, seq: 7, ts: 9 }) })
        );
        assert_eq!(stream_item(br#"{"type":"end","next":"5-3"}"#), Ok(StreamItem::End { next: Some("5-3".into()) }));
        assert_eq!(stream_item(br#"{"type":"gap","oldest":"5-1"}"#), Ok(StreamItem::Gap));
        assert_eq!(stream_item(br#"{"type":"overflow"}"#), Ok(StreamItem::Overflow));
        assert_eq!(stream_item(br#"{"type":"ack","op":"subscribe","topics":["/t"]}"#), Ok(StreamItem::Control));
        assert_eq!(stream_item(br#"{"type":"heartbeat"}"#), Ok(StreamItem::Control));
        assert_eq!(stream_item(b"{nope"), Err(FeedError::BadBody));
    }

    #[test]
    fn lines_split_anywhere_and_are_bounded() {
        let stream = b"{\"a\":1}\n\n{\"b\":2}\n{\"c\"";
        for split in 0..=stream.len() {
            let mut s = LineSplitter::default();
            let mut lines = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                s.feed(part, |l| lines.push(l.to_vec())).expect("ok");
            }
            assert_eq!(lines, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()], "split {split}");
        }
        let mut s = LineSplitter::default();
        let long = vec![b'x'; MAX_SSE_LINE_BYTES + 1];
        assert_eq!(s.feed(&long, |_| {}), Err(FeedError::LineTooLong));
    }

    #[test]
    fn sse_event_data_is_bounded_across_lines() {
        let mut s = SseParser::default();
        let line = [b"data: ".as_slice(), &vec![b'x'; MAX_SSE_LINE_BYTES / 4], b"\n"].concat();
        let mut events = 0;
        for _ in 0..3 {
            s.feed(&line, |_| events += 1).expect("under the bound");
        }
        assert_eq!(s.feed(&line, |_| events += 1), Err(FeedError::EventTooLong));
        assert_eq!(events, 0);
    }

    #[test]
    fn publish_request_is_json_with_length() {
        let ep = endpoint(Target::Halley, Mode::Longpoll);
        let req = ep.publish_request("bench", b"{\"seq\":1}");
        let text = String::from_utf8(req).expect("ascii");
        assert!(text.starts_with("POST /pub/bench HTTP/1.1\r\n"));
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.ends_with("Content-Length: 9\r\n\r\n{\"seq\":1}"));
    }

    #[test]
    fn cursors_are_escaped_in_queries() {
        assert_eq!(query_escape("7-2"), "7-2");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }
}
