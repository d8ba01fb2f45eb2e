//! `worker nodes`: the daemons that share the store, their heartbeats and what they run.

use serde_json::Value;

use super::output::{human, print_json, print_table, table};
use super::{CliResult, Ctx};
use crate::units::format_duration;

pub fn run(ctx: &Ctx) -> CliResult {
    let (_, mut store) = ctx.store()?;
    let nodes = store.read(|tx| tx.nodes())?;
    if ctx.json {
        print_json(&Value::Array(
            nodes.iter().map(crate::objects::node).collect(),
        ));
        return Ok(());
    }
    if nodes.is_empty() {
        println!("no nodes: no daemon has run on this store yet");
        return Ok(());
    }
    let mut t = table(&[
        "NODE",
        "STATE",
        "HOST",
        "PID",
        "VERSION",
        "STARTED",
        "LAST HEARTBEAT",
        "RUNNING",
    ]);
    for n in &nodes {
        t.add_row(vec![
            n.name.clone(),
            n.state.clone(),
            n.host.clone(),
            n.pid.to_string(),
            n.version.clone(),
            human(n.started_at),
            format!("{} ago", format_duration(n.silent_for)),
            n.running.to_string(),
        ]);
    }
    print_table(&t);
    Ok(())
}
