//! The spine: queue, executor, retries, dependencies, crash safety, commands.

use std::fs;
use std::time::Duration;

use crate::common::*;

#[test]
fn validate_reports_every_problem_with_positions_and_exit_2() {
    let e = Env::new();
    e.job("ok", "run: echo ok\n");
    e.job("bad", "run: echo\ntimeout: forever\npriority: urgent\n");
    e.job("cyc-a", "run: x\ndepends_on: [cyc-b]\n");
    e.job("cyc-b", "run: x\ndepends_on: [cyc-a]\n");
    let out = e.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let conf = e.config.display().to_string();
    assert!(
        err.contains(&format!(
            "{conf}/jobs/bad.yaml:2:10: timeout: `forever` is not a duration"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{conf}/jobs/bad.yaml:3:11: priority must be one of"
        )),
        "{err}"
    );
    assert!(
        err.contains("dependency cycle: cyc-a -> cyc-b -> cyc-a"),
        "{err}"
    );
    // Every other command that needs the configuration refuses it too, the same way.
    let out = e.run(&["queue:add", "ok"]);
    assert_eq!(out.status.code(), Some(2));
    // A good configuration validates.
    for f in ["bad", "cyc-a", "cyc-b"] {
        fs::remove_file(e.config.join(format!("jobs/{f}.yaml"))).unwrap();
    }
    assert!(e.ok(&["validate"]).contains("configuration OK: 1 job"));
}

