//! The store: where runs, attempts, steps, schedules' fires and alerts are kept — an SQLite
//! database in the data directory (the default) or a PostgreSQL database shared by several
//! daemons.
//!
//! Architecture invariant: this is the only module that speaks SQL. Everything else goes through
//! [`Store::write`] / [`Store::read`] and the typed operations of [`Tx`] (the traits
//! [`RunOps`], [`StepOps`], [`AlertOps`], [`ScheduleOps`], [`ChangeOps`], [`MetricOps`], which
//! each engine implements in its own dialect); the rules that decide *which* operations to
//! perform live in `queue`, `schedule`, `alert` and `workflow`, and never know which engine they
//! talk to.
//!
//! Write transactions are serialised: two writers never both read-then-write on stale data, so
//! the database is the arbiter of every claim, and a write transaction that returned has been made
//! durable.

mod alerts;
mod changes;
mod metrics;
mod nodes;
mod postgres;
#[cfg(test)]
mod run_tests;
mod runs;
mod schedules;
mod sqlite;
mod steps;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use alerts::{AlertOps, AlertRow, DueDeadline, NewAlert, Window};
pub use changes::{Change, ChangeOps};
pub use metrics::{Count, Hist, MetricCounts, MetricOps};
pub use nodes::{Beat, Join, NodeId, NodeOps, NodeRow, node_owner, owner_node};
pub use runs::{
    JobStats, NewRun, Purged, QueuedCandidate, RunBrief, RunFilter, RunOps, StatusCounts,
    paged_candidates,
};
pub use schedules::{FireRecord, ScheduleOps};
pub use steps::{StepEnd, StepOps};

use postgres::PgStore;
use sqlite::SqliteStore;

/// Every operation of a store transaction, whichever the engine.
pub trait Ops: RunOps + StepOps + AlertOps + ScheduleOps + ChangeOps + MetricOps + NodeOps {}

impl<T: RunOps + StepOps + AlertOps + ScheduleOps + ChangeOps + MetricOps + NodeOps> Ops for T {}

/// Wake-ups from other hosts for the store at `location`: `Some` for PostgreSQL (a connection of
/// its own that listens), `None` for SQLite (whose writers are all on this host and wake the
/// daemon through its socket).
pub fn listen(location: &Location) -> Option<tokio::sync::mpsc::UnboundedReceiver<()>> {
    match location {
        Location::Sqlite(_) => None,
        Location::Postgres(url) => Some(postgres::listen(url)),
    }
}

/// An open transaction, read or write, on either engine: what the queue, schedule, alert and
/// workflow logic is given.
pub type Tx<'a> = dyn Ops + 'a;

/// How hard the store works to keep a committed transaction across a power loss.
///
/// Commands (`queue:add`, `worker job`…) always commit with [`Durability::Full`]: a run whose id
/// was printed survives even a power loss. The daemon's own state changes (claims, attempt ends,
/// fires) use the `durability` setting, [`Durability::Normal`] by default. Either way every commit
/// survives the crash of any process, `kill -9` included: WAL frames are in the OS page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: a commit survives power loss.
    #[default]
    Full,
    /// WAL with `synchronous = NORMAL`: a commit survives a crash of any process; after a power
    /// loss, the last state changes before it may be rolled back (a run that was finishing runs
    /// again; at-least-once). A later `Full` commit makes everything before it durable.
    Normal,
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "the database {path} has schema version {found}, newer than this worker knows ({known}): use a newer worker"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("corrupt value in database: {0}")]
    Corrupt(String),
    /// This node was declared dead by the others (it was silent past `node_timeout`) and its
    /// runs were recovered: it may record nothing more for them.
    #[error("this node was declared dead by the other nodes and its runs were recovered")]
    Fenced,
    /// A statement that writes, in a transaction that was only to look (an engine turn that
    /// found work): it runs again under the write lock. Never seen outside the store.
    #[error("a write in a transaction that was only to look")]
    WriteInLook,
    /// The database cannot be reached (the message names it, without its password).
    #[error("{0}")]
    Connect(String),
    #[error("database error: {}", crate::workflow::steps::sql::postgres::describe_error(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A connection to the store.
pub struct Store {
    engine: Engine,
    location: Location,
}

enum Engine {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Where a store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by `postgres://` URL (which may hold a password).
    Postgres(String),
}

