//! The `halley` command line: `serve` (the default), `check-config`, and the tiny `pub` / `sub`
//! clients of the native API.
//!
//! Exit codes: 0 success, 1 a request failed, 2 bad usage or configuration (clap's usage
//! errors use 2 as well). Ctrl-C keeps its default action and ends the process at once.
//!
//! Options come from the command line, then `HALLEY_<OPTION>` environment variables, then the
//! `--config` file, in that order of precedence.

mod client;

use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use halley::config::{Config, ServeArgs};

use crate::client::{ClientResponse, ServerAddr};

/// Largest message `halley pub` reads from stdin, in bytes (the server's default
/// `--max-body` is 1 MiB; this leaves room for servers configured higher).
const MAX_STDIN_MESSAGE: u64 = 64 * 1024 * 1024;

/// Deadline for one publish request.
const PUB_TIMEOUT: Duration = Duration::from_secs(10);

/// Long-poll hold `halley sub` asks for, in seconds (`?timeout=`).
const SUB_HOLD_SECS: u64 = 30;

/// Deadline for one long-poll: the hold plus room for the server's ±10% jitter and a slow link.
const SUB_TIMEOUT: Duration = Duration::from_secs(SUB_HOLD_SECS * 2);

/// First and largest pause before `halley sub` retries after a failure; doubles in between.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

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
    Pub(PubArgs),
    /// Print the messages of one or more topics as they arrive
    Sub(SubArgs),
    /// Print the effective configuration (flags > HALLEY_* environment > file > defaults) of
    /// `serve` with these options, or the error; exit code 0 or 1
    CheckConfig(Box<ServeArgs>),
}

#[derive(Args, Debug)]
struct PubArgs {
    /// Server URL (http:// only, no TLS)
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: ServerAddr,
    /// Event name attached to the message
    #[arg(long, value_name = "NAME")]
    event: Option<String>,
    /// Content-Type of the message [default: text/plain; charset=utf-8 for UTF-8 text,
    /// application/octet-stream otherwise]
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// Topic, with or without the leading '/'
    topic: String,
    /// The message; read from stdin when "-" or absent (one trailing newline is dropped)
    message: Option<String>,
}

#[derive(Args, Debug)]
struct SubArgs {
    /// Server URL (http:// only, no TLS)
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: ServerAddr,
    /// Start after this message id, or "all" for the whole history [default: new messages only]
    #[arg(long, value_name = "ID|all")]
    since: Option<String>,
    /// Print each whole message object as one JSON line instead of its data
    #[arg(long)]
    json: bool,
    /// Comma-separated topics, each with or without the leading '/'
    topics: String,
}

fn main() -> ExitCode {
    let matches = with_env(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Pub(args)) => publish(args),
        Some(Command::Sub(args)) => subscribe(args),
        Some(Command::CheckConfig(args)) => check_config(&args),
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

fn publish(args: PubArgs) -> ExitCode {
    match try_publish(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("halley pub: {e}");
            ExitCode::FAILURE
        }
    }
}

fn try_publish(args: PubArgs) -> Result<ExitCode, String> {
    let mut path = client::pub_path(&args.topic).map_err(|e| e.to_string())?;
    if let Some(event) = &args.event {
        path = format!("{path}?event={}", client::encode_query(event));
    }
    let body = match args.message.as_deref() {
        Some(message) if message != "-" => message.as_bytes().to_vec(),
        _ => read_stdin_message().map_err(|e| format!("reading stdin: {e}"))?,
    };
    let content_type = args.content_type.unwrap_or_else(|| {
        if std::str::from_utf8(&body).is_ok() {
            "text/plain; charset=utf-8".to_owned()
        } else {
            "application/octet-stream".to_owned()
        }
    });
    let headers = [("Content-Type", content_type.as_str())];
    let response =
        client::request(&args.server, "POST", &path, &headers, &body, PUB_TIMEOUT).map_err(|e| e.to_string())?;
    if !is_success(&response) {
        return Err(client::failure_reason(&response));
    }
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(&response.body)
        .and_then(|()| match response.body.last() {
            Some(b'\n') => Ok(()),
            _ => stdout.write_all(b"\n"),
        })
        .and_then(|()| stdout.flush());
    match written {
        // A closed stdout (e.g. `| head`) after a successful publish is not a failure.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(format!("writing stdout: {e}")),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Reads the message from stdin, bounded by [`MAX_STDIN_MESSAGE`]; drops one trailing newline
/// (as added by `echo`) so a published line reads back as the same line.
fn read_stdin_message() -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    io::stdin().lock().take(MAX_STDIN_MESSAGE + 1).read_to_end(&mut body)?;
    if body.len() as u64 > MAX_STDIN_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message larger than {MAX_STDIN_MESSAGE} bytes"),
        ));
    }
    if body.last() == Some(&b'\n') {
        body.pop();
        if body.last() == Some(&b'\r') {
            body.pop();
        }
    }
    Ok(body)
}

