//! The resolved [`Config`] written back as a `--config` file (`halley check-config`): the
//! documented form, every option in the table and order of `FILE_KEYS`, durations and sizes
//! with units. Reading the text again with `--config` gives the same `Config` (a unit test
//! checks the round trip, and that every option in `FILE_KEYS` is written).

use std::fmt::Write as _;
use std::time::Duration;

use toml::Value;

use super::file::{FileKey, FILE_KEYS};
use super::Config;

/// What one option's line says.
#[derive(Debug, PartialEq)]
pub(super) enum Emitted {
    /// `key = value`.
    Set(Value),
    /// An optional option that is not set: written as a comment, so the file still lists it.
    Unset,
    /// A secret that is set: never printed (the output then does not read back with it; keep
    /// secrets in `auth.secret_file`, which is printed as its path).
    Hidden,
}

impl Config {
    /// The configuration as TOML that `--config` accepts, with a header comment.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# halley: effective configuration (flags > HALLEY_* environment > file > defaults).\n\
             # This is a valid --config file; durations are in seconds unless a unit is given.\n",
        );
        let mut table = None;
        for key in FILE_KEYS {
            if key.table != table {
                table = key.table;
                if let Some(name) = table {
                    let _ = write!(out, "\n[{name}]\n");
                }
            }
            match self.emitted(key) {
                Emitted::Set(value) => {
                    let _ = writeln!(out, "{} = {value}", key.key);
                }
                Emitted::Unset => {
                    let _ = writeln!(out, "# {} is not set", key.key);
                }
                Emitted::Hidden => {
                    let _ = writeln!(out, "# {} is set, not shown", key.key);
                }
            }
        }
        out
    }

    /// One option's value, found by its flat name. Every name in `FILE_KEYS` must have an arm:
    /// the catch-all panics, which the round-trip test turns into a failure naming the option.
    pub(super) fn emitted(&self, key: &FileKey) -> Emitted {
        let n = &self.network;
        let s = &self.sessions;
        let value = match key.flat {
            "workers" => int(self.workers),
            "no_pin" => Value::Boolean(!self.pin_workers),
            "log" => Value::String(self.log.clone()),
            "log_format" => Value::String(self.log_format.to_string()),
            "access_log" => return optional(self.access_log.as_deref().map(path)),
            "state_dir" => return optional(self.state_dir.as_deref().map(path)),
            // A URL with a password in it (`redis://:pw@host`) is a secret.
            "redis" => match &n.redis {
                Some(url) if url.contains('@') => return Emitted::Hidden,
                url => return optional(url.clone().map(Value::String)),
            },
            "listen" => Value::String(n.listen.to_string()),
            "raw_listen" => return optional(n.raw_listen.map(|a| Value::String(a.to_string()))),
            "admin_listen" => return optional(n.admin_listen.map(|a| Value::String(a.to_string()))),
            "admin_publish" => Value::Boolean(n.admin_publish),
            "backlog" => int(n.backlog as usize),
            "max_connections" => int(n.max_connections),
            "max_pending_output" => size(n.max_pending_output),
            "max_head" => size(self.http.max_head),
            "max_uri" => size(self.http.max_uri),
            "max_body" => size(self.http.max_body),
            "header_timeout" => duration(self.timeouts.header),
            "keepalive_timeout" => duration(self.timeouts.keepalive),
            "shutdown_timeout" => duration(self.timeouts.shutdown),
            "close_write_timeout" => duration(self.timeouts.close_write),
            "longpoll_timeout" => duration(self.longpoll.timeout),
            "longpoll_max_timeout" => duration(self.longpoll.max_timeout),
            "max_batch" => int(self.longpoll.max_batch),
            "history_messages" => int(self.history.max_messages),
            "history_bytes" => size(self.history.max_bytes),
            "history_age" => duration(self.history.max_age),
            "history_total_messages" => int(self.history.total_messages),
            "history_total_bytes" => size(self.history.total_bytes),
            "heartbeat_interval" => duration(self.streams.heartbeat_interval),
            "stream_max_age" => duration(self.streams.max_age),
            "stream_max_bytes" => size(self.streams.max_bytes),
            "sse_retry" => duration(self.streams.sse_retry),
            "ws_max_message" => size(self.streams.ws_max_message),
            "max_sessions" => int(s.max_sessions),
            "session_queue" => int(s.queue),
            "session_lease" => duration(s.lease),
            "session_join_timeout" => duration(s.join_timeout),
            "session_create_rate" => int(s.create_rate),
            "pushlet_read_timeout" => duration(s.pushlet_read_timeout),
            "bayeux_timeout" => duration(s.bayeux_timeout),
            "bayeux_max_interval" => duration(s.bayeux_max_interval),
            "cors_origins" => list(&self.access.cors_origins),
            "cors_publish_origins" => list(&self.access.cors_publish_origins),
            "client_publish" => list(&self.access.client_publish),
            "trusted_proxies" => {
                Value::Array(self.access.trusted_proxies.iter().map(|c| Value::String(c.to_string())).collect())
            }
            "no_web" => Value::Boolean(!self.web.enabled),
            "demo" => Value::Boolean(self.web.demo),
            "auth_secret" => return if self.auth.secret.is_some() { Emitted::Hidden } else { Emitted::Unset },
            "auth_secret_file" => return optional(self.auth.secret_file.as_deref().map(path)),
            "auth_public_key" => return optional(self.auth.public_key.as_deref().map(path)),
            "auth_public_subscribe" => list(&self.auth.public_subscribe),
            "auth_public_publish" => list(&self.auth.public_publish),
            "auth_cookie" => Value::String(self.auth.cookie.clone()),
            "tls_cert" => return optional(self.tls.as_ref().map(|tls| path(&tls.cert))),
            "tls_key" => return optional(self.tls.as_ref().map(|tls| path(&tls.key))),
            other => panic!("config::emit: no value for the option `{other}`: add it to Config::emitted"),
        };
        Emitted::Set(value)
    }
}

