//! A `halley` child process for tests of the real binary (signals, the environment, reloads):
//! its stderr lines arrive on a channel, so a test waits for the line that says something
//! happened instead of sleeping. Signals go through `kill` by the child's pid; the child is
//! killed and reaped when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use super::WAIT;

/// A running `halley` with its stderr on a channel.
#[derive(Debug)]
pub struct Halley {
    pub child: Child,
    lines: Receiver<String>,
}

impl Halley {
    /// Starts `halley ARGS` with `RUST_LOG` unset, then the variables of `env`.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Halley {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_halley"));
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped()).env_remove("RUST_LOG");
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

    /// The first stderr line from now on containing `needle` (panics after `WAIT`).
    pub fn line_with(&self, needle: &str) -> String {
        let mut lines = self.lines_until(needle);
        lines.pop().expect("the line with the needle")
    }

    /// The stderr lines from now on up to and including the first one containing `needle`
    /// (panics after `WAIT`, naming what was said).
    pub fn lines_until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no line with {needle:?}; said {seen:?}"));
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }

    /// Every stderr line until the child has exited (call after `wait`).
    pub fn rest(&self) -> Vec<String> {
        self.lines.iter().collect()
    }

    /// The address of the next "listening on http(s)://ADDR with N workers" line.
    pub fn addr(&self) -> SocketAddr {
        listening_addr(&self.line_with("listening on"))
    }

    /// Sends `signal` (a name such as "HUP") to the child, by its pid.
    pub fn signal(&self, signal: &str) {
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

/// The address in a "listening on http(s)://ADDR with N workers" line.
pub fn listening_addr(line: &str) -> SocketAddr {
    let start = line.find("://").expect("url") + 3;
    let end = start + line[start..].find(' ').expect("space after the address");
    line[start..end].parse().expect("address")
}
