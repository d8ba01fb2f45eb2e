//! Processes that leave their job's process group — `setsid`, a double fork — and would
//! otherwise outlive the attempt that started them.
//!
//! An owner of jobs (the daemon, `worker job`) makes itself a *child subreaper*: when a job's
//! process dies, its orphaned descendants are re-parented to the owner instead of to init. So
//! when an attempt ends, every process that escaped its group and is still alive is one of our
//! own children that we did not spawn; the ones whose environment carries the attempt's marker
//! (`WORKER_OWNER=TOKEN/N`, inherited from the job) are killed with their groups, repeatedly,
//! since killing one re-parents its own escaped children to us in turn. Our children that ended
//! are reaped here too (nobody else waits for them).
//!
//! What is still out of reach: a process that clears its environment *and* leaves the group is
//! killed only when the owner stops (under systemd, by the unit's cgroup).

use std::collections::HashSet;

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// Makes this process the reaper of its descendants' orphans. Returns whether it worked.
pub fn become_subreaper() -> bool {
    nix::sys::prctl::set_child_subreaper(true).is_ok()
}

/// The children of our main thread, from `/proc/self/task/PID/children`: orphans are
/// re-parented to the thread group's leader, so every escapee is there (jobs spawned from other
/// threads are listed under those, and are not what we look for). One small read per attempt.
fn children() -> Vec<i32> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/self/task/{me}/children"))
        .map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` has ended (a zombie) — or is gone.
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| matches!(state, "Z" | "X")),
    }
}

/// Whether `pid`'s environment holds exactly `marker` (`NAME=VALUE`).
fn marked(pid: i32, marker: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker))
}

/// One pass over our children that we did not spawn (`tracked`: live job leaders and the
/// sentinel). Reaps those that ended; kills, with their groups, those that carry `marker` (when
/// given). Returns how many it killed.
///
/// The caller must make sure that no child it tracks can be spawned or reaped during the pass
/// (it holds the executor's spawn lock), or a just-started job could be taken for an escapee.
pub fn sweep(tracked: &HashSet<i32>, marker: Option<&[u8]>) -> usize {
    let own_group = nix::unistd::getpgrp();
    let mut killed = 0;
    for pid in children() {
        if tracked.contains(&pid) {
            continue;
        }
        if ended(pid) {
            // Not ours to wait for otherwise: an escapee that exited by itself.
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            continue;
        }
        let Some(marker) = marker else { continue };
        if !marked(pid, marker) {
            continue;
        }
        let p = Pid::from_raw(pid);
        if let Ok(g) = nix::unistd::getpgid(Some(p))
            && g != own_group
            && g.as_raw() > 1
        {
            let _ = killpg(g, Signal::SIGKILL);
        }
        let _ = kill(p, Signal::SIGKILL);
        killed += 1;
    }
    killed
}
