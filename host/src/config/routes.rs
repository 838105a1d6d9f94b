//! The `[[route]]`s: each read and checked against the groups, sinks, sources and escalation
//! policies it names, with its matcher's regexes, its offline policy and its grouping.

use std::{collections::BTreeMap, ops::Range, time::Duration};

use regex::Regex;
use serde_spanned::Spanned;
use toml_edit::{Item, Table};

use super::{
    error::Collector,
    grouping,
    raw::{RawOffline, RawRoute, deserialize, tables},
};
use crate::router::{Matcher, OfflinePolicy, Route, UnknownPresence, parse_severity_condition};

/// Reads the `[[route]]`s, checking each against the `groups`, `sinks`, `sources` and
/// escalation `policies` there are; a route's policy goes into `route_escalations`.
pub(super) fn routes(
    c: &mut Collector<'_>,
    root: &Table,
    groups: &BTreeMap<String, Vec<String>>,
    sinks: &[&str],
    sources: &[&str],
    (policies, route_escalations): (&[&str], &mut BTreeMap<String, String>),
) -> Vec<Route> {
    let Some(tables) = tables(c, root, "route") else {
        return vec![];
    };
    let raws: Vec<RawRoute> = tables
        .iter()
        .filter_map(|t| deserialize(c, &Item::Table(t.clone()), "[[route]]"))
        .collect();
    let names: Vec<String> = raws.iter().map(|r| r.name.get_ref().clone()).collect();
    let mut out = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
        let name = raw.name.get_ref().clone();
        if names[..i].contains(&name) {
            c.at(
                Some(raw.name.span()),
                format!("route `{name}` is defined twice"),
            );
        }
        for g in &raw.groups {
            if !groups.contains_key(g.get_ref()) {
                c.at(
                    Some(g.span()),
                    format!("route `{name}`: no group `{}` in [groups]", g.get_ref()),
                );
            }
        }
        if let Some(e) = &raw.escalation {
            if policies.contains(&e.get_ref().as_str()) {
                route_escalations.insert(name.clone(), e.get_ref().clone());
            } else {
                c.at(
                    Some(e.span()),
                    format!("route `{name}`: no [[escalation]] named `{}`", e.get_ref()),
                );
            }
        }
        if raw.sinks.get_ref().is_empty() {
            c.at(
                Some(raw.sinks.span()),
                format!("route `{name}`: `sinks` is empty"),
            );
        }
        for s in raw.sinks.get_ref() {
            if !sinks.contains(&s.get_ref().as_str()) {
                c.at(
                    Some(s.span()),
                    format!("route `{name}`: no [[sink]] named `{}`", s.get_ref()),
                );
            }
        }
        let m = raw.matcher;
        let route_sources: Vec<String> = match m.source {
            None => vec![],
            Some(list) => {
                let span = list.span();
                let list = list.into_inner().0;
                for s in list.iter().filter(|s| !sources.contains(&s.as_str())) {
                    c.at(
                        Some(span.clone()),
                        format!("route `{name}`: match.source: no [[source]] named `{s}`"),
                    );
                }
                list
            }
        };
        let severity = m.severity.and_then(|s| {
            parse_severity_condition(s.get_ref())
                .map_err(|e| {
                    c.at(
                        Some(s.span()),
                        format!("route `{name}`: match.severity: {e}"),
                    )
                })
                .ok()
        });
        let labels_regex = m
            .labels_regex
            .into_iter()
            .filter_map(|(k, v)| {
                regex(c, &name, &format!("match.labels_regex.{k}"), v).map(|re| (k, re))
            })
            .collect();
        let subject = m.subject.and_then(|s| regex(c, &name, "match.subject", s));
        let body = m.body.and_then(|s| regex(c, &name, "match.body", s));
        let unknown_presence = unknown_presence(c, &name, raw.offline.as_ref());
        let offline = raw.offline.map_or(OfflinePolicy::Skip, |o| {
            offline_policy(c, &name, raw.name.span(), o, &names)
        });
        let grouping = grouping::grouping(
            c,
            &name,
            grouping::RawGrouping {
                group_by: raw.group_by,
                group_wait_ms: raw.group_wait_ms,
                group_interval_ms: raw.group_interval_ms,
            },
        );
        out.push(Route {
            name,
            matcher: Matcher {
                sources: route_sources,
                severity,
                labels: m.labels,
                labels_regex,
                subject,
                body,
            },
            groups: raw.groups.into_iter().map(Spanned::into_inner).collect(),
            users: raw.users.into_iter().map(Spanned::into_inner).collect(),
            sinks: raw
                .sinks
                .into_inner()
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            cont: raw.cont,
            allow_alert_recipients: raw.allow_alert_recipients,
            offline,
            unknown_presence,
            grouping,
        });
    }
    out
}

