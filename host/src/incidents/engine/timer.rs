//! The engine's timer: hands the pages left unhanded, fires the due steps (with a shared store,
//! claimed by compare-and-swap so one host fires each), and records what the pager took.

use tokio_util::sync::CancellationToken;

use super::{CONFLICT_TRIES, Engine, HANDOVER, POLL, RETRY, State, remember};
use crate::incidents::{
    Incident, IncidentError, IncidentEvent, IncidentId, IncidentState, NextStep, Page, PageRequest,
    StepKind, page_text, store::Query,
};

impl Engine {
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
    pub(in crate::incidents) async fn tick(&self) -> Option<i64> {
        let mut st = self.inner.state.lock().await;
        let now = self.inner.clock.now_ms();
        let poll = now + POLL.as_millis() as i64;
        if self.inner.shared {
            // What every host changed: the unresolved incidents as the database has them.
            match self.inner.store.query(Query::Open).await {
                Ok(open) => {
                    // The copies kept are the open ones (bounded; a resolved one is read from
                    // the database when asked for).
                    st.incidents.clear();
                    st.versions.clear();
                    for v in open {
                        remember(&mut st, v);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot read the incidents; the timer tries again");
                    return Some(now + RETRY.as_millis() as i64);
                }
            }
        }
        // A shared store: a page another host recorded is left to it for a while.
        let grace = if self.inner.shared {
            HANDOVER.as_millis() as i64
        } else {
            0
        };
        let ids: Vec<u64> = st.incidents.keys().copied().collect();
        let mut wake: Option<i64> = self.inner.shared.then_some(poll);
        for id in ids {
            let inc = &st.incidents[&id];
            if inc.is_resolved() {
                continue;
            }
            let unhanded: Vec<u32> = inc
                .pages
                .iter()
                .filter(|p| !p.handed && p.at_ms + grace <= now)
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
                if let Err(e) = self.claimed_step(&mut st, IncidentId(id), &reason).await {
                    tracing::warn!(incident = id, error = %crate::error_chain(&e), "cannot record an escalation step");
                    wake = Some(wake.map_or(now + RETRY.as_millis() as i64, |w| w.min(now + 1000)));
                }
            }
            let inc = &st.incidents[&id];
            let mut due = inc.next.map(|n| n.due_ms);
            if let Some(at) = inc
                .pages
                .iter()
                .filter(|p| !p.handed)
                .map(|p| p.at_ms)
                .min()
            {
                let retry = (now + RETRY.as_millis() as i64).max(at + grace);
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
    pub(super) async fn step(
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
    pub(super) async fn hand(
        &self,
        st: &mut State,
        id: IncidentId,
        seq: u32,
    ) -> Result<Option<usize>, IncidentError> {
        let inc = st
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
                self.mark_handed(st, inc, seq, reachable).await?;
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

    /// Records that page `seq` was handed; a conflict (another host changed the incident
    /// meanwhile) records it on the incident as it is now.
    pub(super) async fn mark_handed(
        &self,
        st: &mut State,
        mut inc: Incident,
        seq: u32,
        reachable: usize,
    ) -> Result<(), IncidentError> {
        let id = inc.id;
        for _ in 0..CONFLICT_TRIES {
            let Some(page) = inc.pages.iter_mut().find(|p| p.seq == seq) else {
                return Ok(());
            };
            page.handed = true;
            page.reachable = Some(reachable);
            match self.commit(st, &inc).await {
                Err(IncidentError::Conflict(_)) => inc = self.fresh(st, id).await?,
                r => return r,
            }
        }
        Err(IncidentError::Conflict(id))
    }

    /// [`Engine::step`]; on a conflict (another host changed the incident first) the step is
    /// tried again on the incident as it is now if it is still due (the other host only
    /// joined an alert, say), else left alone (it fired the step itself, or someone acked).
    pub(super) async fn claimed_step(
        &self,
        st: &mut State,
        id: IncidentId,
        reason: &str,
    ) -> Result<(), IncidentError> {
        for _ in 0..CONFLICT_TRIES {
            match self.step(st, id, reason).await {
                Err(IncidentError::Conflict(_)) => {
                    let inc = self.fresh(st, id).await?;
                    let now = self.inner.clock.now_ms();
                    if inc.is_resolved() || inc.next.is_none_or(|n| n.due_ms > now) {
                        tracing::debug!(
                            incident = id.0,
                            "another host changed the incident first; nothing is due"
                        );
                        return Ok(());
                    }
                }
                r => return r,
            }
        }
        Err(IncidentError::Conflict(id))
    }
}
