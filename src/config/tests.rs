use std::fs;
use std::path::Path;

use super::*;
use crate::model::Priority;
use crate::queue::retry::Backoff;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn env(name: &str) -> Option<String> {
    match name {
        "REPORT_DIR" => Some("/srv/reports".into()),
        _ => None,
    }
}

fn load(dir: &Path) -> Result<Config, Diagnostics> {
    Config::load_with_env(dir, &env)
}

/// The diagnostics as printed, with the temporary directory's prefix removed.
fn messages(d: &Diagnostics) -> Vec<String> {
    d.iter()
        .map(|d| {
            let s = d.to_string();
            match s
                .find("/jobs/")
                .or_else(|| s.find("/scheduler.yaml"))
                .or_else(|| s.find("/alerts.yaml"))
            {
                Some(i) => s[i + 1..].to_string(),
                None => s,
            }
        })
        .collect()
}

#[test]
fn a_full_job_parses() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "jobs/report.yaml",
        r#"description: Nightly sales report
run: ./bin/report --date "$WORKER_SCHEDULED_AT"
env: { REPORT_DIR: "${REPORT_DIR}", LEVEL: 3, MODE: "${MODE:-fast}" }
timeout: 10m
priority: high
depends_on: [sync]
concurrency: 2
retry:
  attempts: 3
  backoff: fixed
  initial: 10s
  max: 10m
  jitter: false
"#,
    );
    write(
        t.path(),
        "jobs/sync.yaml",
        "command: [rsync, -a, src/, dst/]\n",
    );
    let c = load(t.path()).unwrap();
    let j = &c.jobs["report"];
    assert_eq!(
        j.body,
        JobBody::Exec(Exec::Shell(
            "./bin/report --date \"$WORKER_SCHEDULED_AT\"".into()
        ))
    );
    assert_eq!(j.env["REPORT_DIR"], "/srv/reports");
    assert_eq!(j.env["LEVEL"], "3");
    assert_eq!(j.env["MODE"], "fast");
    assert_eq!(j.timeout, Some(std::time::Duration::from_secs(600)));
    assert_eq!(j.priority, Priority::High);
    assert_eq!(j.dependency_names().collect::<Vec<_>>(), vec!["sync"]);
    assert_eq!(j.concurrency, 2);
    assert_eq!(j.retry.attempts, 3);
    assert_eq!(j.retry.backoff, Backoff::Fixed);
    assert!(!j.retry.jitter);
    assert_eq!(
        c.jobs["sync"].body,
        JobBody::Exec(Exec::Argv(vec![
            "rsync".into(),
            "-a".into(),
            "src/".into(),
            "dst/".into()
        ]))
    );
    assert_eq!(c.jobs["sync"].workdir, t.path());
    assert_eq!(c.jobs["sync"].retry.attempts, 1);
}

#[test]
fn every_problem_is_reported_in_one_pass_with_positions() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "jobs/a.yaml",
        "run: echo hi\ntimeout: 10\npriority: urgent\nconcurrency: 0\nretyr: {}\ndepends_on: [nope]\nenv: { KEY: \"${MISSING}\" }\n",
    );
    write(t.path(), "jobs/b.yaml", "run: x\ncommand: [y]\n");
    write(t.path(), "jobs/c.yaml", "description: nothing to run\n");
    write(t.path(), "jobs/Bad.yaml", "run: x\n");
    write(t.path(), "jobs/d.yaml", "run: [unclosed\n");
    write(t.path(), "jobs/e.yml", "run: x\n");
    let d = load(t.path()).unwrap_err();
    let m = messages(&d);
    let expect = [
        "jobs/Bad.yaml: `Bad` is not a valid job name",
        "jobs/a.yaml:2:10: timeout: `10` has no unit",
        "jobs/a.yaml:3:11: priority must be one of critical, high, normal, low, found `urgent`",
        "jobs/a.yaml:4:14: concurrency must be between 1 and 10000, found 0",
        "jobs/a.yaml:7:13: env.KEY: environment variable `MISSING` is not set",
        "jobs/a.yaml:5:1: unknown field `retyr` in a job (did you mean `retry`?)",
        "jobs/a.yaml:6:14: depends_on: unknown job `nope`",
        "jobs/b.yaml:2:1: a job has exactly one of `run`, `command` or `steps`; this one has both `run` and `command` (keep one)",
        "jobs/c.yaml:1:1: a job needs `run: <shell line>`",
        "jobs/d.yaml:1:6: invalid YAML",
        "jobs/e.yml: job files must end in `.yaml`",
    ];
    for e in expect {
        assert!(
            m.iter().any(|l| l.starts_with(e)),
            "missing `{e}` in:\n{}",
            m.join("\n")
        );
    }
    assert_eq!(m.len(), expect.len(), "{}", m.join("\n"));
}

#[test]
fn file_names_are_shown_as_reached_from_the_config_dir() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("conf");
    write(&conf, "jobs/report.yaml", "run: x\nbogus: 1\n");
    let d = load(&conf).unwrap_err();
    assert_eq!(d.0[0].file, format!("{}/jobs/report.yaml", conf.display()));
    assert_eq!(
        display_path(Path::new("conf"), "jobs/report.yaml"),
        "conf/jobs/report.yaml"
    );
    assert_eq!(
        display_path(Path::new("."), "jobs/report.yaml"),
        "jobs/report.yaml"
    );
}

#[test]
fn cycles_are_found_and_named() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "jobs/a.yaml", "run: x\ndepends_on: [b]\n");
    write(t.path(), "jobs/b.yaml", "run: x\ndepends_on: [c]\n");
    write(t.path(), "jobs/c.yaml", "run: x\ndepends_on: [a]\n");
    write(t.path(), "jobs/d.yaml", "run: x\ndepends_on: [a]\n");
    write(t.path(), "jobs/self.yaml", "run: x\ndepends_on: self\n");
    let m = messages(&load(t.path()).unwrap_err());
    assert!(
        m.contains(&"jobs/c.yaml:2:14: dependency cycle: a -> b -> c -> a".to_string()),
        "{m:?}"
    );
    assert!(
        m.iter()
            .any(|l| l.starts_with("jobs/self.yaml:2:13: job `self` cannot depend on itself")),
        "{m:?}"
    );
    assert_eq!(m.len(), 2, "{m:?}");
}

#[test]
fn a_dependency_on_a_broken_job_is_not_called_unknown() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "jobs/a.yaml", "run: x\ndepends_on: [b]\n");
    write(t.path(), "jobs/b.yaml", "timeout: 5s\n");
    let m = messages(&load(t.path()).unwrap_err());
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0].starts_with("jobs/b.yaml"));
}

