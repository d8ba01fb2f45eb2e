//! The step state machine of one workflow run: which steps start, sleep, wait, skip or fail,
//! and what that means for the run. Pure logic over the store's transaction, like `queue`: the
//! caller (the daemon's engine, or `worker job`) commits what this decides in the same
//! transaction, then launches the steps it returns.
//!
//! Invariant: a step's end is recorded, and the steps it made ready are started, in one
//! transaction — a crash never leaves a finished step unrecorded while its dependents ran, nor
//! a dependent started on an uncommitted end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::model::{HttpBody, StepDef, StepKind, Workflow};
use super::steps::MAX_OUTPUTS;
pub use super::steps::http::RenderedBody;
use super::template;
use crate::alert::{self, Event};
use crate::config::Config;
use crate::model::{EventKind, Run, Step, StepState, Time};
use crate::store::{Result, StepEnd, StoreError, Tx};

/// Where a run stands after a change to its steps.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Steps are running (some may sleep or wait beside them): start `launches`. `wake` is when
    /// a sleeping or backing-off step is next due; `blocked` says that a ready process step
    /// waits for a free process slot.
    Running {
        launches: Vec<Launch>,
        wake: Option<Time>,
        blocked: bool,
    },
    /// Nothing runs: the run sleeps until `wake` (`None`: until a signal arrives).
    Suspended { wake: Option<Time> },
    /// Every step succeeded, was skipped, or failed with `allow_failure`.
    Succeeded,
    /// A step failed (and nothing runs any more): the run's attempt failed.
    Failed { step: String, error: String },
    /// The run was being stopped ([`Halt`]) and nothing runs any more.
    Halted(Halt),
}

/// Why a run starts no new step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// `queue:cancel`: the run ends `cancelled` once its running steps stopped.
    Cancel,
    /// A shutdown: the run is re-queued (the attempt not counted) once its running steps ended.
    Stop,
}

/// A step to start now: its row is `running`, its attempt counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub step: String,
    pub idx: usize,
    /// The step's attempt number (all executions of it in this run).
    pub attempt: u32,
    pub work: Work,
}

/// What a launched step does, with its templates rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// A process: the step's own environment (the caller adds the job's and worker's).
    Process {
        env: Vec<(String, String)>,
        workdir: Option<PathBuf>,
        timeout: Option<Duration>,
    },
    Http {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: RenderedBody,
        expect: Vec<u16>,
        /// `worker-ORIGIN-STEP`, stable across retries and `queue:retry`.
        idempotency_key: String,
        timeout: Duration,
    },
    Sql {
        url: String,
        query: String,
        params: Vec<Value>,
        timeout: Duration,
    },
    /// The message is in the outbox as this alert: the step ends when its delivery does.
    Notify { alert_id: i64 },
}

/// How an executed step ended, as its task saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Succeeded {
        outputs: Value,
    },
    Failed {
        error: String,
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    /// Stopped by `queue:cancel`.
    Cancelled,
    /// Stopped by a shutdown: it runs again, not counted as a failure.
    Interrupted,
}

/// The default timeout of `http` and `sql` steps without their own.
pub const DEFAULT_IN_PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// What a decision needs to know about the run.
pub struct RunCtx<'a> {
    pub run: &'a Run,
    pub def: &'a Workflow,
    pub config: &'a Config,
    /// Process steps this owner may still start (the global `concurrency`); decremented here.
    pub process_slots: usize,
    /// Set by a foreground `worker job`: a suspended run stays reserved for it.
    pub keep_owner: Option<&'a str>,
    /// Start nothing new: the run is being cancelled or its owner stops.
    pub halt: Option<Halt>,
    /// Its rows as this transaction left them.
    pub rows: &'a RunRows,
}

