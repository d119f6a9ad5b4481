//! The `halley pub` / `halley sub` clients of the native API, over `ureq` (blocking HTTP/1.1,
//! TLS by rustls). A module of the `halley` binary, not of the library: the server never needs it.
//!
//! This file owns what both commands share: the connection options (`--server`, `--cacert`,
//! `--token`), the [`Connection`] built from them (one `ureq` agent: timeouts, body size limit,
//! trusted roots, the bearer token), the request paths, and the one-line [`ClientError`]s with the
//! exit code each maps to. `publish` and `subscribe` hold the commands; `format` prints messages.

pub mod format;
pub mod publish;
pub mod subscribe;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use ureq::http::Uri;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::Agent;

pub use publish::PubArgs;
pub use subscribe::SubArgs;

/// Largest `--cacert` file read, in bytes (a bundle of a few hundred certificates fits).
const MAX_CACERT_FILE: u64 = 4 * 1024 * 1024;

/// Largest response head accepted, in bytes (status line and headers).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Where and how to reach the server: flattened into both commands.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Server URL: http:// or https://, optionally with a path prefix (behind a reverse proxy)
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: ServerUrl,
    /// PEM file of the CA certificate(s) to trust for an https:// server, instead of the
    /// system's roots (for a private CA)
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Bearer token sent as `Authorization: Bearer TOKEN`
    #[arg(long, env = "HALLEY_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// A server base URL: `http[s]://host[:port][/prefix]`, kept without a trailing '/'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    base: String,
}

impl ServerUrl {
    /// The URL as requests are built from it (`scheme://authority[/prefix]`).
    pub fn as_str(&self) -> &str {
        &self.base
    }

    fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServerUrl {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, String> {
        let uri: Uri = input.parse().map_err(|e| format!("{e}; expected http[s]://host[:port]"))?;
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase) {
            Some(scheme) if scheme == "http" || scheme == "https" => scheme,
            Some(_) => return Err("only http:// and https:// servers are supported".into()),
            None => return Err("expected http[s]://host[:port]".into()),
        };
        let authority = uri.authority().ok_or("missing host")?;
        if authority.host().is_empty() {
            return Err("missing host".into());
        }
        if authority.as_str().contains('@') {
            return Err("no user:password@ in the URL; pass a token with --token".into());
        }
        let has_port = authority.as_str().len() > authority.host().len();
        if has_port && authority.port_u16().is_none() {
            return Err("port must be a number from 0 to 65535".into());
        }
        if uri.query().is_some() || input.contains('#') {
            return Err("no query or fragment in the server URL".into());
        }
        let prefix = uri.path().trim_end_matches('/');
        Ok(ServerUrl { base: format!("{scheme}://{authority}{prefix}") })
    }
}

/// Why a command failed, as one line; the variant says what to do about it.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A bad argument or setting: nothing was sent, and retrying cannot help (exit 2).
    Usage(String),
    /// The server could not be reached or broke off: worth retrying later (exit 1 if not).
    Transient(String),
    /// The server answered in a way that retrying will not change (TLS refused, too large).
    Fatal(String),
}

impl ClientError {
    /// True for failures worth retrying with the same request.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Transient(_))
    }

    /// The exit code for this failure: 2 for bad usage, 1 for a failed request.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Usage(line) | ClientError::Transient(line) | ClientError::Fatal(line) => f.write_str(line),
        }
    }
}

/// A response with its body read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Server-side trouble worth waiting out (overload, a restart behind a proxy) rather than a
    /// request the server will never accept.
    pub fn is_retryable(&self) -> bool {
        self.status == 429 || self.status == 408 || self.status >= 500
    }

    /// The reason of a failed response in one line: status and the first line of its text
    /// body (the server's refusals are one line), else just the status.
    pub fn failure_reason(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        match text.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(line) => format!("{} {}", self.status, truncate(line, 300)),
            None => format!("HTTP status {}", self.status),
        }
    }
}

/// One server, reached through one agent (which keeps a connection alive between polls).
#[derive(Debug)]
pub struct Connection {
    agent: Agent,
    server: ServerUrl,
    authorization: Option<String>,
    body_limit: u64,
}

