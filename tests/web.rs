//! The pages Halley serves itself, over loopback: types and safety headers, revalidation,
//! HEAD, `--no-web`, the `/latest` page (escaping, newest first), the dashboard's stats feed
//! and the `--demo` publisher.

mod util;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Instant;

use util::{publish, Client, TestServer, WAIT};

const PAGES: [&str; 6] = ["/", "/demo/chat", "/demo/stocks", "/demo/monitor", "/demo/orders", "/dashboard"];

fn get_with(c: &mut Client, path: &str, headers: &str) -> util::Response {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    c.response()
}

#[test]
fn pages_come_with_their_type_a_strict_policy_and_no_sniffing() {
    let server = TestServer::start();
    let mut c = server.client();
    for path in PAGES {
        let r = c.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert!(r.header("etag").is_some_and(|t| t.starts_with('"')), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{path}: a page is not for other origins");
        assert!(r.text().starts_with("<!doctype html>"), "{path}");
        if path != "/" {
            assert!(r.text().contains("<script src=\"/halley.js\"></script>"), "{path} uses halley.js");
        }
    }
    for (path, kind) in
        [("/web/style.css", "text/css"), ("/web/chat.js", "text/javascript"), ("/web/icon.svg", "image/svg")]
    {
        let r = c.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").is_some_and(|t| t.starts_with(kind)),
            "{path}: {:?}",
            r.header("content-type")
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
}

#[test]
fn the_library_is_served_from_its_one_source_to_any_origin() {
    let server = TestServer::start();
    let mut c = server.client();
    let r = get_with(&mut c, "/halley.js", "Origin: https://elsewhere.example\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(r.body, include_bytes!("../clients/js/halley.js"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "an ES module import needs CORS");
    let r = c.get("/halley.mjs");
    assert_eq!(r.body, include_bytes!("../clients/js/halley.mjs"));
}

#[test]
fn a_current_copy_is_revalidated_with_a_304_and_no_body() {
    let server = TestServer::start();
    let mut c = server.client();
    let first = c.get("/demo/stocks");
    let etag = first.header("etag").expect("etag").to_owned();
    let again = get_with(&mut c, "/demo/stocks", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let stale = get_with(&mut c, "/demo/stocks", "If-None-Match: \"old\"\r\n");
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, first.body);
    // The connection is still in step after the 304.
    assert_eq!(c.get("/health").text(), "ok\n");
}

#[test]
fn head_gets_the_headers_of_get_and_no_body() {
    let server = TestServer::start();
    let mut c = server.client();
    let get = c.get("/dashboard");
    // HEAD and a pipelined GET /health: if HEAD sent a body, it would sit before the second reply.
    c.send(b"HEAD /dashboard HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    c.stream.read_to_end(&mut raw).expect("read to close");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, rest) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}", get.body.len())), "{head}");
    assert!(head.contains("Content-Security-Policy: "), "{head}");
    assert!(rest.starts_with("HTTP/1.1 200 OK"), "HEAD sent a body: {rest:.80}");
    assert!(rest.ends_with("\r\n\r\nok\n"));
}

#[test]
fn other_methods_are_refused_with_what_is_allowed() {
    let server = TestServer::start();
    let mut c = server.client();
    let r = c.post("/demo/chat", b"x");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(r.text().lines().count(), 1, "one-line reason: {}", r.text());
    c.send(b"OPTIONS / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("allow")), (204, Some("GET, HEAD, OPTIONS")));
    assert_eq!(c.get("/demo/nothing").status, 404);
}

#[test]
fn no_web_turns_every_page_off_and_nothing_else() {
    let server = TestServer::with(|c| c.web.enabled = false);
    let mut c = server.client();
    for path in
        PAGES.iter().copied().chain(["/halley.js", "/halley.mjs", "/web/style.css", "/latest", "/dashboard/watch"])
    {
        let r = c.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.text().contains("--no-web"), "{path}: {}", r.text());
        assert_eq!(r.header("content-security-policy"), None);
    }
    assert_eq!(c.get("/health").status, 200);
    assert_eq!(c.get("/sub/a?timeout=0").status, 200);
}

#[test]
fn latest_shows_hostile_data_as_text_newest_first() {
    let server = TestServer::start();
    for i in 0..25 {
        publish(server.addr, "/news", format!("plain {i}").as_bytes());
    }
    publish(server.addr, "/news", b"<script>window.pwned=1</script><img src=x onerror=alert(1)>");
    let mut c = server.client();
    let r = c.get("/latest?topic=news");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("content-security-policy").is_some());
    let html = r.text();
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"), "{html}");
    assert!(html.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"), "{html}");
    assert!(!html.contains("<script") && !html.contains("<img"), "{html}");
    // The newest 20 of 26, newest first: the hostile one, then plain 24 down to plain 6.
    let plain: Vec<&str> = html.lines().filter_map(|l| l.split("<pre>plain ").nth(1)?.split('<').next()).collect();
    let want: Vec<String> = (6..25).rev().map(|i| i.to_string()).collect();
    assert_eq!(plain, want);
    assert!(html.find("pwned").expect("hostile") < html.find("plain 24").expect("24"));

    // A hostile topic is refused with a one-line reason, not echoed into a page.
    let r = c.get("/latest?topic=%3Cscript%3E%20x");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text().lines().count(), 1);
    // No topic: the form only, which does not reload.
    let r = c.get("/latest");
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("http-equiv"));
}

