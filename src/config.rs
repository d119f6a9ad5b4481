//! Server configuration: `halley serve` flags plus an optional TOML file, resolved into one
//! validated [`Config`].
//!
//! Every option exists once as an `Option<T>` field of [`ServeArgs`], which is both the clap
//! argument struct and the serde shape of the file (keys are the flag names with '-' turned
//! into '_'). Precedence: a flag beats the file, the file beats the default. Unknown keys in
//! the file are errors that name the key, so a typo cannot silently fall back to a default.

use std::fmt;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most worker threads accepted.
pub const MAX_WORKERS: usize = 1024;

/// Largest accepted `--max-head`, in bytes: a worker may buffer this much per reading connection.
pub const MAX_HEAD_LIMIT: usize = 1 << 20;

/// Largest accepted duration option, in seconds (one year); keeps timer arithmetic far from
/// overflow.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Largest config file read, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// `halley serve` options, as flags and as keys of the `--config` TOML file.
///
/// Every field is optional so that "not given" is visible and the layers can be merged; the
/// defaults live in [`Config::default`] and each help text repeats its default.
#[derive(clap::Args, serde::Deserialize, Clone, Debug, Default, PartialEq)]
#[command(about = None, long_about = None)] // the doc above is for rustdoc, not for `--help`
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these options (keys use '_' for '-'); flags override it
    #[arg(long, value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address of the HTTP listeners [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

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

    /// Listen backlog per worker [default: 4096]
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,

    /// Open connections across all workers; accepting pauses at it [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Request head limit in bytes, answered with 431 [default: 16384]
    #[arg(long, value_name = "BYTES")]
    pub max_head: Option<usize>,

    /// Request-target limit in bytes, answered with 414 [default: 8192]
    #[arg(long, value_name = "BYTES")]
    pub max_uri: Option<usize>,

    /// Request body limit in bytes, answered with 413 [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<usize>,

    /// The request head must arrive within this many seconds, else 408 [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub header_timeout: Option<f64>,

    /// Idle keep-alive connections are closed after this many seconds [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub keepalive_timeout: Option<f64>,

    /// Default long-poll hold in seconds, jittered by ±10% [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub longpoll_timeout: Option<f64>,

    /// Upper bound in seconds for a client's `?timeout=` [default: 120]
    #[arg(long, value_name = "SECONDS")]
    pub longpoll_max_timeout: Option<f64>,

    /// Most messages in one long-poll reply [default: 100]
    #[arg(long, value_name = "N")]
    pub max_batch: Option<usize>,

    /// Messages kept per topic for replay [default: 100]
    #[arg(long, value_name = "N")]
    pub history_messages: Option<usize>,

    /// Bytes kept per topic for replay [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub history_bytes: Option<usize>,

    /// Seconds a message stays in history [default: 3600]
    #[arg(long, value_name = "SECONDS")]
    pub history_age: Option<f64>,

    /// Messages kept in history across all topics [default: 1000000]
    #[arg(long, value_name = "N")]
    pub history_total_messages: Option<usize>,

    /// Bytes kept in history across all topics [default: 268435456]
    #[arg(long, value_name = "BYTES")]
    pub history_total_bytes: Option<usize>,

    /// Seconds a graceful shutdown may take before connections are cut; 0 = at once [default: 5]
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_timeout: Option<f64>,

    /// Origins allowed to read (GET) cross-origin, comma-separated; "*" = any [default: *]
    #[arg(long, value_name = "ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,

    /// Origins allowed to publish cross-origin, comma-separated; "" = none [default: none]
    #[arg(long, value_name = "ORIGINS", value_delimiter = ',')]
    pub cors_publish_origins: Option<Vec<String>>,

    /// Seconds between heartbeats on streaming transports (SSE, stream, iframe, multipart, WebSocket) [default: 15]
    #[arg(long, value_name = "SECONDS")]
    pub heartbeat_interval: Option<f64>,

    /// A streaming response ends cleanly (with a resume cursor) after this many seconds [default: 3600]
    #[arg(long, value_name = "SECONDS")]
    pub stream_max_age: Option<f64>,

    /// A streaming response ends cleanly (with a resume cursor) after this many message bytes [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    pub stream_max_bytes: Option<usize>,

    /// Unsent output a connection may hold; a streaming subscriber over it is sent an overflow notice and closed [default: 262144]
    #[arg(long, value_name = "BYTES")]
    pub max_pending_output: Option<usize>,

    /// Reconnect delay in seconds suggested to SSE clients (`retry:`) [default: 2]
    #[arg(long, value_name = "SECONDS")]
    pub sse_retry: Option<f64>,

    /// Largest WebSocket message (and frame) accepted from a client, in bytes; larger closes with 1009 [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub ws_max_message: Option<usize>,

    /// Address of the optional raw TCP listener (NUL-terminated JSON commands) [default: none]
    #[arg(long, value_name = "ADDR")]
    pub raw_listen: Option<SocketAddr>,

    /// Topic patterns Pushlet, Bayeux and WebSocket clients may publish to, comma-separated ("" = none; backends still publish with POST /pub) [default: /**]
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    pub client_publish: Option<Vec<String>>,

    /// Undelivered events a Pushlet session may fall behind before it gets an abort and is removed [default: 1000]
    #[arg(long, value_name = "N")]
    pub session_queue: Option<usize>,

    /// Pushlet and Bayeux sessions across all workers; a join or handshake over it is refused [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Seconds a Pushlet session lives without a request (renewed while a listen is open) [default: 300]
    #[arg(long, value_name = "SECONDS")]
    pub session_lease: Option<f64>,

    /// Seconds a Pushlet pull refresh or stream waits before a heartbeat event [default: 20]
    #[arg(long, value_name = "SECONDS")]
    pub pushlet_read_timeout: Option<f64>,

    /// Seconds a Bayeux /meta/connect is held (advice.timeout) [default: 20]
    #[arg(long, value_name = "SECONDS")]
    pub bayeux_timeout: Option<f64>,

    /// Seconds a Bayeux session lives without a connect (maxInterval) [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub bayeux_max_interval: Option<f64>,

    /// Log filter in env_logger syntax; RUST_LOG overrides it [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
}

