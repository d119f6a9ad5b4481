//! Routing one complete request to its handler, and the answers that need no handler of
//! their own: `/health`, `/ready`, `/stats`, `/metrics`, CORS preflights, 404 and 405. The
//! CORS decision for a request (which origin to reflect, whether it may publish) is made here,
//! once, and so is who may read the node's figures: on the public listener only loopback
//! peers; on the admin listener (`--admin-listen`) anyone, and nothing else is served there.

use std::sync::Arc;

use bytes::Bytes;

use super::conn::{Cors, Phase, ReplyMeta};
use super::core::Core;
use super::delivery;
use super::duplex;
use super::metrics;
use super::publish;
use super::sessions::bayeux as bayeux_session;
use super::sessions::pushlet as pushlet_session;
use super::web;
use crate::auth::{self, Denied, Grant, Policy};
use crate::config::Access;
use crate::http::{Method, Reject, Request};
use crate::log_limit::LogLimit;
use crate::model::{Selector, Since};
use crate::protocol::{self, Route};

/// Answers one complete request: the connection is `Dispatching` until the handler queued
/// its answer, parked it, opened a stream or socket, handed it to the hub or to another
/// worker.
pub(super) fn dispatch(core: &mut Core, key: usize, req: Request, body: Vec<u8>) {
    core.conns.access_begin(key, &req); // a handed-over request is noted here
    let Some(conn) = core.conns.get_mut(key) else { return };
    if matches!(conn.state.phase(), Phase::Idle | Phase::Head) {
        conn.state.dispatch();
    }
    let admin = conn.admin;
    core.conns.note_forwarded(key, &req);
    let meta = ReplyMeta {
        version: req.version(),
        keep_alive: req.keep_alive() && !core.conns.is_shutting_down(),
        head_only: req.method() == Method::Head,
        cors: cors_for(&core.conns.access, &req, false),
    };
    let method = req.method();
    let route = protocol::route(method, req.path());
    if admin && !admin_serves(&route, core.shared.config.network.admin_publish) {
        let reason = format!("not served on the admin listener: {} {}", req.method_str(), req.path());
        return core.conns.refuse(key, meta, Reject::new(404, reason));
    }
    match route {
        Route::Health => {
            core.conns.respond(key, meta, 200, "text/plain; charset=utf-8", &[], Bytes::from_static(b"ok\n"))
        }
        Route::Ready => {
            if core.shared.shutdown.load(std::sync::atomic::Ordering::SeqCst) {
                core.conns.refuse(key, meta, Reject::new(503, "draining: shutting down"));
            } else {
                core.conns.respond(key, meta, 200, "text/plain; charset=utf-8", &[], Bytes::from_static(b"ready\n"));
            }
        }
        Route::Stats | Route::Metrics if !admin && !metrics::may_read(core.conns.peer_ip(key)) => {
            let reason = format!("{} answers loopback peers only; use --admin-listen", req.path());
            core.conns.refuse(key, meta, Reject::forbidden(reason));
        }
        Route::Stats => {
            let stats = super::stats_json(&core.shared);
            let body = serde_json::to_vec(&stats).unwrap_or_default();
            core.conns.respond(key, meta, 200, "application/json", &[], Bytes::from(body));
        }
        Route::Metrics => {
            let body = metrics::render(&core.shared);
            core.conns.respond(key, meta, 200, metrics::CONTENT_TYPE, &[], Bytes::from(body));
        }
        Route::Publish { topic } => publish::publish(core, key, meta, topic, &req, body),
        Route::Subscribe { topics } => delivery::subscribe(core, key, meta, topics, &req),
        Route::WebSocket => match grant_for(core, key, &req).1 {
            Ok(grant) => duplex::upgrade_websocket(core, key, meta, &req, Vec::new(), Since::Now, grant),
            Err(denied) => core.conns.refuse(key, meta, denied.into()),
        },
        Route::Bayeux => bayeux_session::handle(core, key, meta, req, body),
        Route::Pushlet => pushlet_session::handle(core, key, meta, req, body),
        Route::Web => web::serve(core, key, meta, &req),
        Route::Preflight { publish, allow } => preflight(core, key, meta, &req, publish, allow),
        Route::MethodNotAllowed { allow } => {
            let reason = format!("method {} not allowed here; allowed: {allow}", req.method_str());
            core.conns.refuse(key, meta, Reject::new(405, reason).with_header("Allow", allow));
        }
        Route::NotFound => {
            let reason = format!("no such path: {}", req.path());
            core.conns.refuse(key, meta, Reject::new(404, reason));
        }
    }
    // Never a request without its reply. Every handler answers, parks, streams, upgrades or
    // hands the request on; one that did not is a bug (debug builds stop here), and in a
    // release build the client still gets an answer instead of a hung request.
    if core.conns.get(key).is_some_and(|c| c.state.phase() == Phase::Dispatching) {
        debug_assert!(false, "a {method:?} request was left unanswered by its handler");
        static UNANSWERED: LogLimit = LogLimit::new(log::Level::Error, module_path!(), "request left unanswered");
        UNANSWERED.log(format_args!("worker {}: a {method:?} request was left unanswered by its handler", core.id));
        core.conns.refuse(key, meta, Reject::new(500, "internal error: the request was left unanswered"));
    }
}

