//! Tests for request-head parsing: truncation at every byte, pipelining, every error with
//! its status, framing, limits on partial input, header lookup and the keep-alive rules.

use super::*;

fn parse(buf: &[u8]) -> Result<Status<(Request, usize)>, HttpError> {
    parse_head(buf, &Limits::default())
}

fn complete(buf: &[u8]) -> (Request, usize) {
    match parse(buf) {
        Ok(Status::Complete(done)) => done,
        other => panic!("expected a complete head for {:?}, got {other:?}", show(buf)),
    }
}

fn error(buf: &[u8]) -> HttpError {
    match parse(buf) {
        Err(e) => e,
        other => panic!("expected an error for {:?}, got {other:?}", show(buf)),
    }
}

fn show(buf: &[u8]) -> String {
    String::from_utf8_lossy(buf).into_owned()
}

const VALID: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /sub/news?since=5&x=%2F HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n\r\n",
    b"POST /pub/t HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
    b"\r\n\r\nGET /after-blank-lines HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /bare-lf HTTP/1.1\nHost: h\nX-Empty:\n\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET http://example.com/abs?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
];

#[test]
fn every_truncation_is_partial() {
    for full in VALID {
        for cut in 0..full.len() {
            assert_eq!(
                parse(&full[..cut]).map(|s| matches!(s, Status::Partial)),
                Ok(true),
                "prefix {:?}",
                show(&full[..cut])
            );
        }
        let (_, used) = complete(full);
        assert_eq!(used, full.len(), "{:?}", show(full));
    }
}

#[test]
fn body_bytes_are_not_consumed() {
    let buf = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    let (req, used) = complete(buf);
    assert_eq!(&buf[used..], b"hello");
    assert_eq!(req.body_kind(), BodyKind::Length(5));
}

