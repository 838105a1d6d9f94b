//! The dispatcher: takes each accepted alert through routing, presence and delivery until every
//! recipient has a final outcome, recording each step durably.
//!
//! One task per unfinished alert runs *rounds*. A round plans the alert (once), asks each sink
//! who of the due recipients is reachable (cached briefly), delivers to those, applies the
//! route's offline policy to the others, and saves the alert. Recipients waiting for a retry, a
//! hold re-check or the rate limit make the task sleep until the earliest of them is due.

mod depth;
mod fair;
mod outcome;
mod presence;
mod rate;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use alertbridge_plugin_api::{
    ErrorKind, FfiMessage, Message, PluginError, PresenceState, RecipientResult,
    abi_stable::std_types::RResult,
};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use self::{
    depth::{Depth, Full, Reservation},
    outcome::{Finding, apply, send_regardless},
    rate::RecipientRate,
};
use self::{fair::FairSlots, presence::PresenceCache};
use crate::{
    config::DeliverySettings,
    instances::Registry,
    metrics::Metrics,
    model::{Outcome, RecipientRecord, StoredAlert, now_ms},
    queue::Queue,
    router::{OfflinePolicy, Planned, Router},
};

/// How long a round waits for a sink that is not running yet before treating it as down.
const SINK_START_WAIT: Duration = Duration::from_secs(1);

/// Recipients due this soon are taken in the current round: many recipients with scattered
/// retry times then share a round (and a save of the alert) instead of one round each.
const ROUND_SLACK_MS: i64 = 250;

