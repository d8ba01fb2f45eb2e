//! State transitions after enqueue: promotion of due runs, claiming, finishing attempts,
//! cancellation, crash recovery and `queue:retry`.
//!
//! Invariant: a run is `running` only while a live lease owns it, and only the owner ends its
//! attempt; anyone else can only *ask* (`cancel_requested`) or, once the owner is provably dead
//! (its lease lock is free), recover it.

use std::collections::{HashMap, HashSet};

use super::enqueue::{self, EnqueueError, Readiness, Request, dependency_failed, readiness};
use crate::alert::{self, Event};
use crate::config::Config;
use crate::model::{EventKind, Run, RunId, RunState, Time, Trigger};
use crate::queue::retry::DEFAULT_RETRY_POLICY;
use crate::store::{QueuedCandidate, Result, RunBrief, StoreError, Tx, paged_candidates};

/// A run whose attempt has just been started by the caller's lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run: Run,
    /// `WORKER_ATTEMPT`.
    pub attempt: u32,
    /// Attempt row sequence (names the log file).
    pub seq: u32,
    /// A suspended workflow run going on with its attempt (no new attempt was started).
    pub resumed: bool,
}

/// How an attempt ended, as the executor saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    Failed {
        exit_code: Option<i32>,
        signal: Option<i32>,
        error: String,
        timed_out: bool,
    },
    /// Stopped at someone's request (`queue:cancel`, Ctrl-C on `worker job`).
    Cancelled {
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    /// Stopped by a graceful shutdown that ran out of time: re-queued, attempt not counted.
    Interrupted,
}

/// One finished attempt to record.
#[derive(Debug, Clone)]
pub struct Report {
    pub run: RunId,
    pub seq: u32,
    pub outcome: Outcome,
    pub output_bytes: Option<u64>,
    /// How long the attempt ran.
    pub duration_ms: Option<i64>,
    /// Its last lines of output, for alerts.
    pub output_tail: Option<String>,
    /// Its captured output, kept in the store (a shared store: readable from any host).
    pub output: Option<Vec<u8>>,
}

/// Moves runs whose delay or backoff elapsed to `queued` (or `waiting` / `dead`, by their
/// dependencies). Returns how many changed.
pub fn promote_due(tx: &Tx<'_>, config: &Config, now: Time) -> Result<usize> {
    let due = tx.due_runs(now)?;
    for (id, state) in &due {
        match state {
            RunState::Retrying => tx.set_state(*id, RunState::Queued)?,
            // A step's sleep ended or its wait timed out: the run resumes its attempt.
            RunState::Suspended => tx.queue_resume(*id, now)?,
            _ => match readiness(&tx.dep_states(*id)?) {
                Readiness::Ready => tx.set_state(*id, RunState::Queued)?,
                Readiness::Waiting => tx.set_state(*id, RunState::Waiting)?,
                Readiness::Failed(reason) => kill_unstarted(tx, config, *id, &reason, now)?,
            },
        }
    }
    Ok(due.len())
}

/// Claims queued runs for `owner`, in order (priority, due time, id), respecting each job's
/// `concurrency` and at most `global_limit` running runs in all. Runs reserved by another lease
/// are left alone, and so are runs of jobs `config` does not define (a job file added since the
/// configuration was loaded, or removed with runs still queued): they stay queued — an
/// acknowledged run is never thrown away — and their job names are returned so the caller can
/// say so. The attempts are started in this transaction.
///
/// The cost does not grow with the queue: for each job with queued runs and room under its
/// limit, the best few of its runs are read from its own ordered index, then merged.
pub fn claim(
    tx: &Tx<'_>,
    config: &Config,
    owner: &str,
    now: Time,
    global_limit: usize,
) -> Result<(Vec<Claimed>, Vec<String>)> {
    let (counts, queued) = tx.claim_outlook()?;
    let total: usize = counts.values().map(|&n| n as usize).sum();
    let free = global_limit.saturating_sub(total);
    if free == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let limit = |name: &str| config.job(name).map(|j| j.concurrency);
    let candidates = paged_candidates(tx, &counts, &queued, limit, owner, free_u32(free))?;
    choose_and_start(tx, config, owner, now, free, candidates, queued)
}