fn subscribe(args: SubArgs) -> ExitCode {
    let path = match client::sub_path(&args.topics) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("halley sub: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cursor = args.since;
    let mut retry = RETRY_FIRST;
    let mut out = BufWriter::new(io::stdout().lock());
    loop {
        let query = match &cursor {
            Some(since) => format!("{path}?since={}&timeout={SUB_HOLD_SECS}", client::encode_query(since)),
            None => format!("{path}?timeout={SUB_HOLD_SECS}"),
        };
        let failure = match client::request(&args.server, "GET", &query, &[], b"", SUB_TIMEOUT) {
            Ok(response) if is_success(&response) => {
                match client::parse_sub_reply(&response.body) {
                    Ok(reply) => {
                        if reply.gap {
                            let oldest = reply.oldest.as_deref().unwrap_or("unknown");
                            eprintln!(
                                "halley sub: warning: messages were lost (history gap); oldest available is {oldest}"
                            );
                        }
                        for skipped in &reply.skipped {
                            let id = skipped.id.as_deref().unwrap_or("without a readable id");
                            eprintln!("halley sub: skipped message {id}: cannot decode it: {}", skipped.reason);
                        }
                        if print_messages(&mut out, &reply.messages, args.json).is_err() {
                            // stdout closed: nobody is reading any more.
                            return ExitCode::SUCCESS;
                        }
                        cursor = Some(reply.next);
                        retry = RETRY_FIRST;
                        continue;
                    }
                    Err(e) => e.to_string(),
                }
            }
            Ok(response) if retryable_status(&response) => client::failure_reason(&response),
            Ok(response) => {
                eprintln!("halley sub: {}", client::failure_reason(&response));
                return ExitCode::FAILURE;
            }
            Err(e) if e.is_transient() => e.to_string(),
            Err(e) => {
                eprintln!("halley sub: {e}");
                return ExitCode::FAILURE;
            }
        };
        let resume = cursor.as_deref().map_or(String::new(), |c| format!(" after {c}"));
        eprintln!("halley sub: {failure}; retrying in {} s{resume}", retry.as_secs());
        thread::sleep(retry);
        retry = (retry * 2).min(RETRY_MAX);
    }
}

fn print_messages(out: &mut impl Write, messages: &[serde_json::Value], json: bool) -> io::Result<()> {
    for message in messages {
        writeln!(out, "{}", client::format_message(message, json))?;
    }
    out.flush()
}

fn is_success(response: &ClientResponse) -> bool {
    (200..300).contains(&response.status)
}

/// Server-side trouble worth waiting out (overload, restart behind a proxy) rather than a
/// request the server will never accept.
fn retryable_status(response: &ClientResponse) -> bool {
    response.status == 429 || response.status == 408 || response.status >= 500
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
        let cli = parse(&["pub", "--event", "alert", "news", "hello"]).expect("pub");
        match cli.command {
            Some(Command::Pub(args)) => {
                assert_eq!(args.topic, "news");
                assert_eq!(args.message.as_deref(), Some("hello"));
                assert_eq!(args.event.as_deref(), Some("alert"));
                assert_eq!(args.server.port, 8080);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["sub", "--server", "http://[::1]:9000", "--since", "all", "--json", "a,b"]).expect("sub");
        match cli.command {
            Some(Command::Sub(args)) => {
                assert_eq!(args.server.host, "::1");
                assert_eq!(args.since.as_deref(), Some("all"));
                assert!(args.json);
                assert_eq!(args.topics, "a,b");
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["pub", "--server", "https://x", "t"]).expect_err("tls");
        assert!(err.to_string().contains("no TLS"), "{err}");
    }

    #[test]
    fn messages_print_one_per_line() {
        let messages =
            vec![serde_json::json!({"id":"1-1","data":"one"}), serde_json::json!({"id":"1-2","data":{"n":2}})];
        let mut out = Vec::new();
        print_messages(&mut out, &messages, false).expect("write");
        assert_eq!(out, b"one\n{\"n\":2}\n");
    }
}
