//! Fuzz target `ucwa`: what a UCWA server (or something posing as one) answers
//! (plugins/ucwa/src/protocol): autodiscover documents, the `WWW-Authenticate: MsRtcOAuth`
//! challenge, the token, the application resource, presence, event channel pages, error bodies
//! and the 403 token-rejection headers.
//!
//! Input: one control byte choosing which answer the bytes are, then the bytes (header values
//! are one per line).

use alertbridge_ucwa::protocol::{application, discover, events, link, parse_error_body};

pub fn run(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    match control % 8 {
        0 => {
            if let Ok(Some(d)) = discover::parse_discovery(body) {
                let _ = format!("{d:?}");
            }
        }
        1 => {
            if let Ok(Ok(grant)) = discover::parse_token(body) {
                assert!(grant.authorization().ends_with(&grant.access_token));
            }
        }
        2 => {
            let _ = application::parse_application(body);
        }
        3 => {
            if let Ok(availability) = application::parse_presence(body) {
                let _ = application::presence_state(&availability);
            }
        }
        4 => {
            if let Ok(page) = events::parse_events(body) {
                for e in &page.events {
                    let _ = e.property("subject");
                    let _ = e.resource_link("self");
                    if let Some(reason) = &e.reason {
                        let _ = events::classify_failure(reason);
                    }
                }
            }
        }
        5 => {
            let _ = parse_error_body(body);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
                let _ = link(&v, "self");
            }
        }
        6 => {
            let text = String::from_utf8_lossy(body);
            if let Some(c) = discover::parse_challenge(text.lines()) {
                let _ = c.offers_password();
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let mut lines = text.lines();
            let diagnostics = lines.next();
            let _ = discover::is_invalid_token(lines, diagnostics);
        }
    }
}
