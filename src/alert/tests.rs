//! Routing, throttling and deadlines over a real store (each test on SQLite and PostgreSQL, see
//! `store::testing`), with explicit instants.

use super::*;
use crate::config::Config;
use crate::store::Store;
use crate::store::testing::{Engine, TestStore, conformance};

struct World {
    store: Store,
    /// Dropped after `store`: a PostgreSQL schema goes once nothing is connected to it.
    _test_store: TestStore,
    _dir: tempfile::TempDir,
    config: Config,
}

fn world(engine: Engine, alerts: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    for j in ["backup", "report", "other"] {
        std::fs::write(dir.path().join(format!("jobs/{j}.yaml")), "run: 'true'\n").unwrap();
    }
    std::fs::write(dir.path().join("alerts.yaml"), alerts).unwrap();
    let env = |k: &str| {
        (k == "HOOK").then(|| "https://hooks.example.com/services/T1/B2/s3cr3tT0ken".to_string())
    };
    let config = Config::load_with_env(dir.path(), &env).unwrap();
    let test_store = TestStore::new(engine, dir.path()).expect("the engine is available");
    let store = test_store.open();
    World {
        store,
        _test_store: test_store,
        _dir: dir,
        config,
    }
}

fn t(s: i64) -> Time {
    chrono::DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
        .unwrap()
        .to_utc()
        + chrono::Duration::seconds(s)
}

impl World {
    fn raise(&mut self, kind: EventKind, job: Option<&str>, at: Time) {
        let config = &self.config;
        let mut e = Event::new(kind, job, at);
        e.run_id = Some(7);
        e.reason = Some("exit code 1".into());
        self.store.write(|tx| raise(tx, config, e, at)).unwrap();
    }
    fn close(&mut self, at: Time) -> usize {
        let config = &self.config;
        self.store
            .write(|tx| close_windows(tx, config, at))
            .unwrap()
    }
    /// (rule, channel, event, status), oldest first.
    fn alerts(&mut self) -> Vec<(String, String, String, String)> {
        let mut v: Vec<_> = self
            .store
            .read(|tx| tx.alerts(1000, None))
            .unwrap()
            .into_iter()
            .map(|a| (a.rule, a.channel, a.event, a.status))
            .collect();
        v.reverse();
        v
    }
}

const TWO_RULES: &str = r#"channels:
  slack: { type: slack, webhook_url: "${HOOK}" }
  mail: { type: email, smtp_url: "smtp://127.0.0.1:2525", from: "w@example.com", to: [ops@example.com] }
rules:
  - { name: failures, events: [dead, timeout], jobs: ["back*"], channels: [slack, mail], throttle: 10m }
  - { name: everything, events: [dead, config_error], channels: [slack] }
"#;

