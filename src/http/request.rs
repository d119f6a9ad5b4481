//! Request-head parsing (RFC 9112 §2-§6): turns the bytes of a request head into an owned
//! [`Request`], enforcing the head and target limits and validating body framing up front so
//! that an ambiguous request can never be smuggled past the body decoder.

use std::borrow::Cow;

use super::{HttpError, Limits, Method, Status, Version, REQUEST_LINE_SLACK};

/// Most header fields a request may carry; one more is refused with 431. httparse fills a fixed
/// array of this many entries, kept on the stack (32 bytes each).
pub const MAX_HEADERS: usize = 100;

/// How the request body is delimited, decided from the framing headers (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Neither `Content-Length` nor `Transfer-Encoding`: the body is empty (§6.3 rule 7).
    None,
    /// `Content-Length: n` (n may be 0). Already checked against `max_body`.
    Length(u64),
    /// `Transfer-Encoding: chunked` as the only coding.
    Chunked,
}

/// An owned, parsed request head. Owns one copy of the head bytes plus index ranges into it
/// (one allocation for the bytes, one small Vec for header ranges) so it stays small.
#[derive(Debug, Clone)]
pub struct Request {
    /// The head from the first byte of the method to the end of the empty line.
    head: Box<[u8]>,
    /// One entry per header field line, in the order received.
    fields: Vec<Field>,
    method: Method,
    /// The method is `head[..method_len]`.
    method_len: u32,
    version: Version,
    target: Span,
    /// Empty only for an absolute-form target without a path, which means "/".
    path: Span,
    query: Option<Span>,
    body_kind: BodyKind,
    keep_alive: bool,
    expects_continue: bool,
    /// `Connection: upgrade` was present (and the request is HTTP/1.1).
    connection_upgrade: bool,
}

impl Request {
    /// The method, classified; [`Method::Other`] for anything unlisted.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The method exactly as sent, e.g. for a 405 message.
    pub fn method_str(&self) -> &str {
        self.text(Span { start: 0, end: self.method_len })
    }

    /// The request's protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The raw request-target (RFC 9112 §3.2).
    pub fn target(&self) -> &str {
        self.text(self.target)
    }

    /// The target's path, up to `?`, not percent-decoded. For an absolute-form target
    /// (`http://host/p?q`) this is the path part (`/p`, or `/` when empty); for `*` (OPTIONS) it
    /// is `*` and for CONNECT's authority-form it is the whole target.
    pub fn path(&self) -> &str {
        if self.path.start == self.path.end {
            "/"
        } else {
            self.text(self.path)
        }
    }

    /// The query after `?`, raw (without the `?`).
    pub fn query(&self) -> Option<&str> {
        self.query.map(|span| self.text(span))
    }

    /// The first query parameter called `name`, decoded as `application/x-www-form-urlencoded`
    /// (`+` is a space, `%2F` is `/`). Keys are compared after decoding.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        let query = self.query()?;
        form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value)
    }

    /// The value of the first header field called `name` (case-insensitive), leading and
    /// trailing whitespace removed.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| self.bytes(f.name).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| self.bytes(f.value))
    }

    /// Like [`Request::header`], but `None` too when the value is not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.header(name)?).ok()
    }

    /// Every header field as (name as sent, value), in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter().map(|f| (self.text(f.name), self.bytes(f.value)))
    }

    /// Whether the connection persists after this exchange (RFC 9112 §9.3): HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive` and no `close`.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// How the body is framed; the framing headers were validated when the head was parsed.
    pub fn body_kind(&self) -> BodyKind {
        self.body_kind
    }

    /// `Expect: 100-continue` on an HTTP/1.1 request; HTTP/1.0 expectations are ignored
    /// (RFC 9110 §10.1.1).
    pub fn expects_continue(&self) -> bool {
        self.expects_continue
    }

    /// Whether the client asks to switch to `proto` (e.g. `websocket`): `Connection: upgrade`
    /// and `proto` listed in `Upgrade`, compared case-insensitively with or without a
    /// `/version` suffix. Always false for HTTP/1.0 (RFC 9110 §7.8).
    pub fn wants_upgrade(&self, proto: &str) -> bool {
        if !self.connection_upgrade {
            return false;
        }
        self.header_elements("upgrade").any(|offered| {
            let name = offered.split(|&b| b == b'/').next().unwrap_or(offered);
            offered.eq_ignore_ascii_case(proto.as_bytes()) || name.eq_ignore_ascii_case(proto.as_bytes())
        })
    }

    /// The non-empty elements of every `name` field, OWS trimmed: the list rule of RFC 9110
    /// §5.6.1, over all the field's lines (§5.3).
    pub fn header_elements<'r>(&'r self, name: &'r str) -> impl Iterator<Item = &'r [u8]> + 'r {
        self.fields
            .iter()
            .filter(move |f| self.bytes(f.name).eq_ignore_ascii_case(name.as_bytes()))
            .flat_map(|f| list_elements(self.bytes(f.value)))
    }

    fn bytes(&self, span: Span) -> &[u8] {
        self.head.get(span.start as usize..span.end as usize).unwrap_or(&[])
    }

    /// Spans given to `text` were cut from UTF-8 (`&str`) slices at ASCII boundaries at parse
    /// time, so the fallback is unreachable; it exists so that no accessor can panic.
    fn text(&self, span: Span) -> &str {
        std::str::from_utf8(self.bytes(span)).unwrap_or("")
    }
}

