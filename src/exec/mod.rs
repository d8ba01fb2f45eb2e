//! Running one attempt: a child process in its own process group, its output captured with a
//! cap, a timeout, and a way to stop it.
//!
//! Architecture invariant: every job process is the leader of its own process group, registered
//! with the owner's [`sentinel`] as soon as it is spawned and marked with the owner's token in its
//! environment; whatever stops an attempt (timeout, cancel, shutdown) signals the whole group, and
//! the group is swept with SIGKILL once its leader has exited.

pub mod capture;
mod escape;
pub mod identity;
pub mod sentinel;

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::config::Exec;
use crate::config::job::{Identity, Limits};
use capture::CappedLog;
use sentinel::Sentinel;

/// How long a process group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// How long to wait for output after the group is gone (a process that escaped the group with
/// `setsid` may still hold the pipe; we stop reading rather than hang).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Environment variables that describe *our* process to a supervisor and must not leak into
/// jobs (a job must not be able to speak to systemd as us).
const SCRUBBED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "JOURNAL_STREAM",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub exec: Exec,
    pub workdir: PathBuf,
    /// Added to (and overriding) the inherited environment, in order.
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// Where the output goes.
    pub log: PathBuf,
    pub output_limit: u64,
    /// Also copy the output to our stdout (foreground runs).
    pub tee: bool,
    /// Run as another user or group (the job's `user`, `group`).
    pub identity: Option<Identity>,
    /// The job's `nice` and `limits`.
    pub limits: Limits,
}

/// Why an attempt is being stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancel,
    /// A graceful shutdown ran out of time: SIGTERM, then SIGKILL after the grace.
    Shutdown,
    /// Stop now (a second shutdown signal): SIGKILL at once.
    Kill,
}

/// How the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// It never started (missing program, bad workdir…).
    SpawnFailed(String),
}

/// The end of an attempt.
#[derive(Debug, Clone)]
pub struct Finished {
    pub exit: Exit,
    pub timed_out: bool,
    /// Set when it was stopped from outside.
    pub stopped: Option<StopReason>,
    pub output_bytes: u64,
    pub duration: Duration,
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        self.exit == Exit::Code(0) && !self.timed_out && self.stopped.is_none()
    }

    /// A one-line description of a failure.
    pub fn describe(&self, timeout: Option<Duration>) -> String {
        if self.timed_out {
            let t = timeout
                .map(crate::units::format_duration_spec)
                .unwrap_or_default();
            return format!("timed out after {t}");
        }
        self.exit.describe()
    }
}

impl Exit {
    /// `exit code 3`, `killed by signal 9 (SIGKILL)`, or why it did not start.
    pub fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(s) => format!("killed by signal {s} ({})", signal_name(*s)),
            Exit::SpawnFailed(e) => e.clone(),
        }
    }
}

/// `SIGKILL` for 9, etc.
pub fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("unknown signal")
}

/// Starts attempts, one sentinel for all of them.
pub struct Executor {
    /// The binary to run as sentinel (`None`: no sentinel, for in-process unit tests).
    sentinel_program: Option<PathBuf>,
    sentinel: Mutex<Option<Sentinel>>,
    /// Process groups currently alive, to re-register with a restarted sentinel.
    live: Mutex<HashSet<i32>>,
    /// Unique to this executor: in every job's environment, so the sentinel can find them.
    owner_token: String,
    /// Attempts started, to give each its own marker (`WORKER_OWNER=TOKEN/N`).
    started: std::sync::atomic::AtomicU64,
    /// Set when we are the subreaper of our jobs' orphans (see [`escape`]): then what escapes
    /// an attempt's group is killed when the attempt ends.
    subreaper: Option<escape::Children>,
}

impl Executor {
    /// `sentinel_program` is our own binary (`/proc/self/exe`). With one, the executor owns its
    /// jobs for real: it also becomes the subreaper of their orphans, to kill what escapes an
    /// attempt's group. (Without — in-process tests — it leaves the process's children alone.)
    pub fn new(sentinel_program: Option<PathBuf>) -> Executor {
        let subreaper = sentinel_program
            .as_ref()
            .and_then(|_| escape::become_subreaper());
        Executor {
            sentinel_program,
            sentinel: Mutex::new(None),
            live: Mutex::new(HashSet::new()),
            owner_token: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            started: std::sync::atomic::AtomicU64::new(0),
            subreaper,
        }
    }

