//! Server cost readings from /proc (proc(5)): CPU time summed over the process's threads and
//! resident memory, read before and after each phase so a report states CPU per delivery and
//! bytes per connection.

use std::fs;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `utime`/`stime` in /proc/PID/stat (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// One reading of a process's cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// CPU time of all threads, user + system, in nanoseconds.
    pub cpu_ns: u64,
    /// Resident set size, in KiB (`VmRSS`).
    pub rss_kb: u64,
    /// Anonymous resident memory, in KiB (`RssAnon`): heap and stacks, without the binary.
    pub anon_kb: u64,
}

/// Read the cost of `pid` plus its direct children now (so an nginx master's number covers
/// its workers; Halley has no children); `None` if `pid` is gone or /proc is unreadable.
pub fn sample(pid: u32) -> Option<Sample> {
    let mut total = sample_one(pid)?;
    for child in children(pid) {
        if let Some(s) = sample_one(child) {
            total.cpu_ns += s.cpu_ns;
            total.rss_kb += s.rss_kb;
            total.anon_kb += s.anon_kb;
        }
    }
    Some(total)
}

/// Direct children of `pid`, from /proc/PID/task/*/children.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = fs::read_to_string(task.path().join("children")) {
                out.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn sample_one(pid: u32) -> Option<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (rss_kb, anon_kb) = parse_status(&status);
    Some(Sample { cpu_ns: cpu_ns(pid)?, rss_kb, anon_kb })
}

/// CPU time in ns: the sum of per-thread `schedstat` run times (nanosecond resolution), or
/// `utime + stime` from `stat` (10 ms resolution) where schedstat is not available.
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Some(ns) = fs::read_to_string(task.path().join("schedstat")).ok().and_then(|s| parse_schedstat(&s)) {
                total += ns;
                any = true;
            }
        }
    }
    if any {
        return Some(total);
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat).map(|ticks| ticks * (1_000_000_000 / USER_HZ))
}

/// First field of /proc/PID/task/TID/schedstat: time spent on the CPU, in ns.
fn parse_schedstat(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

/// `utime + stime` (fields 14 and 15) from /proc/PID/stat. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11, stime index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` and `RssAnon` in KiB from /proc/PID/status (0 when absent).
fn parse_status(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// The pid of the process listening on `addr` (TCP), found through /proc/net/tcp{,6} and the
/// socket inodes in /proc/*/fd. `None` when not found or not permitted.
pub fn find_listener(addr: SocketAddr) -> Option<u32> {
    let table = if addr.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = fs::read_to_string(table).ok()?;
    let inode = listening_inode(&text, addr.port())?;
    let needle = format!("socket:[{inode}]");
    for proc_dir in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_dir.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == needle) {
                return Some(pid);
            }
        }
    }
    None
}

/// Inode of a socket in LISTEN state (st 0A) on `port` in a /proc/net/tcp table.
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    let want = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local = f.get(1)?;
        (local.ends_with(&want) && f.get(3) == Some(&"0A")).then(|| f.get(9)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_after_the_command_name() {
        let stat = "1234 (my (odd) srv) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_memory_fields() {
        let status = "Name:\thalley\nVmRSS:\t   20480 kB\nRssAnon:\t    8192 kB\n";
        assert_eq!(parse_status(status), (20480, 8192));
        assert_eq!(parse_status("Name: x\n"), (0, 0));
        assert_eq!(parse_schedstat("123456789 1000 20\n"), Some(123_456_789));
    }

    #[test]
    fn listening_socket_found_by_port() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5555 1 0\n";
        assert_eq!(listening_inode(table, 8080), Some(4242));
        assert_eq!(listening_inode(table, 8081), None);
    }

    #[test]
    fn children_are_counted_with_their_parent() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("spawn sleep");
        let kids = children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(kids.contains(&child.id()), "{kids:?}");
    }

    #[test]
    fn own_process_is_readable_and_found_by_its_listener() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kb > 0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(find_listener(addr), Some(std::process::id()));
    }
}
