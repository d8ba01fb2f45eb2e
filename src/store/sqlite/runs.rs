//! SQLite: runs, their dependencies and attempts.

use super::{Result, SqliteTx, StoreError, ms, opt_time, time};
use crate::model::{Attempt, Priority, Run, RunId, RunState, Time};
use crate::store::StepOps;
use crate::store::runs::*;
use rusqlite::{OptionalExtension, Row, params};
use std::collections::{BTreeMap, HashMap};

const RUN_COLUMNS: &str = "id, job, state, priority, trigger, key, attempt, max_attempts, created_at, due_at, \
     started_at, finished_at, exit_code, signal, error, env, schedule, scheduled_at, owner, cancel_requested, \
     retried_by, retry_of, input, definition, origin, resume";

fn state_of(s: &str) -> Result<RunState> {
    s.parse().map_err(StoreError::Corrupt)
}

fn run_from_row(row: &Row<'_>) -> Result<Run> {
    let env: Option<String> = row.get(15)?;
    let env = match env {
        Some(text) if !text.is_empty() => {
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?
        }
        _ => BTreeMap::new(),
    };
    Ok(Run {
        id: row.get(0)?,
        job: row.get(1)?,
        state: state_of(&row.get::<_, String>(2)?)?,
        priority: Priority::from_rank(row.get(3)?),
        trigger: row
            .get::<_, String>(4)?
            .parse()
            .map_err(StoreError::Corrupt)?,
        key: row.get(5)?,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        created_at: time(row.get(8)?)?,
        due_at: time(row.get(9)?)?,
        started_at: opt_time(row.get(10)?)?,
        finished_at: opt_time(row.get(11)?)?,
        exit_code: row.get(12)?,
        signal: row.get(13)?,
        error: row.get(14)?,
        env,
        schedule: row.get(16)?,
        scheduled_at: opt_time(row.get(17)?)?,
        owner: row.get(18)?,
        cancel_requested: row.get::<_, i64>(19)? != 0,
        retried_by: row.get(20)?,
        retry_of: row.get(21)?,
        depends_on: Vec::new(),
        input: match row.get::<_, Option<String>>(22)? {
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            }
            None => None,
        },
        has_steps: row.get::<_, Option<i64>>(23)?.is_some(),
        definition: row.get(23)?,
        origin: row.get(24)?,
        resume: row.get::<_, i64>(25)? != 0,
        steps: Vec::new(),
    })
}

fn brief_from_row(row: &Row<'_>) -> Result<RunBrief> {
    Ok(RunBrief {
        id: row.get(0)?,
        job: row.get(1)?,
        state: state_of(&row.get::<_, String>(2)?)?,
        attempt: row.get(3)?,
        max_attempts: row.get(4)?,
        owner: row.get(5)?,
        cancel_requested: row.get::<_, i64>(6)? != 0,
        has_dependents: row.get::<_, i64>(7)? != 0,
    })
}

// Statements of the engine's hot path, named so that a test can check their query plans.
const SQL_LATEST_ACTIVE: &str = concat!("SELECT max(id) FROM runs WHERE job = ?1 AND ", active!());

const SQL_DUE_RUNS: &str = "SELECT id, state FROM runs WHERE state IN ('delayed', 'retrying', 'suspended') AND due_at <= ?1 ORDER BY due_at, id";

const SQL_NEXT_DUE: &str =
    "SELECT min(due_at) FROM runs WHERE state IN ('delayed', 'retrying', 'suspended')";

const SQL_RUNNING_COUNTS: &str = concat!(
    "SELECT job, count(*) FROM runs WHERE ",
    active!(),
    " AND state = 'running' GROUP BY job"
);

const SQL_OWNERS: &str = concat!(
    "SELECT DISTINCT owner FROM runs WHERE ",
    active!(),
    " AND owner IS NOT NULL"
);

const SQL_RESERVED_BY: &str = concat!(
    "SELECT id FROM runs WHERE ",
    active!(),
    " AND state IN ('delayed', 'waiting', 'queued', 'retrying', 'suspended') AND owner = ?1 ORDER BY id"
);

const SQL_CANCEL_REQUESTS: &str = concat!(
    "SELECT id FROM runs WHERE ",
    active!(),
    " AND state = 'running' AND owner = ?1 AND cancel_requested = 1 ORDER BY id"
);

