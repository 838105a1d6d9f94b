//! One round of an alert: expiry and silences, the due recipients sink by sink ([`prepare`]),
//! the durable `sending` mark before any send, the sends side by side, each sink's outcomes
//! recorded as its call ends, fallback routes, and when the next round is due.
//!
//! [`prepare`]: super::prepare

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::PoisonError,
};

use alertbridge_plugin_api::{
    CONVERSATION_ATTRIBUTE, DeliveryStatus, kit::format::unix_ms_rfc3339,
};
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};

use super::{
    Dispatcher, Finding, HandedOver, INCIDENT_SINK, ROUND_SLACK_MS, apply,
    digest::{DigestKey, Member},
    prepare::{Send, policy_of},
    route::record,
};
use crate::{
    model::{Outcome, StoredAlert},
    queue::QueueError,
    router::Planned,
};

impl Dispatcher {
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

    /// One round; returns when the next one is due (Unix ms), or `None` if every unfinished
    /// recipient waits behind another alert in its lane (the task is woken when that changes);
    /// [`HandedOver`] if the queue refused a save because another host took the alert over.
    /// `unsaved`: the alert holds changes not yet saved; the round saves it even if it changes
    /// nothing itself.
    pub(super) async fn round(
        &self,
        alert: &mut StoredAlert,
        unsaved: bool,
    ) -> Result<Option<i64>, HandedOver> {
        let plan = self.plan();
        let (router, settings) = (&plan.router, &plan.settings);
        let now = self.clock.now_ms();
        let before: Vec<Outcome> = alert.recipients.iter().map(|r| r.outcome).collect();
        let mut dirty = unsaved;
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
            .map(|send| {
                self.run_job(settings, Self::job(&plan, alert, send))
                    .boxed()
            })
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
}