#[test]
fn pipelined_requests() {
    let mut buf: Vec<u8> = Vec::new();
    buf.extend_from_slice(b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n");
    buf.extend_from_slice(b"\r\nHEAD /two HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    buf.extend_from_slice(b"GET /three HTTP/1.1\r\nHo");
    let (one, used) = complete(&buf);
    assert_eq!((one.path(), used), ("/one", 30));
    buf.drain(..used);
    let (two, used) = complete(&buf);
    assert_eq!((two.method(), two.path(), two.keep_alive()), (Method::Head, "/two", false));
    buf.drain(..used);
    assert_eq!(buf, b"GET /three HTTP/1.1\r\nHo");
    assert!(matches!(parse(&buf), Ok(Status::Partial)));
}

#[test]
fn request_line_parts() {
    // (request, method, method as sent, version, target, path, query)
    type Case = (&'static [u8], Method, &'static str, Version, &'static str, &'static str, Option<&'static str>);
    #[rustfmt::skip]
    let table: &[Case] = &[
        (VALID[1], Method::Get, "GET", Version::Http11, "/sub/news?since=5&x=%2F", "/sub/news", Some("since=5&x=%2F")),
        (VALID[4], Method::Get, "GET", Version::Http10, "/old", "/old", None),
        (VALID[7], Method::Options, "OPTIONS", Version::Http11, "*", "*", None),
        (VALID[8], Method::Get, "GET", Version::Http11, "http://example.com/abs?q=1", "/abs", Some("q=1")),
        (b"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", Method::Get, "GET", Version::Http11, "http://h", "/", None),
        (b"GET https://h?x HTTP/1.1\r\nHost: h\r\n\r\n", Method::Get, "GET", Version::Http11, "https://h?x", "/", Some("x")),
        (b"GET /p? HTTP/1.1\r\nHost: h\r\n\r\n", Method::Get, "GET", Version::Http11, "/p?", "/p", Some("")),
        (b"get / HTTP/1.1\r\nHost: h\r\n\r\n", Method::Other, "get", Version::Http11, "/", "/", None),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", Method::Other, "CONNECT", Version::Http11, "h:443", "h:443", None),
        (b"PATCH /a/b%20c HTTP/1.1\r\nHost: h\r\n\r\n", Method::Patch, "PATCH", Version::Http11, "/a/b%20c", "/a/b%20c", None),
    ];
    for (buf, method, method_str, version, target, path, query) in table {
        let (req, _) = complete(buf);
        assert_eq!(req.method(), *method, "{:?}", show(buf));
        assert_eq!(req.method_str(), *method_str);
        assert_eq!(req.version(), *version);
        assert_eq!(req.target(), *target);
        assert_eq!(req.path(), *path);
        assert_eq!(req.query(), *query);
    }
    for (name, method) in [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("OPTIONS", Method::Options),
        ("PATCH", Method::Patch),
        ("PURGE", Method::Other),
    ] {
        let buf = format!("{name} / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(complete(buf.as_bytes()).0.method(), method);
    }
}

const EXTRA_PART: &str = "invalid request line: more than three parts (a space in the target?)";

#[test]
fn errors_with_status() {
    let long_cl = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", (1 << 20) + 1);
    let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", "A: b\r\n".repeat(100));
    let table: &[(&[u8], HttpError, u16)] = &[
        (b"GET / HTTP/2.0\r\n\r\n", HttpError::VersionNotSupported, 505),
        (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", HttpError::VersionNotSupported, 505),
        (b"GET / HTTP/3.0\n", HttpError::VersionNotSupported, 505),
        (b"GET / HTTX/1.1\r\n", HttpError::Malformed("invalid HTTP version"), 400),
        (b"GET / HTTP/2.x", HttpError::Malformed("invalid HTTP version"), 400),
        (b"GET / HTTP/22.0\r\n", HttpError::Malformed("invalid HTTP version"), 400),
        (b"GET / HTTP/1.1\r\n\r\n", HttpError::Malformed("missing Host header"), 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", HttpError::Malformed("multiple Host headers"), 400),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", HttpError::Malformed("invalid Host header"), 400),
        (b"GET  / HTTP/1.1\r\n", HttpError::Malformed("invalid request line"), 400),
        (b"GET /he alth HTTP/1.1\r\nHost: h\r\n\r\n", HttpError::Malformed(EXTRA_PART), 400),
        (b"GET /he alth HTTP/2.0\r\n", HttpError::Malformed(EXTRA_PART), 400),
        // Known malformed before the line ends: no waiting for more bytes.
        (b"GET /a b HTT", HttpError::Malformed(EXTRA_PART), 400),
        (b"GET /\r\n", HttpError::Malformed("invalid request line"), 400),
        (b"G(T / HTTP/1.1\r\n", HttpError::Malformed("invalid request line"), 400),
        (b"\r\rGET", HttpError::Malformed("invalid line ending"), 400),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", HttpError::Malformed("invalid header name"), 400),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", HttpError::Malformed("invalid header name"), 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", HttpError::Malformed("invalid header name"), 400),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", HttpError::Malformed("invalid header value"), 400),
        (b"GET / HTTP/1.1\rX", HttpError::Malformed("invalid line ending"), 400),
        (b"GET x HTTP/1.1\r\nHost: h\r\n\r\n", HttpError::Malformed("invalid request target"), 400),
        (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", HttpError::Malformed("'*' target is only valid for OPTIONS"), 400),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            HttpError::BadFraming("both Content-Length and Transfer-Encoding"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            HttpError::BadFraming("conflicting Content-Length values"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n",
            HttpError::BadFraming("conflicting Content-Length values"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            HttpError::BadFraming("invalid Content-Length"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n",
            HttpError::BadFraming("invalid Content-Length"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n",
            HttpError::BadFraming("invalid Content-Length"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n",
            HttpError::BadFraming("invalid Content-Length"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            HttpError::BadFraming("chunked is not the final transfer coding"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            HttpError::BadFraming("chunked is not the final transfer coding"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,\r\n\r\n",
            HttpError::BadFraming("chunked is not the final transfer coding"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            HttpError::BadFraming("chunked applied more than once"),
            400,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            HttpError::BadFraming("Transfer-Encoding in an HTTP/1.0 request"),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HttpError::UnsupportedTransferCoding,
            501,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            HttpError::UnsupportedTransferCoding,
            501,
        ),
        (long_cl.as_bytes(), HttpError::BodyTooLarge, 413),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            HttpError::BodyTooLarge,
            413,
        ),
        (many.as_bytes(), HttpError::HeadTooLarge, 431),
    ];
    for (buf, expected, status) in table {
        let got = error(buf);
        assert_eq!(got, *expected, "{:?}", show(buf));
        assert_eq!(got.status(), *status, "{:?}", show(buf));
    }
}

#[test]
fn accepted_framing() {
    let table: &[(&[u8], BodyKind)] = &[
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", BodyKind::None),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", BodyKind::Length(0)),
        (b"POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 007\r\n\r\n", BodyKind::Length(7)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", BodyKind::Length(5)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 , 5\r\n\r\n", BodyKind::Length(5)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n", BodyKind::Length(1048576)),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n", BodyKind::Chunked),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked,\r\n\r\n", BodyKind::Chunked),
        (b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n", BodyKind::Length(3)),
    ];
    for (buf, kind) in table {
        assert_eq!(complete(buf).0.body_kind(), *kind, "{:?}", show(buf));
    }
}

#[test]
fn limits_apply_to_partial_input() {
    let limits = Limits { max_head: 200, max_uri: 50, max_body: 10 };
    let run = |buf: &[u8]| parse_head(buf, &limits).map(|s| matches!(s, Status::Partial));
    let target = "/".repeat(50);
    // A target of exactly max_uri is fine; one byte more is refused before the line ends.
    assert_eq!(run(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()), Ok(false));
    assert_eq!(run(format!("GET {target}/").as_bytes()), Err(HttpError::UriTooLong));
    assert_eq!(run(format!("GET {target}/ HTTP/1.1\r\n").as_bytes()), Err(HttpError::UriTooLong));
    // A request line that never ends: refused at max_uri + slack even with a short target.
    let method = "M".repeat(50 + REQUEST_LINE_SLACK - 1);
    assert_eq!(run(method.as_bytes()), Ok(true));
    assert_eq!(run(format!("{method}M").as_bytes()), Err(HttpError::UriTooLong));
    // A head that keeps growing is refused as soon as it reaches max_head unfinished.
    let mut head = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    head.resize(199, b'v');
    assert_eq!(run(&head), Ok(true));
    head.push(b'v');
    assert_eq!(run(&head), Err(HttpError::HeadTooLarge));
    // Empty lines before the request line count against the head limit too.
    assert_eq!(run(&b"\r\n".repeat(99)), Ok(true));
    assert_eq!(run(&b"\r\n".repeat(100)), Err(HttpError::HeadTooLarge));
    // A complete head that is over the limit as a whole is refused.
    let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    big.resize(199, b'v');
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(run(&big), Err(HttpError::HeadTooLarge));
    // ...and one exactly at it is accepted.
    let mut exact = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    exact.resize(196, b'v');
    exact.extend_from_slice(b"\r\n\r\n");
    assert_eq!(run(&exact), Ok(false));
}

#[test]
fn headers_are_case_insensitive() {
    let (req, _) = complete(
        b"GET / HTTP/1.1\r\nHOST: h\r\nX-Thing:  spaced value \t\r\nx-thing: second\r\n\
          X-Bin: \xff\r\n\r\n",
    );
    assert_eq!(req.header("host"), Some(&b"h"[..]));
    assert_eq!(req.header("x-THING"), Some(&b"spaced value"[..]));
    assert_eq!(req.header_str("X-Thing"), Some("spaced value"));
    assert_eq!(req.header("X-Bin"), Some(&b"\xff"[..]));
    assert_eq!(req.header_str("X-Bin"), None);
    assert_eq!(req.header("Missing"), None);
    let all: Vec<(&str, &[u8])> = req.headers().collect();
    assert_eq!(
        all,
        vec![
            ("HOST", &b"h"[..]),
            ("X-Thing", &b"spaced value"[..]),
            ("x-thing", &b"second"[..]),
            ("X-Bin", &b"\xff"[..]),
        ]
    );
}

#[test]
fn keep_alive_rules() {
    let table: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\nconnection: x, KEEP-ALIVE\r\n\r\n", true),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false),
    ];
    for (buf, keep) in table {
        assert_eq!(complete(buf).0.keep_alive(), *keep, "{:?}", show(buf));
    }
}

#[test]
fn expect_and_upgrade() {
    let (req, _) = complete(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n");
    assert!(req.expects_continue());
    let (req, _) = complete(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
    assert!(!req.expects_continue());
    let (req, _) = complete(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n");
    assert!(!req.expects_continue());

    let ws = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\
               Upgrade: h2c, WebSocket\r\n\r\n";
    let (req, _) = complete(ws);
    assert!(req.wants_upgrade("websocket"));
    assert!(!req.wants_upgrade("h2"));
    let (req, _) = complete(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket/13\r\n\r\n");
    assert!(req.wants_upgrade("websocket"));
    let (req, _) = complete(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n");
    assert!(!req.wants_upgrade("websocket"), "needs Connection: upgrade");
    let (req, _) = complete(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert!(!req.wants_upgrade("websocket"), "ignored for HTTP/1.0");
}

#[test]
fn query_param_decoding() {
    let (req, _) = complete(b"GET /s?topic=a%2Fb&cb=my+fn&empty=&topic=second&n%61me=v HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(req.query_param("topic").as_deref(), Some("a/b"));
    assert_eq!(req.query_param("cb").as_deref(), Some("my fn"));
    assert_eq!(req.query_param("empty").as_deref(), Some(""));
    assert_eq!(req.query_param("name").as_deref(), Some("v"));
    assert_eq!(req.query_param("missing"), None);
    let (req, _) = complete(b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(req.query_param("topic"), None);
}

#[test]
fn request_stays_small() {
    assert!(std::mem::size_of::<Request>() <= 128, "{}", std::mem::size_of::<Request>());
}

#[test]
fn unsupported_version_waits_for_the_line() {
    for partial in [&b"GET / HTTP/2"[..], b"GET / HTTP/2.0", b"GET / HTTP/2.0\r"] {
        assert!(matches!(parse(partial), Ok(Status::Partial)), "{:?}", show(partial));
    }
    assert_eq!(error(b"GET / HTTP/2.0\r\n"), HttpError::VersionNotSupported);
    assert_eq!(error(b"GET / HTTP/2.0x"), HttpError::Malformed("invalid HTTP version"));
}

#[test]
fn chunked_body_then_pipelined_request() {
    use crate::http::BodyDecoder;

    let mut buf = b"POST /pub/t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
                    4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nChecksum: 1\r\n\r\n\
                    GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
        .to_vec();
    let (req, used) = complete(&buf);
    assert_eq!(req.body_kind(), BodyKind::Chunked);
    buf.drain(..used);
    let mut decoder = BodyDecoder::new(req.body_kind());
    let mut body = Vec::new();
    // One byte more per call, as a slow socket would deliver it.
    let mut available = 0;
    loop {
        available += 1;
        let (n, done) = match decoder.decode(&buf[..available], &mut body, 1024) {
            Ok(progress) => progress,
            Err(e) => panic!("{e}"),
        };
        buf.drain(..n);
        available -= n;
        if done {
            break;
        }
    }
    assert_eq!(body, b"wikipedia");
    let (next, used) = complete(&buf);
    assert_eq!((next.path(), used), ("/next", buf.len()));
}
