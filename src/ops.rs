//! The operations a person (command line) or a program (HTTP API) performs on the queue: enqueue,
//! cancel, retry, signal, pause, resume and trigger. One implementation for both fronts, so they
//! check the same things, say the same things, and write the same rows; each front only maps
//! [`OpError`] to its own vocabulary (an exit code, an HTTP status).
//!
//! Each operation commits, then wakes the daemon (a datagram to its socket) so it looks at the
//! queue now rather than at its next timer.

use std::collections::BTreeMap;

use chrono::DateTime;
use serde_json::Value;

use crate::config::{Config, JobDef, ScheduleDef};
use crate::datadir::DataDir;
use crate::model::{Priority, RunId, RunState, Time, Trigger};
use crate::queue::lifecycle::{self, CancelResult, RetryError};
use crate::queue::{EnqueueError, Request, enqueue};
use crate::store::{Store, StoreError};
use crate::units::parse_duration;

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Malformed input: a bad duration, time, name or JSON (HTTP 400, exit 2).
    #[error("{0}")]
    BadInput(String),
    /// No job, schedule or step of that name (HTTP 404, exit 2).
    #[error("{0}")]
    UnknownName(String),
    /// No run with that id (HTTP 404, exit 1).
    #[error("{0}")]
    UnknownRun(String),
    /// The run's state forbids the action (HTTP 409, exit 1).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but invalid for the job: its `input:` or its steps (HTTP 422, exit 2).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type OpResult<T> = Result<T, OpError>;

/// A job that must exist in `config`, or an error that names the file that would define it.
pub fn known_job<'c>(config: &'c Config, name: &str) -> OpResult<&'c JobDef> {
    if let Some(j) = config.job(name) {
        return Ok(j);
    }
    let known: Vec<&str> = config.jobs.keys().map(String::as_str).collect();
    let hint = crate::config::yaml::closest(name, &known)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    Err(OpError::UnknownName(format!(
        "unknown job `{name}`: there is no {}{hint}",
        crate::config::display_path(&config.dir, &format!("jobs/{name}.yaml"))
    )))
}

/// A schedule that must exist in `config`.
pub fn known_schedule<'c>(config: &'c Config, name: &str) -> OpResult<&'c ScheduleDef> {
    if let Some(s) = config.schedules.iter().find(|s| s.name == name) {
        return Ok(s);
    }
    let names: Vec<&str> = config.schedules.iter().map(|s| s.name.as_str()).collect();
    let hint = crate::config::yaml::closest(name, &names)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    Err(OpError::UnknownName(format!(
        "unknown schedule `{name}`: {} defines no such schedule{hint}",
        crate::config::display_path(&config.dir, "scheduler.yaml")
    )))
}

/// What a caller may say about a new run (`queue:add`'s flags, a `--stdin` line, the body of
/// `POST /jobs/{job}/runs`). Every field is optional.
#[derive(Debug, Default, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunOptions {
    /// `critical`, `high`, `normal` or `low` (default: the job's).
    pub priority: Option<String>,
    /// Start no sooner than this long from now (`30m`).
    #[serde(rename = "in")]
    pub delay: Option<String>,
    /// Start no sooner than this instant (RFC 3339).
    pub at: Option<String>,
    /// Idempotency key: if a run of the job holds it, that run is the answer.
    pub key: Option<String>,
    /// Runs that must succeed first.
    #[serde(default)]
    #[schema(value_type = Vec<i64>)]
    pub after: Vec<RunId>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The run's input, checked against the job's `input:`.
    pub input: Option<Value>,
}

/// The request for a new run of `job` (which must exist) from `opts`.
pub fn request(
    config: &Config,
    job: &str,
    opts: RunOptions,
    trigger: Trigger,
    now: Time,
) -> OpResult<Request> {
    let def = known_job(config, job)?;
    let mut r = Request::new(job, trigger);
    r.priority = opts
        .priority
        .as_deref()
        .map(|p| p.parse::<Priority>())
        .transpose()
        .map_err(OpError::BadInput)?;
    r.due_at = due_time(now, opts.delay.as_deref(), opts.at.as_deref())?;
    if let Some(k) = &opts.key
        && k.is_empty()
    {
        return Err(OpError::BadInput("key: must not be empty".into()));
    }
    r.key = opts.key;
    r.after = opts.after;
    for (k, v) in opts.env {
        check_env_name(&k)?;
        r.env.insert(k, v);
    }
    r.input = input(def, opts.input)?;
    Ok(r)
}

