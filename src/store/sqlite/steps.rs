//! SQLite: workflow steps, checkpoints and signals.

use super::{Result, SqliteTx, StoreError, ms, opt_time};
use crate::model::{RunId, Step, StepState, Time};
use crate::store::steps::*;
use crate::workflow::model::Workflow;
use rusqlite::{OptionalExtension, Row, params};

const STEP_COLUMNS: &str = "run_id, name, idx, kind, state, attempts, started_at, finished_at, wake_at, \
     waiting_for, exit_code, signal, error, outputs, reused_from";

fn step_from_row(r: &Row<'_>) -> Result<Step> {
    let state: String = r.get(4)?;
    let outputs: Option<String> = r.get(13)?;
    Ok(Step {
        run_id: r.get(0)?,
        name: r.get(1)?,
        idx: r.get(2)?,
        kind: r.get(3)?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        attempts: r.get(5)?,
        started_at: opt_time(r.get(6)?)?,
        finished_at: opt_time(r.get(7)?)?,
        wake_at: opt_time(r.get(8)?)?,
        waiting_for: r.get(9)?,
        exit_code: r.get(10)?,
        signal: r.get(11)?,
        error: r.get(12)?,
        outputs: match outputs {
            Some(t) => {
                Some(serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            }
            None => None,
        },
        reused_from: r.get(14)?,
    })
}

impl StepOps for SqliteTx<'_> {
    fn insert_steps(&self, run: RunId, wf: &Workflow) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO steps (run_id, name, idx, kind, state) VALUES (?1, ?2, ?3, ?4, 'pending')",
        )?;
        for (i, s) in wf.steps.iter().enumerate() {
            stmt.execute(params![run, s.name, i as i64, s.kind.as_str()])?;
        }
        Ok(())
    }

    fn steps(&self, run: RunId) -> Result<Vec<Step>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?1 ORDER BY idx"
        ))?;
        let mut rows = stmt.query([run])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(step_from_row(r)?);
        }
        Ok(out)
    }

    fn step(&self, run: RunId, name: &str) -> Result<Option<Step>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?1 AND name = ?2"
        ))?;
        let mut rows = stmt.query(params![run, name])?;
        match rows.next()? {
            Some(r) => Ok(Some(step_from_row(r)?)),
            None => Ok(None),
        }
    }

    fn store_definition(&self, text: &str) -> Result<i64> {
        let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let digest: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Ok(self
            .tx
            .prepare_cached(
                "INSERT INTO definitions (digest, text) VALUES (?1, ?2) \
                 ON CONFLICT(digest) DO UPDATE SET digest = excluded.digest RETURNING id",
            )?
            .query_row(params![digest, text], |r| r.get(0))?)
    }

    fn definition(&self, run: RunId) -> Result<Option<(i64, String)>> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT d.id, d.text FROM runs r JOIN definitions d ON d.id = r.definition WHERE r.id = ?1",
            )?
            .query_row([run], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn purge_definitions(&self) -> Result<usize> {
        Ok(self
            .tx
            .prepare_cached(
                "DELETE FROM definitions WHERE NOT EXISTS \
                 (SELECT 1 FROM runs WHERE runs.definition = definitions.id AND runs.definition IS NOT NULL)",
            )?
            .execute([])?)
    }

    fn start_step(&self, run: RunId, name: &str, now: Time) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE steps SET state = 'running', attempts = attempts + 1, tries = tries + 1, started_at = ?3, \
                 finished_at = NULL, wake_at = NULL, waiting_for = NULL, error = NULL, exit_code = NULL, signal = NULL \
                 WHERE run_id = ?1 AND name = ?2",
            )?
            .execute(params![run, name, ms(now)])?;
        Ok(())
    }

    fn step_tries(&self, run: RunId, name: &str) -> Result<u32> {
        Ok(self
            .tx
            .prepare_cached("SELECT tries FROM steps WHERE run_id = ?1 AND name = ?2")?
            .query_row(params![run, name], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    fn suspend_step(
        &self,
        run: RunId,
        name: &str,
        wake_at: Option<Time>,
        waiting_for: Option<&str>,
        now: Time,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE steps SET state = 'suspended', attempts = attempts + 1, tries = tries + 1, started_at = ?5, \
                 finished_at = NULL, wake_at = ?3, waiting_for = ?4, error = NULL WHERE run_id = ?1 AND name = ?2",
            )?
            .execute(params![run, name, wake_at.map(ms), waiting_for, ms(now)])?;
        Ok(())
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
        let outputs = end
            .outputs
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.tx
            .prepare_cached(
                "UPDATE steps SET state = ?3, finished_at = ?4, wake_at = NULL, exit_code = ?5, signal = ?6, \
                 error = ?7, outputs = ?8 WHERE run_id = ?1 AND name = ?2",
            )?
            .execute(params![
                run,
                name,
                state.as_str(),
                ms(now),
                end.exit_code,
                end.signal,
                end.error,
                outputs
            ])?;
        Ok(())
    }

    fn retry_step(&self, run: RunId, name: &str, wake_at: Option<Time>, error: &str) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE steps SET state = 'pending', wake_at = ?3, error = ?4 WHERE run_id = ?1 AND name = ?2",
            )?
            .execute(params![run, name, wake_at.map(ms), error])?;
        Ok(())
    }

    fn reset_steps(&self, run: RunId) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE steps SET state = 'pending', wake_at = NULL, tries = 0 WHERE run_id = ?1 \
                 AND state IN ('failed', 'running', 'cancelled')",
            )?
            .execute([run])?;
        Ok(())
    }

    fn interrupt_steps(&self, run: RunId, now: Time, error: &str) -> Result<Vec<String>> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE steps SET state = 'failed', finished_at = ?2, error = ?3 WHERE run_id = ?1 AND state = 'running' \
             RETURNING name",
        )?;
        Ok(stmt
            .query_map(params![run, ms(now), error], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    fn cancel_steps(&self, run: RunId, now: Time) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE steps SET state = 'cancelled', finished_at = ?2, wake_at = NULL WHERE run_id = ?1 \
                 AND state IN ('pending', 'suspended', 'running')",
            )?
            .execute(params![run, ms(now)])?;
        Ok(())
    }

    fn reuse_step(&self, from: RunId, to: RunId, name: &str) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE steps SET (state, attempts, started_at, finished_at, exit_code, signal, error, outputs, \
                 reused_from) = (SELECT s.state, s.attempts, s.started_at, s.finished_at, s.exit_code, s.signal, \
                 s.error, s.outputs, coalesce(s.reused_from, s.run_id) FROM steps s WHERE s.run_id = ?1 AND s.name = ?3) \
                 WHERE run_id = ?2 AND name = ?3",
            )?
            .execute(params![from, to, name])?;
        Ok(())
    }

    fn suspend_run(&self, id: RunId, due: Option<Time>, owner: Option<&str>) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE runs SET state = 'suspended', due_at = ?2, owner = ?3 WHERE id = ?1",
            )?
            .execute(params![
                id,
                due.map(ms).unwrap_or(crate::store::NEVER_MS),
                owner
            ])?;
        Ok(())
    }

    fn queue_resume(&self, id: RunId, now: Time) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE runs SET state = 'queued', resume = 1, due_at = min(due_at, ?2) WHERE id = ?1 AND state = 'suspended'",
            )?
            .execute(params![id, ms(now)])?;
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
        let data = data.map(serde_json::Value::to_string);
        self.tx
            .prepare_cached(
                "INSERT INTO signals (run_id, name, data, fail, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![run, name, data, fail, ms(now)])?;
        Ok(self
            .tx
            .prepare_cached(
                "SELECT 1 FROM steps WHERE run_id = ?1 AND state = 'suspended' AND waiting_for = ?2",
            )?
            .query_row(params![run, name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    #[allow(clippy::type_complexity)]
    fn take_signal(
        &self,
        run: RunId,
        name: &str,
        step: &str,
        now: Time,
    ) -> Result<Option<(Option<serde_json::Value>, Option<String>)>> {
        let found: Option<(i64, Option<String>, Option<String>)> = self
            .tx
            .prepare_cached(
                "SELECT id, data, fail FROM signals WHERE run_id = ?1 AND name = ?2 AND consumed_at IS NULL \
                 ORDER BY id LIMIT 1",
            )?
            .query_row(params![run, name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((id, data, fail)) = found else {
            return Ok(None);
        };
        self.tx
            .prepare_cached("UPDATE signals SET consumed_at = ?2, consumed_by = ?3 WHERE id = ?1")?
            .execute(params![id, ms(now), step])?;
        let data = match data {
            Some(t) => {
                Some(serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            }
            None => None,
        };
        Ok(Some((data, fail)))
    }

    fn signaled_runs(&self, owner: &str) -> Result<Vec<RunId>> {
        let mut stmt = self.tx.prepare_cached(concat!(
            "SELECT DISTINCT r.id FROM runs r JOIN signals g ON g.run_id = r.id AND g.consumed_at IS NULL \
             JOIN steps s ON s.run_id = r.id AND s.state = 'suspended' AND s.waiting_for = g.name \
             WHERE r.",
            active!(),
            " AND r.state = 'running' AND r.owner = ?1"
        ))?;
        Ok(stmt
            .query_map([owner], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }
}
