//! Rounds for recipients who are not reachable: every offline policy (`skip`, `always`,
//! `hold` with each `then`, `fallback`), and presence that could not be had (`unknown`).

use std::time::Duration;

use alertbridge_plugin_api::{ErrorKind, PluginError, PresenceState};

use super::*;

/// Route `ops` (alice and bob on lync) with `offline`, and route `oncall` (carol on the pager)
/// that it may fall back to.
fn routes(offline: &str) -> String {
    format!(
        r#"
[[route]]
name = "ops"
groups = ["ops"]
sinks = ["lync"]
offline = {offline}

[[route]]
name = "oncall"
groups = ["oncall"]
sinks = ["pager"]
offline = {{ policy = "always" }}
"#
    )
}

/// Alice is `alice`, bob available; carol available on the pager.
fn presence(bed: &Bed, alice: PresenceState) {
    let lync = bed.sinks.get("lync");
    lync.presence(&["sip:alice@x"], alice);
    lync.presence(&["sip:bob@x"], PresenceState::AVAILABLE);
    bed.sinks
        .get("pager")
        .presence(&["sip:carol@x"], PresenceState::AVAILABLE);
}

fn asked_about(bed: &Bed, sink: &str, user: &str) -> usize {
    bed.sinks
        .get(sink)
        .presence_calls()
        .iter()
        .filter(|c| c.iter().any(|u| u == user))
        .count()
}

