//! Client side of HTTP/1.1, without I/O: building the few requests halley-load sends and
//! reading responses incrementally (`Content-Length`, `chunked`, or close-delimited bodies).
//!
//! The reader is fed whatever bytes the socket produced and says how far it got; incomplete
//! input is never an error (STYLE 2). `Content-Length` and chunked bodies are decoded by the
//! server's own decoder (`halley::http::BodyDecoder`) with this reader's limits. The event loops
//! in `sub.rs` and `publish.rs` are the only code that touches sockets.

use std::fmt;

use halley::http::{BodyDecoder, BodyKind, ChunkLimits};

/// Longest response head we accept, in bytes. Halley and Nchan heads are a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in one response head.
pub const MAX_HEADERS: usize = 32;
/// Largest body we buffer for one long-poll response, in bytes (a batch of caught-up messages).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Bounds on chunked framing: the longest chunk-size line (size plus extensions, RFC 9112
/// §7.1.1) and the longest trailer section we skip (§7.1.2), in bytes.
const CHUNK_LIMITS: ChunkLimits = ChunkLimits { max_line: 1024, max_trailers: 8 * 1024 };

/// Why a response could not be read. Every variant is the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// `httparse` rejected the status line or a header.
    Malformed(&'static str),
    /// The head, a chunk line, the trailers or the body outgrew its bound.
    TooLarge(&'static str),
    /// The connection ended inside a length-delimited or chunked body.
    Truncated,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(what) => write!(f, "malformed response: {what}"),
            HttpError::TooLarge(what) => write!(f, "response too large: {what}"),
            HttpError::Truncated => write!(f, "connection closed inside a response body"),
        }
    }
}

impl std::error::Error for HttpError {}

/// How the body of a response ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (or a status that never has a body: n = 0).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body runs until the server closes the connection.
    Close,
}

/// The parts of a response head halley-load acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// False for HTTP/1.0 or `Connection: close` (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// Nchan's long-poll cursor, echoed back as `If-Modified-Since`.
    pub last_modified: Option<String>,
    /// Nchan's long-poll cursor, echoed back as `If-None-Match`.
    pub etag: Option<String>,
    /// `Content-Type: text/event-stream`.
    pub event_stream: bool,
}

/// What one call to [`ResponseReader::advance`] reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Everything given was consumed (or kept); more bytes are needed.
    NeedMore,
    /// The head is complete: [`ResponseReader::head`] is set; body bytes may follow.
    HeadDone,
    /// The whole response is read; bytes after it (a pipelined next response) were not consumed.
    BodyDone,
}

/// Incremental response reader for one connection, reusable across keep-alive responses.
///
/// Decoded body bytes accumulate in an internal buffer: long-poll callers take it whole after
/// [`Step::BodyDone`], streaming (SSE) callers drain it with [`ResponseReader::take_body`]
/// after every call.
#[derive(Debug, Default)]
pub struct ResponseReader {
    state: ReadState,
    head: Option<Head>,
    body: Vec<u8>,
    /// Bound on `body` between two `take_body` calls, in bytes.
    max_body: usize,
}

#[derive(Debug, Default)]
enum ReadState {
    #[default]
    Head,
    Body(Body),
    Done,
}

/// How the body being read ends.
#[derive(Debug)]
enum Body {
    /// `Content-Length` or chunked.
    Framed(BodyDecoder),
    /// At EOF.
    Close,
}

