//! The daemon: one owner task that drives the queue.
//!
//! The engine owns the store connection and the table of running attempts. Everything that can
//! change what should happen next arrives as an event — an attempt ended (from its task), a
//! wake-up datagram (another command wrote to the store), a timer (the next delayed run is due),
//! a signal — and each turn of the loop commits, in *one* write transaction, every finished
//! attempt it has collected, the promotion of due runs and the claims for free slots (group
//! commit: one fsync for many state changes). Then it sleeps. While idle it wakes only when
//! something is due, or once a minute for housekeeping: no polling.
//!
//! Architecture invariant: nothing on this loop blocks on the network or on a child process.
//! Attempts run in their own tasks; the engine only ever waits on the store.

mod checkpoint;
mod flows;
pub mod loaded;
mod node;
mod notify;
mod schedules;
mod trim;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::alert::{self, Event, outbox::Outbox};
use crate::clock::Clock;
use crate::config::Config;
use crate::datadir::{DAEMON_LEASE, DataDir, Lease, LockError, Owner};
use crate::exec::{Executor, StopReason, capture};
use crate::model::{RunId, RunState, Time};
use crate::queue::lifecycle;
use crate::queue::{Claimed, Report};
use crate::runner;
use crate::store::{Durability, Store, StoreError};
use crate::wake;

/// How often the daemon looks for runs left by dead foreground processes and records its
/// heartbeat (the default of [`Options::housekeeping`]).
pub const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// How often finished history is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// State changes kept for the event stream's replay (`GET /events` with `Last-Event-ID`).
const CHANGES_KEPT: u64 = 100_000;
/// How long a graceful stop spends delivering pending alerts.
const ALERT_FLUSH: Duration = Duration::from_secs(10);
/// Wake-up interval when the wake socket could not be bound.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// What the daemon needs to start.
pub struct Options {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    /// Our own binary, to run as the sentinel (`None` disables it).
    pub sentinel: Option<PathBuf>,
    /// How often housekeeping runs ([`HOUSEKEEPING`]; shorter in tests).
    pub housekeeping: Duration,
    /// Where workflow steps run (a runtime of their own, so that HTTP exchanges and SQL
    /// statements of steps use another core than the engine's loop); `None`: the engine's.
    pub steps: Option<tokio::runtime::Handle>,
    /// Where the HTTP server runs (a runtime of its own, so that no request competes with the
    /// engine's loop for its thread); `None`: the engine's.
    pub http: Option<tokio::runtime::Handle>,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid configuration:\n{0}")]
    Config(crate::config::Diagnostics),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(String),
}

/// What one turn's transaction decided.
struct Turn {
    /// The new state of each committed attempt's run, in `dones` order.
    states: Vec<RunState>,
    /// Attempts started, to launch.
    claimed: Vec<Claimed>,
    /// Jobs with queued runs that the loaded configuration does not define.
    unknown: Vec<String>,
    /// Workflow runs decided on (claimed, a step ended, looked at again), to apply.
    decided: Vec<flows::Decided>,
    /// How many of `decided`'s runs that left (ended, suspended) this turn's claim counted as
    /// gone: their slots need no further turn.
    left_counted: usize,
    /// Running runs whose cancellation was requested.
    cancels: Vec<RunId>,
    /// When the next delayed or retrying run is due.
    next_due: Option<Time>,
    /// When the next fire deadline passes, if deadlines were looked at this turn.
    next_deadline: Option<Option<Time>>,
    firing: schedules::Firing,
}

/// A running attempt, as the engine tracks it.
struct Handle {
    job: String,
    stop: watch::Sender<Option<StopReason>>,
}

/// An attempt's end, sent by its task to the engine.
struct Done {
    job: String,
    attempt: u32,
    report: Report,
    duration: Duration,
}

/// What tasks send the engine: an attempt's end, or a workflow step's.
enum Ended {
    Attempt(Done),
    Step(flows::StepDone),
}

