//! Tests of the Alertmanager / Grafana mapping on the captured Alertmanager 0.25 sample and
//! hand-made variants.

use super::*;

const SAMPLE: &[u8] = include_bytes!("../../tests/fixtures/alertmanager-0.25-sample.json");
const GRAFANA: &[u8] = include_bytes!("../../tests/fixtures/grafana-sample.json");

fn config(resolved: Resolved) -> AlertmanagerConfig {
    AlertmanagerConfig {
        resolved,
        ..AlertmanagerConfig::default()
    }
}

#[test]
fn the_captured_sample_maps_field_by_field() {
    let alerts = parse(SAMPLE, &config(Resolved::Ignore)).expect("valid");
    assert_eq!(alerts.len(), 2);
    assert!(
        alerts[1].is_none(),
        "resolved alerts are ignored by default"
    );
    let a = alerts[0].as_ref().expect("firing alert");
    assert_eq!(a.subject, "Disk /var/lib/postgresql is 97% full");
    assert_eq!(a.body, "Only 3% free space left on db-01 — Ölstand prüfen");
    assert_eq!(a.severity, Severity::CRITICAL);
    assert_eq!(
        a.labels.get("instance").map(String::as_str),
        Some("db-01:9100")
    );
    assert_eq!(a.labels.len(), 4);
    assert_eq!(
        a.dedup_key.as_deref(),
        Some("am:48560f432796ad7e:2026-11-29T14:19:23Z:firing")
    );
    let attr = |k: &str| a.attributes.get(k).map(String::as_str);
    assert_eq!(attr("alertmanager.receiver"), Some("bridge"));
    assert_eq!(attr("alertmanager.external_url"), Some("http://vm:19093"));
    assert_eq!(
        attr("alertmanager.generator_url"),
        Some("http://127.0.0.1:9090/graph?g0.expr=node_filesystem_avail_bytes")
    );
    assert_eq!(attr("alertmanager.status"), Some("firing"));
    assert_eq!(attr("alertmanager.ends_at"), None);
}

#[test]
fn resolved_alerts_can_be_forwarded_as_info() {
    let alerts = parse(SAMPLE, &config(Resolved::Forward)).expect("valid");
    let r = alerts[1].as_ref().expect("forwarded");
    assert_eq!(r.subject, "[RESOLVED] Disk /var/log is 92% full");
    assert_eq!(r.severity, Severity::INFO);
    assert_eq!(
        r.dedup_key.as_deref(),
        Some("am:59ac805a0ddf8e8c:2026-11-29T14:19:23Z:resolved")
    );
    assert_eq!(
        r.attributes.get("alertmanager.ends_at").map(String::as_str),
        Some("2026-11-29T14:19:30Z")
    );
    assert_eq!(
        r.attributes.get("alertmanager.generator_url"),
        None,
        "empty values are left out"
    );
}

/// One alert of a notification, firing or resolved, as Alertmanager sends it (the resolved one
/// keeps `startsAt` and gains `endsAt`).
fn notification(status: &str) -> Vec<u8> {
    let ends = if status == "resolved" {
        "2026-12-07T10:05:00Z"
    } else {
        "0001-01-01T00:00:00Z"
    };
    format!(
        r#"{{"version":"4","status":"{status}","receiver":"bridge","alerts":[{{"status":"{status}",
        "labels":{{"alertname":"DiskFull","instance":"db01","severity":"critical"}},
        "annotations":{{"summary":"Disk full on db01"}},"startsAt":"2026-12-07T10:00:00Z",
        "endsAt":"{ends}","fingerprint":"0123456789abcdef"}}]}}"#
    )
    .into_bytes()
}

#[test]
fn resolve_hands_on_a_resolved_alert_with_the_firing_alerts_key() {
    let config = config(Resolved::Resolve);
    let firing = parse(&notification("firing"), &config).unwrap()[0]
        .clone()
        .expect("firing");
    let resolved = parse(&notification("resolved"), &config).unwrap()[0]
        .clone()
        .expect("resolved, not ignored");
    assert_eq!(firing.status(), AlertStatus::Firing);
    assert_eq!(resolved.status(), AlertStatus::Resolved);
    assert_eq!(
        resolved.attributes.get("status").map(String::as_str),
        Some("resolved")
    );
    assert_eq!(
        firing.dedup_key.as_deref(),
        Some("am:0123456789abcdef:2026-12-07T10:00:00Z:firing")
    );
    assert_eq!(resolved.dedup_key, firing.dedup_key, "the same incident");
    assert_eq!(resolved.subject, "[RESOLVED] Disk full on db01");
    assert_eq!(resolved.severity, firing.severity, "routes alike");
    // The firing key does not depend on the option.
    let other = parse(&notification("firing"), &self::config(Resolved::Forward)).unwrap();
    assert_eq!(other[0].as_ref().unwrap().dedup_key, firing.dedup_key);
}

#[test]
fn forward_and_ignore_never_resolve() {
    let forwarded = parse(&notification("resolved"), &config(Resolved::Forward)).unwrap()[0]
        .clone()
        .expect("forwarded");
    assert_eq!(
        forwarded.status(),
        AlertStatus::Firing,
        "a notice of its own"
    );
    assert!(!forwarded.attributes.contains_key("status"));
    assert_eq!(
        forwarded.dedup_key.as_deref(),
        Some("am:0123456789abcdef:2026-12-07T10:00:00Z:resolved")
    );
    let ignored = parse(&notification("resolved"), &config(Resolved::Ignore)).unwrap();
    assert!(ignored[0].is_none());
}