impl ResponseReader {
    /// A reader whose decoded-body buffer is bounded by `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        ResponseReader { max_body, ..Default::default() }
    }

    /// Consume bytes from the front of `input`, returning how many were used and how far the
    /// response got. Call again with the unconsumed rest after `HeadDone`; after `BodyDone`
    /// call [`reset`](Self::reset) before reading the next response.
    pub fn advance(&mut self, input: &[u8]) -> Result<(usize, Step), HttpError> {
        if let ReadState::Head = self.state {
            let Some((head, used)) = parse_head(input)? else {
                return Ok((0, Step::NeedMore));
            };
            let framed = |kind| ReadState::Body(Body::Framed(BodyDecoder::with_limits(kind, CHUNK_LIMITS)));
            let (state, step) = match head.framing {
                Framing::Length(0) => (ReadState::Done, Step::BodyDone),
                Framing::Length(len) => (framed(BodyKind::Length(len as u64)), Step::HeadDone),
                Framing::Chunked => (framed(BodyKind::Chunked), Step::HeadDone),
                Framing::Close => (ReadState::Body(Body::Close), Step::HeadDone),
            };
            self.state = state;
            self.head = Some(head);
            return Ok((used, step));
        }
        match &mut self.state {
            ReadState::Head => Ok((0, Step::NeedMore)),
            ReadState::Body(decoder) => {
                let (used, done) = decoder.decode(input, &mut self.body)?;
                if self.body.len() > self.max_body {
                    return Err(HttpError::TooLarge("body"));
                }
                if done {
                    self.state = ReadState::Done;
                    return Ok((used, Step::BodyDone));
                }
                Ok((used, Step::NeedMore))
            }
            ReadState::Done => Ok((0, Step::BodyDone)),
        }
    }

    /// The peer closed the connection: a close-delimited body is now complete, anything else
    /// unfinished is truncated. Returns true when a response just completed.
    pub fn finish_eof(&mut self) -> Result<bool, HttpError> {
        match self.state {
            ReadState::Body(Body::Close) => {
                self.state = ReadState::Done;
                Ok(true)
            }
            ReadState::Head if self.head.is_none() => Ok(false),
            ReadState::Done => Ok(false),
            _ => Err(HttpError::Truncated),
        }
    }

    /// The parsed head of the current response, once `HeadDone` was returned.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// Take the body bytes decoded so far.
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// Forget the finished response and get ready for the next one on the same connection.
    pub fn reset(&mut self) {
        self.state = ReadState::Head;
        self.head = None;
        self.body.clear();
    }
}

/// Parse a response head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(HttpError::TooLarge("head"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooLarge("header count")),
        Err(_) => return Err(HttpError::Malformed("status line or header")),
    };
    if n > MAX_HEAD_BYTES {
        return Err(HttpError::TooLarge("head"));
    }
    let status = resp.code.ok_or(HttpError::Malformed("status"))?;
    let mut head = Head {
        status,
        framing: Framing::Close,
        keep_alive: resp.version == Some(1),
        last_modified: None,
        etag: None,
        event_stream: false,
    };
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HttpError::Malformed("header value"))?;
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse().map_err(|_| HttpError::Malformed("content-length"))?;
            // RFC 9112 §6.3: differing repeated lengths are unrecoverable.
            if length.is_some_and(|l| l != len) {
                return Err(HttpError::Malformed("conflicting content-length"));
            }
            length = Some(len);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                if token.trim().eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.trim().eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("last-modified") {
            head.last_modified = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("etag") {
            head.etag = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("content-type") {
            head.event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
        }
    }
    // RFC 9112 §6.3: 1xx, 204 and 304 never carry a body; chunked wins over a length.
    head.framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(len) = length {
        Framing::Length(len)
    } else {
        Framing::Close
    };
    if head.framing == Framing::Close {
        head.keep_alive = false;
    }
    Ok(Some((head, n)))
}

