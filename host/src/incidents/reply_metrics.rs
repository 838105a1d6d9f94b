//! Incident metrics from the engine's events: `alertbridge_incidents_open`,
//! `alertbridge_incident_ack_seconds` (first page → ack) and `alertbridge_escalations_total
//! {level}` (every level paged after the first page).

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{Engine, IncidentEvent};
use crate::metrics::Metrics;

/// Keeps the incident metrics up to date until `shutdown`.
pub async fn feed_metrics(engine: Engine, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut events = engine.subscribe();
    count_open(&engine, &metrics).await;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(IncidentEvent::Paged { level, round, .. }) if level > 1 || round > 0 => {
                metrics.escalation(level);
            }
            Ok(IncidentEvent::Acknowledged { id, .. }) => {
                if let Some(inc) = engine.get(id).await
                    && let (Some(first), Some(ack)) = (inc.pages.first(), inc.acked.as_ref())
                {
                    #[allow(clippy::cast_precision_loss)]
                    metrics.observe_ack_seconds((ack.at_ms - first.at_ms) as f64 / 1000.0);
                }
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        count_open(&engine, &metrics).await;
    }
}

async fn count_open(engine: &Engine, metrics: &Metrics) {
    let open = engine.open_incidents().await.len();
    metrics.set_incidents_open(i64::try_from(open).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use alertbridge_plugin_api::Alert;

    use super::*;
    use crate::incidents::{
        BoxFuture, Clock, EscalationPolicy, IncidentStore, Level, MemoryIncidents, PageRequest,
        Pager, PagerError, store::Query, tests::Asked,
    };

    struct AllReachable;

    impl Pager for AllReachable {
        fn page(&self, req: PageRequest) -> BoxFuture<'static, Result<usize, PagerError>> {
            let n = req.users.len();
            Box::pin(async move { Ok(n) })
        }
    }

    /// Two incidents on `store`: one escalated and acknowledged, the other resolved.
    async fn open_ack_and_escalations_are_counted_on(store: Arc<dyn IncidentStore>) {
        let lvl = |u: &str| Level {
            groups: vec![],
            users: vec![format!("sip:{u}@contoso.com")],
            after_secs: 300,
        };
        let engine = Engine::open(
            store,
            Arc::new(AllReachable),
            vec![EscalationPolicy {
                name: "ops".into(),
                repeat: 0,
                ack_timeout_secs: 0,
                levels: vec![lvl("alice"), lvl("bob"), lvl("carol")],
            }],
            Clock::system(),
        )
        .unwrap();
        let metrics = Arc::new(Metrics::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(feed_metrics(
            engine.clone(),
            Arc::clone(&metrics),
            stop.clone(),
        ));
        tokio::task::yield_now().await;
        let a = engine
            .open_or_join(1, "am", &Alert::new("a"), "r", "ops", false)
            .await
            .unwrap()
            .id;
        let b = engine
            .open_or_join(2, "am", &Alert::new("b"), "r", "ops", false)
            .await
            .unwrap()
            .id;
        engine.escalate_now(a, "x").await.unwrap();
        engine.ack(a, "Bob").await.unwrap();
        engine.resolve(b, "Alice").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let text = metrics.render();
        assert!(text.contains("alertbridge_incidents_open 1\n"), "{text}");
        assert!(
            text.contains("alertbridge_incident_ack_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("alertbridge_escalations_total{level=\"2\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("level=\"1\""),
            "the first page is no escalation: {text}"
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn open_ack_and_escalations_are_counted() {
        open_ack_and_escalations_are_counted_on(Arc::new(MemoryIncidents::default())).await;
    }

    /// A shared store is asked for the open incidents only, never for every one.
    #[tokio::test]
    async fn the_open_count_reads_the_open_incidents_only() {
        let asked = Asked::default();
        open_ack_and_escalations_are_counted_on(Arc::new(asked.clone())).await;
        assert!(asked.asked(&Query::Open));
        assert!(!asked.asked_for_all());
    }
}
