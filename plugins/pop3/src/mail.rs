//! Mail → alert: an `<alert>` document in the body or in an `application/xml` / `text/xml` part
//! is read field by field; any other mail becomes an alert from its subject and best text body.
//! Sender, subject, Message-ID, date and chosen headers become `mail.*` labels for routes.
//!
//! Nothing here fails: a mail that cannot be read well still becomes an alert, carrying what
//! could be read and a `mail.problem` label saying what went wrong.

use std::borrow::Cow;

use alertbridge_plugin_api::{Alert, Severity};
use mail_parser::{
    Message, MessageParser, MimeHeaders as _, PartType, decoders::charsets::map::charset_decoder,
};

use crate::{
    html::html_to_text,
    xml::{self, XmlLimits},
};

/// Alert bodies are cut after this many characters (an IM is no place for a whole mail).
pub const MAX_BODY_CHARS: usize = 16 * 1024;

/// How mails are mapped.
#[derive(Debug, Clone, Default)]
pub struct MailOptions {
    /// Headers copied into labels as `mail.header.<lowercase name>`.
    pub label_headers: Vec<String>,
}

/// The alert made from one mail, and what the source needs to know about the mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAlert {
    pub alert: Alert,
    /// The From address, if there is one.
    pub sender: Option<String>,
    pub message_id: Option<String>,
    /// What went wrong reading the mail (also in the `mail.problem` label).
    pub problem: Option<String>,
}

/// Builds the alert for a raw RFC 5322 message. Even a panic in the MIME parser on some
/// hostile input only yields an alert saying so: a mail must never stop the mailbox.
pub fn alert_from_mail(raw: &[u8], options: &MailOptions) -> MailAlert {
    std::panic::catch_unwind(|| build(raw, options)).unwrap_or_else(|_| {
        let mut m = unreadable(raw);
        let problem = "the MIME parser failed on this mail".to_owned();
        m.alert
            .labels
            .insert("mail.problem".into(), problem.clone());
        m.problem = Some(problem);
        m
    })
}

fn build(raw: &[u8], options: &MailOptions) -> MailAlert {
    let Some(message) = MessageParser::default().parse(raw) else {
        return unreadable(raw);
    };
    let subject = message.subject().map(clean_line).filter(|s| !s.is_empty());
    let sender = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_owned);
    let message_id = message.message_id().map(str::to_owned);

    let mut problem = None;
    let mut alert = None;
    let candidates = xml_candidates(&message);
    for text in &candidates {
        match xml::parse_alert(text, XmlLimits::default()) {
            Ok(Some(doc)) => {
                alert = Some(from_xml(doc));
                break;
            }
            Ok(None) => {}
            Err(e) => {
                problem.get_or_insert_with(|| alertbridge_plugin_api::error_chain(&e));
            }
        }
    }
    let mut alert = alert.unwrap_or_else(|| {
        let mut a = Alert::new(subject.clone().unwrap_or_else(|| "(no subject)".to_owned()));
        // Without a body part (broken MIME, only an XML part that is no alert) the first
        // text-like part stands in.
        let body = best_text(&message).or_else(|| candidates.first().cloned());
        a.body = body.map(|b| clean_body(&b)).unwrap_or_default();
        a
    });

    let mut labels = std::mem::take(&mut alert.labels);
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            labels.entry(k.to_owned()).or_insert(v);
        }
    };
    put("mail.from", sender.clone());
    put(
        "mail.from_name",
        message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.name())
            .map(clean_line),
    );
    put("mail.subject", subject);
    put("mail.message_id", message_id.clone());
    put("mail.date", message.date().map(|d| d.to_rfc3339()));
    for name in &options.label_headers {
        let value = message
            .header(name.as_str())
            .and_then(|v| v.as_text())
            .or_else(|| message.header_raw(name.as_str()));
        put(
            &format!("mail.header.{}", name.to_ascii_lowercase()),
            value.map(clean_line),
        );
    }
    put("mail.problem", problem.clone());
    alert.labels = labels;
    MailAlert {
        alert,
        sender,
        message_id,
        problem,
    }
}

