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
