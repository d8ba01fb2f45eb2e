//! Output: aligned tables for people, JSON for machines (the objects themselves are
//! [`crate::objects`], shared with the HTTP API).

use std::sync::atomic::{AtomicBool, Ordering};

use comfy_table::{Cell, Table, presets};
use serde_json::Value;

use crate::model::Time;
pub use crate::objects::{rfc3339, run_duration_ms, run_json, step_duration_ms};
use crate::units::format_duration;

/// A borderless, aligned table with a header row.
pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(headers.iter().map(Cell::new).collect::<Vec<_>>());
    t
}

/// Prints a table, trimming the padding comfy-table leaves at line ends.
pub fn print_table(t: &Table) {
    for line in t.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

/// Prints one JSON document.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

/// Set by `--utc`: human tables print UTC instead of local time.
static UTC: AtomicBool = AtomicBool::new(false);

/// Makes every human time UTC (`--utc`).
pub fn use_utc(on: bool) {
    UTC.store(on, Ordering::Relaxed);
}

/// A time for people, always with its zone: local time and its UTC offset
/// (`2026-11-30 21:15:03 +01:00`), or `2026-11-30 20:15:03 UTC` under `--utc` or wherever the
/// local offset is zero. JSON keeps RFC 3339 in UTC ([`rfc3339`]).
pub fn human(t: Time) -> String {
    let local = t.with_timezone(&chrono::Local);
    if UTC.load(Ordering::Relaxed) || local.offset().local_minus_utc() == 0 {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M:%S %:z").to_string()
    }
}

pub fn opt_human(t: Option<Time>) -> String {
    t.map(human).unwrap_or_else(|| "-".into())
}

/// A schedule's fire time, in the schedule's own zone as cron reads it, RFC 3339
/// (`2026-03-08T03:00:00-04:00`); in UTC under `--utc` (`2026-03-08T07:00:00Z`).
pub fn in_zone(tz: chrono_tz::Tz, t: Time) -> String {
    if UTC.load(Ordering::Relaxed) {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    } else {
        t.with_timezone(&tz).to_rfc3339()
    }
}

/// "in 4m05s" / "4m05s ago".
pub fn relative(now: Time, t: Time) -> String {
    let d = t - now;
    match d.to_std() {
        Ok(fwd) => format!("in {}", format_duration(fwd)),
        Err(_) => format!("{} ago", format_duration((-d).to_std().unwrap_or_default())),
    }
}

/// "3" or "3 (SIGKILL)" or "-" for the exit column.
pub fn exit_text(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => crate::exec::signal_name(s).to_string(),
        _ => "-".into(),
    }
}

/// A human byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
