//! Fuzz target `webhook_json`: `POST /api/v1/alerts` with a JSON body — our alert as JSON, one
//! object or an array (the kit's alert format parser, plugin-api/src/kit/format/json.rs, as
//! plugins/webhook/src/routes.rs calls it).
//!
//! Input: the request body.

use alertbridge_webhook::payload::{PayloadError, json, limits};

pub fn run(data: &[u8]) {
    match json::parse(data, &limits(1 << 20)) {
        Ok(alerts) => {
            for a in &alerts {
                assert!(
                    !a.subject.trim().is_empty(),
                    "an alert with an empty subject was taken"
                );
                assert!(a.dedup_key.as_deref() != Some(""));
            }
        }
        Err(e) => check_error(&e),
    }
}

/// The 400 answer names a place in the body: lines and columns count from 1.
pub fn check_error(e: &PayloadError) {
    let _ = e.to_string();
    match e {
        PayloadError::Syntax { line, column, .. } | PayloadError::Field { line, column, .. } => {
            assert!(*line >= 1 && *column >= 1, "position {line}:{column}");
        }
        _ => {}
    }
}