/// Drives alerts to their outcomes.
pub struct Dispatcher {
    queue: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
    plan: RwLock<Arc<Plan>>,
    instances: Arc<Registry>,
    presence: PresenceCache,
    /// Per recipient: messages of the last minute, for the rate limit.
    rate: RecipientRate,
    /// Per sink: delivery slots, shared fairly between sources.
    limits: Mutex<HashMap<String, Arc<FairSlots>>>,
    /// Unfinished alerts per source, for the queue limits.
    depth: Arc<Depth>,
    /// Per sink: when the next message may go (Unix ms), for the per-sink rate.
    paced: Mutex<HashMap<String, i64>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// The routing table and delivery settings in force; a reload swaps them.
pub struct Plan {
    pub router: Router,
    pub settings: DeliverySettings,
}

impl Dispatcher {
    pub fn new(
        queue: Arc<dyn Queue>,
        metrics: Arc<Metrics>,
        plan: Plan,
        instances: Arc<Registry>,
        depth: Arc<Depth>,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue,
            metrics,
            presence: PresenceCache::new(),
            plan: RwLock::new(Arc::new(plan)),
            instances,
            rate: RecipientRate::new(),
            limits: Mutex::new(HashMap::new()),
            depth,
            paced: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        })
    }

    pub fn plan(&self) -> Arc<Plan> {
        Arc::clone(&self.plan.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts a new routing table and delivery settings in force for every round from now on.
    pub fn set_plan(&self, plan: Plan) {
        *self.plan.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(plan);
    }

    fn limit(&self, sink: &str, permits: usize) -> Arc<FairSlots> {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(limit) = limits.get(sink) {
            return Arc::clone(limit);
        }
        let limit = FairSlots::new(permits);
        limits.insert(sink.to_owned(), Arc::clone(&limit));
        limit
    }

    /// Resumes `unfinished` alerts and then takes new ones from `accepted` until stopped.
    pub async fn run(
        self: Arc<Self>,
        unfinished: Vec<StoredAlert>,
        mut accepted: mpsc::UnboundedReceiver<StoredAlert>,
    ) {
        if !unfinished.is_empty() {
            tracing::info!(count = unfinished.len(), "Resuming unfinished alerts.");
        }
        self.metrics.queue_depth_add(unfinished.len() as i64);
        for alert in unfinished {
            self.depth.queued(&alert.source);
            self.spawn(alert);
        }
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                next = accepted.recv() => match next {
                    Some(alert) => self.spawn(alert),
                    None => break,
                },
            }
        }
    }

    fn spawn(self: &Arc<Self>, alert: StoredAlert) {
        let this = Arc::clone(self);
        self.tracker.spawn(this.process(alert));
    }

    /// Stops starting new rounds and waits up to `deadline` for rounds in flight. Whatever is
    /// unfinished stays queued for the next start.
    pub async fn drain(&self, deadline: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tracker.len(),
                "Deliveries still in flight at the stop deadline; they stay queued."
            );
        }
    }

    async fn process(self: Arc<Self>, mut alert: StoredAlert) {
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let wake = self.round(&mut alert).await;
            if alert.is_finished() {
                return;
            }
            let wait = Duration::from_millis(wake.saturating_sub(now_ms()).max(0) as u64);
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round; returns when the next one is due (Unix ms).
    async fn round(&self, alert: &mut StoredAlert) -> i64 {
        let plan = self.plan();
        let (router, settings) = (&plan.router, &plan.settings);
        let now = now_ms();
        if !alert.routed {
            alert.routed = true;
            alert.recipients = router
                .plan(alert)
                .into_iter()
                .map(|(t, _)| record(t.route, t.sink, t.user, now))
                .collect();
            if alert.recipients.is_empty() {
                tracing::warn!(alert = alert.id, source = %alert.source, subject = %alert.alert.subject, "No route matched; nobody is told.");
            }
        }
        if alert.alert.expires_unix_ms.is_some_and(|e| e <= now) {
            for r in alert
                .recipients
                .iter_mut()
                .filter(|r| !r.outcome.is_final())
            {
                r.outcome = Outcome::Skipped;
                r.reason = "expired before delivery".into();
                r.updated_ms = now;
            }
        }

        let mut due: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in alert.recipients.iter().enumerate() {
            if !r.outcome.is_final() && r.not_before_ms.is_none_or(|t| t <= now + ROUND_SLACK_MS) {
                due.entry(r.sink.clone()).or_default().push(i);
            }
        }
        let before: Vec<Outcome> = alert.recipients.iter().map(|r| r.outcome).collect();
        let rounds = due
            .into_iter()
            .map(|(sink, idx)| self.sink_round(alert, &plan, sink, idx));
        let findings: Vec<(usize, Finding)> = futures::future::join_all(rounds)
            .await
            .into_iter()
            .flatten()
            .collect();

        let now = now_ms();
        // Each route handed over to once, however many recipients it takes over.
        let mut fallbacks = BTreeSet::new();
        for (i, finding) in findings {
            let policy = policy_of(router, &alert.recipients[i].route);
            if let Some(route) = apply(&mut alert.recipients[i], finding, &policy, now, settings) {
                fallbacks.insert(route);
            }
        }
        for name in fallbacks {
            if let Some(route) = router.route(&name) {
                let mut plan = Planned::known(
                    alert
                        .recipients
                        .iter()
                        .map(|r| (r.sink.as_str(), r.user.as_str())),
                );
                router.extend_plan(&mut plan, route, alert);
                for (t, _) in plan.targets {
                    alert.recipients.push(record(t.route, t.sink, t.user, now));
                }
            }
        }
        self.count(alert, &before);
        if alert.recipients.iter().all(|r| r.outcome.is_final()) {
            alert.finished_ms = Some(now);
            self.metrics.queue_depth_add(-1);
            self.depth.finished(&alert.source);
            if alert
                .recipients
                .iter()
                .any(|r| r.outcome == Outcome::Delivered)
            {
                self.metrics
                    .observe_latency((now - alert.accepted_ms).max(0) as f64 / 1000.0);
            }
        }
        if let Err(e) = self.queue.save(alert).await {
            tracing::error!(alert = alert.id, error = %crate::error_chain(&e), "Could not record outcomes; they will be redone after a restart.");
        }
        alert
            .recipients
            .iter()
            .filter(|r| !r.outcome.is_final())
            .map(|r| r.not_before_ms.unwrap_or(now))
            .min()
            .unwrap_or(now)
    }

    /// Counts outcomes that changed in this round.
    fn count(&self, alert: &StoredAlert, before: &[Outcome]) {
        for (i, r) in alert.recipients.iter().enumerate() {
            let was = before.get(i).copied().unwrap_or(Outcome::Pending);
            if r.outcome != was && (r.outcome.is_final() || r.outcome == Outcome::Held) {
                self.metrics.delivery(&r.sink, r.outcome.name());
                let level_error = r.outcome == Outcome::Failed;
                if level_error {
                    tracing::warn!(alert = alert.id, sink = %r.sink, user = %r.user, reason = %r.reason, "Delivery failed.");
                } else {
                    tracing::debug!(alert = alert.id, sink = %r.sink, user = %r.user, outcome = r.outcome.name(), reason = %r.reason, "Recipient outcome.");
                }
            }
        }
    }

    /// Presence and delivery through one sink for the due recipients `idx`.
    async fn sink_round(
        &self,
        alert: &StoredAlert,
        plan: &Plan,
        sink: String,
        idx: Vec<usize>,
    ) -> Vec<(usize, Finding)> {
        let (router, settings) = (&plan.router, &plan.settings);
        let down = |reason: String| -> Vec<(usize, Finding)> {
            idx.iter()
                .map(|&i| (i, Finding::SinkDown(reason.clone())))
                .collect()
        };
        let Some(slot) = self.instances.sink(&sink) else {
            let e = PluginError::new(
                ErrorKind::PERMANENT,
                format!("no sink `{sink}` is configured any more"),
            );
            return idx
                .iter()
                .map(|&i| (i, Finding::CallError(e.clone())))
                .collect();
        };
        // A sink that is starting (at host start, or after a restart) is waited for briefly,
        // so resumed and first alerts do not sit out a whole retry delay.
        let Some(handle) = slot.sink_within(SINK_START_WAIT).await else {
            return down(format!("sink `{sink}` is not running"));
        };
        let now = now_ms();
        let recipients = &alert.recipients;
        let regardless: Vec<bool> = idx
            .iter()
            .map(|&i| {
                send_regardless(
                    &recipients[i],
                    &policy_of(router, &recipients[i].route),
                    now,
                )
            })
            .collect();
        let ask: Vec<String> = idx
            .iter()
            .zip(&regardless)
            .filter(|(_, r)| !**r)
            .map(|(&i, _)| recipients[i].user.clone())
            .collect();
        let states = self
            .presence
            .get(
                &sink,
                &handle,
                ask,
                settings.presence_cache,
                settings.deliver_timeout,
            )
            .await;

        let mut findings = Vec::new();
        let mut send: Vec<usize> = Vec::new();
        for (&i, regardless) in idx.iter().zip(regardless) {
            let user = &recipients[i].user;
            let state = states.get(user).copied().unwrap_or(PresenceState::UNKNOWN);
            if !regardless
                && state != PresenceState::UNKNOWN
                && !settings.reachable.contains(&state)
            {
                findings.push((i, Finding::Offline(state)));
            } else if let Some(why) = states.unheard(user).filter(|_| {
                !regardless && presence::unknown_is_offline(router, &recipients[i].route)
            }) {
                findings.push((i, Finding::PresenceUnknown(why)));
            } else if let Some(at) =
                self.rate
                    .check(user, now, settings.per_recipient_per_minute as usize)
            {
                findings.push((i, Finding::RateLimited(at)));
            } else {
                send.push(i);
            }
        }
        if send.is_empty() {
            return findings;
        }
        let message = Message {
            alert_id: alert.id,
            attempt: send
                .iter()
                .map(|&i| recipients[i].attempts)
                .max()
                .unwrap_or(0)
                + 1,
            source: alert.source.clone(),
            subject: alert.alert.subject.clone(),
            body: alert.alert.body.clone(),
            severity: alert.alert.severity,
            labels: alert.alert.labels.clone(),
            recipients: send.iter().map(|&i| recipients[i].user.clone()).collect(),
            attributes: [("alert_uid".to_owned(), alert.uid.clone())].into(),
        };
        let _slot = self
            .limit(&sink, settings.sink_concurrency)
            .acquire(&alert.source)
            .await;
        if let Some(at) = self.pace(&sink, settings.per_sink_per_second, now_ms()) {
            tokio::time::sleep(Duration::from_millis(
                at.saturating_sub(now_ms()).max(0) as u64
            ))
            .await;
        }
        let call = handle.deliver(FfiMessage::from(&message));
        let results: Result<Vec<RecipientResult>, PluginError> =
            match tokio::time::timeout(settings.deliver_timeout, call).await {
                Err(_) => Err(PluginError::new(
                    ErrorKind::TRANSIENT,
                    format!(
                        "no answer within {} ms",
                        settings.deliver_timeout.as_millis()
                    ),
                )),
                Ok(RResult::RErr(e)) => Err(e.into()),
                Ok(RResult::ROk(list)) => Ok(list.iter().map(RecipientResult::from).collect()),
            };
        match results {
            Err(e) => {
                if e.kind == ErrorKind::PANICKED {
                    slot.report_failure(&e.message);
                }
                findings.extend(send.iter().map(|&i| (i, Finding::CallError(e.clone()))));
            }
            Ok(list) => {
                let mut by_user: HashMap<String, RecipientResult> =
                    list.into_iter().map(|r| (r.user.clone(), r)).collect();
                for i in send {
                    let finding = match by_user.remove(&recipients[i].user) {
                        Some(r) => Finding::Result(r),
                        None => Finding::CallError(PluginError::new(
                            ErrorKind::TRANSIENT,
                            "the sink reported no outcome for this recipient",
                        )),
                    };
                    findings.push((i, finding));
                }
            }
        }
        findings
    }

    /// Reserves the next slot of `sink`'s message rate; returns when it is, if not now.
    fn pace(&self, sink: &str, per_second: u32, now: i64) -> Option<i64> {
        if per_second == 0 {
            return None;
        }
        let mut paced = self.paced.lock().unwrap_or_else(PoisonError::into_inner);
        reserve(paced.entry(sink.to_owned()).or_insert(now), per_second, now)
    }
}

