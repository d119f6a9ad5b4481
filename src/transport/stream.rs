//! XHR / chunked streaming: `application/x-ndjson`, one JSON object per line.
//!
//! Messages are the message JSON (`Message::json`, shared with long-poll); control objects
//! have a `type` key (`heartbeat`, `end`, `overflow`, `gap`). A client reads the response
//! incrementally (XHR `onprogress`, `fetch` streams), splits on `\n`, and after an `end` line
//! reconnects with `?since=<next>`.

pub const CONTENT_TYPE: &str = "application/x-ndjson";
pub const HEARTBEAT: &[u8] = b"{\"type\":\"heartbeat\"}\n";
