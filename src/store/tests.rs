//! The store's operations, each test on SQLite and PostgreSQL (see [`super::testing`]): what the
//! rules above rely on — orders, NULLs, upserts, counts, instants — must not depend on the
//! engine.

use std::collections::{BTreeMap, HashMap};

use chrono::TimeZone;
use serde_json::json;

use super::testing::{Engine, Fresh, conformance};
use super::*;
use crate::model::{Priority, RunId, RunState, Step, StepState, Time, Trigger};
use crate::queue::retry::RetryPolicy;
use crate::workflow::model::{StepDef, StepKind, WaitStep, Workflow};

type World = Fresh;

fn world(engine: Engine) -> World {
    Fresh::new(engine)
}

impl Fresh {
    fn write<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> T {
        self.store.write(f).unwrap()
    }
    fn read<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> T {
        self.store.read(f).unwrap()
    }
}

/// `s` seconds after 2026-11-21T12:00:00Z.
fn t(s: i64) -> Time {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .unwrap()
        + chrono::Duration::seconds(s)
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

pub(super) fn new_run<'a>(
    job: &'a str,
    state: RunState,
    due: Time,
    env: &'a BTreeMap<String, String>,
) -> NewRun<'a> {
    NewRun {
        job,
        state,
        priority: Priority::Normal,
        trigger: Trigger::Queue,
        key: None,
        max_attempts: 3,
        created_at: due,
        due_at: due,
        env,
        schedule: None,
        scheduled_at: None,
        owner: None,
        retry_of: None,
        error: None,
        finished_at: None,
        definition: None,
        input: None,
        origin: None,
    }
}

/// A queued run of `job`, due at `due`.
fn queued(tx: &Tx<'_>, job: &str, due: Time) -> Result<RunId> {
    let env = BTreeMap::new();
    tx.insert_run(&new_run(job, RunState::Queued, due, &env))
}

fn wait_step(name: &str, signal: &str) -> StepDef {
    StepDef {
        name: name.into(),
        kind: StepKind::WaitFor(WaitStep {
            signal: signal.into(),
            timeout: None,
        }),
        needs: Vec::new(),
        condition: None,
        allow_failure: false,
        retry: RetryPolicy::default(),
        timeout: None,
    }
}

fn workflow(names: &[&str]) -> Workflow {
    Workflow {
        steps: names.iter().map(|n| wait_step(n, "go")).collect(),
        parallel: None,
    }
}

fn state_of(w: &mut World, run: RunId, name: &str) -> StepState {
    w.read(|tx| tx.step(run, name)).unwrap().state
}

