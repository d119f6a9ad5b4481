//! End to end: the real binary, its worker children and its floor server over loopback, in a
//! small broadcast and a small SSE rate run; every delivery must arrive exactly once.

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_halley-load"))
        .args(["--scenario", "floor", "--json", "--no-progress", "--connect-timeout", "20", "--drain-timeout", "10"])
        .args(args)
        .output()
        .expect("halley-load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).expect("JSON report")
}

#[test]
fn floor_broadcast_longpoll_loses_nothing() {
    let r = run(&["--pattern", "broadcast", "-n", "60", "-k", "5", "--processes", "2", "--threads", "1"]);
    assert_eq!(r["parked"], 60);
    assert_eq!(r["expected_deliveries"], 300);
    assert_eq!(r["delivered_unique"], 300);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["checks"]["duplicates"], 0);
    assert_eq!(r["fanout"]["complete"], 5);
    assert!(r["server"]["cpu_us_per_delivery"].as_f64().is_some_and(|c| c > 0.0), "{r}");
}

#[test]
fn floor_rate_sse_loses_nothing() {
    let r = run(&[
        "--pattern",
        "rate",
        "--mode",
        "sse",
        "-n",
        "40",
        "--rate",
        "100",
        "--duration",
        "0.5",
        "--publishers",
        "2",
    ]);
    // Whether the publishers kept up the offered rate is a figure of the box's load (a
    // benchmark's business, not this test's); what must hold is that every message published
    // reached every subscriber exactly once.
    let expected = r["expected_deliveries"].as_u64().expect("number");
    assert!(expected >= 40, "at least one message reached the 40 subscribers: {r}");
    assert_eq!(r["delivered_unique"].as_u64(), Some(expected));
    assert_eq!(r["lost"], 0);
    assert_eq!(r["checks"]["duplicates"], 0);
}

#[test]
fn floor_churn_longpoll_keeps_cursors_across_reconnects() {
    let r = run(&[
        "--pattern",
        "churn",
        "-n",
        "40",
        "--rate",
        "100",
        "--duration",
        "0.5",
        "--publishers",
        "2",
        "--churn-rate",
        "80",
    ]);
    assert!(r["counters"]["churned"].as_u64().is_some_and(|c| c > 0), "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["checks"]["duplicates"], 0, "{r}");
    assert_eq!(r["delivered_unique"], r["expected_deliveries"]);
}
