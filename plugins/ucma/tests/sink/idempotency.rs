//! Retries under the same idempotency key: a lost response, a retryable failure, and a retry
//! while the first send still runs.

use std::time::Duration;

use alertbridge_plugin_api::{DeliveryStatus, ErrorKind, Message, kit::Sink as _};
use alertbridge_testbed::ucma_sim::{
    Availability, Fault, FaultAction, FaultTarget, Outcome, SimConfig,
};

use super::{Rig, SECRET, message};

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";

fn bridge() -> SimConfig {
    SimConfig::new(SECRET)
        .user(ALICE, Availability::Online)
        .user(BOB, Availability::Offline)
}

fn attempt(n: u32, m: Message) -> Message {
    Message { attempt: n, ..m }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_whose_response_was_lost_reaches_the_user_once() {
    let rig = Rig::start(bridge(), "").await;
    rig.sim.inject(Fault {
        target: FaultTarget::Messages,
        action: FaultAction::DropAfterSend,
        count: 1,
        recipient: None,
        code: None,
    });
    let e = rig
        .sink
        .deliver(attempt(1, message(1, &[ALICE])))
        .await
        .expect_err("no answer");
    assert_eq!(e.kind, ErrorKind::TRANSIENT, "{}", e.message);
    assert!(e.message.contains("no answer"), "{}", e.message);
    assert_eq!(rig.sim.counters().dropped, 1);
    assert_eq!(
        rig.sim.received(ALICE).len(),
        1,
        "the bridge did send before the connection dropped"
    );

    let results = rig
        .sink
        .deliver(attempt(2, message(1, &[ALICE])))
        .await
        .expect("retry");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED);
    assert_eq!(
        rig.sim.received(ALICE).len(),
        1,
        "the retry must not send again"
    );
    let counters = rig.sim.counters();
    assert_eq!(
        (counters.sends, counters.replays, counters.calls),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retryable_failure_is_attempted_again_under_the_same_key() {
    let rig = Rig::start(bridge(), "max_recipients_per_message = 2").await;
    let results = rig
        .sink
        .deliver(message(1, &[ALICE, BOB]))
        .await
        .expect("deliver");
    assert_eq!(results[1].status, DeliveryStatus::OFFLINE);
    rig.sim.set_presence(BOB, Availability::Online);
    let results = rig
        .sink
        .deliver(attempt(2, message(1, &[ALICE, BOB])))
        .await
        .expect("retry");
    assert_eq!(
        results.iter().map(|r| r.status).collect::<Vec<_>>(),
        [DeliveryStatus::DELIVERED; 2]
    );
    assert_eq!(
        (rig.sim.received(ALICE).len(), rig.sim.received(BOB).len()),
        (1, 1)
    );
    let counters = rig.sim.counters();
    assert_eq!(
        (counters.sends, counters.retries, counters.calls),
        (1, 1, 3)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_while_the_first_send_runs_is_told_to_come_back() {
    let rig = Rig::start(bridge(), "").await;
    rig.sim.script(ALICE, [Outcome::delayed(200, 1500)]);
    let sink = std::sync::Arc::clone(&rig.sink);
    let first = tokio::spawn(async move { sink.deliver(message(1, &[ALICE])).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = rig
        .sink
        .deliver(attempt(2, message(1, &[ALICE])))
        .await
        .expect_err("409 in_progress");
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::TRANSIENT, Some(Duration::from_secs(1)))
    );
    assert!(e.message.contains("409 in_progress"), "{}", e.message);
    let results = first.await.expect("join").expect("first send");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED);
    assert_eq!(rig.sim.received(ALICE).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_requests_work_where_the_bridge_requires_them() {
    let mut config = bridge();
    config.require_signature = true;
    let rig = Rig::start(config, "sign_requests = true").await;
    let results = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect("signed send");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED);
    assert_eq!(rig.sim.counters().unauthorized, 0);

    let bearer_only = super::new_sink(&super::sink_config(&rig.sim, "")).expect("config");
    let e = bearer_only
        .deliver(message(2, &[ALICE]))
        .await
        .expect_err("401");
    assert!(e.message.contains("401 unauthorized"), "{}", e.message);
}
