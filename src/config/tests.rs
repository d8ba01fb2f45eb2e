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
        "jobs/b.yaml:2:1: a job has either `run`",
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