#[test]
fn foreground_job_streams_output_records_history_and_sets_exit_codes() {
    let e = Env::new();
    e.job("hello", "run: echo \"hi from $WORKER_JOB run $WORKER_RUN_ID attempt $WORKER_ATTEMPT via $WORKER_TRIGGER $GREETING\"\nenv: { GREETING: yo }\n");
    e.job("fails", "run: echo nope; exit 7\n");
    let out = e.run(&["job", "hello"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "hi from hello run 1 attempt 1 via manual yo\n"
    );
    let out = e.run(&["job", "hello", "--env", "GREETING=override"]);
    assert!(stdout(&out).ends_with("override\n"));
    let out = e.run(&["job", "fails"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exit code 7"));
    let dlq = e.json(&["queue:dlq"]);
    assert_eq!(dlq[0]["job"], "fails");
    assert_eq!(dlq[0]["exit_code"], 7);
    let hist = e.json(&["history"]);
    assert_eq!(hist.as_array().unwrap().len(), 3);
    assert_eq!(hist[0]["job"], "fails");
    assert_eq!(hist[2]["state"], "succeeded");
    assert!(hist[2]["attempts"][0]["duration_ms"].is_number());
    assert_eq!(
        e.run(&["job", "nope"]).status.code(),
        Some(2),
        "an unknown job is a usage error"
    );
    assert_eq!(
        e.run(&["logs", "999"]).status.code(),
        Some(1),
        "an unknown run id is a failure"
    );
}

#[test]
fn retry_until_success() {
    let e = Env::new();
    let counter = e.path("count");
    e.job(
        "flaky",
        &format!(
            "run: n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo try $n; [ $n -ge 3 ]\nretry: {{ attempts: 3, initial: 200ms, backoff: fixed, jitter: false }}\n",
            c = counter.display()
        ),
    );
    let _d = e.daemon();
    let id = e.add(&["flaky"]);
    let run = e.wait_state(id, &["succeeded", "dead"]);
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["attempt"], 3);
    let shown = e.json(&["show", &id.to_string()]);
    let attempts = shown[0]["attempts"].as_array().unwrap();
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["failed", "failed", "succeeded"]);
    assert_eq!(
        e.ok(&["logs", &id.to_string(), "--attempt", "2"]),
        "try 2\n"
    );
    assert_eq!(e.ok(&["logs", &id.to_string()]), "try 3\n");
}

#[test]
fn retries_exhausted_end_dead_in_the_dlq_and_can_be_retried() {
    let e = Env::new();
    e.job(
        "broken",
        "run: echo failing >&2; exit 4\nretry: { attempts: 2, initial: 100ms, jitter: false }\n",
    );
    e.job("fine", "run: 'true'\n");
    let _d = e.daemon();
    let id = e.add(&["broken", "--env", "TOKEN=abc"]);
    let run = e.wait_state(id, &["dead"]);
    assert_eq!(
        (run["attempt"].as_i64(), run["exit_code"].as_i64()),
        (Some(2), Some(4))
    );
    assert_eq!(run["error"], "exit code 4");
    let dlq = e.json(&["queue:dlq"]);
    assert_eq!(dlq[0]["id"], id);
    assert_eq!(e.ok(&["logs", &id.to_string()]), "failing\n");

    let new: i64 = e
        .ok(&["queue:retry", &id.to_string()])
        .trim()
        .parse()
        .unwrap();
    let r = e.run_obj(new);
    assert_eq!(
        (r["trigger"].as_str(), r["retry_of"].as_i64()),
        (Some("retry"), Some(id))
    );
    assert_eq!(e.run_obj(id)["retried_by"], new);
    e.wait_state(new, &["dead"]);
    let dlq = e.json(&["queue:dlq"]);
    assert_eq!(
        dlq.as_array().unwrap().len(),
        1,
        "the retried run left the DLQ; the new one is in it"
    );
    assert_eq!(dlq[0]["id"], new);
    assert_eq!(
        e.run(&["queue:retry", &id.to_string()]).status.code(),
        Some(1),
        "already retried"
    );
    let ok_id = {
        let id = e.add(&["fine"]);
        e.wait_state(id, &["succeeded"]);
        id
    };
    assert_eq!(
        e.run(&["queue:retry", &ok_id.to_string()]).status.code(),
        Some(1),
        "not dead"
    );
    let ids = e.ok(&["queue:retry", "--all"]);
    assert_eq!(ids.lines().count(), 1);
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let e = Env::new();
    let pidfile = e.path("grandchild.pid");
    e.job(
        "slow",
        &format!(
            "run: sleep 300 & echo $! > {}; wait\ntimeout: 1s\n",
            pidfile.display()
        ),
    );
    let _d = e.daemon();
    let id = e.add(&["slow"]);
    let run = e.wait_state(id, &["dead"]);
    assert_eq!(run["error"], "timed out after 1s");
    let shown = e.json(&["show", &id.to_string()]);
    assert_eq!(shown[0]["attempts"][0]["outcome"], "timeout");
    let grandchild = read_pid(&pidfile);
    wait_for("the grandchild to be killed", || {
        (!alive(grandchild)).then_some(())
    });
}

#[test]
fn priority_order_under_concurrency_one() {
    let e = Env::new();
    let order = e.path("order");
    e.file("scheduler.yaml", "concurrency: 1\n");
    e.job(
        "rec",
        &format!("run: echo $LABEL >> {}\nconcurrency: 10\n", order.display()),
    );
    // Enqueued before the daemon starts, so all four compete for the first slot.
    for (p, label) in [
        ("low", "low"),
        ("normal", "normal"),
        ("high", "high"),
        ("critical", "critical"),
    ] {
        e.add(&["rec", "--priority", p, "--env", &format!("LABEL={label}")]);
    }
    e.add(&["rec", "--priority", "high", "--env", "LABEL=high2"]);
    let _d = e.daemon();
    wait_for("all five runs", || {
        (fs::read_to_string(&order)
            .unwrap_or_default()
            .lines()
            .count()
            == 5)
            .then_some(())
    });
    let got: Vec<String> = fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(got, vec!["critical", "high", "high2", "normal", "low"]);
}

#[test]
fn a_three_job_chain_runs_in_order_and_a_failure_cascades() {
    let e = Env::new();
    let order = e.path("order");
    let fail_flag = e.path("fail-a");
    e.job(
        "a",
        &format!(
            "run: echo a >> {o}; [ ! -e {f} ]\n",
            o = order.display(),
            f = fail_flag.display()
        ),
    );
    e.job(
        "b",
        &format!("run: echo b >> {}\ndepends_on: [a]\n", order.display()),
    );
    e.job(
        "c",
        &format!("run: echo c >> {}\ndepends_on: [b]\n", order.display()),
    );
    let _d = e.daemon();
    let c = e.add(&["c"]);
    e.wait_state(c, &["succeeded"]);
    assert_eq!(fs::read_to_string(&order).unwrap(), "a\nb\nc\n");
    let runs = e.json(&["history"]);
    let trig: Vec<(&str, &str)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["job"].as_str().unwrap(), r["trigger"].as_str().unwrap()))
        .collect();
    assert_eq!(
        trig,
        vec![("c", "queue"), ("b", "dependency"), ("a", "dependency")]
    );

    fs::write(&fail_flag, "").unwrap();
    let c2 = e.add(&["c"]);
    let dead = e.wait_state(c2, &["dead", "succeeded"]);
    assert_eq!(dead["state"], "dead");
    let b2 = dead["depends_on"][0].as_i64().unwrap();
    let b = e.run_obj(b2);
    let a2 = b["depends_on"][0].as_i64().unwrap();
    assert_eq!(b["error"], format!("dependency a run {a2} failed"));
    assert_eq!(dead["error"], format!("dependency b run {b2} failed"));
    assert_eq!(
        fs::read_to_string(&order).unwrap(),
        "a\nb\nc\na\n",
        "b and c never ran"
    );
}

