//! `worker schedules` and `worker fires`.

use chrono::DateTime;
use serde_json::{Value, json};

use super::output::{human, print_json, print_table, table};
use super::{CliError, CliResult, Ctx};
use crate::config::ScheduleDef;
use crate::model::Time;
use crate::store::StoreError;

pub use crate::objects::in_zone;

/// A fire time for the table: the schedule's own zone, or UTC under `--utc`.
fn fire_time(s: &ScheduleDef, t: Time) -> String {
    super::output::in_zone(s.timezone, t)
}

pub fn schedules(ctx: &Ctx, next: usize, from: Option<String>) -> CliResult {
    let config = ctx.config()?;
    let from = match from {
        Some(f) => DateTime::parse_from_rfc3339(&f)
            .map(|t| t.to_utc())
            .map_err(|e| CliError::Usage(format!("--from: `{f}` is not an RFC 3339 time ({e})")))?,
        None => chrono::Utc::now(),
    };
    let (data, mut store) = ctx.store()?;
    super::drift::warn(ctx, &data, &mut store);
    let (last, paused) = store.read(|tx| {
        let last = config
            .schedules
            .iter()
            .map(|s| tx.last_fire(&s.name))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok::<_, StoreError>((last, tx.paused_schedules()?))
    })?;
    let nexts: Vec<Vec<Time>> = config
        .schedules
        .iter()
        .map(|s| {
            if s.enabled && !paused.contains_key(&s.name) {
                s.cron.next_n(s.timezone, from, next)
            } else {
                Vec::new()
            }
        })
        .collect();
    if ctx.json {
        let v = store.read(|tx| crate::objects::schedules(tx, &config, next, from))?;
        print_json(&Value::Array(v));
        return Ok(());
    }
    if config.schedules.is_empty() {
        println!(
            "no schedules: add them under `schedules:` in {}",
            crate::config::display_path(&ctx.config_dir, "scheduler.yaml")
        );
        return Ok(());
    }
    let mut t = table(&[
        "NAME",
        "JOB",
        "CRON",
        "TIMEZONE",
        "CATCH-UP",
        "OVERLAP",
        "ENABLED",
        "LAST FIRE",
        "NEXT",
    ]);
    for ((s, l), n) in config.schedules.iter().zip(&last).zip(&nexts) {
        let last = match l {
            None => "-".to_string(),
            Some(f) => match f.run_id {
                Some(run) => format!("{} (run {run})", fire_time(s, f.fire_at)),
                None => format!("{} ({})", fire_time(s, f.fire_at), f.outcome),
            },
        };
        let next = if s.enabled && !paused.contains_key(&s.name) {
            n.iter()
                .map(|t| fire_time(s, *t))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            "-".into()
        };
        t.add_row(vec![
            s.name.clone(),
            s.job.clone(),
            s.cron.as_str().to_string(),
            s.timezone.name().to_string(),
            s.catch_up.as_str().into(),
            s.overlap.as_str().into(),
            match (s.enabled, paused.get(&s.name)) {
                (false, _) => "no".into(),
                (true, Some(at)) => format!("paused since {}", human(*at)),
                (true, None) => "yes".into(),
            },
            last,
            next,
        ]);
    }
    print_table(&t);
    Ok(())
}

pub fn fires(ctx: &Ctx, schedule: Option<String>, limit: u32) -> CliResult {
    let (_, mut store) = ctx.store()?;
    let fires = store.read(|tx| tx.fires(schedule.as_deref(), limit))?;
    if ctx.json {
        let v: Vec<Value> = fires
            .iter()
            .map(|f| {
                json!({
                    "schedule": f.schedule,
                    "job": f.job,
                    "fire_at": super::output::rfc3339(f.fire_at),
                    "outcome": f.outcome,
                    "run_id": f.run_id,
                    "count": f.count,
                    "reason": f.reason,
                    "recorded_at": super::output::rfc3339(f.recorded_at),
                })
            })
            .collect();
        print_json(&Value::Array(v));
        return Ok(());
    }
    if fires.is_empty() {
        println!("no fires recorded yet");
        return Ok(());
    }
    let mut t = table(&["FIRE TIME", "SCHEDULE", "JOB", "OUTCOME", "RUN", "REASON"]);
    for f in &fires {
        let outcome = if f.count > 1 {
            format!("{} ×{}", f.outcome, f.count)
        } else {
            f.outcome.clone()
        };
        t.add_row(vec![
            human(f.fire_at),
            f.schedule.clone(),
            f.job.clone(),
            outcome,
            f.run_id
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            f.reason.clone().unwrap_or_default(),
        ]);
    }
    print_table(&t);
    Ok(())
}

/// `schedules:pause` and `schedules:resume`.
pub fn pause(ctx: &Ctx, name: &str, pause: bool) -> CliResult {
    let config = ctx.config()?;
    let (data, mut store) = ctx.store()?;
    let changed = crate::ops::pause(&data, &mut store, &config, name, pause, chrono::Utc::now())?;
    let said = match (pause, changed) {
        (true, true) => format!(
            "schedule {name} paused: it fires nothing until `worker schedules:resume {name}`"
        ),
        (true, false) => format!("schedule {name} was already paused"),
        (false, true) => format!(
            "schedule {name} resumed: it fires from now on (the paused time is not caught up)"
        ),
        (false, false) => format!("schedule {name} was not paused"),
    };
    if ctx.json {
        print_json(&json!({"schedule": name, "paused": pause, "changed": changed}));
    } else {
        println!("{said}");
    }
    Ok(())
}

/// `schedules:trigger`.
pub fn trigger(ctx: &Ctx, name: &str) -> CliResult {
    let config = ctx.config()?;
    let (data, mut store) = ctx.store()?;
    let id = crate::ops::trigger(&data, &mut store, &config, name, chrono::Utc::now())?;
    if ctx.json {
        let run = store.read(|tx| tx.run(id))?;
        print_json(&Value::Array(
            run.iter().map(super::output::run_json).collect(),
        ));
    } else {
        println!("{id}");
    }
    Ok(())
}
