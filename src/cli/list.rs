//! `worker list`.

use std::collections::BTreeMap;

use serde_json::json;

use super::output::{human, print_json, print_table, rfc3339, table};
use super::schedules::in_zone;
use super::{CliResult, Ctx};
use crate::config::{Config, JobDef, ScheduleDef};
use crate::model::Time;

/// The next fire of `job` over its enabled schedules that are not paused, with the schedule it
/// comes from.
fn next_fire<'c>(
    config: &'c Config,
    job: &'c JobDef,
    paused: &BTreeMap<String, Time>,
    now: Time,
) -> Option<(&'c ScheduleDef, Time)> {
    config
        .schedules_of(&job.name)
        .filter(|s| s.enabled && !paused.contains_key(&s.name))
        .filter_map(|s| s.cron.next_after(s.timezone, now).map(|t| (s, t)))
        .min_by_key(|(_, t)| *t)
}

pub fn run(ctx: &Ctx) -> CliResult {
    let config = ctx.config()?;
    let (data, mut store) = ctx.store()?;
    let (last, paused) = store.read(|tx| {
        Ok::<_, crate::store::StoreError>((tx.last_finished_per_job()?, tx.paused_schedules()?))
    })?;
    super::drift::warn(ctx, &data, &mut store);
    let now = chrono::Utc::now();
    if ctx.json {
        let jobs: Vec<_> = config
            .jobs
            .values()
            .map(|j| {
                let l = last.get(&j.name);
                json!({
                    "name": j.name,
                    "description": j.description,
                    "priority": j.priority,
                    "depends_on": j.dependency_names().collect::<Vec<_>>(),
                    "concurrency": j.concurrency,
                    "schedules": config.schedules_of(&j.name).map(|s| s.name.as_str()).collect::<Vec<_>>(),
                    "last_run": l.map(|(s, t)| json!({"state": s, "finished_at": rfc3339(*t)})),
                    "next_fire": next_fire(&config, j, &paused, now).map(|(s, t)| in_zone(s, t)),
                })
            })
            .collect();
        print_json(&json!(jobs));
        return Ok(());
    }
    if config.jobs.is_empty() {
        println!(
            "no jobs defined: add job files to {}",
            crate::config::display_path(&ctx.config_dir, "jobs/")
        );
        return Ok(());
    }
    let mut t = table(&[
        "NAME",
        "DESCRIPTION",
        "PRIORITY",
        "SCHEDULES",
        "LAST RUN",
        "NEXT FIRE",
    ]);
    for j in config.jobs.values() {
        let last_run = last
            .get(&j.name)
            .map(|(s, t)| format!("{s} {}", human(*t)))
            .unwrap_or_else(|| "-".into());
        let schedules: Vec<String> = config
            .schedules_of(&j.name)
            .map(|s| {
                if paused.contains_key(&s.name) {
                    format!("{} (paused)", s.name)
                } else {
                    s.name.clone()
                }
            })
            .collect();
        t.add_row(vec![
            j.name.clone(),
            j.description.clone().unwrap_or_else(|| "-".into()),
            j.priority.to_string(),
            if schedules.is_empty() {
                "-".into()
            } else {
                schedules.join(", ")
            },
            last_run,
            next_fire(&config, j, &paused, now)
                .map(|(_, t)| human(t))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    print_table(&t);
    Ok(())
}
