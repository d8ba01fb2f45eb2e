//! `GET /api/v1/runs/{id}/logs`: captured output as text, or (`follow=1`) as it is written.
//!
//! Followed output is read from the capture files every [`POLL`] (output reaches the client
//! within about that long of being written) and the response ends when what it follows ends:
//! the attempt (a job without steps), the step (`step=`), or the whole run (a workflow run
//! without `step=`: every step's output, each headed by `[worker: step NAME]` when it starts).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::Shared;
use super::error::{ApiError, ApiResult};
use super::routes::{LogsQuery, with_store};
use crate::datadir::DataDir;
use crate::exec::capture::{self, Tail};
use crate::model::RunId;
use crate::store::{Store, StoreError};

/// How often followed output is looked for.
const POLL: Duration = Duration::from_millis(50);

/// What a request shows.
#[derive(Debug, Clone)]
enum Target {
    /// An attempt of a job without steps: its number, or the latest.
    Attempt(Option<u32>),
    /// A step: an execution's number, or the latest.
    Step(String, Option<u32>),
    /// Every step of a workflow run.
    Steps,
}

pub async fn logs(s: Arc<Shared>, id: RunId, q: LogsQuery) -> ApiResult<Response> {
    let follow = match q.follow.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad(format!("follow: `{other}` is not 1 or 0")));
        }
    };
    let (attempt, step) = (q.attempt, q.step);
    let target = with_store(&s, move |store, _, _| resolve(store, id, attempt, step)).await?;
    if !follow {
        let body = with_store(&s, move |store, _, data| read_all(store, data, id, &target)).await?;
        return Ok(text(axum::body::Body::from(body)));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(stream(s, id, target, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut r = text(axum::body::Body::from_stream(body));
    // Proxies must pass each chunk on as it comes.
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

fn text(body: axum::body::Body) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// What `attempt`/`step` name for run `id`, checked.
fn resolve(
    store: &mut Store,
    id: RunId,
    attempt: Option<u32>,
    step: Option<String>,
) -> ApiResult<Target> {
    let found = store.read(|tx| {
        let Some(run) = tx.run(id)? else {
            return Ok(None);
        };
        Ok::<_, StoreError>(Some((run, tx.attempts(id)?)))
    })?;
    let (run, attempts) =
        found.ok_or_else(|| ApiError::not_found(format!("run {id} does not exist")))?;
    if let Some(name) = step {
        let Some(s) = run.steps.iter().find(|s| s.name == name) else {
            return Err(ApiError::not_found(if run.has_steps {
                format!("run {id} ({}) has no step `{name}`", run.job)
            } else {
                format!("run {id} ({}) has no steps", run.job)
            }));
        };
        if let Some(n) = attempt
            && (n == 0 || n > s.attempts)
        {
            return Err(ApiError::not_found(format!(
                "step {name} of run {id} has no execution {n} (it has {})",
                s.attempts
            )));
        }
        return Ok(Target::Step(name, attempt));
    }
    if run.has_steps && attempt.is_none() {
        return Ok(Target::Steps);
    }
    if let Some(n) = attempt
        && !attempts.iter().any(|a| a.number == n)
    {
        return Err(ApiError::not_found(format!(
            "run {id} has no attempt {n} (it has {})",
            attempts.len()
        )));
    }
    Ok(Target::Attempt(attempt))
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot read {}: {e}", path.display()),
    )
}

fn read_file(path: &std::path::Path) -> ApiResult<Vec<u8>> {
    Ok(capture::read_tail(path, u64::MAX)
        .map_err(|e| io_error(path, e))?
        .unwrap_or_default())
}

/// Everything captured so far.
fn read_all(store: &mut Store, data: &DataDir, id: RunId, target: &Target) -> ApiResult<Vec<u8>> {
    match target {
        Target::Attempt(n) => {
            let attempts = store.read(|tx| tx.attempts(id))?;
            let chosen = match n {
                Some(n) => attempts.iter().rev().find(|a| a.number == *n),
                None => attempts.last(),
            };
            match chosen {
                Some(a) => {
                    let path = data.log_path(id, a.seq);
                    match capture::read_tail(&path, u64::MAX).map_err(|e| io_error(&path, e))? {
                        Some(out) => Ok(out),
                        // Run on another host: kept in the store when the attempt ended.
                        None => {
                            let seq = a.seq;
                            Ok(store
                                .read(|tx| tx.attempt_output(id, seq))?
                                .unwrap_or_default())
                        }
                    }
                }
                None => Ok(Vec::new()),
            }
        }
        Target::Step(name, n) => {
            let steps = store.read(|tx| tx.steps(id))?;
            let execs = steps
                .iter()
                .find(|s| &s.name == name)
                .map_or(0, |s| s.attempts);
            match n.or((execs > 0).then_some(execs)) {
                Some(n) => read_file(&data.step_log_path(id, name, n)),
                None => Ok(Vec::new()),
            }
        }
        Target::Steps => {
            let steps = store.read(|tx| tx.steps(id))?;
            let mut out = Vec::new();
            for s in steps.iter().filter(|s| s.attempts > 0) {
                let bytes = read_file(&data.step_log_path(id, &s.name, s.attempts))?;
                if !bytes.is_empty() {
                    out.extend_from_slice(format!("[worker: step {}]\n", s.name).as_bytes());
                    out.extend_from_slice(&bytes);
                    if !bytes.ends_with(b"\n") {
                        out.push(b'\n');
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Sends what `target` writes as it is written, until it ends, the client leaves, or the
/// daemon stops.
async fn stream(s: Arc<Shared>, id: RunId, target: Target, tx: mpsc::Sender<Bytes>) {
    let mut follower = Some(Follower::new(id, target));
    let mut stop = s.stop.clone();
    loop {
        let Some(mut f) = follower.take() else {
            return;
        };
        let r = with_store(&s, move |store, _, data| {
            let r = f.tick(store, data);
            Ok((f, r))
        })
        .await;
        // A failure to read ends the response with a line that says why.
        let (f, chunk, ended) = match r.and_then(|(f, r)| r.map(|(c, e)| (f, c, e))) {
            Ok(x) => x,
            Err(e) => {
                let _ = tx
                    .send(Bytes::from(format!("[worker: {}]\n", e.message)))
                    .await;
                return;
            }
        };
        if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
            return;
        }
        if ended {
            return;
        }
        follower = Some(f);
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tx.closed() => return,
            _ = super::stopped(&mut stop) => return,
        }
    }
}

/// The state of a followed response between two looks.
struct Follower {
    id: RunId,
    target: Target,
    /// Attempt (by sequence) or step execution followed, with its reader.
    current: Option<(u32, Tail)>,
    /// Every step's reader (the whole workflow), by (index, name).
    steps: BTreeMap<(u32, String), (u32, Tail)>,
    /// The step whose output was sent last.
    last: Option<String>,
}

impl Follower {
    fn new(id: RunId, target: Target) -> Follower {
        Follower {
            id,
            target,
            current: None,
            steps: BTreeMap::new(),
            last: None,
        }
    }

    /// New output since the last look, and whether what is followed has ended (the output is
    /// then complete: states are read before the files).
    fn tick(&mut self, store: &mut Store, data: &DataDir) -> ApiResult<(Vec<u8>, bool)> {
        let id = self.id;
        let mut out = Vec::new();
        let Some(run) = store.read(|tx| tx.run(id))? else {
            return Ok((out, true));
        };
        let run_over = run.state.is_final();
        let ended = match self.target.clone() {
            Target::Attempt(n) => {
                let attempts = store.read(|tx| tx.attempts(id))?;
                if self.current.is_none() {
                    let chosen = match n {
                        Some(n) => attempts.iter().rev().find(|a| a.number == n),
                        None => attempts.last(),
                    };
                    if let Some(a) = chosen {
                        self.current = Some((a.seq, Tail::new(data.log_path(id, a.seq))));
                    }
                }
                let over = match &self.current {
                    Some((seq, _)) => attempts
                        .iter()
                        .find(|a| a.seq == *seq)
                        .is_none_or(|a| a.finished_at.is_some()),
                    // Not started yet: wait for the first attempt, unless the run ended without.
                    None => run_over,
                };
                if let Some((_, tail)) = self.current.as_mut() {
                    pump(tail, &mut out)?;
                }
                over
            }
            Target::Step(name, n) => {
                let Some(row) = run.steps.iter().find(|s| s.name == name) else {
                    return Ok((out, true));
                };
                let execution = n.unwrap_or(row.attempts);
                if execution > 0 && self.current.as_ref().is_none_or(|(e, _)| *e != execution) {
                    if let Some((_, mut old)) = self.current.take() {
                        pump(&mut old, &mut out)?;
                    }
                    self.current = Some((
                        execution,
                        Tail::new(data.step_log_path(id, &name, execution)),
                    ));
                }
                if let Some((_, tail)) = self.current.as_mut() {
                    pump(tail, &mut out)?;
                }
                let fixed_over = n.is_some_and(|n| n < row.attempts);
                row.state.is_final() || run_over || fixed_over
            }
            Target::Steps => {
                for s in run.steps.iter().filter(|s| s.attempts > 0) {
                    let key = (s.idx, s.name.clone());
                    let path = || data.step_log_path(id, &s.name, s.attempts);
                    let entry = self
                        .steps
                        .entry(key)
                        .or_insert_with(|| (s.attempts, Tail::new(path())));
                    let mut chunk = Vec::new();
                    if entry.0 != s.attempts {
                        pump(&mut entry.1, &mut chunk)?;
                        *entry = (s.attempts, Tail::new(path()));
                    }
                    pump(&mut entry.1, &mut chunk)?;
                    if !chunk.is_empty() {
                        if self.last.as_deref() != Some(s.name.as_str()) {
                            if !out.is_empty() && !out.ends_with(b"\n") {
                                out.push(b'\n');
                            }
                            out.extend_from_slice(
                                format!("[worker: step {}]\n", s.name).as_bytes(),
                            );
                            self.last = Some(s.name.clone());
                        }
                        out.extend_from_slice(&chunk);
                    }
                }
                run_over
            }
        };
        Ok((out, ended))
    }
}

/// New output of `tail` into `out`, with a note when some was lost to the log's cap.
fn pump(tail: &mut Tail, out: &mut Vec<u8>) -> ApiResult<()> {
    let dropped = tail.pump(out).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the output: {e}"),
        )
    })?;
    if dropped {
        out.extend_from_slice(
            b"\n[worker: output was dropped here: the log is capped at the job's output_limit]\n",
        );
    }
    Ok(())
}
