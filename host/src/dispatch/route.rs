//! Routing a new alert to its recipient records, and handing the records of escalation routes
//! to the incident engine ([`INCIDENT_SINK`]) in their lane's turn.

use std::collections::BTreeSet;

use alertbridge_plugin_api::{DeliveryStatus, ErrorKind, PluginError, RecipientResult};

use super::{Dispatcher, Finding, INCIDENT_SINK, IncidentFault, Plan, prepare::policy_of};
use crate::{
    model::{Outcome, RecipientRecord, StoredAlert},
    router::{ADMIN_SOURCE, OfflinePolicy, Planned, ROUTE_ATTRIBUTE, Route},
};

impl Dispatcher {
    /// The records of a new alert: an incident's page goes to the users and groups it names
    /// through its incident's route; another alert gets one [`INCIDENT_SINK`] record per
    /// matching route that names an escalation policy, and the recipients of the others.
    pub(super) fn route_alert(
        &self,
        plan: &Plan,
        alert: &StoredAlert,
        now: i64,
    ) -> Vec<RecipientRecord> {
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
    pub(super) async fn open_incidents(
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
}

pub(super) fn record(route: String, sink: String, user: String, now: i64) -> RecipientRecord {
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
