//! The pages Halley serves itself: the landing page, the four demo apps, the dashboard, the
//! no-JavaScript `/latest` page, and halley.js, the browser client. Sans-I/O: which bytes a path
//! names, with their type and the headers that keep them safe; `server/web.rs` answers the
//! requests, `server/feeds.rs` publishes the demo data and the node's stats.
//!
//! Every file is embedded in the binary from a real file in the tree (`src/web/pages/`,
//! `clients/js/`), so the library is served from its one source and a page can be read and
//! edited as what it is. Pages carry no inline script: each page's code is a `.js` file of its
//! own, so the Content-Security-Policy can forbid inline script outright, and message data is
//! only ever put in the page as text.

pub mod demo;
pub mod latest;

/// The reserved topic the node's stats are published to, once a second, while a dashboard is
/// open (`server/feeds.rs`).
pub const STATS_TOPIC: &str = "/halley/stats";

/// The no-JavaScript page: `/latest?topic=/some/topic`.
pub const LATEST_PATH: &str = "/latest";

/// `GET` here keeps the stats flowing to `/halley/stats` for `STATS_LEASE` more (the dashboard
/// asks every few seconds while it is open).
pub const WATCH_PATH: &str = "/dashboard/watch";

/// DEMO ONLY (`--demo` with an auth secret): `GET /demo/token?merchant=NAME` mints a short-lived
/// token that may read `/orders/NAME` and nothing else, for the new-order demo page. A real
/// application mints tokens in its own backend, after its own login; Halley serves this path
/// only with `--demo`, where it is a 404 otherwise.
pub const DEMO_TOKEN_PATH: &str = "/demo/token";

/// How long a demo token lives: short, so the page shows a token being fetched again.
pub const DEMO_TOKEN_TTL_SECS: u64 = 120;

/// Every page's Content-Security-Policy: everything from this origin only (WebSocket included:
/// `'self'` covers `ws:` to the same host), no inline script or style, no plugins, no framing by
/// other sites. The long-poll transports that use `<script>` (JSONP) and `<iframe>` (forever
/// iframe) load them from this origin too.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'self'";

/// What kind of file an asset is, which decides its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An HTML page: gets the Content-Security-Policy.
    Page,
    /// A page's script or style sheet.
    Part,
    /// halley.js or halley.mjs: may be loaded by pages of other origins (CORS for the ES
    /// module, which browsers fetch in CORS mode).
    Library,
}

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub kind: Kind,
    pub body: &'static [u8],
    /// A hash of `body`, computed at compile time: the ETag changes exactly when the bytes do.
    pub hash: u64,
}

impl Asset {
    /// The strong entity tag, e.g. `"5c1e...-3f"`.
    pub fn etag(&self) -> String {
        format!("\"{:016x}-{:x}\"", self.hash, self.body.len())
    }

    /// `Cache-Control`: the URLs carry no version, so a browser revalidates every time
    /// (`no-cache`), which costs a `304` with no body while the binary is the same.
    pub fn cache_control(&self) -> &'static str {
        "no-cache"
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:expr, $type:expr, $kind:expr, $file:expr) => {{
        const BODY: &[u8] = include_bytes!($file);
        Asset { path: $path, content_type: $type, kind: $kind, body: BODY, hash: fnv1a(BODY) }
    }};
}

