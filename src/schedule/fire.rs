//! Firing schedules into the queue: each (schedule, fire instant) is recorded exactly once —
//! enqueued, or missed with the reason — in the same transaction as the run it creates.
//!
//! A schedule's *cursor* says up to which instant its fires have been handled; the `fires` table,
//! keyed by (schedule, fire instant), is the real guarantee: a fire already recorded is never
//! recorded or enqueued again, whatever the cursor says (a crash between two writes cannot happen —
//! they commit together — and a wall clock set back only makes the cursor lie in the future).
//!
//! Fires are split in two. Those before `live_since` — the instant from which the daemon has been
//! continuously running (its start, or a detected forward jump of the wall clock, which is what a
//! suspend looks like) — were missed while nobody was watching, and go through the schedule's
//! `catch_up` policy first. The rest are regular. Either kind then obeys `overlap`.

use crate::config::{CatchUp, Config, Overlap, ScheduleDef};
use crate::model::{RunId, RunState, Time, Trigger};
use crate::queue::{EnqueueError, Request, enqueue};

use crate::schedule::Fires;
use crate::store::{StoreError, Tx};

/// At most this many missed fires are enqueued or recorded one by one per pass; older ones are
/// recorded as one `dropped` summary.
pub const CATCH_UP_LIMIT: usize = 100;

/// What became of a fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    Enqueued(RunId),
    /// Not run, and why.
    Missed(String),
    /// A summary standing for `count` fires not run (older than the catch-up limit).
    Dropped {
        count: u64,
        reason: String,
    },
}

/// One recorded fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub schedule: String,
    pub job: String,
    pub fire_at: Time,
    pub fate: Fate,
}

/// Meta key: bumped whenever a schedule is paused or resumed, so the daemon knows to look again.
const SCHEDULES_CHANGED: &str = "schedules_changed";

