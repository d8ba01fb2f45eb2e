//! SQLite: the counts behind `/metrics`.

use super::{Result, SqliteTx};
use crate::metrics::{DURATION_BUCKETS, LAG_BUCKETS, WAIT_BUCKETS};
use crate::store::metrics::*;

const FINAL_RUNS: &str = "('succeeded', 'dead', 'cancelled')";

const FINAL_STEPS: &str = "('succeeded', 'failed', 'skipped', 'cancelled')";

impl MetricOps for SqliteTx<'_> {
    fn metric_counts(&self) -> Result<MetricCounts> {
        let mut m = MetricCounts {
            runs: self.counts(&format!(
                "SELECT job, state, count(*) FROM runs WHERE state IN {FINAL_RUNS} GROUP BY 1, 2"
            ), 2)?,
            attempts: self.counts(
                "SELECT r.job, a.outcome, count(*) FROM attempts a JOIN runs r ON r.id = a.run_id \
                 WHERE a.outcome IS NOT NULL GROUP BY 1, 2",
                2,
            )?,
            steps: self.counts(&format!(
                "SELECT r.job, s.name, s.state, count(*) FROM steps s JOIN runs r ON r.id = s.run_id \
                 WHERE s.state IN {FINAL_STEPS} AND s.reused_from IS NULL GROUP BY 1, 2, 3"
            ), 3)?,
            fires: self.counts(
                "SELECT schedule, outcome, sum(count) FROM fires GROUP BY 1, 2",
                2,
            )?,
            alerts: self.counts(
                "SELECT channel, status, count(*) FROM alerts WHERE status != 'pending' GROUP BY 1, 2",
                2,
            )?,
            states: self.counts("SELECT state, count(*) FROM runs GROUP BY 1", 1)?,
            run_duration: self.histogram(
                &format!(
                    "SELECT job, {}, count(*), total(d) FROM (SELECT job, \
                     (finished_at - started_at) / 1000.0 AS d FROM runs \
                     WHERE state IN {FINAL_RUNS} AND started_at IS NOT NULL) GROUP BY 1, 2",
                    bucket_case("d", DURATION_BUCKETS)
                ),
                1,
                DURATION_BUCKETS.len(),
            )?,
            queue_wait: self.histogram(
                &format!(
                    "SELECT job, {}, count(*), total(d) FROM (SELECT job, \
                     max(0, (SELECT max(started_at) FROM attempts WHERE run_id = runs.id) - due_at) \
                     / 1000.0 AS d FROM runs WHERE state IN {FINAL_RUNS} AND started_at IS NOT NULL) \
                     WHERE d IS NOT NULL GROUP BY 1, 2",
                    bucket_case("d", WAIT_BUCKETS)
                ),
                1,
                WAIT_BUCKETS.len(),
            )?,
            fire_lag: self.histogram(
                &format!(
                    "SELECT {}, count(*), total(d) FROM (SELECT max(0, recorded_at - fire_at) / 1000.0 AS d \
                     FROM fires WHERE outcome = 'enqueued') GROUP BY 1",
                    bucket_case("d", LAG_BUCKETS)
                ),
                0,
                LAG_BUCKETS.len(),
            )?,
        };
        // What deleted rows contributed.
        let mut stmt = self
            .tx
            .prepare_cached("SELECT metric, a, b, c, n, sum FROM metric_totals")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get(1)?, r.get(2)?, r.get(3)?),
                r.get::<_, i64>(4)?,
                r.get::<_, f64>(5)?,
            ))
        })?;
        for row in rows {
            let (metric, labels, n, sum) = row?;
            m.add_total(&metric, labels, n, sum);
        }
        m.sort();
        Ok(m)
    }
}

impl SqliteTx<'_> {
    /// Rows of `labels` text columns then a count.
    fn counts(&self, sql: &str, labels: usize) -> Result<Vec<Count>> {
        let mut stmt = self.tx.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| {
            let mut l = Vec::with_capacity(labels);
            for i in 0..labels {
                l.push(r.get::<_, Option<String>>(i)?.unwrap_or_default());
            }
            Ok((l, r.get::<_, i64>(labels)?.max(0) as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Rows of `labels` text columns, a bucket index, a count and a sum.
    fn histogram(&self, sql: &str, labels: usize, bounds: usize) -> Result<Vec<Hist>> {
        let mut out = Vec::new();
        let mut stmt = self.tx.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| {
            let mut l = Vec::with_capacity(labels);
            for i in 0..labels {
                l.push(r.get::<_, Option<String>>(i)?.unwrap_or_default());
            }
            Ok((
                l,
                r.get::<_, i64>(labels)?,
                r.get::<_, i64>(labels + 1)?,
                r.get::<_, f64>(labels + 2)?,
            ))
        })?;
        for row in rows {
            let (l, bucket, n, sum) = row?;
            observe(
                &mut out,
                l,
                &bucket.to_string(),
                n.max(0) as u64,
                sum,
                bounds,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The triggers of migration 10 put deleted rows in the same buckets as the live queries.
    #[test]
    fn the_triggers_bucket_like_the_queries() {
        let m = super::super::migrations::MIGRATIONS[9];
        for bounds in [DURATION_BUCKETS, WAIT_BUCKETS, LAG_BUCKETS] {
            assert!(m.contains(&bucket_case("d", bounds)), "{bounds:?}");
        }
    }
}
