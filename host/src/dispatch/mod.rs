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
mod prepare;
mod presence;
mod rate;
mod round;
#[cfg(test)]
mod round_tests;
mod route;
mod send;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError, RwLock, Weak},
    time::Duration,
};

use alertbridge_plugin_api::REPEAT_MARK;
use tokio::sync::{Notify, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{clock::Clock, digest::Board, fair::FairSlots, lanes::Lanes, presence::PresenceCache};
pub use self::{
    depth::{Depth, Full, Reservation},
    outcome::{Finding, apply, send_regardless},
    port::{IncidentFault, IncidentPort, SinkLookup, SinkPort, Sinks},
    rate::RecipientRate,
};
use crate::{
    config::{DeliverySettings, OnUncertain},
    metrics::Metrics,
    model::{Outcome, StoredAlert},
    queue::Queue,
    router::Router,
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
        let routed_now = !alert.routed;
        if routed_now {
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
        self.tracker.spawn(this.process(alert, waker, routed_now));
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

    /// Runs `alert`'s rounds until it is finished, handed over or the dispatcher stops. The
    /// first round saves an alert resumed or taken over (settled) even if it changes nothing
    /// else; an alert `routed_now` is not saved for its routing alone: that rides in its first
    /// save that records something (a `sending` mark, an outcome), so an alert that waits in
    /// its lane costs no save. A crash before then leaves it as accepted: routed at the start.
    async fn process(
        self: Arc<Self>,
        mut alert: StoredAlert,
        waker: Arc<Notify>,
        routed_now: bool,
    ) {
        let mut first = !routed_now;
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
}
