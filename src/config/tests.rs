use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{CommandFactory, Parser};

use super::file::{parse_toml, FILE_KEYS};
use super::*;
use std::path::Path;

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
    let config = Config::load_with(&flags(&[]), None).expect("defaults load");
    assert_eq!(config, Config::default());
    assert_eq!(config.network.listen.to_string(), "127.0.0.1:8080");
    assert!(config.workers >= 1);
    assert!(config.pin_workers);
    assert_eq!(config.timeouts.header, Duration::from_secs(10));
    assert_eq!(config.access.cors_origins, vec!["*"]);
    assert!(config.access.cors_publish_origins.is_empty());
    config.validate().expect("defaults are valid");
}

#[test]
fn help_states_every_default() {
    let d = Config::default();
    let secs = |d: Duration| d.as_secs().to_string();
    let expected: &[(&str, String)] = &[
        ("listen", d.network.listen.to_string()),
        ("workers", "number of cores".into()),
        ("no_pin", (!d.pin_workers).to_string()),
        ("backlog", d.network.backlog.to_string()),
        ("max_connections", d.network.max_connections.to_string()),
        ("max_head", d.http.max_head.to_string()),
        ("max_uri", d.http.max_uri.to_string()),
        ("max_body", d.http.max_body.to_string()),
        ("header_timeout", secs(d.timeouts.header)),
        ("keepalive_timeout", secs(d.timeouts.keepalive)),
        ("longpoll_timeout", secs(d.longpoll.timeout)),
        ("longpoll_max_timeout", secs(d.longpoll.max_timeout)),
        ("max_batch", d.longpoll.max_batch.to_string()),
        ("history_messages", d.history.max_messages.to_string()),
        ("history_bytes", d.history.max_bytes.to_string()),
        ("history_age", secs(d.history.max_age)),
        ("history_total_messages", d.history.total_messages.to_string()),
        ("history_total_bytes", d.history.total_bytes.to_string()),
        ("shutdown_timeout", secs(d.timeouts.shutdown)),
        ("close_write_timeout", secs(d.timeouts.close_write)),
        ("cors_origins", d.access.cors_origins.join(",")),
        ("cors_publish_origins", "none".into()),
        ("trusted_proxies", "none".into()),
        ("heartbeat_interval", secs(d.streams.heartbeat_interval)),
        ("stream_max_age", secs(d.streams.max_age)),
        ("stream_max_bytes", d.streams.max_bytes.to_string()),
        ("max_pending_output", d.network.max_pending_output.to_string()),
        ("sse_retry", secs(d.streams.sse_retry)),
        ("ws_max_message", d.streams.ws_max_message.to_string()),
        ("raw_listen", "none".into()),
        ("admin_listen", "none".into()),
        ("redis", "none".into()),
        ("admin_publish", d.network.admin_publish.to_string()),
        ("log_format", d.log_format.to_string()),
        ("access_log", "none".into()),
        ("client_publish", d.access.client_publish.join(",")),
        ("session_queue", d.sessions.queue.to_string()),
        ("max_sessions", d.sessions.max_sessions.to_string()),
        ("session_lease", secs(d.sessions.lease)),
        ("session_join_timeout", secs(d.sessions.join_timeout)),
        ("session_create_rate", d.sessions.create_rate.to_string()),
        ("pushlet_read_timeout", secs(d.sessions.pushlet_read_timeout)),
        ("bayeux_timeout", secs(d.sessions.bayeux_timeout)),
        ("bayeux_max_interval", secs(d.sessions.bayeux_max_interval)),
        ("log", d.log.clone()),
        ("state_dir", "none".into()),
        ("no_web", (!d.web.enabled).to_string()),
        ("demo", d.web.demo.to_string()),
        ("auth_secret", "none".into()),
        ("auth_secret_file", "none".into()),
        ("auth_public_key", "none".into()),
        ("auth_public_subscribe", "none".into()),
        ("auth_public_publish", "none".into()),
        ("auth_cookie", d.auth.cookie.clone()),
        ("tls_cert", "none".into()),
        ("tls_key", "none".into()),
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
    assert_eq!(config.network.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.workers, 3);
    assert!(!config.pin_workers);
    assert_eq!(config.http.max_head, 32768);
    assert_eq!(config.timeouts.header, Duration::from_millis(2500));
    assert_eq!(config.timeouts.keepalive, Duration::from_secs(5));
    assert_eq!(config.access.cors_publish_origins, vec!["https://a.example", "http://b.example:8080"]);
    assert_eq!(config.log, "debug");
    assert_eq!(config.http.max_uri, Config::default().http.max_uri, "unset keeps default");
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
    assert_eq!(config.longpoll.max_batch, 7, "file beats default");
    assert!(config.pin_workers, "--no-pin=false beats no_pin = true");
    assert_eq!(config.access.cors_origins, vec!["https://a.example", "https://b.example"]);
    assert_eq!(config.http.max_body, Config::default().http.max_body);
}

#[test]
fn bare_no_pin_flag_and_empty_list() {
    let config = Config::load(&flags(&["--no-pin", "--cors-origins="])).expect("loads");
    assert!(!config.pin_workers);
    assert!(config.access.cors_origins.is_empty());
    let config = Config::load(&flags(&["--no-web", "--demo"])).expect("loads");
    assert_eq!(config.web, Web { enabled: false, demo: true });
    assert_eq!(Config::load(&flags(&[])).expect("loads").web, Web { enabled: true, demo: false });
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
        ("backlog", |c| c.network.backlog = 0),
        ("backlog", |c| c.network.backlog = u32::MAX),
        ("max-connections", |c| c.network.max_connections = 0),
        ("max-head", |c| c.http.max_head = 0),
        ("max-head", |c| c.http.max_head = MAX_HEAD_LIMIT + 1),
        ("max-uri", |c| c.http.max_uri = 0),
        ("max-uri", |c| c.http.max_uri = c.http.max_head + 1),
        ("max-body", |c| c.http.max_body = 0),
        ("max-batch", |c| c.longpoll.max_batch = 0),
        ("history-messages", |c| c.history.max_messages = 0),
        ("history-bytes", |c| c.history.max_bytes = 0),
        ("history-bytes", |c| c.history.max_bytes = c.http.max_body - 1),
        ("history-total-messages", |c| c.history.total_messages = 0),
        ("history-total-messages", |c| c.history.total_messages = c.history.max_messages - 1),
        ("history-total-bytes", |c| c.history.total_bytes = 0),
        ("history-total-bytes", |c| c.history.total_bytes = c.history.max_bytes - 1),
        ("header-timeout", |c| c.timeouts.header = Duration::ZERO),
        ("keepalive-timeout", |c| c.timeouts.keepalive = Duration::ZERO),
        ("longpoll-timeout", |c| c.longpoll.timeout = Duration::ZERO),
        ("longpoll-timeout", |c| c.longpoll.timeout = c.longpoll.max_timeout + Duration::from_secs(1)),
        ("longpoll-max-timeout", |c| c.longpoll.max_timeout = Duration::ZERO),
        ("history-age", |c| c.history.max_age = Duration::ZERO),
        ("history-age", |c| c.history.max_age = Duration::from_secs(400 * 24 * 3600)),
        ("shutdown-timeout", |c| c.timeouts.shutdown = Duration::from_secs(400 * 24 * 3600)),
        ("cors-origins", |c| c.access.cors_origins = vec!["example.com".into()]),
        ("cors-origins", |c| c.access.cors_origins = vec!["https://a.example/".into()]),
        ("cors-publish-origins", |c| c.access.cors_publish_origins = vec!["https://a b".into()]),
    ];
    for (option, break_it) in cases {
        let mut config = Config::default();
        break_it(&mut config);
        assert_eq!(invalid_option(&config), *option, "{config:?}");
        let text = config.validate().expect_err("invalid").to_string();
        assert!(text.contains(&format!("--{option}")), "{text}");
    }
    let zero_shutdown =
        Config { timeouts: Timeouts { shutdown: Duration::ZERO, ..Timeouts::default() }, ..Config::default() };
    zero_shutdown.validate().expect("zero shutdown timeout = close at once");
}

