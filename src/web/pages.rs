//! One handler per view of SPEC 9, each a thin adapter: one read transaction over the store's
//! queries, [`crate::objects`] for the JSON, [`super::views`] for presentation, a template.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::graph::{self, Graph, StepIn};
use super::views::{AlertView, AttemptView, JobView, RunView, ScheduleView, StepView};
use crate::api::Shared;
use crate::api::routes::with_store;
use crate::config::Config;
use crate::model::{RunId, RunState, Time};
use crate::objects;
use crate::store::{RunFilter, StoreError, Tx};
use crate::workflow::model::Workflow;

type S = Arc<Shared>;

/// Runs per page of a list.
const PAGE: u32 = 50;
/// Rows of each list on the overview.
const OVERVIEW_ROWS: u32 = 10;
/// Runs of a retry chain shown on a run's page, each way.
const CHAIN: usize = 25;
/// Alerts per page, and the most one page may show.
const ALERTS: u32 = 100;
const MAX_ALERTS: u32 = 1000;

/// Why a page cannot be shown: its status and what to do about it.
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<QueryRejection> for PageError {
    fn from(e: QueryRejection) -> PageError {
        PageError::bad(e.body_text())
    }
}

impl From<PathRejection> for PageError {
    fn from(e: PathRejection) -> PageError {
        PageError::bad(e.body_text())
    }
}

impl axum::response::IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            l: Layout::new("", format!("{}", self.status)),
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("error"),
            message: self.message,
        };
        match page.render() {
            Ok(body) => super::html(self.status, body),
            Err(e) => super::html(self.status, format!("<p>{e}</p>")),
        }
    }
}

type PageResult = Result<Response, PageError>;

/// Reads with `f` in one read transaction, with the configuration and the time now.
async fn read<T, F>(s: &S, f: F) -> Result<T, PageError>
where
    T: Send + 'static,
    F: FnOnce(&Tx<'_>, &Config, Time) -> Result<T, StoreError> + Send + 'static,
{
    with_store(s, move |store, config, _| {
        let now = chrono::Utc::now();
        Ok(store.read(|tx| f(tx, config, now))?)
    })
    .await
    .map_err(|e| PageError::new(e.status, e.message))
}

fn render(t: &impl Template) -> PageResult {
    t.render()
        .map(|body| super::html(StatusCode::OK, body))
        .map_err(|e| {
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rendering the page: {e}"),
            )
        })
}

/// What every page's frame needs.
pub struct Layout {
    /// The section of the navigation it belongs to.
    pub nav: &'static str,
    pub title: String,
    pub v: &'static str,
    pub version: &'static str,
}

impl Layout {
    fn new(nav: &'static str, title: impl Into<String>) -> Layout {
        Layout {
            nav,
            title: title.into(),
            v: super::asset_version(),
            version: crate::VERSION,
        }
    }
}

/// An empty query value means "not given" (plain GET forms send `job=`).
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn parse_before(v: &Option<String>) -> Result<Option<RunId>, PageError> {
    given(v)
        .map(|b| {
            b.parse::<RunId>()
                .map_err(|_| PageError::bad(format!("before: `{b}` is not a run id")))
        })
        .transpose()
}

fn runs_of(runs: &[crate::model::Run]) -> Vec<RunView> {
    runs.iter()
        .map(|r| RunView::of(&objects::run_json(r)))
        .collect()
}

// ---- overview ----

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    l: Layout,
    /// Runs in each state, every state listed.
    counts: Vec<(&'static str, u64)>,
    running: Vec<RunView>,
    failures: Vec<RunView>,
    fires: Vec<ScheduleView>,
    alerts: Vec<AlertView>,
}

/// Runs per state summed over the jobs of `objects::stats` (what `/api/v1/queue/stats` gives the
/// script, so the numbers it refreshes are the same).
fn state_totals(stats: &[Value]) -> Vec<(&'static str, u64)> {
    RunState::ALL
        .iter()
        .map(|st| {
            let n = stats
                .iter()
                .filter_map(|j| j["counts"][st.as_str()].as_u64())
                .sum();
            (st.as_str(), n)
        })
        .collect()
}

