//! The sink's health: what `/v1/health` (or its absence) means for alertbridge, and the loop
//! that polls it while the sink runs.

use std::sync::{Mutex, PoisonError};

use alertbridge_plugin_api::{Health, HealthState, error_chain};
use tracing::{info, warn};

use crate::{
    client::BridgeError,
    config::UcmaConfig,
    protocol::{HealthDoc, LimitsDoc},
};

/// The last known health, shared between the poller and `Sink::health`.
#[derive(Debug)]
pub struct HealthCell(Mutex<Health>);

impl Default for HealthCell {
    fn default() -> Self {
        Self(Mutex::new(Health::new(
            HealthState::STARTING,
            "waiting for the first health check of the bridge",
        )))
    }
}

impl HealthCell {
    pub fn get(&self) -> Health {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stores `health`, logging when the state changes.
    pub fn set(&self, health: Health) {
        let mut current = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if current.state != health.state {
            if health.state == HealthState::OK {
                info!(state = %health.state, "Bridge healthy.");
            } else {
                warn!(state = %health.state, reason = %health.message, "Bridge not healthy.");
            }
        }
        *current = health;
    }
}

/// The health one poll of `/v1/health` stands for.
pub fn assess(answer: &Result<HealthDoc, BridgeError>, config: &UcmaConfig) -> Health {
    let doc = match answer {
        Ok(doc) => doc,
        Err(BridgeError::Refused { status: 401, .. }) => {
            return Health::new(
                HealthState::FAILED,
                "the bridge refused our credentials (401): check the secret",
            );
        }
        Err(e @ BridgeError::Transport { .. }) => {
            return Health::new(
                HealthState::FAILED,
                format!("bridge unreachable: {}", error_chain(e)),
            );
        }
        Err(e) => {
            return Health::new(
                HealthState::FAILED,
                format!("bridge health check failed: {}", error_chain(e)),
            );
        }
    };
    let endpoint = doc
        .endpoint
        .as_ref()
        .map(|e| format!("endpoint {} {}", e.uri, e.state))
        .unwrap_or_default();
    match doc.status.as_str() {
        "ok" => match doc.limits.and_then(|l| over_limits(config, l)) {
            Some(problem) => Health::new(HealthState::DEGRADED, problem),
            None => Health::new(HealthState::OK, endpoint),
        },
        "degraded" => Health::new(
            HealthState::DEGRADED,
            format!("bridge degraded: {endpoint}"),
        ),
        "down" => Health::new(HealthState::FAILED, format!("bridge down: {endpoint}")),
        other => Health::new(
            HealthState::DEGRADED,
            format!("bridge reports unknown status `{other}`: {endpoint}"),
        ),
    }
}

/// Which of our batch sizes the bridge would refuse with `413`, if any.
fn over_limits(config: &UcmaConfig, limits: LimitsDoc) -> Option<String> {
    if config.presence_batch_size > limits.max_presence_targets {
        return Some(format!(
            "presence_batch_size {} exceeds the bridge's max_presence_targets {}",
            config.presence_batch_size, limits.max_presence_targets
        ));
    }
    if config.max_recipients_per_message > limits.max_recipients {
        return Some(format!(
            "max_recipients_per_message {} exceeds the bridge's max_recipients {}",
            config.max_recipients_per_message, limits.max_recipients
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> UcmaConfig {
        toml::from_str("endpoint = \"http://127.0.0.1:1\"\nsecret = \"0123456789abcdef\"\npresence_batch_size = 200")
            .expect("config")
    }

    fn doc(json: &str) -> Result<HealthDoc, BridgeError> {
        Ok(serde_json::from_str(json).expect("health document"))
    }

    #[test]
    fn bridge_status_maps_to_health() {
        let c = config();
        let ok = assess(
            &doc(r#"{"status":"ok","endpoint":{"uri":"sip:a@b","state":"Established"}}"#),
            &c,
        );
        assert_eq!(
            (ok.state, ok.message.as_str()),
            (HealthState::OK, "endpoint sip:a@b Established")
        );
        assert_eq!(
            assess(&doc(r#"{"status":"degraded"}"#), &c).state,
            HealthState::DEGRADED
        );
        assert_eq!(
            assess(&doc(r#"{"status":"down"}"#), &c).state,
            HealthState::FAILED
        );
        let refused = Err(BridgeError::Refused {
            status: 401,
            code: "unauthorized".into(),
            message: String::new(),
            retryable: false,
            retry_after: None,
        });
        assert_eq!(assess(&refused, &c).state, HealthState::FAILED);
    }

    #[test]
    fn a_batch_over_the_bridge_limit_is_reported() {
        let h = assess(
            &doc(r#"{"status":"ok","limits":{"max_presence_targets":100,"max_recipients":100}}"#),
            &config(),
        );
        assert_eq!(h.state, HealthState::DEGRADED);
        assert!(
            h.message.contains("presence_batch_size 200"),
            "{}",
            h.message
        );
    }
}