#[test]
fn scheduler_settings() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "scheduler.yaml",
        "timezone: America/New_York\nconcurrency: 4\nshutdown_timeout: 45s\nhistory: { keep_days: 7 }\noutput_limit: 2MiB\n",
    );
    let c = load(t.path()).unwrap();
    assert_eq!(c.settings.timezone, chrono_tz::America::New_York);
    assert_eq!(c.settings.concurrency, 4);
    assert_eq!(
        c.settings.shutdown_timeout,
        std::time::Duration::from_secs(45)
    );
    assert_eq!(c.settings.keep_days, 7);
    assert_eq!(c.settings.output_limit, 2 << 20);
    assert!(c.jobs.is_empty());

    write(
        t.path(),
        "scheduler.yaml",
        "timezone: Mars/Olympus\nconcurrency: many\nhistory: { keep: 7 }\n",
    );
    let m = messages(&load(t.path()).unwrap_err());
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(
        m[0].starts_with("scheduler.yaml:1:11: timezone: unknown time zone `Mars/Olympus`"),
        "{m:?}"
    );
}

#[test]
fn empty_and_missing_files_are_fine() {
    let t = tempfile::tempdir().unwrap();
    let c = load(t.path()).unwrap();
    assert!(c.jobs.is_empty());
    write(t.path(), "scheduler.yaml", "");
    write(t.path(), "jobs/.hidden.yaml.swp", "garbage: [");
    write(t.path(), "jobs/README.md", "# notes");
    assert!(load(t.path()).is_ok());
}

#[test]
fn bad_input_never_panics() {
    let t = tempfile::tempdir().unwrap();
    for text in [
        "\u{0}",
        "- a\n- b\n",
        "42",
        "run: {a: b}",
        "run: ''",
        "command: []",
        "command: [\"\"]",
        "command: x",
        "run: x\nenv: [a]",
        "run: x\nenv: {1BAD: x, WORKER_JOB: y}",
        "run: x\nretry: {attempts: -1, max: 1s}",
        "run: x\ntimeout: 0s",
        "run: x\nworkdir: /definitely/not/here",
        "run: x\noutput_limit: 1B",
        "run: x\nlimits: 5",
        "run: x\nlimits: { memory: [1] }",
        "run: x\nuser: [root]",
        "run: x\nuser: ''",
        "run: x\ngroup: {a: b}",
        "run: x\nnice: ten",
        "run: x\nlimits: { cpu_time: 0s }",
        "run: x\nlimits: { memory: 99999999999999999999GiB }",
        "&a [*a]",
        "steps: x",
        "steps: []",
        "steps: [x, 1, [], {}]",
        "steps: [{name: a}]",
        "steps: [{name: [a], run: x}]",
        "steps: [{name: a, run: x, needs: {a: b}}]",
        "steps: [{name: a, run: x, needs: [[b]]}]",
        "steps: [{name: a, http: x}]",
        "steps: [{name: a, http: {url: [1], json: .nan}}]",
        "steps: [{name: a, http: {url: 'http://x', headers: [1]}}]",
        "steps: [{name: a, http: {url: 'http://x', headers: {'bad name': 1, X: [1]}}}]",
        "steps: [{name: a, http: {url: 'http://x', expect: {a: 1}}}]",
        "steps: [{name: a, sql: {url: 'sqlite://', query: x}}]",
        "steps: [{name: a, sql: {url: 'mysql://[::', query: ' '}}]",
        "steps: [{name: a, sql: {url: 'mysql://h/db', query: x, params: [[1], {a: 1}]}}]",
        "steps: [{name: a, notify: 5}]",
        "steps: [{name: a, wait_for: {signal: 'a b', timeout: 0s}}]",
        "steps: [{name: a, wait_for: x}]",
        "steps: [{name: a, sleep: 0s}]",
        "steps: [{name: a, sleep_until: ''}]",
        "steps: [{name: a, run: x, if: 'a >'}]",
        "steps: [{name: a, run: x, if: ''}]",
        "steps: [{name: a, run: x, env: {A: '{{ {{ }}'}}]",
        "steps: [{name: a, run: x, env: {A: '{% for %}'}}]",
        "steps: [{name: a, run: '{{', command: ['{{ run }}'], sleep: x}]",
        "run: x\ninput: [a]",
        "run: x\ninput: {a: {required: maybe, extra: 1}}",
        "run: x\nparallel: 5",
        "run: x\nsteps: [{name: a, run: x}]\nparallel: many",
    ] {
        write(t.path(), "jobs/x.yaml", text);
        assert!(load(t.path()).is_err(), "{text:?} should be refused");
    }
    fs::write(t.path().join("jobs/x.yaml"), [0xff, 0xfe, b'\n']).unwrap();
    assert_eq!(
        messages(&load(t.path()).unwrap_err()),
        vec!["jobs/x.yaml: not valid UTF-8 text".to_string()]
    );
}

#[test]
fn schedules_parse_with_defaults() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "jobs/report.yaml", "run: x\n");
    write(
        t.path(),
        "scheduler.yaml",
        r#"timezone: America/New_York
schedules:
  - job: report
    name: report-weekdays
    cron: "30 6 * * 1-5"
    timezone: Europe/Berlin
    catch_up: all
    overlap: queue
    enabled: false
    deadline: 45m
    env: { SCOPE: weekday }
  - job: report
    cron: "@every 90s"
"#,
    );
    let c = load(t.path()).unwrap();
    let s = &c.schedules[0];
    assert_eq!(
        (s.name.as_str(), s.job.as_str(), s.cron.as_str()),
        ("report-weekdays", "report", "30 6 * * 1-5")
    );
    assert_eq!(s.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(
        (s.catch_up, s.overlap, s.enabled),
        (CatchUp::All, Overlap::Queue, false)
    );
    assert_eq!(s.deadline, Some(std::time::Duration::from_secs(45 * 60)));
    assert_eq!(s.env["SCOPE"], "weekday");
    let d = &c.schedules[1];
    assert_eq!(
        (d.name.as_str(), d.timezone),
        ("report", chrono_tz::America::New_York)
    );
    assert_eq!(
        (d.catch_up, d.overlap, d.enabled, d.deadline),
        (CatchUp::Latest, Overlap::Skip, true, None)
    );
    assert_eq!(c.schedules_of("report").count(), 2);
}

