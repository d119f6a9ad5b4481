//! HTTP/1.1 wire layer, sans-I/O: request-head parsing with limits, request-body decoding and
//! response-head writing.
//!
//! This module owns the HTTP/1.1 message syntax (RFC 9112) and nothing else: it never touches a
//! socket, a clock or a buffer it was not handed. The worker loop owns the read buffer, calls
//! [`parse_head`] on it until it gets [`Status::Complete`], drains the consumed head bytes, then
//! feeds what follows to a [`BodyDecoder`]. Responses are appended to a `Vec<u8>` with
//! [`write_head`], [`error_response`] and the chunk helpers. Routing and the meaning of a request
//! belong to the protocol modules.
//!
//! Every error is an [`HttpError`] carrying the status code to answer with; after any of them
//! the connection's framing can no longer be trusted, so the caller answers and closes.

mod body;
mod reject;
mod request;
mod response;

use std::fmt;

pub use body::{is_tchar, BodyDecoder, ChunkLimits, MAX_CHUNK_LINE, MAX_TRAILERS};
pub use reject::Reject;
pub use request::{parse_head, BodyKind, Request, MAX_HEADERS};
pub use response::{
    chunk_header, error_response, reason_phrase, write_chunk, write_head, ChunkHeader, DateCache, Framing, CHUNK_END,
    CONTINUE_100, LAST_CHUNK,
};

/// Size limits applied while parsing a request. Every field is in bytes.
///
/// This is also the `[http]` section of the server's `Config`, and its `Default` is where the
/// `--max-head`, `--max-uri` and `--max-body` defaults are defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line, header fields and the empty line that ends them,
    /// plus any empty lines before the request line). Larger heads get 431.
    pub max_head: usize,
    /// Longest request-target. Longer targets get 414; a request line that has not ended
    /// within `max_uri` + [`REQUEST_LINE_SLACK`] bytes gets 414 too.
    pub max_uri: usize,
    /// Largest decoded request body. Larger bodies get 413.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head: 16 * 1024, max_uri: 8 * 1024, max_body: 1024 * 1024 }
    }
}

/// Bytes a request line may hold beyond the target itself: method, two spaces, the version and
/// the line end. 64 bytes is generous for every registered method name.
pub const REQUEST_LINE_SLACK: usize = 64;

/// The result of feeding possibly incomplete input to a parser: incomplete input is not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// The item is complete.
    Complete(T),
    /// More input is needed; nothing was consumed.
    Partial,
}

/// Request methods Halley distinguishes (RFC 9110 §9). Method names are case-sensitive, so
/// `get` is [`Method::Other`]. `Other` keeps nothing; [`Request::method_str`] has the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

/// The request's protocol version. Only HTTP/1.0 and HTTP/1.1 are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Http10,
    Http11,
}

