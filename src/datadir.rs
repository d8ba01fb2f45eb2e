//! The data directory: where the database, captured output, the daemon lock and leases live, and
//! the file locks that tell whether a process that owns runs is still alive.
//!
//! Every process that executes runs (the daemon, or a foreground `worker job`) holds a *lease*: an
//! exclusive `flock` on a file for as long as it lives. The kernel drops the lock when the process
//! dies, however it dies, so "is the owner of this running run still alive?" is answered by trying
//! to take its lock: no pid files, no pid reuse.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lease id of the daemon (one per data directory, guarded by `daemon.lock`).
pub const DAEMON_LEASE: &str = "daemon";

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    /// `root`, absolute (computed once: jobs get it as `WORKER_DATA_DIR`).
    root_absolute: String,
}

impl DataDir {
    /// Opens (creating if needed) the data directory.
    pub fn open(root: &Path) -> io::Result<DataDir> {
        fs::create_dir_all(root.join("logs"))?;
        fs::create_dir_all(root.join("leases"))?;
        let root_absolute = std::path::absolute(root)
            .unwrap_or_else(|_| root.to_path_buf())
            .display()
            .to_string();
        Ok(DataDir {
            root: root.to_path_buf(),
            root_absolute,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn root_absolute(&self) -> &str {
        &self.root_absolute
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

    /// Whether the process holding lease `id` is alive. A lease whose file is missing or whose
    /// lock can be taken belongs to a dead process.
    pub fn lease_alive(&self, id: &str) -> bool {
        let path = self.lease_path(id);
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                // We took it: the owner is gone. Leave daemon.lock in place; remove other leases.
                if id != DAEMON_LEASE {
                    let _ = fs::remove_file(&path);
                }
                false
            }
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(_)) => true,
        }
    }
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
    #[error("cannot lock {path}: {source}")]
    Io { path: String, source: io::Error },
}

impl Lease {
    /// Takes the daemon lock of `dir`, writing our pid into it; fails if another daemon holds it.
    pub fn daemon(dir: &DataDir) -> Result<Lease, LockError> {
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
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.lines().next().unwrap_or("?").trim().to_string();
                return Err(LockError::Held {
                    pid,
                    dir: dir.root().display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        let started = chrono::Utc::now().to_rfc3339();
        writeln!(
            file,
            "{}\n{started}\n{}",
            std::process::id(),
            env!("CARGO_PKG_VERSION")
        )
        .map_err(io_err)?;
        Ok(Lease {
            id: DAEMON_LEASE.to_string(),
            path,
            _file: file,
            remove_on_drop: false,
        })
    }

    /// Takes a fresh lease for a foreground process.
    pub fn foreground(dir: &DataDir) -> io::Result<Lease> {
        let id = format!("job-{}-{:08x}", std::process::id(), fastrand::u32(..));
        let path = dir.lease_path(&id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
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

/// What `daemon.lock` says about the daemon holding it, if one does: (pid, started, version).
pub fn running_daemon(dir: &DataDir) -> Option<(u32, String, String)> {
    if !dir.lease_alive(DAEMON_LEASE) {
        return None;
    }
    let text = fs::read_to_string(dir.daemon_lock_path()).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let started = lines.next().unwrap_or("").to_string();
    let version = lines.next().unwrap_or("").to_string();
    Some((pid, started, version))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(running_daemon(&d).unwrap().0, std::process::id());
        drop(lease);
        assert!(!d.lease_alive(DAEMON_LEASE));
        assert!(running_daemon(&d).is_none());
    }

    #[test]
    fn foreground_leases() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::open(t.path()).unwrap();
        let lease = Lease::foreground(&d).unwrap();
        assert!(d.lease_alive(&lease.id));
        let id = lease.id.clone();
        drop(lease);
        assert!(!d.lease_alive(&id));
        assert!(!d.lease_alive("job-does-not-exist"));
    }
}