#[test]
fn schedule_problems_have_positions() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "jobs/report.yaml", "run: x\n");
    write(
        t.path(),
        "scheduler.yaml",
        "schedules:\n  - job: reprot\n    cron: '@daily'\n  - job: report\n    cron: '61 * * * *'\n  - job: report\n    cron: '@daily'\n    timezone: Moon/Base\n    catch_up: sometimes\n    colour: red\n  - job: report\n    cron: '@hourly'\n  - job: report\n    cron: '@hourly'\n",
    );
    let m = messages(&load(t.path()).unwrap_err());
    let expect = [
        "scheduler.yaml:2:10: unknown job `reprot`: there is no jobs/reprot.yaml (did you mean `report`?)",
        "scheduler.yaml:5:11: cron: `61 * * * *`: minute must be 0-59",
        "scheduler.yaml:8:15: timezone: unknown time zone `Moon/Base`",
        "scheduler.yaml:9:15: catch_up must be one of none, latest, all, found `sometimes`",
        "scheduler.yaml:10:5: unknown field `colour` in a schedule",
        "scheduler.yaml:13:5: a schedule named `report` already exists",
    ];
    for e in expect {
        assert!(
            m.iter().any(|l| l.starts_with(e)),
            "missing `{e}` in:\n{}",
            m.join("\n")
        );
    }
    assert_eq!(m.len(), expect.len(), "{}", m.join("\n"));
}

#[test]
fn alerts_parse_and_collect_secrets() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "jobs/backup.yaml", "run: x\n");
    write(
        t.path(),
        "alerts.yaml",
        r#"channels:
  ops-slack:   { type: slack,   webhook_url: "${SLACK}" }
  ops-email:   { type: email, smtp_url: "smtps://ops:${SMTP_PW}@smtp.example.com", from: "Worker <w@example.com>", to: [a@example.com, b@example.com] }
rules:
  - name: failures
    events: [dead, timeout]
    jobs: ["back*"]
    channels: [ops-slack, ops-email]
    throttle: 15m
delivery: { attempts: 3, timeout: 5s }
"#,
    );
    let env = |k: &str| match k {
        "SLACK" => Some("https://hooks.slack.com/services/T00/B00/abcdefghijkl".to_string()),
        "SMTP_PW" => Some("p%40ss".to_string()),
        _ => None,
    };
    let c = Config::load_with_env(t.path(), &env).unwrap();
    let a = &c.alerts;
    assert_eq!(a.channels.len(), 2);
    assert_eq!(
        a.channels["ops-slack"].target_masked(),
        "https://hooks.slack.com/***"
    );
    assert_eq!(
        a.channels["ops-email"].target_masked(),
        "smtps://ops:***@smtp.example.com:465 from Worker <w@example.com> to a@example.com, b@example.com"
    );
    let ChannelKind::Email { smtp, .. } = &a.channels["ops-email"].kind else {
        panic!()
    };
    assert_eq!(smtp.password.as_deref(), Some("p@ss"), "percent-decoded");
    let r = &a.rules[0];
    assert_eq!(r.throttle, std::time::Duration::from_secs(900));
    assert!(r.matches(crate::model::EventKind::Dead, Some("backup")));
    assert!(!r.matches(crate::model::EventKind::Dead, Some("report")));
    assert!(!r.matches(crate::model::EventKind::AttemptFailed, Some("backup")));
    assert_eq!(
        (a.delivery.attempts, a.delivery.timeout),
        (3, std::time::Duration::from_secs(5))
    );
    let masked = c.secrets.mask(
        "POST https://hooks.slack.com/services/T00/B00/abcdefghijkl said abcdefghijkl; pw p@ss",
    );
    assert_eq!(masked, "POST *** said ***; pw ***");
}

#[test]
fn alert_problems_have_positions_and_never_echo_secrets() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "jobs/backup.yaml", "run: x\n");
    write(
        t.path(),
        "alerts.yaml",
        r#"channels:
  bad-url: { type: slack, webhook_url: "not a url but a s3cret" }
  pager: { type: pagerduty }
  mail: { type: email, smtp_url: "ftp://x", from: "nobody", to: [] }
  miss: { type: discord, webhook_url: "${MISSING_HOOK}" }
rules:
  - { name: r1, events: [dead, exploded], channels: [slak] }
  - { name: r2, events: [dead], jobs: [bakup], channels: [mail] }
"#,
    );
    let m = messages(&load(t.path()).unwrap_err());
    let expect = [
        "alerts.yaml:2:40: webhook_url is not an http(s) URL (the value is not shown",
        "alerts.yaml:3:18: type must be one of slack, discord, email, found `pagerduty`",
        "alerts.yaml:4:34: smtp_url: scheme `ftp` is not smtp or smtps",
        "alerts.yaml:4:51: from: `nobody` is not an e-mail address",
        "alerts.yaml:4:65: to must name at least one address",
        "alerts.yaml:5:39: webhook_url: environment variable `MISSING_HOOK` is not set",
        "alerts.yaml:7:32: unknown event `exploded`",
        "alerts.yaml:7:54: unknown channel `slak`",
        "alerts.yaml:8:40: jobs: unknown job `bakup` (did you mean `backup`?)",
    ];
    for e in expect {
        assert!(
            m.iter().any(|l| l.starts_with(e)),
            "missing `{e}` in:\n{}",
            m.join("\n")
        );
    }
    assert_eq!(m.len(), expect.len(), "{}", m.join("\n"));
    assert!(
        m.iter().all(|l| !l.contains("s3cret")),
        "a secret was echoed:\n{}",
        m.join("\n")
    );
}

#[test]
fn values_from_the_environment_are_masked_in_diagnostics_once_published() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "jobs/x.yaml",
        "run: x\ntimeout: \"${TIMEOUT_SECRET}\"\n",
    );
    let env = |k: &str| (k == "TIMEOUT_SECRET").then(|| "hunter2hunter2".to_string());
    let d = Config::load_with_env(t.path(), &env).unwrap_err();
    let printed = secrets::mask_published(&d.to_string());
    assert!(
        d.to_string().contains("hunter2hunter2"),
        "the raw diagnostic names the value"
    );
    assert!(
        !printed.contains("hunter2hunter2") && printed.contains("`***` is not a duration"),
        "{printed}"
    );
}

