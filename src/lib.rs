//! worker: a single-binary job runner daemon.

pub mod alert;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod datadir;
pub mod exec;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod objects;
pub mod ops;
pub mod queue;
pub mod runner;
pub mod schedule;
pub mod store;
pub mod units;
pub mod wake;
pub mod web;
pub mod workflow;

/// `0.1.0 (abc123def456)`: the crate version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("WORKER_GIT_COMMIT"),
    ")"
);