/// Parses the request head at the start of `buf`.
///
/// Returns the request and the number of bytes of `buf` it used (including any empty lines
/// before the request line); the body, if any, starts right after. `Partial` means more bytes
/// are needed. The limits are enforced on partial input too: a head that is already longer than
/// `max_head`, or a request line longer than `max_uri` + [`REQUEST_LINE_SLACK`], fails now
/// rather than being buffered until it completes.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Status<(Request, usize)>, HttpError> {
    let skip = match skip_empty_lines(buf)? {
        Status::Complete(skip) => skip,
        Status::Partial => return partial(buf.len(), limits),
    };
    let rest = buf.get(skip..).unwrap_or(&[]);
    check_request_line(rest, limits)?;

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(rest) {
        Ok(httparse::Status::Complete(len)) => {
            let total = skip + len;
            if total > limits.max_head {
                return Err(HttpError::HeadTooLarge);
            }
            let request = build(rest, len, &parsed, limits)?;
            Ok(Status::Complete((request, total)))
        }
        Ok(httparse::Status::Partial) => partial(buf.len(), limits),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadTooLarge),
        Err(httparse::Error::Version) => match version_error(rest) {
            Some(e) => Err(e),
            None => partial(buf.len(), limits),
        },
        Err(httparse::Error::HeaderName) => Err(HttpError::Malformed("invalid header name")),
        Err(httparse::Error::HeaderValue) => Err(HttpError::Malformed("invalid header value")),
        Err(httparse::Error::NewLine) => Err(HttpError::Malformed("invalid line ending")),
        Err(httparse::Error::Token) => Err(HttpError::Malformed("invalid request line")),
        Err(_) => Err(HttpError::Malformed("malformed request head")),
    }
}

/// A byte range in [`Request::head`]. `u32` offsets keep the request small; a head too big for
/// them is refused as too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// One header field line: name and value ranges.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: Span,
    value: Span,
}

/// An incomplete head: fine while it is under the limit, 431 once it cannot fit any more.
fn partial<T>(buffered: usize, limits: &Limits) -> Result<Status<T>, HttpError> {
    if buffered >= limits.max_head {
        Err(HttpError::HeadTooLarge)
    } else {
        Ok(Status::Partial)
    }
}

/// Skips empty lines before the request line (RFC 9112 §2.2), returning how many bytes they
/// took. `Partial` while the buffer holds nothing else yet.
fn skip_empty_lines(buf: &[u8]) -> Result<Status<usize>, HttpError> {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\n', ..]) => i += 1,
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\r']) | Some([]) | None => return Ok(Status::Partial),
            Some([b'\r', ..]) => return Err(HttpError::Malformed("invalid line ending")),
            Some(_) => return Ok(Status::Complete(i)),
        }
    }
}

/// Refuses an over-long request-target or request line, even before the line is complete.
fn check_request_line(rest: &[u8], limits: &Limits) -> Result<(), HttpError> {
    let max_line = limits.max_uri.saturating_add(REQUEST_LINE_SLACK);
    let window = &rest[..rest.len().min(max_line)];
    let line_end = window.iter().position(|&b| b == b'\n');
    let line = &window[..line_end.unwrap_or(window.len())];
    // The target runs from the first SP to the next one (RFC 9112 §3), or to what we have.
    if let Some(sp) = line.iter().position(|&b| b == b' ') {
        let after = &line[sp + 1..];
        let target_len = after.iter().position(|&b| b == b' ').unwrap_or(after.len());
        if target_len > limits.max_uri {
            return Err(HttpError::UriTooLong);
        }
    }
    if line_end.is_none() && rest.len() >= max_line {
        return Err(HttpError::UriTooLong);
    }
    Ok(())
}

