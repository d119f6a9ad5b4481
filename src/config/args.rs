//! The unresolved options of `halley serve`: one declaration per option that is both its
//! command-line flag (clap) and its config-file key (serde).
//!
//! [`ServeArgs`] holds the few process-wide options (top-level keys in the file) and one struct
//! per section, each a TOML table of the same name (`[http]`, `[history]`, ...) and a heading in
//! `--help`. Every field is an `Option` so that "not given" is visible and flags can be laid
//! over the file; the defaults live with the resolved types in the parent module. A flag keeps
//! the name it always had (`--history-messages`); its key in the file is the field name inside
//! its table (`[history] max_messages`). The clap id of every option is its flag with '_' for
//! '-', which is also its key in the older flat file form (see `file.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

/// `halley serve` options, as flags and as keys of the `--config` TOML file.
///
/// Each help text states the option's default; a unit test checks them against
/// [`Config::default`](super::Config::default).
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(about = None, long_about = None)] // the doc above is for rustdoc, not for `--help`
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these options, in the table named by each heading; flags override it
    #[arg(long, value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Worker threads (one event loop each) [default: number of cores]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Don't pin worker threads to cores (`--no-pin=false` undoes the file's setting) [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        hide_possible_values = true
    )]
    pub no_pin: Option<bool>,

    /// Log filter in env_logger syntax (`info`, `warn,halley=debug`); wins over RUST_LOG, which applies only when this is not given [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// Log line format: `text`, or `json` (one JSON object per line) [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Directory where a graceful stop (SIGTERM, SIGINT) saves the history and the next start restores it; the saved file is consumed at start, so after an unclean stop (kill -9) the next start has a new epoch [default: none]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Access log: one line per HTTP request (time, peer, method, path with secrets redacted, status, bytes, duration) to this file, or `-` for stdout; in --log-format [default: none]
    #[arg(long, value_name = "PATH|-")]
    pub access_log: Option<PathBuf>,

    #[command(flatten)]
    #[serde(default)]
    pub network: NetworkArgs,

    #[command(flatten)]
    #[serde(default)]
    pub http: HttpArgs,

    #[command(flatten)]
    #[serde(default)]
    pub timeouts: TimeoutArgs,

    #[command(flatten)]
    #[serde(default)]
    pub longpoll: LongpollArgs,

    #[command(flatten)]
    #[serde(default)]
    pub history: HistoryArgs,

    #[command(flatten)]
    #[serde(default)]
    pub streams: StreamArgs,

    #[command(flatten)]
    #[serde(default)]
    pub sessions: SessionArgs,

    #[command(flatten)]
    #[serde(default)]
    pub access: AccessArgs,

    #[command(flatten)]
    #[serde(default)]
    pub web: WebArgs,

    #[command(flatten)]
    #[serde(default)]
    pub auth: AuthArgs,

    #[command(flatten)]
    #[serde(default)]
    pub tls: TlsArgs,
}

/// `[tls]`: TLS termination on the HTTP listener.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "TLS ([tls])")]
#[serde(deny_unknown_fields)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first); with --tls-key the HTTP listener speaks only TLS [default: none]
    #[arg(id = "tls_cert", long = "tls-cert", value_name = "PATH")]
    pub cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert [default: none]
    #[arg(id = "tls_key", long = "tls-key", value_name = "PATH")]
    pub key: Option<PathBuf>,
}

/// `[network]`: listeners and per-connection bounds.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Listeners and connections ([network])")]
#[serde(deny_unknown_fields)]
pub struct NetworkArgs {
    /// Address of the HTTP listeners, HOST:PORT with an IP or a host name [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<ListenAddr>,

    /// Address of the optional raw TCP listener (NUL-terminated JSON commands) [default: none]
    #[arg(long, value_name = "ADDR")]
    pub raw_listen: Option<ListenAddr>,

    /// Address of the admin listener: /metrics, /stats, /ready, /health for anyone who reaches it (keep it internal); without it /metrics and /stats answer loopback peers only [default: none]
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<ListenAddr>,

    /// Also accept POST /pub on the admin listener (`--admin-publish=false` undoes the file's setting) [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        hide_possible_values = true
    )]
    pub admin_publish: Option<bool>,

    /// Cluster mode: share one message log with every node on this Redis, redis://HOST:PORT/DB (see docs/CLUSTER.md) [default: none]
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// Listen backlog per worker [default: 4096]
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,

    /// Open connections across all workers; accepting pauses at it [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Unsent output a connection may hold: its pipelined requests and commands wait above it, and a streaming subscriber over it is sent an overflow notice and closed [default: 262144]
    #[arg(long, value_name = "BYTES")]
    pub max_pending_output: Option<ByteSize>,
}

