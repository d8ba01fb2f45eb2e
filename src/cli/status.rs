//! `worker status`: is the daemon alive, and what state is everything in. Exit 0 when healthy,
//! 1 otherwise, so it serves as a health check.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::drift::DaemonView;
use super::output::{human, opt_human, print_json, print_table, rfc3339, run_json, table};
use super::schedules::in_zone;
use super::{CliError, CliResult, Ctx};
use crate::VERSION;
use crate::config::Config;
use crate::datadir::DAEMON_LEASE;
use crate::store::{RunFilter, StoreError};
use crate::units::{count, format_duration};

/// The daemon records a heartbeat every minute; older than this, it is presumed stuck.
const STALE: chrono::TimeDelta = chrono::TimeDelta::seconds(180);

pub fn run(ctx: &Ctx) -> CliResult {
    let (data, mut store) = ctx.store()?;
    let view = DaemonView::read(&data, &mut store)?;
    let daemon = view.info.clone();
    let (counts, heartbeat, dead, failures, owners, paused, nodes) = store.read(|tx| {
        Ok::<_, StoreError>((
            tx.state_counts()?,
            tx.meta("heartbeat")?,
            tx.list_runs(&RunFilter {
                dlq: true,
                limit: Some(5),
                ..Default::default()
            })?,
            tx.alerts(5, Some("failed"))?,
            tx.running()?,
            tx.paused_schedules()?,
            tx.nodes()?,
        ))
    })?;
    let shared = data.shared_store();
    let live: Vec<&str> = nodes
        .iter()
        .filter(|n| n.state == "live")
        .map(|n| n.name.as_str())
        .collect();
    let now = chrono::Utc::now();
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let config = match Config::load(&ctx.config_dir) {
        Ok(c) => Some(c),
        Err(d) => {
            problems.push(format!(
                "the configuration has {}: run `worker validate`",
                count(d.len(), "problem")
            ));
            None
        }
    };
    let drift = view.drift(&ctx.config_dir);
    if let Some(d) = &drift {
        warnings.push(d.message());
    }
    // Runs whose owner died: they are recovered, but not by this command (it only looks).
    let mut orphaned: BTreeMap<String, usize> = BTreeMap::new();
    for r in &owners {
        if let Some(o) = &r.owner {
            // Nodes and other hosts' processes are looked after by the nodes (`worker nodes`).
            if crate::store::owner_node(o).is_some() || (data.shared_store() && !data.has_lease(o))
            {
                continue;
            }
            let ours = o == DAEMON_LEASE && daemon.is_some();
            if !ours && !data.lease_alive(o) {
                *orphaned.entry(o.clone()).or_default() += 1;
            }
        }
    }
    for (owner, n) in &orphaned {
        let who = if owner == DAEMON_LEASE {
            "a daemon that is no longer running".to_string()
        } else {
            format!("`worker job` process {owner}, which died")
        };
        let when = match (owner == DAEMON_LEASE, daemon.is_some()) {
            (true, _) | (false, false) => "the daemon recovers them when it starts",
            (false, true) => {
                "the daemon recovers them at its next housekeeping pass (within a minute)"
            }
        };
        warnings.push(format!(
            "{} left running by {who}: {when}",
            count(*n, "run")
        ));
    }
    let heartbeat = heartbeat
        .and_then(|h| chrono::DateTime::parse_from_rfc3339(&h).ok())
        .map(|t| t.to_utc());
    let started = daemon
        .as_ref()
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d.started).ok())
        .map(|t| t.to_utc());
    match &daemon {
        // A shared store is served by its nodes, wherever they run.
        None if shared && !live.is_empty() => warnings.push(format!(
            "no daemon runs on this host ({}); the store is served by {}",
            data.root().display(),
            count(live.len(), "live node")
        )),
        None if shared => problems.push("no node is live on the store: start a daemon".into()),
        None => problems.push(format!(
            "no worker daemon is running on {}",
            data.root().display()
        )),
        // On a shared store every node writes its own heartbeat (see `nodes`).
        Some(_) if shared => {}
        Some(_) => match heartbeat {
            Some(h) if now - h > STALE => problems.push(format!(
                "the daemon's last heartbeat was {} ago: it may be stuck",
                format_duration((now - h).to_std().unwrap_or_default())
            )),
            None => problems.push("the daemon has recorded no heartbeat yet".into()),
            _ => {}
        },
    }
    let mut next: Vec<(String, String, chrono::DateTime<chrono::Utc>, String)> = config
        .iter()
        .flat_map(|c| c.schedules.iter())
        .filter(|s| s.enabled && !paused.contains_key(&s.name))
        .filter_map(|s| {
            s.cron
                .next_after(s.timezone, now)
                .map(|t| (s.name.clone(), s.job.clone(), t, in_zone(s, t)))
        })
        .collect();
    next.sort_by_key(|(_, _, t, _)| *t);
    next.truncate(5);
    let healthy = problems.is_empty();
    let uptime = started.map(|s| (now - s).to_std().unwrap_or_default());

    if ctx.json {
        print_json(&json!({
            "healthy": healthy,
            "problems": problems,
            "warnings": warnings,
            "version": VERSION,
            "daemon": daemon.as_ref().map(|d| json!({
                "pid": d.pid,
                "started_at": started.map(rfc3339),
                "uptime_s": uptime.map(|u| u.as_secs()),
                "version": d.version,
                "heartbeat_at": heartbeat.map(rfc3339),
                "config": view.loaded.as_ref().map(|l| json!({
                    "digest": l.digest,
                    "loaded_at": rfc3339(l.loaded_at),
                    "in_sync_with_disk": drift.is_none(),
                    "changes": drift.as_ref().map(|d| d.json()["changes"].clone()),
                })),
            })),
            "nodes": nodes.iter().map(crate::objects::node).collect::<Vec<_>>(),
            "runs": counts,
            "next_fires": next.iter().map(|(n, j, _, at)| json!({"schedule": n, "job": j, "at": at})).collect::<Vec<_>>(),
            "dead": dead.iter().map(run_json).collect::<Vec<_>>(),
            "alert_failures": failures.iter().map(|a| json!({
                "id": a.id, "time": rfc3339(a.created_at), "rule": a.rule, "channel": a.channel,
                "job": a.job, "event": a.event, "attempts": a.attempts, "error": a.error,
            })).collect::<Vec<Value>>(),
        }));
    } else {
        println!("worker     {VERSION}");
        match &daemon {
            Some(d) => {
                let version = if d.version == VERSION {
                    "the same version".to_string()
                } else {
                    format!("version {}", d.version)
                };
                println!(
                    "daemon     running: pid {}, up {}, {version}, last heartbeat {}",
                    d.pid,
                    uptime.map(format_duration).unwrap_or_else(|| "?".into()),
                    opt_human(heartbeat)
                );
                if let Some(l) = &view.loaded {
                    println!(
                        "config     loaded {}{}",
                        human(l.loaded_at),
                        if drift.is_none() {
                            ", as on disk"
                        } else {
                            ", files changed since (see below)"
                        }
                    );
                }
            }
            None => println!("daemon     not running"),
        }
        if shared {
            let dead: Vec<&str> = nodes
                .iter()
                .filter(|n| n.state == "dead")
                .map(|n| n.name.as_str())
                .collect();
            println!("store      PostgreSQL {}", data.store_location().shown());
            println!(
                "nodes      {} live{}{} (`worker nodes` for details)",
                live.len(),
                if live.is_empty() {
                    String::new()
                } else {
                    format!(": {}", live.join(", "))
                },
                if dead.is_empty() {
                    String::new()
                } else {
                    format!("; {} dead: {}", dead.len(), dead.join(", "))
                }
            );
        }
        let get = |s: &str| counts.get(s).copied().unwrap_or(0);
        println!(
            "runs       {} running, {} queued, {} waiting, {} delayed, {} retrying, {} suspended, {} succeeded, {} dead, {} cancelled",
            get("running"),
            get("queued"),
            get("waiting"),
            get("delayed"),
            get("retrying"),
            get("suspended"),
            get("succeeded"),
            get("dead"),
            get("cancelled")
        );
        if !next.is_empty() {
            println!("\nnext fires");
            let mut t = table(&["SCHEDULE", "JOB", "AT"]);
            for (n, j, when, _) in &next {
                t.add_row(vec![n.clone(), j.clone(), human(*when)]);
            }
            print_table(&t);
        }
        if !dead.is_empty() {
            println!("\nlast dead runs");
            let mut t = table(&["ID", "JOB", "REASON", "DIED AT"]);
            for r in &dead {
                t.add_row(vec![
                    r.id.to_string(),
                    r.job.clone(),
                    r.error.clone().unwrap_or_default(),
                    opt_human(r.finished_at),
                ]);
            }
            print_table(&t);
        }
        if !failures.is_empty() {
            println!("\nlast alert failures");
            let mut t = table(&["ID", "TIME", "CHANNEL", "EVENT", "ERROR"]);
            for a in &failures {
                t.add_row(vec![
                    a.id.to_string(),
                    human(a.created_at),
                    a.channel.clone(),
                    a.event.clone(),
                    a.error.clone().unwrap_or_default(),
                ]);
            }
            print_table(&t);
        }
        println!();
        for w in &warnings {
            println!("warning: {w}");
        }
        if healthy {
            println!("healthy");
        } else {
            for p in &problems {
                println!("problem: {p}");
            }
            println!("UNHEALTHY: {}", count(problems.len(), "problem"));
        }
    }
    if healthy {
        Ok(())
    } else {
        Err(CliError::Exit(1))
    }
}
