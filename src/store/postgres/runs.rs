//! PostgreSQL: runs, their dependencies and attempts.
//!
//! The behaviour is SQLite's (`sqlite/runs.rs`), statement for statement, in PostgreSQL's terms:
//!
//! - Instants are `timestamptz`, bound truncated to the millisecond ([`at`]): SQLite stores
//!   milliseconds, so a time read back, compared or used as a keyset cursor
//!   ([`QueuedCandidate::due_at`] is in milliseconds) is the same on both engines.
//! - Text orders that callers see (job names, step names) are byte orders, as SQLite's `BINARY`
//!   collation: `COLLATE "C"`, or a sort here when the database walks an index in its own
//!   collation.
//! - A predicate on `state` is always written out as a literal (`state = 'queued'`,
//!   `state IN (…)`), so that the partial indexes (`runs_active`, `runs_job_ready`, `runs_due`,
//!   `runs_dead`) serve generic plans of prepared statements too; bound values (the states of a
//!   listing's filter) come on top of such a literal, never instead of it.

use super::{Owned, PgTx};
use crate::model::{Attempt, Priority, Run, RunId, RunState, Time};
use crate::store::StepOps;
use crate::store::runs::*;
use crate::store::{Result, StoreError};
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// The unfinished states, as SQL: the predicate of the partial index `runs_active`.
macro_rules! active {
    () => {
        "state IN ('delayed', 'waiting', 'queued', 'running', 'retrying', 'suspended')"
    };
}

/// The columns [`run_from_row`] reads, in its order.
macro_rules! run_columns {
    () => {
        "id, job, state, priority, trigger, key, attempt, max_attempts, created_at, due_at, \
         started_at, finished_at, exit_code, signal, error, env, schedule, scheduled_at, owner, \
         cancel_requested, retried_by, retry_of, input, definition, origin, resume"
    };
}

/// The columns [`brief_from_row`] reads, in its order.
macro_rules! brief_columns {
    () => {
        "id, job, state, attempt, max_attempts, owner, cancel_requested, \
         EXISTS (SELECT 1 FROM run_deps d WHERE d.dep_id = runs.id)"
    };
}

/// The finished runs that [`RunOps::purge`] deletes: `finished_at` bounded or not, dead only or
/// not (four statements, so that each plan can use the index its predicate names). A finished
/// run some unfinished run still waits on is kept: the waiter needs its state. In the order
/// SQLite reads them (from `runs_finished`): oldest finish first.
macro_rules! purge_sql {
    ($cond:literal) => {
        concat!(
            "WITH doomed AS (SELECT id, finished_at FROM runs WHERE finished_at IS NOT NULL",
            $cond,
            " AND NOT EXISTS (SELECT 1 FROM run_deps d JOIN runs w ON w.id = d.run_id \
             WHERE d.dep_id = runs.id AND w.finished_at IS NULL)), \
             named AS (SELECT d.id, d.finished_at, \
             ARRAY(SELECT seq FROM attempts WHERE run_id = d.id ORDER BY seq) AS seqs, \
             ARRAY(SELECT name FROM steps WHERE run_id = d.id AND attempts > 0 \
             ORDER BY name COLLATE \"C\") AS names, \
             ARRAY(SELECT attempts FROM steps WHERE run_id = d.id AND attempts > 0 \
             ORDER BY name COLLATE \"C\") AS executions FROM doomed d), \
             gone AS (DELETE FROM runs WHERE id IN (SELECT id FROM doomed) RETURNING id) \
             SELECT n.id, n.seqs, n.names, n.executions FROM named n JOIN gone g ON g.id = n.id \
             ORDER BY n.finished_at, n.id"
        )
    };
}

// Statements of the engine's hot path, named so that a test can check their query plans.
const SQL_LATEST_ACTIVE: &str = concat!("SELECT max(id) FROM runs WHERE job = $1 AND ", active!());

const SQL_DUE_RUNS: &str = "SELECT id, state FROM runs WHERE state IN ('delayed', 'retrying', 'suspended') \
     AND due_at <= $1 ORDER BY due_at, id";

const SQL_NEXT_DUE: &str =
    "SELECT min(due_at) FROM runs WHERE state IN ('delayed', 'retrying', 'suspended')";

/// Kept by triggers on `runs` (migration 3).
const SQL_RUNNING_COUNTS: &str = "SELECT job, n FROM job_running WHERE n > 0";

const SQL_OWNERS: &str = concat!(
    "SELECT DISTINCT owner FROM runs WHERE ",
    active!(),
    " AND owner IS NOT NULL"
);

const SQL_RESERVED_BY: &str = "SELECT id FROM runs WHERE state IN ('delayed', 'waiting', 'queued', 'retrying', 'suspended') \
     AND owner = $1 ORDER BY id";

const SQL_CANCEL_REQUESTS: &str = "SELECT id FROM runs WHERE state = 'running' AND owner = $1 AND cancel_requested \
     ORDER BY id";

const SQL_QUEUED_JOB_FIRST: &str = "SELECT id, job, priority, due_at, owner, resume FROM runs WHERE state = 'queued' \
     AND job = $1 ORDER BY priority DESC, due_at, id LIMIT $2";

/// Keyset pagination past candidate ($2, $3, $4). `priority <= $2` is implied by the rest; it is
/// there so that the scan of `runs_job_ready` starts at the candidate's priority.
const SQL_QUEUED_JOB_AFTER: &str = "SELECT id, job, priority, due_at, owner, resume FROM runs WHERE state = 'queued' \
     AND job = $1 AND priority <= $2 \
     AND (priority < $2 OR (priority = $2 AND (due_at > $3 OR (due_at = $3 AND id > $4)))) \
     ORDER BY priority DESC, due_at, id LIMIT $5";