/// Decides between 505 and 400 after httparse rejected the version. httparse reads the version
/// right after the target's closing SP, so a request line with a space inside its target
/// (`GET /he alth HTTP/1.1`) or any extra part lands here too: the line must have exactly three
/// parts (RFC 9112 §3), else it is malformed, not an unsupported version. A well-formed
/// `HTTP/x.y` that is not 1.0 or 1.1 is unsupported (RFC 9110 §2.5), anything else is malformed.
/// `None` while an unfinished line holds a prefix of a well-formed version.
fn version_error(rest: &[u8]) -> Option<HttpError> {
    const MALFORMED: HttpError = HttpError::Malformed("invalid HTTP version");
    let line_end = rest.iter().position(|&b| b == b'\n');
    let line = &rest[..line_end.unwrap_or(rest.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // httparse accepted the method and the target, each ended by one SP; the rest is the version.
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(_method), Some(_target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Some(MALFORMED);
    };
    if version.contains(&b' ') {
        return Some(HttpError::Malformed("invalid request line: more than three parts (a space in the target?)"));
    }
    let shaped = version.iter().enumerate().all(|(i, &b)| match i {
        0..=4 => b == b"HTTP/"[i],
        5 | 7 => b.is_ascii_digit(),
        6 => b == b'.',
        _ => false,
    });
    match (shaped, version.len(), line_end) {
        (true, 8, Some(_)) => Some(HttpError::VersionNotSupported),
        (true, _, None) => None,
        _ => Some(MALFORMED),
    }
}

/// What the header scan found about framing and connection handling.
#[derive(Debug, Default)]
struct Scan {
    content_length: Option<u64>,
    transfer_encoding: bool,
    /// Number of transfer codings listed so far, over all `Transfer-Encoding` lines.
    codings: usize,
    last_coding_chunked: bool,
    chunked_seen: bool,
    other_coding: bool,
    hosts: usize,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    expect_continue: bool,
}

/// Turns a complete httparse result into an owned [`Request`], classifying the headers in the
/// same pass that records their ranges.
fn build(rest: &[u8], len: usize, parsed: &httparse::Request<'_, '_>, limits: &Limits) -> Result<Request, HttpError> {
    let head = rest.get(..len).ok_or(HttpError::Malformed("malformed request head"))?;
    let method_str = parsed.method.unwrap_or("");
    let target_str = parsed.path.unwrap_or("");
    let version = match parsed.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HttpError::VersionNotSupported),
    };
    let method = classify_method(method_str);
    let target = span_of(head, target_str.as_bytes())?;
    let (path, query) = split_target(method, method_str, target_str, target.start)?;

    let mut scan = Scan::default();
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        fields.push(Field {
            name: span_of(head, header.name.as_bytes())?,
            value: span_of(head, trim_ows(header.value))?,
        });
        scan_field(&mut scan, header.name.as_bytes(), header.value)?;
    }

    let body_kind = body_kind(&scan, version, limits)?;
    if scan.hosts > 1 {
        return Err(HttpError::Malformed("multiple Host headers"));
    }
    if scan.hosts == 0 && version == Version::Http11 {
        return Err(HttpError::Malformed("missing Host header"));
    }
    let http11 = version == Version::Http11;
    Ok(Request {
        head: head.into(),
        fields,
        method,
        method_len: span_of(head, method_str.as_bytes())?.end,
        version,
        target,
        path,
        query,
        body_kind,
        keep_alive: !scan.close && (http11 || scan.keep_alive),
        expects_continue: http11 && scan.expect_continue,
        connection_upgrade: http11 && scan.upgrade,
    })
}

fn classify_method(method: &str) -> Method {
    match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        _ => Method::Other,
    }
}

/// Where `part` (a slice httparse cut from `head`) lies within `head`.
fn span_of(head: &[u8], part: &[u8]) -> Result<Span, HttpError> {
    let start = (part.as_ptr() as usize)
        .checked_sub(head.as_ptr() as usize)
        .filter(|start| start + part.len() <= head.len())
        .ok_or(HttpError::Malformed("malformed request head"))?;
    let end = start + part.len();
    match (u32::try_from(start), u32::try_from(end)) {
        (Ok(start), Ok(end)) => Ok(Span { start, end }),
        _ => Err(HttpError::HeadTooLarge),
    }
}

/// Splits the request-target into path and query spans (absolute offsets; the target starts at
/// `base`), accepting the four forms of RFC 9112 §3.2.
fn split_target(method: Method, method_str: &str, target: &str, base: u32) -> Result<(Span, Option<Span>), HttpError> {
    let at = |start: usize, end: usize| Span { start: base + start as u32, end: base + end as u32 };
    let bytes = target.as_bytes();
    let path_start = if bytes.first() == Some(&b'/') {
        0 // origin-form (§3.2.1)
    } else if target == "*" {
        // asterisk-form is only for a server-wide OPTIONS (§3.2.4).
        if method != Method::Options {
            return Err(HttpError::Malformed("'*' target is only valid for OPTIONS"));
        }
        return Ok((at(0, 1), None));
    } else if method_str == "CONNECT" {
        return Ok((at(0, bytes.len()), None)); // authority-form (§3.2.3)
    } else {
        absolute_form_path(bytes).ok_or(HttpError::Malformed("invalid request target"))?
    };
    let query_at = bytes.iter().position(|&b| b == b'?');
    let path_end = query_at.unwrap_or(bytes.len()).max(path_start);
    let query = query_at.map(|q| at(q + 1, bytes.len()));
    Ok((at(path_start, path_end), query))
}

