//! `alertbridge route`'s engine: which routes an alert matches, who it reaches through which
//! sinks, what happens to offline recipients, and the message each of them would get (through
//! the route's or the sink's template) — without running anything (like
//! `amtool config routes test`).
//!
//! The alert file is read by the kit's alert format parser ([`format`], specified in
//! `docs/alert-format.md`), the same one the webhook and the pop3 source use: JSON or the XML
//! document, found from its first byte.

use std::{fmt::Write as _, path::Path};

use alertbridge_plugin_api::{
    Alert,
    kit::format::{self, FormatError, Limits},
};

use crate::{
    config::Config,
    model::{StoredAlert, now_ms},
    router::{Route, check_named_recipients},
    template::{Context, Rendered},
};

/// Why an alert file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AlertFileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: FormatError,
    },
    #[error("{path}: the file holds {count} alerts; `alertbridge route` explains one")]
    NotOne { path: String, count: usize },
}

/// Reads an alert file: one alert in the JSON or the XML form, at most
/// [`Limits::DEFAULT`]`.max_bytes` long.
pub fn read_alert(path: &Path) -> Result<Alert, AlertFileError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| AlertFileError::Read {
        path: p.clone(),
        source,
    })?;
    let mut alerts =
        format::parse(&bytes, None, &Limits::DEFAULT).map_err(|source| AlertFileError::Parse {
            path: p.clone(),
            source,
        })?;
    match (alerts.pop(), alerts.len()) {
        (Some(alert), 0) => Ok(alert),
        (_, n) => Err(AlertFileError::NotOne {
            path: p,
            count: n + 1,
        }),
    }
}

/// The report for `alert` as if it came from `source`.
pub fn explain(config: &Config, source: &str, alert: Alert) -> String {
    let router = &config.router;
    let stored = StoredAlert::new(0, source, alert, now_ms());
    let a = &stored.alert;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "alert: {:?} (severity {}, source {:?})",
        a.subject, a.severity, source
    );
    if let Some(at) = a.expires_unix_ms {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let _ = writeln!(
            out,
            "expires: {}{}",
            format::unix_ms_rfc3339(at),
            if at <= now {
                " (already past: every recipient would be skipped, \"expired before delivery\")"
            } else {
                ""
            }
        );
    }
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
        if let Some(policy) = config.route_escalations.get(&r.name) {
            escalation(&mut out, config, policy);
        } else {
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
        }
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
    let plan = router.plan(&stored);
    let incident = matching
        .iter()
        .any(|r| config.route_escalations.contains_key(&r.name));
    if plan.is_empty() {
        let _ = writeln!(
            out,
            "  {}",
            if incident {
                "(none at once: the incident pages each level through the route's sinks, as above)"
            } else {
                "(none)"
            }
        );
    }
    for (t, _) in &plan {
        let _ = writeln!(out, "  {} -> {} (route {})", t.sink, t.user, t.route);
    }
    // One rendered message per route and sink, in plan order, with who gets it.
    let ctx = Context::alert(&stored);
    let mut calls: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for (t, _) in &plan {
        match calls
            .iter_mut()
            .find(|(r, s, _)| *r == t.route && *s == t.sink)
        {
            Some((_, _, users)) => users.push(&t.user),
            None => calls.push((&t.route, &t.sink, vec![&t.user])),
        }
    }
    for (route, sink, users) in calls {
        let rendered = router.templates.render(route, sink, &ctx);
        let _ = writeln!(
            out,
            "message of route {route} through {sink} to {}:",
            users.join(", ")
        );
        show(&mut out, &rendered);
    }
    out
}

/// An escalation route's incident: its policy, and who each level pages, when.
fn escalation(out: &mut String, config: &Config, policy: &str) {
    let _ = writeln!(
        out,
        "     opens an incident under escalation policy `{policy}` (alerts with the same dedup key join it)"
    );
    let Some(p) = config.escalations.iter().find(|p| p.name == policy) else {
        return;
    };
    for (i, level) in p.levels.iter().enumerate() {
        let mut users: Vec<&str> = Vec::new();
        let members = level
            .groups
            .iter()
            .filter_map(|g| config.router.groups.get(g))
            .flatten();
        for u in level.users.iter().chain(members) {
            if !users.contains(&u.as_str()) {
                users.push(u);
            }
        }
        let when = if level.after_secs == 0 {
            "at once".to_owned()
        } else {
            format!(
                "{} s after it opened, if nobody acknowledged",
                level.after_secs
            )
        };
        let _ = writeln!(
            out,
            "     level {}: {} ({when})",
            i + 1,
            if users.is_empty() {
                "(nobody)".to_owned()
            } else {
                users.join(", ")
            }
        );
    }
    if p.repeat > 0 {
        let _ = writeln!(
            out,
            "     then the levels run again {} more time(s)",
            p.repeat
        );
    }
}

/// A rendered message, indented: which template made it, the subject and the text.
fn show(out: &mut String, r: &Rendered) {
    let _ = match &r.template {
        None => writeln!(out, "  template: none (the alert's own subject and text)"),
        Some(owner) => writeln!(out, "  template: {owner}'s"),
    };
    if let Some(e) = &r.error {
        let _ = writeln!(
            out,
            "  render failed, the alert's own text is sent instead: {e}"
        );
    }
    let _ = writeln!(out, "  subject: {}", r.subject);
    let _ = writeln!(out, "  text:");
    for line in r.text.lines() {
        let _ = writeln!(out, "    | {line}");
    }
}

