//! End to end with a real Prometheus Alertmanager: alerts posted to its `POST /api/v2/alerts`
//! reach our webhook as its receiver and arrive in the host with labels, subject and dedup key;
//! resolved ones as a `[RESOLVED]` notice (`forward`) or, with `resolve`, as a resolved alert
//! with its firing alert's dedup key.
//!
//! Needs `scripts/alertmanager.sh start DIR` and its `env` exports:
//! `ALERTBRIDGE_TEST_ALERTMANAGER_URL` (required), `ALERTBRIDGE_TEST_ALERTMANAGER_WEBHOOK`
//! (where Alertmanager sends, default `127.0.0.1:19181`) and `ALERTBRIDGE_TEST_ALERTMANAGER_TOKEN`
//! (the bearer token it sends, default `alertbridge-am-test-token`). Without them the test
//! skips with one line saying what to start; with `ALERTBRIDGE_REQUIRE_SERVERS=1`
//! (`scripts/test`) it fails instead.

mod common;

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{Alert, AlertStatus, Severity, testing::TestHost};
use alertbridge_webhook::payload::alertmanager::fingerprint;
use serde_json::json;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

fn env(name: &str, default: Option<&str>) -> String {
    match (std::env::var(name), default) {
        (Ok(v), _) => v,
        (Err(_), Some(d)) => d.to_owned(),
        (Err(_), None) => panic!(
            "{name} is not set: start Alertmanager with scripts/alertmanager.sh (start DIR, then eval \"$(scripts/alertmanager.sh env DIR)\")"
        ),
    }
}

