//! The routes: the API under `/api/v1` (documented by OpenAPI, generated from the handlers'
//! annotations), `/healthz`, `/login` and `/logout`.
//!
//! Every handler reaches the data through [`crate::ops`] (changes) or the store's queries and
//! [`crate::objects`] (reads): the same code as the command line, so the two cannot disagree.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Shared;
use super::error::{ApiError, ApiResult};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::model::{RunId, RunState, Trigger};
use crate::objects;
use crate::ops::{self, OpError, RetryTarget, RunOptions};
use crate::queue::lifecycle::CancelResult;
use crate::store::{RunFilter, Store, StoreError};

/// The largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Runs listed when a request does not say, and the most it may ask for.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;
/// How long `/healthz` waits for the engine's loop to answer.
const HEALTH_WAIT: Duration = Duration::from_secs(5);

type S = Arc<Shared>;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "worker",
        description = "The HTTP API of the worker daemon: the same operations and JSON objects as \
                       the command line's `--json`. Every route but `/healthz` needs \
                       `Authorization: Bearer TOKEN` (or the dashboard's session cookie)."
    ),
    security(("bearer" = [])),
    modifiers(&BearerScheme)
)]
struct Doc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// The API's routes (paths relative to `/api/v1`).
fn api() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(enqueue))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(run_logs))
        .routes(routes!(cancel_run))
        .routes(routes!(retry_run))
        .routes(routes!(signal_run))
        .routes(routes!(list_nodes))
        .routes(routes!(list_schedules))
        .routes(routes!(pause_schedule))
        .routes(routes!(resume_schedule))
        .routes(routes!(trigger_schedule))
        .routes(routes!(queue_stats))
        .routes(routes!(list_dlq))
        .routes(routes!(retry_dlq))
        .routes(routes!(list_alerts))
        .routes(routes!(super::events::events))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document (built once): the API, and `/healthz`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        OpenApiRouter::<S>::with_openapi(Doc::openapi())
            .nest("/api/v1", api())
            .routes(routes!(healthz))
            .routes(routes!(metrics))
            .split_for_parts()
            .1
    })
    .clone()
}

/// The whole application: `protected` (the dashboard, metrics) and the API need a token or a
/// session; `/healthz` and the login page do not.
pub fn router(shared: S, protected: Router<S>) -> Router {
    let (api, _) = OpenApiRouter::new()
        .nest("/api/v1", api())
        .routes(routes!(metrics))
        .split_for_parts();
    let protected = api.merge(protected).layer(middleware::from_fn_with_state(
        shared.clone(),
        super::auth::require,
    ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/login", get(login_page).post(login_form))
        .route("/logout", post(logout))
        .merge(protected)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(limit_body))
        .layer(middleware::map_response(hardening))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route: see /api/v1/openapi.json")
}

/// Refuses a declared body over [`BODY_LIMIT`] before reading any of it (a body without a
/// declared length is cut off at the limit where it is read).
async fn limit_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return too_large().into_response();
    }
    next.run(req).await
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {} KiB", BODY_LIMIT / 1024),
    )
}

/// Headers every response carries: no sniffing, no framing, no referrer (addresses may hold a
/// login token).
async fn hardening(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

// ---- extractors that answer in the API's own words ----

/// A JSON body (an empty body is `T::default()`), at most [`BODY_LIMIT`] bytes.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned + Default, St: Send + Sync> FromRequest<St> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &St) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| too_large())?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad(format!("request body: {e}")))
    }
}

/// Query parameters; a malformed one is a 400 that names it.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequestParts<St> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &St) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, s)
            .await
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}

/// Path parameters; a malformed one (a run id that is not a number) is a 400.
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, St: Send + Sync> FromRequestParts<St> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &St) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, s)
            .await
            .map(|p| P(p.0))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}

/// Runs `f` with a store connection, the configuration and the data directory on a blocking
/// thread; error messages are masked.
pub async fn with_store<T, F>(s: &S, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Store, &Config, &DataDir) -> ApiResult<T> + Send + 'static,
{
    let config = s.config();
    let data = s.data.clone();
    let c = config.clone();
    s.db.run(move |store| f(store, &c, &data))
        .await?
        .map_err(|e| e.masked(&config.secrets))
}

