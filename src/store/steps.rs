//! Operations on workflow steps (each run's checkpoints) and signals.

use std::collections::HashMap;

use super::Result;
use crate::model::{RunId, Step, StepState, Time};
use crate::workflow::model::Workflow;

/// How a step ends (what [`Tx::end_step`] records).
#[derive(Debug, Clone, Default)]
pub struct StepEnd<'a> {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<&'a str>,
    pub outputs: Option<&'a serde_json::Value>,
}

/// The store's operations on steps: the SQLite and PostgreSQL transactions implement them.
pub trait StepOps {
    /// The steps of a new workflow run, all pending.
    fn insert_steps(&self, run: RunId, wf: &Workflow) -> Result<()>;

    /// A run's steps, in their order in the job.
    fn steps(&self, run: RunId) -> Result<Vec<Step>>;

    /// One step of a run.
    fn step(&self, run: RunId, name: &str) -> Result<Option<Step>>;

    /// The steps of several runs (those without steps are left out), as [`StepOps::steps`] of
    /// each: one query where a query costs a round trip.
    fn steps_of(&self, runs: &[RunId]) -> Result<HashMap<RunId, Vec<Step>>> {
        let mut out = HashMap::with_capacity(runs.len());
        for &run in runs {
            let steps = self.steps(run)?;
            if !steps.is_empty() {
                out.insert(run, steps);
            }
        }
        Ok(out)
    }

    /// Stores a workflow definition (JSON) once, whatever the number of runs pinning it: returns
    /// its id (the same for the same text).
    fn store_definition(&self, text: &str) -> Result<i64>;

    /// A workflow run's pinned definition: its id and text (JSON).
    fn definition(&self, run: RunId) -> Result<Option<(i64, String)>>;

    /// Forgets definitions no run pins any more (after history was pruned).
    fn purge_definitions(&self) -> Result<usize>;

    /// Starts a step's next execution: `running`, its `attempts` one more (its attempt number).
    fn start_step(&self, run: RunId, name: &str, now: Time) -> Result<()>;

    /// Executions of a step in the current attempt of its run (what its `retry` counts).
    fn step_tries(&self, run: RunId, name: &str) -> Result<u32>;

    /// A step starts to sleep or wait: `wake_at` is when it is due (`None`: only a signal wakes
    /// it); `waiting_for` the signal it waits for.
    fn suspend_step(
        &self,
        run: RunId,
        name: &str,
        wake_at: Option<Time>,
        waiting_for: Option<&str>,
        now: Time,
    ) -> Result<()>;

    /// Ends a step in a final state (`succeeded`, `failed`, `skipped`, `cancelled`).
    fn end_step(
        &self,
        run: RunId,
        name: &str,
        state: StepState,
        now: Time,
        end: &StepEnd<'_>,
    ) -> Result<()>;

    /// A step goes back to pending: a retry in place, due at `wake_at` (`None`: at once); the
    /// error of the failed execution is kept until the next one starts.
    fn retry_step(&self, run: RunId, name: &str, wake_at: Option<Time>, error: &str) -> Result<()>;

    /// Before a new attempt of the run: what failed, was interrupted or cancelled runs again;
    /// what succeeded, was skipped, or still sleeps or waits keeps its state.
    fn reset_steps(&self, run: RunId) -> Result<()>;

    /// Running steps of a run whose owner died end `failed` (`interrupted`).
    fn interrupt_steps(&self, run: RunId, now: Time, error: &str) -> Result<Vec<String>>;

    /// The run was cancelled: its steps that had not ended end `cancelled`.
    fn cancel_steps(&self, run: RunId, now: Time) -> Result<()>;

    /// Copies step `name`'s checkpoint (state, outputs, times, attempts) from run `from` into run
    /// `to` (`queue:retry` reusing what succeeded).
    fn reuse_step(&self, from: RunId, to: RunId, name: &str) -> Result<()>;

    /// Puts a running workflow run to sleep: it holds no slot and no owner (or stays reserved
    /// for a foreground `owner`) until `due` (`None`: until a signal).
    fn suspend_run(&self, id: RunId, due: Option<Time>, owner: Option<&str>) -> Result<()>;

    /// A suspended run is due (a step woke, a signal arrived): queued to resume its attempt.
    fn queue_resume(&self, id: RunId, now: Time) -> Result<()>;

    /// Records a signal for a run. Returns whether a step of the run is suspended waiting for it
    /// right now.
    fn insert_signal(
        &self,
        run: RunId,
        name: &str,
        data: Option<&serde_json::Value>,
        fail: Option<&str>,
        now: Time,
    ) -> Result<bool>;

    /// Consumes the oldest unconsumed signal `name` of a run for step `step`: its data (JSON)
    /// and its failure reason (`--fail`).
    #[allow(clippy::type_complexity)]
    fn take_signal(
        &self,
        run: RunId,
        name: &str,
        step: &str,
        now: Time,
    ) -> Result<Option<(Option<serde_json::Value>, Option<String>)>>;

    /// Runs owned by `owner` and running that have an unconsumed signal a suspended step of
    /// theirs waits for.
    fn signaled_runs(&self, owner: &str) -> Result<Vec<RunId>>;
}