/// The resolved, validated server configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Address every worker's `SO_REUSEPORT` listener binds.
    pub listen: SocketAddr,
    /// Worker threads, `1..=MAX_WORKERS`.
    pub workers: usize,
    /// Pin worker `i` to core `i` (false with `--no-pin`).
    pub pin_workers: bool,
    /// Listen backlog per worker.
    pub backlog: u32,
    /// Open connections across all workers.
    pub max_connections: usize,
    /// Request head limit, bytes (431).
    pub max_head: usize,
    /// Request-target limit, bytes (414).
    pub max_uri: usize,
    /// Request body limit, bytes (413).
    pub max_body: usize,
    /// Time allowed for the request head to arrive (408).
    pub header_timeout: Duration,
    /// Idle keep-alive connections are closed after it.
    pub keepalive_timeout: Duration,
    /// Default long-poll hold (the server jitters it by ±10%).
    pub longpoll_timeout: Duration,
    /// Upper bound for a client's `?timeout=`.
    pub longpoll_max_timeout: Duration,
    /// Most messages in one long-poll reply.
    pub max_batch: usize,
    /// Messages kept per topic.
    pub history_messages: usize,
    /// Bytes kept per topic.
    pub history_bytes: usize,
    /// Age after which a message leaves history.
    pub history_age: Duration,
    /// Messages kept across all topics.
    pub history_total_messages: usize,
    /// Bytes kept across all topics.
    pub history_total_bytes: usize,
    /// Graceful shutdown deadline (zero: close at once).
    pub shutdown_timeout: Duration,
    /// Origins allowed to read cross-origin; `"*"` = any.
    pub cors_origins: Vec<String>,
    /// Origins allowed to publish cross-origin; `"*"` = any.
    pub cors_publish_origins: Vec<String>,
    /// Heartbeat period of streaming transports.
    pub heartbeat_interval: Duration,
    /// Streaming responses end cleanly after this age.
    pub stream_max_age: Duration,
    /// Streaming responses end cleanly after this many message bytes.
    pub stream_max_bytes: usize,
    /// Unsent output bound per connection, bytes.
    pub max_pending_output: usize,
    /// SSE `retry:` hint.
    pub sse_retry: Duration,
    /// Largest WebSocket message or frame from a client, bytes (1009 above it).
    pub ws_max_message: usize,
    /// Optional raw TCP listener.
    pub raw_listen: Option<SocketAddr>,
    /// Topic patterns clients of the session protocols and WebSocket may publish to.
    pub client_publish: Vec<String>,
    /// Undelivered events a Pushlet session may lag before it is aborted.
    pub session_queue: usize,
    /// Pushlet and Bayeux sessions across all workers.
    pub max_sessions: usize,
    /// Pushlet session lease.
    pub session_lease: Duration,
    /// Pushlet read timeout (heartbeat period of a listen).
    pub pushlet_read_timeout: Duration,
    /// Bayeux connect hold (advice.timeout).
    pub bayeux_timeout: Duration,
    /// Bayeux session expiry without a connect (maxInterval).
    pub bayeux_max_interval: Duration,
    /// env_logger filter (RUST_LOG overrides it).
    pub log: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    Read { path: PathBuf, source: io::Error },
    /// The `--config` file is not valid TOML, has an unknown key or a value of the wrong type.
    Parse { path: PathBuf, line: Option<usize>, message: String },
    /// An option's value is out of range or inconsistent with another option.
    Invalid {
        /// The flag name without dashes, e.g. `"max-head"`.
        option: &'static str,
        reason: String,
    },
}

