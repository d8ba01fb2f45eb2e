//! What an operator meets in the first hour: long jobs that outlive housekeeping, following
//! output live, what the daemon runs versus what is on disk, readable errors, times and
//! listings, a private data directory, bulk cancel, restarts after `kill -9`, and processes that
//! try to outlive their job.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// A job that appends a line per execution to a marker file, then runs for `secs`.
fn marked_sleeper(e: &Env, name: &str, secs: u32) -> std::path::PathBuf {
    let marker = e.path(&format!("{name}.executions"));
    e.job(
        name,
        &format!(
            "run: echo \"attempt $WORKER_ATTEMPT\" >> {}; sleep {secs}; echo done\nretry: {{ attempts: 3, initial: 100ms }}\n",
            marker.display()
        ),
    );
    marker
}

/// The root cause of a long job being failed by the daemon itself: every housekeeping pass
/// treated the daemon's own runs as a dead owner's. With passes every 200 ms, a 4 s job (and a
/// foreground `worker job` of 4 s beside it) must still succeed as attempt 1, executed once.
#[test]
fn a_run_outlives_many_housekeeping_passes_and_succeeds_once() {
    let e = Env::new();
    let marker = marked_sleeper(&e, "slow", 4);
    let fg_marker = marked_sleeper(&e, "slowfg", 4);
    let d = e.daemon_with(|c| {
        c.env("WORKER_HOUSEKEEPING", "200ms");
    });
    let id = e.add(&["slow"]);
    let fg = e
        .cmd()
        .args(["job", "slowfg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = e.wait_state(id, &["succeeded", "dead", "retrying"]);
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["attempt"], 1);
    assert_eq!(r["error"], serde_json::Value::Null);
    assert_eq!(fs::read_to_string(&marker).unwrap(), "attempt 1\n");
    let out = fg.wait_with_output().unwrap();
    assert!(out.status.success(), "the foreground run was failed");
    assert_eq!(fs::read_to_string(&fg_marker).unwrap(), "attempt 1\n");
    let log = d.log();
    assert!(!log.contains("recovered a run"), "{log}");
}

/// The same with the real one-minute housekeeping: a job of 65 s.
#[test]
fn a_job_longer_than_the_real_housekeeping_interval_succeeds() {
    let e = Env::new();
    let marker = marked_sleeper(&e, "backup", 65);
    let d = e.daemon();
    let id = e.add(&["backup"]);
    let r = wait_long(&e, id, Duration::from_secs(150));
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["attempt"], 1);
    assert_eq!(fs::read_to_string(&marker).unwrap(), "attempt 1\n");
    assert!(!d.log().contains("recovered a run"), "{}", d.log());
}

