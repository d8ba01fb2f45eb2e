//! PostgreSQL: the alert outbox, throttle windows and fire deadlines.

use std::collections::BTreeMap;

use tokio_postgres::Row;

use super::PgTx;
use super::convert::{at, count, from_json, limit, small, unsigned};
use crate::model::{RunId, RunState, Time};
use crate::store::alerts::*;
use crate::store::{Result, StoreError};

/// The columns [`alert_from_row`] reads, in its order.
macro_rules! alert_columns {
    () => {
        "id, rule, channel, job, event, run_id, status, attempts, next_attempt_at, error, payload, \
         created_at, finished_at"
    };
}

fn alert_from_row(r: &Row) -> Result<AlertRow> {
    Ok(AlertRow {
        id: r.try_get(0)?,
        rule: r.try_get(1)?,
        channel: r.try_get(2)?,
        job: r.try_get(3)?,
        event: r.try_get(4)?,
        run_id: r.try_get(5)?,
        status: r.try_get(6)?,
        attempts: unsigned(r.try_get(7)?, "alert attempts")?,
        next_attempt_at: r.try_get(8)?,
        error: r.try_get(9)?,
        payload: r.try_get(10)?,
        created_at: r.try_get(11)?,
        finished_at: r.try_get(12)?,
    })
}

/// A throttle window from `window_end, suppressed, kinds`.
fn window_from_row(r: &Row, first: usize) -> Result<Window> {
    let suppressed: i32 = r.try_get(first + 1)?;
    Ok(Window {
        end: Some(r.try_get(first)?),
        suppressed: u64::from(unsigned(suppressed, "suppressed alerts")?),
        kinds: from_json(r.try_get(first + 2)?)?,
    })
}

impl PgTx<'_> {
    /// Inserts an alert (with its `dedupe` key, if any); counts it if it is pending.
    fn insert_alert_keyed(&self, a: &NewAlert<'_>, dedupe: Option<&str>) -> Result<i64> {
        const SQL: &str = "INSERT INTO alerts (rule, channel, job, event, run_id, status, next_attempt_at, \
                           payload, created_at, finished_at, dedupe) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id";
        let pending = a.status == "pending";
        if pending {
            self.alert_written();
        }
        let now = at(a.now);
        let row = self.query_one(
            SQL,
            &[
                &a.rule,
                &a.channel,
                &a.job,
                &a.event,
                &a.run_id,
                &a.status,
                &pending.then_some(now),
                &a.payload,
                &now,
                &(!pending).then_some(now),
                &dedupe,
            ],
        )?;
        Ok(row.try_get(0)?)
    }
}