impl Config {
    /// Reads `args.config` if given, then resolves flags over file over defaults and validates.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let config = Config::resolve(args.clone(), file)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and the relations between options; errors name the option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure((1..=MAX_WORKERS).contains(&self.workers), "workers", || {
            format!("must be between 1 and {MAX_WORKERS}, got {}", self.workers)
        })?;
        ensure(self.backlog >= 1, "backlog", || "must be at least 1".into())?;
        ensure(i32::try_from(self.backlog).is_ok(), "backlog", || {
            format!("must be at most {}, got {}", i32::MAX, self.backlog)
        })?;
        for (option, value) in [
            ("max-connections", self.max_connections),
            ("max-head", self.max_head),
            ("max-uri", self.max_uri),
            ("max-body", self.max_body),
            ("max-batch", self.max_batch),
            ("history-messages", self.history_messages),
            ("history-bytes", self.history_bytes),
            ("history-total-messages", self.history_total_messages),
            ("history-total-bytes", self.history_total_bytes),
            ("stream-max-bytes", self.stream_max_bytes),
            ("max-pending-output", self.max_pending_output),
            ("ws-max-message", self.ws_max_message),
            ("session-queue", self.session_queue),
            ("max-sessions", self.max_sessions),
        ] {
            ensure(value >= 1, option, || "must be at least 1".into())?;
        }
        ensure(self.max_head <= MAX_HEAD_LIMIT, "max-head", || {
            format!("must be at most {MAX_HEAD_LIMIT} bytes, got {}", self.max_head)
        })?;
        ensure(self.max_uri <= self.max_head, "max-uri", || {
            format!(
                "({}) must not exceed --max-head ({}): the request-target is part of the head",
                self.max_uri, self.max_head
            )
        })?;
        for (option, value) in [
            ("header-timeout", self.header_timeout),
            ("keepalive-timeout", self.keepalive_timeout),
            ("longpoll-timeout", self.longpoll_timeout),
            ("longpoll-max-timeout", self.longpoll_max_timeout),
            ("history-age", self.history_age),
            ("shutdown-timeout", self.shutdown_timeout),
            ("heartbeat-interval", self.heartbeat_interval),
            ("stream-max-age", self.stream_max_age),
            ("sse-retry", self.sse_retry),
            ("session-lease", self.session_lease),
            ("pushlet-read-timeout", self.pushlet_read_timeout),
            ("bayeux-timeout", self.bayeux_timeout),
            ("bayeux-max-interval", self.bayeux_max_interval),
        ] {
            let zero_ok = option == "shutdown-timeout";
            ensure(zero_ok || !value.is_zero(), option, || "must be greater than 0 seconds".into())?;
            ensure(value.as_secs_f64() <= MAX_SECONDS, option, || format!("must be at most {MAX_SECONDS} seconds"))?;
        }
        ensure(self.longpoll_timeout <= self.longpoll_max_timeout, "longpoll-timeout", || {
            format!(
                "({} s) must not exceed --longpoll-max-timeout ({} s)",
                self.longpoll_timeout.as_secs_f64(),
                self.longpoll_max_timeout.as_secs_f64()
            )
        })?;
        ensure(self.history_bytes >= self.max_body, "history-bytes", || {
            format!(
                "({}) must be at least --max-body ({}) so any accepted message fits a topic's history",
                self.history_bytes, self.max_body
            )
        })?;
        ensure(self.history_total_messages >= self.history_messages, "history-total-messages", || {
            format!("({}) must be at least --history-messages ({})", self.history_total_messages, self.history_messages)
        })?;
        ensure(self.history_total_bytes >= self.history_bytes, "history-total-bytes", || {
            format!("({}) must be at least --history-bytes ({})", self.history_total_bytes, self.history_bytes)
        })?;
        for pattern in &self.client_publish {
            ensure(crate::model::Selector::parse(pattern).is_ok(), "client-publish", || {
                format!("{pattern:?} is not a topic or pattern like /chat/**")
            })?;
        }
        for (option, origins) in
            [("cors-origins", &self.cors_origins), ("cors-publish-origins", &self.cors_publish_origins)]
        {
            for origin in origins {
                ensure(is_origin_pattern(origin), option, || {
                    format!("{origin:?} is neither \"*\" nor an origin like https://example.com:8443")
                })?;
            }
        }
        Ok(())
    }

    /// Merges flags over file over defaults and converts to the resolved types (unvalidated).
    fn resolve(flags: ServeArgs, file: ServeArgs) -> Result<Config, ConfigError> {
        // Flag if given, else file value if given; the caller supplies the default.
        macro_rules! pick {
            ($field:ident) => {
                flags.$field.or(file.$field)
            };
        }
        let d = Config::default();
        Ok(Config {
            listen: pick!(listen).unwrap_or(d.listen),
            workers: pick!(workers).unwrap_or(d.workers),
            pin_workers: pick!(no_pin).map_or(d.pin_workers, |no_pin| !no_pin),
            backlog: pick!(backlog).unwrap_or(d.backlog),
            max_connections: pick!(max_connections).unwrap_or(d.max_connections),
            max_head: pick!(max_head).unwrap_or(d.max_head),
            max_uri: pick!(max_uri).unwrap_or(d.max_uri),
            max_body: pick!(max_body).unwrap_or(d.max_body),
            header_timeout: seconds("header-timeout", pick!(header_timeout), d.header_timeout)?,
            keepalive_timeout: seconds("keepalive-timeout", pick!(keepalive_timeout), d.keepalive_timeout)?,
            longpoll_timeout: seconds("longpoll-timeout", pick!(longpoll_timeout), d.longpoll_timeout)?,
            longpoll_max_timeout: seconds("longpoll-max-timeout", pick!(longpoll_max_timeout), d.longpoll_max_timeout)?,
            max_batch: pick!(max_batch).unwrap_or(d.max_batch),
            history_messages: pick!(history_messages).unwrap_or(d.history_messages),
            history_bytes: pick!(history_bytes).unwrap_or(d.history_bytes),
            history_age: seconds("history-age", pick!(history_age), d.history_age)?,
            history_total_messages: pick!(history_total_messages).unwrap_or(d.history_total_messages),
            history_total_bytes: pick!(history_total_bytes).unwrap_or(d.history_total_bytes),
            shutdown_timeout: seconds("shutdown-timeout", pick!(shutdown_timeout), d.shutdown_timeout)?,
            cors_origins: pick!(cors_origins).map_or(d.cors_origins, clean_list),
            cors_publish_origins: pick!(cors_publish_origins).map_or(d.cors_publish_origins, clean_list),
            heartbeat_interval: seconds("heartbeat-interval", pick!(heartbeat_interval), d.heartbeat_interval)?,
            stream_max_age: seconds("stream-max-age", pick!(stream_max_age), d.stream_max_age)?,
            stream_max_bytes: pick!(stream_max_bytes).unwrap_or(d.stream_max_bytes),
            max_pending_output: pick!(max_pending_output).unwrap_or(d.max_pending_output),
            sse_retry: seconds("sse-retry", pick!(sse_retry), d.sse_retry)?,
            ws_max_message: pick!(ws_max_message).unwrap_or(d.ws_max_message),
            raw_listen: pick!(raw_listen).or(d.raw_listen),
            client_publish: pick!(client_publish).map_or(d.client_publish, clean_list),
            session_queue: pick!(session_queue).unwrap_or(d.session_queue),
            max_sessions: pick!(max_sessions).unwrap_or(d.max_sessions),
            session_lease: seconds("session-lease", pick!(session_lease), d.session_lease)?,
            pushlet_read_timeout: seconds("pushlet-read-timeout", pick!(pushlet_read_timeout), d.pushlet_read_timeout)?,
            bayeux_timeout: seconds("bayeux-timeout", pick!(bayeux_timeout), d.bayeux_timeout)?,
            bayeux_max_interval: seconds("bayeux-max-interval", pick!(bayeux_max_interval), d.bayeux_max_interval)?,
            log: pick!(log).unwrap_or(d.log),
        })
    }
}

