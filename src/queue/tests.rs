//! Queue logic over a real SQLite database.

use std::path::Path;

use chrono::TimeZone;

use super::lifecycle::{self, CancelResult, Outcome, Report};
use super::{Request, enqueue};
use crate::config::Config;
use crate::model::{Priority, RunId, RunState, Time, Trigger};
use crate::store::testing::{Engine, TestStore, conformance};
use crate::store::{Durability, Store};

struct World {
    store: Store,
    /// Dropped after `store`: a PostgreSQL schema goes once nothing is connected to it.
    _test_store: TestStore,
    _dir: tempfile::TempDir,
    config: Config,
    now: Time,
}

fn world(engine: Engine, jobs: &[(&str, &str)]) -> World {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    for (name, yaml) in jobs {
        std::fs::write(dir.path().join(format!("jobs/{name}.yaml")), yaml).unwrap();
    }
    let config = Config::load_with_env(dir.path(), &|_| None).unwrap();
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

impl World {
    fn add(&mut self, req: Request) -> RunId {
        let (config, now) = (&self.config, self.now);
        self.store
            .write(|tx| enqueue(tx, config, &req, now))
            .unwrap()
            .id
    }
    fn add_job(&mut self, job: &str) -> RunId {
        self.add(Request::new(job, Trigger::Queue))
    }
    fn claim(&mut self, owner: &str, limit: usize) -> Vec<(RunId, u32, u32)> {
        let (config, now) = (&self.config, self.now);
        self.store
            .write(|tx| lifecycle::claim(tx, config, owner, now, limit))
            .unwrap()
            .0
            .into_iter()
            .map(|c| (c.run.id, c.attempt, c.seq))
            .collect()
    }
    fn finish(&mut self, run: RunId, seq: u32, outcome: Outcome) -> RunState {
        let (config, now) = (&self.config, self.now);
        let report = Report {
            run,
            seq,
            outcome,
            output_bytes: Some(0),
            duration_ms: Some(5),
            output_tail: None,
            output: None,
        };
        self.store
            .write(|tx| lifecycle::finish(tx, config, &report, now, 0.5))
            .unwrap()
    }
    fn promote(&mut self) -> usize {
        let (config, now) = (&self.config, self.now);
        self.store
            .write(|tx| lifecycle::promote_due(tx, config, now))
            .unwrap()
    }
    fn state(&mut self, id: RunId) -> RunState {
        self.store.read(|tx| tx.brief(id)).unwrap().unwrap().state
    }
    fn error(&mut self, id: RunId) -> Option<String> {
        self.store.read(|tx| tx.run(id)).unwrap().unwrap().error
    }
    fn advance(&mut self, secs: i64) {
        self.now += chrono::Duration::seconds(secs);
    }
}

fn fail() -> Outcome {
    Outcome::Failed {
        exit_code: Some(3),
        signal: None,
        error: "exit code 3".into(),
        timed_out: false,
    }
}

const PLAIN: &str = "run: 'true'\nconcurrency: 10\n";

conformance! {
    fn claims_follow_priority_then_due_time_then_fifo(engine) {
        let mut w = world(engine, &[("a", PLAIN)]);
        let prio = |p: Priority, w: &mut World| {
            let mut r = Request::new("a", Trigger::Queue);
            r.priority = Some(p);
            w.add(r)
        };
        let low = prio(Priority::Low, &mut w);
        let normal1 = prio(Priority::Normal, &mut w);
        let high1 = prio(Priority::High, &mut w);
        w.advance(1);
        let normal2 = prio(Priority::Normal, &mut w);
        let critical = prio(Priority::Critical, &mut w);
        let high2 = prio(Priority::High, &mut w);
        let mut order = Vec::new();
        for _ in 0..6 {
            let limit = 1 + w.claim_count();
            order.push(w.claim("daemon", limit)[0].0);
        }
        assert_eq!(order, vec![critical, high1, high2, normal1, normal2, low]);
    }

    fn per_job_and_global_concurrency(engine) {
        let mut w = world(engine, &[
            ("one", "run: x\nconcurrency: 1\n"),
            ("two", "run: x\nconcurrency: 2\n"),
        ]);
        let o1 = w.add_job("one");
        let _o2 = w.add_job("one");
        let t1 = w.add_job("two");
        let t2 = w.add_job("two");
        let _t3 = w.add_job("two");
        let got: Vec<RunId> = w.claim("daemon", 10).into_iter().map(|c| c.0).collect();
        assert_eq!(got, vec![o1, t1, t2]);
        assert!(
            w.claim("daemon", 10).is_empty(),
            "both jobs are at their limit"
        );

        let mut w = world(engine, &[("a", PLAIN)]);
        for _ in 0..5 {
            w.add_job("a");
        }
        assert_eq!(w.claim("daemon", 2).len(), 2);
        assert_eq!(
            w.claim("daemon", 2).len(),
            0,
            "global limit counts running runs"
        );
        assert_eq!(w.claim("daemon", 3).len(), 1);
    }

    fn claims_merge_jobs_in_priority_order_past_a_saturated_backlog(engine) {
        let mut w = world(engine, &[
            ("busy", "run: x\nconcurrency: 1\n"),
            ("low", "run: x\nconcurrency: 5\npriority: low\n"),
            ("high", "run: x\nconcurrency: 2\npriority: high\n"),
        ]);
        let first = w.add_job("busy");
        for _ in 0..300 {
            w.add_job("busy");
        }
        assert_eq!(w.claim("daemon", 10)[0].0, first);
        let l1 = w.add_job("low");
        let l2 = w.add_job("low");
        let h1 = w.add_job("high");
        let h2 = w.add_job("high");
        let h3 = w.add_job("high");
        let got: Vec<RunId> = w.claim("daemon", 5).into_iter().map(|c| c.0).collect();
        assert_eq!(
            got,
            vec![h1, h2, l1, l2],
            "high (limit 2) first, then low; busy is full"
        );
        let _ = h3;
    }

    fn runs_of_jobs_the_claimer_does_not_know_stay_queued(engine) {
        let mut w = world(engine, &[("a", PLAIN), ("b", PLAIN)]);
        let a = w.add_job("a");
        let b = w.add_job("b");
        let mut narrow = w.config.clone();
        narrow.jobs.remove("a");
        let now = w.now;
        let (claimed, unknown) = w
            .store
            .write(|tx| lifecycle::claim(tx, &narrow, "daemon", now, 10))
            .unwrap();
        assert_eq!(
            claimed.iter().map(|c| c.run.id).collect::<Vec<_>>(),
            vec![b]
        );
        assert_eq!(unknown, vec!["a".to_string()]);
        assert_eq!(w.state(a), RunState::Queued);
    }

    fn reserved_runs_are_left_to_their_owner(engine) {
        let mut w = world(engine, &[("a", PLAIN)]);
        let mut r = Request::new("a", Trigger::Manual);
        r.owner = Some("job-1".into());
        let mine = w.add(r);
        let other = w.add_job("a");
        let got: Vec<RunId> = w.claim("daemon", 10).into_iter().map(|c| c.0).collect();
        assert_eq!(got, vec![other]);
        let (config, now) = (&w.config, w.now);
        let (claimed, _) = w
            .store
            .write(|tx| lifecycle::claim_these(tx, config, "job-1", &[mine], now, 1))
            .unwrap();
        assert_eq!(claimed[0].run.id, mine);
        assert_eq!(claimed[0].attempt, 1);
    }

    fn dependency_chain_runs_in_order(engine) {
        let mut w = world(engine, &[
            ("a", PLAIN),
            ("b", "run: x\ndepends_on: [a]\n"),
            ("c", "run: x\ndepends_on: [b]\n"),
        ]);
        let c = w.add_job("c");
        let (config, now) = (&w.config, w.now);
        let chain = w.store.read(|tx| lifecycle::chain(tx, c)).unwrap();
        assert_eq!(chain.len(), 3);
        let runs = w
            .store
            .read(|tx| tx.list_runs(&Default::default()))
            .unwrap();
        let (a, b) = (runs[0].id, runs[1].id);
        assert_eq!(
            (runs[0].job.as_str(), runs[0].state, runs[0].trigger),
            ("a", RunState::Queued, Trigger::Dependency)
        );
        assert_eq!(
            (
                runs[1].job.as_str(),
                runs[1].state,
                runs[1].depends_on.clone()
            ),
            ("b", RunState::Waiting, vec![a])
        );
        assert_eq!(
            (runs[2].state, runs[2].depends_on.clone()),
            (RunState::Waiting, vec![b])
        );
        let _ = (config, now);

        let claimed = w.claim("daemon", 10);
        assert_eq!(claimed.iter().map(|c| c.0).collect::<Vec<_>>(), vec![a]);
        assert_eq!(
            w.finish(a, claimed[0].2, Outcome::Succeeded),
            RunState::Succeeded
        );
        assert_eq!(w.state(b), RunState::Queued);
        assert_eq!(w.state(c), RunState::Waiting);
        let claimed = w.claim("daemon", 10);
        w.finish(b, claimed[0].2, Outcome::Succeeded);
        assert_eq!(w.state(c), RunState::Queued);
    }

    fn an_active_dependency_run_is_waited_for_not_duplicated(engine) {
        let mut w = world(engine, &[
            ("a", PLAIN),
            ("b", "run: x\ndepends_on: [a]\n"),
            ("c", "run: x\ndepends_on: [a]\n"),
        ]);
        let a = w.add_job("a");
        let b = w.add_job("b");
        let c = w.add_job("c");
        let runs = w
            .store
            .read(|tx| tx.list_runs(&Default::default()))
            .unwrap();
        assert_eq!(runs.len(), 3, "no second run of a");
        assert_eq!(runs.iter().find(|r| r.id == b).unwrap().depends_on, vec![a]);
        assert_eq!(runs.iter().find(|r| r.id == c).unwrap().depends_on, vec![a]);

        // Once a has finished, a new dependent gets a fresh run of a.
        let claimed = w.claim("daemon", 10);
        w.finish(a, claimed[0].2, Outcome::Succeeded);
        let _d = w.add_job("b");
        assert_eq!(
            w.store
                .read(|tx| tx.list_runs(&Default::default()))
                .unwrap()
                .len(),
            5
        );
    }

    fn diamond_dependencies_expand_once_and_inherit_priority(engine) {
        let mut w = world(engine, &[
            ("a", PLAIN),
            ("b", "run: x\ndepends_on: [a]\n"),
            ("c", "run: x\ndepends_on: [a]\n"),
            ("d", "run: x\ndepends_on: [b, c]\npriority: critical\n"),
        ]);
        w.add_job("d");
        let runs = w
            .store
            .read(|tx| tx.list_runs(&Default::default()))
            .unwrap();
        assert_eq!(runs.iter().filter(|r| r.job == "a").count(), 1);
        assert_eq!(runs.len(), 4);
        assert!(
            runs.iter().all(|r| r.priority == Priority::Critical),
            "dependencies inherit the dependent's priority"
        );
    }

    fn failure_cascades_down_the_chain_with_reasons(engine) {
        let mut w = world(engine, &[
            ("a", PLAIN),
            ("b", "run: x\ndepends_on: [a]\n"),
            ("c", "run: x\ndepends_on: [b]\n"),
        ]);
        let c = w.add_job("c");
        let claimed = w.claim("daemon", 10);
        let a = claimed[0].0;
        assert_eq!(w.finish(a, claimed[0].2, fail()), RunState::Dead);
        let b = c - 1;
        assert_eq!(w.state(b), RunState::Dead);
        assert_eq!(w.error(b).unwrap(), format!("dependency a run {a} failed"));
        assert_eq!(w.state(c), RunState::Dead);
        assert_eq!(w.error(c).unwrap(), format!("dependency b run {b} failed"));
        assert_eq!(w.error(a).unwrap(), "exit code 3");
    }

    fn idempotency_keys_return_the_existing_run(engine) {
        let mut w = world(engine, &[("a", PLAIN), ("b", PLAIN)]);
        let mut r = Request::new("a", Trigger::Queue);
        r.key = Some("order-42".into());
        let (config, now) = (&w.config, w.now);
        let first = w.store.write(|tx| enqueue(tx, config, &r, now)).unwrap();
        let second = w.store.write(|tx| enqueue(tx, config, &r, now)).unwrap();
        assert!(!first.existing && second.existing);
        assert_eq!(first.id, second.id);
        // The same key on another job is another run.
        r.job = "b".into();
        let third = w.store.write(|tx| enqueue(tx, config, &r, now)).unwrap();
        assert_ne!(third.id, first.id);
    }

    fn delayed_runs_wait_for_their_time(engine) {
        let mut w = world(engine, &[("a", PLAIN), ("b", "run: x\ndepends_on: [a]\n")]);
        let mut r = Request::new("b", Trigger::Queue);
        r.due_at = Some(w.now + chrono::Duration::seconds(90));
        let b = w.add(r);
        assert_eq!(w.state(b), RunState::Delayed);
        assert_eq!(
            w.state(b - 1),
            RunState::Delayed,
            "its dependency is delayed with it"
        );
        assert!(w.claim("daemon", 10).is_empty());
        assert_eq!(
            w.store.read(|tx| tx.next_due()).unwrap(),
            Some(w.now + chrono::Duration::seconds(90))
        );
        w.advance(89);
        assert_eq!(w.promote(), 0);
        w.advance(1);
        assert_eq!(w.promote(), 2);
        assert_eq!(w.state(b - 1), RunState::Queued);
        assert_eq!(w.state(b), RunState::Waiting);
    }

    fn retries_back_off_then_die_with_the_last_error(engine) {
        let mut w = world(engine, &[(
            "a",
            "run: x\nretry: { attempts: 3, initial: 10s, jitter: false }\n",
        )]);
        let a = w.add_job("a");
        let c = w.claim("daemon", 10);
        assert_eq!((c[0].1, c[0].2), (1, 1));
        assert_eq!(w.finish(a, 1, fail()), RunState::Retrying);
        let due = w.store.read(|tx| tx.run(a)).unwrap().unwrap().due_at;
        assert_eq!(due, w.now + chrono::Duration::seconds(10));
        assert!(w.claim("daemon", 10).is_empty());
        w.advance(10);
        w.promote();
        let c = w.claim("daemon", 10);
        assert_eq!((c[0].1, c[0].2), (2, 2));
        assert_eq!(w.finish(a, 2, fail()), RunState::Retrying);
        let due = w.store.read(|tx| tx.run(a)).unwrap().unwrap().due_at;
        assert_eq!(
            due,
            w.now + chrono::Duration::seconds(20),
            "exponential: doubled"
        );
        w.advance(20);
        w.promote();
        let c = w.claim("daemon", 10);
        let last = Outcome::Failed {
            exit_code: None,
            signal: Some(9),
            error: "killed by signal 9".into(),
            timed_out: false,
        };
        assert_eq!(w.finish(a, c[0].2, last), RunState::Dead);
        let run = w.store.read(|tx| tx.run(a)).unwrap().unwrap();
        assert_eq!(
            (run.attempt, run.error.as_deref(), run.signal),
            (3, Some("killed by signal 9"), Some(9))
        );
        let attempts = w.store.read(|tx| tx.attempts(a)).unwrap();
        assert_eq!(
            attempts
                .iter()
                .map(|a| a.outcome.clone().unwrap())
                .collect::<Vec<_>>(),
            vec!["failed"; 3]
        );
    }

    fn cancelling(engine) {
        let mut w = world(engine, &[("a", PLAIN), ("b", "run: x\ndepends_on: [a]\n")]);
        let b = w.add_job("b");
        let a = b - 1;
        let now = w.now;
        let config = w.config.clone();
        // Cancelling a running run only asks its owner.
        let c = w.claim("daemon", 10);
        assert_eq!(
            w.store
                .write(|tx| lifecycle::cancel(tx, &config, a, now))
                .unwrap(),
            Some(CancelResult::Stopping)
        );
        assert_eq!(
            w.store.read(|tx| tx.cancel_requests("daemon")).unwrap(),
            vec![a]
        );
        assert_eq!(
            w.finish(a, c[0].2, fail()),
            RunState::Cancelled,
            "the owner's kill ends it cancelled"
        );
        assert_eq!(w.state(b), RunState::Dead);
        assert_eq!(
            w.store
                .write(|tx| lifecycle::cancel(tx, &config, a, now))
                .unwrap(),
            Some(CancelResult::AlreadyFinished(RunState::Cancelled))
        );
        assert_eq!(
            w.store
                .write(|tx| lifecycle::cancel(tx, &config, 999, now))
                .unwrap(),
            None
        );
        let q = w.add_job("a");
        assert_eq!(
            w.store
                .write(|tx| lifecycle::cancel(tx, &config, q, now))
                .unwrap(),
            Some(CancelResult::Cancelled)
        );
        assert_eq!(w.state(q), RunState::Cancelled);
    }

    fn recovery_after_a_crash_counts_the_lost_attempt(engine) {
        let mut w = world(engine, &[
            ("once", PLAIN),
            ("twice", "run: x\nconcurrency: 5\nretry: { attempts: 2 }\n"),
        ]);
        let once = w.add_job("once");
        let twice = w.add_job("twice");
        let mut r = Request::new("once", Trigger::Manual);
        r.owner = Some("daemon".into());
        let reserved = w.add(r);
        w.claim("daemon", 2);
        let (config, now) = (&w.config, w.now);
        let recovered = w
            .store
            .write(|tx| lifecycle::recover(tx, config, "daemon", now, 0.0))
            .unwrap();
        assert_eq!(
            recovered,
            vec![(once, RunState::Dead), (twice, RunState::Retrying)]
        );
        assert_eq!(w.error(once).as_deref(), Some("interrupted"));
        let att = w.store.read(|tx| tx.attempts(once)).unwrap();
        assert_eq!(att[0].outcome.as_deref(), Some("interrupted"));
        let res = w.store.read(|tx| tx.run(reserved)).unwrap().unwrap();
        assert_eq!(
            (res.state, res.owner),
            (RunState::Queued, None),
            "reservations are released"
        );
    }

    fn a_shutdown_interruption_is_not_counted(engine) {
        let mut w = world(engine, &[("a", PLAIN)]);
        let a = w.add_job("a");
        let c = w.claim("daemon", 1);
        assert_eq!(w.finish(a, c[0].2, Outcome::Interrupted), RunState::Queued);
        let c = w.claim("daemon", 1);
        assert_eq!(
            (c[0].1, c[0].2),
            (1, 2),
            "attempt 1 again, second attempt row"
        );
        w.finish(a, 2, Outcome::Succeeded);
        let run = w.store.read(|tx| tx.run(a)).unwrap().unwrap();
        assert_eq!((run.state, run.attempt), (RunState::Succeeded, 1));
    }

    fn retrying_dead_runs(engine) {
        let mut w = world(engine, &[("a", PLAIN)]);
        let mut r = Request::new("a", Trigger::Queue);
        r.env.insert("K".into(), "v".into());
        r.priority = Some(Priority::High);
        let a = w.add(r);
        let c = w.claim("daemon", 1);
        w.finish(a, c[0].2, fail());
        let (config, now) = (&w.config, w.now);
        let new = w
            .store
            .write(|tx| lifecycle::retry_dead(tx, config, a, None, now))
            .unwrap();
        let run = w.store.read(|tx| tx.run(new)).unwrap().unwrap();
        assert_eq!(
            (
                run.trigger,
                run.priority,
                run.env["K"].as_str(),
                run.retry_of
            ),
            (Trigger::Retry, Priority::High, "v", Some(a))
        );
        let old = w.store.read(|tx| tx.run(a)).unwrap().unwrap();
        assert_eq!((old.state, old.retried_by), (RunState::Dead, Some(new)));
        let dlq = w
            .store
            .read(|tx| {
                tx.list_runs(&crate::store::RunFilter {
                    dlq: true,
                    ..Default::default()
                })
            })
            .unwrap();
        assert!(dlq.is_empty(), "a retried run leaves the DLQ");
        let err = w
            .store
            .write(|tx| lifecycle::retry_dead(tx, config, a, None, now))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already retried"), "{err}");
        let err = w
            .store
            .write(|tx| lifecycle::retry_dead(tx, config, new, None, now))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not dead"), "{err}");
    }

    fn after_a_failed_run_is_born_dead_and_unknown_runs_are_refused(engine) {
        let mut w = world(engine, &[("a", PLAIN)]);
        let a = w.add_job("a");
        let c = w.claim("daemon", 1);
        w.finish(a, c[0].2, fail());
        let mut r = Request::new("a", Trigger::Queue);
        r.after = vec![a];
        let b = w.add(r.clone());
        assert_eq!(w.state(b), RunState::Dead);
        assert_eq!(w.error(b).unwrap(), format!("dependency a run {a} failed"));
        r.after = vec![12345];
        let (config, now) = (&w.config, w.now);
        let err = w
            .store
            .write(|tx| enqueue(tx, config, &r, now))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "run 12345 does not exist");
        let err = w
            .store
            .write(|tx| enqueue(tx, config, &Request::new("zzz", Trigger::Queue), now))
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown job `zzz`");
    }

    fn purge_keeps_what_unfinished_runs_still_need(engine) {
        let mut w = world(engine, &[("a", PLAIN), ("b", "run: x\ndepends_on: [a]\n")]);
        let old = w.add_job("a");
        let c = w.claim("daemon", 5);
        w.finish(old, c[0].2, Outcome::Succeeded);
        let b = w.add_job("b");
        let a2 = b - 1;
        let c = w.claim("daemon", 5);
        w.finish(a2, c[0].2, Outcome::Succeeded);
        w.advance(3600);
        let now = w.now;
        let purged = w.store.write(|tx| tx.purge(Some(now), false)).unwrap();
        assert_eq!(
            purged.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![old],
            "a2 is kept: b is still waiting on it"
        );
        assert!(w.store.read(|tx| tx.run(a2)).unwrap().is_some());
    }
}