/// `[http]`: request size limits.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "HTTP request limits ([http])")]
#[serde(deny_unknown_fields)]
pub struct HttpArgs {
    /// Request head limit in bytes, answered with 431 [default: 16384]
    #[arg(long, value_name = "BYTES")]
    pub max_head: Option<ByteSize>,

    /// Request-target limit in bytes, answered with 414 [default: 8192]
    #[arg(long, value_name = "BYTES")]
    pub max_uri: Option<ByteSize>,

    /// Request body limit in bytes, answered with 413 [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<ByteSize>,
}

/// `[timeouts]`: connection and shutdown deadlines.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Timeouts ([timeouts])")]
#[serde(deny_unknown_fields)]
pub struct TimeoutArgs {
    /// The request head must arrive within this many seconds, else 408 [default: 10]
    #[arg(id = "header_timeout", long = "header-timeout", value_name = "SECONDS")]
    pub header: Option<Seconds>,

    /// Idle keep-alive connections are closed after this many seconds [default: 60]
    #[arg(id = "keepalive_timeout", long = "keepalive-timeout", value_name = "SECONDS")]
    pub keepalive: Option<Seconds>,

    /// Seconds a graceful shutdown may take before connections are cut; 0 = at once [default: 5]
    #[arg(id = "shutdown_timeout", long = "shutdown-timeout", value_name = "SECONDS")]
    pub shutdown: Option<Seconds>,

    /// A closing connection's last output must be taken within this many seconds (one more period if the client is still reading, never more) [default: 30]
    #[arg(id = "close_write_timeout", long = "close-write-timeout", value_name = "SECONDS")]
    pub close_write: Option<Seconds>,
}

/// `[longpoll]`: long-poll holds and reply size.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Long-poll ([longpoll])")]
#[serde(deny_unknown_fields)]
pub struct LongpollArgs {
    /// Default long-poll hold in seconds, jittered by ±10% [default: 30]
    #[arg(id = "longpoll_timeout", long = "longpoll-timeout", value_name = "SECONDS")]
    pub timeout: Option<Seconds>,

    /// Upper bound in seconds for a client's `?timeout=` [default: 120]
    #[arg(id = "longpoll_max_timeout", long = "longpoll-max-timeout", value_name = "SECONDS")]
    pub max_timeout: Option<Seconds>,

    /// Most messages in one long-poll reply [default: 100]
    #[arg(long, value_name = "N")]
    pub max_batch: Option<usize>,
}

/// `[history]`: what the store keeps for replay.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "History ([history])")]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// Messages kept per topic for replay [default: 100]
    #[arg(id = "history_messages", long = "history-messages", value_name = "N")]
    pub max_messages: Option<usize>,

    /// Bytes kept per topic for replay [default: 1048576]
    #[arg(id = "history_bytes", long = "history-bytes", value_name = "BYTES")]
    pub max_bytes: Option<ByteSize>,

    /// Seconds a message stays in history [default: 3600]
    #[arg(id = "history_age", long = "history-age", value_name = "SECONDS")]
    pub max_age: Option<Seconds>,

    /// Messages kept in history across all topics [default: 1000000]
    #[arg(id = "history_total_messages", long = "history-total-messages", value_name = "N")]
    pub total_messages: Option<usize>,

    /// Bytes kept in history across all topics [default: 268435456]
    #[arg(id = "history_total_bytes", long = "history-total-bytes", value_name = "BYTES")]
    pub total_bytes: Option<ByteSize>,
}

/// `[streams]`: streaming transports and WebSocket.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Streaming transports and WebSocket ([streams])")]
#[serde(deny_unknown_fields)]
pub struct StreamArgs {
    /// Seconds between heartbeats on streaming transports (SSE, stream, iframe, multipart, WebSocket) [default: 15]
    #[arg(long, value_name = "SECONDS")]
    pub heartbeat_interval: Option<Seconds>,

    /// A streaming response ends cleanly (with a resume cursor) after this many seconds [default: 3600]
    #[arg(id = "stream_max_age", long = "stream-max-age", value_name = "SECONDS")]
    pub max_age: Option<Seconds>,

    /// A streaming response ends cleanly (with a resume cursor) after this many message bytes [default: 67108864]
    #[arg(id = "stream_max_bytes", long = "stream-max-bytes", value_name = "BYTES")]
    pub max_bytes: Option<ByteSize>,

