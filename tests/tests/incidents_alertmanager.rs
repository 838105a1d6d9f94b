//! Resolve from the source, with a real Prometheus Alertmanager: it posts a firing alert to the
//! `webhook` source of the real host (with `alertmanager.resolved = "resolve"`), the route's
//! escalation policy opens an incident and pages level 1 (Alice) and, unanswered, level 2 (Bob)
//! through the `ucwa` sink and the UCWA simulator; then Alertmanager posts the same alert
//! resolved, and the host resolves the incident (recorded as by Alertmanager) and tells both,
//! each in the conversation their page came in: "#1 resolved by Alertmanager". Nobody is paged
//! for the resolved notice and no later level fires. No silence is involved.
//!
//! The test starts its own Alertmanager on a free port with `scripts/alertmanager.sh` (needs
//! `prometheus-alertmanager` installed; skips with one line without it, fails under
//! `ALERTBRIDGE_REQUIRE_SERVERS=1`).

use std::{fs, path::Path, time::Duration};

use alertbridge_testbed::{
    alertmanager::{Alertmanager, rfc3339_now},
    harness::{Host, free_port, wait_until},
    servers,
    ucwa_sim::{SimConfig, SimHandle, Simulator, UserSpec},
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);
const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";
const CAROL: &str = "sip:carol@contoso.com";
const AM_TOKEN: &str = "incidents-am-token-5c1e";
/// Level 3 (Carol) is due this long after the incident opened; the resolve comes before.
const LEVEL3_SECS: u64 = 30;

fn config(dir: &Path, admin: u16, hook: u16, tokens: &Path, discover: &str) -> String {
    let d = dir.display();
    let tokens = tokens.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[delivery]
per_recipient_per_minute = 0
retry_initial_ms = 100
retry_max_ms = 500
presence_cache_ms = 0

[[source]]
name = "monitoring"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{hook}"
tokens_file = "{tokens}"
alertmanager = {{ resolved = "resolve" }}

[[sink]]
name = "lync"
plugin = "ucwa"
[sink.config]
autodiscover_url = "{discover}"
allow_http = true
username = "alerts@contoso.com"
password = "alert-pw"
presence_cache_ms = 0
request_timeout_secs = 5

[[escalation]]
name = "node-oncall"
levels = [
  {{ users = ["{ALICE}"], after_secs = 0 }},
  {{ users = ["{BOB}"], after_secs = 1 }},
  {{ users = ["{CAROL}"], after_secs = {LEVEL3_SECS} }},
]

[[route]]
name = "nodes"
match = {{ source = "monitoring" }}
escalation = "node-oncall"
sinks = ["lync"]
offline = {{ policy = "skip" }}
"#
    )
}

/// The texts `user` received, oldest first.
fn texts(sim: &SimHandle, user: &str) -> Vec<String> {
    sim.received(user).into_iter().map(|im| im.text).collect()
}

/// Whether `user` received a page whose subject or text holds `needle`.
fn paged(sim: &SimHandle, user: &str, needle: &str) -> bool {
    sim.received(user)
        .iter()
        .any(|im| im.subject.contains(needle) || im.text.contains(needle))
}

fn incident(host: &Host, id: u64) -> Value {
    host.api(&format!("/api/v1/incidents/{id}"))
}

