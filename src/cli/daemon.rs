//! `worker daemon`.

use std::sync::Arc;

use super::{CliError, CliResult, Ctx};
use crate::clock::SystemClock;
use crate::daemon::{self, DaemonError, Options};

pub fn run(ctx: &Ctx) -> CliResult {
    raise_open_files();
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
    // The HTTP server too: requests never take the engine's thread.
    let http = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("worker-http")
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the HTTP runtime: {e}")))?;
    let opts = Options {
        config_dir: ctx.config_dir.clone(),
        data_dir: ctx.data_dir.clone(),
        clock: Arc::new(SystemClock),
        sentinel: Some(crate::exec::self_exe()),
        housekeeping: housekeeping()?,
        steps: Some(steps.handle().clone()),
        http: Some(http.handle().clone()),
    };
    let result = runtime.block_on(daemon::run(opts));
    // Steps still running at this point belong to a daemon that has stopped: let them go.
    steps.shutdown_background();
    http.shutdown_background();
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

/// Raises the soft limit on open files to the hard one (at most 65,536): each HTTP connection
/// and each running job's pipes and log take descriptors, and the usual soft default (1,024) is
/// a limit for programs that use `select`, which this one does not.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536);
        if want > soft
            && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard)
        {
            tracing::debug!(error = %e, "cannot raise the open-files limit");
        }
    }
}
