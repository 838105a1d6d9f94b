//! The dispatcher: takes each accepted alert through routing, presence and delivery until every
//! recipient has a final outcome, recording each step durably.
//!
//! Each alert is routed when it is taken up (in accept order), and joins the *lane* of each of
//! its recipients ([`lanes`]): per source, recipient and sink, one message in flight at a time,
//! in accept order. Then one task per unfinished alert runs *rounds*. A round asks each sink who
//! of the due recipients is reachable (cached briefly), applies the route's offline policy to
//! the others, records durably that a send begins (`sending`), delivers to those at the head of
//! their lane ([`send`]: one call per sink, side by side), records each sink's outcomes as its
//! call ends — a slow sink does not hold up another's lanes — and wakes the next alert in each
//! lane it left. Recipients waiting for a retry, a hold re-check or the rate limit make the
//! task sleep until the earliest of them is due; recipients behind another alert in their lane
//! wait to be woken.
//!
//! An alert a route with an escalation policy takes gets one record per such route, with sink
//! [`INCIDENT_SINK`] and the policy as its user: the round hands it to the incident engine
//! ([`IncidentPort::open`]) instead of a sink. An incident's page (an alert from the engine)
//! goes to the users and groups it names through its incident's route, and the dispatcher
//! tells the engine the conversation each recipient was reached in and how many got it.
//!
//! After a restart, a recipient still marked `sending` is *uncertain* (the send began, its
//! outcome was never recorded): `[delivery] on_uncertain` resends it marked as a repeat
//! ([`REPEAT_MARK`]), or skips it.

mod clock;
mod depth;
mod digest;
mod digest_text;
mod fair;
mod lanes;
mod outcome;
pub mod port;
mod presence;
mod rate;
#[cfg(test)]
mod round_tests;
mod send;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError, RwLock, Weak},
    time::Duration,
};

