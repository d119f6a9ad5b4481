//! `halley pub` and `halley sub`, the binary, over loopback: against a real server (round trip
//! of text, multi-line, binary, JSON and control-character messages in both output formats,
//! live delivery across polls, history gaps, refusals), against no server (a one-line error),
//! and against a tiny recording listener (the bearer token is sent, from `--token` or
//! `HALLEY_TOKEN`). `cli_sub.rs` covers a message the client cannot decode.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;

use serde_json::Value;
use util::{TestServer, WAIT};

/// `halley` with the environment that would change what it sends cleared.
fn halley(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_halley"));
    command.args(args);
    for var in ["HALLEY_TOKEN", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        command.env_remove(var);
    }
    command
}

/// Runs `halley args` to completion with `stdin` as its input.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child =
        halley(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run halley");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("halley exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `halley pub` that must succeed; returns the id of the published message.
fn publish(url: &str, extra: &[&str], stdin: &[u8]) -> String {
    let mut args = vec!["pub", "--server", url];
    args.extend_from_slice(extra);
    let output = run(&args, stdin);
    assert!(output.status.success(), "{args:?}: {}", text(&output.stderr));
    let ack: Value = serde_json::from_slice(&output.stdout).expect("the server's JSON ack");
    ack["id"].as_str().expect("id").to_owned()
}

/// A running `halley sub`, its output read line by line; killed when dropped.
struct Sub {
    child: Child,
    lines: Receiver<(bool, String)>,
    stderr: Vec<String>,
}

impl Sub {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Sub {
        let mut command = halley(args);
        command.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("run halley sub");
        let (tx, lines) = mpsc::channel();
        let stdout = Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>;
        let stderr = Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>;
        for (is_stdout, pipe) in [(true, stdout), (false, stderr)] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send((is_stdout, line));
                }
            });
        }
        Sub { child, lines, stderr: Vec::new() }
    }

    /// The next `n` stdout lines (stderr lines seen meanwhile are kept in `stderr`).
    fn stdout(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.lines.recv_timeout(WAIT) {
                Ok((true, line)) => out.push(line),
                Ok((false, line)) => self.stderr.push(line),
                Err(_) => panic!("wanted {n} lines, got {out:?}; stderr {:?}", self.stderr),
            }
        }
        out
    }

    /// The next stderr line (stdout lines seen meanwhile are a failure).
    fn stderr_line(&mut self) -> String {
        if !self.stderr.is_empty() {
            return self.stderr.remove(0);
        }
        match self.lines.recv_timeout(WAIT) {
            Ok((false, line)) => line,
            other => panic!("wanted a stderr line, got {other:?}"),
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pub_then_sub_frames_multi_line_binary_json_and_control_characters() {
    let server = TestServer::start();
    let url = format!("http://{}", server.addr);
    let multi = publish(&url, &["--event", "note", "/t", "-"], b"line one\n\n  line three\n");
    let binary = publish(&url, &["t"], &[0, 1, 2, 0xff]);
    let json = publish(&url, &["--content-type", "application/json", "t", r#"{"a":[1,"x\ny"]}"#], b"");
    let bell = publish(&url, &["t", "ring\u{7}\r\nnext"], b"");

    let mut sub = Sub::start(&["sub", "--server", &url, "--since", "all", "/t"], &[]);
    let expected = [
        format!("{multi} /t event=note"),
        "  line one".into(),
        "  ".into(),
        "    line three".into(),
        format!("{binary} /t (binary, 4 bytes, base64)"),
        "  AAEC/w==".into(),
        format!("{json} /t (json)"),
        r#"  {"a":[1,"x\ny"]}"#.into(),
        format!("{bell} /t (text, escaped)"),
        r#"  "ring\u0007\r\nnext""#.into(),
    ];
    assert_eq!(sub.stdout(expected.len()), expected);
    drop(sub);

    let mut sub = Sub::start(&["sub", "--server", &url, "--since", "all", "--json", "t"], &[]);
    let lines = sub.stdout(4);
    let messages: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).expect("one object a line")).collect();
    assert_eq!(messages[0]["data"], "line one\n\n  line three");
    assert_eq!(messages[0]["event"], "note");
    assert_eq!((messages[1]["data"].as_str(), messages[1]["encoding"].as_str()), (Some("AAEC/w=="), Some("base64")));
    assert_eq!(messages[2]["data"], serde_json::json!({"a": [1, "x\ny"]}));
    assert_eq!(messages[3]["id"], bell.as_str());
}

#[test]
fn sub_prints_live_messages_across_polls_in_order() {
    let server = TestServer::start();
    let url = format!("http://{}", server.addr);
    let mut sub = Sub::start(&["sub", "--server", &url, "news,/alerts/*"], &[]);
    server.wait_for("parked", 1);
    let first = publish(&url, &["news", "first"], b"");
    assert_eq!(sub.stdout(2), [format!("{first} /news"), "  first".to_owned()]);
    // The next poll resumes from the reply's cursor: both later messages arrive, in order,
    // whether or not they land while it is parked.
    let second = publish(&url, &["alerts/db1", "disk full"], b"");
    let third = publish(&url, &["--event", "up", "/news", "third"], b"");
    let lines = sub.stdout(4);
    assert_eq!(
        lines,
        [format!("{second} /alerts/db1"), "  disk full".into(), format!("{third} /news event=up"), "  third".into()]
    );
    assert!(sub.stderr.is_empty(), "{:?}", sub.stderr);
}

#[test]
fn sub_reports_a_history_gap_and_goes_on() {
    let server = TestServer::with(|c| c.history.max_messages = 2);
    let url = format!("http://{}", server.addr);
    let ids: Vec<String> = (0..4).map(|i| publish(&url, &["g", &format!("m{i}")], b"")).collect();
    let mut sub = Sub::start(&["sub", "--server", &url, "--since", &ids[0], "g"], &[]);
    assert_eq!(sub.stdout(4), [format!("{} /g", ids[2]), "  m2".into(), format!("{} /g", ids[3]), "  m3".into()]);
    assert_eq!(
        sub.stderr_line(),
        format!("halley sub: warning: messages were lost (history gap); oldest available is {}", ids[2])
    );
}

#[test]
fn no_server_is_one_clear_line() {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let output = run(&["pub", "--server", &url, "t", "x"], b"");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stderr), format!("halley pub: cannot connect to {url}: connection refused\n"));
    assert!(output.stdout.is_empty());

    // `sub` waits the outage out, saying so.
    let mut sub = Sub::start(&["sub", "--server", &url, "--since", "5-5", "t"], &[]);
    assert_eq!(
        sub.stderr_line(),
        format!("halley sub: cannot connect to {url}: connection refused; retrying in 1 s after 5-5")
    );
}

