//! The data directory: where the database, captured output, the daemon lock and leases live, and
//! the file locks that tell whether a process that owns runs is still alive.
//!
//! Every process that executes runs (the daemon, or a foreground `worker job`) holds a *lease*: an
//! exclusive `flock` on a file for as long as it lives. The kernel drops the lock when the process
//! dies, however it dies, so "is the owner of this running run still alive?" is answered by trying
//! to take its lock: no pid files, no pid reuse.
//!
//! Architecture invariant: a run is recovered only when its owner is *provably* dead — see
//! [`decide`]. A lock we cannot take means alive, whoever holds it; a free lock means dead; a
//! lease file that vanished means dead only if the process named in the lease id is gone too.
//! The daemon's own lease is special: its runs are its own, so only a daemon starting up (holding
//! the lock of the data directory) recovers the runs of the daemon that lived before it.
//!
//! The directory is private: created `0700`, its files `0600` — captured output can hold secrets.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::store::Location;
use std::time::{Duration, Instant};

/// The lease id of the daemon (one per data directory, guarded by `daemon.lock`).
pub const DAEMON_LEASE: &str = "daemon";

/// Mode of the data directory and its subdirectories.
const DIR_MODE: u32 = 0o700;
/// Mode of every file worker creates in the data directory.
pub const FILE_MODE: u32 = 0o600;

/// How long a starting daemon waits for a lock that is held although the daemon that took it is
/// dead: a job spawned in the instant the daemon died keeps a copy of the lock until it execs, and
/// a command probing the lock holds it for microseconds.
const STALE_LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    /// `root`, absolute (computed once: jobs get it as `WORKER_DATA_DIR`).
    root_absolute: String,
    /// A PostgreSQL store's URL; `None`: SQLite in `root`.
    database: Option<String>,
}

impl DataDir {
    /// Opens (creating if needed, private to the user) the data directory.
    pub fn open(root: &Path) -> io::Result<DataDir> {
        let mut b = DirBuilder::new();
        b.recursive(true).mode(DIR_MODE);
        b.create(root)?;
        b.create(root.join("logs"))?;
        b.create(root.join("leases"))?;
        b.create(root.join("outputs"))?;
        let root_absolute = std::path::absolute(root)
            .unwrap_or_else(|_| root.to_path_buf())
            .display()
            .to_string();
        Ok(DataDir {
            root: root.to_path_buf(),
            root_absolute,
            database: None,
        })
    }

    /// Keeps the store in PostgreSQL at `url` instead of SQLite in the directory (`None`: SQLite).
    pub fn with_database(mut self, url: Option<String>) -> DataDir {
        self.database = url;
        self
    }

    /// Where the store is: PostgreSQL if one was given, else `worker.db` here.
    pub fn store_location(&self) -> Location {
        match &self.database {
            Some(url) => Location::Postgres(url.clone()),
            None => Location::Sqlite(self.db_path()),
        }
    }

    /// Whether the store is shared with other daemons (PostgreSQL).
    pub fn shared_store(&self) -> bool {
        self.database.is_some()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn root_absolute(&self) -> &str {
        &self.root_absolute
    }

    /// What in the data directory others than its owner can read or enter, for a warning: the
    /// directory and its subdirectories (their mode, `(path, mode)`) and the database file.
    pub fn loose_permissions(&self) -> Vec<(PathBuf, u32)> {
        let mut out = Vec::new();
        for p in [
            self.root.clone(),
            self.logs_dir(),
            self.root.join("leases"),
            self.db_path(),
        ] {
            if let Ok(m) = fs::metadata(&p) {
                let mode = m.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    out.push((p, mode));
                }
            }
        }
        out
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("worker.db")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Captured output of one attempt (`seq` counts every attempt row of the run, from 1).
    pub fn log_path(&self, run: i64, seq: u32) -> PathBuf {
        self.root.join("logs").join(format!("{run}.{seq}.log"))
    }

    /// Captured output of a workflow step's `attempt` (its executions in the run, from 1).
    pub fn step_log_path(&self, run: i64, step: &str, attempt: u32) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{run}.step.{step}.{attempt}.log"))
    }

