//! Fuzz target `mail_xml`: an `<alert xmlns="urn:alertbridge:alert:1">` document as a mail
//! carries it (the kit's alert format parser, plugin-api/src/kit/format/xml.rs, as
//! plugins/pop3/src/mail.rs calls it), with small limits so that nesting and size limits are
//! reached.
//!
//! Input: the document (invalid UTF-8 replaced, as a mail's decoded text would be).

use alertbridge_plugin_api::kit::format::{
    FormatError, Limits,
    xml::{looks_like_xml, parse},
};

const LIMITS: Limits = Limits {
    max_bytes: 16 << 10,
    max_depth: 8,
};

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = looks_like_xml(&text);
    for charset in [None, Some("utf-8")] {
        match parse(text.as_bytes(), charset, &LIMITS) {
            Ok(alerts) => {
                for alert in &alerts {
                    assert!(
                        !alert.subject.trim().is_empty(),
                        "an alert document without a subject was taken"
                    );
                    assert!(alert.groups.iter().chain(&alert.users).all(|n| !n.trim().is_empty()));
                }
            }
            Err(e @ (FormatError::Syntax { .. } | FormatError::Field { .. })) => {
                let (line, column) = e.position().expect("a position");
                assert!(line >= 1 && column >= 1, "position {line}:{column}");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}