impl Default for Config {
    /// The documented defaults (each flag's help text states its own).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Config {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080)),
            workers: cores.min(MAX_WORKERS),
            pin_workers: true,
            backlog: 4096,
            max_connections: 1_000_000,
            max_head: 16 * 1024,
            max_uri: 8 * 1024,
            max_body: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            longpoll_timeout: Duration::from_secs(30),
            longpoll_max_timeout: Duration::from_secs(120),
            max_batch: 100,
            history_messages: 100,
            history_bytes: 1024 * 1024,
            history_age: Duration::from_secs(3600),
            history_total_messages: 1_000_000,
            history_total_bytes: 256 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(5),
            cors_origins: vec!["*".to_owned()],
            cors_publish_origins: Vec::new(),
            heartbeat_interval: Duration::from_secs(15),
            stream_max_age: Duration::from_secs(3600),
            stream_max_bytes: 64 * 1024 * 1024,
            max_pending_output: 256 * 1024,
            sse_retry: Duration::from_secs(2),
            ws_max_message: 1024 * 1024,
            raw_listen: None,
            client_publish: vec!["/**".to_owned()],
            // The original Pushlet kept 24 events per session because each copy cost servlet
            // memory; Halley's sessions hold a cursor into shared history, so the bound is only
            // how far behind a client may fall before it is told: a few seconds of a busy topic.
            session_queue: 1000,
            max_sessions: 1_000_000,
            session_lease: Duration::from_secs(300),
            pushlet_read_timeout: Duration::from_secs(20),
            bayeux_timeout: Duration::from_secs(20),
            bayeux_max_interval: Duration::from_secs(10),
            log: "info".to_owned(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Parse { path, line: Some(line), message } => {
                write!(f, "config file {} line {line}: {message}", path.display())
            }
            ConfigError::Parse { path, line: None, message } => write!(f, "config file {}: {message}", path.display()),
            ConfigError::Invalid { option, reason } => {
                write!(f, "invalid --{option} (`{}` in the config file): {reason}", option.replace('-', "_"))
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads and parses a config file of at most [`MAX_CONFIG_FILE_BYTES`].
fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let read_error = |source| ConfigError::Read { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1).read_to_string(&mut text).map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::Parse {
            path: path.to_owned(),
            line: None,
            message: format!("larger than {MAX_CONFIG_FILE_BYTES} bytes"),
        });
    }
    parse_toml(&text, path)
}