struct Engine {
    config: Arc<Config>,
    data: DataDir,
    store: Store,
    exec: Arc<Executor>,
    clock: Arc<dyn Clock>,
    running: HashMap<RunId, Handle>,
    /// The workflow runs it runs.
    flows: HashMap<RunId, flows::Flow>,
    /// Pinned workflow definitions already parsed, by id (they never change).
    definitions: HashMap<i64, Arc<crate::workflow::model::Workflow>>,
    /// Runs workflow steps (shared by their tasks).
    step_runner: Arc<crate::workflow::launch::StepRunner>,
    /// The runtime step tasks are spawned on.
    steps_rt: tokio::runtime::Handle,
    done_tx: mpsc::UnboundedSender<Ended>,
    done_rx: mpsc::UnboundedReceiver<Ended>,
    /// Ended attempts and steps not yet committed.
    pending: Vec<Ended>,
    /// Set once shutdown begins: nothing new starts.
    stopping: bool,
    last_prune: Option<Instant>,
    /// Jobs already warned about as unknown (one warning per job per configuration).
    warned_unknown: HashSet<String>,
    /// The wall-clock instant from which the daemon has watched its schedules without a break:
    /// fires before it were missed while not running (see `schedule::fire`).
    live_since: Time,
    /// The previous turn's instant by both clocks, to notice wall-clock jumps.
    last_turn: Option<(Instant, Time)>,
    /// Each enabled schedule's next fire (in the past while a catch-up is pending).
    next_fires: HashMap<String, Time>,
    /// Tells the outbox task that alerts are waiting.
    outbox_wake: Arc<Notify>,
    /// Hands the outbox task each reloaded configuration.
    config_tx: watch::Sender<Arc<Config>>,
    /// systemd: readiness, status, watchdog.
    notifier: notify::Notifier,
    /// Keeps WAL checkpoints (and their fsyncs) off this loop.
    checkpointer: checkpoint::Checkpointer,
    /// Another process may have changed the store since the last turn (a wake-up datagram,
    /// start, reload, housekeeping): the next turn looks at everything.
    external: bool,
    /// The API's enqueue thread committed runs since the last turn: the next turn promotes,
    /// claims and looks at the delayed set — but needs no wider look (the thread wrote nothing
    /// else, and wakes this loop directly instead of through the socket).
    enqueued: bool,
    /// Set by the enqueue thread after each commit.
    enqueued_wake: Arc<Notify>,
    /// A turn took the write lock since the last housekeeping.
    wrote: bool,
    /// A workflow run ended or was suspended after the last turn's claim: its slot is free, and
    /// the next turn (which comes at once) claims.
    flow_left: bool,
    /// When the next delayed or retrying run is due, as of the last turn.
    next_due_runs: Option<Time>,
    /// When the next fire deadline passes, as of the last look.
    next_deadline: Option<Time>,
    /// How often housekeeping runs.
    housekeeping: Duration,
    /// Schedule pauses and resumes seen so far (`schedule::fire::changes`).
    schedule_changes: u64,
    /// Counts turns, for the HTTP server (its event streams look for changes after a turn).
    turns: watch::Sender<u64>,
    /// `/healthz` asks whether this loop turns: each message is answered when it gets to it.
    pings: Option<mpsc::Receiver<tokio::sync::oneshot::Sender<bool>>>,
    /// Wake-ups from other hosts (a PostgreSQL store's LISTEN connection).
    remote_wakes: Option<mpsc::UnboundedReceiver<()>>,
    /// This daemon among the nodes of its store.
    node: node::Node,
    /// What the heartbeat thread finds (fenced, nodes to rescue).
    node_events: mpsc::UnboundedReceiver<node::NodeEvent>,
    /// The HTTP server, when `http.listen` is set.
    http: Option<crate::api::Server>,
    /// Held for the daemon's lifetime: the single-daemon lock and the lease of its runs.
    _lease: Lease,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(opts: Options) -> Result<(), DaemonError> {
    let config = Config::load(&opts.config_dir).map_err(DaemonError::Config)?;
    let data = DataDir::open(&opts.data_dir)
        .map_err(|e| {
            DaemonError::Io(format!(
                "cannot create data directory {}: {e}",
                opts.data_dir.display()
            ))
        })?
        .with_database(config.settings.database.clone());
    let lease = Lease::daemon(&data)?;
    trim::tune_allocator();
    let Some(mut store) = open_store(&data, config.settings.durability).await? else {
        info!("stopped while waiting for the store");
        return Ok(());
    };
    store.disable_autocheckpoint()?;
    let (node_tx, node_events) = mpsc::unbounded_channel();
    let node = node::Node::join(
        &mut store,
        &data.store_location(),
        &config.settings,
        opts.clock.clone(),
        node_tx,
    )
    .map_err(|e| DaemonError::Io(e.to_string()))?;
    let checkpointer = if data.shared_store() {
        checkpoint::Checkpointer::none()
    } else {
        checkpoint::Checkpointer::start(data.db_path())
            .map_err(|e| DaemonError::Io(format!("cannot start the checkpointer thread: {e}")))?
    };
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let remote_wakes = crate::store::listen(&data.store_location());
    let exec = Arc::new(Executor::new(opts.sentinel));
    let mut engine = Engine {
        config: Arc::new(config),
        step_runner: Arc::new(crate::workflow::launch::StepRunner::new(
            exec.clone(),
            data.clone(),
            false,
        )),
        steps_rt: opts
            .steps
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current),
        data,
        store,
        exec,
        clock: opts.clock,
        running: HashMap::new(),
        flows: HashMap::new(),
        definitions: HashMap::new(),
        done_tx,
        done_rx,
        pending: Vec::new(),
        stopping: false,
        last_prune: None,
        warned_unknown: HashSet::new(),
        live_since: chrono::DateTime::UNIX_EPOCH,
        last_turn: None,
        next_fires: HashMap::new(),
        outbox_wake: Arc::new(Notify::new()),
        notifier: notify::Notifier::from_env(),
        checkpointer,
        external: true,
        enqueued: false,
        enqueued_wake: Arc::new(Notify::new()),
        wrote: false,
        flow_left: false,
        next_due_runs: None,
        next_deadline: None,
        housekeeping: opts.housekeeping,
        schedule_changes: 0,
        config_tx: watch::channel(Arc::new(Config::empty(&opts.config_dir))).0,
        turns: watch::channel(0).0,
        pings: None,
        remote_wakes,
        node,
        node_events,
        http: None,
        _lease: lease,
    };
    engine.config_tx.send_replace(engine.config.clone());
    for (path, mode) in engine.data.loose_permissions() {
        warn!(path = %path.display(), mode = format!("{mode:04o}"),
            "the data directory is readable by other users, and captured output may hold secrets: chmod 700 it (files 600)");
    }
    engine.record_loaded();
    engine.recover_all(true)?;
    engine.prune();
    engine.sync_schedules()?;
    engine.live_since = engine.clock.now();
    if let Some(h) = engine.config.settings.http.clone() {
        engine.start_http(h.listen, opts.http.clone())?;
    }
    let listener = match wake::Listener::bind(&engine.data) {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(error = %e, path = %engine.data.socket_path().display(),
                "cannot bind the wake-up socket; checking the queue every second instead");
            None
        }
    };
    // The outbox delivers alerts on its own connection and task: nothing it waits for (a slow
    // webhook, a dead SMTP server) can hold up the engine.
    let (stop_outbox, outbox_stopped) = watch::channel(false);
    let outbox = Outbox::new(
        Store::open_at(&engine.data.store_location(), Durability::Full)?,
        &engine.node.owner,
        engine.config.alerts.delivery.timeout,
        engine.clock.clone(),
    )
    .map_err(DaemonError::Io)?;
    // On a shared store that listens, every alert this node writes wakes its outbox, and the
    // heartbeat tells of those left by other nodes: an idle outbox has no timer of its own.
    let idle_look = (engine.remote_wakes.is_none() || !engine.node.shared)
        .then_some(crate::alert::outbox::IDLE_LOOK);
    let outbox_task = tokio::spawn(outbox.run(
        engine.config_tx.subscribe(),
        engine.outbox_wake.clone(),
        outbox_stopped,
        idle_look,
    ));
    info!(
        jobs = engine.config.jobs.len(),
        schedules = engine.config.schedules.len(),
        alert_rules = engine.config.alerts.rules.len(),
        concurrency = engine.config.settings.concurrency,
        data_dir = %engine.data.root().display(),
        "worker daemon started"
    );
    engine.heartbeat();
    engine.notifier.ready();
    trim::release_code_pages();
    trim::release_heap();
    engine.update_status(true);
    let result = engine.main_loop(listener.as_ref()).await;
    if let Some(server) = engine.http.take() {
        server.stop(Duration::from_secs(5)).await;
    }
    let _ = stop_outbox.send(true);
    let _ = outbox_task.await;
    if let Ok(false) = result {
        engine.flush_alerts().await;
    }
    // Everything it ran has ended and been recorded (or re-queued): nothing is left to recover.
    if engine.running.is_empty() && engine.flows.is_empty() {
        engine.node.leave(&mut engine.store);
    }
    info!("worker daemon stopped");
    result.map(|_| ())
}

