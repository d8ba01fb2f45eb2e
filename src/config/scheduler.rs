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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timezone: Tz::UTC,
            concurrency: default_concurrency(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            keep_days: DEFAULT_KEEP_DAYS,
            output_limit: DEFAULT_OUTPUT_LIMIT,
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
    "timezone",
    "concurrency",
    "shutdown_timeout",
    "history",
    "output_limit",
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
    if let Some(n) = m.get("output_limit") {
        s.output_limit = ctx
            .size(n, "output_limit")
            .and_then(|v| check_output_limit(ctx, n.pos, v))
            .unwrap_or(s.output_limit);
    }
    s
}
