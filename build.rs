//! Puts the git commit into `worker --version` (`unknown` outside a git checkout).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WORKER_GIT_COMMIT={commit}");
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    // A commit rewrites the branch's ref file (the directory above only changes when a branch is
    // created): watch the file HEAD points at, so the version names the commit it was built from.
    if let Some(branch) = std::fs::read_to_string(".git/HEAD")
        .ok()
        .and_then(|h| h.trim().strip_prefix("ref: ").map(str::to_string))
    {
        let path = format!(".git/{branch}");
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
