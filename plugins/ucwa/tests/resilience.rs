//! The sink survives what a real deployment throws at it: tokens expiring mid-run, the server
//! restarting (application lost), a redirect hop and a second pool with tokens of its own.

mod common;

use std::time::Duration;

use alertbridge_plugin_api::{DeliveryStatus, HealthState, kit::Sink};
use alertbridge_testbed::ucwa_sim::SimConfig;
use common::{message, simulator, start_sink, users};

/// The sink's health once it is in `state` (waits up to 5 s).
async fn wait_health(
    running: &common::Running,
    state: HealthState,
) -> alertbridge_plugin_api::Health {
    let mut health = running.sink.health();
    for _ in 0..250 {
        if health.state == state {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        health = running.sink.health();
    }
    assert_eq!(health.state, state, "{health}");
    health
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_shows_in_health_and_fails_deliveries_transiently() {
    let sim = simulator(|_| {}).await;
    let url = sim.discover_url();
    let running = common::start_sink_as(
        &url,
        "alerts@contoso.com",
        "wrong",
        "request_timeout_secs = 1\n",
    );
    let health = wait_health(&running, HealthState::DEGRADED).await;
    assert!(health.message.contains("invalid_grant"), "{health}");
    let results = running
        .sink
        .deliver(message("s", "b", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(
        results[0].status,
        DeliveryStatus::FAILED_TRANSIENT,
        "{results:?}"
    );
    assert_eq!(results[0].detail, "not signed in to UCWA");
    assert!(sim.received("alice@contoso.com").is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_pget_is_reissued_and_events_keep_flowing() {
    let sim = simulator(|_| {}).await;
    let running = start_sink(&sim.discover_url(), "");
    let first = running
        .sink
        .deliver(message("one", "before", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(first[0].status, DeliveryStatus::DELIVERED, "{first:?}");

    // Another client of the same user P-GETs the sink's channel: the sink's parked P-GET is
    // released with 409 PGetReplaced.
    let apps = sim.applications();
    assert_eq!(apps.len(), 1);
    let token = reqwest::Client::new()
        .post(format!("{}/WebTicket/oauthtoken", sim.discover_url()))
        .body("grant_type=password&username=alerts%40contoso.com&password=s3cret%26pw")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The sink's P-GET may be between two requests (a busy machine): try until one is parked
    // and replaced.
    for _ in 0..50 {
        let rogue = reqwest::Client::new()
            .get(format!("{}{}/events?ack=0", sim.discover_url(), apps[0]))
            .bearer_auth(&token);
        assert_eq!(
            rogue.send().await.unwrap().status(),
            reqwest::StatusCode::OK,
            "a bad ack is answered with resync"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        if sim.stats().replaced_pgets > 0 {
            break;
        }
    }
    assert!(sim.stats().replaced_pgets >= 1);

    let second = running
        .sink
        .deliver(message("two", "after", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(second[0].status, DeliveryStatus::DELIVERED, "{second:?}");
    assert_eq!(sim.received("alice@contoso.com").len(), 2);
    assert_eq!(
        sim.stats().applications,
        1,
        "the same application carried on"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiring_mid_run_is_renewed_without_losing_a_message() {
    let sim = simulator(|_| {}).await;
    let running = start_sink(&sim.discover_url(), "");
    let first = running
        .sink
        .deliver(message("one", "before expiry", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(first[0].status, DeliveryStatus::DELIVERED, "{first:?}");
    sim.expire_tokens();
    assert_eq!(sim.stats().live_tokens, 0);
    let second = running
        .sink
        .deliver(message("two", "after expiry", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(second[0].status, DeliveryStatus::DELIVERED, "{second:?}");
    let texts: Vec<String> = sim
        .received("alice@contoso.com")
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["before expiry", "after expiry"]);
    assert_eq!(
        sim.stats().applications,
        1,
        "the application outlives the token"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_invalid_token_also_gets_a_new_token() {
    let sim = simulator(|c| c.invalid_token_403 = true).await;
    let running = start_sink(&sim.discover_url(), "");
    let first = running
        .sink
        .deliver(message("one", "first", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(first[0].status, DeliveryStatus::DELIVERED, "{first:?}");
    sim.expire_tokens();
    let second = running
        .sink
        .deliver(message("two", "second", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(second[0].status, DeliveryStatus::DELIVERED, "{second:?}");
    assert_eq!(sim.received("alice@contoso.com").len(), 2);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_renewed_before_they_expire() {
    let sim = simulator(|c| c.token_lifetime = Duration::from_secs(2)).await;
    let running = start_sink(&sim.discover_url(), "");
    let mut challenges = None;
    for i in 0..4 {
        let text = format!("message {i}");
        let results = running
            .sink
            .deliver(message("tick", &text, &["alice@contoso.com"]))
            .await
            .unwrap();
        assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
        // After sign-in no request is refused: every token is replaced before it runs out.
        let now = sim.stats().challenges;
        assert_eq!(
            *challenges.get_or_insert(now),
            now,
            "a request met a 401 after sign-in"
        );
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    assert_eq!(sim.received("alice@contoso.com").len(), 4);
    assert_eq!(sim.stats().applications, 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_restart_mid_run_loses_nothing() {
    let sim = simulator(|_| {}).await;
    let addr = sim.addr();
    let running = start_sink(&sim.discover_url(), "");
    let before = running
        .sink
        .deliver(message("before", "restart", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(before[0].status, DeliveryStatus::DELIVERED, "{before:?}");
    assert_eq!(sim.received("alice@contoso.com").len(), 1);
    sim.stop().await;
    let degraded = wait_health(&running, HealthState::DEGRADED).await;
    assert!(
        degraded.message.starts_with("event channel failing"),
        "{degraded}"
    );

    let config = SimConfig {
        listen: addr,
        users: users(),
        ..SimConfig::default()
    };
    let sim = alertbridge_testbed::ucwa_sim::Simulator::start(config)
        .await
        .expect("restart on the same port");
    let after = running
        .sink
        .deliver(message(
            "after",
            "restart",
            &["alice@contoso.com", "carol@contoso.com"],
        ))
        .await
        .unwrap();
    let statuses: Vec<DeliveryStatus> = after.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [DeliveryStatus::DELIVERED, DeliveryStatus::DELIVERED],
        "{after:?}"
    );
    assert_eq!(sim.received("alice@contoso.com")[0].subject, "after");
    assert_eq!(sim.received("carol@contoso.com")[0].subject, "after");
    assert_eq!(
        sim.stats().applications,
        1,
        "the sink re-created its application"
    );
    wait_health(&running, HealthState::OK).await;
    running.stop().await;
    assert_eq!(sim.stats().applications, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_hop_user_link_on_another_host_and_a_pool_with_its_own_tokens() {
    let sim = simulator(|c| {
        c.redirect_hop = true;
        c.user_hop = true;
        c.pool_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    assert!(sim.pool_addr().is_some());
    // The pool listens on another port of 127.0.0.1: another origin, so it must be listed.
    let running = start_sink(&sim.discover_url(), "trusted_hosts = [\"127.0.0.1\"]\n");
    let results = running
        .sink
        .deliver(message("pool", "two hosts", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
    assert_eq!(sim.received("alice@contoso.com")[0].text, "two hosts");
    assert_eq!(
        sim.stats().live_tokens,
        2,
        "one token from the web host, one from the pool"
    );
    running.stop().await;
}