conformance! {
    fn rules_match_by_event_and_job_glob(engine) {
        let mut w = world(engine, TWO_RULES);
        w.raise(EventKind::Dead, Some("backup"), t(0));
        w.raise(EventKind::Dead, Some("report"), t(1));
        w.raise(EventKind::AttemptFailed, Some("backup"), t(2));
        w.raise(EventKind::ConfigError, None, t(3));
        let got = w.alerts();
        let s = |r: &str, c: &str, e: &str| {
            (
                r.to_string(),
                c.to_string(),
                e.to_string(),
                "pending".to_string(),
            )
        };
        assert_eq!(
            got,
            vec![
                s("failures", "slack", "dead"),
                s("failures", "mail", "dead"),
                s("everything", "slack", "dead"),
                s("everything", "slack", "dead"),
                s("everything", "slack", "config_error"),
            ]
        );
    }

    fn throttle_suppresses_within_the_window_then_summarises_once(engine) {
        let mut w = world(engine, TWO_RULES);
        w.raise(EventKind::Dead, Some("backup"), t(0));
        w.raise(EventKind::Timeout, Some("backup"), t(60));
        w.raise(EventKind::Dead, Some("backup"), t(120));
        // Another job has its own window.
        w.raise(EventKind::Dead, Some("backups"), t(130));
        let failures: Vec<_> = w
            .alerts()
            .into_iter()
            .filter(|a| a.0 == "failures" && a.1 == "slack")
            .collect();
        let statuses: Vec<&str> = failures.iter().map(|a| a.3.as_str()).collect();
        assert_eq!(
            statuses,
            vec!["pending", "suppressed", "suppressed", "pending"]
        );

        assert_eq!(w.close(t(599)), 0, "the window is still open");
        assert_eq!(
            w.close(t(600)),
            1,
            "backup's window ends at 600 with two suppressed"
        );
        let summaries: Vec<_> = w
            .alerts()
            .into_iter()
            .filter(|a| a.2 == "summary")
            .collect();
        assert_eq!(
            summaries.len(),
            2,
            "one per channel of the rule: {summaries:?}"
        );
        let payload = w.store.read(|tx| tx.alerts(1, None)).unwrap()[0]
            .payload
            .clone();
        let e: Event = serde_json::from_str(&payload).unwrap();
        assert_eq!(
            e.reason.as_deref(),
            Some("2 alerts suppressed by rule failures (throttle 10m): 1× dead, 1× timeout")
        );
        assert_eq!(e.job.as_deref(), Some("backup"));

        let last_failure = |w: &mut World| {
            w.alerts()
                .into_iter()
                .rfind(|a| a.0 == "failures")
                .unwrap()
                .3
        };
        // The summary opened the next window: an alert inside it is suppressed…
        w.raise(EventKind::Dead, Some("backup"), t(700));
        assert_eq!(last_failure(&mut w), "suppressed");
        // …and a window with nothing suppressed closes quietly.
        w.raise(EventKind::Dead, Some("backups"), t(731));
        assert_eq!(
            last_failure(&mut w),
            "pending",
            "backups' window (130..730) had ended"
        );
        let before = w.alerts().len();
        w.close(t(100_000));
        assert_eq!(
            w.alerts().len(),
            before + 2,
            "only backup's window (one suppressed) produced a summary"
        );
    }

    fn secrets_are_masked_in_stored_alerts(engine) {
        let mut w = world(engine, TWO_RULES);
        let config = &w.config;
        let mut e = Event::new(EventKind::Dead, Some("backup"), t(0));
        e.output = Some(
            "posting to https://hooks.example.com/services/T1/B2/s3cr3tT0ken\ntoken s3cr3tT0ken".into(),
        );
        e.reason = Some("failed with s3cr3tT0ken".into());
        w.store.write(|tx| raise(tx, config, e, t(0))).unwrap();
        let payload = w.store.read(|tx| tx.alerts(10, None)).unwrap()[0]
            .payload
            .clone();
        assert!(!payload.contains("s3cr3tT0ken"), "{payload}");
        assert!(payload.contains("token ***"), "{payload}");
    }

    fn late_is_raised_once_for_fires_not_succeeded_by_their_deadline(engine) {
        let mut w = world(engine,
            "channels:\n  slack: { type: slack, webhook_url: \"${HOOK}\" }\nrules:\n  - { name: late, events: [late], channels: [slack] }\n",
        );
        let now = t(0);
        w.store
            .write(|tx| {
                // A fire with no run (missed), one whose run succeeded in time, one still running.
                tx.record_fire(
                    "nightly",
                    t(-3600),
                    "backup",
                    "missed",
                    Some("overlap: skip"),
                    None,
                    1,
                    now,
                )?;
                tx.set_deadline("nightly", t(-3600), t(-1800))?;
                tx.record_fire(
                    "nightly",
                    t(-7200),
                    "backup",
                    "enqueued",
                    None,
                    None,
                    1,
                    now,
                )?;
                tx.set_deadline("nightly", t(-7200), t(-5400))?;
                tx.record_fire("nightly", t(-100), "backup", "enqueued", None, None, 1, now)?;
                tx.set_deadline("nightly", t(-100), t(100))?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let config = &w.config;
        let raised = w
            .store
            .write(|tx| check_deadlines(tx, config, now))
            .unwrap();
        assert_eq!(
            raised, 2,
            "the missed fire and the one with no run, not the one due later"
        );
        assert_eq!(
            w.store
                .write(|tx| check_deadlines(tx, config, now))
                .unwrap(),
            0,
            "once"
        );
        assert_eq!(w.store.read(|tx| tx.next_deadline()).unwrap(), Some(t(100)));
        let payloads: Vec<String> = w
            .store
            .read(|tx| tx.alerts(10, None))
            .unwrap()
            .into_iter()
            .map(|a| a.payload)
            .collect();
        assert!(
            payloads
                .iter()
                .any(|p| p
                    .contains("not succeeded within 30m of its fire: it was not run (overlap: skip)")),
            "{payloads:?}"
        );
    }
}

#[test]
fn messages_for_each_channel() {
    let mut e = Event::new(EventKind::Dead, Some("backup"), t(0));
    e.run_id = Some(42);
    e.attempt = Some(3);
    e.max_attempts = Some(3);
    e.exit_code = Some(1);
    e.reason = Some("exit code 1".into());
    e.duration_ms = Some(1500);
    e.output = Some("line 1\nline 2".into());
    let m = message::render(&e, "web1");
    assert_eq!(
        m.subject,
        "[worker] dead backup: backup run 42 is dead: exit code 1"
    );
    assert_eq!(m.headline, "backup run 42 is dead: exit code 1");
    let f: Vec<&str> = m.fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        f,
        vec![
            "Event",
            "Job",
            "Run",
            "Attempt",
            "Exit code",
            "Reason",
            "Duration",
            "Host",
            "Time"
        ]
    );
    let slack = message::slack(&m);
    assert_eq!(slack["blocks"][0]["type"], "header");
    assert!(
        slack["blocks"][2]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("line 2")
    );
    let discord = message::discord(&m);
    assert_eq!(discord["embeds"][0]["color"], 0xD0_30_30);
    let body = message::email_body(&m);
    assert!(
        body.starts_with("backup run 42 is dead: exit code 1\n\nEvent")
            && body.contains("    line 2\n"),
        "{body}"
    );
    // Huge output keeps its end within the services' limits.
    let mut big = e.clone();
    big.output = Some(format!("{}THE END", "x".repeat(100_000)));
    let m = message::render(&big, "web1");
    let s = message::slack(&m)["blocks"][2]["text"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.len() < 3000 && s.contains("THE END"));
    let d = message::discord(&m)["embeds"][0]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.len() <= 4096 && d.contains("THE END"));
}

#[test]
fn delivery_backoff_doubles_up_to_max() {
    let p = crate::config::alerts::DEFAULT_DELIVERY;
    let d: Vec<u64> = (1..=9).map(|n| outbox::backoff(&p, n).as_secs()).collect();
    assert_eq!(d, vec![5, 10, 20, 40, 80, 160, 320, 600, 600]);
}
