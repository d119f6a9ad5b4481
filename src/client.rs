//! A small blocking HTTP/1.1 client and the native-API helpers behind `halley pub` / `halley sub`.
//! A module of the `halley` binary, not of the library: the server never needs it.
//!
//! Only what those commands need: one request per connection (`Connection: close`), plain
//! `http://host:port` servers (no TLS), responses framed by `Content-Length`, chunked
//! transfer coding (decoded by the library's [`BodyDecoder`], the server's own) or connection
//! close (RFC 9112 §6.3), every read bounded by a deadline and every buffer by a documented limit.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::{Duration, Instant};

use halley::http::{is_tchar, BodyDecoder, BodyKind, ChunkLimits, HttpError};
use serde_json::value::RawValue;
use serde_json::Value;

/// Largest response head accepted, in bytes (status line, headers, and chunked trailers).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most header fields accepted in a response head.
pub const MAX_RESPONSE_HEADERS: usize = 64;

/// Largest response body accepted, in bytes. A long-poll reply can carry a full batch of
/// large messages (100 x 1 MiB, base64-expanded by 4/3 with the server defaults).
pub const MAX_RESPONSE_BODY: usize = 256 * 1024 * 1024;

/// Longest chunk-size line (with extensions) accepted, in bytes.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Where to send requests: parsed from `http://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (80 when the URL has none).
    pub port: u16,
}

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    /// Header fields in arrival order; values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
}

