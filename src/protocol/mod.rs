//! Wire surfaces: which protocol a request speaks, decided from its method and path.
//!
//! Protocols decide *what* a subscriber gets; transports (`crate::transport`) decide how the
//! bytes travel. One module per surface, each sans-I/O (requests in, decisions and bytes out):
//! `native` (`/pub`, `/sub`), `commands` (the JSON commands of WebSocket and raw TCP),
//! `pushlet` (`/pushlet.srv`) and `bayeux` (`/cometd`). The worker drives them.

pub mod bayeux;
pub mod commands;
pub mod native;
pub mod pushlet;

use serde::de::{self, Deserialize, SeqAccess};

use crate::http::Method;

/// Reads a JSON array element by element and refuses it as soon as it holds more than `max`
/// elements, so a hostile list never costs more than the bound (for serde `visit_seq`).
pub(crate) fn bounded_seq<'de, A, T>(
    mut seq: A,
    max: usize,
    too_many: impl FnOnce() -> String,
) -> Result<Vec<T>, A::Error>
where
    A: SeqAccess<'de>,
    T: Deserialize<'de>,
{
    let mut items = Vec::new();
    while let Some(item) = seq.next_element()? {
        if items.len() == max {
            return Err(de::Error::custom(too_many()));
        }
        items.push(item);
    }
    Ok(items)
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /health`.
    Health,
    /// `GET /stats`.
    Stats,
    /// `GET /metrics` (Prometheus text format).
    Metrics,
    /// `GET /ready`: 200 while serving, 503 while draining.
    Ready,
    /// `POST|PUT /pub/<topic>`; `topic` keeps its leading '/'.
    Publish {
        topic: &'a str,
    },
    /// `GET /sub/<topic>[,<topic>...]`; `topics` is the raw list after `/sub`.
    Subscribe {
        topics: &'a str,
    },
    /// `GET /ws`: a WebSocket that subscribes by command.
    WebSocket,
    /// Pushlet: `/pushlet.srv` and `/pushlet/pushlet.srv`, GET or POST.
    Pushlet,
    /// Bayeux (CometD, Faye): `/cometd`, `/cometd/`, `/cometd/handshake|connect|disconnect`;
    /// POST long-polling, GET callback-polling or WebSocket upgrade, OPTIONS preflight.
    Bayeux,
    /// A page, a page's part or halley.js (`crate::web`), any method: the web handler answers
    /// (404 for all of them when the web is turned off).
    Web,
    /// `OPTIONS` on a known path: CORS preflight. `publish` says which allowlist applies.
    Preflight {
        publish: bool,
        allow: &'static str,
    },
    /// A known path with the wrong method.
    MethodNotAllowed {
        allow: &'static str,
    },
    NotFound,
}

const ALLOW_READ: &str = "GET, HEAD, OPTIONS";
const ALLOW_PUBLISH: &str = "POST, PUT, OPTIONS";

/// Routes a request by method and (undecoded) path.
pub fn route(method: Method, path: &str) -> Route<'_> {
    if pushlet::PATHS.contains(&path) {
        return match method {
            Method::Get | Method::Post => Route::Pushlet,
            _ => Route::MethodNotAllowed { allow: "GET, POST" },
        };
    }
    if path == "/cometd" || path.starts_with("/cometd/") {
        return match method {
            Method::Get | Method::Post | Method::Options => Route::Bayeux,
            _ => Route::MethodNotAllowed { allow: "GET, POST, OPTIONS" },
        };
    }
    if crate::web::serves(path) {
        return Route::Web;
    }
    let (kind, rest) = if path == "/health" {
        (Kind::Health, "")
    } else if path == "/stats" {
        (Kind::Stats, "")
    } else if path == "/metrics" {
        (Kind::Metrics, "")
    } else if path == "/ready" {
        (Kind::Ready, "")
    } else if path == "/ws" {
        (Kind::WebSocket, "")
    } else if let Some(rest) = strip_dir(path, "/pub") {
        (Kind::Publish, rest)
    } else if let Some(rest) = strip_dir(path, "/sub") {
        (Kind::Subscribe, rest)
    } else {
        return Route::NotFound;
    };
    let (allow, publish) = match kind {
        Kind::Publish => (ALLOW_PUBLISH, true),
        _ => (ALLOW_READ, false),
    };
    match (kind, method) {
        (_, Method::Options) => Route::Preflight { publish, allow },
        (Kind::Health, Method::Get | Method::Head) => Route::Health,
        (Kind::Stats, Method::Get | Method::Head) => Route::Stats,
        (Kind::Metrics, Method::Get | Method::Head) => Route::Metrics,
        (Kind::Ready, Method::Get | Method::Head) => Route::Ready,
        (Kind::WebSocket, Method::Get) => Route::WebSocket,
        (Kind::Publish, Method::Post | Method::Put) => Route::Publish { topic: rest },
        (Kind::Subscribe, Method::Get | Method::Head) => Route::Subscribe { topics: rest },
        _ => Route::MethodNotAllowed { allow },
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Health,
    Stats,
    Metrics,
    Ready,
    WebSocket,
    Publish,
    Subscribe,
}

/// `/pub/x/y` -> `/x/y`; `/pub` and `/pub/` -> `""` (the handler reports the missing topic);
/// `/public` -> None.
fn strip_dir<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(dir)?;
    if rest.is_empty() || rest == "/" {
        Some("")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases: &[(Method, &str, Route<'_>)] = &[
            (Method::Get, "/health", Route::Health),
            (Method::Head, "/stats", Route::Stats),
            (Method::Get, "/metrics", Route::Metrics),
            (Method::Get, "/ready", Route::Ready),
            (Method::Post, "/pub/news", Route::Publish { topic: "/news" }),
            (Method::Put, "/pub/a/b", Route::Publish { topic: "/a/b" }),
            (Method::Get, "/pub/a", Route::MethodNotAllowed { allow: ALLOW_PUBLISH }),
            (Method::Get, "/sub/a,b/c", Route::Subscribe { topics: "/a,b/c" }),
            (Method::Get, "/sub", Route::Subscribe { topics: "" }),
            (Method::Post, "/sub/a", Route::MethodNotAllowed { allow: ALLOW_READ }),
            (Method::Delete, "/health", Route::MethodNotAllowed { allow: ALLOW_READ }),
            (Method::Options, "/pub/a", Route::Preflight { publish: true, allow: ALLOW_PUBLISH }),
            (Method::Options, "/sub/a", Route::Preflight { publish: false, allow: ALLOW_READ }),
            (Method::Get, "/public", Route::NotFound),
            (Method::Get, "/", Route::Web),
            (Method::Post, "/halley.js", Route::Web),
            (Method::Get, "/demo/chat", Route::Web),
            (Method::Get, "/demo/", Route::NotFound),
            (Method::Get, "/halley.jsx", Route::NotFound),
            (Method::Get, "/health/x", Route::NotFound),
        ];
        for (method, path, want) in cases {
            assert_eq!(&route(*method, path), want, "{method:?} {path}");
        }
    }
}
