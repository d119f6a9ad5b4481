//! Helpers for loopback tests: start a server on port 0, talk raw HTTP/1.1 to it.
#![allow(dead_code)] // each test binary uses a different subset

pub mod process;
pub mod redis;
pub mod ws;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use halley::config::Config;
use halley::server::{self, Server};
use halley::store::{MemoryStore, Store};

/// Upper bound for any single wait in a test; a hang fails instead of blocking CI.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server for one test, shut down when dropped.
pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
    pub raw_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    /// Starts with the test defaults (2 workers, unpinned, port 0) changed by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let config = TestServer::config(tweak);
        let store = Arc::new(MemoryStore::new(config.history));
        TestServer::with_store(config, store)
    }

    /// The test defaults (2 workers, unpinned, port 0) changed by `tweak`.
    pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config { workers: 2, pin_workers: false, ..Config::default() };
        config.network.listen = "127.0.0.1:0".parse().expect("addr");
        tweak(&mut config);
        config
    }

    /// Starts with `config` and another history backend.
    pub fn with_store(config: Config, store: Arc<dyn Store>) -> TestServer {
        let server = server::start_with_store(config, store).expect("server starts");
        let addr = server.local_addr();
        let raw_addr = server.raw_addr();
        let admin_addr = server.admin_addr();
        TestServer { server: Some(server), addr, raw_addr, admin_addr }
    }

    pub fn stats(&self) -> serde_json::Value {
        self.server.as_ref().expect("running").stats()
    }

    /// The running server, for what these helpers don't wrap (e.g. `reload_tls`).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// Total of a per-worker counter, e.g. "parked".
    pub fn worker_total(&self, name: &str) -> u64 {
        let stats = self.stats();
        stats["workers"].as_array().expect("workers").iter().map(|w| w[name].as_u64().unwrap_or(0)).sum()
    }

    /// Waits (polling the in-process counters, bounded by WAIT) until `total(name) == want`.
    pub fn wait_for(&self, name: &str, want: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.worker_total(name);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name}: wanted {want}, still {got}");
            std::thread::yield_now();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Graceful shutdown, returning when it is complete.
    pub fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("JSON body ({e}): {:?}", self.text()))
    }
}

/// One keep-alive connection; responses are read in order (pipelining works).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::with_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects from source address `from` (any 127.0.0.0/8 address works on loopback), for
    /// limits per client address.
    pub fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.bind(&SocketAddr::new(from, 0).into()).expect("bind the source address");
        socket.connect(&addr.into()).expect("connect");
        Client::with_stream(socket.into())
    }

    /// Like `connect`, but None when nothing listens there (a node that was killed).
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        TcpStream::connect(addr).ok().map(Client::with_stream)
    }

    fn with_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.response()
    }

    pub fn post(&mut self, path: &str, body: &[u8]) -> Response {
        self.send_post(path, body, "");
        self.response()
    }

    /// Sends a POST with `extra` header lines (each ending in \r\n) without reading the reply.
    pub fn send_post(&mut self, path: &str, body: &[u8], extra: &str) {
        let head = format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{extra}\r\n", body.len());
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.send(&req);
    }

    /// Reads one response (Content-Length, chunked or close-delimited).
    pub fn response(&mut self) -> Response {
        self.try_response().expect("a complete response")
    }

    /// Like `response`, but None when the server closed the connection first.
    pub fn try_response(&mut self) -> Option<Response> {
        loop {
            match parse_head(&self.buf) {
                Some((response, head_len)) => {
                    if response.status == 100 {
                        self.buf.drain(..head_len);
                        return Some(response);
                    }
                    return Some(self.body(response, head_len));
                }
                None => {
                    if !self.fill() {
                        assert!(self.buf.is_empty(), "connection closed inside a response head");
                        return None;
                    }
                }
            }
        }
    }

    fn body(&mut self, mut response: Response, head_len: usize) -> Response {
        self.buf.drain(..head_len);
        // 204 and 304 never have a body, whatever their Content-Length says (RFC 9112 §6.3).
        let no_body = response.status == 204 || response.status == 304;
        if no_body {
            return response;
        }
        if let Some(len) = response.header("content-length") {
            let len: usize = len.trim().parse().expect("numeric Content-Length");
            while self.buf.len() < len {
                assert!(self.fill(), "connection closed inside a body");
            }
            response.body = self.buf.drain(..len).collect();
        } else if response.header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            response.body = self.chunked();
        } else {
            while self.fill() {}
            response.body = std::mem::take(&mut self.buf);
        }
        response
    }

    fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break pos;
                }
                assert!(self.fill(), "closed inside chunked body");
            };
            let size_text = std::str::from_utf8(&self.buf[..line_end]).expect("chunk size");
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).expect("hex size");
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                assert!(self.fill(), "closed inside chunk");
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Reads more bytes; false on EOF (or a reset).
    fn fill(&mut self) -> bool {
        fill_from(&mut self.stream, &mut self.buf, std::io::ErrorKind::ConnectionReset)
    }

    /// True when the server has closed the connection (EOF or reset) and sent nothing more.
    pub fn is_closed(&mut self) -> bool {
        !self.fill() && self.buf.is_empty()
    }
}

/// A complete response head at the start of `buf`, as a `Response` without its body, and the
/// head's length; None while it is still partial.
pub fn parse_head(buf: &[u8]) -> Option<(Response, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(buf).expect("valid response head") else {
        return None;
    };
    let status = parsed.code.expect("status");
    let headers =
        parsed.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect();
    Some((Response { status, headers, body: Vec::new() }, len))
}