/// The routes the admin listener serves: the node's figures and probes, and `POST /pub` when
/// `--admin-publish` is on.
fn admin_serves(route: &Route<'_>, admin_publish: bool) -> bool {
    match route {
        Route::Health | Route::Ready | Route::Stats | Route::Metrics => true,
        Route::Publish { .. } => admin_publish,
        _ => false,
    }
}

fn preflight(core: &mut Core, key: usize, meta: ReplyMeta, req: &Request, publish: bool, allow: &'static str) {
    if req.header("origin").is_none() {
        // Not a CORS preflight: a plain OPTIONS asking what the resource allows.
        return core.conns.respond(key, meta, 204, "", &[("Allow", allow)], Bytes::new());
    }
    let cors = cors_for(&core.conns.access, req, publish);
    if cors == Cors::None {
        return core.conns.refuse(key, meta, Reject::forbidden("origin not allowed"));
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
    core.conns.respond(key, ReplyMeta { cors, ..meta }, 204, "", &headers, Bytes::new());
}

/// The CORS decision for a request: which `Access-Control-Allow-Origin` it gets (an index into
/// the configured lists keeps the parked state small), for reading (`--cors-origins`) or for
/// publishing (`--cors-publish-origins`). No `Origin` header, or an origin not listed: none.
/// A same-origin page that is not listed gets none too (it needs none: the browser reads the
/// reply anyway), and may still publish (`may_publish`).
pub(super) fn cors_for(access: &Access, req: &Request, publish: bool) -> Cors {
    let Some(origin) = req.header_str("origin") else { return Cors::None };
    let list = if publish { &access.cors_publish_origins } else { &access.cors_origins };
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
    found
}

/// Whether the page (if any) that sent this request may publish: the one origin policy of every
/// publishing surface (`POST /pub`, WebSocket and raw TCP commands, Bayeux over HTTP, JSONP and
/// WebSocket, Pushlet), checked where each request enters. CORS alone cannot be it: a browser
/// sends a simple request (a `text/plain` POST, a script tag's GET) before it looks at any
/// `Access-Control-Allow-Origin`, so the publish would happen anyway.
///
/// The page's origin is the `Origin` header; a browser leaves it out of a script tag's GET, so
/// without one, `Sec-Fetch-Site` (sent by current browsers) or the `Referer` names where the
/// request came from. Allowed: the same origin, an origin in `--cors-publish-origins`, or no
/// sign of a browser page at all (curl, server-side clients, `Sec-Fetch-Site: none`).
pub(super) fn may_publish(access: &Access, req: &Request) -> bool {
    let allowed = |origin: &str| same_origin(req, origin) || listed(&access.cors_publish_origins, origin);
    if let Some(origin) = req.header_str("origin") {
        return allowed(origin);
    }
    let referer_origin = req.header_str("referer").and_then(origin_of);
    match req.header_str("sec-fetch-site") {
        Some(site) if site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none") => true,
        // Another site's page: only its Referer can name an allowed origin.
        Some(_) => referer_origin.is_some_and(allowed),
        None => referer_origin.is_none_or(allowed),
    }
}

/// The rights of an HTTP request's client: its token (`Authorization: Bearer`, `?token=`, or
/// the auth cookie) under the policy in force, and its peer address (with auth off, only a
/// loopback peer publishes). The policy comes along for the checks.
pub(super) fn grant_for(core: &Core, key: usize, req: &Request) -> (Arc<Policy>, Result<Grant, Denied>) {
    let policy = core.shared.auth.current();
    let token = if policy.is_on() { auth::token::from_request(req, policy.cookie()) } else { None };
    let grant = policy.resolve(token.as_deref(), core.conns.peer_ip(key));
    (policy, grant)
}

/// The grant of a request allowed to read `selectors`, or the refusal (401/403).
pub(super) fn may_read(core: &Core, key: usize, req: &Request, selectors: &[Selector]) -> Result<Grant, Reject> {
    let (policy, grant) = grant_for(core, key, req);
    let grant = grant?;
    policy.may_subscribe(&grant, selectors)?;
    Ok(grant)
}

/// Whether `origin` is in `list` (`"*"` matches any).
fn listed(list: &[String], origin: &str) -> bool {
    list.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
}

/// The origin (`scheme://host[:port]`) of a URL such as a `Referer`.
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + end])
}