#[test]
fn error_message_names_flag_and_key() {
    let err = Config { http: http::Limits { max_uri: 20_000, ..http::Limits::default() }, ..Config::default() }
        .validate()
        .expect_err("invalid");
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

#[test]
fn sectioned_file_sets_every_kind_of_value() {
    let args = toml_args(
        r#"
        workers = 3
        no_pin = true
        log = "debug"

        [network]
        listen = "0.0.0.0:9000"
        max_pending_output = 65536

        [http]
        max_head = 32768

        [timeouts]
        header = 2.5
        keepalive = 5

        [history]
        max_messages = 7

        [access]
        cors_publish_origins = ["https://a.example", "http://b.example:8080"]

        [web]
        no_web = true
        demo = true
        "#,
    )
    .expect("valid file");
    let config = Config::resolve(flags(&[]), args).expect("resolves");
    assert_eq!(config.workers, 3);
    assert!(!config.pin_workers);
    assert_eq!(config.log, "debug");
    assert_eq!(config.network.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.network.max_pending_output, 65536);
    assert_eq!(config.http.max_head, 32768);
    assert_eq!(config.timeouts.header, Duration::from_millis(2500));
    assert_eq!(config.timeouts.keepalive, Duration::from_secs(5));
    assert_eq!(config.history.max_messages, 7);
    assert_eq!(config.access.cors_publish_origins, vec!["https://a.example", "http://b.example:8080"]);
    assert_eq!(config.web, Web { enabled: false, demo: true });
    assert_eq!(config.http.max_uri, Config::default().http.max_uri, "unset keeps default");
    config.validate().expect("valid");
}

/// Every option set in the older flat form, in the sectioned form and in a mix of both gives
/// the same arguments.
#[test]
fn flat_and_sectioned_forms_mean_the_same() {
    let sample = |flat: &str| match flat {
        "workers"
        | "backlog"
        | "max_connections"
        | "max_batch"
        | "session_queue"
        | "max_sessions"
        | "session_create_rate" => "3",
        "no_pin" | "no_web" | "demo" | "admin_publish" => "true",
        "log" => "\"debug\"",
        "log_format" => "\"json\"",
        "redis" => "\"redis://127.0.0.1:6379/0\"",
        "access_log" => "\"/tmp/access.log\"",
        "listen" | "raw_listen" | "admin_listen" => "\"127.0.0.1:9\"",
        "state_dir" => "\"/var/lib/halley\"",
        "cors_origins" | "cors_publish_origins" => "[\"https://a.example\"]",
        "client_publish" | "auth_public_subscribe" | "auth_public_publish" => "[\"/chat/**\"]",
        "auth_secret" | "auth_cookie" => "\"s3cret\"",
        "auth_secret_file" | "auth_public_key" => "\"/etc/halley/key.pem\"",
        "tls_cert" | "tls_key" => "\"/etc/halley/tls.pem\"",
        "trusted_proxies" => "[\"10.0.0.0/8\"]",
        "header_timeout"
        | "keepalive_timeout"
        | "shutdown_timeout"
        | "close_write_timeout"
        | "longpoll_timeout"
        | "longpoll_max_timeout"
        | "history_age"
        | "heartbeat_interval"
        | "stream_max_age"
        | "sse_retry"
        | "session_lease"
        | "session_join_timeout"
        | "pushlet_read_timeout"
        | "bayeux_timeout"
        | "bayeux_max_interval" => "2.5",
        _ => "123456",
    };
    let mut flat = String::new();
    let mut sectioned = String::new();
    let mut mixed = String::new();
    let mut table = None;
    for (i, key) in FILE_KEYS.iter().enumerate() {
        let value = sample(key.flat);
        flat.push_str(&format!("{} = {value}\n", key.flat));
        if key.table != table {
            table = key.table;
            sectioned.push_str(&format!("[{}]\n", table.unwrap_or_default()));
        }
        sectioned.push_str(&format!("{} = {value}\n", key.key));
        match key.table {
            Some(table) if i % 2 == 0 => mixed.push_str(&format!("{table}.{} = {value}\n", key.key)),
            _ => mixed.push_str(&format!("{} = {value}\n", key.flat)),
        }
    }
    let from_flat = toml_args(&flat).expect("flat form");
    let from_sections = toml_args(&sectioned).expect("sectioned form");
    let from_mixed = toml_args(&mixed).expect("mixed form");
    assert_eq!(from_flat, from_sections);
    assert_eq!(from_mixed, from_sections);
    assert_eq!(from_sections.history.max_messages, Some(123456));
    assert_eq!(from_sections.sessions.lease, Some(Seconds(2.5)));
    assert_eq!(from_sections.no_pin, Some(true));
    assert_eq!((from_sections.web.no_web, from_sections.web.demo), (Some(true), Some(true)));
}

#[test]
fn file_errors_name_key_and_line_in_both_forms() {
    let one_line = |text: &str, key: &str, line: usize| {
        let err = toml_args(text).expect_err(text).to_string();
        assert!(err.contains(key) && err.contains(&format!("line {line}")), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    };
    one_line("log = \"info\"\n[http]\nmax_hed = 1\n", "max_hed", 3);
    one_line("[network]\nlisten = \"127.0.0.1:1\"\n[histroy]\nmax_messages = 1\n", "histroy", 3);
    one_line("max_head = 1\nheader_timeout = \"soon\"\n", "duration", 2);
    one_line("max_head = 1\nmax_hed = 1\n", "max_hed", 2);
    let err = toml_args("max_head = 1\n[http]\nmax_head = 2\n").expect_err("set twice").to_string();
    assert!(err.contains("twice"), "{err}");
}

/// `FILE_KEYS` names every option clap knows, once, and each of its places is a key serde
/// accepts: a value of the wrong type there is a type error, not an unknown key.
#[test]
fn file_keys_cover_every_option() {
    let command = Cli::command();
    let ids: Vec<&str> =
        command.get_arguments().map(|a| a.get_id().as_str()).filter(|id| !matches!(*id, "config" | "help")).collect();
    assert_eq!(ids.len(), FILE_KEYS.len());
    for id in ids {
        assert_eq!(FILE_KEYS.iter().filter(|k| k.flat == id).count(), 1, "{id}");
    }
    for key in FILE_KEYS {
        let text = match key.table {
            Some(table) => format!("[{table}]\n{} = {{}}\n", key.key),
            None => format!("{} = {{}}\n", key.key),
        };
        let err = toml_args(&text).expect_err(&text).to_string();
        assert!(err.contains("invalid type"), "{key:?}: {err}");
    }
}

#[test]
fn error_message_names_the_table() {
    let mut config = Config::default();
    config.history.max_messages = 0;
    let text = config.validate().expect_err("invalid").to_string();
    assert!(
        text.starts_with("invalid --history-messages (`max_messages` in the config file), table [history]: "),
        "{text}"
    );
    config = Config { workers: 0, ..Config::default() };
    let text = config.validate().expect_err("invalid").to_string();
    assert!(text.starts_with("invalid --workers (`workers` in the config file): "), "{text}");
}

/// The output marks derive from `--max-pending-output`; the defaults are the 256 KiB (and half of
/// it) the worker used as constants before they became one knob.
#[test]
fn output_marks_follow_the_one_bound() {
    let network = Network::default();
    assert_eq!(network.out_high_water(), 256 * 1024);
    assert_eq!(network.out_low_water(), 128 * 1024);
    let small = Network { max_pending_output: 64 * 1024, ..Network::default() };
    assert_eq!((small.out_high_water(), small.out_low_water()), (64 * 1024, 32 * 1024));
}

/// The example file in README.md is valid and means what it says.
#[test]
fn readme_example_file_is_valid() {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").expect("README has a ```toml block") + "```toml\n".len();
    let len = readme[start..].find("```").expect("closed block");
    let args = toml_args(&readme[start..start + len]).expect("README example parses");
    let config = Config::resolve(flags(&[]), args).expect("resolves");
    config.validate().expect("README example is valid");
}

/// A listen address may name a host; it is resolved when the option is read.
#[test]
fn listen_takes_a_host_name() {
    let config = Config::load(&flags(&["--listen", "localhost:9000"])).expect("localhost resolves");
    assert!(config.network.listen.ip().is_loopback(), "{}", config.network.listen);
    assert_eq!(config.network.listen.port(), 9000);
    let from_file = toml_args("[network]\nlisten = \"localhost:9001\"\n").expect("file form");
    assert_eq!(from_file.network.listen.map(|a| a.0.port()), Some(9001));
    let err = Cli::try_parse_from(["halley", "--listen", "localhost"]).expect_err("no port");
    assert!(err.to_string().contains("HOST:PORT"), "{err}");
}

/// Durations and sizes take human units in flags and in the file; plain numbers still work.
#[test]
fn durations_and_sizes_take_units() {
    let config = Config::load(&flags(&["--history-age", "1h", "--header-timeout", "500ms", "--max-body", "512KiB"]))
        .expect("units");
    assert_eq!(config.history.max_age, Duration::from_secs(3600));
    assert_eq!(config.timeouts.header, Duration::from_millis(500));
    assert_eq!(config.http.max_body, 512 << 10);
    let file =
        toml_args("[history]\nmax_age = \"2d\"\ntotal_bytes = \"1GB\"\n[http]\nmax_head = 32768\n").expect("file");
    assert_eq!(file.history.max_age, Some(Seconds(172_800.0)));
    assert_eq!(file.history.total_bytes, Some(ByteSize(1_000_000_000)));
    assert_eq!(file.http.max_head, Some(ByteSize(32768)));
    for bad in ["10 parsecs", "1.5MiB", "-1KiB"] {
        assert!(Cli::try_parse_from(["halley", "--max-body", bad]).is_err(), "{bad}");
    }
    assert!(Cli::try_parse_from(["halley", "--history-age", "3 fortnights"]).is_err());
}

/// `--tls-cert` and `--tls-key` come as a pair, from flags or from `[tls]` in the file.
#[test]
fn tls_cert_and_key_come_together() {
    let config = Config::load(&flags(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])).expect("pair");
    assert_eq!(config.tls, Some(Tls { cert: "c.pem".into(), key: "k.pem".into() }));
    let err = Config::load(&flags(&["--tls-cert", "c.pem"])).expect_err("cert alone");
    assert_eq!(
        err.to_string(),
        "invalid --tls-key (`key` in the config file), table [tls]: is required with --tls-cert"
    );
    let path = temp_file("[tls]\ncert = \"/a/c.pem\"\nkey = \"/a/k.pem\"\n");
    let config = Config::load(&flags(&["--config", path.to_str().expect("utf-8")])).expect("file");
    let _ = std::fs::remove_file(&path);
    assert_eq!(config.tls, Some(Tls { cert: "/a/c.pem".into(), key: "/a/k.pem".into() }));
    assert_eq!(Config::default().tls, None);
}
