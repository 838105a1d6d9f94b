//! Fuzz target `mail_xml`: an `<alert xmlns="urn:alertbridge:alert:1">` document from a mail
//! (plugins/pop3/src/xml.rs), with small limits so that nesting and size limits are reached.
//!
//! Input: the document (invalid UTF-8 replaced).

use alertbridge_pop3::xml::{XmlLimits, looks_like_xml, parse_alert};

const LIMITS: XmlLimits = XmlLimits {
    max_bytes: 16 << 10,
    max_depth: 8,
};

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = looks_like_xml(&text);
    match parse_alert(&text, LIMITS) {
        Ok(Some(alert)) => {
            assert!(
                !alert.subject.is_empty(),
                "an alert document without a subject was taken"
            );
        }
        Ok(None) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
