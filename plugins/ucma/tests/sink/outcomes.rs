//! Each per-recipient outcome of the bridge as a delivery status, presence in batches, page
//! mode, and a send that outlasts its wait.

use std::time::{Duration, Instant};

use alertbridge_plugin_api::{DeliveryStatus, PresenceState, kit::Sink as _};
use alertbridge_testbed::ucma_sim::{Availability, Outcome, SimConfig};

use super::{Rig, SECRET, message};

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";
const CAROL: &str = "sip:carol@contoso.com";
const DAVE: &str = "sip:dave@contoso.com";
const ERIN: &str = "sip:erin@contoso.com";
const FRANK: &str = "sip:frank@contoso.com";
const GRACE: &str = "sip:grace@contoso.com";
const NOBODY: &str = "sip:nobody@contoso.com";

fn bridge() -> SimConfig {
    [ALICE, CAROL, DAVE, ERIN, FRANK, GRACE]
        .into_iter()
        .fold(SimConfig::new(SECRET), |c, u| {
            c.user(u, Availability::Online)
        })
        .user(BOB, Availability::Offline)
}

/// Delivers to every kind of recipient and checks each one's status and detail.
async fn every_outcome(extra: &str) {
    let rig = Rig::start(bridge(), extra).await;
    rig.sim.script(CAROL, [Outcome::sip(486)]);
    rig.sim.script(DAVE, [Outcome::sip(603)]);
    rig.sim.script(ERIN, [Outcome::sip(408)]);
    rig.sim.script(FRANK, [Outcome::sip(403)]);
    rig.sim.script(GRACE, [Outcome::sip(404)]);
    let to = [
        ALICE,
        BOB,
        CAROL,
        DAVE,
        ERIN,
        FRANK,
        GRACE,
        NOBODY,
        "alice@contoso.com",
    ];
    let results = rig.sink.deliver(message(1, &to)).await.expect("deliver");
    let got: Vec<_> = results
        .iter()
        .map(|r| (r.user.as_str(), r.status, r.detail.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (ALICE, DeliveryStatus::DELIVERED, ""),
            (
                BOB,
                DeliveryStatus::OFFLINE,
                "480 Temporarily Unavailable (unavailable)"
            ),
            (
                CAROL,
                DeliveryStatus::FAILED_TRANSIENT,
                "486 Busy Here (busy)"
            ),
            (DAVE, DeliveryStatus::DECLINED, "603 Decline (declined)"),
            (
                ERIN,
                DeliveryStatus::FAILED_TRANSIENT,
                "408 Request Timeout (timeout)"
            ),
            (
                FRANK,
                DeliveryStatus::FAILED_PERMANENT,
                "403 Forbidden (forbidden)"
            ),
            (
                GRACE,
                DeliveryStatus::NOT_FOUND,
                "404 Not Found (not_found)"
            ),
            (
                NOBODY,
                DeliveryStatus::NOT_FOUND,
                "404 Not Found (not_found)"
            ),
            (
                "alice@contoso.com",
                DeliveryStatus::FAILED_PERMANENT,
                "not a sip:user@host URI (invalid_uri)"
            ),
        ]
    );
    let inbox = rig.sim.received(ALICE);
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0].body, "Disk full on db01\n/var is at 98%");
    assert_eq!(
        (inbox[0].importance.as_str(), inbox[0].mode.as_str()),
        ("urgent", "session")
    );
    for user in [BOB, CAROL, DAVE, ERIN, FRANK, GRACE] {
        assert!(rig.sim.received(user).is_empty(), "{user} received an IM");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_outcome_with_one_request_per_recipient() {
    every_outcome("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_outcome_with_recipients_batched() {
    every_outcome("max_recipients_per_message = 4").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_per_recipient_by_default_and_batches_when_asked() {
    let rig = Rig::start(bridge(), "").await;
    rig.sink
        .deliver(message(1, &[ALICE, CAROL, DAVE]))
        .await
        .expect("deliver");
    assert_eq!(rig.sim.counters().sends, 3);
    let rig = Rig::start(bridge(), "max_recipients_per_message = 2").await;
    rig.sink
        .deliver(message(1, &[ALICE, CAROL, DAVE]))
        .await
        .expect("deliver");
    assert_eq!(rig.sim.counters().sends, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_is_queried_in_batches() {
    let rig = Rig::start(bridge(), "presence_batch_size = 3").await;
    rig.sim.set_presence(CAROL, Availability::Busy);
    rig.sim.set_presence(DAVE, Availability::DoNotDisturb);
    rig.sim.set_presence(ERIN, Availability::Away);
    let users = [ALICE, BOB, CAROL, DAVE, ERIN, FRANK, NOBODY];
    let presence = rig
        .sink
        .presence(users.iter().map(|u| (*u).to_owned()).collect())
        .await
        .expect("presence");
    assert_eq!(
        rig.sim.counters().presence_queries,
        3,
        "7 users in batches of 3"
    );
    let got: Vec<_> = presence
        .iter()
        .map(|p| (p.user.as_str(), p.state))
        .collect();
    assert_eq!(
        got,
        [
            (ALICE, PresenceState::AVAILABLE),
            (BOB, PresenceState::OFFLINE),
            (CAROL, PresenceState::BUSY),
            (DAVE, PresenceState::DO_NOT_DISTURB),
            (ERIN, PresenceState::AWAY),
            (FRANK, PresenceState::AVAILABLE),
            (NOBODY, PresenceState::UNKNOWN),
        ]
    );
    assert_eq!(presence[6].detail, "404 Not Found (not_found)");
    assert_eq!(presence[2].detail, "Busy (busy)");
}

#[tokio::test(flavor = "multi_thread")]
async fn page_mode_reports_sent_as_delivered_unconfirmed() {
    let rig = Rig::start(bridge(), "mode = \"page\"").await;
    let results = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect("deliver");
    assert_eq!(
        (results[0].status, results[0].detail.as_str()),
        (
            DeliveryStatus::DELIVERED,
            "page mode: sent, receipt not confirmed"
        )
    );
    assert_eq!(rig.sim.received(ALICE)[0].mode, "page");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_still_running_after_its_wait_is_polled_to_the_end() {
    let rig = Rig::start(
        bridge(),
        "send_timeout_ms = 1000\nrequest_timeout_ms = 10000",
    )
    .await;
    rig.sim.script(ALICE, [Outcome::delayed(200, 1800)]);
    let started = Instant::now();
    let results = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect("deliver");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
    assert!(started.elapsed() >= Duration::from_millis(1800));
    assert_eq!(rig.sim.received(ALICE).len(), 1);
    assert_eq!(rig.sim.counters().sends, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_spellings_of_one_uri_are_never_duplicates_in_a_request() {
    // The bridge compares URIs ignoring ASCII case (§4.2) and refuses duplicates with 422.
    let rig = Rig::start(bridge(), "max_recipients_per_message = 5").await;
    let shouted = "sip:ALICE@contoso.com";
    let presence = rig
        .sink
        .presence(vec![shouted.to_owned(), ALICE.to_owned()])
        .await
        .expect("one target for both spellings");
    let got: Vec<_> = presence
        .iter()
        .map(|p| (p.user.as_str(), p.state))
        .collect();
    assert_eq!(
        got,
        [
            (shouted, PresenceState::AVAILABLE),
            (ALICE, PresenceState::AVAILABLE)
        ]
    );
    assert_eq!(rig.sim.counters().presence_queries, 1);
    let results = rig
        .sink
        .deliver(message(1, &[shouted, ALICE]))
        .await
        .expect("no 422");
    assert!(
        results
            .iter()
            .all(|r| r.status == DeliveryStatus::DELIVERED),
        "{results:?}"
    );
    assert_eq!(
        rig.sim.counters().sends,
        2,
        "the two spellings went in separate requests"
    );
}
