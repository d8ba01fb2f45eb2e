//! The PostgreSQL store: one database shared by every daemon and command of a cluster.
//!
//! The rest of the code is synchronous over a [`Tx`]; tokio-postgres is asynchronous. Each
//! connection's socket is driven by a task on one process-wide runtime (thread `worker-pg`), and a
//! statement's future — which only talks to that task through channels — is waited for on the
//! caller's thread, as a SQLite statement would be. So a store call blocks its caller (the
//! engine's loop, an API blocking thread, a command) and nothing else.
//!
//! Write transactions are serialised by a transaction-scoped advisory lock taken first thing
//! (one key per schema): the same guarantee as SQLite's `BEGIN IMMEDIATE`, so every
//! read-then-write decision above (a claim against `concurrency`, a fire's exactly-once record)
//! holds across nodes. Statements are prepared once per connection and kept.

mod alerts;
mod changes;
mod convert;
mod metrics;
mod migrations;
mod nodes;
mod runs;
mod schedules;
mod steps;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::{Result, StoreError, Tx};
use crate::workflow::steps::sql::postgres::{connect_store, describe_error};

/// How read transactions and looks begin: one snapshot, no writes.
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// First half of every advisory lock key of the store (the second is the schema's hash).
const LOCK_CLASS: i32 = 0x776b_7200; // "wkr\0"
/// Second halves: which lock.
const LOCK_WRITE: &str = "write";
const LOCK_MIGRATE: &str = "migrate";

/// The runtime that drives every PostgreSQL connection of the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("worker-pg")
            .enable_all()
            .build()
            // Without a thread and an epoll instance the process could not do anything else
            // either; there is no store to fall back to.
            .expect("cannot start the PostgreSQL runtime thread")
    })
}

/// The server processes (backend pids) of this process's store connections: a wake-up one of
/// them sent is not news to this process. (Whatever this process writes, it tells its own
/// daemon directly: the engine knows its own turns, and the API and commands send the
/// daemon's socket a datagram.)
fn own_backends() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    static OWN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
    // A set of integers cannot be left half-changed by a panicking holder.
    OWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for `f` on this thread. Only for futures that need no runtime of their own: a client's
/// statements, or a task spawned on [`runtime`].
fn wait<F: Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

/// A connection to a PostgreSQL store.
pub struct PgStore {
    url: String,
    /// The URL without its password, for messages.
    shown: String,
    client: Client,
    statements: RefCell<HashMap<String, Statement>>,
    /// The server process of this connection ([`own_backends`]).
    backend: i32,
    /// This schema's lock keys: (write, migrate).
    locks: (i32, i32),
    alerts_written: u32,
}

/// An open transaction and the typed operations on it.
pub struct PgTx<'s> {
    store: &'s PgStore,
    /// Pending alerts inserted so far.
    alerts: Cell<u32>,
    mode: Mode,
    /// Writes sent whose replies have not been read yet ([`PgTx::execute_later`]).
    later: RefCell<Vec<Later<'s>>>,
    /// The first of them that failed (or whose check did).
    failed: RefCell<Option<StoreError>>,
    /// How many of them carry a check whose answer is still to be read ([`PgTx::query_later`]):
    /// while there is one, `COMMIT` waits for it.
    checks: std::rc::Rc<Cell<usize>>,
    /// Whether writes may be sent for later: in a write transaction (whose `COMMIT` waits for
    /// their replies), not in a statement that commits on its own.
    defer: bool,
}

/// A statement sent, its reply still to come.
type Later<'s> = Pin<Box<dyn Future<Output = Result<()>> + 's>>;

/// A parameter that a statement sent for later owns.
pub(super) type Owned = Box<dyn ToSql + Sync>;

/// What kind of transaction a [`PgTx`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Write,
    /// A look without the write lock ([`PgStore::write_if_needed`]): the first statement that
    /// writes ends it with [`StoreError::WriteInLook`] instead of running.
    Look,
    Read,
}