    /// The `$WORKER_OUTPUT` file of a workflow step's execution (read, then removed, when it
    /// ends).
    pub fn step_output_path(&self, run: i64, step: &str, attempt: u32) -> PathBuf {
        self.root
            .join("outputs")
            .join(format!("{run}.{step}.{attempt}"))
    }

    pub fn daemon_lock_path(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// The daemon's wake-up socket: other commands send a datagram here after a write.
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("daemon.sock")
    }

    fn lease_path(&self, id: &str) -> PathBuf {
        if id == DAEMON_LEASE {
            self.daemon_lock_path()
        } else {
            self.root.join("leases").join(format!("{id}.lock"))
        }
    }

    /// Whether a foreground process of this host that took a lease here has died without
    /// giving it back (its runs are to be recovered).
    pub fn dead_foreground_lease(&self) -> bool {
        let Ok(entries) = fs::read_dir(self.root.join("leases")) else {
            return false;
        };
        entries.flatten().any(|e| {
            let name = e.file_name();
            name.to_str()
                .and_then(|n| n.strip_suffix(".lock"))
                .is_some_and(|id| !self.lease_alive(id))
        })
    }

    /// Whether lease `id` has its file here (a foreground process of this host took it).
    pub fn has_lease(&self, id: &str) -> bool {
        self.lease_path(id).exists()
    }

    /// Whether the process holding lease `id` is alive (see [`decide`]). The daemon's lease is
    /// alive while a daemon runs on this directory.
    pub fn lease_alive(&self, id: &str) -> bool {
        matches!(self.probe(id), Owner::Alive)
    }

    /// Looks at the owner of lease `id`. A dead owner's lock stays held by the returned
    /// [`Owner::Dead`] until it is dropped: recover its runs while holding it, so that nobody can
    /// take the lease meanwhile (a daemon starting on this directory waits for it).
    pub fn probe(&self, id: &str) -> Owner {
        let path = self.lease_path(id);
        let (probe, file) = match OpenOptions::new().read(true).write(true).open(&path) {
            Err(_) => (LockProbe::Missing, None),
            Ok(file) => match file.try_lock() {
                Ok(()) => (LockProbe::Free, Some(file)),
                Err(TryLockError::WouldBlock) => (LockProbe::Held, None),
                // An error other than "held" (a filesystem without locks): assume alive, the
                // safe side — a run is never recovered from a live owner.
                Err(TryLockError::Error(_)) => (LockProbe::Held, None),
            },
        };
        let process = (probe == LockProbe::Missing)
            .then(|| ProcessId::from_lease_id(id))
            .flatten()
            .map(|p| p.is_running());
        if decide(probe, process) {
            return Owner::Alive;
        }
        Owner::Dead(DeadOwner {
            _lock: file,
            // Leave daemon.lock in place (it is reused); a dead foreground lease is removed.
            remove: (id != DAEMON_LEASE).then_some(path),
        })
    }
}

/// What trying to take a lease's lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockProbe {
    /// Someone holds it.
    Held,
    /// We took it.
    Free,
    /// The lease file does not exist.
    Missing,
}

/// Whether an owner is alive, from its lock and — only when its lease file is missing — whether
/// the process its lease id names still runs (`None`: the id names no process).
///
/// Only a free lock or a vanished process proves death. A held lock proves life, whoever holds
/// it: a job spawned at the instant its owner died keeps a copy of the lock until it execs, and
/// recovering then could run the same run twice at once.
pub fn decide(lock: LockProbe, process_running: Option<bool>) -> bool {
    match lock {
        LockProbe::Held => true,
        LockProbe::Free => false,
        LockProbe::Missing => process_running.unwrap_or(false),
    }
}

/// What [`DataDir::probe`] found.
#[derive(Debug)]
pub enum Owner {
    Alive,
    /// Provably dead; its lock is held by us until this is dropped.
    Dead(DeadOwner),
}

/// The lock of a dead owner, held while its runs are recovered.
#[derive(Debug)]
pub struct DeadOwner {
    _lock: Option<File>,
    remove: Option<PathBuf>,
}

