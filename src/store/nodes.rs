//! Operations on nodes: the daemons that share a store, their heartbeats and liveness.
//!
//! Every instant that decides liveness is the database's (`now()` on PostgreSQL), never a
//! node's: hosts whose clocks disagree cannot declare each other dead early.

use std::time::Duration;

use super::Result;
use crate::model::Time;

/// The owner recorded on the runs a node claims (on a shared store).
pub fn node_owner(name: &str) -> String {
    format!("node:{name}")
}

/// The node an owner names, if it is a node (see [`node_owner`]).
pub fn owner_node(owner: &str) -> Option<&str> {
    owner.strip_prefix("node:")
}

/// A node as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: Time,
    pub heartbeat_at: Time,
    /// `live`, `dead` (silent past its timeout, its runs recovered) or `left` (stopped cleanly).
    pub state: String,
    /// Incremented each time the node joins: a node that was declared dead and comes back
    /// cannot pass for its earlier self.
    pub epoch: i64,
    /// Runs it holds (`running`).
    pub running: u32,
    /// How long ago its last heartbeat was, by the database's clock.
    pub silent_for: Duration,
}

/// What joining as a node gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Join {
    /// Joined, with this epoch.
    Joined { epoch: i64 },
    /// A live node of that name has sent a heartbeat within the timeout.
    Taken {
        host: String,
        pid: u32,
        silent_for: Duration,
    },
}

/// Who this process is among the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId {
    pub name: String,
    pub epoch: i64,
}

/// What one heartbeat found ([`NodeOps::node_beat`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Beat {
    /// The node is still live in its epoch; `false`: it was declared dead (fenced).
    pub live: bool,
    /// The nodes this beat declared dead: their runs are to be recovered.
    pub expired: Vec<String>,
    /// Runs are held by nodes that are no longer live (a rescue that has not happened, or
    /// failed half-way): a rescue is due.
    pub orphans: bool,
    /// An alert or a throttle window is due by the caller's `now` (the node that wrote it may
    /// have died before delivering it): the alert outbox should look.
    pub alerts_due: bool,
    /// Runs the store says this node holds (`running`, its owner): an idle engine that holds
    /// none has lost track of them, and recovers them.
    pub held: u64,
}

pub trait NodeOps {
    /// Joins as node `name` (a new epoch, state `live`), unless a live node of that name has
    /// sent a heartbeat within `timeout`.
    fn join_node(
        &self,
        name: &str,
        host: &str,
        pid: u32,
        version: &str,
        timeout: Duration,
    ) -> Result<Join>;

    /// Records a heartbeat. `false`: the node is no longer live in this epoch (it was declared
    /// dead and its runs were recovered): it must stop what it runs and join again.
    fn node_heartbeat(&self, node: &NodeId) -> Result<bool>;

    /// Whether the node is live in this epoch (checked first in every write of a node's engine).
    fn node_live(&self, node: &NodeId) -> Result<bool>;

    /// Fails the transaction with [`super::StoreError::Fenced`] unless the node is live in this
    /// epoch, as [`NodeOps::node_live`] (in a write transaction, the row stays locked until it
    /// ends). On PostgreSQL, in a write transaction, the lock is taken at once but the answer
    /// is read later: at the latest before `COMMIT`, which it then prevents.
    fn require_live(&self, node: &NodeId) -> Result<()>;

    /// Declares dead every live node silent for `timeout`, but `except`; returns their names.
    fn expire_nodes(&self, timeout: Duration, except: Option<&str>) -> Result<Vec<String>>;

    /// One heartbeat of `node`, the expiry of the nodes silent for `timeout`, and the looks that
    /// an idle node would otherwise make on timers of its own (see [`Beat`]), as one write that
    /// takes row locks only. On PostgreSQL one statement, sent outside any transaction.
    fn node_beat(&self, node: &NodeId, timeout: Duration, now: Time) -> Result<Beat>;

    /// A node that stops cleanly leaves (state `left`).
    fn leave_node(&self, node: &NodeId) -> Result<()>;

    /// Every node ever joined, by name.
    fn nodes(&self) -> Result<Vec<NodeRow>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{Fresh, conformance};

    const LONG: Duration = Duration::from_secs(3600);

