//! This daemon as a node of its store.
//!
//! On SQLite the data directory's lock already makes the daemon the only one: it joins as its
//! node (for `worker nodes`) and records a heartbeat at housekeeping. On PostgreSQL several
//! daemons share the store, and this module keeps the protocol that lets them:
//!
//! - **Join**: a node name is refused while a live node of that name has sent a heartbeat within
//!   `node_timeout`. Each join starts a new *epoch*.
//! - **Heartbeat**: a thread of its own, on a connection of its own, records one every
//!   `node_timeout / 3` — so a busy or blocked engine loop cannot make the node look dead, while a
//!   stopped process (SIGSTOP, a partition) does. In the same statement it declares dead every
//!   node silent for `node_timeout` (by the database's clock) and tells the engine, which
//!   recovers their runs. The same statement is an idle node's only poll: it also tells whether
//!   runs of dead nodes are still to be recovered and whether an alert is due, which the engine
//!   and the alert outbox would otherwise look for on timers of their own.
//! - **Fencing**: every write of the engine first checks that this node is still live in its
//!   epoch; once declared dead it is not, so it can record nothing for runs taken from it. When
//!   the heartbeat or that check finds out, the engine kills what it runs, discards their ends,
//!   and joins again in a new epoch.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::config::Settings;
use crate::datadir::DAEMON_LEASE;
use crate::store::{Durability, Join, Location, NodeId, Store, StoreError};

