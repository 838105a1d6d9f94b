//! Issue 18 through the host: presence queries and sends within the bridge's advertised limits,
//! presence that cannot be had following the route, and request errors that stay with their own
//! recipients.

use super::*;

#[test]
fn sends_larger_than_the_bridge_allows_are_split_to_its_limit() {
    let sim = SimConfig {
        limits: alertbridge_testbed::ucma_sim::Limits {
            max_recipients: 2,
            ..Default::default()
        },
        ..users(&[
            (ALICE, Availability::Online),
            (BOB, Availability::Online),
            (CAROL, Availability::Online),
        ])
    };
    let bed = Bed::start(
        sim,
        &Spec {
            sink: "max_recipients_per_message = 10",
            ops: &[ALICE, BOB, CAROL],
            ..Spec::default()
        },
    );
    let h = bed.healthz_when("ocs ok, using the bridge's limit", |_, ocs| {
        ocs["state"] == "ok"
            && ocs["message"]
                .as_str()
                .is_some_and(|m| m.contains("using sends of 2 recipients"))
    });
    assert_eq!(
        ocs(&h)["message"],
        "endpoint sip:alerts@contoso.com Established; using sends of 2 recipients (the bridge's max_recipients; max_recipients_per_message is 10)",
        "{h:#}"
    );

    let a = bed.finished(bed.emit("Large", "normal"));
    for user in [ALICE, BOB, CAROL] {
        assert_eq!(
            outcome(&a, user),
            ("delivered".into(), String::new(), 1),
            "{a:#}"
        );
        assert_eq!(bed.sim.received(user).len(), 1, "{user}");
    }
    let c = bed.sim.counters();
    assert_eq!(
        (c.sends, c.calls),
        (2, 3),
        "3 recipients in sends of 2: {c:?}"
    );
}

/// 60 users, the sink configured for presence batches of 100, a bridge that takes 50 a query;
/// every 4th user is offline and every 4th (from the 2nd) is Do Not Disturb.
fn sixty_users() -> (Vec<String>, SimConfig) {
    let many: Vec<String> = (0..60)
        .map(|i| format!("sip:limit{i:02}@contoso.com"))
        .collect();
    let mut sim = many
        .iter()
        .enumerate()
        .fold(SimConfig::new(SECRET), |c, (i, u)| {
            c.user(
                u,
                match i % 4 {
                    0 => Availability::Offline,
                    2 => Availability::DoNotDisturb,
                    _ => Availability::Online,
                },
            )
        });
    sim.limits.max_presence_targets = 50;
    (many, sim)
}

#[test]
fn presence_batches_follow_the_bridges_limit_and_offline_users_get_nothing() {
    let (many, sim) = sixty_users();
    let ops: Vec<&str> = many.iter().map(String::as_str).collect();
    let bed = Bed::start(
        sim,
        &Spec {
            sink: "presence_batch_size = 100",
            ops: &ops,
            ..Spec::default()
        },
    );
    let a = bed.finished(bed.emit("Limit", "critical"));
    for (i, u) in many.iter().enumerate() {
        let (state, reason, _) = outcome(&a, u);
        match i % 4 {
            0 => assert_eq!(
                (state.as_str(), reason.as_str()),
                ("skipped", "offline (presence offline); policy skip"),
                "{u}"
            ),
            2 => assert_eq!(
                (state.as_str(), reason.as_str()),
                ("skipped", "offline (presence do_not_disturb); policy skip"),
                "{u}"
            ),
            _ => assert_eq!(state, "delivered", "{u}"),
        }
        let expected = usize::from(i % 2 == 1);
        assert_eq!(bed.sim.received(u).len(), expected, "{u}: {reason}");
    }
    let c = bed.sim.counters();
    assert_eq!(
        (c.presence_queries, c.sends, c.calls),
        (2, 30, 30),
        "60 users in queries of 50 and 10, never a 413; IMs only to the 30 online: {c:?}"
    );
    assert!(
        !bed.host.log().contains("too_many_targets"),
        "{}",
        bed.host.log()
    );
}

