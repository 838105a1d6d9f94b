//! The config file: reading it, checking all of it at once, and the validated result.
//!
//! Every table rejects unknown keys, and every mistake is reported with file, line and column
//! (see [`ConfigErrors`]). An instance's `config` table is kept as TOML text for its plugin,
//! together with where each of its keys is, so the plugin's complaints can be pointed at too.

pub mod admin;
mod error;
pub mod escalation;
mod grouping;
pub mod queue;
mod raw;
mod templates;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use alertbridge_plugin_api::PresenceState;
use regex::Regex;
use serde::{Deserialize, de::IntoDeserializer};
use serde_spanned::Spanned;
use toml_edit::{ImDocument, Item, Table};

use self::admin::{AdminKeys, AdminSettings};
pub use self::error::{ConfigError, ConfigErrors, line_col};
use self::escalation::{EscalationPolicy, Level};
pub use self::queue::QueueBackend;
use self::{error::Collector, raw::*};
use crate::router::{
    Matcher, OfflinePolicy, Route, Router, UnknownPresence, parse_severity_condition,
};

/// Host-wide settings (`[host]`).
#[derive(Clone, Debug, PartialEq)]
pub struct HostSettings {
    pub data_dir: PathBuf,
    pub plugin_dir: Option<PathBuf>,
    pub admin_listen: Option<SocketAddr>,
    /// The admin server's token, allowed host names and limits.
    pub admin: AdminSettings,
    pub dedup_window: Duration,
    /// Keys at most in the dedup index (oldest evicted first).
    pub dedup_max_keys: usize,
    /// Set by `run --accept-empty-queue`, never by the file.
    pub accept_empty_queue: bool,
    pub history_max_alerts: usize,
    pub max_queue_depth: usize,
    pub stop_deadline: Duration,
    pub max_subject_bytes: usize,
    pub max_body_bytes: usize,
    /// Users and groups one alert may name.
    pub max_recipients_per_alert: usize,
}

/// Delivery settings (`[delivery]`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliverySettings {
    pub presence_cache: Duration,
    /// Presence states that count as online.
    pub reachable: Vec<PresenceState>,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub hold_recheck: Duration,
    /// 0 for no limit.
    pub per_recipient_per_minute: u32,
    pub sink_concurrency: usize,
    /// Messages per second per sink; 0 for no limit.
    pub per_sink_per_second: u32,
    pub deliver_timeout: Duration,
    /// What a send that began before a restart and has no outcome becomes.
    pub on_uncertain: OnUncertain,
    /// When a recipient's rate limit is reached, what waits for them goes as one digest IM at
    /// the next free slot instead of one by one (issue 16).
    pub fold_rate_limited: bool,
}

/// `[delivery] on_uncertain`: what to do after a restart with a send that began (recorded before
/// the sink was called) and has no recorded outcome, so the recipient may or may not have it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnUncertain {
    /// Send it again, marked "(repeat after restart)" so the reader knows it may be a duplicate.
    #[default]
    Resend,
    /// Do not send it again; the recipient is recorded as skipped with the reason.
    Skip,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            presence_cache: Duration::from_secs(15),
            reachable: vec![
                PresenceState::AVAILABLE,
                PresenceState::BUSY,
                PresenceState::AWAY,
            ],
            max_attempts: 8,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            hold_recheck: Duration::from_secs(15),
            per_recipient_per_minute: 30,
            sink_concurrency: 64,
            per_sink_per_second: 0,
            deliver_timeout: Duration::from_secs(60),
            on_uncertain: OnUncertain::Resend,
            fold_rate_limited: true,
        }
    }
}

/// A `[[source]]` or `[[sink]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceConfig {
    pub name: String,
    /// The plugin kind, e.g. `pop3`.
    pub plugin: String,
    /// The `config` table, as TOML text for the plugin.
    pub config_toml: String,
    /// Where the instance is declared.
    pub at: (usize, usize),
    /// Where each key of its config table is (dotted path → line, column).
    pub keys: BTreeMap<String, (usize, usize)>,
    /// Sources: its own share of `max_queue_depth`, if set (see [`Config::queue_shares`]).
    pub max_queued: Option<usize>,
}

