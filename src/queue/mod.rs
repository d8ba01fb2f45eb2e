//! The queue: enqueuing with dependency expansion, run ordering and claiming, attempt outcomes,
//! retries, cancellation and crash recovery.
//!
//! Architecture invariant: no SQL here. These functions decide *what* happens and express it as
//! typed operations on a store transaction, so each decision and its effects commit together.

pub mod enqueue;
pub mod lifecycle;
pub mod retry;

pub use enqueue::{EnqueueError, Enqueued, Request, enqueue};
pub use lifecycle::{CancelResult, Claimed, Outcome, Report, RetryError};

#[cfg(test)]
mod tests;
