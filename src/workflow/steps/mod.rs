//! The in-process step kinds: each runs as a task and reports its outputs (a JSON object) or why
//! it failed, like a process attempt reports its exit.

/// What an in-process step ends with: its outputs, or the error that failed it.
pub type StepResult = Result<serde_json::Value, String>;

/// The most a step may store as outputs (and the most an `http` step reads of a body).
pub const MAX_OUTPUTS: usize = 1 << 20;
