//! The engine's schedule side: which schedules are due, firing them inside the engine's turn
//! transaction, and watching the wall clock for jumps.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::Engine;
use crate::model::Time;
use crate::schedule::fire::{self, Fate, Fired};
use crate::store::{StoreError, Tx};

/// A wall clock that moves this much more (or less) than the monotonic clock between two turns
/// has jumped (an NTP step, a manual change, or a suspend, during which the monotonic clock
/// stands still).
const JUMP: Duration = Duration::from_secs(2);

impl Engine {
    /// Aligns the schedule cursors with the configuration and recomputes every next fire.
    pub(super) fn sync_schedules(&mut self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let config = self.config.clone();
        let next = self.store.write(|tx| {
            fire::sync_cursors(tx, &config, now)?;
            let mut next = Vec::new();
            for s in &config.schedules {
                if let Some(t) = fire::next_due(tx, s, now)? {
                    next.push((s.name.clone(), t));
                }
            }
            Ok::<_, StoreError>(next)
        })?;
        self.next_fires = next.into_iter().collect();
        Ok(())
    }

    /// Indexes of the schedules with a fire at or before `now`.
    pub(super) fn due_schedules(&self, now: Time) -> Vec<usize> {
        self.config
            .schedules
            .iter()
            .enumerate()
            .filter(|(_, s)| self.next_fires.get(&s.name).is_some_and(|t| *t <= now))
            .map(|(i, _)| i)
            .collect()
    }

    /// The earliest next fire of any schedule.
    pub(super) fn next_fire(&self) -> Option<Time> {
        self.next_fires.values().min().copied()
    }

    /// Notices wall-clock jumps between turns. A forward jump means the daemon was not watching
    /// the instants in between (a suspend, or the clock stepped over them): from now on they
    /// count as missed while not running, so `catch_up` decides about them.
    pub(super) fn watch_clock(&mut self, now: Time) {
        let mono = Instant::now();
        if let Some((m0, w0)) = self.last_turn {
            match detect_jump(mono.duration_since(m0), w0, now) {
                Jump::Forward(d) => {
                    warn!(
                        jump_s = d.as_secs_f64(),
                        "the wall clock jumped forward (clock step or suspend): fires in between count as missed while not running; catch_up applies"
                    );
                    self.live_since = now;
                }
                Jump::Back(d) => {
                    warn!(
                        back_s = d.as_secs_f64(),
                        "the wall clock went back: fires already recorded will not run again"
                    );
                }
                Jump::None => {}
            }
        }
        self.last_turn = Some((mono, now));
    }
}

/// A discontinuity of the wall clock between two observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Jump {
    None,
    /// The wall clock moved this much more than the monotonic clock.
    Forward(Duration),
    /// The wall clock went back this much.
    Back(Duration),
}

/// Pure: compares the wall clock's progress (`w0` → `w1`) with the monotonic clock's (`elapsed`).
pub(super) fn detect_jump(elapsed: Duration, w0: Time, w1: Time) -> Jump {
    match (w1 - w0).to_std() {
        Ok(wall) if wall > elapsed + JUMP => Jump::Forward(wall - elapsed),
        Ok(_) => Jump::None,
        Err(_) => match (w0 - w1).to_std() {
            Ok(back) if back > JUMP => Jump::Back(back),
            _ => Jump::None,
        },
    }
}

/// What firing the due schedules produced.
#[derive(Default)]
pub(super) struct Firing {
    /// Every fire recorded (enqueued, missed, dropped).
    pub fired: Vec<Fired>,
    /// Each fired schedule's next fire (`None`: it will not fire again).
    pub next: Vec<(String, Option<Time>)>,
}

/// Fires the due schedules in `tx`.
pub(super) fn fire_due(
    tx: &Tx<'_>,
    config: &crate::config::Config,
    due: &[usize],
    now: Time,
    live_since: Time,
) -> Result<Firing, StoreError> {
    let mut out = Firing::default();
    for &i in due {
        let s = &config.schedules[i];
        out.fired
            .extend(fire::pass(tx, config, s, now, live_since)?);
        out.next.push((s.name.clone(), fire::next_due(tx, s, now)?));
    }
    Ok(out)
}

/// Logs what a pass recorded.
pub(super) fn log_fired(fired: &[Fired], now: Time) {
    for f in fired {
        let lag_ms = (now - f.fire_at).num_milliseconds();
        match &f.fate {
            Fate::Enqueued(run) => {
                info!(schedule = %f.schedule, job = %f.job, run = *run, fire_at = %f.fire_at.to_rfc3339(), lag_ms, "schedule fired")
            }
            Fate::Missed(reason) => {
                warn!(schedule = %f.schedule, job = %f.job, fire_at = %f.fire_at.to_rfc3339(), reason = %reason, "schedule fire missed")
            }
            Fate::Dropped { count, reason } => {
                warn!(schedule = %f.schedule, job = %f.job, count = *count, reason = %reason, "schedule fires dropped")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_are_told_apart_from_normal_progress() {
        let w0 = chrono::DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .to_utc();
        let after = |s: i64| w0 + chrono::Duration::seconds(s);
        let secs = Duration::from_secs;
        assert_eq!(detect_jump(secs(60), w0, after(60)), Jump::None);
        assert_eq!(
            detect_jump(secs(60), w0, after(61)),
            Jump::None,
            "a second of drift is not a jump"
        );
        assert_eq!(
            detect_jump(secs(5), w0, after(3605)),
            Jump::Forward(secs(3600)),
            "a suspend: wall moved, monotonic did not"
        );
        assert_eq!(
            detect_jump(secs(1), w0, after(-3600)),
            Jump::Back(secs(3600))
        );
        assert_eq!(detect_jump(secs(0), w0, after(-1)), Jump::None);
    }
}
