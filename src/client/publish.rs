//! `halley pub`: publishes one message (an argument or stdin) with `POST /pub/<topic>` and prints
//! the server's reply (the message id and cursor) on stdout.

use std::io::{self, Read, Write};
use std::time::Duration;

use super::{encode_query, pub_path, ClientError, Connection, ServerArgs};

/// Largest message read from stdin, in bytes (the server's default `--max-body` is 1 MiB; this
/// leaves room for servers configured higher).
const MAX_STDIN_MESSAGE: u64 = 64 * 1024 * 1024;

/// Deadline for the whole publish request, connect and TLS handshake included.
const PUB_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest reply read (the server answers with a small JSON object or a one-line refusal).
const MAX_REPLY: u64 = 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct PubArgs {
    #[command(flatten)]
    pub connection: ServerArgs,
    /// Event name attached to the message
    #[arg(long, value_name = "NAME")]
    pub event: Option<String>,
    /// Content-Type of the message [default: text/plain; charset=utf-8 for UTF-8 text,
    /// application/octet-stream otherwise]
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Topic, with or without the leading '/'
    pub topic: String,
    /// The message; read from stdin when "-" or absent (one trailing newline is dropped)
    pub message: Option<String>,
}

/// Runs `halley pub`; the error is one line for stderr, with its exit code.
pub fn run(args: PubArgs) -> Result<(), ClientError> {
    let mut path = pub_path(&args.topic)?;
    if let Some(event) = &args.event {
        path = format!("{path}?event={}", encode_query(event));
    }
    let connection = Connection::new(&args.connection, PUB_TIMEOUT, MAX_REPLY)?;
    let body = match args.message.as_deref() {
        Some(message) if message != "-" => message.as_bytes().to_vec(),
        _ => read_stdin_message().map_err(|e| ClientError::Usage(format!("reading stdin: {e}")))?,
    };
    let content_type = args.content_type.unwrap_or_else(|| {
        if std::str::from_utf8(&body).is_ok() {
            "text/plain; charset=utf-8".to_owned()
        } else {
            "application/octet-stream".to_owned()
        }
    });
    let reply = connection.post(&path, &content_type, &body)?;
    if !reply.is_success() {
        return Err(ClientError::Fatal(reply.failure_reason()));
    }
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(&reply.body)
        .and_then(|()| match reply.body.last() {
            Some(b'\n') => Ok(()),
            _ => stdout.write_all(b"\n"),
        })
        .and_then(|()| stdout.flush());
    match written {
        // A closed stdout (e.g. `| head`) after a successful publish is not a failure.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(ClientError::Fatal(format!("writing stdout: {e}"))),
        _ => Ok(()),
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
