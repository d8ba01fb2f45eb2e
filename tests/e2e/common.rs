//! The test harness: a config + data directory, the `worker` binary, a daemon process.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_worker")
}

/// Generous: the suite runs on loaded 2-core machines.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A configuration directory and a data directory, removed at the end.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
    /// Environment given to every `worker` process (secrets for `${VAR}`, say).
    env: std::cell::RefCell<Vec<(String, String)>>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("wk")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("conf");
        let data = dir.path().join("data");
        fs::create_dir_all(config.join("jobs")).unwrap();
        Env {
            dir,
            config,
            data,
            env: Default::default(),
        }
    }

    /// Writes `jobs/NAME.yaml`.
    pub fn job(&self, name: &str, yaml: &str) -> &Env {
        self.file(&format!("jobs/{name}.yaml"), yaml)
    }

    /// Writes a file in the config directory.
    pub fn file(&self, rel: &str, text: &str) -> &Env {
        let p = self.config.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        self
    }

    /// A scratch path (outside config and data) for files jobs write.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `worker -c CONF -d DATA …`, ready to run.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("-c").arg(&self.config).arg("-d").arg(&self.data);
        c.env_remove("WORKER_LOG")
            .env_remove("WORKER_CONFIG")
            .env_remove("WORKER_DATA_DIR")
            .env_remove("WORKER_DATABASE_URL");
        c.env("NO_COLOR", "1");
        for (k, v) in self.env.borrow().iter() {
            c.env(k, v);
        }
        c
    }

    /// Sets a variable for every later `worker` process.
    pub fn set_env(&self, k: &str, v: &str) {
        self.env.borrow_mut().push((k.to_string(), v.to_string()));
    }

    /// Runs `worker ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run worker")
    }

    /// Runs `worker ARGS`, expecting exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "worker {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `worker --json ARGS`, expecting exit 0; returns the document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("worker {args:?}: not JSON ({e}): {out}"))
    }

    /// `queue:add ARGS`, returning the new run id.
    pub fn add(&self, args: &[&str]) -> i64 {
        let mut a = vec!["queue:add"];
        a.extend_from_slice(args);
        self.ok(&a).trim().parse().expect("queue:add prints an id")
    }

    /// The run object of `id`.
    pub fn run_obj(&self, id: i64) -> Value {
        self.json(&["show", &id.to_string()])[0].clone()
    }

    pub fn state(&self, id: i64) -> String {
        self.run_obj(id)["state"].as_str().unwrap().to_string()
    }

    /// Waits until run `id` is in one of `states`; returns its object.
    pub fn wait_state(&self, id: i64, states: &[&str]) -> Value {
        wait_for(&format!("run {id} to be {states:?}"), || {
            let r = self.run_obj(id);
            states
                .contains(&r["state"].as_str().unwrap_or(""))
                .then_some(r)
        })
    }

    /// Starts `worker daemon`, waiting until it is ready.
    pub fn daemon(&self) -> Daemon {
        self.daemon_with(|_| {})
    }

    pub fn daemon_with(&self, tweak: impl FnOnce(&mut Command)) -> Daemon {
        let log = self
            .dir
            .path()
            .join(format!("daemon-{}.log", fastrand_suffix()));
        let mut c = self.cmd();
        c.arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        tweak(&mut c);
        let child = c.spawn().expect("spawn daemon");
        let d = Daemon {
            child: Some(child),
            log,
        };
        let start = Instant::now();
        let mut d = d;
        while !d.log().contains("worker daemon started") {
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "the daemon exited ({status}) instead of starting; its log:\n{}",
                    d.log()
                );
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for the daemon to start; its log:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Polls `f` until it returns `Some`, for at most [`PATIENCE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A daemon process; killed (SIGKILL) if still running when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon running").id() as i32
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// `kill -9`, then reap.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the daemon to exit on its own.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let mut c = self.child.take().expect("daemon running");
        let status = wait_for("the daemon to exit", || c.try_wait().ok().flatten());
        (status, self.log())
    }

    /// SIGTERM and wait.
    pub fn stop(self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether `pid` is a live process (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            !matches!(state, "Z" | "X")
        }
    }
}

/// Reads a pid a job wrote to `path`, waiting for the file.
pub fn read_pid(path: &Path) -> i32 {
    wait_for(&format!("{} to hold a pid", path.display()), || {
        fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
}

/// A field of /proc/PID/status in kB (e.g. VmHWM).
pub fn proc_status_kb(pid: i32, field: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A schema of its own on the test server, dropped at the end; `None` (and a note) without one.
pub struct PgSchema {
    admin_url: String,
    schema: String,
    /// The URL that puts the store in this schema.
    pub url: String,
}

impl PgSchema {
    pub fn new() -> Option<PgSchema> {
        let admin_url = match std::env::var("WORKER_TEST_DATABASE_URL") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                let _ = writeln!(
                    std::io::stderr(),
                    "note: WORKER_TEST_DATABASE_URL is not set: PostgreSQL end-to-end test skipped"
                );
                return None;
            }
        };
        let schema = format!("e2e_{}_{}", std::process::id(), fastrand::u32(..));
        admin(&admin_url, &format!("CREATE SCHEMA {schema}"));
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
        Some(PgSchema {
            admin_url,
            schema,
            url,
        })
    }

    /// One value from the store's schema.
    pub fn scalar(&self, sql: &str) -> i64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.query_one(sql, &[]).await.unwrap().get(0)
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        admin(
            &self.admin_url,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
        );
    }
}

fn admin(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("WORKER_TEST_DATABASE_URL: cannot connect: {e}"));
        tokio::spawn(conn);
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}
