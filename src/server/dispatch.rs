//! Routing one complete request to its handler, and the answers that need no handler of
//! their own: `/health`, `/stats`, CORS preflights, 404 and 405. The CORS decision for a
//! request (which origin to reflect, whether it may publish) is made here, once.

use bytes::Bytes;

use super::conn::{Cors, Phase, ReplyMeta};
use super::event_loop::Worker;
use crate::http::{Method, Reject, Request};
use crate::model::Since;
use crate::protocol::{self, Route};

impl Worker {
    /// Answers one complete request: the connection is `Dispatching` until the handler queued
    /// its answer, parked it, opened a stream or socket, handed it to the hub or to another
    /// worker.
    pub(super) fn dispatch(&mut self, key: usize, req: Request, body: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if matches!(conn.state.phase(), Phase::Idle | Phase::Head) {
            conn.state.dispatch();
        }
        let meta = ReplyMeta {
            version: req.version(),
            keep_alive: req.keep_alive() && !self.conns.is_shutting_down(),
            head_only: req.method() == Method::Head,
            cors: self.cors_for(&req, false),
        };
        match protocol::route(req.method(), req.path()) {
            Route::Health => {
                self.conns.respond(key, meta, 200, "text/plain; charset=utf-8", &[], Bytes::from_static(b"ok\n"))
            }
            Route::Stats => {
                let stats = super::stats_json(&self.shared);
                let body = serde_json::to_vec(&stats).unwrap_or_default();
                self.conns.respond(key, meta, 200, "application/json", &[], Bytes::from(body));
            }
            Route::Publish { topic } => self.publish(key, meta, topic, &req, body),
            Route::Subscribe { topics } => self.subscribe(key, meta, topics, &req),
            Route::WebSocket => self.upgrade_websocket(key, meta, &req, Vec::new(), Since::Now),
            Route::Bayeux => self.bayeux(key, meta, req, body),
            Route::Pushlet => self.pushlet(key, meta, req, body),
            Route::Preflight { publish, allow } => self.preflight(key, meta, &req, publish, allow),
            Route::MethodNotAllowed { allow } => {
                let reason = format!("method {} not allowed here; allowed: {allow}", req.method_str());
                self.conns.refuse(key, meta, Reject::new(405, reason).with_header("Allow", allow));
            }
            Route::NotFound => {
                let reason = format!("no such path: {}", req.path());
                self.conns.refuse(key, meta, Reject::new(404, reason));
            }
        }
        // Never a request without its reply: a handler that found nothing to do (its session
        // vanished under it) still answers.
        if self.conns.get(key).is_some_and(|c| c.state.phase() == Phase::Dispatching) {
            self.conns.refuse(key, meta, Reject::new(500, "internal error: the request was left unanswered"));
        }
    }

    fn preflight(&mut self, key: usize, meta: ReplyMeta, req: &Request, publish: bool, allow: &'static str) {
        if req.header("origin").is_none() {
            // Not a CORS preflight: a plain OPTIONS asking what the resource allows.
            return self.conns.respond(key, meta, 204, "", &[("Allow", allow)], Bytes::new());
        }
        let cors = self.cors_for(req, publish);
        if cors == Cors::None {
            return self.conns.refuse(key, meta, Reject::forbidden("origin not allowed"));
        }
        let methods = if publish { "POST, PUT" } else { "GET, HEAD" };
        let headers = [
            ("Access-Control-Allow-Methods", methods),
            (
                "Access-Control-Allow-Headers",
                "Content-Type, Last-Event-ID, X-Event, X-Cursor, Cache-Control, X-Requested-With",
            ),
            ("Access-Control-Max-Age", "600"),
        ];
        self.conns.respond(key, ReplyMeta { cors, ..meta }, 204, "", &headers, Bytes::new());
    }

    pub(super) fn cors_for(&self, req: &Request, publish: bool) -> Cors {
        let Some(origin) = req.header_str("origin") else { return Cors::None };
        let config = &self.shared.config;
        let list = if publish { &config.access.cors_publish_origins } else { &config.access.cors_origins };
        let mut found = Cors::None;
        for (i, allowed) in list.iter().enumerate() {
            if allowed == "*" {
                return Cors::Any;
            }
            if allowed.eq_ignore_ascii_case(origin) && found == Cors::None {
                let index = u16::try_from(i).unwrap_or(u16::MAX);
                found = if publish { Cors::Publish(index) } else { Cors::Read(index) };
            }
        }
        if found == Cors::None && publish && same_origin(req, origin) {
            // Same-origin pages need no CORS headers; the browser reads the reply anyway.
            return Cors::None;
        }
        found
    }

    pub(super) fn origin_may_publish(&self, req: &Request) -> bool {
        let Some(origin) = req.header_str("origin") else { return true };
        same_origin(req, origin) || self.cors_for(req, true) != Cors::None
    }
}

/// True when the `Origin` header names the host the request was sent to (`Host`), which a
/// browser only does for pages served by this server.
fn same_origin(req: &Request, origin: &str) -> bool {
    let Some(host) = req.header_str("host") else { return false };
    let without_scheme = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    without_scheme.eq_ignore_ascii_case(host)
}
