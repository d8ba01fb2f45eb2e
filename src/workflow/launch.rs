//! Executing a launched step, in its own task, for whichever owner runs the workflow (the
//! daemon, or `worker job`): a process through the executor, `http` and `sql` in-process, a
//! `notify` by watching its message in the outbox. Each ends with a [`StepOutcome`], sent back
//! to the owner like an attempt's end; nothing here writes to the store.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::model::StepKind;
use super::run::{Launch, StepOutcome, Work};
use super::steps::{http, sql};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::exec::{Executor, StopReason};
use crate::model::Run;
use crate::store::{Durability, Store};

/// How often a `notify` step looks at its message's delivery, at first and at most.
const NOTIFY_POLL: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// What every step of an owner shares.
pub struct StepRunner {
    pub exec: Arc<Executor>,
    pub data: DataDir,
    /// Copy process output to our stdout (`worker job`).
    pub tee: bool,
    /// The HTTP client of `http` steps, built on first use.
    http: OnceLock<Result<reqwest::Client, String>>,
    /// A read connection for `notify` steps to watch the outbox, opened on first use.
    store: Mutex<Option<Store>>,
}

impl StepRunner {
    pub fn new(exec: Arc<Executor>, data: DataDir, tee: bool) -> StepRunner {
        StepRunner {
            exec,
            data,
            tee,
            http: OnceLock::new(),
            store: Mutex::new(None),
        }
    }

    fn http(&self) -> Result<&reqwest::Client, String> {
        self.http
            .get_or_init(http::client)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The delivery state of alert `id`: `Some(Ok(()))` sent, `Some(Err(why))` failed, `None`
    /// not yet.
    fn delivery(&self, id: i64) -> Result<Option<Result<(), String>>, String> {
        let mut slot = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(
                Store::open_at(&self.data.store_location(), Durability::Full)
                    .map_err(|e| format!("cannot watch the outbox: {e}"))?,
            );
        }
        let Some(store) = slot.as_mut() else {
            return Err("cannot watch the outbox".into());
        };
        let row = store
            .read(|tx| tx.alert(id))
            .map_err(|e| format!("cannot watch the outbox: {e}"))?;
        Ok(match row {
            None => Some(Err(format!(
                "its message (alert {id}) was deleted before it was delivered"
            ))),
            Some(a) => match a.status.as_str() {
                "sent" => Some(Ok(())),
                "failed" => Some(Err(a.error.unwrap_or_else(|| "delivery failed".into()))),
                _ => None,
            },
        })
    }

    /// Runs `launch` of `run` to its end, or until `stop` says otherwise.
    pub async fn execute(
        &self,
        run: &Run,
        kind: &StepKind,
        launch: Launch,
        config: Arc<Config>,
        mut stop: watch::Receiver<Option<StopReason>>,
    ) -> (StepOutcome, Duration) {
        let started = Instant::now();
        if let Work::Process { .. } = &launch.work {
            let StepKind::Process(p) = kind else {
                return (
                    failed(format!("step {} is not a process", launch.step)),
                    started.elapsed(),
                );
            };
            return (
                self.process(run, &p.exec, &launch, &config, stop).await,
                started.elapsed(),
            );
        }
        let work = self.in_process(launch.work);
        tokio::pin!(work);
        let outcome = loop {
            tokio::select! {
                o = &mut work => break o,
                changed = stop.changed() => match changed {
                    Ok(()) => match *stop.borrow_and_update() {
                        Some(StopReason::Cancel) => break StepOutcome::Cancelled,
                        Some(StopReason::Shutdown | StopReason::Kill) => break StepOutcome::Interrupted,
                        None => {}
                    },
                    // The owner went away: finish the work, nobody can stop it any more.
                    Err(_) => break (&mut work).await,
                },
            }
        };
        (outcome, started.elapsed())
    }

    async fn in_process(&self, work: Work) -> StepOutcome {
        match work {
            Work::Http {
                method,
                url,
                headers,
                body,
                expect,
                idempotency_key,
                timeout,
            } => {
                let client = match self.http() {
                    Ok(c) => c,
                    Err(e) => return failed(e),
                };
                let req = http::HttpRequest {
                    method,
                    url,
                    headers,
                    body,
                    expect,
                    idempotency_key,
                    timeout,
                };
                outcome(http::run(client, &req).await)
            }
            Work::Sql {
                url,
                query,
                params,
                timeout,
            } => outcome(sql::run(&url, &query, &params, timeout).await),
            Work::Notify { alert_id } => {
                let mut wait = NOTIFY_POLL.0;
                loop {
                    match self.delivery(alert_id) {
                        Ok(Some(Ok(()))) => {
                            return StepOutcome::Succeeded {
                                outputs: json!({ "alert_id": alert_id, "status": "sent" }),
                            };
                        }
                        Ok(Some(Err(e))) => return failed(format!("delivery failed: {e}")),
                        Ok(None) => {}
                        Err(e) => return failed(e),
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(NOTIFY_POLL.1);
                }
            }
            Work::Process { .. } => failed("a process step without its command".into()),
        }
    }

    async fn process(
        &self,
        run: &Run,
        exec: &crate::config::Exec,
        launch: &Launch,
        config: &Config,
        stop: watch::Receiver<Option<StopReason>>,
    ) -> StepOutcome {
        let (spec, output) =
            match crate::runner::step_spec(run, launch, exec, config, &self.data, self.tee) {
                Ok(x) => x,
                Err(e) => return failed(e),
            };
        let finished = self.exec.run(&spec, stop).await;
        let outputs = crate::runner::take_output_file(&output);
        match finished.stopped {
            Some(StopReason::Cancel) => return StepOutcome::Cancelled,
            Some(StopReason::Shutdown | StopReason::Kill) => return StepOutcome::Interrupted,
            None => {}
        }
        if !finished.succeeded() {
            let (exit_code, signal) = match finished.exit {
                crate::exec::Exit::Code(c) => (Some(c), None),
                crate::exec::Exit::Signal(s) => (None, Some(s)),
                crate::exec::Exit::SpawnFailed(_) => (None, None),
            };
            let tail = crate::exec::capture::last_lines(&spec.log, crate::alert::OUTPUT_LINES);
            let error = crate::runner::failure_text(&finished, &spec, &tail);
            return StepOutcome::Failed {
                error,
                exit_code,
                signal,
            };
        }
        match outputs {
            Ok(outputs) => StepOutcome::Succeeded { outputs },
            Err(error) => StepOutcome::Failed {
                error,
                exit_code: Some(0),
                signal: None,
            },
        }
    }
}

fn failed(error: String) -> StepOutcome {
    StepOutcome::Failed {
        error,
        exit_code: None,
        signal: None,
    }
}

fn outcome(r: super::steps::StepResult) -> StepOutcome {
    match r {
        Ok(outputs) => StepOutcome::Succeeded { outputs },
        Err(e) => failed(e),
    }
}
