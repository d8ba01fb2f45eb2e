//! Operations on runs, their dependencies and attempts.

use super::Result;
use crate::model::{Attempt, Priority, Run, RunId, RunState, Time, Trigger};
use std::collections::{BTreeMap, HashMap};

/// Everything needed to insert a run.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub job: &'a str,
    pub state: RunState,
    pub priority: Priority,
    pub trigger: Trigger,
    pub key: Option<&'a str>,
    pub max_attempts: u32,
    pub created_at: Time,
    pub due_at: Time,
    pub env: &'a BTreeMap<String, String>,
    pub schedule: Option<&'a str>,
    pub scheduled_at: Option<Time>,
    pub owner: Option<&'a str>,
    pub retry_of: Option<RunId>,
    /// For runs born final (a dependency already failed): why, and when.
    pub error: Option<&'a str>,
    pub finished_at: Option<Time>,
    /// A workflow run's pinned steps (see [`Tx::store_definition`]), its input (JSON), and the
    /// run its effects are named after (see [`Run::origin`]).
    pub definition: Option<i64>,
    pub input: Option<&'a str>,
    pub origin: Option<RunId>,
}

/// The few columns the engine needs to act on a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunBrief {
    pub id: RunId,
    pub job: String,
    pub state: RunState,
    pub attempt: u32,
    pub max_attempts: u32,
    pub owner: Option<String>,
    pub cancel_requested: bool,
    /// Some run depends on this one (`after`): its end may release or fail them.
    pub has_dependents: bool,
}

/// A queued run that could be claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedCandidate {
    pub id: RunId,
    pub job: String,
    pub priority: i64,
    pub due_at: i64,
    pub owner: Option<String>,
    /// Queued to resume a suspended attempt.
    pub resume: bool,
}

/// [`RunOps::claim_candidates`] from the running counts and the jobs with queued runs read
/// already, each job's `concurrency` from `limit` (`None`: not defined, no candidates): each
/// job's candidates page by page from its own ordered index, past the runs other owners reserved.
pub fn paged_candidates<T: RunOps + ?Sized>(
    tx: &T,
    counts: &HashMap<String, u32>,
    queued: &[String],
    limit: impl Fn(&str) -> Option<u32>,
    owner: &str,
    free: u32,
) -> Result<Vec<QueuedCandidate>> {
    let mut candidates = Vec::new();
    if free == 0 {
        return Ok(candidates);
    }
    for name in queued {
        let Some(concurrency) = limit(name) else {
            continue;
        };
        let room = concurrency.saturating_sub(counts.get(name).copied().unwrap_or(0));
        let want = room.min(free);
        if want == 0 {
            continue;
        }
        let page = want.clamp(4, 512);
        let mut after: Option<QueuedCandidate> = None;
        let mut taken = 0;
        'job: loop {
            let rows = tx.queued_of_job(name, after.as_ref(), page)?;
            let exhausted = (rows.len() as u32) < page;
            for c in &rows {
                if c.owner.as_deref().is_some_and(|o| o != owner) {
                    continue;
                }
                candidates.push(c.clone());
                taken += 1;
                if taken == want {
                    break 'job;
                }
            }
            if exhausted {
                break;
            }
            after = rows.last().cloned();
        }
    }
    Ok(candidates)
}

/// Which runs a listing shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub job: Option<String>,
    pub states: Vec<RunState>,
    /// Only finished runs, newest finished first.
    pub finished: bool,
    /// Dead runs not yet replaced by `queue:retry` (the DLQ).
    pub dlq: bool,
    pub limit: Option<u32>,
    /// Only runs with a smaller id (paging newest first).
    pub before: Option<RunId>,
    /// Newest (highest id) first, whatever else is set.
    pub newest_first: bool,
}

/// A deleted run and what names its captured output.
#[derive(Debug, Clone, PartialEq)]
pub struct Purged {
    pub id: RunId,
    /// Its attempts' log sequences.
    pub seqs: Vec<u32>,
    /// Its steps that ran: (name, executions).
    pub steps: Vec<(String, u32)>,
}

/// Counts for a one-line status, each from an index (cheap with millions of finished runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusCounts {
    pub running: u64,
    pub queued: u64,
    /// Delayed, waiting, retrying or suspended.
    pub waiting: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// Per-job outcome statistics over finished runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStats {
    pub job: String,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Nearest-rank p50 and p95 of the durations of succeeded/dead runs' last attempts, in
    /// milliseconds (computed by the database: memory does not grow with history).
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

