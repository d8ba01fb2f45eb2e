//! PostgreSQL: nodes, by the database's clock (`now()`, the transaction's start: every node's
//! view of "silent for" is measured against the same clock).

use std::time::Duration;

use tokio_postgres::Row;

use super::PgTx;
use super::convert::at;
use crate::model::Time;
use crate::store::nodes::*;
use crate::store::{Result, StoreError};

/// A node's heartbeat ([`NodeOps::node_beat`]). One statement: its updates see one snapshot,
/// so this node's row is left out of the expiry (it has just been brought up to date by the
/// beat, as if done first).
pub(super) const SQL_BEAT: &str = "WITH beat AS (\
        UPDATE nodes SET heartbeat_at = now() \
        WHERE name = $1 AND epoch = $2 AND state = 'live' RETURNING 1\
    ), expired AS (\
        UPDATE nodes SET state = 'dead' WHERE state = 'live' AND name <> $1 \
        AND heartbeat_at < now() - make_interval(secs => $3) RETURNING name\
    ) SELECT EXISTS (SELECT 1 FROM beat), ARRAY(SELECT name FROM expired), \
    EXISTS (SELECT 1 FROM runs r WHERE r.state = 'running' AND r.owner LIKE 'node:%' \
        AND NOT EXISTS (SELECT 1 FROM nodes n \
            WHERE n.state = 'live' AND r.owner = 'node:' || n.name)), \
    EXISTS (SELECT 1 FROM alerts WHERE status = 'pending' AND next_attempt_at <= $4 \
        AND (lease_until IS NULL OR lease_until <= $4)) \
    OR EXISTS (SELECT 1 FROM throttles WHERE window_end <= $4), \
    (SELECT count(*) FROM runs WHERE state = 'running' AND owner = 'node:' || $1)";

/// Whether a node is live, its row locked until the transaction ends (see `node_live`).
const SQL_LIVE_LOCKED: &str =
    "SELECT 1 FROM nodes WHERE name = $1 AND epoch = $2 AND state = 'live' FOR SHARE";

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn node_from_row(r: &Row) -> NodeRow {
    let silent: f64 = r.get(9);
    NodeRow {
        name: r.get(0),
        host: r.get(1),
        pid: r.get::<_, i32>(2).max(0) as u32,
        version: r.get(3),
        started_at: r.get(4),
        heartbeat_at: r.get(5),
        state: r.get(6),
        epoch: r.get(7),
        running: r.get::<_, i64>(8).max(0) as u32,
        silent_for: Duration::from_secs_f64(silent.max(0.0)),
    }
}

impl NodeOps for PgTx<'_> {
    fn join_node(
        &self,
        name: &str,
        host: &str,
        pid: u32,
        version: &str,
        timeout: Duration,
    ) -> Result<Join> {
        let live = self.query_opt(
            "SELECT host, pid, extract(epoch FROM now() - heartbeat_at)::float8 FROM nodes \
             WHERE name = $1 AND state = 'live'",
            &[&name],
        )?;
        if let Some(r) = live {
            let silent: f64 = r.get(2);
            if silent < seconds(timeout) {
                return Ok(Join::Taken {
                    host: r.get(0),
                    pid: r.get::<_, i32>(1).max(0) as u32,
                    silent_for: Duration::from_secs_f64(silent.max(0.0)),
                });
            }
        }
        let pid = pid as i32;
        let epoch: i64 = self
            .query_one(
                "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at, state, epoch) \
                 VALUES ($1, $2, $3, $4, now(), now(), 'live', 1) \
                 ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
                 version = excluded.version, started_at = excluded.started_at, \
                 heartbeat_at = excluded.heartbeat_at, state = 'live', epoch = nodes.epoch + 1 \
                 RETURNING epoch",
                &[&name, &host, &pid, &version],
            )?
            .get(0);
        Ok(Join::Joined { epoch })
    }

    fn node_heartbeat(&self, node: &NodeId) -> Result<bool> {
        let n = self.execute(
            "UPDATE nodes SET heartbeat_at = now() WHERE name = $1 AND epoch = $2 AND state = 'live'",
            &[&node.name, &node.epoch],
        )?;
        Ok(n == 1)
    }

    fn node_live(&self, node: &NodeId) -> Result<bool> {
        // In a write transaction, the row stays locked until it ends: another node's heartbeat
        // thread (which takes no store lock) cannot declare this node dead before what this
        // transaction writes is committed — so the rescue that follows sees all of it.
        // A look writes nothing that a rescue could miss (and may not lock rows).
        let sql = if self.read_only() {
            "SELECT 1 FROM nodes WHERE name = $1 AND epoch = $2 AND state = 'live'"
        } else {
            SQL_LIVE_LOCKED
        };
        Ok(self.query_opt(sql, &[&node.name, &node.epoch])?.is_some())
    }

    fn require_live(&self, node: &NodeId) -> Result<()> {
        if self.read_only() {
            return match self.node_live(node)? {
                true => Ok(()),
                false => Err(StoreError::Fenced),
            };
        }
        // The row lock is taken when the server runs the statement, before what follows it in
        // the transaction; only the reading of the answer waits.
        self.query_later(
            SQL_LIVE_LOCKED,
            vec![Box::new(node.name.clone()), Box::new(node.epoch)],
            |rows| match rows.is_empty() {
                false => Ok(()),
                true => Err(StoreError::Fenced),
            },
        )
    }

    fn expire_nodes(&self, timeout: Duration, except: Option<&str>) -> Result<Vec<String>> {
        let rows = self.query(
            "UPDATE nodes SET state = 'dead' WHERE state = 'live' AND name IS DISTINCT FROM $2 \
             AND heartbeat_at < now() - make_interval(secs => $1) RETURNING name",
            &[&seconds(timeout), &except],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn node_beat(&self, node: &NodeId, timeout: Duration, now: Time) -> Result<Beat> {
        let row = self.query_one(
            SQL_BEAT,
            &[&node.name, &node.epoch, &seconds(timeout), &at(now)],
        )?;
        Ok(Beat {
            live: row.try_get(0)?,
            expired: row.try_get(1)?,
            orphans: row.try_get(2)?,
            alerts_due: row.try_get(3)?,
            held: row.try_get::<_, i64>(4)?.max(0) as u64,
        })
    }

    fn leave_node(&self, node: &NodeId) -> Result<()> {
        self.execute(
            "UPDATE nodes SET state = 'left', heartbeat_at = now() \
             WHERE name = $1 AND epoch = $2 AND state = 'live'",
            &[&node.name, &node.epoch],
        )?;
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = self.query(
            "SELECT n.name, n.host, n.pid, n.version, n.started_at, n.heartbeat_at, n.state, n.epoch, \
             (SELECT count(*) FROM runs r WHERE r.state = 'running' AND r.owner = 'node:' || n.name), \
             extract(epoch FROM now() - n.heartbeat_at)::float8 FROM nodes n ORDER BY n.name",
            &[],
        )?;
        Ok(rows.iter().map(node_from_row).collect())
    }
}
