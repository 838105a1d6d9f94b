//! Digests (issue 16 §1): a grouped route's alerts reach each recipient as one IM per group
//! (after `group_wait_ms`, then at most one update per `group_interval_ms`), resolved alerts
//! update their group, what waits out a recipient's rate limit is folded into one IM at the next
//! slot, and every alert keeps its own record naming the digest that carried it — recorded as
//! sending before the digest's call, repeated marked after a crash.

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{AlertStatus, PresenceState, REPEAT_ATTRIBUTE};

use super::{fake::FakeSinks, *};

const GROUPED: &str = r#"
[[route]]
name = "storm"
groups = ["ops"]
sinks = ["lync"]
offline = { policy = "skip" }
group_by = ["alertname", "cluster"]
group_wait_ms = 2000
group_interval_ms = 30000
"#;

fn available(sinks: &FakeSinks) {
    sinks.get("lync").presence(
        &["sip:alice@x", "sip:bob@x", "sip:carol@x"],
        PresenceState::AVAILABLE,
    );
}

fn cpu(instance: &str, cluster: &str) -> Alert {
    let mut a = alert(&format!("CPU high on {instance}"));
    a.labels.insert("alertname".into(), "HighCPU".into());
    a.labels.insert("cluster".into(), cluster.into());
    a.labels.insert("instance".into(), instance.into());
    a
}

