//! Schedules, live: 1-second schedules, a daemon stopped and started, SIGHUP reloads.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::common::*;

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .to_utc()
}

/// Recorded fires of one schedule: fire instant → (outcome, reason).
fn fires_of(e: &Env, schedule: &str) -> BTreeMap<DateTime<Utc>, (String, String)> {
    e.json(&["fires", schedule, "--limit", "10000"])
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                time(&f["fire_at"]),
                (
                    f["outcome"].as_str().unwrap().to_string(),
                    f["reason"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn scheduled_runs_get_their_variables() {
    let e = Env::new();
    let out = e.path("seen");
    e.job("tick", &format!("run: echo \"$WORKER_TRIGGER $WORKER_SCHEDULED_AT $SCOPE $LEVEL\" >> {}\nenv: {{ LEVEL: job, SCOPE: job }}\n", out.display()));
    e.file("scheduler.yaml", "schedules:\n  - { job: tick, name: every-second, cron: '@every 1s', env: { SCOPE: nightly } }\n");
    let _d = e.daemon();
    wait_for("two scheduled runs", || {
        (fs::read_to_string(&out).unwrap_or_default().lines().count() >= 2).then_some(())
    });
    for line in fs::read_to_string(&out).unwrap().lines().take(2) {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts[0], "schedule");
        let at = DateTime::parse_from_rfc3339(parts[1]).unwrap();
        assert_eq!(
            at.timestamp_subsec_millis(),
            0,
            "fires fall on whole seconds: {line}"
        );
        assert_eq!(
            (parts[2], parts[3]),
            ("nightly", "job"),
            "the schedule's env overrides the job's"
        );
    }
    let h = e.json(&["history", "--limit", "1"]);
    assert_eq!(h[0]["trigger"], "schedule");
    assert_eq!(h[0]["schedule"], "every-second");
    let s = e.json(&["schedules"]);
    assert_eq!(s[0]["name"], "every-second");
    assert!(s[0]["last_fire"].is_string());
    assert_eq!(s[0]["next"].as_array().unwrap().len(), 1);
}

#[test]
fn catch_up_after_a_stopped_period_under_each_policy() {
    let e = Env::new();
    for j in ["a", "b", "c"] {
        e.job(j, "run: 'true'\nconcurrency: 100\n");
    }
    e.file(
        "scheduler.yaml",
        "schedules:\n\
         \x20 - { job: a, name: none, cron: '@every 1s', catch_up: none, overlap: allow }\n\
         \x20 - { job: b, name: latest, cron: '@every 1s', catch_up: latest, overlap: allow }\n\
         \x20 - { job: c, name: all, cron: '@every 1s', catch_up: all, overlap: allow }\n",
    );
    let d = e.daemon();
    wait_for("first fires", || {
        (fires_of(&e, "all").len() >= 2).then_some(())
    });
    let (status, _) = d.stop();
    assert!(status.success());
    let stopped = Utc::now();
    std::thread::sleep(Duration::from_secs(5));
    let restarted = Utc::now();
    let _d = e.daemon();
    wait_for("fires after the restart", || {
        fires_of(&e, "all")
            .keys()
            .any(|t| *t > restarted + chrono::Duration::seconds(2))
            .then_some(())
    });
    for (name, policy) in [("none", "none"), ("latest", "latest"), ("all", "all")] {
        let fires = fires_of(&e, name);
        // Never silently missed, never twice: every second from the first fire on is recorded once.
        let first = *fires.keys().next().unwrap();
        let last = *fires.keys().last().unwrap();
        let expected = (last - first).num_seconds() + 1;
        assert_eq!(
            fires.len() as i64,
            expected,
            "{name}: every instant recorded exactly once: {fires:?}"
        );
        let down: Vec<&(String, String)> = fires
            .iter()
            .filter(|(t, _)| **t > stopped && **t < restarted)
            .map(|(_, v)| v)
            .collect();
        assert!(down.len() >= 3, "{name}: fires while down: {down:?}");
        let enqueued = down.iter().filter(|(o, _)| o == "enqueued").count();
        let missed: Vec<&&(String, String)> = down.iter().filter(|(o, _)| o == "missed").collect();
        match policy {
            "none" => {
                assert_eq!(enqueued, 0, "{down:?}");
                assert!(
                    missed.iter().all(|(_, r)| r.contains("catch_up: none")),
                    "{missed:?}"
                );
            }
            "latest" => {
                assert!(enqueued <= 1, "{down:?}");
                assert!(missed.len() >= down.len() - 1, "{down:?}");
                assert!(
                    missed.iter().all(|(_, r)| r.contains("catch_up: latest")),
                    "{missed:?}"
                );
            }
            _ => assert_eq!(enqueued, down.len(), "{down:?}"),
        }
    }
}

#[test]
fn overlap_skip_records_missed_fires() {
    let e = Env::new();
    e.job("slow", "run: sleep 2.5\n");
    e.file(
        "scheduler.yaml",
        "schedules:\n  - { job: slow, cron: '@every 1s' }\n",
    );
    let _d = e.daemon();
    let missed = wait_for("a fire skipped by overlap", || {
        fires_of(&e, "slow")
            .into_values()
            .find(|(o, r)| o == "missed" && r.starts_with("overlap: skip: run"))
    });
    assert!(missed.1.contains("of slow is still"), "{missed:?}");
}

#[test]
fn sighup_adds_and_removes_schedules_and_a_broken_file_keeps_the_old_one() {
    let e = Env::new();
    e.job("a", "run: 'true'\n");
    e.job("b", "run: 'true'\n");
    e.file(
        "scheduler.yaml",
        "schedules:\n  - { job: a, name: sa, cron: '@every 1s' }\n",
    );
    let d = e.daemon();
    wait_for("sa to fire", || {
        (!fires_of(&e, "sa").is_empty()).then_some(())
    });

    // A broken file: rejected, logged with its position, and sa keeps firing.
    e.file("scheduler.yaml", "schedules:\n  - { job: a, name: sa, cron: '@every 1s' }\n  - { job: nope, cron: '@daily' }\n");
    d.signal(libc::SIGHUP);
    wait_for("the rejection in the log", || {
        d.log().contains("configuration rejected").then_some(())
    });
    assert!(
        d.log().contains("scheduler.yaml:3:12: unknown job `nope`"),
        "{}",
        d.log()
    );
    let before = Utc::now();
    wait_for("sa to keep firing", || {
        fires_of(&e, "sa").keys().any(|t| *t > before).then_some(())
    });

    // Replace sa by sb.
    e.file(
        "scheduler.yaml",
        "schedules:\n  - { job: b, name: sb, cron: '@every 1s' }\n",
    );
    d.signal(libc::SIGHUP);
    wait_for("sb to fire", || {
        (!fires_of(&e, "sb").is_empty()).then_some(())
    });
    let reloaded = Utc::now();
    std::thread::sleep(Duration::from_millis(2500));
    let late: Vec<_> = fires_of(&e, "sa")
        .into_keys()
        .filter(|t| *t > reloaded)
        .collect();
    assert!(late.is_empty(), "sa fired after it was removed: {late:?}");
    assert!(
        e.json(&["schedules"])
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "sa")
    );
}

#[test]
fn each_fire_is_enqueued_once_across_kill_9() {
    let e = Env::new();
    e.job("tick", "run: 'true'\nconcurrency: 100\n");
    e.file(
        "scheduler.yaml",
        "schedules:\n  - { job: tick, cron: '@every 1s', overlap: allow, catch_up: all }\n",
    );
    for _ in 0..3 {
        let d = e.daemon();
        let n = fires_of(&e, "tick").len();
        wait_for("a new fire", || {
            (fires_of(&e, "tick").len() > n + 1).then_some(())
        });
        d.kill9();
    }
    let _d = e.daemon();
    std::thread::sleep(Duration::from_millis(1500));
    let runs = e.json(&["queue:list", "--all"]);
    let mut per_fire: BTreeMap<String, u32> = BTreeMap::new();
    for r in runs.as_array().unwrap() {
        *per_fire
            .entry(r["scheduled_at"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(per_fire.len() >= 6);
    assert!(
        per_fire.values().all(|n| *n == 1),
        "a fire enqueued twice: {per_fire:?}"
    );
}

#[test]
fn schedules_preview_dst_fire_times_with_their_offsets() {
    let e = Env::new();
    e.job("report", "run: 'true'\n");
    e.file(
        "scheduler.yaml",
        "timezone: America/New_York\nschedules:\n  - { job: report, name: gap, cron: '30 2 * * *' }\n  - { job: report, name: twice, cron: '30 1 * * *', timezone: America/New_York }\n",
    );
    let s = e.json(&["schedules", "--next", "3", "--from", "2026-03-07T12:00:00Z"]);
    assert_eq!(
        s[0]["next"],
        serde_json::json!([
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00",
            "2026-03-10T02:30:00-04:00"
        ])
    );
    let s = e.json(&["schedules", "--next", "2", "--from", "2026-10-31T12:00:00Z"]);
    assert_eq!(
        s[1]["next"],
        serde_json::json!(["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"])
    );
    assert_eq!(s[1]["timezone"], "America/New_York");
    let table = e.ok(&["schedules"]);
    assert!(table.contains("gap") && table.contains("30 2 * * *"));
    let list = e.json(&["list"]);
    assert_eq!(list[0]["schedules"], serde_json::json!(["gap", "twice"]));
    assert!(list[0]["next_fire"].is_string());
}

/// A paused schedule fires nothing, stays paused across a restart and a reload, catches nothing
/// up when resumed; `schedules:trigger` runs its job now.
#[test]
fn pause_resume_and_trigger_a_schedule() {
    let e = Env::new();
    e.job("tick", "run: 'true'\n");
    e.file(
        "scheduler.yaml",
        "schedules:\n  - job: tick\n    name: every-second\n    cron: \"@every 1s\"\n    catch_up: all\n",
    );
    let fires = |e: &Env| {
        e.json(&["fires", "--limit", "1000"])
            .as_array()
            .unwrap()
            .len()
    };
    let d = e.daemon();
    wait_for("a first fire", || (fires(&e) > 0).then_some(()));
    let out = e.ok(&["schedules:pause", "every-second"]);
    assert!(out.contains("paused"), "{out}");
    let paused_at = chrono::Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = fires(&e);
    let listed = e.json(&["schedules"]);
    assert_eq!(listed[0]["paused"], true, "{listed}");
    assert_eq!(listed[0]["next"], serde_json::json!([]));
    assert!(e.ok(&["schedules"]).contains("paused since"));
    assert!(e.ok(&["list"]).contains("every-second (paused)"));
    // Across a restart and a reload.
    drop(d);
    let _d = e.daemon();
    e.ok(&["reload"]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(fires(&e), before, "a paused schedule fires nothing");
    e.ok(&["schedules:resume", "every-second"]);
    let resumed_at = chrono::Utc::now();
    wait_for("fires again", || (fires(&e) > before).then_some(()));
    // Nothing from the paused time was caught up (catch_up: all notwithstanding).
    for f in e.json(&["fires", "--limit", "1000"]).as_array().unwrap() {
        let at = chrono::DateTime::parse_from_rfc3339(f["fire_at"].as_str().unwrap()).unwrap();
        assert!(
            at < paused_at + chrono::Duration::seconds(1)
                || at > resumed_at - chrono::Duration::seconds(1),
            "fire during the pause: {f}"
        );
    }
    let id: i64 = e
        .ok(&["schedules:trigger", "every-second"])
        .trim()
        .parse()
        .unwrap();
    let r = e.wait_state(id, &["succeeded"]);
    assert_eq!(r["trigger"], "manual");
    assert_eq!(e.run(&["schedules:pause", "nope"]).status.code(), Some(2));
}
