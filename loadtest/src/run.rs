//! The parent: plans a run, starts the floor server (floor scenario) and the `worker` children,
//! publishes, follows the children's progress through every phase (each with a deadline),
//! reads the server's cost from /proc between phases, and merges the children's results into
//! one [`Report`].

use std::collections::HashMap;
use std::io::{BufReader, IsTerminal, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command as Proc, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::child::read_line;
use crate::cli::{RunArgs, Scenario};
use crate::cost::{self, Readings, Snapshot, Watched, Work};
use crate::feed::Endpoint;
use crate::ipc::{ChildMsg, ChildResult, Command, Counters, Plan, Progress, Topics};
use crate::net::{loopback_target, raise_nofile, RESERVED_FDS};
use crate::procfs;
use crate::publish::{self, PubCmd, PubEvent, RateOutcome};
use crate::report::{Fanout, OrderCheck, RateReport, Report};
use crate::stamp::{unix_ns, Checks, Orders};
use crate::stats::{Latency, Timeline, TICK_MS};

/// Most subscriber sockets one child holds: under the 20,000 open-file cap of these machines
/// with room for the process's own descriptors.
pub const MAX_SUBS_PER_PROCESS: u64 = 19_000;
/// Most child processes a run starts.
pub const MAX_PROCESSES: u32 = 64;
/// How long to wait for the floor server to report its address, and for children to report
/// their results after `stop`.
const CHILD_REPLY_DEADLINE: Duration = Duration::from_secs(15);
/// Longest the server's CPU is watched for settling after connections are made.
const SETTLE_DEADLINE: Duration = Duration::from_secs(3);
/// The server has settled when it used less than this much CPU in one [`SETTLE_STEP`].
const SETTLE_CPU_NS: u64 = 2_000_000;
const SETTLE_STEP: Duration = Duration::from_millis(200);

/// Run the scenario `args` describe and return what was measured.
pub fn run(args: &RunArgs) -> Result<Report, String> {
    args.validate()?;
    let started = Instant::now();
    let scenario = args.effective();
    let mut floor = None;
    let (targets, watched) = if args.scenario == Scenario::Floor {
        let (child, addr) = start_floor(args.floor_threads)?;
        let pid = child.id();
        floor = Some(child);
        (vec![addr], Some(Watched { nodes: vec![pid], redis: None }))
    } else {
        let targets = args.addrs().iter().map(|a| loopback_target(a)).collect::<Result<Vec<_>, _>>()?;
        let pids = if args.server_pid.is_empty() {
            targets.iter().map(|&t| procfs::find_listener(t)).collect::<Option<Vec<_>>>()
        } else {
            Some(args.server_pid.clone())
        };
        (targets, pids.map(|nodes| Watched { nodes, redis: args.redis_pid }))
    };
    let result = drive(args, scenario, &targets, watched.as_ref(), started);
    if let Some(mut f) = floor {
        stop_child(&mut f, None);
    }
    result
}

/// Everything between "server known" and "report built".
fn drive(
    args: &RunArgs,
    scenario: Scenario,
    targets: &[SocketAddr],
    watched: Option<&Watched>,
    started: Instant,
) -> Result<Report, String> {
    for t in targets {
        std::net::TcpStream::connect_timeout(t, Duration::from_secs(2))
            .map_err(|e| format!("nothing accepts connections at {t}: {e}"))?;
    }
    let target = *targets.first().ok_or("no server to load")?;
    let n = args.subscribers;
    let nofile = raise_nofile();
    let per_proc = MAX_SUBS_PER_PROCESS.min(nofile.saturating_sub(RESERVED_FDS)).max(1);
    let processes = if args.processes > 0 { args.processes } else { u64::from(n).div_ceil(per_proc) as u32 }.max(1);
    if processes > MAX_PROCESSES {
        return Err(format!("{processes} processes needed; at most {MAX_PROCESSES}"));
    }
    if u64::from(n).div_ceil(u64::from(processes)) > per_proc {
        return Err(format!("{n} subscribers over {processes} processes exceeds {per_proc} sockets per process"));
    }
    let threads = if args.threads > 0 {
        args.threads
    } else {
        std::thread::available_parallelism().map_or(2, |c| c.get() as u32)
    };
    let endpoint = Endpoint {
        host: target.to_string(),
        pub_path: args.pub_path.clone(),
        sub_path: args.sub_path.clone(),
        target: args.target,
        mode: args.mode,
        poll_timeout_s: args.poll_timeout,
        tls: args.tls.then(|| crate::tls::TlsOptions {
            ca: args.ca.clone(),
            insecure: args.insecure,
            server_name: args.tls_name.clone(),
        }),
    };
    if let Some(tls) = &endpoint.tls {
        // Refuse a bad --ca before any child starts.
        tls.client_config()?;
        tls.name()?;
    }
    let topics = if scenario == Scenario::PerUser {
        Topics::PerUser(args.topic.clone())
    } else {
        Topics::Single(args.topic.clone())
    };
    let budget = args.connect_timeout * 2.0
        + args.drain_timeout
        + match scenario {
            Scenario::Broadcast => f64::from(args.messages) * (args.drain_timeout + 1.0),
            _ => args.duration + args.drain_timeout,
        }
        + 60.0;
    let start_unix_ns = unix_ns();
    let mut problems = Vec::new();
    let (tx, rx) = mpsc::channel::<Event>();
    let mut children = Vec::new();
    for c in 0..processes {
        let first = (u64::from(n) * u64::from(c) / u64::from(processes)) as u32;
        let end = (u64::from(n) * (u64::from(c) + 1) / u64::from(processes)) as u32;
        let plan = Plan {
            child: c,
            target,
            targets: if targets.len() > 1 { targets.to_vec() } else { Vec::new() },
            endpoint: endpoint.clone(),
            first_sub: first,
            subs: end - first,
            topics: topics.clone(),
            threads,
            source_addrs: args.source_addrs,
            connect_concurrency: args.connect_concurrency,
            churn_per_s: if scenario == Scenario::Churn { args.churn_rate / f64::from(processes) } else { 0.0 },
            start_unix_ns,
            deadline_s: budget.min(4.0 * 3600.0) as u64,
            parent_pid: std::process::id(),
            track_fanout: scenario == Scenario::Broadcast,
            check_order: matches!(topics, Topics::Single(_)),
        };
        children.push(spawn_worker(&plan, tx.clone())?);
    }
    let mut live = Live::new(processes as usize, threads as usize, progress_bar(args));
    let sample = || watched.and_then(Watched::sample);
    let before = sample();

    // Phase 1: every subscriber connected and its request sent.
    live.phase("connecting");
    let t0 = Instant::now();
    let all = u64::from(n);
    let connected = live
        .wait(&rx, t0 + secs(args.connect_timeout), |l| l.sum().parked + l.sum().failed >= all || l.gone == l.procs);
    let setup_s = t0.elapsed().as_secs_f64();
    let parked = live.sum().parked;
    if !connected {
        problems.push(format!("connect deadline: {parked} of {n} parked after {setup_s:.1} s"));
    }
    let connected_sample = watched.and_then(|w| settle(w, &rx, &mut live));

    // Phase 2: the scenario.
    let mut measured_from = connected_sample.clone();
    let mut fanout = None;
    let mut rate = None;
    let mut expected = 0u64;
    let mut rtt = Latency::new();
    let mut published = 0;
    let mut publish_failed = 0;
    if scenario == Scenario::Idle {
        live.phase("holding");
        live.wait(&rx, Instant::now() + secs(args.duration), |l| l.gone == l.procs);
    } else {
        let ptx = tx.clone();
        let publishers = if scenario == Scenario::Broadcast { 1 } else { args.publishers };
        let publisher = publish::start(
            targets,
            endpoint.clone(),
            topics.clone(),
            publishers,
            args.pad,
            Box::new(move |ev| {
                let _ = ptx.send(Event::Pub(ev));
            }),
        )
        .map_err(|e| format!("publisher cannot connect: {e}"))?;
        live.phase("warming up");
        let warm_topics = if scenario == Scenario::PerUser { n } else { 1 };
        publisher.send(PubCmd::Warmup { topics: warm_topics });
        let t1 = Instant::now();
        let warm_ok = live.wait(&rx, t1 + secs(args.connect_timeout), |l| {
            l.warmup_done.is_some() && l.sum().warm + l.sum().failed >= all
        });
        let alive = live.sum().warm;
        if !warm_ok {
            problems.push(format!("warm-up deadline: {alive} of {n} subscribers received the warm-up message"));
        }
        measured_from = sample();
        match scenario {
            Scenario::Broadcast => {
                live.phase("broadcasting");
                fanout = Some(broadcast(args, &publisher, &rx, &mut live, alive, &mut problems));
                expected = live.acked_ok * alive;
                published = live.acked_ok;
            }
            _ => {
                live.phase("publishing");
                if scenario == Scenario::Churn {
                    for c in &mut children {
                        send_command(c, Command::Churn);
                    }
                }
                let topics_n = if scenario == Scenario::PerUser { n } else { 1 };
                publisher.send(PubCmd::Rate { per_s: args.rate, duration: secs(args.duration), topics: topics_n });
                let t2 = Instant::now();
                let done = live.wait(&rx, t2 + secs(args.duration + args.drain_timeout), |l| l.rate_done.is_some());
                if !done {
                    problems.push("publishing did not finish before its deadline".into());
                }
                let outcome = live.rate_done.unwrap_or_default();
                expected = if scenario == Scenario::PerUser { outcome.published } else { outcome.published * alive };
                published = outcome.published;
                live.phase("draining");
                let t3 = Instant::now();
                let drained = live.wait(&rx, t3 + secs(args.drain_timeout), |l| l.sum().received >= expected);
                if !drained {
                    problems.push(format!(
                        "drain deadline: {} of {expected} deliveries after {:.1} s",
                        live.sum().received,
                        args.drain_timeout
                    ));
                }
                let elapsed = t2.elapsed().as_secs_f64().max(1e-9);
                rate = Some((outcome, elapsed));
            }
        }
        let totals = publisher.stop();
        rtt.merge(&totals.rtt);
        publish_failed = totals.failed;
    }
    let end_sample = sample();

    // Phase 3: collect.
    live.phase("collecting");
    for c in &mut children {
        send_command(c, Command::Stop);
    }
    live.wait(&rx, Instant::now() + CHILD_REPLY_DEADLINE, |l| {
        l.results.iter().all(Option::is_some) || l.gone == l.procs
    });
    for c in &mut children {
        stop_child(&mut c.process, c.stdin.take());
    }
    live.finish();
    let (checks, counters, latency, timeline, failed, orders) = live.merged();
    if live.results.iter().any(Option::is_none) {
        problems.push("some children did not report results".into());
    }
    problems.extend(live.logs.iter().cloned());
    if counters.sessions_lost > 0 {
        problems
            .push(format!("the server forgot {} sessions (rejoined; see the delivery check)", counters.sessions_lost));
    }
    if counters.server_gaps > 0 {
        problems.push(format!("the server flagged {} responses with a gap (history overrun)", counters.server_gaps));
    }
    let unique = checks.unique();
    let lost = expected.saturating_sub(unique);
    if lost > 0 || checks.duplicates > 0 || checks.missing > 0 {
        problems.push(format!(
            "delivery check: lost {lost}, missing in sequence {}, duplicates {}",
            checks.missing, checks.duplicates
        ));
    }
    let order = (orders.subscribers() > 0).then(|| OrderCheck {
        subscribers: orders.subscribers(),
        distinct: orders.distinct(),
        largest_group: orders.largest(),
    });
    if let Some(o) = order.filter(|o| o.distinct > 1) {
        problems.push(format!(
            "order check: subscribers saw {} different delivery orders (largest group {} of {})",
            o.distinct, o.largest_group, o.subscribers
        ));
    }
    let rate = rate.map(|(outcome, elapsed): (RateOutcome, f64)| {
        let published_per_s = outcome.published as f64 / outcome.elapsed_s.max(1e-9);
        RateReport {
            target_per_s: args.rate,
            publish: outcome,
            published_per_s,
            delivered_per_s: unique as f64 / elapsed,
            kept_up: published_per_s >= 0.99 * args.rate && outcome.dropped == 0 && lost == 0,
        }
    });
    let addrs: Vec<String> = targets.iter().map(ToString::to_string).collect();
    let (server, nodes, redis) = match (watched, before, connected_sample, end_sample) {
        (Some(w), Some(before), Some(connected), Some(end)) => {
            let from = measured_from.unwrap_or_else(|| connected.clone());
            let readings = Readings { before, connected, from, end };
            let work = Work { parked, deliveries: unique, published };
            let (total, nodes, redis) = w.costs(&readings, work, &addrs, &cost::shares(u64::from(n), targets.len()));
            (Some(total), nodes, redis)
        }
        _ => (None, Vec::new(), None),
    };
    Ok(Report {
        scenario: args.scenario,
        pattern: (args.scenario == Scenario::Floor).then_some(scenario),
        target: args.target,
        mode: args.mode,
        addr: addrs.join(","),
        subscribers: n,
        processes,
        threads_per_process: threads,
        publishers: args.publishers,
        parked,
        failed_subscribers: failed,
        setup_s,
        connections_per_s: parked as f64 / setup_s.max(1e-9),
        published,
        publish_failed,
        expected_deliveries: expected,
        delivered_unique: unique,
        lost,
        checks,
        curve: latency.percentile_curve(),
        latency: latency.summary(),
        publish_rtt: rtt.summary(),
        fanout,
        rate,
        server,
        nodes,
        redis,
        order,
        counters,
        problems,
        elapsed_s: started.elapsed().as_secs_f64(),
        tick_ms: TICK_MS,
        timeline,
    })
}

/// Publish `args.messages` one at a time, each after the previous reached every live subscriber.
fn broadcast(
    args: &RunArgs,
    publisher: &publish::Publisher,
    rx: &mpsc::Receiver<Event>,
    live: &mut Live,
    alive: u64,
    problems: &mut Vec<String>,
) -> Fanout {
    let mut times = Latency::new();
    let mut complete = 0;
    let mut incomplete = 0;
    for _ in 0..args.messages {
        let before = live.sent.len();
        publisher.send(PubCmd::One { topic: 0 });
        let deadline = Instant::now() + secs(args.drain_timeout);
        let sent = live.wait(rx, deadline, |l| l.sent.len() > before);
        let Some(&(seq, sent_ns)) = live.sent.last().filter(|_| sent) else {
            problems.push("publisher stopped sending".into());
            break;
        };
        let done =
            live.wait(rx, deadline, |l| l.got.get(&seq).is_some_and(|g| g.0 >= alive) && l.acked.contains_key(&seq));
        match live.got.get(&seq) {
            Some(&(count, last_ns)) if done && count >= alive => {
                complete += 1;
                times.record(last_ns.saturating_sub(sent_ns));
            }
            _ => incomplete += 1,
        }
    }
    if incomplete > 0 {
        problems
            .push(format!("{incomplete} broadcasts did not reach every subscriber within {} s", args.drain_timeout));
    }
    let s = times.summary();
    Fanout {
        messages: u64::from(args.messages),
        complete,
        mean_ms: s.mean_us / 1e3,
        p50_ms: s.p50_us / 1e3,
        p99_ms: s.p99_us / 1e3,
        max_ms: s.max_us / 1e3,
    }
}

/// Wait until the servers' CPU use stops climbing (connections processed), then sample them.
fn settle(w: &Watched, rx: &mpsc::Receiver<Event>, live: &mut Live) -> Option<Snapshot> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    let mut last = w.sample()?;
    while Instant::now() < deadline {
        live.wait(rx, Instant::now() + SETTLE_STEP, |_| false);
        let now = w.sample()?;
        if now.all_cpu_ns().saturating_sub(last.all_cpu_ns()) < SETTLE_CPU_NS {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

/// What arrives on the parent's one event channel.
#[derive(Debug)]
enum Event {
    Child { child: usize, msg: ChildMsg },
    ChildGone,
    Pub(PubEvent),
}

/// What the parent knows so far.
struct Live {
    procs: usize,
    progress: Vec<Vec<Progress>>,
    results: Vec<Option<ChildResult>>,
    gone: usize,
    /// Per message: subscribers reached and the latest receive time.
    got: HashMap<u64, (u64, u64)>,
    /// `(seq, send time)` of one-at-a-time publishes, in order.
    sent: Vec<(u64, u64)>,
    acked: HashMap<u64, bool>,
    acked_ok: u64,
    warmup_done: Option<(u64, u64)>,
    rate_done: Option<RateOutcome>,
    logs: Vec<String>,
    bar: Option<ProgressBar>,
    phase: &'static str,
}

impl Live {
    fn new(procs: usize, threads: usize, bar: Option<ProgressBar>) -> Self {
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

    fn phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.redraw();
    }

    fn sum(&self) -> Progress {
        let mut total = Progress::default();
        for p in self.progress.iter().flatten() {
            total.add(p);
        }
        total
    }

    /// Apply events until `done` holds (true) or `deadline` passes (false).
    fn wait(&mut self, rx: &mpsc::Receiver<Event>, deadline: Instant, done: impl Fn(&Live) -> bool) -> bool {
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

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Children's results added up.
    fn merged(&self) -> (Checks, Counters, Latency, Timeline, u64, Orders) {
        let mut checks = Checks::default();
        let mut counters = Counters::default();
        let mut latency = Latency::new();
        let mut timeline = Timeline::default();
        let mut failed = 0;
        let mut orders = Orders::default();
        for r in self.results.iter().flatten() {
            orders.merge(&r.orders);
            checks.merge(&r.checks);
            counters.merge(&r.counters);
            latency.merge(&r.latency);
            timeline.merge(&r.timeline);
            failed += r.progress.failed;
        }
        (checks, counters, latency, timeline, failed, orders)
    }
}

struct WorkerProc {
    process: Child,
    /// Dropped (EOF to the child) when the child is stopped.
    stdin: Option<ChildStdin>,
}

/// Re-execute this binary as `worker` with `plan` on its stdin; its stdout lines become events.
fn spawn_worker(plan: &Plan, tx: mpsc::Sender<Event>) -> Result<WorkerProc, String> {
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

fn send_command(c: &mut WorkerProc, cmd: Command) {
    if let Ok(mut line) = serde_json::to_vec(&cmd) {
        line.push(b'\n');
        if let Some(stdin) = &mut c.stdin {
            let _ = stdin.write_all(&line).and_then(|_| stdin.flush());
        }
    }
}

/// Start the floor server child and learn its address.
fn start_floor(threads: usize) -> Result<(Child, SocketAddr), String> {
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
fn stop_child(child: &mut Child, stdin: Option<ChildStdin>) {
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

fn progress_bar(args: &RunArgs) -> Option<ProgressBar> {
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

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 1e6))
}
