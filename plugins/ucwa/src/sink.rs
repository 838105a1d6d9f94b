//! The `ucwa` sink: `run` signs in and keeps one application alive (event channel and
//! keep-alive, re-created when the server loses it, deleted on shutdown) and hands replies to
//! the host; `presence`, `deliver` and `conversation.send/1` use whichever application is live.

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{
    ErrorKind, Health, HealthState, Message, PluginError, Presence, RecipientResult, error_chain,
    kit::{Backoff, CancellationToken, Host, Setup, Sink},
};
use tracing::warn;

use crate::{
    answer,
    api::Api,
    config::UcwaConfig,
    delivery,
    error::UcwaError,
    events::{self, Dispatcher},
    inbound, presence, session,
    shared::{Core, Live},
};

/// The sink instance.
#[derive(Debug)]
pub struct UcwaSink {
    core: Arc<Core>,
    host: Host,
}

impl UcwaSink {
    /// Parses and checks the config; no network work.
    pub fn new(setup: Setup) -> Result<Self, PluginError> {
        let config: UcwaConfig = setup.config()?;
        let settings = Arc::new(config.settings()?);
        let api = Api::new(settings.clone())
            .map_err(|e| PluginError::config(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(Self {
            core: Arc::new(Core::new(settings, api)),
            host: setup.host,
        })
    }
}

impl UcwaSink {
    /// What the sink's tasks share (for the crate's unit tests).
    #[cfg(test)]
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }
}

impl Sink for UcwaSink {
    const WORKER_THREADS: usize = 2;

    async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), PluginError> {
        let core = &self.core;
        if !core.start() {
            return Err(PluginError::new(
                ErrorKind::PERMANENT,
                "the ucwa sink is already running",
            ));
        };
        let replies = tokio::spawn(inbound::run(
            core.clone(),
            self.host.clone(),
            shutdown.clone(),
        ));
        let mut applications = None;
        let mut generation = 0;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let signed_in = tokio::select! {
                () = shutdown.cancelled() => break,
                r = core.sign_in(&mut applications) => r,
            };
            let app = match signed_in {
                Ok(app) => app,
                Err(e) => {
                    let message = error_chain(&e);
                    let wait = backoff.next();
                    warn!(error = %message, retry_ms = wait.as_millis() as u64, "Sign-in failed.");
                    core.set_health(HealthState::DEGRADED, format!("sign-in failed: {message}"));
                    // Rediscover next time unless the server only asked us to slow down.
                    if !matches!(e.status(), Some(429 | 503)) {
                        applications = None;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            };
            generation += 1;
            backoff.reset();
            let live = Arc::new(Live {
                generation,
                app,
                dispatcher: Dispatcher::new(core.settings.max_kept_conversations),
            });
            core.publish(Some(live.clone()));
            core.set_health(HealthState::OK, "");
            let ended = tokio::select! {
                () = shutdown.cancelled() => None,
                e = events::run(&core.api, &live.app, &live.dispatcher, core.settings.event_timeout, |failing| match failing {
                    Some(e) => core.set_health(HealthState::DEGRADED, format!("event channel failing: {}", error_chain(e))),
                    None => core.set_health(HealthState::OK, ""),
                }, |incoming| inbound::offer(core, incoming)) => Some(e),
                () = delivery::expire_kept(core, &live) => None,
                e = session::keep_alive(&core.api, &live.app, core.settings.report_activity) => Some(e),
                () = core.wait_lost(generation) => Some(UcwaError::ApplicationLost),
            };
            core.publish(None);
            live.dispatcher.close();
            let Some(error) = ended else {
                session::delete(&core.api, &live.app).await;
                break;
            };
            let reason = error_chain(&error);
            warn!(reason = %reason, "Application lost; signing in again.");
            core.set_health(HealthState::DEGRADED, format!("application lost: {reason}"));
            // A server that forgot the application gets a new one at once; anything else is
            // retried with back-off so a persistent failure cannot spin.
            if !error.is_application_gone() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff.next()) => {}
                }
            }
        }
        let _ = replies.await;
        core.set_health(HealthState::STOPPED, "");
        Ok(())
    }

    async fn presence(&self, users: Vec<String>) -> Result<Vec<Presence>, PluginError> {
        presence::presence(self.core.clone(), users).await
    }

    async fn deliver(&self, message: Message) -> Result<Vec<RecipientResult>, PluginError> {
        Ok(delivery::deliver(self.core.clone(), message).await)
    }

    fn health(&self) -> Health {
        self.core.health()
    }

    /// `conversation.send/1` (routed here by the kit).
    async fn send_in_conversation(
        &self,
        conversation: &str,
        user: &str,
        text: &str,
    ) -> Result<String, PluginError> {
        answer::call(&self.core, conversation, user, text).await
    }
}