    /// Runs one attempt to its end. `stop` asks it to stop (group SIGTERM, SIGKILL after
    /// [`KILL_GRACE`]).
    pub async fn run(
        &self,
        spec: &Spec,
        mut stop: watch::Receiver<Option<StopReason>>,
    ) -> Finished {
        let started = Instant::now();
        let spawned = self.spawn(spec);
        let (mut child, pgid, reader, marker) = match spawned {
            Ok(x) => x,
            Err(e) => {
                return Finished {
                    exit: Exit::SpawnFailed(e),
                    timed_out: false,
                    stopped: None,
                    output_bytes: 0,
                    duration: started.elapsed(),
                };
            }
        };
        let mut output = Output::new(reader, spec.log.clone(), spec.output_limit, spec.tee);

        let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86400);
        let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut timed_out = false;
        let mut stopped: Option<StopReason> = None;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut stop_open = true;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                read = output.read(), if output.open() => output.consume(read).await,
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && kill_at.is_none() => {
                    timed_out = true;
                    let _ = killpg(pgid, Signal::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
                }
                changed = stop.changed(), if stop_open => {
                    match changed {
                        Ok(()) => {
                            match *stop.borrow_and_update() {
                                // Even after a graceful stop began: no more grace.
                                Some(StopReason::Kill) => {
                                    let _ = killpg(pgid, Signal::SIGKILL);
                                    stopped.get_or_insert(StopReason::Kill);
                                }
                                Some(reason) if stopped.is_none() => {
                                    stopped = Some(reason);
                                    let _ = killpg(pgid, Signal::SIGTERM);
                                    if kill_at.is_none() {
                                        kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
                                    }
                                }
                                _ => {}
                            }
                        }
                        Err(_) => stop_open = false,
                    }
                }
                _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    kill_at = None;
                    // Keep waiting for the exit; nothing else to escalate to.
                    kill_at.get_or_insert(far);
                }
            }
        };
        // The leader is gone: sweep whatever it left in its group, then what left the group.
        let _ = killpg(pgid, Signal::SIGKILL);
        self.forget(pgid.as_raw());
        self.kill_escapees(&marker).await;

        let _ = tokio::time::timeout(OUTPUT_DRAIN, output.drain()).await;
        let output_bytes = output.capped.total;
        let exit = match status {
            Ok(st) => match (st.code(), st.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(s)) => Exit::Signal(s),
                (None, None) => Exit::SpawnFailed("unknown exit status".into()),
            },
            Err(e) => Exit::SpawnFailed(format!("waiting for the process failed: {e}")),
        };
        Finished {
            exit,
            timed_out,
            stopped,
            output_bytes,
            duration: started.elapsed(),
        }
    }

    /// Starts the process: own group, merged stdout/stderr on a pipe, registered with the sentinel.
    /// Returns it with its attempt's marker (`WORKER_OWNER=TOKEN/N`).
    #[allow(clippy::type_complexity)]
    fn spawn(&self, spec: &Spec) -> Result<(tokio::process::Child, Pid, OwnedFd, Vec<u8>), String> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        // `user`, `group`, `nice`, `limits`: checked here, applied in the child (`None` for jobs
        // without them).
        let setup = identity::ChildSetup::plan(spec.identity.as_ref(), &spec.limits)?;
        // Our end non-blocking (for the event loop), the child's end blocking, as programs expect.
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| format!("cannot create a pipe: {e}"))?;
        fcntl(&write_end, FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(|e| format!("cannot create a pipe: {e}"))?;
        let write_clone = write_end
            .try_clone()
            .map_err(|e| format!("cannot create a pipe: {e}"))?;
        let (program, mut cmd) = match &spec.exec {
            Exec::Shell(line) => {
                let mut c = tokio::process::Command::new("/bin/sh");
                c.arg("-c").arg(line);
                ("/bin/sh", c)
            }
            Exec::Argv(argv) => {
                let mut c = tokio::process::Command::new(&argv[0]);
                c.args(&argv[1..]);
                (argv[0].as_str(), c)
            }
        };
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(write_clone))
            .process_group(0)
            .kill_on_drop(false);

        // Marks every process of this attempt (and, unless they clear their environment, its
        // descendants) as ours: for the sentinel's last sweep (by the token) and for the sweep of
        // escapees when the attempt ends (by the whole value).
        let n = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mark = format!("{}/{n}", self.owner_token);
        cmd.env(sentinel::OWNER_VAR, &mark);
        let marker = format!("{}={mark}", sentinel::OWNER_VAR).into_bytes();

        // No `pre_exec` (unless the job has `user`, `group`, `nice` or `limits`): std then spawns
        // with posix_spawn (vfork semantics) instead of fork, which spares copying the daemon's
        // page tables on every start. The group is registered with the sentinel right after, from
        // here; a death of ours in between is covered by the sentinel's sweep for the owner token.
        if let Some(setup) = setup {
            setup.install(&mut cmd);
        }
        let mut sentinel = self.sentinel.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure_sentinel(&mut sentinel);
        let child = cmd.spawn().map_err(|e| {
            if !spec.workdir.is_dir() {
                format!(
                    "cannot start: workdir {} does not exist",
                    spec.workdir.display()
                )
            } else {
                format!("cannot start `{program}`: {e}")
            }
        })?;
        let pid = child.id().ok_or("the process vanished at start")? as i32;
        if let Some(s) = sentinel.as_mut() {
            let _ = s.register(pid);
        }
        // Tracked before the spawn lock is released: a sweep never mistakes it for an escapee.
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid);
        drop(sentinel);
        drop(cmd); // closes our copies of the pipe's write end
        Ok((child, Pid::from_raw(pid), read_end, marker))
    }

    /// Starts the sentinel if there is none or it died (re-registering live groups).
    fn ensure_sentinel(&self, slot: &mut Option<Sentinel>) {
        let Some(program) = &self.sentinel_program else {
            return;
        };
        if slot.as_mut().is_some_and(Sentinel::alive) {
            return;
        }
        match Sentinel::spawn(program, &self.owner_token) {
            Ok(mut s) => {
                if slot.is_some() {
                    tracing::warn!("the sentinel process died; started a new one");
                }
                for &pgid in self.live.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                    let _ = s.register(pgid);
                }
                *slot = Some(s);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the sentinel process: job processes will not be killed if this process dies");
                *slot = None;
            }
        }
    }

    /// Kills what escaped the group of the attempt marked `marker` (see [`escape`]), pass after
    /// pass while a pass finds something (killing one hands us its own escaped children).
    async fn kill_escapees(&self, marker: &[u8]) {
        if self.subreaper.is_none() {
            return;
        }
        for _ in 0..5 {
            if self.sweep(Some(marker)) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reaps orphans of our jobs that ended by themselves (housekeeping).
    pub fn reap_orphans(&self) {
        self.sweep(None);
    }

    /// One [`escape::sweep`], with spawning held off.
    fn sweep(&self, marker: Option<&[u8]>) -> usize {
        let Some(children) = &self.subreaper else {
            return 0;
        };
        let sentinel = self.sentinel.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let sentinel_pid = sentinel.as_ref().map(Sentinel::pid);
        escape::sweep(
            children,
            |pid| live.contains(&pid) || Some(pid) == sentinel_pid,
            marker,
        )
    }

    fn forget(&self, pgid: i32) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pgid);
        if let Some(s) = self
            .sentinel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            let _ = s.unregister(pgid);
        }
    }
}

