//! Talking to systemd (`sd_notify`): readiness, status, watchdog, reload and stop.
//!
//! Without `NOTIFY_SOCKET` in the environment nothing is attempted. The watchdog is pinged only
//! by the engine loop itself after a turn that went through ([`Notifier::alive`]), and the loop
//! never sleeps longer than half the watchdog interval: a loop stuck on anything stops the pings,
//! and systemd restarts the service.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;
use tracing::{debug, warn};

/// How often STATUS= may change (it costs a few queries).
const STATUS_EVERY: Duration = Duration::from_secs(5);

pub struct Notifier {
    enabled: bool,
    /// Half of `WATCHDOG_USEC`: how often to ping.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: Option<Instant>,
    status: String,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let ping_every = if enabled {
            sd_notify::watchdog_enabled().map(|d| d / 2)
        } else {
            None
        };
        Notifier {
            enabled,
            ping_every,
            last_ping: None,
            last_status: None,
            status: String::new(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            warn!(error = %e, "cannot notify systemd");
        }
    }

    /// Whether systemd is listening (`NOTIFY_SOCKET` is set).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The longest the loop may sleep (half the watchdog interval), if there is a watchdog.
    pub fn max_sleep(&self) -> Option<Duration> {
        self.ping_every
    }

    /// Startup and recovery are done.
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// The loop just completed a turn: ping the watchdog if due.
    pub fn alive(&mut self) {
        let Some(every) = self.ping_every else { return };
        if self.last_ping.is_none_or(|t| t.elapsed() >= every) {
            self.send(&[NotifyState::Watchdog]);
            self.last_ping = Some(Instant::now());
        }
    }

    /// Whether a new STATUS= may be sent now.
    pub fn status_due(&self) -> bool {
        self.last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY)
    }

    pub fn status(&mut self, text: String) {
        self.last_status = Some(Instant::now());
        if text != self.status {
            debug!(status = %text, "status");
            self.send(&[NotifyState::Status(&text)]);
            self.status = text;
        }
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(m) => self.send(&[NotifyState::Reloading, m]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
