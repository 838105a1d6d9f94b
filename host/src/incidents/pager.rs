//! [`QueuePager`]: hands a page to the durable queue as an alert from the internal source
//! `incidents`, naming the level's users and groups, with the page's key as its dedup key —
//! so a page handed again after a crash is taken once (within the queue's dedup window).

use std::sync::Arc;

use alertbridge_plugin_api::{Alert, Severity};

use super::{BoxFuture, PageRequest, Pager, PagerError};
use crate::queue::Queue;

/// The source name of page alerts in the queue.
pub use crate::model::PAGE_SOURCE as SOURCE;

/// The label of a page alert naming the incident's route (its sinks and offline policy).
pub const ROUTE_LABEL: &str = "route";

/// Enqueues pages; the dispatcher delivers them to the named recipients through the
/// incident's route.
pub struct QueuePager {
    queue: Arc<dyn Queue>,
}

impl QueuePager {
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        Self { queue }
    }
}

/// The alert a page becomes.
pub fn page_alert(req: &PageRequest) -> Alert {
    let mut a = Alert::new(req.text.clone());
    a.severity = Severity::CRITICAL;
    a.users.clone_from(&req.users);
    a.groups.clone_from(&req.groups);
    a.dedup_key = Some(req.key.clone());
    a.labels
        .insert("incident".into(), req.incident.0.to_string());
    a.labels.insert(ROUTE_LABEL.into(), req.route.clone());
    a.labels.insert("level".into(), req.level.to_string());
    a
}

impl Pager for QueuePager {
    /// Answers the number of recipients named (users and groups); presence is checked later,
    /// per recipient, by the dispatcher.
    fn page(&self, req: PageRequest) -> BoxFuture<'static, Result<usize, PagerError>> {
        let named = req.users.len() + req.groups.len();
        let taken = self.queue.enqueue(SOURCE, page_alert(&req));
        Box::pin(async move {
            let t = taken.await.map_err(|e| PagerError {
                reason: crate::error_chain(&e),
            })?;
            tracing::debug!(
                incident = req.incident.0,
                alert_id = t.id,
                duplicate = t.duplicate,
                "page enqueued"
            );
            Ok(named)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{incidents::IncidentId, queue::RedbQueue};

    #[tokio::test]
    async fn a_page_handed_twice_is_queued_once() {
        let dir = tempfile::tempdir().unwrap();
        let queue: Arc<dyn Queue> = Arc::new(
            RedbQueue::open(
                dir.path(),
                Duration::from_secs(86_400),
                100,
                Box::new(|_| {}),
            )
            .unwrap(),
        );
        let pager = QueuePager::new(Arc::clone(&queue));
        let req = PageRequest {
            incident: IncidentId(42),
            route: "critical".into(),
            key: "incident/42/page/2".into(),
            level: 2,
            users: vec!["sip:bob@contoso.com".into()],
            groups: vec!["leads".into()],
            text: "[#42] Disk full".into(),
        };
        assert_eq!(pager.page(req.clone()).await.unwrap(), 2);
        assert_eq!(pager.page(req.clone()).await.unwrap(), 2);
        let other = PageRequest {
            key: "incident/42/page/3".into(),
            ..req
        };
        pager.page(other).await.unwrap();
        let recent = queue.recent(10).unwrap();
        assert_eq!(
            recent.len(),
            2,
            "the second hand-over of page 2 is a duplicate"
        );
        let a = &recent[1];
        assert_eq!(a.source, SOURCE);
        assert_eq!(a.alert.dedup_key.as_deref(), Some("incident/42/page/2"));
        assert_eq!(a.alert.users, vec!["sip:bob@contoso.com".to_owned()]);
        assert_eq!(
            a.alert.labels.get("incident").map(String::as_str),
            Some("42")
        );
        queue.close();
    }
}
