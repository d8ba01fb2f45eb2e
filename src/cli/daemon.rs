//! `worker daemon`.

use std::sync::Arc;

use super::{CliError, CliResult, Ctx};
use crate::clock::SystemClock;
use crate::daemon::{self, DaemonError, Options};

pub fn run(ctx: &Ctx) -> CliResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    // Workflow steps get a thread of their own: their HTTP and SQL work runs beside the engine's
    // loop instead of taking turns with it.
    let steps = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("worker-steps")
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the steps' runtime: {e}")))?;
    let opts = Options {
        config_dir: ctx.config_dir.clone(),
        data_dir: ctx.data_dir.clone(),
        clock: Arc::new(SystemClock),
        sentinel: Some(crate::exec::self_exe()),
        housekeeping: housekeeping()?,
        steps: Some(steps.handle().clone()),
    };
    let result = runtime.block_on(daemon::run(opts));
    // Steps still running at this point belong to a daemon that has stopped: let them go.
    steps.shutdown_background();
    match result {
        Ok(()) => Ok(()),
        Err(DaemonError::Config(d)) => Err(CliError::Config(d)),
        Err(e) => Err(CliError::Failed(e.to_string())),
    }
}

/// `WORKER_HOUSEKEEPING` (a duration) shortens the housekeeping interval: for tests that must
/// see a run outlive several passes without waiting minutes. Not a setting for production.
fn housekeeping() -> Result<std::time::Duration, CliError> {
    match std::env::var("WORKER_HOUSEKEEPING") {
        Ok(v) => crate::units::parse_duration(&v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "WORKER_HOUSEKEEPING: `{v}` is not a positive duration (e.g. 2s)"
                ))
            }),
        Err(_) => Ok(daemon::HOUSEKEEPING),
    }
}
