//! What the daemon runs: the configuration it loaded (a fingerprint of its files, when, which
//! jobs), and the outcome of each reload — recorded in the store so that commands can tell a
//! person when the files on disk are not what the daemon runs, and `worker reload` can learn
//! whether its reload was applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::fingerprint::Change;
use crate::config::{Config, Fingerprint};
use crate::model::Time;
use crate::store::{Result, StoreError, Tx};

/// Meta key: the configuration the daemon runs ([`Loaded`], JSON).
const LOADED: &str = "config_loaded";
/// Meta key: the number of the latest reload asked for by `worker reload`.
const REQUEST: &str = "reload_request";
/// Meta key: the outcome of the latest reload ([`Outcome`], JSON).
const OUTCOME: &str = "reload_outcome";

/// The configuration a daemon runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Loaded {
    /// One digest over every file.
    pub digest: String,
    pub loaded_at: Time,
    /// Each file's digest (relative path → digest).
    pub files: BTreeMap<String, String>,
    /// The jobs it defines.
    pub jobs: Vec<String>,
    /// The daemon that loaded it.
    pub pid: u32,
}

impl Loaded {
    pub fn of(config: &Config, now: Time) -> Loaded {
        Loaded {
            digest: config.sources.digest(),
            loaded_at: now,
            files: config.sources.files.clone(),
            jobs: config.jobs.keys().cloned().collect(),
            pid: std::process::id(),
        }
    }

    /// How the files on disk differ from what was loaded.
    pub fn changes(&self, disk: &Fingerprint) -> Vec<(String, Change)> {
        Fingerprint {
            files: self.files.clone(),
        }
        .changes(disk)
    }

    pub fn knows(&self, job: &str) -> bool {
        self.jobs.iter().any(|j| j == job)
    }
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The latest request (`worker reload`) seen when the reload began: every request up to it
    /// is answered by this outcome.
    pub request: u64,
    pub at: Time,
    pub applied: bool,
    /// Why it was rejected (masked), one problem per entry.
    pub problems: Vec<String>,
    /// What changed, when applied (`jobs/a.yaml changed`).
    #[serde(default)]
    pub changes: Vec<String>,
    /// The digest of the configuration now running.
    pub digest: String,
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("daemon configuration record: {e}"))
}

pub fn record_loaded(tx: &Tx<'_>, loaded: &Loaded) -> Result<()> {
    tx.set_meta(LOADED, &serde_json::to_string(loaded).map_err(json_err)?)
}

/// The configuration the daemon last recorded (it may have stopped since).
pub fn loaded(tx: &Tx<'_>) -> Result<Option<Loaded>> {
    // A record this version cannot read is treated as absent: it only feeds warnings.
    Ok(tx.meta(LOADED)?.and_then(|s| serde_json::from_str(&s).ok()))
}

/// Asks for a reload: returns the request's number, answered by the first outcome whose
/// `request` is at least that.
pub fn request(tx: &Tx<'_>) -> Result<u64> {
    let n = latest_request(tx)? + 1;
    tx.set_meta(REQUEST, &n.to_string())?;
    Ok(n)
}

pub fn latest_request(tx: &Tx<'_>) -> Result<u64> {
    Ok(tx.meta(REQUEST)?.and_then(|s| s.parse().ok()).unwrap_or(0))
}

pub fn record_outcome(tx: &Tx<'_>, outcome: &Outcome) -> Result<()> {
    tx.set_meta(OUTCOME, &serde_json::to_string(outcome).map_err(json_err)?)
}

pub fn outcome(tx: &Tx<'_>) -> Result<Option<Outcome>> {
    Ok(tx
        .meta(OUTCOME)?
        .and_then(|s| serde_json::from_str(&s).ok()))
}
