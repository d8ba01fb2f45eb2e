//! SQLite: the change log.

use super::{Result, SqliteTx};
use crate::store::changes::*;

impl ChangeOps for SqliteTx<'_> {
    fn last_change(&self) -> Result<i64> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM changes")?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }

    fn first_change(&self) -> Result<i64> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT coalesce(min(seq), 0) FROM changes")?;
        Ok(stmt.query_row([], |r| r.get(0))?)
    }

    fn changes_after(&self, seq: i64, limit: u32) -> Result<Vec<Change>> {
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

    fn prune_changes(&self, keep: u64) -> Result<usize> {
        let mut stmt = self.tx.prepare_cached(
            "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?1",
        )?;
        // More than can be numbered keeps everything (`as i64` would make it -1: delete all).
        Ok(stmt.execute([i64::try_from(keep).unwrap_or(i64::MAX)])?)
    }
}
