//! Alerts against real peers on 127.0.0.1: Slack and Discord webhooks (HTTP), e-mail (SMTP).

use std::time::Duration;

use serde_json::Value;
use wiremock::ResponseTemplate;

use crate::common::*;
use crate::peers::{Http, Smtp};

const SLACK_TOKEN: &str = "T0SECRET/B0SECRET/xoxbSuperSecretToken";
const DISCORD_TOKEN: &str = "1234/discordSecretToken";
const SMTP_PASSWORD: &str = "hunter2-smtp-secret";

/// Channels for all three kinds and a rule for `events`, with the secrets in the environment.
fn setup(e: &Env, http: &Http, smtp: &Smtp, events: &str, extra: &str) {
    e.set_env(
        "SLACK_WEBHOOK_URL",
        &http.url(&format!("/slack/{SLACK_TOKEN}")),
    );
    e.set_env(
        "DISCORD_WEBHOOK_URL",
        &http.url(&format!("/discord/{DISCORD_TOKEN}")),
    );
    e.set_env("SMTP_PASSWORD", SMTP_PASSWORD);
    e.file(
        "alerts.yaml",
        &format!(
            r#"channels:
  ops-slack:   {{ type: slack,   webhook_url: "${{SLACK_WEBHOOK_URL}}" }}
  ops-discord: {{ type: discord, webhook_url: "${{DISCORD_WEBHOOK_URL}}" }}
  ops-email:   {{ type: email,   smtp_url: "smtp://alerts:${{SMTP_PASSWORD}}@127.0.0.1:{port}",
                 from: "worker@example.com", to: [ops@example.com] }}
rules:
  - name: failures
    events: [{events}]
    channels: [ops-slack, ops-discord, ops-email]
{extra}
"#,
            port = smtp.port
        ),
    );
}

fn slack_path() -> String {
    format!("/slack/{SLACK_TOKEN}")
}

fn discord_path() -> String {
    format!("/discord/{DISCORD_TOKEN}")
}

fn history(e: &Env) -> Vec<Value> {
    e.json(&["alert:history", "--limit", "1000"])
        .as_array()
        .unwrap()
        .clone()
}

fn no_secrets(what: &str, text: &str) {
    for s in [
        SLACK_TOKEN,
        "xoxbSuperSecretToken",
        DISCORD_TOKEN,
        "discordSecretToken",
        SMTP_PASSWORD,
    ] {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
    }
}

