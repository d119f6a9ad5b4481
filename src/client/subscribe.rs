//! `halley sub`: long-polls `GET /sub/<topics>` and prints each message as it arrives
//! (`format`), resuming from the reply's cursor; reports history gaps and messages it cannot
//! decode on stderr, and retries with backoff while the server is unreachable or overloaded.

use std::io::{self, BufWriter, Write};
use std::thread;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;

use super::{encode_query, format, sub_path, ClientError, Connection, ServerArgs};

/// Long-poll hold asked of the server, in seconds (`?timeout=`).
const SUB_HOLD_SECS: u64 = 30;

/// Deadline for one long-poll: the hold plus room for the server's ±10% jitter and a slow link.
const SUB_TIMEOUT: Duration = Duration::from_secs(SUB_HOLD_SECS * 2);

/// Largest reply accepted, in bytes: a full batch of large messages (100 x 1 MiB,
/// base64-expanded by 4/3 with the server defaults) fits.
const MAX_REPLY: u64 = 256 * 1024 * 1024;

/// First and largest pause before retrying after a failure; doubles in between.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct SubArgs {
    #[command(flatten)]
    pub connection: ServerArgs,
    /// Start after this message id, or "all" for the whole history [default: new messages only]
    #[arg(long, value_name = "ID|all")]
    pub since: Option<String>,
    /// Print each message as one JSON object per line (id, topic, time, data, and event and
    /// encoding when set) instead of the default header line and indented data block
    #[arg(long)]
    pub json: bool,
    /// Comma-separated topics, each with or without the leading '/'
    pub topics: String,
}

/// Runs `halley sub` until stdout closes (`Ok`) or a failure that retrying cannot fix (`Err`).
pub fn run(args: SubArgs) -> Result<(), ClientError> {
    let path = sub_path(&args.topics)?;
    let connection = Connection::new(&args.connection, SUB_TIMEOUT, MAX_REPLY)?;
    let mut cursor = args.since;
    let mut retry = RETRY_FIRST;
    let mut out = BufWriter::new(io::stdout().lock());
    loop {
        let query = match &cursor {
            Some(since) => format!("{path}?since={}&timeout={SUB_HOLD_SECS}", encode_query(since)),
            None => format!("{path}?timeout={SUB_HOLD_SECS}"),
        };
        let failure = match connection.get(&query) {
            Ok(reply) if reply.is_success() => match parse_reply(&reply.body) {
                Ok(reply) => {
                    report(&reply);
                    if print(&mut out, &reply.messages, args.json).is_err() {
                        // stdout closed: nobody is reading any more.
                        return Ok(());
                    }
                    cursor = Some(reply.next);
                    retry = RETRY_FIRST;
                    continue;
                }
                Err(e) => e,
            },
            Ok(reply) if reply.is_retryable() => reply.failure_reason(),
            Ok(reply) => return Err(ClientError::Fatal(reply.failure_reason())),
            Err(e) if e.is_transient() => e.to_string(),
            Err(e) => return Err(e),
        };
        let resume = cursor.as_deref().map_or(String::new(), |c| format!(" after {c}"));
        eprintln!("halley sub: {failure}; retrying in {} s{resume}", retry.as_secs());
        thread::sleep(retry);
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Warns on stderr about a history gap and about each message that could not be decoded.
fn report(reply: &SubReply) {
    if reply.gap {
        let oldest = reply.oldest.as_deref().unwrap_or("unknown");
        eprintln!("halley sub: warning: messages were lost (history gap); oldest available is {oldest}");
    }
    for skipped in &reply.skipped {
        let id = skipped.id.as_deref().unwrap_or("without a readable id");
        eprintln!("halley sub: skipped message {id}: cannot decode it: {}", skipped.reason);
    }
}

fn print(out: &mut impl Write, messages: &[Value], json: bool) -> io::Result<()> {
    for message in messages {
        format::write_message(out, message, json)?;
    }
    out.flush()
}

/// A parsed long-poll reply of `GET /sub/...`.
#[derive(Clone, Debug, PartialEq)]
struct SubReply {
    /// Message objects as sent (`id`, `topic`, `time`, `data`, optional `event`, `encoding`).
    messages: Vec<Value>,
    /// Messages in the reply that could not be decoded, in order; `next` moves past them.
    skipped: Vec<Skipped>,
    /// Cursor for the next request's `since=`.
    next: String,
    /// True when messages between the cursor and `oldest` were lost from history.
    gap: bool,
    /// Oldest id still in history, sent with `gap`.
    oldest: Option<String>,
}

/// A message of a reply that could not be decoded (nested deeper than the decoder allows, say).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Skipped {
    /// The message's id, when that much could be read.
    id: Option<String>,
    reason: String,
}

/// Parses a `GET /sub` reply body. Each message is decoded on its own: one that cannot be
/// (the server bounds JSON nesting, but an older server or another source may not) is listed in
/// `skipped` rather than failing the whole reply, so a subscriber is never stuck retrying the
/// same poison message.
fn parse_reply(body: &[u8]) -> Result<SubReply, String> {
    /// The reply with each message kept as raw text: serde reads raw values without building
    /// them, so a message too deep to decode does not fail the envelope.
    #[derive(serde::Deserialize)]
    struct Wire {
        messages: Vec<Box<RawValue>>,
        next: String,
        #[serde(default)]
        gap: bool,
        #[serde(default)]
        oldest: Option<String>,
    }
    /// Just the id of a message that did not decode (other fields are skipped unbuilt).
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    let wire: Wire = serde_json::from_slice(body).map_err(|e| format!("unexpected subscribe reply: {e}"))?;
    let mut messages = Vec::with_capacity(wire.messages.len());
    let mut skipped = Vec::new();
    for raw in wire.messages {
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(message) => messages.push(message),
            Err(e) => skipped.push(Skipped {
                id: serde_json::from_str::<IdOnly>(raw.get()).ok().and_then(|only| only.id),
                reason: e.to_string(),
            }),
        }
    }
    Ok(SubReply { messages, skipped, next: wire.next, gap: wire.gap, oldest: wire.oldest })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replies_parse_with_cursor_and_gap() {
        let reply = parse_reply(br#"{"messages":[{"id":"1-1","topic":"/news","time":1,"data":"hi"}],"next":"1-1"}"#)
            .expect("reply");
        assert_eq!(reply.next, "1-1");
        assert!(!reply.gap);
        assert_eq!(reply.messages.len(), 1);
        let gap = parse_reply(br#"{"messages":[],"next":"1-9","gap":true,"oldest":"1-5"}"#).expect("reply");
        assert!(gap.gap);
        assert_eq!(gap.oldest.as_deref(), Some("1-5"));
        assert!(parse_reply(b"{\"messages\":[]}").is_err(), "next is required");
        assert!(parse_reply(b"<html>").is_err());
    }

    #[test]
    fn a_message_too_deep_to_decode_is_skipped_not_fatal() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let body =
            format!(r#"{{"messages":[{{"id":"1-1","data":{deep}}},{{"id":"1-2","data":"after"}}],"next":"1-2"}}"#);
        let reply = parse_reply(body.as_bytes()).expect("the envelope decodes");
        assert_eq!(reply.messages, vec![json!({"id":"1-2","data":"after"})]);
        assert_eq!(reply.skipped.len(), 1);
        assert_eq!(reply.skipped[0].id.as_deref(), Some("1-1"));
        assert!(reply.skipped[0].reason.contains("recursion limit"), "{:?}", reply.skipped[0]);
        assert_eq!(reply.next, "1-2");
    }
}
