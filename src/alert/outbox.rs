//! The outbox worker: delivers pending alerts, retrying with backoff, on its own store
//! connection and task.
//!
//! Alerts are claimed under a lease (several processes may deliver: the daemon, and a
//! `worker job` with no daemon running), delivered concurrently — a hanging endpoint holds up only
//! its own alerts, for at most the delivery timeout — and each attempt is recorded: `sent`,
//! `failed` (a permanent refusal, or attempts exhausted), or `pending` again until its retry time
//! (the endpoint's `Retry-After`, or exponential backoff).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::Event;
use super::deliver::{Deliverer, Failure};
use crate::clock::Clock;
use crate::config::Config;
use crate::config::alerts::Delivery;
use crate::model::Time;
use crate::store::{AlertRow, Store, StoreError};

/// How many alerts one round claims.
const BATCH: u32 = 32;

/// How often an idle outbox looks for alerts written by other processes (on SQLite, or on a
/// shared store that cannot listen); an outbox is woken for its own process's alerts.
pub const IDLE_LOOK: Duration = Duration::from_secs(60);

pub struct Outbox {
    store: Store,
    lease: String,
    deliverer: Arc<Deliverer>,
    clock: Arc<dyn Clock>,
}

/// The delay before attempt `n + 1` after `n` failed attempts.
pub fn backoff(policy: &Delivery, failed: u32) -> Duration {
    let exp = failed.saturating_sub(1).min(30);
    policy.initial.saturating_mul(1u32 << exp).min(policy.max)
}

impl Outbox {
    pub fn new(
        store: Store,
        lease: &str,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Outbox, String> {
        Ok(Outbox {
            store,
            lease: format!("{lease}-outbox"),
            deliverer: Arc::new(Deliverer::new(timeout)?),
            clock,
        })
    }

    /// One round: end due throttle windows, deliver the due alerts. Returns how many alerts it
    /// attempted and when the next one is due.
    pub async fn round(
        &mut self,
        config: &Arc<Config>,
    ) -> Result<(usize, Option<Time>), StoreError> {
        let now = self.clock.now();
        let policy = config.alerts.delivery.clone();
        let lease_len = chrono::Duration::from_std(policy.timeout * 2 + Duration::from_secs(30))
            .unwrap_or_default();
        let lease = self.lease.clone();
        let next_due = |tx: &crate::store::Tx<'_>| {
            let a = tx.next_alert_due()?;
            let w = tx.next_window_end()?;
            Ok::<_, StoreError>(match (a, w) {
                (Some(a), Some(w)) => Some(a.min(w)),
                (a, w) => a.or(w),
            })
        };
        // A look first: with nothing due, no write (and, on a shared store, no wait for the
        // cluster's write lock).
        let next = self.store.read(next_due)?;
        if next.is_none_or(|t| t > now) {
            return Ok((0, next));
        }
        let claimed = self.store.write(|tx| {
            super::close_windows(tx, config, now)?;
            tx.claim_alerts(&lease, now, now + lease_len, BATCH)
        })?;
        if claimed.is_empty() {
            let next = self.store.read(next_due)?;
            return Ok((0, next));
        }
        let mut set = JoinSet::new();
        for alert in claimed {
            let deliverer = self.deliverer.clone();
            let config = config.clone();
            set.spawn(async move {
                let result = attempt(&deliverer, &config, &alert).await;
                (alert, result)
            });
        }
        let mut results = Vec::new();
        while let Some(done) = set.join_next().await {
            match done {
                Ok(r) => results.push(r),
                Err(e) => error!(error = %e, "an alert delivery task failed"),
            }
        }
        let n = results.len();
        let now = self.clock.now();
        self.store.write(|tx| {
            for (a, result) in &results {
                let tries = a.attempts + 1;
                match result {
                    Ok(()) => {
                        tx.alert_attempted(a.id, now, "sent", None, None)?;
                        info!(alert = a.id, rule = %a.rule, channel = %a.channel, job = a.job.as_deref().unwrap_or("-"), event = %a.event, "alert sent");
                    }
                    Err(Failure::Retry { error, after }) if tries < policy.attempts => {
                        let wait = after.map(|d| d.min(Duration::from_secs(3600))).unwrap_or_else(|| backoff(&policy, tries));
                        let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                        tx.alert_attempted(a.id, now, "pending", Some(at), Some(error))?;
                        warn!(alert = a.id, rule = %a.rule, channel = %a.channel, error = %error, attempt = tries,
                            retry_in_s = wait.as_secs_f64(), "alert delivery failed; will retry");
                    }
                    Err(f) => {
                        tx.alert_attempted(a.id, now, "failed", None, Some(f.error()))?;
                        error!(alert = a.id, rule = %a.rule, channel = %a.channel, error = %f.error(), attempts = tries, "alert delivery failed for good");
                    }
                }
            }
            Ok::<_, StoreError>(())
        })?;
        Ok((n, Some(now)))
    }

    /// Delivers until nothing is due or `budget` is spent. Returns the alerts still pending.
    pub async fn drain(&mut self, config: &Arc<Config>, budget: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            let next = match self.round(config).await {
                Ok((n, _)) if n > 0 => continue,
                Ok((_, next)) => next,
                Err(e) => {
                    error!(error = %e, "alert outbox: store error");
                    break;
                }
            };
            let Some(next) = next else { break };
            let wait = (next - self.clock.now()).to_std().unwrap_or_default();
            if tokio::time::Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        self.store.read(|tx| tx.pending_alerts()).unwrap_or(0)
    }

    /// The daemon's delivery loop, until `stop` turns true. With nothing pending it looks again
    /// when woken, or after `idle_look` (`None`: only when woken).
    pub async fn run(
        mut self,
        mut config: watch::Receiver<Arc<Config>>,
        wake: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
        idle_look: Option<Duration>,
    ) {
        loop {
            if *stop.borrow() {
                return;
            }
            let cfg = config.borrow().clone();
            let next = match self.round(&cfg).await {
                Ok((n, _)) if n > 0 => continue,
                Ok((_, next)) => next,
                Err(e) => {
                    error!(error = %e, "alert outbox: store error; retrying in 5s");
                    Some(self.clock.now() + chrono::Duration::seconds(5))
                }
            };
            let wait = match next {
                Some(t) => Some((t - self.clock.now()).to_std().unwrap_or_default()),
                None => idle_look,
            };
            // Even an alert due later is looked at again within a minute (a clock that jumped).
            let wait = wait.map(|w| w.min(Duration::from_secs(60)));
            tokio::select! {
                _ = async { match wait { Some(w) => tokio::time::sleep(w).await, None => std::future::pending().await } } => {}
                _ = wake.notified() => {}
                _ = config.changed() => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// One delivery attempt of one alert.
async fn attempt(deliverer: &Deliverer, config: &Config, a: &AlertRow) -> Result<(), Failure> {
    let Some(channel) = config.alerts.channels.get(&a.channel) else {
        return Err(Failure::Permanent(format!(
            "channel `{}` is no longer configured",
            a.channel
        )));
    };
    let event: Event = serde_json::from_str(&a.payload)
        .map_err(|e| Failure::Permanent(format!("unreadable alert: {e}")))?;
    deliverer.send(channel, &event, &config.secrets).await
}
