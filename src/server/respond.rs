//! Queueing responses: the head (status, `Date`, CORS, framing, keep-alive), the body as
//! shared slices, and the connection's next state (`answered`: idle for keep-alive, or
//! closing). Every refusal goes through `refuse` with an `http::Reject`; a request that broke
//! the protocol goes through `fail`, which closes after the answer.

use bytes::Bytes;

use super::conn::ReplyMeta;
use super::event_loop::{Worker, CLOSE_WRITE_TIMEOUT};
use crate::http::{self, Framing, Reject, Version};

impl Worker {
    pub(super) fn respond(
        &mut self,
        key: usize,
        meta: ReplyMeta,
        status: u16,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) {
        let len = body.len();
        self.respond_parts(key, meta, status, content_type, headers, std::iter::once(body), len);
    }

    /// Answers a request with a refusal: its status, headers, and the reason as a one-line
    /// body. The connection stays open when the request allows it: the request was read whole,
    /// so the next one can follow.
    pub(super) fn refuse(&mut self, key: usize, meta: ReplyMeta, reject: Reject) {
        let body = Bytes::from(format!("{}\n", reject.reason));
        let headers = reject.header_pairs();
        self.respond(key, meta, reject.status, "text/plain; charset=utf-8", &headers, body);
    }

    /// Queues a response whose body is `parts`, `len` bytes in all, then moves the connection
    /// to its next phase.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond_parts(
        &mut self,
        key: usize,
        meta: ReplyMeta,
        status: u16,
        content_type: &str,
        headers: &[(&str, &str)],
        parts: impl Iterator<Item = Bytes>,
        len: usize,
    ) {
        let head = self.response_head(meta, status, content_type, headers, len);
        self.queue_response(key, meta, head, parts);
    }

    /// The response head: status line, `Date`, the given headers, CORS, framing, keep-alive.
    pub(super) fn response_head(
        &self,
        meta: ReplyMeta,
        status: u16,
        content_type: &str,
        headers: &[(&str, &str)],
        len: usize,
    ) -> Bytes {
        let keep_alive = meta.keep_alive && self.shutdown_deadline.is_none();
        let origin = self.cors_value(meta.cors);
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 3);
        if !content_type.is_empty() {
            all.push(("Content-Type", content_type));
        }
        all.extend_from_slice(headers);
        if let Some(origin) = origin {
            all.push(("Access-Control-Allow-Origin", origin));
            if origin != "*" {
                all.push(("Vary", "Origin"));
            }
        }
        let framing = if status == 204 { Framing::None } else { Framing::Length(len) };
        let mut head = Vec::with_capacity(256);
        http::write_head(&mut head, status, meta.version, self.date.value(), &all, framing, keep_alive);
        Bytes::from(head)
    }

    /// Queues a response (head, then the body unless the request was HEAD) and moves the
    /// connection on: back to reading the next request, or to closing.
    pub(super) fn queue_response(
        &mut self,
        key: usize,
        meta: ReplyMeta,
        head: Bytes,
        body: impl Iterator<Item = Bytes>,
    ) {
        let keep_alive = meta.keep_alive && self.shutdown_deadline.is_none();
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.out.push(head);
        if !meta.head_only {
            for part in body {
                conn.out.push(part);
            }
        }
        conn.state.answered(keep_alive);
        if keep_alive {
            let timeout = if conn.buffered() > 0 {
                self.shared.config.timeouts.header
            } else {
                self.shared.config.timeouts.keepalive
            };
            self.set_timer(key, timeout);
        } else {
            self.set_timer(key, CLOSE_WRITE_TIMEOUT);
        }
    }

    /// Answers a request that broke the protocol (its framing can no longer be trusted): the
    /// refusal, then close.
    pub(super) fn fail(&mut self, key: usize, reject: Reject, version: Version) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if let Some(buf) = conn.inbuf.take() {
            self.pool.give(buf);
        }
        let mut out = Vec::with_capacity(128 + reject.reason.len());
        let headers = reject.header_pairs();
        http::error_response(&mut out, reject.status, &reject.reason, version, self.date.value(), &headers, false);
        conn.out.push(Bytes::from(out));
        conn.state.close_after_write();
        self.set_timer(key, CLOSE_WRITE_TIMEOUT);
    }
}