/// A validated config file.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub host: HostSettings,
    pub delivery: DeliverySettings,
    pub sources: Vec<InstanceConfig>,
    pub sinks: Vec<InstanceConfig>,
    pub router: Router,
    /// The `[[escalation]]` policies, checked.
    pub escalations: Vec<EscalationPolicy>,
    /// Route name -> the escalation policy it names.
    pub route_escalations: BTreeMap<String, String>,
    /// `[queue]`: the embedded queue or the shared PostgreSQL one.
    pub queue: QueueBackend,
    /// `[incidents]`.
    pub incidents: IncidentSettings,
}

/// `[incidents]`: who may act on incidents besides the people paged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentSettings {
    /// Groups whose members may ack or resolve any incident.
    pub responders: Vec<String>,
}

impl IncidentSettings {
    /// The responders' users (SIP URIs), their groups expanded through `groups`.
    pub fn responder_users(&self, groups: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for u in self
            .responders
            .iter()
            .filter_map(|g| groups.get(g))
            .flatten()
        {
            if !out.contains(u) {
                out.push(u.clone());
            }
        }
        out
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(path, &text)
    }

    /// Checks config text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        let mut c = Collector::new(path, text);
        let doc = match ImDocument::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                // The message never quotes the line; name the key written on it.
                let message = e.message().trim_end();
                let message = match e.span().and_then(|s| error::key_at(text, s.start)) {
                    Some(key) => format!("`{key}`: {message}"),
                    None => message.to_owned(),
                };
                c.at(e.span(), message);
                return Err(c.fail());
            }
        };
        let root = doc.as_table();
        for (key, _) in root.iter() {
            if ![
                "host",
                "delivery",
                "source",
                "sink",
                "groups",
                "route",
                "escalation",
                "incidents",
                "queue",
            ]
            .contains(&key)
            {
                let span = root.key(key).and_then(|k| k.span());
                c.at(span, format!("unknown table `{key}` (expected host, delivery, source, sink, groups, escalation, incidents, queue or route)"));
            }
        }

        let host_errors = c.errors.len();
        let host = section::<RawHost>(&mut c, root, "host");
        let host_failed = c.errors.len() > host_errors;
        let delivery = section::<RawDelivery>(&mut c, root, "delivery").unwrap_or_default();
        let sources = instances(&mut c, root, "source", text);
        let sinks = instances(&mut c, root, "sink", text);
        let groups =
            section::<BTreeMap<String, Vec<String>>>(&mut c, root, "groups").unwrap_or_default();

        let host = host_settings(&mut c, root, host.unwrap_or_default(), path, host_failed);
        let queue = queue::queue_backend(&mut c, root, path.parent().unwrap_or(Path::new(".")));
        let delivery = delivery_settings(&mut c, delivery);
        let mut names: BTreeMap<String, &str> = BTreeMap::new();
        for (kind, list) in [("source", &sources), ("sink", &sinks)] {
            for i in list {
                if let Some(other) = names.insert(i.name.clone(), kind) {
                    c.at_line(
                        i.at,
                        format!("{kind} `{}`: the name is already used by a {other}", i.name),
                    );
                }
            }
        }
        for s in sources
            .iter()
            .filter(|s| s.name == crate::router::ADMIN_SOURCE)
        {
            c.at_line(
                s.at,
                format!(
                    "source `{}`: the name is reserved for test alerts from the status page",
                    s.name
                ),
            );
        }
        let promised: usize = sources.iter().filter_map(|s| s.max_queued).sum();
        if promised > host.max_queue_depth
            && let Some(s) = sources.iter().find(|s| s.max_queued.is_some())
        {
            c.at_line(
                s.at,
                format!(
                    "[[source]] max_queued: the sources' shares add up to {promised}, more than [host] max_queue_depth = {}",
                    host.max_queue_depth
                ),
            );
        }
        let sink_names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
        let source_names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        for s in sources
            .iter()
            .filter(|s| s.name == crate::model::PAGE_SOURCE)
        {
            c.at_line(
                s.at,
                format!(
                    "source `{}`: the name is reserved for the pages of incidents",
                    s.name
                ),
            );
        }
        let escalations = escalations(&mut c, root, &groups);
        let incidents = incident_settings(&mut c, root, &groups);
        let policy_names: Vec<&str> = escalations.iter().map(|p| p.name.as_str()).collect();
        let mut route_escalations = BTreeMap::new();
        let routes = routes(
            &mut c,
            root,
            &groups,
            &sink_names,
            &source_names,
            (&policy_names, &mut route_escalations),
        );
        let templates = templates::templates(&mut c, root, text, path);
        c.finish(Config {
            path: path.to_owned(),
            host,
            delivery,
            sources,
            sinks,
            router: Router {
                routes,
                groups,
                templates,
            },
            escalations,
            route_escalations,
            queue,
            incidents,
        })
    }

    /// Each source's share of `max_queue_depth`: its `max_queued`, or else an equal part of
    /// what the sources with an explicit share leave (at least 1). No source can then fill the
    /// queue the others need.
    pub fn queue_shares(&self) -> Vec<(String, usize)> {
        let promised: usize = self.sources.iter().filter_map(|s| s.max_queued).sum();
        let open = self
            .sources
            .iter()
            .filter(|s| s.max_queued.is_none())
            .count();
        let each = (self.host.max_queue_depth.saturating_sub(promised) / open.max(1)).max(1);
        self.sources
            .iter()
            .map(|s| (s.name.clone(), s.max_queued.unwrap_or(each)))
            .collect()
    }

    /// Maps a plugin's config complaint about instance `inst` (about `key`, a dotted path into
    /// the instance's config, when the plugin named one) to a place in this file.
    pub fn locate_plugin_error(
        &self,
        inst: &InstanceConfig,
        key: Option<&str>,
        message: &str,
    ) -> ConfigError {
        let (line, column) = key
            .and_then(|k| inst.keys.get(k))
            .copied()
            .unwrap_or(inst.at);
        // A plugin's serde error may quote the value it found, which may be a secret; the key
        // is named instead.
        let mut msg = error::without_value(message);
        if let Some(key) =
            key.filter(|k| !inst.keys.contains_key(*k) || error::is_value_error(&msg))
        {
            msg = format!("`{key}`: {msg}");
        }
        ConfigError {
            file: self.path.display().to_string(),
            line,
            column,
            message: format!("{} `{}`: {}", "instance", inst.name, msg),
        }
    }
}

