//! `alertbridge route`: which routes an alert matches, who it reaches through which sinks, and
//! what happens to offline recipients — without running anything (like `amtool config routes test`).

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use alertbridge_plugin_api::{Alert, Severity};
use serde::Deserialize;

use crate::{
    config::Config,
    model::StoredAlert,
    router::{Route, check_named_recipients},
};

/// The alert file: the JSON alert format (docs/design.md §5).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertFile {
    subject: String,
    #[serde(default)]
    body: String,
    severity: Option<String>,
    #[serde(default)]
    recipients: Recipients,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    dedup_key: Option<String>,
    expires: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Recipients {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

/// Why an alert file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AlertFileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads a JSON alert file.
pub fn read_alert(path: &Path) -> Result<Alert, AlertFileError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AlertFileError::Read {
        path: p.clone(),
        source,
    })?;
    let file: AlertFile = serde_json::from_str(&text).map_err(|e| AlertFileError::Parse {
        path: p.clone(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let severity = match file.severity.as_deref() {
        None => Severity::NORMAL,
        Some(s) => Severity::from_name(s).ok_or_else(|| AlertFileError::Parse {
            path: p.clone(),
            line: 0,
            column: 0,
            message: format!("unknown severity `{s}` (info, low, normal, high or critical)"),
        })?,
    };
    let _ = file.expires;
    Ok(Alert {
        subject: file.subject,
        body: file.body,
        severity,
        groups: file.recipients.groups,
        users: file.recipients.users,
        labels: file.labels,
        dedup_key: file.dedup_key,
        expires_unix_ms: None,
        attributes: BTreeMap::new(),
    })
}

/// The report for `alert` as if it came from `source`.
pub fn explain(config: &Config, source: &str, alert: Alert) -> String {
    let router = &config.router;
    let stored = StoredAlert::new(0, source, alert, 0);
    let a = &stored.alert;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "alert: {:?} (severity {}, source {:?})",
        a.subject, a.severity, source
    );
    if let Err(e) = check_named_recipients(a, config.host.max_recipients_per_alert) {
        let _ = writeln!(out, "refused when submitted: {e}");
        return out;
    }
    let matching: Vec<&Route> = router.matching(&stored);
    if matching.is_empty() {
        let _ = writeln!(out, "no route matches: nobody would be told");
        return out;
    }
    let _ = writeln!(out, "matching routes:");
    for (i, r) in matching.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {}{}",
            i + 1,
            r.name,
            if r.cont { " (continue)" } else { "" }
        );
        let users = router.recipients(r, &stored);
        let _ = writeln!(
            out,
            "     recipients: {}",
            if users.is_empty() {
                "(none)".to_owned()
            } else {
                users.join(", ")
            }
        );
        let _ = writeln!(out, "     sinks: {}", r.sinks.join(", "));
        let _ = writeln!(out, "     offline recipients: {}", r.offline);
        let named_in_alert = !a.groups.is_empty() || !a.users.is_empty();
        if named_in_alert && !r.allow_alert_recipients {
            let _ = writeln!(
                out,
                "     (recipients named in the alert are ignored: allow_alert_recipients = false)"
            );
        }
    }
    let _ = writeln!(out, "messages:");
    for (t, _) in router.plan(&stored) {
        let _ = writeln!(out, "  {} -> {} (route {})", t.sink, t.user, t.route);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_routes_recipients_and_offline_policy() {
        let text = r#"
[host]
data_dir = "/tmp/x"
[[source]]
name = "mail"
plugin = "pop3"
[[sink]]
name = "lync"
plugin = "ucwa"
[groups]
ops = ["sip:alice@x", "sip:bob@x"]
dba = ["sip:carol@x"]
[[route]]
name = "crit"
match = { severity = ">=high" }
groups = ["ops"]
sinks = ["lync"]
continue = true
offline = { policy = "hold", max_wait_secs = 900, then = "fallback", fallback = "dba" }
[[route]]
name = "dba"
groups = ["dba"]
sinks = ["lync"]
"#;
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        let mut alert = Alert::new("Disk full on db01");
        alert.severity = Severity::CRITICAL;
        alert.users = vec!["sip:mallory@x".into()];
        let report = explain(&config, "mail", alert);
        assert_eq!(
            report,
            "alert: \"Disk full on db01\" (severity critical, source \"mail\")\n\
             matching routes:\n\
             \x20 1. crit (continue)\n\
             \x20    recipients: sip:alice@x, sip:bob@x\n\
             \x20    sinks: lync\n\
             \x20    offline recipients: hold up to 900 s, then hand them to route `dba`\n\
             \x20    (recipients named in the alert are ignored: allow_alert_recipients = false)\n\
             \x20 2. dba\n\
             \x20    recipients: sip:carol@x\n\
             \x20    sinks: lync\n\
             \x20    offline recipients: skip them\n\
             \x20    (recipients named in the alert are ignored: allow_alert_recipients = false)\n\
             messages:\n\
             \x20 lync -> sip:alice@x (route crit)\n\
             \x20 lync -> sip:bob@x (route crit)\n\
             \x20 lync -> sip:carol@x (route dba)\n"
        );
        assert!(explain(&config, "mail", Alert::new("x")).contains("matching routes:\n  1. dba\n"));
        let mut flood = Alert::new("flood");
        flood.users = (0..101).map(|i| format!("sip:u{i}@x")).collect();
        assert_eq!(
            explain(&config, "mail", flood),
            "alert: \"flood\" (severity normal, source \"mail\")\n\
             refused when submitted: the alert names 101 recipients (users and groups); the limit \
             is 100 (max_recipients_per_alert)\n"
        );
    }
}
