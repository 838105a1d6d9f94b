//! Routing: which recipients, through which sinks, an alert goes to — first matching route
//! wins unless it says `continue = true`.

use std::{collections::BTreeMap, time::Duration};

use alertbridge_plugin_api::Severity;
use regex::Regex;

use crate::model::StoredAlert;

/// The source name of alerts the admin API injects (no `[[source]]` may take it).
pub const ADMIN_SOURCE: &str = "admin";

/// On an alert from [`ADMIN_SOURCE`]: the one route it goes through.
pub const ROUTE_ATTRIBUTE: &str = "alertbridge.route";

/// How a severity condition compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

impl Cmp {
    fn holds(self, actual: Severity, wanted: Severity) -> bool {
        match self {
            Self::Eq => actual == wanted,
            Self::Ge => actual >= wanted,
            Self::Gt => actual > wanted,
            Self::Le => actual <= wanted,
            Self::Lt => actual < wanted,
        }
    }
}

/// Parses `critical`, `>=high`, `<normal`, `=low`.
pub fn parse_severity_condition(text: &str) -> Result<(Cmp, Severity), String> {
    let text = text.trim();
    let (cmp, rest) = [
        (">=", Cmp::Ge),
        ("<=", Cmp::Le),
        (">", Cmp::Gt),
        ("<", Cmp::Lt),
        ("=", Cmp::Eq),
    ]
    .into_iter()
    .find_map(|(p, c)| text.strip_prefix(p).map(|r| (c, r)))
    .unwrap_or((Cmp::Eq, text));
    let severity = Severity::from_name(rest.trim()).ok_or_else(|| {
        format!("unknown severity `{}` (expected info, low, normal, high or critical, optionally after >=, >, <=, < or =)", rest.trim())
    })?;
    Ok((cmp, severity))
}

/// What a route does with recipients who are not online.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OfflinePolicy {
    /// Record them as skipped.
    Skip,
    /// Send anyway.
    Always,
    /// Re-check until online or `max_wait`, then apply `then`.
    Hold {
        max_wait: Duration,
        then: Box<OfflinePolicy>,
    },
    /// Hand them to another route.
    Fallback(String),
}

impl std::fmt::Display for OfflinePolicy {
    /// What happens to offline recipients, in words: `hold up to 900 s, then skip them`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Skip => f.write_str("skip them"),
            Self::Always => f.write_str("send anyway"),
            Self::Fallback(r) => write!(f, "hand them to route `{r}`"),
            Self::Hold { max_wait, then } => {
                write!(f, "hold up to {} s, then {then}", max_wait.as_secs())
            }
        }
    }
}

impl OfflinePolicy {
    /// A short name for outcomes and the status page.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Always => "always",
            Self::Hold { .. } => "hold",
            Self::Fallback(_) => "fallback",
        }
    }
}

/// The match conditions of a route; every one given must hold.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    pub sources: Vec<String>,
    pub severity: Option<(Cmp, Severity)>,
    pub labels: BTreeMap<String, String>,
    pub labels_regex: Vec<(String, Regex)>,
    pub subject: Option<Regex>,
    pub body: Option<Regex>,
}

impl Matcher {
    /// The conditions in words, for the status page.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.sources.is_empty() {
            parts.push(format!("source {}", self.sources.join(" or ")));
        }
        if let Some((cmp, sev)) = self.severity {
            let op = match cmp {
                Cmp::Eq => "=",
                Cmp::Ge => ">=",
                Cmp::Gt => ">",
                Cmp::Le => "<=",
                Cmp::Lt => "<",
            };
            parts.push(format!("severity {op} {sev}"));
        }
        parts.extend(self.labels.iter().map(|(k, v)| format!("{k} = {v}")));
        parts.extend(
            self.labels_regex
                .iter()
                .map(|(k, re)| format!("{k} ~ /{re}/")),
        );
        parts.extend(self.subject.iter().map(|re| format!("subject ~ /{re}/")));
        parts.extend(self.body.iter().map(|re| format!("body ~ /{re}/")));
        if parts.is_empty() {
            "every alert".into()
        } else {
            parts.join(", ")
        }
    }

    pub fn matches(&self, alert: &StoredAlert) -> bool {
        let a = &alert.alert;
        (self.sources.is_empty() || self.sources.contains(&alert.source))
            && self
                .severity
                .is_none_or(|(cmp, s)| cmp.holds(a.severity, s))
            && self.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
            && self
                .labels_regex
                .iter()
                .all(|(k, re)| a.labels.get(k).is_some_and(|v| re.is_match(v)))
            && self
                .subject
                .as_ref()
                .is_none_or(|re| re.is_match(&a.subject))
            && self.body.as_ref().is_none_or(|re| re.is_match(&a.body))
    }
}

