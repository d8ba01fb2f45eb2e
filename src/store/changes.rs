//! The change log (migration 9): what the HTTP API's event stream replays.

use super::Result;
use crate::model::RunId;

/// One recorded change: a run was created or changed state (`step` is `None`), or one of its
/// steps changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub run_id: RunId,
    pub step: Option<String>,
    /// The state it changed to.
    pub state: String,
}

/// The store's operations on changes: the SQLite and PostgreSQL transactions implement them.
pub trait ChangeOps {
    /// The newest change's sequence number (0 when there is none).
    fn last_change(&self) -> Result<i64>;

    /// The oldest change still kept (0 when there is none).
    fn first_change(&self) -> Result<i64>;

    /// Changes after `seq`, oldest first, at most `limit`.
    fn changes_after(&self, seq: i64, limit: u32) -> Result<Vec<Change>>;

    /// Forgets all but the newest `keep` changes; returns how many were deleted.
    fn prune_changes(&self, keep: u64) -> Result<usize>;
}