/// Every path served from an embedded file.
pub static ASSETS: &[Asset] = &[
    asset!("/", HTML, Kind::Page, "pages/index.html"),
    asset!("/demo/chat", HTML, Kind::Page, "pages/chat.html"),
    asset!("/demo/stocks", HTML, Kind::Page, "pages/stocks.html"),
    asset!("/demo/monitor", HTML, Kind::Page, "pages/monitor.html"),
    asset!("/demo/orders", HTML, Kind::Page, "pages/orders.html"),
    asset!("/dashboard", HTML, Kind::Page, "pages/dashboard.html"),
    asset!("/web/style.css", CSS, Kind::Part, "pages/style.css"),
    asset!("/web/icon.svg", SVG, Kind::Part, "pages/icon.svg"),
    asset!("/web/common.js", JS, Kind::Part, "pages/common.js"),
    asset!("/web/index.js", JS, Kind::Part, "pages/index.js"),
    asset!("/web/chat.js", JS, Kind::Part, "pages/chat.js"),
    asset!("/web/stocks.js", JS, Kind::Part, "pages/stocks.js"),
    asset!("/web/monitor.js", JS, Kind::Part, "pages/monitor.js"),
    asset!("/web/orders.js", JS, Kind::Part, "pages/orders.js"),
    asset!("/web/dashboard.js", JS, Kind::Part, "pages/dashboard.js"),
    asset!("/halley.js", JS, Kind::Library, "../../clients/js/halley.js"),
    asset!("/halley.mjs", JS, Kind::Library, "../../clients/js/halley.mjs"),
];

/// The embedded file at `path`, if any.
pub fn lookup(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// Whether `path` is one of the web's paths (routed to the web handler, which answers 404 for
/// all of them when the web is turned off).
pub fn serves(path: &str) -> bool {
    path == LATEST_PATH || path == WATCH_PATH || path == DEMO_TOKEN_PATH || lookup(path).is_some()
}

/// Whether an `If-None-Match` value names `etag` (or is `*`). Weak comparison (RFC 9110
/// §13.1.2): a `W/` prefix is ignored.
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// FNV-1a, 64 bits: a content hash for the ETags, cheap enough to run at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `text` with `&`, `<`, `>`, `"` and `'` replaced by character references, safe inside an
/// element or a quoted attribute.
pub fn escape_html(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_unique_and_pages_carry_no_inline_script() {
        for (i, asset) in ASSETS.iter().enumerate() {
            assert!(ASSETS[..i].iter().all(|other| other.path != asset.path), "{} twice", asset.path);
            assert!(serves(asset.path));
            if asset.kind == Kind::Page {
                let text = std::str::from_utf8(asset.body).expect("utf-8 page");
                // Every <script> loads a file from this origin and has no body.
                for (at, _) in text.match_indices("<script") {
                    let open = &text[at..at + text[at..].find('>').expect("closed tag") + 1];
                    assert!(open.contains(" src=\"/"), "{}: {open}", asset.path);
                    assert!(text[at + open.len()..].starts_with("</script>"), "{}: inline script", asset.path);
                }
                assert!(no_handlers(text), "{}: an inline event handler", asset.path);
                for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "action=\"http"] {
                    assert!(!text.contains(external), "{}: loads from another origin", asset.path);
                }
            }
        }
        assert!(serves(LATEST_PATH) && serves(WATCH_PATH) && serves(DEMO_TOKEN_PATH));
        assert!(!serves("/demo") && !serves("/halley.js/x"));
    }

    /// No `on...=` attribute anywhere in the markup.
    fn no_handlers(text: &str) -> bool {
        let bytes = text.as_bytes();
        text.match_indices(" on").all(|(at, _)| {
            let name: Vec<u8> = bytes[at + 1..].iter().copied().take_while(u8::is_ascii_alphabetic).collect();
            bytes.get(at + 1 + name.len()) != Some(&b'=')
        })
    }

    #[test]
    fn etags_follow_the_bytes() {
        let a = lookup("/").expect("landing page");
        assert_eq!(a.etag(), a.etag());
        assert_ne!(a.etag(), lookup("/dashboard").expect("dashboard").etag());
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        let tag = a.etag();
        assert!(etag_matches(&tag, &tag));
        assert!(etag_matches(&format!("\"x\", W/{tag}"), &tag));
        assert!(etag_matches("*", &tag));
        assert!(!etag_matches("\"x\"", &tag));
    }

    #[test]
    fn escaping_leaves_no_markup() {
        let mut out = String::new();
        escape_html("<script>alert('x')</script> & \"q\"", &mut out);
        assert_eq!(out, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;");
    }
}