/// As [`claim`], for one node of a shared store: at most `free` runs (the node's own capacity
/// left, which it counts itself), each job's `concurrency` still counted across every node.
pub fn claim_up_to(
    tx: &Tx<'_>,
    config: &Config,
    owner: &str,
    now: Time,
    free: usize,
) -> Result<(Vec<Claimed>, Vec<String>)> {
    if free == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    // Each defined job's `concurrency`, sorted by name.
    let limits: Vec<(&str, u32)> = config
        .jobs
        .iter()
        .map(|(name, job)| (name.as_str(), job.concurrency))
        .collect();
    let (candidates, queued) = tx.claim_candidates(owner, &limits, free_u32(free))?;
    choose_and_start(tx, config, owner, now, free, candidates, queued)
}

fn free_u32(free: usize) -> u32 {
    u32::try_from(free).unwrap_or(u32::MAX)
}

/// Starts the best `free` of `candidates` (priority, due time, id); the jobs of `queued` that
/// `config` does not define are returned for the caller to report.
fn choose_and_start(
    tx: &Tx<'_>,
    config: &Config,
    owner: &str,
    now: Time,
    free: usize,
    mut candidates: Vec<QueuedCandidate>,
    queued: Vec<String>,
) -> Result<(Vec<Claimed>, Vec<String>)> {
    let unknown = queued
        .into_iter()
        .filter(|name| config.job(name).is_none())
        .collect();
    candidates.sort_by(|a, b| (b.priority, a.due_at, a.id).cmp(&(a.priority, b.due_at, b.id)));
    let chosen: Vec<(RunId, bool)> = candidates
        .iter()
        .take(free)
        .map(|c| (c.id, c.resume))
        .collect();
    Ok((start(tx, &chosen, owner, now)?, unknown))
}

/// Claims up to `max` of `ids` that are queued, in order, respecting each job's `concurrency` (a
/// foreground `worker job` running its own chain; the global limit is the daemon's business).
/// Returns the claimed runs, and the jobs of queued runs that had to wait for a slot.
pub fn claim_these(
    tx: &Tx<'_>,
    config: &Config,
    owner: &str,
    ids: &[RunId],
    now: Time,
    max: usize,
) -> Result<(Vec<Claimed>, Vec<String>)> {
    let mut candidates = Vec::new();
    for &id in ids {
        if let Some(run) = tx.run(id)?
            && run.state == RunState::Queued
            && run.owner.as_deref().is_none_or(|o| o == owner)
        {
            candidates.push(run);
        }
    }
    candidates.sort_by(|a, b| (b.priority, a.due_at, a.id).cmp(&(a.priority, b.due_at, b.id)));
    let mut counts = tx.running_counts()?;
    let mut chosen = Vec::new();
    let mut blocked = Vec::new();
    for run in candidates {
        let limit = config.job(&run.job).map(|j| j.concurrency).unwrap_or(1);
        let n = counts.entry(run.job.clone()).or_insert(0);
        if *n >= limit {
            blocked.push(run.job.clone());
            continue;
        }
        if chosen.len() >= max {
            break;
        }
        *n += 1;
        chosen.push((run.id, run.resume));
    }
    Ok((start(tx, &chosen, owner, now)?, blocked))
}

/// Starts the attempts of `runs` (id, whether it resumes), in order, at once.
fn start(tx: &Tx<'_>, runs: &[(RunId, bool)], owner: &str, now: Time) -> Result<Vec<Claimed>> {
    Ok(tx
        .start_attempts(runs, owner, now)?
        .into_iter()
        .zip(runs)
        .map(|((run, seq), &(_, resumed))| Claimed {
            attempt: run.attempt,
            run,
            seq,
            resumed,
        })
        .collect())
}

