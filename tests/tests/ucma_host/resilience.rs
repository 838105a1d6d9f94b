//! Lost responses, health, signed requests, `check` (plain HTTP, secrets), a host killed
//! mid-send, and a fan-out to many recipients.

use super::*;

#[test]
fn dropped_response_is_retried_and_the_user_gets_the_im_once() {
    let bed = Bed::start(users(&[(ALICE, Availability::Online)]), &Spec::default());
    bed.sim.inject(Fault {
        target: FaultTarget::Messages,
        action: FaultAction::DropAfterSend,
        count: 1,
        recipient: None,
        code: None,
    });
    let a = bed.finished(bed.emit("Dropped", "normal"));
    assert_eq!(
        outcome(&a, ALICE),
        ("delivered".into(), String::new(), 2),
        "{a:#}"
    );
    assert_eq!(bed.sim.received(ALICE).len(), 1, "exactly one IM");
    let c = bed.sim.counters();
    assert_eq!(
        (c.dropped, c.sends, c.calls, c.replays),
        (1, 1, 1, 1),
        "the retry was answered from the idempotency store: {c:?}"
    );
}

#[test]
fn degraded_bridge_shows_in_healthz_and_still_delivers() {
    let bed = Bed::start(users(&[(ALICE, Availability::Online)]), &Spec::default());
    bed.healthz_when("ocs ok", |_, ocs| ocs["state"] == "ok");
    bed.sim.set_health(HealthStatus::Degraded);
    let h = bed.healthz_when("ocs degraded", |_, ocs| ocs["state"] == "degraded");
    assert_eq!(
        ocs(&h)["message"],
        "bridge degraded: application endpoint re-establishing; endpoint sip:alerts@contoso.com Reestablishing",
        "{h:#}"
    );
    assert_eq!(
        (h["status"].as_str(), h["failing"].as_array().map(Vec::len)),
        (Some("ok"), Some(0)),
        "degraded still delivers, so it is not failing: {h:#}"
    );
    let metrics = alertbridge_testbed::harness::get(&format!("{}/metrics", bed.host.admin))
        .unwrap_or_default();
    assert!(
        metrics.contains("alertbridge_instance_up{instance=\"ocs\"} 1"),
        "degraded is still up:\n{metrics}"
    );

    let a = bed.finished(bed.emit("Degraded", "normal"));
    assert_eq!(outcome(&a, ALICE).0, "delivered", "{a:#}");

    bed.sim.set_health(HealthStatus::Ok);
    bed.healthz_when("ocs ok again", |_, ocs| ocs["state"] == "ok");
}

#[test]
fn slow_call_outlasting_the_request_is_delivered_once() {
    // The bridge waits 1 s (`timeout_ms`), the sink polls until 2 s, the call takes 4 s.
    let delivery = DELIVERY.replace("max_attempts = 3", "max_attempts = 8");
    let timeouts = "presence_timeout_ms = 1000\nsend_timeout_ms = 1000\nrequest_timeout_ms = 2000";
    let bed = Bed::start(
        users(&[(ALICE, Availability::Online)]),
        &Spec {
            delivery: &delivery,
            timeouts,
            ..Spec::default()
        },
    );
    bed.sim.script(ALICE, [Outcome::delayed(200, 4000)]);
    let id = bed.emit("Slow", "normal");
    let first = bed.alert_when(id, "the first attempt", |a| {
        a["recipients"][0]["attempts"] == 1
    });
    assert_eq!(
        recipient(&first, ALICE)["reason"],
        "retrying in 1000 ms: failed_transient: still pending at the bridge",
        "{first:#}"
    );
    let a = bed.finished(id);
    let (state, _, attempts) = outcome(&a, ALICE);
    assert_eq!(state, "delivered", "{a:#}");
    assert!(
        attempts >= 3,
        "pending, then in progress, then the stored result: {a:#}"
    );
    assert_eq!(bed.sim.received(ALICE).len(), 1, "exactly one IM");
    let c = bed.sim.counters();
    assert!(
        c.sends == 1 && c.calls == 1 && c.in_progress >= 1 && c.replays == 1,
        "{c:?}"
    );
}

#[test]
fn signed_requests_reach_a_bridge_that_requires_signatures() {
    let sim = SimConfig {
        require_signature: true,
        ..users(&[(ALICE, Availability::Online)])
    };
    let bed = Bed::start(
        sim,
        &Spec {
            sink: "sign_requests = true",
            ..Spec::default()
        },
    );
    bed.healthz_when("ocs ok", |_, ocs| ocs["state"] == "ok");
    let a = bed.finished(bed.emit("Signed", "normal"));
    assert_eq!(outcome(&a, ALICE).0, "delivered", "{a:#}");
    assert_eq!(bed.sim.counters().unauthorized, 0);
    assert_eq!(bed.sim.received(ALICE).len(), 1);
}