impl<'s> PgTx<'s> {
    fn new(store: &'s PgStore, mode: Mode) -> Self {
        PgTx {
            store,
            alerts: Cell::new(0),
            mode,
            later: RefCell::new(Vec::new()),
            failed: RefCell::new(None),
            checks: std::rc::Rc::new(Cell::new(0)),
            defer: mode == Mode::Write,
        }
    }

    /// A read-only transaction (a look or a read): it may not lock rows either.
    fn read_only(&self) -> bool {
        self.mode != Mode::Write
    }
}

impl PgStore {
    /// Connects to `url`, applying migrations if the schema is behind.
    pub fn connect(url: &str) -> Result<PgStore> {
        let shown = crate::workflow::steps::redact_url(url);
        let client = Self::open_client(url)?;
        let mut store = PgStore {
            url: url.to_owned(),
            shown,
            client,
            statements: RefCell::new(HashMap::new()),
            backend: 0,
            locks: (0, 0),
            alerts_written: 0,
        };
        let row = store.client_wait(|c| async move {
            c.query_one(
                "SELECT hashtext(current_schema() || $1), hashtext(current_schema() || $2), \
                 pg_backend_pid()",
                &[&LOCK_WRITE, &LOCK_MIGRATE],
            )
            .await
        })?;
        store.locks = (row.get(0), row.get(1));
        store.set_backend(row.get(2));
        store.migrate()?;
        Ok(store)
    }

    fn open_client(url: &str) -> Result<Client> {
        let owned = url.to_owned();
        wait(runtime().spawn(async move { connect_store(&owned, "worker", None).await }))
            .map_err(|e| StoreError::Connect(format!("PostgreSQL: {e}")))?
            .map_err(StoreError::Connect)
    }

    /// Runs one client call to completion on this thread.
    fn client_wait<'c, T, Fut>(&'c self, f: impl FnOnce(&'c Client) -> Fut) -> Result<T>
    where
        Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>> + 'c,
    {
        Ok(wait(f(&self.client))?)
    }

    /// A connection the server closed (a restart, a network cut) is opened again before the
    /// next transaction; its prepared statements went with it.
    fn reconnect_if_closed(&mut self) -> Result<()> {
        if self.client.is_closed() {
            self.client = Self::open_client(&self.url)?;
            self.statements.borrow_mut().clear();
            let pid = self
                .client_wait(|c| async move { c.query_one("SELECT pg_backend_pid()", &[]).await })?
                .get(0);
            self.set_backend(pid);
        }
        Ok(())
    }

    fn set_backend(&mut self, pid: i32) {
        let mut own = own_backends();
        own.remove(&self.backend);
        own.insert(pid);
        self.backend = pid;
    }

    fn migrate(&mut self) -> Result<()> {
        let known = migrations::MIGRATIONS.len() as i32;
        let (class, key) = (LOCK_CLASS, self.locks.1);
        self.client_wait(|c| async move {
            c.execute("SELECT pg_advisory_lock($1, $2)", &[&class, &key])
                .await?;
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS worker_schema (
                     version    integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .await
        })?;
        let outcome = (|| {
            let version: i32 = self
                .client_wait(|c| async move {
                    c.query_one("SELECT coalesce(max(version), 0) FROM worker_schema", &[])
                        .await
                })?
                .get(0);
            if version > known {
                return Err(StoreError::TooNew {
                    path: self.shown.clone().into(),
                    found: version.into(),
                    known: known.into(),
                });
            }
            for (i, sql) in migrations::MIGRATIONS
                .iter()
                .enumerate()
                .skip(version as usize)
            {
                let number = i as i32 + 1;
                self.client_wait(|c| async move {
                    c.batch_execute("BEGIN").await?;
                    let applied = async {
                        c.batch_execute(sql).await?;
                        c.execute(
                            "INSERT INTO worker_schema (version) VALUES ($1)",
                            &[&number],
                        )
                        .await
                    }
                    .await;
                    match applied {
                        Ok(_) => c.batch_execute("COMMIT").await,
                        Err(e) => {
                            let _ = c.batch_execute("ROLLBACK").await;
                            Err(e)
                        }
                    }
                })?;
            }
            Ok(())
        })();
        let unlocked = self.client_wait(|c| async move {
            c.execute("SELECT pg_advisory_unlock($1, $2)", &[&class, &key])
                .await
        });
        outcome?;
        unlocked?;
        Ok(())
    }

    /// Runs `f` in a write transaction, committing if it returns `Ok`: every writer of the
    /// store (all nodes) takes the same advisory lock first, so writes are serialised.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.reconnect_if_closed()?;
        let lock = self.prepared("SELECT pg_advisory_xact_lock($1, $2)")?;
        let (class, key) = (LOCK_CLASS, self.locks.0);
        self.run_and_commit(|tx| {
            // No round trip of their own: `BEGIN` and the lock's request are sent, and the
            // first statement of `f` goes behind them; the server runs it once the lock is
            // held, and its reply is waited for together with theirs.
            tx.begin("BEGIN")?;
            let client: &Client = &tx.store.client;
            tx.send_now(Box::pin(async move {
                client.execute(&lock, &[&class, &key]).await?;
                Ok(())
            }))?;
            f(tx)
        })
    }

    /// Runs `f`, which sends a single statement, outside any transaction (it commits on its
    /// own) and without the store's write lock ([`crate::store::Store::beat`]).
    pub fn single<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.reconnect_if_closed()?;
        let mut tx = PgTx::new(self, Mode::Write);
        tx.defer = false;
        f(&tx)
    }

