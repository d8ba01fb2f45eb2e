//! The command line: flags defined once with their help, one file per command family, and the
//! mapping of failures to exit codes (0 success, 1 the operation failed, 2 bad usage or invalid
//! configuration).

mod alert;
mod daemon;
mod drift;
mod history;
mod job;
mod list;
mod logs;
mod nodes;
mod output;
mod queue;
mod reload;
mod schedules;
mod status;
mod ui;
mod validate;

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

use crate::config::{Config, Diagnostics};
use crate::datadir::DataDir;
use crate::model::{Priority, RunId};
use crate::store::{Durability, Store};

pub use crate::VERSION;

/// The help heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// worker: run jobs on schedules and from a durable queue, with retries, dependencies and alerts.
#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version = VERSION,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Configuration directory: scheduler.yaml, alerts.yaml, jobs/*.yaml.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        help_heading = GLOBAL,
        env = "WORKER_CONFIG",
        default_value = ".",
        value_name = "DIR"
    )]
    pub config: PathBuf,
    /// Data directory: database, captured output, lock [default: CONFIG/.worker].
    #[arg(
        short = 'd',
        long = "data-dir",
        global = true,
        help_heading = GLOBAL,
        env = "WORKER_DATA_DIR",
        value_name = "DIR"
    )]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON (one document on stdout).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Print times in UTC instead of local time (human output; JSON is always UTC).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub utc: bool,
    /// More log output (-v debug, -vv trace). WORKER_LOG takes a full tracing filter.
    #[arg(short = 'v', long = "verbose", global = true, help_heading = GLOBAL, action = ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q warnings, -qq errors only).
    #[arg(short = 'q', long = "quiet", global = true, help_heading = GLOBAL, action = ArgAction::Count)]
    pub quiet: u8,
    /// Log line format: auto (journal under systemd, human otherwise), human, journal or json.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_enum,
        env = "WORKER_LOG_FORMAT",
        default_value = "auto",
        value_name = "FORMAT"
    )]
    pub log_format: crate::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run schedules and the queue until SIGTERM/SIGINT (SIGHUP reloads the configuration).
    Daemon,
    /// Run a job now in the foreground (its dependencies first), streaming its output.
    Job {
        /// The job (a file stem in jobs/).
        name: String,
        /// Extra environment for the run (repeatable).
        #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Do not run the job's dependencies first.
        #[arg(long)]
        no_deps: bool,
        /// One attempt only, whatever the job's retry policy.
        #[arg(long)]
        no_retry: bool,
        /// The run's input: a JSON object, or @FILE holding one (checked against the job's
        /// `input:`).
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
    },
    /// List jobs: description, priority, schedules, last run, next fire.
    List,
    /// List the daemons (nodes) that share the store: state, host, last heartbeat, runs held.
    Nodes,
    /// List schedules with their last fire and next fire times.
    Schedules {
        /// How many upcoming fire times to show.
        #[arg(long, default_value_t = 1, value_name = "N")]
        next: usize,
        /// Compute upcoming fires after this instant (exclusive) instead of now (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
    },
    /// Pause a schedule: it fires nothing (and catches nothing up when resumed), across restarts
    /// and reloads, until `schedules:resume`.
    #[command(name = "schedules:pause")]
    SchedulesPause {
        /// The schedule's name (see `worker schedules`).
        name: String,
    },
    /// Resume a paused schedule from now.
    #[command(name = "schedules:resume")]
    SchedulesResume {
        /// The schedule's name.
        name: String,
    },
    /// Enqueue a run of a schedule's job now (trigger `manual`, with the schedule's `env`);
    /// prints its id.
    #[command(name = "schedules:trigger")]
    SchedulesTrigger {
        /// The schedule's name.
        name: String,
    },
    /// Recorded fires, newest first: enqueued, or missed with the reason.
    Fires {
        /// Only this schedule.
        schedule: Option<String>,
        /// How many fires to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Check every configuration file; print each problem as FILE:LINE:COL: message.
    Validate,
    /// Finished runs, newest first.
    History {
        /// Only this job.
        job: Option<String>,
        /// How many runs to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print the captured output of a run (its last attempt unless --attempt).
    Logs {
        /// The run (its id, as `queue:add` printed it).
        run_id: RunId,
        /// Attempt number (WORKER_ATTEMPT); with --step, the step's execution number.
        #[arg(long, conflicts_with = "follow")]
        attempt: Option<u32>,
        /// A workflow step's output instead of the run's.
        #[arg(long, value_name = "NAME")]
        step: Option<String>,
        /// Keep printing output as it is written, across retries, until the run ends: exit 0 if
        /// it succeeded, 1 if not.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Show one run in full, with each attempt and how long it took (and, while it runs, its
    /// elapsed time and output so far).
    Show {
        /// The run (its id).
        run_id: RunId,
    },
    /// Enqueue runs for the daemon; prints their ids.
    #[command(name = "queue:add")]
    QueueAdd(queue::AddArgs),
    /// Runs not finished yet (--all: every run), and why each is waiting.
    #[command(name = "queue:list")]
    QueueList {
        /// Also list finished runs.
        #[arg(long)]
        all: bool,
        /// At most this many runs (a line says how many more there are).
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: u32,
    },
    /// Counts per state and per job; success rate and p50/p95 duration per job.
    #[command(name = "queue:stats")]
    QueueStats,
    /// The dead-letter queue: runs that exhausted their attempts.
    #[command(name = "queue:dlq")]
    QueueDlq {
        /// At most this many runs (a line says how many more there are).
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: u32,
    },
    /// Re-enqueue dead runs as new runs; prints the new ids. A workflow run resumes: steps that
    /// succeeded are not run again.
    #[command(name = "queue:retry")]
    QueueRetry {
        /// The dead run to retry.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        run_id: Option<RunId>,
        /// Every run in the dead-letter queue.
        #[arg(long)]
        all: bool,
        /// With --all: only this job's dead runs.
        #[arg(long, requires = "all")]
        job: Option<String>,
        /// A workflow run (dead or finished): run this step and every step downstream of it
        /// again, reusing the others' outputs.
        #[arg(long, value_name = "NAME", conflicts_with = "all")]
        from_step: Option<String>,
    },
    /// Send a signal to a workflow run: a `wait_for` step waiting for it (now or later) goes on
    /// with its data, or fails with --fail.
    Signal {
        /// The run (its id).
        run_id: RunId,
        /// The signal's name (what its `wait_for` step waits for).
        signal: String,
        /// Data for the waiting step (`steps.NAME.outputs.data`): JSON, or @FILE.
        #[arg(long, value_name = "JSON|@FILE")]
        data: Option<String>,
        /// Make the waiting step fail with this reason instead.
        #[arg(long, value_name = "REASON", conflicts_with = "data")]
        fail: Option<String>,
    },
    /// Cancel a run that has not started, or stop a running one (its whole process group);
    /// with --all, every unfinished run (or those of one job, or in one state).
    #[command(name = "queue:cancel")]
    QueueCancel(queue::CancelArgs),
    /// Delete dead-letter entries and/or finished history.
    #[command(name = "queue:purge")]
    QueuePurge {
        /// Delete dead runs (the dead-letter queue).
        #[arg(long)]
        dlq: bool,
        /// Delete finished runs older than this (e.g. 30d); with --dlq, only dead ones.
        #[arg(long, value_name = "DUR")]
        finished_before: Option<String>,
    },
    /// Alert channels (targets masked) and rules, with when each last sent.
    #[command(name = "alert:list")]
    AlertList,
    /// Send a test alert through a channel now: exit 0 if delivered, 1 with the error if not.
    #[command(name = "alert:test")]
    AlertTest {
        /// A channel of alerts.yaml.
        channel: String,
    },
    /// Alerts, newest first: sent, suppressed, failed or pending, with attempts and errors.
    #[command(name = "alert:history")]
    AlertHistory {
        /// How many alerts to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Ask the running daemon to load the configuration again, and wait for its verdict: exit 0
    /// when it applied it, 1 with every problem when it rejected it (it keeps the previous one).
    Reload,
    /// Print the dashboard's address that logs in (it holds a token: do not share it).
    Ui,
    /// Is the daemon running and healthy: pid, uptime, counts, next fires, last failures.
    /// Exit 0 when healthy, 1 otherwise (a health check).
    Status,
    /// Print a shell completion script (e.g. `worker completions bash > /etc/bash_completion.d/worker`).
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `worker man > /usr/local/share/man/man1/worker.1`.
    Man,
    #[command(name = crate::exec::sentinel::SUBCOMMAND, hide = true)]
    Sentinel {
        /// The owner token its jobs carry in `WORKER_OWNER`.
        #[arg(default_value = "")]
        token: String,
    },
}

/// `K=V` for `--env`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not K=V"))?;
    crate::ops::check_env_name(k).map_err(|e| e.to_string())?;
    Ok((k.to_string(), v.to_string()))
}

/// A failure and its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage: exit 2.
    Usage(String),
    /// Invalid configuration: every problem printed, exit 2.
    Config(Diagnostics),
    /// The operation ran and failed: exit 1.
    Failed(String),
    /// Exit with this code; everything was already said.
    Exit(i32),
}

impl CliError {
    pub fn code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Exit(c) => *c,
        }
    }
}

