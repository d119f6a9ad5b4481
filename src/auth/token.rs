//! Where a token comes from in an HTTP request: the `Authorization: Bearer` header, a `token`
//! query parameter (EventSource, JSONP, iframe and script tags cannot set headers), or the
//! configured cookie (lets the original Pushlet clients and any page on the same site
//! authenticate without code changes). The header wins over the query, the query over the
//! cookie. The WebSocket and raw TCP `auth` command, the raw first line and Bayeux's
//! `ext.auth.token` are read by their protocols.

use std::borrow::Cow;

use crate::http::Request;

/// The token a request carries, if any.
pub fn from_request<'r>(req: &'r Request, cookie: &str) -> Option<Cow<'r, str>> {
    if let Some(token) = req.header_str("authorization").and_then(bearer) {
        return Some(Cow::Borrowed(token));
    }
    if let Some(token) = req.query_param("token").filter(|t| !t.is_empty()) {
        return Some(token);
    }
    req.headers()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, value)| std::str::from_utf8(value).ok())
        .find_map(|value| cookie_value(value, cookie))
        .map(Cow::Borrowed)
}

/// The credentials of an `Authorization: Bearer <token>` value (the scheme is case-insensitive,
/// RFC 6750 §2.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of cookie `name` in one `Cookie` header value (`a=1; b="2"`, RFC 6265 §4.2.1).
fn cookie_value<'v>(header: &'v str, name: &str) -> Option<&'v str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        (key.trim() == name && !value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, Limits, Status};

    fn request(target: &str, headers: &str) -> Request {
        let head = format!("GET {target} HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
        match parse_head(head.as_bytes(), &Limits::default()) {
            Ok(Status::Complete((req, _))) => req,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_then_query_then_cookie() {
        let all = request("/sub/a?token=q", "Authorization: bearer  h \r\nCookie: x=1; halley_token=c\r\n");
        assert_eq!(from_request(&all, "halley_token").as_deref(), Some("h"));
        let query = request("/sub/a?x=1&token=q%2Eq", "Cookie: halley_token=c\r\n");
        assert_eq!(from_request(&query, "halley_token").as_deref(), Some("q.q"));
        let cookie = request("/sub/a", "Cookie: a=b\r\nCookie: x=1; halley_token=\"c\"\r\n");
        assert_eq!(from_request(&cookie, "halley_token").as_deref(), Some("c"));
        assert_eq!(from_request(&cookie, "other").as_deref(), None);
        let basic = request("/sub/a", "Authorization: Basic abc\r\n");
        assert_eq!(from_request(&basic, "halley_token"), None, "only Bearer carries a token");
    }
}
