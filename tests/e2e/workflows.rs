//! Workflows (SPEC 8) driven through the binary: checkpoints that survive `kill -9`, durable
//! sleeps and signals across restarts, suspended runs that hold no slot, pinned definitions,
//! resuming with `queue:retry`, and values that never reach a shell or SQL text.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::peers::{Http, Smtp};

/// The lines of a marker file (one per execution of a step).
fn lines(p: &std::path::Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {run}"))
}

/// Waits until run `id`'s step `name` is in `state`.
fn wait_step(e: &Env, id: i64, name: &str, state: &str) -> Value {
    wait_for(&format!("step {name} of run {id} to be {state}"), || {
        let r = e.run_obj(id);
        (step(&r, name)["state"] == state).then_some(r)
    })
}

/// kill -9 of the daemon in the middle of step 3 of 4: steps 1–2 are not executed again, step 3
/// runs again as a new attempt, step 4 runs once, and the outputs of 1–2 reach 4.
#[test]
fn a_crash_in_step_3_of_4_resumes_at_step_3() {
    let e = Env::new();
    let m = e.path("marks");
    let pid = e.path("three.pid");
    e.job(
        "four",
        &format!(
            r#"retry: {{ attempts: 2, initial: 100ms, jitter: false }}
steps:
  - name: one
    run: echo one >> {m}; echo "a=from-one" >> "$WORKER_OUTPUT"
  - name: two
    run: |
      echo two >> {m}; echo '{{"b": 2}}' > "$WORKER_OUTPUT"
  - name: three
    run: |
      echo "three $WORKER_ATTEMPT" >> {m}
      if [ "$WORKER_ATTEMPT" = 1 ]; then echo $$ > {pid}; sleep 300; fi
  - name: four
    run: echo "four $A $B" >> {m}
    env: {{ A: "{{{{ steps.one.outputs.a }}}}", B: "{{{{ steps.two.outputs.b }}}}" }}
"#,
            m = m.display(),
            pid = pid.display()
        ),
    );
    let d = e.daemon();
    let id = e.add(&["four"]);
    let three = read_pid(&pid);
    wait_step(&e, id, "three", "running");
    d.kill9();
    wait_for("step three's process to die with the daemon", || {
        (!alive(three)).then_some(())
    });
    let _d = e.daemon();
    let r = e.wait_state(id, &["succeeded", "dead"]);
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["attempt"], 2);
    assert_eq!(
        lines(&m),
        ["one", "two", "three 1", "three 2", "four from-one 2"]
    );
    assert_eq!(step(&r, "one")["attempts"], 1);
    assert_eq!(step(&r, "three")["attempts"], 2);
    assert_eq!(step(&r, "one")["outputs"], json!({"a": "from-one"}));
}

#[test]
fn workflow_runs_beyond_the_concurrency_limit_all_run() {
    // A workflow run that ends frees its slot for the next queued one, though no process
    // ended and nothing was enqueued meanwhile.
    let e = Env::new();
    e.file("scheduler.yaml", "concurrency: 1\n");
    e.job("nap", "steps:\n  - name: nap\n    sleep: 50ms\n");
    let ids: Vec<i64> = (0..4).map(|_| e.add(&["nap"])).collect();
    let _d = e.daemon();
    for id in ids {
        e.wait_state(id, &["succeeded"]);
    }
}

#[test]
fn a_workflow_run_that_ends_without_a_process_hands_its_slot_on_in_the_same_turn() {
    // The turn that records the `http` step's end, and so ends the run, claims the next queued
    // run into the freed slot: started at the very instant the previous one finished, without a
    // turn of its own in between.
    let http = Http::start();
    http.rt.block_on(
        wiremock::Mock::given(wiremock::matchers::method("GET"))
            .respond_with(wiremock::ResponseTemplate::new(200))
            .mount(&http.server),
    );
    let e = Env::new();
    e.file("scheduler.yaml", "concurrency: 1\n");
    e.job(
        "get",
        &format!(
            "steps:\n  - name: get\n    http: {{ method: GET, url: \"{}\" }}\n",
            http.url("/ping")
        ),
    );
    let ids: Vec<i64> = (0..4).map(|_| e.add(&["get"])).collect();
    let _d = e.daemon();
    let runs: Vec<Value> = ids
        .iter()
        .map(|&id| e.wait_state(id, &["succeeded", "dead"]))
        .collect();
    for r in &runs {
        assert_eq!(r["state"], "succeeded", "{r}");
    }
    for pair in runs.windows(2) {
        assert_eq!(
            pair[1]["started_at"], pair[0]["finished_at"],
            "run {} started in the turn that ended run {}",
            pair[1]["id"], pair[0]["id"]
        );
    }
}

