//! `halley pub` and `halley sub` against an https:// server (TLS terminated by Halley, with a
//! certificate from a test CA made here with rcgen): trusted with `--cacert`, refused with one
//! clear line (exit 1) without it, since the test CA is not among the system's roots.

mod tls_util;
mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;

use halley::config::Tls;
use tls_util::CertFiles;
use util::{TestServer, WAIT};

/// `halley` with the environment that would change what it sends cleared.
fn halley(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_halley"));
    command.args(args).stdin(Stdio::null());
    for var in ["HALLEY_TOKEN", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        command.env_remove(var);
    }
    command
}

fn run(args: &[&str]) -> Output {
    halley(args).output().expect("run halley")
}

#[test]
fn pub_and_sub_over_https_with_cacert_and_a_clear_refusal_without() {
    let files = CertFiles::new("localhost");
    let server = TestServer::with(|c| c.tls = Some(Tls { cert: files.cert.clone(), key: files.key.clone() }));
    let url = format!("https://localhost:{}", server.addr.port());
    let ca = files.ca_file.to_str().expect("UTF-8 path");

    let published = run(&["pub", "--server", &url, "--cacert", ca, "/secure", "over tls"]);
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    let ack: serde_json::Value = serde_json::from_slice(&published.stdout).expect("JSON ack");
    let id = ack["id"].as_str().expect("id");

    let mut sub = halley(&["sub", "--server", &url, "--cacert", ca, "--since", "all", "secure"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run halley sub");
    let stdout = sub.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let lines: Vec<String> = (0..2).filter_map(|_| rx.recv_timeout(WAIT).ok()).collect();
    let _ = sub.kill();
    let _ = sub.wait();
    assert_eq!(lines, [format!("{id} /secure"), "  over tls".to_owned()]);

    // The system's roots do not know the test CA: one line, exit 1, with the way out.
    let refused = run(&["pub", "--server", &url, "/secure", "x"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("halley pub: TLS with {url} failed: ")), "{stderr}");
    assert!(stderr.contains("--cacert"), "{stderr}");
}
