//! Instance lifecycle: create each configured source and sink through its plugin, start it,
//! watch its health, and recreate it with backoff when it fails or panics — never taking the
//! host down. Stops with a deadline.

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock, Weak},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    ErrorKind, HealthState, PluginError, Role, abi::SinkBox, kit::Backoff,
};
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    handles::{Live, SinkHandle, SourceHandle},
    host_api::HostHandle,
    loader::{Plugin, Plugins},
};
use crate::{
    config::InstanceConfig,
    dispatch::{SinkLookup, Sinks},
    ingest::Ingest,
    metrics::Metrics,
};

/// What the status page and `/healthz` show about an instance.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    pub name: String,
    pub role: &'static str,
    pub plugin: String,
    pub state: String,
    pub message: String,
    pub restarts: u32,
    pub last_error: Option<String>,
}

/// One configured instance and its current incarnation.
pub struct Slot {
    pub config: InstanceConfig,
    pub role: Role,
    plugin: Plugin,
    live: RwLock<Option<Live>>,
    status: Mutex<Status>,
    failed: Notify,
    /// Told each time an incarnation starts.
    up: Notify,
    /// Cancelled to stop this instance for good (host stop, or removed by a reload).
    pub stop: CancellationToken,
}

impl Slot {
    pub fn new(config: InstanceConfig, role: Role, plugin: Plugin) -> Self {
        let status = Status {
            name: config.name.clone(),
            role: if role == Role::SOURCE {
                "source"
            } else {
                "sink"
            },
            plugin: config.plugin.clone(),
            state: HealthState::STARTING.to_string(),
            message: String::new(),
            restarts: 0,
            last_error: None,
        };
        Self {
            config,
            role,
            plugin,
            live: RwLock::new(None),
            status: Mutex::new(status),
            failed: Notify::new(),
            up: Notify::new(),
            stop: CancellationToken::new(),
        }
    }

