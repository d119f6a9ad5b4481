//! The session-protocol subscribers, without I/O: Pushlet pull (`/pushlet.srv`,
//! `p_format=xml-strict`) and Bayeux long-polling (`/cometd`), each a request builder driven by
//! the subscriber's [`Cursor`] and a reply reader that moves it.
//!
//! Both protocols keep the subscriber's place in the stream on the server, in a session, so the
//! cursor here is the session: a Pushlet `p_id`, a Bayeux `clientId` (plus whether the
//! subscription is acknowledged and the server's last `advice`). A subscriber without one joins
//! or handshakes first; a server that forgot it (Pushlet `400 Invalid or expired id`, `abort`;
//! Bayeux `402::Unknown client` with `advice.reconnect=handshake`) sends it back to
//! [`Cursor::Start`], and the sequence check counts whatever that lost.
//!
//! Wire references: Halley's docs/PROTOCOLS.md ("Pushlet", "Bayeux"), the Pushlet spec notes
//! and the Bayeux 1.0 specification (sections cited below).

use serde::Deserialize;

use crate::feed::{query_escape, Cursor, FeedError, Polled};
use crate::http::Head;
use crate::stamp::{Nested, Stamp};

/// Where Halley serves Pushlet (the original's servlet name).
pub const PUSHLET_PATH: &str = "/pushlet.srv";
/// Where Halley serves Bayeux.
pub const BAYEUX_PATH: &str = "/cometd";
/// Most attributes accepted on one Pushlet `<event>` element. Halley allows 64 client fields
/// plus its own `p_*` fields; this leaves room for both.
pub const MAX_XML_ATTRS: usize = 128;
/// How long past the server's `advice.timeout` a held `/meta/connect` may take before the
/// subscriber gives up on it and reconnects, in milliseconds (what the `cometd` client allows:
/// timeout + 10 s; see the Bayeux spec notes, item 7).
pub const BAYEUX_GRACE_MS: u64 = 10_000;
/// `advice.timeout` assumed until the server gives one, in milliseconds (CometD's default).
pub const BAYEUX_DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Largest `advice.interval` obeyed, in milliseconds: a longer one is a server bug in a load
/// test, and a subscriber should not go quiet for minutes because of it.
pub const MAX_INTERVAL_MS: u64 = 60_000;

/// A Bayeux client's state between requests: the session and what the server advised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BayeuxState {
    /// The `clientId` from the handshake.
    pub client_id: String,
    /// The `/meta/subscribe` to the topic's channel was acknowledged.
    pub subscribed: bool,
    /// Replies read since the handshake; makes message `id`s distinct.
    pub round: u64,
    /// The server's last `advice.timeout`: how long it holds a connect, in milliseconds.
    pub timeout_ms: u64,
    /// The server's last `advice.interval`: the pause before the next connect, in milliseconds.
    pub interval_ms: u64,
}