/// Why a request failed.
#[derive(Debug)]
pub enum ClientError {
    /// The `--server` value is not an `http://host[:port]` URL.
    InvalidServer { input: String, reason: String },
    /// The request itself is malformed (our bug or a bad argument), nothing was sent.
    InvalidRequest(&'static str),
    /// No address of the server accepted a connection.
    Connect { server: String, source: io::Error },
    /// The connection failed while sending or receiving.
    Io(io::Error),
    /// The deadline passed before the response was complete.
    TimedOut,
    /// The connection closed before the response was complete.
    UnexpectedEof,
    /// The response broke HTTP/1.1 framing.
    Malformed(String),
    /// A part of the response exceeded its limit (in bytes, or fields for headers).
    TooLarge { what: &'static str, limit: usize },
}

impl ServerAddr {
    /// `host:port` as sent in the `Host` header (RFC 9112 §3.2), IPv6 literals bracketed.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for ServerAddr {
    type Err = ClientError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| ClientError::InvalidServer { input: input.to_owned(), reason: reason.to_owned() };
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(invalid("expected http://host:port"));
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(invalid("only http:// servers are supported (no TLS)"));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(invalid("expected http://host:port with no path"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| invalid("unclosed '[' in IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let port = match port {
            Some(port) => port.parse::<u16>().map_err(|_| invalid("port must be a number from 0 to 65535"))?,
            None => 80,
        };
        Ok(ServerAddr { host: host.to_owned(), port })
    }
}

/// Sends one request and reads the whole response, all within `timeout` (connect included).
///
/// `path_and_query` must start with '/'; header names and values must not contain CR or LF.
/// `Host`, `Connection: close` and, when there is a body or the method is POST/PUT,
/// `Content-Length` are added.
pub fn request(
    server: &ServerAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<ClientResponse, ClientError> {
    let head = request_head(server, method, path_and_query, headers, body)?;
    let deadline = Instant::now() + timeout;
    let mut stream = connect(server, deadline)?;
    let remaining = remaining(deadline)?;
    stream.set_write_timeout(Some(remaining)).map_err(ClientError::Io)?;
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    stream.write_all(&message).map_err(io_error)?;
    let mut reader = Reader { stream, buf: Vec::new(), deadline };
    read_response(&mut reader, method)
}

/// Builds the path for publishing to `topic` (given with or without its leading '/').
pub fn pub_path(topic: &str) -> Result<String, ClientError> {
    let topic = topic.trim_start_matches('/');
    if topic.is_empty() {
        return Err(ClientError::InvalidRequest("empty topic"));
    }
    Ok(format!("/pub/{}", encode_path(topic)))
}

/// Builds the path subscribing to a comma-separated list of topics (each with or without its
/// leading '/'): `/sub/a,/b` for `a,b`.
pub fn sub_path(topics: &str) -> Result<String, ClientError> {
    let mut parts = Vec::new();
    for topic in topics.split(',') {
        let topic = topic.trim().trim_start_matches('/');
        if topic.is_empty() {
            return Err(ClientError::InvalidRequest("empty topic"));
        }
        parts.push(format!("/{}", encode_path(topic)));
    }
    Ok(format!("/sub{}", parts.join(",")))
}

/// Encodes a query parameter value (`application/x-www-form-urlencoded`).
pub fn encode_query(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A parsed long-poll reply of `GET /sub/...`.
#[derive(Clone, Debug, PartialEq)]
pub struct SubReply {
    /// Message objects as sent (`id`, `topic`, `time`, `data`, optional `event`, `encoding`).
    pub messages: Vec<Value>,
    /// Messages in the reply that could not be decoded, in order; `next` moves past them.
    pub skipped: Vec<Skipped>,
    /// Cursor for the next request's `since=`.
    pub next: String,
    /// True when messages between the cursor and `oldest` were lost from history.
    pub gap: bool,
    /// Oldest id still in history, sent with `gap`.
    pub oldest: Option<String>,
}

/// A message of a reply that could not be decoded (nested deeper than the decoder allows, say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The message's id, when that much could be read.
    pub id: Option<String>,
    pub reason: String,
}

/// Parses a `GET /sub` reply body. Each message is decoded on its own: one that cannot be
/// (the server bounds JSON nesting, but an older server or another source may not) is listed in
/// `skipped` rather than failing the whole reply, so a subscriber is never stuck retrying the
/// same poison message.
pub fn parse_sub_reply(body: &[u8]) -> Result<SubReply, ClientError> {
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
    let wire: Wire =
        serde_json::from_slice(body).map_err(|e| ClientError::Malformed(format!("unexpected subscribe reply: {e}")))?;
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

/// One output line for `message`: the whole object compact with `json`, else its `data`
/// (a string as-is, which is also how base64 data arrives; other JSON compact).
pub fn format_message(message: &Value, json: bool) -> String {
    if json {
        return message.to_string();
    }
    match message.get("data") {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// The reason of a failed response in one line: its text body, else the status code.
pub fn failure_reason(response: &ClientResponse) -> String {
    let text = String::from_utf8_lossy(&response.body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(line) => format!("{} {line}", response.status),
        None => format!("HTTP status {}", response.status),
    }
}

impl ClientError {
    /// True for failures worth retrying later with the same request (network trouble, a
    /// server restarting); false for requests that can never succeed as written.
    pub fn is_transient(&self) -> bool {
        !matches!(self, ClientError::InvalidServer { .. } | ClientError::InvalidRequest(_))
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidServer { input, reason } => {
                write!(f, "invalid server {input:?}: {reason}")
            }
            ClientError::InvalidRequest(reason) => write!(f, "invalid request: {reason}"),
            ClientError::Connect { server, source } => {
                write!(f, "cannot connect to {server}: {source}")
            }
            ClientError::Io(e) => write!(f, "connection failed: {e}"),
            ClientError::TimedOut => f.write_str("timed out waiting for the server"),
            ClientError::UnexpectedEof => f.write_str("server closed the connection mid-response"),
            ClientError::Malformed(what) => write!(f, "malformed response: {what}"),
            ClientError::TooLarge { what, limit } => {
                write!(f, "response {what} exceeds the limit of {limit}")
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source, .. } | ClientError::Io(source) => Some(source),
            _ => None,
        }
    }
}

/// Serializes the request line and header section, rejecting anything that could split it.
fn request_head(
    server: &ServerAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<String, ClientError> {
    let is_token = |s: &str| !s.is_empty() && s.bytes().all(is_tchar);
    if !is_token(method) {
        return Err(ClientError::InvalidRequest("method is not a token"));
    }
    if !path_and_query.starts_with('/') || !path_and_query.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::InvalidRequest("request-target must start with '/' and be visible ASCII"));
    }
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {}\r\nUser-Agent: halley/{}\r\nConnection: close\r\n",
        server.authority(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        // RFC 9110 §5.5: no CR, LF or NUL in field values; names are tokens.
        if !is_token(name) || value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(ClientError::InvalidRequest("invalid header field"));
        }
        head.push_str(&format!("{name}: {}\r\n", value.trim()));
    }
    // RFC 9110 §8.6: no Content-Length on a request without content unless the method
    // gives content a meaning.
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    Ok(head)
}

/// Connects to the first address of `server` that answers before the deadline.
fn connect(server: &ServerAddr, deadline: Instant) -> Result<TcpStream, ClientError> {
    let connect_error = |source| ClientError::Connect { server: server.authority(), source };
    let addrs = (server.host.as_str(), server.port).to_socket_addrs().map_err(connect_error)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for host");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(connect_error(last))
}

/// Time left before `deadline`, or `TimedOut`.
fn remaining(deadline: Instant) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ClientError::TimedOut)
    } else {
        Ok(left)
    }
}

/// Maps socket timeouts to `TimedOut`, everything else to `Io`.
fn io_error(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::TimedOut,
        _ => ClientError::Io(e),
    }
}

