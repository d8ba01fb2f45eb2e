//! `worker list`.

use super::output::{human, print_json, print_table, table};
use super::{CliResult, Ctx};

pub fn run(ctx: &Ctx) -> CliResult {
    let config = ctx.config()?;
    let (data, mut store) = ctx.store()?;
    let (last, paused) = store.read(|tx| {
        Ok::<_, crate::store::StoreError>((tx.last_finished_per_job()?, tx.paused_schedules()?))
    })?;
    super::drift::warn(ctx, &data, &mut store);
    let now = chrono::Utc::now();
    if ctx.json {
        let jobs = store.read(|tx| crate::objects::jobs(tx, &config, now))?;
        print_json(&serde_json::Value::Array(jobs));
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
            crate::objects::next_fire(&config, &j.name, &paused, now)
                .map(|(_, t)| human(t))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    print_table(&t);
    Ok(())
}
