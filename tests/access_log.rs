//! The access log (`--access-log`) over real sockets: one line per request, written when the
//! reply completes (a parked long-poll when it is answered, a stream when it ends), never one
//! per message; secret query values redacted; `--log-format json` lines; a head that does not
//! parse logged with its status; a log that cannot be opened stops the start.

mod util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use halley::config::LogFormat;
use util::{Client, StreamClient, TestServer, WAIT};

/// A fresh log path under the temp dir, removed when dropped.
struct LogFile(PathBuf);

impl LogFile {
    fn new(name: &str) -> LogFile {
        let path = std::env::temp_dir().join(format!("halley-access-{name}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        LogFile(path)
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Waits (bounded by WAIT) until some line contains `needle`; returns every line then.
    /// The writer thread has no signal of its own to wait on: the file is read again.
    fn wait_for(&self, needle: &str) -> Vec<String> {
        self.wait_for_count(needle, 1)
    }

    /// Waits (bounded by WAIT) until `count` lines contain `needle`; returns every line then.
    fn wait_for_count(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.lines();
            if lines.iter().filter(|line| line.contains(needle)).count() >= count {
                return lines;
            }
            assert!(Instant::now() < deadline, "no line with {needle:?} in {lines:#?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn server(log: &Path, format: LogFormat) -> TestServer {
    TestServer::with(|c| {
        c.access_log = Some(log.to_owned());
        c.log_format = format;
    })
}

/// The text line's fields: ts, peer, "METHOD target", status, bytes, duration.
fn fields(line: &str) -> (String, String, u16, u64, f64) {
    let (ts_peer, rest) = line.split_once(" \"").expect("quoted request");
    let (request, tail) = rest.rsplit_once("\" ").expect("end of quote");
    let mut tail = tail.split(' ');
    let status = tail.next().expect("status").parse().expect("status number");
    let bytes = tail.next().expect("bytes").parse().expect("bytes number");
    let secs = tail.next().expect("duration").trim_end_matches('s').parse().expect("seconds");
    let peer = ts_peer.split(' ').nth(1).expect("peer").to_owned();
    (request.to_owned(), peer, status, bytes, secs)
}

#[test]
fn a_parked_long_poll_is_logged_when_answered_with_its_token_redacted() {
    let log = LogFile::new("longpoll");
    let server = server(&log.0, LogFormat::Text);
    let mut waiting = server.client();
    waiting.send(b"GET /sub/lp?timeout=30&token=s3cr3t.jwt HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("parked", 1);
    // Another request's line is written; the parked one has none yet.
    assert_eq!(server.client().get("/health").status, 200);
    let lines = log.wait_for("/health");
    assert!(!lines.iter().any(|l| l.contains("/sub/lp")), "{lines:#?}");

    util::publish(server.addr, "/lp", b"hello");
    let reply = waiting.response();
    assert_eq!(reply.status, 200);
    let lines = log.wait_for("/sub/lp");
    let line = lines.iter().find(|l| l.contains("/sub/lp")).expect("line");
    let (request, peer, status, bytes, secs) = fields(line);
    assert_eq!(request, "GET /sub/lp?timeout=30&token=REDACTED");
    assert!(peer.starts_with("127.0.0.1:"), "{line}");
    assert_eq!(status, 200);
    assert!(bytes > reply.body.len() as u64, "head and body: {line}");
    assert!(secs >= 0.0);
    let text = std::fs::read_to_string(&log.0).expect("log");
    assert!(!text.contains("s3cr3t"), "{text}");
    // The publish was answered on another connection (maybe another worker): its own line.
    let lines = log.wait_for("POST /pub/lp");
    assert!(lines.iter().any(|l| fields(l).0 == "POST /pub/lp" && fields(l).2 == 201), "{lines:#?}");
}

#[test]
fn a_stream_is_one_line_written_when_it_ends_not_one_per_message() {
    let log = LogFile::new("sse");
    let server = server(&log.0, LogFormat::Text);
    let mut sse =
        StreamClient::open(server.addr, "GET /sub/s HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    assert_eq!(sse.head.status, 200);
    for i in 0..3 {
        util::publish(server.addr, "/s", format!("m{i}").as_bytes());
    }
    sse.read_until_count("data: m", 3);
    let lines = log.wait_for_count("POST /pub/s", 3);
    assert!(!lines.iter().any(|l| l.contains("GET /sub/s")), "still open: no line yet {lines:#?}");
    drop(sse);
    let lines = log.wait_for("GET /sub/s");
    let streams: Vec<_> = lines.iter().filter(|l| l.contains("GET /sub/s")).collect();
    assert_eq!(streams.len(), 1, "{lines:#?}");
    let (_, _, status, bytes, _) = fields(streams[0]);
    assert_eq!(status, 200);
    assert!(bytes > 0);
    assert_eq!(lines.len(), 4, "three publishes and one stream: {lines:#?}");
}

#[test]
fn json_format_and_a_head_that_does_not_parse() {
    let log = LogFile::new("json");
    let server = server(&log.0, LogFormat::Json);
    assert_eq!(server.client().get("/health?key=abc").status, 200);
    let mut bad = Client::connect(server.addr);
    bad.send(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n");
    assert_eq!(bad.response().status, 400);
    let lines = log.wait_for("\"status\":400");
    let values: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    let health = values.iter().find(|v| v["path"] == "/health?key=REDACTED").expect("health line");
    assert_eq!(health["method"], "GET");
    assert_eq!(health["status"], 200);
    assert!(health["bytes"].as_u64().expect("bytes") > 0);
    assert!(health["duration_ms"].is_number());
    assert!(health["ts"].as_str().expect("ts").ends_with('Z'));
    let bad = values.iter().find(|v| v["status"] == 400).expect("400 line");
    assert_eq!((bad["method"].as_str(), bad["path"].as_str()), (Some("-"), Some("-")));
}

#[test]
fn an_access_log_that_cannot_be_opened_stops_the_start() {
    let config = TestServer::config(|c| c.access_log = Some("/nonexistent-dir/halley/access.log".into()));
    let err = halley::server::start(config).expect_err("no such directory");
    assert!(err.to_string().contains("/nonexistent-dir/halley/access.log"), "{err}");
}