#[test]
fn identity_and_limits_parse() {
    use crate::config::job::Limits;
    use nix::unistd::{Gid, Group, Uid, User};
    // root (uid 0, gid 0) exists on every host the tests run on; its details come from it.
    let root = User::from_uid(Uid::from_raw(0)).unwrap().unwrap();
    let group0 = Group::from_gid(Gid::from_raw(0)).unwrap().unwrap();
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "jobs/full.yaml",
        &format!(
            "run: x\nuser: {}\ngroup: 0\nnice: 10\nlimits:\n  memory: 512MiB\n  cpu_time: 1m30s\n  open_files: 1024\n  processes: 256\n",
            root.name
        ),
    );
    write(t.path(), "jobs/by-uid.yaml", "run: x\nuser: 0\nnice: -20\n");
    write(t.path(), "jobs/plain.yaml", "run: x\n");
    let c = load(t.path()).unwrap();

    let full = &c.jobs["full"];
    let id = full.identity.as_ref().unwrap();
    let user = id.user.as_ref().unwrap();
    assert_eq!(
        (user.name.as_str(), user.uid, user.home.as_str()),
        (root.name.as_str(), 0, root.dir.to_str().unwrap())
    );
    assert!(user.groups.contains(&0), "{:?}", user.groups);
    assert_eq!((id.gid, id.group_name.as_str()), (0, group0.name.as_str()));
    assert_eq!(
        full.limits,
        Limits {
            nice: Some(10),
            memory: Some(512 << 20),
            cpu_time: Some(std::time::Duration::from_secs(90)),
            open_files: Some(1024),
            processes: Some(256),
        }
    );

    let by_uid = &c.jobs["by-uid"];
    let id = by_uid.identity.as_ref().unwrap();
    assert_eq!(id.user.as_ref().unwrap().name, root.name);
    assert_eq!(id.gid, root.gid.as_raw(), "the user's primary group");
    assert_eq!(by_uid.limits.nice, Some(-20));
    assert_eq!(by_uid.limits.memory, None);

    let plain = &c.jobs["plain"];
    assert_eq!(plain.identity, None);
    assert!(plain.limits.is_empty());
}

#[test]
fn identity_and_limit_problems_have_positions() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "jobs/a.yaml", "run: x\nuser: no-such-user-xyz\n");
    write(
        t.path(),
        "jobs/b.yaml",
        "run: x\ngroup: no-such-group-xyz\n",
    );
    write(t.path(), "jobs/c.yaml", "run: x\nnice: 25\n");
    write(
        t.path(),
        "jobs/d.yaml",
        "run: x\nlimits:\n  memroy: 1GiB\n  open_files: 0\n  processes: 5000000\n",
    );
    write(
        t.path(),
        "jobs/e.yaml",
        "run: x\nlimits: { memory: lots, cpu_time: 10 }\n",
    );
    write(
        t.path(),
        "jobs/f.yaml",
        "run: x\nlimits:\n  memory: 512KiB\n",
    );
    write(
        t.path(),
        "jobs/g.yaml",
        "run: x\nuser: 3999999999\ngroup: 3999999999\n",
    );
    write(t.path(), "jobs/h.yaml", "run: x\nusr: root\n");
    let d = load(t.path()).unwrap_err();
    let m = messages(&d);
    let expect = [
        "jobs/a.yaml:2:7: user `no-such-user-xyz` does not exist on this host (write the name or uid of a user listed by `getent passwd`)",
        "jobs/b.yaml:2:8: group `no-such-group-xyz` does not exist on this host (write the name or gid of a group listed by `getent group`)",
        "jobs/c.yaml:2:7: nice must be between -20 and 19, found 25",
        "jobs/d.yaml:3:3: unknown field `memroy` in limits (did you mean `memory`?)",
        "jobs/d.yaml:4:15: limits.open_files must be between 1 and 1048576, found 0",
        "jobs/d.yaml:5:14: limits.processes must be between 1 and 4194304, found 5000000",
        "jobs/e.yaml:2:19: limits.memory: `lots` is not a size (write e.g. `512KiB`, `1MiB`, `64MiB`)",
        "jobs/e.yaml:2:35: limits.cpu_time: `10` has no unit (write e.g. `10s` or `10m`)",
        "jobs/f.yaml:3:11: limits.memory must be at least 1MiB, found 512KiB (write e.g. `256MiB`)",
        "jobs/g.yaml:2:7: user: no user has uid 3999999999 on this host (write the name or uid of a user listed by `getent passwd`)",
        "jobs/g.yaml:3:8: group: no group has gid 3999999999 on this host (write the name or gid of a group listed by `getent group`)",
        "jobs/h.yaml:2:1: unknown field `usr` in a job (did you mean `user`?)",
    ];
    assert_eq!(m, expect, "{}", m.join("\n"));
}

/// An `alerts.yaml` with one channel of each kind, for `notify` steps.
const STEP_ALERTS: &str = r#"channels:
  ops-slack: { type: slack, webhook_url: "https://hooks.slack.com/services/T0/B0/abcdefghij" }
  ops-email: { type: email, smtp_url: "smtp://mail.example.com", from: "w@example.com", to: [ops@example.com] }
"#;

/// The problems of a configuration made of `jobs/wf.yaml` (and [`STEP_ALERTS`]).
fn step_problems(job: &str) -> Vec<String> {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "alerts.yaml", STEP_ALERTS);
    write(t.path(), "jobs/wf.yaml", job);
    match load(t.path()) {
        Ok(_) => Vec::new(),
        Err(d) => messages(&d),
    }
}

fn step(name: &str, kind: workflow_model::StepKind, needs: Vec<usize>) -> workflow_model::StepDef {
    workflow_model::StepDef {
        name: name.into(),
        kind,
        needs,
        condition: None,
        allow_failure: false,
        retry: crate::queue::retry::DEFAULT_RETRY_POLICY,
        timeout: None,
    }
}

use crate::workflow::model as workflow_model;