impl Drop for DeadOwner {
    fn drop(&mut self) {
        if let Some(p) = &self.remove {
            let _ = fs::remove_file(p);
        }
    }
}

/// A process, named so that pid reuse cannot fool us: its pid and its start time (clock ticks
/// since boot, field 22 of `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    pub start: u64,
}

impl ProcessId {
    /// This process.
    pub fn current() -> Option<ProcessId> {
        let pid = std::process::id();
        Some(ProcessId {
            pid,
            start: start_time(pid)?,
        })
    }

    /// The process a foreground lease id (`job-PID-START-…`) names; `None` for other ids.
    fn from_lease_id(id: &str) -> Option<ProcessId> {
        let mut parts = id.strip_prefix("job-")?.split('-');
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        // Older ids (`job-PID-RANDOM`) had no start time: they name no process.
        parts.next()?;
        Some(ProcessId { pid, start })
    }

    /// Whether this very process still runs (a zombie counts as gone).
    pub fn is_running(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// The start time of a live (non-zombie) process, from `/proc/PID/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last `)`.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X") {
        return None;
    }
    // Field 3 was `state`; the start time is field 22.
    fields.nth(18)?.parse().ok()
}

/// A held lease: the lock is released when this is dropped or the process dies.
#[derive(Debug)]
pub struct Lease {
    pub id: String,
    path: PathBuf,
    _file: File,
    remove_on_drop: bool,
}

/// Why the daemon lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another worker daemon (pid {pid}) is already running on data directory {dir}")]
    Held { pid: String, dir: String },
    #[error(
        "the daemon that last ran on data directory {dir} (pid {pid}) is gone, but its lock \
         {path} is still held{holders}: stop what holds it (`fuser -v {path}`), then start again"
    )]
    Stale {
        pid: String,
        dir: String,
        path: String,
        holders: String,
    },
    #[error("cannot lock {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// What `daemon.lock` says of the daemon that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonInfo {
    pub pid: u32,
    pub started: String,
    pub version: String,
    /// Its start time (absent in files written by older versions).
    pub start_ticks: Option<u64>,
}

impl DaemonInfo {
    fn parse(text: &str) -> Option<DaemonInfo> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let started = lines.next().unwrap_or("").to_string();
        let version = lines.next().unwrap_or("").to_string();
        let start_ticks = lines.next().and_then(|l| l.trim().parse().ok());
        Some(DaemonInfo {
            pid,
            started,
            version,
            start_ticks,
        })
    }

    /// Whether the daemon this describes is still running.
    fn is_running(&self) -> bool {
        match self.start_ticks {
            Some(start) => ProcessId {
                pid: self.pid,
                start,
            }
            .is_running(),
            None => start_time(self.pid).is_some(),
        }
    }
}

impl Lease {
    /// Takes the daemon lock of `dir`, writing who we are into it; fails if another daemon holds
    /// it. A lock held although the daemon recorded in it is dead (a job it spawned at the instant
    /// it died, not yet exec'd; a command probing the lock) is waited for, up to
    /// [`STALE_LOCK_PATIENCE`]: a restart succeeds whenever the previous daemon is dead.
    pub fn daemon(dir: &DataDir) -> Result<Lease, LockError> {
        Self::daemon_within(dir, STALE_LOCK_PATIENCE)
    }

    fn daemon_within(dir: &DataDir, patience: Duration) -> Result<Lease, LockError> {
        let path = dir.daemon_lock_path();
        let io_err = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(io_err)?;
        let give_up = Instant::now() + patience;
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
            let mut text = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut text);
            let info = DaemonInfo::parse(&text);
            let pid = info
                .as_ref()
                .map_or_else(|| "?".to_string(), |i| i.pid.to_string());
            if info.as_ref().is_some_and(DaemonInfo::is_running) {
                return Err(LockError::Held {
                    pid,
                    dir: dir.root().display().to_string(),
                });
            }
            if Instant::now() >= give_up {
                let holders = lock_holders(&path);
                return Err(LockError::Stale {
                    pid,
                    dir: dir.root().display().to_string(),
                    path: path.display().to_string(),
                    holders: if holders.is_empty() {
                        String::new()
                    } else {
                        format!(" by pid {}", holders.join(", "))
                    },
                });
            }
            if !said {
                tracing::info!(previous_pid = %pid, "the previous daemon is gone but its lock is still held: waiting for it to be released");
                said = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        let started = chrono::Utc::now().to_rfc3339();
        let ticks = ProcessId::current().map(|p| p.start).unwrap_or(0);
        writeln!(
            file,
            "{}\n{started}\n{}\n{ticks}",
            std::process::id(),
            crate::VERSION
        )
        .map_err(io_err)?;
        Ok(Lease {
            id: DAEMON_LEASE.to_string(),
            path,
            _file: file,
            remove_on_drop: false,
        })
    }

