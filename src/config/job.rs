//! `jobs/NAME.yaml`: one job per file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::diag::Pos;
use super::workflow::{self, ChannelRef};
use super::yaml::{Ctx, Key, Node};
use crate::model::Priority;
use crate::queue::retry::{Backoff, DEFAULT_RETRY_POLICY, RetryPolicy};
use crate::workflow::model::{InputSpec, Workflow};

/// How a job's process is started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exec {
    /// `run:` a string given to `/bin/sh -c`.
    Shell(String),
    /// `command:` an argv list, executed without a shell.
    Argv(Vec<String>),
}

/// A job definition.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDef {
    /// The file stem.
    pub name: String,
    /// The file, as reached from `--config` (for messages).
    pub file: String,
    pub description: Option<String>,
    /// What a run does: one process, or a graph of steps.
    pub body: JobBody,
    /// `input:`: the fields of a run's JSON input (`None`: any object).
    pub input: Option<InputSpec>,
    /// Working directory (relative paths are resolved against the config directory).
    pub workdir: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Limit on a whole attempt.
    pub timeout: Option<Duration>,
    pub priority: Priority,
    /// Jobs that must succeed before a run of this one starts, with where each was written.
    pub depends_on: Vec<(String, Pos)>,
    /// Maximum simultaneous runs of this job.
    pub concurrency: u32,
    pub retry: RetryPolicy,
    /// Per-attempt cap on captured output; `None` uses the global `output_limit`.
    pub output_limit: Option<u64>,
    /// Who the job runs as (`user`, `group`); `None`: as worker itself.
    pub identity: Option<Identity>,
    /// `nice` and `limits`.
    pub limits: Limits,
}

/// Who a job runs as, resolved against this host's user and group databases when the
/// configuration is loaded (so that nothing is looked up in the child process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `user:`; `None` when only `group:` is given (the job keeps worker's user and its
    /// supplementary groups).
    pub user: Option<RunAs>,
    /// `group:` when given, else the user's primary group.
    pub gid: u32,
    /// The group's name (or its number, when it has no entry), for messages.
    pub group_name: String,
}

/// The user of `user:`, from its passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    /// The home directory (the job's `HOME`).
    pub home: String,
    /// Supplementary groups: the user's groups as `getgrouplist` lists them for [`Identity::gid`].
    pub groups: Vec<u32>,
}

/// Scheduling priority and resource limits of a job's process (each applied as an rlimit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `nice:` -20..=19.
    pub nice: Option<i32>,
    /// `limits.memory` in bytes: RLIMIT_DATA.
    pub memory: Option<u64>,
    /// `limits.cpu_time` as written: RLIMIT_CPU, in whole seconds rounded up.
    pub cpu_time: Option<Duration>,
    /// `limits.open_files`: RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// `limits.processes`: RLIMIT_NPROC.
    pub processes: Option<u64>,
}

impl Limits {
    /// Whether nothing is set (the job's process is started exactly as worker's own children).
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// `limits.cpu_time` in whole seconds: rounded up, at least 1.
    pub fn cpu_seconds(&self) -> Option<u64> {
        self.cpu_time
            .map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
    }
}

/// A job's `run`/`command` (one process) or `steps` (a workflow).
#[derive(Debug, Clone, PartialEq)]
pub enum JobBody {
    Exec(Exec),
    Steps(Arc<Workflow>),
}

impl JobDef {
    pub fn dependency_names(&self) -> impl Iterator<Item = &str> {
        self.depends_on.iter().map(|(n, _)| n.as_str())
    }

    /// The workflow, for a job with `steps:`.
    pub fn workflow(&self) -> Option<&Arc<Workflow>> {
        match &self.body {
            JobBody::Steps(w) => Some(w),
            JobBody::Exec(_) => None,
        }
    }
}

const JOB_FIELDS: &[&str] = &[
    "description",
    "run",
    "command",
    "steps",
    "input",
    "parallel",
    "workdir",
    "env",
    "timeout",
    "priority",
    "depends_on",
    "concurrency",
    "retry",
    "output_limit",
    "user",
    "group",
    "nice",
    "limits",
];
const LIMIT_FIELDS: &[&str] = &["memory", "cpu_time", "open_files", "processes"];
const RETRY_FIELDS: &[&str] = &["attempts", "backoff", "initial", "max", "jitter"];