/// Parses config file text; errors carry the line and toml's one-line message (which names an
/// unknown key and lists the valid ones).
fn parse_toml(text: &str, path: &Path) -> Result<ServeArgs, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
        path: path.to_owned(),
        line: e.span().map(|span| {
            let before = text.get(..span.start).unwrap_or(text);
            before.matches('\n').count() + 1
        }),
        message: e.message().to_owned(),
    })
}

/// Converts an optional seconds value, rejecting what `Duration` cannot hold.
fn seconds(option: &'static str, value: Option<f64>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(secs) = value else {
        return Ok(default);
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(ConfigError::Invalid {
            option,
            reason: format!("must be a non-negative number of seconds, got {secs}"),
        });
    }
    if secs > MAX_SECONDS {
        return Err(ConfigError::Invalid {
            option,
            reason: format!("must be at most {MAX_SECONDS} seconds, got {secs}"),
        });
    }
    Duration::try_from_secs_f64(secs).map_err(|e| ConfigError::Invalid { option, reason: e.to_string() })
}

/// Trims list items and drops empty ones, so `--cors-publish-origins ''` means "none".
fn clean_list(items: Vec<String>) -> Vec<String> {
    items.into_iter().map(|item| item.trim().to_owned()).filter(|item| !item.is_empty()).collect()
}