impl Location {
    /// For messages: the path, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => crate::workflow::steps::redact_url(url),
        }
    }
}

impl Store {
    /// Opens (creating and migrating if needed) the SQLite database at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Store> {
        Ok(Store {
            engine: Engine::Sqlite(SqliteStore::open(path, durability)?),
            location: Location::Sqlite(path.to_path_buf()),
        })
    }

    /// Connects to (creating and migrating if needed) the store at `location`. `durability`
    /// applies to SQLite; PostgreSQL's is the server's (`synchronous_commit`).
    pub fn open_at(location: &Location, durability: Durability) -> Result<Store> {
        match location {
            Location::Sqlite(path) => Store::open(path, durability),
            Location::Postgres(url) => Ok(Store {
                engine: Engine::Postgres(PgStore::connect(url)?),
                location: location.clone(),
            }),
        }
    }

    /// Where the store is: to open another connection to it.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Runs `f` in a write transaction, committing if it returns `Ok`. Write transactions are
    /// serialised across every process that uses the store.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        match &mut self.engine {
            Engine::Sqlite(s) => s.write(f),
            Engine::Postgres(p) => p.write(f),
        }
    }

    /// A node's heartbeat ([`NodeOps::node_beat`]). Not serialised with the other writers (its
    /// row locks are all the safety it needs), so it never queues behind the engines of the
    /// cluster; on PostgreSQL one statement outside any transaction (one round trip).
    pub fn beat(
        &mut self,
        node: &NodeId,
        timeout: std::time::Duration,
        now: crate::model::Time,
    ) -> Result<Beat> {
        match &mut self.engine {
            Engine::Sqlite(s) => s.write(|tx| tx.node_beat(node, timeout, now)),
            Engine::Postgres(p) => p.single(|tx| tx.node_beat(node, timeout, now)),
        }
    }

    /// Runs `f` in a transaction that takes the write lock only if it writes: for work that
    /// usually finds nothing to write (a wake-up that was not for us), so that it neither waits
    /// for, nor holds up, another writer. `f` may run twice (the second time under the write
    /// lock), so it must have no effect outside the transaction that it cannot repeat.
    pub fn write_if_needed<T>(&mut self, f: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        match &mut self.engine {
            Engine::Sqlite(s) => s.write_if_needed(f),
            Engine::Postgres(p) => p.write_if_needed(f),
        }
    }

    /// Runs `f` in a read transaction: one consistent snapshot.
    pub fn read<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        match &mut self.engine {
            Engine::Sqlite(s) => s.read(f),
            Engine::Postgres(p) => p.read(f),
        }
    }

    /// How many pending alerts the last committed write transaction added.
    pub fn alerts_written(&self) -> u32 {
        match &self.engine {
            Engine::Sqlite(s) => s.alerts_written(),
            Engine::Postgres(p) => p.alerts_written(),
        }
    }

    /// Leaves WAL checkpoints to someone else (the daemon's checkpointer thread), so that this
    /// connection's commits never wait for a checkpoint's fsync. Nothing to do on PostgreSQL.
    pub fn disable_autocheckpoint(&self) -> Result<()> {
        match &self.engine {
            Engine::Sqlite(s) => s.disable_autocheckpoint(),
            Engine::Postgres(_) => Ok(()),
        }
    }

    /// Copies what it can of the WAL into the database without blocking writers. Returns (WAL
    /// frames, frames checkpointed).
    pub fn checkpoint(&self) -> Result<(i64, i64)> {
        match &self.engine {
            Engine::Sqlite(s) => s.checkpoint(),
            Engine::Postgres(_) => Ok((0, 0)),
        }
    }

    /// Bytes the database occupies on disk (main file plus WAL).
    pub fn disk_bytes(&self) -> u64 {
        match &self.engine {
            Engine::Sqlite(s) => s.disk_bytes(),
            Engine::Postgres(_) => 0,
        }
    }
}

/// The due time of a suspended run that only a signal wakes (9999-12-31T23:59:59Z): never due,
/// yet a valid time.
pub const NEVER_MS: i64 = 253_402_300_799_000;

/// Whether a stored time is [`NEVER_MS`].
pub fn is_never(t: crate::model::Time) -> bool {
    t.timestamp_millis() >= NEVER_MS
}
