use std::time::Duration;

use tokio::sync::watch;

use super::*;

fn spec(dir: &std::path::Path, line: &str) -> Spec {
    Spec {
        exec: Exec::Shell(line.into()),
        workdir: dir.to_path_buf(),
        env: vec![("GREETING".into(), "hello".into())],
        timeout: None,
        log: dir.join("out.log"),
        output_limit: 1 << 20,
        tee: false,
        identity: None,
        limits: Default::default(),
    }
}

fn never() -> watch::Receiver<Option<StopReason>> {
    let (tx, rx) = watch::channel(None);
    std::mem::forget(tx);
    rx
}

fn output(s: &Spec) -> String {
    String::from_utf8_lossy(
        &capture::read_tail(&s.log, 1 << 20)
            .unwrap()
            .unwrap_or_default(),
    )
    .into_owned()
}

#[tokio::test]
async fn captures_merged_output_and_exit_code() {
    let t = tempfile::tempdir().unwrap();
    let s = spec(t.path(), "echo \"$GREETING\"; echo oops >&2; pwd; exit 3");
    let f = Executor::new(None).run(&s, never()).await;
    assert_eq!(f.exit, Exit::Code(3));
    assert!(!f.succeeded());
    assert_eq!(f.describe(None), "exit code 3");
    let out = output(&s);
    assert_eq!(out, format!("hello\noops\n{}\n", t.path().display()));
    assert_eq!(f.output_bytes, out.len() as u64);
}

#[tokio::test]
async fn argv_jobs_use_no_shell() {
    let t = tempfile::tempdir().unwrap();
    let mut s = spec(t.path(), "");
    s.exec = Exec::Argv(vec!["echo".into(), "$HOME".into(), "a b".into()]);
    let f = Executor::new(None).run(&s, never()).await;
    assert!(f.succeeded());
    assert_eq!(output(&s), "$HOME a b\n");
}

#[tokio::test]
async fn a_missing_program_is_a_failed_start() {
    let t = tempfile::tempdir().unwrap();
    let mut s = spec(t.path(), "");
    s.exec = Exec::Argv(vec!["/no/such/program".into()]);
    let f = Executor::new(None).run(&s, never()).await;
    match &f.exit {
        Exit::SpawnFailed(e) => assert!(e.contains("cannot start `/no/such/program`"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn timeout_terminates_the_whole_group() {
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("grandchild.pid");
    let mut s = spec(
        t.path(),
        &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
    );
    s.timeout = Some(Duration::from_millis(500));
    let f = Executor::new(None).run(&s, never()).await;
    assert!(f.timed_out);
    assert_eq!(f.describe(s.timeout), "timed out after 500ms");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_alive(pid), "the grandchild must be gone");
}

#[tokio::test]
async fn a_stop_request_ends_it_and_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let s = spec(t.path(), "echo started; sleep 300");
    let (tx, rx) = watch::channel(None);
    let exec = Executor::new(None);
    let run = exec.run(&s, rx);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(Some(StopReason::Cancel)).unwrap();
    };
    let (f, ()) = tokio::join!(run, stopper);
    assert_eq!(f.stopped, Some(StopReason::Cancel));
    assert_eq!(f.exit, Exit::Signal(15));
    assert_eq!(output(&s), "started\n");
}

#[tokio::test]
async fn background_leftovers_are_swept_when_the_leader_exits() {
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("bg.pid");
    let s = spec(
        t.path(),
        &format!("sleep 300 & echo $! > {}", pidfile.display()),
    );
    let f = Executor::new(None).run(&s, never()).await;
    assert!(f.succeeded());
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!process_alive(pid));
}

/// Whether `pid` is a live (non-zombie) process.
fn process_alive(pid: i32) -> bool {
    for _ in 0..50 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return false,
            Ok(stat) => {
                let state = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                if state == "Z" || state == "X" {
                    return false;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}