/// The Pushlet request for `topic` from `cursor`: `join-listen` in pull mode with `xml-strict`
/// replies, or the next `refresh` of the session. The refresh goes out at once rather than after
/// the reply's `p_wait` (2-6 s), so delivery time is the server's, not a client's nap.
pub fn pushlet_request(host: &str, topic: &str, cursor: &Cursor) -> Vec<u8> {
    let query = match cursor {
        Cursor::Pushlet(id) => format!("p_event=refresh&p_id={}", query_escape(id)),
        _ => format!("p_event=join-listen&p_mode=pull&p_format=xml-strict&p_subject={}", query_escape(&channel(topic))),
    };
    format!("GET {PUSHLET_PATH}?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// Read one complete Pushlet reply, moving `cursor`. `data` events carry the publisher's JSON
/// fields as attributes (`src`, `seq`, `ts`, `pad`); `error` (events fell out of history) is a
/// server-flagged gap; `abort` and a `400` for a known `p_id` mean the session is gone.
pub fn pushlet_reply(head: &Head, body: &[u8], cursor: &mut Cursor) -> Result<Polled, FeedError> {
    let mut polled = Polled::default();
    if head.status == 400 && matches!(cursor, Cursor::Pushlet(_)) {
        // "Invalid or expired id": the lease ran out or the server restarted.
        *cursor = Cursor::Start;
        polled.session_lost = true;
        return Ok(polled);
    }
    if head.status != 200 {
        return Err(FeedError::Refused(format!("pushlet status {}", head.status)));
    }
    for event in xml_events(body)? {
        match event.get("p_event") {
            Some("data") => match event.stamp() {
                Some(stamp) => polled.stamps.push(stamp),
                None => polled.foreign += 1,
            },
            Some("join-listen-ack") => {
                let id = event.get("p_id").filter(|id| !id.is_empty()).ok_or(FeedError::BadBody)?;
                *cursor = Cursor::Pushlet(id.to_owned());
            }
            Some("error") => polled.gap = true,
            Some("abort") => {
                *cursor = Cursor::Start;
                polled.session_lost = true;
            }
            Some("nack") => {
                let reason = event.get("p_reason").unwrap_or("");
                return Err(FeedError::Refused(format!("pushlet nack: {reason}")));
            }
            // refresh-ack, refresh, hb: the round's frame, nothing to act on.
            _ => {}
        }
    }
    if matches!(cursor, Cursor::Start) && !polled.session_lost {
        return Err(FeedError::BadBody); // a join-listen reply without its ack
    }
    Ok(polled)
}

/// The Bayeux long-polling request for `topic` from `cursor` (a `POST` of a JSON batch):
/// a handshake; then a connect with `advice.timeout` 0 batched with the subscribe (what Faye
/// does; the server answers it at once); then held connects. A held connect asks for
/// `poll_timeout_s` only when that is shorter than the server's `advice.timeout` (section
/// 3.10: a client may ask for less, never more).
pub fn bayeux_request(host: &str, topic: &str, cursor: &Cursor, poll_timeout_s: u32) -> Vec<u8> {
    let body = match cursor {
        Cursor::Bayeux(s) if s.subscribed => {
            let asked = u64::from(poll_timeout_s) * 1000;
            let advice = if poll_timeout_s > 0 && asked < s.timeout_ms {
                format!(r#","advice":{{"timeout":{asked}}}"#)
            } else {
                String::new()
            };
            format!(
                r#"[{{"id":"c{}","channel":"/meta/connect","connectionType":"long-polling","clientId":{}{advice}}}]"#,
                s.round,
                json_string(&s.client_id)
            )
        }
        Cursor::Bayeux(s) => {
            let id = json_string(&s.client_id);
            format!(
                r#"[{{"id":"c{r}","channel":"/meta/connect","connectionType":"long-polling","advice":{{"timeout":0}},"clientId":{id}}},{{"id":"s{r}","channel":"/meta/subscribe","subscription":{sub},"clientId":{id}}}]"#,
                r = s.round,
                sub = json_string(&channel(topic))
            )
        }
        _ => r#"[{"id":"h","version":"1.0","minimumVersion":"1.0","channel":"/meta/handshake","supportedConnectionTypes":["long-polling"],"advice":{"timeout":60000,"interval":0}}]"#.to_owned(),
    };
    let mut req = format!(
        "POST {BAYEUX_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// Read one complete Bayeux reply batch, moving `cursor`: handshake, subscribe and connect
/// replies change the session; every other message with `data` is an event (section 3.8).
/// `advice.interval` becomes [`Polled::pause_ms`]; `advice.reconnect` `handshake` starts over,
/// `none` is a refusal (section 3.10).
pub fn bayeux_reply(head: &Head, body: &[u8], cursor: &mut Cursor) -> Result<Polled, FeedError> {
    if head.status != 200 {
        return Err(FeedError::Refused(format!("bayeux status {}", head.status)));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let batch: Vec<Reply> = match first {
        Some(b'[') => serde_json::from_slice(body).map_err(|_| FeedError::BadBody)?,
        _ => vec![serde_json::from_slice(body).map_err(|_| FeedError::BadBody)?],
    };
    let mut polled = Polled::default();
    let mut state = match cursor {
        Cursor::Bayeux(s) => Some(s.clone()),
        _ => None,
    };
    for mut reply in batch {
        let meta = reply.channel.strip_prefix("/meta/");
        if meta.is_none() {
            match reply.data {
                Some(Nested(Some(stamp))) => polled.stamps.push(stamp),
                Some(Nested(None)) => polled.foreign += 1,
                None => {} // a publish acknowledgement has no data (spec item 5)
            }
            continue;
        }
        let advice = reply.advice.take().unwrap_or_default();
        if reply.successful != Some(true) {
            match advice.reconnect.as_deref() {
                Some("handshake") => {
                    state = None;
                    polled.session_lost = true;
                    continue;
                }
                Some("none") => {
                    return Err(FeedError::Refused(format!("bayeux {}: {}", reply.channel, reply.error_text())));
                }
                _ if meta == Some("connect") => {
                    // "retry": connect again after the interval.
                    polled.pause_ms = advice.interval.unwrap_or(0);
                    continue;
                }
                _ => return Err(FeedError::Refused(format!("bayeux {}: {}", reply.channel, reply.error_text()))),
            }
        }
        match meta {
            Some("handshake") => {
                let client_id = reply.client_id.filter(|c| !c.is_empty()).ok_or(FeedError::BadBody)?;
                state = Some(BayeuxState {
                    client_id,
                    subscribed: false,
                    round: 0,
                    timeout_ms: BAYEUX_DEFAULT_TIMEOUT_MS,
                    interval_ms: 0,
                });
            }
            Some("subscribe") => match &mut state {
                Some(s) => s.subscribed = true,
                None => return Err(FeedError::BadBody),
            },
            _ => {}
        }
        if let Some(s) = &mut state {
            s.timeout_ms = advice.timeout.unwrap_or(s.timeout_ms);
            s.interval_ms = advice.interval.unwrap_or(s.interval_ms).min(MAX_INTERVAL_MS);
            if meta == Some("connect") {
                polled.pause_ms = s.interval_ms;
            }
        }
    }
    polled.pause_ms = polled.pause_ms.min(MAX_INTERVAL_MS);
    *cursor = match state {
        Some(mut s) => {
            s.round += 1;
            Cursor::Bayeux(s)
        }
        None => Cursor::Start,
    };
    Ok(polled)
}

/// How long a request from `cursor` may go unanswered before the subscriber gives up on it,
/// in milliseconds: a held Bayeux connect gets the server's `advice.timeout` plus
/// [`BAYEUX_GRACE_MS`]; everything else has no client-side deadline.
pub fn reply_deadline_ms(cursor: &Cursor) -> Option<u64> {
    match cursor {
        Cursor::Bayeux(s) if s.subscribed => Some(s.timeout_ms.saturating_add(BAYEUX_GRACE_MS)),
        _ => None,
    }
}

/// One `<event .../>` element of a Pushlet XML reply: its attributes, unescaped, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XmlEvent {
    pub attrs: Vec<(String, String)>,
}

impl XmlEvent {
    /// The value of attribute `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The stamp a `data` event carries: the publisher's JSON fields became attributes, numbers
    /// as their JSON text (`seq="5"`). None if `seq` is missing or not a number.
    pub fn stamp(&self) -> Option<Stamp> {
        let seq = self.get("seq")?.parse().ok()?;
        let src = self.get("src").map_or(Some(0), |s| s.parse().ok())?;
        let ts = self.get("ts").map_or(Some(0), |s| s.parse().ok())?;
        Some(Stamp { src, seq, ts })
    }
}

/// The events of a Pushlet `xml-strict` reply (`<pushlet><event k="v" .../>...</pushlet>`) or
/// of an `xml` one (the bare elements). Attribute values are unescaped (XML 1.0 §4.6, §4.1).
pub fn xml_events(body: &[u8]) -> Result<Vec<XmlEvent>, FeedError> {
    let text = std::str::from_utf8(body).map_err(|_| FeedError::BadBody)?;
    let mut rest = text.trim_start();
    let mut events = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<pushlet>").or_else(|| rest.strip_prefix("</pushlet>")) {
            rest = after.trim_start();
            continue;
        }
        let after = rest.strip_prefix("<event").ok_or(FeedError::BadBody)?;
        let (event, after) = xml_attrs(after)?;
        events.push(event);
        rest = after.trim_start();
    }
    Ok(events)
}

/// Attributes up to the `/>` that closes the element; returns them and what follows.
fn xml_attrs(mut rest: &str) -> Result<(XmlEvent, &str), FeedError> {
    let mut event = XmlEvent::default();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("/>") {
            return Ok((event, after));
        }
        if event.attrs.len() >= MAX_XML_ATTRS {
            return Err(FeedError::BadBody);
        }
        let (name, after) = rest.split_once('=').ok_or(FeedError::BadBody)?;
        let name = name.trim();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '<' || c == '/') {
            return Err(FeedError::BadBody);
        }
        let after = after.trim_start();
        let quote = after.chars().next().filter(|&q| q == '"' || q == '\'').ok_or(FeedError::BadBody)?;
        let value_and_rest = &after[1..];
        let end = value_and_rest.find(quote).ok_or(FeedError::BadBody)?;
        event.attrs.push((name.to_owned(), xml_unescape(&value_and_rest[..end])?));
        rest = &value_and_rest[end + 1..];
    }
}

/// Replace the predefined entities and character references (XML 1.0 §4.6, §4.1).
fn xml_unescape(s: &str) -> Result<String, FeedError> {
    if s.contains('<') {
        return Err(FeedError::BadBody); // not allowed in an attribute value (XML 1.0 §3.1)
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';').ok_or(FeedError::BadBody)? + amp;
        let entity = &rest[amp + 1..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or(FeedError::BadBody)?
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A topic as a Pushlet subject / Bayeux channel: Halley's topics are `/`-rooted paths.
fn channel(topic: &str) -> String {
    if topic.starts_with('/') {
        topic.to_owned()
    } else {
        format!("/{topic}")
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// One message of a Bayeux reply batch, as far as a subscriber cares.
#[derive(Deserialize)]
struct Reply {
    channel: String,
    #[serde(default)]
    successful: Option<bool>,
    #[serde(default, rename = "clientId")]
    client_id: Option<String>,
    #[serde(default)]
    data: Option<Nested>,
    #[serde(default)]
    advice: Option<Advice>,
    #[serde(default)]
    error: Option<String>,
}

impl Reply {
    fn error_text(&self) -> &str {
        self.error.as_deref().unwrap_or("unsuccessful")
    }
}

/// Bayeux `advice` (section 3.10).
#[derive(Deserialize, Default)]
struct Advice {
    #[serde(default)]
    reconnect: Option<String>,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    timeout: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{Endpoint, Mode, Target};

    /// A refresh reply as Halley sends it (captured from a running server), with a `pad` that
    /// needs escaping.
    const REFRESH: &str = concat!(
        r#"<pushlet><event p_event="refresh-ack" p_time="1795331121" />"#,
        r#"<event p_event="data" pad="x&lt;&amp;" seq="3" src="0" ts="123" p_subject="/bench" p_id="000a5" p_sid="s1" p_time="1795331121" p_seq="1" />"#,
        r#"<event p_event="refresh" p_wait="5316" p_url="/pushlet.srv?p_id=000a5&amp;p_event=refresh" p_time="1795331121" /></pushlet>"#
    );

    use crate::feed::tests::head;

    fn text(req: Vec<u8>) -> String {
        String::from_utf8(req).expect("ascii request")
    }

    fn bayeux(client_id: &str, subscribed: bool) -> Cursor {
        Cursor::Bayeux(BayeuxState {
            client_id: client_id.into(),
            subscribed,
            round: 4,
            timeout_ms: 20_000,
            interval_ms: 0,
        })
    }

    #[test]
    fn xml_events_are_read_with_their_attributes_unescaped() {
        let events = xml_events(REFRESH.as_bytes()).expect("valid");
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0].attrs,
            vec![("p_event".into(), "refresh-ack".into()), ("p_time".into(), "1795331121".into())]
        );
        let data = &events[1];
        assert_eq!(data.get("pad"), Some("x<&"));
        assert_eq!(data.stamp(), Some(Stamp { src: 0, seq: 3, ts: 123 }));
        assert_eq!(events[2].get("p_url"), Some("/pushlet.srv?p_id=000a5&p_event=refresh"));
        // Single quotes, spaces around `=`, character references, the unwrapped `xml` format.
        let loose =
            b"  <event p_event = 'data' seq='7' note='a&#10;b&#x3C;c&quot;&apos;&gt;' />\n<event p_event=\"hb\"/>";
        let events = xml_events(loose).expect("valid");
        assert_eq!(events[0].get("note"), Some("a\nb<c\"'>"));
        assert_eq!(events[0].stamp(), Some(Stamp { src: 0, seq: 7, ts: 0 }));
        assert_eq!(events[1].get("p_event"), Some("hb"));
        assert_eq!(xml_events(b"<pushlet></pushlet>"), Ok(vec![]));
    }

    #[test]
    fn a_cut_reply_is_an_error_or_a_prefix_of_its_events() {
        let full = xml_events(REFRESH.as_bytes()).expect("valid");
        for cut in 0..REFRESH.len() {
            if let Ok(events) = xml_events(&REFRESH.as_bytes()[..cut]) {
                assert!(full.starts_with(&events), "cut {cut}: {events:?}");
                assert!(REFRESH[..cut].trim_end().ends_with("/>") || cut <= "<pushlet>".len(), "cut {cut}");
            }
        }
    }

    #[test]
    fn malformed_xml_is_refused() {
        for bad in [
            &b"<event p_event=\"data\" seq=\"1\""[..],
            b"<event p_event=data />",
            b"<event p_event=\"a<b\" />",
            b"<event p_event=\"&bogus;\" />",
            b"<event p_event=\"&#xD800;\" />",
            b"<event =\"x\" />",
            b"<other />",
            b"\xff<event />",
        ] {
            assert_eq!(xml_events(bad), Err(FeedError::BadBody), "{}", String::from_utf8_lossy(bad));
        }
        let many: String = (0..=MAX_XML_ATTRS).map(|i| format!(" a{i}=\"v\"")).collect();
        assert_eq!(xml_events(format!("<event{many} />").as_bytes()), Err(FeedError::BadBody));
    }

    #[test]
    fn data_events_without_a_stamp_are_foreign() {
        let events = xml_events(b"<event p_event=\"data\" p_data=\"hello\" /><event seq=\"x\" />").expect("ok");
        assert_eq!(events[0].stamp(), None);
        assert_eq!(events[1].stamp(), None);
    }

    #[test]
    fn pushlet_joins_in_pull_mode_then_refreshes_its_session() {
        let mut cursor = Cursor::Start;
        let join = text(pushlet_request("h:1", "bench", &cursor));
        assert_eq!(
            join,
            "GET /pushlet.srv?p_event=join-listen&p_mode=pull&p_format=xml-strict&p_subject=%2Fbench HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
        let ack = br#"<pushlet><event p_event="join-listen-ack" p_id="000f88" p_sid="s1" p_mode="pull" p_format="xml-strict" p_time="1" /><event p_event="refresh" p_wait="5120" p_url="/pushlet.srv?p_id=000f88&amp;p_event=refresh" p_time="1" /></pushlet>"#;
        let polled = pushlet_reply(&head(200), ack, &mut cursor).expect("valid");
        assert!(polled.stamps.is_empty());
        assert_eq!(cursor, Cursor::Pushlet("000f88".into()));
        let refresh = text(pushlet_request("h:1", "bench", &cursor));
        assert!(refresh.starts_with("GET /pushlet.srv?p_event=refresh&p_id=000f88 HTTP/1.1\r\n"), "{refresh}");

        let polled = pushlet_reply(&head(200), REFRESH.as_bytes(), &mut cursor).expect("valid");
        assert_eq!(polled.stamps, vec![Stamp { src: 0, seq: 3, ts: 123 }]);
        assert_eq!(cursor, Cursor::Pushlet("000f88".into()), "a refresh keeps the session");
        assert!(!polled.gap && !polled.session_lost);
    }

    #[test]
    fn pushlet_losses_and_refusals_are_told_apart() {
        let mut cursor = Cursor::Pushlet("abc".into());
        let lost = br#"<pushlet><event p_event="refresh-ack" p_time="1" /><event p_event="error" p_reason="events were lost: they fell out of history" p_time="1" /><event p_event="data" seq="9" p_seq="1" p_time="1" /></pushlet>"#;
        let polled = pushlet_reply(&head(200), lost, &mut cursor).expect("valid");
        assert!(polled.gap);
        assert_eq!(polled.stamps.len(), 1);

        let polled = pushlet_reply(&head(400), b"Invalid or expired id: abc", &mut cursor).expect("a lost session");
        assert!(polled.session_lost);
        assert_eq!(cursor, Cursor::Start, "rejoin next");
        assert!(matches!(pushlet_reply(&head(400), b"bad", &mut cursor), Err(FeedError::Refused(_))));

        let mut cursor = Cursor::Pushlet("abc".into());
        let abort = br#"<pushlet><event p_event="abort" p_reason="session left" p_time="1" /></pushlet>"#;
        let polled = pushlet_reply(&head(200), abort, &mut cursor).expect("valid");
        assert!(polled.session_lost);
        assert_eq!(cursor, Cursor::Start);

        let mut cursor = Cursor::Pushlet("abc".into());
        let nack = br#"<pushlet><event p_event="nack" p_reason="no" p_time="1" /></pushlet>"#;
        assert_eq!(pushlet_reply(&head(200), nack, &mut cursor), Err(FeedError::Refused("pushlet nack: no".into())));
        let mut start = Cursor::Start;
        let no_ack = br#"<pushlet><event p_event="refresh" p_time="1" /></pushlet>"#;
        assert_eq!(pushlet_reply(&head(200), no_ack, &mut start), Err(FeedError::BadBody));
        assert!(matches!(pushlet_reply(&head(503), b"", &mut cursor), Err(FeedError::Refused(_))));
    }

    #[test]
    fn bayeux_requests_follow_the_session() {
        let handshake = text(bayeux_request("h:1", "bench", &Cursor::Start, 120));
        assert!(
            handshake.starts_with("POST /cometd HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json"),
            "{handshake}"
        );
        let (head, body) = handshake.split_once("\r\n\r\n").expect("a body");
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())), "{head}");
        let batch: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(batch[0]["channel"], "/meta/handshake");
        assert_eq!(batch[0]["supportedConnectionTypes"][0], "long-polling");

        let sub = text(bayeux_request("h:1", "bench", &bayeux("C1", false), 120));
        let batch: serde_json::Value = serde_json::from_str(sub.split_once("\r\n\r\n").expect("body").1).expect("JSON");
        assert_eq!(batch[0]["channel"], "/meta/connect");
        assert_eq!(batch[0]["advice"]["timeout"], 0, "the first connect is answered at once");
        assert_eq!(batch[1]["channel"], "/meta/subscribe");
        assert_eq!(batch[1]["subscription"], "/bench");
        assert_eq!((batch[0]["clientId"].as_str(), batch[1]["clientId"].as_str()), (Some("C1"), Some("C1")));
        assert_ne!(batch[0]["id"], batch[1]["id"]);

        // Held connects: the server's timeout, unless the client asks for less.
        let held = text(bayeux_request("h:1", "bench", &bayeux("C1", true), 120));
        let batch: serde_json::Value =
            serde_json::from_str(held.split_once("\r\n\r\n").expect("body").1).expect("JSON");
        assert_eq!(batch.as_array().map(Vec::len), Some(1));
        assert_eq!(batch[0]["connectionType"], "long-polling");
        assert!(batch[0].get("advice").is_none(), "{batch}");
        let short = text(bayeux_request("h:1", "bench", &bayeux("C1", true), 5));
        let batch: serde_json::Value =
            serde_json::from_str(short.split_once("\r\n\r\n").expect("body").1).expect("JSON");
        assert_eq!(batch[0]["advice"]["timeout"], 5000);
    }

    #[test]
    fn bayeux_handshake_subscribe_and_connect_replies_move_the_session() {
        let mut cursor = Cursor::Start;
        let hs = br#"[{"advice":{"interval":0,"reconnect":"retry","timeout":20000},"channel":"/meta/handshake","clientId":"00013de4","id":"h","successful":true,"version":"1.0"}]"#;
        let polled = bayeux_reply(&head(200), hs, &mut cursor).expect("valid");
        assert!(polled.stamps.is_empty());
        let Cursor::Bayeux(s) = &cursor else { panic!("{cursor:?}") };
        assert_eq!((s.client_id.as_str(), s.subscribed, s.timeout_ms), ("00013de4", false, 20_000));

        let subscribed = br#"[{"channel":"/meta/subscribe","clientId":"00013de4","id":"s1","subscription":"/bench","successful":true},{"advice":{"interval":0,"reconnect":"retry","timeout":20000},"channel":"/meta/connect","clientId":"00013de4","id":"c1","successful":true}]"#;
        bayeux_reply(&head(200), subscribed, &mut cursor).expect("valid");
        assert!(matches!(&cursor, Cursor::Bayeux(s) if s.subscribed));
        assert_eq!(reply_deadline_ms(&cursor), Some(20_000 + BAYEUX_GRACE_MS));

        let events = br#"[{"channel":"/bench","data":{"pad":"x","seq":4,"src":0,"ts":123},"id":"6t0wa008-2"},{"channel":"/bench","data":"text","id":"6t0wa008-3"},{"channel":"/bench","id":"p1","successful":true},{"advice":{"interval":250,"reconnect":"retry","timeout":15000},"channel":"/meta/connect","clientId":"00013de4","id":"c2","successful":true}]"#;
        let polled = bayeux_reply(&head(200), events, &mut cursor).expect("valid");
        assert_eq!(polled.stamps, vec![Stamp { src: 0, seq: 4, ts: 123 }]);
        assert_eq!(polled.foreign, 1, "a text event is not ours; a publish ack is no event");
        assert_eq!(polled.pause_ms, 250, "advice.interval is honoured");
        assert_eq!(reply_deadline_ms(&cursor), Some(15_000 + BAYEUX_GRACE_MS), "advice.timeout is honoured");
        let Cursor::Bayeux(s) = &cursor else { panic!("{cursor:?}") };
        assert_eq!(s.round, 3, "each reply moves the message ids on");
    }

    #[test]
    fn bayeux_follows_advice_when_refused() {
        let mut cursor = bayeux("C1", true);
        let unknown = br#"[{"advice":{"interval":0,"reconnect":"handshake"},"channel":"/meta/connect","error":"402::Unknown client","id":"4","successful":false}]"#;
        let polled = bayeux_reply(&head(200), unknown, &mut cursor).expect("advice, not an error");
        assert!(polled.session_lost);
        assert_eq!(cursor, Cursor::Start, "handshake again");
        assert_eq!(reply_deadline_ms(&cursor), None);

        let mut cursor = bayeux("C1", true);
        let retry = br#"{"advice":{"interval":500,"reconnect":"retry"},"channel":"/meta/connect","successful":false}"#;
        let polled = bayeux_reply(&head(200), retry, &mut cursor).expect("a lone object is a batch too");
        assert_eq!((polled.pause_ms, polled.session_lost), (500, false));
        assert!(matches!(&cursor, Cursor::Bayeux(s) if s.client_id == "C1"));

        let none =
            br#"[{"advice":{"reconnect":"none"},"channel":"/meta/handshake","error":"503::busy","successful":false}]"#;
        assert_eq!(
            bayeux_reply(&head(200), none, &mut Cursor::Start),
            Err(FeedError::Refused("bayeux /meta/handshake: 503::busy".into()))
        );
        let denied = br#"[{"channel":"/meta/subscribe","error":"403::denied","successful":false}]"#;
        assert!(matches!(bayeux_reply(&head(200), denied, &mut bayeux("C1", false)), Err(FeedError::Refused(_))));
        let no_id = br#"[{"channel":"/meta/handshake","successful":true}]"#;
        assert_eq!(bayeux_reply(&head(200), no_id, &mut Cursor::Start), Err(FeedError::BadBody));
        assert_eq!(bayeux_reply(&head(200), b"[{oops", &mut Cursor::Start), Err(FeedError::BadBody));
        assert!(matches!(bayeux_reply(&head(500), b"", &mut Cursor::Start), Err(FeedError::Refused(_))));
        let huge = br#"[{"advice":{"interval":99999999},"channel":"/meta/connect","successful":false}]"#;
        assert_eq!(bayeux_reply(&head(200), huge, &mut bayeux("C1", true)).expect("ok").pause_ms, MAX_INTERVAL_MS);
    }

    #[test]
    fn only_requests_after_joining_count_as_parked() {
        let ep = |mode| Endpoint {
            host: "h:1".into(),
            pub_path: "/pub".into(),
            sub_path: "/sub".into(),
            target: Target::Halley,
            mode,
            poll_timeout_s: 0,
            tls: None,
        };
        assert!(!ep(Mode::Pushlet).parks(&Cursor::Start));
        assert!(ep(Mode::Pushlet).parks(&Cursor::Pushlet("x".into())));
        assert!(!ep(Mode::Bayeux).parks(&Cursor::Start));
        assert!(!ep(Mode::Bayeux).parks(&bayeux("C", false)));
        assert!(ep(Mode::Bayeux).parks(&bayeux("C", true)));
        assert!(ep(Mode::Longpoll).parks(&Cursor::Start));
        let req = text(ep(Mode::Bayeux).subscribe_request("t", &Cursor::Start));
        assert!(req.starts_with("POST /cometd "), "the endpoint dispatches: {req}");
        let req = text(ep(Mode::Pushlet).subscribe_request("/t", &Cursor::Start));
        assert!(req.contains("p_subject=%2Ft "), "a rooted topic is not rooted twice: {req}");
    }
}