/// How many times schedules were paused or resumed (the daemon compares it after a wake-up).
pub fn changes(tx: &Tx<'_>) -> Result<u64, StoreError> {
    Ok(tx
        .meta(SCHEDULES_CHANGED)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

fn changed(tx: &Tx<'_>) -> Result<(), StoreError> {
    let n = changes(tx)? + 1;
    tx.set_meta(SCHEDULES_CHANGED, &n.to_string())
}

/// Pauses a schedule (kept across restarts and reloads): it fires nothing until resumed. Returns
/// false if it was already paused.
pub fn pause(tx: &Tx<'_>, name: &str, now: Time) -> Result<bool, StoreError> {
    if !tx.pause_schedule(name, now)? {
        return Ok(false);
    }
    tx.set_schedule_cursor(name, now, false)?;
    changed(tx)?;
    Ok(true)
}

/// Resumes a paused schedule from `now`: the fires it would have had while paused are not caught
/// up. Returns false if it was not paused.
pub fn resume(tx: &Tx<'_>, name: &str, now: Time) -> Result<bool, StoreError> {
    if !tx.resume_schedule(name)? {
        return Ok(false);
    }
    tx.set_schedule_cursor(name, now, true)?;
    changed(tx)?;
    Ok(true)
}

/// Enqueues a run of a schedule's job now, as a person asked (trigger `manual`), with the
/// schedule's `env`. Not a fire: nothing is recorded in `fires`, and `overlap` does not apply.
pub fn trigger(
    tx: &Tx<'_>,
    config: &Config,
    sched: &ScheduleDef,
    now: Time,
) -> Result<RunId, EnqueueError> {
    let mut req = Request::new(sched.job.clone(), Trigger::Manual);
    req.env = sched.env.clone();
    Ok(enqueue(tx, config, &req, now)?.id)
}

/// Pure: what a catch-up policy makes of the fires missed while the daemon was not running.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatchUpPlan {
    /// Fires to run (subject to `overlap`), oldest first.
    pub run: Vec<Time>,
    /// Fires not run, with why.
    pub missed: Vec<(Time, String)>,
    /// How many older fires beyond the limit were dropped (recorded as one summary).
    pub dropped: u64,
}

const DOWN: &str = "missed while the daemon was not running";

pub fn plan_catch_up(policy: CatchUp, fires: &Fires) -> CatchUpPlan {
    let beyond = fires.total.saturating_sub(fires.times.len() as u64);
    let mut plan = CatchUpPlan {
        dropped: beyond,
        ..Default::default()
    };
    match policy {
        CatchUp::None => {
            plan.missed = fires
                .times
                .iter()
                .map(|t| (*t, format!("{DOWN} (catch_up: none)")))
                .collect();
        }
        CatchUp::Latest => {
            if let Some((last, older)) = fires.times.split_last() {
                plan.run.push(*last);
                plan.missed = older
                    .iter()
                    .map(|t| {
                        (
                            *t,
                            format!(
                                "{DOWN}; only the latest missed fire is run (catch_up: latest)"
                            ),
                        )
                    })
                    .collect();
            }
        }
        CatchUp::All => plan.run = fires.times.clone(),
    }
    plan
}

/// Pure: whether a fire may enqueue a run given the job's unfinished runs (`Err`: the reason it
/// is missed instead).
pub fn overlap_decision(
    policy: Overlap,
    job: &str,
    active: &[(RunId, RunState)],
) -> Result<(), String> {
    match policy {
        Overlap::Allow => Ok(()),
        Overlap::Skip => match active.first() {
            Some((id, state)) => Err(format!("overlap: skip: run {id} of {job} is still {state}")),
            None => Ok(()),
        },
        Overlap::Queue => match active.iter().find(|(_, s)| *s != RunState::Running) {
            Some((id, state)) => Err(format!(
                "overlap: queue: run {id} of {job} is already pending ({state})"
            )),
            None => Ok(()),
        },
    }
}

/// Brings the cursors in line with the configuration (at start and on reload): a new schedule
/// starts from `now` (no catch-up for the time before it existed); a disabled one keeps its
/// cursor at `now`, so enabling it later does not catch up the disabled time; a removed one is
/// forgotten.
pub fn sync_cursors(tx: &Tx<'_>, config: &Config, now: Time) -> Result<(), StoreError> {
    let paused = tx.paused_schedules()?;
    for s in &config.schedules {
        // Paused by a person counts as disabled: resuming catches nothing up.
        let enabled = s.enabled && !paused.contains_key(&s.name);
        match tx.schedule_cursor(&s.name)? {
            None => tx.set_schedule_cursor(&s.name, now, enabled)?,
            Some((_, was_enabled)) if !enabled || !was_enabled => {
                tx.set_schedule_cursor(&s.name, now, enabled)?
            }
            Some(_) => {}
        }
    }
    let names: Vec<&str> = config.schedules.iter().map(|s| s.name.as_str()).collect();
    tx.delete_other_cursors(&names)?;
    Ok(())
}

/// When `sched` fires next (the instant to wake for): the first fire after its cursor, which is
/// in the past when fires are waiting to be caught up.
pub fn next_due(tx: &Tx<'_>, sched: &ScheduleDef, now: Time) -> Result<Option<Time>, StoreError> {
    if !sched.enabled || tx.schedule_paused(&sched.name)?.is_some() {
        return Ok(None);
    }
    let cursor = tx
        .schedule_cursor(&sched.name)?
        .map(|(c, _)| c)
        .unwrap_or(now);
    Ok(sched.cron.next_after(sched.timezone, cursor))
}

/// Handles every fire of `sched` in (cursor, now]: records each, enqueuing a run where the
/// catch-up and overlap policies allow, and moves the cursor to `now`.
pub fn pass(
    tx: &Tx<'_>,
    config: &Config,
    sched: &ScheduleDef,
    now: Time,
    live_since: Time,
) -> Result<Vec<Fired>, StoreError> {
    let mut out = Vec::new();
    if !sched.enabled || tx.schedule_paused(&sched.name)?.is_some() {
        return Ok(out);
    }
    let Some((cursor, _)) = tx.schedule_cursor(&sched.name)? else {
        tx.set_schedule_cursor(&sched.name, now, true)?;
        return Ok(out);
    };
    if now <= cursor {
        return Ok(out);
    }
    let tz = sched.timezone;
    let mut regular_from = cursor;
    if cursor < live_since {
        let until = (live_since - chrono::Duration::milliseconds(1)).min(now);
        let missed = sched.cron.fires_between(tz, cursor, until, CATCH_UP_LIMIT);
        let plan = plan_catch_up(sched.catch_up, &missed);
        if plan.dropped > 0 {
            let first = sched.cron.next_after(tz, cursor).unwrap_or(cursor);
            let reason = format!(
                "{DOWN}: {} fires, of which only the latest {CATCH_UP_LIMIT} are considered (catch_up: {})",
                missed.total,
                sched.catch_up.as_str()
            );
            record(
                tx,
                config,
                sched,
                first,
                Fate::Dropped {
                    count: plan.dropped,
                    reason,
                },
                now,
                &mut out,
            )?;
        }
        let mut events: Vec<(Time, Option<String>)> =
            plan.missed.into_iter().map(|(t, r)| (t, Some(r))).collect();
        events.extend(plan.run.into_iter().map(|t| (t, None)));
        events.sort_by_key(|(t, _)| *t);
        for (t, missed_reason) in events {
            match missed_reason {
                Some(reason) => record(tx, config, sched, t, Fate::Missed(reason), now, &mut out)?,
                None => fire(tx, config, sched, t, now, &mut out)?,
            }
        }
        regular_from = until.max(cursor);
    }
    let regular = sched
        .cron
        .fires_between(tz, regular_from, now, CATCH_UP_LIMIT);
    if regular.total > regular.times.len() as u64 {
        let first = sched
            .cron
            .next_after(tz, regular_from)
            .unwrap_or(regular_from);
        let count = regular.total - regular.times.len() as u64;
        let reason = format!(
            "the daemon fell behind by {count} fires; only the latest {CATCH_UP_LIMIT} are considered"
        );
        record(
            tx,
            config,
            sched,
            first,
            Fate::Dropped { count, reason },
            now,
            &mut out,
        )?;
    }
    for t in regular.times {
        fire(tx, config, sched, t, now, &mut out)?;
    }
    tx.set_schedule_cursor(&sched.name, now, true)?;
    Ok(out)
}

/// One fire that may run: enqueue it unless `overlap` says no, and record it.
fn fire(
    tx: &Tx<'_>,
    config: &Config,
    sched: &ScheduleDef,
    at: Time,
    now: Time,
    out: &mut Vec<Fired>,
) -> Result<(), StoreError> {
    if tx.fire_recorded(&sched.name, at)? {
        return Ok(());
    }
    let active = tx.active_runs(&sched.job)?;
    if let Err(reason) = overlap_decision(sched.overlap, &sched.job, &active) {
        return record(tx, config, sched, at, Fate::Missed(reason), now, out);
    }
    let mut req = Request::new(sched.job.clone(), Trigger::Schedule);
    req.env = sched.env.clone();
    req.schedule = Some((sched.name.clone(), at));
    let fate = match enqueue(tx, config, &req, now) {
        Ok(e) => Fate::Enqueued(e.id),
        Err(EnqueueError::Store(e)) => return Err(e),
        // A validated schedule names a defined job; should that ever not hold, the fire is
        // recorded as missed rather than lost silently.
        Err(other) => Fate::Missed(format!("cannot enqueue: {other}")),
    };
    record(tx, config, sched, at, fate, now, out)
}

/// Records a fire (once) and what follows from it: a `missed` alert for a fire not run, and the
/// deadline by which its run must have succeeded (`late`).
fn record(
    tx: &Tx<'_>,
    config: &Config,
    sched: &ScheduleDef,
    at: Time,
    fate: Fate,
    now: Time,
    out: &mut Vec<Fired>,
) -> Result<(), StoreError> {
    let (outcome, reason, run, count) = match &fate {
        Fate::Enqueued(id) => ("enqueued", None, Some(*id), 1),
        Fate::Missed(r) => ("missed", Some(r.as_str()), None, 1),
        Fate::Dropped { count, reason } => ("dropped", Some(reason.as_str()), None, *count),
    };
    if tx.record_fire(
        &sched.name,
        at,
        &sched.job,
        outcome,
        reason,
        run,
        count,
        now,
    )? {
        if let (Some(d), Fate::Enqueued(_) | Fate::Missed(_)) = (sched.deadline, &fate) {
            tx.set_deadline(
                &sched.name,
                at,
                at + chrono::Duration::from_std(d).unwrap_or_default(),
            )?;
        }
        if let Fate::Missed(reason) | Fate::Dropped { reason, .. } = &fate {
            let mut e =
                crate::alert::Event::new(crate::model::EventKind::Missed, Some(&sched.job), now);
            e.schedule = Some(sched.name.clone());
            e.fire_at = Some(at);
            e.reason = Some(match &fate {
                Fate::Dropped { count, .. } => format!("{count} fires dropped: {reason}"),
                _ => reason.clone(),
            });
            crate::alert::raise(tx, config, e, now)?;
        }
        out.push(Fired {
            schedule: sched.name.clone(),
            job: sched.job.clone(),
            fire_at: at,
            fate,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
