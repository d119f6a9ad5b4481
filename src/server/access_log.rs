//! The access log (`--access-log PATH|-`): one line per HTTP request, written by a thread of
//! its own so a worker never waits on the disk.
//!
//! A worker notes a request when it is dispatched ([`Pending`], kept on the connection) and
//! logs it when its reply is complete: a plain reply when it is queued, a parked long-poll when
//! it is answered, a stream or WebSocket when the connection closes; a request that never got
//! an answer (the client left) is logged at close with status 499, as nginx does. Messages on a
//! stream or socket are never lines of their own.
//!
//! Lines go through a bounded channel to the writer thread; when it is full (the disk is slower
//! than the requests) the line is dropped and counted (`halley_access_log_dropped_total`),
//! never waited for. The writer flushes whenever the channel is empty, so a quiet server's log
//! is up to date. Secret query values (`token=` and the like) are replaced before a line is
//! made. The format follows `--log-format`: text, or one JSON object per line.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};
use log::warn;

use crate::config::LogFormat;
use crate::http::Request;

/// Lines waiting for the writer, at most; more are dropped and counted.
const QUEUE_LINES: usize = 16 * 1024;

/// Query parameters whose values never reach the log (compared without case).
/// `p_id` is a Pushlet session id (a bearer credential, docs/AUTH.md); `message` is a Bayeux
/// JSONP batch, which carries its clientId and any `ext.auth.token`.
const SECRET_PARAMS: &[&str] =
    &["token", "access_token", "jwt", "auth", "password", "secret", "key", "api_key", "p_id", "message"];

/// What replaces a secret value.
const REDACTED: &str = "REDACTED";

/// Longest request-target logged, in bytes; longer ones are cut (and marked with `...`).
const MAX_TARGET: usize = 2048;

/// The process's access log: off, or the channel to its writer thread.
#[derive(Debug, Default)]
pub(crate) struct AccessLog {
    tx: Option<Sender<String>>,
    format: LogFormat,
    /// Lines dropped because the writer fell behind.
    pub dropped: Arc<AtomicU64>,
    /// Lines handed to the writer.
    pub lines: AtomicU64,
}

/// A request noted at dispatch, logged when its reply completes.
#[derive(Debug)]
pub(crate) struct Pending {
    start: Instant,
    peer: Option<SocketAddr>,
    method: Box<str>,
    /// The request-target with secret query values replaced.
    target: Box<str>,
    /// The reply's status once known (a stream's or upgrade's head); 0 before.
    pub status: u16,
    /// The connection's `written` count at dispatch, for replies logged at close.
    pub written_at_start: u64,
}

