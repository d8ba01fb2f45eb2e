//! `/metrics`: the Prometheus text format, written with `metrics-exporter-prometheus`'s
//! formatting from what the store counts ([`crate::store::MetricCounts`]).
//!
//! Counted by the store, not in this process: runs finished by `worker job` in another process
//! count too, a restart starts from the same numbers, and rows deleted by pruning or
//! `queue:purge` leave their contribution behind (migration 10), so counters never go down.
//! Labels are jobs, steps, schedules, channels, states and outcomes — never run ids.

use metrics_exporter_prometheus::LabelSet;
use metrics_exporter_prometheus::formatting::{
    write_help_line, write_metric_line, write_type_line,
};

use crate::config::Config;
use crate::model::Time;
use crate::store::{Count, Hist, MetricCounts};

/// Upper bounds (seconds) of `worker_run_duration_seconds`.
pub const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
];
/// Upper bounds (seconds) of `worker_queue_wait_seconds`.
pub const WAIT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0,
];
/// Upper bounds (seconds) of `worker_fire_lag_seconds`.
pub const LAG_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0];

fn labels(names: &[&'static str], values: &[String]) -> LabelSet {
    let labels: Vec<metrics::Label> = names
        .iter()
        .zip(values)
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    LabelSet::from_key_and_global(
        &metrics::Key::from_parts("", labels),
        &indexmap::IndexMap::new(),
    )
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    write_help_line(out, name, None, None, help);
    write_type_line(out, name, None, None, kind);
}

fn counter(out: &mut String, name: &str, help: &str, names: &[&'static str], series: &[Count]) {
    header(out, name, "counter", help);
    for (values, n) in series {
        write_metric_line::<&str, u64>(out, name, None, &labels(names, values), None, *n, None);
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    names: &[&'static str],
    bounds: &[f64],
    series: &[Hist],
) {
    header(out, name, "histogram", help);
    for h in series {
        let l = labels(names, &h.labels);
        let mut cumulative = 0;
        for (i, b) in bounds.iter().enumerate() {
            cumulative += h.buckets.get(i).copied().unwrap_or(0);
            write_metric_line(
                out,
                name,
                Some("bucket"),
                &l,
                Some(("le", b)),
                cumulative,
                None,
            );
        }
        let count: u64 = h.buckets.iter().sum();
        write_metric_line(
            out,
            name,
            Some("bucket"),
            &l,
            Some(("le", "+Inf")),
            count,
            None,
        );
        write_metric_line::<&str, f64>(out, name, Some("sum"), &l, None, h.sum, None);
        write_metric_line::<&str, u64>(out, name, Some("count"), &l, None, count, None);
    }
}

/// The exposition of `counts`, with the schedules' next fires from `config` (paused ones have
/// none) as of `now`.
pub fn render(
    counts: &MetricCounts,
    config: &Config,
    paused: &std::collections::BTreeMap<String, Time>,
    now: Time,
) -> String {
    let mut out = String::with_capacity(8 * 1024);
    counter(
        &mut out,
        "worker_runs_total",
        "Runs that ended, by final state.",
        &["job", "state"],
        &counts.runs,
    );
    counter(
        &mut out,
        "worker_attempts_total",
        "Attempts that ended, by outcome.",
        &["job", "outcome"],
        &counts.attempts,
    );
    histogram(
        &mut out,
        "worker_run_duration_seconds",
        "Runs that ended: first start to end, retries and backoff included.",
        &["job"],
        DURATION_BUCKETS,
        &counts.run_duration,
    );
    header(
        &mut out,
        "worker_runs",
        "gauge",
        "Runs now in each state (as kept in the store).",
    );
    for (values, n) in &counts.states {
        write_metric_line::<&str, u64>(
            &mut out,
            "worker_runs",
            None,
            &labels(&["state"], values),
            None,
            *n,
            None,
        );
    }
    counter(
        &mut out,
        "worker_steps_total",
        "Workflow steps that ended, by final state (steps reused by a retry from a step are not counted again).",
        &["job", "step", "state"],
        &counts.steps,
    );
    counter(
        &mut out,
        "worker_fires_total",
        "Schedule fires, by outcome (enqueued, missed).",
        &["schedule", "outcome"],
        &counts.fires,
    );
    histogram(
        &mut out,
        "worker_fire_lag_seconds",
        "How long after its instant a fire that enqueued a run was recorded.",
        &[],
        LAG_BUCKETS,
        &counts.fire_lag,
    );
    header(
        &mut out,
        "worker_schedule_next_fire_timestamp_seconds",
        "gauge",
        "Each enabled, unpaused schedule's next fire (Unix time).",
    );
    for s in config
        .schedules
        .iter()
        .filter(|s| s.enabled && !paused.contains_key(&s.name))
    {
        if let Some(t) = s.cron.next_after(s.timezone, now) {
            write_metric_line::<&str, i64>(
                &mut out,
                "worker_schedule_next_fire_timestamp_seconds",
                None,
                &labels(&["schedule"], std::slice::from_ref(&s.name)),
                None,
                t.timestamp(),
                None,
            );
        }
    }
    histogram(
        &mut out,
        "worker_queue_wait_seconds",
        "Runs that ended: from due to the start of their last attempt.",
        &["job"],
        WAIT_BUCKETS,
        &counts.queue_wait,
    );
    counter(
        &mut out,
        "worker_alerts_total",
        "Alerts delivered (sent) or given up on (failed), by channel.",
        &["channel", "status"],
        &counts.alerts,
    );
    header(&mut out, "worker_build_info", "gauge", "This build: 1.");
    write_metric_line::<&str, u8>(
        &mut out,
        "worker_build_info",
        None,
        &labels(
            &["version", "commit"],
            &[
                env!("CARGO_PKG_VERSION").to_string(),
                env!("WORKER_GIT_COMMIT").to_string(),
            ],
        ),
        None,
        1,
        None,
    );
    out
}