/// What reading a job file produced: the job, when the file had no problem (all problems are
/// reported to the context), and what must be checked against other files either way (its
/// `depends_on` entries, the channels its `notify` steps name), so that references from a broken
/// file are still checked.
pub struct ParsedJob {
    pub job: Option<JobDef>,
    pub depends_on: Vec<(String, Pos)>,
    /// The `notify` steps' channels, checked once `alerts.yaml` is read.
    pub channels: Vec<ChannelRef>,
    /// Values to mask wherever text leaves the process (e.g. the password of a `sql` step's URL).
    pub secrets: Vec<String>,
}

/// Reads a job from its document.
pub fn parse_job(ctx: &mut Ctx<'_>, name: &str, doc: &Node, config_dir: &Path) -> ParsedJob {
    let mut out = ParsedJob {
        job: None,
        depends_on: Vec::new(),
        channels: Vec::new(),
        secrets: Vec::new(),
    };
    out.job = parse_job_inner(ctx, name, doc, config_dir, &mut out);
    out
}

fn parse_job_inner(
    ctx: &mut Ctx<'_>,
    name: &str,
    doc: &Node,
    config_dir: &Path,
    out: &mut ParsedJob,
) -> Option<JobDef> {
    let errors_before = ctx.diags.len();
    let depends_on = &mut out.depends_on;
    let mut m = ctx.map(doc, "a job file")?;

    let description = m
        .get("description")
        .and_then(|n| ctx.string(n, "description"));

    let timeout = m
        .get("timeout")
        .and_then(|n| positive_duration(ctx, n, "timeout", "leave it out for no timeout"));

    // What a run does: exactly one of `run`, `command`, `steps`. Each one given is read (so that
    // its own problems are reported too), but a job with more than one has no body.
    let bodies: Vec<(&Key, &Node)> = ["run", "command", "steps"]
        .into_iter()
        .filter_map(|k| m.get_entry(k))
        .collect();
    if bodies.is_empty() {
        ctx.error(
            m.pos,
            "a job needs `run: <shell line>`, `command: [program, args...]` or `steps: [...]` (see Workflows)",
        );
    } else if bodies.len() > 1 {
        let mut written: Vec<&Key> = bodies.iter().map(|(k, _)| *k).collect();
        written.sort_by_key(|k| (k.pos.line, k.pos.col));
        let names: Vec<String> = written.iter().map(|k| format!("`{}`", k.name)).collect();
        let found = match names.as_slice() {
            [a, b] => format!("both {a} and {b}"),
            _ => names.join(", "),
        };
        ctx.error(
            written[1].pos,
            format!("a job has exactly one of `run`, `command` or `steps`; this one has {found} (keep one)"),
        );
    }
    let mut body = None;
    for (k, n) in &bodies {
        let read = match k.name.as_str() {
            "run" => ctx
                .nonempty_string(n, "run")
                .map(|s| JobBody::Exec(Exec::Shell(s))),
            "command" => parse_command(ctx, n, "command")
                .map(|argv| JobBody::Exec(Exec::Argv(argv.into_iter().map(|(s, _)| s).collect()))),
            _ => workflow::parse_steps(
                ctx,
                n,
                config_dir,
                timeout,
                &mut out.channels,
                &mut out.secrets,
            )
            .map(|steps| {
                JobBody::Steps(Arc::new(Workflow {
                    steps,
                    parallel: None,
                }))
            }),
        };
        if bodies.len() == 1 {
            body = read;
        }
    }

    let input = m.get("input").and_then(|n| workflow::parse_input(ctx, n));

    if let Some((k, n)) = m.get_entry("parallel") {
        let parallel = ctx.int(n, "parallel", 1, 1000).map(|p| p as u32);
        match &mut body {
            Some(JobBody::Steps(wf)) => Arc::make_mut(wf).parallel = parallel,
            _ if !m.has("steps") => ctx.error(
                k.pos,
                "parallel caps the steps of one run running at once, so it needs `steps:` (for simultaneous runs of a job, use `concurrency`)",
            ),
            _ => {}
        }
    }

    let workdir = match m.get("workdir") {
        Some(n) => parse_workdir(ctx, n, config_dir),
        None => Some(config_dir.to_path_buf()),
    };

    let env = match m.get("env") {
        Some(n) => ctx.env_map(n, "env"),
        None => Some(BTreeMap::new()),
    };

    let priority = match m.get("priority") {
        Some(n) => ctx
            .choice(n, "priority", &Priority::ALL)
            .unwrap_or_default(),
        None => Priority::Normal,
    };

    if let Some(n) = m.get("depends_on") {
        for (dep, pos) in ctx.string_list(n, "depends_on", true).unwrap_or_default() {
            if dep == name {
                ctx.error(pos, format!("job `{name}` cannot depend on itself"));
            } else if depends_on.iter().any(|(d, _)| *d == dep) {
                ctx.error(pos, format!("`{dep}` is listed twice in depends_on"));
            } else {
                depends_on.push((dep, pos));
            }
        }
    }

    let concurrency = match m.get("concurrency") {
        Some(n) => ctx
            .int(n, "concurrency", 1, 10_000)
            .map(|c| c as u32)
            .unwrap_or(1),
        None => 1,
    };

    let retry = match m.get("retry") {
        Some(n) => parse_retry(ctx, n),
        None => DEFAULT_RETRY_POLICY,
    };

    let output_limit = match m.get("output_limit") {
        Some(n) => ctx
            .size(n, "output_limit")
            .and_then(|s| check_output_limit(ctx, n.pos, s)),
        None => None,
    };

    let identity = parse_identity(ctx, m.get("user"), m.get("group"));
    let mut limits = match m.get("limits") {
        Some(n) => parse_limits(ctx, n),
        None => Limits::default(),
    };
    limits.nice = m
        .get("nice")
        .and_then(|n| ctx.int(n, "nice", -20, 19))
        .map(|n| n as i32);

    m.finish(ctx, "a job", JOB_FIELDS);

    if ctx.diags.len() > errors_before {
        return None;
    }
    Some(JobDef {
        name: name.to_string(),
        file: ctx.file.clone(),
        description,
        body: body?,
        input,
        workdir: workdir?,
        env: env?,
        timeout,
        priority,
        depends_on: depends_on.clone(),
        concurrency,
        retry,
        output_limit,
        identity,
        limits,
    })
}

