//! Alerts: events routed by rules to channels, throttled, and delivered from an outbox.
//!
//! [`raise`] is called inside the transaction of the state change that caused the event (a run
//! died, a fire was missed…): it matches the rules, applies each rule's throttle window, and writes
//! one outbox row per channel — `pending`, or `suppressed` inside a window — so an alert exists
//! exactly when its cause does. Delivery happens elsewhere ([`outbox`]), on its own connection and
//! task, so a slow or dead endpoint never delays a run.
//!
//! Throttling is per (rule, job) with a fixed window: the first alert opens it (and is sent);
//! alerts inside it are recorded as `suppressed`; when it ends, if any were suppressed, one summary
//! is sent (and opens the next window).

pub mod deliver;
pub mod message;
pub mod outbox;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Rule};
use crate::model::{EventKind, RunId, RunState, Time};
use crate::store::{NewAlert, StoreError, Tx, Window};

/// What an alert says. Stored as JSON in each outbox row, so delivery needs nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Event {
    /// An [`EventKind`] name, or `summary` (end of a throttle window), or `test`.
    pub event: String,
    pub job: Option<String>,
    pub run_id: Option<RunId>,
    pub attempt: Option<u32>,
    pub max_attempts: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The error or reason, in words.
    pub reason: Option<String>,
    pub duration_ms: Option<i64>,
    pub schedule: Option<String>,
    pub fire_at: Option<Time>,
    /// The last lines of the run's output.
    pub output: Option<String>,
    pub time: Time,
    /// For summaries: how many alerts the window suppressed, per event.
    pub suppressed: Option<BTreeMap<String, u64>>,
    /// For summaries: the rule and the window.
    pub rule: Option<String>,
    pub window_start: Option<Time>,
    /// The workflow step it is about (`step_failed`, `notify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// A `notify` step's message, sent as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A `notify` step's e-mail recipients and subject (instead of the channel's and ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// How many lines of output an alert carries.
pub const OUTPUT_LINES: usize = 20;

impl Event {
    pub fn new(kind: EventKind, job: Option<&str>, time: Time) -> Event {
        Event {
            event: kind.as_str().to_string(),
            job: job.map(str::to_string),
            time,
            ..Default::default()
        }
    }

    pub fn kind(&self) -> Option<EventKind> {
        EventKind::ALL
            .iter()
            .find(|(n, _)| *n == self.event)
            .map(|(_, k)| *k)
    }
}

/// Records `event` for every matching rule and channel. Call inside the transaction of the
/// change that caused it.
pub fn raise(tx: &Tx<'_>, config: &Config, mut event: Event, now: Time) -> Result<(), StoreError> {
    let Some(kind) = event.kind() else {
        return Ok(());
    };
    let rules: Vec<&Rule> = config
        .alerts
        .rules
        .iter()
        .filter(|r| r.matches(kind, event.job.as_deref()))
        .collect();
    if rules.is_empty() {
        return Ok(());
    }
    // Secrets never leave in an alert, whatever a job printed.
    event.reason = event.reason.map(|r| config.secrets.mask(&r));
    event.output = event.output.map(|o| config.secrets.mask(&o));
    let payload = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let job_key = event.job.clone().unwrap_or_default();
    for rule in rules {
        let status = if rule.throttle.is_zero() {
            "pending"
        } else {
            let mut w = tx.window(&rule.name, &job_key)?;
            if w.end.is_some_and(|end| end <= now) {
                close_window(tx, rule, &job_key, w, now)?;
                w = tx.window(&rule.name, &job_key)?;
            }
            if w.end.is_some_and(|end| end > now) {
                w.suppressed += 1;
                *w.kinds.entry(kind.as_str().to_string()).or_default() += 1;
                tx.set_window(&rule.name, &job_key, &w)?;
                "suppressed"
            } else {
                tx.set_window(
                    &rule.name,
                    &job_key,
                    &Window {
                        end: Some(after(now, rule.throttle)),
                        ..Default::default()
                    },
                )?;
                "pending"
            }
        };
        for channel in &rule.channels {
            tx.insert_alert(&NewAlert {
                rule: &rule.name,
                channel,
                job: event.job.as_deref(),
                event: &event.event,
                run_id: event.run_id,
                status,
                payload: &payload,
                now,
            })?;
        }
    }
    Ok(())
}

