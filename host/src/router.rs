//! Routing: which recipients, through which sinks, an alert goes to — first matching route
//! wins unless it says `continue = true`.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use alertbridge_plugin_api::{Alert, Severity};
use regex::Regex;

use crate::model::StoredAlert;

/// The source name of alerts the admin API injects (no `[[source]]` may take it).
pub const ADMIN_SOURCE: &str = "admin";

/// On an alert from [`ADMIN_SOURCE`]: the one route it goes through.
pub const ROUTE_ATTRIBUTE: &str = "alertbridge.route";

/// The longest SIP URI an alert may name (RFC 3261 sets no bound; real ones are far shorter).
pub const MAX_SIP_URI_BYTES: usize = 256;

/// The longest group name an alert may name.
pub const MAX_GROUP_NAME_BYTES: usize = 128;

/// Why the recipients named in an alert are refused at the door.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamedRecipientsError {
    #[error(
        "the alert names {count} recipients (users and groups); the limit is {limit} (max_recipients_per_alert)"
    )]
    TooMany { count: usize, limit: usize },
    #[error("recipients.users[{index}] {shown} is not a SIP URI like sip:user@domain: {why}")]
    NotSip {
        index: usize,
        shown: String,
        why: &'static str,
    },
    #[error("recipients.groups[{index}] {shown} is not a group name: {why}")]
    BadGroup {
        index: usize,
        shown: String,
        why: &'static str,
    },
}

impl NamedRecipientsError {
    /// The `reason` label of `alertbridge_alerts_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooMany { .. } => "too_large",
            Self::NotSip { .. } | Self::BadGroup { .. } => "invalid",
        }
    }
}

/// Checks the users and groups an alert names: at most `limit` of them, users as SIP URIs and
/// groups as short printable names, each bounded. Linear in their size; reports the first
/// problem, quoting at most a short, escaped prefix of the offending value.
pub fn check_named_recipients(alert: &Alert, limit: usize) -> Result<(), NamedRecipientsError> {
    let count = alert.users.len().saturating_add(alert.groups.len());
    if count > limit {
        return Err(NamedRecipientsError::TooMany { count, limit });
    }
    for (index, user) in alert.users.iter().enumerate() {
        sip_uri_problem(user).map_or(Ok(()), |why| {
            Err(NamedRecipientsError::NotSip {
                index,
                shown: shown(user),
                why,
            })
        })?;
    }
    for (index, group) in alert.groups.iter().enumerate() {
        let why = if group.is_empty() {
            Some("empty")
        } else if group.len() > MAX_GROUP_NAME_BYTES {
            Some("longer than 128 bytes")
        } else if group.chars().any(|c| c.is_control() || c.is_whitespace()) {
            Some("contains a control or space character")
        } else {
            None
        };
        why.map_or(Ok(()), |why| {
            Err(NamedRecipientsError::BadGroup {
                index,
                shown: shown(group),
                why,
            })
        })?;
    }
    Ok(())
}

/// A bounded, escaped rendering of a hostile value for an error message.
fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 48;
    let mut cut: String = value.chars().take(MAX_CHARS).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Why `uri` is not a `sip:user@domain` URI of at most [`MAX_SIP_URI_BYTES`], if it is not.
/// The user part takes RFC 3261's user characters (unreserved, escaped and `&=+$,;?/`); the
/// domain is a host name or an IPv4 address: dot-separated labels of letters, digits and `-`.
pub fn sip_uri_problem(uri: &str) -> Option<&'static str> {
    if uri.len() > MAX_SIP_URI_BYTES {
        return Some("longer than 256 bytes");
    }
    let Some(rest) = uri
        .get(..4)
        .filter(|scheme| scheme.eq_ignore_ascii_case("sip:"))
        .map(|_| &uri[4..])
    else {
        return Some("it does not start with sip:");
    };
    let Some((user, domain)) = rest.split_once('@') else {
        return Some("no @ between user and domain");
    };
    if user.is_empty() {
        return Some("empty user part");
    }
    let bytes = user.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escaped = bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !escaped {
                return Some("a % in the user part is not followed by two hex digits");
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b)) {
            return Some("a character not allowed in the user part");
        }
        i += 1;
    }
    if domain.is_empty() {
        return Some("empty domain");
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Some("the domain is not a host name");
        }
    }
    None
}

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
    let severity: Severity = rest
        .parse()
        .map_err(|e| format!("{e}, optionally after >=, >, <=, < or ="))?;
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
    /// `group_by`: the route's alerts reach each recipient as digests, one per group.
    pub grouping: Option<Grouping>,
}