#[test]
fn a_workflow_parses_into_its_model() {
    use std::time::Duration;
    use workflow_model::*;
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "alerts.yaml", STEP_ALERTS);
    fs::create_dir_all(t.path().join("bin")).unwrap();
    write(
        t.path(),
        "jobs/onboard.yaml",
        r#"description: Welcome a new user
input:
  user_id: { required: true }
  plan: { default: free }
  send_at: {}
  count: { default: 3 }
timeout: 5m
parallel: 4
steps:
  - name: fetch_user
    run: ./bin/fetch-user
    env: { USER_ID: "{{ input.user_id }}", HOME_DIR: "${HOME_DIR}", LITERAL: "$${NOT_EXPANDED}" }
    timeout: 1m
  - name: charge
    http:
      method: post
      url: "https://billing.example.com/charges"
      headers: { Authorization: "Bearer ${BILLING_TOKEN}" }
      json: { user: "{{ steps.fetch_user.outputs.id }}", plan: "{{ input.plan }}", amount: 12.5, live: true, tags: [a, 1, null] }
      expect: [200, 201]
    retry: { attempts: 5, initial: 2s }
  - name: receipt
    needs: [charge]
    notify: { channel: ops-email, to: ["{{ steps.fetch_user.outputs.email }}", ops@example.com],
              subject: "Welcome", text: "Hello {{ steps.fetch_user.outputs.name | default('there') }}" }
  - name: record
    needs: [charge]
    sql:
      url: "${APP_DATABASE_URL}"
      query: "UPDATE users SET plan = $1 WHERE id = $2"
      params: ["{{ input.plan }}", "{{ input.user_id }}", 3, null]
  - name: later
    needs: [receipt, record]
    sleep: 30m
  - name: approve
    wait_for: { signal: approve, timeout: 24h }
  - name: follow_up
    if: "steps.approve.outputs.data.ok and input.plan != 'free'"
    command: [docker, ps, --format, "{{.Names}}"]
    workdir: bin
    allow_failure: true
  - name: ping
    needs: []
    http: { url: "https://example.com/runs/{{ run.id }}?n={% for i in range(2) %}{{ i }}{% endfor %}", body: "{{ run.job }}", expect: 204, timeout: 5s }
  - name: wake
    sleep_until: "{{ input.send_at }}"
  - name: fixed
    needs: []
    sleep_until: "2030-06-01T09:00:00+02:00"
  - name: local
    needs: [fixed]
    sql: { url: "sqlite://data/app.db?mode=rwc", query: "SELECT '{{ not a reference }}'" }
"#,
    );
    let env = |k: &str| match k {
        "HOME_DIR" => Some("/home/app".to_string()),
        "BILLING_TOKEN" => Some("tok_123456".to_string()),
        "APP_DATABASE_URL" => Some("postgres://app:s3cr%40t@db.internal/app".to_string()),
        _ => None,
    };
    let c = Config::load_with_env(t.path(), &env).unwrap_or_else(|d| panic!("{d}"));
    let job = &c.jobs["onboard"];
    assert_eq!(
        job.input,
        Some(InputSpec {
            fields: [
                (
                    "user_id",
                    InputField {
                        required: true,
                        default: None
                    }
                ),
                (
                    "plan",
                    InputField {
                        required: false,
                        default: Some(serde_json::json!("free"))
                    }
                ),
                ("send_at", InputField::default()),
                (
                    "count",
                    InputField {
                        required: false,
                        default: Some(serde_json::json!(3))
                    }
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        })
    );
    let wf = job.workflow().expect("a job with steps");
    let abs = std::path::absolute(t.path()).unwrap();
    let expected = Workflow {
        parallel: Some(4),
        steps: vec![
            StepDef {
                timeout: Some(Duration::from_secs(60)),
                ..step(
                    "fetch_user",
                    StepKind::Process(ProcessStep {
                        exec: Exec::Shell("./bin/fetch-user".into()),
                        env: [
                            ("USER_ID", "{{ input.user_id }}"),
                            ("HOME_DIR", "/home/app"),
                            ("LITERAL", "${NOT_EXPANDED}"),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                        workdir: None,
                    }),
                    vec![],
                )
            },
            StepDef {
                retry: crate::queue::retry::RetryPolicy {
                    attempts: 5,
                    initial: Duration::from_secs(2),
                    ..crate::queue::retry::DEFAULT_RETRY_POLICY
                },
                timeout: Some(Duration::from_secs(30)),
                ..step(
                    "charge",
                    StepKind::Http(HttpStep {
                        method: "POST".into(),
                        url: "https://billing.example.com/charges".into(),
                        headers: [("Authorization".to_string(), "Bearer tok_123456".to_string())]
                            .into(),
                        body: HttpBody::Json(serde_json::json!({
                            "user": "{{ steps.fetch_user.outputs.id }}",
                            "plan": "{{ input.plan }}",
                            "amount": 12.5,
                            "live": true,
                            "tags": ["a", 1, null],
                        })),
                        expect: vec![200, 201],
                    }),
                    vec![0],
                )
            },
            step(
                "receipt",
                StepKind::Notify(NotifyStep {
                    channel: "ops-email".into(),
                    text: "Hello {{ steps.fetch_user.outputs.name | default('there') }}".into(),
                    to: vec![
                        "{{ steps.fetch_user.outputs.email }}".into(),
                        "ops@example.com".into(),
                    ],
                    subject: Some("Welcome".into()),
                }),
                vec![1],
            ),
            step(
                "record",
                StepKind::Sql(SqlStep {
                    url: "postgres://app:s3cr%40t@db.internal/app".into(),
                    query: "UPDATE users SET plan = $1 WHERE id = $2".into(),
                    params: vec![
                        serde_json::json!("{{ input.plan }}"),
                        serde_json::json!("{{ input.user_id }}"),
                        serde_json::json!(3),
                        serde_json::Value::Null,
                    ],
                }),
                vec![1],
            ),
            step(
                "later",
                StepKind::Sleep(SleepStep::For(Duration::from_secs(1800))),
                vec![2, 3],
            ),
            step(
                "approve",
                StepKind::WaitFor(WaitStep {
                    signal: "approve".into(),
                    timeout: Some(Duration::from_secs(86_400)),
                }),
                vec![4],
            ),
            StepDef {
                condition: Some(
                    "steps.approve.outputs.data.ok and input.plan != 'free'".into(),
                ),
                allow_failure: true,
                timeout: Some(Duration::from_secs(300)),
                ..step(
                    "follow_up",
                    StepKind::Process(ProcessStep {
                        exec: Exec::Argv(vec![
                            "docker".into(),
                            "ps".into(),
                            "--format".into(),
                            "{{.Names}}".into(),
                        ]),
                        env: BTreeMap::new(),
                        workdir: Some(t.path().join("bin")),
                    }),
                    vec![5],
                )
            },
            StepDef {
                timeout: Some(Duration::from_secs(5)),
                ..step(
                    "ping",
                    StepKind::Http(HttpStep {
                        method: "GET".into(),
                        url: "https://example.com/runs/{{ run.id }}?n={% for i in range(2) %}{{ i }}{% endfor %}".into(),
                        headers: BTreeMap::new(),
                        body: HttpBody::Text("{{ run.job }}".into()),
                        expect: vec![204],
                    }),
                    vec![],
                )
            },
            step(
                "wake",
                StepKind::Sleep(SleepStep::Until("{{ input.send_at }}".into())),
                vec![7],
            ),
            step(
                "fixed",
                StepKind::Sleep(SleepStep::Until("2030-06-01T09:00:00+02:00".into())),
                vec![],
            ),
            step(
                "local",
                StepKind::Sql(SqlStep {
                    url: format!("sqlite://{}/data/app.db?mode=rwc", abs.display()),
                    query: "SELECT '{{ not a reference }}'".into(),
                    params: vec![],
                }),
                vec![9],
            ),
        ],
    };
    for (got, want) in wf.steps.iter().zip(&expected.steps) {
        assert_eq!(got, want, "step {}", want.name);
    }
    assert_eq!(**wf, expected);
    // The job-level fields stay the job's.
    assert_eq!(job.timeout, Some(Duration::from_secs(300)));
    assert_eq!(job.retry.attempts, 1);
    // The database password is a secret, as written and percent-decoded.
    assert_eq!(
        c.secrets.mask("connecting with s3cr%40t / s3cr@t"),
        "connecting with *** / ***"
    );
}

#[test]
fn a_job_has_exactly_one_of_run_command_and_steps() {
    let m = step_problems("run: x\nsteps:\n  - { name: a, run: y }\ncommand: [z]\n");
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:2:1: a job has exactly one of `run`, `command` or `steps`; this one has `run`, `steps`, `command` (keep one)"
        ]
    );
    let m = step_problems("description: nothing\n");
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:1:1: a job needs `run: <shell line>`, `command: [program, args...]` or `steps: [...]` (see Workflows)"
        ]
    );
    // A job with `run` may take input too.
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "jobs/plain.yaml",
        "run: ./x\ninput: { day: { default: today } }\n",
    );
    write(t.path(), "jobs/open.yaml", "run: ./x\ninput: {}\n");
    let c = load(t.path()).unwrap();
    assert!(
        c.jobs["plain"].input.as_ref().unwrap().fields["day"]
            .default
            .is_some()
    );
    assert!(c.jobs["open"].input.as_ref().unwrap().fields.is_empty());
    assert_eq!(
        c.jobs["open"].body,
        JobBody::Exec(Exec::Shell("./x".into()))
    );
}

