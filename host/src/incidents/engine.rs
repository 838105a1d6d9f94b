//! The incident engine: opens and joins incidents, pages their levels on time, takes
//! acknowledgements, resolutions and "escalate now", and fires the steps that fell due while
//! the bridge was down once, right after it starts.
//!
//! Every change is committed to the [`IncidentStore`] before the call returns (one lock keeps
//! them in order). A step is recorded before its page is handed to the [`Pager`]; the timer
//! hands again every page left unhanded (a crash, a refusing queue), and the pager's dedup on
//! [`Page::key`] makes each page happen once.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use alertbridge_plugin_api::Alert;
use tokio::{
    sync::{Mutex, Notify, broadcast},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    EscalationPolicy, Incident, IncidentError, IncidentEvent, IncidentId, IncidentState,
    IncidentStore, Mark, NextStep, Page, PageRequest, Pager, StepKind,
    early::{EarlyResolve, EarlyResolves},
    page_text,
};

/// How soon a page the pager refused is offered again.
const RETRY: Duration = Duration::from_secs(1);

/// Wall-clock milliseconds read through tokio's clock, so tests can pause and advance it.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall0: i64,
    at0: Instant,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self::starting_at(crate::model::now_ms())
    }

    /// A clock that reads `wall_ms` now (tests: a restart some time later).
    pub fn starting_at(wall_ms: i64) -> Self {
        Self {
            wall0: wall_ms,
            at0: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.wall0 + i64::try_from(self.at0.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
    }

    fn instant_at(&self, wall_ms: i64) -> Instant {
        let ahead = u64::try_from(wall_ms - self.now_ms()).unwrap_or(0);
        Instant::now() + Duration::from_millis(ahead)
    }
}

/// What [`Engine::open_or_join`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub id: IncidentId,
    /// True if the alert joined an open incident (nobody paged again).
    pub joined: bool,
    pub seen: u32,
}

struct State {
    incidents: BTreeMap<u64, Incident>,
    next_id: u64,
    /// Resolves that found no incident, waiting for their in-flight firing alert.
    early: EarlyResolves,
}

struct Inner {
    store: Arc<dyn IncidentStore>,
    pager: Arc<dyn Pager>,
    policies: RwLock<BTreeMap<String, Arc<EscalationPolicy>>>,
    state: Mutex<State>,
    wake: Notify,
    events: broadcast::Sender<IncidentEvent>,
    clock: Clock,
}