/// A socket plus the bytes read from it but not consumed yet.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
}

impl Reader {
    /// Appends up to [`READ_CHUNK`] bytes; `Ok(0)` at end of stream.
    fn fill(&mut self) -> Result<usize, ClientError> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let left = remaining(self.deadline)?;
            self.stream.set_read_timeout(Some(left)).map_err(ClientError::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e)),
            }
        }
    }
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads the response head (skipping 1xx interim responses) and body.
fn read_response(reader: &mut Reader, method: &str) -> Result<ClientResponse, ClientError> {
    loop {
        let Head { status, headers, consumed } = loop {
            if let Some(head) = parse_head(&reader.buf)? {
                break head;
            }
            if reader.buf.len() > MAX_RESPONSE_HEAD {
                return Err(ClientError::TooLarge { what: "head (bytes)", limit: MAX_RESPONSE_HEAD });
            }
            if reader.fill()? == 0 {
                return Err(ClientError::UnexpectedEof);
            }
        };
        reader.buf.drain(..consumed);
        // RFC 9110 §15.2: interim responses precede the final one; 101 would need an
        // upgrade we never ask for.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let body = match framing(status, method, &headers)? {
            Framing::Empty => Vec::new(),
            Framing::Length(length) => read_length(reader, length)?,
            Framing::Chunked => read_chunked(reader)?,
            Framing::UntilClose => read_until_close(reader)?,
        };
        return Ok(ClientResponse { status, headers, body });
    }
}

/// A parsed response head.
#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    /// Bytes of the buffer the head took.
    consumed: usize,
}

/// Parses a complete response head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(consumed)) => {
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).trim().to_owned();
                    (h.name.to_owned(), value)
                })
                .collect();
            Ok(Some(Head { status: response.code.unwrap_or_default(), headers, consumed }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            Err(ClientError::TooLarge { what: "head (header fields)", limit: MAX_RESPONSE_HEADERS })
        }
        Err(e) => Err(ClientError::Malformed(format!("response head: {e}"))),
    }
}

