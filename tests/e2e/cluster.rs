//! The store in PostgreSQL (`database:` / `WORKER_DATABASE_URL`): the daemon and every command
//! use it, the data directory keeps no database. Needs `WORKER_TEST_DATABASE_URL` (each test
//! makes a schema of its own); without it these tests pass and say on stderr that they were
//! skipped.

use crate::common::*;

#[test]
fn a_daemon_on_postgresql_runs_what_commands_enqueue_and_keeps_it_across_a_restart() {
    let Some(pg) = PgSchema::new() else { return };
    let e = Env::new();
    e.set_env("WORKER_DATABASE_URL", &pg.url);
    e.job("hello", "run: echo hello from postgres\n");
    e.job("later", "run: echo later\ndepends_on: [hello]\n");
    let d = e.daemon();
    let id = e.add(&["later"]);
    let run = e.wait_state(id, &["succeeded", "dead"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    let hello = e.json(&["history", "hello"]);
    assert_eq!(hello.as_array().map(Vec::len), Some(1), "{hello}");
    let out = e.ok(&["logs", &hello[0]["id"].to_string()]);
    assert!(out.contains("hello from postgres"), "{out}");
    // The runs are in PostgreSQL, not in the data directory.
    assert_eq!(pg.scalar("SELECT count(*) FROM runs"), 2);
    assert!(!e.data.join("worker.db").exists());
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    // Queued while no daemon runs, started by the next one; history survives.
    let again = e.add(&["hello"]);
    let _d = e.daemon();
    assert_eq!(
        e.wait_state(again, &["succeeded", "dead"])["state"],
        "succeeded"
    );
    assert_eq!(e.state(id), "succeeded");
}

#[test]
fn a_database_that_is_not_postgresql_is_a_clear_error() {
    let e = Env::new();
    e.file("scheduler.yaml", "database: mysql://root@127.0.0.1/test\n");
    let out = e.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("scheduler.yaml:1") && err.contains("not a PostgreSQL URL"),
        "{err}"
    );
    // Commands that only read the store say so too, instead of falling back to SQLite.
    let out = e.run(&["history"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn an_unreachable_database_makes_commands_exit_1_with_the_reason() {
    let e = Env::new();
    // Nothing listens on port 1; the password must not be shown.
    e.set_env(
        "WORKER_DATABASE_URL",
        "postgres://worker:s3cret-password@127.0.0.1:1/worker",
    );
    let out = e.run(&["history"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("s3cret-password"), "{err}");
}

#[test]
fn the_same_node_name_twice_is_refused_and_another_name_joins() {
    let Some(pg) = PgSchema::new() else { return };
    let (a, b, c) = (Env::new(), Env::new(), Env::new());
    for (e, node) in [(&a, "alpha"), (&b, "alpha"), (&c, "beta")] {
        e.set_env("WORKER_DATABASE_URL", &pg.url);
        e.file(
            "scheduler.yaml",
            &format!("node: {node}\nnode_timeout: 30s\n"),
        );
        e.job("hello", "run: echo hello\n");
    }
    let _first = a.daemon();
    let out = b
        .cmd()
        .arg("daemon")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("node `alpha` is already live"),
        "{}",
        stderr(&out)
    );
    let _second = c.daemon();
    let nodes = a.json(&["nodes"]);
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"], "{nodes}");
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "live"),
        "{nodes}"
    );
}

#[test]
fn a_run_enqueued_from_another_host_starts_without_waiting_for_housekeeping() {
    let Some(pg) = PgSchema::new() else { return };
    // Two data directories stand for two hosts: the command's wake-up socket reaches no daemon,
    // so only the database's notification can wake it before housekeeping (a minute away).
    let (host_a, host_b) = (Env::new(), Env::new());
    for e in [&host_a, &host_b] {
        e.set_env("WORKER_DATABASE_URL", &pg.url);
        e.job("hello", "run: echo hello\n");
    }
    let _d = host_a.daemon();
    // Let the daemon's first turns and its listening connection settle.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let id = host_b.add(&["hello"]);
    let start = std::time::Instant::now();
    loop {
        let state = host_b.state(id);
        if state == "succeeded" {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "run {id} still {state} after 30 s: the daemon was not woken"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `n` environments on one store, named `n1`…: the same jobs, each its own data directory (as if
/// each were a host).
fn nodes(pg: &PgSchema, n: usize, settings: &str, jobs: &[(&str, &str)]) -> Vec<Env> {
    (1..=n)
        .map(|i| {
            let e = Env::new();
            e.set_env("WORKER_DATABASE_URL", &pg.url);
            e.file(
                "scheduler.yaml",
                &format!("node: n{i}\nnode_timeout: 3s\n{settings}"),
            );
            for (name, yaml) in jobs {
                e.job(name, yaml);
            }
            e
        })
        .collect()
}

/// Lines of a marker file: (run id, attempt, event, nanoseconds).
fn markers(path: &std::path::Path) -> Vec<(i64, u32, String, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].to_string(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

/// The data directory (the node) of each end in a marker file.
fn markers_hosts(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .collect()
}

/// A job that appends `RUN ATTEMPT start|end NANOS` to `file` around `body` (the end also names
/// its node's data directory).
fn marking_job(file: &std::path::Path, body: &str, extra: &str) -> String {
    let f = file.display();
    format!(
        "command: [sh, -c, 'echo \"$WORKER_RUN_ID $WORKER_ATTEMPT start $(date +%s%N)\" >> {f}; {body}; echo \"$WORKER_RUN_ID $WORKER_ATTEMPT end $(date +%s%N) $WORKER_DATA_DIR\" >> {f}']\n{extra}"
    )
}

#[test]
fn three_daemons_drain_5000_runs_each_once_within_the_jobs_concurrency() {
    let Some(pg) = PgSchema::new() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let marks = scratch.path().join("marks");
    let job = marking_job(&marks, "true", "concurrency: 2\n");
    // Each node runs one at a time: the job's two slots are held by two nodes at once.
    let envs = nodes(&pg, 3, "concurrency: 1\n", &[("mark", &job)]);
    envs[0].ok(&["queue:add", "mark", "--count", "5000"]);
    let daemons: Vec<Daemon> = envs.iter().map(|e| e.daemon()).collect();
    wait_for_long("5,000 runs to succeed", 600, || {
        (pg.scalar("SELECT count(*) FROM runs WHERE state = 'succeeded'") == 5000).then_some(())
    });
    let m = markers(&marks);
    // Each run started once and ended once, in its first attempt.
    let mut seen = std::collections::HashMap::new();
    for (run, attempt, event, _) in &m {
        assert_eq!(*attempt, 1, "run {run} ran a second attempt");
        *seen.entry((*run, event.clone())).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 10_000, "every run has one start and one end");
    assert!(
        seen.values().all(|&n| n == 1),
        "a run started or ended twice"
    );
    // Never more than 2 at once across the nodes, measured from the markers.
    let mut events: Vec<(u128, i32)> = m
        .iter()
        .map(|(_, _, e, t)| (*t, if e == "start" { 1 } else { -1 }))
        .collect();
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    assert!(most <= 2, "{most} runs of a `concurrency: 2` job at once");
    // Several nodes took part (each runs one at a time: two at once are on two nodes).
    let hosts: std::collections::HashSet<String> = markers_hosts(&marks).into_iter().collect();
    assert!(hosts.len() >= 2, "runs ran on {hosts:?} only");
    drop(daemons);
}

#[test]
fn a_schedule_on_three_daemons_fires_each_second_exactly_once() {
    let Some(pg) = PgSchema::new() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let marks = scratch.path().join("ticks");
    let job = format!(
        "command: [sh, -c, 'echo \"$WORKER_SCHEDULED_AT\" >> {}']\nconcurrency: 10\n",
        marks.display()
    );
    let envs = nodes(
        &pg,
        3,
        "schedules:\n  - { job: tick, cron: '*/1 * * * * *', overlap: allow, catch_up: none }\n",
        &[("tick", &job)],
    );
    let daemons: Vec<Daemon> = envs.iter().map(|e| e.daemon()).collect();
    std::thread::sleep(std::time::Duration::from_secs(60));
    drop(daemons);
    let ticks = std::fs::read_to_string(&marks).unwrap();
    let mut instants: Vec<i64> = ticks
        .lines()
        .map(|l| {
            chrono::DateTime::parse_from_rfc3339(l.trim())
                .unwrap_or_else(|e| panic!("{l}: {e}"))
                .timestamp()
        })
        .collect();
    let n = instants.len();
    instants.sort();
    instants.dedup();
    assert_eq!(instants.len(), n, "a second fired more than once:\n{ticks}");
    assert!(n >= 50, "only {n} fires in 60 s:\n{ticks}");
    // No second skipped between the first and the last fire.
    let span = (instants[n - 1] - instants[0] + 1) as usize;
    assert_eq!(span, n, "seconds were skipped:\n{ticks}");
    assert_eq!(
        pg.scalar("SELECT count(*) FROM fires WHERE outcome = 'enqueued'"),
        pg.scalar("SELECT count(*) FROM runs WHERE schedule IS NOT NULL")
    );
}

#[test]
fn a_killed_node_s_runs_are_recovered_by_another_node_as_attempt_2() {
    let Some(pg) = PgSchema::new() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let marks = scratch.path().join("marks");
    let job = marking_job(
        &marks,
        "[ \"$WORKER_ATTEMPT\" -gt 1 ] || sleep 300",
        "retry: { attempts: 2, backoff: fixed, initial: 1s, jitter: false }\n",
    );
    let envs = nodes(&pg, 2, "", &[("slow", &job)]);
    let a = envs[0].daemon();
    let id = envs[0].add(&["slow"]);
    wait_for("attempt 1 to start on n1", || {
        markers(&marks).iter().any(|m| m.1 == 1).then_some(())
    });
    let _b = envs[1].daemon();
    a.kill9();
    let run = wait_for_long("the run to be recovered and succeed", 120, || {
        let r = envs[1].run_obj(id);
        (r["state"] == "succeeded").then_some(r)
    });
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(attempts[0]["outcome"], "interrupted", "{run}");
    assert_eq!(attempts[1]["outcome"], "succeeded", "{run}");
    let nodes = envs[1].json(&["nodes"]);
    let n1 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n1")
        .unwrap();
    assert_eq!(n1["state"], "dead", "{nodes}");
}

/// A run the store says a live node holds, but which that node does not know of (an end it
/// never recorded), is recovered by that node once it is idle, within a few heartbeats.
#[test]
fn an_idle_node_recovers_a_run_it_lost_track_of() {
    let Some(pg) = PgSchema::new() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let marks = scratch.path().join("marks");
    let job = marking_job(
        &marks,
        "true",
        "retry: { attempts: 2, backoff: fixed, initial: 1s, jitter: false }\n",
    );
    let envs = nodes(&pg, 1, "", &[("lost", &job)]);
    let _a = envs[0].daemon();
    let id = envs[0].add(&["lost", "--in", "1h"]);
    // As if n1 had started it and forgotten it: running, its owner, an attempt open.
    let changed = pg.scalar(&format!(
        "WITH r AS (UPDATE runs SET state = 'running', owner = 'node:n1', attempt = 1, \
         started_at = now() WHERE id = {id} RETURNING id), \
         a AS (INSERT INTO attempts (run_id, seq, number, started_at) SELECT id, 1, 1, now() FROM r \
         RETURNING 1) SELECT count(*) FROM a"
    ));
    assert_eq!(changed, 1);
    let run = wait_for_long("the lost run to be recovered and succeed", 60, || {
        let r = envs[0].run_obj(id);
        (r["state"] == "succeeded").then_some(r)
    });
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(attempts[0]["outcome"], "interrupted", "{run}");
    assert_eq!(attempts[1]["outcome"], "succeeded", "{run}");
    assert_eq!(markers(&marks).iter().filter(|m| m.2 == "start").count(), 1);
}

#[test]
fn a_paused_node_is_fenced_it_records_nothing_for_runs_taken_from_it() {
    let Some(pg) = PgSchema::new() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let marks = scratch.path().join("marks");
    let pids = scratch.path().join("pids");
    let job = marking_job(
        &marks,
        &format!(
            "echo $$ >> {}; if [ \"$WORKER_ATTEMPT\" -gt 1 ]; then sleep 1; else sleep 300; fi",
            pids.display()
        ),
        "retry: { attempts: 2, backoff: fixed, initial: 1s, jitter: false }\n",
    );
    let envs = nodes(&pg, 2, "", &[("slow", &job)]);
    let a = envs[0].daemon();
    let id = envs[0].add(&["slow"]);
    wait_for("attempt 1 to start on n1", || {
        markers(&marks).iter().any(|m| m.1 == 1).then_some(())
    });
    let first_pid: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _b = envs[1].daemon();
    a.signal(libc::SIGSTOP);
    // n2 declares n1 dead and runs the run again.
    let run = wait_for_long("the run to succeed on n2", 120, || {
        let r = envs[1].run_obj(id);
        (r["state"] == "succeeded").then_some(r)
    });
    a.signal(libc::SIGCONT);
    // n1 learns it lost the run: it kills attempt 1's process group and records nothing.
    wait_for_long("attempt 1's process to be killed", 60, || {
        (!alive(first_pid)).then_some(())
    });
    wait_for_long("n1 to join again", 60, || {
        a.log().contains("joined the store again").then_some(())
    });
    let after = envs[1].run_obj(id);
    assert_eq!(after["state"], "succeeded", "{after}");
    let attempts = after["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{after}");
    assert_eq!(attempts[0]["outcome"], "interrupted", "{after}");
    assert_eq!(attempts[1]["outcome"], "succeeded", "{after}");
    assert_eq!(after, run, "n1 changed the run after it was fenced");
    // No attempt ended twice; attempt 1 never ended at all.
    let m = markers(&marks);
    assert!(!m.iter().any(|x| x.1 == 1 && x.2 == "end"), "{m:?}");
    assert_eq!(
        m.iter().filter(|x| x.1 == 2 && x.2 == "end").count(),
        1,
        "{m:?}"
    );
}

/// As [`wait_for`], with a deadline of `secs`.
fn wait_for_long<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn logs_of_a_run_executed_on_another_node_show_its_output() {
    let Some(pg) = PgSchema::new() else { return };
    let envs = nodes(
        &pg,
        2,
        "",
        &[("hello", "run: printf 'hello from node one\\n'; exit 3\n")],
    );
    let _only_n1_runs = envs[0].daemon();
    // Enqueued and read on the other host, whose data directory has no output file.
    let id = envs[1].add(&["hello"]);
    assert_eq!(
        envs[1].wait_state(id, &["succeeded", "dead"])["state"],
        "dead"
    );
    let out = envs[1].ok(&["logs", &id.to_string()]);
    assert_eq!(out, "hello from node one\n");
    // Followed from the other host too: the stored output once the attempt has ended.
    let followed = envs[1].run(&["logs", &id.to_string(), "--follow"]);
    assert_eq!(
        stdout(&followed),
        "hello from node one\n",
        "{}",
        stderr(&followed)
    );
}

#[test]
fn status_shows_the_cluster_from_a_host_without_a_daemon() {
    let Some(pg) = PgSchema::new() else { return };
    let envs = nodes(&pg, 2, "", &[("hello", "run: echo hi\n")]);
    let _d = envs[0].daemon();
    // The other host runs no daemon: the store is served all the same.
    let out = envs[1].run(&["status"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("nodes      1 live: n1"), "{text}");
    assert!(!text.contains("@"), "no password or user shown: {text}");
    let json = envs[1].json(&["status"]);
    assert_eq!(json["healthy"], true, "{json}");
    assert_eq!(json["nodes"][0]["name"], "n1", "{json}");
    assert_eq!(json["nodes"][0]["state"], "live", "{json}");
}

#[test]
fn a_daemon_waits_for_an_unreachable_database_and_stops_on_sigterm() {
    let e = Env::new();
    e.set_env(
        "WORKER_DATABASE_URL",
        "postgres://worker:s3cret-password@127.0.0.1:1/worker",
    );
    let log = e.path("daemon.log");
    let mut child = e
        .cmd()
        .arg("daemon")
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("the daemon to say it retries", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.matches("cannot reach the store").count() >= 2).then_some(())
    });
    assert!(child.try_wait().unwrap().is_none(), "the daemon gave up");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = wait_for("the daemon to stop", || child.try_wait().unwrap());
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("s3cret-password"), "{text}");
}
