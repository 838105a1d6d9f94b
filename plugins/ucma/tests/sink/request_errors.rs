//! Request-level errors of the bridge (400, 401, 409, 413, 422, 429, 503, 504) as the host sees
//! them: each recipient's from its own request's answer (one error for the delivery only when
//! every request was refused alike); batches cut to the bridge's advertised limits; a failed
//! presence batch leaving its users out.

use std::time::Duration;

use alertbridge_plugin_api::{DeliveryStatus, ErrorKind, HealthState, kit::Sink as _};
use alertbridge_testbed::ucma_sim::{
    Availability, Fault, FaultAction, FaultTarget, HealthStatus, Limits, SimConfig, Simulator,
};

use super::{Rig, SECRET, message, new_sink, sink_config};

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";
const CAROL: &str = "sip:carol@contoso.com";
const DAVE: &str = "sip:dave@contoso.com";
const ERIN: &str = "sip:erin@contoso.com";

fn bridge() -> SimConfig {
    SimConfig::new(SECRET)
        .user(ALICE, Availability::Online)
        .user(BOB, Availability::Online)
        .user(CAROL, Availability::Online)
}

fn status_fault(target: FaultTarget, status: u16, retry_after_s: Option<u64>) -> Fault {
    Fault {
        target,
        action: FaultAction::Status {
            status,
            retry_after_s,
        },
        count: 1,
        recipient: None,
        code: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_secret_is_a_permanent_error_and_failed_health() {
    let mut config = bridge();
    config.secret = "a-different-secret-0123".into();
    let rig = Rig::start(config, "").await;
    let e = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect_err("401");
    assert_eq!(e.kind, ErrorKind::PERMANENT);
    assert!(e.message.contains("401 unauthorized"), "{}", e.message);
    let health = rig.health_becomes(HealthState::FAILED).await;
    assert!(health.message.contains("credentials"), "{health}");
    assert!(rig.sim.received(ALICE).is_empty());
    assert!(rig.sim.counters().unauthorized >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_401_fails_the_delivery_permanently() {
    let rig = Rig::start(bridge(), "").await;
    rig.sim
        .inject(status_fault(FaultTarget::Messages, 401, None));
    let e = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect_err("401");
    assert_eq!((e.kind, e.retry_after), (ErrorKind::PERMANENT, None));
    assert!(rig.sim.received(ALICE).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_reused_with_a_different_body_is_a_conflict_and_sends_nothing() {
    // Same instance name, alert and recipients, but the operator changed send_timeout_ms
    // between attempts: the retry's body differs under the same key.
    let rig = Rig::start(bridge(), "").await;
    let results = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect("first send");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED);
    let changed = new_sink(&sink_config(&rig.sim, "send_timeout_ms = 20000")).expect("config");
    let e = changed
        .deliver(message(1, &[ALICE]))
        .await
        .expect_err("409");
    assert_eq!(e.kind, ErrorKind::PERMANENT);
    assert!(
        e.message.contains("409 idempotency_conflict"),
        "{}",
        e.message
    );
    assert_eq!(rig.sim.received(ALICE).len(), 1);
    assert_eq!(rig.sim.counters().conflicts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_are_cut_to_the_bridges_advertised_limits() {
    let mut config = bridge();
    config.limits = Limits {
        max_presence_targets: 2,
        max_recipients: 2,
        ..Limits::default()
    };
    config = config.user(DAVE, Availability::Offline);
    let rig = Rig::start(
        config,
        "max_recipients_per_message = 3\npresence_batch_size = 3",
    )
    .await;
    // No health poll needed first: the sink asks for the limits before its first batch.
    let users = vec![
        ALICE.to_owned(),
        BOB.to_owned(),
        CAROL.to_owned(),
        DAVE.to_owned(),
    ];
    let presence = rig.sink.presence(users).await.expect("presence");
    assert_eq!(presence.len(), 4, "{presence:?}");
    assert_eq!(rig.sim.counters().presence_queries, 2, "4 users, 2 a query");
    let results = rig
        .sink
        .deliver(message(1, &[ALICE, BOB, CAROL]))
        .await
        .expect("deliver");
    assert!(
        results
            .iter()
            .all(|r| r.status == DeliveryStatus::DELIVERED),
        "{results:?}"
    );
    assert_eq!(rig.sim.counters().sends, 2, "3 recipients, 2 a send");
    for u in [ALICE, BOB, CAROL] {
        assert_eq!(rig.sim.received(u).len(), 1, "{u}");
    }
    let health = rig.health_becomes(HealthState::OK).await;
    assert!(
        health.message.contains(
            "presence queries of 2 (the bridge's max_presence_targets; presence_batch_size is 3)"
        ),
        "{health}"
    );
    assert_eq!(rig.sim.counters().unauthorized, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_lowered_between_polls_is_learnt_from_the_413() {
    let mut config = bridge();
    config.limits = Limits {
        max_presence_targets: 3,
        max_recipients: 3,
        ..Limits::default()
    };
    // A sink that does not poll: it learns the limits once, before its first batch.
    let sim = Simulator::start(config).await.expect("simulator");
    let sink = new_sink(&format!(
        "endpoint = \"{}\"\nsecret = \"{SECRET}\"\npresence_batch_size = 3\nmax_recipients_per_message = 3\n",
        sim.url()
    ))
    .expect("sink");
    assert_eq!(
        (sink.sizes().await.presence, sink.sizes().await.recipients),
        (3, 3)
    );
    sim.set_limits(Limits {
        max_presence_targets: 2,
        max_recipients: 2,
        ..Limits::default()
    });
    let users = vec![ALICE.to_owned(), BOB.to_owned(), CAROL.to_owned()];
    let presence = sink.presence(users).await.expect("presence");
    assert_eq!(presence.len(), 3, "{presence:?}");
    assert_eq!(
        sim.counters().presence_queries,
        3,
        "one refused query of 3, then queries of 2 and 1"
    );
    let results = sink
        .deliver(message(1, &[ALICE, BOB, CAROL]))
        .await
        .expect("deliver");
    assert!(
        results
            .iter()
            .all(|r| r.status == DeliveryStatus::DELIVERED),
        "{results:?}"
    );
    assert_eq!(sim.counters().sends, 2, "the refused send stored nothing");
    for u in [ALICE, BOB, CAROL] {
        assert_eq!(sim.received(u).len(), 1, "{u}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_request_error_stays_with_its_own_recipients() {
    let rig = Rig::start(
        bridge()
            .user(DAVE, Availability::Online)
            .user(ERIN, Availability::Online),
        "",
    )
    .await;
    let faults = [
        (ALICE, 409, "idempotency_conflict"),
        (BOB, 422, "unprocessable"),
        (CAROL, 413, "payload_too_large"),
        (DAVE, 400, "invalid_request"),
        (ERIN, 504, "upstream_timeout"),
    ];
    for (user, status, code) in faults {
        rig.sim.inject(
            Fault::status(FaultTarget::Messages, status, None)
                .for_recipient(user)
                .code(code),
        );
    }
    let results = rig
        .sink
        .deliver(message(1, &[ALICE, BOB, CAROL, DAVE, ERIN]))
        .await
        .expect("per-recipient results, not one error");
    let got: Vec<_> = results
        .iter()
        .map(|r| (r.user.as_str(), r.status, r.detail.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                ALICE,
                DeliveryStatus::FAILED_PERMANENT,
                "bridge answered 409 idempotency_conflict: injected fault"
            ),
            (
                BOB,
                DeliveryStatus::FAILED_PERMANENT,
                "bridge answered 422 unprocessable: injected fault"
            ),
            (
                CAROL,
                DeliveryStatus::FAILED_PERMANENT,
                "bridge answered 413 payload_too_large: injected fault"
            ),
            (
                DAVE,
                DeliveryStatus::FAILED_PERMANENT,
                "bridge answered 400 invalid_request: injected fault"
            ),
            (
                ERIN,
                DeliveryStatus::FAILED_TRANSIENT,
                "bridge answered 504 upstream_timeout: injected fault"
            ),
        ]
    );
    // The 504 recipient's retry goes out and reaches her.
    let again = rig.sink.deliver(message(1, &[ERIN])).await.expect("retry");
    assert_eq!(again[0].status, DeliveryStatus::DELIVERED, "{again:?}");
    assert_eq!(rig.sim.received(ERIN).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_presence_batch_leaves_its_users_out() {
    let mut config = bridge().user(DAVE, Availability::Offline);
    config.limits = Limits {
        max_presence_targets: 2,
        ..Limits::default()
    };
    let rig = Rig::start(config, "").await;
    // The query naming CAROL (batch CAROL, DAVE) times out at the bridge.
    rig.sim
        .inject(Fault::status(FaultTarget::Presence, 504, None).for_recipient(CAROL));
    let users = vec![
        ALICE.to_owned(),
        BOB.to_owned(),
        CAROL.to_owned(),
        DAVE.to_owned(),
    ];
    let presence = rig.sink.presence(users).await.expect("partial answer");
    let got: Vec<_> = presence.iter().map(|p| p.user.as_str()).collect();
    assert_eq!(
        got,
        [ALICE, BOB],
        "CAROL and DAVE are unknown, not reported"
    );
    // Every batch failing is the call's error.
    rig.sim
        .inject(Fault::status(FaultTarget::Presence, 504, None).times(2));
    let e = rig
        .sink
        .presence(vec![ALICE.to_owned(), CAROL.to_owned(), DAVE.to_owned()])
        .await
        .expect_err("no answer at all");
    assert_eq!(e.kind, ErrorKind::TRANSIENT, "{}", e.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_429_carries_retry_after() {
    let rig = Rig::start(bridge(), "").await;
    rig.sim
        .inject(status_fault(FaultTarget::Messages, 429, Some(7)));
    let e = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect_err("429");
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::TRANSIENT, Some(Duration::from_secs(7)))
    );
    assert!(e.message.contains("429 rate_limited"), "{}", e.message);

    // With two requests, only the limited one's recipient fails, with the advice.
    rig.sim
        .inject(status_fault(FaultTarget::Messages, 429, Some(7)));
    let results = rig
        .sink
        .deliver(message(2, &[ALICE, BOB]))
        .await
        .expect("partial");
    let failed: Vec<_> = results
        .iter()
        .filter(|r| r.status == DeliveryStatus::FAILED_TRANSIENT)
        .collect();
    assert_eq!(failed.len(), 1, "{results:?}");
    assert_eq!(failed[0].retry_after, Some(Duration::from_secs(7)));
    assert_eq!(
        results
            .iter()
            .filter(|r| r.status == DeliveryStatus::DELIVERED)
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_unavailable_503_carries_retry_after() {
    let rig = Rig::start(bridge(), "").await;
    rig.sim
        .inject(status_fault(FaultTarget::Messages, 503, Some(5)));
    let e = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect_err("503");
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::TRANSIENT, Some(Duration::from_secs(5)))
    );
    assert!(
        e.message.contains("503 endpoint_unavailable"),
        "{}",
        e.message
    );
    assert!(rig.sim.received(ALICE).is_empty());

    // A bridge that is down refuses presence the same way.
    rig.sim.set_health(HealthStatus::Down);
    let e = rig
        .sink
        .presence(vec![ALICE.to_owned()])
        .await
        .expect_err("503");
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::TRANSIENT, Some(Duration::from_secs(5)))
    );
    // And once it is back, the same delivery goes through.
    rig.sim.set_health(HealthStatus::Ok);
    let results = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect("deliver");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED);
}