/// A new attempt of the run begins: steps that failed, were interrupted or cancelled run again;
/// those that succeeded, were skipped, or still sleep or wait keep their state. Then advances.
pub fn begin(tx: &Tx<'_>, ctx: &mut RunCtx<'_>, now: Time) -> Result<Progress> {
    // A first attempt has nothing to reset: a shutdown hands its running steps back as pending.
    if ctx.run.attempt > 1 {
        tx.reset_steps(ctx.run.id)?;
        ctx.rows.forget();
    }
    advance(tx, ctx, now)
}

/// Records how an executed step ended — a retry in place if its `retry` allows, a checkpoint
/// otherwise — and advances the run in the same transaction. `ended` is when its task saw it end
/// (its `finished_at`); `unit` is the backoff's random unit.
pub fn step_ended(
    tx: &Tx<'_>,
    ctx: &mut RunCtx<'_>,
    name: &str,
    outcome: StepOutcome,
    ended: Time,
    now: Time,
    unit: f64,
) -> Result<Progress> {
    let at = ended.min(now);
    let run = ctx.run.id;
    let Some((_, def)) = ctx.def.step(name) else {
        return Err(StoreError::Corrupt(format!(
            "run {run} has no step `{name}` in its definition"
        )));
    };
    let row = ctx
        .rows
        .one(tx, run, name)?
        .ok_or_else(|| StoreError::Corrupt(format!("run {run} has no step row `{name}`")))?;
    if row.state != StepState::Running {
        // Already settled (cancelled, or recovered by someone else): theirs is the record.
        return advance(tx, ctx, now);
    }
    match outcome {
        StepOutcome::Succeeded { outputs } => {
            let size = outputs.to_string().len();
            if size > MAX_OUTPUTS {
                let error = format!(
                    "its outputs take {} bytes, more than the 1 MiB a step may store",
                    size
                );
                fail_step(tx, ctx, def, &row, &error, None, None, at, unit)?;
            } else {
                ctx.rows.end(
                    tx,
                    run,
                    name,
                    StepState::Succeeded,
                    at,
                    &StepEnd {
                        exit_code: row.exit_code.or(def.kind.is_process().then_some(0)),
                        outputs: Some(&outputs),
                        ..Default::default()
                    },
                )?;
            }
        }
        StepOutcome::Failed {
            error,
            exit_code,
            signal,
        } => fail_step(tx, ctx, def, &row, &error, exit_code, signal, at, unit)?,
        StepOutcome::Cancelled => ctx.rows.end(
            tx,
            run,
            name,
            StepState::Cancelled,
            at,
            &StepEnd {
                error: Some("cancelled"),
                ..Default::default()
            },
        )?,
        StepOutcome::Interrupted => {
            tx.retry_step(run, name, None, "interrupted by shutdown")?;
            ctx.rows.forget();
        }
    }
    advance(tx, ctx, now)
}

/// A failed execution: retried in place while the step's `retry` allows, else `failed` (and
/// `step_failed` raised).
#[allow(clippy::too_many_arguments)]
fn fail_step(
    tx: &Tx<'_>,
    ctx: &RunCtx<'_>,
    def: &StepDef,
    row: &Step,
    error: &str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    now: Time,
    unit: f64,
) -> Result<()> {
    let run = ctx.run.id;
    let tries = tx.step_tries(run, &row.name)?;
    if tries < def.retry.attempts {
        let delay = def.retry.delay(tries, unit);
        let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
        tx.retry_step(run, &row.name, Some(due), error)?;
        ctx.rows.forget();
        return Ok(());
    }
    ctx.rows.end(
        tx,
        run,
        &row.name,
        StepState::Failed,
        now,
        &StepEnd {
            exit_code,
            signal,
            error: Some(error),
            outputs: None,
        },
    )?;
    let mut e = Event::new(EventKind::StepFailed, Some(&ctx.run.job), now);
    e.run_id = Some(run);
    e.attempt = Some(ctx.run.attempt);
    e.max_attempts = Some(ctx.run.max_attempts);
    e.step = Some(row.name.clone());
    e.exit_code = exit_code;
    e.signal = signal;
    e.reason = Some(if def.allow_failure {
        format!("{error} (allow_failure: the run goes on)")
    } else {
        error.to_string()
    });
    alert::raise(tx, ctx.config, e, now)
}

