//! The `halley` command line: `serve` (the default), `check-config`, the tiny `pub` / `sub`
//! clients of the native API, and `token`, which mints an HS256 token from the configured secret.
//!
//! Exit codes: 0 success, 1 a request failed, 2 bad usage or configuration (clap's usage
//! errors use 2 as well). Ctrl-C keeps its default action and ends the process at once.
//!
//! Options come from the command line, then `HALLEY_<OPTION>` environment variables, then the
//! `--config` file, in that order of precedence.

mod client;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use halley::config::{Config, ServeArgs};

#[derive(Parser, Debug)]
#[command(
    name = "halley",
    version,
    about = "A thread-per-core Comet (HTTP server-push) server",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `halley --workers 2` means `halley serve --workers 2`.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default when no subcommand is given)
    Serve(Box<ServeArgs>),
    /// Publish one message to a topic
    Pub(client::PubArgs),
    /// Print the messages of one or more topics as they arrive
    ///
    /// Each message is a header line, `<id> <topic>`, then `event=<name>` when it has one, then
    /// `(json)`, `(binary, N bytes, base64)` or `(text, escaped)` when the data is not plain
    /// text; then the data, every line indented by two spaces. `--json` prints one JSON object
    /// per line instead. Gaps in history and undecodable messages are reported on stderr.
    Sub(client::SubArgs),
    /// Print the effective configuration (flags > HALLEY_* environment > file > defaults) of
    /// `serve` with these options, or the error; exit code 0 or 1
    CheckConfig(Box<ServeArgs>),
    /// Mint an HS256 token (JWT) from the configured auth secret and print it
    Token(Box<TokenArgs>),
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// Topic patterns the token may publish to, comma-separated (e.g. '/chat/**')
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    publish: Vec<String>,
    /// Topic patterns the token may subscribe to, comma-separated
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    subscribe: Vec<String>,
    /// How long the token is valid (30s, 15m, 1h, 7d)
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    ttl: halley::config::Seconds,
    /// The token's subject (the user), the `sub` claim
    #[arg(long = "sub", value_name = "USER")]
    subject: Option<String>,
    /// The server's options: the secret comes from --auth-secret, --auth-secret-file, their
    /// HALLEY_AUTH_* variables or the --config file, as for `serve`
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let matches = command_for(std::env::args_os().nth(1).as_deref()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Pub(args)) => client_exit("halley pub", client::publish::run(args)),
        Some(Command::Sub(args)) => client_exit("halley sub", client::subscribe::run(args)),
        Some(Command::CheckConfig(args)) => check_config(&args),
        Some(Command::Token(args)) => token(&args),
    }
}

