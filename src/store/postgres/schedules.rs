//! PostgreSQL: schedule cursors and recorded fires.

use std::collections::BTreeMap;

use super::PgTx;
use super::convert::{at, limit, small, unsigned};
use crate::model::{RunId, RunState, Time};
use crate::store::schedules::*;
use crate::store::{Result, StoreError};

impl ScheduleOps for PgTx<'_> {
    fn schedule_cursor(&self, name: &str) -> Result<Option<(Time, bool)>> {
        const SQL: &str = "SELECT cursor, enabled FROM schedule_cursors WHERE name = $1";
        match self.query_opt(SQL, &[&name])? {
            Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
            None => Ok(None),
        }
    }

    fn set_schedule_cursor(&self, name: &str, cursor: Time, enabled: bool) -> Result<()> {
        const SQL: &str = "INSERT INTO schedule_cursors (name, cursor, enabled) VALUES ($1, $2, $3) \
                           ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, enabled = excluded.enabled";
        self.execute(SQL, &[&name, &at(cursor), &enabled])?;
        Ok(())
    }

    fn delete_other_cursors(&self, keep: &[&str]) -> Result<usize> {
        const SQL: &str = "DELETE FROM schedule_cursors WHERE name <> ALL ($1)";
        Ok(self.execute(SQL, &[&keep])? as usize)
    }

    fn fire_recorded(&self, schedule: &str, fire_at: Time) -> Result<bool> {
        const SQL: &str =
            "SELECT EXISTS (SELECT 1 FROM fires WHERE schedule = $1 AND fire_at = $2)";
        Ok(self
            .query_one(SQL, &[&schedule, &at(fire_at)])?
            .try_get(0)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn record_fire(
        &self,
        schedule: &str,
        fire_at: Time,
        job: &str,
        outcome: &str,
        reason: Option<&str>,
        run_id: Option<RunId>,
        count: u64,
        now: Time,
    ) -> Result<bool> {
        const SQL: &str = "INSERT INTO fires (schedule, fire_at, job, outcome, reason, run_id, count, recorded_at) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (schedule, fire_at) DO NOTHING";
        Ok(self.execute(
            SQL,
            &[
                &schedule,
                &at(fire_at),
                &job,
                &outcome,
                &reason,
                &run_id,
                &small(count),
                &at(now),
            ],
        )? == 1)
    }

    fn last_fire(&self, schedule: &str) -> Result<Option<FireRecord>> {
        Ok(self.fires(Some(schedule), 1)?.into_iter().next())
    }

    fn fires(&self, schedule: Option<&str>, limit_n: u32) -> Result<Vec<FireRecord>> {
        const SQL: &str = "SELECT schedule, fire_at, job, outcome, reason, run_id, count, recorded_at \
                           FROM fires WHERE ($1::text IS NULL OR schedule = $1) \
                           ORDER BY fire_at DESC, schedule COLLATE \"C\" LIMIT $2";
        self.query(SQL, &[&schedule, &limit(limit_n)])?
            .iter()
            .map(|r| {
                Ok(FireRecord {
                    schedule: r.try_get(0)?,
                    fire_at: r.try_get(1)?,
                    job: r.try_get(2)?,
                    outcome: r.try_get(3)?,
                    reason: r.try_get(4)?,
                    run_id: r.try_get(5)?,
                    count: u64::from(unsigned(r.try_get(6)?, "fire count")?),
                    recorded_at: r.try_get(7)?,
                })
            })
            .collect()
    }

    fn active_runs(&self, job: &str) -> Result<Vec<(RunId, RunState)>> {
        const SQL: &str = "SELECT id, state FROM runs WHERE job = $1 AND \
                           state IN ('delayed', 'waiting', 'queued', 'running', 'retrying', 'suspended') \
                           ORDER BY id";
        self.query(SQL, &[&job])?
            .iter()
            .map(|r| {
                let state: String = r.try_get(1)?;
                Ok((r.try_get(0)?, state.parse().map_err(StoreError::Corrupt)?))
            })
            .collect()
    }

    fn pause_schedule(&self, name: &str, now: Time) -> Result<bool> {
        const SQL: &str = "INSERT INTO schedule_pauses (name, paused_at) VALUES ($1, $2) \
                           ON CONFLICT (name) DO NOTHING";
        Ok(self.execute(SQL, &[&name, &at(now)])? == 1)
    }

    fn resume_schedule(&self, name: &str) -> Result<bool> {
        const SQL: &str = "DELETE FROM schedule_pauses WHERE name = $1";
        Ok(self.execute(SQL, &[&name])? == 1)
    }

    fn schedule_paused(&self, name: &str) -> Result<Option<Time>> {
        const SQL: &str = "SELECT paused_at FROM schedule_pauses WHERE name = $1";
        match self.query_opt(SQL, &[&name])? {
            Some(r) => Ok(Some(r.try_get(0)?)),
            None => Ok(None),
        }
    }

    fn paused_schedules(&self) -> Result<BTreeMap<String, Time>> {
        const SQL: &str = "SELECT name, paused_at FROM schedule_pauses";
        self.query(SQL, &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn purge_fires(&self, before: Time) -> Result<usize> {
        const SQL: &str = "DELETE FROM fires WHERE fire_at < $1";
        Ok(self.execute(SQL, &[&at(before)])? as usize)
    }
}
