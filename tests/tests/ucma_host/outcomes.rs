//! Each per-recipient outcome of the bridge as the admin API records it.

use super::*;

#[test]
fn delivered_im_keeps_subject_and_body_in_utf8() {
    let bed = Bed::start(users(&[(ALICE, Availability::Online)]), &Spec::default());
    let id = bed.emit(
        "Plattenplatz%20knapp%20–%20Größe%20€%20日本語%20🚨",
        "critical",
    );
    let a = bed.finished(id);
    assert_eq!(
        outcome(&a, ALICE),
        ("delivered".into(), String::new(), 1),
        "{a:#}"
    );

    let subject = "Plattenplatz knapp – Größe € 日本語 🚨 0";
    let inbox = bed.sim.received(ALICE);
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let im = &inbox[0];
    assert_eq!(im.subject.as_deref(), Some(subject));
    assert_eq!(im.toast.as_deref(), Some(subject));
    assert_eq!(im.body, format!("{subject}\ntest alert e0:0"));
    assert_eq!(
        (
            im.content_type.as_str(),
            im.importance.as_str(),
            im.mode.as_str()
        ),
        ("text/plain", "urgent", "session"),
        "critical → urgent"
    );
    let c = bed.sim.counters();
    assert_eq!(
        (c.sends, c.calls, c.delivered, c.replays),
        (1, 1, 1, 0),
        "{c:?}"
    );
    assert!(
        c.presence_queries >= 1,
        "the host asked for presence first: {c:?}"
    );
}

#[test]
fn offline_by_presence_is_skipped_under_skip() {
    let sim = users(&[(ALICE, Availability::Online), (BOB, Availability::Offline)]);
    let bed = Bed::start(
        sim,
        &Spec {
            ops: &[ALICE, BOB],
            ..Spec::default()
        },
    );
    let a = bed.finished(bed.emit("Skip", "normal"));
    assert_eq!(outcome(&a, ALICE).0, "delivered", "{a:#}");
    assert_eq!(
        outcome(&a, BOB),
        (
            "skipped".into(),
            "offline (presence offline); policy skip".into(),
            0
        ),
        "{a:#}"
    );
    assert!(
        bed.sim.received(BOB).is_empty(),
        "no call was placed to an offline user"
    );
    assert_eq!(bed.sim.counters().calls, 1);
}

#[test]
fn offline_by_presence_is_held_then_delivered_when_online() {
    let sim = users(&[(CAROL, Availability::Offline)]);
    let bed = Bed::start(
        sim,
        &Spec {
            ops: &[CAROL],
            offline: r#"{ policy = "hold", max_wait_secs = 60, then = "skip" }"#,
            ..Spec::default()
        },
    );
    let id = bed.emit("Hold", "normal");
    let a = bed.alert_when(id, "carol held", |a| {
        a["recipients"][0]["outcome"] == "held"
    });
    assert_eq!(
        outcome(&a, CAROL),
        (
            "held".into(),
            "offline (presence offline); holding up to 60 s".into(),
            0
        )
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        bed.alert(id)["recipients"][0]["outcome"],
        "held",
        "still held while offline"
    );
    assert!(bed.sim.received(CAROL).is_empty());

    bed.sim.set_presence(CAROL, Availability::Online);
    let a = bed.finished(id);
    assert_eq!(
        outcome(&a, CAROL),
        ("delivered".into(), String::new(), 1),
        "{a:#}"
    );
    assert_eq!(bed.sim.received(CAROL).len(), 1);
}

#[test]
fn every_bridge_availability_meets_the_hosts_reachable_set() {
    let cases = [
        (Availability::Online, "delivered", ""),
        (Availability::IdleOnline, "delivered", ""),
        (Availability::Busy, "delivered", ""),
        (Availability::IdleBusy, "delivered", ""),
        (Availability::BeRightBack, "delivered", ""),
        (Availability::Away, "delivered", ""),
        (Availability::Unknown, "delivered", ""),
        (
            Availability::DoNotDisturb,
            "skipped",
            "offline (presence do_not_disturb); policy skip",
        ),
        (
            Availability::Offline,
            "skipped",
            "offline (presence offline); policy skip",
        ),
    ];
    let uris: Vec<String> = cases
        .iter()
        .map(|(a, ..)| format!("sip:{}@contoso.com", a.name().to_ascii_lowercase()))
        .collect();
    let sim = uris
        .iter()
        .zip(&cases)
        .fold(SimConfig::new(SECRET), |c, (u, (a, ..))| c.user(u, *a));
    let ops: Vec<&str> = uris.iter().map(String::as_str).collect();
    let bed = Bed::start(
        sim,
        &Spec {
            ops: &ops,
            ..Spec::default()
        },
    );
    let a = bed.finished(bed.emit("Presence", "normal"));
    for (uri, (availability, state, reason)) in uris.iter().zip(&cases) {
        let (got, why, _) = outcome(&a, uri);
        assert_eq!(
            (got.as_str(), why.as_str()),
            (*state, *reason),
            "{availability:?}"
        );
        assert_eq!(
            bed.sim.received(uri).len(),
            usize::from(*state == "delivered"),
            "{availability:?}"
        );
    }
}

