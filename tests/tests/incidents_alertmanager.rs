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

use std::{fs, time::Duration};

use alertbridge_testbed::{
    alertmanager::{Alertmanager, rfc3339_now},
    harness::{Host, wait_until},
    incident_bed::{ALICE, BOB, CAROL, LONG, WebhookBed},
    servers,
};
use serde_json::{Value, json};

const AM_TOKEN: &str = "incidents-am-token-5c1e";
/// Level 3 (Carol) is due this long after the incident opened; the resolve comes before.
const LEVEL3_SECS: u64 = 30;

fn incident(host: &Host, id: u64) -> Value {
    host.api(&format!("/api/v1/incidents/{id}"))
}

#[test]
fn alertmanager_firing_then_resolved_opens_then_resolves_the_incident_and_tells_everyone_paged() {
    if servers::alertmanager_program().is_none() {
        return;
    }
    let bed = WebhookBed::new(&[ALICE, BOB, CAROL]);
    let am = Alertmanager::start(
        &bed.dir.path().join("am"),
        &bed.hook_url("/api/v1/alertmanager"),
        AM_TOKEN,
    );
    let tokens = am.token_file();
    assert!(fs::read_to_string(&tokens).is_ok_and(|t| t.contains(AM_TOKEN)));
    let host = bed.start_host(&tokens, &[(ALICE, 0), (BOB, 1), (CAROL, LEVEL3_SECS)]);
    let sim = &bed.sim;

    // Firing, as Prometheus posts it.
    let name = format!("AlertbridgeIncident{}", std::process::id());
    let starts = rfc3339_now();
    let labels = json!({"alertname": name, "instance": "db-07:9100", "severity": "critical"});
    let annotations = json!({"summary": "Disk /var on db-07 is 97% full"});
    am.post_alerts(&json!([{"labels": labels, "annotations": annotations, "startsAt": starts}]));

    // An incident opens: Alice is paged at once, Bob when nobody answered within 1 s.
    wait_until("Alice paged for the incident", LONG, || {
        bed.paged(ALICE, "[#1] Disk /var on db-07 is 97% full")
    });
    wait_until("Bob paged after level 2's wait", LONG, || {
        bed.paged(BOB, "[#1]")
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
        bed.texts(user)
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
            !bed.paged(user, "[RESOLVED]"),
            "{user}: {:?}",
            bed.texts(user)
        );
    }
    assert!(bed.texts(CAROL).is_empty(), "level 3 was never due");
    let all = host.api("/api/v1/incidents");
    assert_eq!(
        all["incidents"].as_array().map(Vec::len),
        Some(1),
        "{all:#}"
    );
}
