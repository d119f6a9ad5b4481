//! Server configuration: `halley serve` flags plus an optional TOML file, resolved into one
//! validated [`Config`] made of sections.
//!
//! Every option is declared once, in `args.rs`, as a field that is both its flag and its file
//! key. Precedence: a flag beats the file, the file beats the default. Every default exists
//! once: in the `Default` impl of its section here, or, for the sections that are another
//! module's own type, in that module ([`http::Limits`], [`HistoryLimits`] with the store's
//! constants, the Bayeux advice constants). The file's two forms are handled in `file.rs`,
//! whose `FILE_KEYS` names each option's table; a unit test keeps it in step with `args.rs`.

mod args;
mod file;
pub mod logging;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

pub use self::args::{
    AccessArgs, AuthArgs, ByteSize, HistoryArgs, HttpArgs, ListenAddr, LogFormat, LongpollArgs, NetworkArgs, Seconds,
    ServeArgs, SessionArgs, StreamArgs, TimeoutArgs, TlsArgs, WebArgs,
};
pub use self::file::MAX_CONFIG_FILE_BYTES;
use crate::http;
use crate::protocol::bayeux::session as bayeux;
use crate::store::HistoryLimits;

/// Most worker threads accepted.
pub const MAX_WORKERS: usize = 1024;

/// Largest accepted `--max-head`, in bytes: a worker may buffer this much per reading connection.
pub const MAX_HEAD_LIMIT: usize = 1 << 20;

/// Largest accepted duration option, in seconds (one year); keeps timer arithmetic far from
/// overflow.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// The resolved, validated server configuration. Each section is a table of the config file
/// and a heading of `--help`; `workers`, `pin_workers` and `log` are top-level keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Worker threads, `1..=MAX_WORKERS`.
    pub workers: usize,
    /// Pin worker `i` to core `i` (false with `--no-pin`).
    pub pin_workers: bool,
    /// env_logger filter: `--log`, else RUST_LOG, else `info`.
    pub log: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Where a graceful shutdown saves the history and the next start restores it
    /// (`store::state`); `None` keeps history in memory only.
    pub state_dir: Option<PathBuf>,
    /// `[network]`: listeners and per-connection bounds.
    pub network: Network,
    /// `[http]`: request size limits, as the parser takes them.
    pub http: http::Limits,
    /// `[timeouts]`: connection and shutdown deadlines.
    pub timeouts: Timeouts,
    /// `[longpoll]`: long-poll holds and reply size.
    pub longpoll: Longpoll,
    /// `[history]`: what the store keeps, as the store takes it.
    pub history: HistoryLimits,
    /// `[streams]`: streaming transports and WebSocket.
    pub streams: Streams,
    /// `[sessions]`: Pushlet and Bayeux.
    pub sessions: Sessions,
    /// `[access]`: CORS origins and the client-publish policy.
    pub access: Access,
    /// `[web]`: the pages served by Halley itself and the demo publisher.
    pub web: Web,
    /// `[auth]`: token verification keys and the public patterns (`crate::auth` applies it).
    pub auth: Auth,
    /// `[tls]`: the certificate and key the HTTP listener terminates TLS with; `None`: plain TCP.
    pub tls: Option<Tls>,
}

/// Where the HTTP listener's certificate and key are read from (at start and on reload,
/// `crate::server::tls`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Listeners and per-connection bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// Address every worker's `SO_REUSEPORT` listener binds.
    pub listen: SocketAddr,
    /// Optional raw TCP listener.
    pub raw_listen: Option<SocketAddr>,
    /// Optional admin listener (`/metrics`, `/stats`, `/ready`, `/health`), on worker 0.
    pub admin_listen: Option<SocketAddr>,
    /// The admin listener also takes `POST /pub`.
    pub admin_publish: bool,
    /// Listen backlog per worker.
    pub backlog: u32,
    /// Open connections across all workers.
    pub max_connections: usize,
    /// Unsent output bound per connection, bytes: the one knob behind both output marks below.
    pub max_pending_output: usize,
}

