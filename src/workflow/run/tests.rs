//! The step state machine over a real store (each test on SQLite and PostgreSQL, see
//! `store::testing`): graphs, checkpoints, retries, sleeps, signals and halts, with time passed
//! in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::config::{Exec, JobBody};
use crate::model::{RunId, RunState, StepState, Trigger};
use crate::queue::retry::RetryPolicy;
use crate::queue::{Request, enqueue, lifecycle};
use crate::store::Store;
use crate::store::testing::{Engine, TestStore, conformance};
use crate::workflow::model::{ProcessStep, SleepStep, WaitStep};

struct World {
    store: Store,
    /// Dropped after `store`: a PostgreSQL schema goes once nothing is connected to it.
    _test_store: TestStore,
    _dir: tempfile::TempDir,
    config: Config,
    now: Time,
}

fn step(name: &str, kind: StepKind, needs: &[usize]) -> StepDef {
    StepDef {
        name: name.into(),
        kind,
        needs: needs.to_vec(),
        condition: None,
        allow_failure: false,
        retry: RetryPolicy::default(),
        timeout: None,
    }
}

fn process(env: &[(&str, &str)]) -> StepKind {
    StepKind::Process(ProcessStep {
        exec: Exec::Shell("true".into()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        workdir: None,
    })
}

fn world(engine: Engine, steps: Vec<StepDef>, parallel: Option<u32>, run_retries: u32) -> World {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(dir.path().join("jobs/flow.yaml"), "run: 'true'\n").unwrap();
    let mut config = Config::load_with_env(dir.path(), &|_| None).unwrap();
    let mut job = (*config.jobs["flow"]).clone();
    job.body = JobBody::Steps(Arc::new(Workflow { steps, parallel }));
    job.retry.attempts = run_retries;
    job.retry.jitter = false;
    config.jobs.insert("flow".into(), Arc::new(job));
    let test_store = TestStore::new(engine, dir.path()).expect("the engine is available");
    let store = test_store.open();
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .unwrap();
    World {
        store,
        _test_store: test_store,
        _dir: dir,
        config,
        now,
    }
}

/// The step rows a decision kept (not read back after its writes) are the store's.
fn same_rows(tx: &Tx<'_>, rows: &RunRows, run: RunId) -> Result<()> {
    if let Some(kept) = rows.kept() {
        assert_eq!(
            kept,
            tx.steps(run)?,
            "the rows kept by the decision are the store's"
        );
    }
    Ok(())
}

/// A claimed run: what the engine holds while it runs it.
struct Held {
    run: Run,
    def: Arc<Workflow>,
    seq: u32,
}

impl World {
    fn def(&self) -> Arc<Workflow> {
        self.config.jobs["flow"].workflow().unwrap().clone()
    }

    fn enqueue(&mut self, input: Option<serde_json::Value>) -> RunId {
        let (config, now) = (&self.config, self.now);
        let mut req = Request::new("flow", Trigger::Queue);
        req.input = input;
        self.store
            .write(|tx| enqueue(tx, config, &req, now))
            .unwrap()
            .id
    }

    /// Claims the run and begins (or resumes) its attempt.
    fn claim(&mut self, slots: usize) -> (Held, Next) {
        let (config, now) = (&self.config, self.now);
        let def = self.def();
        self.store
            .write(|tx| {
                lifecycle::promote_due(tx, config, now)?;
                let (claimed, _) = lifecycle::claim(tx, config, "daemon", now, 10)?;
                let c = claimed.into_iter().next().expect("a run to claim");
                let rows = RunRows::unread();
                let mut ctx = RunCtx {
                    run: &c.run,
                    def: &def,
                    config,
                    process_slots: slots,
                    keep_owner: None,
                    halt: None,
                    rows: &rows,
                };
                let p = if c.resumed {
                    advance(tx, &mut ctx, now)?
                } else {
                    begin(tx, &mut ctx, now)?
                };
                let next = settle(tx, &ctx, c.seq, p, now, 0.5)?;
                same_rows(tx, &rows, c.run.id)?;
                Ok::<_, StoreError>((
                    Held {
                        run: c.run,
                        def: def.clone(),
                        seq: c.seq,
                    },
                    next,
                ))
            })
            .unwrap()
    }

    fn ended(&mut self, h: &Held, name: &str, outcome: StepOutcome) -> Next {
        self.decide(h, Some((name, outcome)), None)
    }

    fn advance(&mut self, h: &Held) -> Next {
        self.decide(h, None, None)
    }

    fn decide(&mut self, h: &Held, ended: Option<(&str, StepOutcome)>, halt: Option<Halt>) -> Next {
        let (config, now) = (&self.config, self.now);
        self.store
            .write(|tx| {
                let rows = RunRows::unread();
                let mut ctx = RunCtx {
                    run: &h.run,
                    def: &h.def,
                    config,
                    process_slots: 8,
                    keep_owner: None,
                    halt,
                    rows: &rows,
                };
                let p = match ended {
                    Some((name, o)) => step_ended(tx, &mut ctx, name, o, now, now, 0.5)?,
                    None => advance(tx, &mut ctx, now)?,
                };
                let next = settle(tx, &ctx, h.seq, p, now, 0.5)?;
                same_rows(tx, &rows, h.run.id)?;
                Ok::<_, StoreError>(next)
            })
            .unwrap()
    }

    fn steps(&mut self, id: RunId) -> Vec<(String, StepState)> {
        self.store
            .read(|tx| tx.steps(id))
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.state))
            .collect()
    }

    fn run(&mut self, id: RunId) -> Run {
        self.store.read(|tx| tx.run(id)).unwrap().unwrap()
    }

    fn later(&mut self, d: Duration) {
        self.now += chrono::Duration::from_std(d).unwrap();
    }
}

