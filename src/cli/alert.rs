//! `worker alert:list`, `alert:test`, `alert:history`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::output::{human, opt_human, print_json, print_table, rfc3339, table};
use super::{CliError, CliResult, Ctx};
use crate::alert::Event;
use crate::alert::deliver::Deliverer;
use crate::store::{NewAlert, StoreError};

/// `alert:test` makes one attempt with this limit.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn list(ctx: &Ctx) -> CliResult {
    let config = ctx.config()?;
    let (_, mut store) = ctx.store()?;
    let last = store.read(|tx| tx.last_sent_per_rule())?;
    let a = &config.alerts;
    if ctx.json {
        let mut v: Vec<Value> = a
            .channels
            .values()
            .map(|c| json!({"kind": "channel", "name": c.name, "type": c.type_name(), "target": config.secrets.mask(&c.target_masked())}))
            .collect();
        v.extend(a.rules.iter().map(|r| {
            json!({
                "kind": "rule",
                "name": r.name,
                "events": r.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                "jobs": r.jobs.iter().map(|(j, _)| j.as_str()).collect::<Vec<_>>(),
                "channels": r.channels,
                "throttle": crate::units::format_duration_spec(r.throttle),
                "last_sent": last.get(&r.name).map(|t| rfc3339(*t)),
            })
        }));
        print_json(&Value::Array(v));
        return Ok(());
    }
    if a.channels.is_empty() && a.rules.is_empty() {
        println!(
            "no alerts configured: add channels and rules to {}",
            crate::config::display_path(&ctx.config_dir, "alerts.yaml")
        );
        return Ok(());
    }
    let mut t = table(&["CHANNEL", "TYPE", "TARGET"]);
    for c in a.channels.values() {
        t.add_row(vec![
            c.name.clone(),
            c.type_name().to_string(),
            config.secrets.mask(&c.target_masked()),
        ]);
    }
    print_table(&t);
    println!();
    let mut t = table(&[
        "RULE",
        "EVENTS",
        "JOBS",
        "CHANNELS",
        "THROTTLE",
        "LAST SENT",
    ]);
    for r in &a.rules {
        t.add_row(vec![
            r.name.clone(),
            r.events
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            r.jobs
                .iter()
                .map(|(j, _)| j.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            r.channels.join(", "),
            if r.throttle.is_zero() {
                "-".into()
            } else {
                crate::units::format_duration_spec(r.throttle)
            },
            opt_human(last.get(&r.name).copied()),
        ]);
    }
    print_table(&t);
    Ok(())
}

pub fn test(ctx: &Ctx, name: &str) -> CliResult {
    let config = Arc::new(ctx.config()?);
    let Some(channel) = config.alerts.channels.get(name) else {
        let known: Vec<&str> = config.alerts.channels.keys().map(String::as_str).collect();
        let hint = crate::config::yaml::closest(name, &known)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(CliError::Usage(format!("unknown channel `{name}`{hint}")));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    let deliverer = Deliverer::new(TEST_TIMEOUT).map_err(CliError::Failed)?;
    let now = chrono::Utc::now();
    let mut event = Event {
        event: "test".into(),
        time: now,
        ..Default::default()
    };
    event.reason = Some(format!(
        "a test of channel {name}, sent by `worker alert:test`"
    ));
    let result = runtime.block_on(deliverer.send(channel, &event, &config.secrets));
    // Recorded like any alert, so alert:history shows the test too.
    let (_, mut store) = ctx.store()?;
    let payload = serde_json::to_string(&event).unwrap_or_default();
    let (status, error) = match &result {
        Ok(()) => ("sent", None),
        Err(f) => ("failed", Some(config.secrets.mask(f.error()))),
    };
    store.write(|tx| {
        let id = tx.insert_alert(&NewAlert {
            rule: "alert:test",
            channel: name,
            job: None,
            event: "test",
            run_id: None,
            status: "pending",
            payload: &payload,
            now,
        })?;
        tx.alert_attempted(id, chrono::Utc::now(), status, None, error.as_deref())?;
        Ok::<_, StoreError>(())
    })?;
    match result {
        Ok(()) => {
            if ctx.json {
                print_json(&json!({"channel": name, "status": "sent"}));
            } else {
                println!(
                    "test alert delivered through {name} ({})",
                    channel.type_name()
                );
            }
            Ok(())
        }
        Err(f) => {
            let msg = config.secrets.mask(f.error());
            if ctx.json {
                print_json(&json!({"channel": name, "status": "failed", "error": msg}));
            }
            Err(CliError::Failed(format!(
                "delivery through {name} failed: {msg}"
            )))
        }
    }
}

pub fn history(ctx: &Ctx, limit: u32) -> CliResult {
    // The configuration only lends its secrets, to mask errors once more; a broken one has none.
    let secrets = crate::config::Config::load(&ctx.config_dir)
        .map(|c| c.secrets)
        .unwrap_or_default();
    let (_, mut store) = ctx.store()?;
    let alerts = store.read(|tx| tx.alerts(limit, None))?;
    if ctx.json {
        let v: Vec<Value> = alerts
            .iter()
            .map(|a| crate::objects::alert(a, &secrets))
            .collect();
        print_json(&Value::Array(v));
        return Ok(());
    }
    if alerts.is_empty() {
        println!("no alerts yet");
        return Ok(());
    }
    let mut t = table(&[
        "ID", "TIME", "RULE", "CHANNEL", "JOB", "EVENT", "RUN", "STATUS", "ATTEMPTS", "ERROR",
    ]);
    for a in &alerts {
        t.add_row(vec![
            a.id.to_string(),
            human(a.created_at),
            a.rule.clone(),
            a.channel.clone(),
            a.job.clone().unwrap_or_else(|| "-".into()),
            a.event.clone(),
            a.run_id
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            a.status.clone(),
            a.attempts.to_string(),
            a.error
                .as_deref()
                .map(|e| secrets.mask(e))
                .unwrap_or_default(),
        ]);
    }
    print_table(&t);
    Ok(())
}
