//! The store's operations on runs, on each engine (see [`conformance!`]): what the queue's tests
//! do not already pin down — listings and their paging, purges, statistics, counts, keyset
//! order of the queue, and what a stored value reads back as.

use std::collections::BTreeMap;

use crate::model::{Priority, RunId, RunState, Time, Trigger};
use crate::store::testing::{Engine, Fresh, conformance};
use crate::store::{NewRun, RunFilter, StoreError, Tx};

type Db = Fresh;

fn db(engine: Engine) -> Db {
    Fresh::new(engine)
}

fn t0() -> Time {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

static NO_ENV: BTreeMap<String, String> = BTreeMap::new();

/// A queued run of `job`, created and due at `at`.
fn queued(job: &str, at: Time) -> NewRun<'_> {
    NewRun {
        job,
        state: RunState::Queued,
        priority: Priority::Normal,
        trigger: Trigger::Queue,
        key: None,
        max_attempts: 1,
        created_at: at,
        due_at: at,
        env: &NO_ENV,
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

fn insert(tx: &Tx<'_>, r: NewRun<'_>) -> RunId {
    tx.insert_run(&r).unwrap()
}

/// A run of `job` started at `start` whose one attempt took `took` ms and ended the run in
/// `state` (succeeded, dead or cancelled).
fn finished(tx: &Tx<'_>, job: &str, start: Time, took: i64, state: RunState) -> RunId {
    let id = insert(tx, queued(job, start));
    let (_, seq) = tx.start_attempt(id, "daemon", start, false).unwrap();
    let end = start + ms(took);
    let outcome = if state == RunState::Succeeded {
        "succeeded"
    } else {
        "failed"
    };
    tx.end_attempt(id, seq, end, outcome, Some(0), None, None, None)
        .unwrap();
    tx.finish_run(id, state, end, None, Some(0), None).unwrap();
    id
}

fn write<T>(db: &mut Db, f: impl FnOnce(&Tx<'_>) -> T) -> T {
    db.store.write(|tx| Ok::<_, StoreError>(f(tx))).unwrap()
}

fn read<T>(db: &mut Db, f: impl FnOnce(&Tx<'_>) -> T) -> T {
    db.store.read(|tx| Ok::<_, StoreError>(f(tx))).unwrap()
}

fn filter() -> RunFilter {
    RunFilter::default()
}

conformance! {
    /// Percentiles are nearest-rank over each job's finished runs' last attempts.
    fn job_stats_percentiles(engine) {
        let mut db = db(engine);
        write(&mut db, |tx| {
            for taken in 1..=20i64 {
                finished(tx, "a", t0(), taken, RunState::Succeeded);
            }
        });
        let stats = read(&mut db, |tx| tx.job_stats().unwrap());
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (stats[0].succeeded, stats[0].p50_ms, stats[0].p95_ms),
            (20, Some(10), Some(19))
        );
    }

    /// Only a run's last attempt counts, dead runs' too; cancelled runs are counted but have no
    /// duration; jobs come in name order.
    fn job_stats_count_last_attempts_of_succeeded_and_dead_runs(engine) {
        let mut db = db(engine);
        write(&mut db, |tx| {
            // Two attempts: 100 ms (failed), then 7 ms (dead).
            let id = insert(tx, queued("b", t0()));
            let (_, seq) = tx.start_attempt(id, "daemon", t0(), false).unwrap();
            tx.end_attempt(id, seq, t0() + ms(100), "failed", Some(1), None, None, None)
                .unwrap();
            tx.set_retrying(id, t0() + ms(200), "exit code 1", Some(1), None)
                .unwrap();
            tx.set_state(id, RunState::Queued).unwrap();
            let (_, seq) = tx.start_attempt(id, "daemon", t0() + ms(1000), false).unwrap();
            tx.end_attempt(id, seq, t0() + ms(1007), "failed", Some(1), None, None, None)
                .unwrap();
            tx.finish_run(id, RunState::Dead, t0() + ms(1007), Some("exit code 1"), Some(1), None)
                .unwrap();
            // Cancelled before it started: no attempt.
            let c = insert(tx, queued("c", t0()));
            tx.finish_run(c, RunState::Cancelled, t0(), None, None, None).unwrap();
            for taken in [30, 10, 20] {
                finished(tx, "a", t0(), taken, RunState::Succeeded);
            }
            finished(tx, "a", t0(), 5000, RunState::Cancelled);
            // Unfinished runs are not counted.
            insert(tx, queued("a", t0()));
        });
        let stats = read(&mut db, |tx| tx.job_stats().unwrap());
        let got: Vec<_> = stats
            .iter()
            .map(|s| (s.job.as_str(), s.succeeded, s.dead, s.cancelled, s.p50_ms, s.p95_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 3, 0, 1, Some(20), Some(30)),
                ("b", 0, 1, 0, Some(7), Some(7)),
                ("c", 0, 0, 1, None, None),
            ]
        );
    }

    fn listings_filter_order_and_page(engine) {
        let mut db = db(engine);
        let (a1, a2, a3, b1, b2, a4, a5) = write(&mut db, |tx| {
            let a1 = finished(tx, "a", t0(), 3000, RunState::Succeeded);
            let a2 = finished(tx, "a", t0(), 1000, RunState::Dead);
            // Finishes in the same millisecond as a1.
            let a3 = finished(tx, "a", t0(), 3000, RunState::Dead);
            let b1 = insert(tx, queued("b", t0()));
            let b2 = insert(tx, queued("b", t0()));
            tx.start_attempt(b2, "daemon", t0(), false).unwrap();
            let a4 = insert(tx, NewRun { state: RunState::Waiting, ..queued("a", t0()) });
            tx.insert_dep(a4, b1).unwrap();
            tx.insert_dep(a4, a1).unwrap();
            tx.insert_dep(a4, b1).unwrap(); // again: ignored
            let a5 = insert(
                tx,
                NewRun { state: RunState::Delayed, due_at: t0() + ms(60_000), ..queued("a", t0()) },
            );
            (a1, a2, a3, b1, b2, a4, a5)
        });
        let list = |db: &mut Db, f: RunFilter| -> Vec<RunId> {
            let runs = read(db, |tx| tx.list_runs(&f).unwrap());
            let n = read(db, |tx| tx.count_runs(&f).unwrap());
            if f.limit.is_none() {
                assert_eq!(n, runs.len() as u64, "count of {f:?}");
            }
            runs.iter().map(|r| r.id).collect()
        };
        assert_eq!(list(&mut db, filter()), vec![a1, a2, a3, b1, b2, a4, a5]);
        let all = read(&mut db, |tx| tx.list_runs(&filter()).unwrap());
        assert_eq!(all[5].depends_on, vec![a1, b1], "dependencies in id order");
        assert!(all[0].depends_on.is_empty());
        assert_eq!(
            list(&mut db, RunFilter { job: Some("a".into()), ..filter() }),
            vec![a1, a2, a3, a4, a5]
        );
        assert_eq!(
            list(&mut db, RunFilter { states: vec![RunState::Running, RunState::Queued], ..filter() }),
            vec![b1, b2]
        );
        assert_eq!(
            list(&mut db, RunFilter { states: vec![RunState::Waiting, RunState::Dead], ..filter() }),
            vec![a2, a3, a4],
            "finished and unfinished states together"
        );
        assert_eq!(
            list(&mut db, RunFilter {
                job: Some("b".into()),
                states: vec![RunState::Queued],
                ..filter()
            }),
            vec![b1]
        );
        assert_eq!(
            list(&mut db, RunFilter { finished: true, ..filter() }),
            vec![a3, a1, a2],
            "newest finished first; the same instant, newest id first"
        );
        assert_eq!(list(&mut db, RunFilter { dlq: true, ..filter() }), vec![a3, a2]);
        write(&mut db, |tx| tx.set_retried_by(a2, a5).unwrap());
        assert_eq!(list(&mut db, RunFilter { dlq: true, ..filter() }), vec![a3]);
        assert_eq!(
            list(&mut db, RunFilter { dlq: true, job: Some("b".into()), ..filter() }),
            Vec::<RunId>::new()
        );
        // Limits do not change counts.
        let limited = RunFilter { limit: Some(2), ..filter() };
        assert_eq!(list(&mut db, limited.clone()), vec![a1, a2]);
        assert_eq!(read(&mut db, |tx| tx.count_runs(&limited).unwrap()), 7);
        // Paging newest first.
        let page = |db: &mut Db, before: Option<RunId>| {
            list(db, RunFilter { newest_first: true, limit: Some(3), before, ..filter() })
        };
        assert_eq!(page(&mut db, None), vec![a5, a4, b2]);
        assert_eq!(page(&mut db, Some(b2)), vec![b1, a3, a2]);
        assert_eq!(page(&mut db, Some(a2)), vec![a1]);
        assert_eq!(
            read(&mut db, |tx| tx.count_runs(&RunFilter { before: Some(b2), ..filter() }).unwrap()),
            4
        );
        assert_eq!(
            list(&mut db, RunFilter { finished: true, newest_first: true, ..filter() }),
            vec![a3, a2, a1],
            "newest first wins over the finished order"
        );
    }

    fn unfinished_ids_page_newest_first(engine) {
        let mut db = db(engine);
        let (a, b) = write(&mut db, |tx| {
            let mut a = Vec::new();
            let mut b = Vec::new();
            for i in 0..4 {
                a.push(insert(tx, queued("a", t0())));
                b.push(insert(
                    tx,
                    NewRun { state: RunState::Delayed, ..queued("b", t0() + ms(i)) },
                ));
            }
            finished(tx, "a", t0(), 1, RunState::Succeeded);
            (a, b)
        });
        let ids = |db: &mut Db, before, job: Option<&str>, states: &[RunState], limit| {
            read(db, |tx| tx.unfinished_ids(before, job, states, limit).unwrap())
        };
        assert_eq!(ids(&mut db, RunId::MAX, None, &[], 3), vec![b[3], a[3], b[2]]);
        assert_eq!(ids(&mut db, b[2], None, &[], 3), vec![a[2], b[1], a[1]]);
        assert_eq!(ids(&mut db, a[1], None, &[], 3), vec![b[0], a[0]]);
        assert_eq!(ids(&mut db, RunId::MAX, Some("a"), &[], 10), vec![a[3], a[2], a[1], a[0]]);
        assert_eq!(
            ids(&mut db, b[3], None, &[RunState::Delayed], 2),
            vec![b[2], b[1]]
        );
        assert_eq!(
            ids(&mut db, RunId::MAX, Some("a"), &[RunState::Delayed], 2),
            Vec::<RunId>::new()
        );
    }

    fn dead_letter_ids_oldest_death_first(engine) {
        let mut db = db(engine);
        let (x, y, z) = write(&mut db, |tx| {
            let x = finished(tx, "a", t0(), 3000, RunState::Dead);
            let y = finished(tx, "b", t0(), 1000, RunState::Dead);
            let z = finished(tx, "a", t0(), 2000, RunState::Dead);
            finished(tx, "a", t0(), 500, RunState::Succeeded);
            finished(tx, "a", t0(), 500, RunState::Cancelled);
            (x, y, z)
        });
        assert_eq!(read(&mut db, |tx| tx.dlq_ids(None).unwrap()), vec![y, z, x]);
        assert_eq!(read(&mut db, |tx| tx.dlq_ids(Some("a")).unwrap()), vec![z, x]);
        write(&mut db, |tx| tx.set_retried_by(z, y).unwrap());
        assert_eq!(read(&mut db, |tx| tx.dlq_ids(Some("a")).unwrap()), vec![x]);
        assert_eq!(read(&mut db, |tx| tx.status_counts().unwrap()).dead, 2);
    }

    /// A purge takes finished runs (older than a bound; or dead ones only) with their attempts,
    /// says what named their logs, and keeps a finished run an unfinished one still waits on.
    fn purge_by_age_and_dead_only(engine) {
        let mut db = db(engine);
        let hour = ms(3_600_000);
        let (old_ok, old_dead, new_dead, needed, waiter) = write(&mut db, |tx| {
            // Two attempt rows: an interruption that did not count, then a success.
            let old_ok = insert(tx, queued("a", t0()));
            tx.start_attempt(old_ok, "daemon", t0(), false).unwrap();
            tx.end_attempt(old_ok, 1, t0(), "interrupted", None, None, None, None).unwrap();
            tx.requeue(old_ok, true, t0()).unwrap();
            tx.start_attempt(old_ok, "daemon", t0(), false).unwrap();
            tx.end_attempt(old_ok, 2, t0() + ms(5), "succeeded", Some(0), None, None, Some(12))
                .unwrap();
            tx.finish_run(old_ok, RunState::Succeeded, t0() + ms(5), None, Some(0), None).unwrap();
            let old_dead = finished(tx, "a", t0(), 10, RunState::Dead);
            let new_dead = finished(tx, "b", t0() + hour * 2, 10, RunState::Dead);
            let needed = finished(tx, "a", t0(), 10, RunState::Succeeded);
            let waiter = insert(tx, NewRun { state: RunState::Waiting, ..queued("b", t0()) });
            tx.insert_dep(waiter, needed).unwrap();
            (old_ok, old_dead, new_dead, needed, waiter)
        });
        let purged = write(&mut db, |tx| tx.purge(Some(t0() + hour), true).unwrap());
        assert_eq!(
            purged.iter().map(|p| (p.id, p.seqs.clone(), p.steps.clone())).collect::<Vec<_>>(),
            vec![(old_dead, vec![1], vec![])]
        );
        assert!(read(&mut db, |tx| tx.run(old_dead).unwrap()).is_none());
        assert!(read(&mut db, |tx| tx.attempts(old_dead).unwrap()).is_empty());
        let purged = write(&mut db, |tx| tx.purge(Some(t0() + hour), false).unwrap());
        assert_eq!(
            purged.iter().map(|p| (p.id, p.seqs.clone())).collect::<Vec<_>>(),
            vec![(old_ok, vec![1, 2])],
            "the newer dead run is too recent; the run waited on is kept"
        );
        let purged = write(&mut db, |tx| tx.purge(None, false).unwrap());
        assert_eq!(purged.iter().map(|p| p.id).collect::<Vec<_>>(), vec![new_dead]);
        assert!(read(&mut db, |tx| tx.attempt_seqs(new_dead).unwrap()).is_empty());
        // Once the waiter has finished, what it waited on can go.
        write(&mut db, |tx| {
            tx.finish_run(waiter, RunState::Cancelled, t0(), None, None, None).unwrap()
        });
        let purged = write(&mut db, |tx| tx.purge(None, false).unwrap());
        assert_eq!(
            purged.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![waiter, needed],
            "oldest finish first"
        );
        assert!(read(&mut db, |tx| tx.list_runs(&filter()).unwrap()).is_empty());
    }

    fn counts_by_state_and_job_in_byte_order(engine) {
        let mut db = db(engine);
        let jobs = ["b", "a_b", "a0", "a.b", "a-b", "ab"];
        let (tie_first, _tie_second) = write(&mut db, |tx| {
            for job in jobs {
                insert(tx, queued(job, t0()));
                finished(tx, job, t0(), 10, RunState::Succeeded);
            }
            let r = insert(tx, queued("b", t0()));
            tx.start_attempt(r, "daemon", t0(), false).unwrap();
            insert(tx, NewRun { state: RunState::Delayed, ..queued("a0", t0()) });
            insert(tx, NewRun { state: RunState::Waiting, ..queued("a0", t0()) });
            finished(tx, "a0", t0(), 20, RunState::Dead);
            // Two runs of `ab` finish in the same millisecond, after its other runs.
            let first = finished(tx, "ab", t0() + ms(50), 50, RunState::Dead);
            let second = finished(tx, "ab", t0() + ms(60), 40, RunState::Succeeded);
            (first, second)
        });
        let status = read(&mut db, |tx| tx.status_counts().unwrap());
        assert_eq!(
            (status.running, status.queued, status.waiting, status.dead),
            (1, 6, 2, 2)
        );
        let states = read(&mut db, |tx| tx.state_counts().unwrap());
        assert_eq!(
            states.into_iter().collect::<Vec<_>>(),
            vec![
                ("dead".to_string(), 2),
                ("delayed".to_string(), 1),
                ("queued".to_string(), 6),
                ("running".to_string(), 1),
                ("succeeded".to_string(), 7),
                ("waiting".to_string(), 1),
            ]
        );
        let per_job = read(&mut db, |tx| tx.job_state_counts().unwrap());
        let per_job: Vec<(&str, &str, u64)> =
            per_job.iter().map(|(j, s, n)| (j.as_str(), s.as_str(), *n)).collect();
        assert_eq!(
            per_job,
            vec![
                ("a-b", "queued", 1),
                ("a-b", "succeeded", 1),
                ("a.b", "queued", 1),
                ("a.b", "succeeded", 1),
                ("a0", "dead", 1),
                ("a0", "delayed", 1),
                ("a0", "queued", 1),
                ("a0", "succeeded", 1),
                ("a0", "waiting", 1),
                ("a_b", "queued", 1),
                ("a_b", "succeeded", 1),
                ("ab", "dead", 1),
                ("ab", "queued", 1),
                ("ab", "succeeded", 2),
                ("b", "queued", 1),
                ("b", "running", 1),
                ("b", "succeeded", 1),
            ]
        );
        assert_eq!(
            read(&mut db, |tx| tx.queued_jobs().unwrap()),
            vec!["a-b", "a.b", "a0", "a_b", "ab", "b"]
        );
        let last = read(&mut db, |tx| tx.last_finished_per_job().unwrap());
        assert_eq!(last.len(), 6);
        assert_eq!(last["b"], (RunState::Succeeded, t0() + ms(10)));
        assert_eq!(last["a0"], (RunState::Dead, t0() + ms(20)));
        assert_eq!(
            last["ab"],
            (RunState::Dead, t0() + ms(100)),
            "of two finished in the same millisecond, the older run (run {tie_first})"
        );
    }

    /// The queue's order is priority, then due time (to the millisecond), then id; a page
    /// continues after the last candidate of the previous one, whatever its instant's sub-
    /// millisecond part was.
    fn queued_runs_page_in_start_order_to_the_millisecond(engine) {
        let mut db = db(engine);
        let us = chrono::Duration::microseconds;
        let expected = write(&mut db, |tx| {
            let at = |due: Time, p: Priority| NewRun { priority: p, due_at: due, ..queued("a", t0()) };
            let late = insert(tx, at(t0() + us(300), Priority::Normal));
            let early = insert(tx, at(t0() + us(700), Priority::Normal));
            let next = insert(tx, at(t0() + ms(1), Priority::Normal));
            let high = insert(tx, at(t0() + ms(5), Priority::High));
            let low = insert(tx, at(t0(), Priority::Low));
            let nano = insert(tx, at(t0() + chrono::Duration::nanoseconds(999_999), Priority::Normal));
            insert(tx, queued("b", t0()));
            let mine = insert(tx, NewRun { owner: Some("job-1"), ..at(t0() + ms(2), Priority::Normal) });
            // The ones due in the same millisecond (t0) in id order.
            vec![high, late, early, nano, next, mine, low]
        });
        let mut seen = Vec::new();
        let mut after = None;
        // Bounded: a cursor that does not move on would return the same page for ever.
        for _ in 0..expected.len() {
            let page = read(&mut db, |tx| tx.queued_of_job("a", after.as_ref(), 2).unwrap());
            seen.extend(page.iter().map(|c| c.id));
            if page.len() < 2 {
                break;
            }
            after = page.last().cloned();
        }
        assert_eq!(seen, expected);
        let first = read(&mut db, |tx| tx.queued_of_job("a", None, 10).unwrap());
        assert_eq!(
            (first[1].due_at, first[1].priority, first[1].owner.as_deref(), first[1].resume),
            (t0().timestamp_millis(), Priority::Normal.rank(), None, false)
        );
        assert_eq!(first[5].owner.as_deref(), Some("job-1"));
        let run = read(&mut db, |tx| tx.run(expected[2]).unwrap().unwrap());
        assert_eq!(run.due_at, t0(), "stored to the millisecond");
    }

    /// A node's claim reads, for each job with queued runs, its first runs that no other owner
    /// reserved, as many as the job has room for (its concurrency less its running runs, across
    /// owners) and the node has free; every job with queued runs is named, also one without
    /// room and one not defined.
    fn claim_candidates_are_each_jobs_first_free_runs_within_its_room(engine) {
        let mut db = db(engine);
        let (a_expected, d_expected) = write(&mut db, |tx| {
            let at = |job, n: i64| queued(job, t0() + ms(n));
            let running = |job| NewRun { state: RunState::Running, owner: Some("node:x"), ..queued(job, t0()) };
            insert(tx, running("a"));
            insert(tx, running("b"));
            // More runs reserved by another owner than a page holds, ahead of a's free ones.
            for n in 0..5 {
                insert(tx, NewRun { owner: Some("job-9"), ..at("a", n) });
            }
            let mine = insert(tx, NewRun { owner: Some("node:me"), ..at("a", 10) });
            let free = insert(tx, at("a", 11));
            insert(tx, at("a", 12));
            insert(tx, at("b", 0));
            insert(tx, at("c", 0));
            let d: Vec<RunId> = (0..3).map(|n| insert(tx, at("d", n))).collect();
            (vec![mine, free], d)
        });
        let limits = [("a", 3), ("b", 1), ("d", 10)];
        let ids = |c: &[crate::store::QueuedCandidate], job: &str| -> Vec<RunId> {
            let mut v: Vec<RunId> = c.iter().filter(|c| c.job == job).map(|c| c.id).collect();
            v.sort_unstable();
            v
        };
        let (got, queued_jobs) =
            read(&mut db, |tx| tx.claim_candidates("node:me", &limits, 2).unwrap());
        assert_eq!(queued_jobs, ["a", "b", "c", "d"]);
        assert_eq!(ids(&got, "a"), a_expected, "a: room 2 (3 less 1 running), past job-9's");
        assert_eq!(ids(&got, "d"), d_expected[..2], "d: room 10, 2 free on the node");
        assert_eq!(got.len(), 4, "b has no room, c is not defined: {got:?}");
        let mine = got.iter().find(|c| c.id == a_expected[0]).unwrap();
        assert_eq!(
            (mine.owner.as_deref(), mine.priority, mine.due_at, mine.resume),
            (Some("node:me"), Priority::Normal.rank(), (t0() + ms(10)).timestamp_millis(), false)
        );
        // More free than room: a's room (3 less 1 running) binds, d's 10 does not.
        let (got, _) = read(&mut db, |tx| tx.claim_candidates("node:me", &limits, 5).unwrap());
        assert_eq!(ids(&got, "a"), a_expected, "a: room 2, whatever the node has free");
        assert_eq!(ids(&got, "d"), d_expected, "d: all 3 queued");
        assert_eq!(got.len(), 5, "{got:?}");
        let (none, queued_jobs) =
            read(&mut db, |tx| tx.claim_candidates("node:me", &limits, 0).unwrap());
        assert!(none.is_empty(), "no slot free: {none:?}");
        assert_eq!(queued_jobs, ["a", "b", "c", "d"]);
    }

    /// Every column of a run reads back as written (instants to the millisecond).
    fn a_run_reads_back_as_written(engine) {
        let mut db = db(engine);
        let mut env = BTreeMap::new();
        env.insert("K".to_string(), "v \"quoted\" ü".to_string());
        env.insert("EMPTY".to_string(), String::new());
        let created = t0() + chrono::Duration::nanoseconds(1_234_567);
        let (id, plain, dep) = write(&mut db, |tx| {
            let dep = insert(tx, queued("d", t0()));
            let id = insert(tx, NewRun {
                job: "a",
                state: RunState::Waiting,
                priority: Priority::Critical,
                trigger: Trigger::Schedule,
                key: Some("k-1"),
                max_attempts: 4,
                created_at: created,
                due_at: created + ms(10),
                env: &env,
                schedule: Some("nightly"),
                scheduled_at: Some(t0() - ms(1)),
                owner: Some("job-9"),
                retry_of: Some(dep),
                error: None,
                finished_at: None,
                definition: None,
                input: Some(r#"{"n": 1.5, "list": [1, "two", null], "nested": {"b": true}}"#),
                origin: Some(dep),
            });
            tx.insert_dep(id, dep).unwrap();
            (id, insert(tx, queued("a", t0())), dep)
        });
        let run = read(&mut db, |tx| tx.run(id).unwrap().unwrap());
        assert_eq!(
            (run.id, run.job.as_str(), run.state, run.priority, run.trigger, run.key.as_deref()),
            (id, "a", RunState::Waiting, Priority::Critical, Trigger::Schedule, Some("k-1"))
        );
        assert_eq!((run.attempt, run.max_attempts), (0, 4));
        assert_eq!(run.created_at, t0() + ms(1));
        assert_eq!(run.due_at, t0() + ms(11));
        assert_eq!((run.started_at, run.finished_at), (None, None));
        assert_eq!((run.exit_code, run.signal, run.error.as_deref()), (None, None, None));
        assert_eq!(run.env, env);
        assert_eq!((run.schedule.as_deref(), run.scheduled_at), (Some("nightly"), Some(t0() - ms(1))));
        assert_eq!((run.owner.as_deref(), run.cancel_requested), (Some("job-9"), false));
        assert_eq!((run.retried_by, run.retry_of, run.origin), (None, Some(dep), Some(dep)));
        assert_eq!(run.depends_on, vec![dep]);
        assert_eq!(
            run.input,
            Some(serde_json::json!({"n": 1.5, "list": [1, "two", null], "nested": {"b": true}}))
        );
        assert_eq!((run.has_steps, run.definition, run.resume), (false, None, false));
        let plain = read(&mut db, |tx| tx.run(plain).unwrap().unwrap());
        assert!(plain.env.is_empty() && plain.input.is_none());
        let brief = read(&mut db, |tx| tx.brief(id).unwrap().unwrap());
        assert_eq!(
            (brief.job.as_str(), brief.state, brief.attempt, brief.max_attempts, brief.owner.as_deref()),
            ("a", RunState::Waiting, 0, 4, Some("job-9"))
        );
        assert!(read(&mut db, |tx| tx.brief(9999).unwrap()).is_none());
        assert!(read(&mut db, |tx| tx.run(9999).unwrap()).is_none());
        assert_eq!(read(&mut db, |tx| tx.run_by_key("a", "k-1").unwrap()), Some(id));
        assert_eq!(read(&mut db, |tx| tx.run_by_key("d", "k-1").unwrap()), None);
        assert_eq!(read(&mut db, |tx| tx.latest_active("a").unwrap()), Some(plain.id));
        assert_eq!(read(&mut db, |tx| tx.latest_active("zzz").unwrap()), None);
        assert_eq!(read(&mut db, |tx| tx.dep_states(id).unwrap()), vec![(dep, "d".to_string(), RunState::Queued)]);
        assert_eq!(read(&mut db, |tx| tx.dependents(dep).unwrap()), vec![(id, RunState::Waiting)]);
        // The brief says whether anything waits on a run (so that its end looks only then).
        assert!(read(&mut db, |tx| tx.brief(dep).unwrap().unwrap()).has_dependents);
        assert!(!brief.has_dependents);
    }

    /// Attempts, ownership, cancellation requests, retries and due times.
    /// An attempt's output kept in the store reads back byte for byte (any bytes, NUL and
    /// invalid UTF-8 included); an attempt without any reads as none.
    fn attempt_output_is_kept_byte_for_byte(engine) {
        let mut db = db(engine);
        let (a, seq) = write(&mut db, |tx| {
            let a = insert(tx, queued("a", t0()));
            let (_, seq) = tx.start_attempt(a, "daemon", t0(), false).unwrap();
            (a, seq)
        });
        assert_eq!(read(&mut db, |tx| tx.attempt_output(a, seq).unwrap()), None);
        let bytes: Vec<u8> = (0..=255u8).chain(b"hello\n\0\xff".iter().copied()).collect();
        write(&mut db, |tx| tx.set_attempt_output(a, seq, &bytes).unwrap());
        assert_eq!(read(&mut db, |tx| tx.attempt_output(a, seq).unwrap()), Some(bytes));
        assert_eq!(read(&mut db, |tx| tx.attempt_output(a, seq + 1).unwrap()), None);
    }

    fn running_counts_follow_every_way_in_and_out_of_running(engine) {
        // Each engine answers from its own bookkeeping (PostgreSQL: a table its triggers keep);
        // after every write it must equal a count of the running runs themselves.
        let mut db = db(engine);
        let check = |db: &mut Db, what: &str| {
            let counted = read(db, |tx| tx.running_counts().unwrap());
            let running = read(db, |tx| {
                tx.list_runs(&RunFilter { states: vec![RunState::Running], ..RunFilter::default() })
                    .unwrap()
            });
            let mut expected = std::collections::HashMap::new();
            for r in running {
                *expected.entry(r.job).or_insert(0u32) += 1;
            }
            assert_eq!(counted, expected, "after {what}");
        };
        let ids = write(&mut db, |tx| {
            (0..8).map(|i| insert(tx, queued(if i % 2 == 0 { "a" } else { "b" }, t0()))).collect::<Vec<_>>()
        });
        check(&mut db, "enqueue");
        let starts: Vec<_> = ids[..6].iter().map(|&id| (id, false)).collect();
        write(&mut db, |tx| tx.start_attempts(&starts, "daemon", t0()).unwrap());
        check(&mut db, "six starts");
        write(&mut db, |tx| {
            tx.finish_run(ids[0], RunState::Succeeded, t0() + ms(1), None, Some(0), None).unwrap();
            tx.set_retrying(ids[1], t0() + ms(50), "exit code 1", Some(1), None).unwrap();
            tx.requeue(ids[2], true, t0() + ms(1)).unwrap();
            tx.suspend_run(ids[3], Some(t0() + ms(60)), None).unwrap();
        });
        check(&mut db, "a finish, a retry, a requeue and a suspension");
        write(&mut db, |tx| {
            tx.start_attempt(ids[2], "daemon", t0() + ms(2), false).unwrap();
            tx.set_state(ids[4], RunState::Dead).unwrap();
            tx.finish_run(ids[2], RunState::Cancelled, t0() + ms(3), None, None, Some(15)).unwrap();
        });
        check(&mut db, "a start and an end in one transaction");
        // Written as running (as an import does), then purged once finished.
        let direct = write(&mut db, |tx| {
            insert(tx, NewRun { state: RunState::Running, owner: Some("daemon"), ..queued("c", t0()) })
        });
        check(&mut db, "a run inserted as running");
        write(&mut db, |tx| tx.finish_run(direct, RunState::Succeeded, t0() + ms(4), None, Some(0), None).unwrap());
        write(&mut db, |tx| tx.purge(None, false).unwrap());
        check(&mut db, "a purge");
        write(&mut db, |tx| {
            for &id in &ids[4..6] {
                if tx.run(id).unwrap().is_some_and(|r| r.state == RunState::Running) {
                    tx.finish_run(id, RunState::Succeeded, t0() + ms(5), None, Some(0), None).unwrap();
                }
            }
        });
        check(&mut db, "the last ends");
        assert!(read(&mut db, |tx| tx.running_counts().unwrap()).is_empty());
    }

    fn attempts_and_owners(engine) {
        let mut db = db(engine);
        let (a, b, c, d) = write(&mut db, |tx| {
            let a = insert(tx, NewRun { max_attempts: 3, ..queued("a", t0()) });
            let b = insert(tx, NewRun { owner: Some("job-2"), ..queued("a", t0()) });
            let c = insert(tx, NewRun { owner: Some("job-1"), state: RunState::Delayed, ..queued("b", t0()) });
            let d = insert(tx, queued("b", t0()));
            (a, b, c, d)
        });
        let owners = |db: &mut Db| {
            let mut o = read(db, |tx| tx.owners().unwrap());
            o.sort();
            o
        };
        assert_eq!(owners(&mut db), vec!["job-1", "job-2"]);
        let err = write(&mut db, |tx| tx.start_attempt(c, "daemon", t0(), false).err().unwrap());
        assert!(err.to_string().contains("is not queued"), "{err}");
        let (run, seq) = write(&mut db, |tx| tx.start_attempt(a, "daemon", t0() + ms(1), false).unwrap());
        assert_eq!((run.state, run.attempt, run.owner.as_deref(), seq), (RunState::Running, 1, Some("daemon"), 1));
        assert_eq!(run.started_at, Some(t0() + ms(1)));
        assert_eq!(read(&mut db, |tx| tx.open_attempt(a).unwrap()), Some((1, 1)));
        write(&mut db, |tx| tx.start_attempt(d, "job-1", t0(), false).unwrap());
        // Interrupted, uncounted: the next attempt has the same number, a new row.
        write(&mut db, |tx| {
            tx.end_attempt(a, 1, t0() + ms(2), "interrupted", None, Some(15), Some("stopped"), None).unwrap();
            tx.requeue(a, true, t0() + ms(3)).unwrap();
        });
        assert_eq!(read(&mut db, |tx| tx.open_attempt(a).unwrap()), None);
        let (run, seq) = write(&mut db, |tx| tx.start_attempt(a, "daemon", t0() + ms(4), false).unwrap());
        assert_eq!((run.attempt, seq, run.started_at, run.due_at), (1, 2, Some(t0() + ms(1)), t0() + ms(3)));
        assert_eq!(read(&mut db, |tx| tx.open_attempt(a).unwrap()), Some((2, 1)));
        let running = read(&mut db, |tx| tx.running().unwrap());
        assert_eq!(
            running.iter().map(|r| (r.id, r.owner.clone().unwrap())).collect::<Vec<_>>(),
            vec![(a, "daemon".to_string()), (d, "job-1".to_string())]
        );
        let expected: std::collections::HashMap<String, u32> =
            [("a".to_string(), 1), ("b".to_string(), 1)].into_iter().collect();
        assert_eq!(read(&mut db, |tx| tx.running_counts().unwrap()), expected);
        write(&mut db, |tx| tx.request_cancel(a).unwrap());
        assert_eq!(read(&mut db, |tx| tx.cancel_requests("daemon").unwrap()), vec![a]);
        assert!(read(&mut db, |tx| tx.cancel_requests("job-1").unwrap()).is_empty());
        assert_eq!(read(&mut db, |tx| tx.reserved_by("job-1").unwrap()), vec![c]);
        assert_eq!(read(&mut db, |tx| tx.reserved_by("job-2").unwrap()), vec![b]);
        write(&mut db, |tx| tx.release(b).unwrap());
        assert!(read(&mut db, |tx| tx.reserved_by("job-2").unwrap()).is_empty());
        // A failed attempt backs off: the request to cancel and the owner go.
        write(&mut db, |tx| {
            tx.end_attempt(a, 2, t0() + ms(5), "failed", Some(2), None, Some("exit code 2"), Some(u64::from(u32::MAX) + 1)).unwrap();
            tx.set_retrying(a, t0() + ms(1000), "exit code 2", Some(2), None).unwrap();
        });
        let run = read(&mut db, |tx| tx.run(a).unwrap().unwrap());
        assert_eq!(
            (run.state, run.owner, run.cancel_requested, run.error.as_deref(), run.exit_code, run.due_at),
            (RunState::Retrying, None, false, Some("exit code 2"), Some(2), t0() + ms(1000))
        );
        let attempts = read(&mut db, |tx| tx.attempts(a).unwrap());
        assert_eq!(attempts.len(), 2);
        assert_eq!(
            (attempts[0].seq, attempts[0].number, attempts[0].outcome.as_deref(), attempts[0].signal, attempts[0].error.as_deref()),
            (1, 1, Some("interrupted"), Some(15), Some("stopped"))
        );
        assert_eq!(
            (attempts[1].started_at, attempts[1].finished_at, attempts[1].exit_code, attempts[1].output_bytes),
            (t0() + ms(4), Some(t0() + ms(5)), Some(2), Some(u64::from(u32::MAX) + 1))
        );
        assert_eq!(read(&mut db, |tx| tx.attempt_seqs(a).unwrap()), vec![1, 2]);
        assert_eq!(read(&mut db, |tx| tx.next_due().unwrap()), Some(t0()));
        assert_eq!(read(&mut db, |tx| tx.due_runs(t0() + ms(999)).unwrap()), vec![(c, RunState::Delayed)]);
        assert_eq!(
            read(&mut db, |tx| tx.due_runs(t0() + ms(1000)).unwrap()),
            vec![(c, RunState::Delayed), (a, RunState::Retrying)]
        );
        write(&mut db, |tx| tx.set_state(c, RunState::Queued).unwrap());
        assert_eq!(read(&mut db, |tx| tx.next_due().unwrap()), Some(t0() + ms(1000)));
        write(&mut db, |tx| tx.finish_run(d, RunState::Succeeded, t0() + ms(7), None, Some(0), None).unwrap());
        let run = read(&mut db, |tx| tx.run(d).unwrap().unwrap());
        assert_eq!((run.owner, run.finished_at, run.exit_code), (None, Some(t0() + ms(7)), Some(0)));
        assert_eq!(owners(&mut db), vec!["job-1"]);
    }

    /// Several runs started at once, fresh and resumed mixed: each as `start_attempt` starts
    /// it, in the order asked; their briefs read at once, as `brief` reads each.
    fn runs_started_and_briefed_together(engine) {
        let mut db = db(engine);
        let (a, b, c, late) = write(&mut db, |tx| {
            let a = insert(tx, queued("a", t0()));
            let b = insert(tx, NewRun { max_attempts: 3, ..queued("b", t0()) });
            let c = insert(tx, queued("a", t0()));
            let late = insert(tx, queued("a", t0()));
            (a, b, c, late)
        });
        // `b` goes first through an attempt, is suspended, then queued to resume it.
        let (_, b_seq) = write(&mut db, |tx| tx.start_attempt(b, "daemon", t0(), false).unwrap());
        write(&mut db, |tx| {
            tx.suspend_run(b, Some(t0() + ms(5)), None).unwrap();
            tx.queue_resume(b, t0() + ms(5)).unwrap();
        });
        let started = write(&mut db, |tx| {
            tx.start_attempts(&[(c, false), (b, true), (a, false)], "n1", t0() + ms(9)).unwrap()
        });
        let got: Vec<_> = started
            .iter()
            .map(|(r, seq)| (r.id, r.state, r.attempt, r.owner.as_deref(), *seq, r.resume))
            .collect();
        assert_eq!(
            got,
            [
                (c, RunState::Running, 1, Some("n1"), 1, false),
                (b, RunState::Running, 1, Some("n1"), b_seq, false),
                (a, RunState::Running, 1, Some("n1"), 1, false),
            ]
        );
        assert_eq!(read(&mut db, |tx| tx.open_attempt(a).unwrap()), Some((1, 1)));
        assert!(write(&mut db, |tx| tx.start_attempts(&[], "n1", t0()).unwrap()).is_empty());
        // One that is not queued fails the lot.
        let err = write(&mut db, |tx| tx.start_attempts(&[(late, false), (a, false)], "n1", t0()).err().unwrap());
        assert!(err.to_string().contains("is not queued"), "{err}");

        let briefs = read(&mut db, |tx| tx.briefs(&[a, late, 999_999, b]).unwrap());
        assert_eq!(briefs.len(), 3);
        for id in [a, late, b] {
            assert_eq!(briefs.get(&id), read(&mut db, |tx| tx.brief(id).unwrap()).as_ref());
        }
        assert!(read(&mut db, |tx| tx.briefs(&[]).unwrap()).is_empty());
        let one = read(&mut db, |tx| tx.briefs(&[late]).unwrap());
        assert_eq!((one.len(), one.get(&late)), (1, briefs.get(&late)));
        assert!(read(&mut db, |tx| tx.briefs(&[999_999]).unwrap()).is_empty());
    }

    /// A second run holding a job's key is refused, and the transaction with it: nothing of it
    /// stays, and the store goes on.
    fn a_held_key_refuses_the_transaction(engine) {
        let mut db = db(engine);
        let refused = db.store.write(|tx| {
            tx.insert_run(&NewRun { key: Some("k"), ..queued("a", t0()) })?;
            tx.insert_run(&NewRun { key: Some("k"), ..queued("a", t0()) })
        });
        assert!(refused.is_err());
        assert_eq!(read(&mut db, |tx| tx.run_by_key("a", "k").unwrap()), None);
        let id = write(&mut db, |tx| {
            tx.insert_run(&NewRun { key: Some("k"), ..queued("a", t0()) }).unwrap();
            tx.insert_run(&NewRun { key: Some("k"), ..queued("b", t0()) }).unwrap()
        });
        assert_eq!(read(&mut db, |tx| tx.run_by_key("b", "k").unwrap()), Some(id));
    }

    fn meta_values_are_replaced(engine) {
        let mut db = db(engine);
        assert_eq!(read(&mut db, |tx| tx.meta("heartbeat").unwrap()), None);
        write(&mut db, |tx| tx.set_meta("heartbeat", "1").unwrap());
        write(&mut db, |tx| tx.set_meta("heartbeat", "2").unwrap());
        assert_eq!(read(&mut db, |tx| tx.meta("heartbeat").unwrap()).as_deref(), Some("2"));
    }
}