/// Records a finished attempt and moves the run on: succeeded (releasing its dependents),
/// retrying with backoff, dead (failing its dependents), cancelled, or back to the queue.
/// `unit` is a uniform random number in `[0, 1)` for backoff jitter. Returns the new state.
pub fn finish(
    tx: &Tx<'_>,
    config: &Config,
    report: &Report,
    now: Time,
    unit: f64,
) -> Result<RunState> {
    let run = tx.brief(report.run)?;
    finish_known(tx, config, report, run, now, unit)
}

/// As [`finish`], with the run's brief already read in this transaction (`None`: the run is
/// not in the store).
pub fn finish_known(
    tx: &Tx<'_>,
    config: &Config,
    report: &Report,
    run: Option<RunBrief>,
    now: Time,
    unit: f64,
) -> Result<RunState> {
    let Some(run) = run else {
        return Err(StoreError::Corrupt(format!(
            "run {} vanished while running",
            report.run
        )));
    };
    if run.state != RunState::Running {
        // Recovered by someone else meanwhile (we were presumed dead): theirs is the record.
        return Ok(run.state);
    }
    let id = run.id;
    if let Some(output) = &report.output {
        tx.set_attempt_output(id, report.seq, output)?;
    }
    let new_state = match &report.outcome {
        Outcome::Succeeded => {
            tx.end_attempt(
                id,
                report.seq,
                now,
                "succeeded",
                Some(0),
                None,
                None,
                report.output_bytes,
            )?;
            tx.finish_run(id, RunState::Succeeded, now, None, Some(0), None)?;
            if run.has_dependents {
                release_dependents(tx, config, id, now)?;
            }
            let wants_recovered = config
                .alerts
                .rules
                .iter()
                .any(|r| r.events.contains(&EventKind::Recovered));
            if wants_recovered && tx.previous_finished_state(&run.job, id)? == Some(RunState::Dead)
            {
                let mut e = attempt_event(EventKind::Recovered, &run, report, now);
                e.reason = Some("succeeded after the previous run of the job ended dead".into());
                alert::raise(tx, config, e, now)?;
            }
            RunState::Succeeded
        }
        Outcome::Failed {
            exit_code,
            signal,
            error,
            timed_out,
        } => {
            let label = if *timed_out { "timeout" } else { "failed" };
            tx.end_attempt(
                id,
                report.seq,
                now,
                label,
                *exit_code,
                *signal,
                Some(error),
                report.output_bytes,
            )?;
            if run.cancel_requested {
                return end_cancelled(tx, config, id, *exit_code, *signal, now);
            }
            let mut e = attempt_event(EventKind::AttemptFailed, &run, report, now);
            e.exit_code = *exit_code;
            e.signal = *signal;
            e.reason = Some(error.clone());
            alert::raise(tx, config, e.clone(), now)?;
            if *timed_out {
                e.event = EventKind::Timeout.as_str().into();
                alert::raise(tx, config, e.clone(), now)?;
            }
            retry_or_die(tx, config, &run, error, *exit_code, *signal, e, unit, now)?
        }
        Outcome::Cancelled { exit_code, signal } => {
            tx.end_attempt(
                id,
                report.seq,
                now,
                "cancelled",
                *exit_code,
                *signal,
                Some("cancelled"),
                report.output_bytes,
            )?;
            end_cancelled(tx, config, id, *exit_code, *signal, now)?
        }
        Outcome::Interrupted => {
            let why = "interrupted by shutdown (not counted)";
            tx.end_attempt(
                id,
                report.seq,
                now,
                "interrupted",
                None,
                None,
                Some(why),
                report.output_bytes,
            )?;
            tx.requeue(id, true, now)?;
            RunState::Queued
        }
    };
    Ok(new_state)
}

/// A run whose attempt ended after a cancel request is cancelled, and its dependents fail.
fn end_cancelled(
    tx: &Tx<'_>,
    config: &Config,
    id: RunId,
    exit_code: Option<i32>,
    signal: Option<i32>,
    now: Time,
) -> Result<RunState> {
    let cancelled = RunState::Cancelled;
    tx.finish_run(id, cancelled, now, Some("cancelled"), exit_code, signal)?;
    tx.cancel_steps(id, now)?;
    fail_dependents(tx, config, id, now)?;
    Ok(cancelled)
}

