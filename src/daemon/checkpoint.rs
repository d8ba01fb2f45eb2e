//! The checkpointer: a thread that copies the SQLite WAL back into the database, so that the
//! engine's commits never wait for it.
//!
//! A checkpoint ends in an fsync (milliseconds on ordinary disks), and while the disk syncs the
//! database, the commits that sync the WAL meanwhile wait longer too. With SQLite's automatic
//! checkpoints, whichever commit crosses the threshold pays for it — on the engine's loop,
//! stalling every start behind it. Instead the daemon's writing connections hand the WAL's size
//! to this thread after each commit ([`Checkpointer::poker`]), and it runs a PASSIVE checkpoint
//! (one that never blocks writers) once the store has been quiet for [`QUIET`], or as soon as the
//! WAL holds [`MAX_FRAMES`] under steady writes. So a steady stream of small commits pays for a
//! few large checkpoints rather than many small ones, and the WAL stays bounded.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::store::{Durability, Store};

/// A checkpoint follows once nothing has been committed for this long.
const QUIET: Duration = Duration::from_millis(200);
/// While commits keep coming, the WAL is looked at this often…
const STEP: Duration = Duration::from_millis(50);
/// … and checkpointed once it holds this many frames (64 MiB of 4 KiB pages: about 1,000 runs
/// enqueued, started and finished one by one, or a few thousand in batches).
const MAX_FRAMES: u32 = 16_384;

/// What the writing connections report.
#[derive(Default)]
struct Wal {
    /// Commits so far.
    commits: AtomicU64,
    /// Frames in the WAL after the last commit.
    frames: AtomicU32,
    /// The daemon is stopping: a last checkpoint, and the thread ends.
    stop: AtomicBool,
}

pub struct Checkpointer {
    poke: Option<SyncSender<()>>,
    wal: Arc<Wal>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `db`.
    pub fn start(db: PathBuf) -> std::io::Result<Checkpointer> {
        let (poke, pokes) = mpsc::sync_channel(1);
        let wal = Arc::new(Wal::default());
        let seen = wal.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || run(db, pokes, &seen))?;
        Ok(Checkpointer {
            poke: Some(poke),
            wal,
            thread: Some(thread),
        })
    }

    /// No thread: a PostgreSQL store checkpoints on its own server.
    pub fn none() -> Checkpointer {
        Checkpointer {
            poke: None,
            wal: Arc::default(),
            thread: None,
        }
    }

    /// What a writing connection calls after each commit, with the WAL's frames
    /// ([`crate::store::Store::checkpoint_elsewhere`]). Never blocks: it wakes the thread only
    /// when the thread sleeps for want of commits.
    pub fn poker(&self) -> impl Fn(u32) + Send + 'static {
        let (poke, wal) = (self.poke.clone(), self.wal.clone());
        move |frames| {
            wal.frames.store(frames, Ordering::Relaxed);
            wal.commits.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = &poke {
                // Full: the thread is awake already, or will be.
                let _ = p.try_send(());
            }
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the thread after a last checkpoint. (The writing connections may outlive this:
    /// they hold pokers, so the channel does not tell the thread to stop.)
    fn drop(&mut self) {
        self.wal.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.poke.take() {
            let _ = p.try_send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: PathBuf, pokes: Receiver<()>, wal: &Wal) {
    let store = match Store::open(&db, Durability::Normal) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer: cannot open the database; SQLite will checkpoint on its own");
            return;
        }
    };
    let checkpoint = || {
        if let Err(e) = store.checkpoint() {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    };
    let stopping = || wal.stop.load(Ordering::Relaxed);
    // Asleep until something is committed.
    while pokes.recv().is_ok() && !stopping() {
        let mut last = wal.commits.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        // Awake while commits keep coming: they poke a full channel, which costs them nothing.
        while !stopping() {
            std::thread::sleep(STEP);
            let _ = pokes.try_recv();
            let commits = wal.commits.load(Ordering::Relaxed);
            quiet = if commits == last {
                quiet + STEP
            } else {
                Duration::ZERO
            };
            last = commits;
            if quiet >= QUIET || wal.frames.load(Ordering::Relaxed) >= MAX_FRAMES {
                break;
            }
        }
        checkpoint();
    }
    checkpoint();
}
