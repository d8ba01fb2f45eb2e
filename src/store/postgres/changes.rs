//! PostgreSQL: the change log.
//!
//! Its rows are written by triggers in write transactions only, which the advisory lock
//! serialises: sequence numbers are taken in commit order, so a reader that has seen `seq`
//! never misses a later commit below it. A rolled-back write leaves a gap, which readers skip.

use super::PgTx;
use crate::store::Result;
use crate::store::changes::*;

impl ChangeOps for PgTx<'_> {
    fn last_change(&self) -> Result<i64> {
        const SQL: &str = "SELECT coalesce(max(seq), 0) FROM changes";
        Ok(self.query_one(SQL, &[])?.try_get(0)?)
    }

    fn first_change(&self) -> Result<i64> {
        const SQL: &str = "SELECT coalesce(min(seq), 0) FROM changes";
        Ok(self.query_one(SQL, &[])?.try_get(0)?)
    }

    fn changes_after(&self, seq: i64, limit: u32) -> Result<Vec<Change>> {
        const SQL: &str =
            "SELECT seq, run_id, step, state FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2";
        self.query(SQL, &[&seq, &i64::from(limit)])?
            .iter()
            .map(|r| {
                Ok(Change {
                    seq: r.try_get(0)?,
                    run_id: r.try_get(1)?,
                    step: r.try_get(2)?,
                    state: r.try_get(3)?,
                })
            })
            .collect()
    }

    fn prune_changes(&self, keep: u64) -> Result<usize> {
        const SQL: &str = "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - $1";
        // More than can be numbered keeps everything.
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        Ok(self.execute(SQL, &[&keep])? as usize)
    }
}
