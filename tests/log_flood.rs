//! Repeated log lines are rate-limited: a client that keeps a server at `--max-connections`
//! (closing one connection and opening another, over and over) makes it pause accepting each
//! time, and the log gets at most a line or two a second for it, with the rest counted in a
//! summary instead of a line each. The log is captured with a test logger.
//!
//! One test in this binary: the limits are per kind of line, process-wide, so another server in
//! the same process would share them.

mod util;

use std::sync::Mutex;
use std::time::Instant;

use log::{LevelFilter, Log, Metadata, Record};
use util::{TestServer, WAIT};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        LINES.lock().unwrap_or_else(|p| p.into_inner()).push(record.args().to_string());
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

fn pause_lines() -> Vec<String> {
    LINES.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|l| l.contains("pausing accept")).cloned().collect()
}

/// How many pauses the lines account for: one per line let through plus the counts that lines
/// and summaries report for the ones held back.
fn accounted(lines: &[String]) -> u64 {
    lines
        .iter()
        .map(|line| {
            let count = |after: &str, before: &str| -> u64 {
                let start = line.find(after).map(|i| i + after.len());
                let tail = start.map(|i| &line[i..]).unwrap_or("");
                tail.split(before).next().and_then(|n| n.trim().parse().ok()).unwrap_or(0)
            };
            if line.starts_with("pausing accept: ") {
                count("pausing accept: ", " more in the last")
            } else {
                1 + count("(", " more like it")
            }
        })
        .sum()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn churn_at_the_connection_limit_logs_a_bounded_number_of_lines_and_counts_the_rest() {
    log::set_logger(&CAPTURE).expect("the only logger");
    log::set_max_level(LevelFilter::Warn);
    const LIMIT: usize = 4;
    const CHURN: u64 = 60;
    let server = TestServer::with(|c| {
        c.network.max_connections = LIMIT;
        c.workers = 1;
    });
    let pauses = || server.worker_total("accept_pauses");
    let started = Instant::now();
    let mut held: Vec<util::Client> = (0..LIMIT).map(|_| server.client()).collect();
    for c in &mut held {
        assert_eq!(c.get("/health").status, 200);
    }
    wait_until("the first pause", || pauses() == 1);
    for round in 1..CHURN {
        // One slot frees (the server sees the close), then a new client takes it: accepting
        // resumes and pauses again at the limit.
        drop(held.remove(0));
        server.wait_for("connections", LIMIT as u64 - 1);
        let mut c = server.client();
        assert_eq!(c.get("/health").status, 200);
        held.push(c);
        wait_until("the next pause", || pauses() == round + 1);
    }
    let elapsed = started.elapsed().as_secs() + 1;

    let lines = pause_lines();
    // One line a second, plus one summary a second for those held back.
    assert!(lines.len() as u64 <= 2 * elapsed, "{} lines in {elapsed} s for {CHURN} pauses: {lines:#?}", lines.len());
    // Nothing is lost from the count: once the last period is over, a summary reports the rest.
    wait_until("the summary", || accounted(&pause_lines()) == CHURN);
    let lines = pause_lines();
    assert!(lines.iter().any(|l| l.starts_with("pausing accept: ")), "a summary line: {lines:#?}");
}
