//! Configuration: `jobs/*.yaml` and `scheduler.yaml` parsed into a typed, validated model.
//!
//! Loading never panics and never stops at the first problem: every problem is collected as a
//! [`Diagnostic`] naming the file, line and column. A configuration with any problem is refused
//! as a whole, so the daemon never runs half of a broken edit.

pub mod alerts;
pub mod diag;
pub mod fingerprint;
pub mod interp;
pub mod job;
pub mod scheduler;
pub mod secrets;
pub mod workflow;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use alerts::{AlertsConfig, Channel, ChannelKind, Rule};
pub use diag::{Diagnostic, Diagnostics, Pos};
pub use fingerprint::Fingerprint;
pub use job::{Exec, JobBody, JobDef};
pub use scheduler::{CatchUp, Overlap, ScheduleDef, Settings};
pub use secrets::Secrets;

use crate::model::is_valid_name;

/// A loaded, valid configuration directory.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory given with `--config`.
    pub dir: PathBuf,
    /// The same, absolute (computed once: jobs get it as `WORKER_CONFIG`).
    pub dir_absolute: String,
    pub jobs: BTreeMap<String, Arc<JobDef>>,
    pub settings: Settings,
    /// The schedules of `scheduler.yaml`, in file order.
    pub schedules: Vec<ScheduleDef>,
    /// Channels and rules of `alerts.yaml`.
    pub alerts: AlertsConfig,
    /// Values to mask wherever text leaves the process.
    pub secrets: Secrets,
    /// The files it was loaded from, as they were read.
    pub sources: Fingerprint,
}

impl Config {
    /// Loads `dir` with the process environment for `${VAR}`.
    pub fn load(dir: &Path) -> Result<Config, Diagnostics> {
        Self::load_with_env(dir, &|name| std::env::var(name).ok())
    }

    /// Loads `dir`, looking `${VAR}` up with `env`.
    pub fn load_with_env(
        dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Diagnostics> {
        let mut diags = Diagnostics::default();
        let config = load_inner(dir, env, &mut diags);
        // Even a rejected configuration's secrets are secrets: mask them in logs from now on.
        secrets::publish(&config.secrets);
        diags
            .0
            .sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        if diags.is_empty() {
            Ok(config)
        } else {
            Err(diags)
        }
    }

    /// A configuration with no jobs and default settings (for commands that can do without).
    pub fn empty(dir: &Path) -> Config {
        Config {
            dir: dir.to_path_buf(),
            dir_absolute: std::path::absolute(dir)
                .unwrap_or_else(|_| dir.to_path_buf())
                .display()
                .to_string(),
            jobs: BTreeMap::new(),
            settings: Settings::default(),
            schedules: Vec::new(),
            alerts: AlertsConfig::default(),
            secrets: Secrets::default(),
            sources: Fingerprint::default(),
        }
    }

    pub fn job(&self, name: &str) -> Option<&Arc<JobDef>> {
        self.jobs.get(name)
    }

    /// The schedules that fire `job`.
    pub fn schedules_of<'a>(&'a self, job: &'a str) -> impl Iterator<Item = &'a ScheduleDef> + 'a {
        self.schedules.iter().filter(move |s| s.job == job)
    }

    /// The per-attempt output cap for `job`.
    pub fn output_limit(&self, job: &JobDef) -> u64 {
        job.output_limit.unwrap_or(self.settings.output_limit)
    }
}

/// How a file inside the config directory is named in messages: as reached from `--config`.
pub fn display_path(dir: &Path, rel: &str) -> String {
    if dir.as_os_str().is_empty() || dir == Path::new(".") {
        rel.to_string()
    } else {
        dir.join(rel).display().to_string()
    }
}

/// Reads and parses one optional YAML file. `None` when absent or broken (broken is reported).
fn read_yaml(
    dir: &Path,
    rel: &str,
    display: &str,
    sources: &mut Fingerprint,
    diags: &mut Diagnostics,
) -> Option<(String, yaml::Node)> {
    let bytes = match std::fs::read(dir.join(rel)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            diags.push(display, Pos::NONE, format!("cannot read: {e}"));
            return None;
        }
    };
    sources.add(rel, &bytes);
    let Ok(src) = String::from_utf8(bytes) else {
        diags.push(display, Pos::NONE, "not valid UTF-8 text");
        return None;
    };
    match yaml::parse(&src) {
        Ok(node) => Some((src, node)),
        Err((pos, msg)) => {
            diags.push(display, pos, msg);
            None
        }
    }
}

/// `WORKER_DATABASE_URL`, checked, if set and not empty.
fn database_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    match env(scheduler::DATABASE_ENV) {
        Some(url) if !url.trim().is_empty() => scheduler::check_database_url(url.trim())
            .map(Some)
            .map_err(|e| format!("{}: {e}", scheduler::DATABASE_ENV)),
        _ => Ok(None),
    }
}