/// Deserializes `root[key]` as `T`, recording an error (and returning `None`) if it fails.
fn section<T: for<'de> Deserialize<'de>>(
    c: &mut Collector<'_>,
    root: &Table,
    key: &str,
) -> Option<T> {
    let item = root.get(key)?;
    deserialize(c, item, &format!("[{key}]"))
}

fn deserialize<T: for<'de> Deserialize<'de>>(
    c: &mut Collector<'_>,
    item: &Item,
    context: &str,
) -> Option<T> {
    let value = match item.clone().into_value() {
        Ok(v) => v,
        Err(item) => {
            c.at(item.span(), format!("{context}: expected a table"));
            return None;
        }
    };
    T::deserialize(value.into_deserializer())
        .map_err(|e| c.de(context, &e))
        .ok()
}

fn instances(c: &mut Collector<'_>, root: &Table, kind: &str, text: &str) -> Vec<InstanceConfig> {
    let Some(item) = root.get(kind) else {
        return vec![];
    };
    let Some(tables) = item.as_array_of_tables() else {
        let span = root.key(kind).and_then(|k| k.span());
        c.at(
            span,
            format!("`{kind}` must be an array of tables: write [[{kind}]]"),
        );
        return vec![];
    };
    let mut out = Vec::new();
    for table in tables {
        let at = table.span().map_or((0, 0), |s| line_col(text, s.start));
        let Some(raw) =
            deserialize::<RawInstance>(c, &Item::Table(table.clone()), &format!("[[{kind}]]"))
        else {
            continue;
        };
        let (config_toml, keys) = match table.get("config") {
            None => (String::new(), BTreeMap::new()),
            Some(item) => match item.as_table_like() {
                Some(t) => (plugin_toml(item), key_locations(t, text)),
                None => {
                    c.at(
                        item.span(),
                        format!("{kind} `{}`: `config` must be a table", raw.name.get_ref()),
                    );
                    continue;
                }
            },
        };
        if let (Some(m), "sink") = (&raw.max_queued, kind) {
            c.at(
                Some(m.span()),
                format!(
                    "sink `{}`: `max_queued` is a source setting",
                    raw.name.get_ref()
                ),
            );
        }
        out.push(InstanceConfig {
            name: raw.name.into_inner(),
            plugin: raw.plugin.into_inner(),
            config_toml,
            at,
            keys,
            max_queued: raw.max_queued.map(Spanned::into_inner),
        });
    }
    out
}