#[test]
fn an_unknown_need_is_named_with_a_suggestion() {
    let m = step_problems(
        "steps:\n  - name: fetch\n    run: x\n  - name: send\n    needs: [fetc]\n    run: y\n",
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:5:13: needs: unknown step `fetc`: no step of this job has that name (did you mean `fetch`?)"
        ]
    );
}

#[test]
fn needs_on_itself_and_twice_are_refused() {
    let m = step_problems(
        "steps:\n  - name: a\n    run: x\n  - name: b\n    needs: [b, a, a]\n    run: y\n",
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:5:13: step `b` cannot need itself",
            "jobs/wf.yaml:5:19: `a` is listed twice in needs",
        ]
    );
}

#[test]
fn needs_cycles_are_reported_once_each_at_the_edge_that_closes_them() {
    let m = step_problems(
        r#"steps:
  - name: a
    needs: [c]
    run: x
  - name: b
    run: x
  - name: c
    run: x
  - name: d
    needs: [e]
    run: x
  - name: e
    needs: [d, a]
    run: x
"#,
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:3:13: needs: cycle c -> b -> a -> c (each step needs the next; a step without `needs` needs the step listed before it): a step cannot wait for itself",
            "jobs/wf.yaml:13:13: needs: cycle d -> e -> d (each step needs the next): a step cannot wait for itself",
        ]
    );
}

#[test]
fn step_names_are_checked() {
    let m = step_problems(
        "steps:\n  - name: fetch\n    run: x\n  - name: Fetch-User\n    run: x\n  - name: fetch\n    run: x\n  - run: x\n",
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:4:11: step name `Fetch-User` must be lowercase letters, digits and `_`, starting with a letter (it is read as `steps.NAME` in templates)",
            "jobs/wf.yaml:6:11: a step named `fetch` already exists (line 2): step names must be unique in a job",
            "jobs/wf.yaml:8:5: a step needs `name:` (lowercase letters, digits and `_`, unique in the job)",
        ]
    );
}

#[test]
fn a_step_has_exactly_one_kind() {
    let m = step_problems(
        "steps:\n  - name: a\n    run: x\n    sleep: 0s\n  - name: b\n    timeout: 5s\n",
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:4:5: a step does exactly one thing: this one has `run` and `sleep` (keep one of `run`, `command`, `http`, `sql`, `notify`, `sleep`, `sleep_until`, `wait_for`, and make the others steps of their own)",
            // Each kind given is still read.
            "jobs/wf.yaml:4:12: sleep must be longer than 0 (leave the step out for no delay)",
            "jobs/wf.yaml:5:5: a step needs one of `run`, `command`, `http`, `sql`, `notify`, `sleep`, `sleep_until` or `wait_for` (what the step does)",
        ]
    );
}

#[test]
fn templates_in_text_that_is_never_rendered_are_refused() {
    let m = step_problems(
        r#"steps:
  - name: a
    run: ./fetch --user {{ input.user_id }}
  - name: b
    command: [curl, "https://x/{{steps.a.outputs.url}}"]
  - name: c
    sql: { url: "postgres://h/db", query: "SELECT * FROM t WHERE id = {{ run.id }}" }
  - name: d
    sql: { url: "mysql://h/db", query: "DELETE FROM t WHERE id = '{{ input.id }}'" }
"#,
    );
    assert_eq!(
        m,
        vec![
            r#"jobs/wf.yaml:3:10: run is never rendered: `{{ input.user_id }}` would reach the shell as written; pass the value through `env` instead (`env: { USER_ID: "{{ input.user_id }}" }`) and write "$USER_ID" in the shell line"#,
            r#"jobs/wf.yaml:5:21: command[1] is never rendered: `{{steps.a.outputs.url}}` would reach the program as written; pass the value through `env` instead (`env: { URL: "{{steps.a.outputs.url}}" }`), which the program reads from its environment"#,
            r#"jobs/wf.yaml:7:43: sql.query is never rendered: `{{ run.id }}` would reach the database as written; pass the value through `params` instead (`params: ["{{ run.id }}"]`) and write a placeholder such as `$1` in the query"#,
            r#"jobs/wf.yaml:9:40: sql.query is never rendered: `{{ input.id }}` would reach the database as written; pass the value through `params` instead (`params: ["{{ input.id }}"]`) and write a placeholder such as `?` in the query"#,
        ]
    );
}

#[test]
fn other_braces_in_commands_are_plain_text() {
    let m = step_problems(
        "steps:\n  - name: list\n    run: docker ps --format '{{.Names}}'\n  - name: argv\n    command: [docker, inspect, -f, '{{ .State.Running }}', x]\n",
    );
    assert_eq!(m, Vec::<String>::new());
}

