//! The change log (migration 9): what the HTTP API's event stream replays.

use super::{Result, Tx};
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

impl Tx<'_> {
    /// The newest change's sequence number (0 when there is none).
    pub fn last_change(&self) -> Result<i64> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM changes")?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }

    /// The oldest change still kept (0 when there is none).
    pub fn first_change(&self) -> Result<i64> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT coalesce(min(seq), 0) FROM changes")?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }

    /// Changes after `seq`, oldest first, at most `limit`.
    pub fn changes_after(&self, seq: i64, limit: u32) -> Result<Vec<Change>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT seq, run_id, step, state FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        Ok(stmt
            .query_map(rusqlite::params![seq, limit], |r| {
                Ok(Change {
                    seq: r.get(0)?,
                    run_id: r.get(1)?,
                    step: r.get(2)?,
                    state: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets all but the newest `keep` changes; returns how many were deleted.
    pub fn prune_changes(&self, keep: u64) -> Result<usize> {
        let mut stmt = self.tx.prepare_cached(
            "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?1",
        )?;
        Ok(stmt.execute([keep as i64])?)
    }
}
