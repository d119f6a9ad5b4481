//! Answering the web's paths (`crate::web`): the embedded pages and halley.js with their safety
//! and caching headers, the server-rendered `/latest` page read from the store, and the
//! dashboard's lease on the stats feed, and (`--demo` only) the demo's token endpoint. With the web turned off (`--no-web`) every one of these
//! paths is a 404, as if it did not exist.

use std::sync::Arc;

use bytes::Bytes;

use super::conn::{Cors, ReplyMeta};
use super::core::Core;
use super::feeds;
use crate::http::{Method, Reject, Request};
use crate::model::{validate_topic, Message, Selector};
use crate::web::{self, latest, Asset, Kind};

const ALLOW: &str = "GET, HEAD, OPTIONS";

/// Headers every answer of the web carries besides its own.
const NOSNIFF: (&str, &str) = ("X-Content-Type-Options", "nosniff");

/// Answers one request for a web path.
pub(super) fn serve(core: &mut Core, key: usize, meta: ReplyMeta, req: &Request) {
    if !core.shared.config.web.enabled {
        let reason = format!("no such path: {} (the web pages are turned off: --no-web)", req.path());
        return core.conns.refuse(key, meta, Reject::new(404, reason));
    }
    match req.method() {
        Method::Get | Method::Head => {}
        Method::Options => return core.conns.respond(key, meta, 204, "", &[("Allow", ALLOW)], Bytes::new()),
        _ => {
            let reason = format!("method {} not allowed here; allowed: {ALLOW}", req.method_str());
            return core.conns.refuse(key, meta, Reject::new(405, reason).with_header("Allow", ALLOW));
        }
    }
    match req.path() {
        web::LATEST_PATH => latest_page(core, key, meta, req),
        web::DEMO_TOKEN_PATH => demo_token(core, key, meta, req),
        web::WATCH_PATH => {
            feeds::want_stats(&core.shared);
            let headers = [("Cache-Control", "no-store"), NOSNIFF];
            core.conns.respond(key, ReplyMeta { cors: Cors::None, ..meta }, 204, "", &headers, Bytes::new());
        }
        path => match web::lookup(path) {
            Some(asset) => file(core, key, meta, req, asset),
            None => core.conns.refuse(key, meta, Reject::new(404, format!("no such path: {path}"))),
        },
    }
}

/// An embedded file: `304` when the browser's copy is current, else the file.
fn file(core: &mut Core, key: usize, meta: ReplyMeta, req: &Request, asset: &'static Asset) {
    // Only the library is meant for other origins (an ES module is fetched in CORS mode); a
    // page or its parts are not, so they never say `Access-Control-Allow-Origin`.
    let meta = if asset.kind == Kind::Library { meta } else { ReplyMeta { cors: Cors::None, ..meta } };
    let etag = asset.etag();
    let mut headers = vec![("Cache-Control", asset.cache_control()), ("ETag", etag.as_str()), NOSNIFF];
    if asset.kind == Kind::Page {
        headers.extend([("Content-Security-Policy", web::PAGE_CSP), ("Referrer-Policy", "no-referrer")]);
    }
    let current = req.header_str("if-none-match").is_some_and(|tags| web::etag_matches(tags, &etag));
    if current {
        // The same headers a 200 would have had, and no body (RFC 9110 §15.4.5).
        let head = core.conns.response_head(meta, 304, "", &headers, asset.body.len());
        return core.conns.queue_response(key, meta, head, std::iter::empty());
    }
    core.conns.respond(key, meta, 200, asset.content_type, &headers, Bytes::from_static(asset.body));
}