/// Waits longer than [`PATIENCE`] for a run to finish.
fn wait_long(e: &Env, id: i64, limit: Duration) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let r = e.run_obj(id);
        if ["succeeded", "dead", "cancelled"].contains(&r["state"].as_str().unwrap_or("")) {
            return r;
        }
        assert!(start.elapsed() < limit, "run {id} did not finish: {r}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn logs_follow_prints_output_live_across_retries_and_exits_with_the_outcome() {
    let e = Env::new();
    let gate = e.path("gate");
    e.job(
        "flaky",
        &format!(
            "run: |\n  if [ \"$WORKER_ATTEMPT\" = 1 ]; then echo one; while [ ! -e {} ]; do sleep 0.05; done; exit 3; fi\n  echo two; sleep 0.3; echo three\nretry: {{ attempts: 2, initial: 200ms, jitter: false }}\n",
            gate.display()
        ),
    );
    e.job("broken", "run: echo bad; exit 4\n");
    let _d = e.daemon();
    let id = e.add(&["flaky"]);
    // Attach once the first attempt printed: what was written before is shown too.
    wait_for("the first line", || {
        e.ok(&["logs", &id.to_string()])
            .contains("one")
            .then_some(())
    });
    let follower = e
        .cmd()
        .args(["logs", &id.to_string(), "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    fs::write(&gate, "").unwrap();
    let out = follower.wait_with_output().unwrap();
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{err}");
    assert_eq!(text, "one\ntwo\nthree\n");
    assert!(err.contains("attempt 1 failed (exit code 3)"), "{err}");
    assert!(err.contains("attempt 2/2 started"), "{err}");

    // A run that ends dead: exit 1, after its output; `-f` waits for a run that has not started.
    let id = e.add(&["broken", "--in", "1s"]);
    let out = e.run(&["logs", &id.to_string(), "-f"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "bad\n");
    assert!(
        stderr(&out).contains("waiting for it to start"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("ended dead: exit code 4"),
        "{}",
        stderr(&out)
    );
    // Of a run that does not exist.
    assert_eq!(e.run(&["logs", "999", "-f"]).status.code(), Some(1));
}

#[test]
fn show_of_a_running_run_has_elapsed_time_and_output_so_far() {
    let e = Env::new();
    let gate = e.path("gate");
    e.job(
        "long",
        &format!(
            "run: for i in $(seq 1 30); do echo line $i; done; while [ ! -e {} ]; do sleep 0.05; done\n",
            gate.display()
        ),
    );
    let _d = e.daemon();
    let id = e.add(&["long"]);
    wait_for("output", || {
        e.ok(&["logs", &id.to_string()])
            .contains("line 30")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1100));
    let shown = e.ok(&["show", &id.to_string()]);
    assert!(shown.contains("elapsed"), "{shown}");
    assert!(shown.contains("(attempt 1, running)"), "{shown}");
    assert!(shown.contains("output so far"), "{shown}");
    assert!(
        shown.contains("line 30") && shown.contains("line 11"),
        "{shown}"
    );
    assert!(
        !shown.contains("line 10\n"),
        "only the last 20 lines: {shown}"
    );
    let j = &e.json(&["show", &id.to_string()])[0];
    assert!(j["elapsed_ms"].as_u64().unwrap() >= 1000, "{j}");
    fs::write(&gate, "").unwrap();
    e.wait_state(id, &["succeeded"]);
    let shown = e.ok(&["show", &id.to_string()]);
    assert!(!shown.contains("output so far"), "{shown}");
}

#[test]
fn reload_reports_the_outcome_and_commands_warn_about_drift() {
    let e = Env::new();
    e.job("old", "run: echo old\n");
    // Without a daemon there is nothing to reload.
    let out = e.run(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no worker daemon is running"),
        "{}",
        stderr(&out)
    );

    let d = e.daemon();
    assert!(!stderr(&e.run(&["list"])).contains("warning"), "in sync");
    e.job("fresh", "run: echo fresh\n");
    let id = e.add(&["fresh"]);
    let listed = e.ok(&["queue:list"]);
    assert!(
        listed.contains("waiting for a reload: the daemon does not run job `fresh` yet"),
        "{listed}"
    );
    for cmd in ["list", "schedules"] {
        let err = stderr(&e.run(&[cmd]));
        assert!(err.contains("jobs/fresh.yaml added"), "{cmd}: {err}");
        assert!(err.contains("worker reload"), "{cmd}: {err}");
    }
    let status = stdout(&e.run(&["status"]));
    assert!(status.contains("warning: the daemon"), "{status}");
    assert!(status.contains("files changed since"), "{status}");
    let s = e.json(&["status"]);
    assert_eq!(s["daemon"]["config"]["in_sync_with_disk"], false, "{s}");

    let out = e.ok(&["reload"]);
    assert!(
        out.contains("reloaded the configuration: jobs/fresh.yaml added"),
        "{out}"
    );
    e.wait_state(id, &["succeeded"]);
    assert!(!stderr(&e.run(&["list"])).contains("warning"));
    assert_eq!(
        e.json(&["status"])["daemon"]["config"]["in_sync_with_disk"],
        true
    );

    // A broken edit: rejected with its problems, exit 1; the daemon keeps the previous one.
    e.job("old", "run: echo old\ntimeout: soon\n");
    let out = e.run(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("jobs/old.yaml:2:10:"), "{err}");
    assert!(
        err.contains("rejected the configuration (1 problem)"),
        "{err}"
    );
    let status = stdout(&e.run(&["status"]));
    assert!(status.contains("jobs/old.yaml changed"), "{status}");
    assert!(
        status.contains("the configuration has 1 problem"),
        "{status}"
    );
    assert!(d.log().contains("configuration rejected"));
}

#[test]
fn durations_people_write_are_refused_with_what_to_write() {
    let e = Env::new();
    e.job("x", "run: 'true'\ntimeout: 30 s\n");
    let out = e.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("(no spaces inside a duration): write `30s`"),
        "{}",
        stderr(&out)
    );
    e.job("x", "run: 'true'\n");
    for (given, fix) in [
        ("1.5h", "`1h30m`"),
        ("5 minutes", "`5m`"),
        ("30 s", "`30s`"),
    ] {
        let out = e.run(&["queue:add", "x", "--in", given]);
        assert_eq!(out.status.code(), Some(2), "{given}");
        assert!(
            stderr(&out).contains(&format!("write {fix}")),
            "{given}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn help_shows_global_options_under_their_heading_and_every_argument() {
    let e = Env::new();
    for cmd in ["logs", "queue:list", "show", "queue:cancel", "status"] {
        let help = e.ok(&[cmd, "--help"]);
        assert!(help.contains("Global options:"), "{cmd}: {help}");
        let global = &help[help.find("Global options:").unwrap()..];
        assert!(
            global.contains("--config") && global.contains("--utc"),
            "{help}"
        );
    }
    let help = e.ok(&["logs", "--help"]);
    let args = &help[help.find("Arguments:").unwrap()..help.find("Options:").unwrap()];
    assert!(
        args.contains("<RUN_ID>") && args.contains("The run (its id"),
        "{help}"
    );
    assert!(help.contains("--follow"), "{help}");
}

#[test]
fn status_counts_its_problems_and_shows_the_version_with_its_commit() {
    let e = Env::new();
    e.job("x", "run: 'true'\n");
    let version = stdout(&e.run(&["--version"]));
    let version = version.trim().trim_start_matches("worker ");
    assert!(version.contains(" ("), "{version}");
    let out = e.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains(&format!("worker     {version}")), "{text}");
    assert!(text.contains("UNHEALTHY: 1 problem\n"), "{text}");
    e.job("x", "run: 'true'\nnonsense: 1\n");
    assert!(stdout(&e.run(&["status"])).contains("UNHEALTHY: 2 problems\n"));
    e.job("x", "run: 'true'\n");
    let _d = e.daemon();
    let out = e.ok(&["status"]);
    assert!(out.contains("the same version"), "{out}");
    assert_eq!(e.json(&["status"])["daemon"]["version"], version);
}

#[test]
fn human_times_say_their_zone_and_json_stays_rfc3339() {
    let e = Env::new();
    e.job("x", "run: 'true'\n");
    let out = e.run(&["job", "x"]);
    assert!(out.status.success());
    let in_berlin = stdout(
        &e.cmd()
            .env("TZ", "Europe/Berlin")
            .args(["history"])
            .output()
            .unwrap(),
    );
    // 30 November: CET.
    assert!(in_berlin.contains(" +01:00"), "{in_berlin}");
    let utc = stdout(
        &e.cmd()
            .env("TZ", "Europe/Berlin")
            .args(["history", "--utc"])
            .output()
            .unwrap(),
    );
    assert!(utc.contains(" UTC") && !utc.contains("+01:00"), "{utc}");
    let j = e.json(&["history"]);
    assert!(j[0]["started_at"].as_str().unwrap().ends_with('Z'), "{j}");
}

#[test]
fn the_data_directory_is_private_and_a_looser_one_is_warned_about() {
    let e = Env::new();
    e.job("x", "run: echo secret\n");
    assert!(e.run(&["job", "x"]).status.success());
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&e.data), 0o700);
    assert_eq!(mode(&e.data.join("logs")), 0o700);
    assert_eq!(mode(&e.data.join("worker.db")), 0o600);
    for f in fs::read_dir(e.data.join("logs")).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600);
    }
    let d = e.daemon();
    assert!(!d.log().contains("readable by other users"));
    drop(d);
    fs::set_permissions(&e.data, fs::Permissions::from_mode(0o755)).unwrap();
    let d = e.daemon();
    let log = d.log();
    assert_eq!(log.matches("readable by other users").count(), 1, "{log}");
    assert!(log.contains("chmod 700"), "{log}");
}

