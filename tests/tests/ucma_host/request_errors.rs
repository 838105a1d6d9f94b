//! Request-level errors (401, 409, 429, 503) and a bridge that is down, through the host.

use super::*;

#[test]
fn wrong_secret_401_fails_with_a_clear_reason_and_shows_in_healthz() {
    // The host recreates a FAILED sink again and again; a deliver that meets an incarnation
    // being stopped fails with `shutting_down` and (a host bug, see notes/ucma-e2e.md) uses
    // up an attempt. More attempts, so that cannot dead-letter the alert before the 401.
    let delivery = DELIVERY.replace("max_attempts = 3", "max_attempts = 8");
    let bed = Bed::start(
        users(&[(ALICE, Availability::Online)]),
        &Spec {
            secret: "not-the-bridge-secret-000",
            delivery: &delivery,
            ..Spec::default()
        },
    );
    let h = bed.healthz_when("ocs failed in /healthz", |h, ocs| {
        h["status"] == "failing" && ocs["state"] == "failed"
    });
    assert_eq!(
        ocs(&h)["last_error"],
        "the bridge refused our credentials (401): check the secret",
        "{h:#}"
    );
    assert!(
        h["failing"]
            .as_array()
            .is_some_and(|f| f.iter().any(|i| i["name"] == "ocs")),
        "{h:#}"
    );

    // The presence query is refused first: a permanent failure, so the route's policy (skip)
    // applies at once; no IM goes out without presence.
    let a = bed.finished(bed.emit("Unauthorized", "normal"));
    assert_eq!(
        outcome(&a, ALICE),
        (
            "skipped".into(),
            "offline (presence unknown: presence query failed: bridge answered 401 unauthorized: authentication failed); policy skip".into(),
            0
        ),
        "{a:#}"
    );
    let c = bed.sim.counters();
    assert!(c.unauthorized >= 2 && c.calls == 0, "{c:?}");

    // The operator fixes the secret and reloads: the sink is recreated and delivers.
    let text = std::fs::read_to_string(&bed.host.config).expect("read config");
    std::fs::write(
        &bed.host.config,
        text.replace("not-the-bridge-secret-000", SECRET),
    )
    .expect("write config");
    let (status, body) = post(&format!("{}/-/reload", bed.host.admin)).expect("reload answers");
    assert_eq!(status, 200, "{body}");
    let reloaded: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        reloaded["result"]["changed"],
        serde_json::json!(["ocs"]),
        "{body}"
    );
    bed.healthz_when("ocs ok after the reload", |h, ocs| {
        h["status"] == "ok" && ocs["state"] == "ok"
    });
    let a = bed.finished(bed.emit("Fixed", "normal"));
    assert_eq!(
        outcome(&a, ALICE),
        ("delivered".into(), String::new(), 1),
        "{a:#}"
    );
    assert_eq!(bed.sim.received(ALICE).len(), 1);
}

#[test]
fn idempotency_conflict_409_after_a_config_change_between_attempts() {
    // Retries 4 s apart, so the host can be stopped between the first attempt and the second.
    let delivery = DELIVERY
        .replace("retry_initial_ms = 50", "retry_initial_ms = 4000")
        .replace("retry_max_ms = 200", "retry_max_ms = 4000");
    let mut bed = Bed::start(
        users(&[(ALICE, Availability::Online)]),
        &Spec {
            delivery: &delivery,
            ..Spec::default()
        },
    );
    bed.sim.script(ALICE, [Outcome::sip(486)]);
    let id = bed.emit("Conflict", "normal");
    let a = bed.alert_when(id, "a first, transient attempt", |a| {
        a["recipients"][0]["attempts"] == 1
    });
    assert_eq!(outcome(&a, ALICE).0, "pending", "{a:#}");
    assert!(bed.host.stop(), "graceful stop; log:\n{}", bed.host.log());
    let c = bed.sim.counters();
    assert_eq!(
        (c.sends, c.retries),
        (1, 0),
        "stopped before the retry was due: {c:?}"
    );

    // Same alert, recipient and content give the same key; another send timeout changes the
    // body sent under it, which the bridge refuses rather than sending a second IM.
    let text = std::fs::read_to_string(&bed.host.config).expect("read config");
    std::fs::write(
        &bed.host.config,
        text.replace("send_timeout_ms = 2000", "send_timeout_ms = 3000"),
    )
    .expect("write config");
    bed.host.restart();
    let a = bed.finished(id);
    assert_eq!(
        outcome(&a, ALICE),
        ("failed".into(), "sink refused the message: bridge answered 409 idempotency_conflict: key used with a different body".into(), 2),
        "{a:#}"
    );
    let c = bed.sim.counters();
    assert_eq!(
        (c.sends, c.calls, c.conflicts),
        (1, 1, 1),
        "nothing re-sent under the conflicting key: {c:?}"
    );
    assert!(bed.sim.received(ALICE).is_empty());
}

