//! SQLite: the alert outbox, throttle windows and fire deadlines.

use super::{Result, SqliteTx, StoreError, ms, opt_time, time};
use crate::model::{RunId, RunState, Time};
use crate::store::alerts::*;
use rusqlite::{OptionalExtension, Row, params};
use std::collections::BTreeMap;

const ALERT_COLUMNS: &str = "id, rule, channel, job, event, run_id, status, attempts, next_attempt_at, error, payload, created_at, finished_at";

fn alert_from_row(r: &Row<'_>) -> Result<AlertRow> {
    Ok(AlertRow {
        id: r.get(0)?,
        rule: r.get(1)?,
        channel: r.get(2)?,
        job: r.get(3)?,
        event: r.get(4)?,
        run_id: r.get(5)?,
        status: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: opt_time(r.get(8)?)?,
        error: r.get(9)?,
        payload: r.get(10)?,
        created_at: time(r.get(11)?)?,
        finished_at: opt_time(r.get(12)?)?,
    })
}

impl AlertOps for SqliteTx<'_> {
    fn insert_alert(&self, a: &NewAlert<'_>) -> Result<i64> {
        let pending = a.status == "pending";
        if pending {
            self.alerts.set(self.alerts.get() + 1);
        }
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO alerts (rule, channel, job, event, run_id, status, next_attempt_at, payload, created_at, finished_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        stmt.execute(params![
            a.rule,
            a.channel,
            a.job,
            a.event,
            a.run_id,
            a.status,
            pending.then(|| ms(a.now)),
            a.payload,
            ms(a.now),
            (!pending).then(|| ms(a.now)),
        ])?;
        Ok(self.tx.last_insert_rowid())
    }

    fn insert_alert_once(&self, a: &NewAlert<'_>, dedupe: &str) -> Result<i64> {
        if let Some(id) = self
            .tx
            .prepare_cached("SELECT id FROM alerts WHERE dedupe = ?1")?
            .query_row([dedupe], |r| r.get(0))
            .optional()?
        {
            return Ok(id);
        }
        let id = self.insert_alert(a)?;
        self.tx
            .prepare_cached("UPDATE alerts SET dedupe = ?2 WHERE id = ?1")?
            .execute(params![id, dedupe])?;
        Ok(id)
    }

    fn window(&self, rule: &str, job: &str) -> Result<Window> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT window_end, suppressed, kinds FROM throttles WHERE rule = ?1 AND job = ?2",
        )?;
        let row: Option<(i64, i64, String)> = stmt
            .query_row(params![rule, job], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        match row {
            None => Ok(Window::default()),
            Some((end, n, kinds)) => Ok(Window {
                end: Some(time(end)?),
                suppressed: n as u64,
                kinds: serde_json::from_str(&kinds)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            }),
        }
    }

    fn set_window(&self, rule: &str, job: &str, w: &Window) -> Result<()> {
        let Some(end) = w.end else {
            self.tx
                .prepare_cached("DELETE FROM throttles WHERE rule = ?1 AND job = ?2")?
                .execute(params![rule, job])?;
            return Ok(());
        };
        let kinds =
            serde_json::to_string(&w.kinds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.tx
            .prepare_cached(
                "INSERT INTO throttles (rule, job, window_end, suppressed, kinds) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(rule, job) DO UPDATE SET window_end = excluded.window_end, \
                 suppressed = excluded.suppressed, kinds = excluded.kinds",
            )?
            .execute(params![rule, job, ms(end), w.suppressed as i64, kinds])?;
        Ok(())
    }

    fn ended_windows(&self, now: Time) -> Result<Vec<(String, String, Window)>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT rule, job FROM throttles WHERE window_end <= ?1")?;
        let keys: Vec<(String, String)> = stmt
            .query_map([ms(now)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        keys.into_iter()
            .map(|(r, j)| Ok((r.clone(), j.clone(), self.window(&r, &j)?)))
            .collect()
    }

    fn next_window_end(&self) -> Result<Option<Time>> {
        let v: Option<i64> = self
            .tx
            .prepare_cached("SELECT min(window_end) FROM throttles")?
            .query_row([], |r| r.get(0))?;
        opt_time(v)
    }

    fn claim_alerts(
        &self,
        lease: &str,
        now: Time,
        lease_until: Time,
        limit: u32,
    ) -> Result<Vec<AlertRow>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "UPDATE alerts SET lease = ?1, lease_until = ?3 WHERE id IN (SELECT id FROM alerts WHERE status = 'pending' \
             AND next_attempt_at <= ?2 AND (lease IS NULL OR lease_until <= ?2) ORDER BY next_attempt_at, id LIMIT ?4) \
             RETURNING {ALERT_COLUMNS}"
        ))?;
        let mut rows = stmt.query(params![lease, ms(now), ms(lease_until), limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(alert_from_row(r)?);
        }
        out.sort_by_key(|a| a.id);
        Ok(out)
    }

    fn alert_attempted(
        &self,
        id: i64,
        now: Time,
        status: &str,
        retry_at: Option<Time>,
        error: Option<&str>,
    ) -> Result<()> {
        let finished = (status != "pending").then(|| ms(now));
        self.tx
            .prepare_cached(
                "UPDATE alerts SET attempts = attempts + 1, status = ?2, next_attempt_at = ?3, error = ?4, \
                 finished_at = ?5, lease = NULL, lease_until = NULL WHERE id = ?1",
            )?
            .execute(params![id, status, retry_at.map(ms), error, finished])?;
        Ok(())
    }

    fn next_alert_due(&self) -> Result<Option<Time>> {
        let v: Option<i64> = self
            .tx
            .prepare_cached("SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) FROM alerts WHERE status = 'pending'")?
            .query_row([], |r| r.get(0))?;
        opt_time(v)
    }

    fn pending_alerts(&self) -> Result<u64> {
        let n: i64 = self
            .tx
            .prepare_cached("SELECT count(*) FROM alerts WHERE status = 'pending'")?
            .query_row([], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn alerts(&self, limit: u32, status: Option<&str>) -> Result<Vec<AlertRow>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE (?2 IS NULL OR status = ?2) ORDER BY id DESC LIMIT ?1"
        ))?;
        let mut rows = stmt.query(params![limit, status])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(alert_from_row(r)?);
        }
        Ok(out)
    }

    fn alert(&self, id: i64) -> Result<Option<AlertRow>> {
        let mut stmt = self
            .tx
            .prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"))?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(r) => Ok(Some(alert_from_row(r)?)),
            None => Ok(None),
        }
    }

    fn last_sent_per_rule(&self) -> Result<BTreeMap<String, Time>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT rule, max(finished_at) FROM alerts WHERE status = 'sent' GROUP BY rule",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (rule, t) = row?;
            out.insert(rule, time(t)?);
        }
        Ok(out)
    }

    fn purge_alerts(&self, before: Time) -> Result<usize> {
        Ok(self
            .tx
            .prepare_cached("DELETE FROM alerts WHERE created_at < ?1 AND status != 'pending'")?
            .execute([ms(before)])?)
    }

    fn previous_finished_state(&self, job: &str, id: RunId) -> Result<Option<RunState>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT state FROM runs WHERE job = ?1 AND id != ?2 AND finished_at IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT 1",
        )?;
        let s: Option<String> = stmt.query_row(params![job, id], |r| r.get(0)).optional()?;
        s.map(|s| s.parse().map_err(StoreError::Corrupt))
            .transpose()
    }

    fn due_deadlines(&self, now: Time) -> Result<Vec<DueDeadline>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT f.schedule, f.job, f.fire_at, f.deadline_at, f.outcome, f.reason, r.id, r.state, r.finished_at \
             FROM fires f LEFT JOIN runs r ON r.id = f.run_id \
             WHERE f.deadline_at IS NOT NULL AND f.deadline_at <= ?1 ORDER BY f.deadline_at",
        )?;
        let mut rows = stmt.query([ms(now)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let run = match r.get::<_, Option<i64>>(6)? {
                Some(id) => Some((
                    id,
                    r.get::<_, String>(7)?
                        .parse()
                        .map_err(StoreError::Corrupt)?,
                    opt_time(r.get(8)?)?,
                )),
                None => None,
            };
            out.push(DueDeadline {
                schedule: r.get(0)?,
                job: r.get(1)?,
                fire_at: time(r.get(2)?)?,
                deadline_at: time(r.get(3)?)?,
                outcome: r.get(4)?,
                reason: r.get(5)?,
                run,
            });
        }
        Ok(out)
    }

    fn clear_deadline(&self, schedule: &str, fire_at: Time) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE fires SET deadline_at = NULL WHERE schedule = ?1 AND fire_at = ?2",
            )?
            .execute(params![schedule, ms(fire_at)])?;
        Ok(())
    }

    fn next_deadline(&self) -> Result<Option<Time>> {
        let v: Option<i64> = self
            .tx
            .prepare_cached("SELECT min(deadline_at) FROM fires WHERE deadline_at IS NOT NULL")?
            .query_row([], |r| r.get(0))?;
        opt_time(v)
    }

    fn set_deadline(&self, schedule: &str, fire_at: Time, deadline_at: Time) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE fires SET deadline_at = ?3 WHERE schedule = ?1 AND fire_at = ?2",
            )?
            .execute(params![schedule, ms(fire_at), ms(deadline_at)])?;
        Ok(())
    }
}