fn optional(value: Option<Value>) -> Emitted {
    value.map_or(Emitted::Unset, Emitted::Set)
}

/// A count; TOML integers are i64, and no validated count comes near that.
fn int(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A size: with the largest binary unit that divides it (`"256MiB"`), else plain bytes.
fn size(bytes: usize) -> Value {
    for (unit, scale) in [("GiB", 1usize << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes % scale == 0 {
            return Value::String(format!("{}{unit}", bytes / scale));
        }
    }
    int(bytes)
}

/// A duration: whole hours, minutes or seconds with their unit (`"1h"`, `"30s"`), else
/// seconds with the shortest decimal that reads back as the same value (`"0.25s"`).
fn duration(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        let secs = d.as_secs();
        let text = match secs {
            0 => "0s".to_owned(),
            _ if secs % 3600 == 0 => format!("{}h", secs / 3600),
            _ if secs % 60 == 0 => format!("{}m", secs / 60),
            _ => format!("{secs}s"),
        };
        return Value::String(text);
    }
    Value::String(format!("{}s", d.as_secs_f64()))
}

fn path(path: &std::path::Path) -> Value {
    Value::String(path.display().to_string())
}

fn list(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::file::parse_toml;
    use super::super::{Config, ServeArgs};
    use super::*;

    /// The text read back as `--config` (no flags, no RUST_LOG) and resolved.
    fn reread(text: &str) -> Config {
        let file = parse_toml(text, Path::new("check-config.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let config = Config::resolve_with(ServeArgs::default(), file, None).expect("resolves");
        config.validate().expect("valid");
        config
    }

    #[test]
    fn every_option_is_written() {
        let config = Config::default();
        let text = config.to_toml();
        for key in FILE_KEYS {
            let _ = config.emitted(key); // panics for an option without an arm
            let line = match key.table {
                Some(table) => format!("[{table}]"),
                None => String::new(),
            };
            assert!(text.contains(&line), "{line}");
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{} = ", key.key)) || l == format!("# {} is not set", key.key)),
                "{} missing from\n{text}",
                key.key
            );
        }
    }

    #[test]
    fn defaults_round_trip() {
        let config = Config::default();
        assert_eq!(reread(&config.to_toml()), config);
    }

    #[test]
    fn a_config_with_every_kind_of_value_round_trips() {
        let mut config = Config {
            workers: 3,
            pin_workers: false,
            log: "warn,halley=debug".into(),
            log_format: super::super::LogFormat::Json,
            ..Config::default()
        };
        config.network.raw_listen = Some("127.0.0.1:9001".parse().expect("addr"));
        config.network.admin_listen = Some("[::1]:9002".parse().expect("addr"));
        config.network.admin_publish = true;
        config.network.max_pending_output = 1000;
        config.access_log = Some("/var/log/halley/access.log".into());
        config.http.max_body = 3 << 20;
        config.history.max_bytes = 3 << 20;
        config.timeouts.header = Duration::from_millis(2500);
        config.timeouts.shutdown = Duration::ZERO;
        config.longpoll.timeout = Duration::from_secs(90);
        config.history.max_age = Duration::from_secs(86_400);
        config.streams.sse_retry = Duration::from_millis(100);
        config.sessions.bayeux_max_interval = Duration::from_secs_f64(0.3);
        config.access.cors_origins = vec!["https://a.example".into(), "http://b.example:8080".into()];
        config.access.cors_publish_origins = Vec::new();
        config.access.client_publish = vec!["/chat/**".into(), "/q \"quoted\"".into()];
        config.web.enabled = false;
        config.web.demo = true;
        config.auth.secret_file = Some("/etc/halley/secret".into());
        config.auth.public_subscribe = vec!["/news/**".into()];
        config.auth.cookie = "halley_token".into();
        config.tls = Some(super::super::Tls { cert: "/etc/halley/cert.pem".into(), key: "/etc/halley/key.pem".into() });
        let text = config.to_toml();
        assert!(text.contains("max_body = \"3MiB\""), "{text}");
        assert!(text.contains("max_age = \"1d\"") || text.contains("max_age = \"24h\""), "{text}");
        // `/q "quoted"` is no valid pattern, so only the parse is checked for it.
        let file = parse_toml(&text, Path::new("t.toml")).expect("parses");
        assert_eq!(file.access.client_publish.as_deref(), Some(&config.access.client_publish[..]));
        config.access.client_publish.pop();
        assert_eq!(reread(&config.to_toml()), config);
    }

    #[test]
    fn an_inline_secret_is_never_printed() {
        let mut config = Config::default();
        config.auth.secret = Some(super::super::Secret("do-not-print-me".into()));
        let text = config.to_toml();
        assert!(!text.contains("do-not-print-me"), "{text}");
        assert!(text.contains("# secret is set, not shown"), "{text}");
    }
}