/// One route, validated and compiled.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub matcher: Matcher,
    pub groups: Vec<String>,
    pub users: Vec<String>,
    pub sinks: Vec<String>,
    pub cont: bool,
    /// Honour groups and users named inside the alert.
    pub allow_alert_recipients: bool,
    pub offline: OfflinePolicy,
    /// What a recipient whose presence could not be had counts as (`offline.unknown`).
    pub unknown_presence: UnknownPresence,
}

/// What a route does with a recipient whose presence could not be had: the sink's presence
/// call failed or timed out, or it left the user out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownPresence {
    /// Not reachable: the route's offline policy applies (`skip`, `hold`, `fallback`).
    #[default]
    Offline,
    /// Deliver as if reachable.
    Deliver,
}

/// One recipient's place in the plan: who, through which sink, on behalf of which route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub route: String,
    pub sink: String,
    pub user: String,
}

/// The routing table.
#[derive(Clone, Debug, Default)]
pub struct Router {
    pub routes: Vec<Route>,
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Router {
    /// The routes that match `alert`, in order, honouring `continue`.
    pub fn matching(&self, alert: &StoredAlert) -> Vec<&Route> {
        let mut out = Vec::new();
        for route in &self.routes {
            if route.matcher.matches(alert) {
                out.push(route);
                if !route.cont {
                    break;
                }
            }
        }
        out
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The recipients `route` resolves to for `alert`, without duplicates, in a stable order.
    pub fn recipients(&self, route: &Route, alert: &StoredAlert) -> Vec<String> {
        let mut users: Vec<String> = Vec::new();
        let mut add = |u: &str| {
            if !users.iter().any(|x| x == u) {
                users.push(u.to_owned());
            }
        };
        let from_alert = route.allow_alert_recipients.then_some(&alert.alert);
        let groups = route
            .groups
            .iter()
            .chain(from_alert.into_iter().flat_map(|a| a.groups.iter()));
        for g in groups {
            for u in self.groups.get(g).into_iter().flatten() {
                add(u);
            }
        }
        for u in route
            .users
            .iter()
            .chain(from_alert.into_iter().flat_map(|a| a.users.iter()))
        {
            add(u);
        }
        users
    }

    /// Every (route, sink, user) the alert goes to. A user reached by two routes through the
    /// same sink is messaged once, on behalf of the first.
    pub fn plan(&self, alert: &StoredAlert) -> Vec<(Target, &Route)> {
        let mut plan: Vec<(Target, &Route)> = Vec::new();
        let forced = (alert.source == ADMIN_SOURCE)
            .then(|| alert.alert.attributes.get(ROUTE_ATTRIBUTE))
            .flatten();
        let routes = match forced {
            Some(name) => self.route(name).into_iter().collect(),
            None => self.matching(alert),
        };
        for route in routes {
            self.extend_plan(&mut plan, route, alert);
        }
        plan
    }

    /// Adds `route`'s targets to `plan`, skipping (sink, user) pairs already in it.
    pub fn extend_plan<'a>(
        &'a self,
        plan: &mut Vec<(Target, &'a Route)>,
        route: &'a Route,
        alert: &StoredAlert,
    ) {
        for user in self.recipients(route, alert) {
            for sink in &route.sinks {
                if !plan.iter().any(|(t, _)| t.sink == *sink && t.user == user) {
                    plan.push((
                        Target {
                            route: route.name.clone(),
                            sink: sink.clone(),
                            user: user.clone(),
                        },
                        route,
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alertbridge_plugin_api::Alert;

    fn alert(source: &str, subject: &str, severity: Severity) -> StoredAlert {
        let mut a = Alert::new(subject);
        a.severity = severity;
        a.labels.insert("host".into(), "db01".into());
        StoredAlert::new(1, source, a, 0)
    }

    fn route(name: &str, matcher: Matcher, groups: &[&str], cont: bool) -> Route {
        Route {
            name: name.into(),
            matcher,
            groups: groups.iter().map(|s| s.to_string()).collect(),
            users: vec![],
            sinks: vec!["lync".into()],
            cont,
            allow_alert_recipients: false,
            offline: OfflinePolicy::Skip,
            unknown_presence: UnknownPresence::Offline,
        }
    }

    fn router(routes: Vec<Route>) -> Router {
        let mut groups = BTreeMap::new();
        groups.insert(
            "ops".into(),
            vec!["sip:alice@x".to_string(), "sip:bob@x".to_string()],
        );
        groups.insert(
            "dba".into(),
            vec!["sip:bob@x".to_string(), "sip:carol@x".to_string()],
        );
        Router { routes, groups }
    }

    #[test]
    fn severity_conditions_parse_and_compare() {
        assert_eq!(
            parse_severity_condition(">=high"),
            Ok((Cmp::Ge, Severity::HIGH))
        );
        assert_eq!(
            parse_severity_condition("critical"),
            Ok((Cmp::Eq, Severity::CRITICAL))
        );
        assert_eq!(
            parse_severity_condition("< normal"),
            Ok((Cmp::Lt, Severity::NORMAL))
        );
        assert!(
            parse_severity_condition(">=urgent")
                .unwrap_err()
                .contains("unknown severity `urgent`")
        );
        assert!(Cmp::Ge.holds(Severity::CRITICAL, Severity::HIGH));
        assert!(!Cmp::Ge.holds(Severity::NORMAL, Severity::HIGH));
    }

    #[test]
    fn first_match_wins_unless_continue() {
        let high = Matcher {
            severity: Some((Cmp::Ge, Severity::HIGH)),
            ..Matcher::default()
        };
        let r = router(vec![
            route("crit", high.clone(), &["ops"], false),
            route("all", Matcher::default(), &["dba"], false),
        ]);
        let names = |a: &StoredAlert| {
            r.matching(a)
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&alert("mail", "x", Severity::CRITICAL)), ["crit"]);
        assert_eq!(names(&alert("mail", "x", Severity::LOW)), ["all"]);

        let r = router(vec![
            route("crit", high, &["ops"], true),
            route("all", Matcher::default(), &["dba"], false),
        ]);
        let a = alert("mail", "x", Severity::CRITICAL);
        let plan: Vec<String> = r
            .plan(&a)
            .iter()
            .map(|(t, _)| format!("{}:{}", t.route, t.user))
            .collect();
        assert_eq!(
            plan,
            ["crit:sip:alice@x", "crit:sip:bob@x", "all:sip:carol@x"],
            "bob is messaged once"
        );
    }

    #[test]
    fn matches_source_labels_and_patterns() {
        let m = Matcher {
            sources: vec!["helpdesk-mail".into()],
            labels: [("host".to_string(), "db01".to_string())].into(),
            labels_regex: vec![("host".into(), Regex::new("^db").unwrap())],
            subject: Some(Regex::new("(?i)disk").unwrap()),
            body: None,
            severity: None,
        };
        assert!(m.matches(&alert("helpdesk-mail", "Disk full", Severity::NORMAL)));
        assert!(!m.matches(&alert("monitoring", "Disk full", Severity::NORMAL)));
        assert!(!m.matches(&alert("helpdesk-mail", "CPU hot", Severity::NORMAL)));
        let mut other_host = alert("helpdesk-mail", "Disk full", Severity::NORMAL);
        other_host
            .alert
            .labels
            .insert("host".into(), "web01".into());
        assert!(!m.matches(&other_host));
    }

    #[test]
    fn alert_recipients_only_where_allowed() {
        let mut a = alert("hook", "x", Severity::NORMAL);
        a.alert.users = vec!["sip:mallory@x".into()];
        a.alert.groups = vec!["dba".into()];
        let mut r = route("r", Matcher::default(), &["ops"], false);
        let rt = router(vec![r.clone()]);
        assert_eq!(rt.recipients(&r, &a), ["sip:alice@x", "sip:bob@x"]);
        r.allow_alert_recipients = true;
        assert_eq!(
            rt.recipients(&r, &a),
            ["sip:alice@x", "sip:bob@x", "sip:carol@x", "sip:mallory@x"]
        );
    }
}
