//! The no-JavaScript page, `/latest?topic=..`: the newest messages of one topic, rendered on
//! the server and refreshed by the browser itself with `<meta http-equiv="refresh">`, the oldest
//! Comet substitute (for terminals, text browsers and locked-down clients). Everything taken
//! from a message or the query is HTML-escaped; the page has no script at all.

use std::sync::Arc;

use super::escape_html;
use crate::model::{Epoch, Message};

/// Messages shown, newest first.
pub const SHOWN: usize = 20;
/// Seconds between the browser's reloads.
pub const REFRESH_SECS: u32 = 5;
/// Bytes of one message's data shown; the rest is cut (and said so).
const MAX_SHOWN_BYTES: usize = 2048;

/// What the page shows under its form.
#[derive(Debug)]
pub enum Body<'a> {
    /// No topic asked for yet: the form only.
    Form,
    /// The newest messages of `topic`, oldest first as read (shown newest first).
    Messages { topic: &'a str, epoch: Epoch, messages: &'a [Arc<Message>] },
    /// History for `topic` is being fetched (a store with history elsewhere): try again soon.
    Loading { topic: &'a str },
}

/// The whole page.
pub fn render(body: &Body<'_>) -> String {
    let topic = match body {
        Body::Form => None,
        Body::Messages { topic, .. } | Body::Loading { topic } => Some(*topic),
    };
    let mut out = String::with_capacity(4096);
    out.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    if topic.is_some() {
        out.push_str(&format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n"));
    }
    out.push_str("<link rel=\"stylesheet\" href=\"/web/style.css\">\n<link rel=\"icon\" href=\"/web/icon.svg\">\n");
    out.push_str("<title>Halley: latest messages");
    if let Some(topic) = topic {
        out.push_str(" on ");
        escape_html(topic, &mut out);
    }
    out.push_str(
        "</title>\n</head>\n<body>\n<header><a href=\"/\">Halley</a> <h1>Latest messages</h1></header>\n<main>\n",
    );
    out.push_str("<form method=\"get\" action=\"/latest\"><label>Topic <input name=\"topic\" value=\"");
    escape_html(topic.unwrap_or(""), &mut out);
    out.push_str("\" placeholder=\"/chat/lobby\"></label> <button>Show</button></form>\n");
    match body {
        Body::Form => out.push_str(
            "<p>No JavaScript needed: this page is rendered by the server and reloads itself every few seconds.</p>\n",
        ),
        Body::Loading { .. } => out.push_str("<p>History is being loaded; this page reloads by itself.</p>\n"),
        Body::Messages { topic, epoch, messages } => {
            out.push_str(&format!("<p>The newest {SHOWN} messages on <code>"));
            escape_html(topic, &mut out);
            out.push_str(&format!("</code>, newest first; this page reloads every {REFRESH_SECS} s.</p>\n"));
            if messages.is_empty() {
                out.push_str("<p class=\"empty\">Nothing published yet.</p>\n");
            } else {
                out.push_str("<ol class=\"latest\">\n");
                for msg in messages.iter().rev() {
                    entry(&mut out, msg, *epoch);
                }
                out.push_str("</ol>\n");
            }
        }
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn entry(out: &mut String, msg: &Message, epoch: Epoch) {
    out.push_str("<li><span class=\"meta\">");
    out.push_str(&clock(msg.time_ms));
    out.push_str(" UTC · ");
    escape_html(&msg.id(epoch).to_string(), out);
    if let Some(event) = &msg.event {
        out.push_str(" · ");
        escape_html(event, out);
    }
    out.push_str("</span> <pre>");
    match std::str::from_utf8(&msg.data) {
        Ok(text) => {
            let shown = crate::prefix_within(text, MAX_SHOWN_BYTES);
            escape_html(shown, out);
            if shown.len() < text.len() {
                out.push_str(&format!(" … ({} bytes more)", text.len() - shown.len()));
            }
        }
        Err(_) => out.push_str(&format!("({} bytes of binary data)", msg.data.len())),
    }
    out.push_str("</pre></li>\n");
}

/// `HH:MM:SS` of a unix time in milliseconds, UTC.
fn clock(time_ms: u64) -> String {
    let secs = (time_ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn message(seq: u64, data: &[u8], event: Option<&str>) -> Arc<Message> {
        let msg = Message::new(seq, "/t".into(), 3_723_000, Bytes::copy_from_slice(data));
        Arc::new(msg.with_event(event.map(Into::into)))
    }

    #[test]
    fn hostile_data_topic_and_event_are_text() {
        let epoch = Epoch::from_raw(7).expect("epoch");
        let messages =
            [message(1, b"<script>window.pwned=1</script>", Some("<b>ev</b>")), message(2, &[0xff, 0xfe], None)];
        let html = render(&Body::Messages { topic: "/t\"><script>", epoch, messages: &messages });
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"));
        assert!(html.contains("(2 bytes of binary data)"));
        assert!(html.contains("01:02:03 UTC"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        // Newest first.
        assert!(html.find("binary").expect("2") < html.find("pwned").expect("1"));
    }

    #[test]
    fn the_form_alone_does_not_refresh() {
        let html = render(&Body::Form);
        assert!(!html.contains("http-equiv"));
        assert!(html.contains("action=\"/latest\""));
    }

    #[test]
    fn long_data_is_cut_on_a_character() {
        let long = "é".repeat(MAX_SHOWN_BYTES);
        let epoch = Epoch::from_raw(1).expect("epoch");
        let html = render(&Body::Messages { topic: "/t", epoch, messages: &[message(1, long.as_bytes(), None)] });
        assert!(html.contains(&format!("({} bytes more)", long.len() - MAX_SHOWN_BYTES)));
    }
}