impl From<crate::ops::OpError> for CliError {
    fn from(e: crate::ops::OpError) -> Self {
        use crate::ops::OpError as E;
        match e {
            E::BadInput(m) | E::UnknownName(m) | E::Invalid(m) => CliError::Usage(m),
            E::UnknownRun(m) | E::Conflict(m) => CliError::Failed(m),
            E::Store(e) => CliError::Failed(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for CliError {
    fn from(e: crate::store::StoreError) -> Self {
        CliError::Failed(e.to_string())
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// What every command knows: where things are and how to print.
pub struct Ctx {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub json: bool,
}

impl Ctx {
    /// The configuration; any problem is a usage failure (exit 2) listing them all.
    pub fn config(&self) -> CliResult<Config> {
        Config::load(&self.config_dir).map_err(CliError::Config)
    }

    /// The data directory, and where the store is (`WORKER_DATABASE_URL`, else `database:` in
    /// `scheduler.yaml`, else SQLite in the directory).
    pub fn data(&self) -> CliResult<DataDir> {
        let database =
            crate::config::database_setting(&self.config_dir).map_err(CliError::Config)?;
        Ok(DataDir::open(&self.data_dir)
            .map_err(|e| {
                CliError::Failed(format!(
                    "cannot create data directory {}: {e}",
                    self.data_dir.display()
                ))
            })?
            .with_database(database))
    }

    pub fn store(&self) -> CliResult<(DataDir, Store)> {
        let data = self.data()?;
        let store = Store::open_at(&data.store_location(), Durability::Full)?;
        Ok((data, store))
    }

    /// A job name that must exist in `config` (unknown: usage error).
    pub fn known_job(&self, config: &Config, name: &str) -> CliResult<()> {
        crate::ops::known_job(config, name)?;
        Ok(())
    }
}

/// A JSON argument: the text itself, or `@FILE` holding it.
fn json_arg(what: &str, raw: &str) -> CliResult<serde_json::Value> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("{what}: cannot read {path}: {e}")))?,
        None => raw.to_string(),
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{what}: not valid JSON ({e})")))
}

/// A run's input for `job` (`--input`, see [`crate::ops::input`]).
fn run_input(
    config: &Config,
    job: &str,
    raw: Option<&str>,
) -> CliResult<Option<serde_json::Value>> {
    let given = raw.map(|r| json_arg("--input", r)).transpose()?;
    Ok(crate::ops::input(
        crate::ops::known_job(config, job)?,
        given,
    )?)
}

/// Parses a priority flag.
fn parse_priority(s: &str) -> Result<Priority, String> {
    s.parse()
}

/// Entry point: parse, run, print the failure, return the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            };
        }
    };
    if let Command::Sentinel { token } = &cli.command {
        return crate::exec::sentinel::sentinel_main(token);
    }
    if !matches!(cli.command, Command::Daemon | Command::Job { .. }) {
        // A listing piped into `head` should end quietly, as Unix tools do, rather than fail on
        // a closed stdout. The daemon and `worker job` keep SIGPIPE ignored: they write to pipes
        // whose reader may go away and must carry on.
        // SAFETY: restoring a signal's default disposition installs no handler code.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logging(cli.verbose, cli.quiet, cli.log_format);
    output::use_utc(cli.utc);
    crate::alert::deliver::install_crypto();
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(|| cli.config.join(".worker"));
    let ctx = Ctx {
        config_dir: cli.config.clone(),
        data_dir,
        json: cli.json,
    };
    match run(&ctx, cli.command) {
        Ok(()) => 0,
        Err(e) => {
            match &e {
                CliError::Usage(m) | CliError::Failed(m) => {
                    eprintln!("error: {}", crate::config::secrets::mask_published(m))
                }
                CliError::Config(d) => {
                    for p in d.iter() {
                        eprintln!("{}", crate::config::secrets::mask_published(&p.to_string()));
                    }
                    eprintln!(
                        "error: invalid configuration ({})",
                        crate::units::count(d.len(), "problem")
                    );
                }
                CliError::Exit(_) => {}
            }
            e.code()
        }
    }
}

fn run(ctx: &Ctx, command: Command) -> CliResult {
    match command {
        Command::Daemon => daemon::run(ctx),
        Command::Job {
            name,
            env,
            no_deps,
            no_retry,
            input,
        } => job::run(ctx, &name, env, no_deps, no_retry, input.as_deref()),
        Command::List => list::run(ctx),
        Command::Nodes => nodes::run(ctx),
        Command::Schedules { next, from } => schedules::schedules(ctx, next, from),
        Command::Fires { schedule, limit } => schedules::fires(ctx, schedule, limit),
        Command::SchedulesPause { name } => schedules::pause(ctx, &name, true),
        Command::SchedulesResume { name } => schedules::pause(ctx, &name, false),
        Command::SchedulesTrigger { name } => schedules::trigger(ctx, &name),
        Command::Validate => validate::run(ctx),
        Command::History { job, limit } => history::history(ctx, job, limit),
        Command::Show { run_id } => history::show(ctx, run_id),
        Command::Logs {
            run_id,
            attempt,
            step,
            follow,
        } => match (follow, step) {
            (true, None) => logs::follow(ctx, run_id),
            (true, Some(step)) => logs::follow_step(ctx, run_id, &step),
            (false, Some(step)) => logs::step(ctx, run_id, &step, attempt),
            (false, None) => logs::run(ctx, run_id, attempt),
        },
        Command::QueueAdd(args) => queue::add(ctx, args),
        Command::QueueList { all, limit } => queue::list(ctx, all, limit),
        Command::QueueStats => queue::stats(ctx),
        Command::QueueDlq { limit } => queue::dlq(ctx, limit),
        Command::QueueRetry {
            run_id,
            all,
            job,
            from_step,
        } => queue::retry(ctx, run_id, all, job, from_step),
        Command::Signal {
            run_id,
            signal,
            data,
            fail,
        } => queue::signal(ctx, run_id, &signal, data.as_deref(), fail.as_deref()),
        Command::QueueCancel(args) => queue::cancel(ctx, args),
        Command::QueuePurge {
            dlq,
            finished_before,
        } => queue::purge(ctx, dlq, finished_before),
        Command::AlertList => alert::list(ctx),
        Command::AlertTest { channel } => alert::test(ctx, &channel),
        Command::AlertHistory { limit } => alert::history(ctx, limit),
        Command::Status => status::run(ctx),
        Command::Ui => ui::run(ctx),
        Command::Reload => reload::run(ctx),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "worker", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(|e| CliError::Failed(format!("cannot write the manual page: {e}")))
        }
        Command::Sentinel { .. } => Ok(()),
    }
}

/// Logs go to stderr. `WORKER_LOG` (a tracing filter) wins over `-v`/`-q`.
fn init_logging(verbose: u8, quiet: u8, format: crate::logging::LogFormat) {
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (v, 0) if v >= 2 => "trace",
        (_, 0) => "debug",
        (_, 1) => "warn",
        _ => "error",
    };
    crate::logging::init(level, format);
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every positional argument of every command says what it is, and the options every
    /// command takes are under their own heading.
    #[test]
    fn every_argument_has_help_and_global_options_their_heading() {
        let cli = super::Cli::command();
        for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
            for arg in sub.get_positionals() {
                assert!(
                    arg.get_help().is_some(),
                    "`worker {} <{}>` has no help text",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
        for arg in cli.get_arguments().filter(|a| a.is_global_set()) {
            assert_eq!(
                arg.get_help_heading(),
                Some(super::GLOBAL),
                "--{}",
                arg.get_id()
            );
        }
    }
}
