//! PostgreSQL: the counts behind `/metrics`, as SQLite counts them.
//!
//! The histograms bucket with [`bucket_case`] over `d`, seconds as `double precision`, which
//! is the text and the type of the triggers that keep `metric_totals` (migration 1).

use std::sync::LazyLock;

use tokio_postgres::Row;

use super::PgTx;
use super::convert::count;
use crate::metrics::{DURATION_BUCKETS, LAG_BUCKETS, WAIT_BUCKETS};
use crate::store::Result;
use crate::store::metrics::*;

macro_rules! final_runs {
    () => {
        "('succeeded', 'dead', 'cancelled')"
    };
}

const RUNS: &str = concat!(
    "SELECT job, state, count(*) FROM runs WHERE state IN ",
    final_runs!(),
    " GROUP BY 1, 2"
);
const ATTEMPTS: &str = "SELECT r.job, a.outcome, count(*) FROM attempts a JOIN runs r ON r.id = a.run_id \
                        WHERE a.outcome IS NOT NULL GROUP BY 1, 2";
const STEPS: &str = "SELECT r.job, s.name, s.state, count(*) FROM steps s JOIN runs r ON r.id = s.run_id \
                     WHERE s.state IN ('succeeded', 'failed', 'skipped', 'cancelled') \
                     AND s.reused_from IS NULL GROUP BY 1, 2, 3";
const FIRES: &str = "SELECT schedule, outcome, sum(count) FROM fires GROUP BY 1, 2";
const ALERTS: &str =
    "SELECT channel, status, count(*) FROM alerts WHERE status != 'pending' GROUP BY 1, 2";
const STATES: &str = "SELECT state, count(*) FROM runs GROUP BY 1";
const TOTALS: &str = "SELECT metric, a, b, c, n, sum FROM metric_totals";

/// First start to end of finished runs. As in SQLite, a finished run that started but has no
/// end counts in the last bucket (`d` is NULL), adding nothing to the sum.
static RUN_DURATION: LazyLock<String> = LazyLock::new(|| {
    format!(
        concat!(
            "SELECT job, {}, count(*), coalesce(sum(d), 0) FROM (SELECT job, \
             extract(epoch FROM finished_at - started_at)::float8 AS d FROM runs \
             WHERE state IN ",
            final_runs!(),
            " AND started_at IS NOT NULL) t GROUP BY 1, 2"
        ),
        bucket_case("d", DURATION_BUCKETS)
    )
});

/// Due to start of finished runs' last attempt, never below zero; runs without an attempt are
/// not counted (SQLite's `max(0, NULL)` is NULL where `greatest` would say 0).
static QUEUE_WAIT: LazyLock<String> = LazyLock::new(|| {
    format!(
        concat!(
            "SELECT job, {}, count(*), coalesce(sum(d), 0) FROM (SELECT job, greatest(0, w) AS d FROM \
             (SELECT job, extract(epoch FROM (SELECT max(started_at) FROM attempts \
             WHERE run_id = runs.id) - due_at)::float8 AS w FROM runs WHERE state IN ",
            final_runs!(),
            " AND started_at IS NOT NULL) t WHERE w IS NOT NULL) u GROUP BY 1, 2"
        ),
        bucket_case("d", WAIT_BUCKETS)
    )
});

/// When fires that enqueued a run were recorded, against their instant.
static FIRE_LAG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, count(*), coalesce(sum(d), 0) FROM (SELECT \
         greatest(0, extract(epoch FROM recorded_at - fire_at)::float8) AS d \
         FROM fires WHERE outcome = 'enqueued') t GROUP BY 1",
        bucket_case("d", LAG_BUCKETS)
    )
});

/// The first `n` columns of a row: labels (NULL as empty).
fn labels(r: &Row, n: usize) -> Result<Vec<String>> {
    (0..n)
        .map(|i| Ok(r.try_get::<_, Option<String>>(i)?.unwrap_or_default()))
        .collect()
}

impl MetricOps for PgTx<'_> {
    fn metric_counts(&self) -> Result<MetricCounts> {
        let mut m = MetricCounts {
            runs: self.counts(RUNS, 2)?,
            attempts: self.counts(ATTEMPTS, 2)?,
            steps: self.counts(STEPS, 3)?,
            fires: self.counts(FIRES, 2)?,
            alerts: self.counts(ALERTS, 2)?,
            states: self.counts(STATES, 1)?,
            run_duration: self.histogram(&RUN_DURATION, 1, DURATION_BUCKETS.len())?,
            queue_wait: self.histogram(&QUEUE_WAIT, 1, WAIT_BUCKETS.len())?,
            fire_lag: self.histogram(&FIRE_LAG, 0, LAG_BUCKETS.len())?,
        };
        // What deleted rows contributed.
        for r in self.query(TOTALS, &[])? {
            let metric: String = r.try_get(0)?;
            let labels = (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            m.add_total(&metric, labels, r.try_get(4)?, r.try_get(5)?);
        }
        m.sort();
        Ok(m)
    }
}

impl PgTx<'_> {
    /// Rows of `labels` text columns then a count (`bigint`).
    fn counts(&self, sql: &str, n: usize) -> Result<Vec<Count>> {
        self.query(sql, &[])?
            .iter()
            .map(|r| Ok((labels(r, n)?, count(r.try_get(n)?))))
            .collect()
    }

    /// Rows of `labels` text columns, a bucket index, a count and a sum.
    fn histogram(&self, sql: &str, n: usize, bounds: usize) -> Result<Vec<Hist>> {
        let mut out = Vec::new();
        for r in self.query(sql, &[])? {
            let bucket: i32 = r.try_get(n)?;
            observe(
                &mut out,
                labels(&r, n)?,
                &bucket.to_string(),
                count(r.try_get(n + 1)?),
                r.try_get(n + 2)?,
                bounds,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The triggers of migration 1 put deleted rows in the same buckets as the live queries.
    #[test]
    fn the_triggers_bucket_like_the_queries() {
        let m = super::super::migrations::MIGRATIONS[0];
        for bounds in [DURATION_BUCKETS, WAIT_BUCKETS, LAG_BUCKETS] {
            assert!(m.contains(&bucket_case("d", bounds)), "{bounds:?}");
        }
        for q in [&*RUN_DURATION, &*QUEUE_WAIT, &*FIRE_LAG] {
            assert!(q.contains(")::float8"), "seconds as double precision: {q}");
        }
    }
}
