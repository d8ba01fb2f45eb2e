//! `scheduler.yaml`: daemon-wide settings (time zone, concurrency, shutdown budget, history) and
//! the schedules.

use std::time::Duration;

use chrono_tz::Tz;

use super::job::check_output_limit;
use super::yaml::{Ctx, Node};

/// Default per-attempt cap on captured output.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 1 << 20;
/// Default graceful stop budget.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default age after which finished runs are pruned.
pub const DEFAULT_KEEP_DAYS: u32 = 30;

/// Daemon-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Default time zone of schedules.
    pub timezone: Tz,
    /// Maximum runs executing at once across all jobs.
    pub concurrency: u32,
    /// Graceful stop budget on SIGTERM.
    pub shutdown_timeout: Duration,
    /// Finished runs (and their output) older than this many days are pruned.
    pub keep_days: u32,
    /// Per-attempt cap on captured output, unless a job sets its own.
    pub output_limit: u64,
    /// How the daemon's own state changes are committed (commands always commit with `full`).
    pub durability: crate::store::Durability,
    /// The HTTP API, dashboard and metrics (`http:`); `None`: no listener.
    pub http: Option<HttpSettings>,
    /// A PostgreSQL store shared by several daemons (`database:`, or `WORKER_DATABASE_URL`);
    /// `None`: SQLite in the data directory.
    pub database: Option<String>,
    /// This daemon's name among the nodes of a shared store (`node:`, default the host name).
    pub node: String,
    /// A node silent this long is dead, and its runs are recovered (`node_timeout:`).
    pub node_timeout: Duration,
}

/// The default `node_timeout`.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable that names the store, over `database:`.
pub const DATABASE_ENV: &str = "WORKER_DATABASE_URL";

/// The host name, the default `node`.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `http:` in `scheduler.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub listen: std::net::SocketAddr,
    /// Bearer tokens (secrets). Empty on a loopback address: the daemon makes one and keeps it
    /// in `DATA/api-token`.
    pub tokens: Vec<String>,
}

/// The shortest token accepted: anything shorter could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timezone: Tz::UTC,
            concurrency: default_concurrency(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            keep_days: DEFAULT_KEEP_DAYS,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            durability: crate::store::Durability::Normal,
            http: None,
            database: None,
            node: host_name(),
            node_timeout: DEFAULT_NODE_TIMEOUT,
        }
    }
}

/// The number of CPUs, the default global concurrency.
pub fn default_concurrency() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
}

pub(super) const SCHEDULER_FIELDS: &[&str] = &[
    "durability",
    "timezone",
    "concurrency",
    "shutdown_timeout",
    "history",
    "output_limit",
    "http",
    "database",
    "node",
    "node_timeout",
    "schedules",
];

/// Parses a time zone name (IANA only: `Europe/Berlin`, `UTC`).
pub fn parse_timezone(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Option<Tz> {
    let name = ctx.nonempty_string(node, what)?;
    match name.parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            ctx.error(node.pos, format!("{what}: unknown time zone `{name}` (use an IANA name such as `Europe/Berlin` or `UTC`)"));
            None
        }
    }
}

/// Reads the settings part of `scheduler.yaml`; `schedules` is left to the caller.
pub fn parse_settings(ctx: &mut Ctx<'_>, m: &mut super::yaml::MapReader<'_>) -> Settings {
    let mut s = Settings::default();
    if let Some(n) = m.get("timezone") {
        s.timezone = parse_timezone(ctx, n, "timezone").unwrap_or(Tz::UTC);
    }
    if let Some(n) = m.get("concurrency") {
        s.concurrency = ctx
            .int(n, "concurrency", 1, 10_000)
            .map(|c| c as u32)
            .unwrap_or(s.concurrency);
    }
    if let Some(n) = m.get("shutdown_timeout") {
        s.shutdown_timeout = ctx
            .duration(n, "shutdown_timeout")
            .unwrap_or(s.shutdown_timeout);
    }
    if let Some(n) = m.get("history")
        && let Some(mut h) = ctx.map(n, "history")
    {
        if let Some(k) = h.get("keep_days") {
            s.keep_days = ctx
                .int(k, "history.keep_days", 1, 36_500)
                .map(|d| d as u32)
                .unwrap_or(s.keep_days);
        }
        h.finish(ctx, "history", &["keep_days"]);
    }
    if let Some(n) = m.get("durability") {
        use crate::store::Durability;
        s.durability = ctx
            .choice(
                n,
                "durability",
                &[("normal", Durability::Normal), ("full", Durability::Full)],
            )
            .unwrap_or(s.durability);
    }
    if let Some(n) = m.get("output_limit") {
        s.output_limit = ctx
            .size(n, "output_limit")
            .and_then(|v| check_output_limit(ctx, n.pos, v))
            .unwrap_or(s.output_limit);
    }
    if let Some(n) = m.get("http") {
        s.http = parse_http(ctx, n);
    }
    if let Some(n) = m.get("database") {
        s.database = parse_database(ctx, n);
    }
    if let Some(n) = m.get("node")
        && let Some(name) = ctx.nonempty_string(n, "node")
    {
        if name.len() > 200 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            ctx.error(
                n.pos,
                format!("node: `{name}` is not a usable node name (at most 200 characters, no spaces or control characters)"),
            );
        } else {
            s.node = name;
        }
    }
    if let Some(n) = m.get("node_timeout")
        && let Some(d) = ctx.duration(n, "node_timeout")
    {
        if d < Duration::from_secs(3) {
            ctx.error(
                n.pos,
                "node_timeout must be at least 3s (a node writes its heartbeat every third of it)",
            );
        } else {
            s.node_timeout = d;
        }
    }
    s
}

