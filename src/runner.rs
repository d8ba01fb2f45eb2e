//! The bridge between the queue and the executor, shared by the daemon and `worker job`: what
//! process a claimed run becomes, and what its end means for the run.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use crate::config::{Config, Exec, JobBody, JobDef};
use crate::datadir::{DataDir, Owner};
use crate::exec::{Exit, Finished, Spec, StopReason};
use crate::model::Run;
use crate::model::{RunId, RunState};
use crate::queue::lifecycle;
use crate::queue::{Claimed, Outcome, Report};
use crate::store::{Store, StoreError};
use crate::workflow::run::{Launch, Work};

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
    let job = defined(config, &run.job)?;
    let exec = match &job.body {
        JobBody::Exec(e) => e.clone(),
        JobBody::Steps(_) => return Err(format!("job `{}` has steps, not a command", run.job)),
    };
    Ok(Spec {
        exec,
        workdir: job.workdir.clone(),
        env: environment(run, claimed.attempt, job, config, data, &[]),
        timeout: job.timeout,
        log: data.log_path(run.id, claimed.seq),
        output_limit: config.output_limit(job),
        tee,
        identity: job.identity.clone(),
        limits: job.limits.clone(),
    })
}

/// The job of a run, or why it cannot run.
fn defined<'c>(config: &'c Config, job: &str) -> Result<&'c JobDef, String> {
    config
        .job(job)
        .map(|j| j.as_ref())
        .ok_or_else(|| format!("job `{job}` is not defined (was jobs/{job}.yaml removed?)"))
}

/// A process's environment (see [`spec_for`]), `extra` last but before worker's own.
fn environment(
    run: &Run,
    attempt: u32,
    job: &JobDef,
    config: &Config,
    data: &DataDir,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(user) = job.identity.as_ref().and_then(|i| i.user.as_ref()) {
        env.push(("HOME".into(), user.home.clone()));
        env.push(("USER".into(), user.name.clone()));
        env.push(("LOGNAME".into(), user.name.clone()));
    }
    env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(run.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(extra.iter().cloned());
    env.push(("WORKER_JOB".into(), run.job.clone()));
    env.push(("WORKER_RUN_ID".into(), run.id.to_string()));
    env.push(("WORKER_ATTEMPT".into(), attempt.to_string()));
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
    if let Some(input) = &run.input {
        env.push(("WORKER_INPUT".into(), input.to_string()));
    }
    // So that a job can itself call `worker` (enqueue a follow-up) against the same setup.
    env.push(("WORKER_CONFIG".into(), config.dir_absolute.clone()));
    env.push(("WORKER_DATA_DIR".into(), data.root_absolute().to_string()));
    env
}

/// The process of a workflow's `run`/`command` step: the job's environment, then the step's own
/// (rendered), then worker's with `WORKER_STEP` and `WORKER_OUTPUT` — the file whose `key=value`
/// lines or JSON object become the step's outputs (created empty, owned by the job's user).
/// Returns the spec and that file.
pub fn step_spec(
    run: &Run,
    launch: &Launch,
    exec: &Exec,
    config: &Config,
    data: &DataDir,
    tee: bool,
) -> Result<(Spec, PathBuf), String> {
    let job = defined(config, &run.job)?;
    let Work::Process {
        env: step_env,
        workdir,
        timeout,
    } = &launch.work
    else {
        return Err(format!("step {} is not a process", launch.step));
    };
    let output = output_file(run, launch, job, data)?;
    let mut env = environment(run, run.attempt, job, config, data, step_env);
    env.push(("WORKER_STEP".into(), launch.step.clone()));
    env.push(("WORKER_OUTPUT".into(), output.display().to_string()));
    let workdir = match workdir {
        Some(w) => w.clone(),
        None => job.workdir.clone(),
    };
    Ok((
        Spec {
            exec: exec.clone(),
            workdir,
            env,
            timeout: timeout.or(job.timeout),
            log: data.step_log_path(run.id, &launch.step, launch.attempt),
            output_limit: config.output_limit(job),
            tee,
            identity: job.identity.clone(),
            limits: job.limits.clone(),
        },
        output,
    ))
}

/// Creates the empty `$WORKER_OUTPUT` file of a step's execution. In the (private) data
/// directory — unless the job runs as another user, who could not reach it there: then in a
/// directory of its own under the system's temporary directory, both owned by that user.
fn output_file(
    run: &Run,
    launch: &Launch,
    job: &JobDef,
    data: &DataDir,
) -> Result<PathBuf, String> {
    let create = |path: &std::path::Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::datadir::FILE_MODE)
            .open(path)
            .map(|_| ())
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
    };
    let Some(identity) = &job.identity else {
        let path = data.step_output_path(run.id, &launch.step, launch.attempt);
        create(&path)?;
        return Ok(path);
    };
    let uid = identity.user.as_ref().map(|u| u.uid);
    let dir = std::env::temp_dir().join(format!(
        "worker-output-{}-{}-{}-{:08x}",
        run.id,
        launch.step,
        launch.attempt,
        fastrand::u32(..)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("output");
    create(&path)?;
    for p in [&dir, &path] {
        std::os::unix::fs::chown(p, uid, Some(identity.gid))
            .map_err(|e| format!("cannot give {} to the job's user: {e}", p.display()))?;
    }
    Ok(path)
}

/// Reads and removes a step's `$WORKER_OUTPUT` file (and its directory, when it had its own).
pub fn take_output_file(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let max = crate::workflow::steps::MAX_OUTPUTS as u64;
    let bytes = match std::fs::metadata(path) {
        // Never read more than a step may store.
        Ok(m) if m.len() > max => Err(format!(
            "$WORKER_OUTPUT holds {} bytes, more than the 1 MiB a step may store",
            m.len()
        )),
        Ok(_) => std::fs::read(path).map_err(|e| format!("cannot read $WORKER_OUTPUT: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read $WORKER_OUTPUT: {e}")),
    };
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent()
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("worker-output-"))
    {
        let _ = std::fs::remove_dir(dir);
    }
    crate::workflow::run::parse_output_file(&bytes?)
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
        output: None,
    }
}

/// An ended attempt's captured output, to keep in a shared store (at most its `output_limit`,
/// the tail, as the file keeps it). `None` when nothing was captured or it cannot be read (the
/// file stays the record on this host).
pub fn kept_output(spec: &Spec) -> Option<Vec<u8>> {
    match crate::exec::capture::read_tail(&spec.log, spec.output_limit) {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(path = %spec.log.display(), error = %e, "cannot read the output to keep it in the store");
            None
        }
    }
}

/// The error of a failed attempt: the limit it ran into (`limits.cpu_time`, `limits.memory`),
/// else how it ended.
pub fn failure_text(finished: &Finished, spec: &Spec, output_tail: &str) -> String {
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
        output: None,
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
        // A node's runs are recovered by the other nodes, once it was declared dead; a
        // foreground process of another host (its lease is not here) by that host.
        if crate::store::owner_node(&owner).is_some()
            || (data.shared_store() && !data.has_lease(&owner))
        {
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
