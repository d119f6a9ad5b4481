//! Response writing: status line, `Date`, framing and connection headers (RFC 9110, RFC 9112
//! §4, §6, §7.1, §9.3), appended to a caller-owned `Vec<u8>`. The server decides which headers
//! and bodies to send; this file gets the mechanics right.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Version;

/// The chunk trailer that follows every chunk's data (RFC 9112 §7.1).
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk with an empty trailer section: ends a chunked body (RFC 9112 §7.1).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// The interim answer to `Expect: 100-continue` (RFC 9110 §10.1.1, §15.2.1).
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A body of exactly this many bytes: `Content-Length`.
    Length(usize),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 requests only; see [`Framing::streaming`]).
    Chunked,
    /// The body ends when the connection closes; implies `Connection: close`.
    CloseDelimited,
    /// No body: `Content-Length: 0`, or nothing for statuses that never have one.
    None,
}

impl Framing {
    /// The framing for a body of unknown length, e.g. a stream: chunked for HTTP/1.1, and
    /// close-delimited for HTTP/1.0, which has no chunked coding (RFC 9112 §6.1).
    pub fn streaming(req_version: Version) -> Framing {
        match req_version {
            Version::Http11 => Framing::Chunked,
            Version::Http10 => Framing::CloseDelimited,
        }
    }
}

/// Per-worker cache of the IMF-fixdate `Date` value (RFC 9110 §6.6.1), re-formatted at most once a second.
#[derive(Debug, Clone)]
pub struct DateCache {
    /// The second `text` was formatted for, since the Unix epoch.
    secs: u64,
    text: String,
}

impl DateCache {
    /// A cache holding the current time (the one place this module reads the clock, so that a
    /// fresh cache never holds a stale or empty date).
    pub fn new() -> Self {
        let mut cache = DateCache { secs: u64::MAX, text: String::with_capacity(IMF_FIXDATE_LEN) };
        cache.update(SystemTime::now());
        cache
    }

    /// Re-formats the date if `now` is in a different second than the cached one.
    pub fn update(&mut self, now: std::time::SystemTime) {
        // httpdate panics outside 1970..=9999, so clamp the clock to that range first.
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).min(LAST_SECOND);
        if secs != self.secs {
            self.secs = secs;
            self.text.clear();
            let date = httpdate::HttpDate::from(UNIX_EPOCH + Duration::from_secs(secs));
            // Writing into a String cannot fail.
            let _ = write!(self.text, "{date}");
        }
    }

    /// The cached value, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn value(&self) -> &str {
        &self.text
    }
}

impl Default for DateCache {
    fn default() -> Self {
        DateCache::new()
    }
}

/// Writes "HTTP/1.1 <status> <reason>\r\nDate: ..\r\n" + the given headers + framing + "\r\n".
///
/// `framing`: [`Framing::Length`] writes `Content-Length`; [`Framing::Chunked`] writes
/// `Transfer-Encoding: chunked` (HTTP/1.1 only: for an HTTP/1.0 request it writes no framing
/// header and `Connection: close`, so use [`Framing::streaming`]); [`Framing::CloseDelimited`]
/// writes no framing header and `Connection: close`; [`Framing::None`] writes
/// `Content-Length: 0` unless the status forbids a body. No framing header is written for 1xx
/// and 204 (RFC 9110 §8.6, RFC 9112 §6.1), nor `Transfer-Encoding` for 304.
///
/// `keep_alive == false` writes `Connection: close`; for an HTTP/1.0 request with keep_alive
/// true it writes `Connection: keep-alive`. Always answers with version HTTP/1.1 (RFC 9110 §2.5).
///
/// Header names must be tokens; CR, LF and NUL in values are replaced by spaces so that a value
/// can never inject a header line.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    req_version: Version,
    date: &str,
    headers: &[(&str, &str)],
    framing: Framing,
    keep_alive: bool,
) {
    write_head_parts(out, status, req_version, date, &[headers], framing, keep_alive);
}

/// The reason phrase for `status` (RFC 9110 §15, RFC 6585), or "" for unregistered codes
/// (the reason phrase is optional, RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A complete error response: text/plain body "<reason>\n" (one line), Content-Length,
/// `Connection: close` when !keep_alive. `extra` headers e.g. ("Allow", "GET, HEAD").
///
/// An empty `reason` uses the status's reason phrase; line breaks in it become spaces. For a
/// status that forbids a body (1xx, 204, 304) only the head is written. The caller drops the
/// body when answering a HEAD request.
pub fn error_response(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    req_version: Version,
    date: &str,
    extra: &[(&str, &str)],
    keep_alive: bool,
) {
    if forbids_body(status) {
        write_head_parts(out, status, req_version, date, &[extra], Framing::None, keep_alive);
        return;
    }
    let reason = if reason.is_empty() { reason_phrase(status) } else { reason };
    let own: &[(&str, &str)] = &[("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")];
    let framing = Framing::Length(reason.len() + 1);
    write_head_parts(out, status, req_version, date, &[own, extra], framing, keep_alive);
    push_sanitized(out, reason.as_bytes());
    out.push(b'\n');
}