impl Body {
    /// Decode from `input` into `out`; returns bytes consumed and whether the body ended.
    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), HttpError> {
        match self {
            // The reader bounds what `out` holds between two `take_body` calls, not the whole
            // body: an SSE or ndjson stream is one endless chunked body.
            Body::Framed(decoder) => decoder.decode(input, out, usize::MAX).map_err(|e| match e {
                halley::http::HttpError::BodyTooLarge => HttpError::TooLarge("chunk size"),
                halley::http::HttpError::HeadTooLarge => HttpError::TooLarge("trailers"),
                other => HttpError::Malformed(other.reason()),
            }),
            Body::Close => {
                out.extend_from_slice(input);
                Ok((input.len(), false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` split at `split`, the way two socket reads would deliver it; returns the
    /// head, the whole decoded body and whether the response completed.
    fn feed_split(input: &[u8], split: usize) -> Result<(Option<Head>, Vec<u8>, bool), HttpError> {
        let mut reader = ResponseReader::new(MAX_BODY_BYTES);
        let mut buf = Vec::new();
        let mut body = Vec::new();
        let mut done = false;
        for part in [&input[..split], &input[split..]] {
            buf.extend_from_slice(part);
            loop {
                let (n, step) = reader.advance(&buf)?;
                buf.drain(..n);
                body.extend(reader.take_body());
                match step {
                    Step::HeadDone => continue,
                    Step::BodyDone => {
                        done = true;
                        break;
                    }
                    Step::NeedMore => break,
                }
            }
            if done {
                break;
            }
        }
        Ok((reader.head().cloned(), body, done))
    }

    /// Every split point gives the same result, and no strict prefix completes.
    fn check_all_splits(input: &[u8], want_body: &[u8]) {
        for split in 0..=input.len() {
            let (head, body, done) = feed_split(input, split).expect("valid response");
            assert!(done, "split {split}");
            assert!(head.is_some());
            assert_eq!(body, want_body, "split {split}");
        }
        for cut in 0..input.len() {
            let (_, _, done) = feed_split(&input[..cut], cut).expect("prefix is not an error");
            assert!(!done, "prefix of {cut} bytes completed");
        }
    }

    #[test]
    fn content_length_at_every_truncation_point() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"next\":1}\n";
        check_all_splits(r, b"{\"next\":1}\n");
        let (head, _, _) = feed_split(r, r.len()).expect("valid");
        let head = head.expect("head");
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(11));
        assert!(head.keep_alive);
    }

    #[test]
    fn chunked_at_every_truncation_point() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        check_all_splits(r, b"hello world");
    }

    #[test]
    fn chunked_without_trailers_and_uppercase_hex() {
        let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n".to_vec();
        r.extend_from_slice(b"0123456789\r\n0\r\n\r\n");
        check_all_splits(&r, b"0123456789");
    }

    #[test]
    fn bytes_after_a_response_are_left_for_the_next() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 204 No Content\r\n\r\n";
        let mut reader = ResponseReader::new(64);
        let (n, step) = reader.advance(two).expect("ok");
        assert_eq!(step, Step::HeadDone);
        let (m, step) = reader.advance(&two[n..]).expect("ok");
        assert_eq!(step, Step::BodyDone);
        assert_eq!(reader.take_body(), b"ab");
        reader.reset();
        let (k, step) = reader.advance(&two[n + m..]).expect("ok");
        assert_eq!(step, Step::BodyDone);
        assert_eq!(n + m + k, two.len());
        assert_eq!(reader.head().map(|h| h.status), Some(204));
    }

    #[test]
    fn close_delimited_body_ends_at_eof() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nid: 1\n";
        let mut reader = ResponseReader::new(64);
        let (n, step) = reader.advance(r).expect("ok");
        assert_eq!(step, Step::HeadDone);
        let head = reader.head().cloned().expect("head");
        assert!(head.event_stream);
        assert!(!head.keep_alive, "a close-delimited body cannot be kept alive");
        let (_, step) = reader.advance(&r[n..]).expect("ok");
        assert_eq!(step, Step::NeedMore);
        assert_eq!(reader.take_body(), b"id: 1\n");
        assert_eq!(reader.finish_eof(), Ok(true));
    }

    #[test]
    fn eof_inside_a_length_body_is_truncation() {
        let mut reader = ResponseReader::new(64);
        let (_, step) = reader.advance(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").expect("ok");
        assert_eq!(step, Step::HeadDone);
        assert_eq!(reader.finish_eof(), Err(HttpError::Truncated));
        let mut idle = ResponseReader::new(64);
        assert_eq!(idle.finish_eof(), Ok(false), "EOF between responses is a clean close");
    }

    #[test]
    fn nchan_cursor_headers_and_304() {
        let r = b"HTTP/1.1 304 Not Modified\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\nEtag: 3\r\nContent-Length: 99\r\n\r\n";
        let (head, n) = parse_head(r).expect("ok").expect("complete");
        assert_eq!(n, r.len());
        assert_eq!(head.framing, Framing::Length(0), "304 has no body whatever it says");
        assert_eq!(head.last_modified.as_deref(), Some("Thu, 01 Jan 2026 00:00:00 GMT"));
        assert_eq!(head.etag.as_deref(), Some("3"));
    }

    #[test]
    fn limits_and_malformed_input_are_typed_errors() {
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 10, b'a');
        assert_eq!(parse_head(&big), Err(HttpError::TooLarge("head")));
        assert!(matches!(parse_head(b"HTTX/1.1 200 OK\r\n\r\n"), Err(HttpError::Malformed(_))));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        let mut reader = ResponseReader::new(4);
        let err = reader.advance(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789");
        assert!(err.is_ok(), "head first");
        let err = reader.advance(b"0123456789");
        assert_eq!(err, Err(HttpError::TooLarge("body")));
        let mut chunked = ResponseReader::new(64);
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let (n, _) = chunked.advance(bad).expect("head");
        assert!(matches!(chunked.advance(&bad[n..]), Err(HttpError::Malformed(_))));
    }

    #[test]
    fn http10_and_connection_close_are_not_kept_alive() {
        let (h, _) = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").expect("ok").expect("complete");
        assert!(!h.keep_alive);
        let (h, _) = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!h.keep_alive);
    }
}