/// The distinct jobs of queued runs: one seek of `runs_job_ready` per job (a loose index scan).
/// In the database's collation: sorted by byte afterwards.
const SQL_QUEUED_JOBS: &str = "WITH RECURSIVE q(job) AS (\
     (SELECT job FROM runs WHERE state = 'queued' ORDER BY job LIMIT 1) \
     UNION ALL \
     SELECT (SELECT r.job FROM runs r WHERE r.state = 'queued' AND r.job > q.job ORDER BY r.job LIMIT 1) \
     FROM q WHERE q.job IS NOT NULL) \
     SELECT job FROM q WHERE job IS NOT NULL";

/// [`RunOps::claim_candidates`] in one statement: the jobs with queued runs (as
/// [`SQL_QUEUED_JOBS`]), each with its first runs that no other owner reserved, as many as its
/// room (its concurrency, $1/$2, less its running runs) and at most $4. A job without room
/// still gives one row, without a run: the caller learns which jobs wait.
const SQL_CLAIM_CANDIDATES: &str = "WITH RECURSIVE q(job) AS (\
     (SELECT job FROM runs WHERE state = 'queued' ORDER BY job LIMIT 1) \
     UNION ALL \
     SELECT (SELECT r.job FROM runs r WHERE r.state = 'queued' AND r.job > q.job ORDER BY r.job LIMIT 1) \
     FROM q WHERE q.job IS NOT NULL), \
     lim(job, concurrency) AS (SELECT * FROM unnest($1::text[], $2::int4[])) \
     SELECT c.id, q.job, c.priority, c.due_at, c.owner, c.resume FROM q \
     LEFT JOIN lim ON lim.job = q.job \
     LEFT JOIN LATERAL (SELECT id, priority, due_at, owner, resume FROM runs \
     WHERE state = 'queued' AND job = q.job AND (owner IS NULL OR owner = $3) \
     ORDER BY priority DESC, due_at, id \
     LIMIT least($4::int8, greatest(coalesce(lim.concurrency, 0) \
     - coalesce((SELECT n FROM job_running jr WHERE jr.job = q.job), 0), 0))) c ON true \
     WHERE q.job IS NOT NULL";

const SQL_RUN_BY_KEY: &str = "SELECT id FROM runs WHERE job = $1 AND key = $2";

const SQL_DEP_STATES: &str = "SELECT r.id, r.job, r.state FROM run_deps d JOIN runs r ON r.id = d.dep_id \
     WHERE d.run_id = $1 ORDER BY d.dep_id";

const SQL_DEPENDENTS: &str = "SELECT r.id, r.state FROM run_deps d JOIN runs r ON r.id = d.run_id \
     WHERE d.dep_id = $1 ORDER BY d.run_id";

const SQL_RUNNING: &str = concat!(
    "SELECT ",
    brief_columns!(),
    " FROM runs WHERE state = 'running' ORDER BY id"
);

const SQL_STATUS_COUNTS: &str = "SELECT \
     (SELECT count(*) FROM runs WHERE state = 'running'), \
     (SELECT count(*) FROM runs WHERE state = 'queued'), \
     (SELECT count(*) FROM runs WHERE state IN ('delayed', 'waiting', 'retrying', 'suspended')), \
     (SELECT count(*) FROM runs WHERE state = 'dead' AND retried_by IS NULL)";

const SQL_DLQ_IDS: &str = "SELECT id FROM runs WHERE state = 'dead' AND retried_by IS NULL \
     ORDER BY finished_at, id";

const SQL_DLQ_IDS_OF_JOB: &str = "SELECT id FROM runs WHERE state = 'dead' AND retried_by IS NULL \
     AND job = $1 ORDER BY finished_at, id";

/// The latest finished run of each job: the distinct jobs by a loose index scan of
/// `runs_job_finished`, then two seeks each (history can hold millions of runs). Of runs of a
/// job that finished in the same millisecond, the oldest (as SQLite's `max()` with a bare
/// column, which keeps the first row it meets in `runs_job_finished`'s order).
const SQL_LAST_FINISHED_PER_JOB: &str = "WITH RECURSIVE j(job) AS (\
     (SELECT job FROM runs WHERE finished_at IS NOT NULL ORDER BY job LIMIT 1) \
     UNION ALL \
     SELECT (SELECT r.job FROM runs r WHERE r.finished_at IS NOT NULL AND r.job > j.job ORDER BY r.job LIMIT 1) \
     FROM j WHERE j.job IS NOT NULL) \
     SELECT l.job, l.state, l.finished_at FROM j CROSS JOIN LATERAL \
     (SELECT job, state, finished_at FROM runs WHERE job = j.job AND finished_at = \
     (SELECT max(finished_at) FROM runs WHERE job = j.job AND finished_at IS NOT NULL) \
     ORDER BY id LIMIT 1) l";

const SQL_UNFINISHED_IDS: &str = concat!(
    "SELECT id FROM runs WHERE ",
    active!(),
    " AND state = ANY($1) AND id < $2 ORDER BY id DESC LIMIT $3"
);

const SQL_UNFINISHED_IDS_OF_JOB: &str = concat!(
    "SELECT id FROM runs WHERE ",
    active!(),
    " AND state = ANY($1) AND id < $2 AND job = $4 ORDER BY id DESC LIMIT $3"
);

/// Every hot statement: none may scan the whole `runs` table (see the test).
#[cfg(test)]
pub(super) const HOT_SQL: &[&str] = &[
    SQL_LATEST_ACTIVE,
    SQL_DUE_RUNS,
    SQL_NEXT_DUE,
    SQL_RUNNING_COUNTS,
    SQL_OWNERS,
    SQL_RESERVED_BY,
    SQL_CANCEL_REQUESTS,
    SQL_QUEUED_JOB_FIRST,
    SQL_QUEUED_JOB_AFTER,
    SQL_QUEUED_JOBS,
    SQL_CLAIM_CANDIDATES,
    SQL_RUN_BY_KEY,
    SQL_DEP_STATES,
    SQL_DEPENDENTS,
    SQL_RUNNING,
    SQL_STATUS_COUNTS,
    SQL_DLQ_IDS,
    SQL_DLQ_IDS_OF_JOB,
    SQL_LAST_FINISHED_PER_JOB,
    SQL_UNFINISHED_IDS,
    SQL_UNFINISHED_IDS_OF_JOB,
];

