//! What a finding about one recipient does to its record: the route's offline policy, the
//! sink's per-recipient result, retries with backoff and jitter, and dead-lettering. Pure
//! functions of the record, the finding and the clock.

use alertbridge_plugin_api::{
    DeliveryStatus, ErrorKind, PluginError, PresenceState, RecipientResult, kit::Backoff,
};

use super::presence::Unheard;
use crate::{
    config::DeliverySettings,
    model::{Outcome, RecipientRecord},
    router::OfflinePolicy,
};

/// What was learned about one recipient in a round.
#[derive(Clone, Debug)]
pub enum Finding {
    /// Presence said the recipient is not reachable.
    Offline(PresenceState),
    /// The recipient's presence could not be had (the sink's presence call failed, timed out or
    /// left the user out), and the route counts that as not reachable (`offline.unknown`).
    PresenceUnknown(Unheard),
    /// The sink's result for the recipient.
    Result(RecipientResult),
    /// The whole deliver call failed.
    CallError(PluginError),
    /// The per-recipient rate limit allows the next message at this instant (Unix ms).
    RateLimited(i64),
    /// The sink is not running (restarting, or failing to start): wait without using up an
    /// attempt; the alert stays queued until the sink is back.
    SinkDown(String),
}

/// Applies `finding` to `record` at `now`. Returns the route to fall back to, if the policy
/// hands the recipient over.
pub fn apply(
    record: &mut RecipientRecord,
    finding: Finding,
    policy: &OfflinePolicy,
    now: i64,
    s: &DeliverySettings,
) -> Option<String> {
    record.updated_ms = now;
    match finding {
        Finding::Offline(state) => offline(record, policy, now, s, &format!("presence {state}")),
        Finding::PresenceUnknown(unheard) => presence_unknown(record, &unheard, policy, now, s),
        Finding::RateLimited(at) => {
            record.outcome = Outcome::Pending;
            record.not_before_ms = Some(at);
            record.reason = "rate limited: too many messages to this recipient".into();
            None
        }
        Finding::CallError(e) if e.kind == ErrorKind::SHUTTING_DOWN => {
            // The sink was being stopped or restarted under the call: like a sink that is down.
            apply(record, Finding::SinkDown(e.message), policy, now, s)
        }
        Finding::SinkDown(why) => {
            record.outcome = Outcome::Pending;
            record.not_before_ms = Some(now + (s.retry_initial.as_millis() as i64).max(1000));
            record.reason = format!("waiting: {why}");
            None
        }
        Finding::CallError(e) => {
            record.attempts += 1;
            match e.kind {
                ErrorKind::PERMANENT | ErrorKind::CONFIG => {
                    fail(record, format!("sink refused the message: {}", e.message))
                }
                _ => retry(
                    record,
                    now,
                    s,
                    &format!("sink call failed ({}): {}", e.kind, e.message),
                    e.retry_after.map(|d| d.as_millis() as i64),
                ),
            }
            None
        }
        Finding::Result(r) => {
            record.attempts += 1;
            let detail = if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", r.detail)
            };
            match r.status {
                DeliveryStatus::DELIVERED => {
                    record.outcome = Outcome::Delivered;
                    record.not_before_ms = None;
                    record.reason = r.detail;
                    None
                }
                DeliveryStatus::OFFLINE if !send_regardless(record, policy, now) => offline(
                    record,
                    policy,
                    now,
                    s,
                    &format!("sink reports offline{detail}"),
                ),
                DeliveryStatus::OFFLINE => fail_none(record, format!("offline{detail}")),
                DeliveryStatus::DECLINED => fail_none(record, format!("declined{detail}")),
                DeliveryStatus::NOT_FOUND => fail_none(record, format!("no such user{detail}")),
                DeliveryStatus::FAILED_PERMANENT => {
                    fail_none(record, format!("permanent failure{detail}"))
                }
                status => {
                    let after = r.retry_after.map(|d| d.as_millis() as i64);
                    retry(record, now, s, &format!("{status}{detail}"), after);
                    None
                }
            }
        }
    }
}

fn fail(record: &mut RecipientRecord, reason: String) {
    record.outcome = Outcome::Failed;
    record.not_before_ms = None;
    record.reason = reason;
}

fn fail_none(record: &mut RecipientRecord, reason: String) -> Option<String> {
    fail(record, reason);
    None
}

