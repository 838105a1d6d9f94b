//! Rounds that deliver: one message per sink, partial results, a whole call failing, retries
//! with backoff and dead letters, a panicking sink, rate limits, a sink gone or down.

use std::time::Duration;

use alertbridge_plugin_api::{
    DeliveryStatus, ErrorKind, PluginError, PresenceState, RecipientResult,
};

use super::*;

const OPS: &str = r#"
[[route]]
name = "ops"
groups = ["ops"]
sinks = ["lync"]
offline = { policy = "skip" }
"#;

const TRIO: &str = r#"
[[route]]
name = "trio"
users = ["sip:alice@x", "sip:bob@x", "sip:dave@x"]
sinks = ["lync"]
offline = { policy = "skip" }
"#;

/// Everyone the routes name is available on both sinks.
fn all_available(bed: &Bed) {
    let users = ["sip:alice@x", "sip:bob@x", "sip:carol@x", "sip:dave@x"];
    for sink in ["lync", "pager"] {
        bed.sinks
            .get(sink)
            .presence(&users, PresenceState::AVAILABLE);
    }
}

fn gaps(calls: &[super::fake::Call]) -> Vec<i64> {
    calls.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect()
}

#[tokio::test(start_paused = true)]
async fn online_recipients_get_one_message_recorded_as_sending_before_the_call() {
    let bed = Bed::start(config("", OPS));
    all_available(&bed);
    let id = bed.accept("mail", alert("Disk full"));
    let a = bed.settle(id).await;
    assert_eq!(
        outcomes(&a),
        [
            o("lync", "sip:alice@x", Outcome::Delivered),
            o("lync", "sip:bob@x", Outcome::Delivered)
        ]
    );
    let calls = bed.sinks.get("lync").calls();
    assert_eq!(calls.len(), 1, "one message for both: {calls:#?}");
    let m = &calls[0].message;
    assert_eq!(
        (m.alert_id, m.attempt, m.source.as_str(), m.subject.as_str()),
        (id, 1, "mail", "Disk full")
    );
    assert_eq!(m.recipients, ["sip:alice@x", "sip:bob@x"]);
    assert_eq!(m.attributes.get("alert_uid"), Some(&a.uid));
    assert_eq!(
        calls[0].recorded,
        [true, true],
        "the queue held `sending` for both when the sink was called"
    );
    assert!(a.recipients.iter().all(|r| !r.sending && r.attempts == 1));
    assert_eq!(calls[0].at_ms, T0, "sent in the first round");
    assert_eq!(a.finished_ms, Some(T0));
    assert_eq!(
        bed.queue.saves(),
        2,
        "one commit records the send, one the outcomes"
    );
}

