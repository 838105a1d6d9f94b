//! The incident engine: opens and joins incidents, pages their levels on time, takes
//! acknowledgements, resolutions and "escalate now", and fires the steps that fell due while
//! the bridge was down once, right after it starts.
//!
//! Every change is committed to the [`IncidentStore`] before the call returns (one lock keeps
//! them in order). A step is recorded before its page is handed to the [`Pager`]; the timer
//! hands again every page left unhanded (a crash, a refusing queue), and the pager's dedup on
//! [`Page::key`] makes each page happen once.
//!
//! With a shared store (PostgreSQL, several hosts) the database is the truth: each change reads
//! the incident again and saves it only if nobody changed it meanwhile (compare-and-swap on its
//! version; on a conflict the change is made again on the new state, so a second `ack` answers
//! "already acknowledged"). The timer reads the unresolved incidents every [`POLL`] and claims a
//! due step by that same compare-and-swap before paging: only the host that wins pages. A page
//! another host recorded but did not hand within [`HANDOVER`] (it died) is handed by a
//! survivor; the pager's dedup on [`Page::key`] keeps it once. The reads (`get`, `page`,
//! `open_incidents`) ask the database, so every host shows every host's changes at once.

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

use super::{
    EscalationPolicy, Incident, IncidentError, IncidentEvent, IncidentId, IncidentState,
    IncidentStore, Mark, NextStep, Pager, StepKind,
    early::{EarlyResolve, EarlyResolves},
    store::{PageState, Query},
};

mod shared;
mod timer;

use self::shared::remember;

/// How soon a page the pager refused is offered again.
const RETRY: Duration = Duration::from_secs(1);
/// A shared store: how often the timer reads what the other hosts changed.
pub const POLL: Duration = Duration::from_secs(1);
/// A shared store: how long a page another host recorded may stay unhanded before this host
/// hands it (that host died between recording and handing).
pub const HANDOVER: Duration = Duration::from_secs(5);
/// How many times a change is made again after another host changed the incident first.
const CONFLICT_TRIES: u32 = 8;

