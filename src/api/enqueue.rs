//! Group commit for `POST /jobs/{job}/runs`: requests that arrive while a transaction commits
//! are enqueued together in the next one, on a thread and a store connection of their own.
//! Under load a commit (and a wake-up of the daemon) serves many requests; alone, a request
//! waits for nothing but its own commit.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::error::ApiError;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::model::Run;
use crate::ops::{self, Added, OpResult};
use crate::queue::Request;
use crate::store::{Durability, Store};

/// The most requests in one transaction.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<OpResult<(Added, Run)>>;

pub struct Enqueuer {
    tx: mpsc::Sender<(Request, Reply)>,
}

impl Enqueuer {
    /// Starts the thread, which ends when the `Enqueuer` is dropped. Its connection leaves WAL
    /// checkpoints to the daemon's checkpointer (a commit that crossed SQLite's threshold would
    /// pay for one, milliseconds): `committed` is called after each commit that added runs, and
    /// wakes the daemon's loop and its checkpointer.
    pub fn start(
        data: DataDir,
        durability: Durability,
        config: watch::Receiver<Arc<Config>>,
        committed: impl Fn() + Send + 'static,
    ) -> std::io::Result<Enqueuer> {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("worker-enqueue".into())
            .spawn(move || run(data, durability, config, rx, committed))?;
        Ok(Enqueuer { tx })
    }

    /// Enqueues `req` (already checked by [`ops::request`]).
    pub async fn add(&self, req: Request) -> Result<(Added, Run), ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((req, reply))
            .await
            .map_err(|_| unavailable())?;
        Ok(answer.await.map_err(|_| unavailable())??)
    }
}

fn unavailable() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "the enqueue thread has stopped (see the daemon's log)",
    )
}

fn run(
    data: DataDir,
    durability: Durability,
    config: watch::Receiver<Arc<Config>>,
    mut rx: mpsc::Receiver<(Request, Reply)>,
    committed: impl Fn(),
) {
    let opened = Store::open_at(&data.store_location(), durability).and_then(|s| {
        s.disable_autocheckpoint()?;
        Ok(s)
    });
    let mut store = match opened {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the store for enqueues over HTTP");
            // Every request is answered 503 from now on (the receiver is dropped).
            return;
        }
    };
    let mut batch: Vec<(Request, Reply)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let config = config.borrow().clone();
        let (requests, replies): (Vec<Request>, Vec<Reply>) = batch.drain(..).unzip();
        let outcomes = ops::add_each(&mut store, &config, &requests, chrono::Utc::now());
        if outcomes.iter().any(Result::is_ok) {
            committed();
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A client that left meanwhile does not need its answer.
            let _ = reply.send(outcome);
        }
    }
}
