//! What `/metrics` reports, counted by the store: aggregates over the rows kept, plus what
//! deleted rows contributed (`metric_totals`, migration 10).

use super::Result;

/// One series of a counter: its labels and value.
pub type Count = (Vec<String>, u64);

/// One series of a histogram: its labels, the count in each bucket (not cumulative; the last is
/// the overflow past the largest bound), and the sum of the observations.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub labels: Vec<String>,
    pub buckets: Vec<u64>,
    pub sum: f64,
}

/// Everything `/metrics` reports from the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricCounts {
    /// (job, final state).
    pub runs: Vec<Count>,
    /// (job, outcome).
    pub attempts: Vec<Count>,
    /// (job, step, final state).
    pub steps: Vec<Count>,
    /// (schedule, outcome).
    pub fires: Vec<Count>,
    /// (channel, status): alerts sent or given up on.
    pub alerts: Vec<Count>,
    /// (state): runs now in each state.
    pub states: Vec<Count>,
    /// (job): first start to end of finished runs.
    pub run_duration: Vec<Hist>,
    /// (job): due to start of finished runs' last attempt.
    pub queue_wait: Vec<Hist>,
    /// (): when a fire was recorded against its instant, for fires that enqueued a run.
    pub fire_lag: Vec<Hist>,
}

/// `CASE WHEN expr <= b0 THEN 0 … ELSE n END`: the index of the bucket of `expr` (the same
/// text as in migration 10's triggers).
pub fn bucket_case(expr: &str, bounds: &[f64]) -> String {
    let mut s = String::from("CASE");
    for (i, b) in bounds.iter().enumerate() {
        s.push_str(&format!(" WHEN {expr} <= {b:?} THEN {i}"));
    }
    s.push_str(&format!(" ELSE {} END", bounds.len()));
    s
}

/// The store's operations on metrics: the SQLite and PostgreSQL transactions implement them.
pub trait MetricOps {
    /// The counts behind `/metrics`, in one read transaction.
    fn metric_counts(&self) -> Result<MetricCounts>;
}

/// Adds `n` to the series `labels` of a counter.
pub(super) fn add(v: &mut Vec<Count>, labels: Vec<String>, n: u64) {
    match v.iter_mut().find(|(l, _)| *l == labels) {
        Some((_, c)) => *c += n,
        None => v.push((labels, n)),
    }
}

/// Adds `n` observations summing to `sum` to bucket `bucket` (its index, as text; past the
/// last bound is the overflow) of the series `labels` of a histogram with `bounds` bounds.
pub(super) fn observe(
    v: &mut Vec<Hist>,
    labels: Vec<String>,
    bucket: &str,
    n: u64,
    sum: f64,
    bounds: usize,
) {
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

impl MetricCounts {
    /// Adds what deleted rows contributed: one row of `metric_totals`.
    pub(super) fn add_total(
        &mut self,
        metric: &str,
        (a, b, c): (String, String, String),
        n: i64,
        sum: f64,
    ) {
        use crate::metrics::{DURATION_BUCKETS, LAG_BUCKETS, WAIT_BUCKETS};
        let n = n.max(0) as u64;
        match metric {
            "runs" => add(&mut self.runs, vec![a, b], n),
            "attempts" => add(&mut self.attempts, vec![a, b], n),
            "steps" => add(&mut self.steps, vec![a, b, c], n),
            "fires" => add(&mut self.fires, vec![a, b], n),
            "alerts" => add(&mut self.alerts, vec![a, b], n),
            "run_duration" => observe(
                &mut self.run_duration,
                vec![a],
                &b,
                n,
                sum,
                DURATION_BUCKETS.len(),
            ),
            "queue_wait" => observe(
                &mut self.queue_wait,
                vec![a],
                &b,
                n,
                sum,
                WAIT_BUCKETS.len(),
            ),
            "fire_lag" => observe(&mut self.fire_lag, vec![], &b, n, sum, LAG_BUCKETS.len()),
            _ => {}
        }
    }

    /// Every series in the order of its labels.
    pub(super) fn sort(&mut self) {
        for v in [
            &mut self.runs,
            &mut self.attempts,
            &mut self.steps,
            &mut self.fires,
            &mut self.alerts,
            &mut self.states,
        ] {
            v.sort();
        }
        for h in [
            &mut self.run_duration,
            &mut self.queue_wait,
            &mut self.fire_lag,
        ] {
            h.sort_by(|x, y| x.labels.cmp(&y.labels));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