/// A run's input: checked against the job's `input:` with its defaults filled in; without one,
/// the defaults alone (or nothing for a job without `input:`).
pub fn input(job: &JobDef, given: Option<Value>) -> OpResult<Option<Value>> {
    let spec = job.input.as_ref();
    let given = match given {
        Some(v) => v,
        None if spec.is_none() => return Ok(None),
        None => Value::Object(Default::default()),
    };
    crate::workflow::model::InputSpec::check(spec, given)
        .map(Some)
        .map_err(|e| OpError::Invalid(format!("input for job `{}`: {e}", job.name)))
}

/// An environment variable name a run may be given (not one of the `WORKER_*` that worker sets).
pub fn check_env_name(k: &str) -> OpResult<()> {
    if !crate::config::interp::is_var_name(k) {
        return Err(OpError::BadInput(format!(
            "`{k}` is not a valid environment variable name"
        )));
    }
    if k.starts_with("WORKER_") {
        return Err(OpError::BadInput(format!(
            "`{k}` is reserved: WORKER_* variables are set by worker"
        )));
    }
    Ok(())
}

/// `in`/`at` as a due time.
pub fn due_time(now: Time, delay: Option<&str>, at: Option<&str>) -> OpResult<Option<Time>> {
    match (delay, at) {
        (Some(_), Some(_)) => Err(OpError::BadInput("give `in` or `at`, not both".into())),
        (Some(d), None) => {
            let d = parse_duration(d).map_err(|e| OpError::BadInput(format!("in: {e}")))?;
            let d = chrono::Duration::from_std(d)
                .map_err(|_| OpError::BadInput(format!("in: {} is too long", d.as_secs())))?;
            Ok(Some(now + d))
        }
        (None, Some(a)) => DateTime::parse_from_rfc3339(a)
            .map(|t| Some(t.to_utc()))
            .map_err(|e| {
                OpError::BadInput(format!(
                    "at: `{a}` is not an RFC 3339 time ({e}); e.g. 2026-12-01T06:00:00Z"
                ))
            }),
        (None, None) => Ok(None),
    }
}

/// What enqueuing one request did.
#[derive(Debug, Clone, Copy)]
pub struct Added {
    pub id: RunId,
    /// Its key was already held: `id` is that run, nothing was created.
    pub existing: bool,
}

/// Enqueues `requests` in one transaction, then wakes the daemon.
pub fn add(
    data: &DataDir,
    store: &mut Store,
    config: &Config,
    requests: &[Request],
    now: Time,
) -> OpResult<Vec<Added>> {
    let added = store.write(|tx| {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            let e = enqueue(tx, config, r, now)?;
            out.push(Added {
                id: e.id,
                existing: e.existing,
            });
        }
        Ok::<_, EnqueueError>(out)
    });
    let added = added.map_err(enqueue_error)?;
    crate::wake::notify(data);
    Ok(added)
}

/// Enqueues independent `requests` (each its own answer: one refused does not refuse the
/// others) in as few transactions as it can: all in one, or, when one of them is refused, each
/// in its own. Returns each one's outcome with the run it names. Does not wake the daemon: the
/// caller does, once.
pub fn add_each(
    store: &mut Store,
    config: &Config,
    requests: &[Request],
    now: Time,
) -> Vec<OpResult<(Added, crate::model::Run)>> {
    fn one(
        tx: &crate::store::Tx<'_>,
        config: &Config,
        r: &Request,
        now: Time,
    ) -> OpResult<(Added, crate::model::Run)> {
        let e = enqueue(tx, config, r, now).map_err(enqueue_error)?;
        let run = tx
            .run(e.id)?
            .ok_or_else(|| OpError::UnknownRun(format!("run {} vanished", e.id)))?;
        Ok((
            Added {
                id: e.id,
                existing: e.existing,
            },
            run,
        ))
    }
    let together = store.write(|tx| {
        requests
            .iter()
            .map(|r| one(tx, config, r, now))
            .collect::<OpResult<Vec<_>>>()
    });
    match together {
        Ok(all) => all.into_iter().map(Ok).collect(),
        Err(e) if requests.len() == 1 => vec![Err(e)],
        // Someone's request was refused (rolled back with the rest): each on its own now.
        Err(_) => requests
            .iter()
            .map(|r| store.write(|tx| one(tx, config, r, now)))
            .collect(),
    }
}

fn enqueue_error(e: EnqueueError) -> OpError {
    match e {
        EnqueueError::UnknownJob(j) => OpError::UnknownName(format!("unknown job `{j}`")),
        EnqueueError::UnknownRun(id) => OpError::Invalid(format!("after: run {id} does not exist")),
        EnqueueError::Input(e) => OpError::Invalid(e),
        EnqueueError::Store(e) => OpError::Store(e),
    }
}

/// Which dead runs to retry.
pub enum RetryTarget<'a> {
    One(RunId),
    /// Every run in the dead-letter queue, or only this job's.
    AllDead(Option<&'a str>),
}

