//! Running as a service: systemd notifications, signals, logs, status.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// A datagram socket standing in for systemd's notify socket; collects every message.
struct NotifySocket {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    fn new(e: &Env) -> NotifySocket {
        let path = e.path("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                m.lock().unwrap().push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        });
        NotifySocket { path, messages }
    }

    fn all(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn count(&self, line: &str) -> usize {
        self.all()
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }

    fn wait(&self, line: &str, at_least: usize) {
        wait_for(&format!("{at_least}× {line}"), || {
            (self.count(line) >= at_least).then_some(())
        });
    }
}

#[test]
fn systemd_notifications_ready_after_recovery_watchdog_reload_stopping() {
    let e = Env::new();
    e.job("long", "run: sleep 300\n");
    // A run left `running` by a daemon that died.
    let d = e.daemon();
    let id = e.add(&["long"]);
    e.wait_state(id, &["running"]);
    d.kill9();

    let sock = NotifySocket::new(&e);
    let log = e.path("daemon.log");
    let mut child = e
        .cmd()
        .arg("daemon")
        .env("NOTIFY_SOCKET", &sock.path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    sock.wait("READY=1", 1);
    // READY means recovery is done: the run is no longer `running`.
    assert_eq!(e.state(id), "dead", "READY=1 came before recovery");
    sock.wait("WATCHDOG=1", 3);
    assert!(
        sock.all()
            .iter()
            .any(|m| m.starts_with("STATUS=") && m.contains("running")),
        "{:?}",
        sock.all()
    );

    // SIGHUP: RELOADING=1 … READY=1.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    sock.wait("RELOADING=1", 1);
    sock.wait("READY=1", 2);
    let msgs = sock.all();
    let reloading = msgs
        .iter()
        .position(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap();
    assert!(
        msgs[reloading].contains("MONOTONIC_USEC="),
        "{}",
        msgs[reloading]
    );
    assert!(
        msgs[reloading..]
            .iter()
            .any(|m| m.lines().any(|l| l == "READY=1"))
    );

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for("the daemon to exit", || child.try_wait().unwrap());
    assert!(status.success());
    assert_eq!(sock.count("STOPPING=1"), 1);
    // No notification reached the job: NOTIFY_SOCKET is not passed on.
}

#[test]
fn a_stuck_engine_stops_pinging_the_watchdog() {
    let e = Env::new();
    e.job("nap", "run: sleep 0.3\n");
    let sock = NotifySocket::new(&e);
    let d = e.daemon_with(|c| {
        c.env("NOTIFY_SOCKET", &sock.path)
            .env("WATCHDOG_USEC", "400000");
    });
    sock.wait("WATCHDOG=1", 3);
    let id = e.add(&["nap"]);
    e.wait_state(id, &["running"]);
    // Another connection takes the write lock; the engine's turn that records the run's end
    // blocks on it (a turn with nothing to write would not: it only reads).
    let db = rusqlite::Connection::open(e.data.join("worker.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // The run has ended by then, and the engine is stuck.
    std::thread::sleep(Duration::from_millis(1500));
    let before = sock.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sock.count("WATCHDOG=1"),
        before,
        "pings while the engine was stuck"
    );
    db.execute_batch("COMMIT").unwrap();
    sock.wait("WATCHDOG=1", before + 2);
    e.wait_state(id, &["succeeded"]);
    drop(d);
}

#[test]
fn jobs_never_see_the_systemd_variables() {
    let e = Env::new();
    let env_dump = e.path("env");
    e.job("env", &format!("run: env > {}\n", env_dump.display()));
    let sock = NotifySocket::new(&e);
    let d = e.daemon_with(|c| {
        c.env("NOTIFY_SOCKET", &sock.path)
            .env("WATCHDOG_USEC", "5000000")
            .env("JOURNAL_STREAM", "1:2");
    });
    let id = e.add(&["env"]);
    e.wait_state(id, &["succeeded"]);
    let env = std::fs::read_to_string(&env_dump).unwrap();
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM"] {
        assert!(!env.contains(var), "the job saw {var}");
    }
    assert!(env.contains("WORKER_JOB=env"));
    drop(d);
}

#[test]
fn sigterm_lets_a_running_job_finish_then_exits_0() {
    let e = Env::new();
    let out = e.path("out");
    e.job(
        "steady",
        &format!("run: sleep 2; echo finished > {}\n", out.display()),
    );
    let d = e.daemon();
    let id = e.add(&["steady"]);
    e.wait_state(id, &["running"]);
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "finished\n");
    assert_eq!(e.state(id), "succeeded");
    assert!(
        log.contains("shutting down") && log.contains("worker daemon stopped"),
        "{log}"
    );
}

#[test]
fn drain_timeout_requeues_the_run_and_it_completes_later() {
    let e = Env::new();
    let flag = e.path("first-attempt-done");
    let pidfile = e.path("pid");
    e.file("scheduler.yaml", "shutdown_timeout: 1s\n");
    e.job(
        "slow",
        &format!(
            "run: if [ ! -e {f} ]; then touch {f}; echo $$ > {p}; sleep 300; fi; echo done\n",
            f = flag.display(),
            p = pidfile.display()
        ),
    );
    let d = e.daemon();
    let id = e.add(&["slow"]);
    let pid = read_pid(&pidfile);
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(!alive(pid), "the job's process group was stopped");
    let r = e.run_obj(id);
    assert_eq!(
        (r["state"].as_str(), r["attempt"].as_i64()),
        (Some("queued"), Some(0)),
        "re-queued, attempt not counted"
    );
    let _d = e.daemon();
    let r = e.wait_state(id, &["succeeded"]);
    assert_eq!(r["attempt"], 1);
    let attempts = e.json(&["show", &id.to_string()])[0]["attempts"].clone();
    assert_eq!(attempts[0]["outcome"], "interrupted");
    assert_eq!(attempts[1]["outcome"], "succeeded");
}

#[test]
fn a_second_sigint_stops_at_once() {
    let e = Env::new();
    let pidfile = e.path("pid");
    // Ignores SIGTERM: only SIGKILL stops it, and the drain budget is long.
    e.job(
        "stubborn",
        &format!(
            "run: trap '' TERM; echo $$ > {}; while true; do sleep 1; done\n",
            pidfile.display()
        ),
    );
    let d = e.daemon();
    let id = e.add(&["stubborn"]);
    let pid = read_pid(&pidfile);
    d.signal(libc::SIGINT);
    wait_for("the drain to begin", || {
        d.log().contains("shutting down").then_some(())
    });
    let asked = Instant::now();
    d.signal(libc::SIGINT);
    let (status, log) = d.wait_exit();
    assert!(status.success(), "{log}");
    assert!(
        asked.elapsed() < Duration::from_secs(25),
        "exited {:?} after the second signal (drain budget: 30s)",
        asked.elapsed()
    );
    assert!(log.contains("second signal"), "{log}");
    assert!(!alive(pid));
    assert_eq!(
        e.state(id),
        "queued",
        "left consistent: re-queued for the next start"
    );
}

#[test]
fn status_is_a_health_check() {
    let e = Env::new();
    e.job("x", "run: 'true'\n");
    e.file(
        "scheduler.yaml",
        "schedules:\n  - { job: x, cron: '@daily' }\n",
    );
    let out = e.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("no worker daemon is running"),
        "{}",
        stdout(&out)
    );
    let d = e.daemon();
    let out = e.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("pid {}", d.pid())) && stdout(&out).contains("healthy"));
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&e.run(&["--json", "status"]))).unwrap();
    assert_eq!(j["healthy"], true);
    assert_eq!(j["daemon"]["pid"], d.pid());
    assert!(
        j["daemon"]["version"]
            .as_str()
            .unwrap()
            .starts_with(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(j["next_fires"][0]["schedule"], "x");
    // A broken configuration on disk is a problem: the next restart would fail.
    e.file("scheduler.yaml", "concurrency: lots\n");
    let out = e.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("run `worker validate`"));
}

