//! The process's logger: env_logger's filter and output behind a lock, so that SIGHUP can
//! change the filter of a running server (`set_filter`), in text or JSON lines (`--log-format`).
//!
//! The filter is `--log` (flag, `HALLEY_LOG`, the file), else `RUST_LOG`, else `info`; it is
//! resolved with the rest of the configuration (`Config::load`). Logging is never on a hot
//! path (repeated lines go through `LogLimit`), so a read lock per line costs nothing that shows.

use std::io::Write;
use std::sync::{OnceLock, PoisonError, RwLock};

use super::LogFormat;

/// The installed logger, once `init` ran (never in the library's own tests).
static LOGGER: OnceLock<Reloadable> = OnceLock::new();

/// Installs the logger for the process. Fails if a logger is installed already.
pub fn init(filter: &str, format: LogFormat) -> Result<(), log::SetLoggerError> {
    let logger = LOGGER.get_or_init(|| Reloadable { inner: RwLock::new(build(filter, format)), format });
    log::set_logger(logger)?;
    log::set_max_level(logger.read().filter());
    Ok(())
}

/// Replaces the filter of the installed logger; false when there is none (a server started
/// in-process by tests), in which case nothing changes.
pub fn set_filter(filter: &str) -> bool {
    let Some(logger) = LOGGER.get() else { return false };
    let new = build(filter, logger.format);
    log::set_max_level(new.filter());
    *logger.inner.write().unwrap_or_else(PoisonError::into_inner) = new;
    true
}

/// Whether `filter` is one env_logger accepts without complaint: every directive is a level,
/// or `target` / `target=level`, with no `/regex` part (which needs an optional feature).
pub fn check_filter(filter: &str) -> Result<(), String> {
    let is_target = |name: &str| !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || "_:-".contains(c));
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let ok = match directive.split_once('=') {
            Some((target, level)) => is_target(target) && level.parse::<log::LevelFilter>().is_ok(),
            None => directive.parse::<log::LevelFilter>().is_ok() || is_target(directive),
        };
        if !ok {
            return Err(format!("{directive:?} is not a level (error, warn, info, debug, trace, off) or target=level"));
        }
    }
    Ok(())
}

/// env_logger's logger behind a lock.
#[derive(Debug)]
struct Reloadable {
    inner: RwLock<env_logger::Logger>,
    format: LogFormat,
}

impl Reloadable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, env_logger::Logger> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl log::Log for Reloadable {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.read().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        self.read().log(record);
    }

    fn flush(&self) {
        self.read().flush();
    }
}

fn build(filter: &str, format: LogFormat) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(filter);
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        for ok in ["info", "warn,halley=debug", "halley::server=trace", "off", "halley", ""] {
            assert!(check_filter(ok).is_ok(), "{ok}");
        }
        // A bare word is a target ("loud" logs everything under the module `loud`).
        for bad in ["halley=loud", "info/foo", "a b", "=info"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }
}