#[test]
fn a_dead_run_reaches_slack_discord_and_email() {
    let (http, smtp, e) = (Http::start(), Smtp::start(Some(SMTP_PASSWORD)), Env::new());
    http.ok(&slack_path());
    http.ok(&discord_path());
    setup(&e, &http, &smtp, "dead", "");
    e.job(
        "broken",
        &format!("run: echo first line; echo the token is {SLACK_TOKEN}; echo last line; exit 3\n"),
    );
    // No daemon: `worker job` delivers its alerts before it exits.
    let out = e.run(&["job", "broken"]);
    assert_eq!(out.status.code(), Some(1));

    let slack = http.bodies(&slack_path());
    assert_eq!(slack.len(), 1, "{slack:?}");
    let text = slack[0]["text"].as_str().unwrap();
    assert!(text.starts_with("[worker] dead broken"), "{text}");
    let blocks = slack[0]["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let facts = serde_json::to_string(&blocks[1]["fields"]).unwrap();
    assert!(
        facts.contains("*Exit code*\\n3")
            && facts.contains("*Attempt*\\n1/1")
            && facts.contains("*Host*"),
        "{facts}"
    );
    let output = blocks[2]["text"]["text"].as_str().unwrap();
    assert!(
        output.contains("first line") && output.contains("last line") && output.contains("***"),
        "{output}"
    );
    no_secrets("the Slack payload", &slack[0].to_string());

    let discord = http.bodies(&discord_path());
    assert_eq!(discord.len(), 1);
    let embed = &discord[0]["embeds"][0];
    assert!(
        embed["title"]
            .as_str()
            .unwrap()
            .contains("broken run 1 is dead"),
        "{embed}"
    );
    assert!(embed["color"].is_number());
    let names: Vec<&str> = embed["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for want in [
        "Event",
        "Job",
        "Run",
        "Attempt",
        "Exit code",
        "Reason",
        "Duration",
        "Host",
        "Time",
    ] {
        assert!(names.contains(&want), "missing {want} in {names:?}");
    }
    assert!(embed["description"].as_str().unwrap().contains("last line"));
    no_secrets("the Discord payload", &discord[0].to_string());

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(
        m.auth,
        Some(("alerts".into(), SMTP_PASSWORD.into())),
        "SMTP AUTH with the URL's credentials"
    );
    assert!(
        m.header("Subject")
            .unwrap()
            .starts_with("[worker] dead broken"),
        "{:?}",
        m.header("Subject")
    );
    assert_eq!(m.header("From").unwrap(), "worker@example.com");
    assert_eq!(m.header("To").unwrap(), "ops@example.com");
    let body = m.body();
    assert!(
        body.contains("Exit code") && body.contains("first line") && body.contains("Last output"),
        "{body}"
    );
    no_secrets("the e-mail", &m.data);

    let h = history(&e);
    assert_eq!(h.len(), 3);
    assert!(
        h.iter().all(|a| a["status"] == "sent"
            && a["event"] == "dead"
            && a["job"] == "broken"
            && a["attempts"] == 1),
        "{h:?}"
    );
}

#[test]
fn throttled_alerts_are_suppressed_then_summarised() {
    let (http, smtp, e) = (Http::start(), Smtp::start(None), Env::new());
    http.ok(&slack_path());
    http.ok(&discord_path());
    e.set_env("SLACK_WEBHOOK_URL", &http.url(&slack_path()));
    e.file(
        "alerts.yaml",
        "channels:\n  s: { type: slack, webhook_url: \"${SLACK_WEBHOOK_URL}\" }\nrules:\n  - { name: r, events: [dead], channels: [s], throttle: 3s }\n",
    );
    e.job("broken", "run: exit 1\nconcurrency: 5\n");
    let _d = e.daemon();
    let _ = smtp;
    e.ok(&["queue:add", "broken", "--count", "3"]);
    let summary = wait_for("the summary", || {
        http.bodies(&slack_path())
            .into_iter()
            .find(|b| b["text"].as_str().unwrap_or("").contains("summary"))
    });
    let text = summary.to_string();
    assert!(
        text.contains("2 alerts suppressed by rule r (throttle 3s): 2× dead"),
        "{text}"
    );
    assert_eq!(
        http.bodies(&slack_path()).len(),
        2,
        "one alert, then one summary"
    );
    let h = history(&e);
    let statuses: Vec<(&str, &str)> = h
        .iter()
        .rev()
        .map(|a| (a["event"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("dead", "sent"),
            ("dead", "suppressed"),
            ("dead", "suppressed"),
            ("summary", "sent")
        ]
    );
}

#[test]
fn a_429_is_retried_after_its_retry_after() {
    let (http, e) = (Http::start(), Env::new());
    let p = slack_path();
    http.respond(
        &p,
        ResponseTemplate::new(429).insert_header("Retry-After", "1"),
        Some(1),
        1,
    );
    http.ok(&p);
    e.set_env("SLACK_WEBHOOK_URL", &http.url(&p));
    // Backoff alone would wait 60s: only honouring Retry-After delivers within the test.
    e.file(
        "alerts.yaml",
        "channels:\n  s: { type: slack, webhook_url: \"${SLACK_WEBHOOK_URL}\" }\nrules:\n  - { name: r, events: [dead], channels: [s] }\ndelivery: { initial: 60s }\n",
    );
    e.job("broken", "run: exit 1\n");
    let _d = e.daemon();
    e.add(&["broken"]);
    let sent = wait_for("the alert to be sent", || {
        history(&e).into_iter().find(|a| a["status"] == "sent")
    });
    assert_eq!(sent["attempts"], 2);
    assert_eq!(http.bodies(&p).len(), 2);
}

#[test]
fn an_endpoint_that_is_down_ends_failed_after_its_retries() {
    let e = Env::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    e.set_env(
        "SLACK_WEBHOOK_URL",
        &format!("http://127.0.0.1:{port}/slack/{SLACK_TOKEN}"),
    );
    e.file(
        "alerts.yaml",
        "channels:\n  s: { type: slack, webhook_url: \"${SLACK_WEBHOOK_URL}\" }\nrules:\n  - { name: r, events: [dead], channels: [s] }\ndelivery: { attempts: 3, initial: 200ms }\n",
    );
    e.job("broken", "run: exit 1\n");
    let d = e.daemon();
    e.add(&["broken"]);
    let failed = wait_for("the alert to fail", || {
        history(&e).into_iter().find(|a| a["status"] == "failed")
    });
    assert_eq!(failed["attempts"], 3);
    let err = failed["error"].as_str().unwrap();
    assert!(
        err.contains("error sending request") || err.contains("onnect"),
        "{err}"
    );
    no_secrets("the error", err);
    no_secrets("the daemon log", &d.log());
}

#[test]
fn pending_alerts_are_delivered_after_a_restart() {
    let (http, e) = (Http::start(), Env::new());
    let p = slack_path();
    http.respond(&p, ResponseTemplate::new(503), None, 5);
    e.set_env("SLACK_WEBHOOK_URL", &http.url(&p));
    e.file(
        "alerts.yaml",
        "channels:\n  s: { type: slack, webhook_url: \"${SLACK_WEBHOOK_URL}\" }\nrules:\n  - { name: r, events: [dead], channels: [s] }\ndelivery: { attempts: 20, initial: 500ms, max: 1s }\n",
    );
    e.job("broken", "run: exit 1\n");
    let d = e.daemon();
    e.add(&["broken"]);
    wait_for("a failed delivery attempt", || {
        history(&e)
            .into_iter()
            .find(|a| a["attempts"].as_u64() >= Some(1))
    });
    d.kill9();
    assert_eq!(history(&e)[0]["status"], "pending");
    http.respond(&p, ResponseTemplate::new(200), None, 1);
    let _d = e.daemon();
    wait_for("the alert to be sent after the restart", || {
        history(&e).into_iter().find(|a| a["status"] == "sent")
    });
}

#[test]
fn a_hanging_endpoint_does_not_delay_runs() {
    let (http, e) = (Http::start(), Env::new());
    let p = slack_path();
    http.respond(
        &p,
        ResponseTemplate::new(200).set_delay(Duration::from_secs(120)),
        None,
        5,
    );
    e.set_env("SLACK_WEBHOOK_URL", &http.url(&p));
    e.file(
        "alerts.yaml",
        "channels:\n  s: { type: slack, webhook_url: \"${SLACK_WEBHOOK_URL}\" }\nrules:\n  - { name: r, events: [attempt_failed, dead], channels: [s] }\ndelivery: { timeout: 30s }\n",
    );
    e.file("scheduler.yaml", "concurrency: 4\n");
    e.job("broken", "run: exit 1\nconcurrency: 4\n");
    e.job("ok", "run: 'true'\n");
    let _d = e.daemon();
    let first: i64 = e
        .ok(&["queue:add", "broken", "--count", "20"])
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    e.wait_state(first, &["dead"]);
    wait_for("deliveries to hang", || http.bodies(&p).first().cloned());
    // While every delivery hangs, a delayed run still starts when due.
    let id = e.add(&["ok", "--in", "1s"]);
    let run = e.wait_state(id, &["succeeded"]);
    let due = chrono::DateTime::parse_from_rfc3339(run["due_at"].as_str().unwrap()).unwrap();
    let started =
        chrono::DateTime::parse_from_rfc3339(run["started_at"].as_str().unwrap()).unwrap();
    let late = started - due;
    assert!(
        late < chrono::Duration::seconds(3),
        "started {late} after due, with deliveries hanging for 30s"
    );
    assert!(
        history(&e).iter().all(|a| a["status"] == "pending"),
        "nothing delivered: all hang"
    );
}

#[test]
fn secrets_never_appear_in_output_listings_or_logs() {
    let (http, smtp, e) = (Http::start(), Smtp::start(Some(SMTP_PASSWORD)), Env::new());
    http.respond(
        &slack_path(),
        ResponseTemplate::new(500).set_body_string(format!("bad token {SLACK_TOKEN}")),
        None,
        5,
    );
    http.ok(&discord_path());
    setup(&e, &http, &smtp, "dead, attempt_failed, config_error", "");
    e.job("broken", "run: exit 2\n");
    let mut all = String::new();
    for args in [
        vec!["validate"],
        vec!["alert:list"],
        vec!["--json", "alert:list"],
        vec!["job", "broken"],
        vec!["alert:history"],
        vec!["--json", "alert:history"],
        vec!["alert:test", "ops-slack"],
        vec!["-v", "alert:test", "ops-email"],
    ] {
        let out = e.run(&args);
        all.push_str(&stdout(&out));
        all.push_str(&stderr(&out));
    }
    let list = e.ok(&["alert:list"]);
    assert!(
        list.contains("/***") && list.contains("alerts:***@127.0.0.1"),
        "{list}"
    );
    let d = e.daemon_with(|c| {
        c.env("WORKER_LOG", "debug");
    });
    e.file("scheduler.yaml", "concurrency: [oops]\n");
    d.signal(libc::SIGHUP);
    wait_for("the config_error alert", || {
        history(&e)
            .into_iter()
            .find(|a| a["event"] == "config_error")
    });
    all.push_str(&d.log());
    no_secrets("commands and logs", &all);
    e.file("scheduler.yaml", "");
    let test = e.run(&["alert:test", "ops-slack"]);
    assert_eq!(test.status.code(), Some(1), "a 500 is a failed test");
    assert!(stderr(&test).contains("HTTP 500"), "{}", stderr(&test));
}

#[test]
fn alert_test_exit_codes() {
    let (http, smtp, e) = (Http::start(), Smtp::start(Some(SMTP_PASSWORD)), Env::new());
    http.ok(&slack_path());
    http.respond(&discord_path(), ResponseTemplate::new(404), None, 5);
    setup(&e, &http, &smtp, "dead", "");
    assert!(e.ok(&["alert:test", "ops-slack"]).contains("delivered"));
    assert!(e.ok(&["alert:test", "ops-email"]).contains("delivered"));
    assert!(
        smtp.mails()[0]
            .header("Subject")
            .unwrap()
            .starts_with("[worker] test")
    );
    let out = e.run(&["alert:test", "ops-discord"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("HTTP 404"));
    assert_eq!(e.run(&["alert:test", "nope"]).status.code(), Some(2));
    let h = history(&e);
    assert_eq!(h.iter().filter(|a| a["event"] == "test").count(), 3);
}

#[test]
fn missed_late_recovered_and_config_error_events() {
    let (http, e) = (Http::start(), Env::new());
    let p = slack_path();
    http.ok(&p);
    e.set_env("SLACK_WEBHOOK_URL", &http.url(&p));
    let flag = e.path("healthy");
    e.file(
        "alerts.yaml",
        "channels:\n  s: { type: slack, webhook_url: \"${SLACK_WEBHOOK_URL}\" }\nrules:\n  - { name: all, events: [missed, late, recovered, config_error, dead], channels: [s] }\n",
    );
    e.job("slow", "run: sleep 2\n");
    e.job("flaky", &format!("run: '[ -e {} ]'\n", flag.display()));
    e.file(
        "scheduler.yaml",
        "schedules:\n  - { job: slow, cron: '@every 1s', deadline: 1s }\n",
    );
    let d = e.daemon();
    let http = &http;
    let seen = |kind: &str| {
        let kind = kind.to_string();
        move || {
            http.bodies(&slack_path()).into_iter().find(|b| {
                b["text"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("[worker] {kind}"))
            })
        }
    };
    let missed = wait_for("a missed alert", seen("missed"));
    assert!(missed.to_string().contains("overlap: skip"), "{missed}");
    let late = wait_for("a late alert", seen("late"));
    assert!(
        late.to_string().contains("not succeeded within 1s"),
        "{late}"
    );

    assert_eq!(e.run(&["job", "flaky"]).status.code(), Some(1));
    std::fs::write(&flag, "").unwrap();
    e.ok(&["job", "flaky"]);
    let recovered = wait_for("a recovered alert", seen("recovered"));
    assert!(recovered.to_string().contains("flaky"));

    e.file(
        "scheduler.yaml",
        "schedules:\n  - { job: nope, cron: '@daily' }\n",
    );
    d.signal(libc::SIGHUP);
    let ce = wait_for("a config_error alert", seen("config_error"));
    assert!(ce.to_string().contains("unknown job `nope`"), "{ce}");
}
