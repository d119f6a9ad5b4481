//! The `--config` TOML file: reading it (bounded), parsing it into [`ServeArgs`], and where each
//! option lives in it.
//!
//! The documented form has `workers`, `no_pin` and `log` at the top and every other option in
//! the table of its section (`[http] max_head = 32768`). The older flat form, every option at
//! the top under its flag's name (`max_head = 32768`), is still read: each flat key is moved
//! into its table before the file is deserialized, so both forms (even mixed) mean the same.
//! Errors carry the line and name the key, so a typo cannot silently fall back to a default.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use toml::{Spanned, Table, Value};

use super::{ConfigError, ServeArgs};

/// Largest config file read, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Where one option lives in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileKey {
    /// The flag with '_' for '-': the option's clap id and its key in the older flat form.
    pub flat: &'static str,
    /// Its table, `None` for the top-level keys.
    pub table: Option<&'static str>,
    /// Its key inside that table.
    pub key: &'static str,
}

const fn top(flat: &'static str) -> FileKey {
    FileKey { flat, table: None, key: flat }
}

const fn at(flat: &'static str, table: &'static str, key: &'static str) -> FileKey {
    FileKey { flat, table: Some(table), key }
}

/// Every option's place in the file, in `--help` order. A unit test checks it against the
/// options clap knows and the keys serde accepts.
pub(super) const FILE_KEYS: &[FileKey] = &[
    top("workers"),
    top("no_pin"),
    top("log"),
    top("log_format"),
    top("state_dir"),
    top("access_log"),
    at("listen", "network", "listen"),
    at("raw_listen", "network", "raw_listen"),
    at("admin_listen", "network", "admin_listen"),
    at("admin_publish", "network", "admin_publish"),
    at("redis", "network", "redis"),
    at("backlog", "network", "backlog"),
    at("max_connections", "network", "max_connections"),
    at("max_pending_output", "network", "max_pending_output"),
    at("max_head", "http", "max_head"),
    at("max_uri", "http", "max_uri"),
    at("max_body", "http", "max_body"),
    at("header_timeout", "timeouts", "header"),
    at("keepalive_timeout", "timeouts", "keepalive"),
    at("shutdown_timeout", "timeouts", "shutdown"),
    at("close_write_timeout", "timeouts", "close_write"),
    at("longpoll_timeout", "longpoll", "timeout"),
    at("longpoll_max_timeout", "longpoll", "max_timeout"),
    at("max_batch", "longpoll", "max_batch"),
    at("history_messages", "history", "max_messages"),
    at("history_bytes", "history", "max_bytes"),
    at("history_age", "history", "max_age"),
    at("history_total_messages", "history", "total_messages"),
    at("history_total_bytes", "history", "total_bytes"),
    at("heartbeat_interval", "streams", "heartbeat_interval"),
    at("stream_max_age", "streams", "max_age"),
    at("stream_max_bytes", "streams", "max_bytes"),
    at("sse_retry", "streams", "sse_retry"),
    at("ws_max_message", "streams", "ws_max_message"),
    at("max_sessions", "sessions", "max_sessions"),
    at("session_queue", "sessions", "queue"),
    at("session_lease", "sessions", "lease"),
    at("session_join_timeout", "sessions", "join_timeout"),
    at("session_create_rate", "sessions", "create_rate"),
    at("pushlet_read_timeout", "sessions", "pushlet_read_timeout"),
    at("bayeux_timeout", "sessions", "bayeux_timeout"),
    at("bayeux_max_interval", "sessions", "bayeux_max_interval"),
    at("cors_origins", "access", "cors_origins"),
    at("cors_publish_origins", "access", "cors_publish_origins"),
    at("trusted_proxies", "access", "trusted_proxies"),
    at("client_publish", "access", "client_publish"),
    at("no_web", "web", "no_web"),
    at("demo", "web", "demo"),
    at("auth_secret", "auth", "secret"),
    at("auth_secret_file", "auth", "secret_file"),
    at("auth_public_key", "auth", "public_key"),
    at("auth_public_subscribe", "auth", "public_subscribe"),
    at("auth_public_publish", "auth", "public_publish"),
    at("auth_cookie", "auth", "cookie"),
    at("tls_cert", "tls", "cert"),
    at("tls_key", "tls", "key"),
];

