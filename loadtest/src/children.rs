//! The parent's side of its processes: the one event channel everything reports on (child
//! lines, child exits, publisher events), what the parent knows so far ([`Live`], with the
//! progress bar), and starting, commanding and stopping the `worker` and `floor-server`
//! children.

use std::collections::HashMap;
use std::io::{BufReader, IsTerminal, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command as Proc, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::child::read_line;
use crate::cli::RunArgs;
use crate::ipc::{ChildMsg, ChildResult, Command, Counters, Plan, Progress};
use crate::publish::{PubEvent, RateOutcome};
use crate::stamp::{Checks, Orders};
use crate::stats::{Latency, LatencySeries, Timeline, TICK_MS};

/// How long to wait for the floor server to report its address, and for children to report
/// their results after `stop`.
pub const CHILD_REPLY_DEADLINE: Duration = Duration::from_secs(15);

/// What arrives on the parent's one event channel.
#[derive(Debug)]
pub enum Event {
    Child { child: usize, msg: ChildMsg },
    ChildGone,
    Pub(PubEvent),
}

/// What the parent knows so far.
#[derive(Debug)]
pub struct Live {
    pub procs: usize,
    pub progress: Vec<Vec<Progress>>,
    pub results: Vec<Option<ChildResult>>,
    pub gone: usize,
    /// Per message: subscribers reached and the latest receive time.
    pub got: HashMap<u64, (u64, u64)>,
    /// `(seq, send time)` of one-at-a-time publishes, in order.
    pub sent: Vec<(u64, u64)>,
    pub acked: HashMap<u64, bool>,
    pub acked_ok: u64,
    pub warmup_done: Option<(u64, u64)>,
    pub rate_done: Option<RateOutcome>,
    pub logs: Vec<String>,
    bar: Option<ProgressBar>,
    phase: &'static str,
}

impl Live {
    pub fn new(procs: usize, threads: usize, bar: Option<ProgressBar>) -> Self {
        Live {
            procs,
            progress: vec![vec![Progress::default(); threads.max(1)]; procs],
            results: (0..procs).map(|_| None).collect(),
            gone: 0,
            got: HashMap::new(),
            sent: Vec::new(),
            acked: HashMap::new(),
            acked_ok: 0,
            warmup_done: None,
            rate_done: None,
            logs: Vec::new(),
            bar,
            phase: "starting",
        }
    }

    pub fn phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.redraw();
    }

    pub fn sum(&self) -> Progress {
        let mut total = Progress::default();
        for p in self.progress.iter().flatten() {
            total.add(p);
        }
        total
    }

    /// Apply events until `done` holds (true) or `deadline` passes (false).
    pub fn wait(&mut self, rx: &mpsc::Receiver<Event>, deadline: Instant, done: impl Fn(&Live) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match rx.recv_timeout(left.min(Duration::from_millis(TICK_MS))) {
                Ok(ev) => {
                    self.apply(ev);
                    while let Ok(ev) = rx.try_recv() {
                        self.apply(ev);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return done(self),
            }
            self.redraw();
        }
    }

    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Child { child, msg } => match msg {
                ChildMsg::Progress { thread, progress } => {
                    if let Some(slot) = self.progress.get_mut(child).and_then(|p| p.get_mut(thread as usize)) {
                        *slot = progress;
                    }
                }
                ChildMsg::Got { items } => {
                    for (seq, count, last) in items {
                        let e = self.got.entry(seq).or_insert((0, 0));
                        e.0 += count;
                        e.1 = e.1.max(last);
                    }
                }
                ChildMsg::Result(r) => {
                    if let Some(slot) = self.results.get_mut(child) {
                        *slot = Some(*r);
                    }
                }
                ChildMsg::Log { text } => self.logs.push(format!("child {child}: {text}")),
                ChildMsg::Listening { .. } => {}
            },
            Event::ChildGone => self.gone += 1,
            Event::Pub(p) => match p {
                PubEvent::Sent { seq, sent_ns } => self.sent.push((seq, sent_ns)),
                PubEvent::Acked { seq, ok, .. } => {
                    self.acked.insert(seq, ok);
                    if ok {
                        self.acked_ok += 1;
                    }
                }
                PubEvent::WarmupDone { published, failed } => self.warmup_done = Some((published, failed)),
                PubEvent::RateDone(o) => self.rate_done = Some(o),
                PubEvent::Error(e) => self.logs.push(format!("publisher: {e}")),
            },
        }
    }

    fn redraw(&self) {
        if let Some(bar) = &self.bar {
            let s = self.sum();
            bar.set_message(format!(
                "{:<12} open {} parked {} warm {} received {} failed {}",
                self.phase, s.open, s.parked, s.warm, s.received, s.failed
            ));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Children's results added up.
    pub fn merged(&self) -> Merged {
        let mut checks = Checks::default();
        let mut counters = Counters::default();
        let mut latency = Latency::new();
        let mut series = LatencySeries::default();
        let mut timeline = Timeline::default();
        let mut failed = 0;
        let mut orders = Orders::default();
        for r in self.results.iter().flatten() {
            orders.merge(&r.orders);
            checks.merge(&r.checks);
            counters.merge(&r.counters);
            latency.merge(&r.latency);
            series.merge(&r.latency_series);
            timeline.merge(&r.timeline);
            failed += r.progress.failed;
        }
        Merged { checks, counters, latency, series, timeline, failed, orders }
    }
}

/// The children's results added up.
#[derive(Debug)]
pub struct Merged {
    pub checks: Checks,
    pub counters: Counters,
    pub latency: Latency,
    pub series: LatencySeries,
    pub timeline: Timeline,
    /// Subscribers given up.
    pub failed: u64,
    pub orders: Orders,
}

#[derive(Debug)]
pub struct WorkerProc {
    pub process: Child,
    /// Dropped (EOF to the child) when the child is stopped.
    pub stdin: Option<ChildStdin>,
}

/// Re-execute this binary as `worker` with `plan` on its stdin; its stdout lines become events.
pub fn spawn_worker(plan: &Plan, tx: mpsc::Sender<Event>) -> Result<WorkerProc, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut process = Proc::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start worker: {e}"))?;
    let (Some(mut stdin), Some(stdout)) = (process.stdin.take(), process.stdout.take()) else {
        let _ = process.kill();
        return Err("worker started without pipes".into());
    };
    let mut line = serde_json::to_vec(plan).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stdin.write_all(&line).and_then(|_| stdin.flush()).map_err(|e| format!("cannot send plan: {e}"))?;
    let child = plan.child as usize;
    std::thread::Builder::new()
        .name(format!("child-{child}"))
        .spawn(move || {
            let mut r = BufReader::new(stdout);
            while let Ok(Some(line)) = read_line(&mut r) {
                if let Ok(msg) = serde_json::from_str::<ChildMsg>(&line) {
                    if tx.send(Event::Child { child, msg }).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(Event::ChildGone);
        })
        .map_err(|e| format!("cannot start reader thread: {e}"))?;
    Ok(WorkerProc { process, stdin: Some(stdin) })
}

pub fn send_command(c: &mut WorkerProc, cmd: Command) {
    if let Ok(mut line) = serde_json::to_vec(&cmd) {
        line.push(b'\n');
        if let Some(stdin) = &mut c.stdin {
            let _ = stdin.write_all(&line).and_then(|_| stdin.flush());
        }
    }
}

/// Start the floor server child and learn its address.
pub fn start_floor(threads: usize) -> Result<(Child, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut child = Proc::new(exe)
        .args(["floor-server", "--listen", "127.0.0.1:0", "--threads", &threads.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start floor server: {e}"))?;
    let Some(stdout) = child.stdout.take() else {
        stop_child(&mut child, None);
        return Err("floor server started without stdout".into());
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        while let Ok(Some(line)) = read_line(&mut r) {
            if let Ok(ChildMsg::Listening { addr }) = serde_json::from_str(&line) {
                let _ = tx.send(addr);
                return;
            }
        }
    });
    match rx.recv_timeout(CHILD_REPLY_DEADLINE) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            stop_child(&mut child, None);
            Err("floor server did not report its address".into())
        }
    }
}

/// End a child we started: close its stdin (it exits on EOF), then kill it by PID if it lingers.
pub fn stop_child(child: &mut Child, stdin: Option<ChildStdin>) {
    drop(stdin);
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn progress_bar(args: &RunArgs) -> Option<ProgressBar> {
    if args.no_progress || args.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(TICK_MS));
    Some(bar)
}
