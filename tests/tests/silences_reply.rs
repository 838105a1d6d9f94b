//! `silence 2h` as a reply to an incident's page, end to end: the real host with the real
//! `webhook` and `ucma` plugin files, the UCMA bridge simulator in this process. An alert with
//! labels opens incident #1 and pages Alice; she answers `silence 2h` in the page's
//! conversation; the bot confirms what is silenced until when; the admin API lists the silence
//! (her labels, her name); the next alert like it is recorded `silenced` with that id, opens no
//! incident and pages nobody, while an alert with other labels still pages.

use std::time::Duration;

use alertbridge_testbed::{
    harness::{request, wait_until},
    ucma_bed::UcmaBed,
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);
const SECRET: &str = "silences-reply-secret-0123456789";
const HOOK: &str = "silences-reply-hook-token";
const ALICE: &str = "sip:alice@contoso.com";

fn post(webhook: u16, subject: &str, labels: Value) -> u64 {
    let body = json!({"subject": subject, "severity": "critical", "labels": labels});
    let (status, answer) = request(
        "POST",
        &format!("http://127.0.0.1:{webhook}/api/v1/alerts"),
        &[
            ("authorization", &format!("Bearer {HOOK}")),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .expect("the webhook answers");
    assert_eq!(status, 202, "{answer}");
    serde_json::from_str::<Value>(&answer).unwrap()["ids"][0]
        .as_u64()
        .expect("an id")
}

#[test]
fn a_silence_2h_reply_silences_alerts_like_the_incidents() {
    let UcmaBed {
        host,
        sim,
        port: webhook,
        rt: _rt,
        dir: _dir,
    } = UcmaBed::start(SECRET, &[ALICE], &[(ALICE, 0)], Some(HOOK));
    let labels = json!({"alertname": "ReplicationLag", "host": "db02"});
    post(webhook, "Replication lag on db02", labels.clone());
    wait_until("Alice paged for #1", LONG, || {
        sim.received(ALICE).iter().any(|im| {
            im.body.contains("[#1]") || im.subject.as_deref().is_some_and(|s| s.contains("[#1]"))
        })
    });
    let conversation = sim
        .conversations_of(ALICE)
        .into_iter()
        .rev()
        .find(|c| c.open)
        .expect("the page left Alice a conversation");
    sim.user_says(ALICE, "silence 2h", Some(&conversation.id), false)
        .expect("Alice's conversation is open");
    let mut confirmation = String::new();
    wait_until("the bot's confirmation", LONG, || {
        confirmation = sim
            .conversations_of(ALICE)
            .iter()
            .filter(|c| c.id == conversation.id)
            .flat_map(|c| c.lines.iter())
            .filter(|l| l.from == "bridge" && l.text.contains("silenced alerts like #1"))
            .map(|l| l.text.clone())
            .next()
            .unwrap_or_default();
        !confirmation.is_empty()
    });
    assert!(
        confirmation
            .contains("(silence 1: alertname = ReplicationLag, host = db02); #1 itself stays open"),
        "{confirmation}"
    );

    let silences = host.api("/api/v1/silences");
    let s = &silences["silences"][0];
    assert_eq!(s["state"], "active", "{silences}");
    assert_eq!(s["matchers"], json!({ "labels": labels }));
    let span = s["ends_ms"].as_i64().unwrap() - s["starts_ms"].as_i64().unwrap();
    assert_eq!(span, 2 * 3600 * 1000);
    assert!(s["comment"].as_str().unwrap().contains("#1"), "{s}");

    // The next alert like it: silenced with that id, no incident, no page.
    let pages_before = sim.received(ALICE).len();
    let quiet = post(webhook, "Replication lag on db02 still", labels);
    wait_until("the alert like it silenced", LONG, || {
        let a = host.api(&format!("/api/v1/alerts/{quiet}"));
        a["state"] == "finished"
            && a["recipients"].as_array().is_some_and(|r| {
                r.iter()
                    .all(|r| r["outcome"] == "silenced" && r["silence"] == 1)
            })
    });
    // Another alert still pages (#2): the silence took only alerts like the first.
    post(
        webhook,
        "Disk full on db03",
        json!({"alertname": "DiskFull", "host": "db03"}),
    );
    wait_until("Alice paged for #2", LONG, || {
        sim.received(ALICE).iter().any(|im| {
            im.body.contains("[#2]") || im.subject.as_deref().is_some_and(|s| s.contains("[#2]"))
        })
    });
    assert_eq!(
        sim.received(ALICE).len(),
        pages_before + 1,
        "only the other alert paged"
    );
    let incidents = host.api("/api/v1/incidents");
    let titles: Vec<&str> = incidents["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["title"].as_str())
        .collect();
    assert_eq!(titles, ["Disk full on db03", "Replication lag on db02"]);
}