impl Engine {
    /// Binds `addr` (a port in use stops the daemon here, before it is ready) and serves the
    /// API, the dashboard and the metrics on `rt`.
    fn start_http(
        &mut self,
        addr: std::net::SocketAddr,
        rt: Option<tokio::runtime::Handle>,
    ) -> Result<(), DaemonError> {
        let listener = crate::api::bind(addr).map_err(DaemonError::Io)?;
        let bound = listener
            .local_addr()
            .map_err(|e| DaemonError::Io(format!("cannot listen on {addr}: {e}")))?;
        let (ping_tx, ping_rx) = mpsc::channel(16);
        self.pings = Some(ping_rx);
        let link = crate::api::Link {
            ping: ping_tx,
            turns: self.turns.subscribe(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let db = crate::api::Db::new(self.data.store_location(), self.config.settings.durability);
        let enqueuer = crate::api::Enqueuer::start(
            self.data.clone(),
            self.config.settings.durability,
            self.config_tx.subscribe(),
            {
                let poke = self.checkpointer.poker();
                let enqueued = self.enqueued_wake.clone();
                move || {
                    poke();
                    enqueued.notify_one();
                }
            },
        )
        .map_err(|e| DaemonError::Io(format!("cannot start the enqueue thread: {e}")))?;
        let shared = Arc::new(crate::api::Shared::new(
            self.data.clone(),
            self.config_tx.subscribe(),
            db,
            enqueuer,
            link,
            stop_rx,
            bound.port(),
        ));
        // The generated token exists from now on (`worker ui` reads it).
        if shared.auth.tokens(&self.config).is_empty() {
            return Err(DaemonError::Io(format!(
                "cannot read or create the API token {}",
                crate::api::token_path(&self.data).display()
            )));
        }
        let rt = rt.unwrap_or_else(tokio::runtime::Handle::current);
        let server = crate::api::Server::start(&rt, listener, crate::api::app(shared), stop_tx)
            .map_err(|e| DaemonError::Io(format!("cannot serve HTTP on {bound}: {e}")))?;
        self.store
            .write(|tx| tx.set_meta(crate::api::ADDRESS_META, &bound.to_string()))?;
        info!(address = %bound, "HTTP API and dashboard listening (`worker ui` prints the address to log in with)");
        self.http = Some(server);
        Ok(())
    }

    /// Recovers the runs of every provably dead owner (see [`recoverable`]): at start-up, ours
    /// from a previous life; at any time, those of foreground `worker job` processes that died.
    fn recover_all(&mut self, startup: bool) -> Result<(), StoreError> {
        let now = self.clock.now();
        let owners = self.store.read(|tx| tx.owners())?;
        for owner in owners {
            let mut unless_live = None;
            // Held until the recovery committed: nobody takes a dead owner's lease meanwhile.
            let guard = match recoverable(&owner, &self.node.owner, startup) {
                Recoverable::Ours => None,
                Recoverable::Never => continue,
                Recoverable::IfNodeDead(name) => {
                    unless_live = Some(name.to_owned());
                    None
                }
                // A foreground `worker job` of another host, on a shared store: its lease is not
                // here to look at; it is left to that host.
                Recoverable::IfDead if self.node.shared && !self.data.has_lease(&owner) => continue,
                Recoverable::IfDead => match self.data.probe(&owner) {
                    Owner::Alive => continue,
                    Owner::Dead(g) => Some(g),
                },
            };
            let config = self.config.clone();
            let recovered = self.store.write(|tx| {
                // Decided in the transaction that recovers: a node is recovered from only once
                // it was declared dead, and then it can record nothing more (fencing).
                if let Some(name) = &unless_live
                    && tx
                        .nodes()?
                        .iter()
                        .any(|n| &n.name == name && n.state == "live")
                {
                    return Ok(Vec::new());
                }
                lifecycle::recover(tx, &config, &owner, now, fastrand::f64())
            })?;
            drop(guard);
            for (run, state) in recovered {
                if unless_live.is_some() {
                    warn!(run, owner = %owner, state = %state, "recovered a run of a node declared dead");
                } else {
                    warn!(run, owner = %owner, state = %state, "recovered a run left running by a process that died");
                }
            }
        }
        Ok(())
    }

    /// The store says this node holds runs; if the engine holds none (nothing running, nothing
    /// ended waiting to be recorded), it lost track of them (an end that was never recorded):
    /// they are recovered as after a crash. A run claimed or ended since the heartbeat looked is
    /// not affected: the recovery re-reads, in its own transaction, what is still `running`.
    fn recover_lost(&mut self) {
        if !self.running.is_empty()
            || !self.flows.is_empty()
            || !self.pending.is_empty()
            || self.stopping
        {
            return;
        }
        let (config, owner, now) = (
            self.config.clone(),
            self.node.owner.clone(),
            self.clock.now(),
        );
        match self
            .store
            .write(|tx| lifecycle::recover(tx, &config, &owner, now, fastrand::f64()))
        {
            Ok(recovered) => {
                for (run, state) in &recovered {
                    warn!(run, state = %state, "recovered a run the store said this node held but this node had lost track of");
                }
                if !recovered.is_empty() {
                    self.external = true;
                }
            }
            Err(e) => error!(error = %e, "cannot recover the runs this node lost track of"),
        }
    }

    /// This node was declared dead by the others, and its runs recovered: it kills the process
    /// groups of what it ran, forgets their ends, and joins again in a new epoch.
    fn fenced(&mut self) {
        error!(
            node = %self.node.id().name,
            running = self.running.len() + self.flows.len(),
            "this node was declared dead by the other nodes (silent past node_timeout) and its runs were recovered: killing their processes, discarding their ends, joining again"
        );
        self.stop_all(StopReason::Kill);
        self.running.clear();
        self.flows.clear();
        self.pending.clear();
        if let Err(e) = self.node.rejoin(&mut self.store) {
            error!(error = %e, "cannot join the store again; retrying");
        }
        self.external = true;
    }

    /// Records the configuration now running, for `status`, `list` and `reload`.
    fn record_loaded(&mut self) {
        let loaded = loaded::Loaded::of(&self.config, self.clock.now());
        if let Err(e) = self.store.write(|tx| loaded::record_loaded(tx, &loaded)) {
            error!(error = %e, "cannot record the loaded configuration");
        }
    }

    /// Deletes finished runs older than `history.keep_days`, and their output.
    fn prune(&mut self) {
        let due = self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
        if !due {
            return;
        }
        self.last_prune = Some(Instant::now());
        let before =
            self.clock.now() - chrono::Duration::days(i64::from(self.config.settings.keep_days));
        let data = self.data.clone();
        let result = self.store.write(|tx| {
            tx.purge_fires(before)?;
            let purged = tx.purge(Some(before), false)?;
            if !purged.is_empty() {
                tx.purge_definitions()?;
            }
            Ok::<_, StoreError>(purged)
        });
        match result {
            Ok(pruned) => {
                for p in &pruned {
                    remove_logs(&data, p);
                }
                if !pruned.is_empty() {
                    info!(
                        runs = pruned.len(),
                        "pruned finished runs older than history.keep_days"
                    );
                }
            }
            Err(e) => error!(error = %e, "cannot prune history"),
        }
    }

    /// Runs until a signal stops it; returns whether the stop was forced (a second signal).
    async fn main_loop(&mut self, listener: Option<&wake::Listener>) -> Result<bool, DaemonError> {
        let mut sigterm =
            signal(SignalKind::terminate()).map_err(|e| DaemonError::Io(e.to_string()))?;
        let mut sigint =
            signal(SignalKind::interrupt()).map_err(|e| DaemonError::Io(e.to_string()))?;
        let mut sighup =
            signal(SignalKind::hangup()).map_err(|e| DaemonError::Io(e.to_string()))?;
        let mut last_housekeeping = Instant::now();
        loop {
            let next_due = match self.turn() {
                Ok(n) => n,
                Err(StoreError::Fenced) => {
                    self.fenced();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => {
                    error!(error = %e, "store error; retrying in 1s");
                    self.store_down(Duration::from_secs(1)).await;
                    // What the failed turn was woken for is looked at again, and more.
                    self.external = true;
                    continue;
                }
            };
            self.notifier.alive();
            if self.http.is_some() {
                self.turns.send_modify(|n| *n = n.wrapping_add(1));
            }
            if !self.pending.is_empty() || self.flow_left {
                continue;
            }
            if last_housekeeping.elapsed() >= self.housekeeping {
                last_housekeeping = Instant::now();
                // On a shared store the heartbeat tells of runs of dead nodes, and a foreground
                // process of another host is left to that host: only this host's are looked for.
                if (!self.node.shared || self.data.dead_foreground_lease())
                    && let Err(e) = self.recover_all(false)
                {
                    error!(error = %e, "cannot check for runs of dead processes");
                }
                self.prune();
                self.heartbeat();
                self.exec.reap_orphans();
                // A look at everything, in case a wake-up was missed. A node of a shared store
                // that listens is told of every change by the store itself (and once more when
                // its listening connection comes back): it stays quiet.
                if self.remote_wakes.is_none() {
                    self.external = true;
                }
                if self.running.is_empty() && self.flows.is_empty() {
                    trim::release_code_pages();
                    trim::release_heap();
                }
            }
            self.update_status(false);
            let mut sleep_for = self
                .housekeeping
                .saturating_sub(last_housekeeping.elapsed());
            if let Some(max) = self.notifier.max_sleep() {
                sleep_for = sleep_for.min(max);
            }
            if let Some(due) = next_due {
                sleep_for = sleep_for.min(until(self.clock.now(), due));
            }
            if listener.is_none() {
                // Without the socket, each poll has to look at everything.
                sleep_for = sleep_for.min(FALLBACK_POLL);
                self.external = true;
            }
            tokio::select! {
                Some(done) = self.done_rx.recv() => {
                    self.collect(done);
                    while let Ok(more) = self.done_rx.try_recv() {
                        self.collect(more);
                    }
                }
                Some(()) = async { match self.remote_wakes.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    // Another host wrote to the store; several wake-ups make one look.
                    if let Some(r) = self.remote_wakes.as_mut() {
                        while r.try_recv().is_ok() {}
                    }
                    self.external = true;
                    self.outbox_wake.notify_one();
                }
                _ = self.enqueued_wake.notified() => self.enqueued = true,
                _ = async { if let Some(l) = listener { l.recv().await } else { std::future::pending().await } } => {
                    // Another process wrote to the store; it may have written alerts too.
                    self.external = true;
                    self.outbox_wake.notify_one();
                }
                _ = tokio::time::sleep(sleep_for) => {}
                Some(event) = self.node_events.recv() => match event {
                    node::NodeEvent::Fenced => self.fenced(),
                    node::NodeEvent::AlertsDue => self.outbox_wake.notify_one(),
                    node::NodeEvent::Holds => self.recover_lost(),
                    node::NodeEvent::Rescue => {
                        if let Err(e) = self.recover_all(false) {
                            error!(error = %e, "cannot recover the runs of dead nodes");
                        }
                        self.external = true;
                    }
                },
                Some(reply) = async { match self.pings.as_mut() { Some(p) => p.recv().await, None => std::future::pending().await } } => {
                    let _ = reply.send(true);
                }
                _ = sigterm.recv() => return self.shutdown("SIGTERM", &mut sigterm, &mut sigint).await,
                _ = sigint.recv() => return self.shutdown("SIGINT", &mut sigterm, &mut sigint).await,
                _ = sighup.recv() => {
                    self.notifier.reloading();
                    self.reload();
                    self.notifier.ready();
                    self.update_status(true);
                }
            }
        }
    }

    /// Waits `pause` after a failed turn, telling `/healthz` meanwhile that the store does not
    /// answer; ends keep arriving and wait for the next turn.
    async fn store_down(&mut self, pause: Duration) {
        let until = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                Some(done) = self.done_rx.recv() => self.collect(done),
                Some(reply) = async { match self.pings.as_mut() { Some(p) => p.recv().await, None => std::future::pending().await } } => {
                    let _ = reply.send(false);
                }
            }
        }
    }

    /// An attempt's or a step's end arrived: kept for the next turn's commit.
    fn collect(&mut self, ended: Ended) {
        // After fencing, the ends of runs taken from this node are not its to record.
        let ours = match &ended {
            Ended::Attempt(d) => {
                self.running.contains_key(&d.report.run) || self.flows.contains_key(&d.report.run)
            }
            Ended::Step(d) => self.flows.contains_key(&d.run),
        };
        if !ours {
            debug!("discarding the end of a run this node no longer holds");
            return;
        }
        if let Ended::Step(d) = &ended {
            self.step_finished(d);
        }
        self.pending.push(ended);
    }

    /// One turn: commit ended attempts and steps, fire due schedules, promote due runs, claim
    /// free slots, decide on workflow runs, start what was decided, and pass on cancel requests —
    /// one transaction. Returns when something is next due (a delayed run, a schedule's fire, a
    /// step's wake-up).
    fn turn(&mut self) -> Result<Option<Time>, StoreError> {
        let now = self.clock.now();
        self.watch_clock(now);
        let config = self.config.clone();
        let accept = !self.stopping;
        // Another process wrote to the store (a wake-up), or we have not looked for a while:
        // look at everything. Otherwise only at what our own state says may have changed.
        let external = std::mem::take(&mut self.external);
        if external {
            // A schedule paused or resumed elsewhere: look at the schedules again.
            let synced = self
                .store
                .read(crate::schedule::fire::changes)
                .and_then(|changes| {
                    if changes != self.schedule_changes {
                        self.sync_schedules()?;
                        self.schedule_changes = changes;
                    }
                    Ok(())
                });
            if let Err(e) = synced {
                self.external = true;
                return Err(e);
            }
        }
        // Taken only now: every error from here on puts them back (`pending`) for the next turn.
        let ended = std::mem::take(&mut self.pending);
        let (mut dones, mut step_dones) = (Vec::new(), Vec::new());
        for e in ended {
            match e {
                Ended::Attempt(d) => dones.push(d),
                Ended::Step(d) => step_dones.push(d),
            }
        }
        let enqueued = std::mem::take(&mut self.enqueued);
        let check_cancels = external && (!self.running.is_empty() || !self.flows.is_empty());
        let check_signals = external && !self.flows.is_empty();
        let promote = external || enqueued || self.next_due_runs.is_some_and(|t| t <= now);
        let deadlines = external || self.next_deadline.is_some_and(|t| t <= now);
        let limit = config.settings.concurrency as usize;
        // Process slots: plain attempts and process steps count; the attempts that just ended
        // no longer do (their steps' handles are already gone).
        let live = self.live_processes().saturating_sub(dones.len());
        let flow_left = std::mem::take(&mut self.flow_left);
        let slots_freed = !dones.is_empty() || step_dones.iter().any(|d| d.process) || flow_left;
        // A workflow run whose steps run several processes takes more than its run's slot.
        let plain_running = self.running.len().saturating_sub(dones.len());
        let revisit = self.flows_to_revisit(now, slots_freed);
        // Once shutting down, nothing fires: the next start catches up per `catch_up`.
        let due_schedules = if accept {
            self.due_schedules(now)
        } else {
            Vec::new()
        };
        // Whether a claim may find something: a slot was freed (a process ended, a workflow run
        // ended or was suspended), or runs may have become queued (enqueued, fired, promoted,
        // anything after a wake-up). A turn for nothing else (a timer)
        // does not look again for queued runs it has already found it cannot start.
        let slots_free = slots_freed
            || external
            || enqueued
            || (live < limit && (promote || !due_schedules.is_empty()));
        let live_since = self.live_since;
        let owner = self.node.owner.clone();
        // The runs this node holds once this turn's ends are recorded.
        let own_runs = self
            .node
            .shared
            .then(|| (self.running.len() + self.flows.len()).saturating_sub(dones.len()));
        // On a shared store, a node declared dead records nothing more (fencing).
        let fence = self.node.shared.then(|| self.node.id());
        let flows_map = &self.flows;
        let definitions = &mut self.definitions;
        let stopping = self.stopping;
        let halt_of = |f: &flows::Flow| {
            f.halt
                .or(stopping.then_some(crate::workflow::run::Halt::Stop))
        };
        // With nothing of our own to record, the turn is a look (a wake-up from another
        // writer, a periodic check) that usually finds nothing to write: it then takes no write
        // lock, so it neither waits for the API's enqueues nor holds them up.
        let only_looking = dones.is_empty()
            && step_dones.is_empty()
            && due_schedules.is_empty()
            && revisit.is_empty();
        // Nothing to record and nothing to look for (a timer that only asks when to turn next):
        // no transaction at all. (Fencing is still noticed: by the heartbeat thread.)
        if only_looking && !promote && !slots_free && !check_cancels && !check_signals && !deadlines
        {
            return Ok(self.next_wake(self.next_due_runs, accept));
        }
        let body = |tx: &crate::store::Tx<'_>| {
            if let Some(me) = &fence {
                tx.require_live(me)?;
            }
            let firing = schedules::fire_due(tx, &config, &due_schedules, now, live_since)?;
            let mut states = Vec::with_capacity(dones.len());
            let ids: Vec<_> = dones.iter().map(|d| d.report.run).collect();
            let mut briefs = tx.briefs(&ids)?;
            for d in &dones {
                states.push(lifecycle::finish_known(
                    tx,
                    &config,
                    &d.report,
                    briefs.remove(&d.report.run),
                    now,
                    fastrand::f64(),
                )?);
            }
            let mut slots = limit.saturating_sub(live);
            let mut decided = Vec::new();
            let mut seen = std::collections::HashSet::new();
            // The rows of the flows decided on below, read at once.
            let mut rows = flows::TurnRows::default();
            rows.read(
                tx,
                step_dones
                    .iter()
                    .map(|d| d.run)
                    .filter(|r| flows_map.contains_key(r))
                    .chain(revisit.iter().copied()),
                true,
            )?;
            for d in &step_dones {
                if let Some(flow) = flows_map.get(&d.run) {
                    decided.push(flows::step_done(
                        tx,
                        &config,
                        flow,
                        d,
                        rows.of(d.run),
                        &mut slots,
                        halt_of(flow),
                        now,
                    )?);
                    seen.insert(d.run);
                }
            }
            // Workflow runs that the ends above ended or suspended: their slots are free for
            // this turn's claim already, not only for the next turn's.
            let left = flows::runs_leaving(&decided);
            let (mut claimed, mut unknown) = (Vec::new(), Vec::new());
            let mut left_counted = 0;
            if accept {
                if promote {
                    lifecycle::promote_due(tx, &config, now)?;
                }
                if slots_free || left > 0 {
                    left_counted = left;
                    let flows_staying = flows_map.len().saturating_sub(left);
                    let extra_processes = live.saturating_sub(plain_running + flows_staying);
                    let cap = limit.saturating_sub(extra_processes);
                    (claimed, unknown) = match own_runs {
                        // A node of a shared store: `concurrency` is its own capacity.
                        Some(own) => lifecycle::claim_up_to(
                            tx,
                            &config,
                            &owner,
                            now,
                            cap.saturating_sub(own.saturating_sub(left)),
                        )?,
                        None => lifecycle::claim(tx, &config, &owner, now, cap)?,
                    };
                }
            }
            let plain = claimed.iter().filter(|c| !c.run.has_steps).count();
            slots = slots.saturating_sub(plain);
            rows.read(
                tx,
                claimed.iter().filter(|c| c.run.has_steps).map(|c| c.run.id),
                false,
            )?;
            for c in claimed.iter().filter(|c| c.run.has_steps) {
                decided.push(flows::claimed(
                    tx,
                    &config,
                    c,
                    definitions,
                    rows.of(c.run.id),
                    &mut slots,
                    None,
                    now,
                )?);
            }
            // Flows whose suspended step was signalled, or that are due for another look.
            let mut again = revisit.clone();
            if check_signals {
                again.extend(tx.signaled_runs(&owner)?);
            }
            for id in again {
                if seen.insert(id)
                    && let Some(flow) = flows_map.get(&id)
                {
                    decided.push(flows::revisit(
                        tx,
                        &config,
                        flow,
                        rows.of(id),
                        &mut slots,
                        halt_of(flow),
                        now,
                    )?);
                }
            }
            let cancels = if check_cancels {
                tx.cancel_requests(&owner)?
            } else {
                Vec::new()
            };
            let fired_deadline = firing.fired.iter().any(|f| {
                config
                    .schedules
                    .iter()
                    .any(|s| s.name == f.schedule && s.deadline.is_some())
            });
            let next_deadline = if deadlines || fired_deadline {
                alert::check_deadlines(tx, &config, now)?;
                Some(tx.next_deadline()?)
            } else {
                None
            };
            // Only enqueues (external or fired), retries, promotion and suspensions change the
            // delayed set.
            let parked = decided.iter().any(|d| {
                matches!(
                    d.next,
                    crate::workflow::run::Next::Parked(_)
                        | crate::workflow::run::Next::Ended(RunState::Retrying)
                )
            });
            let delayed_changed = promote
                || parked
                || !firing.fired.is_empty()
                || states.contains(&RunState::Retrying);
            let next_due = if delayed_changed {
                tx.next_due()?
            } else {
                self.next_due_runs
            };
            Ok::<_, StoreError>(Turn {
                next_deadline,
                states,
                claimed,
                unknown,
                decided,
                left_counted,
                cancels,
                next_due,
                firing,
            })
        };
        let result = if only_looking {
            self.store.write_if_needed(body)
        } else {
            self.wrote = true;
            self.store.write(body)
        };
        let turn = match result {
            Ok(t) => t,
            Err(e) => {
                // Nothing was committed: the ends are committed by the next turn.
                self.pending = dones
                    .into_iter()
                    .map(Ended::Attempt)
                    .chain(step_dones.into_iter().map(Ended::Step))
                    .collect();
                return Err(e);
            }
        };
        self.checkpointer.poke();
        // A run only a signal wakes is "due" at the end of time: not a wake-up.
        self.next_due_runs = turn.next_due.filter(|t| !crate::store::is_never(*t));
        if let Some(d) = turn.next_deadline {
            self.next_deadline = d;
        }
        schedules::log_fired(&turn.firing.fired, now);
        if self.store.alerts_written() > 0 {
            self.outbox_wake.notify_one();
        }
        for (name, next) in turn.firing.next {
            match next {
                Some(t) => self.next_fires.insert(name, t),
                None => self.next_fires.remove(&name),
            };
        }
        for (d, state) in dones.iter().zip(turn.states) {
            self.running.remove(&d.report.run);
            info!(job = %d.job, run = d.report.run, attempt = d.attempt, state = %state,
                duration_ms = d.duration.as_millis() as u64, "attempt ended");
        }
        for id in turn.cancels {
            if let Some(h) = self.running.get(&id) {
                info!(job = %h.job, run = id, "cancel requested: stopping the process group");
                let _ = h.stop.send(Some(StopReason::Cancel));
            } else if self.cancel_flow(id) {
                // Looked at again next turn: it ends once its steps have stopped.
                self.external = true;
            }
        }
        for job in turn.unknown {
            if self.warned_unknown.insert(job.clone()) {
                warn!(job = %job, "runs of this job are queued but the configuration the daemon runs \
                    does not define it; they stay queued: run `worker reload` once jobs/{job}.yaml exists");
            }
        }
        for c in turn.claimed {
            if !c.run.has_steps {
                self.launch(c);
            }
        }
        let left = flows::runs_leaving(&turn.decided);
        for d in turn.decided {
            self.apply(d);
        }
        // A slot freed by a run that left is claimed for by the next turn at once, unless this
        // turn's claim already counted it.
        self.flow_left = left > turn.left_counted;
        Ok(self.next_wake(turn.next_due, accept))
    }