/// For an absolute-form target (`scheme://authority[/path][?query]`, RFC 9112 §3.2.2), where
/// its path starts (== where the authority ends).
fn absolute_form_path(target: &[u8]) -> Option<usize> {
    let colon = target.iter().position(|&b| b == b':')?;
    let (scheme, after) = target.split_at(colon);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme.iter().all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || !after.starts_with(b"://") {
        return None;
    }
    let authority_start = colon + 3;
    let authority_len = target[authority_start..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(target.len() - authority_start);
    Some(authority_start + authority_len)
}

/// Classifies one header field for framing, Host, Connection and Expect handling.
fn scan_field(scan: &mut Scan, name: &[u8], value: &[u8]) -> Result<(), HttpError> {
    // Dispatch on length first: most fields are none of these and cost one comparison.
    match name.len() {
        4 if name.eq_ignore_ascii_case(b"host") => {
            scan.hosts += 1;
            if !trim_ows(value).iter().all(|&b| is_host_byte(b)) {
                return Err(HttpError::Malformed("invalid Host header"));
            }
        }
        6 if name.eq_ignore_ascii_case(b"expect") => {
            scan.expect_continue |= trim_ows(value).eq_ignore_ascii_case(b"100-continue");
        }
        10 if name.eq_ignore_ascii_case(b"connection") => {
            for option in list_elements(value) {
                scan.close |= option.eq_ignore_ascii_case(b"close");
                scan.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                scan.upgrade |= option.eq_ignore_ascii_case(b"upgrade");
            }
        }
        14 if name.eq_ignore_ascii_case(b"content-length") => scan_content_length(scan, value)?,
        17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
            scan.transfer_encoding = true;
            for coding in list_elements(value) {
                scan.codings += 1;
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                if chunked && scan.chunked_seen {
                    // RFC 9112 §6.1: chunked must not be applied more than once.
                    return Err(HttpError::BadFraming("chunked applied more than once"));
                }
                scan.chunked_seen |= chunked;
                scan.other_coding |= !chunked;
                scan.last_coding_chunked = chunked;
            }
        }
        _ => {}
    }
    Ok(())
}

/// RFC 9110 §8.6: `Content-Length` is 1*DIGIT; a list or repeat of one identical value may be
/// accepted, anything else is a framing error (RFC 9112 §6.3 rule 5).
fn scan_content_length(scan: &mut Scan, value: &[u8]) -> Result<(), HttpError> {
    for element in trim_ows(value).split(|&b| b == b',') {
        let digits = trim_ows(element);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(HttpError::BadFraming("invalid Content-Length"));
        }
        // Saturate: a length beyond u64 is refused as too large, not as garbage.
        let n = digits.iter().fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0')));
        match scan.content_length {
            Some(previous) if previous != n => {
                return Err(HttpError::BadFraming("conflicting Content-Length values"));
            }
            _ => scan.content_length = Some(n),
        }
    }
    Ok(())
}

/// Decides the body framing from the scanned headers (RFC 9112 §6.1, §6.3), refusing every
/// ambiguous combination a front end might read differently.
fn body_kind(scan: &Scan, version: Version, limits: &Limits) -> Result<BodyKind, HttpError> {
    if scan.transfer_encoding {
        if version == Version::Http10 {
            return Err(HttpError::BadFraming("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if scan.content_length.is_some() {
            return Err(HttpError::BadFraming("both Content-Length and Transfer-Encoding"));
        }
        if scan.codings == 0 || !scan.last_coding_chunked {
            return Err(HttpError::BadFraming("chunked is not the final transfer coding"));
        }
        if scan.other_coding {
            return Err(HttpError::UnsupportedTransferCoding);
        }
        return Ok(BodyKind::Chunked);
    }
    match scan.content_length {
        Some(n) if n == u64::MAX || n > u64::try_from(limits.max_body).unwrap_or(u64::MAX) => {
            Err(HttpError::BodyTooLarge)
        }
        Some(n) => Ok(BodyKind::Length(n)),
        None => Ok(BodyKind::None),
    }
}

/// The non-empty elements of a comma-separated field value, OWS trimmed (RFC 9110 §5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|e| !e.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Bytes allowed in a Host value: uri-host (reg-name or IP-literal) and port (RFC 3986 §3.2).
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b)
}

#[cfg(test)]
mod tests;