#[test]
fn idempotency_key_returns_the_same_run() {
    let e = Env::new();
    e.job("mail", "run: 'true'\n");
    let first = e.add(&["mail", "--key", "order-42", "--in", "1h"]);
    let second = e.add(&["mail", "--key", "order-42", "--in", "1h"]);
    assert_eq!(first, second);
    let obj = e.json(&["queue:add", "mail", "--key", "order-42"]);
    assert_eq!(obj[0]["id"], first);
    assert_eq!(obj[0]["key"], "order-42");
    assert_eq!(e.json(&["queue:list"]).as_array().unwrap().len(), 1);
}

#[test]
fn delayed_runs_start_when_due() {
    let e = Env::new();
    e.job("later", "run: 'true'\n");
    let _d = e.daemon();
    let id = e.add(&["later", "--in", "2s"]);
    assert_eq!(e.state(id), "delayed");
    let list = e.json(&["queue:list"]);
    assert!(list[0]["reason"].as_str().unwrap().starts_with("due in"));
    let run = e.wait_state(id, &["succeeded"]);
    let created =
        chrono::DateTime::parse_from_rfc3339(run["created_at"].as_str().unwrap()).unwrap();
    let started =
        chrono::DateTime::parse_from_rfc3339(run["started_at"].as_str().unwrap()).unwrap();
    assert!(
        started - created >= chrono::Duration::milliseconds(2000),
        "started {started}, created {created}"
    );
    let at = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let id = e.add(&["later", "--at", &at]);
    assert_eq!(e.state(id), "delayed");
    assert_eq!(
        e.run(&["queue:add", "later", "--at", "tomorrow"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn kill_9_of_the_daemon_kills_its_jobs_and_a_restart_recovers_them() {
    let e = Env::new();
    let once_pid = e.path("once.pid");
    let again_pid = e.path("again.pid");
    let grandchild = e.path("grandchild.pid");
    let escaped = e.path("escaped.pid");
    e.job(
        "once",
        &format!(
            "run: echo $$ > {}; sleep 300 & echo $! > {}; setsid sleep 301 & echo $! > {}; wait\n",
            once_pid.display(),
            grandchild.display(),
            escaped.display()
        ),
    );
    e.job(
        "again",
        &format!(
            "run: if [ \"$WORKER_ATTEMPT\" = 1 ]; then echo $$ > {}; sleep 300; fi; echo recovered attempt $WORKER_ATTEMPT\nretry: {{ attempts: 2, initial: 100ms, jitter: false }}\n",
            again_pid.display()
        ),
    );
    e.file("scheduler.yaml", "concurrency: 4\n");
    let d = e.daemon();
    let once = e.add(&["once"]);
    let again = e.add(&["again"]);
    let (p1, p2, g) = (
        read_pid(&once_pid),
        read_pid(&again_pid),
        read_pid(&grandchild),
    );
    let esc = read_pid(&escaped);
    assert!(alive(p1) && alive(p2) && alive(g) && alive(esc));
    d.kill9();
    // The escapee left the job's process group (setsid): only the sentinel's sweep for the owner
    // token in its environment finds it.
    for (what, pid) in [
        ("once", p1),
        ("again", p2),
        ("the grandchild", g),
        ("the setsid escapee", esc),
    ] {
        wait_for(
            &format!("{what} (pid {pid}) to die with the daemon"),
            || (!alive(pid)).then_some(()),
        );
    }
    assert_eq!(e.state(once), "running", "nothing has recovered it yet");
    let _d = e.daemon();
    let r = e.wait_state(once, &["dead"]);
    assert_eq!(r["error"], "interrupted");
    let r = e.wait_state(again, &["succeeded"]);
    assert_eq!(r["attempt"], 2, "the lost attempt counts");
    assert_eq!(e.ok(&["logs", &again.to_string()]), "recovered attempt 2\n");
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let e = Env::new();
    let d = e.daemon();
    let out = e.run(&["daemon"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "another worker daemon (pid {}) is already running",
            d.pid()
        )),
        "{err}"
    );
}

#[test]
fn a_job_printing_200_mb_keeps_the_daemon_small_and_logs_return_the_tail() {
    let e = Env::new();
    e.job(
        "loud",
        "run: yes 'the same line again' | head -c 200000000; echo; echo END-OF-OUTPUT\n",
    );
    let d = e.daemon();
    let id = e.add(&["loud"]);
    e.wait_state(id, &["succeeded"]);
    let peak_kb = proc_status_kb(d.pid(), "VmHWM");
    assert!(
        peak_kb < 100 * 1024,
        "daemon peak RSS {peak_kb} kB: output must not be buffered"
    );
    let out = e.cmd().args(["logs", &id.to_string()]).output().unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout
            .ends_with(b"the same line again\n\nEND-OF-OUTPUT\n")
    );
    assert!(
        out.stdout.len() >= 1 << 20 && out.stdout.len() <= 2 << 20,
        "{} bytes",
        out.stdout.len()
    );
    assert!(
        stderr(&out).contains("dropped"),
        "logs says output was dropped"
    );
    let on_disk: u64 = fs::read_dir(e.data.join("logs"))
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        on_disk <= 2 << 20,
        "captured output on disk: {on_disk} bytes"
    );
    let attempts = &e.json(&["show", &id.to_string()])[0]["attempts"];
    assert_eq!(attempts[0]["output_bytes"], 200_000_000u64 + 15);
}

#[test]
fn invalid_utf8_output_is_kept_byte_for_byte() {
    let e = Env::new();
    e.job("binary", "run: printf 'ok \\377\\376 done\\n'\n");
    let out = e.run(&["job", "binary"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ok \xff\xfe done\n");
    let logs = e.cmd().args(["logs", "1"]).output().unwrap();
    assert_eq!(logs.stdout, b"ok \xff\xfe done\n");
    assert!(e.json(&["history"])[0]["state"] == "succeeded");
}

#[test]
fn logs_can_be_read_while_the_run_is_running_and_cancel_stops_it() {
    let e = Env::new();
    let pidfile = e.path("child.pid");
    e.job(
        "long",
        &format!(
            "run: echo first line; sleep 300 & echo $! > {}; wait\n",
            pidfile.display()
        ),
    );
    e.job("after", "run: 'true'\ndepends_on: [long]\n");
    let _d = e.daemon();
    let dependent = e.add(&["after"]);
    let long = dependent - 1;
    e.wait_state(long, &["running"]);
    let child = read_pid(&pidfile);
    wait_for("output while running", || {
        (e.ok(&["logs", &long.to_string()]) == "first line\n").then_some(())
    });
    let msg = e.ok(&["queue:cancel", &long.to_string()]);
    assert!(msg.contains("being stopped"), "{msg}");
    e.wait_state(long, &["cancelled"]);
    wait_for("the job's child to die", || (!alive(child)).then_some(()));
    let dep = e.wait_state(dependent, &["dead"]);
    assert_eq!(dep["error"], format!("dependency long run {long} failed"));
    assert_eq!(
        e.run(&["queue:cancel", &long.to_string()]).status.code(),
        Some(1),
        "already finished"
    );
    let queued = e.add(&["long", "--in", "1h"]);
    e.ok(&["queue:cancel", &queued.to_string()]);
    assert_eq!(e.state(queued), "cancelled");
}

#[test]
fn runs_enqueued_while_idle_start_promptly_and_many_at_once() {
    let e = Env::new();
    e.job("noop", "run: 'true'\nconcurrency: 4\n");
    e.file("scheduler.yaml", "concurrency: 4\n");
    let d = e.daemon();
    let id = e.add(&["noop"]);
    e.wait_state(id, &["succeeded"]);
    let out = e.ok(&["queue:add", "noop", "--count", "300"]);
    assert_eq!(out.lines().count(), 300);
    let last: i64 = out.lines().last().unwrap().parse().unwrap();
    e.wait_state(last, &["succeeded"]);
    wait_for("all 301 runs", || {
        let s = e.json(&["queue:stats"]);
        (s[0]["counts"]["succeeded"] == 301).then_some(())
    });
    let lines = (0..20)
        .map(|i| format!("{{\"job\":\"noop\",\"key\":\"k{}\"}}\n", i % 10))
        .collect::<String>();
    let out = e
        .cmd()
        .args(["queue:add", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(lines.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let ids: std::collections::BTreeSet<&str> =
        std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(ids.len(), 10, "20 lines, 10 distinct keys");
    drop(d);
}

#[test]
fn foreground_job_waits_for_a_slot_held_by_the_daemon() {
    let e = Env::new();
    let gate = e.path("gate");
    e.job(
        "single",
        &format!(
            "run: while [ ! -e {} ]; do sleep 0.1; done\nconcurrency: 1\n",
            gate.display()
        ),
    );
    let _d = e.daemon();
    let id = e.add(&["single"]);
    e.wait_state(id, &["running"]);
    let mut fg = e
        .cmd()
        .args(["job", "single"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut err = fg.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    std::thread::sleep(Duration::from_millis(1500));
    let queue = e.json(&["queue:list"]);
    let states: Vec<&str> = queue
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        vec!["running", "queued"],
        "the foreground run must not start while the slot is taken"
    );
    assert!(
        queue[1]["reason"].as_str().unwrap().contains("reserved"),
        "{}",
        queue[1]
    );
    fs::write(&gate, "").unwrap();
    let status = wait_for("worker job to finish", || fg.try_wait().unwrap());
    assert!(status.success());
    assert!(said.join().unwrap().contains("waiting for a free slot"));
}

#[test]
fn purge_and_stats() {
    let e = Env::new();
    e.job("ok", "run: 'true'\n");
    e.job("bad", "run: 'false'\n");
    e.ok(&["job", "ok"]);
    assert_eq!(e.run(&["job", "bad"]).status.code(), Some(1));
    let stats = e.json(&["queue:stats"]);
    let bad = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["job"] == "bad")
        .unwrap();
    assert_eq!(bad["success_rate"], 0.0);
    assert_eq!(
        e.run(&["queue:purge"]).status.code(),
        Some(2),
        "purge needs to be told what"
    );
    assert!(
        e.ok(&["queue:purge", "--dlq"])
            .contains("purged 1 dead run")
    );
    assert!(e.json(&["queue:dlq"]).as_array().unwrap().is_empty());
    assert_eq!(e.json(&["history"]).as_array().unwrap().len(), 1);
    assert!(
        e.ok(&["queue:purge", "--finished-before", "0s"])
            .contains("purged 1 finished run")
    );
    assert!(e.json(&["history"]).as_array().unwrap().is_empty());
}

#[test]
fn runs_of_a_job_the_daemon_has_not_loaded_wait_for_a_reload() {
    let e = Env::new();
    e.job("old", "run: 'true'\n");
    let d = e.daemon();
    e.job("new", "run: 'true'\n");
    let id = e.add(&["new"]);
    wait_for("the daemon to warn", || {
        d.log().contains("worker reload").then_some(())
    });
    assert_eq!(e.state(id), "queued", "never thrown away");
    d.signal(libc::SIGHUP);
    e.wait_state(id, &["succeeded"]);
}

#[test]
fn list_shows_jobs_and_says_when_there_are_none() {
    let e = Env::new();
    assert!(e.ok(&["list"]).contains("no jobs defined"));
    e.job(
        "report",
        "description: Nightly report\nrun: 'true'\npriority: high\n",
    );
    e.ok(&["job", "report"]);
    let out = e.ok(&["list"]);
    assert!(
        out.contains("report")
            && out.contains("Nightly report")
            && out.contains("high")
            && out.contains("succeeded"),
        "{out}"
    );
    let j = e.json(&["list"]);
    assert_eq!(j[0]["name"], "report");
    assert_eq!(j[0]["last_run"]["state"], "succeeded");
}

#[test]
fn the_example_configuration_shipped_in_the_repo_is_valid() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(bin())
        .args(["-c", repo, "validate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