    /// When the loop should turn next, at the latest: the next delayed run (`next_due`), fire
    /// deadline, workflow wake-up or schedule fire.
    fn next_wake(&self, next_due: Option<Time>, accept: bool) -> Option<Time> {
        let next_due = [next_due, self.next_deadline, self.next_flow_wake()]
            .into_iter()
            .flatten()
            .filter(|t| !crate::store::is_never(*t))
            .min();
        let next_fire = if accept { self.next_fire() } else { None };
        match (next_due, next_fire) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts a claimed attempt in its own task.
    fn launch(&mut self, claimed: Claimed) {
        let run = claimed.run.id;
        let job = claimed.run.job.clone();
        let attempt = claimed.attempt;
        let spec = match runner::spec_for(&claimed, &self.config, &self.data, false) {
            Ok(s) => s,
            Err(e) => {
                warn!(job = %job, run, error = %e, "cannot start run");
                let report = runner::report_unstartable(&claimed, e);
                self.pending.push(Ended::Attempt(Done {
                    job,
                    attempt,
                    report,
                    duration: Duration::ZERO,
                }));
                return;
            }
        };
        debug!(job = %job, run, attempt, max_attempts = claimed.run.max_attempts, trigger = %claimed.run.trigger, "attempt started");
        let (stop_tx, stop_rx) = watch::channel(None);
        self.running.insert(
            run,
            Handle {
                job: job.clone(),
                stop: stop_tx,
            },
        );
        let exec = self.exec.clone();
        let tx = self.done_tx.clone();
        let shared = self.node.shared;
        // Whatever is logged while the attempt runs names its job and run.
        let span = tracing::info_span!("run", job = %job, run, attempt);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let finished = exec.run(&spec, stop_rx).await;
                let mut report = runner::report_for(&claimed, &finished, &spec);
                if shared {
                    report.output = runner::kept_output(&spec);
                }
                let _ = tx.send(Ended::Attempt(Done {
                    job,
                    attempt,
                    report,
                    duration: finished.duration,
                }));
            },
            span,
        ));
    }

    /// SIGHUP: load the configuration again; keep the old one if the new one is invalid. The
    /// outcome is recorded for `worker reload`, which waits for it.
    fn reload(&mut self) {
        self.external = true;
        // Read before the files: every request made until now is answered by this reload.
        let request = self.store.read(loaded::latest_request).unwrap_or_else(|e| {
            error!(error = %e, "cannot read reload requests");
            0
        });
        let now = self.clock.now();
        let outcome = match Config::load(&self.config.dir) {
            Ok(config) => {
                let changes = self.config.sources.changes(&config.sources);
                info!(
                    jobs = config.jobs.len(),
                    schedules = config.schedules.len(),
                    changed = changes.len(),
                    "configuration reloaded"
                );
                let changes: Vec<String> = changes
                    .into_iter()
                    .map(|(file, change)| format!("{file} {}", change.as_str()))
                    .collect();
                for c in &changes {
                    info!("{c}");
                }
                let listen = |c: &Config| c.settings.http.as_ref().map(|h| h.listen);
                if listen(&config) != listen(&self.config) {
                    warn!(
                        "http.listen changed: the daemon keeps serving where it was until it restarts"
                    );
                }
                self.config = Arc::new(config);
                self.config_tx.send_replace(self.config.clone());
                self.warned_unknown.clear();
                if let Err(e) = self.sync_schedules() {
                    error!(error = %e, "cannot update the schedules after a reload");
                }
                self.record_loaded();
                loaded::Outcome {
                    request,
                    at: now,
                    applied: true,
                    problems: Vec::new(),
                    changes,
                    digest: self.config.sources.digest(),
                }
            }
            Err(diags) => {
                let secrets = &self.config.secrets;
                let problems: Vec<String> =
                    diags.iter().map(|d| secrets.mask(&d.to_string())).collect();
                for p in &problems {
                    error!("{p}");
                }
                error!(
                    problems = diags.len(),
                    "configuration rejected; still running the previous one"
                );
                // Alerted through the rules of the configuration still in force.
                let mut e = Event::new(crate::model::EventKind::ConfigError, None, now);
                e.reason = Some(format!(
                    "reload rejected ({}); still running the previous configuration:\n{}",
                    crate::units::count(diags.len(), "problem"),
                    diags
                ));
                let config = self.config.clone();
                match self.store.write(|tx| alert::raise(tx, &config, e, now)) {
                    Ok(()) => self.outbox_wake.notify_one(),
                    Err(err) => error!(error = %err, "cannot record the config_error alert"),
                }
                loaded::Outcome {
                    request,
                    at: now,
                    applied: false,
                    problems,
                    changes: Vec::new(),
                    digest: self.config.sources.digest(),
                }
            }
        };
        if let Err(e) = self.store.write(|tx| loaded::record_outcome(tx, &outcome)) {
            error!(error = %e, "cannot record the reload's outcome");
        }
    }

    /// Graceful stop: start nothing new, let running attempts finish within `shutdown_timeout`,
    /// then stop their process groups and re-queue them (attempt not counted).
    /// A second SIGTERM/SIGINT stops at once: process groups get SIGKILL, their runs are
    /// re-queued, and the alert flush is skipped. Returns whether that happened.
    async fn shutdown(
        &mut self,
        why: &str,
        sigterm: &mut tokio::signal::unix::Signal,
        sigint: &mut tokio::signal::unix::Signal,
    ) -> Result<bool, DaemonError> {
        self.stopping = true;
        self.notifier.stopping();
        // No new requests: the listener closes first.
        if let Some(server) = &self.http {
            server.close();
        }
        let mut forced = false;
        let budget = self.config.settings.shutdown_timeout;
        info!(
            signal = why,
            running = self.running.len(),
            budget_s = budget.as_secs_f64(),
            "shutting down"
        );
        let deadline = Instant::now() + budget;
        let mut stopped_all = false;
        loop {
            if let Err(e) = self.turn() {
                error!(error = %e, "store error during shutdown");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            if self.running.is_empty() && self.flows.is_empty() && self.pending.is_empty() {
                break;
            }
            if !self.pending.is_empty() {
                continue;
            }
            tokio::select! {
                Some(done) = self.done_rx.recv() => self.collect(done),
                _ = tokio::time::sleep_until(deadline), if !stopped_all => {
                    warn!(running = self.running.len(), "shutdown budget spent: stopping running attempts (they will be re-queued)");
                    self.stop_all(StopReason::Shutdown);
                    stopped_all = true;
                }
                _ = sigterm.recv() => { self.force_stop(); stopped_all = true; forced = true; }
                _ = sigint.recv() => { self.force_stop(); stopped_all = true; forced = true; }
            }
            self.notifier.alive();
        }
        Ok(forced)
    }

    fn force_stop(&self) {
        warn!(
            running = self.running.len(),
            "second signal: killing running attempts now (they will be re-queued)"
        );
        self.stop_all(StopReason::Kill);
    }

    /// Delivers pending alerts for as long as [`ALERT_FLUSH`] allows, before exiting.
    async fn flush_alerts(&mut self) {
        let pending = self.store.read(|tx| tx.pending_alerts()).unwrap_or(0);
        if pending == 0 {
            return;
        }
        info!(pending, "delivering pending alerts before exiting");
        let store = match Store::open_at(&self.data.store_location(), Durability::Full) {
            Ok(s) => s,
            Err(e) => return error!(error = %e, "cannot flush alerts"),
        };
        match Outbox::new(
            store,
            &self.node.owner,
            self.config.alerts.delivery.timeout,
            self.clock.clone(),
        ) {
            Ok(mut outbox) => {
                let left = outbox.drain(&self.config, ALERT_FLUSH).await;
                if left > 0 {
                    warn!(
                        left,
                        "alerts not delivered yet: they stay in the outbox for the next start"
                    );
                }
            }
            Err(e) => error!(error = %e, "cannot flush alerts"),
        }
    }

    /// Records that the engine is alive (for `worker status`).
    fn heartbeat(&mut self) {
        let wrote = std::mem::take(&mut self.wrote);
        if self.node.shared {
            // The heartbeat thread records this node's heartbeat, more often; what is left is
            // trimming the change log, which an idle node (nothing written since the last
            // time) leaves to the nodes that write.
            if wrote && let Err(e) = self.store.write(|tx| tx.prune_changes(CHANGES_KEPT)) {
                error!(error = %e, "cannot trim the change log");
            }
            return;
        }
        self.node.beat(&mut self.store);
        let now = self.clock.now();
        let result = self.store.write(|tx| {
            tx.set_meta("heartbeat", &now.to_rfc3339())?;
            tx.prune_changes(CHANGES_KEPT)
        });
        if let Err(e) = result {
            error!(error = %e, "cannot record the heartbeat");
        }
    }

    /// Sends systemd a short live summary (when enabled, at most every few seconds).
    fn update_status(&mut self, force: bool) {
        if !self.notifier.enabled() || (!force && !self.notifier.status_due()) {
            return;
        }
        let counts = match self.store.read(|tx| tx.status_counts()) {
            Ok(c) => c,
            Err(_) => return,
        };
        let next = self
            .next_fires
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(n, t)| {
                format!(
                    "; next fire {n} at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        self.notifier.status(format!(
            "{} running, {} queued, {} waiting, {} dead{next}",
            counts.running, counts.queued, counts.waiting, counts.dead
        ));
    }

    fn stop_all(&self, reason: StopReason) {
        for (id, h) in &self.running {
            info!(job = %h.job, run = id, "stopping");
            let _ = h.stop.send(Some(reason));
        }
        self.stop_steps(reason);
    }
}