impl Network {
    /// Unsent output, in bytes, at or above which a connection's producers stop: its pipelined
    /// requests and duplex commands wait unread, and no more history is fed to its stream (a
    /// subscriber that stays there a heartbeat interval is cut). It is the bound itself: a
    /// connection over its bound gets no new work of any kind.
    pub fn out_high_water(&self) -> usize {
        self.max_pending_output
    }

    /// Unsent output, in bytes, below which a paused stream or duplex subscriber is fed again:
    /// half the bound, so feeding resumes in large steps rather than once per written packet.
    pub fn out_low_water(&self) -> usize {
        self.max_pending_output / 2
    }
}

/// Connection and shutdown deadlines.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    /// Time allowed for the request head to arrive (408).
    pub header: Duration,
    /// Idle keep-alive connections are closed after it.
    pub keepalive: Duration,
    /// Graceful shutdown deadline (zero: close at once).
    pub shutdown: Duration,
}

/// Long-poll holds and reply size.
#[derive(Clone, Debug, PartialEq)]
pub struct Longpoll {
    /// Default long-poll hold (the server jitters it by ±10%).
    pub timeout: Duration,
    /// Upper bound for a client's `?timeout=`.
    pub max_timeout: Duration,
    /// Most messages in one long-poll reply (and in one history read of any transport).
    pub max_batch: usize,
}

/// Streaming transports and WebSocket.
#[derive(Clone, Debug, PartialEq)]
pub struct Streams {
    /// Heartbeat period of streaming transports.
    pub heartbeat_interval: Duration,
    /// Streaming responses end cleanly after this age.
    pub max_age: Duration,
    /// Streaming responses end cleanly after this many message bytes.
    pub max_bytes: usize,
    /// SSE `retry:` hint.
    pub sse_retry: Duration,
    /// Largest WebSocket message or frame from a client, bytes (1009 above it).
    pub ws_max_message: usize,
}

/// The session protocols, Pushlet and Bayeux.
#[derive(Clone, Debug, PartialEq)]
pub struct Sessions {
    /// Pushlet and Bayeux sessions across all workers.
    pub max_sessions: usize,
    /// Undelivered events a Pushlet session may lag before it is aborted.
    pub queue: usize,
    /// Pushlet session lease.
    pub lease: Duration,
    /// How long a new session lives before its first listen (Pushlet) or connect (Bayeux): a
    /// session nobody listens on is let go quickly, so joins alone cannot fill the pool.
    pub join_timeout: Duration,
    /// New sessions per second one client address may create on one worker (twice that in a
    /// burst).
    pub create_rate: usize,
    /// Pushlet read timeout (heartbeat period of a listen).
    pub pushlet_read_timeout: Duration,
    /// Bayeux connect hold (advice.timeout).
    pub bayeux_timeout: Duration,
    /// Bayeux session expiry without a connect (maxInterval).
    pub bayeux_max_interval: Duration,
}

/// Who may read and publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    /// Origins allowed to read cross-origin; `"*"` = any.
    pub cors_origins: Vec<String>,
    /// Origins allowed to publish cross-origin; `"*"` = any.
    pub cors_publish_origins: Vec<String>,
    /// Topic patterns clients of the session protocols and WebSocket may publish to.
    pub client_publish: Vec<String>,
}

/// The pages Halley serves itself (`crate::web`) and the demo publisher.
#[derive(Clone, Debug, PartialEq)]
pub struct Web {
    /// Serve the landing page, the demos, the dashboard and halley.js, and publish the node's
    /// stats to `/halley/stats` while a dashboard is open (false with `--no-web`).
    pub enabled: bool,
    /// Publish simulated data for the demo pages (`--demo`).
    pub demo: bool,
}

/// Who may publish and read by token. Off (no secret, no public key) by default: then clients
/// publish only from loopback peers (see `crate::auth`).
#[derive(Clone, Debug, PartialEq)]
pub struct Auth {
    /// HS256 shared secret, from `--auth-secret` or read from `--auth-secret-file`.
    pub secret: Option<Secret>,
    /// `--auth-secret-file`, kept so a reload reads it again.
    pub secret_file: Option<PathBuf>,
    /// PEM file with the RSA or EC public key for RS256/ES256 tokens.
    pub public_key: Option<PathBuf>,
    /// Patterns anyone may read without a token (auth on).
    pub public_subscribe: Vec<String>,
    /// Patterns anyone may publish to without a token (auth on).
    pub public_publish: Vec<String>,
    /// The cookie a token may come in.
    pub cookie: String,
}