    conformance! {
        /// A name is taken while its node sends heartbeats; once it is declared dead (or leaves)
        /// the name can join again, in a new epoch, and the old epoch is refused.
        fn joining_heartbeats_expiry_and_fencing(engine) {
            let mut fresh = Fresh::new(engine);
            let store = &mut fresh.store;
            let join = |store: &mut crate::store::Store, pid: u32| {
                store
                    .write(|tx| tx.join_node("a", "host-1", pid, "1.0", LONG))
                    .unwrap()
            };
            let Join::Joined { epoch } = join(store, 10) else {
                panic!("a new name joins")
            };
            let first = NodeId { name: "a".into(), epoch };
            match join(store, 11) {
                Join::Taken { host, pid, silent_for } => {
                    assert_eq!((host.as_str(), pid), ("host-1", 10));
                    assert!(silent_for < LONG);
                }
                other => panic!("a live name is taken, got {other:?}"),
            }
            assert!(store.write(|tx| tx.node_heartbeat(&first)).unwrap());
            assert!(store.read(|tx| tx.node_live(&first)).unwrap());
            // Not silent long enough: nobody expires.
            assert!(store.write(|tx| tx.expire_nodes(LONG, None)).unwrap().is_empty());
            std::thread::sleep(Duration::from_millis(20));
            let expired = store
                .write(|tx| tx.expire_nodes(Duration::from_millis(1), None))
                .unwrap();
            assert_eq!(expired, vec!["a".to_string()]);
            // The old epoch is fenced: no heartbeat, not live.
            assert!(!store.write(|tx| tx.node_heartbeat(&first)).unwrap());
            assert!(!store.read(|tx| tx.node_live(&first)).unwrap());
            let rows = store.read(|tx| tx.nodes()).unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!((rows[0].state.as_str(), rows[0].epoch), ("dead", epoch));
            // It joins again in a new epoch.
            let Join::Joined { epoch: second } = join(store, 12) else {
                panic!("a dead node's name joins again")
            };
            assert!(second > epoch);
            let again = NodeId { name: "a".into(), epoch: second };
            assert!(store.read(|tx| tx.node_live(&again)).unwrap());
            store.write(|tx| tx.leave_node(&again)).unwrap();
            let rows = store.read(|tx| tx.nodes()).unwrap();
            assert_eq!((rows[0].state.as_str(), rows[0].pid), ("left", 12));
            assert!(matches!(join(store, 13), Join::Joined { .. }));
        }
    }

    conformance! {
        /// A write transaction of a node declared dead commits nothing, however late the
        /// answer of its fencing check is read.
        fn a_fenced_node_commits_nothing(engine) {
            let mut fresh = Fresh::new(engine);
            let store = &mut fresh.store;
            let Join::Joined { epoch } = store
                .write(|tx| tx.join_node("a", "host-1", 10, "1.0", LONG))
                .unwrap()
            else {
                panic!("a new name joins")
            };
            let me = NodeId { name: "a".into(), epoch };
            store
                .write(|tx| {
                    tx.require_live(&me)?;
                    tx.set_meta("k", "live")
                })
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(
                store.write(|tx| tx.expire_nodes(Duration::from_millis(1), None)).unwrap(),
                vec!["a".to_string()]
            );
            let fenced = store.write(|tx| {
                tx.require_live(&me)?;
                tx.set_meta("k", "fenced")?;
                tx.meta("k")
            });
            assert!(matches!(fenced, Err(crate::store::StoreError::Fenced)), "{fenced:?}");
            assert_eq!(store.read(|tx| tx.meta("k")).unwrap().as_deref(), Some("live"));
            assert!(matches!(
                store.read(|tx| tx.require_live(&me)),
                Err(crate::store::StoreError::Fenced)
            ));
        }
    }