fn now() -> crate::model::Time {
    chrono::Utc::now()
}

fn read<T>(
    store: &mut Store,
    f: impl FnOnce(&crate::store::Tx<'_>) -> Result<T, StoreError>,
) -> ApiResult<T> {
    Ok(store.read(f)?)
}

/// The run as JSON, or 404.
fn run_object(store: &mut Store, id: RunId) -> ApiResult<Value> {
    read(store, |tx| tx.run(id))?
        .map(|r| objects::run_json(&r))
        .ok_or_else(|| ApiError::not_found(format!("run {id} does not exist")))
}

fn limit(l: Option<u32>) -> ApiResult<u32> {
    match l {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError::bad("limit: must be at least 1")),
        Some(n) if n > MAX_LIMIT => Err(ApiError::bad(format!("limit: at most {MAX_LIMIT}"))),
        Some(n) => Ok(n),
    }
}

fn created(location: String, body: Value) -> Response {
    let mut r = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

// ---- jobs and runs ----

/// The jobs, as `worker list --json`.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, description = "Every job with its schedules, last run and next fire", body = Vec<Object>)))]
async fn list_jobs(State(s): State<S>) -> ApiResult<Json<Value>> {
    with_store(&s, |store, config, _| {
        Ok(Json(Value::Array(read(store, |tx| {
            objects::jobs(tx, config, now())
        })?)))
    })
    .await
}

/// Enqueues a run of `job` (the webhook trigger). A `key` (in the body, or the
/// `Idempotency-Key` header) already held by a run of the job answers with that run instead.
#[utoipa::path(post, path = "/jobs/{job}/runs", tag = "jobs",
    params(("job" = String, Path, description = "Job name"),
           ("Idempotency-Key" = Option<String>, Header, description = "Same as `key` in the body")),
    request_body(content = RunOptions, description = "Every field is optional"),
    responses(
        (status = 201, description = "The new run", body = Object),
        (status = 200, description = "The run that already holds the key", body = Object),
        (status = 400, description = "Malformed input"),
        (status = 404, description = "No such job"),
        (status = 413, description = "Body over 1 MiB"),
        (status = 422, description = "Input invalid for the job")))]
async fn enqueue(
    State(s): State<S>,
    P(job): P<String>,
    headers: HeaderMap,
    Body(mut opts): Body<RunOptions>,
) -> ApiResult<Response> {
    if let Some(h) = headers.get("idempotency-key") {
        let h = h
            .to_str()
            .map_err(|_| ApiError::bad("Idempotency-Key: not visible ASCII"))?
            .to_string();
        match &opts.key {
            Some(k) if *k != h => {
                return Err(ApiError::bad(
                    "the body's `key` and the Idempotency-Key header differ",
                ));
            }
            _ => opts.key = Some(h),
        }
    }
    let config = s.config();
    let req = ops::request(&config, &job, opts, Trigger::Queue, now())
        .map_err(|e| ApiError::from(e).masked(&config.secrets))?;
    let (added, run) = s
        .enqueuer
        .add(req)
        .await
        .map_err(|e| e.masked(&config.secrets))?;
    let body = objects::run_json(&run);
    Ok(if added.existing {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        created(format!("/api/v1/runs/{}", added.id), body)
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Only this job's runs.
    job: Option<String>,
    /// Only runs in these states (comma-separated: `queued,running`).
    state: Option<String>,
    /// At most this many (default 50, at most 1000).
    limit: Option<u32>,
    /// Only runs with a smaller id (the last id of the previous page).
    before: Option<RunId>,
}

fn parse_states(s: Option<&str>) -> ApiResult<Vec<RunState>> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<RunState>()
                .map_err(|e| ApiError::bad(format!("state: {e}")))
        })
        .collect()
}

/// Runs, newest first. The `Link` header names the next page.
#[utoipa::path(get, path = "/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, description = "Runs, newest first", body = Vec<Object>),
              (status = 400, description = "Malformed filter")))]
