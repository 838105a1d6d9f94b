//! The runtime of one instance and the adapters that present a plugin's `Source` or `Sink` to
//! the host as `SourceFfi` / `SinkFfi`.
//!
//! Each instance owns a tokio runtime on its own named threads, created by `start` and shut
//! down by `stop`. Its long-running `run` task is watched: an error or a panic there turns the
//! instance's health to `FAILED`, which the host answers by recreating it.

use std::{
    sync::{Arc, Mutex, PoisonError, mpsc},
    time::{Duration, Instant},
};

use abi_stable::std_types::{RResult, RStr, RString, RVec};
use async_ffi::FfiFuture;
use tokio::runtime::{Handle, Runtime};
use tokio_util::sync::CancellationToken;

use super::{
    Host, Sink, Source, SourceContext,
    call::{from_pairs, to_pairs},
    guard, listen, log,
};
use crate::{
    ErrorKind, FfiError, FfiHealth, FfiMessage, FfiPairs, FfiPresence, FfiRecipientResult, Health,
    HealthState, Message, PluginError,
    abi::{SinkFfi, SourceFfi},
};

/// What became of the `run` task.
#[derive(Clone)]
enum RunState {
    NotStarted,
    Running,
    Failed(String),
    Stopped,
}

struct Running {
    runtime: Runtime,
    shutdown: CancellationToken,
    done: mpsc::Receiver<()>,
}

/// The parts every instance shares: name, host, runtime and run-task state.
struct Core {
    host: Host,
    worker_threads: usize,
    running: Mutex<Option<Running>>,
    state: Arc<Mutex<RunState>>,
}

impl Core {
    fn new(host: Host, worker_threads: usize) -> Self {
        Self {
            host,
            worker_threads: worker_threads.max(1),
            running: Mutex::new(None),
            state: Arc::new(Mutex::new(RunState::NotStarted)),
        }
    }

    fn entry<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> RResult<T, FfiError>,
    ) -> RResult<T, FfiError> {
        log::with_host(self.host.raw(), || guard::guard(what, f))
    }

    /// Builds the runtime and spawns `run`; a second start while running is a no-op.
    fn start<F, Fut>(&self, run: F) -> Result<(), PluginError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), PluginError>> + Send + 'static,
    {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.is_some() {
            return Ok(());
        }
        let thread_host = self.host.raw().clone();
        let name: String = format!("ab-{}", self.host.instance())
            .chars()
            .take(15)
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads)
            .thread_name(name)
            .on_thread_start(move || log::set_thread_host(thread_host.clone()))
            .enable_all()
            .build()
            .map_err(|e| PluginError::transient(&e))?;
        let shutdown = CancellationToken::new();
        let (done_tx, done) = mpsc::sync_channel(1);
        let state = Arc::clone(&self.state);
        *state.lock().unwrap_or_else(PoisonError::into_inner) = RunState::Running;
        let task = runtime.spawn(run(shutdown.clone()));
        let token = shutdown.clone();
        runtime.spawn(async move {
            let outcome = match task.await {
                Ok(Ok(())) if token.is_cancelled() => RunState::Stopped,
                Ok(Ok(())) => RunState::Failed("run ended on its own".into()),
                Ok(Err(e)) => {
                    tracing::error!(kind = %e.kind, error = %e.message, "Instance failed.");
                    RunState::Failed(e.message)
                }
                Err(e) if e.is_panic() => {
                    RunState::Failed(guard::panicked("run", e.into_panic().as_ref()).message)
                }
                Err(_) => RunState::Stopped,
            };
            *state.lock().unwrap_or_else(PoisonError::into_inner) = outcome;
            let _ = done_tx.send(());
        });
        *running = Some(Running {
            runtime,
            shutdown,
            done,
        });
        Ok(())
    }

    /// Cancels `run`, waits for it until the deadline, then shuts the runtime down.
    fn stop(&self, deadline: Duration) {
        let Some(running) = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let until = Instant::now() + deadline;
        running.shutdown.cancel();
        if running.done.recv_timeout(deadline).is_err() {
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "Instance did not stop in time; aborting its tasks."
            );
        }
        running
            .runtime
            .shutdown_timeout(until.saturating_duration_since(Instant::now()));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, RunState::Running) {
            *state = RunState::Stopped;
        }
    }

    fn handle(&self) -> Option<Handle> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.runtime.handle().clone())
    }

    fn health(&self, live: impl FnOnce() -> Health) -> FfiHealth {
        let state = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let health = match state {
            RunState::NotStarted => Health::new(HealthState::STARTING, "not started"),
            RunState::Running => live(),
            RunState::Failed(message) => Health::new(HealthState::FAILED, message),
            RunState::Stopped => Health::new(HealthState::STOPPED, ""),
        };
        FfiHealth::from(&health)
    }
}

fn not_running(what: &str) -> PluginError {
    PluginError::new(
        ErrorKind::SHUTTING_DOWN,
        format!("{what}: instance is not running"),
    )
}

