//! The SQLite store: one database file (WAL) shared by the daemon and every command on a host.
//!
//! Writes use `BEGIN IMMEDIATE`, so two processes never both read-then-write on stale data: the
//! database is the arbiter of every claim, and a write transaction that returned has been made
//! durable (`synchronous = FULL` by default).

/// The predicate of the partial index `runs_active` (unfinished runs). SQLite uses a partial
/// index only when a query's WHERE repeats its predicate, so every query on a subset of
/// unfinished runs starts with this fragment (`concat!`ed at compile time) — otherwise it scans
/// the whole table, and history can hold millions of runs.
macro_rules! active {
    () => {
        "state IN ('delayed', 'waiting', 'queued', 'running', 'retrying', 'suspended')"
    };
}

mod alerts;
mod busy;
mod changes;
mod metrics;
mod migrations;
mod nodes;
mod runs;
mod schedules;
mod steps;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{Durability, Result, StoreError, Tx};

/// How long a command waits for another process's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Tells this process's other connections, once the transaction begun after it has ended
/// (declared before the transaction, it is dropped after it), that the write lock may be free.
struct Released;

impl Released {
    fn arm() -> Released {
        busy::arm();
        Released
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        busy::released();
    }
}

/// A connection to the database.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Pending alerts written by the last committed write transaction (so the daemon wakes its
    /// outbox only when there is something to deliver).
    alerts_written: u32,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // SQLite creates the WAL and shared-memory files with the database file's mode: create the
        // database file first, private, and everything that follows is private too.
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(crate::datadir::FILE_MODE)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(open_err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                        Some(e.to_string()),
                    )));
                }
            }
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        // Waits for another writer as SQLite would, but wakes as soon as a writer of this
        // process lets go.
        conn.busy_handler(Some(busy::busy)).map_err(open_err)?;
        // The engine's turn alone uses a few dozen distinct statements: keep them all parsed.
        conn.set_prepared_statement_cache_capacity(256);
        // Plans never depend on bound values (there are no statistics to consult anyway). Without
        // this, a statement whose parameter meets a partial index or a LIMIT is thrown away and
        // re-compiled whenever the cache resets its bindings: a fifth of the engine's CPU.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(open_err)?;
        // Switching a new database to WAL needs it to itself: a process opening it at the same
        // moment as another (the daemon and a command, both first) can be told "locked" without
        // the busy handler being asked, so it waits here as it would for any other lock.
        let started = std::time::Instant::now();
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(open_err(e)),
            }
        }
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            alerts_written: 0,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let known = migrations::MIGRATIONS.len() as i64;
        let _released = Released::arm();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql) in migrations::MIGRATIONS
            .iter()
            .enumerate()
            .skip(version as usize)
        {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` in a write transaction (`BEGIN IMMEDIATE`), committing if it returns `Ok`.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let _released = Released::arm();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let wrapped = SqliteTx {
            tx,
            alerts: Cell::new(0),
        };
        let out = f(&wrapped)?;
        let alerts = wrapped.alerts.get();
        wrapped.tx.commit().map_err(StoreError::from)?;
        self.alerts_written = alerts;
        Ok(out)
    }

    /// Runs `f` in a transaction that starts as a read (`BEGIN DEFERRED`) and takes the write
    /// lock only at its first write, committing if it returns `Ok`. For work that usually finds
    /// nothing to write (a wake-up that was not for us): it then never waits for, or holds up,
    /// another writer. When the lock cannot be taken at the first write — another connection
    /// holds it, or has committed since this snapshot began — SQLite says `BUSY` at once, and
    /// `f` runs again from the start under `BEGIN IMMEDIATE`, so `f` must have no effect outside
    /// the transaction that it cannot repeat.
    pub fn write_if_needed<T>(&mut self, mut f: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        let optimistic = (|| {
            // Taken at the first write, if there is one.
            let _released = Released::arm();
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Deferred)?;
            let wrapped = SqliteTx {
                tx,
                alerts: Cell::new(0),
            };
            let out = f(&wrapped)?;
            let alerts = wrapped.alerts.get();
            wrapped.tx.commit()?;
            Ok((out, alerts))
        })();
        match optimistic {
            Ok((out, alerts)) => {
                self.alerts_written = alerts;
                Ok(out)
            }
            Err(StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                self.write(f)
            }
            Err(e) => Err(e),
        }
    }

    /// How many pending alerts the last committed write transaction added.
    pub fn alerts_written(&self) -> u32 {
        self.alerts_written
    }

    /// Runs `f` in a read transaction: one consistent snapshot.
    pub fn read<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(StoreError::from)?;
        let wrapped = SqliteTx {
            tx,
            alerts: Cell::new(0),
        };
        let out = f(&wrapped)?;
        wrapped.tx.finish().map_err(StoreError::from)?;
        Ok(out)
    }

    /// Leaves WAL checkpoints to someone else (the daemon's checkpointer thread), so that this
    /// connection's commits never wait for a checkpoint's fsync.
    pub fn disable_autocheckpoint(&self) -> Result<()> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(())
    }

    /// Copies what it can of the WAL into the database without blocking writers
    /// (`PRAGMA wal_checkpoint(PASSIVE)`). Returns (WAL frames, frames checkpointed).
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?)
    }

    /// Bytes the database occupies on disk (main file plus WAL).
    pub fn disk_bytes(&self) -> u64 {
        let main = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        main + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    }
}

/// An open transaction and the typed operations on it.
pub struct SqliteTx<'c> {
    tx: rusqlite::Transaction<'c>,
    /// Pending alerts inserted so far.
    alerts: Cell<u32>,
}

/// Milliseconds since the Unix epoch, as stored.
fn ms(t: crate::model::Time) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> Result<crate::model::Time> {
    chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}

fn opt_time(ms: Option<i64>) -> Result<Option<crate::model::Time>> {
    ms.map(time).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full scan of `runs` on the engine's path costs O(history) per turn: with a million
    /// finished runs, every start would wait for it. Each hot statement must use an index.
    #[test]
    fn hot_statements_never_scan_the_runs_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("w.db"), Durability::Normal).unwrap();
        for sql in runs::HOT_SQL {
            let mut stmt = store
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .map(|d| d.unwrap())
                .collect();
            assert!(
                !plan.iter().any(|d| d == "SCAN runs"),
                "full scan of runs for:\n{sql}\nplan: {plan:?}"
            );
        }
    }

    /// A cached statement must stay compiled across bindings. SQLite otherwise re-compiles one
    /// whose parameter could sway the plan (a `LIMIT ?` going from 1 to 2, a parameter next to a
    /// partial index) every time its bindings are cleared — which the statement cache does on
    /// every reuse.
    #[test]
    fn hot_statements_are_compiled_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("w.db"), Durability::Normal).unwrap();
        for sql in runs::HOT_SQL {
            for value in [1i64, 2, 0, 7] {
                let mut stmt = store.conn.prepare_cached(sql).unwrap();
                let values = vec![value; stmt.parameter_count()];
                let mut rows = stmt.query(rusqlite::params_from_iter(values)).unwrap();
                while rows.next().unwrap().is_some() {}
            }
            let stmt = store.conn.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "re-compiled on a new binding:\n{sql}"
            );
        }
    }
}
