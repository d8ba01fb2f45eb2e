//! The engine's workflow side: the workflow runs it owns, the steps it runs for them as tasks,
//! and the decisions it commits in each turn's transaction (`workflow::run` decides; this only
//! keeps the handles and applies the outcome).
//!
//! Architecture invariant: as for attempts, a step's task never touches the store; its end
//! comes back over the engine's channel and is committed by the next turn, together with the
//! steps it made ready — which are launched only after that commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{Ended, Engine};
use crate::config::Config;
use crate::exec::StopReason;
use crate::model::{Run, RunId, Time};
use crate::store::{Result, StoreError, Tx};
use crate::workflow::model::Workflow;
use crate::workflow::run::{
    self as wf, Halt, Launch, Next, Progress, RunCtx, RunRows, StepOutcome,
};

/// A workflow run this engine runs.
pub(super) struct Flow {
    /// As claimed (for templates and the environment).
    pub run: Run,
    /// Its pinned steps.
    pub def: Arc<Workflow>,
    /// Its open attempt row.
    pub seq: u32,
    /// Its running steps.
    pub steps: HashMap<String, StepHandle>,
    /// When a sleeping or backing-off step of it is next due.
    pub wake: Option<Time>,
    /// A ready process step waits for a free process slot.
    pub blocked: bool,
    /// It is being cancelled, or the engine stops.
    pub halt: Option<Halt>,
}

pub(super) struct StepHandle {
    pub stop: watch::Sender<Option<StopReason>>,
    /// Whether it runs a process (and takes a process slot).
    pub process: bool,
}

/// A step's end, sent by its task.
pub(super) struct StepDone {
    pub run: RunId,
    pub step: String,
    pub outcome: StepOutcome,
    pub duration: Duration,
    pub process: bool,
    /// When the task saw it end (the step's `finished_at`; the commit comes a turn later).
    pub ended_at: Time,
}

/// A decision about a workflow run taken in a turn's transaction, applied after the commit.
pub(super) struct Decided {
    pub run: RunId,
    pub next: Next,
    /// For a run claimed this turn: its new flow (before any launch).
    pub new_flow: Option<Flow>,
}

