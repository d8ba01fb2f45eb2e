//! The server's own store connections: a few, reused, used on blocking threads (SQLite calls
//! block), never the engine's.

use crate::store::Location;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::store::{Durability, Store, StoreError};

/// Store operations at once: SQLite writes one at a time anyway, and a flood of requests should
/// queue here rather than start a thread (and a connection) each.
const CONCURRENT: usize = 4;

pub struct Db {
    location: Location,
    durability: Durability,
    idle: Mutex<Vec<Store>>,
    permits: Semaphore,
}

/// Why a store operation did not run.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store operation was abandoned: {0}")]
    Join(String),
}

impl Db {
    pub fn new(location: Location, durability: Durability) -> Arc<Db> {
        Arc::new(Db {
            location,
            durability,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(CONCURRENT),
        })
    }

    /// Runs `f` with a connection, on a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> T + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| DbError::Join(e.to_string()))?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = db.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
            let mut store = match taken {
                Some(s) => s,
                None => Store::open_at(&db.location, db.durability)?,
            };
            let out = f(&mut store);
            if let Ok(mut idle) = db.idle.lock()
                && idle.len() < CONCURRENT
            {
                idle.push(store);
            }
            Ok(out)
        })
        .await
        .map_err(|e| DbError::Join(e.to_string()))?
    }
}
