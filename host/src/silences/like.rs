//! "Silence alerts like this one" from a reply (`silence 2h` to an incident's page): the
//! matchers are the alert's labels as exact values, or, for an alert without labels, its
//! source and exact subject — what the status page's button pre-fills too.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{MatcherSpec, NewSilence, Silence, SilenceError, Silences, spec::SpecError};
use crate::{model::StoredAlert, queue::Queue};

/// The matchers that take alerts like `alert`.
pub fn like(alert: &StoredAlert) -> MatcherSpec {
    if alert.alert.labels.is_empty() {
        MatcherSpec {
            source: vec![alert.source.clone()],
            subject: Some(format!("^{}$", regex::escape(&alert.alert.subject))),
            ..MatcherSpec::default()
        }
    } else {
        MatcherSpec {
            labels: alert.alert.labels.clone(),
            ..MatcherSpec::default()
        }
    }
}

/// Creates silences for "alerts like alert N" (what the replies side needs, as a trait so it
/// can be tested without a queue).
pub trait SilenceLike: Send + Sync + 'static {
    /// A silence from now for `duration_ms`, matching alerts like alert `alert_id`.
    fn silence_like(
        &self,
        alert_id: u64,
        duration_ms: i64,
        author: String,
        comment: String,
    ) -> BoxFuture<'_, Result<Silence, SilenceError>>;
}

/// [`SilenceLike`] over the queue (where the alert is read) and the host's silences;
/// `created` runs after each silence is in force (the host has queued alerts looked at again).
pub struct QueueSilenceLike {
    pub silences: Arc<Silences>,
    pub queue: Arc<dyn Queue>,
    pub created: Box<dyn Fn() + Send + Sync>,
}

impl SilenceLike for QueueSilenceLike {
    fn silence_like(
        &self,
        alert_id: u64,
        duration_ms: i64,
        author: String,
        comment: String,
    ) -> BoxFuture<'_, Result<Silence, SilenceError>> {
        Box::pin(async move {
            let queue = Arc::clone(&self.queue);
            let alert = tokio::task::spawn_blocking(move || queue.get(alert_id))
                .await
                .map_err(SilenceError::storage)?
                .map_err(SilenceError::storage)?
                .ok_or_else(|| {
                    SilenceError::Invalid(SpecError {
                        key: "alert".into(),
                        why: format!("alert {alert_id} is no longer kept"),
                    })
                })?;
            let now = crate::model::now_ms();
            let req = NewSilence {
                matchers: like(&alert),
                duration: Some(format!("{}s", (duration_ms / 1000).max(1))),
                author,
                comment,
                ..NewSilence::default()
            };
            let made = self.silences.create(&req, now).await?;
            (self.created)();
            Ok(made)
        })
    }
}