/// The digest ids of `ids`' records for `user`, and whether each is delivered.
fn carried(bed: &Bed, ids: &[u64], user: &str) -> Vec<(Outcome, Option<u64>)> {
    ids.iter()
        .map(|&id| {
            let a = bed.queue.stored(id).expect("stored");
            let r = rec(&a, "lync", user);
            (r.outcome, r.digest)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_group_reaches_each_recipient_as_one_im_and_every_alert_names_its_digest() {
    let bed = Bed::start(config("", GROUPED));
    available(&bed.sinks);
    let eu: Vec<u64> = (1..=12)
        .map(|n| bed.accept("mail", cpu(&format!("web{n:02}"), "eu-1")))
        .collect();
    let us: Vec<u64> = (1..=3)
        .map(|n| bed.accept("mail", cpu(&format!("db{n}"), "us-2")))
        .collect();
    for &id in eu.iter().chain(&us) {
        bed.settle(id).await;
    }
    let lync = bed.sinks.get("lync");
    let calls = lync.calls();
    assert_eq!(calls.len(), 4, "one IM per group and recipient: {calls:#?}");
    for c in &calls {
        assert!(
            (2_000..2_300).contains(&(c.at_ms - T0)),
            "after group_wait: {}",
            c.at_ms - T0
        );
        assert_eq!(c.message.recipients.len(), 1);
    }
    let received = lync.received();
    for user in ["sip:alice@x", "sip:bob@x"] {
        let mut got = received[user].clone();
        got.sort();
        assert_eq!(
            got,
            [
                "[FIRING ×12] HighCPU on eu-1: web01, web02, web03, … (+9 more)",
                "[FIRING ×3] HighCPU on us-2: db1, db2, db3",
            ]
        );
        assert_eq!(
            carried(&bed, &eu, user),
            vec![(Outcome::Delivered, Some(eu[0])); 12],
            "each alert's record names the digest (its first alert)"
        );
        assert_eq!(
            carried(&bed, &us, user),
            vec![(Outcome::Delivered, Some(us[0])); 3]
        );
    }
    let eu_call = calls.iter().find(|c| c.message.alert_id == eu[0]).unwrap();
    assert!(
        eu_call
            .message
            .body
            .ends_with(&format!("Full list: /?digest={}", eu[0])),
        "{}",
        eu_call.message.body
    );
    assert_eq!(
        eu_call.message.attributes.get("digest"),
        Some(&eu[0].to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn updates_wait_an_interval_and_resolved_alerts_update_their_group() {
    let bed = Bed::start(config("", GROUPED));
    available(&bed.sinks);
    let first: Vec<u64> = (1..=3)
        .map(|n| bed.accept("mail", cpu(&format!("web{n}"), "eu-1")))
        .collect();
    for &id in &first {
        bed.settle(id).await;
    }
    // Two more fire 5 s later; then all five resolve.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let more: Vec<u64> = (4..=5)
        .map(|n| bed.accept("mail", cpu(&format!("web{n}"), "eu-1")))
        .collect();
    for &id in &more {
        bed.settle(id).await;
    }
    let resolved: Vec<u64> = (1..=5)
        .map(|n| {
            bed.accept(
                "mail",
                cpu(&format!("web{n}"), "eu-1").with_status(AlertStatus::Resolved),
            )
        })
        .collect();
    for &id in &resolved {
        bed.settle(id).await;
    }
    let calls: Vec<_> = bed
        .sinks
        .get("lync")
        .calls()
        .into_iter()
        .filter(|c| c.message.recipients == ["sip:alice@x"])
        .map(|c| (c.at_ms - T0, c.message.subject))
        .collect();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(calls[0].1, "[FIRING ×3] HighCPU on eu-1: web1, web2, web3");
    assert!((2_000..2_300).contains(&calls[0].0), "{calls:?}");
    assert_eq!(calls[1].1, "[FIRING ×2] HighCPU on eu-1: web4, web5");
    assert!(
        (32_000..32_300).contains(&calls[1].0),
        "an update one interval after the first IM: {calls:?}"
    );
    assert_eq!(
        calls[2].1,
        "[RESOLVED ×5] HighCPU on eu-1: web1, web2, web3, … (+2 more)"
    );
    assert!(
        (62_000..62_300).contains(&calls[2].0),
        "and the next one interval later: {calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn what_waits_out_the_rate_limit_goes_as_one_digest_at_the_next_slot() {
    let ops = r#"
[[route]]
name = "ops"
groups = ["oncall"]
sinks = ["lync"]
offline = { policy = "skip" }
"#;
    let bed = Bed::start(config("per_recipient_per_minute = 2", ops));
    available(&bed.sinks);
    let ids: Vec<u64> = (1..=7)
        .map(|n| bed.accept("mail", alert(&format!("alert {n}"))))
        .collect();
    for &id in &ids {
        bed.settle(id).await;
    }
    let calls = bed.sinks.get("lync").calls();
    let at: Vec<i64> = calls.iter().map(|c| c.at_ms - T0).collect();
    assert_eq!(at.len(), 3, "two alone, then one digest: {at:?}");
    assert!(at[1] < 1_000 && (60_000..60_300).contains(&at[2]), "{at:?}");
    assert_eq!(
        bed.sinks.get("lync").received()["sip:carol@x"],
        [
            "alert 1",
            "alert 2",
            "[FIRING ×5] alerts held by the rate limit: alert 3, alert 4, alert 5, … (+2 more)"
        ]
    );
    let records = carried(&bed, &ids, "sip:carol@x");
    assert_eq!(records[..2], [(Outcome::Delivered, None); 2]);
    assert_eq!(
        records[2..],
        [(Outcome::Delivered, Some(ids[2])); 5],
        "nothing dropped: each folded alert is delivered by the digest"
    );
    assert!(
        calls[2].message.body.contains("#7 firing: alert 7"),
        "{}",
        calls[2].message.body
    );
}

#[tokio::test(start_paused = true)]
async fn a_digest_is_recorded_before_its_call_and_repeated_marked_after_a_crash() {
    let bed = Bed::start(config("", GROUPED));
    available(&bed.sinks);
    let lync = bed.sinks.get("lync");
    lync.hold_calls();
    let ids: Vec<u64> = (1..=4)
        .map(|n| bed.accept("mail", cpu(&format!("web{n}"), "eu-1")))
        .collect();
    bed.wait_for("both digests' calls", || {
        (lync.calls().len() == 2).then_some(())
    })
    .await;
    for &id in &ids {
        let a = bed.queue.stored(id).unwrap();
        for r in &a.recipients {
            assert!(
                r.sending && r.digest == Some(ids[0]) && r.outcome == Outcome::Pending,
                "every member is recorded as sending in the digest before the call: {r:#?}"
            );
        }
    }
    // The host "crashes" with the calls in flight.
    let disk = Arc::new(bed.queue.snapshot());
    let clock = Clock::tokio(bed.now());
    let sinks = FakeSinks::new(clock, Arc::clone(&disk), &["lync", "pager"]);
    available(&sinks);
    let bed = Bed::resume(config("", GROUPED), disk, sinks, clock);
    for &id in &ids {
        let a = bed.settle(id).await;
        for r in &a.recipients {
            assert_eq!((r.outcome, r.repeat), (Outcome::Delivered, true));
        }
    }
    let calls = bed.sinks.get("lync").calls();
    assert_eq!(calls.len(), 2, "one repeated digest per recipient");
    for c in &calls {
        assert_eq!(
            c.message.subject,
            "(repeat after restart) [FIRING ×4] HighCPU on eu-1: web1, web2, web3, … (+1 more)"
        );
        assert_eq!(
            c.message
                .attributes
                .get(REPEAT_ATTRIBUTE)
                .map(String::as_str),
            Some("after_restart")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_route_template_renders_the_digest_from_its_alerts() {
    let routes = r#"
[[route]]
name = "storm"
users = ["sip:carol@x"]
sinks = ["lync"]
offline = { policy = "skip" }
group_by = ["alertname"]
group_wait_ms = 1000
template = "{{ count }} × {{ alert.labels.alertname }}: {% for a in alerts %}{{ a.labels.instance }} {% endfor %}| {{ text | truncate(12) }}"
"#;
    let bed = Bed::start(config("", routes));
    available(&bed.sinks);
    let ids: Vec<u64> = (1..=3)
        .map(|n| bed.accept("mail", cpu(&format!("web{n}"), "eu-1")))
        .collect();
    for &id in &ids {
        bed.settle(id).await;
    }
    let calls = bed.sinks.get("lync").calls();
    assert_eq!(calls.len(), 1);
    let m = &calls[0].message;
    assert_eq!(
        m.subject, "[FIRING ×3] HighCPU: web1, web2, web3",
        "the subject is the digest's summary"
    );
    assert!(
        m.body.starts_with("3 × HighCPU: web1 web2 web3 | #"),
        "the text is the route's template over the group's alerts: {}",
        m.body
    );
}

#[tokio::test(start_paused = true)]
async fn a_member_that_drops_out_before_the_cut_does_not_hold_the_digest_up() {
    let bed = Bed::start(config("", GROUPED));
    available(&bed.sinks);
    let mut expiring = cpu("web1", "eu-1");
    expiring.expires_unix_ms = Some(T0 + 1_000);
    let gone = bed.accept("mail", expiring);
    let kept: Vec<u64> = (2..=3)
        .map(|n| bed.accept("mail", cpu(&format!("web{n}"), "eu-1")))
        .collect();
    for &id in &kept {
        bed.settle(id).await;
    }
    let a = bed.settle(gone).await;
    assert!(
        a.recipients
            .iter()
            .all(|r| r.outcome == Outcome::Skipped && r.digest.is_none()),
        "{a:#?}"
    );
    let calls = bed.sinks.get("lync").calls();
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c.message.subject, "[FIRING ×2] HighCPU on eu-1: web2, web3");
        assert!(
            (2_000..2_300).contains(&(c.at_ms - T0)),
            "the cut did not wait for the expired alert: {}",
            c.at_ms - T0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_digest_that_failed_is_retried_on_its_members_backoff_not_a_group_interval_later() {
    let bed = Bed::start(config("", GROUPED));
    available(&bed.sinks);
    let lync = bed.sinks.get("lync");
    // The first call to each of alice and bob fails.
    let busy = alertbridge_plugin_api::PluginError::new(
        alertbridge_plugin_api::ErrorKind::TRANSIENT,
        "503 busy",
    );
    lync.fail_calls([busy.clone(), busy]);
    let ids: Vec<u64> = (1..=3)
        .map(|n| bed.accept("mail", cpu(&format!("web{n}"), "eu-1")))
        .collect();
    for &id in &ids {
        let a = bed.settle(id).await;
        let r = rec(&a, "lync", "sip:alice@x");
        assert_eq!(
            (r.outcome, r.digest, r.attempts),
            (Outcome::Delivered, Some(ids[0]), 2)
        );
    }
    let alice: Vec<i64> = lync
        .calls()
        .iter()
        .filter(|c| c.message.recipients == ["sip:alice@x"])
        .map(|c| c.at_ms - T0)
        .collect();
    assert_eq!(alice.len(), 2, "{alice:?}");
    assert!(
        alice[1] - alice[0] < 5_000,
        "the retry follows the backoff (about a second), not group_interval_ms: {alice:?}"
    );
}
