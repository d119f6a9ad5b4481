//! Entry points of the processes the parent starts (`worker`, `floor-server`) and the two ways
//! they notice the parent is gone: `PR_SET_PDEATHSIG` (SIGKILL when the parent dies) and EOF
//! on stdin. Either ends the child, so no load outlives the run.

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::Signal;

use crate::ipc::{emit, ChildMsg, Command, Plan, MAX_LINE_BYTES};

/// Exit status of a child whose parent went away.
pub const EXIT_ORPHANED: i32 = 3;
/// Exit status for a plan that could not be read or started.
pub const EXIT_BAD_PLAN: i32 = 2;

/// `halley-load worker`: read the plan, hold the subscribers, report, exit.
pub fn worker_main() -> i32 {
    arm_parent_death();
    let plan: Plan = match read_line(&mut io::stdin().lock()).map(|l| l.and_then(|l| serde_json::from_str(&l).ok())) {
        Ok(Some(plan)) => plan,
        _ => {
            emit(&ChildMsg::Log { text: "worker: no valid plan on stdin".into() });
            return EXIT_BAD_PLAN;
        }
    };
    // The parent may have died before the death signal was armed.
    if std::os::unix::process::parent_id() != plan.parent_pid {
        return EXIT_ORPHANED;
    }
    crate::net::raise_nofile();
    let stop = Arc::new(AtomicBool::new(false));
    let churning = Arc::new(AtomicBool::new(false));
    let worker = match crate::sub::start(&plan, stop.clone(), churning.clone()) {
        Ok(w) => w,
        Err(e) => {
            emit(&ChildMsg::Log { text: format!("worker {}: cannot start: {e}", plan.child) });
            return EXIT_BAD_PLAN;
        }
    };
    let wakers = worker.wakers();
    let spawned = std::thread::Builder::new().name("commands".into()).spawn(move || {
        // Stdin's buffer is shared, so what followed the plan line is still there.
        let mut stdin = io::stdin().lock();
        loop {
            match read_line(&mut stdin) {
                Ok(Some(line)) => match serde_json::from_str::<Command>(&line) {
                    Ok(Command::Stop) => stop.store(true, Ordering::Relaxed),
                    Ok(Command::Churn) => churning.store(true, Ordering::Relaxed),
                    Err(_) => continue,
                },
                // EOF or a broken pipe: the parent is gone, and so is whoever wanted results.
                _ => std::process::exit(EXIT_ORPHANED),
            }
            for w in &wakers {
                let _ = w.wake();
            }
        }
    });
    if spawned.is_err() {
        return EXIT_BAD_PLAN;
    }
    let result = worker.join();
    emit(&ChildMsg::Result(Box::new(result)));
    0
}

/// `halley-load floor-server`: serve until stdin closes.
pub fn floor_main(listen: &str, threads: usize) -> i32 {
    arm_parent_death();
    crate::net::raise_nofile();
    let addr = match crate::net::loopback_target(listen) {
        Ok(a) => a,
        Err(e) => {
            emit(&ChildMsg::Log { text: e });
            return EXIT_BAD_PLAN;
        }
    };
    let bound = match crate::floor::start(addr, threads) {
        Ok((bound, _handles)) => bound,
        Err(e) => {
            emit(&ChildMsg::Log { text: format!("floor server: {e}") });
            return EXIT_BAD_PLAN;
        }
    };
    emit(&ChildMsg::Listening { addr: bound });
    let mut sink = [0u8; 256];
    let mut stdin = io::stdin().lock();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
    }
}

/// Ask the kernel to SIGKILL us when the parent thread exits (Linux prctl(2)).
fn arm_parent_death() {
    // Best effort: stdin EOF is the second line of defence.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
}

/// One line of at most [`MAX_LINE_BYTES`]; `None` at EOF.
pub fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = String::new();
    let n = r.take(MAX_LINE_BYTES as u64).read_line(&mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') && n >= MAX_LINE_BYTES {
        return Err(io::Error::other("line too long"));
    }
    Ok(Some(line.trim_end().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_one_at_a_time() {
        let mut input = io::Cursor::new(b"{\"cmd\":\"stop\"}\nsecond\n".to_vec());
        assert_eq!(read_line(&mut input).expect("ok").as_deref(), Some("{\"cmd\":\"stop\"}"));
        assert_eq!(read_line(&mut input).expect("ok").as_deref(), Some("second"));
        assert_eq!(read_line(&mut input).expect("ok"), None);
    }
}
