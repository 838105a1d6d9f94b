//! The one way in for alerts: check a submitted alert against the host's limits, reserve its
//! place in the queue and durably queue it. Plain Rust: the plugins' `Host` handle
//! (`crate::plugins::host_api`) and the admin API's test alerts both call [`Ingest::submit`].
//!
//! With incidents: a resolved alert (status `resolved` and a dedup key) is not queued — it
//! resolves the open incident with that key, committed before the receipt; a firing alert the
//! queue takes as a repeat of its dedup key joins that key's open incident ("seen N×").

use std::{
    future::Future,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use alertbridge_plugin_api::{Alert, AlertStatus, ErrorKind, PluginError};
use futures::future::Either;
use tokio::sync::mpsc;

use crate::{
    config::HostSettings,
    dispatch::{Depth, Full, IncidentPort, Reservation},
    metrics::Metrics,
    model::StoredAlert,
    queue::{Enqueued, OnCommit, Origin, Queue, QueueError},
    router::NamedRecipientsError,
};

/// Where accepted alerts go, shared by every source's handle and the admin API.
pub struct Ingest {
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub settings: HostSettings,
    pub stopping: AtomicBool,
    /// Queue places per source: reserved here, held until the dispatcher finishes an alert.
    pub depth: Arc<Depth>,
    /// The incident engine, once the host has one: resolved alerts and repeats go to it.
    pub incidents: OnceLock<Arc<dyn IncidentPort>>,
}

/// Who a resolved alert from `source` is recorded as resolved by: `Alertmanager` for what the
/// webhook took from Alertmanager, else the source instance's name.
pub fn resolved_by(source: &str, alert: &Alert) -> String {
    if alert
        .attributes
        .keys()
        .any(|k| k.starts_with("alertmanager."))
    {
        "Alertmanager".to_owned()
    } else {
        source.to_owned()
    }
}

/// A queued alert: its id, and whether it was a duplicate of one queued before (then nothing
/// new was stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub alert_id: u64,
    pub duplicate: bool,
}

/// Why an alert breaks the host's limits; the message is a reason for the sender.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("subject is empty")]
    EmptySubject,
    #[error("subject is {size} bytes, the limit is {limit}")]
    SubjectTooLarge { size: usize, limit: usize },
    #[error("body is {size} bytes, the limit is {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("unknown severity {0}")]
    UnknownSeverity(u8),
    #[error(transparent)]
    Recipients(#[from] NamedRecipientsError),
    #[error("labels, attributes and named recipients are {size} bytes, the limit is {limit}")]
    ExtrasTooLarge { size: usize, limit: usize },
}

impl Invalid {
    /// The `reason` label of `alertbridge_alerts_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::EmptySubject | Self::UnknownSeverity(_) => "invalid",
            Self::SubjectTooLarge { .. }
            | Self::BodyTooLarge { .. }
            | Self::ExtrasTooLarge { .. } => "too_large",
            Self::Recipients(e) => e.reason(),
        }
    }
}

/// Why a submit was refused. Nothing was stored; [`IngestError::retry_after`] says whether and
/// when the sender should try again.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The host is stopping: come back later.
    #[error("alertbridge is stopping")]
    Stopping,
    /// The alert breaks a limit: sending it again will not help.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The queue, or the source's share of it, is full.
    #[error(transparent)]
    Full(#[from] Full),
    /// The queue cannot store now (storage fault): try later.
    #[error("{}", unavailable_message(.0))]
    Queue(#[source] QueueError),
}

fn unavailable_message(e: &QueueError) -> String {
    match e {
        QueueError::Unavailable { .. } => e.to_string(),
        e => format!("queue unavailable, try later: {}", crate::error_chain(e)),
    }
}

impl IngestError {
    /// How the boundary classes this refusal.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Stopping => ErrorKind::SHUTTING_DOWN,
            Self::Invalid(_) => ErrorKind::PERMANENT,
            Self::Full(_) | Self::Queue(_) => ErrorKind::TRANSIENT,
        }
    }

    /// When the sender should try again; `None`: not at all.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Invalid(_) => None,
            Self::Stopping | Self::Full(_) => Some(Duration::from_millis(1000)),
            Self::Queue(e) => Some(Duration::from_millis(e.retry_after_ms().unwrap_or(1000))),
        }
    }
}

impl From<&IngestError> for PluginError {
    fn from(e: &IngestError) -> Self {
        let out = PluginError::new(e.kind(), e.to_string());
        match e.retry_after() {
            Some(after) => out.retry_after(after),
            None => out,
        }
    }
}

impl From<IngestError> for PluginError {
    fn from(e: IngestError) -> Self {
        Self::from(&e)
    }
}

impl Ingest {
    /// Checks an alert against the host's limits.
    pub fn validate(&self, a: &Alert) -> Result<(), Invalid> {
        let s = &self.settings;
        if a.subject.trim().is_empty() {
            return Err(Invalid::EmptySubject);
        }
        if a.subject.len() > s.max_subject_bytes {
            return Err(Invalid::SubjectTooLarge {
                size: a.subject.len(),
                limit: s.max_subject_bytes,
            });
        }
        if a.body.len() > s.max_body_bytes {
            return Err(Invalid::BodyTooLarge {
                size: a.body.len(),
                limit: s.max_body_bytes,
            });
        }
        if !a.severity.is_known() {
            return Err(Invalid::UnknownSeverity(a.severity.0));
        }
        crate::router::check_named_recipients(a, s.max_recipients_per_alert)?;
        let extra: usize = a
            .labels
            .iter()
            .chain(&a.attributes)
            .map(|(k, v)| k.len() + v.len())
            .chain(a.users.iter().chain(&a.groups).map(String::len))
            .sum();
        if extra > s.max_body_bytes {
            return Err(Invalid::ExtrasTooLarge {
                size: extra,
                limit: s.max_body_bytes,
            });
        }
        Ok(())
    }

