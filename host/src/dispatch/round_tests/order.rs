//! Lanes: a source's messages to one recipient through one sink go one at a time, in accept
//! order; other sources, recipients and sinks do not wait for them.

use std::time::Duration;

use alertbridge_plugin_api::{DeliveryStatus, PresenceState};

use super::*;

const CAROL: &str = r#"
[[route]]
name = "carol"
groups = ["oncall"]
sinks = ["lync"]
offline = { policy = "hold", max_wait_secs = 3600, then = "skip" }
"#;

#[tokio::test(start_paused = true)]
async fn one_message_in_flight_per_source_and_recipient_in_accept_order() {
    let bed = Bed::start(config("per_recipient_per_minute = 0", CAROL));
    let lync = bed.sinks.get("lync");
    lync.presence(&["sip:carol@x"], PresenceState::AVAILABLE);
    lync.hold_calls();
    let mail: Vec<u64> = (1..=3)
        .map(|n| bed.accept("mail", alert(&format!("mail {n}"))))
        .collect();
    let hook = bed.accept("hook", alert("hook 1"));
    bed.wait_for("two calls", || (lync.calls().len() == 2).then_some(()))
        .await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    let subjects = |l: &fake::FakeSink| -> Vec<String> {
        l.calls()
            .iter()
            .map(|c| c.message.subject.clone())
            .collect()
    };
    assert_eq!(
        subjects(&lync),
        ["mail 1", "hook 1"],
        "mail 2 waits for mail 1; the other source's alert does not"
    );
    for &id in &mail[1..] {
        // Stored as accepted (its routing rides in its first save that records something), or
        // pending without an attempt.
        let a = bed.queue.stored(id).unwrap();
        assert!(
            a.recipients
                .iter()
                .all(|r| r.outcome == Outcome::Pending && r.attempts == 0 && !r.sending),
            "waiting its turn is no attempt: {a:#?}"
        );
    }
    lync.release(1);
    bed.wait_for("mail 2's call", || (lync.calls().len() == 3).then_some(()))
        .await;
    // The first alert's outcome is recorded before the next one's send begins.
    let first = bed.queue.stored(mail[0]).unwrap();
    assert_eq!(
        rec(&first, "lync", "sip:carol@x").outcome,
        Outcome::Delivered
    );
    lync.release(10);
    for &id in mail.iter().chain([&hook]) {
        bed.settle(id).await;
    }
    assert_eq!(
        subjects(&lync),
        ["mail 1", "hook 1", "mail 2", "mail 3"],
        "in accept order, one at a time"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_held_alert_keeps_its_place_in_the_lane() {
    let bed = Bed::start(config(
        "per_recipient_per_minute = 0\nhold_recheck_ms = 10000",
        CAROL,
    ));
    let lync = bed.sinks.get("lync");
    lync.presence(&["sip:carol@x"], PresenceState::OFFLINE);
    // The first alert's first send is refused for good; the lane moves on.
    lync.script("sip:carol@x", [Some(DeliveryStatus::FAILED_PERMANENT)]);
    let ids: Vec<u64> = (1..=3)
        .map(|n| bed.accept("mail", alert(&format!("mail {n}"))))
        .collect();
    tokio::time::sleep(Duration::from_secs(25)).await;
    for &id in &ids {
        let a = bed.queue.stored(id).unwrap();
        assert_eq!(
            rec(&a, "lync", "sip:carol@x").outcome,
            Outcome::Held,
            "held while offline, in the lane or not"
        );
    }
    assert!(lync.calls().is_empty());
    lync.presence(&["sip:carol@x"], PresenceState::AVAILABLE);
    let outcomes: Vec<Outcome> = {
        let mut v = Vec::new();
        for &id in &ids {
            v.push(rec(&bed.settle(id).await, "lync", "sip:carol@x").outcome);
        }
        v
    };
    assert_eq!(
        outcomes,
        [Outcome::Failed, Outcome::Delivered, Outcome::Delivered]
    );
    let order: Vec<String> = lync
        .calls()
        .iter()
        .map(|c| c.message.subject.clone())
        .collect();
    assert_eq!(order, ["mail 1", "mail 2", "mail 3"]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_sink_does_not_hold_up_another_sinks_lane() {
    let both = r#"
[[route]]
name = "both"
groups = ["oncall"]
sinks = ["lync", "pager"]
offline = { policy = "skip" }
"#;
    let bed = Bed::start(config("per_recipient_per_minute = 0", both));
    for sink in ["lync", "pager"] {
        bed.sinks
            .get(sink)
            .presence(&["sip:carol@x"], PresenceState::AVAILABLE);
    }
    let (lync, pager) = (bed.sinks.get("lync"), bed.sinks.get("pager"));
    // The pager answers nothing (a bridge hanging until the deliver time-out).
    pager.hold_calls();
    let one = bed.accept("mail", alert("one"));
    let two = bed.accept("mail", alert("two"));
    bed.wait_within(
        Duration::from_secs(30),
        "alert two's lync message while the pager still holds alert one's",
        || (lync.calls().len() == 2).then_some(()),
    )
    .await;
    let first = bed.queue.stored(one).unwrap();
    assert_eq!(
        rec(&first, "lync", "sip:carol@x").outcome,
        Outcome::Delivered,
        "lync's outcome is recorded without waiting for the pager"
    );
    assert!(rec(&first, "pager", "sip:carol@x").sending);
    assert_eq!(
        pager.calls().len(),
        1,
        "the pager's lane still waits for alert one"
    );
    pager.release(10);
    for id in [one, two] {
        let a = bed.settle(id).await;
        assert!(a.recipients.iter().all(|r| r.outcome == Outcome::Delivered));
    }
    assert_eq!(pager.received()["sip:carol@x"], ["one", "two"]);
    assert_eq!(lync.received()["sip:carol@x"], ["one", "two"]);
}