use alertbridge_plugin_api::kit::format::unix_ms_rfc3339;
use alertbridge_plugin_api::{
    CONVERSATION_ATTRIBUTE, DeliveryStatus, ErrorKind, PluginError, PresenceState, REPEAT_MARK,
    RecipientResult,
};
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::sync::{Notify, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{
    clock::Clock,
    digest::{Board, DigestKey, Member, Stand},
    fair::FairSlots,
    lanes::Lanes,
    presence::PresenceCache,
};
pub use self::{
    depth::{Depth, Full, Reservation},
    outcome::{Finding, apply, send_regardless},
    port::{IncidentFault, IncidentPort, SinkLookup, SinkPort, Sinks},
    rate::RecipientRate,
};
use crate::{
    config::{DeliverySettings, OnUncertain},
    metrics::Metrics,
    model::{Outcome, RecipientRecord, StoredAlert},
    queue::{Queue, QueueError},
    router::{ADMIN_SOURCE, OfflinePolicy, Planned, ROUTE_ATTRIBUTE, Route, Router},
    silences::Silences,
};

/// The sink name of a record that stands for an incident: its user is the escalation policy.
pub const INCIDENT_SINK: &str = "incident";

/// How long a round waits for a sink that is not running yet before treating it as down.
const SINK_START_WAIT: Duration = Duration::from_secs(1);

/// Recipients due this soon are taken in the current round: many recipients with scattered
/// retry times then share a round (and a save of the alert) instead of one round each.
const ROUND_SLACK_MS: i64 = 250;

/// How long an alert whose due recipients all wait behind other alerts in their lanes sleeps
/// before looking again if it is not woken (it is woken when it reaches a lane's head; this is
/// only a safety net, long so that a backlog of thousands does not wake for nothing).
const LANE_RECHECK: Duration = Duration::from_secs(300);

/// How many accepted alerts the dispatcher takes from the queue's hand-off at a time: a group
/// commit hands over many at once, and taking them together costs one wake-up and one look at
/// the stop signal for all of them instead of one each.
const TAKE_BATCH: usize = 256;

/// A round's end when the queue refused a save of the alert as another host's
/// ([`QueueError::NotOwner`]): the alert is let go of.
struct HandedOver;

/// Drives alerts to their outcomes.
pub struct Dispatcher {
    queue: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
    plan: RwLock<Arc<Plan>>,
    sinks: Arc<dyn Sinks>,
    clock: Clock,
    presence: PresenceCache,
    /// Per recipient: messages of the last minute, for the rate limit.
    rate: RecipientRate,
    /// Per sink: delivery slots, shared fairly between sources.
    limits: Mutex<HashMap<String, Arc<FairSlots>>>,
    /// Unfinished alerts per source, for the queue limits.
    depth: Arc<Depth>,
    /// Per sink: when the next message may go (Unix ms), for the per-sink rate.
    paced: Mutex<HashMap<String, i64>>,
    /// Per recipient and sink: the alerts that still owe a message, in accept order.
    lanes: Lanes,
    /// The digests being collected (grouped routes, rate-limit folding).
    board: Board,
    /// This dispatcher, for the tasks that drive digests.
    me: Weak<Dispatcher>,
    /// The silences in force, once the host has them.
    silences: RwLock<Option<Arc<Silences>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// The incident engine, once the host has one.
    incidents: RwLock<Option<Arc<dyn IncidentPort>>>,
}

/// The routing table and delivery settings in force; a reload swaps them.
pub struct Plan {
    pub router: Router,
    pub settings: DeliverySettings,
    /// Route name -> the escalation policy it names.
    pub escalations: BTreeMap<String, String>,
}

impl Dispatcher {
    pub fn new(
        queue: Arc<dyn Queue>,
        metrics: Arc<Metrics>,
        plan: Plan,
        sinks: Arc<dyn Sinks>,
        depth: Arc<Depth>,
    ) -> Arc<Self> {
        Self::with_clock(queue, metrics, plan, sinks, depth, Clock::Wall)
    }

    fn with_clock(
        queue: Arc<dyn Queue>,
        metrics: Arc<Metrics>,
        plan: Plan,
        sinks: Arc<dyn Sinks>,
        depth: Arc<Depth>,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            queue,
            metrics,
            presence: PresenceCache::new(),
            plan: RwLock::new(Arc::new(plan)),
            sinks,
            clock,
            rate: RecipientRate::new(),
            limits: Mutex::new(HashMap::new()),
            depth,
            paced: Mutex::new(HashMap::new()),
            lanes: Lanes::new(),
            board: Board::default(),
            me: me.clone(),
            silences: RwLock::new(None),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            incidents: RwLock::new(None),
        })
    }

    /// Hands alerts of escalation routes to `port` (and reports pages to it) from now on.
    pub fn set_incidents(&self, port: Arc<dyn IncidentPort>) {
        *self
            .incidents
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(port);
    }

    fn incidents(&self) -> Option<Arc<dyn IncidentPort>> {
        self.incidents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Checks every alert against `silences` at the start of each of its rounds from now on.
    pub fn set_silences(&self, silences: Arc<Silences>) {
        *self
            .silences
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(silences);
    }

    /// Has every unfinished alert run a round now (a silence was created: queued alerts it
    /// matches are recorded `silenced` at once, not when their next round comes).
    pub fn recheck_all(&self) {
        self.lanes.wake_all();
    }

    /// If an active silence matches `alert` at `now`, records each unfinished recipient as
    /// `silenced` with the silence's id; returns whether it did.
    fn silence(&self, alert: &mut StoredAlert, now: i64) -> bool {
        let silences = self
            .silences
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(silences) = silences else {
            return false;
        };
        if alert.recipients.iter().all(|r| r.outcome.is_final()) {
            return false;
        }
        let Some(hit) = silences.silencing(alert, now) else {
            return false;
        };
        let until = unix_ms_rfc3339(hit.ends_ms);
        for r in alert
            .recipients
            .iter_mut()
            .filter(|r| !r.outcome.is_final())
        {
            r.outcome = Outcome::Silenced;
            r.silence = Some(hit.id);
            r.not_before_ms = None;
            r.reason = format!("silenced by silence {} (until {until})", hit.id);
            r.updated_ms = now;
        }
        self.metrics.alert_silenced();
        tracing::info!(alert = alert.id, silence = hit.id, "Alert silenced.");
        true
    }

    pub fn plan(&self) -> Arc<Plan> {
        Arc::clone(&self.plan.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts a new routing table and delivery settings in force for every round from now on.
    pub fn set_plan(&self, plan: Plan) {
        *self.plan.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(plan);
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
        for mut alert in unfinished {
            self.depth.queued(&alert.source);
            self.settle_uncertain(&mut alert);
            self.take_up(alert);
        }
        let mut batch = Vec::with_capacity(TAKE_BATCH);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                taken = accepted.recv_many(&mut batch, TAKE_BATCH) => {
                    if taken == 0 {
                        break;
                    }
                    // In accept order. A new alert has no `sending` mark; one taken over from
                    // a host whose lease ran out (shared queue) may: it is settled as after a
                    // restart.
                    for mut alert in batch.drain(..) {
                        self.settle_uncertain(&mut alert);
                        self.take_up(alert);
                    }
                }
            }
        }
    }

    /// Routes `alert` (if not yet), puts it in the lanes of its unfinished recipients and starts
    /// its task. Called in accept order, so the lanes are in accept order.
    fn take_up(self: &Arc<Self>, mut alert: StoredAlert) {
        if !alert.routed {
            let plan = self.plan();
            let now = self.clock.now_ms();
            alert.routed = true;
            alert.recipients = self.route_alert(&plan, &alert, now);
            if alert.recipients.is_empty() {
                tracing::warn!(alert = alert.id, source = %alert.source, subject = %alert.alert.subject, "No route matched; nobody is told.");
            }
        }
        let waker = Arc::new(Notify::new());
        self.lanes.enter(
            alert.id,
            &alert.source,
            Arc::clone(&waker),
            alert
                .recipients
                .iter()
                .filter(|r| !r.outcome.is_final())
                .map(|r| (r.sink.as_str(), r.user.as_str())),
        );
        let this = Arc::clone(self);
        self.tracker.spawn(this.process(alert, waker));
    }

    /// The records of a new alert: an incident's page goes to the users and groups it names
    /// through its incident's route; another alert gets one [`INCIDENT_SINK`] record per
    /// matching route that names an escalation policy, and the recipients of the others.
    fn route_alert(&self, plan: &Plan, alert: &StoredAlert, now: i64) -> Vec<RecipientRecord> {
        let router = &plan.router;
        if let Some(name) = self.incidents().and_then(|p| p.page_route(alert)) {
            let Some(route) = router.route(&name) else {
                tracing::warn!(alert = alert.id, route = %name, "The incident's route is gone; its page reaches nobody.");
                return Vec::new();
            };
            let named = alert
                .alert
                .groups
                .iter()
                .flat_map(|g| router.groups.get(g).into_iter().flatten())
                .chain(&alert.alert.users);
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for user in named {
                for sink in &route.sinks {
                    if seen.insert((sink, user)) {
                        out.push(record(name.clone(), sink.clone(), user.clone(), now));
                    }
                }
            }
            return out;
        }
        let forced = (alert.source == ADMIN_SOURCE)
            .then(|| alert.alert.attributes.get(ROUTE_ATTRIBUTE))
            .flatten();
        let routes: Vec<&Route> = match forced {
            Some(name) => router.route(name).into_iter().collect(),
            None => router.matching(alert),
        };
        let mut planned = Planned::default();
        let mut out = Vec::new();
        for route in routes {
            match plan.escalations.get(&route.name) {
                Some(policy) => out.push(record(
                    route.name.clone(),
                    INCIDENT_SINK.to_owned(),
                    policy.clone(),
                    now,
                )),
                None => router.extend_plan(&mut planned, route, alert),
            }
        }
        out.extend(
            planned
                .targets
                .into_iter()
                .map(|(t, _)| record(t.route, t.sink, t.user, now)),
        );
        out
    }

    /// Hands the due [`INCIDENT_SINK`] records `idx` of `alert` to the incident engine, each
    /// in its turn (its lane): what came of each, and those waiting behind another alert.
    async fn open_incidents(
        &self,
        alert: &StoredAlert,
        plan: &Plan,
        idx: Vec<usize>,
    ) -> (Vec<(usize, Finding)>, Vec<usize>) {
        let mut findings = Vec::new();
        let mut gated = Vec::new();
        let port = self.incidents();
        for i in idx {
            let r = &alert.recipients[i];
            if !self
                .lanes
                .is_head(alert.id, &alert.source, INCIDENT_SINK, &r.user)
            {
                gated.push(i);
                continue;
            }
            let Some(port) = &port else {
                findings.push((i, Finding::SinkDown("incidents are not running yet".into())));
                continue;
            };
            let pass = policy_of(&plan.router, &r.route) == OfflinePolicy::Skip;
            let finding = match port.open(alert, &r.route, &r.user, pass).await {
                Ok((n, joined)) => {
                    let what = if joined { "joined" } else { "opened" };
                    Finding::Result(RecipientResult::new(
                        r.user.clone(),
                        DeliveryStatus::DELIVERED,
                        format!("{what} incident #{n}"),
                    ))
                }
                Err(IncidentFault::Refused(why)) => {
                    Finding::CallError(PluginError::new(ErrorKind::PERMANENT, why))
                }
                Err(e) => Finding::SinkDown(crate::error_chain(&e)),
            };
            findings.push((i, finding));
        }
        (findings, gated)
    }

    /// After a restart: each recipient whose send began and has no outcome is uncertain; it is
    /// sent again marked as a repeat, or skipped (`on_uncertain`).
    fn settle_uncertain(&self, alert: &mut StoredAlert) {
        let on_uncertain = self.plan().settings.on_uncertain;
        let now = self.clock.now_ms();
        for r in alert.recipients.iter_mut().filter(|r| r.sending) {
            r.sending = false;
            if r.outcome.is_final() {
                continue;
            }
            r.updated_ms = now;
            let why = "uncertain: a send began before a restart and its outcome was never recorded";
            match on_uncertain {
                OnUncertain::Resend => {
                    r.repeat = true;
                    r.reason = format!("{why}; sent again marked {REPEAT_MARK}");
                    self.metrics.uncertain(&r.sink, "resent");
                }
                OnUncertain::Skip => {
                    r.outcome = Outcome::Skipped;
                    r.not_before_ms = None;
                    r.reason = format!("{why}; not sent again (on_uncertain = skip)");
                    self.metrics.uncertain(&r.sink, "skipped");
                    self.metrics.delivery(&r.sink, r.outcome.name());
                }
            }
            tracing::warn!(alert = alert.id, sink = %r.sink, user = %r.user, action = ?on_uncertain, "Uncertain send after a restart.");
        }
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

    async fn process(self: Arc<Self>, mut alert: StoredAlert, waker: Arc<Notify>) {
        let mut first = true;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let Ok(wake) = self.round(&mut alert, first).await else {
                self.let_go(&alert);
                break;
            };
            first = false;
            if alert.is_finished() {
                break;
            }
            let wait = wake.map_or(LANE_RECHECK, |at| {
                Duration::from_millis(at.saturating_sub(self.clock.now_ms()).max(0) as u64)
            });
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = waker.notified() => {}
            }
        }
        self.lanes.forget(alert.id);
    }

    /// Lets go of `alert`, which another host took over (the queue refused this host's save of
    /// it as [`QueueError::NotOwner`]; that host delivers it): it leaves its lanes, waking the
    /// next alert in each, gives back its place in the queue depth and is counted; its task
    /// then ends.
    fn let_go(&self, alert: &StoredAlert) {
        for r in &alert.recipients {
            self.lanes.leave(alert.id, &alert.source, &r.sink, &r.user);
        }
        if !alert.is_finished() {
            self.metrics.queue_depth_add(-1);
            self.depth.finished(&alert.source);
        }
        self.metrics.alert_handed_over();
        tracing::warn!(alert = alert.id, source = %alert.source, "Alert taken over by another host (this host's lease on it ran out); letting go of it here.");
    }

    /// One round; returns when the next one is due (Unix ms), or `None` if every unfinished
    /// recipient waits behind another alert in its lane (the task is woken when that changes);
    /// [`HandedOver`] if the queue refused a save because another host took the alert over.
    async fn round(&self, alert: &mut StoredAlert, first: bool) -> Result<Option<i64>, HandedOver> {
        let plan = self.plan();
        let (router, settings) = (&plan.router, &plan.settings);
        let now = self.clock.now_ms();
        let before: Vec<Outcome> = alert.recipients.iter().map(|r| r.outcome).collect();
        let mut dirty = first;
        if alert.alert.expires_unix_ms.is_some_and(|e| e <= now) {
            for r in alert
                .recipients
                .iter_mut()
                .filter(|r| !r.outcome.is_final())
            {
                r.outcome = Outcome::Skipped;
                r.reason = "expired before delivery".into();
                r.updated_ms = now;
                dirty = true;
                self.board.withdraw(alert.id, &r.sink, &r.user);
            }
        }

        // An active silence that matches: every unfinished recipient is recorded silenced.
        dirty |= self.silence(alert, now);
        let mut due: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in alert.recipients.iter().enumerate() {
            if !r.outcome.is_final() && r.not_before_ms.is_none_or(|t| t <= now + ROUND_SLACK_MS) {
                due.entry(r.sink.clone()).or_default().push(i);
            }
        }
        let incident_idx = due.remove(INCIDENT_SINK);
        // Set when this alert is an incident's page: the engine hears how it went.
        let page_port = self.incidents().filter(|p| p.page_route(alert).is_some());
        let prepared = due
            .into_iter()
            .map(|(sink, idx)| self.prepare(alert, &plan, sink, idx));
        let mut findings: Vec<(usize, Finding)> = Vec::new();
        let mut gated: Vec<usize> = Vec::new();
        let mut sends: Vec<Send> = Vec::new();
        let mut digests: Vec<(usize, DigestKey, u64)> = Vec::new();
        if let Some(idx) = incident_idx {
            let (found, waiting) = self.open_incidents(alert, &plan, idx).await;
            findings.extend(found);
            gated.extend(waiting);
        }
        for p in futures::future::join_all(prepared).await {
            findings.extend(p.findings);
            gated.extend(p.gated);
            sends.extend(p.send);
            digests.extend(p.digests);
        }
        if !sends.is_empty() || !digests.is_empty() {
            // The send is recorded before it starts: after a crash it is known to be uncertain.
            for send in &sends {
                for &i in &send.idx {
                    alert.recipients[i].sending = true;
                }
            }
            for &(i, _, digest) in &digests {
                alert.recipients[i].sending = true;
                alert.recipients[i].digest = Some(digest);
            }
            let marked = self.queue.save(alert).await;
            if let Err(QueueError::NotOwner { .. }) = marked {
                // Another host delivers it now: nothing is sent from here.
                for send in &sends {
                    for &i in &send.idx {
                        alert.recipients[i].sending = false;
                    }
                }
                for (i, key, _) in &digests {
                    alert.recipients[*i].sending = false;
                    self.board.withdraw(alert.id, &key.sink, &key.user);
                }
                return Err(HandedOver);
            }
            if let Err(e) = marked {
                tracing::warn!(alert = alert.id, error = %crate::error_chain(&e), "Could not record that a send begins; not sending now.");
                let why = format!("the queue cannot record the send: {e}");
                for send in sends.drain(..) {
                    for i in send.idx {
                        alert.recipients[i].sending = false;
                        findings.push((i, Finding::SinkDown(why.clone())));
                    }
                }
                for (i, key, _) in digests.drain(..) {
                    alert.recipients[i].sending = false;
                    self.board.withdraw(alert.id, &key.sink, &key.user);
                    findings.push((i, Finding::SinkDown(why.clone())));
                }
            }
        }
        // Each route handed over to once, however many recipients it takes over.
        let mut fallbacks = BTreeSet::new();
        // Recipients whose lanes were left while other sinks' calls were still out.
        let mut left = BTreeSet::new();
        // Set when the queue refused a save as another host's: the sends out finish, nothing
        // more is saved, and the alert is let go of.
        let mut handed_over = false;
        let mut in_flight: FuturesUnordered<BoxFuture<'_, Vec<(usize, Finding)>>> = sends
            .into_iter()
            .map(|send| self.run_job(settings, Self::job(alert, send)).boxed())
            .collect();
        // Recipients carried by a digest: their outcome is the digest's.
        for (i, key, _) in digests {
            let carried = self.board.join(&key, Member::of(alert, i));
            in_flight.push(
                async move {
                    let finding = carried.await.unwrap_or_else(|_| {
                        Finding::SinkDown("the digest was not sent (stopping)".into())
                    });
                    vec![(i, finding)]
                }
                .boxed(),
            );
        }
        while let Some(found) = in_flight.next().await {
            dirty = true;
            let now = self.clock.now_ms();
            let mut settled = Vec::new();
            for (i, finding) in found {
                if let (Some(port), Finding::Result(res)) = (&page_port, &finding)
                    && res.status == DeliveryStatus::DELIVERED
                {
                    let r = &alert.recipients[i];
                    let conversation = res.attributes.get(CONVERSATION_ATTRIBUTE);
                    port.page_conversation(
                        alert,
                        &r.user,
                        &r.sink,
                        conversation.map(String::as_str),
                    )
                    .await;
                }
                let r = &mut alert.recipients[i];
                r.sending = false;
                let policy = policy_of(router, &r.route);
                if let Some(route) = apply(r, finding, &policy, now, settings) {
                    fallbacks.insert(route);
                }
                if r.outcome.is_final() {
                    settled.push(i);
                }
            }
            if in_flight.is_empty() {
                break;
            }
            // Another sink's call is still out (up to the deliver time-out): record this
            // sink's outcomes now and let its recipients' next alerts go, rather than have
            // them wait for the slower sink. As below, the save is handed to the queue
            // before the next alerts are woken; an outcome rides in the next commit.
            let saved = self.queue.save_outcome(alert);
            for i in settled {
                let r = &alert.recipients[i];
                self.lanes.leave(alert.id, &alert.source, &r.sink, &r.user);
                left.insert(i);
            }
            match saved.await {
                Err(QueueError::NotOwner { .. }) => handed_over = true,
                Err(e) => {
                    tracing::error!(alert = alert.id, error = %crate::error_chain(&e), "Could not record outcomes; they will be redone after a restart.");
                }
                Ok(()) => {}
            }
        }
        dirty |= !findings.is_empty();

        let now = self.clock.now_ms();
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
                    self.lanes.join(alert.id, &alert.source, &t.sink, &t.user);
                    alert.recipients.push(record(t.route, t.sink, t.user, now));
                }
            }
        }
        self.count(alert, &before);
        if alert.recipients.iter().all(|r| r.outcome.is_final()) {
            dirty = true;
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
        // The save is handed to the queue before the next alerts in the lanes are woken, so
        // their "sending" records commit with or after these outcomes (which ride in the next
        // commit rather than paying for one: `Queue::save_outcome`).
        let saved = (dirty && !handed_over).then(|| self.queue.save_outcome(alert));
        for (i, r) in alert.recipients.iter().enumerate() {
            let was_final = before.get(i).is_some_and(|o| o.is_final());
            if r.outcome.is_final() && !was_final && !left.contains(&i) {
                self.lanes.leave(alert.id, &alert.source, &r.sink, &r.user);
            }
        }
        if let Some(saved) = saved {
            match saved.await {
                Err(QueueError::NotOwner { .. }) => handed_over = true,
                Err(e) => {
                    tracing::error!(alert = alert.id, error = %crate::error_chain(&e), "Could not record outcomes; they will be redone after a restart.");
                }
                Ok(()) => {}
            }
        }
        if handed_over {
            return Err(HandedOver);
        }
        if let Some(port) = &page_port
            && alert.is_finished()
        {
            let delivered = alert
                .recipients
                .iter()
                .filter(|r| r.outcome == Outcome::Delivered)
                .count();
            port.page_finished(alert, delivered).await;
        }
        let gated: BTreeSet<usize> = gated.into_iter().collect();
        Ok(alert
            .recipients
            .iter()
            .enumerate()
            .filter(|(i, r)| !r.outcome.is_final() && !gated.contains(i))
            .map(|(_, r)| r.not_before_ms.unwrap_or(now))
            .min())
    }

    /// Counts outcomes that changed in this round.
    fn count(&self, alert: &StoredAlert, before: &[Outcome]) {
        for (i, r) in alert.recipients.iter().enumerate() {
            let was = before.get(i).copied().unwrap_or(Outcome::Pending);
            if r.outcome != was
                && (r.outcome.is_final() || r.outcome == Outcome::Held)
                && r.sink != INCIDENT_SINK
            {
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

    /// Presence, lanes and the rate limit for the due recipients `idx` of one sink: what is
    /// found about each, and who to send to now.
    async fn prepare(
        &self,
        alert: &StoredAlert,
        plan: &Plan,
        sink: String,
        idx: Vec<usize>,
    ) -> Prepared {
        let (router, settings) = (&plan.router, &plan.settings);
        let done = |findings: Vec<(usize, Finding)>| Prepared {
            findings,
            gated: Vec::new(),
            send: None,
            digests: Vec::new(),
        };
        // A sink that is starting (at host start, or after a restart) is waited for briefly,
        // so resumed and first alerts do not sit out a whole retry delay.
        let port = match self.sinks.lookup(&sink, SINK_START_WAIT).await {
            SinkLookup::Running(port) => port,
            SinkLookup::Unknown => {
                let e = PluginError::new(
                    ErrorKind::PERMANENT,
                    format!("no sink `{sink}` is configured any more"),
                );
                return done(
                    idx.iter()
                        .map(|&i| (i, Finding::CallError(e.clone())))
                        .collect(),
                );
            }
            SinkLookup::NotRunning => {
                let reason = format!("sink `{sink}` is not running");
                return done(
                    idx.iter()
                        .map(|&i| (i, Finding::SinkDown(reason.clone())))
                        .collect(),
                );
            }
        };
        let now = self.clock.now_ms();
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
                port.as_ref(),
                ask,
                settings.presence_cache,
                settings.deliver_timeout,
            )
            .await;

        let mut findings = Vec::new();
        let mut gated = Vec::new();
        let mut send: Vec<usize> = Vec::new();
        let mut digests = Vec::new();
        let mut enroll = |key: DigestKey, i: usize, first_due: i64, gated: &mut Vec<usize>| {
            let grouping = router
                .route(&recipients[i].route)
                .and_then(|r| r.grouping.as_ref());
            let Some(waker) = self.lanes.waker(alert.id) else {
                return;
            };
            let (stand, new) = self
                .board
                .stand(&key, alert.id, &waker, first_due, grouping);
            if new && let Some(me) = self.me.upgrade() {
                self.tracker.spawn(me.drive_digest(key.clone()));
            }
            match stand {
                Stand::Wait => gated.push(i),
                Stand::Mark(digest) => digests.push((i, key, digest)),
            }
        };
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
            } else if let Some((key, first_due)) =
                self.digest_for(router, settings, alert, i, &sink, now)
            {
                enroll(key, i, first_due, &mut gated);
            } else if !self.lanes.is_head(alert.id, &alert.source, &sink, user) {
                // An earlier alert from this source to this recipient is not finished: wait
                // for it, in order.
                gated.push(i);
            } else if let Some(at) =
                self.rate
                    .check(user, now, settings.per_recipient_per_minute as usize)
            {
                if settings.fold_rate_limited && alert.source != crate::model::PAGE_SOURCE {
                    // What waits for this recipient goes as one digest at the next slot.
                    enroll(fold_key(&sink, user), i, at, &mut gated);
                    self.lanes.wake_behind(&alert.source, &sink, user);
                } else {
                    findings.push((i, Finding::RateLimited(at)));
                }
            } else {
                send.push(i);
            }
        }
        for (i, _) in &findings {
            self.board.withdraw(alert.id, &sink, &recipients[*i].user);
        }
        Prepared {
            findings,
            gated,
            send: (!send.is_empty()).then_some(Send {
                sink,
                port,
                idx: send,
            }),
            digests,
        }
    }

    /// The digest recipient `i` of `alert` goes with, if any, and when a new one is first due:
    /// its route's group (after `group_wait_ms`), or the recipient's fold while its rate limit
    /// holds.
    fn digest_for(
        &self,
        router: &Router,
        settings: &DeliverySettings,
        alert: &StoredAlert,
        i: usize,
        sink: &str,
        now: i64,
    ) -> Option<(DigestKey, i64)> {
        let r = &alert.recipients[i];
        if alert.source == crate::model::PAGE_SOURCE {
            // An incident's page goes alone: it names the incident and how to answer it.
            return None;
        }
        if let Some(g) = router.route(&r.route).and_then(|r| r.grouping.as_ref()) {
            let key = DigestKey {
                sink: sink.to_owned(),
                user: r.user.clone(),
                group: Some((r.route.clone(), g.values(alert))),
            };
            return Some((key, now + g.wait.as_millis() as i64));
        }
        (settings.fold_rate_limited && self.board.folding(sink, &r.user))
            .then(|| (fold_key(sink, &r.user), now))
    }
}

/// What [`Dispatcher::prepare`] found for one sink.
struct Prepared {
    findings: Vec<(usize, Finding)>,
    /// Due, reachable, and behind an earlier alert in their lane.
    gated: Vec<usize>,
    send: Option<Send>,
    /// Recipients to record as sent in a digest (its id), then join it.
    digests: Vec<(usize, DigestKey, u64)>,
}

/// Recipients to send to now through one sink.
struct Send {
    sink: String,
    port: Arc<dyn SinkPort>,
    idx: Vec<usize>,
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
        sending: false,
        repeat: false,
        digest: None,
        silence: None,
    }
}

/// The digest that folds what waits for `user` through `sink` while its rate limit holds.
fn fold_key(sink: &str, user: &str) -> DigestKey {
    DigestKey {
        sink: sink.to_owned(),
        user: user.to_owned(),
        group: None,
    }
}

fn policy_of(router: &Router, route: &str) -> OfflinePolicy {
    router
        .route(route)
        .map_or(OfflinePolicy::Skip, |r| r.offline.clone())
}