/// Decides the body framing from the status and headers (RFC 9112 §6.3).
fn framing(status: u16, method: &str, headers: &[(String, String)]) -> Result<Framing, ClientError> {
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    let mut transfer_coding = None;
    let mut length: Option<usize> = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coding = Some(value.clone());
        } else if name.eq_ignore_ascii_case("content-length") {
            // A list of identical values is allowed (§6.3 item 5); anything else is fatal.
            for item in value.split(',') {
                let parsed = item
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|_| item.trim().bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| ClientError::Malformed("invalid Content-Length".into()))?;
                if length.is_some_and(|known| known != parsed) {
                    return Err(ClientError::Malformed("conflicting Content-Length".into()));
                }
                length = Some(parsed);
            }
        }
    }
    // Transfer-Encoding wins over Content-Length (§6.3 item 3); a response whose final
    // coding is not chunked runs until close.
    if let Some(codings) = transfer_coding {
        let last = codings.rsplit(',').next().unwrap_or("").trim();
        return Ok(if last.eq_ignore_ascii_case("chunked") { Framing::Chunked } else { Framing::UntilClose });
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

fn too_large_body() -> ClientError {
    ClientError::TooLarge { what: "body (bytes)", limit: MAX_RESPONSE_BODY }
}

fn read_length(reader: &mut Reader, length: usize) -> Result<Vec<u8>, ClientError> {
    if length > MAX_RESPONSE_BODY {
        return Err(too_large_body());
    }
    while reader.buf.len() < length {
        if reader.fill()? == 0 {
            return Err(ClientError::UnexpectedEof);
        }
    }
    reader.buf.truncate(length);
    Ok(std::mem::take(&mut reader.buf))
}

fn read_until_close(reader: &mut Reader) -> Result<Vec<u8>, ClientError> {
    while reader.fill()? > 0 {
        if reader.buf.len() > MAX_RESPONSE_BODY {
            return Err(too_large_body());
        }
    }
    Ok(std::mem::take(&mut reader.buf))
}

fn read_chunked(reader: &mut Reader) -> Result<Vec<u8>, ClientError> {
    let mut decoder = chunked_decoder();
    let mut body = Vec::new();
    loop {
        let consumed = decode_chunked(&mut decoder, &reader.buf, &mut body)?;
        reader.buf.drain(..consumed);
        if decoder.is_done() {
            return Ok(body);
        }
        if reader.fill()? == 0 {
            return Err(ClientError::UnexpectedEof);
        }
    }
}

/// The library's chunked decoder (the server's) with this client's limits: chunk-size lines up
/// to [`MAX_CHUNK_LINE`], trailers up to [`MAX_RESPONSE_HEAD`].
fn chunked_decoder() -> BodyDecoder {
    BodyDecoder::with_limits(
        BodyKind::Chunked,
        ChunkLimits { max_line: MAX_CHUNK_LINE, max_trailers: MAX_RESPONSE_HEAD },
    )
}

/// Decodes as much of `input` as is complete, appending data to `out`; returns the number of
/// input bytes consumed (the rest must be offered again with more appended). The body is
/// bounded by [`MAX_RESPONSE_BODY`].
fn decode_chunked(decoder: &mut BodyDecoder, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ClientError> {
    match decoder.decode(input, out, MAX_RESPONSE_BODY) {
        Ok((consumed, _)) => Ok(consumed),
        Err(HttpError::BodyTooLarge) => Err(too_large_body()),
        Err(HttpError::HeadTooLarge) => {
            Err(ClientError::TooLarge { what: "trailers (bytes)", limit: MAX_RESPONSE_HEAD })
        }
        Err(e) => Err(ClientError::Malformed(format!("chunked body: {}", e.reason()))),
    }
}

/// Percent-encodes a topic for a path: keeps RFC 3986 §3.3 `pchar`s and '/', encodes the rest
/// (including '%', so topic names are taken literally).
fn encode_path(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len());
    for &b in topic.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use serde_json::json;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Serves one connection: reads the request head, writes `reply`, closes. Returns the
    /// server address and a handle yielding the request bytes it saw.
    fn canned(reply: &'static [u8]) -> (ServerAddr, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&chunk[..n]),
                }
            }
            // Dropped peers make write errors expected in some tests; ignore them.
            let _ = stream.write_all(reply);
            seen
        });
        let server = ServerAddr { host: "127.0.0.1".into(), port };
        (server, handle)
    }

    fn get(reply: &'static [u8]) -> Result<ClientResponse, ClientError> {
        let (server, handle) = canned(reply);
        let result = request(&server, "GET", "/sub/news", &[], b"", TIMEOUT);
        handle.join().expect("server thread");
        result
    }

    #[test]
    fn content_length_response() {
        let response = get(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello")
            .expect("response");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"hello");
        assert_eq!(response.headers[0], ("Content-Type".to_owned(), "application/json".to_owned()));
    }

    #[test]
    fn chunked_response_with_extension_and_trailer() {
        let response = get(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n",
        )
        .expect("response");
        assert_eq!(response.body, b"hello, world");
    }

    #[test]
    fn interim_response_is_skipped_and_close_delimits() {
        let response =
            get(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\nno such topic\n").expect("response");
        assert_eq!(response.status, 404);
        assert_eq!(failure_reason(&response), "404 no such topic");
    }

    #[test]
    fn request_bytes_are_well_formed() {
        let (server, handle) = canned(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}");
        let response = request(&server, "POST", "/pub/news?event=x", &[("Content-Type", "text/plain")], b"hi", TIMEOUT)
            .expect("response");
        assert_eq!(response.status, 201);
        let seen = String::from_utf8(handle.join().expect("server")).expect("ascii");
        assert!(seen.starts_with("POST /pub/news?event=x HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", server.port)));
        assert!(seen.contains("\r\nContent-Type: text/plain\r\n"));
        assert!(seen.contains("\r\nContent-Length: 2\r\n\r\nhi"), "{seen}");
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(matches!(get(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), Err(ClientError::Malformed(_))));
        assert!(matches!(get(b""), Err(ClientError::UnexpectedEof)));
        assert!(matches!(get(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"), Err(ClientError::UnexpectedEof)));
        assert!(matches!(
            get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
            Err(ClientError::UnexpectedEof)
        ));
        assert!(matches!(
            get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            get(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            get(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n"),
            Err(ClientError::TooLarge { .. })
        ));
    }

    #[test]
    fn connection_refused_is_a_transient_connect_error() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let server = ServerAddr { host: "127.0.0.1".into(), port };
        let err = request(&server, "GET", "/", &[], b"", TIMEOUT).expect_err("refused");
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(err.is_transient());
    }

    #[test]
    fn chunked_decoder_accepts_input_split_at_every_byte() {
        let wire = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n";
        for split in 0..=wire.len() {
            let mut decoder = chunked_decoder();
            let mut out = Vec::new();
            let mut pending = wire[..split].to_vec();
            let used = decode_chunked(&mut decoder, &pending, &mut out).expect("first half");
            pending.drain(..used);
            pending.extend_from_slice(&wire[split..]);
            let used = decode_chunked(&mut decoder, &pending, &mut out).expect("second half");
            assert!(decoder.is_done(), "split at {split}");
            assert_eq!(used, pending.len());
            assert_eq!(out, b"abc0123456789abcdef");
        }
    }

    #[test]
    fn chunked_decoder_rejects_overrun_and_huge_sizes() {
        let mut out = Vec::new();
        assert!(decode_chunked(&mut chunked_decoder(), b"3\r\nabcdef\r\n", &mut out).is_err());
        assert!(decode_chunked(&mut chunked_decoder(), b"ffffffffffff\r\n", &mut out).is_err());
        let long_line = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(decode_chunked(&mut chunked_decoder(), &long_line, &mut out).is_err());
    }

    #[test]
    fn server_addresses() {
        let parse = |s: &str| s.parse::<ServerAddr>();
        let ok = parse("http://127.0.0.1:8080").expect("ok");
        assert_eq!((ok.host.as_str(), ok.port), ("127.0.0.1", 8080));
        assert_eq!(parse("http://example.com/").expect("ok").port, 80);
        let v6 = parse("http://[::1]:9000").expect("ok");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert_eq!(v6.authority(), "[::1]:9000");
        let tls = parse("https://example.com").expect_err("tls").to_string();
        assert!(tls.contains("no TLS"), "{tls}");
        for bad in ["example.com:80", "http://", "http://h:99999", "http://h/path", "http://[::1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_injection_is_refused() {
        let server = ServerAddr { host: "127.0.0.1".into(), port: 1 };
        let bad = |path: &str, headers: &[(&str, &str)]| {
            matches!(request(&server, "GET", path, headers, b"", TIMEOUT), Err(ClientError::InvalidRequest(_)))
        };
        assert!(bad("/a b", &[]));
        assert!(bad("no-slash", &[]));
        assert!(bad("/", &[("X-Event", "a\r\nEvil: 1")]));
        assert!(bad("/", &[("Bad Name", "v")]));
    }

    #[test]
    fn topic_paths() {
        assert_eq!(pub_path("news").expect("ok"), "/pub/news");
        assert_eq!(pub_path("/news/sports").expect("ok"), "/pub/news/sports");
        assert_eq!(pub_path("a b%").expect("ok"), "/pub/a%20b%25");
        assert!(pub_path("/").is_err());
        assert_eq!(sub_path("news,/sport").expect("ok"), "/sub/news,/sport");
        assert_eq!(sub_path("/news/*").expect("ok"), "/sub/news/*");
        assert!(sub_path("a,,b").is_err());
        assert_eq!(encode_query("1795325654-7"), "1795325654-7");
        assert_eq!(encode_query("a&b c"), "a%26b+c");
    }

    #[test]
    fn sub_reply_parsing() {
        let reply =
            parse_sub_reply(br#"{"messages":[{"id":"1-1","topic":"/news","time":1,"data":"hi"}],"next":"1-1"}"#)
                .expect("reply");
        assert_eq!(reply.next, "1-1");
        assert!(!reply.gap);
        assert_eq!(reply.messages.len(), 1);
        let gap = parse_sub_reply(br#"{"messages":[],"next":"1-9","gap":true,"oldest":"1-5"}"#).expect("reply");
        assert!(gap.gap);
        assert_eq!(gap.oldest.as_deref(), Some("1-5"));
        assert!(parse_sub_reply(b"{\"messages\":[]}").is_err(), "next is required");
        assert!(parse_sub_reply(b"<html>").is_err());
    }

    #[test]
    fn a_message_too_deep_to_decode_is_skipped_not_fatal() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let body =
            format!(r#"{{"messages":[{{"id":"1-1","data":{deep}}},{{"id":"1-2","data":"after"}}],"next":"1-2"}}"#);
        let reply = parse_sub_reply(body.as_bytes()).expect("the envelope decodes");
        assert_eq!(reply.messages, vec![json!({"id":"1-2","data":"after"})]);
        assert_eq!(reply.skipped.len(), 1);
        assert_eq!(reply.skipped[0].id.as_deref(), Some("1-1"));
        assert!(reply.skipped[0].reason.contains("recursion limit"), "{:?}", reply.skipped[0]);
        assert_eq!(reply.next, "1-2");
    }

    #[test]
    fn message_printing() {
        let text = json!({"id":"1-1","topic":"/news","time":1,"data":"hello world"});
        let object = json!({"id":"1-2","topic":"/news","time":2,"data":{"a":[1, 2]}});
        let binary = json!({"id":"1-3","topic":"/news","time":3,"data":"AAEC","encoding":"base64"});
        assert_eq!(format_message(&text, false), "hello world");
        assert_eq!(format_message(&object, false), r#"{"a":[1,2]}"#);
        assert_eq!(format_message(&binary, false), "AAEC");
        let line = format_message(&object, true);
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Value>(&line).expect("json"), object);
        assert_eq!(format_message(&json!({"id":"x"}), false), "");
    }

    #[test]
    fn failure_reason_falls_back_to_status() {
        let response = ClientResponse { status: 503, headers: Vec::new(), body: Vec::new() };
        assert_eq!(failure_reason(&response), "HTTP status 503");
    }
}
