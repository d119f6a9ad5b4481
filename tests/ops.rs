//! Operations conventions of `halley serve`, on the real binary: options from `HALLEY_<OPTION>`
//! environment variables (a flag still wins), SIGHUP never ends the server, and an address
//! another process already listens on is refused instead of silently shared.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use util::{Client, TestServer, WAIT};

/// A `halley serve` child whose stderr lines arrive on a channel.
struct Halley {
    child: Child,
    lines: Receiver<String>,
}

impl Halley {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Halley {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_halley"));
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped()).env("RUST_LOG", "info");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().expect("spawn halley");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Halley { child, lines }
    }

    /// The first stderr line containing `needle`.
    fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Sends `signal` (a name such as "HUP") to this child, by its pid.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(status.expect("run kill").success(), "kill -{signal}");
    }
}

impl Drop for Halley {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a "listening on http://ADDR with N workers" line.
fn listening_addr(line: &str) -> std::net::SocketAddr {
    let start = line.find("http://").expect("url") + 7;
    let end = start + line[start..].find(' ').expect("space after the address");
    line[start..end].parse().expect("address")
}

#[test]
fn options_come_from_the_environment_and_sighup_does_not_end_the_server() {
    let env = [("HALLEY_WORKERS", "1"), ("HALLEY_NO_PIN", "true"), ("HALLEY_LISTEN", "127.0.0.1:0")];
    let mut halley = Halley::spawn(&["serve"], &env);
    let line = halley.line_with("listening on");
    assert!(line.contains("with 1 workers (not pinned)"), "{line}");
    let addr = listening_addr(&line);
    halley.signal("HUP");
    halley.line_with("SIGHUP");
    assert_eq!(Client::connect(addr).get("/health").status, 200, "still serving after SIGHUP");
    halley.signal("TERM");
    let status = halley.child.wait().expect("wait");
    assert!(status.success(), "a graceful exit: {status}");

    // A flag wins over the environment.
    let halley = Halley::spawn(&["serve", "--workers", "2"], &env);
    assert!(halley.line_with("listening on").contains("with 2 workers"));
}

#[test]
fn an_address_another_process_listens_on_is_refused() {
    let first = TestServer::start();
    let addr = first.addr.to_string();
    // In process: the library refuses with AddrInUse and names the address.
    let config = TestServer::config(|c| c.network.listen = first.addr);
    let err = halley::server::start(config).expect_err("a second server on the same address");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&addr), "{err}");
    // The binary says so and exits with a failure.
    let mut halley = Halley::spawn(&["serve", "--listen", &addr, "--workers", "1"], &[]);
    halley.line_with("already in use");
    assert!(!halley.child.wait().expect("wait").success());
    // The first server was not disturbed.
    assert_eq!(first.client().get("/health").status, 200);
}