/// `database: postgres://…`: a PostgreSQL URL (its password is a secret).
pub fn parse_database(ctx: &mut Ctx<'_>, node: &Node) -> Option<String> {
    let url = ctx.nonempty_string(node, "database")?;
    check_database_url(&url)
        .map_err(|e| ctx.error(node.pos, e))
        .ok()
}

/// A store URL is `postgres://` or `postgresql://` (SQLite needs none: it is the default).
pub fn check_database_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url);
    match parsed {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") && u.has_host() => {
            Ok(url.to_owned())
        }
        _ => Err(format!(
            "database: `{}` is not a PostgreSQL URL (write e.g. `postgres://worker@db.internal/worker?sslmode=require`; leave `database` out to use SQLite in the data directory)",
            crate::workflow::steps::redact_url(url)
        )),
    }
}

/// `http: { listen, tokens }`.
fn parse_http(ctx: &mut Ctx<'_>, node: &Node) -> Option<HttpSettings> {
    let mut m = ctx.map(node, "http")?;
    let listen_node = m.get("listen");
    let listen = match listen_node {
        Some(n) => {
            let text = ctx.nonempty_string(n, "http.listen")?;
            match text.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    ctx.error(
                        n.pos,
                        format!("http.listen: `{text}` is not an address and port (write e.g. `127.0.0.1:7878`, `[::1]:7878` or `0.0.0.0:7878`)"),
                    );
                    None
                }
            }
        }
        None => {
            ctx.error(
                m.pos,
                "http needs `listen: ADDRESS:PORT` (e.g. `127.0.0.1:7878`)",
            );
            None
        }
    };
    let mut tokens = Vec::new();
    if let Some(n) = m.get("tokens") {
        for (t, pos) in ctx.string_list(n, "http.tokens", false).unwrap_or_default() {
            if t.len() < MIN_TOKEN_LEN {
                ctx.error(
                    pos,
                    format!("http.tokens: a token must have at least {MIN_TOKEN_LEN} characters (make one with `head -c 32 /dev/urandom | base64`)"),
                );
            } else {
                tokens.push(t);
            }
        }
    }
    m.finish(ctx, "http", &["listen", "tokens"]);
    let listen = listen?;
    if !listen.ip().is_loopback()
        && tokens.is_empty()
        && let Some(n) = listen_node
    {
        ctx.error(
            n.pos,
            format!("http.listen: {listen} is reachable from other hosts, so `tokens` are required (anyone who can connect could run jobs)"),
        );
        return None;
    }
    Some(HttpSettings { listen, tokens })
}

/// What to do with fires missed while the daemon was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Enqueue none of them.
    None,
    /// Enqueue only the most recent.
    Latest,
    /// Enqueue every one (at most [`crate::schedule::CATCH_UP_LIMIT`]).
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
}

/// What to do with a fire while the job's previous run is still pending or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Do not enqueue (recorded as missed).
    Skip,
    /// Keep at most one pending run buffered (later fires are missed).
    Queue,
    /// Enqueue every fire.
    Allow,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

/// One entry of `schedules:`.
#[derive(Debug, Clone)]
pub struct ScheduleDef {
    /// Unique; defaults to the job's name.
    pub name: String,
    pub job: String,
    pub cron: crate::schedule::CronSpec,
    pub timezone: Tz,
    pub catch_up: CatchUp,
    pub overlap: Overlap,
    pub enabled: bool,
    /// Dead-man's switch: raise `late` if a fire's run has not succeeded this long after the fire.
    pub deadline: Option<Duration>,
    pub env: std::collections::BTreeMap<String, String>,
}