/// Reserves the next slot at `per_second` (> 0) given when the next one is free; returns the
/// slot if it is later than `now`.
fn reserve(next: &mut i64, per_second: u32, now: i64) -> Option<i64> {
    let slot = (*next).max(now);
    *next = slot + (1000 / i64::from(per_second)).max(1);
    (slot > now).then_some(slot)
}

fn record(route: String, sink: String, user: String, now: i64) -> RecipientRecord {
    RecipientRecord {
        route,
        sink,
        user,
        outcome: Outcome::Pending,
        reason: String::new(),
        attempts: 0,
        held_since_ms: None,
        not_before_ms: None,
        updated_ms: now,
    }
}

fn policy_of(router: &Router, route: &str) -> OfflinePolicy {
    router
        .route(route)
        .map_or(OfflinePolicy::Skip, |r| r.offline.clone())
}

#[cfg(test)]
mod tests {
    use super::reserve;

    #[test]
    fn the_sink_rate_spaces_messages_and_forgets_idle_time() {
        let mut next = 0;
        assert_eq!(
            reserve(&mut next, 4, 1_000),
            None,
            "the first message goes now"
        );
        assert_eq!(reserve(&mut next, 4, 1_000), Some(1_250));
        assert_eq!(reserve(&mut next, 4, 1_100), Some(1_500));
        assert_eq!(
            reserve(&mut next, 4, 9_000),
            None,
            "idle time is not saved up"
        );
        assert_eq!(next, 9_250);
    }
}