#[tokio::test(start_paused = true)]
async fn skip_records_who_was_not_reachable_and_sends_to_the_others() {
    let bed = Bed::start(config("", &routes(r#"{ policy = "skip" }"#)));
    presence(&bed, PresenceState::DO_NOT_DISTURB);
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    assert_eq!(
        outcomes(&a),
        [
            o("lync", "sip:alice@x", Outcome::Skipped),
            o("lync", "sip:bob@x", Outcome::Delivered)
        ]
    );
    let alice = rec(&a, "lync", "sip:alice@x");
    assert_eq!(
        (alice.reason.as_str(), alice.attempts),
        ("offline (presence do_not_disturb); policy skip", 0)
    );
    assert_eq!(
        bed.sinks.get("lync").received().keys().collect::<Vec<_>>(),
        ["sip:bob@x"]
    );
}

#[tokio::test(start_paused = true)]
async fn always_sends_without_asking_presence() {
    let bed = Bed::start(config("", &routes(r#"{ policy = "always" }"#)));
    presence(&bed, PresenceState::OFFLINE);
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    assert!(
        a.recipients.iter().all(|r| r.outcome == Outcome::Delivered),
        "{a:#?}"
    );
    assert_eq!(asked_about(&bed, "lync", "sip:alice@x"), 0);
}

#[tokio::test(start_paused = true)]
async fn hold_rechecks_and_delivers_when_the_recipient_comes_online() {
    let offline = r#"{ policy = "hold", max_wait_secs = 900, then = "skip" }"#;
    let bed = Bed::start(config("hold_recheck_ms = 15000", &routes(offline)));
    presence(&bed, PresenceState::OFFLINE);
    let id = bed.accept("mail", alert("Disk full"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let held = bed.queue.stored(id).unwrap();
    let alice = rec(&held, "lync", "sip:alice@x");
    assert_eq!(
        (alice.outcome, alice.held_since_ms, alice.not_before_ms),
        (Outcome::Held, Some(T0), Some(T0 + 30_000)),
        "held since first seen offline, re-checked every 15 s: {alice:#?}"
    );
    assert_eq!(rec(&held, "lync", "sip:bob@x").outcome, Outcome::Delivered);
    bed.sinks
        .get("lync")
        .presence(&["sip:alice@x"], PresenceState::AVAILABLE);
    let a = bed.settle(id).await;
    assert_eq!(rec(&a, "lync", "sip:alice@x").outcome, Outcome::Delivered);
    let calls = bed.sinks.get("lync").calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].message.recipients, ["sip:alice@x"]);
    assert_eq!(
        calls[1].at_ms,
        T0 + 30_000,
        "at the re-check after she came online"
    );
}

#[tokio::test(start_paused = true)]
async fn hold_applies_then_when_max_wait_runs_out() {
    let delivery = "hold_recheck_ms = 15000";
    // then = skip
    let bed = Bed::start(config(
        delivery,
        &routes(r#"{ policy = "hold", max_wait_secs = 60, then = "skip" }"#),
    ));
    presence(&bed, PresenceState::AWAY);
    bed.sinks
        .get("lync")
        .presence(&["sip:alice@x"], PresenceState::OFFLINE);
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    let alice = rec(&a, "lync", "sip:alice@x");
    assert_eq!(
        (alice.outcome, alice.reason.as_str()),
        (
            Outcome::Skipped,
            "offline (presence offline; held 60 s); policy skip"
        )
    );
    assert_eq!(a.finished_ms, Some(T0 + 60_000));

    // then = always: sent at max_wait, offline or not, without asking again.
    let bed = Bed::start(config(
        delivery,
        &routes(r#"{ policy = "hold", max_wait_secs = 60, then = "always" }"#),
    ));
    presence(&bed, PresenceState::OFFLINE);
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    assert_eq!(rec(&a, "lync", "sip:alice@x").outcome, Outcome::Delivered);
    let calls = bed.sinks.get("lync").calls();
    assert_eq!(
        (calls[1].message.recipients.as_slice(), calls[1].at_ms),
        (["sip:alice@x".to_owned()].as_slice(), T0 + 60_000)
    );
    // Asked at 0, 15, 30, 45 s; at 60 s the wait is over and she is not asked.
    assert_eq!(asked_about(&bed, "lync", "sip:alice@x"), 4);

    // then = fallback: the on-call route takes over at max_wait.
    let bed = Bed::start(config(
        delivery,
        &routes(
            r#"{ policy = "hold", max_wait_secs = 60, then = "fallback", fallback = "oncall" }"#,
        ),
    ));
    presence(&bed, PresenceState::OFFLINE);
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    assert_eq!(
        outcomes(&a),
        [
            o("lync", "sip:alice@x", Outcome::Skipped),
            o("lync", "sip:bob@x", Outcome::Delivered),
            o("pager", "sip:carol@x", Outcome::Delivered),
        ]
    );
    assert_eq!(bed.sinks.get("pager").calls()[0].at_ms, T0 + 60_000);
}

#[tokio::test(start_paused = true)]
async fn fallback_hands_over_once_however_many_are_offline() {
    let bed = Bed::start(config(
        "",
        &routes(r#"{ policy = "fallback", fallback = "oncall" }"#),
    ));
    presence(&bed, PresenceState::OFFLINE);
    bed.sinks
        .get("lync")
        .presence(&["sip:bob@x"], PresenceState::OFFLINE);
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    assert_eq!(
        outcomes(&a),
        [
            o("lync", "sip:alice@x", Outcome::Skipped),
            o("lync", "sip:bob@x", Outcome::Skipped),
            o("pager", "sip:carol@x", Outcome::Delivered),
        ]
    );
    assert_eq!(
        rec(&a, "lync", "sip:bob@x").reason,
        "offline (presence offline); handed to route `oncall`"
    );
    assert_eq!(rec(&a, "pager", "sip:carol@x").route, "oncall");
    let pager = bed.sinks.get("pager").calls();
    assert_eq!(pager.len(), 1, "one hand-over for both: {pager:#?}");
    assert_eq!(pager[0].message.subject, "Disk full");
    assert!(bed.sinks.get("lync").calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn presence_that_cannot_be_had_follows_offline_unknown() {
    // A permanent presence failure: the skip policy applies at once.
    let bed = Bed::start(config("", &routes(r#"{ policy = "skip" }"#)));
    bed.sinks.get("lync").presence_fails(Some(PluginError::new(
        ErrorKind::PERMANENT,
        "413 too many targets",
    )));
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    for r in &a.recipients {
        assert_eq!(
            (r.outcome, r.reason.as_str()),
            (
                Outcome::Skipped,
                "offline (presence unknown: presence query failed: 413 too many targets); policy skip"
            )
        );
    }
    assert!(bed.sinks.get("lync").calls().is_empty(), "no IM sent blind");

    // unknown = "deliver": a user the sink left out of its answer is sent to.
    let bed = Bed::start(config(
        "",
        &routes(r#"{ policy = "skip", unknown = "deliver" }"#),
    ));
    bed.sinks
        .get("lync")
        .presence(&["sip:bob@x"], PresenceState::OFFLINE);
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    assert_eq!(
        outcomes(&a),
        [
            o("lync", "sip:alice@x", Outcome::Delivered),
            o("lync", "sip:bob@x", Outcome::Skipped)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_presence_failure_waits_for_presence_without_using_attempts() {
    let bed = Bed::start(config(
        "presence_cache_ms = 1000",
        &routes(r#"{ policy = "skip" }"#),
    ));
    presence(&bed, PresenceState::AVAILABLE);
    let lync = bed.sinks.get("lync");
    lync.presence_fails(Some(PluginError::new(
        ErrorKind::TRANSIENT,
        "presence: no answer within 60000 ms",
    )));
    let id = bed.accept("mail", alert("Disk full"));
    tokio::time::sleep(Duration::from_secs(120)).await;
    let waiting = bed.queue.stored(id).unwrap();
    for r in &waiting.recipients {
        assert_eq!(
            (r.outcome, r.attempts, r.held_since_ms),
            (Outcome::Pending, 0, Some(T0)),
            "{r:#?}"
        );
        assert!(
            r.reason.starts_with("waiting: presence unknown"),
            "{}",
            r.reason
        );
    }
    lync.presence_fails(None);
    let a = bed.settle(id).await;
    assert!(a.recipients.iter().all(|r| r.outcome == Outcome::Delivered));
    let at = lync.calls()[0].at_ms - T0;
    assert!(
        (120_000..=121_300).contains(&at),
        "sent at the next look: {at}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_presence_failure_skips_after_fifteen_minutes() {
    let bed = Bed::start(config("", &routes(r#"{ policy = "skip" }"#)));
    bed.sinks.get("lync").presence_fails(Some(PluginError::new(
        ErrorKind::TRANSIENT,
        "bridge restarting",
    )));
    let a = bed.settle(bed.accept("mail", alert("Disk full"))).await;
    for r in &a.recipients {
        assert_eq!(r.outcome, Outcome::Skipped);
        assert!(
            r.reason.ends_with("waited 900 s); policy skip"),
            "{}",
            r.reason
        );
    }
    let took = a.finished_ms.unwrap() - T0;
    assert!((900_000..902_000).contains(&took), "{took}");
}
