//! Crash honesty: a send is recorded (`sending`) before the sink is called, no send starts that
//! could not be recorded, and after a restart an uncertain send is repeated marked as such, or
//! skipped (`on_uncertain`) — and only the uncertain one.

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{PresenceState, REPEAT_ATTRIBUTE};

use super::{fake::FakeSinks, memq::MemQueue, *};

const BOTH: &str = r#"
[[route]]
name = "both"
groups = ["oncall"]
sinks = ["lync", "pager"]
offline = { policy = "skip" }
"#;

fn carol_available(sinks: &FakeSinks) {
    for sink in ["lync", "pager"] {
        sinks
            .get(sink)
            .presence(&["sip:carol@x"], PresenceState::AVAILABLE);
    }
}

/// Runs an alert to carol on both sinks: lync delivers in the first round while the pager is
/// down; in a later round the pager's call is in flight when the host "crashes". Returns what
/// the queue held at that moment.
async fn crash_with_pager_call_in_flight(delivery: &str) -> (Arc<MemQueue>, u64) {
    let bed = Bed::start(config(delivery, BOTH));
    carol_available(&bed.sinks);
    let pager = bed.sinks.get("pager");
    pager.set_running(false);
    pager.hold_calls();
    let id = bed.accept("mail", alert("Disk full"));
    bed.wait_for("lync's outcome to be recorded", || {
        let a = bed.queue.stored(id)?;
        a.recipients
            .iter()
            .any(|r| r.sink == "lync" && r.outcome == Outcome::Delivered)
            .then_some(a)
    })
    .await;
    pager.set_running(true);
    bed.wait_for("the pager call", || {
        (!pager.calls().is_empty()).then_some(())
    })
    .await;
    let at_crash = bed.queue.stored(id).unwrap();
    assert!(
        rec(&at_crash, "pager", "sip:carol@x").sending,
        "the call in flight is recorded as sending: {at_crash:#?}"
    );
    assert!(!rec(&at_crash, "lync", "sip:carol@x").sending);
    // What is on disk now is what the next start finds; the call never answers.
    (Arc::new(bed.queue.snapshot()), id)
}

#[tokio::test(start_paused = true)]
async fn an_uncertain_send_is_repeated_marked_after_a_restart_and_only_that_one() {
    let (disk, id) = crash_with_pager_call_in_flight("").await;
    let clock = Clock::tokio(T0);
    let sinks = FakeSinks::new(clock, Arc::clone(&disk), &["lync", "pager"]);
    carol_available(&sinks);
    let bed = Bed::resume(config("", BOTH), disk, sinks, clock);
    let a = bed.settle(id).await;
    let pager = rec(&a, "pager", "sip:carol@x");
    assert_eq!((pager.outcome, pager.repeat), (Outcome::Delivered, true));
    let calls = bed.sinks.get("pager").calls();
    assert_eq!(calls.len(), 1);
    let m = &calls[0].message;
    assert_eq!(m.subject, "(repeat after restart) Disk full");
    assert_eq!(
        m.attributes.get(REPEAT_ATTRIBUTE).map(String::as_str),
        Some("after_restart")
    );
    assert_eq!(m.attempt, 1, "the uncertain send had no recorded attempt");
    assert!(
        bed.sinks.get("lync").calls().is_empty(),
        "the delivered recipient is not sent again"
    );
    assert!(!rec(&a, "lync", "sip:carol@x").repeat);
}

