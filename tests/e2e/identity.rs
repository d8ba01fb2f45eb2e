//! Jobs that run as someone else, within limits: `user`, `group`, `nice`, `limits`.
//!
//! Switching users needs root; run as anyone else, these tests say they are skipped and pass.
//! (That an unprivileged worker refuses such jobs is a unit test of `exec::identity`.) Jobs print
//! what they see to stdout, read back through `worker logs`: user `nobody` cannot write into the
//! test's private directory.

use std::process::Command;

use crate::common::*;

/// Whether this process is root; if not, says that `test` is skipped.
fn root(test: &str) -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        println!("skipped: {test} needs root (running as uid {euid})");
    }
    euid == 0
}

/// The value at the end of the `ulimit -a` line for a limit, in dash's or bash's wording.
fn ulimit_value(out: &str, names: &[&str]) -> String {
    out.lines()
        .find(|l| names.iter().any(|n| l.starts_with(n)))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no {names:?} line in:\n{out}"))
        .to_string()
}

#[test]
fn a_job_runs_as_its_user_with_its_groups_and_home() {
    if !root("a_job_runs_as_its_user_with_its_groups_and_home") {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    // What the system says nobody's groups are (getgrouplist, as `id` reads them).
    let expected_groups = Command::new("id").args(["-G", "nobody"]).output().unwrap();
    let mut expected_groups: Vec<String> = String::from_utf8_lossy(&expected_groups.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    expected_groups.sort();

    let e = Env::new();
    e.job(
        "as-nobody",
        "run: id -u; id -G; echo \"$HOME $USER $LOGNAME\"\nuser: nobody\nenv: { LOGNAME: from-env }\n",
    );
    let _d = e.daemon();
    let id = e.add(&["as-nobody"]);
    let run = e.wait_state(id, &["succeeded", "dead"]);
    let out = e.ok(&["logs", &id.to_string()]);
    assert_eq!(run["state"], "succeeded", "{run}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], nobody.uid.to_string());
    assert_eq!(lines[0], "65534");
    let mut groups: Vec<String> = lines[1].split_whitespace().map(String::from).collect();
    groups.sort();
    assert_eq!(groups, expected_groups, "{out}");
    // HOME and USER from the passwd entry; the job's own env overrides them (LOGNAME).
    assert_eq!(
        lines[2],
        format!("{} nobody from-env", nobody.dir.display()),
        "{out}"
    );
}

#[test]
fn a_job_gets_its_limits_and_niceness() {
    if !root("a_job_gets_its_limits_and_niceness") {
        return;
    }
    let e = Env::new();
    e.job(
        "limited",
        "run: ulimit -a; echo \"hard cpu $(ulimit -H -t)\"; nice\nnice: 7\nlimits:\n  memory: 64MiB\n  cpu_time: 90s\n  open_files: 512\n  processes: 300\n",
    );
    // In the foreground: `worker job` prints the job's output.
    let out = e.run(&["job", "limited"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert_eq!(
        ulimit_value(&text, &["data(kbytes)", "data seg size"]),
        "65536"
    );
    assert_eq!(ulimit_value(&text, &["time(seconds)", "cpu time"]), "90");
    assert_eq!(
        ulimit_value(&text, &["hard cpu"]),
        "95",
        "SIGKILL 5 s after SIGXCPU"
    );
    assert_eq!(ulimit_value(&text, &["nofiles", "open files"]), "512");
    assert_eq!(
        ulimit_value(&text, &["process ", "max user processes"]),
        "300"
    );
    assert_eq!(text.lines().last(), Some("7"), "niceness:\n{text}");
}

#[test]
fn running_out_of_memory_names_the_limit() {
    if !root("running_out_of_memory_names_the_limit") {
        return;
    }
    let e = Env::new();
    e.job(
        "hungry",
        "run: dd if=/dev/zero of=/dev/null bs=200M count=1\nlimits: { memory: 64MiB }\n",
    );
    let _d = e.daemon();
    let id = e.add(&["hungry"]);
    let run = e.wait_state(id, &["succeeded", "dead"]);
    let out = e.ok(&["logs", &id.to_string()]);
    assert_eq!(run["state"], "dead", "{run}\n{out}");
    assert_eq!(
        run["error"], "exceeded limits.memory (64MiB): exit code 1",
        "{out}"
    );
}

#[test]
fn a_busy_loop_is_stopped_by_its_cpu_time() {
    if !root("a_busy_loop_is_stopped_by_its_cpu_time") {
        return;
    }
    let e = Env::new();
    e.job(
        "spin",
        "run: 'while :; do :; done'\nlimits: { cpu_time: 1s }\ntimeout: 2m\n",
    );
    let _d = e.daemon();
    let id = e.add(&["spin"]);
    let run = e.wait_state(id, &["succeeded", "dead"]);
    assert_eq!(run["state"], "dead", "{run}");
    assert_eq!(
        run["error"],
        "exceeded limits.cpu_time (1s): killed by signal 24 (SIGXCPU)"
    );
    assert_eq!(run["signal"], 24, "{run}");
}

#[test]
fn validate_names_an_unknown_user_where_it_is_written() {
    let e = Env::new();
    e.job(
        "ghost",
        "run: 'true'\nuser: no-such-user-here\nlimits: { memroy: 1GiB }\n",
    );
    let out = e.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let file = format!("{}/jobs/ghost.yaml", e.config.display());
    assert!(
        err.contains(&format!(
            "{file}:2:7: user `no-such-user-here` does not exist on this host"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:3:11: unknown field `memroy` in limits (did you mean `memory`?)"
        )),
        "{err}"
    );
}