const SQL_QUEUED_JOB_FIRST: &str = "SELECT id, job, priority, due_at, owner, resume FROM runs WHERE state = 'queued' \
     AND job = ?1 ORDER BY priority DESC, due_at, id LIMIT ?2";

const SQL_QUEUED_JOB_AFTER: &str = "SELECT id, job, priority, due_at, owner, resume FROM runs WHERE state = 'queued' \
     AND job = ?1 AND (priority < ?2 OR (priority = ?2 AND (due_at > ?3 OR (due_at = ?3 AND id > ?4)))) \
     ORDER BY priority DESC, due_at, id LIMIT ?5";

const SQL_QUEUED_JOB_NEXT: &str = concat!(
    "SELECT job FROM runs WHERE ",
    active!(),
    " AND state = 'queued' AND job > ?1 ORDER BY job LIMIT 1"
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
    SQL_QUEUED_JOB_NEXT,
    "SELECT count(*) FROM runs WHERE state = 'dead' AND retried_by IS NULL",
    concat!(
        "SELECT count(*) FROM runs WHERE ",
        active!(),
        " AND state = 'running'"
    ),
    concat!(
        "SELECT id, state FROM runs WHERE job = ?1 AND ",
        active!(),
        " ORDER BY id"
    ),
];

const BRIEF_COLUMNS: &str = "id, job, state, attempt, max_attempts, owner, cancel_requested, \
     EXISTS (SELECT 1 FROM run_deps d WHERE d.dep_id = runs.id)";