/// Output limits below a few KiB would make logs useless; above 1 GiB they stop being a limit.
pub fn check_output_limit(ctx: &mut Ctx<'_>, pos: Pos, size: u64) -> Option<u64> {
    if !(4096..=(1 << 30)).contains(&size) {
        ctx.error(pos, "output_limit must be between 4KiB and 1GiB");
        return None;
    }
    Some(size)
}

/// `command:` (of a job or a step): an argv list naming a program, each element with its position.
pub(super) fn parse_command(ctx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<(String, Pos)>> {
    let argv = ctx.string_list(n, what, false)?;
    match argv.first() {
        None => {
            ctx.error(
                n.pos,
                format!("{what} must name a program: `{what}: [program, args...]`"),
            );
            None
        }
        Some((program, pos)) if program.is_empty() => {
            ctx.error(*pos, format!("{what}: the program name is empty"));
            None
        }
        Some(_) => Some(argv),
    }
}

/// `workdir:` (of a job or a step): a directory, relative paths resolved against the config
/// directory.
pub(super) fn parse_workdir(ctx: &mut Ctx<'_>, n: &Node, config_dir: &Path) -> Option<PathBuf> {
    let w = ctx.nonempty_string(n, "workdir")?;
    let p = config_dir.join(&w);
    if p.is_dir() {
        Some(p)
    } else {
        ctx.error(
            n.pos,
            format!(
                "workdir `{w}` is not a directory (resolved to {})",
                p.display()
            ),
        );
        None
    }
}

/// A duration that must be longer than zero; `zero_hint` says what to write instead of `0s`.
pub(super) fn positive_duration(
    ctx: &mut Ctx<'_>,
    n: &Node,
    what: &str,
    zero_hint: &str,
) -> Option<Duration> {
    match ctx.duration(n, what) {
        Some(d) if d.is_zero() => {
            ctx.error(n.pos, format!("{what} must be longer than 0 ({zero_hint})"));
            None
        }
        d => d,
    }
}

/// `retry:` of a job or of a step.
pub(super) fn parse_retry(ctx: &mut Ctx<'_>, node: &Node) -> RetryPolicy {
    let mut policy = DEFAULT_RETRY_POLICY;
    let Some(mut m) = ctx.map(node, "retry") else {
        return policy;
    };
    if let Some(n) = m.get("attempts") {
        policy.attempts = ctx
            .int(n, "retry.attempts", 1, 1000)
            .map(|a| a as u32)
            .unwrap_or(1);
    }
    if let Some(n) = m.get("backoff") {
        policy.backoff = ctx
            .choice(
                n,
                "retry.backoff",
                &[
                    ("exponential", Backoff::Exponential),
                    ("fixed", Backoff::Fixed),
                ],
            )
            .unwrap_or(Backoff::Exponential);
    }
    if let Some(n) = m.get("initial") {
        policy.initial = ctx.duration(n, "retry.initial").unwrap_or(policy.initial);
    }
    let max_node = m.get("max");
    if let Some(n) = max_node {
        policy.max = ctx.duration(n, "retry.max").unwrap_or(policy.max);
    }
    if let Some(n) = m.get("jitter") {
        policy.jitter = ctx.bool(n, "retry.jitter").unwrap_or(true);
    }
    if policy.max < policy.initial {
        let pos = max_node.map(|n| n.pos).unwrap_or(m.pos);
        ctx.error(pos, "retry.max must not be shorter than retry.initial");
    }
    m.finish(ctx, "retry", RETRY_FIELDS);
    policy
}

/// `user:` and `group:`, looked up on this host. `None` when neither is given or one is wrong
/// (reported).
fn parse_identity(
    ctx: &mut Ctx<'_>,
    user_node: Option<&Node>,
    group_node: Option<&Node>,
) -> Option<Identity> {
    // Both are looked up before giving up, so that both are reported.
    let user = user_node.map(|n| lookup_user(ctx, n));
    let group = group_node.map(|n| lookup_group(ctx, n));
    if matches!(user, Some(None)) || matches!(group, Some(None)) {
        return None;
    }
    let (user, group) = (user.flatten(), group.flatten());
    let (gid, group_name) = match (&user, group) {
        (_, Some(g)) => g,
        (Some((_, primary)), None) => {
            let name = match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*primary)) {
                Ok(Some(g)) => g.name,
                _ => primary.to_string(),
            };
            (*primary, name)
        }
        (None, None) => return None,
    };
    let user = match (user, user_node) {
        (Some((mut u, _)), Some(n)) => {
            u.groups = supplementary_groups(ctx, n.pos, &u.name, gid)?;
            Some(u)
        }
        _ => None,
    };
    Some(Identity {
        user,
        gid,
        group_name,
    })
}