#[cfg(test)]
mod tests {
    use alertbridge_plugin_api::Severity;

    use super::*;

    /// `alertbridge route` dropped `expires` (and read only JSON, with its own severity rule):
    /// the file is now read by the alert format parser, in either form, and the report says
    /// when the alert expires and that a past one would reach nobody.
    #[test]
    fn alert_files_in_either_form_keep_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("a.json");
        std::fs::write(
            &json,
            r#"{"subject": "Disk full", "severity": "High", "expires": "2099-12-01T10:00:00Z",
                "recipients": {"groups": ["ops"]}, "labels": {"host": "db01"}, "dedup_key": "k"}"#,
        )
        .unwrap();
        let a = read_alert(&json).unwrap();
        assert_eq!(
            (a.severity, a.expires_unix_ms, a.dedup_key.as_deref()),
            (Severity::HIGH, Some(4_099_802_400_000), Some("k"))
        );
        let xml = dir.path().join("a.xml");
        std::fs::write(
            &xml,
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<alert xmlns=\"urn:alertbridge:alert:1\">\
              <subject>Disk full</subject><severity>high</severity><expires>2099-12-01T10:00:00Z</expires>\
              <recipients><group>ops</group></recipients><labels><label name=\"host\">db01</label></labels>\
              <dedup-key>k</dedup-key></alert>",
        )
        .unwrap();
        assert_eq!(read_alert(&xml).unwrap(), a);

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"subject\": \"x\",\n \"severity\": \"urgent\"}").unwrap();
        assert_eq!(
            read_alert(&bad).unwrap_err().to_string(),
            format!(
                "{}: `severity` at line 2 column 22: unknown severity \"urgent\", expected info, low, normal, high or critical",
                bad.display()
            )
        );
        std::fs::write(&bad, "[{\"subject\": \"x\"}, {\"subject\": \"y\"}]").unwrap();
        assert_eq!(
            read_alert(&bad).unwrap_err().to_string(),
            format!(
                "{}: the file holds 2 alerts; `alertbridge route` explains one",
                bad.display()
            )
        );

        let config = Config::parse(
            Path::new("t.toml"),
            "[host]\ndata_dir = \"/tmp/x\"\n[[sink]]\nname = \"lync\"\nplugin = \"ucwa\"\n\
             [groups]\nops = [\"sip:a@x\"]\n[[route]]\nname = \"all\"\ngroups = [\"ops\"]\nsinks = [\"lync\"]\n",
        )
        .unwrap();
        let report = explain(&config, "mail", a.clone());
        assert!(
            report.starts_with(
                "alert: \"Disk full\" (severity high, source \"mail\")\n\
                 expires: 2099-12-01T10:00:00Z\n"
            ),
            "{report}"
        );
        let mut past = a;
        past.expires_unix_ms = Some(1_000);
        assert!(
            explain(&config, "mail", past).contains(
                "expires: 1970-01-01T00:00:01Z (already past: every recipient would be skipped, \"expired before delivery\")\n"
            )
        );
    }

    #[test]
    fn an_escalation_route_says_it_opens_an_incident_and_lists_its_levels() {
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
dba = ["sip:carol@x", "sip:dave@x"]
[[escalation]]
name = "db-oncall"
repeat = 1
levels = [
  { groups = ["dba"], after_secs = 0 },
  { users = ["sip:lead@x", "sip:carol@x"], after_secs = 300 },
]
[[route]]
name = "database"
escalation = "db-oncall"
sinks = ["lync"]
"#;
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        let report = explain(&config, "mail", Alert::new("Replication lag"));
        assert_eq!(
            report,
            "alert: \"Replication lag\" (severity normal, source \"mail\")\n\
             matching routes:\n\
             \x20 1. database\n\
             \x20    opens an incident under escalation policy `db-oncall` (alerts with the same \
             dedup key join it)\n\
             \x20    level 1: sip:carol@x, sip:dave@x (at once)\n\
             \x20    level 2: sip:lead@x, sip:carol@x (300 s after it opened, if nobody \
             acknowledged)\n\
             \x20    then the levels run again 1 more time(s)\n\
             \x20    sinks: lync\n\
             \x20    offline recipients: skip them\n\
             messages:\n\
             \x20 (none at once: the incident pages each level through the route's sinks, as \
             above)\n"
        );
    }

    #[test]
    fn explains_routes_recipients_and_offline_policy() {
        let text = r#"
[host]
data_dir = "/tmp/x"
public_url = "https://ab.example.com"
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
template = """
{{ severity | upper }} {{ subject }} @ {{ labels.host }}
see {{ alert_url }}
"""
[[route]]
name = "dba"
groups = ["dba"]
sinks = ["lync"]
"#;
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        let mut alert = Alert::new("Disk full on db01");
        alert.body = "/var at 98%".into();
        alert.labels.insert("host".into(), "db01".into());
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
             \x20 lync -> sip:carol@x (route dba)\n\
             message of route crit through lync to sip:alice@x, sip:bob@x:\n\
             \x20 template: route `crit`'s\n\
             \x20 subject: Disk full on db01\n\
             \x20 text:\n\
             \x20   | CRITICAL Disk full on db01 @ db01\n\
             \x20   | see https://ab.example.com/?alert=0\n\
             message of route dba through lync to sip:carol@x:\n\
             \x20 template: none (the alert's own subject and text)\n\
             \x20 subject: Disk full on db01\n\
             \x20 text:\n\
             \x20   | /var at 98%\n"
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
