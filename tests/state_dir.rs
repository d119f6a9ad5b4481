//! `--state-dir` on the real binary: a graceful stop (SIGTERM) saves the history and the next
//! start on the same port resumes the same epoch and sequence, so long-poll and SSE clients
//! resuming with their cursors get exactly the next messages and no gap; the saved file is
//! consumed at start, so a `kill -9` after a restore starts a new epoch (the gap reply, never a
//! reused sequence number); a corrupt snapshot is moved aside, one of another version refuses
//! the start; the history limits apply on load; binary payloads, events and content types
//! survive.

mod util;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use util::process::{listening_addr, Halley};
use util::{publish, Client, StreamClient, WAIT};

/// A temporary state directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("halley-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `halley serve --state-dir` child, with what its start said before it listened.
struct Node {
    halley: Halley,
    addr: SocketAddr,
    /// The stderr lines up to the listening line (what the start said about the state dir).
    early: Vec<String>,
}

impl Node {
    /// Starts `halley serve --state-dir DIR --listen LISTEN --workers 2 ...extra` and waits
    /// for its listening line.
    fn start(dir: &Path, listen: &str, extra: &[&str]) -> Node {
        let halley = spawn(dir, listen, extra);
        let mut early = halley.lines_until("listening on");
        let addr = listening_addr(&early.pop().expect("the listening line"));
        Node { halley, addr, early }
    }

    /// The line the start logged containing `needle`.
    fn said(&self, needle: &str) -> &str {
        let found = self.early.iter().find(|line| line.contains(needle));
        found.unwrap_or_else(|| panic!("no line with {needle:?} in {:?}", self.early))
    }

    /// `kill -SIGNAL <pid>`, then waits for the exit; returns whether it exited with success.
    fn stop_with(mut self, signal: &str) -> bool {
        self.halley.signal(signal);
        self.halley.child.wait().expect("wait").success()
    }
}

/// Spawns `halley serve --state-dir DIR --listen LISTEN --workers 2 ...extra` at log level info.
fn spawn(dir: &Path, listen: &str, extra: &[&str]) -> Halley {
    let dir = dir.to_str().expect("utf-8 path");
    let mut args = vec!["serve", "--state-dir", dir, "--listen", listen, "--workers", "2", "--no-pin"];
    args.extend_from_slice(extra);
    Halley::spawn(&args, &[("RUST_LOG", "info")])
}

/// Waits (bounded by WAIT) until the server's /stats counts `want` parked long-polls.
fn wait_parked(addr: SocketAddr, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = poll(addr, "/stats");
        let parked: u64 =
            stats["workers"].as_array().expect("workers").iter().map(|w| w["parked"].as_u64().unwrap_or(0)).sum();
        if parked == want {
            return;
        }
        assert!(Instant::now() < deadline, "parked: wanted {want}, still {parked}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn id(reply: &serde_json::Value) -> String {
    reply["id"].as_str().expect("id").to_owned()
}

fn epoch(id: &str) -> &str {
    id.split('-').next().expect("epoch")
}

/// A poll that returns at once: the reply JSON.
fn poll(addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = Client::connect(addr).get(path);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["messages"].as_array().expect("messages").iter().map(id).collect()
}

/// The `id:` of every SSE event in `text`, and how many `gap` events it holds.
fn sse_ids(text: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut gaps = 0;
    for event in text.split("\n\n") {
        let is_message = event.lines().any(|l| l.starts_with("data: "));
        gaps += usize::from(event.lines().any(|l| l == "event: gap"));
        if let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) {
            if is_message && !event.lines().any(|l| l == "event: gap") {
                ids.push(id.to_owned());
            }
        }
    }
    (ids, gaps)
}

fn open_sse(addr: SocketAddr, topic: &str, last_id: &str) -> StreamClient {
    let request =
        format!("GET /sub{topic} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: {last_id}\r\n\r\n");
    let sse = StreamClient::open(addr, &request);
    assert_eq!(sse.head.status, 200);
    sse
}