/// `t` as SQLite keeps it: truncated to the millisecond.
fn at(t: Time) -> Time {
    // Always `Some`: a valid instant's milliseconds are within range.
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn state_of(s: &str) -> Result<RunState> {
    s.parse().map_err(StoreError::Corrupt)
}

/// A stored `integer` that counts (attempts, sequences).
fn count_of(v: i32) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(format!("negative count {v}")))
}

/// A count for an `integer` column.
fn int(v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| corrupt(format!("{v} is too large to store")))
}

fn run_from_row(row: &Row) -> Result<Run> {
    let env = match row.try_get::<_, Option<serde_json::Value>>(15)? {
        Some(v) => serde_json::from_value(v).map_err(corrupt)?,
        None => BTreeMap::new(),
    };
    let definition: Option<i64> = row.try_get(23)?;
    Ok(Run {
        id: row.try_get(0)?,
        job: row.try_get(1)?,
        state: state_of(row.try_get(2)?)?,
        priority: Priority::from_rank(i64::from(row.try_get::<_, i32>(3)?)),
        trigger: row
            .try_get::<_, &str>(4)?
            .parse()
            .map_err(StoreError::Corrupt)?,
        key: row.try_get(5)?,
        attempt: count_of(row.try_get(6)?)?,
        max_attempts: count_of(row.try_get(7)?)?,
        created_at: row.try_get(8)?,
        due_at: row.try_get(9)?,
        started_at: row.try_get(10)?,
        finished_at: row.try_get(11)?,
        exit_code: row.try_get(12)?,
        signal: row.try_get(13)?,
        error: row.try_get(14)?,
        env,
        schedule: row.try_get(16)?,
        scheduled_at: row.try_get(17)?,
        owner: row.try_get(18)?,
        cancel_requested: row.try_get(19)?,
        retried_by: row.try_get(20)?,
        retry_of: row.try_get(21)?,
        depends_on: Vec::new(),
        input: row.try_get(22)?,
        has_steps: definition.is_some(),
        definition,
        origin: row.try_get(24)?,
        resume: row.try_get(25)?,
        steps: Vec::new(),
    })
}

const SQL_BRIEF: &str = concat!("SELECT ", brief_columns!(), " FROM runs WHERE id = $1");

fn brief_from_row(row: &Row) -> Result<RunBrief> {
    Ok(RunBrief {
        id: row.try_get(0)?,
        job: row.try_get(1)?,
        state: state_of(row.try_get(2)?)?,
        attempt: count_of(row.try_get(3)?)?,
        max_attempts: count_of(row.try_get(4)?)?,
        owner: row.try_get(5)?,
        cancel_requested: row.try_get(6)?,
        has_dependents: row.try_get(7)?,
    })
}

fn running_counts_from(rows: &[Row]) -> Result<HashMap<String, u32>> {
    rows.iter()
        .map(|r| {
            let n: i32 = r.try_get(1)?;
            Ok((
                r.try_get(0)?,
                u32::try_from(n).map_err(|_| corrupt(format!("{n} running runs")))?,
            ))
        })
        .collect()
}

fn queued_jobs_from(rows: &[Row]) -> Result<Vec<String>> {
    let mut jobs = rows
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect::<Result<Vec<String>>>()?;
    jobs.sort_unstable();
    Ok(jobs)
}

fn candidate_from_row(row: &Row) -> Result<QueuedCandidate> {
    Ok(QueuedCandidate {
        id: row.try_get(0)?,
        job: row.try_get(1)?,
        priority: i64::from(row.try_get::<_, i32>(2)?),
        due_at: row.try_get::<_, Time>(3)?.timestamp_millis(),
        owner: row.try_get(4)?,
        resume: row.try_get(5)?,
    })
}

/// The first column of each row.
fn ids(rows: Vec<Row>) -> Result<Vec<RunId>> {
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

fn id_states(rows: Vec<Row>) -> Result<Vec<(RunId, RunState)>> {
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, state_of(r.try_get(1)?)?)))
        .collect()
}

/// A count from the database (`bigint`, never negative).
fn count_u64(row: &Row, i: usize) -> Result<u64> {
    Ok(row.try_get::<_, i64>(i)? as u64)
}

/// A value bound to a listing's statement.
type Param = Box<dyn ToSql + Sync>;

