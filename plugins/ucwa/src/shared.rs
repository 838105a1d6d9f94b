//! What the `ucwa` sink's tasks share: the [`Core`] (settings, HTTP client, caps, presence
//! cache, health, the inbound hand-over) and the [`Live`] application it publishes. The sink's `run` loop signs in and
//! publishes; `delivery` and `presence` read the live application and report it lost. This
//! module sits below all three, so none of them imports another's internals.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use alertbridge_plugin_api::{Health, HealthState, Presence};
use reqwest::Url;
use tokio::sync::{Semaphore, watch};
use tracing::info;

use crate::{
    api::Api,
    config::Settings,
    error::UcwaError,
    events::Dispatcher,
    handover::Inbound,
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
    running: AtomicBool,
    /// Caps conversations in flight.
    pub conversations: Semaphore,
    /// Caps presence reads in flight.
    pub presence_reads: Semaphore,
    pub presence_cache: Mutex<HashMap<String, (tokio::time::Instant, Presence)>>,
    health: Mutex<Health>,
    /// Inbound messages on their way to the host.
    pub inbound: Inbound,
}

impl Core {
    /// A core with no application yet, "starting".
    pub fn new(settings: Arc<Settings>, api: Api) -> Self {
        Self {
            endpoint_id: random_uuid(),
            current: watch::Sender::new(None),
            lost: watch::Sender::new(0),
            running: AtomicBool::new(false),
            conversations: Semaphore::new(settings.max_concurrent),
            presence_reads: Semaphore::new(settings.max_concurrent),
            presence_cache: Mutex::default(),
            health: Mutex::new(Health::new(HealthState::STARTING, "signing in")),
            inbound: Inbound::new(settings.max_pending_inbound),
            api,
            settings,
        }
    }

    /// Marks the core as run; false if it already was (one `run` per instance).
    pub fn start(&self) -> bool {
        !self.running.swap(true, Ordering::SeqCst)
    }

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

    /// Makes `live` the application requests use (`None`: there is none right now).
    pub fn publish(&self, live: Option<Arc<Live>>) {
        self.current.send_replace(live);
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

    /// Waits until application `generation` is reported lost.
    pub async fn wait_lost(&self, generation: u64) {
        let mut rx = self.lost.subscribe();
        if rx.wait_for(|newest| *newest >= generation).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn set_health(&self, state: HealthState, message: impl Into<String>) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = Health::new(state, message);
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Discovers the applications URL (once, kept in `applications`) and creates an application.
    pub async fn sign_in(&self, applications: &mut Option<Url>) -> Result<Application, UcwaError> {
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

/// A random (version 4) UUID, lowercase and hyphenated, as UCWA's own clients send for the
/// application's `EndpointId` and for each conversation's `operationId`.
pub fn random_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::random_uuid;

    /// The hand-made ids had no version or variant bits: not UUIDs by RFC 9562.
    #[test]
    fn endpoint_and_operation_ids_are_version_4_uuids() {
        let a = random_uuid();
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version(), Some(uuid::Version::Random));
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(u.hyphenated().to_string(), a, "lowercase, hyphenated");
        assert_ne!(random_uuid(), a);
    }
}