/// The TOML text a plugin gets for its `config` table.
fn plugin_toml(item: &Item) -> String {
    let mut doc = toml_edit::DocumentMut::new();
    if let Some(t) = item.as_table_like() {
        for (k, v) in t.iter() {
            doc.insert(k, v.clone());
        }
    }
    doc.to_string()
}

/// Where each key of a config table is, by dotted path.
fn key_locations(table: &dyn toml_edit::TableLike, text: &str) -> BTreeMap<String, (usize, usize)> {
    fn walk(
        t: &dyn toml_edit::TableLike,
        prefix: &str,
        text: &str,
        out: &mut BTreeMap<String, (usize, usize)>,
    ) {
        for (k, v) in t.iter() {
            let path = if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            };
            let span: Option<Range<usize>> =
                t.key(k).and_then(|key| key.span()).or_else(|| v.span());
            if let Some(s) = span {
                out.insert(path.clone(), line_col(text, s.start));
            }
            if let Some(inner) = v.as_table_like() {
                walk(inner, &path, text, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(table, "", text, &mut out);
    out
}

fn host_settings(
    c: &mut Collector<'_>,
    root: &Table,
    raw: RawHost,
    path: &Path,
    already_wrong: bool,
) -> HostSettings {
    let base = path.parent().unwrap_or(Path::new("."));
    let data_dir = raw.data_dir.map(|d| base.join(d)).unwrap_or_else(|| {
        if already_wrong {
            return PathBuf::new();
        }
        let span = root.get("host").and_then(Item::span).or(Some(0..0));
        c.at(
            span,
            "[host]: missing key `data_dir` (where the durable queue lives)",
        );
        PathBuf::new()
    });
    let (admin, problems) = AdminSettings::from_keys(AdminKeys {
        listen: raw.admin_listen,
        token_file: raw.admin_token_file.map(|f| base.join(f)),
        token_env: raw.admin_token_env,
        hosts: raw.admin_hosts,
        max_connections: raw.admin_max_connections,
        read_timeout_ms: raw.admin_read_timeout_ms,
        idle_timeout_ms: raw.admin_idle_timeout_ms,
    });
    for (key, message) in problems {
        let host = root.get("host");
        let span = host.and_then(|h| h.get(key)).and_then(Item::span);
        c.at(
            span.or_else(|| host.and_then(Item::span)),
            format!("[host] {key}: {message}"),
        );
    }
    HostSettings {
        data_dir,
        plugin_dir: raw.plugin_dir.map(|d| base.join(d)),
        admin_listen: raw.admin_listen,
        admin,
        dedup_window: Duration::from_secs(raw.dedup_window_secs.unwrap_or(86_400)),
        dedup_max_keys: raw.dedup_max_keys.unwrap_or(1_000_000).max(1),
        accept_empty_queue: false,
        history_max_alerts: raw.history_max_alerts.unwrap_or(10_000),
        max_queue_depth: raw.max_queue_depth.unwrap_or(100_000),
        stop_deadline: Duration::from_millis(raw.stop_deadline_ms.unwrap_or(10_000)),
        max_subject_bytes: raw.max_subject_bytes.unwrap_or(1024),
        max_body_bytes: raw.max_body_bytes.unwrap_or(64 * 1024),
        max_recipients_per_alert: raw.max_recipients_per_alert.unwrap_or(100),
    }
}

fn delivery_settings(c: &mut Collector<'_>, raw: RawDelivery) -> DeliverySettings {
    let d = DeliverySettings::default();
    let reachable = raw.reachable.map_or(d.reachable, |list| {
        list.into_iter()
            .filter_map(|s| {
                let state = PresenceState::from_name(s.get_ref());
                if state.is_none() {
                    c.at(
                        Some(s.span()),
                        format!(
                            "[delivery] reachable: unknown presence state `{}`",
                            s.get_ref()
                        ),
                    );
                }
                state
            })
            .collect()
    });
    let on_uncertain = raw
        .on_uncertain
        .map_or(d.on_uncertain, |s| match s.get_ref().as_str() {
            "resend" => OnUncertain::Resend,
            "skip" => OnUncertain::Skip,
            other => {
                c.at(
                    Some(s.span()),
                    format!("[delivery] on_uncertain: `{other}` is not `resend` or `skip`"),
                );
                d.on_uncertain
            }
        });
    DeliverySettings {
        presence_cache: raw
            .presence_cache_ms
            .map_or(d.presence_cache, Duration::from_millis),
        reachable,
        max_attempts: raw.max_attempts.unwrap_or(d.max_attempts).max(1),
        retry_initial: raw
            .retry_initial_ms
            .map_or(d.retry_initial, Duration::from_millis),
        retry_max: raw.retry_max_ms.map_or(d.retry_max, Duration::from_millis),
        hold_recheck: raw
            .hold_recheck_ms
            .map_or(d.hold_recheck, Duration::from_millis),
        per_recipient_per_minute: raw
            .per_recipient_per_minute
            .unwrap_or(d.per_recipient_per_minute),
        sink_concurrency: raw.sink_concurrency.unwrap_or(d.sink_concurrency).max(1),
        per_sink_per_second: raw.per_sink_per_second.unwrap_or(d.per_sink_per_second),
        deliver_timeout: raw
            .deliver_timeout_ms
            .map_or(d.deliver_timeout, Duration::from_millis),
        on_uncertain,
        fold_rate_limited: raw.fold_rate_limited.unwrap_or(d.fold_rate_limited),
    }
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

fn routes(
    c: &mut Collector<'_>,
    root: &Table,
    groups: &BTreeMap<String, Vec<String>>,
    sinks: &[&str],
    sources: &[&str],
    (policies, route_escalations): (&[&str], &mut BTreeMap<String, String>),
) -> Vec<Route> {
    let Some(item) = root.get("route") else {
        return vec![];
    };
    let Some(tables) = item.as_array_of_tables() else {
        c.at(
            root.key("route").and_then(|k| k.span()),
            "`route` must be an array of tables: write [[route]]",
        );
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

/// `[incidents]`: its responder groups must be known.
fn incident_settings(
    c: &mut Collector<'_>,
    root: &Table,
    groups: &BTreeMap<String, Vec<String>>,
) -> IncidentSettings {
    let raw = section::<RawIncidents>(c, root, "incidents").unwrap_or_default();
    for g in &raw.responders {
        if !groups.contains_key(g.get_ref()) {
            c.at(
                Some(g.span()),
                format!(
                    "[incidents] responders: no group `{}` in [groups]",
                    g.get_ref()
                ),
            );
        }
    }
    IncidentSettings {
        responders: raw
            .responders
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
    }
}

/// The `[[escalation]]` policies, each checked ([`EscalationPolicy::check`]) with its error
/// placed at the level (or the name) it is about.
fn escalations(
    c: &mut Collector<'_>,
    root: &Table,
    groups: &BTreeMap<String, Vec<String>>,
) -> Vec<EscalationPolicy> {
    let Some(item) = root.get("escalation") else {
        return vec![];
    };
    let Some(tables) = item.as_array_of_tables() else {
        c.at(
            root.key("escalation").and_then(|k| k.span()),
            "`escalation` must be an array of tables: write [[escalation]]",
        );
        return vec![];
    };
    let mut out: Vec<EscalationPolicy> = Vec::new();
    for t in tables {
        let Some(raw) = deserialize::<RawEscalation>(c, &Item::Table(t.clone()), "[[escalation]]")
        else {
            continue;
        };
        let name = raw.name.get_ref().clone();
        if out.iter().any(|p| p.name == name) {
            c.at(
                Some(raw.name.span()),
                format!("escalation `{name}` is defined twice"),
            );
            continue;
        }
        let spans: Vec<_> = raw.levels.get_ref().iter().map(Spanned::span).collect();
        let policy = EscalationPolicy {
            name,
            repeat: raw.repeat,
            ack_timeout_secs: raw.ack_timeout_secs,
            levels: raw
                .levels
                .into_inner()
                .into_iter()
                .map(|l| {
                    let l = l.into_inner();
                    Level {
                        groups: l.groups,
                        users: l.users,
                        after_secs: l.after_secs,
                    }
                })
                .collect(),
        };
        // A failed policy is kept so a route naming it is not also told it is missing; the
        // error fails the file anyway.
        if let Err(e) = policy.check(|g| groups.contains_key(g)) {
            let span = e.level().and_then(|l| spans.get(l - 1).cloned());
            c.at(Some(span.unwrap_or_else(|| raw.name.span())), e.to_string());
        }
        out.push(policy);
    }
    out
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

#[cfg(test)]
mod tests;