/// Chunked body framing helpers (RFC 9112 §7.1): chunk header for a chunk of `len` bytes
/// ("<hex>\r\n") into a small stack buffer. Note that `len == 0` gives "0\r\n", which starts
/// the last chunk: never frame empty data with it (see [`write_chunk`]).
pub fn chunk_header(len: usize) -> ChunkHeader {
    let mut header = ChunkHeader { bytes: [0; CHUNK_HEADER_MAX], len: 0 };
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in header.bytes[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = b"0123456789abcdef"[(len >> shift) & 0xf];
    }
    header.bytes[digits] = b'\r';
    header.bytes[digits + 1] = b'\n';
    header.len = digits as u8 + 2;
    header
}

/// Appends `data` as one chunk (header, data, CRLF). Empty data writes nothing, because an
/// empty chunk would end the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(chunk_header(data.len()).as_ref());
    out.extend_from_slice(data);
    out.extend_from_slice(CHUNK_END);
}

/// A chunk-size line ("<hex>\r\n") on the stack; see [`chunk_header`].
#[derive(Debug, Clone, Copy)]
pub struct ChunkHeader {
    bytes: [u8; CHUNK_HEADER_MAX],
    len: u8,
}

impl AsRef<[u8]> for ChunkHeader {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Hex digits of the largest `usize`, plus CRLF.
const CHUNK_HEADER_MAX: usize = std::mem::size_of::<usize>() * 2 + 2;

/// Length of an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
const IMF_FIXDATE_LEN: usize = 29;

/// 9999-12-31T23:59:59Z, the last second an IMF-fixdate can express.
const LAST_SECOND: u64 = 253_402_300_799;

fn write_head_parts(
    out: &mut Vec<u8>,
    status: u16,
    req_version: Version,
    date: &str,
    header_groups: &[&[(&str, &str)]],
    framing: Framing,
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    push_sanitized(out, date.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in header_groups.iter().flat_map(|group| group.iter()) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        push_sanitized(out, value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    let no_framing_header = status < 200 || status == 204;
    let mut close = !keep_alive;
    match framing {
        Framing::Length(len) if !no_framing_header => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, len as u64);
            out.extend_from_slice(b"\r\n");
        }
        Framing::None if !forbids_body(status) => out.extend_from_slice(b"Content-Length: 0\r\n"),
        Framing::Chunked if req_version == Version::Http10 => close = true,
        Framing::Chunked if !forbids_body(status) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        Framing::CloseDelimited => close = true,
        Framing::Length(_) | Framing::None | Framing::Chunked => {}
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if req_version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// 1xx, 204 and 304 responses never have a body (RFC 9112 §6.3 rule 1).
fn forbids_body(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `value`, replacing CR, LF and NUL (never valid in a field value, RFC 9110 §5.5) by SP.
fn push_sanitized(out: &mut Vec<u8>, value: &[u8]) {
    let bad = |b: &u8| matches!(b, b'\r' | b'\n' | 0);
    if !value.iter().any(bad) {
        out.extend_from_slice(value);
        return;
    }
    out.extend(value.iter().map(|b| if bad(b) { b' ' } else { *b }));
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    fn head(status: u16, version: Version, framing: Framing, keep_alive: bool) -> String {
        let mut out = Vec::new();
        write_head(&mut out, status, version, DATE, &[("X-A", "1")], framing, keep_alive);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn write_head_framing_and_version() {
        use Framing::*;
        use Version::*;
        let pre = |status: &str| format!("HTTP/1.1 {status}\r\nDate: {DATE}\r\nX-A: 1\r\n");
        let ok = pre("200 OK");
        let table: &[(u16, Version, Framing, bool, String)] = &[
            (200, Http11, Length(12), true, format!("{ok}Content-Length: 12\r\n\r\n")),
            (200, Http11, Length(0), false, format!("{ok}Content-Length: 0\r\nConnection: close\r\n\r\n")),
            (200, Http10, Length(5), true, format!("{ok}Content-Length: 5\r\nConnection: keep-alive\r\n\r\n")),
            (200, Http10, Length(5), false, format!("{ok}Content-Length: 5\r\nConnection: close\r\n\r\n")),
            (200, Http11, Chunked, true, format!("{ok}Transfer-Encoding: chunked\r\n\r\n")),
            (200, Http11, Chunked, false, format!("{ok}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")),
            (200, Http10, Chunked, true, format!("{ok}Connection: close\r\n\r\n")),
            (200, Http11, CloseDelimited, true, format!("{ok}Connection: close\r\n\r\n")),
            (200, Http10, CloseDelimited, true, format!("{ok}Connection: close\r\n\r\n")),
            (200, Http11, None, true, format!("{ok}Content-Length: 0\r\n\r\n")),
            (200, Http10, None, true, format!("{ok}Content-Length: 0\r\nConnection: keep-alive\r\n\r\n")),
            (204, Http11, None, true, format!("{}\r\n", pre("204 No Content"))),
            (204, Http11, Length(3), true, format!("{}\r\n", pre("204 No Content"))),
            (304, Http11, None, true, format!("{}\r\n", pre("304 Not Modified"))),
            (304, Http11, Length(3), true, format!("{}Content-Length: 3\r\n\r\n", pre("304 Not Modified"))),
            (101, Http11, None, true, format!("{}\r\n", pre("101 Switching Protocols"))),
            (599, Http11, None, true, format!("{}Content-Length: 0\r\n\r\n", pre("599 "))),
        ];
        for (status, version, framing, keep_alive, expected) in table {
            assert_eq!(
                head(*status, *version, *framing, *keep_alive),
                *expected,
                "{status} {version:?} {framing:?} {keep_alive}"
            );
        }
    }

    #[test]
    fn streaming_framing_follows_version() {
        assert_eq!(Framing::streaming(Version::Http11), Framing::Chunked);
        assert_eq!(Framing::streaming(Version::Http10), Framing::CloseDelimited);
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let mut out = Vec::new();
        let headers = [("X-Cb", "a\r\nSet-Cookie: x=1\0")];
        write_head(&mut out, 200, Version::Http11, DATE, &headers, Framing::None, true);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.contains("X-Cb: a  Set-Cookie: x=1 \r\n"), "{text}");
        assert_eq!(text.matches("\r\n").count(), 5);
    }

    #[test]
    fn error_responses() {
        let mut out = Vec::new();
        let allow = [("Allow", "GET, HEAD")];
        error_response(&mut out, 405, "method PUT not allowed", Version::Http11, DATE, &allow, false);
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            format!(
                "HTTP/1.1 405 Method Not Allowed\r\nDate: {DATE}\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n\
                 Allow: GET, HEAD\r\nContent-Length: 23\r\nConnection: close\r\n\r\n\
                 method PUT not allowed\n"
            )
        );

        let mut out = Vec::new();
        error_response(&mut out, 404, "", Version::Http10, DATE, &[], true);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.ends_with("Content-Length: 10\r\nConnection: keep-alive\r\n\r\nNot Found\n"), "{text}");

        let mut out = Vec::new();
        error_response(&mut out, 400, "two\r\nlines", Version::Http11, DATE, &[], true);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.ends_with("Content-Length: 11\r\n\r\ntwo  lines\n"), "{text}");

        let mut out = Vec::new();
        error_response(&mut out, 304, "ignored", Version::Http11, DATE, &[], true);
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            format!("HTTP/1.1 304 Not Modified\r\nDate: {DATE}\r\n\r\n")
        );
    }