#[test]
fn templates_must_parse_and_read_only_the_context() {
    let m = step_problems(
        r#"steps:
  - name: fetch
    run: x
    env: { A: "{{ input.x ", B: "{{ inputs.x }}", C: "{{ steps.fech.outputs.y }}", D: "{{ secret }}" }
  - name: send
    if: "steps.fetch.state == 'succeeded' and"
    http: { url: "https://x/{{ steps.nope.outputs.id }}" }
  - name: skip
    if: "{{ input.go }}"
    sleep: 1s
  - name: cond
    if: "stepz.fetch.state == 'failed'"
    sleep: 1s
"#,
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:4:15: env.A: the template does not parse: syntax error: unexpected end of input, expected end of variable block",
            "jobs/wf.yaml:4:33: env.B: `inputs.x` is not in a template's context (did you mean `input`? names start with `input`, `steps` or `run`)",
            "jobs/wf.yaml:4:54: env.C: `steps.fech.outputs.y` names no step of this job (did you mean `steps.fetch`?)",
            "jobs/wf.yaml:4:87: env.D: `secret` is not in a template's context (names start with `input`, `steps` or `run`)",
            "jobs/wf.yaml:6:9: if: `steps.fetch.state == 'succeeded' and` is not a valid expression: syntax error: unexpected end of input, expected expression",
            "jobs/wf.yaml:7:18: http.url: `steps.nope.outputs.id` names no step of this job",
            "jobs/wf.yaml:9:9: if: write a bare expression, without `{{ }}`: `if: \"input.go\"`",
            "jobs/wf.yaml:12:9: if: `stepz.fetch.state` is not in a template's context (did you mean `steps`? names start with `input`, `steps` or `run`)",
        ]
    );
}

#[test]
fn notify_channels_are_checked_against_alerts() {
    let m = step_problems(
        r#"steps:
  - name: a
    notify: { channel: ops-slak, text: hi }
  - name: b
    notify: { channel: ops-slack, text: hi, to: [a@example.com], subject: s }
  - name: c
    notify: { channel: ops-email, text: hi, to: [not-an-address, "{{ input.to }}"], subject: "{{ input.s }}" }
  - name: d
    notify: { channel: ops-email }
"#,
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:3:24: notify.channel: unknown channel `ops-slak`: alerts.yaml defines no such channel (did you mean `ops-slack`?)",
            "jobs/wf.yaml:5:45: notify.to is only for e-mail channels; `ops-slack` is a slack channel (remove `to`)",
            "jobs/wf.yaml:5:66: notify.subject is only for e-mail channels; `ops-slack` is a slack channel (remove `subject`)",
            "jobs/wf.yaml:7:50: notify.to[0]: `not-an-address` is not an e-mail address",
            "jobs/wf.yaml:9:13: a notify step needs `text:` (the message)",
        ]
    );
    // A channel of a broken alerts.yaml is not also called unknown; without alerts.yaml, every
    // channel is.
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "jobs/wf.yaml",
        "steps:\n  - name: a\n    notify: { channel: pager, text: hi }\n",
    );
    write(
        t.path(),
        "alerts.yaml",
        "channels:\n  pager: { type: pagerduty }\n",
    );
    let m = messages(&load(t.path()).unwrap_err());
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("alerts.yaml:2:18: type must be one of"),
        "{m:?}"
    );
    fs::remove_file(t.path().join("alerts.yaml")).unwrap();
    assert_eq!(
        messages(&load(t.path()).unwrap_err()),
        vec![
            "jobs/wf.yaml:3:24: notify.channel: unknown channel `pager`: alerts.yaml defines no such channel"
        ]
    );
}

#[test]
fn http_steps_are_checked() {
    let m = step_problems(
        r#"steps:
  - name: a
    http: { url: "not a url", method: fetch }
  - name: b
    http: { url: "ftp://files.example.com/x", json: { a: 1 }, body: "x" }
  - name: c
    http: { url: "{{ input.base }}/x", expect: [200, 42] }
  - name: d
    http: { method: get, expect: [] }
  - name: e
    http: { url: "https://x", headers: { "X Bad": y, Ok: "a\nb" }, timeout: 1s }
    timeout: 2s
"#,
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:3:18: http.url `not a url` is not an absolute URL (relative URL without a base): write e.g. `https://api.example.com/v1/items`",
            "jobs/wf.yaml:3:39: http.method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, found `fetch`",
            "jobs/wf.yaml:5:18: http.url `ftp://files.example.com/x` must be an http or https URL, not `ftp` (e.g. `https://api.example.com/v1/items`)",
            "jobs/wf.yaml:5:63: http: give either `json` (a JSON body) or `body` (text), not both",
            "jobs/wf.yaml:7:18: http.url `{{ input.base }}/x` must start with `http://` or `https://` before any template (e.g. `https://api.example.com/users/{{ input.user_id }}`)",
            "jobs/wf.yaml:7:54: http.expect must be between 100 and 599, found 42",
            "jobs/wf.yaml:9:11: an http step needs `url:` (e.g. `url: https://api.example.com/v1/items`)",
            "jobs/wf.yaml:9:34: http.expect must name at least one status (leave it out to accept any 2xx)",
            "jobs/wf.yaml:11:42: http.headers: `X Bad` is not a valid header name (letters, digits and `-`, e.g. `Content-Type`)",
            "jobs/wf.yaml:11:58: http.headers.Ok: the value holds characters a header cannot carry (such as a line break)",
            "jobs/wf.yaml:11:68: give the timeout once: either the step's `timeout` or `http.timeout`",
        ]
    );
}

#[test]
fn sql_sleep_and_wait_steps_are_checked() {
    let m = step_problems(
        r#"steps:
  - name: a
    sql: { url: "oracle://u:hunter2@h/db", query: "SELECT 1" }
  - name: b
    sql: { url: "sqlite://", query: "" }
  - name: c
    sleep_until: "next tuesday"
  - name: d
    sleep_until: "2030-13-01T00:00:00Z"
  - name: e
    wait_for: { signal: "not ok!", timeout: 0s }
  - name: f
    sql: { url: "postgres://h/{{ input.db }}", query: "SELECT 1", params: [[1]] }
"#,
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:3:17: sql.url must start with postgres://, postgresql://, mysql://, mariadb://, sqlite:// (e.g. `postgres://user:password@host/db` or `sqlite:///var/lib/app.db`; the value is not shown: it may hold a password)",
            "jobs/wf.yaml:5:17: sql.url: a sqlite URL needs a file: `sqlite:///absolute/path.db` or `sqlite://path/relative/to/the/config.db`",
            "jobs/wf.yaml:5:37: sql.query must not be empty",
            "jobs/wf.yaml:7:18: sleep_until: `next tuesday` is not an RFC 3339 time (write e.g. `2030-06-01T09:00:00Z`, or a template such as `{{ input.send_at }}`)",
            "jobs/wf.yaml:9:18: sleep_until: `2030-13-01T00:00:00Z` is not an RFC 3339 time (write e.g. `2030-06-01T09:00:00Z`, or a template such as `{{ input.send_at }}`)",
            "jobs/wf.yaml:11:25: wait_for.signal `not ok!` may hold only letters, digits, `_`, `.` and `-` (it is named on the command line: `worker signal RUN NAME`)",
            "jobs/wf.yaml:11:45: wait_for.timeout must be longer than 0 (leave it out to wait without limit)",
            "jobs/wf.yaml:13:17: sql.url is not a template (it is read when the configuration loads): take it from the environment with `${VAR}` instead",
            "jobs/wf.yaml:13:76: sql.params[0] must be a single value (a string, number, boolean, null or template), found a list",
        ]
    );
    assert!(m.iter().all(|l| !l.contains("hunter2")), "{m:?}");
}

