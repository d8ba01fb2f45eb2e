//! The JSON objects of runs, attempts, steps, jobs, schedules and alerts: one serializer for the
//! command line's `--json` and the HTTP API, so the two never disagree.

use serde_json::{Value, json};

use crate::model::{Attempt, Run, Step, Time};

/// RFC 3339 in UTC with milliseconds, for JSON.
pub fn rfc3339(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn opt_rfc3339(t: Option<Time>) -> Value {
    t.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
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

/// A schedule's fire time with its own UTC offset (`2026-03-08T03:00:00-04:00`).
pub fn in_zone(s: &crate::config::ScheduleDef, t: Time) -> String {
    t.with_timezone(&s.timezone).to_rfc3339()
}

/// The next fire of `job` over its enabled schedules that are not paused, with its schedule.
pub fn next_fire<'c>(
    config: &'c crate::config::Config,
    job: &'c str,
    paused: &std::collections::BTreeMap<String, Time>,
    now: Time,
) -> Option<(&'c crate::config::ScheduleDef, Time)> {
    config
        .schedules_of(job)
        .filter(|s| s.enabled && !paused.contains_key(&s.name))
        .filter_map(|s| s.cron.next_after(s.timezone, now).map(|t| (s, t)))
        .min_by_key(|(_, t)| *t)
}

/// The jobs (`worker list --json`, `GET /jobs`).
pub fn jobs(
    tx: &crate::store::Tx<'_>,
    config: &crate::config::Config,
    now: Time,
) -> Result<Vec<Value>, crate::store::StoreError> {
    let last = tx.last_finished_per_job()?;
    let paused = tx.paused_schedules()?;
    Ok(config
        .jobs
        .values()
        .map(|j| {
            let l = last.get(&j.name);
            json!({
                "name": j.name,
                "description": j.description,
                "priority": j.priority,
                "depends_on": j.dependency_names().collect::<Vec<_>>(),
                "concurrency": j.concurrency,
                "steps": j.workflow().map(|w| w.steps.iter().map(|s| json!({
                    "name": s.name, "kind": s.kind.as_str(),
                    "needs": s.needs.iter().map(|&i| w.steps[i].name.as_str()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()),
                "input": j.input.as_ref().map(|i| i.fields.iter().map(|(k, f)| (k.clone(), json!({
                    "required": f.required, "default": f.default,
                }))).collect::<serde_json::Map<_, _>>()),
                "schedules": config.schedules_of(&j.name).map(|s| s.name.as_str()).collect::<Vec<_>>(),
                "last_run": l.map(|(s, t)| json!({"state": s, "finished_at": rfc3339(*t)})),
                "next_fire": next_fire(config, &j.name, &paused, now).map(|(s, t)| in_zone(s, t)),
            })
        })
        .collect())
}

/// The schedules with their next `n` fires after `from` (`worker schedules --json`,
/// `GET /schedules`).
pub fn schedules(
    tx: &crate::store::Tx<'_>,
    config: &crate::config::Config,
    n: usize,
    from: Time,
) -> Result<Vec<Value>, crate::store::StoreError> {
    let paused = tx.paused_schedules()?;
    let mut out = Vec::with_capacity(config.schedules.len());
    for s in &config.schedules {
        let l = tx.last_fire(&s.name)?;
        let next = if s.enabled && !paused.contains_key(&s.name) {
            s.cron.next_n(s.timezone, from, n)
        } else {
            Vec::new()
        };
        out.push(json!({
            "name": s.name,
            "job": s.job,
            "cron": s.cron.as_str(),
            "timezone": s.timezone.name(),
            "catch_up": s.catch_up.as_str(),
            "overlap": s.overlap.as_str(),
            "enabled": s.enabled,
            "paused": paused.contains_key(&s.name),
            "paused_at": paused.get(&s.name).map(|t| rfc3339(*t)),
            "deadline": s.deadline.map(crate::units::format_duration_spec),
            "last_fire": l.as_ref().map(|f| in_zone(s, f.fire_at)),
            "last_fire_outcome": l.as_ref().map(|f| f.outcome.clone()),
            "last_fire_run": l.as_ref().and_then(|f| f.run_id),
            "next": next.iter().map(|t| in_zone(s, *t)).collect::<Vec<_>>(),
        }));
    }
    Ok(out)
}

/// An alert of the outbox (`worker alert:history --json`, `GET /alerts`); errors masked with
/// `secrets` once more.
pub fn alert(a: &crate::store::AlertRow, secrets: &crate::config::Secrets) -> Value {
    json!({
        "id": a.id,
        "time": rfc3339(a.created_at),
        "rule": a.rule,
        "channel": a.channel,
        "job": a.job,
        "event": a.event,
        "run_id": a.run_id,
        "status": a.status,
        "attempts": a.attempts,
        "error": a.error.as_deref().map(|e| secrets.mask(e)),
        "sent_at": if a.status == "sent" { a.finished_at.map(rfc3339) } else { None },
        "next_attempt_at": if a.status == "pending" { a.next_attempt_at.map(rfc3339) } else { None },
    })
}

/// A run with its attempts (`worker history --json`).
pub fn run_with_attempts(run: &Run, attempts: &[Attempt]) -> Value {
    let mut o = run_json(run);
    o["attempts"] = Value::Array(attempts.iter().map(attempt_json).collect());
    o
}

/// A run with its attempts and, while it runs, how long its current attempt has been running
/// (`worker show --json`, `GET /runs/{id}`).
pub fn run_detail(run: &Run, attempts: &[Attempt], now: Time) -> Value {
    let mut o = run_with_attempts(run, attempts);
    let elapsed = attempts
        .last()
        .filter(|a| run.state == crate::model::RunState::Running && a.finished_at.is_none())
        .map(|a| (now - a.started_at).num_milliseconds().max(0));
    o["elapsed_ms"] = elapsed.map_or(Value::Null, Value::from);
    o
}

/// Per-job counts and outcome statistics (`worker queue:stats --json`, `GET /queue/stats`).
pub fn stats(tx: &crate::store::Tx<'_>) -> Result<Vec<Value>, crate::store::StoreError> {
    let per_job = tx.job_state_counts()?;
    let stats = tx.job_stats()?;
    let mut jobs: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> =
        Default::default();
    for (job, state, n) in per_job {
        jobs.entry(job).or_default().insert(state, n);
    }
    Ok(jobs
        .iter()
        .map(|(job, c)| {
            let s = stats.iter().find(|s| &s.job == job);
            let rate = s.and_then(|s| {
                let done = s.succeeded + s.dead;
                (done > 0).then(|| s.succeeded as f64 / done as f64)
            });
            json!({
                "job": job,
                "counts": c,
                "success_rate": rate,
                "p50_ms": s.and_then(|s| s.p50_ms),
                "p95_ms": s.and_then(|s| s.p95_ms),
            })
        })
        .collect())
}

/// A node of the store (`worker nodes`, `GET /nodes`).
pub fn node(n: &crate::store::NodeRow) -> Value {
    json!({
        "name": n.name,
        "host": n.host,
        "pid": n.pid,
        "version": n.version,
        "started_at": rfc3339(n.started_at),
        "heartbeat_at": rfc3339(n.heartbeat_at),
        "silent_ms": n.silent_for.as_millis() as u64,
        "state": n.state,
        "epoch": n.epoch,
        "running": n.running,
    })
}
