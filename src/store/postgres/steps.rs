//! PostgreSQL: workflow steps, checkpoints and signals.

use std::collections::HashMap;

use tokio_postgres::Row;

use super::convert::{at, never, unsigned};
use super::{Owned, PgTx};
use crate::model::{RunId, Step, StepState, Time};
use crate::store::steps::*;
use crate::store::{Result, StoreError};
use crate::workflow::model::Workflow;

/// The columns [`step_from_row`] reads, in its order.
macro_rules! step_columns {
    () => {
        "run_id, name, idx, kind, state, attempts, started_at, finished_at, wake_at, \
         waiting_for, exit_code, signal, error, outputs, reused_from"
    };
}

const STEPS: &str = concat!(
    "SELECT ",
    step_columns!(),
    " FROM steps WHERE run_id = $1 ORDER BY idx"
);
const STEP: &str = concat!(
    "SELECT ",
    step_columns!(),
    " FROM steps WHERE run_id = $1 AND name = $2"
);

fn step_from_row(r: &Row) -> Result<Step> {
    let state: String = r.try_get(4)?;
    Ok(Step {
        run_id: r.try_get(0)?,
        name: r.try_get(1)?,
        idx: unsigned(r.try_get(2)?, "step index")?,
        kind: r.try_get(3)?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        attempts: unsigned(r.try_get(5)?, "step attempts")?,
        started_at: r.try_get(6)?,
        finished_at: r.try_get(7)?,
        wake_at: r.try_get(8)?,
        waiting_for: r.try_get(9)?,
        exit_code: r.try_get(10)?,
        signal: r.try_get(11)?,
        error: r.try_get(12)?,
        outputs: r.try_get(13)?,
        reused_from: r.try_get(14)?,
    })
}