    /// Reconnect delay in seconds suggested to SSE clients (`retry:`) [default: 2]
    #[arg(long, value_name = "SECONDS")]
    pub sse_retry: Option<Seconds>,

    /// Largest WebSocket message (and frame) accepted from a client, in bytes; larger closes with 1009 [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub ws_max_message: Option<ByteSize>,
}

/// `[sessions]`: the session protocols, Pushlet and Bayeux.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Pushlet and Bayeux sessions ([sessions])")]
#[serde(deny_unknown_fields)]
pub struct SessionArgs {
    /// Pushlet and Bayeux sessions across all workers; a join or handshake over it is refused [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Undelivered events a Pushlet session may fall behind before it gets an abort and is removed [default: 1000]
    #[arg(id = "session_queue", long = "session-queue", value_name = "N")]
    pub queue: Option<usize>,

    /// Seconds a Pushlet session lives without a request (renewed while a listen is open) [default: 300]
    #[arg(id = "session_lease", long = "session-lease", value_name = "SECONDS")]
    pub lease: Option<Seconds>,

    /// Seconds a new Pushlet or Bayeux session lives before its first listen or connect [default: 30]
    #[arg(id = "session_join_timeout", long = "session-join-timeout", value_name = "SECONDS")]
    pub join_timeout: Option<Seconds>,

    /// New sessions per second one client address may create on one worker (burst: twice that); more get 429; 0 = unlimited [default: 200]
    #[arg(id = "session_create_rate", long = "session-create-rate", value_name = "N")]
    pub create_rate: Option<usize>,

    /// Seconds a Pushlet pull refresh or stream waits before a heartbeat event [default: 20]
    #[arg(long, value_name = "SECONDS")]
    pub pushlet_read_timeout: Option<Seconds>,

    /// Seconds a Bayeux /meta/connect is held (advice.timeout) [default: 20]
    #[arg(long, value_name = "SECONDS")]
    pub bayeux_timeout: Option<Seconds>,

    /// Seconds a Bayeux session lives without a connect (maxInterval) [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub bayeux_max_interval: Option<Seconds>,
}

/// `[access]`: who may read and publish: CORS origins and the client-publish policy.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Origins and publishing ([access])")]
#[serde(deny_unknown_fields)]
pub struct AccessArgs {
    /// Origins allowed to read (GET) cross-origin, comma-separated; "*" = any [default: *]
    #[arg(long, value_name = "ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,

    /// Origins allowed to publish cross-origin, comma-separated; "" = none [default: none]
    #[arg(long, value_name = "ORIGINS", value_delimiter = ',')]
    pub cors_publish_origins: Option<Vec<String>>,

    /// Topic patterns Pushlet, Bayeux and WebSocket clients may publish to, comma-separated ("" = none; backends still publish with POST /pub) [default: /**]
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    pub client_publish: Option<Vec<String>>,

    /// Proxies (addresses or CIDR ranges, comma-separated) whose X-Forwarded-For names the client, for what is counted per client address [default: none]
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
}

/// `[auth]`: who may publish and read, by token (JWT; see docs/AUTH.md). Each option can also
/// come from its `HALLEY_AUTH_*` environment variable, so a secret need not be on the command
/// line.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Tokens ([auth])")]
#[serde(deny_unknown_fields)]
pub struct AuthArgs {
    /// Shared secret for HS256 tokens; turns token checks on [default: none]
    #[arg(
        long = "auth-secret",
        id = "auth_secret",
        value_name = "SECRET",
        env = "HALLEY_AUTH_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<super::Secret>,

    /// File holding the HS256 secret (trailing newline ignored), instead of --auth-secret [default: none]
    #[arg(long = "auth-secret-file", id = "auth_secret_file", value_name = "PATH", env = "HALLEY_AUTH_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// PEM public key (RSA for RS256, EC P-256 for ES256) verifying tokens; turns token checks on [default: none]
    #[arg(long = "auth-public-key", id = "auth_public_key", value_name = "PATH", env = "HALLEY_AUTH_PUBLIC_KEY")]
    pub public_key: Option<PathBuf>,

    /// Topic patterns anyone may read without a token once auth is on, comma-separated [default: none]
    #[arg(
        long = "auth-public-subscribe",
        id = "auth_public_subscribe",
        value_name = "PATTERNS",
        value_delimiter = ',',
        env = "HALLEY_AUTH_PUBLIC_SUBSCRIBE"
    )]
    pub public_subscribe: Option<Vec<String>>,

    /// Topic patterns anyone may publish to without a token once auth is on, comma-separated [default: none]
    #[arg(
        long = "auth-public-publish",
        id = "auth_public_publish",
        value_name = "PATTERNS",
        value_delimiter = ',',
        env = "HALLEY_AUTH_PUBLIC_PUBLISH"
    )]
    pub public_publish: Option<Vec<String>>,

    /// Name of the cookie a token may come in [default: halley_token]
    #[arg(long = "auth-cookie", id = "auth_cookie", value_name = "NAME", env = "HALLEY_AUTH_COOKIE")]
    pub cookie: Option<String>,
}

