//! The `ucwa` sink: `run` signs in and keeps one application alive (event channel and
//! keep-alive, re-created when the server loses it, deleted on shutdown); `presence` and
//! `deliver` use whichever application is live.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::{
    ErrorKind, Health, HealthState, Message, PluginError, Presence, RecipientResult, error_chain,
    kit::{CancellationToken, Setup, Sink},
};
use reqwest::Url;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use crate::{
    api::Api,
    config::{Settings, UcwaConfig},
    delivery,
    error::UcwaError,
    events,
    events::Dispatcher,
    presence,
    session::{self, Application},
};

/// A live application and the dispatcher of its events.
#[derive(Debug)]
pub struct Live {
    /// Counts applications created by this instance.
    pub generation: u64,
    pub app: Application,
    pub dispatcher: Dispatcher,
}

/// What the sink's tasks share.
#[derive(Debug)]
pub struct Core {
    pub settings: Arc<Settings>,
    pub api: Api,
    /// Unique per instance, kept across re-creations of the application.
    endpoint_id: String,
    current: watch::Sender<Option<Arc<Live>>>,
    /// The newest application generation reported lost (a value, not a queue: any number of
    /// failing requests leave one number behind).
    lost: watch::Sender<u64>,
    running: std::sync::atomic::AtomicBool,
    /// Caps conversations in flight.
    pub conversations: Semaphore,
    /// Caps presence reads in flight.
    pub presence_reads: Semaphore,
    pub presence_cache: Mutex<HashMap<String, (tokio::time::Instant, Presence)>>,
    health: Mutex<Health>,
}

impl Core {
    /// The live application, waiting up to the request timeout for one (other than
    /// generation `not`) to appear.
    pub async fn live(&self, not: Option<u64>) -> Option<Arc<Live>> {
        let mut rx = self.current.subscribe();
        let wait = rx.wait_for(|c| c.as_ref().is_some_and(|l| Some(l.generation) != not));
        match tokio::time::timeout(self.settings.request_timeout, wait).await {
            Ok(Ok(current)) => current.clone(),
            _ => None,
        }
    }

    /// Reports that the server no longer knows application `generation`.
    pub fn lost(&self, generation: u64) {
        self.lost.send_if_modified(|newest| {
            let newer = generation > *newest;
            if newer {
                *newest = generation;
            }
            newer
        });
    }

    fn set_health(&self, state: HealthState, message: impl Into<String>) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = Health::new(state, message);
    }

    async fn sign_in(&self, applications: &mut Option<Url>) -> Result<Application, UcwaError> {
        let url = match applications {
            Some(url) => url.clone(),
            None => {
                let url = session::discover(&self.api, &self.settings).await?;
                info!(url = %url, "Discovered the UCWA applications URL.");
                applications.insert(url).clone()
            }
        };
        session::create(&self.api, &self.settings, &url, &self.endpoint_id).await
    }
}

/// Waits until application `generation` is reported lost.
async fn wait_lost(mut rx: watch::Receiver<u64>, generation: u64) {
    if rx.wait_for(|newest| *newest >= generation).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The sink instance.
#[derive(Debug)]
pub struct UcwaSink {
    core: Arc<Core>,
}

fn endpoint_id() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl UcwaSink {
    /// Parses and checks the config; no network work.
    pub fn new(setup: Setup) -> Result<Self, PluginError> {
        let config: UcwaConfig = setup.config()?;
        let settings = Arc::new(config.settings()?);
        let api = Api::new(settings.clone())
            .map_err(|e| PluginError::config(format!("HTTP client: {}", error_chain(&e))))?;
        let core = Core {
            endpoint_id: endpoint_id(),
            current: watch::Sender::new(None),
            lost: watch::Sender::new(0),
            running: std::sync::atomic::AtomicBool::new(false),
            conversations: Semaphore::new(settings.max_concurrent),
            presence_reads: Semaphore::new(settings.max_concurrent),
            presence_cache: Mutex::default(),
            health: Mutex::new(Health::new(HealthState::STARTING, "signing in")),
            api,
            settings,
        };
        Ok(Self {
            core: Arc::new(core),
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
        if core.running.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(PluginError::new(
                ErrorKind::PERMANENT,
                "the ucwa sink is already running",
            ));
        };
        let mut applications = None;
        let mut generation = 0;
        let mut backoff = Duration::from_secs(1);
        loop {
            let signed_in = tokio::select! {
                () = shutdown.cancelled() => break,
                r = core.sign_in(&mut applications) => r,
            };
            let app = match signed_in {
                Ok(app) => app,
                Err(e) => {
                    let message = error_chain(&e);
                    warn!(error = %message, retry_secs = backoff.as_secs(), "Sign-in failed.");
                    core.set_health(HealthState::DEGRADED, format!("sign-in failed: {message}"));
                    // Rediscover next time unless the server only asked us to slow down.
                    if !matches!(e.status(), Some(429 | 503)) {
                        applications = None;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            generation += 1;
            backoff = Duration::from_secs(1);
            let live = Arc::new(Live {
                generation,
                app,
                dispatcher: Dispatcher::default(),
            });
            core.current.send_replace(Some(live.clone()));
            core.set_health(HealthState::OK, "");
            let ended = tokio::select! {
                () = shutdown.cancelled() => None,
                e = events::run(&core.api, &live.app, &live.dispatcher, core.settings.event_timeout, |failing| match failing {
                    Some(e) => core.set_health(HealthState::DEGRADED, format!("event channel failing: {}", error_chain(e))),
                    None => core.set_health(HealthState::OK, ""),
                }) => Some(e),
                e = session::keep_alive(&core.api, &live.app, core.settings.report_activity) => Some(e),
                () = wait_lost(core.lost.subscribe(), generation) => Some(UcwaError::ApplicationLost),
            };
            core.current.send_replace(None);
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
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
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
        self.core
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