#[test]
fn refusals_and_bad_usage_are_one_line_with_their_exit_codes() {
    let server = TestServer::start();
    let url = format!("http://{}", server.addr);
    let refused = run(&["pub", "--server", &url, "--event", "a b", "t", "x"], b"");
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(text(&refused.stderr), "halley pub: 400 event name must be visible ASCII without spaces\n");

    let https = url.replace("http://", "https://");
    for (args, says) in [
        (
            vec!["pub", "--server", &https, "--cacert", "/nonexistent/ca.pem", "t", "x"],
            "--cacert /nonexistent/ca.pem: ",
        ),
        (vec!["pub", "--server", &url, "--token", "not a token", "t", "x"], "invalid --token"),
        (vec!["sub", "--server", &url, "a,,b"], "empty topic"),
        (
            vec!["pub", "--server", &url, "--cacert", "/nonexistent/ca.pem", "t", "x"],
            "--cacert needs an https:// --server",
        ),
    ] {
        let output = run(&args, b"");
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says) && stderr.lines().count() == 1, "{args:?}: {stderr}");
    }
}

/// Accepts one connection, returns its request head, and answers `reply`.
fn record_one(listener: &TcpListener, reply: &str) -> String {
    let (mut stream, _) = listener.accept().expect("accept");
    let head = read_head(&mut stream);
    stream.write_all(reply.as_bytes()).expect("reply");
    head
}

fn read_head(stream: &mut TcpStream) -> String {
    util::read_request_head(stream)
}

/// The value of header `name` in a request head, if present.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn the_token_goes_out_as_a_bearer_authorization_header() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let ack = r#"{"id":"1-1"}"#;
    let created = format!("HTTP/1.1 201 Created\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ack}", ack.len());

    let recorder = thread::spawn({
        let listener = listener.try_clone().expect("clone");
        let created = created.clone();
        move || [record_one(&listener, &created), record_one(&listener, &created)]
    });
    let with = run(&["pub", "--server", &url, "--token", "s3cr3t.t0k-en", "t", "x"], b"");
    let without = run(&["pub", "--server", &url, "t", "x"], b"");
    let [with_head, without_head] = recorder.join().expect("recorder");
    assert!(with.status.success() && without.status.success(), "{}", text(&with.stderr));
    assert_eq!(header(&with_head, "authorization"), Some("Bearer s3cr3t.t0k-en"), "{with_head}");
    assert_eq!(header(&without_head, "authorization"), None, "{without_head}");

    // `sub` takes it from HALLEY_TOKEN too.
    let _sub = Sub::start(&["sub", "--server", &url, "t"], &[("HALLEY_TOKEN", "from-env")]);
    let (mut stream, _) = listener.accept().expect("accept");
    let head = read_head(&mut stream);
    assert!(head.starts_with("GET /sub/t?timeout=30 HTTP/1.1\r\n"), "{head}");
    assert_eq!(header(&head, "authorization"), Some("Bearer from-env"), "{head}");
}