    /// Runs `f` in the transaction just begun, then commits it (or rolls it back on an error).
    fn run_and_commit<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&PgTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let tx = PgTx::new(self, Mode::Write);
        // Statements still on their way are dropped before `ROLLBACK`, so the connection is not
        // left waiting for them to be read.
        let out = f(&tx).and_then(|out| tx.commit().map(|()| out).map_err(E::from));
        let alerts = tx.alerts.get();
        drop(tx);
        match out {
            Ok(out) => {
                self.alerts_written = alerts;
                Ok(out)
            }
            Err(e) => {
                // After a `COMMIT` that went behind a failed write, there is no transaction
                // left to roll back; the server only warns.
                self.rollback();
                Err(e)
            }
        }
    }

    /// Runs `f` first as a look, without the write lock, in one snapshot: a wake-up that finds
    /// nothing to do (the common case for the nodes a notification did not concern) holds up
    /// no writer. At its first statement that writes, the look is abandoned and `f` runs again
    /// from the start under the lock, so that every decision is made on data no writer can
    /// change meanwhile.
    pub fn write_if_needed<T>(&mut self, mut f: impl FnMut(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.reconnect_if_closed()?;
        let tx = PgTx::new(self, Mode::Look);
        let looked = tx.begin(BEGIN_READ).and_then(|()| f(&tx));
        drop(tx);
        self.rollback();
        match looked {
            Err(StoreError::WriteInLook) => self.write(f),
            other => other,
        }
    }

    /// Runs `f` in a read transaction: one consistent snapshot.
    pub fn read<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.reconnect_if_closed()?;
        let tx = PgTx::new(self, Mode::Read);
        let out = tx.begin(BEGIN_READ).map_err(E::from).and_then(|()| f(&tx));
        drop(tx);
        self.rollback();
        out
    }

    /// Ends the open transaction, if any, discarding it. A connection that fails even this is
    /// opened again before the next transaction.
    fn rollback(&self) {
        let _ = self.client_wait(|c| async move { c.batch_execute("ROLLBACK").await });
    }

    /// How many pending alerts the last committed write transaction added.
    pub fn alerts_written(&self) -> u32 {
        self.alerts_written
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        own_backends().remove(&self.backend);
    }
}

/// Whether `sql` only reads: a plain `SELECT` or a `WITH` query with no data-modifying part
/// (no `INSERT`, `UPDATE`, `DELETE`: this code writes its keywords in capitals), and no row lock
/// or function known to write. Anything else counts as a write.
fn reads_only(sql: &str) -> bool {
    let head = sql.trim_start();
    let starts =
        |word: &str| head.len() >= word.len() && head[..word.len()].eq_ignore_ascii_case(word);
    let select = starts("select")
        || (starts("with")
            && !["INSERT ", "UPDATE ", "DELETE "]
                .iter()
                .any(|verb| sql.contains(verb)));
    select
        && !sql.contains("FOR UPDATE")
        && !sql.contains("FOR SHARE")
        && !sql.contains("pg_advisory")
        && !sql.contains("nextval")
}