/// Wall-clock milliseconds: the system's own (the clock the queue stamps `accepted_ms` with,
/// so a resolve remembered after an alert was accepted never reads as earlier), or, in tests,
/// read through tokio's clock so they can pause and advance it.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `None`: the system's wall clock.
    paused: Option<(i64, Instant)>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self { paused: None }
    }

    /// A clock that reads `wall_ms` now and then goes on with tokio's clock (tests: a restart
    /// some time later).
    pub fn starting_at(wall_ms: i64) -> Self {
        Self {
            paused: Some((wall_ms, Instant::now())),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match self.paused {
            None => crate::model::now_ms(),
            Some((wall0, at0)) => {
                wall0 + i64::try_from(at0.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
            }
        }
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
    /// Embedded store: every incident. Shared store: those read lately (the database is the
    /// truth; [`Engine::fresh`] reads it again).
    incidents: BTreeMap<u64, Incident>,
    /// Shared store: the version each cached incident was read at.
    versions: BTreeMap<u64, i64>,
    next_id: u64,
    /// Resolves that found no incident, waiting for their in-flight firing alert.
    early: EarlyResolves,
}

struct Inner {
    store: Arc<dyn IncidentStore>,
    /// The store is shared with other hosts.
    shared: bool,
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
        // A shared store is read by the timer's first pass and before each change.
        let shared = store.shared();
        let incidents: BTreeMap<u64, Incident> = if shared {
            BTreeMap::new()
        } else {
            store.load()?.into_iter().map(|i| (i.id.0, i)).collect()
        };
        let next_id = incidents.keys().next_back().map_or(1, |k| k + 1);
        let early = EarlyResolves::new(if shared {
            Vec::new()
        } else {
            store.load_early()?
        });
        let (events, _) = broadcast::channel(1024);
        let engine = Self {
            inner: Arc::new(Inner {
                store,
                shared,
                pager,
                policies: RwLock::new(BTreeMap::new()),
                state: Mutex::new(State {
                    incidents,
                    versions: BTreeMap::new(),
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
        self.retry("open an incident", || {
            self.open_or_join_once(
                alert_id,
                None,
                source,
                alert,
                route,
                policy,
                pass_unreachable,
            )
        })
        .await
    }

    /// [`Engine::open_or_join`] once (no retry on a conflict); with `accepted_ms`, a resolve of
    /// its dedup key remembered at or after that time opens the incident already resolved,
    /// paging nobody.
    #[allow(clippy::too_many_arguments)]
    async fn open_or_join_once(
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
        if let Some(key) = alert.dedup_key.as_deref()
            && let Some(mut inc) = self.open_by_key(&mut st, key).await?
        {
            if !inc.alert_ids.contains(&alert_id) {
                inc.alert_ids.push(alert_id);
                inc.seen += 1;
                self.commit(&mut st, &inc).await?;
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
        let now = self.inner.clock.now_ms();
        let early = match (alert.dedup_key.as_deref(), accepted_ms) {
            (Some(key), Some(accepted)) => {
                self.refresh_early(&mut st).await?;
                Some(st.early.take(key, accepted, now))
            }
            _ => None,
        };
        let id = if self.inner.shared {
            IncidentId(self.inner.store.next_id(st.next_id).await?)
        } else {
            IncidentId(st.next_id)
        };
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
        self.create(&mut st, inc).await?;
        if let Some(c) = consume.filter(|c| !c.delete.is_empty()) {
            // A resolve older than this alert: a new problem; the remembered one is spent.
            self.inner.store.save_early(&c).await?;
            st.early.apply(c);
        }
        tracing::info!(incident = id.0, alert_id, policy, route, "incident opened");
        self.emit(IncidentEvent::Opened { id });
        // A conflict here: another host's timer fired the first page already.
        self.claimed_step(&mut st, id, "first page").await?;
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
        self.create(st, inc).await?;
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
        let taken = Query::FirstAlert {
            alert_id,
            since_ms: accepted_ms,
        };
        let found = if self.inner.shared {
            let found = self.inner.store.query(taken).await?;
            found.into_iter().next().map(|v| v.incident)
        } else {
            let st = self.inner.state.lock().await;
            st.incidents.values().find(|i| taken.matches(i)).cloned()
        };
        if let Some(inc) = found {
            return Ok(Opened {
                id: inc.id,
                joined: false,
                seen: inc.seen,
            });
        }
        self.retry("open an incident", || {
            self.open_or_join_once(
                alert_id,
                Some(accepted_ms),
                source,
                alert,
                route,
                policy,
                pass_unreachable,
            )
        })
        .await
    }

    /// An alert the queue took as a repeat of dedup key `key` joins the unresolved incident
    /// with that key ("seen N×"; nobody is paged again). `Ok(None)` if there is none.
    pub async fn join_by_key(&self, key: &str) -> Result<Option<Incident>, IncidentError> {
        self.retry("join an incident", || self.join_by_key_once(key))
            .await
    }

    async fn join_by_key_once(&self, key: &str) -> Result<Option<Incident>, IncidentError> {
        let mut st = self.inner.state.lock().await;
        let Some(mut inc) = self.open_by_key(&mut st, key).await? else {
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
        self.retry("record a page's reach", || {
            self.page_reached_once(id, seq, reached)
        })
        .await
    }

    async fn page_reached_once(
        &self,
        id: IncidentId,
        seq: u32,
        reached: usize,
    ) -> Result<(), IncidentError> {
        let mut st = self.inner.state.lock().await;
        let mut inc = self.fresh(&mut st, id).await?;
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
            self.claimed_step(&mut st, id, &format!("nobody reachable at level {level}"))
                .await?;
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Acknowledges: no more levels (until `ack_timeout_secs`). `Ok(false)` if it already was.
    pub async fn ack(&self, id: IncidentId, by: &str) -> Result<(Incident, bool), IncidentError> {
        self.retry("acknowledge", || self.ack_once(id, by)).await
    }

    async fn ack_once(&self, id: IncidentId, by: &str) -> Result<(Incident, bool), IncidentError> {
        let mut st = self.inner.state.lock().await;
        let mut inc = self.fresh_open(&mut st, id).await?;
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
        self.retry("resolve", || async {
            let mut st = self.inner.state.lock().await;
            let inc = self.fresh_open(&mut st, id).await?;
            self.resolve_locked(&mut st, inc, by).await
        })
        .await
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
        self.retry("resolve by key", || self.resolve_by_key_once(key, by))
            .await
    }

    async fn resolve_by_key_once(
        &self,
        key: &str,
        by: &str,
    ) -> Result<Option<Incident>, IncidentError> {
        let mut st = self.inner.state.lock().await;
        if let Some(inc) = self.open_by_key(&mut st, key).await? {
            return self.resolve_locked(&mut st, inc, by).await.map(Some);
        }
        self.refresh_early(&mut st).await?;
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
        self.retry("escalate", || self.escalate_now_once(id, by))
            .await
    }

    async fn escalate_now_once(
        &self,
        id: IncidentId,
        by: &str,
    ) -> Result<(Incident, bool), IncidentError> {
        let mut st = self.inner.state.lock().await;
        let mut inc = self.fresh_open(&mut st, id).await?;
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
        self.claimed_step(&mut st, id, &format!("escalated by {by}"))
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
        self.retry("remember a conversation", || async {
            let mut st = self.inner.state.lock().await;
            let mut inc = self.fresh(&mut st, id).await?;
            if inc.conversations.get(user).map(String::as_str) == Some(conversation) {
                return Ok(());
            }
            inc.conversations
                .insert(user.to_owned(), conversation.to_owned());
            self.commit(&mut st, &inc).await
        })
        .await
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
        self.retry("remember who reached a user", || async {
            let mut st = self.inner.state.lock().await;
            let mut inc = self.fresh(&mut st, id).await?;
            let same_sink = inc.sinks.get(user).map(String::as_str) == Some(sink);
            let same_conv = conversation
                .is_none_or(|c| inc.conversations.get(user).map(String::as_str) == Some(c));
            if same_sink && same_conv {
                return Ok(());
            }
            inc.sinks.insert(user.to_owned(), sink.to_owned());
            if let Some(c) = conversation {
                inc.conversations.insert(user.to_owned(), c.to_owned());
            }
            self.commit(&mut st, &inc).await
        })
        .await
    }

    /// One incident (a shared store: as the database has it now).
    pub async fn get(&self, id: IncidentId) -> Option<Incident> {
        self.read(Query::One(id)).await.pop()
    }

    /// A page of incidents, newest first: the newest `limit` in `state` with an id below
    /// `before` (all if `None`) (a shared store: as the database has them now).
    pub async fn page(
        &self,
        state: PageState,
        before: Option<IncidentId>,
        limit: usize,
    ) -> Vec<Incident> {
        self.read(Query::Page {
            state,
            before,
            limit,
        })
        .await
    }

    /// The unresolved incidents, newest first.
    pub async fn open_incidents(&self) -> Vec<Incident> {
        let mut open = self.read(Query::Open).await;
        open.sort_by_key(|i| std::cmp::Reverse(i.id));
        open
    }

    /// The unresolved incidents `user` was paged for, newest first.
    pub async fn open_for_user(&self, user: &str) -> Vec<Incident> {
        let mut open = self.open_incidents().await;
        open.retain(|i| i.was_paged(user));
        open
    }
}
