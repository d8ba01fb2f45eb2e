//! Enqueuing a run: idempotency keys, delays, and dependency expansion.

use std::collections::{BTreeMap, HashMap};

use crate::config::{Config, JobDef};
use crate::model::{Priority, RunId, RunState, Time, Trigger};
use crate::store::{NewRun, StoreError, Tx};

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct Request {
    pub job: String,
    pub trigger: Trigger,
    /// Overrides the job's priority.
    pub priority: Option<Priority>,
    /// Not before this instant (`--in`, `--at`); `None` is now.
    pub due_at: Option<Time>,
    /// Idempotency key.
    pub key: Option<String>,
    /// Extra runs to wait for (`--after`).
    pub after: Vec<RunId>,
    pub env: BTreeMap<String, String>,
    /// Schedule name and fire instant, for scheduled runs.
    pub schedule: Option<(String, Time)>,
    /// Enqueue (or wait for) runs of the job's `depends_on` ahead of it.
    pub expand_deps: bool,
    /// Reserve the runs for this lease (a foreground `worker job`), so the daemon leaves them.
    pub owner: Option<String>,
    /// One attempt only, whatever the job's retry policy (`worker job --no-retry`).
    pub no_retry: bool,
    /// The dead run this one replaces (`queue:retry`).
    pub retry_of: Option<RunId>,
    /// The run's JSON input, already checked against the job's `input:` (dependency runs get
    /// only their own defaults).
    pub input: Option<serde_json::Value>,
    /// The run whose outward effects this one continues (`queue:retry` of a workflow run).
    pub origin: Option<RunId>,
}

impl Request {
    pub fn new(job: impl Into<String>, trigger: Trigger) -> Request {
        Request {
            job: job.into(),
            trigger,
            priority: None,
            due_at: None,
            key: None,
            after: Vec::new(),
            env: BTreeMap::new(),
            schedule: None,
            expand_deps: true,
            owner: None,
            no_retry: false,
            retry_of: None,
            input: None,
            origin: None,
        }
    }
}

/// What enqueuing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: RunId,
    /// The key was already held: `id` is the existing run and nothing was created.
    pub existing: bool,
    /// Dependency runs created ahead of it.
    pub created_deps: Vec<RunId>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("unknown job `{0}`")]
    UnknownJob(String),
    #[error("run {0} does not exist")]
    UnknownRun(RunId),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a run can start, given the states of the runs it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Waiting,
    /// A dependency ended dead or cancelled: the run dies with this reason.
    Failed(String),
}

/// Pure: readiness from dependency states (id, job, state).
pub fn readiness(deps: &[(RunId, String, RunState)]) -> Readiness {
    if let Some((id, job, _)) = deps
        .iter()
        .find(|(_, _, s)| matches!(s, RunState::Dead | RunState::Cancelled))
    {
        return Readiness::Failed(dependency_failed(job, *id));
    }
    if deps.iter().all(|(_, _, s)| *s == RunState::Succeeded) {
        Readiness::Ready
    } else {
        Readiness::Waiting
    }
}

/// The reason a dependent dies with.
pub fn dependency_failed(job: &str, id: RunId) -> String {
    format!("dependency {job} run {id} failed")
}

/// Enqueues `req` in `tx`.
pub fn enqueue(
    tx: &Tx<'_>,
    config: &Config,
    req: &Request,
    now: Time,
) -> Result<Enqueued, EnqueueError> {
    let job = config
        .job(&req.job)
        .ok_or_else(|| EnqueueError::UnknownJob(req.job.clone()))?;
    if let Some(key) = &req.key
        && let Some(id) = tx.run_by_key(&req.job, key)?
    {
        return Ok(Enqueued {
            id,
            existing: true,
            created_deps: Vec::new(),
        });
    }
    for &after in &req.after {
        if tx.brief(after)?.is_none() {
            return Err(EnqueueError::UnknownRun(after));
        }
    }
    let mut expansion = Expansion {
        tx,
        config,
        req,
        now,
        memo: HashMap::new(),
        definitions: HashMap::new(),
        created: Vec::new(),
    };
    let priority = req.priority.unwrap_or(job.priority);
    let spec = RunSpec {
        trigger: req.trigger,
        priority,
        key: req.key.as_deref(),
        env: &req.env,
        schedule: req.schedule.as_ref().map(|(s, t)| (s.as_str(), *t)),
        after: &req.after,
        retry_of: req.retry_of,
    };
    let id = expansion.create(job, &spec)?;
    Ok(Enqueued {
        id,
        existing: false,
        created_deps: expansion.created,
    })
}

/// The per-run part of a request (the rest is shared by the whole expansion).
struct RunSpec<'a> {
    trigger: Trigger,
    priority: Priority,
    key: Option<&'a str>,
    env: &'a BTreeMap<String, String>,
    schedule: Option<(&'a str, Time)>,
    after: &'a [RunId],
    retry_of: Option<RunId>,
}

struct Expansion<'t, 'c> {
    tx: &'t Tx<'c>,
    config: &'t Config,
    req: &'t Request,
    now: Time,
    /// Job → the run this expansion depends on for it (found active, or created).
    memo: HashMap<String, RunId>,
    /// Definition text → its stored id (`queue:add --count` stores one definition, once).
    definitions: HashMap<String, i64>,
    created: Vec<RunId>,
}

impl Expansion<'_, '_> {
    fn definition_id(&mut self, text: &str) -> Result<i64, EnqueueError> {
        if let Some(&id) = self.definitions.get(text) {
            return Ok(id);
        }
        let id = self.tx.store_definition(text)?;
        self.definitions.insert(text.to_string(), id);
        Ok(id)
    }