/// How a route groups its alerts into digests (`group_by`, `group_wait_ms`,
/// `group_interval_ms`; issue 16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grouping {
    /// The fields whose values make the group; alerts with the same values share a digest.
    pub by: Vec<GroupField>,
    /// How long a new group collects before its first IM.
    pub wait: Duration,
    /// At most one update IM per group and recipient per interval.
    pub interval: Duration,
}

/// One `group_by` entry: an alert field the router matches on, or a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupField {
    Source,
    Severity,
    Subject,
    Label(String),
}

impl GroupField {
    /// `source`, `severity` and `subject` name the alert's fields, `labels.NAME` or any other
    /// name a label.
    pub fn parse(name: &str) -> Self {
        match name {
            "source" => Self::Source,
            "severity" => Self::Severity,
            "subject" => Self::Subject,
            other => Self::Label(other.strip_prefix("labels.").unwrap_or(other).to_owned()),
        }
    }

    /// This field's value in `alert` (empty for a label it does not have).
    pub fn value<'a>(&self, alert: &'a StoredAlert) -> &'a str {
        match self {
            Self::Source => &alert.source,
            Self::Severity => alert.alert.severity.name(),
            Self::Subject => &alert.alert.subject,
            Self::Label(name) => alert.alert.labels.get(name).map_or("", String::as_str),
        }
    }

    /// True if and only if this is the label `name`.
    pub fn is_label(&self, name: &str) -> bool {
        matches!(self, Self::Label(l) if l == name)
    }
}

impl Grouping {
    /// The values of `alert` that name its group, in `group_by` order.
    pub fn values(&self, alert: &StoredAlert) -> Vec<String> {
        self.by.iter().map(|f| f.value(alert).to_owned()).collect()
    }
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
    /// The message templates of the routes and sinks (`template`, `template_file`) and the
    /// status page's public address (`[host] public_url`).
    pub templates: crate::template::Templates,
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

    /// The recipients `route` resolves to for `alert`, without duplicates, in a stable order
    /// (first mention wins). Linear in the number of names: a set, not a scan, finds repeats.
    pub fn recipients<'a>(&'a self, route: &'a Route, alert: &'a StoredAlert) -> Vec<&'a str> {
        let mut users: Vec<&str> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let from_alert = route.allow_alert_recipients.then_some(&alert.alert);
        let groups = route
            .groups
            .iter()
            .chain(from_alert.into_iter().flat_map(|a| a.groups.iter()));
        let members = groups.flat_map(|g| self.groups.get(g).into_iter().flatten());
        let named = route
            .users
            .iter()
            .chain(from_alert.into_iter().flat_map(|a| a.users.iter()));
        for u in members.chain(named) {
            if seen.insert(u.as_str()) {
                users.push(u.as_str());
            }
        }
        users
    }

    /// Every (route, sink, user) the alert goes to. A user reached by two routes through the
    /// same sink is messaged once, on behalf of the first.
    pub fn plan(&self, alert: &StoredAlert) -> Vec<(Target, &Route)> {
        let forced = (alert.source == ADMIN_SOURCE)
            .then(|| alert.alert.attributes.get(ROUTE_ATTRIBUTE))
            .flatten();
        let routes = match forced {
            Some(name) => self.route(name).into_iter().collect(),
            None => self.matching(alert),
        };
        let mut plan = Planned::default();
        for route in routes {
            self.extend_plan(&mut plan, route, alert);
        }
        plan.targets
    }

    /// Adds `route`'s targets to `plan`, skipping (sink, user) pairs already in it. Each target
    /// costs one set lookup, so a plan is linear in its size.
    pub fn extend_plan<'a>(
        &'a self,
        plan: &mut Planned<'a>,
        route: &'a Route,
        alert: &StoredAlert,
    ) {
        for user in self.recipients(route, alert) {
            for sink in &route.sinks {
                if plan.seen.insert((sink.clone(), user.to_owned())) {
                    plan.targets.push((
                        Target {
                            route: route.name.clone(),
                            sink: sink.clone(),
                            user: user.to_owned(),
                        },
                        route,
                    ));
                }
            }
        }
    }
}

