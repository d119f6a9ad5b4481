//! A `halley serve` subprocess in cluster mode, for tests that must kill a node the hard way
//! (`kill -9` by PID): its stderr lines are drained on a thread, its address is read from its
//! listening line (it binds port 0).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use super::redis::Redis;
use super::WAIT;

/// One node process; killed (SIGKILL, by PID) when dropped if still running.
pub struct Node {
    child: Child,
    pub addr: SocketAddr,
    /// Every stderr line after the listening line.
    pub lines: Receiver<String>,
}

impl Node {
    /// Starts `halley serve --redis <redis> --listen 127.0.0.1:0 --workers 2 --no-pin ...extra`
    /// and waits for its listening line.
    pub fn start(redis: &Redis, extra: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_halley"))
            .args(["serve", "--redis", &redis.url(), "--listen", "127.0.0.1:0", "--workers", "2", "--no-pin"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn halley");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut said = Vec::new();
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("node not listening; said {said:?}"));
            if line.contains("listening on") {
                break line;
            }
            said.push(line);
        };
        let start = line.find("http://").expect("url") + "http://".len();
        let end = start + line[start..].find(' ').expect("space after the address");
        let addr = line[start..end].parse().expect("address");
        Node { child, addr, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, and waits until the process is gone (its sockets closed by the kernel).
    pub fn kill9(&mut self) {
        let status = Command::new("kill").args(["-KILL", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -KILL {}", self.pid());
        let _ = self.child.wait();
    }

    /// The first stderr line from now on containing `needle`; panics after WAIT.
    pub fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // `Child::kill` signals this child's own PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
