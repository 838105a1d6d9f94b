//! The sink against the in-process UCWA simulator: presence, delivery outcomes per recipient,
//! content intact, and the application deleted on shutdown.

mod common;

use alertbridge_plugin_api::{DeliveryStatus, HealthState, PresenceState, Severity, kit::Sink};
use alertbridge_testbed::ucwa_sim::Behaviour;
use common::{message, simulator, start_sink};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_users_get_subject_and_body_intact_and_offline_ones_are_reported() {
    let sim = simulator(|_| {}).await;
    let running = start_sink(&sim.discover_url(), "");

    let presence = running
        .sink
        .presence(vec![
            "sip:alice@contoso.com".into(),
            "sip:bob@contoso.com".into(),
            "sip:nobody@contoso.com".into(),
        ])
        .await
        .unwrap();
    let states: Vec<PresenceState> = presence.iter().map(|p| p.state).collect();
    assert_eq!(
        states,
        [
            PresenceState::AVAILABLE,
            PresenceState::OFFLINE,
            PresenceState::UNKNOWN
        ]
    );

    let subject = "Disk <full> on db01 — “ü”";
    let body = "/var is at 98% & rising\n<b>not markup</b> +1 ✓";
    let mut m = message(
        subject,
        body,
        &[
            "sip:alice@contoso.com",
            "sip:bob@contoso.com",
            "sip:carol@contoso.com",
        ],
    );
    m.severity = Severity::CRITICAL;
    let results = running.sink.deliver(m).await.unwrap();
    let statuses: Vec<DeliveryStatus> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::DELIVERED,
            DeliveryStatus::OFFLINE,
            DeliveryStatus::DELIVERED
        ],
        "{results:?}"
    );
    assert!(
        results[1].detail.contains("TemporarilyUnavailable"),
        "{}",
        results[1].detail
    );

    for user in ["alice@contoso.com", "carol@contoso.com"] {
        let received = sim.received(user);
        assert_eq!(received.len(), 1, "{user}: {received:?}");
        assert_eq!(received[0].subject, subject);
        assert_eq!(received[0].text, body);
        assert_eq!(received[0].content_type, "text/plain");
        assert_eq!(received[0].importance, "Urgent");
        assert_eq!(received[0].from, "sip:alerts@contoso.com");
    }
    assert!(sim.received("bob@contoso.com").is_empty());
    assert_eq!(
        sim.stats().conversations,
        2,
        "the delivered conversations are kept open for replies"
    );
    assert_eq!(running.sink.health().state, HealthState::OK);

    running.stop().await;
    assert_eq!(
        sim.stats().applications,
        0,
        "the application is deleted on shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_many_users_goes_through_batch_requests_or_single_reads() {
    let sim = simulator(|_| {}).await;
    sim.set_availability("dave@contoso.com", "DoNotDisturb");
    let mut users: Vec<String> = (0..114)
        .map(|i| format!("sip:ghost{i}@contoso.com"))
        .collect();
    users.extend(
        ["alice", "bob", "carol", "dave", "erin", "alerts"].map(|u| format!("sip:{u}@contoso.com")),
    );
    let expected = [
        PresenceState::AVAILABLE,
        PresenceState::OFFLINE,
        PresenceState::BUSY,
        PresenceState::DO_NOT_DISTURB,
        PresenceState::AVAILABLE,
        PresenceState::AVAILABLE,
    ];
    for (extra, batches) in [("", 3), ("presence_batch = false\n", 0)] {
        let before = sim.stats().batches;
        let running = start_sink(&sim.discover_url(), extra);
        let presence = running.sink.presence(users.clone()).await.unwrap();
        assert_eq!(presence.len(), 120);
        assert!(
            presence[..114]
                .iter()
                .all(|p| p.state == PresenceState::UNKNOWN && p.detail == "no such user"),
            "{presence:?}"
        );
        let known: Vec<PresenceState> = presence[114..].iter().map(|p| p.state).collect();
        assert_eq!(known, expected, "{extra}");
        assert_eq!(presence[117].user, "sip:dave@contoso.com");
        assert_eq!(sim.stats().batches - before, batches, "{extra}");
        running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_format_escapes_subject_and_body() {
    let sim = simulator(|_| {}).await;
    let running = start_sink(&sim.discover_url(), "message_format = \"html\"\n");
    let results = running
        .sink
        .deliver(message(
            "a < b & c",
            "line 1\n<script>x</script>",
            &["alice@contoso.com"],
        ))
        .await
        .unwrap();
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
    let received = sim.received("alice@contoso.com");
    assert_eq!(received[0].content_type, "text/html");
    assert_eq!(
        received[0].text,
        "<b>a &lt; b &amp; c</b><br/>line 1<br/>&lt;script&gt;x&lt;/script&gt;"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_mode_sends_the_text_once_connected() {
    let sim = simulator(|_| {}).await;
    let running = start_sink(
        &sim.discover_url(),
        "first_message = \"send_message\"\nmessage_format = \"html\"\nconversation_keep_secs = 0\n",
    );
    let results = running
        .sink
        .deliver(message(
            "Über <x>",
            "zwei\nZeilen & mehr",
            &["alice@contoso.com", "bob@contoso.com"],
        ))
        .await
        .unwrap();
    let statuses: Vec<DeliveryStatus> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [DeliveryStatus::DELIVERED, DeliveryStatus::OFFLINE],
        "{results:?}"
    );
    assert_eq!(
        results[0].detail, "",
        "the message completion event was seen"
    );
    let received = sim.received("alice@contoso.com");
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].subject, "Über <x>");
    assert_eq!(received[0].content_type, "text/html");
    assert_eq!(
        received[0].text,
        "<b>Über &lt;x&gt;</b><br/>zwei<br/>Zeilen &amp; mehr"
    );
    assert_eq!(
        sim.stats().conversations,
        0,
        "conversation_keep_secs = 0 stops every conversation"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_ignored_and_unknown_recipients_are_reported_with_their_reason() {
    let sim = simulator(|c| c.invitation_timeout = std::time::Duration::from_millis(500)).await;
    sim.set_behaviour("dave@contoso.com", Behaviour::decline());
    sim.set_behaviour("erin@contoso.com", Behaviour::Ignore);
    let running = start_sink(&sim.discover_url(), "");
    let results = running
        .sink
        .deliver(message(
            "s",
            "b",
            &[
                "dave@contoso.com",
                "erin@contoso.com",
                "sip:nobody@contoso.com",
                "alice@contoso.com",
            ],
        ))
        .await
        .unwrap();
    let statuses: Vec<DeliveryStatus> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::DECLINED,
            DeliveryStatus::DECLINED,
            DeliveryStatus::NOT_FOUND,
            DeliveryStatus::DELIVERED
        ],
        "{results:?}"
    );
    assert_eq!(
        results[0].detail,
        "RemoteFailure/Declined: Your invitation was declined."
    );
    assert!(
        results[1].detail.starts_with("RemoteFailure/Timeout"),
        "{}",
        results[1].detail
    );
    assert!(
        results[2].detail.contains("DestinationNotFound"),
        "{}",
        results[2].detail
    );
    assert!(sim.received("dave@contoso.com").is_empty());
    assert!(sim.received("erin@contoso.com").is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_requests_are_retried_after_back_off() {
    let sim = simulator(|c| c.throttle_first = 3).await;
    let running = start_sink(&sim.discover_url(), "");
    let results = running
        .sink
        .deliver(message("s", "after 429s", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
    assert_eq!(sim.received("alice@contoso.com")[0].text, "after 429s");
    running.stop().await;
}
