//! One way to refuse a request: [`Reject`], a status with a one-line reason and the headers the
//! refusal needs (`Allow`, `Retry-After`, `Sec-WebSocket-Version`...).
//!
//! Every layer keeps its own small error type (the HTTP parser's [`HttpError`], the native
//! protocol's `BadRequest`, Bayeux's and Pushlet's errors, the WebSocket handshake's), and each
//! converts into a `Reject` with `From`, so the server answers all of them through one path and
//! a refusal always has the same shape on the wire: the status, then `reason` plus a newline as a
//! `text/plain` body.

use std::borrow::Cow;

use super::HttpError;

/// A refusal: what the client is told, and nothing about how the server got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    /// One line, safe to send to the client (never echoes a credential).
    pub reason: Cow<'static, str>,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
}

impl Reject {
    pub fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Reject {
        Reject { status, reason: reason.into(), headers: Vec::new() }
    }

    /// 400: the request is well-formed HTTP but its content is not acceptable.
    pub fn bad_request(reason: impl Into<Cow<'static, str>>) -> Reject {
        Reject::new(400, reason)
    }

    /// 403: the request is understood and refused (an origin that may not publish, say).
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Reject {
        Reject::new(403, reason)
    }

    /// 503 with `Retry-After`: a bound was reached; the same request may succeed later.
    pub fn busy(reason: impl Into<Cow<'static, str>>, retry_after_secs: u32) -> Reject {
        Reject::new(503, reason).with_header("Retry-After", retry_after_secs.to_string())
    }

    /// Adds a header to the refusal.
    pub fn with_header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Reject {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds headers given as borrowed pairs (copied: a refusal is never on a hot path).
    pub fn with_headers(mut self, headers: &[(&'static str, &str)]) -> Reject {
        self.headers.extend(headers.iter().map(|&(name, value)| (name, Cow::Owned(value.to_owned()))));
        self
    }

    /// The headers as borrowed pairs, for writing a response head.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(name, value)| (*name, value.as_ref())).collect()
    }
}

impl From<HttpError> for Reject {
    fn from(e: HttpError) -> Reject {
        Reject::new(e.status(), e.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_status_reason_and_headers() {
        let reject = Reject::busy("queue full", 1).with_header("X-A", "b");
        assert_eq!(reject.status, 503);
        assert_eq!(reject.reason, "queue full");
        assert_eq!(reject.header_pairs(), vec![("Retry-After", "1"), ("X-A", "b")]);
    }

    #[test]
    fn http_errors_keep_their_status_and_reason() {
        for e in [HttpError::HeadTooLarge, HttpError::Malformed("bad request line"), HttpError::BodyTooLarge] {
            let reject = Reject::from(e);
            assert_eq!((reject.status, reject.reason.as_ref()), (e.status(), e.reason()));
        }
    }
}