/// A daemon restarted in the middle of a 3 s sleep wakes the run at the right time: not
/// earlier, not twice.
#[test]
fn a_durable_sleep_survives_a_restart_and_wakes_once_on_time() {
    let e = Env::new();
    let m = e.path("woke");
    e.job(
        "nap",
        &format!(
            "steps:\n  - name: nap\n    sleep: 3s\n  - name: after\n    run: date +%s%3N >> {}\n",
            m.display()
        ),
    );
    let d = e.daemon();
    let t0 = chrono::Utc::now().timestamp_millis();
    let id = e.add(&["nap"]);
    let r = e.wait_state(id, &["suspended"]);
    assert!(r["due_at"].as_str().is_some());
    let (status, _) = d.stop();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    let _d = e.daemon();
    e.wait_state(id, &["succeeded"]);
    let woke = lines(&m);
    assert_eq!(woke.len(), 1, "once: {woke:?}");
    let at: i64 = woke[0].parse().unwrap();
    assert!(at - t0 >= 3000, "not earlier: {} ms after enqueue", at - t0);
}

#[test]
fn signals_before_and_after_the_wait_fail_and_timeout() {
    let e = Env::new();
    e.job(
        "approval",
        r#"steps:
  - name: ask
    wait_for: { signal: approve, timeout: 3s }
  - name: act
    run: echo "approved by $WHO"
    env: { WHO: "{{ steps.ask.outputs.data.by }}" }
"#,
    );
    let _d = e.daemon();
    // After: the run is suspended until the signal comes.
    let id = e.add(&["approval"]);
    e.wait_state(id, &["suspended"]);
    let listed = e.ok(&["queue:list"]);
    assert!(listed.contains("ask waits for signal approve"), "{listed}");
    let out = e.ok(&[
        "signal",
        &id.to_string(),
        "approve",
        "--data",
        r#"{"by": "ops"}"#,
    ]);
    assert!(out.contains("delivered"), "{out}");
    e.wait_state(id, &["succeeded"]);
    assert_eq!(
        e.ok(&["logs", &id.to_string(), "--step", "act"]),
        "approved by ops\n"
    );

    // Before: enqueued later, the signal is kept until the step consumes it.
    let id = e.add(&["approval", "--in", "1h"]);
    let out = e.ok(&[
        "signal",
        &id.to_string(),
        "approve",
        "--data",
        r#"{"by": "early"}"#,
    ]);
    assert!(out.contains("kept"), "{out}");
    let r = e.run_obj(id);
    assert_eq!(r["state"], "delayed");
    e.ok(&["queue:cancel", &id.to_string()]);

    // --fail, and a timeout.
    let id = e.add(&["approval"]);
    e.wait_state(id, &["suspended"]);
    e.ok(&["signal", &id.to_string(), "approve", "--fail", "not today"]);
    let r = e.wait_state(id, &["dead"]);
    assert_eq!(r["error"], "step ask failed: not today");
    let id = e.add(&["approval"]);
    let r = e.wait_state(id, &["dead"]);
    assert_eq!(
        r["error"],
        "step ask failed: timed out waiting for signal approve"
    );

    // To an ended run, or one that does not exist: exit 1.
    assert_eq!(
        e.run(&["signal", &id.to_string(), "approve"]).status.code(),
        Some(1)
    );
    assert_eq!(e.run(&["signal", "9999", "approve"]).status.code(), Some(1));
}