#[test]
fn rate_limited_429_waits_at_least_retry_after() {
    let bed = Bed::start(
        users(&[(ALICE, Availability::Online), (BOB, Availability::Online)]),
        &Spec {
            ops: &[ALICE, BOB],
            ..Spec::default()
        },
    );
    let throttle = |count| {
        bed.sim.inject(Fault {
            target: FaultTarget::Messages,
            action: FaultAction::Status {
                status: 429,
                retry_after_s: Some(2),
            },
            count,
            recipient: None,
            code: None,
        })
    };
    // The first pending record of each throttled recipient, and the alert once finished.
    let run = |subject: &str| {
        let id = bed.emit(subject, "normal");
        let first = bed.alert_when(id, "a throttled attempt", |a| {
            a["recipients"].as_array().is_some_and(|rs| {
                rs.iter()
                    .any(|r| r["outcome"] == "pending" && r["attempts"] == 1)
            })
        });
        (first, bed.finished(id))
    };
    let check = |first: &Value, done: &Value, user: &str, reason: &str| {
        let r = recipient(first, user);
        assert_eq!(
            (r["outcome"].as_str(), r["reason"].as_str()),
            (Some("pending"), Some(reason)),
            "{first:#}"
        );
        assert_eq!(
            i64_of(r, "not_before_ms") - i64_of(r, "updated_ms"),
            2000,
            "{first:#}"
        );
        assert_eq!(
            outcome(done, user),
            ("delivered".into(), String::new(), 2),
            "{done:#}"
        );
        let waited = i64_of(recipient(done, user), "updated_ms") - i64_of(r, "updated_ms");
        assert!(
            waited >= 2000,
            "{user} retried after {waited} ms, before the bridge's Retry-After of 2 s"
        );
    };

    // Every request of the delivery throttled: the delivery as a whole fails with the advice.
    throttle(2);
    let (first, done) = run("Throttled");
    for user in [ALICE, BOB] {
        check(
            &first,
            &done,
            user,
            "retrying in 2000 ms: sink call failed (transient): bridge answered 429 rate_limited: injected fault",
        );
    }

    // One of the two requests throttled: that recipient's result carries the advice.
    throttle(1);
    let (first, done) = run("Partly");
    let hit: Vec<&str> = [ALICE, BOB]
        .into_iter()
        .filter(|u| {
            recipient(&first, u)["attempts"] == 1 && recipient(&first, u)["outcome"] == "pending"
        })
        .collect();
    assert_eq!(hit.len(), 1, "{first:#}");
    check(
        &first,
        &done,
        hit[0],
        "retrying in 2000 ms: failed_transient: bridge answered 429 rate_limited: injected fault",
    );
    let other = if hit[0] == ALICE { BOB } else { ALICE };
    assert_eq!(
        outcome(&done, other),
        ("delivered".into(), String::new(), 1),
        "{done:#}"
    );
    assert_eq!(
        (bed.sim.received(ALICE).len(), bed.sim.received(BOB).len()),
        (2, 2)
    );
}

#[test]
fn unavailable_503_is_retried_then_delivered_once_the_bridge_is_back() {
    let bed = Bed::start(users(&[(ALICE, Availability::Online)]), &Spec::default());
    bed.sim.inject(Fault {
        target: FaultTarget::Messages,
        action: FaultAction::Status {
            status: 503,
            retry_after_s: Some(1),
        },
        count: 2,
        recipient: None,
        code: None,
    });
    let id = bed.emit("Unavailable", "normal");
    let first = bed.alert_when(id, "the first refused attempt", |a| {
        a["recipients"][0]["attempts"] == 1
    });
    assert_eq!(
        recipient(&first, ALICE)["reason"],
        "retrying in 1000 ms: sink call failed (transient): bridge answered 503 endpoint_unavailable: injected fault",
        "{first:#}"
    );
    let a = bed.finished(id);
    assert_eq!(
        outcome(&a, ALICE),
        ("delivered".into(), String::new(), 3),
        "{a:#}"
    );
    let took = i64_of(recipient(&a, ALICE), "updated_ms") - i64_of(&a, "accepted_ms");
    assert!(
        took >= 2000,
        "two Retry-After waits of 1 s, but delivered {took} ms after accept"
    );
    assert_eq!(bed.sim.received(ALICE).len(), 1);
}

#[test]
fn bridge_down_holds_deliveries_until_it_is_back() {
    // A down bridge fails the sink, which the host recreates again and again: more attempts,
    // for the ones a stopping incarnation uses up (see the 401 test).
    let delivery = DELIVERY.replace("max_attempts = 3", "max_attempts = 8");
    let bed = Bed::start(
        users(&[(ALICE, Availability::Online)]),
        &Spec {
            delivery: &delivery,
            ..Spec::default()
        },
    );
    bed.healthz_when("ocs ok", |_, ocs| ocs["state"] == "ok");
    bed.sim.set_health(HealthStatus::Down);
    let h = bed.healthz_when("ocs failed while the bridge is down", |h, ocs| {
        h["status"] == "failing" && ocs["state"] == "failed"
    });
    assert!(
        ocs(&h)["last_error"].as_str().is_some_and(
            |e| e.starts_with("bridge down: application endpoint terminated; endpoint sip:alerts@contoso.com Terminated")
        ),
        "{h:#}"
    );

    let id = bed.emit("Down", "normal");
    std::thread::sleep(Duration::from_secs(2));
    let a = bed.alert(id);
    assert_eq!(
        outcome(&a, ALICE).0,
        "pending",
        "nothing is given up while the bridge is down: {a:#}"
    );
    assert!(bed.sim.received(ALICE).is_empty());

    bed.sim.set_health(HealthStatus::Ok);
    let a = bed.finished(id);
    assert_eq!(outcome(&a, ALICE).0, "delivered", "{a:#}");
    assert_eq!(bed.sim.received(ALICE).len(), 1);
    bed.healthz_when("ocs ok again", |h, ocs| {
        h["status"] == "ok" && ocs["state"] == "ok"
    });
}