fn after(t: Time, d: Duration) -> Time {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Ends every throttle window due by `now`: one summary per window that suppressed anything.
/// Returns how many summaries were queued.
pub fn close_windows(tx: &Tx<'_>, config: &Config, now: Time) -> Result<usize, StoreError> {
    let mut n = 0;
    for (rule_name, job, w) in tx.ended_windows(now)? {
        match config.alerts.rules.iter().find(|r| r.name == rule_name) {
            Some(rule) => n += usize::from(close_window(tx, rule, &job, w, now)?),
            None => tx.set_window(&rule_name, &job, &Window::default())?,
        }
    }
    Ok(n)
}

/// Ends one window; returns whether a summary was queued.
fn close_window(
    tx: &Tx<'_>,
    rule: &Rule,
    job: &str,
    w: Window,
    now: Time,
) -> Result<bool, StoreError> {
    if w.suppressed == 0 {
        tx.set_window(&rule.name, job, &Window::default())?;
        return Ok(false);
    }
    let start = w
        .end
        .map(|e| e - chrono::Duration::from_std(rule.throttle).unwrap_or_default());
    let summary = Event {
        event: "summary".into(),
        job: (!job.is_empty()).then(|| job.to_string()),
        time: now,
        suppressed: Some(w.kinds.clone()),
        rule: Some(rule.name.clone()),
        window_start: start,
        reason: Some(format!(
            "{} alert{} suppressed by rule {} (throttle {}): {}",
            w.suppressed,
            if w.suppressed == 1 { "" } else { "s" },
            rule.name,
            crate::units::format_duration_spec(rule.throttle),
            w.kinds
                .iter()
                .map(|(k, n)| format!("{n}× {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        ..Default::default()
    };
    let payload =
        serde_json::to_string(&summary).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    for channel in &rule.channels {
        tx.insert_alert(&NewAlert {
            rule: &rule.name,
            channel,
            job: summary.job.as_deref(),
            event: "summary",
            run_id: None,
            status: "pending",
            payload: &payload,
            now,
        })?;
    }
    // The summary is this window's message: it opens the next one.
    tx.set_window(
        &rule.name,
        job,
        &Window {
            end: Some(after(now, rule.throttle)),
            ..Default::default()
        },
    )?;
    Ok(true)
}

/// Writes a workflow `notify` step's message to the outbox for `channel`, once per `dedupe` key
/// (whatever is retried). Returns the alert's id: the step ends when its delivery does.
pub fn notify(
    tx: &Tx<'_>,
    config: &Config,
    channel: &str,
    mut event: Event,
    dedupe: &str,
    now: Time,
) -> Result<i64, StoreError> {
    event.text = event.text.map(|t| config.secrets.mask(&t));
    let payload = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.insert_alert_once(
        &NewAlert {
            rule: "notify",
            channel,
            job: event.job.as_deref(),
            event: "notify",
            run_id: event.run_id,
            status: "pending",
            payload: &payload,
            now,
        },
        dedupe,
    )
}

/// Raises `late` for every fire whose deadline passed without its run succeeding in time.
pub fn check_deadlines(tx: &Tx<'_>, config: &Config, now: Time) -> Result<usize, StoreError> {
    let mut raised = 0;
    for d in tx.due_deadlines(now)? {
        let in_time =
            matches!(d.run, Some((_, RunState::Succeeded, Some(fin))) if fin <= d.deadline_at);
        if !in_time {
            let deadline = crate::units::format_duration_spec(
                (d.deadline_at - d.fire_at).to_std().unwrap_or_default(),
            );
            let why = match (&d.run, d.outcome.as_str()) {
                (None, _) => format!(
                    "it was not run ({})",
                    d.reason.clone().unwrap_or_else(|| d.outcome.clone())
                ),
                (Some((id, state, _)), _) => match state {
                    RunState::Running => format!("run {id} is still running"),
                    RunState::Retrying => format!("run {id} failed and is waiting to retry"),
                    RunState::Succeeded => format!("run {id} succeeded only after the deadline"),
                    RunState::Dead | RunState::Cancelled => format!("run {id} ended {state}"),
                    _ => format!("run {id} has not started ({state})"),
                },
            };
            let mut e = Event::new(EventKind::Late, Some(&d.job), now);
            e.run_id = d.run.as_ref().map(|(id, _, _)| *id);
            e.schedule = Some(d.schedule.clone());
            e.fire_at = Some(d.fire_at);
            e.reason = Some(format!(
                "not succeeded within {deadline} of its fire: {why}"
            ));
            raise(tx, config, e, now)?;
            raised += 1;
        }
        tx.clear_deadline(&d.schedule, d.fire_at)?;
    }
    Ok(raised)
}

#[cfg(test)]
mod tests;
