//! The sink's health follows the bridge's `/v1/health`, degraded included.

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{
    HealthState,
    kit::{CancellationToken, Sink as _},
};
use alertbridge_testbed::ucma_sim::{HealthStatus, SimConfig};

use super::{Rig, SECRET, new_sink};

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_bridge() {
    let rig = Rig::start(SimConfig::new(SECRET), "").await;
    let ok = rig.health_becomes(HealthState::OK).await;
    assert_eq!(ok.message, "endpoint sip:alerts@contoso.com Established");
    rig.sim.set_health(HealthStatus::Degraded);
    let degraded = rig.health_becomes(HealthState::DEGRADED).await;
    assert_eq!(
        degraded.message,
        "bridge degraded: application endpoint re-establishing; endpoint sip:alerts@contoso.com Reestablishing"
    );
    rig.sim.set_health(HealthStatus::Down);
    let down = rig.health_becomes(HealthState::FAILED).await;
    assert!(down.message.starts_with("bridge down"), "{down}");
    rig.sim.set_health(HealthStatus::Ok);
    rig.health_becomes(HealthState::OK).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_bridge_is_failed_health() {
    // A port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = format!(
        "endpoint = \"http://127.0.0.1:{port}\"\nsecret = \"{SECRET}\"\nhealth_interval_ms = 100\n"
    );
    let sink = Arc::new(new_sink(&config).expect("config"));
    assert_eq!(sink.health().state, HealthState::STARTING);
    let stop = CancellationToken::new();
    let run = tokio::spawn(Arc::clone(&sink).run(stop.clone()));
    let mut health = sink.health();
    for _ in 0..100 {
        if health.state == HealthState::FAILED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        health = sink.health();
    }
    assert_eq!(health.state, HealthState::FAILED, "{health}");
    assert!(health.message.starts_with("bridge unreachable"), "{health}");
    stop.cancel();
    run.await
        .expect("join")
        .expect("run ends cleanly on shutdown");
}