fn regex(c: &mut Collector<'_>, route: &str, what: &str, s: Spanned<String>) -> Option<Regex> {
    Regex::new(s.get_ref())
        .map_err(|e| {
            c.at(
                Some(s.span()),
                format!("route `{route}`: {what}: invalid regex: {e}"),
            )
        })
        .ok()
}

/// A route's `offline.unknown`: what a recipient whose presence could not be had counts as.
fn unknown_presence(
    c: &mut Collector<'_>,
    route: &str,
    raw: Option<&RawOffline>,
) -> UnknownPresence {
    match raw.and_then(|o| o.unknown.as_ref()) {
        None => UnknownPresence::Offline,
        Some(u) => match u.get_ref().as_str() {
            "offline" => UnknownPresence::Offline,
            "deliver" => UnknownPresence::Deliver,
            other => {
                c.at(
                    Some(u.span()),
                    format!(
                        "route `{route}`: offline.unknown: `{other}` is not `offline` or `deliver`"
                    ),
                );
                UnknownPresence::Offline
            }
        },
    }
}

fn offline_policy(
    c: &mut Collector<'_>,
    route: &str,
    span: Range<usize>,
    raw: RawOffline,
    routes: &[String],
) -> OfflinePolicy {
    let mut fallback = |c: &mut Collector<'_>| match &raw.fallback {
        Some(f) if !routes.contains(f.get_ref()) => {
            c.at(
                Some(f.span()),
                format!(
                    "route `{route}`: offline.fallback: no route named `{}`",
                    f.get_ref()
                ),
            );
            OfflinePolicy::Skip
        }
        Some(f) if f.get_ref() == route => {
            c.at(
                Some(f.span()),
                format!("route `{route}`: offline.fallback: a route cannot fall back to itself"),
            );
            OfflinePolicy::Skip
        }
        Some(f) => OfflinePolicy::Fallback(f.get_ref().clone()),
        None => {
            c.at(
                Some(span.clone()),
                format!(
                    "route `{route}`: offline: policy `fallback` needs `fallback = \"<route>\"`"
                ),
            );
            OfflinePolicy::Skip
        }
    };
    let simple = |c: &mut Collector<'_>,
                  s: &Spanned<String>,
                  fb: &mut dyn FnMut(&mut Collector<'_>) -> OfflinePolicy| {
        match s.get_ref().as_str() {
            "skip" => Some(OfflinePolicy::Skip),
            "always" => Some(OfflinePolicy::Always),
            "fallback" => Some(fb(c)),
            _ => None,
        }
    };
    match raw.policy.get_ref().as_str() {
        "hold" => {
            let then = match &raw.then {
                None => OfflinePolicy::Skip,
                Some(t) => simple(c, t, &mut fallback).unwrap_or_else(|| {
                    c.at(Some(t.span()), format!("route `{route}`: offline.then: expected skip, always or fallback, found `{}`", t.get_ref()));
                    OfflinePolicy::Skip
                }),
            };
            OfflinePolicy::Hold { max_wait: Duration::from_secs(raw.max_wait_secs.unwrap_or(900)), then: Box::new(then) }
        }
        _ => simple(c, &raw.policy, &mut fallback).unwrap_or_else(|| {
            c.at(
                Some(raw.policy.span()),
                format!("route `{route}`: offline.policy: expected skip, hold, fallback or always, found `{}`", raw.policy.get_ref()),
            );
            OfflinePolicy::Skip
        }),
    }
}
