//! The open-file budget of a run, checked before anything connects: how many `worker`
//! children the subscribers need under the generator's `RLIMIT_NOFILE` (after raising the soft
//! limit to the hard one), whether the parent's publishers and pipes fit too, and whether the
//! server under test may even hold the connections it is about to get (`/proc/PID/limits`).
//!
//! Without these checks a run past a limit looks like something else: a server out of file
//! descriptors leaves connections in its listen backlog, where the generator counts them as
//! parked, and the run ends in a warm-up timeout.

use std::fs;

use crate::net::{NoFile, RESERVED_FDS};

/// Most subscriber sockets one child holds: under the 20,000 open-file cap of these machines
/// with room for the process's own descriptors.
pub const MAX_SUBS_PER_PROCESS: u64 = 19_000;
/// Most child processes a run starts.
pub const MAX_PROCESSES: u32 = 64;
/// Descriptors a server keeps for itself (listeners, epoll, wakers, logs) beyond connections:
/// only a server that cannot fit the run even with this little room is refused.
pub const SERVER_RESERVED_FDS: u64 = 32;
/// Descriptors the parent keeps per child (the child's stdin and stdout pipes).
const PIPES_PER_CHILD: u64 = 2;

/// What the subscribers and publishers ask of the generator's open-file limit.
#[derive(Debug, Clone, Copy)]
pub struct Demand {
    pub subscribers: u64,
    /// Publisher connections, all in the parent.
    pub publishers: u64,
    /// `--processes`, 0 to choose.
    pub processes: u32,
}

/// How many `worker` children carry the subscribers under `limit`, or the one-line refusal
/// (the need, the limit, and the fix) when the run cannot fit.
pub fn plan_processes(d: Demand, limit: NoFile) -> Result<u32, String> {
    let room = limit.soft.saturating_sub(RESERVED_FDS);
    let per_proc = MAX_SUBS_PER_PROCESS.min(room);
    let processes = if d.processes > 0 {
        d.processes
    } else if per_proc == 0 {
        1
    } else {
        u32::try_from(d.subscribers.div_ceil(per_proc)).unwrap_or(u32::MAX).max(1)
    };
    let per_child = d.subscribers.div_ceil(u64::from(processes));
    if per_child > room || processes > MAX_PROCESSES {
        let need = per_child + RESERVED_FDS;
        // The fewest children that fit, if the limit leaves any room at all.
        let fits = (per_proc > 0).then(|| d.subscribers.div_ceil(per_proc)).filter(|&p| p <= u64::from(MAX_PROCESSES));
        let fix = match fits {
            Some(p) if p > u64::from(processes) || d.processes == 0 => {
                format!("use --processes {p}, or raise the limit (ulimit -n {need})")
            }
            _ => format!("raise the limit (ulimit -n {need})"),
        };
        return Err(format!(
            "open-file limit too low: {} subscribers over {processes} processes need {need} open files per process \
             ({per_child} sockets + {RESERVED_FDS} reserved), the limit is {} (hard {}); {fix}",
            d.subscribers, limit.soft, limit.hard
        ));
    }
    let parent_need = d.publishers + PIPES_PER_CHILD * u64::from(processes) + RESERVED_FDS;
    if parent_need > limit.soft {
        return Err(format!(
            "open-file limit too low: the parent needs {parent_need} open files ({} publishers + {} child pipes + \
             {RESERVED_FDS} reserved), the limit is {} (hard {}); use fewer --publishers, or raise the limit \
             (ulimit -n {parent_need})",
            d.publishers,
            PIPES_PER_CHILD * u64::from(processes),
            limit.soft,
            limit.hard
        ));
    }
    Ok(processes)
}

/// The soft open-file limit of a running process, from `/proc/PID/limits`; `None` if it is
/// unreadable or "unlimited".
pub fn process_nofile(pid: u32) -> Option<u64> {
    parse_limits(&fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)
}

fn parse_limits(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// Refuse a run whose connections to server `pid` (at `addr`) cannot fit under its open-file
/// limit: it would leave the extra connections unaccepted in its backlog.
pub fn check_server(pid: u32, addr: &str, connections: u64) -> Result<(), String> {
    let Some(limit) = process_nofile(pid) else {
        return Ok(());
    };
    let need = connections + SERVER_RESERVED_FDS;
    if need > limit {
        return Err(format!(
            "server open-file limit too low: this run opens {connections} connections to {addr} (pid {pid}), which \
             with {SERVER_RESERVED_FDS} for the server itself need {need} open files, its limit is {limit}; restart it \
             with a higher limit (ulimit -n {need}, or prlimit --pid {pid} --nofile={need}) or use fewer -n"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(soft: u64) -> NoFile {
        NoFile { soft, hard: soft }
    }

    fn demand(subscribers: u64, processes: u32) -> Demand {
        Demand { subscribers, publishers: 2, processes }
    }

    #[test]
    fn children_are_chosen_to_fit() {
        assert_eq!(plan_processes(demand(10, 0), lim(20_000)), Ok(1));
        assert_eq!(plan_processes(demand(50_000, 0), lim(20_000)), Ok(3));
        assert_eq!(plan_processes(demand(1_000, 0), lim(600)), Ok(2));
        assert_eq!(plan_processes(demand(1_000, 4), lim(600)), Ok(4));
    }

    #[test]
    fn too_few_processes_are_refused_with_the_fix() {
        let e = plan_processes(demand(1_000, 1), lim(600)).expect_err("1,000 sockets in 600 files");
        assert!(e.contains("need 1100 open files per process"), "{e}");
        assert!(e.contains("the limit is 600"), "{e}");
        assert!(e.contains("--processes 2"), "{e}");
        assert!(e.contains("ulimit -n 1100"), "{e}");
    }

    #[test]
    fn a_limit_below_the_reserve_only_suggests_ulimit() {
        let e = plan_processes(demand(200, 0), lim(64)).expect_err("nothing fits in 64");
        assert!(e.contains("the limit is 64 (hard 64)"), "{e}");
        assert!(e.contains("ulimit -n 300") && !e.contains("--processes"), "{e}");
    }

    #[test]
    fn the_parent_needs_room_for_publishers() {
        let d = Demand { subscribers: 10, publishers: 500, processes: 0 };
        let e = plan_processes(d, lim(550)).expect_err("500 publishers in 550 files");
        assert!(e.contains("the parent needs 602 open files"), "{e}");
    }

    #[test]
    fn proc_limits_are_parsed() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             63448                63448                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_limits(text), Some(1024));
        assert_eq!(parse_limits("Max open files            unlimited            unlimited  files"), None);
        assert!(process_nofile(std::process::id()).is_some());
    }
}