impl Auth {
    /// Whether tokens are checked at all.
    pub fn is_on(&self) -> bool {
        self.secret.is_some() || self.secret_file.is_some() || self.public_key.is_some()
    }

    /// The HS256 secret: the configured one, or the file's content without its trailing
    /// newline (read now, so a reload picks up a rotated file).
    pub fn load_secret(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(secret) = &self.secret {
            return Ok(Some(secret.clone()));
        }
        let Some(path) = &self.secret_file else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let secret = text.trim_end_matches(['\r', '\n']).to_owned();
        ensure(!secret.is_empty(), "auth-secret-file", || format!("{} is empty", path.display()))?;
        Ok(Some(Secret(secret)))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.secret.as_ref().is_none_or(|s| !s.0.is_empty()), "auth-secret", || "must not be empty".into())?;
        ensure(self.secret.is_none() || self.secret_file.is_none(), "auth-secret-file", || {
            "give either --auth-secret or --auth-secret-file, not both".into()
        })?;
        for (option, patterns) in
            [("auth-public-subscribe", &self.public_subscribe), ("auth-public-publish", &self.public_publish)]
        {
            for pattern in patterns {
                ensure(crate::model::Selector::parse(pattern).is_ok(), option, || {
                    format!("{pattern:?} is not a topic or pattern like /chat/**")
                })?;
            }
        }
        let cookie_ok = !self.cookie.is_empty()
            && self.cookie.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        ensure(cookie_ok, "auth-cookie", || format!("{:?} is not a cookie name", self.cookie))
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            secret: None,
            secret_file: None,
            public_key: None,
            public_subscribe: Vec::new(),
            public_publish: Vec::new(),
            cookie: "halley_token".to_owned(),
        }
    }
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
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
    /// The log filter falls back to `RUST_LOG` when neither a flag nor the file sets it.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        Config::load_with(args, std::env::var("RUST_LOG").ok().filter(|filter| !filter.trim().is_empty()))
    }

    /// `load`, with the value of `RUST_LOG` given.
    pub fn load_with(args: &ServeArgs, rust_log: Option<String>) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => file::read_file(path)?,
            None => ServeArgs::default(),
        };
        let config = Config::resolve_with(args.clone(), file, rust_log)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and the relations between options; errors name the option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        logging::check_filter(&self.log).map_err(|reason| ConfigError::Invalid { option: "log", reason })?;
        ensure((1..=MAX_WORKERS).contains(&self.workers), "workers", || {
            format!("must be between 1 and {MAX_WORKERS}, got {}", self.workers)
        })?;
        ensure(self.network.backlog >= 1, "backlog", || "must be at least 1".into())?;
        ensure(i32::try_from(self.network.backlog).is_ok(), "backlog", || {
            format!("must be at most {}, got {}", i32::MAX, self.network.backlog)
        })?;
        for (option, value) in [
            ("max-connections", self.network.max_connections),
            ("max-head", self.http.max_head),
            ("max-uri", self.http.max_uri),
            ("max-body", self.http.max_body),
            ("max-batch", self.longpoll.max_batch),
            ("history-messages", self.history.max_messages),
            ("history-bytes", self.history.max_bytes),
            ("history-total-messages", self.history.total_messages),
            ("history-total-bytes", self.history.total_bytes),
            ("stream-max-bytes", self.streams.max_bytes),
            ("max-pending-output", self.network.max_pending_output),
            ("ws-max-message", self.streams.ws_max_message),
            ("session-queue", self.sessions.queue),
            ("max-sessions", self.sessions.max_sessions),
            ("session-create-rate", self.sessions.create_rate),
        ] {
            ensure(value >= 1, option, || "must be at least 1".into())?;
        }
        ensure(self.http.max_head <= MAX_HEAD_LIMIT, "max-head", || {
            format!("must be at most {MAX_HEAD_LIMIT} bytes, got {}", self.http.max_head)
        })?;
        ensure(self.http.max_uri <= self.http.max_head, "max-uri", || {
            format!(
                "({}) must not exceed --max-head ({}): the request-target is part of the head",
                self.http.max_uri, self.http.max_head
            )
        })?;
        for (option, value) in [
            ("header-timeout", self.timeouts.header),
            ("keepalive-timeout", self.timeouts.keepalive),
            ("longpoll-timeout", self.longpoll.timeout),
            ("longpoll-max-timeout", self.longpoll.max_timeout),
            ("history-age", self.history.max_age),
            ("shutdown-timeout", self.timeouts.shutdown),
            ("heartbeat-interval", self.streams.heartbeat_interval),
            ("stream-max-age", self.streams.max_age),
            ("sse-retry", self.streams.sse_retry),
            ("session-lease", self.sessions.lease),
            ("session-join-timeout", self.sessions.join_timeout),
            ("pushlet-read-timeout", self.sessions.pushlet_read_timeout),
            ("bayeux-timeout", self.sessions.bayeux_timeout),
            ("bayeux-max-interval", self.sessions.bayeux_max_interval),
        ] {
            let zero_ok = option == "shutdown-timeout";
            ensure(zero_ok || !value.is_zero(), option, || "must be greater than 0 seconds".into())?;
            ensure(value.as_secs_f64() <= MAX_SECONDS, option, || format!("must be at most {MAX_SECONDS} seconds"))?;
        }
        ensure(self.longpoll.timeout <= self.longpoll.max_timeout, "longpoll-timeout", || {
            format!(
                "({} s) must not exceed --longpoll-max-timeout ({} s)",
                self.longpoll.timeout.as_secs_f64(),
                self.longpoll.max_timeout.as_secs_f64()
            )
        })?;
        ensure(self.history.max_bytes >= self.http.max_body, "history-bytes", || {
            format!(
                "({}) must be at least --max-body ({}) so any accepted message fits a topic's history",
                self.history.max_bytes, self.http.max_body
            )
        })?;
        ensure(self.history.total_messages >= self.history.max_messages, "history-total-messages", || {
            format!(
                "({}) must be at least --history-messages ({})",
                self.history.total_messages, self.history.max_messages
            )
        })?;
        ensure(self.history.total_bytes >= self.history.max_bytes, "history-total-bytes", || {
            format!("({}) must be at least --history-bytes ({})", self.history.total_bytes, self.history.max_bytes)
        })?;
        self.access.validate()?;
        self.auth.validate()
    }

    /// Merges flags over file over defaults and converts to the resolved types (unvalidated).
    #[cfg(test)]
    fn resolve(flags: ServeArgs, file: ServeArgs) -> Result<Config, ConfigError> {
        Config::resolve_with(flags, file, None)
    }

    /// `resolve`, with `RUST_LOG` as the log filter's fallback.
    fn resolve_with(flags: ServeArgs, file: ServeArgs, rust_log: Option<String>) -> Result<Config, ConfigError> {
        // Flag if given, else file value if given; the caller supplies the default.
        macro_rules! pick {
            ($($field:ident).+) => {
                flags.$($field).+.or(file.$($field).+)
            };
        }
        let d = Config::default();
        Ok(Config {
            workers: pick!(workers).unwrap_or(d.workers),
            pin_workers: pick!(no_pin).map_or(d.pin_workers, |no_pin| !no_pin),
            log: pick!(log).or(rust_log).unwrap_or(d.log),
            log_format: pick!(log_format).unwrap_or(d.log_format),
            state_dir: pick!(state_dir).or(d.state_dir),
            network: Network {
                listen: pick!(network.listen).map_or(d.network.listen, |a| a.0),
                raw_listen: pick!(network.raw_listen).map(|a| a.0).or(d.network.raw_listen),
                admin_listen: pick!(network.admin_listen).map(|a| a.0).or(d.network.admin_listen),
                admin_publish: pick!(network.admin_publish).unwrap_or(d.network.admin_publish),
                backlog: pick!(network.backlog).unwrap_or(d.network.backlog),
                max_connections: pick!(network.max_connections).unwrap_or(d.network.max_connections),
                max_pending_output: pick!(network.max_pending_output)
                    .map_or(d.network.max_pending_output, |size| size.0),
            },
            http: http::Limits {
                max_head: pick!(http.max_head).map_or(d.http.max_head, |size| size.0),
                max_uri: pick!(http.max_uri).map_or(d.http.max_uri, |size| size.0),
                max_body: pick!(http.max_body).map_or(d.http.max_body, |size| size.0),
            },
            timeouts: Timeouts {
                header: seconds("header-timeout", pick!(timeouts.header), d.timeouts.header)?,
                keepalive: seconds("keepalive-timeout", pick!(timeouts.keepalive), d.timeouts.keepalive)?,
                shutdown: seconds("shutdown-timeout", pick!(timeouts.shutdown), d.timeouts.shutdown)?,
            },
            longpoll: Longpoll {
                timeout: seconds("longpoll-timeout", pick!(longpoll.timeout), d.longpoll.timeout)?,
                max_timeout: seconds("longpoll-max-timeout", pick!(longpoll.max_timeout), d.longpoll.max_timeout)?,
                max_batch: pick!(longpoll.max_batch).unwrap_or(d.longpoll.max_batch),
            },
            history: HistoryLimits {
                max_messages: pick!(history.max_messages).unwrap_or(d.history.max_messages),
                max_bytes: pick!(history.max_bytes).map_or(d.history.max_bytes, |size| size.0),
                max_age: seconds("history-age", pick!(history.max_age), d.history.max_age)?,
                total_messages: pick!(history.total_messages).unwrap_or(d.history.total_messages),
                total_bytes: pick!(history.total_bytes).map_or(d.history.total_bytes, |size| size.0),
            },
            streams: Streams {
                heartbeat_interval: seconds(
                    "heartbeat-interval",
                    pick!(streams.heartbeat_interval),
                    d.streams.heartbeat_interval,
                )?,
                max_age: seconds("stream-max-age", pick!(streams.max_age), d.streams.max_age)?,
                max_bytes: pick!(streams.max_bytes).map_or(d.streams.max_bytes, |size| size.0),
                sse_retry: seconds("sse-retry", pick!(streams.sse_retry), d.streams.sse_retry)?,
                ws_max_message: pick!(streams.ws_max_message).map_or(d.streams.ws_max_message, |size| size.0),
            },
            sessions: Sessions {
                max_sessions: pick!(sessions.max_sessions).unwrap_or(d.sessions.max_sessions),
                queue: pick!(sessions.queue).unwrap_or(d.sessions.queue),
                lease: seconds("session-lease", pick!(sessions.lease), d.sessions.lease)?,
                join_timeout: seconds("session-join-timeout", pick!(sessions.join_timeout), d.sessions.join_timeout)?,
                create_rate: pick!(sessions.create_rate).unwrap_or(d.sessions.create_rate),
                pushlet_read_timeout: seconds(
                    "pushlet-read-timeout",
                    pick!(sessions.pushlet_read_timeout),
                    d.sessions.pushlet_read_timeout,
                )?,
                bayeux_timeout: seconds("bayeux-timeout", pick!(sessions.bayeux_timeout), d.sessions.bayeux_timeout)?,
                bayeux_max_interval: seconds(
                    "bayeux-max-interval",
                    pick!(sessions.bayeux_max_interval),
                    d.sessions.bayeux_max_interval,
                )?,
            },
            access: Access {
                cors_origins: pick!(access.cors_origins).map_or(d.access.cors_origins, clean_list),
                cors_publish_origins: pick!(access.cors_publish_origins)
                    .map_or(d.access.cors_publish_origins, clean_list),
                client_publish: pick!(access.client_publish).map_or(d.access.client_publish, clean_list),
            },
            web: Web {
                enabled: pick!(web.no_web).map_or(d.web.enabled, |no_web| !no_web),
                demo: pick!(web.demo).unwrap_or(d.web.demo),
            },
            auth: Auth {
                secret: pick!(auth.secret).or(d.auth.secret),
                secret_file: pick!(auth.secret_file).or(d.auth.secret_file),
                public_key: pick!(auth.public_key).or(d.auth.public_key),
                public_subscribe: pick!(auth.public_subscribe).map_or(d.auth.public_subscribe, clean_list),
                public_publish: pick!(auth.public_publish).map_or(d.auth.public_publish, clean_list),
                cookie: pick!(auth.cookie).unwrap_or(d.auth.cookie),
            },
            tls: match (pick!(tls.cert), pick!(tls.key)) {
                (Some(cert), Some(key)) => Some(Tls { cert, key }),
                (None, None) => d.tls,
                (Some(_), None) => {
                    return Err(ConfigError::Invalid {
                        option: "tls-key",
                        reason: "is required with --tls-cert".into(),
                    })
                }
                (None, Some(_)) => {
                    return Err(ConfigError::Invalid {
                        option: "tls-cert",
                        reason: "is required with --tls-key".into(),
                    })
                }
            },
        })
    }
}

