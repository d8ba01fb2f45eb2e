//! End-to-end tests: they drive the built `worker` binary the way a user does, against a real
//! SQLite file and real child processes, in a temporary config and data directory each.
//!
//! All waits are polls with generous deadlines (the suite must pass on a loaded 2-core machine);
//! nothing asserts on how fast something happened — speed is the benchmark harness's business.

mod alerts;
mod api;
mod cluster;
mod common;
mod dashboard;
mod identity;
mod metrics;
mod operator;
mod peers;
mod schedules;
mod service;
mod spine;
mod workflows;