/// Appends what one read of `stream` returns to `buf`: true when bytes came, false on EOF or
/// an error of kind `end` (how this kind of stream reports its peer gone); other errors panic.
pub fn fill_from(stream: &mut impl Read, buf: &mut Vec<u8>, end: std::io::ErrorKind) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        Err(e) if e.kind() == end => false,
        Err(e) => panic!("read failed: {e}"),
    }
}

/// The session id in a Pushlet reply in the `xml-strict` or `xml` format (`p_id="..."`).
pub fn pushlet_session_id(text: &str) -> String {
    let start = text.find("p_id=\"").map(|i| i + 6).unwrap_or_else(|| panic!("no p_id in {text}"));
    let len = text[start..].find('"').expect("closing quote");
    text[start..start + len].to_owned()
}

/// Publishes `body` to `topic` on a fresh connection; returns the reply JSON.
pub fn publish(addr: SocketAddr, topic: &str, body: &[u8]) -> serde_json::Value {
    let mut c = Client::connect(addr);
    let r = c.post(&format!("/pub{topic}"), body);
    assert_eq!(r.status, 201, "publish failed: {}", r.text());
    r.json()
}

/// The current cursor for `topics` (a poll that returns at once).
pub fn cursor(addr: SocketAddr, topics: &str) -> String {
    let mut c = Client::connect(addr);
    let r = c.get(&format!("/sub{topics}?timeout=0"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["next"].as_str().expect("next").to_owned()
}

/// A streaming response being read incrementally (chunked or close-delimited).
pub struct StreamClient {
    pub client: Client,
    pub head: Response,
    chunked: bool,
    /// Decoded body bytes not yet taken by the test.
    pub body: Vec<u8>,
    /// The final chunk (or EOF) was seen.
    pub ended: bool,
}

impl StreamClient {
    /// Sends `request` and reads the response head.
    pub fn open(addr: SocketAddr, request: &str) -> StreamClient {
        let mut client = Client::connect(addr);
        client.send(request.as_bytes());
        let head = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = parsed.parse(&client.buf).expect("valid head") {
                let status = parsed.code.expect("status");
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                client.buf.drain(..len);
                break Response { status, headers, body: Vec::new() };
            }
            assert!(client.fill(), "closed before the response head");
        };
        let chunked = head.header("transfer-encoding").is_some_and(|te| te.contains("chunked"));
        StreamClient { client, head, chunked, body: Vec::new(), ended: false }
    }

    /// Reads until `done(&self.body)` or the stream ends; panics after WAIT.
    pub fn read_until(&mut self, mut done: impl FnMut(&[u8]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.body) {
            assert!(!self.ended, "stream ended first; body ends with: {:?}", self.tail());
            assert!(Instant::now() < deadline, "timed out; body ends with: {:?}", self.tail());
            self.decode_available();
            if !done(&self.body) && !self.ended && !self.client.fill() {
                self.decode_available();
                self.ended = true;
            }
        }
    }

    /// Reads until the body contains `needle` at least `count` times.
    pub fn read_until_count(&mut self, needle: &str, count: usize) {
        self.read_until(|body| String::from_utf8_lossy(body).matches(needle).count() >= count);
    }

    /// Reads until at least one complete line is there, then removes and returns all
    /// complete lines (so a long stream doesn't pile up in the test's memory).
    pub fn next_lines(&mut self) -> Vec<String> {
        self.read_until(|b| b.contains(&b'\n'));
        let end = self.body.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
        let lines: Vec<u8> = self.body.drain(..end).collect();
        String::from_utf8_lossy(&lines).lines().map(str::to_owned).collect()
    }

    /// Reads what arrives next into `body`; false once the stream has ended (EOF, a reset or
    /// the last chunk), as when the server's process is killed.
    pub fn read_more(&mut self) -> bool {
        self.decode_available();
        if !self.ended && !self.client.fill() {
            self.decode_available();
            self.ended = true;
        }
        self.decode_available();
        !self.ended
    }

    /// Reads to the end of the stream.
    pub fn read_to_end(&mut self) {
        let deadline = Instant::now() + WAIT;
        while !self.ended {
            assert!(Instant::now() < deadline, "stream did not end");
            self.decode_available();
            if !self.ended && !self.client.fill() {
                self.decode_available();
                self.ended = true;
            }
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The last bytes of the body, for failure messages.
    pub fn tail(&self) -> String {
        let start = self.body.len().saturating_sub(300);
        format!("({} bytes) …{}", self.body.len(), String::from_utf8_lossy(&self.body[start..]))
    }

    fn decode_available(&mut self) {
        if !self.chunked {
            self.body.append(&mut self.client.buf);
            return;
        }
        loop {
            let buf = &self.client.buf;
            let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else { return };
            let size_text = std::str::from_utf8(&buf[..line_end]).expect("chunk size line");
            let size = usize::from_str_radix(size_text.trim(), 16).expect("hex chunk size");
            if size == 0 {
                self.ended = true;
                return;
            }
            if buf.len() < line_end + 2 + size + 2 {
                return;
            }
            let data = buf[line_end + 2..line_end + 2 + size].to_vec();
            assert_eq!(&buf[line_end + 2 + size..line_end + 4 + size], b"\r\n", "chunk terminator");
            self.client.buf.drain(..line_end + 4 + size);
            self.body.extend_from_slice(&data);
        }
    }
}

/// Reads one HTTP request head from `stream` (a test playing the server for a client under
/// test), bounded by `WAIT`; returns it as text.
pub fn read_request_head(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).expect("read request");
        assert!(n > 0, "client closed before its request was complete");
        seen.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}