/// Looks at every step and moves the run on: wakes sleeping and waiting steps that are due (or
/// signalled), skips steps whose `if` is false, starts steps whose needs are done (within
/// `parallel` and the process slots), and says where the run stands.
pub fn advance(tx: &Tx<'_>, ctx: &mut RunCtx<'_>, now: Time) -> Result<Progress> {
    let run = ctx.run.id;
    let def = ctx.def;
    let mut launches = Vec::new();
    let mut blocked = false;
    loop {
        let steps = ctx.rows.get(tx, run)?;
        let by_name: HashMap<&str, &Step> = steps.iter().map(|s| (s.name.as_str(), s)).collect();
        let state_of = |i: usize| by_name.get(def.steps[i].name.as_str()).map(|s| s.state);
        let mut changed = false;
        let lazy = LazyContext {
            run: ctx.run,
            def,
            steps: &steps,
            cell: std::cell::OnceCell::new(),
        };

        // Sleeping steps whose time came, waiting steps that got their signal or timed out.
        for s in steps.iter().filter(|s| s.state == StepState::Suspended) {
            let Some((_, d)) = def.step(&s.name) else {
                continue;
            };
            changed |= wake(tx, ctx.rows, run, d, s, now)?;
        }
        if changed {
            continue;
        }

        let failed = first_blocking_failure(def, &steps);
        let mut running = steps
            .iter()
            .filter(|s| s.state == StepState::Running)
            .count();
        if let Some(h) = ctx.halt {
            if running == 0 {
                return Ok(Progress::Halted(h));
            }
            return Ok(Progress::Running {
                launches,
                wake: None,
                blocked: false,
            });
        }
        if failed.is_none() {
            for (i, d) in def.steps.iter().enumerate() {
                let Some(row) = by_name.get(d.name.as_str()) else {
                    continue;
                };
                if row.state != StepState::Pending || row.wake_at.is_some_and(|t| t > now) {
                    continue;
                }
                match needs_met(def, i, &state_of) {
                    Needs::Met => {}
                    Needs::Waiting | Needs::Never => continue,
                }
                if ctx.def.parallel.is_some_and(|p| running >= p as usize) {
                    break;
                }
                if d.kind.is_process() && ctx.process_slots == 0 {
                    blocked = true;
                    continue;
                }
                if let Some(cond) = &d.condition {
                    match template::eval_bool(cond, lazy.get()) {
                        Ok(true) => {}
                        Ok(false) => {
                            ctx.rows.end(
                                tx,
                                run,
                                &d.name,
                                StepState::Skipped,
                                now,
                                &StepEnd::default(),
                            )?;
                            changed = true;
                            break;
                        }
                        Err(e) => {
                            start_and_fail(tx, ctx, d, row, &format!("if: {e}"), now)?;
                            changed = true;
                            break;
                        }
                    }
                }
                match start(tx, ctx, i, d, &lazy, now)? {
                    Started::Launched(l) => {
                        if d.kind.is_process() {
                            ctx.process_slots -= 1;
                        }
                        running += 1;
                        launches.push(l);
                    }
                    Started::Settled => {}
                    Started::Failed(error) => start_and_fail(tx, ctx, d, row, &error, now)?,
                }
                changed = true;
                // A settled step (a sleep that is already over, a consumed signal, a failure)
                // may make others ready, and the context changed: look again.
                break;
            }
        }
        if changed {
            continue;
        }

        // Nothing more to do now: where does the run stand?
        let wake = steps
            .iter()
            .filter(|s| {
                s.state == StepState::Suspended
                    || (s.state == StepState::Pending && s.wake_at.is_some())
            })
            .filter_map(|s| s.wake_at)
            .min();
        if running > 0 || (blocked && failed.is_none()) {
            return Ok(Progress::Running {
                launches,
                wake,
                blocked,
            });
        }
        if let Some(f) = failed {
            let error = f.error.clone().unwrap_or_else(|| "failed".into());
            return Ok(Progress::Failed {
                step: f.name.clone(),
                error: format!("step {} failed: {error}", f.name),
            });
        }
        let done = def.steps.iter().all(|d| {
            by_name.get(d.name.as_str()).is_some_and(|s| match s.state {
                StepState::Succeeded | StepState::Skipped => true,
                StepState::Failed => d.allow_failure,
                _ => false,
            })
        });
        if done {
            return Ok(Progress::Succeeded);
        }
        return Ok(Progress::Suspended { wake });
    }
}