#[test]
fn a_graceful_restart_loses_nothing_and_reports_no_gap() {
    let dir = TempDir::new("graceful");
    let halley = Node::start(&dir.0, "127.0.0.1:0", &[]);
    let addr = halley.addr;
    let seen: Vec<String> = (1..=3).map(|i| id(&publish(addr, "/t", format!("m{i}").as_bytes()))).collect();
    // Both clients have seen 1..3: the long-poll's cursor, the SSE client's Last-Event-ID.
    let body = poll(addr, "/sub/t?since=all&timeout=0");
    assert_eq!(ids(&body), seen);
    let cursor = body["next"].as_str().expect("next").to_owned();
    assert_eq!(cursor, seen[2]);
    // Published while the clients are away, before the stop.
    let before: Vec<String> = (4..=5).map(|i| id(&publish(addr, "/t", format!("m{i}").as_bytes()))).collect();
    // A long-poll parked at the stop is answered with its cursor, to resume from.
    let mut parked = Client::connect(addr);
    parked.send(format!("GET /sub/t?since={}&timeout=60 HTTP/1.1\r\nHost: t\r\n\r\n", before[1]).as_bytes());
    wait_parked(addr, 1);
    assert!(halley.stop_with("TERM"), "a graceful exit");
    let answered = parked.response();
    assert_eq!(answered.status, 200);
    assert_eq!(answered.json()["next"], before[1].as_str(), "answered at the stop with its cursor");
    assert!(dir.file("history.snap").exists(), "saved");

    let halley = Node::start(&dir.0, &format!("127.0.0.1:{}", addr.port()), &[]);
    halley.said("restored epoch");
    assert!(!dir.file("history.snap").exists(), "consumed at start");
    let after = id(&publish(addr, "/t", b"m6"));
    assert_eq!(epoch(&after), epoch(&seen[0]), "the same epoch");
    assert_eq!(after, format!("{}-6", epoch(&seen[0])), "the sequence continues");

    // Long-poll from its cursor: exactly 4, 5, 6, no gap.
    let body = poll(addr, &format!("/sub/t?since={cursor}&timeout=0"));
    assert_eq!(body.get("gap"), None, "{body}");
    assert_eq!(ids(&body), [before[0].clone(), before[1].clone(), after.clone()]);
    // The request parked at the stop re-polls with the cursor it was given: exactly 6.
    let body = poll(addr, &format!("/sub/t?since={}&timeout=0", before[1]));
    assert_eq!((ids(&body), body.get("gap")), (vec![after.clone()], None));

    // SSE from its Last-Event-ID: exactly 4, 5, 6 and no gap event; then live ones.
    let mut sse = open_sse(addr, "/t", &seen[2]);
    sse.read_until(|b| String::from_utf8_lossy(b).contains(&format!("id: {after}\n")));
    let live = id(&publish(addr, "/t", b"m7"));
    sse.read_until(|b| String::from_utf8_lossy(b).contains(&format!("id: {live}\n")));
    let (got, gaps) = sse_ids(&sse.text());
    assert_eq!(got, [before[0].clone(), before[1].clone(), after, live]);
    assert_eq!(gaps, 0, "{}", sse.text());
    assert!(halley.stop_with("TERM"));
}

#[test]
fn a_kill_9_after_a_restore_starts_a_new_epoch_with_the_gap() {
    let dir = TempDir::new("kill9");
    let halley = Node::start(&dir.0, "127.0.0.1:0", &[]);
    let addr = halley.addr;
    let first = id(&publish(addr, "/k", b"one"));
    assert!(halley.stop_with("TERM"));
    let halley = Node::start(&dir.0, &format!("127.0.0.1:{}", addr.port()), &[]);
    halley.said("restored epoch");
    let second = id(&publish(addr, "/k", b"two"));
    let third = id(&publish(addr, "/k", b"three"));
    assert_eq!(epoch(&second), epoch(&first));
    // A client is at `third`. The node dies without saving anything.
    assert!(!halley.stop_with("KILL"));
    let halley = Node::start(&dir.0, &format!("127.0.0.1:{}", addr.port()), &[]);
    halley.said("no saved history");
    let fresh = id(&publish(addr, "/k", b"four"));
    assert_ne!(epoch(&fresh), epoch(&first), "a new epoch, never the old one again");
    // The client resuming from `third` (and one from `first`) is told of the gap.
    for cursor in [&third, &first] {
        let body = poll(addr, &format!("/sub/k?since={cursor}&timeout=0"));
        assert_eq!(body["gap"], true, "{body}");
        assert_eq!(ids(&body), vec![fresh.clone()]);
    }
    assert!(halley.stop_with("TERM"));
}