/// After a failed attempt (its `attempt_failed` alert raised): retrying after the job's backoff
/// while attempts remain, else dead with reason `error` — `event` re-raised as `dead` and the
/// dependents failed. `unit` is the backoff's random unit.
#[allow(clippy::too_many_arguments)]
fn retry_or_die(
    tx: &Tx<'_>,
    config: &Config,
    run: &RunBrief,
    error: &str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    mut event: Event,
    unit: f64,
    now: Time,
) -> Result<RunState> {
    if run.attempt < run.max_attempts {
        let policy = config
            .job(&run.job)
            .map(|j| j.retry.clone())
            .unwrap_or(DEFAULT_RETRY_POLICY);
        let delay = policy.delay(run.attempt, unit);
        let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
        tx.set_retrying(run.id, due, error, exit_code, signal)?;
        return Ok(RunState::Retrying);
    }
    tx.finish_run(run.id, RunState::Dead, now, Some(error), exit_code, signal)?;
    // A dead workflow run's steps that never ran will not (`queue:retry` makes a new run).
    tx.cancel_steps(run.id, now)?;
    event.event = EventKind::Dead.as_str().into();
    event.reason = Some(error.to_string());
    alert::raise(tx, config, event, now)?;
    fail_dependents(tx, config, run.id, now)?;
    Ok(RunState::Dead)
}

/// Waiting dependents of a run that just succeeded become queued once all their dependencies
/// have succeeded.
fn release_dependents(tx: &Tx<'_>, config: &Config, id: RunId, now: Time) -> Result<()> {
    for (dependent, state) in tx.dependents(id)? {
        if state != RunState::Waiting {
            continue;
        }
        match readiness(&tx.dep_states(dependent)?) {
            Readiness::Ready => tx.set_state(dependent, RunState::Queued)?,
            Readiness::Waiting => {}
            Readiness::Failed(reason) => kill_unstarted(tx, config, dependent, &reason, now)?,
        }
    }
    Ok(())
}

/// A run that never started dies with `reason`: recorded, alerted (`dead`), and its dependents
/// fail in turn.
pub fn kill_unstarted(
    tx: &Tx<'_>,
    config: &Config,
    id: RunId,
    reason: &str,
    now: Time,
) -> Result<()> {
    tx.finish_run(id, RunState::Dead, now, Some(reason), None, None)?;
    tx.cancel_steps(id, now)?;
    if let Some(b) = tx.brief(id)? {
        let mut e = Event::new(EventKind::Dead, Some(&b.job), now);
        e.run_id = Some(id);
        e.max_attempts = Some(b.max_attempts);
        e.attempt = (b.attempt > 0).then_some(b.attempt);
        e.reason = Some(reason.to_string());
        alert::raise(tx, config, e, now)?;
    }
    fail_dependents(tx, config, id, now)
}

/// The event about an attempt of `run` (exit code, signal and reason are the caller's).
fn attempt_event(kind: EventKind, run: &RunBrief, report: &Report, now: Time) -> Event {
    let mut e = Event::new(kind, Some(&run.job), now);
    e.run_id = Some(run.id);
    e.attempt = Some(run.attempt);
    e.max_attempts = Some(run.max_attempts);
    e.duration_ms = report.duration_ms;
    e.output = report.output_tail.clone();
    e
}

/// Every unfinished run that (transitively) depends on `id` dies, each naming the run it
/// depended on.
pub fn fail_dependents(tx: &Tx<'_>, config: &Config, id: RunId, now: Time) -> Result<()> {
    let mut stack = vec![id];
    let mut seen = HashSet::new();
    while let Some(failed) = stack.pop() {
        if !seen.insert(failed) {
            continue;
        }
        let job = tx.brief(failed)?.map(|b| b.job).unwrap_or_default();
        for (dependent, state) in tx.dependents(failed)? {
            if state.is_final() || state == RunState::Running {
                continue;
            }
            let reason = dependency_failed(&job, failed);
            tx.finish_run(dependent, RunState::Dead, now, Some(&reason), None, None)?;
            tx.cancel_steps(dependent, now)?;
            if let Some(b) = tx.brief(dependent)? {
                let mut e = Event::new(EventKind::Dead, Some(&b.job), now);
                e.run_id = Some(dependent);
                e.reason = Some(reason);
                alert::raise(tx, config, e, now)?;
            }
            stack.push(dependent);
        }
    }
    Ok(())
}