async fn list_runs(State(s): State<S>, Params(q): Params<RunsQuery>) -> ApiResult<Response> {
    let filter = RunFilter {
        job: q.job.clone(),
        states: parse_states(q.state.as_deref())?,
        limit: Some(limit(q.limit)?),
        before: q.before,
        newest_first: true,
        ..Default::default()
    };
    let n = filter.limit.unwrap_or(DEFAULT_LIMIT) as usize;
    let runs = with_store(&s, move |store, _, _| {
        read(store, |tx| tx.list_runs(&filter))
    })
    .await?;
    let mut r = Json(Value::Array(runs.iter().map(objects::run_json).collect())).into_response();
    if runs.len() == n
        && let Some(last) = runs.last()
    {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        if let Some(j) = &q.job {
            next.append_pair("job", j);
        }
        if let Some(st) = &q.state {
            next.append_pair("state", st);
        }
        next.append_pair("limit", &n.to_string());
        next.append_pair("before", &last.id.to_string());
        if let Ok(v) =
            HeaderValue::from_str(&format!("</api/v1/runs?{}>; rel=\"next\"", next.finish()))
        {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(r)
}

/// A run with its attempts and steps (as `worker show --json`).
#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, description = "The run", body = Object),
              (status = 404, description = "No such run")))]
async fn get_run(State(s): State<S>, P(id): P<RunId>) -> ApiResult<Json<Value>> {
    with_store(&s, move |store, _, _| {
        let found = read(store, |tx| {
            let Some(run) = tx.run(id)? else {
                return Ok(None);
            };
            Ok(Some((run, tx.attempts(id)?)))
        })?;
        let (run, attempts) =
            found.ok_or_else(|| ApiError::not_found(format!("run {id} does not exist")))?;
        Ok(Json(objects::run_detail(&run, &attempts, now())))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// An attempt's number (or, with `step`, an execution's); default the latest.
    pub attempt: Option<u32>,
    /// A workflow step's output only.
    pub step: Option<String>,
    /// `1`: keep the response open and stream output as it is written, until the attempt
    /// (or step, or workflow run) ends.
    pub follow: Option<String>,
}

/// Captured output, as text.
#[utoipa::path(get, path = "/runs/{id}/logs", tag = "runs",
    params(("id" = i64, Path, description = "Run id"), LogsQuery),
    responses((status = 200, description = "Output (streamed with follow=1)", content_type = "text/plain"),
              (status = 404, description = "No such run, attempt or step")))]
async fn run_logs(
    State(s): State<S>,
    P(id): P<RunId>,
    Params(q): Params<LogsQuery>,
) -> ApiResult<Response> {
    super::logs::logs(s, id, q).await
}

/// Cancels a run: one not yet started ends `cancelled` (200); a running one is stopped (202).
#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses((status = 200, description = "Cancelled", body = Object),
              (status = 202, description = "Running: being stopped", body = Object),
              (status = 404, description = "No such run"),
              (status = 409, description = "It has already finished")))]
async fn cancel_run(State(s): State<S>, P(id): P<RunId>) -> ApiResult<Response> {
    with_store(&s, move |store, config, data| {
        let status = match ops::cancel(data, store, config, id, now())? {
            CancelResult::Cancelled => StatusCode::OK,
            CancelResult::Stopping => StatusCode::ACCEPTED,
            CancelResult::AlreadyFinished(st) => {
                return Err(
                    OpError::Conflict(format!("run {id} has already finished ({st})")).into(),
                );
            }
        };
        Ok((status, Json(run_object(store, id)?)).into_response())
    })
    .await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Re-run a workflow from this step (and everything downstream), reusing the others'
    /// outputs; the run must have finished.
    from_step: Option<String>,
}

/// Retries a dead run (or, with `from_step`, a finished workflow run from that step) as a new
/// run.
#[utoipa::path(post, path = "/runs/{id}/retry", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    request_body(content = RetryBody, description = "Optional"),
    responses((status = 201, description = "The new run", body = Object),
              (status = 404, description = "No such run"),
              (status = 409, description = "Not dead (or not finished, with from_step)"),
              (status = 422, description = "No such step")))]
