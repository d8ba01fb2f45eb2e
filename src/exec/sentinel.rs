//! The sentinel: a tiny helper process that kills job process groups when their owner dies.
//!
//! Every process that runs jobs (the daemon, a foreground `worker job`) starts one sentinel,
//! `worker __sentinel TOKEN`, reading a pipe whose only writer is its owner. The owner writes
//! `+PGID` for each job it spawns and `-PGID` once the group is gone. When the owner dies —
//! however it dies, `kill -9` included — the kernel closes its end of the pipe; the sentinel
//! reads end-of-file and
//!
//! 1. sends SIGKILL to every group still registered, then
//! 2. sweeps `/proc` for processes whose environment holds `WORKER_OWNER=TOKEN/N` (every job's
//!    environment does, N counting its attempts, and its descendants inherit it) and kills their
//!    groups too (never its owner's own group, which a job could have joined) — which covers
//!    a job spawned in the instant before its owner could register it, and descendants that left
//!    the job's group with `setsid` — repeating until a sweep finds nothing.
//!
//! One sentinel per owner, not one supervisor per run: the cost is paid once, and jobs are
//! started with posix_spawn (no fork of the owner) because nothing has to run in the child.
//! The sentinel ignores SIGINT/SIGTERM/SIGHUP/SIGQUIT and lives in its own process group, so a
//! Ctrl-C or a service stop reaches the owner, whose orderly shutdown decides what to kill.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;

/// The hidden subcommand that runs the sentinel loop.
pub const SUBCOMMAND: &str = "__sentinel";

/// The environment variable marking a job's processes with their owner's token.
pub const OWNER_VAR: &str = "WORKER_OWNER";

/// How many `/proc` sweeps at most (each catches what the previous one's victims forked).
const SWEEPS: usize = 5;

/// The owner's handle on its sentinel.
pub struct Sentinel {
    child: Child,
    stdin: ChildStdin,
}

impl Sentinel {
    /// Starts `program __sentinel TOKEN`.
    pub fn spawn(program: &Path, token: &str) -> io::Result<Sentinel> {
        let mut child = Command::new(program)
            .arg(SUBCOMMAND)
            .arg(token)
            .env_remove(OWNER_VAR)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("sentinel has no stdin"))?;
        Ok(Sentinel { child, stdin })
    }

    /// Registers a group.
    pub fn register(&mut self, pgid: i32) -> io::Result<()> {
        writeln!(self.stdin, "+{pgid}")
    }

    /// The group is gone: forget it.
    pub fn unregister(&mut self, pgid: i32) -> io::Result<()> {
        writeln!(self.stdin, "-{pgid}")
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the sentinel process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The sentinel process: track groups from stdin; on end-of-file, kill them and sweep for
/// processes carrying `token`.
pub fn sentinel_main(token: &str) -> i32 {
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe {
            let _ = signal::signal(sig, SigHandler::SigIgn);
        }
    }
    // Our parent is the owner: its group (a shell's, systemd's) is never ours to kill, even if a
    // job process joined it.
    let owner_group = nix::unistd::getpgid(Some(nix::unistd::getppid())).ok();
    let mut groups: HashSet<i32> = HashSet::new();
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let (op, num) = line.split_at(line.len().min(1));
        let Ok(pgid) = num.trim().parse::<i32>() else {
            continue;
        };
        if pgid <= 1 {
            continue;
        }
        match op {
            "+" => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        let _ = signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    if !token.is_empty() {
        let marker = format!("{OWNER_VAR}={token}/");
        for _ in 0..SWEEPS {
            if sweep(&marker, owner_group) == 0 {
                break;
            }
        }
    }
    0
}

/// Kills every process whose environment holds a variable starting with `marker`, with its group
/// (unless that is `spare`). Returns how many.
fn sweep(marker: &str, spare: Option<Pid>) -> usize {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ
            .split(|b| *b == 0)
            .any(|var| var.starts_with(marker.as_bytes()))
        {
            continue;
        }
        let pid = Pid::from_raw(pid);
        if let Ok(pgid) = nix::unistd::getpgid(Some(pid))
            && pgid.as_raw() > 1
            && Some(pgid) != spare
        {
            let _ = signal::killpg(pgid, Signal::SIGKILL);
        }
        let _ = signal::kill(pid, Signal::SIGKILL);
        killed += 1;
    }
    killed
}
