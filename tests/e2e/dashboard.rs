//! The dashboard in a real browser: Debian's `chromium` driven headless through `chromedriver`
//! (WebDriver) with fantoccini. Without `chromedriver` on the PATH the test says it skipped
//! and passes (`.ci/run` installs it).
//!
//! It also takes a screenshot of every view: into the test's temporary directory, or with
//! `WORKER_SCREENSHOTS=1` into `docs/screenshots/` (how the README's pictures are made).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::common::{Env, PATIENCE, wait_for};

/// A `chromedriver` process, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<Driver> {
    let found = Command::new("chromedriver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_for("chromedriver to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Some(d)
}

/// A headless Chromium session (JavaScript on or off).
async fn browser(driver: &Driver, javascript: bool) -> Client {
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--hide-scrollbars", "--lang=en-US"],
    });
    if !javascript {
        options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session through chromedriver")
}

/// Polls the page with `script` (its `return` value) until `done` accepts it.
async fn until(c: &Client, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = c
            .execute(script, vec![])
            .await
            .expect("run a script in the page");
        if done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what}; last seen: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where screenshots go.
fn shots_dir(e: &Env) -> PathBuf {
    if std::env::var_os("WORKER_SCREENSHOTS").is_some_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        e.path("screenshots")
    }
}