/// What `queue:cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResult {
    /// It had not started: now cancelled.
    Cancelled,
    /// It is running: its owner was asked to stop it.
    Stopping,
    /// It had already finished.
    AlreadyFinished(RunState),
}

/// Cancels run `id` (see [`CancelResult`]). `None` when the run does not exist.
pub fn cancel(tx: &Tx<'_>, config: &Config, id: RunId, now: Time) -> Result<Option<CancelResult>> {
    let Some(run) = tx.brief(id)? else {
        return Ok(None);
    };
    Ok(Some(match run.state {
        s if s.is_final() => CancelResult::AlreadyFinished(s),
        RunState::Running => {
            tx.request_cancel(id)?;
            CancelResult::Stopping
        }
        _ => {
            tx.finish_run(id, RunState::Cancelled, now, Some("cancelled"), None, None)?;
            tx.cancel_steps(id, now)?;
            fail_dependents(tx, config, id, now)?;
            CancelResult::Cancelled
        }
    }))
}

/// Recovers what a dead lease left behind: each run it was running is retried if attempts
/// remain (the lost attempt counts) or dies with reason `interrupted`; runs it had reserved
/// are released to anyone. Returns the recovered running runs and their new states.
pub fn recover(
    tx: &Tx<'_>,
    config: &Config,
    owner: &str,
    now: Time,
    unit: f64,
) -> Result<Vec<(RunId, RunState)>> {
    let mut out = Vec::new();
    for run in tx
        .running()?
        .into_iter()
        .filter(|r| r.owner.as_deref() == Some(owner))
    {
        if let Some((seq, _)) = tx.open_attempt(run.id)? {
            tx.end_attempt(
                run.id,
                seq,
                now,
                "interrupted",
                None,
                None,
                Some("interrupted: its worker process died"),
                None,
            )?;
        }
        // A workflow run's running steps were lost with their owner: they run again on the
        // retry; what succeeded, sleeps or waits keeps its checkpoint.
        tx.interrupt_steps(run.id, now, "interrupted: its worker process died")?;
        let state = if run.cancel_requested {
            end_cancelled(tx, config, run.id, None, None, now)?
        } else {
            let mut e = Event::new(EventKind::AttemptFailed, Some(&run.job), now);
            e.run_id = Some(run.id);
            e.attempt = Some(run.attempt);
            e.max_attempts = Some(run.max_attempts);
            e.reason = Some("interrupted: its worker process died".into());
            alert::raise(tx, config, e.clone(), now)?;
            retry_or_die(tx, config, &run, "interrupted", None, None, e, unit, now)?
        };
        out.push((run.id, state));
    }
    for id in tx.reserved_by(owner)? {
        tx.release(id)?;
    }
    Ok(out)
}

/// Why `queue:retry` refused.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("run {0} does not exist")]
    NotFound(RunId),
    #[error("run {0} is {1}, not dead: only dead runs can be retried")]
    NotDead(RunId, RunState),
    #[error("run {0} was already retried as run {1}")]
    AlreadyRetried(RunId, RunId),
    #[error("run {0} is {1}: only a finished run can be run again from a step")]
    NotFinished(RunId, RunState),
    #[error("run {0} has no steps: --from-step is for workflow runs")]
    NoSteps(RunId),
    #[error("job `{job}` has no step `{step}`{hint}")]
    UnknownStep {
        job: String,
        step: String,
        hint: String,
    },
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
}

impl From<StoreError> for RetryError {
    fn from(e: StoreError) -> Self {
        RetryError::Enqueue(EnqueueError::Store(e))
    }
}

