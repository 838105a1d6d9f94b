//! What a message template sees: one alert (or a group's alerts, for a digest) as plain
//! serializable values — fields, labels, annotations, the incident number and reply hint of a
//! page, and the link to the alert on the status page.

use std::collections::BTreeMap;

use alertbridge_plugin_api::kit::format::unix_ms_rfc3339;
use serde::Serialize;

use crate::model::{PAGE_SOURCE, StoredAlert};

/// The most alerts of a group a template sees in `alerts` (the rest only count in `count`);
/// the rendered text is bounded anyway, so more could never be shown.
pub const MAX_GROUP_ALERTS: usize = 200;

/// One alert as a template sees it (`alert`, and each of `alerts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AlertView {
    /// The queue's id (what the status page and the API name it by).
    pub id: u64,
    pub uid: String,
    pub subject: String,
    /// The same as `subject` (Alertmanager's word).
    pub title: String,
    pub text: String,
    pub severity: String,
    pub source: String,
    pub dedup_key: String,
    /// When the host accepted it, RFC 3339 in UTC.
    pub received: String,
    pub received_ms: i64,
    pub labels: BTreeMap<String, String>,
    /// Alertmanager annotations (the attributes `<flavour>.annotation.<name>`), by name.
    pub annotations: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, String>,
    /// The alert on the status page (`[host] public_url`), or empty.
    pub url: String,
}

impl AlertView {
    /// The view of a stored alert.
    pub fn of(stored: &StoredAlert) -> Self {
        let a = &stored.alert;
        let annotations = a
            .attributes
            .iter()
            .filter_map(|(k, v)| {
                let (_, name) = k.split_once(".annotation.")?;
                Some((name.to_owned(), v.clone()))
            })
            .collect();
        Self {
            id: stored.id,
            uid: stored.uid.clone(),
            subject: a.subject.clone(),
            title: a.subject.clone(),
            text: a.body.clone(),
            severity: a.severity.name().to_owned(),
            source: stored.source.clone(),
            dedup_key: a.dedup_key.clone().unwrap_or_default(),
            received: unix_ms_rfc3339(stored.accepted_ms),
            received_ms: stored.accepted_ms,
            labels: a.labels.clone(),
            annotations,
            attributes: a.attributes.clone(),
            url: String::new(),
        }
    }
}

/// What one message is rendered from: one alert, or a group's alerts (a digest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The message's subject and text as they are without a template (`{{ subject }}`,
    /// `{{ text }}`): the alert's own, or the digest's summary.
    pub subject: String,
    pub text: String,
    /// The alert; for a group, its first alert.
    pub alert: AlertView,
    /// The group's alerts (at most [`MAX_GROUP_ALERTS`]); one alert: just it.
    pub alerts: Vec<AlertView>,
    /// How many alerts the message stands for (more than `alerts` holds when cut).
    pub count: usize,
    /// The incident number, when the alert is an incident's page.
    pub incident: Option<u64>,
}

impl Context {
    /// The context of one alert's message.
    pub fn alert(stored: &StoredAlert) -> Self {
        let view = AlertView::of(stored);
        let incident = (stored.source == PAGE_SOURCE)
            .then(|| stored.alert.labels.get("incident")?.parse().ok())
            .flatten();
        Self {
            subject: stored.alert.subject.clone(),
            text: stored.alert.body.clone(),
            alert: view.clone(),
            alerts: vec![view],
            count: 1,
            incident,
        }
    }

    /// The context of a digest: `subject` and `text` are its summary without a template, and
    /// `alerts` the group's alerts (the first is `alert`; at most [`MAX_GROUP_ALERTS`] are kept).
    pub fn group(
        subject: impl Into<String>,
        text: impl Into<String>,
        alerts: &[&StoredAlert],
    ) -> Self {
        let views: Vec<AlertView> = alerts
            .iter()
            .take(MAX_GROUP_ALERTS)
            .map(|a| AlertView::of(a))
            .collect();
        Self {
            subject: subject.into(),
            text: text.into(),
            alert: views.first().cloned().unwrap_or_default(),
            alerts: views,
            count: alerts.len(),
            incident: None,
        }
    }

    /// The reply hint of an incident page: how to acknowledge, resolve or escalate it.
    pub fn reply_hint(&self) -> String {
        self.incident.map_or_else(String::new, |n| {
            format!("reply `ack {n}`, `resolve {n}` or `esc {n}`")
        })
    }
}

/// The variables of one render: the alert's fields at the top level too, so `{{ labels.host }}`
/// works as well as `{{ alert.labels.host }}`.
#[derive(Serialize)]
pub(super) struct Root<'a> {
    pub id: u64,
    pub uid: &'a str,
    pub subject: &'a str,
    pub title: &'a str,
    pub text: &'a str,
    pub severity: &'a str,
    pub source: &'a str,
    pub dedup_key: &'a str,
    pub received: &'a str,
    pub received_ms: i64,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    pub attributes: &'a BTreeMap<String, String>,
    pub alert: &'a AlertView,
    pub alerts: &'a [AlertView],
    pub count: usize,
    /// Alerts the message stands for beyond those in `alerts`.
    pub more: usize,
    pub incident: Option<u64>,
    pub reply_hint: String,
    pub alert_url: &'a str,
    pub public_url: &'a str,
    pub route: &'a str,
    pub sink: &'a str,
}

impl<'a> Root<'a> {
    pub(super) fn new(
        ctx: &'a Context,
        route: &'a str,
        sink: &'a str,
        public_url: &'a str,
    ) -> Self {
        let a = &ctx.alert;
        Self {
            id: a.id,
            uid: &a.uid,
            subject: &ctx.subject,
            title: &ctx.subject,
            text: &ctx.text,
            severity: &a.severity,
            source: &a.source,
            dedup_key: &a.dedup_key,
            received: &a.received,
            received_ms: a.received_ms,
            labels: &a.labels,
            annotations: &a.annotations,
            attributes: &a.attributes,
            alert: a,
            alerts: &ctx.alerts,
            count: ctx.count,
            more: ctx.count.saturating_sub(ctx.alerts.len()),
            incident: ctx.incident,
            reply_hint: ctx.reply_hint(),
            alert_url: &a.url,
            public_url,
            route,
            sink,
        }
    }
}

/// The status page's address of alert `id` under `public_url` (`<public_url>/?alert=<id>`).
pub fn alert_url(public_url: &str, id: u64) -> String {
    if public_url.is_empty() {
        return String::new();
    }
    format!("{}/?alert={id}", public_url.trim_end_matches('/'))
}