fn launched(next: &Next) -> Vec<String> {
    match next {
        Next::Launch { launches, .. } => launches.iter().map(|l| l.step.clone()).collect(),
        _ => Vec::new(),
    }
}

fn ok(outputs: serde_json::Value) -> StepOutcome {
    StepOutcome::Succeeded { outputs }
}

fn failed(error: &str) -> StepOutcome {
    StepOutcome::Failed {
        error: error.into(),
        exit_code: Some(1),
        signal: None,
    }
}

conformance! {
    fn a_chain_runs_one_step_after_the_other_and_checkpoints_each(engine) {
        let mut w = world(
            engine,
            vec![
                step("a", process(&[]), &[]),
                step("b", process(&[("ID", "{{ steps.a.outputs.id }}")]), &[0]),
                step("c", process(&[]), &[1]),
            ],
            None,
            1,
        );
        let id = w.enqueue(None);
        assert!(w.steps(id).iter().all(|(_, s)| *s == StepState::Pending));
        let (h, next) = w.claim(8);
        assert_eq!(launched(&next), ["a"]);
        let next = w.ended(&h, "a", ok(json!({"id": "u-7"})));
        // b's environment was rendered from a's checkpointed outputs.
        match &next {
            Next::Launch { launches, .. } => {
                assert_eq!(launches[0].step, "b");
                assert_eq!(
                    launches[0].work,
                    Work::Process {
                        env: vec![("ID".into(), "u-7".into())],
                        workdir: None,
                        timeout: None
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        let next = w.ended(&h, "b", ok(json!({})));
        assert_eq!(launched(&next), ["c"]);
        assert_eq!(
            w.ended(&h, "c", ok(json!({}))),
            Next::Ended(RunState::Succeeded)
        );
        let run = w.run(id);
        assert_eq!(run.state, RunState::Succeeded);
        assert_eq!(run.steps[0].outputs, Some(json!({"id": "u-7"})));
        assert_eq!(run.steps[0].exit_code, Some(0));
    }

    fn independent_steps_run_in_parallel_and_a_join_waits_for_all(engine) {
        let mut w = world(
            engine,
            vec![
                step("a", process(&[]), &[]),
                step("b", process(&[]), &[]),
                step("join", process(&[]), &[0, 1]),
            ],
            None,
            1,
        );
        w.enqueue(None);
        let (h, next) = w.claim(8);
        assert_eq!(launched(&next), ["a", "b"]);
        assert!(
            launched(&w.ended(&h, "b", ok(json!({})))).is_empty(),
            "a still runs"
        );
        assert_eq!(launched(&w.ended(&h, "a", ok(json!({})))), ["join"]);
    }

    fn parallel_and_process_slots_cap_what_starts(engine) {
        let mut w = world(
            engine,
            vec![
                step("a", process(&[]), &[]),
                step("b", process(&[]), &[]),
                step("c", process(&[]), &[]),
            ],
            Some(2),
            1,
        );
        w.enqueue(None);
        let (h, next) = w.claim(8);
        assert_eq!(launched(&next), ["a", "b"], "parallel: 2");
        assert_eq!(launched(&w.ended(&h, "a", ok(json!({})))), ["c"]);

        // No process slot: the run holds, blocked, and starts when one frees.
        let mut w = world(engine, vec![step("a", process(&[]), &[])], None, 1);
        w.enqueue(None);
        let (h, next) = w.claim(0);
        assert_eq!(
            next,
            Next::Launch {
                launches: vec![],
                wake: None,
                blocked: true
            }
        );
        assert_eq!(launched(&w.advance(&h)), ["a"]);
    }

    fn if_skips_and_skipped_steps_count_as_done(engine) {
        let mut a = step("a", process(&[]), &[]);
        a.condition = Some("input.plan != 'free'".into());
        let mut c = step("c", process(&[]), &[1]);
        c.condition = Some("steps.a.state == 'succeeded'".into());
        let mut w = world(engine, vec![a, step("b", process(&[]), &[0]), c], None, 1);
        let id = w.enqueue(Some(json!({"plan": "free"})));
        let (h, next) = w.claim(8);
        assert_eq!(launched(&next), ["b"], "a skipped, b runs after it");
        assert_eq!(
            w.ended(&h, "b", ok(json!({}))),
            Next::Ended(RunState::Succeeded)
        );
        assert_eq!(
            w.steps(id),
            [
                ("a".to_string(), StepState::Skipped),
                ("b".to_string(), StepState::Succeeded),
                ("c".to_string(), StepState::Skipped)
            ]
        );
    }

    fn a_failure_fails_the_run_once_running_steps_end_unless_allowed(engine) {
        let mut soft = step("soft", process(&[]), &[]);
        soft.allow_failure = true;
        let mut w = world(
            engine,
            vec![
                soft,
                step("hard", process(&[]), &[]),
                step("slow", process(&[]), &[]),
                step("after", process(&[]), &[0]),
                step("never", process(&[]), &[1]),
            ],
            None,
            1,
        );
        let id = w.enqueue(None);
        let (h, next) = w.claim(8);
        assert_eq!(launched(&next), ["soft", "hard", "slow"]);
        // allow_failure: what needs it still runs.
        assert_eq!(launched(&w.ended(&h, "soft", failed("boom"))), ["after"]);
        // A hard failure: nothing new starts; the run waits for what runs.
        assert!(launched(&w.ended(&h, "hard", failed("exit code 3"))).is_empty());
        assert!(matches!(
            w.ended(&h, "slow", ok(json!({}))),
            Next::Launch { .. }
        ));
        assert_eq!(
            w.ended(&h, "after", ok(json!({}))),
            Next::Ended(RunState::Dead)
        );
        let run = w.run(id);
        assert_eq!(run.error.as_deref(), Some("step hard failed: exit code 3"));
        let never = run.steps.iter().find(|s| s.name == "never").unwrap();
        assert_eq!(
            never.state,
            StepState::Cancelled,
            "a dead run's unstarted steps"
        );
    }

    fn a_step_retries_in_place_after_its_backoff(engine) {
        let mut a = step("a", process(&[]), &[]);
        a.retry = RetryPolicy {
            attempts: 2,
            initial: Duration::from_secs(10),
            jitter: false,
            ..RetryPolicy::default()
        };
        let mut w = world(engine, vec![a], None, 1);
        let id = w.enqueue(None);
        let (h, _) = w.claim(8);
        match w.ended(&h, "a", failed("flaky")) {
            Next::Parked(Some(t)) => assert_eq!(t, w.now + chrono::Duration::seconds(10)),
            other => panic!("expected to wait for the retry: {other:?}"),
        }
        assert_eq!(w.run(id).state, RunState::Suspended);
        w.later(Duration::from_secs(10));
        let (h, next) = w.claim(8);
        match &next {
            Next::Launch { launches, .. } => assert_eq!(launches[0].attempt, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            w.run(id).attempt,
            1,
            "resumed, not a new attempt of the run"
        );
        assert_eq!(
            w.ended(&h, "a", ok(json!({}))),
            Next::Ended(RunState::Succeeded)
        );
    }

    fn a_run_retry_reruns_only_what_did_not_succeed(engine) {
        let mut w = world(
            engine,
            vec![
                step("a", process(&[]), &[]),
                step("b", process(&[]), &[0]),
                step("c", process(&[]), &[1]),
            ],
            None,
            2,
        );
        let id = w.enqueue(None);
        let (h, _) = w.claim(8);
        w.ended(&h, "a", ok(json!({"k": 1})));
        assert_eq!(
            w.ended(&h, "b", failed("exit code 1")),
            Next::Ended(RunState::Retrying)
        );
        w.later(Duration::from_secs(3600));
        let (h, next) = w.claim(8);
        assert_eq!(h.run.attempt, 2);
        assert_eq!(launched(&next), ["b"], "a keeps its checkpoint");
        w.ended(&h, "b", ok(json!({})));
        assert_eq!(
            w.ended(&h, "c", ok(json!({}))),
            Next::Ended(RunState::Succeeded)
        );
        let run = w.run(id);
        assert_eq!(run.steps[0].attempts, 1, "a ran once");
        assert_eq!(run.steps[1].attempts, 2);
    }

    fn a_sleep_suspends_the_run_until_it_is_due(engine) {
        let mut w = world(
            engine,
            vec![
                step(
                    "nap",
                    StepKind::Sleep(SleepStep::For(Duration::from_secs(30))),
                    &[],
                ),
                step("after", process(&[]), &[0]),
            ],
            None,
            1,
        );
        let id = w.enqueue(None);
        let (_, next) = w.claim(8);
        let due = w.now + chrono::Duration::seconds(30);
        assert_eq!(next, Next::Parked(Some(due)));
        let run = w.run(id);
        assert_eq!(
            (run.state, run.due_at, run.owner),
            (RunState::Suspended, due, None)
        );
        // Not earlier.
        w.later(Duration::from_secs(29));
        let (config, now) = (&w.config, w.now);
        w.store
            .write(|tx| lifecycle::promote_due(tx, config, now))
            .unwrap();
        assert_eq!(w.run(id).state, RunState::Suspended);
        w.later(Duration::from_secs(1));
        let (_, next) = w.claim(8);
        assert_eq!(launched(&next), ["after"]);
    }

    fn wait_for_takes_a_signal_sent_before_or_after_and_times_out(engine) {
        let wait = |timeout| {
            StepKind::WaitFor(WaitStep {
                signal: "approve".into(),
                timeout,
            })
        };
        // Sent before the step waits: consumed when it starts.
        let mut w = world(
            engine,
            vec![step("ask", wait(None), &[]), step("go", process(&[]), &[0])],
            None,
            1,
        );
        let id = w.enqueue(None);
        let now = w.now;
        w.store
            .write(|tx| tx.insert_signal(id, "approve", Some(&json!({"ok": true})), None, now))
            .unwrap();
        let (_, next) = w.claim(8);
        assert_eq!(launched(&next), ["go"]);
        assert_eq!(
            w.run(id).steps[0].outputs,
            Some(json!({"data": {"ok": true}}))
        );

        // Sent after: the run sleeps with no due time until then.
        let mut w = world(
            engine,
            vec![step("ask", wait(None), &[]), step("go", process(&[]), &[0])],
            None,
            1,
        );
        let id = w.enqueue(None);
        let (_, next) = w.claim(8);
        assert_eq!(next, Next::Parked(None));
        let now = w.now;
        let waiting = w
            .store
            .write(|tx| {
                let waiting = tx.insert_signal(id, "approve", None, Some("rejected by ops"), now)?;
                tx.queue_resume(id, now)?;
                Ok::<_, StoreError>(waiting)
            })
            .unwrap();
        assert!(waiting);
        let (_, next) = w.claim(8);
        assert_eq!(next, Next::Ended(RunState::Dead), "--fail fails the step");
        assert_eq!(
            w.run(id).error.as_deref(),
            Some("step ask failed: rejected by ops")
        );

        // Never sent: the timeout fails it.
        let mut w = world(
            engine,
            vec![step("ask", wait(Some(Duration::from_secs(60))), &[])],
            None,
            1,
        );
        let id = w.enqueue(None);
        w.claim(8);
        w.later(Duration::from_secs(60));
        let (_, next) = w.claim(8);
        assert_eq!(next, Next::Ended(RunState::Dead));
        assert_eq!(
            w.run(id).error.as_deref(),
            Some("step ask failed: timed out waiting for signal approve")
        );
    }

    fn a_template_that_fails_fails_its_step_with_the_expression(engine) {
        let mut w = world(
            engine,
            vec![step("a", process(&[("X", "{{ input.nope.deeper }}")]), &[])],
            None,
            1,
        );
        let id = w.enqueue(Some(json!({})));
        let (_, next) = w.claim(8);
        assert_eq!(next, Next::Ended(RunState::Dead));
        let error = w.run(id).steps[0].error.clone().unwrap();
        assert!(
            error.contains("env X") && error.contains("input.nope.deeper"),
            "{error}"
        );
    }

    fn a_cancel_stops_starting_and_ends_the_run_cancelled(engine) {
        let mut w = world(
            engine,
            vec![step("a", process(&[]), &[]), step("b", process(&[]), &[0])],
            None,
            1,
        );
        let id = w.enqueue(None);
        let (h, _) = w.claim(8);
        let next = w.decide(&h, Some(("a", StepOutcome::Cancelled)), Some(Halt::Cancel));
        assert_eq!(next, Next::Ended(RunState::Cancelled));
        assert_eq!(
            w.steps(id),
            [
                ("a".to_string(), StepState::Cancelled),
                ("b".to_string(), StepState::Cancelled)
            ]
        );
    }

    fn a_stop_requeues_and_keeps_what_succeeded(engine) {
        let mut w = world(
            engine,
            vec![step("a", process(&[]), &[]), step("b", process(&[]), &[0])],
            None,
            1,
        );
        let id = w.enqueue(None);
        let (h, _) = w.claim(8);
        let next = w.decide(&h, Some(("a", ok(json!({})))), Some(Halt::Stop));
        assert_eq!(next, Next::Ended(RunState::Queued));
        let run = w.run(id);
        assert_eq!(run.attempt, 0, "not counted");
        assert_eq!(run.steps[0].state, StepState::Succeeded);
        let (_, next) = w.claim(8);
        assert_eq!(launched(&next), ["b"]);
    }
}

#[test]
fn output_files_are_key_values_or_one_json_object() {
    assert_eq!(
        parse_output_file(b"id=7\n# note\nemail=a@b.c\nurl=x?a=b=c\n").unwrap(),
        json!({"id": "7", "email": "a@b.c", "url": "x?a=b=c"})
    );
    assert_eq!(parse_output_file(b"{\"n\": 3}\n").unwrap(), json!({"n": 3}));
    assert_eq!(parse_output_file(b"").unwrap(), json!({}));
    assert!(
        parse_output_file(b"just words")
            .unwrap_err()
            .contains("key=value")
    );
    assert!(parse_output_file(b"[1]").is_err());
    assert!(parse_output_file(&vec![b'a'; MAX_OUTPUTS + 1]).is_err());
    let _ = BTreeMap::<String, String>::new();
}
