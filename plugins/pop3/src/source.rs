//! The `pop3` source: takes the mailbox lock, then polls — one POP3 session per poll, each
//! draining at most `max_messages_per_session` mails — and reconnects with exponential backoff
//! and jitter while the server is down, refuses the login, or the host refuses alerts.

use std::{
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::Duration,
};

use alertbridge_plugin_api::{
    Health, HealthState, PluginError, error_chain,
    kit::{Backoff, CancellationToken, Setup, Source, SourceContext},
};
use tracing::{error, info, warn};

pub use crate::counters::Counters;
use crate::{
    config::{Pop3Config, Settings},
    quarantine::Memory,
    session::{Outcome, Poller, SessionError},
    state::{MailboxLock, SeenUids, StateError},
};

/// A running `pop3` source instance.
#[derive(Debug)]
pub struct Pop3Source {
    settings: Settings,
    health: Mutex<Health>,
    counters: Arc<Counters>,
}

impl Pop3Source {
    /// Parses and checks the instance's configuration (no network, no state files).
    pub fn new(setup: Setup) -> Result<Self, PluginError> {
        let config: Pop3Config = setup.config()?;
        let settings = config.validate()?;
        let health = Health::new(HealthState::DEGRADED, "not connected yet");
        Ok(Self {
            settings,
            health: Mutex::new(health),
            counters: Arc::default(),
        })
    }

    /// What the source did so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn set_health(&self, health: Health) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = health;
    }

    async fn lock_mailbox(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<MailboxLock>, PluginError> {
        let mut backoff = Backoff::new(self.settings.poll_interval, self.settings.max_backoff);
        loop {
            match MailboxLock::acquire(&self.settings.state_dir, &self.settings.mailbox) {
                Ok(lock) => return Ok(Some(lock)),
                Err(e @ StateError::Locked(_)) => {
                    warn!(mailbox = %self.settings.mailbox, error = %e, "Mailbox locked by another instance; waiting.");
                    self.set_health(Health::new(HealthState::DEGRADED, error_chain(&e)));
                }
                Err(e) => return Err(PluginError::permanent(&e)),
            }
            if !sleep(shutdown, backoff.next()).await {
                return Ok(None);
            }
        }
    }

    async fn run_loop(&self, ctx: SourceContext) -> Result<(), PluginError> {
        let Some(lock) = self.lock_mailbox(&ctx.shutdown).await? else {
            return Ok(());
        };
        let mut seen = match self.settings.keep {
            true => Some(
                SeenUids::load(&self.settings.state_dir, &self.settings.mailbox)
                    .map_err(|e| PluginError::permanent(&e))?,
            ),
            false => None,
        };
        let quarantined =
            SeenUids::load_quarantine(&self.settings.state_dir, &self.settings.mailbox)
                .map_err(|e| PluginError::permanent(&e))?;
        let mailbox = self.settings.mailbox.as_str();
        let remembered = seen.as_ref().map_or(0, SeenUids::len);
        info!(mailbox, keep = self.settings.keep, remembered, quarantined = quarantined.len(), lock = %lock.path().display(), "Polling the mailbox.");
        let mut memory = Memory::new(quarantined, self.settings.max_fetch_attempts);
        let mut backoff = Backoff::new(Duration::from_millis(500), self.settings.max_backoff);
        let mut ahead = None;
        let poller = Poller {
            settings: &self.settings,
            counters: &self.counters,
        };
        while !ctx.shutdown.is_cancelled() {
            let session = poller.session(&ctx, seen.as_mut(), &mut memory, ahead.take());
            let wait = match session.await {
                Ok(outcome) => {
                    backoff.reset();
                    self.set_health(self.ok_health());
                    match outcome {
                        Outcome::More(next) => {
                            ahead = next;
                            continue;
                        }
                        Outcome::Done => self.settings.poll_interval,
                    }
                }
                Err(e) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    let message = error_chain(&e);
                    let wait = backoff.next().max(e.retry_after().unwrap_or_default());
                    match &e {
                        SessionError::Pop3(p) if p.is_auth() => {
                            error!(mailbox, error = %message, retry_in_ms = wait.as_millis(), "Authentication failed; check username and password.");
                        }
                        SessionError::Pop3(_) => {
                            warn!(mailbox, error = %message, retry_in_ms = wait.as_millis(), "POP3 session failed; reconnecting.")
                        }
                        SessionError::Host(_) => {
                            warn!(mailbox, error = %message, retry_in_ms = wait.as_millis(), "Host did not take the alert; mail stays on the server.")
                        }
                        SessionError::State(_) => {
                            error!(mailbox, error = %message, "Cannot write the state (keep-mode or quarantine).")
                        }
                    }
                    self.set_health(Health::new(HealthState::DEGRADED, message));
                    wait
                }
            };
            if !sleep(&ctx.shutdown, wait).await {
                break;
            }
        }
        if let Some(ahead) = ahead {
            ahead.close().await;
        }
        info!(mailbox, "Stopped.");
        Ok(())
    }

    fn ok_health(&self) -> Health {
        let c = &self.counters;
        let message = format!(
            "{} alerts, {} with problems, {} disallowed, {} oversize, {} refused, {} quarantined",
            c.alerts.load(Ordering::Relaxed),
            c.problems.load(Ordering::Relaxed),
            c.disallowed.load(Ordering::Relaxed),
            c.oversize.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed),
            c.quarantined.load(Ordering::Relaxed),
        );
        Health::new(HealthState::OK, message)
    }
}

impl Source for Pop3Source {
    async fn run(self: Arc<Self>, ctx: SourceContext) -> Result<(), PluginError> {
        self.run_loop(ctx).await
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Sleeps unless shut down first; false if and only if the shutdown came.
async fn sleep(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}
