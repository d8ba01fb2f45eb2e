//! `worker history` and `worker show`.

use serde_json::Value;

use super::output::{
    exit_text, human, opt_human, print_json, print_table, run_duration_ms, step_duration_ms, table,
};
use super::{CliError, CliResult, Ctx};
use crate::exec::capture;
use crate::model::{RunId, RunState, StepState};
use crate::store::RunFilter;
use crate::units::format_duration;

fn ms_text(ms: Option<i64>) -> String {
    ms.map(|m| format_duration(std::time::Duration::from_millis(m.max(0) as u64)))
        .unwrap_or_else(|| "-".into())
}

pub fn history(ctx: &Ctx, job: Option<String>, limit: u32) -> CliResult {
    let (_, mut store) = ctx.store()?;
    let filter = RunFilter {
        job,
        finished: true,
        limit: Some(limit),
        ..Default::default()
    };
    let runs = store.read(|tx| {
        let runs = tx.list_runs(&filter)?;
        let mut out = Vec::with_capacity(runs.len());
        for r in runs {
            let attempts = tx.attempts(r.id)?;
            out.push((r, attempts));
        }
        Ok::<_, crate::store::StoreError>(out)
    })?;
    if ctx.json {
        let v: Vec<Value> = runs
            .iter()
            .map(|(r, a)| crate::objects::run_with_attempts(r, a))
            .collect();
        print_json(&Value::Array(v));
        return Ok(());
    }
    let mut t = table(&[
        "ID", "JOB", "STATE", "TRIGGER", "ATTEMPTS", "STARTED", "DURATION", "EXIT",
    ]);
    for (r, attempts) in &runs {
        // Each attempt's duration, so a slow retry is visible at a glance.
        let each: Vec<String> = attempts
            .iter()
            .filter_map(|a| {
                a.finished_at
                    .map(|f| ms_text(Some((f - a.started_at).num_milliseconds())))
            })
            .collect();
        let attempt_col = if each.len() > 1 {
            format!("{} ({})", r.attempt, each.join(", "))
        } else {
            r.attempt.to_string()
        };
        t.add_row(vec![
            r.id.to_string(),
            r.job.clone(),
            r.state.to_string(),
            r.trigger.to_string(),
            attempt_col,
            opt_human(r.started_at),
            ms_text(run_duration_ms(r)),
            exit_text(r.exit_code, r.signal),
        ]);
    }
    print_table(&t);
    Ok(())
}

/// Lines of output `show` prints for a running run.
const SHOW_TAIL_LINES: usize = 20;

pub fn show(ctx: &Ctx, id: RunId) -> CliResult {
    let (data, mut store) = ctx.store()?;
    let found = store.read(|tx| {
        let Some(run) = tx.run(id)? else {
            return Ok(None);
        };
        let attempts = tx.attempts(id)?;
        Ok::<_, crate::store::StoreError>(Some((run, attempts)))
    })?;
    let Some((run, attempts)) = found else {
        return Err(CliError::Failed(format!("run {id} does not exist")));
    };
    let now = chrono::Utc::now();
    // While it runs: how long the current attempt has been going, and what it printed so far.
    let current = attempts
        .last()
        .filter(|a| run.state == RunState::Running && a.finished_at.is_none());
    let elapsed = current.map(|a| (now - a.started_at).to_std().unwrap_or_default());
    if ctx.json {
        print_json(&Value::Array(vec![crate::objects::run_detail(
            &run, &attempts, now,
        )]));
        return Ok(());
    }
    let field = |k: &str, v: String| println!("{k:<13} {v}");
    field("run", run.id.to_string());
    field("job", run.job.clone());
    field("state", run.state.to_string());
    field("priority", run.priority.to_string());
    field("trigger", run.trigger.to_string());
    field("attempts", format!("{}/{}", run.attempt, run.max_attempts));
    if let Some(k) = &run.key {
        field("key", k.clone());
    }
    if !run.depends_on.is_empty() {
        field(
            "depends on",
            run.depends_on
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if let Some(s) = &run.schedule {
        field(
            "schedule",
            format!("{s} (fire {})", opt_human(run.scheduled_at)),
        );
    }
    field("created", opt_human(Some(run.created_at)));
    field("due", opt_human(Some(run.due_at)));
    field("started", opt_human(run.started_at));
    if let (Some(e), Some(a)) = (elapsed, current) {
        field(
            "elapsed",
            format!("{} (attempt {}, running)", format_duration(e), a.number),
        );
    }
    field("finished", opt_human(run.finished_at));
    if let Some(e) = &run.error {
        field("error", e.clone());
    }
    if let Some(i) = &run.input {
        field("input", i.to_string());
    }
    if !attempts.is_empty() {
        println!();
        let mut t = table(&[
            "ATTEMPT", "STARTED", "DURATION", "OUTCOME", "EXIT", "OUTPUT", "ERROR",
        ]);
        for a in &attempts {
            t.add_row(vec![
                a.number.to_string(),
                opt_human(Some(a.started_at)),
                ms_text(a.finished_at.map(|f| (f - a.started_at).num_milliseconds())),
                a.outcome.clone().unwrap_or_else(|| "running".into()),
                exit_text(a.exit_code, a.signal),
                a.output_bytes
                    .map(super::output::bytes)
                    .unwrap_or_else(|| "-".into()),
                a.error.clone().unwrap_or_default(),
            ]);
        }
        print_table(&t);
    }
    if run.has_steps {
        println!();
        let mut t = table(&[
            "STEP",
            "KIND",
            "STATE",
            "ATTEMPTS",
            "STARTED",
            "DURATION",
            "ERROR / WAITS FOR",
        ]);
        for st in &run.steps {
            let duration = match (st.state, step_duration_ms(st)) {
                (_, Some(ms)) => ms_text(Some(ms)),
                (StepState::Running | StepState::Suspended, None) => st
                    .started_at
                    .map(|s| format!("{} so far", ms_text(Some((now - s).num_milliseconds()))))
                    .unwrap_or_else(|| "-".into()),
                _ => "-".into(),
            };
            let wake = st.wake_at.filter(|t| !crate::store::is_never(*t));
            let note = match (st.state, &st.waiting_for, wake) {
                (StepState::Suspended, Some(sig), Some(t)) => {
                    format!("signal {sig} (until {})", human(t))
                }
                (StepState::Suspended, Some(sig), None) => format!("signal {sig}"),
                (StepState::Suspended, None, Some(t)) => format!("sleeps until {}", human(t)),
                (StepState::Pending, _, Some(t)) => format!(
                    "retry at {}{}",
                    human(t),
                    st.error
                        .as_deref()
                        .map(|e| format!(" after: {e}"))
                        .unwrap_or_default()
                ),
                _ => match (&st.error, st.reused_from) {
                    (Some(e), _) => e.clone(),
                    (None, Some(r)) => format!("reused from run {r}"),
                    (None, None) => String::new(),
                },
            };
            t.add_row(vec![
                st.name.clone(),
                st.kind.clone(),
                st.state.to_string(),
                st.attempts.to_string(),
                opt_human(st.started_at),
                duration,
                note,
            ]);
        }
        print_table(&t);
    }
    if let Some(a) = current.filter(|_| !run.has_steps) {
        let tail = capture::last_lines(&data.log_path(id, a.seq), SHOW_TAIL_LINES);
        println!();
        if tail.is_empty() {
            println!("no output yet (`worker logs {id} -f` follows it)");
        } else {
            println!(
                "output so far (last {SHOW_TAIL_LINES} lines; `worker logs {id} -f` follows it):"
            );
            println!("{tail}");
        }
    }
    Ok(())
}