#[test]
fn a_corrupt_snapshot_is_moved_aside_and_the_node_starts_fresh() {
    let dir = TempDir::new("corrupt");
    let halley = Node::start(&dir.0, "127.0.0.1:0", &[]);
    let addr = halley.addr;
    let old = id(&publish(addr, "/c", b"saved"));
    assert!(halley.stop_with("TERM"));
    // Cut the file short, as a full disk or a bad copy would.
    let snap = dir.file("history.snap");
    let bytes = std::fs::read(&snap).expect("snapshot");
    std::fs::write(&snap, &bytes[..bytes.len() - 3]).expect("truncate");

    let halley = Node::start(&dir.0, &format!("127.0.0.1:{}", addr.port()), &[]);
    halley.said("is corrupt (truncated)");
    assert!(!snap.exists());
    assert_eq!(std::fs::read(dir.file("history.snap.corrupt")).expect("moved aside"), bytes[..bytes.len() - 3]);
    let body = poll(addr, &format!("/sub/c?since={old}&timeout=0"));
    assert_eq!(body["gap"], true, "a new epoch: {body}");
    assert!(halley.stop_with("TERM"));

    // The error line names the file.
    std::fs::write(&snap, b"HALLEYST\x01\x00\x00\x00garbage").expect("write");
    let halley = Node::start(&dir.0, &format!("127.0.0.1:{}", addr.port()), &[]);
    let line = halley.said("corrupt");
    assert!(line.contains(&snap.display().to_string()) && line.contains("history.snap.corrupt"), "{line}");
    assert!(halley.stop_with("TERM"));
}

#[test]
fn a_snapshot_of_another_format_version_refuses_the_start() {
    let dir = TempDir::new("version");
    std::fs::create_dir_all(&dir.0).expect("dir");
    let snap = dir.file("history.snap");
    std::fs::write(&snap, b"HALLEYST\x09\x00\x00\x00whatever follows").expect("write");
    let mut halley = spawn(&dir.0, "127.0.0.1:0", &[]);
    let line = halley.line_with("format version 9");
    assert!(line.contains(&snap.display().to_string()), "{line}");
    assert!(!halley.child.wait().expect("wait").success(), "refused to start");
    assert!(snap.exists(), "left in place for the halley that wrote it");
}

#[test]
fn the_history_limits_apply_on_load_and_payloads_survive() {
    let dir = TempDir::new("limits");
    let halley = Node::start(&dir.0, "127.0.0.1:0", &["--history-messages", "10"]);
    let addr = halley.addr;
    let start = poll(addr, "/sub/a?timeout=0")["next"].as_str().expect("next").to_owned();
    for i in 0..5 {
        publish(addr, "/a", format!("a{i}").as_bytes());
    }
    let mut c = Client::connect(addr);
    c.send_post("/pub/bin?event=blob", &[0, 255, 1, 2, b'\n', 0], "Content-Type: application/octet-stream\r\n");
    assert_eq!(c.response().status, 201);
    c.send_post("/pub/json", br#"{"n":1}"#, "Content-Type: application/json\r\n");
    assert_eq!(c.response().status, 201);
    let saved = poll(addr, "/sub/bin,/json?since=all&timeout=0");
    assert!(halley.stop_with("TERM"));

    let halley = Node::start(&dir.0, &format!("127.0.0.1:{}", addr.port()), &["--history-messages", "2"]);
    halley.said("restored epoch");
    // /a keeps its 2 newest; a cursor from before the evicted ones gets the gap.
    let body = poll(addr, &format!("/sub/a?since={start}&timeout=0"));
    let data: Vec<&str> =
        body["messages"].as_array().expect("messages").iter().map(|m| m["data"].as_str().expect("text")).collect();
    assert_eq!(data, ["a3", "a4"]);
    assert_eq!(body["gap"], true, "{body}");
    // The binary payload, its event and the JSON content type come back as they went in.
    let back = poll(addr, "/sub/bin,/json?since=all&timeout=0");
    assert_eq!(back["messages"], saved["messages"]);
    assert_eq!(back["messages"][0]["data"], "AP8BAgoA");
    assert_eq!(back["messages"][0]["encoding"], "base64");
    assert_eq!(back["messages"][0]["event"], "blob");
    assert_eq!(back["messages"][1]["data"], serde_json::json!({"n": 1}));
    assert!(halley.stop_with("TERM"));
}
