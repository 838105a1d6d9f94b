//! A resolve that arrives before its incident opened, end to end: the real host with the real
//! `webhook` source (`alertmanager.resolved = "resolve"`) and `ucwa` sink, against the UCWA
//! simulator. One Alertmanager notification holds the alert firing and the same alert resolved
//! (a flapping check): the webhook hands both to the host at once; the resolved one reaches the
//! incident engine while the firing one is still in flight (its queue commit and the
//! dispatcher come first), finds no incident and is remembered; the firing one, accepted
//! before it, then opens incident #1 already resolved (by Alertmanager). Nobody is paged, and
//! the API shows the incident resolved with no page.
//!
//! Before the resolve was remembered, the firing alert opened an open incident and paged Alice
//! (and Bob after 1 s) for something already resolved.

use std::{fs, path::Path, time::Duration};

use alertbridge_testbed::{
    harness::{Host, free_port, request, wait_until},
    ucwa_sim::{SimConfig, Simulator, UserSpec},
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);
const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";
const TOKEN: &str = "resolve-race-token-3d9a";

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

/// One alert of an Alertmanager notification, firing or resolved (the resolved one keeps
/// `startsAt` and gains `endsAt`).
fn alert(status: &str) -> Value {
    let ends = if status == "resolved" {
        "2026-12-07T10:05:00Z"
    } else {
        "0001-01-01T00:00:00Z"
    };
    json!({
        "status": status,
        "labels": {"alertname": "DiskFull", "instance": "db-07:9100", "severity": "critical"},
        "annotations": {"summary": "Disk /var on db-07 is 97% full"},
        "startsAt": "2026-12-07T10:00:00Z",
        "endsAt": ends,
        "fingerprint": "0123456789abcdef",
    })
}

#[test]
fn firing_and_resolved_back_to_back_open_the_incident_resolved_and_page_nobody() {
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
            ],
            invitation_timeout: Duration::from_millis(500),
            ..SimConfig::default()
        }))
        .expect("start the UCWA simulator");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("webhook.tokens");
    fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let (admin, hook) = (free_port(), free_port());
    let host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, hook, &tokens, &sim.discover_url()),
    );

    let body = json!({
        "version": "4", "status": "firing", "receiver": "bridge",
        "alerts": [alert("firing"), alert("resolved")],
    });
    let bearer = format!("Bearer {TOKEN}");
    let answer = request(
        "POST",
        &format!("http://127.0.0.1:{hook}/api/v1/alertmanager"),
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        &body.to_string(),
    );
    assert!(matches!(answer, Some((202, _))), "{answer:?}");

    // The firing alert opens #1 already resolved by Alertmanager.
    let mut inc = Value::Null;
    wait_until("incident #1 opened resolved", LONG, || {
        inc = host.api("/api/v1/incidents/1");
        inc["state"].is_string()
    });
    assert_eq!(inc["state"], "resolved", "{inc:#}");
    let by = inc["resolved"]["by"].as_str().unwrap_or_default();
    assert!(by.contains("Alertmanager"), "{inc:#}");
    assert!(inc["next_due_ms"].is_null(), "nothing more due: {inc:#}");
    assert_eq!(
        inc["pages"].as_array().map(Vec::len),
        Some(0),
        "no level paged: {inc:#}"
    );

    // Longer than level 2's wait: still nobody paged, and no second incident.
    std::thread::sleep(Duration::from_millis(1500));
    for user in [ALICE, BOB] {
        let ims = sim.received(user);
        assert!(ims.is_empty(), "{user} paged: {ims:#?}");
    }
    let all = host.api("/api/v1/incidents");
    assert_eq!(
        all["incidents"].as_array().map(Vec::len),
        Some(1),
        "{all:#}"
    );
    assert!(
        host.log().contains("before it paged"),
        "the log says why nobody was paged"
    );
}