#[test]
fn check_never_shows_the_ucma_secret() {
    use std::os::unix::ffi::OsStrExt as _;
    const PLANTED: &str = "PLANTED7f3a";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("secret.toml");
    let base = config(
        dir.path(),
        free_port(),
        free_port(),
        "http://127.0.0.1:9",
        &Spec::default(),
    );
    let secret_line = format!("secret = \"{SECRET}\"");
    let short_file = dir.path().join("short.secret");
    std::fs::write(&short_file, format!("{PLANTED}\n")).expect("write");
    // A secret that is wrong in each way, from each source: none may be echoed.
    let cases = [
        (
            "inline, wrong type",
            "secret = 98765432101".to_owned(),
            "98765432101",
        ),
        (
            "inline, too short",
            format!("secret = \"{PLANTED}\""),
            PLANTED,
        ),
        (
            "inline, with a space",
            format!("secret = \"{PLANTED} and more words\""),
            PLANTED,
        ),
        (
            "file, too short",
            format!("secret_file = {:?}", short_file.display().to_string()),
            PLANTED,
        ),
        (
            "env, not UTF-8",
            "secret_env = \"AB_UCMA_PLANTED\"".to_owned(),
            PLANTED,
        ),
    ];
    let mut bad_bytes = PLANTED.as_bytes().to_vec();
    bad_bytes.extend_from_slice(b"\xff\xfe-0123456789");
    for (what, line, planted) in cases {
        std::fs::write(&path, base.replace(&secret_line, &line)).expect("write config");
        let out = std::process::Command::new(bin_dir().join("alertbridge"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .env("AB_UCMA_PLANTED", std::ffi::OsStr::from_bytes(&bad_bytes))
            .output()
            .expect("run check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{what}: {text}");
        assert!(text.contains("instance `ocs`"), "{what}: {text}");
        assert!(text.contains("secret"), "{what}: names the key: {text}");
        assert!(!text.contains(planted), "{what}: the secret leaked: {text}");
    }
}

#[test]
fn check_refuses_plain_http_to_a_remote_bridge_unless_allowed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("remote.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).expect("write config");
        let out = std::process::Command::new(bin_dir().join("alertbridge"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let remote = config(
        dir.path(),
        free_port(),
        free_port(),
        "http://10.20.30.40:8080",
        &Spec::default(),
    );
    let (code, text) = check(&remote);
    assert_eq!(code, Some(1), "{text}");
    let line = remote
        .lines()
        .position(|l| l.starts_with("endpoint ="))
        .expect("endpoint line")
        + 1;
    let p = path.display();
    assert!(
        text.starts_with(&format!("{p}:{line}:1: instance `ocs`: plain http:// to `10.20.30.40`, which is not loopback, would expose the secret and the alerts;")),
        "{text}"
    );
    assert!(text.contains("allow_insecure_http = true"), "{text}");

    let allowed = config(
        dir.path(),
        free_port(),
        free_port(),
        "http://10.20.30.40:8080",
        &Spec {
            sink: "allow_insecure_http = true\nsign_requests = true",
            ..Spec::default()
        },
    );
    let (code, text) = check(&allowed);
    assert_eq!(code, Some(0), "allowed explicitly: {text}");
}

#[test]
fn host_killed_mid_send_resumes_without_a_second_im() {
    let mut bed = Bed::start(users(&[(ALICE, Availability::Online)]), &Spec::default());
    // The bridge takes 1.5 s to place the call; the host dies while it waits for the answer.
    bed.sim.script(ALICE, [Outcome::delayed(200, 1500)]);
    let id = bed.emit("Killed", "normal");
    wait_until("the send to reach the bridge", LONG, || {
        bed.sim.counters().sends == 1
    });
    bed.host.kill9();
    wait_until("the call to complete at the bridge", LONG, || {
        bed.sim.received(ALICE).len() == 1
    });

    bed.host.restart();
    let a = bed.finished(id);
    assert_eq!(
        outcome(&a, ALICE),
        ("delivered".into(), String::new(), 1),
        "the attempt cut by the kill was never recorded: {a:#}"
    );
    assert_eq!(
        bed.sim.received(ALICE).len(),
        1,
        "the resumed alert's send was answered from the idempotency store"
    );
    let c = bed.sim.counters();
    assert_eq!((c.sends, c.calls, c.replays), (1, 1, 1), "{c:?}");
}

#[test]
fn fan_out_batches_presence_and_reaches_every_recipient_once() {
    let many: Vec<String> = (0..120)
        .map(|i| format!("sip:user{i:03}@contoso.com"))
        .collect();
    let sim = many
        .iter()
        .enumerate()
        .fold(SimConfig::new(SECRET), |c, (i, u)| {
            c.user(
                u,
                if i % 10 == 9 {
                    Availability::Offline
                } else {
                    Availability::Online
                },
            )
        });
    let ops: Vec<&str> = many.iter().map(String::as_str).collect();
    let bed = Bed::start(
        sim,
        &Spec {
            sink: "presence_batch_size = 50",
            ops: &ops,
            ..Spec::default()
        },
    );
    let a = bed.finished(bed.emit("Fan-out", "high"));
    let (mut delivered, mut skipped) = (0, 0);
    for (i, u) in many.iter().enumerate() {
        let (state, ..) = outcome(&a, u);
        let offline = i % 10 == 9;
        assert_eq!(state, if offline { "skipped" } else { "delivered" }, "{u}");
        assert_eq!(bed.sim.received(u).len(), usize::from(!offline), "{u}");
        if offline {
            skipped += 1
        } else {
            delivered += 1
        }
    }
    assert_eq!((delivered, skipped), (108, 12));
    let c = bed.sim.counters();
    assert_eq!(
        (c.presence_queries, c.sends, c.calls),
        (3, 108, 108),
        "120 users in presence batches of 50, one send per recipient: {c:?}"
    );
}

#[test]
fn check_names_a_bad_offline_unknown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("unknown.toml");
    let text = config(
        dir.path(),
        free_port(),
        free_port(),
        "http://127.0.0.1:9",
        &Spec {
            offline: r#"{ policy = "skip", unknown = "maybe" }"#,
            ..Spec::default()
        },
    );
    std::fs::write(&path, &text).expect("write config");
    let out = std::process::Command::new(bin_dir().join("alertbridge"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("route `r`: offline.unknown: `maybe` is not `offline` or `deliver`"),
        "{stdout}"
    );
}