/// A step that failed before anything ran (a template, a bad time): counts as one execution.
fn start_and_fail(
    tx: &Tx<'_>,
    ctx: &RunCtx<'_>,
    d: &StepDef,
    row: &Step,
    error: &str,
    now: Time,
) -> Result<()> {
    ctx.rows.start(tx, ctx.run.id, &d.name, now)?;
    // Deterministic: retrying in place would fail the same way.
    let row = Step {
        state: StepState::Running,
        ..row.clone()
    };
    let no_retry = StepDef {
        retry: crate::queue::retry::RetryPolicy {
            attempts: 1,
            ..d.retry.clone()
        },
        ..d.clone()
    };
    fail_step(tx, ctx, &no_retry, &row, error, None, None, now, 0.0)
}

/// The first step that failed without `allow_failure`: once there is one, nothing new starts.
fn first_blocking_failure<'s>(def: &Workflow, steps: &'s [Step]) -> Option<&'s Step> {
    steps.iter().find(|s| {
        s.state == StepState::Failed && def.step(&s.name).is_some_and(|(_, d)| !d.allow_failure)
    })
}

enum Needs {
    Met,
    Waiting,
    /// A needed step failed or was cancelled: this one can never run.
    Never,
}

/// Whether step `i`'s needs are done: each `succeeded`, `skipped`, or `failed` with
/// `allow_failure`.
fn needs_met(def: &Workflow, i: usize, state_of: &impl Fn(usize) -> Option<StepState>) -> Needs {
    let mut waiting = false;
    for &n in &def.steps[i].needs {
        match state_of(n) {
            Some(StepState::Succeeded | StepState::Skipped) => {}
            Some(StepState::Failed) if def.steps[n].allow_failure => {}
            Some(StepState::Failed | StepState::Cancelled) => return Needs::Never,
            _ => waiting = true,
        }
    }
    if waiting { Needs::Waiting } else { Needs::Met }
}