/// How many runs the decisions let go (ended or suspended), each freeing its slot: counted once
/// per run, however many of its steps ended in the turn.
pub(super) fn runs_leaving(decided: &[Decided]) -> usize {
    decided
        .iter()
        .filter(|d| matches!(d.next, Next::Parked(_) | Next::Ended(_)))
        .map(|d| d.run)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// The rows (steps, brief) of the workflow runs a turn decides about: read together (a query
/// each on PostgreSQL), then kept per run for all of the turn's decisions about it — several of a run's
/// steps may end in one turn. Lives in the turn's transaction only.
#[derive(Default)]
pub(super) struct TurnRows(HashMap<RunId, RunRows>);

impl TurnRows {
    /// Reads the rows of those of `runs` not read yet; their briefs too if `briefs` (runs
    /// claimed in this turn have theirs in their claim).
    pub fn read(
        &mut self,
        tx: &Tx<'_>,
        runs: impl IntoIterator<Item = RunId>,
        briefs: bool,
    ) -> Result<()> {
        let mut want: Vec<RunId> = runs
            .into_iter()
            .filter(|r| !self.0.contains_key(r))
            .collect();
        want.sort_unstable();
        want.dedup();
        if want.is_empty() {
            return Ok(());
        }
        let mut steps = tx.steps_of(&want)?;
        let mut briefs = if briefs {
            tx.briefs(&want)?
        } else {
            HashMap::new()
        };
        for run in want {
            let rows = RunRows::known(steps.remove(&run).unwrap_or_default(), briefs.remove(&run));
            self.0.insert(run, rows);
        }
        Ok(())
    }

    /// Run `run`'s rows (read on first use if [`TurnRows::read`] did not).
    pub fn of(&mut self, run: RunId) -> &RunRows {
        self.0.entry(run).or_default()
    }
}

/// The pinned definition of run `id`, parsed once per distinct definition (they never change).
pub(super) fn definition(
    tx: &Tx<'_>,
    cache: &mut HashMap<i64, Arc<Workflow>>,
    run: &Run,
) -> Result<Arc<Workflow>> {
    if let Some(w) = run.definition.and_then(|d| cache.get(&d)) {
        return Ok(w.clone());
    }
    let id = run.id;
    let (def_id, text) = tx
        .definition(id)?
        .ok_or_else(|| StoreError::Corrupt(format!("run {id} has no steps pinned")))?;
    let w: Arc<Workflow> = serde_json::from_str(&text)
        .map(Arc::new)
        .map_err(|e| StoreError::Corrupt(format!("run {id}'s pinned steps: {e}")))?;
    if cache.len() > 1000 {
        cache.clear();
    }
    cache.insert(def_id, w.clone());
    Ok(w)
}

/// Decides on a claimed workflow run: begins its attempt (or resumes a suspended one).
#[allow(clippy::too_many_arguments)]
pub(super) fn claimed(
    tx: &Tx<'_>,
    config: &Config,
    c: &crate::queue::Claimed,
    cache: &mut HashMap<i64, Arc<Workflow>>,
    rows: &RunRows,
    slots: &mut usize,
    halt: Option<Halt>,
    now: Time,
) -> Result<Decided> {
    let def = definition(tx, cache, &c.run)?;
    let mut ctx = RunCtx {
        run: &c.run,
        def: &def,
        config,
        process_slots: *slots,
        keep_owner: None,
        halt,
        rows,
    };
    let progress = if c.resumed {
        wf::advance(tx, &mut ctx, now)?
    } else {
        wf::begin(tx, &mut ctx, now)?
    };
    *slots = ctx.process_slots;
    let next = wf::settle(tx, &ctx, c.seq, progress, now, fastrand::f64())?;
    Ok(Decided {
        run: c.run.id,
        next,
        new_flow: Some(Flow {
            run: c.run.clone(),
            def,
            seq: c.seq,
            steps: HashMap::new(),
            wake: None,
            blocked: false,
            halt,
        }),
    })
}

/// Records a step's end and decides what follows.
#[allow(clippy::too_many_arguments)]
pub(super) fn step_done(
    tx: &Tx<'_>,
    config: &Config,
    flow: &Flow,
    done: &StepDone,
    rows: &RunRows,
    slots: &mut usize,
    halt: Option<Halt>,
    now: Time,
) -> Result<Decided> {
    decide(tx, config, flow, rows, slots, halt, now, |tx, ctx| {
        wf::step_ended(
            tx,
            ctx,
            &done.step,
            done.outcome.clone(),
            done.ended_at,
            now,
            fastrand::f64(),
        )
    })
}

/// Looks at a flow again (a step woke, a signal came, a slot freed, it is halting).
pub(super) fn revisit(
    tx: &Tx<'_>,
    config: &Config,
    flow: &Flow,
    rows: &RunRows,
    slots: &mut usize,
    halt: Option<Halt>,
    now: Time,
) -> Result<Decided> {
    decide(tx, config, flow, rows, slots, halt, now, |tx, ctx| {
        wf::advance(tx, ctx, now)
    })
}

/// Runs `step` (a decision of `workflow::run`) on a flow's context, then settles the run.
#[allow(clippy::too_many_arguments)]
fn decide(
    tx: &Tx<'_>,
    config: &Config,
    flow: &Flow,
    rows: &RunRows,
    slots: &mut usize,
    halt: Option<Halt>,
    now: Time,
    step: impl FnOnce(&Tx<'_>, &mut RunCtx<'_>) -> Result<Progress>,
) -> Result<Decided> {
    let mut ctx = RunCtx {
        run: &flow.run,
        def: &flow.def,
        config,
        process_slots: *slots,
        keep_owner: None,
        halt,
        rows,
    };
    let progress = step(tx, &mut ctx)?;
    *slots = ctx.process_slots;
    let next = wf::settle(tx, &ctx, flow.seq, progress, now, fastrand::f64())?;
    Ok(Decided {
        run: flow.run.id,
        next,
        new_flow: None,
    })
}

impl Engine {
    /// Process slots in use: plain attempts and process steps.
    pub(super) fn live_processes(&self) -> usize {
        self.running.len()
            + self
                .flows
                .values()
                .map(|f| f.steps.values().filter(|s| s.process).count())
                .sum::<usize>()
    }

    /// How a flow must be treated now: cancelled, or stopping with the engine.
    pub(super) fn halt_of(&self, flow: &Flow) -> Option<Halt> {
        flow.halt.or(self.stopping.then_some(Halt::Stop))
    }

    /// Flows to look at again this turn: a step due, a slot freed for a blocked one, halting
    /// with nothing running.
    pub(super) fn flows_to_revisit(&self, now: Time, slots_freed: bool) -> Vec<RunId> {
        self.flows
            .iter()
            .filter(|(_, f)| {
                f.wake.is_some_and(|t| t <= now)
                    || (f.blocked && slots_freed)
                    || (self.halt_of(f).is_some() && f.steps.is_empty())
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The earliest wake-up among the flows.
    pub(super) fn next_flow_wake(&self) -> Option<Time> {
        self.flows.values().filter_map(|f| f.wake).min()
    }

    /// Applies a committed decision: launches steps, or lets the flow go (suspended, ended; the
    /// turn says whether its slot still needs a claim).
    pub(super) fn apply(&mut self, d: Decided) {
        if let Some(flow) = d.new_flow {
            self.flows.insert(d.run, flow);
        }
        match d.next {
            Next::Launch {
                launches,
                wake,
                blocked,
            } => {
                if let Some(flow) = self.flows.get_mut(&d.run) {
                    flow.wake = wake;
                    flow.blocked = blocked;
                }
                for l in launches {
                    self.launch_step(d.run, l);
                }
            }
            Next::Parked(wake) => {
                if let Some(flow) = self.flows.remove(&d.run) {
                    info!(job = %flow.run.job, run = d.run, wake = ?wake, "suspended: sleeping or waiting for a signal");
                }
            }
            Next::Ended(state) => {
                if let Some(flow) = self.flows.remove(&d.run) {
                    info!(job = %flow.run.job, run = d.run, attempt = flow.run.attempt, state = %state, "attempt ended");
                }
            }
        }
    }

    /// Starts a step in its own task.
    fn launch_step(&mut self, run: RunId, launch: Launch) {
        let Some(flow) = self.flows.get_mut(&run) else {
            return;
        };
        let Some((_, def)) = flow.def.step(&launch.step) else {
            warn!(run, step = %launch.step, "a launched step is not in the run's definition");
            return;
        };
        let kind = def.kind.clone();
        let process = kind.is_process();
        let (stop_tx, stop_rx) = watch::channel(None);
        flow.steps.insert(
            launch.step.clone(),
            StepHandle {
                stop: stop_tx,
                process,
            },
        );
        let run_obj = flow.run.clone();
        let job = run_obj.job.clone();
        let step = launch.step.clone();
        let runner = self.step_runner.clone();
        let config = self.config.clone();
        let tx = self.done_tx.clone();
        let clock = self.clock.clone();
        let span = tracing::info_span!("step", job = %job, run, step = %step);
        self.steps_rt.spawn(tracing::Instrument::instrument(
            async move {
                let (outcome, duration) = runner
                    .execute(&run_obj, &kind, launch, config, stop_rx)
                    .await;
                let _ = tx.send(Ended::Step(StepDone {
                    run,
                    step,
                    outcome,
                    duration,
                    process,
                    ended_at: clock.now(),
                }));
            },
            span,
        ));
    }

    /// A step's end arrived: forget its handle (its end is committed in the next turn).
    pub(super) fn step_finished(&mut self, done: &StepDone) {
        if let Some(flow) = self.flows.get_mut(&done.run) {
            flow.steps.remove(&done.step);
        }
        let level = match &done.outcome {
            StepOutcome::Failed { .. } => tracing::Level::WARN,
            _ => tracing::Level::INFO,
        };
        let outcome = match &done.outcome {
            StepOutcome::Succeeded { .. } => "succeeded".to_string(),
            StepOutcome::Failed { error, .. } => format!("failed: {error}"),
            StepOutcome::Cancelled => "cancelled".into(),
            StepOutcome::Interrupted => "interrupted".into(),
        };
        if level == tracing::Level::WARN {
            warn!(run = done.run, step = %done.step, duration_ms = done.duration.as_millis() as u64, "step {outcome}");
        } else {
            info!(run = done.run, step = %done.step, duration_ms = done.duration.as_millis() as u64, "step {outcome}");
        }
    }

    /// `queue:cancel` of a running workflow run: stop its steps; it ends `cancelled` once they
    /// have stopped.
    pub(super) fn cancel_flow(&mut self, run: RunId) -> bool {
        let Some(flow) = self.flows.get_mut(&run) else {
            return false;
        };
        if flow.halt.is_none() {
            info!(job = %flow.run.job, run, "cancel requested: stopping its running steps");
        }
        flow.halt = Some(Halt::Cancel);
        for h in flow.steps.values() {
            let _ = h.stop.send(Some(StopReason::Cancel));
        }
        true
    }

    /// Stops every running step (a shutdown ran out of time, or a second signal).
    pub(super) fn stop_steps(&self, reason: StopReason) {
        for f in self.flows.values() {
            for h in f.steps.values() {
                let _ = h.stop.send(Some(reason));
            }
        }
    }
}