/// Presents a plugin's [`Source`] to the host.
pub(crate) struct SourceAdapter<T: Source> {
    inner: Arc<T>,
    core: Core,
}

impl<T: Source> SourceAdapter<T> {
    pub(crate) fn new(inner: T, host: Host) -> Self {
        Self {
            inner: Arc::new(inner),
            core: Core::new(host, T::WORKER_THREADS),
        }
    }
}

impl<T: Source> SourceFfi for SourceAdapter<T> {
    fn start(&self) -> RResult<(), FfiError> {
        self.core.entry("start", || {
            let inner = Arc::clone(&self.inner);
            let host = self.core.host.clone();
            self.core
                .start(move |shutdown| inner.run(SourceContext { host, shutdown }))
                .map_err(FfiError::from)
                .into()
        })
    }

    fn health(&self) -> FfiHealth {
        let r = self.core.entry("health", || {
            RResult::ROk(self.core.health(|| self.inner.health()))
        });
        r.unwrap_or_else(|e| FfiHealth {
            state: HealthState::FAILED,
            message: e.message,
            attributes: Default::default(),
        })
    }

    fn stop(&self, deadline_ms: u64) -> RResult<(), FfiError> {
        self.core.entry("stop", || {
            self.core.stop(Duration::from_millis(deadline_ms));
            RResult::ROk(())
        })
    }

    fn call(&self, name: RStr<'_>, args: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
        let Some(handle) = self.core.handle() else {
            return guard::ready_err(not_running("call"));
        };
        let inner = Arc::clone(&self.inner);
        let (name, args) = (name.to_string(), from_pairs(&args));
        guard::spawn_ffi(&handle, "call", async move {
            let answer = inner.call(&name, args).await?;
            Ok(to_pairs(&answer))
        })
    }
}

/// Presents a plugin's [`Sink`] to the host.
pub(crate) struct SinkAdapter<T: Sink> {
    inner: Arc<T>,
    core: Core,
}

impl<T: Sink> SinkAdapter<T> {
    pub(crate) fn new(inner: T, host: Host) -> Self {
        Self {
            inner: Arc::new(inner),
            core: Core::new(host, T::WORKER_THREADS),
        }
    }
}

impl<T: Sink> SinkFfi for SinkAdapter<T> {
    fn start(&self) -> RResult<(), FfiError> {
        self.core.entry("start", || {
            let inner = Arc::clone(&self.inner);
            self.core
                .start(move |shutdown| inner.run(shutdown))
                .map_err(FfiError::from)
                .into()
        })
    }

    fn presence(&self, users: RVec<RString>) -> FfiFuture<RResult<RVec<FfiPresence>, FfiError>> {
        let Some(handle) = self.core.handle() else {
            return guard::ready_err(not_running("presence"));
        };
        let inner = Arc::clone(&self.inner);
        let users = users.into_iter().map(RString::into_string).collect();
        guard::spawn_ffi(&handle, "presence", async move {
            let found = inner.presence(users).await?;
            Ok(found.iter().map(FfiPresence::from).collect())
        })
    }

    fn deliver(
        &self,
        message: FfiMessage,
    ) -> FfiFuture<RResult<RVec<FfiRecipientResult>, FfiError>> {
        let Some(handle) = self.core.handle() else {
            return guard::ready_err(not_running("deliver"));
        };
        let inner = Arc::clone(&self.inner);
        let message = Message::from(&message);
        guard::spawn_ffi(&handle, "deliver", async move {
            let results = inner.deliver(message).await?;
            Ok(results.iter().map(FfiRecipientResult::from).collect())
        })
    }

    fn health(&self) -> FfiHealth {
        let r = self.core.entry("health", || {
            RResult::ROk(self.core.health(|| self.inner.health()))
        });
        r.unwrap_or_else(|e| FfiHealth {
            state: HealthState::FAILED,
            message: e.message,
            attributes: Default::default(),
        })
    }

    fn stop(&self, deadline_ms: u64) -> RResult<(), FfiError> {
        self.core.entry("stop", || {
            self.core.stop(Duration::from_millis(deadline_ms));
            RResult::ROk(())
        })
    }

    fn call(&self, name: RStr<'_>, args: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
        let Some(handle) = self.core.handle() else {
            return guard::ready_err(not_running("call"));
        };
        let inner = Arc::clone(&self.inner);
        let (name, args) = (name.to_string(), from_pairs(&args));
        guard::spawn_ffi(&handle, "call", async move {
            let answer = listen::sink_call(inner.as_ref(), &name, args).await?;
            Ok(to_pairs(&answer))
        })
    }
}

impl<T: Source> Drop for SourceAdapter<T> {
    fn drop(&mut self) {
        self.core.stop(Duration::from_secs(1));
    }
}

impl<T: Sink> Drop for SinkAdapter<T> {
    fn drop(&mut self) {
        self.core.stop(Duration::from_secs(1));
    }
}
