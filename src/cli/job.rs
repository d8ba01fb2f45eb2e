//! `worker job NAME`: run a job now, in the foreground.
//!
//! The runs it creates are reserved for this process's lease, so the daemon leaves them alone;
//! dependency runs that already existed are waited for (or run here, if nobody else has claimed
//! them). Per-job `concurrency` is shared with the daemon through the store: when the job's slots
//! are taken, this waits and says so. Ctrl-C cancels: the running attempt's process group is
//! stopped and the rest of the chain is cancelled.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::{CliError, CliResult, Ctx};
use crate::config::Config;
use crate::datadir::{DataDir, Lease};
use crate::exec::{Executor, StopReason};
use crate::model::{RunId, RunState, Time, Trigger};
use crate::queue::lifecycle;
use crate::queue::{Claimed, Request, enqueue};
use crate::runner;
use crate::store::{Store, StoreError};
use crate::units::format_duration;
use crate::wake;
use crate::workflow::launch::StepRunner;

/// How often the foreground command looks at the store while it waits (a person is watching:
/// a quarter second is responsive and still costs nothing measurable).
const POLL: Duration = Duration::from_millis(250);

/// How long `worker job` spends delivering its alerts when no daemon runs.
const ALERT_BUDGET: Duration = Duration::from_secs(5);