/// A `concurrency: 1` job with a suspended run still starts another run.
#[test]
fn a_suspended_run_holds_no_slot() {
    let e = Env::new();
    e.job(
        "gate",
        "concurrency: 1\nsteps:\n  - name: wait\n    wait_for: { signal: go }\n  - name: done\n    run: echo done\n",
    );
    let _d = e.daemon();
    let first = e.add(&["gate"]);
    e.wait_state(first, &["suspended"]);
    let second = e.add(&["gate"]);
    e.wait_state(second, &["suspended"]);
    e.ok(&["signal", &second.to_string(), "go"]);
    e.wait_state(second, &["succeeded"]);
    assert_eq!(e.state(first), "suspended");
}

/// A run keeps the steps it was created with: a reload that changes the job changes only runs
/// created after it.
#[test]
fn a_reload_never_changes_the_graph_of_a_run_in_flight() {
    let e = Env::new();
    let m = e.path("marks");
    let job = |last: &str| {
        format!(
            "steps:\n  - name: wait\n    wait_for: {{ signal: go }}\n  - name: {last}\n    run: echo {last} >> {}\n",
            m.display()
        )
    };
    e.job("pinned", &job("old_step"));
    let _d = e.daemon();
    let id = e.add(&["pinned"]);
    e.wait_state(id, &["suspended"]);
    e.job("pinned", &job("new_step"));
    e.ok(&["reload"]);
    e.ok(&["signal", &id.to_string(), "go"]);
    e.wait_state(id, &["succeeded"]);
    let fresh = e.add(&["pinned"]);
    e.wait_state(fresh, &["suspended"]);
    e.ok(&["signal", &fresh.to_string(), "go"]);
    e.wait_state(fresh, &["succeeded"]);
    assert_eq!(lines(&m), ["old_step", "new_step"]);
}

