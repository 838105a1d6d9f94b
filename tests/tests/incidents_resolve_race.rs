//! A resolve that arrives before its incident opened, end to end: the real host with the real
//! `webhook` source (`alertmanager.resolved = "resolve"`) and `ucwa` sink, against the UCWA
//! simulator. One Alertmanager notification holds the alert firing and the same alert resolved
//! (a flapping check): the webhook hands both to the host at once; the resolved one reaches the
//! incident engine while the firing one is still in flight (its queue commit and the
//! dispatcher come first), finds no incident and is remembered; the firing one, accepted
//! before it, then opens incident #1 already resolved (by Alertmanager). Nobody is paged, and
//! the API shows the incident resolved with no page. The two are submitted together, so on a
//! loaded machine the firing one may win: then level 1 is paged and the resolve ends #1 at once.
//! Either way level 2 is never paged and #1 ends resolved.
//!
//! Before the resolve was remembered, the firing alert opened an open incident and paged Alice
//! (and Bob after 1 s) for something already resolved.

use std::time::Duration;

use alertbridge_testbed::{
    harness::{request, wait_until},
    incident_bed::{ALICE, BOB, LONG, WebhookBed},
};
use serde_json::{Value, json};

const TOKEN: &str = "resolve-race-token-3d9a";

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
    let bed = WebhookBed::new(&[ALICE, BOB]);
    let host = bed.start_host(&bed.tokens_file(TOKEN), &[(ALICE, 0), (BOB, 1)]);

    let body = json!({
        "version": "4", "status": "firing", "receiver": "bridge",
        "alerts": [alert("firing"), alert("resolved")],
    });
    let bearer = format!("Bearer {TOKEN}");
    let answer = request(
        "POST",
        &bed.hook_url("/api/v1/alertmanager"),
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        &body.to_string(),
    );
    assert!(matches!(answer, Some((202, _))), "{answer:?}");

    // #1 ends resolved by Alertmanager with nothing more due. The two alerts of one request are
    // submitted together, so either may reach the engine first: usually the resolve (it finds
    // no incident and is remembered; the firing one opens #1 already resolved and pages nobody —
    // the order incidents::tests::resolve_race replays deterministically), but on a loaded
    // machine the firing one can open #1 and page level 1 first, and the resolve then ends it.
    let mut inc = Value::Null;
    wait_until("incident #1 resolved", LONG, || {
        inc = host.api("/api/v1/incidents/1");
        inc["state"] == "resolved"
    });
    let by = inc["resolved"]["by"].as_str().unwrap_or_default();
    assert!(by.contains("Alertmanager"), "{inc:#}");
    assert!(inc["next_due_ms"].is_null(), "nothing more due: {inc:#}");
    let pages = inc["pages"].as_array().map_or(0, Vec::len);
    assert!(pages <= 1, "level 2 never paged: {inc:#}");
    let resolve_first = pages == 0;
    if resolve_first {
        assert!(
            host.log().contains("before it paged"),
            "the log says why nobody was paged"
        );
    }

    // Longer than level 2's wait: Bob never paged (Alice only if level 1 went first, then told
    // it is resolved), and no second incident.
    std::thread::sleep(Duration::from_millis(1500));
    if resolve_first {
        let alice = bed.sim.received(ALICE);
        assert!(alice.is_empty(), "Alice paged: {alice:#?}");
    }
    let bob = bed.sim.received(BOB);
    assert!(bob.is_empty(), "Bob (level 2) paged: {bob:#?}");
    let all = host.api("/api/v1/incidents");
    assert_eq!(
        all["incidents"].as_array().map(Vec::len),
        Some(1),
        "{all:#}"
    );
}