#[test]
fn presence_that_cannot_be_had_follows_the_route_not_delivery() {
    // The bridge's presence queries time out (504) for as long as the test needs.
    let failing = || {
        let (many, sim) = sixty_users();
        let sim = SimConfig {
            limits: alertbridge_testbed::ucma_sim::Limits::default(),
            ..sim
        };
        (many, sim)
    };
    let presence_down = |bed: &Bed| {
        bed.sim
            .inject(Fault::status(FaultTarget::Presence, 504, None).times(10_000));
    };

    // skip, and the bridge refuses the queries (413): nobody is messaged, each record says why.
    let (many, sim) = failing();
    let ops: Vec<&str> = many.iter().map(String::as_str).collect();
    let bed = Bed::start(
        sim,
        &Spec {
            ops: &ops[..4],
            ..Spec::default()
        },
    );
    bed.sim.inject(
        Fault::status(FaultTarget::Presence, 413, None)
            .code("too_many_targets")
            .times(10_000),
    );
    let a = bed.finished(bed.emit("Refused", "critical"));
    for u in &ops[..4] {
        assert_eq!(
            outcome(&a, u),
            (
                "skipped".into(),
                "offline (presence unknown: presence query failed: bridge answered 413 too_many_targets: injected fault); policy skip".into(),
                0
            ),
            "{a:#}"
        );
        assert!(bed.sim.received(u).is_empty(), "{u}");
    }
    assert_eq!(bed.sim.counters().sends, 0);
    drop(bed);

    // skip, and the queries time out (504) for a while: the recipients wait, no IM goes out
    // blind, and once presence answers the online ones get it and the others are skipped.
    let (many, sim) = failing();
    let ops: Vec<&str> = many.iter().map(String::as_str).collect();
    let bed = Bed::start(
        sim,
        &Spec {
            ops: &ops[..4],
            ..Spec::default()
        },
    );
    bed.sim
        .inject(Fault::status(FaultTarget::Presence, 504, None).times(2));
    let id = bed.emit("Waiting", "critical");
    let a = bed.alert_when(id, "every recipient waiting for presence", |a| {
        a["recipients"].as_array().is_some_and(|rs| {
            rs.len() == 4
                && rs
                    .iter()
                    .all(|r| r["outcome"] == "pending" && r["attempts"] == 0)
        })
    });
    assert!(
        outcome(&a, ops[1]).1.starts_with(
            "waiting: presence unknown: presence query failed: bridge answered 504 upstream_timeout"
        ),
        "{a:#}"
    );
    assert_eq!(bed.sim.counters().sends, 0);
    let a = bed.finished(id);
    assert_eq!(outcome(&a, ops[1]).0, "delivered", "{a:#}");
    assert_eq!(outcome(&a, ops[3]).0, "delivered", "{a:#}");
    assert_eq!(
        outcome(&a, ops[0]).0,
        "skipped",
        "offline once known: {a:#}"
    );
    assert_eq!(outcome(&a, ops[2]).0, "skipped", "DND once known: {a:#}");
    assert_eq!(bed.sim.counters().sends, 2);
    drop(bed);

    // hold: held while presence cannot be had, delivered once it can (to online users only).
    let (many, sim) = failing();
    let ops: Vec<&str> = many.iter().map(String::as_str).collect();
    let bed = Bed::start(
        sim,
        &Spec {
            ops: &ops[..4],
            offline: r#"{ policy = "hold", max_wait_secs = 60, then = "skip" }"#,
            ..Spec::default()
        },
    );
    bed.sim
        .inject(Fault::status(FaultTarget::Presence, 504, None).times(3));
    let id = bed.emit("Held", "critical");
    let a = bed.alert_when(id, "every recipient held", |a| {
        a["recipients"]
            .as_array()
            .is_some_and(|rs| rs.len() == 4 && rs.iter().all(|r| r["outcome"] == "held"))
    });
    assert!(
        outcome(&a, ops[1])
            .1
            .starts_with("offline (presence unknown: "),
        "{a:#}"
    );
    let a = bed.alert_when(id, "the online recipients delivered", |a| {
        a["recipients"]
            .as_array()
            .is_some_and(|rs| rs.iter().filter(|r| r["outcome"] == "delivered").count() == 2)
    });
    assert_eq!(outcome(&a, ops[1]).0, "delivered", "{a:#}");
    assert_eq!(outcome(&a, ops[3]).0, "delivered", "{a:#}");
    assert_eq!(
        outcome(&a, ops[0]),
        (
            "held".into(),
            "offline (presence offline); holding up to 60 s".into(),
            0
        ),
        "offline once known: {a:#}"
    );
    assert_eq!(bed.sim.counters().sends, 2);
    drop(bed);

    // A route that says so delivers without presence.
    let (many, sim) = failing();
    let ops: Vec<&str> = many.iter().map(String::as_str).collect();
    let bed = Bed::start(
        sim,
        &Spec {
            ops: &ops[..4],
            offline: r#"{ policy = "skip", unknown = "deliver" }"#,
            ..Spec::default()
        },
    );
    presence_down(&bed);
    let a = bed.finished(bed.emit("Deliver", "critical"));
    assert_eq!(
        bed.sim.counters().sends,
        4,
        "every recipient was sent to without presence"
    );
    assert_eq!(outcome(&a, ops[1]).0, "delivered", "{a:#}");
    assert_eq!(outcome(&a, ops[3]).0, "delivered", "{a:#}");
    assert!(
        outcome(&a, ops[0])
            .1
            .starts_with("offline (sink reports offline: 480"),
        "the bridge's own 480 for the offline user: {a:#}"
    );
}

#[test]
fn each_request_error_is_its_own_recipients_outcome() {
    const DAVE: &str = "sip:dave@contoso.com";
    const ERIN: &str = "sip:erin@contoso.com";
    let everyone = [ALICE, BOB, CAROL, DAVE, ERIN];
    let bed = Bed::start(
        users(&everyone.map(|u| (u, Availability::Online))),
        &Spec {
            ops: &everyone,
            ..Spec::default()
        },
    );
    for (user, status, code) in [
        (ALICE, 409, "idempotency_conflict"),
        (BOB, 422, "unprocessable"),
        (CAROL, 413, "payload_too_large"),
        (DAVE, 400, "invalid_request"),
        (ERIN, 504, "upstream_timeout"),
    ] {
        bed.sim.inject(
            Fault::status(FaultTarget::Messages, status, None)
                .for_recipient(user)
                .code(code),
        );
    }
    let a = bed.finished(bed.emit("Mixed", "high"));
    for (user, why) in [
        (ALICE, "409 idempotency_conflict"),
        (BOB, "422 unprocessable"),
        (CAROL, "413 payload_too_large"),
        (DAVE, "400 invalid_request"),
    ] {
        assert_eq!(
            outcome(&a, user),
            (
                "failed".into(),
                format!("permanent failure: bridge answered {why}: injected fault"),
                1
            ),
            "{a:#}"
        );
        assert!(bed.sim.received(user).is_empty(), "{user}");
    }
    assert_eq!(
        outcome(&a, ERIN),
        ("delivered".into(), String::new(), 2),
        "the 504 was transient and retried: {a:#}"
    );
    assert_eq!(bed.sim.received(ERIN).len(), 1);
}
