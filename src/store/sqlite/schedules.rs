//! SQLite: schedule cursors and recorded fires.

use super::{Result, SqliteTx, ms, time};
use crate::model::{RunId, RunState, Time};
use crate::store::schedules::*;
use rusqlite::{OptionalExtension, params};

impl ScheduleOps for SqliteTx<'_> {
    fn schedule_cursor(&self, name: &str) -> Result<Option<(Time, bool)>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT cursor, enabled FROM schedule_cursors WHERE name = ?1")?;
        let row: Option<(i64, i64)> = stmt
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(c, e)| Ok((time(c)?, e != 0))).transpose()
    }

    fn set_schedule_cursor(&self, name: &str, cursor: Time, enabled: bool) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO schedule_cursors (name, cursor, enabled) VALUES (?1, ?2, ?3) \
             ON CONFLICT(name) DO UPDATE SET cursor = excluded.cursor, enabled = excluded.enabled",
        )?;
        stmt.execute(params![name, ms(cursor), enabled])?;
        Ok(())
    }

    fn delete_other_cursors(&self, keep: &[&str]) -> Result<usize> {
        let names: Vec<String> = self
            .tx
            .prepare_cached("SELECT name FROM schedule_cursors")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut n = 0;
        for name in names.iter().filter(|n| !keep.contains(&n.as_str())) {
            n += self
                .tx
                .prepare_cached("DELETE FROM schedule_cursors WHERE name = ?1")?
                .execute([name])?;
        }
        Ok(n)
    }

    fn fire_recorded(&self, schedule: &str, fire_at: Time) -> Result<bool> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT 1 FROM fires WHERE schedule = ?1 AND fire_at = ?2")?;
        Ok(stmt.exists(params![schedule, ms(fire_at)])?)
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
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO fires (schedule, fire_at, job, outcome, reason, run_id, count, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        Ok(stmt.execute(params![
            schedule,
            ms(fire_at),
            job,
            outcome,
            reason,
            run_id,
            count as i64,
            ms(now)
        ])? == 1)
    }

    fn last_fire(&self, schedule: &str) -> Result<Option<FireRecord>> {
        Ok(self.fires(Some(schedule), 1)?.into_iter().next())
    }

    fn fires(&self, schedule: Option<&str>, limit: u32) -> Result<Vec<FireRecord>> {
        let sql = "SELECT schedule, fire_at, job, outcome, reason, run_id, count, recorded_at FROM fires \
                   WHERE (?1 IS NULL OR schedule = ?1) ORDER BY fire_at DESC, schedule LIMIT ?2";
        let mut stmt = self.tx.prepare_cached(sql)?;
        let mut rows = stmt.query(params![schedule, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(FireRecord {
                schedule: r.get(0)?,
                fire_at: time(r.get(1)?)?,
                job: r.get(2)?,
                outcome: r.get(3)?,
                reason: r.get(4)?,
                run_id: r.get(5)?,
                count: r.get::<_, i64>(6)? as u64,
                recorded_at: time(r.get(7)?)?,
            });
        }
        Ok(out)
    }

    fn active_runs(&self, job: &str) -> Result<Vec<(RunId, RunState)>> {
        let mut stmt = self.tx.prepare_cached(concat!(
            "SELECT id, state FROM runs WHERE job = ?1 AND ",
            active!(),
            " ORDER BY id"
        ))?;
        let rows = stmt.query_map([job], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (id, st) = row?;
            Ok((id, st.parse().map_err(super::StoreError::Corrupt)?))
        })
        .collect()
    }

    fn pause_schedule(&self, name: &str, now: Time) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO schedule_pauses (name, paused_at) VALUES (?1, ?2)",
            )?
            .execute(params![name, ms(now)])?
            == 1)
    }

    fn resume_schedule(&self, name: &str) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached("DELETE FROM schedule_pauses WHERE name = ?1")?
            .execute([name])?
            == 1)
    }

    fn schedule_paused(&self, name: &str) -> Result<Option<Time>> {
        self.tx
            .prepare_cached("SELECT paused_at FROM schedule_pauses WHERE name = ?1")?
            .query_row([name], |r| r.get::<_, i64>(0))
            .optional()?
            .map(time)
            .transpose()
    }

    fn paused_schedules(&self) -> Result<std::collections::BTreeMap<String, Time>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT name, paused_at FROM schedule_pauses")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = std::collections::BTreeMap::new();
        for row in rows {
            let (name, at) = row?;
            out.insert(name, time(at)?);
        }
        Ok(out)
    }

    fn purge_fires(&self, before: Time) -> Result<usize> {
        Ok(self
            .tx
            .prepare_cached("DELETE FROM fires WHERE fire_at < ?1")?
            .execute([ms(before)])?)
    }
}
