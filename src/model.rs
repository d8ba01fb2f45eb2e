//! The domain's words: run ids, states, priorities and triggers, shared by every module.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A run's numeric id. Ids are never reused, even after history is purged.
pub type RunId = i64;

/// How urgent a run is. Higher priorities are started first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low = 0,
    #[default]
    Normal = 1,
    High = 2,
    Critical = 3,
}

impl Priority {
    pub const ALL: [(&'static str, Priority); 4] = [
        ("critical", Priority::Critical),
        ("high", Priority::High),
        ("normal", Priority::Normal),
        ("low", Priority::Low),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// The value stored in the database (ordered: larger is more urgent).
    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn from_rank(rank: i64) -> Priority {
        match rank {
            i64::MIN..=0 => Priority::Low,
            1 => Priority::Normal,
            2 => Priority::High,
            _ => Priority::Critical,
        }
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Priority::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("unknown priority `{s}` (critical, high, normal or low)"))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a run is in its life.
///
/// `delayed` → `waiting` → `queued` → `running` → `succeeded` | `retrying` (→ `queued`) | `dead` |
/// `cancelled`. The last three and `succeeded` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Due later (`--in`, `--at`).
    Delayed,
    /// Due, but a run it depends on has not succeeded yet.
    Waiting,
    /// Ready to start, waiting for a slot.
    Queued,
    /// An attempt is executing.
    Running,
    /// A failed attempt is backing off before the next one.
    Retrying,
    /// A workflow run whose only unfinished steps sleep or wait for a signal: no process, no
    /// slot; it resumes when one of them is due.
    Suspended,
    Succeeded,
    /// Attempts exhausted (or a dependency failed): the run is in the dead-letter queue.
    Dead,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 9] = [
        RunState::Delayed,
        RunState::Waiting,
        RunState::Queued,
        RunState::Running,
        RunState::Retrying,
        RunState::Suspended,
        RunState::Succeeded,
        RunState::Dead,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Delayed => "delayed",
            RunState::Waiting => "waiting",
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Retrying => "retrying",
            RunState::Suspended => "suspended",
            RunState::Succeeded => "succeeded",
            RunState::Dead => "dead",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Finished for good: no further transition.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Dead | RunState::Cancelled
        )
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RunState::ALL
            .iter()
            .find(|st| st.as_str() == s)
            .copied()
            .ok_or_else(|| format!("unknown run state `{s}`"))
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a workflow step is.
///
/// `pending` → `running` → `succeeded` | `failed` (| back to `pending` for a retry in place);
/// `pending` → `suspended` (a sleep, a wait for a signal) → `succeeded` | `failed`;
/// `pending` → `skipped` (`if:` false) | `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Suspended,
    Cancelled,
}

impl StepState {
    pub const ALL: [StepState; 7] = [
        StepState::Pending,
        StepState::Running,
        StepState::Succeeded,
        StepState::Failed,
        StepState::Skipped,
        StepState::Suspended,
        StepState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Suspended => "suspended",
            StepState::Cancelled => "cancelled",
        }
    }

    /// Done for good in this attempt of the run.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Skipped | StepState::Cancelled
        )
    }
}

impl FromStr for StepState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StepState::ALL
            .iter()
            .find(|st| st.as_str() == s)
            .copied()
            .ok_or_else(|| format!("unknown step state `{s}`"))
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workflow step of a run, as checkpointed.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub run_id: RunId,
    pub name: String,
    /// Its position in the job's `steps:`.
    pub idx: u32,
    /// `run`, `command`, `http`, `sql`, `notify`, `sleep`, `wait_for`.
    pub kind: String,
    pub state: StepState,
    /// Executions started (retries in place and re-runs of the run included).
    pub attempts: u32,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    /// A suspended step's wake-up (sleep end, wait timeout); a pending step's retry time.
    pub wake_at: Option<Time>,
    /// The signal a `wait_for` step waits for.
    pub waiting_for: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub outputs: Option<serde_json::Value>,
    /// The run whose checkpoint this one reused (`queue:retry`).
    pub reused_from: Option<RunId>,
}

/// What created a run; passed to the job as `WORKER_TRIGGER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Fired by a schedule.
    Schedule,
    /// `worker job NAME`.
    Manual,
    /// `worker queue:add`.
    Queue,
    /// Enqueued ahead of another run by dependency expansion.
    Dependency,
    /// `worker queue:retry` of a dead run.
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Queue => "queue",
            Trigger::Dependency => "dependency",
            Trigger::Retry => "retry",
        }
    }
}

