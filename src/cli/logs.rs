//! `worker logs`.

use std::io::Write;

use super::output::bytes;
use super::{CliError, CliResult, Ctx};
use crate::exec::capture;
use crate::model::RunId;

pub fn run(ctx: &Ctx, id: RunId, attempt: Option<u32>) -> CliResult {
    let (data, mut store) = ctx.store()?;
    let attempts = store.read(|tx| {
        if tx.brief(id)?.is_none() {
            return Ok(None);
        }
        tx.attempts(id).map(Some)
    })?;
    let Some(attempts) = attempts else {
        return Err(CliError::Failed(format!("run {id} does not exist")));
    };
    let chosen = match attempt {
        Some(n) => attempts
            .iter()
            .rev()
            .find(|a| a.number == n)
            .ok_or_else(|| {
                CliError::Failed(format!(
                    "run {id} has no attempt {n} (it has {})",
                    attempts.len()
                ))
            })?,
        None => match attempts.last() {
            Some(a) => a,
            None => {
                eprintln!("run {id} has not started yet: no output");
                return Ok(());
            }
        },
    };
    let path = data.log_path(id, chosen.seq);
    let out = capture::read_tail(&path, u64::MAX)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?
        .unwrap_or_default();
    if let Some(total) = chosen.output_bytes {
        let shown = out.len() as u64;
        if total > shown {
            eprintln!(
                "[worker: the first {} of {} of output were dropped (output_limit); showing the last {}]",
                bytes(total - shown),
                bytes(total),
                bytes(shown)
            );
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| CliError::Failed(e.to_string()))
}
