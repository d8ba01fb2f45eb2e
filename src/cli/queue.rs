//! `worker queue:*`.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde_json::{Value, json};

use super::drift::DaemonView;
use super::output::{
    exit_text, human, opt_human, print_json, print_table, relative, run_json, table,
};
use super::{CliError, CliResult, Ctx, parse_env, parse_priority};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::model::{Priority, RunId, RunState, Time, Trigger};
use crate::ops::{self, OpError, RunOptions};
use crate::queue::Request;
use crate::queue::lifecycle::{self, CancelResult};
use crate::store::{RunFilter, Store, StoreError};
use crate::units::{format_duration, parse_duration};
use crate::wake;

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The job to enqueue (omit with --stdin).
    #[arg(required_unless_present = "stdin")]
    pub job: Option<String>,
    /// critical, high, normal or low [default: the job's].
    #[arg(long, value_parser = parse_priority)]
    pub priority: Option<Priority>,
    /// Start no sooner than this long from now (e.g. 30m).
    #[arg(long = "in", value_name = "DUR", conflicts_with = "at")]
    pub delay: Option<String>,
    /// Start no sooner than this instant (RFC 3339, e.g. 2026-12-01T06:00:00+01:00).
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Idempotency key: if a run of this job holds it, that run is returned instead.
    #[arg(long)]
    pub key: Option<String>,
    /// Start only after this run succeeded (repeatable).
    #[arg(long = "after", value_name = "RUN_ID")]
    pub after: Vec<RunId>,
    /// Extra environment for the run (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Enqueue this many identical runs at once.
    #[arg(long, default_value_t = 1, value_name = "N", conflicts_with = "key")]
    pub count: u32,
    /// The run's input: a JSON object, or @FILE holding one (checked against the job's
    /// `input:`; steps read it as `input`, processes as $WORKER_INPUT).
    #[arg(long, value_name = "JSON|@FILE")]
    pub input: Option<String>,
    /// Read runs from stdin, one JSON object per line:
    /// {"job":"x","priority":"high","in":"5m","at":"…","key":"…","after":[1],"env":{"K":"V"},"input":{…}}
    #[arg(long, conflicts_with_all = ["job", "priority", "delay", "at", "key", "after", "env", "count", "input"])]
    pub stdin: bool,
}

/// One JSON line of `queue:add --stdin`: a job and the body of `POST /jobs/{job}/runs`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    job: String,
    priority: Option<String>,
    #[serde(rename = "in")]
    delay: Option<String>,
    at: Option<String>,
    key: Option<String>,
    #[serde(default)]
    after: Vec<RunId>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    input: Option<Value>,
}