async fn retry_run(
    State(s): State<S>,
    P(id): P<RunId>,
    Body(b): Body<RetryBody>,
) -> ApiResult<Response> {
    with_store(&s, move |store, config, data| {
        let ids = ops::retry(
            data,
            store,
            config,
            RetryTarget::One(id),
            b.from_step.as_deref(),
            now(),
        )?;
        let new = *ids
            .first()
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "nothing retried"))?;
        Ok(created(
            format!("/api/v1/runs/{new}"),
            run_object(store, new)?,
        ))
    })
    .await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// The signal's payload (the waiting step's outputs).
    data: Option<Value>,
    /// Fail the waiting step with this message instead.
    fail: Option<String>,
}

/// Sends a signal to a workflow run. A signal no step waits for yet is kept until one does.
#[utoipa::path(post, path = "/runs/{id}/signals/{signal}", tag = "runs",
    params(("id" = i64, Path, description = "Run id"),
           ("signal" = String, Path, description = "Signal name")),
    request_body(content = SignalBody, description = "Optional"),
    responses((status = 200, description = "`waiting`: whether a step was waiting for it", body = Object),
              (status = 400, description = "Malformed name"),
              (status = 404, description = "No such run"),
              (status = 409, description = "The run has ended or has no steps")))]
async fn signal_run(
    State(s): State<S>,
    P((id, name)): P<(RunId, String)>,
    Body(b): Body<SignalBody>,
) -> ApiResult<Json<Value>> {
    with_store(&s, move |store, _, data| {
        let waiting = ops::signal(
            data,
            store,
            id,
            &name,
            b.data.as_ref(),
            b.fail.as_deref(),
            now(),
        )?;
        Ok(Json(
            json!({ "run_id": id, "signal": name, "waiting": waiting }),
        ))
    })
    .await
}

// ---- nodes ----

/// The daemons sharing the store, as `worker nodes --json`.
#[utoipa::path(get, path = "/nodes", tag = "nodes",
    responses((status = 200, description = "Every node: name, host, pid, version, heartbeat, state, runs held", body = Vec<Object>)))]
async fn list_nodes(State(s): State<S>) -> ApiResult<Json<Value>> {
    with_store(&s, move |store, _, _| {
        let nodes = read(store, |tx| tx.nodes())?;
        Ok(Json(Value::Array(
            nodes.iter().map(objects::node).collect(),
        )))
    })
    .await
}

// ---- schedules ----

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SchedulesQuery {
    /// How many next fires to list per schedule (default 1, at most 100).
    next: Option<usize>,
}

/// The schedules, as `worker schedules --json`.
#[utoipa::path(get, path = "/schedules", tag = "schedules", params(SchedulesQuery),
    responses((status = 200, description = "Every schedule with its next fires", body = Vec<Object>)))]
async fn list_schedules(
    State(s): State<S>,
    Params(q): Params<SchedulesQuery>,
) -> ApiResult<Json<Value>> {
    let n = q.next.unwrap_or(1);
    if n > 100 {
        return Err(ApiError::bad("next: at most 100"));
    }
    with_store(&s, move |store, config, _| {
        Ok(Json(Value::Array(read(store, |tx| {
            objects::schedules(tx, config, n, now())
        })?)))
    })
    .await
}

/// The schedule object of `name`.
fn schedule_object(store: &mut Store, config: &Config, name: &str) -> ApiResult<Value> {
    let all = read(store, |tx| objects::schedules(tx, config, 1, now()))?;
    all.into_iter()
        .find(|o| o["name"] == name)
        .ok_or_else(|| ApiError::not_found(format!("unknown schedule `{name}`")))
}

async fn set_paused(s: S, name: String, pause: bool) -> ApiResult<Json<Value>> {
    with_store(&s, move |store, config, data| {
        ops::pause(data, store, config, &name, pause, now())?;
        Ok(Json(schedule_object(store, config, &name)?))
    })
    .await
}

/// Pauses a schedule: it fires nothing until resumed (kept across restarts and reloads).
#[utoipa::path(post, path = "/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses((status = 200, description = "The schedule", body = Object),
              (status = 404, description = "No such schedule")))]
async fn pause_schedule(State(s): State<S>, P(name): P<String>) -> ApiResult<Json<Value>> {
    set_paused(s, name, true).await
}

/// Resumes a paused schedule from its next fire (nothing missed meanwhile is caught up).
#[utoipa::path(post, path = "/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses((status = 200, description = "The schedule", body = Object),
              (status = 404, description = "No such schedule")))]