#[tokio::test(start_paused = true)]
async fn partial_results_settle_each_recipient_on_its_own() {
    let bed = Bed::start(config("retry_initial_ms = 1000", TRIO));
    all_available(&bed);
    let lync = bed.sinks.get("lync");
    lync.script("sip:bob@x", [Some(DeliveryStatus::NOT_FOUND)]);
    // Dave is left out of the first answer: a transient failure for him alone.
    lync.script("sip:dave@x", [None]);
    let id = bed.accept("mail", alert("Disk full"));
    let a = bed.settle(id).await;
    assert_eq!(
        outcomes(&a),
        [
            o("lync", "sip:alice@x", Outcome::Delivered),
            o("lync", "sip:bob@x", Outcome::Failed),
            o("lync", "sip:dave@x", Outcome::Delivered),
        ]
    );
    assert_eq!(
        rec(&a, "lync", "sip:bob@x").reason,
        "no such user: scripted"
    );
    assert_eq!(rec(&a, "lync", "sip:dave@x").attempts, 2);
    let calls = lync.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(
        calls[1].message.recipients,
        ["sip:dave@x"],
        "only the unsettled recipient is sent again"
    );
    assert_eq!(calls[1].message.attempt, 2);
    let gap = gaps(&calls)[0];
    assert!(
        (750..=1200).contains(&gap),
        "retry after 1 s (+ jitter): {gap}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_is_every_recipients_failure() {
    // Transient: both are retried, and both use an attempt. (Their jitter, at most 20 % of
    // 1 s, stays within the round slack, so they are retried in one message.)
    let bed = Bed::start(config("retry_initial_ms = 1000", OPS));
    all_available(&bed);
    let lync = bed.sinks.get("lync");
    lync.fail_calls([PluginError::new(
        ErrorKind::TRANSIENT,
        "bridge answered 503",
    )]);
    let a = bed.settle(bed.accept("mail", alert("one"))).await;
    assert!(
        a.recipients
            .iter()
            .all(|r| r.outcome == Outcome::Delivered && r.attempts == 2),
        "{a:#?}"
    );
    let calls = lync.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].message.recipients, ["sip:alice@x", "sip:bob@x"]);
    assert!(
        (750..=1200).contains(&gaps(&calls)[0]),
        "{:?}",
        gaps(&calls)
    );

    // Permanent (or a config error): both fail at once, with the sink's reason.
    lync.fail_calls([PluginError::new(ErrorKind::PERMANENT, "message too large")]);
    let a = bed.settle(bed.accept("mail", alert("two"))).await;
    for r in &a.recipients {
        assert_eq!(
            (r.outcome, r.attempts, r.reason.as_str()),
            (
                Outcome::Failed,
                1,
                "sink refused the message: message too large"
            )
        );
    }
    assert_eq!(lync.calls().len(), 3, "no retry after a permanent error");
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_then_dead_letter() {
    let delivery = "max_attempts = 4\nretry_initial_ms = 1000\nretry_max_ms = 3000";
    let bed = Bed::start(config(delivery, OPS));
    all_available(&bed);
    let lync = bed.sinks.get("lync");
    lync.script("sip:alice@x", [Some(DeliveryStatus::FAILED_TRANSIENT); 4]);
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    let alice = rec(&a, "lync", "sip:alice@x");
    assert_eq!(
        (alice.outcome, alice.attempts, alice.reason.as_str()),
        (
            Outcome::Failed,
            4,
            "gave up after 4 attempts: failed_transient: scripted"
        ),
        "dead-lettered after max_attempts"
    );
    assert_eq!(rec(&a, "lync", "sip:bob@x").outcome, Outcome::Delivered);
    let calls = lync.calls();
    let attempts: Vec<u32> = calls.iter().map(|c| c.message.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
    let g = gaps(&calls);
    // 1 s, 2 s, then capped at 3 s; each + up to 20 % jitter, - up to 250 ms round slack.
    assert!((750..=1200).contains(&g[0]), "{g:?}");
    assert!((1750..=2400).contains(&g[1]), "{g:?}");
    assert!((2750..=3600).contains(&g[2]), "{g:?}");
}

#[tokio::test(start_paused = true)]
async fn a_sinks_retry_advice_is_honoured() {
    let bed = Bed::start(config("retry_initial_ms = 1000", OPS));
    all_available(&bed);
    let lync = bed.sinks.get("lync");
    lync.script_result(
        RecipientResult::new("sip:alice@x", DeliveryStatus::FAILED_TRANSIENT, "429")
            .retry_after(Duration::from_secs(30)),
    );
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    assert_eq!(rec(&a, "lync", "sip:alice@x").outcome, Outcome::Delivered);
    let calls = lync.calls();
    assert_eq!(calls.len(), 2);
    assert!(gaps(&calls)[0] >= 29_750, "{:?}", gaps(&calls));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_sink_is_waited_for_while_it_restarts_then_delivers() {
    let bed = Bed::start(config("retry_initial_ms = 1000", OPS));
    all_available(&bed);
    let lync = bed.sinks.get("lync");
    lync.restart_for(Duration::from_secs(10));
    lync.fail_calls([PluginError::new(
        ErrorKind::PANICKED,
        "deliver panicked: index out of bounds",
    )]);
    let id = bed.accept("mail", alert("Disk full"));
    // While the sink is being recreated, its recipients wait without using attempts.
    let waiting = bed
        .wait_for("the recipients to wait for the sink", || {
            let a = bed.queue.stored(id)?;
            a.recipients
                .iter()
                .all(|r| r.reason == "waiting: sink `lync` is not running")
                .then_some(a)
        })
        .await;
    assert!(
        waiting
            .recipients
            .iter()
            .all(|r| r.outcome == Outcome::Pending && r.attempts == 1),
        "the panicked call used one attempt, the wait none: {waiting:#?}"
    );
    let a = bed.settle(id).await;
    assert!(
        a.recipients
            .iter()
            .all(|r| r.outcome == Outcome::Delivered && r.attempts == 2),
        "{a:#?}"
    );
    let calls = lync.calls();
    assert_eq!(calls.len(), 2, "nothing is sent while it is down");
    assert!(gaps(&calls)[0] >= 10_000, "{:?}", gaps(&calls));
}

#[tokio::test(start_paused = true)]
async fn a_sink_removed_from_the_config_fails_its_recipients() {
    let routes = r#"
[[route]]
name = "both"
groups = ["oncall"]
sinks = ["lync", "pager"]
"#;
    let bed = Bed::start(config("", routes));
    all_available(&bed);
    bed.sinks.remove("pager");
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    assert_eq!(
        outcomes(&a),
        [
            o("lync", "sip:carol@x", Outcome::Delivered),
            o("pager", "sip:carol@x", Outcome::Failed)
        ]
    );
    assert_eq!(
        rec(&a, "pager", "sip:carol@x").reason,
        "sink refused the message: no sink `pager` is configured any more"
    );
}

#[tokio::test(start_paused = true)]
async fn the_per_recipient_rate_limit_holds_messages_to_the_next_minute() {
    // Without folding: what waits goes one by one (folding: round_tests/digest.rs).
    let bed = Bed::start(config(
        "per_recipient_per_minute = 2\nfold_rate_limited = false",
        OPS,
    ));
    all_available(&bed);
    let ids: Vec<u64> = (1..=4)
        .map(|n| bed.accept("mail", alert(&format!("alert {n}"))))
        .collect();
    for &id in &ids {
        let a = bed.settle(id).await;
        assert!(a.recipients.iter().all(|r| r.outcome == Outcome::Delivered));
    }
    let at: Vec<i64> = bed
        .sinks
        .get("lync")
        .calls()
        .iter()
        .map(|c| c.at_ms - T0)
        .collect();
    assert_eq!(at.len(), 4, "{at:?}");
    assert!(at[1] < 1_000, "two go at once: {at:?}");
    assert!(
        at[2..].iter().all(|t| (60_000..=60_300).contains(t)),
        "the next two a minute after the first: {at:?}"
    );
    assert_eq!(
        bed.sinks.get("lync").received()["sip:alice@x"],
        ["alert 1", "alert 2", "alert 3", "alert 4"]
    );
}

#[tokio::test(start_paused = true)]
async fn the_per_sink_rate_spaces_messages() {
    let routes = r#"
[[route]]
name = "named"
allow_alert_recipients = true
sinks = ["lync"]
offline = { policy = "always" }
"#;
    let bed = Bed::start(config("per_sink_per_second = 4", routes));
    let ids: Vec<u64> = (1..=5)
        .map(|n| {
            let mut a = alert(&format!("alert {n}"));
            a.users = vec![format!("sip:u{n}@x")];
            bed.accept("mail", a)
        })
        .collect();
    for &id in &ids {
        bed.settle(id).await;
    }
    let mut at: Vec<i64> = bed
        .sinks
        .get("lync")
        .calls()
        .iter()
        .map(|c| c.at_ms - T0)
        .collect();
    at.sort_unstable();
    assert_eq!(at, [0, 250, 500, 750, 1000], "4 per second");
}

#[tokio::test(start_paused = true)]
async fn an_alert_that_expires_before_delivery_is_skipped() {
    let bed = Bed::start(config("", OPS));
    // Nobody's presence is known: the skip route waits for it (up to 15 min).
    let mut a = alert("Disk full");
    a.expires_unix_ms = Some(T0 + 5_000);
    let a = bed.settle(bed.accept("mail", a)).await;
    for r in &a.recipients {
        assert_eq!(
            (r.outcome, r.reason.as_str()),
            (Outcome::Skipped, "expired before delivery")
        );
    }
    assert!(bed.sinks.get("lync").calls().is_empty());
    let finished = a.finished_ms.unwrap() - T0;
    assert!((5_000..7_000).contains(&finished), "{finished}");
}
