//! Time, injectable: the daemon asks a [`Clock`] for "now", so schedules, backoff and throttling
//! can be driven deterministically in tests.

use std::sync::Mutex;

use crate::model::Time;

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Time;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        chrono::Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<Time>);

impl ManualClock {
    pub fn new(start: Time) -> ManualClock {
        ManualClock(Mutex::new(start))
    }

    pub fn set(&self, t: Time) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    pub fn advance(&self, d: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
