//! `http::parse_head` on arbitrary bytes, with limits from the first input byte.
//!
//! Input: `[limits knob] [bytes as they arrive on a connection]`. Knob bits 0-1 pick `max_head`,
//! 2-3 `max_uri`, 4-5 `max_body` (0 is the server's defaults).
//!
//! Beyond "no panic": a complete head used no more than the input and the limits; the head
//! alone parses to the same request; every strict prefix of it is `Partial`, never an error (a
//! request that arrives in two reads must not be refused); `Partial` only under `max_head`;
//! every error maps to one of the statuses the parser documents; the body decoder chosen from
//! the head never claims more than it was given.
#![no_main]

use halley::http::{parse_head, BodyDecoder, BodyKind, HttpError, Limits, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ([knob], buf) = halley_fuzz::knobs::<1>(data);
    let pick = |shift: u32, table: [usize; 4]| table[usize::from(knob >> shift) & 3];
    let defaults = Limits::default();
    let limits = Limits {
        max_head: pick(0, [defaults.max_head, 512, 96, 24]),
        max_uri: pick(2, [defaults.max_uri, 128, 16, 1]),
        max_body: pick(4, [defaults.max_body, 256, 8, 0]),
    };

    let (request, used) = match parse_head(buf, &limits) {
        Ok(Status::Complete(done)) => done,
        Ok(Status::Partial) => {
            assert!(buf.len() < limits.max_head, "Partial at {} bytes, max_head {}", buf.len(), limits.max_head);
            return;
        }
        Err(e) => {
            assert!([400, 413, 414, 431, 501, 505].contains(&e.status()), "{e:?}");
            assert!(!e.reason().is_empty());
            if e == HttpError::VersionNotSupported {
                assert!(well_formed_line(buf), "505 for a malformed request line: {:?}", String::from_utf8_lossy(buf));
            }
            return;
        }
    };
    assert!(
        used <= buf.len() && used <= limits.max_head,
        "used {used} of {} (max_head {})",
        buf.len(),
        limits.max_head
    );
    assert!(request.target().len() <= limits.max_uri);
    assert!(!request.method_str().is_empty() && !request.path().is_empty());
    if let BodyKind::Length(n) = request.body_kind() {
        assert!(n <= limits.max_body as u64, "Content-Length {n} over max_body {}", limits.max_body);
    }
    // Every accessor is total.
    let _ = (request.query(), request.query_param("p_event"), request.header("host"), request.header_str("origin"));
    let _ = (
        request.headers().count(),
        request.keep_alive(),
        request.expects_continue(),
        request.wants_upgrade("websocket"),
    );
    let _ = request.header_elements("connection").count();

    // The head alone is the same request.
    let head = &buf[..used];
    match parse_head(head, &limits) {
        Ok(Status::Complete((again, n))) => {
            assert_eq!(n, used);
            assert_eq!(
                (again.method_str(), again.target(), again.body_kind()),
                (request.method_str(), request.target(), request.body_kind())
            );
        }
        other => panic!("the head alone parsed to {other:?}"),
    }
    // A head that is still arriving waits for the rest: a few prefixes, the longest included.
    for cut in [used - 1, used / 2, used / 3, 1] {
        if cut < used {
            let got = parse_head(&buf[..cut], &limits);
            assert!(matches!(got, Ok(Status::Partial)), "prefix of {cut}/{used} bytes: {got:?}");
        }
    }

    // The body after the head, in one piece.
    let body = &buf[used..];
    let mut decoder = BodyDecoder::new(request.body_kind());
    let mut out = Vec::new();
    if let Ok((n, _)) = decoder.decode(body, &mut out, limits.max_body) {
        assert!(n <= body.len() && out.len() <= n && out.len() <= limits.max_body);
    }
});

/// Whether the first request line (after empty lines) is `method SP target SP HTTP/d.d`: the
/// only shape whose version can be "not supported" (505) rather than malformed (400).
fn well_formed_line(buf: &[u8]) -> bool {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let rest = &buf[start..];
    let line = &rest[..rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    matches!(parts.as_slice(), [method, target, version]
        if !method.is_empty() && !target.is_empty() && version.len() == 8 && version.starts_with(b"HTTP/")
            && version[5].is_ascii_digit() && version[6] == b'.' && version[7].is_ascii_digit())
}