/// The groups `user` belongs to, `gid` included, as `getgrouplist` lists them.
fn supplementary_groups(ctx: &mut Ctx<'_>, pos: Pos, user: &str, gid: u32) -> Option<Vec<u32>> {
    let listed = std::ffi::CString::new(user)
        .map_err(|e| e.to_string())
        .and_then(|name| {
            nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
                .map_err(|e| e.to_string())
        });
    match listed {
        Ok(groups) => Some(groups.into_iter().map(|g| g.as_raw()).collect()),
        Err(e) => {
            ctx.error(
                pos,
                format!("user: cannot list the groups of `{user}`: {e}"),
            );
            None
        }
    }
}

/// A user by name or numeric uid, with its primary gid.
fn lookup_user(ctx: &mut Ctx<'_>, n: &Node) -> Option<(RunAs, u32)> {
    use nix::unistd::{Uid, User};
    let written = ctx.nonempty_string(n, "user")?;
    let written = written.trim();
    let numeric = !written.is_empty() && written.bytes().all(|b| b.is_ascii_digit());
    let found = if numeric {
        let Ok(uid) = written.parse::<u32>() else {
            ctx.error(
                n.pos,
                format!("user: `{written}` is not a valid uid (write a user name or a uid below 4294967295)"),
            );
            return None;
        };
        User::from_uid(Uid::from_raw(uid))
    } else {
        User::from_name(written)
    };
    let user = match found {
        Ok(Some(u)) => u,
        Ok(None) if numeric => {
            ctx.error(
                n.pos,
                format!("user: no user has uid {written} on this host (write the name or uid of a user listed by `getent passwd`)"),
            );
            return None;
        }
        Ok(None) => {
            ctx.error(
                n.pos,
                format!("user `{written}` does not exist on this host (write the name or uid of a user listed by `getent passwd`)"),
            );
            return None;
        }
        Err(e) => {
            ctx.error(n.pos, format!("user: cannot look up `{written}`: {e}"));
            return None;
        }
    };
    let Ok(home) = user.dir.into_os_string().into_string() else {
        ctx.error(
            n.pos,
            format!(
                "user `{}`: its home directory is not valid UTF-8",
                user.name
            ),
        );
        return None;
    };
    Some((
        RunAs {
            name: user.name,
            uid: user.uid.as_raw(),
            home,
            groups: Vec::new(),
        },
        user.gid.as_raw(),
    ))
}