/// Schedules another attempt, or dead-letters the recipient once attempts run out.
fn retry(
    record: &mut RecipientRecord,
    now: i64,
    s: &DeliverySettings,
    why: &str,
    retry_after_ms: Option<i64>,
) {
    if record.attempts >= s.max_attempts {
        fail(
            record,
            format!("gave up after {} attempts: {why}", record.attempts),
        );
        return;
    }
    let backoff = Backoff::new(s.retry_initial, s.retry_max);
    let delay = i64::try_from(backoff.delay(record.attempts).as_millis()).unwrap_or(i64::MAX);
    let wait = delay.max(retry_after_ms.unwrap_or(0));
    record.outcome = Outcome::Pending;
    record.not_before_ms = Some(now + wait);
    record.reason = format!("retrying in {} ms: {why}", wait);
}

/// How long a recipient of a `skip` or `fallback` route waits for presence that a transient
/// failure (a bridge restarting, a time-out) keeps from being had, before the policy applies.
pub const PRESENCE_WAIT_MS: i64 = 15 * 60 * 1000;

/// A recipient whose presence could not be had, on a route that counts that as not reachable.
/// `hold` holds as for offline. `skip` and `fallback` wait like for a sink that is down (no
/// attempt used) while the failure is transient, for up to [`PRESENCE_WAIT_MS`]; after that, or
/// at once for a permanent failure, the policy applies.
fn presence_unknown(
    record: &mut RecipientRecord,
    unheard: &Unheard,
    policy: &OfflinePolicy,
    now: i64,
    s: &DeliverySettings,
) -> Option<String> {
    let why = format!("presence unknown: {}", unheard.why);
    if !unheard.transient || !matches!(policy, OfflinePolicy::Skip | OfflinePolicy::Fallback(_)) {
        return offline(record, policy, now, s, &why);
    }
    let since = *record.held_since_ms.get_or_insert(now);
    if now - since >= PRESENCE_WAIT_MS {
        let waited = format!("{why}; waited {} s", (now - since) / 1000);
        return offline(record, policy, now, s, &waited);
    }
    record.outcome = Outcome::Pending;
    record.not_before_ms = Some(now + (s.retry_initial.as_millis() as i64).max(1000));
    record.reason = format!("waiting: {why}");
    None
}

fn offline(
    record: &mut RecipientRecord,
    policy: &OfflinePolicy,
    now: i64,
    s: &DeliverySettings,
    why: &str,
) -> Option<String> {
    match policy {
        OfflinePolicy::Skip => {
            record.outcome = Outcome::Skipped;
            record.not_before_ms = None;
            record.reason = format!("offline ({why}); policy skip");
            None
        }
        OfflinePolicy::Always => {
            // Presence is ignored under `always`; only the sink's own "offline" lands here.
            fail_none(record, format!("offline ({why})"))
        }
        OfflinePolicy::Fallback(route) => {
            record.outcome = Outcome::Skipped;
            record.not_before_ms = None;
            record.reason = format!("offline ({why}); handed to route `{route}`");
            Some(route.clone())
        }
        OfflinePolicy::Hold { max_wait, then } => {
            let since = *record.held_since_ms.get_or_insert(now);
            let waited = now - since;
            if waited >= max_wait.as_millis() as i64 {
                let then_policy: &OfflinePolicy = then;
                let why = format!("{why}; held {} s", waited / 1000);
                return match then_policy {
                    OfflinePolicy::Always => {
                        record.outcome = Outcome::Pending;
                        record.not_before_ms = None;
                        record.reason = format!("offline ({why}); sending anyway");
                        None
                    }
                    OfflinePolicy::Hold { .. } => {
                        offline(record, &OfflinePolicy::Skip, now, s, &why)
                    }
                    other => offline(record, other, now, s, &why),
                };
            }
            record.outcome = Outcome::Held;
            record.not_before_ms = Some(
                now + (s.hold_recheck.as_millis() as i64)
                    .min(max_wait.as_millis() as i64 - waited)
                    .max(1),
            );
            record.reason = format!("offline ({why}); holding up to {} s", max_wait.as_secs());
            None
        }
    }
}