#[tokio::test(start_paused = true)]
async fn a_crash_while_new_alerts_wait_in_their_lane_loses_and_doubles_none() {
    let routes = r#"
[[route]]
name = "carol"
groups = ["oncall"]
sinks = ["lync"]
offline = { policy = "skip" }
"#;
    let bed = Bed::start(config("per_recipient_per_minute = 0", routes));
    let lync = bed.sinks.get("lync");
    lync.presence(&["sip:carol@x"], PresenceState::AVAILABLE);
    lync.hold_calls();
    let first = bed.accept("mail", alert("first"));
    let waiting: Vec<u64> = (2..=3)
        .map(|n| bed.accept("mail", alert(&format!("alert {n}"))))
        .collect();
    bed.wait_for("the first call", || (lync.calls().len() == 1).then_some(()))
        .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    for &id in &waiting {
        let a = bed.queue.stored(id).unwrap();
        assert!(
            a.recipients.iter().all(|r| !r.sending),
            "no send began for an alert waiting in its lane: {a:#?}"
        );
    }
    // The first call never answers; what is stored now is what the next start finds.
    let disk = Arc::new(bed.queue.snapshot());

    let clock = Clock::tokio(T0 + 60_000);
    let sinks = FakeSinks::new(clock, Arc::clone(&disk), &["lync", "pager"]);
    sinks
        .get("lync")
        .presence(&["sip:carol@x"], PresenceState::AVAILABLE);
    let bed = Bed::resume(
        config("per_recipient_per_minute = 0", routes),
        disk,
        sinks,
        clock,
    );
    for &id in [first].iter().chain(&waiting) {
        let a = bed.settle(id).await;
        assert_eq!(rec(&a, "lync", "sip:carol@x").outcome, Outcome::Delivered);
    }
    let subjects: Vec<String> = bed
        .sinks
        .get("lync")
        .calls()
        .iter()
        .map(|c| c.message.subject.clone())
        .collect();
    assert_eq!(
        subjects,
        ["(repeat after restart) first", "alert 2", "alert 3"],
        "the uncertain send again, marked; the waiting ones once each, in accept order"
    );
}

#[tokio::test(start_paused = true)]
async fn on_uncertain_skip_records_the_uncertain_send_as_skipped() {
    let (disk, id) = crash_with_pager_call_in_flight(r#"on_uncertain = "skip""#).await;
    let clock = Clock::tokio(T0);
    let sinks = FakeSinks::new(clock, Arc::clone(&disk), &["lync", "pager"]);
    carol_available(&sinks);
    let bed = Bed::resume(config(r#"on_uncertain = "skip""#, BOTH), disk, sinks, clock);
    let a = bed.settle(id).await;
    let pager = rec(&a, "pager", "sip:carol@x");
    assert_eq!(pager.outcome, Outcome::Skipped);
    assert!(
        pager
            .reason
            .starts_with("uncertain: a send began before a restart"),
        "{}",
        pager.reason
    );
    assert!(!pager.sending);
    assert!(bed.sinks.get("pager").calls().is_empty());
    assert!(bed.sinks.get("lync").calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn no_send_starts_that_the_queue_could_not_record() {
    let bed = Bed::start(config("", BOTH));
    carol_available(&bed.sinks);
    bed.queue.fail_saves(true);
    let id = bed.accept("mail", alert("Disk full"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        bed.sinks.get("lync").calls().is_empty() && bed.sinks.get("pager").calls().is_empty(),
        "nothing is sent while the send cannot be recorded"
    );
    bed.queue.fail_saves(false);
    let a = bed.settle(id).await;
    assert!(a.recipients.iter().all(|r| r.outcome == Outcome::Delivered));
    for sink in ["lync", "pager"] {
        let calls = bed.sinks.get(sink).calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].recorded, [true]);
        assert!(calls[0].at_ms >= T0 + 5_000);
        assert_eq!(
            calls[0].message.attempt, 1,
            "the refused start used no attempt"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_leaves_unfinished_alerts_queued_and_a_restart_finishes_them() {
    let routes = r#"
[[route]]
name = "hold"
groups = ["oncall"]
sinks = ["lync"]
offline = { policy = "hold", max_wait_secs = 600, then = "skip" }
"#;
    let bed = Bed::start(config("", routes));
    let lync = bed.sinks.get("lync");
    lync.presence(&["sip:carol@x"], PresenceState::OFFLINE);
    let id = bed.accept("mail", alert("Disk full"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (disk, _) = bed.stop(Duration::from_secs(1)).await;
    let held = disk.stored(id).unwrap();
    assert_eq!(rec(&held, "lync", "sip:carol@x").outcome, Outcome::Held);

    let clock = Clock::tokio(T0 + 30_000);
    let sinks = FakeSinks::new(clock, Arc::clone(&disk), &["lync", "pager"]);
    sinks
        .get("lync")
        .presence(&["sip:carol@x"], PresenceState::AVAILABLE);
    let bed = Bed::resume(config("", routes), disk, sinks, clock);
    let a = bed.settle(id).await;
    let carol = rec(&a, "lync", "sip:carol@x");
    assert_eq!((carol.outcome, carol.repeat), (Outcome::Delivered, false));
    assert_eq!(
        bed.sinks.get("lync").calls()[0].message.subject,
        "Disk full",
        "a held recipient had no send begun: no repeat mark"
    );
}