/// Whose runs the daemon may recover, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recoverable<'a> {
    /// Its own at start-up: the runs of the daemon (or node) that lived before.
    Ours,
    /// A foreground process's: once its lease shows it dead.
    IfDead,
    /// Another node's (a shared store): once that node was declared dead.
    IfNodeDead(&'a str),
    /// Its own after start-up: these runs are alive, in this very process.
    Never,
}

fn recoverable<'a>(owner: &'a str, me: &str, startup: bool) -> Recoverable<'a> {
    if owner == me {
        return if startup {
            Recoverable::Ours
        } else {
            Recoverable::Never
        };
    }
    match crate::store::owner_node(owner) {
        Some(name) => Recoverable::IfNodeDead(name),
        None if owner == DAEMON_LEASE => Recoverable::Never,
        None => Recoverable::IfDead,
    }
}

/// Opens the store; a shared store that cannot be reached yet (the database starting, a network
/// cut) is tried again with backoff, up to 30 s apart, until it answers or SIGTERM/SIGINT
/// (`None`).
async fn open_store(data: &DataDir, durability: Durability) -> Result<Option<Store>, DaemonError> {
    let location = data.store_location();
    let mut delay = Duration::from_millis(500);
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Io(e.to_string()))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Io(e.to_string()))?;
    loop {
        match Store::open_at(&location, durability) {
            Ok(store) => return Ok(Some(store)),
            Err(e @ (StoreError::Connect(_) | StoreError::Postgres(_))) if data.shared_store() => {
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach the store; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = sigterm.recv() => return Ok(None),
                    _ = sigint.recv() => return Ok(None),
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Time from `now` until `t` (zero if past).
fn until(now: Time, t: Time) -> Duration {
    (t - now).to_std().unwrap_or(Duration::ZERO)
}

/// Removes the captured output of a deleted run: its attempts' and its steps'.
pub fn remove_logs(data: &DataDir, run: &crate::store::Purged) {
    for &seq in &run.seqs {
        capture::remove(&data.log_path(run.id, seq));
    }
    for (step, executions) in &run.steps {
        for n in 1..=*executions {
            capture::remove(&data.step_log_path(run.id, step, n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon's own runs are recovered only at start-up; after that they are alive in this
    /// very process, however long they run. Other owners are recovered once provably dead.
    #[test]
    fn the_daemon_recovers_its_own_runs_only_at_start_up() {
        assert_eq!(
            recoverable(DAEMON_LEASE, DAEMON_LEASE, true),
            Recoverable::Ours
        );
        assert_eq!(
            recoverable(DAEMON_LEASE, DAEMON_LEASE, false),
            Recoverable::Never
        );
        assert_eq!(recoverable("node:a", "node:a", true), Recoverable::Ours);
        assert_eq!(recoverable("node:a", "node:a", false), Recoverable::Never);
        assert_eq!(
            recoverable("node:b", "node:a", false),
            Recoverable::IfNodeDead("b")
        );
        assert_eq!(
            recoverable("job-12-34-abcd", DAEMON_LEASE, true),
            Recoverable::IfDead
        );
        assert_eq!(
            recoverable("job-12-34-abcd", "node:a", false),
            Recoverable::IfDead
        );
    }
}