    conformance! {
        /// A beat also tells an idle node what it would otherwise poll for: runs still held by
        /// a node that is no longer live (until they are recovered), and alerts due.
        fn a_beat_tells_of_runs_left_by_dead_nodes_and_of_due_alerts(engine) {
            use crate::model::RunState;
            use crate::store::{NewAlert, StoreError};
            let mut fresh = Fresh::new(engine);
            let store = &mut fresh.store;
            let join = |store: &mut crate::store::Store, name: &str| {
                match store.write(|tx| tx.join_node(name, "h", 1, "1.0", LONG)).unwrap() {
                    Join::Joined { epoch } => NodeId { name: name.into(), epoch },
                    other => panic!("{name} joins, got {other:?}"),
                }
            };
            let a = join(store, "a");
            let b = join(store, "b");
            let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
            let env = std::collections::BTreeMap::new();
            let (run, seq) = store
                .write(|tx| {
                    let id = tx.insert_run(&crate::store::tests::new_run(
                        "j",
                        RunState::Queued,
                        now,
                        &env,
                    ))?;
                    let (_, seq) = tx.start_attempt(id, &node_owner(&a.name), now, false)?;
                    Ok::<_, StoreError>((id, seq))
                })
                .unwrap();
            let quiet = Beat { live: true, ..Beat::default() };
            assert_eq!(store.beat(&b, LONG, now).unwrap(), quiet, "a is live: nothing to do");
            assert_eq!(store.beat(&a, LONG, now).unwrap().held, 1, "a holds its run");
            std::thread::sleep(Duration::from_millis(20));
            let beat = store.beat(&b, Duration::from_millis(1), now).unwrap();
            assert_eq!(beat.expired, vec!["a".to_string()], "b, beating, is not silent");
            assert!(beat.live);
            // Until a's run is recovered, every beat says a rescue is due.
            assert!(store.beat(&b, LONG, now).unwrap().orphans);
            assert!(store.beat(&b, LONG, now).unwrap().orphans);
            store
                .write(|tx| {
                    tx.end_attempt(run, seq, now, "lost", None, None, None, None)?;
                    tx.finish_run(run, RunState::Dead, now, Some("node died"), None, None)
                })
                .unwrap();
            assert_eq!(store.beat(&b, LONG, now).unwrap(), quiet, "recovered");
            store
                .write(|tx| {
                    tx.insert_alert(&NewAlert {
                        rule: "r",
                        channel: "c",
                        job: None,
                        event: "failed",
                        run_id: None,
                        status: "pending",
                        payload: "{}",
                        now,
                    })
                })
                .unwrap();
            assert!(!store.beat(&b, LONG, now - chrono::Duration::seconds(1)).unwrap().alerts_due);
            assert!(store.beat(&b, LONG, now).unwrap().alerts_due);
        }
    }

    conformance! {
        /// A node's heartbeat and the expiry of silent nodes take no store lock, yet cannot
        /// declare a node dead in the middle of one of its write transactions that checked it
        /// was live: the expiry waits for that transaction's end, so the rescue that follows
        /// sees everything it wrote (fencing).
        fn expiry_waits_for_a_transaction_that_checked_the_node_live(engine) {
            let dir = tempfile::tempdir().unwrap();
            let test_store = crate::store::testing::TestStore::new(engine, dir.path()).unwrap();
            let mut a = test_store.open();
            let mut b = test_store.open();
            let Join::Joined { epoch } = a
                .write(|tx| tx.join_node("a", "host-1", 10, "1.0", LONG))
                .unwrap()
            else {
                panic!("a new name joins")
            };
            let me = NodeId { name: "a".into(), epoch };
            std::thread::sleep(Duration::from_millis(20));
            let (checked_tx, checked) = std::sync::mpsc::channel();
            let engine_turn = std::thread::spawn(move || {
                a.write(|tx| {
                    tx.require_live(&me)?;
                    // A statement after it has been answered: the check has run on the server.
                    tx.meta("written")?;
                    checked_tx.send(()).unwrap();
                    // Long enough that an expiry that did not wait would run meanwhile.
                    std::thread::sleep(Duration::from_millis(300));
                    tx.set_meta("written", "by a")
                })
                .unwrap();
            });
            checked.recv().unwrap();
            let Join::Joined { epoch } = b
                .write(|tx| tx.join_node("b", "host-2", 20, "1.0", LONG))
                .unwrap()
            else {
                panic!("a second name joins")
            };
            let beat = b
                .beat(&NodeId { name: "b".into(), epoch }, Duration::from_millis(1), crate::clock::Clock::now(&crate::clock::SystemClock))
                .unwrap();
            let seen = b.read(|tx| tx.meta("written")).unwrap();
            engine_turn.join().unwrap();
            assert!(beat.live);
            assert_eq!(beat.expired, vec!["a".to_string()]);
            // The beat returned after a's transaction committed.
            assert_eq!(seen.as_deref(), Some("by a"));
        }
    }
}