#[test]
fn alertmanager_firing_then_resolved_opens_then_resolves_the_incident_and_tells_everyone_paged() {
    if servers::alertmanager_program().is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let sim = rt
        .block_on(Simulator::start(SimConfig {
            users: vec![
                UserSpec::new("alerts@contoso.com", "alert-pw", "Online"),
                UserSpec::new(ALICE, "a", "Online"),
                UserSpec::new(BOB, "b", "Online"),
                UserSpec::new(CAROL, "c", "Online"),
            ],
            invitation_timeout: Duration::from_millis(500),
            ..SimConfig::default()
        }))
        .expect("start the UCWA simulator");
    let dir = tempfile::tempdir().unwrap();
    let (admin, hook) = (free_port(), free_port());
    let am = Alertmanager::start(
        &dir.path().join("am"),
        &format!("http://127.0.0.1:{hook}/api/v1/alertmanager"),
        AM_TOKEN,
    );
    let tokens = am.token_file();
    assert!(fs::read_to_string(&tokens).is_ok_and(|t| t.contains(AM_TOKEN)));
    let host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, hook, &tokens, &sim.discover_url()),
    );

    // Firing, as Prometheus posts it.
    let name = format!("AlertbridgeIncident{}", std::process::id());
    let starts = rfc3339_now();
    let labels = json!({"alertname": name, "instance": "db-07:9100", "severity": "critical"});
    let annotations = json!({"summary": "Disk /var on db-07 is 97% full"});
    am.post_alerts(&json!([{"labels": labels, "annotations": annotations, "startsAt": starts}]));

    // An incident opens: Alice is paged at once, Bob when nobody answered within 1 s.
    wait_until("Alice paged for the incident", LONG, || {
        paged(&sim, ALICE, "[#1] Disk /var on db-07 is 97% full")
    });
    wait_until("Bob paged after level 2's wait", LONG, || {
        paged(&sim, BOB, "[#1]")
    });
    let inc = incident(&host, 1);
    assert_eq!(
        (
            inc["state"].as_str(),
            inc["level"].as_u64(),
            inc["source"].as_str()
        ),
        (Some("open"), Some(2), Some("monitoring")),
        "{inc:#}"
    );
    let key = inc["dedup_key"].as_str().unwrap_or_default().to_owned();
    assert!(
        key.starts_with("am:") && key.ends_with(":firing"),
        "Alertmanager's fingerprint key: {inc:#}"
    );

    // Resolved, as Prometheus posts it (same labels and start, an end): Alertmanager sends it
    // at its next group interval; the host resolves the incident and tells both.
    std::thread::sleep(Duration::from_millis(1100));
    am.post_alerts(&json!([{"labels": labels, "annotations": annotations, "startsAt": starts, "endsAt": rfc3339_now()}]));
    let told = |user: &str| {
        texts(&sim, user)
            .iter()
            .any(|t| t.starts_with("#1 resolved") && t.contains("Alertmanager"))
    };
    let posted = std::time::Instant::now();
    let mut last = Value::Null;
    wait_until("the incident resolved and both told", LONG, || {
        last = incident(&host, 1);
        last["state"] == "resolved" && told(ALICE) && told(BOB)
    });
    // Alertmanager holds a notice for its group interval (2 s here) before it sends it.
    eprintln!(
        "resolved posted to Alertmanager -> both told: {} ms",
        posted.elapsed().as_millis()
    );
    let by = last["resolved"]["by"].as_str().unwrap_or_default();
    assert!(by.contains("Alertmanager"), "{last:#}");
    assert!(last["next_due_ms"].is_null(), "nothing more due: {last:#}");
    assert!(last["acked"].is_null(), "{last:#}");
    // Each told once, in the conversation their page came in.
    for user in [ALICE, BOB] {
        let ims = sim.received(user);
        let page = ims
            .iter()
            .find(|im| im.subject.contains("[#1]") || im.text.contains("[#1]"))
            .expect("page");
        let news: Vec<_> = ims
            .iter()
            .filter(|im| im.text.starts_with("#1 resolved"))
            .collect();
        assert_eq!(news.len(), 1, "{user} told once: {ims:#?}");
        assert_eq!(
            news[0].conversation, page.conversation,
            "{user} told in the page's conversation"
        );
    }

    // The resolved notice paged nobody: no `[RESOLVED]` IM, no second incident.
    std::thread::sleep(Duration::from_millis(500));
    for user in [ALICE, BOB, CAROL] {
        assert!(
            !paged(&sim, user, "[RESOLVED]"),
            "{user}: {:?}",
            texts(&sim, user)
        );
    }
    assert!(texts(&sim, CAROL).is_empty(), "level 3 was never due");
    let all = host.api("/api/v1/incidents");
    assert_eq!(
        all["incidents"].as_array().map(Vec::len),
        Some(1),
        "{all:#}"
    );
}