impl AlertOps for PgTx<'_> {
    fn insert_alert(&self, a: &NewAlert<'_>) -> Result<i64> {
        self.insert_alert_keyed(a, None)
    }

    fn insert_alert_once(&self, a: &NewAlert<'_>, dedupe: &str) -> Result<i64> {
        const SQL: &str = "SELECT id FROM alerts WHERE dedupe = $1";
        if let Some(r) = self.query_opt(SQL, &[&dedupe])? {
            return Ok(r.try_get(0)?);
        }
        self.insert_alert_keyed(a, Some(dedupe))
    }

    fn window(&self, rule: &str, job: &str) -> Result<Window> {
        const SQL: &str =
            "SELECT window_end, suppressed, kinds FROM throttles WHERE rule = $1 AND job = $2";
        match self.query_opt(SQL, &[&rule, &job])? {
            Some(r) => window_from_row(&r, 0),
            None => Ok(Window::default()),
        }
    }

    fn set_window(&self, rule: &str, job: &str, w: &Window) -> Result<()> {
        const DELETE: &str = "DELETE FROM throttles WHERE rule = $1 AND job = $2";
        const UPSERT: &str = "INSERT INTO throttles (rule, job, window_end, suppressed, kinds) \
                              VALUES ($1, $2, $3, $4, $5) \
                              ON CONFLICT (rule, job) DO UPDATE SET window_end = excluded.window_end, \
                              suppressed = excluded.suppressed, kinds = excluded.kinds";
        let Some(end) = w.end else {
            self.execute(DELETE, &[&rule, &job])?;
            return Ok(());
        };
        let kinds =
            serde_json::to_value(&w.kinds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.execute(
            UPSERT,
            &[&rule, &job, &at(end), &small(w.suppressed), &kinds],
        )?;
        Ok(())
    }

    fn ended_windows(&self, now: Time) -> Result<Vec<(String, String, Window)>> {
        // In SQLite's order: its table is kept in (rule, job) order, bytewise.
        const SQL: &str = "SELECT rule, job, window_end, suppressed, kinds FROM throttles \
                           WHERE window_end <= $1 ORDER BY rule COLLATE \"C\", job COLLATE \"C\"";
        self.query(SQL, &[&at(now)])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, window_from_row(r, 2)?)))
            .collect()
    }

    fn next_window_end(&self) -> Result<Option<Time>> {
        const SQL: &str = "SELECT min(window_end) FROM throttles";
        Ok(self.query_one(SQL, &[])?.try_get(0)?)
    }

    fn claim_alerts(
        &self,
        lease: &str,
        now: Time,
        lease_until: Time,
        limit_n: u32,
    ) -> Result<Vec<AlertRow>> {
        const SQL: &str = concat!(
            "UPDATE alerts SET lease = $1, lease_until = $3 WHERE id IN (SELECT id FROM alerts \
             WHERE status = 'pending' AND next_attempt_at <= $2 AND (lease IS NULL OR lease_until <= $2) \
             ORDER BY next_attempt_at, id LIMIT $4) RETURNING ",
            alert_columns!()
        );
        let mut out = self
            .query(SQL, &[&lease, &at(now), &at(lease_until), &limit(limit_n)])?
            .iter()
            .map(alert_from_row)
            .collect::<Result<Vec<_>>>()?;
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
        const SQL: &str = "UPDATE alerts SET attempts = attempts + 1, status = $2, next_attempt_at = $3, \
                           error = $4, finished_at = $5, lease = NULL, lease_until = NULL WHERE id = $1";
        let finished = (status != "pending").then(|| at(now));
        self.execute(SQL, &[&id, &status, &retry_at.map(at), &error, &finished])?;
        Ok(())
    }

    fn next_alert_due(&self) -> Result<Option<Time>> {
        // SQLite's `max(next_attempt_at, coalesce(lease_until, 0))`: NULL when
        // `next_attempt_at` is (PostgreSQL's `greatest` would skip it instead).
        const SQL: &str = "SELECT min(greatest(next_attempt_at, coalesce(lease_until, 'epoch'))) \
                           FROM alerts WHERE status = 'pending' AND next_attempt_at IS NOT NULL";
        Ok(self.query_one(SQL, &[])?.try_get(0)?)
    }

    fn pending_alerts(&self) -> Result<u64> {
        const SQL: &str = "SELECT count(*) FROM alerts WHERE status = 'pending'";
        Ok(count(self.query_one(SQL, &[])?.try_get(0)?))
    }

    fn alerts(&self, limit_n: u32, status: Option<&str>) -> Result<Vec<AlertRow>> {
        const SQL: &str = concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts WHERE ($2::text IS NULL OR status = $2) ORDER BY id DESC LIMIT $1"
        );
        self.query(SQL, &[&limit(limit_n), &status])?
            .iter()
            .map(alert_from_row)
            .collect()
    }

    fn alert(&self, id: i64) -> Result<Option<AlertRow>> {
        const SQL: &str = concat!("SELECT ", alert_columns!(), " FROM alerts WHERE id = $1");
        self.query_opt(SQL, &[&id])?
            .as_ref()
            .map(alert_from_row)
            .transpose()
    }

    fn last_sent_per_rule(&self) -> Result<BTreeMap<String, Time>> {
        const SQL: &str =
            "SELECT rule, max(finished_at) FROM alerts WHERE status = 'sent' GROUP BY rule";
        self.query(SQL, &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn purge_alerts(&self, before: Time) -> Result<usize> {
        const SQL: &str = "DELETE FROM alerts WHERE created_at < $1 AND status != 'pending'";
        Ok(self.execute(SQL, &[&at(before)])? as usize)
    }

    fn previous_finished_state(&self, job: &str, id: RunId) -> Result<Option<RunState>> {
        const SQL: &str = "SELECT state FROM runs WHERE job = $1 AND id != $2 AND finished_at IS NOT NULL \
                           ORDER BY finished_at DESC, id DESC LIMIT 1";
        match self.query_opt(SQL, &[&job, &id])? {
            Some(r) => Ok(Some(
                r.try_get::<_, String>(0)?
                    .parse()
                    .map_err(StoreError::Corrupt)?,
            )),
            None => Ok(None),
        }
    }

    fn due_deadlines(&self, now: Time) -> Result<Vec<DueDeadline>> {
        // Ties in SQLite's order: its index on `deadline_at` holds the primary key after it.
        const SQL: &str = "SELECT f.schedule, f.job, f.fire_at, f.deadline_at, f.outcome, f.reason, \
                           r.id, r.state, r.finished_at \
                           FROM fires f LEFT JOIN runs r ON r.id = f.run_id \
                           WHERE f.deadline_at IS NOT NULL AND f.deadline_at <= $1 \
                           ORDER BY f.deadline_at, f.schedule COLLATE \"C\", f.fire_at";
        self.query(SQL, &[&at(now)])?
            .iter()
            .map(|r| {
                let run = match r.try_get::<_, Option<i64>>(6)? {
                    Some(id) => Some((
                        id,
                        r.try_get::<_, String>(7)?
                            .parse()
                            .map_err(StoreError::Corrupt)?,
                        r.try_get(8)?,
                    )),
                    None => None,
                };
                Ok(DueDeadline {
                    schedule: r.try_get(0)?,
                    job: r.try_get(1)?,
                    fire_at: r.try_get(2)?,
                    deadline_at: r.try_get(3)?,
                    outcome: r.try_get(4)?,
                    reason: r.try_get(5)?,
                    run,
                })
            })
            .collect()
    }

    fn clear_deadline(&self, schedule: &str, fire_at: Time) -> Result<()> {
        const SQL: &str =
            "UPDATE fires SET deadline_at = NULL WHERE schedule = $1 AND fire_at = $2";
        self.execute(SQL, &[&schedule, &at(fire_at)])?;
        Ok(())
    }

    fn next_deadline(&self) -> Result<Option<Time>> {
        const SQL: &str = "SELECT min(deadline_at) FROM fires WHERE deadline_at IS NOT NULL";
        Ok(self.query_one(SQL, &[])?.try_get(0)?)
    }

    fn set_deadline(&self, schedule: &str, fire_at: Time, deadline_at: Time) -> Result<()> {
        const SQL: &str = "UPDATE fires SET deadline_at = $3 WHERE schedule = $1 AND fire_at = $2";
        self.execute(SQL, &[&schedule, &at(fire_at), &at(deadline_at)])?;
        Ok(())
    }
}
