//! Operations on schedule cursors and recorded fires.

use super::Result;
use crate::model::{RunId, RunState, Time};

/// A recorded fire.
#[derive(Debug, Clone, PartialEq)]
pub struct FireRecord {
    pub schedule: String,
    pub fire_at: Time,
    pub job: String,
    /// `enqueued`, `missed`, or `dropped` (a summary row standing for `count` fires).
    pub outcome: String,
    pub reason: Option<String>,
    pub run_id: Option<RunId>,
    pub count: u64,
    pub recorded_at: Time,
}

/// The store's operations on schedules: the SQLite and PostgreSQL transactions implement them.
pub trait ScheduleOps {
    /// The cursor of a schedule (fires at or before it are handled) and whether it was enabled.
    fn schedule_cursor(&self, name: &str) -> Result<Option<(Time, bool)>>;

    fn set_schedule_cursor(&self, name: &str, cursor: Time, enabled: bool) -> Result<()>;

    /// Forgets the cursors of schedules not in `keep`.
    fn delete_other_cursors(&self, keep: &[&str]) -> Result<usize>;

    /// Whether (schedule, fire_at) was already recorded.
    fn fire_recorded(&self, schedule: &str, fire_at: Time) -> Result<bool>;

    /// Records a fire; returns false (and changes nothing) if it was already recorded.
    #[allow(clippy::too_many_arguments)]
    fn record_fire(
        &self,
        schedule: &str,
        fire_at: Time,
        job: &str,
        outcome: &str,
        reason: Option<&str>,
        run_id: Option<RunId>,
        count: u64,
        now: Time,
    ) -> Result<bool>;

    /// The latest recorded fire of a schedule.
    fn last_fire(&self, schedule: &str) -> Result<Option<FireRecord>>;

    /// Recorded fires, newest first.
    fn fires(&self, schedule: Option<&str>, limit: u32) -> Result<Vec<FireRecord>>;

    /// Unfinished runs of `job`: (id, state), oldest first.
    fn active_runs(&self, job: &str) -> Result<Vec<(RunId, RunState)>>;

    /// Pauses a schedule; returns false if it was already paused.
    fn pause_schedule(&self, name: &str, now: Time) -> Result<bool>;

    /// Resumes a paused schedule; returns false if it was not paused.
    fn resume_schedule(&self, name: &str) -> Result<bool>;

    /// When a schedule was paused, if it is.
    fn schedule_paused(&self, name: &str) -> Result<Option<Time>>;

    /// Every paused schedule and when it was paused.
    fn paused_schedules(&self) -> Result<std::collections::BTreeMap<String, Time>>;

    /// Deletes fire records older than `before` (history pruning).
    fn purge_fires(&self, before: Time) -> Result<usize>;
}
