//! The host side of the boundary: what each instance's `Host` handle does — check and durably
//! queue submitted alerts, and re-emit plugin log records in the host's log.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use alertbridge_plugin_api::{
    Alert, ErrorKind, FfiAlert, FfiError, LogLevel, LogRecord, PluginError, Receipt,
    abi::{HostBox, HostFfi, HostFfi_TO},
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RArc, RErr, RResult, RString},
    },
    async_ffi::{FfiFuture, FutureExt as _},
};
use tokio::sync::mpsc;

use crate::{
    config::HostSettings,
    dispatch::Depth,
    metrics::Metrics,
    model::StoredAlert,
    queue::{Enqueued, OnCommit, Queue, QueueError},
};

/// Where accepted alerts go, shared by every source's handle.
pub struct Ingest {
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub settings: HostSettings,
    pub stopping: AtomicBool,
    /// Queue places per source: reserved here, held until the dispatcher finishes an alert.
    pub depth: Arc<Depth>,
}

impl Ingest {
    /// Checks an alert against the host's limits; the error is a reason for the sender.
    fn validate(&self, a: &Alert) -> Result<(), (&'static str, String)> {
        let s = &self.settings;
        if a.subject.trim().is_empty() {
            return Err(("invalid", "subject is empty".into()));
        }
        if a.subject.len() > s.max_subject_bytes {
            return Err((
                "too_large",
                format!(
                    "subject is {} bytes, the limit is {}",
                    a.subject.len(),
                    s.max_subject_bytes
                ),
            ));
        }
        if a.body.len() > s.max_body_bytes {
            return Err((
                "too_large",
                format!(
                    "body is {} bytes, the limit is {}",
                    a.body.len(),
                    s.max_body_bytes
                ),
            ));
        }
        if !a.severity.is_known() {
            return Err(("invalid", format!("unknown severity {}", a.severity.0)));
        }
        crate::router::check_named_recipients(a, s.max_recipients_per_alert)
            .map_err(|e| (e.reason(), e.to_string()))?;
        let extra: usize = a
            .labels
            .iter()
            .chain(&a.attributes)
            .map(|(k, v)| k.len() + v.len())
            .chain(a.users.iter().chain(&a.groups).map(String::len))
            .sum();
        if extra > s.max_body_bytes {
            return Err((
                "too_large",
                format!(
                    "labels, attributes and named recipients are {extra} bytes, the limit is {}",
                    s.max_body_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Validates and durably queues `alert` from `source`; resolves after the commit.
    pub fn submit(
        self: &Arc<Self>,
        source: &Arc<str>,
        alert: Alert,
    ) -> FfiFuture<RResult<Receipt, FfiError>> {
        let refuse = |kind, message: String, retry_after_ms| {
            let e = FfiError {
                retry_after_ms,
                ..FfiError::new(kind, message)
            };
            async move { RErr(e) }.into_ffi()
        };
        if self.stopping.load(Ordering::Relaxed) {
            return async { RErr(stopping()) }.into_ffi();
        }
        if let Err((reason, message)) = self.validate(&alert) {
            self.metrics.rejected(source, reason);
            return refuse(ErrorKind::PERMANENT, message, 0);
        }
        // Reserved before the enqueue, so the submits of one batch in flight together cannot
        // all pass the check; the place is given back when this future ends.
        let reservation = match self.depth.reserve(source) {
            Ok(r) => r,
            Err(full) => {
                self.metrics.rejected(source, "queue_full");
                return refuse(ErrorKind::TRANSIENT, full.to_string(), 1000);
            }
        };
        // Whatever the plugin does with this future, the queue hands a committed alert to
        // `on_commit` below, and so to the dispatcher.
        let enqueue = self.queue.enqueue(source, alert);
        let source = Arc::clone(source);
        async move {
            let _reservation = reservation;
            match enqueue.await {
                Ok(t) => RResult::ROk(Receipt {
                    alert_id: t.id,
                    duplicate: t.duplicate,
                    attributes: Default::default(),
                }),
                Err(QueueError::Closed) => RErr(stopping()),
                Err(e) => {
                    tracing::error!(source = &*source, error = %crate::error_chain(&e), "Could not queue an alert.");
                    // "queue unavailable, try later": the source keeps the alert and retries.
                    let retry = std::time::Duration::from_millis(e.retry_after_ms().unwrap_or(1000));
                    let message = match e {
                        QueueError::Unavailable { .. } => e.to_string(),
                        e => format!("queue unavailable, try later: {}", crate::error_chain(&e)),
                    };
                    RErr(PluginError::new(ErrorKind::TRANSIENT, message).retry_after(retry).into())
                }
            }
        }
        .into_ffi()
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
                metrics.accepted(&e.alert.source);
                metrics.queue_depth_add(1);
                depth.queued(&e.alert.source);
                let _ = accepted.send(e.alert);
            }
        })
    }
}

/// The refusal of a host that is stopping: the source should come back later.
fn stopping() -> FfiError {
    FfiError {
        retry_after_ms: 1000,
        ..FfiError::new(ErrorKind::SHUTTING_DOWN, "alertbridge is stopping")
    }
}

/// One instance's handle on the host.
#[derive(Clone)]
pub struct HostHandle {
    instance: Arc<str>,
    ingest: Option<Arc<Ingest>>,
    level: LogLevel,
}

impl HostHandle {
    /// A handle for `instance`; without `ingest` (as for `check`) submits are refused.
    pub fn boxed(instance: &str, ingest: Option<Arc<Ingest>>) -> HostBox {
        let level = match tracing::level_filters::LevelFilter::current().into_level() {
            None => LogLevel::OFF,
            Some(tracing::Level::ERROR) => LogLevel::ERROR,
            Some(tracing::Level::WARN) => LogLevel::WARN,
            Some(tracing::Level::INFO) => LogLevel::INFO,
            Some(tracing::Level::DEBUG) => LogLevel::DEBUG,
            Some(tracing::Level::TRACE) => LogLevel::TRACE,
        };
        HostFfi_TO::from_ptr(
            RArc::new(Self {
                instance: instance.into(),
                ingest,
                level,
            }),
            TD_Opaque,
        )
    }
}

impl HostFfi for HostHandle {
    fn submit(&self, alert: FfiAlert) -> FfiFuture<RResult<Receipt, FfiError>> {
        match &self.ingest {
            Some(ingest) => ingest.submit(&self.instance, Alert::from(&alert)),
            None => {
                let e = FfiError::new(ErrorKind::SHUTTING_DOWN, "not running (config check)");
                async move { RErr(e) }.into_ffi()
            }
        }
    }

    fn log(&self, record: LogRecord) {
        let level = match record.level {
            LogLevel::ERROR => log::Level::Error,
            LogLevel::WARN => log::Level::Warn,
            LogLevel::INFO => log::Level::Info,
            LogLevel::DEBUG => log::Level::Debug,
            _ => log::Level::Trace,
        };
        let target = format!("plugin::{}::{}", self.instance, record.target);
        let message = if record.fields.is_empty() {
            record.message.to_string()
        } else {
            format!("{} {}", record.message, record.fields)
        };
        let file = (!record.file.is_empty()).then(|| record.file.as_str());
        let line = (record.line != 0).then_some(record.line);
        tracing_log::format_trace(
            &log::Record::builder()
                .level(level)
                .target(&target)
                .args(format_args!("{message}"))
                .file(file)
                .line(line)
                .module_path(None)
                .build(),
        )
        .ok();
    }

    fn max_log_level(&self) -> LogLevel {
        self.level
    }

    fn instance_name(&self) -> RString {
        RString::from(&*self.instance)
    }
}
