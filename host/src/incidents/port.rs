//! [`EnginePort`]: the [`Engine`] as the dispatcher and ingest reach it
//! ([`crate::dispatch::IncidentPort`]): alerts of escalation routes open or join incidents,
//! page outcomes come back (the conversation each person was reached in, how many got it),
//! resolved alerts and repeats find their incident by dedup key.

use super::{
    Engine, IncidentError, Page,
    pager::{ROUTE_LABEL, SOURCE},
};
use crate::{
    dispatch::{IncidentFault, IncidentPort, port::BoxFuture},
    model::StoredAlert,
};

/// The engine behind [`IncidentPort`].
pub struct EnginePort {
    engine: Engine,
    /// The host's runtime: ingest's futures may be polled by a plugin's thread (a source
    /// awaiting its receipt), where no host runtime runs, so their work is spawned here.
    rt: tokio::runtime::Handle,
}

impl EnginePort {
    /// Must be called within the host's tokio runtime.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// Runs `job` on the host's runtime; the returned future only waits for its end.
    fn on_host<T: Send + 'static>(
        &self,
        job: impl std::future::Future<Output = Result<T, IncidentError>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, IncidentFault>> {
        let handle = self.rt.spawn(job);
        Box::pin(async move {
            match handle.await {
                Ok(r) => r.map_err(fault),
                Err(e) => Err(IncidentFault::Unavailable(Box::new(e))),
            }
        })
    }
}

fn fault(e: IncidentError) -> IncidentFault {
    match e {
        IncidentError::UnknownPolicy(_) => IncidentFault::Refused(e.to_string()),
        e => IncidentFault::Unavailable(Box::new(e)),
    }
}

/// The incident and page number of a page alert.
fn page_of(page: &StoredAlert) -> Option<(super::IncidentId, u32)> {
    (page.source == SOURCE)
        .then(|| page.alert.dedup_key.as_deref().and_then(Page::parse_key))
        .flatten()
}

impl IncidentPort for EnginePort {
    fn open<'a>(
        &'a self,
        alert: &'a StoredAlert,
        route: &'a str,
        policy: &'a str,
        pass_unreachable: bool,
    ) -> BoxFuture<'a, Result<(u64, bool), IncidentFault>> {
        Box::pin(async move {
            self.engine
                .take_alert(
                    alert.id,
                    alert.accepted_ms,
                    &alert.source,
                    &alert.alert,
                    route,
                    policy,
                    pass_unreachable,
                )
                .await
                .map(|o| (o.id.0, o.joined))
                .map_err(fault)
        })
    }

    fn page_route(&self, alert: &StoredAlert) -> Option<String> {
        (alert.source == SOURCE)
            .then(|| alert.alert.labels.get(ROUTE_LABEL).cloned())
            .flatten()
    }

    fn page_conversation<'a>(
        &'a self,
        page: &'a StoredAlert,
        user: &'a str,
        sink: &'a str,
        conversation: Option<&'a str>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some((id, _)) = page_of(page) else { return };
            if let Err(e) = self.engine.set_reached(id, user, sink, conversation).await {
                tracing::warn!(incident = id.0, user, error = %crate::error_chain(&e), "The page's conversation is not remembered.");
            }
        })
    }

    fn page_finished<'a>(&'a self, page: &'a StoredAlert, delivered: usize) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some((id, seq)) = page_of(page) else {
                return;
            };
            if let Err(e) = self.engine.page_reached(id, seq, delivered).await {
                tracing::warn!(incident = id.0, seq, error = %crate::error_chain(&e), "The page's outcome is not recorded; its level runs its full wait.");
            }
        })
    }

    fn resolve<'a>(
        &'a self,
        key: &'a str,
        by: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, IncidentFault>> {
        let (engine, key, by) = (self.engine.clone(), key.to_owned(), by.to_owned());
        self.on_host(async move {
            let inc = engine.resolve_by_key(&key, &by).await?;
            Ok(inc.map(|i| i.alert_ids.first().copied().unwrap_or_default()))
        })
    }

    fn seen_again<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, IncidentFault>> {
        let (engine, key) = (self.engine.clone(), key.to_owned());
        self.on_host(async move {
            let inc = engine.join_by_key(&key).await?;
            Ok(inc.map(|i| i.id.0))
        })
    }
}
