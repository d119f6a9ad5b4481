//! How `halley sub` prints a message: a readable default that frames any payload unambiguously,
//! or `--json`, one message object per line.
//!
//! The default is a header line, then the data as a block in which every line is indented by
//! two spaces, so a line that starts at column 0 is always a header:
//!
//! ```text
//! 1795325654-7 /chat/room1 event=join
//!   line one
//!   line two
//! 1795325654-8 /stocks/ACME (json)
//!   {"price":12.5}
//! 1795325654-9 /files/x (binary, 3 bytes, base64)
//!   AAEC
//! ```
//!
//! Header: `<id> <topic>`, then `event=<name>` when the message has one, then a marker in
//! parentheses when the block is not the text itself. Text (a UTF-8 payload) is printed as is,
//! one block line per line, so a message has as many block lines as newlines plus one (an empty
//! message is one empty indented line). Text holding other control characters (a CR, an escape
//! sequence that would drive the terminal) is marked `(text, escaped)` and printed as one JSON
//! string. A JSON payload is marked `(json)` and printed compact on one line; a binary one is
//! marked `(binary, N bytes, base64)` and printed as the base64 the server sent. Header fields
//! holding spaces or control characters are printed as JSON strings.

use std::io::{self, Write};

use base64::Engine;
use serde_json::Value;

/// Indentation of every block line.
const INDENT: &str = "  ";

/// Writes `message` (an object of a `GET /sub` reply) in the default format, or as one compact
/// JSON line with `json`.
pub fn write_message(out: &mut impl Write, message: &Value, json: bool) -> io::Result<()> {
    if json {
        return writeln!(out, "{message}");
    }
    let text_field = |name: &str| message.get(name).and_then(Value::as_str);
    let mut header = format!(
        "{} {}",
        header_field(text_field("id").unwrap_or("-")),
        header_field(text_field("topic").unwrap_or("-"))
    );
    if let Some(event) = text_field("event") {
        header.push_str(&format!(" event={}", header_field(event)));
    }
    let block = match (message.get("data"), text_field("encoding")) {
        (Some(Value::String(data)), Some("base64")) => {
            let marker = match base64::engine::general_purpose::STANDARD.decode(data) {
                Ok(bytes) => format!("binary, {} bytes, base64", bytes.len()),
                Err(_) => "binary, base64, not decodable".to_owned(),
            };
            header.push_str(&format!(" ({marker})"));
            Block::Line(base64_block(data))
        }
        (Some(Value::String(data)), Some(other)) => {
            header.push_str(&format!(" (encoding {}, escaped)", header_field(other)));
            Block::Line(Value::String(data.clone()).to_string())
        }
        (Some(Value::String(text)), None) if is_plain_text(text) => Block::Text(text),
        (Some(Value::String(text)), None) => {
            header.push_str(" (text, escaped)");
            Block::Line(Value::String(text.clone()).to_string())
        }
        (Some(other), _) => {
            header.push_str(" (json)");
            Block::Line(other.to_string())
        }
        (None, _) => {
            header.push_str(" (no data)");
            Block::None
        }
    };
    writeln!(out, "{header}")?;
    match block {
        Block::Text(text) => {
            for line in text.split('\n') {
                writeln!(out, "{INDENT}{line}")?;
            }
            Ok(())
        }
        Block::Line(line) => writeln!(out, "{INDENT}{line}"),
        Block::None => Ok(()),
    }
}

/// What follows a header.
enum Block<'a> {
    /// The text itself, split at newlines.
    Text(&'a str),
    /// One line, already escaped or encoded.
    Line(String),
    /// Nothing (a message without data, which the server does not send).
    None,
}

/// Text that prints as itself: no control characters but newline and tab.
fn is_plain_text(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// A header field as is when it is one visible word, else as a JSON string.
fn header_field(value: &str) -> String {
    if !value.is_empty() && !value.chars().any(|c| c.is_control() || c.is_whitespace() || c == '"') {
        value.to_owned()
    } else {
        Value::String(value.to_owned()).to_string()
    }
}

/// Base64 as sent when it is plain base64 text, else escaped (it came from the network).
fn base64_block(data: &str) -> String {
    if data.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) {
        data.to_owned()
    } else {
        Value::String(data.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shown(message: Value) -> String {
        let mut out = Vec::new();
        write_message(&mut out, &message, false).expect("write");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn text_is_a_header_then_an_indented_block() {
        let text = json!({"id":"1-1","topic":"/news","time":1,"data":"hello world"});
        assert_eq!(shown(text), "1-1 /news\n  hello world\n");
        let lines = json!({"id":"1-2","topic":"/chat/a","time":1,"event":"join","data":"one\n\ntwo\n"});
        assert_eq!(shown(lines), "1-2 /chat/a event=join\n  one\n  \n  two\n  \n");
        let empty = json!({"id":"1-3","topic":"/t","time":1,"data":""});
        assert_eq!(shown(empty), "1-3 /t\n  \n");
    }

    #[test]
    fn a_data_line_that_looks_like_a_header_stays_in_its_block() {
        let tricky = json!({"id":"1-1","topic":"/t","time":1,"data":"x\n1-2 /t (json)\n  {}"});
        assert_eq!(shown(tricky), "1-1 /t\n  x\n  1-2 /t (json)\n    {}\n");
    }

    #[test]
    fn json_binary_and_control_characters_are_marked() {
        let object = json!({"id":"1-2","topic":"/s","time":2,"data":{"a":[1, "x\ny"]}});
        assert_eq!(shown(object), "1-2 /s (json)\n  {\"a\":[1,\"x\\ny\"]}\n");
        let binary = json!({"id":"1-3","topic":"/f","time":3,"data":"AAEC","encoding":"base64"});
        assert_eq!(shown(binary), "1-3 /f (binary, 3 bytes, base64)\n  AAEC\n");
        let escape = json!({"id":"1-4","topic":"/t","time":4,"data":"red\u{1b}[31m\r\n"});
        assert_eq!(shown(escape), "1-4 /t (text, escaped)\n  \"red\\u001b[31m\\r\\n\"\n");
        let odd_header = json!({"id":"1 2","topic":"/t","event":"a\nb","data":"x"});
        assert_eq!(shown(odd_header), "\"1 2\" /t event=\"a\\nb\"\n  x\n");
    }

    #[test]
    fn json_output_is_one_object_per_line() {
        let message = json!({"id":"1-2","topic":"/news","time":2,"data":"a\nb"});
        let mut out = Vec::new();
        write_message(&mut out, &message, true).expect("write");
        let line = String::from_utf8(out).expect("UTF-8");
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(serde_json::from_str::<Value>(&line).expect("json"), message);
    }
}
