//! `jobs/NAME.yaml`: one job per file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::Pos;
use super::yaml::{Ctx, Node};
use crate::model::Priority;
use crate::queue::retry::{Backoff, DEFAULT_RETRY_POLICY, RetryPolicy};

/// How a job's process is started.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub exec: Exec,
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
}

impl JobDef {
    pub fn dependency_names(&self) -> impl Iterator<Item = &str> {
        self.depends_on.iter().map(|(n, _)| n.as_str())
    }
}

const JOB_FIELDS: &[&str] = &[
    "description",
    "run",
    "command",
    "workdir",
    "env",
    "timeout",
    "priority",
    "depends_on",
    "concurrency",
    "retry",
    "output_limit",
];
const RETRY_FIELDS: &[&str] = &["attempts", "backoff", "initial", "max", "jitter"];

/// What reading a job file produced: the job, when the file had no problem (all problems are
/// reported to the context), and its `depends_on` entries either way, so that references from a
/// broken file are still checked.
pub struct ParsedJob {
    pub job: Option<JobDef>,
    pub depends_on: Vec<(String, Pos)>,
}

/// Reads a job from its document.
pub fn parse_job(ctx: &mut Ctx<'_>, name: &str, doc: &Node, config_dir: &Path) -> ParsedJob {
    let mut depends_on = Vec::new();
    let job = parse_job_inner(ctx, name, doc, config_dir, &mut depends_on);
    ParsedJob { job, depends_on }
}

fn parse_job_inner(
    ctx: &mut Ctx<'_>,
    name: &str,
    doc: &Node,
    config_dir: &Path,
    depends_on: &mut Vec<(String, Pos)>,
) -> Option<JobDef> {
    let errors_before = ctx.diags.len();
    let mut m = ctx.map(doc, "a job file")?;

    let description = m
        .get("description")
        .and_then(|n| ctx.string(n, "description"));

    let run = m.get_entry("run");
    let command = m.get_entry("command");
    let exec = match (run, command) {
        (Some(_), Some((k, _))) => {
            ctx.error(
                k.pos,
                "a job has either `run` (a shell line) or `command` (an argv list), not both",
            );
            None
        }
        (None, None) => {
            ctx.error(
                m.pos,
                "a job needs `run: <shell line>` or `command: [program, args...]`",
            );
            None
        }
        (Some((_, n)), None) => ctx.nonempty_string(n, "run").map(Exec::Shell),
        (None, Some((_, n))) => match ctx.string_list(n, "command", false) {
            Some(argv) if argv.is_empty() => {
                ctx.error(
                    n.pos,
                    "command must name a program: `command: [program, args...]`",
                );
                None
            }
            Some(argv) if argv[0].0.is_empty() => {
                ctx.error(argv[0].1, "command: the program name is empty");
                None
            }
            Some(argv) => Some(Exec::Argv(argv.into_iter().map(|(s, _)| s).collect())),
            None => None,
        },
    };

    let workdir = match m.get("workdir") {
        Some(n) => ctx.nonempty_string(n, "workdir").and_then(|w| {
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
        }),
        None => Some(config_dir.to_path_buf()),
    };

    let env = match m.get("env") {
        Some(n) => ctx.env_map(n, "env"),
        None => Some(BTreeMap::new()),
    };

    let timeout = match m.get("timeout") {
        Some(n) => match ctx.duration(n, "timeout") {
            Some(d) if d.is_zero() => {
                ctx.error(
                    n.pos,
                    "timeout must be longer than 0 (leave it out for no timeout)",
                );
                None
            }
            d => d,
        },
        None => None,
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

    m.finish(ctx, "a job", JOB_FIELDS);

    if ctx.diags.len() > errors_before {
        return None;
    }
    Some(JobDef {
        name: name.to_string(),
        file: ctx.file.clone(),
        description,
        exec: exec?,
        workdir: workdir?,
        env: env?,
        timeout,
        priority,
        depends_on: depends_on.clone(),
        concurrency,
        retry,
        output_limit,
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

fn parse_retry(ctx: &mut Ctx<'_>, node: &Node) -> RetryPolicy {
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
