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

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// Makes this process the reaper of its descendants' orphans, and opens the list of its main
/// thread's children (where orphans are re-parented; jobs spawned from other threads are listed
/// under those, and are not what we look for). `None` if either is not possible: then nothing
/// that escapes a group is caught before the owner stops.
pub fn become_subreaper() -> Option<Children> {
    nix::sys::prctl::set_child_subreaper(true).ok()?;
    let path = format!("/proc/self/task/{}/children", std::process::id());
    std::fs::File::open(path).ok().map(|file| Children { file })
}

/// Our main thread's children, read again on each call: reading from offset 0 regenerates the
/// list, so each sweep costs one `pread` (it runs after every attempt).
pub struct Children {
    file: std::fs::File,
}

impl Children {
    fn pids(&self) -> Vec<i32> {
        use std::os::unix::fs::FileExt;
        let mut stack = [0u8; 4096];
        let mut heap = Vec::new();
        let text: &[u8] = match self.file.read_at(&mut stack, 0) {
            Ok(n) if n < stack.len() => &stack[..n],
            Ok(_) => {
                // More children than fit on the stack: read it whole.
                heap.resize(1 << 16, 0);
                loop {
                    match self.file.read_at(&mut heap, 0) {
                        Ok(n) if n < heap.len() => break &heap[..n],
                        Ok(_) => heap.resize(heap.len() * 2, 0),
                        Err(_) => break &[],
                    }
                }
            }
            Err(_) => &[],
        };
        text.split(|b| *b == b' ')
            .filter_map(|p| std::str::from_utf8(p).ok()?.trim().parse().ok())
            .collect()
    }
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
pub fn sweep(children: &Children, tracked: impl Fn(i32) -> bool, marker: Option<&[u8]>) -> usize {
    let mut killed = 0;
    for pid in children.pids() {
        if tracked(pid) {
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
            && g != nix::unistd::getpgrp()
            && g.as_raw() > 1
        {
            let _ = killpg(g, Signal::SIGKILL);
        }
        let _ = kill(p, Signal::SIGKILL);
        killed += 1;
    }
    killed
}
