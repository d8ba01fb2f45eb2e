//! `/metrics` after a known sequence of runs: names, types, values; the same after a restart
//! and after the history is purged; `promtool check metrics` when promtool is installed.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::api::{Http, http_env, with_nightly};

/// The value of the sample `series` (name with labels, as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(h: &Http) -> String {
    let r = h.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    r.text
}

#[test]
fn metrics_count_what_happened_and_survive_restarts_and_purges() {
    let e = http_env();
    e.job("ok", "run: \"true\"\n");
    e.job(
        "bad",
        "run: exit 3\nretry: { attempts: 2, backoff: fixed, initial: 10ms, jitter: false }\n",
    );
    e.job(
        "flow",
        "steps:\n  - name: one\n    run: echo 1\n  - name: two\n    run: echo 2\n",
    );
    with_nightly(&e, "ok");
    let text = {
        let _d = e.daemon();
        let h = Http::of(&e);
        let ok: Vec<i64> = (0..2)
            .map(|_| {
                h.post("/api/v1/jobs/ok/runs", json!({})).json()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        let bad = h.post("/api/v1/jobs/bad/runs", json!({})).json()["id"]
            .as_i64()
            .unwrap();
        let flow = h.post("/api/v1/jobs/flow/runs", json!({})).json()["id"]
            .as_i64()
            .unwrap();
        for id in ok.iter().chain([&flow]) {
            e.wait_state(*id, &["succeeded"]);
        }
        e.wait_state(bad, &["dead"]);
        let text = scrape(&h);
        for (series, value) in [
            (r#"worker_runs_total{job="ok",state="succeeded"}"#, 2.0),
            (r#"worker_runs_total{job="bad",state="dead"}"#, 1.0),
            (r#"worker_runs_total{job="flow",state="succeeded"}"#, 1.0),
            (
                r#"worker_attempts_total{job="ok",outcome="succeeded"}"#,
                2.0,
            ),
            (r#"worker_attempts_total{job="bad",outcome="failed"}"#, 2.0),
            (
                r#"worker_steps_total{job="flow",step="one",state="succeeded"}"#,
                1.0,
            ),
            (
                r#"worker_steps_total{job="flow",step="two",state="succeeded"}"#,
                1.0,
            ),
            (r#"worker_run_duration_seconds_count{job="ok"}"#, 2.0),
            (
                r#"worker_run_duration_seconds_bucket{job="ok",le="+Inf"}"#,
                2.0,
            ),
            (r#"worker_queue_wait_seconds_count{job="bad"}"#, 1.0),
            (r#"worker_runs{state="succeeded"}"#, 3.0),
            (r#"worker_runs{state="dead"}"#, 1.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
        }
        for (name, kind) in [
            ("worker_runs_total", "counter"),
            ("worker_attempts_total", "counter"),
            ("worker_run_duration_seconds", "histogram"),
            ("worker_runs", "gauge"),
            ("worker_steps_total", "counter"),
            ("worker_fires_total", "counter"),
            ("worker_fire_lag_seconds", "histogram"),
            ("worker_schedule_next_fire_timestamp_seconds", "gauge"),
            ("worker_queue_wait_seconds", "histogram"),
            ("worker_alerts_total", "counter"),
            ("worker_build_info", "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} {kind}"
            );
        }
        let next = sample(
            &text,
            r#"worker_schedule_next_fire_timestamp_seconds{schedule="nightly"}"#,
        )
        .expect("next fire");
        assert!(next > 1.7e9, "{next}");
        assert!(text.contains("worker_build_info{version=\""));
        assert!(
            !text.contains(&format!("\"{bad}\"")),
            "no run id in a label"
        );
        text
    };
    promtool(&text);
    let counters = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| {
                l.starts_with("worker_runs_total")
                    || l.starts_with("worker_attempts_total")
                    || l.starts_with("worker_steps_total")
                    || l.starts_with("worker_run_duration_seconds")
            })
            .map(str::to_string)
            .collect()
    };
    // A restart starts from the store; purging the history keeps what it counted.
    e.ok(&["queue:purge", "--finished-before", "0s"]);
    assert_eq!(
        e.json(&["history"]).as_array().unwrap().len(),
        0,
        "history purged"
    );
    let _d = e.daemon();
    let h = Http::of(&e);
    let after = scrape(&h);
    assert_eq!(counters(&after), counters(&text));
    assert_eq!(
        sample(&after, r#"worker_runs{state="succeeded"}"#),
        None,
        "no such runs left"
    );
}

/// `promtool check metrics` on `text`, when promtool is installed (CI installs it).
fn promtool(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool is not installed: `promtool check metrics` skipped");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