/// `queue:retry` of a dead workflow run re-runs only what did not succeed; `--from-step` re-runs
/// a step and everything downstream of it, reusing the other outputs.
#[test]
fn queue_retry_resumes_and_from_step_reruns_downstream() {
    let e = Env::new();
    let m = e.path("marks");
    let fail = e.path("fail");
    fs::write(&fail, "").unwrap();
    e.job(
        "etl",
        &format!(
            r#"steps:
  - name: extract
    run: echo extract >> {m}; echo "rows=3" >> "$WORKER_OUTPUT"
  - name: transform
    run: echo transform >> {m}; test ! -e {fail}
  - name: load
    run: echo "load $ROWS" >> {m}
    env: {{ ROWS: "{{{{ steps.extract.outputs.rows }}}}" }}
"#,
            m = m.display(),
            fail = fail.display()
        ),
    );
    let out = e.run(&["job", "etl"]);
    assert_eq!(out.status.code(), Some(1));
    let dead = e.json(&["queue:dlq"])[0]["id"].as_i64().unwrap();
    assert_eq!(
        e.run_obj(dead)["error"],
        "step transform failed: exit code 1"
    );
    fs::remove_file(&fail).unwrap();
    let retried: i64 = e
        .ok(&["queue:retry", &dead.to_string()])
        .trim()
        .parse()
        .unwrap();
    let _d = e.daemon();
    let r = e.wait_state(retried, &["succeeded", "dead"]);
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(step(&r, "extract")["reused_from"], dead);
    assert_eq!(lines(&m), ["extract", "transform", "transform", "load 3"]);

    // --from-step on the finished run: transform and load again, extract reused.
    let again: i64 = e
        .ok(&[
            "queue:retry",
            &retried.to_string(),
            "--from-step",
            "transform",
        ])
        .trim()
        .parse()
        .unwrap();
    e.wait_state(again, &["succeeded"]);
    assert_eq!(
        lines(&m),
        [
            "extract",
            "transform",
            "transform",
            "load 3",
            "transform",
            "load 3"
        ]
    );
    let out = e.run(&["queue:retry", &again.to_string(), "--from-step", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no step `nope`"), "{}", stderr(&out));
}

/// Input values reach a process only through its environment: quotes, `;` and `$(…)` are
/// data, never shell text.
#[test]
fn input_never_reaches_a_shell_as_text() {
    let e = Env::new();
    let pwned = e.path("pwned");
    e.job(
        "greet",
        &format!(
            r#"input:
  name: {{ required: true }}
steps:
  - name: hello
    run: printf '%s\n' "$NAME" "$WORKER_INPUT"; test ! -e {}
    env: {{ NAME: "{{{{ input.name }}}}" }}
"#,
            pwned.display()
        ),
    );
    let evil = format!(
        "'; rm -rf / # $(touch {}) `touch {}`",
        pwned.display(),
        pwned.display()
    );
    let input = json!({ "name": evil }).to_string();
    let out = e.run(&["job", "greet", "--input", &input]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!pwned.exists());
    let printed = stdout(&out);
    assert!(printed.starts_with(&format!("{evil}\n")), "{printed}");
    assert!(printed.contains(&input), "{printed}");
    // Missing required input, unknown fields: usage errors, nothing enqueued.
    let out = e.run(&["queue:add", "greet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing required input field `name`"));
    let out = e.run(&[
        "queue:add",
        "greet",
        "--input",
        r#"{"name": "x", "extra": 1}"#,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(e.json(&["queue:list"]), json!([]));
}

#[test]
fn cancelling_a_workflow_stops_its_steps_and_cancels_the_rest() {
    let e = Env::new();
    let pid = e.path("pid");
    e.job(
        "long",
        &format!(
            "steps:\n  - name: slow\n    run: echo $$ > {}; sleep 300\n  - name: never\n    run: echo never\n",
            pid.display()
        ),
    );
    let _d = e.daemon();
    let id = e.add(&["long"]);
    let p = read_pid(&pid);
    e.ok(&["queue:cancel", &id.to_string()]);
    let r = e.wait_state(id, &["cancelled"]);
    assert_eq!(step(&r, "slow")["state"], "cancelled");
    assert_eq!(step(&r, "never")["state"], "cancelled");
    wait_for("the step's process to be stopped", || {
        (!alive(p)).then_some(())
    });
}

/// `notify` steps go through the outbox: one delivery per (run, step), even when the run is
/// retried; e-mail gets the step's recipients and subject.
#[test]
fn notify_is_delivered_once_per_run_and_step() {
    let e = Env::new();
    let http = Http::start();
    http.ok("/hook");
    let smtp = Smtp::start(None);
    e.set_env("HOOK", &http.url("/hook"));
    e.file(
        "alerts.yaml",
        &format!(
            r#"channels:
  chat: {{ type: slack, webhook_url: "${{HOOK}}" }}
  mail: {{ type: email, smtp_url: "smtp://127.0.0.1:{}", from: "w@example.com", to: [ops@example.com] }}
"#,
            smtp.port
        ),
    );
    let gate = e.path("gate");
    e.job(
        "welcome",
        &format!(
            r#"input:
  email: {{ required: true }}
retry: {{ attempts: 2, initial: 100ms }}
steps:
  - name: tell
    notify: {{ channel: chat, text: "new user {{{{ input.email }}}}" }}
  - name: mail
    notify: {{ channel: mail, to: ["{{{{ input.email }}}}"], subject: "Welcome", text: "Hello {{{{ input.email }}}}" }}
  - name: flaky
    run: test -e {gate} || {{ touch {gate}; exit 1; }}
"#,
            gate = gate.display()
        ),
    );
    let _d = e.daemon();
    let id = e.add(&["welcome", "--input", r#"{"email": "ann@example.com"}"#]);
    let r = e.wait_state(id, &["succeeded", "dead"]);
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["attempt"], 2, "flaky failed once: the run was retried");
    let bodies = http.bodies("/hook");
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["text"], "new user ann@example.com");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["ann@example.com"]);
    assert_eq!(mails[0].header("Subject").as_deref(), Some("Welcome"));
    assert!(mails[0].body().contains("Hello ann@example.com"));
    assert_eq!(step(&r, "tell")["outputs"]["status"], "sent");
}

/// `step_failed` names the step, also for a step allowed to fail.
#[test]
fn step_failed_is_alerted_with_the_step() {
    let e = Env::new();
    let http = Http::start();
    http.ok("/hook");
    e.set_env("HOOK", &http.url("/hook"));
    e.file(
        "alerts.yaml",
        "channels:\n  chat: { type: slack, webhook_url: \"${HOOK}\" }\nrules:\n  - name: steps\n    events: [step_failed]\n    channels: [chat]\n",
    );
    e.job(
        "soft",
        "steps:\n  - name: optional\n    run: exit 7\n    allow_failure: true\n  - name: main\n    run: 'true'\n",
    );
    let _d = e.daemon();
    let id = e.add(&["soft"]);
    e.wait_state(id, &["succeeded"]);
    let start = Instant::now();
    let bodies = loop {
        let b = http.bodies("/hook");
        if !b.is_empty() || start.elapsed() > PATIENCE {
            break b;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(bodies.len(), 1);
    let text = bodies[0].to_string();
    assert!(text.contains("step optional failed"), "{text}");
    assert!(text.contains("allow_failure"), "{text}");
}

#[test]
fn show_and_logs_of_a_workflow_run() {
    let e = Env::new();
    e.job(
        "pair",
        "steps:\n  - name: left\n    run: echo from-left\n    needs: []\n  - name: right\n    run: echo from-right\n    needs: []\n  - name: join\n    run: echo joined\n    needs: [left, right]\n",
    );
    let out = e.run(&["job", "pair"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = e.json(&["history"])[0]["id"].as_i64().unwrap();
    let shown = e.ok(&["show", &id.to_string()]);
    for s in ["left", "right", "join"] {
        assert!(
            shown.contains(&format!(" {s} ")) || shown.contains(&format!("\n {s}")),
            "{shown}"
        );
    }
    assert!(
        shown.contains("STEP") && shown.contains("succeeded"),
        "{shown}"
    );
    assert_eq!(
        e.ok(&["logs", &id.to_string(), "--step", "join"]),
        "joined\n"
    );
    let all = e.run(&["logs", &id.to_string()]);
    assert_eq!(stdout(&all), "from-left\nfrom-right\njoined\n");
    assert!(
        stderr(&all).contains("[worker: step right]"),
        "{}",
        stderr(&all)
    );
    let followed = e.run(&["logs", &id.to_string(), "-f"]);
    assert!(followed.status.success());
    assert_eq!(stdout(&followed), "from-left\nfrom-right\njoined\n");
    let out = e.run(&["logs", &id.to_string(), "--step", "jion"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("did you mean `join`"),
        "{}",
        stderr(&out)
    );
    let j = e.run_obj(id);
    let names: Vec<&str> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["left", "right", "join"]);
    for s in j["steps"].as_array().unwrap() {
        for k in [
            "kind",
            "state",
            "attempts",
            "started_at",
            "finished_at",
            "error",
            "outputs",
        ] {
            assert!(s.get(k).is_some(), "{k} missing in {s}");
        }
    }
    // Purging the run removes its steps' output too.
    let logs = |e: &Env| fs::read_dir(e.data.join("logs")).unwrap().count();
    assert_eq!(logs(&e), 3);
    e.ok(&["queue:purge", "--finished-before", "0s"]);
    assert_eq!(logs(&e), 0);
}

/// `http` steps against a real local server: method, headers, a JSON body from the input, the
/// response parsed into outputs for the next step, `expect`, and an `Idempotency-Key` that stays
/// the same when the step is retried.
#[test]
fn http_steps_send_templated_requests_and_keep_their_idempotency_key() {
    use wiremock::ResponseTemplate;
    let e = Env::new();
    let http = Http::start();
    // The first charge fails (503), the retry succeeds.
    http.respond("/charges", ResponseTemplate::new(503), Some(1), 1);
    http.respond(
        "/charges",
        ResponseTemplate::new(201).set_body_json(json!({"id": "ch_1", "amount": 42})),
        None,
        5,
    );
    e.set_env("BILLING", &http.url(""));
    e.set_env("BILLING_TOKEN", "tok-secret-123456");
    e.job(
        "checkout",
        r#"input:
  user: { required: true }
  amount: { default: 42 }
steps:
  - name: charge
    http:
      method: POST
      url: "${BILLING}/charges"
      headers: { Authorization: "Bearer ${BILLING_TOKEN}" }
      json: { user: "{{ input.user }}", amount: "{{ input.amount }}" }
      expect: [201]
    retry: { attempts: 2, initial: 100ms, jitter: false }
  - name: receipt
    run: echo "charged $CHARGE $STATUS"
    env: { CHARGE: "{{ steps.charge.outputs.body.id }}", STATUS: "{{ steps.charge.outputs.status }}" }
"#,
    );
    let _d = e.daemon();
    let id = e.add(&["checkout", "--input", r#"{"user": "u1"}"#]);
    let r = e.wait_state(id, &["succeeded", "dead"]);
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(step(&r, "charge")["attempts"], 2);
    assert_eq!(
        e.ok(&["logs", &id.to_string(), "--step", "receipt"]),
        "charged ch_1 201\n"
    );
    let reqs = http.rt.block_on(http.server.received_requests()).unwrap();
    let charges: Vec<_> = reqs.iter().filter(|r| r.url.path() == "/charges").collect();
    assert_eq!(charges.len(), 2);
    let keys: Vec<String> = charges
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        keys,
        [format!("worker-{id}-charge"), format!("worker-{id}-charge")]
    );
    let body: Value = serde_json::from_slice(&charges[1].body).unwrap();
    assert_eq!(
        body,
        json!({"user": "u1", "amount": 42}),
        "numbers stay numbers"
    );
    assert_eq!(
        charges[1]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        "Bearer tok-secret-123456"
    );
    // A status outside `expect` fails with what came back; the token never shows.
    http.respond(
        "/refunds",
        ResponseTemplate::new(409).set_body_string("already refunded"),
        None,
        1,
    );
    e.job(
        "refund",
        "steps:\n  - name: refund\n    http: { method: POST, url: \"${BILLING}/refunds\", headers: { Authorization: \"Bearer ${BILLING_TOKEN}\" } }\n",
    );
    e.ok(&["reload"]);
    let id = e.add(&["refund"]);
    let r = e.wait_state(id, &["dead"]);
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 409") && error.contains("already refunded"),
        "{error}"
    );
    assert!(!r.to_string().contains("tok-secret-123456"), "{r}");
}

/// Whether a database answers on 127.0.0.1:`port` (else the test says it is skipped).
fn reachable(port: u16, what: &str) -> bool {
    let ok = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok();
    if !ok {
        println!("skipped: no {what} on 127.0.0.1:{port}");
    }
    ok
}

/// `sql` steps on SQLite always, PostgreSQL and MariaDB when the machine runs them: values are
/// bound parameters, never SQL text; rows come back as outputs for the next step.
#[test]
fn sql_steps_bind_values_and_return_rows() {
    let e = Env::new();
    let pwned = e.path("pwned");
    let db = e.path("app.db");
    fs::write(&db, "").unwrap();
    let table = format!("wk_users_{}", std::process::id());
    let mut urls = vec![(
        format!("sqlite://{}", db.display()),
        "?",
        "INTEGER PRIMARY KEY",
    )];
    if reachable(5432, "PostgreSQL") {
        urls.push((
            "postgres://postgres@127.0.0.1:5432/test".into(),
            "$",
            "SERIAL PRIMARY KEY",
        ));
    }
    if reachable(3306, "MariaDB") {
        urls.push((
            "mysql://root@127.0.0.1:3306/test".into(),
            "?",
            "INTEGER AUTO_INCREMENT PRIMARY KEY",
        ));
    }
    let evil = format!(
        "O'Brien'); DROP TABLE {table}; -- $(touch {})",
        pwned.display()
    );
    for (n, (url, style, key)) in urls.iter().enumerate() {
        let p = |i: usize| {
            if *style == "$" {
                format!("${i}")
            } else {
                "?".into()
            }
        };
        let job = format!("sql{n}");
        e.job(
            &job,
            &format!(
                r#"input:
  name: {{ required: true }}
steps:
  - name: create
    sql: {{ url: "{url}", query: "CREATE TABLE IF NOT EXISTS {table} (id {key}, name TEXT, n INTEGER)" }}
  - name: insert
    sql: {{ url: "{url}", query: "INSERT INTO {table} (name, n) VALUES ({p1}, {p2})", params: ["{{{{ input.name }}}}", 7] }}
  - name: select
    sql: {{ url: "{url}", query: "SELECT name, n FROM {table} WHERE n = {p1}", params: [7] }}
  - name: show
    run: printf '%s|%s|%s\n' "$NAME" "$N" "$COUNT"
    env: {{ NAME: "{{{{ steps.select.outputs.rows[0].name }}}}", N: "{{{{ steps.select.outputs.rows[0].n }}}}", COUNT: "{{{{ steps.insert.outputs.row_count }}}}" }}
  - name: drop
    sql: {{ url: "{url}", query: "DROP TABLE {table}" }}
"#,
                p1 = p(1),
                p2 = p(2)
            ),
        );
        let input = json!({ "name": evil }).to_string();
        let out = e.run(&["job", &job, "--input", &input]);
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("{evil}|7|1\n")),
            "{url}: {}",
            stdout(&out)
        );
        assert!(!pwned.exists());
    }
}

/// The workflow shipped in `jobs/` runs on a fresh copy of the repository's configuration.
#[test]
fn the_example_workflow_runs_with_worker_job() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let e = Env::new();
    for f in ["scheduler.yaml", "alerts.yaml"] {
        fs::copy(repo.join(f), e.config.join(f)).unwrap();
    }
    for entry in fs::read_dir(repo.join("jobs")).unwrap() {
        let p = entry.unwrap().path();
        fs::copy(&p, e.config.join("jobs").join(p.file_name().unwrap())).unwrap();
    }
    let out = e.run(&[
        "job",
        "onboard",
        "--input",
        r#"{"user_id": 42, "plan": "pro"}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("receipt for User 42 <user42@example.com> on the pro plan"),
        "{}",
        stdout(&out)
    );
    let id = e.json(&["history"])[0]["id"].as_i64().unwrap();
    let r = e.run_obj(id);
    let states: Vec<(String, String)> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("fetch_user", "succeeded"),
        ("charge", "skipped"),
        ("prepare_db", "succeeded"),
        ("create_table", "succeeded"),
        ("record", "succeeded"),
        ("receipt", "succeeded"),
        ("later", "succeeded"),
        ("approve", "skipped"),
        ("follow_up", "succeeded"),
    ];
    assert_eq!(
        states,
        expect.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
    );
    assert_eq!(step(&r, "record")["outputs"]["row_count"], 1);
}

/// A `worker job` killed while its workflow run sleeps: the run was reserved for it; the daemon
/// takes it over once the foreground process is gone, and finishes it when it is due.
#[test]
fn a_suspended_run_of_a_dead_worker_job_is_taken_over() {
    let e = Env::new();
    let m = e.path("marks");
    e.job(
        "later",
        &format!(
            "steps:\n  - name: nap\n    sleep: 2s\n  - name: after\n    run: echo after >> {}\n",
            m.display()
        ),
    );
    let mut fg = e
        .cmd()
        .args(["job", "later"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_for("the run to exist", || {
        e.json(&["queue:list"])
            .as_array()
            .unwrap()
            .first()
            .and_then(|r| r["id"].as_i64())
    });
    let r = e.wait_state(id, &["suspended"]);
    assert!(r["steps"][0]["state"] == "suspended");
    fg.kill().unwrap();
    fg.wait().unwrap();
    let _d = e.daemon_with(|c| {
        c.env("WORKER_HOUSEKEEPING", "200ms");
    });
    e.wait_state(id, &["succeeded"]);
    assert_eq!(lines(&m), ["after"]);
}