impl World {
    /// Running runs so far (so `claim` with `limit = running + 1` claims exactly one).
    fn claim_count(&mut self) -> usize {
        self.store.read(|tx| tx.running()).unwrap().len()
    }
}

/// Across jobs, the global order holds (priority first); a job at its limit with a long backlog
/// does not keep another job's runs from starting.

#[test]
fn reopening_is_idempotent_and_newer_schemas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.db");
    drop(Store::open(&p, Durability::Full).unwrap());
    drop(Store::open(&p, Durability::Full).unwrap());
    let conn = rusqlite::Connection::open(&p).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let err = Store::open(&p, Durability::Full).err().unwrap().to_string();
    assert!(err.contains("newer than this worker"), "{err}");
    let _ = Path::new("");
}

#[test]
fn a_turn_with_nothing_to_write_neither_waits_for_nor_blocks_another_writer() {
    let mut w = world(Engine::Sqlite, &[("a", "command: [/bin/true]\n")]);
    let later = w.now + chrono::Duration::days(1);
    let mut req = Request::new("a", Trigger::Queue);
    req.due_at = Some(later);
    w.add(req);
    let path = w._dir.path().join("worker.db");
    let mut other = Store::open(&path, Durability::Normal).unwrap();
    let (config, now) = (&w.config, w.now);
    // While the other connection holds the write lock, a look that finds nothing to write
    // returns at once (under `BEGIN IMMEDIATE` it would wait out the busy timeout).
    let looked = w.store.write(|_held| {
        other.write_if_needed(|tx| {
            lifecycle::promote_due(tx, config, now)?;
            lifecycle::claim(tx, config, "daemon", now, 4)
        })
    });
    let (claimed, _) = looked.unwrap();
    assert!(claimed.is_empty());
}

#[test]
fn a_turn_that_finds_work_after_another_commit_runs_again_under_the_write_lock() {
    let mut w = world(Engine::Sqlite, &[("a", "command: [/bin/true]\n")]);
    let path = w._dir.path().join("worker.db");
    let mut other = Store::open(&path, Durability::Normal).unwrap();
    let config = w.config.clone();
    let now = w.now;
    let mut passes = 0;
    let claimed = other
        .write_if_needed(|tx| {
            passes += 1;
            // The snapshot begins here; then a run is enqueued by another connection.
            let before = tx.queued_jobs()?;
            if passes == 1 {
                assert!(before.is_empty());
                w.store
                    .write(|t| enqueue(t, &config, &Request::new("a", Trigger::Queue), now))
                    .unwrap();
            }
            // This snapshot does not see it; writing anything on a stale snapshot is refused.
            tx.set_state(9999, RunState::Queued)?;
            lifecycle::claim(tx, &config, "daemon", now, 4)
        })
        .unwrap()
        .0;
    assert_eq!(
        passes, 2,
        "the first pass ran on a stale snapshot and was run again"
    );
    assert_eq!(claimed.len(), 1, "the second pass saw the new run");
}