/// `halley check-config`: the configuration `serve` would run with, or why it would not start.
fn check_config(args: &ServeArgs) -> ExitCode {
    match Config::load(args) {
        Ok(config) => {
            let text = config.to_toml();
            // A closed stdout (`| head`) is not an error of the configuration.
            let _ = io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("halley check-config: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `halley token`: the token on stdout, or the reason on stderr (exit 2).
fn token(args: &TokenArgs) -> ExitCode {
    match mint(args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("halley token: {e}");
            ExitCode::from(2)
        }
    }
}

fn mint(args: &TokenArgs) -> Result<String, String> {
    let config = Config::load(&args.serve).map_err(|e| e.to_string())?;
    let secret = config.auth.load_secret().map_err(|e| e.to_string())?.ok_or(
        "no secret configured: give --auth-secret, --auth-secret-file, HALLEY_AUTH_SECRET or [auth] secret in --config",
    )?;
    for pattern in args.publish.iter().chain(&args.subscribe) {
        halley::model::Selector::parse(pattern).map_err(|e| format!("{pattern:?} is not a topic or pattern: {e}"))?;
    }
    let ttl = args.ttl.0;
    if !(1.0..=halley::config::MAX_SECONDS).contains(&ttl) {
        return Err(format!("--ttl must be between 1 second and {} seconds", halley::config::MAX_SECONDS));
    }
    let exp = halley::auth::now_ms() / 1000 + ttl as u64;
    let claims = halley::auth::Claims {
        exp,
        sub: args.subject.clone(),
        publish: args.publish.clone(),
        subscribe: args.subscribe.clone(),
    };
    halley::auth::mint_hs256(&secret, &claims)
}

/// The command line to parse, given the first argument: the client subcommands (`pub`, `sub`)
/// never read `HALLEY_*`, which are meant for `serve`: a `HALLEY_WORKERS=abc` left in a shell
/// must not break `halley pub`. (A subcommand is always the first argument: top-level serve
/// flags conflict with subcommands.)
fn command_for(first: Option<&std::ffi::OsStr>) -> clap::Command {
    match first.and_then(|arg| arg.to_str()) {
        Some("pub" | "sub") => Cli::command(),
        _ => with_env(Cli::command()),
    }
}

/// Every option of `serve` can also come from the environment as `HALLEY_<OPTION>` (the long
/// flag in capitals, `-` as `_`: `HALLEY_MAX_CONNECTIONS=50000`). A flag on the command line
/// wins over the environment, and both over the `--config` file.
fn with_env(cmd: clap::Command) -> clap::Command {
    fn env_args(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|arg| {
            let name = arg.get_long().filter(|long| !matches!(*long, "help" | "version"));
            match name.map(|long| format!("HALLEY_{}", long.to_uppercase().replace('-', "_"))) {
                Some(var) => arg.env(var),
                None => arg,
            }
        })
    }
    env_args(cmd).mut_subcommand("serve", env_args).mut_subcommand("check-config", env_args)
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("halley: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = halley::config::logging::init(&config.log, config.log_format) {
        eprintln!("halley: {e}");
    }
    // SIGHUP reads the configuration again: the same command line, the environment and the
    // file as they are now.
    let reload = || -> Result<Config, String> {
        let matches = with_env(Cli::command()).try_get_matches().map_err(|e| e.to_string())?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let args = match cli.command {
            Some(Command::Serve(args)) => *args,
            _ => cli.serve,
        };
        Config::load(&args).map_err(|e| e.to_string())
    };
    match halley::server::run(config, &reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("server stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The exit code of a client command, its failure printed as one line on stderr.
fn client_exit(command: &str, result: Result<(), client::ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{command}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("halley").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default() {
        let cli = parse(&[]).expect("no args");
        assert!(cli.command.is_none());
        let cli = parse(&["--workers", "2"]).expect("top-level serve flags");
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.workers, Some(2));
        let cli = parse(&["serve", "--workers", "3"]).expect("explicit serve");
        match cli.command {
            Some(Command::Serve(args)) => assert_eq!(args.workers, Some(3)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["--workers", "2", "serve"]).is_err());
    }

    #[test]
    fn pub_and_sub_arguments() {
        let cli = parse(&["pub", "--event", "alert", "--token", "t0k", "news", "hello"]).expect("pub");
        match cli.command {
            Some(Command::Pub(args)) => {
                assert_eq!(args.topic, "news");
                assert_eq!(args.message.as_deref(), Some("hello"));
                assert_eq!(args.event.as_deref(), Some("alert"));
                assert_eq!(args.connection.server.as_str(), "http://127.0.0.1:8080");
                assert_eq!(args.connection.token.as_deref(), Some("t0k"));
            }
            other => panic!("{other:?}"),
        }
        let cli =
            parse(&["sub", "--server", "https://[::1]:9000", "--cacert", "ca.pem", "--since", "all", "--json", "a,b"])
                .expect("sub");
        match cli.command {
            Some(Command::Sub(args)) => {
                assert_eq!(args.connection.server.as_str(), "https://[::1]:9000");
                assert_eq!(args.connection.cacert.as_deref(), Some(std::path::Path::new("ca.pem")));
                assert_eq!(args.since.as_deref(), Some("all"));
                assert!(args.json);
                assert_eq!(args.topics, "a,b");
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["pub", "--server", "ftp://x", "t"]).expect_err("scheme");
        assert!(err.to_string().contains("only http:// and https://"), "{err}");
    }
}
