//! A workflow run's rows (its steps, its brief) as the decisions of one transaction leave them.
//!
//! A decision looks at all of a run's steps after each change it makes (a started step may make
//! the context of the next one). Reading them back from the store after every write costs a round
//! trip per look on PostgreSQL; instead the rows are read once — for all the runs of an engine
//! turn together, with [`StepOps::steps_of`] — and the two writes a run's progress mostly
//! consists of, a step's start and its end, are applied to them here exactly as the store applies
//! them. Any other write to a run's steps (a retry in place, a suspension, a reset) drops them, and
//! the next look reads them again. The run's brief, when the caller read it with others', serves
//! the run's end; ending or suspending the run drops everything.
//!
//! Invariant: a `RunRows` lives inside one transaction (its writes are the caller's); it is never
//! kept across a commit or a rollback.
//!
//! [`StepOps::steps_of`]: crate::store::StepOps::steps_of

use std::cell::RefCell;

use crate::model::{RunId, Step, StepState, Time};
use crate::store::{Result, RunBrief, StepEnd, StoreError, Tx};

#[derive(Debug, Default)]
pub struct RunRows {
    steps: RefCell<Option<Vec<Step>>>,
    brief: RefCell<Option<RunBrief>>,
}

impl RunRows {
    /// Rows not read yet: the first look reads them.
    pub fn unread() -> Self {
        Self::default()
    }

    /// Rows the caller has just read in its transaction.
    pub fn known(steps: Vec<Step>, brief: Option<RunBrief>) -> Self {
        Self {
            steps: RefCell::new(Some(steps)),
            brief: RefCell::new(brief),
        }
    }

    /// The run's brief, if the caller read it: once (the run's end takes it).
    pub(super) fn take_brief(&self) -> Option<RunBrief> {
        self.brief.borrow_mut().take()
    }

    /// The run's rows, read from the store if they are not known.
    pub(super) fn get(&self, tx: &Tx<'_>, run: RunId) -> Result<Vec<Step>> {
        if let Some(rows) = self.steps.borrow().as_ref() {
            return Ok(rows.clone());
        }
        let rows = tx.steps(run)?;
        *self.steps.borrow_mut() = Some(rows.clone());
        Ok(rows)
    }

    /// One of the run's rows.
    pub(super) fn one(&self, tx: &Tx<'_>, run: RunId, name: &str) -> Result<Option<Step>> {
        Ok(self.get(tx, run)?.into_iter().find(|s| s.name == name))
    }

    /// Starts step `name`: `running`, one more execution. Returns its attempt number.
    pub(super) fn start(&self, tx: &Tx<'_>, run: RunId, name: &str, now: Time) -> Result<u32> {
        self.get(tx, run)?;
        tx.start_step(run, name, now)?;
        self.patch(run, name, |s| {
            s.state = StepState::Running;
            s.attempts = s.attempts.saturating_add(1);
            s.started_at = Some(now);
            s.finished_at = None;
            s.wake_at = None;
            s.waiting_for = None;
            s.error = None;
            s.exit_code = None;
            s.signal = None;
            s.attempts
        })
    }

    /// Ends step `name` in final state `state` (as [`StepOps::end_step`]).
    ///
    /// [`StepOps::end_step`]: crate::store::StepOps::end_step
    pub(super) fn end(
        &self,
        tx: &Tx<'_>,
        run: RunId,
        name: &str,
        state: StepState,
        at: Time,
        end: &StepEnd<'_>,
    ) -> Result<()> {
        tx.end_step(run, name, state, at, end)?;
        if self.steps.borrow().is_some() {
            self.patch(run, name, |s| {
                s.state = state;
                s.finished_at = Some(at);
                s.wake_at = None;
                s.exit_code = end.exit_code;
                s.signal = end.signal;
                s.error = end.error.map(str::to_owned);
                s.outputs = end.outputs.cloned();
            })?;
        }
        Ok(())
    }

    /// Another write changed the run's steps, or the run: the next look reads them again.
    pub(super) fn forget(&self) {
        *self.steps.borrow_mut() = None;
        *self.brief.borrow_mut() = None;
    }

    /// The rows as kept (for tests comparing them with the store's).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> Option<Vec<Step>> {
        self.steps.borrow().clone()
    }

    fn patch<T>(&self, run: RunId, name: &str, f: impl FnOnce(&mut Step) -> T) -> Result<T> {
        let mut rows = self.steps.borrow_mut();
        match rows
            .as_mut()
            .and_then(|r| r.iter_mut().find(|s| s.name == name))
        {
            Some(s) => Ok(f(s)),
            None => Err(StoreError::Corrupt(format!(
                "run {run} has no step row `{name}`"
            ))),
        }
    }
}