pub async fn overview(State(s): State<S>) -> PageResult {
    let (stats, running, failures, mut schedules, alerts) = read(&s, |tx, config, now| {
        let recent = |states: Vec<RunState>| RunFilter {
            states,
            limit: Some(OVERVIEW_ROWS),
            newest_first: true,
            ..Default::default()
        };
        Ok((
            objects::stats(tx)?,
            tx.list_runs(&recent(vec![RunState::Running]))?,
            tx.list_runs(&recent(vec![RunState::Dead]))?,
            objects::schedules(tx, config, 1, now)?,
            tx.alerts(OVERVIEW_ROWS, Some("failed"))?
                .iter()
                .map(|a| objects::alert(a, &config.secrets))
                .collect::<Vec<_>>(),
        ))
    })
    .await?;
    // Soonest first; each schedule's next fire is RFC 3339 with its zone's offset.
    schedules.retain(|o| o["next"][0].is_string());
    schedules.sort_by_key(|o| {
        o["next"][0]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    });
    schedules.truncate(OVERVIEW_ROWS as usize);
    render(&Overview {
        l: Layout::new("overview", "Overview"),
        counts: state_totals(&stats),
        running: runs_of(&running),
        failures: runs_of(&failures),
        fires: schedules.iter().map(ScheduleView::of).collect(),
        alerts: alerts.iter().map(AlertView::of).collect(),
    })
}

// ---- jobs ----

#[derive(Template)]
#[template(path = "jobs.html")]
struct Jobs {
    l: Layout,
    jobs: Vec<JobView>,
}

pub async fn jobs(State(s): State<S>) -> PageResult {
    let jobs = read(&s, objects::jobs).await?;
    render(&Jobs {
        l: Layout::new("jobs", "Jobs"),
        jobs: jobs.iter().map(JobView::of).collect(),
    })
}

// ---- runs ----

#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    job: Option<String>,
    state: Option<String>,
    before: Option<String>,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct Runs {
    l: Layout,
    job: String,
    state: String,
    jobs: Vec<String>,
    states: Vec<&'static str>,
    runs: Vec<RunView>,
    /// This page is not the newest (`before` given).
    paged: bool,
    /// The `before` of the next (older) page, when there may be one.
    older: Option<RunId>,
    /// The address of the older page.
    older_href: String,
    newest_href: String,
}

impl Runs {
    /// A state filter the menu does not list (several states, comma-separated).
    fn custom_state(&self) -> bool {
        !self.state.is_empty() && !self.states.contains(&self.state.as_str())
    }
}

/// `/runs?job=&state=` with the other parameters added.
fn runs_href(job: &str, state: &str, before: Option<RunId>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if !job.is_empty() {
        q.append_pair("job", job);
    }
    if !state.is_empty() {
        q.append_pair("state", state);
    }
    if let Some(b) = before {
        q.append_pair("before", &b.to_string());
    }
    let q = q.finish();
    if q.is_empty() {
        "/runs".into()
    } else {
        format!("/runs?{q}")
    }
}