/// `[web]`: the pages Halley serves itself (the landing page, the demos, the dashboard,
/// halley.js) and the built-in demo publisher.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Pages and demos ([web])")]
#[serde(deny_unknown_fields)]
pub struct WebArgs {
    /// Serve no pages (/, /demo/*, /dashboard, /latest, /halley.js answer 404) and publish no /halley/stats (`--no-web=false` undoes the file's setting) [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        hide_possible_values = true
    )]
    pub no_web: Option<bool>,

    /// Publish simulated data for the demo pages: stock ticks, monitored hosts, chat lines, orders (`--demo=false` undoes the file's setting) [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        hide_possible_values = true
    )]
    pub demo: Option<bool>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// env_logger's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `msg`.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format (use text or json)")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LogFormat, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A listen address as written: `IP:PORT` or `HOST:PORT`. A host name is resolved once, when
/// the option is read, to its first address (`localhost:8080` is `127.0.0.1:8080` on most
/// systems); one that does not resolve is an error naming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenAddr, String> {
        if let Ok(addr) = text.parse() {
            return Ok(ListenAddr(addr));
        }
        if !text.contains(':') {
            return Err(format!("{text:?} is not HOST:PORT"));
        }
        use std::net::ToSocketAddrs;
        let mut addrs = text.to_socket_addrs().map_err(|e| format!("cannot resolve {text:?}: {e}"))?;
        addrs.next().map(ListenAddr).ok_or_else(|| format!("{text:?} resolves to no address"))
    }
}

impl<'de> serde::Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ListenAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A duration as written: seconds (`30`, `2.5`) or with a unit: `ms`, `s`, `m`, `h`, `d`
/// (`500ms`, `30s`, `1h`). In the file, a number or such a string.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seconds(pub f64);

impl std::str::FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Seconds, String> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<f64>() {
            // Plain seconds (and "NaN" or "inf", which validation refuses by name).
            return Ok(Seconds(secs));
        }
        let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let scale = match unit.trim() {
            "" | "s" => 1.0,
            "ms" => 0.001,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            other => return Err(format!("unknown duration unit {other:?} (use ms, s, m, h or d)")),
        };
        let value: f64 = number.trim().parse().map_err(|_| format!("{text:?} is not a duration like 30, 30s or 1h"))?;
        Ok(Seconds(value * scale))
    }
}

/// A size in bytes as written: a number of bytes, or with a unit: `KiB`, `MiB`, `GiB` (powers
/// of 1024) or `KB`, `MB`, `GB` (powers of 1000), `B` for bytes (`256MiB`, `64KiB`). In the
/// file, an integer or such a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => return Err(format!("unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)")),
        };
        let value: u64 = number.trim().parse().map_err(|_| format!("{text:?} is not a size like 65536 or 256MiB"))?;
        value
            .checked_mul(scale)
            .and_then(|bytes| usize::try_from(bytes).ok())
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

/// Reads a number, or a string with a unit, from the file: anything else is a type error
/// ("invalid type: ..., expected ...") like every other option's.
struct UnitVisitor<T>(&'static str, std::marker::PhantomData<T>);

impl<T> serde::de::Visitor<'_> for UnitVisitor<T>
where
    T: std::str::FromStr<Err = String> + From<f64>,
{
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<T, E> {
        Ok(T::from(n as f64))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<T, E> {
        Ok(T::from(n as f64))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<T, E> {
        Ok(T::from(n))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

impl From<f64> for Seconds {
    fn from(secs: f64) -> Seconds {
        Seconds(secs)
    }
}

impl From<f64> for ByteSize {
    /// A number of bytes from the file; a negative or fractional one is clamped or cut, which
    /// validation then judges like any other size (`0` is refused where it must be positive).
    fn from(bytes: f64) -> ByteSize {
        ByteSize(bytes.max(0.0) as usize)
    }
}

impl<'de> serde::Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Seconds, D::Error> {
        deserializer.deserialize_any(UnitVisitor("seconds, or a duration like \"30s\"", std::marker::PhantomData))
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        deserializer.deserialize_any(UnitVisitor("bytes, or a size like \"256MiB\"", std::marker::PhantomData))
    }
}