/// The store's operations on runs: the SQLite and PostgreSQL transactions implement them.
pub trait RunOps {
    /// Inserts a run and returns its id.
    fn insert_run(&self, r: &NewRun<'_>) -> Result<RunId>;

    /// Records that `run` may start only after `dep` succeeded.
    fn insert_dep(&self, run: RunId, dep: RunId) -> Result<()>;

    /// A run with its dependencies.
    fn run(&self, id: RunId) -> Result<Option<Run>>;

    fn brief(&self, id: RunId) -> Result<Option<RunBrief>>;

    /// The briefs of several runs (unknown ones left out): one query where a query costs a
    /// round trip.
    fn briefs(&self, ids: &[RunId]) -> Result<HashMap<RunId, RunBrief>> {
        let mut out = HashMap::with_capacity(ids.len());
        for &id in ids {
            if let Some(b) = self.brief(id)? {
                out.insert(id, b);
            }
        }
        Ok(out)
    }

    /// The run of `job` holding idempotency key `key`.
    fn run_by_key(&self, job: &str, key: &str) -> Result<Option<RunId>>;

    /// The newest run of `job` that has not finished.
    fn latest_active(&self, job: &str) -> Result<Option<RunId>>;

    /// The runs `run` depends on: (id, job, state).
    fn dep_states(&self, run: RunId) -> Result<Vec<(RunId, String, RunState)>>;

    /// The runs that depend on `run`: (id, state).
    fn dependents(&self, run: RunId) -> Result<Vec<(RunId, RunState)>>;

    /// Moves a run between non-final, non-running states (`delayed`/`waiting`/`queued`).
    fn set_state(&self, id: RunId, state: RunState) -> Result<()>;

    /// Ends a run for good (`succeeded`, `dead`, `cancelled`), releasing its owner. The run's
    /// error is its final outcome's: none for a success, even after failed attempts (each
    /// attempt keeps its own).
    fn finish_run(
        &self,
        id: RunId,
        state: RunState,
        now: Time,
        error: Option<&str>,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<()>;

    /// A failed attempt will be retried at `due_at`.
    fn set_retrying(
        &self,
        id: RunId,
        due_at: Time,
        error: &str,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<()>;

    /// Puts an interrupted running run back in the queue. With `uncount`, the attempt it was
    /// making does not count against its retries.
    fn requeue(&self, id: RunId, uncount: bool, now: Time) -> Result<()>;

    /// Runs whose delay or backoff has elapsed: (id, state).
    fn due_runs(&self, now: Time) -> Result<Vec<(RunId, RunState)>>;

    /// When the next delayed or retrying run becomes due.
    fn next_due(&self) -> Result<Option<Time>>;

    /// How many runs of each job are running (whoever runs them).
    fn running_counts(&self) -> Result<HashMap<String, u32>>;

    /// The jobs that have queued runs, in name order: one index seek per job, however long the
    /// queue (so a backlog of a job that is at its limit costs a turn nothing).
    fn queued_jobs(&self) -> Result<Vec<String>>;

    /// [`RunOps::running_counts`] and [`RunOps::queued_jobs`], what a claim starts from: on
    /// PostgreSQL both sent at once, one round trip.
    fn claim_outlook(&self) -> Result<(HashMap<String, u32>, Vec<String>)> {
        Ok((self.running_counts()?, self.queued_jobs()?))
    }

    /// What a node's claim of up to `free` runs for `owner` chooses from: for each job with
    /// queued runs, its first runs in start order that no other owner has reserved — at most
    /// `free`, and at most the job's room: its concurrency in `limits` (sorted by name) less its
    /// running runs (a job missing from `limits` gets none). Returns them with the jobs that
    /// have queued runs, in name order. On PostgreSQL one statement, however many jobs wait.
    fn claim_candidates(
        &self,
        owner: &str,
        limits: &[(&str, u32)],
        free: u32,
    ) -> Result<(Vec<QueuedCandidate>, Vec<String>)> {
        let (counts, queued) = self.claim_outlook()?;
        let limit = |name: &str| {
            limits
                .binary_search_by(|(job, _)| (*job).cmp(name))
                .ok()
                .map(|i| limits[i].1)
        };
        let candidates = paged_candidates(self, &counts, &queued, limit, owner, free)?;
        Ok((candidates, queued))
    }

    /// Queued runs of `job` in start order (priority, then due time, then id), after the
    /// candidate `after` (keyset pagination), at most `limit`.
    fn queued_of_job(
        &self,
        job: &str,
        after: Option<&QueuedCandidate>,
        limit: u32,
    ) -> Result<Vec<QueuedCandidate>>;

    /// Marks a queued run running under `owner` and opens its next attempt.
    /// Returns (attempt number, attempt row sequence).
    /// Returns the run as it now is (without its `depends_on`, which starting it does not need)
    /// and the attempt row's sequence.
    ///
    /// With `resume`, the run goes on with the attempt it was suspended in: no new attempt.
    fn start_attempt(&self, id: RunId, owner: &str, now: Time, resume: bool) -> Result<(Run, u32)>;

    /// [`RunOps::start_attempt`] of each of `runs` (its id, whether it resumes), in order: all
    /// sent at once where a statement costs a round trip.
    fn start_attempts(
        &self,
        runs: &[(RunId, bool)],
        owner: &str,
        now: Time,
    ) -> Result<Vec<(Run, u32)>> {
        runs.iter()
            .map(|&(id, resume)| self.start_attempt(id, owner, now, resume))
            .collect()
    }

    /// Closes an attempt with its outcome.
    #[allow(clippy::too_many_arguments)]
    fn end_attempt(
        &self,
        run: RunId,
        seq: u32,
        now: Time,
        outcome: &str,
        exit_code: Option<i32>,
        signal: Option<i32>,
        error: Option<&str>,
        output_bytes: Option<u64>,
    ) -> Result<()>;

    /// Keeps an attempt's captured output in the store (a shared store: so that any host can
    /// read it once the attempt ended).
    fn set_attempt_output(&self, run: RunId, seq: u32, output: &[u8]) -> Result<()>;

    /// An attempt's output kept in the store, if it was.
    fn attempt_output(&self, run: RunId, seq: u32) -> Result<Option<Vec<u8>>>;

    /// The open attempt (latest row) of a run: (seq, number).
    fn open_attempt(&self, run: RunId) -> Result<Option<(u32, u32)>>;

    /// Running runs, with their owners.
    fn running(&self) -> Result<Vec<RunBrief>>;

    /// Distinct owners of running or reserved runs.
    fn owners(&self) -> Result<Vec<String>>;

    /// Not-yet-started runs reserved by `owner`.
    fn reserved_by(&self, owner: &str) -> Result<Vec<RunId>>;

    /// Gives a reserved run to whoever claims it first (the daemon, usually).
    fn release(&self, id: RunId) -> Result<()>;

    /// Running runs of `owner` that `queue:cancel` asked to stop.
    fn cancel_requests(&self, owner: &str) -> Result<Vec<RunId>>;

    fn request_cancel(&self, id: RunId) -> Result<()>;

    /// Marks dead run `id` as replaced by `by` (it leaves the DLQ).
    fn set_retried_by(&self, id: RunId, by: RunId) -> Result<()>;

    /// Runs matching `filter`, with their dependencies.
    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>>;

    /// The ids of the runs in the dead-letter queue (of `job`), oldest death first.
    fn dlq_ids(&self, job: Option<&str>) -> Result<Vec<RunId>>;

    /// How many runs match `filter` (its limit aside).
    fn count_runs(&self, filter: &RunFilter) -> Result<u64>;

    /// Ids of unfinished runs below `before`, newest first, at most `limit`: optionally only
    /// those of `job` and in `states` (each must be unfinished). Pages through a bulk operation;
    /// newest first puts every dependent before the runs it depends on (they are always older).
    fn unfinished_ids(
        &self,
        before: RunId,
        job: Option<&str>,
        states: &[RunState],
        limit: u32,
    ) -> Result<Vec<RunId>>;

    /// The attempts of a run, in order.
    fn attempts(&self, run: RunId) -> Result<Vec<Attempt>>;

    /// Number of runs in each state.
    fn state_counts(&self) -> Result<BTreeMap<String, u64>>;

    /// Number of runs of each job in each state.
    fn job_state_counts(&self) -> Result<Vec<(String, String, u64)>>;

    /// Outcome counts and last-attempt durations per job, over finished runs.
    fn job_stats(&self) -> Result<Vec<JobStats>>;

    /// Deletes finished runs (and their dependency links and attempts) finished before
    /// `before`; with `dead_only`, only dead runs. Returns the deleted ids (to remove their logs).
    fn purge(&self, before: Option<Time>, dead_only: bool) -> Result<Vec<Purged>>;

    /// Log sequences of the attempts of run `id` (to locate their files).
    fn attempt_seqs(&self, id: RunId) -> Result<Vec<u32>>;

    /// The latest finished run of each job: (job, state, finished_at).
    fn last_finished_per_job(&self) -> Result<BTreeMap<String, (RunState, Time)>>;

    /// Counts for a one-line status.
    fn status_counts(&self) -> Result<StatusCounts>;

    /// A stored fact (see the `meta` table).
    fn meta(&self, key: &str) -> Result<Option<String>>;

    fn set_meta(&self, key: &str, value: &str) -> Result<()>;
}
