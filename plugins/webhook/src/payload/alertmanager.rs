//! The Prometheus Alertmanager webhook payload (version 4), and Grafana's superset of it
//! (version 1, with `orgId`): each alert of the notification becomes one [`Alert`].
//!
//! Mapping:
//! - labels are kept as they are; `annotations.summary` (else `title`, else the `alertname`
//!   label) is the subject, `annotations.description` (else `message`) the body;
//! - the severity comes from the configured label through [`severity_from_label`];
//! - a `resolved` alert is left out (`ignore`), forwarded as an `info` alert whose subject
//!   starts with `[RESOLVED] ` (`forward`), or (`resolve`) handed on with status resolved
//!   (`attributes["status"] = "resolved"`) and the dedup key its firing alert had, so the host
//!   resolves that alert's open incident instead of paging;
//! - the dedup key is `am:<fingerprint>:<startsAt>:<status>` (for `resolve`, a resolved alert's
//!   key names `firing`: it is the key of the alert it resolves).
//!
//! Why that key: Alertmanager sends the *whole group* on every notification — when an alert
//! joins or leaves the group, and again every `repeat_interval` — so the same firing alert comes
//! many times and must give one IM. Its fingerprint (a hash of its labels) alone would also
//! swallow a re-fire after a resolve within the host's dedup window; the re-fire has a new
//! `startsAt`, so adding it keeps the new episode apart, and adding the status keeps the
//! resolve notice apart from the firing one. When `fingerprint` is absent (hand-written
//! payloads) it is computed from the labels exactly as Alertmanager does (FNV-1a 64 over the
//! sorted `name 0xff value 0xff` pairs), so both spellings give the same key.

use std::collections::BTreeMap;

use alertbridge_plugin_api::{Alert, AlertStatus, Severity};
use serde::Deserialize;

use super::PayloadError;
use crate::config::{AlertmanagerConfig, Resolved};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    version: String,
    alerts: Vec<AmAlert>,
    #[serde(default)]
    receiver: String,
    #[serde(default)]
    group_key: String,
    #[serde(default, rename = "externalURL")]
    external_url: String,
    /// Present in Grafana's payload only.
    #[serde(default)]
    org_id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    status: Status,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    ends_at: String,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
    #[serde(default, rename = "dashboardURL")]
    dashboard_url: String,
    #[serde(default, rename = "panelURL")]
    panel_url: String,
    #[serde(default, rename = "silenceURL")]
    silence_url: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Firing,
    Resolved,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// Parses a notification. Each entry is the alert to submit for the payload's alert at the
/// same index, or `None` for a resolved alert the config says to ignore.
pub fn parse(
    bytes: &[u8],
    config: &AlertmanagerConfig,
) -> Result<Vec<Option<Alert>>, PayloadError> {
    super::json::expect_object(bytes, "a webhook notification object")?;
    let n: Notification = super::json::deserialize(bytes)?;
    let flavour = match (n.version.as_str(), &n.org_id) {
        ("4", _) => "alertmanager",
        ("1", Some(_)) => "grafana",
        (v, _) => {
            let message = format!(
                "unsupported payload version {v:?}: expected \"4\" (Alertmanager) or \"1\" with `orgId` (Grafana)"
            );
            return Err(PayloadError::Invalid(format!("`version`: {message}")));
        }
    };
    if n.alerts.is_empty() {
        return Err(PayloadError::Invalid(
            "`alerts`: the notification holds no alert".into(),
        ));
    }
    let mut out = Vec::with_capacity(n.alerts.len());
    for a in n.alerts {
        if a.status == Status::Resolved && config.resolved == Resolved::Ignore {
            out.push(None);
            continue;
        }
        let fingerprint = if a.fingerprint.is_empty() {
            fingerprint(&a.labels)
        } else {
            a.fingerprint.clone()
        };
        let name = a.labels.get("alertname").cloned().unwrap_or_default();
        let summary = first_of(&a.annotations, &["summary", "title"]).unwrap_or(&name);
        let mut subject = if summary.is_empty() {
            format!("alert {fingerprint}")
        } else {
            summary.clone()
        };
        let body = first_of(&a.annotations, &["description", "message"])
            .cloned()
            .unwrap_or_default();
        let labelled = a
            .labels
            .get(&config.severity_label)
            .and_then(|v| severity_from_label(v))
            .unwrap_or(config.default_severity);
        // What the alert says and the status its dedup key names.
        let (severity, status, key_status) = match (a.status, config.resolved) {
            (Status::Firing, _) => (labelled, AlertStatus::Firing, Status::Firing),
            (Status::Resolved, Resolved::Resolve) => {
                subject.insert_str(0, "[RESOLVED] ");
                (labelled, AlertStatus::Resolved, Status::Firing)
            }
            (Status::Resolved, _) => {
                subject.insert_str(0, "[RESOLVED] ");
                (Severity::INFO, AlertStatus::Firing, Status::Resolved)
            }
        };
        let mut attributes = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            if !value.is_empty() {
                attributes.insert(format!("{flavour}.{key}"), value.to_owned());
            }
        };
        put("status", a.status.name());
        put("fingerprint", &fingerprint);
        put("starts_at", &a.starts_at);
        if a.status == Status::Resolved {
            put("ends_at", &a.ends_at);
        }
        put("generator_url", &a.generator_url);
        put("receiver", &n.receiver);
        put("group_key", &n.group_key);
        put("external_url", &n.external_url);
        put("dashboard_url", &a.dashboard_url);
        put("panel_url", &a.panel_url);
        put("silence_url", &a.silence_url);
        for (k, v) in &a.annotations {
            put(&format!("annotation.{k}"), v);
        }
        out.push(Some(
            Alert {
                subject,
                body,
                severity,
                labels: a.labels,
                dedup_key: Some(format!(
                    "am:{fingerprint}:{}:{}",
                    a.starts_at,
                    key_status.name()
                )),
                attributes,
                ..Alert::default()
            }
            .with_status(status),
        ));
    }
    Ok(out)
}

fn first_of<'a>(map: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a String> {
    keys.iter()
        .filter_map(|k| map.get(*k))
        .find(|v| !v.trim().is_empty())
}

/// Maps the value of a severity label, as monitoring setups write it, to our severity;
/// `None` for a value it does not know (the config's default applies).
pub fn severity_from_label(value: &str) -> Option<Severity> {
    let severity = match value.trim().to_ascii_lowercase().as_str() {
        "critical" | "crit" | "fatal" | "emergency" | "emerg" | "alert" | "page" | "disaster"
        | "p1" => Severity::CRITICAL,
        "high" | "error" | "err" | "major" | "severe" | "p2" => Severity::HIGH,
        "normal" | "warning" | "warn" | "medium" | "average" | "moderate" | "p3" => {
            Severity::NORMAL
        }
        "low" | "minor" | "notice" | "p4" => Severity::LOW,
        "info" | "informational" | "information" | "none" | "ok" | "debug" | "p5" => Severity::INFO,
        _ => return None,
    };
    Some(severity)
}

/// Alertmanager's fingerprint of a label set (prometheus/common `labelSetToFingerprint`), as
/// 16 lowercase hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    // BTreeMap iterates in byte order of the names, as Go's sort of the names does.
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
#[path = "alertmanager_tests.rs"]
mod tests;