/// The first text body, HTML converted; else the first text part of any kind.
fn best_text<'a>(message: &'a Message<'a>) -> Option<Cow<'a, str>> {
    let part = message
        .text_part(0)
        .or_else(|| message.parts.iter().find(|p| p.is_text()))?;
    match &part.body {
        PartType::Text(t) => Some(t.clone()),
        PartType::Html(h) => Some(Cow::Owned(html_to_text(h))),
        _ => None,
    }
}

/// Texts that may hold an alert document: XML parts first, then the text body if it looks
/// like XML.
fn xml_candidates<'a>(message: &'a Message<'a>) -> Vec<Cow<'a, str>> {
    let mut out = Vec::new();
    for part in &message.parts {
        if !(part.is_content_type("application", "xml") || part.is_content_type("text", "xml")) {
            continue;
        }
        let text = match &part.body {
            PartType::Text(t) => t.clone(),
            PartType::Binary(b) | PartType::InlineBinary(b) => {
                let charset = part.content_type().and_then(|c| c.attribute("charset"));
                match charset.and_then(|c| charset_decoder(c.as_bytes())) {
                    Some(decode) => Cow::Owned(decode(b)),
                    None => String::from_utf8_lossy(b),
                }
            }
            _ => continue,
        };
        out.push(text);
    }
    if let Some(body) = best_text(message).filter(|b| xml::looks_like_xml(b)) {
        out.push(body);
    }
    out
}

fn from_xml(doc: xml::XmlAlert) -> Alert {
    Alert {
        subject: clean_line(&doc.subject),
        body: clean_body(&doc.body),
        severity: doc.severity.unwrap_or(Severity::NORMAL),
        groups: doc.groups,
        users: doc.users,
        labels: doc.labels,
        dedup_key: doc.dedup_key,
        expires_unix_ms: doc.expires_unix_ms,
        attributes: Default::default(),
    }
}

/// A mail without even a header block: the alert says so and shows its start.
fn unreadable(raw: &[u8]) -> MailAlert {
    let problem = "not an RFC 5322 message".to_owned();
    let mut alert = Alert::new("(unreadable mail)");
    alert.body = clean_body(&String::from_utf8_lossy(&raw[..raw.len().min(4096)]));
    alert.labels.insert("mail.problem".into(), problem.clone());
    MailAlert {
        alert,
        sender: None,
        message_id: None,
        problem: Some(problem),
    }
}

/// One line: whitespace runs (folding, tabs) become one space.
fn clean_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A body: LF line ends, no trailing spaces, at most two blank lines in a row, trimmed, cut at
/// [`MAX_BODY_CHARS`].
fn clean_body(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_BODY_CHARS));
    let mut blanks = 0;
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blanks += 1;
            if blanks > 1 {
                continue;
            }
        } else {
            blanks = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    let trimmed = out.trim();
    match trimmed.char_indices().nth(MAX_BODY_CHARS) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean_line(" a\r\n\tb  c "), "a b c");
        assert_eq!(clean_body("\r\n a  \r\n\r\n\r\n\r\nb\r\n"), "a\n\nb");
        let long = "x".repeat(MAX_BODY_CHARS + 5);
        assert_eq!(clean_body(&long).chars().count(), MAX_BODY_CHARS + 1);
    }

    #[test]
    fn empty_input_is_unreadable_not_a_crash() {
        let m = alert_from_mail(b"", &MailOptions::default());
        assert_eq!(m.alert.subject, "(unreadable mail)");
        assert!(m.problem.is_some());
    }

    #[test]
    fn xml_problem_falls_back_to_text_with_a_label() {
        let raw = b"From: a@b.test\r\nSubject: s\r\nContent-Type: application/xml\r\n\r\n<alert><subject>x</subject><severity>bad</severity></alert>\r\n";
        let m = alert_from_mail(raw, &MailOptions::default());
        assert_eq!(m.alert.subject, "s");
        assert!(
            m.alert.labels["mail.problem"].starts_with("unknown severity"),
            "{:?}",
            m.alert.labels
        );
        assert_eq!(m.sender.as_deref(), Some("a@b.test"));
    }
}