/// True if and only if a held recipient's wait ran out and `then = "always"` says to send now
/// regardless of presence.
pub fn send_regardless(record: &RecipientRecord, policy: &OfflinePolicy, now: i64) -> bool {
    match policy {
        OfflinePolicy::Always => true,
        OfflinePolicy::Hold { max_wait, then } => {
            **then == OfflinePolicy::Always
                && record
                    .held_since_ms
                    .is_some_and(|s| now - s >= max_wait.as_millis() as i64)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record() -> RecipientRecord {
        RecipientRecord {
            route: "r".into(),
            sink: "lync".into(),
            user: "sip:a@x".into(),
            outcome: Outcome::Pending,
            reason: String::new(),
            attempts: 0,
            held_since_ms: None,
            not_before_ms: None,
            updated_ms: 0,
            sending: false,
            repeat: false,
            digest: None,
            silence: None,
        }
    }

    fn settings() -> DeliverySettings {
        DeliverySettings {
            max_attempts: 3,
            retry_initial: Duration::from_millis(100),
            hold_recheck: Duration::from_secs(10),
            ..DeliverySettings::default()
        }
    }

    fn hold(secs: u64, then: OfflinePolicy) -> OfflinePolicy {
        OfflinePolicy::Hold {
            max_wait: Duration::from_secs(secs),
            then: Box::new(then),
        }
    }

    #[test]
    fn skip_records_the_presence_seen() {
        let mut r = record();
        assert_eq!(
            apply(
                &mut r,
                Finding::Offline(PresenceState::AWAY),
                &OfflinePolicy::Skip,
                5,
                &settings()
            ),
            None
        );
        assert_eq!(r.outcome, Outcome::Skipped);
        assert_eq!(r.reason, "offline (presence away); policy skip");
    }

    #[test]
    fn hold_rechecks_until_max_wait_then_applies_then() {
        let s = settings();
        let p = hold(30, OfflinePolicy::Skip);
        let mut r = record();
        apply(
            &mut r,
            Finding::Offline(PresenceState::OFFLINE),
            &p,
            1_000,
            &s,
        );
        assert_eq!(
            (r.outcome, r.held_since_ms, r.not_before_ms),
            (Outcome::Held, Some(1_000), Some(11_000))
        );
        apply(
            &mut r,
            Finding::Offline(PresenceState::OFFLINE),
            &p,
            25_000,
            &s,
        );
        assert_eq!(
            (r.outcome, r.not_before_ms),
            (Outcome::Held, Some(31_000)),
            "the last re-check lands on max_wait"
        );
        apply(
            &mut r,
            Finding::Offline(PresenceState::OFFLINE),
            &p,
            31_000,
            &s,
        );
        assert_eq!(r.outcome, Outcome::Skipped);
        assert!(r.reason.contains("held 30 s"), "{}", r.reason);
    }

    #[test]
    fn hold_then_always_sends_regardless_and_then_fallback_hands_over() {
        let s = settings();
        let p = hold(10, OfflinePolicy::Always);
        let mut r = record();
        apply(&mut r, Finding::Offline(PresenceState::OFFLINE), &p, 0, &s);
        assert!(!send_regardless(&r, &p, 5_000));
        apply(
            &mut r,
            Finding::Offline(PresenceState::OFFLINE),
            &p,
            10_000,
            &s,
        );
        assert_eq!(r.outcome, Outcome::Pending);
        assert!(send_regardless(&r, &p, 10_000));

        let p = hold(10, OfflinePolicy::Fallback("pager".into()));
        let mut r = record();
        apply(&mut r, Finding::Offline(PresenceState::OFFLINE), &p, 0, &s);
        assert_eq!(
            apply(
                &mut r,
                Finding::Offline(PresenceState::OFFLINE),
                &p,
                10_000,
                &s
            ),
            Some("pager".into())
        );
        assert_eq!(r.outcome, Outcome::Skipped);
    }

    #[test]
    fn transient_failures_back_off_then_dead_letter() {
        let s = settings();
        let mut r = record();
        let fail = |r: &mut RecipientRecord, now| {
            let res = RecipientResult::new("sip:a@x", DeliveryStatus::FAILED_TRANSIENT, "503 busy");
            apply(r, Finding::Result(res), &OfflinePolicy::Skip, now, &s)
        };
        fail(&mut r, 0);
        let first = r.not_before_ms.unwrap();
        assert!((100..=120).contains(&first), "{first}");
        fail(&mut r, 0);
        let second = r.not_before_ms.unwrap();
        assert!((200..=240).contains(&second), "{second}");
        fail(&mut r, 0);
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            r.reason,
            "gave up after 3 attempts: failed_transient: 503 busy"
        );
    }

    #[test]
    fn retry_after_advice_is_honoured() {
        let mut r = record();
        let res = RecipientResult::new("u", DeliveryStatus::FAILED_TRANSIENT, "429")
            .retry_after(Duration::from_secs(30));
        apply(
            &mut r,
            Finding::Result(res),
            &OfflinePolicy::Skip,
            0,
            &settings(),
        );
        assert_eq!(r.not_before_ms, Some(30_000));
    }

    #[test]
    fn permanent_outcomes_are_final() {
        let s = settings();
        for (status, reason) in [
            (DeliveryStatus::DECLINED, "declined: busy in a meeting"),
            (DeliveryStatus::NOT_FOUND, "no such user: busy in a meeting"),
            (
                DeliveryStatus::FAILED_PERMANENT,
                "permanent failure: busy in a meeting",
            ),
        ] {
            let mut r = record();
            apply(
                &mut r,
                Finding::Result(RecipientResult::new("u", status, "busy in a meeting")),
                &OfflinePolicy::Skip,
                0,
                &s,
            );
            assert_eq!((r.outcome, r.reason.as_str()), (Outcome::Failed, reason));
        }
        let mut r = record();
        apply(
            &mut r,
            Finding::CallError(PluginError::new(
                ErrorKind::PANICKED,
                "deliver panicked: boom",
            )),
            &OfflinePolicy::Skip,
            0,
            &s,
        );
        assert_eq!(
            r.outcome,
            Outcome::Pending,
            "a panic is retried after the sink restarts"
        );
        let mut r = record();
        apply(
            &mut r,
            Finding::Result(RecipientResult::delivered("u")),
            &OfflinePolicy::Skip,
            0,
            &s,
        );
        assert_eq!(r.outcome, Outcome::Delivered);
        let mut r = record();
        apply(
            &mut r,
            Finding::SinkDown("sink `lync` is not running".into()),
            &OfflinePolicy::Skip,
            0,
            &s,
        );
        assert_eq!(
            (r.outcome, r.attempts, r.not_before_ms),
            (Outcome::Pending, 0, Some(1000)),
            "a sink down uses no attempt"
        );
        let mut r = record();
        let stopping = PluginError::new(
            ErrorKind::SHUTTING_DOWN,
            "deliver cancelled: instance stopping",
        );
        apply(
            &mut r,
            Finding::CallError(stopping),
            &OfflinePolicy::Skip,
            0,
            &s,
        );
        assert_eq!(
            (r.outcome, r.attempts),
            (Outcome::Pending, 0),
            "nor does a sink stopping under the call"
        );
    }

    #[test]
    fn unknown_presence_follows_the_offline_policy() {
        let s = settings();
        let refused = || {
            Finding::PresenceUnknown(Unheard {
                why: "presence query failed: 413 too_many_targets".into(),
                transient: false,
            })
        };
        let timed_out = || {
            Finding::PresenceUnknown(Unheard {
                why: "presence query timed out after 5000 ms".into(),
                transient: true,
            })
        };
        // A permanent failure: the policy applies at once.
        let mut r = record();
        apply(&mut r, refused(), &OfflinePolicy::Skip, 0, &s);
        assert_eq!(
            (r.outcome, r.attempts, r.reason.as_str()),
            (
                Outcome::Skipped,
                0,
                "offline (presence unknown: presence query failed: 413 too_many_targets); policy skip"
            )
        );
        // A transient one waits without using an attempt, then the policy applies.
        let mut r = record();
        apply(&mut r, timed_out(), &OfflinePolicy::Skip, 0, &s);
        assert_eq!(
            (r.outcome, r.attempts, r.not_before_ms),
            (Outcome::Pending, 0, Some(1000)),
            "{}",
            r.reason
        );
        apply(
            &mut r,
            timed_out(),
            &OfflinePolicy::Skip,
            PRESENCE_WAIT_MS - 1,
            &s,
        );
        assert_eq!(r.outcome, Outcome::Pending);
        apply(
            &mut r,
            timed_out(),
            &OfflinePolicy::Skip,
            PRESENCE_WAIT_MS,
            &s,
        );
        assert_eq!(
            (r.outcome, r.reason.as_str()),
            (
                Outcome::Skipped,
                "offline (presence unknown: presence query timed out after 5000 ms; waited 900 s); policy skip"
            )
        );
        // hold holds, whatever the failure.
        for finding in [refused, timed_out] {
            let mut r = record();
            apply(&mut r, finding(), &hold(60, OfflinePolicy::Skip), 0, &s);
            assert_eq!((r.outcome, r.held_since_ms), (Outcome::Held, Some(0)));
            apply(
                &mut r,
                finding(),
                &hold(60, OfflinePolicy::Skip),
                60_000,
                &s,
            );
            assert_eq!(r.outcome, Outcome::Skipped, "{}", r.reason);
        }
    }
}
