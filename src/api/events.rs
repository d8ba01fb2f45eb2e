//! `GET /api/v1/events`: Server-Sent Events, one per recorded change (the store's change log,
//! migration 9), each with the change's sequence number as its id.
//!
//! A client that reconnects with `Last-Event-ID` gets every change after it that is still kept;
//! if some were pruned meanwhile it first gets a `reset` event (load everything again). The
//! stream looks for changes after each of the engine's turns (at most ten times a second), and
//! once a second in any case (a `worker job` in the foreground changes the store without the
//! daemon). A comment line every 15 s keeps proxies and browsers from closing it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Shared;
use super::error::{ApiError, ApiResult};
use crate::objects;
use crate::store::{Change, StoreError, Tx};

/// Changes read at once.
const BATCH: u32 = 500;
/// The least time between two reads of the log.
const MIN_GAP: Duration = Duration::from_millis(100);
/// The most time between two reads of the log.
const MAX_GAP: Duration = Duration::from_secs(1);
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// One event to send.
struct Out {
    seq: i64,
    kind: &'static str,
    data: String,
}

/// Run and step changes as they happen. Event `run`: the run object (its `state` the state
/// it changed to); event `step`: the step object with `run_id` and `job`; event `reset`:
/// changes after `Last-Event-ID` were pruned, so reload.
#[utoipa::path(get, path = "/events", tag = "runs",
    params(("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "An event stream (text/event-stream)", content_type = "text/event-stream")))]
pub async fn events(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let last: Option<i64> = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| ApiError::bad("Last-Event-ID: not an event id"))?,
        ),
    };
    let (first, newest) = super::routes::with_store(&s, |store, _, _| {
        Ok(store.read(|tx| Ok::<_, StoreError>((tx.first_change()?, tx.last_change()?)))?)
    })
    .await?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    // Changes after `last` were pruned (or the id is from another store): the client reloads
    // everything and follows from now.
    let reset = last.is_some_and(|id| (first > 0 && id + 1 < first) || id > newest);
    let cursor = match last {
        Some(id) if !reset => id,
        _ => newest,
    };
    if reset {
        let _ = tx
            .send(
                Event::default()
                    .event("reset")
                    .data(json!({ "first": first, "last": newest }).to_string()),
            )
            .await;
    }
    tokio::spawn(pump(s, tx, cursor));
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT)))
}

/// Sends the changes after `cursor` as they come, until the client leaves or the daemon stops.
async fn pump(s: Arc<Shared>, tx: mpsc::Sender<Event>, mut cursor: i64) {
    let mut turns = s.link.turns.clone();
    let mut stop = s.stop.clone();
    let mut first = true;
    loop {
        let read_at = tokio::time::Instant::now();
        let from = cursor;
        let batch =
            super::routes::with_store(
                &s,
                move |store, _, _| Ok(store.read(|tx| render(tx, from))?),
            )
            .await;
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot read the change log for an event stream");
                Vec::new()
            }
        };
        let full = batch.len() >= BATCH as usize;
        for o in batch {
            cursor = o.seq;
            let mut e = Event::default()
                .id(o.seq.to_string())
                .event(o.kind)
                .data(o.data);
            if first {
                e = e.retry(Duration::from_secs(2));
                first = false;
            }
            if tx.send(e).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        // Wait for a turn of the engine (or a second), then at least MIN_GAP since this read.
        tokio::select! {
            _ = turns.changed() => {}
            _ = tokio::time::sleep(MAX_GAP) => {}
            _ = tx.closed() => return,
            _ = super::stopped(&mut stop) => return,
        }
        tokio::time::sleep_until(read_at + MIN_GAP).await;
    }
}

/// The events for the changes after `seq`.
fn render(tx: &Tx<'_>, seq: i64) -> Result<Vec<Out>, StoreError> {
    let changes = tx.changes_after(seq, BATCH)?;
    let mut out = Vec::with_capacity(changes.len());
    // One read of each run however many of its changes are in the batch.
    let mut runs: std::collections::HashMap<i64, Option<crate::model::Run>> = Default::default();
    for Change {
        seq,
        run_id,
        step,
        state,
    } in changes
    {
        if let std::collections::hash_map::Entry::Vacant(v) = runs.entry(run_id) {
            v.insert(tx.run(run_id)?);
        }
        // A run deleted since (purged): nothing left to say.
        let Some(Some(run)) = runs.get(&run_id) else {
            continue;
        };
        match step {
            None => {
                let mut o = objects::run_json(run);
                o["state"] = Value::String(state);
                out.push(Out {
                    seq,
                    kind: "run",
                    data: o.to_string(),
                });
            }
            Some(name) => {
                let Some(st) = run.steps.iter().find(|st| st.name == name) else {
                    continue;
                };
                let mut o = objects::step_json(st);
                o["state"] = Value::String(state);
                o["run_id"] = json!(run.id);
                o["job"] = json!(run.job);
                out.push(Out {
                    seq,
                    kind: "step",
                    data: o.to_string(),
                });
            }
        }
    }
    Ok(out)
}
