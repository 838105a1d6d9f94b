//! The `ucma` sink driven directly (no host, no plugin file) against the UCMA bridge simulator
//! of the test bed, in-process on loopback. Nothing external is needed.
//!
//! - `outcomes`: each per-recipient outcome, presence batches, page mode, polling.
//! - `request_errors`: 401, 409 idempotency conflict, 413, 429 and 503 with Retry-After.
//! - `idempotency`: a lost response retried reaches the user once; retryable failures retried.
//! - `health`: `/v1/health` ok / degraded / down as the sink's health.
//! - `config`: what the constructor refuses.
//! - `tls`: HTTPS with an internal CA and a client certificate.
//! - `hostile`: a captured signed send replayed under a fresh key; an endless answer.
//! - `inbound`: replies handed to the host and acknowledged after, answers in conversations.
//! - `inbound_hostile`: huge, malformed and flooding inbound answers from a hostile bridge.

mod config;
mod health;
mod hostile;
mod idempotency;
mod inbound;
mod inbound_hostile;
mod outcomes;
mod request_errors;
mod tls;

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{
    Health, HealthState, Message, PluginError, Severity,
    kit::{CancellationToken, Setup, Sink as _},
    testing::TestHost,
};
use alertbridge_testbed::ucma_sim::{SimConfig, SimHandle, Simulator};
use alertbridge_ucma::sink::UcmaSink;

/// The secret the simulator and the sink share.
pub const SECRET: &str = "0123456789abcdef-test";

/// A sink instance named `ocs` from this config text.
pub fn new_sink(config_toml: &str) -> Result<UcmaSink, PluginError> {
    new_sink_with(config_toml, &TestHost::new("ocs"))
}

/// A sink instance named `ocs` from this config text, with `host` as its host.
pub fn new_sink_with(config_toml: &str, host: &TestHost) -> Result<UcmaSink, PluginError> {
    UcmaSink::new(Setup {
        instance: "ocs".into(),
        kind: "ucma".into(),
        config_toml: config_toml.into(),
        host: host.host(),
    })
}

/// A running simulator and a running sink pointed at it.
pub struct Rig {
    pub sim: SimHandle,
    pub sink: Arc<UcmaSink>,
    stop: CancellationToken,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Rig {
    /// Starts `sim` and a sink with the shared secret, fast health polling, and `extra` config.
    pub async fn start(sim: SimConfig, extra: &str) -> Self {
        Self::start_with(sim, extra, &TestHost::new("ocs")).await
    }

    /// [`Rig::start`] with `host` as the sink's host.
    pub async fn start_with(sim: SimConfig, extra: &str, host: &TestHost) -> Self {
        let sim = Simulator::start(sim)
            .await
            .expect("start the UCMA simulator");
        let (sink, stop) = run_sink(&sink_config(&sim, extra), host);
        Self { sim, sink, stop }
    }

    /// Stops the sink and starts a new instance against the same bridge (a host restart).
    pub fn restart(&mut self, extra: &str, host: &TestHost) {
        self.stop.cancel();
        let (sink, stop) = run_sink(&sink_config(&self.sim, extra), host);
        (self.sink, self.stop) = (sink, stop);
    }

    /// Waits until the sink's health is in `state`, or panics with the last health seen.
    pub async fn health_becomes(&self, state: HealthState) -> Health {
        let mut last = self.sink.health();
        for _ in 0..100 {
            if last.state == state {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            last = self.sink.health();
        }
        panic!("health never became {state}; last: {last}");
    }
}

/// A running sink from `config` and the token that stops it.
pub fn run_sink(config: &str, host: &TestHost) -> (Arc<UcmaSink>, CancellationToken) {
    let sink = Arc::new(new_sink_with(config, host).expect("sink config"));
    let stop = CancellationToken::new();
    tokio::spawn(Arc::clone(&sink).run(stop.clone()));
    (sink, stop)
}

/// The config text of a sink for `sim`, plus `extra` lines.
pub fn sink_config(sim: &SimHandle, extra: &str) -> String {
    format!(
        "endpoint = \"{}\"\nsecret = \"{SECRET}\"\nhealth_interval_ms = 100\n{extra}",
        sim.url()
    )
}

/// A message of alert `alert_id` to `recipients`.
pub fn message(alert_id: u64, recipients: &[&str]) -> Message {
    Message {
        alert_id,
        attempt: 1,
        source: "monitoring".into(),
        subject: format!("Disk full on db{alert_id:02}"),
        body: "/var is at 98%".into(),
        severity: Severity::CRITICAL,
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        ..Message::default()
    }
}
