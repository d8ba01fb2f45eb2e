//! Output: aligned tables for people, JSON for machines, and the shared run object.

use std::sync::atomic::{AtomicBool, Ordering};

use comfy_table::{Cell, Table, presets};
use serde_json::{Value, json};

use crate::model::{Attempt, Run, Step, Time};
use crate::units::format_duration;

/// A borderless, aligned table with a header row.
pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(headers.iter().map(Cell::new).collect::<Vec<_>>());
    t
}

/// Prints a table, trimming the padding comfy-table leaves at line ends.
pub fn print_table(t: &Table) {
    for line in t.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

/// Prints one JSON document.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

/// RFC 3339 in UTC with milliseconds, for JSON.
pub fn rfc3339(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn opt_rfc3339(t: Option<Time>) -> Value {
    t.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

/// Set by `--utc`: human tables print UTC instead of local time.
static UTC: AtomicBool = AtomicBool::new(false);

/// Makes every human time UTC (`--utc`).
pub fn use_utc(on: bool) {
    UTC.store(on, Ordering::Relaxed);
}

/// A time for people, always with its zone: local time and its UTC offset
/// (`2026-11-30 21:15:03 +01:00`), or `2026-11-30 20:15:03 UTC` under `--utc` or wherever the
/// local offset is zero. JSON keeps RFC 3339 in UTC ([`rfc3339`]).
pub fn human(t: Time) -> String {
    let local = t.with_timezone(&chrono::Local);
    if UTC.load(Ordering::Relaxed) || local.offset().local_minus_utc() == 0 {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M:%S %:z").to_string()
    }
}

pub fn opt_human(t: Option<Time>) -> String {
    t.map(human).unwrap_or_else(|| "-".into())
}

/// A schedule's fire time, in the schedule's own zone as cron reads it, RFC 3339
/// (`2026-03-08T03:00:00-04:00`); in UTC under `--utc` (`2026-03-08T07:00:00Z`).
pub fn in_zone(tz: chrono_tz::Tz, t: Time) -> String {
    if UTC.load(Ordering::Relaxed) {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    } else {
        t.with_timezone(&tz).to_rfc3339()
    }
}

/// "in 4m05s" / "4m05s ago".
pub fn relative(now: Time, t: Time) -> String {
    let d = t - now;
    match d.to_std() {
        Ok(fwd) => format!("in {}", format_duration(fwd)),
        Err(_) => format!("{} ago", format_duration((-d).to_std().unwrap_or_default())),
    }
}

/// Wall time a run took, first start to end (including backoff between attempts).
pub fn run_duration_ms(run: &Run) -> Option<i64> {
    Some((run.finished_at? - run.started_at?).num_milliseconds())
}

/// The JSON run object (SPEC 5): snake_case, RFC 3339 times. `env` lists only the variable names:
/// values given with `--env` may be secrets.
pub fn run_json(run: &Run) -> Value {
    json!({
        "id": run.id,
        "job": run.job,
        "state": run.state,
        "priority": run.priority,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "trigger": run.trigger,
        "key": run.key,
        "depends_on": run.depends_on,
        "created_at": rfc3339(run.created_at),
        "due_at": rfc3339(run.due_at),
        "started_at": opt_rfc3339(run.started_at),
        "finished_at": opt_rfc3339(run.finished_at),
        "duration_ms": run_duration_ms(run),
        "exit_code": run.exit_code,
        "signal": run.signal,
        "error": run.error,
        "schedule": run.schedule,
        "scheduled_at": opt_rfc3339(run.scheduled_at),
        "env": run.env.keys().collect::<Vec<_>>(),
        "retry_of": run.retry_of,
        "retried_by": run.retried_by,
        "input": run.input,
        "steps": if run.has_steps {
            Value::Array(run.steps.iter().map(step_json).collect())
        } else {
            Value::Null
        },
    })
}

/// The JSON step object (SPEC 8).
pub fn step_json(s: &Step) -> Value {
    json!({
        "name": s.name,
        "kind": s.kind,
        "state": s.state,
        "attempts": s.attempts,
        "started_at": opt_rfc3339(s.started_at),
        "finished_at": opt_rfc3339(s.finished_at),
        "duration_ms": step_duration_ms(s),
        "error": s.error,
        "outputs": s.outputs,
        "exit_code": s.exit_code,
        "signal": s.signal,
        "wake_at": opt_rfc3339(s.wake_at.filter(|t| !crate::store::is_never(*t))),
        "waiting_for": s.waiting_for,
        "reused_from": s.reused_from,
    })
}

/// How long a step took (or has taken so far, for one that runs or waits: `None`).
pub fn step_duration_ms(s: &Step) -> Option<i64> {
    Some((s.finished_at? - s.started_at?).num_milliseconds())
}

/// The JSON attempt object.
pub fn attempt_json(a: &Attempt) -> Value {
    json!({
        "attempt": a.number,
        "seq": a.seq,
        "started_at": rfc3339(a.started_at),
        "finished_at": opt_rfc3339(a.finished_at),
        "duration_ms": a.finished_at.map(|f| (f - a.started_at).num_milliseconds()),
        "outcome": a.outcome,
        "exit_code": a.exit_code,
        "signal": a.signal,
        "error": a.error,
        "output_bytes": a.output_bytes,
    })
}

/// "3" or "3 (SIGKILL)" or "-" for the exit column.
pub fn exit_text(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => crate::exec::signal_name(s).to_string(),
        _ => "-".into(),
    }
}

/// A human byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
