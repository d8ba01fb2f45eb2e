//! Waiting for the write lock. SQLite's own busy handler sleeps (1, 2, 5, 10 … ms) and tries
//! again, so a writer that just missed the lock waits at least a millisecond, even when the
//! holder is another connection of this same process that lets go a few microseconds later —
//! the daemon's engine and the API's enqueue thread take turns like that all the time.
//!
//! This handler keeps SQLite's schedule as an upper bound for each pause (another process's
//! writer can only be polled), but every connection of the process that ends a write
//! transaction says so ([`released`]), and whoever waits in this process tries again at once.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::BUSY_TIMEOUT;

/// SQLite's own pauses (`sqliteDefaultBusyCallback`): the n-th wait's longest pause.
const PAUSES_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

struct Releases {
    /// Write transactions of this process ended so far.
    count: u64,
    /// Threads waiting in [`busy`].
    waiters: u32,
}

static RELEASES: Mutex<Releases> = Mutex::new(Releases {
    count: 0,
    waiters: 0,
});
static RELEASED: Condvar = Condvar::new();

thread_local! {
    /// When this thread's current wait began, and the releases it has seen.
    static WAIT: Cell<(Option<Instant>, u64)> = const { Cell::new((None, 0)) };
}

fn releases() -> MutexGuard<'static, Releases> {
    // The counter stays meaningful whatever a panicking holder left behind.
    RELEASES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Called before a transaction asks for the write lock: a release after this instant (between
/// SQLite's refusal and the handler's first call) is not waited for.
pub(super) fn arm() {
    let seen = releases().count;
    WAIT.with(|w| w.set((None, seen)));
}

/// A write transaction of this process ended (committed or rolled back).
pub(super) fn released() {
    let mut r = releases();
    r.count = r.count.wrapping_add(1);
    if r.waiters > 0 {
        RELEASED.notify_all();
    }
}

/// The busy handler: `attempt` counts this wait's calls from 0. Returns whether SQLite should
/// try again (after [`BUSY_TIMEOUT`] in all, it gives up and the statement fails `BUSY`).
pub(super) fn busy(attempt: i32) -> bool {
    let now = Instant::now();
    let (since, seen) = WAIT.with(Cell::get);
    let since = match since {
        Some(s) if attempt > 0 => s,
        _ => now,
    };
    let waited = now.duration_since(since);
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    let pause = Duration::from_millis(PAUSES_MS[(attempt as usize).min(PAUSES_MS.len() - 1)])
        .min(BUSY_TIMEOUT - waited);
    let seen = wait_for_release(seen, pause);
    WAIT.with(|w| w.set((Some(since), seen)));
    true
}

/// Waits up to `pause` for a release after the `seen`-th; returns the releases seen by then.
fn wait_for_release(seen: u64, pause: Duration) -> u64 {
    let mut r = releases();
    if r.count == seen {
        r.waiters += 1;
        r = RELEASED
            .wait_timeout_while(r, pause, |r| r.count == seen)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        r.waiters -= 1;
    }
    r.count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_in_this_process_ends_the_wait_at_once() {
        let seen = releases().count;
        // A pause far longer than the test: only a release ends it.
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            wait_for_release(seen, Duration::from_secs(600));
            started.elapsed()
        });
        while releases().waiters == 0 && !waiter.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        released();
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(300), "waited {waited:?}");
    }

    #[test]
    fn a_release_before_the_wait_is_not_waited_for() {
        let seen = releases().count;
        released();
        let started = Instant::now();
        assert!(wait_for_release(seen, Duration::from_secs(600)) > seen);
        assert!(started.elapsed() < Duration::from_secs(300));
    }

    #[test]
    fn the_handler_gives_up_after_the_timeout() {
        arm();
        assert!(busy(0));
        WAIT.with(|w| w.set((Some(Instant::now() - BUSY_TIMEOUT), releases().count)));
        assert!(!busy(5));
        // A new wait starts its own clock.
        assert!(busy(0));
    }
}