/// Re-enqueues dead runs (or, `from_step`, a finished workflow run from that step); returns the
/// new runs' ids.
pub fn retry(
    data: &DataDir,
    store: &mut Store,
    config: &Config,
    target: RetryTarget<'_>,
    from_step: Option<&str>,
    now: Time,
) -> OpResult<Vec<RunId>> {
    if let RetryTarget::AllDead(Some(job)) = target {
        known_job(config, job)?;
    }
    let result = store.write(|tx| {
        let targets: Vec<RunId> = match target {
            // Ids only: each run is read when it is retried.
            RetryTarget::AllDead(job) => tx.dlq_ids(job)?,
            RetryTarget::One(id) => vec![id],
        };
        let mut new = Vec::with_capacity(targets.len());
        for id in targets {
            new.push(lifecycle::retry_dead(tx, config, id, from_step, now)?);
        }
        Ok::<_, RetryError>(new)
    });
    let ids = result.map_err(|e| match e {
        RetryError::NotFound(id) => OpError::UnknownRun(format!("run {id} does not exist")),
        RetryError::Enqueue(EnqueueError::UnknownJob(j)) => {
            OpError::Conflict(format!("cannot retry: job `{j}` is no longer defined"))
        }
        RetryError::Enqueue(e) => enqueue_error(e),
        e @ RetryError::UnknownStep { .. } => OpError::Invalid(e.to_string()),
        e => OpError::Conflict(e.to_string()),
    })?;
    crate::wake::notify(data);
    Ok(ids)
}

/// Cancels run `id`: one that has not started ends `cancelled` now; a running one is stopped by
/// the daemon. A run that already finished is `Ok(AlreadyFinished)`: each front says so its way.
pub fn cancel(
    data: &DataDir,
    store: &mut Store,
    config: &Config,
    id: RunId,
    now: Time,
) -> OpResult<CancelResult> {
    let result = store.write(|tx| lifecycle::cancel(tx, config, id, now))?;
    crate::wake::notify(data);
    result.ok_or_else(|| OpError::UnknownRun(format!("run {id} does not exist")))
}

/// Whether `name` may name a signal.
pub fn check_signal_name(name: &str) -> OpResult<()> {
    if name.is_empty()
        || name.len() > 200
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(OpError::BadInput(format!(
            "`{name}` is not a signal name (letters, digits, `_`, `.`, `-`)"
        )));
    }
    Ok(())
}

/// Sends signal `name` to run `id`; returns whether a step was waiting for it (else it is kept
/// until one does).
pub fn signal(
    data: &DataDir,
    store: &mut Store,
    id: RunId,
    name: &str,
    payload: Option<&Value>,
    fail: Option<&str>,
    now: Time,
) -> OpResult<bool> {
    check_signal_name(name)?;
    let waiting = store.write(|tx| {
        let Some(run) = tx.brief(id)? else {
            return Ok(Err(OpError::UnknownRun(format!("run {id} does not exist"))));
        };
        if run.state.is_final() {
            return Ok(Err(OpError::Conflict(format!(
                "run {id} has ended ({}): nothing waits for a signal",
                run.state
            ))));
        }
        if tx.definition(id)?.is_none() {
            return Ok(Err(OpError::Conflict(format!(
                "run {id} ({}) has no steps: nothing waits for a signal",
                run.job
            ))));
        }
        let waiting = tx.insert_signal(id, name, payload, fail, now)?;
        // A suspended run whose step waits for it is due now.
        if waiting && run.state == RunState::Suspended {
            tx.queue_resume(id, now)?;
        }
        Ok::<_, StoreError>(Ok(waiting))
    })??;
    crate::wake::notify(data);
    Ok(waiting)
}

/// Pauses (`pause`) or resumes schedule `name`; returns whether that changed anything.
pub fn pause(
    data: &DataDir,
    store: &mut Store,
    config: &Config,
    name: &str,
    pause: bool,
    now: Time,
) -> OpResult<bool> {
    known_schedule(config, name)?;
    let changed = store.write(|tx| {
        if pause {
            crate::schedule::fire::pause(tx, name, now)
        } else {
            crate::schedule::fire::resume(tx, name, now)
        }
    })?;
    crate::wake::notify(data);
    Ok(changed)
}

/// Enqueues a run of schedule `name`'s job now (trigger `manual`).
pub fn trigger(
    data: &DataDir,
    store: &mut Store,
    config: &Config,
    name: &str,
    now: Time,
) -> OpResult<RunId> {
    let sched = known_schedule(config, name)?;
    let id = store
        .write(|tx| crate::schedule::fire::trigger(tx, config, sched, now))
        .map_err(enqueue_error)?;
    crate::wake::notify(data);
    Ok(id)
}