impl RunOps for PgTx<'_> {
    fn insert_run(&self, r: &NewRun<'_>) -> Result<RunId> {
        let env = if r.env.is_empty() {
            None
        } else {
            Some(serde_json::to_value(r.env).map_err(corrupt)?)
        };
        let input: Option<serde_json::Value> = r
            .input
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("input: {e}")))?;
        let row = self.query_one(
            "INSERT INTO runs (job, state, priority, trigger, key, max_attempts, created_at, due_at, env, \
             schedule, scheduled_at, owner, retry_of, error, finished_at, definition, input, origin) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
             RETURNING id",
            &[
                &r.job,
                &r.state.as_str(),
                // A rank is 0 to 3.
                &(r.priority.rank() as i32),
                &r.trigger.as_str(),
                &r.key,
                &int(r.max_attempts)?,
                &at(r.created_at),
                &at(r.due_at),
                &env,
                &r.schedule,
                &r.scheduled_at.map(at),
                &r.owner,
                &r.retry_of,
                &r.error,
                &r.finished_at.map(at),
                &r.definition,
                &input,
                &r.origin,
            ],
        )?;
        Ok(row.try_get(0)?)
    }

    fn insert_dep(&self, run: RunId, dep: RunId) -> Result<()> {
        self.execute(
            "INSERT INTO run_deps (run_id, dep_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&run, &dep],
        )?;
        Ok(())
    }

    fn run(&self, id: RunId) -> Result<Option<Run>> {
        let Some(row) = self.query_opt(
            concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1"),
            &[&id],
        )?
        else {
            return Ok(None);
        };
        let mut run = run_from_row(&row)?;
        run.depends_on = self
            .dep_states(id)?
            .into_iter()
            .map(|(d, _, _)| d)
            .collect();
        if run.has_steps {
            run.steps = self.steps(id)?;
        }
        Ok(Some(run))
    }

    fn brief(&self, id: RunId) -> Result<Option<RunBrief>> {
        self.query_opt(SQL_BRIEF, &[&id])?
            .as_ref()
            .map(brief_from_row)
            .transpose()
    }

    fn briefs(&self, ids: &[RunId]) -> Result<HashMap<RunId, RunBrief>> {
        // The one-run statement for each, all sent at once (see `steps_of`).
        let params: Vec<Vec<Owned>> = ids.iter().map(|&id| vec![Box::new(id) as Owned]).collect();
        let mut out = HashMap::with_capacity(ids.len());
        for rows in self.query_each(SQL_BRIEF, &params)? {
            if let Some(r) = rows.first() {
                let b = brief_from_row(r)?;
                out.insert(b.id, b);
            }
        }
        Ok(out)
    }

    fn run_by_key(&self, job: &str, key: &str) -> Result<Option<RunId>> {
        match self.query_opt(SQL_RUN_BY_KEY, &[&job, &key])? {
            Some(row) => Ok(Some(row.try_get(0)?)),
            None => Ok(None),
        }
    }

    fn latest_active(&self, job: &str) -> Result<Option<RunId>> {
        Ok(self.query_one(SQL_LATEST_ACTIVE, &[&job])?.try_get(0)?)
    }

    fn dep_states(&self, run: RunId) -> Result<Vec<(RunId, String, RunState)>> {
        self.query(SQL_DEP_STATES, &[&run])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, state_of(r.try_get(2)?)?)))
            .collect()
    }

    fn dependents(&self, run: RunId) -> Result<Vec<(RunId, RunState)>> {
        id_states(self.query(SQL_DEPENDENTS, &[&run])?)
    }

    fn set_state(&self, id: RunId, state: RunState) -> Result<()> {
        self.execute(
            "UPDATE runs SET state = $2 WHERE id = $1",
            &[&id, &state.as_str()],
        )?;
        Ok(())
    }

    fn finish_run(
        &self,
        id: RunId,
        state: RunState,
        now: Time,
        error: Option<&str>,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<()> {
        debug_assert!(state.is_final());
        self.execute_later(
            "UPDATE runs SET state = $2, finished_at = $3, error = $4, exit_code = $5, signal = $6, \
             owner = NULL WHERE id = $1",
            vec![
                Box::new(id),
                Box::new(state.as_str()),
                Box::new(at(now)),
                Box::new(error.map(str::to_owned)),
                Box::new(exit_code),
                Box::new(signal),
            ],
        )
    }

    fn set_retrying(
        &self,
        id: RunId,
        due_at: Time,
        error: &str,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<()> {
        self.execute(
            "UPDATE runs SET state = 'retrying', due_at = $2, error = $3, exit_code = $4, signal = $5, \
             owner = NULL, cancel_requested = false WHERE id = $1",
            &[&id, &at(due_at), &error, &exit_code, &signal],
        )?;
        Ok(())
    }

    fn requeue(&self, id: RunId, uncount: bool, now: Time) -> Result<()> {
        self.execute(
            "UPDATE runs SET state = 'queued', owner = NULL, cancel_requested = false, due_at = $3, \
             attempt = attempt - $2 WHERE id = $1",
            &[&id, &i32::from(uncount), &at(now)],
        )?;
        Ok(())
    }

    fn due_runs(&self, now: Time) -> Result<Vec<(RunId, RunState)>> {
        id_states(self.query(SQL_DUE_RUNS, &[&at(now)])?)
    }

    fn next_due(&self) -> Result<Option<Time>> {
        Ok(self.query_one(SQL_NEXT_DUE, &[])?.try_get(0)?)
    }

    fn running_counts(&self) -> Result<HashMap<String, u32>> {
        running_counts_from(&self.query(SQL_RUNNING_COUNTS, &[])?)
    }

    fn queued_jobs(&self) -> Result<Vec<String>> {
        queued_jobs_from(&self.query(SQL_QUEUED_JOBS, &[])?)
    }

    fn claim_outlook(&self) -> Result<(HashMap<String, u32>, Vec<String>)> {
        let (counts, queued) = self.query_pair(SQL_RUNNING_COUNTS, SQL_QUEUED_JOBS)?;
        Ok((running_counts_from(&counts)?, queued_jobs_from(&queued)?))
    }

    fn claim_candidates(
        &self,
        owner: &str,
        limits: &[(&str, u32)],
        free: u32,
    ) -> Result<(Vec<QueuedCandidate>, Vec<String>)> {
        let (jobs, concurrency): (Vec<&str>, Vec<i32>) = limits
            .iter()
            .map(|&(job, c)| (job, i32::try_from(c).unwrap_or(i32::MAX)))
            .unzip();
        let rows = self.query(
            SQL_CLAIM_CANDIDATES,
            &[&jobs, &concurrency, &owner, &i64::from(free)],
        )?;
        let mut queued = Vec::new();
        let mut candidates = Vec::new();
        for row in &rows {
            // Columns as `candidate_from_row` reads them; no run where the job had no room.
            if row.try_get::<_, Option<RunId>>(0)?.is_some() {
                candidates.push(candidate_from_row(row)?);
            }
            queued.push(row.try_get::<_, String>(1)?);
        }
        // One row per candidate: each job once, sorted by byte as the other engine lists them.
        queued.sort_unstable();
        queued.dedup();
        Ok((candidates, queued))
    }

    fn queued_of_job(
        &self,
        job: &str,
        after: Option<&QueuedCandidate>,
        limit: u32,
    ) -> Result<Vec<QueuedCandidate>> {
        let limit = i64::from(limit);
        let rows = match after {
            None => self.query(SQL_QUEUED_JOB_FIRST, &[&job, &limit])?,
            Some(c) => {
                let priority = i32::try_from(c.priority)
                    .map_err(|_| corrupt(format!("priority {}", c.priority)))?;
                let due_at = chrono::DateTime::from_timestamp_millis(c.due_at)
                    .ok_or_else(|| corrupt(format!("timestamp {}", c.due_at)))?;
                self.query(
                    SQL_QUEUED_JOB_AFTER,
                    &[&job, &priority, &due_at, &c.id, &limit],
                )?
            }
        };
        rows.iter().map(candidate_from_row).collect()
    }

    fn start_attempt(&self, id: RunId, owner: &str, now: Time, resume: bool) -> Result<(Run, u32)> {
        let mut started = self.start_attempts(&[(id, resume)], owner, now)?;
        started
            .pop()
            .ok_or_else(|| corrupt(format!("run {id} was not started")))
    }

    fn start_attempts(
        &self,
        runs: &[(RunId, bool)],
        owner: &str,
        now: Time,
    ) -> Result<Vec<(Run, u32)>> {
        // One statement per run: the run's update, its last attempt's number, and the new
        // attempt's row. The CTEs share one snapshot: `last` reads the attempts before the
        // insert, which takes the run's new attempt count from the update. Resumed runs go on
        // with their last attempt. The two kinds are sent as two pipelines, each one round trip.
        const RESUME: &str = concat!(
            "WITH r AS (UPDATE runs SET state = 'running', owner = $2, resume = false \
             WHERE id = $1 AND state = 'queued' RETURNING ",
            run_columns!(),
            ") SELECT r.*, (SELECT max(seq) FROM attempts WHERE run_id = $1) AS attempt_seq \
             FROM r"
        );
        const START: &str = concat!(
            "WITH r AS (UPDATE runs SET state = 'running', owner = $2, attempt = attempt + 1, \
             started_at = coalesce(started_at, $3) WHERE id = $1 AND state = 'queued' RETURNING ",
            run_columns!(),
            "), last AS (SELECT coalesce(max(seq), 0) AS seq FROM attempts WHERE run_id = $1), \
             a AS (INSERT INTO attempts (run_id, seq, number, started_at) \
             SELECT r.id, last.seq + 1, r.attempt, $3 FROM r, last RETURNING seq) \
             SELECT r.*, a.seq AS attempt_seq FROM r, a"
        );
        let params = |resume: bool| -> Vec<Vec<Owned>> {
            runs.iter()
                .filter(|r| r.1 == resume)
                .map(|&(id, _)| -> Vec<Owned> {
                    if resume {
                        vec![Box::new(id), Box::new(owner.to_owned())]
                    } else {
                        vec![Box::new(id), Box::new(owner.to_owned()), Box::new(at(now))]
                    }
                })
                .collect()
        };
        let mut fresh = self.query_each(START, &params(false))?.into_iter();
        let mut resumed = self.query_each(RESUME, &params(true))?.into_iter();
        let mut out = Vec::with_capacity(runs.len());
        for &(id, resume) in runs {
            let rows = if resume { resumed.next() } else { fresh.next() };
            let Some(row) = rows.and_then(|r| r.into_iter().next()) else {
                return Err(corrupt(format!("run {id} is not queued")));
            };
            let run = run_from_row(&row)?;
            // The last attempt (resume) or the new one.
            let seq: Option<i32> = row.try_get("attempt_seq")?;
            let seq = seq.map(count_of).transpose()?.unwrap_or(0);
            out.push((run, seq));
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn end_attempt(
        &self,
        run: RunId,
        seq: u32,
        now: Time,
        outcome: &str,
        exit_code: Option<i32>,
        signal: Option<i32>,
        error: Option<&str>,
        output_bytes: Option<u64>,
    ) -> Result<()> {
        self.execute_later(
            "UPDATE attempts SET finished_at = $3, outcome = $4, exit_code = $5, signal = $6, error = $7, \
             output_bytes = $8 WHERE run_id = $1 AND seq = $2",
            vec![
                Box::new(run),
                Box::new(int(seq)?),
                Box::new(at(now)),
                Box::new(outcome.to_owned()),
                Box::new(exit_code),
                Box::new(signal),
                Box::new(error.map(str::to_owned)),
                // As SQLite stores it (a u64 beyond i64::MAX is not a byte count anyone wrote).
                Box::new(output_bytes.map(|b| b as i64)),
            ],
        )
    }

    fn set_attempt_output(&self, run: RunId, seq: u32, output: &[u8]) -> Result<()> {
        self.execute_later(
            "UPDATE attempts SET output = $3 WHERE run_id = $1 AND seq = $2",
            vec![
                Box::new(run),
                Box::new(seq as i32),
                Box::new(output.to_vec()),
            ],
        )
    }

    fn attempt_output(&self, run: RunId, seq: u32) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query_opt(
                "SELECT output FROM attempts WHERE run_id = $1 AND seq = $2",
                &[&run, &(seq as i32)],
            )?
            .and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
    }

    fn open_attempt(&self, run: RunId) -> Result<Option<(u32, u32)>> {
        match self.query_opt(
            "SELECT seq, number FROM attempts WHERE run_id = $1 AND finished_at IS NULL \
             ORDER BY seq DESC LIMIT 1",
            &[&run],
        )? {
            Some(r) => Ok(Some((count_of(r.try_get(0)?)?, count_of(r.try_get(1)?)?))),
            None => Ok(None),
        }
    }

    fn running(&self) -> Result<Vec<RunBrief>> {
        self.query(SQL_RUNNING, &[])?
            .iter()
            .map(brief_from_row)
            .collect()
    }

    fn owners(&self) -> Result<Vec<String>> {
        let mut owners = self
            .query(SQL_OWNERS, &[])?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect::<Result<Vec<String>>>()?;
        owners.sort_unstable();
        Ok(owners)
    }

    fn reserved_by(&self, owner: &str) -> Result<Vec<RunId>> {
        ids(self.query(SQL_RESERVED_BY, &[&owner])?)
    }

    fn release(&self, id: RunId) -> Result<()> {
        self.execute("UPDATE runs SET owner = NULL WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn cancel_requests(&self, owner: &str) -> Result<Vec<RunId>> {
        ids(self.query(SQL_CANCEL_REQUESTS, &[&owner])?)
    }

    fn request_cancel(&self, id: RunId) -> Result<()> {
        self.execute(
            "UPDATE runs SET cancel_requested = true WHERE id = $1",
            &[&id],
        )?;
        Ok(())
    }

    fn set_retried_by(&self, id: RunId, by: RunId) -> Result<()> {
        self.execute("UPDATE runs SET retried_by = $2 WHERE id = $1", &[&id, &by])?;
        Ok(())
    }

    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let (cond, mut params) = filter_sql(filter);
        let mut sql = format!(concat!("SELECT ", run_columns!(), " FROM runs{}"), cond);
        sql.push_str(if filter.newest_first {
            " ORDER BY id DESC"
        } else if filter.finished || filter.dlq {
            // Every run listed has finished (a dead run always has its `finished_at`), so where
            // PostgreSQL puts NULLs (first, descending; SQLite puts them last) does not arise,
            // and `runs_finished` / `runs_dead` read backwards give the order.
            " ORDER BY finished_at DESC, id DESC"
        } else {
            " ORDER BY id"
        });
        if let Some(limit) = filter.limit {
            params.push(Box::new(i64::from(limit)));
            sql.push_str(&format!(" LIMIT ${}", params.len()));
        }
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let mut out = self
            .query(&sql, &refs)?
            .iter()
            .map(run_from_row)
            .collect::<Result<Vec<Run>>>()?;
        if out.is_empty() {
            return Ok(out);
        }
        // Every listed run's dependencies in one statement.
        let listed: Vec<RunId> = out.iter().map(|r| r.id).collect();
        let mut deps: HashMap<RunId, Vec<RunId>> = HashMap::new();
        for row in self.query(
            "SELECT d.run_id, d.dep_id FROM run_deps d JOIN runs r ON r.id = d.dep_id \
             WHERE d.run_id = ANY($1) ORDER BY d.run_id, d.dep_id",
            &[&listed],
        )? {
            deps.entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
        for run in &mut out {
            run.depends_on = deps.remove(&run.id).unwrap_or_default();
            if run.has_steps {
                run.steps = self.steps(run.id)?;
            }
        }
        Ok(out)
    }

    fn dlq_ids(&self, job: Option<&str>) -> Result<Vec<RunId>> {
        ids(match job {
            None => self.query(SQL_DLQ_IDS, &[])?,
            Some(job) => self.query(SQL_DLQ_IDS_OF_JOB, &[&job])?,
        })
    }

    fn count_runs(&self, filter: &RunFilter) -> Result<u64> {
        let (cond, params) = filter_sql(filter);
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let row = self.query_one(&format!("SELECT count(*) FROM runs{cond}"), &refs)?;
        count_u64(&row, 0)
    }

    fn unfinished_ids(
        &self,
        before: RunId,
        job: Option<&str>,
        states: &[RunState],
        limit: u32,
    ) -> Result<Vec<RunId>> {
        let states: Vec<&str> = if states.is_empty() {
            RunState::ALL
                .iter()
                .filter(|s| !s.is_final())
                .map(|s| s.as_str())
                .collect()
        } else {
            states.iter().map(|s| s.as_str()).collect()
        };
        let limit = i64::from(limit);
        ids(match job {
            None => self.query(SQL_UNFINISHED_IDS, &[&states, &before, &limit])?,
            Some(job) => {
                self.query(SQL_UNFINISHED_IDS_OF_JOB, &[&states, &before, &limit, &job])?
            }
        })
    }

    fn attempts(&self, run: RunId) -> Result<Vec<Attempt>> {
        self.query(
            "SELECT run_id, seq, number, started_at, finished_at, exit_code, signal, outcome, error, \
             output_bytes FROM attempts WHERE run_id = $1 ORDER BY seq",
            &[&run],
        )?
        .iter()
        .map(|r| {
            Ok(Attempt {
                run_id: r.try_get(0)?,
                seq: count_of(r.try_get(1)?)?,
                number: count_of(r.try_get(2)?)?,
                started_at: r.try_get(3)?,
                finished_at: r.try_get(4)?,
                exit_code: r.try_get(5)?,
                signal: r.try_get(6)?,
                outcome: r.try_get(7)?,
                error: r.try_get(8)?,
                output_bytes: r.try_get::<_, Option<i64>>(9)?.map(|b| b as u64),
            })
        })
        .collect()
    }

    fn state_counts(&self) -> Result<BTreeMap<String, u64>> {
        self.query("SELECT state, count(*) FROM runs GROUP BY state", &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, count_u64(r, 1)?)))
            .collect()
    }

    fn job_state_counts(&self) -> Result<Vec<(String, String, u64)>> {
        self.query(
            "SELECT job, state, count(*) FROM runs GROUP BY job, state \
             ORDER BY job COLLATE \"C\", state COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, count_u64(r, 2)?)))
        .collect()
    }

    fn job_stats(&self) -> Result<Vec<JobStats>> {
        let mut stats: BTreeMap<String, JobStats> = BTreeMap::new();
        for row in self.query(
            "SELECT job, state, count(*) FROM runs WHERE state IN ('succeeded', 'dead', 'cancelled') \
             GROUP BY job, state",
            &[],
        )? {
            let job: String = row.try_get(0)?;
            let n = count_u64(&row, 2)?;
            let e = stats.entry(job.clone()).or_insert_with(|| JobStats {
                job,
                succeeded: 0,
                dead: 0,
                cancelled: 0,
                p50_ms: None,
                p95_ms: None,
            });
            match row.try_get::<_, &str>(1)? {
                "succeeded" => e.succeeded = n,
                "dead" => e.dead = n,
                _ => e.cancelled = n,
            }
        }
        // Nearest rank, computed by the database: the ceil(p/100 × n)-th of each job's n
        // durations (of succeeded or dead runs' last attempts, when finished), 1-based.
        for row in self.query(
            "SELECT job, max(d) FILTER (WHERE rn = (50 * n + 99) / 100), \
             max(d) FILTER (WHERE rn = (95 * n + 99) / 100) FROM (\
             SELECT job, d, row_number() OVER (PARTITION BY job ORDER BY d) AS rn, \
             count(*) OVER (PARTITION BY job) AS n FROM (\
             SELECT r.job, (extract(epoch FROM a.finished_at - a.started_at) * 1000)::bigint AS d \
             FROM runs r JOIN attempts a ON a.run_id = r.id \
             WHERE r.state IN ('succeeded', 'dead') AND a.finished_at IS NOT NULL \
             AND a.seq = (SELECT max(seq) FROM attempts WHERE run_id = r.id)) durations) ranked \
             GROUP BY job",
            &[],
        )? {
            let job: &str = row.try_get(0)?;
            if let Some(s) = stats.get_mut(job) {
                s.p50_ms = row.try_get(1)?;
                s.p95_ms = row.try_get(2)?;
            }
        }
        Ok(stats.into_values().collect())
    }

    fn purge(&self, before: Option<Time>, dead_only: bool) -> Result<Vec<Purged>> {
        // What names their output files goes with them (attempts and steps cascade): the one
        // statement reads it from the snapshot the deletion started with.
        let rows = match (before.map(at), dead_only) {
            (None, false) => self.query(purge_sql!(""), &[])?,
            (None, true) => self.query(purge_sql!(" AND state = 'dead'"), &[])?,
            (Some(t), false) => self.query(purge_sql!(" AND finished_at < $1"), &[&t])?,
            (Some(t), true) => self.query(
                purge_sql!(" AND finished_at < $1 AND state = 'dead'"),
                &[&t],
            )?,
        };
        rows.iter()
            .map(|r| {
                let seqs: Vec<i32> = r.try_get(1)?;
                let names: Vec<String> = r.try_get(2)?;
                let executions: Vec<i32> = r.try_get(3)?;
                Ok(Purged {
                    id: r.try_get(0)?,
                    seqs: seqs.into_iter().map(count_of).collect::<Result<_>>()?,
                    steps: names
                        .into_iter()
                        .zip(executions)
                        .map(|(name, n)| Ok((name, count_of(n)?)))
                        .collect::<Result<_>>()?,
                })
            })
            .collect()
    }

    fn attempt_seqs(&self, id: RunId) -> Result<Vec<u32>> {
        self.query(
            "SELECT seq FROM attempts WHERE run_id = $1 ORDER BY seq",
            &[&id],
        )?
        .iter()
        .map(|r| count_of(r.try_get(0)?))
        .collect()
    }

    fn last_finished_per_job(&self) -> Result<BTreeMap<String, (RunState, Time)>> {
        self.query(SQL_LAST_FINISHED_PER_JOB, &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, (state_of(r.try_get(1)?)?, r.try_get(2)?))))
            .collect()
    }

    fn status_counts(&self) -> Result<StatusCounts> {
        let row = self.query_one(SQL_STATUS_COUNTS, &[])?;
        Ok(StatusCounts {
            running: count_u64(&row, 0)?,
            queued: count_u64(&row, 1)?,
            waiting: count_u64(&row, 2)?,
            dead: count_u64(&row, 3)?,
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        match self.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])? {
            Some(r) => Ok(Some(r.try_get(0)?)),
            None => Ok(None),
        }
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }
}

