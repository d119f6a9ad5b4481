//! A real `redis-server` for cluster tests: started on a free loopback port with its own
//! temporary data dir, stopped by PID. A missing `redis-server` fails the test loudly
//! (scripts/test.sh installs it); it is never skipped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TestServer, WAIT};
use halley::config::Config;

/// One redis-server process and its data dir.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    aof: bool,
}

impl Redis {
    /// Starts a server; with `aof`, every write is in an append-only file synced each write.
    pub fn start(aof: bool) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let dir = std::env::temp_dir().join(format!("halley-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut redis = Redis { child: None, port, dir, aof };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--dir", self.dir.to_str().expect("utf-8 dir")])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }, "--appendfsync", "always"])
            // Small stream nodes, so that an approximate MAXLEN trims at small sizes too.
            .args(["--stream-node-max-entries", "10", "--maxmemory-policy", "noeviction"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}): install it (apt-get install redis-server; scripts/test.sh does)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while !self.ping() {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PING over a raw socket.
    pub fn ping(&self) -> bool {
        self.command("PING\r\n").is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends one inline command and returns the first reply read (for small replies).
    pub fn command(&self, line: &str) -> Option<String> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        s.write_all(line.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// How many clients are connected (`INFO clients`), counting the one asking.
    pub fn clients(&self) -> usize {
        let info = self.command("INFO clients\r\n").expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no connected_clients in {info:?}"))
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([sig, &pid]).status().expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    }

    /// SIGTERM and wait: a clean stop (the AOF is complete).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and dir: with AOF it comes back with its data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts again on the same port with no data at all.
    pub fn restart_empty(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("temp dir");
        self.spawn();
    }

    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestServer {
    /// A cluster node on `redis`, with the test defaults changed by `tweak`.
    pub fn cluster(redis: &Redis, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let config = TestServer::config(|c| {
            c.network.redis = Some(redis.url());
            tweak(c);
        });
        let server = halley::server::start(config).expect("cluster node starts");
        let (addr, raw_addr, admin_addr) = (server.local_addr(), server.raw_addr(), server.admin_addr());
        TestServer { server: Some(server), addr, raw_addr, admin_addr }
    }
}