/// Where the store is, for a command that needs nothing else from the configuration:
/// `WORKER_DATABASE_URL`, else `database:` in `scheduler.yaml`, else `None` (SQLite in the data
/// directory). Reads only that key, so a mistake elsewhere in the files does not keep a person
/// from looking at their runs.
pub fn database_setting(dir: &Path) -> Result<Option<String>, Diagnostics> {
    let env = |name: &str| std::env::var(name).ok();
    let mut diags = Diagnostics::default();
    let from_env = database_from_env(&env);
    let found = match from_env {
        Ok(Some(url)) => Some(url),
        Err(e) => {
            diags.push(scheduler::DATABASE_ENV, Pos::NONE, e);
            None
        }
        Ok(None) => {
            let display = display_path(dir, "scheduler.yaml");
            let mut sources = Fingerprint::default();
            let mut url = None;
            if let Some((src, node)) =
                read_yaml(dir, "scheduler.yaml", &display, &mut sources, &mut diags)
            {
                let mut ctx = yaml::Ctx::new(display.clone(), &src, &env, &mut diags);
                if let Some(mut m) = ctx.map(&node, "scheduler.yaml")
                    && let Some(n) = m.get("database")
                {
                    url = scheduler::parse_database(&mut ctx, n);
                }
            }
            url
        }
    };
    if diags.is_empty() {
        Ok(found)
    } else {
        Err(diags)
    }
}