#[test]
fn listings_are_paged_and_say_how_many_more() {
    let e = Env::new();
    e.job("x", "run: 'true'\n");
    e.ok(&["queue:add", "x", "--count", "120"]);
    let out = e.ok(&["queue:list"]);
    assert_eq!(out.lines().filter(|l| l.contains(" queued ")).count(), 50);
    assert!(out.contains("… and 70 more"), "{out}");
    let out = e.ok(&["queue:list", "--limit", "200"]);
    assert!(!out.contains("more"), "{out}");
    let out = e.run(&["--json", "queue:list", "--limit", "10"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 10);
    assert!(stderr(&out).contains("110 more not shown"));
}

/// The run's error is its final outcome's: a success after a lost attempt has none (the attempt
/// keeps its own).
#[test]
fn a_success_after_an_interrupted_attempt_carries_no_run_error() {
    let e = Env::new();
    let pid = e.path("pid");
    e.job(
        "again",
        &format!(
            "run: if [ \"$WORKER_ATTEMPT\" = 1 ]; then echo $$ > {}; sleep 300; fi\nretry: {{ attempts: 2, initial: 100ms }}\n",
            pid.display()
        ),
    );
    let d = e.daemon();
    let id = e.add(&["again"]);
    read_pid(&pid);
    d.kill9();
    let _d = e.daemon();
    let r = e.wait_state(id, &["succeeded"]);
    assert_eq!(r["error"], serde_json::Value::Null, "{r}");
    let shown = e.json(&["show", &id.to_string()])[0].clone();
    assert_eq!(shown["attempts"][0]["outcome"], "interrupted", "{shown}");
    assert!(
        shown["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
}

#[test]
fn cancel_all_cancels_unfinished_runs_in_batches() {
    let e = Env::new();
    e.job("a", "run: 'true'\n");
    e.job("b", "run: 'true'\n");
    e.job("child", "run: 'true'\ndepends_on: [b]\n");
    e.ok(&["queue:add", "a", "--count", "2500"]);
    e.ok(&["queue:add", "a", "--count", "5", "--in", "1h"]);
    let waiting = e.add(&["child"]);
    let out = e.ok(&["queue:cancel", "--all", "--job", "a", "--state", "queued"]);
    assert!(out.contains("2500 runs cancelled"), "{out}");
    let stats = e.json(&["queue:stats"]);
    let a = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "a")
        .unwrap();
    assert_eq!(a["counts"]["cancelled"], 2500);
    assert_eq!(a["counts"]["delayed"], 5);
    // Everything else, dependents handled as for one cancel.
    let out = e.ok(&["queue:cancel", "--all"]);
    assert!(out.contains("7 runs cancelled"), "{out}");
    assert_eq!(e.state(waiting), "cancelled");
    assert_eq!(e.ok(&["queue:list"]).trim(), "no runs waiting or running");
    let out = e.run(&["queue:cancel", "--all", "--state", "succeeded"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A lock on daemon.lock held after the daemon died (a job it was spawning, a command probing
/// it): the restart waits for it instead of refusing.
#[test]
fn a_restart_succeeds_while_the_dead_daemons_lock_is_still_held() {
    let e = Env::new();
    e.job("x", "run: 'true'\n");
    let d = e.daemon();
    d.kill9();
    let mut holder = Command::new("flock")
        .arg(e.data.join("daemon.lock"))
        .args(["sleep", "1.5"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let d = e.daemon();
    assert!(
        d.log().contains("waiting for it to be released"),
        "{}",
        d.log()
    );
    let id = e.add(&["x"]);
    e.wait_state(id, &["succeeded"]);
    holder.wait().unwrap();
    // A live daemon is still refused at once.
    let out = e.run(&["daemon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
}

/// A job's lifetime is its main process's, also for processes that left its group.
#[test]
fn processes_that_leave_the_group_die_when_the_attempt_ends() {
    let e = Env::new();
    let (esc, deep, gate) = (e.path("esc.pid"), e.path("deep.pid"), e.path("gate"));
    e.job(
        "spawner",
        &format!(
            "run: |\n  setsid sleep 300 & echo $! > {esc}\n  setsid sh -c 'setsid sleep 301 & echo $! > {deep}; wait' &\n  while [ ! -e {gate} ]; do sleep 0.05; done\n",
            esc = esc.display(),
            deep = deep.display(),
            gate = gate.display()
        ),
    );
    for foreground in [false, true] {
        let _ = fs::remove_file(&gate);
        let _ = fs::remove_file(&esc);
        let _ = fs::remove_file(&deep);
        let (d, fg) = if foreground {
            let fg = e
                .cmd()
                .args(["job", "spawner"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            (None, Some(fg))
        } else {
            let d = e.daemon();
            e.add(&["spawner"]);
            (Some(d), None)
        };
        let (p1, p2) = (read_pid(&esc), read_pid(&deep));
        std::thread::sleep(Duration::from_millis(300));
        assert!(alive(p1) && alive(p2), "alive while the attempt runs");
        fs::write(&gate, "").unwrap();
        for pid in [p1, p2] {
            wait_for(
                &format!("escaped pid {pid} to die with its attempt"),
                || (!alive(pid)).then_some(()),
            );
        }
        if let Some(mut fg) = fg {
            assert!(fg.wait().unwrap().success());
        }
        drop(d);
    }
}