/// A plan being built: its targets in order, and the (sink, user) pairs already in it.
#[derive(Debug, Default)]
pub struct Planned<'a> {
    pub targets: Vec<(Target, &'a Route)>,
    seen: HashSet<(String, String)>,
}

impl Planned<'_> {
    /// A plan that already holds these (sink, user) pairs: a fallback adds only newcomers.
    pub fn known<'s>(pairs: impl IntoIterator<Item = (&'s str, &'s str)>) -> Self {
        Self {
            targets: Vec::new(),
            seen: pairs
                .into_iter()
                .map(|(sink, user)| (sink.to_owned(), user.to_owned()))
                .collect(),
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
            grouping: None,
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
        Router {
            routes,
            groups,
            ..Router::default()
        }
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
        assert_eq!(
            parse_severity_condition(">=High"),
            Ok((Cmp::Ge, Severity::HIGH))
        );
        assert_eq!(
            parse_severity_condition(">=urgent").unwrap_err(),
            "unknown severity \"urgent\", expected info, low, normal, high or critical, \
             optionally after >=, >, <=, < or ="
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

    #[test]
    fn named_recipients_are_capped_and_must_be_sip_uris() {
        let mut a = Alert::new("x");
        a.users = vec![
            "sip:carol@contoso.com".into(),
            "SIP:d.e%41+x@10.0.0.1".into(),
        ];
        a.groups = vec!["ops".into()];
        assert_eq!(check_named_recipients(&a, 3), Ok(()));
        assert_eq!(
            check_named_recipients(&a, 2),
            Err(NamedRecipientsError::TooMany { count: 3, limit: 2 })
        );
        for (bad, why) in [
            ("carol@contoso.com", "it does not start with sip:"),
            ("sip:contoso.com", "no @ between user and domain"),
            ("sip:@contoso.com", "empty user part"),
            (
                "sip:a b@contoso.com",
                "a character not allowed in the user part",
            ),
            (
                "sip:a%4@contoso.com",
                "a % in the user part is not followed by two hex digits",
            ),
            ("sip:a@", "empty domain"),
            ("sip:a@contoso..com", "the domain is not a host name"),
            ("sip:a@-contoso.com", "the domain is not a host name"),
            (
                "sip:a@contoso.com;transport=tls",
                "the domain is not a host name",
            ),
            ("sip:a@b@c", "the domain is not a host name"),
            (
                "sip:\u{1b}[2J@x",
                "a character not allowed in the user part",
            ),
        ] {
            assert_eq!(sip_uri_problem(bad), Some(why), "{bad}");
        }
        let long = format!("sip:{}@x", "a".repeat(MAX_SIP_URI_BYTES));
        assert_eq!(sip_uri_problem(&long), Some("longer than 256 bytes"));
        a.users.push("\u{1b}[31mroot".into());
        let e = check_named_recipients(&a, 10).unwrap_err();
        assert_eq!(e.reason(), "invalid");
        assert_eq!(
            e.to_string(),
            "recipients.users[2] \"\\u{1b}[31mroot\" is not a SIP URI like sip:user@domain: it does not start with sip:",
            "the value is quoted escaped"
        );
        a.users.truncate(2);
        a.groups.push("x".repeat(200));
        let e = check_named_recipients(&a, 10).unwrap_err().to_string();
        assert!(e.starts_with("recipients.groups[1] \"xxx"), "{e}");
        assert!(
            e.ends_with("…\" is not a group name: longer than 128 bytes"),
            "{e}"
        );
    }

    #[test]
    fn plans_are_linear_and_keep_first_mention_order() {
        let mut a = alert("hook", "x", Severity::NORMAL);
        let n = 20_000;
        a.alert.users = (0..n).map(|i| format!("sip:u{}@x", i % (n / 2))).collect();
        let mut r = route("r", Matcher::default(), &["ops"], false);
        r.allow_alert_recipients = true;
        r.sinks = vec!["lync".into(), "ocs".into()];
        let rt = router(vec![r]);
        let plan = rt.plan(&a);
        assert_eq!(plan.len(), 2 * (2 + n / 2), "each (sink, user) once");
        assert_eq!(plan[0].0.user, "sip:alice@x");
        assert_eq!(plan[4].0.user, "sip:u0@x");
        let mut known =
            Planned::known(plan.iter().map(|(t, _)| (t.sink.as_str(), t.user.as_str())));
        rt.extend_plan(&mut known, &rt.routes[0], &a);
        assert!(known.targets.is_empty(), "a fallback adds only newcomers");
    }
}
