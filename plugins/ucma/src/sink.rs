//! The `ucma` sink: presence in batches, sends under idempotency keys, per-recipient results,
//! and health polling, over [`BridgeClient`].

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    DeliveryStatus, Health, Message, PluginError, Presence, PresenceState, RecipientResult,
    kit::{CancellationToken, Setup, Sink},
};
use futures_util::{StreamExt as _, stream};
use tracing::{debug, info};

use crate::{
    client::{BridgeClient, BridgeError},
    config::{Settings, UcmaConfig},
    health::{HealthCell, assess},
    protocol::{MessageDoc, SendBody, idempotency_key, presence_state, recipient_result},
};

/// How often a send still `running` at the bridge is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// One `ucma` sink instance.
#[derive(Debug)]
pub struct UcmaSink {
    instance: String,
    settings: Settings,
    client: BridgeClient,
    health: HealthCell,
}

impl UcmaSink {
    /// Reads and checks the config and builds the HTTP client; no network traffic.
    pub fn new(setup: Setup) -> Result<Self, PluginError> {
        let settings = setup.config::<UcmaConfig>()?.check()?;
        let client = BridgeClient::new(&settings).map_err(|e| {
            PluginError::config(format!(
                "cannot build the HTTP client: {}",
                alertbridge_plugin_api::error_chain(&e)
            ))
        })?;
        Ok(Self {
            instance: setup.instance,
            settings,
            client,
            health: HealthCell::default(),
        })
    }

    fn config(&self) -> &UcmaConfig {
        &self.settings.config
    }

    /// Polls `/v1/health` once and records the result.
    async fn check_health(&self) {
        let answer = self.client.health().await;
        self.health.set(assess(&answer, self.config()));
    }

    /// Sends `message` to `to` (one request) and waits for every recipient to be final, or
    /// for the request timeout.
    async fn send(
        &self,
        message: &Message,
        to: &[String],
    ) -> Result<Vec<RecipientResult>, BridgeError> {
        let deadline = Instant::now() + self.settings.request_timeout();
        let key = idempotency_key(&self.instance, message, to);
        let body = SendBody::new(
            message,
            to,
            self.config().mode.as_str(),
            self.config().send_timeout_ms,
        );
        // Strings, numbers and booleans only: serializing cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut doc = self.client.send(&key, bytes).await?;
        debug!(alert = message.alert_id, key = %key, recipients = to.len(), id = %doc.id, state = %doc.state, "Bridge answered a send.");
        while doc.state == "running" && Instant::now() + POLL_INTERVAL < deadline {
            debug!(alert = message.alert_id, id = %doc.id, "Send still running at the bridge; polling.");
            tokio::time::sleep(POLL_INTERVAL).await;
            doc = self.client.message(&doc.id).await?;
        }
        Ok(results_for(to, &doc))
    }

    /// Runs `jobs` concurrently, bounded by `max_concurrent_requests`, keeping their order.
    async fn concurrently<T, F: Future<Output = T>>(&self, jobs: Vec<F>) -> Vec<T> {
        stream::iter(jobs)
            .buffered(self.config().max_concurrent_requests)
            .collect()
            .await
    }
}

/// One result per requested recipient, from the bridge's document.
fn results_for(to: &[String], doc: &MessageDoc) -> Vec<RecipientResult> {
    let by_to: HashMap<&str, _> = doc.recipients.iter().map(|r| (r.to.as_str(), r)).collect();
    to.iter()
        .map(|user| match by_to.get(user.as_str()) {
            Some(r) => recipient_result(r),
            None => RecipientResult::new(
                user,
                DeliveryStatus::FAILED_TRANSIENT,
                "the bridge did not report this recipient",
            ),
        })
        .collect()
}

