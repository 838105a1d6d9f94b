//! Fuzz target `alertmanager`: `POST /api/v1/alertmanager` — the Prometheus Alertmanager webhook
//! payload version 4 and Grafana's version 1 (plugins/webhook/src/payload/alertmanager.rs).
//!
//! Input: one control byte choosing the mapping config (resolved alerts ignored or forwarded,
//! the severity label, the default severity), then the request body.

use alertbridge_plugin_api::Severity;
use alertbridge_webhook::{
    config::{AlertmanagerConfig, Resolved},
    payload::alertmanager,
};

pub fn run(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let config = AlertmanagerConfig {
        resolved: if control & 1 == 0 {
            Resolved::Ignore
        } else {
            Resolved::Forward
        },
        severity_label: if control & 2 == 0 {
            "severity".to_owned()
        } else {
            "priority".to_owned()
        },
        default_severity: if control & 4 == 0 {
            Severity::NORMAL
        } else {
            Severity::CRITICAL
        },
    };
    match alertmanager::parse(body, &config) {
        Ok(alerts) => {
            assert!(
                !alerts.is_empty(),
                "a notification without alerts was taken"
            );
            for a in &alerts {
                match a {
                    Some(a) => {
                        assert!(!a.subject.is_empty(), "an alert without a subject");
                        assert!(a.dedup_key.is_some(), "an alert without a dedup key");
                    }
                    None => assert_eq!(
                        config.resolved,
                        Resolved::Ignore,
                        "an alert was dropped though resolved alerts are forwarded"
                    ),
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
