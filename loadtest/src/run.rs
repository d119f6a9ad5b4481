//! The parent: plans a run, starts the floor server (floor scenario) and the `worker` children,
//! publishes, follows the children's progress through every phase (each with a deadline),
//! reads the server's cost from /proc between phases, and merges the children's results into
//! one [`Report`].

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::children::{
    progress_bar, send_command, spawn_worker, start_floor, stop_child, Event, Live, Merged, CHILD_REPLY_DEADLINE,
};
use crate::cli::{RunArgs, Scenario};
use crate::cost::{self, Readings, Snapshot, Watched, Work};
use crate::feed::{Endpoint, Target};
use crate::ipc::{Command, Plan, Topics};
use crate::limits::{self, Demand};
use crate::net::{loopback_target, raise_nofile};
use crate::procfs;
use crate::publish::{self, PubCmd, RateOutcome};
use crate::report::{Fanout, OrderCheck, RateReport, Report};
use crate::stamp::unix_ns;
use crate::stats::{Latency, TICK_MS};

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
    // Before anything connects: the children and the parent must fit their open-file limit.
    let publishers = match scenario {
        Scenario::Idle => 0,
        Scenario::Broadcast => 1,
        _ => args.publishers,
    };
    let demand = Demand {
        subscribers: u64::from(args.subscribers),
        publishers: u64::from(publishers),
        processes: args.processes,
    };
    let processes = limits::plan_processes(demand, raise_nofile())?;
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
    if let Err(e) = servers_fit(args, watched.as_ref(), &targets, publishers) {
        if let Some(mut f) = floor {
            stop_child(&mut f, None);
        }
        return Err(e);
    }
    let result = drive(args, scenario, &targets, watched.as_ref(), processes, started);
    if let Some(mut f) = floor {
        stop_child(&mut f, None);
    }
    result
}

/// Refuse a run that would give a Halley node more connections than its open-file limit:
/// a server out of descriptors leaves them unaccepted in its backlog, where they look parked.
/// (Nchan's limit is its workers', set in nginx.conf, not the master's we watch.)
fn servers_fit(
    args: &RunArgs,
    watched: Option<&Watched>,
    targets: &[SocketAddr],
    publishers: u32,
) -> Result<(), String> {
    let Some(w) = watched.filter(|_| args.target == Target::Halley) else {
        return Ok(());
    };
    let shares = cost::shares(u64::from(args.subscribers), targets.len());
    let per_node_pubs = u64::from(publishers).div_ceil(targets.len().max(1) as u64);
    for ((&pid, share), t) in w.nodes.iter().zip(&shares).zip(targets) {
        // + 1: the probe connection that checks the server is up.
        limits::check_server(pid, &t.to_string(), share + per_node_pubs + 1)?;
    }
    Ok(())
}

/// Everything between "server known" and "report built".
fn drive(
    args: &RunArgs,
    scenario: Scenario,
    targets: &[SocketAddr],
    watched: Option<&Watched>,
    processes: u32,
    started: Instant,
) -> Result<Report, String> {
    for t in targets {
        std::net::TcpStream::connect_timeout(t, Duration::from_secs(2))
            .map_err(|e| format!("nothing accepts connections at {t}: {e}"))?;
    }
    let target = *targets.first().ok_or("no server to load")?;
    let n = args.subscribers;
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
    let tracer = watched.cloned().and_then(|w| cost::trace(w, start_unix_ns));

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
    let trace_points = tracer.map(cost::Tracer::stop).unwrap_or_default();

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
    let Merged { checks, counters, latency, series, timeline, failed, orders } = live.merged();
    if live.results.iter().any(Option::is_none) {
        problems.push("some children did not report results".into());
    }
    problems.extend(live.logs.iter().cloned());
    if counters.sessions_lost > 0 {
        problems
            .push(format!("the server forgot {} sessions (rejoined; see the delivery check)", counters.sessions_lost));
    }
    if counters.out_of_fds > 0 {
        problems.push(format!(
            "{} subscribers given up: their connect failed with EMFILE/ENFILE (too many open files in the generator); \
             use more --processes or raise the limit (ulimit -n)",
            counters.out_of_fds
        ));
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
    let server_over_time = cost::ServerTrace {
        names: addrs
            .iter()
            .zip(watched.map_or(&[][..], |w| &w.nodes[..]))
            .map(|(a, pid)| format!("{a} (pid {pid})"))
            .chain(watched.and_then(|w| w.redis).map(|pid| format!("redis (pid {pid})")))
            .collect(),
        points: trace_points,
    };
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
        latency_over_time: series.points(),
        server_over_time,
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

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 1e6))
}
