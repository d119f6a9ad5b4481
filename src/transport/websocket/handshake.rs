//! The WebSocket opening handshake (RFC 6455 §4): checking a client's upgrade request, computing
//! `Sec-WebSocket-Accept`, and writing the 101 response.

use std::fmt;

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::http::{Method, Request, Version};

/// The GUID a server appends to the client's key before hashing it (§1.3, §4.2.2).
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Most subprotocols a client may offer in `Sec-WebSocket-Protocol`, over all its lines.
pub const MAX_PROTOCOLS: usize = 16;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key` (§4.2.2 step 5.4):
/// base64 of the SHA-1 of the key (as sent, trimmed) followed by [`WEBSOCKET_GUID`].
pub fn accept_key(client_key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(client_key.as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// Checks that `req` is a valid WebSocket opening handshake (§4.2.1) and returns what the 101
/// needs. The route (which path may upgrade) and any `Origin` policy are the caller's.
pub fn check_upgrade(req: &Request) -> Result<Handshake, HandshakeError> {
    if req.method() != Method::Get {
        return Err(HandshakeError::NotGet);
    }
    if req.version() != Version::Http11 {
        return Err(HandshakeError::NotHttp11);
    }
    if !req.header_elements("connection").any(|t| t.eq_ignore_ascii_case(b"upgrade")) {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    if !req.header_elements("upgrade").any(|t| t.eq_ignore_ascii_case(b"websocket")) {
        return Err(HandshakeError::NotWebSocket);
    }
    // §4.4: any version but 13, or none, gets 426 naming the one we speak.
    if req.header("sec-websocket-version") != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = single_header(req, "sec-websocket-key")?.ok_or(HandshakeError::MissingKey)?;
    let key_ok = base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|nonce| nonce.len() == 16);
    let key = std::str::from_utf8(key).ok().filter(|_| key_ok).ok_or(HandshakeError::BadKey)?;

    let mut protocols = Vec::new();
    for protocol in req.header_elements("sec-websocket-protocol") {
        if protocols.len() == MAX_PROTOCOLS {
            return Err(HandshakeError::TooManyProtocols);
        }
        let protocol =
            std::str::from_utf8(protocol).ok().filter(|p| is_token(p.as_bytes())).ok_or(HandshakeError::BadProtocol)?;
        protocols.push(protocol.to_owned());
    }
    Ok(Handshake { accept: accept_key(key), protocols })
}

/// Appends the 101 response that completes the handshake (§4.2.2 step 5). `accept` is
/// [`Handshake::accept`]; `protocol`, if any, must be one the client offered (§4.2.2 step
/// 5.5.4) and is written only if it is a valid token, so it can never inject a header.
pub fn write_handshake_response(out: &mut Vec<u8>, accept: &str, protocol: Option<&str>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol.filter(|p| is_token(p.as_bytes())) {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A valid opening handshake: what the 101 response needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The subprotocols the client offered, in its order of preference (§4.1); each a token.
    pub protocols: Vec<String>,
}

impl Handshake {
    /// The first subprotocol the client offered that is in `supported`, for
    /// [`write_handshake_response`]. `None` means the 101 names no subprotocol.
    pub fn select_protocol<'s>(&self, supported: &[&'s str]) -> Option<&'s str> {
        self.protocols.iter().find_map(|offered| supported.iter().copied().find(|s| *s == offered))
    }
}

/// Why an upgrade request was refused; the caller answers with `status()`, `reason()` as the
/// body, and `headers()`, then closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The handshake must be a GET (§4.1): 400.
    NotGet,
    /// The handshake must be HTTP/1.1 or later (§4.1): 400.
    NotHttp11,
    /// `Connection` lacks the `upgrade` option (§4.2.1 item 4): 400.
    NoConnectionUpgrade,
    /// `Upgrade` does not list `websocket` (§4.2.1 item 3): 400.
    NotWebSocket,
    /// `Sec-WebSocket-Version` is missing or not 13 (§4.4): 426 with `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key` (§4.2.1 item 5): 400.
    MissingKey,
    /// `Sec-WebSocket-Key` repeated, or not the base64 of 16 bytes (§4.1): 400.
    BadKey,
    /// A `Sec-WebSocket-Protocol` element that is not a token (§4.1): 400.
    BadProtocol,
    /// More than [`MAX_PROTOCOLS`] subprotocols offered: 400.
    TooManyProtocols,
}

impl From<HandshakeError> for crate::http::Reject {
    fn from(e: HandshakeError) -> crate::http::Reject {
        crate::http::Reject::new(e.status(), e.reason()).with_headers(e.headers())
    }
}

impl HandshakeError {
    /// The response status code.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// One line for the response body and the log.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::NotGet => "a WebSocket handshake must be a GET request",
            HandshakeError::NotHttp11 => "a WebSocket handshake must use HTTP/1.1",
            HandshakeError::NoConnectionUpgrade => "a WebSocket handshake needs Connection: Upgrade",
            HandshakeError::NotWebSocket => "a WebSocket handshake needs Upgrade: websocket",
            HandshakeError::UnsupportedVersion => "unsupported WebSocket version: only version 13 is supported",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::BadKey => "Sec-WebSocket-Key must be one base64-encoded 16-byte value",
            HandshakeError::BadProtocol => "invalid Sec-WebSocket-Protocol",
            HandshakeError::TooManyProtocols => "too many WebSocket subprotocols offered",
        }
    }

    /// Extra response headers: a 426 names the version we speak (§4.4) and, as every 426 must,
    /// the protocol to upgrade to (RFC 9110 §15.5.22).
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")],
            _ => &[],
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HandshakeError {}

/// The value of a header that must appear at most once.
fn single_header<'r>(req: &'r Request, name: &str) -> Result<Option<&'r [u8]>, HandshakeError> {
    let mut values = req.headers().filter(|(field, _)| field.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        (Some(_), Some(_)) | (None, Some(_)) => Err(HandshakeError::BadKey),
    }
}

/// RFC 9110 §5.6.2: `token = 1*tchar`.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| crate::http::is_tchar(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, Limits, Status};

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(head: &str) -> Request {
        match parse_head(head.as_bytes(), &Limits::default()) {
            Ok(Status::Complete((req, _))) => req,
            other => panic!("test request did not parse: {other:?}"),
        }
    }

    /// A valid handshake with `extra` header lines (each ending in CRLF) added.
    fn upgrade(extra: &str) -> Request {
        request(&format!(
            "GET /sub/chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ))
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn accepts_the_rfc_handshake() {
        let req = request(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        let hs = check_upgrade(&req).expect("valid handshake");
        assert_eq!(hs.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(hs.protocols, ["chat", "superchat"]);
        assert_eq!(hs.select_protocol(&["superchat", "chat"]), Some("chat"));
        assert_eq!(hs.select_protocol(&["superchat"]), Some("superchat"));
        assert_eq!(hs.select_protocol(&["other"]), None);
    }

    #[test]
    fn token_lists_are_case_insensitive_and_may_span_lines() {
        let req = request(&format!(
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, UPGRADE\r\nUpgrade: h2c, WebSocket\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a,, b\r\n\
             Sec-WebSocket-Protocol: c\r\n\r\n"
        ));
        assert_eq!(check_upgrade(&req).expect("valid").protocols, ["a", "b", "c"]);
        assert!(check_upgrade(&upgrade("")).expect("valid").protocols.is_empty());
    }

    #[test]
    fn refusals() {
        let base = |method: &str, version: &str, headers: &str| {
            request(&format!("{method} / HTTP/{version}\r\nHost: h\r\n{headers}\r\n"))
        };
        let good = format!("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n");
        let cases: Vec<(&str, Request, HandshakeError)> = vec![
            ("post", base("POST", "1.1", &format!("{good}Sec-WebSocket-Version: 13\r\n")), HandshakeError::NotGet),
            ("1.0", base("GET", "1.0", &format!("{good}Sec-WebSocket-Version: 13\r\n")), HandshakeError::NotHttp11),
            (
                "no connection",
                base("GET", "1.1", &format!("Upgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\n")),
                HandshakeError::NoConnectionUpgrade,
            ),
            (
                "connection keep-alive only",
                base("GET", "1.1", "Connection: keep-alive\r\nUpgrade: websocket\r\n"),
                HandshakeError::NoConnectionUpgrade,
            ),
            (
                "upgrade h2c",
                base("GET", "1.1", "Connection: upgrade\r\nUpgrade: h2c\r\n"),
                HandshakeError::NotWebSocket,
            ),
            ("no version", base("GET", "1.1", &good), HandshakeError::UnsupportedVersion),
            ("version 8", upgrade_with_version("8"), HandshakeError::UnsupportedVersion),
            ("version list", upgrade_with_version("13, 8"), HandshakeError::UnsupportedVersion),
            (
                "no key",
                base("GET", "1.1", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"),
                HandshakeError::MissingKey,
            ),
            ("two keys", upgrade(&format!("Sec-WebSocket-Key: {KEY}\r\n")), HandshakeError::BadKey),
            ("bad protocol", upgrade("Sec-WebSocket-Protocol: a b\r\n"), HandshakeError::BadProtocol),
            ("protocol with slash", upgrade("Sec-WebSocket-Protocol: a/b\r\n"), HandshakeError::BadProtocol),
        ];
        for (name, req, want) in cases {
            assert_eq!(check_upgrade(&req), Err(want), "{name}");
        }
        for key in ["", "abc", "dGhlIHNhbXBsZSBub25j", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZXMh", "!!!!"] {
            let req = request(&format!(
                "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            ));
            assert_eq!(check_upgrade(&req), Err(HandshakeError::BadKey), "key {key:?}");
        }
        let many = (0..=MAX_PROTOCOLS).map(|i| format!("p{i}")).collect::<Vec<_>>().join(", ");
        let req = upgrade(&format!("Sec-WebSocket-Protocol: {many}\r\n"));
        assert_eq!(check_upgrade(&req), Err(HandshakeError::TooManyProtocols));
    }

    fn upgrade_with_version(version: &str) -> Request {
        request(&format!(
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        ))
    }

    #[test]
    fn error_statuses_reasons_and_headers() {
        let e = HandshakeError::UnsupportedVersion;
        assert_eq!(e.status(), 426);
        assert!(e.headers().contains(&("Sec-WebSocket-Version", "13")));
        assert_eq!(HandshakeError::BadKey.status(), 400);
        assert!(HandshakeError::BadKey.headers().is_empty());
        assert_eq!(HandshakeError::MissingKey.to_string(), "missing Sec-WebSocket-Key (400)");
        for e in [HandshakeError::NotGet, HandshakeError::NotWebSocket, HandshakeError::TooManyProtocols] {
            assert!(!e.reason().is_empty() && !e.reason().contains('\n'));
        }
    }

    #[test]
    fn writes_the_101() {
        let mut out = Vec::new();
        write_handshake_response(&mut out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Some("chat"));
        assert_eq!(
            String::from_utf8(out).expect("ASCII"),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        );
        let mut out = Vec::new();
        write_handshake_response(&mut out, "abc=", Some("evil\r\nSet-Cookie: x"));
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: abc=\r\n\r\n"
        );
    }
}
