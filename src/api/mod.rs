//! The HTTP side of the daemon: the API under `/api/v1`, the dashboard at `/`, `/metrics` and
//! `/healthz`.
//!
//! The server runs on a runtime of its own (threads other than the engine's loop) and reaches
//! the queue the way the command line does: through [`crate::ops`] and the store, on connections
//! of its own, then a wake-up datagram. The engine offers it two things ([`Link`]): a ping, so
//! `/healthz` learns whether the loop turns, and a counter of its turns, so the event stream
//! looks for changes only when something may have changed.
//!
//! Architecture invariant: nothing a client does can hold up the engine. Requests never touch
//! the engine's store connection or its loop; connections are capped, and slow or idle clients
//! are dropped (see [`serve`]).

mod auth;
mod db;
mod enqueue;
mod error;
mod events;
mod logs;
pub(crate) mod routes;
mod serve;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::datadir::DataDir;

pub use auth::{load_or_create_token, token_path};
pub use db::Db;
pub use enqueue::Enqueuer;
pub use serve::{Server, bind};

/// The store's meta key of the address the server listens on (`worker ui` reads it).
pub const ADDRESS_META: &str = "http_address";

/// What the engine offers the server.
#[derive(Clone)]
pub struct Link {
    /// Each message is answered by the engine's loop when it gets to it.
    /// Asks the engine's loop whether it turns: it answers whether the store answers it.
    pub ping: mpsc::Sender<oneshot::Sender<bool>>,
    /// Counts the engine's turns: changes to the store are followed by a turn.
    pub turns: watch::Receiver<u64>,
}

/// Everything a request handler may use.
pub struct Shared {
    pub data: DataDir,
    /// The configuration the daemon runs (replaced on each reload).
    pub config: watch::Receiver<Arc<Config>>,
    pub db: Arc<Db>,
    /// Enqueues `POST /jobs/{job}/runs` requests with group commit.
    pub enqueuer: Enqueuer,
    pub auth: auth::Auth,
    pub link: Link,
    /// Becomes `true` when the daemon stops: long responses (events, followed logs) end.
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    pub fn new(
        data: DataDir,
        config: watch::Receiver<Arc<Config>>,
        db: Arc<Db>,
        enqueuer: Enqueuer,
        link: Link,
        stop: watch::Receiver<bool>,
        port: u16,
    ) -> Shared {
        Shared {
            auth: auth::Auth::new(data.clone(), port),
            data,
            config,
            db,
            enqueuer,
            link,
            stop,
        }
    }

    /// The configuration now.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }
}

/// The whole application: API, OpenAPI document, health, login.
pub fn app(shared: Arc<Shared>) -> axum::Router {
    routes::router(shared, crate::web::router())
}

/// The OpenAPI document of the API, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::openapi()
}

/// Resolves once `stop` is `true` (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