const SCHEDULE_FIELDS: &[&str] = &[
    "job", "name", "cron", "timezone", "catch_up", "overlap", "enabled", "deadline", "env",
];

/// Reads `schedules:`. `jobs` holds the name of every job file (a schedule naming a job whose file
/// is broken is reported once, at the job file).
pub fn parse_schedules(
    ctx: &mut Ctx<'_>,
    node: &Node,
    default_tz: Tz,
    jobs: &std::collections::BTreeSet<String>,
) -> Vec<ScheduleDef> {
    let mut out: Vec<ScheduleDef> = Vec::new();
    let Some(items) = ctx.list(node, "schedules", false) else {
        return out;
    };
    let known: Vec<&str> = jobs.iter().map(String::as_str).collect();
    for item in items {
        let before = ctx.diags.len();
        let Some(mut m) = ctx.map(item, "a schedule") else {
            continue;
        };
        let job = match m.get("job") {
            Some(n) => ctx.nonempty_string(n, "job").and_then(|j| {
                if jobs.contains(&j) {
                    Some(j)
                } else {
                    let hint = super::yaml::closest(&j, &known)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    ctx.error(
                        n.pos,
                        format!("unknown job `{j}`: there is no jobs/{j}.yaml{hint}"),
                    );
                    None
                }
            }),
            None => {
                ctx.error(m.pos, "a schedule needs `job: NAME`");
                None
            }
        };
        let name = match m.get("name") {
            Some(n) => ctx.nonempty_string(n, "name").and_then(|s| {
                if crate::model::is_valid_name(&s) {
                    Some((s, n.pos))
                } else {
                    ctx.error(n.pos, format!("`{s}` is not a valid schedule name: use lowercase letters, digits, `.`, `_`, `-`"));
                    None
                }
            }),
            None => job.clone().map(|j| (j, m.pos)),
        };
        let cron = match m.get("cron") {
            Some(n) => {
                ctx.nonempty_string(n, "cron")
                    .and_then(|c| match crate::schedule::parse(&c) {
                        Ok(spec) => Some(spec),
                        Err(e) => {
                            ctx.error(n.pos, format!("cron: {e}"));
                            None
                        }
                    })
            }
            None => {
                ctx.error(m.pos, "a schedule needs `cron:` (e.g. \"30 6 * * 1-5\", \"@daily\" or \"@every 90s\")");
                None
            }
        };
        let timezone = match m.get("timezone") {
            Some(n) => parse_timezone(ctx, n, "timezone"),
            None => Some(default_tz),
        };
        let catch_up = match m.get("catch_up") {
            Some(n) => ctx.choice(
                n,
                "catch_up",
                &[
                    ("none", CatchUp::None),
                    ("latest", CatchUp::Latest),
                    ("all", CatchUp::All),
                ],
            ),
            None => Some(CatchUp::Latest),
        };
        let overlap = match m.get("overlap") {
            Some(n) => ctx.choice(
                n,
                "overlap",
                &[
                    ("skip", Overlap::Skip),
                    ("queue", Overlap::Queue),
                    ("allow", Overlap::Allow),
                ],
            ),
            None => Some(Overlap::Skip),
        };
        let enabled = match m.get("enabled") {
            Some(n) => ctx.bool(n, "enabled"),
            None => Some(true),
        };
        let deadline = match m.get("deadline") {
            Some(n) => match ctx.duration(n, "deadline") {
                Some(d) if d.is_zero() => {
                    ctx.error(
                        n.pos,
                        "deadline must be longer than 0 (leave it out for none)",
                    );
                    None
                }
                d => d.map(Some),
            },
            None => Some(None),
        };
        let env = match m.get("env") {
            Some(n) => ctx.env_map(n, "env"),
            None => Some(Default::default()),
        };
        m.finish(ctx, "a schedule", SCHEDULE_FIELDS);
        if ctx.diags.len() > before {
            continue;
        }
        let (
            Some(job),
            Some((name, name_pos)),
            Some(cron),
            Some(timezone),
            Some(catch_up),
            Some(overlap),
            Some(enabled),
            Some(deadline),
            Some(env),
        ) = (
            job, name, cron, timezone, catch_up, overlap, enabled, deadline, env,
        )
        else {
            continue;
        };
        if out.iter().any(|s| s.name == name) {
            ctx.error(
                name_pos,
                format!("a schedule named `{name}` already exists: give this one a unique `name:`"),
            );
            continue;
        }
        out.push(ScheduleDef {
            name,
            job,
            cron,
            timezone,
            catch_up,
            overlap,
            enabled,
            deadline,
            env,
        });
    }
    out
}
