//! Log output: tracing to stderr, in the form the reader wants.
//!
//! - `human`: timestamps and levels, colours on a terminal.
//! - `journal`: for journald (chosen automatically when `JOURNAL_STREAM` names our stderr): no
//!   timestamps (the journal adds its own), no colours, and each line prefixed with its syslog
//!   priority (`<3>` error … `<7>` debug), which journald turns into the entry's level.
//! - `json`: one JSON object per line for log shippers.
//!
//! Every line goes through [`MaskedStderr`], which masks known secrets; libraries that log
//! protocol exchanges at debug level are capped at info.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::secrets::MaskedStderr;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `journal` under systemd (JOURNAL_STREAM is our stderr), `human` otherwise.
    Auto,
    Human,
    Journal,
    Json,
}

/// Libraries that log protocol exchanges (an SMTP AUTH line is a password in base64) at debug
/// level: never below info, whatever `WORKER_LOG` asks.
const CAPPED: &[&str] = &[
    "lettre=info",
    "reqwest=info",
    "hyper=info",
    "hyper_util=info",
    "rustls=info",
];

/// Installs the global subscriber. `default_level` applies unless `WORKER_LOG` holds a filter.
pub fn init(default_level: &str, format: LogFormat) {
    let mut filter = std::env::var("WORKER_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_level));
    for c in CAPPED {
        if let Ok(d) = c.parse() {
            filter = filter.add_directive(d);
        }
    }
    let format = match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Human,
        f => f,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(MaskedStderr)
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Journal => builder
            .with_ansi(false)
            .event_format(Journal(
                format::format()
                    .without_time()
                    .with_level(false)
                    .with_ansi(false),
            ))
            .try_init(),
        _ => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// Whether stderr is the stream systemd connected to the journal (`JOURNAL_STREAM=DEV:INODE`).
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// Prefixes each line with its syslog priority, for journald.
struct Journal<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journal<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