    /// Takes a fresh lease for a foreground process. Its id names this process (pid and start
    /// time), so that its liveness can be told even if the lease file were deleted.
    pub fn foreground(dir: &DataDir) -> io::Result<Lease> {
        let me = ProcessId::current().ok_or_else(|| {
            io::Error::other("cannot read this process's start time from /proc/self/stat")
        })?;
        let id = format!("job-{}-{}-{:04x}", me.pid, me.start, fastrand::u16(..));
        let path = dir.lease_path(&id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&path)?;
        file.lock()?;
        Ok(Lease {
            id,
            path,
            _file: file,
            remove_on_drop: true,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The processes with `path` open (for an error message).
fn lock_holders(path: &Path) -> Vec<String> {
    let Ok(target) = fs::canonicalize(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l == target))
        {
            out.push(pid.to_string());
        }
    }
    out
}

/// What `daemon.lock` says about the daemon holding it, if one runs.
pub fn running_daemon(dir: &DataDir) -> Option<DaemonInfo> {
    let text = fs::read_to_string(dir.daemon_lock_path()).ok()?;
    let info = DaemonInfo::parse(&text)?;
    (dir.lease_alive(DAEMON_LEASE) && info.is_running()).then_some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probes until the owner shows dead. Other tests of this process spawn children, and a child
    /// holds copies of every descriptor (ours included, locks and all) between its fork and exec:
    /// for that instant a released lock still looks held — alive, the safe side.
    fn dead(d: &DataDir, id: &str) -> Owner {
        for _ in 0..200 {
            if let o @ Owner::Dead(_) = d.probe(id) {
                return o;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Owner::Alive
    }

    #[test]
    fn daemon_lock_is_exclusive_and_released_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::open(t.path()).unwrap();
        assert!(!d.lease_alive(DAEMON_LEASE));
        let lease = Lease::daemon(&d).unwrap();
        assert!(d.lease_alive(DAEMON_LEASE));
        let err = Lease::daemon(&d).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert_eq!(running_daemon(&d).unwrap().pid, std::process::id());
        drop(lease);
        assert!(matches!(dead(&d, DAEMON_LEASE), Owner::Dead(_)));
        // (Polled: a sibling test's child may hold a copy of the lock for an instant.)
        assert!((0..200).any(|_| {
            running_daemon(&d).is_none() || {
                std::thread::sleep(Duration::from_millis(10));
                false
            }
        }));
    }

    #[test]
    fn foreground_leases() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::open(t.path()).unwrap();
        let lease = Lease::foreground(&d).unwrap();
        assert!(d.lease_alive(&lease.id));
        let id = lease.id.clone();
        drop(lease);
        assert!(
            !d.lease_path(&id).exists(),
            "a lease given up leaves no file"
        );
        // Its id names this process, which still runs: it counts as alive until it exits.
        assert!(d.lease_alive(&id));
        assert!(!d.lease_alive("job-does-not-exist"));
        assert!(
            !d.lease_alive("job-1-abcdef12"),
            "an older id with no start time"
        );
    }

    /// The whole decision: only a free lock or a vanished process proves an owner dead.
    #[test]
    fn owner_liveness_decision() {
        use LockProbe::*;
        assert!(decide(Held, None), "a held lock is a live owner");
        assert!(decide(Held, Some(false)), "whoever holds the lock");
        assert!(!decide(Free, None), "a free lock is a dead owner");
        assert!(!decide(Free, Some(true)), "the lock decides when it exists");
        assert!(
            decide(Missing, Some(true)),
            "a deleted lease file of a live process"
        );
        assert!(!decide(Missing, Some(false)));
        assert!(!decide(Missing, None), "a deleted lease naming no process");
    }

    /// A foreground owner whose lease file was deleted under it stays alive while its process
    /// runs, and is dead once the process is gone (pid reuse cannot fool the start time).
    #[test]
    fn a_deleted_lease_file_is_judged_by_its_process() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::open(t.path()).unwrap();
        let lease = Lease::foreground(&d).unwrap();
        fs::remove_file(d.lease_path(&lease.id)).unwrap();
        assert!(d.lease_alive(&lease.id), "our own process runs");

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap();
        let id = format!("job-{pid}-{start}-abcd");
        assert!(d.lease_alive(&id), "no file, live process");
        assert!(
            !d.lease_alive(&format!("job-{pid}-{}-abcd", start + 1)),
            "another process with that pid"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            matches!(dead(&d, &id), Owner::Dead(_)),
            "the process is gone"
        );
    }

    /// daemon.lock naming the dead `pid`, locked through another open file description: what a
    /// job spawned at the instant its daemon died holds until it execs.
    fn held_for_dead_daemon(d: &DataDir, pid: u32) -> File {
        let info = format!("{pid}\n2026-01-01T00:00:00Z\n0.1.0\n1\n");
        fs::write(d.daemon_lock_path(), info).unwrap();
        let f = File::open(d.daemon_lock_path()).unwrap();
        f.lock().unwrap();
        f
    }

    /// A lock held by someone else (here another open file description in this process) while the
    /// daemon recorded in daemon.lock is dead: the next daemon waits for it and starts.
    #[test]
    fn a_restart_waits_out_a_lock_left_held_by_a_dead_daemon() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::open(t.path()).unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = gone.id();
        gone.wait().unwrap();
        let straggler = held_for_dead_daemon(&d, dead_pid);
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(straggler);
        });
        let lease = Lease::daemon(&d).expect("the restart succeeds");
        release.join().unwrap();
        assert_eq!(running_daemon(&d).unwrap().pid, std::process::id());
        drop(lease);

        // Held for longer than the patience: a clear error naming the dead daemon.
        let _straggler = held_for_dead_daemon(&d, dead_pid);
        let err = Lease::daemon_within(&d, Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("(pid {dead_pid}) is gone")), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "names the holder: {err}"
        );
    }

    /// A dead owner's lock is held while its runs are recovered: nobody takes the lease meanwhile.
    #[test]
    fn a_dead_owner_stays_locked_while_recovered() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::open(t.path()).unwrap();
        drop(Lease::daemon(&d).unwrap());
        let Owner::Dead(guard) = dead(&d, DAEMON_LEASE) else {
            panic!("no daemon ran here");
        };
        assert!(d.lease_alive(DAEMON_LEASE), "locked by the recovery");
        assert!(Lease::daemon_within(&d, Duration::ZERO).is_err());
        drop(guard);
        // daemon.lock names this (live) test process: name a dead one instead, so that a copy of
        // the lock held by a sibling test's child between fork and exec is waited out.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = gone.id();
        gone.wait().unwrap();
        fs::write(d.daemon_lock_path(), format!("{dead_pid}\n\n\n1\n")).unwrap();
        assert!(Lease::daemon(&d).is_ok());
    }

    #[test]
    fn the_data_directory_is_private() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("data");
        let d = DataDir::open(&root).unwrap();
        for p in [root.clone(), d.logs_dir(), root.join("leases")] {
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o700,
                "{}",
                p.display()
            );
        }
        let _lease = Lease::daemon(&d).unwrap();
        drop(
            crate::store::Store::open_at(&d.store_location(), crate::store::Durability::Full)
                .unwrap(),
        );
        for p in [d.db_path(), d.daemon_lock_path()] {
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                p.display()
            );
        }
        assert!(d.loose_permissions().is_empty());
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(d.loose_permissions(), vec![(root.clone(), 0o755)]);
    }
}
