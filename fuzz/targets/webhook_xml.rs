//! Fuzz target `webhook_xml`: `POST /api/v1/alerts` with an XML body — our `<alert>` document or
//! `<alerts>`, in the encoding named by the `charset` parameter, a byte order mark or the XML
//! declaration (the kit's alert format parser, plugin-api/src/kit/format/xml.rs, as
//! plugins/webhook/src/routes.rs calls it).
//!
//! Input: one control byte choosing the `charset` parameter (none, or one of a few names, some
//! wrong), then the request body.

use alertbridge_webhook::payload::{limits, xml};

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
    match xml::parse(body, charset, &limits(1 << 20)) {
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