#[test]
fn log_formats_json_and_journal() {
    let e = Env::new();
    e.job("oops", "run: exit 5\n");
    let d = e.daemon_with(|c| {
        c.args(["--log-format", "json"]);
    });
    let id = e.add(&["oops"]);
    e.wait_state(id, &["dead"]);
    let (_, log) = d.stop();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let ended = lines
        .iter()
        .find(|l| l["message"] == "attempt ended")
        .unwrap();
    assert_eq!(
        (ended["job"].as_str(), ended["run"].as_i64()),
        (Some("oops"), Some(id))
    );
    assert_eq!(ended["level"], "INFO");

    // Under systemd, JOURNAL_STREAM names stderr: priority prefixes, no timestamps.
    let log = e.path("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = e
        .cmd()
        .arg("daemon")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file)
        .spawn()
        .unwrap();
    wait_for("the daemon to start", || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("worker daemon started")
            .then_some(())
    });
    let id = e.add(&["oops"]);
    e.wait_state(id, &["dead"]);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_for("exit", || child.try_wait().unwrap());
    let text = std::fs::read_to_string(&log).unwrap();
    let started = text
        .lines()
        .find(|l| l.contains("worker daemon started"))
        .unwrap();
    assert!(
        started.starts_with("<6>worker::daemon: worker daemon started"),
        "{started}"
    );
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");
    let timestamped = |l: &str| {
        l.split_once('>')
            .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()))
    };
    assert!(!text.lines().any(timestamped), "no timestamps: {text}");
}

#[test]
fn version_completions_and_man_page() {
    let e = Env::new();
    let v = e.ok(&["--version"]);
    assert!(
        v.starts_with(&format!("worker {} (", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    for shell in ["bash", "zsh", "fish"] {
        assert!(
            e.ok(&["completions", shell]).contains("queue:add"),
            "{shell}"
        );
    }
    let man = e.ok(&["man"]);
    assert!(man.starts_with(".ie") && man.contains(".TH worker 1") && man.contains("alert:test"));
}
