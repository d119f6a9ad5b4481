//! The three Pushlet wire formats (spec "Wire formats"): how a reply's events become bytes.
//!
//! - `xml-strict` (`text/xml`): `<pushlet>`, events, `</pushlet>`. The AJAX client reads it
//!   with `responseXML`, so it must be well-formed XML: attribute values are escaped.
//! - `xml` (`text/plain`): the events concatenated.
//! - `js` (`text/html`), for the forever frame: a start document defining `refresh()`, each
//!   event as `<script language="JavaScript">parent.push('k', "v",...);</script>`, and in
//!   pull/poll mode a closing script that schedules the next round.
//!
//! An event is `<event k="v" ... />`, with the server's `p_time` (Unix seconds) added to every
//! event and `p_seq` (from 1 in each response) to each `data` and `hb`, as in the spec's
//! examples where the acks and `refresh` carry no `p_seq`. Each session's data events carry
//! its own `p_id`/`p_sid`, so unlike the native transports these bytes are per subscriber.

use super::xml::escape_attr;
use super::{refresh_event, valid_name, Event, Format};

/// The `Content-Type` of a reply in format `f`.
pub fn content_type(f: Format) -> &'static str {
    match f {
        Format::Js => "text/html;charset=UTF-8",
        Format::Xml => "text/plain;charset=UTF-8",
        Format::XmlStrict => "text/xml;charset=UTF-8",
    }
}

/// Frames one response: its head, its events (numbering them), its tail.
#[derive(Debug)]
pub struct Writer {
    format: Format,
    /// The last `p_seq` given in this response.
    seq: u64,
    /// The client moved on (its session left, or a newer listen took over): the stream ends
    /// with its tail alone, no closing event (see [`Writer::end_quietly`]).
    quiet_end: bool,
}

/// The forever frame's start document: caching off for old browsers that ignore the headers,
/// and `refresh()`, which the end of a pull/poll page calls to load the next round.
const JS_HEAD: &str = concat!(
    "<html><head>",
    "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\">",
    "<meta http-equiv=\"Pragma\" content=\"no-cache\">",
    "<meta http-equiv=\"Cache-Control\" content=\"no-store, no-cache, must-revalidate\">",
    "<meta http-equiv=\"Expires\" content=\"Thu, 01 Jan 1970 00:00:00 GMT\">",
    "<script language=\"JavaScript\">",
    "var url = \"\";",
    "function refresh() { if (url) { document.location.href = url; } }",
    "</script></head><body>\n",
);
const JS_OPEN: &str = "<script language=\"JavaScript\">";
const JS_CLOSE: &str = "</script>";
const JS_END: &str = "</body></html>";

impl Writer {
    pub fn new(format: Format) -> Writer {
        Writer { format, seq: 0, quiet_end: false }
    }

    /// Marks a stream whose session left or was taken over by a newer listen: it is to end
    /// without a closing event, as the original server closed it. The iframe client treats an
    /// `abort` as fatal (`onAbort`), and nothing is left for it to be told.
    pub fn end_quietly(&mut self) {
        self.quiet_end = true;
    }

