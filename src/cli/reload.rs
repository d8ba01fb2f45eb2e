//! `worker reload`: ask the running daemon to load the configuration again, and tell the
//! caller what it did — applied, or rejected with every problem — not merely that a signal went
//! out. (`systemctl reload worker` runs this, so systemd learns the outcome too.)

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use super::output::print_json;
use super::{CliError, CliResult, Ctx};
use crate::daemon::loaded;
use crate::datadir::running_daemon;
use crate::units::count;

/// How long to wait for the daemon's verdict (it loads between two turns of its loop).
const PATIENCE: Duration = Duration::from_secs(60);

pub fn run(ctx: &Ctx) -> CliResult {
    let (data, mut store) = ctx.store()?;
    let Some(daemon) = running_daemon(&data) else {
        return Err(CliError::Failed(format!(
            "no worker daemon is running on {}: nothing to reload (the next `worker daemon` loads the files as they are)",
            data.root().display()
        )));
    };
    // Recorded before the signal: the daemon answers every request it has seen when it loads.
    let request = store.write(loaded::request)?;
    let pid = i32::try_from(daemon.pid)
        .map_err(|_| CliError::Failed(format!("daemon pid {} is out of range", daemon.pid)))?;
    kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| {
        CliError::Failed(format!(
            "cannot signal the daemon (pid {pid}): {e}{}",
            if e == nix::errno::Errno::EPERM {
                " — run this as the daemon's user"
            } else {
                ""
            }
        ))
    })?;
    let start = Instant::now();
    let outcome = loop {
        if let Some(o) = store.read(loaded::outcome)?
            && o.request >= request
        {
            break o;
        }
        if running_daemon(&data).is_none_or(|d| d.pid != daemon.pid) {
            return Err(CliError::Failed(format!(
                "the daemon (pid {pid}) stopped before it answered the reload"
            )));
        }
        if start.elapsed() > PATIENCE {
            return Err(CliError::Failed(format!(
                "the daemon (pid {pid}) did not answer the reload within {}s (a version older than this command only logs its outcome)",
                PATIENCE.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    if ctx.json {
        print_json(&json!({
            "applied": outcome.applied,
            "pid": daemon.pid,
            "digest": outcome.digest,
            "changes": outcome.changes,
            "problems": outcome.problems,
        }));
    } else if outcome.applied {
        if outcome.changes.is_empty() {
            println!("the daemon (pid {pid}) reloaded the configuration: no file changed");
        } else {
            println!(
                "the daemon (pid {pid}) reloaded the configuration: {}",
                outcome.changes.join(", ")
            );
        }
    } else {
        for p in &outcome.problems {
            eprintln!("{p}");
        }
    }
    if outcome.applied {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "the daemon rejected the configuration ({}) and still runs the previous one",
            count(outcome.problems.len(), "problem")
        )))
    }
}
