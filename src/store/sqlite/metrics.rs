//! SQLite: the counts behind `/metrics`.

use super::{Result, SqliteTx};
use crate::metrics::{DURATION_BUCKETS, LAG_BUCKETS, WAIT_BUCKETS};
use crate::store::metrics::*;

const FINAL_RUNS: &str = "('succeeded', 'dead', 'cancelled')";

const FINAL_STEPS: &str = "('succeeded', 'failed', 'skipped', 'cancelled')";

fn add(v: &mut Vec<Count>, labels: Vec<String>, n: u64) {
    match v.iter_mut().find(|(l, _)| *l == labels) {
        Some((_, c)) => *c += n,
        None => v.push((labels, n)),
    }
}

fn observe(v: &mut Vec<Hist>, labels: Vec<String>, bucket: &str, n: u64, sum: f64, bounds: usize) {
    let Ok(i) = bucket.parse::<usize>() else {
        return;
    };
    let i = i.min(bounds);
    let h = match v.iter().position(|h| h.labels == labels) {
        Some(p) => &mut v[p],
        None => {
            v.push(Hist {
                labels,
                buckets: vec![0; bounds + 1],
                sum: 0.0,
            });
            let last = v.len() - 1;
            &mut v[last]
        }
    };
    h.buckets[i] += n;
    h.sum += sum;
}

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
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, f64>(5)?,
            ))
        })?;
        for row in rows {
            let (metric, a, b, c, n, sum) = row?;
            let n = n.max(0) as u64;
            match metric.as_str() {
                "runs" => add(&mut m.runs, vec![a, b], n),
                "attempts" => add(&mut m.attempts, vec![a, b], n),
                "steps" => add(&mut m.steps, vec![a, b, c], n),
                "fires" => add(&mut m.fires, vec![a, b], n),
                "alerts" => add(&mut m.alerts, vec![a, b], n),
                "run_duration" => observe(
                    &mut m.run_duration,
                    vec![a],
                    &b,
                    n,
                    sum,
                    DURATION_BUCKETS.len(),
                ),
                "queue_wait" => observe(&mut m.queue_wait, vec![a], &b, n, sum, WAIT_BUCKETS.len()),
                "fire_lag" => observe(&mut m.fire_lag, vec![], &b, n, sum, LAG_BUCKETS.len()),
                _ => {}
            }
        }
        for v in [
            &mut m.runs,
            &mut m.attempts,
            &mut m.steps,
            &mut m.fires,
            &mut m.alerts,
            &mut m.states,
        ] {
            v.sort();
        }
        for h in [&mut m.run_duration, &mut m.queue_wait, &mut m.fire_lag] {
            h.sort_by(|x, y| x.labels.cmp(&y.labels));
        }
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

    #[test]
    fn totals_merge_into_their_series() {
        let mut v = vec![(vec!["a".to_string(), "dead".to_string()], 2)];
        add(&mut v, vec!["a".into(), "dead".into()], 3);
        add(&mut v, vec!["b".into(), "dead".into()], 1);
        assert_eq!(v[0].1, 5);
        assert_eq!(v.len(), 2);
        let mut h = Vec::new();
        observe(&mut h, vec!["a".into()], "0", 2, 0.1, 3);
        observe(&mut h, vec!["a".into()], "9", 1, 50.0, 3);
        assert_eq!(h[0].buckets, vec![2, 0, 0, 1]);
        assert!((h[0].sum - 50.1).abs() < 1e-9);
    }
}