async fn resume_schedule(State(s): State<S>, P(name): P<String>) -> ApiResult<Json<Value>> {
    set_paused(s, name, false).await
}

/// Enqueues a run of the schedule's job now (trigger `manual`).
#[utoipa::path(post, path = "/schedules/{name}/trigger", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses((status = 201, description = "The new run", body = Object),
              (status = 404, description = "No such schedule")))]
async fn trigger_schedule(State(s): State<S>, P(name): P<String>) -> ApiResult<Response> {
    with_store(&s, move |store, config, data| {
        let id = ops::trigger(data, store, config, &name, now())?;
        Ok(created(
            format!("/api/v1/runs/{id}"),
            run_object(store, id)?,
        ))
    })
    .await
}

// ---- queue, dead letters, alerts ----

/// Per-job counts and outcome statistics, as `worker queue:stats --json`.
#[utoipa::path(get, path = "/queue/stats", tag = "queue",
    responses((status = 200, description = "Per job: counts by state, success rate, p50/p95", body = Vec<Object>)))]
async fn queue_stats(State(s): State<S>) -> ApiResult<Json<Value>> {
    with_store(&s, |store, _, _| {
        Ok(Json(Value::Array(read(store, objects::stats)?)))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DlqQuery {
    /// Only this job's dead runs.
    job: Option<String>,
    /// At most this many (default 50, at most 1000).
    limit: Option<u32>,
    /// Only runs with a smaller id (the last id of the previous page).
    before: Option<RunId>,
}

/// The dead-letter queue, newest first; `X-Total-Count` says how many there are in all.
#[utoipa::path(get, path = "/dlq", tag = "queue", params(DlqQuery),
    responses((status = 200, description = "Dead runs not yet retried", body = Vec<Object>)))]
async fn list_dlq(State(s): State<S>, Params(q): Params<DlqQuery>) -> ApiResult<Response> {
    let filter = RunFilter {
        job: q.job,
        dlq: true,
        limit: Some(limit(q.limit)?),
        before: q.before,
        newest_first: true,
        ..Default::default()
    };
    let (runs, total) = with_store(&s, move |store, _, _| {
        read(store, |tx| {
            let total = tx.count_runs(&RunFilter {
                limit: None,
                before: None,
                ..filter.clone()
            })?;
            Ok((tx.list_runs(&filter)?, total))
        })
    })
    .await?;
    let mut r = Json(Value::Array(runs.iter().map(objects::run_json).collect())).into_response();
    r.headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    Ok(r)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DlqRetryQuery {
    /// Only this job's dead runs.
    job: Option<String>,
}

/// Retries every dead run (or one job's) as new runs, as `worker queue:retry --all`.
#[utoipa::path(post, path = "/dlq/retry", tag = "queue", params(DlqRetryQuery),
    responses((status = 200, description = "`retried`: the new runs' ids", body = Object),
              (status = 404, description = "No such job")))]