/// True when the `Origin` header names the host the request was sent to (`Host`), which a
/// browser only does for pages served by this server.
fn same_origin(req: &Request, origin: &str) -> bool {
    let Some(host) = req.header_str("host") else { return false };
    let without_scheme = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    without_scheme.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, Limits, Status};

    fn request(headers: &str) -> Request {
        let head = format!("GET /sub/a HTTP/1.1\r\nHost: halley.test\r\n{headers}\r\n");
        match parse_head(head.as_bytes(), &Limits::default()) {
            Ok(Status::Complete((req, _))) => req,
            other => panic!("{other:?}"),
        }
    }

    fn lists(read: &[&str], publish: &[&str]) -> Access {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Access {
            cors_origins: list(read),
            cors_publish_origins: list(publish),
            client_publish: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }

    #[test]
    fn a_listed_origin_is_reflected_by_its_index_and_a_star_allows_any() {
        let access = lists(&["https://a.test", "https://b.test"], &["https://b.test"]);
        let from_b = request("Origin: https://B.test\r\n");
        assert_eq!(cors_for(&access, &from_b, false), Cors::Read(1));
        assert_eq!(cors_for(&access, &from_b, true), Cors::Publish(0));
        let from_c = request("Origin: https://c.test\r\n");
        assert_eq!(cors_for(&access, &from_c, false), Cors::None);
        assert_eq!(cors_for(&lists(&["*"], &[]), &from_c, false), Cors::Any);
        assert_eq!(cors_for(&access, &request(""), false), Cors::None, "no Origin, no CORS");
    }

    #[test]
    fn publishing_needs_no_origin_the_same_origin_or_the_allowlist() {
        let access = lists(&["*"], &["https://pub.test"]);
        assert!(may_publish(&access, &request("")));
        assert!(may_publish(&access, &request("Origin: http://halley.test\r\n")));
        assert!(may_publish(&access, &request("Origin: https://pub.test\r\n")));
        assert!(!may_publish(&access, &request("Origin: https://evil.test\r\n")), "reading is not publishing");
        // Without an Origin (a script tag's GET), the fetch metadata and the Referer tell.
        let cross = "Sec-Fetch-Site: cross-site\r\n";
        assert!(!may_publish(&access, &request(cross)), "a cross-site request with no Referer");
        assert!(!may_publish(&access, &request(&format!("{cross}Referer: https://evil.test/page\r\n"))));
        assert!(may_publish(&access, &request(&format!("{cross}Referer: https://pub.test/page?x=1\r\n"))));
        assert!(may_publish(&access, &request("Sec-Fetch-Site: same-origin\r\n")));
        assert!(may_publish(&access, &request("Sec-Fetch-Site: none\r\n")), "typed in the address bar");
        assert!(!may_publish(&access, &request("Referer: https://evil.test/\r\n")), "an older browser");
        assert!(may_publish(&access, &request("Referer: http://halley.test/demo\r\n")));
        // A same-origin page needs no CORS header to read its publish reply.
        assert_eq!(cors_for(&access, &request("Origin: http://halley.test\r\n"), true), Cors::None);
    }
}
