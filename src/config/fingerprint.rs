//! What a configuration was loaded from: a digest of each file's bytes, so that commands can tell
//! whether the files on disk still are what the daemon runs, and say which ones changed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The files of a configuration directory (paths relative to it) and a digest of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub files: BTreeMap<String, String>,
}

/// How a file differs between two fingerprints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Modified,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Modified => "changed",
        }
    }
}

/// SHA-256 of `bytes`, hex, shortened: enough to tell versions of a file apart.
fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Fingerprint {
    /// Records the bytes of `rel` as loaded.
    pub fn add(&mut self, rel: &str, bytes: &[u8]) {
        self.files.insert(rel.to_string(), digest(bytes));
    }

    /// The configuration files in `dir` as they are now: `scheduler.yaml`, `alerts.yaml` and
    /// `jobs/*.yaml` (the files [`super::Config::load`] reads).
    pub fn of_dir(dir: &Path) -> Fingerprint {
        let mut fp = Fingerprint::default();
        for rel in ["scheduler.yaml", "alerts.yaml"] {
            if let Ok(bytes) = std::fs::read(dir.join(rel)) {
                fp.add(rel, &bytes);
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("jobs")) {
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if name.starts_with('.') || !name.ends_with(".yaml") || !path.is_file() {
                    continue;
                }
                if let Ok(bytes) = std::fs::read(&path) {
                    fp.add(&format!("jobs/{name}"), &bytes);
                }
            }
        }
        fp
    }

    /// One digest for the whole configuration (file names and contents).
    pub fn digest(&self) -> String {
        let mut all = String::new();
        for (name, d) in &self.files {
            all.push_str(name);
            all.push('\0');
            all.push_str(d);
            all.push('\n');
        }
        digest(all.as_bytes())
    }

    /// What changed from `self` (what was loaded) to `now` (what is on disk), by file.
    pub fn changes(&self, now: &Fingerprint) -> Vec<(String, Change)> {
        let mut out = Vec::new();
        for (name, d) in &self.files {
            match now.files.get(name) {
                None => out.push((name.clone(), Change::Removed)),
                Some(n) if n != d => out.push((name.clone(), Change::Modified)),
                Some(_) => {}
            }
        }
        for name in now.files.keys() {
            if !self.files.contains_key(name) {
                out.push((name.clone(), Change::Added));
            }
        }
        out.sort();
        out
    }
}

impl PartialOrd for Change {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Change {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_which_files_changed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("jobs")).unwrap();
        std::fs::write(t.path().join("jobs/a.yaml"), "run: a\n").unwrap();
        std::fs::write(t.path().join("jobs/b.yaml"), "run: b\n").unwrap();
        std::fs::write(t.path().join("jobs/.hidden.yaml"), "x").unwrap();
        std::fs::write(t.path().join("scheduler.yaml"), "concurrency: 2\n").unwrap();
        let loaded = Fingerprint::of_dir(t.path());
        assert_eq!(
            loaded.files.keys().collect::<Vec<_>>(),
            ["jobs/a.yaml", "jobs/b.yaml", "scheduler.yaml"]
        );
        assert!(loaded.changes(&Fingerprint::of_dir(t.path())).is_empty());
        let before = loaded.digest();

        std::fs::write(t.path().join("jobs/a.yaml"), "run: a2\n").unwrap();
        std::fs::remove_file(t.path().join("jobs/b.yaml")).unwrap();
        std::fs::write(t.path().join("alerts.yaml"), "rules: []\n").unwrap();
        let now = Fingerprint::of_dir(t.path());
        assert_ne!(now.digest(), before);
        assert_eq!(
            loaded.changes(&now),
            vec![
                ("alerts.yaml".to_string(), Change::Added),
                ("jobs/a.yaml".to_string(), Change::Modified),
                ("jobs/b.yaml".to_string(), Change::Removed),
            ]
        );
    }
}