/// What the heartbeat thread tells the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEvent {
    /// The store says this node is no longer live in its epoch.
    Fenced,
    /// Other nodes were declared dead, or runs of dead nodes are left: recover them.
    Rescue,
    /// An alert or a throttle window is due (written by a node that may be gone): the alert
    /// outbox should look.
    AlertsDue,
    /// The store says this node holds runs (`running`, its owner).
    Holds,
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "node `{name}` is already live on this store (host {host}, pid {pid}, last heartbeat {}s ago): give this daemon another `node:` name in scheduler.yaml, or stop the other one",
        silent.as_secs()
    )]
    Taken {
        name: String,
        host: String,
        pid: u32,
        silent: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Node {
    /// Name and epoch; the heartbeat thread reads it, a re-join changes it.
    id: Arc<Mutex<NodeId>>,
    /// The owner its claims carry.
    pub owner: String,
    /// Whether the store is shared (PostgreSQL).
    pub shared: bool,
    host: String,
    timeout: Duration,
    heartbeat: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Node {
    /// Joins the store as `settings.node`, and on a shared store starts the heartbeat thread,
    /// which reports on `events`.
    pub fn join(
        store: &mut Store,
        location: &Location,
        settings: &Settings,
        clock: Arc<dyn Clock>,
        events: mpsc::UnboundedSender<NodeEvent>,
    ) -> Result<Node, JoinError> {
        let shared = matches!(location, Location::Postgres(_));
        let host = crate::config::scheduler::host_name();
        let owner = if shared {
            crate::store::node_owner(&settings.node)
        } else {
            DAEMON_LEASE.to_owned()
        };
        // On SQLite the data directory's lock already proves the previous daemon dead.
        let timeout = if shared {
            settings.node_timeout
        } else {
            Duration::ZERO
        };
        let epoch = join_once(store, &settings.node, &host, timeout)?;
        let id = Arc::new(Mutex::new(NodeId {
            name: settings.node.clone(),
            epoch,
        }));
        info!(node = %settings.node, epoch, shared, "joined the store as a node");
        let heartbeat = if shared {
            Some(start_heartbeat(
                location.clone(),
                id.clone(),
                settings.node_timeout,
                clock,
                events,
            )?)
        } else {
            None
        };
        Ok(Node {
            id,
            owner,
            shared,
            host,
            timeout: settings.node_timeout,
            heartbeat,
        })
    }

    /// Name and epoch now.
    pub fn id(&self) -> NodeId {
        lock(&self.id).clone()
    }

    /// After being fenced: joins again, in a new epoch.
    pub fn rejoin(&self, store: &mut Store) -> Result<(), JoinError> {
        let name = self.id().name;
        let epoch = join_once(store, &name, &self.host, self.timeout)?;
        lock(&self.id).epoch = epoch;
        info!(node = %name, epoch, "joined the store again");
        Ok(())
    }

    /// Records a heartbeat from the engine's own connection (SQLite: at housekeeping).
    pub fn beat(&self, store: &mut Store) {
        let id = self.id();
        if let Err(e) = store.write(|tx| tx.node_heartbeat(&id)) {
            error!(error = %e, "cannot record the node's heartbeat");
        }
    }

    /// Leaves the store (a clean stop): stops the heartbeat and records `left`.
    pub fn leave(&mut self, store: &mut Store) {
        if let Some((stop, thread)) = self.heartbeat.take() {
            drop(stop);
            let _ = thread.join();
        }
        let id = self.id();
        if let Err(e) = store.write(|tx| tx.leave_node(&id)) {
            warn!(error = %e, "cannot record that this node left");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.heartbeat.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

fn lock(id: &Mutex<NodeId>) -> std::sync::MutexGuard<'_, NodeId> {
    // A poisoned lock only means a panic elsewhere while it was held; the id is still whole.
    id.lock().unwrap_or_else(|p| p.into_inner())
}

fn join_once(
    store: &mut Store,
    name: &str,
    host: &str,
    timeout: Duration,
) -> Result<i64, JoinError> {
    let pid = std::process::id();
    match store.write(|tx| tx.join_node(name, host, pid, crate::VERSION, timeout))? {
        Join::Joined { epoch } => Ok(epoch),
        Join::Taken {
            host,
            pid,
            silent_for,
        } => Err(JoinError::Taken {
            name: name.to_owned(),
            host,
            pid,
            silent: silent_for,
        }),
    }
}

/// The heartbeat thread: every `timeout / 3`, on a connection of its own, records this node's
/// heartbeat and declares dead the nodes silent for `timeout`.
fn start_heartbeat(
    location: Location,
    id: Arc<Mutex<NodeId>>,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    events: mpsc::UnboundedSender<NodeEvent>,
) -> Result<(std::sync::mpsc::Sender<()>, JoinHandle<()>), JoinError> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let mut store = Store::open_at(&location, Durability::Full)?;
    let every = timeout / 3;
    let thread = std::thread::Builder::new()
        .name("worker-heartbeat".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                match stopped.recv_timeout(every) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    // Stopped, or the node was dropped.
                    _ => return,
                }
                let me = lock(&id).clone();
                // Row locks suffice (see `require_live`): the heartbeat never waits for the engines.
                match store.beat(&me, timeout, clock.now()) {
                    Ok(beat) => {
                        if failing {
                            info!("the store answers heartbeats again");
                        }
                        failing = false;
                        for name in &beat.expired {
                            warn!(node = %name, timeout_s = timeout.as_secs(), "node silent past node_timeout: declared dead, its runs are recovered");
                        }
                        let mut tell = Vec::new();
                        if !beat.expired.is_empty() || beat.orphans {
                            tell.push(NodeEvent::Rescue);
                        }
                        if beat.alerts_due {
                            tell.push(NodeEvent::AlertsDue);
                        }
                        if !beat.live {
                            tell.push(NodeEvent::Fenced);
                        } else if beat.held > 0 {
                            tell.push(NodeEvent::Holds);
                        }
                        if tell.into_iter().any(|e| events.send(e).is_err()) {
                            return;
                        }
                    }
                    Err(e) => {
                        if !failing {
                            error!(error = %e, "cannot record the heartbeat: the store is unreachable; retrying");
                        }
                        failing = true;
                    }
                }
            }
        })
        .map_err(|e| JoinError::Store(StoreError::Connect(format!("cannot start the heartbeat thread: {e}"))))?;
    Ok((stop, thread))
}