impl StepOps for PgTx<'_> {
    fn insert_steps(&self, run: RunId, wf: &Workflow) -> Result<()> {
        const SQL: &str = "INSERT INTO steps (run_id, name, idx, kind, state) \
                           VALUES ($1, $2, $3, $4, 'pending')";
        for (i, s) in wf.steps.iter().enumerate() {
            let idx = i32::try_from(i)
                .map_err(|_| StoreError::Corrupt(format!("step index {i} of run {run}")))?;
            self.execute(SQL, &[&run, &s.name, &idx, &s.kind.as_str()])?;
        }
        Ok(())
    }

    fn steps(&self, run: RunId) -> Result<Vec<Step>> {
        self.query(STEPS, &[&run])?
            .iter()
            .map(step_from_row)
            .collect()
    }

    fn steps_of(&self, runs: &[RunId]) -> Result<HashMap<RunId, Vec<Step>>> {
        // The one-run statement for each, all sent at once: one round trip, and a plan kept
        // (`run_id = ANY($1)` is planned anew at each execution: 0.2 ms of the server's CPU).
        let params: Vec<Vec<Owned>> = runs.iter().map(|&r| vec![Box::new(r) as Owned]).collect();
        let mut out = HashMap::with_capacity(runs.len());
        for (&run, rows) in runs.iter().zip(self.query_each(STEPS, &params)?) {
            if !rows.is_empty() {
                out.insert(run, rows.iter().map(step_from_row).collect::<Result<_>>()?);
            }
        }
        Ok(out)
    }

    fn step(&self, run: RunId, name: &str) -> Result<Option<Step>> {
        self.query_opt(STEP, &[&run, &name])?
            .as_ref()
            .map(step_from_row)
            .transpose()
    }

    fn store_definition(&self, text: &str) -> Result<i64> {
        // The existing row when the digest is known (no update, so no dead row per run), else
        // the new one. Writers are serialised: nobody inserts the same digest in between.
        const SQL: &str = "WITH inserted AS (INSERT INTO definitions (digest, text) VALUES ($1, $2) \
                           ON CONFLICT (digest) DO NOTHING RETURNING id) \
                           SELECT id FROM inserted UNION ALL SELECT id FROM definitions WHERE digest = $1";
        let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let digest: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Ok(self.query_one(SQL, &[&digest, &text])?.try_get(0)?)
    }

    fn definition(&self, run: RunId) -> Result<Option<(i64, String)>> {
        const SQL: &str = "SELECT d.id, d.text FROM runs r JOIN definitions d ON d.id = r.definition \
                           WHERE r.id = $1";
        match self.query_opt(SQL, &[&run])? {
            Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
            None => Ok(None),
        }
    }

    fn purge_definitions(&self) -> Result<usize> {
        const SQL: &str = "DELETE FROM definitions WHERE NOT EXISTS \
                           (SELECT 1 FROM runs WHERE runs.definition = definitions.id)";
        Ok(self.execute(SQL, &[])? as usize)
    }

    fn start_step(&self, run: RunId, name: &str, now: Time) -> Result<()> {
        const SQL: &str = "UPDATE steps SET state = 'running', attempts = attempts + 1, tries = tries + 1, \
                           started_at = $3, finished_at = NULL, wake_at = NULL, waiting_for = NULL, \
                           error = NULL, exit_code = NULL, signal = NULL \
                           WHERE run_id = $1 AND name = $2";
        self.execute_later(
            SQL,
            vec![Box::new(run), Box::new(name.to_owned()), Box::new(at(now))],
        )
    }

    fn step_tries(&self, run: RunId, name: &str) -> Result<u32> {
        const SQL: &str = "SELECT tries FROM steps WHERE run_id = $1 AND name = $2";
        match self.query_opt(SQL, &[&run, &name])? {
            Some(r) => unsigned(r.try_get(0)?, "step tries"),
            None => Ok(0),
        }
    }

    fn suspend_step(
        &self,
        run: RunId,
        name: &str,
        wake_at: Option<Time>,
        waiting_for: Option<&str>,
        now: Time,
    ) -> Result<()> {
        const SQL: &str = "UPDATE steps SET state = 'suspended', attempts = attempts + 1, tries = tries + 1, \
                           started_at = $5, finished_at = NULL, wake_at = $3, waiting_for = $4, error = NULL \
                           WHERE run_id = $1 AND name = $2";
        self.execute_later(
            SQL,
            vec![
                Box::new(run),
                Box::new(name.to_owned()),
                Box::new(wake_at.map(at)),
                Box::new(waiting_for.map(str::to_owned)),
                Box::new(at(now)),
            ],
        )
    }

    fn end_step(
        &self,
        run: RunId,
        name: &str,
        state: StepState,
        now: Time,
        end: &StepEnd<'_>,
    ) -> Result<()> {
        debug_assert!(state.is_final());
        const SQL: &str = "UPDATE steps SET state = $3, finished_at = $4, wake_at = NULL, exit_code = $5, \
                           signal = $6, error = $7, outputs = $8 WHERE run_id = $1 AND name = $2";
        self.execute_later(
            SQL,
            vec![
                Box::new(run),
                Box::new(name.to_owned()),
                Box::new(state.as_str()),
                Box::new(at(now)),
                Box::new(end.exit_code),
                Box::new(end.signal),
                Box::new(end.error.map(str::to_owned)),
                Box::new(end.outputs.cloned()),
            ],
        )
    }

    fn retry_step(&self, run: RunId, name: &str, wake_at: Option<Time>, error: &str) -> Result<()> {
        const SQL: &str = "UPDATE steps SET state = 'pending', wake_at = $3, error = $4 \
                           WHERE run_id = $1 AND name = $2";
        self.execute_later(
            SQL,
            vec![
                Box::new(run),
                Box::new(name.to_owned()),
                Box::new(wake_at.map(at)),
                Box::new(error.to_owned()),
            ],
        )
    }

    fn reset_steps(&self, run: RunId) -> Result<()> {
        const SQL: &str = "UPDATE steps SET state = 'pending', wake_at = NULL, tries = 0 WHERE run_id = $1 \
                           AND state IN ('failed', 'running', 'cancelled')";
        self.execute(SQL, &[&run])?;
        Ok(())
    }

    fn interrupt_steps(&self, run: RunId, now: Time, error: &str) -> Result<Vec<String>> {
        const SQL: &str = "UPDATE steps SET state = 'failed', finished_at = $2, error = $3 \
                           WHERE run_id = $1 AND state = 'running' RETURNING name";
        let mut names = self
            .query(SQL, &[&run, &at(now), &error])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<Vec<String>, _>>()?;
        // SQLite returns them in its primary key's order: by name, bytewise.
        names.sort();
        Ok(names)
    }

    fn cancel_steps(&self, run: RunId, now: Time) -> Result<()> {
        const SQL: &str = "UPDATE steps SET state = 'cancelled', finished_at = $2, wake_at = NULL \
                           WHERE run_id = $1 AND state IN ('pending', 'suspended', 'running')";
        self.execute(SQL, &[&run, &at(now)])?;
        Ok(())
    }

    fn reuse_step(&self, from: RunId, to: RunId, name: &str) -> Result<()> {
        const SQL: &str = "UPDATE steps SET (state, attempts, started_at, finished_at, exit_code, signal, \
                           error, outputs, reused_from) = (SELECT s.state, s.attempts, s.started_at, \
                           s.finished_at, s.exit_code, s.signal, s.error, s.outputs, \
                           coalesce(s.reused_from, s.run_id) FROM steps s WHERE s.run_id = $1 AND s.name = $3) \
                           WHERE run_id = $2 AND name = $3";
        self.execute(SQL, &[&from, &to, &name])?;
        Ok(())
    }

    fn suspend_run(&self, id: RunId, due: Option<Time>, owner: Option<&str>) -> Result<()> {
        const SQL: &str =
            "UPDATE runs SET state = 'suspended', due_at = $2, owner = $3 WHERE id = $1";
        let due = due.map(at).unwrap_or_else(never);
        self.execute(SQL, &[&id, &due, &owner])?;
        Ok(())
    }

    fn queue_resume(&self, id: RunId, now: Time) -> Result<()> {
        const SQL: &str = "UPDATE runs SET state = 'queued', resume = true, due_at = least(due_at, $2) \
                           WHERE id = $1 AND state = 'suspended'";
        self.execute(SQL, &[&id, &at(now)])?;
        Ok(())
    }

    fn insert_signal(
        &self,
        run: RunId,
        name: &str,
        data: Option<&serde_json::Value>,
        fail: Option<&str>,
        now: Time,
    ) -> Result<bool> {
        const INSERT: &str = "INSERT INTO signals (run_id, name, data, fail, created_at) \
                              VALUES ($1, $2, $3, $4, $5)";
        const WAITED_FOR: &str = "SELECT EXISTS (SELECT 1 FROM steps WHERE run_id = $1 \
                                  AND state = 'suspended' AND waiting_for = $2)";
        self.execute(INSERT, &[&run, &name, &data, &fail, &at(now)])?;
        Ok(self.query_one(WAITED_FOR, &[&run, &name])?.try_get(0)?)
    }

    #[allow(clippy::type_complexity)]
    fn take_signal(
        &self,
        run: RunId,
        name: &str,
        step: &str,
        now: Time,
    ) -> Result<Option<(Option<serde_json::Value>, Option<String>)>> {
        const SQL: &str = "UPDATE signals SET consumed_at = $3, consumed_by = $4 WHERE id = \
                           (SELECT id FROM signals WHERE run_id = $1 AND name = $2 AND consumed_at IS NULL \
                           ORDER BY id LIMIT 1) RETURNING data, fail";
        match self.query_opt(SQL, &[&run, &name, &at(now), &step])? {
            Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
            None => Ok(None),
        }
    }

    fn signaled_runs(&self, owner: &str) -> Result<Vec<RunId>> {
        const SQL: &str = "SELECT DISTINCT r.id FROM runs r \
                           JOIN signals g ON g.run_id = r.id AND g.consumed_at IS NULL \
                           JOIN steps s ON s.run_id = r.id AND s.state = 'suspended' AND s.waiting_for = g.name \
                           WHERE r.state IN ('delayed', 'waiting', 'queued', 'running', 'retrying', 'suspended') \
                           AND r.state = 'running' AND r.owner = $1 ORDER BY r.id";
        Ok(self
            .query(SQL, &[&owner])?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?)
    }
}