async fn retry_dlq(State(s): State<S>, Params(q): Params<DlqRetryQuery>) -> ApiResult<Json<Value>> {
    with_store(&s, move |store, config, data| {
        let ids = ops::retry(
            data,
            store,
            config,
            RetryTarget::AllDead(q.job.as_deref()),
            None,
            now(),
        )?;
        Ok(Json(json!({ "retried": ids })))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AlertsQuery {
    /// At most this many, newest first (default 50, at most 1000).
    limit: Option<u32>,
}

/// Alerts sent, pending and failed, newest first, as `worker alert:history --json`.
#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertsQuery),
    responses((status = 200, description = "Alerts, newest first", body = Vec<Object>)))]
async fn list_alerts(State(s): State<S>, Params(q): Params<AlertsQuery>) -> ApiResult<Json<Value>> {
    let n = limit(q.limit)?;
    with_store(&s, move |store, config, _| {
        let rows = read(store, |tx| tx.alerts(n, None))?;
        Ok(Json(Value::Array(
            rows.iter()
                .map(|a| objects::alert(a, &config.secrets))
                .collect(),
        )))
    })
    .await
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

// ---- metrics, health, login ----

/// Prometheus metrics (text format 0.0.4), counted by the store: see README, "Metrics".
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
async fn metrics(State(s): State<S>) -> ApiResult<Response> {
    let text = with_store(&s, |store, config, _| {
        let (counts, paused) = read(store, |tx| {
            Ok((tx.metric_counts()?, tx.paused_schedules()?))
        })?;
        Ok(crate::metrics::render(&counts, config, &paused, now()))
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// 200 while the engine's loop answers within 5 s; 503 when it does not (or the daemon stops).
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "`{\"status\":\"ok\"}`", body = Object),
              (status = 503, description = "The engine's loop does not answer", body = Object)))]
async fn healthz(State(s): State<S>) -> Response {
    let stopping = *s.stop.borrow();
    let answer = if stopping {
        None
    } else {
        tokio::time::timeout(HEALTH_WAIT, async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            s.link.ping.send(tx).await.ok()?;
            rx.await.ok()
        })
        .await
        .ok()
        .flatten()
    };
    if answer == Some(true) {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        let status = match answer {
            _ if stopping => "stopping",
            Some(_) => "store unreachable",
            None => "stalled",
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": status})),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// `GET /login?token=…` (the address `worker ui` prints): a session for a valid token, then
/// the dashboard at an address without the token. Without a token: a form to paste one.
async fn login_page(State(s): State<S>, Params(q): Params<LoginQuery>) -> Response {
    match q.token {
        Some(t) => login(&s, &t),
        None => login_html(StatusCode::OK, ""),
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_form(State(s): State<S>, axum::Form(f): axum::Form<LoginForm>) -> Response {
    login(&s, &f.token)
}

fn login(s: &Shared, token: &str) -> Response {
    let config = s.config();
    let token = token.trim();
    if !s.auth.token_ok(&config, token) {
        return login_html(StatusCode::UNAUTHORIZED, "That token is not valid.");
    }
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&s.auth.set_cookie(token, now().timestamp())) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn logout(State(s): State<S>) -> Response {
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&s.auth.clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn login_html(status: StatusCode, problem: &str) -> Response {
    let problem = if problem.is_empty() {
        String::new()
    } else {
        format!("<p class=problem>{problem}</p>")
    };
    let page = format!(
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>worker: log in</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;color:#1f2933}}\
         input{{font:inherit;width:100%;padding:.5rem;box-sizing:border-box}}\
         button{{font:inherit;margin-top:.75rem;padding:.5rem 1rem}}.problem{{color:#b42318}}</style>\
         <h1>worker</h1>{problem}\
         <p>Run <code>worker ui</code> on the daemon's host and open the address it prints, \
         or paste an API token:</p>\
         <form method=post action=/login><input name=token type=password autocomplete=off \
         aria-label=Token autofocus><button>Log in</button></form></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document names exactly the routes of SPEC 9 (and the DLQ's bulk retry, which the
    /// dashboard uses), with their methods. Both the router and the document are built from
    /// [`api`], so what is documented is what is served; the end-to-end tests probe each one
    /// over HTTP.
    #[test]
    fn the_document_lists_every_route_with_its_method() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut got: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| format!("{} {p}", m.to_uppercase()))
            })
            .collect();
        got.sort();
        let mut want = vec![
            "GET /api/v1/jobs",
            "POST /api/v1/jobs/{job}/runs",
            "GET /api/v1/runs",
            "GET /api/v1/runs/{id}",
            "GET /api/v1/runs/{id}/logs",
            "POST /api/v1/runs/{id}/cancel",
            "POST /api/v1/runs/{id}/retry",
            "POST /api/v1/runs/{id}/signals/{signal}",
            "GET /api/v1/nodes",
            "GET /api/v1/schedules",
            "POST /api/v1/schedules/{name}/pause",
            "POST /api/v1/schedules/{name}/resume",
            "POST /api/v1/schedules/{name}/trigger",
            "GET /api/v1/queue/stats",
            "GET /api/v1/dlq",
            "POST /api/v1/dlq/retry",
            "GET /api/v1/alerts",
            "GET /api/v1/events",
            "GET /api/v1/openapi.json",
            "GET /healthz",
            "GET /metrics",
        ];
        want.sort();
        assert_eq!(got, want);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        // Health is the one route without authentication.
        assert_eq!(
            doc["paths"]["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
    }
}