/// Every recipient of a failed request, failed with the request's error.
fn failed_all(to: &[String], error: &BridgeError) -> Vec<RecipientResult> {
    let status = if error.is_retriable() {
        DeliveryStatus::FAILED_TRANSIENT
    } else {
        DeliveryStatus::FAILED_PERMANENT
    };
    let detail = alertbridge_plugin_api::error_chain(error);
    to.iter()
        .map(|user| {
            let result = RecipientResult::new(user, status, detail.clone());
            match error.retry_after() {
                Some(after) => result.retry_after(after),
                None => result,
            }
        })
        .collect()
}

/// The outcome of one request to the bridge, with the users it was about.
type Outcome<'a, T> = (&'a [String], Result<Vec<T>, BridgeError>);

/// Splits per-request outcomes into results; when every request failed, the first error.
fn combine<T>(
    outcomes: Vec<Outcome<'_, T>>,
    on_error: impl Fn(&[String], &BridgeError) -> Vec<T>,
) -> Result<Vec<T>, PluginError> {
    if let Some(Err(first)) = outcomes.first().map(|(_, r)| r)
        && outcomes.iter().all(|(_, r)| r.is_err())
    {
        return Err(first.to_plugin_error());
    }
    Ok(outcomes
        .into_iter()
        .flat_map(|(to, outcome)| match outcome {
            Ok(results) => results,
            Err(e) => on_error(to, &e),
        })
        .collect())
}

impl Sink for UcmaSink {
    async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), PluginError> {
        info!(instance = %self.instance, endpoint = %self.settings.endpoint, "UCMA sink started.");
        let interval = Duration::from_millis(self.config().health_interval_ms);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = self.check_health() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn presence(&self, users: Vec<String>) -> Result<Vec<Presence>, PluginError> {
        let mut users = users;
        users.sort();
        users.dedup();
        let batches: Vec<&[String]> = users.chunks(self.config().presence_batch_size).collect();
        let timeout = self.config().presence_timeout_ms;
        let jobs: Vec<_> = batches
            .iter()
            .map(|batch| self.client.presence(batch, timeout))
            .collect();
        let answers = self.concurrently(jobs).await;
        let outcomes = batches
            .iter()
            .zip(answers)
            .map(|(batch, answer)| {
                let presences = answer.map(|results| {
                    results
                        .into_iter()
                        .map(|r| {
                            let mut p = Presence::new(
                                r.target,
                                presence_state(&r.availability, r.availability_value),
                            );
                            p.detail = match (r.error, r.activity) {
                                (Some(e), _) => format!("{} ({})", e.reason, e.code),
                                (None, Some(activity)) => {
                                    format!("{} ({activity})", r.availability)
                                }
                                (None, None) => r.availability,
                            };
                            p
                        })
                        .collect()
                });
                (*batch, presences)
            })
            .collect();
        combine(outcomes, |batch, error| {
            let detail = alertbridge_plugin_api::error_chain(error);
            batch
                .iter()
                .map(|u| Presence {
                    detail: detail.clone(),
                    ..Presence::new(u, PresenceState::UNKNOWN)
                })
                .collect()
        })
    }

    async fn deliver(&self, message: Message) -> Result<Vec<RecipientResult>, PluginError> {
        let mut recipients = message.recipients.clone();
        recipients.sort();
        recipients.dedup();
        let requests: Vec<&[String]> = recipients
            .chunks(self.config().max_recipients_per_message)
            .collect();
        let jobs: Vec<_> = requests.iter().map(|to| self.send(&message, to)).collect();
        let answers = self.concurrently(jobs).await;
        let outcomes = requests.iter().copied().zip(answers).collect();
        let results = combine(outcomes, failed_all)?;
        // One result per recipient as the host listed them.
        let by_user: HashMap<&str, &RecipientResult> =
            results.iter().map(|r| (r.user.as_str(), r)).collect();
        Ok(message
            .recipients
            .iter()
            .map(|u| match by_user.get(u.as_str()) {
                Some(r) => (*r).clone(),
                None => RecipientResult::new(u, DeliveryStatus::FAILED_TRANSIENT, "no result"),
            })
            .collect())
    }

    fn health(&self) -> Health {
        self.health.get()
    }
}
