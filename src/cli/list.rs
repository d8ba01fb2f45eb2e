//! `worker list`.

use serde_json::json;

use super::output::{local, print_json, print_table, table};
use super::{CliResult, Ctx};

pub fn run(ctx: &Ctx) -> CliResult {
    let config = ctx.config()?;
    let (_, mut store) = ctx.store()?;
    let last = store.read(|tx| tx.last_finished_per_job())?;
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
                    "schedules": Vec::<String>::new(),
                    "last_run": l.map(|(s, t)| json!({"state": s, "finished_at": super::output::rfc3339(*t)})),
                    "next_fire": null,
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
            .map(|(s, t)| format!("{s} {}", local(*t)))
            .unwrap_or_else(|| "-".into());
        t.add_row(vec![
            j.name.clone(),
            j.description.clone().unwrap_or_else(|| "-".into()),
            j.priority.to_string(),
            "-".into(),
            last_run,
            "-".into(),
        ]);
    }
    print_table(&t);
    Ok(())
}