    #[test]
    fn reason_phrases_cover_parse_errors() {
        for status in [400, 405, 413, 414, 431, 501, 505, 200, 204, 404, 408, 503] {
            assert!(!reason_phrase(status).is_empty(), "{status}");
        }
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(299), "");
    }

    #[test]
    fn chunk_headers() {
        let table: &[(usize, &[u8])] = &[
            (0, b"0\r\n"),
            (1, b"1\r\n"),
            (15, b"f\r\n"),
            (16, b"10\r\n"),
            (255, b"ff\r\n"),
            (4096, b"1000\r\n"),
            (0x1234_5678, b"12345678\r\n"),
        ];
        for (len, expected) in table {
            assert_eq!(chunk_header(*len).as_ref(), *expected, "{len}");
        }
        let max = chunk_header(usize::MAX);
        assert_eq!(max.as_ref().len(), CHUNK_HEADER_MAX);
        assert!(max.as_ref().starts_with(b"ffff"));

        let mut out = Vec::new();
        write_chunk(&mut out, b"hello world");
        write_chunk(&mut out, b"");
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(out, b"b\r\nhello world\r\n0\r\n\r\n");
    }

    #[test]
    fn date_cache_formats_and_clamps() {
        let mut cache = DateCache::new();
        assert_eq!(cache.value().len(), IMF_FIXDATE_LEN);
        assert!(cache.value().ends_with(" GMT"));

        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        cache.update(t);
        assert_eq!(cache.value(), "Sun, 06 Nov 1994 08:49:37 GMT");
        cache.update(t + Duration::from_millis(999));
        assert_eq!(cache.value(), "Sun, 06 Nov 1994 08:49:37 GMT");
        cache.update(t + Duration::from_secs(1));
        assert_eq!(cache.value(), "Sun, 06 Nov 1994 08:49:38 GMT");

        cache.update(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(cache.value(), "Thu, 01 Jan 1970 00:00:00 GMT");
        cache.update(UNIX_EPOCH + Duration::from_secs(LAST_SECOND + 1000));
        assert_eq!(cache.value(), "Fri, 31 Dec 9999 23:59:59 GMT");
    }
}
