//! The bridge between the queue and the executor, shared by the daemon and `worker job`: what
//! process a claimed run becomes, and what its end means for the run.

use crate::config::Config;
use crate::datadir::{DataDir, Owner};
use crate::exec::{Exit, Finished, Spec, StopReason};
use crate::model::{RunId, RunState};
use crate::queue::lifecycle;
use crate::queue::{Claimed, Outcome, Report};
use crate::store::{Store, StoreError};

/// The process for a claimed run, or why there is none (its job is no longer defined).
///
/// Environment, later wins: the inherited environment, `HOME`, `USER` and `LOGNAME` of the job's
/// `user`, the job's `env`, the run's own (schedule `env` or `--env`), then worker's `WORKER_*`
/// variables.
pub fn spec_for(
    claimed: &Claimed,
    config: &Config,
    data: &DataDir,
    tee: bool,
) -> Result<Spec, String> {
    let run = &claimed.run;
    let job = config.job(&run.job).ok_or_else(|| {
        format!(
            "job `{}` is not defined (was jobs/{}.yaml removed?)",
            run.job, run.job
        )
    })?;
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(user) = job.identity.as_ref().and_then(|i| i.user.as_ref()) {
        env.push(("HOME".into(), user.home.clone()));
        env.push(("USER".into(), user.name.clone()));
        env.push(("LOGNAME".into(), user.name.clone()));
    }
    env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(run.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.push(("WORKER_JOB".into(), run.job.clone()));
    env.push(("WORKER_RUN_ID".into(), run.id.to_string()));
    env.push(("WORKER_ATTEMPT".into(), claimed.attempt.to_string()));
    env.push(("WORKER_TRIGGER".into(), run.trigger.as_str().into()));
    if let Some(key) = &run.key {
        env.push(("WORKER_KEY".into(), key.clone()));
    }
    if let Some(at) = run.scheduled_at {
        env.push((
            "WORKER_SCHEDULED_AT".into(),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    // So that a job can itself call `worker` (enqueue a follow-up) against the same setup.
    env.push(("WORKER_CONFIG".into(), config.dir_absolute.clone()));
    env.push(("WORKER_DATA_DIR".into(), data.root_absolute().to_string()));
    Ok(Spec {
        exec: match &job.body {
            crate::config::JobBody::Exec(e) => e.clone(),
            crate::config::JobBody::Steps(_) => {
                return Err(format!("job `{}` has steps, not a command", run.job));
            }
        },
        workdir: job.workdir.clone(),
        env,
        timeout: job.timeout,
        log: data.log_path(run.id, claimed.seq),
        output_limit: config.output_limit(job),
        tee,
        identity: job.identity.clone(),
        limits: job.limits.clone(),
    })
}

/// What an ended process means for its run. A failed attempt carries its last lines of output
/// (read here, in the attempt's own task, so the engine never touches log files).
pub fn report_for(claimed: &Claimed, finished: &Finished, spec: &Spec) -> Report {
    let failed = finished.stopped.is_none() && !finished.succeeded();
    let output_tail = failed
        .then(|| crate::exec::capture::last_lines(&spec.log, crate::alert::OUTPUT_LINES))
        .filter(|t| !t.is_empty());
    let outcome = match finished.stopped {
        Some(StopReason::Shutdown | StopReason::Kill) => Outcome::Interrupted,
        Some(StopReason::Cancel) => Outcome::Cancelled {
            exit_code: exit_code(&finished.exit),
            signal: signal(&finished.exit),
        },
        None if finished.succeeded() => Outcome::Succeeded,
        None => Outcome::Failed {
            exit_code: exit_code(&finished.exit),
            signal: signal(&finished.exit),
            error: failure_text(finished, spec, output_tail.as_deref().unwrap_or("")),
            timed_out: finished.timed_out,
        },
    };
    Report {
        run: claimed.run.id,
        seq: claimed.seq,
        outcome,
        output_bytes: Some(finished.output_bytes),
        duration_ms: Some(finished.duration.as_millis() as i64),
        output_tail,
    }
}

/// The error of a failed attempt: the limit it ran into (`limits.cpu_time`, `limits.memory`),
/// else how it ended.
fn failure_text(finished: &Finished, spec: &Spec, output_tail: &str) -> String {
    if !finished.timed_out
        && let Some(e) =
            crate::exec::identity::exceeded_limit(&spec.limits, &finished.exit, output_tail)
    {
        return e;
    }
    finished.describe(spec.timeout)
}

/// A report for a run that could not even be started.
pub fn report_unstartable(claimed: &Claimed, error: String) -> Report {
    Report {
        run: claimed.run.id,
        seq: claimed.seq,
        outcome: Outcome::Failed {
            exit_code: None,
            signal: None,
            error,
            timed_out: false,
        },
        output_bytes: None,
        duration_ms: None,
        output_tail: None,
    }
}

fn exit_code(e: &Exit) -> Option<i32> {
    match e {
        Exit::Code(c) => Some(*c),
        _ => None,
    }
}

fn signal(e: &Exit) -> Option<i32> {
    match e {
        Exit::Signal(s) => Some(*s),
        _ => None,
    }
}

/// Recovers the runs of every owner that is provably dead (see [`crate::datadir::decide`]),
/// other than `me`: for commands (`worker job`, `queue:cancel`), which may find runs left by a
/// dead daemon or a dead `worker job`. Each owner's lock is held until its recovery committed, so
/// a daemon starting meanwhile waits rather than claims. Returns the recovered runs.
pub fn recover_dead_owners(
    config: &Config,
    data: &DataDir,
    store: &mut Store,
    me: Option<&str>,
) -> Result<Vec<(RunId, RunState)>, StoreError> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for owner in store.read(|tx| tx.owners())? {
        if Some(owner.as_str()) == me {
            continue;
        }
        let Owner::Dead(guard) = data.probe(&owner) else {
            continue;
        };
        out.extend(store.write(|tx| lifecycle::recover(tx, config, &owner, now, fastrand::f64()))?);
        drop(guard);
    }
    Ok(out)
}
