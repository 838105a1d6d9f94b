//! An alert another host took over (shared queue: this host's lease on it ran out): the queue
//! refuses its saves as [`QueueError::NotOwner`], and this host lets go of it at once — no send
//! after a refused `sending` mark, its lanes freed for the next alerts to the same users, its
//! place in the queue depth given back, counted once — instead of retrying it for ever.
//!
//! [`QueueError::NotOwner`]: crate::queue::QueueError::NotOwner

use std::time::Duration;

use alertbridge_plugin_api::{DeliveryStatus, PresenceState};

use super::*;

const CAROL: &str = r#"
[[route]]
name = "carol"
groups = ["oncall"]
sinks = ["lync"]
"#;

/// The queue depth gauge as rendered.
fn depth_gauge(bed: &Bed) -> i64 {
    let text = bed.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix("alertbridge_queue_depth "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no queue depth in {text}"))
}

fn handed_over(bed: &Bed) -> u64 {
    bed.metrics
        .counter("alertbridge_alerts_handed_over_total", &[])
}

fn subjects(lync: &fake::FakeSink) -> Vec<String> {
    lync.calls()
        .iter()
        .map(|c| c.message.subject.clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_refused_sending_mark_means_no_send_and_the_next_alert_goes() {
    let bed = Bed::start(config("per_recipient_per_minute = 0", CAROL));
    let lync = bed.sinks.get("lync");
    lync.presence(&["sip:carol@x"], PresenceState::AVAILABLE);
    let first = bed.accept("mail", alert("mail 1"));
    // Taken over before its first round: the save of its `sending` mark is refused.
    bed.queue.take_over(first);
    let second = bed.accept("mail", alert("mail 2"));
    let done = bed.settle(second).await;
    assert_eq!(
        outcomes(&done),
        [o("lync", "sip:carol@x", Outcome::Delivered)]
    );
    // Long after: the taken-over alert was never sent, nor retried.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(subjects(&lync), ["mail 2"], "another host sends mail 1");
    let kept = bed.queue.stored(first).unwrap();
    assert!(
        !kept.is_finished() && kept.recipients.is_empty(),
        "{kept:#?}"
    );
    assert_eq!(handed_over(&bed), 1);
    assert_eq!(depth_gauge(&bed), 0, "both alerts gave their place back");
    assert_eq!(bed.depth.of("mail"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refused_outcome_frees_the_lane_and_the_alert_is_not_retried() {
    let bed = Bed::start(config(
        "per_recipient_per_minute = 0\nretry_initial_ms = 1000",
        CAROL,
    ));
    let lync = bed.sinks.get("lync");
    lync.presence(&["sip:carol@x"], PresenceState::AVAILABLE);
    // The first alert's send fails for now: it stays at the head of Carol's lane.
    lync.script("sip:carol@x", [Some(DeliveryStatus::FAILED_TRANSIENT)]);
    lync.hold_calls();
    let first = bed.accept("mail", alert("mail 1"));
    let second = bed.accept("mail", alert("mail 2"));
    bed.wait_for("mail 1's call", || (lync.calls().len() == 1).then_some(()))
        .await;
    // Another host takes it over while the call is out: its outcome is refused.
    bed.queue.take_over(first);
    lync.release(10);
    let done = bed.settle(second).await;
    assert_eq!(
        outcomes(&done),
        [o("lync", "sip:carol@x", Outcome::Delivered)]
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        subjects(&lync),
        ["mail 1", "mail 2"],
        "mail 1 is not retried here: the other host delivers it"
    );
    // What the queue holds for it is what this host last recorded: the send beginning.
    let kept = bed.queue.stored(first).unwrap();
    assert!(rec(&kept, "lync", "sip:carol@x").sending, "{kept:#?}");
    assert_eq!(handed_over(&bed), 1);
    assert_eq!(depth_gauge(&bed), 0);
    assert_eq!(bed.depth.of("mail"), 0);
}
