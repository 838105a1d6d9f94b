//! A running bridge: the queue, the dispatcher, every instance under supervision and the admin
//! server, started in that order and stopped in the reverse one.

use std::sync::{Arc, atomic::Ordering};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, AdminState},
    config::{Config, ConfigError},
    dispatch::Dispatcher,
    host_api::Ingest,
    instances::Instances,
    loader::Plugins,
    metrics::Metrics,
    queue::{Queue, QueueError, RedbQueue},
};

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Instances(Vec<ConfigError>),
    #[error("cannot listen on {addr} for the admin HTTP server")]
    Admin {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The running bridge.
pub struct Bridge {
    config: Config,
    pub metrics: Arc<Metrics>,
    pub queue: Arc<dyn Queue>,
    pub admin_addr: Option<std::net::SocketAddr>,
    ingest: Arc<Ingest>,
    dispatcher: Arc<Dispatcher>,
    sources_stop: CancellationToken,
    sinks_stop: CancellationToken,
    admin_stop: CancellationToken,
    sources: JoinSet<()>,
    sinks: JoinSet<()>,
    background: JoinSet<()>,
}

impl Bridge {
    /// Opens the queue, resumes unfinished alerts and starts every instance.
    pub async fn start(config: Config, plugins: &Plugins) -> Result<Self, StartError> {
        let h = &config.host;
        let instances = Instances::bind(&config.sources, &config.sinks, plugins).map_err(|errors| {
            StartError::Instances(errors.iter().map(|(inst, msg)| config.locate_plugin_error(inst, msg)).collect())
        })?;
        let instances = Arc::new(instances);
        let queue: Arc<dyn Queue> = Arc::new(RedbQueue::open(&h.data_dir, h.dedup_window, h.history_max_alerts)?);
        let metrics = Arc::new(Metrics::default());
        let (accepted_tx, accepted_rx) = tokio::sync::mpsc::unbounded_channel();
        let ingest = Arc::new(Ingest {
            queue: Arc::clone(&queue),
            metrics: Arc::clone(&metrics),
            settings: h.clone(),
            accepted: accepted_tx,
            runtime: tokio::runtime::Handle::current(),
            stopping: false.into(),
        });
        let dispatcher = Dispatcher::new(Arc::clone(&queue), Arc::clone(&metrics), config.delivery.clone(), config.router.clone(), Arc::clone(&instances));
        let unfinished = queue.unfinished()?;
        let mut background = JoinSet::new();
        let admin_stop = CancellationToken::new();
        let mut admin_addr = None;
        if let Some(addr) = h.admin_listen {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Admin { addr, source })?;
            admin_addr = listener.local_addr().ok();
            let state = Arc::new(AdminState { queue: Arc::clone(&queue), metrics: Arc::clone(&metrics), instances: Arc::clone(&instances) });
            background.spawn(admin::serve(listener, state, admin_stop.clone()));
        }
        background.spawn(Arc::clone(&dispatcher).run(unfinished, accepted_rx));

        let (sources_stop, sinks_stop) = (CancellationToken::new(), CancellationToken::new());
        let mut sinks = JoinSet::new();
        for slot in &instances.sinks {
            sinks.spawn(Arc::clone(slot).supervise(Arc::clone(&ingest), Arc::clone(&metrics), sinks_stop.clone(), h.stop_deadline));
        }
        let mut sources = JoinSet::new();
        for slot in &instances.sources {
            sources.spawn(Arc::clone(slot).supervise(Arc::clone(&ingest), Arc::clone(&metrics), sources_stop.clone(), h.stop_deadline));
        }
        tracing::info!(sources = instances.sources.len(), sinks = instances.sinks.len(), routes = config.router.routes.len(), "alertbridge started.");
        Ok(Self { config, metrics, queue, admin_addr, ingest, dispatcher, sources_stop, sinks_stop, admin_stop, sources, sinks, background })
    }

    /// Stops sources (they finish in-flight submits), drains deliveries within the deadline,
    /// then stops sinks. What is not delivered stays queued.
    pub async fn stop(mut self) {
        let deadline = self.config.host.stop_deadline;
        tracing::info!(deadline_ms = deadline.as_millis() as u64, "Stopping: sources first, then deliveries, then sinks.");
        self.sources_stop.cancel();
        while self.sources.join_next().await.is_some() {}
        self.ingest.stopping.store(true, Ordering::Relaxed);
        self.dispatcher.drain(deadline).await;
        self.sinks_stop.cancel();
        while self.sinks.join_next().await.is_some() {}
        self.admin_stop.cancel();
        self.background.abort_all();
        while self.background.join_next().await.is_some() {}
        tracing::info!(queued = self.metrics.queue_depth(), "Stopped.");
    }
}