fn load_inner(dir: &Path, env: &dyn Fn(&str) -> Option<String>, diags: &mut Diagnostics) -> Config {
    let mut config = Config::empty(dir);

    if !dir.is_dir() {
        diags.push(
            &dir.display().to_string(),
            Pos::NONE,
            "the configuration directory does not exist",
        );
        return config;
    }

    // jobs/*.yaml
    let jobs_dir = dir.join("jobs");
    let mut job_files: Vec<(String, PathBuf)> = Vec::new();
    match std::fs::read_dir(&jobs_dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(file_name) = path
                    .file_name()
                    .and_then(|f| f.to_str())
                    .map(str::to_string)
                else {
                    continue;
                };
                if file_name.starts_with('.') || !path.is_file() {
                    continue;
                }
                if let Some(stem) = file_name.strip_suffix(".yaml") {
                    job_files.push((stem.to_string(), path));
                } else if file_name.ends_with(".yml") {
                    let display = display_path(dir, &format!("jobs/{file_name}"));
                    diags.push(
                        &display,
                        Pos::NONE,
                        "job files must end in `.yaml` (rename this file)",
                    );
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => diags.push(
            &display_path(dir, "jobs"),
            Pos::NONE,
            format!("cannot read directory: {e}"),
        ),
    }
    job_files.sort();

    // Names of every job file, parsed or not, so a dependency on a broken job is not also
    // reported as a dependency on a missing one.
    let all_names: BTreeSet<String> = job_files.iter().map(|(n, _)| n.clone()).collect();
    let mut references: Vec<(String, String, Pos)> = Vec::new();
    let mut channel_refs: Vec<(String, workflow::ChannelRef)> = Vec::new();
    for (name, _) in &job_files {
        let display = display_path(dir, &format!("jobs/{name}.yaml"));
        if !is_valid_name(name) {
            diags.push(
                &display,
                Pos::NONE,
                format!("`{name}` is not a valid job name: use lowercase letters, digits, `.`, `_`, `-`, starting with a letter or digit"),
            );
            continue;
        }
        let rel = format!("jobs/{name}.yaml");
        let Some((src, node)) = read_yaml(dir, &rel, &display, &mut config.sources, diags) else {
            continue;
        };
        let mut ctx = yaml::Ctx::new(display.clone(), &src, env, diags);
        let parsed = job::parse_job(&mut ctx, name, &node, dir);
        for v in std::mem::take(&mut ctx.from_env) {
            if v.len() >= secrets::MIN_ENV_SECRET {
                config.secrets.add(v);
            }
        }
        for v in parsed.secrets {
            config.secrets.add(v);
        }
        references.extend(
            parsed
                .depends_on
                .into_iter()
                .map(|(dep, pos)| (display.clone(), dep, pos)),
        );
        channel_refs.extend(parsed.channels.into_iter().map(|r| (display.clone(), r)));
        if let Some(job) = parsed.job {
            config.jobs.insert(name.clone(), Arc::new(job));
        }
    }

    // scheduler.yaml
    let sched_display = display_path(dir, "scheduler.yaml");
    if let Some((src, node)) = read_yaml(
        dir,
        "scheduler.yaml",
        &sched_display,
        &mut config.sources,
        diags,
    ) {
        let mut ctx = yaml::Ctx::new(sched_display.clone(), &src, env, diags);
        if let Some(mut m) = ctx.map(&node, "scheduler.yaml") {
            config.settings = scheduler::parse_settings(&mut ctx, &mut m);
            // API tokens are secrets wherever they came from.
            for t in config.settings.http.iter().flat_map(|h| h.tokens.iter()) {
                config.secrets.add(t.clone());
            }
            if let Some(n) = m.get("schedules") {
                config.schedules =
                    scheduler::parse_schedules(&mut ctx, n, config.settings.timezone, &all_names);
            }
            m.finish(&mut ctx, "scheduler.yaml", scheduler::SCHEDULER_FIELDS);
        }
        for v in std::mem::take(&mut ctx.from_env) {
            if v.len() >= secrets::MIN_ENV_SECRET {
                config.secrets.add(v);
            }
        }
    }

    // The store: `WORKER_DATABASE_URL` over `database:`; its password is a secret.
    match database_from_env(env) {
        Ok(Some(url)) => config.settings.database = Some(url),
        Ok(None) => {}
        Err(e) => diags.push(scheduler::DATABASE_ENV, Pos::NONE, e),
    }
    if let Some(url) = &config.settings.database
        && let Ok(u) = url::Url::parse(url)
        && let Some(password) = u.password()
    {
        config.secrets.add(password.to_owned());
    }

    // alerts.yaml: every value from the environment is a secret here.
    let alerts_display = display_path(dir, "alerts.yaml");
    let mut written_channels = BTreeSet::new();
    if let Some((src, node)) = read_yaml(
        dir,
        "alerts.yaml",
        &alerts_display,
        &mut config.sources,
        diags,
    ) {
        let mut ctx = yaml::Ctx::new(alerts_display.clone(), &src, env, diags);
        config.alerts = alerts::parse_alerts(&mut ctx, &node, &all_names, &mut config.secrets);
        for v in std::mem::take(&mut ctx.from_env) {
            config.secrets.add(v);
        }
        written_channels = alerts::written_channels(&node);
    }

    check_dependencies(&config, &all_names, &references, diags);
    workflow::check_channels(&config.alerts, &written_channels, &channel_refs, diags);
    config
}

/// Unknown `depends_on` targets (from every job file, broken or not) and dependency cycles.
fn check_dependencies(
    config: &Config,
    all_names: &BTreeSet<String>,
    references: &[(String, String, Pos)],
    diags: &mut Diagnostics,
) {
    let known: Vec<&str> = all_names.iter().map(String::as_str).collect();
    for (file, dep, pos) in references {
        if !all_names.contains(dep) {
            let hint = yaml::closest(dep, &known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            diags.push(
                file,
                *pos,
                format!("depends_on: unknown job `{dep}`: there is no jobs/{dep}.yaml{hint}"),
            );
        }
    }
    for cycle in find_cycles(&config.jobs) {
        // Reported at the edge that closes the cycle: the last job's entry for the first.
        let last = &config.jobs[&cycle[cycle.len() - 1]];
        let pos = last
            .depends_on
            .iter()
            .find(|(d, _)| *d == cycle[0])
            .map(|(_, p)| *p)
            .unwrap_or(Pos::NONE);
        let mut path = cycle.clone();
        path.push(cycle[0].clone());
        diags.push(
            &last.file,
            pos,
            format!("dependency cycle: {}", path.join(" -> ")),
        );
    }
}

/// The dependency cycles found by a depth-first walk (one per back edge, each reported once),
/// as the list of jobs in order (`a` depends on `b` … depends on `a`), starting at its smallest name.
pub fn find_cycles(jobs: &BTreeMap<String, Arc<JobDef>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        name: &str,
        jobs: &BTreeMap<String, Arc<JobDef>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        marks.insert(name.to_string(), Mark::Active);
        stack.push(name.to_string());
        if let Some(job) = jobs.get(name) {
            for dep in job.dependency_names() {
                match marks.get(dep).copied().unwrap_or(Mark::New) {
                    Mark::Active => {
                        let start = stack.iter().position(|s| s == dep).unwrap_or(0);
                        let mut cycle = stack[start..].to_vec();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, n)| n.as_str())
                            .map(|(i, _)| i)
                            .unwrap_or(0);
                        cycle.rotate_left(min);
                        found.insert(cycle);
                    }
                    Mark::New if jobs.contains_key(dep) => visit(dep, jobs, marks, stack, found),
                    _ => {}
                }
            }
        }
        stack.pop();
        marks.insert(name.to_string(), Mark::Done);
    }
    let mut marks: BTreeMap<String, Mark> = jobs.keys().map(|k| (k.clone(), Mark::New)).collect();
    let mut found = BTreeSet::new();
    for name in jobs.keys() {
        if marks[name] == Mark::New {
            visit(name, jobs, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests;
