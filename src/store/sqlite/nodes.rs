//! SQLite: nodes. One host shares an SQLite store, so there is one daemon (its node) at a time
//! (the data directory's lock sees to it); its row is kept all the same, for `worker nodes`.
//! The database's clock is the host's.

use std::time::Duration;

use rusqlite::{OptionalExtension, Row, params};

use super::{Result, SqliteTx, time};
use crate::datadir::DAEMON_LEASE;
use crate::model::Time;
use crate::store::alerts::AlertOps;
use crate::store::nodes::*;

/// Now, in milliseconds, by SQLite's clock.
const NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

fn node_from_row(r: &Row<'_>) -> Result<NodeRow> {
    let silent_ms: i64 = r.get(9)?;
    Ok(NodeRow {
        name: r.get(0)?,
        host: r.get(1)?,
        pid: r.get(2)?,
        version: r.get(3)?,
        started_at: time(r.get(4)?)?,
        heartbeat_at: time(r.get(5)?)?,
        state: r.get(6)?,
        epoch: r.get(7)?,
        running: r.get(8)?,
        silent_for: Duration::from_millis(silent_ms.max(0) as u64),
    })
}

impl NodeOps for SqliteTx<'_> {
    fn join_node(
        &self,
        name: &str,
        host: &str,
        pid: u32,
        version: &str,
        timeout: Duration,
    ) -> Result<Join> {
        let live: Option<(String, u32, i64)> = self
            .tx
            .prepare_cached(&format!(
                "SELECT host, pid, {NOW_MS} - heartbeat_at FROM nodes WHERE name = ?1 AND state = 'live'"
            ))?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((host, pid, silent)) = live
            && silent < timeout.as_millis() as i64
        {
            return Ok(Join::Taken {
                host,
                pid,
                silent_for: Duration::from_millis(silent.max(0) as u64),
            });
        }
        let epoch: i64 = self
            .tx
            .prepare_cached(&format!(
                "INSERT INTO nodes (name, host, pid, version, started_at, heartbeat_at, state, epoch) \
                 VALUES (?1, ?2, ?3, ?4, {NOW_MS}, {NOW_MS}, 'live', 1) \
                 ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
                 version = excluded.version, started_at = excluded.started_at, \
                 heartbeat_at = excluded.heartbeat_at, state = 'live', epoch = nodes.epoch + 1 \
                 RETURNING epoch"
            ))?
            .query_row(params![name, host, pid, version], |r| r.get(0))?;
        Ok(Join::Joined { epoch })
    }

    fn node_heartbeat(&self, node: &NodeId) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(&format!(
                "UPDATE nodes SET heartbeat_at = {NOW_MS} WHERE name = ?1 AND epoch = ?2 AND state = 'live'"
            ))?
            .execute(params![node.name, node.epoch])?;
        Ok(n == 1)
    }

    fn node_live(&self, node: &NodeId) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT 1 FROM nodes WHERE name = ?1 AND epoch = ?2 AND state = 'live'",
            )?
            .query_row(params![node.name, node.epoch], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn require_live(&self, node: &NodeId) -> Result<()> {
        if self.node_live(node)? {
            Ok(())
        } else {
            Err(crate::store::StoreError::Fenced)
        }
    }

    fn expire_nodes(&self, timeout: Duration, except: Option<&str>) -> Result<Vec<String>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "UPDATE nodes SET state = 'dead' WHERE state = 'live' AND name IS NOT ?2 \
             AND heartbeat_at < {NOW_MS} - ?1 RETURNING name"
        ))?;
        let names = stmt
            .query_map(params![timeout.as_millis() as i64, except], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    }

    fn leave_node(&self, node: &NodeId) -> Result<()> {
        self.tx
            .prepare_cached(&format!(
                "UPDATE nodes SET state = 'left', heartbeat_at = {NOW_MS} \
                 WHERE name = ?1 AND epoch = ?2 AND state = 'live'"
            ))?
            .execute(params![node.name, node.epoch])?;
        Ok(())
    }

    fn node_beat(&self, node: &NodeId, timeout: Duration, now: Time) -> Result<Beat> {
        let live = self.node_heartbeat(node)?;
        // Not this node: its beat above may already be older than `timeout` by now.
        let expired = self.expire_nodes(timeout, Some(&node.name))?;
        let orphans = self
            .tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM runs r WHERE r.state = 'running' \
                 AND r.owner LIKE 'node:%' AND NOT EXISTS (SELECT 1 FROM nodes n \
                 WHERE n.state = 'live' AND r.owner = 'node:' || n.name))",
            )?
            .query_row([], |r| r.get(0))?;
        let alerts_due = self.next_alert_due()?.is_some_and(|t| t <= now)
            || self.next_window_end()?.is_some_and(|t| t <= now);
        let held: i64 = self
            .tx
            .prepare_cached(
                "SELECT count(*) FROM runs WHERE state = 'running' AND owner = 'node:' || ?1",
            )?
            .query_row([&node.name], |r| r.get(0))?;
        Ok(Beat {
            live,
            expired,
            orphans,
            alerts_due,
            held: held.max(0) as u64,
        })
    }

    fn nodes(&self) -> Result<Vec<NodeRow>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT name, host, pid, version, started_at, heartbeat_at, state, epoch, \
             (SELECT count(*) FROM runs WHERE state = 'running' AND owner = ?1), \
             {NOW_MS} - heartbeat_at FROM nodes ORDER BY name"
        ))?;
        let rows = stmt
            .query_and_then([DAEMON_LEASE], node_from_row)?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }
}
