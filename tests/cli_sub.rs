//! `halley sub`, the binary, against a canned server over loopback: a reply holding a message
//! the client cannot decode (JSON nested past serde's limit, as an older server could store) is
//! reported on stderr and skipped, the next message is printed (header line and data block), and the next poll resumes after
//! both instead of retrying the poison message for ever.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use util::WAIT;

/// Reads one request head from `stream` and returns its request line.
fn request_line(stream: &mut TcpStream) -> String {
    util::read_request_head(stream).lines().next().unwrap_or("").to_owned()
}

#[test]
fn sub_skips_a_message_it_cannot_decode_reports_it_and_goes_on() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let server = thread::spawn(move || {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        let body = format!(
            r#"{{"messages":[{{"id":"7-1","topic":"/t","time":1,"data":{deep}}},{{"id":"7-2","topic":"/t","time":2,"data":"after"}}],"next":"7-2"}}"#
        );
        let (mut first, _) = listener.accept().expect("accept");
        let _ = lines_tx.send(request_line(&mut first));
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        first.write_all(head.as_bytes()).expect("write head");
        first.write_all(body.as_bytes()).expect("write body");
        drop(first);
        // The next poll: record where it resumes from, then hold it until the test ends.
        let (mut second, _) = listener.accept().expect("accept");
        let _ = lines_tx.send(request_line(&mut second));
        second
    });

    let mut child = Command::new(env!("CARGO_BIN_EXE_halley"))
        .args(["sub", "--server", &format!("http://127.0.0.1:{port}"), "--since", "all", "t"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run halley sub");
    let (out_tx, out_rx) = mpsc::channel::<(&str, String)>();
    for (name, pipe) in [
        ("stdout", Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>),
        ("stderr", Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>),
    ] {
        let tx = out_tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send((name, line));
            }
        });
    }

    let mut printed = Vec::new();
    let mut reported = Vec::new();
    while printed.len() < 2 || reported.is_empty() {
        match out_rx.recv_timeout(WAIT) {
            Ok(("stdout", line)) => printed.push(line),
            Ok((_, line)) => reported.push(line),
            Err(_) => break,
        }
    }
    let first = lines_rx.recv_timeout(WAIT).expect("first poll");
    let second = lines_rx.recv_timeout(WAIT);
    let _ = child.kill();
    let _ = child.wait();

    assert!(first.starts_with("GET /sub/t?since=all"), "{first}");
    assert_eq!(printed, ["7-2 /t", "  after"], "stderr: {reported:?}");
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(reported[0].starts_with("halley sub: skipped message 7-1: cannot decode it"), "{reported:?}");
    let second = second.expect("a second poll");
    assert!(second.starts_with("GET /sub/t?since=7-2"), "resumes past the poison message: {second}");
    drop(server.join());
}