    /// Whether the stream ends without a closing event ([`Writer::end_quietly`]).
    pub fn ends_quietly(&self) -> bool {
        self.quiet_end
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The start of a response: js the start document, xml-strict `<pushlet>`, xml nothing.
    pub fn head(&mut self) -> Vec<u8> {
        match self.format {
            Format::Js => JS_HEAD.as_bytes().to_vec(),
            Format::XmlStrict => b"<pushlet>".to_vec(),
            Format::Xml => Vec::new(),
        }
    }

    /// One event, with `p_time` = `now_unix_secs` and, for `data` and `hb`, the next `p_seq`
    /// (both replace any the event carries). Fields whose names are not [`valid_name`]s are
    /// not written (no event this module builds has one).
    pub fn event(&mut self, ev: &Event, now_unix_secs: u64) -> Vec<u8> {
        let time = now_unix_secs.to_string();
        let seq = if matches!(ev.kind(), "data" | "hb") {
            self.seq += 1;
            Some(self.seq.to_string())
        } else {
            None
        };
        let fields = ev
            .fields()
            .filter(|(name, _)| valid_name(name) && *name != "p_time" && *name != "p_seq")
            .chain([("p_time", time.as_str())])
            .chain(seq.as_deref().map(|seq| ("p_seq", seq)));
        let mut out = Vec::with_capacity(128);
        match self.format {
            Format::Js => {
                out.extend_from_slice(JS_OPEN.as_bytes());
                out.extend_from_slice(b"parent.push(");
                for (i, (name, value)) in fields.enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // Names are valid_name()s: nothing to escape inside single quotes.
                    out.push(b'\'');
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"', ");
                    push_js_string(&mut out, value);
                }
                out.extend_from_slice(b");");
                out.extend_from_slice(JS_CLOSE.as_bytes());
            }
            Format::Xml | Format::XmlStrict => {
                out.extend_from_slice(b"<event");
                for (name, value) in fields {
                    out.push(b' ');
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"=\"");
                    escape_attr(&mut out, value);
                    out.push(b'"');
                }
                out.extend_from_slice(b" />");
            }
        }
        out
    }

    /// The end of a response. js: with `refresh` = `(url, wait_ms)` (pull/poll) a script that
    /// sets the refresh URL and calls `refresh()` after the wait, then `</body></html>`;
    /// xml-strict `</pushlet>`; xml nothing.
    pub fn tail(&mut self, refresh: Option<(&str, u64)>) -> Vec<u8> {
        match self.format {
            Format::Js => {
                let mut out = Vec::with_capacity(128);
                if let Some((url, wait_ms)) = refresh {
                    out.extend_from_slice(JS_OPEN.as_bytes());
                    out.extend_from_slice(b"url = ");
                    push_js_string(&mut out, url);
                    out.extend_from_slice(format!("; setTimeout(\"refresh()\", {wait_ms});").as_bytes());
                    out.extend_from_slice(JS_CLOSE.as_bytes());
                }
                out.extend_from_slice(JS_END.as_bytes());
                out
            }
            Format::XmlStrict => b"</pushlet>".to_vec(),
            Format::Xml => Vec::new(),
        }
    }

    /// Ends a pull/poll round: in the XML formats the [`refresh_event`] and the tail; in js the
    /// refresh is not pushed but scheduled by the tail (the spec's forever-frame rule).
    pub fn end_round(&mut self, session_id: &str, base_path: &str, wait_ms: u64, now_unix_secs: u64) -> Vec<u8> {
        let refresh = refresh_event(session_id, base_path, wait_ms);
        match self.format {
            Format::Js => self.tail(Some((refresh.get("p_url").unwrap_or(base_path), wait_ms))),
            Format::Xml | Format::XmlStrict => {
                let mut out = self.event(&refresh, now_unix_secs);
                out.extend_from_slice(&self.tail(None));
                out
            }
        }
    }
}

/// Appends `s` as a double-quoted JavaScript string literal that is also safe inside an HTML
/// `<script>` element: quotes, backslash and line terminators escaped (ECMA-262 §12.3 counts
/// U+2028/U+2029 as line terminators, which older engines reject in string literals), every
/// other control character as `\xNN`, and `<`, `>`, `&` as `\x3c`, `\x3e`, `\x26`, so no value
/// can end the script element (`</script`) or open an HTML comment (`<!--`) inside it.
fn push_js_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escaped: String = match c {
            '\\' => "\\\\".into(),
            '"' => "\\\"".into(),
            '\'' => "\\'".into(),
            '\n' => "\\n".into(),
            '\r' => "\\r".into(),
            '\t' => "\\t".into(),
            '\u{2028}' => "\\u2028".into(),
            '\u{2029}' => "\\u2029".into(),
            '<' | '>' | '&' => format!("\\x{:02x}", c as u32),
            c if c.is_ascii_control() => format!("\\x{:02x}", c as u32),
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        out.extend_from_slice(escaped.as_bytes());
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests;
