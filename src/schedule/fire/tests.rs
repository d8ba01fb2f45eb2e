//! Firing over a real store (each test on SQLite and PostgreSQL, see `store::testing`), with
//! explicit instants (no real clock).

use chrono::TimeZone;

use super::*;
use crate::config::Config;
use crate::model::RunState;
use crate::store::Store;
use crate::store::testing::{Engine, TestStore, conformance};

struct World {
    store: Store,
    /// Dropped after `store`: a PostgreSQL schema goes once nothing is connected to it.
    _test_store: TestStore,
    _dir: tempfile::TempDir,
    config: Config,
}

fn world(engine: Engine, scheduler: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/tick.yaml"),
        "run: 'true'\nconcurrency: 1000\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("scheduler.yaml"), scheduler).unwrap();
    let config = Config::load_with_env(dir.path(), &|_| None).unwrap();
    let test_store = TestStore::new(engine, dir.path()).expect("the engine is available");
    let store = test_store.open();
    World {
        store,
        _test_store: test_store,
        _dir: dir,
        config,
    }
}

fn t(s: &str) -> Time {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn secs(base: Time, n: i64) -> Time {
    base + chrono::Duration::seconds(n)
}

impl World {
    fn sync(&mut self, now: Time) {
        let config = &self.config;
        self.store
            .write(|tx| sync_cursors(tx, config, now))
            .unwrap();
    }
    fn pass(&mut self, now: Time, live_since: Time) -> Vec<Fired> {
        let config = &self.config;
        let sched = &config.schedules[0];
        self.store
            .write(|tx| pass(tx, config, sched, now, live_since))
            .unwrap()
    }
    fn finish_all(&mut self, now: Time) {
        // Mark every unfinished run succeeded, as if they had run.
        let runs = self
            .store
            .read(|tx| tx.list_runs(&Default::default()))
            .unwrap();
        self.store
            .write(|tx| {
                for r in runs.iter().filter(|r| !r.state.is_final()) {
                    tx.finish_run(r.id, RunState::Succeeded, now, None, Some(0), None)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
}

fn enqueued(f: &[Fired]) -> Vec<Time> {
    f.iter()
        .filter(|x| matches!(x.fate, Fate::Enqueued(_)))
        .map(|x| x.fire_at)
        .collect()
}

fn missed(f: &[Fired]) -> Vec<Time> {
    f.iter()
        .filter(|x| matches!(x.fate, Fate::Missed(_)))
        .map(|x| x.fire_at)
        .collect()
}

const EVERY_10S: &str = "schedules:\n  - { job: tick, cron: '@every 10s', overlap: allow }\n";

conformance! {
    fn regular_fires_are_enqueued_exactly_once(engine) {
        let mut w = world(engine, EVERY_10S);
        let t0 = t("2026-11-21T12:00:00Z");
        w.sync(t0);
        assert!(w.pass(secs(t0, 9), t0).is_empty());
        let f = w.pass(secs(t0, 10), t0);
        assert_eq!(enqueued(&f), vec![secs(t0, 10)]);
        assert!(
            w.pass(secs(t0, 10), t0).is_empty(),
            "same instant again: nothing"
        );
        assert!(w.pass(secs(t0, 15), t0).is_empty());
        let f = w.pass(secs(t0, 31), t0);
        assert_eq!(enqueued(&f), vec![secs(t0, 20), secs(t0, 30)]);
        let runs = w
            .store
            .read(|tx| tx.list_runs(&Default::default()))
            .unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].trigger, crate::model::Trigger::Schedule);
        assert_eq!(runs[0].schedule.as_deref(), Some("tick"));
        assert_eq!(runs[0].scheduled_at, Some(secs(t0, 10)));
    }

    fn a_recorded_fire_is_never_enqueued_again_even_with_a_stale_cursor(engine) {
        let mut w = world(engine, EVERY_10S);
        let t0 = t("2026-11-21T12:00:00Z");
        w.sync(t0);
        assert_eq!(enqueued(&w.pass(secs(t0, 10), t0)).len(), 1);
        // Pretend the cursor write was lost: the fires table still says no.
        w.store
            .write(|tx| tx.set_schedule_cursor("tick", t0, true))
            .unwrap();
        assert!(w.pass(secs(t0, 10), t0).is_empty());
        assert_eq!(
            w.store
                .read(|tx| tx.list_runs(&Default::default()))
                .unwrap()
                .len(),
            1
        );
    }

    fn a_clock_set_back_never_fires_twice(engine) {
        let mut w = world(engine, EVERY_10S);
        let t0 = t("2026-11-21T12:00:00Z");
        w.sync(t0);
        assert_eq!(enqueued(&w.pass(secs(t0, 30), t0)).len(), 3);
        // The wall clock goes back a minute: nothing fires until it passes the old "now".
        assert!(w.pass(secs(t0, -30), t0).is_empty());
        assert!(w.pass(secs(t0, 25), t0).is_empty());
        assert_eq!(enqueued(&w.pass(secs(t0, 40), t0)), vec![secs(t0, 40)]);
    }
}

fn downtime(engine: Engine, policy: &str) -> (Vec<Time>, Vec<Time>, Vec<Fired>) {
    let mut w = world(
        engine,
        &format!(
            "schedules:\n  - {{ job: tick, cron: '@every 10s', overlap: allow, catch_up: {policy} }}\n"
        ),
    );
    let t0 = t("2026-11-21T12:00:00Z");
    w.sync(t0);
    // The daemon was down from t0 and starts again at t0+60s.
    let restart = secs(t0, 60);
    w.sync(restart);
    let f = w.pass(restart, restart);
    (enqueued(&f), missed(&f), f)
}

conformance! {
    fn catch_up_none_latest_all(engine) {
        let t0 = t("2026-11-21T12:00:00Z");
        let down: Vec<Time> = (1..=5).map(|i| secs(t0, i * 10)).collect();
        let (run, miss, _) = downtime(engine, "none");
        assert_eq!(
            run,
            vec![secs(t0, 60)],
            "only the regular fire at the restart instant"
        );
        assert_eq!(miss, down);
        let (run, miss, f) = downtime(engine, "latest");
        assert_eq!(run, vec![secs(t0, 50), secs(t0, 60)]);
        assert_eq!(miss, down[..4].to_vec());
        let Fate::Missed(reason) = &f[0].fate else {
            panic!()
        };
        assert!(reason.contains("catch_up: latest"), "{reason}");
        let (run, miss, _) = downtime(engine, "all");
        assert_eq!(run.len(), 6);
        assert!(miss.is_empty());
    }

    fn catch_up_all_is_capped_and_the_rest_recorded_as_dropped(engine) {
        let mut w = world(
            engine,
            "schedules:\n  - { job: tick, cron: '@every 1s', overlap: allow, catch_up: all }\n",
        );
        let t0 = t("2026-11-21T12:00:00Z");
        w.sync(t0);
        let restart = secs(t0, 1000);
        let f = w.pass(restart, restart);
        let run = enqueued(&f);
        assert_eq!(
            run.len(),
            CATCH_UP_LIMIT + 1,
            "100 caught up plus the regular fire at the restart"
        );
        assert_eq!(run[0], secs(t0, 900), "the most recent 100 are kept");
        let dropped: Vec<_> = f
            .iter()
            .filter_map(|x| {
                if let Fate::Dropped { count, .. } = x.fate {
                    Some((x.fire_at, count))
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(dropped, vec![(secs(t0, 1), 899)]);
        let recorded = w.store.read(|tx| tx.fires(Some("tick"), 1000)).unwrap();
        assert_eq!(recorded.len(), 102);
    }

    fn overlap_skip_records_the_fire_as_missed(engine) {
        let mut w = world(engine, "schedules:\n  - { job: tick, cron: '@every 10s' }\n");
        let t0 = t("2026-11-21T12:00:00Z");
        w.sync(t0);
        let f = w.pass(secs(t0, 10), t0);
        let Fate::Enqueued(first) = f[0].fate else {
            panic!()
        };
        let f = w.pass(secs(t0, 20), t0);
        assert_eq!(
            f[0].fate,
            Fate::Missed(format!(
                "overlap: skip: run {first} of tick is still queued"
            ))
        );
        w.finish_all(secs(t0, 25));
        assert_eq!(enqueued(&w.pass(secs(t0, 30), t0)), vec![secs(t0, 30)]);
    }

    fn overlap_queue_buffers_one_pending_run(engine) {
        let mut w = world(engine, "schedules:\n  - { job: tick, cron: '@every 10s', overlap: queue }\n");
        let t0 = t("2026-11-21T12:00:00Z");
        w.sync(t0);
        let f = w.pass(secs(t0, 10), t0);
        let Fate::Enqueued(first) = f[0].fate else {
            panic!()
        };
        // It starts running.
        let config = w.config.clone();
        w.store
            .write(|tx| crate::queue::lifecycle::claim(tx, &config, "daemon", secs(t0, 11), 10))
            .unwrap();
        assert_eq!(
            enqueued(&w.pass(secs(t0, 20), t0)).len(),
            1,
            "one may wait behind the running one"
        );
        let f = w.pass(secs(t0, 30), t0);
        let Fate::Missed(reason) = &f[0].fate else {
            panic!("{f:?}")
        };
        assert!(
            reason.starts_with("overlap: queue: run") && reason.contains("pending (queued)"),
            "{reason}"
        );
        let _ = first;
    }

    fn dst_days_fire_once_in_new_york(engine) {
        let mut w = world(
            engine,
            "timezone: America/New_York\nschedules:\n  - { job: tick, name: gap, cron: '30 2 * * *', overlap: allow }\n",
        );
        let ny = chrono_tz::America::New_York;
        let start = ny.with_ymd_and_hms(2026, 3, 7, 12, 0, 0).unwrap().to_utc();
        w.sync(start);
        let f = w.pass(
            ny.with_ymd_and_hms(2026, 3, 9, 12, 0, 0).unwrap().to_utc(),
            start,
        );
        assert_eq!(
            enqueued(&f),
            vec![t("2026-03-08T07:00:00Z"), t("2026-03-09T06:30:00Z")],
            "the gap day fires at 03:00 EDT"
        );

        let mut w = world(
            engine,
            "timezone: America/New_York\nschedules:\n  - { job: tick, name: twice, cron: '30 1 * * *', overlap: allow }\n",
        );
        let start = ny
            .with_ymd_and_hms(2026, 10, 31, 12, 0, 0)
            .unwrap()
            .to_utc();
        w.sync(start);
        let f = w.pass(
            ny.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap().to_utc(),
            start,
        );
        assert_eq!(
            enqueued(&f),
            vec![t("2026-11-01T05:30:00Z")],
            "the repeated hour fires once, at its first occurrence"
        );
    }

    fn cursors_follow_the_configuration(engine) {
        let mut w = world(engine, EVERY_10S);
        let t0 = t("2026-11-21T12:00:00Z");
        w.sync(t0);
        assert_eq!(
            w.store.read(|tx| tx.schedule_cursor("tick")).unwrap(),
            Some((t0, true))
        );
        // Disabled for an hour, then enabled: no catch-up of the disabled time.
        w.config.schedules[0].enabled = false;
        w.sync(secs(t0, 100));
        assert!(w.pass(secs(t0, 3600), secs(t0, 3600)).is_empty());
        w.config.schedules[0].enabled = true;
        w.sync(secs(t0, 3600));
        assert_eq!(
            w.store.read(|tx| tx.schedule_cursor("tick")).unwrap(),
            Some((secs(t0, 3600), true))
        );
        // Removed: forgotten.
        w.config.schedules.clear();
        w.sync(secs(t0, 3700));
        assert_eq!(w.store.read(|tx| tx.schedule_cursor("tick")).unwrap(), None);
    }
}

#[test]
fn pure_plans() {
    let t0 = t("2026-11-21T12:00:00Z");
    let fires = Fires {
        times: vec![secs(t0, 1), secs(t0, 2)],
        total: 5,
    };
    let p = plan_catch_up(CatchUp::Latest, &fires);
    assert_eq!(
        (p.run, p.missed.len(), p.dropped),
        (vec![secs(t0, 2)], 1, 3)
    );
    assert_eq!(
        overlap_decision(Overlap::Allow, "j", &[(1, RunState::Running)]),
        Ok(())
    );
    assert!(overlap_decision(Overlap::Queue, "j", &[(1, RunState::Running)]).is_ok());
    assert!(
        overlap_decision(
            Overlap::Queue,
            "j",
            &[(1, RunState::Running), (2, RunState::Retrying)]
        )
        .is_err()
    );
    assert!(overlap_decision(Overlap::Skip, "j", &[(1, RunState::Delayed)]).is_err());
}