    /// True if and only if `other` would run the same instance the same way (a reload keeps it).
    pub fn same_as(&self, other: &Slot) -> bool {
        self.role == other.role
            && self.config.name == other.config.name
            && self.config.plugin == other.config.plugin
            && self.config.config_toml == other.config.config_toml
            && self.plugin.path == other.plugin.path
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_healthy(&self) -> bool {
        let s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        s.state == HealthState::OK.name() || s.state == HealthState::DEGRADED.name()
    }

    /// The running sink, if any.
    pub fn sink(&self) -> Option<SinkHandle> {
        match &*self.live.read().unwrap_or_else(PoisonError::into_inner) {
            Some(Live::Sink(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// The running sink; if it is (re)starting, waits up to `wait` for it to come up.
    pub async fn sink_within(&self, wait: Duration) -> Option<SinkHandle> {
        if let Some(sink) = self.sink() {
            return Some(sink);
        }
        let started = self.up.notified();
        tokio::pin!(started);
        // Registered before the second check, so a start in between is not missed.
        started.as_mut().enable();
        if let Some(sink) = self.sink() {
            return Some(sink);
        }
        let _ = tokio::time::timeout(wait, started).await;
        self.sink()
    }

    /// Reports that a call into incarnation `sink` panicked: it will be recreated. A report
    /// about an incarnation already replaced is ignored.
    fn report_failure_of(&self, sink: &Weak<SinkBox>, message: &str) {
        let current = match &*self.live.read().unwrap_or_else(PoisonError::into_inner) {
            Some(Live::Sink(s)) => s.is(sink),
            _ => false,
        };
        if current {
            self.report_failure(message);
        }
    }

    /// Reports that a call into the instance panicked: it will be recreated.
    pub fn report_failure(&self, message: &str) {
        self.set(HealthState::FAILED.name(), message, Some(message));
        self.failed.notify_one();
    }

    fn set(&self, state: &str, message: &str, error: Option<&str>) {
        let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        s.state = state.to_owned();
        s.message = message.to_owned();
        if let Some(e) = error {
            s.last_error = Some(e.to_owned());
        }
    }

    /// Has the plugin check this instance's config: creates the instance (without starting
    /// it, and with a host handle that refuses submits) and drops it.
    pub fn check_config(self: &Arc<Self>) -> Result<(), PluginError> {
        self.create(None).map(drop)
    }

    /// Creates the instance through its plugin (without starting it).
    fn create(self: &Arc<Self>, ingest: Option<Arc<Ingest>>) -> Result<Live, PluginError> {
        let c = &self.config;
        let host = HostHandle::boxed(&c.name, ingest);
        let m = &self.plugin.module;
        let (kind, name, text) = (
            c.plugin.as_str().into(),
            c.name.as_str().into(),
            c.config_toml.as_str().into(),
        );
        let live = if self.role == Role::SOURCE {
            (m.create_source())(kind, name, text, host)
                .into_result()
                .map(|s| Live::Source(SourceHandle::new(Arc::new(s))))
        } else {
            (m.create_sink())(kind, name, text, host)
                .into_result()
                .map(|s| {
                    let slot = Arc::downgrade(self);
                    let on_panic = Box::new(move |sink: &Weak<SinkBox>, message: &str| {
                        if let Some(slot) = slot.upgrade() {
                            slot.report_failure_of(sink, message);
                        }
                    });
                    Live::Sink(SinkHandle::new(&c.name, Arc::new(s), on_panic))
                })
        };
        live.map_err(PluginError::from)
    }

    /// Keeps the instance running until `shutdown`, recreating it with backoff when it fails.
    pub async fn supervise(
        self: Arc<Self>,
        ingest: Arc<Ingest>,
        metrics: Arc<Metrics>,
        stop_deadline: Duration,
    ) {
        let shutdown = self.stop.clone();
        let name = self.config.name.clone();
        let mut failures: u32 = 0;
        loop {
            let started = self
                .create(Some(Arc::clone(&ingest)))
                .and_then(|live| live.start().map(|()| live));
            let live = match started {
                Ok(live) => live,
                Err(e) => {
                    let what = if e.kind == ErrorKind::CONFIG {
                        "Instance config refused"
                    } else {
                        "Instance failed to start"
                    };
                    tracing::error!(instance = %name, kind = %e.kind, error = %e.message, "{what}.");
                    self.set(HealthState::FAILED.name(), &e.message, Some(&e.message));
                    metrics.set_instance_up(&name, false);
                    failures += 1;
                    if sleep_or_stop(backoff(failures), &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            *self.live.write().unwrap_or_else(PoisonError::into_inner) = Some(live.clone());
            self.up.notify_waiters();
            let up_since = Instant::now();
            tracing::info!(instance = %name, role = %self.role, plugin = %self.config.plugin, "Instance started.");
            let stopping = loop {
                let h = live.health();
                let up = h.state == HealthState::OK
                    || h.state == HealthState::DEGRADED
                    || h.state == HealthState::STARTING;
                self.set(
                    h.state.name(),
                    &h.message,
                    (h.state == HealthState::FAILED).then_some(h.message.as_str()),
                );
                metrics.set_instance_up(&name, up);
                if h.state == HealthState::FAILED || h.state == HealthState::STOPPED {
                    tracing::error!(instance = %name, reason = %h.message, "Instance failed; recreating it.");
                    break false;
                }
                tokio::select! {
                    () = shutdown.cancelled() => break true,
                    () = self.failed.notified() => {
                        tracing::error!(instance = %name, "Instance panicked; recreating it.");
                        break false;
                    }
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            };
            *self.live.write().unwrap_or_else(PoisonError::into_inner) = None;
            metrics.set_instance_up(&name, false);
            live.stop(stop_deadline).await;
            if stopping {
                self.set(HealthState::STOPPED.name(), "", None);
                return;
            }
            failures = if up_since.elapsed() > Duration::from_secs(60) {
                1
            } else {
                failures + 1
            };
            metrics.restart(&name);
            self.status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .restarts += 1;
            if sleep_or_stop(backoff(failures), &shutdown).await {
                return;
            }
        }
    }
}

/// The wait before restarting a failed instance: 0.5 s, 1 s, 2 s … up to 60 s, with up to 25 %
/// jitter.
const RESTART_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(500), Duration::from_secs(60)).jitter(0.25);

/// The wait after `failures` consecutive failures ([`RESTART_BACKOFF`]).
pub fn backoff(failures: u32) -> Duration {
    RESTART_BACKOFF.delay(failures)
}

/// Sleeps, returning true if shutdown came first.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// A configured instance whose kind no loaded plugin provides.
#[derive(Clone, Debug, thiserror::Error)]
#[error("no loaded plugin provides {role} kind `{}` (available: {})", .instance.plugin, shown(.available))]
pub struct BindError {
    pub instance: InstanceConfig,
    pub role: Role,
    /// The kinds of that role the loaded plugins do provide.
    pub available: Vec<String>,
}

fn shown(kinds: &[String]) -> String {
    if kinds.is_empty() {
        "none".to_owned()
    } else {
        kinds.join(", ")
    }
}

/// Binds each configured instance to the plugin that provides it; the errors name what is
/// missing.
pub fn bind(
    sources: &[InstanceConfig],
    sinks: &[InstanceConfig],
    plugins: &Plugins,
) -> Result<Vec<Arc<Slot>>, Vec<BindError>> {
    let mut errors = Vec::new();
    let mut slots = Vec::new();
    for (list, role) in [(sources, Role::SOURCE), (sinks, Role::SINK)] {
        for c in list {
            match plugins.find(&c.plugin, role) {
                Some(p) => slots.push(Arc::new(Slot::new(c.clone(), role, p.clone()))),
                None => errors.push(BindError {
                    instance: c.clone(),
                    role,
                    available: plugins.kinds(role),
                }),
            }
        }
    }
    if errors.is_empty() {
        Ok(slots)
    } else {
        Err(errors)
    }
}

/// The instances currently configured; a reload replaces the set.
#[derive(Default)]
pub struct Registry {
    slots: RwLock<Vec<Arc<Slot>>>,
}

impl Registry {
    pub fn all(&self) -> Vec<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn sink(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|s| s.role == Role::SINK && s.config.name == name)
            .cloned()
    }

    pub fn set(&self, slots: Vec<Arc<Slot>>) {
        *self.slots.write().unwrap_or_else(PoisonError::into_inner) = slots;
    }
}

impl Sinks for Registry {
    fn lookup<'a>(&'a self, name: &'a str, wait: Duration) -> BoxFuture<'a, SinkLookup> {
        Box::pin(async move {
            let Some(slot) = self.sink(name) else {
                return SinkLookup::Unknown;
            };
            match slot.sink_within(wait).await {
                Some(handle) => SinkLookup::Running(Arc::new(handle)),
                None => SinkLookup::NotRunning,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_grows_and_caps() {
        assert!(
            backoff(1) >= Duration::from_millis(500) && backoff(1) <= Duration::from_millis(625)
        );
        assert!(backoff(3) >= Duration::from_secs(2));
        assert!(backoff(30) <= Duration::from_secs(75));
    }
}