async fn shot(c: &Client, dir: &std::path::Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    // Times are converted and live updates connected once the page settled.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

fn setup() -> Env {
    let e = Env::new();
    let marker = e.path("marker");
    e.file(
        "scheduler.yaml",
        "http: { listen: \"127.0.0.1:0\" }\n\
         schedules:\n\
         \x20 - { name: nightly-report, job: report, cron: \"30 2 * * *\", timezone: Europe/Berlin }\n\
         \x20 - { name: heartbeat, job: hello, cron: \"@every 1h\", catch_up: none }\n",
    );
    e.file(
        "alerts.yaml",
        "channels:\n  ops-hook: { type: slack, webhook_url: \"http://127.0.0.1:9/hook\" }\n\
         rules:\n  - { name: failures, events: [dead], jobs: [\"*\"], channels: [ops-hook] }\n\
         delivery: { attempts: 1, timeout: 2s }\n",
    );
    e.job(
        "hello",
        "description: Prove the daemon is alive\nrun: echo hello from run $WORKER_RUN_ID\n",
    );
    e.job(
        "report",
        "description: Nightly sales report\nrun: echo report\n",
    );
    // Fails on its first run; a retry finds the marker and succeeds.
    e.job(
        "flaky",
        &format!(
            "description: Fails once, then succeeds\n\
             run: |\n  if [ -f '{m}' ]; then echo 'marker found: ok'; else touch '{m}'; \
             echo 'first run: failing on purpose' >&2; exit 3; fi\n",
            m = marker.display()
        ),
    );
    e.job(
        "broken",
        "description: Always fails\nrun: echo 'cannot reach the database' >&2; exit 2\n",
    );
    e.job(
        "onboard",
        "description: Welcome a new user\n\
         input:\n  user_id: { required: true }\n  plan: { default: free }\n\
         steps:\n\
         \x20 - { name: fetch_user, run: echo fetching }\n\
         \x20 - { name: charge, run: echo charging }\n\
         \x20 - { name: prepare_db, needs: [], run: echo preparing }\n\
         \x20 - { name: record, needs: [charge, prepare_db], run: echo recording }\n\
         \x20 - { name: receipt, needs: [charge], run: echo receipt }\n\
         \x20 - { name: approve, needs: [record, receipt], wait_for: { signal: approve } }\n\
         \x20 - { name: follow_up, run: echo done }\n",
    );
    e
}

#[test]
fn the_dashboard_in_a_browser() {
    let Some(driver) = chromedriver() else {
        eprintln!(
            "dashboard browser test skipped: no `chromedriver` on the PATH (Debian: apt-get install chromium chromium-driver)"
        );
        return;
    };
    let e = setup();
    let _daemon = e.daemon();
    let failed = e.add(&["flaky"]);
    let dead = e.add(&["broken"]);
    let hello = e.add(&["hello"]);
    let flow = e.add(&["onboard", "--input", r#"{"user_id": 42}"#]);
    e.wait_state(failed, &["dead"]);
    e.wait_state(dead, &["dead"]);
    e.wait_state(hello, &["succeeded"]);
    e.wait_state(flow, &["suspended"]);
    let login = e.ok(&["ui"]).trim().to_string();
    assert!(login.contains("/login?token="), "{login}");
    let shots = shots_dir(&e);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&driver, true).await;

        // Logging in with the address `worker ui` prints leaves no token in the address bar.
        c.goto(&login).await.unwrap();
        let here = c.current_url().await.unwrap();
        assert_eq!(here.path(), "/", "{here}");
        assert!(!here.as_str().contains("token"), "{here}");
        c.find(Locator::Css("h1")).await.unwrap();
        until(&c, "the event stream", "return document.getElementById('live').textContent", |v| {
            v == "live"
        })
        .await;
        shot(&c, &shots, "overview").await;

        // A failed run: Retry, then the new run appears and turns `succeeded` without a reload.
        c.goto(&format!("{}/runs/{failed}", origin(&here))).await.unwrap();
        c.execute("window.notReloaded = true; return 1", vec![]).await.unwrap();
        let state = c.find(Locator::Id("run-state")).await.unwrap().text().await.unwrap();
        assert_eq!(state, "dead");
        c.find(Locator::Css("button[data-action=retry]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let rows = until(
            &c,
            "the retry to appear and succeed",
            "return Array.from(document.querySelectorAll('#run-live table[data-runs] tr[data-run-id]'))\
               .map(r => [Number(r.dataset.runId), r.querySelector('[data-f=state]').textContent])",
            |v| {
                v.as_array().is_some_and(|rows| {
                    rows.iter()
                        .any(|r| r[0] != json!(failed) && r[1] == "succeeded")
                })
            },
        )
        .await;
        let still = c.execute("return window.notReloaded === true", vec![]).await.unwrap();
        assert_eq!(still, json!(true), "the page reloaded");
        let retry = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] != json!(failed))
            .and_then(|r| r[0].as_i64())
            .unwrap();
        assert_eq!(e.state(retry), "succeeded");
        assert_eq!(e.run_obj(retry)["retry_of"], json!(failed));
        // The retry's own page: its output, loaded at once.
        c.goto(&format!("{}/runs/{retry}", origin(&here))).await.unwrap();
        until(&c, "the output", "return document.getElementById('log').textContent", |v| {
            v.as_str().is_some_and(|t| t.contains("marker found: ok"))
        })
        .await;

        // Pause a schedule from the schedules view.
        c.goto(&format!("{}/schedules", origin(&here))).await.unwrap();
        c.find(Locator::Css("tr[data-schedule=heartbeat] button[data-when=active]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(
            &c,
            "the schedule to show paused",
            "return document.querySelector('tr[data-schedule=heartbeat] [data-f=status]').textContent",
            |v| v == "paused",
        )
        .await;
        let list = e.json(&["schedules"]);
        let hb = list
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "heartbeat")
            .unwrap();
        assert_eq!(hb["paused"], json!(true), "{hb}");
        shot(&c, &shots, "schedules").await;

        // Every view renders; a screenshot of each.
        for (path, name) in [
            ("/jobs".to_string(), "jobs"),
            ("/runs".to_string(), "runs"),
            (format!("/runs/{flow}"), "run"),
            ("/dlq".to_string(), "dlq"),
            ("/alerts".to_string(), "alerts"),
        ] {
            c.goto(&format!("{}{path}", origin(&here))).await.unwrap();
            c.find(Locator::Css("main h1")).await.unwrap();
            if name == "run" {
                // The step graph: one node per step, coloured by state.
                let nodes = c.find_all(Locator::Css("svg.graph g.node")).await.unwrap();
                assert_eq!(nodes.len(), 7);
                let approve = c
                    .find(Locator::Css("svg.graph g.node[data-step=approve]"))
                    .await
                    .unwrap();
                assert!(approve.attr("class").await.unwrap().unwrap().contains("s-suspended"));
                c.set_window_size(1280, 1500).await.unwrap();
            }
            shot(&c, &shots, name).await;
            c.set_window_size(1280, 1000).await.unwrap();
        }
        // A phone-sized overview.
        c.set_window_size(400, 850).await.unwrap();
        c.goto(&format!("{}/", origin(&here))).await.unwrap();
        shot(&c, &shots, "overview-phone").await;
        c.close().await.unwrap();

        // With JavaScript off, a page still shows its data (and hides the buttons that need it).
        let c = browser(&driver, false).await;
        c.goto(&login).await.unwrap();
        c.goto(&format!("{}/runs", origin(&here))).await.unwrap();
        let rows = c.find_all(Locator::Css("tr[data-run-id]")).await.unwrap();
        assert!(rows.len() >= 5, "{} rows", rows.len());
        let first = rows[0].text().await.unwrap();
        assert!(first.contains("UTC"), "times stay in UTC without the script: {first}");
        c.goto(&format!("{}/runs/{dead}", origin(&here))).await.unwrap();
        let text = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
        assert!(text.contains("exit code 2") || text.contains("code 2"), "{text}");
        let retry = c.find(Locator::Css("button[data-action=retry]")).await.unwrap();
        assert!(!retry.is_displayed().await.unwrap());
        c.close().await.unwrap();
    });
}

/// `http://host:port` of a URL.
fn origin(u: &url::Url) -> String {
    u.origin().ascii_serialization()
}