impl RunOps for SqliteTx<'_> {
    fn insert_run(&self, r: &NewRun<'_>) -> Result<RunId> {
        let env = if r.env.is_empty() {
            None
        } else {
            Some(serde_json::to_string(r.env).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        };
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO runs (job, state, priority, trigger, key, max_attempts, created_at, due_at, env, schedule, \
             scheduled_at, owner, retry_of, error, finished_at, definition, input, origin) VALUES (?1, ?2, ?3, ?4, ?5, \
             ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        stmt.execute(params![
            r.job,
            r.state.as_str(),
            r.priority.rank(),
            r.trigger.as_str(),
            r.key,
            r.max_attempts,
            ms(r.created_at),
            ms(r.due_at),
            env,
            r.schedule,
            r.scheduled_at.map(ms),
            r.owner,
            r.retry_of,
            r.error,
            r.finished_at.map(ms),
            r.definition,
            r.input,
            r.origin,
        ])?;
        Ok(self.tx.last_insert_rowid())
    }

    fn insert_dep(&self, run: RunId, dep: RunId) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO run_deps (run_id, dep_id) VALUES (?1, ?2)")?;
        stmt.execute(params![run, dep])?;
        Ok(())
    }

    fn run(&self, id: RunId) -> Result<Option<Run>> {
        let mut stmt = self
            .tx
            .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?;
        let mut rows = stmt.query([id])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let mut run = run_from_row(row)?;
        drop(rows);
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
        let mut stmt = self
            .tx
            .prepare_cached(&format!("SELECT {BRIEF_COLUMNS} FROM runs WHERE id = ?1"))?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => Ok(Some(brief_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn run_by_key(&self, job: &str, key: &str) -> Result<Option<RunId>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT id FROM runs WHERE job = ?1 AND key = ?2")?;
        Ok(stmt.query_row(params![job, key], |r| r.get(0)).optional()?)
    }

    fn latest_active(&self, job: &str) -> Result<Option<RunId>> {
        let mut stmt = self.tx.prepare_cached(SQL_LATEST_ACTIVE)?;
        Ok(stmt.query_row([job], |r| r.get(0))?)
    }

    fn dep_states(&self, run: RunId) -> Result<Vec<(RunId, String, RunState)>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT r.id, r.job, r.state FROM run_deps d JOIN runs r ON r.id = d.dep_id WHERE d.run_id = ?1 ORDER BY d.dep_id",
        )?;
        let rows = stmt.query_map([run], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?))
        })?;
        rows.map(|row| {
            let (id, job, st) = row?;
            Ok((id, job, state_of(&st)?))
        })
        .collect()
    }

    fn dependents(&self, run: RunId) -> Result<Vec<(RunId, RunState)>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT r.id, r.state FROM run_deps d JOIN runs r ON r.id = d.run_id WHERE d.dep_id = ?1 ORDER BY d.run_id",
        )?;
        let rows = stmt.query_map([run], |r| Ok((r.get(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (id, st) = row?;
            Ok((id, state_of(&st)?))
        })
        .collect()
    }

    fn set_state(&self, id: RunId, state: RunState) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("UPDATE runs SET state = ?2 WHERE id = ?1")?;
        stmt.execute(params![id, state.as_str()])?;
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
        let mut stmt = self.tx.prepare_cached(
            "UPDATE runs SET state = ?2, finished_at = ?3, error = ?4, exit_code = ?5, signal = ?6, \
             owner = NULL WHERE id = ?1",
        )?;
        stmt.execute(params![
            id,
            state.as_str(),
            ms(now),
            error,
            exit_code,
            signal
        ])?;
        Ok(())
    }

    fn set_retrying(
        &self,
        id: RunId,
        due_at: Time,
        error: &str,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE runs SET state = 'retrying', due_at = ?2, error = ?3, exit_code = ?4, signal = ?5, owner = NULL, \
             cancel_requested = 0 WHERE id = ?1",
        )?;
        stmt.execute(params![id, ms(due_at), error, exit_code, signal])?;
        Ok(())
    }

    fn requeue(&self, id: RunId, uncount: bool, now: Time) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE runs SET state = 'queued', owner = NULL, cancel_requested = 0, due_at = ?3, \
             attempt = attempt - ?2 WHERE id = ?1",
        )?;
        stmt.execute(params![id, i64::from(uncount), ms(now)])?;
        Ok(())
    }

    fn due_runs(&self, now: Time) -> Result<Vec<(RunId, RunState)>> {
        let mut stmt = self.tx.prepare_cached(SQL_DUE_RUNS)?;
        let rows = stmt.query_map([ms(now)], |r| Ok((r.get(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (id, st) = row?;
            Ok((id, state_of(&st)?))
        })
        .collect()
    }

    fn next_due(&self) -> Result<Option<Time>> {
        let mut stmt = self.tx.prepare_cached(SQL_NEXT_DUE)?;
        let v: Option<i64> = stmt.query_row([], |r| r.get(0))?;
        opt_time(v)
    }

    fn running_counts(&self) -> Result<HashMap<String, u32>> {
        let mut stmt = self.tx.prepare_cached(SQL_RUNNING_COUNTS)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn queued_jobs(&self) -> Result<Vec<String>> {
        let mut stmt = self.tx.prepare_cached(SQL_QUEUED_JOB_NEXT)?;
        let mut out: Vec<String> = Vec::new();
        loop {
            let after = out.last().map(String::as_str).unwrap_or("");
            match stmt
                .query_row([after], |r| r.get::<_, String>(0))
                .optional()?
            {
                Some(job) => out.push(job),
                None => return Ok(out),
            }
        }
    }

    fn queued_of_job(
        &self,
        job: &str,
        after: Option<&QueuedCandidate>,
        limit: u32,
    ) -> Result<Vec<QueuedCandidate>> {
        let map = |r: &Row<'_>| {
            Ok(QueuedCandidate {
                id: r.get(0)?,
                job: r.get(1)?,
                priority: r.get(2)?,
                due_at: r.get(3)?,
                owner: r.get(4)?,
                resume: r.get::<_, i64>(5)? != 0,
            })
        };
        let rows = match after {
            None => {
                let mut stmt = self.tx.prepare_cached(SQL_QUEUED_JOB_FIRST)?;
                stmt.query_map(params![job, limit], map)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
            Some(c) => {
                let mut stmt = self.tx.prepare_cached(SQL_QUEUED_JOB_AFTER)?;
                stmt.query_map(params![job, c.priority, c.due_at, c.id, limit], map)?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        Ok(rows)
    }

    fn start_attempt(&self, id: RunId, owner: &str, now: Time, resume: bool) -> Result<(Run, u32)> {
        // Plain UPDATE, then SELECT: a RETURNING clause makes SQLite build and tear down an
        // ephemeral table (a page cache of its own) per statement, which costs more than the
        // second, cached statement.
        let changed = if resume {
            self.tx
                .prepare_cached(
                    "UPDATE runs SET state = 'running', owner = ?2, resume = 0 WHERE id = ?1 AND state = 'queued'",
                )?
                .execute(params![id, owner])?
        } else {
            self.tx
                .prepare_cached(
                    "UPDATE runs SET state = 'running', owner = ?2, attempt = attempt + 1, \
                     started_at = coalesce(started_at, ?3) WHERE id = ?1 AND state = 'queued'",
                )?
                .execute(params![id, owner, ms(now)])?
        };
        if changed != 1 {
            return Err(StoreError::Corrupt(format!("run {id} is not queued")));
        }
        let run = {
            let mut stmt = self
                .tx
                .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?;
            let mut rows = stmt.query([id])?;
            match rows.next()? {
                Some(row) => run_from_row(row)?,
                None => return Err(StoreError::Corrupt(format!("run {id} vanished"))),
            }
        };
        let last: Option<u32> = self
            .tx
            .prepare_cached("SELECT max(seq) FROM attempts WHERE run_id = ?1")?
            .query_row([id], |r| r.get(0))?;
        if resume {
            return Ok((run, last.unwrap_or(0)));
        }
        let seq = last.unwrap_or(0) + 1;
        self.tx
            .prepare_cached(
                "INSERT INTO attempts (run_id, seq, number, started_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, seq, run.attempt, ms(now)])?;
        Ok((run, seq))
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
        let mut stmt = self.tx.prepare_cached(
            "UPDATE attempts SET finished_at = ?3, outcome = ?4, exit_code = ?5, signal = ?6, error = ?7, \
             output_bytes = ?8 WHERE run_id = ?1 AND seq = ?2",
        )?;
        stmt.execute(params![
            run,
            seq,
            ms(now),
            outcome,
            exit_code,
            signal,
            error,
            output_bytes.map(|b| b as i64)
        ])?;
        Ok(())
    }

    fn set_attempt_output(&self, run: RunId, seq: u32, output: &[u8]) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE attempts SET output = ?3 WHERE run_id = ?1 AND seq = ?2")?
            .execute(params![run, seq, output])?;
        Ok(())
    }

    fn attempt_output(&self, run: RunId, seq: u32) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tx
            .prepare_cached("SELECT output FROM attempts WHERE run_id = ?1 AND seq = ?2")?
            .query_row(params![run, seq], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
    }

    fn open_attempt(&self, run: RunId) -> Result<Option<(u32, u32)>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT seq, number FROM attempts WHERE run_id = ?1 AND finished_at IS NULL ORDER BY seq DESC LIMIT 1",
        )?;
        Ok(stmt
            .query_row([run], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn running(&self) -> Result<Vec<RunBrief>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {BRIEF_COLUMNS} FROM runs WHERE {} AND state = 'running' ORDER BY id",
            active!()
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(brief_from_row(row)?);
        }
        Ok(out)
    }

    fn owners(&self) -> Result<Vec<String>> {
        let mut stmt = self.tx.prepare_cached(SQL_OWNERS)?;
        Ok(stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn reserved_by(&self, owner: &str) -> Result<Vec<RunId>> {
        let mut stmt = self.tx.prepare_cached(SQL_RESERVED_BY)?;
        Ok(stmt
            .query_map([owner], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn release(&self, id: RunId) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE runs SET owner = NULL WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    fn cancel_requests(&self, owner: &str) -> Result<Vec<RunId>> {
        let mut stmt = self.tx.prepare_cached(SQL_CANCEL_REQUESTS)?;
        Ok(stmt
            .query_map([owner], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn request_cancel(&self, id: RunId) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE runs SET cancel_requested = 1 WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    fn set_retried_by(&self, id: RunId, by: RunId) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE runs SET retried_by = ?2 WHERE id = ?1")?
            .execute([id, by])?;
        Ok(())
    }

    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let (cond, args) = Self::filter_sql(filter);
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs{cond}");
        sql.push_str(if filter.newest_first {
            " ORDER BY id DESC"
        } else if filter.finished || filter.dlq {
            " ORDER BY finished_at DESC, id DESC"
        } else {
            " ORDER BY id"
        });
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.tx.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(run_from_row(row)?);
        }
        for run in &mut out {
            run.depends_on = self
                .dep_states(run.id)?
                .into_iter()
                .map(|(d, _, _)| d)
                .collect();
            if run.has_steps {
                run.steps = self.steps(run.id)?;
            }
        }
        Ok(out)
    }

    fn dlq_ids(&self, job: Option<&str>) -> Result<Vec<RunId>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id FROM runs WHERE state = 'dead' AND retried_by IS NULL \
             AND (?1 IS NULL OR job = ?1) ORDER BY finished_at, id",
        )?;
        Ok(stmt
            .query_map([job], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn count_runs(&self, filter: &RunFilter) -> Result<u64> {
        let (cond, args) = Self::filter_sql(filter);
        let mut stmt = self
            .tx
            .prepare(&format!("SELECT count(*) FROM runs{cond}"))?;
        Ok(stmt.query_row(rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0))? as u64)
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
        let list: Vec<String> = states.iter().map(|s| format!("'{s}'")).collect();
        let mut sql = format!(
            concat!(
                "SELECT id FROM runs WHERE ",
                active!(),
                " AND state IN ({}) AND id < ?1"
            ),
            list.join(", ")
        );
        if job.is_some() {
            sql.push_str(" AND job = ?3");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?2");
        let mut stmt = self.tx.prepare(&sql)?;
        let mut args: Vec<rusqlite::types::Value> = vec![before.into(), i64::from(limit).into()];
        if let Some(j) = job {
            args.push(j.to_string().into());
        }
        Ok(stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn attempts(&self, run: RunId) -> Result<Vec<Attempt>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT run_id, seq, number, started_at, finished_at, exit_code, signal, outcome, error, output_bytes \
             FROM attempts WHERE run_id = ?1 ORDER BY seq",
        )?;
        let mut rows = stmt.query([run])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(Attempt {
                run_id: r.get(0)?,
                seq: r.get(1)?,
                number: r.get(2)?,
                started_at: time(r.get(3)?)?,
                finished_at: opt_time(r.get(4)?)?,
                exit_code: r.get(5)?,
                signal: r.get(6)?,
                outcome: r.get(7)?,
                error: r.get(8)?,
                output_bytes: r.get::<_, Option<i64>>(9)?.map(|b| b as u64),
            });
        }
        Ok(out)
    }

    fn state_counts(&self) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT state, count(*) FROM runs GROUP BY state")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn job_state_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT job, state, count(*) FROM runs GROUP BY job, state ORDER BY job",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn job_stats(&self) -> Result<Vec<JobStats>> {
        let mut stats: BTreeMap<String, JobStats> = BTreeMap::new();
        let mut stmt = self.tx.prepare_cached(
            "SELECT job, state, count(*) FROM runs WHERE state IN ('succeeded', 'dead', 'cancelled') GROUP BY job, state",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? as u64,
            ))
        })?;
        for row in rows {
            let (job, state, n) = row?;
            let e = stats.entry(job.clone()).or_insert_with(|| JobStats {
                job,
                succeeded: 0,
                dead: 0,
                cancelled: 0,
                p50_ms: None,
                p95_ms: None,
            });
            match state.as_str() {
                "succeeded" => e.succeeded = n,
                "dead" => e.dead = n,
                _ => e.cancelled = n,
            }
        }
        let mut out: Vec<JobStats> = stats.into_values().collect();
        // Each job's durations, counted then indexed into in order, by the database.
        let durations = "FROM runs r JOIN attempts a ON a.run_id = r.id \
             WHERE r.job = ?1 AND r.state IN ('succeeded', 'dead') AND a.finished_at IS NOT NULL \
             AND a.seq = (SELECT max(seq) FROM attempts WHERE run_id = r.id)";
        let mut count = self
            .tx
            .prepare_cached(&format!("SELECT count(*) {durations}"))?;
        let mut nth = self.tx.prepare_cached(&format!(
            "SELECT a.finished_at - a.started_at AS d {durations} ORDER BY d LIMIT 1 OFFSET ?2"
        ))?;
        for s in &mut out {
            let n: i64 = count.query_row([&s.job], |r| r.get(0))?;
            let mut at = |p: i64| -> Result<Option<i64>> {
                if n == 0 {
                    return Ok(None);
                }
                // Nearest rank: the ceil(p/100 × n)-th value, 1-based.
                let rank = ((p * n + 99) / 100).clamp(1, n);
                Ok(nth
                    .query_row(params![s.job, rank - 1], |r| r.get(0))
                    .optional()?)
            };
            s.p50_ms = at(50)?;
            s.p95_ms = at(95)?;
        }
        Ok(out)
    }

    fn purge(&self, before: Option<Time>, dead_only: bool) -> Result<Vec<Purged>> {
        let mut sql = String::from("SELECT id FROM runs WHERE finished_at IS NOT NULL");
        if dead_only {
            sql.push_str(" AND state = 'dead'");
        }
        let mut args: Vec<i64> = Vec::new();
        if let Some(t) = before {
            args.push(ms(t));
            sql.push_str(" AND finished_at < ?1");
        }
        // A finished run some unfinished run still waits on is kept: the waiter needs its state.
        sql.push_str(
            " AND NOT EXISTS (SELECT 1 FROM run_deps d JOIN runs w ON w.id = d.run_id \
             WHERE d.dep_id = runs.id AND w.finished_at IS NULL)",
        );
        let ids: Vec<RunId> = self
            .tx
            .prepare(&sql)?
            .query_map(rusqlite::params_from_iter(args), |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        // What names their output files goes with them (attempts and steps cascade): read it first.
        let mut out = Vec::with_capacity(ids.len());
        let mut delete = self.tx.prepare_cached("DELETE FROM runs WHERE id = ?1")?;
        for id in ids {
            let seqs = self.attempt_seqs(id)?;
            let steps = self
                .tx
                .prepare_cached(
                    "SELECT name, attempts FROM steps WHERE run_id = ?1 AND attempts > 0",
                )?
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            delete.execute([id])?;
            out.push(Purged { id, seqs, steps });
        }
        Ok(out)
    }

    fn attempt_seqs(&self, id: RunId) -> Result<Vec<u32>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT seq FROM attempts WHERE run_id = ?1 ORDER BY seq")?;
        Ok(stmt
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn last_finished_per_job(&self) -> Result<BTreeMap<String, (RunState, Time)>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT job, state, max(finished_at) FROM runs WHERE finished_at IS NOT NULL GROUP BY job",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (job, st, t) = row?;
            out.insert(job, (state_of(&st)?, time(t)?));
        }
        Ok(out)
    }

    fn status_counts(&self) -> Result<StatusCounts> {
        let count = |sql: &str| -> Result<u64> {
            Ok(self
                .tx
                .prepare_cached(sql)?
                .query_row([], |r| r.get::<_, i64>(0))? as u64)
        };
        Ok(StatusCounts {
            running: count(concat!(
                "SELECT count(*) FROM runs WHERE ",
                active!(),
                " AND state = 'running'"
            ))?,
            queued: count("SELECT count(*) FROM runs WHERE state = 'queued'")?,
            waiting: count(concat!(
                "SELECT count(*) FROM runs WHERE ",
                active!(),
                " AND state IN ('delayed', 'waiting', 'retrying', 'suspended')"
            ))?,
            dead: count("SELECT count(*) FROM runs WHERE state = 'dead' AND retried_by IS NULL")?,
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .tx
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.tx
            .prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
            .execute(params![key, value])?;
        Ok(())
    }
}

impl SqliteTx<'_> {
    /// The WHERE clause of `filter` and its arguments.
    fn filter_sql(filter: &RunFilter) -> (String, Vec<rusqlite::types::Value>) {
        let mut sql = String::from(" WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(job) = &filter.job {
            args.push(job.clone().into());
            sql.push_str(&format!(" AND job = ?{}", args.len()));
        }
        if !filter.states.is_empty() {
            if filter.states.iter().all(|st| !st.is_final()) {
                sql.push_str(concat!(" AND ", active!()));
            }
            let list: Vec<String> = filter
                .states
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            sql.push_str(&format!(" AND state IN ({})", list.join(", ")));
        }
        if filter.finished {
            sql.push_str(" AND finished_at IS NOT NULL");
        }
        if filter.dlq {
            sql.push_str(" AND state = 'dead' AND retried_by IS NULL");
        }
        if let Some(before) = filter.before {
            args.push(before.into());
            sql.push_str(&format!(" AND id < ?{}", args.len()));
        }
        (sql, args)
    }
}