/// DEMO ONLY: `/demo/token?merchant=NAME` -> `{"token":..,"topic":"/orders/NAME","expires":ms}`, a
/// token from the configured secret that may read that one topic for `DEMO_TOKEN_TTL_SECS`.
/// Anyone who reaches the port gets one for any merchant, which is why it exists only with
/// `--demo`: a real application mints its tokens in its own backend, after its own login.
fn demo_token(core: &mut Core, key: usize, meta: ReplyMeta, req: &Request) {
    let meta = ReplyMeta { cors: Cors::None, ..meta };
    if !core.shared.config.web.demo {
        let reason = format!("no such path: {} (the demo token endpoint exists only with --demo)", req.path());
        return core.conns.refuse(key, meta, Reject::new(404, reason));
    }
    let policy = core.shared.auth.current();
    let Some(secret) = policy.secret() else {
        let reason = "no auth secret is configured (--auth-secret): the demo pages need no token";
        return core.conns.refuse(key, meta, Reject::new(404, reason.to_owned()));
    };
    let merchant = req.query_param("merchant").unwrap_or_default();
    let valid = (1..=40).contains(&merchant.len())
        && merchant.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        let reason = "merchant must be 1 to 40 of a-z, 0-9, '-' and '_'";
        return core.conns.refuse(key, meta, Reject::bad_request(reason.to_owned()));
    }
    let topic = format!("/orders/{merchant}");
    let exp = crate::auth::now_ms() / 1000 + web::DEMO_TOKEN_TTL_SECS;
    let claims = crate::auth::Claims {
        exp,
        sub: Some(format!("demo merchant {merchant}")),
        publish: Vec::new(),
        subscribe: vec![topic.clone()],
    };
    let token = match crate::auth::mint_hs256(secret, &claims) {
        Ok(token) => token,
        Err(reason) => return core.conns.refuse(key, meta, Reject::new(500, reason)),
    };
    let body = serde_json::json!({ "token": token, "topic": topic, "expires": exp * 1000 }).to_string();
    let headers = [("Cache-Control", "no-store"), NOSNIFF];
    core.conns.respond(key, meta, 200, "application/json", &headers, Bytes::from(body));
}

/// `/latest?topic=..`: the newest messages of one topic, rendered as HTML that reloads itself.
fn latest_page(core: &mut Core, key: usize, meta: ReplyMeta, req: &Request) {
    let meta = ReplyMeta { cors: Cors::None, ..meta };
    let asked = req.query_param("topic").map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    let html = match asked {
        None => latest::render(&latest::Body::Form),
        Some(asked) => {
            let topic = if asked.starts_with('/') { asked } else { format!("/{asked}") };
            if let Err(bad) = validate_topic(&topic) {
                let reason = format!("invalid topic for /latest: {}", bad.reason());
                return core.conns.refuse(key, meta, Reject::bad_request(reason));
            }
            // The same rights as any other read of the topic (a token in the query or the
            // cookie, or the public patterns when auth is on).
            let Ok(selector) = Selector::parse(&topic) else {
                return core.conns.refuse(key, meta, Reject::bad_request("invalid topic for /latest"));
            };
            if let Err(refused) = super::dispatch::may_read(core, key, req, &[selector]) {
                return core.conns.refuse(key, meta, refused);
            }
            match newest(core, &topic) {
                Some(messages) => {
                    let epoch = core.shared.store.epoch();
                    latest::render(&latest::Body::Messages { topic: &topic, epoch, messages: &messages })
                }
                None => latest::render(&latest::Body::Loading { topic: &topic }),
            }
        }
    };
    let headers = [("Cache-Control", "no-store"), ("Content-Security-Policy", web::PAGE_CSP), NOSNIFF];
    core.conns.respond(key, meta, 200, "text/html; charset=utf-8", &headers, Bytes::from(html));
}

/// The newest `latest::SHOWN` messages of `topic`, oldest first, or `None` while the store is
/// fetching its history (a pending read). Reads the topic's history in `--max-batch` steps, so
/// the work is bounded by the per-topic history bound (`--history-messages`), and never holds
/// more than one batch plus the ones kept.
fn newest(core: &mut Core, topic: &str) -> Option<Vec<Arc<Message>>> {
    let store = Arc::clone(&core.shared.store);
    let selectors = Selector::parse(topic).ok().map(|s| vec![s])?;
    let batch = core.shared.config.longpoll.max_batch;
    let rounds = core.shared.config.history.max_messages / batch.max(1) + 2;
    let mut kept: Vec<Arc<Message>> = Vec::with_capacity(latest::SHOWN);
    let mut batch_msgs = Vec::with_capacity(batch);
    let mut after = 0;
    for _ in 0..rounds {
        batch_msgs.clear();
        let read = store.read(&selectors, after, batch, &mut batch_msgs);
        if read.pending {
            return None;
        }
        after = read.next_cursor(after, &batch_msgs);
        kept.append(&mut batch_msgs);
        let excess = kept.len().saturating_sub(latest::SHOWN);
        kept.drain(..excess);
        if !read.truncated {
            break;
        }
    }
    Some(kept)
}