pub fn add(ctx: &Ctx, args: AddArgs) -> CliResult {
    let config = ctx.config()?;
    let now = chrono::Utc::now();
    let mut requests = Vec::new();
    if args.stdin {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.map_err(|e| CliError::Failed(format!("reading stdin: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |m: String| CliError::Usage(format!("stdin line {}: {m}", i + 1));
            let l: Line = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            let opts = RunOptions {
                priority: l.priority,
                delay: l.delay,
                at: l.at,
                key: l.key,
                after: l.after,
                env: l.env,
                input: l.input,
            };
            let r = ops::request(&config, &l.job, opts, Trigger::Queue, now)
                .map_err(|e| bad(e.to_string()))?;
            requests.push(r);
        }
    } else {
        let job = args.job.clone().unwrap_or_default();
        ctx.known_job(&config, &job)?;
        if args.count == 0 {
            return Err(CliError::Usage("--count must be at least 1".into()));
        }
        let mut r = Request::new(job.clone(), Trigger::Queue);
        r.priority = args.priority;
        r.due_at = ops::due_time(now, args.delay.as_deref(), args.at.as_deref())
            .map_err(|e| CliError::Usage(format!("--{e}")))?;
        r.key = args.key.clone();
        r.after = args.after.clone();
        r.env = args.env.iter().cloned().collect();
        r.input = super::run_input(&config, &job, args.input.as_deref())?;
        requests.extend(std::iter::repeat_n(r, args.count as usize));
    }
    let (data, mut store) = ctx.store()?;
    let added = ops::add(&data, &mut store, &config, &requests, now).map_err(|e| match e {
        // An `--after` run that does not exist is the caller's mistake, as before.
        OpError::Invalid(m) if m.starts_with("after: ") => {
            CliError::Failed(m.trim_start_matches("after: ").to_string())
        }
        e => e.into(),
    })?;
    let ids: Vec<RunId> = added.iter().map(|a| a.id).collect();
    print_runs_or_ids(ctx, &mut store, &ids)
}

/// Prints the run objects (`--json`) or one id per line.
fn print_runs_or_ids(ctx: &Ctx, store: &mut Store, ids: &[RunId]) -> CliResult {
    if ctx.json {
        let runs = store.read(|tx| {
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                if let Some(r) = tx.run(id)? {
                    out.push(run_json(&r));
                }
            }
            Ok::<_, StoreError>(out)
        })?;
        print_json(&Value::Array(runs));
    } else {
        let mut out = String::with_capacity(ids.len() * 8);
        for id in ids {
            out.push_str(&id.to_string());
            out.push('\n');
        }
        print!("{out}");
    }
    Ok(())
}

/// Why a run that has not started is not running yet.
fn waiting_reason(
    tx: &crate::store::Tx<'_>,
    config: Option<&Config>,
    daemon: &DaemonView,
    run: &crate::model::Run,
    running: &std::collections::HashMap<String, u32>,
    now: Time,
) -> Result<String, StoreError> {
    Ok(match run.state {
        RunState::Delayed => format!("due {}", relative(now, run.due_at)),
        RunState::Retrying => format!(
            "retry {} after: {}",
            relative(now, run.due_at),
            run.error.clone().unwrap_or_default()
        ),
        RunState::Waiting => {
            let pending: Vec<String> = tx
                .dep_states(run.id)?
                .into_iter()
                .filter(|(_, _, s)| *s != RunState::Succeeded)
                .map(|(id, job, s)| format!("{job} run {id} ({s})"))
                .collect();
            format!("waiting for {}", pending.join(", "))
        }
        RunState::Queued => match (
            &run.owner,
            lifecycle::queued_reason(config, &run.job, running),
        ) {
            (Some(o), _) => format!("reserved by {o}"),
            (None, _) if config.is_some_and(|c| c.job(&run.job).is_none()) => format!(
                "job `{}` is not defined: add jobs/{}.yaml, then `worker reload`",
                run.job, run.job
            ),
            (None, _) if daemon.lacks_job(&run.job) => format!(
                "waiting for a reload: the daemon does not run job `{}` yet (`worker reload`)",
                run.job
            ),
            (None, Some(r)) => r,
            (None, None) if daemon.info.is_none() => "ready (no daemon is running)".into(),
            (None, None) => "ready".into(),
        },
        RunState::Running => match &run.owner {
            Some(o) if o != crate::datadir::DAEMON_LEASE => format!("running in {o}"),
            _ => String::new(),
        },
        RunState::Suspended => suspended_reason(run, now),
        _ => run.error.clone().unwrap_or_default(),
    })
}

/// What a suspended run waits for: which steps sleep until when, which wait for which signal.
fn suspended_reason(run: &crate::model::Run, now: Time) -> String {
    let mut parts = Vec::new();
    for s in run
        .steps
        .iter()
        .filter(|s| s.state == crate::model::StepState::Suspended)
    {
        let until = s
            .wake_at
            .filter(|t| !crate::store::is_never(*t))
            .map(|t| format!("{} ({})", human(t), relative(now, t)));
        parts.push(match (&s.waiting_for, until) {
            (Some(sig), Some(u)) => format!("{} waits for signal {sig} until {u}", s.name),
            (Some(sig), None) => format!("{} waits for signal {sig}", s.name),
            (None, Some(u)) => format!("{} sleeps until {u}", s.name),
            (None, None) => format!("{} is suspended", s.name),
        });
    }
    if parts.is_empty() {
        "suspended".into()
    } else {
        parts.join("; ")
    }
}

pub fn list(ctx: &Ctx, all: bool, limit: u32) -> CliResult {
    // Limits come from the configuration; a broken one only loses the explanation.
    let config = Config::load(&ctx.config_dir).ok();
    let (data, mut store) = ctx.store()?;
    let daemon = DaemonView::read(&data, &mut store)?;
    let now = chrono::Utc::now();
    let states = if all {
        Vec::new()
    } else {
        vec![
            RunState::Delayed,
            RunState::Waiting,
            RunState::Queued,
            RunState::Running,
            RunState::Retrying,
            RunState::Suspended,
        ]
    };
    let filter = RunFilter {
        states,
        limit: Some(limit),
        ..Default::default()
    };
    // Memory is bounded by the page, not by the table: one page of runs, one count.
    let (rows, total) = store.read(|tx| {
        let runs = tx.list_runs(&filter)?;
        let running = tx.running_counts()?;
        let mut out = Vec::with_capacity(runs.len());
        for r in runs {
            let why = waiting_reason(tx, config.as_ref(), &daemon, &r, &running, now)?;
            out.push((r, why));
        }
        let total = tx.count_runs(&filter)?;
        Ok::<_, StoreError>((out, total))
    })?;
    let more = total.saturating_sub(rows.len() as u64);
    if ctx.json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(r, why)| {
                let mut o = run_json(r);
                o["reason"] = if why.is_empty() {
                    Value::Null
                } else {
                    json!(why)
                };
                o
            })
            .collect();
        print_json(&Value::Array(v));
        if more > 0 {
            eprintln!("worker: {more} more not shown (--limit {limit})");
        }
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "{}",
            if all {
                "no runs"
            } else {
                "no runs waiting or running"
            }
        );
        return Ok(());
    }
    let mut t = table(&[
        "ID",
        "JOB",
        "STATE",
        "PRIORITY",
        "ATTEMPT",
        "DUE/STARTED",
        "DEPENDS ON",
        "WHY",
    ]);
    for (r, why) in &rows {
        let when = match r.state {
            RunState::Running => opt_human(r.started_at),
            s if s.is_final() => opt_human(r.finished_at),
            _ => human(r.due_at),
        };
        let deps = if r.depends_on.is_empty() {
            "-".into()
        } else {
            r.depends_on
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        t.add_row(vec![
            r.id.to_string(),
            r.job.clone(),
            r.state.to_string(),
            r.priority.to_string(),
            format!("{}/{}", r.attempt, r.max_attempts),
            when,
            deps,
            why.clone(),
        ]);
    }
    print_table(&t);
    say_more(more, limit);
    Ok(())
}