#[test]
fn parallel_needs_steps() {
    let m = step_problems("run: x\nparallel: 2\n");
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:2:1: parallel caps the steps of one run running at once, so it needs `steps:` (for simultaneous runs of a job, use `concurrency`)"
        ]
    );
    let m = step_problems("steps: [{ name: a, run: x }]\nparallel: 1001\n");
    assert_eq!(
        m,
        vec!["jobs/wf.yaml:2:11: parallel must be between 1 and 1000, found 1001"]
    );
}

#[test]
fn input_fields_are_checked() {
    let m = step_problems(
        "run: x\ninput:\n  user_id: { required: true, default: 3 }\n  2fa: {}\n  plan: free\n  day: { requird: true }\n",
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:3:30: input.user_id: a field is either `required: true` or has a `default`, not both (remove one)",
            "jobs/wf.yaml:4:3: input: `2fa` is not a valid field name (letters, digits and `_`, not starting with a digit)",
            "jobs/wf.yaml:5:9: input.plan must be { required: true } or { default: VALUE }, found a string",
            "jobs/wf.yaml:6:10: unknown field `requird` in an input field (did you mean `required`?)",
        ]
    );
}

#[test]
fn unknown_keys_in_steps_name_the_fields_of_their_kind() {
    let m = step_problems(
        r#"steps:
  - name: a
    run: x
    timout: 5s
  - name: b
    http: { url: "https://x", methd: POST }
    env: { A: b }
  - name: c
    wait_for: { signal: go, timeot: 1h }
"#,
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:4:5: unknown field `timout` in a `run` step (did you mean `timeout`?)",
            "jobs/wf.yaml:6:31: unknown field `methd` in http (did you mean `method`?)",
            "jobs/wf.yaml:7:5: unknown field `env` in an `http` step (known fields: name, needs, if, allow_failure, retry, timeout, http)",
            "jobs/wf.yaml:9:29: unknown field `timeot` in wait_for (did you mean `timeout`?)",
        ]
    );
}

#[test]
fn step_retry_and_timeout_are_checked_like_a_jobs() {
    let m = step_problems(
        "steps:\n  - name: a\n    run: x\n    retry: { attempts: 0, backof: fixed }\n    timeout: 0s\n    allow_failure: maybe\n",
    );
    assert_eq!(
        m,
        vec![
            "jobs/wf.yaml:4:24: retry.attempts must be between 1 and 1000, found 0",
            "jobs/wf.yaml:4:27: unknown field `backof` in retry (did you mean `backoff`?)",
            "jobs/wf.yaml:5:14: timeout must be longer than 0 (leave it out for the default)",
            "jobs/wf.yaml:6:20: allow_failure must be true or false, found `maybe`",
        ]
    );
}

#[test]
fn fifty_chained_steps_validate_quickly() {
    let t = tempfile::tempdir().unwrap();
    let mut text = String::from("input:\n  x: { required: true }\n  y: { default: 1 }\nsteps:\n");
    for i in 0..50 {
        text.push_str(&format!(
            "  - name: s{i}\n    run: ./step {i} --format '{{{{.ID}}}}'\n"
        ));
        if i > 0 {
            let p = i - 1;
            text.push_str(&format!(
                "    if: \"steps.s{p}.state == 'succeeded' and input.x > {i}\"\n    env: {{ PREV: \"{{{{ steps.s{p}.outputs.v }}}}\", X: \"{{{{ input.x | default(0) }}}}-{{{{ run.id }}}}\" }}\n"
            ));
        }
    }
    write(t.path(), "jobs/chain.yaml", &text);
    let started = std::time::Instant::now();
    let c = load(t.path()).unwrap_or_else(|d| panic!("{d}"));
    let elapsed = started.elapsed();
    let wf = c.jobs["chain"].workflow().unwrap();
    assert_eq!(wf.steps.len(), 50);
    assert_eq!(wf.steps[49].needs, vec![48]);
    assert!(
        elapsed < std::time::Duration::from_millis(100),
        "loading 50 steps took {elapsed:?}"
    );
}

#[test]
fn database_node_and_node_timeout() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "scheduler.yaml",
        "database: postgres://worker:pw-1234567890@db.internal/worker?sslmode=require\nnode: web-1\nnode_timeout: 12s\n",
    );
    let c = load(t.path()).unwrap();
    assert_eq!(
        c.settings.database.as_deref(),
        Some("postgres://worker:pw-1234567890@db.internal/worker?sslmode=require")
    );
    assert_eq!(c.settings.node, "web-1");
    assert_eq!(c.settings.node_timeout, std::time::Duration::from_secs(12));
    // The password is a secret.
    assert_eq!(c.secrets.mask("pw-1234567890"), "***");
    // WORKER_DATABASE_URL wins over the file.
    let from_env = Config::load_with_env(t.path(), &|n| {
        (n == "WORKER_DATABASE_URL").then(|| "postgresql://other/db".to_string())
    })
    .unwrap();
    assert_eq!(
        from_env.settings.database.as_deref(),
        Some("postgresql://other/db")
    );
    write(
        t.path(),
        "scheduler.yaml",
        "database: mysql://root:secret@db/x\nnode: two words\nnode_timeout: 1s\n",
    );
    let m = messages(&load(t.path()).unwrap_err());
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(
        m[0].starts_with("scheduler.yaml:1:11: database: `mysql://db/x` is not a PostgreSQL URL"),
        "{m:?}"
    );
    assert!(!m[0].contains("secret"), "{m:?}");
    assert!(
        m[1].starts_with("scheduler.yaml:2:7: node: `two words` is not a usable node name"),
        "{m:?}"
    );
    assert!(
        m[2].starts_with("scheduler.yaml:3:15: node_timeout must be at least 3s"),
        "{m:?}"
    );
    // Defaults: SQLite, the host name, 30 s.
    write(t.path(), "scheduler.yaml", "");
    let c = load(t.path()).unwrap();
    assert_eq!(c.settings.database, None);
    assert_eq!(c.settings.node, crate::config::scheduler::host_name());
    assert_eq!(c.settings.node_timeout, std::time::Duration::from_secs(30));
}