/// The incident engine; clones share it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Loads the stored incidents. Call [`Engine::run`] to start the timer (it first hands
    /// every page left unhanded and fires every step that fell due).
    pub fn open(
        store: Arc<dyn IncidentStore>,
        pager: Arc<dyn Pager>,
        policies: Vec<EscalationPolicy>,
        clock: Clock,
    ) -> Result<Self, IncidentError> {
        let incidents: BTreeMap<u64, Incident> =
            store.load()?.into_iter().map(|i| (i.id.0, i)).collect();
        let next_id = incidents.keys().next_back().map_or(1, |k| k + 1);
        let early = EarlyResolves::new(store.load_early()?);
        let (events, _) = broadcast::channel(1024);
        let engine = Self {
            inner: Arc::new(Inner {
                store,
                pager,
                policies: RwLock::new(BTreeMap::new()),
                state: Mutex::new(State {
                    incidents,
                    next_id,
                    early,
                }),
                wake: Notify::new(),
                events,
                clock,
            }),
        };
        engine.set_policies(policies);
        Ok(engine)
    }

    /// Replaces the policies (a reload). Open incidents keep their policy's name; one whose
    /// policy is gone stops escalating.
    pub fn set_policies(&self, policies: Vec<EscalationPolicy>) {
        let map = policies
            .into_iter()
            .map(|p| (p.name.clone(), Arc::new(p)))
            .collect();
        *self
            .inner
            .policies
            .write()
            .unwrap_or_else(PoisonError::into_inner) = map;
        self.inner.wake.notify_one();
    }

    fn policy(&self, name: &str) -> Option<Arc<EscalationPolicy>> {
        let map = self
            .inner
            .policies
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(name).cloned()
    }

    /// Events as they happen (after their commit).
    pub fn subscribe(&self) -> broadcast::Receiver<IncidentEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, e: IncidentEvent) {
        let _ = self.inner.events.send(e);
    }

    /// An alert a route with escalation `policy` took: joins the unresolved incident with the
    /// same dedup key, or opens a new one and pages its level 1 at once.
    pub async fn open_or_join(
        &self,
        alert_id: u64,
        source: &str,
        alert: &Alert,
        route: &str,
        policy: &str,
        pass_unreachable: bool,
    ) -> Result<Opened, IncidentError> {
        self.open_or_join_at(
            alert_id,
            None,
            source,
            alert,
            route,
            policy,
            pass_unreachable,
        )
        .await
    }

    /// [`Engine::open_or_join`]; with `accepted_ms`, a resolve of its dedup key remembered at
    /// or after that time opens the incident already resolved, paging nobody.
    #[allow(clippy::too_many_arguments)]
    async fn open_or_join_at(
        &self,
        alert_id: u64,
        accepted_ms: Option<i64>,
        source: &str,
        alert: &Alert,
        route: &str,
        policy: &str,
        pass_unreachable: bool,
    ) -> Result<Opened, IncidentError> {
        let pol = self
            .policy(policy)
            .ok_or_else(|| IncidentError::UnknownPolicy(policy.into()))?;
        let mut st = self.inner.state.lock().await;
        if let Some(key) = alert.dedup_key.as_deref() {
            let open = st
                .incidents
                .values()
                .find(|i| !i.is_resolved() && i.dedup_key.as_deref() == Some(key))
                .cloned();
            if let Some(mut inc) = open {
                if !inc.alert_ids.contains(&alert_id) {
                    inc.alert_ids.push(alert_id);
                    inc.seen += 1;
                    self.inner.store.save(&inc).await?;
                    st.incidents.insert(inc.id.0, inc.clone());
                    tracing::info!(
                        incident = inc.id.0,
                        alert_id,
                        seen = inc.seen,
                        "alert joined the open incident"
                    );
                    self.emit(IncidentEvent::Joined {
                        id: inc.id,
                        alert_id,
                        seen: inc.seen,
                    });
                }
                return Ok(Opened {
                    id: inc.id,
                    joined: true,
                    seen: inc.seen,
                });
            }
        }
        let now = self.inner.clock.now_ms();
        let early = match (alert.dedup_key.as_deref(), accepted_ms) {
            (Some(key), Some(accepted)) => Some(st.early.take(key, accepted, now)),
            _ => None,
        };
        let id = IncidentId(st.next_id);
        let inc = Incident {
            id,
            state: IncidentState::Open,
            policy: pol.name.clone(),
            route: route.to_owned(),
            source: source.to_owned(),
            dedup_key: alert.dedup_key.clone(),
            title: alert.subject.clone(),
            alert_ids: vec![alert_id],
            seen: 1,
            opened_ms: now,
            pass_unreachable,
            pages: Vec::new(),
            next: Some(NextStep {
                round: 0,
                level: 0,
                due_ms: now,
                kind: StepKind::Escalate,
            }),
            acked: None,
            resolved: None,
            conversations: BTreeMap::new(),
            sinks: BTreeMap::new(),
        };
        let (resolved, consume) = early.unzip();
        if let Some(r) = resolved.flatten() {
            return self
                .open_resolved(&mut st, inc, r, consume.unwrap_or_default())
                .await;
        }
        self.inner.store.save(&inc).await?;
        st.next_id += 1;
        st.incidents.insert(id.0, inc);
        if let Some(c) = consume.filter(|c| !c.delete.is_empty()) {
            // A resolve older than this alert: a new problem; the remembered one is spent.
            self.inner.store.save_early(&c).await?;
            st.early.apply(c);
        }
        tracing::info!(incident = id.0, alert_id, policy, route, "incident opened");
        self.emit(IncidentEvent::Opened { id });
        self.step(&mut st, id, "first page").await?;
        self.inner.wake.notify_one();
        Ok(Opened {
            id,
            joined: false,
            seen: 1,
        })
    }

    /// Opens `inc` already resolved by the remembered `early` resolve: nobody is paged; the
    /// remembered resolve is consumed after the incident is committed.
    async fn open_resolved(
        &self,
        st: &mut State,
        mut inc: Incident,
        early: EarlyResolve,
        consume: super::early::Change,
    ) -> Result<Opened, IncidentError> {
        let id = inc.id;
        inc.state = IncidentState::Resolved;
        inc.next = None;
        inc.resolved = Some(Mark {
            by: early.by.clone(),
            at_ms: early.at_ms,
        });
        self.inner.store.save(&inc).await?;
        st.next_id += 1;
        st.incidents.insert(id.0, inc);
        self.inner.store.save_early(&consume).await?;
        st.early.apply(consume);
        tracing::info!(
            incident = id.0,
            by = early.by,
            "incident resolved (by {}) before it paged",
            early.by
        );
        self.emit(IncidentEvent::Opened { id });
        self.emit(IncidentEvent::Resolved { id, by: early.by });
        Ok(Opened {
            id,
            joined: false,
            seen: 1,
        })
    }

    /// [`Engine::open_or_join`] once per alert: if the incident this alert opened is there
    /// already (the alert is taken again after a crash), answers that one. `accepted_ms`: when
    /// the queue took the alert (an incident opened before it holds another alert of that id).
    #[allow(clippy::too_many_arguments)]
    pub async fn take_alert(
        &self,
        alert_id: u64,
        accepted_ms: i64,
        source: &str,
        alert: &Alert,
        route: &str,
        policy: &str,
        pass_unreachable: bool,
    ) -> Result<Opened, IncidentError> {
        {
            let st = self.inner.state.lock().await;
            if let Some(inc) = st
                .incidents
                .values()
                .find(|i| i.opened_ms >= accepted_ms && i.alert_ids.first() == Some(&alert_id))
            {
                return Ok(Opened {
                    id: inc.id,
                    joined: false,
                    seen: inc.seen,
                });
            }
        }
        self.open_or_join_at(
            alert_id,
            Some(accepted_ms),
            source,
            alert,
            route,
            policy,
            pass_unreachable,
        )
        .await
    }

    /// An alert the queue took as a repeat of dedup key `key` joins the unresolved incident
    /// with that key ("seen N×"; nobody is paged again). `Ok(None)` if there is none.
    pub async fn join_by_key(&self, key: &str) -> Result<Option<Incident>, IncidentError> {
        let mut st = self.inner.state.lock().await;
        let Some(mut inc) = st
            .incidents
            .values()
            .find(|i| !i.is_resolved() && i.dedup_key.as_deref() == Some(key))
            .cloned()
        else {
            return Ok(None);
        };
        inc.seen = inc.seen.saturating_add(1);
        self.commit(&mut st, &inc).await?;
        tracing::info!(
            incident = inc.id.0,
            seen = inc.seen,
            "a repeat joined the open incident"
        );
        self.emit(IncidentEvent::Joined {
            id: inc.id,
            alert_id: inc.alert_ids.first().copied().unwrap_or_default(),
            seen: inc.seen,
        });
        Ok(Some(inc))
    }

    /// Delivery's word on page `seq`: `reached` recipients got it. A level nobody was reached
    /// at is passed at once when the incident says so (its route skips the offline), if it is
    /// still the last page of an incident nobody acknowledged.
    pub async fn page_reached(
        &self,
        id: IncidentId,
        seq: u32,
        reached: usize,
    ) -> Result<(), IncidentError> {
        let mut st = self.inner.state.lock().await;
        let mut inc = st
            .incidents
            .get(&id.0)
            .cloned()
            .ok_or(IncidentError::Unknown(id))?;
        let Some(idx) = inc.pages.iter().position(|p| p.seq == seq) else {
            return Ok(());
        };
        let level = inc.pages[idx].level;
        inc.pages[idx].reachable = Some(reached);
        let pass = reached == 0
            && inc.pass_unreachable
            && inc.state == IncidentState::Open
            && idx + 1 == inc.pages.len()
            && inc.next.is_some_and(|n| n.kind == StepKind::Escalate);
        if pass && let Some(n) = inc.next.as_mut() {
            n.due_ms = self.inner.clock.now_ms();
        }
        self.commit(&mut st, &inc).await?;
        if pass {
            tracing::info!(
                incident = id.0,
                level,
                "nobody reachable: the level is passed"
            );
            self.step(&mut st, id, &format!("nobody reachable at level {level}"))
                .await?;
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Acknowledges: no more levels (until `ack_timeout_secs`). `Ok(false)` if it already was.
    pub async fn ack(&self, id: IncidentId, by: &str) -> Result<(Incident, bool), IncidentError> {
        let mut st = self.inner.state.lock().await;
        let mut inc = get_open(&st, id)?;
        if inc.state == IncidentState::Acknowledged {
            return Ok((inc, false));
        }
        let now = self.inner.clock.now_ms();
        inc.state = IncidentState::Acknowledged;
        inc.acked = Some(Mark {
            by: by.to_owned(),
            at_ms: now,
        });
        let timeout = self.policy(&inc.policy).map_or(0, |p| p.ack_timeout_secs);
        inc.next = (timeout > 0).then(|| {
            let last = inc.pages.last();
            NextStep {
                round: last.map_or(0, |p| p.round),
                level: last.map_or(0, |p| p.level.saturating_sub(1)),
                due_ms: now + i64::try_from(timeout.saturating_mul(1000)).unwrap_or(i64::MAX / 4),
                kind: StepKind::AckTimeout,
            }
        });
        self.commit(&mut st, &inc).await?;
        tracing::info!(incident = id.0, by, "incident acknowledged");
        self.emit(IncidentEvent::Acknowledged {
            id,
            by: by.to_owned(),
        });
        self.inner.wake.notify_one();
        Ok((inc, true))
    }

    /// Resolves: nothing more happens. `Err(AlreadyResolved)` if it already was.
    pub async fn resolve(&self, id: IncidentId, by: &str) -> Result<Incident, IncidentError> {
        let mut st = self.inner.state.lock().await;
        let inc = get_open(&st, id)?;
        self.resolve_locked(&mut st, inc, by).await
    }

    /// A resolved alert from its source: resolves the unresolved incident with this dedup key,
    /// recorded as by `by` (the source). `Ok(None)` if there is none: the resolve is then
    /// remembered (durably, bounded, for a while) for a firing alert with that key still in
    /// flight, which then opens its incident already resolved.
    pub async fn resolve_by_key(
        &self,
        key: &str,
        by: &str,
    ) -> Result<Option<Incident>, IncidentError> {
        let mut st = self.inner.state.lock().await;
        let open = st
            .incidents
            .values()
            .find(|i| !i.is_resolved() && i.dedup_key.as_deref() == Some(key))
            .cloned();
        if let Some(inc) = open {
            return self.resolve_locked(&mut st, inc, by).await.map(Some);
        }
        let now = self.inner.clock.now_ms();
        let change = st.early.remember(
            EarlyResolve {
                key: key.to_owned(),
                by: by.to_owned(),
                at_ms: now,
            },
            now,
        );
        self.inner.store.save_early(&change).await?;
        st.early.apply(change);
        tracing::info!(
            key,
            by,
            "a resolve found no incident; remembered for its firing alert"
        );
        Ok(None)
    }

    async fn resolve_locked(
        &self,
        st: &mut State,
        mut inc: Incident,
        by: &str,
    ) -> Result<Incident, IncidentError> {
        inc.state = IncidentState::Resolved;
        inc.resolved = Some(Mark {
            by: by.to_owned(),
            at_ms: self.inner.clock.now_ms(),
        });
        inc.next = None;
        self.commit(st, &inc).await?;
        tracing::info!(incident = inc.id.0, by, "incident resolved");
        self.emit(IncidentEvent::Resolved {
            id: inc.id,
            by: by.to_owned(),
        });
        Ok(inc)
    }

    /// Pages the next level now (`esc`), acknowledged or not. `Ok((_, false))` when every
    /// level and repeat was paged already.
    pub async fn escalate_now(
        &self,
        id: IncidentId,
        by: &str,
    ) -> Result<(Incident, bool), IncidentError> {
        let mut st = self.inner.state.lock().await;
        let mut inc = get_open(&st, id)?;
        let now = self.inner.clock.now_ms();
        let next = match inc.next {
            Some(n) if n.kind == StepKind::Escalate => Some(n),
            _ => {
                let last = inc.pages.last();
                let (round, level) = last.map_or((0, 0), |p| (p.round, p.level.saturating_sub(1)));
                self.policy(&inc.policy)
                    .and_then(|p| p.after(round, level))
                    .map(|(round, level, _)| NextStep {
                        round,
                        level,
                        due_ms: now,
                        kind: StepKind::Escalate,
                    })
            }
        };
        let Some(next) = next else {
            return Ok((inc, false));
        };
        inc.state = IncidentState::Open;
        inc.next = Some(NextStep {
            due_ms: now,
            ..next
        });
        self.commit(&mut st, &inc).await?;
        self.emit(IncidentEvent::Escalated {
            id,
            by: by.to_owned(),
        });
        self.step(&mut st, id, &format!("escalated by {by}"))
            .await?;
        self.inner.wake.notify_one();
        Ok((st.incidents[&id.0].clone(), true))
    }

    /// Remembers the conversation `user` was reached in for this incident.
    pub async fn set_conversation(
        &self,
        id: IncidentId,
        user: &str,
        conversation: &str,
    ) -> Result<(), IncidentError> {
        let mut st = self.inner.state.lock().await;
        let mut inc = st
            .incidents
            .get(&id.0)
            .cloned()
            .ok_or(IncidentError::Unknown(id))?;
        if inc.conversations.get(user).map(String::as_str) == Some(conversation) {
            return Ok(());
        }
        inc.conversations
            .insert(user.to_owned(), conversation.to_owned());
        self.commit(&mut st, &inc).await
    }

    /// Remembers that sink instance `sink` reached `user` for this incident (in `conversation`
    /// when the sink names one): news for them goes back through that sink.
    pub async fn set_reached(
        &self,
        id: IncidentId,
        user: &str,
        sink: &str,
        conversation: Option<&str>,
    ) -> Result<(), IncidentError> {
        let mut st = self.inner.state.lock().await;
        let mut inc = st
            .incidents
            .get(&id.0)
            .cloned()
            .ok_or(IncidentError::Unknown(id))?;
        let same_sink = inc.sinks.get(user).map(String::as_str) == Some(sink);
        let same_conv =
            conversation.is_none_or(|c| inc.conversations.get(user).map(String::as_str) == Some(c));
        if same_sink && same_conv {
            return Ok(());
        }
        inc.sinks.insert(user.to_owned(), sink.to_owned());
        if let Some(c) = conversation {
            inc.conversations.insert(user.to_owned(), c.to_owned());
        }
        self.commit(&mut st, &inc).await
    }

    /// One incident.
    pub async fn get(&self, id: IncidentId) -> Option<Incident> {
        self.inner.state.lock().await.incidents.get(&id.0).cloned()
    }

    /// Every incident, newest first.
    pub async fn list(&self) -> Vec<Incident> {
        self.inner
            .state
            .lock()
            .await
            .incidents
            .values()
            .rev()
            .cloned()
            .collect()
    }

    /// The unresolved incidents `user` was paged for, newest first.
    pub async fn open_for_user(&self, user: &str) -> Vec<Incident> {
        let st = self.inner.state.lock().await;
        st.incidents
            .values()
            .rev()
            .filter(|i| !i.is_resolved() && i.was_paged(user))
            .cloned()
            .collect()
    }

    /// The timer: hands unhanded pages, fires due steps, sleeps until the next one; ends on
    /// `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let wake_at = self.tick().await;
            let sleep = async {
                match wake_at {
                    Some(ms) => tokio::time::sleep_until(self.inner.clock.instant_at(ms)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.inner.wake.notified() => {}
                () = sleep => {}
            }
        }
    }

    /// One pass of the timer; answers when the next pass is due (Unix ms).
    async fn tick(&self) -> Option<i64> {
        let mut st = self.inner.state.lock().await;
        let now = self.inner.clock.now_ms();
        let ids: Vec<u64> = st.incidents.keys().copied().collect();
        let mut wake: Option<i64> = None;
        for id in ids {
            let inc = &st.incidents[&id];
            if inc.is_resolved() {
                continue;
            }
            let unhanded: Vec<u32> = inc
                .pages
                .iter()
                .filter(|p| !p.handed)
                .map(|p| p.seq)
                .collect();
            for seq in unhanded {
                if let Err(e) = self.hand(&mut st, IncidentId(id), seq).await {
                    tracing::warn!(incident = id, error = %crate::error_chain(&e), "cannot record a handed page");
                }
            }
            let inc = &st.incidents[&id];
            if let Some(n) = inc.next
                && n.due_ms <= now
            {
                let reason = match n.kind {
                    StepKind::AckTimeout => "acknowledged but not resolved in time".to_owned(),
                    StepKind::Escalate => format!("nobody acknowledged; level {}", n.level + 1),
                };
                if let Err(e) = self.step(&mut st, IncidentId(id), &reason).await {
                    tracing::warn!(incident = id, error = %crate::error_chain(&e), "cannot record an escalation step");
                    wake = Some(wake.map_or(now + RETRY.as_millis() as i64, |w| w.min(now + 1000)));
                }
            }
            let inc = &st.incidents[&id];
            let mut due = inc.next.map(|n| n.due_ms);
            if inc.pages.iter().any(|p| !p.handed) {
                let retry = now + RETRY.as_millis() as i64;
                due = Some(due.map_or(retry, |d| d.min(retry)));
            }
            if let Some(d) = due {
                wake = Some(wake.map_or(d, |w| w.min(d)));
            }
        }
        wake
    }

    /// Fires the incident's due step: records the page and the step after it, then hands the
    /// page; a level with nobody reachable is passed at once when the incident says so.
    async fn step(
        &self,
        st: &mut State,
        id: IncidentId,
        reason: &str,
    ) -> Result<(), IncidentError> {
        let mut reason = reason.to_owned();
        loop {
            let mut inc = st
                .incidents
                .get(&id.0)
                .cloned()
                .ok_or(IncidentError::Unknown(id))?;
            let Some(step) = inc.next else { return Ok(()) };
            let Some(policy) = self.policy(&inc.policy) else {
                tracing::warn!(
                    incident = id.0,
                    policy = inc.policy,
                    "escalation policy gone; the incident stops escalating"
                );
                inc.next = None;
                return self.commit(st, &inc).await;
            };
            let Some(level) = policy.levels.get(step.level) else {
                inc.next = None;
                return self.commit(st, &inc).await;
            };
            let now = self.inner.clock.now_ms();
            let seq = u32::try_from(inc.pages.len() + 1).unwrap_or(u32::MAX);
            inc.pages.push(Page {
                seq,
                round: step.round,
                level: step.level + 1,
                users: level.users.clone(),
                groups: level.groups.clone(),
                at_ms: now,
                handed: false,
                reachable: None,
                reason: reason.clone(),
            });
            if step.kind == StepKind::AckTimeout {
                inc.state = IncidentState::Open;
                inc.acked = None;
            }
            inc.next = policy
                .after(step.round, step.level)
                .map(|(round, level, wait)| NextStep {
                    round,
                    level,
                    due_ms: now + wait.as_millis() as i64,
                    kind: StepKind::Escalate,
                });
            self.commit(st, &inc).await?;
            let reachable = self.hand(st, id, seq).await?;
            let inc = &st.incidents[&id.0];
            if reachable == Some(0)
                && inc.pass_unreachable
                && inc.state == IncidentState::Open
                && inc.next.is_some()
            {
                reason = format!("nobody reachable at level {}", step.level + 1);
                let mut inc = inc.clone();
                if let Some(n) = inc.next.as_mut() {
                    n.due_ms = now;
                }
                self.commit(st, &inc).await?;
                continue;
            }
            return Ok(());
        }
    }

    /// Hands page `seq` to the pager and records that it did; `None` if the pager refused
    /// (the timer offers it again).
    async fn hand(
        &self,
        st: &mut State,
        id: IncidentId,
        seq: u32,
    ) -> Result<Option<usize>, IncidentError> {
        let mut inc = st
            .incidents
            .get(&id.0)
            .cloned()
            .ok_or(IncidentError::Unknown(id))?;
        let Some(idx) = inc.pages.iter().position(|p| p.seq == seq) else {
            return Ok(None);
        };
        let page = inc.pages[idx].clone();
        let req = PageRequest {
            incident: id,
            route: inc.route.clone(),
            key: page.key(id),
            level: page.level,
            users: page.users.clone(),
            groups: page.groups.clone(),
            text: page_text(&inc),
        };
        match self.inner.pager.page(req).await {
            Ok(reachable) => {
                inc.pages[idx].handed = true;
                inc.pages[idx].reachable = Some(reachable);
                self.commit(st, &inc).await?;
                tracing::info!(
                    incident = id.0,
                    level = page.level,
                    round = page.round,
                    reachable,
                    "level paged"
                );
                self.emit(IncidentEvent::Paged {
                    id,
                    level: page.level,
                    round: page.round,
                    users: page.users,
                    reason: page.reason,
                });
                Ok(Some(reachable))
            }
            Err(e) => {
                tracing::warn!(incident = id.0, level = page.level, error = %crate::error_chain(&e), "page not handed over; offered again");
                Ok(None)
            }
        }
    }

    async fn commit(&self, st: &mut State, inc: &Incident) -> Result<(), IncidentError> {
        self.inner.store.save(inc).await?;
        st.incidents.insert(inc.id.0, inc.clone());
        Ok(())
    }
}

fn get_open(st: &State, id: IncidentId) -> Result<Incident, IncidentError> {
    let inc = st
        .incidents
        .get(&id.0)
        .cloned()
        .ok_or(IncidentError::Unknown(id))?;
    if inc.is_resolved() {
        return Err(IncidentError::AlreadyResolved(id));
    }
    Ok(inc)
}