/// The channel every wake-up of every schema is sent on; the payload names the schema.
pub const WAKE_CHANNEL: &str = "worker_wake";

/// Listens on a connection of its own for wake-ups of the store at `url` (a run enqueued, a
/// cancel requested, a signal sent… from another process, on any host): each arrives on the
/// receiver. Those this process's own connections sent are left out ([`own_backends`]). A lost
/// connection is opened again (every second until it succeeds), followed by one wake-up, since
/// anything may have happened meanwhile. Ends when the receiver is dropped.
pub fn listen(url: &str) -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let url = url.to_owned();
    runtime().spawn(async move {
        let shown = crate::workflow::steps::redact_url(&url);
        let mut first = true;
        loop {
            let (notices, mut heard) = tokio::sync::mpsc::unbounded_channel();
            let listening = async {
                let client = connect_store(&url, "worker-listen", Some(notices)).await?;
                let schema: String = client
                    .query_one("SELECT current_schema()", &[])
                    .await
                    .map_err(|e| describe_error(&e))?
                    .get(0);
                client
                    .batch_execute(&format!("LISTEN {WAKE_CHANNEL}"))
                    .await
                    .map_err(|e| describe_error(&e))?;
                Ok::<_, String>((client, schema))
            };
            match listening.await {
                Ok((client, schema)) => {
                    if !first && wake.send(()).is_err() {
                        return;
                    }
                    first = false;
                    // The client must live while we listen; the notices end with its connection.
                    while let Some(n) = heard.recv().await {
                        let own = own_backends().contains(&n.process_id());
                        if n.payload() == schema && !own && wake.send(()).is_err() {
                            return;
                        }
                    }
                    drop(client);
                    tracing::warn!(database = %shown, "lost the connection that listens for wake-ups; opening it again");
                }
                Err(e) => {
                    tracing::warn!(database = %shown, error = %e, "cannot listen for wake-ups; trying again in 1 s");
                }
            }
            if wake.is_closed() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    woken
}

impl PgStore {
    /// `sql` prepared on this connection, once.
    fn prepared(&self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.client_wait(|c| async move { c.prepare(sql).await })?;
        self.remember(sql, &prepared);
        Ok(prepared)
    }

    fn remember(&self, sql: &str, statement: &Statement) {
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), statement.clone());
    }
}

impl<'s> PgTx<'s> {
    /// `sql` prepared on this connection, once. In a look, a statement that may write is
    /// refused before it runs.
    fn statement(&self, sql: &str) -> Result<Statement> {
        if self.mode == Mode::Look && !reads_only(sql) {
            return Err(StoreError::WriteInLook);
        }
        if let Some(s) = self.store.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.wait_for(self.store.client.prepare(sql))?;
        self.store.remember(sql, &prepared);
        Ok(prepared)
    }

    /// Waits for `reply` (a statement's), reading meanwhile the replies of the writes sent for
    /// later: the connection answers in order, and does not read on past a reply nobody takes.
    /// If the statement failed because one of those failed first (aborting the transaction),
    /// that first failure is the error returned.
    fn wait_for<T>(
        &self,
        reply: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        if self.later.borrow().is_empty() {
            return Ok(wait(reply)?);
        }
        let mut reply = std::pin::pin!(reply);
        let out = wait(std::future::poll_fn(|cx| {
            self.drive(cx);
            reply.as_mut().poll(cx)
        }));
        out.or_else(|e| {
            self.settle()?;
            Err(e.into())
        })
    }

