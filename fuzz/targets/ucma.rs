//! Fuzz target `ucma`: what a UCMA bridge (or something posing as one) answers
//! (plugins/ucma/src/protocol.rs): the presence answer, the message document with its
//! per-recipient results and errors, the health document and the request-level error body,
//! and their mappings to presence states and delivery results.
//!
//! Input: one control byte choosing which answer the bytes are, then the JSON body.

use alertbridge_ucma::protocol::{
    ErrorBody, HealthDoc, MAX_BRIDGE_TEXT_CHARS, MessageDoc, PresenceAnswer, clip, describe,
    presence_state, recipient_result,
};

/// A detail is at most two clipped texts (reason, code), each with a cut mark, and a few words.
const MAX_DETAIL_CHARS: usize = 2 * (MAX_BRIDGE_TEXT_CHARS + 1) + 64;

pub fn run(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    match control % 4 {
        0 => {
            if let Ok(answer) = serde_json::from_slice::<PresenceAnswer>(body) {
                for r in &answer.results {
                    let _ = presence_state(&r.availability, r.availability_value);
                    if let Some(e) = &r.error {
                        check_detail(&describe(e));
                    }
                }
            }
        }
        1 => {
            if let Ok(doc) = serde_json::from_slice::<MessageDoc>(body) {
                for r in &doc.recipients {
                    let result = recipient_result(r);
                    assert_eq!(result.user, r.to);
                    check_detail(&result.detail);
                }
            }
        }
        2 => {
            if let Ok(doc) = serde_json::from_slice::<HealthDoc>(body) {
                let _ = doc.reason.as_deref().map(clip);
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            assert!(clip(&text).chars().count() <= MAX_BRIDGE_TEXT_CHARS + 1);
            if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
                assert!(clip(&e.error.message).chars().count() <= MAX_BRIDGE_TEXT_CHARS + 1);
            }
        }
    }
}

/// Text from the bridge reaches records and logs only clipped.
fn check_detail(detail: &str) {
    assert!(
        detail.chars().count() <= MAX_DETAIL_CHARS,
        "a detail of {} characters from the bridge",
        detail.chars().count()
    );
}
