//! `worker logs`: a run's captured output, or (`--follow`) its output as it is written.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::output::{bytes, human};
use super::{CliError, CliResult, Ctx};
use crate::exec::capture;
use crate::model::{Attempt, RunId, RunState, Step};
use crate::store::StoreError;

pub fn run(ctx: &Ctx, id: RunId, attempt: Option<u32>) -> CliResult {
    let (data, mut store) = ctx.store()?;
    let steps = store.read(|tx| tx.steps(id))?;
    if !steps.is_empty() && attempt.is_none() {
        return all_steps(&data, id, &steps);
    }
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
    let local = capture::read_tail(&path, u64::MAX)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    let out = match local {
        Some(out) => out,
        // Run on another host: its output was kept in the store when the attempt ended.
        None => {
            let seq = chosen.seq;
            let kept = store.read(|tx| tx.attempt_output(id, seq))?;
            if kept.is_none() && chosen.finished_at.is_none() && data.shared_store() {
                eprintln!(
                    "run {id} is running on another node: its output is readable here once the attempt ends"
                );
            }
            kept.unwrap_or_default()
        }
    };
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

/// `worker logs RUN --step NAME [--attempt N]`: a workflow step's captured output (its latest
/// execution unless `--attempt`).
pub fn step(ctx: &Ctx, id: RunId, name: &str, attempt: Option<u32>) -> CliResult {
    let (data, mut store) = ctx.store()?;
    let row = find_step(&mut store, id, name)?;
    if row.attempts == 0 {
        eprintln!("step {name} of run {id} has not started yet: no output");
        return Ok(());
    }
    let n = attempt.unwrap_or(row.attempts);
    if n == 0 || n > row.attempts {
        return Err(CliError::Failed(format!(
            "step {name} of run {id} has no execution {n} (it has {})",
            row.attempts
        )));
    }
    let path = data.step_log_path(id, name, n);
    let out = capture::read_tail(&path, u64::MAX)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    match out {
        Some(bytes) => write_out(&mut std::io::stdout().lock(), &bytes),
        None => {
            if !row.kind.starts_with("run") && row.kind != "command" {
                eprintln!(
                    "step {name} is a `{}` step: it prints no output (see its outputs in `worker show {id}`)",
                    row.kind
                );
            }
            Ok(())
        }
    }
}

/// The step `name` of run `id`, or why there is none.
fn find_step(store: &mut crate::store::Store, id: RunId, name: &str) -> CliResult<Step> {
    let found = store.read(|tx| {
        let Some(run) = tx.brief(id)? else {
            return Ok(None);
        };
        Ok::<_, StoreError>(Some((run.job, tx.steps(id)?)))
    })?;
    let Some((job, steps)) = found else {
        return Err(CliError::Failed(format!("run {id} does not exist")));
    };
    if steps.is_empty() {
        return Err(CliError::Failed(format!("run {id} ({job}) has no steps")));
    }
    let known: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let hint = crate::config::yaml::closest(name, &known)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    steps
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .ok_or_else(|| CliError::Failed(format!("run {id} ({job}) has no step `{name}`{hint}")))
}

/// `worker logs RUN --step NAME --follow`: the step's output as it is written, across its
/// retries, until it ends: exit 0 if it succeeded (or was skipped), 1 if not.
pub fn follow_step(ctx: &Ctx, id: RunId, name: &str) -> CliResult {
    let (data, mut store) = ctx.store()?;
    let mut stdout = std::io::stdout().lock();
    let mut current: Option<(u32, Tail)> = None;
    loop {
        let row = find_step(&mut store, id, name)?;
        let run_state = store
            .read(|tx| tx.brief(id))?
            .map(|b| b.state)
            .unwrap_or(RunState::Cancelled);
        if row.attempts > 0 && current.as_ref().is_none_or(|(n, _)| *n != row.attempts) {
            if let Some((_, mut tail)) = current.take() {
                tail.pump(&mut stdout)?;
            }
            if row.attempts > 1 {
                eprintln!("[worker: step {name}, execution {} started]", row.attempts);
            }
            current = Some((
                row.attempts,
                Tail::new(data.step_log_path(id, name, row.attempts)),
            ));
        }
        if let Some((_, tail)) = current.as_mut() {
            tail.pump(&mut stdout)?;
        }
        // A failed step that retries in place goes back to `pending`: only a final state, or a
        // run that ended around a step that never will, ends the following.
        if row.state.is_final() || run_state.is_final() {
            if let Some((_, tail)) = current.as_mut() {
                tail.pump(&mut stdout)?;
            }
            return match row.state {
                crate::model::StepState::Succeeded | crate::model::StepState::Skipped => Ok(()),
                s => Err(CliError::Failed(format!(
                    "step {name} of run {id} ended {s}{}",
                    row.error.map(|e| format!(": {e}")).unwrap_or_default()
                ))),
            };
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// How often `logs --follow` looks for new output and for the run's state (a person watches:
/// a tenth of a second feels live and costs nothing measurable).
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// `worker logs RUN --follow`: the current attempt's output so far, then everything it writes,
/// across retries, until the run ends. Exit 0 if it succeeded, 1 if not.
/// A workflow run's output: each step's (its latest execution), in order, under a header on
/// stderr.
fn all_steps(data: &crate::datadir::DataDir, id: RunId, steps: &[Step]) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    for s in steps.iter().filter(|s| s.attempts > 0) {
        let path = data.step_log_path(id, &s.name, s.attempts);
        let out = capture::read_tail(&path, u64::MAX)
            .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
        if let Some(bytes) = out {
            let _ = stdout.flush();
            eprintln!("[worker: step {}]", s.name);
            write_out(&mut stdout, &bytes)?;
        }
    }
    Ok(())
}

/// `logs RUN --follow` of a workflow run: every step's output as it is written (a header on
/// stderr whenever the output switches to another step), until the run ends.
fn follow_steps(ctx: &Ctx, id: RunId) -> CliResult {
    let (data, mut store) = ctx.store()?;
    let mut stdout = std::io::stdout().lock();
    let mut tails: std::collections::BTreeMap<(u32, String), (u32, Tail)> = Default::default();
    let mut last: Option<String> = None;
    loop {
        let Some(run) = store.read(|tx| tx.run(id))? else {
            return Err(CliError::Failed(format!("run {id} does not exist")));
        };
        for s in run.steps.iter().filter(|s| s.attempts > 0) {
            let key = (s.idx, s.name.clone());
            let entry = tails.entry(key).or_insert_with(|| {
                (
                    s.attempts,
                    Tail::new(data.step_log_path(id, &s.name, s.attempts)),
                )
            });
            if entry.0 != s.attempts {
                entry
                    .1
                    .pump(&mut Header::new(&mut stdout, &s.name, &mut last))?;
                *entry = (
                    s.attempts,
                    Tail::new(data.step_log_path(id, &s.name, s.attempts)),
                );
            }
            entry
                .1
                .pump(&mut Header::new(&mut stdout, &s.name, &mut last))?;
        }
        if run.state.is_final() {
            return match run.state {
                RunState::Succeeded => Ok(()),
                st => Err(CliError::Failed(format!(
                    "run {id} ended {st}{}",
                    run.error.map(|e| format!(": {e}")).unwrap_or_default()
                ))),
            };
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// Writes through to stdout, first saying on stderr which step the output is from when that
/// changes.
struct Header<'a, W: Write> {
    out: &'a mut W,
    step: &'a str,
    last: &'a mut Option<String>,
}

impl<'a, W: Write> Header<'a, W> {
    fn new(out: &'a mut W, step: &'a str, last: &'a mut Option<String>) -> Self {
        Header { out, step, last }
    }
}

impl<W: Write> Write for Header<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() && self.last.as_deref() != Some(self.step) {
            self.out.flush()?;
            eprintln!("[worker: step {}]", self.step);
            *self.last = Some(self.step.to_string());
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub fn follow(ctx: &Ctx, id: RunId) -> CliResult {
    {
        let (_, mut store) = ctx.store()?;
        if !store.read(|tx| tx.steps(id))?.is_empty() {
            return follow_steps(ctx, id);
        }
    }
    let (data, mut store) = ctx.store()?;
    let mut stdout = std::io::stdout().lock();
    let mut current: Option<(u32, Tail)> = None;
    let mut said_waiting = false;
    let mut announced: Option<u32> = None;
    loop {
        let found = store.read(|tx| {
            let Some(run) = tx.run(id)? else {
                return Ok(None);
            };
            Ok::<_, StoreError>(Some((run, tx.attempts(id)?)))
        })?;
        let Some((run, attempts)) = found else {
            return Err(CliError::Failed(format!("run {id} does not exist")));
        };
        if let Some(latest) = attempts.last() {
            if current.as_ref().is_none_or(|(seq, _)| *seq != latest.seq) {
                // A new attempt: finish the previous one's output, say how it ended.
                if let Some((seq, mut tail)) = current.take() {
                    tail.pump(&mut stdout)?;
                    kept_elsewhere(&data, &mut store, id, seq, &mut stdout)?;
                    if let Some(prev) = attempts.iter().find(|a| a.seq == seq) {
                        eprintln!("[worker: attempt {} {}]", prev.number, ended(prev));
                    }
                }
                if announced.is_some() || attempts.len() > 1 {
                    eprintln!(
                        "[worker: attempt {}/{} started {}]",
                        latest.number,
                        run.max_attempts,
                        human(latest.started_at)
                    );
                }
                announced = Some(latest.seq);
                current = Some((latest.seq, Tail::new(data.log_path(id, latest.seq))));
            }
        } else if !said_waiting && !run.state.is_final() {
            eprintln!(
                "[worker: run {id} is {}; waiting for it to start]",
                run.state
            );
            said_waiting = true;
        }
        if let Some((_, tail)) = current.as_mut() {
            tail.pump(&mut stdout)?;
        }
        if run.state.is_final() {
            // The attempt's output is complete once its end is recorded: take the rest.
            if let Some((seq, tail)) = current.as_mut() {
                tail.pump(&mut stdout)?;
                kept_elsewhere(&data, &mut store, id, *seq, &mut stdout)?;
            }
            return match run.state {
                RunState::Succeeded => Ok(()),
                s => Err(CliError::Failed(format!(
                    "run {id} ended {s}{}",
                    run.error.map(|e| format!(": {e}")).unwrap_or_default()
                ))),
            };
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// An ended attempt that ran on another host (no file here): writes the output the store kept.
fn kept_elsewhere(
    data: &crate::datadir::DataDir,
    store: &mut crate::store::Store,
    id: RunId,
    seq: u32,
    out: &mut impl Write,
) -> CliResult {
    if !data.shared_store() || data.log_path(id, seq).exists() {
        return Ok(());
    }
    match store.read(|tx| tx.attempt_output(id, seq))? {
        Some(bytes) => write_out(out, &bytes),
        None => Ok(()),
    }
}

/// "failed (exit code 1)", "succeeded", … for an attempt that ended.
fn ended(a: &Attempt) -> String {
    let outcome = a.outcome.as_deref().unwrap_or("ended");
    match &a.error {
        Some(e) if outcome != "succeeded" => format!("{outcome} ({e})"),
        _ => outcome.to_string(),
    }
}

/// [`capture::Tail`] writing to the command's output: a closed reader ends quietly, a cap's
/// truncation is said on stderr.
struct Tail(capture::Tail);

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail(capture::Tail::new(path))
    }

    fn pump(&mut self, out: &mut impl Write) -> CliResult {
        match self.0.pump(out) {
            Ok(false) => Ok(()),
            Ok(true) => {
                eprintln!("[worker: output beyond the cap was dropped]");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::Exit(0)),
            Err(e) => Err(CliError::Failed(format!("reading output: {e}"))),
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) ends quietly.
fn write_out(out: &mut impl Write, bytes: &[u8]) -> CliResult {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::Exit(0)),
        Err(e) => Err(CliError::Failed(e.to_string())),
    }
}