#[test]
fn page_mode_counts_as_delivered_unconfirmed() {
    let bed = Bed::start(
        users(&[(ALICE, Availability::Online)]),
        &Spec {
            sink: "mode = \"page\"",
            ..Spec::default()
        },
    );
    let a = bed.finished(bed.emit("Paged", "normal"));
    assert_eq!(
        outcome(&a, ALICE),
        (
            "delivered".into(),
            "page mode: sent, receipt not confirmed".into(),
            1
        ),
        "{a:#}"
    );
    let inbox = bed.sim.received(ALICE);
    assert_eq!(
        inbox.iter().map(|im| im.mode.as_str()).collect::<Vec<_>>(),
        ["page"]
    );
}

#[test]
fn declined_603_fails_without_retry() {
    let bed = Bed::start(users(&[(ALICE, Availability::Online)]), &Spec::default());
    bed.sim.script(ALICE, [Outcome::sip(603)]);
    let a = bed.finished(bed.emit("Declined", "normal"));
    assert_eq!(
        outcome(&a, ALICE),
        (
            "failed".into(),
            "declined: 603 Decline (declined)".into(),
            1
        ),
        "{a:#}"
    );
    assert_eq!(bed.sim.counters().calls, 1, "a decline is final");
    assert!(bed.sim.received(ALICE).is_empty());
}

#[test]
fn unknown_user_404_is_not_found() {
    let nobody = "sip:nobody@contoso.com";
    let bed = Bed::start(
        users(&[(ALICE, Availability::Online)]),
        &Spec {
            ops: &[ALICE, nobody],
            ..Spec::default()
        },
    );
    let a = bed.finished(bed.emit("Nobody", "normal"));
    assert_eq!(outcome(&a, ALICE).0, "delivered", "{a:#}");
    assert_eq!(
        outcome(&a, nobody),
        (
            "failed".into(),
            "no such user: 404 Not Found (not_found)".into(),
            1
        ),
        "{a:#}"
    );
    assert_eq!(
        bed.sim.counters().calls,
        2,
        "presence said unknown, so the host tried once"
    );
}

#[test]
fn busy_486_is_retried_then_delivered_or_dead_lettered() {
    let bed = Bed::start(
        users(&[(ALICE, Availability::Online), (BOB, Availability::Busy)]),
        &Spec {
            ops: &[ALICE, BOB],
            ..Spec::default()
        },
    );
    bed.sim.script(ALICE, [Outcome::sip(486)]);
    bed.sim.script(BOB, [Outcome::sip(486); 3]);
    let a = bed.finished(bed.emit("Busy", "normal"));
    assert_eq!(
        outcome(&a, ALICE),
        ("delivered".into(), String::new(), 2),
        "{a:#}"
    );
    assert_eq!(
        outcome(&a, BOB),
        (
            "failed".into(),
            "gave up after 3 attempts: failed_transient: 486 Busy Here (busy)".into(),
            3
        ),
        "{a:#}"
    );
    assert_eq!(bed.sim.received(ALICE).len(), 1);
    assert!(bed.sim.received(BOB).is_empty());
    let c = bed.sim.counters();
    // One key per recipient: each retry re-attempts the same message at the bridge.
    assert_eq!((c.sends, c.retries, c.calls), (2, 3, 5), "{c:?}");
}

#[test]
fn unavailable_480_is_offline_skipped_or_held_then_delivered() {
    let bed = Bed::start(users(&[(ALICE, Availability::Online)]), &Spec::default());
    bed.sim.script(ALICE, [Outcome::sip(480)]);
    let a = bed.finished(bed.emit("Unavailable", "normal"));
    assert_eq!(
        outcome(&a, ALICE),
        ("skipped".into(), "offline (sink reports offline: 480 Temporarily Unavailable (unavailable)); policy skip".into(), 1),
        "{a:#}"
    );
    assert!(bed.sim.received(ALICE).is_empty());
    drop(bed);

    // Under hold, the 480 holds the recipient; presence says online, so the next round sends
    // again under the same key and the bridge re-attempts the retryable recipient.
    let bed = Bed::start(
        users(&[(ALICE, Availability::Online)]),
        &Spec {
            offline: r#"{ policy = "hold", max_wait_secs = 60, then = "skip" }"#,
            ..Spec::default()
        },
    );
    bed.sim.script(ALICE, [Outcome::sip(480)]);
    let a = bed.finished(bed.emit("Unavailable", "normal"));
    assert_eq!(
        outcome(&a, ALICE),
        ("delivered".into(), String::new(), 2),
        "{a:#}"
    );
    assert_eq!(bed.sim.received(ALICE).len(), 1);
    let c = bed.sim.counters();
    assert_eq!((c.sends, c.retries, c.calls), (1, 1, 2), "{c:?}");
}

#[test]
fn timeout_408_is_retried_then_delivered_or_dead_lettered() {
    let bed = Bed::start(
        users(&[(ALICE, Availability::Online), (BOB, Availability::Online)]),
        &Spec {
            ops: &[ALICE, BOB],
            ..Spec::default()
        },
    );
    bed.sim.script(ALICE, [Outcome::sip(408)]);
    bed.sim.script(BOB, [Outcome::sip(408); 3]);
    let a = bed.finished(bed.emit("Timeout", "normal"));
    assert_eq!(
        outcome(&a, ALICE),
        ("delivered".into(), String::new(), 2),
        "{a:#}"
    );
    assert_eq!(
        outcome(&a, BOB),
        (
            "failed".into(),
            "gave up after 3 attempts: failed_transient: 408 Request Timeout (timeout)".into(),
            3
        ),
        "{a:#}"
    );
    assert_eq!(bed.sim.received(ALICE).len(), 1);
    assert!(bed.sim.received(BOB).is_empty());
}