/// Why a request was refused. Each variant maps to the status code to answer with; after any
/// of them the caller sends that answer and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The head (or a chunked trailer section) is over its limit, or has too many fields: 431.
    HeadTooLarge,
    /// The request-target or request line is over its limit: 414.
    UriTooLong,
    /// The request is not valid HTTP/1.1 syntax: 400.
    Malformed(&'static str),
    /// The body framing is ambiguous or invalid, a request-smuggling risk (RFC 9112 §6.3): 400.
    BadFraming(&'static str),
    /// The declared or decoded body is over `max_body`: 413.
    BodyTooLarge,
    /// A transfer coding other than `chunked` was applied (RFC 9112 §6.1): 501.
    UnsupportedTransferCoding,
    /// The HTTP version is well formed but not 1.0 or 1.1 (RFC 9110 §15.6.6): 505.
    VersionNotSupported,
}

impl HttpError {
    /// The response status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::UriTooLong => 414,
            HttpError::Malformed(_) | HttpError::BadFraming(_) => 400,
            HttpError::BodyTooLarge => 413,
            HttpError::UnsupportedTransferCoding => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// One line of text for the client, without a trailing newline.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::HeadTooLarge => "request header fields too large",
            HttpError::UriTooLong => "request target too long",
            HttpError::Malformed(why) | HttpError::BadFraming(why) => why,
            HttpError::BodyTooLarge => "request body too large",
            HttpError::UnsupportedTransferCoding => "unsupported transfer coding",
            HttpError::VersionNotSupported => "HTTP version not supported",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xorshift::XorShift;

    #[test]
    fn limits_default() {
        let l = Limits::default();
        assert_eq!((l.max_head, l.max_uri, l.max_body), (16384, 8192, 1048576));
    }

    #[test]
    fn error_statuses_and_reasons() {
        let table: &[(HttpError, u16)] = &[
            (HttpError::HeadTooLarge, 431),
            (HttpError::UriTooLong, 414),
            (HttpError::Malformed("x"), 400),
            (HttpError::BadFraming("y"), 400),
            (HttpError::BodyTooLarge, 413),
            (HttpError::UnsupportedTransferCoding, 501),
            (HttpError::VersionNotSupported, 505),
        ];
        for (e, status) in table {
            assert_eq!(e.status(), *status, "{e:?}");
            let reason = e.reason();
            assert!(!reason.is_empty() && !reason.contains('\n'), "{e:?}");
        }
        assert_eq!(HttpError::Malformed("missing Host header").reason(), "missing Host header");
        assert_eq!(HttpError::BodyTooLarge.to_string(), "request body too large (413)");
    }

    /// Bytes that steer random input into the interesting parts of the grammar.
    const ALPHABET: &[u8] = b"GET POST /?=&%:;,\r\n\t 0123456789abcdefABCDEF HTTP/1.1 HTTP/1.0 \
        Host Content-Length Transfer-Encoding chunked Connection close keep-alive \x00\x7f\xff";

    const SEEDS: &[&[u8]] = &[
        b"POST /pub/a?x=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabcGET",
        b"\r\nGET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];

    /// Random byte soup and mutated valid requests into the parser and the decoder: no panic,
    /// and every result respects the limits and never claims more bytes than it was given.
    #[test]
    fn random_input_never_panics() {
        let limits = Limits { max_head: 512, max_uri: 128, max_body: 256 };
        let mut rng = XorShift::new(0x9E37_79B9_7F4A_7C15);
        let mut buf = Vec::new();
        for round in 0..20_000 {
            buf.clear();
            match round % 3 {
                0 => {
                    for _ in 0..rng.below(600) {
                        buf.push(rng.next_u64() as u8);
                    }
                }
                1 => {
                    for _ in 0..rng.below(600) {
                        buf.push(ALPHABET[rng.below(ALPHABET.len())]);
                    }
                }
                _ => {
                    buf.extend_from_slice(SEEDS[rng.below(SEEDS.len())]);
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(buf.len());
                        match rng.below(3) {
                            0 => buf[at] = ALPHABET[rng.below(ALPHABET.len())],
                            1 => buf.insert(at, rng.next_u64() as u8),
                            _ => {
                                buf.remove(at);
                            }
                        }
                    }
                }
            }
            check_one(&buf, &limits, &mut rng);
        }
    }

    fn check_one(buf: &[u8], limits: &Limits, rng: &mut XorShift) {
        let (request, used) = match parse_head(buf, limits) {
            Ok(Status::Complete(done)) => done,
            Ok(Status::Partial) => {
                assert!(buf.len() < limits.max_head, "partial past the head limit");
                return;
            }
            Err(e) => {
                assert!([400, 413, 414, 431, 501, 505].contains(&e.status()));
                return;
            }
        };
        assert!(used <= buf.len() && used <= limits.max_head);
        assert!(request.target().len() <= limits.max_uri);
        let _ = (request.path(), request.query(), request.query_param("x"), request.keep_alive());
        let _ = (request.headers().count(), request.method_str(), request.wants_upgrade("ws"));

        let mut body = &buf[used..];
        let mut decoder = BodyDecoder::new(request.body_kind());
        let mut out = Vec::new();
        while !body.is_empty() {
            let piece = &body[..1 + rng.below(body.len())];
            match decoder.decode(piece, &mut out, limits.max_body) {
                Ok((n, done)) => {
                    assert!(n <= piece.len());
                    assert!(out.len() <= limits.max_body);
                    body = &body[n..];
                    if done || n < piece.len() {
                        assert!(done, "stopped early without finishing");
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
}