pub async fn runs(State(s): State<S>, q: Result<Query<RunsQuery>, QueryRejection>) -> PageResult {
    let Query(q) = q?;
    let job = given(&q.job).unwrap_or("").to_string();
    let state = given(&q.state).unwrap_or("").to_string();
    let states = state
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim().parse::<RunState>().map_err(|e| {
                PageError::bad(format!(
                    "state: {e}; one of {}",
                    RunState::ALL.map(|s| s.as_str()).join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let before = parse_before(&q.before)?;
    let filter = RunFilter {
        job: (!job.is_empty()).then(|| job.clone()),
        states,
        limit: Some(PAGE),
        before,
        newest_first: true,
        ..Default::default()
    };
    let (runs, jobs) = read(&s, move |tx, config, _| {
        Ok((
            tx.list_runs(&filter)?,
            config.jobs.keys().cloned().collect::<Vec<_>>(),
        ))
    })
    .await?;
    let older = (runs.len() == PAGE as usize)
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    render(&Runs {
        l: Layout::new(
            "runs",
            if job.is_empty() {
                "Runs".to_string()
            } else {
                format!("Runs of {job}")
            },
        ),
        older_href: runs_href(&job, &state, older),
        newest_href: runs_href(&job, &state, None),
        jobs,
        states: RunState::ALL.map(|s| s.as_str()).to_vec(),
        runs: runs_of(&runs),
        paged: before.is_some(),
        older,
        job,
        state,
    })
}

// ---- one run ----

/// The parts of a run's page that change while it runs (also served alone, as a fragment the
/// script swaps in).
#[derive(Template)]
#[template(path = "run_live.html")]
struct RunLive {
    r: RunView,
    elapsed: Option<String>,
    attempts: Vec<AttemptView>,
    steps: Vec<StepView>,
    graph: Option<Graph>,
    chain: Vec<RunView>,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    l: Layout,
    live: RunLive,
    /// Step names, for "retry from" and the output selector.
    step_names: Vec<String>,
}

/// A run's page data: the run with attempts (`objects::run_detail`), its pinned graph, and the
/// runs of its retry chain, oldest first.
fn run_data(tx: &Tx<'_>, id: RunId, now: Time) -> Result<Option<RunLive>, StoreError> {
    let Some(run) = tx.run(id)? else {
        return Ok(None);
    };
    let attempts = tx.attempts(id)?;
    let detail = objects::run_detail(&run, &attempts, now);
    // The graph the run was created with (its pinned definition), else the steps in order.
    let workflow: Option<Workflow> = if run.has_steps {
        tx.definition(id)?
            .and_then(|(_, text)| serde_json::from_str(&text).ok())
    } else {
        None
    };
    let step_objects: Vec<Value> = detail["steps"].as_array().cloned().unwrap_or_default();
    let index: BTreeMap<String, usize> = step_objects
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o["name"].as_str().map(|n| (n.to_string(), i)))
        .collect();
    let needs_of = |name: &str, i: usize| -> Vec<String> {
        match &workflow {
            Some(w) => w
                .step(name)
                .map(|(_, d)| {
                    d.needs
                        .iter()
                        .filter_map(|&n| w.steps.get(n).map(|s| s.name.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            None if i > 0 => step_objects[i - 1]["name"]
                .as_str()
                .map(|n| vec![n.to_string()])
                .unwrap_or_default(),
            None => Vec::new(),
        }
    };
    let steps: Vec<StepView> = step_objects
        .iter()
        .enumerate()
        .map(|(i, o)| StepView::of(o, needs_of(o["name"].as_str().unwrap_or(""), i)))
        .collect();
    let graph = run.has_steps.then(|| {
        graph::layout(
            &steps
                .iter()
                .map(|s| StepIn {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    state: s.state.clone(),
                    needs: s
                        .needs
                        .iter()
                        .filter_map(|n| index.get(n).copied())
                        .collect(),
                })
                .collect::<Vec<_>>(),
        )
    });
    // The retry chain: back through `retry_of`, forward through `retried_by`.
    let mut back = Vec::new();
    let mut cur = run.retry_of;
    while let Some(id) = cur.filter(|_| back.len() < CHAIN) {
        let Some(r) = tx.run(id)? else { break };
        cur = r.retry_of;
        back.push(r);
    }
    back.reverse();
    let mut chain = back;
    chain.push(run.clone());
    let mut cur = run.retried_by;
    let mut ahead = 0;
    while let Some(id) = cur.filter(|_| ahead < CHAIN) {
        let Some(r) = tx.run(id)? else { break };
        cur = r.retried_by;
        chain.push(r);
        ahead += 1;
    }
    Ok(Some(RunLive {
        r: RunView::of(&detail),
        elapsed: detail["elapsed_ms"].as_i64().map(super::views::duration_ms),
        attempts: detail["attempts"]
            .as_array()
            .map(|a| a.iter().map(AttemptView::of).collect())
            .unwrap_or_default(),
        steps,
        graph,
        chain: if chain.len() > 1 {
            runs_of(&chain)
        } else {
            Vec::new()
        },
    }))
}

async fn load_run(s: &S, id: RunId) -> Result<RunLive, PageError> {
    read(s, move |tx, _, now| run_data(tx, id, now))
        .await?
        .ok_or_else(|| {
            PageError::new(
                StatusCode::NOT_FOUND,
                format!("run {id} does not exist (it may have been pruned from the history)"),
            )
        })
}

pub async fn run(State(s): State<S>, id: Result<Path<RunId>, PathRejection>) -> PageResult {
    let Path(id) = id?;
    let live = load_run(&s, id).await?;
    render(&RunPage {
        l: Layout::new("runs", format!("Run {id} · {}", live.r.job)),
        step_names: live.steps.iter().map(|s| s.name.clone()).collect(),
        live,
    })
}

/// The changing part of a run's page alone.
pub async fn run_live(State(s): State<S>, id: Result<Path<RunId>, PathRejection>) -> PageResult {
    let Path(id) = id?;
    render(&load_run(&s, id).await?)
}

#[derive(Template)]
#[template(path = "run_row.html")]
struct RunRow {
    r: RunView,
}

/// A run as a row of a runs table (the script inserts the runs that appear).
pub async fn run_row(State(s): State<S>, id: Result<Path<RunId>, PathRejection>) -> PageResult {
    let Path(id) = id?;
    let run = read(&s, move |tx, _, _| {
        Ok(tx.run(id)?.map(|r| objects::run_json(&r)))
    })
    .await?
    .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, format!("run {id} does not exist")))?;
    render(&RunRow {
        r: RunView::of(&run),
    })
}

// ---- schedules ----

#[derive(Template)]
#[template(path = "schedules.html")]
struct Schedules {
    l: Layout,
    schedules: Vec<ScheduleView>,
}

/// Next fires listed per schedule.
const NEXT_FIRES: usize = 3;

pub async fn schedules(State(s): State<S>) -> PageResult {
    let list = read(&s, |tx, config, now| {
        objects::schedules(tx, config, NEXT_FIRES, now)
    })
    .await?;
    render(&Schedules {
        l: Layout::new("schedules", "Schedules"),
        schedules: list.iter().map(ScheduleView::of).collect(),
    })
}

// ---- dead letters ----

#[derive(Debug, Default, Deserialize)]
pub struct DlqQuery {
    job: Option<String>,
    before: Option<String>,
}

#[derive(Template)]
#[template(path = "dlq.html")]
struct Dlq {
    l: Layout,
    job: String,
    jobs: Vec<String>,
    runs: Vec<RunView>,
    total: u64,
    paged: bool,
    older: Option<RunId>,
    older_href: String,
    newest_href: String,
    /// The API address that retries them all (of `job`).
    retry_all: String,
}

fn dlq_href(job: &str, before: Option<RunId>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if !job.is_empty() {
        q.append_pair("job", job);
    }
    if let Some(b) = before {
        q.append_pair("before", &b.to_string());
    }
    let q = q.finish();
    if q.is_empty() {
        "/dlq".into()
    } else {
        format!("/dlq?{q}")
    }
}

pub async fn dlq(State(s): State<S>, q: Result<Query<DlqQuery>, QueryRejection>) -> PageResult {
    let Query(q) = q?;
    let job = given(&q.job).unwrap_or("").to_string();
    let before = parse_before(&q.before)?;
    let filter = RunFilter {
        job: (!job.is_empty()).then(|| job.clone()),
        dlq: true,
        limit: Some(PAGE),
        before,
        newest_first: true,
        ..Default::default()
    };
    let (runs, total, jobs) = read(&s, move |tx, config, _| {
        let total = tx.count_runs(&RunFilter {
            limit: None,
            before: None,
            ..filter.clone()
        })?;
        Ok((
            tx.list_runs(&filter)?,
            total,
            config.jobs.keys().cloned().collect::<Vec<_>>(),
        ))
    })
    .await?;
    let older = (runs.len() == PAGE as usize)
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    let retry_all = if job.is_empty() {
        "/api/v1/dlq/retry".to_string()
    } else {
        let q: String = url::form_urlencoded::byte_serialize(job.as_bytes()).collect();
        format!("/api/v1/dlq/retry?job={q}")
    };
    render(&Dlq {
        l: Layout::new("dlq", "Dead letters"),
        older_href: dlq_href(&job, older),
        newest_href: dlq_href(&job, None),
        jobs,
        runs: runs_of(&runs),
        total,
        paged: before.is_some(),
        older,
        retry_all,
        job,
    })
}

// ---- alerts ----

#[derive(Debug, Default, Deserialize)]
pub struct AlertsQuery {
    status: Option<String>,
    limit: Option<String>,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct Alerts {
    l: Layout,
    status: String,
    statuses: [&'static str; 4],
    alerts: Vec<AlertView>,
    /// The address that shows more, when there may be more.
    more: Option<String>,
}

pub async fn alerts(
    State(s): State<S>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = q?;
    const STATUSES: [&str; 4] = ["pending", "sent", "suppressed", "failed"];
    let status = given(&q.status).unwrap_or("").to_string();
    if !status.is_empty() && !STATUSES.contains(&status.as_str()) {
        return Err(PageError::bad(format!(
            "status: `{status}` is not one of {}",
            STATUSES.join(", ")
        )));
    }
    let limit = match given(&q.limit) {
        None => ALERTS,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_ALERTS).contains(n))
            .ok_or_else(|| {
                PageError::bad(format!(
                    "limit: `{l}` is not a number from 1 to {MAX_ALERTS}"
                ))
            })?,
    };
    let st = status.clone();
    let list = read(&s, move |tx, config, _| {
        Ok(tx
            .alerts(limit, (!st.is_empty()).then_some(st.as_str()))?
            .iter()
            .map(|a| objects::alert(a, &config.secrets))
            .collect::<Vec<_>>())
    })
    .await?;
    let more = (list.len() == limit as usize && limit < MAX_ALERTS).then(|| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if !status.is_empty() {
            q.append_pair("status", &status);
        }
        q.append_pair("limit", &(limit * 2).min(MAX_ALERTS).to_string());
        format!("/alerts?{}", q.finish())
    });
    render(&Alerts {
        l: Layout::new("alerts", "Alerts"),
        status,
        statuses: STATUSES,
        alerts: list.iter().map(AlertView::of).collect(),
        more,
    })
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    l: Layout,
    status: u16,
    reason: &'static str,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn totals_sum_the_jobs_and_name_every_state() {
        let stats = vec![
            json!({"job": "a", "counts": {"succeeded": 3, "dead": 1}}),
            json!({"job": "b", "counts": {"succeeded": 2, "running": 1}}),
        ];
        let t: BTreeMap<_, _> = state_totals(&stats).into_iter().collect();
        assert_eq!(t.len(), RunState::ALL.len());
        assert_eq!(t["succeeded"], 5);
        assert_eq!(t["dead"], 1);
        assert_eq!(t["running"], 1);
        assert_eq!(t["queued"], 0);
    }

    #[test]
    fn list_addresses_keep_the_filters() {
        assert_eq!(runs_href("", "", None), "/runs");
        assert_eq!(
            runs_href("report", "dead,cancelled", Some(40)),
            "/runs?job=report&state=dead%2Ccancelled&before=40"
        );
        assert_eq!(dlq_href("a b", None), "/dlq?job=a+b");
    }
}