#[test]
fn the_fallback_fingerprint_is_alertmanagers() {
    let n: serde_json::Value = serde_json::from_slice(SAMPLE).expect("json");
    for a in n["alerts"].as_array().expect("alerts") {
        let labels: BTreeMap<String, String> =
            serde_json::from_value(a["labels"].clone()).expect("labels");
        assert_eq!(
            fingerprint(&labels),
            a["fingerprint"].as_str().expect("fingerprint")
        );
    }
    assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    let text = std::str::from_utf8(SAMPLE)
        .expect("utf-8")
        .replace(r#","fingerprint":"48560f432796ad7e""#, "");
    let alerts = parse(text.as_bytes(), &config(Resolved::Ignore)).expect("valid");
    let key = alerts[0].as_ref().and_then(|a| a.dedup_key.clone());
    assert_eq!(
        key.as_deref(),
        Some("am:48560f432796ad7e:2026-11-29T14:19:23Z:firing")
    );
}

#[test]
fn a_refire_after_resolve_gets_a_new_key() {
    let first = std::str::from_utf8(SAMPLE).expect("utf-8");
    let refire = first.replace(
        "\"startsAt\":\"2026-11-29T14:19:23Z\",\"endsAt\":\"0001",
        "\"startsAt\":\"2026-11-29T15:02:00Z\",\"endsAt\":\"0001",
    );
    assert_ne!(first, refire);
    let key = |text: &str| {
        parse(text.as_bytes(), &config(Resolved::Ignore)).expect("valid")[0]
            .clone()
            .and_then(|a| a.dedup_key)
    };
    assert_ne!(key(first), key(&refire));
    assert_eq!(
        key(first),
        key(first),
        "a repeated notification of the same episode keeps its key"
    );
}

#[test]
fn grafana_bodies_are_taken_too() {
    let alerts = parse(GRAFANA, &config(Resolved::Ignore)).expect("valid");
    let a = alerts[0].as_ref().expect("firing alert");
    assert_eq!(a.subject, "CPU above 90% on web-02");
    assert_eq!(a.severity, Severity::NORMAL, "warning maps to normal");
    assert_eq!(
        a.dedup_key.as_deref(),
        Some("am:c6eadffa33fcdf37:2026-11-29T14:00:00.123456789Z:firing")
    );
    assert_eq!(
        a.attributes.get("grafana.panel_url").map(String::as_str),
        Some("http://grafana.example.net/d/xyz?orgId=1&viewPanel=2")
    );
}

#[test]
fn subject_and_severity_fallbacks() {
    let body = br#"{"version":"4","alerts":[
        {"status":"firing","labels":{"alertname":"NoSummary","severity":"P2"}},
        {"status":"firing","labels":{"level":"minor"},"annotations":{"summary":"  ","message":"m"}},
        {"status":"firing","labels":{"alertname":"Odd","severity":"purple"}}]}"#;
    let cfg = AlertmanagerConfig {
        severity_label: "level".into(),
        default_severity: Severity::HIGH,
        ..AlertmanagerConfig::default()
    };
    let alerts: Vec<Alert> = parse(body, &cfg)
        .expect("valid")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(alerts[0].subject, "NoSummary");
    assert_eq!(
        alerts[0].severity,
        Severity::HIGH,
        "label `level` missing: the default"
    );
    assert_eq!(
        alerts[1].subject,
        format!("alert {}", fingerprint(&alerts[1].labels))
    );
    assert_eq!(
        (alerts[1].body.as_str(), alerts[1].severity),
        ("m", Severity::LOW)
    );
    let alerts: Vec<Alert> = parse(body, &AlertmanagerConfig::default())
        .expect("valid")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(alerts[0].severity, Severity::HIGH);
    assert_eq!(
        alerts[2].severity,
        Severity::NORMAL,
        "unknown value: the default"
    );
}

fn err(body: &str) -> String {
    parse(body.as_bytes(), &AlertmanagerConfig::default())
        .expect_err(body)
        .to_string()
}

#[test]
fn errors_are_precise() {
    assert_eq!(
        err(r#"{"version":"3","alerts":[]}"#),
        "`version`: unsupported payload version \"3\": expected \"4\" (Alertmanager) or \"1\" with `orgId` (Grafana)"
    );
    assert_eq!(
        err(r#"{"version":"4","alerts":[]}"#),
        "`alerts`: the notification holds no alert"
    );
    assert_eq!(
        err("{\"version\":\"4\",\"alerts\":[\n{\"status\":\"pending\",\"labels\":{}}]}"),
        "`alerts[0].status` at line 2 column 19: unknown variant `pending`, expected `firing` or `resolved`"
    );
    assert_eq!(
        err(r#"{"version":"4","alerts":[{"status":"firing"}]}"#),
        "`alerts[0]` at line 1 column 44: missing field `labels`"
    );
    assert_eq!(
        err(r#"[{"labels":{"alertname":"x"}}]"#),
        "invalid JSON at line 1 column 1: expected a webhook notification object"
    );
}
