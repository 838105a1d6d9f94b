//! Before a send, for the due recipients of one sink: the sink's lookup, presence (cached),
//! the offline policy, digests and folds, the recipient's lane and rate limit — what is found
//! about each recipient, and who is sent to now.

use std::sync::Arc;

use alertbridge_plugin_api::{ErrorKind, PluginError, PresenceState};

use super::{
    Dispatcher, Finding, Plan, SINK_START_WAIT, SinkLookup, SinkPort,
    digest::{DigestKey, Stand},
    presence, send_regardless,
};
use crate::{
    config::DeliverySettings,
    model::StoredAlert,
    router::{OfflinePolicy, Router},
};

impl Dispatcher {
    /// Presence, lanes and the rate limit for the due recipients `idx` of one sink: what is
    /// found about each, and who to send to now.
    pub(super) async fn prepare(
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
pub(super) struct Prepared {
    pub(super) findings: Vec<(usize, Finding)>,
    /// Due, reachable, and behind an earlier alert in their lane.
    pub(super) gated: Vec<usize>,
    pub(super) send: Option<Send>,
    /// Recipients to record as sent in a digest (its id), then join it.
    pub(super) digests: Vec<(usize, DigestKey, u64)>,
}

/// Recipients to send to now through one sink.
pub(super) struct Send {
    pub(super) sink: String,
    pub(super) port: Arc<dyn SinkPort>,
    pub(super) idx: Vec<usize>,
}

/// The digest that folds what waits for `user` through `sink` while its rate limit holds.
fn fold_key(sink: &str, user: &str) -> DigestKey {
    DigestKey {
        sink: sink.to_owned(),
        user: user.to_owned(),
        group: None,
    }
}

pub(super) fn policy_of(router: &Router, route: &str) -> OfflinePolicy {
    router
        .route(route)
        .map_or(OfflinePolicy::Skip, |r| r.offline.clone())
}