    fn create(&mut self, job: &JobDef, spec: &RunSpec<'_>) -> Result<RunId, EnqueueError> {
        let mut dep_ids: Vec<RunId> = Vec::new();
        if self.req.expand_deps {
            for dep in job.dependency_names() {
                let id = self.resolve(dep, spec.priority)?;
                dep_ids.push(id);
            }
        }
        for &a in spec.after {
            if !dep_ids.contains(&a) {
                dep_ids.push(a);
            }
        }
        let mut dep_states = Vec::with_capacity(dep_ids.len());
        for &d in &dep_ids {
            let b = self.tx.brief(d)?.ok_or(EnqueueError::UnknownRun(d))?;
            dep_states.push((d, b.job, b.state));
        }
        let due_at = self
            .req
            .due_at
            .filter(|t| *t > self.now)
            .unwrap_or(self.now);
        let (state, error) = if due_at > self.now {
            (RunState::Delayed, None)
        } else {
            match readiness(&dep_states) {
                Readiness::Ready => (RunState::Queued, None),
                Readiness::Waiting => (RunState::Waiting, None),
                Readiness::Failed(reason) => (RunState::Dead, Some(reason)),
            }
        };
        // The requested run gets the request's input; a dependency run only its own defaults.
        let is_target = job.name == self.req.job;
        let input = match (
            &job.input,
            is_target.then_some(self.req.input.as_ref()).flatten(),
        ) {
            (_, Some(given)) => Some(given.clone()),
            (Some(spec), None) => Some(
                crate::workflow::model::InputSpec::check(
                    Some(spec),
                    serde_json::Value::Object(Default::default()),
                )
                .map_err(|e| EnqueueError::Input(format!("job `{}`: {e}", job.name)))?,
            ),
            (None, None) => None,
        };
        let input_text = input.as_ref().map(serde_json::Value::to_string);
        let workflow = job.workflow();
        let definition = match workflow {
            Some(w) => {
                let text = serde_json::to_string(w.as_ref())
                    .map_err(|e| EnqueueError::Store(StoreError::Corrupt(e.to_string())))?;
                Some(self.definition_id(&text)?)
            }
            None => None,
        };
        let max_attempts = if self.req.no_retry {
            1
        } else {
            job.retry.attempts
        };
        let id = self.tx.insert_run(&NewRun {
            job: &job.name,
            state,
            priority: spec.priority,
            trigger: spec.trigger,
            key: spec.key,
            max_attempts,
            created_at: self.now,
            due_at,
            env: spec.env,
            schedule: spec.schedule.map(|(s, _)| s),
            scheduled_at: spec.schedule.map(|(_, t)| t),
            owner: self.req.owner.as_deref(),
            retry_of: spec.retry_of,
            error: error.as_deref(),
            finished_at: error.as_ref().map(|_| self.now),
            definition,
            input: input_text.as_deref(),
            origin: is_target.then_some(self.req.origin).flatten(),
        })?;
        if let Some(w) = workflow {
            self.tx.insert_steps(id, w)?;
        }
        for d in dep_ids {
            self.tx.insert_dep(id, d)?;
        }
        if let Some(reason) = error {
            let mut e =
                crate::alert::Event::new(crate::model::EventKind::Dead, Some(&job.name), self.now);
            e.run_id = Some(id);
            e.reason = Some(reason);
            crate::alert::raise(self.tx, self.config, e, self.now)?;
        }
        Ok(id)
    }

    /// The run a dependent should wait for: an unfinished run of `job`, or a new one.
    fn resolve(&mut self, job_name: &str, requester: Priority) -> Result<RunId, EnqueueError> {
        if let Some(&id) = self.memo.get(job_name) {
            return Ok(id);
        }
        let id = match self.tx.latest_active(job_name)? {
            Some(id) => id,
            None => {
                let config = self.config;
                let job = config
                    .job(job_name)
                    .ok_or_else(|| EnqueueError::UnknownJob(job_name.to_string()))?;
                let empty = BTreeMap::new();
                let spec = RunSpec {
                    trigger: Trigger::Dependency,
                    // A dependency is at least as urgent as what waits for it.
                    priority: job.priority.max(requester),
                    key: None,
                    env: &empty,
                    schedule: None,
                    after: &[],
                    retry_of: None,
                };
                let id = self.create(job, &spec)?;
                self.created.push(id);
                id
            }
        };
        self.memo.insert(job_name.to_string(), id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(id: RunId, s: RunState) -> (RunId, String, RunState) {
        (id, format!("j{id}"), s)
    }

    #[test]
    fn readiness_of_dependencies() {
        assert_eq!(readiness(&[]), Readiness::Ready);
        assert_eq!(
            readiness(&[dep(1, RunState::Succeeded), dep(2, RunState::Succeeded)]),
            Readiness::Ready
        );
        assert_eq!(
            readiness(&[dep(1, RunState::Succeeded), dep(2, RunState::Running)]),
            Readiness::Waiting
        );
        assert_eq!(readiness(&[dep(1, RunState::Retrying)]), Readiness::Waiting);
        assert_eq!(
            readiness(&[dep(1, RunState::Queued), dep(7, RunState::Dead)]),
            Readiness::Failed("dependency j7 run 7 failed".into())
        );
        assert_eq!(
            readiness(&[dep(3, RunState::Cancelled)]),
            Readiness::Failed("dependency j3 run 3 failed".into())
        );
    }
}