/// Wakes a suspended step if its time came or its signal arrived. Returns whether it changed.
fn wake(tx: &Tx<'_>, rows: &RunRows, run: i64, d: &StepDef, s: &Step, now: Time) -> Result<bool> {
    match &d.kind {
        StepKind::Sleep(_) => {
            if s.wake_at.is_some_and(|t| t <= now) {
                rows.end(
                    tx,
                    run,
                    &d.name,
                    StepState::Succeeded,
                    now,
                    &StepEnd {
                        outputs: Some(&json!({})),
                        ..Default::default()
                    },
                )?;
                return Ok(true);
            }
            Ok(false)
        }
        StepKind::WaitFor(w) => {
            if let Some((data, fail)) = tx.take_signal(run, &w.signal, &d.name, now)? {
                settle_signal(tx, rows, run, &d.name, data, fail, now)?;
                return Ok(true);
            }
            if s.wake_at.is_some_and(|t| t <= now) {
                let error = format!("timed out waiting for signal {}", w.signal);
                rows.end(
                    tx,
                    run,
                    &d.name,
                    StepState::Failed,
                    now,
                    &StepEnd {
                        error: Some(&error),
                        ..Default::default()
                    },
                )?;
                return Ok(true);
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// A `wait_for` step got its signal: `succeeded` with `outputs.data`, or `failed` (`--fail`).
fn settle_signal(
    tx: &Tx<'_>,
    rows: &RunRows,
    run: i64,
    step: &str,
    data: Option<Value>,
    fail: Option<String>,
    now: Time,
) -> Result<()> {
    match fail {
        Some(reason) => rows.end(
            tx,
            run,
            step,
            StepState::Failed,
            now,
            &StepEnd {
                error: Some(&reason),
                ..Default::default()
            },
        ),
        None => rows.end(
            tx,
            run,
            step,
            StepState::Succeeded,
            now,
            &StepEnd {
                outputs: Some(&json!({ "data": data.unwrap_or(Value::Null) })),
                ..Default::default()
            },
        ),
    }
}

enum Started {
    /// Running: the caller launches it.
    Launched(Launch),
    /// Suspended, or settled at once (a sleep already over, a signal already there).
    Settled,
    /// Could not start (a template failed): the reason.
    Failed(String),
}

/// Starts ready step `i`.
fn start(
    tx: &Tx<'_>,
    ctx: &RunCtx<'_>,
    i: usize,
    d: &StepDef,
    tctx: &LazyContext<'_>,
    now: Time,
) -> Result<Started> {
    let run = ctx.run.id;
    // The context is built only for a step that has a template to render.
    let render = |s: &str| {
        if template::has_template(s) {
            template::render(s, tctx.get())
        } else {
            Ok(s.to_string())
        }
    };
    let render_json = |v: &Value| {
        if template::json_has_template(v) {
            template::render_json(v, tctx.get())
        } else {
            Ok(v.clone())
        }
    };
    let work = match &d.kind {
        StepKind::Sleep(sleep) => {
            let until = match sleep {
                super::model::SleepStep::For(dur) => {
                    now + chrono::Duration::from_std(*dur).unwrap_or(chrono::Duration::MAX)
                }
                super::model::SleepStep::Until(tpl) => {
                    let text = match render(tpl) {
                        Ok(t) => t,
                        Err(e) => return Ok(Started::Failed(format!("sleep_until: {e}"))),
                    };
                    match chrono::DateTime::parse_from_rfc3339(text.trim()) {
                        Ok(t) => t.to_utc(),
                        Err(e) => {
                            return Ok(Started::Failed(format!(
                                "sleep_until: `{text}` is not an RFC 3339 time ({e})"
                            )));
                        }
                    }
                }
            };
            tx.suspend_step(run, &d.name, Some(until), None, now)?;
            ctx.rows.forget();
            return Ok(Started::Settled);
        }
        StepKind::WaitFor(w) => {
            let timeout = w
                .timeout
                .map(|t| now + chrono::Duration::from_std(t).unwrap_or(chrono::Duration::MAX));
            tx.suspend_step(run, &d.name, timeout, Some(&w.signal), now)?;
            ctx.rows.forget();
            // A signal that came first is consumed at once.
            if let Some((data, fail)) = tx.take_signal(run, &w.signal, &d.name, now)? {
                settle_signal(tx, ctx.rows, run, &d.name, data, fail, now)?;
            }
            return Ok(Started::Settled);
        }
        StepKind::Process(p) => {
            let mut env = Vec::with_capacity(p.env.len());
            for (k, v) in &p.env {
                match render(v) {
                    Ok(v) => env.push((k.clone(), v)),
                    Err(e) => return Ok(Started::Failed(format!("env {k}: {e}"))),
                }
            }
            Work::Process {
                env,
                workdir: p.workdir.clone(),
                timeout: d.timeout,
            }
        }
        StepKind::Http(h) => {
            let rendered = (|| -> std::result::Result<Work, String> {
                let url = render(&h.url).map_err(|e| format!("url: {e}"))?;
                let mut headers = Vec::with_capacity(h.headers.len());
                for (k, v) in &h.headers {
                    headers.push((
                        k.clone(),
                        render(v).map_err(|e| format!("header {k}: {e}"))?,
                    ));
                }
                let body = match &h.body {
                    HttpBody::None => RenderedBody::None,
                    HttpBody::Json(v) => {
                        RenderedBody::Json(render_json(v).map_err(|e| format!("json: {e}"))?)
                    }
                    HttpBody::Text(t) => {
                        RenderedBody::Text(render(t).map_err(|e| format!("body: {e}"))?)
                    }
                };
                Ok(Work::Http {
                    method: h.method.clone(),
                    url,
                    headers,
                    body,
                    expect: h.expect.clone(),
                    idempotency_key: format!("worker-{}-{}", ctx.run.origin_id(), d.name),
                    timeout: d.timeout.unwrap_or(DEFAULT_IN_PROCESS_TIMEOUT),
                })
            })();
            match rendered {
                Ok(w) => w,
                Err(e) => return Ok(Started::Failed(e)),
            }
        }
        StepKind::Sql(q) => {
            let mut params = Vec::with_capacity(q.params.len());
            for (n, p) in q.params.iter().enumerate() {
                match render_json(p) {
                    Ok(v) => params.push(v),
                    Err(e) => return Ok(Started::Failed(format!("params[{}]: {e}", n + 1))),
                }
            }
            Work::Sql {
                url: q.url.clone(),
                query: q.query.clone(),
                params,
                timeout: d.timeout.unwrap_or(DEFAULT_IN_PROCESS_TIMEOUT),
            }
        }
        StepKind::Notify(n) => {
            let rendered = (|| -> std::result::Result<Event, String> {
                let mut e = Event::new(EventKind::AttemptFailed, Some(&ctx.run.job), now);
                e.event = "notify".into();
                e.run_id = Some(run);
                e.step = Some(d.name.clone());
                e.text = Some(render(&n.text).map_err(|e| format!("text: {e}"))?);
                if !n.to.is_empty() {
                    let mut to = Vec::with_capacity(n.to.len());
                    for t in &n.to {
                        to.push(render(t).map_err(|e| format!("to: {e}"))?);
                    }
                    e.to = Some(to);
                }
                if let Some(s) = &n.subject {
                    e.subject = Some(render(s).map_err(|e| format!("subject: {e}"))?);
                }
                Ok(e)
            })();
            let event = match rendered {
                Ok(e) => e,
                Err(e) => return Ok(Started::Failed(e)),
            };
            // One message per (run, step) of the retry chain, whatever is retried.
            let dedupe = format!("notify:{}:{}", ctx.run.origin_id(), d.name);
            let alert_id = alert::notify(tx, ctx.config, &n.channel, event, &dedupe, now)?;
            Work::Notify { alert_id }
        }
    };
    let attempt = ctx.rows.start(tx, run, &d.name, now)?;
    Ok(Started::Launched(Launch {
        step: d.name.clone(),
        idx: i,
        attempt,
        work,
    }))
}

/// What the owner does after a decision, the run-level consequences already recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Start these steps; `wake` and `blocked` as in [`Progress::Running`].
    Launch {
        launches: Vec<Launch>,
        wake: Option<Time>,
        blocked: bool,
    },
    /// The run is suspended until `wake` (`None`: a signal): nothing to run.
    Parked(Option<Time>),
    /// The run's attempt ended (the run is now in this state).
    Ended(crate::model::RunState),
}

/// Records what `progress` means for the run — suspended, succeeded, failed (retrying or dead,
/// by the job's `retry`), cancelled or re-queued — in the caller's transaction, through the same
/// run lifecycle as a process attempt's end. `seq` is the run's open attempt row.
pub fn settle(
    tx: &Tx<'_>,
    ctx: &RunCtx<'_>,
    seq: u32,
    progress: Progress,
    now: Time,
    unit: f64,
) -> Result<Next> {
    use crate::queue::{Outcome, Report, lifecycle};
    let report = |outcome| Report {
        run: ctx.run.id,
        seq,
        outcome,
        output_bytes: None,
        duration_ms: None,
        output_tail: None,
        output: None,
    };
    let outcome = match progress {
        Progress::Running {
            launches,
            wake,
            blocked,
        } => {
            return Ok(Next::Launch {
                launches,
                wake,
                blocked,
            });
        }
        Progress::Suspended { wake } => {
            tx.suspend_run(ctx.run.id, wake, ctx.keep_owner)?;
            ctx.rows.forget();
            return Ok(Next::Parked(wake));
        }
        Progress::Succeeded => Outcome::Succeeded,
        Progress::Failed { error, .. } => Outcome::Failed {
            exit_code: None,
            signal: None,
            error,
            timed_out: false,
        },
        Progress::Halted(Halt::Cancel) => Outcome::Cancelled {
            exit_code: None,
            signal: None,
        },
        Progress::Halted(Halt::Stop) => Outcome::Interrupted,
    };
    let brief = match ctx.rows.take_brief() {
        Some(b) => Some(b),
        None => tx.brief(ctx.run.id)?,
    };
    let state = lifecycle::finish_known(tx, ctx.config, &report(outcome), brief, now, unit)?;
    ctx.rows.forget();
    Ok(Next::Ended(state))
}

/// The template context of one look at a run, built on first use.
struct LazyContext<'a> {
    run: &'a Run,
    def: &'a Workflow,
    steps: &'a [Step],
    cell: std::cell::OnceCell<Value>,
}

impl LazyContext<'_> {
    fn get(&self) -> &Value {
        self.cell
            .get_or_init(|| context(self.run, self.def, self.steps))
    }
}

/// The template context of a run's steps (SPEC 8): `input`, `steps.NAME.{state,outputs}`, `run`.
pub fn context(run: &Run, def: &Workflow, steps: &[Step]) -> Value {
    let mut by_step = serde_json::Map::new();
    for d in &def.steps {
        let (state, outputs) = match steps.iter().find(|s| s.name == d.name) {
            Some(s) => (
                s.state.as_str(),
                s.outputs.clone().unwrap_or_else(|| json!({})),
            ),
            None => ("pending", json!({})),
        };
        by_step.insert(
            d.name.clone(),
            json!({ "state": state, "outputs": outputs }),
        );
    }
    json!({
        "input": run.input.clone().unwrap_or_else(|| json!({})),
        "steps": by_step,
        "run": {
            "id": run.id,
            "job": run.job,
            "attempt": run.attempt,
            "trigger": run.trigger.as_str(),
            "scheduled_at": run.scheduled_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        },
    })
}

/// What a process step's `$WORKER_OUTPUT` file says: one JSON object, or `key=value` lines
/// (blank lines and `#` comments ignored). Empty or missing: no outputs.
pub fn parse_output_file(bytes: &[u8]) -> std::result::Result<Value, String> {
    if bytes.len() > MAX_OUTPUTS {
        return Err(format!(
            "$WORKER_OUTPUT holds {} bytes, more than the 1 MiB a step may store",
            bytes.len()
        ));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| "$WORKER_OUTPUT is not UTF-8 text".to_string())?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(json!({}));
    }
    if trimmed.starts_with('{') {
        return match serde_json::from_str::<Value>(trimmed) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err("$WORKER_OUTPUT: the JSON is not an object".into()),
            Err(e) => Err(format!("$WORKER_OUTPUT: invalid JSON ({e})")),
        };
    }
    let mut map = serde_json::Map::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "$WORKER_OUTPUT line {}: `{line}` is not key=value (or write one JSON object)",
                n + 1
            ));
        };
        map.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(Value::Object(map))
}

mod rows;
#[cfg(test)]
mod tests;

pub use rows::RunRows;