/// The line under a listing cut at its page.
fn say_more(more: u64, limit: u32) {
    if more > 0 {
        println!("… and {more} more (showing the first {limit}; --limit N to see more)");
    }
}

pub fn stats(ctx: &Ctx) -> CliResult {
    let (_, mut store) = ctx.store()?;
    let (counts, per_job, stats) = store.read(|tx| {
        Ok::<_, StoreError>((tx.state_counts()?, tx.job_state_counts()?, tx.job_stats()?))
    })?;
    let mut jobs: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (job, state, n) in per_job {
        jobs.entry(job).or_default().insert(state, n);
    }
    let stat_of = |job: &str| stats.iter().find(|s| s.job == job);
    let rate = |job: &str| {
        stat_of(job).and_then(|s| {
            let done = s.succeeded + s.dead;
            (done > 0).then(|| s.succeeded as f64 / done as f64)
        })
    };
    if ctx.json {
        let v = store.read(crate::objects::stats)?;
        print_json(&Value::Array(v));
        return Ok(());
    }
    let mut t = table(&["STATE", "RUNS"]);
    for s in RunState::ALL {
        t.add_row(vec![
            s.to_string(),
            counts.get(s.as_str()).copied().unwrap_or(0).to_string(),
        ]);
    }
    print_table(&t);
    if jobs.is_empty() {
        return Ok(());
    }
    println!();
    let mut t = table(&[
        "JOB",
        "ACTIVE",
        "SUCCEEDED",
        "DEAD",
        "CANCELLED",
        "SUCCESS",
        "P50",
        "P95",
    ]);
    let ms = |m: Option<i64>| {
        m.map(|m| format_duration(std::time::Duration::from_millis(m.max(0) as u64)))
            .unwrap_or("-".into())
    };
    for (job, c) in &jobs {
        let get = |s: &str| c.get(s).copied().unwrap_or(0);
        let active: u64 = [
            "delayed",
            "waiting",
            "queued",
            "running",
            "retrying",
            "suspended",
        ]
        .iter()
        .map(|s| get(s))
        .sum();
        let s = stat_of(job);
        t.add_row(vec![
            job.clone(),
            active.to_string(),
            get("succeeded").to_string(),
            get("dead").to_string(),
            get("cancelled").to_string(),
            rate(job)
                .map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "-".into()),
            ms(s.and_then(|s| s.p50_ms)),
            ms(s.and_then(|s| s.p95_ms)),
        ]);
    }
    print_table(&t);
    Ok(())
}

