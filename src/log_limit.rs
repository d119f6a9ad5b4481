//! Rate-limited log lines: [`LogLimit`], one per kind of line that a client can make the server
//! repeat (a refused connect, an unanswered request, a lost report), so that no peer can turn
//! the log into a flood. It owns the counting and the summaries; what is logged stays with the
//! caller.
//!
//! A `LogLimit` is a `static` at its call site, shared by every thread that logs that line. It
//! lets one line through per [`LOG_PERIOD`] and counts the rest; the next line that gets through
//! says how many were held back (`... (37 more like it in the last 1.0 s)`), and when no line
//! comes to carry the count, [`flush`] (called from each worker's housekeeping) logs it as a
//! summary of its own (`pausing accept: 37 more in the last 1.0 s`). So a flood costs at most
//! two lines per kind per period, and nothing is lost from the count.
//!
//! Lock-free on the logging path (a few relaxed atomics: the counts are for people, and a line
//! that races another into the same period is counted, not lost); a mutex is taken only the first
//! time a limit holds a line back, to list it for [`flush`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use log::Level;

/// Lines of one kind let through per period; the rest are counted and summarised.
pub const LOG_PERIOD: Duration = Duration::from_secs(1);

/// The limits that have held a line back at least once, for [`flush`]. Bounded by the number
/// of `LogLimit` statics in the program.
static HELD: Mutex<Vec<&'static LogLimit>> = Mutex::new(Vec::new());

/// One kind of log line and its rate limit.
#[derive(Debug)]
pub struct LogLimit {
    level: Level,
    /// The `log` target (the caller's module path), so filters by module keep working.
    target: &'static str,
    /// The line's kind, without its variable parts, for a summary logged on its own.
    what: &'static str,
    period_ms: u64,
    /// Clock time (ms, see `now_ms`) before which another line is held back.
    next_ms: AtomicU64,
    /// When the count in `held` began: the last line or summary logged.
    since_ms: AtomicU64,
    /// Lines held back since then.
    held: AtomicU64,
    listed: AtomicBool,
}

/// What a line let through carries: how many were held back before it, over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub lines: u64,
    pub over_ms: u64,
}

impl LogLimit {
    /// A limit for lines of kind `what` at `level`, logged under `target` (pass
    /// `module_path!()`), one per [`LOG_PERIOD`].
    pub const fn new(level: Level, target: &'static str, what: &'static str) -> LogLimit {
        LogLimit {
            level,
            target,
            what,
            period_ms: LOG_PERIOD.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            since_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
            listed: AtomicBool::new(false),
        }
    }

    /// Logs `line` unless a line of this kind was logged less than a period ago, in which case
    /// it is only counted.
    pub fn log(&'static self, line: fmt::Arguments<'_>) {
        match self.admit_at(now_ms()) {
            Some(held) if held.lines > 0 => log::log!(target: self.target, self.level, "{line} ({held})"),
            Some(_) => log::log!(target: self.target, self.level, "{line}"),
            None => self.list(),
        }
    }

    /// Whether a line at `now` (ms) goes out: `Some` with what was held back before it, or
    /// `None` when it is held back (and counted) itself.
    pub fn admit_at(&self, now: u64) -> Option<Held> {
        let next = self.next_ms.load(Relaxed);
        if now < next || self.next_ms.compare_exchange(next, now + self.period_ms, Relaxed, Relaxed).is_err() {
            self.held.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.take_held(now))
    }

    /// The summary due at `now` (ms): what was held back, once the period of the last line is
    /// over and no later line has carried the count. Starts a new period when it returns one.
    pub fn summary_at(&self, now: u64) -> Option<Held> {
        let next = self.next_ms.load(Relaxed);
        if self.held.load(Relaxed) == 0 || now < next {
            return None;
        }
        self.next_ms.compare_exchange(next, now + self.period_ms, Relaxed, Relaxed).ok()?;
        Some(self.take_held(now)).filter(|held| held.lines > 0)
    }

    fn take_held(&self, now: u64) -> Held {
        let since = self.since_ms.swap(now, Relaxed);
        Held { lines: self.held.swap(0, Relaxed), over_ms: now.saturating_sub(since) }
    }

    /// Lists this limit for [`flush`] the first time it holds a line back.
    fn list(&'static self) {
        if !self.listed.swap(true, Relaxed) {
            HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(self);
        }
    }
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.over_ms as f64 / 1000.0;
        write!(f, "{} more like it in the last {secs:.1} s", self.lines)
    }
}

/// Logs the summary of every limit whose held-back lines no later line has reported. Cheap when
/// there is nothing to say; called from each worker's housekeeping.
pub fn flush() {
    let now = now_ms();
    let held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for limit in held.iter() {
        if let Some(summary) = limit.summary_at(now) {
            let secs = summary.over_ms as f64 / 1000.0;
            log::log!(target: limit.target, limit.level, "{}: {} more in the last {secs:.1} s", limit.what, summary.lines);
        }
    }
}

/// Milliseconds on a process-wide monotonic clock, from 1 (0 means "never" in `next_ms`).
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> LogLimit {
        LogLimit::new(Level::Warn, "t", "a line")
    }

    #[test]
    fn one_line_per_period_and_the_next_carries_the_count() {
        let limit = limit();
        assert_eq!(limit.admit_at(1), Some(Held { lines: 0, over_ms: 1 }));
        for t in 2..500 {
            assert_eq!(limit.admit_at(t), None, "held back at {t}");
        }
        assert_eq!(limit.admit_at(1000), None, "the period is a whole second");
        assert_eq!(limit.admit_at(1001), Some(Held { lines: 499, over_ms: 1000 }));
        assert_eq!(limit.admit_at(2001), Some(Held { lines: 0, over_ms: 1000 }));
    }

    #[test]
    fn a_summary_reports_what_no_later_line_did_once_per_period() {
        let limit = limit();
        assert_eq!(limit.summary_at(5), None, "nothing held");
        limit.admit_at(1);
        limit.admit_at(2);
        limit.admit_at(3);
        assert_eq!(limit.summary_at(500), None, "not before the period is over");
        assert_eq!(limit.summary_at(1001), Some(Held { lines: 2, over_ms: 1000 }));
        assert_eq!(limit.summary_at(3000), None, "said once");
        // The summary started a period: a line right after it is held back and summarised later.
        assert_eq!(limit.admit_at(1500), None);
        assert_eq!(limit.summary_at(2001), Some(Held { lines: 1, over_ms: 1000 }));
        assert_eq!(limit.admit_at(2001), None, "a summary counts as the period's line");
    }

    #[test]
    fn many_threads_log_at_most_one_line_per_period_and_count_the_rest() {
        static SHARED: LogLimit = LogLimit::new(Level::Warn, "t", "shared");
        let admitted: u64 = std::thread::scope(|s| {
            let threads: Vec<_> =
                (0..4).map(|_| s.spawn(|| (0..1000).filter(|_| SHARED.admit_at(7).is_some()).count() as u64)).collect();
            threads.into_iter().map(|t| t.join().expect("thread")).sum()
        });
        assert_eq!(admitted, 1);
        assert_eq!(SHARED.summary_at(1007), Some(Held { lines: 3999, over_ms: 1000 }));
    }

    #[test]
    fn held_reads_as_a_count_and_a_window() {
        assert_eq!(Held { lines: 37, over_ms: 1250 }.to_string(), "37 more like it in the last 1.2 s");
    }
}
