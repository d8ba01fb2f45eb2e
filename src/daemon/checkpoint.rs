//! The checkpointer: a thread that copies the SQLite WAL back into the database, so that the
//! engine's commits never wait for it.
//!
//! A checkpoint ends in an fsync (milliseconds on ordinary disks). With SQLite's automatic
//! checkpoints, whichever commit crosses the threshold pays it — on the engine's loop, stalling
//! every start behind it. Instead the engine's connection disables them and pokes this thread after
//! each commit; the thread runs a PASSIVE checkpoint (it never blocks writers) at most every
//! [`INTERVAL`], and sleeps while nothing is written.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::store::{Durability, Store};

/// At most one checkpoint per this long.
const INTERVAL: Duration = Duration::from_millis(200);

pub struct Checkpointer {
    poke: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `db`.
    pub fn start(db: PathBuf) -> std::io::Result<Checkpointer> {
        let (poke, pokes) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || run(db, pokes))?;
        Ok(Checkpointer {
            poke: Some(poke),
            thread: Some(thread),
        })
    }

    /// No thread: a PostgreSQL store checkpoints on its own server.
    pub fn none() -> Checkpointer {
        Checkpointer {
            poke: None,
            thread: None,
        }
    }

    /// A poke for another thread's connection (which disables its automatic checkpoints too).
    pub fn poker(&self) -> impl Fn() + Send + 'static {
        let p = self.poke.clone();
        move || {
            if let Some(p) = &p {
                let _ = p.try_send(());
            }
        }
    }

    /// Something was committed: checkpoint soon. Never blocks; pokes coalesce.
    pub fn poke(&self) {
        if let Some(p) = &self.poke {
            match p.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {}
            }
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the thread after a last checkpoint.
    fn drop(&mut self) {
        self.poke.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: PathBuf, pokes: Receiver<()>) {
    let store = match Store::open(&db, Durability::Normal) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer: cannot open the database; SQLite will checkpoint on its own");
            return;
        }
    };
    while pokes.recv().is_ok() {
        if let Err(e) = store.checkpoint() {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
        std::thread::sleep(INTERVAL);
    }
    let _ = store.checkpoint();
}