pub fn dlq(ctx: &Ctx, limit: u32) -> CliResult {
    let (_, mut store) = ctx.store()?;
    let filter = RunFilter {
        dlq: true,
        limit: Some(limit),
        ..Default::default()
    };
    let (runs, total) =
        store.read(|tx| Ok::<_, StoreError>((tx.list_runs(&filter)?, tx.count_runs(&filter)?)))?;
    let more = total.saturating_sub(runs.len() as u64);
    if ctx.json {
        print_json(&Value::Array(runs.iter().map(run_json).collect()));
        if more > 0 {
            eprintln!("worker: {more} more not shown (--limit {limit})");
        }
        return Ok(());
    }
    if runs.is_empty() {
        println!("the dead-letter queue is empty");
        return Ok(());
    }
    let mut t = table(&[
        "ID",
        "JOB",
        "ATTEMPTS",
        "REASON / LAST ERROR",
        "EXIT",
        "DIED AT",
    ]);
    for r in &runs {
        t.add_row(vec![
            r.id.to_string(),
            r.job.clone(),
            format!("{}/{}", r.attempt, r.max_attempts),
            r.error.clone().unwrap_or_default(),
            exit_text(r.exit_code, r.signal),
            opt_human(r.finished_at),
        ]);
    }
    print_table(&t);
    say_more(more, limit);
    Ok(())
}

pub fn retry(
    ctx: &Ctx,
    run_id: Option<RunId>,
    all: bool,
    job: Option<String>,
    from_step: Option<String>,
) -> CliResult {
    let config = ctx.config()?;
    let (data, mut store) = ctx.store()?;
    let target = match run_id {
        Some(id) if !all => ops::RetryTarget::One(id),
        _ => ops::RetryTarget::AllDead(job.as_deref()),
    };
    let ids = ops::retry(
        &data,
        &mut store,
        &config,
        target,
        from_step.as_deref(),
        chrono::Utc::now(),
    )?;
    print_runs_or_ids(ctx, &mut store, &ids)
}

/// `worker signal RUN SIGNAL [--data JSON] [--fail REASON]`.
pub fn signal(
    ctx: &Ctx,
    id: RunId,
    name: &str,
    data: Option<&str>,
    fail: Option<&str>,
) -> CliResult {
    ops::check_signal_name(name)?;
    let payload = data.map(|d| super::json_arg("--data", d)).transpose()?;
    let (dir, mut store) = ctx.store()?;
    let waiting = ops::signal(
        &dir,
        &mut store,
        id,
        name,
        payload.as_ref(),
        fail,
        chrono::Utc::now(),
    )?;
    let said = if waiting {
        format!("signal {name} delivered to run {id}")
    } else {
        format!("signal {name} kept for run {id}: no step waits for it yet")
    };
    if ctx.json {
        print_json(&json!({"run": id, "signal": name, "waiting": waiting}));
    } else {
        println!("{said}");
    }
    Ok(())
}

/// The configuration if it is valid, else an empty one: for commands that only need it for
/// retry policies and alert rules, and must work on a broken configuration too.
fn lenient_config(ctx: &Ctx) -> Config {
    Config::load(&ctx.config_dir).unwrap_or_else(|_| Config::empty(&ctx.config_dir))
}

/// Recovers runs held by processes that died (so cancelling one of them does not wait forever).
fn recover_dead_owners(config: &Config, data: &DataDir, store: &mut Store) -> CliResult {
    crate::runner::recover_dead_owners(config, data, store, None)?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The run to cancel (its id).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub run_id: Option<RunId>,
    /// Every unfinished run (narrowed by --job and --state).
    #[arg(long)]
    pub all: bool,
    /// With --all: only this job's runs.
    #[arg(long, requires = "all", value_name = "NAME")]
    pub job: Option<String>,
    /// With --all: only runs in this state (repeatable).
    #[arg(long, requires = "all", value_name = "STATE", value_parser = parse_unfinished_state)]
    pub state: Vec<RunState>,
}

/// A state a run can be cancelled in.
fn parse_unfinished_state(s: &str) -> Result<RunState, String> {
    match s.parse::<RunState>() {
        Ok(st) if !st.is_final() => Ok(st),
        Ok(st) => Err(format!(
            "runs in state `{st}` have finished: nothing to cancel"
        )),
        Err(_) => Err(format!(
            "unknown state `{s}` (delayed, waiting, queued, running or retrying)"
        )),
    }
}

/// Runs cancelled per transaction by `queue:cancel --all`: each commit is short, so the daemon
/// and other commands keep going while a large queue is cancelled.
const CANCEL_BATCH: u32 = 1000;