/// The test Alertmanager's URL, if `ALERTBRIDGE_TEST_ALERTMANAGER_URL` is set and it answers.
/// Otherwise the test skips, printing one line that says how to start it, or fails when
/// `ALERTBRIDGE_REQUIRE_SERVERS` is set (as `scripts/test` does): CI cannot pass by skipping.
fn alertmanager() -> Option<String> {
    let found = std::env::var("ALERTBRIDGE_TEST_ALERTMANAGER_URL")
        .map_err(|_| "ALERTBRIDGE_TEST_ALERTMANAGER_URL is not set".to_owned())
        .and_then(|url| {
            let addr = url.trim_start_matches("http://");
            let addr = addr.split('/').next().unwrap_or(addr);
            std::net::TcpStream::connect(addr)
                .map(|_| url.clone())
                .map_err(|e| format!("nothing answers at {url} ({e})"))
        });
    match found {
        Ok(url) => Some(url),
        Err(why) => {
            let hint = "run scripts/test, or `scripts/alertmanager.sh start DIR` and eval \
                        \"$(scripts/alertmanager.sh env DIR)\"";
            let required = std::env::var("ALERTBRIDGE_REQUIRE_SERVERS")
                .is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0");
            assert!(
                !required,
                "Alertmanager is required (ALERTBRIDGE_REQUIRE_SERVERS is set) but {why}: {hint}"
            );
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            // Past the test harness's capture, so `cargo test` shows it; one write of the
            // whole line, so lines of tests running side by side do not interleave.
            let line = format!("skipped {test}: no Alertmanager ({why}) — {hint}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            None
        }
    }
}

/// Waits until the host holds an alert of this name matching `pick`.
async fn arrival(host: &TestHost, what: &str, pick: impl Fn(&Alert) -> bool) -> Alert {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = host.accepted().into_iter().find(|a| pick(a)) {
            return a;
        }
        assert!(
            Instant::now() < until,
            "{what} did not arrive from Alertmanager within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_posted_to_alertmanager_arrive_through_the_webhook() {
    let Some(am) = alertmanager() else { return };
    let listen = env(
        "ALERTBRIDGE_TEST_ALERTMANAGER_WEBHOOK",
        Some("127.0.0.1:19181"),
    );
    let token = env(
        "ALERTBRIDGE_TEST_ALERTMANAGER_TOKEN",
        Some("alertbridge-am-test-token"),
    );
    let s = common::start_on(
        &listen,
        &token,
        "[alertmanager]\nresolved = \"forward\"\n",
        |_| {},
    )
    .await;

    // A name of its own, so alerts of earlier runs still in Alertmanager's memory do not count.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("valid");
    let name = format!(
        "AlertbridgeE2E{}x{}",
        std::process::id(),
        now.unix_timestamp()
    );
    let starts = now.format(&Rfc3339).expect("format");
    let labels =
        json!({"alertname": name, "instance": "db-01:9100", "job": "node", "severity": "critical"});
    let post = |body: serde_json::Value| {
        let url = format!("{am}/api/v2/alerts");
        async move {
            let r = common::client()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("Alertmanager answers");
            assert!(
                r.status().is_success(),
                "Alertmanager refused the alerts: {}",
                r.status()
            );
        }
    };
    let annotations =
        json!({"summary": "Disk /var is 97% full", "description": "Only 3% left — Ölstand prüfen"});
    post(json!([
        {"labels": labels, "startsAt": starts, "annotations": annotations, "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x"},
        {"labels": {"alertname": name, "instance": "web-02:9100", "severity": "warning"}, "startsAt": starts}
    ]))
    .await;

    let disk = arrival(&s.host, "the first alert", |a| {
        a.labels.get("alertname") == Some(&name)
            && a.labels.get("instance").map(String::as_str) == Some("db-01:9100")
    })
    .await;
    assert_eq!(disk.subject, "Disk /var is 97% full");
    assert_eq!(disk.body, "Only 3% left — Ölstand prüfen");
    assert_eq!(disk.severity, Severity::CRITICAL);
    assert_eq!(disk.labels.get("job").map(String::as_str), Some("node"));
    let fp = fingerprint(&disk.labels);
    assert_eq!(disk.dedup_key, Some(format!("am:{fp}:{starts}:firing")));
    assert_eq!(
        disk.attributes.get("alertmanager.fingerprint"),
        Some(&fp),
        "Alertmanager's fingerprint is ours"
    );
    assert_eq!(
        disk.attributes
            .get("alertmanager.receiver")
            .map(String::as_str),
        Some("alertbridge")
    );
    let web = arrival(&s.host, "the second alert", |a| {
        a.labels.get("alertname") == Some(&name)
            && a.labels.get("instance").map(String::as_str) == Some("web-02:9100")
    })
    .await;
    assert_eq!(
        (web.subject.as_str(), web.severity),
        (name.as_str(), Severity::NORMAL)
    );

    // Resolve the first (as Prometheus does: same labels and annotations, an `endsAt`): the
    // resolve notice arrives as an info alert with a key of its own.
    let ends = OffsetDateTime::now_utc().format(&Rfc3339).expect("format");
    post(
        json!([{"labels": labels, "startsAt": starts, "endsAt": ends, "annotations": annotations}]),
    )
    .await;
    let resolved = arrival(&s.host, "the resolve notice", |a| {
        a.labels.get("alertname") == Some(&name) && a.subject.starts_with("[RESOLVED] ")
    })
    .await;
    assert_eq!(resolved.subject, "[RESOLVED] Disk /var is 97% full");
    assert_eq!(resolved.severity, Severity::INFO);
    assert_eq!(
        resolved.dedup_key,
        Some(format!("am:{fp}:{starts}:resolved"))
    );
    assert_eq!(resolved.status(), AlertStatus::Firing, "forward: a notice");
    s.shutdown().await.expect("clean stop");

    // The same receiver with `resolved = "resolve"` (one test, so the two never hold
    // Alertmanager's one receiver address at once): firing then resolved through the real
    // Alertmanager gives two alerts with the same dedup key, the second resolved.
    let s = common::start_on(
        &listen,
        &token,
        "[alertmanager]\nresolved = \"resolve\"\n",
        |_| {},
    )
    .await;
    let name = format!("{name}R");
    let labels = json!({"alertname": name, "instance": "db-02:9100", "severity": "high"});
    post(json!([{"labels": labels, "startsAt": starts, "annotations": annotations}])).await;
    let firing = arrival(&s.host, "the firing alert", |a| {
        a.labels.get("alertname") == Some(&name)
    })
    .await;
    assert_eq!(firing.status(), AlertStatus::Firing);
    let fp = fingerprint(&firing.labels);
    assert_eq!(firing.dedup_key, Some(format!("am:{fp}:{starts}:firing")));
    let ends = OffsetDateTime::now_utc().format(&Rfc3339).expect("format");
    post(
        json!([{"labels": labels, "startsAt": starts, "endsAt": ends, "annotations": annotations}]),
    )
    .await;
    let resolved = arrival(&s.host, "the resolved alert", |a| {
        a.labels.get("alertname") == Some(&name) && a.status() == AlertStatus::Resolved
    })
    .await;
    assert_eq!(resolved.dedup_key, firing.dedup_key, "finds the incident");
    assert_eq!(
        resolved.attributes.get("status").map(String::as_str),
        Some("resolved")
    );
    assert_eq!(
        resolved
            .attributes
            .get("alertmanager.ends_at")
            .map(String::as_str),
        Some(ends.as_str())
    );
    assert_eq!(
        resolved.severity,
        Severity::HIGH,
        "routes as the firing one"
    );
    let ours: Vec<_> = s
        .host
        .accepted()
        .into_iter()
        .filter(|a| a.labels.get("alertname") == Some(&name))
        .map(|a| a.status())
        .collect();
    assert_eq!(ours, [AlertStatus::Firing, AlertStatus::Resolved]);
    s.shutdown().await.expect("clean stop");
}
