//! PostgreSQL stopped and started again under two daemons draining a queue: they survive, say
//! they are unhealthy meanwhile, and finish with nothing lost or doubled.
//!
//! A test binary of its own, because it stops the server every other PostgreSQL test uses: cargo
//! runs test binaries one at a time. It runs only where `WORKER_TEST_PG_CLUSTER` names the
//! cluster behind `WORKER_TEST_DATABASE_URL` (`VERSION NAME` for `pg_ctlcluster`, e.g. `15 main`;
//! `.ci/run` sets it), and says on stderr that it was skipped otherwise.

#[path = "e2e/common.rs"]
mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::*;

fn pg_ctl(cluster: &str, action: &str) {
    let mut args: Vec<&str> = vec!["--skip-systemctl-redirect"];
    args.extend(cluster.split_whitespace());
    args.push(action);
    if action == "stop" {
        args.extend(["-m", "fast"]);
    }
    let out = Command::new("pg_ctlcluster").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "pg_ctlcluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the cluster when dropped.
struct Restart<'a>(&'a str);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        pg_ctl(self.0, "start");
    }
}

/// The status code and body of `GET /healthz` at `addr` (host:port), or `None` if no answer.
fn healthz(addr: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

#[test]
fn daemons_survive_a_database_restart_and_finish_the_drain() {
    let cluster = match std::env::var("WORKER_TEST_PG_CLUSTER") {
        Ok(c) if !c.trim().is_empty() => c,
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "note: WORKER_TEST_PG_CLUSTER is not set: the PostgreSQL restart test is skipped"
            );
            return;
        }
    };
    let Some(pg) = PgSchema::new() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let marks = scratch.path().join("marks");
    let job = format!(
        "command: [sh, -c, 'echo \"$WORKER_RUN_ID $WORKER_ATTEMPT\" >> {}; sleep 0.05']\nconcurrency: 4\n",
        marks.display()
    );
    let envs: Vec<Env> = (1..=2)
        .map(|i| {
            let e = Env::new();
            e.set_env("WORKER_DATABASE_URL", &pg.url);
            e.file(
                "scheduler.yaml",
                &format!(
                    "node: n{i}\nnode_timeout: 120s\nconcurrency: 2\nhttp:\n  listen: 127.0.0.1:0\n"
                ),
            );
            e.job("mark", &job);
            e
        })
        .collect();
    envs[0].ok(&["queue:add", "mark", "--count", "400"]);
    let daemons: Vec<Daemon> = envs.iter().map(|e| e.daemon()).collect();
    let url = envs[0].ok(&["ui"]);
    let addr = url
        .trim()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    wait_for("50 runs to succeed", || {
        (pg.scalar("SELECT count(*) FROM runs WHERE state = 'succeeded'") >= 50).then_some(())
    });
    assert_eq!(healthz(&addr).map(|h| h.0), Some(200));
    pg_ctl(&cluster, "stop");
    // Started again even if what follows fails: other tests need the server.
    let restart = Restart(&cluster);
    let unhealthy = wait_for("the daemon to report the store unreachable", || {
        healthz(&addr).filter(|(code, _)| *code == 503)
    });
    drop(restart);
    assert!(unhealthy.1.contains("store unreachable"), "{}", unhealthy.1);
    // Back: the drain finishes.
    let start = std::time::Instant::now();
    while pg.scalar("SELECT count(*) FROM runs WHERE state = 'succeeded'") < 400 {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the drain did not finish after the restart; logs:\n{}\n{}",
            daemons[0].log(),
            daemons[1].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(healthz(&addr).map(|h| h.0), Some(200));
    // Nothing lost, nothing doubled: each run started once, in its first attempt.
    let lines = std::fs::read_to_string(&marks).unwrap();
    let mut runs: Vec<&str> = lines.lines().collect();
    assert_eq!(runs.len(), 400, "{lines}");
    assert!(runs.iter().all(|l| l.ends_with(" 1")), "{lines}");
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), 400);
    assert_eq!(pg.scalar("SELECT count(*) FROM runs"), 400);
    for d in daemons {
        let (status, log) = d.stop();
        assert!(status.success(), "{log}");
    }
}