pub fn cancel(ctx: &Ctx, args: CancelArgs) -> CliResult {
    let (data, mut store) = ctx.store()?;
    let config = lenient_config(ctx);
    recover_dead_owners(&config, &data, &mut store)?;
    let Some(id) = args.run_id else {
        return cancel_all(ctx, &config, &data, &mut store, &args);
    };
    let result = ops::cancel(&data, &mut store, &config, id, chrono::Utc::now())?;
    let (msg, ok) = match result {
        CancelResult::Cancelled => (format!("run {id} cancelled"), true),
        CancelResult::Stopping => (
            format!("run {id} is running: its process group is being stopped"),
            true,
        ),
        CancelResult::AlreadyFinished(s) => (
            format!("run {id} already finished ({s}): nothing to cancel"),
            false,
        ),
    };
    if ctx.json {
        print_json(
            &json!({"id": id, "result": if ok { msg.as_str() } else { "already finished" }}),
        );
    } else if ok {
        println!("{msg}");
    }
    if ok {
        Ok(())
    } else {
        Err(CliError::Failed(msg))
    }
}

/// `queue:cancel --all`: every matching unfinished run, a batch per transaction, newest first
/// (so a selected dependent ends `cancelled` before the run it depends on is cancelled);
/// dependents outside the selection are handled as for one cancel.
fn cancel_all(
    ctx: &Ctx,
    config: &Config,
    data: &DataDir,
    store: &mut Store,
    args: &CancelArgs,
) -> CliResult {
    if let Some(j) = &args.job {
        let stored = store.read(|tx| {
            tx.count_runs(&RunFilter {
                job: Some(j.clone()),
                limit: Some(1),
                ..Default::default()
            })
        })?;
        if config.job(j).is_none() && stored == 0 {
            ctx.known_job(config, j)?;
        }
    }
    let (mut cancelled, mut stopping) = (0u64, 0u64);
    let mut before: RunId = RunId::MAX;
    loop {
        let now = chrono::Utc::now();
        let batch = store.write(|tx| {
            let ids = tx.unfinished_ids(before, args.job.as_deref(), &args.state, CANCEL_BATCH)?;
            let (mut c, mut s) = (0u64, 0u64);
            for &id in &ids {
                match lifecycle::cancel(tx, config, id, now)? {
                    Some(CancelResult::Cancelled) => c += 1,
                    Some(CancelResult::Stopping) => s += 1,
                    _ => {}
                }
            }
            Ok::<_, StoreError>((ids, c, s))
        })?;
        let (ids, c, s) = batch;
        cancelled += c;
        stopping += s;
        wake::notify(data);
        match ids.last() {
            Some(&last) if ids.len() as u32 == CANCEL_BATCH => before = last,
            _ => break,
        }
    }
    if ctx.json {
        print_json(&json!({"cancelled": cancelled, "stopping": stopping}));
    } else {
        println!(
            "{} cancelled; {} being stopped",
            crate::units::count(cancelled as usize, "run"),
            crate::units::count(stopping as usize, "running run"),
        );
    }
    Ok(())
}

pub fn purge(ctx: &Ctx, dlq: bool, finished_before: Option<String>) -> CliResult {
    if !dlq && finished_before.is_none() {
        return Err(CliError::Usage(
            "say what to purge: --dlq and/or --finished-before DUR".into(),
        ));
    }
    let before = match &finished_before {
        Some(d) => {
            let d = parse_duration(d)
                .map_err(|e| CliError::Usage(format!("--finished-before: {e}")))?;
            Some(
                chrono::Utc::now()
                    - chrono::Duration::from_std(d).map_err(|e| CliError::Usage(e.to_string()))?,
            )
        }
        None => None,
    };
    let (data, mut store) = ctx.store()?;
    let purged = store.write(|tx| {
        let purged = tx.purge(before, dlq)?;
        if !purged.is_empty() {
            tx.purge_definitions()?;
        }
        Ok::<_, StoreError>(purged)
    })?;
    for p in &purged {
        crate::daemon::remove_logs(&data, p);
    }
    if ctx.json {
        print_json(
            &json!({"purged": purged.len(), "ids": purged.iter().map(|p| p.id).collect::<Vec<_>>()}),
        );
    } else {
        let what = if dlq { "dead" } else { "finished" };
        let age = finished_before
            .map(|d| format!(" finished more than {d} ago"))
            .unwrap_or_default();
        println!(
            "purged {} {what} run{}{age}",
            purged.len(),
            if purged.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