/// Read buffer for job output: enough for full pipe writes, small enough to stay off the
/// allocator's slow path on every attempt.
const OUTPUT_BUF: usize = 16 * 1024;

/// The child's output pipe and where it goes: the capped log, and our stdout when `tee`.
/// Read from the attempt's own loop — no extra task per attempt.
struct Output {
    reader: Option<tokio::net::unix::pipe::Receiver>,
    capped: CappedLog,
    stdout: Option<tokio::io::Stdout>,
    buf: Vec<u8>,
    log_failed: bool,
}

impl Output {
    fn new(read_end: OwnedFd, log: PathBuf, limit: u64, tee: bool) -> Output {
        // Known to be a non-blocking pipe's read end (made so in `spawn`).
        let reader = match tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(read_end) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "cannot read job output");
                None
            }
        };
        Output {
            reader,
            capped: CappedLog::new(log, limit),
            stdout: tee.then(tokio::io::stdout),
            buf: vec![0u8; OUTPUT_BUF],
            log_failed: false,
        }
    }

    /// Whether the pipe may still deliver output.
    fn open(&self) -> bool {
        self.reader.is_some()
    }

    /// Waits for output (cancel-safe: nothing is consumed until it returns).
    async fn read(&mut self) -> std::io::Result<usize> {
        match &mut self.reader {
            Some(r) => r.read(&mut self.buf).await,
            None => std::future::pending().await,
        }
    }

    /// Stores what `read` returned; end-of-file (or an error) closes the pipe.
    async fn consume(&mut self, read: std::io::Result<usize>) {
        let n = match read {
            Ok(0) | Err(_) => {
                self.reader = None;
                return;
            }
            Ok(n) => n,
        };
        if let Err(e) = self.capped.write(&self.buf[..n])
            && !self.log_failed
        {
            tracing::error!(error = %e, "cannot write captured output");
            self.log_failed = true;
        }
        if let Some(out) = &mut self.stdout {
            if out.write_all(&self.buf[..n]).await.is_err() {
                self.stdout = None;
            } else {
                let _ = out.flush().await;
            }
        }
    }

    /// Reads until end-of-file.
    async fn drain(&mut self) {
        while self.open() {
            let r = self.read().await;
            self.consume(r).await;
        }
    }
}

/// Path of our own executable, for the sentinel (works even if the file was replaced on disk).
pub fn self_exe() -> PathBuf {
    Path::new("/proc/self/exe").to_path_buf()
}

#[cfg(test)]
mod tests;