    /// Reads the replies of the writes sent for later that have come.
    fn drive(&self, cx: &mut Context<'_>) {
        self.later
            .borrow_mut()
            .retain_mut(|f| match f.as_mut().poll(cx) {
                Poll::Pending => true,
                Poll::Ready(r) => {
                    if let Err(e) = r {
                        self.failed.borrow_mut().get_or_insert(e);
                    }
                    false
                }
            });
    }

    /// Waits for every reply of the writes sent for later; the first of them that failed.
    fn settle(&self) -> Result<()> {
        if !self.later.borrow().is_empty() {
            wait(std::future::poll_fn(|cx| {
                self.drive(cx);
                if self.later.borrow().is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }));
        }
        match self.failed.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The rows of `sql` with `params` (`$1`, `$2`…).
    pub(super) fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let stmt = self.statement(sql)?;
        self.wait_for(self.store.client.query(&stmt, params))
    }

    /// The rows of two statements without parameters, both sent before either is waited for.
    pub(super) fn query_pair(&self, a: &str, b: &str) -> Result<(Vec<Row>, Vec<Row>)> {
        let (a, b) = (self.statement(a)?, self.statement(b)?);
        let client = &self.store.client;
        self.wait_for(async {
            let (a, b) =
                futures_util::future::join(client.query(&a, &[]), client.query(&b, &[])).await;
            Ok((a?, b?))
        })
    }

    /// The rows of `sql` for each set of `params`, in order: all sent before any is waited for
    /// (one round trip however many).
    pub(super) fn query_each(&self, sql: &str, params: &[Vec<Owned>]) -> Result<Vec<Vec<Row>>> {
        if params.is_empty() {
            return Ok(Vec::new());
        }
        let stmt = self.statement(sql)?;
        let client = &self.store.client;
        let refs: Vec<Vec<&(dyn ToSql + Sync)>> = params
            .iter()
            .map(|p| {
                p.iter()
                    .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                    .collect()
            })
            .collect();
        self.wait_for(futures_util::future::try_join_all(
            refs.iter().map(|p| client.query(&stmt, p)),
        ))
    }

    /// The one row of `sql`, if there is one (more is an error).
    pub(super) fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let stmt = self.statement(sql)?;
        self.wait_for(self.store.client.query_opt(&stmt, params))
    }

    /// The one row of `sql` (none, or more, is an error).
    pub(super) fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let stmt = self.statement(sql)?;
        self.wait_for(self.store.client.query_one(&stmt, params))
    }

    /// Runs `sql`; returns how many rows it changed.
    pub(super) fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        self.wait_for(self.store.client.execute(&stmt, params))
    }

    /// Sends a write whose reply nothing needs at once, and goes on without waiting for it (a
    /// round trip saved): the reply is read while a later statement's is waited for, and at
    /// the latest before `COMMIT`, where a failure fails the transaction as it would have
    /// failed here. Statements after it see what it wrote (one connection runs them in
    /// order). Outside a write transaction it runs at once.
    pub(super) fn execute_later(&self, sql: &str, params: Vec<Owned>) -> Result<()> {
        let stmt = self.statement(sql)?;
        let client: &'s Client = &self.store.client;
        self.send_later(Box::pin(async move {
            client.execute_raw(&stmt, params).await?;
            Ok(())
        }))
    }

    /// Sends a query whose rows only decide whether the transaction may commit, as
    /// [`PgTx::execute_later`]: `check` turns them into the transaction's fate.
    pub(super) fn query_later(
        &self,
        sql: &str,
        params: Vec<Owned>,
        check: impl FnOnce(Vec<Row>) -> Result<()> + 's,
    ) -> Result<()> {
        let stmt = self.statement(sql)?;
        let client: &'s Client = &self.store.client;
        let checks = self.checks.clone();
        checks.set(checks.get() + 1);
        self.send_later(Box::pin(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
            let answer = client.query(&stmt, &refs).await;
            checks.set(checks.get() - 1);
            check(answer?)
        }))
    }

    /// Commits what `f` did. `COMMIT` is sent behind the writes sent for later, and their replies
    /// and its are read together: one round trip. A write that failed aborted the transaction,
    /// so the `COMMIT` behind it rolls back (PostgreSQL answers it without an error, hence the
    /// replies before it are all read): that failure is what this returns. A check still
    /// unanswered decides on this side whether to commit at all: the writes are read first then,
    /// and `COMMIT` is sent only if every one of them passed. A check already answered "no" (read
    /// while a later statement was waited for) ends the transaction without a `COMMIT`.
    fn commit(&self) -> Result<()> {
        if self.checks.get() > 0 || self.failed.borrow().is_some() {
            self.settle()?;
        }
        let client: &'s Client = &self.store.client;
        self.send_now(Box::pin(async move {
            client.batch_execute("COMMIT").await?;
            Ok(())
        }))?;
        self.settle()
    }

    fn send_later(&self, reply: Later<'s>) -> Result<()> {
        if !self.defer {
            return wait(reply);
        }
        self.send_now(reply)
    }

    /// Begins the transaction with `sql`, without waiting: the reply is read with the first
    /// statement's (one round trip fewer per transaction).
    fn begin(&self, sql: &'static str) -> Result<()> {
        let client: &'s Client = &self.store.client;
        self.send_now(Box::pin(async move {
            client.batch_execute(sql).await?;
            Ok(())
        }))
    }

    /// Sends the statement of `reply` without waiting for its reply, whatever the kind of
    /// transaction (`BEGIN`, and a write transaction's lock): it is read with the next one's.
    fn send_now(&self, mut reply: Later<'s>) -> Result<()> {
        // The first poll encodes the statement and hands it to the connection, behind the
        // statements sent before it.
        match reply.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => {
                self.later.borrow_mut().push(reply);
                Ok(())
            }
        }
    }

    /// Counts a pending alert written in this transaction.
    pub(super) fn alert_written(&self) {
        self.alerts.set(self.alerts.get() + 1);
    }
}

