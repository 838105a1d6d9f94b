//! Fuzz target `webhook_xml`: `POST /api/v1/alerts` with an XML body — our `<alert>` document or
//! `<alerts>`, in the encoding named by the `charset` parameter, a byte order mark or the XML
//! declaration (plugins/webhook/src/payload/xml.rs).
//!
//! Input: one control byte choosing the `charset` parameter (none, or one of a few names, some
//! wrong), then the request body.

use alertbridge_webhook::payload::xml;

const CHARSETS: [Option<&str>; 8] = [
    None,
    None,
    Some("utf-8"),
    Some("iso-8859-1"),
    Some("windows-1252"),
    Some("utf-16"),
    Some("\"UTF-16BE\""),
    Some("x-no-such-charset"),
];

pub fn run(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let charset = CHARSETS[usize::from(control) % CHARSETS.len()];
    match xml::parse_encoded(body, charset) {
        Ok(alerts) => {
            for a in &alerts {
                assert!(
                    !a.subject.trim().is_empty(),
                    "an alert with an empty subject was taken"
                );
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