pub fn run(
    ctx: &Ctx,
    name: &str,
    env: Vec<(String, String)>,
    no_deps: bool,
    no_retry: bool,
    input: Option<&str>,
) -> CliResult {
    let config = ctx.config()?;
    ctx.known_job(&config, name)?;
    let input = super::run_input(&config, name, input)?;
    let (data, store) = ctx.store()?;
    let lease = Lease::foreground(&data)
        .map_err(|e| CliError::Failed(format!("cannot create a lease file: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    let mut req = Request::new(name, Trigger::Manual);
    req.env = env.into_iter().collect();
    req.expand_deps = !no_deps;
    req.owner = Some(lease.id.clone());
    req.no_retry = no_retry;
    req.input = input;
    let exec = Arc::new(Executor::new(Some(crate::exec::self_exe())));
    let mut fg = Foreground {
        steps: Arc::new(StepRunner::new(exec.clone(), data.clone(), true)),
        config: Arc::new(config),
        data,
        store,
        lease,
        exec,
    };
    runtime.block_on(async {
        let result = fg.run(req).await;
        fg.deliver_alerts().await;
        result
    })
}

struct Foreground {
    config: Arc<Config>,
    data: DataDir,
    store: Store,
    lease: Lease,
    exec: Arc<Executor>,
    /// Runs workflow steps (output teed to the terminal).
    steps: Arc<StepRunner>,
}

enum Step {
    Ran,
    Interrupted,
}

impl Foreground {
    async fn run(&mut self, req: Request) -> CliResult {
        self.recover_dead_owners()?;
        let now = chrono::Utc::now();
        let config = &self.config;
        let target = self
            .store
            .write(|tx| enqueue(tx, config, &req, now))
            .map_err(|e| match e {
                crate::queue::EnqueueError::Input(m) => CliError::Usage(m),
                e => CliError::Failed(e.to_string()),
            })?
            .id;
        // Without a daemon, nobody else delivers what `notify` steps send: deliver it here.
        let outbox = self.start_outbox();
        let mut interrupt = Interrupt::new()?;
        let mut said: HashSet<String> = HashSet::new();
        loop {
            let now = chrono::Utc::now();
            let (config, owner) = (&self.config, self.lease.id.clone());
            let (claimed, blocked, waiting_on, target_state, next_due) =
                self.store.write(|tx| {
                    lifecycle::promote_due(tx, config, now)?;
                    let chain = lifecycle::chain(tx, target)?;
                    let (claimed, blocked) =
                        lifecycle::claim_these(tx, config, &owner, &chain, now, 1)?;
                    let mut waiting_on = Vec::new();
                    for &id in chain.iter().rev() {
                        if let Some(b) = tx.brief(id)?
                            && matches!(
                                b.state,
                                RunState::Running | RunState::Retrying | RunState::Queued
                            )
                            && b.owner.as_deref() != Some(owner.as_str())
                        {
                            waiting_on.push(format!("{} run {} ({})", b.job, b.id, b.state));
                        }
                    }
                    let target_state = tx
                        .brief(target)?
                        .map(|b| b.state)
                        .unwrap_or(RunState::Cancelled);
                    Ok::<_, StoreError>((
                        claimed,
                        blocked,
                        waiting_on,
                        target_state,
                        tx.next_due()?,
                    ))
                })?;
            if let Some(c) = claimed.into_iter().next() {
                let step = if c.run.has_steps {
                    self.execute_flow(c, &mut interrupt).await?
                } else {
                    self.execute(c, &mut interrupt).await?
                };
                if let Step::Interrupted = step {
                    drop(outbox);
                    return self.abandon(target);
                }
                continue;
            }
            if target_state.is_final() {
                drop(outbox);
                return self.conclude(target);
            }
            for job in blocked {
                let limit = self.config.job(&job).map(|j| j.concurrency).unwrap_or(1);
                if said.insert(format!("slot:{job}")) {
                    eprintln!(
                        "worker: waiting for a free slot: job {job} already has {limit} run(s) running (concurrency {limit})"
                    );
                }
            }
            for w in waiting_on {
                if said.insert(format!("dep:{w}")) {
                    eprintln!("worker: waiting for {w}");
                }
            }
            if target_state == RunState::Suspended
                && let Some(why) = self.suspension(target)?
                && said.insert(format!("suspended:{why}"))
            {
                eprintln!("worker: run {target} is suspended: {why}");
            }
            let mut wait = POLL;
            if let Some(due) = next_due {
                wait = wait.min(
                    (due - chrono::Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO),
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = interrupt.recv() => return self.abandon(target),
            }
        }
    }

    /// Runs one claimed attempt with its output streamed, and records how it ended.
    async fn execute(&mut self, claimed: Claimed, interrupt: &mut Interrupt) -> CliResult<Step> {
        let run = &claimed.run;
        let spec = match runner::spec_for(&claimed, &self.config, &self.data, true) {
            Ok(s) => s,
            Err(e) => {
                self.record(&runner::report_unstartable(&claimed, e))?;
                return Ok(Step::Ran);
            }
        };
        eprintln!(
            "worker: running {} (run {}, attempt {}/{}{})",
            run.job,
            run.id,
            claimed.attempt,
            run.max_attempts,
            if run.trigger == Trigger::Dependency {
                ", dependency"
            } else {
                ""
            }
        );
        let (stop_tx, stop_rx) = watch::channel(None);
        let mut interrupted = false;
        let finished = {
            let attempt = self.exec.run(&spec, stop_rx);
            tokio::pin!(attempt);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    f = &mut attempt => break f,
                    _ = interrupt.recv() => {
                        eprintln!("worker: interrupted: stopping {} (run {})", run.job, run.id);
                        interrupted = true;
                        let _ = stop_tx.send(Some(StopReason::Cancel));
                    }
                    _ = tick.tick() => {
                        let id = run.id;
                        if self.store.read(|tx| tx.brief(id))?.is_some_and(|b| b.cancel_requested) {
                            let _ = stop_tx.send(Some(StopReason::Cancel));
                        }
                    }
                }
            }
        };
        let mut report = runner::report_for(&claimed, &finished, &spec);
        if self.data.shared_store() {
            report.output = runner::kept_output(&spec);
        }
        let state = self.record(&report)?;
        let took = format_duration(finished.duration);
        match state {
            RunState::Succeeded => {
                eprintln!("worker: {} run {} succeeded in {took}", run.job, run.id)
            }
            RunState::Retrying => {
                let due = self.store.read(|tx| tx.run(run.id))?.map(|r| r.due_at);
                let wait = due
                    .and_then(|d| (d - chrono::Utc::now()).to_std().ok())
                    .unwrap_or_default();
                eprintln!(
                    "worker: {} run {} failed ({}) after {took}; retrying in {}",
                    run.job,
                    run.id,
                    finished.describe(spec.timeout),
                    format_duration(wait)
                );
            }
            other => eprintln!(
                "worker: {} run {} {other}: {} after {took}",
                run.job,
                run.id,
                finished.describe(spec.timeout)
            ),
        }
        Ok(if interrupted {
            Step::Interrupted
        } else {
            Step::Ran
        })
    }

    /// What a suspended run of ours waits for, in words.
    fn suspension(&mut self, id: RunId) -> CliResult<Option<String>> {
        let steps = self.store.read(|tx| tx.steps(id))?;
        let parts: Vec<String> = steps
            .iter()
            .filter(|s| s.state == crate::model::StepState::Suspended)
            .map(|s| {
                match (
                    &s.waiting_for,
                    s.wake_at.filter(|t| !crate::store::is_never(*t)),
                ) {
                    (Some(sig), Some(t)) => format!(
                        "step {} waits for signal {sig} (`worker signal {id} {sig}`) until {}",
                        s.name,
                        super::output::human(t)
                    ),
                    (Some(sig), None) => format!(
                        "step {} waits for signal {sig} (`worker signal {id} {sig}`)",
                        s.name
                    ),
                    (None, Some(t)) => {
                        format!("step {} sleeps until {}", s.name, super::output::human(t))
                    }
                    (None, None) => format!("step {} is suspended", s.name),
                }
            })
            .collect();
        Ok((!parts.is_empty()).then(|| parts.join("; ")))
    }

    /// Runs a claimed workflow run's steps here — process steps with their output streamed,
    /// the others in-process — committing each step's end with the steps it makes ready, until
    /// the run's attempt ends or it is suspended (it stays reserved for us, and the loop of
    /// [`Foreground::run`] resumes it when it is due).
    async fn execute_flow(
        &mut self,
        claimed: Claimed,
        interrupt: &mut Interrupt,
    ) -> CliResult<Step> {
        use crate::workflow::run::{self as wf, Halt, Next, RunCtx, RunRows};
        let run = claimed.run.clone();
        let owner = self.lease.id.clone();
        let def: Arc<crate::workflow::model::Workflow> = {
            let (_, text) = self
                .store
                .read(|tx| tx.definition(run.id))?
                .ok_or_else(|| CliError::Failed(format!("run {} has no steps pinned", run.id)))?;
            Arc::new(
                serde_json::from_str(&text)
                    .map_err(|e| CliError::Failed(format!("run {}'s pinned steps: {e}", run.id)))?,
            )
        };
        eprintln!(
            "worker: running {} (run {}, attempt {}/{}{}, {} steps)",
            run.job,
            run.id,
            claimed.attempt,
            run.max_attempts,
            if claimed.resumed { ", resumed" } else { "" },
            def.steps.len()
        );
        let config = self.config.clone();
        let (done_tx, mut done_rx) =
            tokio::sync::mpsc::unbounded_channel::<(String, wf::StepOutcome, Time)>();
        let mut handles: std::collections::HashMap<String, watch::Sender<Option<StopReason>>> =
            std::collections::HashMap::new();
        let mut halt: Option<Halt> = None;
        let mut interrupted = false;
        // The first decision: begin (or resume) the attempt.
        let mut next = {
            let now = chrono::Utc::now();
            self.store.write(|tx| {
                let rows = RunRows::unread();
                let mut ctx = RunCtx {
                    run: &run,
                    def: &def,
                    config: &config,
                    process_slots: usize::MAX,
                    keep_owner: Some(&owner),
                    halt: None,
                    rows: &rows,
                };
                let p = if claimed.resumed {
                    wf::advance(tx, &mut ctx, now)?
                } else {
                    wf::begin(tx, &mut ctx, now)?
                };
                wf::settle(tx, &ctx, claimed.seq, p, now, fastrand::f64())
            })?
        };
        loop {
            let wake = match next {
                Next::Ended(state) => {
                    wake::notify(&self.data);
                    eprintln!("worker: {} run {} {state}", run.job, run.id);
                    break;
                }
                Next::Parked(_) => {
                    wake::notify(&self.data);
                    break;
                }
                Next::Launch { launches, wake, .. } => {
                    for l in launches {
                        let Some((_, d)) = def.step(&l.step) else {
                            continue;
                        };
                        eprintln!("worker: step {} ({}) started", l.step, d.kind.as_str());
                        let (stop_tx, stop_rx) = watch::channel(None);
                        handles.insert(l.step.clone(), stop_tx);
                        let (runner, run, kind, config, tx) = (
                            self.steps.clone(),
                            run.clone(),
                            d.kind.clone(),
                            config.clone(),
                            done_tx.clone(),
                        );
                        tokio::spawn(async move {
                            let name = l.step.clone();
                            let (outcome, _) =
                                runner.execute(&run, &kind, l, config, stop_rx).await;
                            let _ = tx.send((name, outcome, chrono::Utc::now()));
                        });
                    }
                    wake
                }
            };
            // Wait for a step to end, a step's wake-up, a cancel, or Ctrl-C.
            let until_wake = wake
                .map(|t| (t - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(3600));
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.tick().await;
            let ended: Option<(String, wf::StepOutcome, Time)> = tokio::select! {
                Some(e) = done_rx.recv() => Some(e),
                _ = tokio::time::sleep(until_wake) => None,
                _ = interrupt.recv() => {
                    eprintln!("worker: interrupted: stopping {} (run {})", run.job, run.id);
                    interrupted = true;
                    halt = Some(Halt::Cancel);
                    for h in handles.values() {
                        let _ = h.send(Some(StopReason::Cancel));
                    }
                    None
                }
                _ = tick.tick() => {
                    let id = run.id;
                    if halt.is_none() && self.store.read(|tx| tx.brief(id))?.is_some_and(|b| b.cancel_requested) {
                        halt = Some(Halt::Cancel);
                        for h in handles.values() {
                            let _ = h.send(Some(StopReason::Cancel));
                        }
                    }
                    None
                }
            };
            let now = chrono::Utc::now();
            next = self.store.write(|tx| {
                let rows = RunRows::unread();
                let mut ctx = RunCtx {
                    run: &run,
                    def: &def,
                    config: &config,
                    process_slots: usize::MAX,
                    keep_owner: Some(&owner),
                    halt,
                    rows: &rows,
                };
                let p = match &ended {
                    Some((name, outcome, at)) => wf::step_ended(
                        tx,
                        &mut ctx,
                        name,
                        outcome.clone(),
                        *at,
                        now,
                        fastrand::f64(),
                    )?,
                    None => wf::advance(tx, &mut ctx, now)?,
                };
                wf::settle(tx, &ctx, claimed.seq, p, now, fastrand::f64())
            })?;
            if let Some((name, outcome, _)) = &ended {
                handles.remove(name);
                let said = match outcome {
                    wf::StepOutcome::Succeeded { .. } => "succeeded".to_string(),
                    wf::StepOutcome::Failed { error, .. } => format!("failed: {error}"),
                    wf::StepOutcome::Cancelled => "cancelled".into(),
                    wf::StepOutcome::Interrupted => "interrupted".into(),
                };
                eprintln!("worker: step {name} {said}");
            }
        }
        Ok(if interrupted {
            Step::Interrupted
        } else {
            Step::Ran
        })
    }

    /// With no daemon running, delivers `notify` steps' messages while the command runs (a
    /// daemon, if one runs or starts, shares the outbox without delivering twice).
    fn start_outbox(&mut self) -> Option<OutboxTask> {
        let wants = self.config.jobs.values().any(|j| {
            j.workflow().is_some_and(|w| {
                w.steps
                    .iter()
                    .any(|s| matches!(s.kind, crate::workflow::model::StepKind::Notify(_)))
            })
        });
        if !wants || crate::datadir::running_daemon(&self.data).is_some() {
            return None;
        }
        let store = Store::open_at(self.store.location(), crate::store::Durability::Full).ok()?;
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
        let outbox = crate::alert::outbox::Outbox::new(
            store,
            &self.lease.id,
            self.config.alerts.delivery.timeout,
            clock,
        )
        .ok()?;
        let (stop, stopped) = watch::channel(false);
        let (_config_tx, config_rx) = watch::channel(self.config.clone());
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(outbox.run(
            config_rx,
            wake,
            stopped,
            Some(crate::alert::outbox::IDLE_LOOK),
        ));
        Some(OutboxTask {
            stop,
            _task: task,
            _config: _config_tx,
        })
    }

    fn record(&mut self, report: &crate::queue::Report) -> CliResult<RunState> {
        let (config, now) = (&self.config, chrono::Utc::now());
        let state = self
            .store
            .write(|tx| lifecycle::finish(tx, config, report, now, fastrand::f64()))?;
        wake::notify(&self.data);
        Ok(state)
    }

    /// Ctrl-C: cancel what is left of the chain.
    fn abandon(&mut self, target: RunId) -> CliResult {
        let now = chrono::Utc::now();
        let owner = self.lease.id.clone();
        let config = &self.config;
        self.store.write(|tx| {
            lifecycle::cancel(tx, config, target, now)?;
            for id in tx.reserved_by(&owner)? {
                lifecycle::cancel(tx, config, id, now)?;
            }
            Ok::<_, StoreError>(())
        })?;
        wake::notify(&self.data);
        eprintln!("worker: cancelled");
        Err(CliError::Exit(130))
    }

    /// Exit 0 if the target succeeded, 1 otherwise.
    fn conclude(&mut self, target: RunId) -> CliResult {
        let run = self.store.read(|tx| tx.run(target))?;
        match run {
            Some(r) if r.state == RunState::Succeeded => Ok(()),
            Some(r) => Err(CliError::Failed(format!(
                "{} run {} ended {}: {}",
                r.job,
                r.id,
                r.state,
                r.error.unwrap_or_default()
            ))),
            None => Err(CliError::Failed(format!("run {target} vanished"))),
        }
    }

    /// With no daemon running, delivers the alerts this run raised before exiting (a few
    /// seconds at most; what is left stays in the outbox for the next daemon).
    async fn deliver_alerts(&mut self) {
        if crate::datadir::running_daemon(&self.data).is_some() {
            return;
        }
        let pending = self.store.read(|tx| tx.pending_alerts()).unwrap_or(0);
        if pending == 0 {
            return;
        }
        let store = match Store::open_at(self.store.location(), crate::store::Durability::Full) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("worker: cannot deliver alerts: {e}");
                return;
            }
        };
        let config = std::sync::Arc::new(self.config.clone());
        let clock: std::sync::Arc<dyn crate::clock::Clock> =
            std::sync::Arc::new(crate::clock::SystemClock);
        match crate::alert::outbox::Outbox::new(
            store,
            &self.lease.id,
            config.alerts.delivery.timeout,
            clock,
        ) {
            Ok(mut outbox) => {
                let left = outbox.drain(&config, ALERT_BUDGET).await;
                if left > 0 {
                    eprintln!(
                        "worker: {left} alert(s) not delivered yet: the daemon will retry them"
                    );
                }
            }
            Err(e) => eprintln!("worker: cannot deliver alerts: {e}"),
        }
    }

    fn recover_dead_owners(&mut self) -> CliResult {
        let me = self.lease.id.clone();
        runner::recover_dead_owners(&self.config, &self.data, &mut self.store, Some(&me))?;
        Ok(())
    }
}

/// The outbox delivering while `worker job` runs; stopped when dropped.
struct OutboxTask {
    stop: watch::Sender<bool>,
    _task: tokio::task::JoinHandle<()>,
    _config: watch::Sender<Arc<Config>>,
}

impl Drop for OutboxTask {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// SIGINT, SIGTERM or SIGHUP (a closed terminal): the person wants this to stop.
struct Interrupt {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> CliResult<Interrupt> {
        let s = |k| signal(k).map_err(|e| CliError::Failed(format!("cannot handle signals: {e}")));
        Ok(Interrupt {
            int: s(SignalKind::interrupt())?,
            term: s(SignalKind::terminate())?,
            hup: s(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}