#[test]
fn the_stats_flow_to_their_topic_only_while_a_dashboard_watches() {
    let server = TestServer::start();
    let mut c = server.client();
    assert!(server.stats()["process"]["rss_bytes"].as_u64().is_some_and(|rss| rss > 0));
    // Nobody watches: a long-poll on the stats topic times out with nothing (a held request,
    // answered by the server's own timer after 1.5 s).
    let r = c.get("/sub/halley/stats?timeout=1.5");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["messages"], serde_json::json!([]), "stats published with no dashboard");
    let watch = c.get("/dashboard/watch");
    assert_eq!(watch.status, 204);
    let r = c.get("/sub/halley/stats?timeout=10");
    let messages = r.json()["messages"].as_array().expect("messages").clone();
    let stats = &messages.first().expect("a stats message")["data"];
    assert_eq!(stats["workers"].as_array().map(Vec::len), Some(2), "{stats}");
    assert!(stats["process"]["rss_bytes"].as_u64().is_some());
    assert!(stats["hub"]["published"].is_u64());
    // Nobody else may publish there: the dashboard believes what it reads.
    let forged = c.post("/pub/halley/stats", br#"{"workers":[]}"#);
    assert_eq!(forged.status, 403, "{}", forged.text());
}

#[test]
fn the_demo_publishes_to_every_demo_topic() {
    let server = TestServer::with(|c| c.web.demo = true);
    let mut c = server.client();
    let mut prefixes = BTreeSet::new();
    let mut cursor = "all".to_owned();
    let deadline = Instant::now() + WAIT;
    while prefixes.len() < 4 {
        assert!(Instant::now() < deadline, "only {prefixes:?} within {WAIT:?}");
        let r = c.get(&format!("/sub/stocks/*,monitor/*,chat/lobby,orders/*?since={cursor}&timeout=5"));
        let reply = r.json();
        for msg in reply["messages"].as_array().expect("messages") {
            let topic = msg["topic"].as_str().expect("topic");
            prefixes.insert(topic.split('/').nth(1).expect("prefix").to_owned());
            assert!(msg["data"].is_object(), "JSON data: {msg}");
        }
        cursor = reply["next"].as_str().expect("next").to_owned();
    }
    assert_eq!(prefixes, BTreeSet::from(["chat", "monitor", "orders", "stocks"].map(String::from)));
}