    /// Validates and durably queues `alert` from `source`; resolves after the commit.
    ///
    /// The checks and the place reservation happen now; the returned future only waits for the
    /// commit. Whatever the caller does with it (even dropping it), the queue hands a committed
    /// alert to [`Ingest::on_commit`], and so to the dispatcher.
    pub fn submit(
        self: &Arc<Self>,
        source: &Arc<str>,
        alert: Alert,
    ) -> impl Future<Output = Result<Accepted, IngestError>> + Send + 'static {
        let incidents = self.incidents.get().cloned();
        if let Some(port) = &incidents
            && alert.status() == AlertStatus::Resolved
            && let Some(key) = alert.dedup_key.clone()
        {
            return Either::Left(self.resolve(Arc::clone(port), source, &alert, key));
        }
        // A repeat of a firing alert's key may join its open incident.
        let repeat_key = incidents
            .filter(|_| alert.status() == AlertStatus::Firing)
            .zip(alert.dedup_key.clone());
        let admitted = self
            .admit(source, &alert)
            .map(|reservation| (reservation, self.queue.enqueue(source, alert)));
        let source = Arc::clone(source);
        Either::Right(async move {
            let (_reservation, enqueue) = admitted?;
            match enqueue.await {
                Ok(t) => {
                    if t.duplicate
                        && let Some((port, key)) = repeat_key
                        && let Err(e) = port.seen_again(&key).await
                    {
                        tracing::warn!(source = &*source, error = %crate::error_chain(&e), "A repeat could not join its incident.");
                    }
                    Ok(Accepted {
                        alert_id: t.id,
                        duplicate: t.duplicate,
                    })
                }
                Err(QueueError::Closed) => Err(IngestError::Stopping),
                Err(e) => {
                    tracing::error!(source = &*source, error = %crate::error_chain(&e), "Could not queue an alert.");
                    // "queue unavailable, try later": the source keeps the alert and retries.
                    Err(IngestError::Queue(e))
                }
            }
        })
    }

    /// A resolved alert: checked like any, then resolves the open incident with dedup key
    /// `key` (committed before it answers); nothing is queued. The receipt names the alert
    /// that opened the incident, or 0 when no incident with that key is open.
    fn resolve(
        &self,
        port: Arc<dyn IncidentPort>,
        source: &Arc<str>,
        alert: &Alert,
        key: String,
    ) -> impl Future<Output = Result<Accepted, IngestError>> + Send + 'static + use<> {
        let checked = if self.stopping.load(Ordering::Relaxed) {
            Err(IngestError::Stopping)
        } else {
            self.validate(alert).map_err(|e| {
                self.metrics.rejected(source, e.reason());
                IngestError::from(e)
            })
        };
        let by = resolved_by(source, alert);
        let source = Arc::clone(source);
        async move {
            checked?;
            match port.resolve(&key, &by).await {
                Ok(first) => {
                    tracing::info!(
                        source = &*source,
                        key,
                        resolved = first.is_some(),
                        "Resolved alert taken."
                    );
                    Ok(Accepted {
                        alert_id: first.unwrap_or_default(),
                        duplicate: false,
                    })
                }
                Err(e) => {
                    tracing::error!(source = &*source, error = %crate::error_chain(&e), "Could not resolve an incident.");
                    Err(IngestError::Queue(QueueError::Storage(Box::new(e))))
                }
            }
        }
    }

    /// The checks before the enqueue: not stopping, within the limits, and a place reserved —
    /// before the enqueue, so the submits of one batch in flight together cannot all pass the
    /// check; the place is given back when the submit is answered.
    fn admit(&self, source: &Arc<str>, alert: &Alert) -> Result<Reservation, IngestError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(IngestError::Stopping);
        }
        if let Err(e) = self.validate(alert) {
            self.metrics.rejected(source, e.reason());
            return Err(e.into());
        }
        self.depth.reserve(source).map_err(|full| {
            self.metrics.rejected(source, "queue_full");
            IngestError::Full(full)
        })
    }

    /// The queue's [`OnCommit`]: counts each committed enqueue and hands new alerts to the
    /// dispatcher.
    pub fn on_commit(
        metrics: Arc<Metrics>,
        depth: Arc<Depth>,
        accepted: mpsc::UnboundedSender<StoredAlert>,
    ) -> OnCommit {
        Box::new(move |e: Enqueued| {
            if e.duplicate {
                metrics.duplicate(&e.alert.source);
            } else {
                // Counted once, by the host that accepted it, not again when taken up.
                if e.origin == Origin::Accepted {
                    metrics.accepted(&e.alert.source);
                }
                metrics.queue_depth_add(1);
                depth.queued(&e.alert.source);
                let _ = accepted.send(e.alert);
            }
        })
    }
}