impl Connection {
    /// An agent for `args`: every request done within `timeout` (connect included), bodies
    /// bounded by `body_limit` bytes, no redirects followed (a POST must not turn into a GET).
    pub fn new(args: &ServerArgs, timeout: Duration, body_limit: u64) -> Result<Connection, ClientError> {
        let authorization = args.token.as_deref().map(bearer).transpose()?;
        if args.cacert.is_some() && !args.server.is_https() {
            return Err(ClientError::Usage("--cacert needs an https:// --server".into()));
        }
        let roots = match &args.cacert {
            Some(path) => RootCerts::new_with_certs(&read_cacert(path)?),
            None => RootCerts::PlatformVerifier,
        };
        let tls = TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(roots).build();
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .max_response_header_size(MAX_RESPONSE_HEAD)
            .user_agent(concat!("halley/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        Ok(Connection { agent: config.new_agent(), server: args.server.clone(), authorization, body_limit })
    }

    /// `GET {server}{path_and_query}`.
    pub fn get(&self, path_and_query: &str) -> Result<Reply, ClientError> {
        let mut request = self.agent.get(self.url(path_and_query));
        if let Some(value) = &self.authorization {
            request = request.header("Authorization", value);
        }
        self.finish(request.call())
    }

    /// `POST {server}{path_and_query}` with `body` as `content_type`.
    pub fn post(&self, path_and_query: &str, content_type: &str, body: &[u8]) -> Result<Reply, ClientError> {
        let mut request = self.agent.post(self.url(path_and_query)).header("Content-Type", content_type);
        if let Some(value) = &self.authorization {
            request = request.header("Authorization", value);
        }
        self.finish(request.send(body))
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.server)
    }

    fn finish(&self, sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, ClientError> {
        let mut response = sent.map_err(|e| self.describe(e))?;
        let status = response.status().as_u16();
        let body =
            response.body_mut().with_config().limit(self.body_limit).read_to_vec().map_err(|e| self.describe(e))?;
        Ok(Reply { status, body })
    }

    /// One line for a failed request, naming the server (never the token).
    fn describe(&self, error: ureq::Error) -> ClientError {
        let server = &self.server;
        match error {
            ureq::Error::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused => {
                    ClientError::Transient(format!("cannot connect to {server}: connection refused"))
                }
                // rustls reports a failed handshake as InvalidData wrapping its error.
                io::ErrorKind::InvalidData if server.is_https() => tls_failure(server, &e.to_string()),
                _ => ClientError::Transient(format!("connection to {server} failed: {e}")),
            },
            ureq::Error::Rustls(e) => tls_failure(server, &e.to_string()),
            ureq::Error::Tls(e) => tls_failure(server, e),
            ureq::Error::Timeout(_) => ClientError::Transient(format!("timed out waiting for {server}")),
            ureq::Error::HostNotFound => ClientError::Transient(format!("cannot resolve the host of {server}")),
            ureq::Error::ConnectionFailed => ClientError::Transient(format!("cannot connect to {server}")),
            ureq::Error::BodyExceedsLimit(limit) => {
                ClientError::Fatal(format!("response from {server} is larger than the limit of {limit} bytes"))
            }
            ureq::Error::Protocol(e) => ClientError::Transient(format!("malformed response from {server}: {e}")),
            ureq::Error::Http(e) => ClientError::Usage(format!("invalid request: {e}")),
            ureq::Error::BadUri(e) => ClientError::Usage(format!("invalid URL: {e}")),
            other => ClientError::Transient(format!("request to {server} failed: {other}")),
        }
    }
}

/// A TLS failure is not retried: a certificate the client does not trust stays untrusted.
fn tls_failure(server: &ServerUrl, reason: &str) -> ClientError {
    let hint = if reason.contains("certificate") || reason.contains("Certificate") {
        " (for a private CA, pass its certificate with --cacert FILE)"
    } else {
        ""
    };
    ClientError::Fatal(format!("TLS with {server} failed: {reason}{hint}"))
}

/// The `Authorization` value for `token`. RFC 6750 §2.1 `b64token` characters only, which also
/// keeps CR/LF out of the header; the error never shows the token.
fn bearer(token: &str) -> Result<String, ClientError> {
    let token = token.trim();
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if token.is_empty() || !token.bytes().all(b64token) {
        return Err(ClientError::Usage("invalid --token: a bearer token is letters, digits and -._~+/= only".into()));
    }
    Ok(format!("Bearer {token}"))
}

/// The certificates of a PEM file; one that holds none is an error naming the file.
fn read_cacert(path: &std::path::Path) -> Result<Vec<Certificate<'static>>, ClientError> {
    use std::io::Read;
    let usage = |what: String| ClientError::Usage(format!("--cacert {}: {what}", path.display()));
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CACERT_FILE + 1).read_to_end(&mut pem))
        .map_err(|e| usage(e.to_string()))?;
    if pem.len() as u64 > MAX_CACERT_FILE {
        return Err(usage(format!("larger than {MAX_CACERT_FILE} bytes")));
    }
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(cert) = item.map_err(|e| usage(format!("not PEM: {e}")))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(usage("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Builds the path for publishing to `topic` (given with or without its leading '/').
pub fn pub_path(topic: &str) -> Result<String, ClientError> {
    let topic = topic.trim_start_matches('/');
    if topic.is_empty() {
        return Err(ClientError::Usage("empty topic".into()));
    }
    Ok(format!("/pub/{}", encode_path(topic)))
}

/// Builds the path subscribing to a comma-separated list of topics (each with or without its
/// leading '/'): `/sub/a,/b` for `a,b`.
pub fn sub_path(topics: &str) -> Result<String, ClientError> {
    let mut parts = Vec::new();
    for topic in topics.split(',') {
        let topic = topic.trim().trim_start_matches('/');
        if topic.is_empty() {
            return Err(ClientError::Usage("empty topic".into()));
        }
        parts.push(format!("/{}", encode_path(topic)));
    }
    Ok(format!("/sub{}", parts.join(",")))
}

/// Encodes a query parameter value (`application/x-www-form-urlencoded`).
pub fn encode_query(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Percent-encodes a topic for a path: keeps RFC 3986 §3.3 `pchar`s and '/', encodes the rest
/// (including '%', so topic names are taken literally).
fn encode_path(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len());
    for &b in topic.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// At most `max` bytes of `line` (cut at a character boundary), marked when cut.
fn truncate(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let parse = |s: &str| s.parse::<ServerUrl>();
        assert_eq!(parse("http://127.0.0.1:8080").expect("ok").as_str(), "http://127.0.0.1:8080");
        assert_eq!(parse("HTTPS://example.com/").expect("ok").as_str(), "https://example.com");
        assert_eq!(parse("https://example.com/halley/").expect("ok").as_str(), "https://example.com/halley");
        assert_eq!(parse("http://[::1]:9000").expect("ok").as_str(), "http://[::1]:9000");
        for bad in ["example.com:80", "ftp://h", "http://", "http://h:99999", "http://u:p@h", "http://h/?q=1", "/x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_checked_and_never_echoed() {
        assert_eq!(bearer(" abc.DEF-1_~+/= ").expect("ok"), "Bearer abc.DEF-1_~+/=");
        for bad in ["", "sec ret", "secret\r\nX-Evil: 1", "tok\u{e9}n"] {
            let err = bearer(bad).expect_err(bad);
            assert_eq!(err.exit_code(), 2);
            assert!(bad.is_empty() || !err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn topic_paths() {
        assert_eq!(pub_path("news").expect("ok"), "/pub/news");
        assert_eq!(pub_path("/news/sports").expect("ok"), "/pub/news/sports");
        assert_eq!(pub_path("a b%").expect("ok"), "/pub/a%20b%25");
        assert!(pub_path("/").is_err());
        assert_eq!(sub_path("news,/sport").expect("ok"), "/sub/news,/sport");
        assert_eq!(sub_path("/news/*").expect("ok"), "/sub/news/*");
        assert!(sub_path("a,,b").is_err());
        assert_eq!(encode_query("1795325654-7"), "1795325654-7");
        assert_eq!(encode_query("a&b c"), "a%26b+c");
    }

    #[test]
    fn failure_reasons_are_one_line() {
        let reply = Reply { status: 503, body: Vec::new() };
        assert_eq!(reply.failure_reason(), "HTTP status 503");
        let reply = Reply { status: 404, body: b"\nno such topic\nmore\n".to_vec() };
        assert_eq!(reply.failure_reason(), "404 no such topic");
        let reply = Reply { status: 400, body: "\u{e9}".repeat(400).into_bytes() };
        assert!(reply.failure_reason().len() < 320);
    }

    #[test]
    fn a_missing_or_empty_cacert_is_a_usage_error() {
        let missing = read_cacert(std::path::Path::new("/nonexistent/ca.pem")).expect_err("missing");
        assert!(matches!(missing, ClientError::Usage(_)), "{missing}");
        let dir = std::env::temp_dir().join(format!("halley-cacert-{}", std::process::id()));
        std::fs::write(&dir, b"not a certificate\n").expect("write");
        let empty = read_cacert(&dir).expect_err("empty");
        let _ = std::fs::remove_file(&dir);
        assert!(empty.to_string().contains("no PEM certificate"), "{empty}");
    }
}