/// Runs `sql` on a connection of its own to `url` (tests: a schema made or dropped).
#[cfg(test)]
pub(super) fn execute_batch(url: &str, sql: &str) -> Result<()> {
    let client = PgStore::open_client(url)?;
    Ok(wait(client.batch_execute(sql))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{Engine, TestStore};
    use std::time::{Duration, Instant};

    fn test_store() -> Option<(TestStore, String, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let t = TestStore::new(Engine::Postgres, dir.path())?;
        let crate::store::Location::Postgres(url) = t.location.clone() else {
            unreachable!("a PostgreSQL test store")
        };
        Some((t, url, dir))
    }

    impl PgStore {
        /// A write transaction without the store's lock, on the PostgreSQL transaction itself.
        fn write_raw<T>(&mut self, f: impl FnOnce(&PgTx<'_>) -> Result<T>) -> Result<T> {
            self.client_wait(|c| async move { c.batch_execute("BEGIN").await })?;
            self.run_and_commit(f)
        }
    }

    fn text(s: &str) -> Owned {
        Box::new(s.to_owned())
    }

    /// Writes sent for later run in order before what follows them; hundreds of them in one
    /// transaction neither stall the connection nor get lost; and a failure among them fails the
    /// transaction as it would have failed at once, whether a later statement or the commit is
    /// what finds it.
    #[test]
    fn writes_sent_for_later_are_ordered_and_their_failure_fails_the_transaction() {
        let Some((_t, url, _dir)) = test_store() else {
            return;
        };
        let mut store = PgStore::connect(&url).unwrap();
        const INSERT: &str = "INSERT INTO meta (key, value) VALUES ($1, $2)";
        let seen = store
            .write_raw(|tx| {
                for i in 0..500 {
                    tx.execute_later(INSERT, vec![text(&format!("k{i}")), text("v")])?;
                }
                tx.execute_later(
                    "UPDATE meta SET value = $1 WHERE key = 'k499'",
                    vec![text("last")],
                )?;
                let n: i64 = tx
                    .query_one("SELECT count(*) FROM meta WHERE key LIKE 'k%'", &[])?
                    .get(0);
                let last: String = tx
                    .query_one("SELECT value FROM meta WHERE key = 'k499'", &[])?
                    .get(0);
                Ok((n, last))
            })
            .unwrap();
        assert_eq!(seen, (500, "last".to_string()));
        let value = |store: &mut PgStore| -> String {
            store
                .write_raw(|tx| {
                    Ok(tx
                        .query_one("SELECT value FROM meta WHERE key = 'k1'", &[])?
                        .get(0))
                })
                .unwrap()
        };
        let change = |tx: &PgTx<'_>| {
            tx.execute_later(
                "UPDATE meta SET value = $1 WHERE key = 'k1'",
                vec![text("changed")],
            )
        };
        // Found by the statement after it.
        let err = store
            .write_raw(|tx| {
                change(tx)?;
                tx.execute_later(INSERT, vec![text("k2"), text("twice")])?;
                tx.query("SELECT 1", &[])
            })
            .unwrap_err();
        assert!(err.to_string().contains("duplicate key"), "{err}");
        assert_eq!(value(&mut store), "v");
        // Found before the commit.
        let err = store
            .write_raw(|tx| {
                change(tx)?;
                tx.execute_later(INSERT, vec![text("k3"), text("twice")])
            })
            .unwrap_err();
        assert!(err.to_string().contains("duplicate key"), "{err}");
        assert_eq!(value(&mut store), "v");
        // A check still unanswered when the work is done: it decides whether to commit.
        let err = store
            .write_raw(|tx| {
                tx.query_later("SELECT 1 WHERE false", Vec::new(), |rows| {
                    match rows.is_empty() {
                        true => Err(StoreError::Fenced),
                        false => Ok(()),
                    }
                })?;
                change(tx)
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced), "{err}");
        assert_eq!(value(&mut store), "v");
        // And the connection goes on.
        store.write_raw(change).unwrap();
        assert_eq!(value(&mut store), "changed");
    }

    fn notify(client: &Client) {
        wait(client.batch_execute("SELECT pg_notify('worker_wake', current_schema())")).unwrap();
    }

    #[test]
    fn reads_only_tells_looks_from_writes() {
        assert!(reads_only("SELECT 1 FROM nodes WHERE name = $1"));
        assert!(reads_only(
            "WITH RECURSIVE q(job) AS (SELECT job FROM runs) SELECT job FROM q"
        ));
        assert!(!reads_only(
            "WITH r AS (UPDATE runs SET state = 'running' RETURNING id) SELECT * FROM r"
        ));
        assert!(!reads_only("SELECT 1 FROM nodes WHERE name = $1 FOR SHARE"));
        assert!(!reads_only("SELECT pg_advisory_xact_lock($1, $2)"));
        assert!(!reads_only("UPDATE nodes SET heartbeat_at = now()"));
    }

    #[test]
    fn a_wake_up_is_heard_from_other_processes_only() {
        let Some((_t, url, _dir)) = test_store() else {
            return;
        };
        let own = PgStore::connect(&url).unwrap();
        let pid: i32 = own
            .client_wait(|c| async move { c.query_one("SELECT pg_backend_pid()", &[]).await })
            .unwrap()
            .get(0);
        assert!(own_backends().contains(&pid));
        // A connection no store of this process made: another process, as far as the
        // listener can tell.
        let other = PgStore::open_client(&url).unwrap();
        let mut woken = listen(&url);
        let heard = |woken: &mut tokio::sync::mpsc::UnboundedReceiver<()>, within: Duration| {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if woken.try_recv().is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        };
        // Listening once the other connection's wake-ups arrive.
        let mut listening = false;
        for _ in 0..60 {
            notify(&other);
            if heard(&mut woken, Duration::from_millis(500)) {
                listening = true;
                break;
            }
        }
        assert!(listening, "no wake-up arrived");
        std::thread::sleep(Duration::from_millis(200));
        while woken.try_recv().is_ok() {}

        // Delivered in commit order: had the own wake-up gone through, it would come first.
        notify(&own.client);
        assert!(!heard(&mut woken, Duration::from_secs(1)));
        notify(&other);
        assert!(heard(&mut woken, Duration::from_secs(30)));

        drop(own);
        assert!(!own_backends().contains(&pid));
    }
}
