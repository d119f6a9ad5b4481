//! The reverse-proxy recipe `deploy/nginx.conf`, run for real: this test starts its own nginx
//! (in the foreground, under a temporary prefix, on a free loopback port, stopped by its PID)
//! in front of a Halley, and checks long-poll, SSE and WebSocket through it, and that
//! `/metrics` and `/stats` (which Halley answers to loopback peers, nginx's address) are kept in. nginx is
//! installed with apt-get when missing (as scripts/test.sh installs its tools).

mod util;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::ws::Ws;
use util::{Client, StreamClient, TestServer, WAIT};

/// An nginx started for one test, killed (by its PID) and its prefix removed when dropped.
struct Nginx {
    child: Child,
    prefix: PathBuf,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers and exits (SIGKILL
        // would leave the workers behind; SIGQUIT would wait for the open streams).
        let pid = self.child.id().to_string();
        let stopped = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

fn nginx_binary() -> PathBuf {
    let found = |path: &str| Command::new(path).arg("-v").output().is_ok_and(|o| o.status.success());
    for path in ["nginx", "/usr/sbin/nginx"] {
        if found(path) {
            return path.into();
        }
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "nginx"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    assert!(
        install.is_ok_and(|s| s.success()) && found("/usr/sbin/nginx"),
        "nginx is missing and could not be installed: apt-get install -y --no-install-recommends nginx"
    );
    "/usr/sbin/nginx".into()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Starts nginx with deploy/nginx.conf pointed at `upstream`.
fn start_nginx(upstream: SocketAddr) -> Nginx {
    let binary = nginx_binary();
    let prefix = std::env::temp_dir().join(format!("halley-nginx-{}-{}", std::process::id(), upstream.port()));
    std::fs::create_dir_all(&prefix).expect("prefix");
    let recipe = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf")).expect("recipe");
    let port = free_port();
    let p = prefix.display();
    let temp_paths = format!(
        "http {{\n    client_body_temp_path {p}/body;\n    proxy_temp_path {p}/proxy;\n    \
         fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n"
    );
    let config = recipe
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("server 127.0.0.1:8080;", &format!("server {upstream};"))
        .replace("worker_processes auto;", "worker_processes 1;")
        .replace("worker_connections 65535;", "worker_connections 256;")
        .replace("worker_rlimit_nofile 1048576;", "")
        .replace("/var/log/nginx/", &format!("{p}/"))
        .replacen("http {\n", &temp_paths, 1);
    assert_ne!(config, recipe);
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, config).expect("write nginx.conf");
    let globals = format!("daemon off; pid {p}/nginx.pid; error_log {p}/startup-error.log;");
    let child = Command::new(binary)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-g", &globals])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut nginx = Nginx { child, prefix, addr };
    // Ready when it accepts connections (or failed when it exited).
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(nginx.prefix.join("startup-error.log")).unwrap_or_default();
            panic!("nginx exited ({status}): {log}");
        }
        assert!(Instant::now() < deadline, "nginx did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
    nginx
}

#[test]
fn long_poll_sse_and_websocket_through_nginx() {
    let server = TestServer::start();
    let nginx = start_nginx(server.addr);

    // Long-poll: parked through the proxy, answered when a message arrives.
    let mut poll = Client::connect(nginx.addr);
    poll.send(b"GET /sub/lp?timeout=30 HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("parked", 1);
    util::publish(server.addr, "/lp", b"through nginx");
    let reply = poll.response();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["messages"][0]["data"], "through nginx", "{}", reply.text());

    // SSE: each event arrives while the stream stays open (proxy_buffering off).
    let mut sse =
        StreamClient::open(nginx.addr, "GET /sub/ev HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    assert_eq!(sse.head.status, 200);
    assert_eq!(sse.head.header("content-type"), Some("text/event-stream"));
    server.wait_for("streaming", 1);
    util::publish(server.addr, "/ev", b"first");
    sse.read_until(|body| String::from_utf8_lossy(body).contains("data: first"));
    util::publish(server.addr, "/ev", b"second");
    sse.read_until(|body| String::from_utf8_lossy(body).contains("data: second"));
    assert!(!sse.ended);

    // WebSocket: the upgrade passes, and frames flow both ways.
    let mut ws = Ws::connect(nginx.addr, "/ws");
    ws.send_json(serde_json::json!({"op": "subscribe", "topics": ["/chat"], "id": 1}));
    assert_eq!(ws.json()["type"], "ack");
    util::publish(server.addr, "/chat", b"hello socket");
    let message = ws.json();
    assert_eq!(message["data"], "hello socket", "{message}");

    // Halley would answer these to nginx's loopback address: the recipe keeps them inside.
    for path in ["/metrics", "/stats"] {
        assert_eq!(Client::connect(nginx.addr).get(path).status, 403, "{path}");
    }
}
