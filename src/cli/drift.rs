//! What commands know of the daemon: whether one runs on the data directory, and which
//! configuration it runs — to warn when the files on disk are not that configuration.

use super::output::human;
use crate::config::Fingerprint;
use crate::config::fingerprint::Change;
use crate::daemon::loaded::{self, Loaded};
use crate::datadir::{DaemonInfo, DataDir, running_daemon};
use crate::store::{Store, StoreError};

/// The daemon as seen from a command.
pub struct DaemonView {
    /// The running daemon, if any.
    pub info: Option<DaemonInfo>,
    /// The configuration the running daemon recorded as loaded (`None` without a daemon).
    pub loaded: Option<Loaded>,
}

impl DaemonView {
    pub fn read(data: &DataDir, store: &mut Store) -> Result<DaemonView, StoreError> {
        let info = running_daemon(data);
        let loaded = match &info {
            // A record left by an earlier daemon describes nothing that runs now.
            Some(d) => store.read(loaded::loaded)?.filter(|l| l.pid == d.pid),
            None => None,
        };
        Ok(DaemonView { info, loaded })
    }

    /// Whether the running daemon does not run job `job` (it was added since it loaded its
    /// configuration). `false` when that is not known.
    pub fn lacks_job(&self, job: &str) -> bool {
        self.loaded.as_ref().is_some_and(|l| !l.knows(job))
    }

    /// How the configuration files on disk differ from what the running daemon loaded.
    pub fn drift(&self, config_dir: &std::path::Path) -> Option<Drift> {
        let loaded = self.loaded.as_ref()?;
        let changes = loaded.changes(&Fingerprint::of_dir(config_dir));
        (!changes.is_empty()).then(|| Drift {
            pid: self.info.as_ref().map_or(0, |d| d.pid),
            loaded_at: loaded.loaded_at,
            changes,
        })
    }
}

/// The files on disk are not what the daemon runs.
pub struct Drift {
    pub pid: u32,
    pub loaded_at: crate::model::Time,
    pub changes: Vec<(String, Change)>,
}

impl Drift {
    /// One line for people.
    pub fn message(&self) -> String {
        let what: Vec<String> = self
            .changes
            .iter()
            .map(|(f, c)| format!("{f} {}", c.as_str()))
            .collect();
        format!(
            "the daemon (pid {}) runs the configuration it loaded at {}; since then {}: run `worker reload` to apply",
            self.pid,
            human(self.loaded_at),
            what.join(", ")
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "loaded_at": super::output::rfc3339(self.loaded_at),
            "changes": self.changes.iter().map(|(f, c)| serde_json::json!({"file": f, "change": c.as_str()})).collect::<Vec<_>>(),
        })
    }
}

/// Warns on stderr when the files on disk differ from what the daemon runs (listings that show
/// the configuration: `list`, `schedules`).
pub fn warn(ctx: &super::Ctx, data: &DataDir, store: &mut Store) {
    if let Ok(view) = DaemonView::read(data, store)
        && let Some(d) = view.drift(&ctx.config_dir)
    {
        eprintln!("warning: {}", d.message());
    }
}