impl FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Trigger::Schedule,
            Trigger::Manual,
            Trigger::Queue,
            Trigger::Dependency,
            Trigger::Retry,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| format!("unknown trigger `{s}`"))
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `name` is a valid job (and schedule) name: `[a-z0-9][a-z0-9._-]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["report", "a", "0day", "db.backup", "sync_v2", "x-y"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "Report", "-x", ".x", "a b", "é", "a/b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn priorities_order_and_round_trip() {
        assert!(Priority::Critical > Priority::High && Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        for (name, p) in Priority::ALL {
            assert_eq!(name.parse::<Priority>().unwrap(), p);
            assert_eq!(Priority::from_rank(p.rank()), p);
        }
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
        }
    }
}

/// A point in time, UTC.
pub type Time = chrono::DateTime<chrono::Utc>;

/// One execution request of a job, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: RunId,
    pub job: String,
    pub state: RunState,
    pub priority: Priority,
    pub trigger: Trigger,
    /// Idempotency key.
    pub key: Option<String>,
    /// Counted attempts started so far (`WORKER_ATTEMPT` of the latest).
    pub attempt: u32,
    /// Total tries allowed, fixed when the run was created.
    pub max_attempts: u32,
    pub created_at: Time,
    /// When it may start (or retry).
    pub due_at: Time,
    /// Start of the first attempt.
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub exit_code: Option<i32>,
    /// Signal that ended the last attempt, if any.
    pub signal: Option<i32>,
    /// Last error, or why the run died.
    pub error: Option<String>,
    /// Extra environment (`--env`, schedule `env`).
    pub env: std::collections::BTreeMap<String, String>,
    /// Schedule that fired it, and the fire instant.
    pub schedule: Option<String>,
    pub scheduled_at: Option<Time>,
    /// Lease of the process that runs it (while running) or reserved it (foreground chains).
    pub owner: Option<String>,
    /// `queue:cancel` asked the owner to stop it.
    pub cancel_requested: bool,
    /// The run that `queue:retry` created to replace this dead one.
    pub retried_by: Option<RunId>,
    /// The dead run this one replaces.
    pub retry_of: Option<RunId>,
    /// Runs that must succeed before this one starts.
    pub depends_on: Vec<RunId>,
    /// The run's JSON input (`--input`), if any.
    pub input: Option<serde_json::Value>,
    /// Whether it is a workflow run (its job's steps are pinned with it).
    pub has_steps: bool,
    /// The id of its pinned definition, for a workflow run.
    pub definition: Option<i64>,
    /// The first run of a `queue:retry` chain this one continues (itself when `None`): names
    /// outward effects (`Idempotency-Key: worker-ORIGIN-STEP`) so that a resend is recognised.
    pub origin: Option<RunId>,
    /// Queued to resume a suspended attempt rather than to start a new one.
    pub resume: bool,
    /// A workflow run's steps, in order (loaded with the run by listings and `show`).
    pub steps: Vec<Step>,
}

impl Run {
    /// The id that names this run's outward effects (see [`Run::origin`]).
    pub fn origin_id(&self) -> RunId {
        self.origin.unwrap_or(self.id)
    }
}

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub run_id: RunId,
    /// Row sequence within the run (names the log file).
    pub seq: u32,
    /// The attempt number (`WORKER_ATTEMPT`); an uncounted interrupted attempt shares its number
    /// with the one that replaced it.
    pub number: u32,
    pub started_at: Time,
    pub finished_at: Option<Time>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// `succeeded`, `failed`, `timeout`, `cancelled`, `interrupted`, or empty while running.
    pub outcome: Option<String>,
    pub error: Option<String>,
    /// Bytes the attempt wrote, before capping.
    pub output_bytes: Option<u64>,
}

/// What an alert can be about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An attempt failed (non-zero exit, signal, timeout, failed start, lost to a crash).
    AttemptFailed,
    /// A run ended in the dead-letter queue.
    Dead,
    /// An attempt ran out of time.
    Timeout,
    /// A schedule's fire was not run.
    Missed,
    /// A schedule's fire has not succeeded within its `deadline`.
    Late,
    /// A job succeeded after its previous finished run was dead.
    Recovered,
    /// A reload was rejected.
    ConfigError,
    /// A workflow step ended `failed` (also with `allow_failure`).
    StepFailed,
}

impl EventKind {
    pub const ALL: [(&'static str, EventKind); 8] = [
        ("attempt_failed", EventKind::AttemptFailed),
        ("dead", EventKind::Dead),
        ("timeout", EventKind::Timeout),
        ("missed", EventKind::Missed),
        ("late", EventKind::Late),
        ("recovered", EventKind::Recovered),
        ("config_error", EventKind::ConfigError),
        ("step_failed", EventKind::StepFailed),
    ];

    pub fn as_str(self) -> &'static str {
        EventKind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("unknown")
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