/// A group by name or numeric gid: its gid and name.
fn lookup_group(ctx: &mut Ctx<'_>, n: &Node) -> Option<(u32, String)> {
    use nix::unistd::{Gid, Group};
    let written = ctx.nonempty_string(n, "group")?;
    let written = written.trim();
    let numeric = !written.is_empty() && written.bytes().all(|b| b.is_ascii_digit());
    let found = if numeric {
        let Ok(gid) = written.parse::<u32>() else {
            ctx.error(
                n.pos,
                format!("group: `{written}` is not a valid gid (write a group name or a gid below 4294967295)"),
            );
            return None;
        };
        Group::from_gid(Gid::from_raw(gid))
    } else {
        Group::from_name(written)
    };
    match found {
        Ok(Some(g)) => Some((g.gid.as_raw(), g.name)),
        Ok(None) if numeric => {
            ctx.error(
                n.pos,
                format!("group: no group has gid {written} on this host (write the name or gid of a group listed by `getent group`)"),
            );
            None
        }
        Ok(None) => {
            ctx.error(
                n.pos,
                format!("group `{written}` does not exist on this host (write the name or gid of a group listed by `getent group`)"),
            );
            None
        }
        Err(e) => {
            ctx.error(n.pos, format!("group: cannot look up `{written}`: {e}"));
            None
        }
    }
}

/// The smallest `limits.memory`: below this, not even a shell starts.
const MIN_MEMORY: u64 = 1 << 20;

fn parse_limits(ctx: &mut Ctx<'_>, node: &Node) -> Limits {
    let mut limits = Limits::default();
    let Some(mut m) = ctx.map(node, "limits") else {
        return limits;
    };
    if let Some(n) = m.get("memory") {
        limits.memory = ctx.size(n, "limits.memory").and_then(|s| {
            if s < MIN_MEMORY {
                ctx.error(
                    n.pos,
                    format!(
                        "limits.memory must be at least 1MiB, found {} (write e.g. `256MiB`)",
                        crate::units::format_size_spec(s)
                    ),
                );
                None
            } else {
                Some(s)
            }
        });
    }
    if let Some(n) = m.get("cpu_time") {
        limits.cpu_time = match ctx.duration(n, "limits.cpu_time") {
            Some(d) if d.is_zero() => {
                ctx.error(
                    n.pos,
                    "limits.cpu_time must be longer than 0 (leave it out for no limit)",
                );
                None
            }
            d => d,
        };
    }
    if let Some(n) = m.get("open_files") {
        limits.open_files = ctx
            .int(n, "limits.open_files", 1, 1 << 20)
            .map(|v| v as u64);
    }
    if let Some(n) = m.get("processes") {
        limits.processes = ctx
            .int(n, "limits.processes", 1, 4_194_304)
            .map(|v| v as u64);
    }
    m.finish(ctx, "limits", LIMIT_FIELDS);
    limits
}
