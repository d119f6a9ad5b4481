//! Open-file limits, end to end with the real binary under a low `RLIMIT_NOFILE`: a run that
//! cannot fit the generator's or the server's limit is refused before anything connects (exit
//! 2, one line with the need, the limit and the fix), and a worker that runs out of
//! descriptors mid-run counts each subscriber it gives up with that reason.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use halley_load::feed::{Endpoint, Mode, Target};
use halley_load::ipc::{ChildMsg, Plan, Topics};

const BIN: &str = env!("CARGO_BIN_EXE_halley-load");

/// `halley-load args..` with soft and hard `RLIMIT_NOFILE` at `limit`: util-linux `prlimit` if
/// present, else the shell's `ulimit -n` (which sets both).
fn limited(limit: u32, args: &[&str]) -> Command {
    let has_prlimit = Command::new("prlimit").arg("--version").output().is_ok_and(|o| o.status.success());
    let mut cmd = if has_prlimit {
        let mut c = Command::new("prlimit");
        c.arg(format!("--nofile={limit}")).arg(BIN);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), BIN]);
        c
    };
    cmd.args(args);
    cmd
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(str::to_owned).collect()
}

/// Nothing connected to `listener` (it is non-blocking).
fn assert_untouched(listener: &TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the refused run connected anyway: {other:?}"),
    }
}

#[test]
fn a_generator_limit_too_low_is_refused_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    let out = limited(64, &["-s", "idle", "-n", "200", "--addr", &addr, "--no-progress", "--server-pid", "1"])
        .output()
        .expect("halley-load runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.contains("open-file limit too low"), "{line}");
    assert!(line.contains("need 300 open files per process"), "{line}");
    assert!(line.contains("the limit is 64 (hard 64)"), "{line}");
    assert!(line.contains("ulimit -n 300"), "{line}");
    assert_untouched(&listener);
}

#[test]
fn too_few_processes_for_the_limit_names_the_processes_that_fit() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    let args = ["-s", "idle", "-n", "300", "--processes", "1", "--addr", &addr, "--no-progress", "--server-pid", "1"];
    let out = limited(250, &args).output().expect("halley-load runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("use --processes 2, or raise the limit (ulimit -n 400)"), "{}", lines[0]);
    assert_untouched(&listener);
}

/// A floor server (the generator's own bare server) under a limit of 64, and its address.
fn small_server() -> (Child, String) {
    let mut server = limited(64, &["floor-server", "--listen", "127.0.0.1:0", "--threads", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("floor server starts");
    let stdout = server.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("listening line");
    let addr = match serde_json::from_str::<ChildMsg>(&line) {
        Ok(ChildMsg::Listening { addr }) => addr.to_string(),
        other => panic!("floor server said {other:?}"),
    };
    (server, addr)
}

#[test]
fn a_server_limit_too_low_is_refused_before_connecting() {
    let (mut server, addr) = small_server();
    let pid = server.id().to_string();
    let out = Command::new(BIN)
        .args(["-s", "idle", "-n", "100", "--addr", &addr, "--server-pid", &pid, "--no-progress"])
        .output()
        .expect("halley-load runs");
    drop(server.stdin.take()); // EOF: the floor server exits
    let _ = server.wait();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.contains("server open-file limit too low"), "{line}");
    assert!(line.contains(&format!("101 connections to {addr} (pid {pid})")), "{line}");
    assert!(line.contains("its limit is 64"), "{line}");
    assert!(line.contains("ulimit -n 133"), "{line}");
}

#[test]
fn a_worker_out_of_descriptors_counts_each_subscriber_it_gives_up() {
    // The listener never accepts: connections complete into its backlog and park there.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = listener.local_addr().expect("addr");
    let subs = 60;
    let plan = Plan {
        child: 0,
        target,
        targets: Vec::new(),
        endpoint: Endpoint {
            host: target.to_string(),
            pub_path: "/pub".into(),
            sub_path: "/sub".into(),
            target: Target::Halley,
            mode: Mode::Longpoll,
            poll_timeout_s: 0,
            tls: None,
        },
        first_sub: 0,
        subs,
        topics: Topics::Single("t".into()),
        threads: 1,
        source_addrs: 1,
        connect_concurrency: 100,
        churn_per_s: 0.0,
        start_unix_ns: halley_load::stamp::unix_ns(),
        deadline_s: 60,
        parent_pid: std::process::id(),
        track_fanout: false,
        check_order: false,
    };
    let mut worker =
        limited(40, &["worker"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("worker starts");
    let mut stdin = worker.stdin.take().expect("stdin");
    let mut line = serde_json::to_vec(&plan).expect("plan");
    line.push(b'\n');
    stdin.write_all(&line).expect("send plan");
    let mut lines = BufReader::new(worker.stdout.take().expect("stdout")).lines();
    // Every subscriber either parks or is given up (the worker says so at once, not at a tick).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the worker never settled");
        let text = lines.next().expect("worker alive").expect("line");
        if let Ok(ChildMsg::Progress { progress, .. }) = serde_json::from_str(&text) {
            if progress.parked + progress.failed >= u64::from(subs) {
                break;
            }
        }
    }
    stdin.write_all(b"{\"cmd\":\"stop\"}\n").expect("stop");
    let result = loop {
        let text = lines.next().expect("worker alive").expect("line");
        if let Ok(ChildMsg::Result(r)) = serde_json::from_str(&text) {
            break r;
        }
    };
    drop(stdin);
    let _ = worker.wait();
    let c = &result.counters;
    let p = &result.progress;
    assert!(c.out_of_fds > 0 && p.parked > 0, "{result:?}");
    assert_eq!(p.failed, c.out_of_fds, "{result:?}");
    assert_eq!(p.parked + p.failed, u64::from(subs), "{result:?}");
    // Given up at the first EMFILE, not retried: one refused connect per subscriber.
    assert_eq!(c.connect_errors, c.out_of_fds, "{result:?}");
    drop(listener);
}