/// Re-enqueues dead run `id` as a new run (trigger `retry`), with its priority, environment and
/// input; the dead run stays in history, marked as replaced, and leaves the DLQ.
///
/// A workflow run resumes: the new run has the job's *current* steps, and reuses the checkpoint
/// (state and outputs) of each step that succeeded or was skipped and still exists under the same
/// name — so only what failed, was interrupted, or never ran runs again. With `from_step` (any
/// finished workflow run), that step and every step downstream of it run again too. Outward
/// effects keep the name of the first run of the chain (`Idempotency-Key`, `notify`).
pub fn retry_dead(
    tx: &Tx<'_>,
    config: &Config,
    id: RunId,
    from_step: Option<&str>,
    now: Time,
) -> Result<RunId, RetryError> {
    let run = tx.run(id)?.ok_or(RetryError::NotFound(id))?;
    match from_step {
        None if run.state != RunState::Dead => return Err(RetryError::NotDead(id, run.state)),
        Some(_) if !run.state.is_final() => return Err(RetryError::NotFinished(id, run.state)),
        Some(_) if !run.has_steps => return Err(RetryError::NoSteps(id)),
        _ => {}
    }
    if let Some(by) = run.retried_by {
        return Err(RetryError::AlreadyRetried(id, by));
    }
    let job = config
        .job(&run.job)
        .ok_or_else(|| RetryError::Enqueue(EnqueueError::UnknownJob(run.job.clone())))?;
    // The steps to run again, by the current definition.
    let rerun: Vec<usize> = match (from_step, job.workflow()) {
        (Some(name), Some(wf)) => match wf.step(name) {
            Some((i, _)) => wf.downstream(i),
            None => {
                let known: Vec<&str> = wf.steps.iter().map(|s| s.name.as_str()).collect();
                return Err(RetryError::UnknownStep {
                    job: run.job.clone(),
                    step: name.to_string(),
                    hint: crate::config::yaml::closest(name, &known)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default(),
                });
            }
        },
        (Some(_), None) => return Err(RetryError::NoSteps(id)),
        (None, _) => Vec::new(),
    };
    let mut req = Request::new(run.job.clone(), Trigger::Retry);
    req.priority = Some(run.priority);
    req.env = run.env.clone();
    req.schedule = run.schedule.clone().zip(run.scheduled_at);
    req.retry_of = Some(id);
    req.input = run.input.clone();
    req.origin = Some(run.origin_id());
    let new = enqueue::enqueue(tx, config, &req, now)?;
    if let Some(wf) = job.workflow() {
        for (i, step) in wf.steps.iter().enumerate() {
            let done = run.steps.iter().any(|s| {
                s.name == step.name
                    && matches!(
                        s.state,
                        crate::model::StepState::Succeeded | crate::model::StepState::Skipped
                    )
            });
            if done && !rerun.contains(&i) {
                tx.reuse_step(id, new.id, &step.name)?;
            }
        }
    }
    tx.set_retried_by(id, new.id)?;
    Ok(new.id)
}

/// The run ids of `target` and everything it transitively depends on.
pub fn chain(tx: &Tx<'_>, target: RunId) -> Result<Vec<RunId>> {
    let mut out = vec![target];
    let mut i = 0;
    let mut seen: HashSet<RunId> = HashSet::from([target]);
    while i < out.len() {
        for (dep, _, _) in tx.dep_states(out[i])? {
            if seen.insert(dep) {
                out.push(dep);
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Why a queued run is not running yet: which limit holds it.
pub fn queued_reason(
    config: Option<&Config>,
    job: &str,
    running: &HashMap<String, u32>,
) -> Option<String> {
    let config = config?;
    let limit = config.job(job).map(|j| j.concurrency).unwrap_or(1);
    let n = running.get(job).copied().unwrap_or(0);
    if n >= limit {
        return Some(format!("job concurrency {n}/{limit}"));
    }
    let total: u32 = running.values().sum();
    if total >= config.settings.concurrency {
        return Some(format!(
            "global concurrency {total}/{}",
            config.settings.concurrency
        ));
    }
    None
}