/// The file key of the option whose flag is `--{flag}`.
pub(super) fn file_key(flag: &str) -> Option<FileKey> {
    by_flat(&flag.replace('-', "_"))
}

/// The file key of the option whose key in the older flat form is `flat`.
fn by_flat(flat: &str) -> Option<FileKey> {
    FILE_KEYS.iter().copied().find(|k| k.flat == flat)
}

/// Reads and parses a config file of at most [`MAX_CONFIG_FILE_BYTES`].
pub(super) fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
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

/// Parses config file text in either form; errors carry the line and toml's one-line message
/// (which names an unknown key and lists the valid ones).
pub(super) fn parse_toml(text: &str, path: &Path) -> Result<ServeArgs, ConfigError> {
    let error_at = |line: Option<usize>, message: &str| ConfigError::Parse {
        path: path.to_owned(),
        line,
        message: message.to_owned(),
    };
    let line_of = |offset: usize| text.get(..offset).unwrap_or(text).matches('\n').count() + 1;
    let parse_error = |e: toml::de::Error| error_at(e.span().map(|span| line_of(span.start)), e.message());

    let top: BTreeMap<Spanned<String>, Value> = toml::from_str(text).map_err(parse_error)?;
    if !top.keys().any(|key| flat_table(key.get_ref()).is_some()) {
        // The documented form: deserialize the text itself, so every error has its exact line.
        return toml::from_str(text).map_err(parse_error);
    }
    // The older flat form. Each top-level entry is moved to its place and checked on its own,
    // so an error still names the line of the key it is about.
    let mut doc = Table::new();
    for (key, value) in top {
        let line = Some(line_of(key.span().start));
        let key = key.into_inner();
        let mut alone = Table::new();
        place(&mut alone, &key, value.clone());
        ServeArgs::deserialize(Value::Table(alone)).map_err(|e| error_at(line, e.message()))?;
        if !place(&mut doc, &key, value) {
            let message = format!("`{key}` sets an option twice: as an older top-level key and in its table");
            return Err(error_at(line, &message));
        }
    }
    ServeArgs::deserialize(Value::Table(doc)).map_err(|e| error_at(None, e.message()))
}

/// The table a top-level key of the older flat form belongs in (`None` for keys that are at
/// the top in both forms, for tables and for unknown keys).
fn flat_table(key: &str) -> Option<FileKey> {
    by_flat(key).filter(|k| k.table.is_some())
}

/// Puts a top-level entry where the documented form has it, merging a table into one that is
/// already there. Returns false if a key would be set twice.
fn place(doc: &mut Table, key: &str, value: Value) -> bool {
    if let Some(FileKey { table: Some(table), key: inner, .. }) = flat_table(key) {
        return insert_new(doc, table, inner, value);
    }
    match (doc.get(key), value) {
        (None, value) => doc.insert(key.to_owned(), value).is_none(),
        (Some(Value::Table(_)), Value::Table(entries)) => {
            entries.into_iter().all(|(inner, value)| insert_new(doc, key, &inner, value))
        }
        (Some(_), _) => false,
    }
}

/// Inserts `table.key = value` unless the key is there already. A `table` that is not a table
/// is left for the deserialization to report.
fn insert_new(doc: &mut Table, table: &str, key: &str, value: Value) -> bool {
    match doc.entry(table.to_owned()).or_insert_with(|| Value::Table(Table::new())) {
        Value::Table(entries) => entries.insert(key.to_owned(), value).is_none(),
        _ => true,
    }
}