impl AccessLog {
    /// Opens the log `--access-log` names (`-` is stdout) and starts its writer; no path, no log.
    pub(crate) fn open(path: Option<&Path>, format: LogFormat) -> io::Result<AccessLog> {
        let Some(path) = path else { return Ok(AccessLog::default()) };
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(io::stdout())
        } else {
            let file =
                std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot open the access log {}: {e}", path.display()))
                })?;
            Box::new(file)
        };
        let (tx, rx) = crossbeam_channel::bounded::<String>(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        std::thread::Builder::new().name("halley-access-log".into()).spawn(move || {
            let mut out = BufWriter::with_capacity(64 * 1024, out);
            // Ends when every sender is gone (the server stopped), after writing what is queued.
            while let Ok(line) = rx.recv() {
                let mut result = out.write_all(line.as_bytes());
                while let (Ok(()), Ok(line)) = (&result, rx.try_recv()) {
                    result = out.write_all(line.as_bytes());
                }
                if let Err(e) = result.and_then(|()| out.flush()) {
                    warn!("access log: write failed: {e}");
                }
            }
        })?;
        Ok(AccessLog { tx: Some(tx), format, dropped, lines: AtomicU64::new(0) })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Notes a request being dispatched (None when the log is off).
    pub(crate) fn begin(&self, req: &Request, peer: Option<SocketAddr>, written: u64) -> Option<Box<Pending>> {
        self.enabled().then(|| {
            Box::new(Pending {
                start: Instant::now(),
                peer,
                method: req.method_str().into(),
                target: redact(req.target()).into(),
                status: 0,
                written_at_start: written,
            })
        })
    }

    /// Logs a completed request (`pending` None: one whose head could not be parsed).
    pub(crate) fn log(&self, pending: Option<&Pending>, peer: Option<SocketAddr>, status: u16, bytes: u64) {
        let Some(tx) = &self.tx else { return };
        let (method, target, took) = match pending {
            Some(p) => (&*p.method, &*p.target, p.start.elapsed()),
            None => ("-", "-", Duration::ZERO),
        };
        let peer = pending.and_then(|p| p.peer).or(peer);
        let line = format_line(self.format, SystemTime::now(), peer, method, target, status, bytes, took);
        match tx.try_send(line) {
            Ok(()) => {
                self.lines.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// One line, ending in `\n`. Text: `ts peer "METHOD target" status bytes duration`.
#[allow(clippy::too_many_arguments)]
fn format_line(
    format: LogFormat,
    now: SystemTime,
    peer: Option<SocketAddr>,
    method: &str,
    target: &str,
    status: u16,
    bytes: u64,
    took: Duration,
) -> String {
    let ts = rfc3339_millis(now);
    let peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
    let secs = took.as_secs_f64();
    match format {
        LogFormat::Json => {
            let line = serde_json::json!({
                "ts": ts,
                "peer": peer,
                "method": method,
                "path": target,
                "status": status,
                "bytes": bytes,
                "duration_ms": (secs * 1e6).round() / 1e3,
            });
            format!("{line}\n")
        }
        LogFormat::Text => {
            let mut line = String::with_capacity(64 + target.len());
            let _ = write!(line, "{ts} {peer} \"{} ", escape(method));
            line.push_str(&escape(target));
            let _ = writeln!(line, "\" {status} {bytes} {secs:.3}s");
            line
        }
    }
}

/// `"` and `\` escaped, and anything outside printable ASCII as `\xNN`, so a line stays one
/// line with one quoted field whatever the client sent.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out
}

/// The target with the value of every secret query parameter replaced, cut to `MAX_TARGET`.
pub(crate) fn redact(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut out = String::with_capacity(target.len().min(MAX_TARGET + 3));
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if is_secret(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(pair),
            }
        }
    }
    if out.len() > MAX_TARGET {
        let mut cut = MAX_TARGET;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// Whether a (raw, possibly percent-encoded) parameter name is a secret's.
fn is_secret(name: &str) -> bool {
    let decoded: String = form_urlencoded::parse(name.as_bytes()).map(|(k, _)| k.into_owned()).collect();
    SECRET_PARAMS.iter().any(|secret| decoded.eq_ignore_ascii_case(secret))
}

/// `2024-05-01T12:00:00.123Z`.
fn rfc3339_millis(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z", since.subsec_millis())
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_query_values_are_redacted() {
        assert_eq!(redact("/sub/a?token=abc.def&since=1-2"), "/sub/a?token=REDACTED&since=1-2");
        assert_eq!(
            redact("/x?a=1&Access_Token=s&t%6Fken=s2&tokens=keep"),
            "/x?a=1&Access_Token=REDACTED&t%6Fken=REDACTED&tokens=keep"
        );
        assert_eq!(redact("/plain"), "/plain");
        assert_eq!(redact("/q?token"), "/q?token", "no value, nothing to hide");
        // Session credentials: a Pushlet session id, a Bayeux JSONP batch (clientId, ext.auth).
        assert_eq!(redact("/pushlet?p_event=refresh&p_id=Ab3x"), "/pushlet?p_event=refresh&p_id=REDACTED");
        assert_eq!(redact("/cometd?jsonp=f&message=%5B%7B%7D%5D"), "/cometd?jsonp=f&message=REDACTED");
        let long = format!("/{}", "a".repeat(3000));
        assert_eq!(redact(&long).len(), MAX_TARGET + 3);
    }

    #[test]
    fn text_lines_are_one_line_with_one_quoted_field() {
        let at = UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
        let peer = Some("127.0.0.1:5000".parse().expect("addr"));
        let line = format_line(LogFormat::Text, at, peer, "GET", "/a\"b\n", 200, 12, Duration::from_millis(1500));
        assert_eq!(line, "2024-05-01T12:00:00.123Z 127.0.0.1:5000 \"GET /a\\\"b\\x0a\" 200 12 1.500s\n");
        let json = format_line(LogFormat::Json, at, None, "POST", "/pub/x", 201, 0, Duration::ZERO);
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["peer"], "-");
        assert_eq!(value["status"], 201);
        assert_eq!(value["path"], "/pub/x");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_844), (2024, 5, 1));
    }
}