/// `*`, or a serialized origin `scheme "://" host [ ":" port ]` (RFC 6454 §6.2): what a
/// browser sends in `Origin`, so no path, no trailing slash, no whitespace.
fn is_origin_pattern(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let authority_ok = !authority.is_empty()
        && authority.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '?' | '#' | '@' | '*'));
    scheme_ok && authority_ok
}

/// `Ok` if `ok`, else the option's error with a lazily built reason.
fn ensure(ok: bool, option: &'static str, reason: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid { option, reason: reason() })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn flags(args: &[&str]) -> ServeArgs {
        let argv = std::iter::once("halley").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").serve
    }

    fn toml_args(text: &str) -> Result<ServeArgs, ConfigError> {
        parse_toml(text, Path::new("test.toml"))
    }

    /// Writes `text` to a fresh file under the temp dir and returns its path.
    fn temp_file(text: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("halley-config-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write temp config");
        path
    }

    fn invalid_option(config: &Config) -> &'static str {
        match config.validate() {
            Err(ConfigError::Invalid { option, .. }) => option,
            other => panic!("expected an invalid option, got {other:?}"),
        }
    }

    #[test]
    fn no_flags_no_file_gives_defaults() {
        let config = Config::load(&flags(&[])).expect("defaults load");
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(config.workers >= 1);
        assert!(config.pin_workers);
        assert_eq!(config.header_timeout, Duration::from_secs(10));
        assert_eq!(config.cors_origins, vec!["*"]);
        assert!(config.cors_publish_origins.is_empty());
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn help_states_every_default() {
        let d = Config::default();
        let secs = |d: Duration| d.as_secs().to_string();
        let expected: &[(&str, String)] = &[
            ("listen", d.listen.to_string()),
            ("workers", "number of cores".into()),
            ("no_pin", (!d.pin_workers).to_string()),
            ("backlog", d.backlog.to_string()),
            ("max_connections", d.max_connections.to_string()),
            ("max_head", d.max_head.to_string()),
            ("max_uri", d.max_uri.to_string()),
            ("max_body", d.max_body.to_string()),
            ("header_timeout", secs(d.header_timeout)),
            ("keepalive_timeout", secs(d.keepalive_timeout)),
            ("longpoll_timeout", secs(d.longpoll_timeout)),
            ("longpoll_max_timeout", secs(d.longpoll_max_timeout)),
            ("max_batch", d.max_batch.to_string()),
            ("history_messages", d.history_messages.to_string()),
            ("history_bytes", d.history_bytes.to_string()),
            ("history_age", secs(d.history_age)),
            ("history_total_messages", d.history_total_messages.to_string()),
            ("history_total_bytes", d.history_total_bytes.to_string()),
            ("shutdown_timeout", secs(d.shutdown_timeout)),
            ("cors_origins", d.cors_origins.join(",")),
            ("cors_publish_origins", "none".into()),
            ("heartbeat_interval", secs(d.heartbeat_interval)),
            ("stream_max_age", secs(d.stream_max_age)),
            ("stream_max_bytes", d.stream_max_bytes.to_string()),
            ("max_pending_output", d.max_pending_output.to_string()),
            ("sse_retry", secs(d.sse_retry)),
            ("ws_max_message", d.ws_max_message.to_string()),
            ("raw_listen", "none".into()),
            ("client_publish", d.client_publish.join(",")),
            ("session_queue", d.session_queue.to_string()),
            ("max_sessions", d.max_sessions.to_string()),
            ("session_lease", secs(d.session_lease)),
            ("pushlet_read_timeout", secs(d.pushlet_read_timeout)),
            ("bayeux_timeout", secs(d.bayeux_timeout)),
            ("bayeux_max_interval", secs(d.bayeux_max_interval)),
            ("log", d.log.clone()),
        ];
        let command = Cli::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "help" {
                continue;
            }
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let (_, default) = expected
                .iter()
                .find(|(name, _)| *name == id)
                .unwrap_or_else(|| panic!("option {id} missing from this table"));
            assert!(
                help.ends_with(&format!("[default: {default}]")),
                "{id}: {help:?} should end with [default: {default}]"
            );
            checked += 1;
        }
        assert_eq!(checked, expected.len());
    }

    #[test]
    fn file_sets_every_kind_of_value() {
        let args = toml_args(
            r#"
            listen = "0.0.0.0:9000"
            workers = 3
            no_pin = true
            max_head = 32768
            header_timeout = 2.5
            keepalive_timeout = 5
            cors_publish_origins = ["https://a.example", "http://b.example:8080"]
            log = "debug"
            "#,
        )
        .expect("valid file");
        let config = Config::resolve(flags(&[]), args).expect("resolves");
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.workers, 3);
        assert!(!config.pin_workers);
        assert_eq!(config.max_head, 32768);
        assert_eq!(config.header_timeout, Duration::from_millis(2500));
        assert_eq!(config.keepalive_timeout, Duration::from_secs(5));
        assert_eq!(config.cors_publish_origins, vec!["https://a.example", "http://b.example:8080"]);
        assert_eq!(config.log, "debug");
        assert_eq!(config.max_uri, Config::default().max_uri, "unset keeps default");
        config.validate().expect("valid");
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let path = temp_file("workers = 3\nmax_batch = 7\nno_pin = true\ncors_origins = [\"https://x.example\"]\n");
        let path_str = path.to_str().expect("utf-8 temp path");
        let args = flags(&[
            "--config",
            path_str,
            "--workers",
            "5",
            "--no-pin=false",
            "--cors-origins",
            "https://a.example,https://b.example",
        ]);
        let config = Config::load(&args);
        std::fs::remove_file(&path).expect("remove temp config");
        let config = config.expect("loads");
        assert_eq!(config.workers, 5, "flag beats file");
        assert_eq!(config.max_batch, 7, "file beats default");
        assert!(config.pin_workers, "--no-pin=false beats no_pin = true");
        assert_eq!(config.cors_origins, vec!["https://a.example", "https://b.example"]);
        assert_eq!(config.max_body, Config::default().max_body);
    }

    #[test]
    fn bare_no_pin_flag_and_empty_list() {
        let config = Config::load(&flags(&["--no-pin", "--cors-origins="])).expect("loads");
        assert!(!config.pin_workers);
        assert!(config.cors_origins.is_empty());
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let err = toml_args("workers = 2\nworkerz = 3\n").expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("workerz"), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
        // `config` is a flag only; a file cannot point at another file.
        assert!(toml_args("config = \"other.toml\"\n").is_err());
    }

    #[test]
    fn wrong_type_and_syntax_errors() {
        assert!(toml_args("workers = \"two\"\n").is_err());
        assert!(toml_args("listen = \"not an address\"\n").is_err());
        assert!(toml_args("workers = \n").is_err());
        let err = Config::load(&flags(&["--config", "/nonexistent/halley.toml"])).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn bad_seconds_are_rejected_at_resolve() {
        for value in ["-1", "NaN", "inf", "1e300"] {
            let arg = format!("--header-timeout={value}");
            match Config::load(&flags(&[&arg])) {
                Err(ConfigError::Invalid { option, .. }) => assert_eq!(option, "header-timeout"),
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn each_validation_error_names_its_option() {
        type Break = fn(&mut Config);
        let cases: &[(&str, Break)] = &[
            ("workers", |c| c.workers = 0),
            ("workers", |c| c.workers = MAX_WORKERS + 1),
            ("backlog", |c| c.backlog = 0),
            ("backlog", |c| c.backlog = u32::MAX),
            ("max-connections", |c| c.max_connections = 0),
            ("max-head", |c| c.max_head = 0),
            ("max-head", |c| c.max_head = MAX_HEAD_LIMIT + 1),
            ("max-uri", |c| c.max_uri = 0),
            ("max-uri", |c| c.max_uri = c.max_head + 1),
            ("max-body", |c| c.max_body = 0),
            ("max-batch", |c| c.max_batch = 0),
            ("history-messages", |c| c.history_messages = 0),
            ("history-bytes", |c| c.history_bytes = 0),
            ("history-bytes", |c| c.history_bytes = c.max_body - 1),
            ("history-total-messages", |c| c.history_total_messages = 0),
            ("history-total-messages", |c| c.history_total_messages = c.history_messages - 1),
            ("history-total-bytes", |c| c.history_total_bytes = 0),
            ("history-total-bytes", |c| c.history_total_bytes = c.history_bytes - 1),
            ("header-timeout", |c| c.header_timeout = Duration::ZERO),
            ("keepalive-timeout", |c| c.keepalive_timeout = Duration::ZERO),
            ("longpoll-timeout", |c| c.longpoll_timeout = Duration::ZERO),
            ("longpoll-timeout", |c| c.longpoll_timeout = c.longpoll_max_timeout + Duration::from_secs(1)),
            ("longpoll-max-timeout", |c| c.longpoll_max_timeout = Duration::ZERO),
            ("history-age", |c| c.history_age = Duration::ZERO),
            ("history-age", |c| c.history_age = Duration::from_secs(400 * 24 * 3600)),
            ("shutdown-timeout", |c| c.shutdown_timeout = Duration::from_secs(400 * 24 * 3600)),
            ("cors-origins", |c| c.cors_origins = vec!["example.com".into()]),
            ("cors-origins", |c| c.cors_origins = vec!["https://a.example/".into()]),
            ("cors-publish-origins", |c| c.cors_publish_origins = vec!["https://a b".into()]),
        ];
        for (option, break_it) in cases {
            let mut config = Config::default();
            break_it(&mut config);
            assert_eq!(invalid_option(&config), *option, "{config:?}");
            let text = config.validate().expect_err("invalid").to_string();
            assert!(text.contains(&format!("--{option}")), "{text}");
        }
        let zero_shutdown = Config { shutdown_timeout: Duration::ZERO, ..Config::default() };
        zero_shutdown.validate().expect("zero shutdown timeout = close at once");
    }

    #[test]
    fn error_message_names_flag_and_key() {
        let err = Config { max_uri: 20_000, ..Config::default() }.validate().expect_err("invalid");
        let text = err.to_string();
        assert!(text.starts_with("invalid --max-uri (`max_uri` in the config file)"), "{text}");
    }

    #[test]
    fn origin_patterns() {
        for ok in ["*", "https://example.com", "http://127.0.0.1:8080", "http://[::1]:80"] {
            assert!(is_origin_pattern(ok), "{ok}");
        }
        for bad in ["", "null", "example.com", "https://", "https://a/b", "://a", "https://*.a"] {
            assert!(!is_origin_pattern(bad), "{bad}");
        }
    }
}
