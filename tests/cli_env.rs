//! `HALLEY_*` environment variables are `serve`'s options: the client subcommands `halley pub`
//! and `halley sub` ignore them, so a bad value left in a shell (`HALLEY_WORKERS=abc`) does not
//! break them, while `serve` still reads (and refuses) it. The binary runs against a canned
//! server over loopback.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::thread;

/// Environment values that `serve` refuses.
const BAD_ENV: [(&str, &str); 3] =
    [("HALLEY_WORKERS", "abc"), ("HALLEY_MAX_SESSIONS", "-1"), ("HALLEY_LISTEN", "not an address:x")];

fn halley(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_halley"));
    cmd.args(args).envs(BAD_ENV).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Reads one request head and answers it with `status` and a JSON `body`.
fn answer(stream: &mut TcpStream, status: &str, body: &str) -> String {
    let request = util::read_request_head(stream);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body.as_bytes()).expect("write body");
    request.lines().next().unwrap_or("").to_owned()
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout {}\nstderr {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn pub_ignores_serve_options_in_the_environment() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        answer(&mut conn, "201 Created", r#"{"id":"7-1","delivered":0}"#)
    });
    let output = halley(&["pub", "--server", &format!("http://127.0.0.1:{port}"), "news", "hello"])
        .output()
        .expect("run halley pub");
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("7-1"), "{}", text(&output));
    assert_eq!(server.join().expect("server"), "POST /pub/news HTTP/1.1");
}

#[test]
fn sub_ignores_serve_options_in_the_environment() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let body = r#"{"messages":[{"id":"7-1","topic":"/news","time":1,"data":"hello"}],"next":"7-1"}"#;
        answer(&mut conn, "200 OK", body)
    });
    let mut child =
        halley(&["sub", "--server", &format!("http://127.0.0.1:{port}"), "news"]).spawn().expect("run halley sub");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // `sub` prints a header line per message, then its data indented (src/client/format.rs).
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read stdout");
    stdout.read_line(&mut line).expect("read stdout");
    let _ = child.kill();
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    assert_eq!(line, "7-1 /news\n  hello\n", "halley sub printed the message ({status:?}, stderr {stderr})");
    assert!(server.join().expect("server").starts_with("GET /sub/news"));
}

#[test]
fn serve_still_reads_the_environment() {
    let output = halley(&["serve"]).output().expect("run halley serve");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("abc") || stderr.contains("workers"), "{}", text(&output));
    // The top-level form is `serve` too.
    let output = halley(&[]).output().expect("run halley");
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}