conformance! {
    /// Instants are kept to the millisecond, rounded down, on both engines.
    fn instants_are_kept_to_the_millisecond(engine) {
        let mut w = world(engine);
        let precise = t(0) + chrono::Duration::nanoseconds(123_456_789);
        w.write(|tx| tx.set_schedule_cursor("s", precise, true));
        assert_eq!(
            w.read(|tx| tx.schedule_cursor("s")),
            Some((t(0) + ms(123), true))
        );
        let before = t(0) - chrono::Duration::nanoseconds(1);
        w.write(|tx| tx.set_schedule_cursor("s", before, false));
        assert_eq!(
            w.read(|tx| tx.schedule_cursor("s")),
            Some((t(0) - ms(1), false))
        );
    }

    fn schedule_cursors_fires_and_pauses(engine) {
        let mut w = world(engine);
        assert_eq!(w.read(|tx| tx.schedule_cursor("a")), None);
        w.write(|tx| {
            tx.set_schedule_cursor("a", t(0), true)?;
            tx.set_schedule_cursor("b", t(1), false)?;
            tx.set_schedule_cursor("c", t(2), true)?;
            tx.set_schedule_cursor("a", t(5), false)
        });
        assert_eq!(w.read(|tx| tx.schedule_cursor("a")), Some((t(5), false)));
        assert_eq!(w.write(|tx| tx.delete_other_cursors(&["a", "x"])), 2);
        assert_eq!(w.read(|tx| tx.schedule_cursor("b")), None);
        assert_eq!(w.write(|tx| tx.delete_other_cursors(&[])), 1);
        assert_eq!(w.read(|tx| tx.schedule_cursor("a")), None);

        // Fires: recorded once; newest first, ties by schedule (bytewise).
        let recorded = w.write(|tx| {
            Ok(vec![
                tx.record_fire("b", t(10), "j", "enqueued", None, Some(7), 1, t(11))?,
                tx.record_fire("b", t(10), "j", "missed", Some("again"), None, 1, t(12))?,
                tx.record_fire("B", t(10), "j", "missed", Some("overlap"), None, 1, t(10))?,
                tx.record_fire("a", t(10), "j", "dropped", None, None, 899, t(10))?,
                tx.record_fire("b", t(20), "j", "enqueued", None, Some(8), 1, t(20) + ms(7))?,
                tx.record_fire("b", t(0), "j", "enqueued", None, Some(6), 1, t(0))?,
            ])
        });
        assert_eq!(recorded, [true, false, true, true, true, true]);
        assert!(w.read(|tx| tx.fire_recorded("b", t(10))));
        assert!(!w.read(|tx| tx.fire_recorded("b", t(11))));
        let all = w.read(|tx| tx.fires(None, 10));
        let keys: Vec<(&str, Time)> = all.iter().map(|f| (f.schedule.as_str(), f.fire_at)).collect();
        assert_eq!(
            keys,
            [("b", t(20)), ("B", t(10)), ("a", t(10)), ("b", t(10)), ("b", t(0))]
        );
        assert_eq!(
            all[3],
            FireRecord {
                schedule: "b".into(),
                fire_at: t(10),
                job: "j".into(),
                outcome: "enqueued".into(),
                reason: None,
                run_id: Some(7),
                count: 1,
                recorded_at: t(11),
            }
        );
        assert_eq!(all[2].count, 899);
        assert_eq!(all[1].reason.as_deref(), Some("overlap"));
        assert_eq!(w.read(|tx| tx.fires(Some("b"), 2)).len(), 2);
        let last = w.read(|tx| tx.last_fire("b")).unwrap();
        assert_eq!((last.fire_at, last.recorded_at), (t(20), t(20) + ms(7)));
        assert_eq!(w.read(|tx| tx.last_fire("nope")), None);
        assert_eq!(w.write(|tx| tx.purge_fires(t(10))), 1);
        assert_eq!(w.write(|tx| tx.purge_fires(t(10))), 0);
        assert_eq!(w.read(|tx| tx.fires(None, 10)).len(), 4);

        // Pauses.
        assert!(w.write(|tx| tx.pause_schedule("b", t(30))));
        assert!(!w.write(|tx| tx.pause_schedule("b", t(40))), "already paused");
        assert!(w.write(|tx| tx.pause_schedule("a", t(31))));
        assert_eq!(w.read(|tx| tx.schedule_paused("b")), Some(t(30)));
        assert_eq!(w.read(|tx| tx.schedule_paused("c")), None);
        assert_eq!(
            w.read(|tx| tx.paused_schedules()),
            BTreeMap::from([("a".to_string(), t(31)), ("b".to_string(), t(30))])
        );
        assert!(w.write(|tx| tx.resume_schedule("b")));
        assert!(!w.write(|tx| tx.resume_schedule("b")));
        assert_eq!(w.read(|tx| tx.paused_schedules()).len(), 1);
    }

    fn the_outbox_claims_due_alerts_in_order_under_a_lease(engine) {
        let mut w = world(engine);
        let alert = |status: &'static str, now: Time| NewAlert {
            rule: "r",
            channel: "slack",
            job: Some("j"),
            event: "dead",
            run_id: Some(7),
            status,
            payload: "{}",
            now,
        };
        let (a1, a2, a3, a4) = w.write(|tx| {
            Ok((
                tx.insert_alert(&alert("pending", t(0)))?,
                tx.insert_alert(&alert("pending", t(0)))?,
                tx.insert_alert(&alert("suppressed", t(0)))?,
                tx.insert_alert(&alert("pending", t(10)))?,
            ))
        });
        assert_eq!(w.store.alerts_written(), 3, "pending ones only");
        let a = w.read(|tx| tx.alert(a3)).unwrap();
        assert_eq!(
            (a.status.as_str(), a.next_attempt_at, a.finished_at, a.attempts),
            ("suppressed", None, Some(t(0)), 0)
        );
        let a = w.read(|tx| tx.alert(a1)).unwrap();
        assert_eq!(
            a,
            AlertRow {
                id: a1,
                rule: "r".into(),
                channel: "slack".into(),
                job: Some("j".into()),
                event: "dead".into(),
                run_id: Some(7),
                status: "pending".into(),
                attempts: 0,
                next_attempt_at: Some(t(0)),
                error: None,
                payload: "{}".into(),
                created_at: t(0),
                finished_at: None,
            }
        );
        assert_eq!(w.read(|tx| tx.next_alert_due()), Some(t(0)));

        let ids = |v: Vec<AlertRow>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(w.write(|tx| tx.claim_alerts("l1", t(0), t(60), 1))), [a1]);
        assert_eq!(ids(w.write(|tx| tx.claim_alerts("l2", t(0), t(60), 10))), [a2]);
        assert!(w.write(|tx| tx.claim_alerts("l3", t(5), t(60), 10)).is_empty());
        assert_eq!(w.read(|tx| tx.next_alert_due()), Some(t(10)));
        // Leases run out: claimed again, in id order.
        assert_eq!(
            ids(w.write(|tx| tx.claim_alerts("l4", t(60), t(120), 10))),
            [a1, a2, a4]
        );
        assert_eq!(w.read(|tx| tx.next_alert_due()), Some(t(120)));
        assert_eq!(w.store.alerts_written(), 0);

        w.write(|tx| {
            tx.alert_attempted(a1, t(61), "sent", None, None)?;
            tx.alert_attempted(a2, t(61), "pending", Some(t(90)), Some("503"))?;
            tx.alert_attempted(a4, t(62), "failed", None, Some("400"))
        });
        assert_eq!(w.read(|tx| tx.pending_alerts()), 1);
        let a = w.read(|tx| tx.alert(a2)).unwrap();
        assert_eq!(
            (a.status.as_str(), a.attempts, a.next_attempt_at, a.error.as_deref(), a.finished_at),
            ("pending", 1, Some(t(90)), Some("503"), None)
        );
        assert_eq!(w.read(|tx| tx.next_alert_due()), Some(t(90)), "no lease any more");
        let a = w.read(|tx| tx.alert(a1)).unwrap();
        assert_eq!(
            (a.status.as_str(), a.next_attempt_at, a.finished_at),
            ("sent", None, Some(t(61)))
        );
        assert_eq!(ids(w.read(|tx| tx.alerts(10, None))), [a4, a3, a2, a1]);
        assert_eq!(ids(w.read(|tx| tx.alerts(2, None))), [a4, a3]);
        assert_eq!(ids(w.read(|tx| tx.alerts(10, Some("pending")))), [a2]);
        assert_eq!(w.read(|tx| tx.alert(9999)), None);
        assert_eq!(
            w.read(|tx| tx.last_sent_per_rule()),
            BTreeMap::from([("r".to_string(), t(61))])
        );

        // Once per key, counted once.
        let once = w.write(|tx| {
            let first = tx.insert_alert_once(&alert("pending", t(70)), "run-7-notify")?;
            Ok((first, tx.insert_alert_once(&alert("pending", t(71)), "run-7-notify")?))
        });
        assert_eq!(once.0, once.1);
        assert_eq!(w.store.alerts_written(), 1);
        assert_eq!(
            w.write(|tx| tx.insert_alert_once(&alert("pending", t(72)), "run-7-notify")),
            once.0
        );
        assert_eq!(w.store.alerts_written(), 0);
        assert_eq!(w.read(|tx| tx.alert(once.0)).unwrap().created_at, t(70));

        // Pending alerts are never purged.
        assert_eq!(w.write(|tx| tx.purge_alerts(t(1000))), 3);
        assert_eq!(ids(w.read(|tx| tx.alerts(10, None))), [once.0, a2]);
    }

    fn throttle_windows_round_trip_and_end_in_order(engine) {
        let mut w = world(engine);
        assert_eq!(w.read(|tx| tx.window("r", "j")), Window::default());
        assert_eq!(w.read(|tx| tx.next_window_end()), None);
        let window = |end: i64, kinds: &[(&str, u64)]| Window {
            end: Some(t(end)),
            suppressed: kinds.iter().map(|(_, n)| n).sum(),
            kinds: kinds.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        };
        w.write(|tx| {
            tx.set_window("r", "j", &window(600, &[("dead", 1), ("timeout", 2)]))?;
            tx.set_window("r", "a", &window(300, &[]))?;
            tx.set_window("q", "z", &window(900, &[("dead", 5)]))?;
            tx.set_window("B", "z", &window(100, &[("late", 1)]))
        });
        assert_eq!(
            w.read(|tx| tx.window("r", "j")),
            window(600, &[("dead", 1), ("timeout", 2)])
        );
        assert_eq!(w.read(|tx| tx.window("r", "j")).suppressed, 3);
        // Replaced, not added to.
        w.write(|tx| tx.set_window("r", "j", &window(600, &[("dead", 4)])));
        assert_eq!(w.read(|tx| tx.window("r", "j")), window(600, &[("dead", 4)]));
        assert_eq!(w.read(|tx| tx.next_window_end()), Some(t(100)));
        let ended: Vec<(String, String, Window)> = w.read(|tx| tx.ended_windows(t(600)));
        assert_eq!(
            ended,
            vec![
                ("B".into(), "z".into(), window(100, &[("late", 1)])),
                ("r".into(), "a".into(), window(300, &[])),
                ("r".into(), "j".into(), window(600, &[("dead", 4)])),
            ]
        );
        w.write(|tx| {
            tx.set_window("B", "z", &Window::default())?;
            tx.set_window("r", "a", &Window::default())
        });
        assert_eq!(w.read(|tx| tx.next_window_end()), Some(t(600)));
        assert_eq!(w.read(|tx| tx.window("r", "a")), Window::default());
        assert_eq!(w.read(|tx| tx.ended_windows(t(599))), vec![]);
    }

    fn deadlines_come_due_in_order_and_once(engine) {
        let mut w = world(engine);
        assert_eq!(w.read(|tx| tx.next_deadline()), None);
        w.write(|tx| {
            for (s, at) in [("b", 0), ("a", 10), ("c", 20), ("d", 30)] {
                tx.record_fire(s, t(at), "j", "missed", Some("why"), None, 1, t(at))?;
            }
            tx.set_deadline("b", t(0), t(100))?;
            tx.set_deadline("a", t(10), t(100))?;
            tx.set_deadline("c", t(20), t(50))?;
            tx.set_deadline("d", t(30), t(500))
        });
        assert_eq!(w.read(|tx| tx.next_deadline()), Some(t(50)));
        let due = w.read(|tx| tx.due_deadlines(t(100)));
        let keys: Vec<(&str, Time)> = due.iter().map(|d| (d.schedule.as_str(), d.deadline_at)).collect();
        assert_eq!(keys, [("c", t(50)), ("a", t(100)), ("b", t(100))]);
        assert_eq!(
            due[0],
            DueDeadline {
                schedule: "c".into(),
                job: "j".into(),
                fire_at: t(20),
                deadline_at: t(50),
                outcome: "missed".into(),
                reason: Some("why".into()),
                run: None,
            }
        );
        w.write(|tx| {
            for d in &due {
                tx.clear_deadline(&d.schedule, d.fire_at)?;
            }
            Ok(())
        });
        assert!(w.read(|tx| tx.due_deadlines(t(100))).is_empty());
        assert_eq!(w.read(|tx| tx.next_deadline()), Some(t(500)));
    }

    /// Fires and alerts, counted live and, once deleted, from what the triggers kept.
    fn fire_and_alert_metrics_survive_deletion(engine) {
        let mut w = world(engine);
        w.write(|tx| {
            tx.record_fire("s1", t(0), "j", "enqueued", None, None, 1, t(0))?;
            tx.record_fire("s1", t(10), "j", "enqueued", None, None, 1, t(10) + ms(500))?;
            tx.record_fire("s1", t(20), "j", "enqueued", None, None, 1, t(19))?;
            tx.record_fire("s1", t(30), "j", "enqueued", None, None, 1, t(30) + ms(125))?;
            tx.record_fire("s1", t(40), "j", "enqueued", None, None, 1, t(7240))?;
            tx.record_fire("s1", t(50), "j", "missed", Some("overlap"), None, 1, t(60))?;
            tx.record_fire("s2", t(0), "j", "dropped", None, None, 899, t(0))?;
            let alert = |channel, status| NewAlert {
                rule: "r",
                channel,
                job: None,
                event: "dead",
                run_id: None,
                status,
                payload: "{}",
                now: t(0),
            };
            let sent = tx.insert_alert(&alert("slack", "pending"))?;
            tx.alert_attempted(sent, t(1), "sent", None, None)?;
            let failed = tx.insert_alert(&alert("mail", "pending"))?;
            tx.alert_attempted(failed, t(1), "failed", None, Some("no"))?;
            tx.insert_alert(&alert("slack", "pending"))?;
            tx.insert_alert(&alert("slack", "suppressed"))?;
            Ok(())
        });
        let live = w.read(|tx| tx.metric_counts());
        let count = |l: &[&str], n: u64| (l.iter().map(|s| s.to_string()).collect::<Vec<_>>(), n);
        assert_eq!(
            live.fires,
            vec![
                count(&["s1", "enqueued"], 5),
                count(&["s1", "missed"], 1),
                count(&["s2", "dropped"], 899),
            ]
        );
        assert_eq!(
            live.alerts,
            vec![
                count(&["mail", "failed"], 1),
                count(&["slack", "sent"], 1),
                count(&["slack", "suppressed"], 1),
            ]
        );
        // Lags 0, 0.5 (on the bound of bucket 3), -1 (counted as 0), 0.125, 7200 (overflow):
        // sums exact in binary, so that any order of addition gives the same.
        assert_eq!(live.fire_lag.len(), 1);
        assert_eq!(live.fire_lag[0].labels, Vec::<String>::new());
        assert_eq!(live.fire_lag[0].buckets, [2, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(live.fire_lag[0].sum, 7200.625);
        assert!(live.runs.is_empty() && live.states.is_empty() && live.run_duration.is_empty());

        w.write(|tx| {
            tx.purge_fires(t(1000))?;
            tx.purge_alerts(t(1000))
        });
        assert_eq!(w.read(|tx| tx.fires(None, 10)), vec![]);
        assert_eq!(w.read(|tx| tx.pending_alerts()), 1);
        assert_eq!(w.read(|tx| tx.metric_counts()), live);
    }

    fn steps_checkpoint_retry_reset_and_cancel(engine) {
        let mut w = world(engine);
        let wf = workflow(&["zeta", "alpha", "mid"]);
        let run = w.write(|tx| {
            let run = queued(tx, "flow", t(0))?;
            tx.insert_steps(run, &wf)?;
            Ok(run)
        });
        let steps = w.read(|tx| tx.steps(run));
        let names: Vec<(&str, u32)> = steps.iter().map(|s| (s.name.as_str(), s.idx)).collect();
        assert_eq!(names, [("zeta", 0), ("alpha", 1), ("mid", 2)], "in the job's order");
        assert_eq!(
            steps[1],
            Step {
                run_id: run,
                name: "alpha".into(),
                idx: 1,
                kind: "wait_for".into(),
                state: StepState::Pending,
                attempts: 0,
                started_at: None,
                finished_at: None,
                wake_at: None,
                waiting_for: None,
                exit_code: None,
                signal: None,
                error: None,
                outputs: None,
                reused_from: None,
            }
        );
        assert_eq!(w.read(|tx| tx.step(run, "nope")), None);
        assert_eq!(w.read(|tx| tx.step_tries(run, "nope")), 0);

        assert_eq!(w.write(|tx| { tx.start_step(run, "zeta", t(1))?; tx.step(run, "zeta") }).map(|s| s.attempts), Some(1));
        assert_eq!(w.write(|tx| { tx.start_step(run, "zeta", t(2))?; tx.step(run, "zeta") }).map(|s| s.attempts), Some(2));
        assert_eq!(w.read(|tx| tx.step_tries(run, "zeta")), 2);
        // Any JSON: a string holding NUL included (an HTTP response's body may).
        let outputs = json!({
            "n": 1.5,
            "big": 12345678901234_i64,
            "s": "é\"x\u{0}y",
            "l": [1, null, {"b": true}],
        });
        w.write(|tx| {
            let end = StepEnd {
                exit_code: Some(0),
                signal: None,
                error: None,
                outputs: Some(&outputs),
            };
            tx.end_step(run, "zeta", StepState::Succeeded, t(3), &end)
        });
        let zeta = w.read(|tx| tx.step(run, "zeta")).unwrap();
        assert_eq!(
            (zeta.state, zeta.attempts, zeta.started_at, zeta.finished_at, zeta.exit_code),
            (StepState::Succeeded, 2, Some(t(2)), Some(t(3)), Some(0))
        );
        assert_eq!(zeta.outputs, Some(outputs.clone()));

        w.write(|tx| tx.suspend_step(run, "alpha", Some(t(100)), Some("go"), t(4)));
        let alpha = w.read(|tx| tx.step(run, "alpha")).unwrap();
        assert_eq!(
            (alpha.state, alpha.attempts, alpha.started_at, alpha.wake_at, alpha.waiting_for),
            (StepState::Suspended, 1, Some(t(4)), Some(t(100)), Some("go".to_string()))
        );
        assert_eq!(w.read(|tx| tx.step_tries(run, "alpha")), 1);

        w.write(|tx| {
            tx.start_step(run, "mid", t(5))?;
            let end = StepEnd {
                exit_code: Some(3),
                signal: Some(9),
                error: Some("exit code 3"),
                outputs: None,
            };
            tx.end_step(run, "mid", StepState::Failed, t(6), &end)?;
            tx.retry_step(run, "mid", Some(t(20)), "exit code 3")
        });
        let mid = w.read(|tx| tx.step(run, "mid")).unwrap();
        assert_eq!(
            (mid.state, mid.wake_at, mid.error.as_deref(), mid.exit_code, mid.signal),
            (StepState::Pending, Some(t(20)), Some("exit code 3"), Some(3), Some(9))
        );
        // The next execution starts clean.
        assert_eq!(w.write(|tx| { tx.start_step(run, "mid", t(21))?; tx.step(run, "mid") }).map(|s| s.attempts), Some(2));
        let mid = w.read(|tx| tx.step(run, "mid")).unwrap();
        assert_eq!(
            (mid.state, mid.wake_at, mid.error, mid.exit_code, mid.signal, mid.finished_at),
            (StepState::Running, None, None, None, None, None)
        );

        // Interrupted: running ones fail, named in order.
        w.write(|tx| tx.start_step(run, "alpha", t(22)));
        assert_eq!(
            w.write(|tx| tx.interrupt_steps(run, t(23), "interrupted")),
            ["alpha", "mid"]
        );
        let alpha = w.read(|tx| tx.step(run, "alpha")).unwrap();
        assert_eq!(
            (alpha.state, alpha.finished_at, alpha.error.as_deref(), alpha.waiting_for),
            (StepState::Failed, Some(t(23)), Some("interrupted"), None)
        );
        assert!(w.write(|tx| tx.interrupt_steps(run, t(23), "again")).is_empty());

        // Reset for the next attempt: what failed runs again, with its tries counted anew.
        w.write(|tx| tx.reset_steps(run));
        assert_eq!(state_of(&mut w, run, "alpha"), StepState::Pending);
        assert_eq!(state_of(&mut w, run, "mid"), StepState::Pending);
        assert_eq!(state_of(&mut w, run, "zeta"), StepState::Succeeded);
        assert_eq!(w.read(|tx| tx.step_tries(run, "mid")), 0);
        assert_eq!(w.read(|tx| tx.step(run, "mid")).unwrap().attempts, 2, "kept");
        assert_eq!(w.read(|tx| tx.step_tries(run, "zeta")), 2, "kept");

        // Cancelled: what had not ended.
        w.write(|tx| {
            tx.suspend_step(run, "alpha", None, Some("go"), t(30))?;
            tx.cancel_steps(run, t(31))
        });
        for (name, state) in [
            ("zeta", StepState::Succeeded),
            ("alpha", StepState::Cancelled),
            ("mid", StepState::Cancelled),
        ] {
            assert_eq!(state_of(&mut w, run, name), state, "{name}");
        }
        let alpha = w.read(|tx| tx.step(run, "alpha")).unwrap();
        assert_eq!((alpha.finished_at, alpha.wake_at), (Some(t(31)), None));

        // A JSON null output is kept as such, not as no output.
        w.write(|tx| {
            let end = StepEnd {
                outputs: Some(&serde_json::Value::Null),
                ..StepEnd::default()
            };
            tx.end_step(run, "mid", StepState::Skipped, t(32), &end)
        });
        assert_eq!(
            w.read(|tx| tx.step(run, "mid")).unwrap().outputs,
            Some(serde_json::Value::Null)
        );

        // Several runs' rows at once: each as `steps` gives them; a run without steps (or
        // unknown) is left out.
        let (other, plain) = w.write(|tx| {
            let other = queued(tx, "flow", t(40))?;
            tx.insert_steps(other, &workflow(&["b", "a"]))?;
            Ok((other, queued(tx, "plain", t(41))?))
        });
        let of = w.read(|tx| tx.steps_of(&[plain, run, other, 999_999]));
        assert_eq!(of.len(), 2);
        assert_eq!(of[&run], w.read(|tx| tx.steps(run)));
        assert_eq!(of[&other], w.read(|tx| tx.steps(other)));
        assert_eq!(
            of[&other].iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert!(w.read(|tx| tx.steps_of(&[])).is_empty());
        assert_eq!(w.read(|tx| tx.steps_of(&[other])), HashMap::from([(other, of[&other].clone())]));
        assert!(w.read(|tx| tx.steps_of(&[plain])).is_empty());
    }

    fn a_retried_run_reuses_checkpoints_from_the_first_run(engine) {
        let mut w = world(engine);
        let wf = workflow(&["a", "b"]);
        let outputs = json!({"id": 7});
        let (r1, r2, r3) = w.write(|tx| {
            let mut runs = Vec::new();
            for due in 0..3 {
                let run = queued(tx, "flow", t(due))?;
                tx.insert_steps(run, &wf)?;
                runs.push(run);
            }
            tx.start_step(runs[0], "a", t(1))?;
            let end = StepEnd {
                exit_code: Some(0),
                outputs: Some(&outputs),
                ..StepEnd::default()
            };
            tx.end_step(runs[0], "a", StepState::Succeeded, t(2), &end)?;
            tx.reuse_step(runs[0], runs[1], "a")?;
            tx.reuse_step(runs[1], runs[2], "a")?;
            Ok((runs[0], runs[1], runs[2]))
        });
        let first = w.read(|tx| tx.step(r1, "a")).unwrap();
        for run in [r2, r3] {
            let a = w.read(|tx| tx.step(run, "a")).unwrap();
            assert_eq!(
                a,
                Step {
                    run_id: run,
                    reused_from: Some(r1),
                    ..first.clone()
                },
                "the origin of the checkpoint, through the chain"
            );
            assert_eq!(state_of(&mut w, run, "b"), StepState::Pending);
        }
        assert_eq!(w.read(|tx| tx.step_tries(r2, "a")), 0, "its own tries");
    }

    fn definitions_are_stored_once_and_purged_when_unpinned(engine) {
        let mut w = world(engine);
        let (a, a_again, b) = w.write(|tx| {
            Ok((
                tx.store_definition("{\"steps\":[1]}")?,
                tx.store_definition("{\"steps\":[1]}")?,
                tx.store_definition("{\"steps\":[2]}")?,
            ))
        });
        assert_eq!(a, a_again);
        assert_ne!(a, b);
        assert_eq!(w.write(|tx| tx.store_definition("{\"steps\":[1]}")), a);
        let env = BTreeMap::new();
        let (pinned, plain) = w.write(|tx| {
            let mut r = new_run("flow", RunState::Queued, t(0), &env);
            r.definition = Some(a);
            Ok((tx.insert_run(&r)?, queued(tx, "flow", t(0))?))
        });
        assert_eq!(
            w.read(|tx| tx.definition(pinned)),
            Some((a, "{\"steps\":[1]}".to_string()))
        );
        assert_eq!(w.read(|tx| tx.definition(plain)), None);
        assert_eq!(w.read(|tx| tx.definition(9999)), None);
        assert_eq!(w.write(|tx| tx.purge_definitions()), 1);
        assert_eq!(w.write(|tx| tx.purge_definitions()), 0);
        assert_eq!(w.read(|tx| tx.definition(pinned)).map(|d| d.0), Some(a));
    }

    fn suspended_runs_sleep_until_due_or_never(engine) {
        let mut w = world(engine);
        let (sleeper, waiter) = w.write(|tx| {
            let sleeper = queued(tx, "flow", t(0))?;
            let waiter = queued(tx, "flow", t(0))?;
            tx.start_attempt(sleeper, "daemon", t(1), false)?;
            tx.start_attempt(waiter, "daemon", t(1), false)?;
            tx.suspend_run(sleeper, Some(t(60)), None)?;
            tx.suspend_run(waiter, None, Some("fg"))?;
            Ok((sleeper, waiter))
        });
        let run = w.read(|tx| tx.run(sleeper)).unwrap();
        assert_eq!((run.state, run.due_at, run.owner), (RunState::Suspended, t(60), None));
        let run = w.read(|tx| tx.run(waiter)).unwrap();
        assert_eq!(run.state, RunState::Suspended);
        assert!(is_never(run.due_at), "{}", run.due_at);
        assert_eq!(run.due_at.timestamp_millis(), NEVER_MS);
        assert_eq!(run.owner.as_deref(), Some("fg"));
        // Woken: due at once, or when it was due if that was earlier.
        w.write(|tx| {
            tx.queue_resume(sleeper, t(90))?;
            tx.queue_resume(waiter, t(30))?;
            tx.queue_resume(waiter, t(10))
        });
        let run = w.read(|tx| tx.run(sleeper)).unwrap();
        assert_eq!((run.state, run.due_at, run.resume), (RunState::Queued, t(60), true));
        let run = w.read(|tx| tx.run(waiter)).unwrap();
        assert_eq!((run.state, run.due_at, run.resume), (RunState::Queued, t(30), true));
    }

    fn signals_are_taken_oldest_first_and_wake_their_runs(engine) {
        let mut w = world(engine);
        let wf = workflow(&["ask"]);
        let (r1, r2) = w.write(|tx| {
            let mut runs = Vec::new();
            for _ in 0..2 {
                let run = queued(tx, "flow", t(0))?;
                tx.insert_steps(run, &wf)?;
                tx.start_attempt(run, "daemon", t(1), false)?;
                runs.push(run);
            }
            Ok((runs[0], runs[1]))
        });
        let data = json!({"ok": true, "by": "ops\u{0}"});
        assert!(
            !w.write(|tx| tx.insert_signal(r1, "approve", Some(&data), None, t(2))),
            "nobody waits for it yet"
        );
        assert!(w.read(|tx| tx.signaled_runs("daemon")).is_empty());
        w.write(|tx| {
            tx.suspend_step(r1, "ask", None, Some("approve"), t(3))?;
            tx.suspend_step(r2, "ask", None, Some("approve"), t(3))
        });
        assert_eq!(w.read(|tx| tx.signaled_runs("daemon")), [r1]);
        assert!(w.read(|tx| tx.signaled_runs("other")).is_empty());
        assert!(w.write(|tx| tx.insert_signal(r1, "approve", None, Some("no"), t(4))));
        assert!(w.write(|tx| tx.insert_signal(r2, "approve", None, None, t(4))));
        assert!(!w.write(|tx| tx.insert_signal(r2, "other", None, None, t(4))));
        assert_eq!(w.read(|tx| tx.signaled_runs("daemon")), [r1, r2]);

        let take = |w: &mut World, run| w.write(|tx| tx.take_signal(run, "approve", "ask", t(5)));
        assert_eq!(take(&mut w, r1), Some((Some(data.clone()), None)));
        assert_eq!(take(&mut w, r1), Some((None, Some("no".to_string()))));
        assert_eq!(take(&mut w, r1), None);
        assert_eq!(w.read(|tx| tx.signaled_runs("daemon")), [r2]);
        assert_eq!(take(&mut w, r2), Some((None, None)));
        assert!(w.read(|tx| tx.signaled_runs("daemon")).is_empty());
    }

    fn the_change_log_follows_runs_and_steps(engine) {
        let mut w = world(engine);
        assert_eq!(w.read(|tx| Ok((tx.first_change()?, tx.last_change()?))), (0, 0));
        assert!(w.read(|tx| tx.changes_after(0, 10)).is_empty());
        let wf = workflow(&["a"]);
        let run = w.write(|tx| {
            let run = queued(tx, "flow", t(0))?;
            tx.insert_steps(run, &wf)?;
            tx.set_state(run, RunState::Running)?;
            tx.set_state(run, RunState::Running)?;
            tx.start_step(run, "a", t(1))?;
            tx.start_step(run, "a", t(2))?;
            tx.end_step(run, "a", StepState::Succeeded, t(3), &StepEnd::default())?;
            tx.finish_run(run, RunState::Succeeded, t(3), None, Some(0), None)?;
            Ok(run)
        });
        let changes = w.read(|tx| tx.changes_after(0, 100));
        let seen: Vec<(RunId, Option<&str>, &str)> = changes
            .iter()
            .map(|c| (c.run_id, c.step.as_deref(), c.state.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (run, None, "queued"),
                (run, None, "running"),
                (run, Some("a"), "running"),
                (run, Some("a"), "succeeded"),
                (run, None, "succeeded"),
            ],
            "one per change of state, none for the same state again"
        );
        assert!(changes.windows(2).all(|p| p[0].seq < p[1].seq));
        let (first, last) = w.read(|tx| Ok((tx.first_change()?, tx.last_change()?)));
        assert_eq!((first, last), (changes[0].seq, changes[4].seq));
        assert_eq!(w.read(|tx| tx.changes_after(changes[1].seq, 2)), changes[2..4].to_vec());
        assert!(w.read(|tx| tx.changes_after(last, 10)).is_empty());
        assert_eq!(w.write(|tx| tx.prune_changes(2)), 3);
        assert_eq!(w.read(|tx| tx.first_change()), changes[3].seq);
        assert_eq!(w.write(|tx| tx.prune_changes(u64::MAX)), 0);
        assert_eq!(w.write(|tx| tx.prune_changes(0)), 2);
        assert_eq!(w.read(|tx| Ok((tx.first_change()?, tx.last_change()?))), (0, 0));
    }

    /// Runs, attempts, steps and their histograms, counted live and, once purged, from what
    /// the triggers kept: the same numbers.
    fn run_metrics_survive_purge(engine) {
        let mut w = world(engine);
        let wf = workflow(&["x", "y"]);
        let env = BTreeMap::new();
        w.write(|tx| {
            // 5 ms in the queue, 100 ms from start to end: both on a bucket's bound.
            let r1 = queued(tx, "a", t(0))?;
            tx.insert_steps(r1, &wf)?;
            let (_, seq) = tx.start_attempt(r1, "daemon", t(0) + ms(5), false)?;
            tx.start_step(r1, "x", t(0) + ms(5))?;
            tx.end_step(r1, "x", StepState::Succeeded, t(0) + ms(50), &StepEnd::default())?;
            tx.end_step(r1, "y", StepState::Skipped, t(0) + ms(50), &StepEnd::default())?;
            tx.end_attempt(r1, seq, t(0) + ms(105), "succeeded", Some(0), None, None, Some(10))?;
            tx.finish_run(r1, RunState::Succeeded, t(0) + ms(105), None, Some(0), None)?;
            // Two attempts: 3 s from the first start, 3 s from due to the last start; its step
            // x reused (not counted again), y failed.
            let r2 = queued(tx, "a", t(0))?;
            tx.insert_steps(r2, &wf)?;
            tx.reuse_step(r1, r2, "x")?;
            let (_, seq) = tx.start_attempt(r2, "daemon", t(1), false)?;
            tx.end_attempt(r2, seq, t(2), "failed", Some(1), None, Some("exit code 1"), None)?;
            tx.set_state(r2, RunState::Queued)?;
            let (_, seq) = tx.start_attempt(r2, "daemon", t(3), false)?;
            tx.start_step(r2, "y", t(3))?;
            tx.end_step(r2, "y", StepState::Failed, t(4), &StepEnd::default())?;
            tx.end_attempt(r2, seq, t(4), "failed", Some(1), None, Some("exit code 1"), None)?;
            tx.finish_run(r2, RunState::Dead, t(4), Some("exit code 1"), Some(1), None)?;
            // Born dead: never started, in no histogram.
            let mut r = new_run("b", RunState::Dead, t(0), &env);
            r.finished_at = Some(t(0));
            r.error = Some("dependency failed");
            tx.insert_run(&r)?;
            // Cancelled while running: its attempt has no outcome; started 2 h after it was due.
            let r4 = queued(tx, "b", t(0))?;
            tx.start_attempt(r4, "daemon", t(7200), false)?;
            tx.finish_run(r4, RunState::Cancelled, t(7200) + ms(1), None, None, None)?;
            // Still running: a state, nothing else.
            let r5 = queued(tx, "b", t(0))?;
            tx.start_attempt(r5, "daemon", t(1), false)?;
            Ok(())
        });
        let live = w.read(|tx| tx.metric_counts());
        let count = |l: &[&str], n: u64| (l.iter().map(|s| s.to_string()).collect::<Vec<_>>(), n);
        assert_eq!(
            live.runs,
            vec![
                count(&["a", "dead"], 1),
                count(&["a", "succeeded"], 1),
                count(&["b", "cancelled"], 1),
                count(&["b", "dead"], 1),
            ]
        );
        assert_eq!(
            live.attempts,
            vec![count(&["a", "failed"], 2), count(&["a", "succeeded"], 1)]
        );
        assert_eq!(
            live.steps,
            vec![
                count(&["a", "x", "succeeded"], 1),
                count(&["a", "y", "failed"], 1),
                count(&["a", "y", "skipped"], 1),
            ]
        );
        assert_eq!(
            live.states,
            vec![
                count(&["cancelled"], 1),
                count(&["dead"], 2),
                count(&["running"], 1),
                count(&["succeeded"], 1),
            ]
        );
        let hist = |h: &[Hist]| {
            h.iter()
                .map(|h| (h.labels.join(","), h.buckets.clone(), (h.sum * 1000.0).round()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            hist(&live.run_duration),
            [
                ("a".to_string(), vec![1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], 3100.0),
                ("b".to_string(), vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1.0),
            ]
        );
        assert_eq!(
            hist(&live.queue_wait),
            [
                ("a".to_string(), vec![1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], 3005.0),
                ("b".to_string(), vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 7_200_000.0),
            ]
        );

        let purged = w.write(|tx| tx.purge(None, false));
        assert_eq!(purged.len(), 4);
        let mut after = w.read(|tx| tx.metric_counts());
        assert_eq!(after.states, vec![count(&["running"], 1)]);
        after.states = live.states.clone();
        assert_eq!(after, live);
    }
}
