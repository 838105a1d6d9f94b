//! The sink's health: what `/v1/health` (or its absence) means for alertbridge, and the loop
//! that polls it while the sink runs.

use std::sync::{Mutex, PoisonError};

use alertbridge_plugin_api::{Health, HealthState, error_chain};
use tracing::{info, warn};

use crate::{
    client::BridgeError,
    config::UcmaConfig,
    protocol::{HealthDoc, LimitsDoc, clip},
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
        Err(e @ BridgeError::Refused { status: 503, .. }) => {
            // A bridge that answers `down` with §6's error body instead of the health document.
            return Health::new(
                HealthState::FAILED,
                format!("bridge down: {}", error_chain(e)),
            );
        }
        Err(e) => {
            return Health::new(
                HealthState::FAILED,
                format!("bridge health check failed: {}", error_chain(e)),
            );
        }
    };
    let mut about = doc
        .endpoint
        .as_ref()
        .map(|e| format!("endpoint {} {}", clip(&e.uri), clip(&e.state)))
        .unwrap_or_default();
    if let Some(reason) = doc.reason.as_deref().filter(|r| !r.is_empty()) {
        about = if about.is_empty() {
            clip(reason)
        } else {
            format!("{}; {about}", clip(reason))
        };
    }
    match doc.status.as_str() {
        "ok" => match doc.limits.and_then(|l| under_limits(config, l)) {
            Some(note) if about.is_empty() => Health::new(HealthState::OK, note),
            Some(note) => Health::new(HealthState::OK, format!("{about}; {note}")),
            None => Health::new(HealthState::OK, about),
        },
        "degraded" => Health::new(HealthState::DEGRADED, format!("bridge degraded: {about}")),
        "down" => Health::new(HealthState::FAILED, format!("bridge down: {about}")),
        other => Health::new(
            HealthState::DEGRADED,
            format!("bridge reports unknown status `{}`: {about}", clip(other)),
        ),
    }
}

/// Where the bridge's advertised limits are below our configured batch sizes: the sink then
/// uses the bridge's (§8), and says so.
fn under_limits(config: &UcmaConfig, limits: LimitsDoc) -> Option<String> {
    let mut notes = Vec::new();
    if config.presence_batch_size > limits.max_presence_targets {
        notes.push(format!(
            "presence queries of {} (the bridge's max_presence_targets; presence_batch_size is {})",
            limits.max_presence_targets.max(1),
            config.presence_batch_size
        ));
    }
    if config.max_recipients_per_message > limits.max_recipients {
        notes.push(format!(
            "sends of {} recipients (the bridge's max_recipients; max_recipients_per_message is {})",
            limits.max_recipients.max(1),
            config.max_recipients_per_message
        ));
    }
    (!notes.is_empty()).then(|| format!("using {}", notes.join(" and ")))
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
    fn a_batch_over_the_bridge_limit_is_noted_not_degraded() {
        let h = assess(
            &doc(r#"{"status":"ok","limits":{"max_presence_targets":100,"max_recipients":100}}"#),
            &config(),
        );
        assert_eq!(h.state, HealthState::OK);
        assert_eq!(
            h.message,
            "using presence queries of 100 (the bridge's max_presence_targets; presence_batch_size is 200)"
        );
    }

    #[test]
    fn degraded_and_down_carry_the_bridges_reason() {
        let c = config();
        let h = assess(
            &doc(
                r#"{"status":"degraded","reason":"endpoint re-establishing","endpoint":{"uri":"sip:a@b","state":"Reestablishing"}}"#,
            ),
            &c,
        );
        assert_eq!(
            (h.state, h.message.as_str()),
            (
                HealthState::DEGRADED,
                "bridge degraded: endpoint re-establishing; endpoint sip:a@b Reestablishing"
            )
        );
        let error_body = Err(BridgeError::Refused {
            status: 503,
            code: "endpoint_unavailable".into(),
            message: "platform not started".into(),
            retryable: true,
            retry_after: None,
        });
        let h = assess(&error_body, &c);
        assert_eq!(
            (h.state, h.message.as_str()),
            (
                HealthState::FAILED,
                "bridge down: bridge answered 503 endpoint_unavailable: platform not started"
            )
        );
    }
}
