//! Operations on the alert outbox, throttle windows and fire deadlines.

use super::Result;
use crate::model::{RunId, RunState, Time};
use std::collections::BTreeMap;

/// An alert in the outbox (one per rule × channel × event).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub id: i64,
    pub rule: String,
    pub channel: String,
    pub job: Option<String>,
    /// The event kind, `summary` (end of a throttle window) or `test`.
    pub event: String,
    pub run_id: Option<RunId>,
    /// `pending`, `sent`, `suppressed` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<Time>,
    pub error: Option<String>,
    /// The event as JSON: what the message says.
    pub payload: String,
    pub created_at: Time,
    pub finished_at: Option<Time>,
}

/// Everything needed to insert an alert.
pub struct NewAlert<'a> {
    pub rule: &'a str,
    pub channel: &'a str,
    pub job: Option<&'a str>,
    pub event: &'a str,
    pub run_id: Option<RunId>,
    pub status: &'a str,
    pub payload: &'a str,
    pub now: Time,
}

/// A throttle window of a (rule, job).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Window {
    pub end: Option<Time>,
    /// Alerts suppressed in it, in all and per event kind.
    pub suppressed: u64,
    pub kinds: BTreeMap<String, u64>,
}

/// A fire whose deadline has passed, with its run's state.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDeadline {
    pub schedule: String,
    pub job: String,
    pub fire_at: Time,
    pub deadline_at: Time,
    pub outcome: String,
    pub reason: Option<String>,
    pub run: Option<(RunId, RunState, Option<Time>)>,
}

/// The store's operations on alerts: the SQLite and PostgreSQL transactions implement them.
pub trait AlertOps {
    fn insert_alert(&self, a: &NewAlert<'_>) -> Result<i64>;

    /// Inserts an alert unless one with the same `dedupe` key exists; returns the id of the one
    /// that holds the key (so a workflow's `notify` step is delivered once per (run, step),
    /// however often the step is retried).
    fn insert_alert_once(&self, a: &NewAlert<'_>, dedupe: &str) -> Result<i64>;

    fn window(&self, rule: &str, job: &str) -> Result<Window>;

    fn set_window(&self, rule: &str, job: &str, w: &Window) -> Result<()>;

    /// Windows that ended at or before `now`: (rule, job, window).
    fn ended_windows(&self, now: Time) -> Result<Vec<(String, String, Window)>>;

    fn next_window_end(&self) -> Result<Option<Time>>;

    /// Takes up to `limit` due pending alerts for `lease` until `lease_until`.
    fn claim_alerts(
        &self,
        lease: &str,
        now: Time,
        lease_until: Time,
        limit: u32,
    ) -> Result<Vec<AlertRow>>;

    /// Records a delivery attempt: `sent`, `failed`, or back to `pending` until `retry_at`.
    fn alert_attempted(
        &self,
        id: i64,
        now: Time,
        status: &str,
        retry_at: Option<Time>,
        error: Option<&str>,
    ) -> Result<()>;

    /// When the next pending alert is due.
    fn next_alert_due(&self) -> Result<Option<Time>>;

    fn pending_alerts(&self) -> Result<u64>;

    /// Alerts, newest first.
    fn alerts(&self, limit: u32, status: Option<&str>) -> Result<Vec<AlertRow>>;

    fn alert(&self, id: i64) -> Result<Option<AlertRow>>;

    /// The last time each rule had an alert sent.
    fn last_sent_per_rule(&self) -> Result<BTreeMap<String, Time>>;

    fn purge_alerts(&self, before: Time) -> Result<usize>;

    /// The state of the previous finished run of `job` before run `id`.
    fn previous_finished_state(&self, job: &str, id: RunId) -> Result<Option<RunState>>;

    /// Fires whose deadline is at or before `now` and not yet checked.
    fn due_deadlines(&self, now: Time) -> Result<Vec<DueDeadline>>;

    /// Marks a fire's deadline as checked.
    fn clear_deadline(&self, schedule: &str, fire_at: Time) -> Result<()>;

    fn next_deadline(&self) -> Result<Option<Time>>;

    /// Sets the deadline of a recorded fire.
    fn set_deadline(&self, schedule: &str, fire_at: Time, deadline_at: Time) -> Result<()>;
}