/// The WHERE clause of `filter` and its parameters (`$1`…, in order). Its shape depends only on
/// which parts of the filter are set (so each shape is prepared once); every value is bound.
fn filter_sql(filter: &RunFilter) -> (String, Vec<Param>) {
    let mut sql = String::from(" WHERE true");
    let mut params: Vec<Param> = Vec::new();
    if let Some(job) = &filter.job {
        params.push(Box::new(job.clone()));
        sql.push_str(&format!(" AND job = ${}", params.len()));
    }
    if !filter.states.is_empty() {
        if filter.states.iter().all(|st| !st.is_final()) {
            // The literal predicate of `runs_active`, for any plan (the bound states are not
            // known when a generic plan is made).
            sql.push_str(concat!(" AND ", active!()));
        }
        let states: Vec<&'static str> = filter.states.iter().map(|s| s.as_str()).collect();
        params.push(Box::new(states));
        sql.push_str(&format!(" AND state = ANY(${})", params.len()));
    }
    if filter.finished {
        sql.push_str(" AND finished_at IS NOT NULL");
    }
    if filter.dlq {
        sql.push_str(" AND state = 'dead' AND retried_by IS NULL");
    }
    if let Some(before) = filter.before {
        params.push(Box::new(before));
        sql.push_str(&format!(" AND id < ${}", params.len()));
    }
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::super::{PgStore, wait};
    use super::HOT_SQL;
    use crate::store::Location;
    use crate::store::testing::{Engine, TestStore};
    use tokio_postgres::types::Type;

    /// A store migrated from version 2 (before `job_running`) counts the runs that were
    /// running then, and keeps counting from there.
    #[test]
    fn running_counts_carry_over_the_migration_that_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let Some(test_store) = TestStore::new(Engine::Postgres, dir.path()) else {
            return;
        };
        let Location::Postgres(url) = &test_store.location else {
            unreachable!()
        };
        let client = PgStore::open_client(url).unwrap();
        let v2 = super::super::migrations::MIGRATIONS[..2].join("\n");
        wait(client.batch_execute(&format!(
            "{v2}
             CREATE TABLE worker_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO worker_schema (version) VALUES (1), (2);
             INSERT INTO runs (job, state, priority, trigger, max_attempts, created_at, due_at, owner) \
             SELECT 'j' || (i % 2), (ARRAY['running', 'queued', 'succeeded'])[1 + i % 3], 1, 'queue', 1, \
             now(), now(), 'daemon' FROM generate_series(1, 12) i;"
        )))
        .unwrap();
        drop(client);
        let mut store = test_store.open();
        let counts =
            |store: &mut crate::store::Store| store.read(|tx| tx.running_counts()).unwrap();
        let expected: std::collections::HashMap<String, u32> =
            [("j0".to_string(), 2), ("j1".to_string(), 2)]
                .into_iter()
                .collect();
        assert_eq!(counts(&mut store), expected);
        // Run 4 is queued in job j0: started, it counts; run 3 (running, j1) ends.
        store
            .write(|tx| {
                tx.start_attempt(4, "daemon", chrono::Utc::now(), false)?;
                tx.finish_run(
                    3,
                    crate::model::RunState::Succeeded,
                    chrono::Utc::now(),
                    None,
                    Some(0),
                    None,
                )
            })
            .unwrap();
        let expected: std::collections::HashMap<String, u32> =
            [("j0".to_string(), 3), ("j1".to_string(), 1)]
                .into_iter()
                .collect();
        assert_eq!(counts(&mut store), expected);
    }

    /// A realistic value for a parameter of `ty`, as an SQL literal.
    fn literal(ty: &Type) -> &'static str {
        match *ty {
            Type::INT4 | Type::INT8 => "'10'",
            Type::FLOAT8 => "'30'",
            Type::TIMESTAMPTZ => "'2026-11-21T12:00:00Z'",
            Type::TEXT_ARRAY => "'{queued,running}'",
            Type::INT4_ARRAY => "'{2,3}'",
            Type::TEXT => "'j3'",
            _ => panic!("no test value for a parameter of type {ty}"),
        }
    }

    /// A full scan of `runs` on the engine's path costs O(history) per turn: with a million
    /// finished runs, every start would wait for it. Each hot statement must use an index, in
    /// the plan made for its values (the first executions of a prepared statement) and in the
    /// generic plan PostgreSQL may switch to after five — with the statistics of a table that
    /// holds mostly history, as the planner would see it in production.
    #[test]
    fn hot_statements_never_scan_the_runs_table() {
        let dir = tempfile::tempdir().unwrap();
        let Some(test_store) = TestStore::new(Engine::Postgres, dir.path()) else {
            return;
        };
        drop(test_store.open()); // creates the schema
        let Location::Postgres(url) = &test_store.location else {
            unreachable!()
        };
        let client = PgStore::open_client(url).unwrap();
        wait(client.batch_execute(
            "INSERT INTO runs (job, state, priority, trigger, max_attempts, attempt, created_at, due_at, \
             started_at, finished_at, error) \
             SELECT 'j' || (i % 10), CASE WHEN i % 50 = 0 THEN 'dead' WHEN i % 70 = 0 THEN 'cancelled' \
             ELSE 'succeeded' END, 1, 'queue', 1, 1, t, t, t, t + interval '3 seconds', NULL \
             FROM generate_series(1, 5000) i, LATERAL (SELECT timestamptz '2026-01-01' + i * interval '1 minute' AS t) x;
             INSERT INTO attempts (run_id, seq, number, started_at, finished_at, outcome) \
             SELECT id, 1, 1, started_at, finished_at, 'succeeded' FROM runs;
             INSERT INTO run_deps (run_id, dep_id) SELECT id, id - 1 FROM runs WHERE id % 3 = 0;
             INSERT INTO runs (job, state, priority, trigger, max_attempts, created_at, due_at, owner) \
             SELECT 'j' || (i % 4), (ARRAY['queued', 'queued', 'queued', 'running', 'waiting', 'delayed', \
             'retrying'])[1 + i % 7], i % 4, 'queue', 3, now(), now() + i * interval '1 second', \
             CASE WHEN i % 7 = 3 THEN 'daemon' END FROM generate_series(1, 40) i;
             ANALYZE runs; ANALYZE attempts; ANALYZE run_deps;",
        ))
        .unwrap();
        let beat = [super::super::nodes::SQL_BEAT];
        for (i, sql) in HOT_SQL.iter().chain(&beat).enumerate() {
            let params = wait(client.prepare(sql)).unwrap().params().to_vec();
            for (mode, args) in [
                (
                    "force_custom_plan",
                    params.iter().map(literal).collect::<Vec<_>>(),
                ),
                ("force_generic_plan", vec!["NULL"; params.len()]),
            ] {
                let args = if args.is_empty() {
                    String::new()
                } else {
                    format!("({})", args.join(", "))
                };
                let explain = format!(
                    "SET plan_cache_mode = {mode}; PREPARE hot_{i}_{mode} AS {sql}; \
                     EXPLAIN EXECUTE hot_{i}_{mode}{args}"
                );
                let plan: Vec<String> = wait(client.simple_query(&explain))
                    .unwrap()
                    .into_iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                        _ => None,
                    })
                    .collect();
                eprintln!("{mode}: {sql}\n{}", plan.join("\n"));
                assert!(
                    !plan.iter().any(|l| l.contains("Seq Scan on runs")),
                    "full scan of runs ({mode}) for:\n{sql}\nplan:\n{}",
                    plan.join("\n")
                );
            }
        }
    }
}