impl Access {
    /// Every pattern and origin must parse; errors name the option.
    fn validate(&self) -> Result<(), ConfigError> {
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
}

impl Default for Config {
    /// The documented defaults (each flag's help text states its own).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Config {
            workers: cores.min(MAX_WORKERS),
            pin_workers: true,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            state_dir: None,
            network: Network::default(),
            http: http::Limits::default(),
            timeouts: Timeouts::default(),
            longpoll: Longpoll::default(),
            history: HistoryLimits::default(),
            streams: Streams::default(),
            sessions: Sessions::default(),
            access: Access::default(),
            web: Web::default(),
            auth: Auth::default(),
            tls: None,
        }
    }
}

impl Default for Network {
    fn default() -> Self {
        Network {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080)),
            raw_listen: None,
            admin_listen: None,
            admin_publish: false,
            backlog: 4096,
            max_connections: 1_000_000,
            max_pending_output: 256 * 1024,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            shutdown: Duration::from_secs(5),
        }
    }
}

impl Default for Longpoll {
    fn default() -> Self {
        Longpoll { timeout: Duration::from_secs(30), max_timeout: Duration::from_secs(120), max_batch: 100 }
    }
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            heartbeat_interval: Duration::from_secs(15),
            max_age: Duration::from_secs(3600),
            max_bytes: 64 * 1024 * 1024,
            sse_retry: Duration::from_secs(2),
            ws_max_message: 1024 * 1024,
        }
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            max_sessions: 1_000_000,
            // The original Pushlet kept 24 events per session because each copy cost servlet
            // memory; Halley's sessions hold a cursor into shared history, so the bound is only
            // how far behind a client may fall before it is told: a few seconds of a busy topic.
            queue: 1000,
            lease: Duration::from_secs(300),
            // A real client listens or connects right after it joins or handshakes.
            join_timeout: Duration::from_secs(30),
            // Well above what one browser, or an office behind one NAT, starts at once; far below
            // the 160,000/s one connection could create without it. With the join timeout it
            // lets one address hold at most 200 x 30 s = 6,000 unused sessions per worker.
            create_rate: 200,
            pushlet_read_timeout: Duration::from_secs(20),
            bayeux_timeout: Duration::from_millis(bayeux::DEFAULT_TIMEOUT_MS),
            bayeux_max_interval: Duration::from_millis(bayeux::DEFAULT_MAX_INTERVAL_MS),
        }
    }
}

impl Default for Access {
    fn default() -> Self {
        Access {
            cors_origins: vec!["*".to_owned()],
            cors_publish_origins: Vec::new(),
            client_publish: vec!["/**".to_owned()],
        }
    }
}

impl Default for Web {
    fn default() -> Self {
        Web { enabled: true, demo: false }
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
            ConfigError::Invalid { option, reason } => match file::file_key(option) {
                Some(file::FileKey { table: Some(table), key, .. }) => {
                    write!(f, "invalid --{option} (`{key}` in the config file), table [{table}]: {reason}")
                }
                Some(file::FileKey { key, .. }) => {
                    write!(f, "invalid --{option} (`{key}` in the config file): {reason}")
                }
                None => write!(f, "invalid --{option}: {reason}"),
            },
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

/// Converts an optional seconds value, rejecting what `Duration` cannot hold.
fn seconds(option: &'static str, value: Option<Seconds>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(Seconds(secs)) = value else {
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
mod tests;
