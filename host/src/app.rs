//! A running bridge: the queue, the incident engine, the dispatcher, every instance under
//! supervision and the admin server — started in that order, stopped in the reverse one, and
//! reloaded in place.
//!
//! Incidents: the engine keeps `data_dir/incidents.redb` and pages through the queue
//! ([`QueuePager`]); the dispatcher hands it the alerts of escalation routes and tells it how
//! pages went; ingest hands it resolved alerts and repeats; the reply service answers the
//! sinks' `inbound.message/1`; a watcher tells those paged of changes made elsewhere.

use std::sync::{Arc, atomic::Ordering};

use alertbridge_plugin_api::Role;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, AdminState},
    config::{Config, ConfigError, HostSettings, QueueBackend},
    dispatch::{Depth, Dispatcher, Plan},
    incidents::{
        Clock, Engine, EnginePort, EscalationPolicy, IncidentError, IncidentStore, PgIncidents,
        QueuePager, RedbIncidents,
        reply::Replies,
        reply_metrics::feed_metrics,
        reply_send::{ReplyService, tell_changes_via},
    },
    ingest::Ingest,
    metrics::Metrics,
    plugins::{self, Plugins, Registry, SinkSpeaker, Slot, host_api::set_inbound_port},
    queue::{Queue, QueueError},
    reload::{ReloadError, ReloadRequest, Reloaded},
    silences::{self, PgSilences, RedbSilences, SilenceError, SilenceStore, Silences},
};

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot open the silences")]
    Silences(#[from] SilenceError),
    #[error("cannot open the incidents")]
    Incidents(#[from] IncidentError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Instances(Vec<ConfigError>),
    #[error(
        "admin_listen {0} is not a loopback address and no admin token is set (admin_token_file or admin_token_env)"
    )]
    AdminWithoutToken(std::net::SocketAddr),
    #[error("cannot listen on {addr} for the admin HTTP server")]
    Admin {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct Running {
    slot: Arc<Slot>,
    task: JoinHandle<()>,
}

/// The running bridge.
pub struct Bridge {
    settings: HostSettings,
    pub metrics: Arc<Metrics>,
    pub queue: Arc<dyn Queue>,
    pub admin_addr: Option<std::net::SocketAddr>,
    ingest: Arc<Ingest>,
    dispatcher: Arc<Dispatcher>,
    registry: Arc<Registry>,
    running: Vec<Running>,
    admin_stop: CancellationToken,
    /// The admin token and host names in force, swapped on reload.
    admin_access: Option<admin::SharedAccess>,
    background: Vec<JoinHandle<()>>,
    /// The incident engine and the replies' view of who may act.
    engine: Engine,
    replies: Arc<Replies>,
    /// Stops the engine's timer and its watchers (before the deliveries drain).
    incidents_stop: CancellationToken,
}

impl Bridge {
    /// Opens the queue, resumes unfinished alerts and starts every instance. Reload requests
    /// from the admin API arrive on the returned receiver.
    pub async fn start(
        config: Config,
        plugins: &Plugins,
    ) -> Result<(Self, mpsc::Receiver<ReloadRequest>), StartError> {
        let h = config.host.clone();
        let slots = plugins::bind(&config.sources, &config.sinks, plugins).map_err(|errors| {
            StartError::Instances(
                errors
                    .iter()
                    .map(|e| config.locate_plugin_error(&e.instance, None, &e.to_string()))
                    .collect(),
            )
        })?;
        let metrics = Arc::new(Metrics::default());
        let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
        let depth = Arc::new(Depth::new(h.max_queue_depth, config.queue_shares()));
        // `[queue]`: the embedded file in data_dir, or PostgreSQL shared with other hosts.
        let queue: Arc<dyn Queue> = config.queue.open(
            &h,
            Arc::clone(&metrics),
            Ingest::on_commit(Arc::clone(&metrics), Arc::clone(&depth), accepted_tx),
        )?;
        let ingest = Arc::new(Ingest {
            queue: Arc::clone(&queue),
            metrics: Arc::clone(&metrics),
            settings: h.clone(),
            stopping: false.into(),
            depth: Arc::clone(&depth),
            incidents: std::sync::OnceLock::new(),
        });
        // Incidents (data_dir/incidents.redb, or shared in PostgreSQL with the queue).
        let incident_store: Arc<dyn IncidentStore> = match &config.queue {
            QueueBackend::Postgres(pg) => Arc::new(PgIncidents::open(&pg.url).await?),
            QueueBackend::Redb | QueueBackend::Log => Arc::new(RedbIncidents::open(&h.data_dir)?),
        };
        let engine = Engine::open(
            incident_store,
            Arc::new(QueuePager::new(Arc::clone(&queue))),
            policies(&config),
            Clock::system(),
        )?;
        let responders = config.incidents.responder_users(&config.router.groups);
        // Resumed alerts must find their sinks (maybe still starting) from their first round.
        let registry = Arc::new(Registry::default());
        registry.set(slots.clone());
        let routes = config.router.routes.len();
        let plan = Plan {
            router: config.router,
            settings: config.delivery,
            escalations: config.route_escalations,
        };
        let dispatcher = Dispatcher::new(
            Arc::clone(&queue),
            Arc::clone(&metrics),
            plan,
            // The registry is the dispatcher's directory of sinks (`dispatch::port::Sinks`).
            Arc::<Registry>::clone(&registry),
            depth,
        );
        let port = Arc::new(EnginePort::new(engine.clone()));
        dispatcher.set_incidents(Arc::clone(&port) as _);
        let _ = ingest.incidents.set(port);
        let replies = Arc::new(Replies::new(engine.clone(), responders));
        let service = Arc::new(ReplyService::new(
            Arc::clone(&replies),
            Arc::new(SinkSpeaker(Arc::clone(&registry))),
        ));
        set_inbound_port(Some(Arc::clone(&service) as _));
        // Silences (data_dir/silences.redb, or shared in PostgreSQL with the queue): checked
        // at the start of every alert's round.
        let store: Arc<dyn SilenceStore> = match &config.queue {
            QueueBackend::Postgres(pg) => Arc::new(PgSilences::open(pg.url.clone())?),
            QueueBackend::Redb | QueueBackend::Log => Arc::new(RedbSilences::open(&h.data_dir)?),
        };
        let silences = Arc::new(Silences::open(store)?);
        dispatcher.set_silences(Arc::clone(&silences));
        // `silence 2h` replies make silences like the incident's alert.
        let recheck = Arc::clone(&dispatcher);
        replies.set_silencer(Arc::new(silences::like::QueueSilenceLike {
            silences: Arc::clone(&silences),
            queue: Arc::clone(&queue),
            created: Box::new(move || recheck.recheck_all()),
        }));
        let unfinished = queue.unfinished()?;
        let mut background = Vec::new();
        let admin_stop = CancellationToken::new();
        let (reload_tx, reload_rx) = mpsc::channel(4);
        let mut admin_addr = None;
        let mut admin_access = None;
        if let Some(addr) = h.admin_listen {
            if !crate::config::admin::is_loopback(&addr) && h.admin.token.is_none() {
                return Err(StartError::AdminWithoutToken(addr));
            }
            let access = admin::shared_access(&h.admin);
            admin_access = Some(Arc::clone(&access));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Admin { addr, source })?;
            admin_addr = listener.local_addr().ok();
            let state = Arc::new(AdminState {
                queue: Arc::clone(&queue),
                metrics: Arc::clone(&metrics),
                instances: Arc::clone(&registry),
                dispatcher: Arc::clone(&dispatcher),
                ingest: Arc::clone(&ingest),
                reload: reload_tx,
                settings: h.admin.clone(),
                access,
                silences: Some(Arc::clone(&silences)),
                incidents: Some(engine.clone()),
            });
            background.push(tokio::spawn(admin::serve(
                listener,
                state,
                admin_stop.clone(),
            )));
        }
        background.push(tokio::spawn(
            Arc::clone(&dispatcher).run(unfinished, accepted_rx),
        ));
        background.push(tokio::spawn(silences.prune_every(silences::PRUNE_EVERY)));
        // The timer first hands pages left unhanded and fires the steps that fell due while
        // the bridge was down.
        let incidents_stop = CancellationToken::new();
        background.push(tokio::spawn(engine.clone().run(incidents_stop.clone())));
        background.push(tokio::spawn(feed_metrics(
            engine.clone(),
            Arc::clone(&metrics),
            incidents_stop.clone(),
        )));
        let plans = Arc::clone(&dispatcher);
        background.push(tokio::spawn(tell_changes_via(
            service,
            Arc::new(move |route: &str| {
                let plan = plans.plan();
                plan.router
                    .route(route)
                    .and_then(|r| r.sinks.first().cloned())
            }),
            incidents_stop.clone(),
        )));

        let mut bridge = Self {
            settings: h,
            metrics,
            queue,
            admin_addr,
            ingest,
            dispatcher,
            registry,
            running: Vec::new(),
            admin_stop,
            admin_access,
            background,
            engine,
            replies,
            incidents_stop,
        };
        // Sinks first, so the first alerts find them.
        for slot in slots
            .iter()
            .filter(|s| s.role == Role::SINK)
            .chain(slots.iter().filter(|s| s.role == Role::SOURCE))
        {
            bridge.launch(Arc::clone(slot));
        }
        tracing::info!(
            instances = bridge.running.len(),
            routes,
            "alertbridge started."
        );
        Ok((bridge, reload_rx))
    }

    fn launch(&mut self, slot: Arc<Slot>) {
        let task = tokio::spawn(Arc::clone(&slot).supervise(
            Arc::clone(&self.ingest),
            Arc::clone(&self.metrics),
            self.settings.stop_deadline,
        ));
        self.running.push(Running { slot, task });
    }

    /// Stops the given instances for good and waits for them.
    async fn retire(running: Vec<Running>) {
        for r in &running {
            r.slot.stop.cancel();
        }
        for r in running {
            let _ = r.task.await;
        }
    }

    fn take(&mut self, pick: impl Fn(&Slot) -> bool) -> Vec<Running> {
        let (taken, kept) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| pick(&r.slot));
        self.running = kept;
        taken
    }

    /// Applies a changed config: routes, groups and delivery settings at once; instances added,
    /// removed or changed are started or stopped; unchanged ones keep running. Queued alerts are
    /// neither lost nor sent twice. A config that cannot be applied is refused whole, with
    /// every reason, and the running one stays.
    pub async fn reload(
        &mut self,
        config: Config,
        plugins: &Plugins,
    ) -> Result<Reloaded, Vec<ReloadError>> {
        let h = &config.host;
        let mut errors = Vec::new();
        for (what, same) in [
            ("data_dir", h.data_dir == self.settings.data_dir),
            ("admin_listen", h.admin_listen == self.settings.admin_listen),
            ("plugin_dir", h.plugin_dir == self.settings.plugin_dir),
            (
                "dedup_window_secs, dedup_max_keys or history_max_alerts",
                (h.dedup_window, h.dedup_max_keys, h.history_max_alerts)
                    == (
                        self.settings.dedup_window,
                        self.settings.dedup_max_keys,
                        self.settings.history_max_alerts,
                    ),
            ),
            (
                "admin_max_connections, admin_read_timeout_ms or admin_idle_timeout_ms",
                h.admin.same_limits(&self.settings.admin),
            ),
        ] {
            if !same {
                errors.push(ReloadError::NeedsRestart(what));
            }
        }
        let slots = match plugins::bind(&config.sources, &config.sinks, plugins) {
            Ok(s) => s,
            Err(e) => {
                errors.extend(e.iter().map(|e| {
                    ReloadError::from(config.locate_plugin_error(&e.instance, None, &e.to_string()))
                }));
                vec![]
            }
        };
        // Have each new or changed instance's plugin check its config before anything changes.
        let current = self.registry.all();
        for slot in slots
            .iter()
            .filter(|s| !current.iter().any(|c| c.same_as(s)))
        {
            if let Err(e) = slot.check_config() {
                errors.push(
                    config
                        .locate_plugin_error(&slot.config, e.key.as_deref(), &e.message)
                        .into(),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut out = Reloaded {
            routes: config.router.routes.len(),
            ..Reloaded::default()
        };
        let mut next: Vec<Arc<Slot>> = Vec::new();
        for slot in slots {
            match current.iter().find(|c| c.same_as(&slot)) {
                Some(kept) => {
                    out.kept.push(kept.config.name.clone());
                    next.push(Arc::clone(kept));
                }
                None => {
                    if current.iter().any(|c| c.config.name == slot.config.name) {
                        out.changed.push(slot.config.name.clone());
                    } else {
                        out.added.push(slot.config.name.clone());
                    }
                    next.push(slot);
                }
            }
        }
        out.removed = current
            .iter()
            .filter(|c| !next.iter().any(|n| n.config.name == c.config.name))
            .map(|c| c.config.name.clone())
            .collect();

        // Old incarnations of changed instances and removed ones stop first (sources finish
        // their in-flight submits); then the new ones start and the new plan takes over.
        let old = self.take(|s| !next.iter().any(|n| std::ptr::eq(n.as_ref(), s)));
        Self::retire(old).await;
        self.ingest
            .depth
            .set_limits(config.host.max_queue_depth, config.queue_shares());
        self.engine.set_policies(policies(&config));
        self.replies
            .set_responders(config.incidents.responder_users(&config.router.groups));
        self.dispatcher.set_plan(Plan {
            router: config.router,
            settings: config.delivery,
            escalations: config.route_escalations,
        });
        for slot in next
            .iter()
            .filter(|s| !self.running.iter().any(|r| Arc::ptr_eq(&r.slot, s)))
            .cloned()
            .collect::<Vec<_>>()
        {
            self.launch(slot);
        }
        self.registry.set(next);
        if let Some(access) = &self.admin_access {
            admin::swap_access(access, &config.host.admin);
        }
        self.settings.admin = config.host.admin.clone();
        tracing::info!(added = ?out.added, removed = ?out.removed, changed = ?out.changed, routes = out.routes, "Config reloaded.");
        Ok(out)
    }

    /// Stops sources (they finish in-flight submits), drains deliveries within the deadline,
    /// then stops sinks. What is not delivered stays queued.
    pub async fn stop(mut self) {
        let deadline = self.settings.stop_deadline;
        tracing::info!(
            deadline_ms = deadline.as_millis() as u64,
            "Stopping: sources first, then deliveries, then sinks."
        );
        let sources = self.take(|s| s.role == Role::SOURCE);
        Self::retire(sources).await;
        self.ingest.stopping.store(true, Ordering::Relaxed);
        // No new pages while deliveries drain; what falls due meanwhile fires after a start.
        self.incidents_stop.cancel();
        self.dispatcher.drain(deadline).await;
        let sinks = std::mem::take(&mut self.running);
        set_inbound_port(None);
        Self::retire(sinks).await;
        // Plugins may keep their host handle (and so the queue) alive: close the file now.
        self.queue.close();
        self.admin_stop.cancel();
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
        tracing::info!(queued = self.metrics.queue_depth(), "Stopped.");
    }
}

/// The escalation policies as the engine takes them: each level's groups' members among its
/// users, so a page records everyone it reaches.
fn policies(config: &Config) -> Vec<EscalationPolicy> {
    config
        .escalations
        .iter()
        .map(|p| p.with_members(&config.router.groups))
        .collect()
}
