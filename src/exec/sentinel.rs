//! The sentinel: a tiny helper process that kills job process groups when their owner dies.
//!
//! Every process that runs jobs (the daemon, a foreground `worker job`) starts one sentinel:
//! `worker __sentinel`, reading a pipe whose only writer is its owner. Each job's child, between
//! fork and exec, writes `+PGID` into that pipe (so the group is registered before any job code
//! runs); the owner writes `-PGID` once the group is gone. When the owner dies — however it dies,
//! `kill -9` included — the kernel closes its end, the sentinel reads end-of-file, sends SIGKILL
//! to every group still registered and exits. One sentinel per owner, not one supervisor per run:
//! the cost is paid once, not on every spawn.
//!
//! The sentinel ignores SIGINT/SIGTERM/SIGHUP/SIGQUIT and lives in its own process group, so a
//! Ctrl-C or a service stop reaches the owner, whose orderly shutdown decides what to kill.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;

/// The hidden subcommand that runs the sentinel loop.
pub const SUBCOMMAND: &str = "__sentinel";

/// The owner's handle on its sentinel.
pub struct Sentinel {
    child: Child,
    stdin: ChildStdin,
}

impl Sentinel {
    /// Starts `program __sentinel`.
    pub fn spawn(program: &Path) -> io::Result<Sentinel> {
        let mut child = Command::new(program)
            .arg(SUBCOMMAND)
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

    /// The pipe a job child writes `+PGID` into before exec.
    pub fn fd(&self) -> RawFd {
        self.stdin.as_raw_fd()
    }

    /// Registers a group (used when re-registering after a sentinel restart).
    pub fn register(&mut self, pgid: i32) -> io::Result<()> {
        writeln!(self.stdin, "+{pgid}")
    }

    /// The group is gone: forget it.
    pub fn unregister(&mut self, pgid: i32) -> io::Result<()> {
        writeln!(self.stdin, "-{pgid}")
    }

    /// Whether the sentinel process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Writes `+<our pid>\n` to `fd`. Runs in a forked child before exec, so it uses only
/// async-signal-safe calls: no allocation, no locks.
pub fn register_self(fd: RawFd) {
    let mut buf = [0u8; 24];
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    let mut pid = unsafe { libc::getpid() } as u32;
    let mut digits = [0u8; 12];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (pid % 10) as u8;
        n += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    buf[0] = b'+';
    for i in 0..n {
        buf[1 + i] = digits[n - 1 - i];
    }
    buf[1 + n] = b'\n';
    // SAFETY: buf is valid for 2 + n bytes; write(2) is async-signal-safe. A write of under
    // PIPE_BUF bytes to a pipe is atomic, so lines from concurrent children never interleave.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), n + 2);
    }
}

/// The sentinel process: track groups from stdin; on end-of-file, SIGKILL those left.
pub fn sentinel_main() -> i32 {
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
    0
}
